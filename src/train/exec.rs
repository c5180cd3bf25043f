//! Executors: run a graph on given inputs and parameters, on the JIT or the interpreter.
//!
//! Parameters and optimizer state are f32 values between steps (in the JIT's arena, or as
//! f32-valued host tensors for the interpreter), so a checkpoint holds exactly what the
//! next step reads and a resumed run is bit-identical.

use crate::interp;
use crate::ir::{Graph, Op, OutputRole};
use crate::runtime::{self, CompiledGraph};
use crate::tensor::{AllocError, Tensor};

pub use super::error::ExecError;

/// Which executor runs a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Generated code (f32).
    Jit,
    /// The reference interpreter (f64).
    Interp,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Jit => "jit",
            Backend::Interp => "interp",
        }
    }
}

pub trait Executor {
    /// Every output of the graph, in graph order.
    fn run(
        &mut self,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<(String, Tensor)>, ExecError>;
}

struct Jit(CompiledGraph);

impl Executor for Jit {
    fn run(
        &mut self,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<(String, Tensor)>, ExecError> {
        self.0
            .run(inputs, params)
            .map_err(|e| ExecError::Run(e.to_string()))
    }
}

struct Interp(Graph);

impl Executor for Interp {
    fn run(
        &mut self,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<(String, Tensor)>, ExecError> {
        let mut out = interp::run(&self.0, &interp::Env { inputs, params })
            .map_err(|e| ExecError::Run(e.to_string()))?;
        // The interpreter computes in f64; state kept between steps is f32, like the JIT's.
        for (_, t) in out.iter_mut() {
            for v in t.data.iter_mut() {
                *v = *v as f32 as f64;
            }
        }
        Ok(out)
    }
}

/// What one training step reports to the host.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutcome {
    pub loss: f64,
    /// The named terms of the loss, when it has several (a local learning rule's groups).
    pub parts: Vec<(String, f64)>,
    /// The first output (graph order) that is not finite; the parameters were then left
    /// as the step read them, unless `updated`.
    pub non_finite: Option<String>,
    /// The update had already been stored in place when the non-finite output was found
    /// (every value before the update was finite: the update itself overflowed).
    pub updated: bool,
}

/// Runs a training step graph whose parameters (weights and optimizer state) live in the
/// executor between steps: only the loss crosses to the host each step.
pub trait StepExecutor {
    fn load_params(&mut self, params: Vec<Tensor>) -> Result<(), ExecError>;
    /// One step; on success output `o` becomes parameter `p` for each writeback pair.
    fn step(&mut self, inputs: &[Tensor]) -> Result<StepOutcome, ExecError>;
    /// The current parameters, in graph order.
    fn params(&self) -> Result<Vec<Tensor>, AllocError>;
    /// The bytes of the step's arena (parameters, state and every value of the step), when
    /// the executor plans one.
    fn arena_bytes(&self) -> Option<usize>;
}

/// The JIT keeps parameters in its f32 arena and writes outputs back arena to arena.
struct JitStep {
    graph: CompiledGraph,
    writeback: Vec<(usize, usize)>,
}

impl StepExecutor for JitStep {
    fn load_params(&mut self, params: Vec<Tensor>) -> Result<(), ExecError> {
        self.graph
            .load_params(&params)
            .map_err(|e| ExecError::Run(e.to_string()))
    }

    fn step(&mut self, inputs: &[Tensor]) -> Result<StepOutcome, ExecError> {
        let r = self
            .graph
            .step(inputs, &self.writeback)
            .map_err(|e| ExecError::Run(e.to_string()))?;
        Ok(StepOutcome {
            loss: r.loss as f64,
            parts: r.parts.into_iter().map(|(n, v)| (n, v as f64)).collect(),
            non_finite: r.non_finite,
            updated: r.written,
        })
    }

    fn arena_bytes(&self) -> Option<usize> {
        Some(self.graph.exe.peak_bytes())
    }

    fn params(&self) -> Result<Vec<Tensor>, AllocError> {
        self.graph.params()
    }
}

/// The interpreter keeps parameters as host tensors.
struct InterpStep {
    exec: Interp,
    params: Vec<Tensor>,
    writeback: Vec<(usize, usize)>,
}

impl StepExecutor for InterpStep {
    fn load_params(&mut self, params: Vec<Tensor>) -> Result<(), ExecError> {
        self.params = params;
        Ok(())
    }

    fn step(&mut self, inputs: &[Tensor]) -> Result<StepOutcome, ExecError> {
        let outs = self.exec.run(inputs, &self.params)?;
        let loss = outs
            .iter()
            .find(|(n, _)| OutputRole::of(n) == OutputRole::Loss)
            .map(|(_, l)| l.data[0])
            .ok_or_else(|| ExecError::Run("the step has no loss".to_string()))?;
        let non_finite = outs
            .iter()
            .find(|(_, v)| v.data.iter().any(|x| !x.is_finite()))
            .map(|(n, _)| n.clone());
        if non_finite.is_none() {
            for &(o, p) in &self.writeback {
                let (Some(slot), Some(out)) = (self.params.get_mut(p), outs.get(o)) else {
                    return Err(ExecError::Run(format!("no output #{o} or parameter #{p}")));
                };
                *slot = out.1.clone();
            }
        }
        let parts = outs
            .iter()
            .filter_map(|(n, v)| match OutputRole::of(n) {
                OutputRole::PartLoss(p) => Some((p.to_string(), v.data[0])),
                _ => None,
            })
            .collect();
        Ok(StepOutcome {
            loss,
            parts,
            non_finite,
            updated: false,
        })
    }

    fn params(&self) -> Result<Vec<Tensor>, AllocError> {
        let copy = |p: &Tensor| p.try_clone(|| format!("a copy of a parameter ({})", p.ty()));
        self.params.iter().map(copy).collect()
    }

    fn arena_bytes(&self) -> Option<usize> {
        None
    }
}

/// Compile the step graph `g` for `backend`; `writeback` pairs (output index, parameter
/// index) say which outputs replace which parameters after each step.
pub fn step_executor(
    g: &Graph,
    backend: Backend,
    writeback: Vec<(usize, usize)>,
) -> Result<Box<dyn StepExecutor>, ExecError> {
    match backend {
        Backend::Jit => {
            let opts = crate::kernels::BuildOptions {
                replaces: writeback.clone(),
                ..Default::default()
            };
            Ok(Box::new(JitStep {
                graph: runtime::compile_graph_with(g, &opts)
                    .map_err(|e| ExecError::Compile(e.to_string()))?,
                writeback,
            }))
        }
        Backend::Interp => Ok(Box::new(InterpStep {
            exec: Interp(g.clone()),
            params: vec![],
            writeback,
        })),
    }
}

/// Compile `g` for `backend` (the JIT runs the optimizing passes itself).
pub fn executor(g: &Graph, backend: Backend) -> Result<Box<dyn Executor>, ExecError> {
    match backend {
        Backend::Jit => Ok(Box::new(Jit(
            runtime::compile_graph(g).map_err(|e| ExecError::Compile(e.to_string()))?
        ))),
        Backend::Interp => Ok(Box::new(Interp(g.clone()))),
    }
}

/// Where a non-finite value first appears when `g` is evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    pub node: usize,
    pub op: String,
    pub scope: String,
    pub phase: crate::ir::Phase,
    /// What was found: "NaN", "inf", or the interpreter's error.
    pub what: String,
}

/// Whether an op's result is finite by design whatever its inputs' infinities: softmax
/// and log-softmax turn the -inf of a masked score into 0 (or -inf they own).
fn finite_by_design(op: &Op) -> bool {
    matches!(op, Op::Softmax | Op::LogSoftmax)
}

/// Re-run `g` in the interpreter, rounding every value to f32 as the JIT would, and return
/// the first node whose value is not finite when it should be (or that fails, e.g. a
/// softmax over an infinite row). `None` when every value is finite.
///
/// Some infinities are intended: the -inf of `causal_mask` and what flows from it (added
/// to attention scores, broadcast, reshaped) until a softmax or log-softmax makes it
/// finite again. Those are not reported; a NaN among them, an infinity that reaches an
/// output, or a non-finite softmax result is, at the node where it happens.
pub fn first_non_finite(g: &Graph, inputs: &[Tensor], params: &[Tensor]) -> Option<NonFinite> {
    let outputs: std::collections::HashSet<usize> =
        g.outputs.iter().map(|o| o.value.index()).collect();
    let mut values: Vec<Tensor> = Vec::with_capacity(g.nodes.len());
    // Values whose infinities are intended (they come from a causal mask).
    let mut intended = vec![false; g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        let found = |what: String| NonFinite {
            node: i,
            op: node.op.name().to_string(),
            scope: node.scope.clone(),
            phase: node.phase,
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
                    Err(e) => return Some(found(e.to_string())),
                }
            }
        };
        if let Some(v) = value.data.iter().find(|v| !v.is_finite()) {
            let from_mask = matches!(node.op, Op::CausalMask { .. })
                || node.args.iter().any(|a| intended[a.index()]);
            let excused = from_mask
                && !v.is_nan()
                && !value.data.iter().any(|v| v.is_nan())
                && !finite_by_design(&node.op)
                && !outputs.contains(&i);
            if !excused {
                let what = if v.is_nan() { "NaN" } else { "inf" };
                return Some(found(what.to_string()));
            }
            intended[i] = true;
        }
        values.push(value);
    }
    None
}
