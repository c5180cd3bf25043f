//! Reverse-mode autodiff on the tensor IR.
//!
//! `differentiate` appends the backward pass to a forward graph, producing one joint graph:
//! backward nodes carry `Phase::Backward` and the scope of the forward node they come from,
//! outputs `grad.<param>` follow the forward outputs in parameter order, and `saved` lists
//! the forward values the backward nodes read.
//!
//! Only nodes on a path from a trainable parameter to the loss get gradients, so frozen
//! parameters and constant subgraphs cost nothing. Each op's vector-Jacobian product lives
//! in `vjp`. This module knows nothing of the language or of how ops are executed.

mod vjp;

use crate::ir::{DType, Graph, GraphBuilder, IrError, Op, OutputRole, Phase, UnaryOp, ValueId};

/// The joint forward+backward graph of `forward`, whose outputs must include a scalar
/// f32 `loss`.
pub fn differentiate(forward: &Graph) -> Result<Graph, IrError> {
    joint(forward, true)
}

/// `differentiate`, with the final dead-node sweep optional so tests can check that the
/// VJP rules emit nothing unused in the first place.
fn joint(forward: &Graph, prune: bool) -> Result<Graph, IrError> {
    forward.verify()?;
    let loss = forward
        .output_with(OutputRole::Loss)
        .ok_or_else(|| IrError::Graph("the graph has no `loss` output to differentiate".into()))?;
    if forward.nodes.iter().any(|n| n.phase != Phase::Forward) {
        return Err(IrError::Graph(
            "the graph already contains backward nodes".into(),
        ));
    }
    let loss_ty = forward.ty(loss);
    if loss_ty.dtype != DType::F32 || loss_ty.rank() != 0 {
        return Err(IrError::Graph(format!(
            "the loss must be a scalar f32[], got {loss_ty}"
        )));
    }
    let n_fwd = forward.nodes.len();
    let needs = needs_grad(forward, loss)?;

    let mut b = GraphBuilder::from_graph(forward.clone());
    b.set_phase(Phase::Backward);
    // Gradient contributions per forward value, summed when the value is reached.
    let mut contribs: Vec<Vec<ValueId>> = vec![Vec::new(); n_fwd];
    if needs[loss.index()] {
        b.set_scope(forward.node(loss).scope.clone());
        let seed = b.full(1.0, vec![])?;
        contribs[loss.index()].push(seed);
    }
    // Consumers have larger indices than their arguments, so a reverse sweep sees every
    // contribution to a value before the value itself.
    for i in (0..n_fwd).rev() {
        if !needs[i] || contribs[i].is_empty() || forward.nodes[i].op.is_leaf() {
            continue;
        }
        let node = &forward.nodes[i];
        b.set_scope(node.scope.clone());
        let dy = sum_contributions(&mut b, std::mem::take(&mut contribs[i]))?;
        let wants: Vec<bool> = node.args.iter().map(|a| needs[a.index()]).collect();
        let grads = vjp::vjp(&mut b, ValueId(i as u32), dy, &wants)?;
        for (arg, g) in node.args.iter().zip(grads) {
            if let Some(g) = g {
                contribs[arg.index()].push(g);
            }
        }
    }

    // A parameter may appear as several nodes (e.g. a parsed graph); their gradients add.
    let mut param_contribs: Vec<Vec<ValueId>> = vec![Vec::new(); forward.params.len()];
    let mut param_scope: Vec<Option<String>> = vec![None; forward.params.len()];
    for (i, node) in forward.nodes.iter().enumerate() {
        if let Op::Param { index } = node.op {
            let slot = param_contribs
                .get_mut(index)
                .ok_or_else(|| IrError::Graph(format!("%{i}: param #{index} does not exist")))?;
            slot.append(&mut contribs[i]);
            param_scope[index].get_or_insert_with(|| node.scope.clone());
        }
    }
    for (index, param) in forward.params.iter().enumerate() {
        if !param.trainable {
            continue;
        }
        b.set_scope(param_scope[index].clone().unwrap_or_default());
        let g = match std::mem::take(&mut param_contribs[index]) {
            // A trainable parameter the loss does not depend on: its gradient is zero.
            c if c.is_empty() => b.full(0.0, param.shape.clone())?,
            c => sum_contributions(&mut b, c)?,
        };
        b.output(OutputRole::Grad(&param.name).name(), g);
    }

    let mut g = b.finish();
    if prune {
        prune_backward(&mut g, n_fwd);
    }
    if forward
        .nodes
        .iter()
        .any(|n| n.op == Op::Unary(UnaryOp::StopGradient))
    {
        schedule_backward_early(&mut g, n_fwd);
    }
    // The forward values the backward pass reads (by phase: the schedule may interleave).
    let mut saved: Vec<ValueId> = g
        .nodes
        .iter()
        .filter(|n| n.phase == Phase::Backward)
        .flat_map(|n| n.args.iter().copied())
        .filter(|a| g.nodes[a.index()].phase == Phase::Forward)
        .collect();
    saved.sort();
    saved.dedup();
    g.saved = saved;
    g.verify()
        .map_err(|e| IrError::Graph(format!("autodiff produced an invalid graph: {e}")))?;
    Ok(g)
}

/// Ops whose result carries no gradient back to their arguments: `stop_gradient` by
/// definition, `topk_mask` because it is piecewise constant.
fn passes_no_gradient(op: &Op) -> bool {
    matches!(op, Op::Unary(UnaryOp::StopGradient) | Op::TopKMask { .. })
}

/// Which values need a gradient: f32 values on a path from a trainable parameter to `loss`
/// that does not pass through a `stop_gradient` or a `topk_mask`. What feeds only stopped
/// paths gets no backward nodes and, unless the backward pass reads it, need not be kept.
fn needs_grad(g: &Graph, loss: ValueId) -> Result<Vec<bool>, IrError> {
    let n = g.nodes.len();
    let mut from_param = vec![false; n];
    for (i, node) in g.nodes.iter().enumerate() {
        for a in &node.args {
            if a.index() >= i {
                return Err(IrError::Graph(format!(
                    "%{i}: argument {a} is not defined before use"
                )));
            }
        }
        from_param[i] = node.ty.dtype == DType::F32
            && match node.op {
                Op::Param { index } => g.params.get(index).is_some_and(|p| p.trainable),
                _ if passes_no_gradient(&node.op) => false,
                _ => node.args.iter().any(|a| from_param[a.index()]),
            };
    }
    let mut to_loss = vec![false; n];
    to_loss[loss.index()] = true;
    for i in (0..n).rev() {
        if to_loss[i] && !passes_no_gradient(&g.nodes[i].op) {
            for a in &g.nodes[i].args {
                to_loss[a.index()] = true;
            }
        }
    }
    Ok((0..n).map(|i| from_param[i] && to_loss[i]).collect())
}

/// The sum of a value's gradient contributions (a chain of adds, in order of arrival).
fn sum_contributions(b: &mut GraphBuilder, contribs: Vec<ValueId>) -> Result<ValueId, IrError> {
    let mut it = contribs.into_iter();
    let mut acc = it
        .next()
        .ok_or_else(|| IrError::Graph("internal: summing no gradient contributions".into()))?;
    for c in it {
        acc = b.add(acc, c)?;
    }
    Ok(acc)
}

/// Move backward nodes (index >= `n_fwd`) in among the forward nodes, keeping each
/// ordering the original graph has. A backward node goes right after the forward node
/// `key`: the earliest forward value after which everything it reads exists (its
/// "ready" point) for a gradient output, and for any other node the smallest key of its
/// users, so a value is made just before it is first needed and nothing lives longer
/// than before. Behind a `stop_gradient`, the backward pass of a group of layers depends
/// only on that group (a local loss), so it then runs before the next group's forward
/// pass and the group's activations die before the next group's are made. Applied only
/// to graphs with a `stop_gradient`: under end-to-end backprop every gradient waits for
/// the loss anyway.
fn schedule_backward_early(g: &mut Graph, n_fwd: usize) {
    let n = g.nodes.len();
    let mut ready = vec![0usize; n];
    for i in 0..n {
        ready[i] = if i < n_fwd {
            i
        } else {
            g.nodes[i]
                .args
                .iter()
                .map(|a| ready[a.index()])
                .max()
                .unwrap_or(0)
        };
    }
    let mut first_use: Vec<Option<usize>> = vec![None; n];
    let mut key = ready.clone();
    for i in (n_fwd..n).rev() {
        if let Some(k) = first_use[i] {
            key[i] = k;
        }
        for a in &g.nodes[i].args {
            let slot = &mut first_use[a.index()];
            *slot = Some(slot.map_or(key[i], |k| k.min(key[i])));
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (key[i], i >= n_fwd, i));
    if order.iter().enumerate().all(|(k, &i)| k == i) {
        return;
    }
    let mut remap = vec![0u32; n];
    for (k, &i) in order.iter().enumerate() {
        remap[i] = k as u32;
    }
    let mut old: Vec<Option<crate::ir::Node>> =
        std::mem::take(&mut g.nodes).into_iter().map(Some).collect();
    for &i in &order {
        if let Some(mut node) = old[i].take() {
            for a in &mut node.args {
                *a = ValueId(remap[a.index()]);
            }
            g.nodes.push(node);
        }
    }
    for o in &mut g.outputs {
        o.value = ValueId(remap[o.value.index()]);
    }
}

/// Drop backward nodes (index >= `n_fwd`) that no output reads, renumbering the rest.
/// The VJP rules aim to emit nothing unused; this keeps that a guarantee.
fn prune_backward(g: &mut Graph, n_fwd: usize) {
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for o in &g.outputs {
        live[o.value.index()] = true;
    }
    for i in (n_fwd..n).rev() {
        if live[i] {
            for a in &g.nodes[i].args {
                live[a.index()] = true;
            }
        }
    }
    if live[n_fwd..].iter().all(|&l| l) {
        return;
    }
    let mut remap: Vec<u32> = (0..n as u32).collect();
    let mut next = n_fwd as u32;
    for i in n_fwd..n {
        if live[i] {
            remap[i] = next;
            next += 1;
        }
    }
    let old = std::mem::take(&mut g.nodes);
    for (i, mut node) in old.into_iter().enumerate() {
        if i < n_fwd || live[i] {
            for a in &mut node.args {
                *a = ValueId(remap[a.index()]);
            }
            g.nodes.push(node);
        }
    }
    for o in &mut g.outputs {
        o.value = ValueId(remap[o.value.index()]);
    }
}

#[cfg(test)]
mod tests;
