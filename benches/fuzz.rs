//! The pre-release fuzzer: the checker (parse + elaborate + verify) and autodiff on model
//! files that are generated near the documented limits, or mutated from the gallery byte by
//! byte and token by token. Every case may be rejected, but none may panic and none may take
//! longer than the time budget.
//!
//!     cargo bench --bench fuzz                       # 10^6 cases, seed 0
//!     cargo bench --bench fuzz -- 200000 7           # CASES SEED
//!     cargo bench --bench fuzz -- --jobs 1           # threads (default: LAMINA_FUZZ_JOBS, or all cores)
//!     cargo bench --bench fuzz -- --case 4711 --seed 7   # rerun one case, print it and its result
//!
//! Case k of seed s is a pure function of (s, k), whatever the number of threads. The budget is
//! CPU time of the thread running the case, so a loaded machine does not make cases slow.
//!
//! Prints the counts and every panicking or slow case (with its source); exits 1 if any.

use lamina::driver::compile_source;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A case that takes more CPU time than this (front end and autodiff) is a defect.
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

/// Layers and sizes of a generated model. Each limit is approached on its own: a model at the
/// depth limit has tiny tensors and one at the size limits is shallow, since the front end's
/// time grows with the number of nodes (depth) and not with tensor sizes, and a deep model
/// costs a hundred ordinary ones.
struct Dims {
    layers: u32,
    batch: u64,
    length: u64,
    vocab: u64,
    d: u64,
    heads: u64,
    hidden: u64,
}

fn dims(r: &mut ChaCha8Rng) -> (Dims, &'static str) {
    let heads = [1, 2, 3, 4][r.gen_range(0..4)];
    if r.gen_ratio(1, 8) {
        // Near the 2^28-element limit: attention scores of 16384^2, embeddings of 2^28.
        let d = [1024, 4096, 16384, 16385][r.gen_range(0..4)];
        let dims = Dims {
            layers: [1, 2][r.gen_range(0..2)],
            batch: [1, 2, 16][r.gen_range(0..3)],
            length: [1, 4096, 16384, 16385][r.gen_range(0..4)],
            vocab: [2, 16384, 65536, 262144, 1 << 28][r.gen_range(0..5)],
            d,
            heads,
            hidden: [1, 4 * d, 1 << 16][r.gen_range(0..3)],
        };
        return (dims, "at the size limits");
    }
    let d = [1, 2, 3, 4, 8, 16][r.gen_range(0..6)];
    let (layers, kind) = if r.gen_ratio(1, 256) {
        ([1024, 1025][r.gen_range(0..2)], "at the depth limit")
    } else {
        ([1, 2, 3, 7, 16, 64][r.gen_range(0..6)], "small")
    };
    let dims = Dims {
        layers,
        batch: r.gen_range(1..4),
        length: r.gen_range(1..9),
        vocab: r.gen_range(1..300),
        d,
        heads,
        hidden: r.gen_range(1..4 * d + 2),
    };
    (dims, kind)
}

/// A well-formed model whose sizes, depth programs and schemes are drawn near the limits.
fn generated(r: &mut ChaCha8Rng) -> (String, String) {
    let (
        Dims {
            layers,
            batch,
            length,
            vocab,
            d,
            heads,
            hidden,
        },
        kind,
    ) = dims(r);
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
    let src = format!(
        "input tokens(batch = {batch}, length = {length}, vocab = {vocab})\nembed(dim = {d})\n\
         norm {norm}\nblock layer {{\n  a = attention(heads = {heads})\n  \
         f = ffn(hidden = {hidden})\n  {scheme}\n}}\n{program}\n",
    );
    (format!("generated, {kind}"), src)
}

/// A gallery file with a few bytes or tokens changed, or two files spliced.
fn mutated(r: &mut ChaCha8Rng, gallery: &[String]) -> (usize, String) {
    let file = r.gen_range(0..gallery.len());
    let mut s: Vec<u8> = gallery[file].clone().into_bytes();
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
    (file, String::from_utf8_lossy(&s).into_owned())
}

/// Case `case` of run `seed`: a pure function of both, so any case can be rerun alone
/// (`--case`) and the cases can be shared among threads in any order.
fn case_source(seed: u64, case: u64, gallery: &[String]) -> (String, String) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(case);
    if case.is_multiple_of(2) {
        generated(&mut r)
    } else {
        let (file, src) = mutated(&mut r, gallery);
        (format!("mutated examples[{file}]"), src)
    }
}

struct Options {
    cases: u64,
    seed: u64,
    jobs: usize,
    /// Run only this case and print its source and outcome.
    case: Option<u64>,
}

fn options() -> Options {
    let mut positional = Vec::new();
    let mut jobs = std::env::var("LAMINA_FUZZ_JOBS")
        .ok()
        .and_then(|j| j.parse().ok());
    let (mut case, mut seed) = (None, None);
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--jobs" | "-j" => jobs = args.next().and_then(|j| j.parse().ok()),
            "--case" => case = args.next().and_then(|c| c.parse().ok()),
            "--seed" => seed = args.next().and_then(|c| c.parse().ok()),
            _ => positional.push(a),
        }
    }
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    Options {
        cases: positional
            .first()
            .and_then(|a| a.parse().ok())
            .unwrap_or(1_000_000),
        seed: seed
            .or_else(|| positional.get(1).and_then(|a| a.parse().ok()))
            .unwrap_or(0),
        jobs: jobs.unwrap_or(parallelism).max(1),
        case,
    }
}

enum Outcome {
    Accepted,
    Rejected,
    Panicked,
}

/// The CPU time of the calling thread: the budget is about the work a case needs, which the
/// other threads and processes on a shared machine should not change.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn run_case(src: &str) -> (Outcome, Duration) {
    let t = thread_cpu_time();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        compile_source(src, "fuzz.lam", &[]).map(|c| c.joint().is_ok())
    }));
    let took = thread_cpu_time() - t;
    let outcome = match outcome {
        Ok(Ok(_)) => Outcome::Accepted,
        Ok(Err(_)) => Outcome::Rejected,
        Err(_) => Outcome::Panicked,
    };
    (outcome, took)
}

/// Counts and times of one thread's cases; merged at the end.
#[derive(Default)]
struct Tally {
    accepted: u64,
    rejected: u64,
    panics: u64,
    slow: u64,
    slowest: (Duration, u64),
    /// Per kind of case: count, total time, longest time.
    kinds: HashMap<String, (u64, Duration, Duration)>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.panics += o.panics;
        self.slow += o.slow;
        self.slowest = self.slowest.max(o.slowest);
        for (k, (n, total, max)) in o.kinds {
            let e = self.kinds.entry(k).or_default();
            e.0 += n;
            e.1 += total;
            e.2 = e.2.max(max);
        }
    }
}

/// Cases are handed out in chunks from one counter, so a thread that draws slow cases does
/// not hold up the others.
const CHUNK: u64 = 64;

fn worker(o: &Options, gallery: &[String], next: &AtomicU64, done: &AtomicU64) -> Tally {
    let mut tally = Tally::default();
    loop {
        let first = next.fetch_add(CHUNK, Ordering::Relaxed);
        if first >= o.cases {
            return tally;
        }
        for case in first..(first + CHUNK).min(o.cases) {
            let (kind, src) = case_source(o.seed, case, gallery);
            let (outcome, took) = run_case(&src);
            match outcome {
                Outcome::Accepted => tally.accepted += 1,
                Outcome::Rejected => tally.rejected += 1,
                Outcome::Panicked => {
                    tally.panics += 1;
                    println!("PANIC in case {case} (seed {}):\n{src}\n", o.seed);
                }
            }
            if took > BUDGET {
                tally.slow += 1;
                println!("SLOW case {case} (seed {}): {took:?}\n{src}\n", o.seed);
            }
            tally.slowest = tally.slowest.max((took, case));
            let e = tally.kinds.entry(kind).or_default();
            e.0 += 1;
            e.1 += took;
            e.2 = e.2.max(took);
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Prints the count, the rate and the time left every few seconds until all cases are done.
fn progress(cases: u64, done: &AtomicU64, start: Instant, finished: impl Fn() -> bool) {
    let mut last = Instant::now();
    loop {
        let n = done.load(Ordering::Relaxed);
        if finished() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            let rate = n as f64 / secs;
            eprintln!(
                "{n} / {cases} cases, {secs:.0} s, {rate:.0} cases/s, about {:.0} s left",
                (cases - n) as f64 / rate.max(1e-9)
            );
        }
    }
}

fn report(o: &Options, t: &Tally, wall: Duration) {
    let mut kinds: Vec<_> = t.kinds.iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1 .1));
    println!("time by kind of case (count, mean, longest):");
    for (k, (n, total, max)) in kinds {
        println!(
            "  {k:<28} {n:>9} {:>9.3} ms {:>9.1} ms",
            total.as_secs_f64() * 1e3 / *n as f64,
            max.as_secs_f64() * 1e3
        );
    }
    println!(
        "fuzz: {} cases (seed {}, {} threads) in {:.1} s: {} accepted, {} rejected, \
         {} panics, {} over {BUDGET:?} (slowest {:?}, case {})",
        o.cases,
        o.seed,
        o.jobs,
        wall.as_secs_f64(),
        t.accepted,
        t.rejected,
        t.panics,
        t.slow,
        t.slowest.0,
        t.slowest.1
    );
}

fn main() {
    let o = options();
    let gallery = gallery();
    if let Some(case) = o.case {
        let (kind, src) = case_source(o.seed, case, &gallery);
        let (_, took) = run_case(&src);
        let result = compile_source(&src, "fuzz.lam", &[]).map(|c| c.joint().map(|_| ()));
        println!(
            "case {case} (seed {}, {kind}), {took:?}:\n{src}\n{result:?}",
            o.seed
        );
        return;
    }
    // A panic is counted and reported by the worker; the default hook would print every one.
    std::panic::set_hook(Box::new(|_| {}));
    let (next, done) = (AtomicU64::new(0), AtomicU64::new(0));
    let start = Instant::now();
    let mut tally = Tally::default();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..o.jobs)
            .map(|_| s.spawn(|| worker(&o, &gallery, &next, &done)))
            .collect();
        progress(o.cases, &done, start, || {
            workers.iter().all(|w| w.is_finished())
        });
        for w in workers {
            tally.merge(w.join().expect("a worker catches every panic of its cases"));
        }
    });
    report(&o, &tally, start.elapsed());
    if tally.panics + tally.slow > 0 {
        std::process::exit(1);
    }
}
