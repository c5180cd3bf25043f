//! The served directory: relative paths from requests resolved inside it or refused.

use std::path::{Component, Path, PathBuf};

/// The directory the explorer serves, canonical, so that every resolved path can be
/// checked to lie inside it (symbolic links included).
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
}

/// Directories the file list does not enter.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", "runs"];
/// Depth and count limits of the file list, so a huge tree cannot stall a request.
const MAX_DEPTH: usize = 4;
const MAX_FILES: usize = 2000;

/// Why a path from a request was refused: the status and the message.
pub type Refusal = (u16, String);

impl Root {
    pub fn new(dir: &Path) -> Result<Root, String> {
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("cannot serve {}: {e}", dir.display()))?;
        if !dir.is_dir() {
            return Err(format!("cannot serve {}: not a directory", dir.display()));
        }
        Ok(Root { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The existing file `rel` names inside the root, with extension `ext`.
    pub fn file(&self, rel: &str, ext: &str) -> Result<PathBuf, Refusal> {
        let path = self.inside(rel)?;
        if path.extension().and_then(|e| e.to_str()) != Some(ext) {
            return Err((400, format!("`{rel}` is not a .{ext} file")));
        }
        if !path.is_file() {
            return Err((404, format!("no file `{rel}` in the served directory")));
        }
        Ok(path)
    }

    /// `rel` joined to the root after checking that it can only name something inside:
    /// relative, no `..`, and (once it exists) no link that leads out.
    pub fn inside(&self, rel: &str) -> Result<PathBuf, Refusal> {
        if rel.is_empty() || rel.contains('\0') || rel.contains('\\') {
            return Err((400, format!("`{rel}` is not a relative path")));
        }
        let p = Path::new(rel);
        for c in p.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => {
                    return Err((400, "paths may not contain `..`".to_string()));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err((400, format!("`{rel}` is not a relative path")));
                }
            }
        }
        let joined = self.dir.join(p);
        match joined.canonicalize() {
            Ok(real) if !real.starts_with(&self.dir) => {
                Err((403, format!("`{rel}` leads outside the served directory")))
            }
            Ok(real) => Ok(real),
            Err(_) => Ok(joined),
        }
    }

    /// The model files under the root, as sorted relative paths.
    pub fn models(&self) -> Vec<String> {
        let mut out = vec![];
        self.walk(&self.dir, 0, &mut out);
        out.sort();
        out
    }

    fn walk(&self, dir: &Path, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if out.len() >= MAX_FILES {
                return;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() && depth < MAX_DEPTH {
                if !name.starts_with('.') && !SKIPPED_DIRS.contains(&name.as_str()) {
                    self.walk(&e.path(), depth + 1, out);
                }
            } else if kind.is_file() && name.ends_with(".lam") {
                if let Ok(rel) = e.path().strip_prefix(&self.dir) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
    }

    /// The runs under `runs/` (one or two levels deep) that have a `log.jsonl`, as
    /// relative directory names, newest first.
    pub fn runs(&self) -> Vec<String> {
        let mut found = vec![];
        let runs = self.dir.join("runs");
        for dir in subdirs(&runs) {
            for d in std::iter::once(dir.clone()).chain(subdirs(&dir)) {
                let log = d.join("log.jsonl");
                if let (Ok(meta), Ok(rel)) = (log.metadata(), d.strip_prefix(&self.dir)) {
                    let modified = meta.modified().ok();
                    found.push((modified, rel.to_string_lossy().into_owned()));
                }
            }
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        found.into_iter().map(|(_, r)| r).take(MAX_FILES).collect()
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}
