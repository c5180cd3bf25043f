//! The matmul table: every distinct GEMM of the benchmark models (examples/bench), timed
//! with the gemm crate and with the generated microkernel, and which one lamina picks.
//!
//! `cargo bench --bench matmul [-- FILE.lam ...]`

use lamina::bench::matmul_table;
use lamina::kernels::build_program;

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
    println!("| batch x [m x n x k] | a b | gemm us | gemm GFLOP/s | jit us | jit GFLOP/s | faster | lamina uses |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let fl = 2.0 * (r.batch * r.m * r.n * r.k) as f64;
        let (ju, jg, win) = match r.jit_seconds {
            Some(j) => (
                format!("{:.1}", j * 1e6),
                format!("{:.1}", fl / j / 1e9),
                if j < r.gemm_seconds { "jit" } else { "gemm" },
            ),
            None => ("-".into(), "-".into(), "gemm"),
        };
        println!(
            "| {}x[{}x{}x{}] | {} | {:.1} | {:.1} | {ju} | {jg} | {win} | {} |",
            r.batch,
            r.m,
            r.n,
            r.k,
            r.layout,
            r.gemm_seconds * 1e6,
            fl / r.gemm_seconds / 1e9,
            r.chosen
        );
    }
}
