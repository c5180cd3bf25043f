//! The diagram as SVG: the stack on the left, each block used drawn once on the right.

use super::{coef, entries, loops, params_under, program_note, short_count, used_blocks, Entry};
use crate::analysis::group_digits;
use crate::elab::{BlockOutline, NormPlacement, Outline, SkipOutline, StepOutline, Tap};
use crate::ir::Graph;
use std::fmt::Write;

/// Left edge and least width of the stack's boxes.
const STACK_X: f64 = 48.0;
const STACK_W: f64 = 280.0;
/// Width of the side boxes of the stack (local losses), right of it.
const SIDE_W: f64 = 170.0;
/// Least width of a block panel.
const PANEL_W: f64 = 640.0;
/// Vertical gap between stacked boxes (an arrow).
const GAP: f64 = 22.0;
const BOX_H: f64 = 40.0;
/// Sizes inside a panel: the stream's offset, a norm box, a sublayer box (at least), a row.
const STREAM_DX: f64 = 110.0;
const NORM_W: f64 = 96.0;
const SUB_W: f64 = 250.0;
const ROW: f64 = 38.0;

const STYLE: &str = "\
text{font-family:'DejaVu Sans',Arial,sans-serif;font-size:12px;fill:#1b1b1b}\
.s{font-size:10.5px;fill:#555}.b{font-weight:bold}.title{font-size:16px;font-weight:bold}\
rect{stroke:#5b6b7f;stroke-width:1}.io{fill:#f4f4f4}.emb{fill:#fdf0dc}.head{fill:#fde3e3}\
.norm{fill:#fff6cf;stroke:#b59a2a}.attn{fill:#dff0df;stroke:#4b8a4b}.ffn{fill:#e6e0f6;stroke:#6a5aa8}\
.lin{fill:#dcecf7;stroke:#3d7ab0}.skip{fill:none;stroke:#999;stroke-dasharray:5 3}\
.loss{fill:#fbe9f3;stroke:#a8487c}.panel{fill:none;stroke:#c4ccd6;stroke-dasharray:2 2}\
.proj{fill:#eeeeee;stroke:#777}\
line,path{stroke:#333;stroke-width:1.3;fill:none}.stream{stroke-width:2.4}\
.cut{stroke:#c0392b;stroke-dasharray:6 3}.bracket{stroke:#6a5aa8;stroke-width:1.6}\
.gray{fill:#888}.red{fill:#c0392b}circle{fill:#fff;stroke:#333;stroke-width:1.3}";

/// Primitives with the drawing's extent, and the widths this model's labels need.
struct Canvas {
    body: String,
    w: f64,
    h: f64,
    /// Width of the stack's boxes.
    stack_w: f64,
    /// Width of a sublayer box.
    sub_w: f64,
}

/// Rough widths of DejaVu Sans text: 12 px regular, 12 px bold and 10.5 px.
fn text_w(s: &str, px_per_char: f64) -> f64 {
    s.chars().count() as f64 * px_per_char
}

impl Canvas {
    fn new(o: &Outline) -> Canvas {
        let subs = [&o.input, &o.embed, &o.head, &o.loss];
        let widest_sub = subs.iter().map(|s| text_w(s, 5.8)).fold(0.0, f64::max);
        let widest_branch = o
            .blocks
            .iter()
            .flat_map(|b| &b.steps)
            .flat_map(|s| &s.branches)
            .map(|b| text_w(&format!("{}: {}", b.name, b.what), 6.2) + 64.0)
            .fold(0.0, f64::max);
        Canvas {
            body: String::new(),
            w: 0.0,
            h: 0.0,
            stack_w: STACK_W.max(widest_sub + 24.0),
            sub_w: SUB_W.max(widest_branch),
        }
    }
    fn side_x(&self) -> f64 {
        STACK_X + self.stack_w + 28.0
    }
    fn panel_x(&self) -> f64 {
        self.side_x() + SIDE_W + 34.0
    }
    fn panel_w(&self) -> f64 {
        PANEL_W + self.sub_w - SUB_W
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Canvas {
    fn grow(&mut self, x: f64, y: f64) {
        self.w = self.w.max(x);
        self.h = self.h.max(y);
    }
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, class: &str, fill: Option<&str>) {
        let fill = fill
            .map(|f| format!(" style=\"fill:{f}\""))
            .unwrap_or_default();
        let _ = writeln!(
            self.body,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"5\" class=\"{class}\"{fill}/>"
        );
        self.grow(x + w, y + h);
    }
    fn text(&mut self, x: f64, y: f64, anchor: &str, class: &str, s: &str) {
        let _ = writeln!(
            self.body,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" class=\"{class}\">{}</text>",
            esc(s)
        );
    }
    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let _ = writeln!(
            self.body,
            "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" class=\"{class}\"/>"
        );
    }
    fn arrow(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let _ = writeln!(
            self.body,
            "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" class=\"{class}\" marker-end=\"url(#a)\"/>"
        );
    }
    fn path(&mut self, d: &str, class: &str, arrow: bool) {
        let marker = if arrow { " marker-end=\"url(#a)\"" } else { "" };
        let _ = writeln!(self.body, "<path d=\"{d}\" class=\"{class}\"{marker}/>");
    }
    fn circle(&mut self, x: f64, y: f64, r: f64, label: &str) {
        let _ = writeln!(
            self.body,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r:.1}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"b\">{}</text>",
            y + 4.0,
            esc(label)
        );
    }
    /// A box with a bold first line and a smaller second one.
    fn labelled(
        &mut self,
        x: f64,
        y: f64,
        w: f64,
        class: &str,
        fill: Option<&str>,
        lines: [&str; 2],
    ) {
        self.rect(x, y, w, BOX_H, class, fill);
        self.text(x + w / 2.0, y + 16.0, "middle", "b", lines[0]);
        self.text(x + w / 2.0, y + 31.0, "middle", "s", lines[1]);
    }
}

/// A light fill per weight set, so layers that share weights share a colour.
fn weights_fill(w: usize) -> String {
    format!("hsl({}, 60%, 92%)", (w * 67 + 200) % 360)
}

/// The diagram of a model as SVG text.
pub fn svg(o: &Outline, g: &Graph) -> String {
    let mut c = Canvas::new(o);
    c.text(16.0, 26.0, "start", "title", &format!("model {}", o.name));
    let summary = format!(
        "{} parameters · {} layers executed · width {} · {}",
        digits(g.param_count()),
        o.layers.len(),
        o.width,
        o.learning
    );
    c.text(16.0, 44.0, "start", "s", &summary);
    stack(&mut c, o, g);
    let mut y = 64.0;
    for (block, weights) in used_blocks(o) {
        y = panel(&mut c, y, o, block, weights, g) + 18.0;
    }
    let (w, h) = (c.w + 16.0, c.h + 16.0);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\">\n\
         <defs><marker id=\"a\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerUnits=\"userSpaceOnUse\" markerWidth=\"9\" markerHeight=\"9\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" style=\"fill:#333;stroke:none\"/></marker></defs>\n\
         <style>{STYLE}</style>\n<rect x=\"0\" y=\"0\" width=\"{w:.0}\" height=\"{h:.0}\" style=\"fill:#fff;stroke:none\"/>\n{}</svg>\n",
        c.body
    )
}

/// The left column: input to loss, one box per executed layer.
fn stack(c: &mut Canvas, o: &Outline, g: &Graph) {
    let cx = STACK_X + c.stack_w / 2.0;
    let mut y = 64.0;
    c.labelled(STACK_X, y, c.stack_w, "io", None, ["input", &o.input]);
    y += BOX_H;
    let embed = params_under(g, "embed") + params_under(g, "pos") + params_under(g, "ff");
    let embed_title = format!("embed · {} params", short_count(embed));
    y = next(c, cx, y, false);
    c.labelled(STACK_X, y, c.stack_w, "emb", None, [&embed_title, &o.embed]);
    y += BOX_H;
    let mut spans = vec![(0.0, 0.0); o.layers.len()];
    for e in entries(o) {
        match e {
            Entry::Layer(i) => {
                let l = o.layers[i];
                y = next(c, cx, y, l.detached);
                spans[i] = (y, y + BOX_H);
                let title = format!("layer {i} · blocks.{}{}", l.weights, program_note(&l));
                let block = &o.blocks[l.block].name;
                let sub = match l.run {
                    0 => format!(
                        "block {block} · {} params",
                        digits(params_under(g, &format!("blocks.{}", l.weights)))
                    ),
                    r => format!("shared weights: run {} of blocks.{}", r + 1, l.weights),
                };
                let fill = weights_fill(l.weights);
                c.labelled(STACK_X, y, c.stack_w, "lin", Some(&fill), [&title, &sub]);
                if let Some(tap) = l.tap {
                    local_loss(c, g, y, tap);
                }
                y += BOX_H;
            }
            Entry::Skipped(w) => {
                // The stream runs past; the unrun weight set sits beside it.
                c.line(cx, y, cx, y + 44.0, "stream");
                c.rect(
                    cx + 20.0,
                    y + 8.0,
                    c.stack_w / 2.0 - 20.0,
                    28.0,
                    "skip",
                    None,
                );
                c.text(
                    cx + c.stack_w / 4.0 + 10.0,
                    y + 26.0,
                    "middle",
                    "s gray",
                    &format!("blocks.{w} skipped"),
                );
                y += 44.0;
            }
        }
    }
    for (first, n) in loops(o) {
        let (top, bottom) = (spans[first].0, spans[first + n - 1].1);
        let x = STACK_X - 10.0;
        c.path(
            &format!(
                "M{:.1},{top:.1} H{x:.1} V{bottom:.1} H{:.1}",
                x + 6.0,
                x + 6.0
            ),
            "bracket",
            false,
        );
        c.text(
            x - 4.0,
            (top + bottom) / 2.0 + 4.0,
            "end",
            "b",
            &format!("×{n}"),
        );
    }
    if let Some(norm) = &o.final_norm {
        y = next(c, cx, y, false);
        let title = format!("final norm · {} params", params_under(g, "final_norm"));
        c.labelled(STACK_X, y, c.stack_w, "norm", None, [&title, norm]);
        y += BOX_H;
    }
    y = next(c, cx, y, false);
    let head = params_under(g, "head");
    let head_title = match head {
        0 => "head".to_string(),
        n => format!("head · {} params", digits(n)),
    };
    c.labelled(STACK_X, y, c.stack_w, "head", None, [&head_title, &o.head]);
    y += BOX_H;
    y = next(c, cx, y, false);
    c.labelled(STACK_X, y, c.stack_w, "loss", None, ["loss", &o.loss]);
}

/// An arrow down the stack from `y` to the next box's top, dashed and marked when the
/// next layer reads its input through `stop_gradient`.
fn next(c: &mut Canvas, cx: f64, y: f64, cut: bool) -> f64 {
    if cut {
        c.arrow(cx, y, cx, y + GAP + 8.0, "stream cut");
        c.text(
            cx + 10.0,
            y + GAP / 2.0 + 8.0,
            "start",
            "s red",
            "stop_gradient",
        );
        y + GAP + 8.0
    } else {
        c.arrow(cx, y, cx, y + GAP, "stream");
        y + GAP
    }
}

/// The side box of a loss of the learning rule, tapped after a layer at `y`.
fn local_loss(c: &mut Canvas, g: &Graph, y: f64, tap: Tap) {
    let (title, sub) = match tap {
        Tap::Goodness => (
            "goodness loss".to_string(),
            "mean(h²) against the threshold".to_string(),
        ),
        Tap::Local(k) => (
            format!("loss.local.{k}"),
            format!("{} params", digits(params_under(g, &format!("local.{k}")))),
        ),
    };
    c.arrow(
        STACK_X + c.stack_w,
        y + BOX_H / 2.0,
        c.side_x(),
        y + BOX_H / 2.0,
        "",
    );
    c.labelled(c.side_x(), y, SIDE_W, "loss", None, [&title, &sub]);
}

/// One block drawn once: the residual stream down the left, each step to its right.
/// Returns the bottom of the panel.
fn panel(c: &mut Canvas, y0: f64, o: &Outline, block: usize, weights: usize, g: &Graph) -> f64 {
    let b: &BlockOutline = &o.blocks[block];
    let prefix = format!("blocks.{weights}");
    let title = format!(
        "block {} · {} params per layer ({prefix})",
        b.name,
        digits(params_under(g, &prefix))
    );
    c.text(c.panel_x() + 12.0, y0 + 20.0, "start", "b", &title);
    let sx = c.panel_x() + STREAM_DX;
    let mut y = y0 + 34.0;
    c.text(sx - 8.0, y + 10.0, "end", "s", "x");
    c.line(sx, y, sx, y + 14.0, "stream");
    y += 14.0;
    for s in &b.steps {
        y = step(c, (sx, o.width), y, s, &prefix, g);
    }
    c.arrow(sx, y, sx, y + 16.0, "stream");
    y += 16.0;
    c.rect(c.panel_x(), y0, c.panel_w(), y - y0 + 8.0, "panel", None);
    y + 8.0
}

/// The box class of a sublayer by its description.
fn sub_class(what: &str) -> &'static str {
    if what.starts_with("attention") {
        "attn"
    } else if what.starts_with("ffn") {
        "ffn"
    } else {
        "lin"
    }
}

/// One residual step from the stream at `sx` (of width `d`), starting at `y`; returns the
/// stream's `y` after it.
fn step(
    c: &mut Canvas,
    (sx, d): (f64, usize),
    mut y: f64,
    s: &StepOutline,
    prefix: &str,
    g: &Graph,
) -> f64 {
    if let SkipOutline::Hourglass {
        width,
        lift_trainable,
    } = s.skip
    {
        let lift = if lift_trainable {
            "trainable"
        } else {
            "frozen"
        };
        y = on_stream(c, sx, y, "proj", &format!("lift {d} -> {width} ({lift})"));
    }
    let top = y + 16.0;
    c.line(sx, y, sx, top, "stream");
    let n = s.branches.len();
    let add = top + (n.max(1) - 1) as f64 * ROW + 34.0;
    branches(c, sx, top, add, s, prefix, g);
    skip_path(c, sx, top, add, s.skip);
    c.circle(sx, add, 8.0, "+");
    y = add + 8.0;
    if s.placement == NormPlacement::Post {
        y = on_stream(c, sx, y, "norm", &format!("{} (post)", s.norm));
    }
    if let SkipOutline::Hourglass { width, .. } = s.skip {
        y = on_stream(c, sx, y, "proj", &format!("down {width} -> {d}"));
    }
    y
}

/// A box sitting on the stream (a post norm, a projection); returns the stream below it.
fn on_stream(c: &mut Canvas, sx: f64, y: f64, class: &str, label: &str) -> f64 {
    let w = 150.0;
    c.line(sx, y, sx, y + 8.0, "stream");
    c.rect(sx - w / 2.0, y + 8.0, w, 24.0, class, None);
    c.text(sx, y + 24.0, "middle", "", label);
    c.line(sx, y + 32.0, sx, y + 40.0, "stream");
    y + 40.0
}

/// The branch side of a step: tap at `top`, norm, sublayers (one row each), output norms,
/// sum and coefficient, back into the add at `add`.
fn branches(c: &mut Canvas, sx: f64, top: f64, add: f64, s: &StepOutline, prefix: &str, g: &Graph) {
    c.circle(sx, top, 3.0, "");
    let mut x = sx + 22.0;
    let normed = matches!(s.placement, NormPlacement::Pre | NormPlacement::Peri);
    c.line(sx + 3.0, top, x, top, "");
    if normed {
        let label = match s.placement {
            NormPlacement::Peri => format!("{} in", s.norm),
            NormPlacement::Pre | NormPlacement::Post | NormPlacement::None => s.norm.clone(),
        };
        c.rect(x, top - 12.0, NORM_W, 24.0, "norm", None);
        c.text(x + NORM_W / 2.0, top + 4.0, "middle", "", &label);
        x += NORM_W;
    }
    let bx = x + 22.0;
    let peri = s.placement == NormPlacement::Peri;
    let sub_w = c.sub_w;
    let end = bx + sub_w + if peri { 14.0 + NORM_W } else { 0.0 };
    for (k, br) in s.branches.iter().enumerate() {
        let row = top + k as f64 * ROW;
        c.path(
            &format!("M{x:.1},{top:.1} H{:.1} V{row:.1} H{bx:.1}", x + 10.0),
            "",
            true,
        );
        c.rect(bx, row - 13.0, sub_w, 26.0, sub_class(&br.what), None);
        let params = short_count(params_under(g, &format!("{prefix}.{}", br.name)));
        c.text(
            bx + 8.0,
            row + 4.0,
            "start",
            "",
            &format!("{}: {}", br.name, br.what),
        );
        c.text(bx + sub_w - 6.0, row + 4.0, "end", "s", &params);
        if peri {
            c.arrow(bx + sub_w, row, bx + sub_w + 14.0, row, "");
            c.rect(bx + sub_w + 14.0, row - 12.0, NORM_W, 24.0, "norm", None);
            c.text(
                bx + sub_w + 14.0 + NORM_W / 2.0,
                row + 4.0,
                "middle",
                "",
                &format!("{} out", s.norm),
            );
        }
        c.path(
            &format!("M{end:.1},{row:.1} H{:.1} V{top:.1}", end + 12.0),
            "",
            false,
        );
    }
    let mut x = end + 12.0;
    if s.branches.len() > 1 {
        c.line(x, top, x + 12.0, top, "");
        c.circle(x + 24.0, top, 10.0, "Σ");
        x += 34.0;
    }
    if s.coef != 1.0 {
        let label = format!("× {}", coef(s.coef));
        c.line(x, top, x + 10.0, top, "");
        c.rect(x + 10.0, top - 11.0, 52.0, 22.0, "io", None);
        c.text(x + 36.0, top + 4.0, "middle", "b", &label);
        x += 62.0;
    }
    c.path(
        &format!(
            "M{x:.1},{top:.1} H{:.1} V{add:.1} H{:.1}",
            x + 12.0,
            sx + 8.0
        ),
        "",
        true,
    );
}

/// The stream from the tap at `top` to the add at `add`: the skip.
fn skip_path(c: &mut Canvas, sx: f64, top: f64, add: f64, skip: SkipOutline) {
    let mid = (top + add) / 2.0 + 4.0;
    let label = match skip {
        SkipOutline::Residual => None,
        SkipOutline::None => {
            c.text(sx - 8.0, mid, "end", "s red", "no skip");
            return;
        }
        SkipOutline::Scaled(a) => Some(format!("skip × {}", coef(a))),
        SkipOutline::Learned(a) => Some(format!("skip × α, learned (α₀ = {})", coef(a))),
        SkipOutline::Hourglass { width, .. } => Some(format!("skip at width {width}")),
    };
    c.line(sx, top + 3.0, sx, add - 8.0, "stream");
    if let Some(l) = label {
        c.text(sx - 8.0, mid, "end", "s", &l);
    }
}

fn digits(n: usize) -> String {
    group_digits(n as u64)
}
