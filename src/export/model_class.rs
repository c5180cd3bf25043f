//! The `Model` class of model.py: embedding, the executed layers, the learning rule, the
//! final norm, the head and the loss.

use super::model::norm_new;
use super::py::{float, Code};
use crate::elab::learning::Learning;
use crate::elab::resolve::{Head, InputPlan, Plan, Pool, Positions};
use std::collections::BTreeMap;

pub(crate) fn model_class(c: &mut Code, plan: &Plan, names: &BTreeMap<usize, String>) {
    c.blank();
    c.blank();
    c.line(0, "class Model(nn.Module):");
    c.line(1, format!("\"\"\"model {}\"\"\"", plan.name));
    c.blank();
    c.line(1, "def __init__(self):");
    c.line(2, "super().__init__()");
    embed_init(c, plan);
    let identity = blocks_init(c, plan, names);
    if let Some((kind, eps)) = plan.final_norm {
        if !matches!(plan.learning, Learning::ForwardForward { .. }) {
            c.line(2, format!("self.final_norm = {}", norm_new(kind, "D", eps)));
        }
    }
    head_init(c, plan);
    super::depth::init(c, plan);
    c.line(
        2,
        "self.parts = {}  # the learning rule's loss terms of the last forward",
    );
    c.blank();
    c.line(1, "def layers(self):");
    c.line(1, "    \"\"\"The executed layers, in order (ORDER).\"\"\"");
    if identity {
        c.line(2, "return list(self.blocks)");
    } else {
        c.line(2, "return [self.blocks[str(i)] for i in ORDER]");
    }
    c.blank();
    c.line(1, "def embed_input(self, x):");
    embed_forward(c, plan);
    c.blank();
    match plan.learning {
        Learning::ForwardForward { threshold } => forward_forward(c, plan, threshold),
        Learning::Backprop if super::depth::has_program(plan) => super::depth::forward(c, plan),
        Learning::Backprop | Learning::Local { .. } | Learning::TargetProjection { .. } => {
            forward(c, plan)
        }
    }
}

fn embed_init(c: &mut Code, plan: &Plan) {
    match plan.input {
        InputPlan::Tokens { .. } => {
            c.line(2, "self.embed = nn.Embedding(VOCAB, D)");
            c.line(2, "nn.init.normal_(self.embed.weight, std=0.02)");
            match plan.positions {
                Positions::Learned => {
                    c.line(2, "self.pos = nn.Embedding(LENGTH, D)");
                    c.line(2, "nn.init.normal_(self.pos.weight, std=0.02)");
                }
                Positions::Sinusoidal => c.line(
                    2,
                    "self.register_buffer(\"positions\", sinusoidal(LENGTH, D), persistent=False)",
                ),
                Positions::Sinusoidal2d | Positions::Rope { .. } | Positions::None => {}
            }
        }
        InputPlan::Features { .. } => {
            if plan.feature_embed {
                c.line(2, "self.embed = nn.Linear(WIDTH, D)");
            }
        }
        InputPlan::Image { .. } => image_init(c, plan),
    }
}

fn embed_forward(c: &mut Code, plan: &Plan) {
    match plan.input {
        InputPlan::Tokens { .. } => {
            let pos = match plan.positions {
                Positions::Learned => " + self.pos.weight",
                Positions::Sinusoidal => " + self.positions",
                Positions::Sinusoidal2d | Positions::Rope { .. } | Positions::None => "",
            };
            c.line(2, format!("return self.embed(x.long()){pos}"));
        }
        InputPlan::Features { .. } => {
            if plan.feature_embed {
                c.line(2, "return self.embed(x)");
            } else {
                c.line(2, "return x");
            }
        }
        InputPlan::Image { .. } => image_forward(c, plan),
    }
}

fn has_cls(plan: &Plan) -> bool {
    matches!(
        plan.head,
        Head::Classifier {
            pool: Pool::Cls,
            ..
        }
    )
}

/// The patch embedding as a convolution (`embed.weight [D, C, P, P]`), the class token
/// and the positions.
fn image_init(c: &mut Code, plan: &Plan) {
    c.line(
        2,
        "self.embed = nn.Conv2d(CHANNELS, D, PATCH, stride=PATCH)  # one token per patch",
    );
    if has_cls(plan) {
        c.line(
            2,
            "self.cls = nn.ParameterDict({\"weight\": nn.Parameter(torch.empty(1, 1, D))})",
        );
        c.line(2, "nn.init.normal_(self.cls[\"weight\"], std=0.02)");
    }
    match plan.positions {
        Positions::Learned => {
            c.line(2, "self.pos = nn.Embedding(LENGTH, D)");
            c.line(2, "nn.init.normal_(self.pos.weight, std=0.02)");
        }
        Positions::Sinusoidal2d => c.line(
            2,
            "self.register_buffer(\"positions\", sincos_2d(HEIGHT // PATCH, WIDTH // PATCH, D), persistent=False)",
        ),
        Positions::Sinusoidal | Positions::Rope { .. } | Positions::None => {}
    }
}

fn image_forward(c: &mut Code, plan: &Plan) {
    c.line(
        2,
        "x = self.embed(x).flatten(2).transpose(1, 2)  # [B, D, H/P, W/P] -> [B, N, D], row-major",
    );
    if plan.positions == Positions::Sinusoidal2d {
        c.line(2, "x = x + self.positions");
    }
    if has_cls(plan) {
        c.line(
            2,
            "x = torch.cat([self.cls[\"weight\"].expand(x.shape[0], -1, -1), x], 1)",
        );
    }
    match plan.positions {
        Positions::Learned => c.line(2, "return x + self.pos.weight"),
        Positions::Sinusoidal
        | Positions::Sinusoidal2d
        | Positions::Rope { .. }
        | Positions::None => c.line(2, "return x"),
    }
}

/// The weight sets: a ModuleList when the layers run `blocks.0 ..` once each in order,
/// else a ModuleDict keyed by weight index. Returns whether the order is the identity.
fn blocks_init(c: &mut Code, plan: &Plan, names: &BTreeMap<usize, String>) -> bool {
    let mut sets: BTreeMap<usize, usize> = BTreeMap::new();
    for l in &plan.layers {
        sets.insert(l.weights, l.block);
    }
    let identity = plan
        .layers
        .iter()
        .enumerate()
        .all(|(i, l)| l.weights == i && l.run == 0);
    let entries: Vec<(usize, &str)> = sets.iter().map(|(&w, b)| (w, names[b].as_str())).collect();
    let one_kind = entries.windows(2).all(|w| w[0].1 == w[1].1);
    if identity && one_kind {
        c.line(
            2,
            format!(
                "self.blocks = nn.ModuleList([{}() for _ in range({})])",
                entries[0].1,
                entries.len()
            ),
        );
    } else if identity {
        let items: Vec<String> = entries.iter().map(|(_, n)| format!("{n}()")).collect();
        c.line(
            2,
            format!("self.blocks = nn.ModuleList([{}])", items.join(", ")),
        );
    } else {
        c.line(
            2,
            "# weight sets by index; a set that never runs has no parameters",
        );
        let items: Vec<String> = entries
            .iter()
            .map(|(w, n)| format!("\"{w}\": {n}()"))
            .collect();
        c.line(
            2,
            format!("self.blocks = nn.ModuleDict({{{}}})", items.join(", ")),
        );
    }
    identity
}

fn local_parts(plan: &Plan) -> usize {
    let n = plan.layers.len();
    (0..n)
        .filter(|&i| plan.learning.local_loss_after(i, n))
        .count()
}

fn head_init(c: &mut Code, plan: &Plan) {
    match plan.learning {
        Learning::Local { .. } => c.line(
            2,
            format!(
                "self.local = nn.ModuleList([LocalLoss() for _ in range({})])",
                local_parts(plan)
            ),
        ),
        Learning::TargetProjection { .. } => c.line(
            2,
            format!(
                "self.local = nn.ModuleList([TargetProjection() for _ in range({})])",
                local_parts(plan)
            ),
        ),
        Learning::ForwardForward { .. } => {
            c.line(
                2,
                "# the fixed random label table ff.label.weight [classes, d]",
            );
            c.line(
                2,
                "self.ff = nn.ModuleDict({\"label\": frozen(nn.Embedding(OUT, D))})",
            );
            return;
        }
        Learning::Backprop => {}
    }
    match plan.head {
        Head::Lm { tied: true } => {}
        Head::Lm { tied: false } => c.line(2, "self.head = nn.Linear(D, OUT, bias=False)"),
        Head::Classifier { .. } | Head::Linear { .. } => c.line(2, "self.head = nn.Linear(D, OUT)"),
    }
}

/// The final norm and the head on `x`, giving `logits`.
pub(crate) fn head_forward(c: &mut Code, plan: &Plan) {
    if plan.final_norm.is_some() {
        c.line(2, "x = self.final_norm(x)");
    }
    match plan.head {
        Head::Lm { tied: true } => c.line(2, "logits = x @ self.embed.weight.t()"),
        Head::Lm { tied: false } | Head::Classifier { .. } | Head::Linear { .. } => {
            c.line(2, "logits = self.head(pool(x))")
        }
    }
}

/// The balance losses of the expert layers, added to the loss (`moe_start` opens
/// `forward`).
pub(crate) fn balance(c: &mut Code, plan: &Plan) {
    if !super::model::has_moe(plan) {
        return;
    }
    c.line(2, "balance = moe_balance(self)");
    c.line(2, "if balance is not None:");
    c.line(3, "self.parts[\"loss.balance\"] = balance");
    c.line(3, "loss = loss + balance");
}

pub(crate) fn moe_start(c: &mut Code, plan: &Plan) {
    if super::model::has_moe(plan) {
        c.line(2, "moe_start(self)");
    }
}

fn forward(c: &mut Code, plan: &Plan) {
    let input = super::model::input_name(plan);
    let n = plan.layers.len();
    c.line(1, format!("def forward(self, {input}, targets):"));
    moe_start(c, plan);
    c.line(2, format!("x = self.embed_input({input})"));
    let rule = !matches!(plan.learning, Learning::Backprop);
    if rule {
        let detach: Vec<String> = (0..n)
            .filter(|&i| plan.learning.detaches_before(i))
            .map(|i| i.to_string())
            .collect();
        let after: Vec<String> = (0..n)
            .filter(|&i| plan.learning.local_loss_after(i, n))
            .map(|i| i.to_string())
            .collect();
        c.line(2, "parts = []");
        c.line(2, "for i, block in enumerate(self.layers()):");
        if !detach.is_empty() {
            c.line(
                3,
                format!(
                    "if i in ({},):  # a group starts: no gradient into the previous one",
                    detach.join(", ")
                ),
            );
            c.line(4, "x = x.detach()");
        }
        c.line(3, "x = block(x)");
        c.line(
            3,
            format!(
                "if i in ({},):  # a group ends in its local loss",
                after.join(", ")
            ),
        );
        c.line(4, "parts.append(self.local[len(parts)](x, targets))");
    } else {
        c.line(2, "for block in self.layers():");
        c.line(3, "x = block(x)");
    }
    if plan.learning.detaches_head() {
        c.line(2, "x = x.detach()  # the head learns on its own");
    }
    head_forward(c, plan);
    c.line(2, "loss = loss_fn(logits, targets)");
    balance(c, plan);
    if rule {
        c.line(
            2,
            "self.parts = {f\"loss.local.{k}\": p for k, p in enumerate(parts)}",
        );
        c.line(2, "self.parts[\"loss.head\"] = loss");
        c.line(2, "for p in parts:");
        c.line(3, "loss = loss + p");
    }
    c.line(2, "return loss, logits");
}

/// Forward-Forward: every class written into the input, the goodness of each layer, the
/// expected loss over the wrong labels (docs/language.md).
fn forward_forward(c: &mut Code, plan: &Plan, threshold: f64) {
    let input = super::model::input_name(plan);
    c.line(1, format!("def forward(self, {input}, targets):"));
    c.line(2, format!("x = self.embed_input({input})"));
    c.line(2, "b = x.shape[0]");
    c.line(
        2,
        "# x_c = x + E[c] for every class c, as [classes * batch, ...] rows",
    );
    c.line(
        2,
        "table = self.ff[\"label\"].weight.view(OUT, *([1] * (x.dim() - 1)), D)",
    );
    c.line(
        2,
        "z = (x.unsqueeze(0) + table).reshape(OUT * b, *x.shape[1:])",
    );
    c.line(2, "y = F.one_hot(targets.long(), OUT).to(x.dtype)");
    c.line(
        2,
        "sign = 1.0 - 2.0 * y  # softplus(theta - g) for the true label, softplus(g - theta) else",
    );
    c.line(2, "weight = y * (1.0 - 1.0 / (OUT - 1)) + 1.0 / (OUT - 1)");
    c.line(2, "loss, logits, parts = 0.0, 0.0, []");
    c.line(2, "for i, block in enumerate(self.layers()):");
    c.line(
        3,
        "if i > 0:  # the previous output, stopped and at unit RMS",
    );
    c.line(4, "z = z.detach()");
    c.line(4, "ms = z.pow(2).flatten(1).mean(1)");
    c.line(
        4,
        "z = z * torch.rsqrt(ms + 1e-6).view(-1, *([1] * (z.dim() - 1)))",
    );
    c.line(3, "z = block(z)");
    c.line(
        3,
        "g = z.pow(2).flatten(1).mean(1).view(OUT, b).t()  # goodness [batch, classes]",
    );
    c.line(
        3,
        format!(
            "part = (F.softplus(sign * (g - {})) * weight).sum() / b",
            float(threshold)
        ),
    );
    c.line(3, "parts.append(part)");
    c.line(3, "loss = loss + part");
    c.line(3, "logits = logits + g");
    c.line(
        2,
        "self.parts = {f\"loss.local.{k}\": p for k, p in enumerate(parts)}",
    );
    c.line(2, "return loss, logits");
}
