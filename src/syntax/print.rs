//! The AST as deterministic, indented text (`lamina ir --stage ast`, snapshots).
//!
//! Binary expressions are fully parenthesised so the tree's shape is visible; floats use
//! Rust's shortest round-tripping form (`{:?}`), so `1e-5` prints as `1e-5`.

use std::fmt::Write as _;

use super::ast::{
    Arg, BinOp, Block, BlockItem, Call, Expr, ExprKind, Item, Module, NormSpec, Scheme, Stack,
    TrainValue,
};

pub fn print_ast(m: &Module) -> String {
    let mut out = String::from("module\n");
    for item in &m.items {
        item_text(&mut out, item);
    }
    if let Some(t) = &m.train {
        out.push_str("  train\n");
        for s in &t.settings {
            let value = match &s.value {
                TrainValue::Call(c) => call(c),
                TrainValue::Expr(e) => expr(e),
            };
            let _ = writeln!(out, "    {} = {value}", s.key.name);
        }
    }
    out
}

fn item_text(out: &mut String, item: &Item) {
    let line = match item {
        Item::Model(name) => format!("model {}", name.name),
        Item::Const { name, value } => format!("const {} = {}", name.name, expr(value)),
        Item::Input(c) => format!("input {}", call(c)),
        Item::Embed(c) => call(c),
        Item::Norm(n) => norm(n),
        Item::Skip(c) => format!("skip {}", call(c)),
        Item::Block(b) => return block(out, b),
        Item::Stack(s) => stack(s),
        Item::FinalNorm(c) => format!("final_norm {}", call(c)),
        Item::Head(c) => format!("head {}", call(c)),
        Item::Loss(c) => format!("loss {}", call(c)),
        Item::Learning(c) => format!("learning {}", call(c)),
    };
    let _ = writeln!(out, "  {line}");
}

fn block(out: &mut String, b: &Block) {
    let _ = writeln!(out, "  block {}", b.name.name);
    for item in &b.items {
        let line = match item {
            BlockItem::Norm(n) => norm(n),
            BlockItem::Skip(c) => format!("skip {}", call(c)),
            BlockItem::Sublayer(s) => {
                let mut line = format!("sublayer {} = {}", s.name.name, call(&s.call));
                if let Some(n) = &s.norm {
                    line.push(' ');
                    line.push_str(&norm(n));
                }
                if let Some(c) = &s.skip {
                    let _ = write!(line, " skip {}", call(c));
                }
                line
            }
            BlockItem::Scheme(Scheme::Named(c)) => format!("scheme {}", call(c)),
            BlockItem::Scheme(Scheme::Steps { steps, .. }) => {
                let steps: Vec<String> = steps
                    .iter()
                    .map(|s| match &s.coef {
                        Some(c) => format!("{} * {}", s.sublayer.name, expr(c)),
                        None => s.sublayer.name.clone(),
                    })
                    .collect();
                format!("scheme [{}]", steps.join(", "))
            }
        };
        let _ = writeln!(out, "    {line}");
    }
}

fn stack(s: &Stack) -> String {
    let mut line = format!("stack {} * {}", s.block.name, expr(&s.count));
    if s.shared.is_some() {
        line.push_str(" shared");
    }
    if let Some(o) = &s.order {
        let _ = write!(line, " order {}", expr(o));
    }
    for c in &s.clauses {
        let _ = write!(line, " {}", c.word.name);
        if let Some(v) = &c.value {
            let _ = write!(line, " {}", expr(v));
        }
    }
    line
}

fn norm(n: &NormSpec) -> String {
    let parts: Vec<String> = n.parts.iter().map(call).collect();
    format!("norm {}", parts.join(" "))
}

fn call(c: &Call) -> String {
    match &c.args {
        None => c.name.name.clone(),
        Some(args) => {
            let args: Vec<String> = args.iter().map(arg).collect();
            format!("{}({})", c.name.name, args.join(", "))
        }
    }
}

fn arg(a: &Arg) -> String {
    match &a.key {
        Some(k) => format!("{} = {}", k.name, expr(&a.value)),
        None => expr(&a.value),
    }
}

/// An expression in source syntax; binary operations are parenthesised.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) => format!("{v:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Neg(inner) => match &inner.kind {
            ExprKind::Neg(_) => format!("-({})", expr(inner)),
            ExprKind::Int(v) if *v < 0 => format!("-({v})"),
            ExprKind::Float(v) if v.is_sign_negative() => format!("-({v:?})"),
            _ => format!("-{}", expr(inner)),
        },
        ExprKind::Binary(op, l, r) => format!("({} {} {})", expr(l), op_text(*op), expr(r)),
        ExprKind::List(items) => {
            let items: Vec<String> = items.iter().map(expr).collect();
            format!("[{}]", items.join(", "))
        }
        ExprKind::Call(c) => call(c),
    }
}

fn op_text(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::FloorDiv => "//",
        BinOp::Mod => "%",
    }
}
