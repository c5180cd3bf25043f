//! `learning RULE(...)`: how the blocks learn, resolved to a `Learning` plan.
//!
//! Every rule is ordinary IR: local losses are more outputs, and a boundary that no
//! gradient crosses is a `stop_gradient`. The rules and their equations are in
//! docs/learning.md.

use super::consts::{Bound, Ev};
use super::resolve::Head;
use super::suggest;
use crate::diag::Diagnostic;
use crate::syntax::ast::Call;

/// How the layers of a model learn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Learning {
    /// End-to-end backpropagation of the head's loss (no `learning` statement).
    Backprop,
    /// Greedy local learning: the layers form groups of `group`; every group but the last
    /// ends in an auxiliary head with its own loss, and the next group reads the group's
    /// output through `stop_gradient`. The last group learns from the model's head.
    Local { head: AuxHead, group: usize },
    /// Direct random target projection: every group, the last included, learns to match
    /// a fixed random projection of the targets; the model's head learns on the last
    /// group's output with no gradient into the blocks.
    TargetProjection { group: usize },
    /// Forward-Forward (Hinton), supervised: each layer learns to give a high goodness
    /// (mean square of its output) to the input with its true label written in, and a low
    /// one with a wrong label; the prediction is the label of highest total goodness.
    /// Lowered on its own path (`lower::Lower::forward_forward`).
    ForwardForward { threshold: f64 },
}

/// The auxiliary head of a local loss: the model's head kind, through this map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AuxHead {
    /// One Linear layer to the head's outputs (Mono-Forward's projection).
    Linear,
    /// Linear, GELU, Linear with `hidden` units.
    Ffn { hidden: usize },
}

const RULES: &[&str] = &["backprop", "local", "target_projection", "forward_forward"];
const AUX_HEADS: &[&str] = &["linear", "ffn"];

impl Learning {
    /// Whether layer `i` (0-based) of `layers` ends a group with a local loss.
    pub(crate) fn local_loss_after(&self, i: usize, layers: usize) -> bool {
        match *self {
            Learning::Backprop | Learning::ForwardForward { .. } => false,
            Learning::Local { group, .. } => (i + 1).is_multiple_of(group) && i + 1 < layers,
            Learning::TargetProjection { group } => {
                (i + 1).is_multiple_of(group) || i + 1 == layers
            }
        }
    }

    /// Whether layer `i` reads its input through `stop_gradient`. The first group also
    /// trains the embedding, so it is never cut from it.
    pub(crate) fn detaches_before(&self, i: usize) -> bool {
        match *self {
            Learning::Backprop | Learning::ForwardForward { .. } => false,
            Learning::Local { group, .. } | Learning::TargetProjection { group } => {
                i > 0 && i.is_multiple_of(group)
            }
        }
    }

    /// Whether the model's head reads the blocks' output through `stop_gradient`.
    pub(crate) fn detaches_head(&self) -> bool {
        match self {
            Learning::Backprop | Learning::Local { .. } | Learning::ForwardForward { .. } => false,
            Learning::TargetProjection { .. } => true,
        }
    }
}

/// The `learning` statement, checked against the model's executed layer count and head.
pub(crate) fn resolve(
    c: Option<&Call>,
    layers: usize,
    head: Option<Head>,
    ev: &mut Ev<'_>,
) -> Option<Learning> {
    let Some(c) = c else {
        return Some(Learning::Backprop);
    };
    match c.name.name.as_str() {
        "backprop" => {
            Bound::bind(c, "`backprop`", &[], 0, ev.diags);
            Some(Learning::Backprop)
        }
        "local" => {
            let b = Bound::bind(
                c,
                "local learning",
                &["head", "group", "hidden"],
                0,
                ev.diags,
            );
            let group = group_size(&b, ev)?;
            let kind = match b.get("head") {
                None => "linear".to_string(),
                Some(e) => ev.keyword(e, "auxiliary head", AUX_HEADS)?,
            };
            let head = match kind.as_str() {
                "ffn" => {
                    let e = b.require("hidden", "local(head = ffn, hidden = 256)", ev.diags)?;
                    AuxHead::Ffn {
                        hidden: ev.size(e, "hidden")?,
                    }
                }
                _ => {
                    if let Some(e) = b.get("hidden") {
                        ev.diags.push(
                            Diagnostic::new(
                                "`hidden` is the width of an ffn auxiliary head",
                                e.span,
                                "a linear head has no hidden layer",
                            )
                            .with_hint("write `local(head = ffn, hidden = ...)` or drop `hidden`"),
                        );
                        return None;
                    }
                    AuxHead::Linear
                }
            };
            enough_groups(c, "local learning", layers, group, 2, ev)?;
            Some(Learning::Local { head, group })
        }
        "target_projection" => {
            let b = Bound::bind(c, "target projection", &["group"], 0, ev.diags);
            let group = group_size(&b, ev)?;
            // Checked only when the head resolved: a broken head was reported already.
            head?;
            enough_groups(c, "target projection", layers, group, 1, ev)?;
            Some(Learning::TargetProjection { group })
        }
        "forward_forward" => {
            let b = Bound::bind(c, "forward-forward", &["threshold"], 0, ev.diags);
            let threshold = match b.get("threshold") {
                None => 2.0,
                Some(e) => ev.number_of(e, "threshold")?,
            };
            match head? {
                Head::Classifier { classes, .. } if classes >= 2 => {
                    Some(Learning::ForwardForward { threshold })
                }
                Head::Classifier { .. } | Head::Lm { .. } | Head::Linear { .. } => {
                    ev.diags.push(
                        Diagnostic::new(
                            "forward-forward learning needs a classifier head with at least \
                             2 classes",
                            c.span,
                            "the label is written into the input",
                        )
                        .with_hint(
                            "use `head classifier(classes = ...)`; for other heads use \
                             `learning local` or `learning target_projection`",
                        ),
                    );
                    None
                }
            }
        }
        other => {
            ev.diags.push(
                Diagnostic::new(
                    format!("unknown learning rule `{other}`"),
                    c.name.span,
                    "expected backprop, local, target_projection or forward_forward",
                )
                .with_hint(suggest(other, RULES, "the learning rules are")),
            );
            None
        }
    }
}

/// `group = N` (layers per group), 1 by default.
fn group_size(b: &Bound<'_>, ev: &mut Ev<'_>) -> Option<usize> {
    match b.get("group") {
        None => Some(1),
        Some(e) => ev.size(e, "group"),
    }
}

/// A rule that cuts the layers into groups needs at least `min` of them.
fn enough_groups(
    c: &Call,
    what: &str,
    layers: usize,
    group: usize,
    min: usize,
    ev: &mut Ev<'_>,
) -> Option<()> {
    let groups = layers.div_ceil(group);
    if groups >= min {
        return Some(());
    }
    ev.diags.push(
        Diagnostic::new(
            format!(
                "{what} needs at least {min} groups of layers; this model runs {layers} \
                 layer(s) in groups of {group}"
            ),
            c.span,
            format!("{groups} group(s)"),
        )
        .with_hint(
            "stack more layers (`stack layer * 4`), or use a smaller `group`; with one group, \
             local learning is end-to-end backprop",
        ),
    );
    None
}
