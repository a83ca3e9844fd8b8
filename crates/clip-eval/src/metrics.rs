//! Classification and retrieval metrics, defined as the references compute them:
//! top-k by rank (classes scoring strictly higher than the true class), the confusion matrix and
//! mean per-class recall as scikit-learn's `confusion_matrix` / `balanced_accuracy_score`, retrieval
//! recall@K as CLIP_benchmark's `zeroshot_retrieval` (an image→text hit is any of the image's captions
//! in the top K; every caption is its own text→image query), effective robustness as a linear fit in
//! logit space (Taori et al. 2020, the paper's Figure 13), and a one-sided binomial test (§5).

use serde::Serialize;

pub use clip_embed::zeroshot::{ranks, top_k};

/// `[true class][predicted class]` counts.
pub fn confusion(pred: &[usize], truth: &[usize], classes: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; classes]; classes];
    for (&p, &t) in pred.iter().zip(truth) {
        m[t][p] += 1;
    }
    m
}

/// Recall of each class (`None` for classes without samples).
pub fn per_class_recall(confusion: &[Vec<u64>]) -> Vec<Option<f64>> {
    confusion
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let total: u64 = row.iter().sum();
            (total > 0).then(|| row[i] as f64 / total as f64)
        })
        .collect()
}

/// Mean recall over the classes that have samples (scikit-learn's balanced accuracy).
pub fn mean_per_class_recall(confusion: &[Vec<u64>]) -> f64 {
    let r: Vec<f64> = per_class_recall(confusion).into_iter().flatten().collect();
    if r.is_empty() {
        0.0
    } else {
        r.iter().sum::<f64>() / r.len() as f64
    }
}

/// Recall@K in both directions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalRecall {
    pub k: usize,
    /// image→text: an image is a hit if any of its captions is among its top K texts
    pub image_to_text: f64,
    /// text→image: a caption is a hit if its image is among its top K images
    pub text_to_image: f64,
}

/// Retrieval recall for `scores` `[texts, images]` (row-major) where text `t` belongs to image
/// `text_image[t]`.
pub fn retrieval_recall(
    scores: &[f32],
    images: usize,
    text_image: &[usize],
    ks: &[usize],
) -> Vec<RetrievalRecall> {
    let texts = text_image.len();
    assert_eq!(scores.len(), texts * images);
    // text→image: rank of the right image among all images for each caption
    let t2i: Vec<usize> = (0..texts)
        .map(|t| {
            let row = &scores[t * images..(t + 1) * images];
            let own = row[text_image[t]];
            row.iter().filter(|&&s| s > own).count()
        })
        .collect();
    // image→text: best rank among the image's captions, ranking all captions by score to the image
    let mut i2t = vec![usize::MAX; images];
    for (t, &img) in text_image.iter().enumerate() {
        let own = scores[t * images + img];
        let rank = (0..texts)
            .filter(|&u| scores[u * images + img] > own)
            .count();
        i2t[img] = i2t[img].min(rank);
    }
    ks.iter()
        .map(|&k| RetrievalRecall {
            k,
            image_to_text: top_k(&i2t, k),
            text_to_image: top_k(&t2i, k),
        })
        .collect()
}

pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Least-squares line `logit(shift) = a·logit(source) + b` through baseline (source, shift) points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogitFit {
    pub slope: f64,
    pub intercept: f64,
}

impl LogitFit {
    /// Fit through `points`; with one point (or identical x values) the slope is 1.
    pub fn fit(points: &[(f64, f64)]) -> LogitFit {
        let xs: Vec<f64> = points.iter().map(|p| logit(p.0)).collect();
        let ys: Vec<f64> = points.iter().map(|p| logit(p.1)).collect();
        let n = xs.len().max(1) as f64;
        let mx = xs.iter().sum::<f64>() / n;
        let my = ys.iter().sum::<f64>() / n;
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let slope = if sxx > 1e-12 { sxy / sxx } else { 1.0 };
        LogitFit {
            slope,
            intercept: my - slope * mx,
        }
    }

    /// Shift accuracy the baseline predicts at `source` accuracy.
    pub fn predict(&self, source: f64) -> f64 {
        sigmoid(self.slope * logit(source) + self.intercept)
    }

    /// Effective robustness: measured shift accuracy minus the baseline's prediction.
    pub fn effective_robustness(&self, source: f64, shift: f64) -> f64 {
        shift - self.predict(source)
    }
}

fn ln_choose(n: u64, k: u64) -> f64 {
    let k = k.min(n - k);
    (0..k)
        .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
        .sum()
}

/// One-sided binomial test: P(X ≥ successes) for X ~ Binomial(trials, p).
pub fn binomial_p_at_least(successes: u64, trials: u64, p: f64) -> f64 {
    if successes == 0 {
        return 1.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    (successes..=trials)
        .map(|k| {
            (ln_choose(trials, k) + k as f64 * p.ln() + (trials - k) as f64 * (1.0 - p).ln()).exp()
        })
        .sum::<f64>()
        .min(1.0)
}

/// The Wilson score interval of `hits` successes in `n` trials at normal quantile `z` (1.96 for
/// 95%), as SciPy's `binomtest(hits, n).proportion_ci(method="wilson")`; `(0, 1)` for no trials.
pub fn wilson(hits: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (hits.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let lo = if k == 0.0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let hi = if k == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_topk() {
        let scores = [0.1, 0.5, 0.4, 0.9, 0.2, 0.3];
        let r = ranks(&scores, 3, &[2, 0]);
        assert_eq!(r, [1, 0]);
        assert_eq!(top_k(&r, 1), 0.5);
        assert_eq!(top_k(&r, 2), 1.0);
    }

    #[test]
    fn logit_fit_recovers_a_line_and_binomial_sums_to_one() {
        let pts: Vec<(f64, f64)> = [0.2, 0.4, 0.6, 0.8]
            .iter()
            .map(|&x| (x, sigmoid(0.5 * logit(x) - 1.0)))
            .collect();
        let f = LogitFit::fit(&pts);
        assert!((f.slope - 0.5).abs() < 1e-9 && (f.intercept + 1.0).abs() < 1e-9);
        assert!(f.effective_robustness(0.4, pts[1].1).abs() < 1e-9);
        assert!((binomial_p_at_least(1, 10, 0.3) - (1.0 - 0.7f64.powi(10))).abs() < 1e-12);
        assert!((binomial_p_at_least(10, 10, 0.5) - 0.5f64.powi(10)).abs() < 1e-15);
    }
}
