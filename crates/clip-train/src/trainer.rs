//! The training loop, readable top to bottom: schedule → batch → forward/backward (gradient cached)
//! → NaN check → step → log → eval → checkpoint. Batches are a pure function of (seed, step), so a
//! run resumed from a checkpoint continues exactly as if it had never stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use clip_data::rng::Rng;
use clip_data::{Preprocess, Rgb8, random_square_crop};
use clip_model::source::to_vec;
use clip_model::{Clip, l2_normalize};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use clip_embed::zeroshot::{self, Classifier, ClassifierError};

use crate::checkpoint::{self, TrainState};
use crate::gradcache::loss_and_grads;
use crate::log::{self, StepLog};
use crate::optim::AdamW;
use crate::schedule::cosine_lr;

/// A source of (image, caption) pairs addressed by index (an infinite or finite stream).
#[allow(clippy::len_without_is_empty)] // `len` is None for endless streams
pub trait PairSource: Sync {
    /// Number of distinct pairs, if finite (indices wrap around, reshuffled each epoch).
    fn len(&self) -> Option<u64>;
    /// The pair at `index`; an error is a bad sample (skipped and counted).
    fn pair(&self, index: u64) -> Result<(Rgb8, String), String>;
    /// The pair at `index` drawn at data position `position` (a source that samples, such as
    /// [`crate::objectives::sentences::SentenceSampled`], draws from it; others ignore it).
    fn pair_at(&self, index: u64, position: u64) -> Result<(Rgb8, String), String> {
        let _ = position;
        self.pair(index)
    }
}

impl PairSource for clip_data::synth::SyntheticScenes {
    fn len(&self) -> Option<u64> {
        None
    }
    fn pair(&self, index: u64) -> Result<(Rgb8, String), String> {
        let (img, caption, _) = self.sample(clip_data::synth::Split::Train, index);
        Ok((img, caption))
    }
}

/// A labelled evaluation set for zero-shot top-1 during training.
pub struct ZeroShotSet {
    /// preprocessed images `[3, n, n]`
    pub images: Vec<Vec<f32>>,
    pub labels: Vec<usize>,
    pub class_names: Vec<String>,
    pub templates: Vec<String>,
}

/// Loop settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoopOptions {
    pub steps: usize,
    pub batch_size: usize,
    pub micro_batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub seed: u64,
    pub crop_scale: f64,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub checkpoint_minutes: f64,
    pub max_bad_fraction: f64,
    /// clip the global gradient norm to this value (off when `None`)
    #[serde(default)]
    pub grad_clip_norm: Option<f64>,
    #[serde(default)]
    pub objective: crate::loss::Objective,
    /// Stop (after that step's checkpoint) before `steps`, as if killed; the schedule still spans `steps`.
    #[serde(skip)]
    pub stop_at: Option<usize>,
    /// ConVIRT's heavier augmentation ([`clip_data::heavy_augment`]) instead of CLIP's random crop
    #[serde(default)]
    pub heavy_augmentation: bool,
}

/// Errors that stop training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "the loss became {value} at step {step}; training stopped. The last good checkpoint is {}",
        last_checkpoint.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none (no checkpoint was written yet)".into())
    )]
    NonFinite {
        /// the step whose loss was not finite, numbered as in `metrics.jsonl`
        step: usize,
        value: f32,
        last_checkpoint: Option<PathBuf>,
    },
    #[error(
        "the weights became NaN or infinite at step {step} (the loss was still finite); training stopped without writing them. The last good checkpoint is {}",
        last_checkpoint.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none (no checkpoint was written yet)".into())
    )]
    NonFiniteWeights {
        step: usize,
        last_checkpoint: Option<PathBuf>,
    },
    #[error("too many bad samples: {bad} of {seen} failed (limit {limit:.1}%); last error: {last}")]
    TooManyBad {
        bad: u64,
        seen: u64,
        limit: f64,
        last: String,
    },
    #[error("the dataset is empty")]
    Empty,
    #[error(
        "batch_size {batch} is larger than the number of usable pairs in the dataset ({usable}): a contrastive batch never holds a pair twice; use a batch size of at most {usable}"
    )]
    TooFewPairs { batch: usize, usable: usize },
    #[error(transparent)]
    Text(#[from] clip_model::text::TextInputError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error("cannot write the metrics log: {0}")]
    Log(#[from] std::io::Error),
    #[error("{0}")]
    Unsupported(String),
}

/// What a finished (or resumed-and-finished) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: usize,
    pub final_loss: f32,
    pub samples_per_s: f64,
    pub seconds: f64,
    pub bad_samples: u64,
    pub truncated_captions: u64,
    pub zero_shot_top1: Option<f64>,
    pub history: Vec<StepLog>,
}

/// Index of the `i`-th pair of `step` for a source of `len` pairs: sequential for streams, a seeded
/// permutation per epoch for finite sets.
fn pair_index(seed: u64, len: Option<u64>, global: u64) -> u64 {
    match len {
        None => global,
        Some(n) => {
            let epoch = global / n;
            let pos = global % n;
            // a bijection on 0..n: multiply by an odd constant coprime with n, add an epoch offset
            let mut a = (Rng::new(seed ^ epoch).next_u64() | 1) % n.max(1);
            while gcd(a, n) != 1 {
                a = (a + 1) % n;
            }
            (pos.wrapping_mul(a) + epoch.wrapping_mul(0x9E37)) % n
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Zero-shot top-1 of `clip` on `set` (classifier: per-class mean of normalised template embeddings).
pub fn zero_shot_top1(clip: &Clip, set: &ZeroShotSet) -> Result<f64, TrainError> {
    Ok(zero_shot_accuracy(clip, set)?.0)
}

/// Zero-shot (top-1, top-5) accuracy of `clip` on `set`, with the pipeline's classifier and scoring.
pub fn zero_shot_accuracy(clip: &Clip, set: &ZeroShotSet) -> Result<(f64, f64), TrainError> {
    zero_shot_accuracy_mapped(clip, set, &|f| f, &|f| f)
}

/// [`zero_shot_accuracy`] with the image and the text features mapped (a projection head) before
/// normalisation.
pub fn zero_shot_accuracy_mapped(
    clip: &Clip,
    set: &ZeroShotSet,
    image_map: &dyn Fn(Tensor<2>) -> Tensor<2>,
    text_map: &dyn Fn(Tensor<2>) -> Tensor<2>,
) -> Result<(f64, f64), TrainError> {
    if set.images.is_empty() {
        return Ok((0.0, 0.0));
    }
    let classifier = Classifier::build_mapped(
        clip,
        &clip_tokenizer::TextTokenizer::Clip,
        &set.class_names,
        &set.templates,
        text_map,
    )?;
    let n = clip.config.image_size();
    let mut ranks = Vec::with_capacity(set.images.len());
    for (chunk, labels) in set.images.chunks(64).zip(set.labels.chunks(64)) {
        let x = Tensor::<4>::from_data(
            TensorData::new(chunk.concat(), [chunk.len(), 3, n, n]),
            &clip.device(),
        );
        let features = to_vec(&l2_normalize(image_map(clip.encode_image(x)).detach()));
        let scores = classifier.scores(&features, chunk.len());
        ranks.extend(zeroshot::ranks(&scores, classifier.len(), labels));
    }
    Ok((zeroshot::top_k(&ranks, 1), zeroshot::top_k(&ranks, 5)))
}

/// Data position and sample counters, as a batch leaves them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub next_index: u64,
    pub seen: u64,
    pub bad: u64,
    pub last_bad: String,
}

impl Counters {
    fn of(s: &TrainState) -> Counters {
        Counters {
            next_index: s.next_index,
            seen: s.seen,
            bad: s.bad,
            last_bad: s.last_bad.clone(),
        }
    }

    fn store(self, s: &mut TrainState) {
        s.next_index = self.next_index;
        s.seen = self.seen;
        s.bad = self.bad;
        s.last_bad = self.last_bad;
    }
}

/// One batch of preprocessed pairs.
pub struct Batch {
    /// (normalised `[3, n, n]` image, caption)
    pub pairs: Vec<(Vec<f32>, String)>,
    /// the data position after it
    pub counters: Counters,
}

fn too_many_bad(c: Counters, options: &LoopOptions) -> TrainError {
    TrainError::TooManyBad {
        bad: c.bad,
        seen: c.seen,
        limit: options.max_bad_fraction * 100.0,
        last: c.last_bad,
    }
}

/// The dataset cannot fill a batch with distinct pairs: too many bad samples when nothing was
/// usable, else too few pairs for the batch size.
fn too_few(c: Counters, usable: usize, options: &LoopOptions) -> TrainError {
    if usable == 0 && c.bad > 0 {
        return too_many_bad(c, options);
    }
    TrainError::TooFewPairs {
        batch: options.batch_size,
        usable,
    }
}

/// Draw pairs from the data position in `c` until a batch is full: decoded and augmented in parallel,
/// bad samples skipped and counted (too many is an error). A pure function of (seed, position):
/// every objective trained from the same position sees the same batches.
pub fn fill(
    data: &dyn PairSource,
    options: &LoopOptions,
    n: usize,
    pre: &Preprocess,
    mut c: Counters,
) -> Result<Batch, TrainError> {
    let mut pairs: Vec<(Vec<f32>, String)> = Vec::with_capacity(options.batch_size);
    let start_seen = c.seen;
    // a pair is never twice in one batch (its positive would also be a negative): when a batch
    // spans an epoch boundary, a pair already drawn is skipped in the next epoch's order
    let mut used = std::collections::HashSet::new();
    let mut skipped = 0u64;
    let limit = data
        .len()
        .map_or(u64::MAX, |n| n + options.batch_size as u64);
    let mut exhausted = false;
    while pairs.len() < options.batch_size {
        if exhausted {
            return Err(too_few(c, pairs.len(), options));
        }
        let want = options.batch_size - pairs.len();
        let mut picks = Vec::with_capacity(want);
        while picks.len() < want && !exhausted {
            let g = c.next_index;
            let p = pair_index(options.seed, data.len(), g);
            c.next_index += 1;
            if used.insert(p) {
                picks.push((g, p));
            } else {
                skipped += 1;
                exhausted = skipped > limit;
            }
        }
        let got: Vec<Result<(Vec<f32>, String), String>> = picks
            .into_par_iter()
            .map(|(g, p)| {
                let (img, caption) = data.pair_at(p, g)?;
                if caption.trim().is_empty() {
                    return Err("empty caption".into());
                }
                let mut rng = Rng::new(options.seed ^ g.wrapping_mul(0xA24B_AED4_963E_E407));
                let crop = if options.heavy_augmentation {
                    clip_data::heavy_augment(&img, n, &mut rng)
                } else {
                    random_square_crop(&img, n, options.crop_scale, &mut rng)
                };
                Ok((pre.normalize(&crop), caption))
            })
            .collect();
        for r in got {
            c.seen += 1;
            match r {
                Ok(p) => pairs.push(p),
                Err(e) => {
                    c.bad += 1;
                    c.last_bad = e;
                }
            }
        }
        let hopeless = c.seen - start_seen > 100 * options.batch_size as u64 && pairs.is_empty();
        if (c.bad as f64 > options.max_bad_fraction * c.seen as f64 && c.seen >= 20) || hopeless {
            return Err(too_many_bad(c, options));
        }
    }
    Ok(Batch { pairs, counters: c })
}

/// Tokenise (truncating and counting over-long captions), then loss and gradients of the batch.
fn forward_backward(
    clip: &Clip,
    pairs: &[(Vec<f32>, String)],
    tok: &clip_tokenizer::Tokenizer,
    ctx: usize,
    options: &LoopOptions,
    device: &Device,
) -> Result<(f32, burn::optim::GradientsParams, u64), TrainError> {
    let n = clip.config.image_size();
    let mut truncated = 0;
    let mut rows = Vec::with_capacity(pairs.len());
    for (_, caption) in pairs {
        let (ids, cut) = tok.encode_truncated(caption, ctx);
        truncated += cut as u64;
        rows.push(ids);
    }
    let flat: Vec<f32> = pairs.iter().flat_map(|(p, _)| p.iter().copied()).collect();
    let images = Tensor::<4>::from_data(TensorData::new(flat, [pairs.len(), 3, n, n]), device);
    let (loss, mut grads) = loss_and_grads(
        clip,
        images,
        &rows,
        options.micro_batch.max(1),
        options.objective,
    )?;
    if let Some(max_norm) = options.grad_clip_norm {
        AdamW::clip_grad_norm(clip, &mut grads, max_norm);
    }
    Ok((loss, grads, truncated))
}

#[allow(clippy::too_many_arguments)]
/// Train `clip` with `opt` on `data` from `state.step` to `options.steps`, writing checkpoints and
/// the metrics log under `out`. `on_step` sees every log line (progress bars, printing).
///
/// One function on purpose (nanoGPT's `train.py` habit): schedule → batch → forward/backward →
/// NaN check → step → log → eval → checkpoint, read top to bottom.
pub fn train(
    clip: &mut Clip,
    opt: &mut AdamW,
    data: &dyn PairSource,
    eval: Option<&ZeroShotSet>,
    options: &LoopOptions,
    out: &Path,
    state: &mut TrainState,
    mut on_step: impl FnMut(&StepLog),
) -> Result<Summary, TrainError> {
    if data.len() == Some(0) {
        return Err(TrainError::Empty);
    }
    let n = clip.config.image_size();
    let ctx = clip.config.text_cfg.context_length;
    let pre = Preprocess::clip(n);
    let tok = clip_tokenizer::Tokenizer::global();
    let device = clip.device();
    let start = Instant::now();
    let mut last_save = Instant::now();
    let mut history = Vec::new();
    let mut last_loss = f32::NAN;
    let mut samples = 0usize;
    let mut pending: Option<Result<Batch, TrainError>> = None;
    let end = options
        .stop_at
        .map_or(options.steps, |s| s.min(options.steps));
    while state.step < end {
        let step = state.step;
        // schedule
        let lr = cosine_lr(options.lr, options.warmup, options.steps, step);
        // batch: decoded and augmented in parallel; bad samples are skipped and counted
        let t0 = Instant::now();
        let batch = match pending.take() {
            Some(b) => b?,
            None => fill(data, options, n, &pre, Counters::of(state))?,
        };
        batch.counters.store(state);
        // the next batch is decoded while this step runs (the same function of the data position,
        // so a resumed run sees the same batches)
        let prefetch = state.step + 1 < end;
        let pairs = batch.pairs;
        let counters = Counters::of(state);
        let (result, next) = std::thread::scope(|scope| {
            let handle =
                prefetch.then(|| scope.spawn(|| fill(data, options, n, &pre, counters.clone())));
            let result = forward_backward(clip, &pairs, tok, ctx, options, &device);
            (
                result,
                handle.map(|h| h.join().expect("batch preparation does not panic")),
            )
        });
        pending = next;
        let (loss, grads, truncated) = result?;
        state.truncated += truncated;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                value: loss,
                last_checkpoint: checkpoint::latest(out),
            });
        }
        // step
        opt.step(clip, lr, grads);
        state.step += 1;
        last_loss = loss;
        samples += pairs.len();
        let mut log = StepLog {
            step: state.step,
            loss,
            lr,
            logit_scale: clip.logit_scale(),
            samples_per_s: pairs.len() as f64 / t0.elapsed().as_secs_f64(),
            zero_shot_top1: None,
        };
        // eval
        if let Some(set) = eval
            && options.eval_every > 0
            && (state.step.is_multiple_of(options.eval_every) || state.step == options.steps)
        {
            log.zero_shot_top1 = Some(zero_shot_top1(clip, set)?);
        }
        log::append(out, &log)?;
        on_step(&log);
        history.push(log);
        // checkpoint
        let by_steps =
            options.checkpoint_every > 0 && state.step.is_multiple_of(options.checkpoint_every);
        let by_time = options.checkpoint_minutes > 0.0
            && last_save.elapsed().as_secs_f64() >= options.checkpoint_minutes * 60.0;
        if by_steps || by_time || state.step == end {
            // never write non-finite weights: the last checkpoint stays the last good one
            if !clip.is_finite() {
                return Err(TrainError::NonFiniteWeights {
                    step: state.step,
                    last_checkpoint: checkpoint::latest(out),
                });
            }
            checkpoint::save(out, clip, opt, state)?;
            last_save = Instant::now();
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Summary {
        steps: state.step,
        final_loss: last_loss,
        samples_per_s: samples as f64 / seconds.max(1e-9),
        seconds,
        bad_samples: state.bad,
        truncated_captions: state.truncated,
        zero_shot_top1: history.iter().rev().find_map(|h| h.zero_shot_top1),
        history,
    })
}
