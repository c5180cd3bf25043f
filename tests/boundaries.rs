//! Stage boundaries, checked over the source: a module imports only modules of earlier
//! stages (the order below, which ARCHITECTURE.md explains), only the CLI knows clap, and
//! the back end (kernels, jit, runtime) knows neither optimizers nor output names.

use std::path::{Path, PathBuf};

/// Every top-level module of the library, in pipeline order: each may import only the
/// modules before it.
const ORDER: &[&str] = &[
    "diag",
    "ir",
    "syntax",
    "tensor",
    "interp",
    "io",
    "elab",
    "autodiff",
    "passes",
    "kernels",
    "jit",
    "runtime",
    "front",
    "import",
    "transform",
    "train",
    "export",
    "bench",
    "driver",
    "analysis",
    "diagram",
    "serve",
    "cli",
];

/// Modules outside the order: the crate root and the binary's entry point.
const ROOTS: &[&str] = &["lib", "main"];

/// Words a back-end file must not contain: optimizers belong to `train`, and output
/// roles are asked of `ir::OutputRole`, never read from names.
const BACK_END: &[&str] = &["kernels", "jit", "runtime"];
const BACK_END_WORDS: &[&str] = &[
    "sgd",
    "adam",
    "lamb",
    "momentum",
    "\"loss\"",
    "\"logits\"",
    "\"grad.",
    "\"new.",
];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|m| *m == module)
}

/// The top-level module a source file belongs to (`src/train/exec.rs` -> `train`).
fn module_of(path: &Path, src_dir: &Path) -> String {
    let rel = path.strip_prefix(src_dir).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// Every `crate::<module>` a text names, with its line number (comments included: a doc
/// link to a later stage is a dependency of the reader too).
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((i + 1, name));
        }
    }
    out
}

/// What is wrong with a file of `module` whose text is `text`.
fn violations(module: &str, text: &str) -> Vec<String> {
    let mut out = vec![];
    let own = match rank(module) {
        Some(r) => r,
        None if ROOTS.contains(&module) => usize::MAX,
        None => return vec![format!("module `{module}` is not in the stage order")],
    };
    for (line, used) in crate_refs(text) {
        match rank(&used) {
            Some(r) if r >= own && used != module => out.push(format!(
                "line {line}: `{module}` uses `crate::{used}`, a later stage"
            )),
            None if !ROOTS.contains(&used.as_str()) => out.push(format!(
                "line {line}: `crate::{used}` is not a module in the stage order"
            )),
            _ => {}
        }
    }
    if module != "cli" && !ROOTS.contains(&module) {
        for (i, l) in text.lines().enumerate() {
            if l.contains("clap::") || l.contains("use clap") {
                out.push(format!("line {}: only the CLI knows clap", i + 1));
            }
        }
    }
    if BACK_END.contains(&module) {
        for (i, l) in text.lines().enumerate() {
            let lower = l.to_lowercase();
            for w in BACK_END_WORDS {
                if lower.contains(w) {
                    out.push(format!("line {}: the back end mentions {w}", i + 1));
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_a_later_stage() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    files.sort();
    let mut all = vec![];
    for f in &files {
        let module = module_of(f, &src);
        let text = std::fs::read_to_string(f).unwrap();
        for v in violations(&module, &text) {
            all.push(format!("{}: {v}", f.display()));
        }
    }
    assert!(
        all.is_empty(),
        "stage boundaries crossed:\n{}",
        all.join("\n")
    );
    // Every module of the crate root is in the order.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for l in lib.lines() {
        if let Some(m) = l.strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(rank(m).is_some(), "module `{m}` is not in the stage order");
        }
    }
}

#[test]
fn the_check_catches_a_crossing() {
    assert_eq!(violations("train", "use crate::cli::Backend;").len(), 1);
    assert_eq!(
        violations("ir", "fn f() { crate::passes::optimize(g) }").len(),
        1
    );
    assert_eq!(violations("driver", "#[derive(clap::ValueEnum)]").len(), 1);
    assert_eq!(violations("kernels", "if o.name == \"loss\" {").len(), 1);
    assert_eq!(violations("runtime", "// the SGD update").len(), 1);
    assert!(violations("train", "use crate::runtime::compile_graph;").is_empty());
    assert!(violations("cli", "use clap::Parser; use crate::driver;").is_empty());
}
