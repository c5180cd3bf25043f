//! Depth programs: the clauses after a stack's count, resolved into what each executed
//! layer does. The equations are in docs/language.md ("Depth programs").
//!
//! - `parallel` / `parallel K`: the layers form `K` groups (one by default) run one after
//!   another; the layers of a group all read the group's input and their updates add up.
//! - `shared stages S`: `S` weight sets, each shared by `n / S` consecutive layers (SWS).
//! - `subnets [D, ...] weights [w, ...]`: the loss is `sum_k w_k loss(subnet D_k)`, where
//!   subnet `D` runs the layers `i * n / D` for `i < D` (VARiant's equidistant layers).
//! - `expand linear`: layer `l = 1..n` has weights `theta_A + (l / n) theta_B` (TLEG).
//! - `routed` / `sparsity X`: a gate from each layer's input scales its update (FiRST);
//! - `drop_path P`: stochastic depth while training, layer `i` of `n` dropped for a sample
//!   with probability `P i / (n - 1)`.

use super::consts::{Ev, Value};
use crate::diag::Diagnostic;
use crate::syntax::ast::{Expr, ExprKind, Span, Stack, StackClause};

/// The FiRST sparsity coefficient when `routed` has no `sparsity` clause.
pub(crate) const DEFAULT_SPARSITY: f64 = 0.01;

/// What one executed layer of a stack does beyond running its block.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LayerProgram {
    /// Parallel over depth: reads the input of the layer before it, and its update is
    /// added to that layer's.
    pub joins: bool,
    /// Linear expansion: the layer's weights are `theta_A + c * theta_B` with `c` this.
    pub expand: Option<f64>,
    /// A router gate scales the layer's update.
    pub routed: bool,
    /// Stochastic depth: the probability that training drops the layer's update for a
    /// sample (`drop_path P` ramps it linearly from 0 at the first layer to P at the last).
    pub drop_path: f64,
}

/// The subnets of one stack: depth, loss weight and the executed layers (indices into
/// the model's executed layers) of each.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Subnets {
    pub depths: Vec<usize>,
    pub weights: Vec<f64>,
    pub layers: Vec<Vec<usize>>,
    pub span: Span,
}

/// A stack's clauses, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Clauses {
    /// Number of parallel groups.
    pub parallel: Option<usize>,
    /// Weight-sharing stages (with `shared`).
    pub stages: Option<usize>,
    /// Subnet depths and their loss weights.
    pub subnets: Option<(Vec<usize>, Vec<f64>, Span)>,
    pub expand: bool,
    /// The sparsity coefficient of a routed stack.
    pub routed: Option<f64>,
    /// The stochastic-depth rate of the stack's last layer.
    pub drop_path: Option<f64>,
    /// Where the first clause is (for errors about combinations).
    pub span: Option<Span>,
}

impl Clauses {
    /// Weight set (within the stack) of executed layer `i` of `n`, and the number of
    /// weight sets, for a stack without `order`.
    pub(crate) fn weights(&self, shared: bool, i: usize, n: usize) -> (usize, usize) {
        match (shared, self.stages, self.expand) {
            (true, Some(s), _) => (i * s / n, s),
            (true, None, _) | (false, _, true) => (0, 1),
            (false, _, false) => (i, n),
        }
    }

    /// The program of executed layer `i` of `n`.
    pub(crate) fn layer(&self, i: usize, n: usize) -> LayerProgram {
        let joins = match self.parallel {
            Some(k) => !i.is_multiple_of(n / k),
            None => false,
        };
        LayerProgram {
            joins,
            expand: self.expand.then(|| (i + 1) as f64 / n as f64),
            routed: self.routed.is_some(),
            drop_path: match (self.drop_path, n) {
                (Some(p), 2..) => p * i as f64 / (n - 1) as f64,
                (Some(_) | None, _) => 0.0,
            },
        }
    }

    /// Subnet `D` of `n` layers runs the layers `i * n / D`, `i < D` (offset by `first`).
    pub(crate) fn subnet_layers(depth: usize, n: usize, first: usize) -> Vec<usize> {
        (0..depth).map(|i| first + i * n / depth).collect()
    }
}

fn err(msg: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
    Diagnostic::new(msg, span, label)
}

const WORDS: &[&str] = &[
    "parallel",
    "stages",
    "subnets",
    "weights",
    "expand",
    "routed",
    "sparsity",
    "drop_path",
];

/// Checks a stack's clauses against its layer count `n` (when it resolved).
pub(crate) fn clauses(s: &Stack, n: Option<usize>, ev: &mut Ev<'_>) -> Option<Clauses> {
    let mut c = Clauses {
        span: s.clauses.first().map(|c| c.span),
        ..Clauses::default()
    };
    let mut ok = true;
    let mut sparsity_value = None;
    let find = |w: &str| s.clauses.iter().find(|c| c.word.name == w);
    for cl in &s.clauses {
        let w = cl.word.name.as_str();
        let fine = match w {
            "parallel" => parallel(cl, n, ev).map(|k| c.parallel = Some(k)),
            "stages" => stages(cl, s, n, ev).map(|k| c.stages = Some(k)),
            "subnets" => subnets(cl, find("weights"), n, ev).map(|v| c.subnets = Some(v)),
            "weights" => requires(
                cl,
                find("subnets"),
                "subnets",
                "subnets [8, 4] weights [1, 0.5]",
                ev,
            ),
            "expand" => expand(cl, s, ev).map(|()| c.expand = true),
            "routed" => no_value(cl, ev).map(|()| {
                c.routed.get_or_insert(DEFAULT_SPARSITY);
            }),
            "sparsity" => sparsity(cl, find("routed"), ev).map(|x| sparsity_value = Some(x)),
            "drop_path" => value(cl, "drop_path 0.1", ev)
                .and_then(|e| super::width::rate(e, "drop_path", ev))
                .map(|p| c.drop_path = Some(p)),
            _ => {
                ev.report(err(
                    format!("unknown stack clause `{w}`"),
                    cl.word.span,
                    format!("expected one of {}", super::list(WORDS)),
                ));
                None
            }
        };
        ok &= fine.is_some();
    }
    if let (Some(r), Some(x)) = (c.routed.as_mut(), sparsity_value) {
        *r = x;
    }
    ok &= combinations(&c, s, ev);
    ok.then_some(c)
}

/// Clauses that exclude each other.
fn combinations(c: &Clauses, s: &Stack, ev: &mut Ev<'_>) -> bool {
    let at = |w: &str| s.clauses.iter().find(|c| c.word.name == w).map(|c| c.span);
    let pairs = [
        (
            "parallel",
            c.parallel.is_some(),
            "subnets",
            c.subnets.is_some(),
        ),
        ("expand", c.expand, "subnets", c.subnets.is_some()),
        ("expand", c.expand, "routed", c.routed.is_some()),
        ("parallel", c.parallel.is_some(), "expand", c.expand),
    ];
    let mut ok = true;
    for (a, has_a, b, has_b) in pairs {
        if let (true, true, Some(sa), Some(sb)) = (has_a, has_b, at(a), at(b)) {
            ev.report(
                err(
                    format!("`{a}` and `{b}` cannot be combined"),
                    sb,
                    format!("`{b}` here"),
                )
                .with_note(sa, format!("`{a}` here"))
                .with_hint("use one depth program per stack"),
            );
            ok = false;
        }
    }
    let with_order = [("subnets", c.subnets.is_some()), ("expand", c.expand)];
    for (w, has) in with_order {
        if let (true, Some(o), Some(sw)) = (has, &s.order, at(w)) {
            ev.report(
                err(
                    format!("`{w}` cannot be combined with `order`"),
                    sw,
                    format!("`{w}` here"),
                )
                .with_note(o.span, "`order` here")
                .with_hint(format!(
                    "`{w}` places the stack's layers itself; drop the `order`"
                )),
            );
            ok = false;
        }
    }
    if let (true, Some(sh), Some(se)) = (c.expand, s.shared, at("expand")) {
        ev.report(
            err(
                "`expand` and `shared` cannot be combined",
                se,
                "`expand` here",
            )
            .with_note(sh, "`shared` here")
            .with_hint("`expand linear` already derives every layer from two weight sets"),
        );
        ok = false;
    }
    ok
}

fn no_value(cl: &StackClause, ev: &mut Ev<'_>) -> Option<()> {
    match &cl.value {
        None => Some(()),
        Some(v) => {
            ev.report(err(
                format!("`{}` takes no value", cl.word.name),
                v.span,
                "unexpected value",
            ));
            None
        }
    }
}

fn value<'c>(cl: &'c StackClause, example: &str, ev: &mut Ev<'_>) -> Option<&'c Expr> {
    if cl.value.is_none() {
        ev.report(
            err(
                format!("`{}` needs a value", cl.word.name),
                cl.span,
                "no value",
            )
            .with_hint(format!("for example `{example}`")),
        );
    }
    cl.value.as_ref()
}

fn requires(
    cl: &StackClause,
    other: Option<&StackClause>,
    name: &str,
    example: &str,
    ev: &mut Ev<'_>,
) -> Option<()> {
    if other.is_none() {
        ev.report(
            err(
                format!("`{}` needs `{name}`", cl.word.name),
                cl.word.span,
                format!("without `{name}`"),
            )
            .with_hint(format!("for example `{example}`")),
        );
        return None;
    }
    Some(())
}

/// A count that must divide the layer count `n`.
fn divisor(e: &Expr, what: &str, n: Option<usize>, ev: &mut Ev<'_>) -> Option<usize> {
    let k = ev.size(e, what)?;
    let n = n?;
    if k > n || !n.is_multiple_of(k) {
        ev.report(
            err(
                format!("{what} {k} does not divide the stack's {n} layers"),
                e.span,
                format!("not a divisor of {n}"),
            )
            .with_hint(format!("use a divisor of {n}: {}", divisors(n))),
        );
        return None;
    }
    Some(k)
}

fn divisors(n: usize) -> String {
    let ds: Vec<String> = (1..=n)
        .filter(|k| n.is_multiple_of(*k))
        .take(12)
        .map(|k| k.to_string())
        .collect();
    ds.join(", ")
}

fn parallel(cl: &StackClause, n: Option<usize>, ev: &mut Ev<'_>) -> Option<usize> {
    match &cl.value {
        None => Some(1),
        Some(e) => divisor(e, "the number of parallel groups", n, ev),
    }
}

fn stages(cl: &StackClause, s: &Stack, n: Option<usize>, ev: &mut Ev<'_>) -> Option<usize> {
    let e = value(cl, "shared stages 3", ev)?;
    if s.shared.is_none() {
        ev.report(
            err("`stages` needs `shared`", cl.word.span, "without `shared`").with_hint(
                "write `shared stages 3`: the layers of each stage share one weight set",
            ),
        );
        return None;
    }
    divisor(e, "the number of stages", n, ev)
}

fn expand(cl: &StackClause, s: &Stack, ev: &mut Ev<'_>) -> Option<()> {
    let e = value(cl, "expand linear", ev)?;
    let _ = s;
    match &e.kind {
        ExprKind::Name(w) if w == "linear" => Some(()),
        _ => {
            ev.report(
                err(
                    "`expand` needs the kind `linear`",
                    e.span,
                    "expected `linear`",
                )
                .with_hint("`expand linear`: layer l of n has weights theta_A + (l / n) theta_B"),
            );
            None
        }
    }
}

fn sparsity(cl: &StackClause, routed: Option<&StackClause>, ev: &mut Ev<'_>) -> Option<f64> {
    requires(cl, routed, "routed", "routed sparsity 0.01", ev)?;
    let e = value(cl, "routed sparsity 0.01", ev)?;
    let x = ev.number_of(e, "sparsity")?;
    if !(x >= 0.0 && x.is_finite()) {
        ev.report(
            err(
                format!("`sparsity` must be a finite number >= 0, found {x}"),
                e.span,
                "out of range",
            )
            .with_hint("0 turns the gate penalty off; FiRST-style runs use about 0.01"),
        );
        return None;
    }
    Some(x)
}

/// `subnets [D, ...]` with optional `weights [w, ...]`: distinct divisors of `n`, one
/// weight each (equal weights summing to 1 by default).
fn subnets(
    cl: &StackClause,
    weights: Option<&StackClause>,
    n: Option<usize>,
    ev: &mut Ev<'_>,
) -> Option<(Vec<usize>, Vec<f64>, Span)> {
    let e = value(cl, "subnets [8, 4, 2]", ev)?;
    let items = list(e, "subnets", ev)?;
    let mut depths: Vec<usize> = Vec::new();
    let mut ok = true;
    for (v, span) in &items {
        let Some(d) = ev.int_value(v, *span, "a subnet depth") else {
            ok = false;
            continue;
        };
        let ex = Expr {
            kind: ExprKind::Int(d),
            span: *span,
        };
        match divisor(&ex, "the subnet depth", n, ev) {
            Some(d) if depths.contains(&d) => {
                ev.report(err(
                    format!("subnet depth {d} is listed twice"),
                    *span,
                    "again",
                ));
                ok = false;
            }
            Some(d) => depths.push(d),
            None => ok = false,
        }
    }
    let ws = match weights.and_then(|w| w.value.as_ref()) {
        None => vec![1.0 / items.len().max(1) as f64; items.len()],
        Some(we) => loss_weights(we, items.len(), ev)?,
    };
    (ok && n.is_some()).then_some((depths, ws, cl.span))
}

fn list(e: &Expr, what: &str, ev: &mut Ev<'_>) -> Option<Vec<(Value, Span)>> {
    match ev.eval(e)? {
        Value::List(items) if !items.is_empty() => Some(items),
        other => {
            ev.report(
                err(
                    format!("`{what}` needs a non-empty list, found `{other}`"),
                    e.span,
                    "expected a list",
                )
                .with_hint(format!("for example `{what} [8, 4, 2]`")),
            );
            None
        }
    }
}

fn loss_weights(e: &Expr, count: usize, ev: &mut Ev<'_>) -> Option<Vec<f64>> {
    let items = list(e, "weights", ev)?;
    if items.len() != count {
        ev.report(
            err(
                format!("{} weights for {count} subnets", items.len()),
                e.span,
                format!("expected {count}"),
            )
            .with_hint("give one loss weight per subnet, in the same order"),
        );
        return None;
    }
    let mut out = Vec::new();
    for (v, span) in items {
        let x = match v {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            other => {
                ev.report(err(
                    format!("a loss weight must be a number, found `{other}`"),
                    span,
                    "expected a number",
                ));
                return None;
            }
        };
        if !(x >= 0.0 && x.is_finite()) {
            ev.report(err(
                format!("a loss weight must be finite and >= 0, found {x}"),
                span,
                "out of range",
            ));
            return None;
        }
        out.push(x);
    }
    if out.iter().all(|&x| x == 0.0) {
        ev.report(err("every loss weight is 0", e.span, "nothing would train"));
        return None;
    }
    Some(out)
}
