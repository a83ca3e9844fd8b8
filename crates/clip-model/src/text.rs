//! The text tower: token + learned positional embedding, causal pre-LN transformer, `ln_final`,
//! features at the EOT token (the highest id in each row), `text_projection`.
//!
//! Because attention is causal and features are read at EOT, positions after the longest EOT in a
//! batch cannot change the result: the batch is cut to that length before running the blocks.
//!
//! SigLIP's variant (open_clip's `TextTransformer` with `no_causal_mask`, `pool_type='last'`,
//! `proj_bias`, LayerNorm eps 1e-6, keys under `text.`): every token attends to every other, the
//! features are read at the last position of the padded context, so rows must come padded to the
//! full context (as its tokenizer pads them) and run whole; the projection is a Linear with bias
//! (or absent).
//!
//! With `pool_type: "mean"` the features are the mean over every token up to the EOT; with no
//! blocks (`layers: 0`) and no positional embedding added, the tower is Figure 2's continuous bag of
//! words (C-BoW): `ln_final(mean of token embeddings) · text_projection`.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::embedding;

use crate::capture::Capture;
use crate::config::{TextPool, TextProj};
use crate::error::LoadError;
use crate::source::{Init, Source, param, param_t};
use crate::transformer::{LayerNorm, Transformer, TransformerDims};

#[derive(Module, Debug)]
pub struct TextTransformer {
    /// `[V, W]`
    pub token_embedding: Param<Tensor<2>>,
    /// `[C, W]`
    pub positional_embedding: Param<Tensor<2>>,
    pub transformer: Transformer,
    pub ln_final: LayerNorm,
    /// `[W, E]` (absent with `proj_type: none`)
    pub text_projection: Option<Param<Tensor<2>>>,
    /// `[E]` (SigLIP's Linear projection)
    pub text_projection_bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub causal: bool,
    #[module(skip)]
    pub pool: TextPool,
}

/// Sizes of the text tower.
#[derive(Debug, Clone, Copy)]
pub struct TextDims {
    pub context_length: usize,
    pub vocab_size: usize,
    /// the residual blocks (width, depth, heads, MLP, activation, eps)
    pub blocks: TransformerDims,
    pub embed_dim: usize,
    pub causal: bool,
    pub pool: TextPool,
    pub proj: TextProj,
    /// key prefix: `""` (CLIP) or `"text."` (open_clip's `CustomTextCLIP`)
    pub prefix: &'static str,
}

/// Errors in the token input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TextInputError {
    #[error("row {row} has {len} tokens but the model's context length is {context}")]
    TooLong {
        row: usize,
        len: usize,
        context: usize,
    },
    #[error("token id {id} in row {row} is outside the model's vocabulary of {vocab}")]
    BadId { row: usize, id: u32, vocab: usize },
    #[error("row {row} is empty")]
    Empty { row: usize },
    #[error(
        "row {row} has {len} tokens; this model reads the last position of its {context}-token context, so rows must come padded to it (as its tokenizer pads them)"
    )]
    NotPadded {
        row: usize,
        len: usize,
        context: usize,
    },
}

impl TextTransformer {
    pub fn load(src: &mut dyn Source, d: TextDims, device: &Device) -> Result<Self, LoadError> {
        let w = d.blocks.width;
        let k = |name: &str| format!("{}{name}", d.prefix);
        let std = (w as f64).powf(-0.5);
        let (text_projection, text_projection_bias) = match d.proj {
            TextProj::Matrix => (
                Some(param(
                    src,
                    &k("text_projection"),
                    [w, d.embed_dim],
                    Init::Normal(std),
                    device,
                )?),
                None,
            ),
            TextProj::Linear => (
                Some(param_t(
                    src,
                    &k("text_projection.weight"),
                    [d.embed_dim, w],
                    Init::Normal(std),
                    device,
                )?),
                Some(param(
                    src,
                    &k("text_projection.bias"),
                    [d.embed_dim],
                    Init::Constant(0.0),
                    device,
                )?),
            ),
            TextProj::None => (None, None),
        };
        Ok(TextTransformer {
            token_embedding: param(
                src,
                &k("token_embedding.weight"),
                [d.vocab_size, w],
                Init::Normal(0.02),
                device,
            )?,
            positional_embedding: param(
                src,
                &k("positional_embedding"),
                [d.context_length, w],
                Init::Normal(0.01),
                device,
            )?,
            transformer: Transformer::load(src, &k("transformer"), d.blocks, device)?,
            ln_final: LayerNorm::load_eps(src, &k("ln_final"), w, d.blocks.eps, device)?,
            text_projection,
            text_projection_bias,
            causal: d.causal,
            pool: d.pool,
        })
    }

    pub fn context_length(&self) -> usize {
        self.positional_embedding.dims()[0]
    }

    pub fn vocab_size(&self) -> usize {
        self.token_embedding.dims()[0]
    }

    /// Token rows (any length up to the context; zero-padded or not) → `[B, E]` features.
    pub fn forward(
        &self,
        rows: &[Vec<u32>],
        mut capture: Option<&mut Capture>,
    ) -> Result<Tensor<2>, TextInputError> {
        let device = self.token_embedding.device();
        let (context, vocab) = (self.context_length(), self.vocab_size());
        // EOT = first position of the row's highest id (torch.argmax picks the first maximum)
        let mut eot = Vec::with_capacity(rows.len());
        for (row, ids) in rows.iter().enumerate() {
            if ids.is_empty() {
                return Err(TextInputError::Empty { row });
            }
            if ids.len() > context && ids[context..].iter().any(|&t| t != 0) {
                return Err(TextInputError::TooLong {
                    row,
                    len: ids.len(),
                    context,
                });
            }
            if let Some(&id) = ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(TextInputError::BadId { row, id, vocab });
            }
            if self.pool == TextPool::Last {
                // every position matters: the row runs whole and is read at its last position
                if ids.len() != context {
                    return Err(TextInputError::NotPadded {
                        row,
                        len: ids.len(),
                        context,
                    });
                }
                eot.push(context - 1);
                continue;
            }
            let max = *ids.iter().max().expect("non-empty");
            eot.push(ids.iter().position(|&t| t == max).expect("max is present"));
        }
        // Rows sorted by length run in buckets, each cut to its own longest sequence; with a capture
        // request everything runs as one batch so activations line up row for row.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let buckets: Vec<Vec<usize>> =
            if capture.is_some() || rows.len() <= BUCKET || self.pool == TextPool::Last {
                vec![order]
            } else {
                order.sort_by_key(|&r| eot[r]);
                order.chunks(BUCKET).map(<[usize]>::to_vec).collect()
            };
        let mut pooled = Vec::with_capacity(buckets.len());
        for bucket in &buckets {
            pooled.push(self.run_bucket(rows, &eot, bucket, capture.as_deref_mut(), &device));
        }
        let pooled = if buckets.len() == 1 {
            pooled.pop().expect("one bucket") // input order
        } else {
            let mut inverse = vec![0i64; rows.len()];
            for (pos, &r) in buckets.iter().flatten().enumerate() {
                inverse[r] = pos as i64;
            }
            let inverse =
                Tensor::<1, Int>::from_data(TensorData::new(inverse, [rows.len()]), &device);
            Tensor::cat(pooled, 0).select(0, inverse) // back to input order
        };
        let x = self.ln_final.forward(pooled);
        Ok(match (&self.text_projection, &self.text_projection_bias) {
            (Some(p), None) => x.matmul(p.val()), // [B, E]
            (Some(p), Some(b)) => x.matmul(p.val()) + b.val().unsqueeze(),
            (None, _) => x,
        })
    }

    /// Run the rows of `bucket`, cut to their longest sequence; EOT features `[b, W]` before
    /// `ln_final`.
    fn run_bucket(
        &self,
        rows: &[Vec<u32>],
        eot: &[usize],
        bucket: &[usize],
        capture: Option<&mut Capture>,
        device: &Device,
    ) -> Tensor<2> {
        let b = bucket.len();
        let len = bucket.iter().map(|&r| eot[r] + 1).max().unwrap_or(1);
        let mut flat = Vec::with_capacity(b * len);
        for &r in bucket {
            flat.extend((0..len).map(|i| rows[r].get(i).copied().unwrap_or(0) as i64));
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, len]), device);
        let x = embedding(self.token_embedding.val(), ids); // [b, L, W]
        let w = x.dims()[2];
        let bag = self.transformer.resblocks.is_empty();
        // a tower without blocks is a bag of words: no positions
        let x = if bag {
            x
        } else {
            x + self
                .positional_embedding
                .val()
                .narrow(0, 0, len)
                .unsqueeze()
        };
        let x = self
            .transformer
            .forward(x, self.causal, "transformer", capture);
        if self.pool == TextPool::Mean {
            // mean over positions 0..=EOT as a [b, 1, L] × [b, L, W] product
            let mut weights = vec![0f32; b * len];
            for (i, &r) in bucket.iter().enumerate() {
                let n = eot[r] + 1;
                weights[i * len..i * len + n].fill(1.0 / n as f32);
            }
            let weights = Tensor::<3>::from_data(TensorData::new(weights, [b, 1, len]), device);
            return weights.matmul(x).reshape([b, w]);
        }
        let index: Vec<i64> = bucket
            .iter()
            .enumerate()
            .map(|(i, &r)| (i * len + eot[r]) as i64)
            .collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b]), device);
        x.reshape([b * len, w]).select(0, index) // [b, W]
    }
}

/// Rows per length bucket when a text batch is split by length.
const BUCKET: usize = 16;
