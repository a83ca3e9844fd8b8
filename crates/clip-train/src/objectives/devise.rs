//! DeViSE (Frome et al. 2013) at caption scale: the image is regressed onto frozen word vectors of
//! its caption with a hinge rank loss, and a class is recognised by the cosine between the image's
//! projection and its name's vector.
//!
//! The word vectors are trained here on the caption corpus (no registry package ships GloVe or
//! word2vec vectors): positive pointwise mutual information of tokens co-occurring in a caption,
//! with context-distribution smoothing (α = 0.75), factorised by a truncated SVD — the count-based
//! form of skip-gram with negative sampling (Levy & Goldberg 2014; Levy, Goldberg & Dagan 2015),
//! word plus context vectors.
//! The SVD is randomised (Halko, Martinsson & Tropp 2011: a Gaussian sketch, two power iterations,
//! burn's QR and SVD on the small factors), since the full SVD of a vocabulary-sized matrix would
//! cost minutes for the few leading directions we keep.

use burn::prelude::*;
use burn::tensor::activation::relu;
use clip_data::rng::Rng;
use clip_model::source::to_vec;

/// One unit vector per vocabulary entry (`[vocab, dim]`, row-major; start and end are zero).
#[derive(Debug, Clone, PartialEq)]
pub struct WordVectors {
    pub dim: usize,
    pub data: Vec<f32>,
}

/// Standard normal draws from the project's generator (Box–Muller).
fn normals(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v) = (rng.unit().max(1e-12), rng.unit());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// PPMI of tokens co-occurring in the same caption, `[v, v]` over compact ids (`captions` hold
/// compact word ids).
pub fn ppmi(v: usize, captions: &[Vec<usize>]) -> Vec<f32> {
    // sparse counts: a caption of a few words touches few cells of the v × v matrix
    let mut counts: std::collections::HashMap<(usize, usize), f64> = Default::default();
    for c in captions {
        for (a, &i) in c.iter().enumerate() {
            for (b, &j) in c.iter().enumerate() {
                if a != b {
                    *counts.entry((i, j)).or_default() += 1.0;
                }
            }
        }
    }
    let mut out = vec![0f32; v * v];
    let total: f64 = counts.values().sum();
    if total == 0.0 {
        return out;
    }
    let (mut rows, mut cols) = (vec![0f64; v], vec![0f64; v]);
    for (&(i, j), &c) in &counts {
        rows[i] += c;
        cols[j] += c;
    }
    let smoothed: Vec<f64> = cols.iter().map(|c| c.powf(0.75)).collect();
    let smoothed_total: f64 = smoothed.iter().sum();
    for (&(i, j), &c) in &counts {
        let pmi = (c / total / (rows[i] / total * smoothed[j] / smoothed_total)).ln();
        out[i * v + j] = pmi.max(0.0) as f32;
    }
    out
}

impl WordVectors {
    /// Vectors of `dim` dimensions for a vocabulary of `v` entries from `captions` (compact ids).
    pub fn fit(v: usize, captions: &[Vec<usize>], dim: usize, seed: u64) -> WordVectors {
        let device = clip_model::cpu();
        let p = ppmi(v, captions);
        // a unit that never co-occurs (start, end, one-word captions only) gets no vector
        let empty: Vec<bool> = p.chunks(v).map(|r| r.iter().all(|&x| x == 0.0)).collect();
        let m = Tensor::<2>::from_data(TensorData::new(p, [v, v]), &device);
        let k = (dim + 16).min(v);
        let omega = Tensor::<2>::from_data(
            TensorData::new(normals(v * k, &mut Rng::new(seed ^ 0xDE71)), [v, k]),
            &device,
        );
        let orth = |t: Tensor<2>| burn::linalg::qr::<2>(t, true).0;
        let mut q = orth(m.clone().matmul(omega));
        for _ in 0..2 {
            let z = orth(m.clone().transpose().matmul(q));
            q = orth(m.clone().matmul(z));
        }
        let b = q.clone().transpose().matmul(m); // [k, v]
        let (ub, s, vt) = burn::linalg::svd::<2, 1>(b, 100);
        let u = q.matmul(ub); // [v, k]
        let (u, s, vt) = (to_vec(&u), to_vec(&s), to_vec(&vt));
        let cols = s.len();
        let d = dim.min(cols);
        let mut data = vec![0f32; v * dim];
        for i in (0..v).filter(|&i| !empty[i]) {
            let row = &mut data[i * dim..i * dim + d];
            // word + context vectors (Levy et al. 2015's "w + c"): for this symmetric matrix the
            // directions of negative eigenvalues, where U and V disagree in sign, cancel
            for (c, x) in row.iter_mut().enumerate() {
                *x = (u[i * cols + c] + vt[c * v + i]) * s[c].max(0.0).sqrt();
            }
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|x| *x /= norm);
            }
        }
        WordVectors { dim, data }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The unit mean of the vectors of `words` (zero when it has none or they cancel).
    pub fn target(&self, words: &[usize]) -> Vec<f32> {
        let mut t = vec![0f32; self.dim];
        for &w in words {
            for (x, y) in t.iter_mut().zip(self.row(w)) {
                *x += y;
            }
        }
        let norm = t.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            t.iter_mut().for_each(|x| *x /= norm);
        }
        t
    }

    /// Targets of a batch, `[B, dim]`.
    pub fn targets(&self, words: &[Vec<usize>], device: &Device) -> Tensor<2> {
        let flat: Vec<f32> = words.iter().flat_map(|w| self.target(w)).collect();
        Tensor::<2>::from_data(TensorData::new(flat, [words.len(), self.dim]), device)
    }
}

/// DeViSE's hinge rank loss with the other captions of the batch as the wrong labels:
/// `Σᵢ Σ_{j≠i} max(0, margin − vᵢ·tᵢ + vᵢ·tⱼ) / B` for unit image projections `v` and targets `t`.
pub fn hinge_rank_loss(v: Tensor<2>, t: Tensor<2>, margin: f64) -> Tensor<1> {
    let b = v.dims()[0];
    let s = v.matmul(t.transpose()); // [B, B]
    let eye = Tensor::<2>::eye(b, &s.device());
    let pos = (s.clone() * eye.clone()).sum_dim(1); // [B, 1]
    let off = eye.neg() + 1.0;
    (relu(s - pos + margin) * off).sum() * (1.0 / b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_put_co_occurring_words_together() {
        // two topics: words 2–4 appear together, words 5–7 appear together
        let mut caps = Vec::new();
        for i in 0..30 {
            caps.push(vec![2 + i % 3, 2 + (i + 1) % 3]);
            caps.push(vec![5 + i % 3, 5 + (i + 2) % 3]);
        }
        let wv = WordVectors::fit(8, &caps, 4, 0);
        let cos = |a: usize, b: usize| -> f32 {
            wv.row(a).iter().zip(wv.row(b)).map(|(x, y)| x * y).sum()
        };
        assert!(cos(2, 3) > 0.5, "{}", cos(2, 3));
        assert!(cos(5, 6) > 0.5, "{}", cos(5, 6));
        assert!(cos(2, 5).abs() < 0.3, "{}", cos(2, 5));
        assert!(wv.row(0).iter().all(|&x| x == 0.0), "start has no vector");
        let t = wv.target(&[2, 3]);
        assert!((t.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn ppmi_matches_its_formula() {
        let p = ppmi(3, &[vec![1, 2], vec![1, 2], vec![1, 1]]);
        // counts: (1,2) = 2, (2,1) = 2, (1,1) = 2; total 6
        let rows = [0.0f64, 4.0, 2.0];
        let cols = [0.0f64, 4.0f64.powf(0.75), 2.0f64.powf(0.75)];
        let ct: f64 = cols.iter().sum();
        let want =
            |i: usize, j: usize, c: f64| ((c / 6.0) / (rows[i] / 6.0 * cols[j] / ct)).ln().max(0.0);
        assert!((p[3 + 2] as f64 - want(1, 2, 2.0)).abs() < 1e-5);
        assert!((p[3 + 1] as f64 - want(1, 1, 2.0)).abs() < 1e-5);
        assert_eq!(p[0], 0.0);
    }

    #[test]
    fn hinge_rank_loss_matches_its_formula() {
        let device = clip_model::cpu();
        let v = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 0.6, 0.8], [2, 2]),
            &device,
        );
        let t = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 1.0, 1.0, 0.0], [2, 2]),
            &device,
        );
        // s = [[0, 1], [0.8, 0.6]]: row 0: max(0, 0.1 − 0 + 1) = 1.1; row 1: max(0, 0.1 − 0.6 + 0.8) = 0.3
        let l = to_vec(&hinge_rank_loss(v, t, 0.1))[0];
        assert!((l - (1.1 + 0.3) / 2.0).abs() < 1e-5, "{l}");
    }
}
