//! Source text -> spanned AST (pest grammar in `grammar/lamina.pest`).
pub mod ast;
pub mod parser;
pub mod print;

pub use parser::{parse, parse_bytes, MAX_EXPR_DEPTH, MAX_INPUT_BYTES, MAX_NESTING};
pub use print::print_ast;
