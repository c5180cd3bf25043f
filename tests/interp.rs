//! The reference interpreter against hand calculations and independent re-implementations.

use lamina::interp::{self, eval, run, Env};
use lamina::ir::ops::MaskFill;
use lamina::ir::{BinaryOp, UnaryOp, ViewOp};
use lamina::ir::{Graph, GraphBuilder, Init, Op, Type, ValueId};
use lamina::ir::{F64, SINUSOIDAL_BASE};
use lamina::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn random(r: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::f32(
        shape.to_vec(),
        (0..n).map(|_| r.gen_range(-2.0..2.0)).collect(),
    )
}

fn ids(r: &mut ChaCha8Rng, shape: &[usize], limit: usize) -> Tensor {
    let n = shape.iter().product();
    Tensor::i32(
        shape.to_vec(),
        (0..n).map(|_| r.gen_range(0..limit) as f64).collect(),
    )
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w}"
        );
    }
}

/// Run a graph built with only inputs (no params) and return its single output.
fn run_single(g: &Graph, inputs: &[Tensor]) -> Tensor {
    let out = run(
        g,
        &Env {
            inputs,
            params: &[],
        },
    )
    .expect("interpreter failed");
    assert_eq!(out.len(), 1);
    out.into_iter().next().unwrap().1
}

/// A graph `op(x_0, ..., x_n)` over f32 inputs of the given shapes.
fn op_graph(op: Op, tys: &[Type]) -> Graph {
    let mut b = GraphBuilder::new("op");
    let args: Vec<ValueId> = tys
        .iter()
        .enumerate()
        .map(|(i, t)| b.input(format!("x{i}"), t.clone()))
        .collect();
    let y = b.push(op, &args).expect("shape rule");
    b.output("y", y);
    b.finish()
}

fn apply_op(op: Op, args: &[&Tensor]) -> Tensor {
    let tys: Vec<Type> = args.iter().map(|t| t.ty()).collect();
    let g = op_graph(op, &tys);
    let inputs: Vec<Tensor> = args.iter().map(|t| (*t).clone()).collect();
    run_single(&g, &inputs)
}

// ---------------------------------------------------------------- hand-checked models

#[test]
fn linear_2x3_by_hand() {
    let mut b = GraphBuilder::new("linear");
    let x = b.input("x", Type::f32(vec![1, 3]));
    let w = b.param("w", vec![2, 3], Init::Zeros, true).unwrap();
    let bias = b.param("b", vec![2], Init::Zeros, true).unwrap();
    let y = b.linear(x, w, Some(bias)).unwrap();
    b.output("y", y);
    let g = b.finish();

    let xs = [Tensor::f32(vec![1, 3], vec![1.0, 2.0, 3.0])];
    let ps = [
        Tensor::f32(vec![2, 3], vec![0.1, 0.2, 0.3, -1.0, 0.0, 1.0]),
        Tensor::f32(vec![2], vec![0.5, -0.5]),
    ];
    let out = run(
        &g,
        &Env {
            inputs: &xs,
            params: &ps,
        },
    )
    .unwrap();
    // y0 = 0.1*1 + 0.2*2 + 0.3*3 + 0.5 = 0.1 + 0.4 + 0.9 + 0.5 = 1.9
    // y1 = -1*1 + 0*2 + 1*3 - 0.5 = 1.5
    assert_eq!(out[0].0, "y");
    assert_eq!(out[0].1.shape, vec![1, 2]);
    assert_close(&out[0].1.data, &[1.9, 1.5], 1e-15);
}

#[test]
fn causal_attention_one_head_by_hand() {
    // X = [[1,0],[0,1],[1,1]], q = X Wq^T, k = X Wk^T with Wq = Wk = I, v = X Wv^T with
    // Wv = [[0,1],[1,0]] (swaps columns): v = [[0,1],[1,0],[1,1]].
    let mut b = GraphBuilder::new("attn");
    let x = b.input("x", Type::f32(vec![3, 2]));
    let wq = b.param("wq", vec![2, 2], Init::Zeros, true).unwrap();
    let wk = b.param("wk", vec![2, 2], Init::Zeros, true).unwrap();
    let wv = b.param("wv", vec![2, 2], Init::Zeros, true).unwrap();
    let q = b.linear(x, wq, None).unwrap();
    let k = b.linear(x, wk, None).unwrap();
    let v = b.linear(x, wv, None).unwrap();
    let s = b.matmul(q, k, false, true).unwrap();
    let s = b.scale(s, 1.0 / 2f64.sqrt()).unwrap();
    let s = b
        .push(
            Op::CausalMask {
                fill: MaskFill::NegInf,
            },
            &[s],
        )
        .unwrap();
    let p = b.push(Op::Softmax, &[s]).unwrap();
    let o = b.matmul(p, v, false, false).unwrap();
    b.output("out", o);
    b.output("probs", p);
    let g = b.finish();

    let xs = [Tensor::f32(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0])];
    let eye = Tensor::f32(vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]);
    let swap = Tensor::f32(vec![2, 2], vec![0.0, 1.0, 1.0, 0.0]);
    let ps = [eye.clone(), eye, swap];
    let out = run(
        &g,
        &Env {
            inputs: &xs,
            params: &ps,
        },
    )
    .unwrap();

    // Scores X X^T / sqrt 2 = [[1,0,1],[0,1,1],[1,1,2]] / sqrt 2; mask the upper triangle.
    // Row 0: [0.7071, -inf, -inf] -> p = [1, 0, 0].
    // Row 1: [0, 0.7071, -inf]; e = exp(1/sqrt 2) = 2.0281150
    //   -> p = [1/(1+e), e/(1+e)] = [0.3302385, 0.6697615].
    // Row 2: [0.7071, 0.7071, 1.4142]; exp = [e, e, e^2 = 4.1132504], sum = 8.1694804
    //   -> p = [0.2482551, 0.2482551, 0.5034898].
    let probs = [
        1.0,
        0.0,
        0.0, //
        0.330_238_450_673_343,
        0.669_761_549_326_657,
        0.0, //
        0.248_255_078_257_723,
        0.248_255_078_257_723,
        0.503_489_843_484_554,
    ];
    // out = p @ v: row 0 = v0 = [0, 1]; row 1 = p0 [0,1] + p1 [1,0] = [0.6697615, 0.3302385];
    // row 2 = p0 [0,1] + p1 [1,0] + p2 [1,1] = [0.7517449, 0.7517449].
    let want = [
        0.0,
        1.0,
        0.669_761_549_326_657,
        0.330_238_450_673_343,
        0.751_744_921_742_277,
        0.751_744_921_742_277,
    ];
    assert_eq!(out[0].1.shape, vec![3, 2]);
    assert_close(&out[0].1.data, &want, 1e-13);
    assert_close(&out[1].1.data, &probs, 1e-13);
}

#[test]
fn layer_norm_from_primitives_by_hand() {
    let d = 4;
    let mut b = GraphBuilder::new("ln");
    let x = b.input("x", Type::f32(vec![1, d]));
    let gamma = b.param("ln.weight", vec![d], Init::Ones, true).unwrap();
    let beta = b.param("ln.bias", vec![d], Init::Zeros, true).unwrap();
    let sum = b.reduce_sum(x, vec![1], true).unwrap();
    let mean = b.scale(sum, 1.0 / d as f64).unwrap();
    let mean = b.broadcast(mean, vec![1, d]).unwrap();
    let c = b.sub(x, mean).unwrap();
    let c2 = b.mul(c, c).unwrap();
    let var = b.reduce_sum(c2, vec![1], true).unwrap();
    let var = b.scale(var, 1.0 / d as f64).unwrap();
    let var = b.add_scalar(var, 1e-5).unwrap();
    let r = b.unary(Op::Unary(UnaryOp::Rsqrt), var).unwrap();
    let r = b.broadcast(r, vec![1, d]).unwrap();
    let n = b.mul(c, r).unwrap();
    let gb = b.broadcast(gamma, vec![1, d]).unwrap();
    let bb = b.broadcast(beta, vec![1, d]).unwrap();
    let y = b.mul(n, gb).unwrap();
    let y = b.add(y, bb).unwrap();
    b.output("y", y);
    let g = b.finish();

    let xs = [Tensor::f32(vec![1, d], vec![1.0, 2.0, 3.0, 4.0])];
    let ps = [
        Tensor::f32(vec![d], vec![1.0, 2.0, 0.5, -1.0]),
        Tensor::f32(vec![d], vec![0.0, 0.1, -0.1, 1.0]),
    ];
    let out = run(
        &g,
        &Env {
            inputs: &xs,
            params: &ps,
        },
    )
    .unwrap();
    // mean 2.5, centred [-1.5, -0.5, 0.5, 1.5], var (2.25+0.25+0.25+2.25)/4 = 1.25,
    // r = 1/sqrt(1.25001) = 0.8944236133126180.
    // y = c r gamma + beta = [-1.3416354199689270, -0.7944236133126180,
    //                         0.1236059033281545, -0.3416354199689270]
    let want = [
        -1.341_635_419_968_927,
        -0.794_423_613_312_618,
        0.123_605_903_328_154_5,
        -0.341_635_419_968_927,
    ];
    assert_close(&out[0].1.data, &want, 1e-14);
}

// ---------------------------------------------------------------- per-op properties

/// Naive matmul: materialise op(A) and op(B) as nested vectors first, then the textbook loop.
fn reference_matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Vec<f64> {
    fn mat(t: &Tensor, batch: usize, trans: bool) -> Vec<Vec<f64>> {
        let r = t.shape.len();
        let (rows, cols) = (t.shape[r - 2], t.shape[r - 1]);
        let base = batch * rows * cols;
        let m: Vec<Vec<f64>> = (0..rows)
            .map(|i| t.data[base + i * cols..base + (i + 1) * cols].to_vec())
            .collect();
        if !trans {
            return m;
        }
        (0..cols)
            .map(|j| (0..rows).map(|i| m[i][j]).collect())
            .collect()
    }
    let ra = a.shape.len();
    let batches: usize = a.shape[..ra - 2].iter().product();
    let mut out = vec![];
    for bi in 0..batches {
        let am = mat(a, bi, ta);
        let bm = mat(b, if b.shape.len() == 2 { 0 } else { bi }, tb);
        let n = bm[0].len();
        for row in &am {
            out.extend(
                (0..n).map(|j| -> f64 { row.iter().zip(&bm).map(|(x, brow)| x * brow[j]).sum() }),
            );
        }
    }
    out
}

#[test]
fn matmul_matches_naive_loop() {
    let mut r = rng(1);
    let lead_cases: [&[usize]; 3] = [&[], &[3], &[2, 3]];
    for lead in lead_cases {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (5, 3, 1), (6, 7, 5), (2, 9, 3)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for shared_b in [false, true] {
                        let mut sa = lead.to_vec();
                        sa.extend(if ta { [k, m] } else { [m, k] });
                        let mut sb = if shared_b { vec![] } else { lead.to_vec() };
                        sb.extend(if tb { [n, k] } else { [k, n] });
                        let (a, b) = (random(&mut r, &sa), random(&mut r, &sb));
                        let y = apply_op(Op::MatMul { ta, tb }, &[&a, &b]);
                        let mut want_shape = lead.to_vec();
                        want_shape.extend([m, n]);
                        assert_eq!(y.shape, want_shape);
                        assert_close(&y.data, &reference_matmul(&a, &b, ta, tb), 1e-13);
                    }
                }
            }
        }
    }
}

#[test]
fn broadcast_and_reduce_sum_are_adjoint() {
    let mut r = rng(2);
    // (source shape, target shape, target axes the source does not cover or has size 1)
    let cases: [(&[usize], &[usize], &[usize]); 5] = [
        (&[3, 1, 5], &[2, 3, 4, 5], &[0, 2]),
        (&[5], &[3, 7, 5], &[0, 1]),
        (&[1, 1], &[6, 3], &[0, 1]),
        (&[7, 1], &[2, 7, 3], &[0, 2]),
        (&[], &[3, 5], &[0, 1]),
    ];
    for (from, to, axes) in cases {
        let x = random(&mut r, from);
        let y = random(&mut r, to);
        let bx = apply_op(Op::View(ViewOp::Broadcast { shape: to.to_vec() }), &[&x]);
        let ry = apply_op(
            Op::ReduceSum {
                axes: axes.to_vec(),
                keep_dims: false,
            },
            &[&y],
        );
        let ry = apply_op(
            Op::View(ViewOp::Reshape {
                shape: from.to_vec(),
            }),
            &[&ry],
        );
        let (lhs, rhs) = (dot(&bx.data, &y.data), dot(&x.data, &ry.data));
        assert!(
            (lhs - rhs).abs() < 1e-12 * (1.0 + lhs.abs()),
            "{from:?}->{to:?}: {lhs} {rhs}"
        );
    }
}

#[test]
fn reduce_sum_keep_dims_and_values() {
    let x = Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let rows = apply_op(
        Op::ReduceSum {
            axes: vec![1],
            keep_dims: true,
        },
        &[&x],
    );
    assert_eq!(rows.shape, vec![2, 1]);
    assert_eq!(rows.data, vec![6.0, 15.0]);
    let cols = apply_op(
        Op::ReduceSum {
            axes: vec![0],
            keep_dims: false,
        },
        &[&x],
    );
    assert_eq!(cols.shape, vec![3]);
    assert_eq!(cols.data, vec![5.0, 7.0, 9.0]);
    let all = apply_op(
        Op::ReduceSum {
            axes: vec![0, 1],
            keep_dims: false,
        },
        &[&x],
    );
    assert_eq!(all.shape, Vec::<usize>::new());
    assert_eq!(all.data, vec![21.0]);
}

#[test]
fn transpose_then_inverse_is_identity() {
    let mut r = rng(3);
    let shape = [2, 3, 5, 7];
    let x = random(&mut r, &shape);
    for perm in [[0, 1, 3, 2], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
        let y = apply_op(
            Op::View(ViewOp::Transpose {
                perm: perm.to_vec(),
            }),
            &[&x],
        );
        let want: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        assert_eq!(y.shape, want);
        // Spot check: y[i0,i1,i2,i3] = x[j] with j[perm[a]] = i[a].
        let i = [1, 1, 0, 1];
        let mut j = [0; 4];
        for a in 0..4 {
            j[perm[a]] = i[a];
        }
        let ys = interp::strides(&y.shape);
        let xs = interp::strides(&shape);
        let yl: usize = (0..4).map(|a| i[a] * ys[a]).sum();
        let xl: usize = (0..4).map(|a| j[a] * xs[a]).sum();
        assert_eq!(y.data[yl], x.data[xl]);
        let mut inv = [0; 4];
        for (a, &p) in perm.iter().enumerate() {
            inv[p] = a;
        }
        let z = apply_op(Op::View(ViewOp::Transpose { perm: inv.to_vec() }), &[&y]);
        assert_eq!(z, x);
    }
}

#[test]
fn softmax_rows_sum_to_one_and_log_softmax_is_its_log() {
    let mut r = rng(4);
    for shape in [vec![5], vec![3, 7], vec![2, 3, 13]] {
        let mut x = random(&mut r, &shape);
        // Large offsets must not overflow (stability).
        for (i, v) in x.data.iter_mut().enumerate() {
            *v += if i % 3 == 0 { 800.0 } else { 0.0 };
        }
        let p = apply_op(Op::Softmax, &[&x]);
        let lp = apply_op(Op::LogSoftmax, &[&x]);
        let n = *shape.last().unwrap();
        for row in p.data.chunks(n) {
            let s: f64 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-14, "row sums to {s}");
            assert!(row.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
        for (a, b) in p.data.iter().zip(&lp.data) {
            if *a > 1e-300 {
                assert!((a.ln() - b).abs() < 1e-12, "{} vs {b}", a.ln());
            }
        }
    }
}

#[test]
fn softmax_of_fully_masked_row_is_an_error() {
    let x = Tensor::f32(
        vec![2, 2],
        vec![0.0, f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY],
    );
    let g = op_graph(Op::Softmax, &[x.ty()]);
    let err = eval(
        &g,
        &Env {
            inputs: &[x],
            params: &[],
        },
    )
    .unwrap_err();
    assert_eq!(err.node, Some(1));
    assert!(err.message.contains("all -inf"), "{err}");
}

#[test]
fn gather_and_scatter_add_are_adjoint() {
    let mut r = rng(5);
    let (v, d) = (11, 5);
    let table = random(&mut r, &[v, d]);
    let id = ids(&mut r, &[3, 7], v);
    let s = random(&mut r, &[3, 7, d]);
    let gathered = apply_op(Op::Gather, &[&table, &id]);
    assert_eq!(gathered.shape, vec![3, 7, d]);
    let scattered = apply_op(Op::ScatterAdd { rows: v }, &[&id, &s]);
    assert_eq!(scattered.shape, vec![v, d]);
    let (lhs, rhs) = (
        dot(&gathered.data, &s.data),
        dot(&table.data, &scattered.data),
    );
    assert!(
        (lhs - rhs).abs() < 1e-12 * (1.0 + lhs.abs()),
        "{lhs} vs {rhs}"
    );
    // And gather picks rows.
    let row = id.data[4] as usize;
    assert_eq!(
        &gathered.data[4 * d..5 * d],
        &table.data[row * d..(row + 1) * d]
    );
}

#[test]
fn one_hot_matches_gather_of_identity() {
    let mut r = rng(6);
    let c = 7;
    let id = ids(&mut r, &[2, 5], c);
    let oh = apply_op(Op::OneHot { classes: c }, &[&id]);
    let eye = Tensor::f32(
        vec![c, c],
        (0..c * c)
            .map(|i| if i / c == i % c { 1.0 } else { 0.0 })
            .collect(),
    );
    let g = apply_op(Op::Gather, &[&eye, &id]);
    assert_eq!(oh, g);
}

#[test]
fn slice_and_concat_round_trip() {
    let mut r = rng(7);
    let x = random(&mut r, &[3, 10, 5]);
    for axis in 0..3 {
        let n = x.shape[axis];
        let cut = n / 3 + 1;
        let a = apply_op(
            Op::View(ViewOp::Slice {
                axis,
                start: 0,
                end: cut,
            }),
            &[&x],
        );
        let b = apply_op(
            Op::View(ViewOp::Slice {
                axis,
                start: cut,
                end: n,
            }),
            &[&x],
        );
        let y = apply_op(Op::Concat { axis }, &[&a, &b]);
        assert_eq!(y, x);
    }
    // Slice picks the right elements: s[1, 1, 3] = x[1, 3, 3].
    let s = apply_op(
        Op::View(ViewOp::Slice {
            axis: 1,
            start: 2,
            end: 4,
        }),
        &[&x],
    );
    assert_eq!(s.shape, vec![3, 2, 5]);
    assert_eq!(s.data[10 + 5 + 3], x.data[50 + 3 * 5 + 3]);
}

#[test]
fn causal_mask_fills_upper_triangle() {
    let x = Tensor::f32(vec![2, 3, 3], (0..18).map(|i| i as f64).collect());
    let m = apply_op(
        Op::CausalMask {
            fill: MaskFill::NegInf,
        },
        &[&x],
    );
    let z = apply_op(
        Op::CausalMask {
            fill: MaskFill::Zero,
        },
        &[&x],
    );
    for b in 0..2 {
        for i in 0..3 {
            for j in 0..3 {
                let k = b * 9 + i * 3 + j;
                if j > i {
                    assert_eq!(m.data[k], f64::NEG_INFINITY);
                    assert_eq!(z.data[k], 0.0);
                } else {
                    assert_eq!(m.data[k], k as f64);
                    assert_eq!(z.data[k], k as f64);
                }
            }
        }
    }
}

#[test]
fn sinusoidal_table_values() {
    let (len, dim) = (5, 7);
    let mut b = GraphBuilder::new("pe");
    let pe = b
        .push(
            Op::Sinusoidal {
                len,
                dim,
                base: F64(SINUSOIDAL_BASE),
            },
            &[],
        )
        .unwrap();
    b.output("pe", pe);
    let t = run_single(&b.finish(), &[]);
    assert_eq!(t.shape, vec![len, dim]);
    // Row 0 alternates sin 0 = 0 and cos 0 = 1; odd dim ends on a sin column.
    assert_eq!(&t.data[..dim], &[0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    // pos 3: column 0 = sin 3, column 1 = cos 3, column 6 = sin(3 / 10000^(6/7)).
    let row = &t.data[3 * dim..4 * dim];
    assert!((row[0] - 3f64.sin()).abs() < 1e-15);
    assert!((row[1] - 3f64.cos()).abs() < 1e-15);
    let f = 3.0 / 10000f64.powf(6.0 / 7.0);
    assert!((row[6] - f.sin()).abs() < 1e-15);
    assert!((row[4] - (3.0 / 10000f64.powf(4.0 / 7.0)).sin()).abs() < 1e-15);
    assert!((row[5] - (3.0 / 10000f64.powf(4.0 / 7.0)).cos()).abs() < 1e-15);
}

#[test]
fn erf_known_values() {
    let cases = [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (-3.0, -0.999_977_909_503_001_4),
        (0.01, 0.011_283_415_555_849_618),
    ];
    for (x, want) in cases {
        let got = interp::erf(x);
        assert!(
            (got - want).abs() <= 1e-14 * want.abs(),
            "erf({x}) = {got}, want {want}"
        );
    }
}

#[test]
fn elementwise_ops_on_odd_shapes() {
    let mut r = rng(8);
    let x = random(&mut r, &[3, 5, 7]);
    let y = random(&mut r, &[3, 5, 7]);
    let check = |op: Op, args: &[&Tensor], f: &dyn Fn(&[f64]) -> f64| {
        let out = apply_op(op.clone(), args);
        assert_eq!(out.shape, vec![3, 5, 7]);
        for k in 0..out.data.len() {
            let vals: Vec<f64> = args.iter().map(|t| t.data[k]).collect();
            let want = f(&vals);
            assert!(
                (out.data[k] - want).abs() <= 1e-15 * (1.0 + want.abs()),
                "{}: {} vs {want}",
                op.name(),
                out.data[k]
            );
        }
    };
    check(Op::Unary(UnaryOp::Neg), &[&x], &|v| -v[0]);
    check(Op::Unary(UnaryOp::Exp), &[&x], &|v| v[0].exp());
    check(Op::Unary(UnaryOp::Tanh), &[&x], &|v| v[0].tanh());
    check(Op::Unary(UnaryOp::Sigmoid), &[&x], &|v| {
        1.0 / (1.0 + (-v[0]).exp())
    });
    check(Op::Unary(UnaryOp::Relu), &[&x], &|v| v[0].max(0.0));
    check(Op::Unary(UnaryOp::Silu), &[&x], &|v| {
        v[0] / (1.0 + (-v[0]).exp())
    });
    check(Op::Unary(UnaryOp::Gelu), &[&x], &|v| {
        0.5 * v[0] * (1.0 + interp::erf(v[0] / 2f64.sqrt()))
    });
    check(Op::Unary(UnaryOp::GeluTanh), &[&x], &|v| {
        let u = (2.0 / std::f64::consts::PI).sqrt() * (v[0] + 0.044715 * v[0].powi(3));
        0.5 * v[0] * (1.0 + u.tanh())
    });
    check(Op::scale(-1.5), &[&x], &|v| -1.5 * v[0]);
    check(Op::add_scalar(0.25), &[&x], &|v| v[0] + 0.25);
    check(Op::Binary(BinaryOp::Add), &[&x, &y], &|v| v[0] + v[1]);
    check(Op::Binary(BinaryOp::Sub), &[&x, &y], &|v| v[0] - v[1]);
    check(Op::Binary(BinaryOp::Mul), &[&x, &y], &|v| v[0] * v[1]);
    check(Op::Binary(BinaryOp::Div), &[&x, &y], &|v| v[0] / v[1]);
    check(Op::Binary(BinaryOp::ReluGrad), &[&x, &y], &|v| {
        if v[0] > 0.0 {
            v[1]
        } else {
            0.0
        }
    });
    let pos = apply_op(Op::Unary(UnaryOp::Exp), &[&x]);
    check(Op::Unary(UnaryOp::Log), &[&pos], &|v| v[0].ln());
    check(Op::Unary(UnaryOp::Sqrt), &[&pos], &|v| v[0].sqrt());
    check(Op::Unary(UnaryOp::Rsqrt), &[&pos], &|v| 1.0 / v[0].sqrt());
    check(Op::Unary(UnaryOp::Recip), &[&pos], &|v| 1.0 / v[0]);
}

#[test]
fn activation_grads_match_central_differences() {
    let mut r = rng(9);
    let x = random(&mut r, &[4, 9]);
    let dy = random(&mut r, &[4, 9]);
    let h = 1e-5;
    let shift = |d: f64| Tensor::f32(x.shape.clone(), x.data.iter().map(|v| v + d).collect());
    let (xp, xm) = (shift(h), shift(-h));
    for (f, df) in [
        (Op::Unary(UnaryOp::Gelu), Op::Binary(BinaryOp::GeluGrad)),
        (
            Op::Unary(UnaryOp::GeluTanh),
            Op::Binary(BinaryOp::GeluTanhGrad),
        ),
        (Op::Unary(UnaryOp::Silu), Op::Binary(BinaryOp::SiluGrad)),
        (Op::Unary(UnaryOp::Relu), Op::Binary(BinaryOp::ReluGrad)),
    ] {
        let g = apply_op(df.clone(), &[&x, &dy]);
        let (fp, fm) = (apply_op(f.clone(), &[&xp]), apply_op(f.clone(), &[&xm]));
        for k in 0..x.data.len() {
            let fd = dy.data[k] * (fp.data[k] - fm.data[k]) / (2.0 * h);
            assert!(
                (fd - g.data[k]).abs() < 1e-8,
                "{}: fd {fd} vs {}",
                df.name(),
                g.data[k]
            );
        }
    }
    // relu'(0) = 0 by convention.
    let z = Tensor::f32(vec![1], vec![0.0]);
    let one = Tensor::f32(vec![1], vec![1.0]);
    assert_eq!(
        apply_op(Op::Binary(BinaryOp::ReluGrad), &[&z, &one]).data,
        vec![0.0]
    );
}

#[test]
fn full_and_reshape_and_i32_shape_ops() {
    let mut b = GraphBuilder::new("misc");
    let t = b.input("tokens", Type::i32(vec![2, 3]));
    let f = b.full(0.5, vec![2, 2]).unwrap();
    let tt = b.transpose(t, vec![1, 0]).unwrap();
    let tr = b.reshape(tt, vec![6]).unwrap();
    b.output("f", f);
    b.output("tr", tr);
    let g = b.finish();
    let tokens = Tensor::i32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = run(
        &g,
        &Env {
            inputs: &[tokens],
            params: &[],
        },
    )
    .unwrap();
    assert_eq!(out[0].1, Tensor::f32(vec![2, 2], vec![0.5; 4]));
    assert_eq!(
        out[1].1,
        Tensor::i32(vec![6], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0])
    );
}

#[test]
fn eval_returns_every_node_value() {
    let mut b = GraphBuilder::new("e");
    let x = b.input("x", Type::f32(vec![2]));
    let y = b.unary(Op::Unary(UnaryOp::Neg), x).unwrap();
    let z = b.add(x, y).unwrap();
    b.output("z", z);
    let g = b.finish();
    let xs = [Tensor::f32(vec![2], vec![1.0, -2.0])];
    let vals = eval(
        &g,
        &Env {
            inputs: &xs,
            params: &[],
        },
    )
    .unwrap();
    assert_eq!(vals.len(), 3);
    assert_eq!(vals[1].data, vec![-1.0, 2.0]);
    assert_eq!(vals[2].data, vec![0.0, 0.0]);
}

// ---------------------------------------------------------------- errors, never panics

fn embed_graph(vocab: usize) -> Graph {
    let mut b = GraphBuilder::new("embed");
    let t = b.input("tokens", Type::i32(vec![2, 3]));
    let w = b
        .param("embed.weight", vec![vocab, 4], Init::Zeros, true)
        .unwrap();
    let e = b.push(Op::Gather, &[w, t]).unwrap();
    b.output("e", e);
    b.finish()
}

#[test]
fn token_id_out_of_range_is_an_error() {
    let g = embed_graph(256);
    let w = [Tensor::f32(vec![256, 4], vec![0.0; 1024])];
    let tokens = [Tensor::i32(
        vec![2, 3],
        vec![1.0, 2.0, 300.0, 4.0, 5.0, 6.0],
    )];
    let err = run(
        &g,
        &Env {
            inputs: &tokens,
            params: &w,
        },
    )
    .unwrap_err();
    assert_eq!(err.node, Some(2));
    assert_eq!(
        err.to_string(),
        "token id 300 out of range for vocab 256 at node %2 (gather)"
    );
    let neg = [Tensor::i32(vec![2, 3], vec![1.0, -1.0, 3.0, 4.0, 5.0, 6.0])];
    assert!(run(
        &g,
        &Env {
            inputs: &neg,
            params: &w
        }
    )
    .is_err());
}

#[test]
fn bad_environment_is_an_error() {
    let g = embed_graph(8);
    let w = [Tensor::f32(vec![8, 4], vec![0.0; 32])];
    let ok = Tensor::i32(vec![2, 3], vec![0.0; 6]);
    // Wrong input shape.
    let wrong_shape = [Tensor::i32(vec![3, 2], vec![0.0; 6])];
    let err = run(
        &g,
        &Env {
            inputs: &wrong_shape,
            params: &w,
        },
    )
    .unwrap_err();
    assert_eq!(err.node, None);
    assert!(err.message.contains("tokens"), "{err}");
    // Wrong dtype.
    let wrong_dtype = [Tensor::f32(vec![2, 3], vec![0.0; 6])];
    assert!(run(
        &g,
        &Env {
            inputs: &wrong_dtype,
            params: &w
        }
    )
    .is_err());
    // Non-integer token.
    let frac = [Tensor::i32(vec![2, 3], vec![0.0, 0.5, 0.0, 0.0, 0.0, 0.0])];
    assert!(run(
        &g,
        &Env {
            inputs: &frac,
            params: &w
        }
    )
    .is_err());
    // Wrong counts.
    assert!(run(
        &g,
        &Env {
            inputs: &[],
            params: &w
        }
    )
    .is_err());
    assert!(run(
        &g,
        &Env {
            inputs: std::slice::from_ref(&ok),
            params: &[]
        }
    )
    .is_err());
    // Wrong parameter shape.
    let wrong_w = [Tensor::f32(vec![4, 8], vec![0.0; 32])];
    assert!(run(
        &g,
        &Env {
            inputs: std::slice::from_ref(&ok),
            params: &wrong_w
        }
    )
    .is_err());
    // Data length that disagrees with the shape.
    let short = [Tensor {
        dtype: lamina::ir::DType::I32,
        shape: vec![2, 3],
        data: vec![0.0; 5],
    }];
    assert!(run(
        &g,
        &Env {
            inputs: &short,
            params: &w
        }
    )
    .is_err());
    // And the good case runs.
    assert!(run(
        &g,
        &Env {
            inputs: &[ok],
            params: &w
        }
    )
    .is_ok());
}

#[test]
fn ill_formed_graph_is_an_error() {
    let mut g = embed_graph(8);
    // Claim the wrong type on the gather node.
    g.nodes[2].ty = Type::f32(vec![2, 3, 5]);
    let w = [Tensor::f32(vec![8, 4], vec![0.0; 32])];
    let t = [Tensor::i32(vec![2, 3], vec![0.0; 6])];
    let err = run(
        &g,
        &Env {
            inputs: &t,
            params: &w,
        },
    )
    .unwrap_err();
    assert_eq!(err.node, Some(2));
    // Forward reference.
    let mut g = embed_graph(8);
    g.nodes[0].args.push(ValueId(2));
    assert!(run(
        &g,
        &Env {
            inputs: &t,
            params: &w
        }
    )
    .is_err());
    // Scatter and one-hot indices out of range.
    let ids = Tensor::i32(vec![2], vec![0.0, 9.0]);
    let src = Tensor::f32(vec![2, 3], vec![0.0; 6]);
    let g = op_graph(Op::ScatterAdd { rows: 4 }, &[ids.ty(), src.ty()]);
    assert!(run(
        &g,
        &Env {
            inputs: &[ids.clone(), src],
            params: &[]
        }
    )
    .is_err());
    let g = op_graph(Op::OneHot { classes: 4 }, &[ids.ty()]);
    assert!(run(
        &g,
        &Env {
            inputs: &[ids],
            params: &[]
        }
    )
    .is_err());
}
