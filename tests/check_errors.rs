//! Elaboration diagnostics as snapshots: every `tests/bad/elab_*.lam` must fail to
//! elaborate, and its rendered errors are compared with `tests/snapshots/`.
//! Re-bless with `INSTA_UPDATE=always cargo test --test check_errors`, then read the diff.
//! Also: every example in `examples/` elaborates and its graph verifies.

use std::path::Path;

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string()
}

#[test]
fn bad_models() {
    insta::glob!("bad/elab_*.lam", |path| {
        let src = std::fs::read_to_string(path).expect("readable test file");
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("model.lam");
        // A file that fails to parse, or elaborates cleanly, is a broken test case: fail
        // rather than record it, so no snapshot update can accept it.
        let module = lamina::syntax::parse(&src).unwrap_or_else(|diags| {
            panic!(
                "{name} should exercise elaboration but does not parse:\n{}",
                lamina::diag::render(&diags, name, &src, false)
            )
        });
        let rendered = match lamina::elab::elaborate(&module, &stem(path), &[]) {
            Ok(_) => panic!("{name} elaborated without errors"),
            Err(diags) => lamina::diag::render(&diags, name, &src, false),
        };
        insta::assert_snapshot!(rendered);
    });
}

#[test]
fn examples_elaborate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "lam"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 9,
        "expected the example gallery, found {paths:?}"
    );
    for path in paths {
        let src = std::fs::read_to_string(&path).expect("readable example");
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("model.lam");
        let module = lamina::syntax::parse(&src)
            .unwrap_or_else(|d| panic!("{}", lamina::diag::render(&d, name, &src, false)));
        let graph = lamina::elab::elaborate(&module, &stem(&path), &[])
            .unwrap_or_else(|d| panic!("{}", lamina::diag::render(&d, name, &src, false)));
        graph.verify().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            graph.output("loss").is_some() && graph.output("logits").is_some(),
            "{name}"
        );
        assert_eq!(
            graph.ty(graph.output("loss").unwrap()).shape,
            Vec::<usize>::new(),
            "{name}"
        );
    }
}

/// Training recipes that do not fit their model or are misspelled: every
/// `tests/bad/train_*.lam` parses and elaborates, and its recipe fails with located errors.
#[test]
fn bad_recipes() {
    insta::glob!("bad/train_*.lam", |path| {
        let src = std::fs::read_to_string(path).expect("readable test file");
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("model.lam");
        let compiled = lamina::front::compile_source(&src, name, &[])
            .unwrap_or_else(|e| panic!("{name} should compile: {}", e.render(false)));
        let opts = lamina::train::TrainOptions::default();
        let rendered = match lamina::train::resolve_config(&compiled, name, &src, &opts) {
            Ok(_) => panic!("{name}: the recipe was accepted"),
            Err(e) => e.to_string(),
        };
        insta::assert_snapshot!(rendered);
    });
}
