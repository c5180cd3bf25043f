//! Host buffers whose size comes from the model or from files are allocated fallibly: a model
//! within the documented limits that does not fit the machine ends with an error that says how
//! much was asked for and what to change, never with an abort. The binary runs under an
//! address-space limit (`ulimit -v` in a child shell), so the allocator refuses for certain.

use lamina::interp;
use lamina::ir::{Op, F64};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Run `lamina ARGS` with its address space limited to `kib` KiB.
fn lamina_limited(kib: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_lamina"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("sh runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-alloc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Exit code 1 (an error, not SIGABRT's 134 or a signal) and the message on stderr.
fn refused(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        !err.contains("memory allocation of"),
        "the allocator's abort message: {err}"
    );
    err
}

/// 2^26 embedding weights: 512 MiB as host f64, within the parameter limit of 2^28.
const WIDE_EMBEDDING: &str = "
input tokens(batch = 1, length = 2, vocab = 65536)
embed(dim = 1024)
block layer {
    ffn = ffn(hidden = 1)
}
stack layer * 1
";

#[test]
fn init_refuses_parameters_the_address_space_cannot_hold() {
    let dir = scratch("init");
    let model = write(&dir, "wide.lam", WIDE_EMBEDDING);
    let out_file = dir.join("w.safetensors");
    let out = lamina_limited(
        256 << 10,
        &[
            "init",
            model.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ],
    );
    let err = refused(&out);
    assert!(
        err.contains("cannot allocate 512.0 MiB for parameter embed.weight (67108864 elements)"),
        "{err}"
    );
    assert!(err.contains("reduce the model with --set"), "{err}");
    assert!(!out_file.exists());
}

/// Attention scores of 16384 x 16384: 2^28 elements (the tensor limit), 2 GiB as host f64.
const LONG_CONTEXT: &str = "
input tokens(batch = 1, length = 16384, vocab = 2)
embed(dim = 2)
block layer {
    attn = attention(heads = 1)
}
stack layer * 1
";

#[test]
fn the_interpreter_refuses_a_value_the_address_space_cannot_hold() {
    let dir = scratch("interp");
    let model = write(&dir, "long.lam", LONG_CONTEXT);
    let out = lamina_limited(
        1 << 20,
        &["run", model.to_str().unwrap(), "--backend", "interp"],
    );
    let err = refused(&out);
    assert!(err.contains("cannot allocate 2.0 GiB for node %"), "{err}");
    assert!(err.contains("f32[1, 1, 16384, 16384]"), "{err}");
}

#[test]
fn the_jit_refuses_a_step_the_address_space_cannot_hold() {
    let dir = scratch("jit");
    let model = write(&dir, "long.lam", LONG_CONTEXT);
    let out = lamina_limited(1 << 20, &["run", model.to_str().unwrap()]);
    let err = refused(&out);
    assert!(err.contains("RLIMIT_AS"), "{err}");
}

/// In process, without a limit: a value of 2^61 f64 is more than any address space holds, so
/// reserving it fails whatever the host (the IR's text form would refuse the shape earlier).
#[test]
fn an_impossible_value_is_a_typed_interpreter_error() {
    let full = Op::Full {
        value: F64(0.5),
        shape: vec![1 << 61],
    };
    let e = interp::apply(&full, &[]).unwrap_err();
    let alloc = e.alloc.as_ref().expect("an allocation error");
    assert_eq!(alloc.bytes, 1 << 64);
    assert_eq!(e.op, "full");
    assert!(
        e.detail.starts_with(
            "cannot allocate 16777216.0 TiB for the result of full (f32[2305843009213693952])"
        ),
        "{}",
        e.detail
    );
}
