//! Constant folding.
//!
//! A node whose args are all constants is evaluated with the reference interpreter's
//! `apply`, so folding shares its semantics exactly. The IR has no literal-tensor op, so
//! only a result whose elements are all bitwise equal (a splat) can be written back, as a
//! `full`; other constant results (e.g. a sinusoidal table, or anything computed from it)
//! stay as nodes. Adding a literal op would touch every stage (text, interpreter, autodiff,
//! kernels) for little gain: the non-splat constants in real models are position tables
//! that the back end computes once.
//!
//! Splats are folded symbolically whatever their size (a shape op of a splat is the same
//! splat; an elementwise op is evaluated on one element; `reduce_sum` of a splat `v` over
//! `n` elements is `v * n`, which may differ from the interpreter's sequential sum by
//! rounding only). Non-splat constants are evaluated only up to `DENSE_LIMIT` elements, to
//! bound the cost of the pass.

use super::{rewrite, Action, Rewriter, Swept};
use crate::interp::apply;
use crate::ir::ops::MaskFill;
use crate::ir::{DType, Graph, IrError, Node, Op, ValueId, F64};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Largest non-splat constant (in elements) the pass evaluates.
pub const DENSE_LIMIT: usize = 4096;

#[derive(Clone)]
enum Const {
    Splat(f64),
    Dense(Tensor),
}

/// Fold nodes over constants (`full`, `sinusoidal`, and folded results) whose result is a
/// splat into a `full`.
pub fn const_fold(g: &Graph) -> Result<Graph, IrError> {
    super::single(g, const_fold_pass)
}

pub(super) fn const_fold_pass(g: Graph, spare: &mut Vec<Node>) -> Result<Swept, IrError> {
    // Dense constant values, by value id in the output graph.
    let mut dense: HashMap<ValueId, Tensor> = HashMap::new();
    rewrite(g, spare, |rw, _, n| {
        if n.op.is_leaf() {
            if let Op::Sinusoidal { len, dim, .. } = n.op {
                if len.saturating_mul(dim) <= DENSE_LIMIT {
                    if let Ok(t) = apply(&n.op, &[]) {
                        dense.insert(rw.next_id(), t);
                    }
                }
            }
            return Ok(Action::Keep);
        }
        if n.ty.dtype != DType::F32 {
            return Ok(Action::Keep);
        }
        // Checked before collecting, so the common case (a non-constant arg) allocates nothing.
        let is_const = |a: &ValueId| {
            matches!(rw.node(*a).op, Op::Full { .. })
                || (!dense.is_empty() && dense.contains_key(a))
        };
        if !n.args.iter().all(is_const) {
            return Ok(Action::Keep);
        }
        let args: Vec<Const> = n
            .args
            .iter()
            .filter_map(|&a| const_of(rw, &dense, a))
            .collect();
        let shapes: Vec<Vec<usize>> = n.args.iter().map(|a| rw.ty(*a).shape.clone()).collect();
        match evaluate(&n.op, &args, &shapes, &n.ty.shape) {
            Some(Const::Splat(value)) => {
                let v = rw.emit(
                    Op::Full {
                        value: F64(value),
                        shape: n.ty.shape.clone(),
                    },
                    &[],
                )?;
                Ok(Action::Replace(v))
            }
            Some(Const::Dense(t)) => {
                dense.insert(rw.next_id(), t);
                Ok(Action::Keep)
            }
            None => Ok(Action::Keep),
        }
    })
}

fn const_of(rw: &Rewriter, dense: &HashMap<ValueId, Tensor>, v: ValueId) -> Option<Const> {
    if let Op::Full { value, .. } = rw.node(v).op {
        return Some(Const::Splat(value.get()));
    }
    dense.get(&v).map(|t| Const::Dense(t.clone()))
}

fn splat_tensor(value: f64, shape: &[usize]) -> Tensor {
    Tensor::f32(shape.to_vec(), vec![value; shape.iter().product()])
}

/// The result as a splat if every element has the same bits.
fn classify(t: Tensor) -> Const {
    match t.data.first() {
        Some(&first) if t.data.iter().all(|x| x.to_bits() == first.to_bits()) => {
            Const::Splat(first)
        }
        _ => Const::Dense(t),
    }
}

/// The value of `op(args)` (argument shapes `shapes`, result shape `shape`), or `None`
/// when it is not worth or not possible to evaluate (too large, or `apply` reports an
/// error that must stay a run-time error).
fn evaluate(op: &Op, args: &[Const], shapes: &[Vec<usize>], shape: &[usize]) -> Option<Const> {
    let splats: Option<Vec<f64>> = args
        .iter()
        .map(|c| match c {
            Const::Splat(v) => Some(*v),
            Const::Dense(_) => None,
        })
        .collect();
    if let Some(s) = splats {
        if let Some(c) = evaluate_splats(op, &s, shapes, shape) {
            return Some(c);
        }
    }
    // Small arguments and result: materialize and evaluate directly.
    let small = |sh: &[usize]| sh.iter().product::<usize>() <= DENSE_LIMIT;
    if !small(shape) || !shapes.iter().all(|sh| small(sh)) {
        return None;
    }
    let tensors: Vec<Tensor> = args
        .iter()
        .zip(shapes)
        .map(|(c, sh)| match c {
            Const::Dense(t) => t.clone(),
            Const::Splat(v) => splat_tensor(*v, sh),
        })
        .collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    apply(op, &refs).ok().map(classify)
}

/// Splat arguments folded without materializing them. `None`: not handled symbolically.
fn evaluate_splats(op: &Op, s: &[f64], shapes: &[Vec<usize>], shape: &[usize]) -> Option<Const> {
    let one = |v: f64| Tensor::f32(vec![], vec![v]);
    let numel = |sh: &[usize]| sh.iter().product::<usize>();
    match op {
        Op::Unary(_) | Op::Binary(_) => {
            let ts: Vec<Tensor> = s.iter().map(|&v| one(v)).collect();
            let refs: Vec<&Tensor> = ts.iter().collect();
            let t = apply(op, &refs).ok()?;
            Some(Const::Splat(*t.data.first()?))
        }
        Op::View(_) => Some(Const::Splat(*s.first()?)),
        Op::Concat { .. } => {
            let first = s.first()?;
            s.iter()
                .all(|v| v.to_bits() == first.to_bits())
                .then_some(Const::Splat(*first))
        }
        Op::ReduceSum { .. } => {
            // Each output element sums n copies of the splat.
            let n = numel(shapes.first()?).checked_div(numel(shape))?;
            Some(Const::Splat(splat_sum(*s.first()?, n)))
        }
        Op::MatMul { ta, .. } => {
            let a = shapes.first()?;
            let k = if *ta { a[a.len() - 2] } else { a[a.len() - 1] };
            Some(Const::Splat(splat_sum(s[0] * s[1], k)))
        }
        Op::Softmax | Op::LogSoftmax | Op::TopKMask { .. } => {
            // Every row is the same; evaluate one.
            let last = *shape.last()?;
            let t = apply(op, &[&splat_tensor(*s.first()?, &[last])]).ok()?;
            match classify(t) {
                c @ Const::Splat(_) => Some(c),
                Const::Dense(_) => None,
            }
        }
        Op::CausalMask { fill } => {
            let f = match fill {
                MaskFill::NegInf => f64::NEG_INFINITY,
                MaskFill::Zero => 0.0,
            };
            (f.to_bits() == s.first()?.to_bits()).then_some(Const::Splat(f))
        }
        // Leaves are not folded; the indexing ops are evaluated densely.
        Op::Input { .. }
        | Op::Param { .. }
        | Op::Full { .. }
        | Op::Sinusoidal { .. }
        | Op::Gather
        | Op::ScatterAdd { .. }
        | Op::OneHot { .. } => None,
    }
}

/// The sum of `n` copies of `v` (an empty sum is 0, even for an infinite or NaN `v`).
fn splat_sum(v: f64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        v * n as f64
    }
}
