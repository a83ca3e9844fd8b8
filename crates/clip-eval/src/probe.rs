//! The linear-probe protocol (paper appendix A.3): a seeded stratified validation split carved from
//! the training features, the regularisation strength chosen by the paper's parametric binary search
//! on it, then a refit on train + validation with the chosen C. Few-shot probes draw k examples per
//! class (seeded) and run the same protocol on them.

use clip_data::rng::{Rng, shuffle};
pub use clip_embed::Features;
use serde::Serialize;

use crate::logreg::{FitError, FitOptions, LogReg, accuracy, fit};

/// Probes on features: fit one, or measure one's accuracy.
pub trait Probing {
    /// A probe fitted on these features (scikit-learn's protocol, from zero).
    fn fit(&self, classes: usize, opts: FitOptions) -> Result<LogReg, FitError>;
    /// Top-1 accuracy of `model` on these features.
    fn accuracy(&self, model: &LogReg) -> f64;
}

impl Probing for Features {
    fn fit(&self, classes: usize, opts: FitOptions) -> Result<LogReg, FitError> {
        fit(
            &self.data,
            self.len(),
            self.dim,
            &self.labels,
            classes,
            opts,
        )
    }

    fn accuracy(&self, model: &LogReg) -> f64 {
        accuracy(&model.predict(&self.data, self.len()), &self.labels)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProbeError {
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error(
        "k = {k} is larger than the smallest class: {name:?} has {count} training example(s); use k ≤ {count}"
    )]
    KTooLarge {
        k: usize,
        name: String,
        count: usize,
    },
    #[error("k must be at least 1")]
    KZero,
    #[error("the validation fraction must be in (0, 1), got {0}")]
    BadFraction(f64),
}

fn by_class(labels: &[usize], classes: usize) -> Vec<Vec<usize>> {
    let mut per = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        per[l].push(i);
    }
    per
}

/// Seeded stratified split: about `fraction` of each class (at least one when the class has two or
/// more examples, never all of it) goes to validation. Returns (train, validation) indices.
pub fn stratified_split(
    labels: &[usize],
    classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), ProbeError> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(ProbeError::BadFraction(fraction));
    }
    let mut rng = Rng::new(seed ^ 0x005E_ED0F_5B17);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for mut idx in by_class(labels, classes) {
        shuffle(&mut idx, &mut rng);
        let n = idx.len();
        let v = if n < 2 {
            0
        } else {
            ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
        };
        val.extend_from_slice(&idx[..v]);
        train.extend_from_slice(&idx[v..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    Ok((train, val))
}

/// Every k in `ks` is at least 1 and at most the smallest class's example count.
pub fn check_k_shots(
    labels: &[usize],
    class_names: &[String],
    ks: &[usize],
) -> Result<(), ProbeError> {
    let per = by_class(labels, class_names.len());
    let smallest = per.iter().enumerate().min_by_key(|(_, v)| v.len());
    for &k in ks {
        if k == 0 {
            return Err(ProbeError::KZero);
        }
        if let Some((c, idx)) = smallest
            && idx.len() < k
        {
            return Err(ProbeError::KTooLarge {
                k,
                name: class_names[c].clone(),
                count: idx.len(),
            });
        }
    }
    Ok(())
}

/// `k` seeded examples of every class (indices into `labels`).
pub fn sample_k_shot(
    labels: &[usize],
    class_names: &[String],
    k: usize,
    seed: u64,
) -> Result<Vec<usize>, ProbeError> {
    check_k_shots(labels, class_names, &[k])?;
    let per = by_class(labels, class_names.len());
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9) ^ k as u64);
    let mut out = Vec::with_capacity(k * per.len());
    for mut idx in per {
        shuffle(&mut idx, &mut rng);
        out.extend_from_slice(&idx[..k]);
    }
    out.sort_unstable();
    Ok(out)
}

/// One point of the C search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SearchPoint {
    pub c: f64,
    pub val_accuracy: f64,
    pub iterations: usize,
}

/// The paper's search: log10 C ∈ {−6, −4, …, 6} first, then repeatedly the points half-way between
/// the best and its neighbours, halving the step down to 1/8 decade. Ties go to the smaller C
/// (stronger regularisation). Every fit starts from zero, as scikit-learn's does: starting from a
/// neighbouring C's solution would stop at once under the loose default tolerance and make the
/// high-C end of the search meaningless.
pub fn search_c(
    train: &Features,
    val: &Features,
    classes: usize,
    opts: FitOptions,
    mut on_fit: impl FnMut(&SearchPoint),
) -> Result<(f64, Vec<SearchPoint>), ProbeError> {
    let mut tried: Vec<(f64, SearchPoint)> = Vec::new(); // (log10 C, point)
    let mut try_at = |e: f64, tried: &mut Vec<(f64, SearchPoint)>| -> Result<(), ProbeError> {
        if tried.iter().any(|t| (t.0 - e).abs() < 1e-9) || !(-6.0 - 1e-9..=6.0 + 1e-9).contains(&e)
        {
            return Ok(());
        }
        let c = 10f64.powf(e);
        let m = train.fit(classes, FitOptions { c, ..opts })?;
        let p = SearchPoint {
            c,
            val_accuracy: val.accuracy(&m),
            iterations: m.iterations,
        };
        on_fit(&p);
        tried.push((e, p));
        Ok(())
    };
    for e in [-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0] {
        try_at(e, &mut tried)?;
    }
    let best = |tried: &[(f64, SearchPoint)]| {
        tried
            .iter()
            .fold(None::<(f64, f64)>, |b, t| match b {
                Some((be, ba)) if ba > t.1.val_accuracy || (ba == t.1.val_accuracy && be < t.0) => {
                    Some((be, ba))
                }
                _ => Some((t.0, t.1.val_accuracy)),
            })
            .expect("tried")
            .0
    };
    let mut step = 1.0;
    while step >= 0.125 {
        let b = best(&tried);
        try_at(b - step, &mut tried)?;
        try_at(b + step, &mut tried)?;
        step /= 2.0;
    }
    let b = best(&tried);
    let mut points: Vec<SearchPoint> = tried.iter().map(|t| t.1).collect();
    points.sort_by(|a, b| a.c.total_cmp(&b.c));
    Ok((10f64.powf(b), points))
}

/// A fitted probe with the protocol's record.
#[derive(Debug, Clone)]
pub struct Probe {
    pub model: LogReg,
    pub c: f64,
    pub search: Vec<SearchPoint>,
}

/// The full protocol on `train`: split (`val_fraction`, `seed`), search C, refit on everything.
/// With `fixed_c` the search is skipped. Classes with a single example cannot be split; when no
/// class has two, the search is skipped and C = 1.
pub fn fit_probe(
    train: &Features,
    classes: usize,
    val_fraction: f64,
    seed: u64,
    fixed_c: Option<f64>,
    opts: FitOptions,
    on_fit: impl FnMut(&SearchPoint),
) -> Result<Probe, ProbeError> {
    let (c, search) = match fixed_c {
        Some(c) => (c, Vec::new()),
        None => {
            let (tr, va) = stratified_split(&train.labels, classes, val_fraction, seed)?;
            if va.is_empty() {
                (1.0, Vec::new())
            } else {
                search_c(
                    &train.subset(&tr),
                    &train.subset(&va),
                    classes,
                    opts,
                    on_fit,
                )?
            }
        }
    };
    let model = train.fit(classes, FitOptions { c, ..opts })?;
    Ok(Probe { model, c, search })
}

/// A k-shot probe: `k` seeded examples per class drawn from `train`, then the probe protocol on them
/// (C searched on half of the shots when k ≥ 2; C = 1 when k = 1, as no validation split exists).
pub fn k_shot_probe(
    train: &Features,
    class_names: &[String],
    k: usize,
    seed: u64,
) -> Result<Probe, ProbeError> {
    let idx = sample_k_shot(&train.labels, class_names, k, seed)?;
    fit_probe(
        &train.subset(&idx),
        class_names.len(),
        0.5,
        seed,
        None,
        FitOptions::default(),
        |_| {},
    )
}

/// A probe fitted with the protocol and measured on a test set.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub train_images: usize,
    pub test_images: usize,
    pub classes: usize,
    pub c: f64,
    pub search: Vec<SearchPoint>,
    pub top1: f64,
    pub top5: f64,
    pub mean_per_class_recall: f64,
    pub iterations: usize,
    pub stop: crate::logreg::Stop,
    pub converged: bool,
    pub fit_seconds: f64,
}

/// The linear-probe protocol ([`fit_probe`]) on `train`, measured on `test`.
#[allow(clippy::too_many_arguments)] // the protocol's settings, each a flag
pub fn evaluate(
    train: &Features,
    test: &Features,
    classes: usize,
    val_fraction: f64,
    seed: u64,
    fixed_c: Option<f64>,
    opts: FitOptions,
    on_fit: impl FnMut(&SearchPoint),
) -> Result<ProbeReport, ProbeError> {
    let t = std::time::Instant::now();
    let p = fit_probe(train, classes, val_fraction, seed, fixed_c, opts, on_fit)?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let s = p.model.scores(&test.data, test.len());
    let r = crate::metrics::ranks(&s, classes, &test.labels);
    let cm = crate::metrics::confusion(
        &crate::logreg::argmax_rows(&s, classes),
        &test.labels,
        classes,
    );
    Ok(ProbeReport {
        train_images: train.len(),
        test_images: test.len(),
        classes,
        c: p.c,
        top1: crate::metrics::top_k(&r, 1),
        top5: crate::metrics::top_k(&r, 5),
        mean_per_class_recall: crate::metrics::mean_per_class_recall(&cm),
        iterations: p.model.iterations,
        stop: p.model.stop,
        converged: p.model.converged,
        search: p.search,
        fit_seconds,
    })
}

/// Mean and (population) standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
    (m, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_stratified_and_seeded() {
        let labels: Vec<usize> = (0..50).map(|i| i % 5).collect();
        let (tr, va) = stratified_split(&labels, 5, 0.2, 3).unwrap();
        assert_eq!((tr.len(), va.len()), (40, 10));
        for c in 0..5 {
            assert_eq!(va.iter().filter(|&&i| labels[i] == c).count(), 2);
        }
        assert_eq!(stratified_split(&labels, 5, 0.2, 3).unwrap().1, va);
        assert_ne!(stratified_split(&labels, 5, 0.2, 4).unwrap().1, va);
        assert_eq!(
            stratified_split(&labels, 5, 1.0, 3).unwrap_err(),
            ProbeError::BadFraction(1.0)
        );
    }

    #[test]
    fn k_shot_draws_k_per_class_and_refuses_large_k() {
        let labels = [0, 0, 0, 1, 1, 2, 2, 2, 2];
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let s = sample_k_shot(&labels, &names, 2, 0).unwrap();
        assert_eq!(s.len(), 6);
        for c in 0..3 {
            assert_eq!(s.iter().filter(|&&i| labels[i] == c).count(), 2);
        }
        assert_eq!(
            sample_k_shot(&labels, &names, 0, 0).unwrap_err(),
            ProbeError::KZero
        );
        let e = sample_k_shot(&labels, &names, 3, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "k = 3 is larger than the smallest class: \"b\" has 2 training example(s); use k ≤ 2"
        );
    }
}
