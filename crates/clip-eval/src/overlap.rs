//! Data-overlap analysis (paper §5): each evaluation image's nearest training image by cosine
//! similarity of L2-normalised embeddings; a pair at or above a threshold is a near-duplicate. The
//! threshold is calibrated on known duplicates (augmented copies of evaluation images) against known
//! non-duplicates (nearest evaluation images of another class), maximising TPR − FPR. Accuracy is then
//! reported on All, Overlap and Clean subsets with All − Clean and a one-sided binomial test of the
//! Overlap accuracy against the Clean accuracy.

use rayon::prelude::*;
use serde::Serialize;

use crate::metrics::binomial_p_at_least;

/// For each row of `query` (`[nq, d]`), the best row of `base` (`[nb, d]`) by dot product, skipping
/// pairs that `skip(query_row, base_row)` rejects. Returns (index, similarity); index `usize::MAX`
/// when every pair was skipped.
pub fn nearest(
    query: &[f32],
    base: &[f32],
    d: usize,
    skip: impl Fn(usize, usize) -> bool + Sync,
) -> Vec<(usize, f32)> {
    let nq = query.len() / d.max(1);
    let nb = base.len() / d.max(1);
    const BLOCK: usize = 512;
    let mut out = Vec::with_capacity(nq);
    let mut sims = vec![0f32; BLOCK * nb];
    for start in (0..nq).step_by(BLOCK) {
        let m = BLOCK.min(nq - start);
        if nb > 0 {
            crate::logreg::matmul(
                m,
                nb,
                d,
                &mut sims,
                &query[start * d..(start + m) * d],
                (1, d as isize),
                base,
                (d as isize, 1),
            );
        }
        let block: Vec<(usize, f32)> = sims[..m * nb.max(1)]
            .par_chunks(nb.max(1))
            .take(m)
            .enumerate()
            .map(|(r, row)| {
                let q = start + r;
                let mut best = (usize::MAX, f32::NEG_INFINITY);
                if nb > 0 {
                    for (j, &s) in row.iter().enumerate() {
                        if s > best.1 && !skip(q, j) {
                            best = (j, s);
                        }
                    }
                }
                best
            })
            .collect();
        out.extend(block);
    }
    out
}

/// The chosen threshold and how it separates the calibration pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Calibration {
    pub threshold: f32,
    /// fraction of known duplicates at or above the threshold
    pub true_positive_rate: f64,
    /// fraction of known non-duplicates at or above the threshold
    pub false_positive_rate: f64,
    pub positives: usize,
    pub negatives: usize,
}

/// Threshold maximising TPR − FPR over all candidate cut points (ties: the higher threshold).
pub fn calibrate(positives: &[f32], negatives: &[f32]) -> Calibration {
    let mut cands: Vec<f32> = positives.iter().chain(negatives).copied().collect();
    cands.sort_by(f32::total_cmp);
    cands.dedup();
    let rate = |v: &[f32], t: f32| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().filter(|&&s| s >= t).count() as f64 / v.len() as f64
        }
    };
    let mut best = Calibration {
        threshold: f32::INFINITY,
        true_positive_rate: 0.0,
        false_positive_rate: 0.0,
        positives: positives.len(),
        negatives: negatives.len(),
    };
    let mut best_j = f64::NEG_INFINITY;
    for &t in cands.iter().rev() {
        let (tpr, fpr) = (rate(positives, t), rate(negatives, t));
        if tpr - fpr > best_j + 1e-12 {
            best_j = tpr - fpr;
            best.threshold = t;
            best.true_positive_rate = tpr;
            best.false_positive_rate = fpr;
        }
    }
    best
}

/// Accuracy on the subsets of §5.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverlapReport {
    pub total: usize,
    pub overlap: usize,
    pub overlap_fraction: f64,
    pub acc_all: f64,
    pub acc_overlap: Option<f64>,
    pub acc_clean: Option<f64>,
    /// All − Clean: how much the overlap inflates the reported accuracy
    pub all_minus_clean: Option<f64>,
    /// P(≥ the Overlap subset's correct count) if it were as accurate as Clean (one-sided binomial)
    pub p_value: Option<f64>,
}

pub fn subset_accuracy(correct: &[bool], is_dup: &[bool]) -> OverlapReport {
    let total = correct.len();
    let count = |pick: &dyn Fn(usize) -> bool| {
        let idx: Vec<usize> = (0..total).filter(|&i| pick(i)).collect();
        let ok = idx.iter().filter(|&&i| correct[i]).count();
        (idx.len(), ok)
    };
    let (n_all, ok_all) = count(&|_| true);
    let (n_dup, ok_dup) = count(&|i| is_dup[i]);
    let (n_clean, ok_clean) = count(&|i| !is_dup[i]);
    let frac = |ok: usize, n: usize| (n > 0).then(|| ok as f64 / n as f64);
    let acc_all = frac(ok_all, n_all).unwrap_or(0.0);
    let acc_clean = frac(ok_clean, n_clean);
    OverlapReport {
        total,
        overlap: n_dup,
        overlap_fraction: if total > 0 {
            n_dup as f64 / total as f64
        } else {
            0.0
        },
        acc_all,
        acc_overlap: frac(ok_dup, n_dup),
        acc_clean,
        all_minus_clean: acc_clean.map(|c| acc_all - c),
        p_value: acc_clean
            .filter(|_| n_dup > 0)
            .map(|c| binomial_p_at_least(ok_dup as u64, n_dup as u64, c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_skips_and_calibration_separates() {
        let base = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let q = [0.8, 0.6, 0.0, 1.0];
        let nn = nearest(&q, &base, 2, |_, _| false);
        assert_eq!(nn[0].0, 2);
        assert_eq!(nn[1].0, 1);
        let nn = nearest(&q, &base, 2, |_, j| j == 1);
        assert_eq!(nn[1].0, 2);
        let c = calibrate(&[0.99, 0.97, 0.95], &[0.5, 0.7, 0.96]);
        assert_eq!(c.threshold, 0.97);
        assert!((c.true_positive_rate - 2.0 / 3.0).abs() < 1e-12 && c.false_positive_rate == 0.0);
        let r = subset_accuracy(&[true, true, false, true], &[true, false, false, false]);
        assert_eq!(r.overlap, 1);
        assert_eq!(r.acc_overlap, Some(1.0));
        assert!((r.all_minus_clean.unwrap() - (0.75 - 2.0 / 3.0)).abs() < 1e-12);
    }
}
