//! Pillow's resamplers, reproduced operation for operation so results match Pillow pixel for pixel.
//!
//! Hand-written rather than taken from a resizing crate because CLIP's reference transforms resize
//! with Pillow, and any other arithmetic moves pixels by a level or more:
//! - antialiased bicubic (`Image.resize(size, BICUBIC)`, `libImaging/Resample.c`): the same support
//!   scaling and coefficients, then for 8-bit bands 22-bit fixed-point weights with clipping to 8
//!   bits between the two passes; for 16-bit grey (`I;16`) double-precision weights, `ROUND_UP` and
//!   clipping to 16 bits between passes; and Pillow 13's pass order (see [`vertical_first`]);
//! - nearest neighbour (what `Image.resize` uses for `P` and `1` images whatever filter is asked,
//!   `libImaging/Geometry.c` `ImagingScaleAffine`): source positions accumulated in doubles and
//!   truncated, exactly as Pillow steps through them.
//!
//! Images here are interleaved samples (`channels` per pixel); each channel is resampled on its
//! own, as Pillow does for every band.

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Rgb8 {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Rgb8 {
        assert_eq!(data.len(), width * height * 3, "RGB buffer size");
        Rgb8 {
            width,
            height,
            data,
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel, a = -0.5.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input index and normalised weights (Pillow's `precompute_coeffs`).
fn taps(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    let mut out = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C truncation toward zero
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..n)
            .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            for w in &mut k {
                *w /= ww;
            }
        }
        out.push((xmin, k));
    }
    out
}

/// The 8-bit weights: `taps` in 22-bit fixed point (Pillow's `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    taps(in_size, out_size)
        .into_iter()
        .map(|(xmin, k)| {
            let fixed = k
                .iter()
                .map(|&w| {
                    let s = w * (1u32 << PRECISION_BITS) as f64;
                    if w < 0.0 {
                        (s - 0.5) as i32
                    } else {
                        (s + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The horizontal pass over pixels of `CH` samples (all channels of a pixel at once).
fn horizontal_px<const CH: usize>(src: &[u8], w: usize, h: usize, out_w: usize) -> Vec<u8> {
    let coeffs = coefficients(w, out_w);
    let mut data = vec![0u8; out_w * h * CH];
    for (row, out) in src
        .chunks_exact(w * CH)
        .zip(data.chunks_exact_mut(out_w * CH))
    {
        for ((xmin, k), o) in coeffs.iter().zip(out.chunks_exact_mut(CH)) {
            let mut acc = [1i64 << (PRECISION_BITS - 1); CH];
            for (px, &wt) in row[xmin * CH..].chunks_exact(CH).zip(k) {
                for c in 0..CH {
                    acc[c] += px[c] as i64 * wt as i64;
                }
            }
            for c in 0..CH {
                o[c] = clip8(acc[c]);
            }
        }
    }
    data
}

fn horizontal_u8(src: &[u8], w: usize, h: usize, ch: usize, out_w: usize) -> Vec<u8> {
    match ch {
        1 => horizontal_px::<1>(src, w, h, out_w),
        2 => horizontal_px::<2>(src, w, h, out_w),
        3 => horizontal_px::<3>(src, w, h, out_w),
        _ => horizontal_px::<4>(src, w, h, out_w),
    }
}

fn vertical_u8(src: &[u8], w: usize, h: usize, ch: usize, out_h: usize) -> Vec<u8> {
    let coeffs = coefficients(h, out_h);
    let stride = w * ch;
    let mut data = vec![0u8; stride * out_h];
    let mut acc = vec![0i64; stride];
    for (y, (ymin, k)) in coeffs.iter().enumerate() {
        acc.fill(1 << (PRECISION_BITS - 1));
        for (i, &wt) in k.iter().enumerate() {
            let row = &src[(ymin + i) * stride..(ymin + i + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i64 * wt as i64;
            }
        }
        for (d, &a) in data[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    data
}

/// Whether Pillow runs the vertical pass before the horizontal one. Pillow 13.0 (the goldens'
/// version) does when the height shrinks by more than twice as many pixels as the width does:
/// `oh < h` and `h - oh > 2·(w - ow)`. The rule was found by comparing `resize` against each pass
/// order run separately: it held in all of 3,200 random 8-bit and `I;16` cases up to 700 pixels,
/// boundary included. With an aspect-preserving `Resize(n)` it matters only for downscaled
/// images more than twice as tall as wide; the order changes results by a level or so.
pub fn vertical_first(w: usize, h: usize, out_w: usize, out_h: usize) -> bool {
    out_h < h && 2 * out_w as i64 - out_h as i64 > 2 * w as i64 - h as i64
}

/// Pillow's bicubic `resize` of an 8-bit image with `ch` interleaved channels (`L`, `La`, `RGB`,
/// `RGBa`, `CMYK`, …): a horizontal and a vertical pass, each only where the size changes.
pub fn bicubic_u8(
    src: &[u8],
    w: usize,
    h: usize,
    ch: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    assert!((1..=4).contains(&ch), "1 to 4 channels");
    assert_eq!(src.len(), w * h * ch, "buffer size");
    match (out_w != w, out_h != h) {
        (false, false) => src.to_vec(),
        (true, false) => horizontal_u8(src, w, h, ch, out_w),
        (false, true) => vertical_u8(src, w, h, ch, out_h),
        (true, true) if vertical_first(w, h, out_w, out_h) => {
            horizontal_u8(&vertical_u8(src, w, h, ch, out_h), w, out_h, ch, out_w)
        }
        (true, true) => vertical_u8(&horizontal_u8(src, w, h, ch, out_w), out_w, h, ch, out_h),
    }
}

/// Pillow's `ROUND_UP` then `CLIP16`.
fn round_clip16(ss: f64) -> u16 {
    let v = if ss >= 0.0 { ss + 0.5 } else { ss - 0.5 } as i64; // C cast: toward zero
    v.clamp(0, 65535) as u16
}

/// One pass of `_ImagingResample{Horizontal,Vertical}_16bpc` over a `w×h` image.
fn pass_u16(src: &[u16], (w, h): (usize, usize), out_len: usize, vertical: bool) -> Vec<u16> {
    let (len, lines) = if vertical { (h, w) } else { (w, h) };
    let k = taps(len, out_len);
    // sample `i` of line `l` in an image whose lines hold `n` samples
    let at = |l: usize, i: usize, n: usize| if vertical { i * w + l } else { l * n + i };
    let mut out = vec![0u16; lines * out_len];
    for l in 0..lines {
        for (o, (xmin, wts)) in k.iter().enumerate() {
            let mut ss = 0.0f64;
            for (i, &wt) in wts.iter().enumerate() {
                ss += src[at(l, xmin + i, len)] as f64 * wt;
            }
            out[at(l, o, out_len)] = round_clip16(ss);
        }
    }
    out
}

/// Pillow's bicubic `resize` of a 16-bit grey (`I;16`) image.
pub fn bicubic_u16(src: &[u16], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u16> {
    assert_eq!(src.len(), w * h, "buffer size");
    match (out_w != w, out_h != h) {
        (false, false) => src.to_vec(),
        (true, false) => pass_u16(src, (w, h), out_w, false),
        (false, true) => pass_u16(src, (w, h), out_h, true),
        (true, true) if vertical_first(w, h, out_w, out_h) => pass_u16(
            &pass_u16(src, (w, h), out_h, true),
            (w, out_h),
            out_w,
            false,
        ),
        (true, true) => pass_u16(
            &pass_u16(src, (w, h), out_w, false),
            (out_w, h),
            out_h,
            true,
        ),
    }
}

/// Source indices of nearest-neighbour scaling `in_size → out_size` along one axis, as
/// `ImagingScaleAffine` steps through them (a double accumulated pixel by pixel, then truncated).
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    // `_resize` passes the box as floats: (float)in_size, exact below 2^24
    let a = (in_size as f32) as f64 / out_size as f64;
    let mut pos = a * 0.5;
    (0..out_size)
        .map(|_| {
            let i = if pos < 0.0 { 0 } else { pos as usize };
            pos += a;
            // Pillow leaves a pixel outside the source at 0; accumulated error never gets there
            i.min(in_size - 1)
        })
        .collect()
}

/// Pillow's nearest-neighbour `resize` (what `P` and `1` images get) of `ch` interleaved channels.
pub fn nearest<T: Copy>(
    src: &[T],
    w: usize,
    h: usize,
    ch: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<T> {
    assert_eq!(src.len(), w * h * ch, "buffer size");
    if (out_w, out_h) == (w, h) {
        return src.to_vec();
    }
    let xs = nearest_indices(w, out_w);
    let ys = nearest_indices(h, out_h);
    let mut out = Vec::with_capacity(out_w * out_h * ch);
    for &y in &ys {
        let row = &src[y * w * ch..(y + 1) * w * ch];
        for &x in &xs {
            out.extend_from_slice(&row[x * ch..(x + 1) * ch]);
        }
    }
    out
}

/// `Image.resize((w, h), BICUBIC)` of an RGB image.
pub fn resize_bicubic(src: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    let data = bicubic_u8(&src.data, src.width, src.height, 3, out_w, out_h);
    Rgb8::new(out_w, out_h, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let img = Rgb8::new(7, 5, [10u8, 200, 255].repeat(35));
        for (w, h) in [(3, 2), (20, 11), (7, 9), (1, 1)] {
            let out = resize_bicubic(&img, w, h);
            assert_eq!((out.width, out.height), (w, h));
            assert!(out.data.chunks(3).all(|p| p == [10, 200, 255]), "{w}x{h}");
        }
        let grey = vec![700u16; 35];
        for (w, h) in [(3, 2), (20, 11), (7, 9), (1, 1)] {
            assert!(bicubic_u16(&grey, 7, 5, w, h).iter().all(|&v| v == 700));
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(300, 96), (5, 96), (1, 224), (224, 224)] {
            for (_, k) in coefficients(i, o) {
                let s: i64 = k.iter().map(|&w| w as i64).sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }

    #[test]
    fn channels_are_resampled_independently() {
        let (w, h) = (9, 6);
        let rgba: Vec<u8> = (0..w * h * 4).map(|i| (i * 37 % 256) as u8).collect();
        let out = bicubic_u8(&rgba, w, h, 4, 4, 13);
        for c in 0..4 {
            let plane: Vec<u8> = rgba.iter().skip(c).step_by(4).copied().collect();
            let one = bicubic_u8(&plane, w, h, 1, 4, 13);
            let got: Vec<u8> = out.iter().skip(c).step_by(4).copied().collect();
            assert_eq!(got, one, "channel {c}");
        }
    }

    #[test]
    fn pass_order_follows_pillow_13() {
        // measured on Pillow 13.0.0 (30×50 and 50×30 sources): which order its resize matches
        assert!(!vertical_first(30, 50, 8, 8));
        assert!(vertical_first(30, 50, 11, 8));
        assert!(!vertical_first(50, 30, 35, 1));
        assert!(vertical_first(50, 30, 36, 1));
        assert!(!vertical_first(50, 30, 60, 40)); // never when the height grows
        // an aspect-preserving downscale only for images more than twice as tall as wide
        assert!(!vertical_first(640, 480, 298, 224));
        assert!(vertical_first(70, 160, 64, 146));
    }

    #[test]
    fn nearest_picks_pillow_positions() {
        // Pillow: Image.frombytes("L", (5, 1), bytes(range(5))).resize((2, 1), NEAREST) -> [1, 3]
        assert_eq!(nearest(&[0u8, 1, 2, 3, 4], 5, 1, 1, 2, 1), vec![1, 3]);
        // upscaling 2 -> 5: positions 0.2, 0.6, 1.0, 1.4, 1.8
        assert_eq!(nearest(&[7u8, 9], 2, 1, 1, 5, 1), vec![7, 7, 9, 9, 9]);
    }
}
