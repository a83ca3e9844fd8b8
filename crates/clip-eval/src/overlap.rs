//! Data-overlap analysis (paper §5): each evaluation image's nearest training image by cosine
//! similarity of L2-normalised embeddings; a pair at or above a threshold is a near-duplicate. The
//! threshold is calibrated on known duplicates (augmented copies of evaluation images) against known
//! non-duplicates (nearest evaluation images of another class), maximising TPR − FPR. Accuracy is then
//! reported on All, Overlap and Clean subsets with All − Clean and a one-sided binomial test of the
//! Overlap accuracy against the Clean accuracy.

use std::path::Path;

use clip_data::dataset::EvalSet;
use clip_data::rng::{Rng, shuffle};
use clip_embed::{Embedder, Features};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::EvalError;
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
            clip_embed::linalg::matmul(
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

/// Overlap analysis of one evaluation set against training images.
#[derive(Debug, Clone)]
pub struct Overlap {
    pub calibration: Calibration,
    pub report: OverlapReport,
    /// (eval index, train index, similarity) at or above the threshold, most similar first
    pub pairs: Vec<(usize, usize, f32)>,
}

/// Known duplicates for calibration: up to `samples` evaluation images (seeded pick), each as an
/// `n×n` crop covering a random 60–100% of its short side; returns (picked indices, similarity of
/// each copy to its original's embedding).
fn augmented_copies(
    emb: &Embedder,
    set: &EvalSet,
    eval: &Features,
    samples: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<f32>), EvalError> {
    let mut rng = Rng::new(seed ^ 0x0D0B);
    let mut pick: Vec<usize> = (0..eval.len()).collect();
    shuffle(&mut pick, &mut rng);
    pick.truncate(samples.min(eval.len()));
    let n = emb.preprocess.size;
    let scales: Vec<f64> = pick.iter().map(|_| 0.6 + 0.4 * rng.unit()).collect();
    let seeds: Vec<u64> = pick.iter().map(|_| rng.next_u64()).collect();
    let mut positives = Vec::with_capacity(pick.len());
    let d = eval.dim;
    for ((chunk, sc), sd) in pick
        .chunks(emb.batch)
        .zip(scales.chunks(emb.batch))
        .zip(seeds.chunks(emb.batch))
    {
        let pixels: Vec<Vec<f32>> = chunk
            .par_iter()
            .zip(sc)
            .zip(sd)
            .map(|((&i, &s), &seed)| {
                let img = set
                    .load(i, emb.preprocess.alpha)
                    .map_err(EvalError::Invalid)?;
                let mut r = Rng::new(seed);
                let crop = clip_data::random_square_crop(&img, n, 1.0 / s, &mut r);
                Ok(emb.preprocess.normalize(&crop))
            })
            .collect::<Result<_, EvalError>>()?;
        let copies = emb.encode_pixels(pixels.concat(), chunk.len(), false);
        for (j, &i) in chunk.iter().enumerate() {
            let a = &copies[j * d..(j + 1) * d];
            positives.push(a.iter().zip(eval.row(i)).map(|(x, y)| x * y).sum::<f32>());
        }
    }
    Ok((pick, positives))
}

/// Calibrate the threshold (unless `threshold` is given), find each evaluation image's nearest
/// training image, and split accuracy (`correct`, per evaluation image) into All/Overlap/Clean.
#[allow(clippy::too_many_arguments)] // the protocol's inputs, each needed
pub fn evaluate(
    emb: &Embedder,
    train: &Features,
    eval_set: &EvalSet,
    eval: &Features,
    correct: &[bool],
    threshold: Option<f32>,
    samples: usize,
    seed: u64,
) -> Result<Overlap, EvalError> {
    if let Some(t) = threshold
        && !t.is_finite()
    {
        return Err(EvalError::Invalid(format!(
            "--threshold must be a number between -1 and 1 (a cosine similarity), got {t}"
        )));
    }
    let d = eval.dim;
    let (pick, positives) = augmented_copies(emb, eval_set, eval, samples, seed)?;
    // known non-duplicates: each sampled image's nearest evaluation image of another class
    let q = eval.subset(&pick);
    let labels = &eval.labels;
    let negatives: Vec<f32> = nearest(&q.data, &eval.data, d, |qi, j| {
        labels[j] == labels[pick[qi]]
    })
    .into_iter()
    .filter(|p| p.0 != usize::MAX)
    .map(|p| p.1)
    .collect();
    let mut calibration = calibrate(&positives, &negatives);
    if let Some(t) = threshold {
        let rate = |v: &[f32]| v.iter().filter(|&&s| s >= t).count() as f64 / v.len().max(1) as f64;
        calibration.threshold = t;
        calibration.true_positive_rate = rate(&positives);
        calibration.false_positive_rate = rate(&negatives);
    }
    let t = calibration.threshold;
    let nn = nearest(&eval.data, &train.data, d, |_, _| false);
    let is_dup: Vec<bool> = nn.iter().map(|p| p.0 != usize::MAX && p.1 >= t).collect();
    let mut pairs: Vec<(usize, usize, f32)> = nn
        .iter()
        .enumerate()
        .filter(|(i, _)| is_dup[*i])
        .map(|(i, p)| (i, p.0, p.1))
        .collect();
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(Overlap {
        calibration,
        report: subset_accuracy(correct, &is_dup),
        pairs,
    })
}

impl Overlap {
    /// `duplicates.csv`-style rows: evaluation image, training image, similarity.
    pub fn write_pairs(
        &self,
        path: &Path,
        eval: &EvalSet,
        train: &EvalSet,
    ) -> Result<(), EvalError> {
        let rows = self.pairs.iter().map(|(i, j, sim)| {
            vec![
                eval.images[*i].name(),
                train.images[*j].name(),
                format!("{sim:.5}"),
            ]
        });
        Ok(clip_data::out::write_csv(
            path,
            &["eval_image", "train_image", "similarity"],
            rows,
        )?)
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
