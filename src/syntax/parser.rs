//! Source text -> spanned AST, and pest errors -> diagnostics written in words.
//!
//! Three layers keep the parser total (it never panics and never overflows the stack):
//! a size cap, a bracket pre-scan that rejects nesting deeper than `MAX_NESTING` before
//! pest (a recursive-descent parser) ever sees the text, and a depth cap on expressions
//! so that a long operator chain cannot build a tree deep enough to overflow on drop.
//!
//! Spans are byte offsets into the source. A `Call` after a keyword (`input tokens(..)`,
//! `skip scaled(0.5)`) does not include the keyword; `embed(..)` is a call named `embed`
//! whose name span is the keyword. `NormSpec`, `Block`, `Stack` and `Sublayer` spans
//! cover the whole construct, keyword included. A parenthesised expression's span
//! includes its parentheses.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser as _;
use pest_derive::Parser;

use super::ast::{
    Arg, BinOp, Block, BlockItem, Call, Expr, ExprKind, Ident, Item, Module, NormSpec, Scheme,
    Span, Stack, StackClause, Step, Sublayer, TrainSection, TrainSetting, TrainValue,
};
use crate::diag::{Diagnostic, Diagnostics};

#[derive(Parser)]
#[grammar = "grammar/lamina.pest"]
struct LaminaParser;

/// The deepest bracket nesting accepted, counting (), [] and {} together.
pub const MAX_NESTING: usize = 64;
/// The largest source file accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// The deepest expression tree accepted (operators and signs nested in each other).
pub const MAX_EXPR_DEPTH: usize = 256;

/// The reserved words of the language.
pub const KEYWORDS: &[&str] = &[
    "model",
    "input",
    "embed",
    "norm",
    "skip",
    "block",
    "scheme",
    "stack",
    "shared",
    "order",
    "final_norm",
    "head",
    "loss",
    "true",
    "false",
];

/// Keywords that begin a top-level statement.
const STATEMENT_KEYWORDS: &[&str] = &[
    "model",
    "input",
    "embed",
    "norm",
    "skip",
    "block",
    "stack",
    "final_norm",
    "head",
    "loss",
];

/// Parses raw bytes, reporting invalid UTF-8 as a diagnostic. Render such a diagnostic
/// against `String::from_utf8_lossy(bytes)`: its span starts at the first bad byte,
/// which is at the same offset in the lossy text.
pub fn parse_bytes(bytes: &[u8]) -> Result<Module, Diagnostics> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(vec![too_large(bytes.len())]);
    }
    match std::str::from_utf8(bytes) {
        Ok(src) => parse(src),
        Err(e) => {
            let at = e.valid_up_to();
            let (len, label) = match e.error_len() {
                Some(n) => {
                    let shown: Vec<String> = bytes[at..at + n]
                        .iter()
                        .map(|b| format!("0x{b:02x}"))
                        .collect();
                    (n, format!("invalid UTF-8: {}", shown.join(" ")))
                }
                None => (
                    bytes.len() - at,
                    "the file ends in the middle of a UTF-8 character".to_string(),
                ),
            };
            Err(vec![Diagnostic::new(
                format!("the file is not valid UTF-8 text (at byte {at})"),
                Span::new(at, at + len),
                label,
            )
            .with_hint(
                "lamina reads UTF-8 text; save the file with UTF-8 encoding",
            )])
        }
    }
}

/// Parses a model file into its spanned AST.
pub fn parse(src: &str) -> Result<Module, Diagnostics> {
    if src.len() > MAX_INPUT_BYTES {
        return Err(vec![too_large(src.len())]);
    }
    let brackets = scan_brackets(src).map_err(|d| vec![d])?;
    match LaminaParser::parse(Rule::file, src) {
        Ok(mut pairs) => {
            let mut b = Builder {
                diags: Vec::new(),
                train: None,
            };
            let items = match pairs.next() {
                Some(file) => b.items(file),
                None => Vec::new(),
            };
            if b.diags.is_empty() {
                Ok(Module {
                    items,
                    span: Span::new(0, src.len()),
                    train: b.train,
                })
            } else {
                b.diags.sort_by_key(|d| (d.span.start, d.span.end));
                Err(b.diags)
            }
        }
        Err(err) => Err(syntax_errors(src, err, brackets)),
    }
}

fn too_large(len: usize) -> Diagnostic {
    Diagnostic::new(
        format!(
            "the file is too large ({len} bytes; the limit is {} bytes, 1 MiB)",
            MAX_INPUT_BYTES
        ),
        Span::new(0, 0),
        "file starts here",
    )
    .with_hint("a model file is a few dozen lines; is this the right file?")
}

// ---------------------------------------------------------------------------------
// Bracket pre-scan

#[derive(Clone, Copy, Debug)]
enum BracketProblem {
    /// A closer with no opener at all.
    Unmatched { close: usize, ch: u8 },
    /// A closer of the wrong kind for the innermost opener.
    Mismatched {
        open: usize,
        open_ch: u8,
        close: usize,
        close_ch: u8,
    },
    /// An opener still open at the end of the file (the innermost one).
    Unclosed { open: usize, ch: u8 },
}

fn closer_of(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        _ => b'}',
    }
}

/// Rejects nesting deeper than `MAX_NESTING`, and finds the first unbalanced bracket
/// (reported only if pest fails too, and only where pest's own error is no better).
fn scan_brackets(src: &str) -> Result<Option<BracketProblem>, Diagnostic> {
    let bytes = src.as_bytes();
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let mut problem = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            c @ (b'(' | b'[' | b'{') => {
                stack.push((c, i));
                if stack.len() > MAX_NESTING {
                    let ch = c as char;
                    return Err(Diagnostic::new(
                        "brackets are nested too deeply",
                        Span::new(i, i + 1),
                        format!("this `{ch}` is nested {} levels deep", stack.len()),
                    )
                    .with_note(Span::new(stack[0].1, stack[0].1 + 1), "outermost bracket")
                    .with_hint(format!(
                        "at most {MAX_NESTING} brackets may be open at once; \
                         move parts of the expression into constants"
                    )));
                }
            }
            c @ (b')' | b']' | b'}') => match stack.pop() {
                Some((open_ch, open)) => {
                    if closer_of(open_ch) != c && problem.is_none() {
                        problem = Some(BracketProblem::Mismatched {
                            open,
                            open_ch,
                            close: i,
                            close_ch: c,
                        });
                    }
                }
                None => {
                    if problem.is_none() {
                        problem = Some(BracketProblem::Unmatched { close: i, ch: c });
                    }
                }
            },
            _ => {}
        }
        i += 1;
    }
    if problem.is_none() {
        if let Some(&(ch, open)) = stack.last() {
            problem = Some(BracketProblem::Unclosed { open, ch });
        }
    }
    Ok(problem)
}

impl BracketProblem {
    /// Whether a pest error at `pos` is just a consequence of this problem (then only the
    /// bracket is reported). Inside an unclosed `(` or `[` the following lines are read as
    /// part of it, so an error on a later line is a cascade; inside `{` lines still end
    /// statements, so only running into the end of the file is.
    fn explains(self, src: &str, pos: usize) -> bool {
        let line = |i: usize| {
            src.as_bytes()[..i.min(src.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
        };
        let at_eof = pos >= src.trim_end().len();
        match self {
            BracketProblem::Unmatched { close, .. } => pos >= close,
            BracketProblem::Mismatched {
                open,
                open_ch,
                close,
                ..
            } => pos >= close || (open_ch != b'{' && pos > open && line(pos) > line(open)),
            BracketProblem::Unclosed { open, ch } => {
                pos > open
                    && (at_eof
                        || (ch != b'{' && line(pos) > line(open))
                        || (ch == b'{' && top_level_statement_at(src, pos).is_some()))
            }
        }
    }

    /// The diagnostic; `pest_pos` is where pest stopped, if it did.
    fn diagnostic(self, src: &str, pest_pos: Option<usize>) -> Diagnostic {
        match self {
            BracketProblem::Unmatched { close, ch } => {
                let (c, o) = (ch as char, opener_of(ch) as char);
                Diagnostic::new(
                    format!("unmatched `{c}`"),
                    Span::new(close, close + 1),
                    format!("this `{c}` has no `{o}` before it"),
                )
                .with_hint(format!("remove it, or add the missing `{o}` earlier"))
            }
            BracketProblem::Mismatched {
                open,
                open_ch,
                close,
                close_ch,
            } => {
                let (o, c, want) = (
                    open_ch as char,
                    close_ch as char,
                    closer_of(open_ch) as char,
                );
                Diagnostic::new(
                    format!("unclosed `{o}` before `{c}`"),
                    Span::new(close, close + 1),
                    format!("expected `{want}` before this `{c}`"),
                )
                .with_note(
                    Span::new(open, open + 1),
                    format!("this `{o}` is never closed"),
                )
                .with_hint(format!("add the missing `{want}`"))
            }
            BracketProblem::Unclosed { open, ch } => {
                let (o, c) = (ch as char, closer_of(ch) as char);
                if ch == b'{' {
                    let (span, label) = match pest_pos.and_then(|p| top_level_statement_at(src, p))
                    {
                        Some(span) => (span, "expected `}` before this statement"),
                        None => (eof_span(src), "expected `}` before the end of the file"),
                    };
                    Diagnostic::new("unclosed `{`: the block has no closing `}`", span, label)
                        .with_note(Span::new(open, open + 1), "the block opened here")
                        .with_hint("add `}` on its own line after the block's last line")
                } else {
                    Diagnostic::new(
                        format!("unclosed `{o}`"),
                        Span::new(open, open + 1),
                        format!("this `{o}` has no matching `{c}`"),
                    )
                    .with_hint(format!(
                        "add `{c}`; inside brackets a line break does not end the statement, \
                         so everything after the `{o}` was read as part of it"
                    ))
                }
            }
        }
    }
}

/// The span of a keyword that only begins top-level statements (`stack`, `head`, ...)
/// when one starts a line at `pos`: inside a block it means a `}` was forgotten.
fn top_level_statement_at(src: &str, pos: usize) -> Option<Span> {
    let (word, span) = first_word_of_line(src, pos)?;
    let top_only = STATEMENT_KEYWORDS.contains(&word.as_str()) && word != "norm" && word != "skip";
    (top_only && span.start == pos).then_some(span)
}

fn opener_of(close: u8) -> u8 {
    match close {
        b')' => b'(',
        b']' => b'[',
        _ => b'{',
    }
}

// ---------------------------------------------------------------------------------
// pest errors -> diagnostics

/// What the parser wanted at the error position, in the order it is listed to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Want {
    Statement,
    BlockItem,
    TrainSetting,
    ModelName,
    BlockName,
    StepName,
    CallName,
    Argument,
    Value,
    Eq,
    Star,
    LBrace,
    LBrack,
    LParen,
    Comma,
    RParen,
    RBrack,
    Norm,
    Skip,
    Shared,
    Order,
    Operator,
    Eol,
    RBrace,
    Eof,
}

fn want_of(rule: Rule) -> Option<Want> {
    use Rule as R;
    Some(match rule {
        R::file
        | R::statement
        | R::const_name
        | R::const_stmt
        | R::model_stmt
        | R::input_stmt
        | R::embed_stmt
        | R::stack_stmt
        | R::block_stmt
        | R::final_norm_stmt
        | R::head_stmt
        | R::loss_stmt
        | R::learning_stmt
        | R::kw_model
        | R::kw_input
        | R::kw_embed
        | R::kw_block
        | R::kw_stack
        | R::kw_final_norm
        | R::kw_head
        | R::kw_loss
        | R::kw_learning => Want::Statement,
        R::block_item | R::sublayer | R::sublayer_name | R::scheme | R::kw_scheme => {
            Want::BlockItem
        }
        R::train_item | R::train_key => Want::TrainSetting,
        R::model_name => Want::ModelName,
        R::block_name => Want::BlockName,
        R::step | R::step_name => Want::StepName,
        R::call | R::call_name => Want::CallName,
        R::arg | R::arg_name => Want::Argument,
        R::expr
        | R::product
        | R::value
        | R::neg
        | R::float
        | R::int
        | R::bad_number
        | R::bool
        | R::name
        | R::paren
        | R::list => Want::Value,
        R::eq => Want::Eq,
        R::star => Want::Star,
        R::lbrace => Want::LBrace,
        R::lbrack | R::steps => Want::LBrack,
        R::lparen | R::args => Want::LParen,
        R::comma => Want::Comma,
        R::rparen => Want::RParen,
        R::rbrack => Want::RBrack,
        R::kw_norm | R::norm_spec => Want::Norm,
        R::kw_skip | R::skip_spec => Want::Skip,
        R::kw_shared => Want::Shared,
        R::kw_order => Want::Order,
        R::add_op | R::mul_op => Want::Operator,
        R::eol => Want::Eol,
        R::rbrace => Want::RBrace,
        R::EOI => Want::Eof,
        _ => return None,
    })
}

/// The token found at the error position.
#[derive(Clone, Debug, PartialEq)]
enum Found {
    Eof,
    Eol,
    Word(String),
    Number(String),
    Char(char),
}

impl Found {
    fn describe(&self) -> String {
        match self {
            Found::Eof => "end of file".into(),
            Found::Eol => "end of line".into(),
            Found::Word(w) if KEYWORDS.contains(&w.as_str()) => format!("keyword `{w}`"),
            Found::Word(w) | Found::Number(w) => format!("`{}`", shorten(w)),
            Found::Char(c) => format!("`{}`", show_char(*c)),
        }
    }
}

/// A character as the user would type it; invisible ones escaped.
fn show_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() || ('\u{200B}'..='\u{206F}').contains(&c) {
        c.escape_unicode().to_string()
    } else {
        c.to_string()
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn shorten(s: &str) -> String {
    const MAX: usize = 24;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

/// An empty span just after the last non-blank text: "the file ends here".
fn eof_span(src: &str) -> Span {
    let end = src.trim_end().len();
    Span::new(end, end)
}

/// The token at `pos` and its span (empty at the end of a line or of the file).
fn found_at(src: &str, pos: usize) -> (Found, Span) {
    let rest = src.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else {
        return (Found::Eof, eof_span(src));
    };
    if c == '\n' || rest.starts_with("\r\n") {
        return (Found::Eol, Span::new(pos, pos));
    }
    if c.is_ascii_alphabetic() || c == '_' || c.is_ascii_digit() {
        let len = rest
            .find(|ch: char| !(is_ident_char(ch) || (c.is_ascii_digit() && ch == '.')))
            .unwrap_or(rest.len());
        let word = rest[..len].to_string();
        let span = Span::new(pos, pos + len);
        return if c.is_ascii_digit() {
            (Found::Number(word), span)
        } else {
            (Found::Word(word), span)
        };
    }
    (Found::Char(c), Span::new(pos, pos + c.len_utf8()))
}

/// The last token before `pos`, skipping whitespace and comments.
fn prev_token(src: &str, pos: usize) -> Option<(String, Span)> {
    let mut end = pos.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    loop {
        let line_start = src[..end].rfind('\n').map_or(0, |i| i + 1);
        let line = &src[line_start..end];
        let code = match line.find('#') {
            Some(i) => &line[..i],
            None => line,
        };
        let trimmed = code.trim_end();
        if let Some(last) = trimmed.chars().last() {
            let tok_end = line_start + trimmed.len();
            let tok_start = if is_ident_char(last) {
                line_start
                    + trimmed
                        .char_indices()
                        .rev()
                        .find(|(_, ch)| !(is_ident_char(*ch) || *ch == '.'))
                        .map_or(0, |(i, ch)| i + ch.len_utf8())
            } else if last == '/' && trimmed.ends_with("//") {
                tok_end - 2
            } else {
                tok_end - last.len_utf8()
            };
            return Some((
                src[tok_start..tok_end].to_string(),
                Span::new(tok_start, tok_end),
            ));
        }
        if line_start == 0 {
            return None;
        }
        end = line_start - 1;
    }
}

/// The first word of the line containing `pos`, with its span.
fn first_word_of_line(src: &str, pos: usize) -> Option<(String, Span)> {
    let pos = pos.min(src.len());
    let line_start = src.get(..pos)?.rfind('\n').map_or(0, |i| i + 1);
    let line = &src[line_start..];
    let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
    let start = line_start + indent;
    let len = src[start..]
        .find(|c: char| !is_ident_char(c))
        .unwrap_or(src.len() - start);
    if len == 0 {
        return None;
    }
    Some((
        src[start..start + len].to_string(),
        Span::new(start, start + len),
    ))
}

/// Edit distance counting a swap of neighbours as one edit (`nrom` -> `norm`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if word.len() > 32 {
        return None;
    }
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d > 0 && *d <= 2 && *d * 3 <= c.len())
        .min()
        .map(|(_, c)| c)
}

fn join_or(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn call_phrase(prev: Option<&str>) -> &'static str {
    match prev {
        Some("input") => "an input such as `tokens(...)` or `features(...)`",
        Some("norm") => "a norm placement or kind such as `pre`, `post`, `peri` or `layernorm`",
        Some("skip") => "a skip kind such as `residual`, `none`, `scaled(0.5)` or `hourglass(...)`",
        Some("final_norm") => "a norm kind such as `layernorm`, `rmsnorm` or `none`",
        Some("head") => "a head such as `lm`, `classifier(classes = 10)` or `linear(out = 4)`",
        Some("loss") => "a loss such as `cross_entropy` or `mse`",
        Some("scheme") => {
            "a scheme such as `lie_trotter(attn, ffn)` or a step list `[ffn * 0.5, attn]`"
        }
        Some("=") => "a sublayer kind such as `attention(heads = 4)` or `ffn(hidden = 512)`",
        _ => "a name",
    }
}

fn phrase(w: Want, prev: Option<&str>) -> String {
    match w {
        Want::Statement => {
            "a statement such as `block`, `stack`, `head` or a constant `name = value`".into()
        }
        Want::BlockItem => {
            "a sublayer `name = kind(...)` or a `norm`, `skip` or `scheme` line".into()
        }
        Want::TrainSetting => "a setting `name = value` such as `steps = 1000`".into(),
        Want::ModelName => "a model name".into(),
        Want::BlockName => "a block name".into(),
        Want::StepName => "a sublayer name".into(),
        Want::CallName => call_phrase(prev).into(),
        Want::Argument => "an argument".into(),
        Want::Value => "a value (a number, a name, `(...)` or `[...]`)".into(),
        Want::Eq => "`=`".into(),
        Want::Star => "`*`".into(),
        Want::LBrace => "`{`".into(),
        Want::LBrack => "`[`".into(),
        Want::LParen => "`(`".into(),
        Want::Comma => "`,`".into(),
        Want::RParen => "`)`".into(),
        Want::RBrack => "`]`".into(),
        Want::Norm => "`norm`".into(),
        Want::Skip => "`skip`".into(),
        Want::Shared => "`shared`".into(),
        Want::Order => "`order`".into(),
        Want::Operator => "an operator".into(),
        Want::Eol => "the end of the line".into(),
        Want::RBrace => "`}`".into(),
        Want::Eof => "the end of the file".into(),
    }
}

fn syntax_errors(
    src: &str,
    err: pest::error::Error<Rule>,
    brackets: Option<BracketProblem>,
) -> Diagnostics {
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let main = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => describe_error(src, pos, positives),
        ErrorVariant::CustomError { message } => Diagnostic::new(
            "the file is too complex to parse",
            Span::new(pos, pos),
            format!("the parser stopped here ({message})"),
        ),
    };
    match brackets {
        Some(problem) if problem.explains(src, pos) => vec![problem.diagnostic(src, Some(pos))],
        Some(problem) => vec![main, problem.diagnostic(src, None)],
        None => vec![main],
    }
}

/// What the phrasing rules see at a parse error.
struct ErrorSite<'a> {
    src: &'a str,
    pos: usize,
    /// What the parser wanted, in the order it is listed to the user.
    wants: Vec<Want>,
    /// The last token before the error.
    prev: Option<(String, Span)>,
    /// The token at the error and its span.
    found: Found,
    span: Span,
    /// The first word of the error's line.
    first: Option<(String, Span)>,
}

impl<'a> ErrorSite<'a> {
    fn new(src: &'a str, pos: usize, positives: &[Rule]) -> Self {
        let prev = prev_token(src, pos);
        let wants = wanted(positives, prev.as_ref().map(|(t, _)| t.as_str()));
        let (found, span) = found_at(src, pos);
        ErrorSite {
            src,
            pos,
            wants,
            prev,
            found,
            span,
            first: first_word_of_line(src, pos),
        }
    }

    fn has(&self, w: Want) -> bool {
        self.wants.contains(&w)
    }

    fn prev_text(&self) -> Option<&str> {
        self.prev.as_ref().map(|(t, _)| t.as_str())
    }

    fn found_word(&self) -> Option<&str> {
        match &self.found {
            Found::Word(w) => Some(w.as_str()),
            _ => None,
        }
    }

    /// Whether the error comes right after the line's first word (`name <here>`).
    fn at_second_word(&self) -> bool {
        matches!(&self.first, Some((_, s)) if self.prev.as_ref().is_some_and(|(_, p)| p == s))
    }

    /// Whether the previous token ends exactly at the error, with no space between.
    fn prev_touches(&self) -> bool {
        self.prev.as_ref().is_some_and(|(_, p)| p.end == self.pos)
    }

    /// A statement keyword the line's first word is probably a typo of.
    fn first_word_guess(&self) -> Option<&'static str> {
        self.first
            .as_ref()
            .and_then(|(w, _)| closest(w, STATEMENT_KEYWORDS))
    }
}

/// The wanted things pest listed, deduplicated and with the ones that would only add noise
/// dropped.
fn wanted(positives: &[Rule], prev: Option<&str>) -> Vec<Want> {
    let mut wants: Vec<Want> = positives.iter().filter_map(|r| want_of(*r)).collect();
    wants.sort();
    wants.dedup();
    if wants.contains(&Want::Statement) {
        wants.retain(|w| *w != Want::Eof);
    }
    if wants.iter().any(|w| *w != Want::Operator) {
        wants.retain(|w| *w != Want::Operator);
    }
    if wants.contains(&Want::CallName) && prev == Some("scheme") {
        // The scheme phrase already mentions the step list.
        wants.retain(|w| *w != Want::LBrack);
    }
    wants
}

/// A hint for one kind of mistake. The first rule whose `applies` holds phrases the hint
/// (and may reword the message); later rules are not consulted, even when it adds none.
struct HintRule {
    applies: fn(&ErrorSite) -> bool,
    phrase: fn(&ErrorSite, &mut Diagnostic),
}

/// The mistakes the parser recognises, most specific first.
static HINT_RULES: &[HintRule] = &[
    // `d: 128`
    HintRule {
        applies: |s| s.has(Want::Eq) && s.found == Found::Char(':'),
        phrase: |s, d| {
            d.hint = Some(format!(
                "use `=`, not `:`: write `{} = ...`",
                s.prev_text().unwrap_or("name")
            ));
        },
    },
    // `layer { ... }` without `block`
    HintRule {
        applies: |s| s.has(Want::Eq) && s.found == Found::Char('{') && s.at_second_word(),
        phrase: |s, d| {
            d.hint = Some(format!(
                "to define a block, write `block {} {{ ... }}`",
                s.prev_text().unwrap_or("name")
            ));
        },
    },
    // `hidden-size = 512`
    HintRule {
        applies: |s| {
            s.has(Want::Eq)
                && s.found == Found::Char('-')
                && s.src[s.span.end..].starts_with(is_ident_char)
                && s.prev_touches()
        },
        phrase: |s, d| {
            let rest: String = s.src[s.span.end..]
                .chars()
                .take_while(|c| is_ident_char(*c))
                .collect();
            d.hint = Some(format!(
                "names may contain only letters, digits and `_`: write `{}_{rest}`",
                s.prev_text().unwrap_or("")
            ));
        },
    },
    // `stak layer * 4`: a misspelt statement keyword
    HintRule {
        applies: |s| s.has(Want::Eq) && s.at_second_word() && s.first_word_guess().is_some(),
        phrase: |s, d| {
            if let (Some((w, _)), Some(guess)) = (&s.first, s.first_word_guess()) {
                d.hint = Some(format!("`{w}` is not a keyword; did you mean `{guess}`?"));
            }
        },
    },
    // `name something`: a definition without `=`
    HintRule {
        applies: |s| s.has(Want::Eq) && s.at_second_word(),
        phrase: |s, d| {
            let name = s.prev_text().unwrap_or("name");
            d.hint = Some(if s.has(Want::BlockItem) || in_block(s.src, s.pos) {
                format!(
                    "a sublayer is defined as `{name} = kind(...)`, e.g. `{name} = ffn(hidden = 512)`"
                )
            } else {
                format!("a constant is defined as `{name} = value`, e.g. `{name} = 128`")
            });
        },
    },
    // `scheme []`
    HintRule {
        applies: |s| {
            s.has(Want::StepName) && s.found == Found::Char(']') && s.prev_text() == Some("[")
        },
        phrase: |_, d| {
            d.message = "a scheme step list cannot be empty".into();
            d.label = "expected a sublayer name".into();
            d.hint = Some(
                "list the steps, e.g. `scheme [ffn * 0.5, attn, ffn * 0.5]`, \
                 or use a named scheme such as `lie_trotter(attn, ffn)`"
                    .into(),
            );
        },
    },
    // `stack layer 4`
    HintRule {
        applies: |s| s.has(Want::Star) && s.prev.is_some(),
        phrase: |s, d| {
            let name = s.prev_text().unwrap_or("layer");
            d.hint = Some(format!(
                "repeat a block with `stack {name} * N`, e.g. `stack {name} * 4`"
            ));
        },
    },
    // `block { ... }`
    HintRule {
        applies: |s| s.has(Want::BlockName) && s.found == Found::Char('{'),
        phrase: |_, d| d.hint = Some("name the block: `block layer { ... }`".into()),
    },
    // `order` without its list
    HintRule {
        applies: |s| s.has(Want::Value) && s.prev_text() == Some("order"),
        phrase: |_, d| {
            d.hint = Some(
                "give the execution order as a list of layer indices, e.g. `order [0, 1, 1, 3]`"
                    .into(),
            );
        },
    },
    // `stack layer *` without the count
    HintRule {
        applies: |s| {
            s.has(Want::Value)
                && s.prev_text() == Some("*")
                && s.first.as_ref().is_some_and(|(w, sp)| {
                    // The error can be on the first word itself, after a `*` on an
                    // earlier line; then this range would run backwards.
                    w == "stack"
                        && s.src
                            .get(sp.end..s.pos)
                            .is_some_and(|between| between.matches('*').count() == 1)
                })
        },
        phrase: |_, d| d.hint = Some("give the number of layers, e.g. `stack layer * 4`".into()),
    },
    // `d = 64 *` at the end of a line
    HintRule {
        applies: |s| {
            s.has(Want::Value)
                && matches!(s.found, Found::Eol | Found::Eof)
                && matches!(s.prev_text(), Some("+" | "-" | "*" | "/" | "//" | "%"))
        },
        phrase: |_, d| {
            d.hint = Some(
                "an expression cannot end with an operator; to continue it on the next line, \
                 wrap it in parentheses"
                    .into(),
            );
        },
    },
    // `d = block`; any other word where a value goes ends the search here too
    HintRule {
        applies: |s| s.has(Want::Value) && s.found_word().is_some(),
        phrase: |s, d| {
            if let Some(w) = s.found_word().filter(|w| KEYWORDS.contains(w)) {
                d.hint = Some(format!(
                    "`{w}` is a keyword, so it cannot be used as a value"
                ));
            }
        },
    },
    // `d = 64 stack layer * 4`
    HintRule {
        applies: |s| s.has(Want::Eol) && starts_statement(s.src, s.pos, s.found_word()),
        phrase: |s, d| {
            d.hint = Some(format!(
                "each statement goes on its own line: start a new line before `{}`",
                s.found_word().unwrap_or("")
            ));
        },
    },
    // `block layer` with `{` on the next line
    HintRule {
        applies: |s| s.has(Want::LBrace) && s.found == Found::Eol,
        phrase: |_, d| d.hint = Some("put the `{` on the same line as the block name".into()),
    },
    // `eps = .5`
    HintRule {
        applies: |s| {
            s.has(Want::Value)
                && s.found == Found::Char('.')
                && s.src[s.span.end..].starts_with(|c: char| c.is_ascii_digit())
        },
        phrase: |_, d| d.hint = Some("write a digit before the `.`, as in `0.5`".into()),
    },
    // `d = 64;`
    HintRule {
        applies: |s| s.has(Want::Eol) && s.found == Found::Char(';'),
        phrase: |_, d| {
            d.hint = Some("a statement ends at the end of its line; remove the `;`".into());
        },
    },
    // `d = width(2)`
    HintRule {
        applies: |s| {
            s.has(Want::Eol)
                && s.found == Found::Char('(')
                && s.prev_touches()
                && s.prev_text()
                    .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        },
        phrase: |s, d| {
            d.hint = Some(format!(
                "`{}` is a value here, not a call: expressions cannot take `(...)` arguments",
                s.prev_text().unwrap_or("")
            ));
        },
    },
    // `ffn(hidden = 512 act = relu)`, `[1 2]`
    HintRule {
        applies: |s| s.has(Want::Comma) && matches!(s.found, Found::Word(_) | Found::Number(_)),
        phrase: |s, d| {
            d.hint = Some(if s.has(Want::RParen) {
                "separate arguments with `,`".into()
            } else {
                "separate list items with `,`".into()
            });
        },
    },
];

fn describe_error(src: &str, pos: usize, positives: &[Rule]) -> Diagnostic {
    let site = ErrorSite::new(src, pos, positives);
    if let Some(d) = keyword_as_name(&site) {
        return d;
    }
    let mut d = expected_here(&site);
    if let Some(rule) = HINT_RULES.iter().find(|rule| (rule.applies)(&site)) {
        (rule.phrase)(&site, &mut d);
    }
    if d.hint.is_none() {
        d.hint = keyword_typo_hint(&site);
    }
    d
}

/// `block = 4`: a keyword used as a constant (or sublayer) name.
fn keyword_as_name(s: &ErrorSite) -> Option<Diagnostic> {
    let (word, wspan) = s.first.as_ref()?;
    let after_word = s.src[wspan.end..].trim_start_matches([' ', '\t']);
    let eq_pos = s.src.len() - after_word.len();
    let is_name = KEYWORDS.contains(&word.as_str())
        && after_word.starts_with('=')
        && !after_word.starts_with("==")
        && (eq_pos == s.pos || wspan.start == s.pos);
    is_name.then(|| {
        Diagnostic::new(
            format!("`{word}` is a keyword and cannot be used as a name"),
            *wspan,
            "reserved keyword",
        )
        .with_hint(format!(
            "keywords are reserved; pick another name such as `my_{word}`"
        ))
    })
}

/// "expected ... after `...`", labelled with what was found instead.
fn expected_here(s: &ErrorSite) -> Diagnostic {
    let mut parts: Vec<String> = s.wants.iter().map(|w| phrase(*w, s.prev_text())).collect();
    if parts.is_empty() {
        parts.push("something else".into());
    }
    let expected = join_or(&parts);
    let after = match &s.prev {
        Some((t, _)) => format!(" after `{}`", shorten(t)),
        None => String::new(),
    };
    let found_label = match s.found {
        Found::Eol => "the line ends here".to_string(),
        Found::Eof => "the file ends here".to_string(),
        _ => format!("unexpected {}", s.found.describe()),
    };
    let mut d = Diagnostic::new(format!("expected {expected}{after}"), s.span, found_label);

    // A character that cannot start any token gets its own message.
    if let Found::Char(c) = s.found {
        if !"=*,()[]{}+-/%#.:;\"'<>!&|^~@?\\`".contains(c) && !c.is_whitespace() {
            d.message = format!("unexpected character `{}`", show_char(c));
            d.label = format!("expected {expected} here");
        } else if c.is_whitespace() || c.is_control() {
            d.message = format!("unexpected character `{}`", show_char(c));
            d.label = format!("expected {expected}{after}");
            d.hint = Some("only spaces, tabs and line breaks may separate tokens".into());
        }
    }
    d
}

/// "did you mean `norm`?" for a word close to a keyword that was wanted here.
fn keyword_typo_hint(s: &ErrorSite) -> Option<String> {
    let w = s.found_word()?;
    let mut candidates: Vec<&str> = Vec::new();
    if s.has(Want::Statement) {
        candidates.extend_from_slice(STATEMENT_KEYWORDS);
    }
    if s.has(Want::BlockItem) {
        candidates.extend_from_slice(&["norm", "skip", "scheme"]);
    }
    for (want, kw) in [
        (Want::Norm, "norm"),
        (Want::Skip, "skip"),
        (Want::Shared, "shared"),
        (Want::Order, "order"),
    ] {
        if s.has(want) {
            candidates.push(kw);
        }
    }
    closest(w, &candidates).map(|guess| format!("did you mean `{guess}`?"))
}

/// Whether `pos` lies inside a `{ ... }` block (by counting braces before it).
fn in_block(src: &str, pos: usize) -> bool {
    let mut depth = 0i64;
    let mut in_comment = false;
    for b in src.as_bytes()[..pos.min(src.len())].iter() {
        match b {
            b'\n' => in_comment = false,
            b'#' => in_comment = true,
            b'{' if !in_comment => depth += 1,
            b'}' if !in_comment => depth -= 1,
            _ => {}
        }
    }
    depth > 0
}

/// Whether the text at `pos` looks like the start of a statement (`stack ...`, `x = ...`).
fn starts_statement(src: &str, pos: usize, word: Option<&str>) -> bool {
    let Some(word) = word else { return false };
    if STATEMENT_KEYWORDS.contains(&word) || word == "scheme" {
        return true;
    }
    let rest = src[pos + word.len()..].trim_start_matches([' ', '\t']);
    rest.starts_with('=') && !rest.starts_with("==")
}

// ---------------------------------------------------------------------------------
// Pairs -> AST

fn span_of(p: &Pair<Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

fn ident(p: &Pair<Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span_of(p),
    }
}

struct Builder {
    diags: Diagnostics,
    train: Option<TrainSection>,
}

impl Builder {
    fn items(&mut self, file: Pair<Rule>) -> Vec<Item> {
        let mut items = Vec::new();
        for s in file
            .into_inner()
            .filter(|p| p.as_rule() == Rule::statement)
            .filter_map(|p| p.into_inner().next())
        {
            if s.as_rule() == Rule::train_stmt {
                self.train_section(s);
            } else {
                items.push(self.statement(s));
            }
        }
        items
    }

    fn train_section(&mut self, s: Pair<Rule>) {
        let whole = span_of(&s);
        let mut settings: Vec<TrainSetting> = Vec::new();
        for item in s.into_inner().filter(|p| p.as_rule() == Rule::train_item) {
            let span = span_of(&item);
            let mut key = None;
            let mut value = None;
            for q in item.into_inner() {
                match q.as_rule() {
                    Rule::train_key => key = Some(ident(&q)),
                    Rule::train_call => {
                        let mut name = None;
                        let mut args = None;
                        let cspan = span_of(&q);
                        for r in q.into_inner() {
                            match r.as_rule() {
                                Rule::call_name => name = Some(ident(&r)),
                                Rule::args => args = Some(self.args(r)),
                                _ => {}
                            }
                        }
                        if let Some(name) = name {
                            value = Some(TrainValue::Call(Call {
                                name,
                                args,
                                span: cspan,
                            }));
                        }
                    }
                    Rule::expr => value = Some(TrainValue::Expr(self.top_expr(q))),
                    _ => {}
                }
            }
            let (Some(key), Some(value)) = (key, value) else {
                self.internal(span);
                continue;
            };
            if let Some(first) = settings.iter().find(|f| f.key.name == key.name) {
                self.diags.push(
                    Diagnostic::new(
                        format!("`{}` is set twice in the train section", key.name),
                        key.span,
                        "second setting",
                    )
                    .with_note(first.key.span, "first set here")
                    .with_hint("keep one of them"),
                );
                continue;
            }
            settings.push(TrainSetting { key, value, span });
        }
        if let Some(first) = &self.train {
            self.diags.push(
                Diagnostic::new("the file has two `train` sections", whole, "second section")
                    .with_note(first.span, "first section")
                    .with_hint("merge them into one `train { }`"),
            );
            return;
        }
        self.train = Some(TrainSection {
            settings,
            span: whole,
        });
    }

    fn statement(&mut self, s: Pair<Rule>) -> Item {
        let rule = s.as_rule();
        let whole = span_of(&s);
        let mut inner = s.into_inner();
        match rule {
            Rule::norm_spec => return Item::Norm(self.norm_spec(whole, inner)),
            Rule::skip_spec => return Item::Skip(self.skip_spec(inner)),
            Rule::block_stmt => return Item::Block(self.block(whole, inner)),
            Rule::stack_stmt => return Item::Stack(self.stack(whole, inner)),
            Rule::const_stmt => {
                let name = inner.next().map(|p| ident(&p));
                let value = inner.find(|p| p.as_rule() == Rule::expr);
                if let (Some(name), Some(value)) = (name, value) {
                    let value = self.top_expr(value);
                    return Item::Const { name, value };
                }
            }
            Rule::embed_stmt => {
                if let Some(kw) = inner.next() {
                    let args = inner.next().map(|a| self.args(a));
                    return Item::Embed(Call {
                        name: ident(&kw),
                        args,
                        span: whole,
                    });
                }
            }
            _ => {
                let _keyword = inner.next();
                if let Some(arg) = inner.next() {
                    match rule {
                        Rule::model_stmt => return Item::Model(ident(&arg)),
                        Rule::input_stmt => return Item::Input(self.call(arg)),
                        Rule::final_norm_stmt => return Item::FinalNorm(self.call(arg)),
                        Rule::head_stmt => return Item::Head(self.call(arg)),
                        Rule::loss_stmt => return Item::Loss(self.call(arg)),
                        Rule::learning_stmt => return Item::Learning(self.call(arg)),
                        _ => {}
                    }
                }
            }
        }
        self.internal(whole)
    }

    /// The grammar and this builder disagree: report instead of panicking.
    fn internal(&mut self, span: Span) -> Item {
        self.diags.push(Diagnostic::new(
            "internal parser error: unexpected syntax tree shape",
            span,
            "while reading this",
        ));
        Item::Model(Ident {
            name: String::new(),
            span,
        })
    }

    fn norm_spec(&mut self, whole: Span, inner: pest::iterators::Pairs<Rule>) -> NormSpec {
        let parts = inner
            .filter(|p| p.as_rule() == Rule::call)
            .map(|p| self.call(p))
            .collect();
        NormSpec { parts, span: whole }
    }

    fn skip_spec(&mut self, inner: pest::iterators::Pairs<Rule>) -> Call {
        let mut calls = inner.filter(|p| p.as_rule() == Rule::call);
        match calls.next() {
            Some(c) => self.call(c),
            None => Call {
                name: Ident {
                    name: String::new(),
                    span: Span::default(),
                },
                args: None,
                span: Span::default(),
            },
        }
    }

    fn call(&mut self, p: Pair<Rule>) -> Call {
        let span = span_of(&p);
        let mut name = None;
        let mut args = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::call_name => name = Some(ident(&q)),
                Rule::args => args = Some(self.args(q)),
                _ => {}
            }
        }
        Call {
            name: name.unwrap_or(Ident {
                name: String::new(),
                span,
            }),
            args,
            span,
        }
    }

    fn args(&mut self, p: Pair<Rule>) -> Vec<Arg> {
        p.into_inner()
            .filter(|q| q.as_rule() == Rule::arg)
            .map(|a| {
                let span = span_of(&a);
                let mut key = None;
                let mut value = None;
                for q in a.into_inner() {
                    match q.as_rule() {
                        Rule::arg_name => key = Some(ident(&q)),
                        Rule::expr => value = Some(self.top_expr(q)),
                        _ => {}
                    }
                }
                Arg {
                    key,
                    value: value.unwrap_or(Expr {
                        kind: ExprKind::Int(0),
                        span,
                    }),
                    span,
                }
            })
            .collect()
    }

    fn block(&mut self, whole: Span, inner: pest::iterators::Pairs<Rule>) -> Block {
        let mut name = Ident {
            name: String::new(),
            span: whole,
        };
        let mut items = Vec::new();
        for p in inner {
            match p.as_rule() {
                Rule::block_name => name = ident(&p),
                Rule::block_item => {
                    let Some(item) = p.into_inner().next() else {
                        continue;
                    };
                    let span = span_of(&item);
                    let rule = item.as_rule();
                    let inner = item.into_inner();
                    items.push(match rule {
                        Rule::norm_spec => BlockItem::Norm(self.norm_spec(span, inner)),
                        Rule::skip_spec => BlockItem::Skip(self.skip_spec(inner)),
                        Rule::scheme => BlockItem::Scheme(self.scheme(inner)),
                        _ => BlockItem::Sublayer(self.sublayer(span, inner)),
                    });
                }
                _ => {}
            }
        }
        Block {
            name,
            items,
            span: whole,
        }
    }

    fn sublayer(&mut self, whole: Span, inner: pest::iterators::Pairs<Rule>) -> Sublayer {
        let mut name = Ident {
            name: String::new(),
            span: whole,
        };
        let mut call = None;
        let mut norm: Option<NormSpec> = None;
        let mut skip: Option<(Call, Span)> = None;
        for p in inner {
            let span = span_of(&p);
            match p.as_rule() {
                Rule::sublayer_name => name = ident(&p),
                Rule::call => call = Some(self.call(p)),
                Rule::norm_spec => {
                    if let Some(first) = &norm {
                        self.duplicate("norm", &name.name, span, first.span);
                    } else {
                        norm = Some(self.norm_spec(span, p.into_inner()));
                    }
                }
                Rule::skip_spec => {
                    if let Some((_, first)) = &skip {
                        self.duplicate("skip", &name.name, span, *first);
                    } else {
                        skip = Some((self.skip_spec(p.into_inner()), span));
                    }
                }
                _ => {}
            }
        }
        Sublayer {
            call: call.unwrap_or(Call {
                name: name.clone(),
                args: None,
                span: whole,
            }),
            name,
            norm,
            skip: skip.map(|(c, _)| c),
            span: whole,
        }
    }

    fn duplicate(&mut self, what: &str, owner: &str, span: Span, first: Span) {
        self.diags.push(
            Diagnostic::new(
                format!("`{what}` is given twice for `{owner}`"),
                span,
                "second one here",
            )
            .with_note(first, "first one here")
            .with_hint(format!("keep one `{what}` clause")),
        );
    }

    fn scheme(&mut self, inner: pest::iterators::Pairs<Rule>) -> Scheme {
        for p in inner {
            match p.as_rule() {
                Rule::call => return Scheme::Named(self.call(p)),
                Rule::steps => {
                    let span = span_of(&p);
                    let steps = p
                        .into_inner()
                        .filter(|q| q.as_rule() == Rule::step)
                        .map(|q| {
                            let span = span_of(&q);
                            let mut sublayer = Ident {
                                name: String::new(),
                                span,
                            };
                            let mut coef = None;
                            for r in q.into_inner() {
                                match r.as_rule() {
                                    Rule::step_name => sublayer = ident(&r),
                                    Rule::expr => coef = Some(self.top_expr(r)),
                                    _ => {}
                                }
                            }
                            Step {
                                sublayer,
                                coef,
                                span,
                            }
                        })
                        .collect();
                    return Scheme::Steps { steps, span };
                }
                _ => {}
            }
        }
        Scheme::Steps {
            steps: Vec::new(),
            span: Span::default(),
        }
    }

    fn stack(&mut self, whole: Span, inner: pest::iterators::Pairs<Rule>) -> Stack {
        let mut block = Ident {
            name: String::new(),
            span: whole,
        };
        let mut count = None;
        let mut shared: Option<Span> = None;
        let mut order: Option<(Expr, Span)> = None;
        let mut order_kw: Option<Span> = None;
        let mut clauses: Vec<StackClause> = Vec::new();
        for p in inner {
            let span = span_of(&p);
            match p.as_rule() {
                Rule::block_name => block = ident(&p),
                Rule::kw_shared => {
                    if let Some(first) = shared {
                        self.duplicate("shared", &block.name, span, first);
                    } else {
                        shared = Some(span);
                    }
                }
                Rule::kw_order => order_kw = Some(span),
                Rule::stack_clause => {
                    let c = self.stack_clause(p);
                    match clauses
                        .iter()
                        .find(|f: &&StackClause| f.word.name == c.word.name)
                    {
                        Some(first) => {
                            let first = first.span;
                            self.duplicate(&c.word.name, &block.name, c.span, first);
                        }
                        None => clauses.push(c),
                    }
                }
                Rule::expr => {
                    let e = self.top_expr(p);
                    match (count.is_none(), order_kw.take(), &order) {
                        (true, _, _) => count = Some(e),
                        (false, Some(kw), Some((_, first))) => {
                            let first = *first;
                            self.duplicate("order", &block.name, kw.to(e.span), first);
                        }
                        (false, Some(kw), None) => {
                            let s = kw.to(e.span);
                            order = Some((e, s));
                        }
                        (false, None, _) => {}
                    }
                }
                _ => {}
            }
        }
        Stack {
            block,
            count: count.unwrap_or(Expr {
                kind: ExprKind::Int(0),
                span: whole,
            }),
            shared,
            order: order.map(|(e, _)| e),
            clauses,
            span: whole,
        }
    }

    fn stack_clause(&mut self, p: Pair<Rule>) -> StackClause {
        let span = span_of(&p);
        let mut word = Ident {
            name: String::new(),
            span,
        };
        let mut value = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::stack_word => word = ident(&q),
                Rule::expr => value = Some(self.top_expr(q)),
                _ => {}
            }
        }
        StackClause { word, value, span }
    }

    // ---- expressions ----

    /// Builds an expression, replacing it by a placeholder if it is too deep.
    fn top_expr(&mut self, p: Pair<Rule>) -> Expr {
        self.expr(p).0
    }

    fn placeholder(span: Span) -> (Expr, usize) {
        (
            Expr {
                kind: ExprKind::Int(0),
                span,
            },
            0,
        )
    }

    fn too_deep(&mut self, span: Span) -> (Expr, usize) {
        self.diags.push(
            Diagnostic::new(
                "expression is too deeply nested",
                span,
                format!("more than {MAX_EXPR_DEPTH} operators deep"),
            )
            .with_hint("split it into several constants"),
        );
        // Large depth so enclosing expressions stop too, without reporting again.
        (Self::placeholder(span).0, usize::MAX)
    }

    /// An `expr` or `product`: a left-associative chain of operands and operators.
    fn expr(&mut self, p: Pair<Rule>) -> (Expr, usize) {
        let whole = span_of(&p);
        let mut acc: Option<(Expr, usize)> = None;
        let mut op = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::add_op | Rule::mul_op => {
                    op = Some(match q.as_str() {
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        "/" => BinOp::Div,
                        "//" => BinOp::FloorDiv,
                        _ => BinOp::Mod,
                    })
                }
                Rule::product => {
                    let rhs = self.expr(q);
                    acc = self.combine(acc, op.take(), rhs);
                }
                Rule::value => {
                    let rhs = self.value(q);
                    acc = self.combine(acc, op.take(), rhs);
                }
                _ => {}
            }
            if acc.as_ref().is_some_and(|(_, d)| *d == usize::MAX) {
                return (Self::placeholder(whole).0, usize::MAX);
            }
        }
        acc.unwrap_or_else(|| Self::placeholder(whole))
    }

    fn combine(
        &mut self,
        acc: Option<(Expr, usize)>,
        op: Option<BinOp>,
        rhs: (Expr, usize),
    ) -> Option<(Expr, usize)> {
        let (lhs, op) = match (acc, op) {
            (Some(lhs), Some(op)) => (lhs, op),
            _ => return Some(rhs),
        };
        if lhs.1 == usize::MAX || rhs.1 == usize::MAX {
            return Some((rhs.0, usize::MAX));
        }
        let depth = lhs.1.max(rhs.1) + 1;
        let span = lhs.0.span.to(rhs.0.span);
        if depth > MAX_EXPR_DEPTH {
            return Some(self.too_deep(span));
        }
        Some((
            Expr {
                kind: ExprKind::Binary(op, Box::new(lhs.0), Box::new(rhs.0)),
                span,
            },
            depth,
        ))
    }

    fn value(&mut self, p: Pair<Rule>) -> (Expr, usize) {
        let whole = span_of(&p);
        let mut negs: Vec<usize> = Vec::new();
        let mut atom = None;
        for q in p.into_inner() {
            if q.as_rule() == Rule::neg {
                negs.push(q.as_span().start());
            } else {
                atom = Some(self.atom(q));
            }
        }
        let (mut e, mut depth) = atom.unwrap_or_else(|| Self::placeholder(whole));
        if depth == usize::MAX {
            return (e, depth);
        }
        for start in negs.into_iter().rev() {
            depth += 1;
            let span = Span::new(start, e.span.end);
            if depth > MAX_EXPR_DEPTH {
                return self.too_deep(span);
            }
            e = Expr {
                kind: ExprKind::Neg(Box::new(e)),
                span,
            };
        }
        (e, depth)
    }

    fn atom(&mut self, p: Pair<Rule>) -> (Expr, usize) {
        let span = span_of(&p);
        let text = p.as_str();
        let leaf = |kind| (Expr { kind, span }, 0);
        match p.as_rule() {
            Rule::int => {
                let digits: String = text.chars().filter(|c| *c != '_').collect();
                match digits.parse::<i64>() {
                    Ok(v) => leaf(ExprKind::Int(v)),
                    Err(_) => {
                        self.diags.push(
                            Diagnostic::new(
                                "integer literal is too large",
                                span,
                                "does not fit in a 64-bit integer",
                            )
                            .with_hint(format!("the largest integer is {} (i64 max)", i64::MAX)),
                        );
                        leaf(ExprKind::Int(0))
                    }
                }
            }
            Rule::float => {
                let digits: String = text.chars().filter(|c| *c != '_').collect();
                match digits.parse::<f64>() {
                    Ok(v) if v.is_finite() => leaf(ExprKind::Float(v)),
                    _ => {
                        self.diags.push(
                            Diagnostic::new(
                                "float literal is too large",
                                span,
                                "does not fit in a 64-bit float",
                            )
                            .with_hint("the largest float is about 1.8e308"),
                        );
                        leaf(ExprKind::Float(0.0))
                    }
                }
            }
            Rule::bad_number => {
                self.diags.push(
                    Diagnostic::new(
                        format!("invalid number `{}`", shorten(text)),
                        span,
                        "not a valid number",
                    )
                    .with_hint(bad_number_hint(text)),
                );
                leaf(ExprKind::Int(0))
            }
            Rule::bool => leaf(ExprKind::Bool(text == "true")),
            Rule::name => leaf(ExprKind::Name(text.to_string())),
            Rule::call_value => {
                let c = self.call(p);
                leaf(ExprKind::Call(Box::new(c)))
            }
            Rule::paren => match p.into_inner().find(|q| q.as_rule() == Rule::expr) {
                Some(inner) => {
                    let (mut e, depth) = self.expr(inner);
                    e.span = span;
                    (e, depth)
                }
                None => Self::placeholder(span),
            },
            Rule::list => {
                let mut items = Vec::new();
                let mut depth = 0;
                for q in p.into_inner().filter(|q| q.as_rule() == Rule::expr) {
                    let (e, d) = self.expr(q);
                    if d == usize::MAX {
                        return (e, d);
                    }
                    depth = depth.max(d + 1);
                    items.push(e);
                }
                if depth > MAX_EXPR_DEPTH {
                    return self.too_deep(span);
                }
                (
                    Expr {
                        kind: ExprKind::List(items),
                        span,
                    },
                    depth,
                )
            }
            _ => {
                self.diags.push(Diagnostic::new(
                    "internal parser error: unexpected expression shape",
                    span,
                    "while reading this",
                ));
                Self::placeholder(span)
            }
        }
    }
}

fn bad_number_hint(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let first_alpha = text.find(|c: char| c.is_ascii_alphabetic());
    if lower.starts_with("0x") || lower.starts_with("0b") || lower.starts_with("0o") {
        "only decimal numbers are supported".into()
    } else if lower.ends_with('e') || lower.ends_with("e+") || lower.ends_with("e-") {
        "an exponent needs digits after `e`, as in `1e-5` or `2.5e3`".into()
    } else if text.ends_with('.') {
        format!("write a digit after the `.`, as in `{text}0`")
    } else if text.starts_with('.') || text.matches('.').count() > 1 {
        "a number has at most one `.`, as in `0.5`".into()
    } else if text.contains("_.") || text.contains("._") || text.ends_with('_') {
        "`_` may only stand between digits, as in `1_000`".into()
    } else if let Some(i) = first_alpha.filter(|i| !lower[*i..].starts_with('e') || *i == 0) {
        let (num, name) = text.split_at(i);
        format!("a name cannot start with a digit; to multiply, write `{num} * {name}`")
    } else {
        "numbers look like `128`, `1_000`, `0.5` or `1e-5`".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::print::print_ast;

    fn ok(src: &str) -> Module {
        match parse(src) {
            Ok(m) => m,
            Err(d) => panic!("{}", crate::diag::render(&d, "t.lam", src, false)),
        }
    }

    fn printed(src: &str) -> String {
        print_ast(&ok(src))
    }

    fn err(src: &str) -> Diagnostic {
        match parse(src) {
            Ok(m) => panic!("expected an error, got {m:#?}"),
            Err(d) => d.into_iter().next().expect("at least one diagnostic"),
        }
    }

    fn const_expr(src: &str) -> Expr {
        match ok(src).items.into_iter().next() {
            Some(Item::Const { value, .. }) => value,
            other => panic!("not a constant: {other:?}"),
        }
    }

    const SPEC_EXAMPLE: &str = "\
model transformer                      # optional; default name is the file stem
d = 128                                # constant: Item::Const
layers = 4
heads = 4
ff = 4 * d                             # expressions: + - * / // %, unary -, parens, names
input tokens(batch = 16, length = 64, vocab = 256)     # Item::Input(Call)
embed(dim = d, positions = learned)
norm pre layernorm(eps = 1e-5)
skip residual
block layer {
    norm peri rmsnorm
    skip scaled(learned)
    attn = attention(heads = heads, causal = true)
    ffn  = ffn(hidden = ff, act = gelu) norm post skip scaled(0.5)
    scheme strang(ffn, attn)
}
stack layer * layers
stack layer * 4 shared
stack layer * 4 order [0, 1, 1, 1, 3]
final_norm layernorm
head lm(tied = true)
loss cross_entropy
";

    #[test]
    fn keyword_at_line_start_after_an_operator() {
        // Inside brackets the value after `*` may be on the next line, where `stack` is
        // the line's first word.
        let d = err("x = (2 *\nstack)\n");
        assert_eq!(
            d.hint.as_deref(),
            Some("`stack` is a keyword, so it cannot be used as a value")
        );
    }

    #[test]
    fn spec_example_prints() {
        let expected = "\
module
  model transformer
  const d = 128
  const layers = 4
  const heads = 4
  const ff = (4 * d)
  input tokens(batch = 16, length = 64, vocab = 256)
  embed(dim = d, positions = learned)
  norm pre layernorm(eps = 1e-5)
  skip residual
  block layer
    norm peri rmsnorm
    skip scaled(learned)
    sublayer attn = attention(heads = heads, causal = true)
    sublayer ffn = ffn(hidden = ff, act = gelu) norm post skip scaled(0.5)
    scheme strang(ffn, attn)
  stack layer * layers
  stack layer * 4 shared
  stack layer * 4 order [0, 1, 1, 1, 3]
  final_norm layernorm
  head lm(tied = true)
  loss cross_entropy
";
        assert_eq!(printed(SPEC_EXAMPLE), expected);
    }

    #[test]
    fn spec_example_items() {
        let m = ok(SPEC_EXAMPLE);
        assert_eq!(m.items.len(), 16);
        assert_eq!(m.span, Span::new(0, SPEC_EXAMPLE.len()));
        assert!(matches!(&m.items[0], Item::Model(id) if id.name == "transformer"));
        let Item::Block(b) = &m.items[9] else {
            panic!("not a block")
        };
        assert_eq!(b.name.name, "layer");
        assert_eq!(&SPEC_EXAMPLE[b.span.start..b.span.start + 6], "block ");
        assert!(SPEC_EXAMPLE[..b.span.end].ends_with('}'));
        assert_eq!(b.items.len(), 5);
        let BlockItem::Sublayer(ffn) = &b.items[3] else {
            panic!("not a sublayer")
        };
        assert_eq!(ffn.name.name, "ffn");
        assert_eq!(ffn.call.name.name, "ffn");
        assert_eq!(ffn.norm.as_ref().map(|n| n.parts.len()), Some(1));
        assert_eq!(
            ffn.skip.as_ref().map(|c| c.name.name.as_str()),
            Some("scaled")
        );
        let Item::Stack(s) = &m.items[12] else {
            panic!("not a stack")
        };
        assert!(s.shared.is_none());
        assert!(matches!(&s.order, Some(Expr { kind: ExprKind::List(v), .. }) if v.len() == 5));
        let Item::Stack(s) = &m.items[11] else {
            panic!("not a stack")
        };
        let shared = s.shared.expect("shared");
        assert_eq!(&SPEC_EXAMPLE[shared.start..shared.end], "shared");
    }

    #[test]
    fn empty_and_comment_only_files_are_empty_modules() {
        for src in [
            "",
            "\n\n",
            "# just a comment",
            "# a\n\n   # b\n",
            "\u{FEFF}d = 1\n",
        ] {
            let m = ok(src);
            assert!(m.items.len() <= 1, "{src:?}");
        }
        assert!(ok("").items.is_empty());
    }

    #[test]
    fn mlp_inputs_and_other_statements() {
        let src = "input features(batch = 32, width = 64)\nfinal_norm none\nhead classifier(classes = 10)\nhead linear(out = 4)\nloss mse\nembed\nembed()\n";
        assert_eq!(
            printed(src),
            "module\n  input features(batch = 32, width = 64)\n  final_norm none\n  head classifier(classes = 10)\n  head linear(out = 4)\n  loss mse\n  embed\n  embed()\n"
        );
        let m = ok(src);
        let Item::Embed(c) = &m.items[6] else {
            panic!("not embed")
        };
        assert_eq!(c.args, Some(vec![]));
        assert_eq!(c.name.name, "embed");
        assert_eq!(c.name.span, Span::new(src.len() - 8, src.len() - 3));
    }

    #[test]
    fn expression_precedence_and_associativity() {
        let p = |s: &str| printed(&format!("x = {s}\n"));
        assert_eq!(p("1 + 2 * 3"), "module\n  const x = (1 + (2 * 3))\n");
        assert_eq!(p("8 - 4 - 2"), "module\n  const x = ((8 - 4) - 2)\n");
        assert_eq!(
            p("8 / 4 // 2 % 3"),
            "module\n  const x = (((8 / 4) // 2) % 3)\n"
        );
        assert_eq!(p("(1 + 2) * 3"), "module\n  const x = ((1 + 2) * 3)\n");
        assert_eq!(p("-d * 2"), "module\n  const x = (-d * 2)\n");
        assert_eq!(p("- -3"), "module\n  const x = -(-3)\n");
        assert_eq!(p("-(d + 1)"), "module\n  const x = -(d + 1)\n");
        assert_eq!(p("2 - -1"), "module\n  const x = (2 - -1)\n");
        assert_eq!(
            p("[1, d * 2, [true, false],]"),
            "module\n  const x = [1, (d * 2), [true, false]]\n"
        );
        assert_eq!(p("[]"), "module\n  const x = []\n");
    }

    #[test]
    fn numbers() {
        assert_eq!(const_expr("x = 1_000\n").kind, ExprKind::Int(1000));
        assert_eq!(const_expr("x = 0.5").kind, ExprKind::Float(0.5));
        assert_eq!(const_expr("x = 1e-5").kind, ExprKind::Float(1e-5));
        assert_eq!(const_expr("x = 2.5e3").kind, ExprKind::Float(2500.0));
        assert_eq!(const_expr("x = 1E+2").kind, ExprKind::Float(100.0));
        assert_eq!(
            const_expr("x = 9223372036854775807").kind,
            ExprKind::Int(i64::MAX)
        );
        assert_eq!(const_expr("x = true").kind, ExprKind::Bool(true));
        assert_eq!(const_expr("x = gelu").kind, ExprKind::Name("gelu".into()));
        let d = err("x = 9223372036854775808\n");
        assert_eq!(d.message, "integer literal is too large");
        assert!(d.hint.unwrap().contains("9223372036854775807"));
        assert_eq!(d.span, Span::new(4, 23));
        assert_eq!(err("x = 1e999").message, "float literal is too large");
        for bad in ["1e", "1.", "1_", "4d", "1.5.3", "0x10", "1e+"] {
            let d = err(&format!("x = {bad}\n"));
            assert_eq!(d.message, format!("invalid number `{bad}`"), "{bad}");
            assert_eq!(d.span, Span::new(4, 4 + bad.len()));
        }
    }

    #[test]
    fn floats_print_round_trip() {
        for v in [0.5, 1e-5, 2.5e3, 1e20, 0.1, 1.0 / 3.0, 123456.789, 5e-324] {
            let text = printed(&format!("x = {v:?}\n"));
            let shown = text.trim_end().rsplit(' ').next().unwrap();
            let back = const_expr(&format!("x = {shown}"));
            assert_eq!(back.kind, ExprKind::Float(v), "{v:?} printed as {shown}");
        }
    }

    #[test]
    fn spans() {
        let src = "input tokens(batch = 16, length = 4 * 16)\n";
        let Item::Input(c) = &ok(src).items[0] else {
            panic!()
        };
        let text = |s: Span| &src[s.start..s.end];
        assert_eq!(text(c.span), "tokens(batch = 16, length = 4 * 16)");
        assert_eq!(text(c.name.span), "tokens");
        let args = c.args.as_ref().unwrap();
        assert_eq!(text(args[0].span), "batch = 16");
        assert_eq!(text(args[0].key.as_ref().unwrap().span), "batch");
        assert_eq!(text(args[1].value.span), "4 * 16");
        let e = const_expr("x = -(1 + 2) * y");
        assert_eq!(e.span, Span::new(4, 16));
        let ExprKind::Binary(BinOp::Mul, l, r) = e.kind else {
            panic!()
        };
        assert_eq!((l.span, r.span), (Span::new(4, 12), Span::new(15, 16)));
        let ExprKind::Neg(inner) = l.kind else {
            panic!()
        };
        assert_eq!(
            inner.span,
            Span::new(5, 12),
            "parenthesised span includes the parens"
        );
    }

    #[test]
    fn block_items_and_schemes() {
        let src = "\
block macaron {
  norm peri rmsnorm(eps = 1e-6)   # two parts
  ffn = ffn(hidden = 512) skip scaled(0.5) norm post
  attn = attention(heads = 4)

  # comment line inside
  scheme [ffn * 0.5, attn, ffn * 1/2]
}
block par { a = linear\n b = linear(bias = false)\n scheme parallel(a, b) }
block yoshida { f = ffn(hidden = 8)
  scheme lie_trotter(f, h = 0.5)
}
block one { x = attention }
block empty {}
";
        let expected = "\
module
  block macaron
    norm peri rmsnorm(eps = 1e-6)
    sublayer ffn = ffn(hidden = 512) norm post skip scaled(0.5)
    sublayer attn = attention(heads = 4)
    scheme [ffn * 0.5, attn, ffn * (1 / 2)]
  block par
    sublayer a = linear
    sublayer b = linear(bias = false)
    scheme parallel(a, b)
  block yoshida
    sublayer f = ffn(hidden = 8)
    scheme lie_trotter(f, h = 0.5)
  block one
    sublayer x = attention
  block empty
";
        assert_eq!(printed(src), expected);
        let m = ok(src);
        let Item::Block(b) = &m.items[0] else {
            panic!()
        };
        let BlockItem::Scheme(Scheme::Steps { steps, span }) = &b.items[3] else {
            panic!()
        };
        assert_eq!(&src[span.start..span.end], "[ffn * 0.5, attn, ffn * 1/2]");
        assert_eq!(&src[steps[2].span.start..steps[2].span.end], "ffn * 1/2");
        assert!(steps[1].coef.is_none());
        let BlockItem::Norm(n) = &b.items[0] else {
            panic!()
        };
        assert_eq!(
            &src[n.span.start..n.span.end],
            "norm peri rmsnorm(eps = 1e-6)"
        );
    }

    #[test]
    fn newlines_inside_brackets_are_insignificant() {
        let src = "\
input tokens(
    batch = 16,     # per step
    length = 64,
    vocab = 256,
)
x = (1 +
     2)
ord = [0,
  1, # comment ] with a bracket
  2]
block b {
  scheme [
    f * 0.5,
    g,
  ]
}
";
        let p = printed(src);
        assert!(
            p.contains("input tokens(batch = 16, length = 64, vocab = 256)"),
            "{p}"
        );
        assert!(p.contains("const x = (1 + 2)"), "{p}");
        assert!(p.contains("const ord = [0, 1, 2]"), "{p}");
        assert!(p.contains("scheme [f * 0.5, g]"), "{p}");
    }

    #[test]
    fn crlf_line_endings() {
        let p = printed("d = 1\r\nblock b {\r\n  x = linear\r\n}\r\nstack b * d\r\n");
        assert_eq!(
            p,
            "module\n  const d = 1\n  block b\n    sublayer x = linear\n  stack b * d\n"
        );
    }

    #[test]
    fn keyword_prefixes_are_plain_names() {
        let p = printed("normal = 1\nmodels = 2\nshared_x = 3\nblocks = true_ + false_\n");
        assert!(p.contains("const blocks = (true_ + false_)"), "{p}");
    }

    #[test]
    fn stack_options_in_either_order() {
        let p = printed("stack b * 2 order [1, 0] shared\n");
        assert_eq!(p, "module\n  stack b * 2 shared order [1, 0]\n");
        let d = err("stack b * 2 shared shared\n");
        assert_eq!(d.message, "`shared` is given twice for `b`");
        assert_eq!(
            err("stack b * 2 order [0] order [1]\n").message,
            "`order` is given twice for `b`"
        );
    }

    #[test]
    fn syntax_error_messages() {
        let cases: &[(&str, &str)] = &[
            ("d 128\n", "expected `=` after `d`"),
            ("d = 4 *\n", "expected a value (a number, a name, `(...)` or `[...]`) after `*`"),
            ("stack layer 4\n", "expected `*` after `layer`"),
            ("block {\n}\n", "expected a block name after `block`"),
            ("block = 4\n", "`block` is a keyword and cannot be used as a name"),
            ("order = [1]\n", "`order` is a keyword and cannot be used as a name"),
            ("block b {\n  norm = ffn\n}\n", "`norm` is a keyword and cannot be used as a name"),
            ("d = 1 e = 2\n", "expected the end of the line after `1`"),
            ("block b {\n scheme []\n}\n", "a scheme step list cannot be empty"),
            ("d = $\n", "unexpected character `$`"),
            ("skip\n", "expected a skip kind such as `residual`, `none`, `scaled(0.5)` or `hourglass(...)` after `skip`"),
            ("foo\n", "expected `=` after `foo`"),
            ("= 3\n", "expected a statement such as `block`, `stack`, `head` or a constant `name = value`"),
            ("block b {\n ffn = \n}\n", "expected a sublayer kind such as `attention(heads = 4)` or `ffn(hidden = 512)` after `=`"),
            ("d = 1 }\n", "unmatched `}`"),
            ("block b {\n x = linear\n", "unclosed `{`: the block has no closing `}`"),
            ("x = (1]\n", "unclosed `(` before `]`"),
        ];
        for (src, message) in cases {
            assert_eq!(err(src).message, *message, "for {src:?}");
        }
    }

    #[test]
    fn colon_hint() {
        let d = err("d: 128\n");
        assert_eq!(d.span, Span::new(1, 2));
        assert!(d.hint.unwrap().contains("use `=`"));
    }

    #[test]
    fn bracket_problems_and_other_errors() {
        let messages = |src: &str| -> Vec<String> {
            parse(src)
                .unwrap_err()
                .into_iter()
                .map(|d| d.message)
                .collect()
        };
        // Independent: both are reported, in source order.
        assert_eq!(
            messages("d 1\nx = (1\n"),
            ["expected `=` after `d`", "unclosed `(`"]
        );
        assert_eq!(
            messages("x = [(1 $\n"),
            ["unexpected character `$`", "unclosed `(`"]
        );
        assert_eq!(
            messages("block b {\n  d 5\n"),
            [
                "expected `=` after `d`",
                "unclosed `{`: the block has no closing `}`"
            ]
        );
        // Cascades: only the bracket.
        assert_eq!(
            messages("head lm(tied = true\nloss mse\n"),
            ["unclosed `(`"]
        );
        assert_eq!(messages("x = (4 *\n"), ["unclosed `(`"]);
        assert_eq!(
            messages("block b {\n a = f(x = 1\n c = g\n}\n"),
            ["unclosed `(` before `}`"]
        );
    }

    #[test]
    fn nesting_limit() {
        let nested = |n: usize| format!("x = {}1{}\n", "(".repeat(n), ")".repeat(n));
        let e = const_expr(&nested(MAX_NESTING));
        assert_eq!(e.kind, ExprKind::Int(1));
        let d = err(&nested(MAX_NESTING + 1));
        assert_eq!(d.message, "brackets are nested too deeply");
        assert_eq!(d.span, Span::new(4 + MAX_NESTING, 5 + MAX_NESTING));
        let lists = format!(
            "x = {}{}\n",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert!(parse(&lists).is_ok());
        for open in ["(", "[", "{"] {
            assert!(parse(&open.repeat(100_000)).is_err());
        }
        let block = format!(
            "block b {{ x = f(a = {}1{}) }}\n",
            "(".repeat(62),
            ")".repeat(62)
        );
        assert!(parse(&block).is_ok());
    }

    #[test]
    fn long_operator_chains_are_rejected_not_overflowed() {
        let chain = |n: usize| format!("x = 1{}\n", " + 1".repeat(n));
        assert!(parse(&chain(MAX_EXPR_DEPTH)).is_ok());
        let d = err(&chain(200_000));
        assert_eq!(d.message, "expression is too deeply nested");
        let negs = format!("x = {}1\n", "-".repeat(100_000));
        assert_eq!(err(&negs).message, "expression is too deeply nested");
        let inner = format!("({})", vec!["1"; 200].join(" * "));
        let nested = format!("x = {}\n", [inner.as_str(); 2].join(" + "));
        assert!(parse(&nested).is_ok());
    }

    #[test]
    fn size_limit_and_utf8() {
        let big = "#".repeat(MAX_INPUT_BYTES + 1);
        assert!(err(&big).message.starts_with("the file is too large"));
        let d = parse_bytes(b"d = 1 # caf\xc3\n").unwrap_err();
        assert_eq!(d[0].span.start, 11);
        assert!(d[0].message.contains("not valid UTF-8"), "{}", d[0].message);
        let d = parse_bytes(b"d = 1\n\xff").unwrap_err();
        assert_eq!(d[0].span, Span::new(6, 7));
        assert!(parse_bytes("d = 1 # café\n".as_bytes()).is_ok());
    }
}
