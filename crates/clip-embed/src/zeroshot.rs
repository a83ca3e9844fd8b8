//! Zero-shot classifiers, built and scored in one place: per class, the templates are filled with
//! the class name, encoded, L2-normalised, averaged and re-normalised (prompt ensembling in
//! embedding space, as OpenAI's notebook and open_clip's `build_zero_shot_classifier`); images are
//! scored by cosine similarity. A classifier can be saved (safetensors with the model fingerprint
//! and class list) and loaded back only for the same model and classes.

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use clip_model::source::to_vec;
use clip_model::{Clip, l2_normalize};
use clip_tokenizer::TextTokenizer;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::linalg;

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error(transparent)]
    Text(#[from] clip_model::text::TextInputError),
    #[error("a prompt cannot be tokenized: {0}")]
    Tokenize(#[from] clip_tokenizer::TokenizeError),
    #[error("cannot read classifier '{path}': {msg}")]
    Read { path: String, msg: String },
    #[error("cannot write classifier '{path}': {msg}")]
    Write { path: String, msg: String },
    #[error(
        "classifier '{path}' was built with another model ({theirs}); this model is {ours} — rebuild it with --save-classifier"
    )]
    OtherModel {
        path: String,
        theirs: String,
        ours: String,
    },
    #[error(
        "classifier '{path}' has {saved} classes that differ from this class list ({ours} classes)"
    )]
    OtherClasses {
        path: String,
        saved: usize,
        ours: usize,
    },
    #[error(
        "classifier '{path}': tensor \"classifier\" is {dtype} {found:?}; expected F32 [{classes}, {dim}] (classes × embedding dimension)"
    )]
    Shape {
        path: String,
        dtype: String,
        found: Vec<usize>,
        classes: usize,
        dim: usize,
    },
}

/// A zero-shot classifier: one unit-length row per class.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    pub classes: Vec<String>,
    /// the templates it was built from (empty when loaded from a file without them)
    pub templates: Vec<String>,
    pub dim: usize,
    /// `[classes, dim]` row-major
    pub weights: Vec<f32>,
}

/// Prompts encoded per forward pass.
const PROMPT_CHUNK: usize = 256;

impl Classifier {
    /// Build from `templates` × `classes` with CLIP's tokenizer (over-long prompts truncated, the
    /// last token EOT).
    pub fn build(
        clip: &Clip,
        classes: &[String],
        templates: &[String],
    ) -> Result<Classifier, ClassifierError> {
        Self::build_with(clip, &TextTokenizer::Clip, classes, templates)
    }

    /// [`Classifier::build`] with the model's own tokenizer.
    pub fn build_with(
        clip: &Clip,
        tok: &TextTokenizer,
        classes: &[String],
        templates: &[String],
    ) -> Result<Classifier, ClassifierError> {
        Self::build_mapped(clip, tok, classes, templates, &|f| f)
    }

    /// [`Classifier::build_with`] with the prompts' text features mapped (a projection head
    /// trained beside the CLIP) before normalisation.
    pub fn build_mapped(
        clip: &Clip,
        tok: &TextTokenizer,
        classes: &[String],
        templates: &[String],
        map: &dyn Fn(Tensor<2>) -> Tensor<2>,
    ) -> Result<Classifier, ClassifierError> {
        let ctx = clip.config.text_cfg.context_length;
        let prompts: Vec<Vec<u32>> = classes
            .iter()
            .flat_map(|c| templates.iter().map(move |t| t.replace("{}", c)))
            .map(|p| tok.encode(&p, ctx, true))
            .collect::<Result<_, _>>()?;
        let mut parts = Vec::new();
        for chunk in prompts.chunks(PROMPT_CHUNK) {
            parts.push(l2_normalize(map(clip.encode_text(chunk)?).detach()));
        }
        let dim = clip.config.embed_dim;
        let (c, t) = (classes.len(), templates.len());
        let weights = if parts.is_empty() {
            Vec::new()
        } else {
            let text = Tensor::cat(parts, 0); // [C·T, D]
            to_vec(&l2_normalize(
                text.reshape([c, t, dim]).mean_dim(1).reshape([c, dim]), // [C, D]
            ))
        };
        Ok(Classifier {
            classes: classes.to_vec(),
            templates: templates.to_vec(),
            dim,
            weights,
        })
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Cosine similarities `[n, classes]` of `n` L2-normalised image features `[n, dim]`.
    pub fn scores(&self, features: &[f32], n: usize) -> Vec<f32> {
        linalg::scores(features, n, self.dim, &self.weights, &vec![0.0; self.len()])
    }

    /// Class probabilities: softmax over classes of `logit_scale · cosine` (as `clip.load`'s
    /// `logits_per_image.softmax(-1)`); for a model with a logit bias (SigLIP), each class's own
    /// `σ(logit_scale · cosine + bias)`, as open_clip's and Hugging Face's SigLIP examples do.
    pub fn probabilities(
        &self,
        features: &[f32],
        n: usize,
        logit_scale: f32,
        logit_bias: Option<f32>,
    ) -> Vec<f32> {
        let mut s = self.scores(features, n);
        if let Some(b) = logit_bias {
            for v in s.iter_mut() {
                *v = 1.0 / (1.0 + (-(*v * logit_scale + b)).exp());
            }
            return s;
        }
        for row in s.chunks_mut(self.len().max(1)) {
            let max = row
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b * logit_scale));
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v * logit_scale - max).exp();
                sum += *v;
            }
            row.iter_mut().for_each(|v| *v /= sum);
        }
        s
    }

    /// Save with the model fingerprint `model` and the class and template lists.
    pub fn save(&self, path: &Path, model: &str) -> Result<(), ClassifierError> {
        let err = |msg: String| ClassifierError::Write {
            path: path.display().to_string(),
            msg,
        };
        let bytes: Vec<u8> = self.weights.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![self.len(), self.dim], &bytes)
            .map_err(|e| err(e.to_string()))?;
        let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
        let meta: HashMap<String, String> = [
            ("model".to_string(), model.to_string()),
            ("classes".to_string(), json(&self.classes)),
            ("templates".to_string(), json(&self.templates)),
        ]
        .into();
        let out = safetensors::serialize([("classifier", view)], Some(meta))
            .map_err(|e| err(e.to_string()))?;
        clip_data::out::write_atomic(path, &out).map_err(|e| err(e.to_string()))
    }

    /// Load a classifier saved for model `model` with exactly `classes`, of dimension `dim`.
    pub fn load(
        path: &Path,
        model: &str,
        classes: &[String],
        dim: usize,
    ) -> Result<Classifier, ClassifierError> {
        let p = path.display().to_string();
        let err = |msg: String| ClassifierError::Read {
            path: p.clone(),
            msg,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("not a safetensors file ({e})")))?;
        let m = meta.metadata().clone().unwrap_or_default();
        let theirs = m.get("model").map_or("unknown", |s| s.as_str());
        if theirs != model {
            return Err(ClassifierError::OtherModel {
                path: p,
                theirs: theirs.into(),
                ours: model.into(),
            });
        }
        let saved: Vec<String> = serde_json::from_str(m.get("classes").map_or("[]", |s| s))
            .map_err(|e| err(format!("class list: {e}")))?;
        if saved != classes {
            return Err(ClassifierError::OtherClasses {
                path: p,
                saved: saved.len(),
                ours: classes.len(),
            });
        }
        let templates: Vec<String> = m
            .get("templates")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
        let t = st.tensor("classifier").map_err(|e| err(e.to_string()))?;
        if t.dtype() != Dtype::F32 || t.shape() != [classes.len(), dim] {
            return Err(ClassifierError::Shape {
                path: p,
                dtype: format!("{:?}", t.dtype()),
                found: t.shape().to_vec(),
                classes: classes.len(),
                dim,
            });
        }
        let weights = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Classifier {
            classes: classes.to_vec(),
            templates,
            dim,
            weights,
        })
    }
}

/// Rank of the true class in each row of `scores` (`[n, classes]`): the number of classes scoring
/// strictly higher (0 = top-1).
pub fn ranks(scores: &[f32], classes: usize, labels: &[usize]) -> Vec<usize> {
    scores
        .chunks(classes.max(1))
        .zip(labels)
        .map(|(row, &l)| row.iter().filter(|&&s| s > row[l]).count())
        .collect()
}

/// Share of rows whose true class ranks within the top `k`.
pub fn top_k(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}
