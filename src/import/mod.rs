//! `lamina import`: pretrained checkpoints of other frameworks as lamina models.
//!
//! `gpt2` reads a Hugging Face GPT-2 checkpoint (safetensors, with its `config.json` when
//! it sits beside it), checks every tensor's name and shape, and produces a model file and
//! a weights file in lamina's parameter names and PyTorch layouts; the model file is
//! compiled here, before anything is written, and the weights follow its parameter list.
//! `bpe` is GPT-2's byte-level BPE tokenizer, for prompts and output text of
//! `lamina sample`.
//!
//! This module reads files and writes a model: it comes after `front` (which compiles the
//! model it writes) and knows nothing of training or the back end.

pub mod bpe;
pub mod gpt2;

use crate::front::CompileError;
use crate::io::IoError;
use crate::tensor::AllocError;
use std::path::{Path, PathBuf};

/// The largest `vocab.json` or `merges.txt` read: 64 MiB (GPT-2's are 1 MiB and 456 KiB).
const MAX_TOKENIZER_FILE: u64 = 64 << 20;

/// The tokenizer in `dir` (`vocab.json` and `merges.txt`).
pub fn load_tokenizer(dir: &Path) -> Result<bpe::Bpe, ImportError> {
    Ok(read_tokenizer(dir)?.0)
}

/// The tokenizer in `dir` and the bytes of its two files.
fn read_tokenizer(dir: &Path) -> Result<(bpe::Bpe, Vec<u8>, Vec<u8>), ImportError> {
    let (vp, mp) = (dir.join("vocab.json"), dir.join("merges.txt"));
    let vocab = crate::io::read_file(&vp, Some(MAX_TOKENIZER_FILE))?;
    let merges = crate::io::read_file(&mp, Some(MAX_TOKENIZER_FILE))?;
    let text = |p: &Path, b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| ImportError::Tokenizer {
                path: p.to_path_buf(),
                message: "not UTF-8".into(),
            })
    };
    let bpe =
        bpe::Bpe::from_texts(&text(&vp, &vocab)?, &text(&mp, &merges)?).map_err(|message| {
            ImportError::Tokenizer {
                path: dir.to_path_buf(),
                message,
            }
        })?;
    Ok((bpe, vocab, merges))
}

/// Why an import failed. Nothing has been written when it is returned.
#[derive(Debug)]
pub enum ImportError {
    /// A file could not be read or written.
    Io(IoError),
    /// `config.json` is malformed, or describes a model lamina does not express.
    Config { path: PathBuf, message: String },
    /// A tensor of the checkpoint is not what the model needs (shape, dtype, values).
    Tensor {
        path: PathBuf,
        name: String,
        problem: String,
    },
    /// Tensors the model needs that the checkpoint lacks.
    Missing {
        path: PathBuf,
        model: String,
        names: Vec<String>,
    },
    /// Tensors of the checkpoint that are no part of the model.
    Unexpected {
        path: PathBuf,
        model: String,
        names: Vec<String>,
    },
    /// A command-line option that does not fit the checkpoint.
    Option {
        option: &'static str,
        message: String,
    },
    /// `vocab.json` or `merges.txt` beside the checkpoint is malformed or does not fit.
    Tokenizer { path: PathBuf, message: String },
    /// The model file written for the checkpoint does not compile (a limit of the language).
    Model(CompileError),
    /// The allocator refused a buffer.
    Alloc(AllocError),
    /// The converted weights do not match the model's parameters: a bug of the importer.
    Internal(String),
}

impl From<IoError> for ImportError {
    fn from(e: IoError) -> ImportError {
        ImportError::Io(e)
    }
}

impl From<AllocError> for ImportError {
    fn from(e: AllocError) -> ImportError {
        ImportError::Alloc(e)
    }
}

/// Up to five names, then `...`.
fn some_names(names: &[String]) -> String {
    let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        format!("{shown}, ... ({} in all)", names.len())
    } else {
        shown
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Io(e) => write!(f, "{e}"),
            ImportError::Config { path, message } => write!(f, "{}: {message}", path.display()),
            ImportError::Tensor {
                path,
                name,
                problem,
            } => write!(f, "{}: tensor `{name}` {problem}", path.display()),
            ImportError::Missing { path, model, names } => write!(
                f,
                "{} lacks {} tensor(s) of {model}: {}",
                path.display(),
                names.len(),
                some_names(names)
            ),
            ImportError::Unexpected { path, model, names } => write!(
                f,
                "{} holds {} tensor(s) that are no part of {model}: {}",
                path.display(),
                names.len(),
                some_names(names)
            ),
            ImportError::Option { option, message } => write!(f, "{option}: {message}"),
            ImportError::Tokenizer { path, message } => write!(f, "{}: {message}", path.display()),
            ImportError::Model(e) => write!(
                f,
                "the model written for this checkpoint does not compile:\n{}",
                e.render(false)
            ),
            ImportError::Alloc(e) => write!(f, "{e}"),
            ImportError::Internal(m) => write!(f, "internal error in the importer: {m}"),
        }
    }
}

impl std::error::Error for ImportError {}
