//! The `lamina` binary end to end: exit codes, files written, `--expect`/`--bless`.

mod common;

use common::lamina;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TINY: &str = "\
# A tiny pre-LN language model for command tests.
d = 8
heads = 2
input tokens(batch = 2, length = 5, vocab = 11)
embed(dim = d)
block layer {
  attn = attention(heads = heads)
  ffn = ffn(hidden = 2 * d)
}
stack layer * 2
";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_ok_and_error_exit_codes() {
    let dir = scratch("check");
    let good = write(&dir, "good.lam", TINY);
    let bad = write(&dir, "bad.lam", &TINY.replace("heads = 2", "heads = 3"));
    let out = lamina(&["check", s(&good)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lamina(&["check", s(&good), s(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.lam:"), "error names the file: {err}");
    assert!(
        err.contains("divisible"),
        "error explains the constraint: {err}"
    );
    assert!(!err.contains("\x1b["), "no colour when not a terminal");
}

#[test]
fn check_rejects_garbage_without_panicking() {
    let dir = scratch("garbage");
    let bin = dir.join("garbage.lam");
    std::fs::write(&bin, [0xffu8, 0xfe, 0x00, 0x9c, b'{', b'(']).unwrap();
    let empty = write(&dir, "empty.lam", "");
    for f in [&bin, &empty] {
        let out = lamina(&["check", s(f)]);
        assert_eq!(out.status.code(), Some(1));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

#[test]
fn set_overrides_and_unknown_constants() {
    let dir = scratch("set");
    let good = write(&dir, "good.lam", TINY);
    assert_eq!(
        lamina(&["check", s(&good), "--set", "d=12"]).status.code(),
        Some(0)
    );
    let out = lamina(&["check", s(&good), "--set", "dd=12"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dd"));
    let out = lamina(&["check", s(&good), "--set", "d=abc"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed flag is a usage error"
    );
}

#[test]
fn expect_and_bless() {
    let dir = scratch("expect");
    let model = write(&dir, "m.lam", TINY);
    let expected = dir.join("m.ir");
    // Missing expected file: exit 1 and a hint.
    let out = lamina(&["ir", s(&model), "--expect", s(&expected)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bless"));
    // Bless creates it; then it matches.
    assert_eq!(
        lamina(&["ir", s(&model), "--expect", s(&expected), "--bless"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        lamina(&["ir", s(&model), "--expect", s(&expected)])
            .status
            .code(),
        Some(0)
    );
    // A model change shows as a unified diff and exit 1.
    let moved = write(
        &dir,
        "m.lam",
        &TINY.replace("block layer {", "block layer {\n  norm post"),
    );
    let out = lamina(&["ir", s(&moved), "--expect", s(&expected)]);
    assert_eq!(out.status.code(), Some(1));
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("@@") && diff.contains("\n-") && diff.contains("\n+"),
        "{diff}"
    );
}

#[test]
fn params_lists_every_parameter() {
    let dir = scratch("params");
    let model = write(&dir, "m.lam", TINY);
    let out = lamina(&["params", s(&model)]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("embed.weight") && text.contains("[11, 8]"),
        "{text}"
    );
    assert!(text.contains("total:"), "{text}");
}

#[test]
fn init_then_run_writes_loss_logits_and_grads() {
    let dir = scratch("run");
    let model = write(&dir, "m.lam", TINY);
    let weights = dir.join("w.safetensors");
    let out = dir.join("out.safetensors");
    assert_eq!(
        lamina(&["init", s(&model), "-o", s(&weights), "--seed", "3"])
            .status
            .code(),
        Some(0)
    );
    let run = lamina(&["run", s(&model), "--weights", s(&weights), "--out", s(&out)]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tensors = lamina::io::load_safetensors(&out).unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"loss") && names.contains(&"logits"),
        "{names:?}"
    );
    assert!(names.contains(&"grad.embed.weight"), "{names:?}");
    // Same weights and seed, same loss.
    let again = lamina(&["run", s(&model), "--weights", s(&weights)]);
    assert_eq!(run.stdout, again.stdout);
}

#[test]
fn failed_run_leaves_no_output_file() {
    let dir = scratch("partial");
    let model = write(&dir, "m.lam", TINY);
    let bad_weights = write(&dir, "w.safetensors", "not a tensor file");
    let out = dir.join("out.safetensors");
    let run = lamina(&[
        "run",
        s(&model),
        "--weights",
        s(&bad_weights),
        "--out",
        s(&out),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
}

#[test]
fn check_validates_the_train_section() {
    let dir = scratch("train-section");
    let bad = write(
        &dir,
        "bad.lam",
        &format!("{TINY}train {{\n    steps = -1\n}}\n"),
    );
    let out = lamina(&["check", s(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.lam:") && err.contains("steps"), "{err}");
    let good = write(
        &dir,
        "good.lam",
        &format!("{TINY}train {{\n    steps = 10\n}}\n"),
    );
    assert_eq!(lamina(&["check", s(&good)]).status.code(), Some(0));
}

#[test]
fn closed_stdout_is_not_a_crash() {
    let dir = scratch("pipe");
    let model = write(&dir, "m.lam", TINY);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(["ir", s(&model), "--stage", "clif"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read nothing and close the pipe, as `| head -0` would; the CLIF text is far larger
    // than a pipe buffer, so the writer must meet the closed pipe.
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn train_char_lm_then_sample() {
    let dir = scratch("sample");
    let model = write(
        &dir,
        "lm.lam",
        "input tokens(batch = 2, length = 8, vocab = 256)\nembed(dim = 8)\n\
         block b { attn = attention(heads = 2)\n ffn = ffn(hidden = 16) }\nstack b * 1\n",
    );
    let text = write(&dir, "text.txt", &"the cat sat on the mat. ".repeat(40));
    let run = dir.join("run");
    let out = lamina(&[
        "train",
        s(&model),
        "--task",
        "char_lm",
        "--data",
        s(&text),
        "--steps",
        "20",
        "--out",
        s(&run),
        "-q",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "log.jsonl",
        "loss.svg",
        "checkpoint.safetensors",
        "final.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} written");
    }
    let weights = run.join("final.safetensors");
    let args = [
        "sample",
        s(&model),
        "--weights",
        s(&weights),
        "--prompt",
        "the ",
        "--length",
        "12",
    ];
    let first = lamina(&args);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(text.starts_with("the "), "the prompt comes first: {text:?}");
    // Same seed, same text.
    assert_eq!(first.stdout, lamina(&args).stdout);
    // Hot sampling produces bytes that are not UTF-8: they are written as they are.
    let hot = lamina(&[
        "sample",
        s(&model),
        "--weights",
        s(&weights),
        "--prompt",
        "the ",
        "--length",
        "64",
        "--temperature",
        "20",
    ]);
    assert_eq!(hot.status.code(), Some(0));
    assert_eq!(hot.stdout.len(), 4 + 64 + 1, "{:?}", hot.stdout);
    assert!(
        std::str::from_utf8(&hot.stdout).is_err(),
        "raw bytes, not replaced"
    );
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_cleanly() {
    let dir = scratch("ctrl-c");
    // The copy task needs an even length.
    let model = write(&dir, "m.lam", &TINY.replace("length = 5", "length = 6"));
    let run = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args([
            "train",
            s(&model),
            "--task",
            "copy",
            "--steps",
            "1000000",
            "--out",
            s(&run),
        ])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way (the log has steps), then interrupt as Ctrl-C does.
    let log = run.join("log.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 20 {
        if start.elapsed().as_secs() > 60 || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "training did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // 130 = 128 + SIGINT, the shell convention for a run stopped by Ctrl-C.
    assert_eq!(out.status.code(), Some(130), "an orderly exit: {err}");
    assert!(
        err.contains("interrupted after step") && err.contains("--resume"),
        "{err}"
    );
    let ckpt = lamina::io::load_safetensors(&run.join("checkpoint.safetensors")).unwrap();
    assert!(
        ckpt.iter().any(|(n, _)| n == "embed.weight"),
        "weights are saved"
    );
    assert!(
        !run.join("final.safetensors").exists(),
        "the run did not finish"
    );
}

#[test]
fn failed_writes_to_stderr_are_not_a_crash() {
    let dir = scratch("stderr");
    let bad = write(&dir, "bad.lam", &TINY.replace("heads = 2", "heads = 3"));
    // A full device: the messages are lost, the exit code stays 1.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(["check", s(&bad)])
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // A closed pipe, as `2>&1 | head -1` leaves it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(["check", s(&bad), s(&bad), s(&bad)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "exit status {status:?}");
}

/// Run `lamina` with a deadline: a command that blocks or reads forever fails the test
/// instead of hanging it.
fn lamina_within(args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() >= secs {
            let _ = child.kill();
            panic!("lamina {args:?} did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn model_and_data_files_are_read_within_limits() {
    let dir = scratch("limits");
    let fifo = dir.join("fifo.lam");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for f in ["/dev/zero", s(&fifo), s(&dir)] {
        let out = lamina_within(&["check", f], 20);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a regular file"), "{f}: {err}");
    }
    // A model file over 1 MiB.
    let big = write(&dir, "big.lam", &format!("{TINY}{}", "#\n".repeat(600_000)));
    let out = lamina_within(&["check", s(&big)], 20);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too large") && err.contains("1 MiB"), "{err}");
    // --data: not a regular file, or over 1 GiB (a sparse file costs no disk).
    let lm = write(
        &dir,
        "lm.lam",
        "input tokens(batch = 2, length = 8, vocab = 256)\nembed(dim = 8)\n\
         block b { ffn = ffn(hidden = 16) }\nstack b * 1\n",
    );
    let huge = dir.join("huge.txt");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len((1 << 30) + 1)
        .unwrap();
    for (data, expect) in [
        ("/dev/zero", "not a regular file"),
        (s(&fifo), "not a regular file"),
        (s(&huge), "1 GiB"),
    ] {
        let out = lamina_within(
            &[
                "train",
                s(&lm),
                "--task",
                "char_lm",
                "--data",
                data,
                "--out",
                s(&dir.join("run")),
                "-q",
            ],
            60,
        );
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{data}: {err}");
    }
}

/// Start `lamina ARGS`, wait until `log` has `lines` lines (0: do not wait), send `signal`
/// (`INT`, `TERM`) and return what the process did.
fn signal_during(args: &[&str], log: &Path, lines: usize, signal: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    if lines == 0 {
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    while std::fs::read_to_string(log).map_or(0, |l| l.lines().count()) < lines {
        if start.elapsed().as_secs() > 60 || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "training did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child.wait_with_output().unwrap()
}

#[test]
fn sigterm_saves_a_checkpoint_and_exits_143() {
    let dir = scratch("sigterm");
    let model = write(&dir, "m.lam", &TINY.replace("length = 5", "length = 6"));
    let run = dir.join("run");
    let args = [
        "train",
        s(&model),
        "--task",
        "copy",
        "--steps",
        "1000000",
        "--out",
        s(&run),
    ];
    let out = signal_during(&args, &run.join("log.jsonl"), 20, "TERM");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted (SIGTERM) after step"), "{err}");
    assert!(lamina::io::load_safetensors(&run.join("checkpoint.safetensors")).is_ok());
}

#[test]
fn ctrl_c_while_a_run_starts_is_an_orderly_stop() {
    let dir = scratch("early-int");
    let model = write(&dir, "m.lam", &TINY.replace("length = 5", "length = 6"));
    let run = dir.join("run");
    let args = [
        "train",
        s(&model),
        "--task",
        "copy",
        "--steps",
        "1000000",
        "--out",
        s(&run),
    ];
    let out = signal_during(&args, &run.join("log.jsonl"), 0, "INT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{:?}: {err}", out.status);
}

#[test]
fn ctrl_c_stops_the_whole_comparison() {
    let dir = scratch("compare-int");
    let a = write(&dir, "a.lam", &TINY.replace("length = 5", "length = 6"));
    let b = write(&dir, "b.lam", &TINY.replace("length = 5", "length = 6"));
    let out_dir = dir.join("cmp");
    let args = [
        "compare",
        s(&a),
        s(&b),
        "--task",
        "copy",
        "--steps",
        "1000000",
        "--out",
        s(&out_dir),
    ];
    let out = signal_during(&args, &out_dir.join("0-a/log.jsonl"), 20, "INT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(out_dir.join("0-a/checkpoint.safetensors").exists());
    assert!(
        !out_dir.join("1-b/log.jsonl").exists(),
        "the second model never started: {err}"
    );
}

#[test]
fn compare_checks_every_model_before_training_any() {
    let dir = scratch("compare-check");
    let a = write(&dir, "a.lam", &TINY.replace("length = 5", "length = 6"));
    // Odd length: the copy task does not fit the second model.
    let b = write(&dir, "b.lam", TINY);
    let out_dir = dir.join("cmp");
    let out = lamina_within(
        &[
            "compare",
            s(&a),
            s(&b),
            "--task",
            "copy",
            "--steps",
            "5",
            "--out",
            s(&out_dir),
        ],
        60,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("even"), "{err}");
    assert!(!out_dir.join("0-a").exists(), "nothing trained: {err}");
}

#[test]
fn option_values_are_one_expression() {
    let dir = scratch("option-values");
    let model = write(&dir, "m.lam", &TINY.replace("length = 5", "length = 6"));
    for (flag, value) in [
        ("--steps", "7\nbogus_setting = 1"),
        ("--steps", "7\n}\nd = 3\ntrain {"),
        ("--eval-every", "5 # and more"),
    ] {
        let out = lamina_within(
            &[
                "train",
                s(&model),
                "--task",
                "copy",
                flag,
                value,
                "--out",
                s(&dir.join("run")),
                "-q",
            ],
            60,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value:?}: {err}");
        assert!(err.contains(flag), "names the option: {err}");
        assert!(!dir.join("run/log.jsonl").exists(), "nothing trained");
    }
}

#[test]
fn weights_and_outputs_are_checked_and_exact() {
    let dir = scratch("weights");
    let model = write(&dir, "m.lam", TINY);
    let weights = dir.join("w.safetensors");
    assert_eq!(
        lamina(&["init", s(&model), "-o", s(&weights)])
            .status
            .code(),
        Some(0)
    );
    // An infinite weight is refused on load.
    let mut tensors = lamina::io::load_safetensors(&weights).unwrap();
    tensors[0].1.data[3] = f64::INFINITY;
    let inf = dir.join("inf.safetensors");
    lamina::io::save_safetensors(&inf, &tensors).unwrap();
    let out = lamina(&["run", s(&model), "--weights", s(&inf)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("finite") && err.contains(&tensors[0].0),
        "{err}"
    );
    // An i64 tensor is named as i64.
    let ids: Vec<u8> = (0..88i64).flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![11, 8], &ids).unwrap();
    let bytes = safetensors::serialize([("embed.weight".to_string(), view)], &None).unwrap();
    let i64_file = write_bytes(&dir, "i64.safetensors", &bytes);
    let out = lamina(&["run", s(&model), "--weights", s(&i64_file)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("i64[11, 8]"), "{err}");
    // The interpreter's outputs are written in f64.
    let out_file = dir.join("out.safetensors");
    let out = lamina(&[
        "run",
        s(&model),
        "--backend",
        "interp",
        "--out",
        s(&out_file),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let written = lamina::io::load_tensors(&out_file).unwrap();
    assert!(written.iter().all(|t| t.stored == "f64"), "{written:?}");
    // An output directory that cannot be written fails before any work.
    let out = lamina(&["run", s(&model), "--out", "/proc/lamina-out.safetensors"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write") && !err.contains("backend,"),
        "{err}"
    );
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn seeds_data_and_checkpoints_say_what_is_wrong() {
    let dir = scratch("messages");
    let model = write(&dir, "m.lam", &TINY.replace("length = 5", "length = 6"));
    let run = dir.join("run");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", s(&model), "--task", "copy", "--out", s(&run), "-q"];
        args.extend_from_slice(extra);
        lamina_within(&args, 60)
    };
    // One rule for seeds.
    let out = lamina(&[
        "init",
        s(&model),
        "-o",
        s(&dir.join("w")),
        "--seed",
        "9007199254740993",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the seed must be a whole number"));
    let out = train(&["--seed=-1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the seed must be a whole number from 0 to 2^53"),
        "{err}"
    );
    let out = train(&["--schedule", "constant(warmup = -3)"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warmup must be a whole number"), "{err}");
    // --data with a task that does not read it.
    let text = write(&dir, "t.txt", &"abc ".repeat(100));
    let out = train(&["--data", s(&text)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--data") && err.contains("char_lm"), "{err}");
    // A checkpoint that is not one, in words.
    let junk = write(&dir, "junk.safetensors", "abc");
    let out = lamina_within(
        &[
            "train",
            s(&model),
            "--task",
            "copy",
            "--resume",
            s(&junk),
            "-q",
        ],
        60,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("too short") && !err.contains("HeaderTooSmall"),
        "{err}"
    );
}

#[test]
fn threads_are_chosen_and_checked() {
    let out = lamina(&["--threads", "0", "check", "tests/smoke/tiny.lam"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
    let out = lamina(&[
        "--threads",
        "1",
        "bench",
        "tests/smoke/tiny.lam",
        "--steps",
        "10",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("on 1 thread ("), "{text}");
    assert!(
        !text.contains("1 thread       "),
        "no separate 1-thread line: {text}"
    );
}

#[test]
fn diff_compares_sizes_parameters_and_scopes() {
    let dir = scratch("diff");
    let a = write(&dir, "a.lam", TINY);
    let b = write(
        &dir,
        "b.lam",
        &TINY.replace("input tokens", "norm peri\ninput tokens"),
    );
    let out = lamina(&["diff", s(&a), s(&b)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Peri-LN adds an output norm per step: more parameters, the same matmuls.
    assert!(text.contains("compute-matched: yes"), "{text}");
    assert!(text.contains("parameters added (only in B)"), "{text}");
    assert!(text.contains("blocks.0.attn.norm_out.weight [8]"), "{text}");
    assert!(text.contains("@blocks.0.attn\n"), "{text}");
    assert!(text.contains("  + rsqrt % : f32[2, 5, 1]"), "{text}");
    // The same model twice: nothing differs.
    let same = lamina(&["diff", s(&a), s(&a), "--stage", "opt"]);
    let text = String::from_utf8_lossy(&same.stdout);
    assert!(text.contains("the same names and shapes"), "{text}");
    assert!(text.contains("no difference"), "{text}");
    // A wider FFN is not compute-matched.
    let c = write(&dir, "c.lam", &TINY.replace("2 * d", "4 * d"));
    let wider = lamina(&["diff", s(&a), s(&c)]);
    let text = String::from_utf8_lossy(&wider.stdout);
    assert!(text.contains("compute-matched: no"), "{text}");
    assert!(text.contains("parameters reshaped"), "{text}");
}

#[test]
fn params_shows_roles_and_flops() {
    let dir = scratch("params-roles");
    let model = write(&dir, "m.lam", TINY);
    let out = lamina(&["params", s(&model)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("embedding") && text.contains("matrix"),
        "{text}"
    );
    // Per token: 2 layers x (4 attention projections 8x8 + FFN 8x16 + 16x8) + head 8x11,
    // and the attention products over 5 positions (2 x 5 x 8 per token and layer, twice).
    let per_token = 2 * (2 * (4 * 64 + 128 + 128) + 2 * 2 * 5 * 8) + 2 * 8 * 11;
    assert_eq!(per_token, 2544);
    let want = "forward: 2,544 FLOPs per token (matmuls, 10 tokens per batch)";
    assert!(text.contains(want), "{want}\n{text}");
}

#[test]
fn probe_measures_every_step_and_layer() {
    let dir = scratch("probe");
    // An even length, so the default `copy` task fits.
    let model = write(&dir, "m.lam", &TINY.replace("length = 5", "length = 6"));
    let weights = dir.join("w.safetensors");
    let init = lamina(&["init", s(&model), "-o", s(&weights), "--seed", "2"]);
    assert_eq!(init.status.code(), Some(0));
    let out_dir = dir.join("probe");
    let out = lamina(&[
        "probe",
        s(&model),
        "--weights",
        s(&weights),
        "-o",
        s(&out_dir),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(out_dir.join("probe.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // The embedding and 2 layers x 2 steps; 2 executed layers.
    let steps = v["steps"].as_array().unwrap();
    let scopes: Vec<&str> = steps.iter().map(|s| s["scope"].as_str().unwrap()).collect();
    assert_eq!(
        scopes,
        [
            "embed",
            "blocks.0.attn",
            "blocks.0.ffn",
            "blocks.1.attn",
            "blocks.1.ffn"
        ]
    );
    assert!(steps[0]["contribution"].is_null() && steps[1]["contribution"].is_number());
    for s in steps {
        let rms = s["rms"].as_f64().unwrap();
        let var = s["variance"].as_f64().unwrap();
        assert!(rms > 0.0 && var >= 0.0 && var <= rms * rms + 1e-12, "{s}");
    }
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        assert!(l["skip_delta"].as_f64().unwrap().is_finite(), "{l}");
        assert!(l["repeat_delta"].as_f64().unwrap().is_finite(), "{l}");
        assert!(l["grad_norm"].as_f64().unwrap() > 0.0, "{l}");
    }
    for f in [
        "rms",
        "variance",
        "contribution",
        "cosine",
        "skip_repeat",
        "grad_norm",
    ] {
        let svg = std::fs::read_to_string(out_dir.join(format!("{f}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{f}");
    }
    // Weights of another model are refused with the missing parameter named.
    let other = write(
        &dir,
        "o.lam",
        &TINY
            .replace("length = 5", "length = 6")
            .replace("* 2", "* 3"),
    );
    let bad = lamina(&[
        "probe",
        s(&other),
        "--weights",
        s(&weights),
        "-o",
        s(&out_dir),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("blocks.2"));
}

#[test]
fn compare_overlays_probes_recorded_during_training() {
    let dir = scratch("probe-every");
    let even = TINY.replace("length = 5", "length = 6");
    let a = write(&dir, "a.lam", &even);
    let b = write(
        &dir,
        "b.lam",
        &even.replace("input tokens", "norm peri\ninput tokens"),
    );
    let out_dir = dir.join("cmp");
    let out = lamina(&[
        "compare",
        s(&a),
        s(&b),
        "--steps",
        "10",
        "--probe-every",
        "4",
        "--out",
        s(&out_dir),
        "--quiet",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for run in ["0-a", "1-b"] {
        let log = std::fs::read_to_string(out_dir.join(run).join("probe.jsonl")).unwrap();
        let steps: Vec<u64> = log
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        // Every 4 steps, and the last.
        assert_eq!(steps, [4, 8, 10], "{run}");
    }
    for f in ["variance", "rms", "contribution", "cosine"] {
        let svg = std::fs::read_to_string(out_dir.join(format!("compare_{f}.svg"))).unwrap();
        assert_eq!(
            svg.matches("<polyline").count(),
            2,
            "{f}: one line per model"
        );
    }
}

#[test]
fn depth_search_finds_no_worse_order_and_writes_a_runnable_model() {
    let dir = scratch("depth-search");
    let src = TINY
        .replace("length = 5", "length = 6")
        .replace("stack layer * 2", "layers = 4\nstack layer * layers");
    let model = write(&dir, "m.lam", &src);
    for seed in ["1", "2"] {
        let weights = dir.join(format!("w{seed}.safetensors"));
        let init = lamina(&["init", s(&model), "-o", s(&weights), "--seed", seed]);
        assert_eq!(init.status.code(), Some(0));
        let found = dir.join(format!("found{seed}.lam"));
        let out = lamina(&[
            "depth-search",
            s(&model),
            "--weights",
            s(&weights),
            "-o",
            s(&found),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let loss_of = |line: &str| -> (f64, usize) {
            let mut w = line.split_whitespace();
            (
                w.next().unwrap().parse().unwrap(),
                w.next().unwrap().parse().unwrap(),
            )
        };
        let model_line = text.lines().find(|l| l.contains("(the model)")).unwrap();
        let (identity, depth) = loss_of(model_line);
        assert_eq!(depth, 4, "{text}");
        match text.lines().find_map(|l| l.strip_prefix("found:")) {
            Some(line) => {
                let (loss, layers) = loss_of(line);
                assert!(loss < identity && layers <= 4, "{text}");
                // The written model runs with the same weights.
                let written = std::fs::read_to_string(&found).unwrap();
                assert!(
                    written.contains("stack layer * layers order ["),
                    "{written}"
                );
                let run = lamina(&["run", s(&found), "--weights", s(&weights)]);
                assert_eq!(
                    run.status.code(),
                    Some(0),
                    "{}",
                    String::from_utf8_lossy(&run.stderr)
                );
            }
            None => assert!(text.contains("no order of skips and loops beats"), "{text}"),
        }
    }
}

#[test]
fn graph_writes_svg_or_dot_and_fails_cleanly() {
    let dir = scratch("graph");
    let model = write(&dir, "tiny.lam", TINY);
    let svg = dir.join("tiny.svg");
    let out = lamina(&["graph", s(&model), "-o", s(&svg), "--set", "d=16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains("layer 1 · blocks.1"), "{text}");
    let out = lamina(&["graph", s(&model), "--dot"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("digraph \"tiny\""));
    // A bad model: the located error, no file.
    let bad = write(&dir, "bad.lam", &TINY.replace("heads = 2", "heads = 3"));
    let none = dir.join("bad.svg");
    let out = lamina(&["graph", s(&bad), "-o", s(&none)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.lam:"));
    assert!(!none.exists());
    let out = lamina(&["graph", s(&model), "-o", s(&dir.join("missing/x.svg"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
