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

use crate::ir::UnaryOp;
use crate::ir::{Graph, GraphBuilder, Init, Op, Output, OutputRole, Phase, Type, ValueId};
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
    joint
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.trainable)
        .filter_map(|(i, p)| joint.output_with(OutputRole::Grad(&p.name)).map(|g| (i, g)))
        .collect()
}

struct B {
    b: GraphBuilder,
}

impl B {
    fn sum_sq(&mut self, x: ValueId) -> Result<ValueId, String> {
        let sq = self.b.mul(x, x)?;
        let n = self.b.ty(x).numel();
        if self.b.ty(x).rank() == 0 {
            return Ok(sq);
        }
        let flat = self.b.reshape(sq, vec![n])?;
        self.b.reduce_sum(flat, vec![0], false)
    }
    fn bcast(&mut self, s: ValueId, shape: &[usize]) -> Result<ValueId, String> {
        self.b.broadcast(s, shape.to_vec())
    }
    /// `x / (x + 1e-30)`: 0 at 0, 1 for any non-tiny non-negative x.
    fn nonzero(&mut self, x: ValueId) -> Result<ValueId, String> {
        let d = self.b.add_scalar(x, 1e-30)?;
        self.b.div(x, d)
    }
}

/// Append the optimizer update to a joint graph (see the module docs).
pub fn step_graph(joint: &Graph, cfg: &OptimConfig) -> Result<Graph, String> {
    let updated = updated_params(joint);
    let loss = joint
        .output_with(OutputRole::Loss)
        .ok_or("the joint graph has no loss output")?;
    let mut b = B {
        b: GraphBuilder::from_graph(joint.clone()),
    };
    b.b.set_phase(Phase::Update);
    b.b.set_scope("optim");
    let scalar = Type::f32(Vec::<usize>::new());
    let lr = b.b.input(LR, scalar.clone());
    let (bc1, bc2) = if cfg.kind.betas().is_some() {
        (
            Some(b.b.input(BIAS_CORRECTION1, scalar.clone())),
            Some(b.b.input(BIAS_CORRECTION2, scalar.clone())),
        )
    } else {
        (None, None)
    };
    let noise_scale = match cfg.noise {
        Some(_) => Some(b.b.input(NOISE_SCALE, scalar.clone())),
        None => None,
    };

    // Gradients, clipped by the global norm.
    let mut grads: Vec<ValueId> = updated.iter().map(|(_, g)| *g).collect();
    if let Some(c) = cfg.clip {
        b.b.set_scope("optim.clip");
        let mut total: Option<ValueId> = None;
        for &g in &grads {
            let s = b.sum_sq(g)?;
            total = Some(match total {
                None => s,
                Some(t) => b.b.add(t, s)?,
            });
        }
        if let Some(total) = total {
            let n = b.b.unary(Op::Unary(UnaryOp::Sqrt), total)?;
            let n = b.b.add_scalar(n, 1e-6)?;
            let inv = b.b.unary(Op::Unary(UnaryOp::Recip), n)?;
            let ratio = b.b.scale(inv, c)?;
            // min(1, r) = 1 - relu(1 - r)
            let one_minus = b.b.scale(ratio, -1.0)?;
            let one_minus = b.b.add_scalar(one_minus, 1.0)?;
            let r = b.b.unary(Op::Unary(UnaryOp::Relu), one_minus)?;
            let r = b.b.scale(r, -1.0)?;
            let factor = b.b.add_scalar(r, 1.0)?;
            for g in grads.iter_mut() {
                let shape = b.b.shape(*g);
                let f = b.bcast(factor, &shape)?;
                *g = b.b.mul(*g, f)?;
            }
        }
    }

    let mut new_outputs: Vec<(String, ValueId)> = Vec::new();
    for (k, &(pi, _)) in updated.iter().enumerate() {
        let pname = joint.params[pi].name.clone();
        let shape = joint.params[pi].shape.clone();
        let p = b.b.param(pname.clone(), shape.clone(), Init::Zeros, true)?;
        b.b.set_scope(format!("optim.{pname}"));
        let mut g = grads[k];
        if let Some(ns) = noise_scale {
            let noise =
                b.b.input(format!("noise.{pname}"), Type::f32(shape.clone()));
            let s = b.bcast(ns, &shape)?;
            let scaled = b.b.mul(noise, s)?;
            g = b.b.add(g, scaled)?;
        }
        // Width scaling (hidden matrices only; embeddings and vectors keep the base rates).
        let mult = match cfg.width_scaling {
            Some(base)
                if shape.len() == 2
                    && !matches!(pname.as_str(), "embed.weight" | "pos.weight")
                    && base > 0.0 =>
            {
                shape[1] as f64 / base
            }
            _ => 1.0,
        };
        let wd = cfg.weight_decay * mult;
        let lr_b = b.bcast(lr, &shape)?;
        let lr_p = if mult != 1.0 {
            b.b.scale(lr_b, 1.0 / mult)?
        } else {
            lr_b
        };
        let state = |b: &mut B, kind: &str| {
            b.b.param(
                format!("optim.{kind}.{pname}"),
                shape.clone(),
                Init::Zeros,
                false,
            )
        };
        let step = match &cfg.kind {
            OptimKind::Sgd { momentum, nesterov } => {
                let d = if wd != 0.0 {
                    let wp = b.b.scale(p, wd)?;
                    b.b.add(g, wp)?
                } else {
                    g
                };
                if *momentum != 0.0 {
                    let buf = state(&mut b, "momentum")?;
                    let mb = b.b.scale(buf, *momentum)?;
                    let buf_new = b.b.add(mb, d)?;
                    new_outputs.push((update(&format!("optim.momentum.{pname}")), buf_new));
                    if *nesterov {
                        let mb2 = b.b.scale(buf_new, *momentum)?;
                        b.b.add(d, mb2)?
                    } else {
                        buf_new
                    }
                } else {
                    d
                }
            }
            OptimKind::AdamW { beta1, beta2, eps } | OptimKind::Lamb { beta1, beta2, eps } => {
                let (bc1, bc2) = match (bc1, bc2) {
                    (Some(a), Some(c)) => (a, c),
                    _ => return Err("internal error: bias corrections missing".into()),
                };
                let m = state(&mut b, "m")?;
                let v = state(&mut b, "v")?;
                let m1 = b.b.scale(m, *beta1)?;
                let g1 = b.b.scale(g, 1.0 - beta1)?;
                let m_new = b.b.add(m1, g1)?;
                let v1 = b.b.scale(v, *beta2)?;
                let gg = b.b.mul(g, g)?;
                let g2 = b.b.scale(gg, 1.0 - beta2)?;
                let v_new = b.b.add(v1, g2)?;
                new_outputs.push((update(&format!("optim.m.{pname}")), m_new));
                new_outputs.push((update(&format!("optim.v.{pname}")), v_new));
                let c1 = b.bcast(bc1, &shape)?;
                let c2 = b.bcast(bc2, &shape)?;
                let m_hat = b.b.mul(m_new, c1)?;
                let v_hat = b.b.mul(v_new, c2)?;
                let root = b.b.unary(Op::Unary(UnaryOp::Sqrt), v_hat)?;
                let denom = b.b.add_scalar(root, *eps)?;
                let mut u = b.b.div(m_hat, denom)?;
                if wd != 0.0 {
                    let wp = b.b.scale(p, wd)?;
                    u = b.b.add(u, wp)?;
                }
                if matches!(cfg.kind, OptimKind::Lamb { .. }) {
                    let ps = b.sum_sq(p)?;
                    let pn = b.b.unary(Op::Unary(UnaryOp::Sqrt), ps)?;
                    let us = b.sum_sq(u)?;
                    let un = b.b.unary(Op::Unary(UnaryOp::Sqrt), us)?;
                    // trust = 1 + nz(pn) nz(un) (pn / (un + 1 - nz(un)) - 1)
                    let zp = b.nonzero(pn)?;
                    let zu = b.nonzero(un)?;
                    let not_zu = b.b.scale(zu, -1.0)?;
                    let not_zu = b.b.add_scalar(not_zu, 1.0)?;
                    let safe_un = b.b.add(un, not_zu)?;
                    let ratio = b.b.div(pn, safe_un)?;
                    let ratio_m1 = b.b.add_scalar(ratio, -1.0)?;
                    let both = b.b.mul(zp, zu)?;
                    let t = b.b.mul(both, ratio_m1)?;
                    let trust = b.b.add_scalar(t, 1.0)?;
                    let tb = b.bcast(trust, &shape)?;
                    u = b.b.mul(u, tb)?;
                }
                u
            }
        };
        let delta = b.b.mul(lr_p, step)?;
        let p_new = b.b.sub(p, delta)?;
        new_outputs.push((update(&pname), p_new));
    }
    let mut g = b.b.finish();
    // Outputs: `loss`, then per parameter its new state tensors and `new.<param>`, in the
    // order they were pushed (parameter order).
    let mut outputs = vec![Output {
        name: OutputRole::Loss.name(),
        value: loss,
    }];
    outputs.extend(
        new_outputs
            .into_iter()
            .map(|(name, value)| Output { name, value }),
    );
    g.outputs = outputs;
    g.verify()
        .map_err(|e| format!("internal error: the step graph is ill-formed: {e}"))?;
    Ok(g)
}

/// The output name that writes back into parameter `param`.
fn update(param: &str) -> String {
    OutputRole::Update(param).name()
}
