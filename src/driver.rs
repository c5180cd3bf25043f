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

pub use crate::front::{compile_file, compile_source, default_name, CompileError, Compiled};
use crate::ir::{text, Graph, IrError};
use crate::syntax::print::print_ast;

/// A printable stage of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Ast,
    Ir,
    Grad,
    Opt,
    Step,
    Kernels,
    Plan,
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

    /// What the stage shows (one line, for `--help`).
    pub fn about(self) -> &'static str {
        match self {
            Stage::Ast => "The parsed syntax tree",
            Stage::Ir => "The elaborated forward tensor IR",
            Stage::Grad => "The joint forward and backward IR (gradients of the loss)",
            Stage::Opt => {
                "The joint IR after the optimizing passes (canonicalize, const_fold, cse, \
                 simplify, dce)"
            }
            Stage::Step => {
                "A whole training step: the joint IR plus the update of the file's optimizer \
                 (state tensors as parameters, `new.<name>` outputs)"
            }
            Stage::Kernels => "The training step's kernels: fused loop nests and matmul calls",
            Stage::Plan => "The training step's buffer plan: arena offsets, lifetimes, peak bytes",
            Stage::Clif => {
                "The Cranelift IR of the training step's kernels (fixed x86-64 target with FMA)"
            }
        }
    }

    /// Whether the stage has a JSON form (the IR stages).
    pub fn has_json(self) -> bool {
        matches!(
            self,
            Stage::Ast | Stage::Ir | Stage::Grad | Stage::Opt | Stage::Step
        )
    }
}

/// Why a stage could not be printed.
#[derive(Debug)]
pub enum StageError {
    /// A graph stage failed (autodiff, the passes, the optimizer update).
    Ir(IrError),
    /// The file's `train { }` recipe does not resolve (rendered diagnostics).
    Recipe(String),
    /// Kernel building, planning or code generation failed.
    Backend(String),
    /// The stage prints as text only.
    NoJson(Stage),
    /// The AST could not be serialized.
    Json(String),
    /// No stage has this name.
    Unknown(String),
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageError::Ir(e) => write!(f, "{e}"),
            StageError::Recipe(e) | StageError::Backend(e) | StageError::Json(e) => f.write_str(e),
            StageError::NoJson(s) => write!(
                f,
                "the {} stage has no JSON form; use the text form",
                s.name()
            ),
            StageError::Unknown(s) => write!(f, "unknown stage `{s}`"),
        }
    }
}

impl std::error::Error for StageError {}

impl From<IrError> for StageError {
    fn from(e: IrError) -> StageError {
        StageError::Ir(e)
    }
}

impl std::str::FromStr for Stage {
    type Err = StageError;
    fn from_str(s: &str) -> Result<Stage, StageError> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| StageError::Unknown(s.to_string()))
    }
}

impl Compiled {
    /// The training step graph with the optimizer of the file's `train { }` section (or the
    /// default recipe).
    pub fn step(&self) -> Result<Graph, StageError> {
        let opts = crate::train::TrainOptions {
            overrides: self.overrides.clone(),
            ..Default::default()
        };
        let cfg = crate::train::resolve_config(self, &self.file_name, &self.source, &opts)
            .map_err(|e| StageError::Recipe(e.to_string()))?;
        Ok(crate::train::optim::step_graph(
            &self.training_joint()?,
            &cfg.optim,
        )?)
    }

    /// The step graph's text: a `;` header line per parameter group (its rule, inputs and
    /// parameters), then the graph.
    pub fn step_text(&self) -> Result<String, StageError> {
        let opts = crate::train::TrainOptions {
            overrides: self.overrides.clone(),
            ..Default::default()
        };
        let cfg = crate::train::resolve_config(self, &self.file_name, &self.source, &opts)
            .map_err(|e| StageError::Recipe(e.to_string()))?;
        let joint = self.training_joint()?;
        let step = crate::train::optim::step_graph(&joint, &cfg.optim)?;
        Ok(crate::train::optim::describe_groups(&joint, &cfg.optim) + &text::print(&step))
    }

    /// The deterministic text of one stage.
    pub fn stage_text(&self, stage: Stage) -> Result<String, StageError> {
        Ok(match stage {
            Stage::Ast => print_ast(&self.module),
            Stage::Ir => text::print(&self.forward),
            Stage::Grad => text::print(&self.joint()?),
            Stage::Opt => text::print(&self.optimized()?),
            Stage::Step => self.step_text()?,
            Stage::Kernels | Stage::Plan | Stage::Clif => {
                let step = self.step()?;
                let opts = crate::kernels::BuildOptions {
                    replaces: crate::train::step::writeback_pairs(&step),
                    ..Default::default()
                };
                crate::runtime::stage_text(&step, stage.name(), &opts)
                    .map_err(|e| StageError::Backend(e.to_string()))?
            }
        })
    }

    /// The JSON form of one stage (IR stages only).
    pub fn stage_json(&self, stage: Stage) -> Result<String, StageError> {
        match stage {
            Stage::Ast => serde_json::to_string_pretty(&self.module)
                .map_err(|e| StageError::Json(e.to_string())),
            Stage::Ir => Ok(text::to_json(&self.forward)),
            Stage::Grad => Ok(text::to_json(&self.joint()?)),
            Stage::Opt => Ok(text::to_json(&self.optimized()?)),
            Stage::Step => Ok(text::to_json(&self.step()?)),
            Stage::Kernels | Stage::Plan | Stage::Clif => Err(StageError::NoJson(stage)),
        }
    }
}
