//! Every example at every stage: snapshot tests of the AST, the forward IR, the joint
//! gradient IR, the optimized joint IR, the training step and the diagram (DOT), plus the IR's text
//! and JSON round trips.

use lamina::driver::{compile_file, Stage};
use lamina::ir::text;

fn compile(path: &std::path::Path) -> lamina::driver::Compiled {
    compile_file(path, &[]).unwrap_or_else(|e| panic!("{} does not compile:\n{e}", path.display()))
}

#[test]
fn ast() {
    insta::glob!("../examples", "*.lam", |path| {
        insta::assert_snapshot!(compile(path).stage_text(Stage::Ast).unwrap());
    });
}

#[test]
fn ir() {
    insta::glob!("../examples", "*.lam", |path| {
        insta::assert_snapshot!(compile(path).stage_text(Stage::Ir).unwrap());
    });
}

#[test]
fn grad() {
    insta::glob!("../examples", "*.lam", |path| {
        insta::assert_snapshot!(compile(path).stage_text(Stage::Grad).unwrap());
    });
}

#[test]
fn opt() {
    insta::glob!("../examples", "*.lam", |path| {
        insta::assert_snapshot!(compile(path).stage_text(Stage::Opt).unwrap());
    });
}

#[test]
fn step() {
    insta::glob!("../examples", "*.lam", |path| {
        insta::assert_snapshot!(compile(path).stage_text(Stage::Step).unwrap());
    });
}

#[test]
fn ir_text_round_trips() {
    insta::glob!("../examples", "*.lam", |path| {
        let c = compile(path);
        for g in [c.forward.clone(), c.joint().unwrap()] {
            let printed = text::print(&g);
            let parsed = text::parse(&printed).unwrap();
            assert_eq!(text::print(&parsed), printed, "{}", path.display());
            assert_eq!(parsed, g, "{}", path.display());
            let json = text::to_json(&g);
            assert_eq!(text::from_json(&json).unwrap(), g, "{}", path.display());
        }
    });
}

#[test]
fn every_graph_verifies() {
    insta::glob!("../examples", "*.lam", |path| {
        let c = compile(path);
        c.forward.verify().unwrap();
        c.joint().unwrap().verify().unwrap();
    });
}

#[test]
fn diagram() {
    insta::glob!("../examples", "*.lam", |path| {
        let c = compile(path);
        let outline = c.outline().unwrap();
        insta::assert_snapshot!(lamina::diagram::dot(&outline, &c.forward));
    });
}
