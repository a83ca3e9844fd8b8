//! The predictive objectives' models: the CLIP image tower with a head that predicts the caption.
//!
//! - **P-BoW** (Joulin et al. 2016; Figure 2's middle curve): a linear layer from the image
//!   embedding to the training vocabulary, trained with softmax cross-entropy against the
//!   caption's normalised bag of words (`Bow`), or independent sigmoids per word (`BowSigmoid`,
//!   the multi-label ablation). Zero-shot: the mean log-probability of a class name's words, the
//!   rule the paper uses for Visual N-Grams (§3.1.1).
//! - **P-LM** (VirTex-style captioning; the bottom curve): a pre-LN transformer decoder over the
//!   caption's tokens that cross-attends to every image token of the ViT, trained by teacher
//!   forcing. Zero-shot: the log-likelihood of each class prompt, summed, length-normalised, and as
//!   PMI against a blank image (raw likelihood favours short names).
//!
//! The decoder is burn's own `TransformerDecoder` (self-attention with the causal mask,
//! cross-attention, feed-forward), not a second hand-written transformer.

use burn::module::Param;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{
    TransformerDecoder, TransformerDecoderConfig, TransformerDecoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax};
use clip_model::vit::VisionTransformer;

use super::vocab::{BOS, EOS};

/// Sizes of the caption decoder.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecoderDims {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    /// the longest caption in tokens (start and end included)
    pub context: usize,
}

#[derive(Module, Debug)]
pub struct CaptionDecoder {
    /// image tokens (ViT width) → decoder width
    pub memory: Linear,
    pub embed: Embedding,
    /// `[context, width]`
    pub position: Param<Tensor<2>>,
    pub decoder: TransformerDecoder,
    pub norm: LayerNorm,
    pub out: Linear,
}

#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Head {
    Bow(Linear),
    Lm(CaptionDecoder),
}

/// An image tower and a caption-predicting head.
#[derive(Module, Debug)]
pub struct Predictor {
    pub visual: VisionTransformer,
    pub head: Head,
}

impl CaptionDecoder {
    pub fn new(vision_width: usize, vocab: usize, d: DecoderDims, device: &Device) -> Self {
        let position = Tensor::<2>::random(
            [d.context, d.width],
            burn::tensor::Distribution::Normal(0.0, 0.01),
            device,
        );
        CaptionDecoder {
            memory: LinearConfig::new(vision_width, d.width).init(device),
            embed: EmbeddingConfig::new(vocab, d.width).init(device),
            position: Param::from_tensor(position),
            decoder: TransformerDecoderConfig::new(d.width, 4 * d.width, d.heads, d.layers)
                .with_dropout(0.0)
                .with_norm_first(true)
                .init(device),
            norm: LayerNormConfig::new(d.width).init(device),
            out: LinearConfig::new(d.width, vocab).init(device),
        }
    }

    pub fn context(&self) -> usize {
        self.position.dims()[0]
    }

    /// Image tokens `[B, T, W_vis]` → the decoder's memory `[B, T, width]`.
    pub fn memory(&self, tokens: Tensor<3>) -> Tensor<3> {
        self.memory.forward(tokens)
    }

    /// Log-probabilities `[B, L, V]` of the next token after each of `inputs` (rows of compact ids
    /// of one length `L`, starting with BOS), given `memory`.
    pub fn log_probs(&self, memory: Tensor<3>, inputs: &[Vec<usize>]) -> Tensor<3> {
        let device = memory.device();
        let (b, l) = (inputs.len(), inputs[0].len());
        let flat: Vec<i64> = inputs.iter().flatten().map(|&t| t as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, l]), &device);
        let x = self.embed.forward(ids) + self.position.val().narrow(0, 0, l).unsqueeze();
        let input = TransformerDecoderInput::new(x, memory)
            .target_mask_attn(generate_autoregressive_mask(b, l, &device));
        let x = self.norm.forward(self.decoder.forward(input));
        log_softmax(self.out.forward(x), 2)
    }
}

/// Teacher-forcing inputs and targets of caption rows (compact word ids): `[BOS, w…]` → `[w…, EOS]`,
/// cut to `context` and padded to the longest; the mask marks real targets.
pub fn teacher_forcing(
    words: &[Vec<usize>],
    context: usize,
) -> (Vec<Vec<usize>>, Vec<usize>, Vec<f32>) {
    let keep = context.saturating_sub(1).max(1);
    let l = words
        .iter()
        .map(|w| w.len().min(keep) + 1)
        .max()
        .unwrap_or(1);
    let (mut inputs, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for w in words {
        let w = &w[..w.len().min(keep)];
        let mut inp = vec![BOS];
        inp.extend_from_slice(w);
        let mut tgt = w.to_vec();
        tgt.push(EOS);
        let real = tgt.len();
        inp.resize(l, EOS);
        tgt.resize(l, EOS);
        mask.extend((0..l).map(|i| (i < real) as u8 as f32));
        inputs.push(inp);
        targets.extend(tgt);
    }
    (inputs, targets, mask)
}

/// Sum over each row of the log-probabilities of `targets` under `logp` `[B, L, V]`, weighted by
/// `mask`: `[B]`.
pub fn sequence_log_prob(logp: Tensor<3>, targets: &[usize], mask: &[f32]) -> Tensor<1> {
    let [b, l, v] = logp.dims();
    let device = logp.device();
    let idx: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [b * l, 1]), &device);
    let picked = logp.reshape([b * l, v]).gather(1, idx); // [B·L, 1]
    let mask = Tensor::<2>::from_data(TensorData::new(mask.to_vec(), [b * l, 1]), &device);
    (picked * mask).reshape([b, l]).sum_dim(1).reshape([b])
}

/// The bag-of-words targets of `words` over `vocab` outputs: normalised counts (softmax) or 0/1
/// presence (sigmoid), `[B, V]`.
pub fn bag(words: &[Vec<usize>], vocab: usize, normalised: bool, device: &Device) -> Tensor<2> {
    let mut t = vec![0f32; words.len() * vocab];
    for (r, w) in words.iter().enumerate() {
        for &i in w {
            let cell = &mut t[r * vocab + i];
            *cell = if normalised {
                *cell + 1.0 / w.len() as f32
            } else {
                1.0
            };
        }
    }
    Tensor::<2>::from_data(TensorData::new(t, [words.len(), vocab]), device)
}

/// The bag-of-words loss of logits `[B, V]`: softmax cross-entropy against the normalised bag, or
/// the multi-label sigmoid loss (summed over the vocabulary), each averaged over the batch.
pub fn bow_loss(logits: Tensor<2>, words: &[Vec<usize>], sigmoid: bool) -> Tensor<1> {
    let [b, v] = logits.dims();
    let device = logits.device();
    let target = bag(words, v, !sigmoid, &device);
    let per = if sigmoid {
        let neg = target.clone().neg() + 1.0;
        target * log_sigmoid(logits.clone()) + neg * log_sigmoid(logits.neg())
    } else {
        target * log_softmax(logits, 1)
    };
    per.sum() * (-1.0 / b as f64)
}

/// Log-probabilities of every vocabulary word for each image, `[B, V]`.
pub fn bow_log_probs(logits: Tensor<2>, sigmoid: bool) -> Tensor<2> {
    if sigmoid {
        log_sigmoid(logits)
    } else {
        log_softmax(logits, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> Device {
        clip_model::cpu()
    }

    #[test]
    fn bow_loss_matches_its_formula() {
        let logits = [0.5f32, -1.0, 2.0, 0.0, 1.0, 0.3];
        let t = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [2, 3]), &cpu());
        let words = vec![vec![0, 2, 2], vec![1]];
        let soft = clip_model::source::to_vec(&bow_loss(t.clone(), &words, false))[0];
        let lse = |r: &[f32]| r.iter().map(|x| x.exp()).sum::<f32>().ln();
        let (r0, r1) = (&logits[..3], &logits[3..]);
        let want =
            -((r0[0] - lse(r0)) / 3.0 + 2.0 * (r0[2] - lse(r0)) / 3.0 + (r1[1] - lse(r1))) / 2.0;
        assert!((soft - want).abs() < 1e-5, "{soft} vs {want}");
        let sig = clip_model::source::to_vec(&bow_loss(t, &words, true))[0];
        let ls = |x: f32| -(1.0 + (-x).exp()).ln();
        let y = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let want: f32 = -logits
            .iter()
            .zip(y)
            .map(|(&x, y)| y * ls(x) + (1.0 - y) * ls(-x))
            .sum::<f32>()
            / 2.0;
        assert!((sig - want).abs() < 1e-5, "{sig} vs {want}");
    }

    #[test]
    fn teacher_forcing_shifts_and_masks() {
        let (inp, tgt, mask) = teacher_forcing(&[vec![5, 6], vec![7]], 32);
        assert_eq!(inp, vec![vec![BOS, 5, 6], vec![BOS, 7, EOS]]);
        assert_eq!(tgt, vec![5, 6, EOS, 7, EOS, EOS]);
        assert_eq!(mask, vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
        // cut to the context: at most context − 1 words, then the end
        let (inp, tgt, _) = teacher_forcing(&[vec![2, 3, 4, 5]], 3);
        assert_eq!(inp, vec![vec![BOS, 2, 3]]);
        assert_eq!(tgt, vec![2, 3, EOS]);
    }

    #[test]
    fn sequence_log_prob_sums_the_masked_targets() {
        // uniform over 4 tokens: each real target adds ln(1/4)
        let logp = Tensor::<3>::zeros([2, 3, 4], &cpu()) - 4f32.ln();
        let s = clip_model::source::to_vec(&sequence_log_prob(
            logp,
            &[1, 2, 3, 0, 1, 2],
            &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        ));
        assert!((s[0] - 3.0 * (0.25f32).ln()).abs() < 1e-5);
        assert!((s[1] - (0.25f32).ln()).abs() < 1e-5);
    }

    #[test]
    fn the_decoder_is_causal() {
        let device = cpu();
        device.seed(3);
        let d = DecoderDims {
            width: 16,
            layers: 1,
            heads: 2,
            context: 8,
        };
        let dec = CaptionDecoder::new(12, 10, d, &device);
        let memory = dec.memory(Tensor::<3>::random(
            [1, 5, 12],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        ));
        let a = clip_model::source::to_vec(&dec.log_probs(memory.clone(), &[vec![0, 4, 5, 6]]));
        let b = clip_model::source::to_vec(&dec.log_probs(memory, &[vec![0, 4, 9, 9]]));
        // positions 0 and 1 see only BOS and the first word: equal; position 2 sees the change
        assert!(
            a[..20]
                .iter()
                .zip(&b[..20])
                .all(|(x, y)| (x - y).abs() < 1e-5)
        );
        assert!(
            a[20..30]
                .iter()
                .zip(&b[20..30])
                .any(|(x, y)| (x - y).abs() > 1e-4)
        );
    }
}
