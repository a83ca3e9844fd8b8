//! `clip rerank`: candidate images ordered by their CLIP score for one caption — the cosine and
//! `softmax(100 · cos)` over the candidates, as clip-as-service's `/rank` reports them (DALL-E
//! and DALL-E mini pick their best samples this way).

use std::path::PathBuf;

use clip_embed::Embedder;
use rayon::prelude::*;

/// One ranked candidate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ranked {
    /// position in the input list
    pub index: usize,
    pub path: String,
    pub cosine: f32,
    /// softmax over the candidates of 100 · cosine
    pub probability: f32,
}

/// A candidate that could not be scored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unranked {
    pub index: usize,
    pub path: String,
    pub error: String,
}

/// The candidates best first, and those that could not be read (each input is in exactly one of
/// the two lists). The softmax runs over the candidates that were read.
pub fn rerank(
    emb: &Embedder,
    caption: &str,
    images: &[PathBuf],
) -> Result<(Vec<Ranked>, Vec<Unranked>), clip_embed::EmbedError> {
    let t = emb.embed_texts(&[caption.to_owned()], false, false)?;
    let prepared: Vec<Result<Vec<f32>, String>> = images
        .par_iter()
        .map(|p| emb.preprocess.load(p).map_err(|e| e.to_string()))
        .collect();
    let mut failed = Vec::new();
    let mut ok = Vec::new();
    let mut pixels = Vec::new();
    for (i, p) in prepared.into_iter().enumerate() {
        match p {
            Ok(px) => {
                ok.push(i);
                pixels.push(px);
            }
            Err(error) => failed.push(Unranked {
                index: i,
                path: images[i].display().to_string(),
                error,
            }),
        }
    }
    let mut vectors = Vec::with_capacity(ok.len() * emb.dim());
    for chunk in pixels.chunks(emb.batch) {
        vectors.extend(emb.encode_pixels(chunk.concat(), chunk.len(), false));
    }
    let ranked = rank(&t, &vectors, emb.dim())
        .into_iter()
        .map(|(j, cosine, probability)| Ranked {
            index: ok[j],
            path: images[ok[j]].display().to_string(),
            cosine,
            probability,
        })
        .collect();
    Ok((ranked, failed))
}

/// `(row, cosine, softmax(100·cos))` of each row of `vectors` (`[n, d]`, unit) against the unit
/// `query`, best first (ties by row).
pub fn rank(query: &[f32], vectors: &[f32], d: usize) -> Vec<(usize, f32, f32)> {
    let cos: Vec<f32> = vectors
        .chunks(d)
        .map(|r| r.iter().zip(query).map(|(a, b)| a * b).sum())
        .collect();
    let max = cos.iter().fold(f32::NEG_INFINITY, |m, &c| m.max(100.0 * c));
    let e: Vec<f32> = cos.iter().map(|c| (100.0 * c - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    let mut out: Vec<(usize, f32, f32)> = cos
        .iter()
        .zip(&e)
        .enumerate()
        .map(|(i, (&c, &x))| (i, c, x / sum))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}
