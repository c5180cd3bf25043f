//! The elaborated architecture as plain data, for pictures of it (`lamina graph`, the
//! explorer): what each block's steps are, which weight set every executed layer runs,
//! and where the learning rule cuts or taps the stack. It is read off the resolved
//! `Plan`, the same plan `lower` emits as IR, so a diagram shows what the compiler builds.

use super::learning::{AuxHead, Learning};
use super::resolve::{
    Act, Head, InputPlan, Loss, NormKind, Placement, Plan, Pool, Positions, RopePairs, Skip, Sub,
    Unit,
};

/// A model's architecture, top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct Outline {
    pub name: String,
    /// The input, e.g. `tokens [16, 64], vocab 256`.
    pub input: String,
    /// The embedding, e.g. `embedding 256 -> 128, learned positions`.
    pub embed: String,
    /// Width of the residual stream.
    pub width: usize,
    /// The distinct blocks, in definition order.
    pub blocks: Vec<BlockOutline>,
    /// The executed layers, in order.
    pub layers: Vec<LayerOutline>,
    /// Weight sets the stacks declare; those no layer runs are skipped by an `order`.
    pub weight_sets: usize,
    /// e.g. `LayerNorm`; `None` when the model has no final norm.
    pub final_norm: Option<String>,
    pub head: String,
    pub loss: String,
    /// `backprop`, or the learning rule with its settings.
    pub learning: String,
}

/// A block: its residual steps in execution order.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockOutline {
    pub name: String,
    pub steps: Vec<StepOutline>,
}

/// One residual step: `x <- skip(x) + coef * sum(branches(norm(x)))` under a placement.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutline {
    /// The parameter prefix within a layer (`attn`, `ffn.1`), or the block's name for a
    /// parallel group.
    pub name: String,
    pub coef: f64,
    pub placement: NormPlacement,
    /// `LayerNorm` or `RMSNorm`.
    pub norm: String,
    pub skip: SkipOutline,
    /// One branch for a sequential step, several for a parallel group.
    pub branches: Vec<BranchOutline>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormPlacement {
    Pre,
    Post,
    Peri,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SkipOutline {
    Residual,
    None,
    Scaled(f64),
    /// A learned scalar starting at the value.
    Learned(f64),
    /// The step runs at `width` between a lift and a down projection.
    Hourglass {
        width: usize,
        lift_trainable: bool,
    },
}

/// A sublayer: its parameter prefix within a layer and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct BranchOutline {
    pub name: String,
    /// e.g. `attention, 4 heads, causal` or `ffn 512, gelu`.
    pub what: String,
}

/// One executed layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerOutline {
    /// Index into `Outline::blocks`.
    pub block: usize,
    /// The weight set `blocks.<weights>` it runs.
    pub weights: usize,
    /// Which execution of that weight set this is (0 for the first).
    pub run: usize,
    /// The layer reads its input through `stop_gradient`.
    pub detached: bool,
    /// A loss of the learning rule that taps the stream after this layer.
    pub tap: Option<Tap>,
    /// Its part in a depth program: `parallel group 1`, `routed`, `θA + 0.5 θB`.
    pub program: Option<&'static str>,
    /// The linear-expansion coefficient `c` of `θA + c θB`.
    pub expand: Option<f64>,
    /// The probability that training drops the layer for a sample (stochastic depth).
    pub drop_path: f64,
}

/// A loss of a learning rule on a layer's output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tap {
    /// The auxiliary loss `loss.local.<k>` of a local rule or target projection.
    Local(usize),
    /// Forward-Forward's goodness loss of the layer.
    Goodness,
}

pub(super) fn outline(p: &Plan) -> Outline {
    let n = p.layers.len();
    let ff = matches!(p.learning, Learning::ForwardForward { .. });
    let mut taps = 0;
    let mut tap = |i: usize| {
        if ff {
            Some(Tap::Goodness)
        } else if p.learning.local_loss_after(i, n) {
            taps += 1;
            Some(Tap::Local(taps - 1))
        } else {
            None
        }
    };
    Outline {
        name: p.name.clone(),
        input: input(p.input),
        embed: embed(p),
        width: p.d,
        blocks: p
            .blocks
            .iter()
            .map(|b| BlockOutline {
                name: b.name.clone(),
                steps: b.units.iter().map(|u| step(u, &b.name)).collect(),
            })
            .collect(),
        layers: p
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerOutline {
                block: l.block,
                weights: l.weights,
                run: l.run,
                detached: ff && i > 0 || p.learning.detaches_before(i),
                tap: tap(i),
                program: program(p, i),
                expand: l.program.expand,
                drop_path: l.program.drop_path,
            })
            .collect(),
        weight_sets: p.weight_sets,
        // Forward-Forward predicts by goodness, with neither final norm nor head.
        final_norm: p
            .final_norm
            .filter(|_| !ff)
            .map(|(k, _)| norm_name(k).to_string()),
        head: if ff {
            "prediction: the label of highest goodness".to_string()
        } else {
            head(p.head)
        },
        loss: loss(p, ff),
        learning: learning(p.learning),
    }
}

/// A layer's part in a parallel group or a routed stack.
fn program(p: &Plan, i: usize) -> Option<&'static str> {
    let l = &p.layers[i];
    let next_joins = p.layers.get(i + 1).is_some_and(|n| n.program.joins);
    match (l.program.joins || next_joins, l.program.routed) {
        (true, true) => Some("parallel, routed"),
        (true, false) => Some("parallel"),
        (false, true) => Some("routed"),
        (false, false) => None,
    }
}

/// The loss, with the subnets it sums over and the router penalty.
fn loss(p: &Plan, ff: bool) -> String {
    let mut s = match (ff, p.loss) {
        (true, _) => "the sum of the goodness losses",
        (false, Loss::CrossEntropy) => "cross-entropy",
        (false, Loss::Mse) => "mean squared error",
    }
    .to_string();
    if let Some(sub) = &p.subnets {
        let terms: Vec<String> = sub
            .depths
            .iter()
            .zip(&sub.weights)
            .map(|(d, w)| format!("{w} × depth {d}"))
            .collect();
        s.push_str(&format!(" of subnets {}", terms.join(" + ")));
    }
    if p.widths > 0 {
        s.push_str(&format!(", the mean over {} nested widths", p.widths));
    }
    if let Some(r) = p.routing {
        s.push_str(&format!(" + {} × mean gate", r.sparsity));
    }
    let balance = p
        .blocks
        .iter()
        .flat_map(|b| &b.units)
        .flat_map(|u| &u.branches)
        .find_map(|br| match br.sub {
            Sub::Moe { balance, .. } if balance > 0.0 => Some(balance),
            _ => None,
        });
    if let Some(b) = balance {
        s.push_str(&format!(" + {b} × expert balance"));
    }
    s
}

fn input(i: InputPlan) -> String {
    match i {
        InputPlan::Tokens {
            batch,
            length,
            vocab,
        } => format!("tokens [{batch}, {length}], vocab {vocab}"),
        InputPlan::Features { batch, width } => format!("features [{batch}, {width}]"),
        InputPlan::Image {
            batch,
            channels,
            height,
            width,
            ..
        } => format!("images [{batch}, {channels}, {height}, {width}]"),
    }
}

fn embed(p: &Plan) -> String {
    let what = match p.input {
        InputPlan::Tokens { vocab, .. } => format!("embedding {vocab} -> {}", p.d),
        InputPlan::Features { width, .. } if p.feature_embed => {
            format!("linear {width} -> {}", p.d)
        }
        InputPlan::Features { .. } => "features as the stream".to_string(),
        InputPlan::Image {
            channels, patch, ..
        } => {
            let (gh, gw) = p.input.patch_grid().unwrap_or((0, 0));
            format!(
                "patches {patch}x{patch} ({gh}x{gw}) of {channels} channel{} -> {}",
                if channels == 1 { "" } else { "s" },
                p.d
            )
        }
    };
    let what = match p.head {
        Head::Classifier {
            pool: Pool::Cls, ..
        } => format!("{what}, class token"),
        Head::Classifier {
            pool: Pool::Mean, ..
        }
        | Head::Lm { .. }
        | Head::Linear { .. } => what,
    };
    match p.positions {
        Positions::Learned => format!("{what}, learned positions"),
        Positions::Sinusoidal => format!("{what}, sinusoidal positions"),
        Positions::Sinusoidal2d => format!("{what}, 2-D sinusoidal positions"),
        Positions::Rope { base, pairs } => format!(
            "{what}, rotary positions (base {base}, {} pairs)",
            match pairs {
                RopePairs::Half => "half-split",
                RopePairs::Interleaved => "interleaved",
            }
        ),
        Positions::None => what,
    }
}

fn norm_name(k: NormKind) -> &'static str {
    match k {
        NormKind::LayerNorm => "LayerNorm",
        NormKind::RmsNorm => "RMSNorm",
    }
}

fn step(u: &Unit, block: &str) -> StepOutline {
    StepOutline {
        name: u.name.clone().unwrap_or_else(|| block.to_string()),
        coef: u.coef,
        placement: match u.norm.placement {
            Placement::Pre => NormPlacement::Pre,
            Placement::Post => NormPlacement::Post,
            Placement::Peri => NormPlacement::Peri,
            Placement::None => NormPlacement::None,
        },
        norm: norm_name(u.norm.kind).to_string(),
        skip: match u.skip {
            Skip::Residual => SkipOutline::Residual,
            Skip::None => SkipOutline::None,
            Skip::Scaled(a) => SkipOutline::Scaled(a),
            Skip::Learned(a) => SkipOutline::Learned(a),
            Skip::Hourglass {
                width, trainable, ..
            } => SkipOutline::Hourglass {
                width,
                lift_trainable: trainable,
            },
        },
        branches: u
            .branches
            .iter()
            .map(|b| BranchOutline {
                name: b.name.clone(),
                what: with_dropout(sublayer(&b.sub), b.dropout),
            })
            .collect(),
    }
}

fn sublayer(s: &Sub) -> String {
    match *s {
        Sub::Attention {
            heads,
            kv_heads,
            causal,
            qk_norm,
            ..
        } => format!(
            "attention, {heads} head{}{}{}{}",
            if heads == 1 { "" } else { "s" },
            match kv_heads {
                1 if heads > 1 => ", 1 kv head".to_string(),
                k if k != heads => format!(", {k} kv heads"),
                _ => String::new(),
            },
            if qk_norm { ", qk-norm" } else { "" },
            if causal { ", causal" } else { "" }
        ),
        Sub::Ffn {
            hidden,
            act,
            glu,
            nested,
            ..
        } => {
            let mut s = format!(
                "ffn {hidden}, {}{}",
                act_name(act),
                if glu { " GLU" } else { "" }
            );
            if nested.len > 0 {
                let f: Vec<String> = nested.fractions().iter().map(|f| f.to_string()).collect();
                s.push_str(&format!(", nested [{}]", f.join(", ")));
            }
            s
        }
        Sub::Linear { .. } => "linear".to_string(),
        Sub::Moe {
            experts,
            top,
            hidden,
            act,
            glu,
            ..
        } => format!(
            "moe: top {top} of {experts} experts, ffn {hidden}, {}{}",
            act_name(act),
            if glu { " GLU" } else { "" }
        ),
    }
}

fn with_dropout(what: String, p: f64) -> String {
    match p {
        0.0 => what,
        p => format!("{what}, dropout {p}"),
    }
}

fn act_name(a: Act) -> &'static str {
    match a {
        Act::Relu => "relu",
        Act::Gelu => "gelu",
        Act::GeluTanh => "gelu_tanh",
        Act::Silu => "silu",
    }
}

fn head(h: Head) -> String {
    match h {
        Head::Lm { tied: true } => "lm head (tied to the embedding)".to_string(),
        Head::Lm { tied: false } => "lm head".to_string(),
        Head::Classifier {
            classes,
            pool: Pool::Mean,
        } => format!("classifier, {classes} classes"),
        Head::Classifier {
            classes,
            pool: Pool::Cls,
        } => format!("classifier on the class token, {classes} classes"),
        Head::Linear { out } => format!("linear head, {out} outputs"),
    }
}

fn learning(l: Learning) -> String {
    match l {
        Learning::Backprop => "backprop".to_string(),
        Learning::Local {
            head: AuxHead::Linear,
            group,
        } => format!("local learning, linear heads, groups of {group}"),
        Learning::Local {
            head: AuxHead::Ffn { hidden },
            group,
        } => format!("local learning, ffn {hidden} heads, groups of {group}"),
        Learning::TargetProjection { group } => {
            format!("target projection, groups of {group}")
        }
        Learning::ForwardForward { threshold } => {
            format!("forward-forward, threshold {threshold}")
        }
    }
}
