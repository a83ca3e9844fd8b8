//! Image decoding (JPEG incl. CMYK, PNG 1/2/4/8/16-bit grey/palette/alpha, WebP, GIF first frame,
//! BMP, TIFF) into the mode Pillow opens each file in ([`ModeImage`]), and conversion to RGB the way
//! PIL's `convert("RGB")` does it, with a guard against decompression bombs.
//!
//! The `image` crate decodes the pixels but expands palettes, low bit depths and `tRNS` colour keys
//! and does not say what the file held, so the mode Pillow would pick is read from the file's own
//! header here (PNG `IHDR`, the GIF frame's colour table, the BMP palette): it decides how the
//! reference transform resizes the image (see [`crate::modes`]).

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::modes::{Mode, ModeImage};
use crate::resize::Rgb8;

/// Images whose header claims more pixels than this are refused before decoding.
pub const MAX_PIXELS: u64 = 100_000_000;

/// What to do with an alpha channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alpha {
    /// Drop it, as PIL's `convert("RGB")` does (hidden colours show through).
    #[default]
    Drop,
    /// Composite onto white first (for icons and emoji whose transparent pixels hold junk), with
    /// Pillow's `alpha_composite` arithmetic; also what Hugging Face's `convert_to_rgb` does
    /// (transformers ≥ 5).
    FlattenOnWhite,
}

impl Alpha {
    /// The image with this alpha policy applied before anything else: unchanged for `Drop`,
    /// [`ModeImage::flatten_on_white`] for `FlattenOnWhite`.
    pub fn apply(self, img: &ModeImage) -> std::borrow::Cow<'_, ModeImage> {
        match self {
            Alpha::FlattenOnWhite if img.has_alpha() => {
                std::borrow::Cow::Owned(img.flatten_on_white())
            }
            _ => std::borrow::Cow::Borrowed(img),
        }
    }
}

/// A user-facing image error; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot decode image '{path}': {msg}")]
    Decode { path: String, msg: String },
    #[error(
        "image '{path}' is in a format that is not supported (JPEG, PNG, WebP, GIF, BMP, TIFF are)"
    )]
    Unsupported { path: String },
    #[error("image '{path}' is empty ({width}×{height} pixels)")]
    Empty {
        path: String,
        width: u32,
        height: u32,
    },
    #[error(
        "image '{path}' claims {width}×{height} pixels ({mp:.1} megapixels), more than the 100-megapixel limit; \
         refusing to decode it (possible decompression bomb)"
    )]
    TooLarge {
        path: String,
        width: u32,
        height: u32,
        mp: f64,
    },
}

fn decode_error(name: &str, msg: impl ToString) -> ImageError {
    ImageError::Decode {
        path: name.to_owned(),
        msg: msg.to_string(),
    }
}

fn reader<'a>(bytes: &'a [u8], name: &str) -> Result<ImageReader<Cursor<&'a [u8]>>, ImageError> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(name, e))
}

/// The file's format, after refusing empty, unknown, zero-size and oversized images from the
/// header alone.
fn check_header(bytes: &[u8], name: &str) -> Result<ImageFormat, ImageError> {
    let probe = reader(bytes, name)?;
    let Some(format) = probe.format() else {
        if bytes.is_empty() {
            return Err(decode_error(name, "the file is empty (0 bytes)"));
        }
        return Err(ImageError::Unsupported {
            path: name.to_owned(),
        });
    };
    let (width, height) = probe.into_dimensions().map_err(|e| decode_error(name, e))?;
    let pixels = width as u64 * height as u64;
    if pixels > MAX_PIXELS {
        return Err(ImageError::TooLarge {
            path: name.to_owned(),
            width,
            height,
            mp: pixels as f64 / 1e6,
        });
    }
    if pixels == 0 {
        return Err(ImageError::Empty {
            path: name.to_owned(),
            width,
            height,
        });
    }
    Ok(format)
}

/// The width and height an encoded image's header claims, read without decoding it (after the
/// checks every decode makes: known format, not empty, not over the 100-megapixel limit).
pub fn image_dimensions(bytes: &[u8], name: &str) -> Result<(u32, u32), ImageError> {
    check_header(bytes, name)?;
    reader(bytes, name)?
        .into_dimensions()
        .map_err(|e| decode_error(name, e))
}

/// Decode an image from memory into the mode Pillow opens it in; `name` is used in error messages.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<ModeImage, ImageError> {
    let format = check_header(bytes, name)?;
    let short = || {
        decode_error(
            name,
            "the decoder returned fewer pixels than the header claims",
        )
    };
    if format == ImageFormat::Jpeg {
        let d = crate::jpeg::decode(bytes).map_err(|msg| decode_error(name, msg))?;
        let mode = match d.channels {
            1 => Mode::L,
            4 => Mode::Cmyk,
            _ => Mode::Rgb,
        };
        return ModeImage::new(d.width, d.height, mode, d.data, None).ok_or_else(short);
    }
    let mut reader = reader(bytes, name)?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 16);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| decode_error(name, e))?;
    let mode = pil_mode(format, bytes, decoder.original_color_type());
    let img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(name, e))?;
    from_dynamic(img, mode).ok_or_else(short)
}

/// Read and decode an image file into the mode Pillow opens it in.
pub fn load_image(path: &Path) -> Result<ModeImage, ImageError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: name.clone(),
        source,
    })?;
    decode_image(&bytes, &name)
}

/// Decode an image from memory to RGB (`Image.open(f).convert("RGB")`, after flattening if asked);
/// `name` is used in error messages.
pub fn decode_rgb(bytes: &[u8], name: &str, alpha: Alpha) -> Result<Rgb8, ImageError> {
    let img = decode_image(bytes, name)?;
    Ok(match alpha {
        Alpha::FlattenOnWhite if img.has_alpha() => img.flatten_on_white(),
        _ => img,
    }
    .into_rgb())
}

/// Read and decode an image file to RGB.
pub fn load_rgb(path: &Path, alpha: Alpha) -> Result<Rgb8, ImageError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: name.clone(),
        source,
    })?;
    decode_rgb(&bytes, &name, alpha)
}

/// The mode Pillow opens the file in, where the decoded colour type does not tell it: palette,
/// bilevel, low-bit and keyed grey, 16-bit PNGs. `None`: follow the decoded colour type.
fn pil_mode(format: ImageFormat, bytes: &[u8], original: ExtendedColorType) -> Option<Mode> {
    match format {
        ImageFormat::Png => png_mode(bytes),
        ImageFormat::Gif => gif_mode(bytes),
        ImageFormat::Bmp => bmp_mode(bytes),
        ImageFormat::Tiff if original == ExtendedColorType::L1 => Some(Mode::Bilevel),
        _ => None,
    }
}

/// PngImagePlugin's `_MODES`, from the `IHDR` bit depth and colour type.
fn png_mode(b: &[u8]) -> Option<Mode> {
    if b.get(12..16)? != b"IHDR" {
        return None;
    }
    Some(match (*b.get(24)?, *b.get(25)?) {
        (1, 0) => Mode::Bilevel,
        (16, 0) => Mode::I16,
        (_, 0) => Mode::L,
        (_, 2) => Mode::Rgb,
        (_, 3) => Mode::P,
        (8, 4) => Mode::La,
        (_, 4 | 6) => Mode::Rgba, // 16-bit grey+alpha opens as RGBA (`LA;16B`)
        _ => return None,
    })
}

/// GifImagePlugin: the first frame is `P`, or `L` when its colour table (local, else global) is
/// missing or exactly the grey ramp 0, 1, 2, … (Pillow's `_is_palette_needed`).
fn gif_mode(b: &[u8]) -> Option<Mode> {
    let table = |flags: u8, at: usize| b.get(at..at + (3usize << ((flags & 7) + 1)));
    let flags = *b.get(10)?;
    let mut pos = 13;
    let mut palette = None;
    if flags & 0x80 != 0 {
        palette = Some(table(flags, pos)?);
        pos += 3usize << ((flags & 7) + 1);
    }
    loop {
        match *b.get(pos)? {
            0x21 => {
                pos += 2; // introducer, label, then sub-blocks up to an empty one
                loop {
                    let len = *b.get(pos)? as usize;
                    pos += 1 + len;
                    if len == 0 {
                        break;
                    }
                }
            }
            0x2c => {
                let f = *b.get(pos + 9)?;
                if f & 0x80 != 0 {
                    palette = Some(table(f, pos + 10)?);
                }
                let grey_ramp = |p: &[u8]| {
                    (p.chunks_exact(3).enumerate()).all(|(i, c)| c.iter().all(|&v| v as usize == i))
                };
                return Some(match palette {
                    Some(p) if !grey_ramp(p) => Mode::P,
                    _ => Mode::L,
                });
            }
            _ => return None,
        }
    }
}

/// BmpImagePlugin: images of up to 8 bits per pixel are `P`, or `1`/`L` when the palette is
/// black and white / the grey ramp.
fn bmp_mode(b: &[u8]) -> Option<Mode> {
    let u16le = |at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u32le = |at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let header = u32le(14)? as usize;
    let (bits, colors, entry) = if header == 12 {
        (u16le(24)?, 0, 3)
    } else {
        (u16le(28)?, u32le(46)? as usize, 4)
    };
    if bits == 0 || bits > 8 {
        return None;
    }
    let colors = if colors == 0 { 1usize << bits } else { colors };
    let palette = b.get(14 + header..14 + header + colors.checked_mul(entry)?)?;
    let grey = (0..colors).all(|i| {
        let v = if colors == 2 { [0, 255][i] } else { i };
        palette[i * entry..i * entry + 3]
            .iter()
            .all(|&c| c as usize == v)
    });
    Some(match (grey, colors) {
        (false, _) => Mode::P,
        (true, ..=2) => Mode::Bilevel,
        (true, _) => Mode::L,
    })
}

/// 8-bit samples of the decoded colour type (16-bit colour reduced to its high byte, as Pillow
/// reads it) and their number per pixel.
fn samples8(img: DynamicImage) -> (usize, Vec<u8>) {
    let hi = |v: &u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageLuma8(i) => (1, i.into_raw()),
        DynamicImage::ImageLumaA8(i) => (2, i.into_raw()),
        DynamicImage::ImageRgb8(i) => (3, i.into_raw()),
        DynamicImage::ImageRgba8(i) => (4, i.into_raw()),
        // 16-bit grey+alpha: Pillow opens it as RGBA
        DynamicImage::ImageLumaA16(i) => (
            4,
            i.chunks_exact(2)
                .flat_map(|p| [hi(&p[0]), hi(&p[0]), hi(&p[0]), hi(&p[1])])
                .collect(),
        ),
        DynamicImage::ImageRgb16(i) => (3, i.iter().map(hi).collect()),
        DynamicImage::ImageRgba16(i) => (4, i.iter().map(hi).collect()),
        other => (4, other.to_rgba8().into_raw()),
    }
}

/// Alpha values as a transparency channel, if any pixel is not opaque.
fn transparency(alpha: Vec<u8>) -> Option<Vec<u8>> {
    alpha.iter().any(|&a| a < 255).then_some(alpha)
}

/// The decoded image in Pillow's mode `mode` (or the decoded colour type's). An alpha channel the
/// mode does not have (a `tRNS` colour key, a palette's transparency) becomes its transparency.
fn from_dynamic(img: DynamicImage, mode: Option<Mode>) -> Option<ModeImage> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let img = match (img, mode) {
        // 16-bit grey is `I;16` (a tRNS colour key makes the decoder add an alpha channel)
        (DynamicImage::ImageLuma16(i), _) => return ModeImage::new_i16(w, h, i.into_raw(), None),
        (DynamicImage::ImageLumaA16(i), Some(Mode::I16)) => {
            let v = i.chunks_exact(2).map(|p| p[0]).collect();
            let a = i.chunks_exact(2).map(|p| (p[1] >> 8) as u8).collect();
            return ModeImage::new_i16(w, h, v, transparency(a));
        }
        (img, _) => img,
    };
    let (ch, data) = samples8(img);
    let natural = [Mode::L, Mode::La, Mode::Rgb, Mode::Rgba][ch - 1];
    let mode = match mode.unwrap_or(natural) {
        Mode::I16 => Mode::L,
        Mode::Cmyk => Mode::Rgb,
        m => m,
    };
    if mode.channels() == ch {
        return ModeImage::new(w, h, mode, data, None);
    }
    // anything else goes through RGBA: grey replicated, opaque where there is no alpha
    let px = |i: usize| -> [u8; 4] {
        let p = &data[i * ch..(i + 1) * ch];
        match ch {
            1 => [p[0], p[0], p[0], 255],
            2 => [p[0], p[0], p[0], p[1]],
            3 => [p[0], p[1], p[2], 255],
            _ => [p[0], p[1], p[2], p[3]],
        }
    };
    let n = data.len() / ch;
    let alpha = || transparency((0..n).map(|i| px(i)[3]).collect());
    let (out, t): (Vec<u8>, _) = match mode {
        Mode::Bilevel | Mode::L => ((0..n).map(|i| px(i)[0]).collect(), alpha()),
        Mode::La => ((0..n).flat_map(|i| [px(i)[0], px(i)[3]]).collect(), None),
        Mode::Rgba => ((0..n).flat_map(px).collect(), None),
        _ => (
            (0..n)
                .flat_map(|i| {
                    let p = px(i);
                    [p[0], p[1], p[2]]
                })
                .collect(),
            alpha(),
        ),
    };
    ModeImage::new(w, h, mode, out, t)
}
