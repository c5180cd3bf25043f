//! Constants and typed evaluation of expressions.
//!
//! Integers are i64 with checked arithmetic; `/` always gives a float, `//` and `%` need
//! integers (floor division and modulo with the sign of the divisor, as in Python). A bare
//! name is a constant when one is defined, otherwise a keyword value (`gelu`, `learned`)
//! whose meaning the context decides. Evaluation functions report their own errors and
//! return `None`; a constant whose definition failed is poisoned, so its uses stay silent.

use super::{closest, list, suggest};
use crate::diag::Diagnostic;
use crate::syntax::ast::{Arg, BinOp, Call, Expr, ExprKind, Item, Module, Span};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A name that is not a constant: a keyword value such as `gelu`.
    Word(String, Span),
    List(Vec<(Value, Span)>),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Int(v) => format!("the integer {v}"),
            Value::Float(v) => format!("the number {}", fmt_float(*v)),
            Value::Bool(b) => format!("the boolean `{b}`"),
            Value::Word(w, _) => format!("the name `{w}`"),
            Value::List(_) => "a list".to_string(),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{}", fmt_float(*v)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Word(w, _) => write!(f, "{w}"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, (v, _)) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// Floats always print with a point or exponent so they read back as floats.
pub(crate) fn fmt_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains(['.', 'e', 'E', 'i', 'N']) {
        s
    } else {
        format!("{s}.0")
    }
}

struct Entry {
    name: String,
    span: Span,
    /// `None` when the definition had an error (poisoned).
    value: Option<Value>,
}

/// The evaluated constants of a module.
pub(crate) struct Consts {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    /// Every constant name with its definition span, defined or not yet.
    all: HashMap<String, Span>,
}

impl Consts {
    /// Evaluate every constant in order, applying overrides; errors go to `diags`.
    pub(crate) fn evaluate(
        m: &Module,
        overrides: &[Override],
        diags: &mut Vec<Diagnostic>,
    ) -> Consts {
        let mut env = Consts {
            entries: Vec::new(),
            index: HashMap::new(),
            all: HashMap::new(),
        };
        for item in &m.items {
            if let Item::Const { name, .. } = item {
                env.all.entry(name.name.clone()).or_insert(name.span);
            }
        }
        for o in overrides {
            if !env.all.contains_key(&o.name) {
                let mut names: Vec<&str> = env.all.keys().map(|s| s.as_str()).collect();
                names.sort_unstable();
                let mut d = Diagnostic::new(
                    format!("`--set {}`: the model has no constant `{}`", o.name, o.name),
                    Span::NONE,
                    "unknown constant",
                );
                let hint = match closest(&o.name, names.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`? the constants are {}", list(&names)),
                    None if names.is_empty() => "this model defines no constants".to_string(),
                    None => format!("the constants are {}", list(&names)),
                };
                d = d.with_hint(hint);
                diags.push(d);
            } else if !o.value.is_finite() {
                diags.push(Diagnostic::new(
                    format!("`--set {}`: the value is not a finite number", o.name),
                    Span::NONE,
                    "bad override",
                ));
            } else if o.is_int && o.value.abs() >= (1u64 << 53) as f64 {
                diags.push(
                    Diagnostic::new(
                        format!("`--set {}={}`: the value is out of range", o.name, o.value),
                        Span::NONE,
                        "bad override",
                    )
                    .with_hint("integer overrides must lie within ±2^53"),
                );
            }
        }
        for item in &m.items {
            let Item::Const { name, value } = item else {
                continue;
            };
            if let Some(&first) = env.index.get(&name.name) {
                let first_span = env.entries[first].span;
                diags.push(
                    Diagnostic::new(
                        format!("constant `{}` is defined twice", name.name),
                        name.span,
                        "second definition",
                    )
                    .with_note(first_span, "first defined here")
                    .with_hint("constants cannot be reassigned; rename one of them"),
                );
                continue;
            }
            let ov = overrides.iter().rev().find(|o| o.name == name.name);
            let v = match ov {
                Some(o) if o.is_int && o.value.fract() == 0.0 && o.value.abs() < 9.0e15 => {
                    Some(Value::Int(o.value as i64))
                }
                Some(o) if o.value.is_finite() => Some(Value::Float(o.value)),
                Some(_) => None,
                None => {
                    let mut ev = Ev {
                        consts: &env,
                        diags,
                    };
                    ev.eval(value)
                }
            };
            env.index.insert(name.name.clone(), env.entries.len());
            env.entries.push(Entry {
                name: name.name.clone(),
                span: name.span,
                value: v,
            });
        }
        env
    }

    pub(crate) fn listing(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|e| {
                let v = e
                    .value
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "?".into());
                (e.name.clone(), v)
            })
            .collect()
    }

    fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        v.sort_unstable();
        v
    }

    /// Where a constant is defined (for notes).
    pub(crate) fn def_span(&self, name: &str) -> Option<Span> {
        self.index.get(name).map(|&i| self.entries[i].span)
    }
}

use super::Override;

/// Other names for keyword values, as other libraries spell them (for hints only).
const ALIASES: &[(&str, &str)] = &[
    ("swish", "silu"),
    ("gelu_new", "gelu_tanh"),
    ("gelu_approx", "gelu_tanh"),
    ("sinusoid", "sinusoidal"),
    ("sin", "sinusoidal"),
    ("absolute", "learned"),
    ("fixed", "frozen"),
    ("learned", "trainable"),
    // Rotary pairings by the models that use them.
    ("neox", "half"),
    ("llama", "half"),
    ("rotate_half", "half"),
    ("gptj", "interleaved"),
    ("roformer", "interleaved"),
    ("rotary", "rope"),
];

/// An evaluator over the constants, reporting into `diags`.
pub(crate) struct Ev<'a> {
    pub consts: &'a Consts,
    pub diags: &'a mut Vec<Diagnostic>,
}

fn err(msg: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
    Diagnostic::new(msg, span, label)
}

impl Ev<'_> {
    pub(crate) fn report(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub(crate) fn eval(&mut self, e: &Expr) -> Option<Value> {
        match &e.kind {
            ExprKind::Int(v) => Some(Value::Int(*v)),
            ExprKind::Float(v) => {
                if v.is_finite() {
                    Some(Value::Float(*v))
                } else {
                    self.report(err("number out of range", e.span, "not a finite number"));
                    None
                }
            }
            ExprKind::Bool(b) => Some(Value::Bool(*b)),
            ExprKind::Name(n) => {
                if let Some(&i) = self.consts.index.get(n) {
                    return self.consts.entries[i].value.clone();
                }
                if let Some(&def) = self.consts.all.get(n) {
                    self.report(
                        err(
                            format!("constant `{n}` is used before its definition"),
                            e.span,
                            "used here",
                        )
                        .with_note(def, "defined later here")
                        .with_hint("move the definition above its first use"),
                    );
                    return None;
                }
                Some(Value::Word(n.clone(), e.span))
            }
            ExprKind::Neg(inner) => match self.eval(inner)? {
                Value::Int(v) => match v.checked_neg() {
                    Some(n) => Some(Value::Int(n)),
                    None => {
                        self.report(err("integer overflow", e.span, "negation overflows i64"));
                        None
                    }
                },
                Value::Float(v) => Some(Value::Float(-v)),
                other => {
                    self.not_a_number(&other, inner.span);
                    None
                }
            },
            ExprKind::Binary(op, a, b) => {
                let va = self.eval(a);
                let vb = self.eval(b);
                let (va, vb) = (va?, vb?);
                let (na, nb) = (self.number(va, a.span), self.number(vb, b.span));
                self.binary(*op, na?, nb?, e.span, b.span)
            }
            ExprKind::Call(c) => {
                let d = err(
                    format!("`{}(...)` is not a value", c.name.name),
                    e.span,
                    "a call",
                )
                .with_hint("a call picks a kind with settings where an argument asks for one, as in `embed(dim = 64, positions = rope(base = 10000))`");
                self.report(d);
                None
            }
            ExprKind::List(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for it in items {
                    match self.eval(it) {
                        Some(v) => out.push((v, it.span)),
                        None => ok = false,
                    }
                }
                ok.then_some(Value::List(out))
            }
        }
    }

    /// Report a non-number used in arithmetic or as a number.
    fn not_a_number(&mut self, v: &Value, span: Span) {
        let d = match v {
            Value::Word(w, wspan) => self.unknown_constant(w, *wspan),
            other => err(
                format!("expected a number, found {}", other.describe()),
                span,
                "not a number",
            ),
        };
        self.report(d);
    }

    pub(crate) fn unknown_constant(&self, w: &str, span: Span) -> Diagnostic {
        let names = self.consts.names();
        err(format!("unknown constant `{w}`"), span, "not defined").with_hint(suggest(
            w,
            &names,
            "the constants are",
        ))
    }

    fn number(&mut self, v: Value, span: Span) -> Option<Value> {
        match v {
            Value::Int(_) | Value::Float(_) => Some(v),
            other => {
                self.not_a_number(&other, span);
                None
            }
        }
    }

    fn binary(&mut self, op: BinOp, a: Value, b: Value, span: Span, rhs: Span) -> Option<Value> {
        use Value::{Float, Int};
        let overflow = |s: &mut Self| {
            s.report(
                err(
                    "integer overflow",
                    span,
                    "this does not fit in a 64-bit integer",
                )
                .with_hint("sizes this large cannot be compiled; use smaller values"),
            );
            None
        };
        let zero = |s: &mut Self| {
            s.report(err("division by zero", rhs, "this is zero"));
            None
        };
        match (op, &a, &b) {
            (BinOp::Add | BinOp::Sub | BinOp::Mul, Int(x), Int(y)) => {
                let r = match op {
                    BinOp::Add => x.checked_add(*y),
                    BinOp::Sub => x.checked_sub(*y),
                    _ => x.checked_mul(*y),
                };
                match r {
                    Some(r) => Some(Int(r)),
                    None => overflow(self),
                }
            }
            (BinOp::FloorDiv | BinOp::Mod, Int(x), Int(y)) => {
                if *y == 0 {
                    return zero(self);
                }
                let (Some(q), Some(r)) = (x.checked_div(*y), x.checked_rem(*y)) else {
                    return overflow(self);
                };
                // Python semantics: round toward -inf, remainder takes the divisor's sign.
                let adjust = r != 0 && ((r < 0) != (*y < 0));
                if op == BinOp::FloorDiv {
                    Some(Int(if adjust { q - 1 } else { q }))
                } else {
                    Some(Int(if adjust { r + y } else { r }))
                }
            }
            (BinOp::FloorDiv | BinOp::Mod, _, _) => {
                let sym = if op == BinOp::FloorDiv { "//" } else { "%" };
                self.report(
                    err(
                        format!("`{sym}` needs integers"),
                        span,
                        "an operand is a float",
                    )
                    .with_hint("use `/` for float division"),
                );
                None
            }
            _ => {
                let x = as_f64(&a);
                let y = as_f64(&b);
                let r = match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    _ => {
                        if y == 0.0 {
                            return zero(self);
                        }
                        x / y
                    }
                };
                if r.is_finite() {
                    Some(Float(r))
                } else {
                    self.report(
                        err(
                            "this number overflows to infinity",
                            span,
                            "not a finite number",
                        )
                        .with_hint("numbers must stay within about 1.8e308"),
                    );
                    None
                }
            }
        }
    }

    /// A positive integer size such as `heads` or `dim`.
    pub(crate) fn size(&mut self, e: &Expr, what: &str) -> Option<usize> {
        let v = self.eval(e)?;
        match v {
            Value::Int(i) if i > 0 => match usize::try_from(i) {
                Ok(u) => Some(u),
                Err(_) => {
                    self.report(err(format!("`{what}` is too large"), e.span, "too large"));
                    None
                }
            },
            Value::Int(i) => {
                self.report(
                    err(
                        format!("`{what}` must be positive, found {i}"),
                        e.span,
                        "expected a positive integer",
                    )
                    .with_hint("sizes and counts must be at least 1"),
                );
                None
            }
            Value::Float(f) => {
                let mut d = err(
                    format!("`{what}` must be an integer, found {}", fmt_float(f)),
                    e.span,
                    "this is a float",
                );
                d = d.with_hint(if contains_div(e) {
                    "`/` always gives a float; use // for integer division"
                } else {
                    "write an integer such as 4, or use // for integer division"
                });
                self.report(d);
                None
            }
            Value::Word(w, wspan) => {
                let d = self.unknown_constant(&w, wspan);
                self.report(d);
                None
            }
            other => {
                self.report(err(
                    format!(
                        "`{what}` must be a positive integer, found {}",
                        other.describe()
                    ),
                    e.span,
                    "expected a positive integer",
                ));
                None
            }
        }
    }

    /// An integer (any sign), for list indices.
    pub(crate) fn int_value(&mut self, v: &Value, span: Span, what: &str) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            other => {
                let other = other.clone();
                self.expected(what, &other, span);
                None
            }
        }
    }

    /// A finite number (coefficients, eps, scales).
    pub(crate) fn number_of(&mut self, e: &Expr, what: &str) -> Option<f64> {
        match self.eval(e)? {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            other => {
                self.expected(what, &other, e.span);
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, e: &Expr, what: &str) -> Option<bool> {
        match self.eval(e)? {
            Value::Bool(b) => Some(b),
            other => {
                let d = err(
                    format!(
                        "`{what}` must be `true` or `false`, found {}",
                        other.describe()
                    ),
                    e.span,
                    "expected `true` or `false`",
                );
                self.report(d);
                None
            }
        }
    }

    /// A keyword value from `allowed` (`act = gelu`); a constant holding one also works.
    pub(crate) fn keyword(&mut self, e: &Expr, what: &str, allowed: &[&str]) -> Option<String> {
        if let ExprKind::Name(n) = &e.kind {
            let value = self
                .consts
                .index
                .get(n)
                .map(|&i| &self.consts.entries[i].value);
            let resolved = match value {
                None => n.clone(),
                Some(Some(Value::Word(w, _))) => w.clone(),
                Some(None) => return None,
                Some(Some(other)) => {
                    let d = err(
                        format!("expected a {what}, found {}", other.describe()),
                        e.span,
                        format!("expected one of {}", list(allowed)),
                    );
                    self.report(d);
                    return None;
                }
            };
            if allowed.contains(&resolved.as_str()) {
                return Some(resolved);
            }
            let d = err(
                format!("unknown {what} `{resolved}`"),
                e.span,
                format!("expected one of {}", list(allowed)),
            );
            let alias = ALIASES
                .iter()
                .find(|(a, t)| *a == resolved && allowed.contains(t));
            let d = match (alias, closest(&resolved, allowed.iter().copied())) {
                (Some((a, t)), _) => d.with_hint(format!("`{a}` is called `{t}` here")),
                (None, Some(c)) => d.with_hint(format!("did you mean `{c}`?")),
                (None, None) => d,
            };
            self.report(d);
            return None;
        }
        let v = self.eval(e)?;
        let d = err(
            format!("expected a {what}, found {}", v.describe()),
            e.span,
            format!("expected one of {}", list(allowed)),
        );
        self.report(d);
        None
    }

    fn expected(&mut self, what: &str, v: &Value, span: Span) {
        let d = match v {
            Value::Word(w, wspan) => self.unknown_constant(w, *wspan),
            other => err(
                format!("expected {what}, found {}", other.describe()),
                span,
                format!("expected {what}"),
            ),
        };
        self.report(d);
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

/// Whether an expression uses `/`: drives the `//` hint.
fn contains_div(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Binary(BinOp::Div, _, _) => true,
        ExprKind::Binary(_, a, b) => contains_div(a) || contains_div(b),
        ExprKind::Neg(a) => contains_div(a),
        _ => false,
    }
}

/// A call's arguments matched to parameter names: positional ones in order, then named.
pub(crate) struct Bound<'a> {
    pub call: &'a Call,
    /// What the call is, for messages: "attention", "the input".
    pub what: String,
    args: Vec<(&'static str, &'a Arg)>,
    /// Unknown argument names, so a misspelt required one is reported once, not twice.
    unknown: Vec<String>,
}

impl<'a> Bound<'a> {
    /// Match `call`'s arguments to `params`; the first `positional` of them may be positional.
    /// Unknown, duplicate and surplus arguments are reported and dropped.
    pub(crate) fn bind(
        call: &'a Call,
        what: impl Into<String>,
        params: &[&'static str],
        positional: usize,
        diags: &mut Vec<Diagnostic>,
    ) -> Bound<'a> {
        let what = what.into();
        let mut args: Vec<(&'static str, &'a Arg)> = Vec::new();
        let mut unknown = Vec::new();
        let mut surplus: Option<Span> = None;
        let mut next_pos = 0;
        for arg in call.args.iter().flatten() {
            let name = match &arg.key {
                None => {
                    if next_pos >= positional.min(params.len()) {
                        surplus = Some(surplus.map_or(arg.span, |s: Span| s.to(arg.span)));
                        continue;
                    }
                    next_pos += 1;
                    params[next_pos - 1]
                }
                Some(key) => match params.iter().find(|p| **p == key.name) {
                    Some(p) => p,
                    None => {
                        let d = err(
                            format!("unknown argument `{}` for {what}", key.name),
                            key.span,
                            "unknown argument",
                        );
                        let hint = if params.is_empty() {
                            format!("{what} takes no arguments")
                        } else {
                            suggest(&key.name, params, &format!("{what} takes"))
                        };
                        diags.push(d.with_hint(hint));
                        unknown.push(key.name.clone());
                        continue;
                    }
                },
            };
            if let Some((_, first)) = args.iter().find(|(n, _)| *n == name) {
                diags.push(
                    err(
                        format!("argument `{name}` is given twice"),
                        arg.span,
                        "second value",
                    )
                    .with_note(first.span, "first given here"),
                );
                continue;
            }
            args.push((name, arg));
        }
        if let Some(span) = surplus {
            // One error for all surplus positional arguments.
            let named: Vec<String> = params[positional.min(params.len())..]
                .iter()
                .map(|p| format!("`{p} = ...`"))
                .collect();
            let d = if params.is_empty() {
                err(
                    format!("{what} takes no arguments"),
                    span,
                    "unexpected arguments",
                )
                .with_hint(format!("write `{}` without parentheses", call.name.name))
            } else if positional == 0 {
                err(
                    format!("{what} takes only named arguments"),
                    span,
                    "unnamed",
                )
                .with_hint(format!("name them: {}", named.join(", ")))
            } else {
                let first = list(&params[..positional]);
                err(
                    format!("too many unnamed arguments for {what}"),
                    span,
                    format!("only {first} may be unnamed"),
                )
                .with_hint(if named.is_empty() {
                    format!("{what} takes at most {positional} argument(s)")
                } else {
                    format!("name the others: {}", named.join(", "))
                })
            };
            diags.push(d);
        }
        Bound {
            call,
            what,
            args,
            unknown,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a Expr> {
        self.args
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| &a.value)
    }

    /// The argument, or a "missing argument" error at the call.
    pub(crate) fn require(
        &self,
        name: &str,
        example: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<&'a Expr> {
        let e = self.get(name);
        let misspelt = self.unknown.iter().any(|u| closest(u, [name]).is_some());
        if e.is_none() && !misspelt {
            diags.push(
                err(
                    format!("{} needs the argument `{name}`", self.what),
                    self.call.span,
                    format!("`{name}` is missing"),
                )
                .with_hint(format!("for example `{example}`")),
            );
        }
        e
    }
}
