//! Sublayers that route or nest their width: the mixture of experts `moe(...)`
//! (docs/language.md, "Mixture of experts"), resolved to `Sub::Moe`.

use super::consts::{Bound, Ev};
use super::resolve::{Act, Sub};
use crate::diag::Diagnostic;
use crate::syntax::ast::{Call, Expr};

/// The Switch load-balancing coefficient when `moe` has no `balance`.
pub(crate) const DEFAULT_BALANCE: f64 = 0.01;

pub(crate) const ACTS: &[&str] = &["relu", "gelu", "gelu_tanh", "silu"];

/// `act = gelu`: an activation name (GELU when absent).
pub(crate) fn activation(e: Option<&Expr>, ev: &mut Ev<'_>) -> Option<Act> {
    let Some(e) = e else {
        return Some(Act::Gelu);
    };
    ev.keyword(e, "activation", ACTS).map(|a| match a.as_str() {
        "relu" => Act::Relu,
        "gelu" => Act::Gelu,
        "gelu_tanh" => Act::GeluTanh,
        _ => Act::Silu,
    })
}

fn flag(e: Option<&Expr>, what: &str, default: bool, ev: &mut Ev<'_>) -> Option<bool> {
    match e {
        None => Some(default),
        Some(e) => ev.boolean(e, what),
    }
}

/// `moe(experts = E, top = k, hidden = H, act, glu, bias, balance)`.
pub(crate) fn moe(c: &Call, ev: &mut Ev<'_>) -> Option<Sub> {
    let b = Bound::bind(
        c,
        "moe",
        &["experts", "top", "hidden", "act", "glu", "bias", "balance"],
        0,
        ev.diags,
    );
    let example = "moe(experts = 8, top = 2, hidden = 128)";
    let experts = b
        .require("experts", example, ev.diags)
        .and_then(|e| ev.size(e, "experts"));
    let top_e = b.require("top", example, ev.diags);
    let top = top_e.and_then(|e| ev.size(e, "top"));
    let hidden = b
        .require("hidden", example, ev.diags)
        .and_then(|e| ev.size(e, "hidden"));
    let act = activation(b.get("act"), ev);
    let glu = flag(b.get("glu"), "glu", false, ev);
    let bias = flag(b.get("bias"), "bias", true, ev);
    let balance = match b.get("balance") {
        None => Some(DEFAULT_BALANCE),
        Some(e) => ev.number_of(e, "balance").and_then(|x| {
            if x >= 0.0 && x.is_finite() {
                Some(x)
            } else {
                ev.report(
                    Diagnostic::new(
                        format!("`balance` must be a finite number >= 0, found {x}"),
                        e.span,
                        "out of range",
                    )
                    .with_hint("0 turns the load-balancing loss off; Switch uses 0.01"),
                );
                None
            }
        }),
    };
    if let (Some(t), Some(n), Some(span)) = (top, experts, top_e.map(|e| e.span)) {
        if t > n {
            ev.report(
                Diagnostic::new(
                    format!("`top = {t}` picks more experts than the {n} there are"),
                    span,
                    format!("at most {n}"),
                )
                .with_hint("each token runs its `top` highest-scoring experts, so top <= experts"),
            );
            return None;
        }
    }
    Some(Sub::Moe {
        experts: experts?,
        top: top?,
        hidden: hidden?,
        act: act?,
        glu: glu?,
        bias: bias?,
        balance: balance?,
    })
}
