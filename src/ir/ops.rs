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

use super::{DType, Type};
use serde::{Deserialize, Serialize};

/// What the upper triangle (column > row) of a causal mask is filled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MaskFill {
    /// Forward: masked scores vanish under softmax.
    NegInf,
    /// Backward: masked positions get no gradient.
    Zero,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
        value: f64,
        shape: Vec<usize>,
    },
    /// Sinusoidal position table `[len, dim]` (Vaswani et al.): sin on even, cos on odd columns.
    Sinusoidal {
        len: usize,
        dim: usize,
    },

    // ---- elementwise unary (f32 -> f32, same shape) ----
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
    /// `factor * x`.
    Scale {
        factor: f64,
    },
    /// `x + value`.
    AddScalar {
        value: f64,
    },

    // ---- elementwise binary (same shapes) ----
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

    // ---- shape ----
    /// Same elements, new shape (equal element count).
    Reshape {
        shape: Vec<usize>,
    },
    /// Permute axes: output axis i is input axis `perm[i]`.
    Transpose {
        perm: Vec<usize>,
    },
    /// NumPy broadcast to `shape`: dims aligned from the right, size-1 or missing dims expand.
    Broadcast {
        shape: Vec<usize>,
    },
    /// Elements `start..end` along `axis`.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
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
            Op::Neg => "neg",
            Op::Exp => "exp",
            Op::Log => "log",
            Op::Sqrt => "sqrt",
            Op::Rsqrt => "rsqrt",
            Op::Recip => "recip",
            Op::Tanh => "tanh",
            Op::Sigmoid => "sigmoid",
            Op::Relu => "relu",
            Op::Gelu => "gelu",
            Op::GeluTanh => "gelu_tanh",
            Op::Silu => "silu",
            Op::Scale { .. } => "scale",
            Op::AddScalar { .. } => "add_scalar",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::ReluGrad => "relu_grad",
            Op::GeluGrad => "gelu_grad",
            Op::GeluTanhGrad => "gelu_tanh_grad",
            Op::SiluGrad => "silu_grad",
            Op::ReduceSum { .. } => "reduce_sum",
            Op::Softmax => "softmax",
            Op::LogSoftmax => "log_softmax",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Broadcast { .. } => "broadcast",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::MatMul { .. } => "matmul",
            Op::Gather => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::OneHot { .. } => "one_hot",
            Op::CausalMask { .. } => "causal_mask",
        }
    }

    pub fn is_elementwise_unary(&self) -> bool {
        matches!(
            self,
            Op::Neg
                | Op::Exp
                | Op::Log
                | Op::Sqrt
                | Op::Rsqrt
                | Op::Recip
                | Op::Tanh
                | Op::Sigmoid
                | Op::Relu
                | Op::Gelu
                | Op::GeluTanh
                | Op::Silu
                | Op::Scale { .. }
                | Op::AddScalar { .. }
        )
    }

    pub fn is_elementwise_binary(&self) -> bool {
        matches!(
            self,
            Op::Add
                | Op::Sub
                | Op::Mul
                | Op::Div
                | Op::ReluGrad
                | Op::GeluGrad
                | Op::GeluTanhGrad
                | Op::SiluGrad
        )
    }

    pub fn is_leaf(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Param { .. } | Op::Full { .. } | Op::Sinusoidal { .. }
        )
    }
}

fn expect_arity(op: &Op, args: &[&Type], n: usize) -> Result<(), String> {
    if args.len() != n {
        return Err(format!(
            "{} takes {n} argument(s), got {}",
            op.name(),
            args.len()
        ));
    }
    Ok(())
}

fn expect_f32(op: &Op, t: &Type) -> Result<(), String> {
    if t.dtype != DType::F32 {
        return Err(format!("{} expects f32, got {t}", op.name()));
    }
    Ok(())
}

fn expect_i32(op: &Op, t: &Type) -> Result<(), String> {
    if t.dtype != DType::I32 {
        return Err(format!("{} expects i32 indices, got {t}", op.name()));
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
pub fn infer_type(op: &Op, args: &[&Type]) -> Result<Type, String> {
    match op {
        Op::Input { .. } | Op::Param { .. } => {
            Err(format!("{} takes its type from the graph", op.name()))
        }
        Op::Full { shape, .. } => {
            expect_arity(op, args, 0)?;
            Ok(Type::f32(shape.clone()))
        }
        Op::Sinusoidal { len, dim } => {
            expect_arity(op, args, 0)?;
            Ok(Type::f32(vec![*len, *dim]))
        }
        op if op.is_elementwise_unary() => {
            expect_arity(op, args, 1)?;
            expect_f32(op, args[0])?;
            Ok(args[0].clone())
        }
        op if op.is_elementwise_binary() => {
            expect_arity(op, args, 2)?;
            expect_f32(op, args[0])?;
            expect_f32(op, args[1])?;
            if args[0].shape != args[1].shape {
                return Err(format!(
                    "{} needs equal shapes, got {} and {}",
                    op.name(),
                    args[0],
                    args[1]
                ));
            }
            Ok(args[0].clone())
        }
        Op::ReduceSum { axes, keep_dims } => {
            expect_arity(op, args, 1)?;
            expect_f32(op, args[0])?;
            let r = args[0].rank();
            if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= r) {
                return Err(format!(
                    "reduce_sum axes {axes:?} must be ascending, distinct and below rank {r}"
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
                return Err(format!("{} needs rank >= 1", op.name()));
            }
            Ok(args[0].clone())
        }
        Op::Reshape { shape } => {
            expect_arity(op, args, 1)?;
            let n: usize = shape.iter().product();
            if n != args[0].numel() {
                return Err(format!(
                    "reshape from {} to {shape:?} changes the element count",
                    args[0]
                ));
            }
            Ok(Type {
                dtype: args[0].dtype,
                shape: shape.clone(),
            })
        }
        Op::Transpose { perm } => {
            expect_arity(op, args, 1)?;
            let r = args[0].rank();
            let mut seen = vec![false; r];
            if perm.len() != r {
                return Err(format!("transpose perm {perm:?} does not match rank {r}"));
            }
            for &p in perm {
                if p >= r || seen[p] {
                    return Err(format!("transpose perm {perm:?} is not a permutation"));
                }
                seen[p] = true;
            }
            let shape = perm.iter().map(|&p| args[0].shape[p]).collect();
            Ok(Type {
                dtype: args[0].dtype,
                shape,
            })
        }
        Op::Broadcast { shape } => {
            expect_arity(op, args, 1)?;
            if !broadcasts_to(&args[0].shape, shape) {
                return Err(format!("cannot broadcast {} to {shape:?}", args[0]));
            }
            Ok(Type {
                dtype: args[0].dtype,
                shape: shape.clone(),
            })
        }
        Op::Slice { axis, start, end } => {
            expect_arity(op, args, 1)?;
            let t = args[0];
            if *axis >= t.rank() || start >= end || *end > t.shape[*axis] {
                return Err(format!(
                    "slice axis {axis} {start}..{end} out of range for {t}"
                ));
            }
            let mut shape = t.shape.clone();
            shape[*axis] = end - start;
            Ok(Type {
                dtype: t.dtype,
                shape,
            })
        }
        Op::Concat { axis } => {
            if args.is_empty() {
                return Err("concat needs at least one argument".into());
            }
            let first = args[0];
            if *axis >= first.rank() {
                return Err(format!("concat axis {axis} out of range for {first}"));
            }
            let mut shape = first.shape.clone();
            shape[*axis] = 0;
            for t in args {
                let same_other = t.rank() == first.rank()
                    && t.dtype == first.dtype
                    && (0..t.rank()).all(|i| i == *axis || t.shape[i] == first.shape[i]);
                if !same_other {
                    return Err(format!("concat of {first} and {t} along axis {axis}"));
                }
                shape[*axis] += t.shape[*axis];
            }
            Ok(Type {
                dtype: first.dtype,
                shape,
            })
        }
        Op::MatMul { ta, tb } => {
            expect_arity(op, args, 2)?;
            let (a, b) = (args[0], args[1]);
            expect_f32(op, a)?;
            expect_f32(op, b)?;
            if a.rank() < 2 || b.rank() < 2 {
                return Err(format!("matmul needs rank >= 2, got {a} and {b}"));
            }
            let (ra, rb) = (a.rank(), b.rank());
            let (m, ka) = if *ta {
                (a.shape[ra - 1], a.shape[ra - 2])
            } else {
                (a.shape[ra - 2], a.shape[ra - 1])
            };
            let (kb, n) = if *tb {
                (b.shape[rb - 1], b.shape[rb - 2])
            } else {
                (b.shape[rb - 2], b.shape[rb - 1])
            };
            if ka != kb {
                return Err(format!(
                    "matmul inner dims differ: {a} and {b} (ta={ta}, tb={tb})"
                ));
            }
            if rb != 2 && a.shape[..ra - 2] != b.shape[..rb - 2] {
                return Err(format!("matmul batch dims differ: {a} and {b}"));
            }
            let mut shape = a.shape[..ra - 2].to_vec();
            shape.push(m);
            shape.push(n);
            Ok(Type::f32(shape))
        }
        Op::Gather => {
            expect_arity(op, args, 2)?;
            let (table, ids) = (args[0], args[1]);
            expect_f32(op, table)?;
            expect_i32(op, ids)?;
            if table.rank() != 2 {
                return Err(format!("gather table must be [V, D], got {table}"));
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
                return Err(format!("scatter_add src {src} does not match ids {ids}"));
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
                return Err(format!("causal_mask needs [..., T, T], got {t}"));
            }
            Ok(t.clone())
        }
        _ => unreachable!("every op is covered above"),
    }
}
