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
