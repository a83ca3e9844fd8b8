//! `clip classify`: zero-shot class probabilities, templates ensembled in embedding space
//! (per class: mean of L2-normalised template embeddings, re-normalised).

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use clap::Args;
use clip_model::source::to_vec;

use clip_train::trainer::zero_shot_classifier;

use crate::embed::embed_images;
use crate::{io, models};

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
    /// simple ("a photo of a {}."), imagenet (OpenAI's 80), imagenet7, or a file of templates with {}
    #[arg(long, default_value = "simple")]
    pub templates: String,
    /// How many classes to show per image
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// One JSON object per image instead of a table
    #[arg(long)]
    pub json: bool,
    /// Composite transparent pixels onto white
    #[arg(long)]
    pub flatten_alpha: bool,
    /// Images to classify
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Template sets shipped as data (`configs/templates/`): OpenAI's prompt-engineering lists (the 80
/// ImageNet templates, the 7-template subset, and per-dataset sets from OpenAI's notebook as packaged
/// by CLIP_benchmark; see `configs/templates/SOURCES.md`) and this project's own sets.
pub const SHIPPED_TEMPLATES: &[(&str, &str)] = &[
    (
        "simple",
        include_str!("../../../configs/templates/simple.txt"),
    ),
    (
        "imagenet",
        include_str!("../../../configs/templates/imagenet.txt"),
    ),
    (
        "imagenet7",
        include_str!("../../../configs/templates/imagenet7.txt"),
    ),
    (
        "emoji",
        include_str!("../../../configs/templates/emoji.txt"),
    ),
    (
        "emoji_ensemble",
        include_str!("../../../configs/templates/emoji_ensemble.txt"),
    ),
    (
        "synthetic",
        include_str!("../../../configs/templates/synthetic.txt"),
    ),
];

/// A shipped template set by name, or a file with one template per line.
pub fn templates(spec: &str) -> Result<Vec<String>> {
    let list: Vec<String> = match SHIPPED_TEMPLATES.iter().find(|(n, _)| *n == spec) {
        Some((_, text)) => text
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect(),
        None => {
            let p = std::path::Path::new(spec);
            if !p.exists() && !spec.contains(['/', '.']) {
                let names: Vec<&str> = SHIPPED_TEMPLATES.iter().map(|(n, _)| *n).collect();
                bail!(
                    "no template set named '{spec}'; shipped sets: {}; or give a file",
                    names.join(", ")
                );
            }
            io::read_lines(p)?
        }
    };
    if list.is_empty() {
        bail!("template set '{spec}' is empty");
    }
    if let Some(bad) = list.iter().find(|t| !t.contains("{}")) {
        bail!("template {bad:?} has no {{}} where the class name goes");
    }
    Ok(list)
}

fn labels(args: &ClassifyArgs) -> Result<Vec<String>> {
    let labels: Vec<String> = match (&args.labels, &args.labels_file) {
        (Some(l), _) => l
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, Some(f)) => io::read_lines(f)?,
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

/// Softmax over classes of `exp(logit_scale) · features · classifierᵀ` (`features` normalised).
fn probabilities(clip: &clip_model::Clip, features: Tensor<2>, classifier: Tensor<2>) -> Vec<f32> {
    let logits = features.matmul(classifier.transpose()) * clip.logit_scale() as f64;
    to_vec(&softmax(logits, 1))
}

/// Class probabilities `[images, classes]` (row-major) for preprocessed images, with the
/// template-ensembled zero-shot classifier.
pub fn zero_shot_probs(
    clip: &clip_model::Clip,
    images: &[Vec<f32>],
    labels: &[String],
    templates: &[String],
) -> Result<Vec<f32>> {
    let classifier = zero_shot_classifier(clip, labels, templates)?;
    let n = clip.config.image_size();
    let x = Tensor::<4>::from_data(
        TensorData::new(images.concat(), [images.len(), 3, n, n]),
        &clip.device(),
    );
    Ok(probabilities(
        clip,
        clip_model::l2_normalize(clip.encode_image(x)),
        classifier,
    ))
}

pub fn run(args: &ClassifyArgs) -> Result<()> {
    let labels = labels(args)?;
    let templates = templates(&args.templates)?;
    let device = clip_model::default_device();
    let clip = models::load(&args.model, &device)?;
    let dim = clip.config.embed_dim;
    let classifier = zero_shot_classifier(&clip, &labels, &templates)?;
    let images = embed_images(&clip, &args.images, 32, args.flatten_alpha, true)?;
    let images = Tensor::<2>::from_data(TensorData::new(images, [args.images.len(), dim]), &device);
    let probs = probabilities(&clip, images, classifier);
    let top = args.top.clamp(1, labels.len());
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
