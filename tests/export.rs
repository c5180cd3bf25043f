//! `lamina export --torch` against lamina itself, with PyTorch: for every example, the
//! exported model's loss, logits and gradients on one batch equal `lamina run`'s; three
//! steps of train.py equal three steps of `lamina train` (SGD with momentum, AdamW, LAMB);
//! two processes under torchrun (DistributedDataParallel, gloo) equal one.
//!
//! Runs when `LAMINA_TORCH_PYTHON` names a python with torch and safetensors (CI sets it);
//! otherwise each test prints a notice and passes.

mod common;

use common::{example_sources, max_rel_err, small_overrides};
use lamina::elab::Override;
use lamina::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;

const LAMINA: &str = env!("CARGO_BIN_EXE_lamina");
const TOLERANCE: f64 = 1e-4;

fn python() -> Option<String> {
    match std::env::var("LAMINA_TORCH_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!(
                "skipped: set LAMINA_TORCH_PYTHON to a python with torch and safetensors to \
                 check the PyTorch export"
            );
            None
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sets(overrides: &[Override]) -> Vec<String> {
    overrides
        .iter()
        .flat_map(|o| ["--set".to_string(), format!("{}={}", o.name, o.value)])
        .collect()
}

/// Run a command; panic with its output when it fails.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn lamina(args: &[&str], extra: &[String], what: &str) -> String {
    run(Command::new(LAMINA).args(args).args(extra), what)
}

fn load(path: &Path) -> Vec<(String, Tensor)> {
    lamina::io::load_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The worst error of `got` against `want` over the tensors `want` holds (that `keep`
/// selects), each tensor measured against its largest entry; a gradient against at least
/// 1e-2 of the largest gradient (a key bias under softmax is a cancelling sum whose true
/// value is zero).
fn compare(
    got: &[(String, Tensor)],
    want: &[(String, Tensor)],
    keep: &dyn Fn(&str) -> bool,
) -> (f64, String) {
    let largest_grad = want
        .iter()
        .filter(|(n, _)| n.starts_with("grad."))
        .flat_map(|(_, t)| t.data.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let mut worst = (0.0, String::new());
    for (name, w) in want.iter().filter(|(n, _)| keep(n)) {
        let g = got
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("`{name}` is missing from the PyTorch side"));
        assert_eq!(g.1.shape, w.shape, "{name}: shapes differ");
        let floor = if name.starts_with("grad.") {
            1e-2 * largest_grad
        } else {
            0.0
        };
        let e = max_rel_err(&g.1.data, &w.data, floor);
        if e >= worst.0 {
            worst = (e, name.clone());
        }
    }
    worst
}

/// `expand linear` and nested widths do not export: a located error, and nothing written.
fn refuses(file: &str, out: &Path, set: &[String], message: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(["export", file, "--torch", "-o", out.to_str().unwrap()])
        .args(set)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{file}: the export succeeded");
    assert!(
        err.contains(message) && err.contains(".lam:"),
        "{file}: {err}"
    );
    assert!(
        !out.exists(),
        "{file}: a refused export wrote {}",
        out.display()
    );
}

#[test]
fn every_example_exports_with_the_same_loss_logits_and_gradients() {
    let Some(py) = python() else { return };
    let dir = scratch("forward");
    let mut report = Vec::new();
    for (name, src) in example_sources() {
        let file = format!("{}/examples/{name}.lam", env!("CARGO_MANIFEST_DIR"));
        let set = sets(&small_overrides(&src));
        let out = dir.join(&name);
        let refused = [
            ("expand linear", "cannot export `expand linear`"),
            ("nested = [", "cannot export a nested ffn"),
        ];
        if let Some((_, message)) = refused.iter().find(|(c, _)| src.contains(c)) {
            refuses(&file, &out, &set, message);
            report.push(format!("{name}: refused ({message})"));
            continue;
        }
        lamina(
            &["export", &file, "--torch", "-o", out.to_str().unwrap()],
            &set,
            &format!("export {name}"),
        );
        let w = out.join("w.safetensors");
        lamina(&["init", &file, "-o", w.to_str().unwrap()], &set, "init");
        // One random batch of the model's shape.
        let compiled = lamina::front::compile_file(Path::new(&file), &small_overrides(&src))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = &compiled.forward;
        let batch = lamina::io::random_batch(g, 7).unwrap();
        let named: Vec<(String, Tensor)> =
            g.inputs.iter().map(|i| i.name.clone()).zip(batch).collect();
        let b = out.join("batch.safetensors");
        lamina::io::save_safetensors(&b, &named).unwrap();
        let (want, got) = (
            out.join("lamina.safetensors"),
            out.join("torch.safetensors"),
        );
        let p = |x: &Path| x.to_str().unwrap().to_string();
        lamina(
            &["run", &file, "--backend", "interp"],
            &[
                set.clone(),
                vec!["--weights".into(), p(&w), "--batch".into(), p(&b)],
                vec!["--out".into(), p(&want)],
            ]
            .concat(),
            &format!("run {name}"),
        );
        run(
            Command::new(&py).arg(out.join("model.py")).args([
                "--weights",
                &p(&w),
                "--batch",
                &p(&b),
                "--out",
                &p(&got),
            ]),
            &format!("model.py of {name}"),
        );
        let (want, got) = (load(&want), load(&got));
        let grads = want.iter().filter(|(n, _)| n.starts_with("grad.")).count();
        assert!(grads > 0, "{name}: lamina wrote no gradients");
        let (err, at) = compare(&got, &want, &|_| true);
        report.push(format!(
            "{name}: {grads} gradients, worst {err:.2e} at {at}"
        ));
        assert!(
            err < TOLERANCE,
            "{name}: `{at}` differs by {err:.3e} (relative) between lamina and PyTorch"
        );
    }
    eprintln!("{}", report.join("\n"));
}

/// The model of the optimizer checks: a small causal LM (copy task) with every parameter
/// role but input and scalar. Its attention has no biases: a key bias's gradient is zero up
/// to rounding (softmax cancels it), and Adam's normalisation would turn that rounding into
/// a full-size step of arbitrary sign.
const TRAIN_MODEL: &str = "\
input tokens(batch = 4, length = 6, vocab = 11)
embed(dim = 16)
block layer {
    attn = attention(heads = 2, bias = false)
    ffn  = ffn(hidden = 32)
}
stack layer * 2
";

/// The model trained three steps by lamina and by train.py: the worst error of the final
/// weights.
fn train_three_steps(py: &str, optimizer: &str, tag: &str) -> (f64, String) {
    let dir = scratch(tag);
    let model = dir.join("lm.lam");
    std::fs::write(&model, TRAIN_MODEL).unwrap();
    let file = model.to_str().unwrap().to_string();
    let set: Vec<String> = Vec::new();
    let recipe: Vec<String> = [
        "--optimizer",
        optimizer,
        "--steps",
        "3",
        "--schedule",
        "cosine(warmup = 1)",
        "--clip",
        "1.0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = dir.join("export");
    let lam_run = dir.join("lamina-run");
    let torch_run = dir.join("torch-run");
    let w = dir.join("w.safetensors");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    lamina(
        &["export", &file, "--torch", "-o", &p(&out)],
        &[set.clone(), recipe.clone()].concat(),
        "export",
    );
    lamina(&["init", &file, "-o", &p(&w)], &set, "init");
    lamina(
        &["train", &file, "--quiet", "--out", &p(&lam_run)],
        &[set.clone(), recipe].concat(),
        "train",
    );
    run(
        Command::new(py).arg(out.join("train.py")).args([
            "--quiet",
            "--threads",
            "1",
            "--init",
            &p(&w),
            "--out",
            &p(&torch_run),
        ]),
        "train.py",
    );
    let want = load(&lam_run.join("final.safetensors"));
    let got = load(&torch_run.join("final.safetensors"));
    compare(&got, &want, &|n| !n.starts_with("optim."))
}

#[test]
fn three_steps_of_train_py_match_lamina_train() {
    let Some(py) = python() else { return };
    let mut report = Vec::new();
    for (tag, optimizer) in [
        ("sgd", "sgd(lr = 0.1, momentum = 0.9, weight_decay = 0.01)"),
        ("adamw", "adamw(lr = 0.01, weight_decay = 0.1)"),
        ("lamb", "lamb(lr = 0.01, weight_decay = 0.01)"),
        ("muon", "muon(lr = 0.02, adam_lr = 0.003)"),
        ("drop_muon", "drop_muon(lr = 0.02)"),
    ] {
        let (err, at) = train_three_steps(&py, optimizer, tag);
        report.push(format!("{tag}: worst {err:.2e} at {at}"));
        assert!(
            err < TOLERANCE,
            "{tag}: `{at}` differs by {err:.3e} after three steps"
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn two_processes_under_torchrun_match_one() {
    let Some(py) = python() else { return };
    let dir = scratch("ddp");
    let model = dir.join("lm.lam");
    std::fs::write(&model, TRAIN_MODEL).unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let (out, w) = (dir.join("export"), dir.join("w.safetensors"));
    lamina(
        &["export", &p(&model), "--torch", "-o", &p(&out)],
        &[
            "--steps",
            "4",
            "--optimizer",
            "adamw(lr = 0.01)",
            "--clip",
            "1.0",
        ]
        .map(String::from),
        "export",
    );
    lamina(&["init", &p(&model), "-o", &p(&w)], &[], "init");
    let train = p(&out.join("train.py"));
    let common =
        |run_dir: &Path| ["--quiet", "--init", &p(&w), "--out", &p(run_dir)].map(String::from);
    let one = dir.join("one");
    run(
        Command::new(&py)
            .arg(&train)
            .args(common(&one))
            .args(["--threads", "1"]),
        "train.py on one process",
    );
    let want = load(&one.join("final.safetensors"));
    let mut report = Vec::new();
    for (tag, extra) in [("ddp", None), ("fsdp", Some("--fsdp"))] {
        let run_dir = dir.join(tag);
        run(
            Command::new(&py)
                .args([
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    "--nproc-per-node",
                    "2",
                ])
                .arg(&train)
                .args(common(&run_dir))
                .args(extra)
                .env("OMP_NUM_THREADS", "1"),
            &format!("train.py on two processes ({tag})"),
        );
        let got = load(&run_dir.join("final.safetensors"));
        let (err, at) = compare(&got, &want, &|_| true);
        report.push(format!("two processes, {tag}: worst {err:.2e} at {at}"));
        assert!(
            err < TOLERANCE,
            "{tag}: `{at}` differs by {err:.3e} between one and two processes"
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn a_name_torch_reserves_is_a_located_error() {
    let dir = scratch("reserved");
    let model = dir.join("bad.lam");
    std::fs::write(
        &model,
        "input features(batch = 4, width = 8)\nblock layer {\n    to = ffn(hidden = 8)\n}\n\
         stack layer * 1\nhead classifier(classes = 3)\n",
    )
    .unwrap();
    let out = Command::new(LAMINA)
        .args(["export", model.to_str().unwrap(), "--torch", "-o"])
        .arg(dir.join("out"))
        .args(["--color", "never"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("bad.lam:3:10"), "{text}");
    assert!(
        text.contains("cannot export the sublayer name `to`"),
        "{text}"
    );
    assert!(text.contains("rename the sublayer"), "{text}");
    assert!(!dir.join("out").join("model.py").exists());
}
