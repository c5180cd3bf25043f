//! `lamina sample`: text or token ids from a trained language model.
//!
//! The graph has a fixed `[batch, length]` input, so each new token is one forward pass
//! over the last `length` tokens (right-padded; a causal model's earlier logits do not see
//! the padding) reading the logits at the last real position. A byte-level model (vocab at
//! least 256) generates bytes; with token ids, any vocabulary.

use super::error::{TaskError, TrainError};
use super::exec;
use super::tasks::{self, Head, InputKind, ModelShape};
use crate::ir::Graph;
use crate::tensor::{try_filled, Tensor};
use crate::train::exec::Backend;
use rand::Rng;

/// What the prompt and the generated tokens are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// Bytes (ids 0 to 255) of a byte-level model.
    Bytes,
    /// Token ids of the model's vocabulary.
    Ids,
}

pub struct SampleOptions {
    /// The prompt: bytes or ids. An empty byte prompt starts from a newline; ids need at
    /// least one.
    pub prompt: Vec<u32>,
    /// How many tokens (bytes) to generate.
    pub count: usize,
    pub tokens: Tokens,
    /// 0 picks the most likely token.
    pub temperature: f64,
    pub seed: u64,
    pub backend: Backend,
}

/// Generate `opts.count` tokens after the prompt; returns only the new ones.
pub fn sample(g: &Graph, params: &[Tensor], opts: &SampleOptions) -> Result<Vec<u32>, TrainError> {
    let unfit = |message: String| TrainError::Task {
        model: g.name.clone(),
        error: TaskError::new(None, message),
    };
    let shape = ModelShape::of(g).map_err(|error| TrainError::Task {
        model: g.name.clone(),
        error,
    })?;
    let (InputKind::Tokens { length, vocab }, Head::Lm { .. }) = (&shape.kind, &shape.head) else {
        return Err(unfit(
            "sample needs a token model with an lm head (a language model)".into(),
        ));
    };
    let choices = match opts.tokens {
        Tokens::Bytes if *vocab < 256 => {
            return Err(unfit(format!(
                "sample generates bytes, so the model needs vocab = 256 (it has {vocab}); \
                 give token ids with --prompt-ids or a tokenizer with --tokenizer"
            )))
        }
        Tokens::Bytes => 256,
        Tokens::Ids => *vocab,
    };
    if let Some(id) = opts.prompt.iter().find(|&&id| id as usize >= choices) {
        return Err(TrainError::Option {
            option: "--prompt-ids".into(),
            message: format!("token id {id} is outside the model's vocabulary of {choices}"),
        });
    }
    if opts.prompt.is_empty() && opts.tokens == Tokens::Ids {
        return Err(TrainError::Option {
            option: "--prompt-ids".into(),
            message: "give at least one token id to start from".into(),
        });
    }
    if !(opts.temperature.is_finite() && opts.temperature >= 0.0) {
        return Err(TrainError::Option {
            option: "--temperature".into(),
            message: "must be a non-negative number".into(),
        });
    }
    let mut fwd = g.clone();
    fwd.outputs.retain(|o| o.name == "logits");
    let mut ex = exec::executor(&fwd, opts.backend)?;
    let tok_i = g
        .inputs
        .iter()
        .position(|i| i.name == "tokens")
        .ok_or_else(|| unfit("the model has no tokens input".into()))?;
    let mut ctx: Vec<u32> = opts.prompt.clone();
    if ctx.is_empty() {
        ctx.push(u32::from(b'\n'));
    }
    let mut rng = tasks::rng_for(opts.seed, 6, 0);
    let mut out = Vec::new();
    let b = shape.batch;
    for _ in 0..opts.count {
        let window = &ctx[ctx.len().saturating_sub(*length)..];
        let pos = window.len() - 1;
        let what = || format!("the sampling window [{b}, {length}]");
        let mut toks = try_filled(b * length, 0.0, what)?;
        for (i, &c) in window.iter().enumerate() {
            toks[i] = c as f64;
        }
        let mut toks = Some(toks);
        let inputs = g
            .inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| match toks.take_if(|_| i == tok_i) {
                Some(toks) => Ok(Tensor::i32(inp.ty.shape.clone(), toks)),
                None => Tensor::try_zeros(&inp.ty, || format!("input {}", inp.name)),
            })
            .collect::<Result<Vec<Tensor>, _>>()?;
        let outs = ex.run(&inputs, params)?;
        let logits = &outs
            .iter()
            .find(|(n, _)| n == "logits")
            .ok_or_else(|| TrainError::Internal("the forward graph has no logits".into()))?
            .1;
        let v = *logits.shape.last().unwrap_or(&1);
        let row = &logits.data[pos * v..pos * v + v.min(choices)];
        let next = if opts.temperature == 0.0 {
            let mut best = 0;
            for (i, x) in row.iter().enumerate() {
                if *x > row[best] {
                    best = i;
                }
            }
            best
        } else {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = row
                .iter()
                .map(|x| ((x - max) / opts.temperature).exp())
                .collect();
            let total: f64 = w.iter().sum();
            let mut r = rng.gen::<f64>() * total;
            let mut pick = w.len() - 1;
            for (i, x) in w.iter().enumerate() {
                if r < *x {
                    pick = i;
                    break;
                }
                r -= x;
            }
            pick
        };
        ctx.push(next as u32);
        out.push(next as u32);
    }
    Ok(out)
}
