//! The embedding pipeline shared by every command that runs a CLIP model on data: model loading
//! ([`models`]), batched and parallel image/text embedding with progress and a feature cache
//! ([`pipeline`], [`cache`]), zero-shot classifiers built and scored in one place ([`zeroshot`],
//! [`templates`]), and the matrix products the scoring uses ([`linalg`]).

pub mod cache;
pub mod check;
pub mod features;
pub use clip_model::linalg;
pub mod models;
pub mod output;
pub mod pipeline;
pub mod templates;
pub mod zeroshot;

pub use features::Features;
pub use pipeline::{EmbedError, Embedder, progress, report_warnings};
pub use zeroshot::Classifier;
