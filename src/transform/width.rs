//! `lamina extract --width F`: one granularity of a model with nested FFNs (MatFormer)
//! as a plain model. Every `ffn(hidden = H, nested = [...])` becomes
//! `ffn(hidden = F H)`, keeping the first `F H` rows of `w1` (`w3`) and their biases and
//! the first `F H` columns of `w2`, so the cut model computes the nested model's run at
//! that granularity.

use super::{ffn_sites, finish, get, kept_args, Rewritten, TransformError};
use crate::front::Compiled;
use crate::syntax::ast::Span;
use crate::tensor::Tensor;

/// Cuts granularity `fraction` (one of the listed ones) out of `c`.
pub fn by_width(
    c: &Compiled,
    weights: &[(String, Tensor)],
    fraction: f64,
) -> Result<Rewritten, TransformError> {
    let mut edits: Vec<(Span, String)> = Vec::new();
    for site in ffn_sites(c)?.into_iter().filter(|s| s.nested.len > 0) {
        let nested = site.nested;
        let k = nested
            .fractions()
            .iter()
            .position(|&f| (f - fraction).abs() < 1e-9)
            .ok_or_else(|| {
                TransformError::Model(format!(
                    "the ffn `{}` of block `{}` has the granularities {:?}; --width {fraction} is none of them",
                    site.sublayer.name.name,
                    site.block,
                    nested.fractions()
                ))
            })?;
        let units = crate::elab::width::units(site.hidden, &nested, Some(k));
        let mut args = vec![format!("hidden = {units}")];
        args.extend(kept_args(
            &c.source,
            &site.sublayer.call,
            &["hidden", "nested"],
        ));
        edits.push((site.sublayer.call.span, format!("ffn({})", args.join(", "))));
    }
    if edits.is_empty() {
        return Err(TransformError::Model(
            "the model has no nested ffn (`nested = [...]`) to cut by width".into(),
        ));
    }
    let source = super::apply(&c.source, &mut edits);
    finish(c, source, "width", |name, shape| {
        let t = get(weights, name)?;
        if t.shape == shape {
            return Ok(Some(t.clone()));
        }
        // A nested ffn's leading rows (w1, w3 and their biases) or columns (w2).
        let cols = *t.shape.last().unwrap_or(&1);
        let data: Vec<f64> = if name.ends_with(".w2.weight") {
            let keep = shape[1];
            t.data
                .chunks(cols)
                .flat_map(|row| row[..keep].iter().copied())
                .collect()
        } else {
            t.data[..shape.iter().product()].to_vec()
        };
        Ok(Some(Tensor::f32(shape.to_vec(), data)))
    })
}
