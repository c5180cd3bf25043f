//! Algebraic simplification.
//!
//! Two sweeps. The first applies local identities, each exact in IEEE arithmetic unless
//! noted:
//! - `scale[1] x`, `add_scalar[0] x`, `x * 1`, `x + 0`, `x - 0`, `x / 1` -> `x`
//!   (`x + 0` turns `-0` into `+0`, an equal value);
//! - `x * c`, `x + c`, `x - c` with a splat `c` (a `full`, possibly broadcast or reshaped)
//!   -> `scale[c] x`, `add_scalar[c] x`, `add_scalar[-c] x`; `0 - x` -> `neg x`;
//!   `x / c` -> `scale[1/c] x` only for a power of two `c`, where `1/c` is exact;
//! - `x + x` -> `scale[2] x`;
//! - `scale[a] scale[b] x` -> `scale[a*b] x` (reassociates a product: f32 rounding only);
//!   `neg neg x` -> `x`; `scale[a] neg x` and `neg scale[a] x` -> `scale[-a] x`;
//! - reshape of a reshape, transpose of a transpose (perms composed), broadcast of a
//!   broadcast -> one op; a reshape or broadcast to the same shape and an identity
//!   transpose -> `x`.
//!
//! `add_scalar` chains are not merged: `(x + a) + b` and `x + (a + b)` can differ by far
//! more than rounding when `a` and `b` cancel.
//!
//! The second sweep sinks a step coefficient into the matmul that feeds it:
//! `scale[c](matmul(a, b))` -> `matmul(scale[c] s, other)` where `s` is the smaller operand
//! (the first on a tie), typically a weight or, for attention scores, `q`; and
//! `scale[c](matmul(a, b) + broadcast(bias))` -> `matmul(..) + broadcast(scale[c] bias)`
//! (distributivity: exact up to rounding). It fires only when the matmul (and the add) have
//! no other reader, so nothing is computed twice, and only when `s` has no more elements
//! than the scaled value, so the scale never gets more expensive.

use super::{rewrite, splat_value, use_counts, Action, Rewriter, Swept};
use crate::ir::{BinaryOp, UnaryOp, ViewOp};
use crate::ir::{Graph, IrError, Node, Op, Phase, ValueId};

/// Local algebraic identities, then scales sunk into matmuls.
pub fn simplify(g: &Graph) -> Result<Graph, IrError> {
    super::single(g, simplify_pass)
}

pub(super) fn simplify_pass(g: Graph, spare: &mut Vec<Node>) -> Result<Swept, IrError> {
    let first = rewrite(g, spare, |rw, _, n| local(rw, n))?;
    let second = sink_scales(first.graph, spare)?;
    Ok(Swept {
        graph: second.graph,
        changed: first.changed || second.changed,
    })
}

/// Replace the node by `op(args)`, itself simplified first (so `x * c` over a scale
/// merges into one scale within a sweep).
fn replace_with(rw: &mut Rewriter, op: Op, args: &[ValueId]) -> Result<Action, IrError> {
    let ty = rw.out.infer(&op, args)?;
    let node = Node {
        op,
        args: args.to_vec(),
        ty,
        scope: String::new(),
        phase: Phase::Forward,
    };
    match local(rw, &node)? {
        Action::Replace(v) => Ok(Action::Replace(v)),
        Action::Keep => Ok(Action::Replace(rw.emit(node.op, &node.args)?)),
    }
}

/// A power of two whose reciprocal is a normal number (so `x / c == x * (1 / c)`).
fn exact_reciprocal(c: f64) -> Option<f64> {
    let mantissa = c.to_bits() & ((1u64 << 52) - 1);
    let r = 1.0 / c;
    (c.is_normal() && mantissa == 0 && r.is_normal()).then_some(r)
}

fn local(rw: &mut Rewriter, n: &Node) -> Result<Action, IrError> {
    let arg = |k: usize| n.args[k];
    match &n.op {
        Op::Unary(UnaryOp::Scale { factor }) => {
            let (x, factor) = (arg(0), factor.get());
            if factor == 1.0 {
                return Ok(Action::Replace(x));
            }
            match rw.node(x).op.clone() {
                Op::Unary(UnaryOp::Scale { factor: inner }) => {
                    let y = rw.node(x).args[0];
                    let f = factor * inner.get();
                    if f == 1.0 {
                        return Ok(Action::Replace(y));
                    }
                    replace_with(rw, Op::scale(f), &[y])
                }
                Op::Unary(UnaryOp::Neg) => {
                    let y = rw.node(x).args[0];
                    replace_with(rw, Op::scale(-factor), &[y])
                }
                _ => Ok(Action::Keep),
            }
        }
        Op::Unary(UnaryOp::AddScalar { value }) if value.get() == 0.0 => {
            Ok(Action::Replace(arg(0)))
        }
        Op::Unary(UnaryOp::Neg) => {
            let x = arg(0);
            match rw.node(x).op.clone() {
                Op::Unary(UnaryOp::Neg) => Ok(Action::Replace(rw.node(x).args[0])),
                Op::Unary(UnaryOp::Scale { factor }) => {
                    let y = rw.node(x).args[0];
                    replace_with(rw, Op::scale(-factor.get()), &[y])
                }
                _ => Ok(Action::Keep),
            }
        }
        Op::View(ViewOp::Reshape { shape }) => {
            let x = arg(0);
            if rw.ty(x).shape == *shape {
                return Ok(Action::Replace(x));
            }
            if let Op::View(ViewOp::Reshape { .. }) = rw.node(x).op {
                let y = rw.node(x).args[0];
                if rw.ty(y).shape == *shape {
                    return Ok(Action::Replace(y));
                }
                return replace_with(
                    rw,
                    Op::View(ViewOp::Reshape {
                        shape: shape.clone(),
                    }),
                    &[y],
                );
            }
            Ok(Action::Keep)
        }
        Op::View(ViewOp::Transpose { perm }) => {
            let x = arg(0);
            let identity = |p: &[usize]| p.iter().enumerate().all(|(i, &q)| i == q);
            if identity(perm) {
                return Ok(Action::Replace(x));
            }
            if let Op::View(ViewOp::Transpose { perm: inner }) = &rw.node(x).op {
                // Output axis i reads inner axis perm[i], which reads input axis inner[perm[i]].
                let composed: Vec<usize> = perm.iter().map(|&p| inner[p]).collect();
                let y = rw.node(x).args[0];
                if identity(&composed) {
                    return Ok(Action::Replace(y));
                }
                return replace_with(rw, Op::View(ViewOp::Transpose { perm: composed }), &[y]);
            }
            Ok(Action::Keep)
        }
        Op::View(ViewOp::Broadcast { shape }) => {
            let x = arg(0);
            if rw.ty(x).shape == *shape {
                return Ok(Action::Replace(x));
            }
            if let Op::View(ViewOp::Broadcast { .. }) = rw.node(x).op {
                // Broadcasting is transitive: the inner source broadcasts to `shape` directly.
                let y = rw.node(x).args[0];
                if rw.ty(y).shape == *shape {
                    return Ok(Action::Replace(y));
                }
                return replace_with(
                    rw,
                    Op::View(ViewOp::Broadcast {
                        shape: shape.clone(),
                    }),
                    &[y],
                );
            }
            Ok(Action::Keep)
        }
        Op::Binary(BinaryOp::Add)
        | Op::Binary(BinaryOp::Sub)
        | Op::Binary(BinaryOp::Mul)
        | Op::Binary(BinaryOp::Div) => binary(rw, &n.op, arg(0), arg(1)),
        _ => Ok(Action::Keep),
    }
}

/// Binary ops with a splat operand.
fn binary(rw: &mut Rewriter, op: &Op, a: ValueId, b: ValueId) -> Result<Action, IrError> {
    let (sa, sb) = (splat_value(&rw.out, a), splat_value(&rw.out, b));
    match (op, sa, sb) {
        (Op::Binary(BinaryOp::Add), _, Some(c)) | (Op::Binary(BinaryOp::Sub), _, Some(c))
            if c == 0.0 =>
        {
            Ok(Action::Replace(a))
        }
        (Op::Binary(BinaryOp::Add), Some(0.0), _) => Ok(Action::Replace(b)),
        (Op::Binary(BinaryOp::Add), None, None) if a == b => replace_with(rw, Op::scale(2.0), &[a]),
        (Op::Binary(BinaryOp::Add), _, Some(c)) => replace_with(rw, Op::add_scalar(c), &[a]),
        (Op::Binary(BinaryOp::Add), Some(c), _) => replace_with(rw, Op::add_scalar(c), &[b]),
        (Op::Binary(BinaryOp::Sub), _, Some(c)) => replace_with(rw, Op::add_scalar(-c), &[a]),
        (Op::Binary(BinaryOp::Sub), Some(0.0), _) => {
            replace_with(rw, Op::Unary(UnaryOp::Neg), &[b])
        }
        (Op::Binary(BinaryOp::Mul), _, Some(c)) | (Op::Binary(BinaryOp::Div), _, Some(c))
            if c == 1.0 =>
        {
            Ok(Action::Replace(a))
        }
        (Op::Binary(BinaryOp::Mul), Some(1.0), _) => Ok(Action::Replace(b)),
        (Op::Binary(BinaryOp::Mul), _, Some(c)) => replace_with(rw, Op::scale(c), &[a]),
        (Op::Binary(BinaryOp::Mul), Some(c), _) => replace_with(rw, Op::scale(c), &[b]),
        (Op::Binary(BinaryOp::Div), _, Some(c)) => match exact_reciprocal(c) {
            Some(r) => replace_with(rw, Op::scale(r), &[a]),
            None => Ok(Action::Keep),
        },
        _ => Ok(Action::Keep),
    }
}

/// What the second sweep needs to know of a node of its input graph, which it consumes.
#[derive(Clone, Copy)]
struct Before {
    /// A matmul with exactly one reader.
    single_matmul: bool,
    /// Read exactly once.
    single: bool,
    is_add: bool,
    /// The first two args (as in the input graph), where the node has them.
    args: [ValueId; 2],
}

fn before(g: &Graph) -> Vec<Before> {
    let uses = use_counts(g);
    g.nodes
        .iter()
        .zip(&uses)
        .map(|(n, &u)| Before {
            single_matmul: u == 1 && matches!(n.op, Op::MatMul { .. }),
            single: u == 1,
            is_add: matches!(n.op, Op::Binary(BinaryOp::Add)),
            args: [0, 1].map(|k| n.args.get(k).copied().unwrap_or(ValueId(0))),
        })
        .collect()
}

/// The second sweep: `scale[c]` of a matmul (or of a matmul plus a broadcast bias) moved
/// onto the matmul's smaller operand.
fn sink_scales(g: Graph, spare: &mut Vec<Node>) -> Result<Swept, IrError> {
    let old = before(&g);
    rewrite(g, spare, |rw, i, n| {
        let Op::Unary(UnaryOp::Scale { factor }) = n.op else {
            return Ok(Action::Keep);
        };
        let factor = factor.get();
        // Only scale nodes are replaced in this sweep, so every other node of the input has
        // an identical copy in the output, and the input's use counts describe it.
        let (old_x, x) = (old[i].args[0], n.args[0]);
        let ox = old[old_x.index()];
        if !ox.single {
            return Ok(Action::Keep);
        }
        let limit = n.ty.numel();
        if ox.single_matmul {
            return match scaled_matmul(rw, x, factor, limit)? {
                Some(v) => Ok(Action::Replace(v)),
                None => Ok(Action::Keep),
            };
        }
        if !ox.is_add || ox.args[0] == ox.args[1] {
            return Ok(Action::Keep);
        }
        let new = rw.node(x).args.clone();
        for k in 0..2 {
            let (m, r) = (new[k], new[1 - k]);
            let Op::View(ViewOp::Broadcast { shape }) = rw.node(r).op.clone() else {
                continue;
            };
            if !old[ox.args[k].index()].single_matmul || !can_scale(rw, m, limit) {
                continue;
            }
            let Some(mm) = scaled_matmul(rw, m, factor, limit)? else {
                continue;
            };
            let bias = rw.node(r).args[0];
            let sb = rw.emit(Op::scale(factor), &[bias])?;
            let rb = rw.emit(Op::View(ViewOp::Broadcast { shape }), &[sb])?;
            let args = if k == 0 { [mm, rb] } else { [rb, mm] };
            return Ok(Action::Replace(rw.emit(Op::Binary(BinaryOp::Add), &args)?));
        }
        Ok(Action::Keep)
    })
}

/// The matmul operand a scale would move onto: the smaller (the first on a tie), if it has
/// at most `limit` elements.
fn scale_target(rw: &Rewriter, mm: ValueId, limit: usize) -> Option<usize> {
    let args = &rw.node(mm).args;
    let k = if rw.numel(args[1]) < rw.numel(args[0]) {
        1
    } else {
        0
    };
    (rw.numel(args[k]) <= limit).then_some(k)
}

fn can_scale(rw: &Rewriter, mm: ValueId, limit: usize) -> bool {
    scale_target(rw, mm, limit).is_some()
}

/// `matmul` with `scale[factor]` applied to its smaller operand, emitted; `None` when the
/// operand is larger than `limit`.
fn scaled_matmul(
    rw: &mut Rewriter,
    mm: ValueId,
    factor: f64,
    limit: usize,
) -> Result<Option<ValueId>, IrError> {
    let Some(k) = scale_target(rw, mm, limit) else {
        return Ok(None);
    };
    let node = rw.node(mm).clone();
    let mut args = node.args.clone();
    args[k] = rw.emit(Op::scale(factor), &[args[k]])?;
    Ok(Some(rw.emit(node.op, &args)?))
}
