//! Dropout and stochastic depth (docs/language.md, "Dropout and stochastic depth"): off in
//! the evaluated model, their equations on the training graph, and the JIT against the
//! interpreter given the same masks.

use lamina::elab::{elaborate_probed, LayerEdit, Probing};
use lamina::ir::text::print;
use lamina::ir::Graph;
use lamina::tensor::Tensor;

mod common;
use common::{graph, output, outputs, random_env};

fn training(src: &str) -> Graph {
    let m = lamina::syntax::parse(src).unwrap();
    let probing = Probing {
        training: true,
        ..Probing::default()
    };
    elaborate_probed(&m, "test", &[], probing).unwrap_or_else(|d| panic!("{d:#?}"))
}

const LM: &str = "input tokens(batch = 2, length = 5, vocab = 11)\nembed(dim = 8)\n\
                  block layer {\n    attn = attention(heads = 2)\n    ffn = ffn(hidden = 16)\n}\n\
                  stack layer * 3\n";

fn regularised() -> String {
    LM.replace(
        "attention(heads = 2)",
        "attention(heads = 2, attn_dropout = 0.2, dropout = 0.1)",
    )
    .replace("ffn(hidden = 16)", "ffn(hidden = 16, dropout = 0.3)")
    .replace("stack layer * 3", "stack layer * 3 drop_path 0.5")
}

#[test]
fn the_evaluated_model_is_the_model_without_dropout() {
    assert_eq!(print(&graph(&regularised())), print(&graph(LM)));
    // Training adds one mask input per dropout site and per layer with a drop rate.
    let g = training(&regularised());
    let masks: Vec<&str> = g
        .inputs
        .iter()
        .filter(|i| i.name.starts_with("dropout."))
        .map(|i| i.name.as_str())
        .collect();
    // 3 layers x (attention probabilities, attention output, ffn output) + layers 1 and 2.
    assert_eq!(masks.len(), 3 * 3 + 2, "{masks:?}");
}

#[test]
fn a_dropout_mask_zeroes_what_it_drops_and_rescales_the_rest() {
    // y = x + m * (W x + b) / (1 - p), m = 1[u > p]; then the linear head.
    let src = "input features(batch = 2, width = 3)\nnorm none\nblock layer {\n    \
               lin = linear(dropout = 0.25)\n}\nstack layer * 1\nfinal_norm none\n\
               head linear(out = 1)\nloss mse\n";
    let g = training(src);
    let (mut inputs, params) = random_env(&g, 1);
    let u = [0.9, 0.1, 0.5, 0.2, 0.3, 0.26];
    inputs[2] = Tensor::f32(vec![2, 3], u.to_vec());
    let got = output(&outputs(&g, &inputs, &params), "logits").clone();
    let param = |name: &str| {
        let i = g.params.iter().position(|p| p.name == name).unwrap();
        params[i].data.clone()
    };
    let (w, b) = (param("blocks.0.lin.weight"), param("blocks.0.lin.bias"));
    let (hw, hb) = (param("head.weight"), param("head.bias"));
    for row in 0..2 {
        let x = &inputs[0].data[row * 3..row * 3 + 3];
        let mut y = x.to_vec();
        for o in 0..3 {
            let f: f64 = (0..3).map(|i| w[o * 3 + i] * x[i]).sum::<f64>() + b[o];
            let keep = if u[row * 3 + o] > 0.25 {
                1.0 / 0.75
            } else {
                0.0
            };
            y[o] += keep * f;
        }
        let want: f64 = (0..3).map(|i| hw[i] * y[i]).sum::<f64>() + hb[0];
        assert!(
            (got.data[row] - want).abs() < 1e-12,
            "row {row}: {} vs {want}",
            got.data[row]
        );
    }
}

#[test]
fn stochastic_depth_drops_whole_layers_per_sample() {
    // With every mask at 0, layers 1 and 2 (rates 0.25 and 0.5) are dropped for both
    // samples, and layer 0 (rate 0) always runs: the model is its first layer.
    let src = LM.replace("stack layer * 3", "stack layer * 3 drop_path 0.5");
    let g = training(&src);
    let (mut inputs, params) = random_env(&g, 2);
    for t in inputs.iter_mut().skip(2) {
        assert_eq!(t.shape, vec![2], "one mask value per sample");
        t.data.iter_mut().for_each(|v| *v = 0.0);
    }
    assert_eq!(inputs.len(), 4);
    let m = lamina::syntax::parse(&src).unwrap();
    let first = Probing {
        layers: LayerEdit::Order(vec![0]),
        ..Probing::default()
    };
    let alone = elaborate_probed(&m, "test", &[], first).unwrap();
    let mine: Vec<Tensor> = alone
        .params
        .iter()
        .map(|p| params[g.params.iter().position(|q| q.name == p.name).unwrap()].clone())
        .collect();
    let want = outputs(&alone, &inputs[..2], &mine);
    let got = outputs(&g, &inputs, &params);
    assert_eq!(output(&got, "logits").data, output(&want, "logits").data);
}

#[test]
fn the_jit_draws_nothing_of_its_own_given_the_same_masks() {
    let g = lamina::autodiff::differentiate(&training(&regularised())).unwrap();
    let (mut inputs, params) = random_env(&g, 3);
    for (i, t) in g.inputs.iter().zip(inputs.iter_mut()) {
        if i.name.starts_with("dropout.") {
            // Uniform in [0, 1): shift the [-1, 1) values.
            t.data.iter_mut().for_each(|v| *v = (*v + 1.0) / 2.0);
        }
    }
    let want = outputs(&g, &inputs, &params);
    let mut jit = lamina::runtime::compile_graph(&g).unwrap();
    let got = jit.run(&inputs, &params).unwrap();
    for ((n, a), (_, b)) in got.iter().zip(&want) {
        let err = common::max_rel_err(&a.data, &b.data, 1e-3);
        assert!(err < 1e-4, "{n}: {err:.2e}");
    }
}
