//! Optimizers as IR: the update of every trainable parameter appended to the joint graph.
//!
//! `step_graph(joint, cfg)` returns a graph whose extra parameters are the optimizer state
//! (`optim.m.<p>`, `optim.v.<p>`, `optim.momentum.<p>`: frozen, zero-initialised), whose
//! extra inputs are the host-computed scalars (`lr`, `bias_correction1`,
//! `bias_correction2`, `noise_scale`) and noise tensors (`noise.<p>`), and whose outputs are
//! `loss` and `new.<name>` for every trainable parameter and state tensor. An executor runs
//! it and writes each `new.X` back into `X`. Because the update is ordinary IR, the
//! interpreter and the JIT both run it and `text::print` shows it.
//!
//! There is no `min`, `max` or `where` op, so:
//! - clipping uses `min(1, c / n) = 1 - relu(1 - c / n)`, with `n` the global norm + 1e-6
//!   (PyTorch's `clip_grad_norm_`);
//! - LAMB's "trust ratio is 1 when a norm is 0" uses `nz(x) = x / (x + 1e-30)`, which is 0
//!   at 0 and 1 (after f32 rounding) for any norm above ~1e-22.

use crate::ir::{
    Graph, GraphBuilder, Init, IrError, Op, Output, OutputRole, Phase, Type, UnaryOp, ValueId,
};
use serde::{Deserialize, Serialize};

/// The name of the scheduled learning-rate input.
pub const LR: &str = "lr";
/// `1 / (1 - beta1^t)` (Adam-style optimizers).
pub const BIAS_CORRECTION1: &str = "bias_correction1";
/// `1 / (1 - beta2^t)`.
pub const BIAS_CORRECTION2: &str = "bias_correction2";
/// The gradient-noise standard deviation `sqrt(eta / (1 + t)^gamma)`.
pub const NOISE_SCALE: &str = "noise_scale";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimKind {
    /// PyTorch's SGD: `d = g + wd p`, `buf = momentum buf + d`, `p -= lr buf` (or
    /// `lr (d + momentum buf)` with Nesterov). Weight decay is coupled, as in PyTorch.
    Sgd { momentum: f64, nesterov: bool },
    /// Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's AdamW.
    AdamW { beta1: f64, beta2: f64, eps: f64 },
    /// LAMB (You et al.): the AdamW direction `u` scaled per tensor by `|p| / |u|`.
    Lamb { beta1: f64, beta2: f64, eps: f64 },
}

impl OptimKind {
    pub fn name(&self) -> &'static str {
        match self {
            OptimKind::Sgd { .. } => "sgd",
            OptimKind::AdamW { .. } => "adamw",
            OptimKind::Lamb { .. } => "lamb",
        }
    }
    fn betas(&self) -> Option<(f64, f64)> {
        match self {
            OptimKind::AdamW { beta1, beta2, .. } | OptimKind::Lamb { beta1, beta2, .. } => {
                Some((*beta1, *beta2))
            }
            OptimKind::Sgd { .. } => None,
        }
    }
}

/// Annealed gradient noise (Neelakantan et al.): variance `eta / (1 + t)^gamma`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradNoise {
    pub eta: f64,
    pub gamma: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub kind: OptimKind,
    /// Peak learning rate (the schedule scales it; the step reads the scheduled value).
    pub lr: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value.
    pub clip: Option<f64>,
    /// Added after clipping, so its scale is exactly the configured one.
    pub noise: Option<GradNoise>,
    /// AdamW's width scaling rule: a hidden matrix `[out, in]` gets `lr / m` and
    /// `weight_decay * m` with `m = in / base_width`.
    pub width_scaling: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            kind: OptimKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            lr: 1e-3,
            // The same as a written `adamw` (and PyTorch's AdamW): omitting the optimizer and
            // writing `optimizer = adamw` are one recipe.
            weight_decay: 0.01,
            clip: None,
            noise: None,
            width_scaling: None,
        }
    }
}

/// The host-side scalars of step `t` (1-based) for a scheduled learning rate.
pub fn scalars(cfg: &OptimConfig, t: u64, lr: f64) -> Vec<(&'static str, f64)> {
    let mut out = vec![(LR, lr)];
    if let Some((b1, b2)) = cfg.kind.betas() {
        let t = t.min(i32::MAX as u64) as i32;
        out.push((BIAS_CORRECTION1, 1.0 / (1.0 - b1.powi(t))));
        out.push((BIAS_CORRECTION2, 1.0 / (1.0 - b2.powi(t))));
    }
    if let Some(n) = cfg.noise {
        out.push((NOISE_SCALE, (n.eta / (1.0 + t as f64).powf(n.gamma)).sqrt()));
    }
    out
}

/// The (trainable) parameters the step updates: those with a `grad.<name>` output.
fn updated_params(joint: &Graph) -> Vec<(usize, ValueId)> {
    // One pass over the outputs, not one per parameter: deep models have thousands of both.
    let mut grads: std::collections::HashMap<&str, ValueId> = Default::default();
    for o in &joint.outputs {
        if let OutputRole::Grad(p) = o.role() {
            grads.entry(p).or_insert(o.value);
        }
    }
    joint
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.trainable)
        .filter_map(|(i, p)| grads.get(p.name.as_str()).map(|&g| (i, g)))
        .collect()
}

type R<T> = Result<T, IrError>;

/// The step graph under construction, with the host scalars it reads.
struct B {
    b: GraphBuilder,
    lr: ValueId,
    /// `1 / (1 - beta1^t)` and `1 / (1 - beta2^t)` (Adam-style optimizers only).
    bias_corrections: Option<(ValueId, ValueId)>,
    noise_scale: Option<ValueId>,
    /// `(output name, value)` of every updated parameter and state tensor, in order.
    updates: Vec<(String, ValueId)>,
}

impl B {
    fn sum_sq(&mut self, x: ValueId) -> R<ValueId> {
        let sq = self.b.mul(x, x)?;
        let n = self.b.ty(x).numel();
        if self.b.ty(x).rank() == 0 {
            return Ok(sq);
        }
        let flat = self.b.reshape(sq, vec![n])?;
        self.b.reduce_sum(flat, vec![0], false)
    }
    fn bcast(&mut self, s: ValueId, shape: &[usize]) -> R<ValueId> {
        self.b.broadcast(s, shape.to_vec())
    }
    /// `x / (x + 1e-30)`: 0 at 0, 1 for any non-tiny non-negative x.
    fn nonzero(&mut self, x: ValueId) -> R<ValueId> {
        let d = self.b.add_scalar(x, 1e-30)?;
        self.b.div(x, d)
    }
    /// `1 - x`.
    fn one_minus(&mut self, x: ValueId) -> R<ValueId> {
        let n = self.b.scale(x, -1.0)?;
        self.b.add_scalar(n, 1.0)
    }
    fn state(&mut self, kind: &str, pname: &str, shape: &[usize]) -> R<ValueId> {
        self.b.param(
            format!("optim.{kind}.{pname}"),
            shape.to_vec(),
            Init::Zeros,
            false,
        )
    }

    /// The gradients scaled by `min(1, c / |g|)` with `|g|` their global norm + 1e-6
    /// (PyTorch's `clip_grad_norm_`); `min(1, r) = 1 - relu(1 - r)`.
    fn clip(&mut self, grads: &mut [ValueId], c: f64) -> R<()> {
        self.b.set_scope("optim.clip");
        let mut total: Option<ValueId> = None;
        for &g in grads.iter() {
            let s = self.sum_sq(g)?;
            total = Some(match total {
                None => s,
                Some(t) => self.b.add(t, s)?,
            });
        }
        let Some(total) = total else {
            return Ok(());
        };
        let n = self.b.unary(Op::Unary(UnaryOp::Sqrt), total)?;
        let n = self.b.add_scalar(n, 1e-6)?;
        let inv = self.b.unary(Op::Unary(UnaryOp::Recip), n)?;
        let ratio = self.b.scale(inv, c)?;
        let excess = self.one_minus(ratio)?;
        let r = self.b.unary(Op::Unary(UnaryOp::Relu), excess)?;
        let factor = self.one_minus(r)?;
        for g in grads.iter_mut() {
            let shape = self.b.shape(*g);
            let f = self.bcast(factor, &shape)?;
            *g = self.b.mul(*g, f)?;
        }
        Ok(())
    }

    /// PyTorch's SGD direction: `d = g + wd p`, `buf = momentum buf + d`, then `buf` (or
    /// `d + momentum buf` with Nesterov).
    fn sgd(&mut self, p: Param<'_>, g: ValueId, momentum: f64, nesterov: bool) -> R<ValueId> {
        let d = if p.wd != 0.0 {
            let wp = self.b.scale(p.value, p.wd)?;
            self.b.add(g, wp)?
        } else {
            g
        };
        if momentum == 0.0 {
            return Ok(d);
        }
        let buf = self.state("momentum", p.name, p.shape)?;
        let mb = self.b.scale(buf, momentum)?;
        let buf_new = self.b.add(mb, d)?;
        self.updates
            .push((update(&format!("optim.momentum.{}", p.name)), buf_new));
        if nesterov {
            let mb2 = self.b.scale(buf_new, momentum)?;
            self.b.add(d, mb2)
        } else {
            Ok(buf_new)
        }
    }

    /// The AdamW direction `m_hat / (sqrt(v_hat) + eps) + wd p`.
    fn adam(&mut self, p: Param<'_>, g: ValueId, betas: (f64, f64), eps: f64) -> R<ValueId> {
        let (beta1, beta2) = betas;
        let (bc1, bc2) = self
            .bias_corrections
            .ok_or_else(|| IrError::Graph("the bias corrections are missing".into()))?;
        let m = self.state("m", p.name, p.shape)?;
        let v = self.state("v", p.name, p.shape)?;
        let m1 = self.b.scale(m, beta1)?;
        let g1 = self.b.scale(g, 1.0 - beta1)?;
        let m_new = self.b.add(m1, g1)?;
        let v1 = self.b.scale(v, beta2)?;
        let gg = self.b.mul(g, g)?;
        let g2 = self.b.scale(gg, 1.0 - beta2)?;
        let v_new = self.b.add(v1, g2)?;
        self.updates
            .push((update(&format!("optim.m.{}", p.name)), m_new));
        self.updates
            .push((update(&format!("optim.v.{}", p.name)), v_new));
        let c1 = self.bcast(bc1, p.shape)?;
        let c2 = self.bcast(bc2, p.shape)?;
        let m_hat = self.b.mul(m_new, c1)?;
        let v_hat = self.b.mul(v_new, c2)?;
        let root = self.b.unary(Op::Unary(UnaryOp::Sqrt), v_hat)?;
        let denom = self.b.add_scalar(root, eps)?;
        let u = self.b.div(m_hat, denom)?;
        if p.wd == 0.0 {
            return Ok(u);
        }
        let wp = self.b.scale(p.value, p.wd)?;
        self.b.add(u, wp)
    }

    /// LAMB's per-tensor trust ratio `|p| / |u|` applied to `u`, 1 when either norm is 0:
    /// `trust = 1 + nz(|p|) nz(|u|) (|p| / (|u| + 1 - nz(|u|)) - 1)`.
    fn trust(&mut self, p: Param<'_>, u: ValueId) -> R<ValueId> {
        let ps = self.sum_sq(p.value)?;
        let pn = self.b.unary(Op::Unary(UnaryOp::Sqrt), ps)?;
        let us = self.sum_sq(u)?;
        let un = self.b.unary(Op::Unary(UnaryOp::Sqrt), us)?;
        let zp = self.nonzero(pn)?;
        let zu = self.nonzero(un)?;
        let not_zu = self.one_minus(zu)?;
        let safe_un = self.b.add(un, not_zu)?;
        let ratio = self.b.div(pn, safe_un)?;
        let ratio_m1 = self.b.add_scalar(ratio, -1.0)?;
        let both = self.b.mul(zp, zu)?;
        let t = self.b.mul(both, ratio_m1)?;
        let trust = self.b.add_scalar(t, 1.0)?;
        let tb = self.bcast(trust, p.shape)?;
        self.b.mul(u, tb)
    }

    /// `p - lr_p * direction` for one parameter, with its noise and width scaling.
    fn update_param(&mut self, cfg: &OptimConfig, p: Param<'_>, grad: ValueId) -> R<()> {
        self.b.set_scope(format!("optim.{}", p.name));
        let mut g = grad;
        if let Some(ns) = self.noise_scale {
            let noise = self
                .b
                .input(format!("noise.{}", p.name), Type::f32(p.shape.to_vec()));
            let s = self.bcast(ns, p.shape)?;
            let scaled = self.b.mul(noise, s)?;
            g = self.b.add(g, scaled)?;
        }
        let step = match &cfg.kind {
            OptimKind::Sgd { momentum, nesterov } => self.sgd(p, g, *momentum, *nesterov)?,
            OptimKind::AdamW { beta1, beta2, eps } => self.adam(p, g, (*beta1, *beta2), *eps)?,
            OptimKind::Lamb { beta1, beta2, eps } => {
                let u = self.adam(p, g, (*beta1, *beta2), *eps)?;
                self.trust(p, u)?
            }
        };
        let lr_b = self.bcast(self.lr, p.shape)?;
        let lr_p = if p.lr_mult != 1.0 {
            self.b.scale(lr_b, p.lr_mult)?
        } else {
            lr_b
        };
        let delta = self.b.mul(lr_p, step)?;
        let p_new = self.b.sub(p.value, delta)?;
        self.updates.push((update(p.name), p_new));
        Ok(())
    }
}

/// One updated parameter as the update rules see it.
#[derive(Clone, Copy)]
struct Param<'a> {
    name: &'a str,
    shape: &'a [usize],
    value: ValueId,
    /// The weight decay and learning-rate multiplier after width scaling.
    wd: f64,
    lr_mult: f64,
}

/// AdamW's width scaling rule (hidden matrices only; embeddings and vectors keep the base
/// rates): `m = in / base_width`.
fn width_multiplier(cfg: &OptimConfig, name: &str, shape: &[usize]) -> f64 {
    match cfg.width_scaling {
        Some(base)
            if shape.len() == 2 && !matches!(name, "embed.weight" | "pos.weight") && base > 0.0 =>
        {
            shape[1] as f64 / base
        }
        _ => 1.0,
    }
}

/// Append the optimizer update to a joint graph (see the module docs).
pub fn step_graph(joint: &Graph, cfg: &OptimConfig) -> Result<Graph, IrError> {
    let updated = updated_params(joint);
    let loss = joint
        .output_with(OutputRole::Loss)
        .ok_or_else(|| IrError::Graph("the joint graph has no loss output".into()))?;
    let mut b = GraphBuilder::from_graph(joint.clone());
    b.set_phase(Phase::Update);
    b.set_scope("optim");
    let scalar = Type::f32(Vec::<usize>::new());
    let lr = b.input(LR, scalar.clone());
    let bias_corrections = cfg.kind.betas().map(|_| {
        (
            b.input(BIAS_CORRECTION1, scalar.clone()),
            b.input(BIAS_CORRECTION2, scalar.clone()),
        )
    });
    let noise_scale = cfg.noise.map(|_| b.input(NOISE_SCALE, scalar.clone()));
    let mut st = B {
        b,
        lr,
        bias_corrections,
        noise_scale,
        updates: vec![],
    };
    let mut grads: Vec<ValueId> = updated.iter().map(|(_, g)| *g).collect();
    if let Some(c) = cfg.clip {
        st.clip(&mut grads, c)?;
    }
    for (&(pi, _), &grad) in updated.iter().zip(&grads) {
        let param = &joint.params[pi];
        let value =
            st.b.param(param.name.clone(), param.shape.clone(), Init::Zeros, true)?;
        let mult = width_multiplier(cfg, &param.name, &param.shape);
        let p = Param {
            name: &param.name,
            shape: &param.shape,
            value,
            wd: cfg.weight_decay * mult,
            lr_mult: 1.0 / mult,
        };
        st.update_param(cfg, p, grad)?;
    }
    let updates = std::mem::take(&mut st.updates);
    let mut g = st.b.finish();
    // Outputs: `loss`, its named terms, then per parameter its new state tensors and
    // `new.<param>`, in parameter order.
    let parts = joint
        .outputs
        .iter()
        .filter(|o| matches!(o.role(), OutputRole::PartLoss(_)))
        .cloned();
    g.outputs = std::iter::once(Output {
        name: OutputRole::Loss.name(),
        value: loss,
    })
    .chain(parts)
    .chain(
        updates
            .into_iter()
            .map(|(name, value)| Output { name, value }),
    )
    .collect();
    g.verify()?;
    Ok(g)
}

/// The output name that writes back into parameter `param`.
fn update(param: &str) -> String {
    OutputRole::Update(param).name()
}
