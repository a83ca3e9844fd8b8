//! `plot.png` at the end of training: loss (left panel, blue) and zero-shot top-1 (right panel,
//! orange, 0–100%) against step, drawn directly into a PNG (no font or plotting dependency; the
//! panels' ranges are printed beside the file by the caller's log).

use std::path::Path;

use anyhow::Result;
use clip_train::trainer::StepLog;

const W: u32 = 900;
const H: u32 = 320;
const PAD: u32 = 30;

fn line(img: &mut image::RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
    let n = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for i in 0..=n {
        let x = x0 + (x1 - x0) * i / n;
        let y = y0 + (y1 - y0) * i / n;
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = (x + dx, y + dy);
            if px >= 0 && py >= 0 && (px as u32) < W && (py as u32) < H {
                img.put_pixel(px as u32, py as u32, image::Rgb(c));
            }
        }
    }
}

/// One panel: `points` (x, y) scaled into the panel starting at `left`, with `y_range`.
fn panel(
    img: &mut image::RgbImage,
    left: u32,
    points: &[(f64, f64)],
    x_max: f64,
    (lo, hi): (f64, f64),
    c: [u8; 3],
) {
    let (pw, ph) = (W / 2 - 2 * PAD, H - 2 * PAD);
    let axis = [90, 90, 90];
    let (l, b) = ((left + PAD) as i64, (H - PAD) as i64);
    line(img, (l, b), (l + pw as i64, b), axis);
    line(img, (l, b), (l, b - ph as i64), axis);
    for k in 1..=4 {
        // light grid at quarters of the y range
        let y = b - (ph as i64 * k / 4);
        for x in (l..l + pw as i64).step_by(6) {
            img.put_pixel(x as u32, y as u32, image::Rgb([215, 215, 215]));
        }
    }
    let to_px = |(x, y): (f64, f64)| {
        let fx = if x_max > 0.0 { x / x_max } else { 0.0 };
        let fy = if hi > lo { (y - lo) / (hi - lo) } else { 0.5 };
        (
            l + (fx * pw as f64) as i64,
            b - (fy.clamp(0.0, 1.0) * ph as f64) as i64,
        )
    };
    for w in points.windows(2) {
        line(img, to_px(w[0]), to_px(w[1]), c);
    }
    if let [p] = points {
        let (x, y) = to_px(*p);
        line(img, (x - 2, y), (x + 2, y), c);
    }
}

pub fn write_plot(path: &Path, history: &[StepLog]) -> Result<()> {
    let mut img = image::RgbImage::from_pixel(W, H, image::Rgb([255, 255, 255]));
    let x_max = history.iter().map(|h| h.step as f64).fold(0.0, f64::max);
    let loss: Vec<(f64, f64)> = history
        .iter()
        .map(|h| (h.step as f64, h.loss as f64))
        .collect();
    let (lo, hi) = loss
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, y)| {
            (a.min(y), b.max(y))
        });
    panel(
        &mut img,
        0,
        &loss,
        x_max,
        (lo.min(0.0), hi.max(1e-9)),
        [30, 90, 200],
    );
    let zs: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|h| h.zero_shot_top1.map(|z| (h.step as f64, z)))
        .collect();
    panel(&mut img, W / 2, &zs, x_max, (0.0, 1.0), [230, 120, 20]);
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
