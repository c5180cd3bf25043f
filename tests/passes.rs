//! The passes, as text in and text out, and as value-preserving rewrites of every example.
//!
//! Text tests: each `tests/passes/<name>.ir` starts with `; pass: <name>` or
//! `; passes: <a>, <b>` followed by an IR graph; the named passes run in order and the
//! printed result is an insta file snapshot (`INSTA_UPDATE=always` re-blesses). Each case is
//! also run through the reference interpreter before and after, on random values.
//!
//! Examples: every `examples/*.lam`, shrunk to tiny sizes (the approach of gradcheck.rs),
//! forward and joint graphs: `optimize(g)` verifies, computes the same outputs as `g`
//! within 1e-9 (relative to each output's largest magnitude, in f64), and is a fixed
//! point of `optimize`.

use lamina::autodiff::differentiate;
use lamina::interp::{run, Env};
use lamina::ir::text::{parse, print};
use lamina::ir::Graph;
use lamina::passes::{run_pass, try_optimize, PASSES};
use lamina::tensor::Tensor;

mod common;
use common::{elaborate_small, example_sources, random_env};

const TOL: f64 = 1e-9;

/// The pass list named by the first line of a case file.
fn header_passes(src: &str) -> Vec<String> {
    let first = src.lines().next().unwrap_or("").trim();
    let list = first
        .strip_prefix("; passes:")
        .or_else(|| first.strip_prefix("; pass:"))
        .unwrap_or_else(|| panic!("the first line must be `; pass: <name>`, got {first:?}"));
    let names: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
    for n in &names {
        assert!(PASSES.contains(&n.as_str()), "unknown pass {n:?}");
    }
    names
}

/// Largest difference between two output lists, relative to each output's largest magnitude.
fn max_rel_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(ta.shape, tb.shape, "output {na}");
        // The floor: a gradient that is zero in exact arithmetic (an attention key bias:
        // softmax ignores a per-row shift) is rounding noise of about 1e-18 whose
        // digits any reassociation changes; 1e-6 is far below every real value here.
        worst = worst.max(common::max_rel_err(&ta.data, &tb.data, 1e-6));
    }
    worst
}

fn outputs(g: &Graph, inputs: &[Tensor], params: &[Tensor]) -> Vec<(String, Tensor)> {
    run(g, &Env { inputs, params }).unwrap_or_else(|e| panic!("{}: {e}", g.name))
}

#[test]
fn pass_files() {
    insta::glob!("passes/*.ir", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let names = header_passes(&src);
        let input = parse(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut g = input.clone();
        for n in &names {
            g = run_pass(n, &g).unwrap_or_else(|e| panic!("{}: {n}: {e}", path.display()));
        }
        g.verify().unwrap();
        // The same values before and after, where the input graph evaluates.
        let (inputs, params) = random_env(&input, 7);
        let env = Env {
            inputs: &inputs,
            params: &params,
        };
        if let Ok(before) = run(&input, &env) {
            let after = outputs(&g, &inputs, &params);
            let d = max_rel_diff(&before, &after);
            assert!(d <= TOL, "{}: outputs differ by {d:e}", path.display());
        }
        insta::assert_snapshot!(print(&g));
    });
}

#[test]
fn every_example_small_keeps_its_values() {
    let mut report = Vec::new();
    for (seed, (name, src)) in example_sources().iter().enumerate() {
        let forward = elaborate_small(name, src);
        let joint = differentiate(&forward).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (inputs, params) = random_env(&forward, 300 + seed as u64);
        for (stage, g) in [("forward", &forward), ("joint", &joint)] {
            let opt = try_optimize(g).expect("every pass succeeds");
            opt.verify()
                .unwrap_or_else(|e| panic!("{name} {stage}: {e}"));
            assert_eq!(opt.inputs, g.inputs);
            assert_eq!(opt.params, g.params);
            let names = |g: &Graph| g.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
            assert_eq!(names(&opt), names(g));
            let before = outputs(g, &inputs, &params);
            let after = outputs(&opt, &inputs, &params);
            let d = max_rel_diff(&before, &after);
            assert!(d <= TOL, "{name} {stage}: outputs differ by {d:e}");
            let again = try_optimize(&opt).expect("every pass succeeds");
            assert_eq!(
                print(&again),
                print(&opt),
                "{name} {stage}: optimize is not idempotent"
            );
            report.push(format!(
                "{name:12} {stage:8} {:5} -> {:5} nodes  (max rel diff {d:.1e})",
                g.nodes.len(),
                opt.nodes.len()
            ));
        }
    }
    println!("{}", report.join("\n"));
}

/// Node counts at the gallery's real sizes (no interpretation: too large for the oracle).
#[test]
fn every_example_full_size_node_counts() {
    let mut report = Vec::new();
    for (name, src) in example_sources() {
        let module = lamina::syntax::parse(&src).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let forward = lamina::elab::elaborate(&module, &name, &[])
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let joint = differentiate(&forward).unwrap();
        for (stage, g) in [("forward", &forward), ("joint", &joint)] {
            let opt = try_optimize(g).expect("every pass succeeds");
            opt.verify().unwrap();
            assert_eq!(
                print(&try_optimize(&opt).expect("every pass succeeds")),
                print(&opt),
                "{name} {stage}: not idempotent"
            );
            report.push(format!(
                "{name:12} {stage:8} {:5} -> {:5} nodes",
                g.nodes.len(),
                opt.nodes.len()
            ));
        }
    }
    println!("{}", report.join("\n"));
}
