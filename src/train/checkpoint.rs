//! Checkpoints: every parameter of the step graph (weights and optimizer state) as f32,
//! with the metadata a resume must match to continue bit-identically.

use super::error::TrainError;
use crate::io::{IoError, IoErrorKind};
use crate::ir::Graph;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: &str = "lamina-checkpoint-1";

/// Checkpoint metadata: what must match for a resume to be bit-identical.
#[derive(Clone, Debug)]
pub struct Meta {
    pub step: u64,
    pub config: String,
    pub data: String,
    pub model: String,
}

impl Meta {
    fn entries(&self) -> HashMap<String, String> {
        [
            ("format", FORMAT.to_string()),
            ("step", self.step.to_string()),
            ("config", self.config.clone()),
            ("data", self.data.clone()),
            ("model", self.model.clone()),
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
    let bytes =
        crate::io::safetensors_bytes_as(&named, crate::io::FloatWidth::F32, Some(meta.entries()))
            .map_err(|e| IoError::new(path, IoErrorKind::Format(e)))?;
    crate::io::write_atomic(path, &bytes)
}

/// A checkpoint as read: its metadata and tensors by name.
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
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(problem(format!(
            "it is not a lamina training checkpoint (no `{FORMAT}` metadata); pass the \
             checkpoint.safetensors of a run"
        )));
    }
    let tensors = crate::io::parse_safetensors(&bytes).map_err(|e| problem(e.to_string()))?;
    Ok(Loaded { meta, tensors })
}
