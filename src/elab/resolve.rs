//! Names, arguments, norms, skips, schemes and depth programs: AST -> `Plan`.
//!
//! A `Plan` holds plain sizes and settings, so lowering needs no AST and no checks. Each
//! top-level item and each block is resolved on its own; a broken block is left out of the
//! plan and the stacks that use it are skipped without further errors.

use super::consts::{Bound, Consts, Ev, Value};
use super::depth::{self, LayerProgram, Subnets};
use super::learning::Learning;
use super::{
    closest, list, suggest, Override, MAX_ELEMENTS, MAX_LAYERS, MAX_STEPS, MAX_STEPS_PER_BLOCK,
};
use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::SINUSOIDAL_BASE;
use crate::syntax::ast::{
    Block, BlockItem, Call, Expr, ExprKind, Ident, Item, Module, NormSpec, Scheme, Span, Stack,
    Step, Sublayer,
};
use std::collections::HashMap;

// ---------------------------------------------------------------- the plan

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Placement {
    Pre,
    Post,
    Peri,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum NormKind {
    LayerNorm,
    RmsNorm,
}

/// Norm settings at one level (model, block, sublayer); unset fields inherit from outside.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct NormSettings {
    pub placement: Option<Placement>,
    pub kind: Option<NormKind>,
    pub eps: Option<f64>,
}

/// Fully resolved norm settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Norm {
    pub placement: Placement,
    pub kind: NormKind,
    pub eps: f64,
}

/// PyTorch's defaults: pre-LN, LayerNorm, eps 1e-5.
pub(crate) const DEFAULT_NORM: Norm = Norm {
    placement: Placement::Pre,
    kind: NormKind::LayerNorm,
    eps: 1e-5,
};

impl NormSettings {
    /// `self` (inner) over `outer`, field by field.
    pub(crate) fn over(self, outer: NormSettings) -> NormSettings {
        NormSettings {
            placement: self.placement.or(outer.placement),
            kind: self.kind.or(outer.kind),
            eps: self.eps.or(outer.eps),
        }
    }
    pub(crate) fn finish(self) -> Norm {
        Norm {
            placement: self.placement.unwrap_or(DEFAULT_NORM.placement),
            kind: self.kind.unwrap_or(DEFAULT_NORM.kind),
            eps: self.eps.unwrap_or(DEFAULT_NORM.eps),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Skip {
    Residual,
    None,
    Scaled(f64),
    /// A learned scalar starting at the value.
    Learned(f64),
    Hourglass {
        width: usize,
        trainable: bool,
        span: Span,
    },
}

/// The granularities of a nested FFN, largest first (`len == 0`: not nested).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Nested {
    pub fractions: [f64; super::width::MAX_GRANULARITIES],
    pub len: usize,
}

impl Nested {
    pub(crate) fn fractions(&self) -> &[f64] {
        &self.fractions[..self.len]
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Act {
    Relu,
    Gelu,
    GeluTanh,
    Silu,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Sub {
    Attention {
        heads: usize,
        /// Key and value heads (grouped-query attention); `heads` when not grouped.
        kv_heads: usize,
        causal: bool,
        bias: bool,
        /// RMSNorm over each head's query and key before the scores.
        qk_norm: bool,
        /// Dropout on the attention probabilities while training, 0 for none.
        attn_dropout: f64,
        heads_span: Span,
    },
    Ffn {
        hidden: usize,
        act: Act,
        glu: bool,
        bias: bool,
        /// MatFormer's granularities: run `k` of the model uses the first
        /// `nested[k] * hidden` hidden units.
        nested: Nested,
    },
    Linear {
        bias: bool,
    },
    /// A mixture of `experts` FFNs of `hidden` units, computed dense and masked: stored
    /// stacked as one FFN of `experts * hidden` units, each token's hidden units scaled
    /// by its gate for their expert (0 outside its `top` experts).
    Moe {
        experts: usize,
        top: usize,
        hidden: usize,
        act: Act,
        glu: bool,
        bias: bool,
        /// Coefficient of the Switch load-balancing loss.
        balance: f64,
    },
}

/// One sublayer inside a unit; `name` is its parameter prefix within the layer (`ffn.1`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Branch {
    pub name: String,
    pub sub: Sub,
    /// Kind and eps of the branch's own output norm (used by peri inside `parallel`).
    pub norm: Norm,
    /// Dropout on the branch's output while training (`dropout = p`), 0 for none.
    pub dropout: f64,
    pub span: Span,
}

/// One residual step: `x + c * sum(branches)` under a norm placement and a skip.
/// A sequential step has one branch and is named after it; a `parallel` group is
/// named after the layer itself (`name == None`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Unit {
    pub name: Option<String>,
    pub coef: f64,
    pub norm: Norm,
    pub skip: Skip,
    pub branches: Vec<Branch>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BlockPlan {
    pub name: String,
    pub units: Vec<Unit>,
}

/// One executed layer: weight set `blocks.<weights>`, its `run`-th execution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LayerRun {
    pub block: usize,
    pub weights: usize,
    pub run: usize,
    /// Parallel groups, linear expansion and routing (`elab::depth`).
    pub program: LayerProgram,
}

/// FiRST routing of the routed layers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Routing {
    /// Coefficient of the mean gate in the loss.
    pub sparsity: f64,
    /// Hard skipping (`lamina run --skip-below`): a layer whose gate at the last position
    /// is below this is skipped for that sequence.
    pub skip_below: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum InputPlan {
    Tokens {
        batch: usize,
        length: usize,
        vocab: usize,
    },
    Features {
        batch: usize,
        width: usize,
    },
    /// `images: f32[batch, channels, height, width]` (NCHW), cut into `patch x patch`
    /// patches by the embedding; the patches are the sequence, in row-major order.
    Image {
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
        patch: usize,
    },
}

impl InputPlan {
    /// Patches per column and per row of an image input (`None` for other inputs).
    pub(crate) fn patch_grid(&self) -> Option<(usize, usize)> {
        match *self {
            InputPlan::Image {
                height,
                width,
                patch,
                ..
            } => Some((height / patch.max(1), width / patch.max(1))),
            InputPlan::Tokens { .. } | InputPlan::Features { .. } => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Positions {
    Learned,
    Sinusoidal,
    /// The fixed 2-D table of an image model: half the channels encode the patch's row,
    /// half its column, each with the 1-D sinusoidal table.
    Sinusoidal2d,
    /// Rotary positions on every attention's queries and keys; nothing is added to the
    /// embedding.
    Rope {
        base: f64,
        pairs: RopePairs,
    },
    None,
}

/// Which dimensions of a head RoPE rotates together. Both conventions are in use, and a
/// model trained with one is ruined by the other, so the choice is spelled out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum RopePairs {
    /// `(i, i + d/2)`: GPT-NeoX and Llama.
    Half,
    /// `(2i, 2i + 1)`: the RoPE paper (RoFormer) and GPT-J.
    Interleaved,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Head {
    Lm { tied: bool },
    Classifier { classes: usize, pool: Pool },
    Linear { out: usize },
}

/// How a classifier reads a sequence: the mean over its positions, or a learned class
/// token prepended to it (`cls.weight`), read at position 0 after the final norm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Pool {
    Mean,
    Cls,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Loss {
    CrossEntropy,
    Mse,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub name: String,
    pub input: InputPlan,
    /// Residual width.
    pub d: usize,
    pub positions: Positions,
    /// A features model with `embed(dim = ...)`: a Linear from the input width to `d`.
    pub feature_embed: bool,
    pub blocks: Vec<BlockPlan>,
    pub layers: Vec<LayerRun>,
    /// Weight sets the stacks declare (`blocks.0` ..); an `order` may leave some unrun.
    pub weight_sets: usize,
    /// Depth subnets trained jointly (`subnets [...]`).
    pub subnets: Option<Subnets>,
    /// Router gates on the `routed` layers.
    pub routing: Option<Routing>,
    /// The first depth-program clause of the stacks (for errors about them).
    pub depth_span: Option<Span>,
    /// Granularities of the nested FFNs (MatFormer); 0 when no FFN is nested.
    pub widths: usize,
    pub final_norm: Option<(NormKind, f64)>,
    pub head: Head,
    pub loss: Loss,
    pub learning: Learning,
    /// Where to point a "too many parameters" error.
    pub stack_span: Span,
}

impl Plan {
    /// The length of the residual stream's sequence: the tokens, or the patches (and the
    /// class token); `None` for a features model.
    pub(crate) fn seq_len(&self) -> Option<usize> {
        seq_len(self.input, Some(self.head))
    }
}

/// The sequence length of a model with this input and head (see `Plan::seq_len`).
pub(crate) fn seq_len(input: InputPlan, head: Option<Head>) -> Option<usize> {
    match input {
        InputPlan::Tokens { length, .. } => Some(length),
        InputPlan::Features { .. } => None,
        InputPlan::Image { .. } => {
            let (gh, gw) = input.patch_grid()?;
            let cls = matches!(
                head,
                Some(Head::Classifier {
                    pool: Pool::Cls,
                    ..
                })
            );
            Some(gh * gw + usize::from(cls))
        }
    }
}

/// The resolved `embed` statement.
struct Embedding {
    d: usize,
    positions: Positions,
    feature_embed: bool,
    /// Where the width is set (for notes).
    d_span: Span,
    /// The model's input, with an image's patch size.
    input: InputPlan,
}

/// One executed layer of a stack: its block, weight set and program.
type StackLayer = (usize, usize, LayerProgram);

/// The executed layers of all stacks and their depth programs.
#[derive(Default)]
struct Layers {
    layers: Vec<LayerRun>,
    /// Weight sets the stacks declare.
    weight_sets: usize,
    subnets: Option<Subnets>,
    /// The largest sparsity coefficient of the routed stacks.
    sparsity: Option<f64>,
    /// The first depth-program clause (for errors about the learning rule).
    program_span: Option<Span>,
}

/// What size checks need to know about the model.
struct Shapes {
    input: InputPlan,
    d: usize,
    positions: Positions,
    head: Option<Head>,
}

// ---------------------------------------------------------------- keywords

const PLACEMENTS: &[&str] = &["pre", "post", "peri", "none"];
const KINDS: &[&str] = &["layernorm", "rmsnorm"];
const SKIPS: &[&str] = &["residual", "none", "scaled", "hourglass"];
const SUBLAYERS: &[&str] = &["attention", "ffn", "moe", "linear"];
const SCHEMES: &[&str] = &["lie_trotter", "strang", "parallel"];
const INPUTS: &[&str] = &["tokens", "features", "image"];
const HEADS: &[&str] = &["lm", "classifier", "linear"];
const LOSSES: &[&str] = &["cross_entropy", "mse"];

const MINIMAL_MODEL: &str = "a model needs an `input tokens(...)` or `input features(...)`, a `block` of sublayers and a `stack <block> * <layers>`; examples/transformer.lam is a complete one";

fn err(msg: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
    Diagnostic::new(msg, span, label)
}

// ---------------------------------------------------------------- block pieces

/// A block's statements, each kind at most once.
struct BlockItems<'b> {
    norm: Option<(NormSettings, Span)>,
    skip: Option<(Skip, Span)>,
    scheme: Option<&'b Scheme>,
    scheme_span: Span,
    subs: Vec<SublayerDef<'b>>,
}

/// A sublayer line, resolved as far as it goes on its own.
struct SublayerDef<'b> {
    name: &'b Ident,
    /// `None` when its call is wrong (reported).
    sub: Option<Sub>,
    norm: Option<NormSettings>,
    norm_span: Option<Span>,
    /// Its own skip clause; `Some(None)` when that clause is wrong (reported).
    skip: Option<Option<Skip>>,
    skip_span: Option<Span>,
    /// `dropout = p` on its output; `None` when the value is wrong (reported).
    dropout: Option<f64>,
    span: Span,
}

/// One step of a scheme: the sublayer (by index) and its coefficient.
struct SchemeStep {
    sublayer: usize,
    coef: f64,
}

/// A scheme step made into a branch, remembering its coefficient and sublayer.
struct ScheduledBranch {
    branch: Branch,
    coef: f64,
    sublayer: usize,
}

/// The scheme's steps as branches with their final norms. A sublayer used k > 1 times
/// gets one branch per use, named `<name>.0`, `<name>.1`, ...
fn number_branches(
    subs: &[SublayerDef],
    steps: &[SchemeStep],
    block_norm: NormSettings,
) -> Option<Vec<ScheduledBranch>> {
    let mut count = vec![0usize; subs.len()];
    for st in steps {
        count[st.sublayer] += 1;
    }
    let mut seen = vec![0usize; subs.len()];
    let mut branches = Vec::new();
    for &SchemeStep { sublayer: i, coef } in steps {
        let s = &subs[i];
        let name = if count[i] > 1 {
            format!("{}.{}", s.name.name, seen[i])
        } else {
            s.name.name.clone()
        };
        seen[i] += 1;
        let norm = s.norm.unwrap_or_default().over(block_norm).finish();
        let sub = s.sub.clone()?;
        branches.push(ScheduledBranch {
            branch: Branch {
                name,
                sub,
                norm,
                dropout: s.dropout?,
                span: s.span,
            },
            coef,
            sublayer: i,
        });
    }
    Some(branches)
}

/// A sequential scheme: one unit per branch, under the sublayer's own skip if it has one.
fn sequential_units(
    subs: &[SublayerDef],
    branches: Vec<ScheduledBranch>,
    block_skip: Skip,
) -> Option<Vec<Unit>> {
    let mut units = Vec::new();
    for ScheduledBranch {
        branch,
        coef,
        sublayer,
    } in branches
    {
        let skip = match subs[sublayer].skip {
            Some(Some(sk)) => sk,
            Some(None) => return None,
            None => block_skip,
        };
        units.push(Unit {
            name: Some(branch.name.clone()),
            coef,
            norm: branch.norm,
            skip,
            branches: vec![branch],
        });
    }
    Some(units)
}

// ---------------------------------------------------------------- the resolver

struct Resolver<'a> {
    consts: &'a Consts,
    diags: Vec<Diagnostic>,
    /// The model's input is an image: attention is not causal unless asked (and asking
    /// is an error).
    image: bool,
}

/// A singleton top-level statement, remembered with its span for duplicate notes.
struct Once<'a, T> {
    what: &'static str,
    item: Option<(&'a T, Span)>,
}

impl<'a, T> Once<'a, T> {
    fn new(what: &'static str) -> Self {
        Once { what, item: None }
    }
    fn set(&mut self, t: &'a T, span: Span, diags: &mut Vec<Diagnostic>) {
        match self.item {
            Some((_, first)) => diags.push(
                err(
                    format!("the model has two `{}` statements", self.what),
                    span,
                    "second one",
                )
                .with_note(first, "first one here")
                .with_hint("keep only one"),
            ),
            None => self.item = Some((t, span)),
        }
    }
    fn get(&self) -> Option<&'a T> {
        self.item.map(|(t, _)| t)
    }
    fn span(&self) -> Option<Span> {
        self.item.map(|(_, s)| s)
    }
}

/// A module's top-level statements by kind.
struct TopLevel<'m> {
    model: Once<'m, Ident>,
    input: Once<'m, Call>,
    embed: Once<'m, Call>,
    norm: Once<'m, NormSpec>,
    skip: Once<'m, Call>,
    final_norm: Once<'m, Call>,
    head: Once<'m, Call>,
    loss: Once<'m, Call>,
    learning: Once<'m, Call>,
    blocks: Vec<&'m Block>,
    stacks: Vec<&'m Stack>,
}

pub(crate) fn resolve(
    m: &Module,
    default_name: &str,
    overrides: &[Override],
) -> Result<Plan, Diagnostics> {
    let mut diags = Vec::new();
    let consts = Consts::evaluate(m, overrides, &mut diags);
    let mut r = Resolver {
        consts: &consts,
        diags,
        image: false,
    };
    let plan = r.module(m, default_name);
    let mut diags = r.diags;
    match plan {
        Some(p) if diags.is_empty() => Ok(p),
        _ => {
            if diags.is_empty() {
                diags.push(super::internal(
                    "resolution failed without a diagnostic",
                    m.span,
                ));
            }
            super::sort(&mut diags);
            Err(diags)
        }
    }
}

impl Resolver<'_> {
    fn ev(&mut self) -> Ev<'_> {
        Ev {
            consts: self.consts,
            diags: &mut self.diags,
        }
    }

    fn module(&mut self, m: &Module, default_name: &str) -> Option<Plan> {
        let top = self.top_level(m);
        if m.items.is_empty() {
            self.diags.push(
                err(
                    "the model is empty: it has no `input`, no blocks and no `stack`",
                    Span::new(0, 0),
                    "nothing here",
                )
                .with_hint(MINIMAL_MODEL),
            );
            return None;
        }

        // Model-wide defaults.
        let model_norm = top
            .norm
            .get()
            .and_then(|n| self.norm_spec(n))
            .unwrap_or_default();
        let model_skip = match top.skip.get() {
            Some(c) => self.skip(c),
            None => Some(Skip::Residual),
        };

        let input_span = top.input.span().unwrap_or_default();
        let input_plan = match top.input.get() {
            Some(c) => self.input(c),
            None => {
                self.diags.push(
                    err("the model has no `input`", Span::new(0, 0), "expected an `input` statement")
                        .with_hint("add `input tokens(batch = 16, length = 64, vocab = 256)` or `input features(batch = 32, width = 64)`"),
                );
                None
            }
        };
        self.image = matches!(input_plan, Some(InputPlan::Image { .. }));
        let embedding = self.model_embed(input_plan, top.embed.get(), input_span);
        // An image input is complete once the embedding has set its patch size.
        let input_plan = embedding.as_ref().map_or(input_plan, |e| Some(e.input));

        // Blocks, each on its own.
        let mut plans: Vec<Option<BlockPlan>> = Vec::new();
        for b in &top.blocks {
            // A broken model-level skip was reported; still check the blocks themselves.
            let p = self.block(b, model_norm, model_skip.unwrap_or(Skip::Residual));
            plans.push(p);
        }

        let layers = self.layers(&top.stacks, &top.blocks, &plans);
        let final_norm = self.model_final_norm(top.final_norm.get(), model_norm.finish());
        let head_loss = match input_plan {
            Some(inp) => self.head_loss(inp, top.head.get(), top.loss.get(), input_span),
            None => None,
        };

        // Shapes and limits of everything that resolved, so an error in one block does
        // not hide a size error in another.
        if let (Some(inp), Some(e)) = (input_plan, &embedding) {
            let shapes = Shapes {
                input: inp,
                d: e.d,
                positions: e.positions,
                head: head_loss.map(|h| h.0),
            };
            let ok_blocks: Vec<&BlockPlan> = plans.iter().flatten().collect();
            self.check_sizes(&shapes, &ok_blocks, e.d_span, top.head.span(), input_span);
        }

        let learning = match &layers {
            Some(l) => super::learning::resolve(
                top.learning.get(),
                l.layers.len(),
                head_loss.map(|h| h.0),
                &mut self.ev(),
            ),
            None => None,
        };
        if let (
            Some(Layers {
                program_span: Some(at),
                ..
            }),
            Some(rule),
            Some(l),
        ) = (&layers, top.learning.get(), learning)
        {
            if l != Learning::Backprop {
                self.diags.push(
                    err(
                        "a depth program needs end-to-end learning",
                        *at,
                        "this stack clause",
                    )
                    .with_note(rule.span, "the learning rule")
                    .with_hint("parallel groups, subnets, expansion and routers train with backprop: drop the `learning` statement or the clause"),
                );
                return None;
            }
        }

        let plans: Vec<BlockPlan> = plans.into_iter().collect::<Option<_>>()?;
        let widths = super::width::granularities(&plans, &mut self.diags)?;
        if let (
            true,
            Some(Layers {
                subnets: Some(sub), ..
            }),
        ) = (widths > 0, &layers)
        {
            self.diags.push(
                err(
                    "nested widths and depth subnets cannot be combined",
                    sub.span,
                    "subnets here",
                )
                .with_hint("train one kind of sub-model at a time: drop `nested` or `subnets`"),
            );
            return None;
        }
        let final_norm = final_norm?;
        model_skip?;
        let Layers {
            layers,
            weight_sets,
            subnets,
            sparsity,
            program_span,
        } = layers?;
        let input_plan = input_plan?;
        let Embedding {
            d: d_model,
            positions,
            feature_embed,
            ..
        } = embedding?;
        let (head_plan, loss_plan) = head_loss?;
        Some(Plan {
            name: top
                .model
                .get()
                .map(|i| i.name.clone())
                .unwrap_or_else(|| default_name.to_string()),
            input: input_plan,
            d: d_model,
            positions,
            feature_embed,
            blocks: plans,
            layers,
            weight_sets,
            subnets,
            routing: sparsity.map(|sparsity| Routing {
                sparsity,
                skip_below: None,
            }),
            depth_span: program_span,
            widths,
            final_norm,
            head: head_plan,
            loss: loss_plan,
            learning: learning?,
            stack_span: top.stacks.first().map(|s| s.span).unwrap_or_default(),
        })
    }

    /// The top-level statements by kind; a second singleton or a second block of the
    /// same name is reported and left out.
    fn top_level<'m>(&mut self, m: &'m Module) -> TopLevel<'m> {
        let mut top = TopLevel {
            model: Once::new("model"),
            input: Once::new("input"),
            embed: Once::new("embed"),
            norm: Once::new("norm"),
            skip: Once::new("skip"),
            final_norm: Once::new("final_norm"),
            head: Once::new("head"),
            loss: Once::new("loss"),
            learning: Once::new("learning"),
            blocks: Vec::new(),
            stacks: Vec::new(),
        };
        let d = &mut self.diags;
        for item in &m.items {
            match item {
                Item::Model(id) => top.model.set(id, id.span, d),
                Item::Const { .. } => {}
                Item::Input(c) => top.input.set(c, c.span, d),
                Item::Embed(c) => top.embed.set(c, c.span, d),
                Item::Norm(n) => top.norm.set(n, n.span, d),
                Item::Skip(c) => top.skip.set(c, c.span, d),
                Item::Block(b) => {
                    if let Some(first) = top.blocks.iter().find(|f| f.name.name == b.name.name) {
                        d.push(
                            err(
                                format!("block `{}` is defined twice", b.name.name),
                                b.name.span,
                                "second definition",
                            )
                            .with_note(first.name.span, "first defined here")
                            .with_hint("rename one of them"),
                        );
                    } else {
                        top.blocks.push(b);
                    }
                }
                Item::Stack(s) => top.stacks.push(s),
                Item::FinalNorm(c) => top.final_norm.set(c, c.span, d),
                Item::Head(c) => top.head.set(c, c.span, d),
                Item::Loss(c) => top.loss.set(c, c.span, d),
                Item::Learning(c) => top.learning.set(c, c.span, d),
            }
        }
        top
    }

    /// The executed layers of all `stack` statements in order, within the depth limits;
    /// `None` when a stack is wrong, a limit is passed or there is no stack at all.
    fn layers(
        &mut self,
        stacks: &[&Stack],
        blocks: &[&Block],
        plans: &[Option<BlockPlan>],
    ) -> Option<Layers> {
        let mut out = Layers::default();
        let mut executed = 0usize;
        let mut executed_steps = 0usize;
        let mut runs: HashMap<usize, usize> = HashMap::new();
        let mut depth_ok = true;
        for s in stacks {
            let Some((seq, clauses)) = self.stack(s, blocks, plans, &mut out.weight_sets) else {
                depth_ok = false;
                continue;
            };
            executed += seq.len();
            executed_steps += seq
                .iter()
                .filter_map(|(block, _, _)| plans.get(*block).and_then(|p| p.as_ref()))
                .map(|p| p.units.iter().map(|u| u.branches.len()).sum::<usize>())
                .sum::<usize>();
            if self.over_depth_limit(s, executed, executed_steps) {
                depth_ok = false;
                break;
            }
            depth_ok &= self.stack_program(&clauses, &seq, &mut out);
            for (block, weights, program) in seq {
                let run = runs.entry(weights).or_insert(0);
                out.layers.push(LayerRun {
                    block,
                    weights,
                    run: *run,
                    program,
                });
                *run += 1;
            }
        }
        if stacks.is_empty() {
            let d = match blocks.last() {
                Some(b) => err(
                    "the model has no `stack`, so no block ever runs",
                    b.name.span,
                    "this block is never stacked",
                )
                .with_hint(format!("add `stack {} * 4` to run it 4 times", b.name.name)),
                None => err(
                    "the model has no blocks and no `stack`",
                    Span::new(0, 0),
                    "expected a `block` and a `stack`",
                )
                .with_hint(MINIMAL_MODEL),
            };
            self.diags.push(d);
            depth_ok = false;
        }
        depth_ok.then_some(out)
    }

    /// Records a stack's subnets and routing in `out` (its layers come next in
    /// `out.layers`); only one stack may have subnets.
    fn stack_program(&mut self, c: &depth::Clauses, seq: &[StackLayer], out: &mut Layers) -> bool {
        if out.program_span.is_none() {
            out.program_span = c.span;
        }
        if let Some(x) = c.routed {
            out.sparsity = Some(out.sparsity.map_or(x, |y: f64| y.max(x)));
        }
        let Some((depths, weights, span)) = &c.subnets else {
            return true;
        };
        if let Some(first) = &out.subnets {
            self.diags.push(
                err(
                    "only one stack may have `subnets`",
                    *span,
                    "second one here",
                )
                .with_note(first.span, "first one here"),
            );
            return false;
        }
        let (n, first) = (seq.len(), out.layers.len());
        out.subnets = Some(Subnets {
            layers: depths
                .iter()
                .map(|&dep| {
                    let mut l: Vec<usize> = (0..first).collect();
                    l.extend(depth::Clauses::subnet_layers(dep, n, first));
                    l
                })
                .collect(),
            depths: depths.clone(),
            weights: weights.clone(),
            span: *span,
        });
        true
    }

    /// Whether the stacks so far, ending with `s`, execute too many steps or layers
    /// (reported at `s`).
    fn over_depth_limit(&mut self, s: &Stack, executed: usize, executed_steps: usize) -> bool {
        if executed_steps > MAX_STEPS && executed <= MAX_LAYERS {
            self.diags.push(
                err(
                    format!(
                        "the model would execute {executed_steps} sublayer steps; the limit is {MAX_STEPS}"
                    ),
                    s.span,
                    "this stack goes past the limit",
                )
                .with_hint(format!(
                    "at most {MAX_STEPS} sublayer steps can be executed in total: use fewer layers or shorter blocks"
                )),
            );
            return true;
        }
        if executed > MAX_LAYERS {
            self.diags.push(
                err(
                    format!("the model would execute {executed} layers; the limit is {MAX_LAYERS}"),
                    s.span,
                    "this stack goes past the limit",
                )
                .with_hint(format!(
                    "at most {MAX_LAYERS} layers can be executed in total"
                )),
            );
            return true;
        }
        false
    }

    /// The final norm: as written, or by default present under pre and peri placement.
    fn model_final_norm(
        &mut self,
        c: Option<&Call>,
        model_norm: Norm,
    ) -> Option<Option<(NormKind, f64)>> {
        match c {
            Some(c) => self.final_norm(c),
            None => Some(match model_norm.placement {
                Placement::Pre | Placement::Peri => Some((model_norm.kind, model_norm.eps)),
                Placement::Post | Placement::None => None,
            }),
        }
    }

    // ------------------------------------------------------------ input and embedding

    fn input(&mut self, c: &Call) -> Option<InputPlan> {
        match c.name.name.as_str() {
            "tokens" => {
                let b = Bound::bind(
                    c,
                    "`input tokens`",
                    &["batch", "length", "vocab"],
                    3,
                    &mut self.diags,
                );
                let example = "tokens(batch = 16, length = 64, vocab = 256)";
                let batch = b.require("batch", example, &mut self.diags);
                let length = b.require("length", example, &mut self.diags);
                let vocab = b.require("vocab", example, &mut self.diags);
                let batch = batch.and_then(|e| self.ev().size(e, "batch"));
                let length = length.and_then(|e| self.ev().size(e, "length"));
                let vocab = vocab.and_then(|e| self.ev().size(e, "vocab"));
                Some(InputPlan::Tokens {
                    batch: batch?,
                    length: length?,
                    vocab: vocab?,
                })
            }
            "features" => {
                let b = Bound::bind(
                    c,
                    "`input features`",
                    &["batch", "width"],
                    2,
                    &mut self.diags,
                );
                let example = "features(batch = 32, width = 64)";
                let batch = b.require("batch", example, &mut self.diags);
                let width = b.require("width", example, &mut self.diags);
                let batch = batch.and_then(|e| self.ev().size(e, "batch"));
                let width = width.and_then(|e| self.ev().size(e, "width"));
                Some(InputPlan::Features {
                    batch: batch?,
                    width: width?,
                })
            }
            "image" => self.image_input(c),
            other => {
                self.diags.push(
                    err(
                        format!("unknown input kind `{other}`"),
                        c.name.span,
                        "expected `tokens`, `features` or `image`",
                    )
                    .with_hint(suggest(other, INPUTS, "the input kinds are")),
                );
                None
            }
        }
    }

    /// `input image(batch, channels, height, width)`; the patch size comes from `embed`.
    fn image_input(&mut self, c: &Call) -> Option<InputPlan> {
        let names = ["batch", "channels", "height", "width"];
        let b = Bound::bind(c, "`input image`", &names, 4, &mut self.diags);
        let example = "image(batch = 32, channels = 1, height = 16, width = 16)";
        let exprs: Vec<Option<&Expr>> = names
            .iter()
            .map(|n| b.require(n, example, &mut self.diags))
            .collect();
        let sizes: Vec<Option<usize>> = exprs
            .iter()
            .zip(names)
            .map(|(e, n)| e.and_then(|e| self.ev().size(e, n)))
            .collect();
        Some(InputPlan::Image {
            batch: sizes[0]?,
            channels: sizes[1]?,
            height: sizes[2]?,
            width: sizes[3]?,
            // Set by the embedding (`patch = ...`).
            patch: 1,
        })
    }

    /// `embed` against the model's input; without a usable input, the embed statement's
    /// own arguments are still checked.
    fn model_embed(
        &mut self,
        input: Option<InputPlan>,
        e: Option<&Call>,
        input_span: Span,
    ) -> Option<Embedding> {
        match (input, e) {
            (Some(inp), e) => self.embed(inp, e, input_span),
            (None, Some(e)) => {
                let any_input = InputPlan::Tokens {
                    batch: 1,
                    length: 1,
                    vocab: 1,
                };
                let _ = self.embed(any_input, Some(e), e.span);
                None
            }
            (None, None) => None,
        }
    }

    /// Residual width, positions, whether a features model has an embedding, the span
    /// that defines the width (for notes), and the input with an image's patch size.
    fn embed(&mut self, inp: InputPlan, e: Option<&Call>, input_span: Span) -> Option<Embedding> {
        let Some(c) = e else {
            return match inp {
                InputPlan::Tokens { .. } | InputPlan::Image { .. } => {
                    let (what, label, example) = match inp {
                        InputPlan::Image { .. } => (
                            "an image model needs a patch embedding",
                            "images need `embed(dim = ..., patch = ...)`",
                            "add `embed(dim = 64, patch = 4)` to cut the image into 4x4 patches of width 64",
                        ),
                        InputPlan::Tokens { .. } | InputPlan::Features { .. } => (
                            "a token model needs an embedding",
                            "tokens need `embed(dim = ...)`",
                            "add `embed(dim = 128)` to set the model width",
                        ),
                    };
                    self.diags
                        .push(err(what, input_span, label).with_hint(example));
                    None
                }
                InputPlan::Features { width, .. } => Some(Embedding {
                    d: width,
                    positions: Positions::None,
                    feature_embed: false,
                    d_span: input_span,
                    input: inp,
                }),
            };
        };
        let b = Bound::bind(
            c,
            "`embed`",
            &["dim", "positions", "patch"],
            1,
            &mut self.diags,
        );
        let dim_e = b.require("dim", "embed(dim = 128)", &mut self.diags);
        let dim = dim_e.and_then(|e| self.ev().size(e, "dim"));
        let image = matches!(inp, InputPlan::Image { .. });
        let positions = match (b.get("positions"), inp) {
            (None, InputPlan::Tokens { .. } | InputPlan::Image { .. }) => Some(Positions::Learned),
            (None, InputPlan::Features { .. }) => Some(Positions::None),
            (Some(pe), InputPlan::Tokens { .. } | InputPlan::Image { .. }) => {
                self.positions(pe, image)
            }
            (Some(pe), InputPlan::Features { .. }) => {
                self.diags.push(
                    err(
                        "positions need a sequence, and this model's input is `features`",
                        pe.span,
                        "not available for features",
                    )
                    .with_hint("remove `positions = ...`"),
                );
                None
            }
        };
        let input = self.patch(inp, b.get("patch"), c, input_span);
        if let (Some(Positions::Sinusoidal2d), Some(d), Some(pe)) =
            (positions, dim, b.get("positions"))
        {
            if d % 4 != 0 {
                self.diags.push(
                    err(
                        format!("the 2-D sinusoidal table splits the width into four quarters, and dim = {d} is not divisible by 4"),
                        pe.span,
                        "needs dim divisible by 4",
                    )
                    .with_hint(format!("use a dim such as {} or {}", d / 4 * 4, d / 4 * 4 + 4)),
                );
                return None;
            }
        }
        Some(Embedding {
            d: dim?,
            positions: positions?,
            feature_embed: matches!(inp, InputPlan::Features { .. }),
            d_span: dim_e.map(|e| e.span).unwrap_or(c.span),
            input: input?,
        })
    }

    /// `patch = P` of an image input: required there, dividing the height and the width;
    /// refused for other inputs.
    fn patch(
        &mut self,
        inp: InputPlan,
        pe: Option<&Expr>,
        c: &Call,
        input_span: Span,
    ) -> Option<InputPlan> {
        match (inp, pe) {
            (InputPlan::Tokens { .. } | InputPlan::Features { .. }, None) => Some(inp),
            (InputPlan::Tokens { .. } | InputPlan::Features { .. }, Some(pe)) => {
                self.diags.push(
                    err(
                        "`patch` cuts an image into patches, and this model's input is not an image",
                        pe.span,
                        "needs `input image(...)`",
                    )
                    .with_note(input_span, "the model's input")
                    .with_hint("remove `patch = ...`, or use `input image(batch = 32, channels = 1, height = 16, width = 16)`"),
                );
                None
            }
            (InputPlan::Image { .. }, None) => {
                self.diags.push(
                    err(
                        "an image model's embedding needs a patch size",
                        c.span,
                        "missing `patch = ...`",
                    )
                    .with_hint("add `patch = 4` to cut the image into 4x4 patches, e.g. `embed(dim = 64, patch = 4)`"),
                );
                None
            }
            (
                InputPlan::Image {
                    batch,
                    channels,
                    height,
                    width,
                    ..
                },
                Some(pe),
            ) => {
                let patch = self.ev().size(pe, "patch")?;
                if height % patch != 0 || width % patch != 0 {
                    let common: Vec<String> = (1..=height.min(width))
                        .filter(|p| height % p == 0 && width % p == 0)
                        .map(|p| p.to_string())
                        .collect();
                    let which = if height % patch != 0 {
                        "height"
                    } else {
                        "width"
                    };
                    let size = if height % patch != 0 { height } else { width };
                    self.diags.push(
                        err(
                            format!("patch = {patch} does not divide the image's {which} = {size}"),
                            pe.span,
                            format!("{size} is not a multiple of {patch}"),
                        )
                        .with_note(input_span, format!("the image is {height}x{width}"))
                        .with_hint(if height == width {
                            format!("patch sizes that divide {height}: {}", common.join(", "))
                        } else {
                            format!(
                                "patch sizes that divide both {height} and {width}: {}",
                                common.join(", ")
                            )
                        }),
                    );
                    return None;
                }
                Some(InputPlan::Image {
                    batch,
                    channels,
                    height,
                    width,
                    patch,
                })
            }
        }
    }

    /// `positions = learned | sinusoidal | none | rope(base = 10000, pairs = half)`.
    fn positions(&mut self, e: &Expr, image: bool) -> Option<Positions> {
        let p = match &e.kind {
            ExprKind::Call(c) if c.name.name == "rope" => self.rope(c)?,
            _ => self
                .ev()
                .keyword(
                    e,
                    "position kind",
                    &["learned", "sinusoidal", "sinusoidal2d", "rope", "none"],
                )
                .map(|k| match k.as_str() {
                    "learned" => Positions::Learned,
                    "sinusoidal" => Positions::Sinusoidal,
                    "sinusoidal2d" => Positions::Sinusoidal2d,
                    "rope" => Positions::Rope {
                        base: SINUSOIDAL_BASE,
                        pairs: RopePairs::Half,
                    },
                    _ => Positions::None,
                })?,
        };
        let refusal = match (p, image) {
            (Positions::Learned | Positions::None, _)
            | (Positions::Sinusoidal | Positions::Rope { .. }, false)
            | (Positions::Sinusoidal2d, true) => None,
            (Positions::Sinusoidal | Positions::Rope { .. }, true) => Some((
                "1-D positions number the patches in a line, and this model's input is an image",
                "not for an image",
                "use `positions = sinusoidal2d` (a patch's row and column) or `positions = learned`",
            )),
            (Positions::Sinusoidal2d, false) => Some((
                "`sinusoidal2d` encodes a patch's row and column, and this model's input is not an image",
                "needs `input image(...)`",
                "use `positions = sinusoidal` for a sequence",
            )),
        };
        match refusal {
            None => Some(p),
            Some((msg, label, hint)) => {
                self.diags.push(err(msg, e.span, label).with_hint(hint));
                None
            }
        }
    }

    fn rope(&mut self, c: &Call) -> Option<Positions> {
        let b = Bound::bind(c, "`rope`", &["base", "pairs"], 0, &mut self.diags);
        let base = match b.get("base") {
            None => Some(SINUSOIDAL_BASE),
            Some(e) => {
                let v = self.ev().number_of(e, "the rotary base")?;
                if v.is_finite() && v > 1.0 {
                    Some(v)
                } else {
                    self.diags.push(
                        err("the rotary base must be above 1", e.span, "not above 1").with_hint(
                            "RoPE uses 10000; long-context models use larger bases such as 500000",
                        ),
                    );
                    None
                }
            }
        };
        let pairs = match b.get("pairs") {
            None => Some(RopePairs::Half),
            Some(e) => self
                .ev()
                .keyword(e, "rotary pairing", &["half", "interleaved"])
                .map(|k| match k.as_str() {
                    "interleaved" => RopePairs::Interleaved,
                    _ => RopePairs::Half,
                }),
        };
        Some(Positions::Rope {
            base: base?,
            pairs: pairs?,
        })
    }

    // ------------------------------------------------------------ norms and skips

    fn norm_spec(&mut self, n: &NormSpec) -> Option<NormSettings> {
        let mut s = NormSettings::default();
        let mut ok = true;
        let mut placement_span: Option<Span> = None;
        let mut kind_span: Option<Span> = None;
        for part in &n.parts {
            let name = part.name.name.as_str();
            if PLACEMENTS.contains(&name) {
                if let Some(first) = placement_span {
                    self.diags.push(
                        err("two norm placements", part.span, "second placement")
                            .with_note(first, "first placement")
                            .with_hint("a norm has one placement: pre, post, peri or none"),
                    );
                    ok = false;
                    continue;
                }
                placement_span = Some(part.span);
                if let Some(args) = &part.args {
                    let span = args.first().map(|a| a.span).unwrap_or(part.span);
                    self.diags.push(
                        err(format!("the placement `{name}` takes no arguments"), span, "unexpected")
                            .with_hint("arguments such as eps go on the kind: `norm pre layernorm(eps = 1e-5)`"),
                    );
                    ok = false;
                }
                s.placement = Some(match name {
                    "pre" => Placement::Pre,
                    "post" => Placement::Post,
                    "peri" => Placement::Peri,
                    _ => Placement::None,
                });
            } else if KINDS.contains(&name) {
                if let Some(first) = kind_span {
                    self.diags.push(
                        err("two norm kinds", part.span, "second kind")
                            .with_note(first, "first kind")
                            .with_hint("a norm has one kind: layernorm or rmsnorm"),
                    );
                    ok = false;
                    continue;
                }
                kind_span = Some(part.span);
                s.kind = Some(if name == "layernorm" {
                    NormKind::LayerNorm
                } else {
                    NormKind::RmsNorm
                });
                let b = Bound::bind(part, format!("`{name}`"), &["eps"], 1, &mut self.diags);
                if let Some(e) = b.get("eps") {
                    match self.eps(e) {
                        Some(v) => s.eps = Some(v),
                        None => ok = false,
                    }
                }
            } else {
                let mut all: Vec<&str> = PLACEMENTS.to_vec();
                all.extend_from_slice(KINDS);
                let d = err(
                    format!("unknown norm setting `{name}`"),
                    part.name.span,
                    "expected a placement (pre, post, peri, none) or a kind (layernorm, rmsnorm)",
                );
                self.diags.push(match closest(name, all.iter().copied()) {
                    Some(c) => d.with_hint(format!("did you mean `{c}`?")),
                    None => d,
                });
                ok = false;
            }
        }
        ok.then_some(s)
    }

    fn eps(&mut self, e: &Expr) -> Option<f64> {
        let v = self.ev().number_of(e, "a positive number")?;
        if v <= 0.0 {
            self.diags.push(
                err(
                    format!("eps must be positive, found {v}"),
                    e.span,
                    "expected a small positive number",
                )
                .with_hint("PyTorch's default is 1e-5"),
            );
            return None;
        }
        Some(v)
    }

    fn skip(&mut self, c: &Call) -> Option<Skip> {
        let name = c.name.name.as_str();
        match name {
            "residual" | "none" => {
                Bound::bind(c, format!("`skip {name}`"), &[], 0, &mut self.diags);
                Some(if name == "residual" {
                    Skip::Residual
                } else {
                    Skip::None
                })
            }
            "scaled" => {
                let b = Bound::bind(c, "`skip scaled`", &["scale", "init"], 1, &mut self.diags);
                let e = b.require(
                    "scale",
                    "skip scaled(0.5)` or `skip scaled(learned)",
                    &mut self.diags,
                )?;
                let learned = matches!(&e.kind, ExprKind::Name(n) if n == "learned" && self.consts.def_span(n).is_none());
                if learned {
                    let init = match b.get("init") {
                        Some(ie) => self.ev().number_of(ie, "a number")?,
                        None => 1.0,
                    };
                    Some(Skip::Learned(init))
                } else {
                    if let Some(ie) = b.get("init") {
                        self.diags.push(
                            err(
                                "`init` only applies to a learned scale",
                                ie.span,
                                "not used by a fixed scale",
                            )
                            .with_hint("write `skip scaled(learned, init = ...)`, or drop `init`"),
                        );
                        return None;
                    }
                    let v = self.ev().eval(e)?;
                    match v {
                        Value::Int(i) => Some(Skip::Scaled(i as f64)),
                        Value::Float(f) => Some(Skip::Scaled(f)),
                        Value::Word(w, span) => {
                            let d = err(
                                format!("unknown skip scale `{w}`"),
                                span,
                                "expected a number or `learned`",
                            );
                            let names: Vec<&str> = vec!["learned"];
                            let d = match closest(&w, names.iter().copied()) {
                                Some(c) => d.with_hint(format!("did you mean `{c}`?")),
                                None => d.with_hint(
                                    "write a number such as `scaled(0.5)` or `scaled(learned)`",
                                ),
                            };
                            self.diags.push(d);
                            None
                        }
                        other => {
                            self.diags.push(err(
                                format!("expected a number or `learned`, found `{other}`"),
                                e.span,
                                "expected a number or `learned`",
                            ));
                            None
                        }
                    }
                }
            }
            "hourglass" => {
                let b = Bound::bind(
                    c,
                    "`skip hourglass`",
                    &["width", "lift"],
                    1,
                    &mut self.diags,
                );
                let we = b.require(
                    "width",
                    "skip hourglass(width = 256, lift = frozen)",
                    &mut self.diags,
                )?;
                let width = self.ev().size(we, "width");
                let trainable = match b.get("lift") {
                    None => Some(false),
                    Some(le) => self
                        .ev()
                        .keyword(le, "lift mode", &["frozen", "trainable"])
                        .map(|k| k == "trainable"),
                };
                Some(Skip::Hourglass {
                    width: width?,
                    trainable: trainable?,
                    span: we.span,
                })
            }
            other => {
                self.diags.push(
                    err(
                        format!("unknown skip `{other}`"),
                        c.name.span,
                        "expected residual, none, scaled or hourglass",
                    )
                    .with_hint(suggest(other, SKIPS, "the skips are")),
                );
                None
            }
        }
    }

    // ------------------------------------------------------------ blocks

    /// One block's units; `None` when anything in the block is wrong (all of it reported).
    fn block(
        &mut self,
        b: &Block,
        model_norm: NormSettings,
        model_skip: Skip,
    ) -> Option<BlockPlan> {
        let before = self.diags.len();
        self.check_settings_come_first(b);
        let items = self.block_items(b);
        if items.subs.is_empty() {
            self.diags.push(
                err(
                    format!("block `{}` has no sublayers", b.name.name),
                    b.name.span,
                    "empty block",
                )
                .with_hint("add one, e.g. `ffn = ffn(hidden = 512)`"),
            );
            return None;
        }
        let (steps, parallel) = self.scheme_steps(b, &items);
        if let Some(steps) = &steps {
            self.check_every_sublayer_used(&items, steps);
        }
        if self.diags.len() > before {
            return None;
        }
        let steps = steps?;

        let block_norm = items
            .norm
            .map(|(s, _)| s)
            .unwrap_or_default()
            .over(model_norm);
        let block_skip = items.skip.map(|(s, _)| s).unwrap_or(model_skip);
        let branches = number_branches(&items.subs, &steps, block_norm)?;
        let units = if parallel {
            vec![self.parallel_unit(&items.subs, branches, block_norm, block_skip)?]
        } else {
            sequential_units(&items.subs, branches, block_skip)?
        };
        if self.too_many_steps(b, &units) {
            return None;
        }
        Some(BlockPlan {
            name: b.name.name.clone(),
            units,
        })
    }

    /// A block's `norm`/`skip` comes before its sublayers: written after one (on its own
    /// line) it reads as that sublayer's clause but would apply to the whole block.
    fn check_settings_come_first(&mut self, b: &Block) {
        let mut last_sublayer: Option<&Ident> = None;
        for item in &b.items {
            match (item, last_sublayer) {
                (BlockItem::Norm(NormSpec { span, .. }), Some(sl))
                | (BlockItem::Skip(Call { span, .. }), Some(sl)) => {
                    let what = if matches!(item, BlockItem::Norm(_)) {
                        "norm"
                    } else {
                        "skip"
                    };
                    self.diags.push(
                        err(
                            format!("a block's `{what}` must come before its sublayers"),
                            *span,
                            "after sublayer definitions",
                        )
                        .with_note(sl.span, "a sublayer is defined above")
                        .with_hint(format!(
                            "to set it for `{}` alone, write it on the same line: `{} = ... {what} ...`; for the whole block, move it to the top of the block",
                            sl.name, sl.name
                        )),
                    );
                }
                (BlockItem::Sublayer(sl), _) => last_sublayer = Some(&sl.name),
                _ => {}
            }
        }
    }

    /// The block's statements by kind; a second `norm`, `skip`, scheme or same-named
    /// sublayer is reported and left out.
    fn block_items<'b>(&mut self, b: &'b Block) -> BlockItems<'b> {
        let mut items = BlockItems {
            norm: None,
            skip: None,
            scheme: None,
            scheme_span: Span::default(),
            subs: Vec::new(),
        };
        let block = &b.name.name;
        for item in &b.items {
            match item {
                BlockItem::Norm(n) => {
                    if let Some((_, first)) = items.norm {
                        self.diags.push(
                            err(
                                format!("block `{block}` has two `norm` statements"),
                                n.span,
                                "second one",
                            )
                            .with_note(first, "first one here"),
                        );
                        continue;
                    }
                    let s = self.norm_spec(n).unwrap_or_default();
                    items.norm = Some((s, n.span));
                }
                BlockItem::Skip(c) => {
                    if let Some((_, first)) = items.skip {
                        self.diags.push(
                            err(
                                format!("block `{block}` has two `skip` statements"),
                                c.span,
                                "second one",
                            )
                            .with_note(first, "first one here"),
                        );
                        continue;
                    }
                    if let Some(s) = self.skip(c) {
                        items.skip = Some((s, c.span));
                    }
                }
                BlockItem::Scheme(s) => {
                    let span = match s {
                        Scheme::Named(c) => c.span,
                        Scheme::Steps { span, .. } => *span,
                    };
                    if items.scheme.is_some() {
                        self.diags.push(
                            err(
                                format!("block `{block}` has two schemes"),
                                span,
                                "second scheme",
                            )
                            .with_note(items.scheme_span, "first scheme here"),
                        );
                        continue;
                    }
                    items.scheme = Some(s);
                    items.scheme_span = span;
                }
                BlockItem::Sublayer(sl) => {
                    if let Some(first) = items.subs.iter().find(|f| f.name.name == sl.name.name) {
                        self.diags.push(
                            err(
                                format!(
                                    "sublayer `{}` is defined twice in block `{block}`",
                                    sl.name.name
                                ),
                                sl.name.span,
                                "second definition",
                            )
                            .with_note(first.name.span, "first defined here")
                            .with_hint(
                                "give each sublayer its own name; use the scheme to run one twice",
                            ),
                        );
                        continue;
                    }
                    let def = self.sublayer_def(sl);
                    items.subs.push(def);
                }
            }
        }
        items
    }

    /// A sublayer line: its kind and arguments, and its own `norm` and `skip` clauses.
    fn sublayer_def<'b>(&mut self, sl: &'b Sublayer) -> SublayerDef<'b> {
        // `dropout` is an argument of every kind: read it here, bind the rest per kind.
        let mut call = sl.call.clone();
        let rate = call.args.as_mut().and_then(|args| {
            let i = args
                .iter()
                .position(|a| a.key.as_ref().is_some_and(|k| k.name == "dropout"))?;
            Some(args.remove(i).value)
        });
        let dropout = match &rate {
            None => Some(0.0),
            Some(e) => super::width::rate(e, "dropout", &mut self.ev()),
        };
        let sub = self.sublayer(&call);
        let norm = sl
            .norm
            .as_ref()
            .map(|n| self.norm_spec(n).unwrap_or_default());
        let skip = sl.skip.as_ref().map(|c| self.skip(c));
        SublayerDef {
            name: &sl.name,
            sub,
            norm,
            norm_span: sl.norm.as_ref().map(|n| n.span),
            skip,
            skip_span: sl.skip.as_ref().map(|c| c.span),
            dropout,
            span: sl.call.span,
        }
    }

    /// The scheme as steps over the block's sublayers (`None` when it is wrong), and
    /// whether it runs them in parallel. Without a scheme the sublayers run in order.
    fn scheme_steps(&mut self, b: &Block, items: &BlockItems) -> (Option<Vec<SchemeStep>>, bool) {
        let names: Vec<&str> = items.subs.iter().map(|s| s.name.name.as_str()).collect();
        match items.scheme {
            None => {
                let steps = (0..names.len())
                    .map(|sublayer| SchemeStep {
                        sublayer,
                        coef: 1.0,
                    })
                    .collect();
                (Some(steps), false)
            }
            Some(Scheme::Steps { steps, span }) => (self.step_list(b, steps, *span, &names), false),
            Some(Scheme::Named(c)) => {
                let kind = c.name.name.as_str();
                if SCHEMES.contains(&kind) {
                    (self.named_scheme(b, c, &names), kind == "parallel")
                } else {
                    self.diags.push(
                        err(
                            format!("unknown scheme `{kind}`"),
                            c.name.span,
                            "expected lie_trotter, strang, parallel or a list",
                        )
                        .with_hint(suggest(
                            kind,
                            SCHEMES,
                            "the schemes are",
                        )),
                    );
                    (None, false)
                }
            }
        }
    }

    /// `scheme [ffn * 0.5, attn, ffn * 0.5]`
    fn step_list(
        &mut self,
        b: &Block,
        steps: &[Step],
        span: Span,
        names: &[&str],
    ) -> Option<Vec<SchemeStep>> {
        if steps.is_empty() {
            self.diags.push(
                err("the scheme has no steps", span, "empty list").with_hint(format!(
                    "list the sublayers to run, e.g. `scheme [{}]`",
                    names.join(", ")
                )),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for st in steps {
            let idx = self.sublayer_ref(&st.sublayer.name, st.sublayer.span, names, &b.name.name);
            let coef = match &st.coef {
                Some(e) => self.coef(e),
                None => Some(1.0),
            };
            match (idx, coef) {
                (Some(sublayer), Some(coef)) => out.push(SchemeStep { sublayer, coef }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `scheme lie_trotter(attn, ffn, h = 0.5)`, `strang(...)` or `parallel(...)`; with no
    /// sublayer names, all of them in definition order.
    fn named_scheme(&mut self, b: &Block, c: &Call, names: &[&str]) -> Option<Vec<SchemeStep>> {
        let (mut order, h) = self.named_scheme_args(b, c, names)?;
        if order.is_empty() {
            order = (0..names.len()).collect();
        }
        let step = |sublayer: usize, coef: f64| SchemeStep { sublayer, coef };
        if c.name.name == "strang" {
            // A*h/2, B*h/2, ..., Z*h, ..., B*h/2, A*h/2
            let n = order.len();
            let mut out = Vec::new();
            for (j, &i) in order.iter().enumerate() {
                out.push(step(i, if j + 1 == n { h } else { h / 2.0 }));
            }
            for &i in order[..n - 1].iter().rev() {
                out.push(step(i, h / 2.0));
            }
            Some(out)
        } else {
            Some(order.into_iter().map(|i| step(i, h)).collect())
        }
    }

    /// The sublayer order and step size `h` (default 1) of a named scheme.
    fn named_scheme_args(
        &mut self,
        b: &Block,
        c: &Call,
        names: &[&str],
    ) -> Option<(Vec<usize>, f64)> {
        let kind = c.name.name.as_str();
        let mut order = Vec::new();
        let mut h = 1.0;
        let mut ok = true;
        let mut h_span: Option<Span> = None;
        for a in c.args.iter().flatten() {
            match &a.key {
                None => {
                    match &a.value.kind {
                        ExprKind::Name(n) => {
                            match self.sublayer_ref(n, a.value.span, names, &b.name.name) {
                                Some(i) => order.push(i),
                                None => ok = false,
                            }
                        }
                        _ => {
                            self.diags.push(
                            err(format!("`{kind}` takes sublayer names"), a.value.span, "expected a sublayer name")
                                .with_hint(format!("the sublayers of `{}` are {}; write `h = ...` for the step size", b.name.name, list(names))),
                        );
                            ok = false;
                        }
                    }
                }
                Some(k) if k.name == "h" => {
                    if let Some(first) = h_span {
                        self.diags.push(
                            err("argument `h` is given twice", a.span, "second value")
                                .with_note(first, "first given here"),
                        );
                        ok = false;
                        continue;
                    }
                    h_span = Some(a.span);
                    match self.coef(&a.value) {
                        Some(v) => h = v,
                        None => ok = false,
                    }
                }
                Some(k) => {
                    self.diags.push(
                        err(
                            format!("unknown argument `{}` for `{kind}`", k.name),
                            k.span,
                            "unknown argument",
                        )
                        .with_hint(format!(
                            "`{kind}` takes sublayer names and the step size `h`"
                        )),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some((order, h))
    }

    /// Every defined sublayer must be used.
    fn check_every_sublayer_used(&mut self, items: &BlockItems, steps: &[SchemeStep]) {
        for (i, s) in items.subs.iter().enumerate() {
            if !steps.iter().any(|st| st.sublayer == i) {
                self.diags.push(
                    err(
                        format!("sublayer `{}` is never used", s.name.name),
                        s.name.span,
                        "defined but not in the scheme",
                    )
                    .with_note(items.scheme_span, "the scheme")
                    .with_hint("add it to the scheme or remove it"),
                );
            }
        }
    }

    /// A parallel scheme's single unit: every branch shares the block's placement and skip.
    fn parallel_unit(
        &mut self,
        subs: &[SublayerDef],
        branches: Vec<ScheduledBranch>,
        block_norm: NormSettings,
        block_skip: Skip,
    ) -> Option<Unit> {
        let mut ok = true;
        for s in subs {
            if let Some(sp) = s.skip_span {
                self.diags.push(
                    err(format!("sublayer `{}` runs in a parallel scheme, so it cannot have its own skip", s.name.name), sp, "the block's skip applies")
                        .with_hint("move the `skip` to the block"),
                );
                ok = false;
            }
            if let (Some(n), Some(sp)) = (s.norm, s.norm_span) {
                if n.placement.is_some() {
                    self.diags.push(
                        err(format!("sublayer `{}` runs in a parallel scheme, so it cannot have its own norm placement", s.name.name), sp, "the block's placement applies")
                            .with_hint("move the placement to the block's `norm`; a kind or eps here sets the branch's output norm under peri"),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        let coef = branches.first().map(|b| b.coef).unwrap_or(1.0);
        Some(Unit {
            name: None,
            coef,
            norm: block_norm.finish(),
            skip: block_skip,
            branches: branches.into_iter().map(|b| b.branch).collect(),
        })
    }

    /// Whether the block runs more sublayer steps than one block may (reported).
    fn too_many_steps(&mut self, b: &Block, units: &[Unit]) -> bool {
        let steps: usize = units.iter().map(|u| u.branches.len()).sum();
        if steps <= MAX_STEPS_PER_BLOCK {
            return false;
        }
        self.diags.push(
            err(
                format!(
                    "block `{}` runs {steps} sublayer steps; the limit is {MAX_STEPS_PER_BLOCK}",
                    b.name.name
                ),
                b.name.span,
                "this block is too long",
            )
            .with_hint("split it into several blocks and stack them"),
        );
        true
    }

    fn sublayer_ref(
        &mut self,
        name: &str,
        span: Span,
        names: &[&str],
        block: &str,
    ) -> Option<usize> {
        match names.iter().position(|n| *n == name) {
            Some(i) => Some(i),
            None => {
                self.diags.push(
                    err(
                        format!("block `{block}` has no sublayer `{name}`"),
                        span,
                        "unknown sublayer",
                    )
                    .with_hint(suggest(
                        name,
                        names,
                        &format!("the sublayers of `{block}` are"),
                    )),
                );
                None
            }
        }
    }

    fn coef(&mut self, e: &Expr) -> Option<f64> {
        let v = self.ev().number_of(e, "a number")?;
        if !v.is_finite() {
            self.diags.push(err(
                "the coefficient is not a finite number",
                e.span,
                "not finite",
            ));
            return None;
        }
        Some(v)
    }

    fn sublayer(&mut self, c: &Call) -> Option<Sub> {
        let kind = c.name.name.as_str();
        match kind {
            "attention" => {
                let b = Bound::bind(
                    c,
                    "attention",
                    &[
                        "heads",
                        "kv_heads",
                        "causal",
                        "bias",
                        "qk_norm",
                        "attn_dropout",
                    ],
                    1,
                    &mut self.diags,
                );
                let he = b.require("heads", "attention(heads = 4)", &mut self.diags);
                let heads = he.and_then(|e| self.ev().size(e, "heads"));
                let kv_heads = match (b.get("kv_heads"), heads) {
                    (None, h) => h,
                    (Some(e), h) => self.kv_heads(e, h),
                };
                let causal = self.causal(b.get("causal"));
                let bias = self.opt_bool(b.get("bias"), "bias", true);
                let qk_norm = self.opt_bool(b.get("qk_norm"), "qk_norm", false);
                let attn_dropout = match b.get("attn_dropout") {
                    None => Some(0.0),
                    Some(e) => super::width::rate(e, "attn_dropout", &mut self.ev()),
                };
                Some(Sub::Attention {
                    attn_dropout: attn_dropout?,
                    heads: heads?,
                    kv_heads: kv_heads?,
                    causal: causal?,
                    bias: bias?,
                    qk_norm: qk_norm?,
                    heads_span: he?.span,
                })
            }
            "ffn" => {
                let b = Bound::bind(
                    c,
                    "ffn",
                    &["hidden", "act", "glu", "bias", "nested"],
                    1,
                    &mut self.diags,
                );
                let hidden = b
                    .require("hidden", "ffn(hidden = 512)", &mut self.diags)
                    .and_then(|e| self.ev().size(e, "hidden"));
                let act = super::width::activation(b.get("act"), &mut self.ev());
                let glu = self.opt_bool(b.get("glu"), "glu", false);
                let bias = self.opt_bool(b.get("bias"), "bias", true);
                let nested = match (b.get("nested"), hidden) {
                    (None, _) => Some(Nested::default()),
                    (Some(e), Some(h)) => super::width::nested(e, h, &mut self.ev()),
                    (Some(_), None) => None,
                };
                Some(Sub::Ffn {
                    hidden: hidden?,
                    act: act?,
                    glu: glu?,
                    bias: bias?,
                    nested: nested?,
                })
            }
            "moe" => super::width::moe(c, &mut self.ev()),
            "linear" => {
                let b = Bound::bind(c, "linear", &["bias"], 0, &mut self.diags);
                let bias = self.opt_bool(b.get("bias"), "bias", true);
                Some(Sub::Linear { bias: bias? })
            }
            other => {
                self.diags.push(
                    err(
                        format!("unknown sublayer kind `{other}`"),
                        c.name.span,
                        "expected attention, ffn, moe or linear",
                    )
                    .with_hint(suggest(
                        other,
                        SUBLAYERS,
                        "the sublayer kinds are",
                    )),
                );
                None
            }
        }
    }

    /// `kv_heads`: at least 1 and dividing `heads` (each key/value head serves a group).
    fn kv_heads(&mut self, e: &Expr, heads: Option<usize>) -> Option<usize> {
        let kv = self.ev().size(e, "kv_heads")?;
        let heads = heads?;
        if kv == 0 || !heads.is_multiple_of(kv) {
            let divisors: Vec<String> = (1..=heads)
                .filter(|k| heads.is_multiple_of(*k))
                .map(|k| k.to_string())
                .collect();
            self.diags.push(
                err(
                    format!("`kv_heads = {kv}` does not divide `heads = {heads}`"),
                    e.span,
                    "each key/value head serves an equal group of query heads",
                )
                .with_hint(format!(
                    "kv_heads that divide {heads}: {} (1 is multi-query attention, {heads} is plain multi-head)",
                    divisors.join(", ")
                )),
            );
            return None;
        }
        Some(kv)
    }

    /// `causal`: true by default over tokens; an image model's attention sees every
    /// patch, and asking it to be causal is an error.
    fn causal(&mut self, e: Option<&Expr>) -> Option<bool> {
        let causal = self.opt_bool(e, "causal", !self.image)?;
        match (causal && self.image, e) {
            (true, Some(e)) => {
                self.diags.push(
                    err(
                        "causal attention over image patches: a patch would see only the patches above it and to its left",
                        e.span,
                        "not for an image model",
                    )
                    .with_hint("remove `causal = true`: attention in an image model sees every patch"),
                );
                None
            }
            (true, None) | (false, _) => Some(causal),
        }
    }

    fn opt_bool(&mut self, e: Option<&Expr>, what: &str, default: bool) -> Option<bool> {
        match e {
            None => Some(default),
            Some(e) => self.ev().boolean(e, what),
        }
    }

    // ------------------------------------------------------------ depth

    /// The (block index, weight set) sequence of one `stack` statement.
    fn stack(
        &mut self,
        s: &Stack,
        blocks: &[&Block],
        plans: &[Option<BlockPlan>],
        next_weights: &mut usize,
    ) -> Option<(Vec<StackLayer>, depth::Clauses)> {
        let block = match blocks.iter().position(|b| b.name.name == s.block.name) {
            Some(i) => Some(i),
            None => {
                let names: Vec<&str> = blocks.iter().map(|b| b.name.name.as_str()).collect();
                self.diags.push(
                    err(
                        format!("unknown block `{}`", s.block.name),
                        s.block.span,
                        "no block has this name",
                    )
                    .with_hint(suggest(
                        &s.block.name,
                        &names,
                        "the blocks are",
                    )),
                );
                None
            }
        };
        let n = self.ev().size(&s.count, "the layer count");
        let n = match n {
            Some(n) if n > MAX_LAYERS => {
                self.diags.push(
                    err(
                        format!(
                            "`stack {} * {n}` asks for {n} layers; the limit is {MAX_LAYERS}",
                            s.block.name
                        ),
                        s.count.span,
                        format!("at most {MAX_LAYERS}"),
                    )
                    .with_hint(format!(
                        "a model executes at most {MAX_LAYERS} layers in total"
                    )),
                );
                None
            }
            n => n,
        };
        if let (Some(sh), Some(o)) = (s.shared, &s.order) {
            self.diags.push(
                err("`shared` and `order` cannot be combined", o.span, "an order over shared weights")
                    .with_note(sh, "`shared` here")
                    .with_hint("with `shared` every layer has the same weights, so order has no effect; drop one"),
            );
            return None;
        }
        let order = match (&s.order, n) {
            (Some(o), Some(n)) => Some(self.order(o, n)?),
            _ => None,
        };
        let clauses = depth::clauses(s, n, &mut self.ev());
        let (block, n, clauses) = (block?, n?, clauses?);
        plans[block].as_ref()?;
        let base = *next_weights;
        let seq: Vec<StackLayer> = match order {
            Some(order) => {
                *next_weights += n;
                let len = order.len();
                order
                    .into_iter()
                    .enumerate()
                    .map(|(k, i)| (block, base + i, clauses.layer(k, len)))
                    .collect()
            }
            None => {
                *next_weights += clauses.weights(s.shared.is_some(), 0, n).1;
                (0..n)
                    .map(|i| {
                        let w = clauses.weights(s.shared.is_some(), i, n).0;
                        (block, base + w, clauses.layer(i, n))
                    })
                    .collect()
            }
        };
        Some((seq, clauses))
    }

    fn order(&mut self, o: &Expr, n: usize) -> Option<Vec<usize>> {
        let v = self.ev().eval(o)?;
        let Value::List(items) = v else {
            self.diags.push(
                err(
                    format!("`order` needs a list of layer indices, found `{v}`"),
                    o.span,
                    "expected a list",
                )
                .with_hint("for example `order [0, 1, 1, 2]`"),
            );
            return None;
        };
        if items.is_empty() {
            self.diags.push(err(
                "`order` is empty, so no layer would run",
                o.span,
                "empty list",
            ));
            return None;
        }
        if items.len() > MAX_LAYERS {
            self.diags.push(err(
                format!(
                    "`order` lists {} layers; the limit is {MAX_LAYERS}",
                    items.len()
                ),
                o.span,
                "too long",
            ));
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (val, span) in &items {
            let Some(i) = self.ev().int_value(val, *span, "a layer index") else {
                ok = false;
                continue;
            };
            if i < 0 || i as u64 >= n as u64 {
                self.diags.push(
                    err(
                        format!("layer index {i} is out of range"),
                        *span,
                        format!("expected 0 to {}", n - 1),
                    )
                    .with_hint(format!(
                        "this stack has {n} layers, numbered 0 to {}",
                        n - 1
                    )),
                );
                ok = false;
                continue;
            }
            out.push(i as usize);
        }
        ok.then_some(out)
    }

    // ------------------------------------------------------------ final norm, head, loss

    fn final_norm(&mut self, c: &Call) -> Option<Option<(NormKind, f64)>> {
        let name = c.name.name.as_str();
        match name {
            "none" => {
                Bound::bind(c, "`final_norm none`", &[], 0, &mut self.diags);
                Some(None)
            }
            "layernorm" | "rmsnorm" => {
                let b = Bound::bind(c, format!("`{name}`"), &["eps"], 1, &mut self.diags);
                let eps = match b.get("eps") {
                    Some(e) => self.eps(e)?,
                    None => DEFAULT_NORM.eps,
                };
                let kind = if name == "layernorm" {
                    NormKind::LayerNorm
                } else {
                    NormKind::RmsNorm
                };
                Some(Some((kind, eps)))
            }
            other => {
                self.diags.push(
                    err(
                        format!("unknown final norm `{other}`"),
                        c.name.span,
                        "expected layernorm, rmsnorm or none",
                    )
                    .with_hint(suggest(
                        other,
                        &["layernorm", "rmsnorm", "none"],
                        "the choices are",
                    )),
                );
                None
            }
        }
    }

    fn head_loss(
        &mut self,
        inp: InputPlan,
        head: Option<&Call>,
        loss: Option<&Call>,
        input_span: Span,
    ) -> Option<(Head, Loss)> {
        let tokens = matches!(inp, InputPlan::Tokens { .. });
        let kind = match inp {
            InputPlan::Tokens { .. } | InputPlan::Features { .. } => "features",
            InputPlan::Image { .. } => "image",
        };
        let h = match head {
            None if tokens => Some(Head::Lm { tied: false }),
            None => {
                self.diags.push(
                    err(
                        format!(
                            "a{} {kind} model needs a `head`",
                            if kind == "image" { "n" } else { "" }
                        ),
                        input_span,
                        format!("{kind} input"),
                    )
                    .with_hint("add `head classifier(classes = 10)` or `head linear(out = 1)`"),
                );
                None
            }
            Some(c) => match c.name.name.as_str() {
                "lm" => self.lm_head(c, tokens, kind, input_span),
                "classifier" => self.classifier(c, inp),
                "linear" => {
                    let b = Bound::bind(c, "the linear head", &["out"], 1, &mut self.diags);
                    let e = b.require("out", "linear(out = 1)", &mut self.diags)?;
                    self.ev().size(e, "out").map(|out| Head::Linear { out })
                }
                other => {
                    self.diags.push(
                        err(
                            format!("unknown head `{other}`"),
                            c.name.span,
                            "expected lm, classifier or linear",
                        )
                        .with_hint(suggest(other, HEADS, "the heads are")),
                    );
                    None
                }
            },
        };
        let l = self.loss(h, head, loss, input_span);
        Some((h?, l?))
    }

    /// `head classifier(classes = C, pool = mean | cls)`; `cls` needs an image input.
    fn classifier(&mut self, c: &Call, inp: InputPlan) -> Option<Head> {
        let b = Bound::bind(
            c,
            "the classifier head",
            &["classes", "pool"],
            1,
            &mut self.diags,
        );
        let classes = b
            .require("classes", "classifier(classes = 10)", &mut self.diags)
            .and_then(|e| self.ev().size(e, "classes"));
        let pool = match b.get("pool") {
            None => Some(Pool::Mean),
            Some(e) => match self.ev().keyword(e, "pooling", &["mean", "cls"])?.as_str() {
                "cls" => match inp {
                    InputPlan::Image { .. } => Some(Pool::Cls),
                    InputPlan::Tokens { .. } | InputPlan::Features { .. } => {
                        self.diags.push(
                            err(
                                "a class token is prepended to the patches of an image, and this model's input is not an image",
                                e.span,
                                "needs `input image(...)`",
                            )
                            .with_hint("use `pool = mean` (the default)"),
                        );
                        None
                    }
                },
                _ => Some(Pool::Mean),
            },
        };
        Some(Head::Classifier {
            classes: classes?,
            pool: pool?,
        })
    }

    /// `head lm` or `head lm(tied = true)`: only for a token input.
    fn lm_head(&mut self, c: &Call, tokens: bool, kind: &str, input_span: Span) -> Option<Head> {
        let b = Bound::bind(c, "the lm head", &["tied"], 0, &mut self.diags);
        let tied = self.opt_bool(b.get("tied"), "tied", false);
        match tied {
            Some(true) if !tokens => {
                self.diags.push(
                    err(
                        "a tied head needs a token embedding to tie to",
                        c.span,
                        "no token embedding",
                    )
                    .with_note(input_span, format!("this model's input is `{kind}`"))
                    .with_hint("use `head classifier(classes = ...)` or `head linear(out = ...)`"),
                );
                None
            }
            Some(_) if !tokens => {
                self.diags.push(
                    err(
                        format!("an lm head predicts tokens, and this model's input is `{kind}`"),
                        c.span,
                        "needs `input tokens(...)`",
                    )
                    .with_note(input_span, format!("{kind} input"))
                    .with_hint("use `head classifier(classes = ...)` or `head linear(out = ...)`"),
                );
                None
            }
            Some(t) => Some(Head::Lm { tied: t }),
            None => None,
        }
    }

    /// The loss, as written or the head's default, and whether it fits the head.
    fn loss(
        &mut self,
        h: Option<Head>,
        head: Option<&Call>,
        loss: Option<&Call>,
        input_span: Span,
    ) -> Option<Loss> {
        match loss {
            None => h.map(|h| {
                if matches!(h, Head::Linear { .. }) {
                    Loss::Mse
                } else {
                    Loss::CrossEntropy
                }
            }),
            Some(c) => match c.name.name.as_str() {
                n @ ("cross_entropy" | "mse") => {
                    Bound::bind(c, format!("`loss {n}`"), &[], 0, &mut self.diags);
                    let l = if n == "mse" {
                        Loss::Mse
                    } else {
                        Loss::CrossEntropy
                    };
                    match (h, l) {
                        (Some(Head::Linear { .. }), Loss::CrossEntropy) => {
                            let mut d = err("cross_entropy needs class scores, but a linear head regresses values", c.span, "incompatible with the head")
                                .with_hint("use `loss mse`, or `head classifier(classes = ...)`");
                            if let Some(hc) = head {
                                d = d.with_note(hc.span, "the head");
                            }
                            self.diags.push(d);
                            None
                        }
                        (Some(Head::Lm { .. } | Head::Classifier { .. }), Loss::Mse) => {
                            let mut d = err("mse needs a `linear` head", c.span, "incompatible with the head")
                                .with_hint("use `loss cross_entropy`, or `head linear(out = ...)` for regression");
                            if let Some(hc) = head {
                                d = d.with_note(hc.span, "the head");
                            } else {
                                d = d.with_note(
                                    input_span,
                                    "the default head is `lm` for a token input",
                                );
                            }
                            self.diags.push(d);
                            None
                        }
                        _ => Some(l),
                    }
                }
                other => {
                    self.diags.push(
                        err(
                            format!("unknown loss `{other}`"),
                            c.name.span,
                            "expected cross_entropy or mse",
                        )
                        .with_hint(suggest(
                            other,
                            LOSSES,
                            "the losses are",
                        )),
                    );
                    None
                }
            },
        }
    }

    // ------------------------------------------------------------ shapes and limits

    fn check_sizes(
        &mut self,
        p: &Shapes,
        blocks: &[&BlockPlan],
        d_span: Span,
        head_span: Option<Span>,
        input_span: Span,
    ) {
        let d = p.d;
        let t = seq_len(p.input, p.head);
        let b = match p.input {
            InputPlan::Tokens { batch, .. }
            | InputPlan::Features { batch, .. }
            | InputPlan::Image { batch, .. } => batch,
        };
        // Activation shape prefix: [B, T] or [B].
        let act = |w: usize| -> Vec<usize> {
            match t {
                Some(t) => vec![b, t, w],
                None => vec![b, w],
            }
        };
        match p.input {
            InputPlan::Tokens { vocab, length, .. } => {
                self.numel(&[vocab, d], d_span, "the embedding table");
                if p.positions == Positions::Learned {
                    self.numel(&[length, d], d_span, "the position table");
                }
                self.numel(&act(d), d_span, "the residual stream");
                if matches!(p.head, Some(Head::Lm { .. })) {
                    self.numel(&act(vocab), head_span.unwrap_or(input_span), "the logits");
                }
            }
            InputPlan::Features { width, .. } => {
                self.numel(&[b, width], input_span, "the input batch");
                self.numel(&[d, width], d_span, "the embedding weight");
                self.numel(&act(d), d_span, "the residual stream");
            }
            InputPlan::Image {
                channels,
                height,
                width,
                patch,
                ..
            } => {
                if self.numel(&[b, channels, height, width], input_span, "the input batch") {
                    self.numel(
                        &[d, channels, patch, patch],
                        d_span,
                        "the patch embedding weight",
                    );
                    self.numel(&act(d), d_span, "the residual stream");
                }
            }
        }
        let hs = head_span.unwrap_or(input_span);
        match p.head {
            Some(Head::Classifier { classes: k, .. }) | Some(Head::Linear { out: k }) => {
                if self.numel(&[k, d], hs, "the head weight") {
                    self.numel(&[b, k], hs, "the logits");
                }
            }
            Some(Head::Lm { .. }) | None => {}
        }
        for bp in blocks {
            for u in &bp.units {
                let (w, wname, wspan) = match u.skip {
                    Skip::Hourglass { width, span, .. } => {
                        if !self.numel(&[width, d], span, "the hourglass lift") {
                            continue;
                        }
                        (width, "width", span)
                    }
                    _ => (d, "d", d_span),
                };
                self.numel(&act(w), wspan, "the hidden state");
                for br in &u.branches {
                    match br.sub {
                        Sub::Attention {
                            heads, heads_span, ..
                        } => {
                            let Some(t) = t else {
                                self.diags.push(
                                    err("attention needs a sequence, and this model's input is `features`", br.span, "attention on features")
                                        .with_note(input_span, "features input")
                                        .with_hint("use `input tokens(...)`, or ffn and linear sublayers"),
                                );
                                continue;
                            };
                            if w % heads != 0 {
                                self.heads_not_dividing(w, wname, wspan, heads, heads_span);
                                continue;
                            }
                            let dh = w / heads;
                            if matches!(p.positions, Positions::Rope { .. }) && dh % 2 != 0 {
                                self.diags.push(
                                    err(
                                        format!("rotary positions rotate pairs of dimensions, and each of the {heads} heads has {dh}"),
                                        heads_span,
                                        format!("{w} / {heads} = {dh} is odd"),
                                    )
                                    .with_hint("choose heads so that each head has an even number of dimensions"),
                                );
                                continue;
                            }
                            self.numel(&[w, w], br.span, "an attention weight");
                            self.numel(&[b, heads, t, t], br.span, "the attention scores");
                        }
                        Sub::Ffn { hidden, .. } => {
                            self.numel(&[hidden, w], br.span, "an ffn weight");
                            self.numel(&act(hidden), br.span, "the ffn hidden state");
                        }
                        Sub::Linear { .. } => {
                            self.numel(&[w, w], br.span, "the linear weight");
                        }
                        Sub::Moe {
                            experts, hidden, ..
                        } => {
                            let units = experts.saturating_mul(hidden);
                            self.numel(&[units, w], br.span, "the experts' weight");
                            self.numel(&act(units), br.span, "the experts' hidden state");
                        }
                    }
                }
            }
        }
    }

    /// `heads` must divide the attention width `w` (`wname`, set at `wspan`).
    fn heads_not_dividing(
        &mut self,
        w: usize,
        wname: &str,
        wspan: Span,
        heads: usize,
        heads_span: Span,
    ) {
        let divisors: Vec<String> = (1..=w.min(64))
            .filter(|h| w.is_multiple_of(*h))
            .map(|h| h.to_string())
            .collect();
        let below = (w / heads) * heads;
        let above = below + heads;
        let mut hint = format!("heads that divide {w}: {}", divisors.join(", "));
        if below > 0 {
            hint.push_str(&format!(
                "; or a {wname} divisible by {heads}, such as {below} or {above}"
            ));
        } else {
            hint.push_str(&format!(
                "; or a {wname} divisible by {heads}, such as {above}"
            ));
        }
        self.diags.push(
            err(
                format!("{wname} = {w} is not divisible by heads = {heads}"),
                heads_span,
                format!("does not divide {wname} = {w}"),
            )
            .with_note(wspan, format!("{wname} = {w} set here"))
            .with_hint(hint),
        );
    }

    /// Check a tensor's element count against the limit; false (with an error) when over.
    fn numel(&mut self, dims: &[usize], span: Span, what: &str) -> bool {
        let n = dims
            .iter()
            .try_fold(1u64, |acc, &x| acc.checked_mul(x as u64));
        let shape = dims
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match n {
            Some(n) if n <= MAX_ELEMENTS => true,
            _ => {
                let count = n
                    .map(|n| format!("{n} elements"))
                    .unwrap_or_else(|| "more than 2^64 elements".into());
                self.diags.push(
                    err(
                        format!("{what} would be too large: [{shape}] has {count}"),
                        span,
                        "too large",
                    )
                    .with_hint(format!(
                        "a tensor may have at most 2^28 = {MAX_ELEMENTS} elements"
                    )),
                );
                false
            }
        }
    }
}
