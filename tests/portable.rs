//! The portable code path: with `LAMINA_CPU=baseline` the JIT targets any x86-64 CPU (SSE2,
//! no AVX, AVX2 or FMA) whatever this host has, and every example's loss, logits and
//! gradients on that code equal the reference interpreter's. The GEMM library (`gemm`)
//! picks its own kernels by the CPU it runs on.

mod common;

use common::{example_sources, max_rel_err, small_overrides};
use std::process::Command;

fn run(file: &str, set: &[String], out: &std::path::Path, baseline: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lamina"));
    cmd.args(["run", file, "--out", out.to_str().unwrap()])
        .args(set);
    if baseline {
        cmd.env("LAMINA_CPU", "baseline");
    } else {
        cmd.args(["--backend", "interp"]).env_remove("LAMINA_CPU");
    }
    let o = cmd.output().expect("lamina runs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{file}: {stderr}");
    stderr
}

#[test]
fn every_example_on_baseline_code_matches_the_interpreter() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lamina-portable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, src) in example_sources() {
        let file = format!("{}/examples/{name}.lam", env!("CARGO_MANIFEST_DIR"));
        let set: Vec<String> = small_overrides(&src)
            .iter()
            .flat_map(|o| ["--set".to_string(), format!("{}={}", o.name, o.value)])
            .collect();
        let (jit, interp) = (
            dir.join(format!("{name}.jit")),
            dir.join(format!("{name}.interp")),
        );
        let note = run(&file, &set, &jit, true);
        assert!(note.contains("baseline x86-64"), "{name}: {note}");
        run(&file, &set, &interp, false);
        let a = lamina::io::load_safetensors(&jit).unwrap();
        let b = lamina::io::load_safetensors(&interp).unwrap();
        assert_eq!(a.len(), b.len(), "{name}");
        // As the JIT tests measure: a gradient against a thousandth of the largest one.
        let gmax = b
            .iter()
            .filter(|(n, _)| n.starts_with("grad."))
            .flat_map(|(_, t)| t.data.iter().map(|x| x.abs()))
            .fold(0f64, f64::max);
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb, "{name}");
            let floor = if na.starts_with("grad.") {
                1e-3 * gmax
            } else {
                1e-30
            };
            let e = max_rel_err(&ta.data, &tb.data, floor);
            assert!(e <= 1e-4, "{name}: {na} differs by {e:.2e}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
