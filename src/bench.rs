//! The library side of `lamina bench`: compile time, median step time, throughput and peak
//! arena bytes of a compiled training step, and this machine's FMA peak for comparison.

use crate::io::{init_params, random_batch};
use crate::ir::{DType, Graph, IrError};
use crate::kernels::Program;
use crate::runtime::{compile_graph_with, CompiledGraph, RuntimeError};
use crate::tensor::{AllocError, Tensor};
use crate::train::optim::OptimConfig;
use crate::train::step::TrainingStep;
use std::time::Instant;

/// Why a benchmark could not run.
#[derive(Debug)]
pub enum BenchError {
    /// The training step graph could not be built.
    Step(IrError),
    /// Compiling or running it failed.
    Runtime(RuntimeError),
    /// The allocator refused the parameters or the batch.
    Alloc(AllocError),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Step(e) => write!(f, "{e}"),
            BenchError::Runtime(e) => write!(f, "{e}"),
            BenchError::Alloc(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<AllocError> for BenchError {
    fn from(e: AllocError) -> BenchError {
        BenchError::Alloc(e)
    }
}

impl From<IrError> for BenchError {
    fn from(e: IrError) -> BenchError {
        BenchError::Step(e)
    }
}

impl From<RuntimeError> for BenchError {
    fn from(e: RuntimeError) -> BenchError {
        BenchError::Runtime(e)
    }
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    /// The optimizer whose update the timed step applies (`adamw`, `sgd`, `lamb`).
    pub optimizer: &'static str,
    /// Step graph, kernel building, planning and Cranelift compilation (seconds).
    pub compile_seconds: f64,
    /// Median wall time of one step (seconds) over `steps` steps after warm-up, on
    /// `threads` threads.
    pub median_step_seconds: f64,
    pub threads: usize,
    /// The same on one thread (when `threads` > 1).
    pub one_thread_step_seconds: Option<f64>,
    pub steps: usize,
    /// Tokens (elements of the first input) per second at the median step.
    pub tokens_per_second: f64,
    /// GEMM flops of one step over the median step time, in GFLOP/s.
    pub gflops: f64,
    pub peak_arena_bytes: usize,
    pub kernels: usize,
    /// Per-kernel times as text, when asked for (`LAMINA_PROFILE=1`).
    pub profile: Option<String>,
}

/// Compile the training step of `joint` (autodiff's graph) under `optim`, exactly as
/// `lamina train` runs it on the JIT, and time `steps` steps after 2 warm-up steps.
pub fn bench_step(
    joint: &Graph,
    optim: &OptimConfig,
    steps: usize,
    profile: bool,
) -> Result<BenchReport, BenchError> {
    let t0 = Instant::now();
    let step = TrainingStep::new(joint, optim, 0)?;
    let mut compiled = compile_graph_with(&step.graph, &step.build_options())?;
    let compile_seconds = t0.elapsed().as_secs_f64();
    compiled.load_params(&init_params(&step.graph, 0)?)?;
    let batch = random_batch(joint, 0)?;
    let steps = steps.max(1);
    let threads = crate::runtime::threads();
    let one_thread_step_seconds = if threads > 1 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| RuntimeError::Threads(e.to_string()))?;
        Some(pool.install(|| median_step(&mut compiled, &step, &batch, steps))?)
    } else {
        None
    };
    let median = median_step(&mut compiled, &step, &batch, steps)?;
    let profile = if profile {
        let inputs = step.inputs(batch.clone(), 0, &|peak| peak);
        let runs = (0..steps)
            .map(|_| compiled.profile(&inputs))
            .collect::<Result<Vec<_>, _>>()?;
        Some(profile_text(&compiled.exe.program, &runs))
    } else {
        None
    };
    let exe = &compiled.exe;
    let tokens = joint.inputs.first().map(|i| i.ty.numel()).unwrap_or(0) as f64;
    Ok(BenchReport {
        optimizer: optim.kind.name(),
        compile_seconds,
        median_step_seconds: median,
        threads,
        one_thread_step_seconds,
        steps,
        tokens_per_second: tokens / median,
        gflops: exe.program.matmul_flops() / median / 1e9,
        peak_arena_bytes: exe.peak_bytes(),
        kernels: exe.program.kernel_count(),
        profile,
    })
}

/// The median time of `steps` steps after 2 warm-up steps, in seconds.
fn median_step(
    compiled: &mut CompiledGraph,
    step: &TrainingStep,
    batch: &[Tensor],
    steps: usize,
) -> Result<f64, BenchError> {
    let mut run = |t: u64| -> Result<f64, BenchError> {
        let start = Instant::now();
        let inputs = step.inputs(batch.to_vec(), t, &|peak| peak);
        compiled.step(&inputs, &step.writeback)?;
        Ok(start.elapsed().as_secs_f64())
    };
    for t in 0..2 {
        run(t)?;
    }
    let mut times = (0..steps as u64)
        .map(|t| run(t + 2))
        .collect::<Result<Vec<f64>, BenchError>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Measured single-core FMA peaks in GFLOP/s.
#[derive(Clone, Debug)]
pub struct Peak {
    pub fma128: f64,
    /// `None` when the CPU lacks AVX2+FMA.
    pub fma256: Option<f64>,
}

/// The single-core 256-bit FMA peak in GFLOP/s, `None` without AVX2+FMA.
pub fn peak256() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // The best of a few short runs: a run that starts before the clock ramps up, or
            // shares its core, only reads low.
            // SAFETY: the features were just detected.
            let best = (0..4)
                .map(|_| unsafe { x86::peak256() })
                .fold(0.0, f64::max);
            return Some(best);
        }
    }
    None
}

/// Measure the FMA throughput of one core with 128-bit and 256-bit vectors.
pub fn peak() -> Peak {
    #[cfg(target_arch = "x86_64")]
    {
        let fma256 =
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the features were just detected.
                Some(unsafe { x86::peak256() })
            } else {
                None
            };
        let fma128 = if std::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            unsafe { x86::peak128() }
        } else {
            0.0
        };
        Peak { fma128, fma256 }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Peak {
            fma128: 0.0,
            fma256: None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::time::Instant;

    const ITERS: usize = 5_000_000;
    const CHAINS: usize = 12;

    /// 12 independent accumulator chains (more than FMA latency x throughput = 4 x 2) keep
    /// both FMA pipes busy.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn peak256() -> f64 {
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        let t = Instant::now();
        for _ in 0..ITERS {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let s = t.elapsed().as_secs_f64();
        let mut sum = _mm256_setzero_ps();
        for x in acc {
            sum = _mm256_add_ps(sum, x);
        }
        std::hint::black_box(sum);
        (ITERS * CHAINS * 8 * 2) as f64 / s / 1e9
    }

    #[target_feature(enable = "fma")]
    pub unsafe fn peak128() -> f64 {
        let a = _mm_set1_ps(0.999_999);
        let b = _mm_set1_ps(1e-7);
        let mut acc = [_mm_set1_ps(1.0); CHAINS];
        let t = Instant::now();
        for _ in 0..ITERS {
            for x in acc.iter_mut() {
                *x = _mm_fmadd_ps(*x, a, b);
            }
        }
        let s = t.elapsed().as_secs_f64();
        let mut sum = _mm_setzero_ps();
        for x in acc {
            sum = _mm_add_ps(sum, x);
        }
        std::hint::black_box(sum);
        (ITERS * CHAINS * 4 * 2) as f64 / s / 1e9
    }
}

/// Per-kernel time of a step (median over `runs`, each a list of seconds per kernel),
/// largest first, as text: one line per kernel with its kind, shape and scope.
fn profile_text(program: &Program, runs: &[Vec<f64>]) -> String {
    use crate::kernels::KernelBody;
    use std::fmt::Write;
    let nk = program.kernels.len();
    let mut med: Vec<(f64, usize)> = (0..nk)
        .map(|k| {
            let mut t: Vec<f64> = runs.iter().map(|r| r[k]).collect();
            t.sort_by(f64::total_cmp);
            (t[t.len() / 2], k)
        })
        .collect();
    let total: f64 = med.iter().map(|m| m.0).sum();
    let mut by_kind: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    let kind = |b: &KernelBody| match b {
        KernelBody::Loop(_) => "loop",
        KernelBody::ColReduce { .. } => "col_reduce",
        KernelBody::MatMul(_) => "matmul",
        KernelBody::ScatterAdd { .. } => "scatter_add",
    };
    for &(t, k) in &med {
        let e = by_kind.entry(kind(&program.kernels[k].body)).or_default();
        e.0 += t;
        e.1 += 1;
    }
    med.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut s = String::new();
    let _ = writeln!(s, "total {:.2} ms over {nk} kernels", total * 1e3);
    for (k, (t, n)) in by_kind {
        let _ = writeln!(s, "  {k:12} {:8.2} ms  {n} kernels", t * 1e3);
    }
    // The optimizer's kernels carry its scope (`optim.<param>`, `optim.clip`).
    let (ut, un) = med
        .iter()
        .filter(|&&(_, k)| program.kernels[k].scope.starts_with("optim"))
        .fold((0.0, 0), |(t, n), &(kt, _)| (t + kt, n + 1));
    let _ = writeln!(
        s,
        "  of which the optimizer's update {:.2} ms  {un} kernels",
        ut * 1e3
    );
    for &(t, k) in med.iter().take(40) {
        let kern = &program.kernels[k];
        let what = match &kern.body {
            KernelBody::Loop(l) => format!(
                "loop {}x{} nodes={} stores={}",
                l.rows,
                l.cols,
                l.nodes.len(),
                l.stores.len()
            ),
            KernelBody::ColReduce { rows, cols, .. } => format!("col_reduce {rows}x{cols}"),
            KernelBody::MatMul(mm) => format!(
                "matmul b={} m={} n={} k={} a(rs={},cs={}) b(rs={},cs={})",
                mm.c.offsets.len(),
                mm.m,
                mm.n,
                mm.k,
                mm.a.rs,
                mm.a.cs,
                mm.b.rs,
                mm.b.cs
            ),
            KernelBody::ScatterAdd { n, d, .. } => format!("scatter_add {n}x{d}"),
        };
        let _ = writeln!(s, "  k{k:<4} {:7.3} ms  {what}  [{}]", t * 1e3, kern.scope);
    }
    s
}

/// One row of the matmul table: a GEMM shape and the median time of each implementation.
#[derive(Clone, Debug)]
pub struct MatmulRow {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `a`/`b` layout: `n` for row-major, `t` for transposed (contiguous along the other axis).
    pub layout: String,
    pub gemm_seconds: f64,
    /// `None` when no generated microkernel fits the shape.
    pub jit_seconds: Option<f64>,
    /// What `kernels::matmul_path` picks for it.
    pub chosen: &'static str,
}

/// Time every distinct GEMM of `programs` with the gemm crate and with the generated
/// microkernel (median of `reps` runs each, on a private arena).
pub fn matmul_table(
    programs: &[crate::kernels::Program],
    reps: usize,
) -> Result<Vec<MatmulRow>, BenchError> {
    use crate::kernels::{
        jit_form, matmul_path, BufInfo, BufKind, Kernel, KernelBody, MatMulKernel, MatOperand,
        MatPath, Program,
    };
    use crate::runtime::Executable;
    let mut seen: Vec<MatMulKernel> = vec![];
    for p in programs {
        for k in &p.kernels {
            if let KernelBody::MatMul(mm) = &k.body {
                let key = |x: &MatMulKernel| {
                    (
                        x.m,
                        x.n,
                        x.k,
                        x.c.offsets.len(),
                        x.a.rs,
                        x.a.cs,
                        x.b.rs,
                        x.b.cs,
                    )
                };
                if !seen.iter().any(|s| key(s) == key(mm)) {
                    seen.push(mm.clone());
                }
            }
        }
    }
    let mut rows = vec![];
    for mm in seen {
        let batch = mm.c.offsets.len();
        // Private dense operands with the same strides, one matrix per batch item.
        let extent = |o: &MatOperand, r: usize, c: usize| {
            (r.max(1) as i64 - 1) * o.rs + (c.max(1) as i64 - 1) * o.cs + 1
        };
        let mk = |o: &MatOperand, buf: u32, r: usize, c: usize| {
            let e = extent(o, r, c);
            MatOperand {
                buf: crate::kernels::BufId(buf),
                offsets: (0..batch as i64).map(|i| i * e).collect(),
                rs: o.rs,
                cs: o.cs,
            }
        };
        let mut local = MatMulKernel {
            a: mk(&mm.a, 0, mm.m, mm.k),
            b: mk(&mm.b, 1, mm.k, mm.n),
            c: mk(&mm.c, 2, mm.m, mm.n),
            bias: None,
            ..mm.clone()
        };
        let buffers: Vec<BufInfo> = [
            extent(&mm.a, mm.m, mm.k),
            extent(&mm.b, mm.k, mm.n),
            extent(&mm.c, mm.m, mm.n),
        ]
        .iter()
        .enumerate()
        .map(|(i, &e)| BufInfo {
            len: e as usize * batch,
            dtype: DType::F32,
            kind: if i == 2 {
                BufKind::Temp
            } else {
                BufKind::Param(i)
            },
            label: String::new(),
        })
        .collect();
        let time = |path: MatPath, local: &mut MatMulKernel| -> Result<f64, BenchError> {
            local.path = path;
            let prog = Program {
                name: "matmul".into(),
                buffers: buffers.clone(),
                kernels: vec![Kernel {
                    nodes: vec![],
                    scope: String::new(),
                    body: KernelBody::MatMul(local.clone()),
                }],
                inputs: vec![],
                params: vec![crate::kernels::BufId(0), crate::kernels::BufId(1)],
                outputs: vec![],
                index_inputs: vec![],
                in_place: Default::default(),
            };
            let mut exe = Executable::from_program(prog)?;
            exe.run();
            let mut t: Vec<f64> = (0..reps.max(1))
                .map(|_| {
                    let s = Instant::now();
                    exe.run();
                    s.elapsed().as_secs_f64()
                })
                .collect();
            t.sort_by(f64::total_cmp);
            Ok(t[t.len() / 2])
        };
        let gemm_seconds = time(MatPath::Gemm, &mut local)?;
        let jit_seconds = match jit_form(&local) {
            Some(p) => Some(time(p, &mut local)?),
            None => None,
        };
        let lay = |o: &MatOperand| if o.cs == 1 { 'n' } else { 't' };
        rows.push(MatmulRow {
            batch,
            m: mm.m,
            n: mm.n,
            k: mm.k,
            layout: format!("{}{}", lay(&mm.a), lay(&mm.b)),
            gemm_seconds,
            jit_seconds,
            chosen: matmul_path(&mm).name(),
        });
    }
    Ok(rows)
}
