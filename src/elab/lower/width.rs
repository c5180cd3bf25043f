//! Lowering of the mixture of experts, dense and masked (docs/language.md, "Mixture of
//! experts"). Every expert runs on every token; the mask zeroes what the router did not
//! pick, so shapes stay static and the step is two GEMMs as wide as all experts.

use super::{Lower, R};
use crate::elab::resolve::Act;
use crate::ir::{Init, Op, ParamRole, UnaryOp, ValueId};

/// A nested FFN run at `units` of its `hidden` units.
pub(super) struct Ffn {
    pub hidden: usize,
    pub units: usize,
    pub act: Act,
    pub glu: bool,
    pub bias: bool,
}

/// A `moe` sublayer's settings.
pub(super) struct Moe {
    pub experts: usize,
    pub top: usize,
    pub hidden: usize,
    pub act: Act,
    pub glu: bool,
    pub bias: bool,
    pub balance: f64,
}

pub(super) fn act_op(act: Act) -> Op {
    match act {
        Act::Relu => Op::Unary(UnaryOp::Relu),
        Act::Gelu => Op::Unary(UnaryOp::Gelu),
        Act::GeluTanh => Op::Unary(UnaryOp::GeluTanh),
        Act::Silu => Op::Unary(UnaryOp::Silu),
    }
}

impl Lower {
    /// `y = W2 (a(W1 x) * (k g)) + b2` with `g = p m / sum(p m)`, `p = softmax(R x)`
    /// and `m` the mask of the `k = top` largest `p`; `(k g)` is expert `e`'s gate on
    /// its `hidden` units. The router is `<name>.router.weight [E, w]`; the experts are
    /// `<name>.w1 [E H, w]`, `<name>.w2 [w, E H]` (and `<name>.w3`), expert `e` owning
    /// units `e H .. (e + 1) H`. Also pushes the Switch loss
    /// `balance * E * sum_e f_e P_e`, `f_e` the fraction of the `k`-per-token picks
    /// that went to `e`, `P_e` the mean of `p_e`.
    pub(super) fn moe(&mut self, x: ValueId, name: &str, m: &Moe, w: usize) -> R<ValueId> {
        let (e, units) = (m.experts, m.experts * m.hidden);
        let shape = self.g.shape(x);
        let lead: Vec<usize> = shape[..shape.len() - 1].to_vec();
        let tokens: usize = lead.iter().product();
        let logits = self.linear(
            x,
            &format!("{name}.router"),
            (w, e),
            (false, true),
            crate::ir::ParamRole::Matrix,
        )?;
        let p = self.g.push(Op::Softmax, &[logits])?;
        let mask = self.g.push(Op::TopKMask { k: m.top }, &[p])?;
        let pm = self.g.mul(p, mask)?;
        let total = self.g.reduce_sum(pm, vec![shape.len() - 1], true)?;
        let mut es = lead.clone();
        es.push(e);
        let total = self.g.broadcast(total, es.clone())?;
        let g = self.g.div(pm, total)?;
        let g = self.g.scale(g, m.top as f64)?;

        let h = self.hidden(x, &format!("{name}.w1"), (w, units), m.bias, true)?;
        let mut a = self.g.unary(act_op(m.act), h)?;
        if m.glu {
            let gate = self.hidden(x, &format!("{name}.w3"), (w, units), m.bias, true)?;
            a = self.g.mul(a, gate)?;
        }
        let mut ge = lead.clone();
        ge.extend([e, 1]);
        let g = self.g.reshape(g, ge)?;
        let mut gh = lead.clone();
        gh.extend([e, m.hidden]);
        let g = self.g.broadcast(g, gh)?;
        let mut gu = lead.clone();
        gu.push(units);
        let g = self.g.reshape(g, gu)?;
        let a = self.g.mul(a, g)?;
        let y = self.hidden(a, &format!("{name}.w2"), (units, w), m.bias, true)?;

        if m.balance > 0.0 {
            let flat_p = self.g.reshape(p, vec![tokens, e])?;
            let flat_m = self.g.reshape(mask, vec![tokens, e])?;
            let f = self.g.reduce_sum(flat_m, vec![0], false)?;
            let f = self.g.scale(f, 1.0 / (tokens * m.top) as f64)?;
            let big_p = self.g.reduce_sum(flat_p, vec![0], false)?;
            let big_p = self.g.scale(big_p, 1.0 / tokens as f64)?;
            let fp = self.g.mul(f, big_p)?;
            let s = self.g.reduce_sum(fp, vec![0], false)?;
            let loss = self.g.scale(s, m.balance * e as f64)?;
            self.balance.push(loss);
        }
        Ok(y)
    }

    /// An FFN at `units` of its `hidden` units (MatFormer): the first `units` rows of
    /// `w1` (`w3`) and their biases, the first `units` columns of `w2` (whose bias is
    /// whole). The parameters keep their full shapes and init.
    pub(super) fn nested_ffn(&mut self, x: ValueId, name: &str, f: &Ffn, w: usize) -> R<ValueId> {
        let up = |this: &mut Self, p: &str| -> R<ValueId> {
            let (weight, bias) = this.full_linear(&format!("{name}.{p}"), (w, f.hidden), f.bias)?;
            let weight = this.g.slice(weight, 0, 0, f.units)?;
            let bias = match bias {
                Some(b) => Some(this.g.slice(b, 0, 0, f.units)?),
                None => None,
            };
            this.g.linear(x, weight, bias)
        };
        let h = up(self, "w1")?;
        let mut a = self.g.unary(act_op(f.act), h)?;
        if f.glu {
            let gate = up(self, "w3")?;
            a = self.g.mul(a, gate)?;
        }
        let (weight, bias) = self.full_linear(&format!("{name}.w2"), (f.hidden, w), f.bias)?;
        let weight = self.g.slice(weight, 1, 0, f.units)?;
        self.g.linear(a, weight, bias)
    }

    /// The weight `[out, fan_in]` and bias of a hidden Linear, as `linear` creates them.
    fn full_linear(
        &mut self,
        name: &str,
        (fan_in, out): (usize, usize),
        bias: bool,
    ) -> R<(ValueId, Option<ValueId>)> {
        let init = Init::Uniform {
            bound: 1.0 / (fan_in as f64).sqrt(),
        };
        let w = self.param(
            format!("{name}.weight"),
            vec![out, fan_in],
            init.clone(),
            true,
            ParamRole::Matrix,
        )?;
        let b = match bias {
            true => Some(self.param(
                format!("{name}.bias"),
                vec![out],
                init,
                true,
                ParamRole::Bias,
            )?),
            false => None,
        };
        Ok((w, b))
    }

    /// The sum of the load-balancing losses of every expert layer run.
    pub(super) fn balance_loss(&mut self) -> R<Option<ValueId>> {
        let losses = std::mem::take(&mut self.balance);
        let Some((&first, rest)) = losses.split_first() else {
            return Ok(None);
        };
        let mut sum = first;
        for &l in rest {
            sum = self.g.add(sum, l)?;
        }
        Ok(Some(sum))
    }
}
