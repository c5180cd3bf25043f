//! `lamina train`: training runs that are reproducible, resumable and watched.
//!
//! The pieces: `config` (the `train { }` section and command-line overrides), `tasks`
//! (built-in data and held-out scoring), `data` (the user's data sets), `optim` (the optimizer update appended to the
//! joint graph as IR), `exec` (JIT or interpreter executors), `plot` (SVG curves). This
//! module runs the loop: batch of step t from (seed, t), one step graph run, `new.*`
//! written back into host f32 tensors, a JSONL log line, evaluation and an atomic
//! checkpoint every `eval_every` steps, and a NaN/Inf check on every step.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod depth_search;
pub mod error;
pub mod exec;
pub mod optim;
pub mod plot;
pub mod probe;
pub mod rundir;
pub mod sample;
pub mod signals;
pub mod step;
pub mod tasks;

use crate::diag::Diagnostic;
use crate::elab::Override;
use crate::front::{self, CompileError, Compiled};
use crate::io::{IoError, IoErrorKind};
use crate::ir::{text, Graph};
use crate::tensor::Tensor;
use checkpoint::Meta;
use config::TrainConfig;
pub use error::{ExecError, NonFiniteError, TaskError, TrainError};
use exec::{Backend, StepOutcome};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
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
    /// `--data FILE`: the text of the char_lm task, a safetensors file of examples, or a
    /// flat token file (with `dtype`).
    pub data: Option<PathBuf>,
    /// `--dtype`: the width of a flat token file's ids.
    pub dtype: Option<data::TokenDtype>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    /// `--init FILE`: start from these weights (every parameter of the model, by name)
    /// with a fresh optimizer state, to fine-tune a converted or imported model.
    pub init: Option<PathBuf>,
    pub backend: Option<Backend>,
    /// No progress bar or messages on stderr.
    pub quiet: bool,
    /// Stop as if interrupted (Ctrl-C) once this many steps are done (for tests).
    pub stop_after: Option<u64>,
    /// Start a fresh run in a directory that already holds one, replacing it.
    pub force: bool,
    /// Record the residual stream's metrics over depth every N steps (`probe.jsonl`).
    pub probe_every: Option<u64>,
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
    /// The step's peak arena in bytes (JIT only): parameters, optimizer state and every
    /// value of the step that is alive at once.
    pub arena_bytes: Option<usize>,
    pub out_dir: PathBuf,
    pub interrupted: bool,
    /// The signal that interrupted it (SIGINT or SIGTERM); `None` when it was not one.
    pub signal: Option<i32>,
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

/// Print a line to stderr; a failed write is ignored (the run goes on).
macro_rules! errln {
    ($($arg:tt)*) => { crate::io::to_stderr(&format!("{}\n", format!($($arg)*))) };
}

fn rendered(file_name: &str, source: &str, diagnostics: Vec<Diagnostic>) -> TrainError {
    TrainError::Diagnostics(
        CompileError {
            file_name: file_name.to_string(),
            source: source.to_string(),
            diagnostics,
        }
        .render(false),
    )
}

/// The model's constants as numbers (for expressions in the train section).
fn constants(c: &Compiled, overrides: &[Override]) -> HashMap<String, f64> {
    crate::elab::constants(&c.module, overrides)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(n, v)| v.parse::<f64>().ok().map(|x| (n, x)))
        .collect()
}

/// Apply one command-line setting (`--steps 200`): its value must be exactly one
/// expression or call, on one line, so nothing else can ride along into the recipe.
fn apply_option(
    cfg: &mut TrainConfig,
    key: &str,
    value: &str,
    consts: &HashMap<String, f64>,
) -> Result<(), TrainError> {
    let option = format!("--{}", key.replace('_', "-"));
    let not_one = |message: &str| TrainError::Option {
        option: option.clone(),
        message: format!("`{}` {message}", value.escape_debug()),
    };
    if value.contains(['\n', '\r']) {
        return Err(not_one("spans several lines; give one value"));
    }
    let prefix = format!("train {{\n    {key} = ");
    let snippet = format!("{prefix}{value}\n}}\n");
    let m = crate::syntax::parse(&snippet).map_err(|d| rendered(&option, &snippet, d))?;
    let settings = m
        .train
        .as_ref()
        .map(|t| t.settings.as_slice())
        .unwrap_or(&[]);
    let [s] = settings else {
        return Err(not_one("is not one value"));
    };
    let trimmed = value.trim();
    let start = prefix.len() + (value.len() - value.trim_start().len());
    let span = config::value_span(&s.value);
    if s.key.name != key
        || !m.items.is_empty()
        || span.start != start
        || span.end != start + trimmed.len()
    {
        return Err(not_one(
            "is not exactly one expression or call (e.g. `200`, `sgd(lr = 0.1)`)",
        ));
    }
    config::apply_setting(cfg, &s.key, &s.value, consts)
        .map_err(|d| rendered(&option, &snippet, vec![d]))
}

/// The recipe of a compiled model file: defaults, its `train { }` section, then the
/// command-line settings.
pub fn resolve_config(
    c: &Compiled,
    file_name: &str,
    source: &str,
    opts: &TrainOptions,
) -> Result<TrainConfig, TrainError> {
    let consts = constants(c, &opts.overrides);
    let mut cfg = TrainConfig::default();
    if let Some(section) = &c.module.train {
        let diags = config::apply_section(&mut cfg, section, &consts);
        if !diags.is_empty() {
            return Err(rendered(file_name, source, diags));
        }
    }
    for (key, value) in &opts.settings {
        apply_option(&mut cfg, key, value, &consts)?;
    }
    if let Some(lr) = opts.lr {
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(TrainError::Option {
                option: "--lr".into(),
                message: format!("must be a non-negative number, got {lr}"),
            });
        }
        cfg.optim.lr = lr;
    }
    check_recipe(c, &cfg, file_name, source, opts)?;
    Ok(cfg)
}

/// The recipe against the model: Muon only on 2-D weights, and on at least one. A fault is
/// located at the setting that caused it (in the file, or the command-line option).
fn check_recipe(
    c: &Compiled,
    cfg: &TrainConfig,
    file_name: &str,
    source: &str,
    opts: &TrainOptions,
) -> Result<(), TrainError> {
    let Err(fault) = optim::check_model(&cfg.optim, &c.forward) else {
        return Ok(());
    };
    let (key, message, hint) = match fault {
        optim::Mismatch::Optimizer(m) => (
            "optimizer",
            m,
            "muon needs 2-D weights to update: the `matrix` role, or a group with \
             `optimizer = muon`; otherwise use adamw",
        ),
        optim::Mismatch::Group(role, m) => (
            config::group_key(role).unwrap_or("optimizer"),
            m,
            "muon updates 2-D weights only; give this group `optimizer = adamw`",
        ),
    };
    if opts.settings.iter().any(|(k, _)| k == key) {
        return Err(TrainError::Option {
            option: format!("--{key}"),
            message,
        });
    }
    let setting = c
        .module
        .train
        .as_ref()
        .and_then(|t| t.settings.iter().find(|s| s.key.name == key));
    match setting {
        Some(s) => {
            let d = Diagnostic::new(message, config::value_span(&s.value), "here").with_hint(hint);
            Err(rendered(file_name, source, vec![d]))
        }
        None => Err(TrainError::Option {
            option: key.to_string(),
            message,
        }),
    }
}

/// Append-only JSONL log.
struct Log {
    path: PathBuf,
    file: std::fs::File,
    /// The last `train_s` of the kept lines of a resumed run: step time goes on from there.
    train_s_before: f64,
}

impl Log {
    fn open(path: &Path, keep_until: Option<u64>) -> Result<Log, IoError> {
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
        let train_s_before = kept
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v.get("train_s").and_then(|s| s.as_f64()))
            .unwrap_or(0.0);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| IoError::new(path, IoErrorKind::Write(e)))?;
        Ok(Log {
            path: path.to_path_buf(),
            file,
            train_s_before,
        })
    }
    fn line(&mut self, v: serde_json::Value) -> Result<(), IoError> {
        writeln!(self.file, "{v}").map_err(|e| IoError::new(&self.path, IoErrorKind::Write(e)))
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

/// The `(train_s, loss)` points of a run's log: the training loss against step time.
pub fn read_log_time(path: &Path) -> Curve {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("train_s")?.as_f64()?, v.get("loss")?.as_f64()?)))
        .collect()
}

fn fmt_num(v: f64) -> String {
    let s = if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v:.4}")
    };
    // A value that rounds to zero prints as 0.0000, not -0.0000.
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// Compile a model file for training; diagnostics come back rendered.
pub fn compile(path: &Path, overrides: &[Override]) -> Result<(Compiled, String), TrainError> {
    let c = front::compile_file(path, overrides)
        .map_err(|e| TrainError::Diagnostics(e.render(false)))?;
    let source = c.source.clone();
    Ok((c, source))
}

/// Train the model in `path`. Diagnostics and failures come back as errors
/// (`TrainError::NonFinite` for a NaN/Inf step); an interruption is a normal return with
/// `interrupted = true`.
pub fn train(path: &Path, opts: &TrainOptions) -> Result<Summary, TrainError> {
    let (c, source) = compile(path, &opts.overrides)?;
    let cfg = resolve_config(&c, &path.display().to_string(), &source, opts)?;
    train_compiled(&c, cfg, opts)
}

/// Train a compiled model with a resolved recipe.
pub fn train_compiled(
    c: &Compiled,
    cfg: TrainConfig,
    opts: &TrainOptions,
) -> Result<Summary, TrainError> {
    let plan = Plan::new(c, cfg, opts)?;
    let mut run = Run::start(&plan, opts)?;
    run.step_loop(&plan, opts)?;
    run.finish(&plan, opts)
}

/// The task of a run: the recipe's, or the model's default; `--data` supplies char_lm's text.
/// The task a model trains on under `opts` (its recipe's, the command line's or the
/// model's default), built with the recipe's seed: its held-out batches are a run's.
pub fn recipe_task(c: &Compiled, opts: &TrainOptions) -> Result<Task, TrainError> {
    let cfg = resolve_config(c, &c.file_name, &c.source, opts)?;
    Ok(choose_task(&c.forward, &cfg, opts)?.1)
}

fn choose_task(
    forward: &Graph,
    cfg: &TrainConfig,
    opts: &TrainOptions,
) -> Result<(TaskSpec, Task), TrainError> {
    let data = opts.data.as_ref().map(|p| p.display().to_string());
    let unfit = |error: TaskError| TrainError::Task {
        model: forward.name.clone(),
        error,
    };
    let format = match &opts.data {
        Some(path) => {
            data::DataFormat::of(path, opts.dtype).map_err(|message| TrainError::Option {
                option: "--data".into(),
                message,
            })?
        }
        None if opts.dtype.is_some() => {
            return Err(TrainError::Option {
                option: "--dtype".into(),
                message: "it gives the width of a flat token file: pass the file with --data"
                    .into(),
            })
        }
        None => None,
    };
    let spec = match (format, cfg.task.clone()) {
        (Some(format), _) => {
            if opts.settings.iter().any(|(k, _)| k == "task") {
                return Err(TrainError::Option {
                    option: "--task".into(),
                    message: "a --data file of tensors or tokens is the task itself; drop --task"
                        .into(),
                });
            }
            TaskSpec::Data {
                path: data.clone().unwrap_or_default(),
                format,
            }
        }
        (None, Some(TaskSpec::Data { .. })) => {
            return Err(TrainError::Option {
                option: "--data".into(),
                message: "the data task reads the examples from a file: pass --data \
                          FILE.safetensors, or --data FILE.bin --dtype u16"
                    .into(),
            })
        }
        (None, Some(TaskSpec::CharLm { .. })) => match &data {
            Some(p) => TaskSpec::CharLm { path: p.clone() },
            None => {
                return Err(TrainError::Option {
                    option: "--data".into(),
                    message: "the char_lm task reads a text file: pass --data FILE".into(),
                })
            }
        },
        (None, Some(t)) => t,
        (None, None) => TaskSpec::default_for(
            &tasks::ModelShape::of(forward).map_err(unfit)?,
            data.as_deref(),
        )
        .map_err(unfit)?,
    };
    if data.is_some() && !matches!(spec, TaskSpec::CharLm { .. } | TaskSpec::Data { .. }) {
        return Err(TrainError::Option {
            option: "--data".into(),
            message: format!(
                "a text file is read by the char_lm task only, and this run's task is {}; \
                 drop --data or use --task char_lm (examples of other tasks go in a \
                 .safetensors file)",
                spec.name()
            ),
        });
    }
    let task = Task::new(spec.clone(), forward, cfg.seed).map_err(unfit)?;
    Ok((spec, task))
}

/// Everything decided before a run starts: the task, the step graph, what a checkpoint of
/// it records, and where it goes.
struct Plan<'a> {
    forward: &'a Graph,
    cfg: TrainConfig,
    spec: TaskSpec,
    task: Task,
    step: step::TrainingStep,
    /// Metadata of a checkpoint at step 0; `meta(t)` sets the step.
    meta: Meta,
    out_dir: PathBuf,
    backend: Backend,
    /// The model with its residual stream as outputs, when probing during training.
    probed: Option<Graph>,
}

impl<'a> Plan<'a> {
    fn new(c: &'a Compiled, mut cfg: TrainConfig, opts: &TrainOptions) -> Result<Self, TrainError> {
        let forward = &c.forward;
        let (spec, task) = choose_task(forward, &cfg, opts)?;
        cfg.task = Some(spec.clone());
        let joint = c
            .training_joint()
            .map_err(|e| TrainError::Internal(format!("autodiff: {e}")))?;
        let step = step::TrainingStep::new(&joint, &cfg.optim, cfg.seed)
            .map_err(|e| TrainError::Internal(format!("the optimizer update: {e}")))?;
        // The config as stored, with the data file reduced to its fingerprint.
        let mut stored = cfg.clone();
        if let Some(TaskSpec::CharLm { path } | TaskSpec::Data { path, .. }) = &mut stored.task {
            path.clear();
        }
        let meta = Meta {
            step: 0,
            config: serde_json::to_string(&stored)
                .map_err(|e| TrainError::Internal(format!("the recipe as JSON: {e}")))?,
            data: format!("{:016x}", task.fingerprint),
            model: format!("{:016x}", crate::io::fnv(text::print(forward).as_bytes())),
            backend: opts.backend.unwrap_or(Backend::Jit).name().to_string(),
        };
        let out_dir = match (&opts.out, &opts.resume) {
            (Some(d), _) => d.clone(),
            (None, Some(ck)) => ck
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            (None, None) => {
                PathBuf::from("runs").join(format!("{}-seed{}", forward.name, cfg.seed))
            }
        };
        Ok(Plan {
            forward,
            cfg,
            spec,
            task,
            step,
            meta,
            out_dir,
            backend: opts.backend.unwrap_or(Backend::Jit),
            probed: match opts.probe_every {
                Some(_) => Some(probe::probed_graph(c)?),
                None => None,
            },
        })
    }

    fn meta(&self, step: u64) -> Meta {
        Meta {
            step,
            ..self.meta.clone()
        }
    }

    fn ckpt_path(&self) -> PathBuf {
        self.out_dir.join("checkpoint.safetensors")
    }

    /// Replaces the model's parameters in `params` (the step graph's) by those of the
    /// weights file `w`, which must hold every one of them.
    fn start_from(&self, w: &Path, params: &mut [Tensor]) -> Result<(), TrainError> {
        let (weights, _) = crate::io::load_weights(self.forward, w)?;
        for (p, t) in self.forward.params.iter().zip(weights) {
            let i = self
                .step
                .graph
                .params
                .iter()
                .position(|q| q.name == p.name)
                .ok_or_else(|| TrainError::Internal(format!("no step parameter {}", p.name)))?;
            params[i] = t;
        }
        Ok(())
    }

    /// Parameters (weights and optimizer state) and the step to start from: fresh ones, or
    /// a checkpoint's after checking that it belongs to this run.
    fn initial_state(
        &self,
        resume: Option<&Path>,
        init: Option<&Path>,
    ) -> Result<(u64, Vec<Tensor>), TrainError> {
        let step_g = &self.step.graph;
        let mut params = crate::io::init_params(step_g, self.cfg.seed)?;
        let Some(ck) = resume else {
            if let Some(w) = init {
                self.start_from(w, &mut params)?;
            }
            return Ok((0, params));
        };
        let loaded = checkpoint::load(ck)?;
        let problem = |problem: String| TrainError::Checkpoint {
            path: ck.to_path_buf(),
            problem,
        };
        for (key, now, what) in [
            ("model", &self.meta.model, "model"),
            ("config", &self.meta.config, "training recipe"),
            ("data", &self.meta.data, "data"),
        ] {
            let got = loaded.meta.get(key).map(String::as_str).unwrap_or("");
            if got != now {
                return Err(problem(format!(
                    "it was written with a different {what}; a resume must use the same model, \
                     recipe and data to continue bit-identically\n  checkpoint: {got}\n  now:        {now}"
                )));
            }
        }
        let written_by = loaded.meta.get("backend").map(String::as_str).unwrap_or("");
        if written_by != self.meta.backend {
            return Err(problem(format!(
                "it was computed by the {written_by} backend and this run uses {}; the \
                 backends round differently, so resume with --backend {written_by} to \
                 continue bit-identically",
                self.meta.backend
            )));
        }
        let start: u64 = loaded
            .meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| problem("it records no step".into()))?;
        if start > self.cfg.steps {
            return Err(problem(format!(
                "it is at step {start}, past the recipe's {} steps",
                self.cfg.steps
            )));
        }
        let mut tensors: HashMap<String, Tensor> = loaded.tensors.into_iter().collect();
        for (i, p) in step_g.params.iter().enumerate() {
            let t = tensors
                .remove(&p.name)
                .ok_or_else(|| problem(format!("it lacks `{}`", p.name)))?;
            if t.shape != p.shape || t.dtype != p.ty().dtype {
                return Err(problem(format!(
                    "`{}` is {} but the run needs {}",
                    p.name,
                    t.ty(),
                    p.ty()
                )));
            }
            params[i] = t;
        }
        Ok((start, params))
    }
}

/// A run under way: its executors, log and progress.
struct Run {
    /// Held for the run's life: no other run writes this directory meanwhile.
    _lock: rundir::RunLock,
    step_exec: Box<dyn exec::StepExecutor>,
    eval_exec: Box<dyn exec::Executor>,
    eval_batches: Vec<tasks::Batch>,
    log: Log,
    /// The probed model's executor, `probe.jsonl` and the interval, with `--probe-every`.
    probe: Option<(Box<dyn exec::Executor>, Log, u64)>,
    /// Steps done (including those before a resume).
    t: u64,
    last_ckpt: Option<u64>,
    losses: Vec<(u64, f32)>,
    evals: Vec<(u64, Eval)>,
    interrupted: bool,
    signal: Option<i32>,
    compile_seconds: f64,
    train_seconds: f64,
    started: Instant,
    pb: indicatif::ProgressBar,
}

impl Run {
    /// Resume or start fresh, open the log, compile the step and the evaluator.
    fn start(plan: &Plan, opts: &TrainOptions) -> Result<Run, TrainError> {
        let out_dir = &plan.out_dir;
        let lock = rundir::lock(out_dir)?;
        if opts.resume.is_none() {
            rundir::claim(out_dir, opts.force)?;
        }
        let orphans = rundir::remove_orphans(out_dir);
        if !orphans.is_empty() && !opts.quiet {
            errln!(
                "removed {} temporary file(s) left by a killed writer: {}",
                orphans.len(),
                orphans.join(", ")
            );
        }
        let (start, params) = plan.initial_state(opts.resume.as_deref(), opts.init.as_deref())?;
        let log = Log::open(
            &out_dir.join("log.jsonl"),
            opts.resume.as_ref().map(|_| start),
        )?;
        let probe = match (&plan.probed, opts.probe_every) {
            (Some(g), Some(every)) => Some((
                exec::executor(g, plan.backend)?,
                Log::open(
                    &out_dir.join("probe.jsonl"),
                    opts.resume.as_ref().map(|_| start),
                )?,
                every.max(1),
            )),
            _ => None,
        };
        let t_compile = Instant::now();
        let mut step_exec =
            exec::step_executor(&plan.step.graph, plan.backend, plan.step.writeback.clone())?;
        step_exec.load_params(params)?;
        let mut eval_graph = plan.forward.clone();
        eval_graph.outputs.retain(|o| o.name == "logits");
        let eval_exec = exec::executor(&eval_graph, plan.backend)?;
        let compile_seconds = t_compile.elapsed().as_secs_f64();
        if !opts.quiet {
            announce(plan, start, compile_seconds);
        }
        Ok(Run {
            _lock: lock,
            step_exec,
            eval_exec,
            eval_batches: plan.task.eval_batches()?,
            log,
            probe,
            t: start,
            last_ckpt: opts.resume.as_ref().map(|_| start),
            losses: Vec::new(),
            evals: Vec::new(),
            interrupted: false,
            signal: None,
            compile_seconds,
            train_seconds: 0.0,
            started: Instant::now(),
            pb: progress_bar(opts.quiet, plan.cfg.steps, start),
        })
    }

    /// Steps until the recipe's last, an interruption, or a non-finite step (an error).
    fn step_loop(&mut self, plan: &Plan, opts: &TrainOptions) -> Result<(), TrainError> {
        let step_g = &plan.step.graph;
        let cfg = &plan.cfg;
        while self.t < cfg.steps {
            let t = self.t;
            let signal = signals::requested();
            if signal.is_some() || opts.stop_after == Some(t) {
                self.signal = signal;
                checkpoint::save(
                    &plan.ckpt_path(),
                    step_g,
                    &self.step_exec.params()?,
                    &plan.meta(t),
                )?;
                self.interrupted = true;
                return Ok(());
            }
            let ts = Instant::now();
            let lr = cfg.schedule.lr(cfg.optim.lr, t, cfg.steps);
            let scheduled = |peak: f64| cfg.schedule.lr(peak, t, cfg.steps);
            let inputs = plan.step.inputs(plan.task.batch(t)?.inputs, t, &scheduled);
            // Only the loss and a finiteness flag come back; the parameters stay resident.
            let out = self
                .step_exec
                .step(&inputs)
                .map_err(|error| TrainError::Exec {
                    step: Some(t + 1),
                    error,
                })?;
            let bad = if !out.loss.is_finite() {
                Some("the loss".to_string())
            } else {
                out.non_finite.as_ref().map(|n| format!("`{n}`"))
            };
            if let Some(what) = bad {
                self.pb.abandon();
                // Unless the update itself overflowed in place, nothing was written back:
                // these are the parameters the step read.
                return Err(non_finite(
                    step_g,
                    &inputs,
                    &self.step_exec.params()?,
                    Failure {
                        step: t + 1,
                        loss: out.loss,
                        what,
                        lr,
                        ckpt: plan.ckpt_path(),
                        last_ckpt: self.last_ckpt,
                        updated: out.updated,
                    },
                )
                .into());
            }
            let dt = ts.elapsed().as_secs_f64();
            self.after_step(plan, &out, lr, dt)?;
        }
        Ok(())
    }

    /// Log a finished step; evaluate and checkpoint when due; update the progress bar.
    fn after_step(
        &mut self,
        plan: &Plan,
        out: &StepOutcome,
        lr: f64,
        dt: f64,
    ) -> Result<(), TrainError> {
        let loss = out.loss;
        let cfg = &plan.cfg;
        let tokens = plan.task.shape().tokens_per_batch() as f64;
        self.train_seconds += dt;
        self.t += 1;
        let t = self.t;
        self.losses.push((t, loss as f32));
        // `train_s`: seconds spent in training steps so far, across resumes (evaluation and
        // checkpoints excluded), the x axis of `compare_time.svg`.
        let mut line = serde_json::json!({
            "step": t, "loss": loss as f32, "lr": lr, "tokens_per_s": (tokens / dt).round(),
            "train_s": self.log.train_s_before + self.train_seconds
        });
        if !out.parts.is_empty() {
            let parts: serde_json::Map<String, serde_json::Value> = out
                .parts
                .iter()
                .map(|(n, v)| (n.clone(), serde_json::json!(*v as f32)))
                .collect();
            line["parts"] = serde_json::Value::Object(parts);
        }
        self.log.line(line)?;
        if t.is_multiple_of(cfg.eval_every) || t == cfg.steps {
            let params = self.step_exec.params()?;
            let e = self.evaluate(plan, &params)?;
            self.evals.push((t, e));
            self.log.line(serde_json::json!({
                "step": t, "eval_loss": e.loss, "eval_accuracy": e.accuracy
            }))?;
            checkpoint::save(&plan.ckpt_path(), &plan.step.graph, &params, &plan.meta(t))?;
            self.last_ckpt = Some(t);
        }
        self.probe_if_due(plan)?;
        if t.is_multiple_of(10) || t == cfg.steps {
            self.pb.set_message(self.progress_message(tokens));
        }
        self.pb.set_position(t);
        Ok(())
    }

    fn progress_message(&self, tokens: f64) -> String {
        let tail = &self.losses[self.losses.len().saturating_sub(10)..];
        let mean = tail.iter().map(|(_, l)| *l as f64).sum::<f64>() / tail.len().max(1) as f64;
        let ev = match self.evals.last() {
            Some((
                _,
                Eval {
                    loss,
                    accuracy: Some(a),
                },
            )) => format!(" | eval {} acc {:.1}%", fmt_num(*loss), a * 100.0),
            Some((_, Eval { loss, .. })) => format!(" | eval {}", fmt_num(*loss)),
            None => String::new(),
        };
        format!(
            "loss {}{ev} | {:.0} tok/s",
            fmt_num(mean),
            tokens * self.losses.len() as f64 / self.train_seconds.max(1e-9)
        )
    }

    /// With `--probe-every N`, every N steps (and at the last): the residual stream's
    /// metrics on the first held-out batch, a line of `probe.jsonl`.
    fn probe_if_due(&mut self, plan: &Plan) -> Result<(), TrainError> {
        let t = self.t;
        let Some((exec, log, every)) = &mut self.probe else {
            return Ok(());
        };
        if !(t.is_multiple_of(*every) || t == plan.cfg.steps) {
            return Ok(());
        }
        let Some(batch) = self.eval_batches.first() else {
            return Ok(());
        };
        let params = self.step_exec.params()?;
        let n_model = plan.forward.params.len();
        let outs = exec.run(&batch.inputs, &params[..n_model])?;
        let steps = probe::step_probes(&outs);
        log.line(serde_json::json!({ "step": t, "probes": steps }))?;
        Ok(())
    }

    /// Held-out loss and accuracy with the model's parameters (the first of `params`).
    fn evaluate(&mut self, plan: &Plan, params: &[Tensor]) -> Result<Eval, TrainError> {
        let n_model = plan.forward.params.len();
        let (mut loss, mut correct, mut count) = (0.0, 0usize, 0usize);
        for b in &self.eval_batches {
            let outs = self.eval_exec.run(&b.inputs, &params[..n_model])?;
            let logits = outs
                .iter()
                .find(|(n, _)| n == "logits")
                .map(|(_, t)| t)
                .ok_or_else(|| TrainError::Internal("the evaluator has no logits".into()))?;
            let (l, k, n) = plan.task.score(b, logits);
            loss += l;
            correct += k;
            count += n;
        }
        let count = count.max(1) as f64;
        Ok(Eval {
            loss: loss / count,
            accuracy: plan.task.has_accuracy().then_some(correct as f64 / count),
        })
    }

    /// The final weights (unless interrupted), the plot, the summary.
    fn finish(self, plan: &Plan, opts: &TrainOptions) -> Result<Summary, TrainError> {
        self.pb.finish_and_clear();
        let out_dir = &plan.out_dir;
        let forward = plan.forward;
        if !self.interrupted {
            let params = self.step_exec.params()?;
            let model: Vec<(String, Tensor)> = plan.step.graph.params[..forward.params.len()]
                .iter()
                .zip(&params)
                .map(|(p, t)| (p.name.clone(), t.clone()))
                .collect();
            crate::io::save_safetensors(&out_dir.join("final.safetensors"), &model)?;
        } else if !opts.quiet {
            let ckpt = plan.ckpt_path();
            errln!(
                "interrupted{} after step {}; saved {}\nresume with: lamina train FILE --resume {}",
                match self.signal {
                    Some(signals::SIGTERM) => " (SIGTERM)",
                    _ => "",
                },
                self.t,
                ckpt.display(),
                ckpt.display()
            );
        }
        write_plot(plan)?;
        let tokens = plan.task.shape().tokens_per_batch() as f64;
        Ok(Summary {
            model: forward.name.clone(),
            params: forward.param_count(),
            task: plan.spec.name().to_string(),
            config: plan.cfg.clone(),
            steps_done: self.t,
            tokens_per_second: tokens * self.losses.len() as f64 / self.train_seconds.max(1e-9),
            arena_bytes: self.step_exec.arena_bytes(),
            losses: self.losses,
            evals: self.evals,
            seconds: self.started.elapsed().as_secs_f64() + self.compile_seconds,
            out_dir: out_dir.clone(),
            interrupted: self.interrupted,
            signal: self.signal,
        })
    }
}

/// The line that opens a run on stderr.
fn announce(plan: &Plan, start: u64, compile_seconds: f64) {
    let cfg = &plan.cfg;
    errln!(
        "training {} ({} parameters) on {} for {} steps with {} (lr {}), {} backend, seed {}; \
         compiled in {:.2} s; writing {}",
        plan.forward.name,
        plan.forward.param_count(),
        plan.spec.name(),
        cfg.steps,
        cfg.optim.kind.name(),
        cfg.optim.lr,
        plan.backend.name(),
        cfg.seed,
        compile_seconds,
        plan.out_dir.display()
    );
    if let Some(data) = plan.task.data_summary() {
        errln!("data: {data}");
    }
    if start > 0 {
        errln!("resuming at step {start}");
    }
}

fn progress_bar(quiet: bool, steps: u64, start: u64) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(steps);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:28.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_position(start);
    pb
}

/// `loss.svg` from the run's whole log.
fn write_plot(plan: &Plan) -> Result<(), IoError> {
    let title = format!("{} on {}", plan.forward.name, plan.spec.name());
    let svg = loss_svg(&plan.out_dir.join("log.jsonl"), &title);
    crate::io::write_atomic(&plan.out_dir.join("loss.svg"), svg.as_bytes())
}

/// The loss curves of a run's log as SVG: the training loss smoothed, the held-out loss
/// dashed.
pub fn loss_svg(log: &Path, title: &str) -> String {
    let (train_curve, eval_curve) = read_log(log);
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
    plot::svg(title, &series)
}

/// A step whose loss or update was not finite.
struct Failure {
    step: u64,
    loss: f64,
    what: String,
    lr: f64,
    ckpt: PathBuf,
    last_ckpt: Option<u64>,
    /// The update was stored in place before the value was found, so the resident
    /// parameters are past the step and the interpreter cannot replay it.
    updated: bool,
}

fn non_finite(g: &Graph, inputs: &[Tensor], params: &[Tensor], f: Failure) -> NonFiniteError {
    let mut msg = format!(
        "non-finite value at step {}: {} is not finite (loss = {})\n",
        f.step, f.what, f.loss
    );
    let located = if f.updated {
        None
    } else {
        exec::first_non_finite(g, inputs, params)
    };
    match located {
        _ if f.updated => {
            msg += &format!(
                "  every value before the optimizer's update was finite: the update itself \
                 overflowed in {}\n",
                f.what
            );
        }
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
                "  the interpreter finds every value finite; first non-finite output: {}\n",
                f.what
            )
        }
    }
    msg += &match f.last_ckpt {
        Some(s) => format!(
            "  no checkpoint was written for this step; {} still holds step {s}\n",
            f.ckpt.display()
        ),
        None => "  no checkpoint was written\n".to_string(),
    };
    msg += &format!(
        "  hint: lower the learning rate (now {:e}) or set `clip = 1.0` in the train section",
        f.lr
    );
    NonFiniteError {
        step: f.step,
        message: msg,
    }
}

/// The end-of-run table.
pub fn summary_table(runs: &[Summary]) -> String {
    let mut s = format!(
        "{:<22} {:>10} {:>7} {:>11} {:>10} {:>9} {:>8} {:>10} {:>9}\n",
        "model",
        "params",
        "steps",
        "train loss",
        "eval loss",
        "eval acc",
        "time s",
        "tokens/s",
        "arena MiB"
    );
    for r in runs {
        let e = r.last_eval();
        let _ = std::fmt::Write::write_fmt(
            &mut s,
            format_args!(
                "{:<22} {:>10} {:>7} {:>11} {:>10} {:>9} {:>8.1} {:>10.0} {:>9}\n",
                r.model,
                r.params,
                r.steps_done,
                fmt_num(r.final_loss()),
                e.map(|e| fmt_num(e.loss)).unwrap_or_else(|| "-".into()),
                e.and_then(|e| e.accuracy)
                    .map(|a| format!("{:.1}%", a * 100.0))
                    .unwrap_or_else(|| "-".into()),
                r.seconds,
                r.tokens_per_second,
                r.arena_bytes
                    .map(|b| format!("{:.1}", b as f64 / (1 << 20) as f64))
                    .unwrap_or_else(|| "-".into())
            ),
        );
    }
    s
}

/// `lamina compare`: train each model on the same task, seed and steps (the first model's
/// recipe, or the command line's), plot the curves together and tabulate. Every model,
/// recipe and task is checked before any training starts; an interruption stops the whole
/// comparison (the runs so far are returned, the last one `interrupted`). With
/// `each_recipe`, every model keeps its own recipe and only the task is the first one's.
pub fn compare(
    files: &[PathBuf],
    opts: &TrainOptions,
    each_recipe: bool,
) -> Result<(Vec<Summary>, PathBuf), TrainError> {
    if files.len() < 2 {
        return Err(TrainError::Option {
            option: "compare".into(),
            message: "needs at least two model files".into(),
        });
    }
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join("compare"));
    let mut compiled = Vec::new();
    for f in files {
        let (c, source) = compile(f, &opts.overrides)?;
        let cfg = resolve_config(&c, &f.display().to_string(), &source, opts)?;
        compiled.push((f, c, cfg));
    }
    let mut plans: Vec<(Plan, TrainOptions)> = Vec::new();
    for (k, (f, c, cfg)) in compiled.iter().enumerate() {
        let stem = format!(
            "{k}-{}",
            f.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut o = opts.clone();
        o.out = Some(out.join(stem));
        // Same data, seed, length and optimizer for every model: the first one's recipe,
        // with its task as resolved for the first model.
        // With `each_recipe`, the first one's task and seed (the same split and batches).
        let cfg = match plans.first() {
            Some((first, _)) if each_recipe => TrainConfig {
                task: first.cfg.task.clone(),
                seed: first.cfg.seed,
                ..cfg.clone()
            },
            Some((first, _)) => first.cfg.clone(),
            None => cfg.clone(),
        };
        // The first model's recipe was checked against the first model only.
        if let Err(fault) = optim::check_model(&cfg.optim, &c.forward) {
            let message = match fault {
                optim::Mismatch::Optimizer(m) | optim::Mismatch::Group(_, m) => m,
            };
            return Err(TrainError::Option {
                option: "compare".into(),
                message: format!(
                    "{} cannot train with {}'s recipe: {message}",
                    f.display(),
                    files[0].display()
                ),
            });
        }
        let plan = Plan::new(c, cfg, &o)?;
        plans.push((plan, o));
    }
    let mut runs: Vec<Summary> = Vec::new();
    for (plan, o) in &plans {
        if signals::requested().is_some() {
            break;
        }
        let mut run = Run::start(plan, o)?;
        run.step_loop(plan, o)?;
        let s = run.finish(plan, o)?;
        let stop = s.interrupted;
        runs.push(s);
        if stop {
            break;
        }
    }
    let svg = out.join("compare.svg");
    write_compare_plot(&runs, &svg)?;
    write_compare_time_plot(&runs, &out.join("compare_time.svg"))?;
    probe::write_compare_plots(&runs, &out)?;
    Ok((runs, svg))
}

/// Every run's training loss against the seconds its steps took, in one SVG.
fn write_compare_time_plot(runs: &[Summary], svg: &Path) -> Result<(), IoError> {
    let series: Vec<plot::Series> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let train = read_log_time(&r.out_dir.join("log.jsonl"));
            let span = (train.len() / 50).max(1);
            plot::Series {
                name: format!("{} train", r.model),
                points: plot::smooth(&train, span),
                dashed: false,
                color: i,
            }
        })
        .collect();
    let title = format!("{}, against step time", compare_title(runs));
    let svg_text = plot::svg_over(&title, "training seconds", &series);
    crate::io::write_atomic(svg, svg_text.as_bytes())
}

/// Every run's curves in one SVG.
fn write_compare_plot(runs: &[Summary], svg: &Path) -> Result<(), IoError> {
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
    crate::io::write_atomic(svg, plot::svg(&compare_title(runs), &series).as_bytes())
}

/// "a vs b on task": the title of a comparison's plots.
fn compare_title(runs: &[Summary]) -> String {
    let models: Vec<&str> = runs.iter().map(|r| r.model.as_str()).collect();
    let task = runs.first().map(|r| r.task.as_str()).unwrap_or("");
    format!("{} on {task}", models.join(" vs "))
}
