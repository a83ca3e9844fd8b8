//! `clip embed`: images or texts → embeddings, batched, rows in input order.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::Args;
use clip_model::Clip;
use clip_model::source::to_vec;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::{io, models};

#[derive(Args)]
pub struct EmbedArgs {
    /// Checkpoint path or NAME:TAG (e.g. ViT-B-32:openai)
    #[arg(long)]
    pub model: String,
    /// An image to embed (repeatable)
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// A text to embed (repeatable)
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// Embed every image in this directory (sorted by name)
    #[arg(long)]
    pub images_from: Option<PathBuf>,
    /// Embed every line of this UTF-8 file
    #[arg(long)]
    pub texts_from: Option<PathBuf>,
    /// Output: .npy (float32 [N,D]), .safetensors (key "embeddings") or .jsonl
    #[arg(long)]
    pub out: PathBuf,
    /// Keep the features unnormalised
    #[arg(long)]
    pub raw: bool,
    /// Items per forward pass
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Cut over-long texts instead of failing
    #[arg(long)]
    pub truncate: bool,
    /// Composite transparent pixels onto white
    #[arg(long)]
    pub flatten_alpha: bool,
}

const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "jfif",
];

/// Image files of a directory, sorted by name.
pub fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory '{}'", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "no images ({}) in '{}'",
            IMAGE_EXTENSIONS.join(", "),
            dir.display()
        );
    }
    Ok(files)
}

pub fn progress(n: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64); // hidden automatically when stderr is not a terminal
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("valid template"),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Image embeddings `[N, D]` (row-major), decoding each batch in parallel.
pub fn embed_images(
    clip: &Clip,
    paths: &[PathBuf],
    batch: usize,
    flatten_alpha: bool,
    normalize: bool,
) -> Result<Vec<f32>> {
    let n = clip.config.image_size();
    let mut pre = clip_data::Preprocess::clip(n);
    if flatten_alpha {
        pre.alpha = clip_data::Alpha::FlattenOnWhite;
    }
    let device = clip.device();
    batched(paths, batch, "images", normalize, |chunk, _| {
        let pixels: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|p| pre.load(p))
            .collect::<Result<_, _>>()?;
        let images = Tensor::<4>::from_data(
            TensorData::new(pixels.concat(), [chunk.len(), 3, n, n]),
            &device,
        );
        Ok(clip.encode_image(images))
    })
}

/// Text embeddings `[N, D]`.
pub fn embed_texts(
    clip: &Clip,
    texts: &[String],
    batch: usize,
    truncate: bool,
    normalize: bool,
) -> Result<Vec<f32>> {
    let tok = clip_tokenizer::Tokenizer::global();
    let ctx = clip.config.text_cfg.context_length;
    batched(texts, batch, "texts", normalize, |chunk, offset| {
        let rows = chunk
            .iter()
            .enumerate()
            .map(|(i, t)| {
                tok.encode_with_specials(t, ctx, truncate)
                    .with_context(|| format!("text {} cannot be tokenized", offset + i + 1))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(clip.encode_text(&rows)?)
    })
}

/// Run `encode` over `items` in batches (with a progress bar), optionally L2-normalising, and
/// return the rows in input order.
fn batched<T>(
    items: &[T],
    batch: usize,
    what: &str,
    normalize: bool,
    mut encode: impl FnMut(&[T], usize) -> Result<Tensor<2>>,
) -> Result<Vec<f32>> {
    let batch = batch.max(1);
    let bar = progress(items.len(), what);
    let mut out = Vec::new();
    for (b, chunk) in items.chunks(batch).enumerate() {
        let mut f = encode(chunk, b * batch)?;
        if normalize {
            f = clip_model::l2_normalize(f);
        }
        out.extend(to_vec(&f));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

pub fn run(args: &EmbedArgs) -> Result<()> {
    io::check_embedding_path(&args.out)?;
    let mut images = args.images.clone();
    if let Some(dir) = &args.images_from {
        images.extend(images_in(dir)?);
    }
    let mut texts = args.texts.clone();
    if let Some(f) = &args.texts_from {
        texts.extend(io::read_lines(f)?);
    }
    match (images.is_empty(), texts.is_empty()) {
        (true, true) => {
            bail!("nothing to embed: give --image, --text, --images-from or --texts-from")
        }
        (false, false) => {
            bail!("embed images or texts in one run, not both (they go to one output file)")
        }
        _ => {}
    }
    let device = clip_model::default_device();
    let clip = models::load(&args.model, &device)?;
    let dim = clip.config.embed_dim;
    let (inputs, data) = if !images.is_empty() {
        let data = embed_images(
            &clip,
            &images,
            args.batch_size,
            args.flatten_alpha,
            !args.raw,
        )?;
        (
            images
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
            data,
        )
    } else {
        let data = embed_texts(&clip, &texts, args.batch_size, args.truncate, !args.raw)?;
        (texts, data)
    };
    io::write_embeddings(&args.out, &inputs, dim, &data)?;
    eprintln!(
        "wrote {} embeddings of dimension {dim} to {}",
        inputs.len(),
        args.out.display()
    );
    Ok(())
}
