//! `Plan` -> tensor IR. Every user error was reported by `resolve`; a builder error here
//! is a compiler bug and becomes an internal-error diagnostic.
//!
//! Norms are built from primitives (reductions and elementwise ops) so the passes can fuse
//! them; sharing is expressed by asking the builder for the same parameter name again.

use super::learning::{AuxHead, Learning};
use super::resolve::{
    BlockPlan, Head, InputPlan, LayerRun, Loss, Norm, NormKind, Placement, Plan, Pool, Positions,
    RopePairs, Skip, Sub, Unit,
};
use crate::diag::Diagnostics;
use crate::ir::ops::MaskFill;
use crate::ir::{
    Graph, GraphBuilder, Init, IrError, Op, OutputRole, ParamRole, Type, UnaryOp, ValueId, ViewOp,
    F64, SINUSOIDAL_BASE,
};

mod depth;
mod width;

type R<T> = Result<T, IrError>;

/// One run of the layers and the head: the loss, the logits, and the named local losses.
type RunOutputs = (ValueId, ValueId, Vec<(String, ValueId)>);

/// An attention sublayer's settings; `qk_norm` holds the eps of its QK-norm.
struct Attention {
    /// Dropout on the probabilities while training.
    dropout: f64,
    heads: usize,
    kv_heads: usize,
    causal: bool,
    bias: bool,
    qk_norm: Option<f64>,
}

/// Lowers the plan; with `training`, dropout and stochastic depth read their masks from
/// uniform inputs `dropout.<k>` (after the batch's inputs), else they are left out.
pub(crate) fn lower(p: &Plan, probes: bool, training: bool) -> Result<Graph, Diagnostics> {
    let mut l = Lower {
        g: GraphBuilder::new(p.name.clone()),
        d: p.d,
        probes,
        training,
        noise: 0,
        probed: Vec::new(),
        rope: match p.positions {
            Positions::Rope { base, pairs } => Some((base, pairs)),
            Positions::Learned
            | Positions::Sinusoidal
            | Positions::Sinusoidal2d
            | Positions::None => None,
        },
        expand: None,
        gates: Vec::new(),
        routes: Vec::new(),
        balance: Vec::new(),
        granularity: None,
    };
    match l.model(p) {
        Ok(()) => Ok(l.g.finish()),
        Err(e) => Err(vec![super::internal(e, p.stack_span)]),
    }
}

struct Lower {
    g: GraphBuilder,
    d: usize,
    /// Elaborating the training graph: dropout and stochastic depth are on.
    training: bool,
    /// `dropout.<k>` inputs made so far.
    noise: usize,
    /// Whether to expose the residual stream (`elab::Probing::states`).
    probes: bool,
    /// `(output name, value)` of the residual stream after each step, when probing.
    probed: Vec<(String, ValueId)>,
    /// Rotary positions (base, pairing) that every attention applies to its queries and keys.
    rope: Option<(f64, RopePairs)>,
    /// Inside a linearly expanded layer: its parameter prefix (`blocks.0.`) and its
    /// coefficient `c`; its parameters are `theta_A + c * theta_B`.
    expand: Option<(String, f64)>,
    /// Each routed layer's mean gate, for the sparsity penalty.
    gates: Vec<ValueId>,
    /// `route.<k>` outputs: 1 where routed layer k ran for a sequence, 0 where it was
    /// skipped (with `Routing::skip_below`).
    routes: Vec<(String, ValueId)>,
    /// The load-balancing loss of each expert layer run.
    balance: Vec<ValueId>,
    /// The granularity nested FFNs run at (MatFormer), in the current run of the layers.
    granularity: Option<usize>,
}

/// An executed layer's block, its weights' prefix (`blocks.<w>`) and its run suffix
/// (`.run<k>` for the k-th re-execution of the same weights, empty for the first).
fn layer_parts<'p>(p: &'p Plan, layer: &LayerRun) -> R<(&'p BlockPlan, String, String)> {
    let block = p
        .blocks
        .get(layer.block)
        .ok_or_else(|| IrError::Graph("layer refers to a missing block".into()))?;
    let run = match layer.run {
        0 => String::new(),
        k => format!(".run{k}"),
    };
    Ok((block, format!("blocks.{}", layer.weights), run))
}

/// The head's output width: the vocabulary, the classes or `out`.
fn head_width(p: &Plan) -> R<usize> {
    match (p.head, p.input) {
        (Head::Lm { .. }, InputPlan::Tokens { vocab, .. }) => Ok(vocab),
        (Head::Lm { .. }, InputPlan::Features { .. } | InputPlan::Image { .. }) => Err(
            IrError::Graph("lm head on a features or image input".into()),
        ),
        (Head::Classifier { classes, .. }, _) => Ok(classes),
        (Head::Linear { out }, _) => Ok(out),
    }
}

/// GPT-style token and position embeddings start at N(0, 0.02) rather than PyTorch's
/// `nn.Embedding` default N(0, 1): with N(0, 1) the embedding dwarfs the residual updates.
const EMBED_STD: f64 = 0.02;

impl Lower {
    fn model(&mut self, p: &Plan) -> R<()> {
        let (x0, targets) = self.inputs(p);
        self.g.set_scope("embed");
        let (x, embed_table) = self.embedding(p, x0)?;

        if let Learning::ForwardForward { threshold } = p.learning {
            return self.forward_forward(p, x, targets, threshold);
        }
        if self.probes {
            self.probed.push(("probe.0.embed".into(), x));
        }
        let all: Vec<usize> = (0..p.layers.len()).collect();
        // Each run of the layers: (name of its part loss, loss weight, layers).
        let runs: Vec<(Option<String>, f64, &[usize])> = match &p.subnets {
            None if p.widths > 0 => (0..p.widths)
                .map(|k| (Some(format!("width.{k}")), 1.0 / p.widths as f64, &all[..]))
                .collect(),
            None => vec![(None, 1.0, &all[..])],
            Some(s) => (s.depths.iter().zip(&s.weights).zip(&s.layers))
                .map(|((d, &w), l)| (Some(format!("subnet.{d}")), w, &l[..]))
                .collect(),
        };
        // The deepest run (or the widest, the first) gives the logits and the probes.
        let main = (0..runs.len())
            .max_by_key(|&k| (runs[k].2.len(), std::cmp::Reverse(k)))
            .unwrap_or(0);
        let probes = self.probes;
        let (mut loss, mut logits) = (None, None);
        let mut parts: Vec<(String, ValueId)> = Vec::new();
        for (k, (name, weight, layers)) in runs.iter().enumerate() {
            self.probes = probes && k == main;
            self.granularity = (p.widths > 0).then_some(k);
            let (l, y, local) = self.run(p, x, layers, targets, embed_table)?;
            if k == main {
                logits = Some(y);
            }
            let term = if *weight == 1.0 {
                l
            } else {
                self.g.scale(l, *weight)?
            };
            loss = Some(match loss {
                None => term,
                Some(s) => self.g.add(s, term)?,
            });
            parts.extend(local);
            if let Some(name) = name {
                parts.push((name.clone(), l));
            }
        }
        let (mut loss, logits) = loss
            .zip(logits)
            .ok_or_else(|| IrError::Graph("a model without a run of its layers".into()))?;
        if let Some(penalty) = self.gate_penalty(p)? {
            self.g.set_scope("loss");
            loss = self.g.add(loss, penalty)?;
            parts.push(("router".into(), penalty));
        }
        if let Some(balance) = self.balance_loss()? {
            self.g.set_scope("loss");
            loss = self.g.add(loss, balance)?;
            parts.push(("balance".into(), balance));
        }
        self.g.set_scope("");
        self.g.output("loss", loss);
        self.g.output("logits", logits);
        for (name, v) in std::mem::take(&mut self.probed) {
            self.g.output(name, v);
        }
        for (name, v) in std::mem::take(&mut self.routes) {
            self.g.output(name, v);
        }
        for (name, v) in parts {
            self.g.output(OutputRole::PartLoss(&name).name(), v);
        }
        Ok(())
    }

    /// The executed layers `which` from the embedding's output `x`, then the head: the
    /// loss (head and local losses summed), the logits, and the named local losses with
    /// the head's (when a learning rule has local losses).
    fn run(
        &mut self,
        p: &Plan,
        mut x: ValueId,
        which: &[usize],
        targets: ValueId,
        embed_table: Option<ValueId>,
    ) -> R<RunOutputs> {
        let mut parts: Vec<ValueId> = Vec::new();
        let n = p.layers.len();
        // The input of the current parallel group.
        let mut group_in = x;
        for &i in which {
            let layer = &p.layers[i];
            let (_, prefix, run) = layer_parts(p, layer)?;
            if p.learning.detaches_before(i) {
                self.g.set_scope(format!("{prefix}{run}"));
                x = self.g.unary(Op::Unary(UnaryOp::StopGradient), x)?;
            }
            if layer.program.joins {
                let y = self.layer(p, group_in, layer)?;
                let update = self.g.sub(y, group_in)?;
                x = self.g.add(x, update)?;
            } else {
                group_in = x;
                x = self.layer(p, x, layer)?;
            }
            if p.learning.local_loss_after(i, n) {
                let k = parts.len();
                self.g.set_scope(format!("local.{k}"));
                parts.push(self.local_loss(p, x, targets, k)?);
            }
        }
        if p.learning.detaches_head() {
            x = self.g.unary(Op::Unary(UnaryOp::StopGradient), x)?;
        }
        if let Some((kind, eps)) = p.final_norm {
            self.g.set_scope("final_norm");
            x = self.norm(x, "final_norm", kind, eps)?;
        }
        self.g.set_scope("head");
        let logits = self.head(p, x, embed_table)?;
        self.g.set_scope("loss");
        let head_loss = self.loss(p.loss, logits, targets)?;
        let mut loss = head_loss;
        for &part in &parts {
            loss = self.g.add(loss, part)?;
        }
        let mut named: Vec<(String, ValueId)> = Vec::new();
        if !parts.is_empty() {
            named = parts
                .iter()
                .enumerate()
                .map(|(k, &v)| (format!("local.{k}"), v))
                .collect();
            named.push(("head".into(), head_loss));
        }
        Ok((loss, logits, named))
    }

    /// One executed layer: its block's steps, under its depth program.
    fn layer(&mut self, p: &Plan, x: ValueId, layer: &LayerRun) -> R<ValueId> {
        let (block, prefix, run) = layer_parts(p, layer)?;
        self.expand = layer.program.expand.map(|c| (format!("{prefix}."), c));
        let gate = match (layer.program.routed, p.routing) {
            (true, Some(r)) => Some(self.router(p, x, &prefix, &run, r)?),
            _ => None,
        };
        let mut y = x;
        for u in &block.units {
            y = self.unit(y, u, &prefix, &run)?;
            if self.probes {
                let scope = self.g.scope().to_string();
                let k = self.probed.len();
                self.probed.push((format!("probe.{k}.{scope}"), y));
            }
        }
        self.expand = None;
        let y = match gate {
            Some(g) => self.gated(x, y, g)?,
            None => y,
        };
        self.drop_path(x, y, layer.program.drop_path)
    }

    /// Forward-Forward, supervised (Hinton 2022, with the label written into the input):
    /// `x_c = x + E[c]` with `E` a fixed random label table; layer `l` reads the previous
    /// layer's output, stopped and scaled to unit RMS, and its goodness is
    /// `g_l = mean(h_l^2)`. Every class is run (`[classes * batch]` rows): its loss is
    /// `softplus(theta - g_l(x_y))` plus the mean over the wrong labels `c` of
    /// `softplus(g_l(x_c) - theta)`, the expectation of the paper's loss with a uniformly
    /// random wrong label, over the batch; the logits of class `c` are `sum_l g_l(x_c)`.
    fn forward_forward(&mut self, p: &Plan, x: ValueId, y: ValueId, theta: f64) -> R<()> {
        let (d, classes) = (self.d, head_width(p)?);
        let shape = self.g.shape(x);
        let batch = shape[0];
        self.g.set_scope("ff.label");
        let table = self.g.role_param(
            "ff.label.weight",
            vec![classes, d],
            Init::Normal { std: 1.0 },
            false,
            ParamRole::Embedding,
        )?;
        // x_c for every class c: [classes, batch, ...] flattened to [classes * batch, ...].
        let mut all_shape = vec![classes];
        all_shape.extend(&shape);
        let mut tshape = vec![classes];
        tshape.extend(std::iter::repeat_n(1, shape.len() - 1));
        tshape.push(d);
        let t = self.g.reshape(table, tshape)?;
        let t = self.g.broadcast(t, all_shape.clone())?;
        let xb = self.g.broadcast(x, all_shape)?;
        let every = self.g.add(xb, t)?;
        let mut flat = vec![classes * batch];
        flat.extend(&shape[1..]);
        let every = self.g.reshape(every, flat)?;
        let one_hot = self.g.push(Op::OneHot { classes }, &[y])?;
        // sign = -1 for the true label (softplus(theta - g)), +1 for the others
        // (softplus(g - theta)); weight 1 and 1 / (classes - 1).
        let sign = self.g.scale(one_hot, -2.0)?;
        let sign = self.g.add_scalar(sign, 1.0)?;
        let weight = self.g.scale(one_hot, 1.0 - 1.0 / (classes - 1) as f64)?;
        let weight = self.g.add_scalar(weight, 1.0 / (classes - 1) as f64)?;

        let goodness = self.ff_goodness(p, every)?;
        let mut parts: Vec<ValueId> = Vec::new();
        let mut total: Option<ValueId> = None;
        let mut score: Option<ValueId> = None;
        for (l, &g) in goodness.iter().enumerate() {
            self.g.set_scope(format!("local.{l}"));
            let g = self.g.reshape(g, vec![classes, batch])?;
            let g = self.g.transpose(g, vec![1, 0])?;
            let off = self.g.add_scalar(g, -theta)?;
            let z = self.g.mul(sign, off)?;
            let z = self.g.reshape(z, vec![batch * classes])?;
            let sp = self.softplus(z)?;
            let sp = self.g.reshape(sp, vec![batch, classes])?;
            let w = self.g.mul(sp, weight)?;
            let s = self.g.reduce_sum(w, vec![0, 1], false)?;
            let loss = self.g.scale(s, 1.0 / batch as f64)?;
            parts.push(loss);
            total = Some(match total {
                None => loss,
                Some(t) => self.g.add(t, loss)?,
            });
            score = Some(match score {
                None => g,
                Some(s) => self.g.add(s, g)?,
            });
        }
        let (Some(total), Some(logits)) = (total, score) else {
            return Err(IrError::Graph("forward-forward without layers".into()));
        };
        self.g.set_scope("");
        self.g.output("loss", total);
        self.g.output("logits", logits);
        for (l, &part) in parts.iter().enumerate() {
            self.g
                .output(OutputRole::PartLoss(&format!("local.{l}")).name(), part);
        }
        Ok(())
    }

    /// Each layer's goodness (mean square of its output over all but the batch axis) on
    /// `x`; a layer after the first reads its predecessor stopped and at unit RMS.
    fn ff_goodness(&mut self, p: &Plan, mut x: ValueId) -> R<Vec<ValueId>> {
        let mut out = Vec::new();
        for (i, layer) in p.layers.iter().enumerate() {
            let (block, prefix, run) = layer_parts(p, layer)?;
            if i > 0 {
                self.g.set_scope(format!("{prefix}{run}"));
                x = self.g.unary(Op::Unary(UnaryOp::StopGradient), x)?;
                let ms = self.mean_square(x, 1)?;
                let r = self.g.add_scalar(ms, 1e-6)?;
                let r = self.g.unary(Op::Unary(UnaryOp::Rsqrt), r)?;
                let r = self.g.reshape(r, {
                    let mut s = vec![self.g.shape(x)[0]];
                    s.extend(std::iter::repeat_n(1, self.g.ty(x).rank() - 1));
                    s
                })?;
                let r = self.g.broadcast(r, self.g.shape(x))?;
                x = self.g.mul(x, r)?;
            }
            for u in &block.units {
                x = self.unit(x, u, &prefix, &run)?;
            }
            out.push(self.mean_square(x, 1)?);
        }
        Ok(out)
    }

    /// The mean of `x^2` over the axes from `from` on: one value per leading index.
    fn mean_square(&mut self, x: ValueId, from: usize) -> R<ValueId> {
        let shape = self.g.shape(x);
        let n: usize = shape[from..].iter().product();
        let sq = self.g.mul(x, x)?;
        let s = self
            .g
            .reduce_sum(sq, (from..shape.len()).collect(), false)?;
        self.g.scale(s, 1.0 / n as f64)
    }

    /// `log(1 + exp(z))` of a vector, stably: `-log_softmax([0, z])[0]`.
    fn softplus(&mut self, z: ValueId) -> R<ValueId> {
        let n = self.g.shape(z)[0];
        let z = self.g.reshape(z, vec![n, 1])?;
        let zero = self.g.full(0.0, vec![n, 1])?;
        let pair = self.g.push(Op::Concat { axis: 1 }, &[zero, z])?;
        let ls = self.g.push(Op::LogSoftmax, &[pair])?;
        let first = self.g.push(
            Op::View(ViewOp::Slice {
                axis: 1,
                start: 0,
                end: 1,
            }),
            &[ls],
        )?;
        let first = self.g.reshape(first, vec![n])?;
        self.g.scale(first, -1.0)
    }

    /// The loss of group `k` of a local learning rule on its output `x`: an auxiliary
    /// head's loss, or the distance to a fixed random projection of the targets.
    fn local_loss(&mut self, p: &Plan, x: ValueId, targets: ValueId, k: usize) -> R<ValueId> {
        let name = format!("local.{k}");
        let x = match p.final_norm {
            Some((kind, eps)) => self.norm(x, &format!("{name}.norm"), kind, eps)?,
            None => x,
        };
        let h = self.pool(p, x)?;
        match p.learning {
            Learning::Local { head, .. } => {
                let out = head_width(p)?;
                let bias = !matches!(p.head, Head::Lm { .. });
                let logits = match head {
                    AuxHead::Linear => self.linear(
                        h,
                        &format!("{name}.head"),
                        (self.d, out),
                        (bias, true),
                        ParamRole::Head,
                    )?,
                    AuxHead::Ffn { hidden } => {
                        let a = self.linear(
                            h,
                            &format!("{name}.head.up"),
                            (self.d, hidden),
                            (true, true),
                            ParamRole::Head,
                        )?;
                        let a = self.g.unary(Op::Unary(UnaryOp::Gelu), a)?;
                        self.linear(
                            a,
                            &format!("{name}.head.down"),
                            (hidden, out),
                            (bias, true),
                            ParamRole::Head,
                        )?
                    }
                };
                self.loss(p.loss, logits, targets)
            }
            Learning::TargetProjection { .. } => {
                let classes = head_width(p)?;
                let shape = self.g.shape(h);
                let n = shape.iter().rev().skip(1).product::<usize>();
                let y = match p.head {
                    Head::Lm { .. } | Head::Classifier { .. } => {
                        let t = self.g.reshape(targets, vec![n])?;
                        self.g.push(Op::OneHot { classes }, &[t])?
                    }
                    Head::Linear { .. } => self.g.reshape(targets, vec![n, classes])?,
                };
                // Fixed and random: seeded with the other parameters, never trained.
                let proj = self.g.role_param(
                    format!("{name}.projection"),
                    vec![self.d, classes],
                    Init::Normal { std: 1.0 },
                    false,
                    ParamRole::Head,
                )?;
                let t = self.g.matmul(y, proj, false, true)?;
                let t = self.g.reshape(t, shape)?;
                self.loss(Loss::Mse, h, t)
            }
            Learning::Backprop | Learning::ForwardForward { .. } => Err(IrError::Graph(
                "a group loss outside local learning and target projection".into(),
            )),
        }
    }

    /// The head's input: per position for an lm head, the mean over the sequence (or the
    /// class token at position 0) for a pooled head of a token or image model.
    fn pool(&mut self, p: &Plan, x: ValueId) -> R<ValueId> {
        let pool = match p.head {
            Head::Lm { .. } => return Ok(x),
            Head::Classifier { pool, .. } => pool,
            Head::Linear { .. } => Pool::Mean,
        };
        let Some(length) = p.seq_len() else {
            return Ok(x);
        };
        match pool {
            // Mean over the sequence: [B, T, d] -> [B, d].
            Pool::Mean => {
                let s = self.g.reduce_sum(x, vec![1], false)?;
                self.g.scale(s, 1.0 / length as f64)
            }
            // The class token: [B, T, d] -> [B, 1, d] -> [B, d].
            Pool::Cls => {
                let mut shape = self.g.shape(x);
                let t = self.g.slice(x, 1, 0, 1)?;
                shape.remove(1);
                self.g.reshape(t, shape)
            }
        }
    }

    /// The model's inputs and its targets, in a stable order: tokens, inputs or images,
    /// then targets.
    fn inputs(&mut self, p: &Plan) -> (ValueId, ValueId) {
        let (x, batch) = match p.input {
            InputPlan::Tokens { batch, length, .. } => (
                self.g.input("tokens", Type::i32(vec![batch, length])),
                batch,
            ),
            InputPlan::Features { batch, width } => {
                (self.g.input("inputs", Type::f32(vec![batch, width])), batch)
            }
            InputPlan::Image {
                batch,
                channels,
                height,
                width,
                ..
            } => (
                self.g
                    .input("images", Type::f32(vec![batch, channels, height, width])),
                batch,
            ),
        };
        let tty = match (p.head, p.input) {
            (Head::Lm { .. }, InputPlan::Tokens { length, .. }) => Type::i32(vec![batch, length]),
            (Head::Lm { .. }, InputPlan::Features { .. } | InputPlan::Image { .. })
            | (Head::Classifier { .. }, _) => Type::i32(vec![batch]),
            (Head::Linear { out }, _) => Type::f32(vec![batch, out]),
        };
        let targets = self.g.input("targets", tty);
        (x, targets)
    }

    /// The residual stream at the first layer, and the token table (for a tied head).
    fn embedding(&mut self, p: &Plan, x0: ValueId) -> R<(ValueId, Option<ValueId>)> {
        let d = self.d;
        match p.input {
            InputPlan::Tokens {
                batch,
                length,
                vocab,
            } => {
                let table = self.g.role_param(
                    "embed.weight",
                    vec![vocab, d],
                    Init::Normal { std: EMBED_STD },
                    true,
                    ParamRole::Embedding,
                )?;
                let x = self.g.push(Op::Gather, &[table, x0])?;
                let x = match p.positions {
                    Positions::Learned => self.learned_positions(x, batch, length)?,
                    Positions::Sinusoidal => {
                        let pos = self.g.push(
                            Op::Sinusoidal {
                                len: length,
                                dim: d,
                                base: F64(SINUSOIDAL_BASE),
                            },
                            &[],
                        )?;
                        let pb = self.g.broadcast(pos, vec![batch, length, d])?;
                        self.g.add(x, pb)?
                    }
                    Positions::Sinusoidal2d | Positions::Rope { .. } | Positions::None => x,
                };
                Ok((x, Some(table)))
            }
            InputPlan::Image { .. } => Ok((self.image_embedding(p, x0)?, None)),
            InputPlan::Features { width, .. } => {
                let x = if p.feature_embed {
                    self.linear(x0, "embed", (width, d), (true, true), ParamRole::Input)?
                } else {
                    x0
                };
                Ok((x, None))
            }
        }
    }

    /// `x + pos.weight` (broadcast over the batch), `x: [batch, length, d]`.
    fn learned_positions(&mut self, x: ValueId, batch: usize, length: usize) -> R<ValueId> {
        let d = self.d;
        let pos = self.g.role_param(
            "pos.weight",
            vec![length, d],
            Init::Normal { std: EMBED_STD },
            true,
            ParamRole::Embedding,
        )?;
        let pb = self.g.broadcast(pos, vec![batch, length, d])?;
        self.g.add(x, pb)
    }

    /// The patch embedding (a convolution with kernel and stride `P`, written as a matmul
    /// over the patches), the 2-D sinusoidal table, the class token and learned positions.
    fn image_embedding(&mut self, p: &Plan, x0: ValueId) -> R<ValueId> {
        let InputPlan::Image {
            batch: b,
            channels: c,
            height: h,
            width: w,
            patch: ps,
        } = p.input
        else {
            return Err(IrError::Graph("image embedding of another input".into()));
        };
        let d = self.d;
        let (gh, gw) = (h / ps, w / ps);
        let n = gh * gw;
        // [B, C, H, W] -> [B, C, H/P, P, W/P, P] -> [B, H/P, W/P, C, P, P] -> [B, N, C*P*P]
        let x = self.g.reshape(x0, vec![b, c, gh, ps, gw, ps])?;
        let x = self.g.transpose(x, vec![0, 2, 4, 1, 3, 5])?;
        let x = self.g.reshape(x, vec![b, n, c * ps * ps])?;
        // Conv2d's layout and default init: weight [d, C, P, P], bias [d], both uniform
        // in +-1/sqrt(C*P*P).
        let fan_in = c * ps * ps;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight = self.g.role_param(
            "embed.weight",
            vec![d, c, ps, ps],
            Init::Uniform { bound },
            true,
            ParamRole::Input,
        )?;
        let bias = self.g.role_param(
            "embed.bias",
            vec![d],
            Init::Uniform { bound },
            true,
            ParamRole::Bias,
        )?;
        let w2 = self.g.reshape(weight, vec![d, fan_in])?;
        let mut x = self.g.linear(x, w2, Some(bias))?;
        if p.positions == Positions::Sinusoidal2d {
            let table = self.sincos_2d(gh, gw)?;
            let tb = self.g.broadcast(table, vec![b, n, d])?;
            x = self.g.add(x, tb)?;
        }
        let mut length = n;
        if let Head::Classifier {
            pool: Pool::Cls, ..
        } = p.head
        {
            let cls = self.g.role_param(
                "cls.weight",
                vec![1, 1, d],
                Init::Normal { std: EMBED_STD },
                true,
                ParamRole::Embedding,
            )?;
            let cb = self.g.broadcast(cls, vec![b, 1, d])?;
            x = self.g.push(Op::Concat { axis: 1 }, &[cb, x])?;
            length += 1;
        }
        match p.positions {
            Positions::Learned => self.learned_positions(x, b, length),
            Positions::Sinusoidal
            | Positions::Sinusoidal2d
            | Positions::Rope { .. }
            | Positions::None => Ok(x),
        }
    }

    /// The fixed 2-D table `[gh * gw, d]`: the patch at row `r`, column `c` gets
    /// `[PE(r), PE(c)]`, with `PE` the 1-D sinusoidal table of width `d / 2`.
    fn sincos_2d(&mut self, gh: usize, gw: usize) -> R<ValueId> {
        let half = self.d / 2;
        let len = gh.max(gw);
        let pe = self.g.push(
            Op::Sinusoidal {
                len,
                dim: half,
                base: F64(SINUSOIDAL_BASE),
            },
            &[],
        )?;
        let rows = if gh < len {
            self.g.slice(pe, 0, 0, gh)?
        } else {
            pe
        };
        let cols = if gw < len {
            self.g.slice(pe, 0, 0, gw)?
        } else {
            pe
        };
        let rows = self.g.reshape(rows, vec![gh, 1, half])?;
        let rows = self.g.broadcast(rows, vec![gh, gw, half])?;
        let cols = self.g.reshape(cols, vec![1, gw, half])?;
        let cols = self.g.broadcast(cols, vec![gh, gw, half])?;
        let t = self.g.push(Op::Concat { axis: 2 }, &[rows, cols])?;
        self.g.reshape(t, vec![gh * gw, self.d])
    }

    /// The logits: per position for an lm head, pooled over the sequence otherwise.
    fn head(&mut self, p: &Plan, x: ValueId, embed_table: Option<ValueId>) -> R<ValueId> {
        let d = self.d;
        let out = head_width(p)?;
        match p.head {
            Head::Lm { tied: true } => {
                let table = embed_table
                    .ok_or_else(|| IrError::Graph("tied head without a token embedding".into()))?;
                self.g.matmul(x, table, false, true)
            }
            Head::Lm { tied: false } => {
                self.linear(x, "head", (d, out), (false, true), ParamRole::Head)
            }
            Head::Classifier { .. } | Head::Linear { .. } => {
                let xp = self.pool(p, x)?;
                self.linear(xp, "head", (d, out), (true, true), ParamRole::Head)
            }
        }
    }

    /// The scalar loss, a mean over the batch (and positions).
    fn loss(&mut self, loss: Loss, logits: ValueId, targets: ValueId) -> R<ValueId> {
        match loss {
            Loss::CrossEntropy => {
                let shape = self.g.shape(logits);
                let (classes, lead) = shape
                    .split_last()
                    .ok_or_else(|| IrError::Graph("scalar logits".into()))?;
                let n: usize = lead.iter().product();
                let l2 = self.g.reshape(logits, vec![n, *classes])?;
                let ls = self.g.push(Op::LogSoftmax, &[l2])?;
                let t = self.g.reshape(targets, vec![n])?;
                let oh = self.g.push(Op::OneHot { classes: *classes }, &[t])?;
                let m = self.g.mul(ls, oh)?;
                let s = self.g.reduce_sum(m, vec![0, 1], false)?;
                self.g.scale(s, -1.0 / n as f64)
            }
            Loss::Mse => {
                let diff = self.g.sub(logits, targets)?;
                let sq = self.g.mul(diff, diff)?;
                let rank = self.g.ty(sq).rank();
                let n = self.g.ty(sq).numel();
                let s = self.g.reduce_sum(sq, (0..rank).collect(), false)?;
                self.g.scale(s, 1.0 / n as f64)
            }
        }
    }

    /// One residual step (or a parallel group) of a layer.
    fn unit(&mut self, x: ValueId, u: &Unit, layer: &str, run: &str) -> R<ValueId> {
        let name = match &u.name {
            Some(n) => format!("{layer}.{n}"),
            None => layer.to_string(),
        };
        self.g.set_scope(format!("{name}{run}"));
        let d = self.d;
        let (xin, width) = match u.skip {
            Skip::Hourglass {
                width, trainable, ..
            } => (
                self.hidden(x, &format!("{name}.lift"), (d, width), false, trainable)?,
                width,
            ),
            _ => (x, d),
        };
        let Norm {
            placement,
            kind,
            eps,
        } = u.norm;
        let normed = match placement {
            Placement::Pre => self.norm(xin, &format!("{name}.norm"), kind, eps)?,
            Placement::Peri => self.norm(xin, &format!("{name}.norm_in"), kind, eps)?,
            Placement::Post | Placement::None => xin,
        };
        let mut sum: Option<ValueId> = None;
        for br in &u.branches {
            let bname = format!("{layer}.{}", br.name);
            self.g.set_scope(format!("{bname}{run}"));
            let mut f = self.sublayer(normed, &br.sub, &bname, (width, br.norm.eps))?;
            if placement == Placement::Peri {
                f = self.norm(f, &format!("{bname}.norm_out"), br.norm.kind, br.norm.eps)?;
            }
            f = self.dropout(f, br.dropout, None)?;
            sum = Some(match sum {
                None => f,
                Some(s) => self.g.add(s, f)?,
            });
        }
        self.g.set_scope(format!("{name}{run}"));
        let mut f = sum.ok_or_else(|| IrError::Graph("a unit without branches".into()))?;
        if u.coef != 1.0 {
            f = self.g.scale(f, u.coef)?;
        }
        let mut y = match u.skip {
            Skip::Residual | Skip::Hourglass { .. } => self.g.add(xin, f)?,
            Skip::None => f,
            Skip::Scaled(1.0) => self.g.add(xin, f)?,
            Skip::Scaled(a) => {
                let xs = self.g.scale(xin, a)?;
                self.g.add(xs, f)?
            }
            Skip::Learned(init) => {
                let s = self.param(
                    format!("{name}.skip_scale"),
                    vec![],
                    Init::Const(init),
                    true,
                    ParamRole::Scalar,
                )?;
                let shape = self.g.shape(xin);
                let sb = self.g.broadcast(s, shape)?;
                let xs = self.g.mul(sb, xin)?;
                self.g.add(xs, f)?
            }
        };
        if placement == Placement::Post {
            y = self.norm(y, &format!("{name}.norm"), kind, eps)?;
        }
        if let Skip::Hourglass { width, .. } = u.skip {
            y = self.hidden(y, &format!("{name}.down"), (width, d), false, true)?;
        }
        Ok(y)
    }

    /// A sublayer at width `w`; `eps` is its step's norm eps (for QK-norm).
    fn sublayer(
        &mut self,
        x: ValueId,
        sub: &Sub,
        name: &str,
        (w, eps): (usize, f64),
    ) -> R<ValueId> {
        match *sub {
            Sub::Attention {
                heads,
                kv_heads,
                causal,
                bias,
                qk_norm,
                attn_dropout,
                ..
            } => {
                let a = Attention {
                    dropout: attn_dropout,
                    heads,
                    kv_heads,
                    causal,
                    bias,
                    qk_norm: qk_norm.then_some(eps),
                };
                self.attention(x, name, &a, w)
            }
            Sub::Ffn {
                hidden,
                act,
                glu,
                bias,
                nested,
            } => {
                let units = crate::elab::width::units(hidden, &nested, self.granularity);
                if units < hidden {
                    let f = width::Ffn {
                        hidden,
                        units,
                        act,
                        glu,
                        bias,
                    };
                    return self.nested_ffn(x, name, &f, w);
                }
                let h = self.hidden(x, &format!("{name}.w1"), (w, hidden), bias, true)?;
                let mut a = self.g.unary(width::act_op(act), h)?;
                if glu {
                    let gate = self.hidden(x, &format!("{name}.w3"), (w, hidden), bias, true)?;
                    a = self.g.mul(a, gate)?;
                }
                self.hidden(a, &format!("{name}.w2"), (hidden, w), bias, true)
            }
            Sub::Linear { bias } => self.hidden(x, name, (w, w), bias, true),
            Sub::Moe {
                experts,
                top,
                hidden,
                act,
                glu,
                bias,
                balance,
            } => {
                let m = width::Moe {
                    experts,
                    top,
                    hidden,
                    act,
                    glu,
                    bias,
                    balance,
                };
                self.moe(x, name, &m, w)
            }
        }
    }

    /// Multi-head attention at width `w`: queries in `heads` heads, keys and values in
    /// `kv_heads` (each serving `heads / kv_heads` query heads), optional RMSNorm of each
    /// head's queries and keys, rotary positions when the model has them.
    fn attention(&mut self, x: ValueId, name: &str, a: &Attention, w: usize) -> R<ValueId> {
        let shape = self.g.shape(x);
        let [b, t, _] = shape[..] else {
            return Err(IrError::Graph(format!(
                "attention on a value of shape {shape:?}"
            )));
        };
        let (h, kv) = (a.heads, a.kv_heads);
        let dh = w / h;
        let mut qkv = Vec::new();
        for (p, heads) in [("wq", h), ("wk", kv), ("wv", kv)] {
            let y = self.hidden(x, &format!("{name}.{p}"), (w, heads * dh), a.bias, true)?;
            let mut y = self.g.reshape(y, vec![b, t, heads, dh])?;
            if let (Some(eps), "wq" | "wk") = (a.qk_norm, p) {
                let norm = format!("{name}.{}_norm", &p[1..2]);
                y = self.norm(y, &norm, NormKind::RmsNorm, eps)?;
            }
            let mut y = self.g.transpose(y, vec![0, 2, 1, 3])?;
            if let (Some(rope), "wq" | "wk") = (self.rope, p) {
                y = self.rotate(y, rope)?;
            }
            if heads != h {
                // [b, kv, t, dh] -> [b, kv, g, t, dh] -> [b, h, t, dh]: query head j reads
                // key/value head j / g.
                let y1 = self.g.reshape(y, vec![b, heads, 1, t, dh])?;
                let yb = self.g.broadcast(y1, vec![b, heads, h / heads, t, dh])?;
                y = self.g.reshape(yb, vec![b, h, t, dh])?;
            }
            qkv.push(y);
        }
        let scores = self.g.matmul(qkv[0], qkv[1], false, true)?;
        let mut scores = self.g.scale(scores, 1.0 / (dh as f64).sqrt())?;
        if a.causal {
            scores = self.g.push(
                Op::CausalMask {
                    fill: MaskFill::NegInf,
                },
                &[scores],
            )?;
        }
        let probs = self.g.push(Op::Softmax, &[scores])?;
        let probs = self.dropout(probs, a.dropout, None)?;
        let o = self.g.matmul(probs, qkv[2], false, false)?;
        let o = self.g.transpose(o, vec![0, 2, 1, 3])?;
        let o = self.g.reshape(o, vec![b, t, w])?;
        self.hidden(o, &format!("{name}.wo"), (w, w), a.bias, true)
    }

    /// RoPE on `x: [b, h, t, dh]`: each pair `(x1, x2)` of a head at position `m` turns by
    /// `m * base^(-2i / dh)`: `(x1 cos - x2 sin, x2 cos + x1 sin)`. Pairs are `(i, i + dh/2)`
    /// (half) or `(2i, 2i + 1)` (interleaved); the angles come from the sinusoidal table,
    /// whose columns `2i`, `2i + 1` hold their sine and cosine.
    fn rotate(&mut self, x: ValueId, (base, pairs): (f64, RopePairs)) -> R<ValueId> {
        let shape = self.g.shape(x);
        let [b, h, t, dh] = shape[..] else {
            return Err(IrError::Graph(format!(
                "rope on a value of shape {shape:?}"
            )));
        };
        let half = dh / 2;
        let table = self.g.push(
            Op::Sinusoidal {
                len: t,
                dim: dh,
                base: F64(base),
            },
            &[],
        )?;
        let table = self.g.reshape(table, vec![t, half, 2])?;
        let mut column = |k: usize| -> R<ValueId> {
            let c = self.g.slice(table, 2, k, k + 1)?;
            let c = self.g.reshape(c, vec![t, half])?;
            self.g.broadcast(c, vec![b, h, t, half])
        };
        let (sin, cos) = (column(0)?, column(1)?);
        let (x1, x2) = match pairs {
            RopePairs::Half => (self.g.slice(x, 3, 0, half)?, self.g.slice(x, 3, half, dh)?),
            RopePairs::Interleaved => {
                let xr = self.g.reshape(x, vec![b, h, t, half, 2])?;
                let (a, c) = (self.g.slice(xr, 4, 0, 1)?, self.g.slice(xr, 4, 1, 2)?);
                (
                    self.g.reshape(a, vec![b, h, t, half])?,
                    self.g.reshape(c, vec![b, h, t, half])?,
                )
            }
        };
        let (x1c, x2s) = (self.g.mul(x1, cos)?, self.g.mul(x2, sin)?);
        let y1 = self.g.sub(x1c, x2s)?;
        let (x2c, x1s) = (self.g.mul(x2, cos)?, self.g.mul(x1, sin)?);
        let y2 = self.g.add(x2c, x1s)?;
        match pairs {
            RopePairs::Half => self.g.push(Op::Concat { axis: 3 }, &[y1, y2]),
            RopePairs::Interleaved => {
                let y1 = self.g.reshape(y1, vec![b, h, t, half, 1])?;
                let y2 = self.g.reshape(y2, vec![b, h, t, half, 1])?;
                let y = self.g.push(Op::Concat { axis: 4 }, &[y1, y2])?;
                self.g.reshape(y, vec![b, h, t, dh])
            }
        }
    }

    /// A hidden `Linear` inside a block (its weight has role `matrix`).
    fn hidden(
        &mut self,
        x: ValueId,
        name: &str,
        (fan_in, out): (usize, usize),
        bias: bool,
        trainable: bool,
    ) -> R<ValueId> {
        self.linear(x, name, (fan_in, out), (bias, trainable), ParamRole::Matrix)
    }

    /// PyTorch `Linear` with its default init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias;
    /// the weight has role `role`, the bias role `bias`.
    fn linear(
        &mut self,
        x: ValueId,
        name: &str,
        (fan_in, out): (usize, usize),
        (bias, trainable): (bool, bool),
        role: ParamRole,
    ) -> R<ValueId> {
        let init = Init::Uniform {
            bound: 1.0 / (fan_in as f64).sqrt(),
        };
        let w = self.param(
            format!("{name}.weight"),
            vec![out, fan_in],
            init.clone(),
            trainable,
            role,
        )?;
        let b = if bias {
            Some(self.param(
                format!("{name}.bias"),
                vec![out],
                init,
                trainable,
                ParamRole::Bias,
            )?)
        } else {
            None
        };
        self.g.linear(x, w, b)
    }

    /// LayerNorm or RMSNorm over the last axis, from primitives.
    fn norm(&mut self, x: ValueId, name: &str, kind: NormKind, eps: f64) -> R<ValueId> {
        let shape = self.g.shape(x);
        let last = shape
            .len()
            .checked_sub(1)
            .ok_or_else(|| IrError::Graph("norm of a scalar".into()))?;
        let w = shape[last];
        let inv = 1.0 / w as f64;
        let weight = self.param(
            format!("{name}.weight"),
            vec![w],
            Init::Ones,
            true,
            ParamRole::Norm,
        )?;
        let (centered, var) = match kind {
            NormKind::LayerNorm => {
                let s = self.g.reduce_sum(x, vec![last], true)?;
                let mean = self.g.scale(s, inv)?;
                let mb = self.g.broadcast(mean, shape.clone())?;
                let xc = self.g.sub(x, mb)?;
                (xc, xc)
            }
            NormKind::RmsNorm => (x, x),
        };
        let sq = self.g.mul(var, var)?;
        let ss = self.g.reduce_sum(sq, vec![last], true)?;
        let ms = self.g.scale(ss, inv)?;
        let me = self.g.add_scalar(ms, eps)?;
        let r = self.g.unary(Op::Unary(UnaryOp::Rsqrt), me)?;
        let rb = self.g.broadcast(r, shape.clone())?;
        let y = self.g.mul(centered, rb)?;
        let wb = self.g.broadcast(weight, shape.clone())?;
        let y = self.g.mul(y, wb)?;
        match kind {
            NormKind::LayerNorm => {
                let bias = self.param(
                    format!("{name}.bias"),
                    vec![w],
                    Init::Zeros,
                    true,
                    ParamRole::Norm,
                )?;
                let bb = self.g.broadcast(bias, shape)?;
                self.g.add(y, bb)
            }
            NormKind::RmsNorm => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    /// `rotate` against RoPE written out (Su et al., eq. 34): the pair `(x_a, x_b)` of a
    /// head at position m turns by `m * base^(-2i / dh)`.
    fn check_rotation(pairs: RopePairs) {
        let (h, t, dh, base) = (2, 5, 6, 100.0);
        let mut l = Lower {
            g: GraphBuilder::new("rope"),
            d: dh,
            training: false,
            noise: 0,
            probes: false,
            probed: vec![],
            rope: Some((base, pairs)),
            expand: None,
            gates: vec![],
            routes: vec![],
            balance: vec![],
            granularity: None,
        };
        let x = l.g.input("x", Type::f32(vec![1, h, t, dh]));
        let y = l.rotate(x, (base, pairs)).unwrap();
        l.g.output("y", y);
        let g = l.g.finish();
        let data: Vec<f64> = (0..h * t * dh).map(|k| (k as f64 * 0.7).sin()).collect();
        let inputs = [Tensor::f32(vec![1, h, t, dh], data.clone())];
        let env = crate::interp::Env {
            inputs: &inputs,
            params: &[],
        };
        let out = crate::interp::run(&g, &env).unwrap();
        let got = &out[0].1.data;
        for head in 0..h {
            for m in 0..t {
                let row = (head * t + m) * dh;
                for i in 0..dh / 2 {
                    let (a, b) = match pairs {
                        RopePairs::Half => (i, i + dh / 2),
                        RopePairs::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let theta = m as f64 * base.powf(-2.0 * i as f64 / dh as f64);
                    let (xa, xb) = (data[row + a], data[row + b]);
                    let ya = xa * theta.cos() - xb * theta.sin();
                    let yb = xa * theta.sin() + xb * theta.cos();
                    // The table is f32, so angles carry f32 rounding.
                    assert!((got[row + a] - ya).abs() < 1e-6, "{pairs:?} {m} {i}");
                    assert!((got[row + b] - yb).abs() < 1e-6, "{pairs:?} {m} {i}");
                }
            }
        }
    }

    #[test]
    fn rotary_positions_turn_each_pair_by_its_angle() {
        check_rotation(RopePairs::Half);
        check_rotation(RopePairs::Interleaved);
    }
}
