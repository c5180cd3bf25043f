//! The errors of training: each says what it concerns (a file, an option, a step).

use crate::io::IoError;
use crate::tensor::AllocError;
use std::path::PathBuf;

/// Why a training run (or `compare`, `sample`, the recipe) failed.
#[derive(Debug)]
pub enum TrainError {
    /// Diagnostics of the model file or of the recipe, rendered with their source lines.
    Diagnostics(String),
    /// A command-line option with a value that cannot be used.
    Option { option: String, message: String },
    /// A file could not be read or written.
    Io(IoError),
    /// The task does not fit the model, or its data cannot be used.
    Task { model: String, error: TaskError },
    /// A checkpoint that cannot be resumed from.
    Checkpoint { path: PathBuf, problem: String },
    /// The run directory is in use by another run or already holds one.
    RunDir { dir: PathBuf, problem: String },
    /// A NaN or Inf: where it first appeared.
    NonFinite(NonFiniteError),
    /// Compiling or running a graph failed, at a step when one was running.
    Exec { step: Option<u64>, error: ExecError },
    /// The allocator refused a host buffer (parameters, a batch, samples).
    Alloc(AllocError),
    /// Something lamina itself guarantees did not hold.
    Internal(String),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Diagnostics(text) => f.write_str(text.trim_end()),
            TrainError::Option { option, message } => write!(f, "{option}: {message}"),
            TrainError::Io(e) => write!(f, "{e}"),
            TrainError::Task { model, error } => {
                match &error.task {
                    Some(task) => write!(f, "task {task} on model `{model}`: ")?,
                    None => write!(f, "{model}: ")?,
                }
                error.write_body(f)
            }
            TrainError::Checkpoint { path, problem } => {
                write!(f, "cannot resume from {}: {problem}", path.display())
            }
            TrainError::RunDir { dir, problem } => write!(f, "{}: {problem}", dir.display()),
            TrainError::NonFinite(e) => write!(f, "{e}"),
            TrainError::Exec {
                step: Some(step),
                error,
            } => write!(f, "at step {step}: {error}"),
            TrainError::Exec { step: None, error } => write!(f, "{error}"),
            TrainError::Alloc(e) => write!(f, "{e}"),
            TrainError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

/// The message says everything, including the inner error: no `source`, so that a report
/// of the chain does not repeat it.
impl std::error::Error for TrainError {}

impl From<AllocError> for TrainError {
    fn from(e: AllocError) -> Self {
        TrainError::Alloc(e)
    }
}

impl From<IoError> for TrainError {
    fn from(e: IoError) -> Self {
        TrainError::Io(e)
    }
}

impl From<NonFiniteError> for TrainError {
    fn from(e: NonFiniteError) -> Self {
        TrainError::NonFinite(e)
    }
}

impl From<ExecError> for TrainError {
    fn from(error: ExecError) -> Self {
        TrainError::Exec { step: None, error }
    }
}

/// A non-finite loss or update, located: the message names the step, the op and the layer.
#[derive(Debug)]
pub struct NonFiniteError {
    /// The step (1-based) whose result was not finite.
    pub step: u64,
    pub message: String,
}

impl std::fmt::Display for NonFiniteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NonFiniteError {}

/// A task that does not fit a model, or a model no task fits.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskError {
    /// The task's name; `None` when no task was chosen yet.
    pub task: Option<&'static str>,
    pub message: String,
    /// What to do about it, when there is something to say.
    pub hint: Option<String>,
}

impl TaskError {
    pub fn new(task: Option<&'static str>, message: impl Into<String>) -> TaskError {
        TaskError {
            task,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> TaskError {
        self.hint = Some(hint.into());
        self
    }

    /// The message, and the hint on a line of its own.
    fn write_body(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        match &self.hint {
            Some(h) => write!(f, "\n  hint: {h}"),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write_body(f)
    }
}

impl std::error::Error for TaskError {}

/// A graph that could not be compiled or run by an executor.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecError {
    /// Building the executable (kernels, memory plan, code) failed.
    Compile(String),
    /// Running it failed.
    Run(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Compile(m) => write!(f, "cannot compile the step: {m}"),
            ExecError::Run(m) => write!(f, "running the step failed: {m}"),
        }
    }
}

impl std::error::Error for ExecError {}
