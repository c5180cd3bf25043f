//! `lamina probe`: measurements over depth of a trained model on held-out batches.
//!
//! - the residual stream after the embedding and after every sublayer step: its RMS and
//!   variance (the Peri-LN figure), the contribution ratio `|x_k - x_{k-1}| / |x_{k-1}|`
//!   of the step (for a residual skip, `|c F(x)| / |x|`), and the cosine similarity of
//!   consecutive states (mean over tokens);
//! - per executed layer: the change of the held-out loss when it is skipped and when it is
//!   run twice (the weights keep their names, so the same file loads), and the norm of the
//!   gradient of its weights.
//!
//! The states come from the model elaborated with `elab::Probing` (more outputs, nothing
//! else changed); everything runs on the JIT.

use super::exec::{self, Backend};
use super::plot::{self, Series};
use super::tasks::{Batch, Task};
use super::{TrainError, TrainOptions};
use crate::elab::{LayerEdit, Probing};
use crate::front::Compiled;
use crate::ir::{Graph, OutputRole};
use crate::tensor::Tensor;
use serde::Serialize;
use std::path::Path;

/// One residual state: after the embedding (`k = 0`) or after sublayer step `k`.
#[derive(Clone, Debug, Serialize)]
pub struct StepProbe {
    pub k: usize,
    /// The model scope of the step that produced it (`blocks.2.attn`; `embed` for k = 0).
    pub scope: String,
    pub rms: f64,
    pub variance: f64,
    /// `|x_k - x_{k-1}| / |x_{k-1}|` (none for k = 0).
    pub contribution: Option<f64>,
    /// Mean over tokens of `cos(x_{k-1}, x_k)` (none for k = 0).
    pub cosine: Option<f64>,
}

/// One executed layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerProbe {
    pub layer: usize,
    /// Held-out loss with the layer left out, minus the model's.
    pub skip_delta: Option<f64>,
    /// Held-out loss with the layer run twice, minus the model's.
    pub repeat_delta: Option<f64>,
    /// `|grad|` of the layer's weights (`blocks.<w>.*` of its weight set) on the first
    /// held-out batch.
    pub grad_norm: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub loss: f64,
    pub steps: Vec<StepProbe>,
    pub layers: Vec<LayerProbe>,
}

/// The model with its residual stream as outputs (`elab::Probing::states`); an error
/// for a model that has none to expose.
pub fn probed_graph(c: &Compiled) -> Result<Graph, TrainError> {
    let probing = Probing {
        states: true,
        layers: LayerEdit::None,
        skip_below: None,
        training: false,
    };
    let g = crate::elab::elaborate_probed(&c.module, &c.forward.name, &c.overrides, probing)
        .map_err(|d| TrainError::Internal(format!("{} diagnostic(s) elaborating", d.len())))?;
    if g.outputs
        .iter()
        .filter(|o| o.name.starts_with("probe."))
        .count()
        < 2
    {
        return Err(no_stream());
    }
    Ok(g)
}

fn no_stream() -> TrainError {
    TrainError::Option {
        option: "probe".into(),
        message: "this model exposes no residual stream to probe (learning forward_forward \
                  runs its layers on its own path)"
            .into(),
    }
}

/// Probe `c` with the weights in `weights` on its task's held-out batches.
pub fn probe(c: &Compiled, weights: &Path, opts: &TrainOptions) -> Result<Report, TrainError> {
    let task = super::recipe_task(c, opts)?;
    let batches = task.eval_batches()?;
    let elab = |edit: LayerEdit, states: bool| -> Result<Graph, TrainError> {
        let probing = Probing {
            states,
            layers: edit,
            skip_below: None,
            training: false,
        };
        crate::elab::elaborate_probed(&c.module, &c.forward.name, &c.overrides, probing)
            .map_err(|d| TrainError::Internal(format!("{} diagnostic(s) elaborating", d.len())))
    };
    let probed = elab(LayerEdit::None, true)?;
    let (loss, outs) = held_out(&probed, weights, &task, &batches)?;
    let steps = step_probes(&outs);
    if steps.len() < 2 {
        return Err(no_stream());
    }
    let executed = crate::elab::executed_layers(&c.module, &c.forward.name, &c.overrides)
        .map_err(|d| TrainError::Internal(format!("{} diagnostic(s) elaborating", d.len())))?;
    let n = executed.len();
    let grads = layer_grad_norms(&c.forward, weights, &batches)?;
    let mut layers = Vec::new();
    for (i, w) in executed.iter().enumerate() {
        let delta = |edit| -> Result<Option<f64>, TrainError> {
            if matches!(edit, LayerEdit::Skip(_)) && n == 1 {
                return Ok(None);
            }
            let g = elab(edit, false)?;
            Ok(Some(held_out(&g, weights, &task, &batches)?.0 - loss))
        };
        layers.push(LayerProbe {
            layer: i,
            skip_delta: delta(LayerEdit::Skip(i))?,
            repeat_delta: delta(LayerEdit::Repeat(i))?,
            grad_norm: grads.get(&format!("blocks.{w}")).copied().unwrap_or(0.0),
        });
    }
    Ok(Report {
        model: c.forward.name.clone(),
        loss,
        steps,
        layers,
    })
}

/// The held-out loss of `g` with the weights of `weights`.
pub fn held_out_loss(
    g: &Graph,
    weights: &Path,
    task: &Task,
    batches: &[Batch],
) -> Result<f64, TrainError> {
    Ok(held_out(g, weights, task, batches)?.0)
}

/// The held-out loss of `g` with the weights of `weights`, and the probe outputs of the
/// first batch (value lists per output name).
fn held_out(
    g: &Graph,
    weights: &Path,
    task: &Task,
    batches: &[Batch],
) -> Result<(f64, Vec<(String, Tensor)>), TrainError> {
    let (params, _unused) = crate::io::load_weights(g, weights)?;
    let mut run = exec::executor(g, Backend::Jit)?;
    let (mut loss, mut count, mut first) = (0.0, 0usize, Vec::new());
    for (i, b) in batches.iter().enumerate() {
        let outs = run.run(&b.inputs, &params)?;
        let logits = outs
            .iter()
            .find(|(n, _)| OutputRole::of(n) == OutputRole::Logits)
            .map(|(_, t)| t)
            .ok_or_else(|| TrainError::Internal("no logits".into()))?;
        let (l, _, k) = task.score(b, logits);
        loss += l;
        count += k;
        if i == 0 {
            first = outs
                .into_iter()
                .filter(|(n, _)| n.starts_with("probe."))
                .collect();
        }
    }
    Ok((loss / count.max(1) as f64, first))
}

/// The metrics of every probed state, in step order.
pub fn step_probes(outs: &[(String, Tensor)]) -> Vec<StepProbe> {
    let mut states: Vec<(usize, String, &Tensor)> = outs
        .iter()
        .filter_map(|(n, t)| {
            let rest = n.strip_prefix("probe.")?;
            let (k, scope) = rest.split_once('.')?;
            Some((k.parse().ok()?, scope.to_string(), t))
        })
        .collect();
    states.sort_by_key(|s| s.0);
    let mut out: Vec<StepProbe> = Vec::new();
    for (i, (k, scope, x)) in states.iter().enumerate() {
        let n = x.data.len().max(1) as f64;
        let mean = x.data.iter().sum::<f64>() / n;
        let ms = x.data.iter().map(|v| v * v).sum::<f64>() / n;
        let prev = i.checked_sub(1).map(|j| states[j].2);
        let contribution = prev.map(|p| {
            let diff: f64 = x
                .data
                .iter()
                .zip(&p.data)
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            let base: f64 = p.data.iter().map(|v| v * v).sum();
            (diff / base.max(1e-30)).sqrt()
        });
        out.push(StepProbe {
            k: *k,
            scope: scope.clone(),
            rms: ms.sqrt(),
            variance: ms - mean * mean,
            contribution,
            cosine: prev.map(|p| mean_token_cosine(p, x)),
        });
    }
    out
}

/// The mean over tokens (rows of the last axis) of the cosine of two states.
fn mean_token_cosine(a: &Tensor, b: &Tensor) -> f64 {
    let d = a.shape.last().copied().unwrap_or(1).max(1);
    let rows = a.data.chunks(d).zip(b.data.chunks(d));
    let (mut sum, mut n) = (0.0, 0usize);
    for (x, y) in rows {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        let nx: f64 = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|v| v * v).sum::<f64>().sqrt();
        sum += dot / (nx * ny).max(1e-30);
        n += 1;
    }
    sum / n.max(1) as f64
}

/// `|grad|` per weight set (`blocks.<w>`) on the first batch.
fn layer_grad_norms(
    forward: &Graph,
    weights: &Path,
    batches: &[Batch],
) -> Result<std::collections::HashMap<String, f64>, TrainError> {
    let mut norms = std::collections::HashMap::new();
    let Some(b) = batches.first() else {
        return Ok(norms);
    };
    let joint = crate::autodiff::differentiate(forward)
        .map_err(|e| TrainError::Internal(format!("differentiate: {e}")))?;
    let (params, _) = crate::io::load_weights(forward, weights)?;
    let outs = exec::executor(&joint, Backend::Jit)?.run(&b.inputs, &params)?;
    for (name, t) in &outs {
        let OutputRole::Grad(p) = OutputRole::of(name) else {
            continue;
        };
        let mut parts = p.split('.');
        if let (Some("blocks"), Some(w)) = (parts.next(), parts.next()) {
            *norms.entry(format!("blocks.{w}")).or_insert(0.0) +=
                t.data.iter().map(|v| v * v).sum::<f64>();
        }
    }
    for v in norms.values_mut() {
        *v = v.sqrt();
    }
    Ok(norms)
}

/// `probe.json` and one SVG per metric in `dir`.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<String>, TrainError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TrainError::Internal(format!("creating {}: {e}", dir.display())))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| TrainError::Internal(format!("probe.json: {e}")))?;
    crate::io::write_atomic(&dir.join("probe.json"), json.as_bytes())?;
    let mut files = vec!["probe.json".to_string()];
    let steps = |f: &dyn Fn(&StepProbe) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .steps
            .iter()
            .filter_map(|s| Some((s.k as f64, f(s)?)))
            .collect()
    };
    let layers = |f: &dyn Fn(&LayerProbe) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .layers
            .iter()
            .filter_map(|l| Some((l.layer as f64, f(l)?)))
            .collect()
    };
    let figures: Vec<(&str, &str, &str, Vec<Series>)> = vec![
        (
            "rms",
            "residual stream RMS",
            "step",
            vec![line("rms", steps(&|s| Some(s.rms)), 0)],
        ),
        (
            "variance",
            "residual stream variance",
            "step",
            vec![line("variance", steps(&|s| Some(s.variance)), 0)],
        ),
        (
            "contribution",
            "contribution |x_k - x_k-1| / |x_k-1|",
            "step",
            vec![line("contribution", steps(&|s| s.contribution), 0)],
        ),
        (
            "cosine",
            "cosine of consecutive states",
            "step",
            vec![line("cosine", steps(&|s| s.cosine), 0)],
        ),
        (
            "skip_repeat",
            "held-out loss change",
            "layer",
            vec![
                line("skipped", layers(&|l| l.skip_delta), 0),
                line("repeated", layers(&|l| l.repeat_delta), 1),
            ],
        ),
        (
            "grad_norm",
            "gradient norm per layer",
            "layer",
            vec![line("|grad|", layers(&|l| Some(l.grad_norm)), 0)],
        ),
    ];
    for (file, what, x, series) in figures {
        let title = format!("{}: {what}", report.model);
        let svg = plot::svg_over(&title, x, &series);
        let name = format!("{file}.svg");
        crate::io::write_atomic(&dir.join(&name), svg.as_bytes())?;
        files.push(name);
    }
    Ok(files)
}

/// The last `probe.jsonl` record of a run directory, if it has one.
pub fn last_probe(run_dir: &Path) -> Option<Vec<StepProbe>> {
    let text = std::fs::read_to_string(run_dir.join("probe.jsonl")).ok()?;
    let v: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    let steps = v.get("probes")?.as_array()?;
    steps
        .iter()
        .map(|s| {
            Some(StepProbe {
                k: s.get("k")?.as_u64()? as usize,
                scope: s.get("scope")?.as_str()?.to_string(),
                rms: s.get("rms")?.as_f64()?,
                variance: s.get("variance")?.as_f64()?,
                contribution: s.get("contribution").and_then(|x| x.as_f64()),
                cosine: s.get("cosine").and_then(|x| x.as_f64()),
            })
        })
        .collect()
}

/// With `--probe-every`: `compare_<metric>.svg` overlaying every model's last probe over
/// depth (pre-LN against Peri-LN variance, for example). Nothing without probes.
pub fn write_compare_plots(runs: &[super::Summary], dir: &Path) -> Result<(), TrainError> {
    let probes: Vec<(String, Vec<StepProbe>)> = runs
        .iter()
        .filter_map(|r| Some((r.model.clone(), last_probe(&r.out_dir)?)))
        .collect();
    if probes.is_empty() {
        return Ok(());
    }
    type Metric = fn(&StepProbe) -> Option<f64>;
    let metrics: [(&str, &str, Metric); 4] = [
        ("variance", "residual stream variance", |s| Some(s.variance)),
        ("rms", "residual stream RMS", |s| Some(s.rms)),
        ("contribution", "contribution of each step", |s| {
            s.contribution
        }),
        ("cosine", "cosine of consecutive states", |s| s.cosine),
    ];
    for (file, what, f) in metrics {
        let series: Vec<Series> = probes
            .iter()
            .enumerate()
            .map(|(i, (model, steps))| {
                let points = steps.iter().filter_map(|s| Some((s.k as f64, f(s)?)));
                line(model, points.collect(), i)
            })
            .collect();
        let svg = plot::svg_over(&format!("{what} over depth"), "step", &series);
        crate::io::write_atomic(&dir.join(format!("compare_{file}.svg")), svg.as_bytes())?;
    }
    Ok(())
}

fn line(name: &str, points: Vec<(f64, f64)>, color: usize) -> Series {
    Series {
        name: name.to_string(),
        points,
        dashed: false,
        color,
    }
}

/// The report as two tables.
pub fn table(r: &Report) -> String {
    let mut s = format!("{}: held-out loss {:.4}\n", r.model, r.loss);
    s += &format!(
        "{:>4}  {:<24} {:>10} {:>10} {:>12} {:>8}\n",
        "step", "scope", "rms", "variance", "contribution", "cosine"
    );
    let opt = |v: Option<f64>, w: usize| v.map_or(format!("{:>w$}", "-"), |v| format!("{v:>w$.4}"));
    for p in &r.steps {
        s += &format!(
            "{:>4}  {:<24} {:>10.4} {:>10.4} {} {}\n",
            p.k,
            p.scope,
            p.rms,
            p.variance,
            opt(p.contribution, 12),
            opt(p.cosine, 8)
        );
    }
    s += &format!(
        "\n{:>5}  {:>12} {:>12} {:>10}\n",
        "layer", "skipped", "repeated", "|grad|"
    );
    for l in &r.layers {
        s += &format!(
            "{:>5}  {} {} {:>10.4}\n",
            l.layer,
            opt(l.skip_delta, 12),
            opt(l.repeat_delta, 12),
            l.grad_norm
        );
    }
    s
}
