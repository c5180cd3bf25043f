//! The deterministic text form of a kernel program (`lamina ir --stage kernels`).

use super::*;
use crate::ir::UnaryOp;
use std::fmt::Write;

fn access(a: &Access) -> String {
    let rows = match &a.rows {
        RowMap::Affine { stride: 0 } => String::new(),
        RowMap::Affine { stride } => format!(" + r*{stride}"),
        RowMap::Table { table } => format!(" + {table}[r]"),
        RowMap::Indirect {
            ids,
            ids_offset,
            limit,
            stride,
        } => {
            format!(" + clamp({ids}[{ids_offset} + r], {limit})*{stride}")
        }
    };
    let cols = match a.col_stride {
        0 => String::new(),
        1 => " + c".to_string(),
        s => format!(" + c*{s}"),
    };
    format!("{}[{}{rows}{cols}]", a.buf, a.offset)
}

fn expr(e: &KExpr) -> String {
    match e {
        KExpr::Load(a) => format!("load {}", access(a)),
        KExpr::Const(v) => format!("const {v:?}"),
        KExpr::Unary(op, a) => match op {
            UnaryOp::Scale { factor } => format!("scale v{a}, {:?}", factor.get()),
            UnaryOp::AddScalar { value } => format!("add_scalar v{a}, {:?}", value.get()),
            op => format!("{} v{a}", op.name()),
        },
        KExpr::Binary(op, a, b) => format!("{} v{a}, v{b}", op.name()),
        KExpr::RowSum(a) => format!("row_sum v{a}"),
        KExpr::RowMax(a) => format!("row_max v{a}"),
        KExpr::CausalMask { x, fill } => format!("causal_mask v{x}, {fill:?}"),
        KExpr::OneHot { ids, classes } => format!("one_hot {}, {classes}", access(ids)),
        KExpr::TopKMask { x, k } => format!("topk_mask {}, {k}", access(x)),
    }
}

fn operand(o: &MatOperand) -> String {
    let first = o.offsets.first().copied().unwrap_or(0);
    let step = if o.offsets.len() > 1 {
        o.offsets[1] - o.offsets[0]
    } else {
        0
    };
    let uniform = o.offsets.windows(2).all(|w| w[1] - w[0] == step);
    let batch = if o.offsets.len() <= 1 {
        String::new()
    } else if uniform {
        format!(" + i*{step}")
    } else {
        " + batch_table[i]".to_string()
    };
    format!("{}[{first}{batch}] rs={} cs={}", o.buf, o.rs, o.cs)
}

/// The program's outputs, which of them are stored in place, and the guards of those.
fn print_outputs(p: &Program, s: &mut String) {
    for (i, o) in p.outputs.iter().enumerate() {
        let in_place = if p.in_place.pairs.iter().any(|&(po, _)| po == i) {
            " in place"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  output {} = {}[{}] {:?}{in_place}",
            o.name, o.buf, o.offset, o.shape
        );
    }
    if !p.in_place.pairs.is_empty() {
        let guards: Vec<String> = p
            .in_place
            .guards
            .iter()
            .map(|(b, off, len)| format!("{b}[{off}..{}]", off + len))
            .collect();
        let _ = writeln!(
            s,
            "  in place from k{}, when finite: {}",
            p.in_place.first_kernel,
            guards.join(" ")
        );
    }
}

/// Print the buffers and kernels of a program.
pub fn print_program(p: &Program) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "program {}: {} kernels, {} buffers",
        p.name,
        p.kernels.len(),
        p.buffers.len()
    );
    for (i, b) in p.buffers.iter().enumerate() {
        let kind = match &b.kind {
            BufKind::Param(_) => "param",
            BufKind::Input(_) => "input",
            BufKind::Const(_) => "const",
            BufKind::Table(_) => "table",
            BufKind::Temp => "temp",
        };
        let _ = writeln!(
            s,
            "  b{i}: {kind} {}[{}] ; {}",
            b.dtype.name(),
            b.len,
            b.label
        );
    }
    print_outputs(p, &mut s);
    for (ki, k) in p.kernels.iter().enumerate() {
        let nodes: Vec<String> = k.nodes.iter().map(|n| format!("%{n}")).collect();
        let scope = if k.scope.is_empty() {
            String::new()
        } else {
            format!(" @{}", k.scope)
        };
        let head = format!("k{ki}");
        match &k.body {
            KernelBody::Loop(l) => {
                let _ = writeln!(
                    s,
                    "{head} loop {}x{} ({}){scope}",
                    l.rows,
                    l.cols,
                    nodes.join(" ")
                );
                for (i, n) in l.nodes.iter().enumerate() {
                    let kind = if n.kind == Kind::Row { "row" } else { "col" };
                    let _ = writeln!(s, "  v{i}:{kind} = {}", expr(&n.expr));
                }
                for st in &l.stores {
                    let what = if st.col { "" } else { " (row)" };
                    let _ = writeln!(s, "  store {} <- v{}{what}", access(&st.access), st.value);
                }
            }
            KernelBody::ColReduce {
                rows,
                cols,
                input,
                out,
            } => {
                let _ = writeln!(
                    s,
                    "{head} col_reduce {rows}x{cols} ({}){scope}",
                    nodes.join(" ")
                );
                let _ = writeln!(s, "  {} <- sum_r {}", access(out), access(input));
            }
            KernelBody::MatMul(mm) => {
                let _ = writeln!(
                    s,
                    "{head} matmul {}x[{}x{}x{}] {} ({}){scope}",
                    mm.c.offsets.len(),
                    mm.m,
                    mm.n,
                    mm.k,
                    mm.path.name(),
                    nodes.join(" ")
                );
                let _ = writeln!(s, "  a = {}", operand(&mm.a));
                let _ = writeln!(s, "  b = {}", operand(&mm.b));
                let _ = writeln!(s, "  c = {}", operand(&mm.c));
                if let Some(bias) = &mm.bias {
                    let _ = writeln!(
                        s,
                        "  bias = {}[{} + c*{}]",
                        bias.buf, bias.offset, bias.col_stride
                    );
                }
                if mm.alpha != 1.0 {
                    let _ = writeln!(s, "  alpha = {}", mm.alpha);
                }
            }
            KernelBody::ScatterAdd {
                ids,
                src,
                out,
                n,
                d,
                out_rows,
            } => {
                let _ = writeln!(
                    s,
                    "{head} scatter_add {n}x{d} -> {out_rows}x{d} ({}){scope}",
                    nodes.join(" ")
                );
                let _ = writeln!(s, "  {out}[{ids}[i], j] += {src}[i, j]");
            }
        }
    }
    s
}
