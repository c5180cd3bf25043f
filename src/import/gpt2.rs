//! A Hugging Face GPT-2 checkpoint as a lamina model.
//!
//! Hugging Face names (`h.<i>.attn.c_attn.weight`, optionally prefixed `transformer.`)
//! and Conv1D layouts (`[in, out]`) become lamina's names and Linear layouts (`[out, in]`):
//! the fused `c_attn` splits into `wq`, `wk`, `wv`, every Conv1D weight is transposed, and
//! `wpe` keeps its first `length` rows. The table is in docs/import.md.

use super::ImportError;
use crate::front;
use crate::io::{self, FileContents, FileTensor};
use crate::tensor::{try_buffer, try_collect, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What `lamina import gpt2` was asked for.
#[derive(Clone, Debug)]
pub struct Gpt2Options {
    /// The checkpoint (`model.safetensors`); `config.json`, `vocab.json` and `merges.txt`
    /// are looked for beside it.
    pub weights: PathBuf,
    /// Positions of the written model (default: the checkpoint's, at most 1024).
    pub length: Option<usize>,
    /// Batch of the written model.
    pub batch: usize,
    /// Attention heads, needed when there is no `config.json`.
    pub heads: Option<usize>,
}

/// A converted checkpoint, held in memory until it is written.
#[derive(Debug)]
pub struct Imported {
    pub model_text: String,
    /// lamina's parameters in the model's parameter order.
    pub tensors: Vec<(String, Tensor)>,
    /// The bytes of `vocab.json` and `merges.txt`, when both sit beside the checkpoint.
    pub tokenizer: Tokenizer,
    /// One line: the model's sizes.
    pub summary: String,
    /// Things the user should know (a tokenizer file without its partner).
    pub notes: Vec<String>,
}

/// The bytes of `vocab.json` and `merges.txt`, if both are copied.
pub type Tokenizer = Option<(Vec<u8>, Vec<u8>)>;

/// The largest `config.json` read: 64 MiB.
const MAX_SIDE_FILE: u64 = 64 << 20;

/// The sizes of a GPT-2, from `config.json` and the tensors.
#[derive(Clone, Debug, PartialEq)]
struct Dims {
    vocab: usize,
    d: usize,
    positions: usize,
    layers: usize,
    hidden: usize,
    heads: usize,
    eps: f64,
    act: &'static str,
}

/// What `config.json` says (every field optional).
#[derive(Clone, Debug, Default)]
struct Config {
    n_head: Option<usize>,
    n_layer: Option<usize>,
    n_embd: Option<usize>,
    n_positions: Option<usize>,
    vocab_size: Option<usize>,
    n_inner: Option<usize>,
    eps: Option<f64>,
    activation: Option<String>,
}

/// Read, check and convert a checkpoint; nothing is written.
pub fn convert(opts: &Gpt2Options) -> Result<Imported, ImportError> {
    let path = &opts.weights;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let config = read_config(&dir.join("config.json"))?;
    let mut tensors = read_checkpoint(path)?;
    let dims = dims(path, &config, &tensors, opts.heads)?;
    check_tensors(path, &dims, &tensors)?;
    let length = opts.length.unwrap_or(dims.positions.min(1024));
    if length == 0 || length > dims.positions {
        return Err(ImportError::Option {
            option: "--length",
            message: format!(
                "is {length} but the checkpoint has {} positions (`wpe.weight` [{}, {}]); give 1 to {}",
                dims.positions, dims.positions, dims.d, dims.positions
            ),
        });
    }
    let (tokenizer, notes) = tokenizer_files(&dir, dims.vocab)?;
    let model_text = model_text(&dims, length, opts.batch, path);
    let compiled =
        front::compile_source(&model_text, "model.lam", &[]).map_err(ImportError::Model)?;
    let rules = rules(&dims, length);
    let mut out = Vec::with_capacity(compiled.forward.params.len());
    let mut uses: HashMap<String, usize> = HashMap::new();
    for rule in rules.values() {
        *uses.entry(rule.hf.clone()).or_default() += 1;
    }
    for p in &compiled.forward.params {
        let rule = rules.get(&p.name).ok_or_else(|| {
            ImportError::Internal(format!("no checkpoint tensor maps to `{}`", p.name))
        })?;
        let t = apply(rule, &mut tensors, &mut uses)?;
        if t.shape != p.shape {
            return Err(ImportError::Internal(format!(
                "`{}` came out {:?} but the model needs {:?}",
                p.name, t.shape, p.shape
            )));
        }
        out.push((p.name.clone(), t));
    }
    if out.len() != rules.len() {
        return Err(ImportError::Internal(format!(
            "the mapping makes {} tensors but the model has {} parameters",
            rules.len(),
            out.len()
        )));
    }
    let count: usize = out.iter().map(|(_, t)| t.numel()).sum();
    let summary = format!(
        "GPT-2: {} layers, width {}, {} heads, vocabulary {}, {length} of {} positions; {count} parameters",
        dims.layers, dims.d, dims.heads, dims.vocab, dims.positions
    );
    Ok(Imported {
        model_text,
        tensors: out,
        tokenizer,
        summary,
        notes,
    })
}

/// Write `model.lam`, `weights.safetensors` (and the tokenizer files) into `dir`, all or
/// nothing; `dir` is created if missing (and removed again if the writes fail). Returns
/// the paths written.
pub fn write(imported: &Imported, dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let created = !dir.exists();
    if created {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::IoError::new(dir, io::IoErrorKind::Write(e)))?;
    } else if !dir.is_dir() {
        return Err(ImportError::Option {
            option: "-o",
            message: format!("{} exists and is not a directory", dir.display()),
        });
    }
    let mut files = vec![
        (
            dir.join("model.lam"),
            FileContents::Bytes(imported.model_text.as_bytes()),
        ),
        (
            dir.join("weights.safetensors"),
            FileContents::Tensors(&imported.tensors),
        ),
    ];
    if let Some((vocab, merges)) = &imported.tokenizer {
        files.push((dir.join("vocab.json"), FileContents::Bytes(vocab)));
        files.push((dir.join("merges.txt"), FileContents::Bytes(merges)));
    }
    match io::write_atomic_all(&files) {
        Ok(()) => Ok(files.into_iter().map(|(p, _)| p).collect()),
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(dir);
            }
            Err(e.into())
        }
    }
}

fn read_config(path: &Path) -> Result<Config, ImportError> {
    if !path.exists() {
        return Ok(Config::default());
    }
    let bytes = io::read_file(path, Some(MAX_SIDE_FILE))?;
    let bad = |message: String| ImportError::Config {
        path: path.to_path_buf(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let present = |key: &str| obj.get(key).filter(|v| !v.is_null());
    let size = |key: &str| -> Result<Option<usize>, ImportError> {
        match present(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().filter(|n| (1..=1 << 31).contains(n)) {
                Some(n) => Ok(Some(n as usize)),
                None => Err(bad(format!(
                    "`{key}` must be a positive whole number, not {v}"
                ))),
            },
        }
    };
    if let Some(t) = present("model_type").and_then(|v| v.as_str()) {
        if t != "gpt2" {
            return Err(bad(format!(
                "`model_type` is \"{t}\"; this importer reads gpt2"
            )));
        }
    }
    let flag = |key: &str| present(key).and_then(|v| v.as_bool());
    for (key, unsupported, what) in [
        ("scale_attn_weights", false, "unscaled attention scores"),
        (
            "scale_attn_by_inverse_layer_idx",
            true,
            "attention scaled by 1/layer",
        ),
        ("add_cross_attention", true, "cross-attention"),
    ] {
        if flag(key) == Some(unsupported) {
            return Err(bad(format!(
                "`{key}: {unsupported}` ({what}) is not supported"
            )));
        }
    }
    let eps = match present("layer_norm_epsilon") {
        None => None,
        Some(v) => match v.as_f64().filter(|e| e.is_finite() && *e > 0.0) {
            Some(e) => Some(e),
            None => {
                return Err(bad(format!(
                    "`layer_norm_epsilon` must be positive, not {v}"
                )))
            }
        },
    };
    let activation = match present("activation_function") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("`activation_function` must be a string, not {v}")))?,
        ),
    };
    Ok(Config {
        n_head: size("n_head")?,
        n_layer: size("n_layer")?,
        n_embd: size("n_embd")?,
        n_positions: size("n_positions")?,
        vocab_size: size("vocab_size")?,
        n_inner: size("n_inner")?,
        eps,
        activation,
    })
}

/// The checkpoint's tensors by name, without the `transformer.` prefix and without the
/// attention mask buffers (`h.<i>.attn.bias`, `h.<i>.attn.masked_bias`).
fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, FileTensor>, ImportError> {
    let mut out = BTreeMap::new();
    for mut t in io::load_tensors(path)? {
        let original = t.name.clone();
        if let Some(rest) = t.name.strip_prefix("transformer.") {
            t.name = rest.to_string();
        }
        if is_mask_buffer(&t.name) {
            continue;
        }
        if out.contains_key(&t.name) {
            return Err(ImportError::Tensor {
                path: path.to_path_buf(),
                name: original,
                problem: format!(
                    "appears both with and without the `transformer.` prefix (as `{}`)",
                    t.name
                ),
            });
        }
        out.insert(t.name.clone(), t);
    }
    Ok(out)
}

fn is_mask_buffer(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("h.") else {
        return false;
    };
    match rest.split_once('.') {
        Some((i, tail)) => {
            i.parse::<usize>().is_ok() && (tail == "attn.bias" || tail == "attn.masked_bias")
        }
        None => false,
    }
}

/// A tensor's stored type, `f32[3, 4]`.
fn ty(t: &FileTensor) -> String {
    t.stored_type()
}

/// The sizes: from the tensors, checked against `config.json` where it says them.
fn dims(
    path: &Path,
    config: &Config,
    tensors: &BTreeMap<String, FileTensor>,
    heads: Option<usize>,
) -> Result<Dims, ImportError> {
    let tensor_err = |name: &str, problem: String| ImportError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        problem,
    };
    let config_err = |message: String| ImportError::Config {
        path: path.with_file_name("config.json"),
        message,
    };
    let two_d = |name: &str| -> Result<Option<(usize, usize)>, ImportError> {
        match tensors.get(name) {
            None => Ok(None),
            Some(t) => match t.tensor.shape[..] {
                [a, b] => Ok(Some((a, b))),
                _ => Err(tensor_err(name, format!("is {} but must be 2-D", ty(t)))),
            },
        }
    };
    let Some((vocab, d)) = two_d("wte.weight")? else {
        return Err(ImportError::Missing {
            path: path.to_path_buf(),
            model: "a GPT-2".into(),
            names: vec!["wte.weight".into()],
        });
    };
    let positions = match two_d("wpe.weight")? {
        Some((p, _)) => p,
        None => config.n_positions.unwrap_or(0),
    };
    for (key, said, found, tensor) in [
        ("vocab_size", config.vocab_size, vocab, "wte.weight"),
        ("n_embd", config.n_embd, d, "wte.weight"),
        ("n_positions", config.n_positions, positions, "wpe.weight"),
    ] {
        if let Some(said) = said.filter(|s| *s != found && tensors.contains_key(tensor)) {
            let shape = ty(&tensors[tensor]);
            return Err(tensor_err(
                tensor,
                format!("is {shape} but config.json says {key} = {said}"),
            ));
        }
    }
    let found_layers = tensors
        .keys()
        .filter_map(|n| {
            n.strip_prefix("h.")?
                .split_once('.')?
                .0
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |i| i + 1);
    let layers = config.n_layer.unwrap_or(found_layers);
    if layers > crate::elab::MAX_LAYERS {
        return Err(tensor_err(
            &format!("h.{}", layers - 1),
            format!(
                "makes {layers} layers; a lamina model has at most {}",
                crate::elab::MAX_LAYERS
            ),
        ));
    }
    if layers == 0 {
        return Err(tensor_err(
            "h.0.ln_1.weight",
            "is missing: the checkpoint has no layers (h.<i>.* tensors)".into(),
        ));
    }
    let hidden = match (config.n_inner, two_d("h.0.mlp.c_fc.weight")?) {
        (Some(h), _) => h,
        (None, Some((_, h))) => h,
        (None, None) => 4 * d,
    };
    let heads = match (config.n_head, heads) {
        (Some(c), Some(h)) if c != h => {
            return Err(ImportError::Option {
                option: "--heads",
                message: format!("is {h} but config.json says n_head = {c}"),
            })
        }
        (Some(h), _) | (None, Some(h)) => h,
        (None, None) => {
            return Err(ImportError::Option {
                option: "--heads",
                message: format!(
                    "the number of attention heads cannot be read off the tensors and there is \
                     no config.json beside {} saying n_head; give it with --heads H (GPT-2 \
                     small has 12)",
                    path.display()
                ),
            })
        }
    };
    if heads == 0 || d % heads != 0 {
        return Err(ImportError::Option {
            option: "--heads",
            message: format!("{heads} heads do not divide the width {d}"),
        });
    }
    let act = activation(config.activation.as_deref()).map_err(config_err)?;
    Ok(Dims {
        vocab,
        d,
        positions,
        layers,
        hidden,
        heads,
        eps: config.eps.unwrap_or(1e-5),
        act,
    })
}

/// lamina's name for a Hugging Face `activation_function` (GPT-2's default is `gelu_new`).
fn activation(name: Option<&str>) -> Result<&'static str, String> {
    match name.unwrap_or("gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok("gelu_tanh"),
        "gelu" => Ok("gelu"),
        "relu" => Ok("relu"),
        "silu" | "swish" => Ok("silu"),
        other => Err(format!(
            "activation_function \"{other}\" has no lamina equivalent (supported: gelu_new, \
             gelu_pytorch_tanh, gelu_fast, gelu, relu, silu)"
        )),
    }
}

/// Every tensor of a GPT-2 of `dims`, with its shape in the checkpoint's layout.
fn expected(dims: &Dims) -> Vec<(String, Vec<usize>)> {
    let (d, h) = (dims.d, dims.hidden);
    let mut out = vec![
        ("wte.weight".to_string(), vec![dims.vocab, d]),
        ("wpe.weight".to_string(), vec![dims.positions, d]),
    ];
    for i in 0..dims.layers {
        for (name, shape) in [
            ("ln_1.weight", vec![d]),
            ("ln_1.bias", vec![d]),
            ("attn.c_attn.weight", vec![d, 3 * d]),
            ("attn.c_attn.bias", vec![3 * d]),
            ("attn.c_proj.weight", vec![d, d]),
            ("attn.c_proj.bias", vec![d]),
            ("ln_2.weight", vec![d]),
            ("ln_2.bias", vec![d]),
            ("mlp.c_fc.weight", vec![d, h]),
            ("mlp.c_fc.bias", vec![h]),
            ("mlp.c_proj.weight", vec![h, d]),
            ("mlp.c_proj.bias", vec![d]),
        ] {
            out.push((format!("h.{i}.{name}"), shape));
        }
    }
    out.push(("ln_f.weight".to_string(), vec![d]));
    out.push(("ln_f.bias".to_string(), vec![d]));
    out
}

/// Every tensor present with its shape, float and finite; nothing unknown; a head
/// `lm_head.weight` equal to `wte.weight`.
fn check_tensors(
    path: &Path,
    dims: &Dims,
    tensors: &BTreeMap<String, FileTensor>,
) -> Result<(), ImportError> {
    let model = format!("a {}-layer GPT-2", dims.layers);
    let expected = expected(dims);
    let missing: Vec<String> = expected
        .iter()
        .filter(|(n, _)| !tensors.contains_key(n))
        .map(|(n, _)| n.clone())
        .collect();
    if !missing.is_empty() {
        return Err(ImportError::Missing {
            path: path.to_path_buf(),
            model,
            names: missing,
        });
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<String> = tensors
        .keys()
        .filter(|n| !known.contains(n.as_str()) && *n != "lm_head.weight")
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        return Err(ImportError::Unexpected {
            path: path.to_path_buf(),
            model,
            names: unexpected,
        });
    }
    let bad = |name: &str, problem: String| ImportError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        problem,
    };
    for (name, shape) in &expected {
        let t = &tensors[name];
        if t.tensor.shape != *shape || !matches!(t.stored, "f32" | "f64") {
            let conv1d = name.ends_with(".weight") && name.contains(".c_");
            let layout = if conv1d {
                " (Conv1D layout [in, out])"
            } else {
                ""
            };
            return Err(bad(
                name,
                format!("is {} but {model} needs f32{shape:?}{layout}", ty(t)),
            ));
        }
        if let Some(k) = t.tensor.data.iter().position(|v| !v.is_finite()) {
            return Err(bad(
                name,
                format!(
                    "holds {} at {:?}; weights must be finite numbers",
                    t.tensor.data[k],
                    io::unravel(k, shape)
                ),
            ));
        }
    }
    if let Some(head) = tensors.get("lm_head.weight") {
        let wte = &tensors["wte.weight"];
        if head.tensor.shape != wte.tensor.shape {
            return Err(bad(
                "lm_head.weight",
                format!(
                    "is {} but the tied head must equal wte.weight {}",
                    ty(head),
                    ty(wte)
                ),
            ));
        }
        if let Some(k) =
            (0..wte.tensor.numel()).find(|&k| head.tensor.data[k] != wte.tensor.data[k])
        {
            return Err(bad(
                "lm_head.weight",
                format!(
                    "differs from wte.weight at {:?} ({} against {}); lamina imports GPT-2 with \
                     its head tied to the embedding",
                    io::unravel(k, &wte.tensor.shape),
                    head.tensor.data[k],
                    wte.tensor.data[k]
                ),
            ));
        }
    }
    Ok(())
}

/// `1e-5`: a float as the model language reads it back exactly.
fn float_text(v: f64) -> String {
    format!("{v:e}")
}

/// The model file for a GPT-2 of `dims`.
fn model_text(dims: &Dims, length: usize, batch: usize, weights: &Path) -> String {
    let source = weights.file_name().map_or_else(
        || weights.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let hidden = if dims.hidden == 4 * dims.d {
        "4 * d".to_string()
    } else {
        dims.hidden.to_string()
    };
    let eps = float_text(dims.eps);
    format!(
        "# GPT-2, imported by `lamina import gpt2` from {source}.\n\
         # {layers} layers, width {d}, {heads} heads, vocabulary {vocab}, {length} of the \
         checkpoint's {positions} positions.\n\
         # Run it with its weights: lamina run model.lam --weights weights.safetensors\n\
         \n\
         model gpt2\n\
         \n\
         d      = {d}\n\
         heads  = {heads}\n\
         layers = {layers}\n\
         vocab  = {vocab}\n\
         length = {length}\n\
         batch  = {batch}\n\
         \n\
         input tokens(batch = batch, length = length, vocab = vocab)\n\
         embed(dim = d, positions = learned)\n\
         norm pre layernorm(eps = {eps})\n\
         \n\
         block layer {{\n    \
             attn = attention(heads = heads, causal = true, bias = true)\n    \
             ffn  = ffn(hidden = {hidden}, act = {act}, bias = true)\n\
         }}\n\
         \n\
         stack layer * layers\n\
         final_norm layernorm(eps = {eps})\n\
         head lm(tied = true)\n",
        layers = dims.layers,
        d = dims.d,
        heads = dims.heads,
        vocab = dims.vocab,
        positions = dims.positions,
        act = dims.act,
    )
}

/// How a lamina parameter is made from a checkpoint tensor.
#[derive(Clone, Debug)]
enum How {
    /// As it is (norms, biases, the embedding).
    Copy,
    /// The first `n` rows (`wpe` cut to the model's length).
    Rows(usize),
    /// Conv1D `[in, out]` to Linear `[out, in]`.
    Transpose,
    /// Columns `k*d .. (k+1)*d` of the fused `c_attn` weight `[d, 3d]`, transposed.
    QkvWeight(usize),
    /// Elements `k*d .. (k+1)*d` of the fused `c_attn` bias `[3d]`.
    QkvBias(usize),
}

#[derive(Clone, Debug)]
struct Rule {
    hf: String,
    how: How,
}

/// lamina's parameter name -> its checkpoint tensor and conversion.
fn rules(dims: &Dims, length: usize) -> HashMap<String, Rule> {
    let rule = |hf: &str, how: How| Rule {
        hf: hf.to_string(),
        how,
    };
    let mut out = HashMap::new();
    out.insert("embed.weight".into(), rule("wte.weight", How::Copy));
    out.insert("pos.weight".into(), rule("wpe.weight", How::Rows(length)));
    for i in 0..dims.layers {
        let (h, b) = (format!("h.{i}"), format!("blocks.{i}"));
        for (k, p) in ["wq", "wk", "wv"].into_iter().enumerate() {
            let w = format!("{h}.attn.c_attn.weight");
            let bias = format!("{h}.attn.c_attn.bias");
            out.insert(format!("{b}.attn.{p}.weight"), rule(&w, How::QkvWeight(k)));
            out.insert(format!("{b}.attn.{p}.bias"), rule(&bias, How::QkvBias(k)));
        }
        for (lamina, hf, how) in [
            ("attn.norm.weight", "ln_1.weight", How::Copy),
            ("attn.norm.bias", "ln_1.bias", How::Copy),
            ("attn.wo.weight", "attn.c_proj.weight", How::Transpose),
            ("attn.wo.bias", "attn.c_proj.bias", How::Copy),
            ("ffn.norm.weight", "ln_2.weight", How::Copy),
            ("ffn.norm.bias", "ln_2.bias", How::Copy),
            ("ffn.w1.weight", "mlp.c_fc.weight", How::Transpose),
            ("ffn.w1.bias", "mlp.c_fc.bias", How::Copy),
            ("ffn.w2.weight", "mlp.c_proj.weight", How::Transpose),
            ("ffn.w2.bias", "mlp.c_proj.bias", How::Copy),
        ] {
            out.insert(format!("{b}.{lamina}"), rule(&format!("{h}.{hf}"), how));
        }
    }
    out.insert("final_norm.weight".into(), rule("ln_f.weight", How::Copy));
    out.insert("final_norm.bias".into(), rule("ln_f.bias", How::Copy));
    out
}

/// Convert one tensor; the checkpoint's tensor is dropped after its last use.
fn apply(
    rule: &Rule,
    tensors: &mut BTreeMap<String, FileTensor>,
    uses: &mut HashMap<String, usize>,
) -> Result<Tensor, ImportError> {
    let missing = || ImportError::Internal(format!("`{}` used after its last use", rule.hf));
    let left = uses.get_mut(&rule.hf).ok_or_else(missing)?;
    *left = left.saturating_sub(1);
    let last = *left == 0;
    let what = || format!("the converted `{}`", rule.hf);
    let src = tensors.get(&rule.hf).ok_or_else(missing)?;
    let shape = &src.tensor.shape;
    let out = match (&rule.how, last) {
        (How::Copy, true) | (How::Rows(_), true) => {
            let mut t = tensors.remove(&rule.hf).ok_or_else(missing)?.tensor;
            if let (How::Rows(n), [_, cols]) = (&rule.how, &t.shape[..]) {
                let cols = *cols;
                t.data.truncate(n * cols);
                t.data.shrink_to_fit();
                t.shape = vec![*n, cols];
            }
            return Ok(t);
        }
        (How::Copy, false) | (How::Rows(_), false) => {
            return Err(ImportError::Internal(format!(
                "`{}` is copied but also used elsewhere",
                rule.hf
            )))
        }
        (How::Transpose, _) => {
            let (r, c) = (shape[0], shape[1]);
            let data = try_collect(
                r * c,
                (0..c)
                    .flat_map(|j| (0..r).map(move |i| (i, j)))
                    .map(|(i, j)| src.tensor.data[i * c + j]),
                what,
            )?;
            Tensor::f32(vec![c, r], data)
        }
        (How::QkvWeight(k), _) => {
            let (d, c) = (shape[0], shape[1]);
            let mut data = try_buffer(d * d, what)?;
            for o in 0..d {
                data.extend((0..d).map(|i| src.tensor.data[i * c + k * d + o]));
            }
            Tensor::f32(vec![d, d], data)
        }
        (How::QkvBias(k), _) => {
            let d = shape[0] / 3;
            Tensor::f32(vec![d], src.tensor.data[k * d..(k + 1) * d].to_vec())
        }
    };
    if last {
        tensors.remove(&rule.hf);
    }
    Ok(out)
}

/// `vocab.json` and `merges.txt` beside the checkpoint: checked (they parse, every id fits
/// the vocabulary) and returned to be copied, with notes on what was not copied.
fn tokenizer_files(dir: &Path, vocab_size: usize) -> Result<(Tokenizer, Vec<String>), ImportError> {
    let (vp, mp) = (dir.join("vocab.json"), dir.join("merges.txt"));
    match (vp.exists(), mp.exists()) {
        (false, false) => return Ok((None, vec![])),
        (true, false) | (false, true) => {
            let (has, lacks) = if vp.exists() { (&vp, &mp) } else { (&mp, &vp) };
            let note = format!(
                "{} is not copied: {} is missing beside it",
                has.display(),
                lacks.display()
            );
            return Ok((None, vec![note]));
        }
        (true, true) => {}
    }
    let (bpe, vocab, merges) = super::read_tokenizer(dir)?;
    if let Some(max) = bpe.max_id().filter(|m| *m as usize >= vocab_size) {
        return Err(ImportError::Tokenizer {
            path: vp,
            message: format!("has the id {max} but the model's vocabulary has {vocab_size} tokens"),
        });
    }
    Ok((Some((vocab, merges)), vec![]))
}
