//! `clip repro fig2`: Figure 2 at CPU scale. The four objectives of
//! [`clip_train::objectives`] (C-BoW, C-Tr, P-BoW, P-LM; the sigmoid P-BoW ablation on request)
//! train the same small ViT on the same batches, and each is evaluated zero-shot at 2^10 … 2^17
//! images processed on a fixed task of 128 concepts in art styles the models did not train on.
//!
//! Every (objective, seed) run lives in `OUT/runs/NAME-seedS/`: `settings.json` (what changes
//! results; resuming with another value is an error naming it), `state.safetensors` (parameters
//! and AdamW moments at the last checkpoint) and `progress.json` (the data position and every
//! checkpoint's scores, FLOPs and time). A run killed or stopped with `--stop-at-images` continues
//! from its last checkpoint as if it had never stopped. The whole experiment writes
//! `results.json`, `report.md` and `fig2.png` from whatever the runs hold.
//!
//! The verdict rule is fixed before any run (pre-registered): the finding reproduces if, on the
//! seed means, C-BoW > P-BoW > P-LM at ≥ 3 of the last 4 checkpoints, and at the last checkpoint
//! the seed ranges do not overlap (min of the stronger above max of the weaker). A predictive
//! objective's score at a checkpoint is its best rule (P-BoW: mean log-probability or PMI; P-LM:
//! sum, mean or PMI): generous to the objectives the paper ranks below the contrastive one, so a
//! "reproduces" cannot come from a poor scoring rule. Efficiency ratios are the paper's:
//! the images the stronger objective needs to reach the weaker one's final accuracy, interpolated
//! in log₂ N (`≥ r` when it is already there at its first checkpoint; "never" when it never gets
//! there).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use clip_data::dataset::EvalSet;
use clip_data::pairs::Pairs;
use clip_data::rng::{Rng, shuffle};
use clip_model::ClipConfig;
use clip_train::objectives::sentences::SentenceSampled;
use clip_train::objectives::{Kind, Model, Scores, vocab::Vocab};
use clip_train::trainer::{Counters, LoopOptions, PairSource, ZeroShotSet, fill};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::fig2_report::{Curves, efficiency, markdown, plot, verdict};
use crate::error::EvalError;

/// What Figure 2 is run with.
#[derive(Debug, Clone)]
pub struct Fig2Options {
    pub out: PathBuf,
    /// the training manifest (a caption-variety setting of `clip import-emoji`)
    pub data: PathBuf,
    /// labelled manifests of styles the models do not train on
    pub eval: Vec<PathBuf>,
    pub classes: PathBuf,
    /// concepts in the fixed zero-shot task
    pub concepts: usize,
    pub objectives: Vec<Kind>,
    pub seeds: Vec<u64>,
    /// first and last checkpoint, in images processed (powers of two)
    pub min_images: u64,
    pub max_images: u64,
    /// stop every run at this many images now (the schedule still spans `max_images`)
    pub stop_at_images: Option<u64>,
    pub batch_size: usize,
    pub lr: f64,
    pub model: ClipConfig,
    pub templates: Vec<String>,
}

/// "N threads on CPU MODEL" (Linux's `/proc/cpuinfo`; "an unknown CPU" elsewhere).
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".into());
    match rayon::current_num_threads() {
        1 => format!("1 thread on {model}"),
        n => format!("{n} threads on {model}"),
    }
}

/// The settings that change a run's results (a resume must match them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub objective: Kind,
    pub seed: u64,
    pub data: String,
    pub data_pairs: usize,
    pub eval: Vec<String>,
    pub concepts: usize,
    pub min_images: u64,
    pub max_images: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: usize,
    pub model: serde_json::Value,
    pub templates: Vec<String>,
}

/// One zero-shot checkpoint of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub images: u64,
    pub step: usize,
    /// training FLOPs so far (forward × 3, analytic)
    pub flops: f64,
    /// seconds of training (evaluation excluded)
    pub train_seconds: f64,
    pub loss: f32,
    /// (top-1, top-5) per scoring rule
    pub scores: Scores,
}

impl Checkpoint {
    /// The headline (top-1, top-5): the objective's rule with the best top-1.
    pub fn headline(&self) -> (f64, f64) {
        self.scores
            .values()
            .copied()
            .fold((0.0, 0.0), |best, s| if s.0 > best.0 { s } else { best })
    }
    pub fn top1(&self) -> f64 {
        self.headline().0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Progress {
    step: usize,
    counters: Counters,
    checkpoints: Vec<Checkpoint>,
    train_seconds: f64,
}

/// The finished (or partial) experiment.
pub struct Fig2 {
    pub results: serde_json::Value,
    pub verdict: String,
    pub report: PathBuf,
}

fn invalid(m: impl Into<String>) -> EvalError {
    EvalError::Invalid(m.into())
}

pub(super) fn log2(n: u64) -> f64 {
    (n as f64).log2()
}

/// The fixed task: `k` concepts (seeded, the same for every run) present in every eval manifest,
/// their rows in those manifests, labels renumbered 0…k−1.
fn eval_task(o: &Fig2Options, n: usize) -> Result<ZeroShotSet, EvalError> {
    let sets = o
        .eval
        .iter()
        .map(|m| EvalSet::classification(&m.display().to_string(), Some(&o.classes)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut common: Option<BTreeSet<usize>> = None;
    for s in &sets {
        let have: BTreeSet<usize> = s.labels.iter().copied().collect();
        common = Some(match common {
            None => have,
            Some(c) => c.intersection(&have).copied().collect(),
        });
    }
    let mut pool: Vec<usize> = common.unwrap_or_default().into_iter().collect();
    if pool.len() < o.concepts.max(2) {
        return Err(invalid(format!(
            "--concepts {}: the eval manifests share only {} concepts",
            o.concepts,
            pool.len()
        )));
    }
    shuffle(&mut pool, &mut Rng::new(0xF162));
    let mut chosen = pool[..o.concepts].to_vec();
    chosen.sort();
    let names = &sets[0].class_names;
    let pre = clip_data::Preprocess::clip(n);
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for s in &sets {
        for (row, &l) in s.images.iter().zip(&s.labels) {
            if let Ok(c) = chosen.binary_search(&l) {
                let img = row.load(pre.alpha).map_err(invalid)?;
                images.push(pre.apply(&img));
                labels.push(c);
            }
        }
    }
    Ok(ZeroShotSet {
        images,
        labels,
        class_names: chosen.iter().map(|&c| names[c].clone()).collect(),
        templates: o.templates.clone(),
    })
}

/// `None` when `path` does not exist; an error naming it when it exists but cannot be read as a
/// `T` (a damaged or foreign file is never silently started over).
pub fn read_json<T: for<'a> Deserialize<'a>>(path: &Path) -> Result<Option<T>, EvalError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(invalid(format!("cannot read '{}': {e}", path.display()))),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        invalid(format!(
            "'{}' is damaged or from another version ({e}); remove its run folder to start that run over",
            path.display()
        ))
    })
}

/// The state file of a run at `step` (each checkpoint writes a new one; `progress.json` names the
/// step of the one to resume from, so a kill between the two writes loses nothing).
fn state_file(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("state-{step:07}.safetensors"))
}

/// The first setting that differs between a saved run and this one, as (name, saved, now).
fn first_difference(saved: &RunSettings, now: &RunSettings) -> Option<(String, String, String)> {
    let (a, b) = (json!(saved), json!(now));
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return None;
    };
    a.iter()
        .find(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.to_string(), b[k].to_string()))
}

/// Mean caption length in tokens (start and end included, cut to the context).
fn mean_tokens(captions: &[&str], ctx: usize) -> f64 {
    let tok = clip_tokenizer::Tokenizer::global();
    let total: usize = captions
        .iter()
        .map(|c| tok.encode_truncated(c, ctx).0.len())
        .sum();
    total as f64 / captions.len().max(1) as f64
}

/// Train (or continue) one run up to its stop, checkpointing at every budget.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_one(
    o: &Fig2Options,
    settings: &RunSettings,
    dir: &Path,
    data: &dyn PairSource,
    vocab: &Vocab,
    task: &ZeroShotSet,
    tokens: f64,
    say: &mut dyn FnMut(String),
) -> Result<(Vec<Checkpoint>, Option<usize>), EvalError> {
    let device = clip_model::default_device().autodiff();
    let kind = settings.objective;
    let mut model = Model::new(kind, &o.model, vocab, settings.seed, &device)
        .map_err(|e| invalid(e.to_string()))?;
    let settings_path = dir.join("settings.json");
    let progress_path = dir.join("progress.json");
    let mut progress = Progress::default();
    if let Some(saved) = read_json::<RunSettings>(&settings_path)? {
        if let Some((name, was, now)) = first_difference(&saved, settings) {
            return Err(invalid(format!(
                "'{}' was started with {name} = {was}; this run asks for {now}. Resume with the same \
                 settings, or choose another --out",
                dir.display()
            )));
        }
        if let Some(p) = read_json::<Progress>(&progress_path)?
            && p.step > 0
        {
            let state_path = state_file(dir, p.step);
            model = restore(model, &state_path)?;
            if model.steps() as usize != p.step {
                return Err(invalid(format!(
                    "'{}' holds step {} but its progress says {}; remove the run folder to start it over",
                    state_path.display(),
                    model.steps(),
                    p.step
                )));
            }
            progress = p;
        }
    } else {
        clip_data::out::create_dir(dir)?;
        let text = serde_json::to_string_pretty(settings).map_err(|e| invalid(e.to_string()))?;
        clip_data::out::write_file(&settings_path, text.as_bytes())?;
    }
    let batch = o.batch_size;
    let total_steps = (o.max_images / batch as u64) as usize;
    let stop = o.stop_at_images.map_or(total_steps, |s| {
        ((s / batch as u64) as usize).min(total_steps)
    });
    let budgets: Vec<u64> = (log2(o.min_images) as u32..=log2(o.max_images) as u32)
        .map(|k| 1u64 << k)
        .collect();
    let loop_options = LoopOptions {
        steps: total_steps,
        batch_size: batch,
        micro_batch: batch,
        lr: o.lr,
        warmup: settings.warmup,
        seed: settings.seed,
        crop_scale: 1.1,
        eval_every: 0,
        checkpoint_every: 0,
        checkpoint_minutes: 0.0,
        max_bad_fraction: 0.01,
        grad_clip_norm: None,
        objective: Default::default(),
        stop_at: None,
        heavy_augmentation: kind == Kind::CTrHeavyAugmentation,
    };
    let n = o.model.image_size();
    let ctx = o.model.text_cfg.context_length;
    let pre = clip_data::Preprocess::clip(n);
    let tok = clip_tokenizer::Tokenizer::global();
    let per_sample = 3.0 * model.forward_flops(tokens);
    while progress.step < stop {
        let t0 = Instant::now();
        let lr = clip_train::cosine_lr(o.lr, settings.warmup, total_steps, progress.step);
        let b = fill(data, &loop_options, n, &pre, progress.counters.clone())
            .map_err(|e| invalid(e.to_string()))?;
        progress.counters = b.counters;
        let rows: Vec<Vec<u32>> = b
            .pairs
            .iter()
            .map(|(_, c)| tok.encode_truncated(c, ctx).0)
            .collect();
        let flat: Vec<f32> = b
            .pairs
            .iter()
            .flat_map(|(p, _)| p.iter().copied())
            .collect();
        let images = Tensor::<4>::from_data(TensorData::new(flat, [rows.len(), 3, n, n]), &device);
        let loss = model
            .step(images, &rows, lr)
            .map_err(|e| invalid(e.to_string()))?;
        if !loss.is_finite() {
            return Err(invalid(format!(
                "{kind} seed {}: the loss became {loss} at step {}; the last checkpoint in '{}' is intact",
                settings.seed,
                progress.step + 1,
                dir.display()
            )));
        }
        progress.step += 1;
        progress.train_seconds += t0.elapsed().as_secs_f64();
        let images_done = (progress.step * batch) as u64;
        if budgets.contains(&images_done) || progress.step == stop {
            let scores = model.zero_shot(task).map_err(|e| invalid(e.to_string()))?;
            let cp = Checkpoint {
                images: images_done,
                step: progress.step,
                flops: per_sample * images_done as f64,
                train_seconds: progress.train_seconds,
                loss,
                scores,
            };
            say(format!(
                "{kind} seed {}: 2^{:.1} images, loss {:.3}, zero-shot top-1 {:.1}% ({:.0} s training)",
                settings.seed,
                log2(images_done),
                cp.loss,
                cp.top1() * 100.0,
                cp.train_seconds
            ));
            if budgets.contains(&images_done) {
                progress.checkpoints.retain(|c| c.images != images_done);
                progress.checkpoints.push(cp);
            }
            let earlier = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok().map(|e| e.path()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let state_path = state_file(dir, progress.step);
            save(&model, &state_path)?;
            let text =
                serde_json::to_string_pretty(&progress).map_err(|e| invalid(e.to_string()))?;
            clip_data::out::write_file(&progress_path, text.as_bytes())?;
            // only now is an older state no longer the one to resume from
            for p in earlier {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("state-") && name.ends_with(".safetensors") && p != state_path {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
    if progress.step >= total_steps
        && let Some(clip) = model.clip()
    {
        // the finished contrastive models are ordinary CLIP checkpoints (clip eval takes them)
        clip_model::save_clip(clip, &dir.join("model"))
            .map_err(|e| invalid(format!("cannot save '{}': {e}", dir.display())))?;
    }
    Ok((progress.checkpoints, model.output_units()))
}

fn save(model: &Model, path: &Path) -> Result<(), EvalError> {
    model.save_state(path).map_err(invalid)
}

fn restore(mut model: Model, path: &Path) -> Result<Model, EvalError> {
    model.load_state(path).map_err(invalid)?;
    Ok(model)
}

/// Run (or continue) every objective and seed, then write the results, report and plot.
pub fn run(o: &Fig2Options, say: &mut dyn FnMut(String)) -> Result<Fig2, EvalError> {
    if !o.batch_size.is_power_of_two() {
        return Err(invalid(format!(
            "--batch-size {} must be a power of two (checkpoints fall at powers of two of images)",
            o.batch_size
        )));
    }
    for (name, v) in [
        ("--min-images", o.min_images),
        ("--max-images", o.max_images),
    ] {
        if !v.is_power_of_two() || v < o.batch_size as u64 {
            return Err(invalid(format!(
                "{name} {v} must be a power of two and at least the batch size ({})",
                o.batch_size
            )));
        }
    }
    if o.min_images > o.max_images {
        return Err(invalid(format!(
            "--min-images {} is above --max-images {}",
            o.min_images, o.max_images
        )));
    }
    if o.objectives.is_empty() || o.seeds.is_empty() {
        return Err(invalid("name at least one objective and one seed"));
    }
    let mut seen = BTreeSet::new();
    if let Some(k) = o.objectives.iter().find(|k| !seen.insert(k.name())) {
        return Err(invalid(format!("--objectives names '{k}' twice")));
    }
    let mut seen = BTreeSet::new();
    if let Some(s) = o.seeds.iter().find(|s| !seen.insert(**s)) {
        return Err(invalid(format!("--seeds names {s} twice")));
    }
    clip_data::out::check_output_dir(&o.out, "fig2.json", "clip repro fig2 run")?;
    let data = Pairs::open(&o.data.display().to_string()).map_err(|e| invalid(e.to_string()))?;
    let Pairs::Manifest(manifest) = &data else {
        return Err(invalid(format!(
            "'{}': Figure 2 trains from a manifest (its captions make the predictive objectives' vocabulary)",
            o.data.display()
        )));
    };
    let captions: Vec<&str> = manifest.pairs.iter().map(|(_, c)| c.as_str()).collect();
    let ctx = o.model.text_cfg.context_length;
    let tokens = mean_tokens(&captions, ctx);
    let n = o.model.image_size();
    let task = eval_task(o, n)?;
    clip_data::out::create_dir(&o.out)?;
    // marks the folder as this experiment's
    crate::error::write_json(&o.out, "fig2.json", &json!({"experiment": "fig2"}))?;
    let warmup = (o.max_images / o.batch_size as u64 / 10).clamp(1, 100) as usize;
    let mut curves: Curves = BTreeMap::new();
    let mut runs = Vec::new();
    let mut complete = true;
    for &kind in &o.objectives {
        let vocab = kind.vocab(ctx, captions.iter().copied());
        for &seed in &o.seeds {
            let settings = RunSettings {
                objective: kind,
                seed,
                data: o.data.display().to_string(),
                data_pairs: captions.len(),
                eval: o.eval.iter().map(|p| p.display().to_string()).collect(),
                concepts: o.concepts,
                min_images: o.min_images,
                max_images: o.max_images,
                batch_size: o.batch_size,
                lr: o.lr,
                warmup,
                model: serde_json::from_str(&o.model.to_json()).unwrap_or_default(),
                templates: o.templates.clone(),
            };
            let dir = o.out.join("runs").join(format!("{kind}-seed{seed}"));
            let sampled;
            let source: &dyn PairSource = if kind == Kind::CTrSentenceSampling {
                sampled = SentenceSampled::new(manifest, seed);
                &sampled
            } else {
                &data
            };
            let (cps, units) = run_one(o, &settings, &dir, source, &vocab, &task, tokens, say)?;
            complete &= cps.iter().any(|c| c.images == o.max_images);
            for c in &cps {
                curves
                    .entry(kind)
                    .or_default()
                    .entry(c.images)
                    .or_default()
                    .push(c.headline());
            }
            let samples_per_s = cps
                .last()
                .map_or(0.0, |c| c.images as f64 / c.train_seconds.max(1e-9));
            runs.push(json!({"objective": kind, "seed": seed, "checkpoints": cps,
                "samples_per_s": samples_per_s, "output_units": units,
                "forward_flops_per_sample":
                cps.last().map_or(0.0, |c| c.flops / c.images as f64 / 3.0)}));
        }
    }
    let seeds = o.seeds.len();
    let (verdict_text, verdict_json) = verdict(&curves, seeds, complete);
    let pairs = [
        (Kind::CBow, Kind::PBow),
        (Kind::PBow, Kind::PLm),
        (Kind::CBow, Kind::PLm),
    ];
    let mut ratios = Vec::new();
    for (s, w) in pairs {
        if curves.contains_key(&s) && curves.contains_key(&w) {
            let (r, text) = efficiency(&curves, s, w, seeds);
            ratios.push(json!({"stronger": s, "weaker": w, "ratio": r, "text": text}));
        }
    }
    let results = json!({
        "settings": {"data": o.data, "pairs": captions.len(), "eval": o.eval, "concepts": o.concepts, "task_images": task.images.len(),
            "seeds": o.seeds, "batch_size": o.batch_size, "lr": o.lr, "min_images": o.min_images,
            "max_images": o.max_images, "mean_caption_tokens": tokens,
            "model": serde_json::from_str::<serde_json::Value>(&o.model.to_json()).unwrap_or_default(),
            "machine": machine()},
        "runs": runs,
        "efficiency": ratios,
        "verdict": verdict_json,
        "verdict_text": verdict_text,
    });
    crate::error::write_json(&o.out, "results.json", &results)?;
    plot(&curves, &results, seeds, &o.out.join("fig2.png"))?;
    let report = o.out.join("report.md");
    clip_data::out::write_file(
        &report,
        markdown(o, &curves, &results, seeds, &verdict_text).as_bytes(),
    )?;
    Ok(Fig2 {
        results,
        verdict: verdict_text,
        report,
    })
}
