//! `lamina import gpt2` end to end: a tiny random GPT-2 checkpoint in Hugging Face's names
//! and layouts, imported and run, against an f64 GPT-2 forward written here from the
//! Hugging Face layout (independent of lamina's lowering) and, when `LAMINA_TORCH_PYTHON`
//! names a Python with torch and safetensors, against `tests/gpt2_reference.py`.

mod common;

use common::lamina;
use lamina::import::bpe::Bpe;
use lamina::io::{load_safetensors, save_safetensors};
use lamina::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LAYERS: usize = 2;
const D: usize = 16;
const HEADS: usize = 2;
const VOCAB: usize = 50;
const POSITIONS: usize = 16;
const HIDDEN: usize = 4 * D;
const EPS: f64 = 1e-5;

/// A checkpoint as Hugging Face names and lays it out: name -> (shape, values).
type Hf = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-import-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A random GPT-2 of the sizes above: weights around 0.3, norm weights around 1, so a
/// name or layout mix-up changes the outputs.
fn random_gpt2(seed: u64) -> Hf {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Hf::new();
    let mut put = |name: String, shape: Vec<usize>, centre: f64, spread: f64| {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| (centre + spread * (2.0 * rng.gen::<f64>() - 1.0)) as f32 as f64)
            .collect();
        out.insert(name, (shape, data));
    };
    put("wte.weight".into(), vec![VOCAB, D], 0.0, 0.5);
    put("wpe.weight".into(), vec![POSITIONS, D], 0.0, 0.5);
    for i in 0..LAYERS {
        let h = format!("h.{i}");
        for ln in ["ln_1", "ln_2"] {
            put(format!("{h}.{ln}.weight"), vec![D], 1.0, 0.3);
            put(format!("{h}.{ln}.bias"), vec![D], 0.0, 0.2);
        }
        for (name, fan_in, fan_out) in [
            ("attn.c_attn", D, 3 * D),
            ("attn.c_proj", D, D),
            ("mlp.c_fc", D, HIDDEN),
            ("mlp.c_proj", HIDDEN, D),
        ] {
            let spread = 1.5 / (fan_in as f64).sqrt();
            put(
                format!("{h}.{name}.weight"),
                vec![fan_in, fan_out],
                0.0,
                spread,
            );
            put(format!("{h}.{name}.bias"), vec![fan_out], 0.0, 0.2);
        }
    }
    put("ln_f.weight".into(), vec![D], 1.0, 0.3);
    put("ln_f.bias".into(), vec![D], 0.0, 0.2);
    out
}

fn config_json() -> String {
    format!(
        r#"{{"model_type": "gpt2", "n_head": {HEADS}, "n_layer": {LAYERS}, "n_embd": {D},
            "n_positions": {POSITIONS}, "vocab_size": {VOCAB}, "n_inner": null,
            "layer_norm_epsilon": {EPS:e}, "activation_function": "gelu_new"}}"#
    )
}

/// Write `hf` as `dir/model.safetensors` with the given name prefix, plus the attention
/// mask buffers Hugging Face stores, a tied `lm_head.weight`, and `config.json` if asked.
fn write_checkpoint(dir: &Path, hf: &Hf, prefix: &str, config: bool) -> PathBuf {
    let mut tensors: Vec<(String, Tensor)> = hf
        .iter()
        .map(|(n, (shape, data))| {
            (
                format!("{prefix}{n}"),
                Tensor::f32(shape.clone(), data.clone()),
            )
        })
        .collect();
    for i in 0..LAYERS {
        let mask: Vec<f64> = (0..POSITIONS * POSITIONS)
            .map(|k| f64::from(u8::from(k % POSITIONS <= k / POSITIONS)))
            .collect();
        tensors.push((
            format!("{prefix}h.{i}.attn.bias"),
            Tensor::f32(vec![1, 1, POSITIONS, POSITIONS], mask),
        ));
        tensors.push((
            format!("{prefix}h.{i}.attn.masked_bias"),
            Tensor::f32(vec![], vec![-1e4]),
        ));
    }
    if let Some((shape, data)) = hf.get("wte.weight") {
        tensors.push((
            "lm_head.weight".into(),
            Tensor::f32(shape.clone(), data.clone()),
        ));
    }
    let path = dir.join("model.safetensors");
    save_safetensors(&path, &tensors).unwrap();
    if config {
        std::fs::write(dir.join("config.json"), config_json()).unwrap();
    }
    path
}

fn tensor<'a>(hf: &'a Hf, name: &str) -> &'a [f64] {
    &hf[name].1
}

fn layer_norm(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let r = 1.0 / (var + EPS).sqrt();
    (0..x.len())
        .map(|i| (x[i] - mean) * r * w[i] + b[i])
        .collect()
}

/// `x @ W + b` with a Conv1D weight `[in, out]`.
fn conv1d(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let out = b.len();
    let mut y = b.to_vec();
    for (i, xi) in x.iter().enumerate() {
        for (j, yj) in y.iter_mut().enumerate() {
            *yj += xi * w[i * out + j];
        }
    }
    y
}

fn gelu_new(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

/// GPT-2's forward on one sequence in f64, reading the Hugging Face tensors as they are,
/// with the layers run in `order`: the logits `[T, VOCAB]`.
fn reference(hf: &Hf, tokens: &[usize], order: &[usize]) -> Vec<Vec<f64>> {
    let t_len = tokens.len();
    let (wte, wpe) = (tensor(hf, "wte.weight"), tensor(hf, "wpe.weight"));
    let mut x: Vec<Vec<f64>> = (0..t_len)
        .map(|t| {
            (0..D)
                .map(|j| wte[tokens[t] * D + j] + wpe[t * D + j])
                .collect()
        })
        .collect();
    let dh = D / HEADS;
    for &i in order {
        let p = |n: &str| tensor(hf, &format!("h.{i}.{n}"));
        let qkv: Vec<Vec<f64>> = x
            .iter()
            .map(|xt| {
                let h = layer_norm(xt, p("ln_1.weight"), p("ln_1.bias"));
                conv1d(&h, p("attn.c_attn.weight"), p("attn.c_attn.bias"))
            })
            .collect();
        for t in 0..t_len {
            let mut o = vec![0.0; D];
            for hd in 0..HEADS {
                let q = &qkv[t][hd * dh..(hd + 1) * dh];
                let scores: Vec<f64> = (0..=t)
                    .map(|s| {
                        let k = &qkv[s][D + hd * dh..D + (hd + 1) * dh];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (dh as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|v| (v - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (s, es) in e.iter().enumerate() {
                    for j in 0..dh {
                        o[hd * dh + j] += es / z * qkv[s][2 * D + hd * dh + j];
                    }
                }
            }
            let a = conv1d(&o, p("attn.c_proj.weight"), p("attn.c_proj.bias"));
            for j in 0..D {
                x[t][j] += a[j];
            }
        }
        for xt in x.iter_mut() {
            let h = layer_norm(xt, p("ln_2.weight"), p("ln_2.bias"));
            let f: Vec<f64> = conv1d(&h, p("mlp.c_fc.weight"), p("mlp.c_fc.bias"))
                .into_iter()
                .map(gelu_new)
                .collect();
            let f = conv1d(&f, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"));
            for j in 0..D {
                xt[j] += f[j];
            }
        }
    }
    x.iter()
        .map(|xt| {
            let h = layer_norm(xt, tensor(hf, "ln_f.weight"), tensor(hf, "ln_f.bias"));
            (0..VOCAB)
                .map(|v| (0..D).map(|j| h[j] * wte[v * D + j]).sum())
                .collect()
        })
        .collect()
}

/// Mean cross-entropy of `logits` rows against `targets`.
fn cross_entropy(logits: &[Vec<f64>], targets: &[usize]) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(targets)
        .map(|(row, &y)| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - row[y]
        })
        .sum();
    total / targets.len() as f64
}

/// A batch `[b, t]` of random tokens and targets, written for `lamina run --batch`.
fn write_batch(path: &Path, b: usize, t: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tokens: Vec<usize> = (0..b * t).map(|_| rng.gen_range(0..VOCAB)).collect();
    let targets: Vec<usize> = (0..b * t).map(|_| rng.gen_range(0..VOCAB)).collect();
    let as_tensor = |v: &[usize]| Tensor::i32(vec![b, t], v.iter().map(|&x| x as f64).collect());
    save_safetensors(
        path,
        &[
            ("tokens".into(), as_tensor(&tokens)),
            ("targets".into(), as_tensor(&targets)),
        ],
    )
    .unwrap();
    (tokens, targets)
}

/// The reference logits `[b * t * VOCAB]` and loss of a batch, layers in `order`.
fn reference_batch(
    hf: &Hf,
    tokens: &[usize],
    targets: &[usize],
    t: usize,
    order: &[usize],
) -> (Vec<f64>, f64) {
    let mut logits = Vec::new();
    let mut rows = Vec::new();
    for (seq, tg) in tokens.chunks(t).zip(targets.chunks(t)) {
        let l = reference(hf, seq, order);
        logits.extend(l.iter().flatten().copied());
        rows.push(cross_entropy(&l, tg));
    }
    let loss = rows.iter().sum::<f64>() / rows.len() as f64;
    (logits, loss)
}

/// The largest difference relative to the largest reference entry.
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

/// `lamina run` with the imported weights on a batch: (logits, loss).
fn run(model: &Path, weights: &Path, batch: &Path, out: &Path, backend: &str) -> (Vec<f64>, f64) {
    ok(&lamina(&[
        "run",
        s(model),
        "--weights",
        s(weights),
        "--batch",
        s(batch),
        "--out",
        s(out),
        "--backend",
        backend,
    ]));
    let outs = load_safetensors(out).unwrap();
    let get = |n: &str| outs.iter().find(|(k, _)| k == n).unwrap().1.data.clone();
    (get("logits"), get("loss")[0])
}

/// Import the tiny checkpoint (with the `transformer.` prefix and mask buffers) and
/// compare `lamina run` on both back ends with the reference forward, for the model as
/// imported and with its stack edited to a CoLa order.
#[test]
fn imported_gpt2_matches_a_reference_forward() {
    let dir = scratch("reference");
    let hf = random_gpt2(1);
    let ckpt = write_checkpoint(&dir, &hf, "transformer.", true);
    let out = dir.join("lam");
    let printed = ok(&lamina(&[
        "import",
        "gpt2",
        "--weights",
        s(&ckpt),
        "-o",
        s(&out),
        "--length",
        "8",
        "--batch",
        "2",
    ]));
    assert!(printed.contains("model.lam") && printed.contains("weights.safetensors"));
    let (model, weights) = (out.join("model.lam"), out.join("weights.safetensors"));
    let text = std::fs::read_to_string(&model).unwrap();
    for line in [
        "length = 8",
        "batch  = 2",
        "attention(heads = heads, causal = true, bias = true)",
        "ffn(hidden = 4 * d, act = gelu_tanh, bias = true)",
        "norm pre layernorm(eps = 1e-5)",
        "head lm(tied = true)",
    ] {
        assert!(text.contains(line), "model.lam lacks `{line}`:\n{text}");
    }
    let params = ok(&lamina(&["params", s(&model)]));
    for name in [
        "embed.weight",
        "pos.weight",
        "blocks.1.attn.wq.weight",
        "blocks.1.ffn.w2.bias",
        "final_norm.bias",
    ] {
        assert!(params.contains(name), "params lacks {name}:\n{params}");
    }

    let batch = dir.join("batch.safetensors");
    let (tokens, targets) = write_batch(&batch, 2, 8, 7);
    let (want, want_loss) = reference_batch(&hf, &tokens, &targets, 8, &[0, 1]);
    for backend in ["jit", "interp"] {
        let (logits, loss) = run(
            &model,
            &weights,
            &batch,
            &dir.join("out.safetensors"),
            backend,
        );
        let err = rel_err(&logits, &want);
        let loss_err = (loss - want_loss).abs() / want_loss.abs();
        println!("{backend}: logits relative error {err:.2e}, loss {loss} against {want_loss} ({loss_err:.2e})");
        assert!(err < 1e-4, "{backend}: logits differ by {err:e}");
        assert!(
            loss_err < 1e-4,
            "{backend}: loss {loss} against {want_loss}"
        );
    }

    // CoLa: the same weights with the stack edited to run layer 0, then layer 1 twice.
    let cola = out.join("cola.lam");
    let edited = text.replace(
        "stack layer * layers\n",
        "stack layer * layers order [0, 1, 1]\n",
    );
    assert_ne!(edited, text);
    std::fs::write(&cola, edited).unwrap();
    let (want, want_loss) = reference_batch(&hf, &tokens, &targets, 8, &[0, 1, 1]);
    let (logits, loss) = run(
        &cola,
        &weights,
        &batch,
        &dir.join("cola_out.safetensors"),
        "jit",
    );
    let err = rel_err(&logits, &want);
    println!(
        "CoLa order [0, 1, 1]: logits relative error {err:.2e}, loss {loss} against {want_loss}"
    );
    assert!(err < 1e-4, "CoLa: logits differ by {err:e}");
    assert!((loss - want_loss).abs() < 1e-4 * want_loss.abs());
    // Skipping layer 1 leaves its weights unused, which is only a warning.
    std::fs::write(
        &cola,
        text.replace("stack layer * layers\n", "stack layer * layers order [0]\n"),
    )
    .unwrap();
    let (want, _) = reference_batch(&hf, &tokens, &targets, 8, &[0]);
    let (logits, _) = run(
        &cola,
        &weights,
        &batch,
        &dir.join("skip_out.safetensors"),
        "jit",
    );
    assert!(rel_err(&logits, &want) < 1e-4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// FactorLLM and FiRST on the imported model: its FFNs split into experts (with every
/// expert active the reference forward is unchanged), and routers added, fine-tuned from
/// the imported weights, then used to skip layers.
#[test]
fn experts_and_routers_apply_to_an_imported_gpt2() {
    let dir = scratch("convert");
    let hf = random_gpt2(2);
    let ckpt = write_checkpoint(&dir, &hf, "", true);
    let out = dir.join("lam");
    ok(&lamina(&[
        "import",
        "gpt2",
        "--weights",
        s(&ckpt),
        "-o",
        s(&out),
        "--length",
        "8",
        "--batch",
        "2",
    ]));
    let (model, weights) = (out.join("model.lam"), out.join("weights.safetensors"));
    let batch = dir.join("batch.safetensors");
    let (tokens, targets) = write_batch(&batch, 2, 8, 9);
    let (want, want_loss) = reference_batch(&hf, &tokens, &targets, 8, &[0, 1]);

    // FactorLLM: 4 experts of the 4 * d hidden units, all active, zero router.
    let moe = dir.join("moe");
    ok(&lamina(&[
        "convert",
        s(&model),
        "--weights",
        s(&weights),
        "--ffn-to-moe",
        "4",
        "-o",
        s(&moe),
    ]));
    let text = std::fs::read_to_string(moe.with_extension("lam")).unwrap();
    assert!(
        text.contains("moe(experts = 4, top = 4, hidden = "),
        "{text}"
    );
    let (logits, loss) = run(
        &moe.with_extension("lam"),
        &moe.with_extension("safetensors"),
        &batch,
        &dir.join("moe_out.safetensors"),
        "interp",
    );
    let err = rel_err(&logits, &want);
    println!("experts: logits relative error {err:.2e}, loss {loss} against {want_loss}");
    assert!(err < 1e-4, "the converted model differs by {err:e}");

    // FiRST: routers, a few fine-tuning steps from the imported weights, hard skipping.
    let routed = dir.join("routed");
    ok(&lamina(&[
        "convert",
        s(&model),
        "--weights",
        s(&weights),
        "--routers",
        "-o",
        s(&routed),
    ]));
    let rtext = std::fs::read_to_string(routed.with_extension("lam")).unwrap();
    assert!(rtext.contains("stack layer * layers routed"), "{rtext}");
    let run_dir = dir.join("run");
    ok(&lamina(&[
        "train",
        s(&routed.with_extension("lam")),
        "--init",
        s(&routed.with_extension("safetensors")),
        "--task",
        "copy",
        "--steps",
        "3",
        "--out",
        s(&run_dir),
        "--quiet",
    ]));
    let skipped = ok(&lamina(&[
        "run",
        s(&routed.with_extension("lam")),
        "--weights",
        s(&run_dir.join("final.safetensors")),
        "--batch",
        s(&batch),
        "--skip-below",
        "0.99",
    ]));
    assert!(
        skipped.contains("layers skipped = 1.0000 (4 of 4 routed layer runs)"),
        "{skipped}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same comparison against an independent PyTorch GPT-2 forward, when a Python with
/// torch and safetensors is named by `LAMINA_TORCH_PYTHON`.
#[test]
fn imported_gpt2_matches_pytorch() {
    let Some(python) = std::env::var_os("LAMINA_TORCH_PYTHON") else {
        println!("skipped: set LAMINA_TORCH_PYTHON to a Python with torch and safetensors");
        return;
    };
    let dir = scratch("torch");
    let hf = random_gpt2(2);
    let ckpt = write_checkpoint(&dir, &hf, "", true);
    let out = dir.join("lam");
    ok(&lamina(&[
        "import",
        "gpt2",
        "--weights",
        s(&ckpt),
        "-o",
        s(&out),
        "--batch",
        "3",
    ]));
    let batch = dir.join("batch.safetensors");
    write_batch(&batch, 3, POSITIONS, 11);
    let torch_out = dir.join("torch.safetensors");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gpt2_reference.py");
    let status = Command::new(python)
        .args([
            script,
            s(&ckpt),
            s(&dir.join("config.json")),
            s(&batch),
            s(&torch_out),
        ])
        .status()
        .expect("the Python of LAMINA_TORCH_PYTHON runs");
    assert!(status.success(), "gpt2_reference.py failed");
    let torch = load_safetensors(&torch_out).unwrap();
    let get = |n: &str| torch.iter().find(|(k, _)| k == n).unwrap().1.data.clone();
    let (want, want_loss) = (get("logits"), get("loss")[0]);
    let (model, weights) = (out.join("model.lam"), out.join("weights.safetensors"));
    for backend in ["jit", "interp"] {
        let (logits, loss) = run(
            &model,
            &weights,
            &batch,
            &dir.join("out.safetensors"),
            backend,
        );
        let err = rel_err(&logits, &want);
        println!("{backend} against PyTorch: logits relative error {err:.2e}, loss {loss} against {want_loss}");
        assert!(
            err < 1e-4,
            "{backend}: logits differ from PyTorch's by {err:e}"
        );
        assert!((loss - want_loss).abs() < 1e-4 * want_loss.abs());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Import `hf` (after `edit`) into a fresh `dir/out`, expecting failure: the message.
fn import_fails(dir: &Path, hf: &Hf, config: bool, extra: &[&str]) -> String {
    let ckpt = write_checkpoint(dir, hf, "", config);
    let out = dir.join("out");
    let mut args = vec!["import", "gpt2", "--weights", s(&ckpt), "-o", s(&out)];
    args.extend_from_slice(extra);
    let o = lamina(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "expected failure: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "a failed import left {}", out.display());
    err
}

#[test]
fn import_errors_name_the_tensor_and_write_nothing() {
    let base = random_gpt2(3);
    let case = |name: &str, hf: &Hf, config: bool, extra: &[&str], want: &str| {
        let dir = scratch(name);
        let err = import_fails(&dir, hf, config, extra);
        assert!(err.contains(want), "{name}: expected `{want}` in:\n{err}");
        let _ = std::fs::remove_dir_all(&dir);
    };
    let mut hf = base.clone();
    hf.remove("h.1.ln_2.bias");
    case(
        "missing",
        &hf,
        true,
        &[],
        "lacks 1 tensor(s) of a 2-layer GPT-2: h.1.ln_2.bias",
    );
    let mut hf = base.clone();
    hf.get_mut("h.0.attn.c_attn.weight").unwrap().0 = vec![3 * D, D];
    case(
        "shape",
        &hf,
        true,
        &[],
        "tensor `h.0.attn.c_attn.weight` is f32[48, 16] but a 2-layer GPT-2 needs f32[16, 48] (Conv1D layout [in, out])",
    );
    case(
        "heads",
        &base,
        false,
        &[],
        "--heads: the number of attention heads cannot be read off the tensors",
    );
    case(
        "length",
        &base,
        true,
        &["--length", "17"],
        "--length: is 17 but the checkpoint has 16 positions",
    );
    let mut hf = base.clone();
    hf.insert("h.0.attn.extra".into(), (vec![D], vec![0.0; D]));
    case(
        "unknown",
        &hf,
        true,
        &[],
        "holds 1 tensor(s) that are no part of a 2-layer GPT-2: h.0.attn.extra",
    );
    let mut hf = base.clone();
    hf.get_mut("h.1.mlp.c_fc.bias").unwrap().1[3] = f64::NAN;
    case(
        "nan",
        &hf,
        true,
        &[],
        "tensor `h.1.mlp.c_fc.bias` holds NaN at [3]",
    );

    // A tokenizer beside the checkpoint whose ids do not fit the vocabulary.
    let dir = scratch("tokenizer");
    tiny_tokenizer(&dir);
    let vocab = std::fs::read_to_string(dir.join("vocab.json")).unwrap();
    std::fs::write(
        dir.join("vocab.json"),
        vocab.replace("\"f\":49", "\"f\":60"),
    )
    .unwrap();
    let err = import_fails(&dir, &base, true, &[]);
    assert!(
        err.contains("has the id 60 but the model's vocabulary has 50 tokens"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // An untied head: lm_head.weight is written from wte.weight, so change it after.
    let dir = scratch("untied");
    let ckpt = write_checkpoint(&dir, &base, "", true);
    let mut tensors = load_safetensors(&ckpt).unwrap();
    let head = tensors
        .iter_mut()
        .find(|(n, _)| n == "lm_head.weight")
        .unwrap();
    head.1.data[3 * D + 5] += 0.25;
    save_safetensors(&ckpt, &tensors).unwrap();
    let o = lamina(&[
        "import",
        "gpt2",
        "--weights",
        s(&ckpt),
        "-o",
        s(&dir.join("out")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("tensor `lm_head.weight` differs from wte.weight at [3, 5]"),
        "{err}"
    );
    assert!(!dir.join("out").exists());
    let _ = std::fs::remove_dir_all(&dir);

    // A failed import into an existing directory leaves its files as they were.
    let dir = scratch("existing");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("model.lam"), "old").unwrap();
    let ckpt = write_checkpoint(&dir, &base, "", false);
    let o = lamina(&["import", "gpt2", "--weights", s(&ckpt), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(out.join("model.lam")).unwrap(),
        "old"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "no temporary files left"
    );
    // Without config.json, --heads completes the sizes (the rest come from the tensors).
    ok(&lamina(&[
        "import",
        "gpt2",
        "--weights",
        s(&ckpt),
        "-o",
        s(&out),
        "--heads",
        "2",
    ]));
    let text = std::fs::read_to_string(out.join("model.lam")).unwrap();
    assert!(
        text.contains("heads  = 2") && text.contains("length = 16"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A vocabulary of exactly `VOCAB` tokens: the hand-made one of the BPE tests and single
/// letters up to id 49.
fn tiny_tokenizer(dir: &Path) {
    let mut vocab: Vec<String> = [
        "h",
        "e",
        "l",
        "o",
        "\u{120}",
        "w",
        "r",
        "d",
        "!",
        "he",
        "ll",
        "llo",
        "hello",
        "\u{120}w",
        "or",
        "\u{120}wor",
        "\u{120}world",
        "ld",
        "<|endoftext|>",
        "\u{10a}",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    vocab.extend(('A'..='Z').map(String::from));
    vocab.extend(["a", "b", "c", "f"].map(String::from));
    assert_eq!(vocab.len(), VOCAB);
    let json: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::Value::Object(json).to_string(),
    )
    .unwrap();
    let merges =
        "#version: 0.2\nh e\nl l\nll o\nhe llo\n\u{120} w\no r\n\u{120}w or\nl d\n\u{120}wor ld\n";
    std::fs::write(dir.join("merges.txt"), merges).unwrap();
}

/// Greedy sampling on token ids follows the reference forward, and with the tokenizer
/// that the import copied the same ids come out as text.
#[test]
fn sample_generates_ids_and_text_of_an_imported_gpt2() {
    let dir = scratch("sample");
    let hf = random_gpt2(4);
    let ckpt = write_checkpoint(&dir, &hf, "", true);
    tiny_tokenizer(&dir);
    let out = dir.join("lam");
    ok(&lamina(&[
        "import",
        "gpt2",
        "--weights",
        s(&ckpt),
        "-o",
        s(&out),
        "--length",
        "6",
    ]));
    assert!(out.join("vocab.json").exists() && out.join("merges.txt").exists());
    let (model, weights) = (out.join("model.lam"), out.join("weights.safetensors"));

    // "hello world" is [12, 16] in the tiny vocabulary; 8 new tokens slide the window.
    let mut want: Vec<usize> = vec![12, 16];
    for _ in 0..8 {
        let window = &want[want.len().saturating_sub(6)..];
        let logits = reference(&hf, window, &[0, 1]);
        let last = logits.last().unwrap();
        let best = (0..VOCAB).fold(0, |b, v| if last[v] > last[b] { v } else { b });
        want.push(best);
    }
    let common = [
        "sample",
        s(&model),
        "--weights",
        s(&weights),
        "--length",
        "8",
        "--temperature",
        "0",
    ];
    let mut args = common.to_vec();
    args.extend(["--prompt-ids", "12,16"]);
    let ids = ok(&lamina(&args));
    let want_text: Vec<String> = want.iter().map(|i| i.to_string()).collect();
    assert_eq!(ids.trim(), want_text.join(","));

    let mut args = common.to_vec();
    args.extend(["--tokenizer", s(&out), "--prompt", "hello world"]);
    let text = lamina(&args);
    ok(&text);
    let bpe = lamina::import::load_tokenizer(&out).unwrap();
    let ids: Vec<u32> = want.iter().map(|&i| i as u32).collect();
    let mut expected = bpe.decode(&ids).unwrap();
    expected.push(b'\n');
    assert_eq!(text.stdout, expected);
    assert!(text.stdout.starts_with(b"hello world"));

    // Ids outside the vocabulary and byte prompts on a non-byte model are errors.
    let mut args = common.to_vec();
    args.extend(["--prompt-ids", "12,50"]);
    let o = lamina(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("token id 50 is outside"));
    let o = lamina(&common);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--prompt-ids"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tokenizer round trip on text the tiny vocabulary covers.
#[test]
fn bpe_round_trips_on_a_tiny_vocabulary() {
    let dir = scratch("bpe");
    tiny_tokenizer(&dir);
    let bpe: Bpe = lamina::import::load_tokenizer(&dir).unwrap();
    for text in [
        "hello world",
        "Hello World!",
        "he<|endoftext|>\nabc",
        "hello  world\n\n",
    ] {
        let ids = bpe.encode(text).unwrap();
        assert_eq!(
            bpe.decode(&ids).unwrap(),
            text.as_bytes(),
            "{text}: {ids:?}"
        );
    }
    assert_eq!(bpe.encode("hello world!").unwrap(), [12, 16, 8]);
    let _ = std::fs::remove_dir_all(&dir);
}
