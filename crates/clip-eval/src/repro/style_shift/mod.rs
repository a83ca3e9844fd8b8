//! `clip repro robustness`: a robustness experiment that tests what the paper claims (§3.3,
//! Figure 13). CLIP's effective robustness is attributed to learning from diverse data, while the
//! supervised models it is compared with learn one distribution. So:
//!
//! - **supervised baselines learn one style**: the emoji subcategory labels (`categories.txt`)
//!   from the source style's training concepts only — small ViTs trained from scratch for several
//!   numbers of steps and seeds, logistic-regression probes on frozen random-init ViT features, and
//!   a probe on raw pixels (models of varied quality, as Taori et al.'s ImageNet models are);
//! - **CLIPs learn from captions**: one trained on the source style only, one on the source and a
//!   second style, with equal images processed;
//! - **everyone is evaluated** on held-out concepts (never trained on by anyone) in the source style
//!   and in a target style no model saw; CLIPs zero-shot, by the category names.
//!
//! The baseline trend is the least-squares line through the supervised models in logit space;
//! a CLIP's effective robustness is its target accuracy minus the trend's prediction at its source
//! accuracy, with a 95% bootstrap interval (test images resampled, models and trend refitted from
//! the same per-image predictions). Pre-registered verdicts: the paper's effect reproduces if a
//! CLIP's interval lies above 0; its explanation (diversity) is supported if the two-style CLIP's
//! effective robustness minus the one-style CLIP's has an interval above 0.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clip_data::Rgb8;
use clip_data::chart::{self, Chart, Series, Style};
use clip_data::image::{Alpha, load_rgb};
use clip_data::rng::Rng;
use clip_embed::{Embedder, Features};
use clip_model::ClipConfig;
use clip_train::objectives::Kind;
use clip_train::objectives::classifier::{ClassifierOptions, classifier_scores, train_classifier};
use clip_train::trainer::ZeroShotSet;
use serde_json::json;

use super::fig2::{Fig2Options, RunSettings, machine, run_one};
use crate::error::EvalError;
use crate::logreg::{FitOptions, argmax_rows};
use crate::metrics::LogitFit;
use crate::probe::fit_probe;

mod report;
use report::*;

/// What the experiment runs with.
#[derive(Debug, Clone)]
pub struct ShiftOptions {
    pub out: PathBuf,
    /// a `clip import-emoji` folder holding the three styles and `train_SOURCE+EXTRA.jsonl`
    pub emoji: PathBuf,
    pub source: String,
    pub extra: String,
    pub target: String,
    /// images each CLIP processes (a power of two)
    pub images: u64,
    pub seeds: Vec<u64>,
    pub batch_size: usize,
    pub lr: f64,
    /// training steps of the from-scratch classifiers (one model per value and seed)
    pub classifier_steps: Vec<usize>,
    pub classifier_seeds: Vec<u64>,
    /// seeds of the random-init ViTs whose frozen features are probed
    pub probe_seeds: Vec<u64>,
    pub bootstrap: usize,
    pub model: ClipConfig,
    pub templates: Vec<String>,
}

/// One model's per-image correctness on the source and target test sets.
#[derive(Debug, Clone)]
pub struct Scored {
    pub name: String,
    /// "supervised", or the CLIP's training styles
    pub group: String,
    pub source: Vec<bool>,
    pub target: Vec<bool>,
}

fn acc(v: &[bool], idx: &[usize]) -> f64 {
    idx.iter().filter(|&&i| v[i]).count() as f64 / idx.len().max(1) as f64
}

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

/// (source, target) accuracies of each model on the resampled indices, the trend through the
/// supervised ones, and each CLIP's effective robustness.
pub fn effective(models: &[Scored], src: &[usize], tgt: &[usize]) -> (LogitFit, Vec<f64>) {
    // the trend is fitted and read at smoothed accuracies, (c + ½)/(n + 1): a model at 0% or 100%
    // on a small (resampled) test set would otherwise sit at logit ±13.8 and pull the whole line
    let smooth = |v: &[bool], idx: &[usize]| {
        let c = idx.iter().filter(|&&i| v[i]).count() as f64;
        (c + 0.5) / (idx.len() as f64 + 1.0)
    };
    let pts: Vec<(f64, f64)> = models
        .iter()
        .filter(|m| m.group == "supervised")
        .map(|m| (smooth(&m.source, src), smooth(&m.target, tgt)))
        .collect();
    let fit = LogitFit::fit(&pts);
    let er = models
        .iter()
        .map(|m| acc(&m.target, tgt) - fit.predict(smooth(&m.source, src)))
        .collect();
    (fit, er)
}

/// A 95% interval (low, high).
pub type Interval = (f64, f64);

/// 95% percentile intervals, over `rounds` bootstrap resamples of the test images, of every
/// model's effective robustness, of `b − a` for each pair `(a, b)` of model indices, and of the
/// pairs pooled: the mean over pairs of the `a`s, of the `b`s and of `b − a` (one resample of the
/// images serves every model, so the pooled intervals carry the test set's noise, not the seeds').
pub fn bootstrap(
    models: &[Scored],
    rounds: usize,
    pairs: &[(usize, usize)],
    seed: u64,
) -> (Vec<Interval>, Vec<Interval>, [Interval; 3]) {
    let (ns, nt) = (models[0].source.len(), models[0].target.len());
    let mut rng = Rng::new(seed ^ 0xB007);
    let mut ers: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); models.len()];
    let mut diffs: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); pairs.len()];
    let mut pooled: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        let src: Vec<usize> = (0..ns).map(|_| rng.below(ns)).collect();
        let tgt: Vec<usize> = (0..nt).map(|_| rng.below(nt)).collect();
        let (_, er) = effective(models, &src, &tgt);
        for (i, e) in er.iter().enumerate() {
            ers[i].push(*e);
        }
        for (j, &(a, b)) in pairs.iter().enumerate() {
            diffs[j].push(er[b] - er[a]);
        }
        if !pairs.is_empty() {
            for (k, v) in pooled_means(&er, pairs).into_iter().enumerate() {
                pooled[k].push(v);
            }
        }
    }
    let interval = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (at(0.025), at(0.975))
    };
    (
        ers.into_iter().map(interval).collect(),
        diffs.into_iter().map(interval).collect(),
        pooled.map(interval),
    )
}

/// The mean over `pairs` of `er[a]`, of `er[b]` and of `er[b] − er[a]`.
pub fn pooled_means(er: &[f64], pairs: &[(usize, usize)]) -> [f64; 3] {
    let n = pairs.len().max(1) as f64;
    let (sa, sb) = pairs
        .iter()
        .fold((0.0, 0.0), |(sa, sb), &(a, b)| (sa + er[a], sb + er[b]));
    [sa / n, sb / n, (sb - sa) / n]
}

/// A category manifest's rows: (image path, label, trained).
fn rows(path: &Path) -> Result<Vec<(PathBuf, usize, bool)>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        EvalError::Invalid(format!(
            "cannot read '{}': {e} (import the styles with `clip import-emoji --styles google,twitter,apple --train-styles google,twitter`)",
            path.display()
        ))
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let bad =
                |m: &str| EvalError::Invalid(format!("'{}' line {}: {m}", path.display(), i + 1));
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| bad(&e.to_string()))?;
            Ok((
                dir.join(v["image"].as_str().ok_or_else(|| bad("no image"))?),
                v["label"].as_u64().ok_or_else(|| bad("no label"))? as usize,
                v["trained"]
                    .as_bool()
                    .ok_or_else(|| bad("no trained flag"))?,
            ))
        })
        .collect()
}

fn load(path: &Path) -> Result<Rgb8, EvalError> {
    load_rgb(path, Alpha::FlattenOnWhite)
        .map_err(|e| EvalError::Invalid(format!("cannot read '{}': {e}", path.display())))
}

/// Top-1 correctness of row-major `[M, k]` scores.
fn correct(scores: &[f32], k: usize, labels: &[usize]) -> Vec<bool> {
    argmax_rows(scores, k)
        .iter()
        .zip(labels)
        .map(|(p, l)| p == l)
        .collect()
}

/// Normalised image features of a random-init ViT (seed) for preprocessed images.
fn random_features(
    model: &ClipConfig,
    seed: u64,
    images: &[Vec<f32>],
) -> Result<Vec<f32>, EvalError> {
    let clip = clip_model::Clip::random(model, seed, &clip_model::cpu())
        .map_err(|e| EvalError::Invalid(e.to_string()))?;
    let emb = Embedder::new(clip, 64);
    Ok(images
        .chunks(64)
        .flat_map(|c| emb.encode_pixels(c.concat(), c.len(), false))
        .collect())
}

/// Raw pixels at 16×16, the paper's "raw pixel" logistic-regression baseline.
fn pixels16(img: &Rgb8) -> Vec<f32> {
    let small = clip_data::resize::resize_bicubic(img, 16, 16);
    small.data.iter().map(|&v| v as f32 / 255.0 - 0.5).collect()
}

/// Run the experiment.
pub fn run(o: &ShiftOptions, say: &mut dyn FnMut(String)) -> Result<serde_json::Value, EvalError> {
    if !o.images.is_power_of_two() || o.images < o.batch_size as u64 {
        return Err(EvalError::Invalid(format!(
            "--images {} must be a power of two and at least the batch size ({})",
            o.images, o.batch_size
        )));
    }
    let styles = [&o.source, &o.extra, &o.target];
    if o.target == o.source || o.target == o.extra || o.source == o.extra {
        return Err(EvalError::Invalid(format!(
            "--source {}, --extra {} and --target {} must be three different styles",
            o.source, o.extra, o.target
        )));
    }
    let names = clip_data::dataset::read_classes(&o.emoji.join("categories.txt"))?;
    let src_rows = rows(&o.emoji.join(format!("categories_{}.jsonl", o.source)))?;
    let tgt_rows = rows(&o.emoji.join(format!("categories_{}.jsonl", o.target)))?;
    let one = o.emoji.join(format!("train_{}.jsonl", o.source));
    let two = o
        .emoji
        .join(format!("train_{}+{}.jsonl", o.source, o.extra));
    for m in [&one, &two] {
        if !m.is_file() {
            return Err(EvalError::Invalid(format!(
                "'{}' is missing: import with `clip import-emoji --styles {},{},{} --train-styles {},{}`",
                m.display(),
                styles[0],
                styles[1],
                styles[2],
                o.source,
                o.extra
            )));
        }
    }
    clip_data::out::check_output_dir(&o.out, "robustness.json", "clip repro robustness run")?;
    let n = o.model.image_size();
    let pre = clip_data::Preprocess::clip(n);
    let k = names.len();
    let (mut train_imgs, mut train_labels) = (Vec::new(), Vec::new());
    let (mut test_src, mut src_labels, mut src_px) = (Vec::new(), Vec::new(), Vec::new());
    for (p, l, trained) in &src_rows {
        let img = load(p)?;
        if *trained {
            train_imgs.push(img);
            train_labels.push(*l);
        } else {
            test_src.push(pre.apply(&img));
            src_px.push(pixels16(&img));
            src_labels.push(*l);
        }
    }
    let (mut test_tgt, mut tgt_labels, mut tgt_px) = (Vec::new(), Vec::new(), Vec::new());
    for (p, l, trained) in &tgt_rows {
        if !trained {
            let img = load(p)?;
            test_tgt.push(pre.apply(&img));
            tgt_px.push(pixels16(&img));
            tgt_labels.push(*l);
        }
    }
    if train_imgs.is_empty() || test_src.is_empty() || test_tgt.is_empty() {
        return Err(EvalError::Invalid(format!(
            "the category sets hold {} training and {}/{} held-out images; import with a held-out fraction above 0",
            train_imgs.len(),
            test_src.len(),
            test_tgt.len()
        )));
    }
    clip_data::out::create_dir(&o.out)?;
    crate::error::write_json(
        &o.out,
        "robustness.json",
        &json!({"experiment": "robustness"}),
    )?;
    let mut models: Vec<Scored> = Vec::new();
    // supervised: from-scratch classifiers
    let train_pre: Vec<Vec<f32>> = train_imgs.iter().map(|i| pre.apply(i)).collect();
    let device = clip_model::default_device().autodiff();
    for &seed in &o.classifier_seeds {
        for &steps in &o.classifier_steps {
            let t0 = std::time::Instant::now();
            let m = train_classifier(
                &o.model,
                &train_imgs,
                &train_labels,
                k,
                ClassifierOptions {
                    steps,
                    batch_size: 64,
                    lr: o.lr,
                    seed,
                },
                &device,
            )
            .map_err(|e| EvalError::Invalid(e.to_string()))?;
            let s = correct(&classifier_scores(&m, &test_src, n), k, &src_labels);
            let t = correct(&classifier_scores(&m, &test_tgt, n), k, &tgt_labels);
            say(format!(
                "classifier, {steps} steps, seed {seed}: {:.1}% source, {:.1}% target ({:.0} s)",
                acc(&s, &all(s.len())) * 100.0,
                acc(&t, &all(t.len())) * 100.0,
                t0.elapsed().as_secs_f64()
            ));
            models.push(Scored {
                name: format!("ViT from scratch, {steps} steps, seed {seed}"),
                group: "supervised".into(),
                source: s,
                target: t,
            });
        }
    }
    // supervised: probes on frozen random features and on pixels
    let probe = |name: String,
                 train: Vec<f32>,
                 dim: usize,
                 src: Vec<f32>,
                 tgt: Vec<f32>|
     -> Result<Scored, EvalError> {
        let f = Features {
            dim,
            data: train,
            labels: train_labels.clone(),
        };
        let p = fit_probe(&f, k, 0.2, 0, None, FitOptions::default(), |_| {})?;
        Ok(Scored {
            name,
            group: "supervised".into(),
            source: correct(&p.model.scores(&src, src_labels.len()), k, &src_labels),
            target: correct(&p.model.scores(&tgt, tgt_labels.len()), k, &tgt_labels),
        })
    };
    for &seed in &o.probe_seeds {
        let tr = random_features(&o.model, seed, &train_pre)?;
        let dim = tr.len() / train_pre.len();
        models.push(probe(
            format!("probe on random-init ViT features, seed {seed}"),
            tr,
            dim,
            random_features(&o.model, seed, &test_src)?,
            random_features(&o.model, seed, &test_tgt)?,
        )?);
    }
    let train_px: Vec<f32> = train_imgs.iter().flat_map(pixels16).collect();
    models.push(probe(
        "probe on raw pixels (16×16)".into(),
        train_px,
        768,
        src_px.concat(),
        tgt_px.concat(),
    )?);
    say(format!("{} supervised models", models.len()));
    // CLIPs: one style, two styles, equal images processed
    let readable: Vec<String> = names.iter().map(|c| c.replace('-', " ")).collect();
    let mut clip_index = Vec::new();
    for &seed in &o.seeds {
        for (tag, data) in [
            (o.source.clone(), &one),
            (format!("{}+{}", o.source, o.extra), &two),
        ] {
            let f2 = Fig2Options {
                out: o.out.clone(),
                data: data.clone(),
                eval: Vec::new(),
                classes: o.emoji.join("categories.txt"),
                concepts: 0,
                objectives: vec![Kind::CTr],
                seeds: vec![seed],
                min_images: o.images,
                max_images: o.images,
                stop_at_images: None,
                batch_size: o.batch_size,
                lr: o.lr,
                model: o.model.clone(),
                templates: o.templates.clone(),
            };
            let pairs = clip_data::pairs::Pairs::open(&data.display().to_string())
                .map_err(|e| EvalError::Invalid(e.to_string()))?;
            let settings = RunSettings {
                objective: Kind::CTr,
                seed,
                data: data.display().to_string(),
                data_pairs: pairs.len(),
                eval: vec![format!("categories_{}.jsonl (held-out concepts)", o.source)],
                concepts: k,
                min_images: o.images,
                max_images: o.images,
                batch_size: o.batch_size,
                lr: o.lr,
                warmup: (o.images / o.batch_size as u64 / 10).clamp(1, 100) as usize,
                model: serde_json::from_str(&o.model.to_json()).unwrap_or_default(),
                templates: o.templates.clone(),
            };
            let task = ZeroShotSet {
                images: test_src.clone(),
                labels: src_labels.clone(),
                class_names: readable.clone(),
                templates: o.templates.clone(),
            };
            let dir = o
                .out
                .join("runs")
                .join(format!("clip-{}-seed{seed}", tag.replace('+', "-")));
            let vocab = clip_train::objectives::vocab::Vocab::from_tokens(Vec::new());
            run_one(&f2, &settings, &dir, &pairs, &vocab, &task, 10.0, say)?;
            let emb = Embedder::load(&dir.join("model").display().to_string(), 64)?;
            let classifier = emb.classifier(&readable, &o.templates)?;
            let score = |imgs: &[Vec<f32>], labels: &[usize]| -> Vec<bool> {
                let mut out = Vec::new();
                for (c, l) in imgs.chunks(64).zip(labels.chunks(64)) {
                    let f = emb.encode_pixels(c.concat(), c.len(), false);
                    out.extend(correct(&classifier.scores(&f, c.len()), k, l));
                }
                out
            };
            clip_index.push(models.len());
            models.push(Scored {
                name: format!("zero-shot CLIP trained on {tag}, seed {seed}"),
                group: tag.clone(),
                source: score(&test_src, &src_labels),
                target: score(&test_tgt, &tgt_labels),
            });
        }
    }
    // trend, effective robustness, intervals
    let (fit, er) = effective(&models, &all(test_src.len()), &all(test_tgt.len()));
    let pairs: Vec<(usize, usize)> = clip_index.chunks(2).map(|c| (c[0], c[1])).collect();
    let (intervals, diff_intervals, pooled_intervals) = bootstrap(&models, o.bootstrap, &pairs, 0);
    let pooled = pooled_means(&er, &pairs);
    let rows_json: Vec<serde_json::Value> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({"model": m.name, "group": m.group,
                "source": acc(&m.source, &all(m.source.len())),
                "target": acc(&m.target, &all(m.target.len())),
                "effective_robustness": er[i], "interval95": [intervals[i].0, intervals[i].1]})
        })
        .collect();
    let any_above = clip_index.iter().any(|&i| intervals[i].0 > 0.0);
    let diversity = !diff_intervals.is_empty() && diff_intervals.iter().all(|d| d.0 > 0.0);
    let verdict = format!(
        "{} {}",
        if any_above {
            "Effective robustness reproduces: a CLIP's 95% interval lies above the supervised trend."
        } else {
            "Effective robustness does not reproduce: no CLIP's 95% interval lies above the supervised trend."
        },
        if diversity {
            "The diversity explanation is supported: training on a second style raises effective robustness (interval above 0)."
        } else {
            "The diversity explanation is not supported at this scale: the second style's gain in effective robustness has an interval that reaches 0 or below."
        }
    );
    let results = json!({
        "settings": {"source": o.source, "extra": o.extra, "target": o.target, "images": o.images,
            "seeds": o.seeds, "classifier_steps": o.classifier_steps, "classifier_seeds": o.classifier_seeds,
            "probe_seeds": o.probe_seeds, "bootstrap": o.bootstrap, "classes": k,
            "train_images": train_imgs.len(), "test_source": test_src.len(), "test_target": test_tgt.len(),
            "machine": machine()},
        "trend_logit": {"slope": fit.slope, "intercept": fit.intercept},
        "models": rows_json,
        "second_style_gain": pairs.iter().zip(&diff_intervals).zip(&o.seeds).map(|((&(a, b), d), seed)| json!({
            "seed": seed, "one_style": models[a].name, "two_styles": models[b].name,
            "gain": er[b] - er[a], "interval95": [d.0, d.1]})).collect::<Vec<_>>(),
        "over_seeds": json!({"seeds": pairs.len(),
            "one_style": pooled[0], "one_style_interval95": [pooled_intervals[0].0, pooled_intervals[0].1],
            "two_styles": pooled[1], "two_styles_interval95": [pooled_intervals[1].0, pooled_intervals[1].1],
            "gain": pooled[2], "gain_interval95": [pooled_intervals[2].0, pooled_intervals[2].1]}),
        "verdict": verdict,
    });
    crate::error::write_json(&o.out, "results.json", &results)?;
    draw(&models, &fit, &o.out.join("robustness.png"), o)?;
    clip_data::out::write_file(&o.out.join("report.md"), report(o, &results).as_bytes())?;
    Ok(results)
}

#[cfg(test)]
mod tests;
