//! lucid's image parameterisation and transformation robustness, written for burn: the Fourier
//! parameterisation (an inverse real 2-D DFT as products with fixed cosine and sine matrices,
//! because burn has no FFT), colour decorrelation and the sigmoid, and the pad / jitter / scale /
//! rotate / jitter / crop chain as one differentiable bilinear resampling.

use burn::prelude::*;
use clip_data::resize::Rgb8;
use clip_data::rng::Rng;
use clip_model::source::to_vec;

/// lucid's `color_correlation_svd_sqrt`.
const COLOR_SVD_SQRT: [[f32; 3]; 3] =
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

/// The inverse real 2-D DFT (NumPy's `irfft2` with `s = (h, w)`) as matrices: for a half-spectrum
/// `[h, k]` (k = w/2 + 1), `out = (Cy·Re − Sy·Im)·Cx − (Sy·Re + Cy·Im)·Sx`.
pub struct Irfft2 {
    pub h: usize,
    pub w: usize,
    pub k: usize,
    cy: Vec<f32>,
    sy: Vec<f32>,
    cx: Vec<f32>,
    sx: Vec<f32>,
}

impl Irfft2 {
    pub fn new(h: usize, w: usize) -> Irfft2 {
        let k = w / 2 + 1;
        let tau = std::f64::consts::TAU;
        let mut cy = vec![0f32; h * h];
        let mut sy = vec![0f32; h * h];
        for y in 0..h {
            for ky in 0..h {
                let a = tau * (ky * y) as f64 / h as f64;
                cy[y * h + ky] = a.cos() as f32;
                sy[y * h + ky] = a.sin() as f32;
            }
        }
        let mut cx = vec![0f32; k * w];
        let mut sx = vec![0f32; k * w];
        for kx in 0..k {
            // the half-spectrum stands for its mirror image too, except DC and (even w) Nyquist
            let c = if kx == 0 || (w.is_multiple_of(2) && kx == w / 2) {
                1.0
            } else {
                2.0
            };
            for x in 0..w {
                let a = tau * (kx * x) as f64 / w as f64;
                cx[kx * w + x] = (c * a.cos() / (h * w) as f64) as f32;
                sx[kx * w + x] = (c * a.sin() / (h * w) as f64) as f32;
            }
        }
        Irfft2 {
            h,
            w,
            k,
            cy,
            sy,
            cx,
            sx,
        }
    }

    /// `[n, h, k]` real and imaginary parts → `[n, h, w]`.
    pub fn apply(&self, re: Tensor<3>, im: Tensor<3>) -> Tensor<3> {
        let [n, h, k] = re.dims();
        let dev = re.device();
        let m = |v: &[f32], r: usize, c: usize| {
            Tensor::<2>::from_data(TensorData::new(v.to_vec(), [r, c]), &dev)
        };
        let (cy, sy) = (m(&self.cy, h, h), m(&self.sy, h, h));
        let (cx, sx) = (m(&self.cx, k, self.w), m(&self.sx, k, self.w));
        // along y: [h, h] · [h, n·k]
        let cols = |t: Tensor<3>| t.permute([1, 0, 2]).reshape([h, n * k]);
        let (r, i) = (cols(re), cols(im));
        let g_re = cy.clone().matmul(r.clone()) - sy.clone().matmul(i.clone());
        let g_im = sy.matmul(r) + cy.matmul(i);
        // along x: [n·h, k] · [k, w]
        let rows = |t: Tensor<2>| t.reshape([h, n, k]).permute([1, 0, 2]).reshape([n * h, k]);
        (rows(g_re).matmul(cx) - rows(g_im).matmul(sx)).reshape([n, h, self.w])
    }
}

/// lucid's `rfft2d_freqs`: √(fx² + fy²) for the half-spectrum `[h, w/2 + 1]`.
pub fn freqs(h: usize, w: usize) -> Vec<f32> {
    let k = w / 2 + 1;
    let fy = |i: usize| {
        let f = if i < h.div_ceil(2) {
            i as f64
        } else {
            i as f64 - h as f64
        };
        f / h as f64
    };
    (0..h)
        .flat_map(|y| {
            (0..k).map(move |x| ((x as f64 / w as f64).powi(2) + fy(y).powi(2)).sqrt() as f32)
        })
        .collect()
}

/// The bilinear taps of an affine resampling: for each output pixel of a `size × size` image, four
/// (index, weight) pairs into a `src × src` image (coordinates clamped to the border).
pub struct Taps {
    pub idx: [Vec<i64>; 4],
    pub w: [Vec<f32>; 4],
}

/// Taps that read output pixel (x, y) from source point `map(x, y)` (pixel centres at +0.5).
pub fn taps(size: usize, src: usize, map: &dyn Fn(f32, f32) -> (f32, f32)) -> Taps {
    let mut idx: [Vec<i64>; 4] = Default::default();
    let mut w: [Vec<f32>; 4] = Default::default();
    let last = (src - 1) as f32;
    for y in 0..size {
        for x in 0..size {
            let (sx, sy) = map(x as f32 + 0.5, y as f32 + 0.5);
            let (fx, fy) = ((sx - 0.5).clamp(0.0, last), (sy - 0.5).clamp(0.0, last));
            let (x0, y0) = (fx.floor(), fy.floor());
            let (x1, y1) = ((x0 + 1.0).min(last), (y0 + 1.0).min(last));
            let (ax, ay) = (fx - x0, fy - y0);
            let at = |xx: f32, yy: f32| (yy as usize * src + xx as usize) as i64;
            for (k, (i, wt)) in [
                (at(x0, y0), (1.0 - ax) * (1.0 - ay)),
                (at(x1, y0), ax * (1.0 - ay)),
                (at(x0, y1), (1.0 - ax) * ay),
                (at(x1, y1), ax * ay),
            ]
            .into_iter()
            .enumerate()
            {
                idx[k].push(i);
                w[k].push(wt);
            }
        }
    }
    Taps { idx, w }
}

/// Resample `[c, src·src]` with `t`: `[c, size·size]` (differentiable in the image).
pub fn sample(img: Tensor<2>, t: &Taps) -> Tensor<2> {
    let dev = img.device();
    let mut out: Option<Tensor<2>> = None;
    for k in 0..4 {
        let n = t.idx[k].len();
        let i = Tensor::<1, Int>::from_data(TensorData::new(t.idx[k].clone(), [n]), &dev);
        let wt = Tensor::<2>::from_data(TensorData::new(t.w[k].clone(), [1, n]), &dev);
        let v = img.clone().select(1, i) * wt;
        out = Some(match out {
            Some(o) => o + v,
            None => v,
        });
    }
    out.expect("four taps")
}

/// lucid's standard transforms as one map from output to padded-source coordinates.
pub(crate) fn random_map(
    size: usize,
    pad: usize,
    rng: &mut Rng,
) -> impl Fn(f32, f32) -> (f32, f32) + use<> {
    // lucid at 224 px: pad 12, jitter 8, scales 0.90, 0.92 … 1.10, angles −10 … 10°, jitter 4
    let j1 = (size as f32 * 8.0 / 224.0).round().max(1.0) as usize;
    let j2 = (size as f32 * 4.0 / 224.0).round().max(1.0) as usize;
    let mut whole = |a: usize| rng.below(2 * a + 1) as f32 - a as f32;
    let (dx1, dy1) = (whole(j1), whole(j1));
    let scale = 0.90 + 0.02 * whole(5) + 0.10;
    let angle = whole(10).to_radians();
    let (dx2, dy2) = (whole(j2), whole(j2));
    let c = (size + 2 * pad) as f32 / 2.0;
    let (sin, cos) = angle.sin_cos();
    move |x: f32, y: f32| {
        // output → before the last jitter → before rotation and scale → before the first jitter
        let (x, y) = (x + pad as f32 - dx2, y + pad as f32 - dy2);
        let (u, v) = (x - c, y - c);
        let (u, v) = ((cos * u + sin * v) / scale, (-sin * u + cos * v) / scale);
        (u + c - dx1, v + c - dy1)
    }
}

/// `[c, h·w]` images padded by `pad` grey pixels on every side: `[c, (h + 2p)²]`.
pub(crate) fn pad_grey(img: Tensor<3>, pad: usize) -> Tensor<2> {
    let [c, h, w] = img.dims();
    let dev = img.device();
    let grey = |d: [usize; 3]| Tensor::<3>::full(d, 0.5, &dev);
    let x = Tensor::cat(vec![grey([c, h, pad]), img, grey([c, h, pad])], 2);
    let x = Tensor::cat(
        vec![grey([c, pad, w + 2 * pad]), x, grey([c, pad, w + 2 * pad])],
        1,
    );
    x.reshape([c, (h + 2 * pad) * (w + 2 * pad)])
}

/// Largest relative error of the sampling op's gradient against central finite differences, on
/// a random `size × size` image under a random transform.
pub fn check_sampling_gradient(size: usize, seed: u64, device: &Device) -> f64 {
    let mut rng = Rng::new(seed);
    let pad = 2;
    let src = size + 2 * pad;
    let map = random_map(size, pad, &mut rng);
    let t = taps(size, src, &map);
    let img: Vec<f32> = (0..src * src).map(|_| rng.unit() as f32).collect();
    let probe: Vec<f32> = (0..size * size).map(|_| rng.unit() as f32 - 0.5).collect();
    let f = |v: &[f32], grad: bool| -> (f64, Option<Vec<f32>>) {
        let mut x = Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, src * src]), device);
        if grad {
            x = x.require_grad();
        }
        let p = Tensor::<2>::from_data(TensorData::new(probe.clone(), [1, size * size]), device);
        let y = (sample(x.clone(), &t) * p).sum();
        let value = to_vec(&y.clone().inner())[0] as f64;
        if !grad {
            return (value, None);
        }
        let g = y.backward();
        (value, x.grad(&g).map(|g| to_vec(&g)))
    };
    let (_, g) = f(&img, true);
    let g = g.unwrap_or_default();
    let eps = 1e-2f32;
    let mut worst = 0f64;
    for i in (0..src * src).step_by((src * src / 40).max(1)) {
        let (mut a, mut b) = (img.clone(), img.clone());
        a[i] += eps;
        b[i] -= eps;
        let fd = (f(&a, false).0 - f(&b, false).0) / (2.0 * eps as f64);
        let err = (fd - g[i] as f64).abs() / (fd.abs().max(g[i].abs() as f64).max(1e-3));
        worst = worst.max(err);
    }
    worst
}

/// The image `[batch, 3, s, s]` in [0, 1] from the spectrum parameters.
pub(crate) fn image(
    re: Tensor<3>,
    im: Tensor<3>,
    fft: &Irfft2,
    scale: &Tensor<3>,
    batch: usize,
) -> Tensor<4> {
    let s = fft.h;
    let spatial = fft.apply(re * scale.clone(), im * scale.clone()) / 4.0; // [b·3, s, s]
    // decorrelated colour → RGB
    // lucid: the matrix over the largest of its columns' norms
    let max_norm = (0..3)
        .map(|j| {
            (0..3)
                .map(|i| COLOR_SVD_SQRT[i][j].powi(2))
                .sum::<f32>()
                .sqrt()
        })
        .fold(0f32, f32::max);
    let dev = spatial.device();
    let m: Vec<f32> = COLOR_SVD_SQRT
        .iter()
        .flatten()
        .map(|v| v / max_norm)
        .collect();
    let m = Tensor::<2>::from_data(TensorData::new(m, [3, 3]), &dev); // rgb = C · t
    let flat = spatial.reshape([batch, 3, s * s]);
    let rgb: Vec<Tensor<3>> = (0..batch)
        .map(|b| {
            let t = flat.clone().narrow(0, b, 1).reshape([3, s * s]);
            m.clone().matmul(t).reshape([1, 3, s * s])
        })
        .collect();
    burn::tensor::activation::sigmoid(Tensor::cat(rgb, 0)).reshape([batch, 3, s, s])
}

pub(crate) fn to_rgb8(x: &[f32], s: usize) -> Rgb8 {
    let mut d = vec![0u8; s * s * 3];
    for c in 0..3 {
        for p in 0..s * s {
            d[p * 3 + c] = (x[c * s * s + p].clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    Rgb8::new(s, s, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inverse_dft_matches_numpy() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/inside/irfft2.json");
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let device = clip_model::default_device();
        for c in doc["cases"].as_array().unwrap() {
            let (h, w) = (
                c["h"].as_u64().unwrap() as usize,
                c["w"].as_u64().unwrap() as usize,
            );
            let v = |k: &str| -> Vec<f32> {
                c[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            };
            let fft = Irfft2::new(h, w);
            let t =
                |d: Vec<f32>| Tensor::<3>::from_data(TensorData::new(d, [3, h, fft.k]), &device);
            let got = to_vec(&fft.apply(t(v("re")), t(v("im"))));
            let want = v("out");
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{h}×{w}: {a} vs {b}");
            }
            for (a, b) in freqs(h, w).iter().zip(v("freqs")) {
                assert!((a - b).abs() < 1e-6, "freqs {h}×{w}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn sampling_gradient_matches_finite_differences() {
        let device = clip_model::default_device().autodiff();
        for seed in 0..3 {
            let e = check_sampling_gradient(12, seed, &device);
            assert!(e < 1e-2, "seed {seed}: {e}");
        }
        // the identity map reads every pixel back
        let t = taps(4, 4, &|x, y| (x, y));
        assert!(t.w[0].iter().all(|&w| (w - 1.0).abs() < 1e-6));
        assert_eq!(t.idx[0], (0..16).collect::<Vec<i64>>());
    }
}
