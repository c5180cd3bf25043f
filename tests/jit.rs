//! The JIT against the reference interpreter: every op on odd shapes, fused chains (with
//! kernel counts), views, indexing ops and the training step with its optimizer update.

mod common;
use lamina::interp::{run, Env};
use lamina::ir::ops::MaskFill;
use lamina::ir::{BinaryOp, UnaryOp, ViewOp};
use lamina::ir::{Graph, GraphBuilder, Init, Op, Type, ValueId};
use lamina::ir::{F64, SINUSOIDAL_BASE};
use lamina::kernels::{build_program, BuildOptions};
use lamina::runtime::compile_graph;
use lamina::tensor::Tensor;
use lamina::train::optim::{OptimConfig, OptimKind};
use lamina::train::step::TrainingStep;
use rand::{Rng, SeedableRng};

fn rng() -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(7)
}

fn random(shape: &[usize], lo: f64, hi: f64, r: &mut impl Rng) -> Tensor {
    let n = shape.iter().product();
    Tensor::f32(
        shape.to_vec(),
        (0..n).map(|_| r.gen_range(lo..hi) as f32 as f64).collect(),
    )
}

/// Max |a - b| over max |b|: the normalized error of a tensor (NaN-aware).
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape, b.shape);
    common::max_rel_err(&a.data, &b.data, 1e-30)
}

/// Compare every output of `g` between the JIT and the interpreter.
fn check(g: &Graph, inputs: &[Tensor], params: &[Tensor]) {
    let want = run(g, &Env { inputs, params }).expect("interpreter");
    let mut c = compile_graph(g).expect("compile");
    let got = c.run(inputs, params).expect("jit run");
    assert_eq!(want.len(), got.len(), "the same outputs");
    for ((n, w), (gn, o)) in want.iter().zip(&got) {
        assert_eq!(n, gn, "outputs in the same order");
        let e = rel_err(o, w);
        assert!(
            e <= 1e-4,
            "output {n}: relative error {e}\njit {:?}\ninterp {:?}",
            o.data,
            w.data
        );
    }
}

/// A graph over parameters `x0, x1, ...` with the given shapes; `f` builds the outputs.
fn graph(shapes: &[&[usize]], f: impl FnOnce(&mut GraphBuilder, &[ValueId])) -> Graph {
    let mut b = GraphBuilder::new("t");
    let xs: Vec<ValueId> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            b.param(format!("x{i}"), s.to_vec(), Init::Zeros, true)
                .unwrap()
        })
        .collect();
    f(&mut b, &xs);
    b.finish()
}

fn params_for(g: &Graph, lo: f64, hi: f64) -> Vec<Tensor> {
    let mut r = rng();
    g.params
        .iter()
        .map(|p| random(&p.shape, lo, hi, &mut r))
        .collect()
}

fn kernels(g: &Graph) -> usize {
    build_program(g, &BuildOptions::default())
        .unwrap()
        .kernel_count()
}

#[test]
fn unary_ops_match_interpreter() {
    let ops = [
        Op::Unary(UnaryOp::Neg),
        Op::Unary(UnaryOp::Exp),
        Op::Unary(UnaryOp::Tanh),
        Op::Unary(UnaryOp::Sigmoid),
        Op::Unary(UnaryOp::Relu),
        Op::Unary(UnaryOp::Gelu),
        Op::Unary(UnaryOp::GeluTanh),
        Op::Unary(UnaryOp::Silu),
        Op::scale(-1.5),
        Op::add_scalar(0.25),
    ];
    for shape in [&[3usize, 7][..], &[2, 37], &[5]] {
        for op in &ops {
            let g = graph(&[shape], |b, x| {
                let y = b.unary(op.clone(), x[0]).unwrap();
                b.output("y", y);
            });
            check(&g, &[], &params_for(&g, -5.0, 5.0));
        }
        for op in [
            Op::Unary(UnaryOp::Log),
            Op::Unary(UnaryOp::Sqrt),
            Op::Unary(UnaryOp::Rsqrt),
            Op::Unary(UnaryOp::Recip),
        ] {
            let g = graph(&[shape], |b, x| {
                let y = b.unary(op.clone(), x[0]).unwrap();
                b.output("y", y);
            });
            check(&g, &[], &params_for(&g, 0.01, 20.0));
        }
    }
}

#[test]
fn binary_ops_match_interpreter() {
    let ops = [
        Op::Binary(BinaryOp::Add),
        Op::Binary(BinaryOp::Sub),
        Op::Binary(BinaryOp::Mul),
        Op::Binary(BinaryOp::Div),
        Op::Binary(BinaryOp::ReluGrad),
        Op::Binary(BinaryOp::GeluGrad),
        Op::Binary(BinaryOp::GeluTanhGrad),
        Op::Binary(BinaryOp::SiluGrad),
    ];
    for shape in [&[3usize, 5][..], &[4, 19]] {
        for op in &ops {
            let g = graph(&[shape, shape], |b, x| {
                let y = b.push(op.clone(), &[x[0], x[1]]).unwrap();
                b.output("y", y);
            });
            let mut p = params_for(&g, -4.0, 4.0);
            if *op == Op::Binary(BinaryOp::Div) {
                p[1] = random(shape, 0.5, 3.0, &mut rng());
            }
            check(&g, &[], &p);
        }
    }
}

#[test]
fn reductions_match_interpreter() {
    let cases: Vec<(Vec<usize>, Vec<usize>, bool)> = vec![
        (vec![3, 7], vec![1], true),
        (vec![3, 7], vec![1], false),
        (vec![2, 3, 5], vec![0], false),
        (vec![2, 3, 5], vec![0, 1], false),
        (vec![2, 3, 5], vec![1], true),
        (vec![2, 3, 5], vec![0, 2], false),
        (vec![2, 3, 5], vec![0, 1, 2], false),
        (vec![37], vec![0], true),
        (vec![130, 9], vec![0], false),
    ];
    for (shape, axes, keep) in cases {
        let g = graph(&[&shape], |b, x| {
            let y = b.reduce_sum(x[0], axes.clone(), keep).unwrap();
            b.output("y", y);
        });
        check(&g, &[], &params_for(&g, -1.0, 1.0));
    }
}

#[test]
fn softmax_and_masks_match_interpreter() {
    for shape in [&[4usize, 37][..], &[3, 8], &[1]] {
        for op in [Op::Softmax, Op::LogSoftmax] {
            let g = graph(&[shape], |b, x| {
                let y = b.unary(op.clone(), x[0]).unwrap();
                b.output("y", y);
            });
            check(&g, &[], &params_for(&g, -6.0, 6.0));
        }
    }
    for fill in [MaskFill::NegInf, MaskFill::Zero] {
        let g = graph(&[&[2, 3, 9, 9]], |b, x| {
            let s = b.scale(x[0], 0.5).unwrap();
            let m = b.push(Op::CausalMask { fill }, &[s]).unwrap();
            let y = if fill == MaskFill::NegInf {
                b.unary(Op::Softmax, m).unwrap()
            } else {
                m
            };
            b.output("y", y);
        });
        check(&g, &[], &params_for(&g, -3.0, 3.0));
        assert_eq!(kernels(&g), 1, "scale, mask and softmax fuse");
    }
}

#[test]
fn matmuls_match_interpreter() {
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let (m, k, n) = (5, 7, 3);
        let a = if ta { vec![2, k, m] } else { vec![2, m, k] };
        let bs = if tb { vec![n, k] } else { vec![k, n] };
        let g = graph(&[&a, &bs], |b, x| {
            let y = b.matmul(x[0], x[1], ta, tb).unwrap();
            b.output("y", y);
        });
        check(&g, &[], &params_for(&g, -1.0, 1.0));
        let bb = if tb { vec![2, n, k] } else { vec![2, k, n] };
        let g = graph(&[&a, &bb], |b, x| {
            let y = b.matmul(x[0], x[1], ta, tb).unwrap();
            b.output("y", y);
        });
        check(&g, &[], &params_for(&g, -1.0, 1.0));
    }
    // Attention-style: heads split by reshape + transpose (strided operands, no copies).
    let g = graph(&[&[2, 6, 8], &[2, 6, 8]], |b, x| {
        let q = b.reshape(x[0], vec![2, 6, 2, 4]).unwrap();
        let q = b.transpose(q, vec![0, 2, 1, 3]).unwrap();
        let k = b.reshape(x[1], vec![2, 6, 2, 4]).unwrap();
        let k = b.transpose(k, vec![0, 2, 1, 3]).unwrap();
        let s = b.matmul(q, k, false, true).unwrap();
        let o = b.matmul(s, q, false, false).unwrap();
        let o = b.transpose(o, vec![0, 2, 1, 3]).unwrap();
        let o = b.reshape(o, vec![2, 6, 8]).unwrap();
        b.output("y", o);
    });
    check(&g, &[], &params_for(&g, -1.0, 1.0));
}

#[test]
fn generated_matmul_microkernels_match_interpreter() {
    // Tile-divisible shapes small enough for the generated microkernels, every transpose.
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let (m, k, n) = (8, 12, 16);
        let a = if ta { vec![3, k, m] } else { vec![3, m, k] };
        let bs = if tb { vec![n, k] } else { vec![k, n] };
        let bb = if tb { vec![3, n, k] } else { vec![3, k, n] };
        for b_shape in [&bs, &bb] {
            let g = graph(&[&a, b_shape], |b, x| {
                let y = b.matmul(x[0], x[1], ta, tb).unwrap();
                b.output("y", y);
            });
            check(&g, &[], &params_for(&g, -1.0, 1.0));
        }
    }
    let progs = [false, true].map(|tb| {
        let w: &[usize] = if tb { &[16, 12] } else { &[12, 16] };
        let g = graph(&[&[8, 12], w], |b, x| {
            let y = b.matmul(x[0], x[1], false, tb).unwrap();
            b.output("y", y);
        });
        lamina::kernels::print_program(&build_program(&g, &Default::default()).unwrap())
    });
    assert!(progs.iter().any(|p| p.contains("jit-dot")), "{}", progs[1]);
    assert!(progs.iter().any(|p| p.contains("jit-axpy")), "{}", progs[0]);
}

#[test]
fn views_and_concat_match_interpreter() {
    let g = graph(&[&[3, 5], &[5], &[3, 1], &[3, 2]], |b, x| {
        let t = b.transpose(x[0], vec![1, 0]).unwrap();
        let tt = b.transpose(t, vec![1, 0]).unwrap();
        let bias = b.broadcast(x[1], vec![3, 5]).unwrap();
        let col = b.broadcast(x[2], vec![3, 5]).unwrap();
        let y = b.add(tt, bias).unwrap();
        let y = b.mul(y, col).unwrap();
        let s = b
            .push(
                Op::View(ViewOp::Slice {
                    axis: 1,
                    start: 1,
                    end: 4,
                }),
                &[y],
            )
            .unwrap();
        let c = b.push(Op::Concat { axis: 1 }, &[s, x[3]]).unwrap();
        let c0 = b.push(Op::Concat { axis: 0 }, &[s, s]).unwrap();
        b.output("t", t);
        b.output("c", c);
        b.output("c0", c0);
        let full = b.full(2.0, vec![3, 5]).unwrap();
        let f = b.mul(full, x[0]).unwrap();
        b.output("f", f);
        b.output("full", full);
    });
    check(&g, &[], &params_for(&g, -1.0, 1.0));
}

#[test]
fn indexing_ops_match_interpreter() {
    let mut b = GraphBuilder::new("idx");
    let ids = b.input("ids", Type::i32(vec![2, 3]));
    let table = b.param("emb", vec![7, 5], Init::Zeros, true).unwrap();
    let pos = b.param("pos", vec![3, 5], Init::Zeros, true).unwrap();
    let e = b.push(Op::Gather, &[table, ids]).unwrap();
    let pb = b.broadcast(pos, vec![2, 3, 5]).unwrap();
    let h = b.add(e, pb).unwrap();
    let oh = b.push(Op::OneHot { classes: 7 }, &[ids]).unwrap();
    let sc = b.push(Op::ScatterAdd { rows: 7 }, &[ids, h]).unwrap();
    let sin = b
        .push(
            Op::Sinusoidal {
                len: 3,
                dim: 5,
                base: F64(SINUSOIDAL_BASE),
            },
            &[],
        )
        .unwrap();
    b.output("h", h);
    b.output("oh", oh);
    b.output("sc", sc);
    b.output("sin", sin);
    let g = b.finish();
    let inputs = [Tensor::i32(vec![2, 3], vec![0.0, 6.0, 3.0, 3.0, 1.0, 0.0])];
    check(&g, &inputs, &params_for(&g, -1.0, 1.0));
    // Out-of-range ids are an error, not a wild read.
    let mut c = compile_graph(&g).unwrap();
    let bad = [Tensor::i32(vec![2, 3], vec![0.0, 7.0, 3.0, 3.0, 1.0, 0.0])];
    assert!(c.run(&bad, &params_for(&g, -1.0, 1.0)).is_err());
}

/// LayerNorm built the way elaboration builds it, from primitives.
fn layer_norm(b: &mut GraphBuilder, x: ValueId, w: ValueId, bias: ValueId) -> ValueId {
    let shape = b.shape(x);
    let d = *shape.last().unwrap();
    let mut kshape = shape.clone();
    *kshape.last_mut().unwrap() = 1;
    let last = shape.len() - 1;
    let s = b.reduce_sum(x, vec![last], true).unwrap();
    let mean = b.scale(s, 1.0 / d as f64).unwrap();
    let mb = b.broadcast(mean, shape.clone()).unwrap();
    let xc = b.sub(x, mb).unwrap();
    let sq = b.mul(xc, xc).unwrap();
    let vs = b.reduce_sum(sq, vec![last], true).unwrap();
    let var = b.scale(vs, 1.0 / d as f64).unwrap();
    let ve = b.add_scalar(var, 1e-5).unwrap();
    let rstd = b.unary(Op::Unary(UnaryOp::Rsqrt), ve).unwrap();
    let rb = b.broadcast(rstd, shape.clone()).unwrap();
    let xn = b.mul(xc, rb).unwrap();
    let wb = b.broadcast(w, shape.clone()).unwrap();
    let y = b.mul(xn, wb).unwrap();
    let bb = b.broadcast(bias, shape).unwrap();
    b.add(y, bb).unwrap()
}

#[test]
fn layer_norm_is_one_kernel() {
    let g = graph(&[&[2, 3, 10], &[10], &[10]], |b, x| {
        let y = layer_norm(b, x[0], x[1], x[2]);
        b.output("y", y);
    });
    check(&g, &[], &params_for(&g, -2.0, 2.0));
    assert_eq!(kernels(&g), 1);
}

#[test]
fn bias_activation_residual_fuse_after_matmul() {
    let g = graph(&[&[6, 9], &[13, 9], &[13], &[6, 13]], |b, x| {
        let h = b.linear(x[0], x[1], Some(x[2])).unwrap();
        let h = b.unary(Op::Unary(UnaryOp::Gelu), h).unwrap();
        let h = b.scale(h, 0.5).unwrap();
        let y = b.add(h, x[3]).unwrap();
        b.output("y", y);
    });
    check(&g, &[], &params_for(&g, -1.0, 1.0));
    assert_eq!(kernels(&g), 2, "matmul + one fused epilogue kernel");
}

/// A tiny regression model with hand-written gradients: loss = sum((x W^T)^2) / 2.
fn tiny_training_graph() -> Graph {
    let mut b = GraphBuilder::new("train");
    let x = b.input("x", Type::f32(vec![4, 5]));
    let w = b
        .role_param(
            "w",
            vec![3, 5],
            Init::Zeros,
            true,
            lamina::ir::ParamRole::Matrix,
        )
        .unwrap();
    let y = b.matmul(x, w, false, true).unwrap();
    let sq = b.mul(y, y).unwrap();
    let s = b.reduce_sum(sq, vec![0, 1], false).unwrap();
    let loss = b.scale(s, 0.5).unwrap();
    let gw = b.matmul(y, x, true, false).unwrap();
    b.output("loss", loss);
    b.output("logits", y);
    b.output("grad.w", gw);
    b.finish()
}

/// The resident step of `CompiledGraph::step` against the interpreter running the same
/// step graph: the loss, and every `new.*` output written back into its parameter.
fn check_step(name: &str, step: &TrainingStep, inputs: &[Tensor], params: &[Tensor]) {
    let want = run(&step.graph, &Env { inputs, params }).unwrap();
    let mut c = compile_graph(&step.graph).unwrap();
    c.load_params(params).unwrap();
    let r = c.step(inputs, &step.writeback).unwrap();
    assert_eq!(r.non_finite, None, "{name}");
    let loss = want[0].1.data[0];
    assert!(
        (r.loss as f64 - loss).abs() <= 1e-4 * loss.abs().max(1e-6),
        "{name}: loss {} against {loss}",
        r.loss
    );
    assert!(
        !step.writeback.is_empty(),
        "{name}: nothing is written back"
    );
    let now = c.params().unwrap();
    // An update is the old value plus a small change: its error is measured against the
    // size of the change, not of the parameter. Changes that vanish analytically (a key
    // bias under softmax) are measured against 1e-3 of the largest change of the step.
    let delta = |new: &Tensor, old: &Tensor| -> Vec<f64> {
        new.data.iter().zip(&old.data).map(|(a, b)| a - b).collect()
    };
    let largest = step
        .writeback
        .iter()
        .flat_map(|&(o, p)| delta(&want[o].1, &params[p]))
        .fold(0f64, |m, x| m.max(x.abs()));
    for &(o, p) in &step.writeback {
        let (out, w) = &want[o];
        let got = delta(&now[p], &params[p]);
        let exp = delta(w, &params[p]);
        let e = common::max_rel_err(&got, &exp, 1e-3 * largest);
        assert!(e <= 1e-3, "{name}: {out}: relative error {e} of the update");
    }
}

fn optim(kind: OptimKind, lr: f64) -> OptimConfig {
    OptimConfig {
        kind,
        lr,
        ..OptimConfig::default()
    }
}

/// SGD with momentum, AdamW, LAMB, Muon and Drop-Muon on a graph whose gradient has no entry near zero
/// (Adam's first step divides each gradient by its own size).
#[test]
fn optimizer_steps_match_interpreter() {
    let g = tiny_training_graph();
    let mut r = rng();
    let x = random(&[4, 5], 0.5, 1.0, &mut r);
    let w = random(&[3, 5], 0.5, 1.0, &mut r);
    let sgd = OptimKind::Sgd {
        momentum: 0.9,
        nesterov: false,
    };
    let adam = OptimConfig::default().kind;
    let lamb = OptimKind::Lamb {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-6,
    };
    let muon = OptimKind::Muon(Default::default());
    let drop_muon = OptimKind::DropMuon(Default::default());
    for kind in [sgd, adam, lamb, muon, drop_muon] {
        let name = kind.name();
        let step = TrainingStep::new(&g, &optim(kind, 0.1), 0).unwrap();
        let mut params = vec![w.clone()];
        params.extend(
            lamina::io::init_params(&step.graph, 0)
                .unwrap()
                .into_iter()
                .skip(1),
        );
        // The third step, so that the state tensors are not zero.
        for t in 0..3 {
            let inputs = step.inputs(vec![x.clone()], t, &|peak| peak);
            check_step(name, &step, &inputs, &params);
            let out = run(
                &step.graph,
                &Env {
                    inputs: &inputs,
                    params: &params,
                },
            )
            .unwrap();
            for &(o, p) in &step.writeback {
                params[p] = out[o].1.clone();
            }
        }
    }
}

/// Every example, small (d = 16, batch 2 x 5 tokens): one training step through the JIT,
/// as `lamina train` runs it, against the interpreter running the same step graph.
#[test]
fn examples_train_like_the_interpreter() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "lam"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        let m = lamina::syntax::parse(&src).unwrap();
        // The gallery's sizes are constants; run them small, but wider than the gradient
        // checks (d = 16) so vector bodies and tails both run.
        let mut ov = common::small_overrides(&src);
        for o in ov.iter_mut().filter(|o| o.name == "d") {
            o.value = 16.0;
        }
        let g = lamina::elab::elaborate(&m, "m", &ov).unwrap();
        let j = lamina::autodiff::differentiate(&g).unwrap();
        // SGD with momentum: an update linear in the gradient, so float noise in a gradient
        // that vanishes analytically stays noise (Adam's first step would amplify it to lr).
        let kind = OptimKind::Sgd {
            momentum: 0.9,
            nesterov: false,
        };
        let step = TrainingStep::new(&j, &optim(kind, 0.05), 0).unwrap();
        // Weights spread around their inits (wider than a 0.02 embedding) so activations are
        // not all linear; the same helper the gradient checks use. Optimizer state starts at
        // zero, as in training.
        let (batch, model) = common::random_env(&j, 17);
        let mut params: Vec<Tensor> = model
            .into_iter()
            .map(|t| {
                Tensor::f32(
                    t.shape.clone(),
                    t.data.iter().map(|&x| x as f32 as f64).collect(),
                )
            })
            .collect();
        let n = params.len();
        params.extend(
            lamina::io::init_params(&step.graph, 0)
                .unwrap()
                .into_iter()
                .skip(n),
        );
        let inputs = step.inputs(batch, 0, &|peak| peak);
        check_step(&format!("{path:?}"), &step, &inputs, &params);
    }
}

/// A model big enough that loop kernels, column reductions and GEMMs are split across both
/// threads (the small models above all run single-threaded): loss, logits and every
/// gradient still match the interpreter.
#[test]
fn two_thread_kernels_match_the_interpreter() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/transformer.lam");
    let src = std::fs::read_to_string(path).unwrap();
    let m = lamina::syntax::parse(&src).unwrap();
    let sizes = [
        ("d", 64),
        ("heads", 4),
        ("layers", 1),
        ("batch", 4),
        ("length", 64),
        ("vocab", 32),
    ];
    let ov: Vec<_> = sizes
        .iter()
        .map(|(name, v)| lamina::elab::Override {
            name: name.to_string(),
            value: *v as f64,
            is_int: true,
        })
        .collect();
    let g = lamina::elab::elaborate(&m, "big", &ov).unwrap();
    // The FFN hidden state [4, 64, 256] and the attention scores [4, 4, 64, 64] have 65536
    // elements each, past the runtime's thresholds for splitting work.
    let j = lamina::autodiff::differentiate(&g).unwrap();
    let params = lamina::io::init_params(&j, 3).unwrap();
    let inputs = lamina::io::random_batch(&j, 3).unwrap();
    let want = run(
        &j,
        &Env {
            inputs: &inputs,
            params: &params,
        },
    )
    .unwrap();
    let got = compile_graph(&j).unwrap().run(&inputs, &params).unwrap();
    // The key bias's gradient vanishes analytically (softmax ignores a constant shift), so
    // gradients are measured against at least 1e-3 of the largest one, as in the examples test.
    let gmax = want
        .iter()
        .filter(|(n, _)| n.starts_with("grad."))
        .flat_map(|(_, w)| w.data.iter().map(|x| x.abs()))
        .fold(0f64, f64::max);
    assert_eq!(want.len(), got.len());
    for ((n, w), (gn, o)) in want.iter().zip(&got) {
        assert_eq!(n, gn);
        let floor = if n.starts_with("grad.") {
            1e-3 * gmax
        } else {
            1e-30
        };
        let e = common::max_rel_err(&o.data, &w.data, floor);
        assert!(e <= 1e-4, "output {n}: relative error {e}");
    }
}
