//! Effective robustness (Taori et al. 2020; the paper's Figure 13): zero-shot and a source-trained
//! probe measured on the source and on shifted distributions, against a baseline line fitted in
//! logit space through k-shot and full-data probes trained on the source ("models trained on the
//! source"). Effective robustness = measured shift accuracy − the line's prediction.

use clip_data::chart::{self, Chart, Series, Style};
use clip_embed::{Classifier, Features};
use serde_json::json;

use crate::error::EvalError;
use crate::logreg::FitOptions;
use crate::metrics::LogitFit;
use crate::probe::{self, Probing};
use crate::zeroshot;

/// Robustness results on one source and several shifts.
#[derive(Debug, Clone)]
pub struct Robustness {
    pub shift_names: Vec<String>,
    /// (source accuracy, accuracy per shift)
    pub zero_shot: (f64, Vec<f64>),
    pub probe: (f64, Vec<f64>),
    /// baseline supervised probes: (label, source accuracy, mean shift accuracy)
    pub baseline: Vec<(String, f64, f64)>,
    pub fit: LogitFit,
}

/// Mean of `v` (0 when empty).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl Robustness {
    /// Effective robustness of a (source, shifts) pair.
    pub fn effective(&self, (src, shifts): &(f64, Vec<f64>)) -> f64 {
        self.fit.effective_robustness(*src, mean(shifts))
    }

    pub fn json(&self) -> serde_json::Value {
        let side = |v: &(f64, Vec<f64>)| json!({"source": v.0, "shifts": v.1, "mean_shift": mean(&v.1), "effective_robustness": self.effective(v)});
        json!({
            "shifts": self.shift_names,
            "zero_shot": side(&self.zero_shot),
            "probe": side(&self.probe),
            "baseline": self.baseline.iter().map(|(n, s, t)| json!({"probe": n, "source": s, "mean_shift": t})).collect::<Vec<_>>(),
            "baseline_fit_logit": self.fit,
        })
    }

    /// Figure 13's chart: y = x, the baseline fit, the probes and zero-shot CLIP.
    pub fn chart(&self, title: &str) -> Chart {
        let lo = self
            .baseline
            .iter()
            .map(|b| b.1.min(b.2))
            .chain([self.zero_shot.0, mean(&self.zero_shot.1), self.probe.0])
            .fold(1.0, f64::min);
        let lo = ((lo * 10.0).floor() / 10.0).max(0.0);
        let curve: Vec<(f64, f64)> = (0..=40)
            .map(|i| lo + (1.0 - lo) * i as f64 / 40.0)
            .map(|x| (x * 100.0, self.fit.predict(x) * 100.0))
            .collect();
        let pct = |(a, b): (f64, f64)| (a * 100.0, b * 100.0);
        Chart {
            title: title.into(),
            x_label: "source accuracy (%)".into(),
            y_label: "mean accuracy under shift (%)".into(),
            x_range: (lo * 100.0, 100.0),
            y_range: (lo * 100.0, 100.0),
            log2_x: false,
            series: vec![
                Series::new(
                    "y = x (perfect robustness)",
                    vec![(lo * 100.0, lo * 100.0), (100.0, 100.0)],
                    chart::GREY,
                    Style::Dashed,
                ),
                Series::new("baseline fit (logit)", curve, chart::BLUE, Style::Line),
                Series::new(
                    "supervised probes on source",
                    self.baseline.iter().map(|b| pct((b.1, b.2))).collect(),
                    chart::BLUE,
                    Style::Points,
                ),
                Series::new(
                    "zero-shot CLIP",
                    vec![pct((self.zero_shot.0, mean(&self.zero_shot.1)))],
                    chart::ORANGE,
                    Style::Points,
                ),
            ],
        }
    }
}

/// Zero-shot and source-trained probes on the source and each shift, and the baseline line fitted
/// in logit space through k-shot and full-data probes (each a "model trained on the source").
pub fn evaluate(
    train: &Features,
    source: &Features,
    shifts: &[(String, Features)],
    names: &[String],
    classifier: &Classifier,
    ks: &[usize],
    seeds: u64,
) -> Result<Robustness, EvalError> {
    let zero_shot = (
        zeroshot::top1(source, classifier),
        shifts
            .iter()
            .map(|(_, f)| zeroshot::top1(f, classifier))
            .collect(),
    );
    let c = names.len();
    let full = probe::fit_probe(train, c, 0.2, 0, None, FitOptions::default(), |_| {})?;
    let probe_res = (
        source.accuracy(&full.model),
        shifts
            .iter()
            .map(|(_, f)| f.accuracy(&full.model))
            .collect::<Vec<_>>(),
    );
    let mut baseline = Vec::new();
    let bar = clip_embed::progress(ks.len() * seeds as usize, "baseline probes");
    for &k in ks {
        for seed in 0..seeds {
            let p = probe::k_shot_probe(train, names, k, seed)?;
            let sh: Vec<f64> = shifts.iter().map(|(_, f)| f.accuracy(&p.model)).collect();
            baseline.push((
                format!("{k}-shot seed {seed}"),
                source.accuracy(&p.model),
                mean(&sh),
            ));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    baseline.push(("all training data".into(), probe_res.0, mean(&probe_res.1)));
    let fit = LogitFit::fit(&baseline.iter().map(|b| (b.1, b.2)).collect::<Vec<_>>());
    Ok(Robustness {
        shift_names: shifts.iter().map(|s| s.0.clone()).collect(),
        zero_shot,
        probe: probe_res,
        baseline,
        fit,
    })
}
