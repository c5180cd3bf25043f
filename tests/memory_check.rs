//! The memory check before the arena is allocated: a program whose plan needs more than the
//! budget is refused with an error that says how much it needs, how much there is, which
//! buffers are the largest and what to change; within the budget it compiles.

use lamina::driver::compile_source;
use lamina::kernels::{build_program, BuildOptions, Program};
use lamina::runtime::{memory, plan, Executable, MemoryLimit, RuntimeError};

/// A model inside every documented limit whose training step needs an arena of 110 GB:
/// tokens 64 x 4096, width 1024, 16 FFN-only layers.
const BIG: &str = "
model big
d = 1024
layers = 16
vocab = 256
length = 4096
batch = 64
input tokens(batch = batch, length = length, vocab = vocab)
embed(dim = d)
block layer {
    ffn = ffn(hidden = d)
}
stack layer * layers
";

fn program(src: &str, name: &str) -> Program {
    let c = compile_source(src, name, &[]).unwrap_or_else(|e| panic!("{}", e.render(false)));
    let g = lamina::passes::optimize(&c.step().unwrap());
    build_program(&g, &BuildOptions::default()).unwrap()
}

#[test]
fn a_step_larger_than_the_budget_is_refused() {
    let p = program(BIG, "big.lam");
    let needed = memory::needed_bytes(&p, &plan(&p));
    assert!(needed > 100 << 30, "{needed}");
    let limit = MemoryLimit::fixed(64 << 30, "a test limit");
    let oom = match Executable::from_program_with(p, &limit) {
        Err(RuntimeError::OutOfMemory(oom)) => oom,
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a 110 GB step was compiled within 64 GiB"),
    };
    assert_eq!(oom.needed, needed);
    assert_eq!(oom.budget.bytes, 64 << 30);
    assert_eq!(oom.largest.len(), 3);
    assert!(oom.largest.iter().all(|b| b.bytes == 1 << 30), "{oom:?}");
    let err = oom.to_string();
    assert!(
        err.starts_with("this step needs 10")
            && err.contains(" GiB, 64.0 GiB are available (a test limit)"),
        "{err}"
    );
    // The largest buffers are the FFN activations, 1 GiB each, named with their scope.
    assert!(
        err.contains("; the largest buffers are %")
            && err.contains(" in blocks.")
            && err.contains("(1.0 GiB)"),
        "{err}"
    );
    assert!(
        err.ends_with("; reduce the model with --set (batch, length, d, layers)"),
        "{err}"
    );
}

#[test]
fn a_step_within_the_budget_compiles() {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mlp.lam")).unwrap();
    let p = program(&src, "mlp.lam");
    let needed = memory::needed_bytes(&p, &plan(&p));
    let exact = MemoryLimit::fixed(needed, "exactly enough");
    assert!(Executable::from_program_with(p.clone(), &exact).is_ok());
    let short = MemoryLimit::fixed(needed - 1, "one byte short");
    let err = Executable::from_program_with(p.clone(), &short)
        .err()
        .expect("one byte short is refused")
        .to_string();
    assert!(err.contains("are available (one byte short)"), "{err}");
    // On this host (the default budget), a small model fits.
    assert!(Executable::from_program(p).is_ok());
}

#[test]
fn the_host_budget_is_read() {
    // Linux exposes /proc/meminfo at least; elsewhere there may be no budget at all.
    if std::path::Path::new("/proc/meminfo").exists() {
        let b = memory::host_budget().expect("a budget on Linux");
        assert!(b.bytes > 0, "{b:?}");
    }
}
