//! `clip repro`: arguments and the summary; the experiments are `clip_eval::repro`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use clip_eval::repro::{self, ReproOptions};

#[derive(Args)]
pub struct ReproArgs {
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
