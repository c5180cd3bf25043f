//! `lamina extract --depth N`: a standalone model of `N` layers with independent weights,
//! cut from a stack with a depth program (docs/language.md, "Depth programs"):
//!
//! - `subnets [...]`: `N` is one of the depths; layer `i` takes the weights of the
//!   subnet's `i`-th layer (the same function as the subnet inside the full model);
//! - `expand linear`: layer `l = 1..N` gets `theta_A + (l / N) theta_B` (TLEG's
//!   variable-size initialisation);
//! - `shared stages S`: layer `i` of `N` gets the weights of stage `floor(i * S / N)`
//!   (SWS's expansion of the stage weights).
//!
//! The model file is the source with the stack statement rewritten.

use super::{get, Rewritten, TransformError};
use crate::front::Compiled;
use crate::syntax::ast::Stack;
use crate::tensor::Tensor;

/// How layer `i` of the extracted stack gets its weights from the stack's weight sets.
enum Rule {
    /// Copy weight set `sets[i]`.
    Copy(Vec<usize>),
    /// `A + ((i + 1) / n) B` from weight set `base`.
    Linear { base: usize, n: usize },
}

/// Cuts the `depth`-layer model out of `c`, whose weights are `weights` (by name).
pub fn by_depth(
    c: &Compiled,
    weights: &[(String, Tensor)],
    depth: usize,
) -> Result<Rewritten, TransformError> {
    let stacks = c.module.stacks();
    let [stack] = stacks[..] else {
        return Err(TransformError::Model(format!(
            "`extract --depth` cuts a model with one `stack`; this one has {}",
            stacks.len()
        )));
    };
    let plan = super::plan(c)?;
    let rule = rule(stack, &plan, depth)?;
    let source = rewrite(&c.source, stack, depth);
    super::finish(c, source, &format!("depth{depth}"), |name, _| {
        let Some((i, tail)) = layer_param(name) else {
            return Ok(Some(get(weights, name)?.clone()));
        };
        Ok(Some(match &rule {
            Rule::Copy(sets) => get(weights, &format!("blocks.{}.{tail}", sets[i]))?.clone(),
            Rule::Linear { base, n } => {
                let a = get(weights, &format!("blocks.{base}.{tail}"))?;
                let b = get(weights, &format!("blocks.{base}.{tail}.slope"))?;
                let c = (i + 1) as f64 / *n as f64;
                let data = a.data.iter().zip(&b.data).map(|(x, y)| x + c * y).collect();
                Tensor::f32(a.shape.clone(), data)
            }
        }))
    })
}

/// `blocks.<i>.<tail>` -> `(i, tail)`.
fn layer_param(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blocks.")?;
    let (i, tail) = rest.split_once('.')?;
    Some((i.parse().ok()?, tail))
}

fn rule(
    stack: &Stack,
    plan: &crate::elab::resolve::Plan,
    depth: usize,
) -> Result<Rule, TransformError> {
    let has = |w: &str| stack.clauses.iter().any(|c| c.word.name == w);
    if has("parallel") {
        return Err(TransformError::Model(
            "a stack with `parallel` groups cannot be cut by depth".into(),
        ));
    }
    let n = plan.layers.len();
    if let Some(s) = &plan.subnets {
        let k = s.depths.iter().position(|&d| d == depth).ok_or_else(|| {
            TransformError::Model(format!(
                "the model has subnets of depth {:?}; --depth {depth} is none of them",
                s.depths
            ))
        })?;
        let sets = s.layers[k]
            .iter()
            .map(|&i| plan.layers[i].weights)
            .collect();
        return Ok(Rule::Copy(sets));
    }
    if plan.layers.iter().any(|l| l.program.expand.is_some()) {
        return Ok(Rule::Linear {
            base: plan.layers[0].weights,
            n: depth,
        });
    }
    if has("stages") {
        // Stage k's weight set is the one its first layer runs.
        let stages = plan.weight_sets;
        let set_of_stage = |k: usize| plan.layers[k * n / stages].weights;
        let sets = (0..depth)
            .map(|i| set_of_stage(i * stages / depth))
            .collect();
        return Ok(Rule::Copy(sets));
    }
    Err(TransformError::Model(
        "the stack has no `subnets`, `expand linear` or `shared stages`, so there is nothing to cut by depth".into(),
    ))
}

/// The source with the stack statement replaced by `stack <block> * <depth>` (a router
/// clause kept).
fn rewrite(source: &str, stack: &Stack, depth: usize) -> String {
    let mut line = format!("stack {} * {depth}", stack.block.name);
    for c in &stack.clauses {
        if matches!(c.word.name.as_str(), "routed" | "sparsity") {
            line.push(' ');
            line.push_str(&source[c.span.start..c.span.end]);
        }
    }
    let (start, end) = (stack.span.start, stack.span.end);
    format!("{}{line}{}", &source[..start], &source[end..])
}
