//! DALL-E mini at emoji scale, with our own CLIP as the reranker (the study notes' walk-through of
//! DALL-E mini; Ramesh et al. 2021 rerank 512 samples with CLIP, DALL-E mini draws 16 and sorts
//! them by CLIP score):
//!
//! - [`vq`]: a VQ-VAE turns a 64×64 emoji into a grid of discrete codes (convolutional encoder,
//!   an EMA codebook with dead-code restarts, straight-through gradients, convolutional decoder);
//! - [`prior`]: a BART-style encoder–decoder transformer (bidirectional encoder over the caption's
//!   BPE tokens, causal decoder over the image codes cross-attending to it) trained with softmax
//!   cross-entropy and teacher forcing, with caption dropout for classifier-free guidance;
//! - [`sample`]: ancestral sampling with temperature, top-k and guidance (`cond_scale`), the VQ
//!   decoder, and CLIP reranking — `clip generate`;
//! - [`study`]: does reranking help, and does the generator generalise — an independent judge
//!   CLIP's top-5 hit-rate and a Fréchet distance in its feature space ([`frechet`]) against the
//!   number of samples reranked, for training and held-out concepts.
//!
//! Training runs are resumable ([`runs`]): a run folder holds its settings (a resume must match
//! them), its progress and history, and the state of its last checkpoint.

pub mod data;
pub mod frechet;
pub mod prior;
pub mod runs;
pub mod sample;
pub mod study;
pub mod vq;

pub use clip_eval::EvalError;

pub(crate) fn invalid(msg: impl Into<String>) -> EvalError {
    EvalError::Invalid(msg.into())
}
