//! Figure 2's objectives on one image tower (the same small ViT, data order, augmentation and
//! tokenizer; only what is learned from the caption differs):
//!
//! - `c-tr`: CLIP — contrastive, with the transformer text tower;
//! - `c-bow`: contrastive with a continuous bag-of-words text encoder (Figure 3's "CBOW or Text
//!   Transformer": the mean of token embeddings → LayerNorm → linear; `TextPool::Mean`, no blocks);
//! - `p-bow`: image → bag-of-words prediction over the training vocabulary ([`heads`]);
//!   `p-bow-sigmoid` is its multi-label ablation;
//! - `p-lm`: image → caption, a transformer decoder cross-attending to the image tokens.
//!
//! The background systems the paper places CLIP among, as options of the same framework, each with
//! its zero-shot rule:
//!
//! - `visual-ngrams` (Li et al. 2017): the bag of the caption's 1–3-grams (the 16,384 most frequent),
//!   zero-shot by the mean log-probability of a class name's n-grams;
//! - `hashtags` (Mahajan et al. 2018): the caption's comma-separated phrases (the emoji's names and
//!   CLDR keywords) as tags, softmax against the normalised tag set; zero-shot by the class name's
//!   log-probability as a tag;
//! - ConVIRT (Zhang et al. 2020) with CLIP's simplifications undone one at a time:
//!   `c-tr-fixed-temperature` (τ = 0.1, not learned), `c-tr-heavy-augmentation` (ConVIRT's crops,
//!   flips, colour jitter and blur), `c-tr-sentence-sampling` (one random caption per image
//!   visit, [`sentences`]) and `c-tr-nonlinear-projection` (ReLU and a second linear layer after
//!   each tower's projection, [`projection`]);
//! - `devise` (Frome et al. 2013): the image regressed with a hinge rank loss onto frozen word
//!   vectors of its caption, trained here on the captions ([`devise`]); zero-shot by the cosine to
//!   a class name's vector.
//!
//! - `lda-topics`: the caption's topic mixture under an LDA fitted here by Gibbs sampling
//!   ([`lda`]); zero-shot by the log-likelihood of a class name's folded-in mixture.
//!
//! [`Model`] trains any of them one batch at a time, scores a zero-shot task with each objective's
//! own rule ([`Model::zero_shot`]), counts forward FLOPs analytically, and saves and restores its
//! parameters and AdamW moments for resumable runs ([`state`]).

pub mod classifier;
pub mod devise;
pub mod heads;
pub mod lda;
pub mod projection;
pub mod sentences;
pub mod state;
pub mod vocab;
mod zeroshot;

use std::collections::BTreeMap;

use burn::optim::GradientsParams;
use burn::prelude::*;
use clip_model::source::to_vec;
use clip_model::{Clip, ClipConfig, VisualTower, l2_normalize};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, AdamWConfig};
use crate::trainer::{TrainError, ZeroShotSet, zero_shot_accuracy, zero_shot_accuracy_mapped};
use heads::{CaptionDecoder, DecoderDims, Head, Predictor};
use projection::{Headed, NonlinearHead};
use vocab::Vocab;

/// One of Figure 2's objectives, or one of the background systems' as an option of the same
/// framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "c-bow")]
    CBow,
    #[serde(rename = "c-tr")]
    CTr,
    #[serde(rename = "p-bow")]
    PBow,
    #[serde(rename = "p-bow-sigmoid")]
    PBowSigmoid,
    #[serde(rename = "p-lm")]
    PLm,
    /// Visual N-Grams (Li et al. 2017): the bag of 1–3-grams of the caption
    #[serde(rename = "visual-ngrams")]
    VisualNgrams,
    /// hashtag supervision (Mahajan et al. 2018): the caption's comma-separated phrases as tags
    #[serde(rename = "hashtags")]
    Hashtags,
    /// ConVIRT's fixed temperature (τ = 0.1) instead of CLIP's learned one
    #[serde(rename = "c-tr-fixed-temperature")]
    CTrFixedTemperature,
    /// ConVIRT's heavier augmentation (crops of 60–100% area, flips, colour jitter, blur)
    #[serde(rename = "c-tr-heavy-augmentation")]
    CTrHeavyAugmentation,
    /// DeViSE (Frome et al. 2013): regression onto frozen word vectors of the caption
    #[serde(rename = "devise")]
    Devise,
    /// LDA-topic supervision: predict the caption's topic mixture
    #[serde(rename = "lda-topics")]
    LdaTopics,
    /// ConVIRT's sentence sampling: one random caption per image visit
    #[serde(rename = "c-tr-sentence-sampling")]
    CTrSentenceSampling,
    /// ConVIRT's non-linear projection: ReLU and a second linear layer after each tower's
    #[serde(rename = "c-tr-nonlinear-projection")]
    CTrNonlinearProjection,
}

/// Topics, Gibbs sweeps, and fold-in sweeps of the LDA objective.
pub const LDA_TOPICS: usize = 64;
pub const LDA_SWEEPS: usize = 200;
pub const LDA_FOLD_IN: usize = 50;

/// Dimensions of DeViSE's word vectors.
pub const DEVISE_DIM: usize = 128;

/// Vocabulary caps of the n-gram and phrase heads (the most frequent units are kept).
pub const MAX_UNITS: usize = 16_384;

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::CBow,
        Kind::CTr,
        Kind::PBow,
        Kind::PBowSigmoid,
        Kind::PLm,
        Kind::VisualNgrams,
        Kind::Hashtags,
        Kind::CTrFixedTemperature,
        Kind::CTrHeavyAugmentation,
        Kind::Devise,
        Kind::LdaTopics,
        Kind::CTrSentenceSampling,
        Kind::CTrNonlinearProjection,
    ];

    pub fn name(self) -> &'static str {
        [
            "c-bow",
            "c-tr",
            "p-bow",
            "p-bow-sigmoid",
            "p-lm",
            "visual-ngrams",
            "hashtags",
            "c-tr-fixed-temperature",
            "c-tr-heavy-augmentation",
            "devise",
            "lda-topics",
            "c-tr-sentence-sampling",
            "c-tr-nonlinear-projection",
        ][self as usize]
    }

    /// What the paper calls it.
    pub fn label(self) -> &'static str {
        [
            "contrastive, bag-of-words text (C-BoW)",
            "contrastive, transformer text (C-Tr, CLIP)",
            "bag-of-words prediction (P-BoW)",
            "bag-of-words prediction, sigmoid (ablation)",
            "caption prediction, transformer LM (P-LM)",
            "Visual N-Grams (1–3-gram prediction)",
            "hashtag (phrase) prediction",
            "C-Tr with ConVIRT's fixed temperature",
            "C-Tr with ConVIRT's heavier augmentation",
            "DeViSE (regression onto caption word vectors)",
            "LDA-topic prediction",
            "C-Tr with ConVIRT's sentence sampling",
            "C-Tr with ConVIRT's non-linear projection",
        ][self as usize]
    }

    pub fn contrastive(self) -> bool {
        matches!(
            self,
            Kind::CBow
                | Kind::CTr
                | Kind::CTrFixedTemperature
                | Kind::CTrHeavyAugmentation
                | Kind::CTrSentenceSampling
                | Kind::CTrNonlinearProjection
        )
    }

    /// The output units of a predictive objective.
    pub fn units(self) -> vocab::Units {
        match self {
            Kind::VisualNgrams => vocab::Units::Ngrams(3),
            Kind::Hashtags => vocab::Units::Phrases,
            _ => vocab::Units::Tokens,
        }
    }

    /// The vocabulary this objective predicts over, from the training captions.
    pub fn vocab<'a>(self, ctx: usize, captions: impl Iterator<Item = &'a str>) -> Vocab {
        let cap = match (self, self.units()) {
            // DeViSE's PPMI matrix is vocabulary²: its most frequent 8,192 tokens (256 MB)
            (Kind::Devise, _) => MAX_UNITS / 2,
            (_, vocab::Units::Tokens) => usize::MAX,
            _ => MAX_UNITS,
        };
        let tok = clip_tokenizer::Tokenizer::global();
        if !matches!(self, Kind::Devise | Kind::LdaTopics) {
            return Vocab::build_units(tok, ctx, captions, self.units(), cap);
        }
        let captions: Vec<&str> = captions.collect();
        let mut v = Vocab::build_units(tok, ctx, captions.iter().copied(), self.units(), cap);
        let rows: Vec<Vec<usize>> = captions
            .iter()
            .map(|c| v.words(&tok.encode_truncated(c, ctx).0))
            .collect();
        if self == Kind::Devise {
            v.vectors = Some(std::sync::Arc::new(devise::WordVectors::fit(
                v.len(),
                &rows,
                DEVISE_DIM,
                0,
            )));
        } else {
            v.topics = Some(std::sync::Arc::new(lda::Topics::fit(
                v.len(),
                &rows,
                LDA_TOPICS,
                LDA_SWEEPS,
                0,
            )));
        }
        v
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown objective '{s}' (known: {})", known.join(", "))
            })
    }
}

/// The CLIP configuration an objective trains: `base` as it is, or with the bag-of-words text
/// tower for C-BoW (same width and projection; no blocks, mean pool).
pub fn model_config(kind: Kind, base: &ClipConfig) -> ClipConfig {
    let mut c = base.clone();
    if kind == Kind::CBow {
        c.text_cfg.layers = 0;
        c.text_cfg.pool_type = Some("mean".into());
    }
    if kind == Kind::CTrFixedTemperature {
        c.init_logit_scale = Some(10f64.ln());
    }
    c
}

/// The caption decoder of P-LM for `base`: the text tower's width, depth, heads and context.
pub fn decoder_dims(base: &ClipConfig) -> DecoderDims {
    let t = &base.text_cfg;
    DecoderDims {
        width: t.width,
        layers: t.layers,
        heads: t.heads,
        context: t.context_length,
    }
}

/// Zero-shot (top-1, top-5) under each of an objective's scoring rules.
pub type Scores = BTreeMap<String, (f64, f64)>;

/// A model being trained under one objective, with its optimiser.
#[allow(clippy::large_enum_variant)] // one per run
pub enum Model {
    Contrastive {
        kind: Kind,
        clip: Clip,
        opt: AdamW,
        /// ConVIRT's non-linear projection (`c-tr-nonlinear-projection` only)
        head: Option<NonlinearHead>,
    },
    Predictive {
        kind: Kind,
        module: Predictor,
        opt: AdamW,
        vocab: Vocab,
        config: ClipConfig,
    },
}

fn vit_of(clip: &Clip) -> Result<clip_model::vit::VisionTransformer, TrainError> {
    match &clip.module().visual {
        VisualTower::Vit(v) => Ok(v.clone()),
        _ => Err(TrainError::Unsupported(
            "the predictive objectives need a ViT image tower (vision_cfg.patch_size)".into(),
        )),
    }
}

impl Model {
    /// A fresh model: the image tower is `Clip::random(config, seed)`'s for every objective (the
    /// same initial weights); heads are drawn from burn's generator seeded with `seed`.
    pub fn new(
        kind: Kind,
        base: &ClipConfig,
        vocab: &Vocab,
        seed: u64,
        device: &Device,
    ) -> Result<Model, TrainError> {
        let config = model_config(kind, base);
        let clip = Clip::random(&config, seed, device)
            .map_err(|e| TrainError::Unsupported(e.to_string()))?;
        let adam = AdamWConfig::paper(true);
        if kind.contrastive() {
            let mut opt = AdamW::new(adam, &clip);
            let head = (kind == Kind::CTrNonlinearProjection).then(|| {
                device.seed(seed ^ 0x0B1E_C71F);
                NonlinearHead::new(config.embed_dim, device)
            });
            if let Some(h) = &head {
                opt.decay_matrices_of(h);
            }
            return Ok(Model::Contrastive {
                kind,
                clip,
                opt,
                head,
            });
        }
        let visual = vit_of(&clip)?;
        device.seed(seed ^ 0x0B1E_C71F);
        let head = match kind {
            Kind::PLm => Head::Lm(CaptionDecoder::new(
                base.vision_cfg.width,
                vocab.len(),
                decoder_dims(base),
                device,
            )),
            Kind::Devise => {
                let Some(wv) = &vocab.vectors else {
                    return Err(TrainError::Unsupported(
                        "devise needs word vectors: build its vocabulary with Kind::vocab".into(),
                    ));
                };
                Head::Bow(burn::nn::LinearConfig::new(base.embed_dim, wv.dim).init(device))
            }
            Kind::LdaTopics => {
                let Some(t) = &vocab.topics else {
                    return Err(TrainError::Unsupported(
                        "lda-topics needs a topic model: build its vocabulary with Kind::vocab"
                            .into(),
                    ));
                };
                Head::Bow(burn::nn::LinearConfig::new(base.embed_dim, t.k).init(device))
            }
            _ => Head::Bow(burn::nn::LinearConfig::new(base.embed_dim, vocab.len()).init(device)),
        };
        let module = Predictor { visual, head };
        let opt = AdamW::for_module(adam, &module);
        Ok(Model::Predictive {
            kind,
            module,
            opt,
            vocab: vocab.clone(),
            config,
        })
    }

    pub fn config(&self) -> &ClipConfig {
        match self {
            Model::Contrastive { clip, .. } => &clip.config,
            Model::Predictive { config, .. } => config,
        }
    }

    /// The CLIP of a contrastive objective.
    pub fn clip(&self) -> Option<&Clip> {
        match self {
            Model::Contrastive { clip, .. } => Some(clip),
            Model::Predictive { .. } => None,
        }
    }

    /// The loss of one batch (`images` `[B, 3, n, n]`, token rows), one AdamW step at `lr`;
    /// returns the loss.
    pub fn step(
        &mut self,
        images: Tensor<4>,
        rows: &[Vec<u32>],
        lr: f64,
    ) -> Result<f32, TrainError> {
        match self {
            Model::Contrastive {
                clip,
                opt,
                head: Some(head),
                ..
            } => {
                let (loss, grads) = projection::loss_and_grads(clip, head, images, rows)?;
                if loss.is_finite() {
                    let both = opt.step_module(Headed::of(clip, head), lr, grads);
                    clip.set_module(both.clip);
                    *head = both.head;
                }
                Ok(loss)
            }
            Model::Contrastive {
                kind,
                clip,
                opt,
                head: None,
            } => {
                let (loss, mut grads) = crate::gradcache::loss_and_grads(
                    clip,
                    images,
                    rows,
                    usize::MAX,
                    crate::loss::Objective::Clip,
                )?;
                if *kind == Kind::CTrFixedTemperature {
                    // the temperature stays where it was set
                    grads.remove::<1>(clip.module().logit_scale.id);
                }
                if loss.is_finite() {
                    opt.step(clip, lr, grads);
                }
                Ok(loss)
            }
            Model::Predictive {
                kind,
                module,
                opt,
                vocab,
                ..
            } => {
                let words: Vec<Vec<usize>> = rows.iter().map(|r| vocab.words(r)).collect();
                let loss = match &module.head {
                    Head::Bow(lin) => {
                        let z = lin.forward(module.visual.forward(images, None));
                        match &vocab.vectors {
                            Some(wv) if *kind == Kind::Devise => {
                                let t = wv.targets(&words, &z.device());
                                devise::hinge_rank_loss(l2_normalize(z), t, 0.1)
                            }
                            _ if *kind == Kind::LdaTopics => {
                                let topics = vocab.topics.as_ref().ok_or_else(|| {
                                    TrainError::Unsupported("lda-topics needs a topic model".into())
                                })?;
                                let b = words.len();
                                let flat: Vec<f32> = words
                                    .iter()
                                    .flat_map(|w| topics.mixture(w, LDA_FOLD_IN))
                                    .collect();
                                let t = Tensor::<2>::from_data(
                                    TensorData::new(flat, [b, topics.k]),
                                    &z.device(),
                                );
                                (t * burn::tensor::activation::log_softmax(z, 1)).sum()
                                    * (-1.0 / b as f64)
                            }
                            _ => heads::bow_loss(z, &words, *kind == Kind::PBowSigmoid),
                        }
                    }
                    Head::Lm(dec) => {
                        let memory = dec.memory(module.visual.forward_tokens(images));
                        let (inputs, targets, mask) = heads::teacher_forcing(&words, dec.context());
                        let real: f32 = mask.iter().sum();
                        let lp = heads::sequence_log_prob(
                            dec.log_probs(memory, &inputs),
                            &targets,
                            &mask,
                        );
                        lp.sum() * (-1.0 / real.max(1.0) as f64)
                    }
                };
                let value = to_vec(&loss)[0];
                if value.is_finite() {
                    let grads = GradientsParams::from_grads(loss.backward(), &*module);
                    let m = module.clone();
                    *module = opt.step_module(m, lr, grads);
                }
                Ok(value)
            }
        }
    }

    /// Forward FLOPs per training sample (multiply–adds × 2 of every matrix product; attention's
    /// two products included; element-wise work left out), for a caption of `tokens` tokens.
    pub fn forward_flops(&self, tokens: f64) -> f64 {
        let c = self.config();
        let v = &c.vision_cfg;
        let p = v.patch_size.unwrap_or(16) as f64;
        let grid = (v.image_size as f64 / p).powi(2);
        let t_img = grid + 1.0;
        let vw = v.width as f64;
        let vit_layers = match v.layers {
            clip_model::config::VisionLayers::Vit(l) => l as f64,
            clip_model::config::VisionLayers::ResNet(_) => 0.0,
        };
        let block = |t: f64, w: f64, mlp: f64, ctx: f64| {
            2.0 * t * (4.0 * w * w + 2.0 * w * mlp) + 2.0 * 2.0 * t * ctx * w
        };
        let image = 2.0 * grid * 3.0 * p * p * vw
            + vit_layers * block(t_img, vw, vw * v.mlp_ratio, t_img)
            + 2.0 * vw * c.embed_dim as f64;
        let t = &c.text_cfg;
        let tw = t.width as f64;
        match self {
            Model::Contrastive { head, .. } => {
                let e = c.embed_dim as f64;
                image
                    + t.layers as f64 * block(tokens, tw, tw * t.mlp_ratio, tokens)
                    + 2.0 * tw * e
                    + if head.is_some() {
                        2.0 * 2.0 * e * e
                    } else {
                        0.0
                    }
            }
            Model::Predictive { module, vocab, .. } => {
                let vocab = self.output_units().unwrap_or(vocab.len()) as f64;
                match &module.head {
                    Head::Bow(_) => image + 2.0 * c.embed_dim as f64 * vocab,
                    Head::Lm(_) => {
                        let d = decoder_dims(c);
                        let w = d.width as f64;
                        // self-attention block + cross-attention (q, out on the caption; k, v on
                        // the image tokens) + feed-forward of 4w
                        let per_layer = block(tokens, w, 4.0 * w, tokens)
                            + 2.0 * (2.0 * tokens * w * w + 2.0 * t_img * w * w)
                            + 2.0 * 2.0 * tokens * t_img * w;
                        image
                            + 2.0 * t_img * vw * w
                            + d.layers as f64 * per_layer
                            + 2.0 * tokens * w * vocab
                    }
                }
            }
        }
    }

    /// Output width of a predictive head (vocabulary, word-vector or topic count).
    pub fn output_units(&self) -> Option<usize> {
        match self {
            Model::Contrastive { .. } => None,
            Model::Predictive { module, .. } => Some(match &module.head {
                Head::Bow(lin) => lin.weight.dims()[1],
                Head::Lm(dec) => dec.out.weight.dims()[1],
            }),
        }
    }

    /// Save the parameters (a projection head's too) and the AdamW moments: a run's state.
    pub fn save_state(&self, path: &std::path::Path) -> Result<(), String> {
        match self {
            Model::Contrastive {
                clip, opt, head, ..
            } => match head {
                None => state::save(path, clip.module(), opt),
                Some(h) => state::save(path, &Headed::of(clip, h), opt),
            },
            Model::Predictive { module, opt, .. } => state::save(path, module, opt),
        }
    }

    /// Restore what [`Model::save_state`] wrote, into a model built with the same settings.
    pub fn load_state(&mut self, path: &std::path::Path) -> Result<(), String> {
        match self {
            Model::Contrastive {
                clip, opt, head, ..
            } => match head {
                None => {
                    let m = state::load(path, clip.module().clone(), opt)?;
                    clip.set_module(m);
                }
                Some(h) => {
                    let both = state::load(path, Headed::of(clip, h), opt)?;
                    clip.set_module(both.clip);
                    *h = both.head;
                }
            },
            Model::Predictive { module, opt, .. } => {
                *module = state::load(path, module.clone(), opt)?;
            }
        }
        Ok(())
    }

    /// Completed optimiser steps.
    pub fn steps(&self) -> u64 {
        match self {
            Model::Contrastive { opt, .. } | Model::Predictive { opt, .. } => opt.step,
        }
    }
}

/// Normalised image features of a contrastive model (for callers that probe it).
pub fn image_features(clip: &Clip, images: Tensor<4>) -> Vec<f32> {
    to_vec(&l2_normalize(clip.encode_image(images).detach()))
}
