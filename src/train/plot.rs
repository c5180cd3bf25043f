//! Loss curves as a hand-written SVG: no plotting dependency for a few polylines.

use std::fmt::Write as _;

pub struct Series {
    pub name: String,
    /// (step, value) points, in step order.
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Index into the palette; series of one run share it.
    pub color: usize,
}

const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Exponential moving average, so noisy per-step losses read as a curve.
pub fn smooth(points: &[(f64, f64)], span: usize) -> Vec<(f64, f64)> {
    let a = 2.0 / (span.max(1) as f64 + 1.0);
    let mut out = Vec::with_capacity(points.len());
    let mut acc: Option<f64> = None;
    for &(x, y) in points {
        let v = match acc {
            None => y,
            Some(prev) => prev + a * (y - prev),
        };
        acc = Some(v);
        out.push((x, v));
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The range `(x0, x1, y0, y1)` of every finite point, with a non-empty x range.
fn extent(series: &[Series]) -> (f64, f64, f64, f64) {
    let finite = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    (x0, x1, y0, y1)
}

/// An SVG line chart: x = step, y = loss (log scale when the range spans over 20x).
pub fn svg(title: &str, series: &[Series]) -> String {
    svg_over(title, "step", series)
}

/// `svg` with another quantity on the x axis (`x_label`), such as training seconds.
pub fn svg_over(title: &str, x_label: &str, series: &[Series]) -> String {
    // The legend sits right of the plot; its width follows the longest name (about 7 px a
    // character at 12 px) so long model names are not cut off.
    let longest = series
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0);
    let (l, t, b) = (70.0, 40.0, 50.0);
    let r = (50.0 + 7.0 * longest as f64).max(180.0);
    let (w, h) = (l + 510.0 + r, 440.0);
    let (x0, x1, y0, y1) = extent(series);
    let log = y0 > 0.0 && y1 / y0 > 20.0;
    let f = |y: f64| if log { y.max(1e-12).log10() } else { y };
    let (mut fy0, mut fy1) = (f(y0), f(y1));
    if !log {
        fy0 = fy0.min(0.0);
    }
    if fy1 <= fy0 {
        fy1 = fy0 + 1.0;
    }
    let px = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| h - b - (f(y) - fy0) / (fy1 - fy0) * (h - t - b);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        (l + w - r) / 2.0,
        esc(title)
    );
    // Axes and ticks.
    let _ = writeln!(
        s,
        r##"<path d="M{l} {t} V{} H{}" stroke="#333" fill="none"/>"##,
        h - b,
        w - r
    );
    for i in 0..=5 {
        let fx = x0 + (x1 - x0) * i as f64 / 5.0;
        let x = px(fx);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            h - b,
            h - b + 5.0,
            h - b + 20.0,
            fx.round()
        );
        let fyv = fy0 + (fy1 - fy0) * i as f64 / 5.0;
        let yv = if log { 10f64.powf(fyv) } else { fyv };
        let y = py(yv);
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{y:.1}" x2="{l}" y2="{y:.1}" stroke="#333"/><line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            l - 5.0,
            w - r,
            l - 8.0,
            y + 4.0,
            fmt_tick(yv)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (l + w - r) / 2.0,
        h - 12.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">loss{}</text>"#,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0,
        if log { " (log scale)" } else { "" }
    );
    for (i, se) in series.iter().enumerate() {
        let color = PALETTE[se.color % PALETTE.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.6"{dash}/>"#,
                pts.join(" ")
            );
        }
        let ly = t + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            w - r + 10.0,
            w - r + 34.0,
            w - r + 40.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}
