//! Contrastive pre-training pieces: the symmetric InfoNCE loss, AdamW with open_clip's weight-decay
//! exclusions, and the warm-up + cosine learning-rate schedule.

pub mod checkpoint;
pub mod gradcache;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use loss::clip_loss;
pub use optim::{AdamW, AdamWConfig};
pub use schedule::cosine_lr;
