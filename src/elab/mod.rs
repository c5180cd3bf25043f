//! Elaboration: spanned AST -> tensor IR.
//!
//! Three stages, one file each:
//! - `consts`: constants, overrides and typed evaluation of argument expressions;
//! - `resolve`: names, arguments, norm inheritance, skips, schemes and depth programs are
//!   checked and expanded into a `Plan` (plain sizes and settings, no AST left);
//! - `depth`: the clauses after a stack's count (parallel, stages, subnets, expand,
//!   routed), resolved per executed layer for `resolve`;
//! - `lower`: the plan is emitted as IR through `GraphBuilder`;
//! - `outline`: the plan read out as plain data for diagrams (`Outline`).
//!
//! Every user error is found in `consts`/`resolve`, so `lower` only fails on internal
//! invariant violations (reported as an internal-error diagnostic, never a panic).
//! Errors are collected per item and per block; anything that depends on a broken item
//! is skipped silently so one mistake gives one diagnostic.

mod consts;
pub(crate) mod depth;
pub(crate) mod learning;
mod lower;
mod outline;
pub(crate) mod resolve;
#[cfg(test)]
mod tests;
pub(crate) mod width;

use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::Graph;
use crate::syntax::ast::{Module, Span};
pub use outline::{
    BlockOutline, BranchOutline, LayerOutline, NormPlacement, Outline, SkipOutline, StepOutline,
    Tap,
};

/// A `--set name=value` command-line override of a constant.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub name: String,
    pub value: f64,
    /// Whether the value was written as an integer (`--set d=256`).
    pub is_int: bool,
}

/// The executed layers `order` picks out of `layers`, each run numbered anew per weight
/// set (so every execution has scopes of its own).
fn reorder(layers: &[resolve::LayerRun], order: &[usize]) -> Vec<resolve::LayerRun> {
    let mut runs: std::collections::HashMap<usize, usize> = Default::default();
    order
        .iter()
        .map(|&i| {
            let mut l = layers[i];
            let run = runs.entry(l.weights).or_insert(0);
            l.run = *run;
            *run += 1;
            l
        })
        .collect()
}

/// Limits that keep every model small enough to compile quickly, to index with 32-bit
/// sizes, and to fit this machine class's memory when run (the interpreter holds f64).
pub const MAX_LAYERS: usize = 1024;
/// Sublayer steps one block may run (each occurrence in its scheme counts).
pub const MAX_STEPS_PER_BLOCK: usize = 64;
/// Sublayer steps the whole model may execute (layers times their steps).
pub const MAX_STEPS: usize = 8192;
/// Elements of any one tensor (1 GiB of f32).
pub const MAX_ELEMENTS: u64 = 1 << 28;
/// Parameter elements in total (1 GiB of f32).
pub const MAX_PARAMS: u64 = 1 << 28;

/// How a model is elaborated for looking inside it (`lamina probe`, `depth-search`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probing {
    /// Expose the residual stream after the embedding and after every sublayer step as
    /// outputs `probe.<k>.<scope>` (k = 0 is the embedding's output).
    pub states: bool,
    /// Change the executed layers (indices into the stack's executed order).
    pub layers: LayerEdit,
    /// Hard routing (FiRST's prefill routing): a routed layer whose gate at a sequence's
    /// last position is below this is skipped for that sequence; outputs `route.<k>`
    /// hold 1 where routed layer k ran and 0 where it was skipped.
    pub skip_below: Option<f64>,
    /// The training graph: dropout and stochastic depth on, their masks drawn from
    /// uniform inputs `dropout.<k>` after the batch's inputs.
    pub training: bool,
}

/// A change to the executed layers; the weights keep their names, so a trained model's
/// weights load unchanged.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum LayerEdit {
    #[default]
    None,
    /// Leave out executed layer `i`.
    Skip(usize),
    /// Run executed layer `i` twice in a row, with the same weights.
    Repeat(usize),
    /// Run these executed layers in this order (indices may repeat or be left out).
    Order(Vec<usize>),
}

/// Elaborate a parsed module into a forward graph with outputs `loss` and `logits`.
/// `default_name` (the file stem) names the graph when there is no `model` statement.
pub fn elaborate(
    m: &Module,
    default_name: &str,
    overrides: &[Override],
) -> Result<Graph, Diagnostics> {
    elaborate_probed(m, default_name, overrides, Probing::default())
}

/// `elaborate` for training: with dropout and stochastic depth, whose masks are inputs
/// `dropout.<k>` (the same graph as `elaborate` when the model has neither).
pub fn elaborate_training(
    m: &Module,
    default_name: &str,
    overrides: &[Override],
) -> Result<Graph, Diagnostics> {
    let probing = Probing {
        training: true,
        ..Probing::default()
    };
    elaborate_probed(m, default_name, overrides, probing)
}

/// The checked and expanded model (sizes, norms, skips, schemes, executed layers) that
/// lowering turns into IR; `export` generates PyTorch code from it.
pub(crate) fn plan(
    m: &Module,
    default_name: &str,
    overrides: &[Override],
) -> Result<resolve::Plan, Diagnostics> {
    resolve::resolve(m, default_name, overrides)
}

/// The weight set (`blocks.<w>`) of each layer a module executes, in order.
pub fn executed_layers(
    m: &Module,
    default_name: &str,
    overrides: &[Override],
) -> Result<Vec<usize>, Diagnostics> {
    let plan = resolve::resolve(m, default_name, overrides)?;
    Ok(plan.layers.iter().map(|l| l.weights).collect())
}

/// The architecture a module elaborates to, as plain data for diagrams.
pub fn outline(
    m: &Module,
    default_name: &str,
    overrides: &[Override],
) -> Result<Outline, Diagnostics> {
    Ok(outline::outline(&resolve::resolve(
        m,
        default_name,
        overrides,
    )?))
}

/// `elaborate`, with the residual stream exposed and/or the executed layers changed.
pub fn elaborate_probed(
    m: &Module,
    default_name: &str,
    overrides: &[Override],
    probing: Probing,
) -> Result<Graph, Diagnostics> {
    let mut plan = resolve::resolve(m, default_name, overrides)?;
    if let Some(t) = probing.skip_below {
        let Some(r) = plan.routing.as_mut() else {
            return Err(vec![Diagnostic::new(
                "skipping by gate needs a model with routers",
                plan.stack_span,
                "no `routed` clause on this stack",
            )
            .with_hint(
                "add `routed` after the stack's count, e.g. `stack layer * 6 routed`",
            )]);
        };
        r.skip_below = Some(t);
    }
    if probing.layers != LayerEdit::None {
        // Subnets name layers by their executed index, which an edit changes: the
        // edited stack runs as one model.
        plan.subnets = None;
    }
    match &probing.layers {
        LayerEdit::None => {}
        LayerEdit::Order(order)
            if !order.is_empty() && order.iter().all(|&i| i < plan.layers.len()) =>
        {
            plan.layers = reorder(&plan.layers, order);
        }
        LayerEdit::Order(order) => {
            return Err(vec![Diagnostic::new(
                format!(
                    "the order {order:?} is not a non-empty list of the model's {} layers",
                    plan.layers.len()
                ),
                plan.stack_span,
                "these layers",
            )]);
        }
        &LayerEdit::Skip(i) if i < plan.layers.len() && plan.layers.len() > 1 => {
            plan.layers.remove(i);
        }
        &LayerEdit::Repeat(i) if i < plan.layers.len() => {
            let mut again = plan.layers[i];
            // A fresh run index, so the repeat gets scopes of its own.
            again.run = 1 + plan
                .layers
                .iter()
                .filter(|l| l.weights == again.weights)
                .map(|l| l.run)
                .max()
                .unwrap_or(0);
            plan.layers.insert(i + 1, again);
        }
        &LayerEdit::Skip(i) | &LayerEdit::Repeat(i) => {
            return Err(vec![Diagnostic::new(
                format!(
                    "the model runs {} layer(s); layer {i} cannot be skipped or repeated",
                    plan.layers.len()
                ),
                plan.stack_span,
                "these layers",
            )]);
        }
    }
    let graph = lower::lower(&plan, probing.states, probing.training)?;
    let total = graph.params.iter().try_fold(0u64, |acc, p| {
        acc.checked_add(p.shape.iter().product::<usize>() as u64)
    });
    if total.is_none_or(|t| t > MAX_PARAMS) {
        let count = total
            .map(|t| t.to_string())
            .unwrap_or_else(|| "more than 2^64".into());
        return Err(vec![Diagnostic::new(
            format!("the model has {count} parameters; the limit is 2^28 = {MAX_PARAMS}"),
            plan.stack_span,
            "these layers are too large in total",
        )
        .with_hint(
            "use fewer or narrower layers, or share weights with `shared`",
        )]);
    }
    if let Err(e) = graph.verify() {
        return Err(vec![internal(e, m.span)]);
    }
    Ok(graph)
}

/// The constants of a module after overrides, in definition order: (name, value as printed).
/// Used by `lamina params` and the docs.
pub fn constants(m: &Module, overrides: &[Override]) -> Result<Vec<(String, String)>, Diagnostics> {
    let mut diags = Vec::new();
    let env = consts::Consts::evaluate(m, overrides, &mut diags);
    if !diags.is_empty() {
        sort(&mut diags);
        return Err(diags);
    }
    Ok(env.listing())
}

/// A diagnostic for a broken invariant of the compiler itself.
pub(crate) fn internal(msg: impl std::fmt::Display, span: Span) -> Diagnostic {
    Diagnostic::new(
        format!("internal compiler error: {msg}"),
        span,
        "while elaborating this model",
    )
    .with_hint("this is a bug in lamina; please report it with the model file")
}

pub(crate) fn sort(diags: &mut Diagnostics) {
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    diags.dedup();
}

/// Levenshtein distance, for did-you-mean hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small edit distance, if any.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| {
            let prefix = |a: &str, b: &str| b.len() >= 3 && a.starts_with(b);
            *d <= limit || prefix(c, name) || prefix(name, c)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "did you mean `x`?" or a list of what is available.
pub(crate) fn suggest(name: &str, candidates: &[&str], what: &str) -> String {
    match closest(name, candidates.iter().copied()) {
        Some(c) => format!("did you mean `{c}`?"),
        None if candidates.is_empty() => {
            // `what` reads "the constants are": say "there are no constants".
            let noun = what.trim_start_matches("the ").trim_end_matches(" are");
            format!("there are no {noun} yet")
        }
        None => format!("{what}: {}", list(candidates)),
    }
}

/// `a`, `b` and `c` as "`a`, `b`, `c`".
pub(crate) fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
