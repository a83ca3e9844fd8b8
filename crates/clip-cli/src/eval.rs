//! `clip eval …`: arguments and printing; the protocols are `clip_eval`'s.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use clip_embed::{Embedder, templates};
use clip_eval::error::{parse_counts, write_json};
use clip_eval::fewshot::{few_shot, matching_k};
use clip_eval::probe::{self, SearchPoint};
use clip_eval::{EvalSet, FitOptions, overlap, retrieval, robustness, zeroshot};
use serde_json::json;

/// Options shared by every `clip eval` command.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint path, training run or checkpoint directory, or NAME:TAG
    #[arg(long)]
    pub model: String,
    /// Images per forward pass
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch: u64,
    /// Feature cache folder (default: $XDG_CACHE_HOME/clip-rs/features or ~/.cache/clip-rs/features)
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Do not read or write cached features
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub image_opts: crate::ImageOptions,
    /// Print results as JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

impl ModelArgs {
    pub fn open(&self) -> Result<Embedder> {
        let cache = if self.no_cache {
            None
        } else {
            self.cache
                .clone()
                .or_else(clip_embed::pipeline::default_cache)
        };
        Ok(self
            .image_opts
            .embedder(&self.model, self.batch as usize)?
            .with_cache(cache))
    }
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

fn classification_set(source: &str, classes: &Option<PathBuf>) -> Result<EvalSet> {
    Ok(EvalSet::classification(source, classes.as_deref())?)
}

fn check_same_classes(a: &EvalSet, b: &EvalSet) -> Result<()> {
    if a.class_names != b.class_names {
        bail!(
            "'{}' and '{}' have different class lists ({} vs {} classes); give both the same --classes",
            a.name,
            b.name,
            a.class_names.len(),
            b.class_names.len()
        );
    }
    Ok(())
}

fn print_or_json(json_out: bool, value: &serde_json::Value, table: impl FnOnce()) {
    if json_out {
        println!("{value}");
    } else {
        table();
    }
}

// ---------------------------------------------------------------- zero-shot

#[derive(Args)]
pub struct ZeroShotArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Labelled images: a class-folder tree, a JSONL/CSV manifest or shards
    #[arg(long, alias = "manifest")]
    pub data: String,
    /// Class names, one per line (optional for class folders)
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Template set(s): a shipped name (see `clip models`), or a file with `{}` per line. Several
    /// sets are compared in one run; a single set is compared with the bare class name and its
    /// first template alone.
    #[arg(long, default_value = "imagenet")]
    pub templates: Vec<String>,
    /// Write confusion.csv, confusion.png, per_class.csv and zeroshot.json here
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Save the (last compared) classifier weights to this .safetensors file
    #[arg(long)]
    pub save_classifier: Option<PathBuf>,
    /// Use saved classifier weights instead of encoding templates
    #[arg(long, conflicts_with = "save_classifier")]
    pub classifier: Option<PathBuf>,
}

pub fn zeroshot(a: &ZeroShotArgs) -> Result<()> {
    if let Some(p) = &a.save_classifier {
        clip_data::out::check_extension(p, &["safetensors"])?;
    }
    let set = classification_set(&a.data, &a.classes)?;
    let prompts = match &a.classifier {
        Some(p) => zeroshot::Prompts::Saved(p.clone()),
        None => zeroshot::Prompts::Templates(a.templates.clone()),
    };
    if let zeroshot::Prompts::Templates(t) = &prompts {
        zeroshot::prompt_rows(t)?; // template errors before any embedding
    }
    let emb = a.m.open()?;
    let r = zeroshot::evaluate(&emb, &set, &prompts, a.save_classifier.as_deref())?;
    if let Some(d) = &a.out {
        r.write(d)?;
    }
    print_or_json(a.m.json, &serde_json::to_value(&r)?, || {
        println!(
            "zero-shot on {} ({} images, {} classes)",
            a.data, r.images, r.classes
        );
        println!(
            "{:<48} {:>8} {:>8} {:>12}",
            "prompts", "top-1", "top-5", "mean recall"
        );
        for row in &r.rows {
            println!(
                "{:<48} {:>8} {:>8} {:>12}",
                row.prompts,
                pct(row.top1),
                pct(row.top5),
                pct(row.mean_per_class_recall)
            );
        }
        println!(
            "{:<48} {:>8} {:>8}",
            "chance",
            pct(r.chance_top1),
            pct(r.chance_top5)
        );
    });
    Ok(())
}

// ---------------------------------------------------------------- linear probe

/// A labelled training set and test set with one class list.
#[derive(Args)]
pub struct TrainTest {
    /// Labelled training images (folders, manifest or shards)
    #[arg(long)]
    pub train: String,
    /// Labelled test images
    #[arg(long)]
    pub test: String,
    /// Class names, one per line (optional for class folders)
    #[arg(long)]
    pub classes: Option<PathBuf>,
}

impl TrainTest {
    fn open(&self) -> Result<(EvalSet, EvalSet)> {
        let train = classification_set(&self.train, &self.classes)?;
        let test = classification_set(&self.test, &self.classes)?;
        check_same_classes(&train, &test)?;
        Ok((train, test))
    }
}

#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    #[command(flatten)]
    pub data: TrainTest,
    /// Fraction of each class carved from train for the C search
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use this C instead of searching
    #[arg(long)]
    pub c: Option<f64>,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_iter: u64,
    /// Write probe.json here
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn probe(a: &ProbeArgs) -> Result<()> {
    let (train, test) = a.data.open()?;
    let emb = a.m.open()?;
    let (ftr, fte) = (emb.features(&train)?, emb.features(&test)?);
    let opts = FitOptions {
        max_iter: a.max_iter as usize,
        ..Default::default()
    };
    let bar = clip_embed::progress(15, "C search");
    let c = train.class_names.len();
    let r = probe::evaluate(&ftr, &fte, c, a.val_fraction, a.seed, a.c, opts, |_| {
        bar.inc(1)
    })?;
    bar.finish_and_clear();
    let mut result = serde_json::to_value(&r)?;
    result["train"] = json!(a.data.train);
    result["test"] = json!(a.data.test);
    result["model"] = json!(emb.fingerprint);
    if let Some(d) = &a.out {
        write_json(d, "probe.json", &result)?;
    }
    print_or_json(a.m.json, &result, || {
        print_search(&r.search);
        println!(
            "linear probe: C = {:.4e}, {} L-BFGS iterations ({:?}), {:.1} s",
            r.c, r.iterations, r.stop, r.fit_seconds
        );
        println!(
            "test: top-1 {}, top-5 {}, mean per-class recall {} ({} images, {c} classes)",
            pct(r.top1),
            pct(r.top5),
            pct(r.mean_per_class_recall),
            r.test_images
        );
    });
    if !r.converged {
        eprintln!(
            "warning: the probe reached --max-iter {} before converging",
            a.max_iter
        );
    }
    Ok(())
}

fn print_search(points: &[SearchPoint]) {
    if points.is_empty() {
        return;
    }
    println!("C search on the validation split:");
    println!("{:>12} {:>10} {:>6}", "C", "val acc", "iters");
    for p in points {
        println!(
            "{:>12.4e} {:>10} {:>6}",
            p.c,
            pct(p.val_accuracy),
            p.iterations
        );
    }
}

// ---------------------------------------------------------------- few-shot

#[derive(Args)]
pub struct FewShotArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    #[command(flatten)]
    pub data: TrainTest,
    /// Shots per class
    #[arg(long, default_value = "1,2,4,8,16")]
    pub k: String,
    /// Random draws of the k examples per k
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: u64,
    /// Templates of the zero-shot line
    #[arg(long, default_value = "imagenet")]
    pub templates: String,
    /// Write fewshot.json and fewshot.png here
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn fewshot(a: &FewShotArgs) -> Result<()> {
    let ks = parse_counts(&a.k, "--k")?;
    let (train, test) = a.data.open()?;
    let templates = templates::templates(&a.templates)?;
    probe::check_k_shots(&train.labels, &train.class_names, &ks)?;
    let emb = a.m.open()?;
    let (ftr, fte) = (emb.features(&train)?, emb.features(&test)?);
    let c = train.class_names.len();
    let zs = zeroshot::top1(&fte, &emb.classifier(&train.class_names, &templates)?);
    let fs = few_shot(&ftr, &fte, &train.class_names, &ks, a.seeds)?;
    let mut result = fs.json(zs);
    for (k, v) in [
        ("train", json!(a.data.train)),
        ("test", json!(a.data.test)),
        ("classes", json!(c)),
        ("seeds", json!(a.seeds)),
        ("model", json!(emb.fingerprint)),
    ] {
        result[k] = v;
    }
    if let Some(d) = &a.out {
        write_json(d, "fewshot.json", &result)?;
        fs.chart(zs, "zero-shot vs few-shot linear probes")
            .save(&d.join("fewshot.png"))?;
    }
    print_or_json(a.m.json, &result, || {
        println!(
            "few-shot linear probes on {} ({} test images, {c} classes, {} seeds)",
            a.data.test,
            fte.len(),
            a.seeds
        );
        println!("{:>4} {:>10} {:>8}", "k", "top-1", "± std");
        for i in 0..fs.k.len() {
            println!(
                "{:>4} {:>10} {:>8}",
                fs.k[i],
                pct(fs.mean[i]),
                pct(fs.std[i])
            );
        }
        println!("zero-shot: {} — it {}", pct(zs), matching_k(&fs, zs));
    });
    Ok(())
}

// ---------------------------------------------------------------- retrieval

#[derive(Args)]
pub struct RetrievalArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Manifest with one or more captions per image (JSONL "captions": […] or CSV caption columns)
    #[arg(long)]
    pub data: String,
    /// K values of recall@K
    #[arg(long, default_value = "1,5,10")]
    pub ks: String,
    /// Write retrieval.json here
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn retrieval(a: &RetrievalArgs) -> Result<()> {
    let ks = parse_counts(&a.ks, "--ks")?;
    let set = EvalSet::retrieval(&a.data)?;
    let emb = a.m.open()?;
    let r = retrieval::evaluate(&emb, &set, &ks)?;
    if let Some(d) = &a.out {
        write_json(d, "retrieval.json", &r)?;
    }
    print_or_json(a.m.json, &serde_json::to_value(&r)?, || {
        println!(
            "retrieval on {} ({} images, {} captions)",
            a.data, r.images, r.captions
        );
        println!("{:>6} {:>12} {:>12}", "K", "image→text", "text→image");
        for x in &r.recall {
            println!(
                "{:>6} {:>12} {:>12}",
                format!("R@{}", x.k),
                pct(x.image_to_text),
                pct(x.text_to_image)
            );
        }
    });
    Ok(())
}

// ---------------------------------------------------------------- robustness

#[derive(Args)]
pub struct RobustnessArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Class names shared by every set
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Source-distribution training images (for the supervised probes)
    #[arg(long)]
    pub train: String,
    /// Source-distribution test images
    #[arg(long)]
    pub source: String,
    /// A distribution shift of the source: NAME=DATA (repeatable)
    #[arg(long = "shift", required = true)]
    pub shifts: Vec<String>,
    #[arg(long, default_value = "imagenet")]
    pub templates: String,
    /// Shots per class of the baseline probes (the full training set is added)
    #[arg(long, default_value = "1,2,4,8")]
    pub k: String,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: u64,
    /// Write robustness.json and robustness.png here
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn robustness(a: &RobustnessArgs) -> Result<()> {
    let ks = parse_counts(&a.k, "--k")?;
    let templates = templates::templates(&a.templates)?;
    let train = classification_set(&a.train, &a.classes)?;
    let source = classification_set(&a.source, &a.classes)?;
    check_same_classes(&train, &source)?;
    let mut shift_sets = Vec::new();
    for s in &a.shifts {
        let (name, data) = s
            .split_once('=')
            .with_context(|| format!("--shift {s:?}: write it as NAME=DATA"))?;
        let set = classification_set(data, &a.classes)?;
        check_same_classes(&train, &set)?;
        shift_sets.push((name.to_owned(), set));
    }
    probe::check_k_shots(&train.labels, &train.class_names, &ks)?;
    let emb = a.m.open()?;
    let ftr = emb.features(&train)?;
    let fsrc = emb.features(&source)?;
    let fsh = shift_sets
        .iter()
        .map(|(n, s)| Ok((n.clone(), emb.features(s)?)))
        .collect::<Result<Vec<_>>>()?;
    let w = emb.classifier(&train.class_names, &templates)?;
    let r = robustness::evaluate(&ftr, &fsrc, &fsh, &train.class_names, &w, &ks, a.seeds)?;
    let result = r.json();
    if let Some(d) = &a.out {
        write_json(d, "robustness.json", &result)?;
        r.chart("effective robustness")
            .save(&d.join("robustness.png"))?;
    }
    print_or_json(a.m.json, &result, || print_robustness(&r));
    Ok(())
}

fn print_robustness(r: &robustness::Robustness) {
    print!("{:<28} {:>9}", "", "source");
    for n in &r.shift_names {
        print!(" {n:>12}");
    }
    println!(" {:>10} {:>10}", "mean shift", "eff. rob.");
    for (name, v) in [
        ("zero-shot", &r.zero_shot),
        ("linear probe on source", &r.probe),
    ] {
        print!("{:<28} {:>9}", name, pct(v.0));
        for a in &v.1 {
            print!(" {:>12}", pct(*a));
        }
        println!(
            " {:>10} {:>+9.2}pt",
            pct(robustness::mean(&v.1)),
            r.effective(v) * 100.0
        );
    }
    println!(
        "baseline: {} source-trained probes, logit(shift) = {:.3}·logit(source) {:+.3}",
        r.baseline.len(),
        r.fit.slope,
        r.fit.intercept
    );
}

// ---------------------------------------------------------------- overlap

#[derive(Args)]
pub struct OverlapArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// The training images (folders, a manifest with or without labels, or shards)
    #[arg(long)]
    pub train: String,
    /// The labelled evaluation images
    #[arg(long)]
    pub eval: String,
    #[arg(long)]
    pub classes: Option<PathBuf>,
    #[arg(long, default_value = "imagenet")]
    pub templates: String,
    /// Similarity at or above which a pair is a duplicate (default: calibrated)
    #[arg(long, allow_hyphen_values = true)]
    pub threshold: Option<f32>,
    /// Evaluation images augmented for the calibration
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub calibration_samples: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write overlap.json and duplicates.csv here
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn overlap(a: &OverlapArgs) -> Result<()> {
    if let Some(t) = a.threshold
        && !(-1.0..=1.0).contains(&t)
    {
        bail!("--threshold must be a cosine similarity between -1 and 1, got {t}");
    }
    let templates = templates::templates(&a.templates)?;
    let train = EvalSet::images_of(&a.train)?;
    let eval = classification_set(&a.eval, &a.classes)?;
    let emb = a.m.open()?;
    let ftr = emb.features(&train)?;
    let fev = emb.features(&eval)?;
    let w = emb.classifier(&eval.class_names, &templates)?;
    let correct = zeroshot::correct(&fev, &w);
    let samples = a.calibration_samples as usize;
    let o = overlap::evaluate(
        &emb,
        &ftr,
        &eval,
        &fev,
        &correct,
        a.threshold,
        samples,
        a.seed,
    )?;
    let result = json!({"train": a.train, "eval": a.eval, "calibration": o.calibration, "report": o.report,
        "duplicates": o.pairs.len(), "model": emb.fingerprint});
    if let Some(d) = &a.out {
        write_json(d, "overlap.json", &result)?;
        o.write_pairs(&d.join("duplicates.csv"), &eval, &train)?;
    }
    print_or_json(a.m.json, &result, || print_overlap(&o));
    Ok(())
}

fn print_overlap(o: &overlap::Overlap) {
    let cal = &o.calibration;
    println!(
        "threshold {:.4} (detects {} of {} augmented copies, flags {} of {} nearest other-class images)",
        cal.threshold,
        pct(cal.true_positive_rate),
        cal.positives,
        pct(cal.false_positive_rate),
        cal.negatives
    );
    let r = &o.report;
    let opt = |v: Option<f64>| v.map_or("—".to_string(), pct);
    println!(
        "overlap: {} of {} evaluation images ({})",
        r.overlap,
        r.total,
        pct(r.overlap_fraction)
    );
    println!(
        "zero-shot top-1: All {}, Overlap {}, Clean {}, All − Clean {}{}",
        pct(r.acc_all),
        opt(r.acc_overlap),
        opt(r.acc_clean),
        r.all_minus_clean
            .map_or("—".into(), |v| format!("{:+.2} pt", v * 100.0)),
        r.p_value.map_or(String::new(), |p| format!(
            " (one-sided binomial p = {p:.3e})"
        ))
    );
}
