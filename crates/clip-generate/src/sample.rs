//! Sampling, decoding and reranking — `clip generate`. Codes are drawn one at a time from the
//! decoder (burn's autoregressive cache: each step computes only the new position), with a
//! temperature, optional top-k, and classifier-free guidance: with scale `s` the logits are
//! `u + s·(c − u)`, `c` given the caption and `u` given the empty caption (DALL-E mini's
//! `cond_scale`; `s = 1` is plain conditional sampling and skips the second pass). The VQ decoder
//! turns the codes into images and a CLIP ranks them by the cosine between each image and the
//! caption.

use std::path::PathBuf;

use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::TransformerDecoderInput;
use burn::prelude::*;
use clip_data::resize::Rgb8;
use clip_data::rng::Rng;
use clip_embed::Embedder;
use clip_model::source::to_vec;
use serde::Serialize;

use crate::data;
use crate::prior::{Generator, Prior};
use crate::{EvalError, invalid};

/// How codes are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SampleOptions {
    pub samples: usize,
    pub temperature: f32,
    /// keep the k most likely codes (0: all)
    pub top_k: usize,
    pub guidance: f32,
    pub seed: u64,
}

impl SampleOptions {
    pub fn check(&self) -> Result<(), EvalError> {
        if self.samples == 0 {
            return Err(invalid("--samples must be at least 1"));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(invalid(format!(
                "the temperature must be above 0 (asked: {})",
                self.temperature
            )));
        }
        if !self.guidance.is_finite() || self.guidance < 0.0 {
            return Err(invalid(format!(
                "the guidance scale must be 0 or more (asked: {})",
                self.guidance
            )));
        }
        Ok(())
    }
}

/// Samples at most this many sequences per decoder batch.
const SAMPLE_BATCH: usize = 64;

/// Guided logits `u + s·(c − u)`.
pub fn guide(cond: &[f32], uncond: &[f32], scale: f32) -> Vec<f32> {
    cond.iter()
        .zip(uncond)
        .map(|(&c, &u)| u + scale * (c - u))
        .collect()
}

/// Draw one index from `logits` / `temperature`, restricted to the `top_k` largest (0: all).
pub fn draw(logits: &[f32], temperature: f32, top_k: usize, rng: &mut Rng) -> usize {
    let mut keep: Vec<usize> = (0..logits.len()).collect();
    if top_k > 0 && top_k < logits.len() {
        keep.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        keep.truncate(top_k);
    }
    let mx = keep
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = keep
        .iter()
        .map(|&i| (((logits[i] - mx) / temperature) as f64).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.unit() * total;
    for (j, &wj) in w.iter().enumerate() {
        if u < wj {
            return keep[j];
        }
        u -= wj;
    }
    *keep.last().expect("logits are not empty")
}

impl Prior {
    /// Draw `o.samples` code sequences for a caption (compact ids); also returns each drawn
    /// code's log-probability under the (guided, tempered, unrestricted) distribution.
    pub fn sample(
        &self,
        caption: &[usize],
        empty: &[usize],
        o: &SampleOptions,
    ) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
        let mut codes = Vec::new();
        let mut logps = Vec::new();
        let mut done = 0;
        while done < o.samples {
            let n = (o.samples - done).min(SAMPLE_BATCH);
            let (c, l) = self.sample_batch(caption, empty, n, o, done);
            codes.extend(c);
            logps.extend(l);
            done += n;
        }
        (codes, logps)
    }

    fn sample_batch(
        &self,
        caption: &[usize],
        empty: &[usize],
        n: usize,
        o: &SampleOptions,
        first: usize,
    ) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
        let device = self.device();
        let guided = o.guidance != 1.0;
        let (memory, pad) = self.encode(&[caption.to_vec(), empty.to_vec()]);
        let pick: Vec<i64> = (0..n)
            .map(|_| 0)
            .chain((0..if guided { n } else { 0 }).map(|_| 1))
            .collect();
        let rows = pick.len();
        let pick = Tensor::<1, Int>::from_data(TensorData::new(pick, [rows]), &device);
        let memory = memory.select(0, pick.clone());
        let pad = pad.int().select(0, pick).bool();
        let k = self.codes();
        let t_max = self.tokens();
        let mut seqs: Vec<Vec<usize>> = vec![vec![self.bos()]; rows];
        let mut logps = vec![Vec::with_capacity(t_max); n];
        let mut rngs: Vec<Rng> = (0..n)
            .map(|i| {
                Rng::new(o.seed ^ ((first + i) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            })
            .collect();
        let mut cache = self.decoder.new_autoregressive_cache();
        for t in 0..t_max {
            let x = self.embed_codes(&seqs);
            let input = TransformerDecoderInput::new(x, memory.clone())
                .memory_mask_pad(pad.clone())
                .target_mask_attn(generate_autoregressive_mask(rows, t + 1, &device));
            let h = self
                .decoder
                .forward_autoregressive_inference(input, &mut cache);
            let logits = to_vec(&self.head(h.narrow(1, t, 1))); // [rows, 1, K]
            for i in 0..n {
                let c = &logits[i * k..(i + 1) * k];
                let l = if guided {
                    guide(c, &logits[(n + i) * k..(n + i + 1) * k], o.guidance)
                } else {
                    c.to_vec()
                };
                let code = draw(&l, o.temperature, o.top_k, &mut rngs[i]);
                let mx = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let lse = mx
                    + l.iter()
                        .map(|&v| ((v - mx) / o.temperature).exp())
                        .sum::<f32>()
                        .ln()
                        * o.temperature;
                logps[i].push((l[code] - lse) / o.temperature);
                seqs[i].push(code);
                if guided {
                    seqs[n + i].push(code);
                }
            }
        }
        let codes = seqs[..n]
            .iter()
            .map(|s| s[1..].iter().map(|&c| c as u32).collect())
            .collect();
        (codes, logps)
    }
}

/// One written image.
#[derive(Debug, Clone, Serialize)]
pub struct Pick {
    pub rank: usize,
    /// index of the sample among those drawn
    pub sample: usize,
    /// cosine between the image and the caption under the reranker
    pub score: f32,
    pub path: PathBuf,
}

/// What `clip generate` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    pub caption: String,
    pub sampling: SampleOptions,
    pub reranker_dim: usize,
    /// the reranker's score of every sample, in drawing order
    pub scores: Vec<f32>,
    pub top: Vec<Pick>,
    pub grid: PathBuf,
}

/// A generation request.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub caption: String,
    pub sampling: SampleOptions,
    pub top: usize,
    pub truncate: bool,
    pub out: PathBuf,
}

/// Draw, decode, and return images with the reranker's scores (in drawing order).
pub fn draw_images(
    g: &Generator,
    caption: &str,
    truncate: bool,
    o: &SampleOptions,
) -> Result<Vec<Rgb8>, EvalError> {
    o.check()?;
    let ids = g.caption_ids(caption, truncate)?;
    let empty = g
        .settings
        .vocab
        .encode("", g.settings.dims.context, false)?;
    let (codes, _) = g.prior.sample(&ids, &empty, o);
    Ok(decode(g, &codes))
}

/// Images of code sequences.
pub fn decode(g: &Generator, codes: &[Vec<u32>]) -> Vec<Rgb8> {
    let s = g.vq.dims.image;
    let flat: Vec<u32> = codes.iter().flatten().copied().collect();
    g.vq.decode(&flat)
        .chunks(3 * s * s)
        .map(|c| data::from_unit(c, s))
        .collect()
}

/// Cosines between each image and `caption` under `clip` (any embedding size).
pub fn clip_scores(
    clip: &Embedder,
    caption: &str,
    images: Vec<Rgb8>,
) -> Result<Vec<f32>, EvalError> {
    let text = clip.embed_texts(&[caption.to_owned()], true, false)?;
    let n = images.len();
    let f = clip_inside::embed_images(clip, "samples", images, vec![0; n])?;
    Ok((0..n)
        .map(|i| f.row(i).iter().zip(&text).map(|(a, b)| a * b).sum())
        .collect())
}

/// `clip generate`: draw `samples` images, rank them by the reranker, write the best `top` as
/// `rank-NN.png`, a grid of them in rank order, and `generated.json`.
pub fn generate(
    g: &Generator,
    reranker: &Embedder,
    o: &GenerateOptions,
) -> Result<Generated, EvalError> {
    if o.top == 0 {
        return Err(invalid("--top must be at least 1"));
    }
    o.sampling.check()?;
    // refuse a foreign folder before the work
    clip_data::out::check_output_dir(&o.out, "generated.json", "clip generate's output")?;
    let images = draw_images(g, &o.caption, o.truncate, &o.sampling)?;
    let scores = clip_scores(reranker, &o.caption, images.clone())?;
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    clip_data::out::create_dir(&o.out)?;
    // an earlier generation in this folder: its picks go (they are ours), so none is left stale
    if let Ok(Some(old)) =
        crate::runs::read_json::<serde_json::Value>(&o.out.join("generated.json"))
    {
        for p in old["top"].as_array().into_iter().flatten() {
            let name = p["path"]
                .as_str()
                .and_then(|p| std::path::Path::new(p).file_name().map(|n| n.to_owned()));
            if let Some(name) = name.filter(|n| n.to_string_lossy().starts_with("rank-")) {
                let _ = std::fs::remove_file(o.out.join(name));
            }
        }
    }
    let mut top = Vec::new();
    let mut tiles = Vec::new();
    for (r, &i) in order.iter().take(o.top).enumerate() {
        let path = o.out.join(format!("rank-{:02}.png", r + 1));
        clip_inside::grid::save_png(&images[i], &path)?;
        tiles.push(clip_inside::grid::Tile {
            image: images[i].clone(),
            frame: clip_inside::grid::PLAIN,
        });
        top.push(Pick {
            rank: r + 1,
            sample: i,
            score: scores[i],
            path,
        });
    }
    let grid = o.out.join("grid.png");
    clip_inside::grid::save(&tiles, tiles.len().min(8), 128, &grid)?;
    let out = Generated {
        caption: o.caption.clone(),
        sampling: o.sampling,
        reranker_dim: reranker.dim(),
        scores,
        top,
        grid,
    };
    crate::runs::write_json(&o.out.join("generated.json"), &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::PriorDims;

    #[test]
    fn guidance_and_drawing_follow_their_rules() {
        assert_eq!(guide(&[2.0, 0.0], &[1.0, 1.0], 3.0), vec![4.0, -2.0]);
        assert_eq!(guide(&[2.0, 0.0], &[1.0, 1.0], 1.0), vec![2.0, 0.0]);
        let mut rng = Rng::new(7);
        // top-1 is the argmax whatever the temperature
        for _ in 0..20 {
            assert_eq!(draw(&[0.1, 3.0, 2.9, -1.0], 5.0, 1, &mut rng), 1);
        }
        // top-2 never draws outside the two largest; frequencies follow the softmax
        let mut hits = [0usize; 4];
        for _ in 0..20_000 {
            hits[draw(&[0.0, 1.0, 0.0, -5.0], 1.0, 2, &mut rng)] += 1;
        }
        assert_eq!(hits[3], 0);
        // among {0: 0.0, 1: 1.0}, p(1) = e/(1+e) = 0.731; index 2 ties with 0 and loses the tie
        let p1 = hits[1] as f64 / 20_000.0;
        assert!((p1 - 0.731).abs() < 0.02 && hits[2] == 0, "{hits:?}");
    }

    #[test]
    fn cached_sampling_matches_the_full_forward_pass() {
        let device = clip_model::default_device();
        device.seed(3);
        let d = PriorDims {
            width: 16,
            heads: 2,
            encoder_layers: 1,
            decoder_layers: 2,
            context: 8,
        };
        let p = Prior::new(&d, 10, 6, 7, &device);
        let cap = vec![2, 4, 3];
        let empty = vec![2, 3];
        for guidance in [1.0f32, 2.5] {
            let o = SampleOptions {
                samples: 3,
                temperature: 1.0,
                top_k: 0,
                guidance,
                seed: 11,
            };
            let (codes, logps) = p.sample(&cap, &empty, &o);
            assert_eq!(codes.len(), 3);
            // recompute each step's log-probability with the uncached teacher-forced pass
            let inputs: Vec<Vec<usize>> = codes
                .iter()
                .map(|c| {
                    std::iter::once(p.bos())
                        .chain(c[..5].iter().map(|&x| x as usize))
                        .collect()
                })
                .collect();
            let (m, pad) = p.encode(&vec![cap.clone(); 3]);
            let lc = to_vec(&p.logits(m, pad, &inputs));
            let (m, pad) = p.encode(&vec![empty.clone(); 3]);
            let lu = to_vec(&p.logits(m, pad, &inputs));
            for (i, c) in codes.iter().enumerate() {
                for t in 0..6 {
                    let at = (i * 6 + t) * 7;
                    let l = guide(&lc[at..at + 7], &lu[at..at + 7], guidance);
                    let mx = l.iter().cloned().fold(f32::MIN, f32::max);
                    let lse = mx + l.iter().map(|&v| (v - mx).exp()).sum::<f32>().ln();
                    let want = l[c[t] as usize] - lse;
                    assert!(
                        (logps[i][t] - want).abs() < 1e-4,
                        "sample {i} step {t}: {} vs {want}",
                        logps[i][t]
                    );
                }
            }
        }
        // the same seed draws the same codes
        let o = SampleOptions {
            samples: 2,
            temperature: 0.7,
            top_k: 3,
            guidance: 1.0,
            seed: 5,
        };
        assert_eq!(p.sample(&cap, &empty, &o).0, p.sample(&cap, &empty, &o).0);
    }
}
