//! open_clip's `HFTokenizer` (SigLIP, SigLIP2): the text is cleaned as open_clip cleans it
//! (`canonicalize`: ftfy + HTML unescape, `_` → space, ASCII punctuation removed, lower-cased,
//! whitespace collapsed; or `lower` / `whitespace`), then encoded by the model's Hugging Face
//! tokenizer (`tokenizer.json`: SentencePiece Unigram for SigLIP, Gemma's BPE for SigLIP2) with its
//! special tokens, truncated to the context and right-padded with the pad token to exactly the
//! context length — `tokenizer(texts, max_length=C, padding="max_length", truncation=True)`.
//!
//! The tokenizer itself is the `tokenizers` crate (Hugging Face's own Rust implementation, the one
//! `transformers`' fast tokenizers run); only open_clip's cleaning and call settings are ours.

use std::path::{Path, PathBuf};

use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::TokenizeError;
use crate::clean::{basic_clean, whitespace_clean};

/// open_clip's `clean` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clean {
    Canonicalize,
    Lower,
    Whitespace,
}

impl Clean {
    pub fn parse(name: &str) -> Result<Clean, HfError> {
        match name {
            "canonicalize" => Ok(Clean::Canonicalize),
            "lower" => Ok(Clean::Lower),
            "whitespace" => Ok(Clean::Whitespace),
            other => Err(HfError::Settings(format!(
                "tokenizer_kwargs.clean '{other}' is not one of canonicalize, lower, whitespace"
            ))),
        }
    }

    pub fn apply(self, text: &str) -> String {
        let text = basic_clean(text);
        match self {
            Clean::Whitespace => whitespace_clean(&text),
            Clean::Lower => whitespace_clean(&text).to_lowercase(),
            Clean::Canonicalize => {
                // big_vision's canonicalize_text: `_` → space, string.punctuation removed, lower,
                // whitespace runs → one space, stripped
                let text: String = text
                    .replace('_', " ")
                    .chars()
                    .filter(|c| !c.is_ascii_punctuation())
                    .collect();
                text.to_lowercase()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("cannot read the tokenizer '{path}': {msg}")]
    Read { path: String, msg: String },
    #[error("{0}")]
    Settings(String),
}

/// A Hugging Face tokenizer called as open_clip's `HFTokenizer` calls it.
pub struct HfTokenizer {
    /// pads to the context, never truncates (so over-long texts are seen)
    inner: tokenizers::Tokenizer,
    /// the same, truncating to the context as open_clip does
    cut: tokenizers::Tokenizer,
    clean: Clean,
    context_length: usize,
    /// `strip_sep_token`: the sep token's id, replaced by 0
    strip_sep: Option<u32>,
    pub path: PathBuf,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("path", &self.path)
            .field("clean", &self.clean)
            .field("context_length", &self.context_length)
            .finish()
    }
}

/// A special token named in `tokenizer_config.json` / `special_tokens_map.json`: a string or
/// `{"content": …}`.
fn token_name(v: &serde_json::Value) -> Option<String> {
    v.as_str()
        .map(str::to_owned)
        .or_else(|| v.get("content")?.as_str().map(str::to_owned))
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, HfError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| HfError::Read {
                path: path.display().to_string(),
                msg: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HfError::Read {
            path: path.display().to_string(),
            msg: e.to_string(),
        }),
    }
}

impl HfTokenizer {
    /// Load `dir/tokenizer.json` (with `tokenizer_config.json` / `special_tokens_map.json` for the
    /// pad token and padding side) and open_clip's `tokenizer_kwargs` (`clean`, `strip_sep_token`).
    pub fn from_dir(
        dir: &Path,
        context_length: usize,
        kwargs: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<HfTokenizer, HfError> {
        let path = dir.join("tokenizer.json");
        let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| HfError::Read {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let mut clean = Clean::Whitespace; // HFTokenizer's default
        let mut strip_sep = false;
        for (key, value) in kwargs.into_iter().flatten() {
            match (key.as_str(), value) {
                ("clean", serde_json::Value::String(c)) => clean = Clean::parse(c)?,
                ("strip_sep_token", serde_json::Value::Bool(b)) => strip_sep = *b,
                (other, v) => {
                    return Err(HfError::Settings(format!(
                        "tokenizer_kwargs.{other} = {v} is not supported (clean, strip_sep_token)"
                    )));
                }
            }
        }
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let specials = read_json(&dir.join("special_tokens_map.json"))?;
        let named = |key: &str| {
            config
                .as_ref()
                .and_then(|c| c.get(key))
                .and_then(token_name)
                .or_else(|| specials.as_ref()?.get(key).and_then(token_name))
        };
        let pad_token = named("pad_token").ok_or_else(|| {
            HfError::Settings(format!(
                "the tokenizer in '{}' names no pad token (tokenizer_config.json / special_tokens_map.json), \
                 so rows cannot be padded as open_clip pads them",
                dir.display()
            ))
        })?;
        let pad_id = inner.token_to_id(&pad_token).ok_or_else(|| {
            HfError::Settings(format!("pad token '{pad_token}' is not in the vocabulary"))
        })?;
        let left = config
            .as_ref()
            .and_then(|c| c.get("padding_side"))
            .and_then(|v| v.as_str())
            == Some("left");
        let strip_sep = if strip_sep {
            let sep = named("sep_token").ok_or_else(|| {
                HfError::Settings(
                    "strip_sep_token is set but the tokenizer has no sep token".into(),
                )
            })?;
            Some(inner.token_to_id(&sep).ok_or_else(|| {
                HfError::Settings(format!("sep token '{sep}' is not in the vocabulary"))
            })?)
        } else {
            None
        };
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context_length),
            direction: if left {
                PaddingDirection::Left
            } else {
                PaddingDirection::Right
            },
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        let mut cut = inner.clone();
        cut.with_truncation(Some(TruncationParams {
            max_length: context_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| HfError::Settings(e.to_string()))?;
        inner
            .with_truncation(None)
            .map_err(|e| HfError::Settings(e.to_string()))?;
        Ok(HfTokenizer {
            inner,
            cut,
            clean,
            context_length,
            strip_sep,
            path,
        })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of one text: `context_length` of them. A text whose tokens (with the special
    /// tokens) do not fit is an error unless `truncate` (then cut as open_clip cuts it).
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Vec<u32>, TokenizeError> {
        let cleaned = self.clean.apply(text);
        let fail = |e: tokenizers::Error| TokenizeError::Backend(e.to_string());
        let full = self.inner.encode(cleaned.as_str(), true).map_err(fail)?;
        let len = full.get_ids().len();
        let ids = if len > self.context_length {
            if !truncate {
                return Err(TokenizeError::TooLong {
                    tokens: len,
                    context_length: self.context_length,
                    preview: text.chars().take(60).collect(),
                });
            }
            self.cut
                .encode(cleaned.as_str(), true)
                .map_err(fail)?
                .get_ids()
                .to_vec()
        } else {
            full.get_ids().to_vec()
        };
        Ok(ids
            .into_iter()
            .map(|id| match self.strip_sep {
                Some(sep) if id == sep => 0,
                _ => id,
            })
            .collect())
    }
}

/// The tokenizer a model's text tower was trained with: CLIP's BPE, or a Hugging Face tokenizer
/// (SigLIP). Rows come out as the model's `encode_text` takes them.
#[derive(Debug, Clone)]
pub enum TextTokenizer {
    Clip,
    Hf(std::sync::Arc<HfTokenizer>),
}

impl TextTokenizer {
    /// One text → ids for a model of context `ctx` (over-long: an error unless `truncate`).
    pub fn encode(
        &self,
        text: &str,
        ctx: usize,
        truncate: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        match self {
            TextTokenizer::Clip => {
                crate::Tokenizer::global().encode_with_specials(text, ctx, truncate)
            }
            TextTokenizer::Hf(t) => t.encode(text, truncate),
        }
    }
}
