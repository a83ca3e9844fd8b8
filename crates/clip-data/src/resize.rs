//! Pillow's antialiased bicubic resampling (`Image.resize(size, Image.BICUBIC)`), reproduced with the
//! same support scaling, coefficient rounding (22-bit fixed point), pass order (horizontal, then
//! vertical) and 8-bit clipping between passes, so results match Pillow pixel for pixel.

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

/// Per output pixel: first input index and fixed-point weights (Pillow's `precompute_coeffs` +
/// `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize) -> (usize, Vec<(usize, Vec<i32>)>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut out = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
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
        out.push((xmin, fixed));
    }
    (ksize, out)
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn resample_horizontal(src: &Rgb8, out_w: usize) -> Rgb8 {
    let (_, coeffs) = coefficients(src.width, out_w);
    let mut data = vec![0u8; out_w * src.height * 3];
    for y in 0..src.height {
        let row = &src.data[y * src.width * 3..(y + 1) * src.width * 3];
        for (x, (xmin, k)) in coeffs.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &w) in k.iter().enumerate() {
                    acc += row[(xmin + i) * 3 + c] as i64 * w as i64;
                }
                data[(y * out_w + x) * 3 + c] = clip8(acc);
            }
        }
    }
    Rgb8::new(out_w, src.height, data)
}

fn resample_vertical(src: &Rgb8, out_h: usize) -> Rgb8 {
    let (_, coeffs) = coefficients(src.height, out_h);
    let w3 = src.width * 3;
    let mut data = vec![0u8; w3 * out_h];
    let mut acc = vec![0i64; w3];
    for (y, (ymin, k)) in coeffs.iter().enumerate() {
        acc.fill(1 << (PRECISION_BITS - 1));
        for (i, &w) in k.iter().enumerate() {
            let row = &src.data[(ymin + i) * w3..(ymin + i + 1) * w3];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i64 * w as i64;
            }
        }
        for (d, &a) in data[y * w3..(y + 1) * w3].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    Rgb8::new(src.width, out_h, data)
}

/// `Image.resize((w, h), BICUBIC)`.
pub fn resize_bicubic(src: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    let horizontal = out_w != src.width;
    let vertical = out_h != src.height;
    match (horizontal, vertical) {
        (false, false) => src.clone(),
        (true, false) => resample_horizontal(src, out_w),
        (false, true) => resample_vertical(src, out_h),
        (true, true) => resample_vertical(&resample_horizontal(src, out_w), out_h),
    }
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
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(300, 96), (5, 96), (1, 224), (224, 224)] {
            let (_, c) = coefficients(i, o);
            for (_, k) in c {
                let s: i64 = k.iter().map(|&w| w as i64).sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }
}
