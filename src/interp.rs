//! The reference interpreter: the one correctness oracle for the JIT, the passes and autodiff.
//!
//! Plain and direct on purpose: every op is a few obvious loops over row-major `f64` data,
//! whatever the IR dtype (i32 tensors hold exact integers). Nothing here is fast.
//!
//! Semantics are the docs on each [`Op`], plus these decisions:
//! - elementwise ops follow IEEE f64 (`log(-1)` is NaN, `1/0` is inf);
//! - `relu'(0) = 0`, so `ReluGrad` passes `dy` only where `x > 0`;
//! - `Softmax`/`LogSoftmax` subtract the row max; a row whose max is `-inf` (every entry
//!   masked) or `+inf` is an error rather than a silent NaN row (causally masked rows always
//!   keep their diagonal, so elaborated models never hit it); NaN entries propagate;
//! - `TopKMask` ranks each entry by a count (the entries greater than it, or equal at a lower
//!   index), quadratic in the row length, which is small (a router's experts);
//! - gather / scatter_add / one_hot indices that are not integers or are out of range are
//!   errors (user batches can hold bad token ids);
//! - every node's type is re-derived with `infer_type` and must equal the node's type, so an
//!   ill-formed graph is an error, never a panic.

use crate::ir::ops::MaskFill;
use crate::ir::{infer_type, DType, Graph, Op, Type};
use crate::ir::{BinaryOp, UnaryOp, ViewOp};
use crate::tensor::{try_buffer, try_collect, try_copy, try_filled, AllocError, Tensor};

/// Leaf values, in graph order: `inputs[i]` feeds `g.inputs[i]`, `params[i]` feeds `g.params[i]`.
#[derive(Clone, Copy, Debug)]
pub struct Env<'a> {
    pub inputs: &'a [Tensor],
    pub params: &'a [Tensor],
}

#[derive(Debug, Clone, PartialEq)]
pub struct InterpError {
    /// The node being evaluated, if the error belongs to one.
    pub node: Option<usize>,
    /// Complete message; names the node and op when `node` is set.
    pub message: String,
    /// Set when the error is a buffer the allocator refused (the model is too large for the
    /// machine), not a property of the graph or its inputs.
    pub alloc: Option<AllocError>,
}

impl std::fmt::Display for InterpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InterpError {}

fn env_error(message: String) -> InterpError {
    InterpError {
        node: None,
        message,
        alloc: None,
    }
}

/// Evaluate every node; returns all node values (index = node index).
pub fn eval(g: &Graph, env: &Env) -> Result<Vec<Tensor>, InterpError> {
    check_env(g, env)?;
    let mut values: Vec<Tensor> = Vec::with_capacity(g.nodes.len());
    for (i, node) in g.nodes.iter().enumerate() {
        let at = |detail: String| InterpError {
            node: Some(i),
            message: format!("{detail} at node %{i} ({})", node.op.name()),
            alloc: None,
        };
        let what = || format!("node %{i} ({}, {})", node.op.name(), node.ty);
        let refused = |alloc: AllocError| InterpError {
            node: Some(i),
            message: alloc.to_string(),
            alloc: Some(alloc),
        };
        if let Some(a) = node.args.iter().find(|a| a.index() >= i) {
            return Err(at(format!("argument {a} is not defined before use")));
        }
        let args: Vec<&Tensor> = node.args.iter().map(|a| &values[a.index()]).collect();
        let value = match &node.op {
            Op::Input { index } => env
                .inputs
                .get(*index)
                .ok_or_else(|| at(format!("input #{index} does not exist")))?
                .try_clone(what)
                .map_err(refused)?,
            Op::Param { index } => env
                .params
                .get(*index)
                .ok_or_else(|| at(format!("param #{index} does not exist")))?
                .try_clone(what)
                .map_err(refused)?,
            op => {
                let tys: Vec<Type> = args.iter().map(|t| t.ty()).collect();
                let ty_refs: Vec<&Type> = tys.iter().collect();
                let ty = infer_type(op, &ty_refs).map_err(|e| at(e.to_string()))?;
                if ty != node.ty {
                    return Err(at(format!(
                        "derives type {ty} but the node says {}",
                        node.ty
                    )));
                }
                apply(op, &args).map_err(|e| match e.alloc {
                    Some(a) => refused(AllocError { what: what(), ..a }),
                    None => at(e.detail),
                })?
            }
        };
        if value.ty() != node.ty {
            return Err(at(format!(
                "value has type {} but the node says {}",
                value.ty(),
                node.ty
            )));
        }
        values.push(value);
    }
    Ok(values)
}

/// Evaluate and return the named outputs in graph order.
pub fn run(g: &Graph, env: &Env) -> Result<Vec<(String, Tensor)>, InterpError> {
    let values = eval(g, env)?;
    let mut out = Vec::with_capacity(g.outputs.len());
    for o in &g.outputs {
        let i = o.value.index();
        let v = values.get(i).ok_or_else(|| {
            env_error(format!("output {} refers to undefined {}", o.name, o.value))
        })?;
        let what = || format!("output {}", o.name);
        let v = v.try_clone(what).map_err(|alloc| InterpError {
            node: Some(i),
            message: alloc.to_string(),
            alloc: Some(alloc),
        })?;
        out.push((o.name.clone(), v));
    }
    Ok(out)
}

/// Check that the environment matches the graph's inputs and parameters.
pub fn check_env(g: &Graph, env: &Env) -> Result<(), InterpError> {
    if env.inputs.len() != g.inputs.len() {
        return Err(env_error(format!(
            "graph {} takes {} input(s), got {}",
            g.name,
            g.inputs.len(),
            env.inputs.len()
        )));
    }
    if env.params.len() != g.params.len() {
        return Err(env_error(format!(
            "graph {} has {} parameter(s), got {}",
            g.name,
            g.params.len(),
            env.params.len()
        )));
    }
    for (inp, t) in g.inputs.iter().zip(env.inputs) {
        check_tensor(&format!("input {}", inp.name), &inp.ty, t)?;
        if t.dtype == DType::I32 {
            if let Some((k, v)) = t.data.iter().enumerate().find(|(_, v)| !is_i32(**v)) {
                return Err(env_error(format!(
                    "input {} is i32 but element {k} is {v}",
                    inp.name
                )));
            }
        }
    }
    for (p, t) in g.params.iter().zip(env.params) {
        check_tensor(&format!("parameter {}", p.name), &p.ty(), t)?;
    }
    Ok(())
}

fn is_i32(v: f64) -> bool {
    v.fract() == 0.0 && v >= i32::MIN as f64 && v <= i32::MAX as f64
}

fn check_tensor(what: &str, ty: &Type, t: &Tensor) -> Result<(), InterpError> {
    if t.ty() != *ty {
        return Err(env_error(format!("{what} expects {ty}, got {}", t.ty())));
    }
    if t.data.len() != ty.numel() {
        return Err(env_error(format!(
            "{what} has {} elements, its shape {:?} needs {}",
            t.data.len(),
            t.shape,
            ty.numel()
        )));
    }
    Ok(())
}

/// Row-major strides of `shape` (in elements).
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Multi-index of linear index `lin` in `shape`.
fn unravel(mut lin: usize, shape: &[usize], idx: &mut [usize]) {
    for a in (0..shape.len()).rev() {
        idx[a] = lin % shape[a];
        lin /= shape[a];
    }
}

/// Output element `o` (multi-index over `out_shape`) reads `src[offset + sum_i o[i] * step[i]]`.
/// Transpose, broadcast (step 0) and slice are all this copy.
/// `out` is an empty buffer with room for the result.
fn strided_copy(
    src: &[f64],
    offset: usize,
    out_shape: &[usize],
    step: &[usize],
    mut out: Vec<f64>,
) -> Vec<f64> {
    let n: usize = out_shape.iter().product();
    let mut idx = vec![0; out_shape.len()];
    out.extend((0..n).map(|lin| {
        unravel(lin, out_shape, &mut idx);
        let at: usize = idx.iter().zip(step).map(|(i, s)| i * s).sum();
        src[offset + at]
    }));
    out
}

fn f32_tensor(shape: Vec<usize>, data: Vec<f64>) -> Tensor {
    Tensor {
        dtype: DType::F32,
        shape,
        data,
    }
}

fn arg<'t>(args: &[&'t Tensor], i: usize, op: &Op) -> Result<&'t Tensor, String> {
    args.get(i)
        .copied()
        .ok_or_else(|| format!("{} is missing argument {i}", op.name()))
}

/// An index read from an i32 tensor, checked to be an integer in `0..limit`.
fn index(v: f64, limit: usize, what: &str, of: &str) -> Result<usize, String> {
    if v.fract() != 0.0 || !v.is_finite() {
        return Err(format!("{what} {v} is not an integer"));
    }
    if v < 0.0 || v >= limit as f64 {
        return Err(format!("{what} {v} out of range for {of} {limit}"));
    }
    Ok(v as usize)
}

/// An op that cannot be applied to its arguments: a shape rule, an element count, or an
/// index out of range.
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    pub op: &'static str,
    pub detail: String,
    /// Set when the allocator refused the result's buffer.
    pub alloc: Option<AllocError>,
}

/// Why `apply_checked` failed: the arguments, or the allocator.
enum Fail {
    Detail(String),
    Alloc(AllocError),
}

impl From<String> for Fail {
    fn from(detail: String) -> Fail {
        Fail::Detail(detail)
    }
}

impl From<AllocError> for Fail {
    fn from(e: AllocError) -> Fail {
        Fail::Alloc(e)
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for OpError {}

/// Apply one non-leaf op to argument values. The arguments must already satisfy the op's
/// shape rule (`eval` checks with `infer_type`); violations are errors, not panics.
/// Usable on its own, e.g. for constant folding.
pub fn apply(op: &Op, args: &[&Tensor]) -> Result<Tensor, OpError> {
    apply_checked(op, args).map_err(|fail| match fail {
        Fail::Detail(detail) => OpError {
            op: op.name(),
            detail,
            alloc: None,
        },
        Fail::Alloc(a) => OpError {
            op: op.name(),
            detail: a.to_string(),
            alloc: Some(a),
        },
    })
}

fn apply_checked(op: &Op, args: &[&Tensor]) -> Result<Tensor, Fail> {
    let out_ty = {
        let tys: Vec<Type> = args.iter().map(|t| t.ty()).collect();
        let refs: Vec<&Type> = tys.iter().collect();
        let ty = infer_type(op, &refs).map_err(|e| e.to_string())?;
        if let Some(t) = args.iter().find(|t| t.data.len() != t.ty().numel()) {
            return Err(Fail::Detail(format!(
                "argument {} holds {} elements",
                t.ty(),
                t.data.len()
            )));
        }
        ty
    };
    // Every result buffer is as large as the result's type says; `eval` names the node.
    let n = out_ty.numel();
    let what = || format!("the result of {} ({out_ty})", op.name());
    let unary = |f: &dyn Fn(f64) -> f64| -> Result<Tensor, Fail> {
        let x = arg(args, 0, op)?;
        let data = try_collect(n, x.data.iter().map(|&v| f(v)), what)?;
        Ok(f32_tensor(x.shape.clone(), data))
    };
    let binary = |f: &dyn Fn(f64, f64) -> f64| -> Result<Tensor, Fail> {
        let (a, b) = (arg(args, 0, op)?, arg(args, 1, op)?);
        let items = a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y));
        Ok(f32_tensor(a.shape.clone(), try_collect(n, items, what)?))
    };
    match op {
        Op::Input { .. } | Op::Param { .. } => Err(Fail::Detail(format!(
            "{} takes its value from the environment",
            op.name()
        ))),
        Op::Full { value, shape } => {
            Ok(f32_tensor(shape.clone(), try_filled(n, value.get(), what)?))
        }
        Op::Sinusoidal { len, dim, base } => {
            Ok(sinusoidal((*len, *dim, base.get()), try_buffer(n, what)?))
        }

        Op::Unary(UnaryOp::Neg) => unary(&|x| -x),
        Op::Unary(UnaryOp::StopGradient) => unary(&|x| x),
        Op::Unary(UnaryOp::Exp) => unary(&f64::exp),
        Op::Unary(UnaryOp::Log) => unary(&f64::ln),
        Op::Unary(UnaryOp::Sqrt) => unary(&f64::sqrt),
        Op::Unary(UnaryOp::Rsqrt) => unary(&|x| 1.0 / x.sqrt()),
        Op::Unary(UnaryOp::Recip) => unary(&|x| 1.0 / x),
        Op::Unary(UnaryOp::Tanh) => unary(&f64::tanh),
        Op::Unary(UnaryOp::Sigmoid) => unary(&sigmoid),
        Op::Unary(UnaryOp::Relu) => unary(&relu),
        Op::Unary(UnaryOp::Gelu) => unary(&gelu),
        Op::Unary(UnaryOp::GeluTanh) => unary(&gelu_tanh),
        Op::Unary(UnaryOp::Silu) => unary(&silu),
        Op::Unary(UnaryOp::Scale { factor }) => unary(&|x| factor.get() * x),
        Op::Unary(UnaryOp::AddScalar { value }) => unary(&|x| x + value.get()),

        Op::Binary(BinaryOp::Add) => binary(&|x, y| x + y),
        Op::Binary(BinaryOp::Sub) => binary(&|x, y| x - y),
        Op::Binary(BinaryOp::Mul) => binary(&|x, y| x * y),
        Op::Binary(BinaryOp::Div) => binary(&|x, y| x / y),
        Op::Binary(BinaryOp::ReluGrad) => binary(&|x, dy| if x > 0.0 { dy } else { 0.0 }),
        Op::Binary(BinaryOp::GeluGrad) => binary(&|x, dy| dy * gelu_grad(x)),
        Op::Binary(BinaryOp::GeluTanhGrad) => binary(&|x, dy| dy * gelu_tanh_grad(x)),
        Op::Binary(BinaryOp::SiluGrad) => binary(&|x, dy| dy * silu_grad(x)),

        Op::ReduceSum { axes, keep_dims } => {
            let x = arg(args, 0, op)?;
            Ok(reduce_sum(x, axes, *keep_dims, try_filled(n, 0.0, what)?))
        }
        Op::Softmax => Ok(softmax_rows(
            arg(args, 0, op)?,
            false,
            try_buffer(n, what)?,
        )?),
        Op::LogSoftmax => Ok(softmax_rows(arg(args, 0, op)?, true, try_buffer(n, what)?)?),
        Op::TopKMask { k } => Ok(topk_mask_rows(
            arg(args, 0, op)?,
            *k,
            try_filled(n, 0.0, what)?,
        )),

        Op::View(v) => Ok(apply_view(v, arg(args, 0, op)?, try_buffer(n, what)?)),
        Op::Concat { axis } => {
            let first = arg(args, 0, op)?;
            let outer: usize = first.shape[..*axis].iter().product();
            let mut shape = first.shape.clone();
            shape[*axis] = args.iter().map(|t| t.shape[*axis]).sum();
            let mut data = try_buffer(n, what)?;
            for o in 0..outer {
                for t in args {
                    let chunk: usize = t.shape[*axis..].iter().product();
                    data.extend_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
                }
            }
            Ok(Tensor {
                dtype: first.dtype,
                shape,
                data,
            })
        }

        Op::MatMul { ta, tb } => {
            let out = try_buffer(n, what)?;
            Ok(matmul(arg(args, 0, op)?, arg(args, 1, op)?, *ta, *tb, out))
        }
        Op::Gather => {
            let (table, ids) = (arg(args, 0, op)?, arg(args, 1, op)?);
            let (v, d) = (table.shape[0], table.shape[1]);
            let mut data = try_buffer(n, what)?;
            for &id in &ids.data {
                let r = index(id, v, "token id", "vocab")?;
                data.extend_from_slice(&table.data[r * d..(r + 1) * d]);
            }
            let mut shape = ids.shape.clone();
            shape.push(d);
            Ok(f32_tensor(shape, data))
        }
        Op::ScatterAdd { rows } => {
            let (ids, src) = (arg(args, 0, op)?, arg(args, 1, op)?);
            let d = src.shape[src.shape.len() - 1];
            let mut data = try_filled(n, 0.0, what)?;
            for (k, &id) in ids.data.iter().enumerate() {
                let r = index(id, *rows, "index", "rows")?;
                for j in 0..d {
                    data[r * d + j] += src.data[k * d + j];
                }
            }
            Ok(f32_tensor(vec![*rows, d], data))
        }
        Op::OneHot { classes } => {
            let ids = arg(args, 0, op)?;
            let mut data = try_filled(n, 0.0, what)?;
            for (k, &id) in ids.data.iter().enumerate() {
                let c = index(id, *classes, "class id", "classes")?;
                data[k * classes + c] = 1.0;
            }
            let mut shape = ids.shape.clone();
            shape.push(*classes);
            Ok(f32_tensor(shape, data))
        }
        Op::CausalMask { fill } => {
            let x = arg(args, 0, op)?;
            let t = x.shape[x.shape.len() - 1];
            let fill = match fill {
                MaskFill::NegInf => f64::NEG_INFINITY,
                MaskFill::Zero => 0.0,
            };
            let mut data = try_copy(&x.data, what)?;
            for (k, v) in data.iter_mut().enumerate() {
                let (row, col) = ((k / t) % t, k % t);
                if col > row {
                    *v = fill;
                }
            }
            Ok(f32_tensor(x.shape.clone(), data))
        }
    }
}

fn sinusoidal((len, dim, base): (usize, usize, f64), mut data: Vec<f64>) -> Tensor {
    for pos in 0..len {
        for j in 0..dim {
            data.push(crate::ir::sinusoidal_entry(pos, j, dim, base));
        }
    }
    f32_tensor(vec![len, dim], data)
}

/// `out` holds the result's elements, zeroed.
fn reduce_sum(x: &Tensor, axes: &[usize], keep_dims: bool, mut out: Vec<f64>) -> Tensor {
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    // Dropping size-1 dims does not move elements, so accumulate in the kept shape.
    let ks = strides(&kept);
    let step: Vec<usize> = (0..kept.len())
        .map(|i| if axes.contains(&i) { 0 } else { ks[i] })
        .collect();
    let mut idx = vec![0; x.shape.len()];
    for (lin, &v) in x.data.iter().enumerate() {
        unravel(lin, &x.shape, &mut idx);
        let o: usize = idx.iter().zip(&step).map(|(i, s)| i * s).sum();
        out[o] += v;
    }
    let shape = if keep_dims {
        kept
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    f32_tensor(shape, out)
}

/// `data` is an empty buffer with room for the result.
fn softmax_rows(x: &Tensor, log: bool, mut data: Vec<f64>) -> Result<Tensor, String> {
    let n = x.shape[x.shape.len() - 1];
    data.extend_from_slice(&x.data);
    if n == 0 {
        return Ok(f32_tensor(x.shape.clone(), data));
    }
    for (r, row) in data.chunks_mut(n).enumerate() {
        // NaN-propagating max: a NaN entry makes the whole row NaN.
        let max = row.iter().fold(
            f64::NEG_INFINITY,
            |m, &v| if v.is_nan() || v > m { v } else { m },
        );
        if max == f64::NEG_INFINITY {
            return Err(format!(
                "{} over row {r} whose entries are all -inf",
                name(log)
            ));
        }
        if max == f64::INFINITY {
            return Err(format!("{} over row {r} which holds +inf", name(log)));
        }
        let sum: f64 = row.iter().map(|&v| (v - max).exp()).sum();
        if log {
            let lse = sum.ln();
            for v in row.iter_mut() {
                *v = *v - max - lse;
            }
        } else {
            for v in row.iter_mut() {
                *v = (*v - max).exp() / sum;
            }
        }
    }
    Ok(f32_tensor(x.shape.clone(), data))
}

/// `out` holds the result's elements, zeroed. Entry `i` of a row is set when fewer than
/// `k` entries of the row are greater than it or equal to it at a lower index (its rank).
fn topk_mask_rows(x: &Tensor, k: usize, mut out: Vec<f64>) -> Tensor {
    let n = x.shape[x.shape.len() - 1];
    if n > 0 {
        for (row, mask) in x.data.chunks(n).zip(out.chunks_mut(n)) {
            for (i, m) in mask.iter_mut().enumerate() {
                let v = row[i];
                let rank = row
                    .iter()
                    .enumerate()
                    .filter(|&(j, &u)| u > v || (u == v && j < i))
                    .count();
                if rank < k {
                    *m = 1.0;
                }
            }
        }
    }
    f32_tensor(x.shape.clone(), out)
}

fn name(log: bool) -> &'static str {
    if log {
        "log_softmax"
    } else {
        "softmax"
    }
}

/// `out` is an empty buffer with room for the result.
fn matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool, mut out: Vec<f64>) -> Tensor {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (m, k) = if ta {
        (a.shape[ra - 1], a.shape[ra - 2])
    } else {
        (a.shape[ra - 2], a.shape[ra - 1])
    };
    let n = if tb { b.shape[rb - 2] } else { b.shape[rb - 1] };
    let batch: usize = a.shape[..ra - 2].iter().product();
    let shared_b = rb == 2;
    for bi in 0..batch {
        let a0 = bi * m * k;
        let b0 = if shared_b { 0 } else { bi * k * n };
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0;
                for p in 0..k {
                    let av = a.data[a0 + if ta { p * m + i } else { i * k + p }];
                    let bv = b.data[b0 + if tb { j * k + p } else { p * n + j }];
                    acc += av * bv;
                }
                out.push(acc);
            }
        }
    }
    let mut shape = a.shape[..ra - 2].to_vec();
    shape.push(m);
    shape.push(n);
    f32_tensor(shape, out)
}

// ---- scalar functions (public so other stages test against the same definitions) ----

pub fn sigmoid(x: f64) -> f64 {
    // Two branches so exp never overflows.
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

pub fn relu(x: f64) -> f64 {
    // `x < 0` (not `max`) so NaN propagates.
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Standard normal CDF, accurate in relative terms in both tails.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// Standard normal density.
pub fn normal_pdf(x: f64) -> f64 {
    FRAC_1_SQRT_2PI * exp_neg_sq(x * std::f64::consts::FRAC_1_SQRT_2)
}

// The smooth ramps (gelu, gelu_tanh, silu) tend to 0 at -inf and x at +inf, their slopes
// to 0 and 1. Far out the formulas hit `inf * 0` (or overflow in `x^3`), so the limits are
// returned directly; beyond |x| = 1e100 every formula has long since saturated in f64.
fn ramp_limit(x: f64) -> Option<f64> {
    if x.abs() <= 1e100 || x.is_nan() {
        None
    } else if x > 0.0 {
        Some(x)
    } else {
        Some(0.0)
    }
}

fn step_limit(x: f64) -> Option<f64> {
    if x.abs() <= 1e100 || x.is_nan() {
        None
    } else if x > 0.0 {
        Some(1.0)
    } else {
        Some(0.0)
    }
}

/// Exact GELU: `x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))` (via erfc so the left tail keeps its
/// relative precision).
pub fn gelu(x: f64) -> f64 {
    if let Some(v) = ramp_limit(x) {
        return v;
    }
    x * normal_cdf(x)
}

/// `gelu'(x) = Phi(x) + x phi(x)`.
pub fn gelu_grad(x: f64) -> f64 {
    if let Some(v) = step_limit(x) {
        return v;
    }
    normal_cdf(x) + x * normal_pdf(x)
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_TANH_C: f64 = 0.044715;

/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn gelu_tanh(x: f64) -> f64 {
    if let Some(v) = ramp_limit(x) {
        return v;
    }
    let u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

pub fn gelu_tanh_grad(x: f64) -> f64 {
    if let Some(v) = step_limit(x) {
        return v;
    }
    let u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
    let t = u.tanh();
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x * x);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
}

/// `x sigmoid(x)`.
pub fn silu(x: f64) -> f64 {
    if let Some(v) = ramp_limit(x) {
        return v;
    }
    x * sigmoid(x)
}

/// `silu'(x) = s (1 + x (1 - s))` with `s = sigmoid(x)`.
pub fn silu_grad(x: f64) -> f64 {
    if let Some(v) = step_limit(x) {
        return v;
    }
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;

/// `exp(-x^2)` without the rounding error of `x*x` being amplified by `exp`: split `x` into
/// a 26-bit head (whose square is exact) and a tail.
fn exp_neg_sq(x: f64) -> f64 {
    let head = f64::from_bits(x.to_bits() & 0xffff_ffff_f800_0000);
    let tail_sq = (x - head) * (x + head); // x^2 - head^2
    (-(head * head)).exp() * (-tail_sq).exp()
}

/// Error function, ~1e-15 relative error.
/// `|x| < 2`: the series `erf x = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (2n+1)!!`, whose
/// terms all have one sign (no cancellation); otherwise `1 - erfc |x|`.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    if ax < 2.0 {
        erf_series(x)
    } else {
        (1.0 - erfc_cf(ax)).copysign(x)
    }
}

/// Complementary error function `1 - erf x`, < 4e-15 relative error (also in the right
/// tail, where `1 - erf x` would cancel).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x < 0.0 {
        2.0 - erfc(-x)
    } else if x < 1.0 {
        // erfc > 0.157 here, so the subtraction loses less than one digit.
        1.0 - erf_series(x)
    } else {
        erfc_cf(x)
    }
}

fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    // Terms shrink once 2n+3 > 2x^2; 200 is far more than |x| < 2 needs (~35).
    for _ in 0..200 {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
        if term.abs() <= sum.abs() * 1e-17 {
            break;
        }
    }
    FRAC_2_SQRT_PI * exp_neg_sq(x) * sum
}

/// `erfc x` for `x >= 1` from the continued fraction (A&S 7.1.14)
/// `sqrt(pi) e^{x^2} erfc x = 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`,
/// evaluated with the modified Lentz method (< 200 terms for x >= 1).
fn erfc_cf(x: f64) -> f64 {
    if x > 27.3 {
        return 0.0; // below the smallest subnormal
    }
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..2000 {
        let a = 0.5 * n as f64;
        d = x + a * d;
        if d == 0.0 {
            d = TINY;
        }
        d = 1.0 / d;
        c = x + a / c;
        if c == 0.0 {
            c = TINY;
        }
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    FRAC_1_SQRT_PI * exp_neg_sq(x) / f
}

/// The view ops: the same elements re-indexed.
/// `out` is an empty buffer with room for the result.
fn apply_view(v: &ViewOp, x: &Tensor, mut out: Vec<f64>) -> Tensor {
    match v {
        ViewOp::Reshape { shape } => {
            out.extend_from_slice(&x.data);
            Tensor {
                dtype: x.dtype,
                shape: shape.clone(),
                data: out,
            }
        }
        ViewOp::Transpose { perm } => {
            let s = strides(&x.shape);
            let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
            let step: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
            let data = strided_copy(&x.data, 0, &out_shape, &step, out);
            Tensor {
                dtype: x.dtype,
                shape: out_shape,
                data,
            }
        }
        ViewOp::Broadcast { shape } => {
            let s = strides(&x.shape);
            let off = shape.len() - x.shape.len();
            let step: Vec<usize> = (0..shape.len())
                .map(|i| match i.checked_sub(off) {
                    Some(j) if x.shape[j] != 1 => s[j],
                    _ => 0,
                })
                .collect();
            let data = strided_copy(&x.data, 0, shape, &step, out);
            Tensor {
                dtype: x.dtype,
                shape: shape.clone(),
                data,
            }
        }
        ViewOp::Slice { axis, start, end } => {
            let s = strides(&x.shape);
            let mut out_shape = x.shape.clone();
            out_shape[*axis] = end - start;
            let data = strided_copy(&x.data, start * s[*axis], &out_shape, &s, out);
            Tensor {
                dtype: x.dtype,
                shape: out_shape,
                data,
            }
        }
    }
}

#[cfg(test)]
// Reference values are quoted to 20 digits as the reference tool printed them.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        if a == b {
            0.0
        } else {
            (a - b).abs() / b.abs()
        }
    }

    #[test]
    fn erf_known_values() {
        // Reference values to 20 digits (mpmath).
        let cases = [
            (0.5, 0.520_499_877_813_046_54),
            (1.0, 0.842_700_792_949_714_87),
            (2.0, 0.995_322_265_018_952_73),
            (-3.0, -0.999_977_909_503_001_41),
            (0.01, 0.011_283_415_555_849_617),
            (1e-10, 1.128_379_167_095_512_6e-10),
            (0.3, 0.328_626_759_459_127_43),
            (1.2, 0.910_313_978_229_635_38),
            (3.5, 0.999_999_256_901_627_66),
            (-5.0, -0.999_999_999_998_462_54),
        ];
        for (x, want) in cases {
            assert!(
                rel(erf(x), want) < 1e-15,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn erfc_known_values() {
        let cases = [
            (0.3, 0.671_373_240_540_872_57),
            (1.0, 0.157_299_207_050_285_13),
            (1.5, 0.033_894_853_524_689_273),
            (2.0, 0.004_677_734_981_047_265_8),
            (3.0, 2.209_049_699_858_544_1e-5),
            (5.0, 1.537_459_794_428_034_9e-12),
            (10.0, 2.088_487_583_762_544_8e-45),
            (-1.0, 1.842_700_792_949_714_9),
            (-2.5, 1.999_593_047_982_555),
        ];
        for (x, want) in cases {
            assert!(
                rel(erfc(x), want) < 4e-15,
                "erfc({x}) = {} want {want}",
                erfc(x)
            );
        }
        assert_eq!(erfc(30.0), 0.0);
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
    }

    #[test]
    fn erf_is_smooth_across_branch_points() {
        // One ulp apart, on either side of each switch between methods.
        for b in [1.0f64, 2.0, 27.3] {
            let lo = f64::from_bits(b.to_bits() - 1);
            assert!((erf(lo) - erf(b)).abs() < 1e-15);
            assert!(rel(erfc(lo), erfc(b)) < 8e-15 || erfc(b) == 0.0);
            assert!(rel(erfc(-lo), erfc(-b)) < 1e-15);
        }
    }

    #[test]
    fn gelu_known_values() {
        let cases = [
            (1.0, 0.841_344_746_068_542_95),
            (-3.0, -0.004_049_694_094_890_283_6),
            (-10.0, -7.619_853_024_160_526e-23),
            (0.5, 0.345_731_230_637_006_55),
        ];
        for (x, want) in cases {
            assert!(
                rel(gelu(x), want) < 1e-14,
                "gelu({x}) = {} want {want}",
                gelu(x)
            );
        }
    }

    #[test]
    fn activation_derivatives_match_finite_differences() {
        type Scalar = fn(f64) -> f64;
        let fs: [(Scalar, Scalar); 4] = [
            (gelu, gelu_grad),
            (gelu_tanh, gelu_tanh_grad),
            (silu, silu_grad),
            (sigmoid, |x| sigmoid(x) * (1.0 - sigmoid(x))),
        ];
        for (f, df) in fs {
            for i in -40..=40 {
                let x = i as f64 * 0.173 + 0.01;
                let h = 1e-5;
                let fd = (f(x + h) - f(x - h)) / (2.0 * h);
                assert!((fd - df(x)).abs() < 1e-9, "x={x}: fd {fd} vs {}", df(x));
            }
        }
    }

    #[test]
    fn activations_at_extremes_are_finite_limits() {
        for x in [f64::NEG_INFINITY, -1e300, -1e50, -800.0, -40.0] {
            for f in [gelu, gelu_tanh, silu, gelu_grad, gelu_tanh_grad, silu_grad] {
                assert!(f(x).abs() < 1e-15, "{x}");
            }
        }
        for x in [f64::INFINITY, 1e300, 1e50, 800.0, 40.0] {
            for f in [gelu, gelu_tanh, silu] {
                assert_eq!(f(x), x);
            }
            for f in [gelu_grad, gelu_tanh_grad, silu_grad] {
                assert_eq!(f(x), 1.0, "{x}");
            }
        }
        for f in [
            gelu,
            gelu_tanh,
            silu,
            gelu_grad,
            gelu_tanh_grad,
            silu_grad,
            sigmoid,
            relu,
        ] {
            assert!(f(f64::NAN).is_nan());
        }
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
        assert_eq!(strides(&[5]), vec![1]);
    }

    #[test]
    fn apply_rejects_bad_arguments() {
        let x = Tensor::f32(vec![2], vec![1.0, 2.0]);
        assert!(apply(&Op::Binary(BinaryOp::Add), &[&x]).is_err());
        assert!(apply(&Op::Input { index: 0 }, &[]).is_err());
        let bad = Tensor {
            dtype: DType::F32,
            shape: vec![3],
            data: vec![1.0],
        };
        assert!(apply(&Op::Unary(UnaryOp::Neg), &[&bad]).is_err());
    }
}
