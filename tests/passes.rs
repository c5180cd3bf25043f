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
use lamina::ir::{Graph, Init, Op};
use lamina::passes::{optimize, run_pass, PASSES};
use lamina::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
        let scale = ta
            .data
            .iter()
            .chain(&tb.data)
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-300);
        for (x, y) in ta.data.iter().zip(&tb.data) {
            if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
                continue;
            }
            worst = worst.max((x - y).abs() / scale);
        }
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
        let forward = elaborate_small(name, &shrink_source(src));
        let joint = differentiate(&forward).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (inputs, params) = random_env(&forward, 300 + seed as u64);
        for (stage, g) in [("forward", &forward), ("joint", &joint)] {
            let opt = optimize(g);
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
            let again = optimize(&opt);
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
            let opt = optimize(g);
            opt.verify().unwrap();
            assert_eq!(
                print(&optimize(&opt)),
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

// ---- shrinking examples (the approach of tests/gradcheck.rs) ----

/// Tiny sizes for the constants an example may define, and for the literal arguments the
/// gallery writes inline (`batch = 16`, `heads = 4`, ...).
const SMALL_CONSTS: &[(&str, i64)] = &[
    ("d", 8),
    ("heads", 2),
    ("ff", 16),
    ("hidden", 16),
    ("layers", 2),
    ("batch", 2),
    ("length", 5),
    ("seq", 5),
    ("vocab", 11),
    ("width", 12),
    ("classes", 3),
];
const SMALL_ARGS: &[(&str, &str)] = &[
    ("batch", "2"),
    ("length", "5"),
    ("vocab", "11"),
    ("heads", "2"),
    ("hidden", "16"),
    ("width", "12"),
    ("classes", "3"),
    ("dim", "8"),
];

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Replace the value of every `key = value` argument (value up to the next `,` or `)` at
/// the same nesting depth) with `new`.
fn set_arg(src: &str, key: &str, new: &str) -> String {
    let bytes = src.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_key = src[i..].starts_with(key)
            && (i == 0 || !is_ident_char(bytes[i - 1]))
            && !bytes.get(i + key.len()).is_some_and(|&c| is_ident_char(c));
        if starts_key {
            let rest = &src[i + key.len()..];
            let trimmed = rest.trim_start_matches(' ');
            let in_call = src[..i]
                .rfind('(')
                .is_some_and(|o| !src[o..i].contains(')'))
                || src[..i].trim_end().ends_with(',');
            if in_call && trimmed.starts_with('=') && !trimmed.starts_with("==") {
                let value_start = i + key.len() + (rest.len() - trimmed.len()) + 1;
                let mut depth = 0i32;
                let mut j = value_start;
                while j < bytes.len() {
                    match bytes[j] {
                        b'(' | b'[' => depth += 1,
                        b')' | b']' if depth == 0 => break,
                        b')' | b']' => depth -= 1,
                        b',' | b'\n' if depth == 0 => break,
                        _ => {}
                    }
                    j += 1;
                }
                out.push_str(&src[i..value_start]);
                out.push(' ');
                out.push_str(new);
                i = j;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// An example's source at tiny sizes: comments dropped, inline size arguments replaced,
/// stacks cut to 2 layers (an `order` program becomes `* 3 order [0, 1, 1]`: one layer
/// looped, one skipped).
fn shrink_source(src: &str) -> String {
    let mut lines = Vec::new();
    for line in src.lines() {
        let code = line.split('#').next().unwrap_or("").trim_end();
        let t = code.trim_start();
        let line = if let Some(rest) = t.strip_prefix("stack ") {
            let block = rest.split('*').next().unwrap_or("").trim();
            if rest.contains("order") {
                format!("stack {block} * 3 order [0, 1, 1]")
            } else if rest.split_whitespace().any(|w| w == "shared") {
                format!("stack {block} * 2 shared")
            } else {
                format!("stack {block} * 2")
            }
        } else {
            code.to_string()
        };
        lines.push(line);
    }
    let mut s = lines.join("\n");
    for (key, value) in SMALL_ARGS {
        s = set_arg(&s, key, value);
    }
    s
}

/// Parse and elaborate `src` with every known size constant it defines set small.
fn elaborate_small(name: &str, src: &str) -> Graph {
    use lamina::elab::{constants, elaborate, Override};
    let module = lamina::syntax::parse(src).unwrap_or_else(|e| panic!("{name}: parse: {e:?}"));
    let defined = constants(&module, &[]).unwrap_or_else(|e| panic!("{name}: consts: {e:?}"));
    let overrides: Vec<Override> = SMALL_CONSTS
        .iter()
        .filter(|(c, _)| defined.iter().any(|(n, _)| n == c))
        .map(|(c, v)| Override {
            name: c.to_string(),
            value: *v as f64,
            is_int: true,
        })
        .collect();
    elaborate(&module, name, &overrides).unwrap_or_else(|e| panic!("{name}: elaborate: {e:?}"))
}

/// Random parameter values around each parameter's init, and random inputs (ids within the
/// range of every op that reads them).
fn random_env(g: &Graph, seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = g
        .params
        .iter()
        .map(|p| {
            let n = p.shape.iter().product();
            let data = (0..n)
                .map(|_| {
                    let u: f64 = rng.gen_range(-1.0..1.0);
                    match p.init {
                        Init::Zeros => 0.2 * u,
                        Init::Ones => 1.0 + 0.2 * u,
                        Init::Const(c) => c + 0.2 * u,
                        // Larger than a 0.02 std so embeddings and positions matter.
                        Init::Normal { std } => u * std.max(0.5),
                        Init::Uniform { bound } => u * bound,
                    }
                })
                .collect();
            Tensor::f32(p.shape.clone(), data)
        })
        .collect();
    let inputs = g
        .inputs
        .iter()
        .enumerate()
        .map(|(k, inp)| {
            let n = inp.ty.numel();
            match inp.ty.dtype {
                lamina::ir::DType::F32 => {
                    let data = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    Tensor::f32(inp.ty.shape.clone(), data)
                }
                lamina::ir::DType::I32 => {
                    let max = id_bound(g, k);
                    let data = (0..n).map(|_| rng.gen_range(0..max) as f64).collect();
                    Tensor::i32(inp.ty.shape.clone(), data)
                }
            }
        })
        .collect();
    (inputs, params)
}

/// The smallest id range accepted by the ops that read input `k` (through reshapes).
fn id_bound(g: &Graph, k: usize) -> usize {
    let mut ids = vec![false; g.nodes.len()];
    let mut bound = usize::MAX;
    for (i, n) in g.nodes.iter().enumerate() {
        match &n.op {
            Op::Input { index } if *index == k => ids[i] = true,
            Op::Reshape { .. } | Op::Transpose { .. } | Op::Slice { .. }
                if ids[n.args[0].index()] =>
            {
                ids[i] = true
            }
            Op::Gather if ids[n.args[1].index()] => bound = bound.min(g.ty(n.args[0]).shape[0]),
            Op::ScatterAdd { rows } if ids[n.args[0].index()] => bound = bound.min(*rows),
            Op::OneHot { classes } if ids[n.args[0].index()] => bound = bound.min(*classes),
            _ => {}
        }
    }
    // An id input no op reads (a hand-written case): any value is in range.
    bound.clamp(1, 1 << 20)
}

fn example_sources() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "lam"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}
