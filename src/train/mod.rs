//! `lamina train`: training runs that are reproducible, resumable and watched.
//!
//! The pieces: `config` (the `train { }` section and command-line overrides), `tasks`
//! (built-in data and held-out scoring), `optim` (the optimizer update appended to the
//! joint graph as IR), `exec` (JIT or interpreter executors), `plot` (SVG curves). This
//! module runs the loop: batch of step t from (seed, t), one step graph run, `new.*`
//! written back into host f32 tensors, a JSONL log line, evaluation and an atomic
//! checkpoint every `eval_every` steps, and a NaN/Inf check on every step.

pub mod config;
pub mod exec;
pub mod optim;
pub mod plot;
pub mod sample;
pub mod step;
pub mod tasks;

use crate::diag::Diagnostic;
use crate::elab::Override;
use crate::front::{self, CompileError, Compiled};
use crate::ir::{text, Graph};
use crate::tensor::Tensor;
use anyhow::{anyhow, bail, Context, Result};
use config::TrainConfig;
use exec::Backend;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tasks::{Task, TaskSpec};

/// Command-line options of `lamina train` (and `compare`).
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// `--set NAME=VALUE` constant overrides of the model.
    pub overrides: Vec<Override>,
    /// Train-section settings from the command line, `(key, value text)`, applied in order
    /// after the file's section: `("optimizer", "sgd(lr = 0.1)")`, `("steps", "200")`.
    pub settings: Vec<(String, String)>,
    /// `--lr`: replaces the optimizer's peak learning rate.
    pub lr: Option<f64>,
    /// `--data FILE`: the text of the char_lm task.
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub backend: Option<Backend>,
    /// No progress bar or messages on stderr.
    pub quiet: bool,
    /// Stop as if interrupted (Ctrl-C) once this many steps are done (for tests).
    pub stop_after: Option<u64>,
}

/// Held-out metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Eval {
    pub loss: f64,
    /// `None` for regression.
    pub accuracy: Option<f64>,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub model: String,
    pub params: usize,
    pub task: String,
    pub config: TrainConfig,
    /// Steps completed in total (including those before a resume).
    pub steps_done: u64,
    /// `(step, loss)` of the steps this invocation ran (1-based step numbers).
    pub losses: Vec<(u64, f32)>,
    /// `(step, eval)` of this invocation.
    pub evals: Vec<(u64, Eval)>,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub out_dir: PathBuf,
    pub interrupted: bool,
}

impl Summary {
    /// Mean loss of the last (up to) 20 steps.
    pub fn final_loss(&self) -> f64 {
        let tail = &self.losses[self.losses.len().saturating_sub(20)..];
        tail.iter().map(|(_, l)| *l as f64).sum::<f64>() / tail.len().max(1) as f64
    }
    pub fn last_eval(&self) -> Option<Eval> {
        self.evals.last().map(|(_, e)| *e)
    }
}

/// A non-finite loss or update, located.
#[derive(Debug)]
pub struct NonFiniteError(pub String);
impl std::fmt::Display for NonFiniteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NonFiniteError {}

/// Print a line to stderr; a failed write is ignored (the run goes on).
macro_rules! errln {
    ($($arg:tt)*) => { crate::io::to_stderr(&format!("{}\n", format!($($arg)*))) };
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C asks the loop to checkpoint and stop; a second Ctrl-C exits at once.
fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    });
}

fn rendered(file_name: &str, source: &str, diagnostics: Vec<Diagnostic>) -> anyhow::Error {
    crate::diag::Rendered(
        CompileError {
            file_name: file_name.to_string(),
            source: source.to_string(),
            diagnostics,
        }
        .render(false),
    )
    .into()
}

/// The model's constants as numbers (for expressions in the train section).
fn constants(c: &Compiled, overrides: &[Override]) -> HashMap<String, f64> {
    crate::elab::constants(&c.module, overrides)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(n, v)| v.parse::<f64>().ok().map(|x| (n, x)))
        .collect()
}

/// The recipe of a compiled model file: defaults, its `train { }` section, then the
/// command-line settings.
pub fn resolve_config(
    c: &Compiled,
    file_name: &str,
    source: &str,
    opts: &TrainOptions,
) -> Result<TrainConfig> {
    let consts = constants(c, &opts.overrides);
    let mut cfg = TrainConfig::default();
    if let Some(section) = &c.module.train {
        let diags = config::apply_section(&mut cfg, section, &consts);
        if !diags.is_empty() {
            return Err(rendered(file_name, source, diags));
        }
    }
    for (key, value) in &opts.settings {
        let snippet = format!("train {{\n    {key} = {value}\n}}\n");
        let what = format!("--{key}");
        let m = crate::syntax::parse(&snippet).map_err(|d| rendered(&what, &snippet, d))?;
        if let Some(s) = m.train.as_ref().and_then(|t| t.settings.first()) {
            config::apply_setting(&mut cfg, &s.key, &s.value, &consts)
                .map_err(|d| rendered(&what, &snippet, vec![d]))?;
        }
    }
    if let Some(lr) = opts.lr {
        if !(lr.is_finite() && lr >= 0.0) {
            bail!("--lr must be a non-negative number, got {lr}");
        }
        cfg.optim.lr = lr;
    }
    Ok(cfg)
}

fn model_names(step: &Graph) -> HashMap<String, usize> {
    step.params
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.clone(), i))
        .collect()
}

const FORMAT: &str = "lamina-checkpoint-1";

/// Checkpoint metadata: what must match for a resume to be bit-identical.
struct Meta {
    step: u64,
    config: String,
    data: String,
    model: String,
}

fn save_checkpoint(path: &Path, g: &Graph, params: &[Tensor], meta: &Meta) -> Result<()> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = g
        .params
        .iter()
        .zip(params)
        .map(|(p, t)| {
            let bytes = t
                .data
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect();
            (p.name.clone(), p.shape.clone(), bytes)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow!("tensor {n}: {e:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let info: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("step", meta.step.to_string()),
        ("config", meta.config.clone()),
        ("data", meta.data.clone()),
        ("model", meta.model.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = safetensors::serialize(views, &Some(info))
        .map_err(|e| anyhow!("serializing the checkpoint: {e:?}"))?;
    Ok(crate::io::write_atomic(path, &bytes)?)
}

/// Read a checkpoint: its metadata and tensors by name.
/// Checkpoint metadata and its tensors by name.
type Loaded = (HashMap<String, String>, Vec<(String, Tensor)>);

fn load_checkpoint(path: &Path) -> Result<Loaded> {
    let bytes = crate::io::read_file(path, None)?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("{} is not a safetensors file: {e:?}", path.display()))?;
    let meta = md.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        bail!(
            "{} is not a lamina training checkpoint (no `{FORMAT}` metadata); pass the \
             checkpoint.safetensors of a run",
            path.display()
        );
    }
    let tensors = crate::io::parse_safetensors(&bytes)
        .with_context(|| format!("{} is not a valid tensor file", path.display()))?;
    Ok((meta, tensors))
}

/// Append-only JSONL log.
struct Log {
    file: std::fs::File,
}

impl Log {
    fn open(path: &Path, keep_until: Option<u64>) -> Result<Log> {
        let kept = match keep_until {
            None => String::new(),
            Some(step) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|s| s <= step)
                })
                .map(|l| format!("{l}\n"))
                .collect(),
        };
        crate::io::write_atomic(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Log { file })
    }
    fn line(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{v}").context("writing the log")
    }
}

/// `(step, value)` points.
pub type Curve = Vec<(f64, f64)>;

/// `(step, loss)` and `(step, eval loss)` curves from a log file.
pub fn read_log(path: &Path) -> (Curve, Curve) {
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for l in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let step = v.get("step").and_then(|s| s.as_f64()).unwrap_or(0.0);
        if let Some(x) = v.get("loss").and_then(|s| s.as_f64()) {
            train.push((step, x));
        }
        if let Some(x) = v.get("eval_loss").and_then(|s| s.as_f64()) {
            eval.push((step, x));
        }
    }
    (train, eval)
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v:.4}")
    }
}

/// Compile a model file for training; diagnostics come back rendered.
pub fn compile(path: &Path, overrides: &[Override]) -> Result<(Compiled, String)> {
    let c =
        front::compile_file(path, overrides).map_err(|e| crate::diag::Rendered(e.render(false)))?;
    let source = c.source.clone();
    Ok((c, source))
}

/// Train the model in `path`. Diagnostics and failures come back as errors (a
/// `NonFiniteError` for a NaN/Inf step); an interruption is a normal return with
/// `interrupted = true`.
pub fn train(path: &Path, opts: &TrainOptions) -> Result<Summary> {
    let (c, source) = compile(path, &opts.overrides)?;
    let cfg = resolve_config(&c, &path.display().to_string(), &source, opts)?;
    train_compiled(&c, cfg, opts)
}

/// Train a compiled model with a resolved recipe.
pub fn train_compiled(c: &Compiled, mut cfg: TrainConfig, opts: &TrainOptions) -> Result<Summary> {
    let forward = &c.forward;
    let data = opts.data.as_ref().map(|p| p.display().to_string());
    let spec = match cfg.task.clone() {
        Some(TaskSpec::CharLm { .. }) => match &data {
            Some(p) => TaskSpec::CharLm { path: p.clone() },
            None => bail!("the char_lm task reads a text file: pass --data FILE"),
        },
        Some(t) => t,
        None => TaskSpec::default_for(
            &tasks::ModelShape::of(forward).map_err(|e| anyhow!(e))?,
            data.as_deref(),
        )
        .map_err(|e| anyhow!("{}: {e}", forward.name))?,
    };
    let task = Task::new(spec.clone(), forward, cfg.seed)
        .map_err(|e| anyhow!("task {} on model `{}`: {e}", spec.name(), forward.name))?;
    cfg.task = Some(spec.clone());
    let joint = c
        .joint()
        .map_err(|e| anyhow!("internal error in autodiff: {e}"))?;
    let step = step::TrainingStep::new(&joint, &cfg.optim, cfg.seed).map_err(|e| anyhow!(e))?;
    let step_g = &step.graph;
    let index = model_names(step_g);
    let mut params = crate::io::init_params(step_g, cfg.seed);
    let n_model = forward.params.len();

    // The config as stored, with the data file reduced to its fingerprint.
    let mut stored = cfg.clone();
    if let Some(TaskSpec::CharLm { path }) = &mut stored.task {
        path.clear();
    }
    let meta_config = serde_json::to_string(&stored)?;
    let meta_data = format!("{:016x}", task.fingerprint);
    let meta_model = format!("{:016x}", crate::io::fnv(text::print(forward).as_bytes()));

    let mut start = 0u64;
    if let Some(ck) = &opts.resume {
        let (meta, tensors) = load_checkpoint(ck)?;
        let same = |k: &str, v: &str, what: &str| -> Result<()> {
            let got = meta.get(k).map(String::as_str).unwrap_or("");
            if got != v {
                bail!(
                    "{} was written with a different {what}; a resume must use the same model, \
                     recipe and data to continue bit-identically\n  checkpoint: {got}\n  now:        {v}",
                    ck.display()
                );
            }
            Ok(())
        };
        same("model", &meta_model, "model")?;
        same("config", &meta_config, "training recipe")?;
        same("data", &meta_data, "data")?;
        start = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("{} has no step", ck.display()))?;
        for (name, t) in tensors {
            if let Some(&i) = index.get(&name) {
                if t.shape != step_g.params[i].shape {
                    bail!("{}: `{name}` has the wrong shape", ck.display());
                }
                params[i] = t;
            }
        }
    }
    let out_dir = match (&opts.out, &opts.resume) {
        (Some(d), _) => d.clone(),
        (None, Some(ck)) => ck
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        (None, None) => PathBuf::from("runs").join(format!("{}-seed{}", forward.name, cfg.seed)),
    };
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let ckpt_path = out_dir.join("checkpoint.safetensors");
    let mut log = Log::open(
        &out_dir.join("log.jsonl"),
        opts.resume.as_ref().map(|_| start),
    )?;

    let backend = opts.backend.unwrap_or(Backend::Jit);
    let t_compile = Instant::now();
    let mut step_exec =
        exec::step_executor(step_g, backend, step.writeback.clone()).map_err(|e| anyhow!(e))?;
    step_exec.load_params(params).map_err(|e| anyhow!(e))?;
    let mut eval_graph = forward.clone();
    eval_graph.outputs.retain(|o| o.name == "logits");
    let mut eval_exec = exec::executor(&eval_graph, backend).map_err(|e| anyhow!(e))?;
    let compile_seconds = t_compile.elapsed().as_secs_f64();
    let eval_batches = task.eval_batches();

    if !opts.quiet {
        errln!(
            "training {} ({} parameters) on {} for {} steps with {} (lr {}), {} backend, seed {}; \
             compiled in {:.2} s; writing {}",
            forward.name,
            forward.param_count(),
            spec.name(),
            cfg.steps,
            cfg.optim.kind.name(),
            cfg.optim.lr,
            backend.name(),
            cfg.seed,
            compile_seconds,
            out_dir.display()
        );
        if start > 0 {
            errln!("resuming at step {start}");
        }
    }
    install_ctrlc();
    INTERRUPTED.store(false, Ordering::SeqCst);
    let pb = if opts.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::new(cfg.steps);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:28.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_position(start);
        pb
    };

    let meta = |step: u64| Meta {
        step,
        config: meta_config.clone(),
        data: meta_data.clone(),
        model: meta_model.clone(),
    };
    let run_eval = |exec: &mut Box<dyn exec::Executor>, params: &[Tensor]| -> Result<Eval> {
        let (mut loss, mut correct, mut count) = (0.0, 0usize, 0usize);
        for b in &eval_batches {
            let outs = exec
                .run(&b.inputs, &params[..n_model])
                .map_err(|e| anyhow!(e))?;
            let logits = outs
                .iter()
                .find(|(n, _)| n == "logits")
                .map(|(_, t)| t)
                .ok_or_else(|| anyhow!("internal error: no logits"))?;
            let (l, k, n) = task.score(b, logits);
            loss += l;
            correct += k;
            count += n;
        }
        let count = count.max(1) as f64;
        Ok(Eval {
            loss: loss / count,
            accuracy: task.has_accuracy().then_some(correct as f64 / count),
        })
    };

    let tokens = task.shape().tokens_per_batch() as f64;
    let mut losses = Vec::new();
    let mut evals = Vec::new();
    let mut interrupted = false;
    let t_run = Instant::now();
    let mut train_seconds = 0.0;
    let mut last_ckpt: Option<u64> = if opts.resume.is_some() {
        Some(start)
    } else {
        None
    };
    let mut t = start;
    while t < cfg.steps {
        if INTERRUPTED.load(Ordering::SeqCst) || opts.stop_after == Some(t) {
            save_checkpoint(&ckpt_path, step_g, &step_exec.params(), &meta(t))?;
            interrupted = true;
            break;
        }
        let ts = Instant::now();
        let lr = cfg.schedule.lr(cfg.optim.lr, t, cfg.steps);
        let inputs = step.inputs(task.batch(t).inputs, t, lr);
        // Only the loss and a finiteness flag come back; the parameters stay resident.
        let out = step_exec.step(&inputs).map_err(|e| anyhow!(e))?;
        let loss = out.loss;
        let bad = if !loss.is_finite() {
            Some("the loss".to_string())
        } else {
            out.non_finite.map(|n| format!("`{n}`"))
        };
        if let Some(what) = bad {
            pb.abandon();
            // Nothing was written back: these are the parameters the step read.
            return Err(non_finite(
                step_g,
                &inputs,
                &step_exec.params(),
                t + 1,
                loss,
                &what,
                lr,
                &ckpt_path,
                last_ckpt,
            ));
        }
        let dt = ts.elapsed().as_secs_f64();
        train_seconds += dt;
        t += 1;
        losses.push((t, loss as f32));
        log.line(serde_json::json!({
            "step": t, "loss": loss as f32, "lr": lr, "tokens_per_s": (tokens / dt).round()
        }))?;
        if t.is_multiple_of(cfg.eval_every) || t == cfg.steps {
            let params = step_exec.params();
            let e = run_eval(&mut eval_exec, &params)?;
            evals.push((t, e));
            log.line(serde_json::json!({
                "step": t, "eval_loss": e.loss, "eval_accuracy": e.accuracy
            }))?;
            save_checkpoint(&ckpt_path, step_g, &params, &meta(t))?;
            last_ckpt = Some(t);
        }
        if t.is_multiple_of(10) || t == cfg.steps {
            let tail = &losses[losses.len().saturating_sub(10)..];
            let mean = tail.iter().map(|(_, l)| *l as f64).sum::<f64>() / tail.len() as f64;
            let ev = match evals.last() {
                Some((
                    _,
                    Eval {
                        loss,
                        accuracy: Some(a),
                    },
                )) => {
                    format!(" | eval {} acc {:.1}%", fmt_num(*loss), a * 100.0)
                }
                Some((_, Eval { loss, .. })) => format!(" | eval {}", fmt_num(*loss)),
                None => String::new(),
            };
            pb.set_message(format!(
                "loss {}{ev} | {:.0} tok/s",
                fmt_num(mean),
                tokens * losses.len() as f64 / train_seconds.max(1e-9)
            ));
        }
        pb.set_position(t);
    }
    pb.finish_and_clear();
    if !interrupted {
        let params = step_exec.params();
        let model: Vec<(String, Tensor)> = step_g.params[..n_model]
            .iter()
            .zip(&params)
            .map(|(p, t)| (p.name.clone(), t.clone()))
            .collect();
        crate::io::save_safetensors(&out_dir.join("final.safetensors"), &model)?;
    } else if !opts.quiet {
        errln!(
            "interrupted after step {t}; saved {}\nresume with: lamina train FILE --resume {}",
            ckpt_path.display(),
            ckpt_path.display()
        );
    }
    let (train_curve, eval_curve) = read_log(&out_dir.join("log.jsonl"));
    let span = (train_curve.len() / 50).max(1);
    let series = vec![
        plot::Series {
            name: "train (smoothed)".into(),
            points: plot::smooth(&train_curve, span),
            dashed: false,
            color: 0,
        },
        plot::Series {
            name: "held-out".into(),
            points: eval_curve,
            dashed: true,
            color: 1,
        },
    ];
    let title = format!("{} on {}", forward.name, spec.name());
    crate::io::write_atomic(
        &out_dir.join("loss.svg"),
        plot::svg(&title, &series).as_bytes(),
    )?;
    Ok(Summary {
        model: forward.name.clone(),
        params: forward.param_count(),
        task: spec.name().to_string(),
        config: cfg,
        steps_done: t,
        tokens_per_second: tokens * losses.len() as f64 / train_seconds.max(1e-9),
        losses,
        evals,
        seconds: t_run.elapsed().as_secs_f64() + compile_seconds,
        out_dir,
        interrupted,
    })
}

#[allow(clippy::too_many_arguments)]
fn non_finite(
    g: &Graph,
    inputs: &[Tensor],
    params: &[Tensor],
    step: u64,
    loss: f64,
    what: &str,
    lr: f64,
    ckpt: &Path,
    last_ckpt: Option<u64>,
) -> anyhow::Error {
    let mut msg =
        format!("non-finite value at step {step}: {what} is not finite (loss = {loss})\n");
    match exec::first_non_finite(g, inputs, params) {
        Some(nf) => {
            msg += &format!(
                "  first appears at node %{} `{}` in {} ({} pass): {}\n",
                nf.node,
                nf.op,
                if nf.scope.is_empty() {
                    "the model's top level".to_string()
                } else {
                    format!("`{}`", nf.scope)
                },
                nf.phase.name(),
                nf.what
            );
            msg += "  see it with: lamina ir FILE --stage grad (node numbers are those of the \
                    step graph, which extends it)\n";
        }
        None => {
            msg += &format!(
                "  the interpreter finds every value finite; first non-finite output: {what}\n"
            )
        }
    }
    msg += &match last_ckpt {
        Some(s) => format!(
            "  no checkpoint was written for this step; {} still holds step {s}\n",
            ckpt.display()
        ),
        None => "  no checkpoint was written\n".to_string(),
    };
    msg += &format!(
        "  hint: lower the learning rate (now {lr:e}) or set `clip = 1.0` in the train section"
    );
    NonFiniteError(msg).into()
}

/// The end-of-run table.
pub fn summary_table(runs: &[Summary]) -> String {
    let mut s = format!(
        "{:<22} {:>10} {:>7} {:>11} {:>10} {:>9} {:>8} {:>10}\n",
        "model", "params", "steps", "train loss", "eval loss", "eval acc", "time s", "tokens/s"
    );
    for r in runs {
        let e = r.last_eval();
        let _ = std::fmt::Write::write_fmt(
            &mut s,
            format_args!(
                "{:<22} {:>10} {:>7} {:>11} {:>10} {:>9} {:>8.1} {:>10.0}\n",
                r.model,
                r.params,
                r.steps_done,
                fmt_num(r.final_loss()),
                e.map(|e| fmt_num(e.loss)).unwrap_or_else(|| "-".into()),
                e.and_then(|e| e.accuracy)
                    .map(|a| format!("{:.1}%", a * 100.0))
                    .unwrap_or_else(|| "-".into()),
                r.seconds,
                r.tokens_per_second
            ),
        );
    }
    s
}

/// `lamina compare`: train each model on the same task, seed and steps (the first model's
/// recipe, or the command line's), plot the curves together and tabulate.
pub fn compare(files: &[PathBuf], opts: &TrainOptions) -> Result<(Vec<Summary>, PathBuf)> {
    if files.len() < 2 {
        bail!("compare needs at least two model files");
    }
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join("compare"));
    let mut runs: Vec<Summary> = Vec::new();
    let mut first: Option<TrainConfig> = None;
    for (k, f) in files.iter().enumerate() {
        let (c, source) = compile(f, &opts.overrides)?;
        let mut cfg = resolve_config(&c, &f.display().to_string(), &source, opts)?;
        if let Some(base) = &first {
            // Same data, seed, length and optimizer for every model.
            cfg = TrainConfig {
                task: base.task.clone(),
                ..base.clone()
            };
        }
        let stem = format!(
            "{k}-{}",
            f.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut o = opts.clone();
        o.out = Some(out.join(stem));
        let s = train_compiled(&c, cfg, &o)?;
        if first.is_none() {
            first = Some(s.config.clone());
        }
        runs.push(s);
    }
    let mut series = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let (train, eval) = read_log(&r.out_dir.join("log.jsonl"));
        let span = (train.len() / 50).max(1);
        series.push(plot::Series {
            name: format!("{} train", r.model),
            points: plot::smooth(&train, span),
            dashed: false,
            color: i,
        });
        if !eval.is_empty() {
            series.push(plot::Series {
                name: format!("{} held-out", r.model),
                points: eval,
                dashed: true,
                color: i,
            });
        }
    }
    let title = format!(
        "{} on {}",
        runs.iter()
            .map(|r| r.model.as_str())
            .collect::<Vec<_>>()
            .join(" vs "),
        runs[0].task
    );
    let svg = out.join("compare.svg");
    crate::io::write_atomic(&svg, plot::svg(&title, &series).as_bytes())?;
    Ok((runs, svg))
}
