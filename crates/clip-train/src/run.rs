//! A training run as one library call: [`run`] validates the configuration, takes the run
//! folder's lock, opens the data, builds or resumes the model and optimiser (checking the saved
//! configuration), trains with progress, and writes the metrics log, checkpoints and `plot.png`.
//! `clip train` and `clip quickstart` are thin callers.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use clip_data::Rgb8;
use clip_data::dataset::EvalSet;
use clip_data::pairs::Pairs;
use clip_data::synth::{Split, SyntheticScenes, class_names};
use clip_model::Clip;
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{self, TrainState};
use crate::config::{ConfigError, TrainConfig};
use crate::log::{self, StepLog};
use crate::optim::{AdamW, AdamWConfig};
use crate::trainer::{LoopOptions, PairSource, Summary, TrainError, ZeroShotSet, train};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Pairs(#[from] clip_data::pairs::PairsError),
    #[error(transparent)]
    Data(#[from] clip_data::dataset::DataError),
    #[error(transparent)]
    Chart(#[from] clip_data::chart::ChartError),
    #[error("{0}")]
    Run(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How to start.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// continue the run in `out_dir` from its newest complete checkpoint
    pub resume: bool,
    /// settings allowed to differ from the saved run on resume (recorded in the checkpoint)
    pub change: Vec<String>,
    /// no progress bar
    pub quiet: bool,
    /// start over in a folder that holds a run: its checkpoints, log and plot are removed first
    pub restart: bool,
}

/// What a finished run hands back.
pub struct RunOutput {
    pub summary: Summary,
    pub clip: Clip,
    /// the synthetic scenes when `data = "synthetic"`
    pub synthetic: Option<SyntheticScenes>,
    /// settings changed on this resume: (setting, old, new)
    pub changes: Vec<(String, String, String)>,
    /// leftovers of killed checkpoint writes that were removed
    pub cleaned: Vec<PathBuf>,
}

impl PairSource for Pairs {
    fn len(&self) -> Option<u64> {
        Some(Pairs::len(self) as u64)
    }
    fn pair(&self, index: u64) -> Result<(Rgb8, String), String> {
        Pairs::pair(self, index as usize)
    }
}

/// An exclusive lock on a run folder (`OUT/.lock`, holding the owner's process id), released when
/// dropped or when the process dies.
pub struct RunLock(#[allow(dead_code)] std::fs::File);

impl RunLock {
    pub fn take(out: &Path) -> Result<RunLock, RunError> {
        let path = out.join(".lock");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if f.try_lock().is_err() {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(RunError::Run(format!(
                "'{}' is in use by another training run (process {}); wait for it to finish or choose another --out",
                out.display(),
                pid.trim()
            )));
        }
        f.set_len(0).map_err(io(&path))?;
        f.rewind().map_err(io(&path))?;
        write!(f, "{}", std::process::id()).map_err(io(&path))?;
        Ok(RunLock(f))
    }
}

/// Held-out synthetic scenes as a zero-shot set over all 48 (colour, shape) classes.
pub fn synthetic_eval(data: &SyntheticScenes, n: usize, count: usize) -> ZeroShotSet {
    let pre = clip_data::Preprocess::clip(n);
    let (images, labels) = (0..count as u64)
        .map(|i| {
            let (img, _, scene) = data.sample(Split::HeldOut, 1_000_000 + i);
            (pre.apply(&img), scene.class())
        })
        .unzip();
    ZeroShotSet {
        images,
        labels,
        class_names: class_names(),
        templates: vec!["a {}".into(), "{}".into()],
    }
}

/// The first `limit` rows (0 = all) of a labelled manifest as a zero-shot set.
pub fn labelled_eval(
    manifest: &Path,
    classes: &Path,
    templates: &[String],
    n: usize,
    limit: usize,
) -> Result<ZeroShotSet, RunError> {
    let set = EvalSet::classification(&manifest.display().to_string(), Some(classes))?;
    clip_embed::report_warnings(&set.warnings);
    let take = if limit > 0 {
        limit.min(set.len())
    } else {
        set.len()
    };
    let set = set.subset(&(0..take).collect::<Vec<_>>(), "train-eval");
    let pre = clip_data::Preprocess::clip(n);
    let images = set
        .images
        .iter()
        .map(|r| r.load(pre.alpha).map(|img| pre.apply(&img)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(RunError::Run)?;
    Ok(ZeroShotSet {
        images,
        labels: set.labels,
        class_names: set.class_names,
        templates: templates.to_vec(),
    })
}

fn progress(steps: usize, done: usize, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]")
    {
        bar.set_style(style);
    }
    bar.set_position(done as u64);
    bar
}

/// Model, optimiser, state, and the settings changed on resume (setting, old, new).
type Start = (Clip, AdamW, TrainState, Vec<(String, String, String)>);

/// The model, optimiser and state to start from: a fresh model, or the newest checkpoint of the
/// run in `out` (its saved configuration checked against `cfg`).
fn start(
    cfg: &TrainConfig,
    options: &RunOptions,
    device: &burn::prelude::Device,
) -> Result<Start, RunError> {
    let out = &cfg.out_dir;
    let mcfg = cfg.model_config()?;
    if options.resume {
        let ckpt = checkpoint::latest(out).ok_or_else(|| {
            RunError::Run(format!(
                "--resume: no complete checkpoint in '{}'",
                out.join("checkpoints").display()
            ))
        })?;
        let (clip, opt, mut state) = checkpoint::load(&ckpt, &mcfg, device)?;
        let changes = match &state.config {
            Some(saved) => cfg.check_resume(saved, &options.change)?,
            None => Vec::new(),
        };
        for (s, a, b) in &changes {
            state
                .changes
                .push((state.step, s.clone(), a.clone(), b.clone()));
        }
        state.config = Some(cfg.clone());
        // steps logged after that checkpoint are run again
        log::truncate_after(out, state.step).map_err(io(out))?;
        return Ok((clip, opt, state, changes));
    }
    let holds_run = checkpoint::latest(out).is_some()
        || !checkpoint::steps(out).is_empty()
        || out.join("metrics.jsonl").exists();
    if holds_run && !options.restart {
        return Err(RunError::Run(format!(
            "'{}' already holds a run; pass --resume to continue it, --restart to start over (its checkpoints and log are removed), or choose another --out (nothing was changed)",
            out.display()
        )));
    }
    if holds_run {
        remove_run(out)?;
    }
    let clip = Clip::random(&mcfg, cfg.seed, device).map_err(checkpoint::CheckpointError::Load)?;
    let mut oc = AdamWConfig::paper(matches!(
        mcfg.vision_kind().map_err(ConfigError::Model)?,
        clip_model::config::VisionKind::Vit { .. }
    ));
    oc.weight_decay = cfg.weight_decay;
    let opt = AdamW::new(oc, &clip);
    let state = TrainState {
        seed: cfg.seed,
        config: Some(cfg.clone()),
        ..Default::default()
    };
    Ok((clip, opt, state, Vec::new()))
}

/// The training data: the synthetic scenes, or pairs from a manifest, class folders or shards.
struct TrainData {
    synthetic: Option<SyntheticScenes>,
    pairs: Option<Pairs>,
}

impl TrainData {
    fn open(cfg: &TrainConfig, image_size: usize) -> Result<TrainData, RunError> {
        if cfg.data == "synthetic" {
            let s = SyntheticScenes::new(cfg.seed, image_size, cfg.held_out_fraction);
            return Ok(TrainData {
                synthetic: Some(s),
                pairs: None,
            });
        }
        let pairs = Pairs::open(&cfg.data)?;
        clip_embed::report_warnings(pairs.warnings());
        Ok(TrainData {
            synthetic: None,
            pairs: Some(pairs),
        })
    }

    fn source(&self) -> &dyn PairSource {
        match (&self.synthetic, &self.pairs) {
            (Some(s), _) => s,
            (None, Some(p)) => p,
            // `open` sets exactly one of the two
            (None, None) => unreachable!("training data without a source"),
        }
    }
}

/// Train as configured; see the module doc.
pub fn run(cfg: &TrainConfig, options: &RunOptions) -> Result<RunOutput, RunError> {
    cfg.validate()?;
    let out = &cfg.out_dir;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let _lock = RunLock::take(out)?;
    let mcfg = cfg.model_config()?;
    let n = mcfg.image_size();
    let data = TrainData::open(cfg, n)?;
    let source = data.source();
    let steps = match (cfg.epochs, source.len()) {
        (Some(e), Some(len)) => ((e * len as f64) / cfg.batch_size as f64).ceil().max(1.0) as usize,
        (Some(_), None) => {
            return Err(RunError::Run(
                "`epochs` needs a finite dataset; use `steps` with synthetic data".into(),
            ));
        }
        (None, _) => cfg.steps,
    };
    let eval = match (&data.synthetic, &cfg.eval_manifest, &cfg.eval_classes) {
        (_, Some(m), Some(c)) => Some(labelled_eval(
            m,
            c,
            &cfg.eval_templates,
            n,
            cfg.eval_samples,
        )?),
        (Some(s), _, _) => Some(synthetic_eval(s, n, cfg.eval_samples)),
        _ => None,
    };
    let device = clip_model::default_device().autodiff();
    let (mut clip, mut opt, mut state, changes) = start(cfg, options, &device)?;
    // leftovers of killed checkpoint writes (the lock says no other run is writing)
    let cleaned = checkpoint::clean_partial(out);
    let loop_options = LoopOptions {
        steps,
        batch_size: cfg.batch_size,
        micro_batch: if cfg.micro_batch == 0 {
            cfg.batch_size
        } else {
            cfg.micro_batch
        },
        lr: cfg.lr,
        warmup: cfg.warmup,
        seed: cfg.seed,
        crop_scale: cfg.crop_scale,
        eval_every: cfg.eval_every,
        checkpoint_every: cfg.checkpoint_every,
        checkpoint_minutes: cfg.checkpoint_minutes,
        max_bad_fraction: cfg.max_bad_fraction,
        grad_clip_norm: cfg.grad_clip_norm,
        objective: cfg.loss,
        stop_at: None,
        heavy_augmentation: false,
    };
    let bar = progress(steps, state.step, options.quiet);
    let summary = train(
        &mut clip,
        &mut opt,
        source,
        eval.as_ref(),
        &loop_options,
        out,
        &mut state,
        |l: &StepLog| {
            let zs = l
                .zero_shot_top1
                .map(|z| format!(" zero-shot {:.1}%", z * 100.0))
                .unwrap_or_default();
            bar.set_message(format!(
                "loss {:.3} lr {:.2e} scale {:.1} {:.0} samples/s{zs}",
                l.loss, l.lr, l.logit_scale, l.samples_per_s
            ));
            bar.set_position(l.step as u64);
        },
    )?;
    bar.finish_and_clear();
    let history = log::read(out).map_err(io(out))?;
    crate::plot::write(&out.join("plot.png"), &history)?;
    Ok(RunOutput {
        summary,
        clip,
        synthetic: data.synthetic,
        changes,
        cleaned,
    })
}

/// Remove the files a training run writes in `out` (checkpoint steps, `latest`, leftovers of killed
/// writes, the metrics log, the plot) and nothing else.
pub fn remove_run(out: &Path) -> Result<(), RunError> {
    for step in checkpoint::steps(out) {
        std::fs::remove_dir_all(&step).map_err(io(&step))?;
    }
    checkpoint::clean_partial(out);
    for f in ["checkpoints/latest", "metrics.jsonl", "plot.png"] {
        let p = out.join(f);
        if p.exists() {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    let _ = std::fs::remove_dir(out.join("checkpoints")); // only when empty
    Ok(())
}

/// The file that marks a folder as a `clip quickstart` run.
pub const QUICKSTART_MARKER: &str = ".clip-quickstart";

/// Whether `out` holds only what a quickstart writes (its marker, or — for runs made before the
/// marker existed — nothing but `metrics.jsonl`, `plot.png`, the lock and `checkpoints/step-*`).
fn is_quickstart_run(out: &Path) -> bool {
    if out.join(QUICKSTART_MARKER).is_file() {
        return true;
    }
    let names = |dir: &Path| -> Option<Vec<String>> {
        std::fs::read_dir(dir)
            .ok()?
            .map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    };
    let (Some(top), Some(ckpt)) = (names(out), names(&out.join("checkpoints"))) else {
        return false;
    };
    top.iter()
        .all(|n| ["metrics.jsonl", "plot.png", ".lock", "checkpoints"].contains(&n.as_str()))
        && ckpt
            .iter()
            .all(|n| n == "latest" || n.starts_with("step-") || n.starts_with(".step-"))
}

/// Make `out` ready for a quickstart: a new or empty folder is used as it is; an earlier
/// quickstart's run is replaced (only the files a quickstart writes are removed); any other
/// non-empty folder is refused before anything is touched.
pub fn clear_quickstart(out: &Path) -> Result<(), RunError> {
    let empty = std::fs::read_dir(out).map_or(true, |mut d| d.next().is_none());
    if !empty {
        if !is_quickstart_run(out) {
            return Err(RunError::Run(format!(
                "'{}' is not empty and does not hold an earlier quickstart run; choose a new or \
                 empty --out (nothing was deleted)",
                out.display()
            )));
        }
        remove_run(out)?;
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let marker = out.join(QUICKSTART_MARKER);
    std::fs::write(
        &marker,
        b"a `clip quickstart` run; quickstart replaces it\n",
    )
    .map_err(io(&marker))
}
