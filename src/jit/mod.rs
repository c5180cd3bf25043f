//! Cranelift code generation for loop and column-reduction kernels.
//!
//! Every generated function has the signature
//! `fn(base: *mut u8, begin: i64, end: i64, bufs: *const i64)`: `base` is the arena,
//! `bufs[i]` the byte offset of the kernel's `i`-th buffer (in order of first use), and
//! `begin..end` the range of rows (loop kernels) or columns (column reductions) to process,
//! so the runtime can split a kernel across threads. Because buffer addresses are arguments,
//! kernels that differ only in their buffers (the same sublayer in every layer) share one
//! compiled function: each distinct kernel is compiled once, on all cores.
//!
//! Loop kernels iterate rows; each row runs column passes over `f32x4` vectors, unrolled 4x
//! in the main loop, then the remaining whole vectors and a scalar tail, straight-line (the
//! column count is a compile-time constant). Row reductions of level `l` are accumulated in
//! pass `l - 1`; a stored column value of level `l` is written in pass `l`.

mod error;
pub mod math;
pub mod matmul;

pub use error::{CodegenError, JitError};

use crate::ir::{BinaryOp, UnaryOp};
use crate::kernels::{
    Access, BufId, KExpr, KernelBody, Kind, LoopKernel, MatPath, Program, RowMap,
};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use math::Math;
use std::collections::HashMap;

/// A compiled kernel: `(arena, begin, end, buffer byte offsets)`.
pub type KernelFn = unsafe extern "C" fn(*mut u8, i64, i64, *const i64);

/// Code generation choices that change the emitted CLIF.
#[derive(Clone, Copy, Debug)]
pub struct CodegenOptions {
    /// Use `fma` (only when the CPU has it).
    pub fma: bool,
    /// Vectors per main-loop iteration.
    pub unroll: usize,
}

impl CodegenOptions {
    pub fn host() -> CodegenOptions {
        CodegenOptions {
            fma: host_has_fma(),
            unroll: 4,
        }
    }
}

pub fn host_has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !baseline_cpu() && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The JIT-compiled kernels of a program; `fns[k]` is `None` for kernels the runtime runs
/// itself (GEMM calls, scatter-add).
pub struct CompiledKernels {
    _module: JITModule,
    pub fns: Vec<Option<KernelFn>>,
    /// Byte offsets of each kernel's buffers, the last argument of its function.
    pub bufs: Vec<Vec<i64>>,
    /// Distinct generated functions (kernels sharing code count once).
    pub distinct: usize,
}

// The module owns executable memory only; the function pointers are plain code.
unsafe impl Send for CompiledKernels {}
unsafe impl Sync for CompiledKernels {}

fn signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    // arena base, begin, end, buffer offset table
    for _ in 0..4 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// The Cranelift settings of every module: optimized code; the IR verifier checks our code
/// generator, not user input, so debug builds (and so every test) run it and release builds
/// skip it, which saves a good part of compile time.
fn shared_flags() -> Result<settings::Flags, JitError> {
    let mut flags = settings::builder();
    let verify = if cfg!(debug_assertions) {
        "true"
    } else {
        "false"
    };
    for (name, value) in [("opt_level", "speed"), ("enable_verifier", verify)] {
        flags
            .set(name, value)
            .map_err(|e| JitError::Host(e.to_string()))?;
    }
    Ok(settings::Flags::new(flags))
}

/// Whether `LAMINA_CPU=baseline` asks for code that runs on any x86-64 CPU: SSE2 only,
/// no AVX, AVX2 or FMA, whatever this host has. It is how the portable path is tested on a
/// machine that has the rest.
pub fn baseline_cpu() -> bool {
    cfg!(target_arch = "x86_64") && std::env::var_os("LAMINA_CPU").is_some_and(|v| v == "baseline")
}

fn new_module() -> Result<JITModule, JitError> {
    let flags = shared_flags()?;
    let builder = if baseline_cpu() {
        cranelift_codegen::isa::lookup_by_name("x86_64-unknown-linux-gnu")
            .map_err(|e| JitError::Target(e.to_string()))?
    } else {
        cranelift_native::builder()
            .map_err(|e| JitError::Host(format!("no JIT for this host: {e}")))?
    };
    let isa = builder
        .finish(flags)
        .map_err(|e| JitError::Host(e.to_string()))?;
    Ok(JITModule::new(JITBuilder::with_isa(
        isa,
        default_libcall_names(),
    )))
}

/// Whether kernel `k` is generated code.
fn is_generated(p: &Program, k: usize) -> bool {
    match &p.kernels[k].body {
        KernelBody::Loop(_) | KernelBody::ColReduce { .. } => true,
        KernelBody::MatMul(mm) => mm.path != MatPath::Gemm,
        KernelBody::ScatterAdd { .. } => false,
    }
}

/// A kernel body with its buffers renumbered `b0, b1, ...` in order of first use, and the
/// real buffers in that order: kernels with equal canonical bodies share code.
pub fn canonical(body: &KernelBody) -> (KernelBody, Vec<BufId>) {
    let mut body = body.clone();
    let mut bufs: Vec<BufId> = vec![];
    let mut seen: HashMap<BufId, u32> = HashMap::new();
    let mut slot = |b: &mut BufId| {
        let i = *seen.entry(*b).or_insert_with(|| {
            bufs.push(*b);
            bufs.len() as u32 - 1
        });
        *b = BufId(i);
    };
    let mut access = |a: &mut Access| {
        slot(&mut a.buf);
        match &mut a.rows {
            RowMap::Affine { .. } => {}
            RowMap::Table { table } => slot(table),
            RowMap::Indirect { ids, .. } => slot(ids),
        }
    };
    match &mut body {
        KernelBody::Loop(l) => {
            for n in &mut l.nodes {
                match &mut n.expr {
                    KExpr::Load(a) => access(a),
                    KExpr::OneHot { ids, .. } => access(ids),
                    KExpr::TopKMask { x, .. } => access(x),
                    KExpr::Const(_)
                    | KExpr::Unary(..)
                    | KExpr::Binary(..)
                    | KExpr::RowSum(_)
                    | KExpr::RowMax(_)
                    | KExpr::CausalMask { .. } => {}
                }
            }
            for st in &mut l.stores {
                access(&mut st.access);
            }
        }
        KernelBody::ColReduce { input, out, .. } => {
            access(input);
            access(out);
        }
        // Operand addresses (per batch item) come from the runtime's table.
        KernelBody::MatMul(mm) => {
            for (i, o) in [&mut mm.a, &mut mm.b, &mut mm.c].into_iter().enumerate() {
                o.buf = BufId(i as u32);
                o.offsets.clear();
            }
        }
        KernelBody::ScatterAdd { .. } => {}
    }
    (body, bufs)
}

/// Build the CLIF of a canonical kernel body.
fn build_function(
    body: &KernelBody,
    name: u32,
    opts: CodegenOptions,
    call_conv: CallConv,
    fcfg: TargetFrontendConfig,
    fbc: &mut FunctionBuilderContext,
) -> Result<Function, CodegenError> {
    let mut func = Function::with_name_signature(UserFuncName::user(0, name), signature(call_conv));
    {
        let mut b = FunctionBuilder::new(&mut func, fbc);
        let mut g = Gen {
            math: Math { fma: opts.fma },
            bufs: vec![],
            unroll: opts.unroll.max(1),
        };
        match body {
            KernelBody::Loop(l) => g.loop_kernel(&mut b, l)?,
            KernelBody::ColReduce {
                rows,
                cols,
                input,
                out,
            } => g.col_reduce(&mut b, *rows, *cols, input, out)?,
            KernelBody::MatMul(mm) => g.matmul(&mut b, mm)?,
            _ => return Err(CodegenError::NotGenerated),
        }
        b.seal_all_blocks();
        b.finalize(fcfg);
    }
    Ok(func)
}

/// Compile every generated kernel of `p` for this host, buffer `b` at element `offsets[b]`.
/// Kernels with equal canonical bodies share one function; distinct ones compile in parallel.
pub fn compile(p: &Program, offsets: &[usize]) -> Result<CompiledKernels, JitError> {
    use rayon::prelude::*;
    let mut module = new_module()?;
    let opts = CodegenOptions::host();
    let cc = module.isa().default_call_conv();
    let fcfg = module.target_config();
    // Distinct canonical bodies, and which one each kernel uses.
    let mut distinct: Vec<KernelBody> = vec![];
    // The first kernel of each distinct body, which errors name.
    let mut first: Vec<usize> = vec![];
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut which = vec![None; p.kernels.len()];
    let mut bufs = vec![vec![]; p.kernels.len()];
    for (k, kernel) in p.kernels.iter().enumerate() {
        if !is_generated(p, k) {
            continue;
        }
        let (body, real) = canonical(&kernel.body);
        bufs[k] = match &kernel.body {
            // A, B and C of each batch item in turn.
            KernelBody::MatMul(mm) => (0..mm.c.offsets.len())
                .flat_map(|i| {
                    [&mm.a, &mm.b, &mm.c]
                        .map(|o| 4 * (offsets[o.buf.index()] as i64 + o.offsets[i]))
                })
                .collect(),
            _ => real.iter().map(|b| 4 * offsets[b.index()] as i64).collect(),
        };
        let key = format!("{body:?}");
        let d = *index.entry(key).or_insert_with(|| {
            distinct.push(body);
            first.push(k);
            distinct.len() - 1
        });
        which[k] = Some(d);
    }
    let isa = module.isa();
    let code: Vec<Result<(Vec<u8>, u64), JitError>> = distinct
        .par_iter()
        .enumerate()
        .map(|(d, body)| {
            let fail = |problem| JitError::Kernel {
                kernel: first[d],
                problem,
            };
            let mut fbc = FunctionBuilderContext::new();
            let func = build_function(body, d as u32, opts, cc, fcfg, &mut fbc).map_err(fail)?;
            let mut ctx = cranelift_codegen::Context::for_function(func);
            let mut cp = cranelift_codegen::control::ControlPlane::default();
            let compiled = ctx
                .compile(isa, &mut cp)
                .map_err(|e| fail(CodegenError::Rejected(format!("{e:?}"))))?;
            if !compiled.buffer.relocs().is_empty() {
                return Err(fail(CodegenError::Relocations));
            }
            let align = (compiled.buffer.alignment as u64)
                .max(isa.function_alignment().minimum as u64)
                .max(isa.symbol_alignment());
            Ok((compiled.code_buffer().to_vec(), align))
        })
        .collect();
    let mut ids = vec![];
    for (d, c) in code.into_iter().enumerate() {
        let (bytes, align) = c?;
        let id = module
            .declare_function(&format!("k{d}"), Linkage::Local, &signature(cc))
            .map_err(|e| JitError::Module(e.to_string()))?;
        module
            .define_function_bytes(id, align, &bytes, &[])
            .map_err(|e| JitError::Module(e.to_string()))?;
        ids.push(id);
    }
    module
        .finalize_definitions()
        .map_err(|e| JitError::Module(e.to_string()))?;
    let ptrs: Vec<KernelFn> = ids
        .iter()
        .map(|&id| {
            let ptr = module.get_finalized_function(id);
            // SAFETY: defined above with exactly this signature.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) }
        })
        .collect();
    let fns = which.iter().map(|w| w.map(|d| ptrs[d])).collect();
    Ok(CompiledKernels {
        _module: module,
        fns,
        bufs,
        distinct: distinct.len(),
    })
}

/// The CLIF of every generated kernel, for `--stage clif`: built for a fixed target
/// (x86-64 System V, FMA on) so the text does not depend on the host.
pub fn clif_text(p: &Program) -> Result<String, JitError> {
    let opts = CodegenOptions {
        fma: true,
        unroll: 4,
    };
    let mut ib = cranelift_codegen::isa::lookup_by_name("x86_64-unknown-linux-gnu")
        .map_err(|e| JitError::Target(e.to_string()))?;
    for f in [
        "has_sse3",
        "has_ssse3",
        "has_sse41",
        "has_sse42",
        "has_avx",
        "has_avx2",
        "has_fma",
    ] {
        ib.enable(f).map_err(|e| JitError::Target(e.to_string()))?;
    }
    let flags = shared_flags()?;
    let isa = ib
        .finish(flags)
        .map_err(|e| JitError::Host(e.to_string()))?;
    let fcfg = isa.frontend_config();
    let mut fbc = FunctionBuilderContext::new();
    let mut out = String::new();
    for k in 0..p.kernels.len() {
        if !is_generated(p, k) {
            continue;
        }
        let (body, _) = canonical(&p.kernels[k].body);
        let func = build_function(&body, k as u32, opts, CallConv::SystemV, fcfg, &mut fbc)
            .map_err(|problem| JitError::Kernel { kernel: k, problem })?;
        out.push_str(&format!("; k{k}\n{}\n", func.display()));
    }
    Ok(out)
}

/// Arena accesses: in bounds by construction (checked when kernels are built), and not
/// 16-byte aligned in general.
fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

struct Gen {
    math: Math,
    /// Address of each (canonical) buffer, computed in the entry block.
    bufs: Vec<Value>,
    unroll: usize,
}

/// Where the current column is: a loop variable or a constant.
#[derive(Clone, Copy)]
enum ColPos {
    Var(Value, i64),
    Const(i64),
}

/// The per-row state of a loop kernel.
struct RowState {
    r: Value,
    base: Value,
    /// Row pointer (bytes) of each access, by node index (loads) or store index.
    load_ptr: HashMap<usize, Value>,
    row_vals: HashMap<usize, Value>,
    /// Costly column values needed in several passes: the stack row that holds them and
    /// the pass that writes it (later passes read it instead of recomputing).
    spill: HashMap<usize, (Value, usize)>,
    pass: usize,
}

/// What one column pass of a row computes: reductions `(node, operand, is_max)` and the
/// column stores (by index, with every store's row pointer).
struct PassWork<'a> {
    l: &'a LoopKernel,
    st: &'a RowState,
    reds: &'a [(usize, usize, bool)],
    stores: &'a [usize],
    store_ptr: &'a [Value],
}

/// The identity of a row reduction.
fn ident(max: bool) -> f32 {
    if max {
        f32::NEG_INFINITY
    } else {
        0.0
    }
}

/// Combine two partial row reductions.
fn combine(b: &mut FunctionBuilder, max: bool, x: Value, y: Value) -> Value {
    if max {
        b.ins().fmax(x, y)
    } else {
        b.ins().fadd(x, y)
    }
}

/// Column ops worth keeping in a scratch row rather than recomputing in a later pass.
fn costly(e: &KExpr) -> bool {
    match e {
        KExpr::Unary(op, _) => match op {
            UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Gelu
            | UnaryOp::GeluTanh
            | UnaryOp::Silu
            | UnaryOp::Rsqrt
            | UnaryOp::Recip => true,
            UnaryOp::Neg
            | UnaryOp::StopGradient
            | UnaryOp::Sqrt
            | UnaryOp::Relu
            | UnaryOp::Scale { .. }
            | UnaryOp::AddScalar { .. } => false,
        },
        KExpr::Binary(op, _, _) => match op {
            BinaryOp::Div | BinaryOp::GeluGrad | BinaryOp::GeluTanhGrad | BinaryOp::SiluGrad => {
                true
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::ReluGrad => false,
        },
        // A pass over the whole row per column.
        KExpr::TopKMask { .. } => true,
        KExpr::Load(_)
        | KExpr::Const(_)
        | KExpr::RowSum(_)
        | KExpr::RowMax(_)
        | KExpr::OneHot { .. }
        | KExpr::CausalMask { .. } => false,
    }
}

/// Largest scratch row (bytes) a loop kernel keeps on the stack.
const SPILL_BYTES: usize = 1 << 15;

impl Gen {
    /// The entry block: function parameters, and every buffer's address from the table.
    fn entry(&mut self, b: &mut FunctionBuilder, nbufs: usize) -> Vec<Value> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let (base, table) = (params[0], params[3]);
        self.bufs = (0..nbufs)
            .map(|i| {
                let off = b.ins().load(I64, flags(), table, 8 * i as i32);
                b.ins().iadd(base, off)
            })
            .collect();
        params
    }

    /// Pointer to element `(r, 0)` of an access.
    fn row_ptr(&self, b: &mut FunctionBuilder, base: Value, r: Value, a: &Access) -> Value {
        let _ = base;
        let start = b.ins().iadd_imm_s(self.bufs[a.buf.index()], 4 * a.offset);
        let off = match &a.rows {
            RowMap::Affine { stride: 0 } => return start,
            RowMap::Affine { stride } => b.ins().imul_imm_s(r, 4 * stride),
            RowMap::Table { table } => {
                let r4 = b.ins().ishl_imm_s(r, 2);
                let addr = b.ins().iadd(self.bufs[table.index()], r4);
                let t = b.ins().load(I32, flags(), addr, 0);
                let t = b.ins().sextend(I64, t);
                b.ins().ishl_imm_s(t, 2)
            }
            RowMap::Indirect {
                ids,
                ids_offset,
                limit,
                stride,
            } => {
                let r4 = b.ins().ishl_imm_s(r, 2);
                let addr = b.ins().iadd(self.bufs[ids.index()], r4);
                let id = b.ins().load(I32, flags(), addr, 4 * *ids_offset as i32);
                let zero = b.ins().iconst(I32, 0);
                let hi = b.ins().iconst(I32, limit - 1);
                let id = b.ins().smax(id, zero);
                let id = b.ins().smin(id, hi);
                let id = b.ins().sextend(I64, id);
                b.ins().imul_imm_s(id, 4 * stride)
            }
        };
        b.ins().iadd(start, off)
    }

    /// Load the column vector (or lane-0 scalar when `scalar`) at `pos`.
    fn load_col(
        &self,
        b: &mut FunctionBuilder,
        ptr: Value,
        cs: i64,
        pos: ColPos,
        scalar: bool,
    ) -> Value {
        let (addr, imm) = match pos {
            ColPos::Var(c, add) => {
                let o = b.ins().imul_imm_s(c, 4 * cs);
                (b.ins().iadd(ptr, o), add * 4 * cs)
            }
            ColPos::Const(c) => (ptr, c * 4 * cs),
        };
        if scalar {
            let s = b.ins().load(F32, flags(), addr, imm as i32);
            return self.math.from_scalar(b, s);
        }
        if cs == 1 {
            return b.ins().load(F32X4, flags(), addr, imm as i32);
        }
        let s0 = b.ins().load(F32, flags(), addr, imm as i32);
        let mut v = b.ins().splat(F32X4, s0);
        for l in 1..4u8 {
            let s = b
                .ins()
                .load(F32, flags(), addr, (imm + l as i64 * 4 * cs) as i32);
            v = b.ins().insertlane(v, s, l);
        }
        v
    }

    fn store_col(
        &self,
        b: &mut FunctionBuilder,
        ptr: Value,
        cs: i64,
        pos: ColPos,
        v: Value,
        scalar: bool,
    ) {
        let (addr, imm) = match pos {
            ColPos::Var(c, add) => {
                let o = b.ins().imul_imm_s(c, 4 * cs);
                (b.ins().iadd(ptr, o), add * 4 * cs)
            }
            ColPos::Const(c) => (ptr, c * 4 * cs),
        };
        if scalar {
            let s = self.math.lane0(b, v);
            b.ins().store(flags(), s, addr, imm as i32);
        } else if cs == 1 {
            b.ins().store(flags(), v, addr, imm as i32);
        } else {
            for l in 0..4u8 {
                let s = b.ins().extractlane(v, l);
                b.ins()
                    .store(flags(), s, addr, (imm + l as i64 * 4 * cs) as i32);
            }
        }
    }

    /// Column indices `c .. c+3` as floats.
    fn col_index(&self, b: &mut FunctionBuilder, pos: ColPos) -> Value {
        let c0 = match pos {
            ColPos::Var(c, add) => {
                let c = b.ins().iadd_imm_s(c, add);
                let f = b.ins().fcvt_from_sint(F32, c);
                b.ins().splat(F32X4, f)
            }
            ColPos::Const(c) => self.math.splat(b, c as f32),
        };
        let z = b.ins().f32const(0.0);
        let mut iota = b.ins().splat(F32X4, z);
        for l in 1..4u8 {
            let s = b.ins().f32const(l as f32);
            iota = b.ins().insertlane(iota, s, l);
        }
        b.ins().fadd(c0, iota)
    }

    /// Evaluate a `Row` node (memoized for the row; a splat vector).
    fn row_val(
        &self,
        b: &mut FunctionBuilder,
        l: &LoopKernel,
        st: &mut RowState,
        n: usize,
    ) -> Result<Value, CodegenError> {
        if let Some(&v) = st.row_vals.get(&n) {
            return Ok(v);
        }
        let v = match &l.nodes[n].expr {
            KExpr::Load(a) => {
                let ptr = self.row_ptr(b, st.base, st.r, a);
                let s = b.ins().load(F32, flags(), ptr, 0);
                b.ins().splat(F32X4, s)
            }
            KExpr::Const(c) => self.math.splat(b, *c),
            KExpr::Unary(op, a) => {
                let x = self.row_val(b, l, st, *a)?;
                self.math.unary(b, op, x)
            }
            KExpr::Binary(op, x, y) => {
                let x = self.row_val(b, l, st, *x)?;
                let y = self.row_val(b, l, st, *y)?;
                self.math.binary(b, op, x, y)
            }
            _ => return Err(CodegenError::RowValueNotReady { value: n }),
        };
        st.row_vals.insert(n, v);
        Ok(v)
    }

    /// Evaluate a `Col` node at `pos` (memoized in `memo` for this column position).
    #[allow(clippy::too_many_arguments)]
    fn col_val(
        &self,
        b: &mut FunctionBuilder,
        l: &LoopKernel,
        st: &RowState,
        n: usize,
        pos: ColPos,
        scalar: bool,
        memo: &mut HashMap<usize, Value>,
    ) -> Result<Value, CodegenError> {
        if let Some(&v) = memo.get(&n) {
            return Ok(v);
        }
        if l.nodes[n].kind == Kind::Row {
            return st
                .row_vals
                .get(&n)
                .copied()
                .ok_or(CodegenError::RowValueUnset { value: n });
        }
        let spill = st.spill.get(&n).copied();
        if let Some((slot, first)) = spill {
            if first < st.pass {
                let v = self.load_col(b, slot, 1, pos, scalar);
                memo.insert(n, v);
                return Ok(v);
            }
        }
        let v = match &l.nodes[n].expr {
            KExpr::Load(a) => {
                let ptr = st.load_ptr[&n];
                self.load_col(b, ptr, a.col_stride, pos, scalar)
            }
            KExpr::Unary(op, a) => {
                let x = self.col_val(b, l, st, *a, pos, scalar, memo)?;
                self.math.unary(b, op, x)
            }
            KExpr::Binary(op, x, y) => {
                // a * b + c as one fma
                if *op == BinaryOp::Add && self.math.fma {
                    if let KExpr::Binary(BinaryOp::Mul, p, q) = &l.nodes[*x].expr {
                        if !memo.contains_key(x) && l.nodes[*x].kind == Kind::Col {
                            let p = self.col_val(b, l, st, *p, pos, scalar, memo)?;
                            let q = self.col_val(b, l, st, *q, pos, scalar, memo)?;
                            let yv = self.col_val(b, l, st, *y, pos, scalar, memo)?;
                            let v = b.ins().fma(p, q, yv);
                            memo.insert(n, v);
                            return Ok(v);
                        }
                    }
                }
                let xv = self.col_val(b, l, st, *x, pos, scalar, memo)?;
                let yv = self.col_val(b, l, st, *y, pos, scalar, memo)?;
                self.math.binary(b, op, xv, yv)
            }
            KExpr::CausalMask { x, fill } => {
                let xv = self.col_val(b, l, st, *x, pos, scalar, memo)?;
                let ci = self.col_index(b, pos);
                let t = b.ins().urem_imm_u(st.r, l.cols as i64);
                let tf = b.ins().fcvt_from_sint(F32, t);
                let tv = b.ins().splat(F32X4, tf);
                let m = b.ins().fcmp(FloatCC::GreaterThan, ci, tv);
                let m = self.math.to_f(b, m);
                let f = self.math.splat(b, *fill);
                b.ins().bitselect(m, f, xv)
            }
            KExpr::OneHot { .. } => {
                let ptr = st.load_ptr[&n];
                let id = b.ins().load(I32, flags(), ptr, 0);
                let idf = b.ins().fcvt_from_sint(F32, id);
                let idv = b.ins().splat(F32X4, idf);
                let ci = self.col_index(b, pos);
                let m = b.ins().fcmp(FloatCC::Equal, ci, idv);
                let m = self.math.to_f(b, m);
                let one = self.math.splat(b, 1.0);
                b.ins().band(m, one)
            }
            KExpr::TopKMask { x, k } => {
                let ptr = st.load_ptr[&n];
                self.topk_mask(b, ptr, x.col_stride, *k, l.cols, pos, scalar)
            }
            _ => return Err(CodegenError::NotAColumnValue { value: n }),
        };
        if let Some((slot, first)) = spill {
            if first == st.pass {
                self.store_col(b, slot, 1, pos, v, scalar);
            }
        }
        memo.insert(n, v);
        Ok(v)
    }

    /// The top-`k` mask at `pos` of the row at `ptr` (`cols` entries, `cs` apart): a loop over
    /// the row counting, per lane, the entries above the lane's own (greater, or equal at a
    /// lower column); `1.0` where fewer than `k` are. NaN compares false, as in the
    /// interpreter.
    #[allow(clippy::too_many_arguments)]
    fn topk_mask(
        &self,
        b: &mut FunctionBuilder,
        ptr: Value,
        cs: i64,
        k: i64,
        cols: usize,
        pos: ColPos,
        scalar: bool,
    ) -> Value {
        let xc = self.load_col(b, ptr, cs, pos, scalar);
        let ci = self.col_index(b, pos);
        let head = b.create_block();
        b.append_block_param(head, I64);
        b.append_block_param(head, I32X4);
        let done = b.create_block();
        b.append_block_param(done, I32X4);
        let j0 = b.ins().iconst(I64, 0);
        let z = b.ins().iconst(I32, 0);
        let count0 = b.ins().splat(I32X4, z);
        b.ins().jump(head, &[j0.into(), count0.into()]);
        b.switch_to_block(head);
        let (j, count) = (b.block_params(head)[0], b.block_params(head)[1]);
        let off = b.ins().imul_imm_s(j, 4 * cs);
        let addr = b.ins().iadd(ptr, off);
        let xj = b.ins().load(F32, flags(), addr, 0);
        let xj = b.ins().splat(F32X4, xj);
        let jf = b.ins().fcvt_from_sint(F32, j);
        let jv = b.ins().splat(F32X4, jf);
        let greater = b.ins().fcmp(FloatCC::GreaterThan, xj, xc);
        let equal = b.ins().fcmp(FloatCC::Equal, xj, xc);
        let before = b.ins().fcmp(FloatCC::LessThan, jv, ci);
        let tie = b.ins().band(equal, before);
        let above = b.ins().bor(greater, tie);
        // A true lane is all ones (-1): subtracting it counts one.
        let count = b.ins().isub(count, above);
        let next = b.ins().iadd_imm_s(j, 1);
        let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, next, cols as i64);
        b.ins().brif(
            more,
            head,
            &[next.into(), count.into()],
            done,
            &[count.into()],
        );
        b.switch_to_block(done);
        let count = b.block_params(done)[0];
        let kk = b.ins().iconst(I32, k);
        let kv = b.ins().splat(I32X4, kk);
        let keep = b.ins().icmp(IntCC::SignedLessThan, count, kv);
        let keep = self.math.to_f(b, keep);
        let one = self.math.splat(b, 1.0);
        b.ins().band(keep, one)
    }

    fn loop_kernel(&mut self, b: &mut FunctionBuilder, l: &LoopKernel) -> Result<(), CodegenError> {
        let (level, npasses) = levels(l);
        let params = self.entry(b, kernel_buf_count(l));
        let (base, begin, end) = (params[0], params[1], params[2]);
        let head = b.create_block();
        b.append_block_param(head, I64);
        let body = b.create_block();
        let exit = b.create_block();
        b.ins().jump(head, &[begin.into()]);
        b.switch_to_block(head);
        let r = b.block_params(head)[0];
        let more = b.ins().icmp(IntCC::SignedLessThan, r, end);
        b.ins().brif(more, body, &[], exit, &[]);
        b.switch_to_block(body);

        let mut st = RowState {
            r,
            base,
            load_ptr: HashMap::new(),
            row_vals: HashMap::new(),
            spill: HashMap::new(),
            pass: 0,
        };
        st.spill = spill_rows(b, l, &level, npasses);
        let store_ptr = self.row_pointers(b, l, &mut st);
        for pass in 0..npasses {
            self.pass(b, l, &mut st, &level, pass, &store_ptr)?;
        }
        self.row_stores(b, l, &mut st, &store_ptr)?;
        let next = b.ins().iadd_imm_s(r, 1);
        b.ins().jump(head, &[next.into()]);
        b.switch_to_block(exit);
        b.ins().return_(&[]);
        Ok(())
    }

    /// The row pointers of the current row: of every column load, one-hot and top-k (into
    /// `st.load_ptr`), and of every store (returned, by store index).
    fn row_pointers(
        &self,
        b: &mut FunctionBuilder,
        l: &LoopKernel,
        st: &mut RowState,
    ) -> Vec<Value> {
        let (base, r) = (st.base, st.r);
        for (i, node) in l.nodes.iter().enumerate() {
            match &node.expr {
                KExpr::Load(a) if node.kind == Kind::Col => {
                    let p = self.row_ptr(b, base, r, a);
                    st.load_ptr.insert(i, p);
                }
                KExpr::OneHot { ids, .. } => {
                    let p = self.row_ptr(b, base, r, ids);
                    st.load_ptr.insert(i, p);
                }
                KExpr::TopKMask { x, .. } => {
                    let p = self.row_ptr(b, base, r, x);
                    st.load_ptr.insert(i, p);
                }
                _ => {}
            }
        }
        l.stores
            .iter()
            .map(|s| self.row_ptr(b, base, r, &s.access))
            .collect()
    }

    /// Column pass `pass` of a row: the row values it may read, then its reductions (of
    /// level `pass + 1`) and its column stores (of level `pass`).
    fn pass(
        &self,
        b: &mut FunctionBuilder,
        l: &LoopKernel,
        st: &mut RowState,
        level: &[usize],
        pass: usize,
        store_ptr: &[Value],
    ) -> Result<(), CodegenError> {
        st.pass = pass;
        // Row values this pass may read.
        for (i, &lv) in level.iter().enumerate() {
            if l.nodes[i].kind == Kind::Row
                && lv <= pass
                && !matches!(l.nodes[i].expr, KExpr::RowSum(_) | KExpr::RowMax(_))
            {
                self.row_val(b, l, st, i)?;
            }
        }
        let reds: Vec<(usize, usize, bool)> = (0..l.nodes.len())
            .filter_map(|i| match l.nodes[i].expr {
                KExpr::RowSum(a) if level[i] == pass + 1 => Some((i, a, false)),
                KExpr::RowMax(a) if level[i] == pass + 1 => Some((i, a, true)),
                _ => None,
            })
            .collect();
        let stores: Vec<usize> = (0..l.stores.len())
            .filter(|&s| l.stores[s].col && level[l.stores[s].value] == pass)
            .collect();
        for (i, v) in self.column_pass(b, l, st, &reds, &stores, store_ptr)? {
            st.row_vals.insert(i, v);
        }
        Ok(())
    }

    /// Row stores, once per row after every pass.
    fn row_stores(
        &self,
        b: &mut FunctionBuilder,
        l: &LoopKernel,
        st: &mut RowState,
        store_ptr: &[Value],
    ) -> Result<(), CodegenError> {
        let mut row_stored = vec![false; l.nodes.len()];
        for s in l.stores.iter().filter(|s| !s.col) {
            if let Some(x) = row_stored.get_mut(s.value) {
                *x = true;
            }
        }
        for (i, &stored) in row_stored.iter().enumerate() {
            if l.nodes[i].kind == Kind::Row && !st.row_vals.contains_key(&i) {
                if let KExpr::RowSum(_) | KExpr::RowMax(_) = l.nodes[i].expr {
                    continue;
                }
                if stored {
                    self.row_val(b, l, st, i)?;
                }
            }
        }
        for (si, s) in l.stores.iter().enumerate() {
            if !s.col {
                let v = match st.row_vals.get(&s.value) {
                    Some(v) => *v,
                    None => return Err(CodegenError::RowStoreUnset { value: s.value }),
                };
                let x = self.math.lane0(b, v);
                b.ins().store(flags(), x, store_ptr[si], 0);
            }
        }
        Ok(())
    }

    /// One pass over the columns of a row: accumulate `reds` and write `stores`. Returns the
    /// reduced row values (splat vectors).
    fn column_pass(
        &self,
        b: &mut FunctionBuilder,
        l: &LoopKernel,
        st: &RowState,
        reds: &[(usize, usize, bool)],
        stores: &[usize],
        store_ptr: &[Value],
    ) -> Result<Vec<(usize, Value)>, CodegenError> {
        let w = PassWork {
            l,
            st,
            reds,
            stores,
            store_ptr,
        };
        let cols = l.cols as i64;
        let step = 4 * self.unroll as i64;
        let n_main = cols / step * step;
        let n_vec = cols / 4 * 4;
        let mut accs: Vec<Value> = reds
            .iter()
            .map(|&(_, _, max)| self.math.splat(b, ident(max)))
            .collect();
        if n_main > 0 {
            accs = self.unrolled_columns(b, &w, n_main)?;
        }
        let mut c = n_main;
        while c < n_vec {
            let vals = self.emit_at(b, &w, ColPos::Const(c), false)?;
            for (ri, v) in vals.into_iter().enumerate() {
                accs[ri] = combine(b, reds[ri].2, accs[ri], v);
            }
            c += 4;
        }
        // Horizontal reduction, then the scalar tail.
        let mut sc: Vec<Value> = vec![];
        for (ri, &acc) in accs.iter().enumerate() {
            let mut s = b.ins().extractlane(acc, 0);
            for lane in 1..4u8 {
                let x = b.ins().extractlane(acc, lane);
                s = combine(b, reds[ri].2, s, x);
            }
            sc.push(s);
        }
        while c < cols {
            let vals = self.emit_at(b, &w, ColPos::Const(c), true)?;
            for (ri, v) in vals.into_iter().enumerate() {
                let x = self.math.lane0(b, v);
                sc[ri] = combine(b, reds[ri].2, sc[ri], x);
            }
            c += 1;
        }
        Ok(reds
            .iter()
            .zip(sc)
            .map(|(&(i, _, _), s)| (i, b.ins().splat(F32X4, s)))
            .collect())
    }

    /// The main column loop of a pass over columns `0..n_main`, `unroll` vectors per
    /// iteration with an accumulator each; returns each reduction's accumulators combined.
    fn unrolled_columns(
        &self,
        b: &mut FunctionBuilder,
        w: &PassWork,
        n_main: i64,
    ) -> Result<Vec<Value>, CodegenError> {
        let reds = w.reds;
        let u = self.unroll as i64;
        let step = 4 * u;
        let lp = b.create_block();
        let after = b.create_block();
        b.append_block_param(lp, I64);
        let mut init: Vec<cranelift_codegen::ir::BlockArg> = vec![];
        let c0 = b.ins().iconst(I64, 0);
        init.push(c0.into());
        for &(_, _, max) in reds {
            for _ in 0..u {
                let z = self.math.splat(b, ident(max));
                init.push(z.into());
            }
        }
        for _ in 0..reds.len() * u as usize {
            b.append_block_param(lp, F32X4);
            b.append_block_param(after, F32X4);
        }
        b.ins().jump(lp, &init);
        b.switch_to_block(lp);
        let ps = b.block_params(lp).to_vec();
        let c = ps[0];
        let mut next: Vec<Value> = ps[1..].to_vec();
        for j in 0..u {
            let vals = self.emit_at(b, w, ColPos::Var(c, 4 * j), false)?;
            for (ri, v) in vals.into_iter().enumerate() {
                let idx = ri * u as usize + j as usize;
                next[idx] = combine(b, reds[ri].2, next[idx], v);
            }
        }
        let c2 = b.ins().iadd_imm_s(c, step);
        let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, c2, n_main);
        let mut back: Vec<cranelift_codegen::ir::BlockArg> = vec![c2.into()];
        back.extend(
            next.iter()
                .map(|v| cranelift_codegen::ir::BlockArg::from(*v)),
        );
        let out: Vec<cranelift_codegen::ir::BlockArg> = next
            .iter()
            .map(|v| cranelift_codegen::ir::BlockArg::from(*v))
            .collect();
        b.ins().brif(more, lp, &back, after, &out);
        b.switch_to_block(after);
        let ps = b.block_params(after).to_vec();
        Ok((0..reds.len())
            .map(|ri| {
                let mut a = ps[ri * u as usize];
                for j in 1..u as usize {
                    a = combine(b, reds[ri].2, a, ps[ri * u as usize + j]);
                }
                a
            })
            .collect())
    }

    /// The body of a pass at one column position: the reduction operands (returned) and
    /// the column stores.
    fn emit_at(
        &self,
        b: &mut FunctionBuilder,
        w: &PassWork,
        pos: ColPos,
        scalar: bool,
    ) -> Result<Vec<Value>, CodegenError> {
        let (l, st) = (w.l, w.st);
        let mut memo = HashMap::new();
        let mut vals = vec![];
        for &(_, a, _) in w.reds {
            vals.push(self.col_val(b, l, st, a, pos, scalar, &mut memo)?);
        }
        for &s in w.stores {
            let store = &l.stores[s];
            let v = self.col_val(b, l, st, store.value, pos, scalar, &mut memo)?;
            self.store_col(b, w.store_ptr[s], store.access.col_stride, pos, v, scalar);
        }
        Ok(vals)
    }

    /// `out[c] = sum_r input(r, c)` for columns `begin..end`.
    fn col_reduce(
        &mut self,
        b: &mut FunctionBuilder,
        rows: usize,
        _cols: usize,
        input: &Access,
        out: &Access,
    ) -> Result<(), CodegenError> {
        let nbufs = [input, out]
            .iter()
            .flat_map(|a| {
                let extra = match &a.rows {
                    RowMap::Affine { .. } => a.buf.index(),
                    RowMap::Table { table } => table.index(),
                    RowMap::Indirect { ids, .. } => ids.index(),
                };
                [a.buf.index(), extra]
            })
            .max()
            .unwrap_or(0)
            + 1;
        let params = self.entry(b, nbufs);
        let (base, begin, end) = (params[0], params[1], params[2]);
        let vec_ok = input.col_stride == 1 && out.col_stride == 1;
        // Widths: 16 columns (4 vectors), then 4, then 1.
        let widths: Vec<(i64, bool)> = if vec_ok {
            vec![(16, false), (4, false), (1, true)]
        } else {
            vec![(1, true)]
        };
        let mut c_cur = begin;
        for (w, scalar) in widths {
            let head = b.create_block();
            b.append_block_param(head, I64);
            let body = b.create_block();
            let done = b.create_block();
            b.append_block_param(done, I64);
            b.ins().jump(head, &[c_cur.into()]);
            b.switch_to_block(head);
            let c = b.block_params(head)[0];
            let cw = b.ins().iadd_imm_s(c, w);
            let fits = b.ins().icmp(IntCC::SignedLessThanOrEqual, cw, end);
            b.ins().brif(fits, body, &[], done, &[c.into()]);
            b.switch_to_block(body);
            let nv = if scalar { 1 } else { (w / 4) as usize };
            // Row loop accumulating nv vectors.
            let rl = b.create_block();
            b.append_block_param(rl, I64);
            let rdone = b.create_block();
            for _ in 0..nv {
                b.append_block_param(rl, F32X4);
                b.append_block_param(rdone, F32X4);
            }
            let mut init: Vec<cranelift_codegen::ir::BlockArg> = vec![];
            let z = b.ins().iconst(I64, 0);
            init.push(z.into());
            for _ in 0..nv {
                let zv = self.math.splat(b, 0.0);
                init.push(zv.into());
            }
            b.ins().jump(rl, &init);
            b.switch_to_block(rl);
            let ps = b.block_params(rl).to_vec();
            let r = ps[0];
            let ptr = self.row_ptr(b, base, r, input);
            let mut accs = ps[1..].to_vec();
            for (j, acc) in accs.iter_mut().enumerate() {
                let v = self.load_col(
                    b,
                    ptr,
                    input.col_stride,
                    ColPos::Var(c, 4 * j as i64),
                    scalar,
                );
                *acc = b.ins().fadd(*acc, v);
            }
            let r2 = b.ins().iadd_imm_s(r, 1);
            let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, r2, rows as i64);
            let mut back: Vec<cranelift_codegen::ir::BlockArg> = vec![r2.into()];
            back.extend(
                accs.iter()
                    .map(|v| cranelift_codegen::ir::BlockArg::from(*v)),
            );
            let outs: Vec<cranelift_codegen::ir::BlockArg> = accs
                .iter()
                .map(|v| cranelift_codegen::ir::BlockArg::from(*v))
                .collect();
            b.ins().brif(more, rl, &back, rdone, &outs);
            b.switch_to_block(rdone);
            let res = b.block_params(rdone).to_vec();
            let zero = b.ins().iconst(I64, 0);
            let optr = self.row_ptr(b, base, zero, out);
            for (j, v) in res.into_iter().enumerate() {
                self.store_col(
                    b,
                    optr,
                    out.col_stride,
                    ColPos::Var(c, 4 * j as i64),
                    v,
                    scalar,
                );
            }
            b.ins().jump(head, &[cw.into()]);
            b.switch_to_block(done);
            c_cur = b.block_params(done)[0];
        }
        b.ins().return_(&[]);
        Ok(())
    }
}

/// The level of every node of a loop kernel (how many row reductions it depends on in
/// sequence), and the number of column passes a row takes.
fn levels(l: &LoopKernel) -> (Vec<usize>, usize) {
    let n = l.nodes.len();
    let mut level = vec![0usize; n];
    for i in 0..n {
        level[i] = match &l.nodes[i].expr {
            KExpr::Load(_) | KExpr::Const(_) | KExpr::OneHot { .. } | KExpr::TopKMask { .. } => 0,
            KExpr::Unary(_, a) => level[*a],
            KExpr::Binary(_, x, y) => level[*x].max(level[*y]),
            KExpr::CausalMask { x, .. } => level[*x],
            KExpr::RowSum(a) | KExpr::RowMax(a) => level[*a] + 1,
        };
    }
    let mut npasses = 0;
    for (i, node) in l.nodes.iter().enumerate() {
        if matches!(node.expr, KExpr::RowSum(_) | KExpr::RowMax(_)) {
            npasses = npasses.max(level[i]);
        }
    }
    for s in &l.stores {
        if s.col {
            npasses = npasses.max(level[s.value] + 1);
        }
    }
    (level, npasses)
}

/// The column nodes each pass evaluates (reduction operands and stores, through column
/// arguments): the first pass that evaluates each, and whether a later pass needs it again.
fn pass_uses(l: &LoopKernel, level: &[usize], npasses: usize) -> (Vec<Option<usize>>, Vec<bool>) {
    let n = l.nodes.len();
    let mut first_pass: Vec<Option<usize>> = vec![None; n];
    let mut reused = vec![false; n];
    for pass in 0..npasses {
        let mut seen = vec![false; n];
        let mut stack: Vec<usize> = vec![];
        for (i, node) in l.nodes.iter().enumerate() {
            if let KExpr::RowSum(a) | KExpr::RowMax(a) = node.expr {
                if level[i] == pass + 1 {
                    stack.push(a);
                }
            }
        }
        for s in &l.stores {
            if s.col && level[s.value] == pass {
                stack.push(s.value);
            }
        }
        while let Some(i) = stack.pop() {
            if seen[i] || l.nodes[i].kind != Kind::Col {
                continue;
            }
            seen[i] = true;
            match first_pass[i] {
                None => first_pass[i] = Some(pass),
                Some(p) if p < pass => reused[i] = true,
                _ => {}
            }
            match &l.nodes[i].expr {
                KExpr::Unary(_, a) | KExpr::CausalMask { x: a, .. } => stack.push(*a),
                KExpr::Binary(_, x, y) => stack.extend([*x, *y]),
                _ => {}
            }
        }
    }
    (first_pass, reused)
}

/// Stack rows for the costly column values a later pass needs again (up to
/// `SPILL_BYTES`): node -> (row address, the pass that writes it).
fn spill_rows(
    b: &mut FunctionBuilder,
    l: &LoopKernel,
    level: &[usize],
    npasses: usize,
) -> HashMap<usize, (Value, usize)> {
    let (first_pass, reused) = pass_uses(l, level, npasses);
    let mut spill = HashMap::new();
    let mut spill_bytes = 0;
    for i in 0..l.nodes.len() {
        if reused[i] && costly(&l.nodes[i].expr) && spill_bytes + 4 * l.cols <= SPILL_BYTES {
            spill_bytes += 4 * l.cols;
            let slot = b.create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
                cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
                4 * l.cols as u32,
                4,
            ));
            let addr = b.ins().stack_addr(I64, slot, 0);
            spill.insert(i, (addr, first_pass[i].unwrap_or(0)));
        }
    }
    spill
}

/// Buffers of a canonical loop kernel (one past the highest buffer index it uses).
fn kernel_buf_count(l: &LoopKernel) -> usize {
    let mut n = 0;
    let mut see = |a: &Access| {
        n = n.max(a.buf.index() + 1);
        match &a.rows {
            RowMap::Affine { .. } => {}
            RowMap::Table { table } => n = n.max(table.index() + 1),
            RowMap::Indirect { ids, .. } => n = n.max(ids.index() + 1),
        }
    };
    for node in &l.nodes {
        match &node.expr {
            KExpr::Load(a) | KExpr::OneHot { ids: a, .. } | KExpr::TopKMask { x: a, .. } => see(a),
            _ => {}
        }
    }
    for st in &l.stores {
        see(&st.access);
    }
    n
}
