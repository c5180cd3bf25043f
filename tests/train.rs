//! `lamina train`: convergence, determinism, resume, NaN reports, optimizer updates as IR,
//! and `compare`.

use lamina::interp;
use lamina::ir::{GraphBuilder, Init, OutputRole, ParamRole, Type};
use lamina::tensor::Tensor;
use lamina::train::exec::Backend;
use lamina::train::optim::{self, GradNoise, OptimConfig, OptimKind};
use lamina::train::{self, TrainOptions};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lamina-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A one-layer transformer on modular addition with p = 7 (49 pairs, 39 for training).
const TINY: &str = "\
p = 7
input tokens(batch = 16, length = 3, vocab = p + 1)
embed(dim = 32)
block layer {
    attn = attention(heads = 2)
    ffn  = ffn(hidden = 64)
}
stack layer * 1
head classifier(classes = p)
train {
    task       = modular_addition(p = p, train_fraction = 0.8)
    steps      = 400
    optimizer  = adamw(lr = 1e-2, weight_decay = 0.1)
    schedule   = cosine(warmup = 10)
    eval_every = 50
}
";

fn write_model(dir: &Path, src: &str) -> PathBuf {
    let p = dir.join("m.lam");
    std::fs::write(&p, src).unwrap();
    p
}

fn opts(out: &Path) -> TrainOptions {
    TrainOptions {
        out: Some(out.to_path_buf()),
        quiet: true,
        ..Default::default()
    }
}

#[test]
fn tiny_model_reaches_a_low_loss() {
    let d = tmp("converge");
    let m = write_model(&d, TINY);
    let s = train::train(&m, &opts(&d.join("run"))).unwrap();
    assert_eq!(s.steps_done, 400);
    let first = s.losses[0].1;
    // Stated target: the mean training loss of the last 20 steps falls below 0.05
    // (from ln 7 = 1.95 at the start).
    assert!(first > 1.5, "first loss {first}");
    assert!(s.final_loss() < 0.05, "final loss {}", s.final_loss());
    for f in [
        "log.jsonl",
        "loss.svg",
        "checkpoint.safetensors",
        "final.safetensors",
    ] {
        assert!(d.join("run").join(f).exists(), "{f} missing");
    }
    let svg = std::fs::read_to_string(d.join("run/loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

fn final_weights(dir: &Path) -> Vec<(String, Tensor)> {
    lamina::io::load_safetensors(&dir.join("final.safetensors")).unwrap()
}

#[test]
fn same_seed_same_losses_bit_for_bit() {
    let d = tmp("determinism");
    let m = write_model(&d, TINY);
    let mut o = opts(&d.join("a"));
    o.settings.push(("steps".into(), "30".into()));
    o.settings
        .push(("optimizer".into(), "lamb(lr = 0.01)".into()));
    o.settings
        .push(("noise".into(), "gradient_noise(eta = 0.01)".into()));
    let a = train::train(&m, &o).unwrap();
    o.out = Some(d.join("b"));
    let b = train::train(&m, &o).unwrap();
    let bits = |s: &train::Summary| {
        s.losses
            .iter()
            .map(|(_, l)| l.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(final_weights(&d.join("a")), final_weights(&d.join("b")));
    // A different seed gives different losses.
    o.out = Some(d.join("c"));
    o.settings.push(("seed".into(), "1".into()));
    let c = train::train(&m, &o).unwrap();
    assert_ne!(bits(&a), bits(&c));
}

#[test]
fn resume_is_bit_identical_to_an_uninterrupted_run() {
    resume_check("resume", TINY, None);
}

/// Dropout and stochastic-depth masks are a function of (seed, step): a resumed run draws
/// the same ones.
#[test]
fn resume_is_bit_identical_with_dropout_and_stochastic_depth() {
    let model = TINY
        .replace(
            "attention(heads = 2)",
            "attention(heads = 2, attn_dropout = 0.2, dropout = 0.1)",
        )
        .replace("ffn(hidden = 64)", "ffn(hidden = 64, dropout = 0.3)")
        .replace("stack layer * 1", "stack layer * 2 drop_path 0.5");
    assert_ne!(model, TINY);
    resume_check("resume-dropout", &model, None);
}

#[test]
fn resume_is_bit_identical_with_muon_and_drop_muon() {
    resume_check("resume-muon", TINY, Some("muon(lr = 0.02, adam_lr = 3e-3)"));
    resume_check(
        "resume-drop-muon",
        TINY,
        Some("drop_muon(lr = 0.02, adam_lr = 3e-3, weight_decay = 0.01)"),
    );
}

fn resume_check(tag: &str, model: &str, optimizer: Option<&str>) {
    let d = tmp(tag);
    let m = write_model(&d, model);
    let mut o = opts(&d.join("full"));
    o.settings.push(("steps".into(), "40".into()));
    o.settings.push(("eval_every".into(), "10".into()));
    o.settings.push(("clip".into(), "1.0".into()));
    if let Some(opt) = optimizer {
        o.settings.push(("optimizer".into(), opt.into()));
    }
    let full = train::train(&m, &o).unwrap();

    let mut o1 = o.clone();
    o1.out = Some(d.join("cut"));
    o1.stop_after = Some(17);
    let first = train::train(&m, &o1).unwrap();
    assert!(first.interrupted);
    assert_eq!(first.steps_done, 17);
    assert!(!d.join("cut/final.safetensors").exists());

    let mut o2 = o.clone();
    o2.out = None;
    o2.resume = Some(d.join("cut/checkpoint.safetensors"));
    let second = train::train(&m, &o2).unwrap();
    assert_eq!(second.steps_done, 40);
    assert_eq!(second.out_dir, d.join("cut"));

    let joined: Vec<u32> = first
        .losses
        .iter()
        .chain(&second.losses)
        .map(|(_, l)| l.to_bits())
        .collect();
    let whole: Vec<u32> = full.losses.iter().map(|(_, l)| l.to_bits()).collect();
    assert_eq!(joined, whole);
    assert_eq!(
        final_weights(&d.join("full")),
        final_weights(&d.join("cut"))
    );
    // The resumed log holds every step once.
    let (curve, _) = train::read_log(&d.join("cut/log.jsonl"));
    assert_eq!(curve.len(), 40);

    // A checkpoint refuses a different recipe.
    let mut o3 = o2.clone();
    o3.lr = Some(0.5);
    let e = train::train(&m, &o3).unwrap_err().to_string();
    assert!(e.contains("different training recipe"), "{e}");
}

#[test]
fn nan_is_caught_with_its_op_and_layer_and_keeps_the_checkpoint() {
    let d = tmp("nan");
    let m = write_model(&d, TINY);
    let mut o = opts(&d.join("run"));
    o.settings
        .push(("optimizer".into(), "sgd(lr = 1e30)".into()));
    o.settings.push(("eval_every".into(), "1".into()));
    let e = train::train(&m, &o).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, train::TrainError::NonFinite(nf) if nf.step == 2),
        "{msg}"
    );
    assert!(msg.contains("non-finite value at step 2"), "{msg}");
    assert!(msg.contains("first appears at node %"), "{msg}");
    // The op and the layer scope are named.
    assert!(msg.contains("` in `"), "{msg}");
    assert!(msg.contains("still holds step 1"), "{msg}");
    let ck = lamina::io::load_safetensors(&d.join("run/checkpoint.safetensors")).unwrap();
    assert!(ck.iter().all(|(_, t)| t.data.iter().all(|v| v.is_finite())));
}

#[test]
fn task_model_mismatch_is_a_clear_error() {
    let d = tmp("mismatch");
    let m = write_model(&d, &TINY.replace("p = p, ", "p = 11, "));
    let e = train::train(&m, &opts(&d.join("run")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("vocabulary of at least 12"), "{e}");
}

#[test]
fn train_section_errors_point_into_the_file() {
    let d = tmp("section");
    let m = write_model(&d, &TINY.replace("eval_every = 50", "eval_evry = 50"));
    let e = train::train(&m, &opts(&d.join("run")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown setting `eval_evry`"), "{e}");
    assert!(e.contains("m.lam:15"), "{e}");
    let m = write_model(&d, &TINY.replace("adamw(", "adam("));
    let e = train::train(&m, &opts(&d.join("run")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown optimizer `adam`"), "{e}");
    // Command-line settings are checked the same way.
    let m = write_model(&d, TINY);
    let mut o = opts(&d.join("run"));
    o.settings
        .push(("schedule".into(), "cosine(warmpu = 3)".into()));
    let e = train::train(&m, &o).unwrap_err().to_string();
    assert!(e.contains("unknown argument `warmpu`"), "{e}");
}

#[test]
fn train_section_prints_in_the_ast() {
    let m = lamina::syntax::parse(TINY).unwrap();
    let text = lamina::syntax::print::print_ast(&m);
    assert!(text.contains("  train\n    task = modular_addition(p = p, train_fraction = 0.8)\n"));
    // `train` stays usable as a constant name.
    assert!(lamina::syntax::parse("train = 3\n")
        .unwrap()
        .train
        .is_none());
    let e = lamina::syntax::parse("train {\n steps = 1\n steps = 2\n}\n").unwrap_err();
    assert!(e[0].message.contains("set twice"));
}

// ---- optimizer updates against hand-computed references -------------------------------

/// loss = sum(w * w * x) + sum(b * b): grad w = 2 w x, grad b = 2 b.
fn tiny_joint() -> lamina::ir::Graph {
    let mut g = GraphBuilder::new("t");
    let x = g.input("x", Type::f32(vec![2, 3]));
    let w = g
        .role_param("w", vec![2, 3], Init::Zeros, true, ParamRole::Matrix)
        .unwrap();
    let b = g
        .role_param("b", vec![3], Init::Zeros, true, ParamRole::Bias)
        .unwrap();
    let ww = g.mul(w, w).unwrap();
    let wwx = g.mul(ww, x).unwrap();
    let s1 = g.reduce_sum(wwx, vec![0, 1], false).unwrap();
    let bb = g.mul(b, b).unwrap();
    let s2 = g.reduce_sum(bb, vec![0], false).unwrap();
    let loss = g.add(s1, s2).unwrap();
    g.output("loss", loss);
    lamina::autodiff::differentiate(&g.finish()).unwrap()
}

struct Ref {
    w: Vec<f64>,
    b: Vec<f64>,
}

fn grads(r: &Ref, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    (
        r.w.iter().zip(x).map(|(w, x)| 2.0 * w * x).collect(),
        r.b.iter().map(|b| 2.0 * b).collect(),
    )
}

/// Run the step graph `steps` times on both backends, returning the final `w` and `b`.
fn run_steps(
    cfg: &OptimConfig,
    w0: &[f64],
    b0: &[f64],
    x: &[f64],
    lrs: &[f64],
    noise: &[Vec<f64>],
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let step = optim::step_graph(&tiny_joint(), cfg).unwrap();
    step.verify().unwrap();
    let mut results = vec![];
    for backend in [Backend::Interp, Backend::Jit] {
        let mut ex = train::exec::executor(&step, backend).unwrap();
        let mut params: Vec<Tensor> = step.params.iter().map(|p| Tensor::zeros(&p.ty())).collect();
        params[0] = Tensor::f32(vec![2, 3], w0.to_vec());
        params[1] = Tensor::f32(vec![3], b0.to_vec());
        for (t, lr) in lrs.iter().enumerate() {
            let sc = optim::scalars(cfg, t as u64 + 1, &|peak| peak / cfg.lr * lr);
            let inputs: Vec<Tensor> = step
                .inputs
                .iter()
                .map(|i| {
                    if i.name == "x" {
                        Tensor::f32(vec![2, 3], x.to_vec())
                    } else if let Some((_, v)) = sc.iter().find(|(n, _)| *n == i.name) {
                        Tensor::scalar(*v)
                    } else if i.name == "noise.w" {
                        Tensor::f32(vec![2, 3], noise[t][..6].to_vec())
                    } else {
                        Tensor::f32(vec![3], noise[t][6..].to_vec())
                    }
                })
                .collect();
            let outs = ex.run(&inputs, &params).unwrap();
            for (name, v) in outs.into_iter().skip(1) {
                let OutputRole::Update(p) = OutputRole::of(&name) else {
                    panic!("{name} is not an update")
                };
                let i = step.param_index(p).unwrap();
                params[i] = v;
            }
        }
        results.push((params[0].data.clone(), params[1].data.clone()));
    }
    results
}

fn close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
            "{what}: got {a:?}, expected {b:?}"
        );
    }
}

const W0: [f64; 6] = [0.5, -0.25, 1.0, 0.75, -1.5, 0.125];
const B0: [f64; 3] = [0.0, 0.5, -2.0];
const X: [f64; 6] = [1.0, 2.0, -1.0, 0.5, 0.25, 3.0];
const LRS: [f64; 3] = [0.1, 0.05, 0.02];

fn check(
    cfg: &OptimConfig,
    reference: impl Fn(&mut Ref, &[f64], &[f64], usize, f64),
    noise: &[Vec<f64>],
) {
    let mut r = Ref {
        w: W0.to_vec(),
        b: B0.to_vec(),
    };
    for (t, lr) in LRS.iter().enumerate() {
        let (mut gw, mut gb) = grads(&r, &X);
        if let Some(c) = cfg.clip {
            let n = (gw.iter().chain(&gb).map(|g| g * g).sum::<f64>()).sqrt();
            let f = (c / (n + 1e-6)).min(1.0);
            gw.iter_mut().chain(gb.iter_mut()).for_each(|g| *g *= f);
        }
        if let Some(nz) = cfg.noise {
            let s = (nz.eta / (1.0 + (t + 1) as f64).powf(nz.gamma)).sqrt();
            for (i, g) in gw.iter_mut().chain(gb.iter_mut()).enumerate() {
                *g += s * noise[t][i];
            }
        }
        reference(&mut r, &gw, &gb, t + 1, *lr);
    }
    for (w, b) in run_steps(cfg, &W0, &B0, &X, &LRS, noise) {
        close(&w, &r.w, "w");
        close(&b, &r.b, "b");
    }
}

/// Per-tensor state for the references.
#[derive(Default)]
struct St {
    a: Vec<f64>,
    c: Vec<f64>,
}

#[test]
fn sgd_momentum_matches_reference() {
    let cfg = OptimConfig {
        kind: OptimKind::Sgd {
            momentum: 0.9,
            nesterov: false,
        },
        weight_decay: 0.01,
        ..Default::default()
    };
    let st = std::cell::RefCell::new([St::default(), St::default()]);
    check(
        &cfg,
        |r, gw, gb, _t, lr| {
            let mut st = st.borrow_mut();
            for (k, (p, g)) in [(&mut r.w, gw), (&mut r.b, gb)].into_iter().enumerate() {
                if st[k].a.is_empty() {
                    st[k].a = vec![0.0; p.len()];
                }
                for i in 0..p.len() {
                    let d = g[i] + 0.01 * p[i];
                    st[k].a[i] = 0.9 * st[k].a[i] + d;
                    p[i] -= lr * st[k].a[i];
                }
            }
        },
        &[],
    );
}

fn adam_ref(lamb: bool, wd: f64) -> impl Fn(&mut Ref, &[f64], &[f64], usize, f64) {
    let st = std::cell::RefCell::new([St::default(), St::default()]);
    move |r, gw, gb, t, lr| {
        let (b1, b2, eps): (f64, f64, f64) = (0.9, 0.999, 1e-8);
        let mut st = st.borrow_mut();
        for (k, (p, g)) in [(&mut r.w, gw), (&mut r.b, gb)].into_iter().enumerate() {
            if st[k].a.is_empty() {
                st[k].a = vec![0.0; p.len()];
                st[k].c = vec![0.0; p.len()];
            }
            let mut u = vec![0.0; p.len()];
            for i in 0..p.len() {
                st[k].a[i] = b1 * st[k].a[i] + (1.0 - b1) * g[i];
                st[k].c[i] = b2 * st[k].c[i] + (1.0 - b2) * g[i] * g[i];
                let mh = st[k].a[i] / (1.0 - b1.powi(t as i32));
                let vh = st[k].c[i] / (1.0 - b2.powi(t as i32));
                u[i] = mh / (vh.sqrt() + eps) + wd * p[i];
            }
            let trust = if lamb {
                let pn = p.iter().map(|x| x * x).sum::<f64>().sqrt();
                let un = u.iter().map(|x| x * x).sum::<f64>().sqrt();
                if pn > 0.0 && un > 0.0 {
                    pn / un
                } else {
                    1.0
                }
            } else {
                1.0
            };
            for i in 0..p.len() {
                p[i] -= lr * trust * u[i];
            }
        }
    }
}

#[test]
fn adamw_matches_reference() {
    let cfg = OptimConfig {
        kind: OptimKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        weight_decay: 0.1,
        ..Default::default()
    };
    check(&cfg, adam_ref(false, 0.1), &[]);
}

#[test]
fn lamb_matches_reference() {
    let cfg = OptimConfig {
        kind: OptimKind::Lamb {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        weight_decay: 0.01,
        ..Default::default()
    };
    check(&cfg, adam_ref(true, 0.01), &[]);
}

#[test]
fn clipping_and_noise_match_reference() {
    let sgd = |r: &mut Ref, gw: &[f64], gb: &[f64], _t: usize, lr: f64| {
        for (p, g) in [(&mut r.w, gw), (&mut r.b, gb)] {
            for i in 0..p.len() {
                p[i] -= lr * g[i];
            }
        }
    };
    let plain = OptimConfig {
        kind: OptimKind::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        weight_decay: 0.0,
        ..Default::default()
    };
    // No clipping, no noise, no decay: exactly SGD.
    check(&plain, sgd, &[]);
    // A clip below the gradient norm (about 7 here) scales every gradient.
    let clipped = OptimConfig {
        clip: Some(0.5),
        ..plain.clone()
    };
    check(&clipped, sgd, &[]);
    // A clip above the norm changes nothing.
    check(
        &OptimConfig {
            clip: Some(100.0),
            ..plain.clone()
        },
        sgd,
        &[],
    );
    let noisy = OptimConfig {
        noise: Some(GradNoise {
            eta: 0.3,
            gamma: 0.55,
        }),
        clip: Some(0.5),
        ..plain
    };
    let noise: Vec<Vec<f64>> = (0..3)
        .map(|t| (0..9).map(|i| ((i * 7 + t * 3) % 5) as f64 - 2.0).collect())
        .collect();
    check(&noisy, sgd, &noise);
}

#[test]
fn step_graph_prints_and_names_its_state() {
    let cfg = OptimConfig::default();
    let step = optim::step_graph(&tiny_joint(), &cfg).unwrap();
    let names: Vec<&str> = step.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "loss",
            "new.optim.m.w",
            "new.optim.v.w",
            "new.w",
            "new.optim.m.b",
            "new.optim.v.b",
            "new.b"
        ]
    );
    assert!(step
        .params
        .iter()
        .any(|p| p.name == "optim.v.b" && !p.trainable));
    let text = lamina::ir::text::print(&step);
    assert_eq!(lamina::ir::text::parse(&text).unwrap(), step);
    // Interpreting and printing agree on the input list.
    let inputs: Vec<&str> = step.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(inputs, ["x", "lr", "bias_correction1", "bias_correction2"]);
    let _ = interp::Env {
        inputs: &[],
        params: &[],
    };
}

#[test]
fn compare_draws_one_plot_and_a_table() {
    let d = tmp("compare");
    let a = d.join("pre.lam");
    let b = d.join("peri.lam");
    std::fs::write(&a, TINY).unwrap();
    std::fs::write(&b, TINY.replace("stack layer", "norm peri\nstack layer")).unwrap();
    let mut o = opts(&d.join("cmp"));
    o.settings.push(("steps".into(), "20".into()));
    let (runs, svg) = train::compare(&[a, b], &o, false).unwrap();
    assert_eq!(runs.len(), 2);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        text.matches("<polyline").count(),
        4,
        "train and held-out per model"
    );
    assert!(text.contains("pre train") && text.contains("peri train"));
    let table = train::summary_table(&runs);
    assert_eq!(table.lines().count(), 3);
    assert!(table.contains("eval acc"));
}

/// Parameters kept in the JIT arena across steps give the same bits as the host round
/// trip, and a non-finite step writes nothing back.
#[test]
fn resident_jit_step_matches_host_round_trip() {
    let cfg = OptimConfig {
        kind: OptimKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        weight_decay: 0.1,
        ..Default::default()
    };
    let step = optim::step_graph(&tiny_joint(), &cfg).unwrap();
    let mut params: Vec<Tensor> = step.params.iter().map(|p| Tensor::zeros(&p.ty())).collect();
    params[0] = Tensor::f32(vec![2, 3], vec![0.5, -1.0, 0.25, 2.0, -0.75, 1.5]);
    params[1] = Tensor::f32(vec![3], vec![0.3, -0.2, 0.1]);
    let writeback: Vec<(usize, usize)> = step
        .outputs
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(o, out)| {
            let OutputRole::Update(p) = out.role() else {
                return None;
            };
            Some((o, step.param_index(p)?))
        })
        .collect();
    let inputs = |t: u64, x: f64| -> Vec<Tensor> {
        let sc = optim::scalars(&cfg, t + 1, &|_| 0.01);
        step.inputs
            .iter()
            .map(|i| match sc.iter().find(|(n, _)| *n == i.name) {
                Some((_, v)) => Tensor::scalar(*v as f32 as f64),
                None => Tensor::f32(i.ty.shape.clone(), vec![x; i.ty.numel()]),
            })
            .collect()
    };
    let mut host = train::exec::executor(&step, Backend::Jit).unwrap();
    let mut resident = train::exec::step_executor(&step, Backend::Jit, writeback).unwrap();
    resident.load_params(params.clone()).unwrap();
    for t in 0..5 {
        let outs = host.run(&inputs(t, 1.5), &params).unwrap();
        let r = resident.step(&inputs(t, 1.5)).unwrap();
        assert_eq!(r.loss.to_bits(), outs[0].1.data[0].to_bits());
        assert_eq!(r.non_finite, None);
        for (name, v) in outs.into_iter().skip(1) {
            let i = step
                .param_index(match OutputRole::of(&name) {
                    OutputRole::Update(p) => p,
                    _ => panic!("{name} is not an update"),
                })
                .unwrap();
            params[i] = v;
        }
        let got = resident.params().unwrap();
        for (a, b) in got.iter().zip(&params) {
            assert_eq!(a, b, "step {t}");
        }
    }
    let r = resident.step(&inputs(5, f64::INFINITY)).unwrap();
    assert!(r.non_finite.is_some());
    assert_eq!(resident.params().unwrap(), params);
}

#[test]
fn one_run_per_directory_and_no_silent_overwrite() {
    let d = tmp("lock");
    let m = write_model(&d, TINY);
    let run = d.join("run");
    let mut o = opts(&run);
    o.settings.push(("steps".into(), "5".into()));
    // A directory locked by another run is refused, naming the holder.
    let held = train::rundir::lock(&run).unwrap();
    let e = train::train(&m, &o).unwrap_err().to_string();
    assert!(
        e.contains(&format!("pid {}", std::process::id())),
        "names the holder: {e}"
    );
    assert!(!run.join("log.jsonl").exists(), "nothing written: {e}");
    drop(held);
    train::train(&m, &o).unwrap();
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    // Training again into the same directory is refused and leaves the run as it was.
    let e = train::train(&m, &o).unwrap_err().to_string();
    assert!(
        e.contains("already holds a run") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(run.join("log.jsonl")).unwrap(), log);
    // --force starts over.
    o.force = true;
    o.settings.push(("steps".into(), "3".into()));
    let s = train::train(&m, &o).unwrap();
    assert_eq!(s.steps_done, 3);
    let (curve, _) = train::read_log(&run.join("log.jsonl"));
    assert_eq!(curve.len(), 3);
}

#[test]
fn resume_refuses_damaged_incomplete_and_foreign_checkpoints() {
    use lamina::train::checkpoint;
    let d = tmp("damaged");
    let m = write_model(&d, TINY);
    let run = d.join("run");
    let mut o = opts(&run);
    o.settings.push(("steps".into(), "20".into()));
    o.settings.push(("eval_every".into(), "5".into()));
    o.stop_after = Some(7);
    train::train(&m, &o).unwrap();
    let ck = run.join("checkpoint.safetensors");
    let good = std::fs::read(&ck).unwrap();
    let mut r = o.clone();
    r.out = None;
    r.stop_after = None;
    r.resume = Some(ck.clone());
    let resume_err = |r: &TrainOptions| train::train(&m, r).unwrap_err().to_string();

    // One flipped bit in the last tensor's data.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x10;
    std::fs::write(&ck, &bad).unwrap();
    let e = resume_err(&r);
    assert!(e.contains("damaged") && e.contains("checksum"), "{e}");

    // A tensor missing, a step past the end: rewritten with a valid checksum.
    std::fs::write(&ck, &good).unwrap();
    let loaded = checkpoint::load(&ck).unwrap();
    let meta = |step: u64| checkpoint::Meta {
        step,
        config: loaded.meta["config"].clone(),
        data: loaded.meta["data"].clone(),
        model: loaded.meta["model"].clone(),
        backend: loaded.meta["backend"].clone(),
    };
    let fewer: Vec<_> = loaded
        .tensors
        .iter()
        .filter(|(n, _)| !n.starts_with("optim.v."))
        .cloned()
        .collect();
    checkpoint::save_named(&ck, &fewer, &meta(7)).unwrap();
    let e = resume_err(&r);
    assert!(e.contains("lacks `optim.v."), "{e}");
    checkpoint::save_named(&ck, &loaded.tensors, &meta(21)).unwrap();
    let e = resume_err(&r);
    assert!(e.contains("step 21, past the recipe's 20 steps"), "{e}");

    // The other backend: refused, naming the one to use.
    std::fs::write(&ck, &good).unwrap();
    let mut other = r.clone();
    other.backend = Some(Backend::Interp);
    let e = resume_err(&other);
    assert!(e.contains("--backend jit"), "{e}");

    // A temporary file of a killed writer is removed when the run starts; the intact
    // checkpoint resumes.
    let orphan = run.join(".checkpoint.safetensors.tmp.999999999");
    std::fs::write(&orphan, b"partial").unwrap();
    let s = train::train(&m, &r).unwrap();
    assert_eq!(s.steps_done, 20);
    assert!(!orphan.exists());
}

#[test]
fn nan_locator_passes_over_the_causal_mask() {
    let d = tmp("nan-mask");
    // The attention's causal mask is -inf by design; the scale 1e39 overflows f32.
    let m = write_model(
        &d,
        "input tokens(batch = 2, length = 6, vocab = 11)\nembed(dim = 8)\n\
         block b {\n  attn = attention(heads = 2)\n  f = ffn(hidden = 16)\n  \
         scheme [attn, f * 1e39]\n}\nstack b * 1\n",
    );
    let mut o = opts(&d.join("run"));
    o.settings.push(("task".into(), "copy".into()));
    o.settings.push(("steps".into(), "3".into()));
    let msg = train::train(&m, &o).unwrap_err().to_string();
    assert!(msg.contains("in `blocks.0.f`"), "{msg}");
    assert!(!msg.contains("causal_mask"), "{msg}");
}

/// `a [n, k] @ b [k, m]`, row-major, in f64.
fn matmul64(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            out[i * m + j] = (0..k).map(|l| a[i * k + l] * b[l * m + j]).sum();
        }
    }
    out
}

fn transpose64(a: &[f64], n: usize, m: usize) -> Vec<f64> {
    (0..m * n).map(|i| a[(i % n) * m + i / n]).collect()
}

/// Keller Jordan's `zeropower_via_newtonschulz5` in f64, on `g` `[r, c]`.
fn newton_schulz64(g: &[f64], r: usize, c: usize, steps: u32) -> Vec<f64> {
    let (a, b, cc) = optim::NS_COEFFS;
    let tall = r > c;
    let (rows, cols) = if tall { (c, r) } else { (r, c) };
    let mut x = if tall {
        transpose64(g, r, c)
    } else {
        g.to_vec()
    };
    let n = x.iter().map(|v| v * v).sum::<f64>().sqrt() + optim::NS_EPS;
    x.iter_mut().for_each(|v| *v /= n);
    for _ in 0..steps {
        let gram = matmul64(&x, &transpose64(&x, rows, cols), rows, cols, rows);
        let gg = matmul64(&gram, &gram, rows, rows, rows);
        let poly: Vec<f64> = gram.iter().zip(&gg).map(|(p, q)| b * p + cc * q).collect();
        let px = matmul64(&poly, &x, rows, rows, cols);
        x = x.iter().zip(&px).map(|(x, p)| a * x + p).collect();
    }
    if tall {
        transpose64(&x, rows, cols)
    } else {
        x
    }
}

fn muon_cfg(drop: bool) -> OptimConfig {
    let mut m = optim::MuonConfig::default();
    m.adam.lr = 0.5;
    OptimConfig {
        kind: if drop {
            OptimKind::DropMuon(m)
        } else {
            OptimKind::Muon(m)
        },
        lr: 1.0,
        weight_decay: 0.1,
        ..Default::default()
    }
}

/// Muon on the `matrix` parameter `w` (`[2, 3]`), its AdamW (lr 0.5 of the schedule,
/// betas (0.9, 0.95), eps 1e-10) on the `bias` parameter `b`, against an f64 reference.
#[test]
#[allow(clippy::needless_range_loop)]
fn muon_matches_reference() {
    let cfg = muon_cfg(false);
    let st = std::cell::RefCell::new([St::default(), St::default()]);
    check(
        &cfg,
        |r, gw, gb, t, lr| {
            let mut st = st.borrow_mut();
            let mu = 0.95;
            if st[0].a.is_empty() {
                st[0].a = vec![0.0; 6];
                st[1].a = vec![0.0; 3];
                st[1].c = vec![0.0; 3];
            }
            for i in 0..6 {
                st[0].a[i] = mu * st[0].a[i] + (1.0 - mu) * gw[i];
            }
            let u: Vec<f64> = (0..6)
                .map(|i| (1.0 - mu) * gw[i] + mu * st[0].a[i])
                .collect();
            let o = newton_schulz64(&u, 2, 3, 5);
            for i in 0..6 {
                r.w[i] -= lr * (o[i] + 0.1 * r.w[i]);
            }
            let (b1, b2, eps): (f64, f64, f64) = (0.9, 0.95, 1e-10);
            for i in 0..3 {
                st[1].a[i] = b1 * st[1].a[i] + (1.0 - b1) * gb[i];
                st[1].c[i] = b2 * st[1].c[i] + (1.0 - b2) * gb[i] * gb[i];
                let mh = st[1].a[i] / (1.0 - b1.powi(t as i32));
                let vh = st[1].c[i] / (1.0 - b2.powi(t as i32));
                r.b[i] -= 0.5 * lr * mh / (vh.sqrt() + eps);
            }
        },
        &[],
    );
}

/// The step graph's Newton–Schulz against the f64 reference (interpreter, f64 both), wide
/// and tall, with the result's singular values in the quintic's band: every eigenvalue of
/// `O O^T` (smaller side) lies in [0.5, 1.5] (singular values in ~[0.7, 1.2]).
#[test]
fn newton_schulz_matches_f64_and_orthogonalises() {
    for (r, c) in [(3usize, 5usize), (6, 4)] {
        let mut b = GraphBuilder::new("ns");
        let gi = b.input("g", Type::f32(vec![r, c]));
        let w = b
            .role_param("w", vec![r, c], Init::Zeros, true, ParamRole::Matrix)
            .unwrap();
        let s = b.reduce_sum(w, vec![0, 1], false).unwrap();
        b.output("loss", s);
        b.output("grad.w", gi);
        let joint = b.finish();
        let m = optim::MuonConfig {
            momentum: 0.0,
            nesterov: false,
            ..Default::default()
        };
        let cfg = OptimConfig {
            kind: OptimKind::Muon(m),
            lr: 1.0,
            weight_decay: 0.0,
            ..Default::default()
        };
        let step = optim::step_graph(&joint, &cfg).unwrap();
        // Well conditioned (a scaled identity plus a perturbation), as a gradient's
        // momentum typically is at the scale Newton–Schulz resolves in five steps.
        let g: Vec<f64> = (0..r * c)
            .map(|i| {
                let (row, col) = (i / c, i % c);
                let diag = if row == col {
                    1.0 + 0.3 * row as f64
                } else {
                    0.0
                };
                diag + 0.1 * (((i * 7 + 3) % 11) as f64 / 5.0 - 1.0)
            })
            .collect();
        let inputs: Vec<Tensor> = step
            .inputs
            .iter()
            .map(|i| match i.name.as_str() {
                "g" => Tensor::f32(vec![r, c], g.clone()),
                _ => Tensor::scalar(1.0),
            })
            .collect();
        let params: Vec<Tensor> = step.params.iter().map(|p| Tensor::zeros(&p.ty())).collect();
        let out = interp::run(
            &step,
            &interp::Env {
                inputs: &inputs,
                params: &params,
            },
        )
        .unwrap();
        let new_w = &out.iter().find(|(n, _)| n == "new.w").unwrap().1.data;
        let scale = (r as f64 / c as f64).max(1.0).sqrt();
        let want = newton_schulz64(&g, r, c, 5);
        for (got, want) in new_w.iter().zip(&want) {
            assert!((-got / scale - want).abs() < 1e-9, "{got} vs {want}");
        }
        // The singular values of the result: square roots of the eigenvalues of the
        // smaller Gram matrix (Jacobi rotations, f64).
        let (k, gram) = if r <= c {
            (r, matmul64(&want, &transpose64(&want, r, c), r, c, r))
        } else {
            (c, matmul64(&transpose64(&want, r, c), &want, c, r, c))
        };
        for s in symmetric_eigenvalues(gram, k) {
            let sigma = s.sqrt();
            assert!(
                (0.68..=1.2).contains(&sigma),
                "{r}x{c}: singular value {sigma} outside the quintic's band"
            );
        }
    }
}

/// The eigenvalues of a symmetric `[k, k]` matrix by cyclic Jacobi rotations.
fn symmetric_eigenvalues(mut a: Vec<f64>, k: usize) -> Vec<f64> {
    for _ in 0..100 {
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq.abs() < 1e-15 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for i in 0..k {
                    let (aip, aiq) = (a[i * k + p], a[i * k + q]);
                    a[i * k + p] = c * aip - s * aiq;
                    a[i * k + q] = s * aip + c * aiq;
                }
                for i in 0..k {
                    let (api, aqi) = (a[p * k + i], a[q * k + i]);
                    a[p * k + i] = c * api - s * aqi;
                    a[q * k + i] = s * api + c * aqi;
                }
            }
        }
    }
    (0..k).map(|i| a[i * k + i]).collect()
}

/// Drop-Muon: a parameter whose mask is 0 keeps its weights and its momentum bit for bit;
/// with mask 1 the step equals Muon's.
#[test]
fn drop_muon_mask_holds_a_dropped_parameter() {
    let joint = tiny_joint();
    let drop = optim::step_graph(&joint, &muon_cfg(true)).unwrap();
    let plain = optim::step_graph(&joint, &muon_cfg(false)).unwrap();
    assert!(drop.inputs.iter().any(|i| i.name == "mask.w"));
    assert!(!drop.inputs.iter().any(|i| i.name == "mask.b"));
    let params: Vec<Tensor> = drop
        .params
        .iter()
        .map(|p| {
            let n = p.ty().numel();
            Tensor::f32(
                p.shape.clone(),
                (0..n).map(|i| 0.25 + 0.1 * i as f64).collect(),
            )
        })
        .collect();
    let feed = |g: &lamina::ir::Graph, mask: f64| -> Vec<Tensor> {
        g.inputs
            .iter()
            .map(|i| match i.name.as_str() {
                "x" => Tensor::f32(vec![2, 3], X.to_vec()),
                "mask.w" => Tensor::scalar(mask),
                _ => Tensor::scalar(0.5),
            })
            .collect()
    };
    for backend in [Backend::Interp, Backend::Jit] {
        let mut ex = train::exec::executor(&drop, backend).unwrap();
        let held = ex.run(&feed(&drop, 0.0), &params).unwrap();
        for name in ["new.w", "new.optim.momentum.w"] {
            let p = name.trim_start_matches("new.");
            let before = &params[drop.param_index(p).unwrap()].data;
            let after = &held.iter().find(|(n, _)| n == name).unwrap().1.data;
            let bits = |v: &[f64]| v.iter().map(|x| (*x as f32).to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(before), bits(after), "{backend:?}: {name} moved");
        }
        let kept = ex.run(&feed(&drop, 1.0), &params).unwrap();
        let mut ex2 = train::exec::executor(&plain, backend).unwrap();
        let full = ex2.run(&feed(&plain, 1.0), &params).unwrap();
        for (name, v) in &full {
            let got = &kept.iter().find(|(n, _)| n == name).unwrap().1.data;
            close(got, &v.data, name);
        }
    }
}

/// The masks of a step are a pure function of (seed, step), progressive (a suffix of the
/// parameters), and never empty.
#[test]
fn drop_masks_are_a_random_suffix() {
    for t in 0..50 {
        let m = optim::drop_masks(3, t, 6);
        assert_eq!(m, optim::drop_masks(3, t, 6));
        assert_eq!(m[5], 1.0);
        let start = m.iter().position(|&x| x == 1.0).unwrap();
        assert!(m[start..].iter().all(|&x| x == 1.0));
    }
    let starts: std::collections::HashSet<usize> = (0..200)
        .map(|t| {
            optim::drop_masks(3, t, 6)
                .iter()
                .position(|&x| x == 1.0)
                .unwrap()
        })
        .collect();
    assert_eq!(starts.len(), 6, "every start index is drawn");
}

/// A tiny Vision Transformer on the built-in `shapes` task: 12x12 images in 3x3 patches,
/// five kinds of shape.
const TINY_VIT: &str = "\
input image(batch = 32, channels = 1, height = 12, width = 12)
embed(dim = 32, patch = 3)
block layer {
    attn = attention(heads = 2)
    ffn  = ffn(hidden = 64)
}
stack layer * 1
head classifier(classes = 5, pool = cls)
train {
    steps      = 300
    optimizer  = adamw(lr = 3e-3, weight_decay = 0.05)
    schedule   = cosine(warmup = 20)
    eval_every = 100
}
";

#[test]
fn tiny_vit_learns_shapes_well_above_chance() {
    let d = tmp("vit");
    let m = write_model(&d, TINY_VIT);
    let s = train::train(&m, &opts(&d.join("run"))).unwrap();
    assert_eq!(s.task, "shapes");
    let (_, last) = s.evals.last().expect("evaluated");
    let acc = last.accuracy.expect("a classifier has an accuracy");
    // Chance is 1/5; the held-out examples are drawn from their own stream.
    assert!(acc > 0.6, "held-out accuracy {acc}");
}
