//! The pipeline in one place: source text -> AST -> IR -> joint forward/backward IR, and
//! the text of each stage. The CLI and library users (snapshot tests in their own repos)
//! both go through here.
//!
//! ```no_run
//! // In a user's test, with insta: one snapshot per stage.
//! let compiled = lamina::driver::compile_file("model.lam".as_ref(), &[]).unwrap();
//! let ir = compiled.stage_text(lamina::driver::Stage::Ir).unwrap();
//! // insta::assert_snapshot!("model_ir", ir);
//! # let _ = ir;
//! ```

use crate::diag::{self, Diagnostic, Diagnostics};
use crate::elab::{self, Override};
use crate::ir::{text, Graph};
use crate::syntax::{self, ast::Module, print::print_ast};
use std::path::Path;

/// A printable stage of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// The parsed syntax tree.
    Ast,
    /// The elaborated forward tensor IR.
    Ir,
    /// The joint forward and backward IR (gradients of the loss).
    Grad,
    /// The joint IR after the optimizing passes (canonicalize, const_fold, cse, simplify, dce).
    Opt,
    /// A whole training step: the joint IR plus the optimizer's update of the file's
    /// `train { }` recipe (state tensors as parameters, `new.<name>` outputs).
    Step,
    /// The training step's kernels: fused loop nests and matmul calls.
    Kernels,
    /// The training step's buffer plan: arena offsets, lifetimes and peak bytes.
    Plan,
    /// The Cranelift IR of the training step's kernels (fixed x86-64 target with FMA).
    Clif,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 8] = [
        Stage::Ast,
        Stage::Ir,
        Stage::Grad,
        Stage::Opt,
        Stage::Step,
        Stage::Kernels,
        Stage::Plan,
        Stage::Clif,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ast => "ast",
            Stage::Ir => "ir",
            Stage::Grad => "grad",
            Stage::Opt => "opt",
            Stage::Step => "step",
            Stage::Kernels => "kernels",
            Stage::Plan => "plan",
            Stage::Clif => "clif",
        }
    }
}

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
    let bytes = std::fs::read(path).map_err(|e| CompileError {
        file_name: file_name.clone(),
        source: String::new(),
        diagnostics: vec![Diagnostic::new(
            format!("cannot read {file_name}: {e}"),
            crate::syntax::ast::Span::NONE,
            "",
        )],
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
    pub fn joint(&self) -> Result<Graph, String> {
        crate::autodiff::differentiate(&self.forward)
    }

    /// The joint graph after the optimizing passes.
    pub fn optimized(&self) -> Result<Graph, String> {
        Ok(crate::passes::optimize(&self.joint()?))
    }

    /// The training step graph with the optimizer of the file's `train { }` section (or the
    /// default recipe).
    pub fn step(&self) -> Result<Graph, String> {
        let opts = crate::train::TrainOptions {
            overrides: self.overrides.clone(),
            ..Default::default()
        };
        let cfg = crate::train::resolve_config(self, &self.file_name, &self.source, &opts)
            .map_err(|e| e.to_string())?;
        crate::train::optim::step_graph(&self.joint()?, &cfg.optim)
    }

    /// The deterministic text of one stage.
    pub fn stage_text(&self, stage: Stage) -> Result<String, String> {
        Ok(match stage {
            Stage::Ast => print_ast(&self.module),
            Stage::Ir => text::print(&self.forward),
            Stage::Grad => text::print(&self.joint()?),
            Stage::Opt => text::print(&self.optimized()?),
            Stage::Step => text::print(&self.step()?),
            Stage::Kernels | Stage::Plan | Stage::Clif => {
                crate::runtime::stage_text(&self.joint()?, stage.name())?
            }
        })
    }

    /// The JSON form of one stage (IR stages only).
    pub fn stage_json(&self, stage: Stage) -> Result<String, String> {
        match stage {
            Stage::Ast => serde_json::to_string_pretty(&self.module).map_err(|e| e.to_string()),
            Stage::Ir => Ok(text::to_json(&self.forward)),
            Stage::Grad => Ok(text::to_json(&self.joint()?)),
            Stage::Opt => Ok(text::to_json(&self.optimized()?)),
            Stage::Step => Ok(text::to_json(&self.step()?)),
            Stage::Kernels | Stage::Plan | Stage::Clif => Err(format!(
                "the {} stage has no JSON form; use the text form",
                stage.name()
            )),
        }
    }
}
