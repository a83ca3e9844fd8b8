//! The ModifiedResNet image tower for CPU inference, the way ONNX Runtime runs it rather than the
//! way the autodiff graph does: every BatchNorm folded into its convolution once, at first use
//! (`w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`), activations kept channels-last (NHWC) from the
//! stem to the attention pool, and each convolution one `gemm` over all pixels of the batch
//! (1×1: straight on the activations; 3×3: on an im2col tile built from contiguous channel rows).
//! The bias, the shortcut (identity or downsampling conv) and the block's last conv land in the
//! same output buffer through `gemm`'s accumulation, so a Bottleneck makes one ReLU pass where
//! the graph made BatchNorm, add and ReLU passes over NCHW tensors, each convolution converting to
//! NHWC and back inside burn-flex (issue 11's profile: 16% of cycles in those conversions and
//! passes, 15% in page faults of their buffers).
//!
//! Hand-written because no crate offers an inference-only CPU convolution that takes folded
//! weights; the arithmetic is `gemm`'s (the crate burn-flex's own convolutions call). The attention
//! pool at the end runs from its own copies of the projections, rearranged so that the grid's
//! tokens are not projected (`pool`).
//! [`crate::resnet::ModifiedResNet::forward`] stays the path for training (autodiff) and for other
//! devices; a test holds the two to the same outputs on weights with non-trivial statistics.
//! Where [`crate::lowp::packs`] (AVX-512 or AVX2+FMA CPUs in f32; bf16 and int8 everywhere) the
//! folded weights are packed once and each convolution's product runs through [`PackedLinear`]
//! instead of `gemm`, which also adds the bias, accumulates onto the shortcut and applies the
//! ReLU as it writes each tile: no separate passes over the activations. There (f32 and bf16,
//! inputs of whole 16-channel vectors) a 3×3 convolution gathers nothing: the kernel reads each
//! output pixel's nine taps straight from a zero-bordered copy of its input
//! ([`PackedLinear::conv_into`], the same sums as on the im2col rows), where the im2col tile was
//! nine copies of the input written and read again. The stem's first convolution reads the
//! images' planes itself (`first`); the activations, their layout passes and the buffers a pass
//! keeps are in `act`.

use burn::prelude::*;
use rayon::prelude::*;
use std::sync::Mutex;

use crate::capture::Capture;
use crate::linalg::matmul_into;
use crate::lowp::{Epilogue, PackedLinear, Precision};
use crate::resnet::{BatchNorm2d, Conv2d, ModifiedResNet};
use crate::source::to_vec;

mod act;
mod first;
mod pool;

use act::{Act, Scratch};
use first::FirstConv;

/// Values per im2col tile (32 MiB at f32): big enough that `gemm` packs each weight panel once
/// per few thousand output pixels, small enough to stay in the last-level cache.
const TILE_VALUES: usize = 1 << 23;
/// Im2col tiles have at least this many rows (output pixels) when the layer has them.
const MIN_TILE_ROWS: usize = 512;

/// In place `max(x, 0)` (NaN stays NaN, as in PyTorch).
fn relu(data: &mut [f32]) {
    data.par_chunks_mut(1 << 14).for_each(|c| {
        for v in c {
            if *v < 0.0 {
                *v = 0.0;
            }
        }
    });
}

/// `bias` into every row of `data` (rows of `bias.len()` values): added to what the row holds
/// with `accumulate`, else written over it.
fn bias_rows(data: &mut [f32], bias: &[f32], accumulate: bool) {
    if bias.is_empty() {
        return;
    }
    data.par_chunks_mut(bias.len() * 64).for_each(|chunk| {
        for row in chunk.chunks_mut(bias.len()) {
            if accumulate {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            } else {
                row.copy_from_slice(bias);
            }
        }
    });
}

/// A convolution's shape: channels in and out, a `k×k` kernel, its stride and zero padding.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

impl Geometry {
    /// Output pixels along a side of `size` input pixels.
    fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.pad).saturating_sub(self.k) / self.stride + 1
    }
}

/// A convolution's weights with its BatchNorm folded in, as `[kh][kw][in][out]`, its bias, and
/// its shape.
fn fold_weights(conv: &Conv2d, bn: &BatchNorm2d, stride: usize) -> (Vec<f32>, Vec<f32>, Geometry) {
    let [c_out, c_in, k, _] = conv.weight.dims();
    let w = to_vec(&conv.weight.val());
    let (gamma, beta) = (to_vec(&bn.weight.val()), to_vec(&bn.bias.val()));
    let (mean, var) = (
        to_vec(&bn.running_mean.val()),
        to_vec(&bn.running_var.val()),
    );
    let mut weight = vec![0f32; w.len()];
    let mut bias = vec![0f32; c_out];
    for o in 0..c_out {
        let scale = gamma[o] as f64 / (var[o] as f64 + 1e-5).sqrt();
        bias[o] = (beta[o] as f64 - mean[o] as f64 * scale) as f32;
        for i in 0..c_in {
            for t in 0..k * k {
                weight[(t * c_in + i) * c_out + o] =
                    (w[(o * c_in + i) * k * k + t] as f64 * scale) as f32;
            }
        }
    }
    let pad = conv.padding;
    let g = Geometry {
        c_in,
        c_out,
        k,
        stride,
        pad,
    };
    (weight, bias, g)
}

/// A convolution with its BatchNorm folded in; weights as `[kh][kw][in][out]`, so that `gemm`
/// (which computes the transposed product for a row-major output) reads them column-major and
/// need not repack them on each call when few pixels share them (batch 1).
#[derive(Debug)]
struct ConvBn {
    g: Geometry,
    /// `[kh][kw][in][out]` in f32 (empty when `packed` holds it)
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// the weight in reduced precision
    packed: Option<PackedLinear>,
}

impl ConvBn {
    fn fold(conv: &Conv2d, bn: &BatchNorm2d, stride: usize, precision: Precision) -> ConvBn {
        let (mut weight, bias, g) = fold_weights(conv, bn, stride);
        let (k, c_in, c_out) = (g.k, g.c_in, g.c_out);
        let packed = crate::lowp::packs(precision)
            .then(|| PackedLinear::new(&weight, k * k * c_in, c_out, Some(&bias), precision));
        if packed.is_some() {
            weight = Vec::new();
        }
        ConvBn {
            g,
            weight,
            bias,
            packed,
        }
    }

    /// `out[pixels, c_out] = [relu]([out +] conv(x) + b)` as `then` says (its `bias` is always
    /// applied); `scratch` holds the im2col tile (or the zero-bordered input), kept across
    /// convolutions so that it is neither reallocated nor zeroed for each. Packed weights do the
    /// bias, accumulation and ReLU as each tile is written; with `gemm` they are passes over
    /// `out`.
    fn apply(&self, x: &Act, out: &mut [f32], scratch: &mut Scratch, then: Epilogue) {
        debug_assert_eq!(x.c, self.g.c_in);
        let (ho, wo) = (self.g.out_size(x.h), self.g.out_size(x.w));
        let pixels = x.n * ho * wo;
        let (c_in, c_out) = (self.g.c_in, self.g.c_out);
        debug_assert_eq!(out.len(), pixels * c_out);
        let then = Epilogue { bias: true, ..then };
        if self.packed.is_none() {
            bias_rows(out, &self.bias, then.accumulate);
        }
        if self.g.k == 1 && self.g.stride == 1 {
            match &self.packed {
                Some(p) => p.matmul_into(pixels, &x.data, c_in, out, then),
                None => {
                    let ci = c_in as isize;
                    matmul_into(
                        pixels,
                        c_out,
                        c_in,
                        out,
                        true,
                        &x.data,
                        (1, ci),
                        &self.weight,
                        (1, c_out as isize),
                        true,
                    );
                }
            }
        } else if let Some(p) = self
            .packed
            .as_ref()
            .filter(|p| p.convolves() && c_in % 16 == 0)
        {
            // implicit im2col: each output pixel's taps read straight from a zero-bordered copy
            let (padded, hp, wp) = x.padded(self.g.pad, scratch);
            let (k, s) = (self.g.k, self.g.stride);
            let taps: Vec<usize> = (0..k * k).map(|t| ((t / k) * wp + t % k) * c_in).collect();
            let pixel: Vec<usize> = (0..pixels)
                .map(|i| {
                    let (b, r) = (i / (ho * wo), i % (ho * wo));
                    ((b * hp + (r / wo) * s) * wp + (r % wo) * s) * c_in
                })
                .collect();
            p.conv_into(&padded, &pixel, &taps, out, then);
            scratch.give(padded);
        } else {
            let col = &mut scratch.col;
            let kk = self.g.k * self.g.k * c_in;
            let rows = (TILE_VALUES / kk).max(MIN_TILE_ROWS).min(pixels);
            if col.len() < rows * kk {
                col.resize(rows * kk, 0.0);
            }
            for p0 in (0..pixels).step_by(rows) {
                let m = rows.min(pixels - p0);
                col[..m * kk]
                    .par_chunks_mut(kk)
                    .with_min_len(32)
                    .enumerate()
                    .for_each(|(i, row)| self.gather(x, p0 + i, ho, wo, row));
                let dst = &mut out[p0 * c_out..(p0 + m) * c_out];
                match &self.packed {
                    Some(p) => p.matmul_into(m, &col[..m * kk], kk, dst, then),
                    None => matmul_into(
                        m,
                        c_out,
                        kk,
                        dst,
                        true,
                        &col[..m * kk],
                        (1, kk as isize),
                        &self.weight,
                        (1, c_out as isize),
                        true,
                    ),
                }
            }
        }
        if self.packed.is_none() && then.relu {
            relu(out);
        }
    }

    /// The im2col row of output pixel `pix`: for each tap (kh, kw), the input pixel's channels.
    fn gather(&self, x: &Act, pix: usize, ho: usize, wo: usize, row: &mut [f32]) {
        let (b, r) = (pix / (ho * wo), pix % (ho * wo));
        let (oy, ox) = (r / wo, r % wo);
        let c = self.g.c_in;
        for kh in 0..self.g.k {
            let iy = (oy * self.g.stride + kh).wrapping_sub(self.g.pad);
            for kw in 0..self.g.k {
                let ix = (ox * self.g.stride + kw).wrapping_sub(self.g.pad);
                let dst = &mut row[(kh * self.g.k + kw) * c..][..c];
                if iy < x.h && ix < x.w {
                    dst.copy_from_slice(&x.data[((b * x.h + iy) * x.w + ix) * c..][..c]);
                } else {
                    dst.fill(0.0);
                }
            }
        }
    }

    /// `relu(conv(x) + b)` as a new activation.
    fn run_relu(&self, x: &Act, scratch: &mut Scratch) -> Act {
        let (h, w) = (self.g.out_size(x.h), self.g.out_size(x.w));
        let mut data = scratch.take(x.n * h * w * self.g.c_out);
        let then = Epilogue {
            relu: true,
            ..Epilogue::default()
        };
        self.apply(x, &mut data, scratch, then);
        Act {
            n: x.n,
            h,
            w,
            c: self.g.c_out,
            data,
        }
    }
}

#[derive(Debug)]
struct Block {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
    downsample: Option<ConvBn>,
    stride: usize,
}

impl Block {
    fn forward(&self, x: Act, scratch: &mut Scratch) -> Act {
        let mid = self.conv1.run_relu(&x, scratch);
        let out = self.conv2.run_relu(&mid, scratch);
        scratch.give(mid.data);
        let out = out.avg_pool(self.stride, scratch);
        let pixels = out.pixels();
        let mut sum = match &self.downsample {
            Some(d) => {
                let mut sum = scratch.take(pixels * d.g.c_out);
                let pooled = x.avg_pool(self.stride, scratch);
                d.apply(&pooled, &mut sum, scratch, Epilogue::default());
                scratch.give(pooled.data);
                sum
            }
            // the identity shortcut: the input's buffer becomes the output's
            None => x.data,
        };
        let then = Epilogue {
            accumulate: true,
            relu: true,
            ..Epilogue::default()
        };
        self.conv3.apply(&out, &mut sum, scratch, then);
        let (n, h, w) = (out.n, out.h, out.w);
        scratch.give(out.data);
        Act {
            n,
            h,
            w,
            c: self.conv3.g.c_out,
            data: sum,
        }
    }
}

/// A ModifiedResNet's convolutions with BatchNorm folded in (built once per loaded model).
#[derive(Debug)]
pub struct FoldedResNet {
    first: FirstConv,
    /// the stem's second and third convolutions
    stem: [ConvBn; 2],
    layers: Vec<Vec<Block>>,
    /// the attention pool (`None` when the tower's projections were packed before folding: burn's
    /// pool then runs them)
    pool: Option<pool::Pool>,
    /// buffers kept between passes (a pass takes them all; one running beside it starts afresh)
    scratch: Mutex<Scratch>,
}

impl FoldedResNet {
    /// Bytes of the folded weights and biases (packed or f32).
    pub fn bytes(&self) -> usize {
        let conv = |c: &ConvBn| {
            (c.weight.len() + c.bias.len()) * 4 + c.packed.as_ref().map_or(0, |p| p.bytes())
        };
        let blocks = self.layers.iter().flatten().map(|b| {
            conv(&b.conv1) + conv(&b.conv2) + conv(&b.conv3) + b.downsample.as_ref().map_or(0, conv)
        });
        let pool = self.pool.as_ref().map_or(0, pool::Pool::bytes);
        let stem = self.first.bytes() + self.stem.iter().map(conv).sum::<usize>();
        stem + blocks.sum::<usize>() + pool
    }

    /// Whether the attention pool runs from this tower's own copies of its projections.
    pub fn pools(&self) -> bool {
        self.pool.is_some()
    }

    /// Fold `r`'s convolutions, keeping their weights in `precision`.
    pub fn new(r: &ModifiedResNet, precision: Precision) -> FoldedResNet {
        let layers = r
            .layers
            .iter()
            .map(|stage| {
                stage
                    .iter()
                    .map(|b| Block {
                        conv1: ConvBn::fold(&b.conv1, &b.bn1, 1, precision),
                        conv2: ConvBn::fold(&b.conv2, &b.bn2, 1, precision),
                        conv3: ConvBn::fold(&b.conv3, &b.bn3, 1, precision),
                        downsample: b
                            .downsample
                            .as_ref()
                            .map(|d| ConvBn::fold(&d.conv, &d.bn, 1, precision)),
                        stride: b.stride,
                    })
                    .collect()
            })
            .collect();
        FoldedResNet {
            first: FirstConv::fold(&r.conv1, &r.bn1, 2),
            stem: [
                ConvBn::fold(&r.conv2, &r.bn2, 1, precision),
                ConvBn::fold(&r.conv3, &r.bn3, 1, precision),
            ],
            layers,
            pool: pool::Pool::new(&r.attnpool, precision),
            scratch: Mutex::default(),
        }
    }

    /// `[B, 3, S, S]` → `[B, E]`, as [`ModifiedResNet::forward`] (same capture names); `r` is the
    /// tower these weights were folded from (its attention pool finishes the pass).
    pub fn forward(
        &self,
        r: &ModifiedResNet,
        images: Tensor<4>,
        mut capture: Option<&mut Capture>,
    ) -> Tensor<2> {
        let device = images.device();
        let dims = images.dims();
        // the images' values, moved out of the tensor where it holds the only handle
        let pixels = crate::transformer::into_f32_vec(images).unwrap_or_else(|t| to_vec(&t));
        let kept = || self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let mut scratch = std::mem::take(&mut *kept());
        let mut x = self.first.run(&pixels, dims, &mut scratch);
        drop(pixels);
        for conv in &self.stem {
            let out = conv.run_relu(&x, &mut scratch);
            scratch.give(std::mem::replace(&mut x, out).data);
        }
        x = x.avg_pool(2, &mut scratch);
        for (s, stage) in self.layers.iter().enumerate() {
            for (i, block) in stage.iter().enumerate() {
                x = block.forward(x, &mut scratch);
                if let Some(c) = capture.as_deref_mut() {
                    c.offer_with(|| format!("visual.layer{}.{i}", s + 1), || x.to_nchw());
                }
            }
        }
        let out = match &self.pool {
            Some(pool) if pool.tokens() == x.h * x.w + 1 => {
                let out = pool.forward(x.n, &x.data);
                let e = out.len() / x.n.max(1);
                scratch.give(x.data);
                Tensor::<2>::from_data(TensorData::new(out, [x.n, e]), &device)
            }
            _ => {
                let tokens = TensorData::new(x.data, [x.n, x.h * x.w, x.c]);
                r.attnpool
                    .forward_tokens(Tensor::<3>::from_data(tokens, &device))
            }
        };
        *kept() = scratch;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resnet::ResNetDims;
    use crate::source::{RandomInit, transpose};
    use burn::module::{Module, ModuleMapper, Param};

    /// BatchNorm statistics away from (γ 1, β 0, μ 0, σ² 1), so that folding is exercised.
    struct Stats(u32);
    impl ModuleMapper for Stats {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if D != 1 {
                return p;
            }
            self.0 += 1;
            let t = p.val();
            let n = t.dims()[0];
            let k = self.0;
            let v: Vec<f32> = (0..n)
                .map(|i| 0.5 + ((i as u32 * 7 + k * 13) % 17) as f32 / 16.0)
                .collect();
            let dev = t.device();
            p.map(|_| Tensor::from_data(TensorData::new(v, [n]), &dev))
        }
    }

    /// A random 64×64 tower of `layers` blocks and `width`, its BatchNorm statistics as
    /// [`Stats`] sets them.
    fn tower(layers: [usize; 4], width: usize, seed: u64) -> ModifiedResNet {
        let dims = ResNetDims {
            image_size: 64,
            layers,
            width,
            heads: 2,
            embed_dim: 24,
        };
        ModifiedResNet::load(&mut RandomInit::new(seed), dims, &crate::cpu())
            .unwrap()
            .map(&mut Stats(0))
    }

    /// The first convolution read from the planes gives the packed im2col product's bits (on
    /// CPUs where f32 is packed: both sum by FMA in the same order), for an odd-sized image whose
    /// last column and row of taps fall on the border.
    #[test]
    fn first_convolution_from_planes_gives_the_im2col_bits() {
        let r = tower([1, 1, 1, 1], 40, 5);
        let first = FirstConv::fold(&r.conv1, &r.bn1, 2);
        let im2col = ConvBn::fold(&r.conv1, &r.bn1, 2, Precision::F32);
        let (n, h, w) = (2, 15, 13);
        let x: Vec<f32> = (0..n * 3 * h * w)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let mut scratch = Scratch::default();
        let got = first.run(&x, [n, 3, h, w], &mut scratch);
        let nhwc = Act {
            n,
            h,
            w,
            c: 3,
            data: x
                .chunks(3 * h * w)
                .flat_map(|img| transpose(img, 3, h * w))
                .collect(),
        };
        let want = im2col.run_relu(&nhwc, &mut scratch);
        assert_eq!((got.h, got.w, got.c), (8, 7, 20));
        assert_eq!((want.h, want.w, want.c), (got.h, got.w, got.c));
        assert!(got.data.iter().any(|&v| v > 0.0) && got.data.contains(&0.0));
        if crate::lowp::packs(Precision::F32) {
            let bits = |a: &Act| a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want));
        } else {
            let d = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs());
            assert!(d.fold(0f32, f32::max) < 1e-5);
        }
    }

    #[test]
    fn folded_tower_matches_the_graph() {
        let device = crate::cpu();
        let r = tower([1, 2, 1, 1], 16, 3);
        let folded = FoldedResNet::new(&r, Precision::F32);
        assert!(
            folded.pools(),
            "the pool runs from the folded tower's copies"
        );
        let n = 2 * 3 * 64 * 64;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let images = || Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 3, 64, 64]), &device);
        let mut want_cap = Capture::new(["visual.layer2.1"]);
        let want = to_vec(&r.forward(images(), Some(&mut want_cap)));
        let mut got_cap = Capture::new(["visual.layer2.1"]);
        let got = to_vec(&folded.forward(&r, images(), Some(&mut got_cap)));
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(scale > 0.1, "outputs are not trivial ({scale})");
        assert!(
            diff <= 1e-4 * scale,
            "max |Δ| {diff} at output scale {scale}"
        );
        let (a, b) = (&got_cap.outputs[0], &want_cap.outputs[0]);
        assert_eq!(a.shape, b.shape);
        let diff = a
            .data
            .iter()
            .zip(&b.data)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-4 * b.data.iter().fold(0f32, |m, v| m.max(v.abs())),
            "capture differs by {diff}"
        );
    }
}
