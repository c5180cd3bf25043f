//! The diagram as Graphviz DOT: the stack as a chain of nodes, each block used as a
//! cluster with its steps.

use super::{coef, entries, loops, params_under, used_blocks, Entry};
use crate::elab::{NormPlacement, Outline, SkipOutline, StepOutline, Tap};
use crate::ir::Graph;
use std::fmt::Write;

/// A quoted DOT string; `\n` in `s` stays DOT's line break.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\\\""))
}

/// The diagram of a model as DOT text (`dot -Tsvg` draws it).
pub fn dot(o: &Outline, g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", q(&o.name));
    let _ = writeln!(out, "  rankdir=TB; node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"DejaVu Sans\"];");
    let _ = writeln!(
        out,
        "  input [label={}];",
        q(&format!("input\\n{}", o.input))
    );
    let _ = writeln!(
        out,
        "  embed [label={}, fillcolor=\"#fdf0dc\"];",
        q(&format!("embed\\n{}", o.embed))
    );
    out.push_str("  input -> embed;\n");
    let mut last = layers(&mut out, o, g);
    let mut tail: Vec<(String, String)> = vec![];
    if let Some(n) = &o.final_norm {
        tail.push(("final_norm".into(), format!("final norm\\n{n}")));
    }
    tail.push(("head".into(), o.head.clone()));
    tail.push(("loss".into(), format!("loss\\n{}", o.loss)));
    for (name, label) in tail {
        let _ = writeln!(out, "  {name} [label={}];", q(&label));
        let _ = writeln!(out, "  {last} -> {name};");
        last = name;
    }
    for (block, weights) in used_blocks(o) {
        cluster(&mut out, o, block, weights);
    }
    out.push_str("}\n");
    out
}

/// The executed layers (with the losses they feed and the weight sets skipped) chained
/// after the embedding, and the loops; returns the last layer's node.
fn layers(out: &mut String, o: &Outline, g: &Graph) -> String {
    let mut chain: Vec<String> = vec!["embed".into()];
    for e in entries(o) {
        match e {
            Entry::Layer(i) => {
                let l = o.layers[i];
                let name = format!("layer{i}");
                let what = match l.run {
                    0 => format!(
                        "{} params",
                        params_under(g, &format!("blocks.{}", l.weights))
                    ),
                    r => format!("shared: run {} of blocks.{}", r + 1, l.weights),
                };
                let label = format!(
                    "layer {i}: {} (blocks.{}){}\\n{what}",
                    o.blocks[l.block].name,
                    l.weights,
                    super::program_note(&l)
                );
                let _ = writeln!(out, "  {name} [label={}];", q(&label));
                if l.detached {
                    let _ = writeln!(out, "  {} -> {name} [style=dashed, color=\"#c0392b\", label=\"stop_gradient\"];", chain.last().map_or("embed", |s| s));
                } else {
                    let _ = writeln!(out, "  {} -> {name};", chain.last().map_or("embed", |s| s));
                }
                let tap = match l.tap {
                    Some(Tap::Local(k)) => Some(format!("loss.local.{k}")),
                    Some(Tap::Goodness) => Some("goodness loss".to_string()),
                    None => None,
                };
                if let Some(tap) = tap {
                    let _ = writeln!(out, "  {name}_loss [label={}, fillcolor=\"#fbe9f3\"];\n  {name} -> {name}_loss;", q(&tap));
                }
                chain.push(name);
            }
            Entry::Skipped(w) => {
                let _ = writeln!(out, "  skipped{w} [label=\"blocks.{w} skipped\", style=\"rounded,dashed\", fontcolor=gray];");
                let _ = writeln!(
                    out,
                    "  {} -> skipped{w} [style=invis];",
                    chain.last().map_or("embed", |s| s)
                );
            }
        }
    }
    for (first, n) in loops(o) {
        let _ = writeln!(
            out,
            "  layer{} -> layer{first} [style=dotted, label=\"×{n}\", constraint=false];",
            first + n - 1
        );
    }
    chain.pop().unwrap_or_else(|| "embed".into())
}

/// One block as a cluster: the stream through each step's add.
fn cluster(out: &mut String, o: &Outline, block: usize, weights: usize) {
    let b = &o.blocks[block];
    let _ = writeln!(
        out,
        "  subgraph cluster_{block} {{\n    label={}; style=dashed;",
        q(&format!("block {} (blocks.{weights})", b.name))
    );
    let mut prev = format!("b{block}_in");
    let _ = writeln!(out, "    {prev} [label=\"x\", shape=plaintext];");
    for (k, s) in b.steps.iter().enumerate() {
        prev = step(out, block, k, s, &prev);
    }
    let _ = writeln!(
        out,
        "    b{block}_out [label=\"x\", shape=plaintext];\n    {prev} -> b{block}_out;\n  }}"
    );
}

/// A step's nodes; returns its add node.
fn step(out: &mut String, block: usize, k: usize, s: &StepOutline, prev: &str) -> String {
    let id = format!("b{block}s{k}");
    let add = format!("{id}_add");
    let _ = writeln!(out, "    {add} [label=\"+\", shape=circle];");
    let mut from = prev.to_string();
    if matches!(s.placement, NormPlacement::Pre | NormPlacement::Peri) {
        let _ = writeln!(
            out,
            "    {id}_norm [label={}, fillcolor=\"#fff6cf\"];\n    {from} -> {id}_norm;",
            q(&s.norm)
        );
        from = format!("{id}_norm");
    }
    for (j, br) in s.branches.iter().enumerate() {
        let node = format!("{id}_b{j}");
        let mut label = format!("{}: {}", br.name, br.what);
        if s.placement == NormPlacement::Peri {
            label.push_str(&format!("\\n+ {} out", s.norm));
        }
        if s.coef != 1.0 {
            label.push_str(&format!("\\n× {}", coef(s.coef)));
        }
        let _ = writeln!(
            out,
            "    {node} [label={}];\n    {from} -> {node};\n    {node} -> {add};",
            q(&label)
        );
    }
    let skip = match s.skip {
        SkipOutline::Residual => Some(String::new()),
        SkipOutline::None => None,
        SkipOutline::Scaled(a) => Some(format!("× {}", coef(a))),
        SkipOutline::Learned(a) => Some(format!("× α (learned, {})", coef(a))),
        SkipOutline::Hourglass { width, .. } => Some(format!("at width {width}")),
    };
    if let Some(label) = skip {
        let _ = writeln!(
            out,
            "    {prev} -> {add} [style=bold, label={}];",
            q(&label)
        );
    }
    if s.placement == NormPlacement::Post {
        let _ = writeln!(
            out,
            "    {id}_post [label={}, fillcolor=\"#fff6cf\"];\n    {add} -> {id}_post;",
            q(&format!("{} (post)", s.norm))
        );
        return format!("{id}_post");
    }
    add
}
