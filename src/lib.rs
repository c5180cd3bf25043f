//! lamina: a compiler for a declarative language of Transformer and MLP variants.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md), each importing only earlier ones:
//! - `syntax`: the pest grammar -> a spanned AST; `diag`: diagnostics with spans;
//! - `elab`: AST -> the forward tensor IR (constants, names, shapes, schemes, norms, skips,
//!   depth programs);
//! - `ir`: the tensor IR, its op table, shape rules and text form; `interp`: the reference
//!   interpreter in f64, the oracle for everything after elaboration;
//! - `autodiff`: the joint forward + backward IR; `passes`: the optimizing rewrites;
//! - `kernels`: fused loop kernels and matmuls; `jit`: Cranelift code for them; `runtime`: the
//!   arena, the memory plan and the step executor;
//! - `front`: source text to the forward and joint IR in one call; `import`: pretrained
//!   checkpoints (GPT-2) as a model file and weights, and GPT-2's BPE tokenizer; `train`: the optimizer update
//!   as IR, the one training step (`train::step`), tasks, checkpoints and the training loop;
//! - `export`: model.py and train.py, the model and its recipe as plain PyTorch;
//! - `bench`: timing that step; `driver`: the text of every stage; `analysis`: sizes and
//!   `lamina diff`; `diagram`: the block diagram (SVG, DOT); `serve`: the local explorer
//!   page; `cli`: the command line.
//!
//! `tensor` and `io` hold host tensors and safetensors files.

pub mod analysis;
pub mod autodiff;
pub mod bench;
pub mod cli;
pub mod diag;
pub mod diagram;
pub mod driver;
pub mod elab;
pub mod export;
pub mod front;
pub mod import;
pub mod interp;
pub mod io;
pub mod ir;
pub mod jit;
pub mod kernels;
pub mod passes;
pub mod runtime;
pub mod serve;
pub mod syntax;
pub mod tensor;
pub mod train;
pub mod transform;
