//! Unit tests of the pass driver; the passes' effects are tested as text in tests/passes.rs.

use super::*;
use crate::ir::text;
use crate::ir::{GraphBuilder, Type};

fn small() -> Graph {
    let mut b = GraphBuilder::new("t");
    let x = b.input("x", Type::f32([2, 3]));
    let one = b.full(1.0, vec![2, 3]).unwrap();
    let y = b.mul(x, one).unwrap();
    let nan = b.full(f64::NAN, vec![2, 3]).unwrap();
    let z = b.add(y, nan).unwrap();
    b.output("z", z);
    b.finish()
}

#[test]
fn unknown_pass_is_an_error() {
    let err = run_pass("fuse", &small()).unwrap_err().to_string();
    assert!(err.contains("unknown pass"), "{err}");
}

#[test]
fn invalid_graph_is_an_error_not_a_panic() {
    let mut g = small();
    g.nodes[2].args[0] = ValueId(9);
    for p in PASSES {
        assert!(run_pass(p, &g).is_err(), "{p}");
    }
    assert_eq!(text::print(&optimize(&g)), text::print(&g));
}

#[test]
fn optimize_terminates_with_nan_constants() {
    let g = optimize(&small());
    assert_eq!(g.nodes.len(), 2, "{}", text::print(&g));
    assert_eq!(text::print(&optimize(&g)), text::print(&g));
}

/// A pass that reports no change gives back its input exactly: `optimize` stops at the
/// first full cycle of such passes without comparing graphs. Checked on every pass case
/// file, through several rounds of the pipeline.
#[test]
fn passes_that_report_no_change_return_their_input() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/passes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ir"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut spare = Vec::new();
    let mut reported = 0;
    for path in files {
        let mut g = text::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for _ in 0..3 {
            for p in PASSES {
                let before = g.clone();
                let swept = pass_named(p).unwrap()(g, &mut spare).unwrap();
                if !swept.changed {
                    assert_eq!(swept.graph.nodes, before.nodes, "{}: {p}", path.display());
                    assert_eq!(
                        swept.graph.outputs,
                        before.outputs,
                        "{}: {p}",
                        path.display()
                    );
                } else {
                    reported += 1;
                }
                g = swept.graph;
            }
        }
    }
    assert!(reported > 0, "no pass changed anything");
}

/// A graph whose saved value sits after many nodes that die: every pass keeps `saved`
/// within the graph (a stale index once made the next pass index out of bounds).
#[test]
fn saved_values_follow_the_nodes_that_die() {
    let mut b = GraphBuilder::new("t");
    let x = b.input("x", Type::f32([2, 3]));
    let mut dead = x;
    for _ in 0..20 {
        dead = b.unary(Op::Unary(crate::ir::UnaryOp::Exp), dead).unwrap();
    }
    let kept = b.mul(x, x).unwrap();
    b.set_phase(Phase::Backward);
    let y = b.add(kept, x).unwrap();
    b.output("y", y);
    let mut g = b.finish();
    g.saved = vec![dead, kept];
    let opt = try_optimize(&g).expect("the passes keep saved values valid");
    assert!(opt.verify().is_ok());
    assert!(opt.saved.iter().all(|s| s.index() < opt.nodes.len()));
}
