//! The run directory: one run at a time (an exclusive lock held for the run's life), no
//! silent overwrite of an earlier run, and no temporary files left by killed writers.

use super::error::TrainError;
use crate::io::{IoError, IoErrorKind};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file in a run directory; it holds the pid of the run that holds the lock.
pub const LOCK_FILE: &str = "lock";

/// The files of a run: any of them means the directory already holds one.
pub const RUN_FILES: &[&str] = &[
    "checkpoint.safetensors",
    "log.jsonl",
    "final.safetensors",
    "loss.svg",
];

/// An exclusive lock on a run directory, released when dropped (or when the process ends,
/// however it ends: the operating system releases `flock` locks with the file).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// Take the lock of `dir` (created if needed), or say which process holds it.
pub fn lock(dir: &Path) -> Result<RunLock, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| IoError::new(dir, IoErrorKind::Write(e)))?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| IoError::new(&path, IoErrorKind::Write(e)))?;
    if !try_lock(&file).map_err(|e| IoError::new(&path, IoErrorKind::Write(e)))? {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let who = match holder.trim().parse::<u32>() {
            Ok(pid) => format!("another training run (pid {pid})"),
            Err(_) => "another training run".to_string(),
        };
        return Err(TrainError::RunDir {
            dir: dir.to_path_buf(),
            problem: format!(
                "{who} is using this directory (it holds {}); wait for it to finish, stop \
                 it, or choose another --out",
                path.display()
            ),
        });
    }
    let pid = std::process::id();
    let write = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{pid}")?;
        file.flush()
    };
    write(&mut file).map_err(|e| IoError::new(&path, IoErrorKind::Write(e)))?;
    Ok(RunLock { _file: file, path })
}

#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor this function borrows; no memory is shared.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// The run files `dir` already holds.
pub fn existing_run(dir: &Path) -> Vec<&'static str> {
    RUN_FILES
        .iter()
        .copied()
        .filter(|f| dir.join(f).exists())
        .collect()
}

/// Refuse to start a fresh run over an earlier one unless `force`; with `force`, remove
/// the earlier run's files so none of them is mistaken for this run's.
pub fn claim(dir: &Path, force: bool) -> Result<(), TrainError> {
    let found = existing_run(dir);
    if found.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(TrainError::RunDir {
            dir: dir.to_path_buf(),
            problem: format!(
                "it already holds a run ({}); continue it with --resume {}, start over with \
                 --force, or choose another --out",
                found.join(", "),
                dir.join("checkpoint.safetensors").display()
            ),
        });
    }
    for f in found {
        let p = dir.join(f);
        std::fs::remove_file(&p).map_err(|e| IoError::new(&p, IoErrorKind::Write(e)))?;
    }
    Ok(())
}

/// Remove the temporary files (`.NAME.tmp.PID`) that writers killed mid-write left in
/// `dir`, when their process is gone. Returns the names removed.
pub fn remove_orphans(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = crate::io::orphan_pid(&name) else {
            continue;
        };
        if pid != std::process::id()
            && !process_alive(pid)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}
