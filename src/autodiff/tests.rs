//! Structural tests of the joint graph; numeric gradient checks are in tests/gradcheck.rs.

use super::{differentiate, joint};
use crate::interp::{run, Env};
use crate::ir::ops::MaskFill;
use crate::ir::{BinaryOp, UnaryOp};
use crate::ir::{Graph, GraphBuilder, Init, Op, Phase, Type};
use crate::tensor::Tensor;

/// A two-block model: scoped linear + gelu + attention-like softmax, one frozen lift.
fn model() -> Graph {
    let mut b = GraphBuilder::new("m");
    let x = b.input("x", Type::f32(vec![2, 3, 4]));
    let ids = b.input("ids", Type::i32(vec![2, 3]));
    let emb = b
        .param("embed.weight", vec![5, 4], Init::Zeros, true)
        .unwrap();
    let e = b.push(Op::Gather, &[emb, ids]).unwrap();
    let mut h = b.add(x, e).unwrap();
    b.set_scope("lift");
    let lift = b
        .param("lift.weight", vec![4, 4], Init::Zeros, false)
        .unwrap();
    h = b.linear(h, lift, None).unwrap();
    for i in 0..2 {
        b.set_scope(format!("blocks.{i}.attn"));
        let w = b
            .param(format!("blocks.{i}.attn.w"), vec![4, 4], Init::Zeros, true)
            .unwrap();
        let q = b.linear(h, w, None).unwrap();
        let s = b.matmul(q, h, false, true).unwrap();
        let s = b
            .push(
                Op::CausalMask {
                    fill: MaskFill::NegInf,
                },
                &[s],
            )
            .unwrap();
        let p = b.unary(Op::Softmax, s).unwrap();
        let a = b.matmul(p, h, false, false).unwrap();
        h = b.add(h, a).unwrap();
        b.set_scope(format!("blocks.{i}.ffn"));
        let g = b.unary(Op::Unary(UnaryOp::Gelu), h).unwrap();
        h = b.add(h, g).unwrap();
    }
    b.set_scope("");
    let loss = b.reduce_sum(h, vec![0, 1, 2], false).unwrap();
    b.output("loss", loss);
    b.output("hidden", h);
    b.finish()
}

#[test]
fn joint_graph_layout() {
    let f = model();
    let g = differentiate(&f).unwrap();
    assert_eq!(
        g.nodes[..f.nodes.len()],
        f.nodes[..],
        "forward nodes are kept as they are"
    );
    assert!(g.nodes[f.nodes.len()..]
        .iter()
        .all(|n| n.phase == Phase::Backward));
    let names: Vec<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "loss",
            "hidden",
            "grad.embed.weight",
            "grad.blocks.0.attn.w",
            "grad.blocks.1.attn.w"
        ]
    );
    // Saved values are forward values, sorted and distinct.
    assert!(!g.saved.is_empty());
    assert!(g.saved.windows(2).all(|w| w[0] < w[1]));
    assert!(g.saved.iter().all(|v| v.index() < f.nodes.len()));
    let read: std::collections::BTreeSet<_> = g.nodes[f.nodes.len()..]
        .iter()
        .flat_map(|n| n.args.iter().copied())
        .filter(|a| a.index() < f.nodes.len())
        .collect();
    assert_eq!(g.saved, read.into_iter().collect::<Vec<_>>());
    // Backward nodes keep the forward scope.
    for scope in [
        "blocks.0.attn",
        "blocks.1.attn",
        "blocks.0.ffn",
        "blocks.1.ffn",
    ] {
        assert!(
            g.nodes
                .iter()
                .any(|n| n.phase == Phase::Backward && n.scope == scope),
            "{scope}"
        );
    }
    // The gradient passes through the frozen lift (to the embedding) but no node computes
    // the lift's own [4, 4] gradient.
    let in_lift = |n: &&crate::ir::Node| n.phase == Phase::Backward && n.scope == "lift";
    assert!(g
        .nodes
        .iter()
        .filter(in_lift)
        .all(|n| n.ty.shape != vec![4, 4]));
    assert!(g.nodes.iter().filter(in_lift).count() > 0);
    assert!(g
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::ScatterAdd { rows: 5 })));
    assert!(g
        .nodes
        .iter()
        .any(|n| n.op == Op::Binary(BinaryOp::GeluGrad)));
    assert!(g.nodes.iter().any(|n| n.op
        == Op::CausalMask {
            fill: MaskFill::Zero
        }));
}

#[test]
fn rules_emit_no_unused_nodes() {
    let f = model();
    let unpruned = joint(&f, false).unwrap();
    let pruned = differentiate(&f).unwrap();
    assert_eq!(unpruned.nodes.len(), pruned.nodes.len());
}

#[test]
fn seed_and_joint_graph_evaluate() {
    let f = model();
    let g = differentiate(&f).unwrap();
    let seeds = g
        .nodes
        .iter()
        .filter(|n| {
            n.op == Op::Full {
                value: crate::ir::F64(1.0),
                shape: vec![],
            }
        })
        .count();
    assert_eq!(seeds, 1);
    let x = Tensor::f32(
        vec![2, 3, 4],
        (0..24).map(|i| (i as f64 * 0.37).sin()).collect(),
    );
    let ids = Tensor::i32(vec![2, 3], vec![0.0, 4.0, 4.0, 1.0, 2.0, 0.0]);
    let params: Vec<Tensor> = f
        .params
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let n = p.shape.iter().product::<usize>();
            let data = (0..n)
                .map(|i| ((i + 3 * k) as f64 * 0.61).cos() * 0.5)
                .collect();
            Tensor::f32(p.shape.clone(), data)
        })
        .collect();
    let inputs = [x, ids];
    let out = run(
        &g,
        &Env {
            inputs: &inputs,
            params: &params,
        },
    )
    .unwrap();
    let fwd = run(
        &f,
        &Env {
            inputs: &inputs,
            params: &params,
        },
    )
    .unwrap();
    assert_eq!(out[0], fwd[0], "the joint graph computes the same loss");
    for (name, t) in &out[2..] {
        assert!(t.data.iter().all(|v| v.is_finite()), "{name}");
        assert!(t.data.iter().any(|v| *v != 0.0), "{name}");
    }
}

#[test]
fn missing_or_non_scalar_loss_is_an_error() {
    let mut b = GraphBuilder::new("m");
    let w = b.param("w", vec![3], Init::Zeros, true).unwrap();
    b.output("out", w);
    let g = b.finish();
    assert!(differentiate(&g)
        .unwrap_err()
        .to_string()
        .contains("no `loss`"));
    let mut g2 = g.clone();
    g2.outputs[0].name = "loss".into();
    assert!(differentiate(&g2)
        .unwrap_err()
        .to_string()
        .contains("scalar"));
}

#[test]
fn gradient_into_a_derivative_op_is_an_error() {
    let mut b = GraphBuilder::new("m");
    let w = b.param("w", vec![3], Init::Zeros, true).unwrap();
    let d = b.full(1.0, vec![3]).unwrap();
    let r = b.push(Op::Binary(BinaryOp::ReluGrad), &[w, d]).unwrap();
    let loss = b.reduce_sum(r, vec![0], false).unwrap();
    b.output("loss", loss);
    let err = differentiate(&b.finish()).unwrap_err().to_string();
    assert!(err.contains("relu_grad"), "{err}");
}

#[test]
fn malformed_graph_is_an_error_not_a_panic() {
    let mut b = GraphBuilder::new("m");
    let w = b.param("w", vec![3], Init::Zeros, true).unwrap();
    let loss = b.reduce_sum(w, vec![0], false).unwrap();
    b.output("loss", loss);
    let mut g = b.finish();
    g.nodes[1].args[0] = crate::ir::ValueId(5);
    assert!(differentiate(&g).is_err());
    let mut g2 = model();
    g2.outputs[0].value = crate::ir::ValueId(10_000);
    assert!(differentiate(&g2).is_err());
}

#[test]
fn unrelated_and_frozen_params() {
    let mut b = GraphBuilder::new("m");
    let w = b.param("w", vec![3], Init::Zeros, true).unwrap();
    let unused = b.param("unused", vec![2], Init::Zeros, true).unwrap();
    let frozen = b.param("frozen", vec![3], Init::Zeros, false).unwrap();
    let _ = b.unary(Op::Unary(UnaryOp::Exp), unused).unwrap();
    let y = b.mul(w, frozen).unwrap();
    let loss = b.reduce_sum(y, vec![0], false).unwrap();
    b.output("loss", loss);
    let f = b.finish();
    let g = differentiate(&f).unwrap();
    let names: Vec<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["loss", "grad.w", "grad.unused"]);
    // The unused parameter's gradient is a zero constant; w's is dy * frozen.
    let gu = g.node(g.output("grad.unused").unwrap());
    assert_eq!(
        gu.op,
        Op::Full {
            value: crate::ir::F64(0.0),
            shape: vec![2]
        }
    );
    let backward: Vec<&str> = g.nodes[f.nodes.len()..]
        .iter()
        .map(|n| n.op.name())
        .collect();
    assert_eq!(backward, ["full", "reshape", "broadcast", "mul", "full"]);
}

#[test]
fn constant_loss_has_zero_gradients() {
    let mut b = GraphBuilder::new("m");
    let _w = b.param("w", vec![3], Init::Zeros, true).unwrap();
    let loss = b.full(2.0, vec![]).unwrap();
    b.output("loss", loss);
    let f = b.finish();
    let g = differentiate(&f).unwrap();
    assert_eq!(g.nodes.len(), f.nodes.len() + 1);
    assert!(g.saved.is_empty());
}

/// `loss = sum(w2 * sg(w1 * x)) + sum(w1 * x)`: two groups, each with its own loss, the
/// second reading the first through a `stop_gradient`.
fn stopped_groups() -> Graph {
    let mut b = GraphBuilder::new("stopped");
    let x = b.input("x", Type::f32(vec![3, 4]));
    b.set_scope("g0");
    let w1 = b.param("w1", vec![3, 4], Init::Zeros, true).unwrap();
    let h = b.mul(w1, x).unwrap();
    let l0 = b.reduce_sum(h, vec![0, 1], false).unwrap();
    b.set_scope("g1");
    let hs = b.unary(Op::Unary(UnaryOp::StopGradient), h).unwrap();
    let w2 = b.param("w2", vec![3, 4], Init::Zeros, true).unwrap();
    let y = b.mul(w2, hs).unwrap();
    let l1 = b.reduce_sum(y, vec![0, 1], false).unwrap();
    b.set_scope("");
    let loss = b.add(l0, l1).unwrap();
    b.output("loss", loss);
    b.finish()
}

#[test]
fn nothing_flows_through_a_stop_gradient() {
    let f = stopped_groups();
    let g = differentiate(&f).unwrap();
    // The stopped value gets no gradient: no backward node reads the product's gradient
    // through `stop_gradient`, so w1's gradient is x alone (from its own group's loss).
    let x = Tensor::f32(vec![3, 4], (0..12).map(|i| i as f64 - 5.0).collect());
    let w = Tensor::f32(vec![3, 4], (0..12).map(|i| 0.5 * i as f64).collect());
    let out = run(
        &g,
        &Env {
            inputs: std::slice::from_ref(&x),
            params: &[w.clone(), w.clone()],
        },
    )
    .unwrap();
    let grad = |name: &str| {
        out.iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.data.clone())
            .unwrap()
    };
    assert_eq!(
        grad("grad.w1"),
        x.data,
        "only the first group's loss reaches w1"
    );
    let hx: Vec<f64> = w.data.iter().zip(&x.data).map(|(a, b)| a * b).collect();
    assert_eq!(grad("grad.w2"), hx);
    // The first group's backward pass runs before the second group's forward pass.
    let first_g1 = g.nodes.iter().position(|n| n.scope == "g1").unwrap();
    let last_g0_backward = g
        .nodes
        .iter()
        .rposition(|n| n.phase == Phase::Backward && n.scope == "g0")
        .unwrap();
    assert!(
        last_g0_backward < first_g1,
        "group 0's backward ends at {last_g0_backward}, group 1 starts at {first_g1}"
    );
    assert!(g.verify().is_ok());
}

/// `loss = sum(x * topk_mask[k=2](x))`: the mask is piecewise constant, so the gradient
/// flows through the product's other operand only, and no backward node computes a
/// gradient for the mask.
#[test]
fn topk_mask_passes_no_gradient() {
    let mut b = GraphBuilder::new("router");
    let x = b.param("x", vec![2, 4], Init::Zeros, true).unwrap();
    let mask = b.push(Op::TopKMask { k: 2 }, &[x]).unwrap();
    let kept = b.mul(x, mask).unwrap();
    let loss = b.reduce_sum(kept, vec![0, 1], false).unwrap();
    b.output("loss", loss);
    let f = b.finish();
    let unpruned = joint(&f, false).unwrap();
    let g = differentiate(&f).unwrap();
    assert_eq!(
        unpruned.nodes.len(),
        g.nodes.len(),
        "no unused backward nodes"
    );
    let xv = Tensor::f32(vec![2, 4], vec![0.5, -1.0, 2.0, 0.5, 3.0, 3.0, 3.0, -2.0]);
    let out = run(
        &g,
        &Env {
            inputs: &[],
            params: std::slice::from_ref(&xv),
        },
    )
    .unwrap();
    let grad = out.iter().find(|(n, _)| n == "grad.x").unwrap();
    // Row 0: 2.0, then the first of the tied 0.5s; row 1: the first two of the tied 3.0s.
    assert_eq!(grad.1.data, vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
}
