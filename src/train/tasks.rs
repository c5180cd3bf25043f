//! Tasks: built-in data without files, a text file (`char_lm`) or the user's data set
//! (`data`, read by `super::data`); a held-out split, and scoring on it.
//!
//! The batch of step `t` is a pure function of `(seed, t)` (a ChaCha8 stream seeded with a
//! hash of both), so a resumed run needs only the step and the seed.

use super::data::{DataFormat, UserData};
pub use super::error::TaskError;
use crate::io::{fnv, normal};
use crate::ir::{DType, Graph};
use crate::tensor::{try_buffer, try_collect, AllocError, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What the model reads and predicts, derived from its graph.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    pub batch: usize,
    pub kind: InputKind,
    pub head: Head,
}

#[derive(Clone, Debug, PartialEq)]
pub enum InputKind {
    Tokens {
        length: usize,
        vocab: usize,
    },
    Features {
        width: usize,
    },
    /// `images: f32[B, channels, height, width]`.
    Image {
        channels: usize,
        height: usize,
        width: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Head {
    /// `logits [B, T, V]`, targets `i32[B, T]`.
    Lm { vocab: usize },
    /// `logits [B, C]`, targets `i32[B]`.
    Classifier { classes: usize },
    /// `logits [B, K]`, targets `f32[B, K]`.
    Regression { out: usize },
}

impl ModelShape {
    pub fn of(g: &Graph) -> Result<ModelShape, TaskError> {
        Self::of_graph(g).map_err(|m| TaskError::new(None, m))
    }

    fn of_graph(g: &Graph) -> Result<ModelShape, String> {
        let find = |n: &str| g.inputs.iter().position(|i| i.name == n);
        let targets = find("targets").ok_or("the model has no `targets` input")?;
        let tty = &g.inputs[targets].ty;
        let logits = g
            .output("logits")
            .map(|v| g.ty(v).shape.clone())
            .ok_or("the model has no `logits` output")?;
        let (batch, kind) = if let Some(i) = find("tokens") {
            let s = &g.inputs[i].ty.shape;
            let vocab = crate::io::index_bound(g, i).unwrap_or(1);
            (
                s[0],
                InputKind::Tokens {
                    length: s[1],
                    vocab,
                },
            )
        } else if let Some(i) = find("inputs") {
            let s = &g.inputs[i].ty.shape;
            (s[0], InputKind::Features { width: s[1] })
        } else if let Some(i) = find("images").filter(|&i| g.inputs[i].ty.shape.len() == 4) {
            let s = &g.inputs[i].ty.shape;
            let kind = InputKind::Image {
                channels: s[1],
                height: s[2],
                width: s[3],
            };
            (s[0], kind)
        } else {
            return Err("the model reads neither `tokens`, `inputs` nor `images`".into());
        };
        let last = *logits.last().unwrap_or(&1);
        let head = match (tty.dtype, tty.shape.len()) {
            (DType::I32, 2) => Head::Lm { vocab: last },
            (DType::I32, 1) => Head::Classifier { classes: last },
            _ => Head::Regression { out: last },
        };
        Ok(ModelShape { batch, kind, head })
    }

    /// Elements a step reads, for tokens/s: tokens for token models, rows otherwise.
    pub fn tokens_per_batch(&self) -> usize {
        match self.kind {
            InputKind::Tokens { length, .. } => self.batch * length,
            InputKind::Features { .. } | InputKind::Image { .. } => self.batch,
        }
    }
}

/// A task as configured (what the checkpoint records).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskSpec {
    /// `a + b mod p` over all `p^2` pairs, a random `train_fraction` of them for training.
    ModularAddition { p: usize, train_fraction: f64 },
    /// `x SEP x`: repeat the first half.
    Copy,
    /// `x SEP reverse(x)`.
    Reverse,
    /// Next byte of a text file; the last 10% is held out.
    CharLm { path: String },
    /// The user's examples (`--data`): a safetensors file or a flat token stream.
    Data { path: String, format: DataFormat },
    /// Features: the class is the argmax of a fixed random linear teacher.
    Classification,
    /// Features: targets are `tanh` of a fixed random linear teacher.
    Regression,
    /// Images: one of ten drawn shapes (bars, diagonals, cross, box, ...) at a random
    /// place and size, with noise; the class is the shape.
    Shapes,
}

impl TaskSpec {
    pub fn name(&self) -> &'static str {
        match self {
            TaskSpec::ModularAddition { .. } => "modular_addition",
            TaskSpec::Copy => "copy",
            TaskSpec::Reverse => "reverse",
            TaskSpec::CharLm { .. } => "char_lm",
            TaskSpec::Data { .. } => "data",
            TaskSpec::Classification => "classification",
            TaskSpec::Regression => "regression",
            TaskSpec::Shapes => "shapes",
        }
    }

    /// The task a model trains on when none is given.
    pub fn default_for(shape: &ModelShape, data: Option<&str>) -> Result<TaskSpec, TaskError> {
        Self::default_of(shape, data).map_err(|m| TaskError::new(None, m))
    }

    fn default_of(shape: &ModelShape, data: Option<&str>) -> Result<TaskSpec, String> {
        if let Some(path) = data {
            return Ok(TaskSpec::CharLm {
                path: path.to_string(),
            });
        }
        Ok(match (&shape.kind, &shape.head) {
            (InputKind::Tokens { length, vocab }, Head::Classifier { classes }) => {
                let eq_token = usize::from(*length == 3);
                let p = (*classes).min(vocab.saturating_sub(eq_token));
                if !(2..=3).contains(length) || p < 2 {
                    return Err(format!(
                        "no default task for a classifier over {length} tokens: modular addition \
                         needs length 2 or 3 (`a b` or `a b =`); set `task` in the train section"
                    ));
                }
                TaskSpec::ModularAddition {
                    p,
                    train_fraction: 0.5,
                }
            }
            (InputKind::Tokens { .. }, Head::Lm { .. }) => TaskSpec::Copy,
            (InputKind::Tokens { .. }, Head::Regression { .. }) => {
                return Err("no built-in task trains a token model with a linear head".into())
            }
            (InputKind::Features { .. }, Head::Regression { .. }) => TaskSpec::Regression,
            (InputKind::Features { .. }, _) => TaskSpec::Classification,
            (InputKind::Image { .. }, Head::Classifier { .. }) => TaskSpec::Shapes,
            (InputKind::Image { .. }, Head::Lm { .. } | Head::Regression { .. }) => {
                return Err(
                    "no built-in task trains an image model without a classifier head".into(),
                )
            }
        })
    }
}

/// The RNG of stream `stream` at step `t` for `seed`.
pub fn rng_for(seed: u64, stream: u64, t: u64) -> ChaCha8Rng {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&seed.to_le_bytes());
    key.extend_from_slice(&stream.to_le_bytes());
    key.extend_from_slice(&t.to_le_bytes());
    ChaCha8Rng::seed_from_u64(fnv(&key))
}

const STREAM_BATCH: u64 = 1;
const STREAM_SPLIT: u64 = 2;
const STREAM_EVAL: u64 = 3;
const STREAM_TEACHER: u64 = 4;
/// The order of the user's examples in each epoch.
pub const STREAM_SHUFFLE: u64 = 7;
/// Gradient noise (used by the trainer).
pub const STREAM_NOISE: u64 = 5;
/// Drop-Muon's layer subsets (used by the trainer).
pub const STREAM_DROP: u64 = 6;
/// Dropout and stochastic-depth masks (used by the trainer).
pub const STREAM_DROPOUT: u64 = 8;
/// Held-out examples per evaluation (synthetic tasks; at most, for the user's data).
pub const EVAL_EXAMPLES: usize = 512;

/// One batch in the model's input order, and which rows are real (eval padding).
pub struct Batch {
    pub inputs: Vec<Tensor>,
    pub rows: usize,
}

/// A task instantiated for a model: its data, split and scoring.
pub struct Task {
    pub spec: TaskSpec,
    shape: ModelShape,
    seed: u64,
    /// Names of the model inputs in graph order (`tokens`/`inputs`, `targets`).
    input_names: Vec<String>,
    data: Data,
    /// A fingerprint of the data (stored in checkpoints).
    pub fingerprint: u64,
}

enum Data {
    Pairs {
        p: usize,
        train: Vec<(usize, usize)>,
        held: Vec<(usize, usize)>,
        eq_token: Option<usize>,
    },
    Seq {
        reverse: bool,
        half: usize,
        symbols: usize,
    },
    Text {
        bytes: Vec<u8>,
        split: usize,
    },
    Teacher {
        w: Vec<f64>,
        out: usize,
        width: usize,
    },
    Shapes {
        classes: usize,
        channels: usize,
        height: usize,
        width: usize,
    },
    User(UserData),
}

impl Task {
    pub fn new(spec: TaskSpec, g: &Graph, seed: u64) -> Result<Task, TaskError> {
        let name = spec.name();
        let fit = |m: String| TaskError::new(Some(name), m);
        let shape = ModelShape::of_graph(g).map_err(fit)?;
        let input_names: Vec<String> = g.inputs.iter().map(|i| i.name.clone()).collect();
        let mut fp = format!("{spec:?}");
        let data = match &spec {
            TaskSpec::ModularAddition { p, train_fraction } => {
                pairs_data(*p, *train_fraction, &shape, seed).map_err(fit)?
            }
            TaskSpec::Copy | TaskSpec::Reverse => seq_data(&spec, &shape).map_err(fit)?,
            TaskSpec::CharLm { path } => {
                let (data, text_fp) = text_data(path, &shape).map_err(fit)?;
                fp = text_fp;
                data
            }
            TaskSpec::Data { path, format } => {
                let user = UserData::open(path, *format, &shape, g)?;
                fp = user.fingerprint.clone();
                Data::User(user)
            }
            TaskSpec::Classification | TaskSpec::Regression => {
                teacher_data(&spec, &shape, seed).map_err(fit)?
            }
            TaskSpec::Shapes => shapes_data(&shape).map_err(fit)?,
        };
        let fingerprint = fnv(fp.as_bytes());
        Ok(Task {
            spec,
            shape,
            seed,
            input_names,
            data,
            fingerprint,
        })
    }

    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// How the user's data was split (`None` for built-in tasks).
    pub fn data_summary(&self) -> Option<&str> {
        match &self.data {
            Data::User(u) => Some(&u.summary),
            Data::Pairs { .. }
            | Data::Seq { .. }
            | Data::Text { .. }
            | Data::Teacher { .. }
            | Data::Shapes { .. } => None,
        }
    }

    /// Assemble `tokens`/`inputs` and `targets` in graph order.
    fn assemble(&self, x: Tensor, y: Tensor, rows: usize) -> Result<Batch, AllocError> {
        let inputs = self
            .input_names
            .iter()
            .map(|n| {
                let t = if n == "targets" { &y } else { &x };
                t.try_clone(|| format!("input {n} of a batch ({})", t.ty()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Batch { inputs, rows })
    }

    /// Examples `(x row, y row)` for one sample.
    fn pair_example(&self, a: usize, b: usize) -> (Vec<f64>, Vec<f64>) {
        let Data::Pairs { p, eq_token, .. } = &self.data else {
            return (vec![], vec![]);
        };
        let c = (a + b) % p;
        let mut x = vec![a as f64, b as f64];
        if let Some(e) = eq_token {
            x.push(*e as f64);
        }
        let y = match self.shape.head {
            // Next tokens, ending with the answer.
            Head::Lm { .. } => {
                let mut y: Vec<f64> = x[1..].to_vec();
                y.push(c as f64);
                y
            }
            _ => vec![c as f64],
        };
        (x, y)
    }

    fn seq_example(&self, rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<f64>) {
        let Data::Seq {
            reverse,
            half,
            symbols,
        } = &self.data
        else {
            return (vec![], vec![]);
        };
        let xs: Vec<usize> = (0..*half).map(|_| rng.gen_range(0..*symbols)).collect();
        let mut ys = xs.clone();
        if *reverse {
            ys.reverse();
        }
        let mut s: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
        s.push(*symbols as f64);
        s.extend(ys.iter().map(|&v| v as f64));
        (s[..2 * half].to_vec(), s[1..].to_vec())
    }

    fn teacher_example(&self, rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<f64>) {
        let Data::Teacher { w, out, width } = &self.data else {
            return (vec![], vec![]);
        };
        let x: Vec<f64> = (0..*width).map(|_| normal(rng) as f32 as f64).collect();
        let z: Vec<f64> = (0..*out)
            .map(|o| (0..*width).map(|i| w[o * width + i] * x[i]).sum())
            .collect();
        let y = match self.shape.head {
            Head::Classifier { .. } => {
                let mut best = 0;
                for (i, v) in z.iter().enumerate() {
                    if *v > z[best] {
                        best = i;
                    }
                }
                vec![best as f64]
            }
            _ => z.iter().map(|v| v.tanh() as f32 as f64).collect(),
        };
        (x, y)
    }

    fn shapes_example(&self, rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<f64>) {
        let Data::Shapes {
            classes,
            channels,
            height,
            width,
        } = &self.data
        else {
            return (vec![], vec![]);
        };
        let class = rng.gen_range(0..*classes);
        let img = draw_shape(rng, class, *channels, *height, *width);
        (img, vec![class as f64])
    }

    fn text_example(&self, start: usize) -> (Vec<f64>, Vec<f64>) {
        let Data::Text { bytes, .. } = &self.data else {
            return (vec![], vec![]);
        };
        let t = self.window();
        let w: Vec<f64> = bytes[start..start + t + 1]
            .iter()
            .map(|&b| b as f64)
            .collect();
        (w[..t].to_vec(), w[1..].to_vec())
    }

    fn build(&self, examples: Vec<(Vec<f64>, Vec<f64>)>, rows: usize) -> Result<Batch, AllocError> {
        let b = self.shape.batch;
        let (xw, yw) = examples.first().map_or((0, 0), |(x, y)| (x.len(), y.len()));
        let mut xs = try_buffer(b * xw, || format!("the inputs of a batch [{b}, {xw}]"))?;
        let mut ys = try_buffer(b * yw, || format!("the targets of a batch [{b}, {yw}]"))?;
        for i in 0..b {
            // Pad by repeating the first example; padded rows are not scored.
            let (x, y) = &examples[if i < examples.len() { i } else { 0 }];
            xs.extend_from_slice(x);
            ys.extend_from_slice(y);
        }
        let xw = xs.len() / b;
        let yw = ys.len() / b;
        let x = match self.shape.kind {
            InputKind::Tokens { .. } => Tensor::i32(vec![b, xw], xs),
            InputKind::Features { .. } => Tensor::f32(vec![b, xw], xs),
            InputKind::Image {
                channels,
                height,
                width,
            } => Tensor::f32(vec![b, channels, height, width], xs),
        };
        let y = match self.shape.head {
            Head::Lm { .. } => Tensor::i32(vec![b, yw], ys),
            Head::Classifier { .. } => Tensor::i32(vec![b], ys),
            Head::Regression { .. } => Tensor::f32(vec![b, yw], ys),
        };
        self.assemble(x, y, rows)
    }

    /// The training batch of step `t` (0-based).
    pub fn batch(&self, t: u64) -> Result<Batch, AllocError> {
        let mut rng = rng_for(self.seed, STREAM_BATCH, t);
        let b = self.shape.batch;
        let examples = (0..b)
            .map(|i| match &self.data {
                Data::Pairs { train, .. } => {
                    let (a, c) = train[rng.gen_range(0..train.len())];
                    self.pair_example(a, c)
                }
                Data::Seq { .. } => self.seq_example(&mut rng),
                Data::Teacher { .. } => self.teacher_example(&mut rng),
                Data::Shapes { .. } => self.shapes_example(&mut rng),
                Data::Text { split, .. } => {
                    let t = self.window();
                    self.text_example(rng.gen_range(0..=split - t - 1))
                }
                Data::User(u) => u.train_example(&mut rng, self.seed, t, i, b),
            })
            .collect();
        self.build(examples, b)
    }

    fn window(&self) -> usize {
        match self.shape.kind {
            InputKind::Tokens { length, .. } => length,
            InputKind::Features { .. } | InputKind::Image { .. } => 0,
        }
    }

    /// The held-out set, in batches of the model's batch size (the last one padded).
    pub fn eval_batches(&self) -> Result<Vec<Batch>, AllocError> {
        let b = self.shape.batch;
        let examples: Vec<(Vec<f64>, Vec<f64>)> = match &self.data {
            Data::Pairs { held, .. } => {
                held.iter().map(|&(a, c)| self.pair_example(a, c)).collect()
            }
            Data::Seq { .. } => {
                let mut rng = rng_for(self.seed, STREAM_EVAL, 0);
                (0..EVAL_EXAMPLES.div_ceil(b) * b)
                    .map(|_| self.seq_example(&mut rng))
                    .collect()
            }
            Data::Teacher { .. } => {
                let mut rng = rng_for(self.seed, STREAM_EVAL, 0);
                (0..EVAL_EXAMPLES.div_ceil(b) * b)
                    .map(|_| self.teacher_example(&mut rng))
                    .collect()
            }
            Data::Shapes { .. } => {
                let mut rng = rng_for(self.seed, STREAM_EVAL, 0);
                (0..EVAL_EXAMPLES.div_ceil(b) * b)
                    .map(|_| self.shapes_example(&mut rng))
                    .collect()
            }
            Data::Text { bytes, split } => {
                // Evenly spaced windows over the held-out tail, at most 8 batches.
                let t = self.window();
                let room = bytes.len() - split - t;
                let n = (8 * b).min(room).max(1);
                (0..n)
                    .map(|i| self.text_example(split + i * room / n))
                    .collect()
            }
            Data::User(u) => u.held_examples(b),
        };
        examples
            .chunks(b)
            .map(|c| self.build(c.to_vec(), c.len()))
            .collect()
    }

    /// Scored positions of an LM row (`None`: every position).
    pub fn scored_positions(&self) -> Option<Vec<usize>> {
        match &self.data {
            Data::Pairs { eq_token, .. } => Some(vec![if eq_token.is_some() { 2 } else { 1 }]),
            Data::Seq { half, .. } => Some((*half..2 * half).collect()),
            Data::Text { .. } | Data::Teacher { .. } | Data::Shapes { .. } | Data::User(_) => None,
        }
    }

    /// Loss sum, correct count and scored count of one eval batch's logits.
    pub fn score(&self, batch: &Batch, logits: &Tensor) -> (f64, usize, usize) {
        let Some(y) = batch
            .inputs
            .iter()
            .zip(&self.input_names)
            .find(|(_, n)| *n == "targets")
            .map(|(t, _)| t)
        else {
            return (0.0, 0, 0);
        };
        let (mut loss, mut correct, mut count) = (0.0, 0, 0);
        let c = *logits.shape.last().unwrap_or(&1);
        let mut row = |logit_row: &[f64], target: usize| {
            let max = logit_row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + logit_row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            loss += lse - logit_row.get(target).copied().unwrap_or(f64::NAN);
            let mut best = 0;
            for (i, v) in logit_row.iter().enumerate() {
                if *v > logit_row[best] {
                    best = i;
                }
            }
            correct += usize::from(best == target);
            count += 1;
        };
        match self.shape.head {
            Head::Classifier { .. } => {
                for r in 0..batch.rows {
                    row(&logits.data[r * c..(r + 1) * c], y.data[r] as usize);
                }
            }
            Head::Lm { .. } => {
                let t = y.shape[1];
                let positions = self.scored_positions().unwrap_or_else(|| (0..t).collect());
                for r in 0..batch.rows {
                    for &pos in &positions {
                        let o = (r * t + pos) * c;
                        row(&logits.data[o..o + c], y.data[r * t + pos] as usize);
                    }
                }
            }
            Head::Regression { .. } => {
                let k = y.shape[1];
                for i in 0..batch.rows * k {
                    let d = logits.data[i] - y.data[i];
                    loss += d * d / k as f64;
                }
                count = batch.rows;
            }
        }
        (loss, correct, count)
    }

    /// Whether accuracy means anything (not for regression).
    pub fn has_accuracy(&self) -> bool {
        !matches!(self.shape.head, Head::Regression { .. })
    }
}

fn pairs_data(
    p: usize,
    train_fraction: f64,
    shape: &ModelShape,
    seed: u64,
) -> Result<Data, String> {
    let InputKind::Tokens { length, vocab } = shape.kind else {
        return Err("modular_addition needs a token input".into());
    };
    if !(2..=3).contains(&length) {
        return Err(format!(
            "modular_addition feeds `a b` or `a b =`, so the input length must be 2 \
                 or 3, not {length}"
        ));
    }
    let eq_token = (length == 3).then_some(p);
    let needed = p + usize::from(length == 3);
    if vocab < needed {
        return Err(format!(
            "modular_addition with p = {p} needs a vocabulary of at least {needed} \
                 (0..{p}{}), the model has {vocab}",
            if length == 3 { " and `=`" } else { "" }
        ));
    }
    match shape.head {
        Head::Classifier { classes } if classes < p => {
            return Err(format!(
                "modular_addition with p = {p} needs at least {p} classes, the \
                     classifier has {classes}"
            ))
        }
        Head::Regression { .. } => {
            return Err("modular_addition needs a classifier or lm head".into())
        }
        _ => {}
    }
    if !(2..=1000).contains(&p) {
        return Err(format!("modular_addition needs 2 <= p <= 1000, got {p}"));
    }
    if !(train_fraction > 0.0 && train_fraction < 1.0) {
        return Err(format!(
            "train_fraction must be between 0 and 1 (exclusive), got {train_fraction}"
        ));
    }
    let mut all: Vec<(usize, usize)> = (0..p).flat_map(|a| (0..p).map(move |b| (a, b))).collect();
    let mut rng = rng_for(seed, STREAM_SPLIT, 0);
    for i in (1..all.len()).rev() {
        let j = rng.gen_range(0..=i);
        all.swap(i, j);
    }
    let n_train = ((all.len() as f64 * train_fraction).round() as usize).clamp(1, all.len() - 1);
    let held = all.split_off(n_train);
    Ok(Data::Pairs {
        p,
        train: all,
        held,
        eq_token,
    })
}

fn seq_data(spec: &TaskSpec, shape: &ModelShape) -> Result<Data, String> {
    let (InputKind::Tokens { length, vocab }, Head::Lm { .. }) = (&shape.kind, &shape.head) else {
        return Err(format!(
            "{} needs a token input with an lm head",
            spec.name()
        ));
    };
    if length % 2 != 0 || *length < 2 {
        return Err(format!(
            "{} lays out `x SEP y` over the input, so the length must be even, not \
                 {length}",
            spec.name()
        ));
    }
    if *vocab < 3 {
        return Err(format!(
            "{} needs a vocabulary of at least 3 (two symbols and SEP), the model \
                 has {vocab}",
            spec.name()
        ));
    }
    Ok(Data::Seq {
        reverse: *spec == TaskSpec::Reverse,
        half: length / 2,
        symbols: vocab - 1,
    })
}

fn text_data(path: &str, shape: &ModelShape) -> Result<(Data, String), String> {
    let (InputKind::Tokens { length, vocab }, Head::Lm { .. }) = (&shape.kind, &shape.head) else {
        return Err("char_lm needs a token input with an lm head".into());
    };
    if *vocab < 256 {
        return Err(format!(
            "char_lm reads bytes, so it needs vocab = 256; the model has {vocab}"
        ));
    }
    let bytes = crate::io::read_file(Path::new(path), Some(crate::io::MAX_DATA_BYTES))
        .map_err(|e| format!("--data: {e}"))?;
    let split = bytes.len() - bytes.len() / 10;
    if split < length + 1 || bytes.len() - split < length + 1 {
        return Err(format!(
            "{path} has {} bytes: too short for windows of {} bytes in both the \
                 training part (first 90%) and the held-out part (last 10%)",
            bytes.len(),
            length + 1
        ));
    }
    let fp = format!("char_lm {:016x} {}", fnv(&bytes), bytes.len());
    Ok((Data::Text { bytes, split }, fp))
}

fn teacher_data(spec: &TaskSpec, shape: &ModelShape, seed: u64) -> Result<Data, String> {
    let InputKind::Features { width } = shape.kind else {
        return Err(format!("{} needs a features input", spec.name()));
    };
    let out = match (&spec, &shape.head) {
        (TaskSpec::Classification, Head::Classifier { classes }) => *classes,
        (TaskSpec::Regression, Head::Regression { out }) => *out,
        (TaskSpec::Classification, _) => {
            return Err("classification needs a classifier head".into())
        }
        _ => return Err("regression needs a linear head".into()),
    };
    let mut rng = rng_for(seed, STREAM_TEACHER, 0);
    let s = 1.0 / (width as f64).sqrt();
    let n = out * width;
    let what = || format!("the teacher's weights [{out}, {width}]");
    let w =
        try_collect(n, (0..n).map(|_| s * normal(&mut rng)), what).map_err(|e| e.to_string())?;
    Ok(Data::Teacher { w, out, width })
}

/// The kinds of shape the `shapes` task draws; class `k` is kind `k`.
pub const SHAPE_KINDS: [&str; 10] = [
    "horizontal bar",
    "vertical bar",
    "diagonal",
    "anti-diagonal",
    "cross",
    "box outline",
    "filled square",
    "x",
    "corner (L)",
    "tee (T)",
];

/// The smallest image side `shapes` draws on.
const SHAPES_MIN_SIDE: usize = 6;

fn shapes_data(shape: &ModelShape) -> Result<Data, String> {
    let InputKind::Image {
        channels,
        height,
        width,
    } = shape.kind
    else {
        return Err("shapes needs an image input".into());
    };
    let Head::Classifier { classes } = shape.head else {
        return Err("shapes needs a classifier head".into());
    };
    if !(2..=SHAPE_KINDS.len()).contains(&classes) {
        return Err(format!(
            "shapes draws {} kinds of shape, so the classifier needs 2 to {} classes, not {classes}",
            SHAPE_KINDS.len(),
            SHAPE_KINDS.len()
        ));
    }
    if height.min(width) < SHAPES_MIN_SIDE {
        return Err(format!(
            "shapes draws on images of at least {SHAPES_MIN_SIDE}x{SHAPES_MIN_SIDE}, the model's are {height}x{width}"
        ));
    }
    Ok(Data::Shapes {
        classes,
        channels,
        height,
        width,
    })
}

/// One `[channels, height, width]` image (row-major) of shape `kind`: a side `s` in
/// `[4, 3/4 of the shorter side]` at a random place, drawn at intensity 1 on every channel,
/// plus N(0, 0.25^2) noise per pixel.
pub fn draw_shape(
    rng: &mut ChaCha8Rng,
    kind: usize,
    channels: usize,
    height: usize,
    width: usize,
) -> Vec<f64> {
    let m = height.min(width);
    let s = rng.gen_range(4..=(3 * m / 4).max(4));
    let r0 = rng.gen_range(0..=height - s);
    let c0 = rng.gen_range(0..=width - s);
    let mid = s / 2;
    let on = |i: usize, j: usize| -> bool {
        match kind {
            0 => i == mid,
            1 => j == mid,
            2 => i == j,
            3 => i + j == s - 1,
            4 => i == mid || j == mid,
            5 => i == 0 || j == 0 || i == s - 1 || j == s - 1,
            6 => true,
            7 => i == j || i + j == s - 1,
            8 => j == 0 || i == s - 1,
            _ => i == 0 || j == mid,
        }
    };
    let mut img = vec![0.0; channels * height * width];
    for ch in 0..channels {
        for i in 0..s {
            for j in 0..s {
                if on(i, j) {
                    img[(ch * height + r0 + i) * width + c0 + j] = 1.0;
                }
            }
        }
    }
    for v in img.iter_mut() {
        *v = (*v + 0.25 * normal(rng)) as f32 as f64;
    }
    img
}
