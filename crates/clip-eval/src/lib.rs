//! The paper's evaluation protocols on embeddings: datasets for evaluation, L-BFGS linear probes with
//! the paper's C search, few-shot sampling, classification and retrieval metrics, effective
//! robustness and data-overlap analysis. Model-free: features come from `clip-model` (see the `clip
//! eval` commands), so everything here is testable against scikit-learn and CLIP_benchmark directly.

pub mod cache;
pub mod data;
pub mod logreg;
pub mod metrics;
pub mod overlap;
pub mod probe;

pub use data::{DataError, EvalSet, ImageRef};
pub use logreg::{FitOptions, LogReg, fit};
pub use probe::{Features, Probe, ProbeError, fit_probe};
