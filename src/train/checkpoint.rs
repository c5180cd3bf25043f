//! Checkpoints: every parameter of the step graph (weights and optimizer state) as f32,
//! with the metadata a resume must match to continue bit-identically.

use super::error::TrainError;
use crate::io::IoError;
use crate::ir::Graph;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// The format written: version 2 adds the checksum and the backend.
pub const FORMAT: &str = "lamina-checkpoint-2";
const OLD_FORMAT: &str = "lamina-checkpoint-1";

/// Checkpoint metadata: what must match for a resume to be bit-identical.
#[derive(Clone, Debug)]
pub struct Meta {
    pub step: u64,
    pub config: String,
    pub data: String,
    pub model: String,
    /// The backend that computed it (`jit` or `interp`): they round differently.
    pub backend: String,
}

impl Meta {
    fn entries(&self) -> HashMap<String, String> {
        [
            ("format", FORMAT.to_string()),
            ("step", self.step.to_string()),
            ("config", self.config.clone()),
            ("data", self.data.clone()),
            ("model", self.model.clone()),
            ("backend", self.backend.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Write every parameter of `g` (values `params`) and `meta` to `path`, atomically.
pub fn save(path: &Path, g: &Graph, params: &[Tensor], meta: &Meta) -> Result<(), IoError> {
    let named: Vec<(String, Tensor)> = g
        .params
        .iter()
        .zip(params)
        .map(|(p, t)| (p.name.clone(), t.clone()))
        .collect();
    save_named(path, &named, meta)
}

/// Write named tensors and `meta` to `path` as a checkpoint, atomically.
pub fn save_named(path: &Path, named: &[(String, Tensor)], meta: &Meta) -> Result<(), IoError> {
    let mut entries = meta.entries();
    let f32_bytes: Vec<Vec<u8>> = named
        .iter()
        .map(|(_, t)| {
            t.data
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect()
        })
        .collect();
    let mut order: Vec<usize> = (0..named.len()).collect();
    order.sort_by(|&a, &b| named[a].0.cmp(&named[b].0));
    let sum = checksum(
        &entries,
        order.iter().map(|&i| {
            let (n, t) = &named[i];
            (
                n.as_str(),
                "f32",
                t.shape.as_slice(),
                f32_bytes[i].as_slice(),
            )
        }),
    );
    entries.insert("checksum".into(), sum);
    crate::io::save_safetensors_with(path, named, crate::io::FloatWidth::F32, Some(entries))
}

/// A checkpoint as read: its metadata and tensors by name.
#[derive(Debug)]
pub struct Loaded {
    pub meta: HashMap<String, String>,
    pub tensors: Vec<(String, Tensor)>,
}

/// Read a checkpoint: its metadata and tensors.
pub fn load(path: &Path) -> Result<Loaded, TrainError> {
    let bytes = crate::io::read_file(path, None)?;
    let problem = |problem: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        problem,
    };
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        problem(format!(
            "it is not a safetensors file: {}",
            crate::io::describe(&e)
        ))
    })?;
    let meta = md.metadata().clone().unwrap_or_default();
    match meta.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        Some(OLD_FORMAT) => {
            return Err(problem(
                "it was written by an earlier lamina, without a checksum, so it cannot be \
                 verified; start a new run"
                    .into(),
            ))
        }
        _ => {
            return Err(problem(format!(
                "it is not a lamina training checkpoint (no `{FORMAT}` metadata); pass the \
                 checkpoint.safetensors of a run"
            )))
        }
    }
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| problem(format!("it is damaged: {}", crate::io::describe(&e))))?;
    let mut views = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = format!("{:?}", view.dtype()).to_lowercase();
        views.push((name, dtype, view));
    }
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let stored = meta.get("checksum").cloned().unwrap_or_default();
    let sum = checksum(
        &meta,
        views
            .iter()
            .map(|(n, d, v)| (n.as_str(), d.as_str(), v.shape(), v.data())),
    );
    if stored != sum {
        return Err(problem(format!(
            "it is damaged: its content does not match its checksum (recorded {}, \
             computed {sum})",
            if stored.is_empty() { "none" } else { &stored }
        )));
    }
    let tensors = crate::io::parse_safetensors(&bytes).map_err(|e| problem(e.to_string()))?;
    Ok(Loaded { meta, tensors })
}

/// FNV-1a 64 over the metadata (sorted by key, without the checksum itself) and every
/// tensor's name, dtype, shape and bytes, in the order given (by name).
fn checksum<'a>(
    meta: &HashMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, &'a str, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = Fnv::new();
    let mut keys: Vec<&String> = meta.keys().filter(|k| *k != "checksum").collect();
    keys.sort();
    for k in keys {
        h.field(k.as_bytes());
        h.field(meta[k].as_bytes());
    }
    for (name, dtype, shape, data) in tensors {
        h.field(name.as_bytes());
        h.field(dtype.as_bytes());
        for d in shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.field(data);
    }
    format!("fnv1a64:{:016x}", h.0)
}

/// Streaming FNV-1a 64.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// A length-prefixed field, so that field boundaries are part of the hash.
    fn field(&mut self, bytes: &[u8]) {
        self.update(&(bytes.len() as u64).to_le_bytes());
        self.update(bytes);
    }
}
