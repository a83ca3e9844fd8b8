//! Image↔text retrieval recall@K with several captions per image (CLIP_benchmark's protocol).

use clip_data::dataset::EvalSet;
use clip_embed::Embedder;
use serde::Serialize;

use crate::error::EvalError;
use crate::metrics::{self, RetrievalRecall};

/// Recall of one retrieval set.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub data: String,
    pub images: usize,
    pub captions: usize,
    pub recall: Vec<RetrievalRecall>,
    pub model: String,
}

/// Embed the images and every caption of `set` and measure recall at each of `ks`.
pub fn evaluate(emb: &Embedder, set: &EvalSet, ks: &[usize]) -> Result<Report, EvalError> {
    let img = emb.features(set)?;
    let texts: Vec<String> = set.captions.iter().flatten().cloned().collect();
    let text_image: Vec<usize> = set
        .captions
        .iter()
        .enumerate()
        .flat_map(|(i, c)| std::iter::repeat_n(i, c.len()))
        .collect();
    let txt = emb.embed_texts(&texts, true, false)?;
    let scores =
        clip_embed::linalg::scores(&txt, texts.len(), img.dim, &img.data, &vec![0.0; set.len()]);
    Ok(Report {
        data: set.name.clone(),
        images: set.len(),
        captions: texts.len(),
        recall: metrics::retrieval_recall(&scores, set.len(), &text_image, ks),
        model: emb.fingerprint.clone(),
    })
}
