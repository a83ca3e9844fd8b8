//! The paper's evaluation protocols: zero-shot with prompt ensembling, L-BFGS linear probes with the
//! paper's C search, few-shot probes, retrieval recall, effective robustness, data-overlap analysis,
//! and `repro` — the experiments that reproduce the shape of the paper's findings. Each protocol is
//! a library function returning typed results; the math (probes, metrics, nearest neighbours) is
//! model-free and tested against scikit-learn and CLIP_benchmark directly, and features come from
//! the embedding pipeline ([`clip_embed`]).

pub mod error;
pub mod fewshot;
pub mod logreg;
pub mod metrics;
pub mod overlap;
pub mod probe;
pub mod repro;
pub mod retrieval;
pub mod robustness;
pub mod zeroshot;

pub use clip_data::dataset::{DataError, EvalSet, ImageRef};
pub use error::EvalError;
pub use logreg::{FitOptions, LogReg, fit};
pub use probe::{Features, Probe, ProbeError, Probing, fit_probe};
