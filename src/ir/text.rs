//! The text form of the IR, and its JSON form.
//!
//! ```text
//! graph tiny {
//!   input tokens: i32[2, 4]
//!   param embed.weight: f32[16, 8] init normal(0.02)
//!   param lift.weight: f32[8, 8] init uniform(0.35355339059327373) frozen role matrix
//!
//!   %0 = input tokens : i32[2, 4]
//!   %1 = param embed.weight : f32[16, 8]
//!   %2 = gather %1, %0 : f32[2, 4, 8]                                 @embed
//!   %3 = reduce_sum[axes=[2], keep] %2 : f32[2, 4, 1]                 @blocks.0.norm
//! backward:
//!   %4 = scale[0.5] %3 : f32[2, 4, 1]
//!
//!   saved %3
//!   output loss = %4
//! }
//! ```
//!
//! - Values are numbered in order (`%N` is node N). Declarations (`input`, `param`) come first,
//!   then nodes, then `saved` and `output` lines; the parser accepts them in any order.
//! - A line `backward:` (or `forward:`) sets the phase of the nodes after it, so a graph whose
//!   phases interleave still prints exactly; a plain autodiff graph has one `backward:` line.
//! - A node's scope goes at the end of its line (`@blocks.0.attn`), padded to a fixed column so
//!   that a change stays a one-line diff.
//! - Names are bare when they look like `blocks.0.attn.wq.weight`, quoted (`"a b"`) otherwise.
//!   `input`/`param` nodes name their leaf, or use `#index` when the name is not unique.
//! - A parameter's role follows its init (`role embedding`); role `other` is not printed.
//! - Floats print with Rust's shortest round-trip form (`0.02`, `1e-5`, `-inf`, `NaN`).
//! - `;` starts a comment that runs to the end of the line.
//!
//! Limits: a shape may hold at most 2^40 elements, so that no shape arithmetic downstream
//! can overflow on a parsed graph.

use super::ops::MaskFill;
use super::ops::{UnaryOp, ViewOp, F64, SINUSOIDAL_BASE};
use super::{
    DType, Graph, Init, Input, IrError, Node, Op, Output, Param, ParamRole, Phase, Type, ValueId,
};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

/// Column where a node's `@scope` starts (unless the line is longer).
const SCOPE_COLUMN: usize = 68;

/// Largest element count of any shape a parsed graph may hold.
pub const MAX_ELEMENTS: u64 = 1 << 40;

// ------------------------------------------------------------------------------------------
// Printing
// ------------------------------------------------------------------------------------------

/// The text form of `g`: deterministic, and `parse` reads it back to an equal graph.
pub fn print(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "graph {} {{", name_text(&g.name));
    for inp in &g.inputs {
        let _ = writeln!(out, "  input {}: {}", name_text(&inp.name), inp.ty);
    }
    for p in &g.params {
        let frozen = if p.trainable { "" } else { " frozen" };
        let role = match p.role {
            ParamRole::Other => String::new(),
            r => format!(" role {r}"),
        };
        let ty = Type::f32(p.shape.clone());
        let _ = writeln!(
            out,
            "  param {}: {ty} init {}{frozen}{role}",
            name_text(&p.name),
            init_text(&p.init)
        );
    }
    let has_decls = !g.inputs.is_empty() || !g.params.is_empty();
    if has_decls && !g.nodes.is_empty() {
        out.push('\n');
    }

    let input_names = unique_names(g.inputs.iter().map(|i| i.name.as_str()));
    let param_names = unique_names(g.params.iter().map(|p| p.name.as_str()));
    let mut phase = Phase::Forward;
    for (i, n) in g.nodes.iter().enumerate() {
        if n.phase != phase {
            phase = n.phase;
            let _ = writeln!(out, "{}:", phase.name());
        }
        let mut line = format!("  %{i} = {}", op_text(&n.op, g, &input_names, &param_names));
        for (k, a) in n.args.iter().enumerate() {
            line.push_str(if k == 0 { " " } else { ", " });
            let _ = write!(line, "{a}");
        }
        let _ = write!(line, " : {}", n.ty);
        if !n.scope.is_empty() {
            let width = line.chars().count();
            let pad = if width + 2 <= SCOPE_COLUMN {
                SCOPE_COLUMN - width
            } else {
                2
            };
            line.extend(std::iter::repeat_n(' ', pad));
            line.push('@');
            line.push_str(&name_text(&n.scope));
        }
        out.push_str(&line);
        out.push('\n');
    }

    if !g.saved.is_empty() || !g.outputs.is_empty() {
        if has_decls || !g.nodes.is_empty() {
            out.push('\n');
        }
        if !g.saved.is_empty() {
            let list: Vec<String> = g.saved.iter().map(|v| v.to_string()).collect();
            let _ = writeln!(out, "  saved {}", list.join(", "));
        }
        for o in &g.outputs {
            let _ = writeln!(out, "  output {} = {}", name_text(&o.name), o.value);
        }
    }
    out.push_str("}\n");
    out
}

/// Names that occur exactly once, so `input NAME` / `param NAME` is unambiguous.
fn unique_names<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in names {
        *counts.entry(n).or_default() += 1;
    }
    counts
}

pub fn float_text(v: f64) -> String {
    // `{:?}` is the shortest form that parses back to the same f64; `inf`, `-inf`, `NaN`.
    format!("{v:?}")
}

fn list_text(xs: &[usize]) -> String {
    let items: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

fn init_text(init: &Init) -> String {
    match init {
        Init::Zeros => "zeros".into(),
        Init::Ones => "ones".into(),
        Init::Const(v) => format!("const({})", float_text(*v)),
        Init::Normal { std } => format!("normal({})", float_text(*std)),
        Init::Uniform { bound } => format!("uniform({})", float_text(*bound)),
    }
}

/// Whether the lexer reads `s` back as one word: `blocks.0.attn`, `tokens`, `grad.x`.
fn is_bare(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') && !s.contains("..")
}

fn name_text(s: &str) -> String {
    if is_bare(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn op_text(
    op: &Op,
    g: &Graph,
    input_names: &HashMap<&str, usize>,
    param_names: &HashMap<&str, usize>,
) -> String {
    let name = op.name();
    match op {
        Op::Input { index } => match g.inputs.get(*index) {
            Some(i) if input_names.get(i.name.as_str()) == Some(&1) => {
                format!("{name} {}", name_text(&i.name))
            }
            _ => format!("{name} #{index}"),
        },
        Op::Param { index } => match g.params.get(*index) {
            Some(p) if param_names.get(p.name.as_str()) == Some(&1) => {
                format!("{name} {}", name_text(&p.name))
            }
            _ => format!("{name} #{index}"),
        },
        Op::Full { value, shape } => {
            format!(
                "{name}[{}, shape={}]",
                float_text(value.get()),
                list_text(shape)
            )
        }
        Op::Sinusoidal { len, dim, base } if base.get() == SINUSOIDAL_BASE => {
            format!("{name}[len={len}, dim={dim}]")
        }
        Op::Sinusoidal { len, dim, base } => format!(
            "{name}[len={len}, dim={dim}, base={}]",
            float_text(base.get())
        ),
        Op::Unary(UnaryOp::Scale { factor }) => format!("{name}[{}]", float_text(factor.get())),
        Op::Unary(UnaryOp::AddScalar { value }) => format!("{name}[{}]", float_text(value.get())),
        Op::ReduceSum { axes, keep_dims } => {
            let keep = if *keep_dims { ", keep" } else { "" };
            format!("{name}[axes={}{keep}]", list_text(axes))
        }
        Op::View(ViewOp::Reshape { shape }) | Op::View(ViewOp::Broadcast { shape }) => {
            format!("{name}[shape={}]", list_text(shape))
        }
        Op::View(ViewOp::Transpose { perm }) => format!("{name}[perm={}]", list_text(perm)),
        Op::View(ViewOp::Slice { axis, start, end }) => {
            format!("{name}[axis={axis}, {start}..{end}]")
        }
        Op::Concat { axis } => format!("{name}[axis={axis}]"),
        Op::MatMul { ta, tb } => match (ta, tb) {
            (false, false) => name.to_string(),
            (true, false) => format!("{name}[ta]"),
            (false, true) => format!("{name}[tb]"),
            (true, true) => format!("{name}[ta, tb]"),
        },
        Op::ScatterAdd { rows } => format!("{name}[rows={rows}]"),
        Op::OneHot { classes } => format!("{name}[classes={classes}]"),
        Op::TopKMask { k } => format!("{name}[k={k}]"),
        Op::CausalMask { fill } => match fill {
            MaskFill::NegInf => format!("{name}[-inf]"),
            MaskFill::Zero => format!("{name}[0]"),
        },
        // Every op without attributes; an op that gains attributes is a compile error here.
        Op::Unary(
            UnaryOp::Neg
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Recip
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Relu
            | UnaryOp::Gelu
            | UnaryOp::GeluTanh
            | UnaryOp::Silu
            | UnaryOp::StopGradient,
        )
        | Op::Binary(_)
        | Op::Softmax
        | Op::LogSoftmax
        | Op::Gather => name.to_string(),
    }
}

// ------------------------------------------------------------------------------------------
// Lexing
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A run of `[A-Za-z0-9_+-]` and single dots: names, numbers, keywords.
    Word(String),
    /// A quoted name, escapes resolved.
    Str(String),
    Punct(char),
    DotDot,
    Newline,
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '+' || c == '-'
}

/// The escape that starts at `chars[i]` (a backslash) in a string at `line:col`: the
/// character it stands for and how many characters it spans (`\n`, `\t`, `\r`, `\"`, `\\`,
/// `\u{hex}`).
fn escape(chars: &[char], i: usize, line: usize, col: usize) -> PResult<(char, usize)> {
    let bad = || IrError::Parse(format!("{line}:{col}: bad escape in string"));
    let simple = match chars.get(i + 1) {
        Some('n') => Some('\n'),
        Some('t') => Some('\t'),
        Some('r') => Some('\r'),
        Some('"') => Some('"'),
        Some('\\') => Some('\\'),
        Some('u') => None,
        _ => return Err(bad()),
    };
    if let Some(ch) = simple {
        return Ok((ch, 2));
    }
    if chars.get(i + 2) != Some(&'{') {
        return Err(bad());
    }
    let mut j = i + 3;
    let mut code: u32 = 0;
    let mut digits = 0;
    while let Some(d) = chars.get(j).and_then(|c| c.to_digit(16)) {
        if digits == 6 {
            return Err(bad());
        }
        code = code * 16 + d;
        digits += 1;
        j += 1;
    }
    if digits == 0 || chars.get(j) != Some(&'}') {
        return Err(bad());
    }
    let ch = char::from_u32(code).ok_or_else(bad)?;
    Ok((ch, j + 1 - i))
}

fn lex(text: &str) -> PResult<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    while let Some(&c) = chars.get(i) {
        let (l, cl) = (line, col);
        let push = |toks: &mut Vec<Token>, tok| {
            toks.push(Token {
                tok,
                line: l,
                col: cl,
            })
        };
        match c {
            '\n' => {
                push(&mut toks, Tok::Newline);
                i += 1;
                line += 1;
                col = 1;
            }
            ' ' | '\t' | '\r' => {
                i += 1;
                col += 1;
            }
            ';' => {
                while chars.get(i).is_some_and(|&c| c != '\n') {
                    i += 1;
                    col += 1;
                }
            }
            '{' | '}' | '[' | ']' | '(' | ')' | ',' | ':' | '=' | '%' | '@' | '#' => {
                push(&mut toks, Tok::Punct(c));
                i += 1;
                col += 1;
            }
            '.' if chars.get(i + 1) == Some(&'.') => {
                push(&mut toks, Tok::DotDot);
                i += 2;
                col += 2;
            }
            '"' => {
                i += 1;
                col += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None | Some('\n') => {
                            return Err(IrError::Parse(format!("{l}:{cl}: unterminated string")));
                        }
                        Some('"') => {
                            i += 1;
                            col += 1;
                            break;
                        }
                        Some('\\') => {
                            let (ch, n) = escape(&chars, i, line, col)?;
                            s.push(ch);
                            i += n;
                            col += n;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                            col += 1;
                        }
                    }
                }
                push(&mut toks, Tok::Str(s));
            }
            c if is_word_char(c) => {
                let mut s = String::new();
                while let Some(&ch) = chars.get(i) {
                    let dot = ch == '.' && chars.get(i + 1) != Some(&'.');
                    if !(is_word_char(ch) || dot) {
                        break;
                    }
                    s.push(ch);
                    i += 1;
                    col += 1;
                }
                push(&mut toks, Tok::Word(s));
            }
            c => {
                return Err(IrError::Parse(format!(
                    "{l}:{cl}: unexpected character {c:?}"
                )))
            }
        }
    }
    toks.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(toks)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Punct(c) => format!("`{c}`"),
        Tok::DotDot => "`..`".into(),
        Tok::Newline => "end of line".into(),
        Tok::Eof => "end of input".into(),
    }
}

// ------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------

type PResult<T> = Result<T, IrError>;

fn at(t: &Token, msg: impl std::fmt::Display) -> IrError {
    IrError::Parse(format!("{}:{}: {msg}", t.line, t.col))
}

/// `input x` / `param #3` in a node, resolved once all declarations are known.
struct LeafRef {
    node: usize,
    is_param: bool,
    by_index: Option<usize>,
    name: String,
    tok: Token,
}

#[derive(Default)]
struct State {
    graph: Graph,
    /// Where each node's line starts, for errors found after parsing.
    node_tok: Vec<Token>,
    leaves: Vec<LeafRef>,
    /// Value references in `saved` and `output` lines, checked once all nodes are known.
    late_refs: Vec<(ValueId, Token)>,
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // `lex` always ends the list with `Eof`, and `bump` never moves past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> PResult<Token> {
        let t = self.bump();
        if t.tok == Tok::Punct(c) {
            Ok(t)
        } else {
            Err(at(
                &t,
                format!("expected `{c}`, found {}", describe(&t.tok)),
            ))
        }
    }

    fn word(&mut self, what: &str) -> PResult<(String, Token)> {
        let t = self.bump();
        match &t.tok {
            Tok::Word(w) => Ok((w.clone(), t.clone())),
            other => Err(at(
                &t,
                format!("expected {what}, found {}", describe(other)),
            )),
        }
    }

    fn keyword(&mut self, kw: &str) -> PResult<Token> {
        let t = self.bump();
        match &t.tok {
            Tok::Word(w) if w == kw => Ok(t),
            other => Err(at(
                &t,
                format!("expected `{kw}`, found {}", describe(other)),
            )),
        }
    }

    fn name(&mut self, what: &str) -> PResult<String> {
        let t = self.bump();
        match &t.tok {
            Tok::Word(w) | Tok::Str(w) => Ok(w.clone()),
            other => Err(at(
                &t,
                format!("expected {what}, found {}", describe(other)),
            )),
        }
    }

    fn end_line(&mut self) -> PResult<()> {
        let t = self.bump();
        match &t.tok {
            Tok::Newline => Ok(()),
            other => Err(at(
                &t,
                format!("expected end of line, found {}", describe(other)),
            )),
        }
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.bump();
        }
    }

    fn usize_word(&mut self, what: &str) -> PResult<usize> {
        let (w, t) = self.word(what)?;
        parse_usize(&w).ok_or_else(|| at(&t, format!("expected {what}, found `{w}`")))
    }

    /// `%N`
    fn value(&mut self) -> PResult<(ValueId, Token)> {
        let t = self.expect_punct('%')?;
        let (w, wt) = self.word("a value number")?;
        let n = parse_usize(&w)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| at(&wt, format!("bad value number `{w}`")))?;
        Ok((ValueId(n), t))
    }

    /// `f32[16, 64]`, `i32[]`
    fn ty(&mut self) -> PResult<Type> {
        let (w, t) = self.word("a type")?;
        let dtype = match w.as_str() {
            "f32" => DType::F32,
            "i32" => DType::I32,
            _ => return Err(at(&t, format!("expected a type (f32 or i32), found `{w}`"))),
        };
        let shape = self.usize_list("a dimension")?;
        check_shape(&shape).map_err(|e| at(&t, e))?;
        Ok(Type { dtype, shape })
    }

    /// `[1, 2, 3]`
    fn usize_list(&mut self, what: &str) -> PResult<Vec<usize>> {
        self.expect_punct('[')?;
        let mut xs = Vec::new();
        if self.eat_punct(']') {
            return Ok(xs);
        }
        loop {
            xs.push(self.usize_word(what)?);
            if !self.eat_punct(',') {
                break;
            }
        }
        self.expect_punct(']')?;
        Ok(xs)
    }

    fn float(&mut self) -> PResult<f64> {
        let (w, t) = self.word("a number")?;
        parse_f64(&w).ok_or_else(|| at(&t, format!("expected a number, found `{w}`")))
    }

    fn init(&mut self) -> PResult<Init> {
        let (w, t) = self.word("an init (zeros, ones, const, normal, uniform)")?;
        let arg = |p: &mut Parser| -> PResult<f64> {
            p.expect_punct('(')?;
            let v = p.float()?;
            p.expect_punct(')')?;
            Ok(v)
        };
        Ok(match w.as_str() {
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "const" => Init::Const(arg(self)?),
            "normal" => Init::Normal { std: arg(self)? },
            "uniform" => Init::Uniform { bound: arg(self)? },
            _ => return Err(at(&t, format!("unknown init `{w}`"))),
        })
    }

    /// An optional `role NAME` (a parameter's role; absent means `other`).
    fn role(&mut self) -> PResult<ParamRole> {
        if !matches!(&self.peek().tok, Tok::Word(w) if w == "role") {
            return Ok(ParamRole::Other);
        }
        self.bump();
        let (w, t) = self.word("a parameter role")?;
        ParamRole::from_name(&w).ok_or_else(|| {
            let names: Vec<&str> = ParamRole::ALL.iter().map(|r| r.name()).collect();
            at(
                &t,
                format!("unknown role `{w}` (the roles are {})", names.join(", ")),
            )
        })
    }

    fn graph(&mut self) -> PResult<State> {
        let mut st = State::default();
        self.skip_newlines();
        self.keyword("graph")?;
        st.graph.name = self.name("the graph name")?;
        self.expect_punct('{')?;
        self.end_line()?;
        let mut phase = Phase::Forward;
        loop {
            self.skip_newlines();
            let t = self.peek().clone();
            match &t.tok {
                Tok::Punct('}') => {
                    self.bump();
                    break;
                }
                Tok::Punct('%') => self.node(&mut st, phase)?,
                Tok::Word(w) => match w.as_str() {
                    "input" => {
                        self.bump();
                        let name = self.name("an input name")?;
                        self.expect_punct(':')?;
                        let ty = self.ty()?;
                        self.end_line()?;
                        st.graph.inputs.push(Input { name, ty });
                    }
                    "param" => {
                        self.bump();
                        let name = self.name("a parameter name")?;
                        self.expect_punct(':')?;
                        let tt = self.peek().clone();
                        let ty = self.ty()?;
                        if ty.dtype != DType::F32 {
                            return Err(at(&tt, "parameters are f32"));
                        }
                        self.keyword("init")?;
                        let init = self.init()?;
                        let trainable = !matches!(&self.peek().tok, Tok::Word(w) if w == "frozen");
                        if !trainable {
                            self.bump();
                        }
                        let role = self.role()?;
                        self.end_line()?;
                        st.graph.params.push(Param {
                            name,
                            shape: ty.shape,
                            init,
                            trainable,
                            role,
                        });
                    }
                    "forward" | "backward" | "update" => {
                        self.bump();
                        phase = Phase::ALL
                            .into_iter()
                            .find(|p| p.name() == w)
                            .unwrap_or_default();
                        self.expect_punct(':')?;
                        self.end_line()?;
                    }
                    "saved" => {
                        self.bump();
                        if self.is_punct('%') {
                            loop {
                                let (v, vt) = self.value()?;
                                st.graph.saved.push(v);
                                st.late_refs.push((v, vt));
                                if !self.eat_punct(',') {
                                    break;
                                }
                            }
                        }
                        self.end_line()?;
                    }
                    "output" => {
                        self.bump();
                        let name = self.name("an output name")?;
                        self.expect_punct('=')?;
                        let (value, vt) = self.value()?;
                        self.end_line()?;
                        st.graph.outputs.push(Output { name, value });
                        st.late_refs.push((value, vt));
                    }
                    _ => return Err(at(&t, format!("unexpected `{w}`"))),
                },
                other => {
                    let msg = format!(
                        "expected a declaration, a node or `}}`, found {}",
                        describe(other)
                    );
                    return Err(at(&t, msg));
                }
            }
        }
        self.skip_newlines();
        let t = self.bump();
        if t.tok != Tok::Eof {
            return Err(at(
                &t,
                format!("unexpected {} after the graph", describe(&t.tok)),
            ));
        }
        Ok(st)
    }

    fn node(&mut self, st: &mut State, phase: Phase) -> PResult<()> {
        let (id, start) = self.value()?;
        let index = st.graph.nodes.len();
        if id.index() != index {
            return Err(at(
                &start,
                format!("expected %{index} here: values are numbered in order"),
            ));
        }
        self.expect_punct('=')?;
        let (opname, optok) = self.word("an op name")?;
        let op = if opname == "input" || opname == "param" {
            let is_param = opname == "param";
            let t = self.peek().clone();
            let (by_index, name) = if self.eat_punct('#') {
                (Some(self.usize_word("an index")?), String::new())
            } else {
                (None, self.name("a name")?)
            };
            st.leaves.push(LeafRef {
                node: index,
                is_param,
                by_index,
                name,
                tok: t,
            });
            // Placeholder index, set when the leaf is resolved.
            if is_param {
                Op::Param { index: 0 }
            } else {
                Op::Input { index: 0 }
            }
        } else {
            let attrs = if self.is_punct('[') {
                self.attrs()?
            } else {
                Vec::new()
            };
            build_op(&opname, &optok, attrs)?
        };
        let mut args = Vec::new();
        if self.is_punct('%') {
            if op.is_leaf() {
                return Err(at(self.peek(), format!("{opname} takes no arguments")));
            }
            loop {
                let (v, vt) = self.value()?;
                if v.index() >= index {
                    return Err(at(&vt, format!("{v} is used before it is defined")));
                }
                args.push(v);
                if !self.eat_punct(',') {
                    break;
                }
            }
        }
        self.expect_punct(':')?;
        let ty = self.ty()?;
        let scope = if self.eat_punct('@') {
            self.name("a scope")?
        } else {
            String::new()
        };
        self.end_line()?;
        st.graph.nodes.push(Node {
            op,
            args,
            ty,
            scope,
            phase,
        });
        st.node_tok.push(start);
        Ok(())
    }

    /// `[item, item, ...]` where an item is `word`, `key=word`, `key=[1, 2]` or `a..b`.
    fn attrs(&mut self) -> PResult<Vec<Attr>> {
        self.expect_punct('[')?;
        let mut items = Vec::new();
        if self.eat_punct(']') {
            return Ok(items);
        }
        loop {
            let (w, t) = self.word("an attribute")?;
            let item = if self.eat_punct('=') {
                let val = if self.is_punct('[') {
                    AttrVal::List(self.usize_list("a number")?)
                } else {
                    AttrVal::Word(self.word("a value")?.0)
                };
                Attr {
                    key: Some(w),
                    val,
                    tok: t,
                    used: false,
                }
            } else if self.peek().tok == Tok::DotDot {
                self.bump();
                let start =
                    parse_usize(&w).ok_or_else(|| at(&t, format!("bad range start `{w}`")))?;
                let end = self.usize_word("a range end")?;
                Attr {
                    key: None,
                    val: AttrVal::Range(start, end),
                    tok: t,
                    used: false,
                }
            } else {
                Attr {
                    key: None,
                    val: AttrVal::Word(w),
                    tok: t,
                    used: false,
                }
            };
            items.push(item);
            if !self.eat_punct(',') {
                break;
            }
        }
        self.expect_punct(']')?;
        Ok(items)
    }
}

fn parse_usize(w: &str) -> Option<usize> {
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    w.parse().ok()
}

fn parse_f64(w: &str) -> Option<f64> {
    w.parse().ok()
}

fn check_shape(shape: &[usize]) -> Result<(), String> {
    let mut n: u64 = 1;
    for &d in shape {
        n = n
            .checked_mul(d as u64)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| format!("shape {} has more than 2^40 elements", list_text(shape)))?;
    }
    Ok(())
}

enum AttrVal {
    Word(String),
    List(Vec<usize>),
    Range(usize, usize),
}

struct Attr {
    key: Option<String>,
    val: AttrVal,
    tok: Token,
    used: bool,
}

/// Takes attributes out of an op's list by key or position; `finish` rejects leftovers.
struct Attrs<'a> {
    op: &'a str,
    op_tok: &'a Token,
    items: Vec<Attr>,
}

impl Attrs<'_> {
    fn missing(&self, what: &str) -> IrError {
        at(self.op_tok, format!("{} needs {what}", self.op))
    }

    fn keyed(&mut self, key: &str) -> PResult<&mut Attr> {
        let missing = self.missing(&format!("`{key}=`"));
        let item = self
            .items
            .iter_mut()
            .find(|a| !a.used && a.key.as_deref() == Some(key))
            .ok_or(missing)?;
        item.used = true;
        Ok(item)
    }

    fn int(&mut self, key: &str) -> PResult<usize> {
        let a = self.keyed(key)?;
        match &a.val {
            AttrVal::Word(w) => parse_usize(w),
            _ => None,
        }
        .ok_or_else(|| at(&a.tok, format!("`{key}` must be a number")))
    }

    /// A keyed number, or `default` when the key is absent.
    fn keyed_float_or(&mut self, key: &str, default: f64) -> PResult<f64> {
        if !self
            .items
            .iter()
            .any(|a| !a.used && a.key.as_deref() == Some(key))
        {
            return Ok(default);
        }
        let a = self.keyed(key)?;
        match &a.val {
            AttrVal::Word(w) => parse_f64(w).filter(|v| v.is_finite() && *v > 1.0),
            _ => None,
        }
        .ok_or_else(|| at(&a.tok, format!("`{key}` must be a number above 1")))
    }

    fn list(&mut self, key: &str) -> PResult<Vec<usize>> {
        let a = self.keyed(key)?;
        match &a.val {
            AttrVal::List(xs) => Ok(xs.clone()),
            _ => Err(at(&a.tok, format!("`{key}` must be a list like [1, 2]"))),
        }
    }

    fn shape(&mut self, key: &str) -> PResult<Vec<usize>> {
        let shape = self.list(key)?;
        check_shape(&shape).map_err(|e| at(self.op_tok, e))?;
        Ok(shape)
    }

    fn flag(&mut self, flag: &str) -> bool {
        let found = self.items.iter_mut().find(|a| {
            !a.used && a.key.is_none() && matches!(&a.val, AttrVal::Word(w) if w == flag)
        });
        match found {
            Some(a) => {
                a.used = true;
                true
            }
            None => false,
        }
    }

    /// The first unkeyed word.
    fn positional(&mut self, what: &str) -> PResult<(String, Token)> {
        let missing = self.missing(what);
        let a = self
            .items
            .iter_mut()
            .find(|a| !a.used && a.key.is_none() && matches!(a.val, AttrVal::Word(_)))
            .ok_or(missing)?;
        a.used = true;
        match &a.val {
            AttrVal::Word(w) => Ok((w.clone(), a.tok.clone())),
            _ => Err(at(&a.tok, format!("expected {what}"))),
        }
    }

    fn float(&mut self) -> PResult<f64> {
        let (w, t) = self.positional("a number")?;
        parse_f64(&w).ok_or_else(|| at(&t, format!("expected a number, found `{w}`")))
    }

    fn range(&mut self) -> PResult<(usize, usize)> {
        let missing = self.missing("a range `start..end`");
        let a = self
            .items
            .iter_mut()
            .find(|a| !a.used && matches!(a.val, AttrVal::Range(..)))
            .ok_or(missing)?;
        a.used = true;
        match a.val {
            AttrVal::Range(s, e) => Ok((s, e)),
            _ => Err(at(&a.tok, "expected a range")),
        }
    }

    fn finish(self) -> PResult<()> {
        match self.items.iter().find(|a| !a.used) {
            Some(a) => Err(at(&a.tok, format!("unexpected attribute for {}", self.op))),
            None => Ok(()),
        }
    }
}

fn build_op(name: &str, tok: &Token, items: Vec<Attr>) -> PResult<Op> {
    let mut a = Attrs {
        op: name,
        op_tok: tok,
        items,
    };
    // The op's kind by its name (names are defined once, in `ops`); then its attributes.
    let kind = Op::every_kind()
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| at(tok, format!("unknown op `{name}`")))?;
    let op = match kind {
        Op::Input { .. } | Op::Param { .. } => {
            return Err(at(tok, format!("{name} takes a name or #index")))
        }
        Op::Full { .. } => {
            let value = F64(a.float()?);
            Op::Full {
                value,
                shape: a.shape("shape")?,
            }
        }
        Op::Sinusoidal { .. } => Op::Sinusoidal {
            len: a.int("len")?,
            dim: a.int("dim")?,
            base: F64(a.keyed_float_or("base", SINUSOIDAL_BASE)?),
        },
        Op::Unary(UnaryOp::Scale { .. }) => Op::Unary(UnaryOp::Scale {
            factor: F64(a.float()?),
        }),
        Op::Unary(UnaryOp::AddScalar { .. }) => Op::Unary(UnaryOp::AddScalar {
            value: F64(a.float()?),
        }),
        Op::ReduceSum { .. } => Op::ReduceSum {
            axes: a.list("axes")?,
            keep_dims: a.flag("keep"),
        },
        Op::View(ViewOp::Reshape { .. }) => Op::View(ViewOp::Reshape {
            shape: a.shape("shape")?,
        }),
        Op::View(ViewOp::Transpose { .. }) => Op::View(ViewOp::Transpose {
            perm: a.list("perm")?,
        }),
        Op::View(ViewOp::Broadcast { .. }) => Op::View(ViewOp::Broadcast {
            shape: a.shape("shape")?,
        }),
        Op::View(ViewOp::Slice { .. }) => {
            let axis = a.int("axis")?;
            let (start, end) = a.range()?;
            Op::View(ViewOp::Slice { axis, start, end })
        }
        Op::Concat { .. } => Op::Concat {
            axis: a.int("axis")?,
        },
        Op::MatMul { .. } => Op::MatMul {
            ta: a.flag("ta"),
            tb: a.flag("tb"),
        },
        Op::ScatterAdd { .. } => Op::ScatterAdd {
            rows: a.int("rows")?,
        },
        Op::OneHot { .. } => Op::OneHot {
            classes: a.int("classes")?,
        },
        Op::TopKMask { .. } => Op::TopKMask { k: a.int("k")? },
        Op::CausalMask { .. } => {
            let (w, t) = a.positional("a fill (-inf or 0)")?;
            let fill = match w.as_str() {
                "-inf" => MaskFill::NegInf,
                "0" => MaskFill::Zero,
                _ => {
                    return Err(at(
                        &t,
                        format!("causal_mask fill must be -inf or 0, found `{w}`"),
                    ))
                }
            };
            Op::CausalMask { fill }
        }
        // No attributes.
        op @ (Op::Unary(_) | Op::Binary(_) | Op::Softmax | Op::LogSoftmax | Op::Gather) => op,
    };
    a.finish()?;
    Ok(op)
}

/// Parse the text form back into a graph, then verify it. Errors start with `line:col:`.
pub fn parse(text: &str) -> Result<Graph, IrError> {
    let toks = lex(text)?;
    let mut p = Parser { toks, pos: 0 };
    let mut st = p.graph()?;

    for leaf in &st.leaves {
        let (kind, len) = if leaf.is_param {
            ("parameter", st.graph.params.len())
        } else {
            ("input", st.graph.inputs.len())
        };
        let index = match leaf.by_index {
            Some(i) if i < len => i,
            Some(i) => return Err(at(&leaf.tok, format!("there is no {kind} #{i}"))),
            None => {
                let matches: Vec<usize> = if leaf.is_param {
                    let it = st.graph.params.iter().map(|p| &p.name);
                    it.enumerate()
                        .filter(|(_, n)| **n == leaf.name)
                        .map(|(i, _)| i)
                        .collect()
                } else {
                    let it = st.graph.inputs.iter().map(|p| &p.name);
                    it.enumerate()
                        .filter(|(_, n)| **n == leaf.name)
                        .map(|(i, _)| i)
                        .collect()
                };
                match matches[..] {
                    [i] => i,
                    [] => return Err(at(&leaf.tok, format!("unknown {kind} `{}`", leaf.name))),
                    _ => {
                        let msg = format!("{kind} name `{}` is ambiguous: use #index", leaf.name);
                        return Err(at(&leaf.tok, msg));
                    }
                }
            }
        };
        // `leaf.node` was pushed by `node`, so it is in range.
        if let Some(n) = st.graph.nodes.get_mut(leaf.node) {
            n.op = if leaf.is_param {
                Op::Param { index }
            } else {
                Op::Input { index }
            };
        }
    }
    for (v, t) in &st.late_refs {
        if v.index() >= st.graph.nodes.len() {
            return Err(at(t, format!("{v} is not defined")));
        }
    }
    check_graph(&st.graph).map_err(|(node, e)| match node.and_then(|i| st.node_tok.get(i)) {
        Some(t) => at(t, e),
        None => IrError::Parse(e),
    })?;
    Ok(st.graph)
}

/// Limits that keep downstream shape arithmetic from overflowing, then `Graph::verify`.
/// Returns the offending node, if any, with the message.
fn check_graph(g: &Graph) -> Result<(), (Option<usize>, String)> {
    for i in &g.inputs {
        check_shape(&i.ty.shape).map_err(|e| (None, format!("input {}: {e}", i.name)))?;
    }
    for p in &g.params {
        check_shape(&p.shape).map_err(|e| (None, format!("param {}: {e}", p.name)))?;
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let node_err = |e: String| (Some(i), format!("%{i}: {e}"));
        check_shape(&n.ty.shape).map_err(node_err)?;
        match &n.op {
            Op::Full { shape, .. }
            | Op::View(ViewOp::Reshape { shape })
            | Op::View(ViewOp::Broadcast { shape }) => check_shape(shape).map_err(node_err)?,
            Op::Input { .. } | Op::Param { .. } if !n.args.is_empty() => {
                return Err(node_err(format!("{} takes no arguments", n.op.name())));
            }
            Op::Concat { axis } => {
                let mut total: usize = 0;
                for a in &n.args {
                    let d = g.nodes.get(a.index()).and_then(|m| m.ty.shape.get(*axis));
                    total = total
                        .checked_add(d.copied().unwrap_or(0))
                        .ok_or_else(|| node_err("concat result is too large".into()))?;
                }
            }
            _ => {}
        }
    }
    g.verify().map_err(|e| match e {
        IrError::Node { node, .. } => (Some(node), e.to_string()),
        e => (None, e.to_string()),
    })
}

// ------------------------------------------------------------------------------------------
// JSON
// ------------------------------------------------------------------------------------------

/// Pretty-printing formatter that writes non-finite floats as the strings `"inf"`, `"-inf"`,
/// `"NaN"`. serde_json turns a non-finite f64 into `write_null`, and a `Graph` has no other
/// null (no `Option` or unit fields), so the k-th null is the k-th non-finite float in
/// serialization order.
struct NonFiniteFormatter {
    inner: serde_json::ser::PrettyFormatter<'static>,
    pending: VecDeque<f64>,
}

impl serde_json::ser::Formatter for NonFiniteFormatter {
    fn write_null<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        match self.pending.pop_front() {
            Some(v) => write!(w, "\"{}\"", float_text(v)),
            None => w.write_all(b"null"),
        }
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.inner.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.inner.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_object_value(w)
    }
}

fn init_float(init: &Init) -> Option<f64> {
    match init {
        Init::Const(v) | Init::Normal { std: v } | Init::Uniform { bound: v } => Some(*v),
        Init::Zeros | Init::Ones => None,
    }
}

/// Pretty JSON (serde's layout of `Graph`, fields in declaration order). Non-finite floats,
/// which JSON cannot hold, are written as the strings `"inf"`, `"-inf"` and `"NaN"`.
pub fn to_json(g: &Graph) -> String {
    // Serialization order: `params` (with their inits) come before `nodes` in `Graph`.
    let pending: VecDeque<f64> = g
        .params
        .iter()
        .filter_map(|p| init_float(&p.init))
        .filter(|v| !v.is_finite())
        .collect();
    let fmt = NonFiniteFormatter {
        inner: serde_json::ser::PrettyFormatter::new(),
        pending,
    };
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    match serde::Serialize::serialize(g, &mut ser) {
        Ok(()) => {
            let mut s = String::from_utf8_lossy(&buf).into_owned();
            s.push('\n');
            s
        }
        // Serializing plain data into memory cannot fail; keep this total anyway, with
        // something `from_json` rejects.
        Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
    }
}

/// Replace a `"inf"`/`"-inf"`/`"NaN"` string at `slot` by 0 and return the float it stood for.
fn take_non_finite(slot: Option<&mut serde_json::Value>) -> Option<f64> {
    let slot = slot?;
    let v = match slot.as_str()? {
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => return None,
    };
    *slot = serde_json::Value::from(0.0);
    Some(v)
}

/// Read `to_json`'s output back, then verify the graph.
pub fn from_json(s: &str) -> Result<Graph, IrError> {
    use serde_json::Value;
    let mut v: Value =
        serde_json::from_str(s).map_err(|e| IrError::Parse(format!("invalid JSON: {e}")))?;
    let mut init_patches = Vec::new();
    if let Some(params) = v.get_mut("params").and_then(Value::as_array_mut) {
        for (i, p) in params.iter_mut().enumerate() {
            let Some(init) = p.get_mut("init") else {
                continue;
            };
            let found = take_non_finite(init.get_mut("Const"))
                .or_else(|| take_non_finite(init.get_mut("Normal").and_then(|x| x.get_mut("std"))))
                .or_else(|| {
                    take_non_finite(init.get_mut("Uniform").and_then(|x| x.get_mut("bound")))
                });
            if let Some(f) = found {
                init_patches.push((i, f));
            }
        }
    }
    let mut g: Graph = serde_json::from_value(v)
        .map_err(|e| IrError::Parse(format!("invalid graph JSON: {e}")))?;
    for (i, f) in init_patches {
        if let Some(p) = g.params.get_mut(i) {
            match &mut p.init {
                Init::Const(v) | Init::Normal { std: v } | Init::Uniform { bound: v } => *v = f,
                Init::Zeros | Init::Ones => {}
            }
        }
    }
    check_graph(&g).map_err(|(_, e)| IrError::Parse(e))?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_quoted_names() {
        for s in ["tokens", "blocks.0.attn.wq.weight", "_x", "0", "a.b_c"] {
            assert!(is_bare(s), "{s}");
        }
        for s in ["", ".a", "a..b", "a b", "a-b", "é", "a\"b"] {
            assert!(!is_bare(s), "{s}");
        }
        assert_eq!(name_text("a \"b\"\n\u{1}"), "\"a \\\"b\\\"\\n\\u{1}\"");
    }

    #[test]
    fn lexer_words_ranges_and_strings() {
        let toks =
            lex("slice[axis=2, 0..64] -inf 1e-5 blocks.0.x \"a\\u{e9}\\n\" ; comment\n").unwrap();
        let kinds: Vec<Tok> = toks.into_iter().map(|t| t.tok).collect();
        let w = |s: &str| Tok::Word(s.into());
        assert_eq!(
            kinds,
            vec![
                w("slice"),
                Tok::Punct('['),
                w("axis"),
                Tok::Punct('='),
                w("2"),
                Tok::Punct(','),
                w("0"),
                Tok::DotDot,
                w("64"),
                Tok::Punct(']'),
                w("-inf"),
                w("1e-5"),
                w("blocks.0.x"),
                Tok::Str("a\u{e9}\n".into()),
                Tok::Newline,
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn lexer_errors_have_positions() {
        assert_eq!(
            lex("ab\n  \"x").unwrap_err().to_string(),
            "2:3: unterminated string"
        );
        assert_eq!(
            lex("a $").unwrap_err().to_string(),
            "1:3: unexpected character '$'"
        );
        assert_eq!(
            lex("\"\\u{110000}\"").unwrap_err().to_string(),
            "1:2: bad escape in string"
        );
        assert_eq!(
            lex("\"\\q\"").unwrap_err().to_string(),
            "1:2: bad escape in string"
        );
    }

    #[test]
    fn floats_round_trip_through_text() {
        for v in [
            0.0,
            -0.0,
            0.02,
            1e-5,
            0.1 + 0.2,
            1.0 / 3.0,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e16,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let s = float_text(v);
            let toks = lex(&s).unwrap();
            let Tok::Word(w) = &toks[0].tok else {
                panic!("{s} is not one word")
            };
            let back = parse_f64(w).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{s}");
        }
        assert!(parse_f64(&float_text(f64::NAN)).unwrap().is_nan());
    }

    #[test]
    fn shape_limit() {
        assert!(check_shape(&[1 << 20, 1 << 20]).is_ok());
        assert!(check_shape(&[1 << 20, 1 << 21]).is_err());
        assert!(check_shape(&[usize::MAX, usize::MAX]).is_err());
        assert!(check_shape(&[usize::MAX, 0]).is_err());
    }

    #[test]
    fn every_op_name_is_known_to_the_parser() {
        for kind in Op::every_kind() {
            let found = Op::every_kind()
                .into_iter()
                .filter(|k| k.name() == kind.name());
            assert_eq!(found.count(), 1, "{} is not a unique name", kind.name());
        }
    }
}
