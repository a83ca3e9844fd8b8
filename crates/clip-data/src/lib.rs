//! Image decoding and CLIP preprocessing, matching torchvision's
//! `Compose([Resize(n, BICUBIC), CenterCrop(n), ToTensor(), Normalize(mean, std)])` on PIL images.

pub mod chart;
pub mod dataset;
pub mod emoji;
pub mod files;
pub mod image;
pub mod jpeg;
pub mod limits;
pub mod manifest;
pub mod modes;
pub mod out;
pub mod pairs;
pub mod resize;
pub mod rng;
pub mod shards;
pub mod synth;
pub mod text;

use std::path::Path;

pub use crate::image::{
    Alpha, ImageError, decode_image, decode_rgb, image_dimensions, load_image, load_rgb,
};
pub use crate::modes::{Mode, ModeImage};
pub use crate::resize::{Rgb8, resize_bicubic};

/// OpenAI's normalisation mean.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI's normalisation std.
#[allow(clippy::excessive_precision)] // the reference values, verbatim
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// torchvision `Resize(n)` on a PIL image: the short side becomes `n`, the long side
/// `int(n * long / short)`.
pub fn resize_short_side(img: &Rgb8, n: usize) -> Rgb8 {
    let (nw, nh) = short_side_size(img.width, img.height, n);
    resize_bicubic(img, nw, nh)
}

/// The size `Resize(n)` gives a `w×h` image (torchvision's and Hugging Face's rule alike).
fn short_side_size(w: usize, h: usize, n: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((n * long) as f64 / short as f64) as usize;
    if w <= h { (n, new_long) } else { (new_long, n) }
}

/// Python's `round` (half to even) of `x / 2` for a non-negative integer `x`.
fn half_round_even(x: usize) -> usize {
    let q = x / 2;
    if x % 2 == 1 && q % 2 == 1 { q + 1 } else { q }
}

/// Crop an `n×n` window at (`left`, `top`).
pub fn crop(img: &Rgb8, left: usize, top: usize, n: usize) -> Rgb8 {
    assert!(
        left + n <= img.width && top + n <= img.height,
        "crop window inside the image"
    );
    let mut data = Vec::with_capacity(n * n * 3);
    for y in top..top + n {
        let start = (y * img.width + left) * 3;
        data.extend_from_slice(&img.data[start..start + n * 3]);
    }
    Rgb8::new(n, n, data)
}

/// torchvision `CenterCrop(n)`: offsets `round((size - n) / 2)` with Python's rounding.
pub fn center_crop(img: &Rgb8, n: usize) -> Rgb8 {
    crop(
        img,
        half_round_even(img.width - n),
        half_round_even(img.height - n),
        n,
    )
}

/// Training augmentation, the paper's only one: resize the short side to `round(n · scale)` and take
/// a random `n×n` crop (uniform over positions; seeded by the caller's generator). Evaluation uses
/// [`Preprocess::resize_crop`] (the center crop) instead.
pub fn random_square_crop(img: &Rgb8, n: usize, scale: f64, rng: &mut rng::Rng) -> Rgb8 {
    let resized = resize_short_side(img, ((n as f64 * scale).round() as usize).max(n));
    let left = rng.below(resized.width - n + 1);
    let top = rng.below(resized.height - n + 1);
    crop(&resized, left, top, n)
}

/// ConVIRT's heavier augmentation (Zhang et al. 2020, the one CLIP dropped), at square crops: a random
/// crop of 60–100% of the short side's square area resized to `n`, a horizontal flip with
/// probability ½, brightness and contrast each scaled by a factor in [0.6, 1.4], and a Gaussian blur
/// with σ ∈ [0.1, 3.0] pixels at 224 (scaled to `n`). ConVIRT's small random affine transform is
/// left out.
pub fn heavy_augment(img: &Rgb8, n: usize, rng: &mut rng::Rng) -> Rgb8 {
    let short = img.width.min(img.height);
    let area = 0.6 + 0.4 * rng.unit();
    let side = ((short as f64 * area.sqrt()).round() as usize).clamp(1, short);
    let left = rng.below(img.width - side + 1);
    let top = rng.below(img.height - side + 1);
    let mut out = resize::resize_bicubic(&crop(img, left, top, side), n, n);
    let flip = rng.unit() < 0.5;
    let brightness = 0.6 + 0.8 * rng.unit();
    let contrast = 0.6 + 0.8 * rng.unit();
    let sigma = (0.1 + 2.9 * rng.unit()) * n as f64 / 224.0;
    if flip {
        for row in out.data.chunks_exact_mut(n * 3) {
            for x in 0..n / 2 {
                for c in 0..3 {
                    row.swap(x * 3 + c, (n - 1 - x) * 3 + c);
                }
            }
        }
    }
    let mean =
        out.data.iter().map(|&v| v as f64).sum::<f64>() / out.data.len().max(1) as f64 * brightness;
    let mut v: Vec<f64> = out.data.iter().map(|&p| p as f64 * brightness).collect();
    for p in &mut v {
        *p = (*p - mean) * contrast + mean;
    }
    out.data = v
        .iter()
        .map(|p| p.round().clamp(0.0, 255.0) as u8)
        .collect();
    // image's Gaussian blur (f32, edges clamped)
    if let Some(buf) =
        ::image::RgbImage::from_raw(n as u32, n as u32, std::mem::take(&mut out.data))
    {
        out.data = ::image::imageops::blur(&buf, sigma as f32).into_raw();
    }
    out
}

/// Where the conversion to RGB happens relative to the resize; the references disagree.
///
/// open_clip's `image_transform(n, is_train=False)` and OpenAI's `clip._transform(n)` both run
/// `Resize(n, BICUBIC)`, `CenterCrop(n)` on the PIL image *in its own mode* and `convert("RGB")`
/// last, so Pillow resizes `RGBA`/`LA` with premultiplied alpha (transparent pixels turn black),
/// `P` and `1` with nearest neighbour, `I;16` at 16 bits, `CMYK` in CMYK (see [`crate::modes`]).
/// Hugging Face's `CLIPImageProcessor` converts to RGB first (`do_convert_rgb`; since transformers 5
/// compositing transparency onto white, which is [`Alpha::FlattenOnWhite`]), resizes that with
/// Pillow's bicubic, and center-crops at offsets `(size - n) // 2` where torchvision rounds
/// `(size - n) / 2` half to even: one pixel apart when `size - n ≡ 3 (mod 4)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// open_clip / OpenAI: resize and crop in the image's mode, convert to RGB last.
    #[default]
    Reference,
    /// Hugging Face: convert to RGB first, then resize and crop (floor offsets).
    ConvertFirst,
}

/// How the image is brought to `n×n` (open_clip's `resize_mode` for evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// `Resize(n)` (short side to `n`) then `CenterCrop(n)`: OpenAI's and open_clip's default.
    #[default]
    ShortestCrop,
    /// `Resize((n, n))`: both sides to `n`, aspect ratio not kept, nothing cropped (open_clip's
    /// `resize_mode="squash"`, used by the DFN5B and SigLIP tags).
    Squash,
}

/// The CLIP image transform.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub size: usize,
    pub resize: Resize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Applied to the decoded image before anything else.
    pub alpha: Alpha,
    pub order: Order,
}

impl Preprocess {
    /// open_clip's and OpenAI's transform for an `n×n` model input.
    pub fn clip(size: usize) -> Preprocess {
        Preprocess {
            size,
            resize: Resize::ShortestCrop,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            alpha: Alpha::Drop,
            order: Order::Reference,
        }
    }

    /// Hugging Face's `CLIPImageProcessor` (transformers ≥ 5, Pillow backend): transparency
    /// composited onto white, converted to RGB, then resized and cropped.
    pub fn hf(size: usize) -> Preprocess {
        Preprocess {
            alpha: Alpha::FlattenOnWhite,
            order: Order::ConvertFirst,
            ..Preprocess::clip(size)
        }
    }

    /// Center-crop offsets of a `w×h` image: torchvision's rounding, or Hugging Face's floor.
    fn crop_offsets(&self, w: usize, h: usize) -> (usize, usize) {
        let (dw, dh) = (w - self.size, h - self.size);
        match self.order {
            Order::Reference => (half_round_even(dw), half_round_even(dh)),
            Order::ConvertFirst => (dw / 2, dh / 2),
        }
    }

    /// Resize + center crop (or squash) of an RGB image, as 8-bit RGB (the part before `ToTensor`).
    pub fn resize_crop(&self, img: &Rgb8) -> Rgb8 {
        if self.resize == Resize::Squash {
            return resize::resize_bicubic(img, self.size, self.size);
        }
        let resized = resize_short_side(img, self.size);
        let (left, top) = self.crop_offsets(resized.width, resized.height);
        crop(&resized, left, top, self.size)
    }

    /// Everything before `ToTensor` for a decoded image, in [`Preprocess::order`]: the alpha
    /// policy, then resize + center crop + `convert("RGB")` (or the conversion first).
    pub fn prepare(&self, img: &ModeImage) -> Rgb8 {
        let img = self.alpha.apply(img);
        match self.order {
            Order::ConvertFirst => self.resize_crop(&img.to_rgb()),
            Order::Reference if self.resize == Resize::Squash => {
                img.resize(self.size, self.size).into_rgb()
            }
            Order::Reference => {
                let (w, h) = short_side_size(img.width(), img.height(), self.size);
                let (left, top) = self.crop_offsets(w, h);
                let n = self.size;
                img.resize(w, h).crop(left, top, n, n).into_rgb()
            }
        }
    }

    /// `ToTensor` + `Normalize` of an `n×n` image: `[3, n, n]` planar floats.
    pub fn normalize(&self, img: &Rgb8) -> Vec<f32> {
        let plane = img.width * img.height;
        let mut out = vec![0.0f32; 3 * plane];
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (px[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// The full transform of an image already in RGB: `[3, n, n]`. (The alpha policy does not
    /// apply: there is no alpha left.)
    pub fn apply(&self, img: &Rgb8) -> Vec<f32> {
        self.normalize(&self.resize_crop(img))
    }

    /// The full transform of a decoded image: `[3, n, n]`.
    pub fn apply_image(&self, img: &ModeImage) -> Vec<f32> {
        self.normalize(&self.prepare(img))
    }

    /// Decode and transform a file.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>, ImageError> {
        Ok(self.apply_image(&load_image(path)?))
    }

    /// Decode and transform an image held in memory; `name` is used in error messages.
    pub fn load_bytes(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, ImageError> {
        Ok(self.apply_image(&decode_image(bytes, name)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_augmentation_flips_jitters_and_keeps_the_size() {
        // left half black, right half white
        let data: Vec<u8> = (0..64 * 64)
            .flat_map(|i| if i % 64 < 32 { [0u8; 3] } else { [255u8; 3] })
            .collect();
        let img = Rgb8::new(64, 64, data);
        let mut flipped = 0;
        for seed in 0..40 {
            let out = heavy_augment(&img, 32, &mut rng::Rng::new(seed));
            assert_eq!(
                (out.width, out.height, out.data.len()),
                (32, 32, 32 * 32 * 3)
            );
            let left: u32 = out.data[..3].iter().map(|&v| v as u32).sum();
            let right: u32 = out.data[31 * 3..32 * 3].iter().map(|&v| v as u32).sum();
            flipped += (left > right) as u32;
        }
        assert!(
            (8..=32).contains(&flipped),
            "about half flipped: {flipped} of 40"
        );
        // a pure function of the generator
        let a = heavy_augment(&img, 32, &mut rng::Rng::new(7));
        assert_eq!(a.data, heavy_augment(&img, 32, &mut rng::Rng::new(7)).data);
    }

    #[test]
    fn random_crop_is_seeded_and_inside() {
        let img = Rgb8::new(40, 30, (0..40 * 30 * 3).map(|i| (i % 251) as u8).collect());
        let a = random_square_crop(&img, 16, 1.25, &mut rng::Rng::new(9));
        let b = random_square_crop(&img, 16, 1.25, &mut rng::Rng::new(9));
        assert_eq!(a, b);
        assert_eq!((a.width, a.height), (16, 16));
        let offsets: std::collections::HashSet<Vec<u8>> = (0..20)
            .map(|s| random_square_crop(&img, 16, 1.25, &mut rng::Rng::new(s)).data)
            .collect();
        assert!(offsets.len() > 5, "crops vary with the seed");
    }

    #[test]
    fn python_rounding_of_crop_offsets() {
        // round(0.5) = 0, round(1.5) = 2, round(2.5) = 2
        assert_eq!([0, 1, 2, 3, 4, 5].map(half_round_even), [0, 0, 1, 2, 2, 2]);
    }

    #[test]
    fn resize_short_side_truncates_long_side() {
        let img = Rgb8::new(3, 5, vec![0; 45]);
        let r = resize_short_side(&img, 96);
        assert_eq!((r.width, r.height), (96, 160));
        let img = Rgb8::new(300, 1, vec![0; 900]);
        let r = resize_short_side(&img, 96);
        assert_eq!((r.width, r.height), (28800, 96));
    }
}
