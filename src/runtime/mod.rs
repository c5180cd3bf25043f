//! The runtime: one arena per compiled program, parameters and gradients in f32, and the
//! kernel sequence of a step (generated code, GEMM calls, scatter-adds). Big kernels run on
//! every thread of the current rayon pool (all cores, or `--threads N`): loop kernels split
//! their rows, GEMMs their batch (or use gemm's own threads).
//!
//! Public API:
//! - `compile_graph(&Graph) -> CompiledGraph`: evaluates every graph output (no update);
//!   `load_params` + `step(inputs, writeback)` keep parameters resident in the arena across
//!   runs, copying chosen outputs into parameters; `params()` reads them back.
//! - Before the arena is allocated, `memory::check` compares what the plan needs with the
//!   memory this host allows (`MemoryLimit`), so a step too large is an error, not an abort.

mod error;
pub mod memory;
pub mod plan;

use crate::ir::{DType, Graph, OutputRole};
use crate::jit::{self, CompiledKernels};
use crate::kernels::{
    self, BufKind, BuildOptions, KExpr, KernelBody, LoopKernel, MatMulKernel, MatPath, Program,
    RowMap,
};
use crate::tensor::{try_collect, try_copy, AllocError, Tensor};
pub use error::RuntimeError;
pub use memory::{MemoryBudget, MemoryLimit, OutOfMemory};
pub use plan::{plan, print_plan, Plan};
use std::collections::HashMap;
use std::time::Instant;

/// A program with its memory plan, compiled code and arena.
pub struct Executable {
    pub program: Program,
    pub plan: Plan,
    code: CompiledKernels,
    arena: Vec<f32>,
    /// Whether each kernel may split its range across threads.
    parallel: Vec<bool>,
    /// Seconds spent building kernels, planning and compiling.
    pub compile_seconds: f64,
}

#[derive(Clone, Copy)]
struct ArenaPtr(*mut f32);
unsafe impl Send for ArenaPtr {}
unsafe impl Sync for ArenaPtr {}

impl ArenaPtr {
    // A method call captures the whole (Send + Sync) wrapper in closures, not its field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows times columns above which a loop kernel is split across threads.
const PAR_ELEMS: usize = 1 << 15;

/// Whether the rows of a loop kernel can run on several threads at once: every row writes its
/// own elements and reads, of the buffers the kernel writes, only what that same row writes.
/// - An affine store's rows are `|stride|` apart and span `cols * |col_stride|` (one element
///   for a per-row store), so they are disjoint when the stride covers the span.
/// - A table store comes from a strided view of distinct elements (a permutation of row
///   offsets: the builder never stores through broadcast views), so its rows are disjoint too.
/// - A store through token ids may repeat rows, so it never runs split.
fn split_safe(l: &LoopKernel) -> bool {
    let stores_disjoint = l.stores.iter().all(|s| {
        let span = if s.col {
            (l.cols as i64) * s.access.col_stride.abs()
        } else {
            1
        };
        match s.access.rows {
            RowMap::Affine { stride } => stride != 0 && stride.abs() >= span.max(1),
            RowMap::Table { .. } => true,
            RowMap::Indirect { .. } => false,
        }
    });
    let loads_own_rows = l.nodes.iter().all(|n| match &n.expr {
        KExpr::Load(a) => l
            .stores
            .iter()
            .all(|s| s.access.buf != a.buf || s.access == *a),
        // Reads its whole row: safe when the kernel writes nothing into that buffer.
        KExpr::TopKMask { x, .. } => l.stores.iter().all(|s| s.access.buf != x.buf),
        _ => true,
    });
    stores_disjoint && loads_own_rows
}

impl Executable {
    pub fn new(g: &Graph, opts: &BuildOptions) -> Result<Executable, RuntimeError> {
        let t0 = Instant::now();
        let g = crate::passes::optimize(g);
        let program = kernels::build_program(&g, opts)?;
        let mut exe = Executable::from_program(program)?;
        exe.compile_seconds = t0.elapsed().as_secs_f64();
        Ok(exe)
    }

    /// Plan, compile and allocate an already built (and checked) program, refusing one that
    /// needs more memory than this host allows.
    pub fn from_program(program: Program) -> Result<Executable, RuntimeError> {
        Executable::from_program_with(program, &MemoryLimit::Host)
    }

    /// `from_program` with the memory check's budget taken from `limit`.
    pub fn from_program_with(
        program: Program,
        limit: &MemoryLimit,
    ) -> Result<Executable, RuntimeError> {
        let t0 = Instant::now();
        kernels::check_program(&program)?;
        let plan = plan::plan(&program);
        memory::check(&program, &plan, limit)?;
        let code = jit::compile(&program, &plan.offsets)?;
        let mut arena = alloc_arena(plan.total_elems.max(1))?;
        for (i, b) in program.buffers.iter().enumerate() {
            let off = plan.offsets[i];
            match &b.kind {
                BufKind::Const(d) => arena[off..off + d.len()].copy_from_slice(d),
                BufKind::Table(t) => {
                    for (j, &x) in t.iter().enumerate() {
                        arena[off + j] = f32::from_bits(x as u32);
                    }
                }
                _ => {}
            }
        }
        let parallel = program
            .kernels
            .iter()
            .map(|k| match &k.body {
                KernelBody::Loop(l) => l.rows >= 2 && l.rows * l.cols >= PAR_ELEMS && split_safe(l),
                KernelBody::ColReduce { rows, cols, .. } => *cols >= 32 && rows * cols >= PAR_ELEMS,
                _ => false,
            })
            .collect();
        Ok(Executable {
            program,
            plan,
            code,
            arena,
            parallel,
            compile_seconds: t0.elapsed().as_secs_f64(),
        })
    }

    pub fn peak_bytes(&self) -> usize {
        self.plan.peak_bytes()
    }

    fn region(&self, buf: kernels::BufId) -> (usize, usize) {
        (
            self.plan.offsets[buf.index()],
            self.program.buffers[buf.index()].len,
        )
    }

    /// Copy every parameter of `g` (this executable's graph) into the arena, checking the
    /// count and each type.
    pub fn set_params(&mut self, g: &Graph, params: &[Tensor]) -> Result<(), RuntimeError> {
        if params.len() != g.params.len() {
            return Err(RuntimeError::ParamCount {
                expected: g.params.len(),
                got: params.len(),
            });
        }
        for (i, (t, p)) in params.iter().zip(&g.params).enumerate() {
            if t.ty() != p.ty() {
                return Err(RuntimeError::ParamType {
                    name: p.name.clone(),
                    expected: p.ty(),
                });
            }
            self.set_param(i, t)?;
        }
        Ok(())
    }

    /// Set parameter `i` (converted to f32).
    pub fn set_param(&mut self, i: usize, t: &Tensor) -> Result<(), RuntimeError> {
        let buf = *self
            .program
            .params
            .get(i)
            .ok_or(RuntimeError::NoParam { index: i })?;
        let (off, len) = self.region(buf);
        if t.data.len() != len {
            return Err(RuntimeError::ParamLen {
                index: i,
                expected: len,
                got: t.data.len(),
            });
        }
        for (d, s) in self.arena[off..off + len].iter_mut().zip(&t.data) {
            *d = *s as f32;
        }
        Ok(())
    }

    pub fn param_data(&self, i: usize) -> &[f32] {
        let (off, len) = self.region(self.program.params[i]);
        &self.arena[off..off + len]
    }

    /// Copy the inputs in, checking types and index ranges.
    pub fn set_inputs(&mut self, g: &Graph, inputs: &[Tensor]) -> Result<(), RuntimeError> {
        if inputs.len() != g.inputs.len() {
            return Err(RuntimeError::InputCount {
                graph: g.name.clone(),
                expected: g.inputs.len(),
                got: inputs.len(),
            });
        }
        for (i, (inp, t)) in g.inputs.iter().zip(inputs).enumerate() {
            if t.ty() != inp.ty || t.data.len() != inp.ty.numel() {
                return Err(RuntimeError::InputType {
                    name: inp.name.clone(),
                    expected: inp.ty.clone(),
                    got: t.ty(),
                });
            }
            let (off, _) = self.region(self.program.inputs[i]);
            let dst = &mut self.arena[off..off + t.data.len()];
            match inp.ty.dtype {
                DType::F32 => {
                    for (d, s) in dst.iter_mut().zip(&t.data) {
                        *d = *s as f32;
                    }
                }
                DType::I32 => {
                    for (k, (d, s)) in dst.iter_mut().zip(&t.data).enumerate() {
                        if s.fract() != 0.0 || *s < i32::MIN as f64 || *s > i32::MAX as f64 {
                            return Err(RuntimeError::NotAnInteger {
                                name: inp.name.clone(),
                                element: k,
                                value: *s,
                            });
                        }
                        *d = f32::from_bits(*s as i32 as u32);
                    }
                }
            }
        }
        for &(i, bound) in &self.program.index_inputs {
            let name = &g.inputs[i].name;
            if let Some((k, v)) = inputs[i]
                .data
                .iter()
                .enumerate()
                .find(|(_, v)| **v < 0.0 || **v >= bound as f64)
            {
                return Err(RuntimeError::IndexOutOfRange {
                    name: name.clone(),
                    element: k,
                    value: *v,
                    bound,
                });
            }
        }
        Ok(())
    }

    /// Run every kernel once.
    pub fn run(&mut self) {
        for k in 0..self.program.kernels.len() {
            self.run_kernel(k);
        }
    }

    /// Run every kernel once, timing each (seconds per kernel).
    pub fn run_profiled(&mut self) -> Vec<f64> {
        (0..self.program.kernels.len())
            .map(|k| {
                let t = Instant::now();
                self.run_kernel(k);
                t.elapsed().as_secs_f64()
            })
            .collect()
    }

    fn run_kernel(&mut self, k: usize) {
        let base = ArenaPtr(self.arena.as_mut_ptr());
        let kernel = &self.program.kernels[k];
        {
            match &kernel.body {
                KernelBody::Loop(l) => {
                    let f = self.code.fns[k].expect("loop kernels are compiled");
                    let bufs = ArenaPtr(self.code.bufs[k].as_ptr() as *mut f32);
                    let n = l.rows as i64;
                    split_run(self.parallel[k], n, 1, |a, z| unsafe {
                        f(base.get() as *mut u8, a, z, bufs.get() as *const i64)
                    });
                }
                KernelBody::ColReduce { cols, .. } => {
                    let f = self.code.fns[k].expect("column reductions are compiled");
                    let bufs = ArenaPtr(self.code.bufs[k].as_ptr() as *mut f32);
                    split_run(self.parallel[k], *cols as i64, 16, |a, z| unsafe {
                        f(base.get() as *mut u8, a, z, bufs.get() as *const i64)
                    });
                }
                KernelBody::MatMul(mm) if mm.path != MatPath::Gemm => {
                    let f = self.code.fns[k].expect("generated matmuls are compiled");
                    run_jit_matmul(base, f, &self.code.bufs[k], mm)
                }
                KernelBody::MatMul(mm) => run_matmul(base, &self.plan.offsets, mm),
                KernelBody::ScatterAdd {
                    ids,
                    src,
                    out,
                    n,
                    d,
                    out_rows,
                } => {
                    let o = &self.plan.offsets;
                    let arena = &mut self.arena;
                    let (io, so, oo) = (o[ids.index()], o[src.index()], o[out.index()]);
                    arena[oo..oo + out_rows * d].fill(0.0);
                    for i in 0..*n {
                        let id = arena[io + i].to_bits() as i32;
                        let r = id.clamp(0, *out_rows as i32 - 1) as usize;
                        for j in 0..*d {
                            arena[oo + r * d + j] += arena[so + i * d + j];
                        }
                    }
                }
            }
        }
    }

    /// Output `name` of the last run (`None`: the program has no such output).
    pub fn output(&self, name: &str) -> Option<Result<Tensor, AllocError>> {
        let o = self.program.outputs.iter().find(|o| o.name == name)?;
        Some(self.read_output(o))
    }

    /// A host copy of an output: f64, twice the bytes it has in the arena, so the allocation
    /// can fail where the arena's did not.
    fn read_output(&self, o: &kernels::ProgramOutput) -> Result<Tensor, AllocError> {
        let off = self.plan.offsets[o.buf.index()] + o.offset;
        let n: usize = o.shape.iter().product();
        let data = self.arena[off..off + n].iter().map(|&x| match o.dtype {
            DType::F32 => x as f64,
            DType::I32 => x.to_bits() as i32 as f64,
        });
        let what = || format!("output {}", o.name);
        Ok(Tensor::new(
            o.dtype,
            o.shape.clone(),
            try_collect(n, data, what)?,
        ))
    }

    /// Every output of the last run, in program order (an output name that repeats reads
    /// its first output, as `output` does).
    pub fn outputs(&self) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let mut first: HashMap<&str, &kernels::ProgramOutput> = HashMap::new();
        for o in &self.program.outputs {
            first.entry(o.name.as_str()).or_insert(o);
        }
        self.program
            .outputs
            .iter()
            .map(|o| {
                let t = self
                    .read_output(first[o.name.as_str()])
                    .map_err(RuntimeError::Host)?;
                Ok((o.name.clone(), t))
            })
            .collect()
    }
}

/// A zeroed arena of `elems` f32, or an error when the allocator refuses.
fn alloc_arena(elems: usize) -> Result<Vec<f32>, RuntimeError> {
    let refused = RuntimeError::Allocation {
        bytes: elems as u128 * 4,
    };
    let layout = std::alloc::Layout::array::<f32>(elems.max(1)).map_err(|_| refused.clone())?;
    // Zeroed memory from the allocator: big arenas come as fresh pages the kernel zeroes on
    // first touch, so compiling does not spend time writing zeros a step will overwrite.
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f32;
    if ptr.is_null() {
        return Err(refused);
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `elems.max(1)`
    // f32s, all zero bits (0.0), which is what `Vec` frees with for that capacity.
    Ok(unsafe { Vec::from_raw_parts(ptr, elems.max(1), elems.max(1)) })
}

/// Run `f` over `0..n`, split at multiples of `align` across the pool's threads when `par`.
fn split_run(par: bool, n: i64, align: i64, f: impl Fn(i64, i64) + Sync) {
    let parts = if par {
        (threads() as i64).min(n / align.max(1)).max(1)
    } else {
        1
    };
    if parts == 1 {
        return f(0, n);
    }
    // Equal parts of whole `align` units; the last takes the remainder.
    let chunk = (n / parts / align * align).max(align);
    let f = &f;
    rayon::scope(|s| {
        for p in 1..parts {
            let (a, z) = (p * chunk, if p == parts - 1 { n } else { (p + 1) * chunk });
            s.spawn(move |_| f(a, z));
        }
        f(0, chunk);
    });
}

/// The threads a step may use: those of the current rayon pool (all cores unless
/// `set_threads` or an installed pool says otherwise).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Use `n` threads for every step of this process (call once, before the first step).
pub fn set_threads(n: usize) -> Result<(), RuntimeError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .map_err(|e| RuntimeError::Threads(e.to_string()))
}

/// A generated GEMM: batch items split across threads, or the row tiles of one item.
fn run_jit_matmul(base: ArenaPtr, f: jit::KernelFn, bufs: &[i64], mm: &MatMulKernel) {
    let batch = mm.c.offsets.len();
    let tiles = (mm.m / jit::matmul::tile_rows(mm.path)) as i64;
    let flops = mm.m * mm.n * mm.k;
    let item = |i: usize, a: i64, z: i64| unsafe {
        f(base.get() as *mut u8, a, z, bufs[3 * i..].as_ptr())
    };
    let par = batch * flops >= 1 << 17;
    if batch == 1 {
        split_run(par, tiles, 1, |a, z| item(0, a, z));
    } else {
        split_run(par, batch as i64, 1, |a, z| {
            (a as usize..z as usize).for_each(|i| item(i, 0, tiles))
        });
    }
}

fn run_matmul(base: ArenaPtr, offsets: &[usize], mm: &MatMulKernel) {
    let batch = mm.c.offsets.len();
    let ptr = |buf: kernels::BufId, off: i64| unsafe {
        base.get().add(offsets[buf.index()]).offset(off as isize)
    };
    let bias = mm
        .bias
        .as_ref()
        .map(|b| (ArenaPtr(ptr(b.buf, b.offset)), b.col_stride as isize));
    let one = |i: usize, par: gemm::Parallelism| unsafe {
        let c = ptr(mm.c.buf, mm.c.offsets[i]);
        // The bias rows first; the GEMM then accumulates onto them.
        if let Some((bp, bcs)) = bias {
            for x in 0..mm.m as isize {
                let row = c.offset(x * mm.c.rs as isize);
                for y in 0..mm.n as isize {
                    *row.offset(y * mm.c.cs as isize) = *bp.get().offset(y * bcs);
                }
            }
        }
        if mm.k == 0 {
            for x in 0..mm.m {
                for y in 0..mm.n {
                    *c.offset(x as isize * mm.c.rs as isize + y as isize * mm.c.cs as isize) = 0.0;
                }
            }
            return;
        }
        gemm::gemm(
            mm.m,
            mm.n,
            mm.k,
            c,
            mm.c.cs as isize,
            mm.c.rs as isize,
            bias.is_some(),
            ptr(mm.a.buf, mm.a.offsets[i]) as *const f32,
            mm.a.cs as isize,
            mm.a.rs as isize,
            ptr(mm.b.buf, mm.b.offsets[i]) as *const f32,
            mm.b.cs as isize,
            mm.b.rs as isize,
            if bias.is_some() { 1.0 } else { 0.0 },
            mm.alpha,
            false,
            false,
            false,
            par,
        )
    };
    let flops = mm.m * mm.n * mm.k;
    if batch == 1 {
        let par = if flops >= 1 << 18 && threads() > 1 {
            gemm::Parallelism::Rayon(threads())
        } else {
            gemm::Parallelism::None
        };
        one(0, par);
    } else {
        split_run(batch * flops >= 1 << 18, batch as i64, 1, |a, z| {
            (a as usize..z as usize).for_each(|i| one(i, gemm::Parallelism::None))
        });
    }
}

/// A graph compiled to evaluate its outputs (no parameter update).
pub struct CompiledGraph {
    pub graph: Graph,
    pub exe: Executable,
}

/// Compile `g` to evaluate every output.
pub fn compile_graph(g: &Graph) -> Result<CompiledGraph, RuntimeError> {
    compile_graph_with(g, &BuildOptions::default())
}

/// Compile `g` with `opts` (for a training step: which outputs replace which parameters,
/// so that they are stored in place).
pub fn compile_graph_with(g: &Graph, opts: &BuildOptions) -> Result<CompiledGraph, RuntimeError> {
    let exe = Executable::new(g, opts)?;
    Ok(CompiledGraph {
        graph: g.clone(),
        exe,
    })
}

impl CompiledGraph {
    /// Evaluate with the given inputs and parameters; outputs in graph order.
    pub fn run(
        &mut self,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        self.exe.set_params(&self.graph, params)?;
        self.exe.set_inputs(&self.graph, inputs)?;
        self.exe.run();
        self.exe.outputs()
    }

    /// Copy every parameter into the arena, where `step` keeps them between runs.
    pub fn load_params(&mut self, params: &[Tensor]) -> Result<(), RuntimeError> {
        self.exe.set_params(&self.graph, params)
    }

    /// Run on the resident parameters, then copy output `o` into parameter `p` for each
    /// `(o, p)` of `writeback`, arena to arena (outputs the program stores in place are
    /// there already). When a value is not finite before the first in-place kernel, the run
    /// stops there and nothing is written; when an f32 output is not finite after the run,
    /// nothing is copied (`StepResult::written` says whether in-place outputs were stored).
    pub fn step(
        &mut self,
        inputs: &[Tensor],
        writeback: &[(usize, usize)],
    ) -> Result<StepResult, RuntimeError> {
        let copies = self.writeback_copies(writeback)?;
        self.exe.set_inputs(&self.graph, inputs)?;
        let ip = &self.exe.program.in_place;
        let (first, in_place) = (ip.first_kernel, !ip.pairs.is_empty());
        for k in 0..first {
            self.exe.run_kernel(k);
        }
        if in_place {
            if let Some(name) = self.failed_guard() {
                return Ok(StepResult {
                    loss: self.loss()?,
                    parts: self.part_losses(),
                    non_finite: Some(name),
                    written: false,
                });
            }
        }
        for k in first..self.exe.program.kernels.len() {
            self.exe.run_kernel(k);
        }
        let loss = self.loss()?;
        let non_finite = self.first_non_finite_output();
        if non_finite.is_none() {
            self.copy_back(copies)?;
        }
        Ok(StepResult {
            loss,
            parts: self.part_losses(),
            written: non_finite.is_some() && in_place,
            non_finite,
        })
    }

    /// `((source, len), destination, staged)` arena regions of each write-back pair that is
    /// not stored in place.
    fn writeback_copies(&self, writeback: &[(usize, usize)]) -> Result<Vec<Copy>, RuntimeError> {
        let prog = &self.exe.program;
        let region = |buf: kernels::BufId, extra: usize, len: usize| {
            (self.exe.plan.offsets[buf.index()] + extra, len)
        };
        let mut copies = Vec::with_capacity(writeback.len());
        for &(o, p) in writeback {
            let out = prog
                .outputs
                .get(o)
                .ok_or(RuntimeError::NoOutput { index: o })?;
            let pb = *prog
                .params
                .get(p)
                .ok_or(RuntimeError::NoParam { index: p })?;
            let n: usize = out.shape.iter().product();
            if n != prog.buffers[pb.index()].len || out.dtype != DType::F32 {
                return Err(RuntimeError::WritebackMismatch {
                    output: out.name.clone(),
                    param: self.graph.params[p].name.clone(),
                });
            }
            if out.buf == pb && out.offset == 0 {
                continue;
            }
            let staged = matches!(prog.buffers[out.buf.index()].kind, BufKind::Param(_));
            copies.push((region(out.buf, out.offset, n), region(pb, 0, n).0, staged));
        }
        Ok(copies)
    }

    fn copy_back(&mut self, copies: Vec<Copy>) -> Result<(), RuntimeError> {
        // An output read straight from a parameter is staged first, so that no copy reads a
        // parameter another copy has already overwritten.
        let staged: Vec<Vec<f32>> = copies
            .iter()
            .filter(|c| c.2)
            .map(|&((src, n), _, _)| {
                let what = || format!("a parameter staged for write-back ({n} elements)");
                try_copy(&self.exe.arena[src..src + n], what).map_err(RuntimeError::Host)
            })
            .collect::<Result<_, _>>()?;
        let mut staged = staged.into_iter();
        for ((src, n), dst, st) in copies {
            if st {
                let data = staged.next().unwrap_or_default();
                self.exe.arena[dst..dst + data.len()].copy_from_slice(&data);
            } else {
                self.exe.arena.copy_within(src..src + n, dst);
            }
        }
        Ok(())
    }

    fn loss(&self) -> Result<f32, RuntimeError> {
        let prog = &self.exe.program;
        prog.outputs
            .iter()
            .find(|o| OutputRole::of(&o.name) == OutputRole::Loss)
            .map(|o| self.exe.arena[self.exe.plan.offsets[o.buf.index()] + o.offset])
            .ok_or(RuntimeError::NoLoss)
    }

    /// The terms of a loss made of several (`loss.<part>` outputs), in graph order.
    fn part_losses(&self) -> Vec<(String, f32)> {
        let prog = &self.exe.program;
        prog.outputs
            .iter()
            .filter_map(|o| match OutputRole::of(&o.name) {
                OutputRole::PartLoss(p) => Some((
                    p.to_string(),
                    self.exe.arena[self.exe.plan.offsets[o.buf.index()] + o.offset],
                )),
                _ => None,
            })
            .collect()
    }

    /// The first f32 output (graph order) holding a NaN or an infinity.
    fn first_non_finite_output(&self) -> Option<String> {
        let prog = &self.exe.program;
        prog.outputs
            .iter()
            .find(|o| {
                let off = self.exe.plan.offsets[o.buf.index()] + o.offset;
                let n: usize = o.shape.iter().product();
                o.dtype == DType::F32 && !all_finite(&self.exe.arena[off..off + n])
            })
            .map(|o| o.name.clone())
    }

    /// When a guard of the in-place stores is not finite: the output it is, or else the
    /// first output stored in place (which it would have made non-finite).
    fn failed_guard(&self) -> Option<String> {
        let prog = &self.exe.program;
        let (buf, off, len) = *prog.in_place.guards.iter().find(|&&(b, off, len)| {
            let start = self.exe.plan.offsets[b.index()] + off;
            !all_finite(&self.exe.arena[start..start + len])
        })?;
        let as_output = prog
            .outputs
            .iter()
            .find(|o| o.buf == buf && o.offset == off && o.shape.iter().product::<usize>() == len);
        let first_in_place = prog.in_place.pairs.first().map(|&(o, _)| o);
        Some(match (as_output, first_in_place) {
            (Some(o), _) => o.name.clone(),
            (None, Some(o)) => prog.outputs[o].name.clone(),
            (None, None) => prog.buffers[buf.index()].label.clone(),
        })
    }

    /// Run once on the resident parameters, timing each kernel (seconds, in kernel order).
    /// Outputs stored in place update their parameters as in a step (without its checks);
    /// nothing is copied back.
    pub fn profile(&mut self, inputs: &[Tensor]) -> Result<Vec<f64>, RuntimeError> {
        self.exe.set_inputs(&self.graph, inputs)?;
        Ok(self.exe.run_profiled())
    }

    /// The resident parameters, in graph order.
    pub fn params(&self) -> Result<Vec<Tensor>, AllocError> {
        self.graph
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let data = self.exe.param_data(i);
                let what = || format!("a host copy of parameter {}", p.name);
                let data = try_collect(data.len(), data.iter().map(|&x| x as f64), what)?;
                Ok(Tensor::f32(p.shape.clone(), data))
            })
            .collect()
    }

    /// Output `name` of the last run (`None`: the graph has no such output).
    pub fn output(&self, name: &str) -> Option<Result<Tensor, AllocError>> {
        self.exe.output(name)
    }
}

/// What `CompiledGraph::step` reports to the host.
#[derive(Clone, Debug, PartialEq)]
pub struct StepResult {
    pub loss: f32,
    /// The named terms of the loss (`loss.<part>` outputs), when it has several.
    pub parts: Vec<(String, f32)>,
    /// The first f32 output (graph order) holding a NaN or an infinity, or the output a
    /// non-finite value would have reached; nothing was copied back then.
    pub non_finite: Option<String>,
    /// Whether outputs stored in place were written before the non-finite value was found
    /// (every value before the first in-place kernel was finite, so the update itself
    /// overflowed); the resident parameters are then not those the step read.
    pub written: bool,
}

/// `((source, len), destination, staged)`: one arena-to-arena write-back.
type Copy = ((usize, usize), usize, bool);

/// Whether every value is finite, checked on every thread for long slices.
fn all_finite(xs: &[f32]) -> bool {
    let bad = std::sync::atomic::AtomicBool::new(false);
    // An exponent of all ones is an infinity or a NaN. Folding the test over a chunk, with
    // no early exit inside it, lets the compiler vectorize it.
    let finite = |c: &[f32]| {
        c.iter().fold(0u32, |acc, x| {
            acc | (x.to_bits() & 0x7f80_0000 == 0x7f80_0000) as u32
        }) == 0
    };
    split_run(xs.len() >= 1 << 17, xs.len() as i64, 1 << 12, |a, z| {
        if !xs[a as usize..z as usize].chunks(1 << 12).all(finite) {
            bad.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    !bad.into_inner()
}

/// Text of a back-end stage for `lamina ir --stage kernels|plan|clif` of any graph (the
/// CLI passes the training step's).
/// The arena of `g`'s step as `(persistent bytes, total bytes)`: parameters, state and
/// inputs, and everything alive at the peak.
pub fn step_memory(g: &Graph, opts: &BuildOptions) -> Result<(usize, usize), RuntimeError> {
    let g = crate::passes::optimize(g);
    let program = kernels::build_program(&g, opts)?;
    let plan = plan::plan(&program);
    Ok((plan.persistent_elems * 4, plan.peak_bytes()))
}

pub fn stage_text(g: &Graph, stage: &str, opts: &BuildOptions) -> Result<String, RuntimeError> {
    let g = crate::passes::optimize(g);
    let program = kernels::build_program(&g, opts)?;
    match stage {
        "kernels" => Ok(kernels::print_program(&program)),
        "plan" => Ok(print_plan(&program, &plan::plan(&program))),
        "clif" => Ok(jit::clif_text(&program)?),
        s => Err(RuntimeError::UnknownStage(s.to_string())),
    }
}
