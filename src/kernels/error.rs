//! Errors of building and checking kernel programs. Apart from asking for an output the
//! graph does not have, every one is an internal error: a graph the builder does not handle,
//! or a kernel that fails its own check.

use super::BufId;
use crate::tensor::AllocError;
use std::fmt;

/// Why building or checking a program failed.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelError {
    /// The allocator refused a constant table (a sinusoidal position table).
    Alloc(AllocError),
    /// The graph fails `Graph::verify`.
    IllFormedGraph(String),
    /// An output asked for by name that the graph does not have.
    NoOutput(String),
    /// Lowering IR node `node` met a case the builder does not handle.
    Internal { node: u32, message: String },
    /// Kernel `kernel` fails the program check in `part` of it (`load v3`, `store`).
    Check {
        kernel: usize,
        part: String,
        problem: CheckProblem,
    },
}

/// What is wrong with a kernel that fails the program check.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckProblem {
    /// An access names a buffer the program does not have.
    UndefinedBuffer { buf: BufId },
    /// An access whose extent cannot be computed.
    Access(AccessError),
    /// An access reaching elements `lo..=hi` of `buf`, which has `len`.
    OutOfBounds {
        buf: BufId,
        lo: i64,
        hi: i64,
        len: usize,
    },
    /// Loop node `value` reads a node after it.
    LaterValue { value: usize },
    /// A store of loop node `value`, which does not exist.
    UndefinedStore { value: usize },
    /// Matmul operands with different batch sizes.
    BatchMismatch,
    /// A matmul bias on a generated (not gemm) path.
    BiasOffGemm,
    /// A scatter-add whose buffers are too small for its sizes.
    ScatterOutOfRange,
}

/// Why the extent of an access cannot be computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// A row table that is not a table buffer (or is too short).
    NotATable { table: BufId },
    /// Gather ids in a buffer that does not exist.
    NoIdsBuffer { ids: BufId },
    /// Gather ids that do not cover every row (or are not i32).
    IdsTooShort { ids: BufId, rows: usize },
    /// A gather from a table with no rows.
    EmptyTable,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::NotATable { table } => {
                write!(f, "access uses {table} as a row table but it is not one")
            }
            AccessError::NoIdsBuffer { ids } => write!(f, "ids buffer {ids} does not exist"),
            AccessError::IdsTooShort { ids, rows } => {
                write!(f, "gather ids {ids} do not cover {rows} rows")
            }
            AccessError::EmptyTable => write!(f, "gather with an empty table"),
        }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::IllFormedGraph(e) => write!(f, "internal error: ill-formed graph: {e}"),
            KernelError::NoOutput(name) => write!(f, "no output {name}"),
            KernelError::Alloc(e) => write!(f, "{e}"),
            KernelError::Internal { message, .. } => write!(f, "internal error: {message}"),
            KernelError::Check {
                kernel,
                part,
                problem,
            } => {
                write!(f, "internal error: kernel k{kernel}")?;
                if !part.is_empty() {
                    write!(f, " {part}")?;
                }
                match problem {
                    CheckProblem::UndefinedBuffer { buf } => {
                        write!(f, " uses undefined buffer {buf}")
                    }
                    CheckProblem::Access(e) => write!(f, ": {e}"),
                    CheckProblem::OutOfBounds { buf, lo, hi, len } => {
                        write!(f, " reaches elements {lo}..={hi} of {buf} which has {len}")
                    }
                    CheckProblem::LaterValue { .. } => write!(f, " uses a later value"),
                    CheckProblem::UndefinedStore { .. } => write!(f, " stores an undefined value"),
                    CheckProblem::BatchMismatch => write!(f, " batch mismatch"),
                    CheckProblem::BiasOffGemm => write!(f, " bias off gemm"),
                    CheckProblem::ScatterOutOfRange => write!(f, " out of range"),
                }
            }
        }
    }
}

impl std::error::Error for AccessError {}

/// The text of a wrapped `AccessError` is part of the message, so there is no `source`.
impl std::error::Error for KernelError {}

/// For callers that still report errors as text.
impl From<KernelError> for String {
    fn from(e: KernelError) -> String {
        e.to_string()
    }
}
