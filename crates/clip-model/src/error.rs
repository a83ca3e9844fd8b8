//! Errors from loading and saving checkpoints.

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("missing tensor '{key}' in {file}")]
    Missing { key: String, file: String },
    #[error("tensor '{key}' in {file} has shape {found:?}, expected {expected:?}")]
    Shape {
        key: String,
        file: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("unexpected tensors in {file} (is it a checkpoint of another model?): {keys}")]
    Unexpected { file: String, keys: String },
    #[error(
        "{file}: the pickle refers to '{global}', which is not a tensor or container type; refusing to load it (pickled code is never run)"
    )]
    UnsafeGlobal { file: String, global: String },
    #[error("{file}: {msg}")]
    Format { file: String, msg: String },
    #[error("{file}: cannot tell the model's architecture: {msg}")]
    Architecture { file: String, msg: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error(
        "tensor '{key}' in {file} holds {count} non-finite values (NaN or infinity); the checkpoint is damaged or was saved after training diverged"
    )]
    NonFinite {
        key: String,
        file: String,
        count: usize,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A request the loaded model cannot serve (e.g. reduced precision off the CPU).
    #[error("{0}")]
    Unsupported(String),
}

impl LoadError {
    pub fn format(file: &str, msg: impl Into<String>) -> LoadError {
        LoadError::Format {
            file: file.to_owned(),
            msg: msg.into(),
        }
    }
}
