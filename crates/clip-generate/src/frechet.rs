//! The Fréchet distance between two Gaussians fitted to feature sets (the FID formula, Heusel et
//! al. 2017, here in a judge CLIP's feature space):
//! `‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2})`, with `tr (Σ₁Σ₂)^{1/2} = Σᵢ √λᵢ(Σ₁^{1/2} Σ₂ Σ₁^{1/2})`
//! (the product's eigenvalues equal those of a symmetric positive semi-definite matrix, so no
//! complex square root is needed where pytorch-fid's `scipy.linalg.sqrtm` takes the real part).
//!
//! The symmetric eigendecompositions are a cyclic Jacobi method in f64, hand-written because no
//! crate in our tree offers an f64 symmetric eigensolver (burn-linalg's SVD works in f32 on
//! tensors); the feature sizes here are at most a few hundred.

/// Mean and covariance (`[d, d]`, unbiased like `numpy.cov(rowvar=False)`) of `n` rows of `d`.
pub fn stats(x: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / d.max(1);
    let mut mu = vec![0f64; d];
    for r in x.chunks(d) {
        for (m, &v) in mu.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    mu.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut cov = vec![0f64; d * d];
    for r in x.chunks(d) {
        for i in 0..d {
            let a = r[i] as f64 - mu[i];
            for j in i..d {
                cov[i * d + j] += a * (r[j] as f64 - mu[j]);
            }
        }
    }
    let denom = (n as f64 - 1.0).max(1.0);
    for i in 0..d {
        for j in i..d {
            let v = cov[i * d + j] / denom;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }
    (mu, cov)
}

/// Eigenvalues and eigenvectors (columns of `v`, row-major `[d, d]`) of a symmetric matrix.
pub fn sym_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j] * a[i * d + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * norm.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0f64; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// The Fréchet distance between `(mu1, cov1)` and `(mu2, cov2)` in `d` dimensions.
pub fn distance(mu1: &[f64], cov1: &[f64], mu2: &[f64], cov2: &[f64], d: usize) -> f64 {
    let mean: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b).powi(2)).sum();
    let (l, v) = sym_eigen(cov1, d);
    // S = V √Λ Vᵀ
    let mut vs = v.clone();
    for i in 0..d {
        for j in 0..d {
            vs[i * d + j] *= l[j].max(0.0).sqrt();
        }
    }
    let vt: Vec<f64> = (0..d * d).map(|k| v[(k % d) * d + k / d]).collect();
    let s = matmul(&vs, &vt, d);
    let m = matmul(&matmul(&s, cov2, d), &s, d);
    let sym: Vec<f64> = (0..d * d)
        .map(|k| 0.5 * (m[k] + m[(k % d) * d + k / d]))
        .collect();
    let (lm, _) = sym_eigen(&sym, d);
    let tr_sqrt: f64 = lm.iter().map(|x| x.max(0.0).sqrt()).sum();
    let tr1: f64 = (0..d).map(|i| cov1[i * d + i]).sum();
    let tr2: f64 = (0..d).map(|i| cov2[i * d + i]).sum();
    mean + tr1 + tr2 - 2.0 * tr_sqrt
}

/// The Fréchet distance between two feature sets (rows of `d`).
pub fn between(a: &[f32], b: &[f32], d: usize) -> f64 {
    let (m1, c1) = stats(a, d);
    let (m2, c2) = stats(b, d);
    distance(&m1, &c1, &m2, &c2, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `testdata/generate/frechet.json` from `tools/gen_golden_frechet.py`: pytorch-fid's formula
    /// with `scipy.linalg.sqrtm`, on full-rank and rank-deficient feature sets.
    #[test]
    fn matches_scipy() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/generate/frechet.json"
        );
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rows = |v: &serde_json::Value| -> (Vec<f32>, usize) {
            let r = v.as_array().unwrap();
            let d = r[0].as_array().unwrap().len();
            (
                r.iter()
                    .flat_map(|x| {
                        x.as_array()
                            .unwrap()
                            .iter()
                            .map(|f| f.as_f64().unwrap() as f32)
                    })
                    .collect(),
                d,
            )
        };
        let cases = cases["cases"].as_array().unwrap();
        assert!(cases.len() >= 3);
        for c in cases {
            let (a, d) = rows(&c["a"]);
            let (b, _) = rows(&c["b"]);
            let got = between(&a, &b, d);
            let want = c["fd"].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{}: {got} vs scipy {want}",
                c["name"]
            );
        }
    }

    #[test]
    fn eigen_reconstructs_and_identical_sets_are_at_zero() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
        let (l, v) = sym_eigen(&a, 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|k| v[i * 3 + k] * l[k] * v[j * 3 + k]).sum();
                assert!((r - a[i * 3 + j]).abs() < 1e-12);
            }
        }
        let x: Vec<f32> = (0..40).map(|i| ((i * 37 % 11) as f32).sin()).collect();
        assert!(between(&x, &x, 4).abs() < 1e-9);
    }
}
