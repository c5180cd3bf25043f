//! `lamina depth-search`: a greedy search over layer orders built from skips and loops of a
//! trained model's layers (CoLa's search space), scored by the held-out loss.
//!
//! An order lists executed layers of the model by index (the identity is `0..L`). From the
//! current order every candidate is one move: leave out the layer at a position (a skip),
//! or run the previous position's layer again in its place (a loop, same depth). The best
//! candidate is taken while it lowers the held-out loss, so the result is never deeper than
//! the model and never worse than the identity on the held-out batches. The weights keep
//! their names (`blocks.<w>`), so the model's weights file runs every order.

use super::probe::held_out_loss;
use super::tasks::{Batch, Task};
use super::TrainError;
use crate::elab::{LayerEdit, Probing};
use crate::front::Compiled;
use std::path::Path;

/// One evaluated order.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Indices into the model's executed layers.
    pub order: Vec<usize>,
    pub loss: f64,
}

pub struct Search {
    /// The model's own order.
    pub identity: Scored,
    /// Every order evaluated, best first (ties: fewer layers first).
    pub ranked: Vec<Scored>,
    /// The order the greedy search ended at.
    pub best: Scored,
}

pub fn search(
    c: &Compiled,
    weights: &Path,
    task: &Task,
    batches: &[Batch],
    rounds: usize,
) -> Result<Search, TrainError> {
    let n = crate::elab::executed_layers(&c.module, &c.forward.name, &c.overrides)
        .map_err(|d| TrainError::Internal(format!("{} diagnostic(s) elaborating", d.len())))?
        .len();
    let score = |order: &[usize]| -> Result<Scored, TrainError> {
        let probing = Probing {
            states: false,
            layers: LayerEdit::Order(order.to_vec()),
            skip_below: None,
            training: false,
        };
        let g = crate::elab::elaborate_probed(&c.module, &c.forward.name, &c.overrides, probing)
            .map_err(|d| TrainError::Internal(format!("{} diagnostic(s) elaborating", d.len())))?;
        Ok(Scored {
            order: order.to_vec(),
            loss: held_out_loss(&g, weights, task, batches)?,
        })
    };
    let identity = score(&(0..n).collect::<Vec<_>>())?;
    let mut ranked = vec![identity.clone()];
    let mut best = identity.clone();
    for _ in 0..rounds {
        let mut round_best: Option<Scored> = None;
        for cand in moves(&best.order) {
            if ranked.iter().any(|s| s.order == cand) {
                continue;
            }
            let s = score(&cand)?;
            ranked.push(s.clone());
            if round_best.as_ref().is_none_or(|b| better(&s, b)) {
                round_best = Some(s);
            }
        }
        match round_best {
            Some(s) if s.loss < best.loss => best = s,
            _ => break,
        }
    }
    ranked.sort_by(|a, b| {
        a.loss
            .total_cmp(&b.loss)
            .then(a.order.len().cmp(&b.order.len()))
    });
    Ok(Search {
        identity,
        ranked,
        best,
    })
}

fn better(a: &Scored, b: &Scored) -> bool {
    a.loss < b.loss || (a.loss == b.loss && a.order.len() < b.order.len())
}

/// Every order one move from `order`: a position left out (at least one layer stays), or a
/// position running the previous position's layer again.
fn moves(order: &[usize]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    if order.len() > 1 {
        for p in 0..order.len() {
            let mut o = order.to_vec();
            o.remove(p);
            out.push(o);
        }
    }
    for p in 1..order.len() {
        if order[p] != order[p - 1] {
            let mut o = order.to_vec();
            o[p] = order[p - 1];
            out.push(o);
        }
    }
    out
}

/// The model file with its one `stack` statement replaced by `stack B * N order [..]`, or
/// why that cannot be written: the order's indices are the stack's weight sets only when
/// the model has one plain `stack`.
pub fn model_with_order(c: &Compiled, order: &[usize]) -> Result<String, String> {
    let stacks = c.module.stacks();
    let [stack] = stacks[..] else {
        return Err(format!(
            "the model has {} `stack` statements; an order can be written for one",
            stacks.len()
        ));
    };
    if stack.shared.is_some() || stack.order.is_some() {
        return Err("the model's stack already shares or orders its weights".into());
    }
    let span = stack.span;
    let list: Vec<String> = order.iter().map(|i| i.to_string()).collect();
    let count = &c.source[stack.count.span.start..stack.count.span.end];
    let line = format!(
        "stack {} * {count} order [{}]",
        stack.block.name,
        list.join(", ")
    );
    Ok(format!(
        "{}{}{}",
        &c.source[..span.start],
        line,
        &c.source[span.end..]
    ))
}
