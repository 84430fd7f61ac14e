//! One chart type, rendered to SVG with plotters: named series of (x, y) points, linear or
//! log axes, drawn as lines or as points, with the legend beside the plot.
//!
//! Text needs no font at render time: plotters is built without `ttf`/`ab_glyph`, so it lays
//! text out with its built-in estimate (0.7 em per character) and the SVG backend writes each
//! label as an SVG `<text>` element that the viewer (browser, editor) draws with its own
//! sans-serif font. No system font is read when a chart is made, so this works on a bare CI box.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::ReportError;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Points joined by a line, in x order (a sweep).
    Lines,
    /// Points only (a scatter of unrelated workloads).
    Points,
}

/// One named series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Data points (drawn sorted by x for `Style::Lines`).
    pub points: Vec<(f64, f64)>,
}

/// A chart ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title over the plot.
    pub title: String,
    /// X axis description with unit.
    pub x_label: String,
    /// Y axis description with unit.
    pub y_label: String,
    /// Log-scale x axis (context lengths spanning decades).
    pub x_log: bool,
    /// Log-scale y axis (errors, bytes spanning decades).
    pub y_log: bool,
    /// Lines or points.
    pub style: Style,
    /// The series, in legend order.
    pub series: Vec<Series>,
}

/// Width and height of every chart, in SVG pixels.
const SIZE: (u32, u32) = (1000, 560);
/// Width of the legend column to the right of the plot.
const LEGEND_WIDTH: u32 = 300;

/// Tableau-10: distinct, colour-blind-friendly hues for up to ten series (then repeats).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Colour of the i-th series.
fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A number as an axis tick: short, with k/M/G suffixes for large values.
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 && v.fract() != 0.0 {
        // Whole numbers below a million (token counts: 16384, 131072) read best in full.
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let trim = |t: String| {
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    };
    let s = if scaled == 0.0 {
        "0".to_string()
    } else if scaled.abs() >= 100.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 1.0 {
        trim(format!("{scaled:.2}"))
    } else if scaled.abs() >= 1e-3 {
        trim(format!("{scaled:.4}"))
    } else {
        let e = format!("{scaled:.2e}");
        let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
        format!("{}e{exp}", trim(mantissa.to_string()))
    };
    format!("{s}{suffix}")
}

/// Whether a value can be placed on an axis (log axes take positive values only).
fn drawable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

/// The drawn range of an axis with a little margin; a single value gets a range around it.
fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return if log { 1.0..10.0 } else { 0.0..1.0 };
    }
    if log {
        // A factor of ~1.2 each side, so end points are not drawn on the frame.
        return (lo / 1.2)..(hi * 1.2);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let half = lo.abs().max(1.0) * 0.5;
        return (lo - half).min(0.0_f64.max(lo - half))..(hi + half);
    }
    // Linear axes of non-negative quantities start at zero so ratios read off the chart.
    let bottom = if lo >= 0.0 { 0.0 } else { lo - span * 0.05 };
    bottom..(hi + span * 0.05)
}

/// Log axes use base 2 when every value is a power of two (context lengths, batch sizes),
/// so ticks land on the values that were run; otherwise base 10.
fn log_base(values: &[f64]) -> f64 {
    let pow2 = |v: f64| v >= 1.0 && v.fract() == 0.0 && (v as u64).is_power_of_two();
    if !values.is_empty() && values.iter().all(|&v| pow2(v)) {
        2.0
    } else {
        10.0
    }
}

impl Chart {
    /// Number of points that can be drawn on this chart's axes.
    pub fn drawable_points(&self) -> usize {
        self.series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|(x, y)| drawable(*x, self.x_log) && drawable(*y, self.y_log))
            .count()
    }

    /// Renders the chart as an SVG document.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        let mut svg = String::new();
        self.draw(&mut svg).map_err(|message| ReportError::Chart {
            title: self.title.clone(),
            message,
        })?;
        Ok(svg)
    }

    /// The series with undrawable points removed, each sorted by x.
    fn drawn_series(&self) -> Vec<(String, Vec<(f64, f64)>)> {
        self.series
            .iter()
            .map(|s| {
                let mut pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|&(x, y)| drawable(x, self.x_log) && drawable(y, self.y_log))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                (s.name.clone(), pts)
            })
            .collect()
    }

    fn draw(&self, out: &mut String) -> Result<(), String> {
        let series = self.drawn_series();
        let xs: Vec<f64> = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.0))
            .collect();
        let ys: Vec<f64> = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.1))
            .collect();
        let xr = padded_range(xs.iter().copied(), self.x_log);
        let yr = padded_range(ys.iter().copied(), self.y_log);

        let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(&self.title, ("sans-serif", 24))
            .map_err(|e| e.to_string())?;
        let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        // plotters gives log and linear axes different types: one generic plot, four calls.
        match (self.x_log, self.y_log) {
            (false, false) => self.plot(&plot_area, xr, yr, &series),
            (true, false) => self.plot(&plot_area, xr.log_scale().base(log_base(&xs)), yr, &series),
            (false, true) => self.plot(&plot_area, xr, yr.log_scale(), &series),
            (true, true) => self.plot(
                &plot_area,
                xr.log_scale().base(log_base(&xs)),
                yr.log_scale(),
                &series,
            ),
        }?;
        draw_legend(&legend_area, &series).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }

    fn plot<X, Y>(
        &self,
        area: &DrawingArea<SVGBackend, Shift>,
        x: X,
        y: Y,
        series: &[(String, Vec<(f64, f64)>)],
    ) -> Result<(), String>
    where
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
        Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x, y)
            .map_err(|e| e.to_string())?;
        let fmt = |v: &f64| tick_label(*v);
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (_, pts)) in series.iter().enumerate() {
            let c = colour(i);
            if self.style == Style::Lines && pts.len() > 1 {
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A swatch and the name of each series, beside the plot so it never hides data.
fn draw_legend(
    area: &DrawingArea<SVGBackend, Shift>,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let line_height = 22;
    for (i, (name, _)) in series.iter().enumerate() {
        let y = 40 + i as i32 * line_height;
        let c = colour(i);
        area.draw(&PathElement::new(vec![(8, y), (32, y)], c.stroke_width(3)))?;
        area.draw(&Circle::new((20, y), 4, c.filled()))?;
        area.draw(&Text::new(
            name.clone(),
            (40, y - 8),
            ("sans-serif", 14).into_font(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(style: Style, x_log: bool, y_log: bool) -> Chart {
        Chart {
            title: "tokens/s against context".into(),
            x_label: "context (tokens)".into(),
            y_label: "tokens/s".into(),
            x_log,
            y_log,
            style,
            series: vec![
                Series {
                    name: "paged f16".into(),
                    points: vec![(512.0, 90.0), (128.0, 100.0), (2048.0, 40.0)],
                },
                Series {
                    name: "contiguous f16".into(),
                    points: vec![(128.0, 110.0), (512.0, 95.0), (2048.0, 45.0)],
                },
            ],
        }
    }

    /// Texts of every `<text>` element.
    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or("").trim().to_string())
            .collect()
    }

    #[test]
    fn renders_valid_svg_with_title_axes_and_one_line_per_series() {
        let svg = chart(Style::Lines, true, false).to_svg().unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("valid XML");
        assert!(doc.root_element().has_tag_name("svg"));
        assert_eq!(doc.root_element().attribute("width"), Some("1000"));
        let t = texts(&doc);
        for want in [
            "tokens/s against context",
            "context (tokens)",
            "tokens/s",
            "paged f16",
            "contiguous f16",
        ] {
            assert!(t.iter().any(|s| s == want), "no text {want:?} in {t:?}");
        }
        // One polyline per data series (plotters draws LineSeries as <polyline>); the legend
        // swatches are polylines too, so two per series.
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| n.attribute("stroke-width") == Some("2"))
            .count();
        assert_eq!(lines, 2);
        // Every data point is a circle, plus one swatch dot per series.
        let circles = doc
            .descendants()
            .filter(|n| n.has_tag_name("circle"))
            .count();
        assert_eq!(circles, 6 + 2);
    }

    #[test]
    fn log_axis_ticks_show_data_values_not_logs() {
        let svg = chart(Style::Lines, true, false).to_svg().unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let t = texts(&doc);
        // log10 of the data spans ~2.1..3.3; labels must be tokens (hundreds/thousands).
        let numbers: Vec<f64> = t
            .iter()
            .filter_map(|s| {
                s.strip_suffix('k')
                    .map_or(s.parse().ok(), |k| k.parse::<f64>().ok().map(|v| v * 1e3))
            })
            .collect();
        assert!(numbers.iter().any(|&v| v > 100.0), "{t:?}");
    }

    #[test]
    fn points_style_draws_no_lines() {
        let svg = chart(Style::Points, false, true).to_svg().unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| n.attribute("stroke-width") == Some("2"))
            .count();
        assert_eq!(lines, 0);
    }

    #[test]
    fn non_positive_values_are_skipped_on_log_axes() {
        let mut c = chart(Style::Lines, true, true);
        c.series[0].points.push((0.0, 5.0));
        c.series[0].points.push((10.0, -1.0));
        assert_eq!(c.drawable_points(), 6);
        assert!(c.to_svg().is_ok());
    }

    #[test]
    fn empty_chart_still_renders() {
        let mut c = chart(Style::Lines, false, false);
        c.series.clear();
        let svg = c.to_svg().unwrap();
        assert!(roxmltree::Document::parse(&svg).is_ok());
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(512.0), "512");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(32768.0), "32768");
        assert_eq!(tick_label(12345.5), "12.35k");
        assert_eq!(tick_label(2_000_000.0), "2M");
        assert_eq!(tick_label(1.5e9), "1.5G");
        assert_eq!(tick_label(0.01), "0.01");
        assert_eq!(tick_label(0.00123), "0.0012");
        assert_eq!(tick_label(0.0001), "1e-4");
        assert_eq!(tick_label(0.000025), "2.5e-5");
    }
}
