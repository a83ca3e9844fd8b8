//! The analysis and report of `clip repro fig2` ([`super::fig2`]): seed-mean curves, the paper's
//! efficiency ratios, the pre-registered verdict, the plot and `report.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use clip_data::chart::{self, Chart, Series, Style};
use clip_train::objectives::Kind;
use serde_json::json;

use super::fig2::{Fig2Options, log2, machine};
use crate::error::EvalError;
use crate::robustness::mean;

/// Per objective: at each budget the seeds' headline (top-1, top-5) values.
pub(super) type Curves = BTreeMap<Kind, BTreeMap<u64, Vec<(f64, f64)>>>;

/// The seed-mean top-1 curve of `k` over budgets every seed reached.
pub(super) fn curve(curves: &Curves, k: Kind, seeds: usize) -> Vec<(u64, f64)> {
    curves
        .get(&k)
        .map(|c| {
            c.iter()
                .filter(|(_, v)| v.len() == seeds)
                .map(|(&n, v)| (n, mean(&v.iter().map(|x| x.0).collect::<Vec<_>>())))
                .collect()
        })
        .unwrap_or_default()
}

/// The images the `strong` curve needs to reach `weak`'s last value, interpolated in log₂ N:
/// `Some((n, exact))`; `exact` false when it is there at its first point already.
pub fn images_to_reach(strong: &[(u64, f64)], target: f64) -> Option<(f64, bool)> {
    let first = strong.first()?;
    if first.1 >= target {
        return Some((first.0 as f64, false));
    }
    for w in strong.windows(2) {
        let ((n0, a0), (n1, a1)) = (w[0], w[1]);
        if a1 >= target && a1 > a0 {
            let t = (target - a0) / (a1 - a0);
            return Some(((log2(n0) + t * (log2(n1) - log2(n0))).exp2(), true));
        }
    }
    None
}

/// The efficiency ratio of `strong` over `weak` as the paper defines it, written out.
pub(super) fn efficiency(
    curves: &Curves,
    strong: Kind,
    weak: Kind,
    seeds: usize,
) -> (Option<f64>, String) {
    let (s, w) = (curve(curves, strong, seeds), curve(curves, weak, seeds));
    let Some(&(n_weak, target)) = w.last() else {
        return (None, "no checkpoints".into());
    };
    let s: Vec<(u64, f64)> = s.into_iter().filter(|(n, _)| *n <= n_weak).collect();
    if s.is_empty() {
        return (None, format!("no checkpoints of {strong} to compare"));
    }
    match images_to_reach(&s, target) {
        Some((n, true)) => {
            let r = n_weak as f64 / n;
            (
                Some(r),
                format!(
                    "{r:.1}× (reaches {:.1}% at 2^{:.2} images)",
                    target * 100.0,
                    n.log2()
                ),
            )
        }
        Some((n, false)) => {
            let r = n_weak as f64 / n;
            (
                Some(r),
                format!(
                    "≥ {r:.1}× (already above {:.1}% at its first checkpoint)",
                    target * 100.0
                ),
            )
        }
        None => (
            None,
            format!(
                "never: it does not reach {:.1}% by 2^{:.0} images",
                target * 100.0,
                log2(n_weak)
            ),
        ),
    }
}

/// The pre-registered verdict on the ordering C-BoW > P-BoW > P-LM.
pub(super) fn verdict(
    curves: &Curves,
    seeds: usize,
    complete: bool,
) -> (String, serde_json::Value) {
    let order = [Kind::CBow, Kind::PBow, Kind::PLm];
    let cs: Vec<Vec<(u64, f64)>> = order.iter().map(|&k| curve(curves, k, seeds)).collect();
    let common: Vec<u64> = cs[0]
        .iter()
        .map(|p| p.0)
        .filter(|n| cs.iter().all(|c| c.iter().any(|p| p.0 == *n)))
        .collect();
    if common.is_empty() {
        return (
            "not run: C-BoW, P-BoW and P-LM need a common checkpoint".into(),
            json!(null),
        );
    }
    let at = |i: usize, n: u64| cs[i].iter().find(|p| p.0 == n).map_or(0.0, |p| p.1);
    let last4: Vec<u64> = common.iter().rev().take(4).rev().copied().collect();
    let ordered = last4
        .iter()
        .filter(|&&n| at(0, n) > at(1, n) && at(1, n) > at(2, n))
        .count();
    let last = *common.last().expect("non-empty");
    let range = |k: Kind| {
        let v: Vec<f64> = curves[&k][&last].iter().map(|x| x.0).collect();
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    let (rc, rb, rl) = (range(Kind::CBow), range(Kind::PBow), range(Kind::PLm));
    let separated = rc.0 > rb.1 && rb.0 > rl.1;
    let holds = ordered >= 3.min(last4.len()) && last4.len() >= 3 && separated;
    let mut text = format!(
        "C-BoW > P-BoW > P-LM at {ordered} of the last {} checkpoints; seed ranges at 2^{:.0} images: \
         C-BoW {:.1}–{:.1}%, P-BoW {:.1}–{:.1}%, P-LM {:.1}–{:.1}% ({}). ",
        last4.len(),
        log2(last),
        rc.0 * 100.0,
        rc.1 * 100.0,
        rb.0 * 100.0,
        rb.1 * 100.0,
        rl.0 * 100.0,
        rl.1 * 100.0,
        if separated {
            "separated"
        } else {
            "overlapping"
        }
    );
    let provisional = !complete || seeds < 3 || last4.len() < 4;
    text += match (holds, provisional) {
        (true, false) => "Reproduces.",
        (false, false) => "Does not reproduce.",
        (true, true) => {
            "Provisionally reproduces (fewer than 3 seeds, 4 checkpoints or the full budget)."
        }
        (false, true) => {
            "Provisionally does not reproduce (fewer than 3 seeds, 4 checkpoints or the full budget)."
        }
    };
    (
        text,
        json!({"ordered_of_last": [ordered, last4.len()], "separated_at_last": separated,
               "holds": holds, "provisional": provisional, "last_images": last}),
    )
}

const COLORS: [[u8; 3]; 5] = [
    chart::BLUE,
    [44, 160, 44],
    chart::ORANGE,
    [148, 103, 189],
    [214, 39, 40],
];

pub(super) fn plot(
    curves: &Curves,
    results: &serde_json::Value,
    seeds: usize,
    path: &Path,
) -> Result<(), EvalError> {
    let flops_of = |k: Kind, n: u64| {
        results["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["objective"] == json!(k))
            .and_then(|r| r["forward_flops_per_sample"].as_f64())
            .map_or(0.0, |f| 3.0 * f * n as f64)
    };
    let (mut by_images, mut by_flops) = (Vec::new(), Vec::new());
    let mut top = 0.05f64;
    let (mut fmin, mut fmax) = (f64::INFINITY, 0f64);
    for (i, (&k, _)) in curves.iter().enumerate() {
        let c = curve(curves, k, seeds);
        top = c.iter().map(|p| p.1).fold(top, f64::max);
        let color = COLORS[i % COLORS.len()];
        by_images.push(Series::new(
            k.label(),
            c.iter().map(|&(n, a)| (n as f64, a * 100.0)).collect(),
            color,
            Style::LinePoints,
        ));
        let f: Vec<(f64, f64)> = c
            .iter()
            .map(|&(n, a)| (flops_of(k, n).log10(), a * 100.0))
            .collect();
        for p in &f {
            fmin = fmin.min(p.0);
            fmax = fmax.max(p.0);
        }
        by_flops.push(Series::new(k.label(), f, color, Style::LinePoints));
    }
    let xs: Vec<f64> = curves
        .values()
        .flat_map(|c| c.keys().map(|&n| n as f64))
        .collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(0.0, f64::max),
    );
    if !x0.is_finite() {
        return Ok(());
    }
    let y = (0.0, (top * 100.0 * 1.15).max(5.0));
    let left = Chart {
        title: "Zero-shot top-1 vs images processed".into(),
        x_label: "images processed".into(),
        y_label: "zero-shot top-1 (%)".into(),
        x_range: (x0, x1.max(2.0 * x0)),
        y_range: y,
        log2_x: true,
        series: by_images,
    };
    let right = Chart {
        title: "Zero-shot top-1 vs training compute".into(),
        x_label: "training FLOPs (log10, forward × 3)".into(),
        y_label: "zero-shot top-1 (%)".into(),
        x_range: (fmin, fmax.max(fmin + 0.5)),
        y_range: y,
        log2_x: false,
        series: by_flops,
    };
    chart::save_panels(&[left, right], path)?;
    Ok(())
}

pub(super) fn markdown(
    o: &Fig2Options,
    curves: &Curves,
    results: &serde_json::Value,
    seeds: usize,
    verdict: &str,
) -> String {
    let mut s = String::from("# Figure 2 at CPU scale\n\n");
    let _ = writeln!(
        s,
        "Paper (§2.3, Figure 2): predicting a caption's exact words (a transformer language model) \
         learns zero-shot ImageNet transfer slowly; predicting its bag of words is 3× more efficient; \
         a contrastive objective over the same bag-of-words text encoder is another 4× more efficient.\n"
    );
    let _ = writeln!(
        s,
        "Ours: the same small ViT trained on `{}` ({} caption–image pairs) by each objective with the \
         same batches (batch {}, lr {}, cosine schedule over 2^{:.0} images), seeds {:?}; zero-shot on {} \
         concepts ({} images) in {}, styles the models never saw. {}\n",
        o.data.display(),
        results["settings"]["pairs"],
        o.batch_size,
        o.lr,
        log2(o.max_images),
        o.seeds,
        o.concepts,
        results["settings"]["task_images"],
        o.eval
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(" and "),
        machine()
    );
    let budgets: BTreeSet<u64> = curves.values().flat_map(|c| c.keys().copied()).collect();
    s += "| objective |";
    for n in &budgets {
        let _ = write!(s, " 2^{:.0} |", log2(*n));
    }
    s += " samples/s | forward GFLOPs/sample | output units |\n|---|";
    for _ in &budgets {
        s += "---|";
    }
    s += "---|---|---|\n";
    for (&k, c) in curves {
        let _ = write!(s, "| {} |", k.label());
        for n in &budgets {
            match c.get(n) {
                Some(v) if v.len() == seeds => {
                    let t1: Vec<f64> = v.iter().map(|x| x.0).collect();
                    let t5: Vec<f64> = v.iter().map(|x| x.1).collect();
                    let lo = t1.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = t1.iter().copied().fold(0.0, f64::max);
                    if seeds > 1 {
                        let _ = write!(
                            s,
                            " {:.1} ({:.1}–{:.1}) / {:.1} |",
                            mean(&t1) * 100.0,
                            lo * 100.0,
                            hi * 100.0,
                            mean(&t5) * 100.0
                        );
                    } else {
                        let _ = write!(s, " {:.1} / {:.1} |", mean(&t1) * 100.0, mean(&t5) * 100.0);
                    }
                }
                _ => s += " |",
            }
        }
        let runs: Vec<&serde_json::Value> = results["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["objective"] == json!(k))
            .collect();
        let sps = mean(
            &runs
                .iter()
                .filter_map(|r| r["samples_per_s"].as_f64())
                .collect::<Vec<_>>(),
        );
        let f = runs
            .first()
            .and_then(|r| r["forward_flops_per_sample"].as_f64())
            .unwrap_or(0.0);
        let units = runs
            .first()
            .and_then(|r| r["output_units"].as_u64())
            .map_or("—".to_string(), |v| v.to_string());
        let _ = writeln!(s, " {sps:.1} | {:.3} | {units} |", f / 1e9);
    }
    s += "\nCells: zero-shot top-1 / top-5 (%), seed mean (range) at each number of images processed. \
          A predictive objective's cell is its best rule; every rule is in `results.json` (bag heads: mean \
          log-probability of the name's units, and PMI against a blank image; P-LM: sum, length-normalised \
          mean, PMI).\n\n## Efficiency\n\n";
    for r in results["efficiency"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "- {} over {}: {} (paper: {})",
            r["stronger"].as_str().unwrap_or(""),
            r["weaker"].as_str().unwrap_or(""),
            r["text"].as_str().unwrap_or(""),
            match (r["stronger"].as_str(), r["weaker"].as_str()) {
                (Some("c-bow"), Some("p-bow")) => "4×",
                (Some("p-bow"), Some("p-lm")) => "3×",
                (Some("c-bow"), Some("p-lm")) => "12× (4 × 3)",
                _ => "—",
            }
        );
    }
    let _ = writeln!(
        s,
        "\n## Verdict (pre-registered)\n\nRule: C-BoW > P-BoW > P-LM on seed means at ≥ 3 of the last 4 \
         checkpoints, and non-overlapping seed ranges at the last one.\n\n{verdict}\n\n![Figure 2](fig2.png)\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_to_reach_interpolates_in_log2() {
        let c = vec![(1024, 0.1), (2048, 0.2), (4096, 0.4)];
        let (n, exact) = images_to_reach(&c, 0.3).unwrap();
        assert!(exact);
        assert!((n.log2() - 11.5).abs() < 1e-9, "{n}");
        assert_eq!(images_to_reach(&c, 0.05), Some((1024.0, false)));
        assert_eq!(images_to_reach(&c, 0.5), None);
    }

    #[test]
    fn the_verdict_follows_the_rule() {
        let mut curves: Curves = BTreeMap::new();
        for (k, base) in [(Kind::CBow, 0.3), (Kind::PBow, 0.2), (Kind::PLm, 0.1)] {
            for i in 0..5u32 {
                let v = base + 0.01 * i as f64;
                curves
                    .entry(k)
                    .or_default()
                    .insert(1 << (10 + i), vec![(v, v), (v + 0.005, v), (v - 0.005, v)]);
            }
        }
        let (text, j) = verdict(&curves, 3, true);
        assert_eq!(j["holds"], true, "{text}");
        assert!(text.ends_with("Reproduces."), "{text}");
        // P-LM above P-BoW at the end: it does not hold
        curves
            .get_mut(&Kind::PLm)
            .unwrap()
            .insert(1 << 14, vec![(0.5, 0.5); 3]);
        curves
            .get_mut(&Kind::PLm)
            .unwrap()
            .insert(1 << 13, vec![(0.5, 0.5); 3]);
        let (text, j) = verdict(&curves, 3, true);
        assert_eq!(j["holds"], false);
        assert!(text.ends_with("Does not reproduce."), "{text}");
        // short of the full budget the verdict is provisional
        let (text, _) = verdict(&curves, 3, false);
        assert!(text.contains("Provisionally does not reproduce"), "{text}");
    }
}
