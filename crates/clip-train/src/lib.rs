//! Contrastive pre-training: the symmetric InfoNCE loss, AdamW with open_clip's weight-decay
//! exclusions, the warm-up + cosine schedule, gradient caching, the training loop, checkpoints, the
//! run configuration, and [`run`] — one call that trains as configured.

pub mod checkpoint;
pub mod config;
pub mod gradcache;
pub mod log;
pub mod loss;
pub mod objectives;
pub mod optim;
pub mod plot;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use loss::{Objective, clip_loss, sigmoid_loss};
pub use optim::{AdamW, AdamWConfig};
pub use run::{RunOptions, RunOutput, run};
pub use schedule::cosine_lr;
