//! The pretrained-tag table, `configs/pretrained.json`, generated from open_clip's own
//! (`tools/gen_configs.py`): per (model, tag) the Hub repository, whether it was trained with
//! QuickGELU, its image preprocessing, and the SHA-256 open_clip checks its release file against.
//! Tags are looked up as open_clip spells them (`_clean_tag`: lower case, `-` → `_`); a
//! `NAME-quickgelu` name takes exactly the QuickGELU tags, as open_clip lists them.

use std::sync::OnceLock;

use clip_model::ClipConfig;
use clip_model::config::PreprocessCfg;
use serde::Deserialize;

use super::{ModelError, Result};

/// One row of the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pretrained {
    /// open_clip's model name (without `-quickgelu`)
    pub model: String,
    pub tag: String,
    /// Hugging Face Hub repository
    pub hf_hub: String,
    /// The weights file, when open_clip's entry names one (else its default names)
    #[serde(default)]
    pub hf_file: Option<String>,
    /// Trained with QuickGELU (open_clip lists the tag under `NAME-quickgelu` too)
    pub quick_gelu: bool,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub interpolation: String,
    pub resize_mode: String,
    /// SHA-256 (or its prefix) of open_clip's release file of this tag, when its URL carries one
    #[serde(default)]
    pub sha256: Option<String>,
}

/// The rows. The shipped table is checked by a unit test; an unreadable one lists no tags.
pub fn pretrained() -> &'static [Pretrained] {
    static TABLE: OnceLock<Vec<Pretrained>> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("../../../../configs/pretrained.json"))
            .unwrap_or_default()
    })
}

/// open_clip's `_clean_tag`.
pub fn clean_tag(tag: &str) -> String {
    tag.to_lowercase().replace('-', "_")
}

/// The `-quickgelu` suffix split off: (base name, whether it was there).
pub fn split_quickgelu(name: &str) -> (&str, bool) {
    match name.strip_suffix("-quickgelu") {
        Some(base) => (base, true),
        None => (name, false),
    }
}

/// The tags open_clip lists under `name` (`NAME-quickgelu`: only the QuickGELU ones).
pub fn tags_of(name: &str) -> Vec<&'static str> {
    let (base, quick) = split_quickgelu(name);
    pretrained()
        .iter()
        .filter(|p| p.model.eq_ignore_ascii_case(base) && (p.quick_gelu || !quick))
        .map(|p| p.tag.as_str())
        .collect()
}

/// The row of `name:tag`, or an error naming the tags that fit.
pub fn find(name: &str, tag: &str) -> Result<&'static Pretrained> {
    let (base, quick_name) = split_quickgelu(name);
    let clean = clean_tag(tag);
    let Some(row) = pretrained()
        .iter()
        .find(|p| p.model.eq_ignore_ascii_case(base) && p.tag == clean)
    else {
        return Err(ModelError::Resolve(format!(
            "unknown pretrained tag '{tag}' for {name}; known tags: {}",
            tags_of(name).join(", ")
        )));
    };
    if quick_name && !row.quick_gelu {
        return Err(ModelError::Resolve(format!(
            "'{name}:{tag}' would run QuickGELU on weights trained with GELU (open_clip has no such pair): \
             use {}:{}; the tags of {name} (trained with QuickGELU) are: {}",
            row.model,
            row.tag,
            tags_of(name).join(", ")
        )));
    }
    Ok(row)
}

/// The row whose release file has this SHA-256 (64 hex digits).
pub fn by_sha256(hex: &str) -> Option<&'static Pretrained> {
    pretrained().iter().find(|p| {
        p.sha256
            .as_deref()
            .is_some_and(|s| s.len() >= 8 && hex.starts_with(&s.to_ascii_lowercase()))
    })
}

impl Pretrained {
    /// `NAME:TAG`
    pub fn spec(&self) -> String {
        format!("{}:{}", self.model, self.tag)
    }

    /// The tag's preprocessing (`None` when it is OpenAI's, so configs stay as they were).
    pub fn preprocess(&self) -> Result<Option<PreprocessCfg>> {
        let p: PreprocessCfg = serde_json::from_value(serde_json::json!({
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
        }))
        .map_err(|e| ModelError::Resolve(format!("{}: {e}", self.spec())))?;
        Ok((!p.is_openai()).then_some(p))
    }

    /// The model to build: the preset, the tag's activation and preprocessing.
    pub fn config(&self) -> Result<ClipConfig> {
        let mut cfg = clip_model::preset(&self.model)?;
        cfg.quick_gelu = self.quick_gelu;
        cfg.preprocess_cfg = self.preprocess()?;
        Ok(cfg)
    }

    /// The files to fetch, in open_clip's order (safetensors first).
    pub fn weight_files(&self) -> Vec<String> {
        match &self.hf_file {
            Some(f) => {
                let mut v = Vec::new();
                if f == "open_clip_pytorch_model.bin" {
                    v.push("open_clip_model.safetensors".to_owned());
                } else if let Some(stem) = f.strip_suffix(".bin").or(f.strip_suffix(".pth")) {
                    v.push(format!("{stem}.safetensors"));
                }
                v.push(f.clone());
                v
            }
            None => super::OPEN_CLIP_WEIGHTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_reads_and_every_row_builds() {
        assert!(pretrained().len() >= 70);
        for p in pretrained() {
            let cfg = p.config().unwrap();
            cfg.validate().unwrap();
        }
    }

    #[test]
    fn tags_are_cleaned_as_open_clip_does() {
        assert_eq!(clean_tag("LAION2B-S34B-B79K"), "laion2b_s34b_b79k");
        assert_eq!(
            find("ViT-B-32", "LAION2B-s34b-B79K").unwrap().tag,
            "laion2b_s34b_b79k"
        );
    }

    #[test]
    fn release_files_are_known_by_hash() {
        let p =
            by_sha256("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af").unwrap();
        assert_eq!((p.spec().as_str(), p.quick_gelu), ("ViT-B-32:openai", true));
        // open_clip's own releases: an 8-digit prefix, from the file name
        let p = by_sha256(&format!("00efa78f{}", "0".repeat(56))).unwrap();
        assert_eq!(
            (p.spec().as_str(), p.quick_gelu),
            ("ViT-B-16:laion400m_e31", false)
        );
        assert!(by_sha256(&"0".repeat(64)).is_none());
    }
}
