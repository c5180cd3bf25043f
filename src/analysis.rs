//! What a reviewer compares between architectures: parameters, forward FLOPs per token, the
//! training step's activation memory, and `lamina diff` of two models (parameters added,
//! removed or reshaped by name, and the IR diff grouped by model scope).
//!
//! Everything here reads the elaborated graphs and their deterministic text, never the
//! source, so what differs is what the compiler builds.

use crate::driver::{Compiled, Stage, StageError};
use crate::ir::{text, DType, Graph, Op, Phase};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The sizes of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// Parameter elements (trainable and frozen).
    pub params: usize,
    /// Forward matmul FLOPs (2 per multiply-add) per token of a batch.
    pub flops_per_token: f64,
    /// Bytes of the training step's arena that are not parameters, optimizer state or
    /// inputs: the activations and gradients alive at the step's peak.
    pub step_activation_bytes: u64,
}

pub fn facts(c: &Compiled) -> Result<Facts, StageError> {
    let g = &c.forward;
    let step = c.step()?;
    let opts = crate::kernels::BuildOptions {
        replaces: crate::train::step::writeback_pairs(&step),
        ..Default::default()
    };
    let (persistent, total) = crate::runtime::step_memory(&step, &opts)
        .map_err(|e| StageError::Backend(e.to_string()))?;
    Ok(Facts {
        params: g.param_count(),
        flops_per_token: forward_flops(g) as f64 / tokens_per_batch(g) as f64,
        step_activation_bytes: total.saturating_sub(persistent) as u64,
    })
}

/// `2 * M * N * K` (times the batch dimensions) summed over the forward matmuls.
pub fn forward_flops(g: &Graph) -> u64 {
    g.nodes
        .iter()
        .filter(|n| n.phase == Phase::Forward)
        .filter_map(|n| match n.op {
            Op::MatMul { ta, .. } => {
                let a = g.ty(*n.args.first()?);
                let k = if ta {
                    a.shape.get(a.rank().checked_sub(2)?)?
                } else {
                    a.shape.last()?
                };
                Some(2 * n.ty.numel() as u64 * *k as u64)
            }
            _ => None,
        })
        .sum()
}

/// Tokens in one batch: every position of a token input, every row of a features input.
pub fn tokens_per_batch(g: &Graph) -> usize {
    match g.inputs.first() {
        Some(i) if i.ty.dtype == DType::I32 => i.ty.numel().max(1),
        Some(i) => i.ty.shape.first().copied().unwrap_or(1).max(1),
        None => 1,
    }
}

/// `lamina diff A B`: sizes side by side, parameter changes by name, the IR diff by scope
/// (`stage` is `Ir` or `Opt`).
pub fn diff(a: &Compiled, b: &Compiled, stage: Stage) -> Result<String, StageError> {
    let (fa, fb) = (facts(a)?, facts(b)?);
    let (na, nb) = (&a.file_name, &b.file_name);
    let mut out = String::new();
    let w = na.len().max(nb.len()).max(14);
    let _ = writeln!(out, "{:<24} {:>w$} {:>w$} {:>14}", "", na, nb, "delta");
    let row = |out: &mut String, what: &str, x: f64, y: f64, unit: &dyn Fn(f64) -> String| {
        let _ = writeln!(
            out,
            "{what:<24} {:>w$} {:>w$} {:>14}",
            unit(x),
            unit(y),
            signed(y - x, unit)
        );
    };
    let count = |v: f64| group_digits(v.round() as u64);
    let mib = |v: f64| format!("{:.2} MiB", v / (1 << 20) as f64);
    row(
        &mut out,
        "parameters",
        fa.params as f64,
        fb.params as f64,
        &count,
    );
    row(
        &mut out,
        "forward FLOPs per token",
        fa.flops_per_token,
        fb.flops_per_token,
        &count,
    );
    row(
        &mut out,
        "step activations",
        fa.step_activation_bytes as f64,
        fb.step_activation_bytes as f64,
        &mib,
    );
    let (x, y) = (fa.flops_per_token, fb.flops_per_token);
    let matched = (x - y).abs() <= 0.01 * x.max(y);
    let _ = writeln!(
        out,
        "compute-matched: {} (forward FLOPs per token within 1%)\n",
        if matched { "yes" } else { "no" }
    );
    out += &param_changes(&a.forward, &b.forward);
    let (ga, gb) = match stage {
        Stage::Opt => (a.optimized()?, b.optimized()?),
        _ => (a.forward.clone(), b.forward.clone()),
    };
    let _ = writeln!(out, "\nIR diff by scope (--stage {}):", stage.name());
    out += &scope_diff(&text::print(&ga), &text::print(&gb));
    Ok(out)
}

fn signed(d: f64, unit: &dyn Fn(f64) -> String) -> String {
    match d {
        d if d > 0.0 => format!("+{}", unit(d)),
        d if d < 0.0 => format!("-{}", unit(-d)),
        _ => "0".into(),
    }
}

/// `1234567` as `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parameters only in A, only in B, and in both with different shapes.
fn param_changes(a: &Graph, b: &Graph) -> String {
    let shapes = |g: &Graph| -> BTreeMap<String, Vec<usize>> {
        g.params
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect()
    };
    let (sa, sb) = (shapes(a), shapes(b));
    let mut out = String::new();
    let list = |out: &mut String, title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            let _ = writeln!(out, "{title} ({}):", lines.len());
            for l in lines {
                let _ = writeln!(out, "  {l}");
            }
        }
    };
    let only = |x: &BTreeMap<String, Vec<usize>>, y: &BTreeMap<String, Vec<usize>>| {
        x.iter()
            .filter(|(n, _)| !y.contains_key(*n))
            .map(|(n, s)| format!("{n} {s:?}"))
            .collect::<Vec<_>>()
    };
    list(&mut out, "parameters removed (only in A)", only(&sa, &sb));
    list(&mut out, "parameters added (only in B)", only(&sb, &sa));
    let reshaped = sa
        .iter()
        .filter_map(|(n, s)| {
            let t = sb.get(n)?;
            (t != s).then(|| format!("{n} {s:?} -> {t:?}"))
        })
        .collect();
    list(&mut out, "parameters reshaped", reshaped);
    if out.is_empty() {
        out = "parameters: the same names and shapes\n".into();
    }
    out
}

/// The node lines of a printed graph grouped by scope, in order of first appearance, with
/// value numbers erased (`%12` -> `%`) so that moving a node does not renumber the rest.
fn by_scope(text: &str) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut phase = "";
    for line in text.lines() {
        match line.trim_end_matches(':') {
            "forward" => phase = "",
            "backward" => phase = "backward ",
            "update" => phase = "update ",
            _ => {}
        }
        let Some(body) = line.strip_prefix("  %") else {
            continue;
        };
        let body = body.split_once(" = ").map_or(body, |(_, r)| r);
        let (node, scope) = match body.rsplit_once(" @") {
            Some((n, s)) => (n.trim_end(), s.trim()),
            None => (body.trim_end(), ""),
        };
        let erased = erase_values(node);
        let k = *index.entry(scope.to_string()).or_insert_with(|| {
            groups.push((scope.to_string(), Vec::new()));
            groups.len() - 1
        });
        groups[k].1.push(format!("{phase}{erased}"));
    }
    groups
}

fn erase_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
        }
    }
    out
}

/// Per scope, the lines only in A (`-`) and only in B (`+`), by a longest common
/// subsequence; scopes that are equal are left out.
fn scope_diff(a: &str, b: &str) -> String {
    let (ga, gb) = (by_scope(a), by_scope(b));
    let mut scopes: Vec<&str> = ga.iter().map(|(s, _)| s.as_str()).collect();
    for (s, _) in &gb {
        if !scopes.contains(&s.as_str()) {
            scopes.push(s);
        }
    }
    let lines = |g: &[(String, Vec<String>)], s: &str| -> Vec<String> {
        g.iter()
            .find(|(n, _)| n == s)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    };
    let mut out = String::new();
    for s in scopes {
        let (la, lb) = (lines(&ga, s), lines(&gb, s));
        if la == lb {
            continue;
        }
        let name = if s.is_empty() { "(model)" } else { s };
        let _ = writeln!(out, "@{name}");
        for (sign, l) in line_diff(&la, &lb) {
            let _ = writeln!(out, "  {sign} {l}");
        }
    }
    if out.is_empty() {
        out = "  no difference\n".into();
    }
    out
}

/// The edit script of two line sequences: `-` for A only, `+` for B only.
fn line_diff<'a>(a: &'a [String], b: &'a [String]) -> Vec<(char, &'a str)> {
    let (n, m) = (a.len(), b.len());
    // A scope too large to align in memory is shown replaced as a whole.
    if n.saturating_mul(m) > 4_000_000 {
        let minus = a.iter().map(|l| ('-', l.as_str()));
        return minus.chain(b.iter().map(|l| ('+', l.as_str()))).collect();
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(('-', a[i].as_str()));
            i += 1;
        } else {
            out.push(('+', b[j].as_str()));
            j += 1;
        }
    }
    out
}

/// `lamina params`: every parameter with its shape, count, role and status, and the totals.
pub fn params_table(g: &Graph) -> String {
    let shape_str = |s: &[usize]| {
        format!(
            "[{}]",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let name_w = g
        .params
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let shape_w = g
        .params
        .iter()
        .map(|p| shape_str(&p.shape).len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<name_w$}  {:<shape_w$}  {:>12}  {:<9}  status\n",
        "name", "shape", "count", "role"
    );
    let (mut trainable, mut frozen) = (0usize, 0usize);
    for p in &g.params {
        let n: usize = p.shape.iter().product();
        if p.trainable {
            trainable += n;
        } else {
            frozen += n;
        }
        out += &format!(
            "{:<name_w$}  {:<shape_w$}  {:>12}  {:<9}  {}\n",
            p.name,
            shape_str(&p.shape),
            group_digits(n as u64),
            p.role.name(),
            if p.trainable { "trainable" } else { "frozen" }
        );
    }
    out += &format!(
        "total: {} parameters in {} tensors ({} trainable, {} frozen)\n",
        group_digits((trainable + frozen) as u64),
        g.params.len(),
        group_digits(trainable as u64),
        group_digits(frozen as u64)
    );
    out
}
