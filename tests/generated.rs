//! Randomly generated models: the JIT against the reference interpreter.
//!
//! Each case writes a small model file with random orderings, splitting schemes, norm
//! placements and kinds, skips, sharing, depth programs, heads and sizes that are not
//! multiples of 4, compiles it, and compares the JIT's loss, logits and every gradient
//! with the interpreter's (f64) within a relative 1e-4: each tensor against its own largest
//! entry, and a gradient tensor never against less than 1e-2 of the model's largest
//! gradient (see `check`).

mod common;

use lamina::{driver, interp, io, runtime};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn pick<'a>(rng: &mut ChaCha8Rng, xs: &[&'a str]) -> &'a str {
    xs.choose(rng).copied().unwrap()
}

/// A random, valid model file.
fn generate(seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tokens = rng.gen_bool(0.7);
    // d >= 3: a LayerNorm over two elements maps every row to (-1, 1), and its gradient is
    // pure cancellation, which f32 cannot resolve to 1e-4 whatever the code does.
    let d = rng.gen_range(3..=10usize);
    let divisors: Vec<usize> = (1..=d).filter(|h| d % h == 0).collect();
    let heads = *divisors.choose(&mut rng).unwrap();
    let mut src = format!("# generated from seed {seed}\nd = {d}\n");
    if tokens {
        let (b, t, v) = (
            rng.gen_range(1..=2),
            rng.gen_range(1..=6),
            rng.gen_range(3..=13),
        );
        src += &format!("input tokens(batch = {b}, length = {t}, vocab = {v})\n");
        let pos = pick(&mut rng, &["learned", "sinusoidal", "none"]);
        src += &format!("embed(dim = d, positions = {pos})\n");
    } else {
        let (b, w) = (rng.gen_range(1..=3), rng.gen_range(1..=9));
        src += &format!("input features(batch = {b}, width = {w})\nembed(dim = d)\n");
    }
    // No model-wide `none`: without norms the residual stream grows with depth, logits
    // saturate, and a near-zero loss is a difference of large f32 numbers (ill-conditioned,
    // not wrong). Single sublayers still get `norm none` below.
    let placement = pick(&mut rng, &["pre", "post", "peri"]);
    let kind = pick(&mut rng, &["layernorm", "rmsnorm"]);
    src += &format!("norm {placement} {kind}\n");
    let model_skip = match rng.gen_range(0..6) {
        0 => Some("skip scaled(0.5)".to_string()),
        1 => Some("skip scaled(learned, init = 0.8)".to_string()),
        2 => Some(format!(
            "skip hourglass(width = {}, lift = {})",
            rng.gen_range(d + 1..=d + 7),
            pick(&mut rng, &["frozen", "trainable"])
        )),
        _ => None,
    };
    if let Some(s) = &model_skip {
        src += s;
        src += "\n";
    }
    let hourglass = model_skip
        .as_deref()
        .is_some_and(|s| s.contains("hourglass"));
    let n_blocks = rng.gen_range(1..=2);
    let mut stacks = Vec::new();
    for bi in 0..n_blocks {
        let name = format!("b{bi}");
        src += &format!("block {name} {{\n");
        if rng.gen_bool(0.2) {
            src += &format!("    norm {}\n", pick(&mut rng, &["pre", "post", "peri"]));
        }
        let n_sub = rng.gen_range(1..=3);
        let mut subs = Vec::new();
        let mut has_own = false;
        for si in 0..n_sub {
            let sname = format!("s{si}");
            let call = match rng.gen_range(0..4) {
                0 if tokens && !hourglass => {
                    format!("attention(heads = {heads}, causal = {})", rng.gen_bool(0.6))
                }
                1 | 0 => format!(
                    "ffn(hidden = {}, act = {}, glu = {})",
                    rng.gen_range(1..=9),
                    pick(&mut rng, &["relu", "gelu", "gelu_tanh", "silu"]),
                    rng.gen_bool(0.3)
                ),
                _ => format!("linear(bias = {})", rng.gen_bool(0.5)),
            };
            let mut line = format!("    {sname} = {call}");
            if rng.gen_bool(0.15) {
                line += &format!(" norm {}", pick(&mut rng, &["pre", "peri", "none"]));
                has_own = true;
            }
            if rng.gen_bool(0.1) && !hourglass {
                line += " skip scaled(learned)";
                has_own = true;
            }
            src += &line;
            src += "\n";
            subs.push(sname);
        }
        let scheme = match rng.gen_range(0..5) {
            0 => Some(format!("lie_trotter({})", subs.join(", "))),
            1 => {
                let mut s = subs.clone();
                s.reverse();
                Some(format!("strang({}, h = 0.7)", s.join(", ")))
            }
            2 if !has_own && !hourglass => Some(format!("parallel({})", subs.join(", "))),
            3 => {
                let mut steps = Vec::new();
                for s in &subs {
                    steps.push(format!(
                        "{s} * {}",
                        rng.gen_range(-4..=2) as f64 * 0.25 + 0.5
                    ));
                }
                steps.push(format!("{} * 0.3", subs[0]));
                Some(format!("[{}]", steps.join(", ")))
            }
            _ => None,
        };
        if let Some(s) = scheme {
            src += &format!("    scheme {s}\n");
        }
        src += "}\n";
        let count = rng.gen_range(1..=3);
        let stack = match rng.gen_range(0..4) {
            0 => format!("stack {name} * {count} shared"),
            1 => {
                let order: Vec<String> = (0..rng.gen_range(1..=4))
                    .map(|_| rng.gen_range(0..count).to_string())
                    .collect();
                format!("stack {name} * {count} order [{}]", order.join(", "))
            }
            _ => format!("stack {name} * {count}"),
        };
        stacks.push(stack);
    }
    src += &stacks.join("\n");
    src += "\n";
    if tokens {
        match rng.gen_range(0..3) {
            0 => src += "head lm(tied = true)\n",
            1 => src += "head classifier(classes = 3)\n",
            _ => {}
        }
    } else if rng.gen_bool(0.5) {
        src += "head classifier(classes = 4)\n";
    } else {
        src += "head linear(out = 2)\nloss mse\n";
    }
    src
}

fn check(seed: u64) -> Result<(), TestCaseError> {
    let src = generate(seed);
    let compiled = driver::compile_source(&src, "generated.lam", &[])
        .map_err(|e| TestCaseError::fail(format!("generated model rejected:\n{src}\n{e}")))?;
    let joint = compiled
        .joint()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let params = io::init_params(&joint, seed).unwrap();
    let inputs = io::random_batch(&joint, seed).unwrap();
    let want = interp::run(
        &joint,
        &interp::Env {
            inputs: &inputs,
            params: &params,
        },
    )
    .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
    let got = runtime::compile_graph(&joint)
        .and_then(|mut c| c.run(&inputs, &params))
        .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
    // A gradient tensor is measured against its own largest entry, but never against less
    // than 1e-2 of the model's largest gradient: tensors far below that (a key bias under
    // softmax, a learned skip scale summed over every element) are sums that cancel, and their
    // f32 rounding is set by the magnitude of the terms, not of the result.
    let grad_max = want
        .iter()
        .filter(|(n, _)| n.starts_with("grad."))
        .flat_map(|(_, t)| t.data.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    prop_assert_eq!(want.len(), got.len());
    for ((name, w), (gname, g)) in want.iter().zip(&got) {
        prop_assert_eq!(name, gname);
        prop_assert_eq!(&w.shape, &g.shape);
        let floor = if name.starts_with("grad.") {
            (grad_max * 1e-2).max(1e-6)
        } else {
            1e-6
        };
        let e = common::max_rel_err(&g.data, &w.data, floor);
        prop_assert!(e <= 1e-4, "{name}: relative error {e:.2e}\n{src}");
    }
    Ok(())
}

#[test]
fn jit_matches_interpreter_on_generated_models() {
    let config = Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7u8; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&any::<u64>(), check)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn generated_models_are_varied() {
    // The generator must actually exercise every feature it claims to.
    let all: String = (0..200).map(generate).collect();
    for feature in [
        "attention",
        "glu = true",
        "strang",
        "parallel",
        "lie_trotter",
        "order [",
        "shared",
        "hourglass",
        "scaled(learned",
        "norm peri",
        "norm post",
        "rmsnorm",
        "tied = true",
        "loss mse",
        "sinusoidal",
        "features",
    ] {
        assert!(all.contains(feature), "no generated model uses `{feature}`");
    }
}
