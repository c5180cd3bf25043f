//! The op set and each op's shape rule.
//!
//! The set is small and primitive enough that every op has a simple vector-Jacobian
//! product and that elementwise chains and last-axis reductions can be fused into kernels:
//! norms are built from reductions and elementwise ops rather than being ops of their own.
//! Softmax and log-softmax are primitives because their stable forms need a max, and
//! their VJPs are short; activations carry their derivative as an op (`GeluGrad`, ...) so
//! backward graphs stay small and fusable.
//!
//! Adding an op touches (the checklist, also in ARCHITECTURE.md): `Op` and `infer_type`
//! here, `text` (printer and parser), `interp` (semantics), `autodiff` (VJP).

use super::{DType, IrError, Type};
use serde::{Deserialize, Serialize};

/// What the upper triangle (column > row) of a causal mask is filled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MaskFill {
    /// Forward: masked scores vanish under softmax.
    NegInf,
    /// Backward: masked positions get no gradient.
    Zero,
}

/// A float attribute, compared and hashed by its bit pattern: ops are `Eq + Hash`, so passes
/// compare graphs structurally, and a NaN constant equals itself. In JSON a non-finite value
/// is the string `"inf"`, `"-inf"` or `"NaN"` (JSON numbers cannot hold it).
#[derive(Clone, Copy, Debug, Default)]
pub struct F64(pub f64);

impl Serialize for F64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }
}

impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<F64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(F64(v)),
            Repr::Text(t) => match t.as_str() {
                "inf" => Ok(F64(f64::INFINITY)),
                "-inf" => Ok(F64(f64::NEG_INFINITY)),
                "NaN" => Ok(F64(f64::NAN)),
                _ => Err(serde::de::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"NaN\", found {t:?}"
                ))),
            },
        }
    }
}

impl F64 {
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for F64 {
    fn eq(&self, other: &F64) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for F64 {}

impl std::hash::Hash for F64 {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h)
    }
}

impl From<f64> for F64 {
    fn from(v: f64) -> F64 {
        F64(v)
    }
}

/// The base of the additive sinusoidal positions (Vaswani et al.).
pub const SINUSOIDAL_BASE: f64 = 10000.0;

/// Entry `[pos, j]` of the sinusoidal table of width `dim`: columns `2i` and `2i + 1` hold
/// the sine and the cosine of `pos / base^(2i / dim)`. The one definition that the
/// interpreter, constant folding and the kernels' constant tables all use.
pub fn sinusoidal_entry(pos: usize, j: usize, dim: usize, base: f64) -> f64 {
    let two_i = (j - j % 2) as f64;
    let angle = pos as f64 / base.powf(two_i / dim as f64);
    if j.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }
}

/// Elementwise ops of one f32 operand (same shape out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Tanh,
    Sigmoid,
    Relu,
    /// Exact GELU: x * Phi(x) with the erf-based normal CDF.
    Gelu,
    /// GELU with the tanh approximation.
    GeluTanh,
    Silu,
    /// The identity whose vector-Jacobian product is zero: autodiff propagates no gradient
    /// through it, so everything that only feeds it is left out of the backward pass.
    StopGradient,
    /// `factor * x`.
    Scale {
        factor: F64,
    },
    /// `x + value`.
    AddScalar {
        value: F64,
    },
}

impl UnaryOp {
    /// The ops without attributes, each once.
    pub const PLAIN: [UnaryOp; 13] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
        UnaryOp::StopGradient,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Silu => "silu",
            UnaryOp::StopGradient => "stop_gradient",
            UnaryOp::Scale { .. } => "scale",
            UnaryOp::AddScalar { .. } => "add_scalar",
        }
    }
}

/// Elementwise ops of two f32 operands of equal shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `(x, dy) -> dy * relu'(x)`.
    ReluGrad,
    /// `(x, dy) -> dy * gelu'(x)`.
    GeluGrad,
    /// `(x, dy) -> dy * gelu_tanh'(x)`.
    GeluTanhGrad,
    /// `(x, dy) -> dy * silu'(x)`.
    SiluGrad,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 8] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::ReluGrad,
        BinaryOp::GeluGrad,
        BinaryOp::GeluTanhGrad,
        BinaryOp::SiluGrad,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::ReluGrad => "relu_grad",
            BinaryOp::GeluGrad => "gelu_grad",
            BinaryOp::GeluTanhGrad => "gelu_tanh_grad",
            BinaryOp::SiluGrad => "silu_grad",
        }
    }

    /// `f(a, b) == f(b, a)`: canonicalization may order the arguments.
    pub fn is_commutative(self) -> bool {
        match self {
            BinaryOp::Add | BinaryOp::Mul => true,
            BinaryOp::Sub
            | BinaryOp::Div
            | BinaryOp::ReluGrad
            | BinaryOp::GeluGrad
            | BinaryOp::GeluTanhGrad
            | BinaryOp::SiluGrad => false,
        }
    }
}

/// Ops that only re-index their one operand: no arithmetic, so kernels fold them into
/// access maps.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ViewOp {
    /// Same elements, new shape (equal element count).
    Reshape { shape: Vec<usize> },
    /// Permute axes: output axis i is input axis `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// NumPy broadcast to `shape`: dims aligned from the right, size-1 or missing dims expand.
    Broadcast { shape: Vec<usize> },
    /// Elements `start..end` along `axis`.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
}

impl ViewOp {
    pub fn name(&self) -> &'static str {
        match self {
            ViewOp::Reshape { .. } => "reshape",
            ViewOp::Transpose { .. } => "transpose",
            ViewOp::Broadcast { .. } => "broadcast",
            ViewOp::Slice { .. } => "slice",
        }
    }
}

/// The op set, by family: leaves, elementwise (unary, binary), reductions over axes or the
/// last axis, views, and the contractions and indexing ops.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    // ---- leaves ----
    /// Graph input number `index`.
    Input {
        index: usize,
    },
    /// Parameter number `index`.
    Param {
        index: usize,
    },
    /// A tensor with every element equal to `value`.
    Full {
        value: F64,
        shape: Vec<usize>,
    },
    /// Sinusoidal table `[len, dim]` (Vaswani et al.): sin on even, cos on odd columns; see
    /// `sinusoidal_entry`. Additive positions use base 10000; rotary positions their own.
    Sinusoidal {
        len: usize,
        dim: usize,
        base: F64,
    },

    // ---- elementwise ----
    Unary(UnaryOp),
    Binary(BinaryOp),

    // ---- reductions ----
    /// Sum over `axes` (ascending, distinct); kept as size-1 dims when `keep_dims`.
    ReduceSum {
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// Softmax over the last axis.
    Softmax,
    /// Log-softmax over the last axis.
    LogSoftmax,
    /// On f32 `[..., n]`, the f32 mask of each row's `k` largest entries along the last
    /// axis: `1.0` at an entry when fewer than `k` entries of its row are greater than it or
    /// equal to it at a lower index, `0.0` elsewhere. Ties go to the lower index, so a row
    /// has exactly `k` ones (NaN compares neither greater nor equal, so a row that holds
    /// NaN may have more). Needs `1 <= k <= n`. Piecewise constant: no gradient flows
    /// through it (a router's `probs * topk_mask(probs)` is differentiated through `probs`).
    TopKMask {
        k: usize,
    },

    // ---- shape ----
    View(ViewOp),
    /// Concatenate the arguments along `axis`.
    Concat {
        axis: usize,
    },

    // ---- contractions and indexing ----
    /// `a @ b` over the last two axes, with optional transposes of either operand.
    /// `a`: `[..., M, K]` (`[..., K, M]` if `ta`); `b`: `[..., K, N]` (`[..., N, K]` if `tb`)
    /// with the same leading dims as `a`, or rank 2 (shared by every batch).
    MatMul {
        ta: bool,
        tb: bool,
    },
    /// `(table [V, D], ids i32 [...]) -> [..., D]`: rows of the table.
    Gather,
    /// `(ids i32 [...], src [..., D]) -> [rows, D]`: sums each src row into row `ids[..]`.
    ScatterAdd {
        rows: usize,
    },
    /// `ids i32 [...] -> f32 [..., classes]`.
    OneHot {
        classes: usize,
    },
    /// On `[..., T, T]`: entries with column > row set to the fill.
    CausalMask {
        fill: MaskFill,
    },
}

impl Op {
    /// The op's name in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Full { .. } => "full",
            Op::Sinusoidal { .. } => "sinusoidal",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::ReduceSum { .. } => "reduce_sum",
            Op::Softmax => "softmax",
            Op::LogSoftmax => "log_softmax",
            Op::TopKMask { .. } => "topk_mask",
            Op::View(v) => v.name(),
            Op::Concat { .. } => "concat",
            Op::MatMul { .. } => "matmul",
            Op::Gather => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::OneHot { .. } => "one_hot",
            Op::CausalMask { .. } => "causal_mask",
        }
    }

    /// One op of every kind (attributes arbitrary): the list of op names the text form,
    /// the conformance corpus and the docs go by.
    pub fn every_kind() -> Vec<Op> {
        let mut all = vec![
            Op::Input { index: 0 },
            Op::Param { index: 0 },
            Op::Full {
                value: F64(0.0),
                shape: vec![],
            },
            Op::Sinusoidal {
                len: 1,
                dim: 2,
                base: F64(SINUSOIDAL_BASE),
            },
        ];
        all.extend(UnaryOp::PLAIN.map(Op::Unary));
        all.push(Op::Unary(UnaryOp::Scale { factor: F64(1.0) }));
        all.push(Op::Unary(UnaryOp::AddScalar { value: F64(0.0) }));
        all.extend(BinaryOp::ALL.map(Op::Binary));
        all.extend([
            Op::ReduceSum {
                axes: vec![0],
                keep_dims: false,
            },
            Op::Softmax,
            Op::LogSoftmax,
            Op::TopKMask { k: 1 },
            Op::View(ViewOp::Reshape { shape: vec![] }),
            Op::View(ViewOp::Transpose { perm: vec![] }),
            Op::View(ViewOp::Broadcast { shape: vec![] }),
            Op::View(ViewOp::Slice {
                axis: 0,
                start: 0,
                end: 1,
            }),
            Op::Concat { axis: 0 },
            Op::MatMul {
                ta: false,
                tb: false,
            },
            Op::Gather,
            Op::ScatterAdd { rows: 1 },
            Op::OneHot { classes: 1 },
            Op::CausalMask {
                fill: MaskFill::NegInf,
            },
        ]);
        all
    }

    /// `factor * x`.
    pub fn scale(factor: f64) -> Op {
        Op::Unary(UnaryOp::Scale {
            factor: F64(factor),
        })
    }

    /// `x + value`.
    pub fn add_scalar(value: f64) -> Op {
        Op::Unary(UnaryOp::AddScalar { value: F64(value) })
    }

    pub fn is_leaf(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Param { .. } | Op::Full { .. } | Op::Sinusoidal { .. }
        )
    }

    /// Elementwise ops of one operand.
    pub fn unary(&self) -> Option<UnaryOp> {
        match self {
            Op::Unary(u) => Some(*u),
            _ => None,
        }
    }

    /// Elementwise ops of two operands.
    pub fn binary(&self) -> Option<BinaryOp> {
        match self {
            Op::Binary(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_view(&self) -> bool {
        matches!(self, Op::View(_))
    }
}

fn expect_arity(op: &Op, args: &[&Type], n: usize) -> Result<(), IrError> {
    if args.len() != n {
        return Err(shape_error(
            op,
            format!("{} takes {n} argument(s), got {}", op.name(), args.len()),
        ));
    }
    Ok(())
}

fn expect_f32(op: &Op, t: &Type) -> Result<(), IrError> {
    if t.dtype != DType::F32 {
        return Err(shape_error(
            op,
            format!("{} expects f32, got {t}", op.name()),
        ));
    }
    Ok(())
}

fn expect_i32(op: &Op, t: &Type) -> Result<(), IrError> {
    if t.dtype != DType::I32 {
        return Err(shape_error(
            op,
            format!("{} expects i32 indices, got {t}", op.name()),
        ));
    }
    Ok(())
}

/// Whether `from` broadcasts to `to` under NumPy rules.
pub fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    if from.len() > to.len() {
        return false;
    }
    let off = to.len() - from.len();
    from.iter()
        .enumerate()
        .all(|(i, &d)| d == to[off + i] || d == 1)
}

/// The shape rule of every op except the leaves `Input` and `Param`, whose types come from
/// the graph's input and parameter lists.
pub fn infer_type(op: &Op, args: &[&Type]) -> Result<Type, IrError> {
    match op {
        Op::Input { .. } | Op::Param { .. } => Err(shape_error(
            op,
            format!("{} takes its type from the graph", op.name()),
        )),
        Op::Full { shape, .. } => {
            expect_arity(op, args, 0)?;
            Ok(Type::f32(shape.clone()))
        }
        Op::Sinusoidal { len, dim, .. } => {
            expect_arity(op, args, 0)?;
            Ok(Type::f32(vec![*len, *dim]))
        }
        Op::Unary(_) => {
            expect_arity(op, args, 1)?;
            expect_f32(op, args[0])?;
            Ok(args[0].clone())
        }
        Op::Binary(_) => {
            expect_arity(op, args, 2)?;
            expect_f32(op, args[0])?;
            expect_f32(op, args[1])?;
            if args[0].shape != args[1].shape {
                return Err(shape_error(
                    op,
                    format!(
                        "{} needs equal shapes, got {} and {}",
                        op.name(),
                        args[0],
                        args[1]
                    ),
                ));
            }
            Ok(args[0].clone())
        }
        Op::ReduceSum { axes, keep_dims } => {
            expect_arity(op, args, 1)?;
            expect_f32(op, args[0])?;
            let r = args[0].rank();
            if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= r) {
                return Err(shape_error(
                    op,
                    format!(
                        "reduce_sum axes {axes:?} must be ascending, distinct and below rank {r}"
                    ),
                ));
            }
            let shape = args[0]
                .shape
                .iter()
                .enumerate()
                .filter_map(|(i, &d)| match (axes.contains(&i), keep_dims) {
                    (false, _) => Some(d),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect::<Vec<_>>();
            Ok(Type::f32(shape))
        }
        Op::Softmax | Op::LogSoftmax => {
            expect_arity(op, args, 1)?;
            expect_f32(op, args[0])?;
            if args[0].rank() == 0 {
                return Err(shape_error(op, format!("{} needs rank >= 1", op.name())));
            }
            Ok(args[0].clone())
        }
        Op::TopKMask { k } => {
            expect_arity(op, args, 1)?;
            expect_f32(op, args[0])?;
            let t = args[0];
            match t.shape.last() {
                Some(&n) if (1..=n).contains(k) => Ok(t.clone()),
                Some(&n) => Err(shape_error(
                    op,
                    format!("topk_mask needs 1 <= k <= {n} (the last axis of {t}), got k={k}"),
                )),
                None => Err(shape_error(op, "topk_mask needs rank >= 1".into())),
            }
        }
        Op::View(v) => view_type(op, v, args),
        Op::Concat { axis } => concat_type(op, args, *axis),
        Op::MatMul { ta, tb } => matmul_type(op, args, *ta, *tb),
        Op::Gather => {
            expect_arity(op, args, 2)?;
            let (table, ids) = (args[0], args[1]);
            expect_f32(op, table)?;
            expect_i32(op, ids)?;
            if table.rank() != 2 {
                return Err(shape_error(
                    op,
                    format!("gather table must be [V, D], got {table}"),
                ));
            }
            let mut shape = ids.shape.clone();
            shape.push(table.shape[1]);
            Ok(Type::f32(shape))
        }
        Op::ScatterAdd { rows } => {
            expect_arity(op, args, 2)?;
            let (ids, src) = (args[0], args[1]);
            expect_i32(op, ids)?;
            expect_f32(op, src)?;
            if src.rank() != ids.rank() + 1 || src.shape[..ids.rank()] != ids.shape[..] {
                return Err(shape_error(
                    op,
                    format!("scatter_add src {src} does not match ids {ids}"),
                ));
            }
            Ok(Type::f32(vec![*rows, src.shape[src.rank() - 1]]))
        }
        Op::OneHot { classes } => {
            expect_arity(op, args, 1)?;
            expect_i32(op, args[0])?;
            let mut shape = args[0].shape.clone();
            shape.push(*classes);
            Ok(Type::f32(shape))
        }
        Op::CausalMask { .. } => {
            expect_arity(op, args, 1)?;
            expect_f32(op, args[0])?;
            let t = args[0];
            let r = t.rank();
            if r < 2 || t.shape[r - 1] != t.shape[r - 2] {
                return Err(shape_error(
                    op,
                    format!("causal_mask needs [..., T, T], got {t}"),
                ));
            }
            Ok(t.clone())
        }
    }
}

/// The shape rule of the view ops.
fn view_type(op: &Op, v: &ViewOp, args: &[&Type]) -> Result<Type, IrError> {
    match v {
        ViewOp::Reshape { shape } => {
            expect_arity(op, args, 1)?;
            let n: usize = shape.iter().product();
            if n != args[0].numel() {
                return Err(shape_error(
                    op,
                    format!(
                        "reshape from {} to {shape:?} changes the element count",
                        args[0]
                    ),
                ));
            }
            Ok(Type {
                dtype: args[0].dtype,
                shape: shape.clone(),
            })
        }
        ViewOp::Transpose { perm } => {
            expect_arity(op, args, 1)?;
            let r = args[0].rank();
            let mut seen = vec![false; r];
            if perm.len() != r {
                return Err(shape_error(
                    op,
                    format!("transpose perm {perm:?} does not match rank {r}"),
                ));
            }
            for &p in perm {
                if p >= r || seen[p] {
                    return Err(shape_error(
                        op,
                        format!("transpose perm {perm:?} is not a permutation"),
                    ));
                }
                seen[p] = true;
            }
            let shape = perm.iter().map(|&p| args[0].shape[p]).collect();
            Ok(Type {
                dtype: args[0].dtype,
                shape,
            })
        }
        ViewOp::Broadcast { shape } => {
            expect_arity(op, args, 1)?;
            if !broadcasts_to(&args[0].shape, shape) {
                return Err(shape_error(
                    op,
                    format!("cannot broadcast {} to {shape:?}", args[0]),
                ));
            }
            Ok(Type {
                dtype: args[0].dtype,
                shape: shape.clone(),
            })
        }
        ViewOp::Slice { axis, start, end } => {
            expect_arity(op, args, 1)?;
            let t = args[0];
            if *axis >= t.rank() || start >= end || *end > t.shape[*axis] {
                return Err(shape_error(
                    op,
                    format!("slice axis {axis} {start}..{end} out of range for {t}"),
                ));
            }
            let mut shape = t.shape.clone();
            shape[*axis] = end - start;
            Ok(Type {
                dtype: t.dtype,
                shape,
            })
        }
    }
}

/// The shape rule of `matmul`.
fn matmul_type(op: &Op, args: &[&Type], ta: bool, tb: bool) -> Result<Type, IrError> {
    expect_arity(op, args, 2)?;
    let (a, b) = (args[0], args[1]);
    expect_f32(op, a)?;
    expect_f32(op, b)?;
    if a.rank() < 2 || b.rank() < 2 {
        return Err(shape_error(
            op,
            format!("matmul needs rank >= 2, got {a} and {b}"),
        ));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, ka) = if ta {
        (a.shape[ra - 1], a.shape[ra - 2])
    } else {
        (a.shape[ra - 2], a.shape[ra - 1])
    };
    let (kb, n) = if tb {
        (b.shape[rb - 1], b.shape[rb - 2])
    } else {
        (b.shape[rb - 2], b.shape[rb - 1])
    };
    if ka != kb {
        return Err(shape_error(
            op,
            format!("matmul inner dims differ: {a} and {b} (ta={ta}, tb={tb})"),
        ));
    }
    if rb != 2 && a.shape[..ra - 2] != b.shape[..rb - 2] {
        return Err(shape_error(
            op,
            format!("matmul batch dims differ: {a} and {b}"),
        ));
    }
    let mut shape = a.shape[..ra - 2].to_vec();
    shape.push(m);
    shape.push(n);
    Ok(Type::f32(shape))
}

/// The shape rule of `concat`.
fn concat_type(op: &Op, args: &[&Type], axis: usize) -> Result<Type, IrError> {
    if args.is_empty() {
        return Err(shape_error(op, "concat needs at least one argument".into()));
    }
    let first = args[0];
    if axis >= first.rank() {
        return Err(shape_error(
            op,
            format!("concat axis {axis} out of range for {first}"),
        ));
    }
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for t in args {
        let same_other = t.rank() == first.rank()
            && t.dtype == first.dtype
            && (0..t.rank()).all(|i| i == axis || t.shape[i] == first.shape[i]);
        if !same_other {
            return Err(shape_error(
                op,
                format!("concat of {first} and {t} along axis {axis}"),
            ));
        }
        shape[axis] += t.shape[axis];
    }
    Ok(Type {
        dtype: first.dtype,
        shape,
    })
}

fn shape_error(op: &Op, detail: String) -> IrError {
    IrError::Shape {
        op: op.name(),
        detail,
    }
}
