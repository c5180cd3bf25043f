//! Gradient checks: every op's derived gradient against central finite differences.
//!
//! Each case builds a small random graph using one op (odd sizes such as 3, 5, 7), with
//! `loss = sum(op(...) * w)` for a fixed random `w` (a graph input, so the gradient is
//! nontrivial but `w` itself is not differentiated). The derived gradient of every trainable
//! parameter is evaluated by the reference interpreter (f64) and compared with central
//! differences `(L(x + h) - L(x - h)) / 2h`, `h = 1e-6 * max(|x|, 1)` (1e-5 for whole examples).
//!
//! Error measure, per parameter tensor (an infinity-norm relative error):
//! `max_j |g_j - fd_j| / max(max_j |g_j|, max_j |fd_j|, FLOOR)`; it must be <= 1e-6.
//! `FLOOR = 1e-3` makes a tensor whose gradient is tiny everywhere (e.g. an attention key
//! bias, whose exact gradient is zero since softmax ignores a per-row shift) compare with
//! absolute tolerance 1e-9, above the finite-difference rounding noise (~eps |L| / h).

use lamina::autodiff::differentiate;
use lamina::interp::{run, Env};
use lamina::ir::ops::MaskFill;
use lamina::ir::{Graph, GraphBuilder, Init, Op, Phase, Type, ValueId};
use lamina::ir::{UnaryOp, ViewOp};
use lamina::ir::{F64, SINUSOIDAL_BASE};
use lamina::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::{elaborate_small, example_sources, random_env};

const TOL: f64 = 1e-6;
const FLOOR: f64 = 1e-3;

type R = Result<ValueId, lamina::ir::IrError>;

/// A graph under construction together with the values of its inputs and parameters.
struct Setup {
    b: GraphBuilder,
    rng: ChaCha8Rng,
    inputs: Vec<Tensor>,
    params: Vec<Tensor>,
}

struct Case {
    graph: Graph,
    inputs: Vec<Tensor>,
    params: Vec<Tensor>,
}

impl Setup {
    fn new(seed: u64) -> Setup {
        Setup {
            b: GraphBuilder::new("case"),
            rng: ChaCha8Rng::seed_from_u64(seed),
            inputs: Vec::new(),
            params: Vec::new(),
        }
    }

    fn numel(shape: &[usize]) -> usize {
        shape.iter().product()
    }

    /// A parameter holding the given values.
    fn param_data(&mut self, name: &str, shape: &[usize], data: Vec<f64>, trainable: bool) -> R {
        let v = self.b.param(name, shape.to_vec(), Init::Zeros, trainable)?;
        self.params.push(Tensor::f32(shape.to_vec(), data));
        Ok(v)
    }

    /// A trainable parameter, uniform in [lo, hi].
    fn p_range(&mut self, shape: &[usize], lo: f64, hi: f64) -> R {
        let data = (0..Self::numel(shape))
            .map(|_| self.rng.gen_range(lo..hi))
            .collect();
        let name = format!("p{}", self.params.len());
        self.param_data(&name, shape, data, true)
    }

    /// A trainable parameter, uniform in [-1, 1].
    fn p(&mut self, shape: &[usize]) -> R {
        self.p_range(shape, -1.0, 1.0)
    }

    /// A trainable parameter with |x| in [0.2, 1.5], random sign (away from kinks and poles).
    fn p_away(&mut self, shape: &[usize]) -> R {
        let data = (0..Self::numel(shape))
            .map(|_| {
                let m = self.rng.gen_range(0.2..1.5);
                if self.rng.gen_bool(0.5) {
                    m
                } else {
                    -m
                }
            })
            .collect();
        let name = format!("p{}", self.params.len());
        self.param_data(&name, shape, data, true)
    }

    /// A random f32 graph input (not differentiated).
    fn input(&mut self, shape: &[usize]) -> ValueId {
        let data = (0..Self::numel(shape))
            .map(|_| self.rng.gen_range(-1.0..1.0))
            .collect();
        let name = format!("in{}", self.inputs.len());
        self.inputs.push(Tensor::f32(shape.to_vec(), data));
        self.b.input(name, Type::f32(shape.to_vec()))
    }

    /// An i32 input of ids in 0..max.
    fn ids(&mut self, shape: &[usize], max: usize) -> ValueId {
        let data = (0..Self::numel(shape))
            .map(|_| self.rng.gen_range(0..max) as f64)
            .collect();
        self.ids_data(shape, data)
    }

    fn ids_data(&mut self, shape: &[usize], data: Vec<f64>) -> ValueId {
        let name = format!("in{}", self.inputs.len());
        self.inputs.push(Tensor::i32(shape.to_vec(), data));
        self.b.input(name, Type::i32(shape.to_vec()))
    }

    /// `loss = sum(y * w)` with a fixed random `w`.
    fn finish(mut self, y: ValueId) -> Result<Case, String> {
        let shape = self.b.shape(y);
        let w = self.input(&shape);
        let m = self.b.mul(y, w)?;
        let loss = self.b.reduce_sum(m, (0..shape.len()).collect(), false)?;
        self.b.output("loss", loss);
        Ok(Case {
            graph: self.b.finish(),
            inputs: self.inputs,
            params: self.params,
        })
    }
}

fn loss_of(g: &Graph, inputs: &[Tensor], params: &[Tensor]) -> f64 {
    let out = run(g, &Env { inputs, params }).unwrap_or_else(|e| panic!("forward failed: {e}"));
    let (_, t) = out.iter().find(|(n, _)| n == "loss").expect("loss output");
    t.data[0]
}

/// The derived gradients (`grad.<name>` outputs of the joint graph), by param name.
fn derived_grads(case: &Case) -> (Graph, Vec<(String, Tensor)>) {
    let joint = differentiate(&case.graph).unwrap_or_else(|e| panic!("differentiate: {e}"));
    joint.verify().expect("joint graph verifies");
    let env = Env {
        inputs: &case.inputs,
        params: &case.params,
    };
    let out = run(&joint, &env).unwrap_or_else(|e| panic!("joint graph failed: {e}"));
    let grads = out
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix("grad.").map(|p| (p.to_string(), t)))
        .collect();
    (joint, grads)
}

/// Check every trainable parameter's gradient; returns the largest relative error.
fn gradcheck(case: &Case) -> f64 {
    gradcheck_with_step(case, 1e-6)
}

/// `gradcheck` with finite-difference step `step * max(|x|, 1)`.
fn gradcheck_with_step(case: &Case, step: f64) -> f64 {
    let (joint, grads) = derived_grads(case);
    let g = &case.graph;
    let trainable: Vec<usize> = (0..g.params.len())
        .filter(|&i| g.params[i].trainable)
        .collect();
    let names: Vec<&str> = trainable
        .iter()
        .map(|&i| g.params[i].name.as_str())
        .collect();
    let got: Vec<&str> = grads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        got, names,
        "one grad output per trainable param, in parameter order"
    );
    let forward = joint.nodes.iter().filter(|n| n.phase == Phase::Forward);
    assert_eq!(
        forward.count(),
        g.nodes.len(),
        "the forward nodes, each once"
    );
    // Only behind a `stop_gradient` may backward work run before the forward pass ends.
    if !g
        .nodes
        .iter()
        .any(|n| n.op == Op::Unary(UnaryOp::StopGradient))
    {
        assert!(joint.nodes[g.nodes.len()..]
            .iter()
            .all(|n| n.phase == Phase::Backward));
    }

    // Autodiff holds every stopped value constant; so do the central differences.
    let (g, inputs) = common::freeze_stopped(g, case.inputs.clone(), &case.params)
        .unwrap_or_else(|e| panic!("freezing stopped values: {e}"));
    let mut worst = 0.0f64;
    for (&pi, (name, grad)) in trainable.iter().zip(&grads) {
        assert_eq!(grad.shape, g.params[pi].shape, "grad.{name} shape");
        let mut params = case.params.clone();
        let mut fd = vec![0.0; grad.numel()];
        for (j, slot) in fd.iter_mut().enumerate() {
            let x = case.params[pi].data[j];
            let h = step * x.abs().max(1.0);
            params[pi].data[j] = x + h;
            let lp = loss_of(&g, &inputs, &params);
            params[pi].data[j] = x - h;
            let lm = loss_of(&g, &inputs, &params);
            params[pi].data[j] = x;
            *slot = (lp - lm) / (2.0 * h);
        }
        let max_abs = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let scale = max_abs(&grad.data).max(max_abs(&fd)).max(FLOOR);
        let diff = grad
            .data
            .iter()
            .zip(&fd)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let rel = diff / scale;
        assert!(
            rel <= TOL,
            "grad.{name}: relative error {rel:.3e} > {TOL:e}\nderived: {:?}\nfinite differences: {:?}",
            grad.data,
            fd
        );
        worst = worst.max(rel);
    }
    worst
}

type Build = fn(&mut Setup) -> R;

fn check_case(name: &str, seed: u64, build: Build) -> f64 {
    let mut s = Setup::new(seed);
    let y = build(&mut s).unwrap_or_else(|e| panic!("{name}: building the graph: {e}"));
    let case = s
        .finish(y)
        .unwrap_or_else(|e| panic!("{name}: finishing the graph: {e}"));
    let worst = gradcheck(&case);
    println!("{name}: max relative error: {worst:.2e}");
    worst
}

fn unary(s: &mut Setup, op: Op, x: ValueId) -> R {
    s.b.unary(op, x)
}

fn matmul_case(s: &mut Setup, a_shape: &[usize], b_shape: &[usize], ta: bool, tb: bool) -> R {
    let a = s.p(a_shape)?;
    let b = s.p(b_shape)?;
    s.b.matmul(a, b, ta, tb)
}

fn reduce_case(s: &mut Setup, axes: &[usize], keep: bool) -> R {
    let x = s.p(&[3, 5, 7])?;
    // tanh first, so the gradient reaching the reduction is not constant along its axes.
    let t = s.b.unary(Op::Unary(UnaryOp::Tanh), x)?;
    let r = s.b.reduce_sum(t, axes.to_vec(), keep)?;
    // Scaled down so the sigmoid is not saturated (finite differences stay well conditioned).
    let r = s.b.scale(r, 0.1)?;
    s.b.unary(Op::Unary(UnaryOp::Sigmoid), r)
}

fn broadcast_case(s: &mut Setup, from: &[usize], to: &[usize]) -> R {
    let x = s.p(from)?;
    let y = s.b.broadcast(x, to.to_vec())?;
    // A nonlinearity after the broadcast, so every copy gets a different gradient.
    s.b.unary(Op::Unary(UnaryOp::Tanh), y)
}

macro_rules! cases {
    ($($name:ident => $build:expr;)*) => {
        const ALL: &[(&str, Build)] = &[$((stringify!($name), $build)),*];
        $(
            #[test]
            fn $name() {
                let seed = ALL.iter().position(|(n, _)| *n == stringify!($name)).unwrap() as u64;
                check_case(stringify!($name), seed, $build);
            }
        )*
    };
}

cases! {
    // ---- elementwise unary ----
    neg => |s| { let x = s.p(&[3, 5])?; unary(s, Op::Unary(UnaryOp::Neg), x) };
    exp => |s| { let x = s.p(&[3, 5])?; unary(s, Op::Unary(UnaryOp::Exp), x) };
    log => |s| { let x = s.p_range(&[3, 5], 0.3, 2.0)?; unary(s, Op::Unary(UnaryOp::Log), x) };
    sqrt => |s| { let x = s.p_range(&[3, 5], 0.3, 2.0)?; unary(s, Op::Unary(UnaryOp::Sqrt), x) };
    rsqrt => |s| { let x = s.p_range(&[3, 5], 0.3, 2.0)?; unary(s, Op::Unary(UnaryOp::Rsqrt), x) };
    recip => |s| { let x = s.p_away(&[3, 5])?; unary(s, Op::Unary(UnaryOp::Recip), x) };
    tanh => |s| { let x = s.p_range(&[5, 7], -2.0, 2.0)?; unary(s, Op::Unary(UnaryOp::Tanh), x) };
    sigmoid => |s| { let x = s.p_range(&[5, 7], -3.0, 3.0)?; unary(s, Op::Unary(UnaryOp::Sigmoid), x) };
    relu => |s| { let x = s.p_away(&[5, 7])?; unary(s, Op::Unary(UnaryOp::Relu), x) };
    gelu => |s| { let x = s.p_range(&[5, 7], -3.0, 3.0)?; unary(s, Op::Unary(UnaryOp::Gelu), x) };
    gelu_tanh => |s| { let x = s.p_range(&[5, 7], -3.0, 3.0)?; unary(s, Op::Unary(UnaryOp::GeluTanh), x) };
    silu => |s| { let x = s.p_range(&[5, 7], -3.0, 3.0)?; unary(s, Op::Unary(UnaryOp::Silu), x) };
    scale => |s| { let x = s.p(&[3, 5])?; unary(s, Op::scale(-1.7), x) };
    add_scalar => |s| {
        let x = s.p(&[3, 5])?;
        let y = unary(s, Op::add_scalar(0.6), x)?;
        s.b.mul(y, y)
    };

    // ---- elementwise binary ----
    add => |s| { let a = s.p(&[5, 7])?; let b = s.p(&[5, 7])?; let y = s.b.add(a, b)?; s.b.mul(y, b) };
    sub => |s| { let a = s.p(&[5, 7])?; let b = s.p(&[5, 7])?; let y = s.b.sub(a, b)?; s.b.mul(y, a) };
    mul => |s| { let a = s.p(&[5, 7])?; let b = s.p(&[5, 7])?; s.b.mul(a, b) };
    mul_same_arg => |s| { let a = s.p(&[5, 7])?; s.b.mul(a, a) };
    div => |s| { let a = s.p(&[5, 7])?; let b = s.p_away(&[5, 7])?; s.b.div(a, b) };
    div_numerator_only => |s| { let a = s.p(&[3, 5])?; let b = s.input(&[3, 5]); let b = s.b.add_scalar(b, 3.0)?; s.b.div(a, b) };
    div_denominator_only => |s| { let a = s.input(&[3, 5]); let b = s.p_away(&[3, 5])?; s.b.div(a, b) };

    // ---- reductions ----
    reduce_axis0 => |s| reduce_case(s, &[0], false);
    reduce_axis1 => |s| reduce_case(s, &[1], false);
    reduce_axis2 => |s| reduce_case(s, &[2], false);
    reduce_axes02 => |s| reduce_case(s, &[0, 2], false);
    reduce_all => |s| reduce_case(s, &[0, 1, 2], false);
    reduce_axis0_keep => |s| reduce_case(s, &[0], true);
    reduce_axis1_keep => |s| reduce_case(s, &[1], true);
    reduce_axis2_keep => |s| reduce_case(s, &[2], true);
    reduce_axes12_keep => |s| reduce_case(s, &[1, 2], true);
    reduce_all_keep => |s| reduce_case(s, &[0, 1, 2], true);
    softmax => |s| { let x = s.p_range(&[3, 7], -2.0, 2.0)?; unary(s, Op::Softmax, x) };
    softmax_after_causal_mask => |s| {
        let x = s.p_range(&[2, 5, 5], -2.0, 2.0)?;
        let m = s.b.push(Op::CausalMask { fill: MaskFill::NegInf }, &[x])?;
        unary(s, Op::Softmax, m)
    };
    log_softmax => |s| { let x = s.p_range(&[3, 7], -2.0, 2.0)?; unary(s, Op::LogSoftmax, x) };
    log_softmax_rank3 => |s| { let x = s.p_range(&[2, 3, 5], -2.0, 2.0)?; unary(s, Op::LogSoftmax, x) };

    // ---- shape ----
    reshape => |s| {
        let x = s.p(&[3, 5, 7])?;
        let y = s.b.reshape(x, vec![15, 7])?;
        let y = s.b.unary(Op::Unary(UnaryOp::Tanh), y)?;
        s.b.reshape(y, vec![7, 15])
    };
    transpose_2d => |s| { let x = s.p(&[3, 5])?; let t = s.b.transpose(x, vec![1, 0])?; unary(s, Op::Unary(UnaryOp::Tanh), t) };
    transpose_3d => |s| { let x = s.p(&[3, 5, 7])?; let t = s.b.transpose(x, vec![2, 0, 1])?; unary(s, Op::Unary(UnaryOp::Tanh), t) };
    transpose_4d => |s| { let x = s.p(&[2, 3, 5, 7])?; s.b.transpose(x, vec![0, 2, 1, 3]) };
    broadcast_from_scalar => |s| broadcast_case(s, &[], &[3, 5]);
    broadcast_from_1n => |s| broadcast_case(s, &[1, 5], &[3, 5]);
    broadcast_from_n => |s| broadcast_case(s, &[5], &[2, 3, 5]);
    broadcast_from_col => |s| broadcast_case(s, &[3, 1], &[2, 3, 5]);
    broadcast_from_1_1 => |s| broadcast_case(s, &[1, 1], &[3, 7]);
    slice_middle => |s| { let x = s.p(&[3, 7])?; s.b.push(Op::View(ViewOp::Slice { axis: 1, start: 2, end: 5 }), &[x]) };
    slice_start => |s| { let x = s.p(&[3, 7])?; s.b.push(Op::View(ViewOp::Slice { axis: 1, start: 0, end: 3 }), &[x]) };
    slice_end => |s| { let x = s.p(&[5, 3])?; s.b.push(Op::View(ViewOp::Slice { axis: 0, start: 2, end: 5 }), &[x]) };
    slice_whole => |s| { let x = s.p(&[5, 3])?; s.b.push(Op::View(ViewOp::Slice { axis: 0, start: 0, end: 5 }), &[x]) };
    slice_rank3 => |s| {
        let x = s.p(&[2, 5, 3])?;
        let a = s.b.push(Op::View(ViewOp::Slice { axis: 1, start: 1, end: 4 }), &[x])?;
        let b = s.b.push(Op::View(ViewOp::Slice { axis: 1, start: 2, end: 5 }), &[x])?;
        s.b.mul(a, b)
    };
    concat_axis0 => |s| {
        let a = s.p(&[3, 5])?;
        let b = s.p(&[2, 5])?;
        let y = s.b.push(Op::Concat { axis: 0 }, &[a, b])?;
        unary(s, Op::Unary(UnaryOp::Tanh), y)
    };
    concat_axis1_three => |s| {
        let a = s.p(&[3, 2])?;
        let b = s.input(&[3, 1]);
        let c = s.p(&[3, 5])?;
        let y = s.b.push(Op::Concat { axis: 1 }, &[a, b, c, a])?;
        unary(s, Op::Unary(UnaryOp::Tanh), y)
    };
    concat_single => |s| { let a = s.p(&[3, 5])?; s.b.push(Op::Concat { axis: 1 }, &[a]) };

    // ---- matmul ----
    matmul_nn => |s| matmul_case(s, &[3, 5], &[5, 7], false, false);
    matmul_nt => |s| matmul_case(s, &[3, 5], &[7, 5], false, true);
    matmul_tn => |s| matmul_case(s, &[5, 3], &[5, 7], true, false);
    matmul_tt => |s| matmul_case(s, &[5, 3], &[7, 5], true, true);
    matmul_batched_nn => |s| matmul_case(s, &[2, 3, 5], &[2, 5, 7], false, false);
    matmul_batched_nt => |s| matmul_case(s, &[2, 3, 5], &[2, 7, 5], false, true);
    matmul_batched_tn => |s| matmul_case(s, &[2, 5, 3], &[2, 5, 7], true, false);
    matmul_batched_tt => |s| matmul_case(s, &[2, 5, 3], &[2, 7, 5], true, true);
    matmul_shared_nn => |s| matmul_case(s, &[2, 3, 5], &[5, 7], false, false);
    matmul_shared_nt => |s| matmul_case(s, &[2, 3, 5], &[7, 5], false, true);
    matmul_shared_tn => |s| matmul_case(s, &[2, 5, 3], &[5, 7], true, false);
    matmul_shared_tt => |s| matmul_case(s, &[2, 5, 3], &[7, 5], true, true);
    matmul_shared_rank4 => |s| matmul_case(s, &[2, 3, 5, 4], &[7, 4], false, true);
    matmul_shared_rank4_tn => |s| matmul_case(s, &[2, 3, 4, 5], &[4, 7], true, false);
    matmul_rank4 => |s| matmul_case(s, &[2, 3, 5, 4], &[2, 3, 4, 7], false, false);

    // ---- indexing ----
    gather_repeated_ids => |s| {
        let table = s.p(&[7, 5])?;
        let ids = s.ids_data(&[2, 5], vec![1.0, 3.0, 1.0, 6.0, 0.0, 3.0, 3.0, 5.0, 1.0, 2.0]);
        s.b.push(Op::Gather, &[table, ids])
    };
    gather_random_ids => |s| {
        let table = s.p(&[11, 3])?;
        let ids = s.ids(&[3, 7], 11);
        let g = s.b.push(Op::Gather, &[table, ids])?;
        unary(s, Op::Unary(UnaryOp::Tanh), g)
    };
    scatter_add => |s| {
        let src = s.p(&[2, 5, 3])?;
        let ids = s.ids_data(&[2, 5], vec![0.0, 4.0, 4.0, 6.0, 0.0, 2.0, 4.0, 1.0, 1.0, 3.0]);
        let y = s.b.push(Op::ScatterAdd { rows: 7 }, &[ids, src])?;
        unary(s, Op::Unary(UnaryOp::Tanh), y)
    };
    one_hot_times_param => |s| {
        let ids = s.ids(&[3, 5], 7);
        let oh = s.b.push(Op::OneHot { classes: 7 }, &[ids])?;
        let x = s.p(&[3, 5, 7])?;
        s.b.mul(oh, x)
    };
    causal_mask_zero => |s| { let x = s.p(&[2, 5, 5])?; s.b.push(Op::CausalMask { fill: MaskFill::Zero }, &[x]) };

    // ---- leaves mixed with params ----
    full_and_sinusoidal => |s| {
        let x = s.p(&[5, 4])?;
        let pe = s.b.push(Op::Sinusoidal { len: 5, dim: 4, base: F64(SINUSOIDAL_BASE) }, &[])?;
        let f = s.b.full(0.3, vec![5, 4])?;
        let y = s.b.add(x, pe)?;
        let y = s.b.mul(y, f)?;
        unary(s, Op::Unary(UnaryOp::Tanh), y)
    };

    // ---- composites ----
    layernorm => |s| {
        let (n, d) = (3, 7);
        let x = s.p(&[n, d])?;
        let w = s.p(&[d])?;
        let bias = s.p(&[d])?;
        let mean = s.b.reduce_sum(x, vec![1], true)?;
        let mean = s.b.scale(mean, 1.0 / d as f64)?;
        let mean = s.b.broadcast(mean, vec![n, d])?;
        let xc = s.b.sub(x, mean)?;
        let sq = s.b.mul(xc, xc)?;
        let var = s.b.reduce_sum(sq, vec![1], true)?;
        let var = s.b.scale(var, 1.0 / d as f64)?;
        let var = s.b.add_scalar(var, 1e-5)?;
        let inv = s.b.unary(Op::Unary(UnaryOp::Rsqrt), var)?;
        let inv = s.b.broadcast(inv, vec![n, d])?;
        let y = s.b.mul(xc, inv)?;
        let wb = s.b.broadcast(w, vec![n, d])?;
        let y = s.b.mul(y, wb)?;
        let bb = s.b.broadcast(bias, vec![n, d])?;
        s.b.add(y, bb)
    };
    attention_head => |s| {
        let (t, d) = (5, 3);
        let x = s.input(&[2, t, d]);
        let wq = s.p(&[d, d])?;
        let wk = s.p(&[d, d])?;
        let wv = s.p(&[d, d])?;
        let q = s.b.linear(x, wq, None)?;
        let k = s.b.linear(x, wk, None)?;
        let v = s.b.linear(x, wv, None)?;
        let sc = s.b.matmul(q, k, false, true)?;
        let sc = s.b.scale(sc, 1.0 / (d as f64).sqrt())?;
        let sc = s.b.push(Op::CausalMask { fill: MaskFill::NegInf }, &[sc])?;
        let p = s.b.unary(Op::Softmax, sc)?;
        s.b.matmul(p, v, false, false)
    };
    cross_entropy => |s| {
        let (n, c) = (5, 7);
        let x = s.input(&[n, 3]);
        let w = s.p(&[c, 3])?;
        let bias = s.p(&[c])?;
        let logits = s.b.linear(x, w, Some(bias))?;
        let lp = s.b.unary(Op::LogSoftmax, logits)?;
        let targets = s.ids(&[n], c);
        let oh = s.b.push(Op::OneHot { classes: c }, &[targets])?;
        let picked = s.b.mul(lp, oh)?;
        let total = s.b.reduce_sum(picked, vec![0, 1], false)?;
        s.b.scale(total, -1.0 / n as f64)
    };
    linear_vector => |s| {
        let x = s.p(&[5])?;
        let w = s.p(&[3, 5])?;
        let bias = s.p(&[3])?;
        s.b.linear(x, w, Some(bias))
    };
    param_used_twice => |s| {
        let x = s.input(&[3, 5]);
        let w = s.p(&[5, 5])?;
        let h = s.b.linear(x, w, None)?;
        let h = s.b.unary(Op::Unary(UnaryOp::Tanh), h)?;
        s.b.linear(h, w, None)
    };
    frozen_and_trainable => |s| {
        let x = s.input(&[3, 5]);
        let lift = s.b.param("lift", vec![7, 5], Init::Zeros, false)?;
        let data = (0..35).map(|_| s.rng.gen_range(-1.0..1.0)).collect();
        s.params.push(Tensor::f32(vec![7, 5], data));
        let w = s.p(&[7, 7])?;
        let u = s.b.linear(x, lift, None)?;
        let u = s.b.unary(Op::Unary(UnaryOp::Gelu), u)?;
        s.b.linear(u, w, None)
    };
    unused_trainable_param => |s| {
        let x = s.p(&[3, 5])?;
        let _unused = s.p(&[2, 2])?;
        unary(s, Op::Unary(UnaryOp::Exp), x)
    };
}

#[test]
fn all_ops_max_relative_error() {
    let mut worst = 0.0f64;
    for (seed, (name, build)) in ALL.iter().enumerate() {
        worst = worst.max(check_case(name, 1000 + seed as u64, *build));
    }
    println!("max relative error: {worst:.2e} over {} cases", ALL.len());
    assert!(worst <= TOL);
}

// ---- accumulation ----

/// Two tanh layers `h = tanh(h @ W^T)`; with `shared` both layers read one parameter.
fn two_layers(shared: bool, x: &Tensor, w: &Tensor, out_w: &Tensor) -> Case {
    let mut b = GraphBuilder::new("layers");
    let xv = b.input("x", x.ty());
    let ow = b.input("w", out_w.ty());
    let shape = w.shape.clone();
    let w0 = b
        .param("layer.0", shape.clone(), Init::Zeros, true)
        .unwrap();
    let w1 = if shared {
        w0
    } else {
        b.param("layer.1", shape, Init::Zeros, true).unwrap()
    };
    let mut h = xv;
    for wl in [w0, w1] {
        let t = b.linear(h, wl, None).unwrap();
        h = b.unary(Op::Unary(UnaryOp::Tanh), t).unwrap();
    }
    let m = b.mul(h, ow).unwrap();
    let loss = b.reduce_sum(m, vec![0, 1], false).unwrap();
    b.output("loss", loss);
    let params = if shared {
        vec![w.clone()]
    } else {
        vec![w.clone(), w.clone()]
    };
    Case {
        graph: b.finish(),
        inputs: vec![x.clone(), out_w.clone()],
        params,
    }
}

#[test]
fn shared_gradient_is_the_sum_of_separate_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut rand = |shape: Vec<usize>| {
        let n = shape.iter().product();
        Tensor::f32(shape, (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect())
    };
    let (x, w, ow) = (rand(vec![3, 5]), rand(vec![5, 5]), rand(vec![3, 5]));
    let shared = two_layers(true, &x, &w, &ow);
    let separate = two_layers(false, &x, &w, &ow);
    let worst = gradcheck(&shared).max(gradcheck(&separate));
    let (_, gs) = derived_grads(&shared);
    let (_, gsep) = derived_grads(&separate);
    assert_eq!(gs.len(), 1);
    assert_eq!(gsep.len(), 2);
    let mut max_diff = 0.0f64;
    for j in 0..w.numel() {
        let sum = gsep[0].1.data[j] + gsep[1].1.data[j];
        max_diff = max_diff.max((gs[0].1.data[j] - sum).abs());
    }
    // Both layers contribute (a dropped use would not be caught by a zero contribution).
    assert!(gsep[0].1.data.iter().any(|v| v.abs() > 1e-3));
    assert!(gsep[1].1.data.iter().any(|v| v.abs() > 1e-3));
    assert!(
        max_diff < 1e-12,
        "shared gradient differs from the sum by {max_diff:e}"
    );
    println!("max relative error: {worst:.2e}");
}

// ---- frozen parameters ----

/// `loss = sum(gelu(x @ A^T) @ B^T * w)`: with `frozen_a`, A is a frozen parameter; otherwise
/// A is a graph input holding the same values (no parameter at all).
fn frozen_graph(frozen_a: bool) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut rand = |shape: Vec<usize>| {
        let n = shape.iter().product();
        Tensor::f32(shape, (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect())
    };
    let (x, a, bw, ow) = (
        rand(vec![3, 5]),
        rand(vec![7, 5]),
        rand(vec![5, 7]),
        rand(vec![3, 5]),
    );
    let mut b = GraphBuilder::new("frozen");
    let xv = b.input("x", x.ty());
    let (av, mut inputs, mut params) = if frozen_a {
        let v = b.param("lift", vec![7, 5], Init::Zeros, false).unwrap();
        (v, vec![x], vec![a])
    } else {
        let v = b.input("lift", a.ty());
        (v, vec![x, a], vec![])
    };
    let bv = b.param("down", vec![5, 7], Init::Zeros, true).unwrap();
    params.push(bw);
    let u = b.linear(xv, av, None).unwrap();
    let u = b.unary(Op::Unary(UnaryOp::Gelu), u).unwrap();
    let y = b.linear(u, bv, None).unwrap();
    let owv = b.input("w", ow.ty());
    inputs.push(ow);
    let m = b.mul(y, owv).unwrap();
    let loss = b.reduce_sum(m, vec![0, 1], false).unwrap();
    b.output("loss", loss);
    Case {
        graph: b.finish(),
        inputs,
        params,
    }
}

#[test]
fn frozen_params_get_no_gradient_and_no_backward_nodes() {
    let frozen = frozen_graph(true);
    let constant = frozen_graph(false);
    let worst = gradcheck(&frozen);
    let (jf, gf) = derived_grads(&frozen);
    let (jc, gc) = derived_grads(&constant);
    assert!(jf.output("grad.lift").is_none());
    assert_eq!(gf.len(), 1);
    assert_eq!(gf[0].1, gc[0].1);
    let backward = |g: &Graph| {
        g.nodes
            .iter()
            .filter(|n| n.phase == Phase::Backward)
            .count()
    };
    // A frozen parameter costs exactly what a constant does: no node serves it alone.
    assert_eq!(backward(&jf), backward(&jc));
    // Its own matmul is never differentiated: d(x @ A^T)/dA would read x and produce [7, 5].
    assert!(!jf
        .nodes
        .iter()
        .any(|n| n.phase == Phase::Backward && n.ty.shape == vec![7, 5]));
    println!("max relative error: {worst:.2e}");
}

// ---- every example, run small ----

#[test]
fn every_example_small() {
    let examples = example_sources();
    assert!(!examples.is_empty());
    let mut worst = 0.0f64;
    for (seed, (name, src)) in examples.iter().enumerate() {
        let graph = elaborate_small(name, src);
        let (inputs, params) = random_env(&graph, 100 + seed as u64);
        let n = graph.param_count();
        assert!(
            n <= 20_000,
            "{name}: {n} parameter elements is too many for finite differences"
        );
        let case = Case {
            graph,
            inputs,
            params,
        };
        // Whole models have small gradients next to a loss of ~ln(vocab), so rounding noise
        // (eps |L| / h) dominates at h = 1e-6 (errors ~3e-7, dropping 10x at 1e-5, which
        // shows it is noise); h = 1e-5 keeps a margin while truncation stays ~1e-10.
        let w = gradcheck_with_step(&case, 1e-5);
        println!("{name} ({n} parameter elements): max relative error: {w:.2e}");
        worst = worst.max(w);
    }
    println!(
        "max relative error: {worst:.2e} over {} examples",
        examples.len()
    );
}

#[test]
fn shared_example_equals_sum_over_unshared_layers() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shared.lam"))
        .expect("examples/shared.lam");
    assert!(
        src.contains("stack layer * layers shared"),
        "shared.lam stacks shared layers"
    );
    let unshared_src = src.replace("stack layer * layers shared", "stack layer * layers");
    let shared = elaborate_small("shared", &src);
    let unshared = elaborate_small("unshared", &unshared_src);
    let (inputs, shared_params) = random_env(&shared, 5);
    // The same weights copied into every layer of the unshared model.
    let layer_name = |name: &str| -> Option<String> {
        let rest = name.strip_prefix("blocks.")?;
        let (_, tail) = rest.split_once('.')?;
        Some(format!("blocks.0.{tail}"))
    };
    let value_of = |name: &str| -> Tensor {
        let i = shared
            .param_index(name)
            .unwrap_or_else(|| panic!("shared has no {name}"));
        shared_params[i].clone()
    };
    let unshared_params: Vec<Tensor> = unshared
        .params
        .iter()
        .map(|p| value_of(&layer_name(&p.name).unwrap_or_else(|| p.name.clone())))
        .collect();
    let a = Case {
        graph: shared.clone(),
        inputs: inputs.clone(),
        params: shared_params.clone(),
    };
    let b = Case {
        graph: unshared.clone(),
        inputs,
        params: unshared_params,
    };
    let la = loss_of(&a.graph, &a.inputs, &a.params);
    let lb = loss_of(&b.graph, &b.inputs, &b.params);
    assert!(
        (la - lb).abs() <= 1e-12 * la.abs().max(1.0),
        "same weights, same loss"
    );
    let (_, ga) = derived_grads(&a);
    let (_, gb) = derived_grads(&b);
    let mut layers_seen = std::collections::BTreeSet::new();
    let mut worst = 0.0f64;
    for (name, g) in &ga {
        let mut sum = vec![0.0; g.numel()];
        let mut uses = 0;
        for (bn, bg) in &gb {
            if layer_name(bn).as_deref() == Some(name.as_str()) || bn == name {
                if let Some(layer) = bn.strip_prefix("blocks.").and_then(|r| r.split('.').next()) {
                    layers_seen.insert(layer.to_string());
                }
                for (s, v) in sum.iter_mut().zip(&bg.data) {
                    *s += v;
                }
                uses += 1;
            }
        }
        assert!(uses >= 1, "{name} has no counterpart in the unshared model");
        let scale = g.data.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        let diff = g
            .data
            .iter()
            .zip(&sum)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(
            diff / scale <= 1e-10,
            "grad.{name}: shared differs from the sum by {diff:e}"
        );
        worst = worst.max(diff / scale);
    }
    assert_eq!(layers_seen.len(), 2, "both unshared layers contribute");
    println!("shared vs sum over layers: max relative difference: {worst:.2e}");
}
