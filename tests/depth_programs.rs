//! Depth programs against their equations (docs/language.md, "Depth programs"), on the
//! reference interpreter: each program's model is compared with a plain model that
//! spells the same computation out with independent weights.

use lamina::elab::{elaborate_probed, LayerEdit, Probing};
use lamina::ir::Graph;
use lamina::tensor::Tensor;

mod common;
use common::{graph, output, outputs, random_env};

/// `params` of `from` by name, for a graph `to` whose parameters are `f(name)` of them.
fn by_name(from: &Graph, params: &[Tensor], name: &str) -> Tensor {
    let i = from
        .params
        .iter()
        .position(|p| p.name == name)
        .unwrap_or_else(|| panic!("no parameter {name}"));
    params[i].clone()
}

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.shape, b.shape, "{what}: shapes");
    let err = common::max_rel_err(&a.data, &b.data, 1e-9);
    assert!(err < 1e-12, "{what}: relative error {err:.3e}");
}

/// A residual MLP on features: layer(x) = x + W x + c, so programs have closed forms.
fn mlp(stack: &str) -> String {
    format!(
        "input features(batch = 3, width = 6)\nnorm none\nblock layer {{\n    lin = linear\n}}\n\
         {stack}\nfinal_norm none\nhead linear(out = 2)\nloss mse\n"
    )
}

#[test]
fn a_parallel_group_adds_the_updates_of_its_layers() {
    // x + (W0 x + c0) + (W1 x + c1) == one layer with W0 + W1 and c0 + c1.
    let g = graph(&mlp("stack layer * 2 parallel"));
    let plain = graph(&mlp("stack layer * 1"));
    let (inputs, params) = random_env(&g, 1);
    let summed: Vec<Tensor> = plain
        .params
        .iter()
        .map(|p| {
            let Some(rest) = p.name.strip_prefix("blocks.0.") else {
                return by_name(&g, &params, &p.name);
            };
            let a = by_name(&g, &params, &format!("blocks.0.{rest}"));
            let b = by_name(&g, &params, &format!("blocks.1.{rest}"));
            let data = a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect();
            Tensor::f32(a.shape.clone(), data)
        })
        .collect();
    let (got, want) = (
        outputs(&g, &inputs, &params),
        outputs(&plain, &inputs, &summed),
    );
    assert_close(output(&got, "logits"), output(&want, "logits"), "logits");
}

#[test]
fn groups_of_one_layer_and_one_stage_per_layer_are_the_plain_stack() {
    let plain = graph(&mlp("stack layer * 4"));
    for program in ["parallel 4", "shared stages 4"] {
        let g = graph(&mlp(&format!("stack layer * 4 {program}")));
        let names = |g: &Graph| g.params.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&g), names(&plain), "{program}");
        let (inputs, params) = random_env(&g, 2);
        let (got, want) = (
            outputs(&g, &inputs, &params),
            outputs(&plain, &inputs, &params),
        );
        assert_close(output(&got, "loss"), output(&want, "loss"), program);
    }
}

#[test]
fn stages_share_weights_by_floor_of_i_times_stages_over_layers() {
    let g = graph(&mlp("stack layer * 6 shared stages 3"));
    let plain = graph(&mlp("stack layer * 6"));
    let (inputs, params) = random_env(&g, 3);
    let spelled: Vec<Tensor> = plain
        .params
        .iter()
        .map(|p| {
            let name = match p.name.strip_prefix("blocks.") {
                Some(rest) => {
                    let (i, tail) = rest.split_once('.').unwrap();
                    let i: usize = i.parse().unwrap();
                    format!("blocks.{}.{tail}", i * 3 / 6)
                }
                None => p.name.clone(),
            };
            by_name(&g, &params, &name)
        })
        .collect();
    let (got, want) = (
        outputs(&g, &inputs, &params),
        outputs(&plain, &inputs, &spelled),
    );
    assert_close(output(&got, "logits"), output(&want, "logits"), "logits");
}

#[test]
fn linear_expansion_gives_layer_l_weights_a_plus_l_over_n_times_b() {
    let g = graph(&mlp("stack layer * 4 expand linear"));
    let plain = graph(&mlp("stack layer * 4"));
    let (inputs, params) = random_env(&g, 4);
    assert!(g.params.iter().any(|p| p.name.ends_with(".slope")));
    let spelled: Vec<Tensor> = plain
        .params
        .iter()
        .map(|p| {
            let Some(rest) = p.name.strip_prefix("blocks.") else {
                return by_name(&g, &params, &p.name);
            };
            let (l, tail) = rest.split_once('.').unwrap();
            let c = (l.parse::<usize>().unwrap() + 1) as f64 / 4.0;
            let a = by_name(&g, &params, &format!("blocks.0.{tail}"));
            let b = by_name(&g, &params, &format!("blocks.0.{tail}.slope"));
            let data = a.data.iter().zip(&b.data).map(|(x, y)| x + c * y).collect();
            Tensor::f32(a.shape.clone(), data)
        })
        .collect();
    let (got, want) = (
        outputs(&g, &inputs, &params),
        outputs(&plain, &inputs, &spelled),
    );
    assert_close(output(&got, "logits"), output(&want, "logits"), "logits");
}

const LM: &str = "input tokens(batch = 2, length = 6, vocab = 11)\nembed(dim = 8)\n\
                  block layer {\n    attn = attention(heads = 2)\n    ffn = ffn(hidden = 16)\n}\n";

#[test]
fn each_subnet_runs_its_equidistant_layers_and_the_loss_is_their_weighted_sum() {
    let src = format!("{LM}stack layer * 4 subnets [4, 2, 1] weights [0.5, 0.3, 0.2]\n");
    let g = graph(&src);
    let (inputs, params) = random_env(&g, 5);
    let got = outputs(&g, &inputs, &params);
    let m = lamina::syntax::parse(&src).unwrap();
    let mut total = 0.0;
    for (depth, weight, layers) in [
        (4, 0.5, vec![0, 1, 2, 3]),
        (2, 0.3, vec![0, 2]),
        (1, 0.2, vec![0]),
    ] {
        let probing = Probing {
            layers: LayerEdit::Order(layers),
            ..Probing::default()
        };
        let alone = elaborate_probed(&m, "test", &[], probing).unwrap();
        let mine: Vec<Tensor> = alone
            .params
            .iter()
            .map(|p| by_name(&g, &params, &p.name))
            .collect();
        let want = outputs(&alone, &inputs, &mine);
        let part = output(&got, &format!("loss.subnet.{depth}"));
        assert_close(part, output(&want, "loss"), &format!("subnet {depth}"));
        if depth == 4 {
            assert_close(output(&got, "logits"), output(&want, "logits"), "logits");
        }
        total += weight * part.data[0];
    }
    let loss = output(&got, "loss").data[0];
    assert!(
        (loss - total).abs() <= 1e-12 * total.abs(),
        "{loss} vs {total}"
    );
}

#[test]
fn a_router_gate_never_sees_a_later_token() {
    let g = graph(&format!("{LM}stack layer * 3 routed\n"));
    let (mut inputs, params) = random_env(&g, 6);
    let before = output(&outputs(&g, &inputs, &params), "logits").clone();
    // Change every token after position 2; logits at positions 0..=2 must not move.
    let (batch, len) = (2, 6);
    for b in 0..batch {
        for t in 3..len {
            let k = b * len + t;
            inputs[0].data[k] = ((inputs[0].data[k] as i64 + 5) % 11) as f64;
        }
    }
    let after = output(&outputs(&g, &inputs, &params), "logits").clone();
    let vocab = 11;
    let mut moved_later = false;
    for b in 0..batch {
        for t in 0..len {
            let row = (b * len + t) * vocab..(b * len + t + 1) * vocab;
            let same = before.data[row.clone()] == after.data[row];
            if t <= 2 {
                assert!(same, "position {t} of sequence {b} saw a later token");
            } else {
                moved_later |= !same;
            }
        }
    }
    assert!(moved_later, "the changed tokens changed nothing");
}

#[test]
fn hard_routing_at_zero_is_the_soft_model_and_at_one_skips_every_layer() {
    let src = format!("{LM}stack layer * 3 routed sparsity 0\n");
    let g = graph(&src);
    let (inputs, params) = random_env(&g, 7);
    let soft = outputs(&g, &inputs, &params);
    let m = lamina::syntax::parse(&src).unwrap();
    let hard = |t: f64| {
        let probing = Probing {
            skip_below: Some(t),
            ..Probing::default()
        };
        let h = elaborate_probed(&m, "test", &[], probing).unwrap();
        outputs(&h, &inputs, &params)
    };
    let open = hard(0.0);
    assert_close(output(&open, "logits"), output(&soft, "logits"), "tau 0");
    let shut = hard(1.0);
    for k in 0..3 {
        let route = output(&shut, &format!("route.{k}"));
        assert!(
            route.data.iter().all(|&r| r == 0.0),
            "route.{k}: {:?}",
            route.data
        );
    }
    // Every layer skipped: the layers' weights no longer matter.
    let h = elaborate_probed(
        &m,
        "test",
        &[],
        Probing {
            skip_below: Some(1.0),
            ..Probing::default()
        },
    )
    .unwrap();
    let mut other = params.clone();
    for (p, t) in h.params.iter().zip(other.iter_mut()) {
        if p.name.starts_with("blocks.") && !p.name.contains(".router.") {
            t.data.iter_mut().for_each(|v| *v = -*v + 0.25);
        }
    }
    let moved = outputs(&h, &inputs, &other);
    assert_close(output(&moved, "logits"), output(&shut, "logits"), "tau 1");
    assert_ne!(
        output(&shut, "logits").data,
        output(&soft, "logits").data,
        "skipping changed nothing"
    );
}

/// `lamina <args>`, which must succeed.
fn cli(args: &[&str]) {
    let o = common::lamina(args);
    assert!(
        o.status.success(),
        "lamina {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The outputs of `lamina run FILE --weights W` on the interpreter (its seed-0 batch).
fn run_file(file: &std::path::Path, weights: &std::path::Path) -> Vec<(String, Tensor)> {
    let out = file.with_extension("out.safetensors");
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    cli(&[
        "run",
        &p(file),
        "--weights",
        &p(weights),
        "--backend",
        "interp",
        "--out",
        &p(&out),
    ]);
    lamina::io::load_safetensors(&out).unwrap()
}

/// Writes `src` as `<name>.lam` in a fresh directory, with `lamina init` weights.
fn model_with_weights(name: &str, src: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("lamina-extract-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.lam"));
    std::fs::write(&file, src).unwrap();
    let w = dir.join("w.safetensors");
    cli(&[
        "init",
        file.to_str().unwrap(),
        "-o",
        w.to_str().unwrap(),
        "--seed",
        "3",
    ]);
    (file, w)
}

/// `lamina extract FILE --weights W --depth N -o DIR/cut`: the cut model's file and weights.
fn extract(
    file: &std::path::Path,
    w: &std::path::Path,
    depth: usize,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = file.with_file_name(format!("cut{depth}"));
    cli(&[
        "extract",
        file.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--depth",
        &depth.to_string(),
        "-o",
        out.to_str().unwrap(),
    ]);
    (out.with_extension("lam"), out.with_extension("safetensors"))
}

fn loss(outs: &[(String, Tensor)], name: &str) -> f64 {
    output(outs, name).data[0]
}

#[test]
fn an_extracted_subnet_computes_the_subnet() {
    let (file, w) = model_with_weights(
        "variant",
        &format!("{LM}stack layer * 4 subnets [4, 2] weights [0.5, 0.5]\n"),
    );
    let full = run_file(&file, &w);
    let (cut, cw) = extract(&file, &w, 2);
    let text = std::fs::read_to_string(&cut).unwrap();
    assert!(text.contains("stack layer * 2\n"), "{text}");
    let alone = run_file(&cut, &cw);
    let (a, b) = (loss(&alone, "loss"), loss(&full, "loss.subnet.2"));
    assert!((a - b).abs() <= 1e-9 * b.abs(), "{a} vs {b}");
    let o = common::lamina(&[
        "extract",
        file.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--depth",
        "3",
        "-o",
        file.with_file_name("bad").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--depth 3 is none of them"));
    assert!(!file.with_file_name("bad.lam").exists());
}

#[test]
fn expansion_and_stages_extracted_at_full_depth_are_the_same_model() {
    for (name, clause) in [("tleg", "expand linear"), ("sws", "shared stages 2")] {
        let (file, w) = model_with_weights(name, &format!("{LM}stack layer * 4 {clause}\n"));
        // Slopes start at zero; give them values so the coefficient matters.
        let mut tensors = lamina::io::load_safetensors(&w).unwrap();
        for (n, t) in tensors.iter_mut() {
            if n.ends_with(".slope") {
                let k = n.len() as f64;
                t.data
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, v)| *v = 0.3 * (k + j as f64).sin());
            }
        }
        lamina::io::save_safetensors(&w, &tensors).unwrap();
        let full = run_file(&file, &w);
        let (cut, cw) = extract(&file, &w, 4);
        let alone = run_file(&cut, &cw);
        let (a, b) = (loss(&alone, "loss"), loss(&full, "loss"));
        // The cut weights are stored as f32: theta_A + c theta_B is rounded once more.
        assert!((a - b).abs() <= 1e-6 * b.abs(), "{name}: {a} vs {b}");
        // A deeper model: independent weights by the same rule.
        let (deep, _) = extract(&file, &w, 6);
        let g = graph(&std::fs::read_to_string(deep).unwrap());
        assert!(
            g.params.iter().any(|p| p.name.starts_with("blocks.5.")),
            "{name}"
        );
        assert!(
            !g.params.iter().any(|p| p.name.ends_with(".slope")),
            "{name}"
        );
    }
}
