//! Model transformations that write a new model file and its weights from a trained one:
//!
//! - `depth`: `lamina extract --depth N`, a plain `N`-layer stack cut from a stack with
//!   subnets, linear expansion or stage-wise sharing;
//! - `width`: `lamina extract --width F`, one granularity of nested FFNs (MatFormer);
//! - `convert`: `lamina convert`, a dense FFN split into experts with a fresh router
//!   (FactorLLM), or routers added to every stack (FiRST).
//!
//! Each rewrites the source text, compiles the result here before anything is written,
//! and fills the new model's parameter list from the old weights (by name, or by the
//! transformation's rule) and fresh initial values. It comes after `front` and knows
//! nothing of training.

mod convert;
mod depth;
mod width;

use convert::apply;
pub use convert::{add_routers, ffn_to_moe};
pub use depth::by_depth;
pub use width::by_width;

use crate::elab::resolve::{Nested, Sub};
use crate::front::{CompileError, Compiled};
use crate::io::{self, FileContents, IoError};
use crate::syntax::ast::{BlockItem, Call, Item, Sublayer};
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// Why a transformation failed. Nothing has been written when it is returned.
#[derive(Debug)]
pub enum TransformError {
    Io(IoError),
    /// The model does not have what the transformation needs, or an option does not fit.
    Model(String),
    /// The rewritten model did not compile (a compiler bug: it is the same model, changed
    /// by rule).
    Compile(CompileError),
}

impl std::fmt::Display for TransformError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransformError::Io(e) => write!(f, "{e}"),
            TransformError::Model(m) => write!(f, "{m}"),
            TransformError::Compile(e) => {
                write!(
                    f,
                    "the rewritten model does not compile:\n{}",
                    e.render(false)
                )
            }
        }
    }
}

impl std::error::Error for TransformError {}

impl From<IoError> for TransformError {
    fn from(e: IoError) -> Self {
        TransformError::Io(e)
    }
}

/// A rewritten model: its source text and weights in its parameter order.
pub struct Rewritten {
    pub source: String,
    pub weights: Vec<(String, Tensor)>,
}

/// Compiles the rewritten `source` of `c` and fills its parameters: `carry(name, shape)`
/// when it gives a tensor, else the new model's initial value (seed 0).
fn finish(
    c: &Compiled,
    source: String,
    suffix: &str,
    carry: impl Fn(&str, &[usize]) -> Result<Option<Tensor>, TransformError>,
) -> Result<Rewritten, TransformError> {
    let file_name = format!("{}-{suffix}.lam", c.forward.name);
    let new = crate::front::compile_source(&source, &file_name, &c.overrides)
        .map_err(TransformError::Compile)?;
    let fresh =
        io::init_params(&new.forward, 0).map_err(|e| TransformError::Model(format!("{e}")))?;
    let mut weights = Vec::new();
    for (p, init) in new.forward.params.iter().zip(fresh) {
        let tensor = carry(&p.name, &p.shape)?.unwrap_or(init);
        if tensor.shape != p.shape {
            return Err(TransformError::Model(format!(
                "`{}` is {:?} in the weights but {:?} in the new model",
                p.name, tensor.shape, p.shape
            )));
        }
        weights.push((p.name.clone(), tensor));
    }
    Ok(Rewritten { source, weights })
}

/// The checked plan of `c` (it compiled, so this only fails on a compiler bug).
fn plan(c: &Compiled) -> Result<crate::elab::resolve::Plan, TransformError> {
    crate::elab::plan(&c.module, &c.forward.name, &c.overrides)
        .map_err(|d| TransformError::Model(format!("{} error(s) elaborating", d.len())))
}

/// An `ffn` sublayer as written, with its resolved size.
struct FfnSite<'m> {
    block: &'m str,
    sublayer: &'m Sublayer,
    hidden: usize,
    nested: Nested,
}

/// Every `ffn` sublayer of `c`'s blocks that runs, in source order.
fn ffn_sites(c: &Compiled) -> Result<Vec<FfnSite<'_>>, TransformError> {
    let plan = plan(c)?;
    let mut out = Vec::new();
    for item in &c.module.items {
        let Item::Block(b) = item else { continue };
        let Some(bp) = plan.blocks.iter().find(|p| p.name == b.name.name) else {
            continue;
        };
        for it in &b.items {
            let BlockItem::Sublayer(sl) = it else {
                continue;
            };
            let found = bp
                .units
                .iter()
                .flat_map(|u| &u.branches)
                .find_map(|br| match br.sub {
                    Sub::Ffn { hidden, nested, .. }
                        if br.name.split('.').next() == Some(sl.name.name.as_str()) =>
                    {
                        Some((hidden, nested))
                    }
                    _ => None,
                });
            if let Some((hidden, nested)) = found {
                out.push(FfnSite {
                    block: &b.name.name,
                    sublayer: sl,
                    hidden,
                    nested,
                });
            }
        }
    }
    Ok(out)
}

/// The source text of `call`'s named arguments, but those in `drop` (positional ones,
/// `ffn`'s `hidden`, are dropped too).
fn kept_args(source: &str, call: &Call, drop: &[&str]) -> Vec<String> {
    call.args
        .iter()
        .flatten()
        .filter(|a| {
            a.key
                .as_ref()
                .is_some_and(|k| !drop.contains(&k.name.as_str()))
        })
        .map(|a| source[a.span.start..a.span.end].to_string())
        .collect()
}

/// The tensor `name` of `weights`.
fn get<'w>(weights: &'w [(String, Tensor)], name: &str) -> Result<&'w Tensor, TransformError> {
    weights
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| TransformError::Model(format!("the weights have no tensor `{name}`")))
}

/// Writes `<out>.lam` and `<out>.safetensors`, both or neither. Returns the paths.
pub fn write(r: &Rewritten, out: &Path) -> Result<Vec<PathBuf>, TransformError> {
    let files = vec![
        (
            out.with_extension("lam"),
            FileContents::Bytes(r.source.as_bytes()),
        ),
        (
            out.with_extension("safetensors"),
            FileContents::Tensors(&r.weights),
        ),
    ];
    io::write_atomic_all(&files)?;
    Ok(files.into_iter().map(|(p, _)| p).collect())
}
