//! ConVIRT's non-linear projection (Zhang et al. 2020), the fourth of CLIP's simplifications
//! undone (`c-tr-nonlinear-projection`): ConVIRT maps each encoder's representation `h` into the
//! shared space with `g(h) = W⁽²⁾ σ(W⁽¹⁾ h)`; CLIP keeps only a linear projection, reporting no
//! difference in training efficiency between the two. Here `W⁽¹⁾` is the CLIP's own projection
//! (`proj`, `text_projection`), followed by ReLU and a second `embed → embed` linear layer per
//! tower, trained with the rest by the same symmetric cross-entropy at CLIP's learned
//! temperature. Zero-shot runs through the head: the image features and the class prompts' text
//! features both pass `g` before normalisation ([`crate::trainer::zero_shot_accuracy_mapped`]).
//!
//! One optimiser updates the CLIP and the head together ([`Headed`]); its weight decay covers
//! the head's matrices too ([`crate::optim::AdamW::decay_matrices_of`]).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::relu;
use clip_model::source::to_vec;
use clip_model::{Clip, ClipModule, l2_normalize};

use crate::trainer::TrainError;

/// The second layer of each tower's projection, after a ReLU.
#[derive(Module, Debug)]
pub struct NonlinearHead {
    pub image: Linear,
    pub text: Linear,
}

impl NonlinearHead {
    /// `embed → embed` for both towers, drawn from burn's generator (seeded by the caller).
    pub fn new(embed: usize, device: &Device) -> NonlinearHead {
        NonlinearHead {
            image: LinearConfig::new(embed, embed).init(device),
            text: LinearConfig::new(embed, embed).init(device),
        }
    }

    /// `g` on image features `[B, E]` (unnormalised, after the CLIP's projection).
    pub fn image(&self, f: Tensor<2>) -> Tensor<2> {
        self.image.forward(relu(f))
    }

    /// `g` on text features `[B, E]`.
    pub fn text(&self, f: Tensor<2>) -> Tensor<2> {
        self.text.forward(relu(f))
    }
}

/// The CLIP's parameters and the head's, as one module: what the optimiser steps and the run
/// state saves.
#[derive(Module, Debug)]
pub struct Headed {
    pub clip: ClipModule,
    pub head: NonlinearHead,
}

impl Headed {
    /// A CLIP's parameters and a head's (shared handles, not copies).
    pub fn of(clip: &Clip, head: &NonlinearHead) -> Headed {
        Headed {
            clip: clip.module().clone(),
            head: head.clone(),
        }
    }
}

/// The contrastive loss of one batch through the head, and the gradients of the CLIP's and the
/// head's parameters.
pub fn loss_and_grads(
    clip: &Clip,
    head: &NonlinearHead,
    images: Tensor<4>,
    rows: &[Vec<u32>],
) -> Result<(f32, GradientsParams), TrainError> {
    let fi = head.image(clip.encode_image(images));
    let ft = head.text(clip.encode_text(rows)?);
    let loss = crate::loss::clip_loss(
        l2_normalize(fi),
        l2_normalize(ft),
        clip.module().logit_scale.val().exp(),
    );
    let value = to_vec(&loss)[0];
    let both = Headed::of(clip, head);
    Ok((value, GradientsParams::from_grads(loss.backward(), &both)))
}
