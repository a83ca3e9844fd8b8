//! `clip embed`: images or texts → embeddings (.npy, .safetensors, .jsonl), rows in input order.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use clip_data::out;

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
    /// Embed every line of this UTF-8 file (one row per line, blank lines included)
    #[arg(long)]
    pub texts_from: Option<PathBuf>,
    /// Output: .npy (float32 [N,D]), .safetensors (key "embeddings") or .jsonl
    #[arg(long)]
    pub out: PathBuf,
    /// Keep the features unnormalised
    #[arg(long)]
    pub raw: bool,
    /// Items per forward pass
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch_size: u64,
    /// Cut over-long texts instead of failing
    #[arg(long)]
    pub truncate: bool,
    #[command(flatten)]
    pub image_opts: crate::ImageOptions,
}

pub fn run(args: &EmbedArgs) -> Result<()> {
    out::check_extension(&args.out, &["npy", "safetensors", "jsonl"])?;
    let mut images = args.images.clone();
    if let Some(dir) = &args.images_from {
        images.extend(clip_data::files::images_in(dir)?);
    }
    let mut texts = args.texts.clone();
    if let Some(f) = &args.texts_from {
        texts.extend(clip_data::text::read_lines(f)?);
    }
    let inputs: Vec<PathBuf> = images.iter().chain(&args.texts_from).cloned().collect();
    out::check_not_input(&args.out, &inputs)?;
    match (images.is_empty(), texts.is_empty()) {
        (true, true) => {
            bail!("nothing to embed: give --image, --text, --images-from or --texts-from")
        }
        (false, false) => {
            bail!("embed images or texts in one run, not both (they go to one output file)")
        }
        _ => {}
    }
    let emb = args
        .image_opts
        .embedder(&args.model, args.batch_size as usize)?;
    let (names, data) = if images.is_empty() {
        let data = emb.embed_texts(&texts, args.truncate, args.raw)?;
        (texts, data)
    } else {
        let data = emb.embed_files(&images, args.raw)?;
        (
            images.iter().map(|p| p.display().to_string()).collect(),
            data,
        )
    };
    clip_embed::output::write_embeddings(&args.out, &names, emb.dim(), &data)?;
    eprintln!(
        "wrote {} embeddings of dimension {} to {}",
        names.len(),
        emb.dim(),
        args.out.display()
    );
    Ok(())
}
