//! From a line of a stage's text to the source line it comes from, by model scope: an IR
//! line ends in `@blocks.2.attn`, a parameter line names `blocks.2.attn.wq.weight`, and
//! the scope leads to the statement that made it (the sublayer `attn` of the block that
//! weight set 2 runs, the `embed`, `head`, `learning` ... statement).

use crate::diag::line_col;
use crate::elab::Outline;
use crate::front::Compiled;
use crate::syntax::ast::{BlockItem, Item, Span};

/// Scope prefixes with the source line (1-based) each comes from.
fn scope_lines(c: &Compiled, o: &Outline) -> Vec<(String, usize)> {
    let line = |s: Span| line_col(&c.source, s.start).0;
    let mut out = vec![];
    for item in &c.module.items {
        match item {
            Item::Embed(call) => {
                out.push(("embed".to_string(), line(call.span)));
                out.push(("pos".to_string(), line(call.span)));
            }
            Item::Head(call) => out.push(("head".to_string(), line(call.span))),
            Item::FinalNorm(call) => out.push(("final_norm".to_string(), line(call.span))),
            Item::Loss(call) => out.push(("loss".to_string(), line(call.span))),
            Item::Learning(call) => {
                out.push(("local".to_string(), line(call.span)));
                out.push(("ff".to_string(), line(call.span)));
            }
            Item::Block(b) => {
                let weights = o
                    .layers
                    .iter()
                    .filter(|l| {
                        o.blocks
                            .get(l.block)
                            .is_some_and(|ob| ob.name == b.name.name)
                    })
                    .map(|l| l.weights);
                for w in weights {
                    out.push((format!("blocks.{w}"), line(b.span)));
                    for bi in &b.items {
                        match bi {
                            BlockItem::Sublayer(s) => {
                                out.push((format!("blocks.{w}.{}", s.name.name), line(s.span)))
                            }
                            BlockItem::Norm(_) | BlockItem::Skip(_) | BlockItem::Scheme(_) => {}
                        }
                    }
                }
            }
            Item::Model(_)
            | Item::Const { .. }
            | Item::Input(_)
            | Item::Norm(_)
            | Item::Skip(_)
            | Item::Stack(_) => {}
        }
    }
    out
}

/// The scope a line of stage text names: its `@scope`, or the parameter it declares.
fn scope_of(line: &str) -> Option<&str> {
    if let Some(tok) = line
        .split_whitespace()
        .last()
        .filter(|t| t.starts_with('@'))
    {
        return Some(&tok[1..]);
    }
    let rest = line.trim_start().strip_prefix("param ")?;
    rest.split(':').next()
}

/// The longest scope prefix of `scope` (at a `.` boundary) and its line.
fn lookup(table: &[(String, usize)], scope: &str) -> Option<usize> {
    table
        .iter()
        .filter(|(p, _)| {
            scope == p
                || scope
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        })
        .max_by_key(|(p, _)| p.len())
        .map(|(_, l)| *l)
}

/// For each line of `text`, the source line it comes from, if any.
pub fn source_lines(text: &str, c: &Compiled, o: &Outline) -> Vec<Option<usize>> {
    let table = scope_lines(c, o);
    text.lines()
        .map(|l| scope_of(l).and_then(|s| lookup(&table, s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ir_lines_point_at_their_sublayer() {
        let src = "input tokens(batch = 2, length = 4, vocab = 8)\nembed(dim = 8)\nblock l {\n  a = attention(heads = 2)\n  f = ffn(hidden = 16)\n}\nstack l * 2\n";
        let c = crate::front::compile_source(src, "t.lam", &[]).unwrap();
        let o = c.outline().unwrap();
        let text = crate::ir::text::print(&c.forward);
        let lines = source_lines(&text, &c, &o);
        let find = |needle: &str| {
            let i = text.lines().position(|l| l.contains(needle)).unwrap();
            lines[i]
        };
        assert_eq!(find("param blocks.1.a.wq.weight"), Some(4));
        assert_eq!(find("@blocks.1.f"), Some(5));
        assert_eq!(find("param embed.weight"), Some(2));
        assert_eq!(find("graph "), None);
    }
}
