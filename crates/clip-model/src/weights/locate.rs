//! Which file of a folder holds the weights, which config describes them, and what the
//! architecture is when nothing says: a config beside the weights (`open_clip_config.json`, ours,
//! a Hugging Face `config.json`), a TorchScript archive's own code, a preset whose shapes match, or
//! what the caller states ([`LoadOptions`]). What cannot be known is an error naming how to say it,
//! never a guess: a state dict's tensors look the same under QuickGELU and GELU, and its shapes do
//! not give the number of attention heads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::Device;

use super::{Format, Loaded, display, read_safetensors_weights, read_torch_zip_code, write_atomic};
use super::{ScriptCode, ZipContents, write_safetensors};
use crate::clip::Clip;
use crate::config::{
    ClipConfig, PRESETS, TextConfig, VisionConfig, VisionLayers, mlp_ratio_of, mlp_width,
};
use crate::error::LoadError;
use crate::hf::{has_hf_keys, hf_config, hf_to_openai, is_hf_config};
use crate::source::{Checkpoint, RawTensor};

/// Weight files of a folder, in the order open_clip's `_find_checkpoint_in_dir` prefers them (a
/// timm repository's `model.safetensors` is the image tower alone: the open_clip files come
/// first), then ours and OpenAI's names.
pub const WEIGHT_FILES: &[&str] = &[
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
    "model.pt",
];

/// The weights file of a checkpoint folder ([`WEIGHT_FILES`] order).
pub fn weights_in_dir(dir: &Path) -> Result<PathBuf, LoadError> {
    WEIGHT_FILES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            LoadError::format(
                &display(dir),
                format!(
                    "no weights found in this directory (expected one of {})",
                    WEIGHT_FILES.join(", ")
                ),
            )
        })
}

fn read_text(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        file: display(path),
        source,
    })
}

/// The config beside a weights file, and its path. For open_clip/OpenAI keys:
/// `open_clip_config.json`, then `config.json`, then `<stem>.json` — each only when it is an
/// open_clip or clip-rs config (`model_cfg`, or `embed_dim` + `vision_cfg`); a transformers or timm
/// `config.json` in the same folder describes other weights and is passed over. For transformers
/// keys: the Hugging Face `config.json`. A config that is ours is read strictly: an unknown field is
/// an error (it would change the model).
fn config_beside(weights: &Path, hf_keys: bool) -> Result<Option<(ClipConfig, String)>, LoadError> {
    let dir = weights.parent().unwrap_or(Path::new("."));
    if hf_keys {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Ok(None);
        }
        let text = read_text(&path)?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| LoadError::format(&display(&path), format!("invalid JSON ({e})")))?;
        if !is_hf_config(&value) {
            return Ok(None);
        }
        return Ok(Some((hf_config(&text, &display(&path))?, display(&path))));
    }
    let mut candidates = vec![dir.join("open_clip_config.json"), dir.join("config.json")];
    if let Some(stem) = weights.file_stem() {
        candidates.push(dir.join(format!("{}.json", stem.to_string_lossy())));
    }
    for c in candidates {
        if !c.is_file() {
            continue;
        }
        let text = read_text(&c)?;
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Err(LoadError::format(&display(&c), "invalid JSON"));
        };
        let ours = value.get("model_cfg").is_some()
            || (value.get("embed_dim").is_some() && value.get("vision_cfg").is_some());
        if ours {
            let cfg = ClipConfig::from_json(&text)
                .map_err(|e| LoadError::format(&display(&c), e.to_string()))?;
            return Ok(Some((cfg, display(&c))));
        }
    }
    Ok(None)
}

/// A weights file: safetensors by extension, else a PyTorch zip.
fn read_weights_file(path: &Path) -> Result<ZipContents, LoadError> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        Ok((read_safetensors_weights(path)?, Format::Safetensors, None))
    } else {
        read_torch_zip_code(path)
    }
}

/// Tensors that some exporters save but that are not parameters.
fn drop_non_parameters(t: &mut BTreeMap<String, RawTensor>) {
    t.retain(|k, _| {
        !(k.ends_with("attn_mask")
            || k == "input_resolution"
            || k == "context_length"
            || k == "vocab_size"
            || k.ends_with("position_ids"))
    });
}

/// Read any supported checkpoint (file or directory), with the config beside it.
pub fn read_checkpoint(path: &Path) -> Result<Loaded, LoadError> {
    read_checkpoint_with(path, true)
}

/// Read a checkpoint; `read_config`: also read the config beside it (not wanted when the caller
/// supplies the architecture: a config it does not need must not stop the load).
pub fn read_checkpoint_with(path: &Path, read_config: bool) -> Result<Loaded, LoadError> {
    let weights = if path.is_dir() {
        weights_in_dir(path)?
    } else {
        path.to_path_buf()
    };
    let file = display(&weights);
    let (mut tensors, mut format, script) = read_weights_file(&weights)?;
    let hf_keys = has_hf_keys(tensors.keys());
    let (mut config, mut config_file) = match format {
        Format::TorchScript => (None, None),
        _ if read_config => config_beside(&weights, hf_keys)?.unzip(),
        _ => (None, None),
    };
    if hf_keys {
        tensors = hf_to_openai(tensors, &file)?;
        format = Format::HuggingFace;
    }
    drop_non_parameters(&mut tensors);
    if let Some(code) = script.filter(|_| read_config) {
        config = script_config(&tensors, &file, code);
        config_file = None;
    }
    Ok(Loaded {
        tensors,
        config,
        config_file,
        code_quick_gelu: script.and_then(|s| s.quick_gelu),
        format,
        file,
    })
}

/// A TorchScript archive's architecture: OpenAI's (traced from `clip.model`) by `build_model`'s
/// rules, others by a preset whose shapes match, with the activation its code runs. `None` when
/// that cannot be told (the load then says what to state).
fn script_config(
    t: &BTreeMap<String, RawTensor>,
    file: &str,
    code: ScriptCode,
) -> Option<ClipConfig> {
    let quick = code.quick_gelu.or(code.openai.then_some(true))?;
    let mut cfg = if code.openai {
        infer_config(t, file).ok()?
    } else {
        matching_preset(&shapes_of(t, file).ok()?)?.1
    };
    cfg.quick_gelu = quick;
    Some(cfg)
}

fn dim(
    t: &BTreeMap<String, RawTensor>,
    key: &str,
    i: usize,
    file: &str,
) -> Result<usize, LoadError> {
    t.get(key)
        .and_then(|x| x.shape.get(i).copied())
        .ok_or_else(|| LoadError::Architecture {
            file: file.to_owned(),
            msg: format!("tensor '{key}' is missing"),
        })
}

/// The architecture by OpenAI's `build_model` rules: sizes from the tensor shapes, 64-wide
/// attention heads, QuickGELU. Right for OpenAI's checkpoints; for others the heads and the
/// activation are guesses (see [`resolve_config`]).
pub fn infer_config(t: &BTreeMap<String, RawTensor>, file: &str) -> Result<ClipConfig, LoadError> {
    let cfg = shapes_of(t, file)?;
    cfg.validate().map_err(|e| LoadError::Architecture {
        file: file.to_owned(),
        msg: e.to_string(),
    })?;
    Ok(cfg)
}

/// An error unless the tensors are a CLIP's (with a hint for a timm image tower).
fn check_clip(t: &BTreeMap<String, RawTensor>, file: &str) -> Result<(), LoadError> {
    let known = [
        "token_embedding.weight",
        "visual.conv1.weight",
        "text.token_embedding.weight", // open_clip's CustomTextCLIP (SigLIP)
        "visual.trunk.patch_embed.proj.weight",
    ];
    if !known.iter().any(|k| t.contains_key(*k)) {
        let timm = t.keys().any(|k| {
            k.starts_with("patch_embed.") || k.starts_with("blocks.") || k.starts_with("stem.")
        });
        return Err(LoadError::Architecture {
            file: file.to_owned(),
            msg: if timm {
                "it is a timm image-tower checkpoint (a timm repository's model.safetensors), not a whole CLIP: use the repository's open_clip_model.safetensors or open_clip_pytorch_model.bin".into()
            } else {
                "it has neither 'token_embedding.weight' nor 'visual.conv1.weight': not a CLIP checkpoint".into()
            },
        });
    }
    Ok(())
}

/// The sizes in the tensor shapes, with `build_model`'s 64-wide heads (not validated: the heads
/// may not divide the widths).
fn shapes_of(t: &BTreeMap<String, RawTensor>, file: &str) -> Result<ClipConfig, LoadError> {
    check_clip(t, file)?;
    if t.contains_key("text.token_embedding.weight")
        || t.contains_key("visual.trunk.patch_embed.proj.weight")
    {
        return Err(LoadError::Architecture {
            file: file.to_owned(),
            msg: "it is an open_clip CustomTextCLIP (SigLIP-style: text tower under `text.`, timm image trunk) \
                  with no config beside it, and its sizes cannot be read off its tensors; pass --arch NAME \
                  (e.g. ViT-B-16-SigLIP) or put its open_clip_config.json beside it"
                .into(),
        });
    }
    let count = |prefix: &str| {
        let mut idx: Vec<&str> = t
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter_map(|r| r.split('.').next())
            .collect();
        idx.sort();
        idx.dedup();
        idx.len()
    };
    let vision_cfg = if t.contains_key("visual.proj") {
        let width = dim(t, "visual.conv1.weight", 0, file)?;
        let patch = dim(t, "visual.conv1.weight", 3, file)?;
        let grid = ((dim(t, "visual.positional_embedding", 0, file)?.saturating_sub(1)) as f64)
            .sqrt()
            .round() as usize;
        VisionConfig {
            image_size: patch * grid,
            layers: VisionLayers::Vit(count("visual.transformer.resblocks.")),
            width,
            patch_size: Some(patch),
            head_width: 64,
            mlp_ratio: mlp_ratio_of(
                dim(t, "visual.transformer.resblocks.0.mlp.c_fc.weight", 0, file)?,
                width,
            ),
            ..Default::default()
        }
    } else {
        let layers = [1, 2, 3, 4].map(|b| count(&format!("visual.layer{b}.")));
        let out = ((dim(t, "visual.attnpool.positional_embedding", 0, file)?.saturating_sub(1))
            as f64)
            .sqrt()
            .round() as usize;
        VisionConfig {
            image_size: out * 32,
            layers: VisionLayers::ResNet(layers),
            width: dim(t, "visual.layer1.0.conv1.weight", 0, file)?,
            patch_size: None,
            head_width: 64,
            mlp_ratio: 4.0,
            ..Default::default()
        }
    };
    let tw = dim(t, "ln_final.weight", 0, file)?;
    let cfg = ClipConfig {
        embed_dim: dim(t, "text_projection", 1, file)?,
        vision_cfg,
        text_cfg: TextConfig {
            context_length: dim(t, "positional_embedding", 0, file)?,
            vocab_size: dim(t, "token_embedding.weight", 0, file)?,
            width: tw,
            heads: (tw / 64).max(1),
            layers: count("transformer.resblocks."),
            mlp_ratio: mlp_ratio_of(
                dim(t, "transformer.resblocks.0.mlp.c_fc.weight", 0, file)?,
                tw,
            ),
            ..Default::default()
        },
        quick_gelu: true,
        preprocess_cfg: None,
        init_logit_bias: None,
        init_logit_scale: None,
        custom_text: false,
    };
    Ok(cfg)
}

/// Whether two configs build tensors of the same shapes (heads and activation aside, which shapes
/// do not show).
fn same_shapes(a: &ClipConfig, b: &ClipConfig) -> bool {
    let (va, vb, ta, tb) = (&a.vision_cfg, &b.vision_cfg, &a.text_cfg, &b.text_cfg);
    let vision_mlp = |v: &VisionConfig| match v.layers {
        VisionLayers::Vit(_) => mlp_width(v.width, v.mlp_ratio),
        VisionLayers::ResNet(_) => 0,
    };
    a.embed_dim == b.embed_dim
        && va.image_size == vb.image_size
        && va.layers == vb.layers
        && va.width == vb.width
        && va.patch_size == vb.patch_size
        && vision_mlp(va) == vision_mlp(vb)
        && ta.context_length == tb.context_length
        && ta.vocab_size == tb.vocab_size
        && ta.width == tb.width
        && ta.layers == tb.layers
        && mlp_width(ta.width, ta.mlp_ratio) == mlp_width(tb.width, tb.mlp_ratio)
}

/// The CLIP-form preset (name, config) whose tensors have these shapes, if any. (SigLIP presets
/// have other tensor names and are never inferred from shapes.)
pub fn matching_preset(shapes: &ClipConfig) -> Option<(&'static str, ClipConfig)> {
    PRESETS.iter().find_map(|(name, json)| {
        let cfg = ClipConfig::from_json(json).ok()?;
        (cfg.vision_cfg.timm_model_name.is_none() && same_shapes(&cfg, shapes))
            .then_some((*name, cfg))
    })
}

/// What the caller states about a checkpoint (the command line's `--arch`, `--quick-gelu`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// The architecture to build instead of the one the checkpoint states (a preset, a pretrained
    /// tag's, a config file's); the configs beside the weights are then not read.
    pub config: Option<ClipConfig>,
    /// The activation, for checkpoints that do not state it (bare state dicts). Overrides
    /// [`LoadOptions::config`]'s; a checkpoint that states the other one is refused.
    pub quick_gelu: Option<bool>,
}

fn act(quick: bool) -> &'static str {
    if quick { "QuickGELU" } else { "GELU" }
}

/// The architecture to build `loaded` with, from the caller's statement or the checkpoint's;
/// an error naming what to state when neither says (see the module documentation).
pub fn resolve_config(loaded: &Loaded, opts: &LoadOptions) -> Result<ClipConfig, LoadError> {
    let file = &loaded.file;
    check_clip(&loaded.tensors, file)?;
    let contradiction = |said: &str, quick: bool, fix: &str| {
        LoadError::format(
            file,
            format!(
                "{said} {}, but {} was asked for; {fix}",
                act(!quick),
                act(quick)
            ),
        )
    };
    if let Some(c) = &opts.config {
        let mut c = c.clone();
        if let Some(q) = opts.quick_gelu {
            c.quick_gelu = q;
        }
        if let Some(code) = loaded.code_quick_gelu.filter(|&q| q != c.quick_gelu) {
            return Err(contradiction(
                "the TorchScript archive's code runs",
                c.quick_gelu,
                &format!(
                    "use the {} variant of the architecture (--arch NAME{} or --quick-gelu {code})",
                    act(code),
                    if code {
                        "-quickgelu"
                    } else {
                        " without -quickgelu"
                    }
                ),
            ));
        }
        return Ok(c);
    }
    if let Some(c) = &loaded.config {
        if let Some(q) = opts.quick_gelu.filter(|&q| q != c.quick_gelu) {
            let said = match &loaded.config_file {
                Some(f) => format!("its config {f} says"),
                None => "the TorchScript archive's code runs".to_owned(),
            };
            return Err(contradiction(
                &said,
                q,
                "drop --quick-gelu (the checkpoint states its activation)",
            ));
        }
        return Ok(c.clone());
    }
    let shapes = shapes_of(&loaded.tensors, file)?;
    let unknown = |msg: String| LoadError::Architecture {
        file: file.clone(),
        msg,
    };
    let Some((name, preset)) = matching_preset(&shapes) else {
        let activation = if opts.quick_gelu.or(loaded.code_quick_gelu).is_some() {
            ""
        } else {
            ", and so is its activation (QuickGELU or GELU)"
        };
        return Err(unknown(format!(
            "it states no architecture (no open_clip or clip-rs config beside it: open_clip_config.json, config.json) \
             and its shapes match no preset, so its attention heads are unknown (OpenAI's build_model assumes \
             64-wide heads; open_clip configs often differ){activation}. Pass the model's config with --arch FILE.json \
             (its open_clip_config.json or model config), or put it beside the weights as open_clip_config.json"
        )));
    };
    match opts.quick_gelu.or(loaded.code_quick_gelu) {
        Some(q) => Ok(ClipConfig {
            quick_gelu: q,
            ..preset
        }),
        None => Err(unknown(format!(
            "it is a bare state dict (no open_clip or clip-rs config beside it: open_clip_config.json, config.json) with {name}'s shapes, \
             and its activation is not in its tensors: OpenAI's weights use QuickGELU, most open_clip ones GELU, \
             and the wrong one gives wrong embeddings without any error. Say which: --arch {name}:TAG \
             (the pretrained tag the file came from; `clip models` lists them), --arch {name} (GELU) or \
             --arch {name}-quickgelu, or --quick-gelu true|false; or put the model's open_clip_config.json beside it"
        ))),
    }
}

/// Load a CLIP from any supported checkpoint. `config` overrides the one found beside the weights
/// (which is then not read); without either, see [`resolve_config`].
pub fn load_clip(
    path: &Path,
    config: Option<&ClipConfig>,
    device: &Device,
) -> Result<Clip, LoadError> {
    load_clip_with(
        path,
        &LoadOptions {
            config: config.cloned(),
            quick_gelu: None,
        },
        device,
    )
}

/// Load a CLIP with what the caller states about it ([`LoadOptions`]).
pub fn load_clip_with(path: &Path, opts: &LoadOptions, device: &Device) -> Result<Clip, LoadError> {
    let loaded = read_checkpoint_with(path, opts.config.is_none())?;
    let cfg = resolve_config(&loaded, opts)?;
    Clip::from_checkpoint(&cfg, Checkpoint::new(loaded.tensors, loaded.file), device)
}

/// Save as `DIR/model.safetensors` (f32, open_clip/OpenAI keys) + `DIR/config.json` (with the
/// model's `preprocess_cfg` when it has one).
pub fn save_clip(clip: &Clip, dir: &Path) -> Result<(), LoadError> {
    std::fs::create_dir_all(dir).map_err(|source| LoadError::Io {
        file: display(dir),
        source,
    })?;
    write_safetensors(&dir.join("model.safetensors"), &clip.state_dict())?;
    write_atomic(&dir.join("config.json"), clip.config.to_json().as_bytes())
}
