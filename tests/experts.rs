//! The mixture of experts against its equations (docs/language.md, "Mixture of experts")
//! on the reference interpreter, and `lamina convert --ffn-to-moe`.

use lamina::elab::elaborate;
use lamina::interp::{run, Env};
use lamina::ir::Graph;
use lamina::tensor::Tensor;

mod common;
use common::random_env;

fn graph(src: &str) -> Graph {
    let m = lamina::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    elaborate(&m, "test", &[]).unwrap_or_else(|d| panic!("{d:#?}"))
}

fn outputs(g: &Graph, inputs: &[Tensor], params: &[Tensor]) -> Vec<(String, Tensor)> {
    run(g, &Env { inputs, params }).unwrap_or_else(|e| panic!("{e}"))
}

fn output<'a>(outs: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &outs
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no output {name}"))
        .1
}

fn lm(ffn: &str) -> String {
    format!(
        "input tokens(batch = 2, length = 5, vocab = 11)\nembed(dim = 8)\n\
         block layer {{\n    attn = attention(heads = 2)\n    ffn = {ffn}\n}}\nstack layer * 2\n"
    )
}

/// Params of `g` named like those of `from`, taken from `from`'s; the rest (`router`)
/// set to `fill`.
fn carry(from: &Graph, params: &[Tensor], g: &Graph, fill: f64) -> Vec<Tensor> {
    g.params
        .iter()
        .map(
            |p| match from.params.iter().position(|q| q.name == p.name) {
                Some(i) => params[i].clone(),
                None => Tensor::f32(p.shape.clone(), vec![fill; p.shape.iter().product()]),
            },
        )
        .collect()
}

#[test]
fn every_expert_with_equal_gates_is_the_dense_ffn() {
    let dense = graph(&lm("ffn(hidden = 16)"));
    let moe = graph(&lm("moe(experts = 4, top = 4, hidden = 4)"));
    let (inputs, params) = random_env(&dense, 1);
    // A zero router gives every expert probability 1/4: equal gates.
    let mp = carry(&dense, &params, &moe, 0.0);
    let (want, got) = (
        outputs(&dense, &inputs, &params),
        outputs(&moe, &inputs, &mp),
    );
    let (a, b) = (output(&got, "logits"), output(&want, "logits"));
    let err = common::max_rel_err(&a.data, &b.data, 1e-9);
    assert!(err < 1e-12, "logits differ by {err:.3e}");
    // Uniform routing: f_e = P_e = 1/E, so the balance loss is its coefficient, per layer.
    let balance = output(&got, "loss.balance").data[0];
    assert!((balance - 2.0 * 0.01).abs() < 1e-12, "{balance}");
}

#[test]
fn a_token_runs_only_its_top_experts() {
    // A zero router ties every expert; with top = 1 the tie goes to expert 0, so the
    // weights of experts 1..3 (hidden units 4..16) must not matter.
    let moe = graph(&lm("moe(experts = 4, top = 1, hidden = 4, balance = 0)"));
    let (inputs, mut params) = random_env(&moe, 2);
    for (p, t) in moe.params.iter().zip(params.iter_mut()) {
        if p.name.ends_with("router.weight") {
            t.data.iter_mut().for_each(|v| *v = 0.0);
        }
    }
    let base = outputs(&moe, &inputs, &params);
    let mut other = params.clone();
    for (p, t) in moe.params.iter().zip(other.iter_mut()) {
        if p.name.ends_with("ffn.w1.weight") {
            let cols = p.shape[1];
            t.data[4 * cols..].iter_mut().for_each(|v| *v += 1.0);
        }
    }
    let moved = outputs(&moe, &inputs, &other);
    assert_eq!(
        output(&base, "logits").data,
        output(&moved, "logits").data,
        "an expert no token picked changed the output"
    );
    // ...while expert 0's weights matter.
    for (p, t) in moe.params.iter().zip(other.iter_mut()) {
        if p.name.ends_with("ffn.w1.weight") {
            t.data[0] += 1.0;
        }
    }
    let moved = outputs(&moe, &inputs, &other);
    assert_ne!(output(&base, "logits").data, output(&moved, "logits").data);
}
