//! Errors of compiling and running a program: the build, the memory check and the code
//! generation, and host data (parameters, inputs) that does not fit the program.

use super::memory::OutOfMemory;
use crate::ir::Type;
use crate::jit::JitError;
use crate::kernels::KernelError;
use crate::tensor::AllocError;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeError {
    /// Building the kernel program failed.
    Kernels(KernelError),
    /// Generating its code failed.
    Jit(JitError),
    /// The step needs more memory than this host allows.
    OutOfMemory(OutOfMemory),
    /// The allocator refused an arena of `bytes`.
    Allocation { bytes: u128 },
    /// The allocator refused a host copy (an output read back).
    Host(AllocError),
    /// A parameter list of the wrong length.
    ParamCount { expected: usize, got: usize },
    /// Parameter `name` given with a type other than its own.
    ParamType { name: String, expected: Type },
    /// Parameter number `index` does not exist.
    NoParam { index: usize },
    /// Parameter number `index` given with the wrong number of elements.
    ParamLen {
        index: usize,
        expected: usize,
        got: usize,
    },
    /// An input list of the wrong length for graph `graph`.
    InputCount {
        graph: String,
        expected: usize,
        got: usize,
    },
    /// Input `name` given with a type other than its own.
    InputType {
        name: String,
        expected: Type,
        got: Type,
    },
    /// Element `element` of i32 input `name` is not an i32.
    NotAnInteger {
        name: String,
        element: usize,
        value: f64,
    },
    /// Element `element` of index input `name` is outside `0..bound`.
    IndexOutOfRange {
        name: String,
        element: usize,
        value: f64,
        bound: usize,
    },
    /// Output number `index` does not exist.
    NoOutput { index: usize },
    /// Output `output` cannot be written back into parameter `param`.
    WritebackMismatch { output: String, param: String },
    /// A step whose graph has no loss output.
    NoLoss,
    /// A back-end stage name that is not one.
    UnknownStage(String),
    /// The thread pool could not be set up (already set, or the OS refused threads).
    Threads(String),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Kernels(e) => write!(f, "{e}"),
            RuntimeError::Jit(e) => write!(f, "{e}"),
            RuntimeError::OutOfMemory(e) => write!(f, "{e}"),
            RuntimeError::Host(e) => write!(f, "{e}"),
            RuntimeError::Allocation { bytes } => write!(
                f,
                "cannot allocate the arena of {bytes} bytes; reduce the model with --set (batch, length, d, layers)"
            ),
            RuntimeError::ParamCount { expected, got } => {
                write!(f, "{expected} parameter(s) expected, got {got}")
            }
            RuntimeError::ParamType { name, expected } => {
                write!(f, "parameter {name} expects {expected}")
            }
            RuntimeError::NoParam { index } => write!(f, "no parameter #{index}"),
            RuntimeError::ParamLen {
                index,
                expected,
                got,
            } => write!(f, "parameter #{index} needs {expected} elements, got {got}"),
            RuntimeError::InputCount {
                graph,
                expected,
                got,
            } => write!(f, "{graph} takes {expected} input(s), got {got}"),
            RuntimeError::InputType {
                name,
                expected,
                got,
            } => write!(f, "input {name} expects {expected}, got {got}"),
            RuntimeError::NotAnInteger {
                name,
                element,
                value,
            } => write!(f, "input {name} is i32 but element {element} is {value}"),
            RuntimeError::IndexOutOfRange {
                name,
                element,
                value,
                bound,
            } => write!(
                f,
                "input {name}: element {element} is {value}, outside 0..{bound}"
            ),
            RuntimeError::NoOutput { index } => write!(f, "no output #{index}"),
            RuntimeError::WritebackMismatch { output, param } => {
                write!(f, "output {output} does not fit parameter {param}")
            }
            RuntimeError::NoLoss => write!(f, "the step has no loss"),
            RuntimeError::UnknownStage(s) => {
                write!(f, "unknown back-end stage {s} (kernels, plan, clif)")
            }
            RuntimeError::Threads(e) => write!(f, "cannot set up the threads: {e}"),
        }
    }
}

/// The text of a wrapped error is the whole message, so there is no `source`.
impl std::error::Error for RuntimeError {}

impl From<KernelError> for RuntimeError {
    fn from(e: KernelError) -> RuntimeError {
        RuntimeError::Kernels(e)
    }
}

impl From<JitError> for RuntimeError {
    fn from(e: JitError) -> RuntimeError {
        RuntimeError::Jit(e)
    }
}

impl From<OutOfMemory> for RuntimeError {
    fn from(e: OutOfMemory) -> RuntimeError {
        RuntimeError::OutOfMemory(e)
    }
}

/// For callers that still report errors as text.
impl From<RuntimeError> for String {
    fn from(e: RuntimeError) -> String {
        e.to_string()
    }
}
