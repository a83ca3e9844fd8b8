//! Multi-head attention for CPU inference straight from the packed `[B, L, 3W]` projection: for
//! each (image or caption, head), `softmax(Q·Kᵀ/√d)·V` read in place through strides. The graph
//! path (burn's `narrow`, head split, fused attention op, head merge) copied Q, K and V into
//! head-major layout and the result back (issue 11's profile: 4–5% of ViT-B-32 in those copies);
//! here the only copy is writing each head's output into its columns of the `[B, L, W]` result.
//!
//! On AVX-512 CPUs (head widths of whole 16-lane vectors) a head runs in vector registers
//! (`avx512`): at CLIP's sizes (50 or 77 tokens, 64 dimensions) `gemm`'s packing and dispatch
//! cost more than the arithmetic (7–9% of ViT-B-32's pass at batch 16 for 0.5% of its FLOPs, on
//! an AMD EPYC). Elsewhere two `gemm` calls per head. Training (autodiff) and other devices keep
//! the graph path.

use rayon::prelude::*;

use crate::fastmath::exp;
use crate::linalg::matmul_into;

/// `qkv` is `[b, l, 3w]` (queries, keys, values side by side, `heads` heads each); returns
/// `[b, l, w]`, each head's output in its `w / heads` columns. `causal`: position `i` attends to
/// positions `≤ i` only.
pub fn attend(qkv: &[f32], b: usize, l: usize, w: usize, heads: usize, causal: bool) -> Vec<f32> {
    attend_with(crate::fastmath::kernel(), qkv, b, l, w, heads, causal)
}

/// [`attend`] by the code `kernel` names (`"avx512"` only where the CPU has it).
fn attend_with(
    kernel: &str,
    qkv: &[f32],
    b: usize,
    l: usize,
    w: usize,
    heads: usize,
    causal: bool,
) -> Vec<f32> {
    assert_eq!(qkv.len(), b * l * 3 * w, "qkv is not {b}×{l}×{}", 3 * w);
    assert!(
        heads > 0 && w.is_multiple_of(heads),
        "{heads} heads do not divide width {w}"
    );
    let hd = w / heads;
    let head = Head { l, hd, w, causal };
    let registers = cfg!(target_arch = "x86_64") && kernel == "avx512" && hd.is_multiple_of(16);
    // one [l, hd] block per (image, head), in that order
    let mut heads_out = vec![0f32; b * heads * l * hd];
    heads_out.par_chunks_mut(l * hd).enumerate().for_each_init(
        || {
            (
                vec![0f32; hd * l.next_multiple_of(16)],
                vec![0f32; l * l.next_multiple_of(16)],
            )
        },
        |(kt, scores), (task, out)| {
            let (bi, h) = (task / heads, task % heads);
            let x = &qkv[bi * l * 3 * w..][..l * 3 * w];
            #[cfg(target_arch = "x86_64")]
            if registers {
                // SAFETY: `kernel()` detected AVX-512F on this CPU; hd is whole vectors.
                return unsafe { avx512::head(x, h * hd, head, kt, scores, out) };
            }
            let _ = (registers, &kt);
            by_gemm(kernel, x, h * hd, head, scores, out);
        },
    );
    // heads side by side: out[bi, i, h·hd..] = head (bi, h) row i
    let mut out = vec![0f32; b * l * w];
    out.par_chunks_mut(l * w).enumerate().for_each(|(bi, img)| {
        for (i, dst) in img.chunks_mut(w).enumerate() {
            for h in 0..heads {
                let src = &heads_out[((bi * heads + h) * l + i) * hd..][..hd];
                dst[h * hd..(h + 1) * hd].copy_from_slice(src);
            }
        }
    });
    out
}

/// One head's sizes: `l` tokens, `hd` dimensions at some column of rows `3w` long.
#[derive(Clone, Copy)]
struct Head {
    l: usize,
    hd: usize,
    w: usize,
    causal: bool,
}

/// One head of one sequence by two `gemm` calls (the softmax by `kernel`'s code): `x` is its `[l, 3w]` rows, the head's queries
/// at column `c`, keys at `w + c`, values at `2w + c`; `scores` (l·l values at least) is work
/// space; `out` gets the head's `[l, hd]` output.
fn by_gemm(kernel: &str, x: &[f32], c: usize, head: Head, scores: &mut [f32], out: &mut [f32]) {
    let Head { l, hd, w, causal } = head;
    let row = 3 * w as isize;
    let (q, k, v) = (&x[c..], &x[w + c..], &x[2 * w + c..]);
    let scores = &mut scores[..l * l];
    // scores[i, j] = q_i · k_j: lhs Q (l × hd, rows 3w apart), rhs Kᵀ (hd × l)
    matmul_into(l, l, hd, scores, false, q, (1, row), k, (row, 1), false);
    softmax_rows(kernel, scores, l, l, 1.0 / (hd as f32).sqrt(), causal);
    // out = P · V: rhs V (l × hd, rows 3w apart)
    let p = (1, l as isize);
    matmul_into(l, hd, l, out, false, scores, p, v, (1, row), false);
}

/// `softmax(scale · s)` in place (max subtracted first, as PyTorch does). The maximum and the sum
/// are taken 16 lanes at a time and the exponentials in a loop of their own, so that all three
/// vectorise (a loop that also summed kept `exp` scalar).
#[inline(always)]
pub(crate) fn softmax_row(s: &mut [f32], scale: f32) {
    const LANES: usize = 16;
    let chunks = s.chunks_exact(LANES);
    let mut top = [f32::NEG_INFINITY; LANES];
    for (m, &v) in top.iter_mut().zip(chunks.remainder()) {
        *m = v;
    }
    for c in chunks {
        for (m, &v) in top.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = top.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * scale;
    for x in s.iter_mut() {
        *x = exp(*x * scale - max);
    }
    let chunks = s.chunks_exact(LANES);
    let mut sums = [0f32; LANES];
    for (t, &v) in sums.iter_mut().zip(chunks.remainder()) {
        *t = v;
    }
    for c in chunks {
        for (t, &v) in sums.iter_mut().zip(c) {
            *t += v;
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for x in s.iter_mut() {
        *x *= inv;
    }
}

/// A head in AVX-512 registers: the keys transposed once (`Kᵀ`, each dimension's row padded to
/// whole vectors with zeros), then two queries at a time scored against 64 keys at a time
/// (`s += q_d·Kᵀ[d]`, eight independent FMA chains), each row softmax'd, and two rows of weights
/// at a time summing the values (`o += p_j·v_j`, the head's dimensions in registers).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Head, softmax_rows};
    use std::arch::x86_64::*;

    /// See the module; `kt` holds hd·⌈l/16⌉·16 values and `scores` l·⌈l/16⌉·16 (work space).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn head(
        x: &[f32],
        c: usize,
        head: Head,
        kt: &mut [f32],
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY: the caller runs this on an AVX-512F CPU; the sizes asserted first keep every
        // pointer given to `two_rows` inside its slice (keys and values lie in `x`'s rows,
        // `c + hd ≤ w`; score rows hold `lp` values, output rows `hd`).
        unsafe {
            let Head { l, hd, w, causal } = head;
            let (row, lp) = (3 * w, l.next_multiple_of(16));
            assert!(kt.len() >= hd * lp && scores.len() >= l * lp && out.len() >= l * hd);
            assert!(hd.is_multiple_of(16) && x.len() >= l * row && c + hd <= w);
            let kt = &mut kt[..hd * lp];
            for (d, r) in kt.chunks_exact_mut(lp).enumerate() {
                r[l..].fill(0.0);
                for (j, v) in r[..l].iter_mut().enumerate() {
                    *v = x[j * row + w + c + d];
                }
            }
            let scores = &mut scores[..l * lp];
            let xp = x.as_ptr();
            // scores: rows i, i+1 × keys j0 .. j0 + 64 = Σ_d q_id · Kᵀ[d]
            for i in (0..l).step_by(2) {
                let two = i + 1 < l;
                let (qa, qb) = (xp.add(i * row + c), xp.add((i + two as usize) * row + c));
                for j0 in (0..lp).step_by(64) {
                    let s = scores.as_mut_ptr().add(i * lp + j0);
                    let to = (s, two.then(|| s.add(lp)));
                    two_rows((qa, qb), hd, kt.as_ptr().add(j0), lp, to, (lp - j0) / 16);
                }
            }
            softmax_rows("avx512", scores, l, lp, 1.0 / (hd as f32).sqrt(), causal);
            // output rows i, i+1, dimensions d0 .. d0 + 64 = Σ_j p_ij · v_j
            for i in (0..l).step_by(2) {
                let two = i + 1 < l;
                let p = scores.as_ptr().add(i * lp);
                let pb = if two { p.add(lp) } else { p };
                for d0 in (0..hd).step_by(64) {
                    let o = out.as_mut_ptr().add(i * hd + d0);
                    let to = (o, two.then(|| o.add(hd)));
                    two_rows((p, pb), l, xp.add(2 * w + c + d0), row, to, (hd - d0) / 16);
                }
            }
        }
    }

    /// `to.0[..16·V] = Σ_t a.0[t] · src[t·stride ..][..16·V]` and likewise `to.1` from `a.1` (when
    /// given), over `t < n`: two rows of weights summing the same `n` source rows, `V` =
    /// min(`vectors`, 4) vectors of 16 at a time in registers (eight FMA chains at 4).
    /// The scores (weights: two queries; rows: the transposed keys) and the output (weights:
    /// two rows of attention; rows: the values).
    #[target_feature(enable = "avx512f")]
    unsafe fn two_rows(
        a: (*const f32, *const f32),
        n: usize,
        src: *const f32,
        stride: usize,
        to: (*mut f32, Option<*mut f32>),
        vectors: usize,
    ) {
        // SAFETY: `head` checked the sizes its pointers are built from: each weight row holds `n`
        // values, each source row `16·V` from `src`, each output row `16·V`.
        unsafe {
            match vectors {
                1 => two_rows_of::<1>(a, n, src, stride, to),
                2 => two_rows_of::<2>(a, n, src, stride, to),
                3 => two_rows_of::<3>(a, n, src, stride, to),
                _ => two_rows_of::<4>(a, n, src, stride, to),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn two_rows_of<const V: usize>(
        (pa, pb): (*const f32, *const f32),
        n: usize,
        src: *const f32,
        stride: usize,
        to: (*mut f32, Option<*mut f32>),
    ) {
        // SAFETY: as `two_rows`.
        unsafe {
            let mut a = [_mm512_setzero_ps(); V];
            let mut b = [_mm512_setzero_ps(); V];
            for t in 0..n {
                let (x, y) = (_mm512_set1_ps(*pa.add(t)), _mm512_set1_ps(*pb.add(t)));
                let r = src.add(t * stride);
                for v in 0..V {
                    let w = _mm512_loadu_ps(r.add(16 * v));
                    a[v] = _mm512_fmadd_ps(x, w, a[v]);
                    b[v] = _mm512_fmadd_ps(y, w, b[v]);
                }
            }
            for v in 0..V {
                _mm512_storeu_ps(to.0.add(16 * v), a[v]);
                if let Some(o) = to.1 {
                    _mm512_storeu_ps(o.add(16 * v), b[v]);
                }
            }
        }
    }
}

multiversion!(
    // Each of the `l` score rows (`lp` apart) softmax'd in place over its live keys (`≤ i` when
    // `causal`), the rest zeroed: the weights of the padded and masked keys.
    fn softmax_rows(scores: &mut [f32], l: usize, lp: usize, scale: f32, causal: bool) {
        for (i, s) in scores.chunks_exact_mut(lp).enumerate().take(l) {
            let live = if causal { i + 1 } else { l };
            softmax_row(&mut s[..live], scale);
            s[live..].fill(0.0);
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention by its definition, in f64.
    fn naive(qkv: &[f32], b: usize, l: usize, w: usize, heads: usize, causal: bool) -> Vec<f64> {
        let hd = w / heads;
        let at = |bi: usize, i: usize, c: usize| qkv[(bi * l + i) * 3 * w + c] as f64;
        let mut out = vec![0f64; b * l * w];
        for bi in 0..b {
            for h in 0..heads {
                for i in 0..l {
                    let live = if causal { i + 1 } else { l };
                    let s: Vec<f64> = (0..live)
                        .map(|j| {
                            (0..hd)
                                .map(|d| at(bi, i, h * hd + d) * at(bi, j, w + h * hd + d))
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        out[(bi * l + i) * w + h * hd + d] = (0..live)
                            .map(|j| e[j] / z * at(bi, j, 2 * w + h * hd + d))
                            .sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_with_and_without_the_causal_mask() {
        // head widths of 4, 16, 64, 80 and 48 (whole vectors and not), token counts below,
        // at and above a vector (70: 64 keys, then 16), one token
        let cases = [
            (2, 7, 12, 3),
            (1, 50, 64, 4),
            (3, 1, 32, 2),
            (2, 50, 128, 2),
            (1, 70, 160, 2),
            (2, 9, 96, 2),
        ];
        // the registers' code where the CPU has it, and the gemm calls
        let kernels = ["baseline", crate::fastmath::kernel()];
        for ((b, l, w, heads), kernel) in cases.into_iter().flat_map(|c| kernels.map(|k| (c, k))) {
            let qkv: Vec<f32> = (0..b * l * 3 * w)
                .map(|i| ((i * 7919) % 997) as f32 / 250.0 - 2.0)
                .collect();
            for causal in [false, true] {
                let got = attend_with(kernel, &qkv, b, l, w, heads, causal);
                let want = naive(&qkv, b, l, w, heads, causal);
                let worst = got
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
                assert!(
                    worst < 2e-5,
                    "{kernel}: {b}×{l}×{w}, {heads} heads, causal {causal}: max |Δ| {worst}"
                );
            }
        }
    }
}
