//! `Plan` -> tensor IR. Every user error was reported by `resolve`; a builder error here
//! is a compiler bug and becomes an internal-error diagnostic.
//!
//! Norms are built from primitives (reductions and elementwise ops) so the passes can fuse
//! them; sharing is expressed by asking the builder for the same parameter name again.

use super::resolve::{
    Act, Head, InputPlan, Loss, Norm, NormKind, Placement, Plan, Positions, Skip, Sub, Unit,
};
use crate::diag::Diagnostics;
use crate::ir::ops::MaskFill;
use crate::ir::{Graph, GraphBuilder, Init, IrError, Op, ParamRole, Type, UnaryOp, ValueId};

type R<T> = Result<T, IrError>;

pub(crate) fn lower(p: &Plan) -> Result<Graph, Diagnostics> {
    let mut l = Lower {
        g: GraphBuilder::new(p.name.clone()),
        d: p.d,
    };
    match l.model(p) {
        Ok(()) => Ok(l.g.finish()),
        Err(e) => Err(vec![super::internal(e, p.stack_span)]),
    }
}

struct Lower {
    g: GraphBuilder,
    d: usize,
}

/// GPT-style token and position embeddings start at N(0, 0.02) rather than PyTorch's
/// `nn.Embedding` default N(0, 1): with N(0, 1) the embedding dwarfs the residual updates.
const EMBED_STD: f64 = 0.02;

impl Lower {
    fn model(&mut self, p: &Plan) -> R<()> {
        let (x0, targets) = self.inputs(p);
        self.g.set_scope("embed");
        let (mut x, embed_table) = self.embedding(p, x0)?;

        for layer in &p.layers {
            let block = p
                .blocks
                .get(layer.block)
                .ok_or_else(|| IrError::Graph("layer refers to a missing block".into()))?;
            let prefix = format!("blocks.{}", layer.weights);
            let run = if layer.run == 0 {
                String::new()
            } else {
                format!(".run{}", layer.run)
            };
            for u in &block.units {
                x = self.unit(x, u, &prefix, &run)?;
            }
        }

        if let Some((kind, eps)) = p.final_norm {
            self.g.set_scope("final_norm");
            x = self.norm(x, "final_norm", kind, eps)?;
        }
        self.g.set_scope("head");
        let logits = self.head(p, x, embed_table)?;
        self.g.set_scope("loss");
        let loss = self.loss(p.loss, logits, targets)?;
        self.g.set_scope("");
        self.g.output("loss", loss);
        self.g.output("logits", logits);
        Ok(())
    }

    /// The model's inputs and its targets, in a stable order: tokens or inputs, then
    /// targets.
    fn inputs(&mut self, p: &Plan) -> (ValueId, ValueId) {
        match p.input {
            InputPlan::Tokens { batch, length, .. } => {
                let tokens = self.g.input("tokens", Type::i32(vec![batch, length]));
                let tty = match p.head {
                    Head::Lm { .. } => Type::i32(vec![batch, length]),
                    Head::Classifier { .. } => Type::i32(vec![batch]),
                    Head::Linear { out } => Type::f32(vec![batch, out]),
                };
                let targets = self.g.input("targets", tty);
                (tokens, targets)
            }
            InputPlan::Features { batch, width } => {
                let inputs = self.g.input("inputs", Type::f32(vec![batch, width]));
                let tty = match p.head {
                    Head::Linear { out } => Type::f32(vec![batch, out]),
                    _ => Type::i32(vec![batch]),
                };
                let targets = self.g.input("targets", tty);
                (inputs, targets)
            }
        }
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
                let shape = vec![batch, length, d];
                let x = match p.positions {
                    Positions::Learned => {
                        let pos = self.g.role_param(
                            "pos.weight",
                            vec![length, d],
                            Init::Normal { std: EMBED_STD },
                            true,
                            ParamRole::Embedding,
                        )?;
                        let pb = self.g.broadcast(pos, shape)?;
                        self.g.add(x, pb)?
                    }
                    Positions::Sinusoidal => {
                        let pos = self.g.push(
                            Op::Sinusoidal {
                                len: length,
                                dim: d,
                            },
                            &[],
                        )?;
                        let pb = self.g.broadcast(pos, shape)?;
                        self.g.add(x, pb)?
                    }
                    Positions::None => x,
                };
                Ok((x, Some(table)))
            }
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

    /// The logits: per position for an lm head, pooled over the sequence otherwise.
    fn head(&mut self, p: &Plan, x: ValueId, embed_table: Option<ValueId>) -> R<ValueId> {
        let d = self.d;
        let tokens_len = match p.input {
            InputPlan::Tokens { length, .. } => Some(length),
            InputPlan::Features { .. } => None,
        };
        let pooled = |l: &mut Lower, x: ValueId| -> R<ValueId> {
            match tokens_len {
                // Mean over the sequence: [B, T, d] -> [B, d].
                Some(t) => {
                    let s = l.g.reduce_sum(x, vec![1], false)?;
                    l.g.scale(s, 1.0 / t as f64)
                }
                None => Ok(x),
            }
        };
        match p.head {
            Head::Lm { tied: true } => {
                let table = embed_table
                    .ok_or_else(|| IrError::Graph("tied head without a token embedding".into()))?;
                self.g.matmul(x, table, false, true)
            }
            Head::Lm { tied: false } => {
                let InputPlan::Tokens { vocab, .. } = p.input else {
                    return Err(IrError::Graph("lm head on a features input".into()));
                };
                self.linear(x, "head", (d, vocab), (false, true), ParamRole::Head)
            }
            Head::Classifier { classes } => {
                let xp = pooled(self, x)?;
                self.linear(xp, "head", (d, classes), (true, true), ParamRole::Head)
            }
            Head::Linear { out } => {
                let xp = pooled(self, x)?;
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
            let mut f = self.sublayer(normed, &br.sub, &bname, width)?;
            if placement == Placement::Peri {
                f = self.norm(f, &format!("{bname}.norm_out"), br.norm.kind, br.norm.eps)?;
            }
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
                let s = self.g.role_param(
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

    fn sublayer(&mut self, x: ValueId, sub: &Sub, name: &str, w: usize) -> R<ValueId> {
        match *sub {
            Sub::Attention {
                heads,
                causal,
                bias,
                ..
            } => self.attention(x, name, heads, causal, bias, w),
            Sub::Ffn {
                hidden,
                act,
                glu,
                bias,
            } => {
                let h = self.hidden(x, &format!("{name}.w1"), (w, hidden), bias, true)?;
                let op = match act {
                    Act::Relu => Op::Unary(UnaryOp::Relu),
                    Act::Gelu => Op::Unary(UnaryOp::Gelu),
                    Act::GeluTanh => Op::Unary(UnaryOp::GeluTanh),
                    Act::Silu => Op::Unary(UnaryOp::Silu),
                };
                let mut a = self.g.unary(op, h)?;
                if glu {
                    let gate = self.hidden(x, &format!("{name}.w3"), (w, hidden), bias, true)?;
                    a = self.g.mul(a, gate)?;
                }
                self.hidden(a, &format!("{name}.w2"), (hidden, w), bias, true)
            }
            Sub::Linear { bias } => self.hidden(x, name, (w, w), bias, true),
        }
    }

    fn attention(
        &mut self,
        x: ValueId,
        name: &str,
        heads: usize,
        causal: bool,
        bias: bool,
        w: usize,
    ) -> R<ValueId> {
        let shape = self.g.shape(x);
        let [b, t, _] = shape[..] else {
            return Err(IrError::Graph(format!(
                "attention on a value of shape {shape:?}"
            )));
        };
        let dh = w / heads;
        let mut qkv = Vec::new();
        for p in ["wq", "wk", "wv"] {
            let y = self.hidden(x, &format!("{name}.{p}"), (w, w), bias, true)?;
            let y = self.g.reshape(y, vec![b, t, heads, dh])?;
            qkv.push(self.g.transpose(y, vec![0, 2, 1, 3])?);
        }
        let scores = self.g.matmul(qkv[0], qkv[1], false, true)?;
        let mut scores = self.g.scale(scores, 1.0 / (dh as f64).sqrt())?;
        if causal {
            scores = self.g.push(
                Op::CausalMask {
                    fill: MaskFill::NegInf,
                },
                &[scores],
            )?;
        }
        let probs = self.g.push(Op::Softmax, &[scores])?;
        let o = self.g.matmul(probs, qkv[2], false, false)?;
        let o = self.g.transpose(o, vec![0, 2, 1, 3])?;
        let o = self.g.reshape(o, vec![b, t, w])?;
        self.hidden(o, &format!("{name}.wo"), (w, w), bias, true)
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
        let w = self.g.role_param(
            format!("{name}.weight"),
            vec![out, fan_in],
            init.clone(),
            trainable,
            role,
        )?;
        let b = if bias {
            Some(self.g.role_param(
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
        let weight = self.g.role_param(
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
                let bias = self.g.role_param(
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
