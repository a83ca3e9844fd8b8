//! The `clip` command: thin over the libraries. Parse args → resolve → `commands::x`.

mod alloc;
mod classify;
mod embed;
mod eval;
mod generate;
mod inside;
mod repro;
mod search;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "clip",
    version,
    about = "CLIP in Rust: tokenize, preprocess, embed, classify, convert"
)]
struct Cli {
    /// Worker threads for tensor math and image decoding (default: all cores; at most 1024)
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Token ids, one JSON array per text, padded to the context length (like clip.tokenize)
    Tokenize(TokenizeArgs),
    /// Decode, resize, crop and normalise one image into a float32 [3,N,N] .npy
    Preprocess(PreprocessArgs),
    /// Embed images or texts into .npy, .safetensors or .jsonl
    Embed(embed::EmbedArgs),
    /// Zero-shot classification of images by typed labels
    Classify(classify::ClassifyArgs),
    /// Contrastive pre-training from a TOML config (every field is also a flag)
    Train(train::TrainArgs),
    /// Offline demo: train a small CLIP on synthetic scenes for a few minutes and test it zero-shot
    Quickstart(train::QuickstartArgs),
    /// Build training/evaluation manifests from the npm emoji packages
    ImportEmoji(train::ImportEmojiArgs),
    /// Evaluation protocols
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Reproduce the shape of the paper's evaluation findings at CPU scale (report.md + plots)
    Repro(repro::ReproArgs),
    /// Look inside and around a trained CLIP: the bias probe and the limitations probes
    Inside(inside::InsideArgs),
    /// Train a VQ-VAE on an emoji import: images to a grid of discrete codes and back
    TrainVqvae(generate::TrainVqArgs),
    /// Train the BART-style caption → image-code transformer on a VQ-VAE's codes
    TrainGenerator(generate::TrainGeneratorArgs),
    /// Draw images for a caption, rerank them with a CLIP, write the best as PNGs and a grid
    Generate(generate::GenerateArgs),
    /// Does reranking help, does the generator generalise: a judge CLIP's hit-rate and Fréchet
    /// distance against the number of samples reranked, training vs held-out concepts
    GenerateStudy(generate::StudyArgs),
    /// Convert any supported checkpoint to model.safetensors + config.json
    Convert(ConvertArgs),
    /// Check that a model gives the reference's numbers: its published checksum, a stored
    /// open_clip record of built-in inputs, and (--reference PYTHON) open_clip run on the spot
    Check(CheckArgs),
    /// Index a folder, manifest or shards into an SQLite file, incrementally (only new or
    /// changed files are embedded; moved files keep their vectors; deleted ones are removed)
    Index(search::IndexArgs),
    /// Search an index by text, image, or rclip's query algebra
    Search(search::SearchArgs),
    /// Groups of near-duplicate images in an index
    Dedup(search::DedupArgs),
    /// Order candidate images by their CLIP score for a caption
    Rerank(search::RerankArgs),
    /// Serve the model over HTTP: embeddings, rerank, classify, search, and a web page
    Serve(search::ServeArgs),
    /// List model presets, known pretrained tags and the shipped template sets
    Models,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Zero-shot classification: top-1, top-5, mean per-class recall, confusion matrix; compares prompt sets
    Zeroshot(eval::ZeroShotArgs),
    /// Linear probe on frozen image features: L-BFGS logistic regression, C searched on a validation split
    Probe(eval::ProbeArgs),
    /// k-shot linear probes (mean ± std over seeds; C searched on half the shots, C = 1 at k = 1) beside zero-shot, as Figure 6
    Fewshot(eval::FewShotArgs),
    /// Image→text and text→image recall@K with several captions per image
    Retrieval(eval::RetrievalArgs),
    /// Zero-shot vs source-trained probes under distribution shift; effective robustness (Figure 13)
    Robustness(eval::RobustnessArgs),
    /// Near-duplicates between training and evaluation images; accuracy on All, Overlap and Clean (§5)
    Overlap(eval::OverlapArgs),
}

#[derive(Args)]
struct TokenizeArgs {
    /// Context length (rows are padded with zeros to it; 2 to 4096)
    #[arg(long, default_value_t = clip_tokenizer::DEFAULT_CONTEXT_LENGTH as u64,
          value_parser = clap::value_parser!(u64).range(2..=clip_model::config::MAX_CONTEXT as u64))]
    context_length: u64,
    /// Cut over-long texts (the last kept token is EOT) instead of failing
    #[arg(long)]
    truncate: bool,
    /// Read texts from a file, one per line (every line is one row, blank lines included)
    #[arg(long, conflicts_with = "texts")]
    file: Option<PathBuf>,
    /// Texts to tokenize
    #[arg(required_unless_present = "file")]
    texts: Vec<String>,
}

#[derive(Args)]
struct PreprocessArgs {
    image: PathBuf,
    /// Output side length (1 to 4096)
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u64).range(1..=4096))]
    size: u64,
    /// Output .npy path
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    image_opts: ImageOptions,
}

/// What a checkpoint file is, when it does not say (shared by every command that takes --model).
#[derive(Args, Clone, Debug)]
pub struct ArchOptions {
    /// The architecture of a checkpoint file without a config: a preset (ViT-B-32,
    /// ViT-B-32-quickgelu), NAME:TAG, or a config .json
    #[arg(long, value_name = "NAME|NAME:TAG|FILE.json")]
    pub arch: Option<String>,
    /// Whether the checkpoint's activation is QuickGELU (OpenAI's) or exact GELU
    #[arg(long, value_name = "true|false")]
    pub quick_gelu: Option<bool>,
}

impl ArchOptions {
    pub fn model_options(&self) -> clip_embed::models::ModelOptions {
        clip_embed::models::ModelOptions {
            arch: self.arch.clone(),
            quick_gelu: self.quick_gelu,
            precision: None,
        }
    }
}

/// The precision of inference (shared by every command that embeds).
#[derive(Args, Clone, Debug)]
pub struct PrecisionOption {
    /// Inference precision: f32 (the reference's numbers), bf16 (bf16 weights and inputs, f32
    /// sums) or int8 (dynamic quantization, per-channel weight scales); on the CPU. `clip search`
    /// and `clip serve --db` default to the precision the index was built with
    #[arg(long, value_name = "f32|bf16|int8")]
    pub precision: Option<clip_model::lowp::Precision>,
}

impl PrecisionOption {
    /// `arch`'s model options with this precision.
    pub fn model_options(&self, arch: &ArchOptions) -> clip_embed::models::ModelOptions {
        clip_embed::models::ModelOptions {
            precision: self.precision,
            ..arch.model_options()
        }
    }
}

/// How images are preprocessed (shared by every command that reads images).
#[derive(Args, Clone, Debug)]
pub struct ImageOptions {
    #[command(flatten)]
    pub arch: ArchOptions,
    #[command(flatten)]
    pub precision: PrecisionOption,
    /// Composite transparent pixels onto white instead of dropping alpha
    #[arg(long)]
    pub flatten_alpha: bool,
    /// Preprocess like Hugging Face's CLIPImageProcessor (transparency on white, RGB first, then
    /// resize and crop) instead of open_clip's and OpenAI's order (resize in the image's own mode)
    #[arg(long)]
    pub hf_preprocess: bool,
}

impl ImageOptions {
    /// The transform for an `n×n` input with the model's `mean` and `std` (the tag's own).
    pub fn preprocess(&self, model: &clip_data::Preprocess) -> clip_data::Preprocess {
        let mut p = if self.hf_preprocess {
            clip_data::Preprocess::hf(model.size)
        } else {
            model.clone()
        };
        (p.mean, p.std) = (model.mean, model.std);
        if self.flatten_alpha {
            p.alpha = clip_data::Alpha::FlattenOnWhite;
        }
        p
    }

    /// Load `spec` for embedding with these options.
    pub fn embedder(&self, spec: &str, batch: usize) -> Result<clip_embed::Embedder> {
        let opts = self.precision.model_options(&self.arch);
        let mut emb = clip_embed::Embedder::load_with(spec, &opts, batch)?;
        emb.preprocess = self.preprocess(&emb.preprocess);
        Ok(emb)
    }
}

#[derive(Args)]
struct ConvertArgs {
    /// Checkpoint path or NAME:TAG
    #[arg(long)]
    model: String,
    /// Output directory
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    arch: ArchOptions,
}

#[derive(Args)]
struct CheckArgs {
    /// Checkpoint path or NAME:TAG
    #[arg(long)]
    model: String,
    #[command(flatten)]
    arch: ArchOptions,
    /// A Python interpreter with open_clip_torch installed: run open_clip on the same file and
    /// inputs and compare
    #[arg(long, value_name = "PYTHON")]
    reference: Option<PathBuf>,
    /// One JSON object instead of lines
    #[arg(long)]
    json: bool,
}

fn check(args: &CheckArgs) -> Result<()> {
    let report = clip_embed::check::check(
        &args.model,
        &args.arch.model_options(),
        args.reference.as_deref(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{} ({})", report.model, report.weights.display());
        for s in &report.steps {
            let tag = match s.outcome {
                clip_embed::check::Outcome::Pass => "PASS",
                clip_embed::check::Outcome::Fail => "FAIL",
                clip_embed::check::Outcome::Skip => "skip",
            };
            println!("  {tag}  {:<14} {}", s.name, s.detail);
        }
    }
    if !report.passed() {
        bail!("the model does not give the reference's numbers (see FAIL above)");
    }
    if !report.verified() {
        bail!(
            "nothing could be compared for this file: pass --reference PYTHON (a Python with open_clip_torch) to run open_clip on it"
        );
    }
    Ok(())
}

fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let texts = match &args.file {
        Some(f) => clip_data::text::read_lines(f)?,
        None => args.texts.clone(),
    };
    let rows = clip_tokenizer::Tokenizer::global().tokenize_batch(
        &texts,
        args.context_length as usize,
        args.truncate,
    )?;
    let mut out = String::new();
    for row in rows {
        out.push_str(&serde_json::to_string(&row)?);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

fn preprocess(args: &PreprocessArgs) -> Result<()> {
    clip_data::out::check_extension(&args.out, &["npy"])?;
    clip_data::out::check_not_input(&args.out, std::slice::from_ref(&args.image))?;
    let size = args.size as usize;
    let data = args
        .image_opts
        .preprocess(&clip_data::Preprocess::clip(size))
        .load(&args.image)?;
    clip_data::out::write_npy(&args.out, &[3, size, size], &data)?;
    Ok(())
}

fn convert(args: &ConvertArgs) -> Result<()> {
    let (weights, config) =
        clip_embed::models::convert_with(&args.model, &args.arch.model_options(), &args.out)?;
    eprintln!("wrote {} and {}", weights.display(), config.display());
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as u64;
        if n > 4 * cores {
            bail!(
                "--threads {n} is more than 4 × the {cores} cores of this machine; use at most {}",
                4 * cores
            );
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build_global()
            .context("setting the thread count")?;
    }
    match &cli.command {
        Command::Tokenize(a) => tokenize(a),
        Command::Preprocess(a) => preprocess(a),
        Command::Embed(a) => embed::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Train(a) => train::run(a),
        Command::Quickstart(a) => train::quickstart(a),
        Command::ImportEmoji(a) => train::import_emoji(a),
        Command::Eval(e) => match e {
            EvalCommand::Zeroshot(a) => eval::zeroshot(a),
            EvalCommand::Probe(a) => eval::probe(a),
            EvalCommand::Fewshot(a) => eval::fewshot(a),
            EvalCommand::Retrieval(a) => eval::retrieval(a),
            EvalCommand::Robustness(a) => eval::robustness(a),
            EvalCommand::Overlap(a) => eval::overlap(a),
        },
        Command::Repro(a) => repro::run(a),
        Command::Inside(a) => inside::run(a),
        Command::TrainVqvae(a) => generate::train_vqvae(a),
        Command::TrainGenerator(a) => generate::train_generator(a),
        Command::Generate(a) => generate::generate(a),
        Command::GenerateStudy(a) => generate::study(a),
        Command::Convert(a) => convert(a),
        Command::Check(a) => check(a),
        Command::Index(a) => search::index(a),
        Command::Search(a) => search::search(a),
        Command::Dedup(a) => search::dedup(a),
        Command::Rerank(a) => search::rerank(a),
        Command::Serve(a) => search::serve(a),
        Command::Models => {
            print!("{}", clip_embed::models::listing());
            println!(
                "template sets: {}",
                clip_embed::templates::names().join(", ")
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    alloc::tune();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}
