//! Building graphs: appends nodes with derived types, under a current scope.
//!
//! Every method checks shapes through `infer_type`; an error here means the caller (say,
//! elaboration) let an inconsistent model through its own checks, so callers turn it into
//! an internal-error diagnostic rather than a panic.

use super::ops::{BinaryOp, UnaryOp, ViewOp, F64};
use super::{
    Graph, Init, Input, IrError, Node, Op, Output, Param, ParamRole, Phase, Type, ValueId,
};
use std::collections::HashMap;

pub type BuildResult = Result<ValueId, IrError>;

#[derive(Default)]
pub struct GraphBuilder {
    pub graph: Graph,
    scope: String,
    phase: Phase,
    /// Parameter name -> index, so a parameter requested twice (weight sharing) is one node.
    param_nodes: HashMap<String, ValueId>,
}

impl GraphBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        GraphBuilder {
            graph: Graph {
                name: name.into(),
                ..Graph::default()
            },
            ..Default::default()
        }
    }

    /// Continue building on an existing graph (autodiff appends its backward nodes).
    pub fn from_graph(graph: Graph) -> Self {
        let mut param_nodes = HashMap::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            if let Op::Param { index } = n.op {
                param_nodes.insert(graph.params[index].name.clone(), ValueId(i as u32));
            }
        }
        GraphBuilder {
            graph,
            param_nodes,
            ..Default::default()
        }
    }

    pub fn finish(self) -> Graph {
        self.graph
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }
    pub fn set_scope(&mut self, scope: impl Into<String>) {
        self.scope = scope.into();
    }
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    pub fn ty(&self, v: ValueId) -> &Type {
        self.graph.ty(v)
    }
    pub fn shape(&self, v: ValueId) -> Vec<usize> {
        self.graph.ty(v).shape.clone()
    }

    fn push_typed(&mut self, op: Op, args: Vec<ValueId>, ty: Type) -> ValueId {
        let id = ValueId(self.graph.nodes.len() as u32);
        self.graph.nodes.push(Node {
            op,
            args,
            ty,
            scope: self.scope.clone(),
            phase: self.phase,
        });
        id
    }

    /// Append `op(args)`, deriving its type.
    pub fn push(&mut self, op: Op, args: &[ValueId]) -> BuildResult {
        let ty = self.graph.infer(&op, args)?;
        Ok(self.push_typed(op, args.to_vec(), ty))
    }

    pub fn input(&mut self, name: impl Into<String>, ty: Type) -> ValueId {
        let index = self.graph.inputs.len();
        self.graph.inputs.push(Input {
            name: name.into(),
            ty: ty.clone(),
        });
        self.push_typed(Op::Input { index }, vec![], ty)
    }

    /// The node of parameter `name` (role `other`), declaring it on first use. A second
    /// request with the same name returns the same node (shared weights), and must agree on
    /// the shape.
    pub fn param(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        init: Init,
        trainable: bool,
    ) -> BuildResult {
        self.role_param(name, shape, init, trainable, ParamRole::Other)
    }

    /// The node of parameter `name` with its role, declaring it on first use. A second
    /// request with the same name returns the same node (shared weights), and must agree on
    /// the shape and the role.
    pub fn role_param(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        init: Init,
        trainable: bool,
        role: ParamRole,
    ) -> BuildResult {
        let name = name.into();
        if let Some(&v) = self.param_nodes.get(&name) {
            if self.graph.ty(v).shape != shape {
                return Err(IrError::Graph(format!(
                    "parameter {name} requested as {shape:?} but declared as {}",
                    self.graph.ty(v)
                )));
            }
            let declared = match self.graph.nodes.get(v.index()).map(|n| &n.op) {
                Some(Op::Param { index }) => self.graph.params.get(*index).map(|p| p.role),
                _ => None,
            };
            if let Some(declared) = declared.filter(|&r| r != role) {
                return Err(IrError::Graph(format!(
                    "parameter {name} requested as {role} but declared as {declared}"
                )));
            }
            return Ok(v);
        }
        let index = self.graph.params.len();
        self.graph.params.push(Param {
            name: name.clone(),
            shape: shape.clone(),
            init,
            trainable,
            role,
        });
        let v = self.push_typed(Op::Param { index }, vec![], Type::f32(shape));
        self.param_nodes.insert(name, v);
        Ok(v)
    }

    pub fn output(&mut self, name: impl Into<String>, value: ValueId) {
        self.graph.outputs.push(Output {
            name: name.into(),
            value,
        });
    }

    // ---- conveniences ----
    pub fn full(&mut self, value: f64, shape: Vec<usize>) -> BuildResult {
        self.push(
            Op::Full {
                value: F64(value),
                shape,
            },
            &[],
        )
    }
    pub fn unary(&mut self, op: Op, x: ValueId) -> BuildResult {
        self.push(op, &[x])
    }
    pub fn add(&mut self, a: ValueId, b: ValueId) -> BuildResult {
        self.push(Op::Binary(BinaryOp::Add), &[a, b])
    }
    pub fn sub(&mut self, a: ValueId, b: ValueId) -> BuildResult {
        self.push(Op::Binary(BinaryOp::Sub), &[a, b])
    }
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> BuildResult {
        self.push(Op::Binary(BinaryOp::Mul), &[a, b])
    }
    pub fn div(&mut self, a: ValueId, b: ValueId) -> BuildResult {
        self.push(Op::Binary(BinaryOp::Div), &[a, b])
    }
    pub fn scale(&mut self, x: ValueId, factor: f64) -> BuildResult {
        self.push(
            Op::Unary(UnaryOp::Scale {
                factor: F64(factor),
            }),
            &[x],
        )
    }
    pub fn add_scalar(&mut self, x: ValueId, value: f64) -> BuildResult {
        self.push(Op::Unary(UnaryOp::AddScalar { value: F64(value) }), &[x])
    }
    pub fn reduce_sum(&mut self, x: ValueId, axes: Vec<usize>, keep_dims: bool) -> BuildResult {
        self.push(Op::ReduceSum { axes, keep_dims }, &[x])
    }
    pub fn reshape(&mut self, x: ValueId, shape: Vec<usize>) -> BuildResult {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push(Op::View(ViewOp::Reshape { shape }), &[x])
    }
    pub fn transpose(&mut self, x: ValueId, perm: Vec<usize>) -> BuildResult {
        self.push(Op::View(ViewOp::Transpose { perm }), &[x])
    }
    /// Broadcast to `shape`; a no-op when the shape already matches.
    pub fn broadcast(&mut self, x: ValueId, shape: Vec<usize>) -> BuildResult {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push(Op::View(ViewOp::Broadcast { shape }), &[x])
    }
    /// Elements `start..end` of `x` along `axis`.
    pub fn slice(&mut self, x: ValueId, axis: usize, start: usize, end: usize) -> BuildResult {
        self.push(Op::View(ViewOp::Slice { axis, start, end }), &[x])
    }
    pub fn matmul(&mut self, a: ValueId, b: ValueId, ta: bool, tb: bool) -> BuildResult {
        self.push(Op::MatMul { ta, tb }, &[a, b])
    }

    /// PyTorch `Linear`: `x @ weight^T + bias`, weight `[out, in]`, over the last axis of x.
    pub fn linear(&mut self, x: ValueId, weight: ValueId, bias: Option<ValueId>) -> BuildResult {
        let y = if self.ty(x).rank() >= 2 {
            self.matmul(x, weight, false, true)?
        } else {
            // A single vector: treat it as one row.
            let n = self.shape(x)[0];
            let x2 = self.reshape(x, vec![1, n])?;
            let y2 = self.matmul(x2, weight, false, true)?;
            let out = self.shape(y2)[1];
            self.reshape(y2, vec![out])?
        };
        match bias {
            None => Ok(y),
            Some(b) => {
                let shape = self.shape(y);
                let bb = self.broadcast(b, shape)?;
                self.add(y, bb)
            }
        }
    }
}
