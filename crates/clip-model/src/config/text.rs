//! The text tower's configuration: open_clip's `text_cfg`, its pooling, projection and defaults.

use super::*;

/// Text tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    #[serde(default = "default_context")]
    pub context_length: usize,
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    pub width: usize,
    pub heads: usize,
    pub layers: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// The tokenizer (a Hugging Face tokenizer name; SigLIP's SentencePiece models). `None`:
    /// CLIP's BPE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_tokenizer_name: Option<String>,
    /// open_clip's `tokenizer_kwargs` (`clean`: `canonicalize` / `lower` / `whitespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Every token sees every other (SigLIP) instead of the causal mask.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_causal_mask: bool,
    /// `text_projection` is a Linear with a bias (`text.text_projection.weight` `[E, W]` + `.bias`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub proj_bias: bool,
    /// Which position's features are the text's: `argmax` (the EOT token, CLIP) or `last`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_type: Option<String>,
    /// LayerNorm settings (`eps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_kwargs: Option<NormKwargs>,
    /// Activation settings: `{"approximate": "tanh"}` (SigLIP2) selects GELU's tanh form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    /// `linear` (default) or `none` (no text projection: the pooled features are the embedding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proj_type: Option<String>,
}

/// open_clip's `norm_kwargs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormKwargs {
    pub eps: f64,
}

/// How the text tower reads one feature vector off the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPool {
    /// the first position holding the row's highest id (CLIP's EOT)
    Argmax,
    /// the last position of the padded context (SigLIP)
    Last,
    /// the mean over every token up to the EOT (a continuous bag of words when `layers` is 0:
    /// Figure 2's C-BoW text encoder, "mean of token embeddings → linear"; our extension)
    Mean,
}

impl TextConfig {
    pub fn pool(&self) -> Result<TextPool, ConfigError> {
        match self.pool_type.as_deref() {
            None | Some("argmax") => Ok(TextPool::Argmax),
            Some("last") => Ok(TextPool::Last),
            Some("mean") => Ok(TextPool::Mean),
            Some(other) => Err(ConfigError::Invalid(format!(
                "text_cfg.pool_type '{other}' is not supported (argmax, last, mean)"
            ))),
        }
    }

    /// LayerNorm epsilon of the text tower.
    pub fn norm_eps(&self) -> f64 {
        self.norm_kwargs.as_ref().map_or(1e-5, |n| n.eps)
    }

    /// Whether `act_kwargs` asks for GELU's tanh approximation (the only setting supported).
    pub fn gelu_tanh(&self) -> Result<bool, ConfigError> {
        gelu_tanh("text_cfg", self.act_kwargs.as_ref())
    }

    /// The projection after pooling.
    pub fn projection(&self) -> Result<TextProj, ConfigError> {
        match self.proj_type.as_deref() {
            None | Some("linear") if self.proj_bias => Ok(TextProj::Linear),
            None | Some("linear") => Ok(TextProj::Matrix),
            Some("none") => Ok(TextProj::None),
            Some(other) => Err(ConfigError::Invalid(format!(
                "text_cfg.proj_type '{other}' is not supported (linear, none)"
            ))),
        }
    }
}

/// Whether `act_kwargs` (of `tower`) selects GELU's tanh form; anything but `approximate` is
/// refused.
pub(super) fn gelu_tanh(
    tower: &str,
    kw: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<bool, ConfigError> {
    let Some(kw) = kw else {
        return Ok(false);
    };
    match (kw.len(), kw.get("approximate").and_then(|v| v.as_str())) {
        (0, _) => Ok(false),
        (1, Some("tanh")) => Ok(true),
        (1, Some("none")) => Ok(false),
        _ => Err(ConfigError::Invalid(format!(
            "{tower}.act_kwargs {} is not supported (only {{\"approximate\": \"tanh\"}})",
            serde_json::Value::Object(kw.clone())
        ))),
    }
}

/// The text tower's projection: `text_projection` `[W, E]` (CLIP), a Linear with bias (SigLIP),
/// or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextProj {
    Matrix,
    Linear,
    None,
}

pub(super) fn default_head_width() -> usize {
    64
}
pub(super) fn default_mlp_ratio() -> f64 {
    4.0
}
pub(super) fn default_context() -> usize {
    77
}
pub(super) fn default_vocab() -> usize {
    49408
}

impl Default for TextConfig {
    fn default() -> TextConfig {
        TextConfig {
            context_length: default_context(),
            vocab_size: default_vocab(),
            width: 512,
            heads: 8,
            layers: 12,
            mlp_ratio: default_mlp_ratio(),
            hf_tokenizer_name: None,
            tokenizer_kwargs: None,
            no_causal_mask: false,
            proj_bias: false,
            pool_type: None,
            norm_kwargs: None,
            act_kwargs: None,
            proj_type: None,
        }
    }
}
