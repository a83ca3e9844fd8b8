//! Image decoding (JPEG, PNG 8/16-bit/palette/grey/alpha, WebP, GIF first frame, BMP, TIFF) and
//! conversion to RGB the way PIL's `convert("RGB")` does it, with a guard against decompression bombs.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader, Limits};

use crate::resize::Rgb8;

/// Images whose header claims more pixels than this are refused before decoding.
pub const MAX_PIXELS: u64 = 100_000_000;

/// What to do with an alpha channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alpha {
    /// Drop it, as PIL's `convert("RGB")` does (hidden colours show through).
    #[default]
    Drop,
    /// Composite onto white first (for icons and emoji whose transparent pixels hold junk).
    FlattenOnWhite,
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

/// Decode an image from memory; `name` is used in error messages.
pub fn decode_rgb(bytes: &[u8], name: &str, alpha: Alpha) -> Result<Rgb8, ImageError> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::Decode {
                path: name.to_owned(),
                msg: e.to_string(),
            })
    };
    let probe = reader()?;
    let probe_format = probe.format();
    if probe_format.is_none() {
        if bytes.is_empty() {
            return Err(ImageError::Decode {
                path: name.to_owned(),
                msg: "the file is empty (0 bytes)".into(),
            });
        }
        return Err(ImageError::Unsupported {
            path: name.to_owned(),
        });
    }
    let (width, height) = probe.into_dimensions().map_err(|e| ImageError::Decode {
        path: name.to_owned(),
        msg: e.to_string(),
    })?;
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
    if probe_format == Some(image::ImageFormat::Jpeg) {
        let d = crate::jpeg::decode(bytes).map_err(|msg| ImageError::Decode {
            path: name.to_owned(),
            msg,
        })?;
        let data = if d.channels == 1 {
            d.data.iter().flat_map(|&v| [v, v, v]).collect()
        } else {
            d.data
        };
        return Ok(Rgb8::new(d.width, d.height, data));
    }
    let mut reader = reader()?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 16);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| ImageError::Decode {
        path: name.to_owned(),
        msg: e.to_string(),
    })?;
    Ok(to_rgb(img, alpha))
}

/// Read and decode an image file.
pub fn load_rgb(path: &Path, alpha: Alpha) -> Result<Rgb8, ImageError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: name.clone(),
        source,
    })?;
    decode_rgb(&bytes, &name, alpha)
}

fn flatten(c: u8, a: u8) -> u8 {
    ((c as u32 * a as u32 + 255 * (255 - a as u32) + 127) / 255) as u8
}

/// PIL `convert("RGB")`: grey is replicated; alpha dropped (or flattened on white); 16-bit RGB(A)
/// and grey+alpha keep the high byte (PIL reads them as 8-bit modes); 16-bit grey is clipped to
/// 255 (PIL reads it as `I;16` and clips on conversion).
pub fn to_rgb(img: DynamicImage, alpha: Alpha) -> Rgb8 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = Vec::with_capacity(w * h * 3);
    let mut push = |r: u8, g: u8, b: u8, a: u8| {
        if alpha == Alpha::FlattenOnWhite && a < 255 {
            out.extend_from_slice(&[flatten(r, a), flatten(g, a), flatten(b, a)]);
        } else {
            out.extend_from_slice(&[r, g, b]);
        }
    };
    match img {
        DynamicImage::ImageLuma8(i) => i.pixels().for_each(|p| push(p[0], p[0], p[0], 255)),
        DynamicImage::ImageLumaA8(i) => i.pixels().for_each(|p| push(p[0], p[0], p[0], p[1])),
        DynamicImage::ImageRgb8(i) => i.pixels().for_each(|p| push(p[0], p[1], p[2], 255)),
        DynamicImage::ImageRgba8(i) => i.pixels().for_each(|p| push(p[0], p[1], p[2], p[3])),
        DynamicImage::ImageLuma16(i) => i.pixels().for_each(|p| {
            let v = p[0].min(255) as u8;
            push(v, v, v, 255)
        }),
        DynamicImage::ImageLumaA16(i) => i.pixels().for_each(|p| {
            let v = (p[0] >> 8) as u8;
            push(v, v, v, (p[1] >> 8) as u8)
        }),
        DynamicImage::ImageRgb16(i) => i
            .pixels()
            .for_each(|p| push((p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8, 255)),
        DynamicImage::ImageRgba16(i) => i.pixels().for_each(|p| {
            push(
                (p[0] >> 8) as u8,
                (p[1] >> 8) as u8,
                (p[2] >> 8) as u8,
                (p[3] >> 8) as u8,
            )
        }),
        other => {
            let rgba = other.to_rgba8();
            rgba.pixels().for_each(|p| push(p[0], p[1], p[2], p[3]))
        }
    }
    Rgb8::new(w, h, out)
}
