//! The attention pool that ends a ModifiedResNet, for CPU inference, with its key and value
//! projections moved to the other side of the sums they feed. CLIP's pool has a single query per
//! image (the mean token), so for head `h` with query `q_h` (scaled by `1/√d`) over the tokens
//! `x_j` (the mean and the grid, positional embedding added):
//!
//! - score: `q_h·(W_kh x_j + b_kh) = x_j·(W_khᵀ q_h) + q_h·b_kh`, and the last term, the same for
//!   every token, drops out of the softmax;
//! - output: `Σ_j a_j (W_vh x_j + b_vh) = W_vh (Σ_j a_j x_j) + b_vh`, as the weights sum to 1.
//!
//! Projecting all `L = HW + 1` tokens by `W_k` and `W_v` took `2·L·C²` multiply-adds per image
//! (0.84 GFLOP in RN50, 7% of the tower, 37 ms of a 470 ms pass at batch 16 on an AMD EPYC); here
//! the query goes through `W_kᵀ` and the pooled tokens through `W_v`, one row per head each
//! (`2·C²`), plus the scores and the pooling (`2·L·C·heads`): 25 times fewer. The function is
//! PyTorch's; the sums are taken in another order, so the outputs agree to f32 rounding, not
//! bit for bit (the folded tower's tests hold them to the graph's).
//!
//! Hand-written for the same reason as the convolutions around it: no crate runs a pooling head
//! from folded weights; the products are [`PackedLinear`]'s and `gemm`'s.

use rayon::prelude::*;

use super::bias_rows;
use crate::attention_cpu::softmax_row;
use crate::linalg::matmul_into;
use crate::lowp::{Epilogue, PackedLinear, Precision};
use crate::resnet::AttentionPool2d;
use crate::source::to_vec;
use crate::transformer::Linear;

/// `y = x·W + b` over rows of `x`: packed where [`crate::lowp::packs`] says so, else f32
/// through `gemm`.
#[derive(Debug)]
pub(super) struct Dense {
    k: usize,
    n: usize,
    /// `[k][n]` (empty when `packed` holds it)
    weight: Vec<f32>,
    /// `n` values, or none
    bias: Vec<f32>,
    packed: Option<PackedLinear>,
}

impl Dense {
    /// `weight` `[k][n]`, `bias` empty or of `n` values, kept in `precision`.
    pub(super) fn new(
        weight: Vec<f32>,
        k: usize,
        n: usize,
        bias: Vec<f32>,
        precision: Precision,
    ) -> Dense {
        let packed = crate::lowp::packs(precision).then(|| {
            let b = (!bias.is_empty()).then_some(&bias[..]);
            PackedLinear::new(&weight, k, n, b, precision)
        });
        Dense {
            k,
            n,
            weight: if packed.is_some() { Vec::new() } else { weight },
            bias,
            packed,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        (self.weight.len() + self.bias.len()) * 4 + self.packed.as_ref().map_or(0, |p| p.bytes())
    }

    /// `out[m×n] = x·W [+ b]`, the rows of `x` `ld` values apart; `parallel` on rayon's threads,
    /// else on the caller's alone (where the caller already splits the work).
    pub(super) fn apply(&self, m: usize, x: &[f32], ld: usize, out: &mut [f32], parallel: bool) {
        let (k, n) = (self.k, self.n);
        match &self.packed {
            // (the packed product splits its own work; nested in a parallel loop, rayon lends
            // it the idle threads)
            Some(p) => p.matmul_into(m, x, ld, out, Epilogue::BIAS),
            None => {
                // the bias first (where there is one), the product added onto it, as the
                // convolutions do
                let out = &mut out[..m * n];
                bias_rows(out, &self.bias, false);
                let (lhs, rhs) = ((1, ld as isize), (1, n as isize));
                let onto_bias = !self.bias.is_empty();
                matmul_into(m, n, k, out, onto_bias, x, lhs, &self.weight, rhs, parallel);
            }
        }
    }
}

/// A ModifiedResNet's attention pool, its projections split by head where the rearrangement
/// above needs them.
#[derive(Debug)]
pub(super) struct Pool {
    heads: usize,
    /// the tokens' width `C`
    width: usize,
    /// `[L][C]`
    positional: Vec<f32>,
    /// `C → C`, with bias
    q: Dense,
    /// per head `h`: `W_khᵀ`, `C/heads → C` (no bias: it drops out of the softmax)
    keys: Vec<Dense>,
    /// per head `h`: `W_vh`, `C → C/heads`, with `b_vh`
    values: Vec<Dense>,
    /// `C → E`, with bias
    c: Dense,
}

impl Pool {
    /// `a`'s weights in `precision`; `None` when its projections were already emptied or packed.
    pub(super) fn new(a: &AttentionPool2d, precision: Precision) -> Option<Pool> {
        let weight = |l: &Linear| {
            let [k, n] = l.weight.dims();
            (k > 0 && l.packed.is_none()).then(|| (to_vec(&l.weight.val()), k, n))
        };
        let bias = |l: &Linear| l.bias.as_ref().map_or(Vec::new(), |b| to_vec(&b.val()));
        let (heads, pe) = (a.heads, a.positional_embedding.val());
        let (wq, width, _) = weight(&a.q_proj)?;
        let (wk, wv, (wc, _, out)) = (
            weight(&a.k_proj)?.0,
            weight(&a.v_proj)?.0,
            weight(&a.c_proj)?,
        );
        let hd = width / heads;
        let bv = bias(&a.v_proj);
        if heads == 0 || hd * heads != width || pe.dims()[1] != width {
            return None;
        }
        // W_khᵀ[d][i] = W_k[i][h·d₀ + d]; W_vh[i][d] = W_v[i][h·d₀ + d]
        let keys = (0..heads)
            .map(|h| {
                let w = (0..hd)
                    .flat_map(|d| (0..width).map(move |i| (i, d)))
                    .map(|(i, d)| wk[i * width + h * hd + d])
                    .collect();
                Dense::new(w, hd, width, Vec::new(), precision)
            })
            .collect();
        let values = (0..heads)
            .map(|h| {
                let w = (0..width)
                    .flat_map(|i| wv[i * width + h * hd..][..hd].iter().copied())
                    .collect();
                let b = bv.get(h * hd..(h + 1) * hd).unwrap_or_default().to_vec();
                Dense::new(w, width, hd, b, precision)
            })
            .collect();
        Some(Pool {
            heads,
            width,
            positional: to_vec(&pe),
            q: Dense::new(wq, width, width, bias(&a.q_proj), precision),
            keys,
            values,
            c: Dense::new(wc, width, out, bias(&a.c_proj), precision),
        })
    }

    pub(super) fn bytes(&self) -> usize {
        let parts = self
            .keys
            .iter()
            .chain(&self.values)
            .chain([&self.q, &self.c]);
        self.positional.len() * 4 + parts.map(Dense::bytes).sum::<usize>()
    }

    /// Tokens this pool was built for (the grid's pixels and the mean).
    pub(super) fn tokens(&self) -> usize {
        self.positional.len() / self.width
    }

    /// `n` images' grids (`[n][HW][C]`, channels last, `HW + 1` = [`Pool::tokens`]) →
    /// `[n][E]`, as [`AttentionPool2d::forward_tokens`].
    pub(super) fn forward(&self, n: usize, grid: &[f32]) -> Vec<f32> {
        let (c, heads, l) = (self.width, self.heads, self.tokens());
        let (hd, hw) = (c / heads, l - 1);
        assert_eq!(grid.len(), n * hw * c, "the grid is not {n}×{hw}×{c}");
        // tokens: the grid's mean, then the grid, plus the positional embedding
        let mut t = vec![0f32; n * l * c];
        t.par_chunks_mut(l * c)
            .zip(grid.par_chunks(hw * c))
            .for_each(|(t, grid)| {
                let (mean, rest) = t.split_at_mut(c);
                for px in grid.chunks_exact(c) {
                    for (m, v) in mean.iter_mut().zip(px) {
                        *m += v;
                    }
                }
                for m in mean.iter_mut() {
                    *m /= hw as f32;
                }
                rest.copy_from_slice(grid);
                for (v, p) in t.iter_mut().zip(&self.positional) {
                    *v += p;
                }
            });
        // the queries, from the mean tokens, scaled as the attention scales its scores
        let mut q = vec![0f32; n * c];
        self.q.apply(n, &t, l * c, &mut q, true);
        let scale = 1.0 / (hd as f32).sqrt();
        q.iter_mut().for_each(|v| *v *= scale);
        // u[h][b] = W_khᵀ q_bh: what each token is scored against
        let mut u = vec![0f32; heads * n * c];
        u.par_chunks_mut(n * c)
            .enumerate()
            .for_each(|(h, u)| self.keys[h].apply(n, &q[h * hd..], c, u, false));
        // per image: scores [heads × L] = u_b · t_bᵀ, softmax over the tokens, then the pooled
        // tokens [heads × C] = a · t_b
        let mut pooled = vec![0f32; n * heads * c];
        pooled
            .par_chunks_mut(heads * c)
            .enumerate()
            .for_each(|(b, pooled)| {
                let tb = &t[b * l * c..][..l * c];
                let mut a = vec![0f32; heads * l];
                let (u_rows, t_cols) = ((1, (n * c) as isize), (c as isize, 1));
                matmul_into(
                    heads,
                    l,
                    c,
                    &mut a,
                    false,
                    &u[b * c..],
                    u_rows,
                    tb,
                    t_cols,
                    false,
                );
                // (the queries were scaled already)
                a.chunks_exact_mut(l).for_each(|row| softmax_row(row, 1.0));
                let rows = (1, c as isize);
                matmul_into(
                    heads,
                    c,
                    l,
                    pooled,
                    false,
                    &a,
                    (1, l as isize),
                    tb,
                    rows,
                    false,
                );
            });
        // o[b][h] = W_vh pooled_bh + b_vh, the heads side by side
        let per_head: Vec<Vec<f32>> = (0..heads)
            .into_par_iter()
            .map(|h| {
                let mut y = vec![0f32; n * hd];
                self.values[h].apply(n, &pooled[h * c..], heads * c, &mut y, false);
                y
            })
            .collect();
        let mut o = vec![0f32; n * c];
        for (h, y) in per_head.iter().enumerate() {
            for (b, row) in y.chunks_exact(hd).enumerate() {
                o[b * c + h * hd..][..hd].copy_from_slice(row);
            }
        }
        let mut out = vec![0f32; n * self.c.n];
        self.c.apply(n, &o, c, &mut out, true);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `gemm` path (CPUs where f32 is not packed) gives what the packed one does, with and
    /// without a bias, on rows read `ld` apart.
    #[test]
    fn unpacked_products_match_the_packed_ones() {
        let (m, k, n, ld) = (5, 37, 70, 40);
        let value = |i: usize, s: usize| ((i * 7919 + s) % 1000) as f32 / 500.0 - 1.0;
        let x: Vec<f32> = (0..m * ld).map(|i| value(i, 1)).collect();
        let weight: Vec<f32> = (0..k * n).map(|i| value(i, 2)).collect();
        for bias in [Vec::new(), (0..n).map(|i| value(i, 3)).collect()] {
            let gemm = Dense {
                k,
                n,
                weight: weight.clone(),
                bias: bias.clone(),
                packed: None,
            };
            // packed where the CPU packs f32 (else a second `gemm` product)
            let packed = Dense::new(weight.clone(), k, n, bias.clone(), Precision::F32);
            assert_eq!(packed.packed.is_some(), crate::lowp::packs(Precision::F32));
            let (mut a, mut b) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            gemm.apply(m, &x, ld, &mut a, true);
            packed.apply(m, &x, ld, &mut b, false);
            let worst = a
                .iter()
                .zip(&b)
                .fold(0f32, |w, (p, q)| w.max((p - q).abs()));
            assert!(worst < 1e-5, "bias {}: max |Δ| {worst}", bias.len());
        }
    }
}
