//! The caption → image-code model, BART-style as in DALL-E mini: a bidirectional transformer
//! encoder over the caption's BPE tokens (CLIP's tokenizer, mapped to the ids that occur in the
//! training captions; others read as UNK), and a causal transformer decoder over the image codes
//! that cross-attends to the encoder's output. Both are burn's own pre-LN `TransformerEncoder` and
//! `TransformerDecoder`. Training: softmax cross-entropy on each code given the codes before it
//! (teacher forcing), with the caption replaced by the empty caption at rate `caption_dropout`, so
//! that the same model also gives the unconditional distribution that classifier-free guidance
//! needs.
//!
//! [`train`] holds the training run.

pub mod train;

use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{
    TransformerDecoder, TransformerDecoderConfig, TransformerDecoderInput, TransformerEncoder,
    TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

pub use train::{PriorOptions, train, validation_loss};

use crate::runs::Run;
use crate::vq::VqVae;
use crate::{EvalError, invalid};
use clip_train::objectives::state;
use clip_train::{AdamW, AdamWConfig};

pub const PAD: usize = 0;
pub const UNK: usize = 1;

/// Sizes of the encoder–decoder.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriorDims {
    pub width: usize,
    pub heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// the longest caption in tokens (start and end included)
    pub context: usize,
}

/// The caption vocabulary: the CLIP BPE ids seen in the training captions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextVocab {
    /// sorted BPE ids; compact id = 2 + position
    pub bpe: Vec<u32>,
}

impl TextVocab {
    pub fn build<'a>(captions: impl Iterator<Item = &'a str>) -> TextVocab {
        let tok = clip_tokenizer::Tokenizer::global();
        let mut ids: Vec<u32> = vec![clip_tokenizer::SOT, clip_tokenizer::EOT];
        for c in captions {
            ids.extend(tok.encode(c));
        }
        ids.sort_unstable();
        ids.dedup();
        TextVocab { bpe: ids }
    }

    pub fn len(&self) -> usize {
        self.bpe.len() + 2
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// `[SOT] caption [EOT]` as compact ids. Over `context` tokens it is an error, or with
    /// `truncate` cut to `context` with EOT last.
    pub fn encode(
        &self,
        caption: &str,
        context: usize,
        truncate: bool,
    ) -> Result<Vec<usize>, EvalError> {
        let tok = clip_tokenizer::Tokenizer::global();
        let mut ids = vec![clip_tokenizer::SOT];
        ids.extend(tok.encode(caption));
        ids.push(clip_tokenizer::EOT);
        if ids.len() > context {
            if !truncate {
                return Err(invalid(format!(
                    "the caption is {} tokens long; the generator reads at most {context} (start and \
                     end included). Shorten it, or pass --truncate",
                    ids.len()
                )));
            }
            ids.truncate(context.max(2));
            *ids.last_mut().expect("at least two") = clip_tokenizer::EOT;
        }
        Ok(ids
            .into_iter()
            .map(|b| self.bpe.binary_search(&b).map_or(UNK, |i| i + 2))
            .collect())
    }
}

#[derive(Module, Debug)]
pub struct Prior {
    text_embed: Embedding,
    text_pos: Param<Tensor<2>>,
    encoder: TransformerEncoder,
    enc_norm: LayerNorm,
    code_embed: Embedding,
    code_pos: Param<Tensor<2>>,
    pub(crate) decoder: TransformerDecoder,
    dec_norm: LayerNorm,
    out: Linear,
}

fn positions(n: usize, w: usize, device: &Device) -> Param<Tensor<2>> {
    Param::from_tensor(Tensor::<2>::random(
        [n, w],
        burn::tensor::Distribution::Normal(0.0, 0.01),
        device,
    ))
}

impl Prior {
    /// A fresh model for `vocab` caption ids, `tokens` codes per image and `codes` entries.
    pub fn new(d: &PriorDims, vocab: usize, tokens: usize, codes: usize, device: &Device) -> Prior {
        Prior {
            text_embed: EmbeddingConfig::new(vocab, d.width).init(device),
            text_pos: positions(d.context, d.width, device),
            encoder: TransformerEncoderConfig::new(d.width, 4 * d.width, d.heads, d.encoder_layers)
                .with_dropout(0.0)
                .with_norm_first(true)
                .init(device),
            enc_norm: LayerNormConfig::new(d.width).init(device),
            // one more id: the start token before the first code
            code_embed: EmbeddingConfig::new(codes + 1, d.width).init(device),
            code_pos: positions(tokens, d.width, device),
            decoder: TransformerDecoderConfig::new(d.width, 4 * d.width, d.heads, d.decoder_layers)
                .with_dropout(0.0)
                .with_norm_first(true)
                .init(device),
            dec_norm: LayerNormConfig::new(d.width).init(device),
            out: LinearConfig::new(d.width, codes).init(device),
        }
    }

    pub fn codes(&self) -> usize {
        self.out.weight.dims()[1]
    }

    pub fn tokens(&self) -> usize {
        self.code_pos.dims()[0]
    }

    /// The start token's id.
    pub fn bos(&self) -> usize {
        self.codes()
    }

    pub(crate) fn device(&self) -> Device {
        self.out.weight.device()
    }

    /// Encode caption rows (compact ids): the memory `[B, L, W]` and its padding mask `[B, L]`.
    pub fn encode(&self, rows: &[Vec<usize>]) -> (Tensor<3>, Tensor<2, Bool>) {
        let device = self.device();
        let (b, l) = (
            rows.len(),
            rows.iter().map(Vec::len).max().unwrap_or(1).max(1),
        );
        let mut ids = Vec::with_capacity(b * l);
        let mut pad = Vec::with_capacity(b * l);
        for r in rows {
            for i in 0..l {
                ids.push(r.get(i).copied().unwrap_or(PAD) as i64);
                pad.push(i >= r.len());
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, l]), &device);
        let pad = Tensor::<2, Bool>::from_data(TensorData::new(pad, [b, l]), &device);
        let x = self.text_embed.forward(ids) + self.text_pos.val().narrow(0, 0, l).unsqueeze();
        let x = self
            .encoder
            .forward(TransformerEncoderInput::new(x).mask_pad(pad.clone()));
        (self.enc_norm.forward(x), pad)
    }

    /// The decoder's input embedding of code rows `[B, L]` (BOS first).
    pub(crate) fn embed_codes(&self, inputs: &[Vec<usize>]) -> Tensor<3> {
        let device = self.device();
        let (b, l) = (inputs.len(), inputs[0].len());
        let flat: Vec<i64> = inputs.iter().flatten().map(|&t| t as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, l]), &device);
        self.code_embed.forward(ids) + self.code_pos.val().narrow(0, 0, l).unsqueeze()
    }

    /// Decoder states `[B, L, W]` → logits `[B, L, K]`.
    pub(crate) fn head(&self, h: Tensor<3>) -> Tensor<3> {
        self.out.forward(self.dec_norm.forward(h))
    }

    /// Logits `[B, L, K]` of the next code after each prefix of `inputs` (teacher forcing).
    pub fn logits(
        &self,
        memory: Tensor<3>,
        pad: Tensor<2, Bool>,
        inputs: &[Vec<usize>],
    ) -> Tensor<3> {
        let (b, l) = (inputs.len(), inputs[0].len());
        let x = self.embed_codes(inputs);
        let input = TransformerDecoderInput::new(x, memory)
            .memory_mask_pad(pad)
            .target_mask_attn(generate_autoregressive_mask(b, l, &self.device()));
        self.head(self.decoder.forward(input))
    }

    /// Mean cross-entropy (nats per code) of `codes` given `captions` (compact ids).
    pub fn loss(&self, captions: &[Vec<usize>], codes: &[&[u32]]) -> Tensor<1> {
        let t = self.tokens();
        let inputs: Vec<Vec<usize>> = codes
            .iter()
            .map(|c| {
                std::iter::once(self.bos())
                    .chain(c[..t - 1].iter().map(|&x| x as usize))
                    .collect()
            })
            .collect();
        let (memory, pad) = self.encode(captions);
        let logp = log_softmax(self.logits(memory, pad, &inputs), 2);
        let [b, l, k] = logp.dims();
        let idx: Vec<i64> = codes
            .iter()
            .flat_map(|c| c.iter().map(|&x| x as i64))
            .collect();
        let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [b * l, 1]), &self.device());
        logp.reshape([b * l, k]).gather(1, idx).mean().neg()
    }
}

pub const PRIOR_KIND: &str = "caption-to-codes";

/// What changes a generator run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorSettings {
    pub dims: PriorDims,
    /// the VQ-VAE run whose codes it predicts, and that run's codebook size and codes per image
    pub vqvae: PathBuf,
    pub codes: usize,
    pub tokens: usize,
    /// the VQ-VAE checkpoint's codebook fingerprint ([`VqVae::fingerprint`])
    #[serde(default)]
    pub vq_fingerprint: Option<String>,
    pub styles: Vec<String>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub caption_dropout: f64,
    pub seed: u64,
    pub images: usize,
    pub vocab: TextVocab,
}

/// A trained generator: the prior, its vocabulary, and the VQ-VAE whose codes it predicts.
pub struct Generator {
    pub settings: PriorSettings,
    pub prior: Prior,
    pub vq: VqVae,
    pub steps: usize,
}

pub(crate) fn adam() -> AdamWConfig {
    AdamWConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-8,
        weight_decay: 0.01,
    }
}

/// The template the study and the validation loss use (one of the import's caption forms).
pub const TEMPLATE: &str = "an emoji of {}";

impl Generator {
    /// Load a generator run's last checkpoint, with the VQ-VAE it names (or `vqvae`, which must
    /// have the same codebook size and code grid).
    pub fn load(dir: &Path, vqvae: Option<&Path>, device: &Device) -> Result<Generator, EvalError> {
        let (settings, p): (PriorSettings, _) = Run::settings(dir, PRIOR_KIND)?;
        let vq_dir = vqvae.unwrap_or(&settings.vqvae);
        let vq = VqVae::load(vq_dir, device)?;
        check_vq(&vq, settings.codes, settings.tokens, vq_dir, dir)?;
        if let Some(f) = settings
            .vq_fingerprint
            .as_ref()
            .filter(|f| **f != vq.fingerprint())
        {
            return Err(invalid(format!(
                "the VQ-VAE in '{}' (step {}, codebook {}) is not the checkpoint the generator in '{}' was \
                 trained on (codebook {f}); its codes would decode into other images",
                vq_dir.display(),
                vq.step,
                vq.fingerprint(),
                dir.display()
            )));
        }
        let prior = Prior::new(
            &settings.dims,
            settings.vocab.len(),
            settings.tokens,
            settings.codes,
            &device.clone().autodiff(),
        );
        let mut opt = AdamW::for_module(adam(), &prior);
        let prior = state::load(&Run::file(dir, "state", p.step), prior, &mut opt)
            .map_err(invalid)?
            .valid();
        Ok(Generator {
            settings,
            prior,
            vq,
            steps: p.step,
        })
    }

    /// A caption as the model's ids.
    pub fn caption_ids(&self, caption: &str, truncate: bool) -> Result<Vec<usize>, EvalError> {
        if caption.trim().is_empty() {
            return Err(invalid("the caption is empty; say what to draw"));
        }
        self.settings
            .vocab
            .encode(caption, self.settings.dims.context, truncate)
    }
}

fn check_vq(
    vq: &VqVae,
    codes: usize,
    tokens: usize,
    vq_dir: &Path,
    dir: &Path,
) -> Result<(), EvalError> {
    if vq.dims.codes != codes || vq.dims.tokens() != tokens {
        return Err(invalid(format!(
            "the VQ-VAE in '{}' has {} codebook entries and {} codes per image; the generator in '{}' \
             was trained on {codes} entries and {tokens} codes per image",
            vq_dir.display(),
            vq.dims.codes,
            vq.dims.tokens(),
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clip_model::source::to_vec;

    #[test]
    fn vocabulary_maps_unknown_words_and_refuses_long_captions() {
        let v = TextVocab::build(["a red apple", "a green pear"].into_iter());
        let known = v.encode("a red pear", 16, false).unwrap();
        assert!(known.iter().all(|&i| i >= 2), "{known:?}");
        assert_eq!(known.len(), 5);
        let unknown = v.encode("a blue pear", 16, false).unwrap();
        assert_eq!(unknown[2], UNK);
        let e = v
            .encode("a red apple a red apple a red apple", 6, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 6") && e.contains("--truncate"), "{e}");
        let cut = v.encode("a red apple a red apple", 4, true).unwrap();
        assert_eq!(cut.len(), 4);
        assert_eq!(*cut.last().unwrap(), v.encode("", 4, false).unwrap()[1]);
    }

    #[test]
    fn loss_is_cross_entropy_of_the_codes() {
        let device = clip_model::default_device();
        let d = PriorDims {
            width: 16,
            heads: 2,
            encoder_layers: 1,
            decoder_layers: 1,
            context: 8,
        };
        let p = Prior::new(&d, 10, 4, 6, &device);
        let caps = vec![vec![2, 3, 4], vec![2, 5]];
        let codes: Vec<Vec<u32>> = vec![vec![0, 1, 2, 3], vec![5, 5, 4, 0]];
        let refs: Vec<&[u32]> = codes.iter().map(Vec::as_slice).collect();
        let loss = to_vec(&p.loss(&caps, &refs))[0] as f64;
        // the same from the logits by hand
        let (m, pad) = p.encode(&caps);
        let inputs = vec![vec![6, 0, 1, 2], vec![6, 5, 5, 4]];
        let logits = to_vec(&p.logits(m, pad, &inputs));
        let mut want = 0.0;
        for b in 0..2 {
            for t in 0..4 {
                let row = &logits[(b * 4 + t) * 6..(b * 4 + t + 1) * 6];
                let mx = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
                let lse = mx + row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
                want += lse - row[codes[b][t] as usize] as f64;
            }
        }
        want /= 8.0;
        assert!((loss - want).abs() < 1e-4, "{loss} vs {want}");
        // an untrained model is near uniform: ln 6
        assert!((loss - 6f64.ln()).abs() < 0.5);
    }
}
