//! Kernel IR: a tensor graph partitioned into the kernels the JIT compiles.
//!
//! Every buffer lives in one arena and is addressed in f32-sized elements. A kernel reads and
//! writes buffers only through `Access`es, affine row/column maps (or a row-offset table, or a
//! gather through ids), and every access is checked against its buffer's extent when the
//! kernel is built, so generated code can never address outside its buffers.
//!
//! Kernel kinds:
//! - `Loop`: a row loop over a `rows x cols` domain. Each row runs a few column passes of an
//!   elementwise expression DAG with row reductions (sum, max) between them, so elementwise
//!   chains, bias + activation, softmax, LayerNorm and RMSNorm (and their backward) are one
//!   kernel each. A top-k mask starts a loop kernel of its own over a stored input (each
//!   column reads the whole row), and elementwise users join it.
//! - `ColReduce`: sums over rows, vectorized over columns (bias gradients).
//! - `MatMul`: a batched GEMM on strided operands (a tuned GEMM or a generated microkernel).
//! - `ScatterAdd`: embedding gradients (rows may collide, so it runs serially).

mod build;
mod error;
mod in_place;
mod print;

pub use build::{build_program, BuildOptions};
pub use error::{AccessError, CheckProblem, KernelError};
pub use in_place::InPlace;
pub use print::print_program;

use crate::ir::{BinaryOp, DType, UnaryOp};

/// Index of a buffer in `Program::buffers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

impl BufId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for BufId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b{}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum BufKind {
    /// Parameter `i` (persistent between runs).
    Param(usize),
    /// Graph input `i`, copied in before each run.
    Input(usize),
    /// Constant data fixed at build time (sinusoidal tables).
    Const(Vec<f32>),
    /// Row-offset table of an access (i32 entries).
    Table(Vec<i32>),
    /// An intermediate or output; placed by the memory planner.
    Temp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BufInfo {
    /// Elements (4 bytes each).
    pub len: usize,
    pub dtype: DType,
    pub kind: BufKind,
    /// What it holds, for the printers (`%12`, `param blocks.0.wq`).
    pub label: String,
}

/// How a row index `r` maps to an element offset (added to `Access::offset`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RowMap {
    /// `r * stride`.
    Affine { stride: i64 },
    /// `table[r]` (an i32 table buffer with one entry per row).
    Table { table: BufId },
    /// `clamp(ids[ids_offset + r], 0, limit - 1) * stride`: a gather through token ids.
    Indirect {
        ids: BufId,
        ids_offset: i64,
        limit: i64,
        stride: i64,
    },
}

/// Element `(r, c)` of a kernel domain lives at `offset + rows(r) + c * col_stride` in `buf`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub buf: BufId,
    pub offset: i64,
    pub rows: RowMap,
    pub col_stride: i64,
}

/// Whether a kernel value is one scalar per row or one element per `(r, c)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Row,
    Col,
}

#[derive(Clone, Debug, PartialEq)]
pub enum KExpr {
    /// A load through an access (a `Row` load ignores `c`).
    Load(Access),
    Const(f32),
    /// An elementwise unary IR op.
    Unary(UnaryOp, usize),
    /// An elementwise binary IR op.
    Binary(BinaryOp, usize, usize),
    RowSum(usize),
    RowMax(usize),
    /// Entries with `c > r % cols` become `fill`.
    CausalMask {
        x: usize,
        fill: f32,
    },
    /// `1.0` where `c == ids[r]` (ids: an i32 row access).
    OneHot {
        ids: Access,
        classes: i64,
    },
    /// `1.0` where fewer than `k` entries of row `r` of `x` (the kernel's `cols` columns) are
    /// greater than `x(r, c)` or equal to it at a column below `c`: the top-`k` mask. Reads
    /// the whole row through its access, so `x` is a stored buffer, never a value of the
    /// kernel.
    TopKMask {
        x: Access,
        k: i64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct KNode {
    pub expr: KExpr,
    pub kind: Kind,
}

/// Write `value` through `access`: every column when `col`, else once per row (`c = 0`).
#[derive(Clone, Debug, PartialEq)]
pub struct Store {
    pub value: usize,
    pub col: bool,
    pub access: Access,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoopKernel {
    pub rows: usize,
    pub cols: usize,
    /// In dependency order: arguments precede their users.
    pub nodes: Vec<KNode>,
    pub stores: Vec<Store>,
}

/// One operand of a batched GEMM: matrix `i` starts at `offsets[i]`, element `(x, y)` at
/// `+ x * rs + y * cs`.
#[derive(Clone, Debug, PartialEq)]
pub struct MatOperand {
    pub buf: BufId,
    pub offsets: Vec<i64>,
    pub rs: i64,
    pub cs: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MatMulKernel {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: MatOperand,
    pub b: MatOperand,
    pub c: MatOperand,
    /// `C = alpha * A B`: a `scale` of an operand folded into the product.
    pub alpha: f32,
    /// A row vector (`n` columns, row stride 0) added to every row of `C`: a bias folded
    /// into the GEMM, which then accumulates onto it. Runs on the gemm path only.
    pub bias: Option<Access>,
    /// Which implementation runs it (`matmul_path`).
    pub path: MatPath,
}

/// How a GEMM runs: a call into the `gemm` crate, or a Cranelift-generated microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatPath {
    Gemm,
    /// `C[i, j..j+8] = alpha * sum_p A[i, p] * B[p, j..j+8]`, accumulated in registers over
    /// 4x8 tiles (`B` and `C` rows contiguous).
    JitAxpy,
    /// `C[i, j] = A[i, :] . B[:, j]` over 2x4 tiles of 4-wide dot products (`A` rows and `B`
    /// columns contiguous).
    JitDot,
}

impl MatPath {
    pub fn name(self) -> &'static str {
        match self {
            MatPath::Gemm => "gemm",
            MatPath::JitAxpy => "jit-axpy",
            MatPath::JitDot => "jit-dot",
        }
    }
}

/// The generated microkernel that can run `mm`, if any (tile sizes must divide the shape).
pub fn jit_form(mm: &MatMulKernel) -> Option<MatPath> {
    if mm.k == 0 || mm.c.cs != 1 {
        return None;
    }
    if mm.b.cs == 1 && mm.m.is_multiple_of(4) && mm.n.is_multiple_of(8) {
        Some(MatPath::JitAxpy)
    } else if mm.a.cs == 1
        && mm.b.rs == 1
        && mm.m.is_multiple_of(2)
        && mm.n.is_multiple_of(4)
        && mm.k.is_multiple_of(4)
    {
        Some(MatPath::JitDot)
    } else {
        None
    }
}

/// The faster implementation for a GEMM's shape, from the measured table
/// (`cargo bench --bench matmul`): gemm (256-bit FMAs, packed panels) won at every shape of
/// the benchmark models, the smallest being 64 x [64x32x64]; the generated 128-bit
/// microkernel is kept only for tiny products, where a call into gemm costs more than the
/// arithmetic.
pub fn matmul_path(mm: &MatMulKernel) -> MatPath {
    if mm.bias.is_some() {
        return MatPath::Gemm;
    }
    match jit_form(mm) {
        Some(p) if mm.m * mm.n * mm.k <= JIT_MATMUL_MAX_MNK => p,
        _ => MatPath::Gemm,
    }
}

/// Largest `m * n * k` of one product that runs as a generated microkernel.
pub const JIT_MATMUL_MAX_MNK: usize = 1 << 12;

#[derive(Clone, Debug, PartialEq)]
pub enum KernelBody {
    Loop(LoopKernel),
    /// `out[c] = sum_r input(r, c)`; `out` indexed by column only.
    ColReduce {
        rows: usize,
        cols: usize,
        input: Access,
        out: Access,
    },
    MatMul(MatMulKernel),
    /// `out[clamp(ids[i]), j] += src[i * d + j]` after zeroing `out` (`out_rows x d`).
    ScatterAdd {
        ids: BufId,
        src: BufId,
        out: BufId,
        n: usize,
        d: usize,
        out_rows: usize,
    },
}

fn access_bufs(a: &Access, out: &mut Vec<BufId>) {
    out.push(a.buf);
    match &a.rows {
        RowMap::Table { table } => out.push(*table),
        RowMap::Indirect { ids, .. } => out.push(*ids),
        RowMap::Affine { .. } => {}
    }
}

impl KernelBody {
    /// Buffers the kernel reads or writes (with repeats).
    pub fn buffers(&self) -> Vec<BufId> {
        let mut v = vec![];
        match self {
            KernelBody::Loop(l) => {
                for n in &l.nodes {
                    match &n.expr {
                        KExpr::Load(a) => access_bufs(a, &mut v),
                        KExpr::OneHot { ids, .. } => access_bufs(ids, &mut v),
                        KExpr::TopKMask { x, .. } => access_bufs(x, &mut v),
                        KExpr::Const(_)
                        | KExpr::Unary(..)
                        | KExpr::Binary(..)
                        | KExpr::RowSum(_)
                        | KExpr::RowMax(_)
                        | KExpr::CausalMask { .. } => {}
                    }
                }
                for s in &l.stores {
                    access_bufs(&s.access, &mut v);
                }
            }
            KernelBody::ColReduce { input, out, .. } => {
                access_bufs(input, &mut v);
                access_bufs(out, &mut v);
            }
            KernelBody::MatMul(mm) => {
                v.extend([mm.a.buf, mm.b.buf, mm.c.buf]);
                if let Some(bias) = &mm.bias {
                    access_bufs(bias, &mut v);
                }
            }
            KernelBody::ScatterAdd { ids, src, out, .. } => v.extend([*ids, *src, *out]),
        }
        v
    }

    /// Buffers the kernel writes.
    pub fn written(&self) -> Vec<BufId> {
        match self {
            KernelBody::Loop(l) => l.stores.iter().map(|s| s.access.buf).collect(),
            KernelBody::ColReduce { out, .. } => vec![out.buf],
            KernelBody::MatMul(mm) => vec![mm.c.buf],
            KernelBody::ScatterAdd { out, .. } => vec![*out],
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// IR nodes this kernel computes (for the printer and kernel counting).
    pub nodes: Vec<u32>,
    /// The scope of its first node, for readable dumps.
    pub scope: String,
    pub body: KernelBody,
}

/// An output of the program: a contiguous region of a buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramOutput {
    pub name: String,
    pub buf: BufId,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// A graph lowered to kernels.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub name: String,
    pub buffers: Vec<BufInfo>,
    pub kernels: Vec<Kernel>,
    /// Buffer of each graph input, in graph order.
    pub inputs: Vec<BufId>,
    /// Buffer of each graph parameter, in graph order.
    pub params: Vec<BufId>,
    pub outputs: Vec<ProgramOutput>,
    /// Graph inputs used as indices, with the exclusive bound their values must respect.
    pub index_inputs: Vec<(usize, usize)>,
    /// Outputs stored straight into the parameters they replace, and the guards of that.
    pub in_place: InPlace,
}

impl Program {
    /// Kernels that do work (every kernel; kept as a function so tests read clearly).
    pub fn kernel_count(&self) -> usize {
        self.kernels.len()
    }

    /// Floating-point operations of one run, counting a multiply-add as two (GEMMs only;
    /// elementwise work is small beside them).
    pub fn matmul_flops(&self) -> f64 {
        self.kernels
            .iter()
            .map(|k| match &k.body {
                KernelBody::MatMul(mm) => 2.0 * (mm.m * mm.n * mm.k * mm.a.offsets.len()) as f64,
                _ => 0.0,
            })
            .sum()
    }
}

/// Smallest and largest element offsets an access touches over `rows x cols` (or `None` when
/// it has no rows), given the table contents.
pub fn access_extent(
    a: &Access,
    rows: usize,
    cols: usize,
    buffers: &[BufInfo],
) -> Result<Option<(i64, i64)>, AccessError> {
    if rows == 0 || cols == 0 {
        return Ok(None);
    }
    let (rmin, rmax) = match &a.rows {
        RowMap::Affine { stride } => {
            let last = (rows as i64 - 1) * stride;
            (last.min(0), last.max(0))
        }
        RowMap::Table { table } => match &buffers.get(table.index()).map(|b| &b.kind) {
            Some(BufKind::Table(t)) if t.len() >= rows => {
                let t = &t[..rows];
                let lo = t.iter().copied().min().unwrap_or(0) as i64;
                let hi = t.iter().copied().max().unwrap_or(0) as i64;
                (lo, hi)
            }
            _ => return Err(AccessError::NotATable { table: *table }),
        },
        RowMap::Indirect {
            ids,
            ids_offset,
            limit,
            stride,
        } => {
            let ib = buffers
                .get(ids.index())
                .ok_or(AccessError::NoIdsBuffer { ids: *ids })?;
            if *ids_offset < 0 || (*ids_offset as usize) + rows > ib.len || ib.dtype != DType::I32 {
                return Err(AccessError::IdsTooShort { ids: *ids, rows });
            }
            if *limit <= 0 {
                return Err(AccessError::EmptyTable);
            }
            let last = (limit - 1) * stride;
            (last.min(0), last.max(0))
        }
    };
    let clast = (cols as i64 - 1) * a.col_stride;
    Ok(Some((
        a.offset + rmin + clast.min(0),
        a.offset + rmax + clast.max(0),
    )))
}

/// Check an access stays inside its buffer over the domain: an internal error otherwise,
/// naming kernel `kernel` and the `part` of it that makes the access.
pub fn check_access(
    kernel: usize,
    part: &str,
    a: &Access,
    rows: usize,
    cols: usize,
    buffers: &[BufInfo],
) -> Result<(), KernelError> {
    let fail = |problem| KernelError::Check {
        kernel,
        part: part.to_string(),
        problem,
    };
    let b = buffers
        .get(a.buf.index())
        .ok_or_else(|| fail(CheckProblem::UndefinedBuffer { buf: a.buf }))?;
    if let Some((lo, hi)) =
        access_extent(a, rows, cols, buffers).map_err(|e| fail(CheckProblem::Access(e)))?
    {
        if lo < 0 || hi >= b.len as i64 {
            return Err(fail(CheckProblem::OutOfBounds {
                buf: a.buf,
                lo,
                hi,
                len: b.len,
            }));
        }
    }
    Ok(())
}

/// Check every access of every kernel against its buffer's extent.
pub fn check_program(p: &Program) -> Result<(), KernelError> {
    for (ki, k) in p.kernels.iter().enumerate() {
        let fail = |part: &str, problem| KernelError::Check {
            kernel: ki,
            part: part.to_string(),
            problem,
        };
        let check =
            |part: &str, a: &Access, rows, cols| check_access(ki, part, a, rows, cols, &p.buffers);
        match &k.body {
            KernelBody::Loop(l) => {
                for (i, n) in l.nodes.iter().enumerate() {
                    let args: Vec<usize> = match &n.expr {
                        KExpr::Load(a) => {
                            let cols = if n.kind == Kind::Row { 1 } else { l.cols };
                            check(&format!("load v{i}"), a, l.rows, cols)?;
                            vec![]
                        }
                        KExpr::OneHot { ids, .. } => {
                            check("one_hot ids", ids, l.rows, 1)?;
                            vec![]
                        }
                        KExpr::TopKMask { x, .. } => {
                            check("topk_mask input", x, l.rows, l.cols)?;
                            vec![]
                        }
                        KExpr::Unary(_, a) | KExpr::RowSum(a) | KExpr::RowMax(a) => vec![*a],
                        KExpr::CausalMask { x, .. } => vec![*x],
                        KExpr::Binary(_, a, b) => vec![*a, *b],
                        KExpr::Const(_) => vec![],
                    };
                    if args.iter().any(|&a| a >= i) {
                        return Err(fail("node", CheckProblem::LaterValue { value: i }));
                    }
                }
                for s in &l.stores {
                    if s.value >= l.nodes.len() {
                        return Err(fail("", CheckProblem::UndefinedStore { value: s.value }));
                    }
                    let cols = if s.col { l.cols } else { 1 };
                    check("store", &s.access, l.rows, cols)?;
                }
            }
            KernelBody::ColReduce {
                rows,
                cols,
                input,
                out,
            } => {
                check("col_reduce input", input, *rows, *cols)?;
                check("col_reduce output", out, 1, *cols)?;
            }
            KernelBody::MatMul(mm) => {
                let ops = [
                    (&mm.a, mm.m, mm.k),
                    (&mm.b, mm.k, mm.n),
                    (&mm.c, mm.m, mm.n),
                ];
                let batch = mm.c.offsets.len();
                for (op, r, c) in ops {
                    if op.offsets.len() != batch {
                        return Err(fail("matmul", CheckProblem::BatchMismatch));
                    }
                    for &off in &op.offsets {
                        let a = Access {
                            buf: op.buf,
                            offset: off,
                            rows: RowMap::Affine { stride: op.rs },
                            col_stride: op.cs,
                        };
                        check("matmul operand", &a, r, c)?;
                    }
                }
                if let Some(bias) = &mm.bias {
                    check("matmul bias", bias, 1, mm.n)?;
                    if mm.path != MatPath::Gemm {
                        return Err(fail("matmul", CheckProblem::BiasOffGemm));
                    }
                }
            }
            KernelBody::ScatterAdd {
                ids,
                src,
                out,
                n,
                d,
                out_rows,
            } => {
                let len = |b: &BufId| p.buffers.get(b.index()).map(|x| x.len).unwrap_or(0);
                if len(ids) < *n || len(src) < n * d || len(out) < out_rows * d {
                    return Err(fail("scatter_add", CheckProblem::ScatterOutOfRange));
                }
            }
        }
    }
    Ok(())
}
