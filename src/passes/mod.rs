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
//! and renumbers. `saved` (the forward values read by backward nodes) is recomputed after
//! the last pass, so a joint graph stays consistent for the back end.
//!
//! Each pass is one linear sweep (`dce` two) over a graph it owns, and reports whether it
//! changed anything, so a round of `optimize` costs a few passes over the nodes and the
//! fixed point needs no comparison of whole graphs.
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
use crate::ir::{Graph, IrError, Node, Op, Phase, Type, ValueId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

pub use fold::const_fold;
pub use simplify::simplify;

/// Every pass, in the order `optimize` runs them.
pub const PASSES: &[&str] = &["canonicalize", "const_fold", "cse", "simplify", "dce"];

/// Upper bound on rounds of the whole pipeline; real graphs settle in two or three.
const MAX_ROUNDS: usize = 16;

/// A pass over a graph it owns, so surviving nodes move instead of being cloned. `spare`
/// is an empty node list whose memory the pass may build its result in; it gets back the
/// input's (emptied) list, so a chain of passes reuses two allocations.
type Pass = fn(Graph, &mut Vec<Node>) -> Result<Swept, IrError>;

/// What one pass made of a graph.
pub(crate) struct Swept {
    pub graph: Graph,
    /// Whether the graph differs from the input (a pass that sets it needlessly only costs
    /// `optimize` one more round).
    pub changed: bool,
}

fn pass_named(name: &str) -> Result<Pass, IrError> {
    match name {
        "canonicalize" => Ok(canonicalize_pass),
        "const_fold" => Ok(fold::const_fold_pass),
        "cse" => Ok(cse_pass),
        "simplify" => Ok(simplify::simplify_pass),
        "dce" => Ok(dce_pass),
        _ => Err(IrError::Graph(format!(
            "unknown pass `{name}`; the passes are {}",
            PASSES.join(", ")
        ))),
    }
}

/// Run one pass by name (see `PASSES`) on a verified graph; the result is verified too.
pub fn run_pass(name: &str, g: &Graph) -> Result<Graph, IrError> {
    let pass = pass_named(name)?;
    single(g, pass)
}

fn single(g: &Graph, pass: Pass) -> Result<Graph, IrError> {
    check_input(g)?;
    finish(pass(g.clone(), &mut Vec::new())?.graph)
}

/// Every pass in `PASSES` order, repeated until every pass in turn leaves the graph
/// unchanged (at most `MAX_ROUNDS` rounds). An invalid graph, or a pass failing an internal check, gives back
/// the input graph unchanged.
pub fn optimize(g: &Graph) -> Graph {
    try_optimize(g).unwrap_or_else(|_| g.clone())
}

/// `optimize`, reporting a failing pass instead of falling back to the input graph (tests
/// use this, so a broken pass cannot pass for a no-op).
///
/// The graph is verified before the first pass and after the last; debug builds (and so
/// the tests) also verify after every pass, which release builds skip because a round is
/// otherwise a handful of linear sweeps and verification would dominate it.
pub fn try_optimize(g: &Graph) -> Result<Graph, IrError> {
    check_input(g)?;
    let passes: Vec<Pass> = PASSES
        .iter()
        .map(|p| pass_named(p))
        .collect::<Result<_, _>>()?;
    let mut cur = g.clone();
    let mut spare = Vec::new();
    // Passes are pure functions of the graph, so once every pass in turn has left it
    // unchanged it is the fixed point, even in the middle of a round; the rest of the round
    // and the next one would change nothing.
    let mut unchanged_run = 0;
    'rounds: for _ in 0..MAX_ROUNDS {
        for pass in &passes {
            let swept = pass(cur, &mut spare)?;
            if cfg!(debug_assertions) {
                swept.graph.verify().map_err(internal)?;
            }
            unchanged_run = if swept.changed { 0 } else { unchanged_run + 1 };
            cur = swept.graph;
            if unchanged_run == passes.len() {
                break 'rounds;
            }
        }
    }
    finish(cur)
}

fn check_input(g: &Graph) -> Result<(), IrError> {
    g.verify()
        .map_err(|e| IrError::Graph(format!("invalid input graph: {e}")))
}

fn internal(e: IrError) -> IrError {
    IrError::Graph(format!("internal: a pass produced an invalid graph: {e}"))
}

// ------------------------------------------------------------------------------------------
// The rewriting driver shared by the passes
// ------------------------------------------------------------------------------------------

/// Builds the output graph of one sweep over the input graph, in order.
pub(crate) struct Rewriter {
    /// The graph being built (inputs, params, outputs taken from the input graph).
    pub out: Graph,
    /// Input node index -> the value that replaces it in `out`.
    pub map: Vec<ValueId>,
    /// Set by a rule that modifies a node it keeps; replacing a node sets it too.
    pub changed: bool,
    /// The scope of the node being rewritten, lent by it for the nodes the rule emits.
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
        let ty = self.out.infer(&op, args)?;
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

/// One forward sweep over a valid graph: `rule(rw, old_index, node)` sees each node with
/// its args mapped and may modify it, emit nodes, or replace it by an existing value.
/// `saved` is only renumbered (a replaced value may no longer be a forward value read by
/// the backward pass); `finish` recomputes it once the passes are done.
pub(crate) fn rewrite(
    mut g: Graph,
    spare: &mut Vec<Node>,
    mut rule: impl FnMut(&mut Rewriter, usize, &mut Node) -> Result<Action, IrError>,
) -> Result<Swept, IrError> {
    let mut nodes = std::mem::replace(&mut g.nodes, std::mem::take(spare));
    g.nodes.clear();
    g.nodes.reserve(nodes.len());
    let mut rw = Rewriter {
        out: g,
        map: Vec::with_capacity(nodes.len()),
        changed: false,
        scope: String::new(),
        phase: Phase::Forward,
    };
    for (i, mut n) in nodes.drain(..).enumerate() {
        for a in &mut n.args {
            *a = rw.map[a.index()];
        }
        rw.scope = std::mem::take(&mut n.scope);
        rw.phase = n.phase;
        let start = rw.out.nodes.len();
        let v = match rule(&mut rw, i, &mut n)? {
            Action::Keep => {
                n.scope = std::mem::take(&mut rw.scope);
                // A rule that emitted nodes changed the graph even if it keeps this one.
                rw.changed |= rw.out.nodes.len() != start;
                let id = rw.next_id();
                rw.out.nodes.push(n);
                id
            }
            Action::Replace(v) => {
                rw.changed = true;
                v
            }
        };
        rw.map.push(v);
    }
    *spare = nodes;
    let Rewriter {
        mut out,
        map,
        changed,
        ..
    } = rw;
    for o in &mut out.outputs {
        o.value = map[o.value.index()];
    }
    out.saved = out
        .saved
        .iter()
        .filter_map(|s| map.get(s.index()).copied())
        .collect();
    Ok(Swept {
        graph: out,
        changed,
    })
}

/// Recompute `saved` and check the result.
fn finish(mut g: Graph) -> Result<Graph, IrError> {
    g.saved = saved_values(&g);
    g.verify().map_err(internal)?;
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
    single(g, canonicalize_pass)
}

fn canonicalize_pass(g: Graph, spare: &mut Vec<Node>) -> Result<Swept, IrError> {
    rewrite(g, spare, |rw, _, n| {
        let commutative = n.op.binary().is_some_and(BinaryOp::is_commutative);
        if commutative && n.args.len() == 2 && n.args[0] > n.args[1] {
            n.args.swap(0, 1);
            rw.changed = true;
        }
        Ok(Action::Keep)
    })
}

/// Common subexpression elimination: a node equal to an earlier one (same op, attributes
/// and args) is replaced by it. Every op is pure, so this is exact.
pub fn cse(g: &Graph) -> Result<Graph, IrError> {
    single(g, cse_pass)
}

fn cse_pass(g: Graph, spare: &mut Vec<Node>) -> Result<Swept, IrError> {
    // Kept nodes by the hash of (op, args): the latest in `heads`, each one's predecessor
    // with the same hash in `older` (indexed by output id; cse only keeps or replaces, so
    // every output node is a kept one). Keys are never cloned, so a sweep allocates nothing
    // per node.
    let mut heads: HashMap<u64, ValueId, BuildHasherDefault<FxHasher>> =
        HashMap::with_capacity_and_hasher(g.nodes.len(), Default::default());
    let mut older: Vec<Option<ValueId>> = Vec::with_capacity(g.nodes.len());
    rewrite(g, spare, |rw, _, n| {
        let mut h = FxHasher::default();
        (&n.op, &n.args).hash(&mut h);
        let h = h.finish();
        let mut cand = heads.get(&h).copied();
        while let Some(v) = cand {
            let m = rw.node(v);
            if m.op == n.op && m.args == n.args {
                return Ok(Action::Replace(v));
            }
            cand = older[v.index()];
        }
        older.push(heads.insert(h, rw.next_id()));
        Ok(Action::Keep)
    })
}

/// FxHash's multiply-rotate hasher: several times faster than SipHash on CSE's small keys,
/// and CSE hashes only the compiler's own graph, so there is no adversary to resist.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i.into());
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i.into());
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weak, and hash tables index by them.
        self.0.rotate_left(26)
    }
}

/// Dead code elimination: keep the nodes some output depends on, renumbered densely in
/// their original order.
pub fn dce(g: &Graph) -> Result<Graph, IrError> {
    single(g, dce_pass)
}

fn dce_pass(mut g: Graph, spare: &mut Vec<Node>) -> Result<Swept, IrError> {
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
    if live.iter().all(|&l| l) {
        return Ok(Swept {
            graph: g,
            changed: false,
        });
    }
    let mut remap = vec![ValueId(0); n];
    let mut nodes = std::mem::replace(&mut g.nodes, std::mem::take(spare));
    g.nodes.clear();
    for (i, mut node) in nodes.drain(..).enumerate() {
        if live[i] {
            remap[i] = ValueId(g.nodes.len() as u32);
            for a in &mut node.args {
                *a = remap[a.index()];
            }
            g.nodes.push(node);
        }
    }
    *spare = nodes;
    for o in &mut g.outputs {
        o.value = remap[o.value.index()];
    }
    // Saved values that died are dropped (`finish` recomputes the list anyway).
    g.saved = g
        .saved
        .iter()
        .filter(|s| live.get(s.index()).copied().unwrap_or(false))
        .map(|s| remap[s.index()])
        .collect();
    Ok(Swept {
        graph: g,
        changed: true,
    })
}

#[cfg(test)]
mod tests;
