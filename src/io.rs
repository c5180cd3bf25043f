//! Files in and out: safetensors tensors, atomic writes, parameter init, random batches.
//!
//! Every file lamina writes goes through `write_atomic`: a temporary file beside the
//! target, then a rename, so a failed or interrupted command never leaves a partial file.

use crate::ir::{DType, Graph, Init, Op};
use crate::tensor::Tensor;
use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::io::Write;
use std::path::Path;

/// Write a message to stderr. A failed write (stderr closed, a full disk, a pipe whose
/// reader is gone) loses the message but never panics or stops the command: the exit
/// code stays the one the command would have had.
pub fn to_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|_| err.flush());
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move the output into {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Serialize named tensors (f32 tensors as F32, i32 as I32) to safetensors bytes.
pub fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, bytes) = match t.dtype {
                DType::F32 => (
                    Dtype::F32,
                    t.data
                        .iter()
                        .flat_map(|&v| (v as f32).to_le_bytes())
                        .collect::<Vec<u8>>(),
                ),
                DType::I32 => (
                    Dtype::I32,
                    t.data
                        .iter()
                        .flat_map(|&v| (v as i32).to_le_bytes())
                        .collect::<Vec<u8>>(),
                ),
            };
            (name.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| anyhow!("tensor {name}: {e:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &None).map_err(|e| anyhow!("serializing: {e:?}"))
}

pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    write_atomic(path, &safetensors_bytes(tensors)?)
}

/// Read every tensor of a safetensors file. F32, F64, F16-free files only: F32/F64 load as
/// f32 tensors, I32/I64 as i32 tensors (I64 values must fit in i32).
pub fn load_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_safetensors(&bytes)
        .with_context(|| format!("{} is not a valid tensor file", path.display()))
}

/// A sentence for a safetensors format error (the crate's own text is its variant name).
fn describe(e: &SafeTensorError) -> String {
    use SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::InvalidHeaderLength => {
            "the file is too short to hold a safetensors header".into()
        }
        E::HeaderTooLarge => "its header claims to be larger than 100 MB".into(),
        E::InvalidHeader | E::InvalidHeaderStart | E::InvalidHeaderDeserialization => {
            "its header is not the JSON a safetensors file starts with".into()
        }
        E::JsonError(j) => format!("its header is not valid JSON ({j})"),
        E::TensorInvalidInfo | E::InvalidTensorView(..) => {
            "a tensor's shape and dtype do not match its byte range".into()
        }
        E::InvalidOffset(name) => format!("tensor `{name}` has invalid data offsets"),
        E::MetadataIncompleteBuffer => "the tensor data does not cover the file exactly".into(),
        E::ValidationOverflow => "a tensor's declared size overflows".into(),
        E::TensorNotFound(name) => format!("it has no tensor `{name}`"),
        E::IoError(io) => io.to_string(),
    }
}

pub fn parse_safetensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("{}", describe(&e)))?;
    let mut out = Vec::new();
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st.tensor(name).map_err(|e| anyhow!("{}", describe(&e)))?;
        let shape = view.shape().to_vec();
        let data = view.data();
        let tensor = match view.dtype() {
            Dtype::F32 => Tensor::f32(
                shape,
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect(),
            ),
            Dtype::F64 => Tensor::f32(
                shape,
                data.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
                    .collect(),
            ),
            Dtype::I32 => Tensor::i32(
                shape,
                data.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect(),
            ),
            Dtype::I64 => {
                let mut vals = Vec::with_capacity(data.len() / 8);
                for c in data.chunks_exact(8) {
                    let v = i64::from_le_bytes(c.try_into().expect("chunk of 8"));
                    if i32::try_from(v).is_err() {
                        bail!("tensor {name}: value {v} does not fit in i32");
                    }
                    vals.push(v as f64);
                }
                Tensor::i32(shape, vals)
            }
            other => bail!("tensor {name} has dtype {other:?}; lamina reads F32, F64, I32 and I64"),
        };
        out.push((name.to_string(), tensor));
    }
    Ok(out)
}

/// A stable 64-bit hash (FNV-1a): seeds derived from names and counters stay the same across
/// versions and platforms (each parameter's init depends only on the seed and its name).
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A standard normal sample.
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; u1 in (0, 1] so the log is finite.
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Initial values of every parameter of `g`, in parameter order, rounded to f32.
pub fn init_params(g: &Graph, seed: u64) -> Vec<Tensor> {
    g.params
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv(p.name.as_bytes()));
            let data: Vec<f64> = match p.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Const(c) => vec![c; n],
                Init::Normal { std } => (0..n).map(|_| std * normal(&mut rng)).collect(),
                Init::Uniform { bound } => (0..n)
                    .map(|_| bound * (2.0 * rng.gen::<f64>() - 1.0))
                    .collect(),
            };
            Tensor::f32(
                p.shape.clone(),
                data.into_iter().map(|v| v as f32 as f64).collect(),
            )
        })
        .collect()
}

/// The number of classes an i32 input indexes: the smallest of the table rows it is gathered
/// from, the one-hot widths and the scatter rows it feeds (through reshapes and other views).
/// `None` if the graph never indexes with it.
pub fn index_bound(g: &Graph, input_index: usize) -> Option<usize> {
    // One pass in topological order: which values are the ids (through views), and the
    // smallest range of every op that indexes with them.
    let mut is_ids = vec![false; g.nodes.len()];
    let mut bound: Option<usize> = None;
    let mut tighten = |b: usize| bound = Some(bound.map_or(b, |x| x.min(b)));
    for (i, n) in g.nodes.iter().enumerate() {
        let arg_is_ids = |k: usize| n.args.get(k).is_some_and(|a| is_ids[a.index()]);
        match &n.op {
            Op::Input { index } => is_ids[i] = *index == input_index,
            Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Broadcast { .. }
            | Op::Slice { .. }
            | Op::Concat { .. } => is_ids[i] = n.args.iter().any(|a| is_ids[a.index()]),
            Op::Gather if arg_is_ids(1) => tighten(g.ty(n.args[0]).shape[0]),
            Op::OneHot { classes } if arg_is_ids(0) => tighten(*classes),
            Op::ScatterAdd { rows } if arg_is_ids(0) => tighten(*rows),
            _ => {}
        }
    }
    bound
}

/// A random batch of the graph's input shapes: ids uniform in their valid range, features
/// and regression targets standard normal.
pub fn random_batch(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6261_7463_6800_0000);
    g.inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            let n = inp.ty.numel();
            match inp.ty.dtype {
                DType::I32 => {
                    let bound = index_bound(g, i).unwrap_or(1).max(1);
                    Tensor::i32(
                        inp.ty.shape.clone(),
                        (0..n).map(|_| rng.gen_range(0..bound) as f64).collect(),
                    )
                }
                DType::F32 => Tensor::f32(
                    inp.ty.shape.clone(),
                    (0..n).map(|_| normal(&mut rng) as f32 as f64).collect(),
                ),
            }
        })
        .collect()
}

/// The parameters of `g` from a weights file (by name; every parameter present with its
/// shape), and the names of the file's tensors the model does not use (a checkpoint also
/// holds optimizer state).
pub fn load_weights(g: &Graph, path: &Path) -> Result<(Vec<Tensor>, Vec<String>)> {
    let mut tensors = load_safetensors(path)?;
    let mut params = Vec::with_capacity(g.params.len());
    let mut missing = Vec::new();
    for p in &g.params {
        match tensors.iter().position(|(n, _)| *n == p.name) {
            Some(i) => {
                let (_, t) = tensors.swap_remove(i);
                if t.shape != p.shape || t.dtype != DType::F32 {
                    bail!(
                        "{}: `{}` is {} but the model needs {}",
                        path.display(),
                        p.name,
                        t.ty(),
                        p.ty()
                    );
                }
                params.push(t);
            }
            None => missing.push(p.name.clone()),
        }
    }
    if !missing.is_empty() {
        let shown = missing
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        bail!(
            "{} lacks {} parameter(s) of the model: {shown}{}",
            path.display(),
            missing.len(),
            if missing.len() > 5 { ", ..." } else { "" }
        );
    }
    let mut extra: Vec<String> = tensors.into_iter().map(|(n, _)| n).collect();
    extra.sort();
    Ok((params, extra))
}
