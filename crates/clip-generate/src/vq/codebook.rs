//! The VQ-VAE's codebook: nearest-entry search, the EMA update with Laplace smoothing, dead-entry
//! restarts, and its file.

use std::path::Path;

use clip_data::rng::Rng;
use clip_model::source::RawTensor;
use clip_model::weights::{read_safetensors, write_safetensors};

use crate::{EvalError, invalid};

/// The codebook with its EMA statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    pub codes: usize,
    pub dim: usize,
    /// `[codes, dim]`
    pub embed: Vec<f32>,
    /// EMA of each entry's assignment count
    pub cluster_size: Vec<f32>,
    /// EMA of the sum of each entry's assigned vectors, `[codes, dim]`
    pub embed_sum: Vec<f32>,
}

/// EMA decay and Laplace smoothing of the codebook (the VQ-VAE paper's appendix values).
pub const DECAY: f32 = 0.99;
pub const EPS: f32 = 1e-5;
/// An entry whose EMA count (assignments per batch) falls below this is restarted (Jukebox
/// restarts below 1.0 at every step).
pub const DEAD_BELOW: f32 = 0.5;

impl Codebook {
    /// Entries drawn from `vectors` (`[n, dim]`, n ≥ 1), with counts of 1.
    pub fn from_vectors(codes: usize, dim: usize, vectors: &[f32], rng: &mut Rng) -> Codebook {
        let n = vectors.len() / dim.max(1);
        if n == 0 {
            return Codebook {
                codes,
                dim,
                embed: vec![0.0; codes * dim],
                cluster_size: vec![1.0; codes],
                embed_sum: vec![0.0; codes * dim],
            };
        }
        let mut embed = Vec::with_capacity(codes * dim);
        for _ in 0..codes {
            let i = rng.below(n);
            embed.extend_from_slice(&vectors[i * dim..(i + 1) * dim]);
        }
        Codebook {
            codes,
            dim,
            embed_sum: embed.clone(),
            embed,
            cluster_size: vec![1.0; codes],
        }
    }

    /// The nearest entry (squared Euclidean distance; the lower index on ties) of each row of
    /// `z` (`[n, dim]`).
    pub fn nearest(&self, z: &[f32]) -> Vec<u32> {
        let (n, d, k) = (z.len() / self.dim, self.dim, self.codes);
        let dots = clip_model::linalg::scores(z, n, d, &self.embed, &vec![0.0; k]); // [n, k]
        let norms: Vec<f32> = self
            .embed
            .chunks(d)
            .map(|e| e.iter().map(|v| v * v).sum())
            .collect();
        (0..n)
            .map(|i| {
                let row = &dots[i * k..(i + 1) * k];
                let mut best = (f32::INFINITY, 0u32);
                for (j, (&dot, &nn)) in row.iter().zip(&norms).enumerate() {
                    let dist = nn - 2.0 * dot;
                    if dist < best.0 {
                        best = (dist, j as u32);
                    }
                }
                best.1
            })
            .collect()
    }

    /// The entries of `codes`, `[n, dim]`.
    pub fn lookup(&self, codes: &[u32]) -> Vec<f32> {
        let d = self.dim;
        let mut out = Vec::with_capacity(codes.len() * d);
        for &c in codes {
            out.extend_from_slice(&self.embed[c as usize * d..(c as usize + 1) * d]);
        }
        out
    }

    /// The EMA update with the vectors `z` (`[n, dim]`) assigned to `codes`:
    /// `N_k ← γN_k + (1−γ)n_k`, `m_k ← γm_k + (1−γ)Σ_{i→k} z_i`, and
    /// `e_k = m_k / Ñ_k` with the Laplace-smoothed `Ñ_k = (N_k + ε) / (ΣN + Kε) · ΣN`.
    pub fn ema_update(&mut self, z: &[f32], codes: &[u32], decay: f32) {
        let d = self.dim;
        let mut counts = vec![0f32; self.codes];
        let mut sums = vec![0f32; self.codes * d];
        for (i, &c) in codes.iter().enumerate() {
            let c = c as usize;
            counts[c] += 1.0;
            for (s, v) in sums[c * d..(c + 1) * d]
                .iter_mut()
                .zip(&z[i * d..(i + 1) * d])
            {
                *s += v;
            }
        }
        for (n, c) in self.cluster_size.iter_mut().zip(&counts) {
            *n = decay * *n + (1.0 - decay) * c;
        }
        for (m, s) in self.embed_sum.iter_mut().zip(&sums) {
            *m = decay * *m + (1.0 - decay) * s;
        }
        let total: f32 = self.cluster_size.iter().sum();
        let k = self.codes as f32;
        for j in 0..self.codes {
            let smoothed = (self.cluster_size[j] + EPS) / (total + k * EPS) * total;
            for t in 0..d {
                self.embed[j * d + t] = self.embed_sum[j * d + t] / smoothed;
            }
        }
    }

    /// Restart every entry whose EMA count is below `below` at a random row of `z`; returns
    /// how many.
    pub fn restart_dead(&mut self, z: &[f32], below: f32, rng: &mut Rng) -> usize {
        let d = self.dim;
        let n = z.len() / d;
        let mut restarted = 0;
        for j in 0..self.codes {
            if self.cluster_size[j] < below && n > 0 {
                let i = rng.below(n);
                let v = &z[i * d..(i + 1) * d];
                self.embed[j * d..(j + 1) * d].copy_from_slice(v);
                self.embed_sum[j * d..(j + 1) * d].copy_from_slice(v);
                self.cluster_size[j] = 1.0;
                restarted += 1;
            }
        }
        restarted
    }

    fn tensors(&self) -> Vec<(String, RawTensor)> {
        vec![
            (
                "embed".into(),
                RawTensor::new(vec![self.codes, self.dim], self.embed.clone()),
            ),
            (
                "cluster_size".into(),
                RawTensor::new(vec![self.codes], self.cluster_size.clone()),
            ),
            (
                "embed_sum".into(),
                RawTensor::new(vec![self.codes, self.dim], self.embed_sum.clone()),
            ),
        ]
    }

    pub fn save(&self, path: &Path) -> Result<(), EvalError> {
        write_safetensors(path, &self.tensors()).map_err(|e| invalid(e.to_string()))
    }

    pub fn load(path: &Path, codes: usize, dim: usize) -> Result<Codebook, EvalError> {
        let t =
            read_safetensors(path).map_err(|e| invalid(format!("'{}': {e}", path.display())))?;
        let get = |k: &str, shape: Vec<usize>| -> Result<Vec<f32>, EvalError> {
            let r = t
                .get(k)
                .ok_or_else(|| invalid(format!("'{}' has no '{k}'", path.display())))?;
            if r.shape != shape {
                return Err(invalid(format!(
                    "'{}': '{k}' has shape {:?}; the settings say {shape:?}",
                    path.display(),
                    r.shape
                )));
            }
            Ok(r.data.clone())
        };
        Ok(Codebook {
            codes,
            dim,
            embed: get("embed", vec![codes, dim])?,
            cluster_size: get("cluster_size", vec![codes])?,
            embed_sum: get("embed_sum", vec![codes, dim])?,
        })
    }
}

/// Perplexity `exp(H)` of a code histogram (the number of equally used codes it equals).
pub fn perplexity(counts: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.ln()
        })
        .sum();
    h.exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_update_follows_its_formula() {
        // two entries in 2-d; three vectors, two to entry 0, none to entry 1
        let mut b = Codebook {
            codes: 2,
            dim: 2,
            embed: vec![0.0, 0.0, 5.0, 5.0],
            cluster_size: vec![2.0, 1.0],
            embed_sum: vec![1.0, 2.0, 5.0, 5.0],
        };
        let z = vec![1.0, 3.0, 3.0, 1.0, 9.0, 9.0];
        let codes = b.nearest(&z);
        assert_eq!(codes, vec![0, 0, 1]);
        let codes = vec![0, 0, 0];
        let g = 0.9f32;
        b.ema_update(&z, &codes, g);
        let n0 = g * 2.0 + (1.0 - g) * 3.0;
        let n1 = g * 1.0;
        assert!((b.cluster_size[0] - n0).abs() < 1e-6 && (b.cluster_size[1] - n1).abs() < 1e-6);
        let m0 = [g * 1.0 + 0.1 * 13.0, g * 2.0 + 0.1 * 13.0];
        let m1 = [g * 5.0, g * 5.0];
        assert!((b.embed_sum[0] - m0[0]).abs() < 1e-5 && (b.embed_sum[1] - m0[1]).abs() < 1e-5);
        let total = n0 + n1;
        let s0 = (n0 + EPS) / (total + 2.0 * EPS) * total;
        let s1 = (n1 + EPS) / (total + 2.0 * EPS) * total;
        let want = [m0[0] / s0, m0[1] / s0, m1[0] / s1, m1[1] / s1];
        for (a, w) in b.embed.iter().zip(want) {
            assert!((a - w).abs() < 1e-5, "{:?} vs {want:?}", b.embed);
        }
        // an entry whose count fell below the threshold restarts at an input vector
        let mut rng = Rng::new(1);
        assert_eq!(b.restart_dead(&z, 0.95, &mut rng), 1);
        let e1 = &b.embed[2..4];
        assert!(z.chunks(2).any(|v| v == e1));
        assert_eq!(b.cluster_size[1], 1.0);
    }

    #[test]
    fn perplexity_counts_equally_used_codes() {
        assert!((perplexity(&[5, 5, 5, 5, 0]) - 4.0).abs() < 1e-9);
        assert!((perplexity(&[7, 0]) - 1.0).abs() < 1e-9);
        assert_eq!(perplexity(&[0, 0]), 0.0);
    }
}
