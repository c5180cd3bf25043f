//! `lamina convert`: FactorLLM's split of dense FFNs into experts, and FiRST's routers.
//!
//! - `ffn_to_moe`: every `ffn(hidden = H, ...)` sublayer becomes
//!   `moe(experts = E, top = k, hidden = H / E, ...)`. The experts are the dense FFN's
//!   hidden units in order (expert `e` owns units `e H/E .. (e+1) H/E`), which is exactly
//!   how `moe` stores them, so `w1`, `w2` (and `w3`) keep their names and values; only
//!   `<sublayer>.router.weight` is new, and zero: every expert is equally likely, so
//!   with `top = E` the converted model computes the dense one (and with a lower `top`
//!   the router learns from a neutral start).
//! - `add_routers`: every `stack` gets `routed`; the routers are new, everything else is
//!   carried over, so a pretrained model (`lamina import gpt2`) can learn to skip layers.

use super::{ffn_sites, finish, get, kept_args, Rewritten, TransformError};
use crate::front::Compiled;
use crate::syntax::ast::Span;
use crate::tensor::Tensor;

/// Splits every dense FFN of `c` into `experts` experts, `top` of them run per token.
pub fn ffn_to_moe(
    c: &Compiled,
    weights: &[(String, Tensor)],
    experts: usize,
    top: usize,
) -> Result<Rewritten, TransformError> {
    if top == 0 || top > experts {
        return Err(TransformError::Model(format!(
            "--top {top} must be between 1 and the {experts} experts"
        )));
    }
    // (span of the call to replace, its new text), in source order.
    let mut edits: Vec<(Span, String)> = Vec::new();
    for site in ffn_sites(c)? {
        let (name, hidden) = (&site.sublayer.name.name, site.hidden);
        if hidden % experts != 0 {
            return Err(TransformError::Model(format!(
                "the ffn `{name}` of block `{}` has {hidden} hidden units, which {experts} experts cannot share evenly",
                site.block
            )));
        }
        let mut args = vec![
            format!("experts = {experts}"),
            format!("top = {top}"),
            format!("hidden = {}", hidden / experts),
        ];
        args.extend(kept_args(&c.source, &site.sublayer.call, &["hidden"]));
        edits.push((site.sublayer.call.span, format!("moe({})", args.join(", "))));
    }
    if edits.is_empty() {
        return Err(TransformError::Model(
            "the model has no `ffn` sublayer to split into experts".into(),
        ));
    }
    let source = apply(&c.source, &mut edits);
    finish(c, source, "moe", |name, shape| {
        if name.ends_with(".router.weight") {
            // Zero: every expert equally likely, so with top = E the model is the dense one.
            return Ok(Some(Tensor::f32(
                shape.to_vec(),
                vec![0.0; shape.iter().product()],
            )));
        }
        Ok(Some(get(weights, name)?.clone()))
    })
}

/// Adds `routed` to every stack of `c` that has no router yet.
pub fn add_routers(
    c: &Compiled,
    weights: &[(String, Tensor)],
) -> Result<Rewritten, TransformError> {
    let mut edits: Vec<(Span, String)> = Vec::new();
    for s in c.module.stacks() {
        if s.clauses.iter().any(|c| c.word.name == "routed") {
            continue;
        }
        let end = Span::new(s.span.end, s.span.end);
        edits.push((end, " routed".to_string()));
    }
    if edits.is_empty() {
        return Err(TransformError::Model(
            "every stack of the model is already routed".into(),
        ));
    }
    let source = apply(&c.source, &mut edits);
    finish(c, source, "routed", |name, _| {
        if name.contains(".router.") {
            return Ok(None);
        }
        Ok(Some(get(weights, name)?.clone()))
    })
}

/// `source` with each span replaced by its text (spans do not overlap).
pub(super) fn apply(source: &str, edits: &mut [(Span, String)]) -> String {
    edits.sort_by_key(|(s, _)| s.start);
    let mut out = String::new();
    let mut at = 0;
    for (span, text) in edits.iter() {
        out.push_str(&source[at..span.start]);
        out.push_str(text);
        at = span.end;
    }
    out.push_str(&source[at..]);
    out
}
