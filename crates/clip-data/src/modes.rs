//! Images kept in the mode Pillow opens them in (`1`, `L`, `LA`, `RGB`, `RGBA`, `P`, `I;16`,
//! `CMYK`), with the Pillow operations CLIP's reference transforms apply to them before `ToTensor`:
//! `resize`, `crop` and, last, `convert("RGB")`.
//!
//! Why this exists: open_clip's and OpenAI's transforms resize and crop the PIL image in its own
//! mode and convert to RGB only at the end, and Pillow's `resize` depends on the mode — `RGBA` and
//! `LA` are resized with premultiplied alpha (so fully transparent pixels come out black), `P` and
//! `1` with nearest neighbour whatever filter is asked, `I;16` at 16-bit precision (clipped to 255
//! only by the final conversion), `CMYK` in CMYK. Converting to RGB first, as Hugging Face's
//! processor does, gives different pixels (up to 255 levels on icons with transparent areas).
//!
//! The arithmetic is Pillow's, by hand, so results are bit-identical: `libImaging/Convert.c`
//! (`rgbA2rgba`/`lA2la` premultiply with `MULDIV255` rounding, `rgba2rgbA`/`la2lA` un-premultiply
//! with `CLIP8(255 * c / alpha)`, `cmyk2rgb`, `I16_RGB`, palette lookup) and
//! `libImaging/AlphaComposite.c` (compositing onto opaque white, which reduces exactly to
//! `(c·a + 255·(255 − a) + 127) / 255`). The resamplers are in [`crate::resize`].

use crate::resize::{Rgb8, bicubic_u8, bicubic_u16, nearest};

/// Pillow's image modes that [`ModeImage`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `1`: bilevel, stored as 0 / 255.
    Bilevel,
    /// `L`: 8-bit grey.
    L,
    /// `LA`: 8-bit grey and alpha.
    La,
    /// `RGB`.
    Rgb,
    /// `RGBA` (not premultiplied).
    Rgba,
    /// `P`: palette. Stored as each pixel's palette colour (nearest-neighbour resizing of indices
    /// then palette lookup equals the same resizing of the colours), with the palette's alpha as
    /// the image's transparency.
    P,
    /// `I;16`: 16-bit grey.
    I16,
    /// `CMYK`, as Pillow holds it (Adobe JPEGs are inverted on reading).
    Cmyk,
}

impl Mode {
    /// Pillow's name for the mode (`Image.mode`).
    pub fn pil_name(self) -> &'static str {
        match self {
            Mode::Bilevel => "1",
            Mode::L => "L",
            Mode::La => "LA",
            Mode::Rgb => "RGB",
            Mode::Rgba => "RGBA",
            Mode::P => "P",
            Mode::I16 => "I;16",
            Mode::Cmyk => "CMYK",
        }
    }

    /// Interleaved samples per pixel.
    pub(crate) fn channels(self) -> usize {
        match self {
            Mode::Bilevel | Mode::L | Mode::I16 => 1,
            Mode::La => 2,
            Mode::Rgb | Mode::P => 3,
            Mode::Rgba | Mode::Cmyk => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

/// A decoded image in its Pillow mode (see [`crate::image::decode_image`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeImage {
    width: usize,
    height: usize,
    mode: Mode,
    samples: Samples,
    /// Per-pixel alpha of a palette's transparency or a colour key (a PNG `tRNS` chunk, a GIF
    /// transparent index): what Pillow keeps in `info["transparency"]`. `convert("RGB")` ignores
    /// it; compositing onto white uses it.
    transparency: Option<Vec<u8>>,
}

/// `MULDIV255(a, b)`: `a·b / 255` rounded, Pillow's way.
fn muldiv255(a: u32, b: u32) -> u32 {
    let tmp = a * b + 128;
    ((tmp >> 8) + tmp) >> 8
}

/// Composite `c` with alpha `a` over opaque white (`Image.alpha_composite`, exact).
fn over_white(c: u8, a: u8) -> u8 {
    ((c as u32 * a as u32 + 255 * (255 - a as u32) + 127) / 255) as u8
}

/// `rgbA2rgba` / `lA2la`: multiply the colour channels by the last (alpha) channel.
fn premultiply(data: &[u8], ch: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    for px in out.chunks_exact_mut(ch) {
        let a = px[ch - 1] as u32;
        for c in &mut px[..ch - 1] {
            *c = muldiv255(*c as u32, a) as u8;
        }
    }
    out
}

/// `rgba2rgbA` / `la2lA`: divide the colour channels by alpha (0 and 255 leave them as they are).
fn unpremultiply(data: &mut [u8], ch: usize) {
    for px in data.chunks_exact_mut(ch) {
        let a = px[ch - 1] as u32;
        if a != 0 && a != 255 {
            for c in &mut px[..ch - 1] {
                *c = (255 * *c as u32 / a).min(255) as u8;
            }
        }
    }
}

/// `cmyk2rgb`.
fn cmyk_to_rgb(px: &[u8]) -> [u8; 3] {
    let nk = 255 - px[3] as i32;
    let f = |c: u8| (nk - muldiv255(c as u32, nk as u32) as i32).clamp(0, 255) as u8;
    [f(px[0]), f(px[1]), f(px[2])]
}

/// The `w×h` window at (`left`, `top`) of rows `width` pixels wide, `ch` samples per pixel.
fn window<T: Copy>(src: &[T], width: usize, ch: usize, [left, top, w, h]: [usize; 4]) -> Vec<T> {
    let mut out = Vec::with_capacity(w * h * ch);
    for y in top..top + h {
        let start = (y * width + left) * ch;
        out.extend_from_slice(&src[start..start + w * ch]);
    }
    out
}

impl ModeImage {
    /// An 8-bit image; `data` holds `width·height` pixels of the mode's interleaved samples
    /// (`P`: palette colours as RGB), `transparency` one alpha per pixel. `None` when the sizes
    /// disagree or the mode is `I;16` (see [`ModeImage::new_i16`]).
    pub fn new(
        width: usize,
        height: usize,
        mode: Mode,
        data: Vec<u8>,
        transparency: Option<Vec<u8>>,
    ) -> Option<ModeImage> {
        let pixels = width.checked_mul(height)?;
        let ok = mode != Mode::I16
            && data.len() == pixels.checked_mul(mode.channels())?
            && transparency.as_ref().is_none_or(|t| t.len() == pixels);
        ok.then_some(ModeImage {
            width,
            height,
            mode,
            samples: Samples::U8(data),
            transparency,
        })
    }

    /// A 16-bit grey (`I;16`) image.
    pub fn new_i16(
        width: usize,
        height: usize,
        data: Vec<u16>,
        transparency: Option<Vec<u8>>,
    ) -> Option<ModeImage> {
        let pixels = width.checked_mul(height)?;
        let ok = data.len() == pixels && transparency.as_ref().is_none_or(|t| t.len() == pixels);
        ok.then_some(ModeImage {
            width,
            height,
            mode: Mode::I16,
            samples: Samples::U16(data),
            transparency,
        })
    }

    /// An RGB image.
    pub fn from_rgb(img: Rgb8) -> ModeImage {
        ModeImage {
            width: img.width,
            height: img.height,
            mode: Mode::Rgb,
            samples: Samples::U8(img.data),
            transparency: None,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the image has an alpha band or transparency (what Hugging Face's `convert_to_rgb`
    /// composites onto white).
    pub fn has_alpha(&self) -> bool {
        matches!(self.mode, Mode::La | Mode::Rgba) || self.transparency.is_some()
    }

    /// Composite onto opaque white and drop the alpha: `LA` becomes `L`, `RGBA` becomes `RGB`; a
    /// palette's or colour key's transparency is applied to the pixels and the mode kept (a `P`
    /// image stays a palette image). Images without alpha are returned unchanged.
    pub fn flatten_on_white(&self) -> ModeImage {
        let (mode, samples) = match (&self.samples, self.mode) {
            (Samples::U8(d), Mode::La | Mode::Rgba) => {
                let ch = self.mode.channels();
                let mut out = Vec::with_capacity(d.len() / ch * (ch - 1));
                for px in d.chunks_exact(ch) {
                    let a = px[ch - 1];
                    out.extend(px[..ch - 1].iter().map(|&c| over_white(c, a)));
                }
                let mode = if self.mode == Mode::La {
                    Mode::L
                } else {
                    Mode::Rgb
                };
                (mode, Samples::U8(out))
            }
            (samples, mode) => {
                let Some(alpha) = &self.transparency else {
                    return self.clone();
                };
                let samples = match samples {
                    Samples::U8(d) => {
                        let mut out = d.clone();
                        for (px, &a) in out.chunks_exact_mut(mode.channels()).zip(alpha) {
                            px.iter_mut().for_each(|c| *c = over_white(*c, a));
                        }
                        Samples::U8(out)
                    }
                    // a keyed-out 16-bit grey pixel becomes white (255 after conversion)
                    Samples::U16(d) => Samples::U16(
                        d.iter()
                            .zip(alpha)
                            .map(|(&v, &a)| if a == 0 { 255 } else { v })
                            .collect(),
                    ),
                };
                (mode, samples)
            }
        };
        ModeImage {
            mode,
            samples,
            transparency: None,
            ..*self
        }
    }

    /// Pillow's `Image.resize((w, h), BICUBIC)` in this image's mode: `P` and `1` with nearest
    /// neighbour; `LA`/`RGBA` premultiplied (`La`/`RGBa`), resized, un-premultiplied; `I;16` at
    /// 16 bits; the same size returns a copy (Pillow does not premultiply then). A palette's
    /// transparency follows the pixels; a colour key of an interpolated image is dropped.
    pub fn resize(&self, w: usize, h: usize) -> ModeImage {
        if (w, h) == (self.width, self.height) {
            return self.clone();
        }
        let (iw, ih, ch) = (self.width, self.height, self.mode.channels());
        let (samples, transparency) = match (&self.samples, self.mode) {
            (Samples::U16(d), _) => (Samples::U16(bicubic_u16(d, iw, ih, w, h)), None),
            (Samples::U8(d), Mode::P | Mode::Bilevel) => {
                let t = self
                    .transparency
                    .as_ref()
                    .map(|t| nearest(t, iw, ih, 1, w, h));
                (Samples::U8(nearest(d, iw, ih, ch, w, h)), t)
            }
            (Samples::U8(d), Mode::La | Mode::Rgba) => {
                let mut out = bicubic_u8(&premultiply(d, ch), iw, ih, ch, w, h);
                unpremultiply(&mut out, ch);
                (Samples::U8(out), None)
            }
            (Samples::U8(d), _) => (Samples::U8(bicubic_u8(d, iw, ih, ch, w, h)), None),
        };
        ModeImage {
            width: w,
            height: h,
            mode: self.mode,
            samples,
            transparency,
        }
    }

    /// The `w×h` window at (`left`, `top`), which must lie inside the image.
    pub fn crop(&self, left: usize, top: usize, w: usize, h: usize) -> ModeImage {
        assert!(
            left + w <= self.width && top + h <= self.height,
            "crop window inside the image"
        );
        let (width, win) = (self.width, [left, top, w, h]);
        let samples = match &self.samples {
            Samples::U8(d) => Samples::U8(window(d, width, self.mode.channels(), win)),
            Samples::U16(d) => Samples::U16(window(d, width, 1, win)),
        };
        let transparency = self.transparency.as_ref().map(|t| window(t, width, 1, win));
        ModeImage {
            width: w,
            height: h,
            mode: self.mode,
            samples,
            transparency,
        }
    }

    /// [`ModeImage::to_rgb`], reusing the buffer of an RGB or palette image.
    pub fn into_rgb(self) -> Rgb8 {
        match self {
            ModeImage {
                width,
                height,
                mode: Mode::Rgb | Mode::P,
                samples: Samples::U8(data),
                ..
            } => Rgb8::new(width, height, data),
            other => other.to_rgb(),
        }
    }

    /// Pillow's `convert("RGB")`: grey replicated, alpha and transparency dropped, palette looked
    /// up, `I;16` clipped to 255, CMYK by `cmyk2rgb`.
    pub fn to_rgb(&self) -> Rgb8 {
        let data = match (&self.samples, self.mode) {
            (Samples::U16(d), _) => d.iter().flat_map(|&v| [v.min(255) as u8; 3]).collect(),
            (Samples::U8(d), Mode::Rgb | Mode::P) => d.clone(),
            (Samples::U8(d), Mode::Bilevel) => d
                .iter()
                .flat_map(|&v| [if v != 0 { 255 } else { 0 }; 3])
                .collect(),
            (Samples::U8(d), Mode::L | Mode::I16) => d.iter().flat_map(|&v| [v; 3]).collect(),
            (Samples::U8(d), Mode::La) => d.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
            (Samples::U8(d), Mode::Rgba) => {
                d.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
            }
            (Samples::U8(d), Mode::Cmyk) => d.chunks_exact(4).flat_map(cmyk_to_rgb).collect(),
        };
        Rgb8::new(self.width, self.height, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn premultiplied_resize_blackens_transparent_pixels() {
        // a transparent red pixel next to an opaque blue one: the red must not bleed in
        let data = vec![255, 0, 0, 0, 0, 0, 255, 255];
        let img = ModeImage::new(2, 1, Mode::Rgba, data, None).unwrap();
        let out = img.resize(3, 1).to_rgb();
        assert!(out.data.chunks(3).all(|p| p[0] == 0), "{:?}", out.data);
        // same size: a copy, hidden colours kept as Pillow keeps them
        assert_eq!(img.resize(2, 1).to_rgb().data[..3], [255, 0, 0]);
    }

    #[test]
    fn pillow_conversions() {
        // values from Pillow 13: Image.new("CMYK", (1, 1), (10, 200, 30, 40)).convert("RGB")
        assert_eq!(cmyk_to_rgb(&[10, 200, 30, 40]), [207, 46, 190]);
        // Image.new("RGBA", (1, 1), (200, 100, 50, 77)).convert("RGBa"), and back to "RGBA"
        assert_eq!(premultiply(&[200, 100, 50, 77], 4), vec![60, 30, 15, 77]);
        let mut p = vec![60, 30, 15, 77];
        unpremultiply(&mut p, 4);
        assert_eq!(p, vec![198, 99, 49, 77]);
        let i16 = ModeImage::new_i16(2, 1, vec![200, 300], None).unwrap();
        assert_eq!(i16.to_rgb().data, vec![200, 200, 200, 255, 255, 255]);
    }

    #[test]
    fn flattening_keeps_palette_mode() {
        let img =
            ModeImage::new(2, 1, Mode::P, vec![0, 0, 0, 9, 9, 9], Some(vec![0, 255])).unwrap();
        let flat = img.flatten_on_white();
        assert_eq!(flat.mode(), Mode::P);
        assert!(!flat.has_alpha());
        assert_eq!(flat.to_rgb().data, vec![255, 255, 255, 9, 9, 9]);
        assert_eq!(ModeImage::new(1, 1, Mode::Rgb, vec![0; 2], None), None);
    }
}
