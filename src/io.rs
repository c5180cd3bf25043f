//! Files in and out: safetensors tensors, atomic writes, parameter init, random batches.
//!
//! Every file lamina writes goes through `write_atomic`: a temporary file beside the
//! target, then a rename, so a failed or interrupted command never leaves a partial file.

use crate::ir::{DType, Graph, Init, Op};
use crate::tensor::{try_buffer, try_collect, AllocError, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What went wrong with a file, and which file.
#[derive(Debug)]
pub struct IoError {
    pub path: PathBuf,
    pub kind: IoErrorKind,
}

/// The ways reading or writing a file fails.
#[derive(Debug)]
pub enum IoErrorKind {
    /// The operating system refused to read it.
    Read(std::io::Error),
    /// The operating system refused to write it (or a temporary file beside it).
    Write(std::io::Error),
    /// A directory, a FIFO, a device: lamina reads regular files only.
    NotAFile,
    /// Larger than the limit for this kind of file.
    TooLarge { limit: u64 },
    /// Not a safetensors file, or a malformed one.
    Format(FormatError),
    /// The path names no file (it ends in `..` or `/`).
    NotAFilePath,
    /// A tensor is not what the model needs.
    Tensor { name: String, problem: String },
    /// Parameters of the model the file lacks.
    Missing(Vec<String>),
    /// The allocator refused a buffer for its contents.
    Alloc(AllocError),
}

/// A malformed safetensors file, or a tensor lamina cannot read.
#[derive(Clone, Debug, PartialEq)]
pub enum FormatError {
    /// The file's structure (header, offsets), in words.
    Invalid(String),
    /// A dtype lamina does not read.
    Dtype { name: String, dtype: String },
    /// An I64 value outside i32.
    IdRange { name: String, value: i64 },
    /// The allocator refused a tensor's buffer.
    Alloc(AllocError),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Invalid(why) => f.write_str(why),
            FormatError::Dtype { name, dtype } => write!(
                f,
                "tensor `{name}` has dtype {dtype}; lamina reads f32, f64, i32 and i64"
            ),
            FormatError::IdRange { name, value } => {
                write!(f, "tensor `{name}`: value {value} does not fit in i32")
            }
            FormatError::Alloc(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FormatError {}

impl IoError {
    pub fn new(path: &Path, kind: IoErrorKind) -> IoError {
        IoError {
            path: path.to_path_buf(),
            kind,
        }
    }
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.path.display();
        match &self.kind {
            IoErrorKind::Read(e) => write!(f, "cannot read {p}: {e}"),
            IoErrorKind::Write(e) => write!(f, "cannot write {p}: {e}"),
            IoErrorKind::NotAFile => write!(
                f,
                "cannot read {p}: it is not a regular file (a directory, pipe or device)"
            ),
            IoErrorKind::TooLarge { limit } => write!(
                f,
                "{p} is too large: the limit is {limit} bytes ({})",
                human_bytes(*limit)
            ),
            IoErrorKind::Format(e) => write!(f, "{p} is not a valid tensor file: {e}"),
            IoErrorKind::NotAFilePath => write!(f, "{p} is not a file path"),
            IoErrorKind::Tensor { name, problem } => write!(f, "{p}: `{name}` {problem}"),
            IoErrorKind::Alloc(e) => write!(f, "cannot read {p}: {e}"),
            IoErrorKind::Missing(names) => {
                let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
                write!(
                    f,
                    "{p} lacks {} parameter(s) of the model: {shown}{}",
                    names.len(),
                    if names.len() > 5 { ", ..." } else { "" }
                )
            }
        }
    }
}

/// The message includes the operating system's reason: no `source`, so that a report of
/// the chain does not repeat it.
impl std::error::Error for IoError {}

/// `1 MiB`, `1 GiB`: a limit in words.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n => format!("{n} bytes"),
    }
}

/// The largest `--data` file: 1 GiB.
pub const MAX_DATA_BYTES: u64 = 1 << 30;

/// Open a regular file for reading, with its metadata. Anything else (a directory, a FIFO,
/// `/dev/zero`) is refused without blocking.
pub fn open_regular(path: &Path) -> Result<(std::fs::File, std::fs::Metadata), IoError> {
    let fail = |kind| IoError::new(path, kind);
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Opening a FIFO for reading waits for a writer; non-blocking, it returns at once and
    // the type check below refuses it.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(|e| fail(IoErrorKind::Read(e)))?;
    let meta = file.metadata().map_err(|e| fail(IoErrorKind::Read(e)))?;
    if !meta.is_file() {
        return Err(fail(IoErrorKind::NotAFile));
    }
    Ok((file, meta))
}

/// Read a regular file, at most `limit` bytes of it (`None`: its size). Anything else
/// (a directory, a FIFO, `/dev/zero`) is refused without reading or blocking, and a file
/// over the limit is refused after reading at most `limit + 1` bytes.
pub fn read_file(path: &Path, limit: Option<u64>) -> Result<Vec<u8>, IoError> {
    let fail = |kind| IoError::new(path, kind);
    let (file, meta) = open_regular(path)?;
    let cap = limit.unwrap_or(u64::MAX);
    if meta.len() > cap {
        return Err(fail(IoErrorKind::TooLarge { limit: cap }));
    }
    let what = || format!("the contents of {}", path.display());
    let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    let mut bytes = try_buffer(len, what).map_err(|e| fail(IoErrorKind::Alloc(e)))?;
    // The file may grow while it is read: never more than the limit and one byte.
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(IoErrorKind::Read(e)))?;
    if bytes.len() as u64 > cap {
        return Err(fail(IoErrorKind::TooLarge { limit: cap }));
    }
    Ok(bytes)
}

/// Write a message to stderr. A failed write (stderr closed, a full disk, a pipe whose
/// reader is gone) loses the message but never panics or stops the command: the exit
/// code stays the one the command would have had.
pub fn to_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|_| err.flush());
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)
    })
}

/// `write_atomic` with the temporary file written by `write` (which creates it), so that a
/// big file can be streamed rather than built in memory first.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), IoError> {
    let tmp = temp_path(path)?;
    let result = (|| -> std::io::Result<()> {
        write(&tmp)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)?
            .sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| IoError::new(path, IoErrorKind::Write(e)))
}

/// The temporary file `write_atomic` writes before renaming it to `path`.
fn temp_path(path: &Path) -> Result<PathBuf, IoError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| IoError::new(path, IoErrorKind::NotAFilePath))?
        .to_string_lossy()
        .into_owned();
    Ok(dir.join(format!(".{file_name}.tmp.{}", std::process::id())))
}

/// The contents of one file of `write_atomic_all`.
pub enum FileContents<'a> {
    Bytes(&'a [u8]),
    /// Named tensors written as safetensors (floats as f32), streamed like
    /// `save_safetensors`.
    Tensors(&'a [(String, Tensor)]),
}

/// Write several files all or nothing: every file goes to a temporary file beside its
/// target first, and only when all of them are written and synced are they renamed into
/// place. A failure before the renames removes every temporary file and leaves the targets
/// as they were.
pub fn write_atomic_all(files: &[(PathBuf, FileContents)]) -> Result<(), IoError> {
    let mut staged: Vec<PathBuf> = Vec::new();
    let clean = |staged: &[PathBuf]| {
        for t in staged {
            let _ = std::fs::remove_file(t);
        }
    };
    for (path, contents) in files {
        let tmp = match temp_path(path) {
            Ok(t) => t,
            Err(e) => {
                clean(&staged);
                return Err(e);
            }
        };
        staged.push(tmp.clone());
        if let Err(e) = write_staged(path, &tmp, contents) {
            clean(&staged);
            return Err(e);
        }
    }
    for (i, ((path, _), tmp)) in files.iter().zip(&staged).enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            clean(&staged[i..]);
            return Err(IoError::new(path, IoErrorKind::Write(e)));
        }
    }
    Ok(())
}

/// Write and sync one temporary file of `write_atomic_all`.
fn write_staged(path: &Path, tmp: &Path, contents: &FileContents) -> Result<(), IoError> {
    let write_err = |e| IoError::new(path, IoErrorKind::Write(e));
    match contents {
        FileContents::Bytes(bytes) => std::fs::File::create(tmp)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(write_err)?,
        FileContents::Tensors(tensors) => {
            let format = |e| IoError::new(path, IoErrorKind::Format(e));
            let raw = tensor_bytes(tensors, FloatWidth::F32).map_err(format)?;
            let views = views(&raw).map_err(format)?;
            safetensors::serialize_to_file(views, &None, tmp).map_err(|e| match e {
                SafeTensorError::IoError(e) => write_err(e),
                e => write_err(std::io::Error::other(describe(&e))),
            })?
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(write_err)
}

/// Whether `name` is a temporary file `write_atomic` leaves behind when its process is
/// killed mid-write (`.NAME.tmp.PID`), and that process's id.
pub fn orphan_pid(name: &str) -> Option<u32> {
    let (stem, pid) = name.rsplit_once(".tmp.")?;
    if !stem.starts_with('.') || stem.len() < 2 {
        return None;
    }
    pid.parse().ok()
}

/// The width floats are written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatWidth {
    F32,
    F64,
}

/// Serialize named tensors (f32 tensors as F32, i32 as I32) to safetensors bytes.
pub fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>, FormatError> {
    safetensors_bytes_as(tensors, FloatWidth::F32, None)
}

/// Serialize named tensors with floats of `width`, and optional metadata.
pub fn safetensors_bytes_as(
    tensors: &[(String, Tensor)],
    width: FloatWidth,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, FormatError> {
    let raw = tensor_bytes(tensors, width)?;
    safetensors::serialize(views(&raw)?, &metadata).map_err(|e| FormatError::Invalid(describe(&e)))
}

/// Each tensor's name, dtype, shape and little-endian bytes (allocated fallibly).
type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn tensor_bytes(
    tensors: &[(String, Tensor)],
    width: FloatWidth,
) -> Result<Vec<RawTensor>, FormatError> {
    tensors
        .iter()
        .map(|(name, t)| {
            let what = || format!("tensor `{name}` as bytes");
            let n = t.data.len();
            let (dtype, bytes) = match (t.dtype, width) {
                (DType::F32, FloatWidth::F32) => {
                    let bytes = t.data.iter().flat_map(|&v| (v as f32).to_le_bytes());
                    (Dtype::F32, try_collect(4 * n, bytes, what))
                }
                (DType::F32, FloatWidth::F64) => {
                    let bytes = t.data.iter().flat_map(|&v| v.to_le_bytes());
                    (Dtype::F64, try_collect(8 * n, bytes, what))
                }
                (DType::I32, _) => {
                    let bytes = t.data.iter().flat_map(|&v| (v as i32).to_le_bytes());
                    (Dtype::I32, try_collect(4 * n, bytes, what))
                }
            };
            let bytes = bytes.map_err(FormatError::Alloc)?;
            Ok((name.clone(), dtype, t.shape.clone(), bytes))
        })
        .collect()
}

fn views(raw: &[RawTensor]) -> Result<Vec<(String, TensorView<'_>)>, FormatError> {
    raw.iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| FormatError::Invalid(format!("tensor `{name}`: {}", describe(&e))))
        })
        .collect()
}

pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), IoError> {
    save_safetensors_as(path, tensors, FloatWidth::F32)
}

/// `save_safetensors` with floats written at `width`.
pub fn save_safetensors_as(
    path: &Path,
    tensors: &[(String, Tensor)],
    width: FloatWidth,
) -> Result<(), IoError> {
    save_safetensors_with(path, tensors, width, None)
}

/// Write named tensors with floats of `width` and optional metadata to `path`, atomically.
/// The file is streamed: besides each tensor's bytes nothing of its size is held in memory.
pub fn save_safetensors_with(
    path: &Path,
    tensors: &[(String, Tensor)],
    width: FloatWidth,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<(), IoError> {
    let format = |e| IoError::new(path, IoErrorKind::Format(e));
    let raw = tensor_bytes(tensors, width).map_err(format)?;
    let views = views(&raw).map_err(format)?;
    write_atomic_with(path, |tmp| {
        safetensors::serialize_to_file(views, &metadata, tmp).map_err(|e| match e {
            SafeTensorError::IoError(e) => e,
            e => std::io::Error::other(describe(&e)),
        })
    })
}

/// A tensor as read from a file, with the dtype the file stored it in.
#[derive(Clone, Debug, PartialEq)]
pub struct FileTensor {
    pub name: String,
    pub tensor: Tensor,
    /// `f32`, `f64`, `i32` or `i64`.
    pub stored: &'static str,
}

impl FileTensor {
    /// The type as the file has it: `i64[2, 3]`.
    pub fn stored_type(&self) -> String {
        let dims: Vec<String> = self.tensor.shape.iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", self.stored, dims.join(", "))
    }
}

/// Read every tensor of a safetensors file. F32, F64, F16-free files only: F32/F64 load as
/// f32 tensors, I32/I64 as i32 tensors (I64 values must fit in i32).
pub fn load_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, IoError> {
    Ok(load_tensors(path)?
        .into_iter()
        .map(|t| (t.name, t.tensor))
        .collect())
}

/// `load_safetensors` keeping each tensor's stored dtype.
pub fn load_tensors(path: &Path) -> Result<Vec<FileTensor>, IoError> {
    let bytes = read_file(path, None)?;
    parse_tensors(&bytes).map_err(|e| IoError::new(path, IoErrorKind::Format(e)))
}

/// A sentence for a safetensors format error (the crate's own text is its variant name).
pub fn describe(e: &SafeTensorError) -> String {
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

pub fn parse_safetensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, FormatError> {
    Ok(parse_tensors(bytes)?
        .into_iter()
        .map(|t| (t.name, t.tensor))
        .collect())
}

/// Every tensor of safetensors bytes, sorted by name, with its stored dtype.
pub fn parse_tensors(bytes: &[u8]) -> Result<Vec<FileTensor>, FormatError> {
    let invalid = |e: SafeTensorError| FormatError::Invalid(describe(&e));
    let st = SafeTensors::deserialize(bytes).map_err(invalid)?;
    let mut out = Vec::new();
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st.tensor(name).map_err(invalid)?;
        let shape = view.shape().to_vec();
        let data = view.data();
        let le8 = |c: &[u8]| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            b
        };
        // Each element becomes an f64: up to twice the bytes the file holds.
        let n: usize = shape.iter().product();
        let what = || format!("tensor `{name}` ({n} elements)");
        let collect = |items: &mut dyn Iterator<Item = f64>| {
            try_collect(n, items, what).map_err(FormatError::Alloc)
        };
        let (tensor, stored) = match view.dtype() {
            Dtype::F32 => (
                Tensor::f32(
                    shape,
                    collect(
                        &mut data
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64),
                    )?,
                ),
                "f32",
            ),
            Dtype::F64 => (
                Tensor::f32(
                    shape,
                    collect(&mut data.chunks_exact(8).map(|c| f64::from_le_bytes(le8(c))))?,
                ),
                "f64",
            ),
            Dtype::I32 => (
                Tensor::i32(
                    shape,
                    collect(
                        &mut data
                            .chunks_exact(4)
                            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64),
                    )?,
                ),
                "i32",
            ),
            Dtype::I64 => {
                let mut vals = try_buffer(n, what).map_err(FormatError::Alloc)?;
                for c in data.chunks_exact(8) {
                    let v = i64::from_le_bytes(le8(c));
                    if i32::try_from(v).is_err() {
                        return Err(FormatError::IdRange {
                            name: name.to_string(),
                            value: v,
                        });
                    }
                    vals.push(v as f64);
                }
                (Tensor::i32(shape, vals), "i64")
            }
            other => {
                return Err(FormatError::Dtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}").to_lowercase(),
                })
            }
        };
        out.push(FileTensor {
            name: name.to_string(),
            tensor,
            stored,
        });
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
pub fn init_params(g: &Graph, seed: u64) -> Result<Vec<Tensor>, AllocError> {
    g.params
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv(p.name.as_bytes()));
            let mut draw = || -> f64 {
                match p.init {
                    Init::Zeros => 0.0,
                    Init::Ones => 1.0,
                    Init::Const(c) => c,
                    Init::Normal { std } => std * normal(&mut rng),
                    Init::Uniform { bound } => bound * (2.0 * rng.gen::<f64>() - 1.0),
                }
            };
            let what = || format!("parameter {} ({n} elements)", p.name);
            let data = try_collect(n, (0..n).map(|_| draw() as f32 as f64), what)?;
            Ok(Tensor::f32(p.shape.clone(), data))
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
            Op::View(_) | Op::Concat { .. } => is_ids[i] = n.args.iter().any(|a| is_ids[a.index()]),
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
pub fn random_batch(g: &Graph, seed: u64) -> Result<Vec<Tensor>, AllocError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6261_7463_6800_0000);
    g.inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            let n = inp.ty.numel();
            let what = || format!("input {} ({})", inp.name, inp.ty);
            Ok(match inp.ty.dtype {
                DType::I32 => {
                    let bound = index_bound(g, i).unwrap_or(1).max(1);
                    let ids = (0..n).map(|_| rng.gen_range(0..bound) as f64);
                    Tensor::i32(inp.ty.shape.clone(), try_collect(n, ids, what)?)
                }
                DType::F32 => {
                    let xs = (0..n).map(|_| normal(&mut rng) as f32 as f64);
                    Tensor::f32(inp.ty.shape.clone(), try_collect(n, xs, what)?)
                }
            })
        })
        .collect()
}

/// The parameters of `g` from a weights file (by name; every parameter present with its
/// shape, every value finite), and the names of the file's tensors the model does not use
/// (a checkpoint also holds optimizer state).
pub fn load_weights(g: &Graph, path: &Path) -> Result<(Vec<Tensor>, Vec<String>), IoError> {
    let mut tensors = load_tensors(path)?;
    let mut params = Vec::with_capacity(g.params.len());
    let mut missing = Vec::new();
    let bad = |name: &str, problem: String| {
        IoError::new(
            path,
            IoErrorKind::Tensor {
                name: name.to_string(),
                problem,
            },
        )
    };
    for p in &g.params {
        match tensors.iter().position(|t| t.name == p.name) {
            Some(i) => {
                let t = tensors.swap_remove(i);
                if t.tensor.shape != p.shape || t.tensor.dtype != DType::F32 {
                    return Err(bad(
                        &p.name,
                        format!("is {} but the model needs {}", t.stored_type(), p.ty()),
                    ));
                }
                if let Some(k) = t.tensor.data.iter().position(|v| !v.is_finite()) {
                    return Err(bad(
                        &p.name,
                        format!(
                            "holds {} at {:?}; weights must be finite numbers",
                            t.tensor.data[k],
                            unravel(k, &t.tensor.shape)
                        ),
                    ));
                }
                params.push(t.tensor);
            }
            None => missing.push(p.name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(IoError::new(path, IoErrorKind::Missing(missing)));
    }
    let mut extra: Vec<String> = tensors.into_iter().map(|t| t.name).collect();
    extra.sort();
    Ok((params, extra))
}

/// The multi-index of flat element `k` of a row-major tensor.
pub fn unravel(mut k: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = k % d;
            k /= d;
        }
    }
    idx
}
