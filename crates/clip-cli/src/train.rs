//! `clip train`, `clip quickstart` and `clip import-emoji`: arguments and printing; training is
//! `clip_train::run`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use clip_data::synth::{Split, class_names};
use clip_train::{RunOptions, RunOutput, TrainConfig};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML file with the settings below (flags override it)
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub held_out_fraction: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub micro_batch: Option<usize>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, allow_hyphen_values = true)]
    pub epochs: Option<f64>,
    #[arg(long, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup: Option<usize>,
    #[arg(long, allow_hyphen_values = true)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long)]
    pub eval_samples: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    #[arg(long, allow_hyphen_values = true)]
    pub checkpoint_minutes: Option<f64>,
    #[arg(long, allow_hyphen_values = true)]
    pub crop_scale: Option<f64>,
    #[arg(long, allow_hyphen_values = true)]
    pub max_bad_fraction: Option<f64>,
    #[arg(long, allow_hyphen_values = true)]
    pub grad_clip_norm: Option<f64>,
    /// training objective: clip (softmax contrastive) or siglip (pairwise sigmoid)
    #[arg(long, value_parser = ["clip", "siglip"])]
    pub loss: Option<String>,
    /// output directory (metrics.jsonl, checkpoints/, plot.png)
    #[arg(long = "out")]
    pub out_dir: Option<PathBuf>,
    #[arg(long)]
    pub eval_manifest: Option<PathBuf>,
    #[arg(long)]
    pub eval_classes: Option<PathBuf>,
    /// continue the run in --out from its newest complete checkpoint
    #[arg(long)]
    pub resume: bool,
    /// with --resume: allow this setting to differ from the saved run (repeatable; recorded)
    #[arg(long = "change", requires = "resume")]
    pub change: Vec<String>,
    /// start over in an --out that holds a run (its checkpoints, metrics and plot are removed)
    #[arg(long, conflicts_with = "resume")]
    pub restart: bool,
    /// print one JSON object with the summary at the end
    #[arg(long)]
    pub json: bool,
}

macro_rules! overlay {
    ($cfg:ident, $args:ident, $($f:ident),*) => { $( if let Some(v) = $args.$f.clone() { $cfg.$f = v; } )* };
}
macro_rules! overlay_opt {
    ($cfg:ident, $args:ident, $($f:ident),*) => { $( if $args.$f.is_some() { $cfg.$f = $args.$f.clone(); } )* };
}

/// Settings from the file (if any) with flags on top.
pub fn resolve(args: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => TrainConfig::from_toml_file(p)?,
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
        lr
    );
    overlay!(
        cfg,
        args,
        warmup,
        weight_decay,
        seed,
        eval_every,
        eval_samples,
        checkpoint_every
    );
    overlay!(
        cfg,
        args,
        checkpoint_minutes,
        crop_scale,
        max_bad_fraction,
        out_dir
    );
    overlay_opt!(
        cfg,
        args,
        epochs,
        grad_clip_norm,
        eval_manifest,
        eval_classes
    );
    if let Some(l) = &args.loss {
        cfg.loss = if l == "siglip" {
            clip_train::Objective::Siglip
        } else {
            clip_train::Objective::Clip
        };
    }
    Ok(cfg)
}

fn report(run: &RunOutput) {
    for p in &run.cleaned {
        eprintln!(
            "removed {} (left by a killed checkpoint write)",
            p.display()
        );
    }
    for (s, a, b) in &run.changes {
        eprintln!("resumed with {s} changed from {a} to {b} (recorded in the checkpoint)");
    }
    let s = &run.summary;
    if s.bad_samples > 0 || s.truncated_captions > 0 {
        eprintln!(
            "skipped {} bad samples; truncated {} captions longer than the context",
            s.bad_samples, s.truncated_captions
        );
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let cfg = resolve(args)?;
    let options = RunOptions {
        resume: args.resume,
        change: args.change.clone(),
        quiet: args.json,
        restart: args.restart,
    };
    let run = clip_train::run(&cfg, &options)?;
    report(&run);
    let s = &run.summary;
    let zs = s
        .zero_shot_top1
        .map(|z| format!(", zero-shot top-1 {:.1}%", z * 100.0))
        .unwrap_or_default();
    eprintln!(
        "trained {} steps in {:.0} s ({:.1} samples/s), final loss {:.3}{zs}; outputs in {}",
        s.steps,
        s.seconds,
        s.samples_per_s,
        s.final_loss,
        cfg.out_dir.display()
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "steps": s.steps, "final_loss": s.final_loss, "samples_per_s": s.samples_per_s,
                "seconds": s.seconds, "zero_shot_top1": s.zero_shot_top1,
                "bad_samples": s.bad_samples, "truncated_captions": s.truncated_captions,
            })
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// optimiser steps (batch 64); the default takes about four minutes on 2 cores
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// output folder: new, empty, or an earlier quickstart's (whose run is replaced)
    #[arg(long, default_value = "runs/quickstart")]
    pub out: PathBuf,
    /// end with one JSON object (zero_shot_top1, chance, steps, samples_per_s, seconds, …)
    #[arg(long)]
    pub json: bool,
}

/// Generate the synthetic scenes, train the small ViT CLIP, report zero-shot accuracy on held-out
/// (colour, shape) combinations beside chance, and classify a few new images by typed labels.
pub fn quickstart(args: &QuickstartArgs) -> Result<()> {
    let steps = args.steps as usize;
    let cfg = TrainConfig {
        steps,
        seed: args.seed,
        eval_every: (steps / 5).max(1),
        checkpoint_every: steps,
        out_dir: args.out.clone(),
        ..TrainConfig::default()
    };
    clip_train::run::clear_quickstart(&args.out)?;
    let run = clip_train::run(
        &cfg,
        &RunOptions {
            quiet: args.json,
            ..Default::default()
        },
    )?;
    report(&run);
    let data = run
        .synthetic
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the quickstart trains on synthetic scenes"))?;
    let names = class_names();
    let chance = 1.0 / names.len() as f64;
    let held: Vec<&str> = data.held_out.iter().map(|&c| names[c].as_str()).collect();
    let top1 = run.summary.zero_shot_top1.unwrap_or(0.0);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "zero_shot_top1": top1, "chance": chance, "steps": run.summary.steps,
                "samples_per_s": run.summary.samples_per_s, "seconds": run.summary.seconds,
                "final_loss": run.summary.final_loss, "held_out_classes": held,
            })
        );
        return Ok(());
    }
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
        run.summary.steps,
        run.summary.samples_per_s,
        run.summary.seconds,
        args.out.join("plot.png").display()
    );
    print_samples(run.clip, data)
}

/// A few new images of held-out combinations, classified by typed labels.
fn print_samples(clip: clip_model::Clip, data: &clip_data::synth::SyntheticScenes) -> Result<()> {
    let names = class_names();
    let emb = clip_embed::Embedder::new(clip, 64);
    let samples: Vec<_> = (0..4u64)
        .map(|i| data.sample(Split::HeldOut, 9_000_000 + i))
        .collect();
    let pixels: Vec<f32> = samples
        .iter()
        .flat_map(|(img, _, _)| emb.preprocess.apply(img))
        .collect();
    let features = emb.encode_pixels(pixels, samples.len(), false);
    let classifier = emb.classifier(&names, &["a {}".into(), "{}".into()])?;
    let probs = classifier.probabilities(
        &features,
        samples.len(),
        emb.clip.logit_scale(),
        emb.clip.logit_bias(),
    );
    for ((_, _, scene), row) in samples.iter().zip(probs.chunks(names.len())) {
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<String> = order[..3]
            .iter()
            .map(|&i| format!("{} {:.0}%", names[i], row[i] * 100.0))
            .collect();
        println!(
            "  image of a {:<16} → {}",
            names[scene.class()],
            top.join(", ")
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ImportEmojiArgs {
    /// directory holding the unpacked npm packages: NAME/package/… for emoji-datasource,
    /// emoji-datasource-STYLE for each style, cldr-annotations-full and cldr-annotations-derived-full
    #[arg(long)]
    pub packages: PathBuf,
    /// output folder: new, empty, or an earlier import's
    #[arg(long)]
    pub out: PathBuf,
    /// share of the concepts held out of training, in [0, 1)
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true)]
    pub held_out_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// art styles to import (google, twitter, apple); a concept needs an image in each
    #[arg(long, value_delimiter = ',', default_value = "google,twitter")]
    pub styles: Vec<clip_data::emoji::Style>,
    /// also write the training rows of these styles as one manifest, train_A+B.jsonl
    #[arg(long, value_delimiter = ',')]
    pub train_styles: Vec<clip_data::emoji::Style>,
    /// import the skin-tone variants as further images of each concept
    #[arg(long)]
    pub skin_tones: bool,
    /// caption variety: english (name, template, CLDR name and keywords), keywords (plus random
    /// keyword subsets and orders) or locales (plus names and keywords in --locales)
    #[arg(long, default_value = "english")]
    pub captions: clip_data::emoji::CaptionVariety,
    /// the other CLDR locales of --captions locales
    #[arg(long, value_delimiter = ',', default_value = "fr,de,es,it,pt,nl")]
    pub locales: Vec<String>,
}

pub fn import_emoji(args: &ImportEmojiArgs) -> Result<()> {
    let options = clip_data::emoji::ImportOptions {
        held_out_fraction: args.held_out_fraction,
        seed: args.seed,
        styles: args.styles.clone(),
        train_styles: args.train_styles.clone(),
        skin_tones: args.skin_tones,
        captions: args.captions,
        locales: args.locales.clone(),
    };
    let s = clip_data::emoji::import(
        &clip_data::emoji::Packages::under(&args.packages),
        &args.out,
        &options,
    )?;
    eprintln!(
        "{} concepts ({} for training, {} held out), {} images and {} training pairs per style; \
         manifests in {}",
        s.concepts,
        s.train_concepts,
        s.held_out_concepts,
        s.images_per_style,
        s.train_pairs,
        args.out.display()
    );
    Ok(())
}
