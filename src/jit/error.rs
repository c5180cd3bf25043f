//! Errors of code generation. Apart from a host Cranelift cannot target, every one is an
//! internal error: a kernel the generator does not handle, or code Cranelift refuses.

use std::fmt;

/// Why compiling a program's kernels failed.
#[derive(Clone, Debug, PartialEq)]
pub enum JitError {
    /// Cranelift has no code generator for this host, or refused a setting.
    Host(String),
    /// Generating or compiling kernel `kernel` failed.
    Kernel {
        kernel: usize,
        problem: CodegenError,
    },
    /// The JIT module refused a compiled function or could not finalize it.
    Module(String),
    /// The fixed target of the printed CLIF is not available in this build.
    Target(String),
}

/// What went wrong generating one kernel's code.
#[derive(Clone, Debug, PartialEq)]
pub enum CodegenError {
    /// The kernel is run by the runtime, not by generated code.
    NotGenerated,
    /// A matmul on the gemm path, which is not generated code.
    GemmNotGenerated,
    /// Loop node `value` is read as a row value before its pass.
    RowValueNotReady { value: usize },
    /// Loop node `value`, a row value, is read by a column before it is computed.
    RowValueUnset { value: usize },
    /// Loop node `value` is read as a column value but is not one.
    NotAColumnValue { value: usize },
    /// A row store of loop node `value`, which has no value after the passes.
    RowStoreUnset { value: usize },
    /// Cranelift refused the function (its verifier or code generator message).
    Rejected(String),
    /// The compiled code needs relocations, which kernels never do.
    Relocations,
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodegenError::NotGenerated => write!(f, "kernel is not generated code"),
            CodegenError::GemmNotGenerated => write!(f, "gemm is not generated code"),
            CodegenError::RowValueNotReady { value } => {
                write!(f, "v{value} is not available as a row value yet")
            }
            CodegenError::RowValueUnset { value } => {
                write!(f, "row value v{value} used before it is computed")
            }
            CodegenError::NotAColumnValue { value } => {
                write!(f, "v{value} is not a column value")
            }
            CodegenError::RowStoreUnset { value } => {
                write!(f, "row store of v{value} has no value")
            }
            CodegenError::Rejected(e) => write!(f, "cranelift rejected a kernel: {e}"),
            CodegenError::Relocations => write!(f, "kernel code needs relocations"),
        }
    }
}

impl fmt::Display for JitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JitError::Host(e) => write!(f, "{e}"),
            JitError::Kernel { problem, .. } => write!(f, "internal error: {problem}"),
            JitError::Module(e) | JitError::Target(e) => write!(f, "internal error: {e}"),
        }
    }
}

impl std::error::Error for CodegenError {}

/// The text of the wrapped `CodegenError` is part of the message, so there is no `source`.
impl std::error::Error for JitError {}

/// For callers that still report errors as text.
impl From<JitError> for String {
    fn from(e: JitError) -> String {
        e.to_string()
    }
}
