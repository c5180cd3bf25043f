//! Snapshots of the back-end stages: the kernel program and the arena plan of every example
//! (run small), and the Cranelift IR of two small models. The CLIF text is generated for a
//! fixed x86-64 target with fixed flags, so it does not depend on the machine running the
//! tests. (The full CLIF of every example is several megabytes of unrolled vector code; the
//! kernel snapshots already show every fusion decision it is generated from.)

mod common;

use lamina::driver::{compile_source, Stage};

fn stage_small(path: &std::path::Path, stage: Stage) -> String {
    let src = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    let compiled = compile_source(&src, &name, &common::small_overrides(&src))
        .unwrap_or_else(|e| panic!("{}", e.render(false)));
    compiled.stage_text(stage).unwrap()
}

#[test]
fn kernels() {
    insta::glob!("../examples", "*.lam", |path| {
        insta::assert_snapshot!(stage_small(path, Stage::Kernels));
    });
}

#[test]
fn plan() {
    insta::glob!("../examples", "*.lam", |path| {
        insta::assert_snapshot!(stage_small(path, Stage::Plan));
    });
}

#[test]
fn clif() {
    for file in ["examples/mlp.lam", "tests/smoke/tiny.lam"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let name = file.replace('/', "__");
        insta::assert_snapshot!(name, stage_small(&path, Stage::Clif));
    }
}

#[test]
fn backend_text_is_deterministic() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/macaron.lam");
    for stage in [Stage::Kernels, Stage::Plan, Stage::Clif] {
        assert_eq!(stage_small(&path, stage), stage_small(&path, stage));
    }
}
