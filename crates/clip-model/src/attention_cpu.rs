//! Multi-head attention for CPU inference straight from the packed `[B, L, 3W]` projection: for
//! each (image or caption, head), `softmax(Q·Kᵀ/√d)·V` as two `gemm` calls that read Q, K and V in
//! place through strides, and a vectorised softmax between them. The graph path (burn's `narrow`,
//! head split, fused attention op, head merge) copied Q, K and V into head-major layout and the
//! result back (issue 11's profile: 4–5% of ViT-B-32 in those copies); here the only copy is
//! writing each head's output into its columns of the `[B, L, W]` result. Training (autodiff)
//! and other devices keep the graph path.

use rayon::prelude::*;

use crate::fastmath::exp;
use crate::linalg::matmul_into;

/// `qkv` is `[b, l, 3w]` (queries, keys, values side by side, `heads` heads each); returns
/// `[b, l, w]`, each head's output in its `w / heads` columns. `causal`: position `i` attends to
/// positions `≤ i` only.
pub fn attend(qkv: &[f32], b: usize, l: usize, w: usize, heads: usize, causal: bool) -> Vec<f32> {
    assert_eq!(qkv.len(), b * l * 3 * w, "qkv is not {b}×{l}×{}", 3 * w);
    assert!(
        heads > 0 && w.is_multiple_of(heads),
        "{heads} heads do not divide width {w}"
    );
    let hd = w / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let row = 3 * w as isize;
    // one [l, hd] block per (image, head), in that order
    let mut heads_out = vec![0f32; b * heads * l * hd];
    heads_out
        .par_chunks_mut(l * hd)
        .enumerate()
        .for_each(|(task, out)| {
            let (bi, h) = (task / heads, task % heads);
            let base = bi * l * 3 * w + h * hd;
            let (q, k, v) = (&qkv[base..], &qkv[base + w..], &qkv[base + 2 * w..]);
            let mut scores = vec![0f32; l * l];
            // scores[i, j] = q_i · k_j: lhs Q (l × hd, rows 3w apart), rhs Kᵀ (hd × l)
            matmul_into(
                l,
                l,
                hd,
                &mut scores,
                false,
                q,
                (1, row),
                k,
                (row, 1),
                false,
            );
            for (i, s) in scores.chunks_mut(l).enumerate() {
                let live = if causal { i + 1 } else { l };
                softmax_row(&mut s[..live], scale);
                s[live..].fill(0.0);
            }
            // out = P · V: rhs V (l × hd, rows 3w apart)
            matmul_into(
                l,
                hd,
                l,
                out,
                false,
                &scores,
                (1, l as isize),
                v,
                (1, row),
                false,
            );
        });
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

/// `softmax(scale · s)` in place (max subtracted first, as PyTorch does).
fn softmax_row(s: &mut [f32], scale: f32) {
    let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
    let mut sum = 0f32;
    for x in s.iter_mut() {
        *x = exp(*x * scale - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in s.iter_mut() {
        *x *= inv;
    }
}

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
        for (b, l, w, heads) in [(2, 7, 12, 3), (1, 50, 64, 4), (3, 1, 8, 2)] {
            let qkv: Vec<f32> = (0..b * l * 3 * w)
                .map(|i| ((i * 7919) % 997) as f32 / 250.0 - 2.0)
                .collect();
            for causal in [false, true] {
                let got = attend(&qkv, b, l, w, heads, causal);
                let want = naive(&qkv, b, l, w, heads, causal);
                let worst = got
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
                assert!(
                    worst < 2e-5,
                    "{b}×{l}×{w}, {heads} heads, causal {causal}: max |Δ| {worst}"
                );
            }
        }
    }
}
