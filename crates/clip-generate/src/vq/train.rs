//! Training a VQ-VAE (resumable, [`crate::runs`]) and its report: reconstruction PSNR on the
//! training concepts, the held-out concepts and each style it did not train on, and code usage.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use clip_data::rng::Rng;
use clip_model::source::to_vec;
use serde::{Deserialize, Serialize};

use super::{
    Codebook, DEAD_BELOW, DECAY, VqDims, VqNets, VqVae, from_rows, perplexity, straight_through,
    to_rows,
};
use crate::data;
use crate::runs::{Logged, Run};
use crate::{EvalError, invalid};
use clip_train::objectives::state;
use clip_train::{AdamW, AdamWConfig};

pub const VQ_KIND: &str = "vq-vae";

/// What changes a VQ-VAE run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqSettings {
    pub dims: VqDims,
    pub styles: Vec<String>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub beta: f64,
    pub seed: u64,
    /// the import's training rows (count) the run was started on
    pub images: usize,
}

/// A VQ-VAE training request.
#[derive(Debug, Clone)]
pub struct VqOptions {
    pub emoji: PathBuf,
    pub out: PathBuf,
    pub dims: VqDims,
    /// the styles it trains on (every style of the import when empty)
    pub styles: Vec<String>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub beta: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    /// stop (resumably) after this step
    pub stop_at: Option<usize>,
}

pub(crate) fn adam() -> AdamWConfig {
    AdamWConfig {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

/// The report of a finished VQ-VAE.
#[derive(Debug, Clone, Serialize)]
pub struct VqReport {
    pub dims: VqDims,
    pub steps: usize,
    pub train_seconds: f64,
    /// mean PSNR (dB) of reconstructions: (set, images, psnr)
    pub psnr: Vec<(String, usize, f64)>,
    /// perplexity of the codes used on the training images, and entries never used there
    pub perplexity: f64,
    pub dead_codes: usize,
    pub machine: String,
}

/// Train (or resume) a VQ-VAE on the training concepts of `o.styles`, then report
/// reconstruction PSNR on training concepts, held-out concepts and any style it did not train on.
/// `None` when it stopped at `o.stop_at` before the last step (run it again to continue).
pub fn train(o: &VqOptions, say: &mut dyn FnMut(String)) -> Result<Option<VqReport>, EvalError> {
    o.dims.validate()?;
    if o.steps == 0
        || o.batch_size == 0
        || o.lr.is_nan()
        || o.lr <= 0.0
        || o.beta.is_nan()
        || o.beta < 0.0
    {
        return Err(invalid(
            "steps, batch size and learning rate must be above 0, β at least 0",
        ));
    }
    let import = clip_inside::emoji::Import::read(&o.emoji)?;
    let styles = data::pick_styles(&import, &o.styles)?;
    let items = data::training_items(&o.emoji, &styles)?;
    let settings = VqSettings {
        dims: o.dims,
        styles: styles.clone(),
        steps: o.steps,
        batch_size: o.batch_size,
        lr: o.lr,
        beta: o.beta,
        seed: o.seed,
        images: items.len(),
    };
    let mut run = Run::open(&o.out, VQ_KIND, &settings)?;
    let s = o.dims.image;
    say(format!(
        "loading {} training images of {}",
        items.len(),
        styles.join(", ")
    ));
    let images = data::load_images(
        &items.iter().map(|i| i.image.as_path()).collect::<Vec<_>>(),
        s,
    )?;
    let device = clip_model::default_device().autodiff();
    device.seed(o.seed);
    let mut nets = VqNets::new(&o.dims, &device);
    let mut opt = AdamW::for_module(adam(), &nets);
    let mut codebook = None;
    if run.progress.step > 0 {
        let step = run.progress.step;
        nets = state::load(&Run::file(&o.out, "state", step), nets, &mut opt).map_err(invalid)?;
        codebook = Some(Codebook::load(
            &Run::file(&o.out, "codebook", step),
            o.dims.codes,
            o.dims.code_dim,
        )?);
        say(format!("resuming at step {step}"));
    }
    let stop = o.stop_at.unwrap_or(o.steps).min(o.steps);
    let (b, d, g) = (o.batch_size, o.dims.code_dim, o.dims.grid());
    let warmup = (o.steps / 20).max(1);
    let mut window = (0.0f64, 0.0f64, vec![0u64; o.dims.codes], 0usize, 0usize);
    while run.progress.step < stop {
        let t0 = Instant::now();
        let step = run.progress.step;
        let picks: Vec<&clip_data::resize::Rgb8> = epoch_picks(images.len(), b, step, o.seed)
            .into_iter()
            .map(|i| &images[i])
            .collect();
        let x = Tensor::<4>::from_data(
            TensorData::new(data::to_unit(&picks), [b, 3, s, s]),
            &device,
        );
        let z = nets.encode(x.clone());
        let rows = to_rows(&z.clone().detach());
        let book = codebook.get_or_insert_with(|| {
            Codebook::from_vectors(o.dims.codes, d, &rows, &mut step_rng(o.seed, 0))
        });
        let codes = book.nearest(&rows);
        let zq = from_rows(book.lookup(&codes), b, d, g, &device);
        let commit = (z.clone() - zq.clone()).powf_scalar(2.0).mean();
        let xr = nets.decode(straight_through(z, zq));
        let mse = (xr - x).powf_scalar(2.0).mean();
        let loss = mse.clone() + commit.mul_scalar(o.beta);
        let (loss_v, mse_v) = (to_vec(&loss)[0], to_vec(&mse)[0]);
        if !loss_v.is_finite() {
            return Err(invalid(format!(
                "the VQ-VAE loss became {loss_v} at step {}; the last checkpoint in '{}' is intact",
                step + 1,
                o.out.display()
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &nets);
        let lr = clip_train::cosine_lr(o.lr, warmup, o.steps, step);
        nets = opt.step_module(nets, lr, grads);
        book.ema_update(&rows, &codes, DECAY);
        // a pure function of (seed, step): a resumed run restarts the same entries
        let restarted = book.restart_dead(&rows, DEAD_BELOW, &mut step_rng(o.seed, step + 1));
        run.progress.step += 1;
        run.progress.train_seconds += t0.elapsed().as_secs_f64();
        window.0 += loss_v as f64;
        window.1 += mse_v as f64;
        for &c in &codes {
            window.2[c as usize] += 1;
        }
        window.3 += restarted;
        window.4 += 1;
        let done = run.progress.step;
        if done % 25 == 0 || done == stop {
            let n = window.4 as f64;
            let mut values = std::collections::BTreeMap::new();
            values.insert("loss".to_string(), window.0 / n);
            values.insert("mse".to_string(), window.1 / n);
            values.insert("perplexity".to_string(), perplexity(&window.2));
            values.insert("restarts".to_string(), window.3 as f64);
            say(format!(
                "step {done}/{}: loss {:.4}, mse {:.4}, code perplexity {:.0}, {} restarts ({:.2} s/step)",
                o.steps,
                window.0 / n,
                window.1 / n,
                perplexity(&window.2),
                window.3,
                run.progress.train_seconds / done as f64
            ));
            run.progress.history.push(Logged::new(done, values));
            window = (0.0, 0.0, vec![0u64; o.dims.codes], 0, 0);
        }
        if done % o.checkpoint_every.max(1) == 0 || done == stop {
            let book = codebook.as_ref().expect("set on the first step");
            run.commit(|dir, step| {
                book.save(&Run::file(dir, "codebook", step))?;
                state::save(&Run::file(dir, "state", step), &nets, &opt).map_err(invalid)
            })?;
            run.plot(&[("loss", "VQ-VAE loss"), ("perplexity", "code perplexity")])?;
        }
    }
    if run.progress.step < o.steps {
        return Ok(None);
    }
    let vq = VqVae::load(&o.out, &clip_model::default_device())?;
    report(&vq, &import, &styles, &images, &run, say).map(Some)
}

/// PSNR per set, code usage, a grid of originals over reconstructions; `report.json`.
fn report(
    vq: &VqVae,
    import: &clip_inside::emoji::Import,
    styles: &[String],
    train_images: &[clip_data::resize::Rgb8],
    run: &Run,
    say: &mut dyn FnMut(String),
) -> Result<VqReport, EvalError> {
    let s = vq.dims.image;
    let refs: Vec<&clip_data::resize::Rgb8> = train_images.iter().collect();
    let codes = vq.encode(&data::to_unit(&refs), refs.len());
    let mut counts = vec![0u64; vq.dims.codes];
    for &c in &codes {
        counts[c as usize] += 1;
    }
    let mut psnr = Vec::new();
    let mut sets: Vec<(String, Vec<&clip_inside::emoji::Row>)> = vec![
        (
            "training concepts, trained styles".into(),
            import
                .rows
                .iter()
                .filter(|r| r.trained && styles.contains(&r.style))
                .collect(),
        ),
        (
            "held-out concepts, trained styles".into(),
            import
                .rows
                .iter()
                .filter(|r| !r.trained && styles.contains(&r.style))
                .collect(),
        ),
    ];
    for st in import.styles.iter().filter(|st| !styles.contains(st)) {
        sets.push((
            format!("unseen style {st}"),
            import.rows.iter().filter(|r| &r.style == st).collect(),
        ));
    }
    let mut tiles = Vec::new();
    for (name, rows) in sets {
        if rows.is_empty() {
            continue;
        }
        let paths: Vec<&Path> = rows.iter().map(|r| r.image.as_path()).collect();
        let imgs = data::load_images(&paths, s)?;
        let recon = vq.reconstruct(&imgs.iter().collect::<Vec<_>>());
        let mean = imgs
            .iter()
            .zip(&recon)
            .map(|(a, b)| data::psnr(a, b).min(99.0))
            .sum::<f64>()
            / imgs.len() as f64;
        say(format!(
            "PSNR on {name}: {mean:.2} dB ({} images)",
            imgs.len()
        ));
        for (a, r) in imgs.iter().zip(&recon).take(8) {
            tiles.push(clip_inside::grid::Tile {
                image: a.clone(),
                frame: clip_inside::grid::PLAIN,
            });
            tiles.push(clip_inside::grid::Tile {
                image: r.clone(),
                frame: clip_inside::grid::RIGHT,
            });
        }
        psnr.push((name, imgs.len(), mean));
    }
    clip_inside::grid::save(&tiles, 8, s, &run.dir.join("reconstructions.png"))?;
    let rep = VqReport {
        dims: vq.dims,
        steps: run.progress.step,
        train_seconds: run.progress.train_seconds,
        psnr,
        perplexity: perplexity(&counts),
        dead_codes: counts.iter().filter(|&&c| c == 0).count(),
        machine: clip_eval::repro::fig2::machine(),
    };
    say(format!(
        "codes on the training images: perplexity {:.0} of {}, {} never used",
        rep.perplexity, vq.dims.codes, rep.dead_codes
    ));
    crate::runs::write_json(&run.dir.join("report.json"), &rep)?;
    Ok(rep)
}

fn step_rng(seed: u64, step: usize) -> Rng {
    Rng::new(seed ^ 0x5EED_0F0C ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The images of `step`'s batch: a seeded permutation per epoch.
pub(crate) fn epoch_picks(n: usize, batch: usize, step: usize, seed: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    for i in 0..batch {
        let g = (step * batch + i) as u64;
        let epoch = g / n as u64;
        if cached.as_ref().is_none_or(|c| c.0 != epoch) {
            let mut order: Vec<usize> = (0..n).collect();
            clip_data::rng::shuffle(
                &mut order,
                &mut Rng::new(seed ^ epoch.wrapping_mul(0x9E37_79B9)),
            );
            cached = Some((epoch, order));
        }
        out.push(cached.as_ref().expect("just set").1[(g % n as u64) as usize]);
    }
    out
}
