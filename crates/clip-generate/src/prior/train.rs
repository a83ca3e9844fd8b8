//! Training the caption → codes model (resumable, [`crate::runs`]) on the codes of an emoji
//! import's training images, with the template-caption loss of training images and of held-out
//! concepts at every checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use clip_data::rng::Rng;
use clip_model::source::to_vec;

use super::{PRIOR_KIND, Prior, PriorDims, PriorSettings, TEMPLATE, TextVocab, adam};
use crate::data;
use crate::runs::{Logged, Run};
use crate::vq::{VqVae, epoch_picks};
use crate::{EvalError, invalid};
use clip_train::AdamW;
use clip_train::objectives::state;

/// A generator training request.
#[derive(Debug, Clone)]
pub struct PriorOptions {
    pub emoji: PathBuf,
    pub vqvae: PathBuf,
    pub out: PathBuf,
    pub dims: PriorDims,
    pub styles: Vec<String>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub caption_dropout: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub stop_at: Option<usize>,
}

/// Codes of `paths`' images under `vq`.
fn encode_paths(vq: &VqVae, paths: &[&Path]) -> Result<Vec<Vec<u32>>, EvalError> {
    let s = vq.dims.image;
    let images = data::load_images(paths, s)?;
    let flat = vq.encode(
        &data::to_unit(&images.iter().collect::<Vec<_>>()),
        images.len(),
    );
    Ok(flat.chunks(vq.dims.tokens()).map(<[u32]>::to_vec).collect())
}

/// Train (or resume) the caption → codes model on the codes of the import's training images;
/// `false` when it stopped at `o.stop_at` before the last step (run it again to continue).
pub fn train(o: &PriorOptions, say: &mut dyn FnMut(String)) -> Result<bool, EvalError> {
    if o.steps == 0
        || o.batch_size == 0
        || o.lr.is_nan()
        || o.lr <= 0.0
        || !(0.0..1.0).contains(&o.caption_dropout)
    {
        return Err(invalid(
            "steps, batch size and learning rate must be above 0, caption dropout in [0, 1)",
        ));
    }
    if o.dims.width == 0
        || o.dims.heads == 0
        || !o.dims.width.is_multiple_of(o.dims.heads)
        || o.dims.context < 2
    {
        return Err(invalid(format!(
            "the width must be a positive multiple of the heads and the context at least 2 (asked: {:?})",
            o.dims
        )));
    }
    let plain = clip_model::default_device();
    let vq = VqVae::load(&o.vqvae, &plain)?;
    if vq.step < vq.steps {
        return Err(invalid(format!(
            "the VQ-VAE in '{}' stopped at step {} of {}; finish it first (run its train-vqvae command again)",
            o.vqvae.display(),
            vq.step,
            vq.steps
        )));
    }
    let vq_path = std::fs::canonicalize(&o.vqvae).unwrap_or_else(|_| o.vqvae.clone());
    let import = clip_inside::emoji::Import::read(&o.emoji)?;
    let styles = data::pick_styles(&import, &o.styles)?;
    let items = data::training_items(&o.emoji, &styles)?;
    let vocab = TextVocab::build(
        items
            .iter()
            .flat_map(|i| i.captions.iter().map(String::as_str)),
    );
    let settings = PriorSettings {
        dims: o.dims,
        vqvae: vq_path,
        codes: vq.dims.codes,
        tokens: vq.dims.tokens(),
        vq_fingerprint: Some(vq.fingerprint()),
        styles: styles.clone(),
        steps: o.steps,
        batch_size: o.batch_size,
        lr: o.lr,
        caption_dropout: o.caption_dropout,
        seed: o.seed,
        images: items.len(),
        vocab: vocab.clone(),
    };
    let mut run = Run::open(&o.out, PRIOR_KIND, &settings)?;
    say(format!(
        "encoding {} training images with the VQ-VAE",
        items.len()
    ));
    let codes = encode_paths(
        &vq,
        &items.iter().map(|i| i.image.as_path()).collect::<Vec<_>>(),
    )?;
    // validation: the template caption of training images and of held-out concepts' images
    let mut rng = Rng::new(o.seed ^ 0x7A11);
    let mut val_train: Vec<usize> = (0..items.len()).collect();
    clip_data::rng::shuffle(&mut val_train, &mut rng);
    val_train.truncate(256);
    let val_train_caps: Vec<String> = val_train
        .iter()
        .map(|&i| TEMPLATE.replace("{}", &items[i].concept))
        .collect();
    let val_train_codes: Vec<Vec<u32>> = val_train.iter().map(|&i| codes[i].clone()).collect();
    let held: Vec<&clip_inside::emoji::Row> = import
        .rows
        .iter()
        .filter(|r| !r.trained && styles.contains(&r.style))
        .take(512)
        .collect();
    let held_caps: Vec<String> = held
        .iter()
        .map(|r| TEMPLATE.replace("{}", &r.concept))
        .collect();
    let held_codes = encode_paths(
        &vq,
        &held.iter().map(|r| r.image.as_path()).collect::<Vec<_>>(),
    )?;
    let ctx = o.dims.context;
    let cut = items
        .iter()
        .flat_map(|i| &i.captions)
        .filter(|c| vocab.encode(c, ctx, false).is_err())
        .count();
    if cut > 0 {
        say(format!(
            "{cut} training captions are longer than {ctx} tokens and are cut"
        ));
    }
    let device = plain.autodiff();
    device.seed(o.seed);
    let mut prior = Prior::new(
        &o.dims,
        vocab.len(),
        vq.dims.tokens(),
        vq.dims.codes,
        &device,
    );
    let mut opt = AdamW::for_module(adam(), &prior);
    if run.progress.step > 0 {
        prior = state::load(
            &Run::file(&o.out, "state", run.progress.step),
            prior,
            &mut opt,
        )
        .map_err(invalid)?;
        say(format!("resuming at step {}", run.progress.step));
    }
    let stop = o.stop_at.unwrap_or(o.steps).min(o.steps);
    let warmup = (o.steps / 20).max(1);
    let (mut sum, mut count) = (0.0f64, 0usize);
    while run.progress.step < stop {
        let t0 = Instant::now();
        let step = run.progress.step;
        let picks = epoch_picks(items.len(), o.batch_size, step, o.seed);
        let caps: Vec<Vec<usize>> = picks
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                // a pure function of (seed, position in the stream): resumes draw the same
                let mut r = Rng::new(
                    o.seed ^ ((step * o.batch_size + j) as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
                );
                let text = if r.unit() < o.caption_dropout {
                    ""
                } else {
                    items[i].captions[r.below(items[i].captions.len())].as_str()
                };
                vocab.encode(text, ctx, true)
            })
            .collect::<Result<_, _>>()?;
        let batch_codes: Vec<&[u32]> = picks.iter().map(|&i| codes[i].as_slice()).collect();
        let loss = prior.loss(&caps, &batch_codes);
        let v = to_vec(&loss)[0];
        if !v.is_finite() {
            return Err(invalid(format!(
                "the generator's loss became {v} at step {}; the last checkpoint in '{}' is intact",
                step + 1,
                o.out.display()
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &prior);
        let lr = clip_train::cosine_lr(o.lr, warmup, o.steps, step);
        prior = opt.step_module(prior, lr, grads);
        run.progress.step += 1;
        run.progress.train_seconds += t0.elapsed().as_secs_f64();
        sum += v as f64;
        count += 1;
        let done = run.progress.step;
        let checkpoint = done % o.checkpoint_every.max(1) == 0 || done == stop;
        if done % 25 == 0 || checkpoint {
            let mut values = BTreeMap::new();
            values.insert("loss".to_string(), sum / count as f64);
            let mut line = format!(
                "step {done}/{}: loss {:.3} nats/code ({:.2} s/step)",
                o.steps,
                sum / count as f64,
                run.progress.train_seconds / done as f64
            );
            if checkpoint {
                let eval = prior.valid();
                let a = validation_loss(&eval, &vocab, ctx, &val_train_caps, &val_train_codes)?;
                let b = validation_loss(&eval, &vocab, ctx, &held_caps, &held_codes)?;
                values.insert("val_train".to_string(), a);
                values.insert("val_heldout".to_string(), b);
                line += &format!(
                    "; template-caption loss {a:.3} on training images, {b:.3} on held-out concepts"
                );
            }
            say(line);
            run.progress.history.push(Logged::new(done, values));
            (sum, count) = (0.0, 0);
        }
        if checkpoint {
            run.commit(|dir, step| {
                state::save(&Run::file(dir, "state", step), &prior, &opt).map_err(invalid)
            })?;
            run.plot(&[
                ("loss", "training loss (nats per code)"),
                ("val_heldout", "held-out concepts' loss"),
            ])?;
        }
    }
    Ok(run.progress.step >= o.steps)
}

/// Mean loss of `codes` given `captions` (no gradient).
pub fn validation_loss(
    prior: &Prior,
    vocab: &TextVocab,
    ctx: usize,
    captions: &[String],
    codes: &[Vec<u32>],
) -> Result<f64, EvalError> {
    if captions.is_empty() {
        return Ok(f64::NAN);
    }
    let mut total = 0.0;
    for (cs, ks) in captions.chunks(64).zip(codes.chunks(64)) {
        let ids: Vec<Vec<usize>> = cs
            .iter()
            .map(|c| vocab.encode(c, ctx, true))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&[u32]> = ks.iter().map(Vec::as_slice).collect();
        total += to_vec(&prior.loss(&ids, &refs))[0] as f64 * cs.len() as f64;
    }
    Ok(total / captions.len() as f64)
}
