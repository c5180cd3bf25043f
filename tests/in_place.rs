//! Outputs stored in place of the parameters they replace: the same values as the copying
//! path, nothing written when a value before the update is not finite, and the overflow of
//! the update itself reported as such.

use lamina::ir::text;
use lamina::kernels::{build_program, BuildOptions};
use lamina::runtime::{compile_graph, compile_graph_with, CompiledGraph};
use lamina::tensor::Tensor;

/// `loss = sum(w x)` and `new.w = w - w x x`: the update reads `w` where it writes it.
const STEP: &str = "graph upd {
  input x: f32[3, 8]
  param w: f32[3, 8] init zeros

  %0 = input x : f32[3, 8]
  %1 = param w : f32[3, 8]
  %2 = mul %1, %0 : f32[3, 8]
  %3 = reduce_sum[axes=[0, 1]] %2 : f32[]
  %4 = mul %2, %0 : f32[3, 8]
  %5 = sub %1, %4 : f32[3, 8]

  output loss = %3
  output new.w = %5
}
";

/// As `STEP`, but `w` is read again after its update (by a later output), so the update
/// may not overwrite it.
const READ_AFTER: &str = "graph upd2 {
  input x: f32[3, 8]
  param w: f32[3, 8] init zeros

  %0 = input x : f32[3, 8]
  %1 = param w : f32[3, 8]
  %2 = mul %1, %0 : f32[3, 8]
  %3 = reduce_sum[axes=[0, 1]] %2 : f32[]
  %4 = sub %1, %2 : f32[3, 8]
  %5 = transpose[perm=[1, 0]] %1 : f32[8, 3]
  %6 = exp %5 : f32[8, 3]

  output loss = %3
  output new.w = %4
  output e = %6
}
";

const PAIRS: &[(usize, usize)] = &[(1, 0)];

fn opts() -> BuildOptions {
    BuildOptions {
        replaces: PAIRS.to_vec(),
        ..Default::default()
    }
}

fn compiled(src: &str, in_place: bool) -> CompiledGraph {
    let g = text::parse(src).unwrap();
    let mut c = if in_place {
        compile_graph_with(&g, &opts()).unwrap()
    } else {
        compile_graph(&g).unwrap()
    };
    let w: Vec<f64> = (0..24).map(|i| 0.1 * i as f64 - 1.0).collect();
    c.load_params(&[Tensor::f32(vec![3, 8], w)]).unwrap();
    c
}

fn x(v: f64) -> Vec<Tensor> {
    vec![Tensor::f32(
        vec![3, 8],
        (0..24).map(|i| v * (1.0 + 0.01 * i as f64)).collect(),
    )]
}

#[test]
fn the_update_is_stored_in_place_and_agrees_with_copying() {
    let g = text::parse(STEP).unwrap();
    let p = build_program(&g, &opts()).unwrap();
    assert_eq!(p.in_place.pairs, PAIRS);
    assert_eq!(p.outputs[1].buf, p.params[0], "new.w lives in w's buffer");
    let mut copying = compiled(STEP, false);
    let mut in_place = compiled(STEP, true);
    for t in 0..3 {
        let a = copying.step(&x(0.5), PAIRS).unwrap();
        let b = in_place.step(&x(0.5), PAIRS).unwrap();
        assert_eq!(a, b, "step {t}");
        assert_eq!(
            copying.params().unwrap(),
            in_place.params().unwrap(),
            "step {t}"
        );
    }
}

#[test]
fn a_parameter_read_after_its_update_stays_out_of_place() {
    let g = text::parse(READ_AFTER).unwrap();
    let p = build_program(&g, &opts()).unwrap();
    assert!(p.in_place.pairs.is_empty(), "{:?}", p.in_place);
    let mut c = compiled(READ_AFTER, true);
    let before = c.params().unwrap();
    c.step(&x(0.5), PAIRS).unwrap();
    let e = c.output("e").unwrap().unwrap();
    // `e` is computed from the parameters the step read.
    let want: Vec<f64> = (0..24)
        .map(|k| before[0].data[(k % 3) * 8 + k / 3].exp())
        .collect();
    for (got, want) in e.data.iter().zip(&want) {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{got} {want}"
        );
    }
}

#[test]
fn a_non_finite_value_before_the_update_writes_nothing() {
    let mut c = compiled(STEP, true);
    let before = c.params().unwrap();
    let r = c.step(&x(f64::INFINITY), PAIRS).unwrap();
    assert!(r.non_finite.is_some());
    assert!(!r.written);
    assert_eq!(c.params().unwrap(), before);
}

#[test]
fn an_update_that_overflows_is_reported_as_written() {
    let mut c = compiled(STEP, true);
    // `x` and the loss `sum(w x)` are finite; only `w x x` overflows.
    let r = c.step(&x(1e20), PAIRS).unwrap();
    assert!(r.loss.is_finite());
    assert_eq!(r.non_finite.as_deref(), Some("new.w"));
    assert!(r.written);
}
