//! PNG charts for training runs and evaluation reports, drawn with `plotters` (axis titles, tick
//! values, a legend) in DejaVu Sans embedded from the `dejavu` crate, so the binary needs no font
//! files: line/point charts with optional error bars and a log₂ x axis, panels side by side, and
//! confusion-matrix heat maps. Files are written atomically ([`crate::out::write_atomic`]).

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

pub const BLUE: [u8; 3] = [31, 119, 180];
pub const ORANGE: [u8; 3] = [255, 127, 14];
pub const GREY: [u8; 3] = [127, 127, 127];

#[derive(Debug, thiserror::Error)]
#[error("cannot draw '{path}': {msg}")]
pub struct ChartError {
    path: String,
    msg: String,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    Line,
    Dashed,
    Points,
    LinePoints,
}

/// One labelled series of (x, y) points, with optional ± error bars (one per point).
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub errors: Vec<f64>,
    pub color: [u8; 3],
    pub style: Style,
}

impl Series {
    pub fn new(label: &str, points: Vec<(f64, f64)>, color: [u8; 3], style: Style) -> Series {
        Series {
            label: label.into(),
            points,
            errors: Vec::new(),
            color,
            style,
        }
    }
}

/// A chart with titled axes.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    /// x ticks at powers of two (the axis stays linear in log₂ x)
    pub log2_x: bool,
    pub series: Vec<Series>,
}

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // the embedded font is valid; a failure would only leave text undrawn
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn err(path: &Path, e: impl std::fmt::Display) -> ChartError {
    ChartError {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

fn widen((lo, hi): (f64, f64)) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    }
}

/// A tick value without float noise: whole numbers from 100 up, else at most three decimals.
fn tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

impl Chart {
    /// One plotters chart from axes to legend (plotters' builder types make its pieces awkward to
    /// pass between functions).
    fn draw(&self, area: &Area) -> DrawResult {
        let tx = |x: f64| if self.log2_x { x.max(1e-12).log2() } else { x };
        let (x0, x1) = widen((tx(self.x_range.0), tx(self.x_range.1)));
        let (y0, y1) = widen(self.y_range);
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let log2 = self.log2_x;
        let fmt_x = move |v: &f64| {
            if log2 {
                format!("{}", 2f64.powf(*v).round())
            } else {
                tick(*v)
            }
        };
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&fmt_x)
            .x_labels(if log2 {
                (x1 - x0).round() as usize + 1
            } else {
                10
            })
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        for s in &self.series {
            let color = rgb(s.color);
            let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (tx(x), y)).collect();
            let legend = |c: RGBColor| {
                move |(x, y): (i32, i32)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                }
            };
            match s.style {
                Style::Line | Style::LinePoints => {
                    chart
                        .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                        .label(&s.label)
                        .legend(legend(color));
                }
                Style::Dashed => {
                    chart
                        .draw_series(DashedLineSeries::new(
                            pts.clone(),
                            8,
                            5,
                            color.stroke_width(2),
                        ))?
                        .label(&s.label)
                        .legend(legend(color));
                }
                Style::Points => {
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?
                        .label(&s.label)
                        .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
                }
            }
            if s.style == Style::LinePoints {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            if !s.errors.is_empty() {
                chart.draw_series(pts.iter().zip(&s.errors).map(|(&(x, y), &e)| {
                    ErrorBar::new_vertical(x, y - e, y, y + e, color.stroke_width(1), 6)
                }))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .position(self.legend_corner(x0, x1, y0, y1))
            .draw()?;
        Ok(())
    }

    /// The corner whose box (40% of the width, 35% of the height) covers the fewest data points:
    /// the legend goes there (lower right when several are equally empty).
    fn legend_corner(&self, x0: f64, x1: f64, y0: f64, y1: f64) -> SeriesLabelPosition {
        let tx = |x: f64| if self.log2_x { x.max(1e-12).log2() } else { x };
        let (w, h) = ((x1 - x0).max(1e-12), (y1 - y0).max(1e-12));
        let count = |right: bool, top: bool| {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|&&(x, y)| {
                    let (fx, fy) = ((tx(x) - x0) / w, (y - y0) / h);
                    (if right { fx >= 0.6 } else { fx <= 0.4 })
                        && (if top { fy >= 0.65 } else { fy <= 0.35 })
                })
                .count()
        };
        [
            (SeriesLabelPosition::LowerRight, count(true, false)),
            (SeriesLabelPosition::UpperLeft, count(false, true)),
            (SeriesLabelPosition::UpperRight, count(true, true)),
            (SeriesLabelPosition::LowerLeft, count(false, false)),
        ]
        .into_iter()
        .min_by_key(|(_, n)| *n)
        .map_or(SeriesLabelPosition::LowerRight, |(p, _)| p)
    }

    /// Save as a PNG of 720×480 pixels.
    pub fn save(&self, path: &Path) -> Result<(), ChartError> {
        save_panels(std::slice::from_ref(self), path)
    }
}

/// Render `(width, height)` pixels with `draw` and write the PNG atomically.
fn render(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<(), ChartError> {
    fonts();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&area).map_err(|e| err(path, e))?;
        area.present().map_err(|e| err(path, e))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| err(path, "buffer size"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| err(path, e))?;
    crate::out::write_atomic(path, &png).map_err(|e| err(path, e))
}

/// Charts side by side in one PNG (720×480 pixels each).
pub fn save_panels(charts: &[Chart], path: &Path) -> Result<(), ChartError> {
    let n = charts.len().max(1) as u32;
    render(path, (720 * n, 480), |area| {
        area.fill(&WHITE)?;
        for (chart, panel) in charts.iter().zip(area.split_evenly((1, n as usize))) {
            chart.draw(&panel)?;
        }
        Ok(())
    })
}

/// A confusion-matrix heat map (rows: true class, columns: predicted; shade ∝ row share).
pub fn save_heatmap(m: &[Vec<u64>], title: &str, path: &Path) -> Result<(), ChartError> {
    let n = m.len().max(1);
    let side = (n as u32 * 12).clamp(360, 1400);
    render(path, (side + 90, side + 90), |area| {
        area.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0..n, 0..n)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .label_style(("sans-serif", 12))
            .draw()?;
        chart.draw_series(m.iter().enumerate().flat_map(|(i, row)| {
            let total = row.iter().sum::<u64>().max(1) as f64;
            row.iter().enumerate().map(move |(j, &v)| {
                let shade = 255 - (v as f64 / total * 255.0).round() as u8;
                // row i is drawn top to bottom
                let y = n - 1 - i;
                Rectangle::new(
                    [(j, y), (j + 1, y + 1)],
                    RGBColor(shade, shade, 255).filled(),
                )
            })
        }))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legend_goes_to_the_emptiest_corner() {
        let mut c = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_range: (0.0, 10.0),
            y_range: (0.0, 10.0),
            log2_x: false,
            series: vec![Series::new(
                "rising",
                vec![(0.0, 0.0), (9.0, 1.0), (10.0, 2.0)],
                BLUE,
                Style::Line,
            )],
        };
        let corner = |c: &Chart| c.legend_corner(0.0, 10.0, 0.0, 10.0);
        assert!(matches!(corner(&c), SeriesLabelPosition::UpperLeft));
        c.series[0].points = vec![(0.0, 9.0), (5.0, 5.0), (10.0, 9.0)];
        assert!(matches!(corner(&c), SeriesLabelPosition::LowerRight));
    }

    #[test]
    fn ticks_have_no_float_noise() {
        assert_eq!(tick(11.600000000000001), "11.6");
        assert_eq!(tick(11.0), "11");
        assert_eq!(tick(-0.0001), "0");
        assert_eq!(tick(0.125), "0.125");
        assert_eq!(tick(1234.5678), "1235");
    }

    #[test]
    fn charts_are_png_files_with_text_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        let mut s = Series::new(
            "probe",
            vec![(1.0, 10.0), (2.0, 20.0), (4.0, 35.0)],
            BLUE,
            Style::LinePoints,
        );
        s.errors = vec![1.0, 2.0, 3.0];
        let c = Chart {
            title: "few-shot".into(),
            x_label: "k".into(),
            y_label: "accuracy (%)".into(),
            x_range: (1.0, 4.0),
            y_range: (0.0, 40.0),
            log2_x: true,
            series: vec![
                s,
                Series::new(
                    "zero-shot",
                    vec![(1.0, 25.0), (4.0, 25.0)],
                    ORANGE,
                    Style::Dashed,
                ),
            ],
        };
        c.save(&p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (720, 480));
        let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
        assert!(count(BLUE) > 100 && count(ORANGE) > 50, "series drawn");
        // text (black glyphs) is drawn: many dark pixels outside the plotted series
        assert!(img.pixels().filter(|p| p.0.iter().all(|&v| v < 60)).count() > 500);
        let h = dir.path().join("h.png");
        save_heatmap(&[vec![3, 1], vec![0, 4]], "confusion", &h).unwrap();
        assert!(image::open(&h).is_ok());
    }
}
