//! Few-shot linear probes beside zero-shot (the paper's Figure 6): for each k and seed, k training
//! examples per class, the probe protocol on them, accuracy on the test set; where zero-shot falls on
//! that curve.

use clip_data::chart::{self, Chart, Series, Style};
use clip_embed::Features;
use serde_json::json;

use crate::error::EvalError;
use crate::probe::{self, Probing};

/// Few-shot results: per k, mean, std and each seed's accuracy and C.
#[derive(Debug, Clone)]
pub struct FewShot {
    pub k: Vec<usize>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub runs: Vec<Vec<f64>>,
    pub c: Vec<Vec<f64>>,
}

/// k-shot probes: for each k and seed, draw k training examples per class, fit with the probe
/// protocol (C searched on half of the shots when k ≥ 2; C = 1 when k = 1), test on `test`.
pub fn few_shot(
    train: &Features,
    test: &Features,
    names: &[String],
    ks: &[usize],
    seeds: u64,
) -> Result<FewShot, EvalError> {
    if seeds == 0 || ks.is_empty() {
        return Err(EvalError::Invalid(
            "give at least one k and one seed (--k 1,2,4 --seeds 5)".into(),
        ));
    }
    // every k is checked before any fitting
    probe::check_k_shots(&train.labels, names, ks)?;
    let bar = clip_embed::progress(ks.len() * seeds as usize, "few-shot probes");
    let mut out = FewShot {
        k: ks.to_vec(),
        mean: Vec::new(),
        std: Vec::new(),
        runs: Vec::new(),
        c: Vec::new(),
    };
    for &k in ks {
        let mut accs = Vec::new();
        let mut cs = Vec::new();
        for seed in 0..seeds {
            let p = probe::k_shot_probe(train, names, k, seed)?;
            accs.push(test.accuracy(&p.model));
            cs.push(p.c);
            bar.inc(1);
        }
        let (m, s) = probe::mean_std(&accs);
        out.mean.push(m);
        out.std.push(s);
        out.runs.push(accs);
        out.c.push(cs);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Where zero-shot accuracy falls on the few-shot curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KMatch {
    /// below the smallest k's probe
    Below(usize),
    /// equal to a probe with this many examples per class (interpolated in log₂ k)
    At(f64),
    /// above the largest k's probe
    Above(usize),
}

impl KMatch {
    pub fn json(&self) -> serde_json::Value {
        match self {
            KMatch::Below(k) => json!(format!("below {k}-shot")),
            KMatch::At(k) => json!(k),
            KMatch::Above(k) => json!(format!("above {k}-shot")),
        }
    }
}

impl std::fmt::Display for KMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KMatch::Below(k) => write!(f, "is below the {k}-shot linear probe"),
            KMatch::At(k) => write!(f, "matches a {k:.1}-shot linear probe"),
            KMatch::Above(k) => write!(f, "is above every probe up to {k} shots"),
        }
    }
}

/// The k at which the few-shot mean reaches `target`.
pub fn matching_k(fs: &FewShot, target: f64) -> KMatch {
    if fs.mean.first().is_some_and(|&m| m > target) {
        return KMatch::Below(fs.k[0]);
    }
    for i in 1..fs.k.len() {
        let (a, b) = (fs.mean[i - 1], fs.mean[i]);
        if a <= target && b >= target && b > a {
            let (la, lb) = ((fs.k[i - 1] as f64).log2(), (fs.k[i] as f64).log2());
            return KMatch::At(2f64.powf(la + (target - a) / (b - a) * (lb - la)));
        }
    }
    KMatch::Above(*fs.k.last().unwrap_or(&0))
}

impl FewShot {
    /// The results as JSON (beside the zero-shot accuracy).
    pub fn json(&self, zero_shot: f64) -> serde_json::Value {
        json!({"k": self.k, "mean": self.mean, "std": self.std, "runs": self.runs, "c": self.c,
            "zero_shot_top1": zero_shot, "zero_shot_matches_k": matching_k(self, zero_shot).json()})
    }

    /// Figure 6's chart: the probe curve (mean ± std) and the zero-shot line.
    pub fn chart(&self, zero_shot: f64, title: &str) -> Chart {
        let kmax = *self.k.iter().max().unwrap_or(&1) as f64;
        let mut probe_series = Series::new(
            "linear probe (mean ± std)",
            self.k
                .iter()
                .zip(&self.mean)
                .map(|(&k, &m)| (k as f64, m * 100.0))
                .collect(),
            chart::BLUE,
            Style::LinePoints,
        );
        probe_series.errors = self.std.iter().map(|s| s * 100.0).collect();
        let top = self
            .mean
            .iter()
            .zip(&self.std)
            .map(|(m, s)| m + s)
            .fold(zero_shot, f64::max);
        Chart {
            title: title.into(),
            x_label: "labeled examples per class (k)".into(),
            y_label: "accuracy (%)".into(),
            x_range: (1.0, kmax.max(2.0)),
            y_range: (0.0, ((top * 100.0 / 10.0).ceil() * 10.0).clamp(10.0, 100.0)),
            log2_x: true,
            series: vec![
                Series::new(
                    "zero-shot CLIP",
                    vec![(1.0, zero_shot * 100.0), (kmax.max(2.0), zero_shot * 100.0)],
                    chart::ORANGE,
                    Style::Dashed,
                ),
                probe_series,
            ],
        }
    }
}
