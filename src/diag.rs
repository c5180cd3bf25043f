//! Errors as values with spans, and their rendering.
//!
//! Every stage that reads user input reports problems as `Diagnostic`s; nothing on a
//! user-input path panics. Rendering (ariadne) happens only at the edge, in the CLI or
//! in tests.

use serde::Serialize;

/// A byte range into the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// No place in the source: for problems with a command-line override or an unreadable
    /// file. Rendered without a location or excerpt.
    pub const NONE: Span = Span {
        start: usize::MAX,
        end: usize::MAX,
    };

    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
    pub fn is_none(self) -> bool {
        self == Span::NONE
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// One line: what is wrong ("unknown sublayer kind `atention`").
    pub message: String,
    /// Where it is wrong.
    pub span: Span,
    /// The label under the primary span: what was expected there.
    pub label: String,
    /// Extra labelled spans ("`heads` is defined here").
    pub notes: Vec<(Span, String)>,
    /// A hint: how to fix it ("did you mean `attention`?").
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            label: label.into(),
            notes: Vec::new(),
            hint: None,
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn with_note(mut self, span: Span, note: impl Into<String>) -> Self {
        self.notes.push((span, note.into()));
        self
    }
}

/// Diagnostics of one compilation, in source order.
pub type Diagnostics = Vec<Diagnostic>;

/// 1-based line and column (in characters) of a byte offset. Offsets past the end or
/// inside a multi-byte character are clamped, never a panic.
pub fn line_col(src: &str, byte_offset: usize) -> (usize, usize) {
    let before = &src[..floor_boundary(src, byte_offset)];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_boundary(src: &str, offset: usize) -> usize {
    let mut i = offset.min(src.len());
    while !src.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(src: &str, offset: usize) -> usize {
    let mut i = offset.min(src.len());
    while !src.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Characters that would break the layout or the terminal (other line separators,
/// control and bidi-override characters) are drawn as spaces, one for one, so that
/// character columns stay those of the original text.
fn displayable(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        let keep = match c {
            '\n' | '\t' => true,
            '\r' => chars.peek() == Some(&'\n'),
            '\u{200E}' | '\u{200F}' | '\u{2028}' | '\u{2029}' => false,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => false,
            c => !c.is_control(),
        };
        out.push(if keep { c } else { ' ' });
    }
    out
}

/// Renders diagnostics with ariadne. The first line of each is `file:line:col: error:
/// message` (the form editors and grep understand); the output is deterministic and has
/// ANSI colours only when `color` is set.
pub fn render(diags: &[Diagnostic], file_name: &str, src: &str, color: bool) -> String {
    let shown = displayable(src);
    let mut out = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if d.span.is_none() {
            out.push_str(&unlocated(d, file_name, color));
            continue;
        }
        // A source excerpt of a huge line (minified or generated input) helps nobody.
        let mut spans = std::iter::once(d.span).chain(d.notes.iter().map(|(s, _)| *s));
        if spans.any(|s| line_len(src, s.start) > MAX_SHOWN_LINE) {
            out.push_str(&plain(d, file_name, src));
            continue;
        }
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            render_one(d, file_name, src, &shown, color)
        }));
        // ariadne is not ours to audit; if it ever panics, still report the error.
        out.push_str(&rendered.unwrap_or_else(|_| plain(d, file_name, src)));
    }
    out
}

const MAX_SHOWN_LINE: usize = 1000;

/// The length in bytes of the line containing `offset`.
fn line_len(src: &str, offset: usize) -> usize {
    let at = floor_boundary(src, offset);
    let start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = src[at..].find('\n').map_or(src.len(), |i| at + i);
    end - start
}

/// A span clamped into the text. A position at the very end of a text that ends with a
/// newline is moved onto that newline, where ariadne draws it (end of the last line).
fn clamp(src: &str, span: Span) -> Span {
    let at_end = |i: usize| {
        if i >= src.len() && src.ends_with('\n') {
            src.len() - 1
        } else {
            i
        }
    };
    let start = floor_boundary(src, at_end(span.start));
    let end = ceil_boundary(src, at_end(span.end).max(start));
    Span::new(start, end)
}

/// A byte span as a character range of `src`, clamped into the text.
fn char_range(src: &str, span: Span) -> std::ops::Range<usize> {
    let span = clamp(src, span);
    let start = span.start;
    let end = ceil_boundary(src, span.end.max(start));
    let cs = src[..start].chars().count();
    cs..cs + src[start..end].chars().count()
}

fn header(d: &Diagnostic, file_name: &str, src: &str, color: bool) -> String {
    use ariadne::Fmt;
    let (line, col) = line_col(src, clamp(src, d.span).start);
    let kind = if color {
        format!("{}", "error".fg(ariadne::Color::Red))
    } else {
        "error".to_string()
    };
    format!(
        "{file_name}:{line}:{col}: {kind}: {}\n",
        one_line(&d.message)
    )
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn render_one(d: &Diagnostic, file_name: &str, src: &str, shown: &str, color: bool) -> String {
    use ariadne::{Color, Config, IndexType, Label, Report, ReportKind, Source};
    let id = file_name.to_string();
    let config = Config::default()
        .with_color(color)
        .with_index_type(IndexType::Char);
    let primary = char_range(src, d.span);
    let mut label = Label::new((id.clone(), primary.clone())).with_color(Color::Red);
    if !d.label.is_empty() {
        label = label.with_message(one_line(&d.label));
    }
    let mut report = Report::build(ReportKind::Error, (id.clone(), primary))
        .with_config(config)
        .with_message(one_line(&d.message))
        .with_label(label);
    for (span, note) in &d.notes {
        report = report.with_label(
            Label::new((id.clone(), char_range(src, *span)))
                .with_message(one_line(note))
                .with_color(Color::Cyan),
        );
    }
    if let Some(hint) = &d.hint {
        report = report.with_help(one_line(hint));
    }
    let mut buf = Vec::new();
    let _ = report.finish().write((id, Source::from(shown)), &mut buf);
    let text = String::from_utf8_lossy(&buf);
    // Replace ariadne's `Error: message` line by one that carries the location.
    let body = text.split_once('\n').map_or("", |(_, rest)| rest);
    format!("{}{body}", header(d, file_name, src, color))
}

/// A problem with no place in the source: `file: error: message`, then the hint.
fn unlocated(d: &Diagnostic, file_name: &str, color: bool) -> String {
    use ariadne::Fmt;
    let kind = if color {
        format!("{}", "error".fg(ariadne::Color::Red))
    } else {
        "error".to_string()
    };
    let mut out = format!("{file_name}: {kind}: {}\n", one_line(&d.message));
    if let Some(hint) = &d.hint {
        out.push_str(&format!("  help: {}\n", one_line(hint)));
    }
    out
}

fn plain(d: &Diagnostic, file_name: &str, src: &str) -> String {
    let mut out = header(d, file_name, src, false);
    out.push_str(&format!("  {}\n", one_line(&d.label)));
    for (span, note) in &d.notes {
        let (line, col) = line_col(src, span.start);
        out.push_str(&format!(
            "  note: {file_name}:{line}:{col}: {}\n",
            one_line(note)
        ));
    }
    if let Some(hint) = &d.hint {
        out.push_str(&format!("  help: {}\n", one_line(hint)));
    }
    out
}

/// Diagnostics already rendered to text (with their source lines), carried as an error
/// through code that does not know the source.
#[derive(Debug)]
pub struct Rendered(pub String);

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rendered {}
