//! SIGINT and SIGTERM during training: the first asks the run to save a checkpoint and
//! stop (and `compare` to train no further model); a second one exits at once. The
//! handlers are installed first thing in `main`, so a signal that arrives while the model
//! is still compiling is not lost; for commands that do not train they are removed again
//! right after the command line is parsed (and a signal caught meanwhile is re-raised).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The signal that asked the run to stop; 0 when none did.
static STOP: AtomicI32 = AtomicI32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic exchange and `_exit`.
    if STOP
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // SAFETY: `_exit` is async-signal-safe and ends the process at once.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Catch SIGINT and SIGTERM from now on.
pub fn install() {
    #[cfg(unix)]
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only touches an atomic and calls `_exit`.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    INSTALLED.store(true, Ordering::SeqCst);
}

/// Give SIGINT and SIGTERM their default effect again (the command does not train); a
/// signal caught since `install` takes effect now.
pub fn uninstall() {
    if !INSTALLED.swap(false, Ordering::SeqCst) {
        return;
    }
    #[cfg(unix)]
    {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: restores the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        let pending = STOP.swap(0, Ordering::SeqCst);
        if pending != 0 {
            // SAFETY: raising a signal whose default action ends the process.
            unsafe { libc::raise(pending) };
        }
    }
}

/// The signal that asked to stop, if one did.
pub fn requested() -> Option<i32> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The exit code of a run stopped by `signal`: 128 + its number (130 for SIGINT, 143 for
/// SIGTERM), as shells report it.
pub fn exit_code(signal: Option<i32>) -> i32 {
    128 + signal.unwrap_or(SIGINT)
}
