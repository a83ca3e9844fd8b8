//! `clip classify`: zero-shot class probabilities of images for typed labels.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use clip_embed::templates;

#[derive(Args)]
pub struct ClassifyArgs {
    /// Checkpoint path or NAME:TAG
    #[arg(long)]
    pub model: String,
    /// Comma-separated class names
    #[arg(long, conflicts_with = "labels_file")]
    pub labels: Option<String>,
    /// Class names, one per line
    #[arg(long)]
    pub labels_file: Option<PathBuf>,
    /// A shipped template set (simple = "a photo of a {}.", imagenet = OpenAI's 80, imagenet7,
    /// cifar10, … — see `clip models`), or a file of templates with {}
    #[arg(long, default_value = "simple")]
    pub templates: String,
    /// How many classes to show per image
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub top: u64,
    /// One JSON object per image instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub image_opts: crate::ImageOptions,
    /// Images to classify
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

fn labels(args: &ClassifyArgs) -> Result<Vec<String>> {
    let labels: Vec<String> = match (&args.labels, &args.labels_file) {
        (Some(l), _) => l
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, Some(f)) => clip_data::text::read_names(f, "label")?,
        (None, None) => bail!("give the classes with --labels a,b,c or --labels-file FILE"),
    };
    if labels.is_empty() {
        bail!("the label list is empty: give at least one class name");
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = labels.iter().find(|l| !seen.insert(l.as_str())) {
        bail!("class name {d:?} is given twice");
    }
    Ok(labels)
}

pub fn run(args: &ClassifyArgs) -> Result<()> {
    let labels = labels(args)?;
    let templates = templates::templates(&args.templates)?;
    let emb = args.image_opts.embedder(&args.model, 32)?;
    let classifier = emb.classifier(&labels, &templates)?;
    let features = emb.embed_files(&args.images, false)?;
    let probs = classifier.probabilities(
        &features,
        args.images.len(),
        emb.clip.logit_scale(),
        emb.clip.logit_bias(),
    );
    let top = (args.top as usize).min(labels.len());
    for (path, row) in args.images.iter().zip(probs.chunks(labels.len())) {
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        if args.json {
            let best: Vec<_> = order[..top]
                .iter()
                .map(|&i| serde_json::json!({ "label": labels[i], "prob": row[i] }))
                .collect();
            println!(
                "{}",
                serde_json::json!({ "image": path.display().to_string(), "top": best })
            );
        } else {
            println!("{}", path.display());
            for &i in &order[..top] {
                println!("  {:>6.2}%  {}", row[i] * 100.0, labels[i]);
            }
        }
    }
    Ok(())
}
