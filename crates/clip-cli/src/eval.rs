//! `clip eval …`: the paper's evaluation protocols. Image features come from the frozen image tower
//! (L2-normalised `encode_image`, as CLIP_benchmark) and are cached on disk keyed by dataset, with the
//! model that made them recorded and checked; the protocols themselves live in `clip-eval`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::Args;
use clip_data::Alpha;
use clip_data::synth::Rng;
use clip_eval::cache::{self, CacheKey};
use clip_eval::data::Fingerprint;
use clip_eval::metrics::{self, LogitFit};
use clip_eval::probe::{self, Features, SearchPoint};
use clip_eval::{EvalSet, FitOptions, overlap};
use clip_model::Clip;
use clip_model::source::to_vec;
use rayon::prelude::*;
use serde_json::json;

use crate::chart::{self, Chart, Series, Style};

/// Options shared by every `clip eval` command.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint path, training checkpoint directory, or NAME:TAG
    #[arg(long)]
    pub model: String,
    /// Images per forward pass
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Feature cache folder (default: $XDG_CACHE_HOME/clip-rs/features or ~/.cache/clip-rs/features)
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Do not read or write cached features
    #[arg(long)]
    pub no_cache: bool,
    /// Composite transparent pixels onto white instead of dropping alpha
    #[arg(long)]
    pub flatten_alpha: bool,
    /// Print results as JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// A loaded model with its fingerprint and feature-cache settings.
pub struct Ctx {
    pub clip: Clip,
    pub model_key: String,
    cache: Option<PathBuf>,
    alpha: Alpha,
    batch: usize,
}

fn default_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("clip-rs/features"))
}

/// Fingerprint of a model: its config and every parameter value.
pub fn model_key(clip: &Clip) -> String {
    let mut f = Fingerprint::default();
    f.str(&serde_json::to_string(&clip.config).unwrap_or_default());
    for (name, t) in clip.state_dict() {
        f.str(&name).floats(&t.data);
    }
    format!("{:016x}", f.0)
}

impl Ctx {
    pub fn open(m: &ModelArgs) -> Result<Ctx> {
        let device = clip_model::default_device();
        let clip = crate::models::load(&m.model, &device)?;
        Ok(Self::with_model(clip, m))
    }

    pub fn with_model(clip: Clip, m: &ModelArgs) -> Ctx {
        let model_key = model_key(&clip);
        Ctx {
            clip,
            model_key,
            cache: if m.no_cache {
                None
            } else {
                m.cache.clone().or_else(default_cache)
            },
            alpha: if m.flatten_alpha {
                Alpha::FlattenOnWhite
            } else {
                Alpha::Drop
            },
            batch: m.batch.max(1),
        }
    }

    fn dataset_key(&self, set: &EvalSet) -> String {
        format!(
            "{:016x}-{}px-{:?}",
            set.fingerprint,
            self.clip.config.image_size(),
            self.alpha
        )
    }

    /// L2-normalised image features of `set` (labels attached), from the cache when it was made
    /// by this model from these exact files; otherwise computed (and cached).
    pub fn features(&self, set: &EvalSet) -> Result<Features> {
        let key = CacheKey {
            model: self.model_key.clone(),
            dataset: self.dataset_key(set),
        };
        let labels = if set.labels.is_empty() {
            vec![0; set.len()]
        } else {
            set.labels.clone()
        };
        let path = self.cache.as_ref().map(|dir| {
            let tail: String = Path::new(&set.name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .take(40)
                .collect();
            dir.join(format!("{}-{tail}.safetensors", &key.dataset))
        });
        if let Some(p) = &path
            && p.exists()
        {
            match cache::read(p) {
                Ok((f, k)) if k == key && f.labels == labels => return Ok(f),
                Ok((_, k)) if k.model != key.model => eprintln!(
                    "features cache '{}' was computed by another model ({}, this model is {}); recomputing",
                    p.display(),
                    k.model,
                    key.model
                ),
                Ok(_) => eprintln!(
                    "features cache '{}' does not match this dataset; recomputing",
                    p.display()
                ),
                Err(e) => eprintln!("{e}; recomputing"),
            }
        }
        let f = Features {
            dim: self.clip.config.embed_dim,
            data: self.embed_set(set)?,
            labels,
        };
        if let Some(p) = &path {
            cache::write(p, &f, &key)?;
        }
        Ok(f)
    }

    fn embed_set(&self, set: &EvalSet) -> Result<Vec<f32>> {
        let n = self.clip.config.image_size();
        let pre = clip_data::Preprocess::clip(n);
        let device = self.clip.device();
        let bar = crate::embed::progress(set.len(), "images");
        let mut out = Vec::with_capacity(set.len() * self.clip.config.embed_dim);
        let idx: Vec<usize> = (0..set.len()).collect();
        for chunk in idx.chunks(self.batch) {
            let pixels: Vec<Vec<f32>> = chunk
                .par_iter()
                .map(|&i| {
                    set.load(i, self.alpha)
                        .map(|img| pre.apply(&img))
                        .map_err(|e| anyhow::anyhow!("{}: {e}", set.images[i].name()))
                })
                .collect::<Result<_>>()?;
            out.extend(self.encode_pixels(pixels.concat(), chunk.len(), n, &device));
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// Normalised embeddings of preprocessed images `[count, 3, n, n]`.
    pub fn encode_pixels(
        &self,
        pixels: Vec<f32>,
        count: usize,
        n: usize,
        device: &Device,
    ) -> Vec<f32> {
        let x = Tensor::<4>::from_data(TensorData::new(pixels, [count, 3, n, n]), device);
        to_vec(&clip_model::l2_normalize(
            self.clip.encode_image(x).detach(),
        ))
    }

    /// The zero-shot classifier `[classes, D]` (row-major).
    pub fn classifier(&self, classes: &[String], templates: &[String]) -> Result<Vec<f32>> {
        Ok(to_vec(&clip_train::trainer::zero_shot_classifier(
            &self.clip, classes, templates,
        )?))
    }
}

/// `scores[n, classes] = features · classifierᵀ`.
pub fn zero_shot_scores(f: &Features, classifier: &[f32], classes: usize) -> Vec<f32> {
    clip_eval::logreg::scores(&f.data, f.len(), f.dim, classifier, &vec![0.0; classes])
}

/// Whether the zero-shot top-1 prediction of each row is its label.
pub fn zero_shot_correct(f: &Features, classifier: &[f32], classes: usize) -> Vec<bool> {
    let s = zero_shot_scores(f, classifier, classes);
    metrics::ranks(&s, classes, &f.labels)
        .iter()
        .map(|&r| r == 0)
        .collect()
}

/// Top-1 of a classifier on features.
fn zero_shot_top1(f: &Features, classifier: &[f32], classes: usize) -> f64 {
    let s = zero_shot_scores(f, classifier, classes);
    metrics::top_k(&metrics::ranks(&s, classes, &f.labels), 1)
}

fn parse_list(s: &str, what: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .with_context(|| format!("{what}: {p:?} is not a whole number"))
        })
        .collect()
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

fn write_json(dir: &Option<PathBuf>, name: &str, v: &serde_json::Value) -> Result<()> {
    if let Some(d) = dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        std::fs::write(d.join(name), serde_json::to_string_pretty(v)? + "\n")?;
    }
    Ok(())
}

fn classification_set(source: &str, classes: &Option<PathBuf>) -> Result<EvalSet> {
    Ok(EvalSet::classification(source, classes.as_deref())?)
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
    /// Template set(s): a shipped name (see `configs/templates/`), or a file with `{}` per line.
    /// Several sets are compared in one run; a single set is compared with the bare class name and
    /// its first template alone.
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

/// One compared prompt set.
pub struct PromptRow {
    pub name: String,
    pub templates: Vec<String>,
}

/// The prompt sets to compare for `--templates` values.
pub fn prompt_rows(specs: &[String]) -> Result<Vec<PromptRow>> {
    let mut rows = vec![PromptRow {
        name: "class name only".into(),
        templates: vec!["{}".into()],
    }];
    let sets: Vec<(String, Vec<String>)> = specs
        .iter()
        .map(|s| Ok((s.clone(), crate::classify::templates(s)?)))
        .collect::<Result<_>>()?;
    if let [(name, t)] = sets.as_slice()
        && t.len() > 1
    {
        rows.push(PromptRow {
            name: format!("single template {:?}", t[0]),
            templates: vec![t[0].clone()],
        });
        rows.push(PromptRow {
            name: format!("ensemble '{name}' ({} templates)", t.len()),
            templates: t.clone(),
        });
    } else {
        for (name, t) in sets {
            rows.push(PromptRow {
                name: format!(
                    "'{name}' ({} template{})",
                    t.len(),
                    if t.len() == 1 { "" } else { "s" }
                ),
                templates: t,
            });
        }
    }
    rows.dedup_by(|a, b| a.templates == b.templates);
    Ok(rows)
}

fn save_classifier(
    path: &Path,
    ctx: &Ctx,
    classes: &[String],
    templates: &[String],
    w: &[f32],
) -> Result<()> {
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![classes.len(), w.len() / classes.len().max(1)],
        &bytes,
    )?;
    let meta: std::collections::HashMap<String, String> = [
        ("model".to_string(), ctx.model_key.clone()),
        ("classes".to_string(), serde_json::to_string(classes)?),
        ("templates".to_string(), serde_json::to_string(templates)?),
    ]
    .into();
    let out = safetensors::serialize([("classifier", view)], Some(meta))?;
    Ok(clip_model::weights::write_atomic(path, &out)?)
}

fn load_classifier(path: &Path, ctx: &Ctx, classes: &[String]) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let m = meta.metadata().clone().unwrap_or_default();
    if m.get("model") != Some(&ctx.model_key) {
        bail!(
            "classifier '{}' was built with another model ({}); this model is {} — rebuild it with --save-classifier",
            path.display(),
            m.get("model").map_or("unknown", |s| s.as_str()),
            ctx.model_key
        );
    }
    let saved: Vec<String> = serde_json::from_str(m.get("classes").map_or("[]", |s| s.as_str()))?;
    if saved != classes {
        bail!(
            "classifier '{}' has {} classes that differ from this class list ({} classes)",
            path.display(),
            saved.len(),
            classes.len()
        );
    }
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let t = st.tensor("classifier")?;
    Ok(t.data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect())
}

/// Results of one zero-shot row.
pub fn zero_shot_metrics(
    f: &Features,
    classifier: &[f32],
    classes: usize,
) -> (f64, f64, f64, Vec<Vec<u64>>) {
    let s = zero_shot_scores(f, classifier, classes);
    let r = metrics::ranks(&s, classes, &f.labels);
    let pred = clip_eval::logreg::argmax_rows(&s, classes);
    let cm = metrics::confusion(&pred, &f.labels, classes);
    (
        metrics::top_k(&r, 1),
        metrics::top_k(&r, 5),
        metrics::mean_per_class_recall(&cm),
        cm,
    )
}

pub fn zeroshot(a: &ZeroShotArgs) -> Result<()> {
    let set = classification_set(&a.data, &a.classes)?;
    let ctx = Ctx::open(&a.m)?;
    let feats = ctx.features(&set)?;
    let c = set.class_names.len();
    let mut rows = Vec::new();
    let mut last = None;
    if let Some(path) = &a.classifier {
        let w = load_classifier(path, &ctx, &set.class_names)?;
        let (t1, t5, mpr, cm) = zero_shot_metrics(&feats, &w, c);
        rows.push(json!({"prompts": format!("saved classifier {}", path.display()), "top1": t1, "top5": t5, "mean_per_class_recall": mpr}));
        last = Some((cm, w, Vec::new()));
    } else {
        for row in prompt_rows(&a.templates)? {
            let w = ctx.classifier(&set.class_names, &row.templates)?;
            let (t1, t5, mpr, cm) = zero_shot_metrics(&feats, &w, c);
            rows.push(json!({"prompts": row.name, "templates": row.templates.len(), "top1": t1, "top5": t5, "mean_per_class_recall": mpr}));
            last = Some((cm, w, row.templates));
        }
    }
    let (cm, w, templates) = last.expect("at least one row");
    if let Some(p) = &a.save_classifier {
        save_classifier(p, &ctx, &set.class_names, &templates, &w)?;
    }
    let chance1 = 1.0 / c as f64;
    let chance5 = 5f64.min(c as f64) / c as f64;
    let result = json!({"data": a.data, "images": set.len(), "classes": c, "model": ctx.model_key,
        "rows": rows, "chance_top1": chance1, "chance_top5": chance5});
    if let Some(d) = &a.out {
        write_json(&a.out, "zeroshot.json", &result)?;
        let mut csv = String::from("true\\predicted");
        for n in &set.class_names {
            csv.push(',');
            csv.push_str(&csv_field(n));
        }
        csv.push('\n');
        let recall = metrics::per_class_recall(&cm);
        let mut per = String::from("class,images,recall\n");
        for (i, row) in cm.iter().enumerate() {
            csv.push_str(&csv_field(&set.class_names[i]));
            for v in row {
                csv.push_str(&format!(",{v}"));
            }
            csv.push('\n');
            per.push_str(&format!(
                "{},{},{}\n",
                csv_field(&set.class_names[i]),
                row.iter().sum::<u64>(),
                recall[i].map_or(String::new(), |r| format!("{r:.4}"))
            ));
        }
        std::fs::write(d.join("confusion.csv"), csv)?;
        std::fs::write(d.join("per_class.csv"), per)?;
        chart::save_png(
            &chart::heatmap(&cm, &format!("ZERO-SHOT CONFUSION ({c} CLASSES)")),
            &d.join("confusion.png"),
        )?;
    }
    if a.m.json {
        println!("{result}");
    } else {
        println!(
            "zero-shot on {} ({} images, {c} classes)",
            a.data,
            set.len()
        );
        println!(
            "{:<48} {:>8} {:>8} {:>12}",
            "prompts", "top-1", "top-5", "mean recall"
        );
        for r in &rows {
            println!(
                "{:<48} {:>8} {:>8} {:>12}",
                r["prompts"].as_str().unwrap_or(""),
                pct(r["top1"].as_f64().unwrap_or(0.0)),
                pct(r["top5"].as_f64().unwrap_or(0.0)),
                pct(r["mean_per_class_recall"].as_f64().unwrap_or(0.0))
            );
        }
        println!("{:<48} {:>8} {:>8}", "chance", pct(chance1), pct(chance5));
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
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
    #[arg(long, default_value_t = 1000)]
    pub max_iter: usize,
    /// Write probe.json here
    #[arg(long)]
    pub out: Option<PathBuf>,
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

pub fn probe(a: &ProbeArgs) -> Result<()> {
    let (train, test) = a.data.open()?;
    let ctx = Ctx::open(&a.m)?;
    let (ftr, fte) = (ctx.features(&train)?, ctx.features(&test)?);
    let c = train.class_names.len();
    let opts = FitOptions {
        max_iter: a.max_iter,
        ..Default::default()
    };
    let t = Instant::now();
    let bar = crate::embed::progress(15, "C search");
    let p = probe::fit_probe(&ftr, c, a.val_fraction, a.seed, a.c, opts, |_| bar.inc(1))?;
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    let s = p.model.scores(&fte.data, fte.len());
    let r = metrics::ranks(&s, c, &fte.labels);
    let cm = metrics::confusion(&clip_eval::logreg::argmax_rows(&s, c), &fte.labels, c);
    let result = json!({"train": a.data.train, "test": a.data.test, "train_images": ftr.len(), "test_images": fte.len(),
        "classes": c, "c": p.c, "search": p.search, "top1": metrics::top_k(&r, 1), "top5": metrics::top_k(&r, 5),
        "mean_per_class_recall": metrics::mean_per_class_recall(&cm), "iterations": p.model.iterations,
        "stop": p.model.stop, "fit_seconds": secs, "model": ctx.model_key});
    write_json(&a.out, "probe.json", &result)?;
    if a.m.json {
        println!("{result}");
    } else {
        print_search(&p.search);
        println!(
            "linear probe: C = {:.4e}, {} L-BFGS iterations ({:?}), {:.1} s",
            p.c, p.model.iterations, p.model.stop, secs
        );
        println!(
            "test: top-1 {}, top-5 {}, mean per-class recall {} ({} images, {c} classes)",
            pct(metrics::top_k(&r, 1)),
            pct(metrics::top_k(&r, 5)),
            pct(metrics::mean_per_class_recall(&cm)),
            fte.len()
        );
    }
    if !p.model.converged {
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
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Templates of the zero-shot line
    #[arg(long, default_value = "imagenet")]
    pub templates: String,
    /// Write fewshot.json and fewshot.png here
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Few-shot results: per k, (mean, std, each seed's accuracy).
pub struct FewShot {
    pub k: Vec<usize>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub runs: Vec<Vec<f64>>,
    pub c: Vec<Vec<f64>>,
}

/// k-shot probes: for each k and seed, draw k training examples per class, fit with the probe
/// protocol (C searched on half of the shots when k ≥ 2; C = 1 when k = 1), test on `test`.
pub fn few_shot(
    train: &Features,
    test: &Features,
    names: &[String],
    ks: &[usize],
    seeds: u64,
) -> Result<FewShot> {
    if seeds == 0 || ks.is_empty() {
        bail!("give at least one k and one seed (--k 1,2,4 --seeds 5)");
    }
    // every k is checked before any fitting
    probe::check_k_shots(&train.labels, names, ks)?;
    let bar = crate::embed::progress(ks.len() * seeds as usize, "few-shot probes");
    let mut out = FewShot {
        k: ks.to_vec(),
        mean: Vec::new(),
        std: Vec::new(),
        runs: Vec::new(),
        c: Vec::new(),
    };
    for &k in ks {
        let mut accs = Vec::new();
        let mut cs = Vec::new();
        for seed in 0..seeds {
            let p = probe::k_shot_probe(train, names, k, seed)?;
            accs.push(test.accuracy(&p.model));
            cs.push(p.c);
            bar.inc(1);
        }
        let (m, s) = probe::mean_std(&accs);
        out.mean.push(m);
        out.std.push(s);
        out.runs.push(accs);
        out.c.push(cs);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Where zero-shot accuracy falls on the few-shot curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KMatch {
    /// below the smallest k's probe
    Below(usize),
    /// equal to a probe with this many examples per class (interpolated in log₂ k)
    At(f64),
    /// above the largest k's probe
    Above(usize),
}

impl KMatch {
    pub fn json(&self) -> serde_json::Value {
        match self {
            KMatch::Below(k) => json!(format!("below {k}-shot")),
            KMatch::At(k) => json!(k),
            KMatch::Above(k) => json!(format!("above {k}-shot")),
        }
    }
}

impl std::fmt::Display for KMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KMatch::Below(k) => write!(f, "is below the {k}-shot linear probe"),
            KMatch::At(k) => write!(f, "matches a {k:.1}-shot linear probe"),
            KMatch::Above(k) => write!(f, "is above every probe up to {k} shots"),
        }
    }
}

/// The k at which the few-shot mean reaches `target`.
pub fn matching_k(fs: &FewShot, target: f64) -> KMatch {
    if fs.mean.first().is_some_and(|&m| m > target) {
        return KMatch::Below(fs.k[0]);
    }
    for i in 1..fs.k.len() {
        let (a, b) = (fs.mean[i - 1], fs.mean[i]);
        if a <= target && b >= target && b > a {
            let (la, lb) = ((fs.k[i - 1] as f64).log2(), (fs.k[i] as f64).log2());
            return KMatch::At(2f64.powf(la + (target - a) / (b - a) * (lb - la)));
        }
    }
    KMatch::Above(*fs.k.last().unwrap_or(&0))
}

pub fn few_shot_chart(fs: &FewShot, zero_shot: f64, title: &str) -> Chart {
    let kmax = *fs.k.iter().max().unwrap_or(&1) as f64;
    let mut probe_series = Series::new(
        "LINEAR PROBE (MEAN +- STD)",
        fs.k.iter()
            .zip(&fs.mean)
            .map(|(&k, &m)| (k as f64, m * 100.0))
            .collect(),
        chart::BLUE,
        Style::LinePoints,
    );
    probe_series.errors = fs.std.iter().map(|s| s * 100.0).collect();
    let top = fs
        .mean
        .iter()
        .zip(&fs.std)
        .map(|(m, s)| m + s)
        .fold(zero_shot, f64::max);
    Chart {
        title: title.into(),
        x_label: "LABELED EXAMPLES PER CLASS (K)".into(),
        y_label: "ACCURACY (%)".into(),
        x_range: (1.0, kmax.max(2.0)),
        y_range: (0.0, ((top * 100.0 / 10.0).ceil() * 10.0).clamp(10.0, 100.0)),
        log2_x: true,
        series: vec![
            Series::new(
                "ZERO-SHOT CLIP",
                vec![(1.0, zero_shot * 100.0), (kmax.max(2.0), zero_shot * 100.0)],
                chart::ORANGE,
                Style::Dashed,
            ),
            probe_series,
        ],
    }
}

pub fn fewshot(a: &FewShotArgs) -> Result<()> {
    let ks = parse_list(&a.k, "--k")?;
    let (train, test) = a.data.open()?;
    let templates = crate::classify::templates(&a.templates)?;
    probe::check_k_shots(&train.labels, &train.class_names, &ks)?;
    let ctx = Ctx::open(&a.m)?;
    let (ftr, fte) = (ctx.features(&train)?, ctx.features(&test)?);
    let c = train.class_names.len();
    let zs = zero_shot_top1(&fte, &ctx.classifier(&train.class_names, &templates)?, c);
    let fs = few_shot(&ftr, &fte, &train.class_names, &ks, a.seeds)?;
    let matching = matching_k(&fs, zs);
    let result = json!({"train": a.data.train, "test": a.data.test, "classes": c, "zero_shot_top1": zs,
        "k": fs.k, "mean": fs.mean, "std": fs.std, "runs": fs.runs, "c": fs.c, "seeds": a.seeds,
        "zero_shot_matches_k": matching.json(), "model": ctx.model_key});
    if let Some(d) = &a.out {
        write_json(&a.out, "fewshot.json", &result)?;
        few_shot_chart(&fs, zs, "ZERO-SHOT VS FEW-SHOT LINEAR PROBES")
            .save(&d.join("fewshot.png"))?;
    }
    if a.m.json {
        println!("{result}");
    } else {
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
        println!("zero-shot: {} — it {matching}", pct(zs));
    }
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
    let ks = parse_list(&a.ks, "--ks")?;
    let set = EvalSet::retrieval(&a.data)?;
    let ctx = Ctx::open(&a.m)?;
    let img = ctx.features(&set)?;
    let texts: Vec<String> = set.captions.iter().flatten().cloned().collect();
    let text_image: Vec<usize> = set
        .captions
        .iter()
        .enumerate()
        .flat_map(|(i, c)| std::iter::repeat_n(i, c.len()))
        .collect();
    let txt = crate::embed::embed_texts(&ctx.clip, &texts, ctx.batch, true, true)?;
    let scores =
        clip_eval::logreg::scores(&txt, texts.len(), img.dim, &img.data, &vec![0.0; set.len()]);
    let r = metrics::retrieval_recall(&scores, set.len(), &text_image, &ks);
    let result = json!({"data": a.data, "images": set.len(), "captions": texts.len(), "recall": r, "model": ctx.model_key});
    write_json(&a.out, "retrieval.json", &result)?;
    if a.m.json {
        println!("{result}");
    } else {
        println!(
            "retrieval on {} ({} images, {} captions)",
            a.data,
            set.len(),
            texts.len()
        );
        println!("{:>6} {:>12} {:>12}", "K", "image→text", "text→image");
        for x in &r {
            println!(
                "{:>6} {:>12} {:>12}",
                format!("R@{}", x.k),
                pct(x.image_to_text),
                pct(x.text_to_image)
            );
        }
    }
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
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Write robustness.json and robustness.png here
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Robustness results on one source and several shifts.
pub struct Robustness {
    pub shift_names: Vec<String>,
    /// (name, source accuracy, accuracy per shift)
    pub zero_shot: (f64, Vec<f64>),
    pub probe: (f64, Vec<f64>),
    /// baseline supervised probes: (label, source accuracy, mean shift accuracy)
    pub baseline: Vec<(String, f64, f64)>,
    pub fit: LogitFit,
}

impl Robustness {
    pub fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    pub fn effective(&self, (src, shifts): &(f64, Vec<f64>)) -> f64 {
        self.fit.effective_robustness(*src, Self::mean(shifts))
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "shifts": self.shift_names,
            "zero_shot": {"source": self.zero_shot.0, "shifts": self.zero_shot.1, "mean_shift": Self::mean(&self.zero_shot.1),
                          "effective_robustness": self.effective(&self.zero_shot)},
            "probe": {"source": self.probe.0, "shifts": self.probe.1, "mean_shift": Self::mean(&self.probe.1),
                      "effective_robustness": self.effective(&self.probe)},
            "baseline": self.baseline.iter().map(|(n, s, t)| json!({"probe": n, "source": s, "mean_shift": t})).collect::<Vec<_>>(),
            "baseline_fit_logit": self.fit,
        })
    }

    pub fn chart(&self, title: &str) -> Chart {
        let lo = self
            .baseline
            .iter()
            .map(|b| b.1.min(b.2))
            .chain([
                self.zero_shot.0,
                Self::mean(&self.zero_shot.1),
                self.probe.0,
            ])
            .fold(1.0, f64::min);
        let lo = ((lo * 10.0).floor() / 10.0).max(0.0);
        let curve: Vec<(f64, f64)> = (0..=40)
            .map(|i| lo + (1.0 - lo) * i as f64 / 40.0)
            .map(|x| (x * 100.0, self.fit.predict(x) * 100.0))
            .collect();
        Chart {
            title: title.into(),
            x_label: "SOURCE ACCURACY (%)".into(),
            y_label: "MEAN ACCURACY UNDER SHIFT (%)".into(),
            x_range: (lo * 100.0, 100.0),
            y_range: (lo * 100.0, 100.0),
            log2_x: false,
            series: vec![
                Series::new(
                    "Y = X (PERFECT ROBUSTNESS)",
                    vec![(lo * 100.0, lo * 100.0), (100.0, 100.0)],
                    chart::GREY,
                    Style::Dashed,
                ),
                Series::new("BASELINE FIT (LOGIT)", curve, chart::BLUE, Style::Line),
                Series::new(
                    "SUPERVISED PROBES ON SOURCE",
                    self.baseline
                        .iter()
                        .map(|b| (b.1 * 100.0, b.2 * 100.0))
                        .collect(),
                    chart::BLUE,
                    Style::Points,
                ),
                Series::new(
                    "ZERO-SHOT CLIP",
                    vec![(
                        self.zero_shot.0 * 100.0,
                        Self::mean(&self.zero_shot.1) * 100.0,
                    )],
                    chart::ORANGE,
                    Style::Points,
                ),
            ],
        }
    }
}

/// Zero-shot and source-trained probes on the source and each shift; the baseline line fitted in
/// logit space through k-shot and full-data probes (each a "model trained on the source").
/// `classifier` is the zero-shot classifier `[classes, D]` of `names`.
pub fn robustness_eval(
    train: &Features,
    source: &Features,
    shifts: &[(String, Features)],
    names: &[String],
    classifier: &[f32],
    ks: &[usize],
    seeds: u64,
) -> Result<Robustness> {
    let c = names.len();
    let zero_shot = (
        zero_shot_top1(source, classifier, c),
        shifts
            .iter()
            .map(|(_, f)| zero_shot_top1(f, classifier, c))
            .collect(),
    );
    let full = probe::fit_probe(train, c, 0.2, 0, None, FitOptions::default(), |_| {})?;
    let probe_res = (
        source.accuracy(&full.model),
        shifts
            .iter()
            .map(|(_, f)| f.accuracy(&full.model))
            .collect::<Vec<_>>(),
    );
    let mut baseline = Vec::new();
    let bar = crate::embed::progress(ks.len() * seeds as usize, "baseline probes");
    for &k in ks {
        for seed in 0..seeds {
            let p = probe::k_shot_probe(train, names, k, seed)?;
            let sh: Vec<f64> = shifts.iter().map(|(_, f)| f.accuracy(&p.model)).collect();
            baseline.push((
                format!("{k}-shot seed {seed}"),
                source.accuracy(&p.model),
                Robustness::mean(&sh),
            ));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    baseline.push((
        "all training data".into(),
        probe_res.0,
        Robustness::mean(&probe_res.1),
    ));
    let fit = LogitFit::fit(&baseline.iter().map(|b| (b.1, b.2)).collect::<Vec<_>>());
    Ok(Robustness {
        shift_names: shifts.iter().map(|s| s.0.clone()).collect(),
        zero_shot,
        probe: probe_res,
        baseline,
        fit,
    })
}

pub fn robustness(a: &RobustnessArgs) -> Result<()> {
    let ks = parse_list(&a.k, "--k")?;
    let templates = crate::classify::templates(&a.templates)?;
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
    let ctx = Ctx::open(&a.m)?;
    let ftr = ctx.features(&train)?;
    let fsrc = ctx.features(&source)?;
    let fsh: Vec<(String, Features)> = shift_sets
        .iter()
        .map(|(n, s)| Ok((n.clone(), ctx.features(s)?)))
        .collect::<Result<_>>()?;
    let w = ctx.classifier(&train.class_names, &templates)?;
    let r = robustness_eval(&ftr, &fsrc, &fsh, &train.class_names, &w, &ks, a.seeds)?;
    let result = r.json();
    if let Some(d) = &a.out {
        write_json(&a.out, "robustness.json", &result)?;
        r.chart("EFFECTIVE ROBUSTNESS")
            .save(&d.join("robustness.png"))?;
    }
    if a.m.json {
        println!("{result}");
    } else {
        print_robustness(&r);
    }
    Ok(())
}

pub fn print_robustness(r: &Robustness) {
    print!("{:<28} {:>9}", "", "source");
    for n in &r.shift_names {
        print!(" {:>12}", n);
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
            pct(Robustness::mean(&v.1)),
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
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Evaluation images augmented for the calibration
    #[arg(long, default_value_t = 256)]
    pub calibration_samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write overlap.json and duplicates.csv here
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Overlap analysis result.
pub struct Overlap {
    pub calibration: overlap::Calibration,
    pub report: overlap::OverlapReport,
    /// (eval index, train index, similarity) at or above the threshold, most similar first
    pub pairs: Vec<(usize, usize, f32)>,
}

/// Calibrate (unless `threshold`), find duplicates of `eval` images in `train`, and split accuracy.
#[allow(clippy::too_many_arguments)]
pub fn overlap_eval(
    ctx: &Ctx,
    train: &Features,
    eval_set: &EvalSet,
    eval: &Features,
    correct: &[bool],
    threshold: Option<f32>,
    samples: usize,
    seed: u64,
) -> Result<Overlap> {
    let d = eval.dim;
    // known duplicates: augmented copies (random crop of 60–100% of the side, resized back)
    let mut rng = Rng::new(seed ^ 0x0D0B);
    let mut pick: Vec<usize> = (0..eval.len()).collect();
    for i in (1..pick.len()).rev() {
        pick.swap(i, rng.below(i + 1));
    }
    pick.truncate(samples.min(eval.len()));
    let n = ctx.clip.config.image_size();
    let pre = clip_data::Preprocess::clip(n);
    let scales: Vec<f64> = pick.iter().map(|_| 0.6 + 0.4 * rng.unit()).collect();
    let seeds: Vec<u64> = pick.iter().map(|_| rng.next_u64()).collect();
    let mut positives = Vec::new();
    for ((chunk, sc), sd) in pick
        .chunks(ctx.batch)
        .zip(scales.chunks(ctx.batch))
        .zip(seeds.chunks(ctx.batch))
    {
        let pixels: Vec<Vec<f32>> = chunk
            .par_iter()
            .zip(sc)
            .zip(sd)
            .map(|((&i, &s), &seed)| {
                let img = eval_set
                    .load(i, ctx.alpha)
                    .map_err(|e| anyhow::anyhow!(e))?;
                // an n×n crop covering a fraction `s` of the short side, at a random position
                let mut r = Rng::new(seed);
                Ok(pre.normalize(&clip_data::random_square_crop(&img, n, 1.0 / s, &mut r)))
            })
            .collect::<Result<_>>()?;
        let emb = ctx.encode_pixels(pixels.concat(), chunk.len(), n, &ctx.clip.device());
        for (j, &i) in chunk.iter().enumerate() {
            let a = &emb[j * d..(j + 1) * d];
            positives.push(a.iter().zip(eval.row(i)).map(|(x, y)| x * y).sum::<f32>());
        }
    }
    // known non-duplicates: each sampled image's nearest evaluation image of another class
    let q = eval.subset(&pick);
    let labels = &eval.labels;
    let negatives: Vec<f32> = overlap::nearest(&q.data, &eval.data, d, |qi, j| {
        labels[j] == labels[pick[qi]]
    })
    .into_iter()
    .filter(|p| p.0 != usize::MAX)
    .map(|p| p.1)
    .collect();
    let mut calibration = overlap::calibrate(&positives, &negatives);
    if let Some(t) = threshold {
        let rate = |v: &[f32]| v.iter().filter(|&&s| s >= t).count() as f64 / v.len().max(1) as f64;
        calibration.threshold = t;
        calibration.true_positive_rate = rate(&positives);
        calibration.false_positive_rate = rate(&negatives);
    }
    let t = calibration.threshold;
    let nn = overlap::nearest(&eval.data, &train.data, d, |_, _| false);
    let is_dup: Vec<bool> = nn.iter().map(|p| p.0 != usize::MAX && p.1 >= t).collect();
    let mut pairs: Vec<(usize, usize, f32)> = nn
        .iter()
        .enumerate()
        .filter(|(i, _)| is_dup[*i])
        .map(|(i, p)| (i, p.0, p.1))
        .collect();
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(Overlap {
        calibration,
        report: overlap::subset_accuracy(correct, &is_dup),
        pairs,
    })
}

pub fn overlap_cmd(a: &OverlapArgs) -> Result<()> {
    let templates = crate::classify::templates(&a.templates)?;
    let train = EvalSet::images_of(&a.train)?;
    let eval = classification_set(&a.eval, &a.classes)?;
    let ctx = Ctx::open(&a.m)?;
    let ftr = ctx.features(&train)?;
    let fev = ctx.features(&eval)?;
    let c = eval.class_names.len();
    let w = ctx.classifier(&eval.class_names, &templates)?;
    let correct = zero_shot_correct(&fev, &w, c);
    let o = overlap_eval(
        &ctx,
        &ftr,
        &eval,
        &fev,
        &correct,
        a.threshold,
        a.calibration_samples,
        a.seed,
    )?;
    let result = json!({"train": a.train, "eval": a.eval, "calibration": o.calibration, "report": o.report,
        "duplicates": o.pairs.len(), "model": ctx.model_key});
    if let Some(d) = &a.out {
        write_json(&a.out, "overlap.json", &result)?;
        let mut csv = String::from("eval_image,train_image,similarity\n");
        for (i, j, sim) in &o.pairs {
            csv.push_str(&format!(
                "{},{},{sim:.5}\n",
                csv_field(&eval.images[*i].name()),
                csv_field(&train.images[*j].name())
            ));
        }
        std::fs::write(d.join("duplicates.csv"), csv)?;
    }
    if a.m.json {
        println!("{result}");
    } else {
        print_overlap(&o);
    }
    Ok(())
}

pub fn print_overlap(o: &Overlap) {
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
