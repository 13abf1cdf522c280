//! Inline SVG charts drawn with plotters' SVG backend: dot-and-whisker rows (a mean and its
//! interval per run), overlaid histograms, and a jittered scatter with the identity line. Text
//! is emitted as SVG `<text>` (escaped by the backend) and set in the page's font.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::ReportError;

/// Run colours, in run order (colour-blind safe: Okabe–Ito).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
];

/// The CSS colour of run `i`.
pub fn css_color(i: usize) -> String {
    let RGBColor(r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

const FONT: &str = "sans-serif";
const WIDTH: u32 = 720;

fn err(what: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Chart {
        what: what.to_string(),
        message,
    }
}

fn draw<F>(what: &str, size: (u32, u32), paint: F) -> Result<String, ReportError>
where
    F: FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
{
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .map_err(err(what))?;
        paint(&root).map_err(err(what))?;
        root.present()
            .map_err(|e| e.to_string())
            .map_err(err(what))?;
    }
    Ok(svg)
}

/// One row of a dot-and-whisker chart: a label and, per run, `(mean, low, high)`.
#[derive(Debug, Clone)]
pub struct WhiskerRow {
    pub label: String,
    pub points: Vec<Option<(f64, Option<[f64; 2]>)>>,
}

/// Means with 95% intervals, one line per row and one colour per run, on `x_range`.
pub fn dot_whisker(
    what: &str,
    x_label: &str,
    rows: &[WhiskerRow],
    x_range: (f64, f64),
) -> Result<String, ReportError> {
    let n = rows.len().max(1);
    let runs = rows
        .iter()
        .map(|r| r.points.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let height = 70 + 26 * n as u32;
    let label_width = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(10)
        .clamp(10, 40) as u32
        * 7
        + 16;
    draw(what, (WIDTH, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(label_width)
            .build_cartesian_2d(x_range.0..x_range.1, -0.5f64..(n as f64 - 0.5))
            .map_err(|e| e.to_string())?;
        let names: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
        chart
            .configure_mesh()
            .y_labels(n)
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() > 1e-6 || i < 0.0 {
                    return String::new();
                }
                names
                    .get(n.saturating_sub(1).saturating_sub(i as usize))
                    .cloned()
                    .unwrap_or_default()
            })
            .x_desc(x_label)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 13))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(|e| e.to_string())?;
        for (r, row) in rows.iter().enumerate() {
            let y0 = (n - 1 - r) as f64;
            for (k, p) in row.points.iter().enumerate() {
                let Some((mean, ci)) = p else { continue };
                let offset = if runs > 1 {
                    0.5 * (k as f64 - (runs - 1) as f64 / 2.0) / runs as f64
                } else {
                    0.0
                };
                let y = y0 - offset;
                let style = color(k);
                if let Some([lo, hi]) = ci {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(*lo, y), (*hi, y)],
                            style.stroke_width(2),
                        )))
                        .map_err(|e| e.to_string())?;
                    for x in [lo, hi] {
                        chart
                            .draw_series(std::iter::once(PathElement::new(
                                vec![(*x, y - 0.12), (*x, y + 0.12)],
                                style.stroke_width(2),
                            )))
                            .map_err(|e| e.to_string())?;
                    }
                }
                chart
                    .draw_series(std::iter::once(Circle::new((*mean, y), 5, style.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

/// Overlaid histograms, one outline colour per series; `bins` are `(low, high, count)`.
pub fn histogram(
    what: &str,
    x_label: &str,
    series: &[Vec<(f64, f64, usize)>],
) -> Result<String, ReportError> {
    let all = series.iter().flatten();
    let lo = all.clone().map(|b| b.0).fold(f64::INFINITY, f64::min);
    let hi = all.clone().map(|b| b.1).fold(f64::NEG_INFINITY, f64::max);
    let top = all.map(|b| b.2).max().unwrap_or(0).max(1);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    draw(what, (WIDTH, 260), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(lo..hi, 0f64..(top as f64 * 1.1))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("sessions")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        for (k, bins) in series.iter().enumerate() {
            let c = color(k);
            chart
                .draw_series(bins.iter().map(|(l, h, n)| {
                    Rectangle::new([(*l, 0.0), (*h, *n as f64)], c.mix(0.25).filled())
                }))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(bins.iter().map(|(l, h, n)| {
                    Rectangle::new([(*l, 0.0), (*h, *n as f64)], c.stroke_width(2))
                }))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// A small deterministic jitter in [-amount, amount] for point `i` (no RNG state to carry).
fn jitter(i: usize, salt: u64, amount: f64) -> f64 {
    let mut z = (i as u64)
        .wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amount
}

/// Judge (x) against expert consensus (y), jittered, with the identity line and, when given,
/// a calibration curve through `curve` knots.
pub fn scatter(
    what: &str,
    (x_label, y_label): (&str, &str),
    points: &[(f64, f64)],
    range: (f64, f64),
    curve: Option<&[(f64, f64)]>,
) -> Result<String, ReportError> {
    let (lo, hi) = (range.0 - 0.5, range.1 + 0.5);
    draw(what, (360, 340), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(44)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 12))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                [(lo, lo), (hi, hi)],
                RGBColor(150, 150, 150).stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(points.iter().enumerate().map(|(i, (x, y))| {
                Circle::new(
                    (x + jitter(i, 1, 0.18), y + jitter(i, 2, 0.18)),
                    3,
                    color(0).mix(0.6).filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        if let Some(curve) = curve {
            chart
                .draw_series(LineSeries::new(
                    curve.iter().copied(),
                    color(1).stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_escaped_labels() {
        let rows = vec![WhiskerRow {
            label: "<script>alert(1)</script>".into(),
            points: vec![Some((3.0, Some([2.0, 4.0]))), None],
        }];
        let svg = dot_whisker("t", "score", &rows, (0.0, 6.0)).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
        assert!(svg.contains("<circle"));
        let h = histogram("h", "reward", &[vec![(0.0, 0.5, 2), (0.5, 1.0, 1)]]).unwrap();
        assert!(h.contains("<rect"));
        let s = scatter("s", ("judge", "experts"), &[(1.0, 2.0)], (0.0, 6.0), None).unwrap();
        assert!(s.contains("<circle"));
        assert!((-0.2..=0.2).contains(&jitter(5, 1, 0.2)));
    }
}
