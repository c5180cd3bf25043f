//! lamina: a compiler for a declarative language of Transformer and MLP variants.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md):
//! `syntax` (pest grammar -> spanned AST) -> `elab` (AST -> tensor IR) -> `ir` (the tensor IR,
//! its text form and shape rules) -> `autodiff` (joint forward+backward IR) -> `interp`
//! (the reference interpreter, the oracle for everything after it).

pub mod autodiff;
pub mod bench;
pub mod cli;
pub mod diag;
pub mod driver;
pub mod elab;
pub mod front;
pub mod interp;
pub mod io;
pub mod ir;
pub mod jit;
pub mod kernels;
pub mod passes;
pub mod runtime;
pub mod syntax;
pub mod tensor;
pub mod train;
