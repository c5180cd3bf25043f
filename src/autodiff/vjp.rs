//! The vector-Jacobian product of every op, in one `match`.
//!
//! `vjp` receives the forward node `y = op(x...)`, the gradient `dy` of the loss with
//! respect to `y`, and which arguments want a gradient; it appends the backward nodes and
//! returns one gradient per argument (`None` where not wanted or not defined). Rules read
//! forward values (inputs or the output `y`) freely; those become the graph's saved values.

use crate::ir::ops::MaskFill;
use crate::ir::{BinaryOp, UnaryOp, ViewOp};
use crate::ir::{GraphBuilder, IrError, Op, ValueId};

type Grads = Result<Vec<Option<ValueId>>, IrError>;

pub(super) fn vjp(b: &mut GraphBuilder, y: ValueId, dy: ValueId, wants: &[bool]) -> Grads {
    let node = b.graph.node(y).clone();
    let args = node.args.clone();
    let x = |i: usize| args[i];
    let want = |i: usize| wants.get(i).copied().unwrap_or(false);
    let shape = node.ty.shape.clone();
    // Build the gradient of argument `i` only when it is wanted.
    macro_rules! only_if {
        ($i:expr, $e:expr) => {
            if want($i) {
                Some($e)
            } else {
                None
            }
        };
    }
    let g = match &node.op {
        // Leaves have no arguments.
        Op::Input { .. } | Op::Param { .. } | Op::Full { .. } | Op::Sinusoidal { .. } => vec![],
        // No gradient flows through: the argument gets none.
        Op::Unary(UnaryOp::StopGradient) => vec![None],
        // dx = -dy
        Op::Unary(UnaryOp::Neg) => vec![only_if!(0, b.unary(Op::Unary(UnaryOp::Neg), dy)?)],
        // dx = dy * y
        Op::Unary(UnaryOp::Exp) => vec![only_if!(0, b.mul(dy, y)?)],
        // dx = dy / x
        Op::Unary(UnaryOp::Log) => vec![only_if!(0, b.div(dy, x(0))?)],
        // dx = dy / (2 y)
        Op::Unary(UnaryOp::Sqrt) => vec![only_if!(0, {
            let q = b.div(dy, y)?;
            b.scale(q, 0.5)?
        })],
        // dx = -0.5 * dy * y^3
        Op::Unary(UnaryOp::Rsqrt) => vec![only_if!(0, {
            let y2 = b.mul(y, y)?;
            let y3 = b.mul(y2, y)?;
            let t = b.mul(dy, y3)?;
            b.scale(t, -0.5)?
        })],
        // dx = -dy * y^2
        Op::Unary(UnaryOp::Recip) => vec![only_if!(0, {
            let y2 = b.mul(y, y)?;
            let t = b.mul(dy, y2)?;
            b.unary(Op::Unary(UnaryOp::Neg), t)?
        })],
        // dx = dy * (1 - y^2)
        Op::Unary(UnaryOp::Tanh) => vec![only_if!(0, {
            let y2 = b.mul(y, y)?;
            let n = b.unary(Op::Unary(UnaryOp::Neg), y2)?;
            let d = b.add_scalar(n, 1.0)?;
            b.mul(dy, d)?
        })],
        // dx = dy * y * (1 - y)
        Op::Unary(UnaryOp::Sigmoid) => vec![only_if!(0, {
            let n = b.unary(Op::Unary(UnaryOp::Neg), y)?;
            let one_minus = b.add_scalar(n, 1.0)?;
            let d = b.mul(y, one_minus)?;
            b.mul(dy, d)?
        })],
        // dx = dy * relu'(x)
        Op::Unary(UnaryOp::Relu) => vec![only_if!(
            0,
            b.push(Op::Binary(BinaryOp::ReluGrad), &[x(0), dy])?
        )],
        // dx = dy * gelu'(x)
        Op::Unary(UnaryOp::Gelu) => vec![only_if!(
            0,
            b.push(Op::Binary(BinaryOp::GeluGrad), &[x(0), dy])?
        )],
        // dx = dy * gelu_tanh'(x)
        Op::Unary(UnaryOp::GeluTanh) => vec![only_if!(
            0,
            b.push(Op::Binary(BinaryOp::GeluTanhGrad), &[x(0), dy])?
        )],
        // dx = dy * silu'(x)
        Op::Unary(UnaryOp::Silu) => vec![only_if!(
            0,
            b.push(Op::Binary(BinaryOp::SiluGrad), &[x(0), dy])?
        )],
        // dx = factor * dy
        Op::Unary(UnaryOp::Scale { factor }) => vec![only_if!(0, b.scale(dy, factor.get())?)],
        // dx = dy
        Op::Unary(UnaryOp::AddScalar { .. }) => vec![only_if!(0, dy)],
        // da = dy, db = dy
        Op::Binary(BinaryOp::Add) => vec![only_if!(0, dy), only_if!(1, dy)],
        // da = dy, db = -dy
        Op::Binary(BinaryOp::Sub) => vec![
            only_if!(0, dy),
            only_if!(1, b.unary(Op::Unary(UnaryOp::Neg), dy)?),
        ],
        // da = dy * b, db = dy * a
        Op::Binary(BinaryOp::Mul) => {
            vec![only_if!(0, b.mul(dy, x(1))?), only_if!(1, b.mul(dy, x(0))?)]
        }
        // da = dy / b, db = -(dy / b) * y
        Op::Binary(BinaryOp::Div) => {
            if want(0) || want(1) {
                let da = b.div(dy, x(1))?;
                let db = only_if!(1, {
                    let t = b.mul(da, y)?;
                    b.unary(Op::Unary(UnaryOp::Neg), t)?
                });
                vec![only_if!(0, da), db]
            } else {
                vec![None, None]
            }
        }
        // Derivative ops are emitted by this pass and are not differentiated again.
        Op::Binary(BinaryOp::ReluGrad)
        | Op::Binary(BinaryOp::GeluGrad)
        | Op::Binary(BinaryOp::GeluTanhGrad)
        | Op::Binary(BinaryOp::SiluGrad) => {
            return Err(IrError::Graph(format!(
                "{y}: cannot differentiate {} (second derivatives are not supported)",
                node.op.name()
            )))
        }
        // dx = broadcast(dy with the reduced axes restored as size 1)
        Op::ReduceSum { axes, keep_dims } => vec![only_if!(0, {
            let xs = b.shape(x(0));
            let kept: Vec<usize> = xs
                .iter()
                .enumerate()
                .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                .collect();
            let d = if *keep_dims { dy } else { b.reshape(dy, kept)? };
            b.broadcast(d, xs)?
        })],
        // dx = y * (dy - sum(dy * y, last, keep))
        Op::Softmax => vec![only_if!(0, {
            let last = shape.len() - 1;
            let t = b.mul(dy, y)?;
            let s = b.reduce_sum(t, vec![last], true)?;
            let sb = b.broadcast(s, shape.clone())?;
            let d = b.sub(dy, sb)?;
            b.mul(y, d)?
        })],
        // dx = dy - exp(y) * sum(dy, last, keep)
        Op::LogSoftmax => vec![only_if!(0, {
            let last = shape.len() - 1;
            let s = b.reduce_sum(dy, vec![last], true)?;
            let sb = b.broadcast(s, shape.clone())?;
            let p = b.unary(Op::Unary(UnaryOp::Exp), y)?;
            let t = b.mul(p, sb)?;
            b.sub(dy, t)?
        })],
        // Piecewise constant: its derivative is zero wherever it is defined, so the input gets
        // none (autodiff does not even mark the mask as needing a gradient).
        Op::TopKMask { .. } => vec![None],
        // dx = reshape(dy, shape(x))
        Op::View(ViewOp::Reshape { .. }) => vec![only_if!(0, {
            let xs = b.shape(x(0));
            b.reshape(dy, xs)?
        })],
        // dx = transpose(dy, perm^-1)
        Op::View(ViewOp::Transpose { perm }) => vec![only_if!(0, {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            if inv.iter().enumerate().all(|(i, &p)| i == p) {
                dy
            } else {
                b.transpose(dy, inv)?
            }
        })],
        // dx = reshape(reduce_sum(dy, expanded axes), shape(x))
        Op::View(ViewOp::Broadcast { shape: to }) => vec![only_if!(0, {
            let xs = b.shape(x(0));
            let off = to.len() - xs.len();
            let axes: Vec<usize> = (0..to.len())
                .filter(|&i| i < off || (xs[i - off] == 1 && to[i] != 1))
                .collect();
            let r = if axes.is_empty() {
                dy
            } else {
                b.reduce_sum(dy, axes, false)?
            };
            b.reshape(r, xs)?
        })],
        // dx = concat(zeros, dy, zeros) along the axis
        Op::View(ViewOp::Slice { axis, start, end }) => vec![only_if!(0, {
            let xs = b.shape(x(0));
            let mut parts = Vec::new();
            if *start > 0 {
                let mut s = xs.clone();
                s[*axis] = *start;
                parts.push(b.full(0.0, s)?);
            }
            parts.push(dy);
            if *end < xs[*axis] {
                let mut s = xs.clone();
                s[*axis] = xs[*axis] - end;
                parts.push(b.full(0.0, s)?);
            }
            if parts.len() == 1 {
                dy
            } else {
                b.push(Op::Concat { axis: *axis }, &parts)?
            }
        })],
        // dx_i = slice(dy, the range x_i occupies along the axis)
        Op::Concat { axis } => {
            let mut out = Vec::with_capacity(args.len());
            let mut start = 0;
            for (i, &a) in args.iter().enumerate() {
                let len = b.shape(a)[*axis];
                let end = start + len;
                out.push(only_if!(
                    i,
                    if len == shape[*axis] {
                        dy
                    } else {
                        b.push(
                            Op::View(ViewOp::Slice {
                                axis: *axis,
                                start,
                                end,
                            }),
                            &[dy],
                        )?
                    }
                ));
                start = end;
            }
            out
        }
        // C = op(A) op(B): d op(A) = dC op(B)^T, d op(B) = op(A)^T dC
        Op::MatMul { ta, tb } => matmul_vjp(b, x(0), x(1), dy, *ta, *tb, want(0), want(1))?,
        // dtable = scatter_add(ids, dy); ids get none
        Op::Gather => {
            let rows = b.shape(x(0))[0];
            vec![
                only_if!(0, b.push(Op::ScatterAdd { rows }, &[x(1), dy])?),
                None,
            ]
        }
        // dsrc = gather(dy, ids); ids get none
        Op::ScatterAdd { .. } => vec![None, only_if!(1, b.push(Op::Gather, &[dy, x(0)])?)],
        // i32 ids carry no gradient
        Op::OneHot { .. } => vec![None],
        // dx = dy with the masked entries zeroed
        Op::CausalMask { .. } => {
            vec![only_if!(
                0,
                b.push(
                    Op::CausalMask {
                        fill: MaskFill::Zero
                    },
                    &[dy]
                )?
            )]
        }
    };
    if g.len() != args.len() {
        return Err(IrError::Graph(format!(
            "internal: {} VJP gave {} gradients",
            node.op.name(),
            g.len()
        )));
    }
    Ok(g)
}

/// Gradients of `C = op(A) op(B)` (op = optional transpose of the last two axes).
/// A rank-2 `B` shared by a batched `A` gets the sum over the batch, computed as one
/// 2-D matmul over the flattened rows.
#[allow(clippy::too_many_arguments)]
fn matmul_vjp(
    b: &mut GraphBuilder,
    a: ValueId,
    bm: ValueId,
    dc: ValueId,
    ta: bool,
    tb: bool,
    want_a: bool,
    want_b: bool,
) -> Grads {
    let ra = b.ty(a).rank();
    let rb = b.ty(bm).rank();
    let shared = rb == 2 && ra > 2;
    let da = if want_a {
        Some(match (ta, tb) {
            // dA = dC B^T
            (false, false) => b.matmul(dc, bm, false, true)?,
            // dA = dC B
            (false, true) => b.matmul(dc, bm, false, false)?,
            // dA = (dC B^T)^T, as B dC^T when B is batched like dC
            (true, false) if !shared => b.matmul(bm, dc, false, true)?,
            (true, false) => {
                let t = b.matmul(dc, bm, false, true)?;
                b.transpose(t, swap_last2(ra))?
            }
            // dA = (dC B)^T, as B^T dC^T when B is batched like dC
            (true, true) if !shared => b.matmul(bm, dc, true, true)?,
            (true, true) => {
                let t = b.matmul(dc, bm, false, false)?;
                b.transpose(t, swap_last2(ra))?
            }
        })
    } else {
        None
    };
    let db = if want_b {
        Some(if shared {
            // Stack the batch's rows: sum_b op(A_b)^T dC_b = op(A)_flat^T dC_flat.
            let a_rows = if ta {
                b.transpose(a, swap_last2(ra))?
            } else {
                a
            };
            let s = b.shape(a_rows);
            let k = s[ra - 1];
            let rows: usize = s[..ra - 1].iter().product();
            let a2 = b.reshape(a_rows, vec![rows, k])?;
            let n = b.shape(dc)[ra - 1];
            let dc2 = b.reshape(dc, vec![rows, n])?;
            if tb {
                // dB = dC^T op(A)
                b.matmul(dc2, a2, true, false)?
            } else {
                // dB = op(A)^T dC
                b.matmul(a2, dc2, true, false)?
            }
        } else {
            match (ta, tb) {
                // dB = A^T dC
                (false, false) => b.matmul(a, dc, true, false)?,
                // dB = dC^T A
                (false, true) => b.matmul(dc, a, true, false)?,
                // dB = A dC
                (true, false) => b.matmul(a, dc, false, false)?,
                // dB = dC^T A^T
                (true, true) => b.matmul(dc, a, true, true)?,
            }
        })
    } else {
        None
    };
    Ok(vec![da, db])
}

/// The permutation swapping the last two of `rank` axes.
fn swap_last2(rank: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    p.swap(rank - 2, rank - 1);
    p
}
