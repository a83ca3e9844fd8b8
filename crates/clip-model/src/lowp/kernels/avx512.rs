//! The AVX-512 code of [`super`]: the quantizer's range and rounding, 16 values at a time, and the
//! 6-row × 64-column tiles of f32 (`vfmadd231ps`), bf16 (`vdpbf16ps`) and int8 (`vpdpbusd`).

use super::{Direct, LANES, MR, NV};
use std::arch::x86_64::*;

/// [`super::range`] 16 values at a time.
#[target_feature(enable = "avx512f")]
pub unsafe fn range(x: &[f32]) -> (f32, f32, bool) {
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut nan: __mmask16 = 0;
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        // SAFETY: 16 values in the chunk.
        let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
        nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    }
    let (l, h, n) = super::range(rest);
    (
        _mm512_reduce_min_ps(lo).min(l),
        _mm512_reduce_max_ps(hi).max(h),
        nan != 0 || n,
    )
}

/// [`super::quantize_into`] 16 values at a time: `round_even(v·inv + zero)` clamped to
/// [0, 255], narrowed to bytes.
#[target_feature(enable = "avx512f")]
pub unsafe fn quantize(x: &[f32], inv: f32, zero: f32, out: &mut [u32]) {
    assert!(out.len() >= x.len().div_ceil(4));
    let (inv_v, zero_v, top) = (
        _mm512_set1_ps(inv),
        _mm512_set1_ps(zero),
        _mm512_set1_ps(255.0),
    );
    let chunks = x.chunks_exact(16);
    let done = x.len() - chunks.remainder().len();
    for (i, c) in chunks.enumerate() {
        // SAFETY: 16 values in the chunk; 4 words of `out` at 4i (asserted above).
        unsafe {
            // multiply, then add: two roundings, as the portable loop does
            let v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), inv_v), zero_v);
            let v = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), top);
            let bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v));
            _mm_storeu_si128(out.as_mut_ptr().add(4 * i).cast(), bytes);
        }
    }
    if done < x.len() {
        super::quantize_into("baseline", &x[done..], inv, zero, &mut out[done / 4..]);
    }
}

/// `pub unsafe fn $name<R, V>(a, runs, b, steps, first, out, direct) -> bool`: an `R×V` tile
/// over the steps of `runs` (`a`: one pointer per row; each run `(offset, len)` takes `len`
/// steps from `offset` words past every row's pointer, the runs in turn; `b`: V panels
/// `steps × 16` words apart, pointing at the first run's first step, read on through the runs)
/// whose accumulators stay in registers across the runs, start at `$zero` (`first`) or at what
/// `out` holds, and take one step `$step(acc, x, w)` per packed word, `x` the row's word
/// broadcast to 16 lanes. At the end they go to `out`, or, where `direct` is given and the
/// accumulators are f32, are finished into the output rows it names (then true).
macro_rules! tile_kernel {
    ($name:ident, $features:literal, $elem:ty, $zero:expr, $step:expr) => {
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const R: usize, const V: usize>(
            a: [*const u32; R],
            runs: &[(usize, usize)],
            b: *const u32,
            steps: usize,
            first: bool,
            out: &mut [[$elem; NV * LANES]; MR],
            direct: Option<&Direct<R>>,
        ) -> bool {
            let mut acc = [[$zero; V]; R];
            if !first {
                for r in 0..R {
                    for v in 0..V {
                        // SAFETY: 16 lanes at v·16 < 64 of row r < MR.
                        acc[r][v] = unsafe {
                            std::ptr::read_unaligned(out[r][v * LANES..].as_ptr().cast())
                        };
                    }
                }
            }
            let mut b = b;
            for &(offset, len) in runs {
                // SAFETY (all reads): inside the V panels and the rows' runs the caller sized.
                let a = a.map(|p| unsafe { p.add(offset) });
                for t in 0..len {
                    let mut w = [_mm512_setzero_si512(); V];
                    for (v, w) in w.iter_mut().enumerate() {
                        *w = unsafe { _mm512_loadu_si512(b.add((v * steps + t) * LANES).cast()) };
                    }
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_epi32(unsafe { *a[r].add(t) } as i32);
                        for v in 0..V {
                            acc[v] = $step(acc[v], x, w[v]);
                        }
                    }
                }
                b = unsafe { b.add(len * LANES) };
            }
            // SAFETY: `direct`'s rows are its builder's promise (see `Direct`).
            if let Some(d) = direct
                && unsafe { Finish::finish(acc, d) }
            {
                return true;
            }
            for r in 0..R {
                for v in 0..V {
                    // SAFETY: 16 lanes at v·16 < 64 of row r < MR.
                    unsafe {
                        std::ptr::write_unaligned(
                            out[r][v * LANES..].as_mut_ptr().cast(),
                            acc[r][v],
                        )
                    };
                }
            }
            false
        }
    };
}

/// Accumulators that can be finished into the output rows straight from the registers.
trait Finish: Sized {
    /// `d`'s rows `= [relu]([row +] acc [+ bias])` (the arithmetic of `super::add_row`, in its
    /// order), or false where these accumulators need rescaling first (int8).
    unsafe fn finish<const R: usize, const V: usize>(acc: [[Self; V]; R], d: &Direct<R>) -> bool;
}

impl Finish for __m512 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn finish<const R: usize, const V: usize>(acc: [[Self; V]; R], d: &Direct<R>) -> bool {
        let zero = _mm512_setzero_ps();
        // the sum plus the bias (none: the sum as it is, −0 included), plus the row
        let finish = |sum: __m512, bias: __m512, dst: __m512| {
            let mut x = if d.bias.is_some() {
                _mm512_add_ps(sum, bias)
            } else {
                sum
            };
            if d.accumulate {
                x = _mm512_add_ps(dst, x);
            }
            if d.relu {
                // below zero → 0; NaN and −0 stay (PyTorch's ReLU)
                let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, zero);
                x = _mm512_mask_mov_ps(x, neg, zero);
            }
            x
        };
        for (r, acc) in acc.iter().enumerate() {
            for (v, &sum) in acc.iter().enumerate() {
                let c = v * LANES;
                // SAFETY (loads and stores): lanes c .. c + 16, or those of them below `cols`,
                // lie within the `cols` values of the bias and of row r that `Direct`'s builder
                // vouched for. Whole vectors go unmasked (masked stores are slow on AMD cores).
                unsafe {
                    let row = d.rows[r].add(c);
                    if c + LANES <= d.cols {
                        let bias = d.bias.map_or(zero, |b| _mm512_loadu_ps(b.add(c)));
                        let dst = if d.accumulate {
                            _mm512_loadu_ps(row)
                        } else {
                            zero
                        };
                        _mm512_storeu_ps(row, finish(sum, bias, dst));
                    } else if c < d.cols {
                        let mask: __mmask16 = (1u16 << (d.cols - c)) - 1;
                        let bias = d
                            .bias
                            .map_or(zero, |b| _mm512_maskz_loadu_ps(mask, b.add(c)));
                        let dst = _mm512_maskz_loadu_ps(mask, row);
                        _mm512_mask_storeu_ps(row, mask, finish(sum, bias, dst));
                    }
                }
            }
        }
        true
    }
}

impl Finish for __m512i {
    unsafe fn finish<const R: usize, const V: usize>(_: [[Self; V]; R], _: &Direct<R>) -> bool {
        false
    }
}

tile_kernel!(fp32, "avx512f", f32, _mm512_setzero_ps(), |acc, x, w| {
    _mm512_fmadd_ps(_mm512_castsi512_ps(x), _mm512_castsi512_ps(w), acc)
});

tile_kernel!(
    bf16,
    "avx512f,avx512bf16",
    f32,
    _mm512_setzero_ps(),
    |acc, x, w| {
        // SAFETY: both are 512-bit vectors; bf16 pairs reinterpreted bit for bit
        let (x, w) = unsafe {
            (
                std::mem::transmute::<__m512i, __m512bh>(x),
                std::mem::transmute::<__m512i, __m512bh>(w),
            )
        };
        _mm512_dpbf16_ps(acc, x, w)
    }
);

tile_kernel!(
    int8,
    "avx512f,avx512vnni",
    i32,
    _mm512_setzero_si512(),
    |acc, x, w| _mm512_dpbusd_epi32(acc, x, w)
);
