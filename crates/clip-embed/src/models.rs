//! `--model`: a checkpoint path, a training run's `checkpoints` folder, or `NAME:TAG` resolved
//! through the Hugging Face cache (downloading when there is a network).

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use clip_model::{Clip, ClipConfig};
use serde::Deserialize;

/// Why a model could not be resolved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Load(#[from] clip_model::LoadError),
    #[error(transparent)]
    Config(#[from] clip_model::ConfigError),
    #[error("{0}")]
    Resolve(String),
}

type Result<T> = std::result::Result<T, ModelError>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(ModelError::Resolve(format!($($t)*))) };
}

#[derive(Debug, Deserialize)]
struct Pretrained {
    model: String,
    tag: String,
    hf_hub: String,
    quick_gelu: bool,
}

fn pretrained() -> Vec<Pretrained> {
    // the shipped table is checked by a unit test; an unreadable one lists no tags
    serde_json::from_str(include_str!("../../../configs/pretrained.json")).unwrap_or_default()
}

/// `clip models`: presets and their pretrained tags.
pub fn listing() -> String {
    let table = pretrained();
    let mut out = String::new();
    for (name, _) in clip_model::config::PRESETS {
        let Ok(cfg) = clip_model::preset(name) else {
            continue;
        };
        let tags: Vec<&str> = table
            .iter()
            .filter(|p| p.model == *name)
            .map(|p| p.tag.as_str())
            .collect();
        out.push_str(&format!(
            "{name:<14} image {:>3}px  embed {:>4}  tags: {}\n",
            cfg.image_size(),
            cfg.embed_dim,
            if tags.is_empty() {
                "-".to_owned()
            } else {
                tags.join(", ")
            }
        ));
    }
    out
}

const WEIGHT_FILES: [&str; 2] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

fn hub_file(repo: &str) -> std::result::Result<PathBuf, String> {
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(repo.to_owned());
    if let Some(p) = WEIGHT_FILES.iter().find_map(|f| cached.get(f)) {
        return Ok(p);
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| e.to_string())?;
    let remote = api.model(repo.to_owned());
    let mut last = String::new();
    for f in WEIGHT_FILES {
        match remote.get(f) {
            Ok(p) => return Ok(p),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Resolve `NAME:TAG` to a local weights file and its config.
fn resolve_pretrained(spec: &str) -> Result<(PathBuf, ClipConfig)> {
    let Some((name, tag)) = spec.split_once(':') else {
        bail!("'{spec}' is not NAME:TAG");
    };
    let mut cfg = clip_model::preset(name)?;
    let table = pretrained();
    let base = name.trim_end_matches("-quickgelu");
    let Some(entry) = table
        .iter()
        .find(|p| p.model.eq_ignore_ascii_case(base) && p.tag == tag)
    else {
        let tags: Vec<&str> = table
            .iter()
            .filter(|p| p.model.eq_ignore_ascii_case(base))
            .map(|p| p.tag.as_str())
            .collect();
        bail!(
            "unknown pretrained tag '{tag}' for {name}; known tags: {}",
            tags.join(", ")
        );
    };
    cfg.quick_gelu |= entry.quick_gelu;
    match hub_file(&entry.hf_hub) {
        Ok(path) => Ok((path, cfg)),
        Err(why) => bail!(
            "model '{spec}' is not in the Hugging Face cache and could not be downloaded ({why}).\n\
             Offline, download {} from the Hugging Face Hub repository '{}' and pass its path to --model, \
             or place it in the cache ({}, or set HF_HOME)",
            WEIGHT_FILES.join(" or "),
            entry.hf_hub,
            hf_hub::Cache::from_env().path().display()
        ),
    }
}

/// Load a model from a path or `NAME:TAG`.
pub fn load(spec: &str, device: &Device) -> Result<Clip> {
    let path = Path::new(spec);
    if path.exists() {
        // a training run's folder, its `checkpoints` folder or `checkpoints/latest` pointer: the
        // newest step
        let pointer = if path.join("checkpoints/latest").is_file() {
            path.join("checkpoints/latest")
        } else if path.is_dir() {
            path.join("latest")
        } else {
            path.to_path_buf()
        };
        if pointer.file_name().is_some_and(|n| n == "latest")
            && pointer.is_file()
            && let Ok(step) = std::fs::read_to_string(&pointer)
            && let Some(dir) = pointer.parent().map(|d| d.join(step.trim()))
            && dir.is_dir()
        {
            return Ok(clip_model::load_clip(&dir, None, device)?);
        }
        return Ok(clip_model::load_clip(path, None, device)?);
    }
    if spec.contains(':') && !spec.contains('/') {
        let (file, cfg) = resolve_pretrained(spec)?;
        return Ok(clip_model::load_clip(&file, Some(&cfg), device)?);
    }
    if clip_model::preset(spec).is_ok() {
        let table = pretrained();
        let tags: Vec<String> = table
            .iter()
            .filter(|p| p.model.eq_ignore_ascii_case(spec))
            .map(|p| format!("{spec}:{}", p.tag))
            .collect();
        bail!(
            "'{spec}' names an architecture, not weights; pick pretrained weights such as {}",
            tags.join(", ")
        );
    }
    bail!(
        "unknown model '{spec}': it is not a file or directory, nor NAME:TAG; known models: {} (see `clip models` for tags)",
        clip_model::preset_names()
    )
}

/// Convert `spec` (anything [`load`] takes) to `out/model.safetensors` + `out/config.json`.
/// Refuses to write into its own input or over existing files, before loading anything.
pub fn convert(spec: &str, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let source = Path::new(spec);
    if source.exists() {
        clip_data::out::check_not_input(out, &[source.to_path_buf()])
            .map_err(|e| ModelError::Resolve(e.to_string()))?;
    }
    let (weights, config) = (out.join("model.safetensors"), out.join("config.json"));
    for f in [&weights, &config] {
        if f.exists() {
            bail!(
                "'{}' already exists; converting would overwrite it — choose another --out",
                f.display()
            );
        }
    }
    let clip = load(spec, &clip_model::default_device())?;
    clip_model::save_clip(&clip, out)?;
    Ok((weights, config))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_tables_parse() {
        assert!(super::pretrained().len() >= 50);
        for (name, _) in clip_model::config::PRESETS {
            clip_model::preset(name).unwrap();
        }
        assert!(super::listing().contains("ViT-B-32"));
    }
}
