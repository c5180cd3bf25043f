//! Optimizers as IR: the update of every trainable parameter appended to the joint graph.
//!
//! `step_graph(joint, cfg)` returns a graph whose extra parameters are the optimizer state
//! (`optim.m.<p>`, `optim.v.<p>`, `optim.momentum.<p>`: frozen, zero-initialised), whose
//! extra inputs are the host-computed scalars (`lr`, `bias_correction1`,
//! `bias_correction2`, `noise_scale`; a group's own `lr.<role>`, Muon's AdamW's `lr.adam`
//! and its bias corrections; Drop-Muon's `mask.<p>`) and noise tensors (`noise.<p>`), and
//! whose outputs are
//! `loss` and `new.<name>` for every trainable parameter and state tensor. An executor runs
//! it and writes each `new.X` back into `X`. Because the update is ordinary IR, the
//! interpreter and the JIT both run it and `text::print` shows it.
//!
//! Each parameter is updated by the rule of its role (`role_rule`: the optimizer's, then the
//! role's group): SGD, AdamW, LAMB or Muon (Newton–Schulz on the momentum, as matmuls).
//!
//! There is no `min`, `max` or `where` op, so:
//! - clipping uses `min(1, c / n) = 1 - relu(1 - c / n)`, with `n` the global norm + 1e-6
//!   (PyTorch's `clip_grad_norm_`);
//! - LAMB's "trust ratio is 1 when a norm is 0" uses `nz(x) = x / (x + 1e-30)`, which is 0
//!   at 0 and 1 (after f32 rounding) for any norm above ~1e-22.

use crate::ir::{
    Graph, GraphBuilder, Init, IrError, Op, Output, OutputRole, ParamRole, Phase, Type, UnaryOp,
    ValueId,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The name of the scheduled learning-rate input.
pub const LR: &str = "lr";
/// `1 / (1 - beta1^t)` (Adam-style optimizers).
pub const BIAS_CORRECTION1: &str = "bias_correction1";
/// `1 / (1 - beta2^t)`.
pub const BIAS_CORRECTION2: &str = "bias_correction2";
/// The gradient-noise standard deviation `sqrt(eta / (1 + t)^gamma)`.
pub const NOISE_SCALE: &str = "noise_scale";
/// Drop-Muon's per-parameter inputs `mask.<param>`: 1 when the parameter is updated at this
/// step, 0 when it is dropped.
pub const MASK_PREFIX: &str = "mask.";
/// Newton–Schulz quintic coefficients of Keller Jordan's reference Muon.
pub const NS_COEFFS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);
/// Added to `|G|_F` before Newton–Schulz normalises by it.
pub const NS_EPS: f64 = 1e-7;

/// Muon's settings (Jordan et al., the reference `MuonWithAuxAdam`): momentum and the
/// Newton–Schulz iteration for `matrix` parameters, and the AdamW that updates every other
/// parameter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MuonConfig {
    pub momentum: f64,
    pub nesterov: bool,
    pub ns_steps: u32,
    /// The AdamW of the parameters Muon does not update.
    pub adam: AuxAdam,
}

/// The AdamW that Muon runs beside itself (the reference's defaults: lr 3e-4, betas
/// (0.9, 0.95), eps 1e-10, no weight decay).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuxAdam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for MuonConfig {
    fn default() -> Self {
        MuonConfig {
            momentum: 0.95,
            nesterov: true,
            ns_steps: 5,
            adam: AuxAdam {
                lr: 3e-4,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-10,
                weight_decay: 0.0,
            },
        }
    }
}

/// The optimizer a parameter group asks for instead of the recipe's own rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOptim {
    AdamW,
    Muon,
}

impl GroupOptim {
    pub const ALL: [GroupOptim; 2] = [GroupOptim::AdamW, GroupOptim::Muon];
    pub fn name(self) -> &'static str {
        match self {
            GroupOptim::AdamW => "adamw",
            GroupOptim::Muon => "muon",
        }
    }
}

/// The settings of one parameter role (`norms = group(weight_decay = 0)`): each field that
/// is set replaces what the optimizer would give the role's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub role: ParamRole,
    pub optimizer: Option<GroupOptim>,
    /// The peak learning rate (absolute; the schedule scales it like the main one).
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub betas: Option<(f64, f64)>,
    pub eps: Option<f64>,
}

impl Group {
    pub fn new(role: ParamRole) -> Group {
        Group {
            role,
            optimizer: None,
            lr: None,
            weight_decay: None,
            betas: None,
            eps: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimKind {
    /// PyTorch's SGD: `d = g + wd p`, `buf = momentum buf + d`, `p -= lr buf` (or
    /// `lr (d + momentum buf)` with Nesterov). Weight decay is coupled, as in PyTorch.
    Sgd { momentum: f64, nesterov: bool },
    /// Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's AdamW.
    AdamW { beta1: f64, beta2: f64, eps: f64 },
    /// LAMB (You et al.): the AdamW direction `u` scaled per tensor by `|p| / |u|`.
    Lamb { beta1: f64, beta2: f64, eps: f64 },
    /// Muon on `matrix` parameters, AdamW on the others.
    Muon(MuonConfig),
    /// Drop-Muon (randomized progressive training): Muon where each step updates only the
    /// `matrix` parameters from a random index on (`drop_masks`).
    DropMuon(MuonConfig),
}

impl OptimKind {
    pub fn name(&self) -> &'static str {
        match self {
            OptimKind::Sgd { .. } => "sgd",
            OptimKind::AdamW { .. } => "adamw",
            OptimKind::Lamb { .. } => "lamb",
            OptimKind::Muon(_) => "muon",
            OptimKind::DropMuon(_) => "drop_muon",
        }
    }
    /// The betas of the main rule's bias corrections (`bias_correction1`, `2`).
    fn betas(&self) -> Option<(f64, f64)> {
        match self {
            OptimKind::AdamW { beta1, beta2, .. } | OptimKind::Lamb { beta1, beta2, .. } => {
                Some((*beta1, *beta2))
            }
            OptimKind::Sgd { .. } | OptimKind::Muon(_) | OptimKind::DropMuon(_) => None,
        }
    }
    /// Muon's settings, for the Muon family.
    pub fn muon(&self) -> Option<&MuonConfig> {
        match self {
            OptimKind::Muon(m) | OptimKind::DropMuon(m) => Some(m),
            OptimKind::Sgd { .. } | OptimKind::AdamW { .. } | OptimKind::Lamb { .. } => None,
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
    /// Per-role settings (parameter groups), at most one per role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
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
            groups: vec![],
        }
    }
}

/// The update rule of one role's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    Sgd {
        momentum: f64,
        nesterov: bool,
    },
    /// AdamW, or LAMB when `lamb`.
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        lamb: bool,
    },
    Muon {
        momentum: f64,
        nesterov: bool,
        ns_steps: u32,
    },
}

/// Where a role's learning rate or bias corrections come from, which names their inputs:
/// the main rule (`lr`), Muon's AdamW (`lr.adam`) or the role's own group (`lr.norm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Main,
    Adam,
    Group(ParamRole),
}

impl Source {
    /// The suffix of the input names: `""`, `".adam"`, `".<role>"`.
    pub fn suffix(self) -> String {
        match self {
            Source::Main => String::new(),
            Source::Adam => ".adam".into(),
            Source::Group(r) => format!(".{r}"),
        }
    }
}

/// Everything that decides how one role's parameters are updated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoleRule {
    pub rule: Rule,
    /// The peak learning rate and the input that carries its scheduled value.
    pub lr: f64,
    pub lr_source: Source,
    /// Whose bias corrections an Adam rule reads.
    pub betas_source: Source,
    pub weight_decay: f64,
    /// Drop-Muon: the update is multiplied by the parameter's `mask.<name>` input.
    pub masked: bool,
}

impl RoleRule {
    /// The rule as a call of the recipe language, for the step graph's header.
    pub fn describe(&self) -> String {
        let f = crate::ir::text::float_text;
        let lr = f(self.lr);
        let wd = f(self.weight_decay);
        match self.rule {
            Rule::Sgd { momentum, nesterov } => format!(
                "sgd(lr = {lr}, momentum = {}, nesterov = {nesterov}, weight_decay = {wd})",
                f(momentum)
            ),
            Rule::Adam {
                beta1,
                beta2,
                eps,
                lamb,
            } => format!(
                "{}(lr = {lr}, betas = [{}, {}], eps = {}, weight_decay = {wd})",
                if lamb { "lamb" } else { "adamw" },
                f(beta1),
                f(beta2),
                f(eps)
            ),
            Rule::Muon {
                momentum,
                nesterov,
                ns_steps,
            } => format!(
                "{}(lr = {lr}, momentum = {}, nesterov = {nesterov}, ns_steps = {ns_steps}, \
                 weight_decay = {wd})",
                if self.masked { "drop_muon" } else { "muon" },
                f(momentum)
            ),
        }
    }
    /// The names of the learning-rate input and (Adam rules) the bias-correction inputs.
    pub fn input_names(&self) -> (String, Option<(String, String)>) {
        let lr = format!("{LR}{}", self.lr_source.suffix());
        let bc = match self.rule {
            Rule::Adam { .. } => {
                let s = self.betas_source.suffix();
                Some((
                    format!("{BIAS_CORRECTION1}{s}"),
                    format!("{BIAS_CORRECTION2}{s}"),
                ))
            }
            Rule::Sgd { .. } | Rule::Muon { .. } => None,
        };
        (lr, bc)
    }
}

/// What the main optimizer alone gives a role (before its group).
fn base_rule(cfg: &OptimConfig, role: ParamRole) -> RoleRule {
    let main = |rule| RoleRule {
        rule,
        lr: cfg.lr,
        lr_source: Source::Main,
        betas_source: Source::Main,
        weight_decay: cfg.weight_decay,
        masked: false,
    };
    match &cfg.kind {
        OptimKind::Sgd { momentum, nesterov } => main(Rule::Sgd {
            momentum: *momentum,
            nesterov: *nesterov,
        }),
        OptimKind::AdamW { beta1, beta2, eps } | OptimKind::Lamb { beta1, beta2, eps } => {
            main(Rule::Adam {
                beta1: *beta1,
                beta2: *beta2,
                eps: *eps,
                lamb: matches!(cfg.kind, OptimKind::Lamb { .. }),
            })
        }
        OptimKind::Muon(m) | OptimKind::DropMuon(m) => match role {
            ParamRole::Matrix => muon_rule(cfg, m),
            ParamRole::Embedding
            | ParamRole::Input
            | ParamRole::Norm
            | ParamRole::Bias
            | ParamRole::Head
            | ParamRole::Scalar
            | ParamRole::State
            | ParamRole::Other => aux_rule(&m.adam),
        },
    }
}

fn muon_rule(cfg: &OptimConfig, m: &MuonConfig) -> RoleRule {
    RoleRule {
        rule: Rule::Muon {
            momentum: m.momentum,
            nesterov: m.nesterov,
            ns_steps: m.ns_steps,
        },
        lr: cfg.lr,
        lr_source: Source::Main,
        betas_source: Source::Main,
        weight_decay: cfg.weight_decay,
        masked: matches!(cfg.kind, OptimKind::DropMuon(_)),
    }
}

fn aux_rule(a: &AuxAdam) -> RoleRule {
    RoleRule {
        rule: Rule::Adam {
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            lamb: false,
        },
        lr: a.lr,
        lr_source: Source::Adam,
        betas_source: Source::Adam,
        weight_decay: a.weight_decay,
        masked: false,
    }
}

/// The rule of `role`'s parameters: the main optimizer's, then the role's group.
pub fn role_rule(cfg: &OptimConfig, role: ParamRole) -> RoleRule {
    let mut r = base_rule(cfg, role);
    let Some(g) = cfg.groups.iter().find(|g| g.role == role) else {
        return r;
    };
    let own = Source::Group(role);
    let is_adamw = matches!(r.rule, Rule::Adam { lamb: false, .. });
    let is_muon = matches!(r.rule, Rule::Muon { .. });
    match g.optimizer {
        None => {}
        Some(GroupOptim::AdamW) if is_adamw => {}
        Some(GroupOptim::Muon) if is_muon => {}
        Some(GroupOptim::AdamW) => {
            r = match cfg.kind.muon() {
                Some(m) => aux_rule(&m.adam),
                None => RoleRule {
                    rule: Rule::Adam {
                        beta1: 0.9,
                        beta2: 0.999,
                        eps: 1e-8,
                        lamb: false,
                    },
                    betas_source: own,
                    ..r
                },
            };
        }
        Some(GroupOptim::Muon) => {
            let m = cfg.kind.muon().copied().unwrap_or_default();
            r = muon_rule(cfg, &m);
        }
    }
    if let Some(lr) = g.lr {
        r.lr = lr;
        r.lr_source = own;
    }
    if let Some(wd) = g.weight_decay {
        r.weight_decay = wd;
    }
    if let Rule::Adam {
        beta1, beta2, eps, ..
    } = &mut r.rule
    {
        if let Some((b1, b2)) = g.betas {
            (*beta1, *beta2) = (b1, b2);
            r.betas_source = own;
        }
        if let Some(e) = g.eps {
            *eps = e;
        }
    }
    r
}

/// The host-side scalars of step `t` (1-based); `lr(peak)` is the scheduled learning rate
/// of a peak learning rate at this step. Holds a value for every input any role could
/// read; a step graph reads those it has.
pub fn scalars(cfg: &OptimConfig, t: u64, lr: &dyn Fn(f64) -> f64) -> Vec<(String, f64)> {
    let ti = t.min(i32::MAX as u64) as i32;
    let corrections = |b1: f64, b2: f64| (1.0 / (1.0 - b1.powi(ti)), 1.0 / (1.0 - b2.powi(ti)));
    let mut out = vec![(LR.to_string(), lr(cfg.lr))];
    if let Some((b1, b2)) = cfg.kind.betas() {
        let (c1, c2) = corrections(b1, b2);
        out.push((BIAS_CORRECTION1.to_string(), c1));
        out.push((BIAS_CORRECTION2.to_string(), c2));
    }
    if let Some(n) = cfg.noise {
        let v = (n.eta / (1.0 + t as f64).powf(n.gamma)).sqrt();
        out.push((NOISE_SCALE.to_string(), v));
    }
    for role in ParamRole::ALL {
        let r = role_rule(cfg, role);
        let (lr_name, bc) = r.input_names();
        let mut push = |name: String, v: f64| {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, v));
            }
        };
        push(lr_name, lr(r.lr));
        if let (Some((n1, n2)), Rule::Adam { beta1, beta2, .. }) = (bc, r.rule) {
            let (c1, c2) = corrections(beta1, beta2);
            push(n1, c1);
            push(n2, c2);
        }
    }
    out
}

/// Drop-Muon's masks of step `t` (0-based) over `n` masked parameters, in parameter order:
/// randomized progressive training draws a start index `s` uniformly from `0..n` (from the
/// run's seed and `t`) and updates the parameters `s..n`, so the last one is always updated
/// and parameter `i` is updated with probability `(i + 1) / n`.
pub fn drop_masks(seed: u64, t: u64, n: usize) -> Vec<f64> {
    use rand::Rng;
    if n == 0 {
        return vec![];
    }
    let mut rng = super::tasks::rng_for(seed, super::tasks::STREAM_DROP, t);
    let start = rng.gen_range(0..n);
    (0..n).map(|i| if i >= start { 1.0 } else { 0.0 }).collect()
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
    /// The scalar inputs declared so far, by name (`lr`, `bias_correction1`, `lr.norm`, ...).
    scalars: HashMap<String, ValueId>,
    noise_scale: Option<ValueId>,
    /// `(output name, value)` of every updated parameter and state tensor, in order.
    updates: Vec<(String, ValueId)>,
}

impl B {
    /// The f32 scalar input `name`, declared on first use.
    fn scalar(&mut self, name: &str) -> ValueId {
        if let Some(&v) = self.scalars.get(name) {
            return v;
        }
        let v = self.b.input(name, Type::f32(Vec::<usize>::new()));
        self.scalars.insert(name.to_string(), v);
        v
    }
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
        self.b.role_param(
            format!("optim.{kind}.{pname}"),
            shape.to_vec(),
            Init::Zeros,
            false,
            ParamRole::State,
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
        let (n1, n2) = p
            .rule
            .input_names()
            .1
            .ok_or_else(|| IrError::Graph("the bias corrections are missing".into()))?;
        let (bc1, bc2) = (self.scalar(&n1), self.scalar(&n2));
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
    fn update_param(&mut self, p: Param<'_>, grad: ValueId) -> R<()> {
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
        let mask = if p.rule.masked {
            Some(self.scalar(&format!("{MASK_PREFIX}{}", p.name)))
        } else {
            None
        };
        let step = match p.rule.rule {
            Rule::Sgd { momentum, nesterov } => self.sgd(p, g, momentum, nesterov)?,
            Rule::Adam {
                beta1,
                beta2,
                eps,
                lamb: false,
            } => self.adam(p, g, (beta1, beta2), eps)?,
            Rule::Adam {
                beta1,
                beta2,
                eps,
                lamb: true,
            } => {
                let u = self.adam(p, g, (beta1, beta2), eps)?;
                self.trust(p, u)?
            }
            Rule::Muon {
                momentum,
                nesterov,
                ns_steps,
            } => self.muon(p, g, (momentum, nesterov, ns_steps), mask)?,
        };
        let lr_name = p.rule.input_names().0;
        let mut lr = self.scalar(&lr_name);
        if let Some(k) = mask {
            lr = self.b.mul(lr, k)?;
        }
        let lr_b = self.bcast(lr, p.shape)?;
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

    /// Muon's direction for a 2-D parameter `[r, c]`: `m = mu m + (1 - mu) g`, `u = (1 - mu)
    /// g + mu m` (Nesterov) or `m`, then `NS(u) sqrt(max(1, r / c)) + wd p`. With a Drop-Muon
    /// mask `k`, the stored momentum is `k m_new + (1 - k) m`: a dropped parameter's state
    /// does not move.
    fn muon(
        &mut self,
        p: Param<'_>,
        g: ValueId,
        (momentum, nesterov, ns_steps): (f64, bool, u32),
        mask: Option<ValueId>,
    ) -> R<ValueId> {
        let &[rows, cols] = p.shape else {
            return Err(IrError::Graph(format!(
                "muon updates 2-D parameters, and {} is {:?}",
                p.name, p.shape
            )));
        };
        let buf = self.state("momentum", p.name, p.shape)?;
        let mb = self.b.scale(buf, momentum)?;
        let gb = self.b.scale(g, 1.0 - momentum)?;
        let m_new = self.b.add(mb, gb)?;
        let stored = match mask {
            None => m_new,
            Some(k) => {
                let kb = self.bcast(k, p.shape)?;
                let not_k = self.one_minus(kb)?;
                let kept = self.b.mul(kb, m_new)?;
                let held = self.b.mul(not_k, buf)?;
                self.b.add(kept, held)?
            }
        };
        self.updates
            .push((update(&format!("optim.momentum.{}", p.name)), stored));
        let u = if nesterov {
            let gm = self.b.scale(g, 1.0 - momentum)?;
            let mm = self.b.scale(m_new, momentum)?;
            self.b.add(gm, mm)?
        } else {
            m_new
        };
        let o = self.newton_schulz(u, rows > cols, ns_steps)?;
        let scale = (rows as f64 / cols as f64).max(1.0).sqrt();
        let o = if scale != 1.0 {
            self.b.scale(o, scale)?
        } else {
            o
        };
        if p.rule.weight_decay == 0.0 {
            return Ok(o);
        }
        let wp = self.b.scale(p.value, p.wd)?;
        self.b.add(o, wp)
    }

    /// The quintic Newton–Schulz iteration of Keller Jordan's Muon on `G / (|G|_F + 1e-7)`:
    /// `A = X X^T`, `B = b A + c A A`, `X = a X + B X`, `steps` times. When `G` has more rows
    /// than columns the reference iterates on `G^T`; here `tall` runs the same iteration
    /// transposed (`A = X^T X`, `X = a X + X B`, as `B` is symmetric), so no transpose is
    /// materialised.
    fn newton_schulz(&mut self, g: ValueId, tall: bool, steps: u32) -> R<ValueId> {
        let (a, b, c) = NS_COEFFS;
        let shape = self.b.shape(g);
        let ss = self.sum_sq(g)?;
        let n = self.b.unary(Op::Unary(UnaryOp::Sqrt), ss)?;
        let n = self.b.add_scalar(n, NS_EPS)?;
        let inv = self.b.unary(Op::Unary(UnaryOp::Recip), n)?;
        let inv = self.bcast(inv, &shape)?;
        let mut x = self.b.mul(g, inv)?;
        for _ in 0..steps {
            let gram = if tall {
                self.b.matmul(x, x, true, false)?
            } else {
                self.b.matmul(x, x, false, true)?
            };
            let gg = self.b.matmul(gram, gram, false, false)?;
            let bg = self.b.scale(gram, b)?;
            let cgg = self.b.scale(gg, c)?;
            let poly = self.b.add(bg, cgg)?;
            let px = if tall {
                self.b.matmul(x, poly, false, false)?
            } else {
                self.b.matmul(poly, x, false, false)?
            };
            let ax = self.b.scale(x, a)?;
            x = self.b.add(ax, px)?;
        }
        Ok(x)
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
    /// The rule of the parameter's role.
    rule: &'a RoleRule,
}

/// AdamW's width scaling rule (2-D weights only; token and position tables and a features
/// model's input projection keep the base rates): `m = in / base_width`.
fn width_multiplier(cfg: &OptimConfig, role: ParamRole, shape: &[usize]) -> f64 {
    let scaled = match role {
        ParamRole::Embedding | ParamRole::Input => false,
        ParamRole::Norm
        | ParamRole::Bias
        | ParamRole::Matrix
        | ParamRole::Head
        | ParamRole::Scalar
        | ParamRole::State
        | ParamRole::Other => true,
    };
    match cfg.width_scaling {
        Some(base) if shape.len() == 2 && scaled && base > 0.0 => shape[1] as f64 / base,
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
    let mut st = B {
        b,
        scalars: HashMap::new(),
        noise_scale: None,
        updates: vec![],
    };
    // The main inputs first, in a fixed order; the groups' own inputs follow when first read.
    st.scalar(LR);
    if cfg.kind.betas().is_some() {
        st.scalar(BIAS_CORRECTION1);
        st.scalar(BIAS_CORRECTION2);
    }
    st.noise_scale = cfg.noise.map(|_| st.scalar(NOISE_SCALE));
    let rules: HashMap<ParamRole, RoleRule> = ParamRole::ALL
        .into_iter()
        .map(|r| (r, role_rule(cfg, r)))
        .collect();
    let mut grads: Vec<ValueId> = updated.iter().map(|(_, g)| *g).collect();
    if let Some(c) = cfg.clip {
        st.clip(&mut grads, c)?;
    }
    for (&(pi, _), &grad) in updated.iter().zip(&grads) {
        let param = &joint.params[pi];
        let value = st.b.role_param(
            param.name.clone(),
            param.shape.clone(),
            Init::Zeros,
            true,
            param.role,
        )?;
        let rule = &rules[&param.role];
        // Width scaling is AdamW's rule: a group that moves a role to Muon leaves it out.
        let mult = match rule.rule {
            Rule::Adam { lamb: false, .. } => width_multiplier(cfg, param.role, &param.shape),
            _ => 1.0,
        };
        let p = Param {
            name: &param.name,
            shape: &param.shape,
            value,
            wd: rule.weight_decay * mult,
            lr_mult: 1.0 / mult,
            rule,
        };
        st.update_param(p, grad)?;
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

/// A recipe that does not fit the model: which setting is at fault, and why.
#[derive(Clone, Debug, PartialEq)]
pub enum Mismatch {
    /// The `optimizer` setting.
    Optimizer(String),
    /// The group setting of a role.
    Group(ParamRole, String),
}

/// Check that every Muon rule of `cfg` meets 2-D trainable parameters of `model` only, and
/// that a Muon-family optimizer updates at least one.
pub fn check_model(cfg: &OptimConfig, model: &Graph) -> Result<(), Mismatch> {
    let mut muon_params = 0;
    for p in model.params.iter().filter(|p| p.trainable) {
        let r = role_rule(cfg, p.role);
        if !matches!(r.rule, Rule::Muon { .. }) {
            continue;
        }
        if p.shape.len() != 2 {
            let why = format!(
                "muon updates 2-D weights, and `{}` ({} parameter) has shape {:?}",
                p.name, p.role, p.shape
            );
            return Err(if cfg.groups.iter().any(|g| g.role == p.role) {
                Mismatch::Group(p.role, why)
            } else {
                Mismatch::Optimizer(why)
            });
        }
        muon_params += 1;
    }
    if cfg.kind.muon().is_some() && muon_params == 0 {
        return Err(Mismatch::Optimizer(format!(
            "{} has no parameter to update: it updates 2-D hidden weights (role matrix) \
             unless a group says otherwise, and this recipe leaves it none",
            cfg.kind.name()
        )));
    }
    Ok(())
}

/// The step graph's header: one `;` comment line per role that has updated parameters,
/// with its rule, its inputs and its parameters (in parameter order).
pub fn describe_groups(joint: &Graph, cfg: &OptimConfig) -> String {
    let mut out = String::new();
    let updated = updated_params(joint);
    for role in ParamRole::ALL {
        let names: Vec<&str> = updated
            .iter()
            .map(|&(i, _)| &joint.params[i])
            .filter(|p| p.role == role)
            .map(|p| p.name.as_str())
            .collect();
        if names.is_empty() {
            continue;
        }
        let r = role_rule(cfg, role);
        let (lr, _) = r.input_names();
        out.push_str(&format!(
            "; group {role}: {} (lr from `{lr}`): {}\n",
            r.describe(),
            names.join(", ")
        ));
    }
    out
}
