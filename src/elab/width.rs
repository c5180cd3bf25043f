//! Sublayers that route or nest their width: the mixture of experts `moe(...)`
//! (docs/language.md, "Mixture of experts"), resolved to `Sub::Moe`, and MatFormer's
//! nested FFN widths, `ffn(..., nested = [1, 1/2, 1/4])` ("Nested widths").

use super::consts::Value;
use super::consts::{Bound, Ev};
use super::resolve::{Act, BlockPlan, Nested, Sub};
use crate::diag::Diagnostic;
use crate::syntax::ast::{Call, Expr};

/// The most granularities a nested FFN may list.
pub(crate) const MAX_GRANULARITIES: usize = 8;

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

/// `nested = [1, 1/2, 1/4]`: distinct fractions in (0, 1], largest first, each giving a
/// whole number of the `hidden` units.
pub(crate) fn nested(e: &Expr, hidden: usize, ev: &mut Ev<'_>) -> Option<Nested> {
    let bad = |msg: String, span, label: &str, hint: &str| {
        Diagnostic::new(msg, span, label).with_hint(hint.to_string())
    };
    let Value::List(items) = ev.eval(e)? else {
        ev.report(bad(
            "`nested` needs a list of fractions of `hidden`".into(),
            e.span,
            "expected a list",
            "for example `nested = [1, 1/2, 1/4, 1/8]`",
        ));
        return None;
    };
    if items.is_empty() || items.len() > MAX_GRANULARITIES {
        ev.report(bad(
            format!(
                "`nested` lists {} granularities; give 1 to {MAX_GRANULARITIES}",
                items.len()
            ),
            e.span,
            "wrong length",
            "for example `nested = [1, 1/2, 1/4, 1/8]`",
        ));
        return None;
    }
    let mut out = Nested::default();
    for (k, (v, span)) in items.iter().enumerate() {
        let f = match v {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            other => {
                ev.report(bad(
                    format!("a granularity is a fraction of `hidden`, found `{other}`"),
                    *span,
                    "expected a number",
                    "write fractions such as 1/2",
                ));
                return None;
            }
        };
        let units = f * hidden as f64;
        if !(f > 0.0 && f <= 1.0) {
            ev.report(bad(
                format!("a granularity is a fraction in (0, 1], found {f}"),
                *span,
                "out of range",
                "1 is the whole ffn; 1/2 its first half of the hidden units",
            ));
            return None;
        }
        if (units - units.round()).abs() > 1e-9 {
            ev.report(bad(
                format!("granularity {f} of hidden = {hidden} gives {units:.3} units, not a whole number"),
                *span,
                "not a whole number of units",
                "choose fractions that divide `hidden`, or a `hidden` they divide",
            ));
            return None;
        }
        if k > 0 && f >= out.fractions[k - 1] {
            ev.report(bad(
                "`nested` lists its granularities largest first, each smaller than the last".into(),
                *span,
                "not smaller than the one before",
                "for example `nested = [1, 1/2, 1/4]`",
            ));
            return None;
        }
        out.fractions[k] = f;
        out.len = k + 1;
    }
    Some(out)
}

/// The hidden units of granularity `k` of a nested FFN (all of them when not nested).
pub(crate) fn units(hidden: usize, nested: &Nested, k: Option<usize>) -> usize {
    match k {
        Some(k) if k < nested.len => (nested.fractions[k] * hidden as f64).round() as usize,
        _ => hidden,
    }
}

/// The number of granularities of the model's nested FFNs (0 when none is nested); every
/// nested FFN must list the same number, since run `k` of the model uses granularity `k`
/// of each.
pub(crate) fn granularities(blocks: &[BlockPlan], diags: &mut Vec<Diagnostic>) -> Option<usize> {
    let mut first: Option<(usize, crate::syntax::ast::Span)> = None;
    for br in blocks
        .iter()
        .flat_map(|b| &b.units)
        .flat_map(|u| &u.branches)
    {
        let Sub::Ffn { nested, .. } = &br.sub else {
            continue;
        };
        if nested.len == 0 {
            continue;
        }
        match first {
            None => first = Some((nested.len, br.span)),
            Some((n, span)) if n != nested.len => {
                diags.push(
                    Diagnostic::new(
                        format!(
                            "this ffn has {} granularities and another has {n}",
                            nested.len
                        ),
                        br.span,
                        format!("{} granularities", nested.len),
                    )
                    .with_note(span, format!("{n} granularities here"))
                    .with_hint("the model runs once per granularity, each nested ffn at its k-th: give every `nested` list the same length"),
                );
                return None;
            }
            Some(_) => {}
        }
    }
    Some(first.map_or(0, |(n, _)| n))
}

/// A dropout rate in [0, 1).
pub(crate) fn rate(e: &Expr, what: &str, ev: &mut Ev<'_>) -> Option<f64> {
    let p = ev.number_of(e, what)?;
    if (0.0..1.0).contains(&p) {
        return Some(p);
    }
    ev.report(
        Diagnostic::new(
            format!("`{what}` is a probability in [0, 1), found {p}"),
            e.span,
            "out of range",
        )
        .with_hint("0 turns dropout off; 0.1 drops one value in ten while training"),
    );
    None
}
