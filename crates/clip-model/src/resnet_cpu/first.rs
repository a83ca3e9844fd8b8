//! The stem's first convolution (RGB in, stride 2), read straight from the images' planes as burn
//! holds them (NCHW) into channels-last output: no transposed copy of the images and no im2col
//! tile. Its 27 inputs per pixel are too few for the packed product (which ran it at 70 GFLOP/s on
//! an AVX-512 EPYC, after 4–8 ms of transposing at batch 16): here each pixel's 16-channel groups
//! of sums stay in registers over the taps. Taken in the packed product's order (tap by tap, the
//! channels within each, one FMA each from zero, then the bias and ReLU), so the same bits as
//! before on CPUs with FMA. f32 in every precision (RN50's holds 864 weights).

use rayon::prelude::*;

use super::{Act, Geometry, Scratch, fold_weights};
use crate::resnet::{BatchNorm2d, Conv2d};

/// Output channels computed together (one AVX-512 register).
const LANES: usize = 16;

#[derive(Debug)]
pub(super) struct FirstConv {
    pub(super) g: Geometry,
    /// `[kh][kw][in][out]`, each run of outputs padded with zeros to whole `LANES` groups
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl FirstConv {
    pub(super) fn fold(conv: &Conv2d, bn: &BatchNorm2d, stride: usize) -> FirstConv {
        let (w, bias, g) = fold_weights(conv, bn, stride);
        let cp = g.c_out.next_multiple_of(LANES);
        let mut weight = vec![0f32; g.k * g.k * g.c_in * cp];
        for (dst, src) in weight.chunks_exact_mut(cp).zip(w.chunks_exact(g.c_out)) {
            dst[..g.c_out].copy_from_slice(src);
        }
        FirstConv { g, weight, bias }
    }

    pub(super) fn bytes(&self) -> usize {
        (self.weight.len() + self.bias.len()) * 4
    }

    /// `relu(conv(x) + b)` for images `x` of `dims` `[n, c_in, h, w]`, into a buffer of `scratch`.
    pub(super) fn run(&self, x: &[f32], dims: [usize; 4], scratch: &mut Scratch) -> Act {
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
                self.row(kernel, img, [h, w], oy, out);
            });
        Act {
            n,
            h: ho,
            w: wo,
            c: self.g.c_out,
            data,
        }
    }

    /// Output row `oy` from one image's planes `img` of size `hw`: by vector registers where the
    /// CPU has AVX-512 or AVX2+FMA, else a pixel at a time by the portable loop.
    fn row(&self, kernel: &str, img: &[f32], hw: [usize; 2], oy: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match kernel {
            // SAFETY: the features were detected on this CPU by `fastmath::kernel()`.
            "avx512" => unsafe { simd::avx512(self, img, hw, oy, out) },
            // SAFETY: as above.
            "avx2" => unsafe { simd::avx2(self, img, hw, oy, out) },
            // without FMA, `mul_add` is a library call per value: multiply, then add
            _ => self.row_portable::<false>(img, hw, oy, 0, out),
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = kernel;
            self.row_portable::<true>(img, hw, oy, 0, out)
        }
    }

    /// The pixels of `out` (row `oy`, from `ox0`) a pixel at a time, by FMA where `FMA`.
    fn row_portable<const FMA: bool>(
        &self,
        img: &[f32],
        hw: [usize; 2],
        oy: usize,
        ox0: usize,
        out: &mut [f32],
    ) {
        let Geometry { c_in, c_out, k, .. } = self.g;
        let cp = c_out.next_multiple_of(LANES);
        for (i, px) in out.chunks_exact_mut(c_out).enumerate() {
            let ox = ox0 + i;
            for (gi, dst) in px.chunks_mut(LANES).enumerate() {
                let mut acc = [0f32; LANES];
                for kh in 0..k {
                    for kw in 0..k {
                        for c in 0..c_in {
                            let at = ((kh * k + kw) * c_in + c) * cp + gi * LANES;
                            let v = self.tap(img, hw, c, [oy, ox], [kh, kw]);
                            for (a, &wv) in acc.iter_mut().zip(&self.weight[at..at + LANES]) {
                                *a = if FMA { v.mul_add(wv, *a) } else { *a + v * wv };
                            }
                        }
                    }
                }
                self.finish(gi, &acc, dst);
            }
        }
    }

    /// Channel `c`'s input under tap (`kh`, `kw`) of output pixel (`oy`, `ox`), or the border's
    /// zero (multiplied like any input, as the im2col row did).
    #[inline(always)]
    fn tap(
        &self,
        img: &[f32],
        [h, w]: [usize; 2],
        c: usize,
        [oy, ox]: [usize; 2],
        [kh, kw]: [usize; 2],
    ) -> f32 {
        let iy = (oy * self.g.stride + kh).wrapping_sub(self.g.pad);
        let ix = (ox * self.g.stride + kw).wrapping_sub(self.g.pad);
        if iy < h && ix < w {
            img[(c * h + iy) * w + ix]
        } else {
            0.0
        }
    }

    /// Group `gi`'s sums into its `dst.len()` output channels: `relu(sum + b)`.
    #[inline(always)]
    fn finish(&self, gi: usize, sums: &[f32; LANES], dst: &mut [f32]) {
        for ((d, a), b) in dst.iter_mut().zip(sums).zip(&self.bias[gi * LANES..]) {
            let v = a + b;
            // NaN stays NaN, as in PyTorch
            *d = if v < 0.0 { 0.0 } else { v };
        }
    }
}

/// [`FirstConv`] in vector registers: `P` pixels at a time, their sums independent chains of FMAs
/// (one pixel's alone would wait on each FMA's latency), the same FMAs in the same order as the
/// portable loop, which takes the pixels left over.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{FirstConv, LANES};
    use std::arch::x86_64::*;

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
                const V: usize = LANES / $per;
                let (k, c_in, c_out) = (conv.g.k, conv.g.c_in, conv.g.c_out);
                let cp = c_out.next_multiple_of(LANES);
                let wo = out.len() / c_out;
                let whole = wo - wo % P;
                for ox0 in (0..whole).step_by(P) {
                    for gi in 0..cp / LANES {
                        let mut acc = [[$zero(); V]; P];
                        for kh in 0..k {
                            for kw in 0..k {
                                for c in 0..c_in {
                                    let at = ((kh * k + kw) * c_in + c) * cp + gi * LANES;
                                    let wr = &conv.weight[at..at + LANES];
                                    // SAFETY: `wr` holds LANES = V·$per values.
                                    let wv: [$vec; V] = std::array::from_fn(|v| unsafe {
                                        $load(wr.as_ptr().add(v * $per))
                                    });
                                    for (p, acc) in acc.iter_mut().enumerate() {
                                        let at = [oy, ox0 + p];
                                        let x = $set1(conv.tap(img, hw, c, at, [kh, kw]));
                                        for (a, w) in acc.iter_mut().zip(&wv) {
                                            *a = $fma(x, *w, *a);
                                        }
                                    }
                                }
                            }
                        }
                        for (p, acc) in acc.iter().enumerate() {
                            let mut sums = [0f32; LANES];
                            for (v, a) in acc.iter().enumerate() {
                                // SAFETY: `sums` holds V·$per values.
                                unsafe { $store(sums.as_mut_ptr().add(v * $per), *a) };
                            }
                            let o0 = (ox0 + p) * c_out + gi * LANES;
                            let n = LANES.min(c_out - gi * LANES);
                            conv.finish(gi, &sums, &mut out[o0..o0 + n]);
                        }
                    }
                }
                conv.row_portable::<true>(img, hw, oy, whole, &mut out[whole * c_out..]);
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
