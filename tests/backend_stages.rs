//! Snapshots of the back-end stages of every example, run small: the kernel program, the
//! arena plan, and the Cranelift IR (with one layer per stack, as identical layers compile to
//! the same functions anyway). The CLIF text is generated for a fixed x86-64 target with
//! fixed flags, so it does not depend on the machine running the tests.

mod common;

use lamina::driver::{compile_source, Stage};

fn stage_small(path: &std::path::Path, stage: Stage) -> String {
    let src = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    let small = common::small_overrides(&src);
    let mut one_layer = small.clone();
    for o in one_layer.iter_mut().filter(|o| o.name == "layers") {
        o.value = 1.0;
    }
    // A model that needs several layers (a local learning rule) keeps the small default.
    let compiled = match stage {
        Stage::Clif => {
            compile_source(&src, &name, &one_layer).or_else(|_| compile_source(&src, &name, &small))
        }
        _ => compile_source(&src, &name, &small),
    }
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
    insta::glob!("../examples", "*.lam", |path| {
        insta::assert_snapshot!(stage_small(path, Stage::Clif));
    });
}

#[test]
fn backend_text_is_deterministic() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/macaron.lam");
    for stage in [Stage::Kernels, Stage::Plan, Stage::Clif] {
        assert_eq!(stage_small(&path, stage), stage_small(&path, stage));
    }
}
