//! Users' data sets (`--data`): whole tensors of examples in a safetensors file, or a flat
//! little-endian token stream (`--dtype u16|u32`, the `.bin` files of nanoGPT).
//!
//! Both are memory-mapped, never read whole, so a corpus larger than the memory trains. The
//! file is checked once, up front, in parallel over 1 MiB chunks: names, dtypes and shapes
//! against the model, every token id against the vocabulary, every float for finiteness.
//! The same pass hashes the examples into the fingerprint a checkpoint records.
//!
//! Split and order:
//! - examples: the last 10% (rounded down) are held out, unless the file gives them as
//!   `held_out.<name>` tensors; the training part is visited in epochs, each a pseudo-random
//!   permutation of the examples keyed by `(seed, epoch)` and evaluated per position (a
//!   Feistel network), so the batch of step `t` is a pure function of `(seed, t)` and no
//!   order is stored. When the training part is exactly one batch, every step's batch is
//!   that batch in file order.
//! - a token stream: the last 10% of the tokens are held out; a training row is a window of
//!   the model's length + 1 tokens (inputs, and the same shifted by one as targets) at a
//!   random offset drawn from `(seed, t)`.

use super::error::TaskError;
use super::tasks::{rng_for, Head, InputKind, ModelShape, EVAL_EXAMPLES, STREAM_SHUFFLE};
use crate::io::{describe, fnv, open_regular};
use crate::ir::Graph;
use memmap2::Mmap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The task's name in messages.
const TASK: &str = "data";
/// The prefix of the tensors that hold the held-out examples.
pub const HELD_OUT: &str = "held_out.";
/// Windows of a token stream's held-out part per evaluation, in batches.
const EVAL_WINDOW_BATCHES: usize = 8;

/// How a `--data` file holds its examples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataFormat {
    /// A safetensors file of whole tensors (`tokens`/`targets`, `inputs`/`targets`).
    Tensors,
    /// A flat little-endian token stream of this width.
    Tokens(TokenDtype),
}

/// The width of a flat token file's ids (`--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    pub fn name(self) -> &'static str {
        self.elem().name()
    }

    fn elem(self) -> Elem {
        match self {
            TokenDtype::U16 => Elem::U16,
            TokenDtype::U32 => Elem::U32,
        }
    }
}

impl DataFormat {
    /// The format of a `--data` file: by its extension, or a token stream when `--dtype`
    /// is given. `None`: a text file (the char_lm task).
    pub fn of(path: &Path, dtype: Option<TokenDtype>) -> Result<Option<DataFormat>, String> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match (ext.as_deref(), dtype) {
            (Some("safetensors"), None) => Ok(Some(DataFormat::Tensors)),
            (Some("safetensors"), Some(d)) => Err(format!(
                "--dtype {} describes a flat token file, and {} is a safetensors file, whose \
                 tensors carry their own dtypes; drop --dtype",
                d.name(),
                path.display()
            )),
            (_, Some(d)) => Ok(Some(DataFormat::Tokens(d))),
            (Some("bin"), None) => Err(format!(
                "{} is a flat token file: pass --dtype u16 or --dtype u32, the width its \
                 token ids were written with",
                path.display()
            )),
            (_, None) => Ok(None),
        }
    }
}

fn fail(message: impl Into<String>) -> TaskError {
    TaskError::new(Some(TASK), message)
}

/// The element types a data file may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
}

/// One element as stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Int(i128),
    Float(f32),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

impl Elem {
    /// The element type of a safetensors dtype, or the dtype's name when lamina reads none.
    fn of(d: Dtype) -> Result<Elem, String> {
        Ok(match d {
            Dtype::U8 => Elem::U8,
            Dtype::I8 => Elem::I8,
            Dtype::U16 => Elem::U16,
            Dtype::I16 => Elem::I16,
            Dtype::U32 => Elem::U32,
            Dtype::I32 => Elem::I32,
            Dtype::U64 => Elem::U64,
            Dtype::I64 => Elem::I64,
            Dtype::F32 => Elem::F32,
            other => return Err(format!("{other:?}").to_lowercase()),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Elem::U8 => "u8",
            Elem::I8 => "i8",
            Elem::U16 => "u16",
            Elem::I16 => "i16",
            Elem::U32 => "u32",
            Elem::I32 => "i32",
            Elem::U64 => "u64",
            Elem::I64 => "i64",
            Elem::F32 => "f32",
        }
    }

    fn size(self) -> usize {
        match self {
            Elem::U8 | Elem::I8 => 1,
            Elem::U16 | Elem::I16 => 2,
            Elem::U32 | Elem::I32 | Elem::F32 => 4,
            Elem::U64 | Elem::I64 => 8,
        }
    }

    fn is_int(self) -> bool {
        match self {
            Elem::U8 | Elem::I8 | Elem::U16 | Elem::I16 | Elem::U32 | Elem::I32 => true,
            Elem::U64 | Elem::I64 => true,
            Elem::F32 => false,
        }
    }

    /// Element `k` of little-endian bytes.
    fn read(self, b: &[u8], k: usize) -> Value {
        let at = |n: usize| &b[k * n..(k + 1) * n];
        let a2 = |s: &[u8]| [s[0], s[1]];
        let a4 = |s: &[u8]| [s[0], s[1], s[2], s[3]];
        let a8 = |s: &[u8]| [s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]];
        match self {
            Elem::U8 => Value::Int(b[k] as i128),
            Elem::I8 => Value::Int(b[k] as i8 as i128),
            Elem::U16 => Value::Int(u16::from_le_bytes(a2(at(2))) as i128),
            Elem::I16 => Value::Int(i16::from_le_bytes(a2(at(2))) as i128),
            Elem::U32 => Value::Int(u32::from_le_bytes(a4(at(4))) as i128),
            Elem::I32 => Value::Int(i32::from_le_bytes(a4(at(4))) as i128),
            Elem::U64 => Value::Int(u64::from_le_bytes(a8(at(8))) as i128),
            Elem::I64 => Value::Int(i64::from_le_bytes(a8(at(8))) as i128),
            Elem::F32 => Value::Float(f32::from_le_bytes(a4(at(4)))),
        }
    }
}

/// A tensor of examples in the mapped file: `rows` rows of `row` elements from byte `start`.
#[derive(Clone, Copy, Debug)]
struct Column {
    start: usize,
    elem: Elem,
    row: usize,
    rows: usize,
}

impl Column {
    fn bytes<'a>(&self, map: &'a [u8]) -> &'a [u8] {
        &map[self.start..self.start + self.rows * self.row * self.elem.size()]
    }

    /// Rows `0..at` and `at..`.
    fn split(self, at: usize) -> (Column, Column) {
        let tail = Column {
            start: self.start + at * self.row * self.elem.size(),
            rows: self.rows - at,
            ..self
        };
        (Column { rows: at, ..self }, tail)
    }

    /// Elements `first..first + len` as f64 (ids are exact: they were checked to fit).
    fn values(&self, map: &[u8], first: usize, len: usize) -> Vec<f64> {
        let b = self.bytes(map);
        (first..first + len)
            .map(|k| match self.elem.read(b, k) {
                Value::Int(v) => v as f64,
                Value::Float(v) => v as f64,
            })
            .collect()
    }

    fn row_values(&self, map: &[u8], r: usize) -> Vec<f64> {
        self.values(map, r * self.row, self.row)
    }
}

/// What the model reads in one tensor of examples.
#[derive(Clone, Debug)]
struct Field {
    name: &'static str,
    /// The shape of one example (the model's input shape without the batch).
    row: Vec<usize>,
    check: Check,
}

/// What every element of a field must be.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// Token ids below `bound`.
    Tokens { bound: usize },
    /// Target class ids below `bound` (`lm`: the vocabulary).
    Classes { bound: usize, lm: bool },
    /// Finite f32 values.
    Floats,
}

impl Check {
    fn valid(self, v: Value) -> bool {
        match (self, v) {
            (Check::Tokens { bound } | Check::Classes { bound, .. }, Value::Int(i)) => {
                i >= 0 && i < bound as i128
            }
            (Check::Floats, Value::Float(f)) => f.is_finite(),
            (Check::Tokens { .. } | Check::Classes { .. }, Value::Float(_))
            | (Check::Floats, Value::Int(_)) => false,
        }
    }

    /// `token 70000 at index 1234 is outside the vocabulary of 512` (`at` is `index 1234`
    /// and where that is).
    fn problem(self, v: Value, at: &str) -> String {
        match self {
            Check::Tokens { bound } => {
                format!("token {v} at {at} is outside the vocabulary of {bound}")
            }
            Check::Classes { bound, lm: true } => {
                format!("target {v} at {at} is outside the vocabulary of {bound}")
            }
            Check::Classes { bound, lm: false } => {
                format!("target {v} at {at} is outside the {bound} classes (0..{bound})")
            }
            Check::Floats => format!("value {v} at {at} is not finite"),
        }
    }

    fn wants_ints(self) -> bool {
        match self {
            Check::Tokens { .. } | Check::Classes { .. } => true,
            Check::Floats => false,
        }
    }
}

/// A checked data set, mapped.
pub struct UserData {
    map: Mmap,
    set: Set,
    /// What a checkpoint records of the data: a hash of the examples and their layout.
    pub fingerprint: String,
    /// One line on the split, for the run's start message.
    pub summary: String,
}

enum Set {
    /// `(inputs, targets)` of the training and the held-out examples.
    Examples {
        train: (Column, Column),
        held: (Column, Column),
    },
    /// Token ids; rows are windows of `length + 1`.
    Stream {
        train: Column,
        held: Column,
        length: usize,
    },
}

impl UserData {
    /// Map and check `path` for a model of `shape` (whose graph is `g`).
    pub fn open(
        path: &str,
        format: DataFormat,
        shape: &ModelShape,
        g: &Graph,
    ) -> Result<UserData, TaskError> {
        let map = map_file(Path::new(path))?;
        let named = |e: TaskError| TaskError {
            message: format!("{path}: {}", e.message),
            ..e
        };
        let (set, fingerprint, summary) = match format {
            DataFormat::Tensors => tensors(&map, shape, g).map_err(named)?,
            DataFormat::Tokens(dtype) => {
                let elem = dtype.elem();
                if map.len() % elem.size() != 0 {
                    return Err(named(
                        fail(format!(
                            "{} bytes, not a whole number of {} tokens ({} bytes each)",
                            map.len(),
                            dtype.name(),
                            elem.size()
                        ))
                        .with_hint("check --dtype: the file may hold tokens of another width"),
                    ));
                }
                let tokens = Column {
                    start: 0,
                    elem,
                    row: 1,
                    rows: map.len() / elem.size(),
                };
                stream(&map, tokens, shape, "").map_err(named)?
            }
        };
        // Training reads windows and examples in random order: no read-ahead.
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Random);
        Ok(UserData {
            map,
            set,
            fingerprint,
            summary,
        })
    }

    /// Row `i` of the training batch of step `t` (batch size `b`); `rng` is the step's.
    pub fn train_example(
        &self,
        rng: &mut ChaCha8Rng,
        seed: u64,
        t: u64,
        i: usize,
        b: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        match &self.set {
            Set::Examples { train: (x, y), .. } => {
                let k = example_index(seed, t, i, x.rows, b);
                (x.row_values(&self.map, k), y.row_values(&self.map, k))
            }
            Set::Stream { train, length, .. } => {
                let start = rng.gen_range(0..=train.rows - length - 1);
                window(&self.map, train, start, *length)
            }
        }
    }

    /// The held-out examples an evaluation scores, the same every time: all of them up to
    /// `EVAL_EXAMPLES` (in whole batches), evenly spaced ones beyond; for a token stream,
    /// up to 8 batches of evenly spaced windows.
    pub fn held_examples(&self, b: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
        match &self.set {
            Set::Examples { held: (x, y), .. } => {
                let n = x.rows.min(EVAL_EXAMPLES.div_ceil(b) * b);
                (0..n)
                    .map(|i| {
                        let k = i * x.rows / n;
                        (x.row_values(&self.map, k), y.row_values(&self.map, k))
                    })
                    .collect()
            }
            Set::Stream { held, length, .. } => {
                let room = held.rows - length;
                let n = (EVAL_WINDOW_BATCHES * b).min(room).max(1);
                (0..n)
                    .map(|i| window(&self.map, held, i * room / n, *length))
                    .collect()
            }
        }
    }
}

/// Tokens `start..start + length` and the same shifted by one.
fn window(map: &[u8], c: &Column, start: usize, length: usize) -> (Vec<f64>, Vec<f64>) {
    let w = c.values(map, start, length + 1);
    (w[..length].to_vec(), w[1..].to_vec())
}

/// Which training example row `i` of step `t` reads: position `t * b + i` of the sequence
/// of epochs, each a permutation of `0..n` keyed by `(seed, epoch)`. A training part of
/// exactly one batch is read in file order.
fn example_index(seed: u64, t: u64, i: usize, n: usize, b: usize) -> usize {
    if n == b {
        return i;
    }
    let p = t as u128 * b as u128 + i as u128;
    let epoch = (p / n as u128) as u64;
    let key: u64 = rng_for(seed, STREAM_SHUFFLE, epoch).gen();
    permute((p % n as u128) as u64, n as u64, key) as usize
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Position `k` of a pseudo-random permutation of `0..n` chosen by `key`: a four-round
/// Feistel network over the smallest square power of two that holds `n`, walking the
/// cycle until it lands below `n` (at most 4 steps on average).
pub fn permute(k: u64, n: u64, key: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let bits = (64 - (n - 1).leading_zeros()).max(2);
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let mut x = k;
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for round in 0..4u64 {
            let f = mix(r ^ key ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & mask;
            (l, r) = (r, l ^ f);
        }
        x = (l << half) | r;
        if x < n {
            return x;
        }
    }
}

/// The file, mapped read-only. A file changed by another program while it trains is not
/// supported (the map would see the change or fault).
fn map_file(path: &Path) -> Result<Mmap, TaskError> {
    let (file, meta) = open_regular(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() == 0 {
        return Err(fail(format!("{} is empty", path.display())));
    }
    // SAFETY: the map is read-only and lives as long as the `UserData` that owns it; its
    // bytes are only ever read as plain integers and floats, which every bit pattern is.
    unsafe { Mmap::map(&file) }.map_err(|e| fail(format!("cannot map {}: {e}", path.display())))
}

/// A hash of `bytes` eight at a time (a fingerprint, not a checksum against attacks).
fn chunk_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = mix(h ^ v);
    }
    for &b in words.remainder() {
        h = mix(h ^ b as u64);
    }
    h
}

/// Check every element of `c` in parallel over 1 MiB chunks and hash its bytes: the hash,
/// or the message about the first element that fails `check`, after `label` (the tensor),
/// with its index (and its example and position when `c` holds examples).
fn scan(
    map: &[u8],
    c: &Column,
    check: Check,
    label: &str,
    examples: bool,
) -> Result<u64, TaskError> {
    let size = c.elem.size();
    let chunk = (1 << 20) / size * size;
    let parts: Vec<(u64, Option<(usize, Value)>)> = c
        .bytes(map)
        .par_chunks(chunk)
        .enumerate()
        .map(|(ci, part)| {
            let first = ci * (chunk / size);
            let bad = (0..part.len() / size).find_map(|j| {
                let v = c.elem.read(part, j);
                (!check.valid(v)).then_some((first + j, v))
            });
            (chunk_hash(part), bad)
        })
        .collect();
    if let Some((k, v)) = parts.iter().find_map(|(_, bad)| *bad) {
        let at = match (examples, c.row) {
            (true, 1) => format!("index {k} (example {k})"),
            (true, row) => format!("index {k} (example {}, position {})", k / row, k % row),
            (false, _) => format!("index {k}"),
        };
        let m = format!("{label}{}", check.problem(v, &at));
        let hint = match check {
            Check::Tokens { .. } => {
                "token ids run from 0 to the model's vocabulary - 1: raise `vocab` with --set, \
                 or re-encode the data; a flat token file read with the wrong --dtype shows \
                 large ids too"
            }
            Check::Classes { lm: true, .. } => {
                "targets are next-token ids below the vocabulary of the lm head"
            }
            Check::Classes { lm: false, .. } => {
                "class ids run from 0 to the classifier's classes - 1: raise `classes` with --set"
            }
            Check::Floats => "replace NaN and infinite values before writing the file",
        };
        return Err(fail(m).with_hint(hint));
    }
    let hashes: Vec<u8> = parts.iter().flat_map(|(h, _)| h.to_le_bytes()).collect();
    Ok(fnv(&hashes))
}

/// A language model's window length and the token bound of a stream (its input vocabulary
/// and its head's, the smaller).
fn lm_window(shape: &ModelShape) -> Result<(usize, usize), TaskError> {
    match (&shape.kind, &shape.head) {
        (InputKind::Tokens { length, vocab }, Head::Lm { vocab: out }) => {
            Ok((*length, (*vocab).min(*out)))
        }
        (InputKind::Tokens { .. }, Head::Classifier { .. } | Head::Regression { .. })
        | (InputKind::Features { .. } | InputKind::Image { .. }, _) => Err(fail(
            "a token stream trains a language model (a `tokens` input and an lm head), \
             and this model is not one",
        )
        .with_hint(
            "give the examples as whole tensors in a safetensors file: `tokens`/`targets` \
             or `inputs`/`targets`",
        )),
    }
}

/// A token stream (a flat file, or a 1-D `tokens` tensor named by `name`): checked, split.
fn stream(
    map: &[u8],
    tokens: Column,
    shape: &ModelShape,
    name: &str,
) -> Result<(Set, String, String), TaskError> {
    let (length, bound) = lm_window(shape)?;
    let n = tokens.rows;
    let split = n - n / 10;
    if n - split < length + 1 {
        return Err(fail(format!(
            "{n} tokens: too few for windows of {} tokens (the model's length \
             {length} + 1) in both the training part (first 90%) and the held-out part \
             (last 10%); it needs at least {}",
            length + 1,
            10 * (length + 1)
        ))
        .with_hint("use more data, or a shorter `length` with --set"));
    }
    let prefix = if name.is_empty() {
        String::new()
    } else {
        format!("`{name}`: ")
    };
    let hash = scan(map, &tokens, Check::Tokens { bound }, &prefix, false)?;
    let (train, held) = tokens.split(split);
    let summary = format!(
        "{n} tokens ({} for training, the last {} held out), windows of {}",
        train.rows,
        held.rows,
        length + 1
    );
    let fp = format!("data stream {} {n} {hash:016x}", tokens.elem.name());
    Ok((
        Set::Stream {
            train,
            held,
            length,
        },
        fp,
        summary,
    ))
}

/// The type of a tensor as the file has it: `u16[100, 8]`.
fn stored_type(info: &TensorInfo) -> String {
    let dims: Vec<String> = info.shape.iter().map(|d| d.to_string()).collect();
    let dtype = Elem::of(info.dtype).map_or_else(|n| n, |e| e.name().to_string());
    format!("{dtype}[{}]", dims.join(", "))
}

/// The fields the model reads, from its graph: `tokens` or `inputs`, and `targets`.
fn fields(shape: &ModelShape, g: &Graph) -> Result<(Field, Field), TaskError> {
    let row = |name: &str| {
        g.inputs
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.ty.shape.get(1..).unwrap_or(&[]).to_vec())
            .ok_or_else(|| fail(format!("the model has no `{name}` input")))
    };
    let x = match shape.kind {
        InputKind::Tokens { vocab, .. } => Field {
            name: "tokens",
            row: row("tokens")?,
            check: Check::Tokens { bound: vocab },
        },
        InputKind::Features { .. } => Field {
            name: "inputs",
            row: row("inputs")?,
            check: Check::Floats,
        },
        InputKind::Image { .. } => Field {
            name: "images",
            row: row("images")?,
            check: Check::Floats,
        },
    };
    // An image data set names its classes `labels`, as torchvision's do.
    let y_name = match shape.kind {
        InputKind::Tokens { .. } | InputKind::Features { .. } => "targets",
        InputKind::Image { .. } => "labels",
    };
    let check = match shape.head {
        Head::Lm { vocab } => Check::Classes {
            bound: vocab,
            lm: true,
        },
        Head::Classifier { classes } => Check::Classes {
            bound: classes,
            lm: false,
        },
        Head::Regression { .. } => Check::Floats,
    };
    let y = Field {
        name: y_name,
        row: row("targets")?,
        check,
    };
    Ok((x, y))
}

/// The tensors a file holds, for messages: `` `tokens` (u16[100, 8]), `targets` (...) ``.
fn listing(infos: &HashMap<String, &TensorInfo>) -> String {
    let mut names: Vec<&String> = infos.keys().collect();
    names.sort();
    let shown: Vec<String> = names
        .iter()
        .map(|n| format!("`{n}` ({})", stored_type(infos[*n])))
        .collect();
    if shown.is_empty() {
        "no tensors".into()
    } else {
        shown.join(", ")
    }
}

/// The column of tensor `name` (stored as `info`, its data at `base`) read as `field`.
fn column(base: usize, name: &str, info: &TensorInfo, field: &Field) -> Result<Column, TaskError> {
    let elem = Elem::of(info.dtype);
    let wants = if field.check.wants_ints() {
        "integer ids (u8, i8, u16, i16, u32, i32, u64 or i64)"
    } else {
        "f32"
    };
    let elem = match elem {
        Ok(e) if e.is_int() == field.check.wants_ints() => e,
        Ok(_) | Err(_) => {
            let hint = if field.check.wants_ints() {
                "write it as integers, e.g. numpy's `a.astype(numpy.int32)`"
            } else {
                "write it as f32, e.g. numpy's `a.astype(numpy.float32)`"
            };
            return Err(fail(format!(
                "`{name}` is {}, and the model reads {wants} there",
                stored_type(info)
            ))
            .with_hint(hint));
        }
    };
    let Some((&rows, row_shape)) = info.shape.split_first() else {
        return Err(fail(format!(
            "`{name}` is a scalar; its first dimension must count the examples"
        )));
    };
    if row_shape != field.row.as_slice() {
        let hint = match field.check {
            Check::Tokens { .. } => {
                "rows must have the model's length; a long text belongs in a 1-D `tokens` \
                 tensor (or a flat token file), which is cut into windows of the model's length"
            }
            Check::Classes { .. } | Check::Floats => {
                "the first dimension counts the examples, the others must equal the model's \
                 (without the batch)"
            }
        };
        return Err(fail(format!(
            "`{name}` is {}: its examples have shape {row_shape:?}, and the model reads \
             examples of shape {:?}",
            stored_type(info),
            field.row
        ))
        .with_hint(hint));
    }
    Ok(Column {
        start: base + info.data_offsets.0,
        elem,
        row: field.row.iter().product(),
        rows,
    })
}

/// The training and held-out columns of `x` and `y` found in the file.
type Columns = ((Column, Column), (Column, Column));

/// Examples from a safetensors file: the names the model needs, their types and shapes,
/// the split, every value.
fn tensors(map: &[u8], shape: &ModelShape, g: &Graph) -> Result<(Set, String, String), TaskError> {
    let (header, meta) = SafeTensors::read_metadata(map)
        .map_err(|e| fail(format!("not a valid safetensors file: {}", describe(&e))))?;
    let base = 8 + header;
    let infos = meta.tensors();
    let (fx, fy) = fields(shape, g)?;
    if let (Some(info), "tokens") = (infos.get("tokens"), fx.name) {
        if info.shape.len() == 1 {
            if infos.contains_key("targets") {
                return Err(fail(
                    "a 1-D `tokens` tensor is a token stream, whose targets are the next \
                     tokens, and the file holds `targets` too",
                )
                .with_hint(
                    "drop `targets`, or give `tokens` as [examples, length] rows with \
                     `targets` of the same shape",
                ));
            }
            let as_stream = Field {
                row: vec![],
                ..fx.clone()
            };
            let tokens = Column {
                row: 1,
                ..column(base, "tokens", info, &as_stream)?
            };
            return stream(map, tokens, shape, "tokens");
        }
    }
    let ((train, held), sums) = example_columns(map, base, &infos, &fx, &fy, shape)?;
    let fp = format!(
        "data tensors {} {} {} {:016x}",
        train.0.rows,
        held.0.rows,
        sums.len(),
        fnv(&sums)
    );
    let summary = format!(
        "{} training examples, {} held out ({})",
        train.0.rows,
        held.0.rows,
        if infos.contains_key(&format!("{HELD_OUT}{}", fx.name)) {
            format!("{HELD_OUT}{}", fx.name)
        } else {
            "the last 10%".into()
        }
    );
    Ok((Set::Examples { train, held }, fp, summary))
}

/// The columns of a file of examples, checked and split, and the hashes of their bytes.
fn example_columns(
    map: &[u8],
    base: usize,
    infos: &HashMap<String, &TensorInfo>,
    fx: &Field,
    fy: &Field,
    shape: &ModelShape,
) -> Result<(Columns, Vec<u8>), TaskError> {
    let lookup = |name: &str| infos.get(name).copied();
    let held_x = format!("{HELD_OUT}{}", fx.name);
    let held_y = format!("{HELD_OUT}{}", fy.name);
    let (Some(ix), Some(iy)) = (lookup(fx.name), lookup(fy.name)) else {
        return Err(missing(infos, fx));
    };
    let (x, y) = (
        column(base, fx.name, ix, fx)?,
        column(base, fy.name, iy, fy)?,
    );
    counts_agree(fx.name, &x, fy.name, &y)?;
    let explicit = match (lookup(&held_x), lookup(&held_y)) {
        (Some(hx), Some(hy)) => {
            let hx = column(base, &held_x, hx, fx)?;
            let hy = column(base, &held_y, hy, fy)?;
            counts_agree(&held_x, &hx, &held_y, &hy)?;
            Some((hx, hy))
        }
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(fail(format!(
                "held-out examples are given in only one of `{held_x}` and `{held_y}`"
            ))
            .with_hint("write both, or neither (then the last 10% is held out)"));
        }
    };
    let mut sums = Vec::new();
    let mut scanned = |c: &Column, f: &Field, name: &str| -> Result<(), TaskError> {
        let h = scan(map, c, f.check, &format!("`{name}`: "), true)?;
        sums.extend_from_slice(&h.to_le_bytes());
        Ok(())
    };
    scanned(&x, fx, fx.name)?;
    scanned(&y, fy, fy.name)?;
    let (train, held) = match explicit {
        Some((hx, hy)) => {
            scanned(&hx, fx, &held_x)?;
            scanned(&hy, fy, &held_y)?;
            ((x, y), (hx, hy))
        }
        None => {
            let at = x.rows - x.rows / 10;
            let ((tx, hx), (ty, hy)) = (x.split(at), y.split(at));
            ((tx, ty), (hx, hy))
        }
    };
    split_fits(&train.0, &held.0, explicit.is_some(), shape.batch, fx)?;
    Ok(((train, held), sums))
}

fn counts_agree(xn: &str, x: &Column, yn: &str, y: &Column) -> Result<(), TaskError> {
    if x.rows == y.rows {
        return Ok(());
    }
    Err(fail(format!(
        "`{xn}` holds {} examples and `{yn}` {}: each example needs both",
        x.rows, y.rows
    )))
}

/// Both parts non-empty, and the training part at least one batch.
fn split_fits(
    train: &Column,
    held: &Column,
    explicit: bool,
    batch: usize,
    fx: &Field,
) -> Result<(), TaskError> {
    let by_name = format!(
        "give held-out examples as `{HELD_OUT}{}` and `{HELD_OUT}{}`",
        fx.name,
        if fx.name == "images" {
            "labels"
        } else {
            "targets"
        }
    );
    if held.rows == 0 {
        let m = if explicit {
            format!("`{HELD_OUT}{}` holds no examples", fx.name)
        } else {
            format!(
                "{} examples, and the last 10% (rounded down) is empty, so nothing is held \
                 out for evaluation",
                train.rows
            )
        };
        return Err(fail(m).with_hint(format!("use at least 10 examples, or {by_name}")));
    }
    if train.rows < batch {
        let whence = if explicit {
            "all of".to_string()
        } else {
            "the first 90% of".to_string()
        };
        return Err(fail(format!(
            "the training part ({whence} `{}`) holds {} examples, fewer than one \
             batch of {batch}",
            fx.name, train.rows
        ))
        .with_hint(format!(
            "lower the model's batch with --set, or write more examples; to train on \
             exactly one batch, {by_name}"
        )));
    }
    Ok(())
}

/// The message for a file without the tensors the model reads.
fn missing(infos: &HashMap<String, &TensorInfo>, fx: &Field) -> TaskError {
    let found = listing(infos);
    if fx.name == "images" {
        return fail(format!(
            "the file holds {found}; an image model needs `images` [n, channels, height, \
             width] (f32) and `labels` [n] (integer class ids)"
        ))
        .with_hint(format!(
            "optional held-out examples go in `{HELD_OUT}images` and `{HELD_OUT}labels`"
        ));
    }
    if infos.contains_key("images") || infos.contains_key("labels") {
        return fail(format!(
            "the file holds {found}: `images` and `labels` are the names of an image data \
             set, and this model has no image input (it reads `{}`)",
            fx.name
        ))
        .with_hint(format!(
            "for this model, write the examples as `{}` and `targets`",
            fx.name
        ));
    }
    let other = match fx.name {
        "tokens" => " (or a 1-D `tokens` stream)",
        _ => "",
    };
    fail(format!(
        "the file holds {found}; a model reading `{}` needs `{}` and `targets`{other}",
        fx.name, fx.name
    ))
    .with_hint(format!(
        "the names are `tokens`/`targets` for token models, `inputs`/`targets` for feature \
         models, with optional held-out `{HELD_OUT}<name>` tensors"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_permutation() {
        for n in [1u64, 2, 3, 5, 16, 17, 100, 1000, 4097] {
            for key in [0u64, 1, 0xdead_beef] {
                let mut seen = vec![false; n as usize];
                for k in 0..n {
                    let p = permute(k, n, key);
                    assert!(p < n && !seen[p as usize], "n = {n}, key = {key}");
                    seen[p as usize] = true;
                }
            }
        }
        // Different keys give different orders.
        let a: Vec<u64> = (0..100).map(|k| permute(k, 100, 1)).collect();
        let b: Vec<u64> = (0..100).map(|k| permute(k, 100, 2)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn epochs_visit_every_example_once() {
        let (n, b) = (37, 8);
        let mut count = vec![0; n];
        // Steps covering exactly 8 epochs.
        for p in 0..8 * n {
            let (t, i) = ((p / b) as u64, p % b);
            count[example_index(3, t, i, n, b)] += 1;
        }
        assert!(count.iter().all(|&c| c == 8), "{count:?}");
        // One batch: file order at every step.
        for t in 0..5 {
            assert_eq!(
                (0..8)
                    .map(|i| example_index(3, t, i, 8, 8))
                    .collect::<Vec<_>>(),
                (0..8).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn formats_follow_the_extension_and_dtype() {
        let of = |p: &str, d| DataFormat::of(Path::new(p), d);
        assert_eq!(of("a.safetensors", None), Ok(Some(DataFormat::Tensors)));
        assert_eq!(
            of("a.bin", Some(TokenDtype::U16)),
            Ok(Some(DataFormat::Tokens(TokenDtype::U16)))
        );
        assert_eq!(
            of("a.tok", Some(TokenDtype::U32)),
            Ok(Some(DataFormat::Tokens(TokenDtype::U32)))
        );
        assert_eq!(of("notes.txt", None), Ok(None));
        assert!(of("a.bin", None).unwrap_err().contains("--dtype u16"));
        assert!(of("a.safetensors", Some(TokenDtype::U16))
            .unwrap_err()
            .contains("drop --dtype"));
    }
}
