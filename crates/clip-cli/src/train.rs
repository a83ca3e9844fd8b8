//! `clip train --config FILE.toml` (every field also a flag) and `clip quickstart`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use clip_data::synth::{Split, SyntheticScenes, class_names};
use clip_model::{Clip, ClipConfig};
use clip_train::checkpoint::{self, TrainState};
use clip_train::trainer::{LoopOptions, PairSource, StepLog, Summary, ZeroShotSet, train};
use clip_train::{AdamW, AdamWConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// The training configuration file. Unknown keys are an error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// a preset name (`ViT-B-32`, `RN50`, …) or `small` (the quickstart's 64-px ViT)
    #[serde(default = "default_model")]
    pub model: String,
    /// custom dimensions in open_clip's schema; overrides `model`
    #[serde(default)]
    pub model_cfg: Option<ClipConfig>,
    /// `synthetic`, a manifest (.csv/.jsonl: image path + one or more captions), a directory of class
    /// folders, or WebDataset shards (`shards-{0000..0099}.tar`)
    #[serde(default = "default_data")]
    pub data: String,
    #[serde(default = "default_held_out")]
    pub held_out_fraction: f64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// pairs per forward pass (gradient caching); 0 = the whole batch
    #[serde(default)]
    pub micro_batch: usize,
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// when set, steps = epochs × pairs / batch_size (finite datasets only)
    #[serde(default)]
    pub epochs: Option<f64>,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    #[serde(default)]
    pub seed: u64,
    /// worker threads (0 = all cores)
    #[serde(default)]
    pub threads: usize,
    #[serde(default = "default_eval_every")]
    pub eval_every: usize,
    #[serde(default = "default_eval_samples")]
    pub eval_samples: usize,
    #[serde(default = "default_ckpt_every")]
    pub checkpoint_every: usize,
    #[serde(default)]
    pub checkpoint_minutes: f64,
    #[serde(default = "default_crop")]
    pub crop_scale: f64,
    #[serde(default = "default_bad")]
    pub max_bad_fraction: f64,
    /// clip the global gradient norm (off when absent)
    #[serde(default)]
    pub grad_clip_norm: Option<f64>,
    #[serde(default = "default_out")]
    pub out_dir: PathBuf,
    /// labelled evaluation manifest (`{"image", "label"}` rows) for zero-shot checks during training
    #[serde(default)]
    pub eval_manifest: Option<PathBuf>,
    /// class names, one per line (labels index into it)
    #[serde(default)]
    pub eval_classes: Option<PathBuf>,
    #[serde(default = "default_templates")]
    pub eval_templates: Vec<String>,
}

fn default_templates() -> Vec<String> {
    vec!["a {}".into(), "{}".into()]
}

fn default_model() -> String {
    "small".into()
}
fn default_data() -> String {
    "synthetic".into()
}
fn default_held_out() -> f64 {
    0.25
}
fn default_batch() -> usize {
    64
}
fn default_steps() -> usize {
    600
}
fn default_lr() -> f64 {
    1e-3
}
fn default_warmup() -> usize {
    50
}
fn default_wd() -> f64 {
    0.2
}
fn default_eval_every() -> usize {
    100
}
fn default_eval_samples() -> usize {
    240
}
fn default_ckpt_every() -> usize {
    200
}
fn default_crop() -> f64 {
    1.0
}
fn default_bad() -> f64 {
    0.05
}
fn default_out() -> PathBuf {
    PathBuf::from("runs/train")
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        toml::from_str("").expect("all fields have defaults")
    }
}

/// The quickstart's model: a 64-px ViT (patch 8, width 192, 4 layers) and a 4-layer text tower.
pub fn small_model() -> ClipConfig {
    ClipConfig::from_json(
        r#"{"embed_dim": 128, "quick_gelu": true,
            "vision_cfg": {"image_size": 64, "layers": 4, "width": 192, "patch_size": 8, "head_width": 48},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4}}"#,
    )
    .expect("valid config")
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML file with the settings below (flags override it)
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub held_out_fraction: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub micro_batch: Option<usize>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup: Option<usize>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long)]
    pub eval_samples: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    #[arg(long)]
    pub checkpoint_minutes: Option<f64>,
    #[arg(long)]
    pub crop_scale: Option<f64>,
    #[arg(long)]
    pub max_bad_fraction: Option<f64>,
    #[arg(long)]
    pub grad_clip_norm: Option<f64>,
    /// output directory (metrics.jsonl, checkpoints/, plot.png)
    #[arg(long = "out")]
    pub out_dir: Option<PathBuf>,
    #[arg(long)]
    pub eval_manifest: Option<PathBuf>,
    #[arg(long)]
    pub eval_classes: Option<PathBuf>,
    /// continue from OUT/checkpoints/latest
    #[arg(long)]
    pub resume: bool,
    /// print one JSON object with the summary at the end
    #[arg(long)]
    pub json: bool,
}

macro_rules! overlay {
    ($cfg:ident, $args:ident, $($f:ident),*) => { $( if let Some(v) = $args.$f.clone() { $cfg.$f = v; } )* };
}

/// Settings from the file (if any) with flags on top.
pub fn resolve(args: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read '{}'", p.display()))?;
            toml::from_str::<TrainConfig>(&text).map_err(|e| {
                anyhow::anyhow!("invalid training config '{}': {}", p.display(), e.message())
            })?
        }
        None => TrainConfig::default(),
    };
    overlay!(
        cfg,
        args,
        model,
        data,
        held_out_fraction,
        batch_size,
        micro_batch,
        steps,
        lr,
        warmup,
        weight_decay,
        seed
    );
    overlay!(
        cfg,
        args,
        eval_every,
        eval_samples,
        checkpoint_every,
        checkpoint_minutes,
        crop_scale,
        max_bad_fraction,
        out_dir
    );
    if args.epochs.is_some() {
        cfg.epochs = args.epochs;
    }
    if args.grad_clip_norm.is_some() {
        cfg.grad_clip_norm = args.grad_clip_norm;
    }
    if args.eval_manifest.is_some() {
        cfg.eval_manifest = args.eval_manifest.clone();
    }
    if args.eval_classes.is_some() {
        cfg.eval_classes = args.eval_classes.clone();
    }
    if cfg.batch_size == 0 {
        bail!("batch_size must be at least 1");
    }
    Ok(cfg)
}

fn model_config(cfg: &TrainConfig) -> Result<ClipConfig> {
    Ok(match (&cfg.model_cfg, cfg.model.as_str()) {
        (Some(c), _) => c.clone(),
        (None, "small") => small_model(),
        (None, name) => clip_model::preset(name)?,
    })
}

/// Held-out synthetic scenes as a zero-shot set over all 48 (colour, shape) classes.
pub fn synthetic_eval(data: &SyntheticScenes, n: usize, count: usize) -> ZeroShotSet {
    let pre = clip_data::Preprocess::clip(n);
    let (images, labels) = (0..count as u64)
        .map(|i| {
            let (img, _, scene) = data.sample(Split::HeldOut, 1_000_000 + i);
            (pre.apply(&img), scene.class())
        })
        .unzip();
    ZeroShotSet {
        images,
        labels,
        class_names: class_names(),
        templates: vec!["a {}".into(), "{}".into()],
    }
}

/// A labelled manifest as a zero-shot set (the first `limit` rows; 0 = all).
pub fn labelled_eval(
    manifest: &Path,
    classes: &Path,
    templates: &[String],
    n: usize,
    limit: usize,
) -> Result<ZeroShotSet> {
    let rows = clip_data::emoji::read_labelled(manifest)?;
    let class_names = crate::io::read_lines(classes)?;
    let pre = clip_data::Preprocess::clip(n);
    let rows: Vec<_> = if limit > 0 {
        rows.into_iter().take(limit).collect()
    } else {
        rows
    };
    let mut images = Vec::with_capacity(rows.len());
    let mut labels = Vec::with_capacity(rows.len());
    for (path, label) in rows {
        if label >= class_names.len() {
            bail!(
                "label {label} of '{}' is not in '{}' ({} classes)",
                path.display(),
                classes.display(),
                class_names.len()
            );
        }
        images.push(pre.load(&path)?);
        labels.push(label);
    }
    Ok(ZeroShotSet {
        images,
        labels,
        class_names,
        templates: templates.to_vec(),
    })
}

/// A finite training set: a manifest, class folders, or WebDataset shards.
enum Dataset {
    Manifest(clip_data::manifest::Manifest),
    Shards(clip_data::shards::Shards),
}

impl PairSource for Dataset {
    fn len(&self) -> Option<u64> {
        Some(match self {
            Dataset::Manifest(m) => m.pairs.len(),
            Dataset::Shards(s) => s.len(),
        } as u64)
    }
    fn pair(&self, index: u64) -> Result<(clip_data::Rgb8, String), String> {
        match self {
            Dataset::Manifest(m) => m.pair(index as usize),
            Dataset::Shards(s) => s.pair(index as usize),
        }
    }
}

/// `data`: a .csv/.jsonl manifest, a directory of class folders (captions "a photo of a {class}."),
/// or WebDataset shards (a .tar path or brace pattern such as `shards-{0000..0099}.tar`).
fn open_dataset(spec: &str) -> Result<Dataset> {
    let path = Path::new(spec);
    if spec.ends_with(".tar") || spec.contains('{') {
        let shards = clip_data::shards::Shards::open(spec)?;
        for w in &shards.warnings {
            eprintln!("warning: {w}");
        }
        return Ok(Dataset::Shards(shards));
    }
    if path.is_dir() {
        let mut pairs = Vec::new();
        for class in std::fs::read_dir(path).with_context(|| format!("cannot read '{spec}'"))? {
            let class = class?.path();
            if !class.is_dir() {
                continue;
            }
            let name = class
                .file_name()
                .map(|n| n.to_string_lossy().replace('_', " "))
                .unwrap_or_default();
            let mut images = crate::embed::images_in(&class).unwrap_or_default();
            images.sort();
            pairs.extend(
                images
                    .into_iter()
                    .map(|i| (i, format!("a photo of a {name}."))),
            );
        }
        if pairs.is_empty() {
            bail!("'{spec}' has no class folders with images");
        }
        pairs.sort();
        return Ok(Dataset::Manifest(clip_data::manifest::Manifest {
            pairs,
            alpha: clip_data::Alpha::Drop,
        }));
    }
    Ok(Dataset::Manifest(clip_data::manifest::Manifest::read(
        path,
    )?))
}

fn progress(steps: usize, done: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("template"),
    );
    bar.set_position(done as u64);
    bar
}

/// Run training as configured; returns the summary and the model.
pub fn run_training(
    cfg: &TrainConfig,
    resume: bool,
    quiet: bool,
) -> Result<(Summary, Clip, Option<SyntheticScenes>)> {
    let mcfg = model_config(cfg)?;
    let device = clip_model::default_device().autodiff();
    let out = &cfg.out_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create '{}'", out.display()))?;
    let synthetic = (cfg.data == "synthetic")
        .then(|| SyntheticScenes::new(cfg.seed, mcfg.image_size(), cfg.held_out_fraction));
    let manifest = match &synthetic {
        Some(_) => None,
        None => Some(open_dataset(&cfg.data)?),
    };
    let source: &dyn PairSource = match (&synthetic, &manifest) {
        (Some(s), _) => s,
        (None, Some(m)) => m,
        _ => unreachable!(),
    };
    let steps = match (cfg.epochs, source.len()) {
        (Some(e), Some(n)) => ((e * n as f64) / cfg.batch_size as f64).ceil().max(1.0) as usize,
        (Some(_), None) => {
            bail!("`epochs` needs a finite dataset; use `steps` with synthetic data")
        }
        (None, _) => cfg.steps,
    };
    let (mut clip, mut opt, mut state) = if resume {
        let ckpt = checkpoint::latest(out).with_context(|| {
            format!(
                "--resume: no checkpoint in '{}'",
                out.join("checkpoints").display()
            )
        })?;
        checkpoint::load(&ckpt, &mcfg, &device)?
    } else {
        if checkpoint::latest(out).is_some() {
            bail!(
                "'{}' already holds a run; pass --resume to continue it or choose another --out",
                out.display()
            );
        }
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
        let clip = Clip::random(&mcfg, cfg.seed, &device)?;
        let mut oc = AdamWConfig::paper(matches!(
            mcfg.vision_kind()?,
            clip_model::config::VisionKind::Vit { .. }
        ));
        oc.weight_decay = cfg.weight_decay;
        let opt = AdamW::new(oc, &clip);
        (
            clip,
            opt,
            TrainState {
                seed: cfg.seed,
                ..Default::default()
            },
        )
    };
    let eval = match (&synthetic, &cfg.eval_manifest, &cfg.eval_classes) {
        (_, Some(m), Some(c)) => Some(labelled_eval(
            m,
            c,
            &cfg.eval_templates,
            mcfg.image_size(),
            cfg.eval_samples,
        )?),
        (_, Some(_), None) | (_, None, Some(_)) => {
            bail!("eval_manifest and eval_classes go together")
        }
        (Some(s), None, None) => Some(synthetic_eval(s, mcfg.image_size(), cfg.eval_samples)),
        (None, None, None) => None,
    };
    let options = LoopOptions {
        steps,
        batch_size: cfg.batch_size,
        micro_batch: if cfg.micro_batch == 0 {
            cfg.batch_size
        } else {
            cfg.micro_batch
        },
        lr: cfg.lr,
        warmup: cfg.warmup,
        seed: cfg.seed,
        crop_scale: cfg.crop_scale,
        eval_every: cfg.eval_every,
        checkpoint_every: cfg.checkpoint_every,
        checkpoint_minutes: cfg.checkpoint_minutes,
        max_bad_fraction: cfg.max_bad_fraction,
        grad_clip_norm: cfg.grad_clip_norm,
        stop_at: None,
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        progress(steps, state.step)
    };
    let summary = train(
        &mut clip,
        &mut opt,
        source,
        eval.as_ref(),
        &options,
        out,
        &mut state,
        |log: &StepLog| {
            let zs = log
                .zero_shot_top1
                .map(|z| format!(" zero-shot {:.1}%", z * 100.0))
                .unwrap_or_default();
            bar.set_message(format!(
                "loss {:.3} lr {:.2e} scale {:.1} {:.0} samples/s{zs}",
                log.loss, log.lr, log.logit_scale, log.samples_per_s
            ));
            bar.set_position(log.step as u64);
        },
    )?;
    bar.finish_and_clear();
    let all = read_history(out)?;
    crate::plot::write_plot(&out.join("plot.png"), &all).context("writing plot.png")?;
    if summary.bad_samples > 0 || summary.truncated_captions > 0 {
        eprintln!(
            "skipped {} bad samples; truncated {} captions longer than the context",
            summary.bad_samples, summary.truncated_captions
        );
    }
    Ok((summary, clip, synthetic))
}

/// Every logged step of the run (including before a resume).
fn read_history(out: &Path) -> Result<Vec<StepLog>> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).context("metrics.jsonl"))
        .collect()
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let cfg = resolve(args)?;
    let (summary, _, _) = run_training(&cfg, args.resume, args.json)?;
    let zs = summary
        .zero_shot_top1
        .map(|z| format!(", zero-shot top-1 {:.1}%", z * 100.0))
        .unwrap_or_default();
    eprintln!(
        "trained {} steps in {:.0} s ({:.1} samples/s), final loss {:.3}{zs}; outputs in {}",
        summary.steps,
        summary.seconds,
        summary.samples_per_s,
        summary.final_loss,
        cfg.out_dir.display()
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({
                "steps": summary.steps, "final_loss": summary.final_loss, "samples_per_s": summary.samples_per_s,
                "seconds": summary.seconds, "zero_shot_top1": summary.zero_shot_top1,
                "bad_samples": summary.bad_samples, "truncated_captions": summary.truncated_captions,
            }))?
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// optimiser steps (batch 64); the default takes about four minutes on 2 cores
    #[arg(long, default_value_t = 250)]
    pub steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// scratch directory (its earlier quickstart run is replaced)
    #[arg(long, default_value = "runs/quickstart")]
    pub out: PathBuf,
    /// end with one JSON object (zero_shot_top1, chance, steps, samples_per_s, seconds, …)
    #[arg(long)]
    pub json: bool,
}

/// Generate the synthetic scenes, train the small ViT CLIP, report zero-shot accuracy on held-out
/// (colour, shape) combinations beside chance, and classify a few new images by typed labels.
pub fn quickstart(args: &QuickstartArgs) -> Result<()> {
    let cfg = TrainConfig {
        steps: args.steps,
        seed: args.seed,
        eval_every: (args.steps / 5).max(1),
        checkpoint_every: args.steps,
        out_dir: args.out.clone(),
        ..TrainConfig::default()
    };
    // the quickstart's own scratch directory: an earlier quickstart there is replaced
    let _ = std::fs::remove_dir_all(args.out.join("checkpoints"));
    let _ = std::fs::remove_file(args.out.join("metrics.jsonl"));
    let (summary, clip, synthetic) = run_training(&cfg, false, args.json)?;
    let data = synthetic.expect("quickstart uses synthetic data");
    let names = class_names();
    let chance = 1.0 / names.len() as f64;
    let held: Vec<&str> = data.held_out.iter().map(|&c| names[c].as_str()).collect();
    let top1 = summary.zero_shot_top1.unwrap_or(0.0);
    // a few new images of held-out combinations, classified by typed labels
    let n = clip.config.image_size();
    let pre = clip_data::Preprocess::clip(n);
    let samples: Vec<(Vec<f32>, String)> = (0..4u64)
        .map(|i| {
            let (img, _, scene) = data.sample(Split::HeldOut, 9_000_000 + i);
            (pre.apply(&img), names[scene.class()].clone())
        })
        .collect();
    let set = ZeroShotSet {
        images: samples.iter().map(|(p, _)| p.clone()).collect(),
        labels: vec![0; samples.len()],
        class_names: names.clone(),
        templates: vec!["a {}".into(), "{}".into()],
    };
    let probs = crate::classify::zero_shot_probs(&clip, &set.images, &names, &set.templates)?;
    if !args.json {
        println!(
            "held-out (never trained on) combinations: {}",
            held.join(", ")
        );
        println!(
            "zero-shot top-1 on {} held-out images over all {} classes: {:.1}% (chance {:.1}%)",
            cfg.eval_samples,
            names.len(),
            top1 * 100.0,
            chance * 100.0
        );
        println!(
            "{} steps, {:.1} samples/s, {:.0} s; loss and accuracy curves: {}",
            summary.steps,
            summary.samples_per_s,
            summary.seconds,
            args.out.join("plot.png").display()
        );
        for ((_, truth), row) in samples.iter().zip(probs.chunks(names.len())) {
            let mut order: Vec<usize> = (0..names.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let top: Vec<String> = order[..3]
                .iter()
                .map(|&i| format!("{} {:.0}%", names[i], row[i] * 100.0))
                .collect();
            println!("  image of a {truth:<16} → {}", top.join(", "));
        }
    } else {
        println!(
            "{}",
            serde_json::json!({
                "zero_shot_top1": top1, "chance": chance, "steps": summary.steps,
                "samples_per_s": summary.samples_per_s, "seconds": summary.seconds,
                "final_loss": summary.final_loss, "held_out_classes": held,
            })
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ImportEmojiArgs {
    /// directory holding the unpacked npm packages: NAME/package/… for emoji-datasource,
    /// emoji-datasource-google, emoji-datasource-twitter and cldr-annotations-full
    #[arg(long)]
    pub packages: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0.1)]
    pub held_out_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn import_emoji(args: &ImportEmojiArgs) -> Result<()> {
    let s = clip_data::emoji::import(
        &clip_data::emoji::Packages::under(&args.packages),
        &args.out,
        args.held_out_fraction,
        args.seed,
    )?;
    eprintln!(
        "{} concepts ({} for training, {} held out), {} training pairs; manifests in {}",
        s.concepts,
        s.train_concepts,
        s.held_out_concepts,
        s.train_pairs,
        args.out.display()
    );
    Ok(())
}
