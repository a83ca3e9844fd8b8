//! Embedding files: `.npy` (float32 `[N, D]`), `.safetensors` (key `embeddings`) or `.jsonl`
//! (`{"input": …, "embedding": […]}` per row), chosen by the extension and written atomically.

use std::path::Path;

use clip_data::out::{self, OutError};
use clip_model::source::RawTensor;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Out(#[from] OutError),
    #[error(transparent)]
    Write(#[from] clip_model::LoadError),
}

/// Write `[inputs.len(), dim]` embeddings in the format the extension of `path` names.
pub fn write_embeddings(
    path: &Path,
    inputs: &[String],
    dim: usize,
    data: &[f32],
) -> Result<(), OutputError> {
    out::check_extension(path, &["npy", "safetensors", "jsonl"])?;
    let n = inputs.len();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npy") => out::write_npy(path, &[n, dim], data)?,
        Some("safetensors") => {
            let t = RawTensor::new(vec![n, dim], data.to_vec());
            clip_model::weights::write_safetensors(path, &[("embeddings".to_owned(), t)])?;
        }
        _ => {
            let mut text = String::new();
            for (input, row) in inputs.iter().zip(data.chunks(dim.max(1))) {
                let line = serde_json::json!({ "input": input, "embedding": row });
                text.push_str(&line.to_string());
                text.push('\n');
            }
            out::write_file(path, text.as_bytes())?;
        }
    }
    Ok(())
}
