//! `clip train-vqvae`, `clip train-generator`, `clip generate` and `clip generate-study`:
//! arguments and summaries; the work is `clip_generate`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::ImageOptions;

#[derive(Args)]
pub struct TrainVqArgs {
    /// The folder written by `clip import-emoji` (its training concepts' images are used)
    #[arg(long)]
    pub emoji: PathBuf,
    /// Run folder (new, empty, or this run's own to resume it)
    #[arg(long)]
    pub out: PathBuf,
    /// Styles to train on (default: every style of the import); the others are reported as
    /// unseen styles
    #[arg(long, value_delimiter = ',')]
    pub styles: Vec<String>,
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Weight of the commitment loss
    #[arg(long, default_value_t = 0.25)]
    pub beta: f64,
    /// Codebook entries
    #[arg(long, default_value_t = 512)]
    pub codes: usize,
    #[arg(long, default_value_t = 64)]
    pub code_dim: usize,
    /// Channels after the first stride-2 layer
    #[arg(long, default_value_t = 32)]
    pub channels: usize,
    /// Stride-2 layers: 3 gives an 8×8 code grid for 64×64 images, 2 a 16×16 one
    #[arg(long, default_value_t = 3)]
    pub downsample: usize,
    #[arg(long, default_value_t = 64)]
    pub image_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    /// Stop after this step (run the command again to continue)
    #[arg(long)]
    pub stop_at: Option<usize>,
}

#[derive(Args)]
pub struct TrainGeneratorArgs {
    /// The folder written by `clip import-emoji`
    #[arg(long)]
    pub emoji: PathBuf,
    /// The VQ-VAE run folder whose codes the generator predicts
    #[arg(long)]
    pub vqvae: PathBuf,
    /// Run folder (new, empty, or this run's own to resume it)
    #[arg(long)]
    pub out: PathBuf,
    /// Styles to train on (default: every style of the import)
    #[arg(long, value_delimiter = ',')]
    pub styles: Vec<String>,
    #[arg(long, default_value_t = 4000)]
    pub steps: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 256)]
    pub width: usize,
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    #[arg(long, default_value_t = 3)]
    pub encoder_layers: usize,
    #[arg(long, default_value_t = 4)]
    pub decoder_layers: usize,
    /// Longest caption in tokens (start and end included)
    #[arg(long, default_value_t = 32)]
    pub context: usize,
    /// Share of training captions replaced by the empty caption (for --guidance)
    #[arg(long, default_value_t = 0.1)]
    pub caption_dropout: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    /// Stop after this step (run the command again to continue)
    #[arg(long)]
    pub stop_at: Option<usize>,
}

pub fn train_vqvae(a: &TrainVqArgs) -> Result<()> {
    let o = clip_generate::vq::VqOptions {
        emoji: a.emoji.clone(),
        out: a.out.clone(),
        dims: clip_generate::vq::VqDims {
            image: a.image_size,
            downsample: a.downsample,
            channels: a.channels,
            code_dim: a.code_dim,
            codes: a.codes,
        },
        styles: a.styles.clone(),
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr,
        beta: a.beta,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        stop_at: a.stop_at,
    };
    let Some(r) = clip_generate::vq::train(&o, &mut |l| eprintln!("{l}"))? else {
        println!(
            "stopped at step {}; run the same command again to continue",
            a.stop_at.unwrap_or(0)
        );
        return Ok(());
    };
    for (set, n, p) in &r.psnr {
        println!("PSNR {p:.2} dB on {set} ({n} images)");
    }
    println!(
        "code perplexity {:.0} of {} entries, {} never used; {} steps in {:.0} s",
        r.perplexity, r.dims.codes, r.dead_codes, r.steps, r.train_seconds
    );
    println!("report: {}", a.out.join("report.json").display());
    Ok(())
}

pub fn train_generator(a: &TrainGeneratorArgs) -> Result<()> {
    let o = clip_generate::prior::PriorOptions {
        emoji: a.emoji.clone(),
        vqvae: a.vqvae.clone(),
        out: a.out.clone(),
        dims: clip_generate::prior::PriorDims {
            width: a.width,
            heads: a.heads,
            encoder_layers: a.encoder_layers,
            decoder_layers: a.decoder_layers,
            context: a.context,
        },
        styles: a.styles.clone(),
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr,
        caption_dropout: a.caption_dropout,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        stop_at: a.stop_at,
    };
    if !clip_generate::prior::train(&o, &mut |l| eprintln!("{l}"))? {
        println!(
            "stopped at step {}; run the same command again to continue",
            a.stop_at.unwrap_or(0)
        );
        return Ok(());
    }
    println!(
        "generator: {} (loss plot: {})",
        a.out.display(),
        a.out.join("plot.png").display()
    );
    Ok(())
}

/// How codes are drawn (shared by `generate` and `generate-study`).
#[derive(Args)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample among the k most likely codes only (0: all)
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Classifier-free guidance scale (DALL-E mini's cond_scale; 1: none)
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    fn options(&self, samples: usize) -> clip_generate::sample::SampleOptions {
        clip_generate::sample::SampleOptions {
            samples,
            temperature: self.temperature,
            top_k: self.top_k,
            guidance: self.guidance,
            seed: self.seed,
        }
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    /// What to draw
    pub caption: String,
    /// The generator's run folder (`clip train-generator`)
    #[arg(long)]
    pub generator: PathBuf,
    /// The VQ-VAE run folder (default: the one the generator was trained with)
    #[arg(long)]
    pub vqvae: Option<PathBuf>,
    /// The CLIP that reranks the samples (path or NAME:TAG)
    #[arg(long)]
    pub clip: String,
    /// Samples to draw
    #[arg(long, default_value_t = 16)]
    pub samples: usize,
    /// How many of the best to write
    #[arg(long, default_value_t = 4)]
    pub top: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Cut an over-long caption to the generator's context instead of refusing it
    #[arg(long)]
    pub truncate: bool,
    /// Output folder (new, empty, or an earlier `clip generate` output)
    #[arg(long, default_value = "generated")]
    pub out: PathBuf,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub image_opts: ImageOptions,
}

pub fn generate(a: &GenerateArgs) -> Result<()> {
    let device = clip_model::default_device();
    let generator =
        clip_generate::prior::Generator::load(&a.generator, a.vqvae.as_deref(), &device)?;
    let reranker = a.image_opts.embedder(&a.clip, 64)?;
    let o = clip_generate::sample::GenerateOptions {
        caption: a.caption.clone(),
        sampling: a.sampling.options(a.samples),
        top: a.top,
        truncate: a.truncate,
        out: a.out.clone(),
    };
    let g = clip_generate::sample::generate(&generator, &reranker, &o)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&g)?);
    } else {
        for p in &g.top {
            println!(
                "{:>2}. score {:.4}  sample {:>3}  {}",
                p.rank,
                p.score,
                p.sample,
                p.path.display()
            );
        }
        println!("grid: {}", g.grid.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct StudyArgs {
    /// The generator's run folder
    #[arg(long)]
    pub generator: PathBuf,
    /// The CLIP that reranks (path or NAME:TAG)
    #[arg(long)]
    pub reranker: String,
    /// An independently trained CLIP that judges (another seed; never the reranker)
    #[arg(long)]
    pub judge: String,
    /// The folder written by `clip import-emoji` (concepts, held-out split, real images)
    #[arg(long)]
    pub emoji: PathBuf,
    /// Output folder (study.json, report.md, study.png, grids)
    #[arg(long, default_value = "runs/generate-study")]
    pub out: PathBuf,
    /// Captions per group (training concepts, held-out concepts)
    #[arg(long, default_value_t = 50)]
    pub captions: usize,
    /// The largest N: samples drawn per caption (N = 1, 2, 4, … up to it)
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub image_opts: ImageOptions,
}

pub fn study(a: &StudyArgs) -> Result<()> {
    let device = clip_model::default_device();
    let generator = clip_generate::prior::Generator::load(&a.generator, None, &device)?;
    let reranker = a.image_opts.embedder(&a.reranker, 64)?;
    let judge = a.image_opts.embedder(&a.judge, 64)?;
    let o = clip_generate::study::StudyOptions {
        emoji: a.emoji.clone(),
        out: a.out.clone(),
        captions: a.captions,
        sampling: a.sampling.options(a.samples),
        same_model: a.reranker == a.judge,
    };
    let s =
        clip_generate::study::run(&generator, &reranker, &judge, &o, &mut |l| eprintln!("{l}"))?;
    print!("{}", s.table());
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}
