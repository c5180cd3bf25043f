//! The whole checker (parse + elaborate + verify) on mutated example files and on
//! arbitrary bytes: it may reject them, but it never panics.

use lamina::driver::compile_source;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn examples() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "lam"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Replacement tokens that stress the checker: extreme numbers, keywords in odd places,
/// brackets, operators.
const TOKENS: &[&str] = &[
    "0",
    "-1",
    "1",
    "3",
    "1000000000",
    "9223372036854775807",
    "99999999999999999999",
    "1e308",
    "0.0",
    "-0.5",
    "1/0",
    "//",
    "%",
    "*",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    "\n",
    "block",
    "stack",
    "shared",
    "order",
    "norm",
    "skip",
    "scheme",
    "input",
    "head",
    "loss",
    "pre",
    "post",
    "peri",
    "none",
    "rmsnorm",
    "strang",
    "parallel",
    "lie_trotter",
    "hourglass",
    "attention",
    "ffn",
    "linear",
    "true",
    "false",
    "learned",
    "d",
    "heads",
    "layer",
    "x",
];

fn mutate(src: &str, edits: &[(usize, u8, usize)]) -> String {
    let mut words: Vec<String> = src.split(' ').map(str::to_string).collect();
    for &(pos, kind, tok) in edits {
        if words.is_empty() {
            break;
        }
        let i = pos % words.len();
        let t = TOKENS[tok % TOKENS.len()].to_string();
        match kind % 4 {
            0 => {
                words.remove(i);
            }
            1 => words.insert(i, t),
            2 => words[i] = t,
            _ => {
                let w = words[i].clone();
                words.insert(i, w);
            }
        }
    }
    words.join(" ")
}

fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[11u8; 32]),
    )
}

#[test]
fn mutated_examples_never_panic() {
    let examples = examples();
    assert!(examples.len() >= 9);
    let strategy = (
        0..examples.len(),
        prop::collection::vec((any::<usize>(), any::<u8>(), any::<usize>()), 1..6),
    );
    let accepted = std::cell::Cell::new(0usize);
    runner(1500)
        .run(&strategy, |(which, edits)| {
            let src = mutate(&examples[which], &edits);
            match compile_source(&src, "mutated.lam", &[]) {
                Ok(c) => {
                    accepted.set(accepted.get() + 1);
                    prop_assert!(c.forward.verify().is_ok());
                }
                Err(e) => {
                    let text = e.render(false);
                    prop_assert!(text.contains("mutated.lam:"), "located: {text}");
                }
            }
            Ok(())
        })
        .unwrap();
    // Some mutations keep the model valid (an extra newline, a changed size): the test
    // would be vacuous if nothing compiled.
    assert!(accepted.get() > 0);
}

#[test]
fn arbitrary_bytes_never_panic() {
    runner(1000)
        .run(&prop::collection::vec(any::<u8>(), 0..400), |bytes| {
            let src = String::from_utf8_lossy(&bytes);
            let _ = compile_source(&src, "bytes.lam", &[]).map_err(|e| e.render(false));
            Ok(())
        })
        .unwrap();
}

#[test]
fn huge_repeat_is_a_clear_error() {
    let src = "input tokens(batch = 1, length = 4, vocab = 8)\nembed(dim = 8)\n\
               block b { ffn = ffn(hidden = 8) }\nstack b * 1000000000\n";
    let err = compile_source(src, "huge.lam", &[])
        .unwrap_err()
        .render(false);
    assert!(err.contains("1024"), "names the limit: {err}");
}
