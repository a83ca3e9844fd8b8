//! The AVX2+FMA tiles of [`super`], for CPUs without AVX-512 (and for bf16 and int8 on AVX-512
//! CPUs without BF16 or VNNI): the same sums as the portable loop, in its order.

use super::{LANES, MR, NV};
use std::arch::x86_64::*;

/// The f32 tile with 256-bit vectors, for CPUs without AVX-512: one panel at a time, its 16
/// columns as two vectors per row (R ≤ 6 rows: 12 accumulators, 2 weight vectors and a
/// broadcast in the 16 registers — the 6×16 shape of BLIS's Haswell kernel), the rows read
/// again per panel (6 rows × up to 1,024 steps, 24 KiB, stay in L1). Per lane the same FMAs in
/// the same order as the AVX-512 and portable kernels, so the same bits. Arguments as
/// `avx512::fp32`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn fp32<const R: usize, const V: usize>(
    a: [*const u32; R],
    runs: &[(usize, usize)],
    b: *const u32,
    steps: usize,
    first: bool,
    out: &mut [[f32; NV * LANES]; MR],
) {
    for v in 0..V {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if !first {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (h, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: 8 lanes at v·16 + 8h < 64 of row r < MR.
                    *acc = unsafe { _mm256_loadu_ps(out[r][v * LANES + 8 * h..].as_ptr()) };
                }
            }
        }
        // SAFETY (all reads): inside the V panels and R rows the caller sized.
        let mut panel = unsafe { b.add(v * steps * LANES).cast::<f32>() };
        for &(offset, len) in runs {
            let a = a.map(|p| unsafe { p.add(offset) });
            for t in 0..len {
                let (w0, w1) = unsafe {
                    (
                        _mm256_loadu_ps(panel.add(t * LANES)),
                        _mm256_loadu_ps(panel.add(t * LANES + 8)),
                    )
                };
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_ps(f32::from_bits(unsafe { *a[r].add(t) }));
                    acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
                }
            }
            panel = unsafe { panel.add(len * LANES) };
        }
        for (r, acc) in acc.iter().enumerate() {
            for (h, acc) in acc.iter().enumerate() {
                // SAFETY: 8 lanes at v·16 + 8h < 64 of row r < MR.
                unsafe { _mm256_storeu_ps(out[r][v * LANES + 8 * h..].as_mut_ptr(), *acc) };
            }
        }
    }
}

/// [`super::bf16_pair`] per lane with 256-bit vectors: each word's high bf16 (`w & 0xffff0000`
/// as f32) and then its low one (`w << 16`), multiplied and added with one rounding (the product
/// of two bf16 values is exact in f32, so this is the portable loop's multiply-then-add except
/// where a product overflows f32 or falls below its normal range). 8 columns at a time: R accumulators, the
/// weight's two halves and the row's two halves in the 16 registers.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn bf16<const R: usize, const V: usize>(
    a: [*const u32; R],
    runs: &[(usize, usize)],
    b: *const u32,
    steps: usize,
    first: bool,
    out: &mut [[f32; NV * LANES]; MR],
) {
    let high = _mm256_set1_epi32(0xffff_0000_u32 as i32);
    for v in 0..V {
        for h in 0..2 {
            let col = v * LANES + 8 * h;
            let mut acc = [_mm256_setzero_ps(); R];
            if !first {
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: 8 lanes at col < 64 of row r < MR.
                    *acc = unsafe { _mm256_loadu_ps(out[r][col..].as_ptr()) };
                }
            }
            // SAFETY (all reads): inside the V panels and R rows the caller sized.
            let mut panel = unsafe { b.add(v * steps * LANES + 8 * h) };
            for &(offset, len) in runs {
                let a = a.map(|p| unsafe { p.add(offset) });
                for t in 0..len {
                    let w = unsafe { _mm256_loadu_si256(panel.add(t * LANES).cast()) };
                    let wh = _mm256_castsi256_ps(_mm256_and_si256(w, high));
                    let wl = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_set1_epi32(unsafe { *a[r].add(t) } as i32);
                        let xh = _mm256_castsi256_ps(_mm256_and_si256(x, high));
                        let xl = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(x));
                        *acc = _mm256_fmadd_ps(xl, wl, _mm256_fmadd_ps(xh, wh, *acc));
                    }
                }
                panel = unsafe { panel.add(len * LANES) };
            }
            for (r, acc) in acc.iter().enumerate() {
                // SAFETY: 8 lanes at col < 64 of row r < MR.
                unsafe { _mm256_storeu_ps(out[r][col..].as_mut_ptr(), *acc) };
            }
        }
    }
}

/// [`super::u8_i8_quad`] per lane, exactly, with 256-bit vectors and no saturating step
/// (`vpmaddubsw` would saturate pairs of u8 × i8 products at ±32,767): bytes widened to i16,
/// `vpmaddwd` sums pairs into i32, and each column's two pair sums meet at the end. 8 columns
/// at a time: 2R accumulators (columns 0–3 and 4–7, two lanes each), the weight's two widened
/// halves and the row's widened word in the 16 registers.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn int8<const R: usize, const V: usize>(
    a: [*const u32; R],
    runs: &[(usize, usize)],
    b: *const u32,
    steps: usize,
    first: bool,
    out: &mut [[i32; NV * LANES]; MR],
) {
    for v in 0..V {
        for h in 0..2 {
            let col = v * LANES + 8 * h;
            // lanes (column j, first pair), (j, second pair) for j in 0..4, then 4..8; a
            // resumed tile's sums enter the first lane of each column
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            if !first {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (half, acc) in acc.iter_mut().enumerate() {
                        let mut lanes = [0i32; 8];
                        for j in 0..4 {
                            lanes[2 * j] = out[r][col + 4 * half + j];
                        }
                        // SAFETY: 8 values.
                        *acc = unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) };
                    }
                }
            }
            // SAFETY (all reads): inside the V panels and R rows the caller sized.
            let mut panel = unsafe { b.add(v * steps * LANES + 8 * h) };
            for &(offset, len) in runs {
                let a = a.map(|p| unsafe { p.add(offset) });
                for t in 0..len {
                    let w = unsafe { _mm256_loadu_si256(panel.add(t * LANES).cast()) };
                    let w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w));
                    let w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(w));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let word = unsafe { *a[r].add(t) } as i32;
                        let x = _mm256_cvtepu8_epi16(_mm_set1_epi32(word));
                        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(x, w0));
                        acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(x, w1));
                    }
                }
                panel = unsafe { panel.add(len * LANES) };
            }
            for (r, acc) in acc.iter().enumerate() {
                // [c0 c1 c4 c5 | c2 c3 c6 c7] → columns in order
                let sums = _mm256_hadd_epi32(acc[0], acc[1]);
                let sums = _mm256_permute4x64_epi64::<0b11_01_10_00>(sums);
                // SAFETY: 8 lanes at col < 64 of row r < MR.
                unsafe { _mm256_storeu_si256(out[r][col..].as_mut_ptr().cast(), sums) };
            }
        }
    }
}
