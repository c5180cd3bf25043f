//! data.safetensors: the built-in task's training batches, in step order, and its held-out
//! set, so train.py trains on exactly the batches `lamina train` does.

use super::{ExportError, ExportOptions};
use crate::front::Compiled;
use crate::tensor::Tensor;
use crate::train::config::TrainConfig;
use crate::train::tasks::{Batch, TaskSpec};
use crate::train::TrainError;
use std::collections::HashMap;

/// Elements of all training batches together, at most (256 MiB of i32 or f32): a longer run
/// cycles through the batches written.
const MAX_ELEMENTS: u64 = 1 << 26;

/// Stack the tensor `k` of every batch into `[batches, ...]`.
fn stack(batches: &[Batch], k: usize) -> Result<Tensor, ExportError> {
    let first = &batches[0].inputs[k];
    let mut shape = vec![batches.len()];
    shape.extend(&first.shape);
    let n = first.numel() * batches.len();
    let mut data = crate::tensor::try_buffer(n, || format!("batches of shape {shape:?}"))
        .map_err(|e| ExportError::Train(TrainError::Alloc(e)))?;
    for b in batches {
        data.extend_from_slice(&b.inputs[k].data);
    }
    Ok(Tensor::new(first.dtype, shape, data))
}

/// Why no data.safetensors was written although the model exported (the recipe's task does
/// not fit the model).
pub(crate) struct Skipped(pub String);

/// A failure of `write`: the export fails, or only the data is left out.
pub(crate) enum DataError {
    Failed(ExportError),
    Skipped(String),
}

impl From<ExportError> for DataError {
    fn from(e: ExportError) -> Self {
        DataError::Failed(e)
    }
}

impl From<Skipped> for DataError {
    fn from(s: Skipped) -> Self {
        DataError::Skipped(s.0)
    }
}

impl From<crate::io::IoError> for DataError {
    fn from(e: crate::io::IoError) -> Self {
        DataError::Failed(ExportError::Io(e))
    }
}

/// Write data.safetensors unless the task reads a text file that was not given; returns the
/// number of training batches written.
pub(crate) fn write(
    c: &Compiled,
    cfg: &TrainConfig,
    opts: &ExportOptions,
) -> Result<Option<u64>, DataError> {
    if matches!(cfg.task, Some(TaskSpec::CharLm { .. })) && opts.train.data.is_none() {
        return Ok(None);
    }
    let task = match crate::train::recipe_task(c, &opts.train) {
        Ok(task) => task,
        // The model exports without data; train.py then needs --data.
        Err(TrainError::Task { error, .. }) => return Err(Skipped(error.message).into()),
        Err(e) => return Err(DataError::Failed(ExportError::Train(e))),
    };
    let per_batch = task.shape().tokens_per_batch().max(1) as u64 * 2;
    let fit = (MAX_ELEMENTS / per_batch).max(1);
    let count = cfg
        .steps
        .min(fit)
        .min(opts.max_batches.unwrap_or(u64::MAX))
        .max(1);
    let alloc = |e| ExportError::Train(TrainError::Alloc(e));
    let train: Vec<Batch> = (0..count)
        .map(|t| task.batch(t))
        .collect::<Result<_, _>>()
        .map_err(alloc)?;
    let eval = task.eval_batches().map_err(alloc)?;
    let names: Vec<String> = c.forward.inputs.iter().map(|i| i.name.clone()).collect();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (k, name) in names.iter().enumerate() {
        tensors.push((format!("train.{name}"), stack(&train, k)?));
        if !eval.is_empty() {
            tensors.push((format!("eval.{name}"), stack(&eval, k)?));
        }
    }
    if !eval.is_empty() {
        let rows = eval.iter().map(|b| b.rows as f64).collect();
        tensors.push(("eval.rows".into(), Tensor::i32(vec![eval.len()], rows)));
    }
    if let Some(pos) = task.scored_positions() {
        let data: Vec<f64> = pos.iter().map(|&p| p as f64).collect();
        tensors.push(("eval.positions".into(), Tensor::i32(vec![data.len()], data)));
    }
    if let Some(starts) = drop_starts(c, cfg, count) {
        tensors.push(("drop_muon.start".into(), starts));
    }
    let meta: HashMap<String, String> = [
        ("task".to_string(), task.spec.name().to_string()),
        ("seed".to_string(), cfg.seed.to_string()),
        ("batches".to_string(), count.to_string()),
    ]
    .into_iter()
    .collect();
    crate::io::save_safetensors_with(
        &opts.out.join("data.safetensors"),
        &tensors,
        crate::io::FloatWidth::F32,
        Some(meta),
    )?;
    Ok(Some(count))
}

/// Drop-Muon's first updated parameter (among the Muon parameters, in parameter order) of
/// each step written, as `lamina train` draws it.
fn drop_starts(c: &Compiled, cfg: &TrainConfig, steps: u64) -> Option<Tensor> {
    use crate::train::optim::{drop_masks, role_rule, OptimKind, Rule};
    match cfg.optim.kind {
        OptimKind::DropMuon(_) => {}
        OptimKind::Sgd { .. }
        | OptimKind::AdamW { .. }
        | OptimKind::Lamb { .. }
        | OptimKind::Muon(_) => return None,
    }
    let n = c
        .forward
        .params
        .iter()
        .filter(|p| p.trainable)
        .filter(|p| matches!(role_rule(&cfg.optim, p.role).rule, Rule::Muon { .. }))
        .count();
    let starts = (0..steps)
        .map(|t| {
            let masks = drop_masks(cfg.seed, t, n);
            masks.iter().position(|&m| m == 1.0).unwrap_or(0) as f64
        })
        .collect();
    Some(Tensor::i32(vec![steps as usize], starts))
}
