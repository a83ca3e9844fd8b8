//! Supervised baselines for the robustness experiment: the same ViT image tower trained from
//! scratch with softmax cross-entropy on class labels (one style's images, random square crops as
//! in CLIP training, cosine schedule, AdamW), the kind of model whose source-vs-shift trend CLIP's
//! effective robustness is measured against (Taori et al. 2020).

use burn::optim::GradientsParams;
use burn::prelude::*;
use clip_data::rng::Rng;
use clip_data::{Preprocess, Rgb8, random_square_crop};
use clip_model::source::to_vec;
use clip_model::{Clip, ClipConfig, VisualTower};
use rayon::prelude::*;

use super::heads::{Head, Predictor, bow_loss};
use crate::optim::{AdamW, AdamWConfig};
use crate::trainer::TrainError;

/// How a classifier is trained.
#[derive(Debug, Clone, Copy)]
pub struct ClassifierOptions {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
}

/// Train a `classes`-way classifier on `images` with `labels` (each `< classes`).
pub fn train_classifier(
    config: &ClipConfig,
    images: &[Rgb8],
    labels: &[usize],
    classes: usize,
    o: ClassifierOptions,
    device: &Device,
) -> Result<Predictor, TrainError> {
    if images.is_empty() || images.len() != labels.len() || labels.iter().any(|&l| l >= classes) {
        return Err(TrainError::Unsupported(format!(
            "a classifier needs images with labels below {classes} ({} images, {} labels)",
            images.len(),
            labels.len()
        )));
    }
    let clip =
        Clip::random(config, o.seed, device).map_err(|e| TrainError::Unsupported(e.to_string()))?;
    let VisualTower::Vit(visual) = &clip.module().visual else {
        return Err(TrainError::Unsupported(
            "the classifier baseline needs a ViT image tower".into(),
        ));
    };
    device.seed(o.seed ^ 0xC1A5);
    let mut module = Predictor {
        visual: visual.clone(),
        head: Head::Bow(burn::nn::LinearConfig::new(config.embed_dim, classes).init(device)),
    };
    let mut opt = AdamW::for_module(AdamWConfig::paper(true), &module);
    let n = config.image_size();
    let pre = Preprocess::clip(n);
    let warmup = (o.steps / 10).max(1);
    let mut order = (0, epoch_order(images.len(), o.seed, 0));
    for step in 0..o.steps {
        let lr = crate::cosine_lr(o.lr, warmup, o.steps, step);
        // a seeded permutation per epoch, crops a pure function of (seed, position)
        let mut picks: Vec<(usize, u64)> = Vec::with_capacity(o.batch_size);
        for i in 0..o.batch_size {
            let g = (step * o.batch_size + i) as u64;
            let epoch = g / images.len() as u64;
            if epoch != order.0 {
                order = (epoch, epoch_order(images.len(), o.seed, epoch));
            }
            picks.push((order.1[(g % images.len() as u64) as usize], g));
        }
        let pixels: Vec<Vec<f32>> = picks
            .par_iter()
            .map(|&(i, g)| {
                let mut rng = Rng::new(o.seed ^ g.wrapping_mul(0xA24B_AED4_963E_E407));
                pre.normalize(&random_square_crop(&images[i], n, 1.1, &mut rng))
            })
            .collect();
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels.concat(), [picks.len(), 3, n, n]),
            device,
        );
        let Head::Bow(lin) = &module.head else {
            unreachable!("built with a linear head")
        };
        let z = lin.forward(module.visual.forward(x, None));
        let targets: Vec<Vec<usize>> = picks.iter().map(|&(i, _)| vec![labels[i]]).collect();
        let loss = bow_loss(z, &targets, false);
        let value = to_vec(&loss)[0];
        if !value.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                value,
                last_checkpoint: None,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &module);
        module = opt.step_module(module, lr, grads);
    }
    Ok(module)
}

/// The seeded order of `n` images in `epoch`.
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    clip_data::rng::shuffle(&mut order, &mut Rng::new(seed ^ epoch.wrapping_mul(0x9E37)));
    order
}

/// Class scores `[M, classes]` (row-major) of preprocessed `[3, n, n]` images.
pub fn classifier_scores(module: &Predictor, images: &[Vec<f32>], n: usize) -> Vec<f32> {
    // off the autodiff device: scoring records no graph
    let module = &module.valid();
    let Head::Bow(lin) = &module.head else {
        return Vec::new();
    };
    let device = module.visual.conv1.device();
    let mut out = Vec::new();
    for chunk in images.chunks(64) {
        let x = Tensor::<4>::from_data(
            TensorData::new(chunk.concat(), [chunk.len(), 3, n, n]),
            &device,
        );
        out.extend(to_vec(
            &lin.forward(module.visual.forward(x, None)).detach(),
        ));
    }
    out
}
