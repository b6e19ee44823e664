//! Small inline-SVG charts for the HTML report: line charts on fixed axes, vertical and
//! horizontal bar charts. No JavaScript and no external files, so a report opens anywhere
//! and can be mailed as one file.

use std::fmt::Write as _;

/// Escapes text for HTML and SVG (element content and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Colours of successive series (colour-blind safe, Okabe–Ito).
pub const PALETTE: [&str; 5] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#7f7f7f"];

const WIDTH: f64 = 440.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 46.0;

/// One line of a [`LineChart`].
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
    pub dashed: bool,
    /// Draw a dot at each point (for sparse series such as calibration bins).
    pub markers: bool,
}

/// A line chart with linear axes over `x_range` and `y_range`.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub series: Vec<Series>,
}

struct Frame {
    x_range: (f64, f64),
    y_range: (f64, f64),
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        let (lo, hi) = self.x_range;
        LEFT + (v - lo) / (hi - lo).max(f64::MIN_POSITIVE) * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let (lo, hi) = self.y_range;
        HEIGHT - BOTTOM - (v - lo) / (hi - lo).max(f64::MIN_POSITIVE) * (HEIGHT - TOP - BOTTOM)
    }
}

fn open_svg(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{t}" font-family="sans-serif" font-size="11"><text x="{cx}" y="18" text-anchor="middle" font-size="13" font-weight="bold">{t}</text>"#,
        t = escape(title),
        cx = WIDTH / 2.0
    );
}

/// Axes, ticks (five intervals each way) and axis labels.
fn axes(out: &mut String, frame: &Frame, x_label: &str, y_label: &str) {
    let (x0, x1) = (frame.x(frame.x_range.0), frame.x(frame.x_range.1));
    let (y0, y1) = (frame.y(frame.y_range.0), frame.y(frame.y_range.1));
    let _ = write!(
        out,
        r##"<rect x="{x0}" y="{y1}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##,
        w = x1 - x0,
        h = y0 - y1
    );
    for i in 0..=5 {
        let t = i as f64 / 5.0;
        let xv = frame.x_range.0 + t * (frame.x_range.1 - frame.x_range.0);
        let yv = frame.y_range.0 + t * (frame.y_range.1 - frame.y_range.0);
        let (px, py) = (frame.x(xv), frame.y(yv));
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" y1="{y0}" x2="{px:.1}" y2="{y1}" stroke="#eee"/><text x="{px:.1}" y="{ty:.1}" text-anchor="middle">{xl}</text><line x1="{x0}" y1="{py:.1}" x2="{x1}" y2="{py:.1}" stroke="#eee"/><text x="{tx:.1}" y="{py4:.1}" text-anchor="end">{yl}</text>"##,
            ty = y0 + 14.0,
            xl = tick_label(xv),
            tx = x0 - 4.0,
            py4 = py + 4.0,
            yl = tick_label(yv),
        );
    }
    let _ = write!(
        out,
        r#"<text x="{cx:.1}" y="{by:.1}" text-anchor="middle">{xl}</text><text transform="translate(14 {cy:.1}) rotate(-90)" text-anchor="middle">{yl}</text>"#,
        cx = (x0 + x1) / 2.0,
        by = HEIGHT - 8.0,
        xl = escape(x_label),
        cy = (y0 + y1) / 2.0,
        yl = escape(y_label),
    );
}

fn tick_label(v: f64) -> String {
    if v.abs() >= 100.0 || (v.fract() == 0.0 && v.abs() >= 1.0) {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn legend(out: &mut String, entries: &[(&str, &str, bool)]) {
    for (i, (name, color, dashed)) in entries.iter().enumerate() {
        let y = TOP + 8.0 + i as f64 * 14.0;
        let x = LEFT + 10.0;
        let dash = if *dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/><text x="{tx}" y="{ty}">{n}</text>"#,
            x2 = x + 18.0,
            tx = x + 22.0,
            ty = y + 4.0,
            n = escape(name)
        );
    }
}

impl LineChart {
    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        let frame = Frame {
            x_range: self.x_range,
            y_range: self.y_range,
        };
        let mut out = String::new();
        open_svg(&mut out, &self.title);
        axes(&mut out, &frame, &self.x_label, &self.y_label);
        for series in &self.series {
            let points: Vec<String> = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", frame.x(x), frame.y(y)))
                .collect();
            let dash = if series.dashed {
                r#" stroke-dasharray="5 3""#
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
                series.color,
                points.join(" ")
            );
            if series.markers {
                for point in &points {
                    let (x, y) = point.split_once(',').unwrap_or(("0", "0"));
                    let _ = write!(
                        out,
                        r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                        series.color
                    );
                }
            }
        }
        let entries: Vec<(&str, &str, bool)> = self
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.color, s.dashed))
            .collect();
        legend(&mut out, &entries);
        out.push_str("</svg>");
        out
    }
}

/// Grouped vertical bars: one group per category, one bar per series.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// `(name, colour, one value per category)`.
    pub series: Vec<(String, &'static str, Vec<f64>)>,
}

impl BarChart {
    /// The chart as an `<svg>` element; the y axis runs from 0 to the largest value.
    pub fn render(&self) -> String {
        let max = self
            .series
            .iter()
            .flat_map(|(_, _, v)| v.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        let frame = Frame {
            x_range: (0.0, self.categories.len().max(1) as f64),
            y_range: (0.0, if max > 0.0 { max * 1.1 } else { 1.0 }),
        };
        let mut out = String::new();
        open_svg(&mut out, &self.title);
        // Axes without x ticks (the categories label the groups).
        let (x0, x1) = (frame.x(frame.x_range.0), frame.x(frame.x_range.1));
        let (y0, y1) = (frame.y(0.0), frame.y(frame.y_range.1));
        let _ = write!(
            out,
            r##"<rect x="{x0}" y="{y1}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##,
            w = x1 - x0,
            h = y0 - y1
        );
        for i in 0..=5 {
            let yv = frame.y_range.1 * i as f64 / 5.0;
            let py = frame.y(yv);
            let _ = write!(
                out,
                r##"<line x1="{x0}" y1="{py:.1}" x2="{x1}" y2="{py:.1}" stroke="#eee"/><text x="{tx}" y="{py4:.1}" text-anchor="end">{l}</text>"##,
                tx = x0 - 4.0,
                py4 = py + 4.0,
                l = tick_label(yv)
            );
        }
        let groups = self.categories.len().max(1) as f64;
        let group_width = (x1 - x0) / groups;
        let bar_width = group_width * 0.8 / self.series.len().max(1) as f64;
        for (c, category) in self.categories.iter().enumerate() {
            let gx = x0 + c as f64 * group_width + group_width * 0.1;
            for (s, (_, color, values)) in self.series.iter().enumerate() {
                let v = values.get(c).copied().unwrap_or(0.0);
                let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
                let top = frame.y(v);
                let _ = write!(
                    out,
                    r#"<rect x="{:.1}" y="{top:.1}" width="{bar_width:.1}" height="{:.1}" fill="{color}"/>"#,
                    gx + s as f64 * bar_width,
                    y0 - top
                );
            }
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                gx + group_width * 0.4,
                y0 + 14.0,
                escape(category)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{cx:.1}" y="{by:.1}" text-anchor="middle">{xl}</text><text transform="translate(14 {cy:.1}) rotate(-90)" text-anchor="middle">{yl}</text>"#,
            cx = (x0 + x1) / 2.0,
            by = HEIGHT - 8.0,
            xl = escape(&self.x_label),
            cy = (y0 + y1) / 2.0,
            yl = escape(&self.y_label),
        );
        if self.series.len() > 1 {
            let entries: Vec<(&str, &str, bool)> = self
                .series
                .iter()
                .map(|(n, c, _)| (n.as_str(), *c, false))
                .collect();
            legend(&mut out, &entries);
        }
        out.push_str("</svg>");
        out
    }
}

/// Horizontal bars with their labels, largest first (feature importance).
pub fn horizontal_bars(title: &str, value_label: &str, bars: &[(String, f64)]) -> String {
    let row_height = 16.0;
    let label_width = 230.0;
    let width = 640.0;
    let height = TOP + bars.len() as f64 * row_height + 30.0;
    let max = bars
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{t}" font-family="sans-serif" font-size="11"><text x="{cx}" y="18" text-anchor="middle" font-size="13" font-weight="bold">{t}</text>"#,
        t = escape(title),
        cx = width / 2.0
    );
    let span = width - label_width - 70.0;
    for (i, (name, value)) in bars.iter().enumerate() {
        let y = TOP + i as f64 * row_height;
        let w = if max > 0.0 && value.is_finite() {
            value / max * span
        } else {
            0.0
        };
        let _ = write!(
            out,
            r#"<text x="{lx}" y="{ty:.1}" text-anchor="end">{n}</text><rect x="{label_width}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"/><text x="{vx:.1}" y="{ty:.1}">{v}</text>"#,
            lx = label_width - 6.0,
            ty = y + row_height * 0.7,
            n = escape(name),
            h = row_height * 0.75,
            c = PALETTE[0],
            vx = label_width + w + 4.0,
            v = format_value(*value),
        );
    }
    let _ = write!(
        out,
        r#"<text x="{cx:.1}" y="{by:.1}" text-anchor="middle">{l}</text></svg>"#,
        cx = label_width + span / 2.0,
        by = height - 8.0,
        l = escape(value_label)
    );
    out
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"source=<other> & "x" 'y'"#),
            "source=&lt;other&gt; &amp; &quot;x&quot; &#39;y&#39;"
        );
        let svg = horizontal_bars("t", "gain", &[("a=<missing>".into(), 2.0)]);
        assert!(svg.contains("a=&lt;missing&gt;"));
        assert!(!svg.contains("<missing>"));
    }

    #[test]
    fn line_chart_maps_the_corners_of_its_range() {
        let chart = LineChart {
            title: "ROC".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            series: vec![Series {
                name: "diagonal".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0), (f64::NAN, 0.5)],
                color: PALETTE[0],
                dashed: false,
                markers: false,
            }],
        };
        let svg = chart.render();
        // (0, 0) is the bottom left of the plot area, (1, 1) the top right; NaN is dropped.
        let bottom_left = format!("{LEFT:.1},{:.1}", HEIGHT - BOTTOM);
        let top_right = format!("{:.1},{TOP:.1}", WIDTH - RIGHT);
        assert!(
            svg.contains(&format!(r#"points="{bottom_left} {top_right}""#)),
            "{svg}"
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn bars_scale_to_the_largest_value() {
        let svg = horizontal_bars("imp", "gain", &[("a".into(), 4.0), ("b".into(), 1.0)]);
        let span = 640.0 - 230.0 - 70.0;
        assert!(svg.contains(&format!(r#"width="{span:.1}""#)));
        assert!(svg.contains(&format!(r#"width="{:.1}""#, span / 4.0)));
    }
}
