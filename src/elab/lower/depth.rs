//! Lowering of depth programs inside a layer: linearly expanded parameters (TLEG) and
//! router gates (FiRST). Parallel groups and subnets are plain loops in `Lower::run`.

use super::{Lower, R};
use crate::elab::resolve::{Head, Plan, Routing};
use crate::ir::ops::MaskFill;
use crate::ir::{BinaryOp, Init, Op, ParamRole, Type, UnaryOp, ValueId};

impl Lower {
    /// A parameter of the model. Inside a linearly expanded layer with coefficient `c`
    /// it is `theta_A + c * theta_B`: `theta_A` keeps the name, `theta_B` is
    /// `<name>.slope` with the same role and starts at zero, so that the expanded stack
    /// starts as one shared layer.
    pub(super) fn param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        init: Init,
        trainable: bool,
        role: ParamRole,
    ) -> R<ValueId> {
        let expand = match &self.expand {
            Some((prefix, c)) if name.starts_with(prefix.as_str()) => Some(*c),
            _ => None,
        };
        let slope_name = format!("{name}.slope");
        let a = self
            .g
            .role_param(name, shape.clone(), init, trainable, role)?;
        let Some(c) = expand else {
            return Ok(a);
        };
        let b = self
            .g
            .role_param(slope_name, shape, Init::Zeros, trainable, role)?;
        let cb = self.g.scale(b, c)?;
        self.g.add(a, cb)
    }

    /// The gate `g = sigmoid(w . mean(x) + b)` of a routed layer, one per position:
    /// `[batch, len]` (or `[batch, 1]` for a features model). An LM's mean runs over the
    /// positions up to `t` (a causal running mean), so no gate sees a later token; other
    /// models average the whole sequence. With `skip_below` the gate is multiplied by
    /// the sequence's hard decision, `1[g_last >= tau]`, taken at its last position.
    pub(super) fn router(
        &mut self,
        p: &Plan,
        x: ValueId,
        prefix: &str,
        run: &str,
        r: Routing,
    ) -> R<ValueId> {
        self.g.set_scope(format!("{prefix}.router{run}"));
        let shape = self.g.shape(x);
        let w = self.param(
            format!("{prefix}.router.weight"),
            vec![1, self.d],
            Init::Uniform {
                bound: 1.0 / (self.d as f64).sqrt(),
            },
            true,
            ParamRole::Matrix,
        )?;
        let bias = self.param(
            format!("{prefix}.router.bias"),
            vec![1],
            // Starts open (sigmoid(3) = 0.95), so a routed model starts near the plain one.
            Init::Const(3.0),
            true,
            ParamRole::Bias,
        )?;
        // w . mean(x) = mean(w . x): score every position, then average the scores.
        let s = self.g.linear(x, w, None)?;
        let (batch, len) = (shape[0], if shape.len() == 3 { shape[1] } else { 1 });
        let s = self.g.reshape(s, vec![batch, len])?;
        let causal = matches!(p.head, Head::Lm { .. });
        let avg = self.averaging(len, causal)?;
        let m = self.g.matmul(s, avg, false, true)?;
        let bb = self.g.broadcast(bias, vec![1, 1])?;
        let bb = self.g.broadcast(bb, vec![batch, len])?;
        let z = self.g.add(m, bb)?;
        let mut g = self.g.unary(Op::Unary(UnaryOp::Sigmoid), z)?;
        let mean = self.g.reduce_sum(g, vec![0, 1], false)?;
        let mean = self.g.scale(mean, 1.0 / (batch * len) as f64)?;
        self.gates.push(mean);
        if let Some(tau) = r.skip_below {
            let last = self.g.slice(g, 1, len - 1, len)?;
            // The decision is a step function: no gradient flows through it.
            let last = self.g.unary(Op::Unary(UnaryOp::StopGradient), last)?;
            // 1[tau - g > 0] is 1 where the layer is skipped.
            let below = self.g.scale(last, -1.0)?;
            let below = self.g.add_scalar(below, tau)?;
            let ones = self.g.full(1.0, vec![batch, 1])?;
            let skip = self
                .g
                .push(Op::Binary(BinaryOp::ReluGrad), &[below, ones])?;
            let keep = self.g.scale(skip, -1.0)?;
            let keep = self.g.add_scalar(keep, 1.0)?;
            let k = self.routes.len();
            let out = self.g.reshape(keep, vec![batch])?;
            self.routes.push((format!("route.{k}"), out));
            let keep = self.g.broadcast(keep, vec![batch, len])?;
            g = self.g.mul(g, keep)?;
        }
        Ok(g)
    }

    /// `[len, len]` averaging weights: row `t` averages positions `0..=t` (causal) or all.
    fn averaging(&mut self, len: usize, causal: bool) -> R<ValueId> {
        if !causal {
            return self.g.full(1.0 / len as f64, vec![len, len]);
        }
        let ones = self.g.full(1.0, vec![len, len])?;
        let lower = self.g.push(
            Op::CausalMask {
                fill: MaskFill::Zero,
            },
            &[ones],
        )?;
        let counts = self.g.reduce_sum(lower, vec![1], true)?;
        let inv = self.g.unary(Op::Unary(UnaryOp::Recip), counts)?;
        let inv = self.g.broadcast(inv, vec![len, len])?;
        self.g.mul(lower, inv)
    }

    /// `x + g * (y - x)`: the layer's update scaled by its gate `g` (per position).
    pub(super) fn gated(&mut self, x: ValueId, y: ValueId, g: ValueId) -> R<ValueId> {
        let shape = self.g.shape(x);
        let mut gs = shape.clone();
        if let Some(l) = gs.last_mut() {
            *l = 1;
        }
        let g = if shape.len() == 3 {
            self.g.reshape(g, gs)?
        } else {
            g
        };
        let gb = self.g.broadcast(g, shape)?;
        let update = self.g.sub(y, x)?;
        let scaled = self.g.mul(gb, update)?;
        self.g.add(x, scaled)
    }

    /// Dropout of `x` at rate `p` while training: `x * 1[u > p] / (1 - p)` with `u` a
    /// uniform input `dropout.<k>` of `mask` shape (the shape of `x` when `None`, else
    /// broadcast to it). Nothing outside training or at `p = 0`.
    pub(super) fn dropout(&mut self, x: ValueId, p: f64, mask: Option<Vec<usize>>) -> R<ValueId> {
        if !self.training || p == 0.0 {
            return Ok(x);
        }
        let shape = self.g.shape(x);
        let ms = mask.unwrap_or_else(|| shape.clone());
        let u = self
            .g
            .input(format!("dropout.{}", self.noise), Type::f32(ms.clone()));
        self.noise += 1;
        let above = self.g.add_scalar(u, -p)?;
        let ones = self.g.full(1.0, ms.clone())?;
        let keep = self
            .g
            .push(Op::Binary(BinaryOp::ReluGrad), &[above, ones])?;
        let mut keep = self.g.scale(keep, 1.0 / (1.0 - p))?;
        if ms != shape {
            let mut lifted = ms.clone();
            lifted.resize(shape.len(), 1);
            keep = self.g.reshape(keep, lifted)?;
            keep = self.g.broadcast(keep, shape)?;
        }
        self.g.mul(x, keep)
    }

    /// Stochastic depth: `x + keep * (y - x)` with one dropout mask per sample.
    pub(super) fn drop_path(&mut self, x: ValueId, y: ValueId, p: f64) -> R<ValueId> {
        if !self.training || p == 0.0 {
            return Ok(y);
        }
        let batch = self.g.shape(x)[0];
        let update = self.g.sub(y, x)?;
        let update = self.dropout(update, p, Some(vec![batch]))?;
        self.g.add(x, update)
    }

    /// `sparsity * mean_l(mean gate of routed layer l)`, when the model has routers.
    pub(super) fn gate_penalty(&mut self, p: &Plan) -> R<Option<ValueId>> {
        let Some(r) = p.routing else {
            return Ok(None);
        };
        let gates = std::mem::take(&mut self.gates);
        let Some((&first, rest)) = gates.split_first() else {
            return Ok(None);
        };
        let mut sum = first;
        for &g in rest {
            sum = self.g.add(sum, g)?;
        }
        Ok(Some(self.g.scale(sum, r.sparsity / gates.len() as f64)?))
    }
}
