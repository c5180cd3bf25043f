//! `lamina export --torch`: a model file as plain PyTorch.
//!
//! Generated from the elaborated plan (`elab::plan`), after checking, so splitting schemes,
//! norm placements, skips, depth programs and learning rules come out as lamina runs them:
//! - `model.py`: one `nn.Module` class per block kind and a `Model` whose state-dict names
//!   are lamina's parameter names and whose forward returns `(loss, logits)`;
//! - `train.py`: the file's `train { }` recipe (optimizer per parameter role, schedule,
//!   clipping, gradient noise, Drop-Muon masks) as a loop that runs on one process or under
//!   `torchrun` with DistributedDataParallel or FSDP;
//! - `data.safetensors`: the built-in task's training batches (the batch of step t is the
//!   one `lamina train` runs at step t) and its held-out set.
//!
//! This module reads the front end and the recipe (`train::config`, `train::tasks`); it knows
//! nothing of the back end or the CLI.

mod data;
mod depth;
mod model;
mod model_class;
mod parts;
mod py;
mod recipe;

use crate::diag::Diagnostic;
use crate::front::{CompileError, Compiled};
use crate::io::IoError;
use crate::syntax::ast::Span;
use crate::train::{TrainError, TrainOptions};
use std::path::{Path, PathBuf};

/// A construct that has no PyTorch counterpart in the generated code, and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Unsupported {
    pub construct: String,
    pub why: String,
    pub hint: String,
    pub span: Span,
}

impl Unsupported {
    fn diagnostic(&self) -> Diagnostic {
        Diagnostic::new(
            format!("cannot export {} to PyTorch: {}", self.construct, self.why),
            self.span,
            "does not export",
        )
        .with_hint(self.hint.clone())
    }
}

#[derive(Debug)]
pub enum ExportError {
    /// Located errors (an unexportable construct), rendered with their source lines.
    Diagnostics(String),
    /// The recipe or its task could not be resolved.
    Train(TrainError),
    Io(IoError),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Diagnostics(text) => f.write_str(text.trim_end()),
            ExportError::Train(e) => write!(f, "{e}"),
            ExportError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ExportError {}

impl From<IoError> for ExportError {
    fn from(e: IoError) -> Self {
        ExportError::Io(e)
    }
}

impl From<TrainError> for ExportError {
    fn from(e: TrainError) -> Self {
        ExportError::Train(e)
    }
}

/// What `lamina export --torch` was asked for.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    pub out: PathBuf,
    /// The recipe's settings and overrides (`--set`, `--optimizer`, `--steps`, ...).
    pub train: TrainOptions,
    /// At most this many training batches go into data.safetensors (train.py cycles them).
    pub max_batches: Option<u64>,
    pub color: bool,
}

/// The generated files, by name.
#[derive(Clone, Debug, Default)]
pub struct Exported {
    pub model_py: String,
    pub train_py: String,
    /// Whether data.safetensors was written (a built-in task), and how many batches.
    pub batches: Option<u64>,
    /// Why the recipe's task has no data.safetensors (it does not fit the model).
    pub no_data: Option<String>,
}

/// Generate model.py and train.py (in memory).
pub fn generate(c: &Compiled, opts: &ExportOptions) -> Result<(Exported, Recipe), ExportError> {
    let plan = crate::elab::plan(
        &c.module,
        &crate::front::default_name(&c.file_name),
        &c.overrides,
    )
    .map_err(|d| render(c, d, opts.color))?;
    let model_py = model::model_py(&plan, &c.file_name)
        .map_err(|u| render(c, vec![u.diagnostic()], opts.color))?;
    let cfg = crate::train::resolve_config(c, &c.file_name, &c.source, &opts.train)?;
    let recipe = Recipe { cfg };
    let train_py = recipe::train_py(c, &plan, &recipe.cfg);
    Ok((
        Exported {
            model_py,
            train_py,
            batches: None,
            no_data: None,
        },
        recipe,
    ))
}

/// The resolved recipe an export was generated with.
pub struct Recipe {
    pub cfg: crate::train::config::TrainConfig,
}

/// Generate and write model.py, train.py and (for a built-in task) data.safetensors into
/// `opts.out`.
pub fn export(c: &Compiled, opts: &ExportOptions) -> Result<Exported, ExportError> {
    let (mut exported, recipe) = generate(c, opts)?;
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| IoError::new(&opts.out, crate::io::IoErrorKind::Write(e)))?;
    match data::write(c, &recipe.cfg, opts) {
        Ok(n) => exported.batches = n,
        Err(data::DataError::Skipped(why)) => exported.no_data = Some(why),
        Err(data::DataError::Failed(e)) => return Err(e),
    }
    write(&opts.out.join("model.py"), &exported.model_py)?;
    write(&opts.out.join("train.py"), &exported.train_py)?;
    Ok(exported)
}

fn write(path: &Path, text: &str) -> Result<(), IoError> {
    crate::io::write_atomic(path, text.as_bytes())
}

fn render(c: &Compiled, diagnostics: Vec<Diagnostic>, color: bool) -> ExportError {
    ExportError::Diagnostics(
        CompileError {
            file_name: c.file_name.clone(),
            source: c.source.clone(),
            diagnostics,
        }
        .render(color),
    )
}
