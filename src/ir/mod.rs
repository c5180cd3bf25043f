//! The tensor IR: SSA over statically shaped tensors with named parameters.
//!
//! A `Graph` is a list of `Node`s in topological order; a value is the result of one node
//! and is named by its index (`%12`). Inputs, parameters and constants are nodes too, so
//! every consumer reads values the same way. Shapes are static and checked by
//! `ops::infer_type`; `verify` re-derives every type and checks the graph is well formed.
//!
//! The text form (`text`) prints and parses back exactly; serde gives the JSON form.

pub mod builder;
pub mod ops;
pub mod text;

use serde::{Deserialize, Serialize};

pub use builder::GraphBuilder;
pub use ops::{
    infer_type, sinusoidal_entry, BinaryOp, MaskFill, Op, UnaryOp, ViewOp, F64, SINUSOIDAL_BASE,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    I32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        }
    }
}

/// A tensor type: element type and static shape (row-major, PyTorch layout).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Type {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl Type {
    pub fn f32(shape: impl Into<Vec<usize>>) -> Type {
        Type {
            dtype: DType::F32,
            shape: shape.into(),
        }
    }
    pub fn i32(shape: impl Into<Vec<usize>>) -> Type {
        Type {
            dtype: DType::I32,
            shape: shape.into(),
        }
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[", self.dtype.name())?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// Index of a node in `Graph::nodes`; printed `%N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for ValueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// How a parameter is initialised (`lamina init`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Init {
    Zeros,
    Ones,
    /// Every element equals the value (a learned scalar's starting point).
    Const(f64),
    /// Normal with mean 0.
    Normal {
        std: f64,
    },
    /// Uniform in [-bound, bound] (PyTorch's Linear default: bound = 1/sqrt(fan_in)).
    Uniform {
        bound: f64,
    },
}

/// A named model parameter, in PyTorch layout (Linear weight `[out, in]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// Hierarchical and stable: `blocks.3.attn.wq.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Frozen parameters (e.g. an hourglass lift kept at its random init) get no gradient.
    pub trainable: bool,
    /// What the parameter is in the model, set by whoever declares it (the elaborator, the
    /// optimizer); training recipes group parameters by it.
    #[serde(default)]
    pub role: ParamRole,
}

/// What a parameter is, as its declarer knows it. Optimizers pick their rule and
/// hyperparameters per role (parameter groups); nothing infers a role from a name.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ParamRole {
    /// A token or position table `[rows, d]`.
    Embedding,
    /// The input projection of a features model (`embed.weight` `[d, width]`).
    Input,
    /// A norm's weight or bias `[d]`.
    Norm,
    /// A Linear bias `[out]`.
    Bias,
    /// A 2-D hidden weight inside a block (`[out, in]`).
    Matrix,
    /// An untied head or classifier weight.
    Head,
    /// A learned scalar coefficient (a learned skip scale).
    Scalar,
    /// Optimizer state (moments, momentum buffers): never updated by a gradient.
    State,
    /// A parameter of a hand-written or generated graph that no declarer classified.
    #[default]
    Other,
}

impl ParamRole {
    /// Every role, in declaration order.
    pub const ALL: [ParamRole; 9] = [
        ParamRole::Embedding,
        ParamRole::Input,
        ParamRole::Norm,
        ParamRole::Bias,
        ParamRole::Matrix,
        ParamRole::Head,
        ParamRole::Scalar,
        ParamRole::State,
        ParamRole::Other,
    ];

    /// The role's name in the IR text and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ParamRole::Embedding => "embedding",
            ParamRole::Input => "input",
            ParamRole::Norm => "norm",
            ParamRole::Bias => "bias",
            ParamRole::Matrix => "matrix",
            ParamRole::Head => "head",
            ParamRole::Scalar => "scalar",
            ParamRole::State => "state",
            ParamRole::Other => "other",
        }
    }

    /// The role called `name`.
    pub fn from_name(name: &str) -> Option<ParamRole> {
        ParamRole::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for ParamRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Param {
    pub fn ty(&self) -> Type {
        Type::f32(self.shape.clone())
    }
}

/// A graph input fed from a batch (`tokens`, `targets`, `inputs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub name: String,
    pub ty: Type,
}

/// What is wrong with a graph, an op's arguments, or a graph's text.
#[derive(Clone, Debug, PartialEq)]
pub enum IrError {
    /// An op's shape rule rejects its argument types.
    Shape { op: &'static str, detail: String },
    /// Node `%node` is ill-formed.
    Node { node: usize, detail: String },
    /// A problem of the graph as a whole: an output, a saved value, a declaration.
    Graph(String),
    /// The text or JSON form does not parse (text errors start with `line:col:`).
    Parse(String),
}

impl std::fmt::Display for IrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IrError::Shape { detail, .. } | IrError::Graph(detail) | IrError::Parse(detail) => {
                f.write_str(detail)
            }
            IrError::Node { node, detail } => write!(f, "%{node}: {detail}"),
        }
    }
}

impl std::error::Error for IrError {}

impl From<IrError> for String {
    fn from(e: IrError) -> String {
        e.to_string()
    }
}

/// Which part of a training step a node belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Phase {
    #[default]
    Forward,
    /// The gradient computation appended by autodiff.
    Backward,
    /// The optimizer's update of parameters and state, appended after the backward pass.
    Update,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Forward, Phase::Backward, Phase::Update];

    /// The phase's name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Update => "update",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub args: Vec<ValueId>,
    pub ty: Type,
    /// Where in the model this node comes from (`blocks.2.attn`); empty at model level.
    /// Used for readable IR and for per-layer reports.
    pub scope: String,
    pub phase: Phase,
}

/// A named graph result: `loss`, `logits`, `grad.<param>`, `new.<param>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub value: ValueId,
}

/// What an output is for. The output's name is its text form, and this is the one place
/// that reads it: later stages ask for a role, never compare names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputRole<'a> {
    /// The scalar training loss.
    Loss,
    /// The model's prediction.
    Logits,
    /// One named term of a loss made of several (`loss.local.0`: a local learning
    /// rule's group loss); `loss` is their sum.
    PartLoss(&'a str),
    /// The gradient of the loss with respect to the named parameter.
    Grad(&'a str),
    /// The new value of the named parameter (or optimizer state) after a training step:
    /// an executor writes it back into that parameter.
    Update(&'a str),
    /// Anything else a graph chooses to expose.
    Other,
}

impl<'a> OutputRole<'a> {
    /// The output name of a role.
    pub fn name(self) -> String {
        match self {
            OutputRole::Loss => "loss".into(),
            OutputRole::Logits => "logits".into(),
            OutputRole::PartLoss(p) => format!("loss.{p}"),
            OutputRole::Grad(p) => format!("grad.{p}"),
            OutputRole::Update(p) => format!("new.{p}"),
            OutputRole::Other => String::new(),
        }
    }

    /// The role of an output named `name`.
    pub fn of(name: &'a str) -> OutputRole<'a> {
        if name == "loss" {
            OutputRole::Loss
        } else if name == "logits" {
            OutputRole::Logits
        } else if let Some(p) = name.strip_prefix("loss.") {
            OutputRole::PartLoss(p)
        } else if let Some(p) = name.strip_prefix("grad.") {
            OutputRole::Grad(p)
        } else if let Some(p) = name.strip_prefix("new.") {
            OutputRole::Update(p)
        } else {
            OutputRole::Other
        }
    }
}

impl Output {
    pub fn role(&self) -> OutputRole<'_> {
        OutputRole::of(&self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<Input>,
    pub params: Vec<Param>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
    /// Forward values the backward pass reads (filled by autodiff; empty for a forward graph).
    pub saved: Vec<ValueId>,
}

impl Graph {
    pub fn node(&self, v: ValueId) -> &Node {
        &self.nodes[v.index()]
    }
    pub fn ty(&self, v: ValueId) -> &Type {
        &self.nodes[v.index()].ty
    }
    /// The value of the first output with `role`.
    pub fn output_with(&self, role: OutputRole) -> Option<ValueId> {
        self.outputs
            .iter()
            .find(|o| o.role() == role)
            .map(|o| o.value)
    }

    pub fn output(&self, name: &str) -> Option<ValueId> {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.value)
    }
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }
    /// Total number of parameter elements.
    pub fn param_count(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// The type `op` derives from the types of `args` (`ops::infer_type`), gathered without
    /// allocating for the usual one to three args: graph-wide checks call this per node.
    pub fn infer(&self, op: &Op, args: &[ValueId]) -> Result<Type, IrError> {
        if let [first, rest @ ..] = args {
            if rest.len() < 3 {
                let mut tys = [self.ty(*first); 3];
                for (t, a) in tys[1..].iter_mut().zip(rest) {
                    *t = self.ty(*a);
                }
                return infer_type(op, &tys[..args.len()]);
            }
        }
        let tys: Vec<&Type> = args.iter().map(|a| self.ty(*a)).collect();
        infer_type(op, &tys)
    }

    /// Check that the graph is well formed: arguments refer to earlier nodes, leaf indices
    /// are in range, every node's type equals the type its op derives, outputs exist.
    pub fn verify(&self) -> Result<(), IrError> {
        for (i, node) in self.nodes.iter().enumerate() {
            for a in &node.args {
                if a.index() >= i {
                    return Err(node_error(
                        i,
                        format!("argument {a} is not defined before use"),
                    ));
                }
            }
            let ty = match &node.op {
                Op::Input { index } => self
                    .inputs
                    .get(*index)
                    .map(|inp| inp.ty.clone())
                    .ok_or_else(|| node_error(i, format!("input #{index} does not exist")))?,
                Op::Param { index } => self
                    .params
                    .get(*index)
                    .map(|p| p.ty())
                    .ok_or_else(|| node_error(i, format!("param #{index} does not exist")))?,
                op => self
                    .infer(op, &node.args)
                    .map_err(|e| node_error(i, e.to_string()))?,
            };
            if ty != node.ty {
                return Err(node_error(
                    i,
                    format!(
                        "{} derives type {ty} but the node says {}",
                        node.op.name(),
                        node.ty
                    ),
                ));
            }
        }
        for o in &self.outputs {
            if o.value.index() >= self.nodes.len() {
                return Err(IrError::Graph(format!(
                    "output {} refers to undefined {}",
                    o.name, o.value
                )));
            }
        }
        for s in &self.saved {
            if s.index() >= self.nodes.len() {
                return Err(IrError::Graph(format!("saved value {s} is undefined")));
            }
        }
        Ok(())
    }
}

fn node_error(node: usize, detail: String) -> IrError {
    IrError::Node { node, detail }
}
