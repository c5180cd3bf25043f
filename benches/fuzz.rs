//! The pre-release fuzzer: the checker (parse + elaborate + verify) and autodiff on model
//! files that are generated near the documented limits, or mutated from the gallery byte by
//! byte and token by token. Every case may be rejected, but none may panic and none may take
//! longer than the time budget.
//!
//!     cargo bench --bench fuzz                       # 10^6 cases, seed 0
//!     cargo bench --bench fuzz -- 200000 7           # CASES SEED
//!
//! Prints the counts and every panicking or slow case (with its source); exits 1 if any.

use lamina::driver::compile_source;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// A case slower than this (front end and autodiff) is a defect.
const BUDGET: Duration = Duration::from_secs(2);

/// Tokens that stress the checker: numbers at and past the limits, keywords out of place.
const TOKENS: &[&str] = &[
    "0",
    "-1",
    "1",
    "3",
    "1024",
    "1025",
    "8192",
    "268435456",
    "9007199254740993",
    "99999999999999999999",
    "1e308",
    "-0.5",
    "1/0",
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
    "repeat",
    "order",
    "shared",
    "scheme",
    "strang",
    "parallel",
    "norm",
    "skip",
    "hourglass",
    "attention",
    "ffn",
    "embed",
    "input",
    "train",
    "h",
    "d",
    "layers",
    "ü",
    "\u{0}",
];

fn gallery() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "lam"))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

/// A well-formed model whose sizes, depth programs and schemes are drawn near the limits.
fn generated(r: &mut ChaCha8Rng) -> String {
    let d = [1, 2, 3, 4, 8, 16][r.gen_range(0..6)];
    let heads = [1, 2, 3, 4][r.gen_range(0..4)];
    let layers = [1, 2, 7, 64, 1024, 1025][r.gen_range(0..6)];
    let steps = r.gen_range(1..10);
    let scheme = match r.gen_range(0..5) {
        0 => "scheme strang(f, a)".to_string(),
        1 => "scheme parallel(f, a)".to_string(),
        2 => "scheme lie_trotter(f, a)".to_string(),
        3 => {
            let list: Vec<String> = (0..steps)
                .map(|k| {
                    format!(
                        "{} * {}",
                        if k % 2 == 0 { "f" } else { "a" },
                        k as f64 / 3.0
                    )
                })
                .collect();
            format!("scheme [{}]", list.join(", "))
        }
        _ => "scheme [a, f * 1e39]".to_string(),
    };
    let norm = ["pre", "post", "peri", "none"][r.gen_range(0..4)];
    let program = match r.gen_range(0..3) {
        0 => format!("stack layer * {layers}"),
        1 => format!(
            "stack layer * 4 order [{}]",
            (0..r.gen_range(1..12))
                .map(|_| r.gen_range(0..5).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!("stack layer * {layers} shared"),
    };
    format!(
        "input tokens(batch = {}, length = {}, vocab = {})\nembed(dim = {d})\nnorm {norm}\n\
         block layer {{\n  a = attention(heads = {heads})\n  f = ffn(hidden = {})\n  {scheme}\n}}\n\
         {program}\n",
        r.gen_range(1..4),
        r.gen_range(1..9),
        r.gen_range(1..300),
        r.gen_range(1..4 * d + 2),
    )
}

/// A gallery file with a few bytes or tokens changed, or two files spliced.
fn mutated(r: &mut ChaCha8Rng, gallery: &[String]) -> String {
    let mut s: Vec<u8> = gallery[r.gen_range(0..gallery.len())].clone().into_bytes();
    for _ in 0..r.gen_range(1..4) {
        let at = r.gen_range(0..=s.len());
        match r.gen_range(0..4) {
            0 if !s.is_empty() => {
                let end = (at + r.gen_range(1..8)).min(s.len());
                s.drain(at.min(end)..end);
            }
            1 => {
                let tok = TOKENS[r.gen_range(0..TOKENS.len())].as_bytes();
                s.splice(at..at, tok.iter().copied());
            }
            2 => {
                let other = gallery[r.gen_range(0..gallery.len())].as_bytes();
                let from = r.gen_range(0..other.len());
                s.truncate(at);
                s.extend_from_slice(&other[from..]);
            }
            _ => {
                if let Some(b) = s.get_mut(at) {
                    *b = r.gen();
                }
            }
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let cases: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let gallery = gallery();
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    // A panic is counted and reported below; the default hook would print every one.
    std::panic::set_hook(Box::new(|_| {}));
    let (mut accepted, mut rejected, mut panics, mut slow) = (0u64, 0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for case in 0..cases {
        let src = if case % 2 == 0 {
            generated(&mut r)
        } else {
            mutated(&mut r, &gallery)
        };
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            compile_source(&src, "fuzz.lam", &[]).map(|c| c.joint().is_ok())
        }));
        let took = t.elapsed();
        slowest = slowest.max(took);
        match outcome {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(_)) => rejected += 1,
            Err(_) => {
                panics += 1;
                println!("PANIC in case {case} (seed {seed}):\n{src}\n");
            }
        }
        if took > BUDGET {
            slow += 1;
            println!("SLOW case {case} (seed {seed}): {took:?}\n{src}\n");
        }
        if (case + 1) % 100_000 == 0 {
            eprintln!("{} cases, {:.0} s", case + 1, start.elapsed().as_secs_f64());
        }
    }
    println!(
        "fuzz: {cases} cases (seed {seed}) in {:.1} s: {accepted} accepted, {rejected} rejected, \
         {panics} panics, {slow} over {BUDGET:?} (slowest {slowest:?})",
        start.elapsed().as_secs_f64()
    );
    if panics + slow > 0 {
        std::process::exit(1);
    }
}
