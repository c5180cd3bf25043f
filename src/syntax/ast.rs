//! The spanned abstract syntax tree of a model file.
//!
//! The AST is deliberately generic: statements carry `Call`s (a name with optional
//! arguments) and expressions, and elaboration decides what each name means. That keeps
//! the grammar small and lets elaboration give precise, contextual errors
//! ("unknown argument `hiden` for ffn") instead of generic parse errors.

use serde::Serialize;

pub use crate::diag::Span;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole model file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Module {
    pub items: Vec<Item>,
    pub span: Span,
    /// The `train { }` section, if any. Kept out of `items`: elaboration never reads it,
    /// only `lamina train` does (src/train).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainSection>,
}

/// `train { task = modular_addition(p = 97) \n steps = 1500 ... }`: one setting per line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainSection {
    pub settings: Vec<TrainSetting>,
    /// The whole section, keyword included.
    pub span: Span,
}

impl Module {
    /// The `stack` statements, in file order.
    pub fn stacks(&self) -> Vec<&Stack> {
        self.items
            .iter()
            .filter_map(|i| match i {
                Item::Stack(s) => Some(s),
                _ => None,
            })
            .collect()
    }
}

/// `key = value` inside `train { }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainSetting {
    pub key: Ident,
    pub value: TrainValue,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum TrainValue {
    /// `adamw(lr = 1e-3)`: a name with parenthesised arguments.
    Call(Call),
    /// `1500`, `[0.9, 0.98]`, or a bare name such as `sgd`.
    Expr(Expr),
}

/// A top-level statement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Item {
    /// `model NAME`
    Model(Ident),
    /// `NAME = EXPR`
    Const {
        name: Ident,
        value: Expr,
    },
    /// `input tokens(batch = 16, length = 64, vocab = 256)`
    Input(Call),
    /// `embed(dim = d, positions = learned)`; the call's name is `embed`.
    Embed(Call),
    /// `norm pre layernorm(eps = 1e-5)`: the model-wide default; one or two calls.
    Norm(NormSpec),
    /// `skip scaled(0.5)`: the model-wide default skip.
    Skip(Call),
    Block(Block),
    /// `stack layer * 4 shared order [0, 1, 1, 2]`
    Stack(Stack),
    /// `final_norm layernorm` / `final_norm none`
    FinalNorm(Call),
    /// `head lm(tied = true)`
    Head(Call),
    /// `loss cross_entropy`
    Loss(Call),
    /// `learning local(head = linear)`: how the blocks learn (end-to-end backprop when
    /// absent).
    Learning(Call),
}

/// `norm` followed by a placement and/or a kind, in any order: `norm peri rmsnorm(eps = 1e-6)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NormSpec {
    pub parts: Vec<Call>,
    pub span: Span,
}

/// `NAME` or `NAME(ARG, ...)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Call {
    pub name: Ident,
    /// `None` when written without parentheses, `Some(vec![])` for `name()`.
    pub args: Option<Vec<Arg>>,
    pub span: Span,
}

/// A positional (`0.5`, `ffn`) or named (`heads = 4`) argument.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arg {
    pub key: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Block {
    pub name: Ident,
    pub items: Vec<BlockItem>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum BlockItem {
    /// `norm post` inside a block: the block's default.
    Norm(NormSpec),
    /// `skip scaled(learned)` inside a block: the block's default.
    Skip(Call),
    /// `attn = attention(heads = 4) norm peri skip scaled(0.5)`
    Sublayer(Sublayer),
    /// `scheme strang(ffn, attn)` or `scheme [ffn * 0.5, attn, ffn * 0.5]`
    Scheme(Scheme),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sublayer {
    pub name: Ident,
    pub call: Call,
    pub norm: Option<NormSpec>,
    pub skip: Option<Call>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Scheme {
    /// `lie_trotter(a, b)`, `strang(a, b, h = 0.5)`, `parallel(a, b)`
    Named(Call),
    /// `[ffn * 0.5, attn, ffn * 0.5]`
    Steps { steps: Vec<Step>, span: Span },
}

/// One explicit step: a sublayer name with an optional coefficient (`ffn * 1/2`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub sublayer: Ident,
    pub coef: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stack {
    pub block: Ident,
    pub count: Expr,
    /// Span of the `shared` keyword when present.
    pub shared: Option<Span>,
    /// The list expression after `order`.
    pub order: Option<Expr>,
    /// Depth-program clauses (`parallel 4`, `subnets [8, 4]`, ...), in source order.
    pub clauses: Vec<StackClause>,
    pub span: Span,
}

/// `WORD` or `WORD VALUE` after a stack's count: `expand linear`, `stages 3`, `routed`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StackClause {
    pub word: Ident,
    pub value: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A constant, or a keyword value such as `gelu` or `learned`.
    Name(String),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    /// `rope(base = 10000)`: a kind with its settings, as an argument's value.
    Call(Box<Call>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// `/`: true division, always a float.
    Div,
    /// `//`: integer (floor) division.
    FloorDiv,
    Mod,
}
