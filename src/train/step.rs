//! The training step users run, as one value: the step graph of a recipe (forward,
//! backward and the optimizer's update, `optim::step_graph`), which outputs replace which
//! parameters after a step, and the host-side inputs of step `t` (the batch, the scheduled
//! learning rate and other scalars, gradient noise). `lamina train` and `lamina bench` both
//! run exactly this.

use super::optim::{self, OptimConfig};
use super::tasks;
use crate::ir::{Graph, IrError, OutputRole};
use crate::tensor::Tensor;
use rand::Rng;
use std::collections::HashMap;

/// The name prefix of a model's dropout inputs (`elab::Probing::training`).
const DROPOUT_PREFIX: &str = "dropout.";

/// A step graph with what an executor needs to run it step after step.
#[derive(Clone, Debug)]
pub struct TrainingStep {
    pub graph: Graph,
    /// `(output index, parameter index)`: output `new.X` replaces parameter `X`.
    pub writeback: Vec<(usize, usize)>,
    /// The model's batch inputs (those before its dropout masks).
    batch_inputs: usize,
    /// Shapes of the model's dropout inputs (`dropout.<k>`, uniform in [0, 1)).
    dropout: Vec<Vec<usize>>,
    /// Inputs of the step graph after the model's own: host scalars or noise tensors.
    extra: Vec<(String, Vec<usize>)>,
    /// How many of them are Drop-Muon masks (`mask.<param>`, in parameter order).
    masks: usize,
    optim: OptimConfig,
    seed: u64,
}

/// `(output index, parameter index)` of a step graph: output `new.X` replaces parameter `X`.
pub fn writeback_pairs(graph: &Graph) -> Vec<(usize, usize)> {
    // Parameters by name, found once: a deep model has tens of thousands, each with an
    // update output, so a scan per output would be quadratic.
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(graph.params.len());
    for (i, p) in graph.params.iter().enumerate() {
        by_name.entry(p.name.as_str()).or_insert(i);
    }
    graph
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(o, out)| match out.role() {
            OutputRole::Update(p) => by_name.get(p).map(|&i| (o, i)),
            _ => None,
        })
        .collect()
}

impl TrainingStep {
    /// What the back end builds for this step: its write-back pairs, stored in place where
    /// that is safe.
    pub fn build_options(&self) -> crate::kernels::BuildOptions {
        crate::kernels::BuildOptions {
            replaces: self.writeback.clone(),
            ..Default::default()
        }
    }

    /// The step of `joint` (autodiff's graph of a model with `model_inputs` inputs) under
    /// `optim`; `seed` draws the gradient noise of each step.
    pub fn new(joint: &Graph, optim: &OptimConfig, seed: u64) -> Result<TrainingStep, IrError> {
        let graph = optim::step_graph(joint, optim)?;
        let writeback = writeback_pairs(&graph);
        let extra: Vec<(String, Vec<usize>)> = graph.inputs[joint.inputs.len()..]
            .iter()
            .map(|inp| (inp.name.clone(), inp.ty.shape.clone()))
            .collect();
        let masks = extra
            .iter()
            .filter(|(n, _)| n.starts_with(optim::MASK_PREFIX))
            .count();
        let dropout: Vec<Vec<usize>> = joint
            .inputs
            .iter()
            .filter(|i| i.name.starts_with(DROPOUT_PREFIX))
            .map(|i| i.ty.shape.clone())
            .collect();
        Ok(TrainingStep {
            graph,
            writeback,
            batch_inputs: joint.inputs.len() - dropout.len(),
            dropout,
            extra,
            masks,
            optim: optim.clone(),
            seed,
        })
    }

    /// The inputs of step `t` (0-based): the model's batch, then the scalars of the
    /// scheduled learning rates (`lr(peak)`: the learning rate of step `t` for a peak
    /// learning rate), Drop-Muon's masks and the noise of `(seed, t)`.
    pub fn inputs(&self, batch: Vec<Tensor>, t: u64, lr: &dyn Fn(f64) -> f64) -> Vec<Tensor> {
        let scalars = optim::scalars(&self.optim, t + 1, lr);
        let mut inputs = batch;
        // The dropout masks of step t: uniform in [0, 1), a function of (seed, t) only.
        inputs.truncate(self.batch_inputs);
        let mut drop_rng = tasks::rng_for(self.seed, tasks::STREAM_DROPOUT, t);
        for shape in &self.dropout {
            let n: usize = shape.iter().product();
            let u = (0..n).map(|_| drop_rng.gen::<f32>() as f64).collect();
            inputs.push(Tensor::f32(shape.clone(), u));
        }
        let mut noise_rng = tasks::rng_for(self.seed, tasks::STREAM_NOISE, t);
        let masks = optim::drop_masks(self.seed, t, self.masks);
        let mut next_mask = masks.iter();
        for (name, shape) in &self.extra {
            if let Some((_, v)) = scalars.iter().find(|(n, _)| n == name) {
                inputs.push(Tensor::scalar(*v as f32 as f64));
            } else if name.starts_with(optim::MASK_PREFIX) {
                inputs.push(Tensor::scalar(next_mask.next().copied().unwrap_or(1.0)));
            } else {
                let n: usize = shape.iter().product();
                inputs.push(Tensor::f32(
                    shape.clone(),
                    (0..n)
                        .map(|_| crate::io::normal(&mut noise_rng) as f32 as f64)
                        .collect(),
                ));
            }
        }
        inputs
    }

    /// The optimizer this step applies.
    pub fn optim(&self) -> &OptimConfig {
        &self.optim
    }
}
