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
//! tokens are not projected ([`pool`]).
//! [`crate::resnet::ModifiedResNet::forward`] stays the path for training (autodiff) and for other
//! devices; a test holds the two to the same outputs on weights with non-trivial statistics.
//! Where [`crate::lowp::packs`] (AVX-512 or AVX2+FMA CPUs in f32; bf16 and int8 everywhere) the
//! folded weights are packed once and each convolution's product runs through [`PackedLinear`]
//! instead of `gemm`, which also adds the bias, accumulates onto the shortcut and applies the
//! ReLU as it writes each tile: no separate passes over the activations. There (f32 and bf16,
//! inputs of whole 16-channel vectors) a 3×3 convolution gathers nothing: the kernel reads each
//! output pixel's nine taps straight from a zero-bordered copy of its input
//! ([`PackedLinear::conv_into`], the same sums as on the im2col rows), where the im2col tile was
//! nine copies of the input written and read again.

use burn::prelude::*;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::capture::Capture;
use crate::linalg::matmul_into;
use crate::lowp::{Epilogue, PackedLinear, Precision};
use crate::resnet::{BatchNorm2d, Conv2d, ModifiedResNet};
use crate::source::{to_vec, transpose};

mod pool;

/// Values per im2col tile (32 MiB at f32): big enough that `gemm` packs each weight panel once
/// per few thousand output pixels, small enough to stay in the last-level cache.
const TILE_VALUES: usize = 1 << 23;
/// Im2col tiles have at least this many rows (output pixels) when the layer has them.
const MIN_TILE_ROWS: usize = 512;

/// The buffers of a pass, kept by the tower between passes: activations are tens of MB at batch
/// 16, and freshly allocated each time they cost page faults and zeroing in the kernel (9% of
/// RN50's cycles at batch 16, measured on an AMD EPYC). What stays allocated is the largest
/// pass's working set.
#[derive(Debug, Default)]
struct Scratch {
    /// the im2col tile (rows in use are written before they are read)
    col: Vec<f32>,
    /// free activation buffers
    free: Vec<Vec<f32>>,
    /// how many values of each buffer [`Scratch::take`] made (by its address) hold values: a
    /// buffer handed out shorter comes back at that length, so that a longer use next time does
    /// not fill it with zeros again (25 MB at batch 16 before the stem's first convolution)
    written: HashMap<usize, usize>,
}

impl Scratch {
    /// A buffer of `len` values, which hold stale values of an earlier use: callers write each
    /// before reading it. The smallest free buffer that holds `len`, else a new one.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let fit = (0..self.free.len())
            .filter(|&i| self.free[i].capacity() >= len)
            .min_by_key(|&i| self.free[i].capacity());
        match fit {
            Some(i) => {
                let mut v = self.free.swap_remove(i);
                if v.len() < len {
                    v.resize(len, 0.0);
                } else {
                    v.truncate(len);
                }
                let written = self.written.entry(v.as_ptr() as usize).or_default();
                *written = (*written).max(len);
                v
            }
            None => {
                let v = vec![0f32; len];
                // (a new allocation: whatever an earlier one at this address held is forgotten)
                self.written.insert(v.as_ptr() as usize, len);
                v
            }
        }
    }

    /// `v` back among the free buffers; all of it that held values when it was taken is usable
    /// again. Every buffer given comes from [`Scratch::take`].
    fn give(&mut self, mut v: Vec<f32>) {
        if let Some(&n) = self.written.get(&(v.as_ptr() as usize))
            && v.len() < n
            && n <= v.capacity()
        {
            // SAFETY: the first `n` values of this allocation were written (zeroed by `take`,
            // then overwritten) before `truncate` shortened it; `f32` has no invalid values and
            // no destructor.
            unsafe { v.set_len(n) };
        }
        self.free.push(v);
    }
}

/// A batch of channels-last activations `[n, h, w, c]`.
#[derive(Debug, Clone)]
struct Act {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    data: Vec<f32>,
}

impl Act {
    /// NHWC back to NCHW values (for captured block outputs).
    fn to_nchw(&self) -> (Vec<usize>, Vec<f32>) {
        let (hw, c) = (self.h * self.w, self.c);
        let data = self
            .data
            .chunks(hw * c)
            .flat_map(|img| transpose(img, hw, c))
            .collect();
        (vec![self.n, c, self.h, self.w], data)
    }

    /// A copy with `pad` zero pixels on every side (in a buffer of `scratch`): its values, height
    /// and width.
    fn padded(&self, pad: usize, scratch: &mut Scratch) -> (Vec<f32>, usize, usize) {
        let (hp, wp, c) = (self.h + 2 * pad, self.w + 2 * pad, self.c);
        let mut out = scratch.take(self.n * hp * wp * c);
        out.par_chunks_mut(wp * c)
            .enumerate()
            .for_each(|(row, dst)| {
                let (b, y) = (row / hp, row % hp);
                match y.checked_sub(pad).filter(|&y| y < self.h) {
                    Some(y) => {
                        let src = &self.data[(b * self.h + y) * self.w * c..][..self.w * c];
                        let (left, rest) = dst.split_at_mut(pad * c);
                        let (inner, right) = rest.split_at_mut(self.w * c);
                        inner.copy_from_slice(src);
                        left.fill(0.0);
                        right.fill(0.0);
                    }
                    None => dst.fill(0.0),
                }
            });
        (out, hp, wp)
    }

    fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// `k×k` average pooling with stride `k` (the anti-aliased downsampling); the input's buffer
    /// goes back to `scratch`.
    fn avg_pool(self, k: usize, scratch: &mut Scratch) -> Act {
        if k == 1 {
            return self;
        }
        let (ho, wo, c) = (self.h / k, self.w / k, self.c);
        let (w, h) = (self.w, self.h);
        let scale = 1.0 / (k * k) as f32;
        let mut data = scratch.take(self.n * ho * wo * c);
        let kernel = crate::fastmath::kernel();
        data.par_chunks_mut(wo * c)
            .enumerate()
            .for_each(|(row, out)| {
                let (b, oy) = (row / ho, row % ho);
                // the k input rows of this output row lie one after the other
                let src = &self.data[((b * h) + oy * k) * w * c..][..k * w * c];
                pool_row(kernel, src, w * c, c, k, scale, out);
            });
        scratch.give(self.data);
        Act {
            n: self.n,
            h: ho,
            w: wo,
            c,
            data,
        }
    }
}

// One output row of `k×k` average pooling: `src` holds the `k` input rows (`line` values each,
// pixels of `c` channels), `out` the pooled pixels, summed row by row then tap by tap as before;
// compiled for the CPU's vector width (the baseline build's loop is 128-bit).
multiversion!(
    fn pool_row(src: &[f32], line: usize, c: usize, k: usize, scale: f32, out: &mut [f32]) {
        out.fill(0.0);
        for input in src.chunks_exact(line) {
            for (ox, px) in out.chunks_exact_mut(c).enumerate() {
                for kx in 0..k {
                    let pixel = &input[(ox * k + kx) * c..][..c];
                    for (o, v) in px.iter_mut().zip(pixel) {
                        *o += v;
                    }
                }
            }
        }
        for v in out.iter_mut() {
            *v *= scale;
        }
    }
);

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

/// Output channels the first convolution computes together (one AVX-512 register).
const FIRST_LANES: usize = 16;

/// The stem's first convolution (RGB in, stride 2), read straight from the images' planes as
/// burn holds them (NCHW) into channels-last output: no transposed copy of the images and no
/// im2col tile. Its 27 inputs per pixel are too few for the packed product (which ran it at 70
/// GFLOP/s on an AVX-512 EPYC, after 4–8 ms of transposing at batch 16): here each pixel's
/// 16-channel groups of sums stay in registers over the taps. Taken in the packed product's order
/// (tap by tap, the channels within each, one FMA each from zero, then the bias and ReLU), so the
/// same bits as before on CPUs with FMA. f32 in every precision (RN50's holds 864 weights).
#[derive(Debug)]
struct FirstConv {
    g: Geometry,
    /// `[kh][kw][in][out]`, each run of outputs padded with zeros to whole `FIRST_LANES` groups
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl FirstConv {
    fn fold(conv: &Conv2d, bn: &BatchNorm2d, stride: usize) -> FirstConv {
        let (w, bias, g) = fold_weights(conv, bn, stride);
        let cp = g.c_out.next_multiple_of(FIRST_LANES);
        let mut weight = vec![0f32; g.k * g.k * g.c_in * cp];
        for (dst, src) in weight.chunks_exact_mut(cp).zip(w.chunks_exact(g.c_out)) {
            dst[..g.c_out].copy_from_slice(src);
        }
        FirstConv { g, weight, bias }
    }

    fn bytes(&self) -> usize {
        (self.weight.len() + self.bias.len()) * 4
    }

    /// `relu(conv(x) + b)` for images `x` of `dims` `[n, c_in, h, w]`, into a buffer of `scratch`.
    fn run(&self, x: &[f32], dims: [usize; 4], scratch: &mut Scratch) -> Act {
        let [n, c, h, w] = dims;
        assert_eq!(
            c, self.g.c_in,
            "{c}-channel images into a {}-channel stem",
            self.g.c_in
        );
        assert_eq!(x.len(), n * c * h * w, "image values are not {dims:?}");
        let (ho, wo) = (self.g.out_size(h), self.g.out_size(w));
        let mut data = scratch.take(n * ho * wo * self.g.c_out);
        let kernel = crate::fastmath::kernel();
        data.par_chunks_mut(wo * self.g.c_out)
            .enumerate()
            .for_each(|(row, out)| {
                let (b, oy) = (row / ho, row % ho);
                let img = &x[b * c * h * w..][..c * h * w];
                first_conv_row(kernel, self, img, [h, w], oy, out);
            });
        Act {
            n,
            h: ho,
            w: wo,
            c: self.g.c_out,
            data,
        }
    }
}

/// One output row `oy` of [`FirstConv`] from one image's planes `img` of size `hw`: by vector
/// registers where the CPU has AVX-512 or AVX2+FMA, else by the portable loop.
fn first_conv_row(
    kernel: &str,
    conv: &FirstConv,
    img: &[f32],
    hw: [usize; 2],
    oy: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: the features were detected on this CPU by `fastmath::kernel()`.
        "avx512" => unsafe { first_simd::avx512(conv, img, hw, oy, out) },
        // SAFETY: as above.
        "avx2" => unsafe { first_simd::avx2(conv, img, hw, oy, out) },
        // without FMA, `mul_add` is a library call per value: multiply, then add
        _ => first_conv_row_with::<false>(conv, img, hw, oy, out),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        first_conv_row_with::<true>(conv, img, hw, oy, out)
    }
}

/// [`FirstConv`] in vector registers: `P` pixels at a time, their sums independent chains of FMAs
/// (one pixel's alone would wait on each FMA's latency), the same FMAs in the same order as the
/// portable loop.
#[cfg(target_arch = "x86_64")]
mod first_simd {
    use super::{FIRST_LANES, FirstConv, first_conv_pixels};
    use std::arch::x86_64::*;

    /// The input value under tap (`iy`, `ix`) of channel `c`, or the border's zero.
    #[inline(always)]
    fn tap(img: &[f32], [h, w]: [usize; 2], c: usize, iy: usize, ix: usize) -> f32 {
        if iy < h && ix < w {
            img[(c * h + iy) * w + ix]
        } else {
            0.0
        }
    }

    macro_rules! simd_row {
        ($name:ident, $features:literal, $p:literal, $vec:ty, $per:literal, $zero:ident,
         $load:ident, $set1:ident, $fma:ident, $store:ident) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(
                conv: &FirstConv,
                img: &[f32],
                hw: [usize; 2],
                oy: usize,
                out: &mut [f32],
            ) {
                const P: usize = $p;
                const V: usize = FIRST_LANES / $per;
                let (k, s, c_in, c_out) = (conv.g.k, conv.g.stride, conv.g.c_in, conv.g.c_out);
                let cp = c_out.next_multiple_of(FIRST_LANES);
                let wo = out.len() / c_out;
                let whole = wo - wo % P;
                for ox0 in (0..whole).step_by(P) {
                    for g in 0..cp / FIRST_LANES {
                        let mut acc = [[$zero(); V]; P];
                        for kh in 0..k {
                            let iy = (oy * s + kh).wrapping_sub(conv.g.pad);
                            for kw in 0..k {
                                for c in 0..c_in {
                                    let at = ((kh * k + kw) * c_in + c) * cp + g * FIRST_LANES;
                                    let wr = &conv.weight[at..at + FIRST_LANES];
                                    // SAFETY: `wr` holds FIRST_LANES = V·$per values.
                                    let wv: [$vec; V] = std::array::from_fn(|v| unsafe {
                                        $load(wr.as_ptr().add(v * $per))
                                    });
                                    for (p, acc) in acc.iter_mut().enumerate() {
                                        let ix = ((ox0 + p) * s + kw).wrapping_sub(conv.g.pad);
                                        let x = $set1(tap(img, hw, c, iy, ix));
                                        for (a, w) in acc.iter_mut().zip(&wv) {
                                            *a = $fma(x, *w, *a);
                                        }
                                    }
                                }
                            }
                        }
                        let o0 = g * FIRST_LANES;
                        let n = FIRST_LANES.min(c_out - o0);
                        for (p, acc) in acc.iter().enumerate() {
                            let mut sums = [0f32; FIRST_LANES];
                            for (v, a) in acc.iter().enumerate() {
                                // SAFETY: `sums` holds V·$per values.
                                unsafe { $store(sums.as_mut_ptr().add(v * $per), *a) };
                            }
                            let dst = &mut out[(ox0 + p) * c_out + o0..][..n];
                            for ((d, a), b) in dst.iter_mut().zip(sums).zip(&conv.bias[o0..]) {
                                let v = a + b;
                                // NaN stays NaN, as in PyTorch
                                *d = if v < 0.0 { 0.0 } else { v };
                            }
                        }
                    }
                }
                for (i, px) in out[whole * c_out..].chunks_exact_mut(c_out).enumerate() {
                    first_conv_pixels::<true, 1>(conv, img, hw, oy, whole + i, px);
                }
            }
        };
    }

    simd_row!(
        avx512,
        "avx512f",
        8,
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
    simd_row!(
        avx2,
        "avx2,fma",
        4,
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
}

/// [`FirstConv`]'s row by the portable loop, a pixel at a time (by FMA where `FMA`).
fn first_conv_row_with<const FMA: bool>(
    conv: &FirstConv,
    img: &[f32],
    hw: [usize; 2],
    oy: usize,
    out: &mut [f32],
) {
    for (ox, px) in out.chunks_exact_mut(conv.g.c_out).enumerate() {
        first_conv_pixels::<FMA, 1>(conv, img, hw, oy, ox, px);
    }
}

/// `P` output pixels from `ox0` on row `oy` into `out` (`P × c_out` values).
#[inline(always)]
fn first_conv_pixels<const FMA: bool, const P: usize>(
    conv: &FirstConv,
    img: &[f32],
    [h, w]: [usize; 2],
    oy: usize,
    ox0: usize,
    out: &mut [f32],
) {
    let (k, s, c_in, c_out) = (conv.g.k, conv.g.stride, conv.g.c_in, conv.g.c_out);
    let cp = c_out.next_multiple_of(FIRST_LANES);
    for g in 0..cp / FIRST_LANES {
        let mut acc = [[0f32; FIRST_LANES]; P];
        for kh in 0..k {
            let iy = (oy * s + kh).wrapping_sub(conv.g.pad);
            for kw in 0..k {
                for c in 0..c_in {
                    let at = ((kh * k + kw) * c_in + c) * cp + g * FIRST_LANES;
                    let wr: &[f32; FIRST_LANES] =
                        conv.weight[at..at + FIRST_LANES].try_into().unwrap();
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let ix = ((ox0 + p) * s + kw).wrapping_sub(conv.g.pad);
                        // a tap on the zero border multiplies a zero, as the im2col row did
                        let v = if iy < h && ix < w {
                            img[(c * h + iy) * w + ix]
                        } else {
                            0.0
                        };
                        for (a, &wv) in acc.iter_mut().zip(wr) {
                            *a = if FMA { v.mul_add(wv, *a) } else { *a + v * wv };
                        }
                    }
                }
            }
        }
        let o0 = g * FIRST_LANES;
        let n = FIRST_LANES.min(c_out - o0);
        for (p, acc) in acc.iter().enumerate() {
            let dst = &mut out[p * c_out + o0..][..n];
            for ((d, a), b) in dst.iter_mut().zip(acc).zip(&conv.bias[o0..o0 + n]) {
                let v = a + b;
                // NaN stays NaN, as in PyTorch
                *d = if v < 0.0 { 0.0 } else { v };
            }
        }
    }
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
    use crate::source::RandomInit;
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
