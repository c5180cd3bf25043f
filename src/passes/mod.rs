//! Graph-level optimizing passes: small, named, ordered rewrites of an `ir::Graph`.
//!
//! Every pass maps a graph to a graph with the same inputs, parameters and output names,
//! whose outputs hold the same values (up to f32 rounding where a rewrite reassociates a
//! product, e.g. `scale(scale(x))`). Passes keep the topological order and the relative
//! order of surviving nodes, so printed IR diffs stay small. A node created by a rewrite
//! takes the scope and phase of the node it replaces; a node merged into another keeps the
//! earlier node's scope and phase.
//!
//! Passes other than `dce` leave the nodes they bypass in place (dead); `dce` removes them
//! and renumbers. Every pass recomputes `saved` (the forward values read by backward
//! nodes), so a joint graph stays consistent for the back end.
//!
//! | pass | what it does |
//! |---|---|
//! | `canonicalize` | commutative args (`add`, `mul`) sorted by value id |
//! | `const_fold` | ops over constants evaluated; only splat results become `full` |
//! | `cse` | identical (op, attributes, args) merged; floats compared bitwise |
//! | `simplify` | algebraic identities, and a scale sunk into the matmul feeding it |
//! | `dce` | nodes no output depends on removed |
//!
//! This module knows nothing of the language or of how ops are executed; it uses the
//! reference interpreter's `apply` for constant folding, so folding shares its semantics.

mod fold;
mod simplify;

use crate::ir::BinaryOp;
use crate::ir::{infer_type, Graph, IrError, Node, Op, Phase, Type, ValueId};
use std::collections::HashMap;

pub use fold::const_fold;
pub use simplify::simplify;

/// Every pass, in the order `optimize` runs them.
pub const PASSES: &[&str] = &["canonicalize", "const_fold", "cse", "simplify", "dce"];

/// Upper bound on rounds of the whole pipeline; real graphs settle in two or three.
const MAX_ROUNDS: usize = 16;

/// Run one pass by name (see `PASSES`).
pub fn run_pass(name: &str, g: &Graph) -> Result<Graph, IrError> {
    match name {
        "canonicalize" => canonicalize(g),
        "const_fold" => const_fold(g),
        "cse" => cse(g),
        "simplify" => simplify(g),
        "dce" => dce(g),
        _ => Err(IrError::Graph(format!(
            "unknown pass `{name}`; the passes are {}",
            PASSES.join(", ")
        ))),
    }
}

/// Every pass in `PASSES` order, repeated until a round changes nothing (at most
/// `MAX_ROUNDS` rounds). An invalid graph, or a pass failing an internal check, gives back
/// the input graph unchanged.
pub fn optimize(g: &Graph) -> Graph {
    try_optimize(g).unwrap_or_else(|_| g.clone())
}

/// `optimize`, reporting a failing pass instead of falling back to the input graph (tests
/// use this, so a broken pass cannot pass for a no-op).
pub fn try_optimize(g: &Graph) -> Result<Graph, IrError> {
    let mut cur = g.clone();
    for _ in 0..MAX_ROUNDS {
        let next = PASSES
            .iter()
            .try_fold(cur.clone(), |acc, p| run_pass(p, &acc))?;
        if unchanged(&cur, &next) {
            return Ok(next);
        }
        cur = next;
    }
    Ok(cur)
}

/// Whether a round changed nothing: structural equality (float attributes compare by their
/// bits, so a graph holding a NaN constant equals itself).
fn unchanged(a: &Graph, b: &Graph) -> bool {
    a == b
}

// ------------------------------------------------------------------------------------------
// The rewriting driver shared by the passes
// ------------------------------------------------------------------------------------------

/// Builds the output graph of one sweep over the input graph, in order.
pub(crate) struct Rewriter {
    /// The graph being built (inputs, params, outputs copied from `src`).
    pub out: Graph,
    /// Input node index -> the value that replaces it in `out`.
    pub map: Vec<ValueId>,
    scope: String,
    phase: Phase,
}

/// What a rule decides for one node (whose args are already mapped into `out`).
pub(crate) enum Action {
    /// Append the (possibly modified) node.
    Keep,
    /// Use an existing value of `out` instead; the node is not appended.
    Replace(ValueId),
}

impl Rewriter {
    pub fn ty(&self, v: ValueId) -> &Type {
        self.out.ty(v)
    }
    pub fn node(&self, v: ValueId) -> &Node {
        self.out.node(v)
    }
    pub fn numel(&self, v: ValueId) -> usize {
        self.out.ty(v).numel()
    }

    /// Append `op(args)` with the scope and phase of the node being rewritten.
    pub fn emit(&mut self, op: Op, args: &[ValueId]) -> Result<ValueId, IrError> {
        let tys: Vec<&Type> = args.iter().map(|a| self.out.ty(*a)).collect();
        let ty = infer_type(&op, &tys)?;
        let id = ValueId(self.out.nodes.len() as u32);
        self.out.nodes.push(Node {
            op,
            args: args.to_vec(),
            ty,
            scope: self.scope.clone(),
            phase: self.phase,
        });
        Ok(id)
    }

    /// The id the node under consideration gets if the rule keeps it.
    pub fn next_id(&self) -> ValueId {
        ValueId(self.out.nodes.len() as u32)
    }
}

/// One forward sweep: `rule(rw, old_index, node)` sees each node with its args mapped and
/// may modify it, emit nodes, or replace it by an existing value.
pub(crate) fn rewrite(
    g: &Graph,
    mut rule: impl FnMut(&mut Rewriter, usize, &mut Node) -> Result<Action, IrError>,
) -> Result<Graph, IrError> {
    g.verify()
        .map_err(|e| IrError::Graph(format!("invalid input graph: {e}")))?;
    let mut rw = Rewriter {
        out: Graph {
            nodes: Vec::with_capacity(g.nodes.len()),
            ..g.clone()
        },
        map: Vec::with_capacity(g.nodes.len()),
        scope: String::new(),
        phase: Phase::Forward,
    };
    rw.out.nodes.clear();
    for (i, node) in g.nodes.iter().enumerate() {
        let mut n = node.clone();
        for a in &mut n.args {
            *a = rw.map[a.index()];
        }
        rw.scope = n.scope.clone();
        rw.phase = n.phase;
        let v = match rule(&mut rw, i, &mut n)? {
            Action::Keep => {
                let id = rw.next_id();
                rw.out.nodes.push(n);
                id
            }
            Action::Replace(v) => v,
        };
        rw.map.push(v);
    }
    let Rewriter { mut out, map, .. } = rw;
    for o in &mut out.outputs {
        o.value = map[o.value.index()];
    }
    finish(out)
}

/// Recompute `saved` and check the result.
fn finish(mut g: Graph) -> Result<Graph, IrError> {
    g.saved = saved_values(&g);
    g.verify()
        .map_err(|e| IrError::Graph(format!("internal: a pass produced an invalid graph: {e}")))?;
    Ok(g)
}

/// The forward values that backward nodes read, ascending.
pub fn saved_values(g: &Graph) -> Vec<ValueId> {
    let mut saved: Vec<ValueId> = g
        .nodes
        .iter()
        .filter(|n| n.phase == Phase::Backward)
        .flat_map(|n| n.args.iter().copied())
        .filter(|a| {
            g.nodes
                .get(a.index())
                .is_some_and(|n| n.phase == Phase::Forward)
        })
        .collect();
    saved.sort();
    saved.dedup();
    saved
}

/// How many times each node is read, by nodes and by outputs.
pub(crate) fn use_counts(g: &Graph) -> Vec<usize> {
    let mut uses = vec![0; g.nodes.len()];
    for n in &g.nodes {
        for a in &n.args {
            uses[a.index()] += 1;
        }
    }
    for o in &g.outputs {
        if let Some(u) = uses.get_mut(o.value.index()) {
            *u += 1;
        }
    }
    uses
}

/// Whether a value is a splat constant: a `full`, or a shape op over one (a broadcast,
/// reshape, transpose or slice of a splat holds the same value everywhere).
pub(crate) fn splat_value(g: &Graph, v: ValueId) -> Option<f64> {
    let n = g.node(v);
    match &n.op {
        Op::Full { value, .. } => Some(value.get()),
        Op::View(_) => splat_value(g, n.args[0]),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------
// canonicalize, cse, dce
// ------------------------------------------------------------------------------------------

/// Sort the args of commutative ops (`add`, `mul`) by value id, so that `cse` sees
/// `a + b` and `b + a` as one value. IEEE addition and multiplication are commutative, so
/// this is exact.
pub fn canonicalize(g: &Graph) -> Result<Graph, IrError> {
    rewrite(g, |_, _, n| {
        let commutative = n.op.binary().is_some_and(BinaryOp::is_commutative);
        if commutative && n.args.len() == 2 && n.args[0] > n.args[1] {
            n.args.swap(0, 1);
        }
        Ok(Action::Keep)
    })
}

/// Common subexpression elimination: a node equal to an earlier one (same op, attributes
/// and args) is replaced by it. Every op is pure, so this is exact.
pub fn cse(g: &Graph) -> Result<Graph, IrError> {
    let mut seen: HashMap<(Op, Vec<ValueId>), ValueId> = HashMap::new();
    rewrite(g, |rw, _, n| {
        let key = (n.op.clone(), n.args.clone());
        if let Some(&v) = seen.get(&key) {
            return Ok(Action::Replace(v));
        }
        seen.insert(key, rw.next_id());
        Ok(Action::Keep)
    })
}

/// Dead code elimination: keep the nodes some output depends on, renumbered densely in
/// their original order.
pub fn dce(g: &Graph) -> Result<Graph, IrError> {
    g.verify()
        .map_err(|e| IrError::Graph(format!("invalid input graph: {e}")))?;
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for o in &g.outputs {
        live[o.value.index()] = true;
    }
    for i in (0..n).rev() {
        if live[i] {
            for a in &g.nodes[i].args {
                live[a.index()] = true;
            }
        }
    }
    let mut remap = vec![ValueId(0); n];
    let mut out = Graph {
        nodes: Vec::new(),
        ..g.clone()
    };
    for (i, node) in g.nodes.iter().enumerate() {
        if live[i] {
            remap[i] = ValueId(out.nodes.len() as u32);
            let mut node = node.clone();
            for a in &mut node.args {
                *a = remap[a.index()];
            }
            out.nodes.push(node);
        }
    }
    for o in &mut out.outputs {
        o.value = remap[o.value.index()];
    }
    finish(out)
}

#[cfg(test)]
mod tests;
