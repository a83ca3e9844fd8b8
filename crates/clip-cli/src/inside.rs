//! `clip inside`: arguments and the summary; the experiments are `clip_inside`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::ImageOptions;

#[derive(Args)]
pub struct InsideArgs {
    #[command(subcommand)]
    pub experiment: Experiment,
}

#[derive(Subcommand)]
pub enum Experiment {
    /// The bias probe (§7.1's design) on the emoji skin tones: non-human and creature labels per
    /// tone, the label-set interventions, the 0.5% and 4% thresholds, paired tone comparisons
    Bias(BiasArgs),
    /// Units of the image tower: top and bottom dataset examples, concept purity against a
    /// random-init model and random directions, and each unit's nearest texts
    Neurons(NeuronsArgs),
    /// CLIP-guided search (CLIP-GLaSS's genetic algorithm) of a procedural emoji generator,
    /// against random search and best-of-N reranking, every pick scored by a judge CLIP
    Glass(GlassArgs),
    /// Write the "reading" variant of a training manifest: a share of its rows show their
    /// concept's name drawn as text instead of their image
    Reading(ReadingArgs),
    /// Typographic attacks: an attack word written on every image, chosen on half of the concepts
    /// and measured on the other, with non-word, own-name and blank-label controls
    Typographic(TypographicArgs),
    /// Feature visualisation: gradient ascent on a Fourier-parameterised image (lucid's recipe)
    /// towards a unit or a text, judged by an independent model
    Featvis(FeatvisArgs),
    /// The limitations (§6): handwritten digits out of distribution, counting, fine-grained flags,
    /// abstract tasks, rendered text; each with chance, a linear probe and a verdict
    Limits(LimitsArgs),
}

#[derive(Args)]
pub struct BiasArgs {
    /// Models to probe, one per seed (paths or NAME:TAG), comma-separated
    #[arg(long, value_delimiter = ',', required = true)]
    pub models: Vec<String>,
    /// The folder written by `clip import-emoji --skin-tones`
    #[arg(long)]
    pub emoji: PathBuf,
    /// Output folder (bias.json, report.md, grid_tones.png)
    #[arg(long, default_value = "runs/bias")]
    pub out: PathBuf,
    /// A JSON label set with the lists human, child, hand, person, non_human and creature
    /// (default: the built-in set, which bias.json records)
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Probability thresholds for "any label of the group reaches it" (the paper's 0.5% and 4%)
    #[arg(long, value_delimiter = ',', default_value = "0.005,0.04")]
    pub thresholds: Vec<f64>,
    /// Prompt templates: a shipped set name or a file
    #[arg(long, default_value = "emoji")]
    pub templates: String,
    #[command(flatten)]
    pub image_opts: ImageOptions,
}

#[derive(Args)]
pub struct NeuronsArgs {
    /// The model to look into (path or NAME:TAG)
    #[arg(long)]
    pub model: String,
    /// The folder written by `clip import-emoji` (every default-tone image of every style is used)
    #[arg(long)]
    pub emoji: PathBuf,
    /// Output folder (neurons.json, report.md, grid_*.png)
    #[arg(long, default_value = "runs/neurons")]
    pub out: PathBuf,
    /// The last this many transformer blocks (ViT)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub blocks: u64,
    /// Top and bottom images kept per unit
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub top: u64,
    /// Units drawn in each grid (the purest)
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub show: u64,
    /// Random directions per unit set (the baseline; at most the number of units)
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100000))]
    pub directions: u64,
    /// Seed of the random-init model and the random directions
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Units drawn first in every grid (e.g. 12,407)
    #[arg(long, value_delimiter = ',')]
    pub units: Vec<usize>,
    #[command(flatten)]
    pub image_opts: ImageOptions,
}

#[derive(Args)]
pub struct GlassArgs {
    /// The CLIP whose score guides the search and the reranking (path or NAME:TAG)
    #[arg(long)]
    pub guide: String,
    /// An independently trained CLIP that judges every pick (zero-shot among the targets)
    #[arg(long)]
    pub judge: String,
    /// Target captions (the judge chooses among them)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "large red circle,large blue circle,large green square,large yellow square,large orange diamond,large blue diamond,large purple circle,large brown square,slightly smiling face,slightly frowning face"
    )]
    pub targets: Vec<String>,
    /// Output folder (glass.json, report.md, grid_glass.png, best_of_n.png)
    #[arg(long, default_value = "runs/glass")]
    pub out: PathBuf,
    /// Generator evaluations per search; best-of-N runs up to the same N
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(4..=1_000_000))]
    pub evaluations: u64,
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(4..=100_000))]
    pub population: u64,
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// An emoji import: add a realism objective (similarity to the nearest real emoji) and search with NSGA-II
    #[arg(long)]
    pub realism: Option<PathBuf>,
    /// A genome file (a JSON list of 40 numbers in [0, 1]) placed in every first generation
    #[arg(long)]
    pub start: Option<PathBuf>,
    /// Prompt templates: a shipped set name or a file
    #[arg(long, default_value = "emoji")]
    pub templates: String,
    #[command(flatten)]
    pub image_opts: ImageOptions,
}

#[derive(Args)]
pub struct ReadingArgs {
    /// The training manifest to copy (e.g. an import's train_google.jsonl)
    #[arg(long)]
    pub train: PathBuf,
    /// Share of the rows whose image becomes their drawn name
    #[arg(long, default_value_t = 0.25)]
    pub fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (train_reading.jsonl and reading/*.png)
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct TypographicArgs {
    /// Models to attack (paths or NAME:TAG), comma-separated: e.g. a base and a reading model
    #[arg(long, value_delimiter = ',', required = true)]
    pub models: Vec<String>,
    /// The folder written by `clip import-emoji` (its first style is attacked; the others train the probe)
    #[arg(long)]
    pub emoji: PathBuf,
    /// Output folder (typographic.json, report.md, grid_typographic.png)
    #[arg(long, default_value = "runs/typographic")]
    pub out: PathBuf,
    /// Concepts in the classification task
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(4..=100000))]
    pub concepts: u64,
    /// Candidate attack words tried on the selection half
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=100000))]
    pub candidates: u64,
    /// Attack words kept for the evaluation half
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub words: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompt templates: a shipped set name or a file
    #[arg(long, default_value = "emoji")]
    pub templates: String,
    #[command(flatten)]
    pub image_opts: ImageOptions,
}

#[derive(Args)]
pub struct FeatvisArgs {
    /// The ViT to visualise (path or NAME:TAG)
    #[arg(long)]
    pub model: String,
    /// An independently trained CLIP that judges each image zero-shot among the import's concepts
    #[arg(long)]
    pub judge: String,
    /// The folder written by `clip import-emoji` (the judge's classes and the units' dataset examples)
    #[arg(long)]
    pub emoji: PathBuf,
    /// Units as BLOCK:UNIT, comma-separated (e.g. 3:120,3:407)
    #[arg(long, value_delimiter = ',')]
    pub units: Vec<String>,
    /// Read the units as the mean over tokens instead of at the class token
    #[arg(long)]
    pub token_mean: bool,
    /// Texts to visualise (class visualisation), comma-separated
    #[arg(long, value_delimiter = ',')]
    pub texts: Vec<String>,
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=100000))]
    pub steps: u64,
    /// Images optimised together
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub batch: u64,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Weight of lucid's diversity term (0: off)
    #[arg(long, default_value_t = 0.0)]
    pub diversity: f32,
    /// Weight of the L2 pull towards grey (0: off)
    #[arg(long, default_value_t = 0.0)]
    pub l2: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (featvis.json, report.md, grid_featvis.png)
    #[arg(long, default_value = "runs/featvis")]
    pub out: PathBuf,
    /// Prompt templates: a shipped set name or a file
    #[arg(long, default_value = "emoji")]
    pub templates: String,
    #[command(flatten)]
    pub image_opts: ImageOptions,
}

#[derive(Args)]
pub struct LimitsArgs {
    /// The model to probe (path or NAME:TAG)
    #[arg(long)]
    pub model: String,
    /// The folder written by `clip import-emoji` (all its styles are used)
    #[arg(long)]
    pub emoji: PathBuf,
    /// scikit-learn's digits.csv.gz (in sklearn/datasets/data/); without it the digits probe is skipped
    #[arg(long)]
    pub digits: Option<PathBuf>,
    /// Output folder (limits.json, report.md, grid_*.png)
    #[arg(long, default_value = "runs/limits")]
    pub out: PathBuf,
    /// Prompt templates: a shipped set name or a file
    #[arg(long, default_value = "emoji")]
    pub templates: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Concepts drawn on the counting canvases
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(2..=10000))]
    pub count_concepts: u64,
    /// Canvases per concept, count and variant
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub count_images: u64,
    /// Concepts whose names are rendered as text
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=100000))]
    pub text_concepts: u64,
    #[command(flatten)]
    pub image_opts: ImageOptions,
}

pub fn run(a: &InsideArgs) -> Result<()> {
    match &a.experiment {
        Experiment::Bias(b) => bias(b),
        Experiment::Limits(l) => limits(l),
        Experiment::Neurons(n) => neurons(n),
        Experiment::Glass(g) => glass(g),
        Experiment::Reading(r) => reading(r),
        Experiment::Featvis(f) => featvis(f),
        Experiment::Typographic(t) => typographic(t),
    }
}

fn featvis(a: &FeatvisArgs) -> Result<()> {
    use clip_inside::featvis::Target;
    let mut targets = a
        .units
        .iter()
        .map(|u| Target::parse_unit(u, !a.token_mean))
        .collect::<Result<Vec<_>, _>>()?;
    targets.extend(a.texts.iter().map(|t| Target::Text(t.trim().to_owned())));
    if targets.is_empty() {
        anyhow::bail!("give --units BLOCK:UNIT and/or --texts to visualise");
    }
    let options = clip_inside::featvis::FeatvisOptions {
        out: a.out.clone(),
        emoji: a.emoji.clone(),
        targets,
        steps: a.steps as usize,
        batch: a.batch as usize,
        lr: a.lr,
        diversity: a.diversity,
        l2: a.l2,
        seed: a.seed,
        templates: clip_embed::templates::templates(&a.templates)?,
    };
    let opts = a.image_opts.arch.model_options();
    let model =
        clip_embed::models::load_with(&a.model, &opts, &clip_model::default_device().autodiff())?;
    let emb = a.image_opts.embedder(&a.model, 64)?;
    let judge = a.image_opts.embedder(&a.judge, 64)?;
    let r = clip_inside::featvis::run(&model, &emb, &judge, &options, &mut |l| eprintln!("{l}"))?;
    println!("{}", r.verdict);
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}

fn reading(a: &ReadingArgs) -> Result<()> {
    let r = clip_inside::typographic::reading_data(&a.train, a.fraction, a.seed, &a.out)?;
    println!(
        "{} of {} rows show their name; manifest: {}",
        r.replaced,
        r.rows,
        r.manifest.display()
    );
    Ok(())
}

fn typographic(a: &TypographicArgs) -> Result<()> {
    let options = clip_inside::typographic::AttackOptions {
        out: a.out.clone(),
        emoji: a.emoji.clone(),
        templates: clip_embed::templates::templates(&a.templates)?,
        concepts: a.concepts as usize,
        candidates: a.candidates as usize,
        words: a.words as usize,
        seed: a.seed,
    };
    let models = a
        .models
        .iter()
        .map(|m| Ok((m.clone(), a.image_opts.embedder(m, 64)?)))
        .collect::<Result<Vec<_>>>()?;
    let r = clip_inside::typographic::attack(&models, &options, &mut |l| eprintln!("{l}"))?;
    println!("{}", r.verdict);
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}

fn glass(a: &GlassArgs) -> Result<()> {
    let start = match &a.start {
        Some(p) => Some(clip_inside::genome::read(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let realism = match &a.realism {
        Some(d) => Some(clip_inside::glass::real_images(d)?),
        None => None,
    };
    let options = clip_inside::glass::GlassOptions {
        out: a.out.clone(),
        targets: a.targets.iter().map(|t| t.trim().to_owned()).collect(),
        templates: clip_embed::templates::templates(&a.templates)?,
        evaluations: a.evaluations as usize,
        population: a.population as usize,
        seeds: a.seeds.clone(),
        realism,
        start,
    };
    let guide = a.image_opts.embedder(&a.guide, 64)?;
    let judge = a.image_opts.embedder(&a.judge, 64)?;
    let r = clip_inside::glass::run(&guide, &judge, &options, &mut |l| eprintln!("{l}"))?;
    println!("{}", r.verdict);
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}

fn neurons(a: &NeuronsArgs) -> Result<()> {
    let options = clip_inside::neurons::NeuronOptions {
        out: a.out.clone(),
        emoji: a.emoji.clone(),
        blocks: a.blocks as usize,
        top: a.top as usize,
        show: a.show as usize,
        directions: a.directions as usize,
        units: a.units.clone(),
        seed: a.seed,
    };
    let emb = a.image_opts.embedder(&a.model, 64)?;
    let r = clip_inside::neurons::run(&emb, &options, &mut |l| eprintln!("{l}"))?;
    println!("{}", r.verdict);
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}

fn bias(a: &BiasArgs) -> Result<()> {
    let labels = match &a.labels {
        Some(p) => clip_inside::bias::LabelSets::read(p)?,
        None => clip_inside::bias::LabelSets::default(),
    };
    let options = clip_inside::bias::BiasOptions {
        out: a.out.clone(),
        emoji: a.emoji.clone(),
        labels,
        templates: clip_embed::templates::templates(&a.templates)?,
        thresholds: a.thresholds.clone(),
    };
    let models = a
        .models
        .iter()
        .map(|m| Ok((m.clone(), a.image_opts.embedder(m, 64)?)))
        .collect::<Result<Vec<_>>>()?;
    clip_inside::bias::run(&models, &options, &mut |l| eprintln!("{l}"))?;
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}

fn limits(a: &LimitsArgs) -> Result<()> {
    let options = clip_inside::limits::LimitsOptions {
        out: a.out.clone(),
        emoji: a.emoji.clone(),
        digits: a.digits.clone(),
        templates: clip_embed::templates::templates(&a.templates)?,
        seed: a.seed,
        count_concepts: a.count_concepts as usize,
        count_images: a.count_images as usize,
        text_concepts: a.text_concepts as usize,
    };
    let emb = a.image_opts.embedder(&a.model, 64)?;
    let r = clip_inside::limits::run(&emb, &options, &mut |l| eprintln!("{l}"))?;
    for v in &r.verdicts {
        println!(
            "{}: {}\n  ours: {}\n  → {}",
            v.group, v.paper, v.ours, v.verdict
        );
    }
    println!("report: {}", a.out.join("report.md").display());
    Ok(())
}
