//! The mixture of experts against its equations (docs/language.md, "Mixture of experts")
//! on the reference interpreter, and `lamina convert --ffn-to-moe`.

use lamina::ir::Graph;
use lamina::tensor::Tensor;

mod common;
use common::{graph, output, outputs, random_env};

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

#[test]
fn a_nested_ffn_at_full_width_is_the_plain_ffn_and_its_loss_is_the_mean_over_widths() {
    let plain = graph(&lm("ffn(hidden = 16)"));
    let nested = graph(&lm("ffn(hidden = 16, nested = [1, 1/2, 1/4])"));
    let (inputs, params) = random_env(&plain, 3);
    assert_eq!(nested.params.len(), plain.params.len());
    let (want, got) = (
        outputs(&plain, &inputs, &params),
        outputs(&nested, &inputs, &params),
    );
    let full = output(&got, "loss.width.0").data[0];
    assert!((full - output(&want, "loss").data[0]).abs() < 1e-12);
    assert_eq!(output(&got, "logits").data, output(&want, "logits").data);
    let parts: Vec<f64> = (0..3)
        .map(|k| output(&got, &format!("loss.width.{k}")).data[0])
        .collect();
    let mean = parts.iter().sum::<f64>() / 3.0;
    assert!((output(&got, "loss").data[0] - mean).abs() < 1e-12);
    assert!(parts[0] != parts[1] && parts[1] != parts[2], "{parts:?}");
}

#[test]
fn a_granularity_at_quarter_width_is_the_first_quarter_of_the_units() {
    // Granularity 1/4 of 16 units equals an ffn of 4 units with the leading rows of w1
    // and the leading columns of w2.
    let nested = graph(&lm("ffn(hidden = 16, nested = [1, 1/4])"));
    let small = graph(&lm("ffn(hidden = 4)"));
    let (inputs, params) = random_env(&nested, 4);
    let cut: Vec<Tensor> = small
        .params
        .iter()
        .map(|p| {
            let i = nested.params.iter().position(|q| q.name == p.name).unwrap();
            let t = &params[i];
            let data = if p.name.ends_with("w2.weight") {
                t.data.chunks(16).flat_map(|r| r[..4].to_vec()).collect()
            } else {
                t.data[..p.shape.iter().product()].to_vec()
            };
            Tensor::f32(p.shape.clone(), data)
        })
        .collect();
    let got = outputs(&nested, &inputs, &params);
    let want = outputs(&small, &inputs, &cut);
    let (a, b) = (
        output(&got, "loss.width.1").data[0],
        output(&want, "loss").data[0],
    );
    assert!((a - b).abs() < 1e-12 * b.abs(), "{a} vs {b}");
}

#[test]
fn extract_width_writes_the_granularity_as_a_plain_model() {
    let dir = std::env::temp_dir().join(format!("lamina-width-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("m.lam");
    std::fs::write(&file, lm("ffn(hidden = 16, nested = [1, 1/2, 1/4])")).unwrap();
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let w = dir.join("w.safetensors");
    let ok = |args: &[&str]| {
        let o = common::lamina(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(&["init", &p(&file), "-o", &p(&w), "--seed", "5"]);
    let out = dir.join("small");
    ok(&[
        "extract",
        &p(&file),
        "--weights",
        &p(&w),
        "--width",
        "1/4",
        "-o",
        &p(&out),
    ]);
    let text = std::fs::read_to_string(out.with_extension("lam")).unwrap();
    assert!(text.contains("ffn = ffn(hidden = 4)"), "{text}");
    let run = |model: &std::path::Path, weights: &std::path::Path, o: &std::path::Path| {
        ok(&[
            "run",
            &p(model),
            "--weights",
            &p(weights),
            "--backend",
            "interp",
            "--out",
            &p(o),
        ]);
        lamina::io::load_safetensors(o).unwrap()
    };
    let full = run(&file, &w, &dir.join("full.safetensors"));
    let cut = run(
        &out.with_extension("lam"),
        &out.with_extension("safetensors"),
        &dir.join("cut.safetensors"),
    );
    let (a, b) = (
        output(&cut, "loss").data[0],
        output(&full, "loss.width.2").data[0],
    );
    assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
    let _ = std::fs::remove_dir_all(&dir);
}
