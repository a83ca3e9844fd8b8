//! Large contrastive batches on small memory by gradient caching (Gao et al. 2021): the loss needs
//! every negative of the whole batch, so plain gradient accumulation would change it. Instead:
//! 1. embed all micro-batches without keeping their graphs;
//! 2. compute the full-batch loss on those embeddings and its gradient w.r.t. each embedding (and
//!    the logit scale);
//! 3. re-run each micro-batch with its graph and back-propagate its cached embedding gradients.
//!
//! The parameter gradients equal those of one pass over the whole batch.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use clip_model::text::TextInputError;
use clip_model::{Clip, ClipModule, l2_normalize};

use crate::loss::Objective;

/// Normalised image and text embeddings of one micro-batch.
fn embed(
    clip: &Clip,
    images: Tensor<4>,
    texts: &[Vec<u32>],
) -> Result<(Tensor<2>, Tensor<2>), TextInputError> {
    Ok((
        l2_normalize(clip.encode_image(images)),
        l2_normalize(clip.encode_text(texts)?),
    ))
}

/// Loss and parameter gradients of one contrastive batch under `objective`, computed `micro`
/// pairs at a time (`micro >= n` runs the whole batch at once).
pub fn loss_and_grads(
    clip: &Clip,
    images: Tensor<4>,
    texts: &[Vec<u32>],
    micro: usize,
    objective: Objective,
) -> Result<(f32, GradientsParams), TextInputError> {
    let loss_of = |fi: Tensor<2>, ft: Tensor<2>| {
        objective.loss(
            fi,
            ft,
            clip.module().logit_scale.val().exp(),
            clip.module().logit_bias.as_ref().map(|b| b.val()),
        )
    };
    let n = texts.len();
    let micro = micro.clamp(1, n.max(1));
    if micro >= n {
        let (fi, ft) = embed(clip, images, texts)?;
        let loss = loss_of(fi, ft);
        let value = clip_model::source::to_vec(&loss)[0];
        return Ok((
            value,
            GradientsParams::from_grads(loss.backward(), clip.module()),
        ));
    }
    let ranges: Vec<(usize, usize)> = (0..n)
        .step_by(micro)
        .map(|s| (s, micro.min(n - s)))
        .collect();
    // 1. embeddings without graphs
    let mut img = Vec::with_capacity(ranges.len());
    let mut txt = Vec::with_capacity(ranges.len());
    for &(s, len) in &ranges {
        let (fi, ft) = embed(clip, images.clone().narrow(0, s, len), &texts[s..s + len])?;
        img.push(fi.detach());
        txt.push(ft.detach());
    }
    // 2. full-batch loss and its gradient w.r.t. the embeddings
    let all_img = Tensor::cat(img, 0).require_grad();
    let all_txt = Tensor::cat(txt, 0).require_grad();
    let loss = loss_of(all_img.clone(), all_txt.clone());
    let value = clip_model::source::to_vec(&loss)[0];
    let grads = loss.backward();
    let d_img = all_img.grad(&grads).expect("embedding gradient");
    let d_txt = all_txt.grad(&grads).expect("embedding gradient");
    let mut acc = GradientsAccumulator::<ClipModule>::new();
    acc.accumulate(
        clip.module(),
        GradientsParams::from_grads(grads, clip.module()),
    ); // logit scale (and bias)
    // 3. each micro-batch again, with its graph, driven by its cached embedding gradients
    let device = clip.device();
    for &(s, len) in &ranges {
        let (fi, ft) = embed(clip, images.clone().narrow(0, s, len), &texts[s..s + len])?;
        let gi = Tensor::<2>::from_data(d_img.clone().narrow(0, s, len).into_data(), &device);
        let gt = Tensor::<2>::from_data(d_txt.clone().narrow(0, s, len).into_data(), &device);
        let surrogate = (fi * gi).sum() + (ft * gt).sum();
        acc.accumulate(
            clip.module(),
            GradientsParams::from_grads(surrogate.backward(), clip.module()),
        );
    }
    Ok((value, acc.grads()))
}
