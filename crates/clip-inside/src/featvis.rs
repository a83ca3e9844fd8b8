//! `clip inside featvis`: feature visualisation by gradient ascent on the input, with lucid's
//! recipe as OpenAI's CLIP feature-visualisation work used it.
//!
//! - **Parameterisation** (lucid's `fft_image` and `to_valid_rgb`): a half-spectrum per colour
//!   channel, scaled by 1 / frequency (and √(h·w)), turned into an image by the inverse real 2-D
//!   DFT — written here as products with fixed cosine and sine matrices, because burn has no FFT
//!   (checked against NumPy's `irfft2`) — divided by 4, mapped from a decorrelated colour space to
//!   RGB by lucid's colour-correlation matrix, and squashed by a sigmoid.
//! - **Transformation robustness** (lucid's standard transforms): pad with grey, jitter, random
//!   scale 0.90–1.10, rotation ±10°, jitter, crop back to the model's size. The whole chain is one
//!   affine map sampled bilinearly (four gathered taps per pixel, differentiable); its gradient is
//!   checked by finite differences before every run and in the tests.
//! - **Objectives**: a unit (an MLP hidden unit at the class token or the token mean) or a text
//!   embedding ("class visualisation"), optionally with lucid's diversity term (Gram-matrix cosine
//!   between the batch's images) and an L2 pull towards grey; Adam, lr 0.05, 512 steps, batch 4.
//! - **Judge**: a second, independently trained model classifies every image zero-shot among the
//!   import's concepts; a unit's concept is the modal concept of its top dataset images.

use std::path::PathBuf;

use burn::prelude::*;
use clip_data::resize::Rgb8;
use clip_data::rng::Rng;
use clip_embed::Embedder;
use clip_eval::EvalError;
use clip_model::clip::{Clip, VisualTower};
use clip_model::source::to_vec;
use serde::Serialize;

use crate::Rate;
use crate::grid::{Tile, frame};

/// lucid's `color_correlation_svd_sqrt`.
const COLOR_SVD_SQRT: [[f32; 3]; 3] =
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

/// What to visualise.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// block, unit, at the class token (`true`) or the token mean
    Unit {
        block: usize,
        unit: usize,
        cls: bool,
    },
    Text(String),
}

impl Target {
    /// `BLOCK:UNIT` → a unit target (read at the class token when `cls`).
    pub fn parse_unit(spec: &str, cls: bool) -> Result<Target, EvalError> {
        let bad = || {
            EvalError::Invalid(format!(
                "--units: '{spec}' is not BLOCK:UNIT (e.g. 3:120, block 3's MLP unit 120)"
            ))
        };
        let (b, u) = spec.trim().split_once(':').ok_or_else(bad)?;
        Ok(Target::Unit {
            block: b.trim().parse().map_err(|_| bad())?,
            unit: u.trim().parse().map_err(|_| bad())?,
            cls,
        })
    }

    pub fn name(&self) -> String {
        match self {
            Target::Unit { block, unit, cls } => format!(
                "block {block} unit {unit} ({})",
                if *cls { "class token" } else { "token mean" }
            ),
            Target::Text(t) => format!("text '{t}'"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FeatvisOptions {
    pub out: PathBuf,
    /// the emoji import: the judge's classes and the units' dataset examples
    pub emoji: PathBuf,
    pub targets: Vec<Target>,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub diversity: f32,
    pub l2: f32,
    pub seed: u64,
    pub templates: Vec<String>,
}

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
fn random_map(size: usize, pad: usize, rng: &mut Rng) -> impl Fn(f32, f32) -> (f32, f32) + use<> {
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
fn pad_grey(img: Tensor<3>, pad: usize) -> Tensor<2> {
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

/// One visualisation's record.
#[derive(Debug, Clone, Serialize)]
pub struct Visual {
    pub target: String,
    /// the concept the judge should see: the unit's modal concept, or the target text
    pub concept: Option<String>,
    /// the objective at the first and last step
    pub start: f32,
    pub end: f32,
    /// the judge's top-5 per image, and whether the concept is among them
    pub judge_top5: Vec<Vec<String>>,
    pub hits: Vec<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Featvis {
    pub gradient_check: f64,
    pub visuals: Vec<Visual>,
    pub judge: Rate,
    pub verdict: String,
}

/// The image `[batch, 3, s, s]` in [0, 1] from the spectrum parameters.
fn image(re: Tensor<3>, im: Tensor<3>, fft: &Irfft2, scale: &Tensor<3>, batch: usize) -> Tensor<4> {
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

fn to_rgb8(x: &[f32], s: usize) -> Rgb8 {
    let mut d = vec![0u8; s * s * 3];
    for c in 0..3 {
        for p in 0..s * s {
            d[p * 3 + c] = (x[c * s * s + p].clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    Rgb8::new(s, s, d)
}

/// Run every target; `model` is the model on an autodiff device, `emb` the same model for
/// inference, `judge` the independent model. Writes `featvis.json`, `report.md` and
/// `grid_featvis.png` into `o.out`.
pub fn run(
    model: &Clip,
    emb: &Embedder,
    judge: &Embedder,
    o: &FeatvisOptions,
    say: &mut dyn FnMut(String),
) -> Result<Featvis, EvalError> {
    let VisualTower::Vit(vit) = &model.module().visual else {
        return Err(EvalError::Invalid(
            "clip inside featvis visualises OpenAI/open_clip ViTs".into(),
        ));
    };
    let blocks = vit.transformer.resblocks.len();
    let hidden = vit.transformer.resblocks[0].mlp.c_fc.weight.dims()[1];
    for t in &o.targets {
        match t {
            Target::Unit { block, unit, .. } => {
                if *block >= blocks {
                    return Err(EvalError::Invalid(format!(
                        "block {block} is out of range: the image tower has {blocks} blocks (0–{})",
                        blocks - 1
                    )));
                }
                if *unit >= hidden {
                    return Err(EvalError::Invalid(format!(
                        "unit {unit} is out of range: block {block}'s MLP has {hidden} units (0–{})",
                        hidden - 1
                    )));
                }
            }
            Target::Text(text) => {
                if emb.tokenize(std::slice::from_ref(text), false).is_err() {
                    return Err(EvalError::Invalid(format!(
                        "target text '{text}' is longer than the model's context of {} tokens",
                        emb.clip.config.text_cfg.context_length
                    )));
                }
            }
        }
    }
    if o.steps == 0 || o.batch == 0 {
        return Err(EvalError::Invalid(
            "--steps and --batch must be at least 1".into(),
        ));
    }
    let imp = crate::emoji::Import::read(&o.emoji)?;
    if emb.fingerprint == judge.fingerprint {
        say(
            "warning: the judge is the visualised model itself; its verdict is self-confirming"
                .into(),
        );
    }
    crate::prepare_out(&o.out, "featvis.json", "clip inside featvis report")?;
    let device = model.device();
    let grad_err = check_sampling_gradient(16, o.seed, &device);
    say(format!(
        "bilinear sampling: gradient vs finite differences, worst relative error {grad_err:.2e}"
    ));
    if grad_err > 1e-2 {
        return Err(EvalError::Invalid(format!(
            "the sampling op's gradient disagrees with finite differences (relative error {grad_err:.2e})"
        )));
    }
    let s = emb.preprocess.size;
    let pad = (s / 16).max(1);
    let fft = Irfft2::new(s, s);
    let fr = freqs(s, s);
    let scale_v: Vec<f32> = fr
        .iter()
        .map(|f| (1.0 / f.max(1.0 / s as f32)) * (s as f32))
        .collect();
    let scale = Tensor::<3>::from_data(TensorData::new(scale_v, [1, s, fft.k]), &device);
    let (mean, std) = (emb.preprocess.mean, emb.preprocess.std);
    let concepts = imp.concepts();
    let judge_cls = judge.classifier(&concepts, &o.templates)?;
    let unit_concepts = unit_concepts(emb, &imp, &o.targets)?;
    let mut visuals = Vec::new();
    let mut tiles = Vec::new();
    let mut rng = Rng::new(o.seed);
    for (ti, target) in o.targets.iter().enumerate() {
        let text_dir: Option<Tensor<2>> = match target {
            Target::Text(t) => {
                let c = emb.classifier(std::slice::from_ref(t), &o.templates)?;
                Some(Tensor::<2>::from_data(
                    TensorData::new(c.weights.clone(), [1, c.dim]),
                    &device,
                ))
            }
            _ => None,
        };
        let n = o.batch * 3 * s * fft.k;
        let mut params: [Vec<f32>; 2] = [
            (0..n).map(|_| crate::gaussian(&mut rng) * 0.01).collect(),
            (0..n).map(|_| crate::gaussian(&mut rng) * 0.01).collect(),
        ];
        let mut adam = [vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]];
        let (mut first, mut last) = (0f32, 0f32);
        let mut final_img = Vec::new();
        for step in 0..o.steps {
            let re = Tensor::<3>::from_data(
                TensorData::new(params[0].clone(), [o.batch * 3, s, fft.k]),
                &device,
            )
            .require_grad();
            let im = Tensor::<3>::from_data(
                TensorData::new(params[1].clone(), [o.batch * 3, s, fft.k]),
                &device,
            )
            .require_grad();
            let x = image(re.clone(), im.clone(), &fft, &scale, o.batch); // [b, 3, s, s]
            if step + 1 == o.steps {
                final_img = to_vec(&x.clone().inner());
            }
            // transformation robustness, image by image
            let src = s + 2 * pad;
            let views: Vec<Tensor<4>> = (0..o.batch)
                .map(|b| {
                    let map = random_map(s, pad, &mut rng);
                    let t = taps(s, src, &map);
                    let one = x.clone().narrow(0, b, 1).reshape([3, s, s]);
                    sample(pad_grey(one, pad), &t).reshape([1, 3, s, s])
                })
                .collect();
            let v = Tensor::cat(views, 0);
            let mean_t =
                Tensor::<4>::from_data(TensorData::new(mean.to_vec(), [1, 3, 1, 1]), &device);
            let std_t =
                Tensor::<4>::from_data(TensorData::new(std.to_vec(), [1, 3, 1, 1]), &device);
            let input = (v - mean_t) / std_t;
            let (objective, acts) = match target {
                Target::Unit { block, unit, cls } => {
                    let h = vit.mlp_hidden(input, *block).expect("checked block"); // [b, T, H]
                    let [b, t, hh] = h.dims();
                    let u = h.clone().narrow(2, *unit, 1).reshape([b, t]);
                    let obj = if *cls {
                        u.narrow(1, 0, 1).mean()
                    } else {
                        u.mean()
                    };
                    (obj, Some(h.reshape([b, t, hh])))
                }
                Target::Text(_) => {
                    // the diversity term reads the last block's MLP units, as lucid reads a layer
                    let acts = (o.diversity != 0.0 && o.batch > 1)
                        .then(|| vit.mlp_hidden(input.clone(), blocks - 1))
                        .flatten();
                    let f = model.encode_image(input);
                    let f = clip_model::clip::l2_normalize(f);
                    let d = text_dir.clone().expect("text target");
                    ((f * d).sum_dim(1).mean(), acts)
                }
            };
            let mut loss = objective.clone().neg();
            if o.diversity != 0.0
                && o.batch > 1
                && let Some(h) = acts
            {
                loss = loss + diversity(h) * o.diversity;
            }
            if o.l2 != 0.0 {
                loss = loss + (x.clone() - 0.5).powf_scalar(2.0).mean() * o.l2;
            }
            let value = to_vec(&objective.inner())[0];
            if step == 0 {
                first = value;
            }
            last = value;
            let grads = loss.backward();
            for (p, t) in [(0, &re), (1, &im)] {
                let g = t
                    .grad(&grads)
                    .map(|g| to_vec(&g))
                    .unwrap_or_else(|| vec![0.0; n]);
                adam_step(&mut params[p], &g, &mut adam, p, step + 1, o.lr as f32);
            }
        }
        // judge every image
        let images: Vec<Rgb8> = final_img.chunks(3 * s * s).map(|c| to_rgb8(c, s)).collect();
        let concept = match target {
            Target::Text(t) => Some(t.clone()),
            Target::Unit { .. } => unit_concepts[ti].clone(),
        };
        let mut top5s = Vec::new();
        let mut hits = Vec::new();
        let n = images.len();
        let judged =
            crate::embed_images(judge, "feature visualisations", images.clone(), vec![0; n])?;
        let scores = judge_cls.scores(&judged.data, n);
        for (img, sc) in images.iter().zip(scores.chunks(concepts.len())) {
            let mut order: Vec<usize> = (0..sc.len()).collect();
            order.sort_by(|&a, &b| sc[b].total_cmp(&sc[a]));
            let top5: Vec<String> = order.iter().take(5).map(|&i| concepts[i].clone()).collect();
            let hit = concept.as_ref().is_some_and(|c| top5.contains(c));
            hits.push(hit);
            tiles.push(Tile {
                image: img.clone(),
                frame: frame(hit),
            });
            top5s.push(top5);
        }
        say(format!(
            "{}: objective {first:.3} → {last:.3}; judge sees {:?} in {} of {} images",
            target.name(),
            concept,
            hits.iter().filter(|&&h| h).count(),
            hits.len()
        ));
        visuals.push(Visual {
            target: target.name(),
            concept,
            start: first,
            end: last,
            judge_top5: top5s,
            hits,
        });
    }
    let all: Vec<bool> = visuals
        .iter()
        .flat_map(|v| v.hits.iter().copied())
        .collect();
    let judge_rate = Rate::of(&all);
    let rose = visuals.iter().filter(|v| v.end > v.start).count();
    let verdict = format!(
        "The objective rose in {rose} of {} targets; the independent judge finds the target concept among its top 5 (of {} concepts) in {} of the images.",
        visuals.len(),
        concepts.len(),
        judge_rate.show()
    );
    let r = Featvis {
        gradient_check: grad_err,
        visuals,
        judge: judge_rate,
        verdict,
    };
    crate::grid::save(
        &tiles,
        o.batch,
        s.clamp(32, 128),
        &o.out.join("grid_featvis.png"),
    )?;
    clip_data::out::write_file(&o.out.join("report.md"), report(&r, o).as_bytes())?;
    let doc = serde_json::json!({
        "model": emb.fingerprint,
        "judge": judge.fingerprint,
        "steps": o.steps,
        "batch": o.batch,
        "lr": o.lr,
        "diversity": o.diversity,
        "l2": o.l2,
        "seed": o.seed,
        "result": r,
    });
    clip_eval::error::write_json(&o.out, "featvis.json", &doc)?;
    Ok(r)
}

/// One Adam step (β₁ 0.9, β₂ 0.999, ε 1e-8) on `p` with gradient `g`; `state` holds the moments of
/// both parameter blocks (`which` picks the pair).
fn adam_step(p: &mut [f32], g: &[f32], state: &mut [Vec<f32>; 4], which: usize, t: usize, lr: f32) {
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
    let (m_i, v_i) = (2 * which, 2 * which + 1);
    for i in 0..p.len() {
        state[m_i][i] = b1 * state[m_i][i] + (1.0 - b1) * g[i];
        state[v_i][i] = b2 * state[v_i][i] + (1.0 - b2) * g[i] * g[i];
        p[i] -= lr * (state[m_i][i] / c1) / ((state[v_i][i] / c2).sqrt() + eps);
    }
}

/// lucid's diversity objective: the mean cosine similarity between the batch's Gram matrices of
/// `h` `[b, T, H]` (minimised).
fn diversity(h: Tensor<3>) -> Tensor<1> {
    let [b, _, hh] = h.dims();
    let grams: Vec<Tensor<2>> = (0..b)
        .map(|i| {
            let a = h.clone().narrow(0, i, 1).reshape([h.dims()[1], hh]);
            let g = a.clone().transpose().matmul(a).reshape([1, hh * hh]);
            clip_model::clip::l2_normalize(g)
        })
        .collect();
    let g = Tensor::cat(grams, 0); // [b, H²]
    let sim = g.clone().matmul(g.transpose()); // [b, b]
    let off = sim.sum() - (b as f32); // the diagonal is 1
    off / ((b * (b - 1)) as f32)
}

/// The modal concept of each unit target's top 9 dataset images (every default-tone image).
fn unit_concepts(
    emb: &Embedder,
    imp: &crate::emoji::Import,
    targets: &[Target],
) -> Result<Vec<Option<String>>, EvalError> {
    if !targets.iter().any(|t| matches!(t, Target::Unit { .. })) {
        return Ok(vec![None; targets.len()]);
    }
    let rows: Vec<&crate::emoji::Row> = imp.rows.iter().filter(|r| r.tone == "default").collect();
    let images = crate::emoji::load_all(&rows)?;
    let units: Vec<(usize, usize, bool)> = targets
        .iter()
        .filter_map(|t| match t {
            Target::Unit { block, unit, cls } => Some((*block, *unit, *cls)),
            Target::Text(_) => None,
        })
        .collect();
    let mut modal = crate::neurons::modal_concepts(emb, &rows, &images, &units).into_iter();
    let out = targets
        .iter()
        .map(|t| match t {
            Target::Unit { .. } => modal.next(),
            Target::Text(_) => None,
        })
        .collect();
    Ok(out)
}

fn report(r: &Featvis, o: &FeatvisOptions) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "# Feature visualisation\n\n{} steps, batch {}, Adam lr {}, diversity {}, L2 towards grey {}; bilinear sampling gradient check: worst relative error {:.2e}.\n\n**Verdict.** {}\n\n| target | concept | objective start → end | judge top-5 hits |\n|---|---|---|---|\n",
        o.steps, o.batch, o.lr, o.diversity, o.l2, r.gradient_check, r.verdict
    );
    for v in &r.visuals {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} → {:.3} | {} of {} |",
            v.target,
            v.concept.as_deref().unwrap_or("–"),
            v.start,
            v.end,
            v.hits.iter().filter(|&&h| h).count(),
            v.hits.len()
        );
    }
    s += "\n![featvis](grid_featvis.png)\n\nOne row per target; green: the judge's top 5 holds the concept.\n";
    s
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
