//! The training recipe: the `train { }` section of a model file, with command-line overrides.
//!
//! Values are expressions of the language and may use the model's constants
//! (`steps = 100 * p`). Every error is a `Diagnostic` pointing into the file (or into the
//! text of the command-line option it came from).

use super::optim::{GradNoise, Group, GroupOptim, MuonConfig, OptimConfig, OptimKind};
use super::tasks::TaskSpec;
use crate::diag::Diagnostic;
use crate::ir::ParamRole;
use crate::syntax::ast::{BinOp, Call, Expr, ExprKind, Span, TrainSection, TrainValue};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How the learning rate moves over the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// Linear warmup over `warmup` steps, then constant.
    Constant { warmup: u64 },
    /// Linear warmup, then a cosine from the peak down to `final_fraction * lr`.
    Cosine { warmup: u64, final_fraction: f64 },
}

impl Schedule {
    /// The learning rate of step `t` (0-based) of `steps`.
    pub fn lr(&self, peak: f64, t: u64, steps: u64) -> f64 {
        let warmup = match self {
            Schedule::Constant { warmup } | Schedule::Cosine { warmup, .. } => *warmup,
        };
        if t < warmup {
            return peak * (t + 1) as f64 / warmup as f64;
        }
        match self {
            Schedule::Constant { .. } => peak,
            Schedule::Cosine { final_fraction, .. } => {
                let span = steps.saturating_sub(warmup).max(1) as f64;
                let progress = ((t - warmup) as f64 / span).min(1.0);
                let c = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                peak * (final_fraction + (1.0 - final_fraction) * c)
            }
        }
    }
}

/// Everything that decides the numbers of a run (stored in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// `None`: the model's default task, picked when the run starts.
    pub task: Option<TaskSpec>,
    pub steps: u64,
    pub optim: OptimConfig,
    pub schedule: Schedule,
    pub eval_every: u64,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            task: None,
            steps: 1000,
            optim: OptimConfig::default(),
            schedule: Schedule::Constant { warmup: 0 },
            eval_every: 100,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug)]
enum Val {
    Num(f64, bool),
    Bool(bool),
    Name(String),
    List(Vec<Val>),
}

fn err(msg: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
    Diagnostic::new(msg, span, label)
}

/// An argument `named_args` accepted that its caller does not handle: a compiler bug.
fn unlisted(name: &str, span: Span) -> Diagnostic {
    err(
        format!("internal compiler error: the argument `{name}` is accepted but not read"),
        span,
        "here",
    )
    .with_hint("this is a bug in lamina; please report it with the model file")
}

fn eval(e: &Expr, consts: &HashMap<String, f64>) -> Result<Val, Diagnostic> {
    let num = |v: Val, span: Span| match v {
        Val::Num(x, i) => Ok((x, i)),
        _ => Err(err("expected a number", span, "not a number")),
    };
    Ok(match &e.kind {
        ExprKind::Int(v) => Val::Num(*v as f64, true),
        ExprKind::Float(v) => Val::Num(*v, false),
        ExprKind::Bool(b) => Val::Bool(*b),
        ExprKind::Name(n) => match consts.get(n) {
            Some(v) => Val::Num(*v, v.fract() == 0.0),
            None => Val::Name(n.clone()),
        },
        ExprKind::Neg(x) => {
            let (v, i) = num(eval(x, consts)?, x.span)?;
            Val::Num(-v, i)
        }
        ExprKind::Binary(op, l, r) => {
            let (a, ai) = num(eval(l, consts)?, l.span)?;
            let (b, bi) = num(eval(r, consts)?, r.span)?;
            let ints = ai && bi;
            let v = match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                BinOp::FloorDiv | BinOp::Mod if b == 0.0 => {
                    return Err(err("division by zero", e.span, "here"))
                }
                BinOp::FloorDiv => (a / b).floor(),
                BinOp::Mod => a.rem_euclid(b),
            };
            if !v.is_finite() {
                return Err(err("the value is not finite", e.span, "here"));
            }
            Val::Num(v, ints && !matches!(op, BinOp::Div))
        }
        ExprKind::Call(c) => {
            return Err(err(
                format!("`{}(...)` is not a value here", c.name.name),
                e.span,
                "a call",
            ))
        }
        ExprKind::List(items) => Val::List(
            items
                .iter()
                .map(|x| eval(x, consts))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn as_f64(e: &Expr, consts: &HashMap<String, f64>) -> Result<f64, Diagnostic> {
    match eval(e, consts)? {
        Val::Num(v, _) => Ok(v),
        _ => Err(err("expected a number", e.span, "not a number")),
    }
}

fn as_nonneg(e: &Expr, consts: &HashMap<String, f64>) -> Result<f64, Diagnostic> {
    let v = as_f64(e, consts)?;
    if v.is_nan() || v < 0.0 {
        return Err(err(
            format!("expected a non-negative number, got {v}"),
            e.span,
            "negative",
        ));
    }
    Ok(v)
}

/// The largest seed: every seed, wherever it is given, is a whole number from 0 to 2^53
/// (the integers a double holds exactly, as expressions of the language compute).
pub const MAX_SEED: u64 = 1 << 53;

/// The rule for seeds, as a sentence.
pub const SEED_RULE: &str = "the seed must be a whole number from 0 to 2^53 (9007199254740992)";

/// A seed text that breaks the rule for seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedError {
    pub text: String,
}

impl std::fmt::Display for SeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SEED_RULE}, got `{}`", self.text)
    }
}

impl std::error::Error for SeedError {}

/// A seed given as text (`--seed` of `init`, `run`, `sample`).
pub fn parse_seed(text: &str) -> Result<u64, SeedError> {
    match text.trim().replace('_', "").parse::<u64>() {
        Ok(v) if v <= MAX_SEED => Ok(v),
        _ => Err(SeedError {
            text: text.to_string(),
        }),
    }
}

/// A whole number from 0 to `max`; `what` names it in the error ("warmup", "the seed").
fn whole(e: &Expr, consts: &HashMap<String, f64>, what: &str, max: u64) -> Result<u64, Diagnostic> {
    let range = if max == MAX_SEED {
        "0 to 2^53 (9007199254740992)".to_string()
    } else {
        "0 to 10^12".to_string()
    };
    let fail = |got: String, label: &str| {
        err(
            format!("{what} must be a whole number from {range}, got {got}"),
            e.span,
            label,
        )
    };
    match eval(e, consts)? {
        Val::Num(v, _) if v < 0.0 => Err(fail(v.to_string(), "negative")),
        Val::Num(v, _) if v.fract() != 0.0 => Err(fail(v.to_string(), "not whole")),
        Val::Num(v, _) if v > max as f64 => Err(fail(v.to_string(), "too large")),
        Val::Num(v, _) => Ok(v as u64),
        _ => Err(fail(
            "something that is not a number".into(),
            "not a number",
        )),
    }
}

/// A count of steps (or of things: p), from 0 to 10^12.
fn as_count(e: &Expr, consts: &HashMap<String, f64>, what: &str) -> Result<u64, Diagnostic> {
    whole(e, consts, what, 1_000_000_000_000)
}

/// A call's arguments by name (positional ones are errors: recipes read better named).
fn named_args<'a>(c: &'a Call, allowed: &[&str]) -> Result<Vec<(&'a str, &'a Expr)>, Diagnostic> {
    let mut out: Vec<(&str, &Expr)> = Vec::new();
    for a in c.args.iter().flatten() {
        let Some(k) = &a.key else {
            return Err(err(
                format!("arguments of `{}` must be named", c.name.name),
                a.span,
                "positional argument",
            )
            .with_hint(format!("its arguments are {}", allowed.join(", "))));
        };
        if !allowed.contains(&k.name.as_str()) {
            return Err(err(
                format!("unknown argument `{}` for `{}`", k.name, c.name.name),
                k.span,
                "unknown",
            )
            .with_hint(if allowed.is_empty() {
                format!("`{}` takes no arguments", c.name.name)
            } else {
                format!("its arguments are {}", allowed.join(", "))
            }));
        }
        if out.iter().any(|(n, _)| *n == k.name) {
            return Err(err(
                format!("argument `{}` given twice", k.name),
                k.span,
                "again",
            ));
        }
        out.push((&k.name, &a.value));
    }
    Ok(out)
}

/// A value written as `name` or `name(args)`, seen as a call.
fn as_call(v: &TrainValue) -> Option<Call> {
    match v {
        TrainValue::Call(c) => Some(c.clone()),
        TrainValue::Expr(Expr {
            kind: ExprKind::Name(n),
            span,
        }) => Some(Call {
            name: crate::syntax::ast::Ident {
                name: n.clone(),
                span: *span,
            },
            args: None,
            span: *span,
        }),
        TrainValue::Expr(_) => None,
    }
}

pub(crate) fn value_span(v: &TrainValue) -> Span {
    match v {
        TrainValue::Call(c) => c.span,
        TrainValue::Expr(e) => e.span,
    }
}

fn expect_call(v: &TrainValue, what: &str, kinds: &str) -> Result<Call, Diagnostic> {
    as_call(v).ok_or_else(|| {
        err(
            format!("expected {what}"),
            value_span(v),
            format!("not {what}"),
        )
        .with_hint(format!("write one of {kinds}"))
    })
}

fn expect_expr<'a>(v: &'a TrainValue, key: &str) -> Result<&'a Expr, Diagnostic> {
    match v {
        TrainValue::Expr(e) => Ok(e),
        TrainValue::Call(c) => Err(err(
            format!("`{key}` takes a value, not a call"),
            c.span,
            "a call",
        )),
    }
}

pub const KEYS: &[&str] = &[
    "task",
    "steps",
    "optimizer",
    "schedule",
    "clip",
    "noise",
    "eval_every",
    "seed",
    "embeddings",
    "inputs",
    "norms",
    "biases",
    "matrices",
    "heads",
    "scalars",
];

/// The setting that configures a role's parameter group (`norms = group(...)`): the role's
/// name in the plural (`norm` and `head` are keywords of the language).
pub fn group_key(role: ParamRole) -> Option<&'static str> {
    match role {
        ParamRole::Embedding => Some("embeddings"),
        ParamRole::Input => Some("inputs"),
        ParamRole::Norm => Some("norms"),
        ParamRole::Bias => Some("biases"),
        ParamRole::Matrix => Some("matrices"),
        ParamRole::Head => Some("heads"),
        ParamRole::Scalar => Some("scalars"),
        ParamRole::State | ParamRole::Other => None,
    }
}

/// The role whose group setting is `key`.
fn group_role(key: &str) -> Option<ParamRole> {
    ParamRole::ALL
        .into_iter()
        .find(|&r| group_key(r) == Some(key))
}

/// `group(optimizer = adamw, lr = 3e-4, weight_decay = 0, betas = [0.9, 0.95], eps = 1e-8)`.
fn group(
    role: ParamRole,
    value: &TrainValue,
    consts: &HashMap<String, f64>,
) -> Result<Group, Diagnostic> {
    let c = expect_call(value, "a parameter group", "group(weight_decay = 0, ...)")?;
    if c.name.name != "group" {
        return Err(err(
            format!("expected `group(...)`, found `{}`", c.name.name),
            c.name.span,
            "not a group",
        )
        .with_hint("write e.g. group(lr = 3e-4, weight_decay = 0)"));
    }
    let mut g = Group::new(role);
    let allowed = ["optimizer", "lr", "weight_decay", "betas", "eps"];
    for (k, e) in named_args(&c, &allowed)? {
        match k {
            "optimizer" => {
                let names: Vec<&str> = GroupOptim::ALL.iter().map(|o| o.name()).collect();
                g.optimizer = Some(match eval(e, consts)? {
                    Val::Name(n) => GroupOptim::ALL
                        .into_iter()
                        .find(|o| o.name() == n)
                        .ok_or_else(|| {
                            err(format!("unknown group optimizer `{n}`"), e.span, "unknown")
                                .with_hint(crate::elab::suggest(&n, &names, "they are"))
                        })?,
                    _ => {
                        return Err(err("expected an optimizer name", e.span, "here")
                            .with_hint(format!("write one of {}", names.join(", "))))
                    }
                });
            }
            "lr" => g.lr = Some(as_nonneg(e, consts)?),
            "weight_decay" => g.weight_decay = Some(as_nonneg(e, consts)?),
            "betas" => g.betas = Some(betas(e, consts)?),
            "eps" => g.eps = Some(as_nonneg(e, consts)?),
            other => return Err(unlisted(other, e.span)),
        }
    }
    Ok(g)
}

/// Apply one `key = value` setting to `cfg`.
pub fn apply_setting(
    cfg: &mut TrainConfig,
    key: &crate::syntax::ast::Ident,
    value: &TrainValue,
    consts: &HashMap<String, f64>,
) -> Result<(), Diagnostic> {
    match key.name.as_str() {
        "task" => cfg.task = Some(task(value, consts)?),
        "steps" => {
            let e = expect_expr(value, "steps")?;
            let n = as_count(e, consts, "steps")?;
            if n == 0 {
                return Err(err("steps must be at least 1", e.span, "zero"));
            }
            cfg.steps = n;
        }
        "eval_every" => {
            let e = expect_expr(value, "eval_every")?;
            cfg.eval_every = as_count(e, consts, "eval_every")?.max(1);
        }
        "seed" => cfg.seed = whole(expect_expr(value, "seed")?, consts, "the seed", MAX_SEED)?,
        "clip" => {
            let e = expect_expr(value, "clip")?;
            cfg.optim.clip = match eval(e, consts)? {
                Val::Name(n) if n == "none" => None,
                Val::Num(v, _) if v > 0.0 => Some(v),
                _ => {
                    return Err(err(
                        "clip must be a positive number (the largest global gradient norm) or \
                         `none`",
                        e.span,
                        "here",
                    ))
                }
            }
        }
        "optimizer" => {
            let c = expect_call(
                value,
                "an optimizer",
                "sgd(...), adamw(...), lamb(...), muon(...), drop_muon(...)",
            )?;
            optimizer(cfg, &c, consts)?;
        }
        "schedule" => {
            let c = expect_call(
                value,
                "a schedule",
                "constant(warmup = N), cosine(warmup = N)",
            )?;
            cfg.schedule = schedule(&c, consts)?;
        }
        "noise" => {
            let c = expect_call(value, "gradient noise", "gradient_noise(eta = 0.01), none")?;
            if c.name.name == "none" {
                cfg.optim.noise = None;
                return Ok(());
            }
            if c.name.name != "gradient_noise" {
                return Err(err(
                    format!("unknown noise `{}`", c.name.name),
                    c.name.span,
                    "unknown",
                )
                .with_hint("write gradient_noise(eta = 0.01, gamma = 0.55) or none"));
            }
            let mut n = GradNoise {
                eta: 0.01,
                gamma: 0.55,
            };
            for (k, e) in named_args(&c, &["eta", "gamma"])? {
                match k {
                    "eta" => n.eta = as_nonneg(e, consts)?,
                    _ => n.gamma = as_nonneg(e, consts)?,
                }
            }
            cfg.optim.noise = Some(n);
        }
        other => {
            let Some(role) = group_role(other) else {
                let hint = match crate::elab::closest(other, KEYS.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("the settings are {}", KEYS.join(", ")),
                };
                return Err(err(
                    format!("unknown setting `{other}` in the train section"),
                    key.span,
                    "unknown",
                )
                .with_hint(hint));
            };
            let g = group(role, value, consts)?;
            cfg.optim.groups.retain(|x| x.role != role);
            cfg.optim.groups.push(g);
        }
    }
    Ok(())
}

fn betas(e: &Expr, consts: &HashMap<String, f64>) -> Result<(f64, f64), Diagnostic> {
    match eval(e, consts)? {
        Val::List(v) if v.len() == 2 => match (&v[0], &v[1]) {
            (Val::Num(a, _), Val::Num(b, _))
                if (0.0..1.0).contains(a) && (0.0..1.0).contains(b) =>
            {
                Ok((*a, *b))
            }
            _ => Err(err("betas must be in [0, 1)", e.span, "here")),
        },
        _ => Err(err(
            "betas is a list of two numbers, e.g. [0.9, 0.999]",
            e.span,
            "here",
        )),
    }
}

fn optimizer(
    cfg: &mut TrainConfig,
    c: &Call,
    consts: &HashMap<String, f64>,
) -> Result<(), Diagnostic> {
    let o = &mut cfg.optim;
    match c.name.name.as_str() {
        "sgd" => {
            let (mut momentum, mut nesterov) = (0.0, false);
            o.lr = 0.1;
            o.weight_decay = 0.0;
            for (k, e) in named_args(c, &["lr", "momentum", "nesterov", "weight_decay"])? {
                match k {
                    "lr" => o.lr = as_nonneg(e, consts)?,
                    "momentum" => momentum = as_nonneg(e, consts)?,
                    "weight_decay" => o.weight_decay = as_nonneg(e, consts)?,
                    _ => {
                        nesterov = match eval(e, consts)? {
                            Val::Bool(b) => b,
                            _ => return Err(err("nesterov is true or false", e.span, "here")),
                        }
                    }
                }
            }
            o.kind = OptimKind::Sgd { momentum, nesterov };
            o.width_scaling = None;
        }
        "adamw" | "lamb" => {
            let (mut b1, mut b2, mut eps) =
                (0.9, 0.999, if c.name.name == "lamb" { 1e-6 } else { 1e-8 });
            o.lr = 1e-3;
            o.weight_decay = if c.name.name == "adamw" { 0.01 } else { 0.0 };
            o.width_scaling = None;
            let mut allowed = vec!["lr", "betas", "eps", "weight_decay"];
            if c.name.name == "adamw" {
                allowed.push("width_scaling");
            }
            for (k, e) in named_args(c, &allowed)? {
                match k {
                    "lr" => o.lr = as_nonneg(e, consts)?,
                    "betas" => (b1, b2) = betas(e, consts)?,
                    "eps" => eps = as_nonneg(e, consts)?,
                    "weight_decay" => o.weight_decay = as_nonneg(e, consts)?,
                    _ => {
                        let w = as_f64(e, consts)?;
                        if w.is_nan() || w <= 0.0 {
                            return Err(err(
                                "width_scaling is the base width (a positive number)",
                                e.span,
                                "here",
                            ));
                        }
                        o.width_scaling = Some(w);
                    }
                }
            }
            o.kind = if c.name.name == "adamw" {
                OptimKind::AdamW {
                    beta1: b1,
                    beta2: b2,
                    eps,
                }
            } else {
                OptimKind::Lamb {
                    beta1: b1,
                    beta2: b2,
                    eps,
                }
            };
        }
        "muon" | "drop_muon" => {
            let m = muon(o, c, consts)?;
            o.kind = if c.name.name == "muon" {
                OptimKind::Muon(m)
            } else {
                OptimKind::DropMuon(m)
            };
        }
        other => {
            let names = ["sgd", "adamw", "lamb", "muon", "drop_muon"];
            return Err(err(
                format!("unknown optimizer `{other}`"),
                c.name.span,
                "unknown",
            )
            .with_hint(crate::elab::suggest(other, &names, "the optimizers are")));
        }
    }
    Ok(())
}

/// `muon(lr = 0.02, momentum = 0.95, nesterov = true, ns_steps = 5, weight_decay = 0,
/// adam_lr = 3e-4, adam_betas = [0.9, 0.95], adam_eps = 1e-10, adam_weight_decay = 0)`
/// (also `drop_muon`): sets `o`'s learning rate and weight decay (those of the Muon side).
fn muon(
    o: &mut OptimConfig,
    c: &Call,
    consts: &HashMap<String, f64>,
) -> Result<MuonConfig, Diagnostic> {
    let mut m = MuonConfig::default();
    o.lr = 0.02;
    o.weight_decay = 0.0;
    o.width_scaling = None;
    let allowed = [
        "lr",
        "momentum",
        "nesterov",
        "ns_steps",
        "weight_decay",
        "adam_lr",
        "adam_betas",
        "adam_eps",
        "adam_weight_decay",
    ];
    for (k, e) in named_args(c, &allowed)? {
        match k {
            "lr" => o.lr = as_nonneg(e, consts)?,
            "momentum" => {
                m.momentum = as_nonneg(e, consts)?;
                if m.momentum >= 1.0 {
                    return Err(err("momentum must be in [0, 1)", e.span, "here"));
                }
            }
            "nesterov" => {
                m.nesterov = match eval(e, consts)? {
                    Val::Bool(b) => b,
                    _ => return Err(err("nesterov is true or false", e.span, "here")),
                }
            }
            "ns_steps" => {
                let n = as_count(e, consts, "ns_steps")?;
                if !(1..=20).contains(&n) {
                    return Err(err("ns_steps must be between 1 and 20", e.span, "here"));
                }
                m.ns_steps = n as u32;
            }
            "weight_decay" => o.weight_decay = as_nonneg(e, consts)?,
            "adam_lr" => m.adam.lr = as_nonneg(e, consts)?,
            "adam_betas" => (m.adam.beta1, m.adam.beta2) = betas(e, consts)?,
            "adam_eps" => m.adam.eps = as_nonneg(e, consts)?,
            "adam_weight_decay" => m.adam.weight_decay = as_nonneg(e, consts)?,
            other => return Err(unlisted(other, e.span)),
        }
    }
    Ok(m)
}

fn schedule(c: &Call, consts: &HashMap<String, f64>) -> Result<Schedule, Diagnostic> {
    let name = c.name.name.as_str();
    let allowed: &[&str] =
        match name {
            "constant" => &["warmup"],
            "cosine" => &["warmup", "final"],
            _ => return Err(
                err(format!("unknown schedule `{name}`"), c.name.span, "unknown").with_hint(
                    "the schedules are constant(warmup = N) and cosine(warmup = N, final = 0.0)",
                ),
            ),
        };
    let (mut warmup, mut fin) = (0, 0.0);
    for (k, e) in named_args(c, allowed)? {
        match k {
            "warmup" => warmup = as_count(e, consts, "warmup")?,
            _ => {
                fin = as_nonneg(e, consts)?;
                if fin > 1.0 {
                    return Err(err(
                        "final is a fraction of the peak learning rate, in [0, 1]",
                        e.span,
                        "here",
                    ));
                }
            }
        }
    }
    Ok(match name {
        "constant" => Schedule::Constant { warmup },
        _ => Schedule::Cosine {
            warmup,
            final_fraction: fin,
        },
    })
}

fn task(v: &TrainValue, consts: &HashMap<String, f64>) -> Result<TaskSpec, Diagnostic> {
    let kinds =
        "modular_addition(p = 97), copy, reverse, char_lm, classification, regression, shapes";
    let c = expect_call(v, "a task", kinds)?;
    let name = c.name.name.as_str();
    match name {
        "modular_addition" => {
            let (mut p, mut f) = (97usize, 0.5);
            for (k, e) in named_args(&c, &["p", "train_fraction"])? {
                match k {
                    "p" => {
                        let n = as_count(e, consts, "p")?;
                        if !(2..=1000).contains(&n) {
                            return Err(err("p must be between 2 and 1000", e.span, "here"));
                        }
                        p = n as usize;
                    }
                    _ => {
                        f = as_f64(e, consts)?;
                        if !(f > 0.0 && f < 1.0) {
                            return Err(err(
                                "train_fraction must be between 0 and 1 (exclusive)",
                                e.span,
                                "here",
                            ));
                        }
                    }
                }
            }
            Ok(TaskSpec::ModularAddition {
                p,
                train_fraction: f,
            })
        }
        "copy" | "reverse" | "classification" | "regression" | "shapes" | "char_lm" => {
            named_args(&c, &[])?;
            Ok(match name {
                "copy" => TaskSpec::Copy,
                "reverse" => TaskSpec::Reverse,
                "classification" => TaskSpec::Classification,
                "regression" => TaskSpec::Regression,
                "shapes" => TaskSpec::Shapes,
                // The file comes from --data.
                _ => TaskSpec::CharLm {
                    path: String::new(),
                },
            })
        }
        other => Err(
            err(format!("unknown task `{other}`"), c.name.span, "unknown")
                .with_hint(format!("the tasks are {kinds}")),
        ),
    }
}

/// Apply a whole train section.
pub fn apply_section(
    cfg: &mut TrainConfig,
    section: &TrainSection,
    consts: &HashMap<String, f64>,
) -> Vec<Diagnostic> {
    section
        .settings
        .iter()
        .filter_map(|s| apply_setting(cfg, &s.key, &s.value, consts).err())
        .collect()
}
