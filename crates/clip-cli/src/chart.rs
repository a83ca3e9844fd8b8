//! Small PNG charts for the evaluation reports (line/point charts with labelled axes, a legend and
//! a title; heat maps), drawn pixel by pixel with a built-in 5×7 bitmap font, so the binary needs no
//! font files or plotting library.

use std::path::Path;

use anyhow::Result;
use image::{Rgb, RgbImage};

/// 5×7 glyphs, rows top to bottom, `#` = ink. Lower-case letters are drawn as capitals.
const GLYPHS: &[(char, [&str; 7])] = &[
    (
        '0',
        [
            " ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### ",
        ],
    ),
    (
        '1',
        [
            "  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
    ),
    (
        '2',
        [
            " ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####",
        ],
    ),
    (
        '3',
        [
            "#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### ",
        ],
    ),
    (
        '4',
        [
            "   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # ",
        ],
    ),
    (
        '5',
        [
            "#####", "#    ", "#### ", "    #", "    #", "#   #", " ### ",
        ],
    ),
    (
        '6',
        [
            "  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### ",
        ],
    ),
    (
        '7',
        [
            "#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   ",
        ],
    ),
    (
        '8',
        [
            " ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### ",
        ],
    ),
    (
        '9',
        [
            " ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  ",
        ],
    ),
    (
        'A',
        [
            " ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #",
        ],
    ),
    (
        'B',
        [
            "#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### ",
        ],
    ),
    (
        'C',
        [
            " ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### ",
        ],
    ),
    (
        'D',
        [
            "###  ", "#  # ", "#   #", "#   #", "#   #", "#  # ", "###  ",
        ],
    ),
    (
        'E',
        [
            "#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####",
        ],
    ),
    (
        'F',
        [
            "#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    ",
        ],
    ),
    (
        'G',
        [
            " ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####",
        ],
    ),
    (
        'H',
        [
            "#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #",
        ],
    ),
    (
        'I',
        [
            " ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
    ),
    (
        'J',
        [
            "  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  ",
        ],
    ),
    (
        'K',
        [
            "#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #",
        ],
    ),
    (
        'L',
        [
            "#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####",
        ],
    ),
    (
        'M',
        [
            "#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #",
        ],
    ),
    (
        'N',
        [
            "#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #",
        ],
    ),
    (
        'O',
        [
            " ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### ",
        ],
    ),
    (
        'P',
        [
            "#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    ",
        ],
    ),
    (
        'Q',
        [
            " ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #",
        ],
    ),
    (
        'R',
        [
            "#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #",
        ],
    ),
    (
        'S',
        [
            " ####", "#    ", "#    ", " ### ", "    #", "    #", "#### ",
        ],
    ),
    (
        'T',
        [
            "#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ",
        ],
    ),
    (
        'U',
        [
            "#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### ",
        ],
    ),
    (
        'V',
        [
            "#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  ",
        ],
    ),
    (
        'W',
        [
            "#   #", "#   #", "#   #", "# # #", "# # #", "# # #", " # # ",
        ],
    ),
    (
        'X',
        [
            "#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #",
        ],
    ),
    (
        'Y',
        [
            "#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  ",
        ],
    ),
    (
        'Z',
        [
            "#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####",
        ],
    ),
    (
        '.',
        [
            "     ", "     ", "     ", "     ", "     ", " ##  ", " ##  ",
        ],
    ),
    (
        ',',
        [
            "     ", "     ", "     ", "     ", " ##  ", "  #  ", " #   ",
        ],
    ),
    (
        ':',
        [
            "     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     ",
        ],
    ),
    (
        '-',
        [
            "     ", "     ", "     ", "#####", "     ", "     ", "     ",
        ],
    ),
    (
        '+',
        [
            "     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     ",
        ],
    ),
    (
        '=',
        [
            "     ", "     ", "#####", "     ", "#####", "     ", "     ",
        ],
    ),
    (
        '%',
        [
            "##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##",
        ],
    ),
    (
        '(',
        [
            "   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # ",
        ],
    ),
    (
        ')',
        [
            " #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   ",
        ],
    ),
    (
        '/',
        [
            "     ", "    #", "   # ", "  #  ", " #   ", "#    ", "     ",
        ],
    ),
    (
        '_',
        [
            "     ", "     ", "     ", "     ", "     ", "     ", "#####",
        ],
    ),
    (
        '\'',
        [
            "  #  ", "  #  ", " #   ", "     ", "     ", "     ", "     ",
        ],
    ),
    (
        '<',
        [
            "    #", "   # ", "  #  ", " #   ", "  #  ", "   # ", "    #",
        ],
    ),
    (
        '>',
        [
            "#    ", " #   ", "  #  ", "   # ", "  #  ", " #   ", "#    ",
        ],
    ),
    (
        '#',
        [
            " # # ", " # # ", "#####", " # # ", "#####", " # # ", " # # ",
        ],
    ),
    (
        '&',
        [
            " ##  ", "#  # ", "# #  ", " #   ", "# # #", "#  # ", " ## #",
        ],
    ),
    (
        '*',
        [
            "     ", "  #  ", "# # #", " ### ", "# # #", "  #  ", "     ",
        ],
    ),
    (
        '?',
        [
            " ### ", "#   #", "    #", "   # ", "  #  ", "     ", "  #  ",
        ],
    ),
];

const SCALE: i64 = 2;
const CHAR_W: i64 = 6 * SCALE;

pub const BLUE: [u8; 3] = [31, 119, 180];
pub const ORANGE: [u8; 3] = [255, 127, 14];
pub const GREY: [u8; 3] = [127, 127, 127];

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

/// Draw `text` with its top-left corner at (x, y).
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: [u8; 3]) {
    for (i, ch) in s.chars().enumerate() {
        let up = ch.to_ascii_uppercase();
        let Some((_, rows)) = GLYPHS.iter().find(|g| g.0 == up) else {
            continue;
        };
        for (ry, row) in rows.iter().enumerate() {
            for (rx, b) in row.bytes().enumerate() {
                if b == b'#' {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            put(
                                img,
                                x + i as i64 * CHAR_W + rx as i64 * SCALE + dx,
                                y + ry as i64 * SCALE + dy,
                                c,
                            );
                        }
                    }
                }
            }
        }
    }
}

pub fn text_width(s: &str) -> i64 {
    s.chars().count() as i64 * CHAR_W
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], dashed: bool) {
    let n = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for i in 0..=n {
        if dashed && (i / 6) % 2 == 1 {
            continue;
        }
        let x = x0 + (x1 - x0) * i / n;
        let y = y0 + (y1 - y0) * i / n;
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            put(img, x + dx, y + dy, c);
        }
    }
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || (v.fract() == 0.0 && v.abs() < 1e6) {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// How a series is drawn.
#[derive(Clone, Copy, PartialEq)]
pub enum Style {
    Line,
    Dashed,
    Points,
    LinePoints,
}

pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// optional ± error per point (drawn as a vertical bar)
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

/// An x–y chart; `log2_x` draws the x axis in log₂ (for k = 1, 2, 4, 8, 16).
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub log2_x: bool,
    pub series: Vec<Series>,
}

const W: i64 = 880;
const H: i64 = 560;
const LEFT: i64 = 90;
const RIGHT: i64 = 30;
const TOP: i64 = 64;
const BOTTOM: i64 = 70;

impl Chart {
    pub fn render(&self) -> RgbImage {
        let mut img = RgbImage::from_pixel(W as u32, H as u32, Rgb([255, 255, 255]));
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let tx = |x: f64| if self.log2_x { x.max(1e-9).log2() } else { x };
        let (x0, x1) = (tx(self.x_range.0), tx(self.x_range.1));
        let (y0, y1) = self.y_range;
        let to_px = |(x, y): (f64, f64)| {
            let fx = if x1 > x0 {
                (tx(x) - x0) / (x1 - x0)
            } else {
                0.5
            };
            let fy = if y1 > y0 { (y - y0) / (y1 - y0) } else { 0.5 };
            (
                LEFT + (fx.clamp(-0.05, 1.05) * pw as f64) as i64,
                TOP + ph - (fy.clamp(-0.05, 1.05) * ph as f64) as i64,
            )
        };
        let axis = [60, 60, 60];
        // grid and ticks
        for i in 0..=5 {
            let v = y0 + (y1 - y0) * i as f64 / 5.0;
            let (_, py) = to_px((self.x_range.0, v));
            for x in (LEFT..LEFT + pw).step_by(5) {
                put(&mut img, x, py, [225, 225, 225]);
            }
            let s = fmt_tick(v);
            text(&mut img, LEFT - 8 - text_width(&s), py - 7, &s, axis);
        }
        let x_ticks: Vec<f64> = if self.log2_x {
            let mut v = Vec::new();
            let mut t = 1.0;
            while t <= self.x_range.1 * 1.0001 {
                if t >= self.x_range.0 * 0.9999 {
                    v.push(t);
                }
                t *= 2.0;
            }
            v
        } else {
            (0..=5)
                .map(|i| self.x_range.0 + (self.x_range.1 - self.x_range.0) * i as f64 / 5.0)
                .collect()
        };
        for v in x_ticks {
            let (px, _) = to_px((v, y0));
            line(&mut img, (px, TOP + ph), (px, TOP + ph + 5), axis, false);
            let s = fmt_tick(v);
            text(&mut img, px - text_width(&s) / 2, TOP + ph + 10, &s, axis);
        }
        line(
            &mut img,
            (LEFT, TOP + ph),
            (LEFT + pw, TOP + ph),
            axis,
            false,
        );
        line(&mut img, (LEFT, TOP), (LEFT, TOP + ph), axis, false);
        text(
            &mut img,
            (W - text_width(&self.title)) / 2,
            15,
            &self.title,
            [0, 0, 0],
        );
        text(
            &mut img,
            LEFT + (pw - text_width(&self.x_label)) / 2,
            H - 28,
            &self.x_label,
            axis,
        );
        text(&mut img, 8, TOP - 26, &self.y_label, axis);
        for s in &self.series {
            let px: Vec<(i64, i64)> = s.points.iter().map(|&p| to_px(p)).collect();
            if matches!(s.style, Style::Line | Style::Dashed | Style::LinePoints) {
                for w in px.windows(2) {
                    line(&mut img, w[0], w[1], s.color, s.style == Style::Dashed);
                }
            }
            if matches!(s.style, Style::Points | Style::LinePoints) {
                for &(x, y) in &px {
                    for dy in -4..=4 {
                        for dx in -4..=4 {
                            if dx * dx + dy * dy <= 16 {
                                put(&mut img, x + dx, y + dy, s.color);
                            }
                        }
                    }
                }
            }
            for (p, e) in s.points.iter().zip(&s.errors) {
                let a = to_px((p.0, p.1 - e));
                let b = to_px((p.0, p.1 + e));
                line(&mut img, a, b, s.color, false);
                line(&mut img, (a.0 - 5, a.1), (a.0 + 5, a.1), s.color, false);
                line(&mut img, (b.0 - 5, b.1), (b.0 + 5, b.1), s.color, false);
            }
        }
        // legend, top-left inside the plot
        for (i, s) in self.series.iter().enumerate() {
            let y = TOP + 10 + i as i64 * 22;
            let x = LEFT + 15;
            line(
                &mut img,
                (x, y + 7),
                (x + 30, y + 7),
                s.color,
                s.style == Style::Dashed,
            );
            text(&mut img, x + 40, y, &s.label, [30, 30, 30]);
        }
        img
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        save_png(&self.render(), path)
    }
}

/// A heat map of `m` (rows = true class, columns = predicted), white → blue by row-normalised value.
pub fn heatmap(m: &[Vec<u64>], title: &str) -> RgbImage {
    let n = m.len().max(1) as i64;
    let cell = (700 / n).clamp(1, 40);
    let side = cell * n;
    let (w, h) = (side + 120, side + 120);
    let mut img = RgbImage::from_pixel(w as u32, h as u32, Rgb([255, 255, 255]));
    text(&mut img, 20, 15, title, [0, 0, 0]);
    text(&mut img, 60, h - 30, "PREDICTED ->", [60, 60, 60]);
    text(&mut img, 5, 45, "TRUE", [60, 60, 60]);
    for (i, row) in m.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (j, &v) in row.iter().enumerate() {
            let f = v as f64 / total as f64;
            let c = [
                (255.0 - f * 224.0) as u8,
                (255.0 - f * 136.0) as u8,
                (255.0 - f * 75.0) as u8,
            ];
            for y in 0..cell {
                for x in 0..cell {
                    put(
                        &mut img,
                        60 + j as i64 * cell + x,
                        70 + i as i64 * cell + y,
                        c,
                    );
                }
            }
        }
    }
    line(&mut img, (59, 69), (60 + side, 69), [60, 60, 60], false);
    line(&mut img, (59, 69), (59, 70 + side), [60, 60, 60], false);
    img
}

pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
