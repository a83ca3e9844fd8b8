//! The generator's data: the training rows of an emoji import (`clip import-emoji`; its
//! `train_STYLE.jsonl` manifests list the training concepts' images, skin tones included when
//! imported, each with its captions), the held-out concepts' rows, and images as tensors in
//! [-1, 1] (flattened onto white, as the CLIP towers see them).

use std::path::{Path, PathBuf};

use clip_data::resize::Rgb8;
use clip_inside::emoji::Import;

use crate::{EvalError, invalid};

/// One image with its captions.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub image: PathBuf,
    pub concept: String,
    pub style: String,
    pub tone: String,
    pub captions: Vec<String>,
}

/// The training rows of `styles` (every style of the import when empty), in manifest order.
pub fn training_items(emoji: &Path, styles: &[String]) -> Result<Vec<Item>, EvalError> {
    let import = Import::read(emoji)?;
    let styles = pick_styles(&import, styles)?;
    let mut items = Vec::new();
    for style in &styles {
        let path = emoji.join(format!("train_{style}.jsonl"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(format!("cannot read '{}': {e}", path.display())))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| invalid(format!("'{}' row {}: {e}", path.display(), i + 1)))?;
            let field = |k: &str| {
                v[k].as_str().map(str::to_owned).ok_or_else(|| {
                    invalid(format!("'{}' row {} has no \"{k}\"", path.display(), i + 1))
                })
            };
            let captions: Vec<String> = v["captions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if captions.is_empty() {
                return Err(invalid(format!(
                    "'{}' row {} has no captions",
                    path.display(),
                    i + 1
                )));
            }
            items.push(Item {
                image: emoji.join(field("image")?),
                concept: field("concept")?,
                style: field("style")?,
                tone: v["tone"].as_str().unwrap_or("default").to_owned(),
                captions,
            });
        }
    }
    if items.is_empty() {
        return Err(invalid(format!(
            "'{}' has no training rows",
            emoji.display()
        )));
    }
    Ok(items)
}

/// `asked` checked against the import's styles (all of them when `asked` is empty).
pub fn pick_styles(import: &Import, asked: &[String]) -> Result<Vec<String>, EvalError> {
    if asked.is_empty() {
        return Ok(import.styles.clone());
    }
    for s in asked {
        if !import.styles.contains(s) {
            return Err(invalid(format!(
                "the import in '{}' has no style '{s}'; it has {}",
                import.dir.display(),
                import.styles.join(", ")
            )));
        }
    }
    Ok(asked.to_vec())
}

/// Load `paths` as `side`×`side` RGB (flattened onto white; resized with bicubic when another size).
pub fn load_images(paths: &[&Path], side: usize) -> Result<Vec<Rgb8>, EvalError> {
    use rayon::prelude::*;
    paths
        .par_iter()
        .map(|p| {
            let img = clip_data::image::load_rgb(p, clip_data::image::Alpha::FlattenOnWhite)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(if img.width == side && img.height == side {
                img
            } else {
                clip_data::resize::resize_bicubic(&img, side, side)
            })
        })
        .collect()
}

/// Images as `[N, 3, side, side]` values in [-1, 1], row-major.
pub fn to_unit(images: &[&Rgb8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(images.iter().map(|i| i.data.len()).sum());
    for img in images {
        let hw = img.width * img.height;
        for c in 0..3 {
            out.extend((0..hw).map(|p| img.data[p * 3 + c] as f32 / 127.5 - 1.0));
        }
    }
    out
}

/// The inverse of [`to_unit`] for one `[3, side, side]` image (clamped).
pub fn from_unit(v: &[f32], side: usize) -> Rgb8 {
    let hw = side * side;
    let mut data = vec![0u8; hw * 3];
    for c in 0..3 {
        for p in 0..hw {
            data[p * 3 + c] = ((v[c * hw + p] + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
        }
    }
    Rgb8::new(side, side, data)
}

/// Peak signal-to-noise ratio (dB, peak 255) of `b` against `a`.
pub fn psnr(a: &Rgb8, b: &Rgb8) -> f64 {
    let mse = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.data.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_round_trip_and_psnr() {
        let img = Rgb8::new(2, 2, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 255, 254, 1]);
        let v = to_unit(&[&img]);
        assert_eq!(v.len(), 12);
        assert!((v[0] + 1.0).abs() < 1e-6);
        assert_eq!(from_unit(&v, 2), img);
        assert!(psnr(&img, &img).is_infinite());
        let mut off = img.clone();
        off.data[0] = 10; // one value off by 10 over 12: mse = 100/12
        let want = 10.0 * (255.0f64 * 255.0 / (100.0 / 12.0)).log10();
        assert!((psnr(&img, &off) - want).abs() < 1e-9);
    }
}
