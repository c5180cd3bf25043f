//! The front end as one call: source text -> AST -> forward IR, and the joint
//! forward/backward IR on demand. Training and the stage printer both start here; this
//! module knows nothing of optimizers, kernels or the CLI.

use crate::diag::{self, Diagnostic, Diagnostics};
use crate::elab::{self, Override};
use crate::ir::{Graph, IrError};
use crate::syntax::{self, ast::Module};
use std::path::Path;

/// A model that parsed and elaborated.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub module: Module,
    pub forward: Graph,
    /// The `--set` overrides it was compiled with (the `train { }` recipe reads constants).
    pub overrides: Vec<Override>,
    /// The file name and source text, for diagnostics of later stages (the recipe).
    pub file_name: String,
    pub source: String,
}

/// Diagnostics together with the source they point into, so they can be rendered.
#[derive(Clone, Debug)]
pub struct CompileError {
    pub file_name: String,
    pub source: String,
    pub diagnostics: Diagnostics,
}

impl CompileError {
    pub fn render(&self, color: bool) -> String {
        diag::render(&self.diagnostics, &self.file_name, &self.source, color)
    }
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for CompileError {}

/// The model name used when the file has no `model` statement: the file stem.
pub fn default_name(file_name: &str) -> String {
    Path::new(file_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}

/// Parse and elaborate source text. `file_name` is used in diagnostics and for the default
/// model name.
pub fn compile_source(
    source: &str,
    file_name: &str,
    overrides: &[Override],
) -> Result<Compiled, CompileError> {
    let fail = |diagnostics| CompileError {
        file_name: file_name.to_string(),
        source: source.to_string(),
        diagnostics,
    };
    let module = syntax::parse(source).map_err(fail)?;
    let forward = elab::elaborate(&module, &default_name(file_name), overrides).map_err(fail)?;
    Ok(Compiled {
        module,
        forward,
        overrides: overrides.to_vec(),
        file_name: file_name.to_string(),
        source: source.to_string(),
    })
}

/// Read and compile a model file; unreadable or non-UTF-8 files become diagnostics too.
pub fn compile_file(path: &Path, overrides: &[Override]) -> Result<Compiled, CompileError> {
    let file_name = path.display().to_string();
    let limit = syntax::MAX_INPUT_BYTES as u64;
    let bytes = crate::io::read_file(path, Some(limit)).map_err(|e| {
        let message = match e.kind {
            crate::io::IoErrorKind::TooLarge { .. } => format!(
                "{file_name} is too large: the limit for a model file is {limit} bytes (1 MiB)"
            ),
            _ => e.to_string(),
        };
        CompileError {
            file_name: file_name.clone(),
            source: String::new(),
            diagnostics: vec![Diagnostic::new(message, crate::syntax::ast::Span::NONE, "")],
        }
    })?;
    match String::from_utf8(bytes) {
        Ok(source) => compile_source(&source, &file_name, overrides),
        Err(e) => {
            let bytes = e.into_bytes();
            let diagnostics = match syntax::parse_bytes(&bytes) {
                Err(d) => d,
                Ok(_) => vec![Diagnostic::new(
                    "the file is not UTF-8",
                    Default::default(),
                    "here",
                )],
            };
            Err(CompileError {
                file_name,
                source: String::from_utf8_lossy(&bytes).into_owned(),
                diagnostics,
            })
        }
    }
}

impl Compiled {
    /// The joint forward and backward graph.
    pub fn joint(&self) -> Result<Graph, IrError> {
        crate::autodiff::differentiate(&self.forward)
    }

    /// The joint graph of the training forward: dropout and stochastic depth on, their
    /// masks inputs `dropout.<k>` after the batch's (`joint` when the model has neither).
    pub fn training_joint(&self) -> Result<Graph, IrError> {
        let forward = elab::elaborate_training(
            &self.module,
            &default_name(&self.file_name),
            &self.overrides,
        )
        .map_err(|d| IrError::Graph(format!("{} error(s) elaborating for training", d.len())))?;
        crate::autodiff::differentiate(&forward)
    }

    /// The architecture as plain data, for diagrams.
    pub fn outline(&self) -> Result<elab::Outline, CompileError> {
        elab::outline(
            &self.module,
            &default_name(&self.file_name),
            &self.overrides,
        )
        .map_err(|diagnostics| CompileError {
            file_name: self.file_name.clone(),
            source: self.source.clone(),
            diagnostics,
        })
    }

    /// The model with hard routing: each routed layer skipped for a sequence whose gate
    /// at its last position is below `threshold` (`lamina run --skip-below`).
    pub fn with_skip_below(&self, threshold: f64) -> Result<Compiled, CompileError> {
        let probing = elab::Probing {
            skip_below: Some(threshold),
            ..elab::Probing::default()
        };
        let forward = elab::elaborate_probed(
            &self.module,
            &default_name(&self.file_name),
            &self.overrides,
            probing,
        )
        .map_err(|diagnostics| CompileError {
            file_name: self.file_name.clone(),
            source: self.source.clone(),
            diagnostics,
        })?;
        Ok(Compiled {
            forward,
            ..self.clone()
        })
    }

    /// The joint graph after the optimizing passes.
    pub fn optimized(&self) -> Result<Graph, IrError> {
        Ok(crate::passes::optimize(&self.joint()?))
    }
}
