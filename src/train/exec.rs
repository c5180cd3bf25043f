//! Executors: run a graph on given inputs and parameters, on the JIT or the interpreter.
//!
//! Parameters and optimizer state live on the host between steps as f32-valued tensors, so
//! a checkpoint holds exactly what the next step reads and a resumed run is bit-identical.

use crate::cli::Backend;
use crate::interp;
use crate::ir::{Graph, Op};
use crate::runtime::{self, CompiledGraph};
use crate::tensor::Tensor;

pub trait Executor {
    /// Every output of the graph, in graph order.
    fn run(
        &mut self,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<(String, Tensor)>, String>;
}

struct Jit(CompiledGraph);

impl Executor for Jit {
    fn run(
        &mut self,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<(String, Tensor)>, String> {
        self.0.run(inputs, params)
    }
}

struct Interp(Graph);

impl Executor for Interp {
    fn run(
        &mut self,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<(String, Tensor)>, String> {
        let mut out =
            interp::run(&self.0, &interp::Env { inputs, params }).map_err(|e| e.to_string())?;
        // The interpreter computes in f64; state kept between steps is f32, like the JIT's.
        for (_, t) in out.iter_mut() {
            for v in t.data.iter_mut() {
                *v = *v as f32 as f64;
            }
        }
        Ok(out)
    }
}

/// Compile `g` for `backend` (the JIT runs the optimizing passes itself).
pub fn executor(g: &Graph, backend: Backend) -> Result<Box<dyn Executor>, String> {
    match backend {
        Backend::Jit => Ok(Box::new(Jit(runtime::compile_graph(g)?))),
        Backend::Interp => Ok(Box::new(Interp(g.clone()))),
    }
}

/// Where a non-finite value first appears when `g` is evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    pub node: usize,
    pub op: String,
    pub scope: String,
    pub backward: bool,
    /// What was found: "NaN", "inf", or the interpreter's error.
    pub what: String,
}

/// Re-run `g` in the interpreter, rounding every value to f32 as the JIT would, and return
/// the first node whose value is not finite (or that fails, e.g. a softmax over an
/// infinite row). `None` when every value is finite.
pub fn first_non_finite(g: &Graph, inputs: &[Tensor], params: &[Tensor]) -> Option<NonFinite> {
    let mut values: Vec<Tensor> = Vec::with_capacity(g.nodes.len());
    for (i, node) in g.nodes.iter().enumerate() {
        let found = |what: String| NonFinite {
            node: i,
            op: node.op.name().to_string(),
            scope: node.scope.clone(),
            backward: node.phase == crate::ir::Phase::Backward,
            what,
        };
        let value = match &node.op {
            Op::Input { index } => inputs.get(*index)?.clone(),
            Op::Param { index } => params.get(*index)?.clone(),
            op => {
                let args: Vec<&Tensor> = node.args.iter().map(|a| &values[a.index()]).collect();
                match interp::apply(op, &args) {
                    Ok(mut t) => {
                        for v in t.data.iter_mut() {
                            *v = *v as f32 as f64;
                        }
                        t
                    }
                    Err(e) => return Some(found(e)),
                }
            }
        };
        if let Some(v) = value.data.iter().find(|v| !v.is_finite()) {
            let what = if v.is_nan() { "NaN" } else { "inf" };
            return Some(found(what.to_string()));
        }
        values.push(value);
    }
    None
}
