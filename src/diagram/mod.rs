//! `lamina graph`: a block diagram of the elaborated architecture, as SVG or Graphviz DOT.
//!
//! The picture is drawn from `elab::Outline` (the resolved plan the IR is lowered from)
//! and the forward graph's parameters, never from the source text. Two parts:
//! - the stack, top to bottom: input, embedding, every executed layer (its weight set,
//!   parameter count, shared runs and loops, weight sets an `order` skips), the cuts and
//!   taps of the learning rule, final norm, head and loss;
//! - each block used, drawn once: the residual stream with every step's norms, sublayers
//!   (parallel ones side by side), coefficient and skip.
//!
//! Layout is computed here with fixed sizes, so the output is deterministic text.

mod dot;
mod svg;

pub use dot::dot;
pub use svg::svg;

use crate::elab::{LayerOutline, Outline};
use crate::ir::Graph;

/// Parameter elements of `g` whose names start with `prefix.` (or equal `prefix`).
pub fn params_under(g: &Graph, prefix: &str) -> usize {
    g.params
        .iter()
        .filter(|p| {
            p.name == prefix
                || p.name
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .map(|p| p.shape.iter().product::<usize>())
        .sum()
}

/// One entry of the stack, top to bottom.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Entry {
    /// Executed layer `i` of `Outline::layers`.
    Layer(usize),
    /// A weight set no layer runs.
    Skipped(usize),
}

/// The executed layers with the weight sets an `order` leaves out placed after the last
/// layer that runs a lower weight set.
fn entries(o: &Outline) -> Vec<Entry> {
    let mut out: Vec<Entry> = (0..o.layers.len()).map(Entry::Layer).collect();
    for w in (0..o.weight_sets).rev() {
        if o.layers.iter().any(|l| l.weights == w) {
            continue;
        }
        let at = o
            .layers
            .iter()
            .rposition(|l| l.weights < w)
            .map_or(0, |i| i + 1);
        let pos = out
            .iter()
            .position(|e| *e == Entry::Layer(at))
            .unwrap_or(out.len());
        out.insert(pos, Entry::Skipped(w));
    }
    out
}

/// Runs of consecutive layers with the same weight set: (first layer, count), count > 1.
fn loops(o: &Outline) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut i = 0;
    while i < o.layers.len() {
        let n = o.layers[i..]
            .iter()
            .take_while(|l| l.weights == o.layers[i].weights)
            .count();
        if n > 1 {
            out.push((i, n));
        }
        i += n;
    }
    out
}

/// The blocks the layers use, in order of first use, each with its first weight set.
fn used_blocks(o: &Outline) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = vec![];
    for l in &o.layers {
        if !out.iter().any(|(b, _)| *b == l.block) {
            out.push((l.block, l.weights));
        }
    }
    out
}

/// `1234567` as `1.23M`, `12345` as `12.3k`.
fn short_count(n: usize) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// ` · parallel`, ` · routed`, ` · θA + 0.5 θB`: a layer's part in a depth program.
fn program_note(l: &LayerOutline) -> String {
    let mut s = String::new();
    if let Some(p) = l.program {
        s.push_str(" · ");
        s.push_str(p);
    }
    if let Some(c) = l.expand {
        s.push_str(&format!(" · θA + {} θB", coef(c)));
    }
    if l.drop_path > 0.0 {
        s.push_str(&format!(" · drop {}", coef(l.drop_path)));
    }
    s
}

/// A coefficient as written in a model file: `0.5`, `1`, `0.333`.
fn coef(c: f64) -> String {
    let s = format!("{c:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests;
