//! The op conformance corpus: one small graph per op, and one per variant where an op has
//! modes, in `tests/ops/<op>.ir` or `tests/ops/<op>_<variant>.ir`.
//!
//! Every file runs through five checks:
//! 1. text: the file is `parse`d; `parse(print(g)) == g` (a NaN constant equal to a NaN),
//!    printing again gives the same text, and the file's graph (below its header) is exactly
//!    `print(g)`;
//! 2. jit: every output of the JIT (`compile_graph`) against the interpreter (f64), each
//!    output measured against its own largest entry;
//! 3. grad: `loss = sum_o sum(o * w_o)` over the f32 outputs, with fixed random weights `w_o`
//!    appended as graph inputs; autodiff's gradient of every trainable parameter, evaluated
//!    by the interpreter, against central differences of the interpreter's loss
//!    (`h = 1e-6 * max(|x|, 1)`), measured against `max(max |grad|, max |fd|, 1e-3)`;
//! 4. passes: `try_optimize(g)` through the interpreter equals `g` within 1e-9 (forward graph,
//!    and the joint graph of check 3);
//! 5. jit-grad: the joint graph's `grad.*` outputs on the JIT against the interpreter, within
//!    the jit tolerance.
//!
//! The header, the `;` lines before `graph`, is read by this harness:
//!
//! ```text
//! ; <any text>                       free text (a line whose first word is not a key)
//! ; input NAME: uniform LO HI        f32 input or parameter NAME, uniform in [LO, HI)
//! ; input NAME: away LO HI           f32, magnitude uniform in [LO, HI), random sign
//! ; input NAME: ids LO..HI           i32 input, integers uniform in LO..HI (end excluded)
//! ; jit: TOL                         check 2's relative tolerance (default 1e-4)
//! ; grad: TOL                        check 3's relative tolerance (default 1e-6)
//! ; grad: none                       no gradient (checks 3 and 5 skipped; see below)
//! ; loss: NAME, NAME                 the outputs the loss is made from (default: every f32 one)
//! ```
//!
//! Every input and parameter needs an `input` line. `grad: none` is only accepted where the
//! graph has no trainable parameter or `differentiate` refuses it, so it cannot hide a
//! gradient that exists. f32 values are rounded to f32 so the JIT and the interpreter read the
//! same numbers; the seed of a file is a hash of its name.
//!
//! A failure names the file, the check and the worst element. Known disagreements are listed
//! in `KNOWN_FAILURES`; `every_op_has_a_corpus_file` fails for an op (from `Op::every_kind`)
//! that no file is named after.

mod common;

use lamina::autodiff::differentiate;
use lamina::interp::{run, Env};
use lamina::ir::text::{parse, print};
use lamina::ir::UnaryOp;
use lamina::ir::{DType, Graph, GraphBuilder, Init, Op, Type, ValueId};
use lamina::passes::try_optimize;
use lamina::runtime::compile_graph;
use lamina::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Disagreements found by the corpus and not fixed yet, as (file, check). A listed case is
/// reported but does not fail the test; a listed case that passes does, so that the entry is
/// removed once the bug is fixed. Keep this list short, each entry with the reason.
const KNOWN_FAILURES: &[(&str, &str)] = &[
    // reduce_sum of a tensor with no elements to a non-empty result: the interpreter gives
    // zeros, `build_program` fails with "internal error: view [5, 0] has no last-axis access"
    // (src/kernels/build.rs; to a scalar it is "cannot read [0, 5] as 0x0"). Model files
    // cannot produce it (sizes are at least 1); parsed IR can.
    ("reduce_sum_empty.ir", "jit"),
    ("reduce_sum_empty.ir", "jit-grad"),
];

const DEFAULT_JIT_TOL: f64 = 1e-4;
const DEFAULT_GRAD_TOL: f64 = 1e-6;
/// Smallest scale a gradient is measured against (as in tests/gradcheck.rs).
const GRAD_FLOOR: f64 = 1e-3;
/// Optimized against unoptimized, both in f64.
const PASSES_TOL: f64 = 1e-9;
/// Relative finite-difference step.
const FD_STEP: f64 = 1e-6;

// ------------------------------------------------------------------------------------------
// Header
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Dist {
    Uniform(f64, f64),
    Away(f64, f64),
    Ids(i64, i64),
}

#[derive(Clone, Debug)]
struct Header {
    inputs: Vec<(String, Dist)>,
    jit_tol: f64,
    /// `None` for `grad: none`.
    grad_tol: Option<f64>,
    loss: Option<Vec<String>>,
}

fn parse_number(s: &str, line: usize) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("header line {line}: expected a number, found `{s}`"))
}

fn parse_tol(s: &str, line: usize) -> Result<f64, String> {
    let v = parse_number(s, line)?;
    if v <= 0.0 {
        return Err(format!("header line {line}: a tolerance must be positive"));
    }
    Ok(v)
}

fn parse_dist(spec: &str, line: usize) -> Result<Dist, String> {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let bad = || {
        format!("header line {line}: expected `uniform LO HI`, `away LO HI` or `ids LO..HI`, found `{spec}`")
    };
    match words[..] {
        ["uniform", lo, hi] | ["away", lo, hi] => {
            let (lo, hi) = (parse_number(lo, line)?, parse_number(hi, line)?);
            if lo >= hi {
                return Err(format!("header line {line}: empty range {lo} {hi}"));
            }
            if words[0] == "away" {
                if lo < 0.0 {
                    return Err(format!("header line {line}: `away` takes magnitudes >= 0"));
                }
                Ok(Dist::Away(lo, hi))
            } else {
                Ok(Dist::Uniform(lo, hi))
            }
        }
        ["ids", range] => {
            let (lo, hi) = range.split_once("..").ok_or_else(bad)?;
            let lo: i64 = lo.parse().map_err(|_| bad())?;
            let hi: i64 = hi.parse().map_err(|_| bad())?;
            if lo >= hi {
                return Err(format!("header line {line}: empty id range {range}"));
            }
            Ok(Dist::Ids(lo, hi))
        }
        _ => Err(bad()),
    }
}

/// The header: the leading `;` lines of the file, and the rest (the graph text).
fn split_header(src: &str) -> (Vec<&str>, &str) {
    let mut lines = Vec::new();
    let mut rest = src;
    while rest.starts_with(';') {
        let (line, tail) = rest.split_once('\n').unwrap_or((rest, ""));
        lines.push(line);
        rest = tail;
    }
    (lines, rest)
}

fn parse_header(lines: &[&str]) -> Result<Header, String> {
    let mut h = Header {
        inputs: Vec::new(),
        jit_tol: DEFAULT_JIT_TOL,
        grad_tol: Some(DEFAULT_GRAD_TOL),
        loss: None,
    };
    let mut seen = BTreeSet::new();
    for (k, raw) in lines.iter().enumerate() {
        let line = k + 1;
        let text = raw.trim_start_matches(';').trim();
        let first = text.split([' ', ':']).next().unwrap_or("");
        let value = |key: &str| -> Result<&str, String> {
            text.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .map(str::trim)
                .ok_or_else(|| format!("header line {line}: expected `{key}: ...`"))
        };
        match first {
            "input" => {
                let rest = text["input".len()..].trim_start();
                let (name, spec) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("header line {line}: expected `input NAME: ...`"))?;
                let name = name.trim().to_string();
                if h.inputs.iter().any(|(n, _)| *n == name) {
                    return Err(format!("header line {line}: input {name} given twice"));
                }
                h.inputs.push((name, parse_dist(spec.trim(), line)?));
                continue;
            }
            "jit" => h.jit_tol = parse_tol(value("jit")?, line)?,
            "grad" => {
                let v = value("grad")?;
                h.grad_tol = if v == "none" {
                    None
                } else {
                    Some(parse_tol(v, line)?)
                };
            }
            "loss" => {
                let names: Vec<String> = value("loss")?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect();
                if names.iter().any(String::is_empty) {
                    return Err(format!("header line {line}: empty output name"));
                }
                h.loss = Some(names);
            }
            _ => continue,
        }
        if !seen.insert(first) {
            return Err(format!("header line {line}: `{first}` given twice"));
        }
    }
    Ok(h)
}

// ------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------

struct Case {
    src: String,
    graph: Graph,
    header: Header,
    inputs: Vec<Tensor>,
    params: Vec<Tensor>,
    rng: ChaCha8Rng,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ops")
}

fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/ops exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ir"))
        .collect();
    files.sort();
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// FNV-1a: a file's seed depends on its name only.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn sample(d: &Dist, ty: &Type, rng: &mut ChaCha8Rng) -> Tensor {
    let n = ty.numel();
    let data = (0..n)
        .map(|_| match *d {
            Dist::Uniform(lo, hi) => rng.gen_range(lo..hi) as f32 as f64,
            Dist::Away(lo, hi) => {
                let m = rng.gen_range(lo..hi) as f32 as f64;
                if rng.gen_bool(0.5) {
                    m
                } else {
                    -m
                }
            }
            Dist::Ids(lo, hi) => rng.gen_range(lo..hi) as f64,
        })
        .collect();
    Tensor::new(ty.dtype, ty.shape.clone(), data)
}

fn load(path: &Path) -> Result<Case, String> {
    let file = file_name(path);
    let src = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let (lines, _) = split_header(&src);
    let header = parse_header(&lines)?;
    let graph = parse(&src).map_err(|e| format!("does not parse: {e}"))?;
    let stem = file.trim_end_matches(".ir");
    if graph.name != stem {
        return Err(format!(
            "the graph is named {} but the file {stem}",
            graph.name
        ));
    }
    if graph.outputs.iter().any(|o| o.name == "loss") {
        return Err("outputs must not be named `loss` (the harness adds it)".into());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed_of(&file));
    let leaves: Vec<(&str, Type, bool)> = graph
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), i.ty.clone(), false))
        .chain(graph.params.iter().map(|p| (p.name.as_str(), p.ty(), true)))
        .collect();
    let mut inputs = Vec::new();
    let mut params = Vec::new();
    for (name, ty, is_param) in &leaves {
        if leaves.iter().filter(|l| l.0 == *name).count() > 1 {
            return Err(format!("the name {name} is used twice"));
        }
        let (_, d) = header
            .inputs
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("no header line `; input {name}: ...`"))?;
        let ok = match d {
            Dist::Ids(..) => ty.dtype == DType::I32,
            _ => ty.dtype == DType::F32,
        };
        if !ok {
            return Err(format!("input {name}: {d:?} does not fit {ty}"));
        }
        let t = sample(d, ty, &mut rng);
        if *is_param {
            params.push(t);
        } else {
            inputs.push(t);
        }
    }
    if let Some((n, _)) = header
        .inputs
        .iter()
        .find(|(n, _)| !leaves.iter().any(|l| l.0 == n))
    {
        return Err(format!(
            "the header names {n}, which the graph does not have"
        ));
    }
    if let Some(names) = &header.loss {
        for n in names {
            let v = graph
                .output(n)
                .ok_or_else(|| format!("`loss:` names {n}, which is not an output"))?;
            if graph.ty(v).dtype != DType::F32 {
                return Err(format!("`loss:` names {n}, which is not f32"));
            }
        }
    }
    Ok(Case {
        src,
        graph,
        header,
        inputs,
        params,
        rng,
    })
}

// ------------------------------------------------------------------------------------------
// Comparison
// ------------------------------------------------------------------------------------------

fn index_text(mut lin: usize, shape: &[usize]) -> String {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        idx[a] = lin % shape[a];
        lin /= shape[a];
    }
    let parts: Vec<String> = idx.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// `max |got - want| / scale`, with `scale` the largest finite |want| (at least `floor`).
/// Any disagreement about NaN or infinity is an error. Returns the error, or a message
/// naming the worst element when it exceeds `tol`.
fn compare(what: &str, got: &Tensor, want: &Tensor, tol: f64, floor: f64) -> Result<f64, String> {
    if got.shape != want.shape || got.dtype != want.dtype || got.data.len() != want.data.len() {
        return Err(format!("{what}: got {} but want {}", got.ty(), want.ty()));
    }
    let scale = want
        .data
        .iter()
        .filter(|v| v.is_finite())
        .fold(floor, |m, v| m.max(v.abs()));
    let mut worst = (0.0f64, None);
    for (k, (&x, &y)) in got.data.iter().zip(&want.data).enumerate() {
        if x == y || (x.is_nan() && y.is_nan()) {
            continue;
        }
        if !x.is_finite() || !y.is_finite() {
            return Err(format!(
                "{what}: element {} is {x} but should be {y}",
                index_text(k, &want.shape)
            ));
        }
        let e = (x - y).abs() / scale;
        if e > worst.0 {
            worst = (e, Some(k));
        }
    }
    match worst {
        (e, Some(k)) if e > tol => Err(format!(
            "{what}: relative error {e:.3e} > {tol:e} at {}: got {}, want {} (scale {scale:.4e})",
            index_text(k, &want.shape),
            got.data[k],
            want.data[k],
        )),
        (e, _) => Ok(e),
    }
}

fn interp(
    g: &Graph,
    inputs: &[Tensor],
    params: &[Tensor],
) -> Result<Vec<(String, Tensor)>, String> {
    run(g, &Env { inputs, params }).map_err(|e| format!("interpreter: {e}"))
}

fn compare_outputs(
    what: &str,
    got: &[(String, Tensor)],
    want: &[(String, Tensor)],
    tol: f64,
    only: impl Fn(&str) -> bool,
) -> Result<f64, String> {
    let names = |o: &[(String, Tensor)]| o.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(got) != names(want) {
        return Err(format!(
            "{what}: outputs {:?}, want {:?}",
            names(got),
            names(want)
        ));
    }
    let mut worst = 0.0f64;
    for ((n, g), (_, w)) in got.iter().zip(want) {
        if only(n) {
            worst = worst.max(compare(&format!("{what} output {n}"), g, w, tol, 1e-300)?);
        }
    }
    Ok(worst)
}

// ------------------------------------------------------------------------------------------
// Checks
// ------------------------------------------------------------------------------------------

/// `g` with every NaN constant replaced by 0, and where the NaNs were.
fn without_nans(g: &Graph) -> (Graph, Vec<usize>) {
    let mut g = g.clone();
    let mut at = Vec::new();
    let mut clear = |k: usize, v: &mut f64| {
        if v.is_nan() {
            *v = 0.0;
            at.push(k);
        }
    };
    for (k, p) in g.params.iter_mut().enumerate() {
        if let Init::Const(v) | Init::Normal { std: v } | Init::Uniform { bound: v } = &mut p.init {
            clear(k, v);
        }
    }
    let offset = g.params.len();
    for (k, n) in g.nodes.iter_mut().enumerate() {
        if let Op::Full { value: v, .. }
        | Op::Unary(UnaryOp::Scale { factor: v })
        | Op::Unary(UnaryOp::AddScalar { value: v }) = &mut n.op
        {
            clear(offset + k, &mut v.0);
        }
    }
    (g, at)
}

/// Graph equality in which a NaN constant equals a NaN constant (`PartialEq` says it never
/// does).
fn same_graph(a: &Graph, b: &Graph) -> bool {
    a == b || without_nans(a) == without_nans(b)
}

fn check_text(c: &Case) -> Result<(), String> {
    let printed = print(&c.graph);
    let back = parse(&printed).map_err(|e| format!("the printed graph does not parse: {e}"))?;
    if !same_graph(&back, &c.graph) {
        return Err("parse(print(g)) differs from g".into());
    }
    if print(&back) != printed {
        return Err("printing the parsed graph again gives different text".into());
    }
    let (_, body) = split_header(&c.src);
    if body != printed {
        let line = body
            .lines()
            .zip(printed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| body.lines().count().min(printed.lines().count()));
        return Err(format!(
            "the graph is not in printed form: graph line {} is {:?}, print gives {:?}\n{printed}",
            line + 1,
            body.lines().nth(line).unwrap_or("<end>"),
            printed.lines().nth(line).unwrap_or("<end>"),
        ));
    }
    Ok(())
}

fn check_jit(
    g: &Graph,
    inputs: &[Tensor],
    params: &[Tensor],
    tol: f64,
    only: impl Fn(&str) -> bool,
) -> Result<f64, String> {
    let want = interp(g, inputs, params)?;
    let mut compiled = compile_graph(g).map_err(|e| format!("compile: {e}"))?;
    let got = compiled
        .run(inputs, params)
        .map_err(|e| format!("jit run: {e}"))?;
    compare_outputs("jit", &got, &want, tol, only)
}

fn check_passes(
    what: &str,
    g: &Graph,
    inputs: &[Tensor],
    params: &[Tensor],
) -> Result<f64, String> {
    let opt = try_optimize(g).map_err(|e| format!("{what}: optimize: {e}"))?;
    opt.verify()
        .map_err(|e| format!("{what}: the optimized graph does not verify: {e}"))?;
    if opt.inputs != g.inputs || opt.params != g.params {
        return Err(format!("{what}: optimize changed the inputs or parameters"));
    }
    let want = interp(g, inputs, params)?;
    let got = interp(&opt, inputs, params)?;
    compare_outputs(
        &format!("{what} optimized"),
        &got,
        &want,
        PASSES_TOL,
        |_| true,
    )
}

/// The graph with `loss = sum_o sum(o * w_o)` appended, and the inputs with the weights.
fn with_loss(c: &mut Case) -> Result<(Graph, Vec<Tensor>), String> {
    let g = &c.graph;
    let names: Vec<String> = match &c.header.loss {
        Some(n) => n.clone(),
        None => g
            .outputs
            .iter()
            .filter(|o| g.ty(o.value).dtype == DType::F32)
            .map(|o| o.name.clone())
            .collect(),
    };
    if names.is_empty() {
        return Err("no f32 output to make a loss from: declare `; grad: none`".into());
    }
    let mut b = GraphBuilder::from_graph(g.clone());
    let mut inputs = c.inputs.clone();
    let mut total: Option<ValueId> = None;
    for n in &names {
        let v = g.output(n).ok_or_else(|| format!("no output {n}"))?;
        let ty = g.ty(v).clone();
        let w = b.input(format!("loss.w.{n}"), ty.clone());
        inputs.push(sample(&Dist::Uniform(-1.0, 1.0), &ty, &mut c.rng));
        let m = b.mul(v, w)?;
        let s = b.reduce_sum(m, (0..ty.rank()).collect(), false)?;
        total = Some(match total {
            None => s,
            Some(t) => b.add(t, s)?,
        });
    }
    b.output("loss", total.expect("at least one output"));
    Ok((b.finish(), inputs))
}

fn loss_value(g: &Graph, inputs: &[Tensor], params: &[Tensor]) -> Result<f64, String> {
    let out = interp(g, inputs, params)?;
    let (_, t) = out
        .iter()
        .find(|(n, _)| n == "loss")
        .ok_or("no loss output")?;
    Ok(t.data[0])
}

/// Autodiff's gradients against central differences. Returns the joint graph and its inputs
/// (for the passes and jit-grad checks) and the worst error.
fn check_grad(c: &mut Case, tol: f64) -> Result<(Graph, Vec<Tensor>, f64), String> {
    let (lg, inputs) = with_loss(c)?;
    let trainable: Vec<usize> = (0..lg.params.len())
        .filter(|&i| lg.params[i].trainable)
        .collect();
    if trainable.is_empty() {
        return Err("no trainable parameter to differentiate: declare `; grad: none`".into());
    }
    let joint = differentiate(&lg).map_err(|e| format!("differentiate: {e}"))?;
    let out = interp(&joint, &inputs, &c.params)?;
    // The derivative autodiff computes holds every stopped value constant; so do the
    // central differences.
    let (frozen, frozen_inputs) = common::freeze_stopped(&lg, inputs.clone(), &c.params)?;
    let mut worst = 0.0f64;
    for &pi in &trainable {
        let name = &lg.params[pi].name;
        let (_, grad) = out
            .iter()
            .find(|(n, _)| n.strip_prefix("grad.") == Some(name.as_str()))
            .ok_or_else(|| format!("the joint graph has no output grad.{name}"))?;
        let mut params = c.params.clone();
        let mut fd = Tensor::f32(grad.shape.clone(), vec![0.0; grad.numel()]);
        for j in 0..fd.numel() {
            let x = c.params[pi].data[j];
            let h = FD_STEP * x.abs().max(1.0);
            params[pi].data[j] = x + h;
            let lp = loss_value(&frozen, &frozen_inputs, &params)?;
            params[pi].data[j] = x - h;
            let lm = loss_value(&frozen, &frozen_inputs, &params)?;
            params[pi].data[j] = x;
            fd.data[j] = (lp - lm) / (2.0 * h);
        }
        let max_abs = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let floor = max_abs(&grad.data).max(GRAD_FLOOR);
        let what = format!("grad.{name} (autodiff) against central differences");
        worst = worst.max(compare(&what, grad, &fd, tol, floor)?);
    }
    Ok((joint, inputs, worst))
}

/// `grad: none` must be true: no trainable parameter, or autodiff refuses the graph.
fn check_no_grad(c: &mut Case) -> Result<(), String> {
    if c.graph.params.iter().all(|p| !p.trainable) {
        return Ok(());
    }
    let (lg, _) = with_loss(c)?;
    match differentiate(&lg) {
        Err(_) => Ok(()),
        Ok(_) => Err(
            "declares `grad: none`, but differentiate succeeds: give it a gradient tolerance"
                .into(),
        ),
    }
}

/// Summary of one file: the worst error of each check that ran.
#[derive(Default)]
struct Report {
    jit: Option<f64>,
    grad: Option<f64>,
    passes: Option<f64>,
    jit_grad: Option<f64>,
}

/// Record a check's worst error in `slot`, or its failure in `fails`.
fn note(
    fails: &mut Vec<(&'static str, String)>,
    kind: &'static str,
    r: Result<f64, String>,
    slot: &mut Option<f64>,
) {
    match r {
        Ok(e) => *slot = Some(e),
        Err(e) => fails.push((kind, e)),
    }
}

/// Run every check of one file; failures are (check, message).
fn check_file(path: &Path) -> (Report, Vec<(&'static str, String)>) {
    let mut rep = Report::default();
    let mut fails = Vec::new();
    let mut c = match load(path) {
        Ok(c) => c,
        Err(e) => {
            fails.push(("load", e));
            return (rep, fails);
        }
    };
    let f = &mut fails;
    note(f, "text", check_text(&c).map(|()| 0.0), &mut None);
    let tol = c.header.jit_tol;
    let jit = check_jit(&c.graph, &c.inputs, &c.params, tol, |_| true);
    note(f, "jit", jit, &mut rep.jit);
    let mut passes = check_passes("forward", &c.graph, &c.inputs, &c.params);
    match c.header.grad_tol {
        None => note(f, "grad", check_no_grad(&mut c).map(|()| 0.0), &mut None),
        Some(gt) => match check_grad(&mut c, gt) {
            Err(e) => f.push(("grad", e)),
            Ok((joint, inputs, e)) => {
                rep.grad = Some(e);
                passes = passes
                    .and_then(|a| Ok(a.max(check_passes("joint", &joint, &inputs, &c.params)?)));
                let grads = |n: &str| n.starts_with("grad.");
                let jg = check_jit(&joint, &inputs, &c.params, tol, grads);
                note(f, "jit-grad", jg, &mut rep.jit_grad);
            }
        },
    }
    note(f, "passes", passes, &mut rep.passes);
    (rep, fails)
}

#[test]
fn op_corpus() {
    let files = corpus_files();
    assert!(!files.is_empty(), "tests/ops holds no .ir files");
    let mut failures = Vec::new();
    let mut known = Vec::new();
    let mut lines = Vec::new();
    let opt = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{e:.1e}"));
    for path in &files {
        let file = file_name(path);
        let (rep, fails) = check_file(path);
        lines.push(format!(
            "{file:32} jit {:8} grad {:8} passes {:8} jit-grad {:8}",
            opt(rep.jit),
            opt(rep.grad),
            opt(rep.passes),
            opt(rep.jit_grad)
        ));
        for (kind, msg) in fails {
            let line = format!("tests/ops/{file}: {kind}: {msg}");
            if KNOWN_FAILURES.contains(&(file.as_str(), kind)) {
                known.push(line);
            } else {
                failures.push(line);
            }
        }
    }
    println!("{}", lines.join("\n"));
    for (file, kind) in KNOWN_FAILURES {
        let prefix = format!("tests/ops/{file}: {kind}: ");
        if !known.iter().any(|l| l.starts_with(&prefix)) {
            failures.push(format!(
                "tests/ops/{file}: {kind}: listed in KNOWN_FAILURES but passes: remove the entry"
            ));
        }
    }
    if !known.is_empty() {
        println!("known failures:\n{}", known.join("\n"));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) in {} corpus files:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// Coverage
// ------------------------------------------------------------------------------------------

/// Every op name: one op of every kind, as the library lists them.
fn op_names() -> Vec<String> {
    lamina::ir::Op::every_kind()
        .iter()
        .map(|op| op.name().to_string())
        .collect()
}

/// The op a corpus file is about: the longest op name that is its stem or a `_` prefix of
/// it, among the ops its graph uses.
fn owner(stem: &str, used: &BTreeSet<&str>, ops: &[String]) -> Option<String> {
    ops.iter()
        .filter(|op| {
            (stem == op.as_str() || stem.starts_with(&format!("{op}_")))
                && used.contains(op.as_str())
        })
        .max_by_key(|op| op.len())
        .cloned()
}

#[test]
fn every_op_has_a_corpus_file() {
    let ops = op_names();
    let mut covered = BTreeSet::new();
    let mut problems = Vec::new();
    for path in corpus_files() {
        let file = file_name(&path);
        let stem = file.trim_end_matches(".ir");
        let src = std::fs::read_to_string(&path).unwrap();
        let g = match parse(&src) {
            Ok(g) => g,
            Err(e) => {
                problems.push(format!("tests/ops/{file} does not parse: {e}"));
                continue;
            }
        };
        let used: BTreeSet<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
        for u in &used {
            if !ops.iter().any(|o| o == u) {
                problems.push(format!(
                    "tests/ops/{file} uses {u}, which the scan of Op::name did not find"
                ));
            }
        }
        match owner(stem, &used, &ops) {
            Some(op) => {
                covered.insert(op);
            }
            None => problems.push(format!(
                "tests/ops/{file}: the name is not `<op>` or `<op>_<variant>` of an op it uses"
            )),
        }
    }
    let missing: Vec<&String> = ops.iter().filter(|o| !covered.contains(*o)).collect();
    for op in &missing {
        problems.push(format!("op {op} has no corpus file (tests/ops/{op}.ir)"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!("{} ops, every one with a corpus file", ops.len());
}

#[test]
fn header_lines() {
    let h = parse_header(&[
        "; free text: with a colon",
        "; input x: uniform -2 2",
        "; input y: away 0.2 3",
        "; input ids: ids 0..7",
        "; jit: 2e-4",
        "; grad: none",
        "; loss: a, b",
    ])
    .unwrap();
    assert_eq!(
        h.inputs,
        vec![
            ("x".to_string(), Dist::Uniform(-2.0, 2.0)),
            ("y".to_string(), Dist::Away(0.2, 3.0)),
            ("ids".to_string(), Dist::Ids(0, 7)),
        ]
    );
    assert_eq!(h.jit_tol, 2e-4);
    assert_eq!(h.grad_tol, None);
    assert_eq!(h.loss, Some(vec!["a".to_string(), "b".to_string()]));
    let d = parse_header(&["; a graph"]).unwrap();
    assert_eq!(
        (d.jit_tol, d.grad_tol),
        (DEFAULT_JIT_TOL, Some(DEFAULT_GRAD_TOL))
    );
    for bad in [
        "; input x: uniform 2 -2",
        "; input x: normal 0 1",
        "; input x: ids 0 7",
        "; jit: 0",
        "; grad: lots",
        "; jit 1e-4",
    ] {
        assert!(parse_header(&[bad]).is_err(), "{bad} is accepted");
    }
    assert!(parse_header(&["; jit: 1e-4", "; jit: 1e-3"]).is_err());
    assert!(parse_header(&["; input x: uniform 0 1", "; input x: uniform 0 1"]).is_err());
}
