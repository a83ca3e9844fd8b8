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

/// 95% percentile intervals of every model's effective robustness and of `b − a` for each pair
/// `(a, b)` of model indices, over `rounds` bootstrap resamples of the test images.
pub fn bootstrap(
    models: &[Scored],
    rounds: usize,
    pairs: &[(usize, usize)],
    seed: u64,
) -> (Vec<Interval>, Vec<Interval>) {
    let (ns, nt) = (models[0].source.len(), models[0].target.len());
    let mut rng = Rng::new(seed ^ 0xB007);
    let mut ers: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); models.len()];
    let mut diffs: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); pairs.len()];
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
    )
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
    let (intervals, diff_intervals) = bootstrap(&models, o.bootstrap, &pairs, 0);
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
        "second_style_gain": pairs.iter().zip(&diff_intervals).map(|(&(a, b), d)| json!({
            "one_style": models[a].name, "two_styles": models[b].name,
            "gain": er[b] - er[a], "interval95": [d.0, d.1]})).collect::<Vec<_>>(),
        "verdict": verdict,
    });
    crate::error::write_json(&o.out, "results.json", &results)?;
    draw(&models, &fit, &o.out.join("robustness.png"), o)?;
    clip_data::out::write_file(&o.out.join("report.md"), report(o, &results).as_bytes())?;
    Ok(results)
}

fn draw(models: &[Scored], fit: &LogitFit, path: &Path, o: &ShiftOptions) -> Result<(), EvalError> {
    let point = |m: &Scored| {
        (
            acc(&m.source, &all(m.source.len())) * 100.0,
            acc(&m.target, &all(m.target.len())) * 100.0,
        )
    };
    let sup: Vec<(f64, f64)> = models
        .iter()
        .filter(|m| m.group == "supervised")
        .map(point)
        .collect();
    let top = models
        .iter()
        .map(point)
        .map(|p| p.0.max(p.1))
        .fold(10.0, f64::max)
        .min(100.0);
    let line: Vec<(f64, f64)> = (1..=50)
        .map(|i| {
            let x = top * i as f64 / 50.0;
            (x, fit.predict(x / 100.0) * 100.0)
        })
        .collect();
    let mut series = vec![
        Series::new(
            "y = x",
            vec![(0.0, 0.0), (top, top)],
            chart::GREY,
            Style::Dashed,
        ),
        Series::new(
            "supervised trend (logit fit)",
            line,
            chart::BLUE,
            Style::Line,
        ),
        Series::new(
            &format!("supervised on {}", o.source),
            sup,
            chart::BLUE,
            Style::Points,
        ),
    ];
    let colors = [chart::ORANGE, [214, 39, 40]];
    let groups: Vec<&str> = {
        let mut g: Vec<&str> = models
            .iter()
            .filter(|m| m.group != "supervised")
            .map(|m| m.group.as_str())
            .collect();
        // one legend entry per group (seeds alternate the groups)
        g.sort();
        g.dedup();
        g
    };
    for (i, g) in groups.iter().enumerate() {
        let pts = models.iter().filter(|m| m.group == *g).map(point).collect();
        series.push(Series::new(
            &format!("zero-shot CLIP, trained on {g}"),
            pts,
            colors[i % 2],
            Style::Points,
        ));
    }
    Chart {
        title: format!(
            "Held-out concepts: {} (source) vs {} (unseen style)",
            o.source, o.target
        ),
        x_label: format!("{} accuracy (%)", o.source),
        y_label: format!("{} accuracy (%)", o.target),
        x_range: (0.0, top),
        y_range: (0.0, top),
        log2_x: false,
        series,
    }
    .save(path)?;
    Ok(())
}

fn report(o: &ShiftOptions, r: &serde_json::Value) -> String {
    let mut s = String::from("# Effective robustness to an art-style shift\n\n");
    let _ = writeln!(
        s,
        "Paper (§3.3, Figure 13): zero-shot CLIP is far more robust to distribution shift than ImageNet \
         models of the same ImageNet accuracy (it closes up to 75% of the robustness gap), which the paper \
         attributes to training on diverse data.\n\nHere: {} subcategory classes; supervised baselines \
         learn them from {} training concepts' `{}` images; CLIPs learn from captions of `{}` alone or \
         `{}+{}` ({} images processed each); all are tested on {} held-out concepts in `{}` and {} in `{}` \
         (a style none of them saw). Trend: logit(target) = {:.3}·logit(source) {:+.3}. {}.\n",
        r["settings"]["classes"],
        r["settings"]["train_images"],
        o.source,
        o.source,
        o.source,
        o.extra,
        o.images,
        r["settings"]["test_source"],
        o.source,
        r["settings"]["test_target"],
        o.target,
        r["trend_logit"]["slope"].as_f64().unwrap_or(0.0),
        r["trend_logit"]["intercept"].as_f64().unwrap_or(0.0),
        r["settings"]["machine"].as_str().unwrap_or("")
    );
    s += "| model | source | target | effective robustness (95% interval) |\n|---|---|---|---|\n";
    for m in r["models"].as_array().into_iter().flatten() {
        let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN) * 100.0;
        let _ = writeln!(
            s,
            "| {} | {:.1}% | {:.1}% | {:+.1} pt ({:+.1} … {:+.1}) |",
            m["model"].as_str().unwrap_or(""),
            f("source"),
            f("target"),
            f("effective_robustness"),
            m["interval95"][0].as_f64().unwrap_or(f64::NAN) * 100.0,
            m["interval95"][1].as_f64().unwrap_or(f64::NAN) * 100.0
        );
    }
    for g in r["second_style_gain"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "\nSecond training style: effective robustness {:+.1} pt (95% interval {:+.1} … {:+.1}).",
            g["gain"].as_f64().unwrap_or(f64::NAN) * 100.0,
            g["interval95"][0].as_f64().unwrap_or(f64::NAN) * 100.0,
            g["interval95"][1].as_f64().unwrap_or(f64::NAN) * 100.0
        );
    }
    let _ = writeln!(
        s,
        "\n## Verdict (pre-registered)\n\nRules: the effect reproduces if a CLIP's 95% interval lies above 0; \
         the diversity explanation is supported if the two-style CLIP's gain over the one-style CLIP has an \
         interval above 0.\n\n{}\n\n![robustness](robustness.png)\n",
        r["verdict"].as_str().unwrap_or("")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(group: &str, s: &[bool], t: &[bool]) -> Scored {
        Scored {
            name: group.into(),
            group: group.into(),
            source: s.to_vec(),
            target: t.to_vec(),
        }
    }

    #[test]
    fn effective_robustness_is_the_distance_above_the_trend() {
        // supervised: target = source − 0.3 roughly; the CLIP is on y = x
        let mk = |a: usize, b: usize| {
            let s: Vec<bool> = (0..10).map(|i| i < a).collect();
            let t: Vec<bool> = (0..10).map(|i| i < b).collect();
            (s, t)
        };
        let mut models = Vec::new();
        for (a, b) in [(4, 1), (6, 3), (8, 5)] {
            let (s, t) = mk(a, b);
            models.push(scored("supervised", &s, &t));
        }
        let (s, t) = mk(6, 6);
        models.push(scored("google", &s, &t));
        let (fit, er) = effective(&models, &all(10), &all(10));
        assert!(fit.slope > 0.0);
        assert!((er[1]).abs() < 0.05, "on the trend: {}", er[1]);
        assert!(er[3] > 0.2, "above the trend: {}", er[3]);
        let (iv, diff) = bootstrap(&models, 200, &[(1, 3)], 0);
        assert!(
            iv[3].0 <= er[3] && er[3] <= iv[3].1 + 1e-9,
            "{:?} {}",
            iv[3],
            er[3]
        );
        assert!(diff[0].1 > 0.0);
    }
}
