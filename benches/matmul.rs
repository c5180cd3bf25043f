//! The matmul table: every distinct GEMM of the benchmark models (examples/bench), timed
//! with the gemm crate (what lamina calls), the generated microkernel and the matrixmultiply
//! crate (for comparison), on every thread, with the best as a share of the machine's 256-bit
//! FMA peak on those threads, and which one lamina picks.
//!
//! `cargo bench --bench matmul [-- FILE.lam ...]`

use lamina::bench::{matmul_table, peak256};
use lamina::kernels::build_program;
use std::time::Instant;

/// Median seconds of `reps` calls of matrixmultiply's sgemm over `batch` items of the shape.
fn matrixmultiply_seconds(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    layout: &str,
    reps: usize,
) -> f64 {
    let l: Vec<char> = layout.chars().collect();
    // `n`: row-major; `t`: stored transposed (contiguous down columns).
    let (ars, acs) = if l[0] == 'n' {
        (k as isize, 1)
    } else {
        (1, m as isize)
    };
    let (brs, bcs) = if l[1] == 'n' {
        (n as isize, 1)
    } else {
        (1, k as isize)
    };
    let a: Vec<f32> = (0..batch * m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..batch * k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; batch * m * n];
    let mut run = || {
        for i in 0..batch {
            // SAFETY: each item's operands lie inside `a`, `b` and `c` with these strides.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr().add(i * m * k),
                    ars,
                    acs,
                    b.as_ptr().add(i * k * n),
                    brs,
                    bcs,
                    0.0,
                    c.as_mut_ptr().add(i * m * n),
                    n as isize,
                    1,
                )
            }
        }
    };
    run();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            run();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let mut files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.ends_with(".lam"))
        .collect();
    if files.is_empty() {
        let mut v: Vec<String> = std::fs::read_dir("examples/bench")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path().display().to_string())
                    .filter(|p| p.ends_with(".lam"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        files = v;
    }
    let mut programs = vec![];
    for f in &files {
        let c = match lamina::driver::compile_file(std::path::Path::new(f), &[]) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}", e.render(false));
                std::process::exit(1);
            }
        };
        let joint = c.joint().expect("autodiff");
        programs.push(build_program(&joint, &Default::default()).expect("kernels"));
    }
    let rows = matmul_table(&programs, 15).expect("matmul table");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = peak256().map(|p| p * threads as f64);
    println!(
        "{} threads; 256-bit FMA peak on them: {}",
        threads,
        limit.map_or("not available".to_string(), |p| format!("{p:.0} GFLOP/s"))
    );
    println!();
    println!("| batch x [m x n x k] | a b | gemm us | gemm GFLOP/s | jit us | jit GFLOP/s | matrixmultiply us | matrixmultiply GFLOP/s | best % of peak | lamina uses |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let fl = 2.0 * (r.batch * r.m * r.n * r.k) as f64;
        let mm = matrixmultiply_seconds(r.batch, r.m, r.n, r.k, &r.layout, 15);
        let (ju, jg) = match r.jit_seconds {
            Some(j) => (format!("{:.1}", j * 1e6), format!("{:.1}", fl / j / 1e9)),
            None => ("-".into(), "-".into()),
        };
        let best = r
            .jit_seconds
            .unwrap_or(f64::INFINITY)
            .min(r.gemm_seconds)
            .min(mm);
        let pct = limit.map_or("-".to_string(), |p| {
            format!("{:.0}", 100.0 * fl / best / 1e9 / p)
        });
        println!(
            "| {}x[{}x{}x{}] | {} | {:.1} | {:.1} | {ju} | {jg} | {:.1} | {:.1} | {pct} | {} |",
            r.batch,
            r.m,
            r.n,
            r.k,
            r.layout,
            r.gemm_seconds * 1e6,
            fl / r.gemm_seconds / 1e9,
            mm * 1e6,
            fl / mm / 1e9,
            r.chosen
        );
    }
}
