//! Feature files: safetensors with `features` (f32 `[n, d]`) and `labels` (i64 `[n]`), plus metadata
//! naming the model and dataset fingerprints they were computed from. A cache whose model or dataset
//! fingerprint differs from the current one is reported stale and rebuilt, never reused.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::features::Features;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read features '{path}': {msg}")]
    Read { path: String, msg: String },
    #[error("cannot write features '{path}': {msg}")]
    Write { path: String, msg: String },
}

/// What a cache was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub model: String,
    pub dataset: String,
}

/// Write atomically so a killed process never leaves a half-written cache.
pub fn write(path: &Path, f: &Features, key: &CacheKey) -> Result<(), CacheError> {
    let err = |msg: String| CacheError::Write {
        path: path.display().to_string(),
        msg,
    };
    let data: Vec<u8> = f.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let labels: Vec<u8> = f
        .labels
        .iter()
        .flat_map(|&v| (v as i64).to_le_bytes())
        .collect();
    let tensors = [
        (
            "features",
            TensorView::new(Dtype::F32, vec![f.len(), f.dim], &data)
                .map_err(|e| err(e.to_string()))?,
        ),
        (
            "labels",
            TensorView::new(Dtype::I64, vec![f.len()], &labels).map_err(|e| err(e.to_string()))?,
        ),
    ];
    let meta: HashMap<String, String> = [
        ("model".to_string(), key.model.clone()),
        ("dataset".to_string(), key.dataset.clone()),
    ]
    .into();
    let bytes = safetensors::serialize(tensors, Some(meta)).map_err(|e| err(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    clip_data::out::write_atomic(path, &bytes).map_err(|e| err(e.to_string()))
}

/// Read a feature file and the key it was written with (empty strings when absent).
pub fn read(path: &Path) -> Result<(Features, CacheKey), CacheError> {
    let err = |msg: String| CacheError::Read {
        path: path.display().to_string(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let feats = st.tensor("features").map_err(|e| err(e.to_string()))?;
    let labels = st.tensor("labels").map_err(|e| err(e.to_string()))?;
    if feats.dtype() != Dtype::F32 || feats.shape().len() != 2 {
        return Err(err("\"features\" must be float32 [n, d]".into()));
    }
    let (n, dim) = (feats.shape()[0], feats.shape()[1]);
    let labels: Vec<usize> = match labels.dtype() {
        Dtype::I64 => labels
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as usize)
            .collect(),
        Dtype::I32 => labels
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect(),
        _ => return Err(err("\"labels\" must be int64 or int32".into())),
    };
    if labels.len() != n {
        return Err(err(format!("{} labels for {n} feature rows", labels.len())));
    }
    let data = feats
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let m = meta.metadata().clone().unwrap_or_default();
    let key = CacheKey {
        model: m.get("model").cloned().unwrap_or_default(),
        dataset: m.get("dataset").cloned().unwrap_or_default(),
    };
    Ok((Features { dim, data, labels }, key))
}
