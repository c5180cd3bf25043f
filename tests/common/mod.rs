//! Helpers shared by the integration tests: the gallery run small through `--set`-style
//! overrides, and random parameters and batches for oracle comparisons.
#![allow(dead_code)] // each test file uses a different subset

use lamina::elab::{constants, elaborate, Override};
use lamina::interp::{run, Env};
use lamina::ir::{DType, Graph, Init, Input, Op, Output, UnaryOp, ValueId};
use lamina::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Tiny values for the size constants the examples define (every example names its sizes
/// as constants precisely so that it can be run small).
pub const SMALL: &[(&str, i64)] = &[
    ("d", 8),
    ("heads", 2),
    ("layers", 2),
    ("batch", 2),
    ("length", 5),
    ("vocab", 11),
    ("features", 12),
    ("classes", 3),
    ("side", 8),
    ("channels", 2),
    ("patch", 4),
];

/// Every `examples/*.lam` as (file stem, source), sorted by name.
pub fn example_sources() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "lam"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The overrides of `SMALL` for the constants `src` defines.
pub fn small_overrides(src: &str) -> Vec<Override> {
    let module = lamina::syntax::parse(src).expect("parses");
    let defined = constants(&module, &[]).expect("constants evaluate");
    SMALL
        .iter()
        .filter(|(c, _)| defined.iter().any(|(n, _)| n == c))
        .map(|(c, v)| Override {
            name: c.to_string(),
            value: *v as f64,
            is_int: true,
        })
        .collect()
}

/// Parse and elaborate `src` with its size constants set small.
pub fn elaborate_small(name: &str, src: &str) -> Graph {
    let module = lamina::syntax::parse(src).unwrap_or_else(|e| panic!("{name}: parse: {e:?}"));
    elaborate(&module, name, &small_overrides(src))
        .unwrap_or_else(|e| panic!("{name}: elaborate: {e:?}"))
}

/// Random parameter values around each parameter's init, and random inputs (ids within the
/// range of every op that reads them). Returns (inputs, params).
pub fn random_env(g: &Graph, seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = g
        .params
        .iter()
        .map(|p| {
            let n = p.shape.iter().product();
            let data = (0..n)
                .map(|_| {
                    let u: f64 = rng.gen_range(-1.0..1.0);
                    match p.init {
                        Init::Zeros => 0.2 * u,
                        Init::Ones => 1.0 + 0.2 * u,
                        Init::Const(c) => c + 0.2 * u,
                        // Larger than a 0.02 std so embeddings and positions matter.
                        Init::Normal { std } => u * std.max(0.5),
                        Init::Uniform { bound } => u * bound,
                    }
                })
                .collect();
            Tensor::f32(p.shape.clone(), data)
        })
        .collect();
    let inputs = g
        .inputs
        .iter()
        .enumerate()
        .map(|(k, inp)| {
            let n = inp.ty.numel();
            match inp.ty.dtype {
                DType::F32 => {
                    let data = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    Tensor::f32(inp.ty.shape.clone(), data)
                }
                DType::I32 => {
                    let max = lamina::io::index_bound(g, k).expect("ids are used");
                    let data = (0..n).map(|_| rng.gen_range(0..max) as f64).collect();
                    Tensor::i32(inp.ty.shape.clone(), data)
                }
            }
        })
        .collect();
    (inputs, params)
}

/// `max |got - want| / max(max |want|, floor)`, the error of a tensor relative to its own
/// scale. Any disagreement about NaN or infinity, and any length mismatch, is an infinite
/// error (a plain `f64::max` fold would silently skip a NaN).
pub fn max_rel_err(got: &[f64], want: &[f64], floor: f64) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(floor, |m, v| m.max(v.abs()));
    let mut worst = 0.0f64;
    for (x, y) in got.iter().zip(want) {
        if x == y || (x.is_nan() && y.is_nan()) {
            continue;
        }
        if !x.is_finite() || !y.is_finite() {
            return f64::INFINITY;
        }
        worst = worst.max((x - y).abs() / scale);
    }
    worst
}

/// `g` with every `stop_gradient` node replaced by a new input holding its value at
/// `params`: a function whose derivative is what autodiff computes for `g`.
pub fn freeze_stopped(
    g: &Graph,
    mut inputs: Vec<Tensor>,
    params: &[Tensor],
) -> Result<(Graph, Vec<Tensor>), String> {
    let stopped: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| g.nodes[i].op == Op::Unary(UnaryOp::StopGradient))
        .collect();
    if stopped.is_empty() {
        return Ok((g.clone(), inputs));
    }
    let mut probe = g.clone();
    for &i in &stopped {
        probe.outputs.push(Output {
            name: format!("stopped.{i}"),
            value: ValueId(i as u32),
        });
    }
    let values = run(
        &probe,
        &Env {
            inputs: &inputs,
            params,
        },
    )
    .map_err(|e| format!("interpreter: {e}"))?;
    let mut frozen = g.clone();
    for &i in &stopped {
        let name = format!("stopped.{i}");
        let (_, v) = values
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or("no stopped value")?;
        frozen.inputs.push(Input {
            name,
            ty: g.nodes[i].ty.clone(),
        });
        let node = &mut frozen.nodes[i];
        node.op = Op::Input {
            index: frozen.inputs.len() - 1,
        };
        node.args.clear();
        inputs.push(v.clone());
    }
    frozen.verify().map_err(|e| format!("frozen graph: {e}"))?;
    Ok((frozen, inputs))
}

/// Run the `lamina` binary with `args`, colour off.
pub fn lamina(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the lamina binary runs")
}

/// Parse and elaborate `src` as it is (no overrides).
pub fn graph(src: &str) -> Graph {
    let m = lamina::syntax::parse(src).unwrap_or_else(|d| panic!("{d:?}"));
    elaborate(&m, "test", &[]).unwrap_or_else(|d| panic!("{d:#?}"))
}

/// The outputs of `g` on the reference interpreter.
pub fn outputs(g: &Graph, inputs: &[Tensor], params: &[Tensor]) -> Vec<(String, Tensor)> {
    run(g, &Env { inputs, params }).unwrap_or_else(|e| panic!("{e}"))
}

/// The output `name` of `outs`.
pub fn output<'a>(outs: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &outs
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no output {name}"))
        .1
}
