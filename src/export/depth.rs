//! Depth programs in model.py: parallel groups, routers, stochastic depth and subnets
//! (docs/language.md, "Depth programs"). Linear expansion does not export: its `theta_B` tensors are named
//! `<param>.slope`, which no torch.nn.Module attribute can hold.

use super::py::{float, Code};
use super::Unsupported;
use crate::elab::resolve::{Head, Plan, Sub};

/// Whether the model's layers run under a depth program the plain layer loop cannot say.
pub(crate) fn has_program(plan: &Plan) -> bool {
    plan.subnets.is_some()
        || plan
            .layers
            .iter()
            .any(|l| l.program.joins || l.program.routed || l.program.drop_path > 0.0)
}

/// Refuses linear expansion and nested widths, with their locations.
pub(crate) fn check(plan: &Plan) -> Result<(), Unsupported> {
    let nested = plan
        .blocks
        .iter()
        .flat_map(|b| &b.units)
        .flat_map(|u| &u.branches)
        .find(|br| matches!(br.sub, Sub::Ffn { nested, .. } if nested.len > 0));
    if let Some(br) = nested {
        return Err(Unsupported {
            construct: "a nested ffn (`nested = [...]`)".into(),
            why: "model.py runs each ffn at one width".into(),
            hint: "export the model `lamina extract --width F` writes for one granularity".into(),
            span: br.span,
        });
    }
    match (
        plan.layers.iter().any(|l| l.program.expand.is_some()),
        plan.depth_span,
    ) {
        (true, Some(span)) => Err(Unsupported {
            construct: "`expand linear`".into(),
            why: "each layer's weights are theta_A + c * theta_B, and theta_B's names \
                  (`<param>.slope`) cannot be torch.nn.Module parameters"
                .into(),
            hint: "export the model `lamina extract --depth N` writes: its layers have \
                   independent weights"
                .into(),
            span,
        }),
        _ => Ok(()),
    }
}

/// Module-level constants: JOINS, ROUTED, SUBNETS (and the gate settings).
pub(crate) fn constants(c: &mut Code, plan: &Plan) {
    let list = |v: Vec<usize>| {
        v.iter()
            .map(|i| format!("{i}, "))
            .collect::<String>()
            .trim_end()
            .to_string()
    };
    let joins: Vec<usize> = (0..plan.layers.len())
        .filter(|&i| plan.layers[i].program.joins)
        .collect();
    let routed: Vec<usize> = (0..plan.layers.len())
        .filter(|&i| plan.layers[i].program.routed)
        .collect();
    c.line(
        0,
        format!(
            "JOINS = ({})  # layers that read their parallel group's input",
            list(joins)
        ),
    );
    c.line(
        0,
        format!(
            "ROUTED = ({})  # layers whose update a router gate scales",
            list(routed)
        ),
    );
    if plan.layers.iter().any(|l| l.program.drop_path > 0.0) {
        let rates: Vec<String> = plan
            .layers
            .iter()
            .map(|l| float(l.program.drop_path))
            .collect();
        c.line(
            0,
            format!(
                "DROP_PATH = [{}]  # each layer's stochastic-depth rate while training",
                rates.join(", ")
            ),
        );
    }
    if let Some(r) = plan.routing {
        c.line(
            0,
            format!(
                "SPARSITY = {}  # weight of the mean gate in the loss",
                float(r.sparsity)
            ),
        );
    }
    let runs: Vec<String> = match &plan.subnets {
        None => vec![format!("(None, 1.0, list(range({})))", plan.layers.len())],
        Some(s) => s
            .depths
            .iter()
            .zip(&s.weights)
            .zip(&s.layers)
            .map(|((d, w), l)| {
                let l: Vec<String> = l.iter().map(|i| i.to_string()).collect();
                format!("(\"subnet.{d}\", {}, [{}])", float(*w), l.join(", "))
            })
            .collect(),
    };
    c.line(
        0,
        "# (part-loss name, loss weight, executed layers) of each run of the layers",
    );
    c.line(0, format!("RUNS = [{}]", runs.join(", ")));
}

/// The gate function, when the model has routers.
pub(crate) fn functions(c: &mut Code, plan: &Plan) {
    if plan.routing.is_none() {
        return;
    }
    let causal = matches!(plan.head, Head::Lm { .. });
    c.blank();
    c.blank();
    c.line(0, "def gate(router, x):");
    c.line(
        1,
        "\"\"\"sigmoid(w . mean(x) + b) per position; mean(w . x + b) = w . mean(x) + b.\"\"\"",
    );
    c.line(1, "s = router(x)");
    c.line(1, "if x.dim() == 3:");
    if causal {
        c.line(
            2,
            "# the running mean over positions 0..t: no gate sees a later token",
        );
        c.line(
            2,
            "count = torch.arange(1, s.shape[1] + 1, dtype=s.dtype, device=s.device)",
        );
        c.line(2, "s = s.cumsum(1) / count.view(1, -1, 1)");
    } else {
        c.line(2, "s = s.mean(1, keepdim=True).expand_as(s)");
    }
    c.line(1, "return torch.sigmoid(s)");
}

/// Routers attached to the routed layers' weight sets (`blocks.<i>.router`).
pub(crate) fn init(c: &mut Code, plan: &Plan) {
    if plan.routing.is_none() {
        return;
    }
    c.line(2, "layers = self.layers()");
    c.line(2, "for i in ROUTED:");
    c.line(3, "if not hasattr(layers[i], \"router\"):");
    c.line(4, "layers[i].router = nn.Linear(D, 1)");
    c.line(
        4,
        "nn.init.constant_(layers[i].router.bias, 3.0)  # starts open: sigmoid(3) = 0.95",
    );
}

/// `forward` and `run` of a model with a depth program (learning is end to end).
pub(crate) fn forward(c: &mut Code, plan: &Plan) {
    let input = super::model::input_name(plan);
    let main = match &plan.subnets {
        None => 0,
        Some(s) => (0..s.layers.len())
            .max_by_key(|&k| (s.layers[k].len(), std::cmp::Reverse(k)))
            .unwrap_or(0),
    };
    c.line(1, format!("def forward(self, {input}, targets):"));
    super::model_class::moe_start(c, plan);
    c.line(2, format!("x = self.embed_input({input})"));
    c.line(2, "self.parts, gates = {}, []");
    c.line(2, "loss = 0.0");
    c.line(2, "for k, (name, weight, which) in enumerate(RUNS):");
    c.line(3, "part, y = self.run(x, which, targets, gates)");
    c.line(
        3,
        "loss = loss + (part if weight == 1.0 else weight * part)",
    );
    c.line(3, "if name is not None:");
    c.line(4, "self.parts[\"loss.\" + name] = part");
    c.line(
        3,
        format!("if k == {main}:  # the deepest run gives the logits"),
    );
    c.line(4, "logits = y");
    if plan.routing.is_some() {
        c.line(2, "if gates:");
        c.line(3, "penalty = SPARSITY * torch.stack(gates).mean()");
        c.line(3, "self.parts[\"loss.router\"] = penalty");
        c.line(3, "loss = loss + penalty");
    }
    super::model_class::balance(c, plan);
    c.line(2, "return loss, logits");
    c.blank();
    c.line(1, "def run(self, x, which, targets, gates):");
    c.line(
        2,
        "\"\"\"The executed layers `which`, then the head: (loss, logits).\"\"\"",
    );
    c.line(2, "layers, group = self.layers(), x");
    c.line(2, "for i in which:");
    c.line(3, "h = group if i in JOINS else x");
    c.line(3, "y = layers[i](h)");
    if plan.routing.is_some() {
        c.line(3, "if i in ROUTED:");
        c.line(4, "g = gate(layers[i].router, h)");
        c.line(4, "gates.append(g.mean())");
        c.line(4, "y = h + g * (y - h)");
    }
    if plan.layers.iter().any(|l| l.program.drop_path > 0.0) {
        c.line(3, "p = DROP_PATH[i]");
        c.line(
            3,
            "if self.training and p > 0:  # drop the update for some samples",
        );
        c.line(
            4,
            "keep = (torch.rand(h.shape[0], device=h.device) > p).to(h.dtype) / (1 - p)",
        );
        c.line(4, "y = h + keep.view(-1, *([1] * (h.dim() - 1))) * (y - h)");
    }
    c.line(3, "if i in JOINS:  # the group's updates add up");
    c.line(4, "x = x + (y - h)");
    c.line(3, "else:");
    c.line(4, "group, x = x, y");
    super::model_class::head_forward(c, plan);
    c.line(2, "return loss_fn(logits, targets), logits");
}
