//! `clip repro`: arguments and the summary; the experiments are `clip_eval::repro`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use clip_eval::repro::{self, ReproOptions};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReproArgs {
    #[command(subcommand)]
    pub experiment: Option<Experiment>,
    #[command(flatten)]
    pub findings: FindingsArgs,
}

/// A named experiment (without one: the four evaluation findings).
#[derive(Subcommand)]
pub enum Experiment {
    /// Figure 2: C-BoW, C-Tr, P-BoW and P-LM on one image tower, zero-shot at 2^10 … 2^17 images
    Fig2(Fig2Args),
    /// Effective robustness to an unseen art style: zero-shot CLIPs (one or two training styles)
    /// against a trend of supervised models trained on one style
    Robustness(RobustnessArgs),
}

#[derive(Args)]
pub struct RobustnessArgs {
    /// The folder written by `clip import-emoji --styles google,twitter,apple --train-styles google,twitter`
    #[arg(long)]
    pub emoji: PathBuf,
    /// Output folder (runs/, results.json, report.md, robustness.png); finished CLIP runs are reused
    #[arg(long, default_value = "runs/robustness")]
    pub out: PathBuf,
    /// The style every model trains on
    #[arg(long, default_value = "google")]
    pub source: String,
    /// The second training style of the two-style CLIP
    #[arg(long, default_value = "twitter")]
    pub extra: String,
    /// The style no model sees (the shift)
    #[arg(long, default_value = "apple")]
    pub target: String,
    /// Images each CLIP processes (a power of two)
    #[arg(long, default_value_t = 65536)]
    pub images: u64,
    /// CLIP seeds
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seeds: Vec<u64>,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(2..=4096))]
    pub batch_size: u64,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Training steps of the from-scratch classifiers (one model each)
    #[arg(long, value_delimiter = ',', default_value = "25,50,100,200,400")]
    pub classifier_steps: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    pub classifier_seeds: Vec<u64>,
    /// Seeds of the random-init ViTs whose features are probed
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub probe_seeds: Vec<u64>,
    /// Bootstrap resamples of the intervals
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=100000))]
    pub bootstrap: u64,
}

#[derive(Args)]
pub struct Fig2Args {
    /// The folder written by `clip import-emoji` (its train_google.jsonl and the eval_STYLE_seen.jsonl of --eval-styles)
    #[arg(long)]
    pub emoji: PathBuf,
    /// Output folder (runs/, results.json, report.md, fig2.png); an earlier fig2 folder is resumed
    #[arg(long, default_value = "runs/fig2")]
    pub out: PathBuf,
    /// Training manifest (default: EMOJI/train_google.jsonl)
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Styles of the zero-shot task, none of them trained on (their eval_STYLE_seen.jsonl)
    #[arg(long, value_delimiter = ',', default_value = "twitter,apple")]
    pub eval_styles: Vec<String>,
    /// Concepts in the fixed zero-shot task
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(2..=100000))]
    pub concepts: u64,
    /// Objectives: c-bow, c-tr, p-bow, p-lm (Figure 2); p-bow-sigmoid, visual-ngrams, hashtags, devise,
    /// lda-topics, c-tr-fixed-temperature, c-tr-heavy-augmentation, c-tr-sentence-sampling,
    /// c-tr-nonlinear-projection
    #[arg(long, value_delimiter = ',', default_value = "c-bow,c-tr,p-bow,p-lm")]
    pub objectives: Vec<clip_train::objectives::Kind>,
    /// Seeds: each objective is trained once per seed
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// First checkpoint (a power of two, in images processed)
    #[arg(long, default_value_t = 1024)]
    pub min_images: u64,
    /// Last checkpoint; the learning-rate schedule spans it
    #[arg(long, default_value_t = 131072)]
    pub max_images: u64,
    /// Stop every run at this many images for now (continue later with the same settings)
    #[arg(long)]
    pub stop_at_images: Option<u64>,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(2..=4096))]
    pub batch_size: u64,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
}

#[derive(Args)]
pub struct FindingsArgs {
    /// Output folder for report.md, the plots and results.json
    #[arg(long, default_value = "runs/repro")]
    pub out: PathBuf,
    /// The folder written by `clip import-emoji` (the emoji part is skipped without it)
    #[arg(long)]
    pub emoji: Option<PathBuf>,
    /// A CLIP trained on the emoji data (default: train one with configs/train/emoji.toml's settings)
    #[arg(long)]
    pub emoji_model: Option<String>,
    /// Optimiser steps when the emoji model is trained here
    #[arg(long, default_value_t = 1100, value_parser = clap::value_parser!(u64).range(1..))]
    pub emoji_steps: u64,
    /// A CLIP trained on the synthetic scenes (default: train one like `clip quickstart`)
    #[arg(long)]
    pub synthetic_model: Option<String>,
    /// Optimiser steps when the synthetic model is trained here
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..))]
    pub synthetic_steps: u64,
    /// Seeds of every few-shot point
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: u64,
    /// Synthetic test images per class
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub synthetic_test: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Feature cache folder (default: the user cache)
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[arg(long)]
    pub no_cache: bool,
}

pub fn run(a: &ReproArgs) -> Result<()> {
    match &a.experiment {
        Some(Experiment::Fig2(f)) => fig2(f),
        Some(Experiment::Robustness(r)) => robustness(r),
        None => findings(&a.findings),
    }
}

fn fig2(a: &Fig2Args) -> Result<()> {
    let eval = a
        .eval_styles
        .iter()
        .map(|s| a.emoji.join(format!("eval_{s}_seen.jsonl")))
        .collect();
    let options = clip_eval::repro::fig2::Fig2Options {
        out: a.out.clone(),
        data: a
            .data
            .clone()
            .unwrap_or_else(|| a.emoji.join("train_google.jsonl")),
        eval,
        classes: a.emoji.join("classes.txt"),
        concepts: a.concepts as usize,
        objectives: a.objectives.clone(),
        seeds: a.seeds.clone(),
        min_images: a.min_images,
        max_images: a.max_images,
        stop_at_images: a.stop_at_images,
        batch_size: a.batch_size as usize,
        lr: a.lr,
        model: clip_train::config::small_model(),
        templates: vec!["an emoji of {}".into(), "{}".into()],
    };
    let r = clip_eval::repro::fig2::run(&options, &mut |line| eprintln!("{line}"))?;
    println!("{}", r.verdict);
    println!("report: {}", r.report.display());
    Ok(())
}

fn robustness(a: &RobustnessArgs) -> Result<()> {
    let options = clip_eval::repro::style_shift::ShiftOptions {
        out: a.out.clone(),
        emoji: a.emoji.clone(),
        source: a.source.clone(),
        extra: a.extra.clone(),
        target: a.target.clone(),
        images: a.images,
        seeds: a.seeds.clone(),
        batch_size: a.batch_size as usize,
        lr: a.lr,
        classifier_steps: a.classifier_steps.clone(),
        classifier_seeds: a.classifier_seeds.clone(),
        probe_seeds: a.probe_seeds.clone(),
        bootstrap: a.bootstrap as usize,
        model: clip_train::config::small_model(),
        templates: clip_embed::templates::templates("emoji")?,
    };
    let r = clip_eval::repro::style_shift::run(&options, &mut |line| eprintln!("{line}"))?;
    println!("{}", r["verdict"].as_str().unwrap_or(""));
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}

fn findings(a: &FindingsArgs) -> Result<()> {
    let options = ReproOptions {
        out: a.out.clone(),
        emoji: a.emoji.clone(),
        emoji_model: a.emoji_model.clone(),
        emoji_steps: a.emoji_steps as usize,
        synthetic_model: a.synthetic_model.clone(),
        synthetic_steps: a.synthetic_steps as usize,
        seeds: a.seeds,
        synthetic_test: a.synthetic_test as usize,
        seed: a.seed,
        cache: if a.no_cache {
            None
        } else {
            a.cache.clone().or_else(clip_embed::pipeline::default_cache)
        },
    };
    let r = repro::run(&options)?;
    for f in &r.findings {
        println!(
            "{}\n  ours: {}\n  paper: {}\n  → {}",
            f.title, f.ours, f.paper, f.verdict
        );
    }
    println!("report: {}", r.report.display());
    Ok(())
}
