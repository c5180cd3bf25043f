//! Unit tests: constant evaluation, norm inheritance, and what models elaborate to.

use super::resolve::{Norm, NormKind, NormSettings, Placement, DEFAULT_NORM};
use super::{constants, elaborate, Override};
use crate::ir::UnaryOp;
use crate::ir::{Graph, Init, Op};
use crate::syntax::parse;

fn consts(src: &str) -> Result<Vec<(String, String)>, Vec<String>> {
    consts_with(src, &[])
}

fn consts_with(src: &str, ov: &[Override]) -> Result<Vec<(String, String)>, Vec<String>> {
    let m = parse(src).map_err(|d| d.into_iter().map(|d| d.message).collect::<Vec<_>>())?;
    constants(&m, ov).map_err(|d| d.into_iter().map(|d| d.message).collect())
}

fn value(src: &str, name: &str) -> String {
    let c = consts(src).unwrap_or_else(|e| panic!("{e:?}"));
    c.into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .expect("constant exists")
}

fn elab(src: &str) -> Graph {
    let m = parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    elaborate(&m, "test", &[]).unwrap_or_else(|d| panic!("{d:#?}"))
}

fn elab_err(src: &str) -> Vec<String> {
    let m = parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    match elaborate(&m, "test", &[]) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.into_iter().map(|d| d.message).collect(),
    }
}

const BASE: &str = "input tokens(batch = 2, length = 8, vocab = 16)\nembed(dim = 8)\n";

#[test]
fn integer_arithmetic() {
    assert_eq!(value("a = 2 + 3 * 4", "a"), "14");
    assert_eq!(value("a = (2 + 3) * 4", "a"), "20");
    assert_eq!(value("a = 7 // 2", "a"), "3");
    assert_eq!(value("a = -7 // 2", "a"), "-4");
    assert_eq!(value("a = -7 % 3", "a"), "2");
    assert_eq!(value("a = 7 % -3", "a"), "-2");
    assert_eq!(value("a = 1_000 - 1", "a"), "999");
    assert_eq!(value("d = 64\nff = 4 * d", "ff"), "256");
}

#[test]
fn true_division_gives_floats() {
    assert_eq!(value("a = 1 / 2", "a"), "0.5");
    assert_eq!(value("a = 4 / 2", "a"), "2.0");
    assert_eq!(value("a = 1e-5", "a"), "0.00001");
    assert_eq!(value("a = 2 * 0.25", "a"), "0.5");
}

#[test]
fn arithmetic_errors() {
    assert_eq!(consts("a = 1 // 0").unwrap_err(), vec!["division by zero"]);
    assert_eq!(consts("a = 1 / 0").unwrap_err(), vec!["division by zero"]);
    assert_eq!(
        consts("a = 9223372036854775807 + 1").unwrap_err(),
        vec!["integer overflow"]
    );
    assert_eq!(
        consts("a = 3000000000 * 3000000000 * 3").unwrap_err(),
        vec!["integer overflow"]
    );
    assert_eq!(
        consts("a = 1.5 // 2").unwrap_err(),
        vec!["`//` needs integers"]
    );
    assert_eq!(
        consts("a = b + 1").unwrap_err(),
        vec!["unknown constant `b`"]
    );
    assert_eq!(
        consts("a = b + 1\nb = 2").unwrap_err(),
        vec!["constant `b` is used before its definition"]
    );
}

#[test]
fn poisoned_constants_do_not_cascade() {
    // One error for `a`, none for `b` and `c` that use it.
    assert_eq!(
        consts("a = 1 // 0\nb = a * 2\nc = b + a")
            .unwrap_err()
            .len(),
        1
    );
}

#[test]
fn overrides_replace_values_and_flow_into_dependents() {
    let ov = [Override {
        name: "d".into(),
        value: 256.0,
        is_int: true,
    }];
    let c = consts_with("d = 128\nff = 4 * d", &ov).unwrap();
    assert_eq!(
        c,
        vec![("d".into(), "256".into()), ("ff".into(), "1024".into())]
    );
    let ov = [Override {
        name: "h".into(),
        value: 0.5,
        is_int: false,
    }];
    assert_eq!(
        consts_with("h = 1.0", &ov).unwrap(),
        vec![("h".into(), "0.5".into())]
    );
    let ov = [Override {
        name: "dd".into(),
        value: 1.0,
        is_int: true,
    }];
    let e = consts_with("d = 128", &ov).unwrap_err();
    assert_eq!(e, vec!["`--set dd`: the model has no constant `dd`"]);
}

#[test]
fn norm_inheritance_is_field_by_field() {
    let model = NormSettings {
        placement: Some(Placement::Peri),
        kind: None,
        eps: Some(1e-6),
    };
    let block = NormSettings {
        placement: None,
        kind: Some(NormKind::RmsNorm),
        eps: None,
    };
    let sub = NormSettings {
        placement: Some(Placement::Post),
        kind: None,
        eps: None,
    };
    let n = sub.over(block).over(model).finish();
    assert_eq!(
        n,
        Norm {
            placement: Placement::Post,
            kind: NormKind::RmsNorm,
            eps: 1e-6
        }
    );
    assert_eq!(NormSettings::default().finish(), DEFAULT_NORM);
    let n = NormSettings::default().over(block).finish();
    assert_eq!(
        n,
        Norm {
            placement: Placement::Pre,
            kind: NormKind::RmsNorm,
            eps: 1e-5
        }
    );
}

#[test]
fn norm_inheritance_in_a_model() {
    let g = elab(&format!(
        "{BASE}norm peri rmsnorm(eps = 1e-6)\nblock b {{\n norm layernorm\n a = linear norm pre\n f = ffn(hidden = 16)\n}}\nstack b * 1"
    ));
    let names: Vec<&str> = g.params.iter().map(|p| p.name.as_str()).collect();
    // `a`: pre (its own) + layernorm (block): one norm with a bias.
    assert!(names.contains(&"blocks.0.a.norm.bias"), "{names:?}");
    // `f`: peri (model) + layernorm (block).
    assert!(names.contains(&"blocks.0.f.norm_in.bias"), "{names:?}");
    assert!(names.contains(&"blocks.0.f.norm_out.bias"), "{names:?}");
    // Final norm follows the model level: rmsnorm, no bias.
    assert!(names.contains(&"final_norm.weight") && !names.contains(&"final_norm.bias"));
    let eps: Vec<f64> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Unary(UnaryOp::AddScalar { value }) => Some(value.get()),
            _ => None,
        })
        .collect();
    assert_eq!(eps, vec![1e-6; 4]);
}

#[test]
fn default_transformer_parameters() {
    let g = elab(&format!(
        "{BASE}block layer {{\n attn = attention(heads = 2)\n ffn = ffn(hidden = 32)\n}}\nstack layer * 2"
    ));
    let p = |n: &str| {
        g.params
            .iter()
            .find(|p| p.name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    assert_eq!(p("embed.weight").shape, vec![16, 8]);
    assert_eq!(p("embed.weight").init, Init::Normal { std: 0.02 });
    assert_eq!(p("pos.weight").shape, vec![8, 8]);
    assert_eq!(p("blocks.1.attn.wq.weight").shape, vec![8, 8]);
    assert_eq!(p("blocks.0.ffn.w1.weight").shape, vec![32, 8]);
    assert_eq!(
        p("blocks.0.ffn.w1.bias").init,
        Init::Uniform {
            bound: 1.0 / 8f64.sqrt()
        }
    );
    assert_eq!(p("blocks.0.ffn.w2.weight").shape, vec![8, 32]);
    assert_eq!(p("blocks.0.attn.norm.weight").init, Init::Ones);
    assert_eq!(p("head.weight").shape, vec![16, 8]);
    assert_eq!(g.inputs.len(), 2);
    assert_eq!(g.ty(g.output("logits").unwrap()).shape, vec![2, 8, 16]);
    assert!(g
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::CausalMask { .. })));
    assert!(g.nodes.iter().any(|n| n.scope == "blocks.1.attn"));
}

#[test]
fn macaron_names_repeated_sublayers() {
    let g = elab(&format!(
        "{BASE}block b {{\n attn = attention(heads = 1)\n ffn = ffn(hidden = 16)\n scheme strang(ffn, attn)\n}}\nstack b * 1"
    ));
    assert!(g.param_index("blocks.0.ffn.0.w1.weight").is_some());
    assert!(g.param_index("blocks.0.ffn.1.w1.weight").is_some());
    let halves = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Unary(UnaryOp::Scale { factor }) if factor.get() == 0.5))
        .count();
    assert_eq!(halves, 2);
}

#[test]
fn shared_and_ordered_depth() {
    let block = "block b {\n f = ffn(hidden = 16)\n}\n";
    let g = elab(&format!("{BASE}{block}stack b * 3 shared"));
    assert!(g.param_index("blocks.0.f.w1.weight").is_some());
    assert!(g.param_index("blocks.1.f.w1.weight").is_none());
    assert!(g.nodes.iter().any(|n| n.scope == "blocks.0.f.run2"));
    let g = elab(&format!(
        "{BASE}{block}stack b * 4 order [0, 2, 2]\nstack b * 1"
    ));
    assert!(g.param_index("blocks.1.f.w1.weight").is_none());
    assert!(g.param_index("blocks.4.f.w1.weight").is_some());
    assert!(g.nodes.iter().any(|n| n.scope == "blocks.2.f.run1"));
}

#[test]
fn skips_and_hourglass() {
    let g = elab(&format!(
        "{BASE}block b {{\n f = ffn(hidden = 4) skip hourglass(width = 32, lift = frozen)\n l = linear skip scaled(learned, init = 0.5)\n}}\nstack b * 1"
    ));
    let lift = &g.params[g.param_index("blocks.0.f.lift.weight").unwrap()];
    assert_eq!((lift.shape.clone(), lift.trainable), (vec![32, 8], false));
    assert_eq!(
        g.params[g.param_index("blocks.0.f.norm.weight").unwrap()].shape,
        vec![32]
    );
    assert_eq!(
        g.params[g.param_index("blocks.0.f.down.weight").unwrap()].shape,
        vec![8, 32]
    );
    let s = &g.params[g.param_index("blocks.0.l.skip_scale").unwrap()];
    assert_eq!(
        (s.shape.clone(), s.init.clone()),
        (vec![], Init::Const(0.5))
    );
}

#[test]
fn features_classifier_and_regression() {
    let g = elab("input features(batch = 4, width = 6)\nblock b {\n f = ffn(hidden = 8, glu = true, act = silu)\n}\nstack b * 2\nhead classifier(classes = 3)");
    assert_eq!(g.ty(g.output("logits").unwrap()).shape, vec![4, 3]);
    assert!(g.param_index("blocks.0.f.w3.weight").is_some());
    let g = elab("input features(batch = 4, width = 6)\nembed(dim = 8)\nblock b {\n f = ffn(hidden = 8)\n}\nstack b * 1\nhead linear(out = 2)");
    assert_eq!(g.inputs[1].ty.shape, vec![4, 2]);
    assert_eq!(
        g.params[g.param_index("embed.weight").unwrap()].shape,
        vec![8, 6]
    );
}

#[test]
fn errors_are_collected_across_blocks() {
    let e = elab_err(&format!(
        "{BASE}block a {{\n x = atention(heads = 2)\n}}\nblock b {{\n f = ffn(hidden = 8, act = gleu)\n}}\nstack a * 1\nstack b * 1"
    ));
    assert_eq!(
        e,
        vec![
            "unknown sublayer kind `atention`",
            "unknown activation `gleu`"
        ]
    );
}

#[test]
fn examples_elaborate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "lam") {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("readable");
        let m = parse(&src).unwrap_or_else(|d| panic!("{path:?}: {d:?}"));
        let g = elaborate(&m, "x", &[]).unwrap_or_else(|d| panic!("{path:?}: {d:#?}"));
        g.verify().expect("verifies");
        n += 1;
    }
    assert!(n >= 9);
}

/// Deterministic parameter values that follow each parameter's init (uniform stand-ins).
fn init_params(g: &Graph) -> Vec<crate::tensor::Tensor> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    g.params
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let data = (0..n)
                .map(|_| match p.init {
                    Init::Zeros => 0.0,
                    Init::Ones => 1.0,
                    Init::Const(c) => c,
                    Init::Normal { std } => std * 3f64.sqrt() * uniform(),
                    Init::Uniform { bound } => bound * uniform(),
                })
                .collect();
            crate::tensor::Tensor::f32(p.shape.clone(), data)
        })
        .collect()
}

fn run_loss(g: &Graph, inputs: Vec<crate::tensor::Tensor>) -> f64 {
    let params = init_params(g);
    let env = crate::interp::Env {
        inputs: &inputs,
        params: &params,
    };
    let out = crate::interp::run(g, &env).unwrap_or_else(|e| panic!("{e:?}"));
    let loss = out.iter().find(|(n, _)| n == "loss").expect("loss output");
    assert_eq!(loss.1.shape, Vec::<usize>::new());
    loss.1.data[0]
}

#[test]
fn elaborated_models_run_in_the_interpreter() {
    use crate::tensor::Tensor;
    let tokens = |n: usize| Tensor::i32(vec![2, 8], (0..n).map(|i| (i * 7 % 16) as f64).collect());
    for scheme in ["", "scheme strang(ffn, attn)", "scheme parallel(attn, ffn)"] {
        for norm in ["pre", "post", "peri rmsnorm", "none"] {
            let g = elab(&format!(
                "{BASE}norm {norm}\nblock b {{\n attn = attention(heads = 2)\n ffn = ffn(hidden = 16, glu = true)\n {scheme}\n}}\nstack b * 2 order [1, 0, 1]"
            ));
            let loss = run_loss(&g, vec![tokens(16), tokens(16)]);
            // Small initial logits: cross-entropy near ln(vocab).
            assert!(
                (loss - 16f64.ln()).abs() < 1.0,
                "{scheme} {norm}: loss {loss}"
            );
        }
    }
    let g = elab("input features(batch = 4, width = 6)\nembed(dim = 8)\nskip hourglass(width = 12)\nblock b {\n f = ffn(hidden = 4)\n}\nstack b * 2\nhead linear(out = 2)");
    let x = Tensor::f32(
        vec![4, 6],
        (0..24).map(|i| (i as f64 * 0.37).sin()).collect(),
    );
    let loss = run_loss(&g, vec![x, Tensor::f32(vec![4, 2], vec![0.5; 8])]);
    assert!(loss.is_finite() && loss >= 0.0);
}

// ---------------------------------------------------------------- image models

/// The residual stream after the embedding (`probe.0.embed`) of `src` on `images`, with
/// each parameter's elements set by `value(name, flat index)`.
fn embedded(
    src: &str,
    images: Vec<f64>,
    value: impl Fn(&str, usize) -> f64,
) -> crate::tensor::Tensor {
    let m = parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    let probing = super::Probing {
        states: true,
        ..Default::default()
    };
    let g = super::elaborate_probed(&m, "test", &[], probing).unwrap_or_else(|d| panic!("{d:#?}"));
    let inputs: Vec<crate::tensor::Tensor> = g
        .inputs
        .iter()
        .map(|i| match i.name.as_str() {
            "images" => crate::tensor::Tensor::f32(i.ty.shape.clone(), images.clone()),
            _ => crate::tensor::Tensor::zeros(&i.ty),
        })
        .collect();
    let params: Vec<crate::tensor::Tensor> = g
        .params
        .iter()
        .map(|p| {
            let n = p.shape.iter().product();
            crate::tensor::Tensor::f32(p.shape.clone(), (0..n).map(|k| value(&p.name, k)).collect())
        })
        .collect();
    let env = crate::interp::Env {
        inputs: &inputs,
        params: &params,
    };
    let outs = crate::interp::run(&g, &env).unwrap_or_else(|e| panic!("{e:?}"));
    outs.into_iter()
        .find(|(n, _)| n == "probe.0.embed")
        .map(|(_, t)| t)
        .expect("the embedding is probed")
}

/// A small deterministic pseudo-random value for element `k` of a tensor.
fn wiggle(salt: usize, k: usize) -> f64 {
    let h = (k * 2654435761 + salt * 40503) % 1000;
    h as f64 / 500.0 - 1.0
}

#[test]
fn patch_embedding_is_a_strided_convolution() {
    // 2 images of 2 channels, 6x4, patches of 2x2: a 3x2 grid of 6 tokens of width 3.
    let (b, c, h, w, p, d) = (2, 2, 6, 4, 2, 3);
    let src = "input image(batch = 2, channels = 2, height = 6, width = 4)\n\
               embed(dim = 3, patch = 2, positions = none)\n\
               block layer {\n    ffn = ffn(hidden = 4)\n}\nstack layer * 1\n\
               head classifier(classes = 2)\n";
    let images: Vec<f64> = (0..b * c * h * w).map(|k| wiggle(7, k)).collect();
    let param = |name: &str, k: usize| match name {
        "embed.weight" => wiggle(1, k),
        "embed.bias" => wiggle(2, k),
        _ => 0.5,
    };
    let out = embedded(src, images.clone(), param);
    let (gh, gw) = (h / p, w / p);
    assert_eq!(out.shape, vec![b, gh * gw, d]);
    // Conv2d(c, d, kernel = stride = p): out[b, o, i, j] = bias[o] +
    // sum_{ch, u, v} weight[o, ch, u, v] * x[b, ch, i p + u, j p + v]; token n = i gw + j.
    for bi in 0..b {
        for i in 0..gh {
            for j in 0..gw {
                for o in 0..d {
                    let mut want = param("embed.bias", o);
                    for ch in 0..c {
                        for u in 0..p {
                            for v in 0..p {
                                let wk = ((o * c + ch) * p + u) * p + v;
                                let xk = ((bi * c + ch) * h + i * p + u) * w + j * p + v;
                                want += param("embed.weight", wk) * images[xk];
                            }
                        }
                    }
                    let got = out.data[(bi * gh * gw + i * gw + j) * d + o];
                    assert!(
                        (got - want).abs() < 1e-12,
                        "[{bi}, {i}, {j}, {o}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn sinusoidal2d_encodes_the_row_then_the_column() {
    // An 8x12 image in 4x4 patches: a 2x3 grid; width 8, so each half is 4 wide.
    let src = "input image(batch = 1, channels = 1, height = 8, width = 12)\n\
               embed(dim = 8, patch = 4, positions = sinusoidal2d)\n\
               block layer {\n    ffn = ffn(hidden = 4)\n}\nstack layer * 1\n\
               head classifier(classes = 2)\n";
    // A zero patch embedding leaves the table itself.
    let out = embedded(src, vec![0.0; 96], |name, _| match name {
        "embed.weight" | "embed.bias" => 0.0,
        _ => 1.0,
    });
    let (gh, gw, d) = (2, 3, 8);
    let half = d / 2;
    // PE(pos, 2i) = sin(pos / 10000^(2i / half)), PE(pos, 2i + 1) = cos(the same).
    let pe = |pos: usize, k: usize| {
        let angle = pos as f64 / 10000f64.powf((k / 2 * 2) as f64 / half as f64);
        if k.is_multiple_of(2) {
            angle.sin()
        } else {
            angle.cos()
        }
    };
    assert_eq!(out.shape, vec![1, gh * gw, d]);
    for r in 0..gh {
        for c in 0..gw {
            for k in 0..d {
                let want = if k < half { pe(r, k) } else { pe(c, k - half) };
                let got = out.data[(r * gw + c) * d + k];
                assert!(
                    (got - want).abs() < 1e-12,
                    "({r}, {c}) channel {k}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn class_token_leads_the_sequence_with_its_position() {
    let src = "input image(batch = 2, channels = 1, height = 4, width = 4)\n\
               embed(dim = 4, patch = 2)\n\
               block layer {\n    attn = attention(heads = 2)\n}\nstack layer * 1\n\
               head classifier(classes = 3, pool = cls)\n";
    let param = |name: &str, k: usize| match name {
        "cls.weight" => 10.0 + k as f64,
        "pos.weight" => 100.0 * (k / 4) as f64,
        _ => 0.0,
    };
    let out = embedded(src, vec![1.0; 32], param);
    // 4 patches and the class token; the table has a row for each.
    assert_eq!(out.shape, vec![2, 5, 4]);
    for b in 0..2 {
        for k in 0..4 {
            assert_eq!(out.data[b * 20 + k], 10.0 + k as f64);
            assert_eq!(out.data[b * 20 + 4 * 4 + k], 400.0);
        }
    }
    // Attention in an image model is not causal: no mask in the graph.
    let g = elab(src);
    assert!(!g
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::CausalMask { .. })));
}
