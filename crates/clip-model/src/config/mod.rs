//! Model configuration: open_clip's JSON schema (the subset that describes CLIP's two towers), typed,
//! with `deny_unknown_fields` so a setting we would ignore is an error instead.

use serde::{Deserialize, Serialize};

mod preprocess;
mod presets;
mod text;
pub mod timm;
pub use preprocess::{Interpolation, OPENAI_MEAN, OPENAI_STD, PreprocessCfg, ResizeMode};
pub use presets::PRESETS;
pub use text::*;

/// The longest text context a config may ask for (the positional table is `context × width`).
pub const MAX_CONTEXT: usize = 4096;

/// A whole CLIP: `embed_dim` is the shared embedding size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    pub embed_dim: usize,
    pub vision_cfg: VisionConfig,
    pub text_cfg: TextConfig,
    /// `x·σ(1.702x)` (OpenAI's weights) instead of exact GELU.
    #[serde(default)]
    pub quick_gelu: bool,
    /// How images are prepared for this model (open_clip's `preprocess_cfg`); `None`: OpenAI's
    /// (bicubic, shortest side + center crop, OpenAI's mean and std). Saved in `config.json`
    /// only when set, so older files read the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess_cfg: Option<PreprocessCfg>,
    /// A learned bias added to the logits (SigLIP; open_clip's `init_logit_bias`, its initial
    /// value). `None`: no bias parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_logit_bias: Option<f64>,
    /// The initial logit scale, as its log (open_clip's `init_logit_scale`; default `ln(1/0.07)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_logit_scale: Option<f64>,
    /// open_clip's `CustomTextCLIP`: the text tower's keys are under `text.` (SigLIP).
    #[serde(default, skip_serializing_if = "is_false")]
    pub custom_text: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Vision tower. `layers` is an int for a ViT and a list of four for a ModifiedResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    pub image_size: usize,
    pub layers: VisionLayers,
    pub width: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_size: Option<usize>,
    #[serde(default = "default_head_width")]
    pub head_width: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// A timm trunk (`visual.trunk.*`, open_clip's `TimmModel`): the ViTs of SigLIP. Its sizes come
    /// from [`crate::config::timm`]'s table by name, or from the fields above when the name is not in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timm_model_name: Option<String>,
    /// ImageNet weights at initialisation only; irrelevant to a checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timm_model_pretrained: Option<bool>,
    /// the trunk's pooling (`map`: attention pooling over a learned latent)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timm_pool: Option<String>,
    /// a projection after the trunk (`none` is the only one supported)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timm_proj: Option<String>,
    /// training-only settings of the trunk (accepted, no effect on inference)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timm_drop: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timm_drop_path: Option<f64>,
    /// Activation settings (`{"approximate": "tanh"}`): for a timm trunk not in the table, GELU's
    /// tanh form (a known trunk's activation comes from the table and must agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Default for VisionConfig {
    /// A ViT-B/32-sized tower; literals name the fields that matter and take the rest from here.
    fn default() -> VisionConfig {
        VisionConfig {
            image_size: 224,
            layers: VisionLayers::Vit(12),
            width: 768,
            patch_size: Some(32),
            head_width: default_head_width(),
            mlp_ratio: default_mlp_ratio(),
            timm_model_name: None,
            timm_model_pretrained: None,
            timm_pool: None,
            timm_proj: None,
            timm_drop: None,
            timm_drop_path: None,
            act_kwargs: None,
        }
    }
}

/// `layers`: a ViT depth or the four ResNet stage depths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VisionLayers {
    Vit(usize),
    ResNet([usize; 4]),
}

/// The `mlp_ratio` whose `(width · ratio) as usize` (how the towers size their MLP, as open_clip's
/// `int(width * mlp_ratio)`) is exactly `hidden`: `hidden / width`, nudged up when rounding would
/// lose a unit.
pub fn mlp_ratio_of(hidden: usize, width: usize) -> f64 {
    let mut r = hidden as f64 / width.max(1) as f64;
    for _ in 0..4 {
        if (width as f64 * r) as usize >= hidden {
            break;
        }
        r = f64::from_bits(r.to_bits() + 1);
    }
    r
}

/// The MLP hidden width a tower of `width` builds for `mlp_ratio` (open_clip's
/// `int(width * mlp_ratio)`).
pub fn mlp_width(width: usize, mlp_ratio: f64) -> usize {
    (width as f64 * mlp_ratio) as usize
}

/// Which image tower a config describes, with its derived sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VisionKind {
    Vit {
        patch_size: usize,
        layers: usize,
        heads: usize,
    },
    ResNet {
        layers: [usize; 4],
        heads: usize,
    },
    /// open_clip's `TimmModel` over a SigLIP-form timm ViT (`visual.trunk.*`).
    Timm {
        patch_size: usize,
        layers: usize,
        heads: usize,
        /// GELU's tanh form (timm's `gelu_tanh`)
        gelu_tanh: bool,
        eps: f64,
    },
}

impl ClipConfig {
    pub fn vision_kind(&self) -> Result<VisionKind, ConfigError> {
        let v = &self.vision_cfg;
        let kind = match (&v.layers, v.patch_size) {
            (VisionLayers::Vit(layers), Some(patch_size)) => {
                if !v.width.is_multiple_of(v.head_width) {
                    return Err(ConfigError::Invalid(format!(
                        "vision width {} is not a multiple of head_width {}",
                        v.width, v.head_width
                    )));
                }
                // timm's patch conv drops a remainder (SO400M/14 at 384 px sees 27×14 = 378);
                // OpenAI's and open_clip's ViTs need an exact fit
                let fits = v.timm_model_name.is_some() && v.image_size >= patch_size;
                if patch_size == 0 || !(fits || v.image_size.is_multiple_of(patch_size)) {
                    return Err(ConfigError::Invalid(format!(
                        "image_size {} is not a multiple of patch_size {patch_size}",
                        v.image_size
                    )));
                }
                Ok(VisionKind::Vit {
                    patch_size,
                    layers: *layers,
                    heads: v.width / v.head_width,
                })
            }
            (VisionLayers::Vit(_), None) => Err(ConfigError::Invalid(
                "a ViT vision tower (integer `layers`) needs `patch_size`".into(),
            )),
            (VisionLayers::ResNet(layers), _) => {
                if !v.image_size.is_multiple_of(32) {
                    return Err(ConfigError::Invalid(format!(
                        "ModifiedResNet image_size {} is not a multiple of 32",
                        v.image_size
                    )));
                }
                Ok(VisionKind::ResNet {
                    layers: *layers,
                    heads: v.width * 32 / v.head_width,
                })
            }
        }?;
        let Some(name) = &v.timm_model_name else {
            return Ok(kind);
        };
        let VisionKind::Vit {
            patch_size,
            layers,
            heads,
        } = kind
        else {
            return Err(ConfigError::Invalid(format!(
                "timm model '{name}' needs ViT sizes (integer layers, patch_size)"
            )));
        };
        for (field, value, want) in [
            ("timm_pool", &v.timm_pool, "map"),
            ("timm_proj", &v.timm_proj, "none"),
        ] {
            if value.as_deref() != Some(want) {
                return Err(ConfigError::Invalid(format!(
                    "vision_cfg.{field} {} is not supported for timm trunks (only '{want}': SigLIP's \
                     attention pooling with no projection)",
                    value
                        .as_deref()
                        .map_or("(absent)".to_owned(), |s| format!("'{s}'"))
                )));
            }
        }
        if self.embed_dim != v.width {
            return Err(ConfigError::Invalid(format!(
                "embed_dim {} differs from the timm trunk's width {} (with timm_proj 'none' they are the same)",
                self.embed_dim, v.width
            )));
        }
        let stated = gelu_tanh("vision_cfg", v.act_kwargs.as_ref())?;
        let (tanh, eps) = match timm::spec(name) {
            Some(s) => {
                let tanh = s.act == "gelu_tanh";
                if v.act_kwargs.is_some() && stated != tanh {
                    return Err(ConfigError::Invalid(format!(
                        "vision_cfg.act_kwargs contradicts timm's '{name}', whose activation is {}",
                        s.act
                    )));
                }
                (tanh, s.eps)
            }
            // a self-describing trunk: SigLIP's LayerNorm eps
            None => (stated, 1e-6),
        };
        Ok(VisionKind::Timm {
            patch_size,
            layers,
            heads,
            gelu_tanh: tanh,
            eps,
        })
    }

    /// Check the sizes fit together (heads divide widths, patch divides the image…).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (v, t) = (&self.vision_cfg, &self.text_cfg);
        let vit_layers = match v.layers {
            VisionLayers::Vit(l) => l,
            VisionLayers::ResNet(l) => l.iter().copied().min().unwrap_or(0),
        };
        for (name, value) in [
            ("embed_dim", self.embed_dim),
            ("vision_cfg.image_size", v.image_size),
            ("vision_cfg.width", v.width),
            ("vision_cfg.layers", vit_layers),
            ("vision_cfg.head_width", v.head_width),
            ("text_cfg.width", t.width),
            // a bag-of-words text tower (mean pool) may have no blocks
            (
                "text_cfg.layers",
                t.layers.max((t.pool()? == TextPool::Mean) as usize),
            ),
            ("text_cfg.vocab_size", t.vocab_size),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        for (name, r) in [
            ("vision_cfg.mlp_ratio", v.mlp_ratio),
            ("text_cfg.mlp_ratio", t.mlp_ratio),
        ] {
            if !(r.is_finite() && r > 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be a positive number, got {r}"
                )));
            }
        }
        self.vision_kind()?;
        let t = &self.text_cfg;
        t.pool()?;
        t.gelu_tanh()?;
        if t.projection()? == TextProj::None && t.width != self.embed_dim {
            return Err(ConfigError::Invalid(format!(
                "text_cfg.proj_type 'none' needs text width {} equal to embed_dim {}",
                t.width, self.embed_dim
            )));
        }
        if t.heads == 0 || !t.width.is_multiple_of(t.heads) {
            return Err(ConfigError::Invalid(format!(
                "text width {} is not a multiple of heads {}",
                t.width, t.heads
            )));
        }
        if t.context_length < 2 || t.context_length > MAX_CONTEXT {
            return Err(ConfigError::Invalid(format!(
                "text context_length must be between 2 and {MAX_CONTEXT}, got {}",
                t.context_length
            )));
        }
        Ok(())
    }

    /// Parse a config from JSON: either a bare model config (ours may carry `preprocess_cfg`) or
    /// open_clip's `open_clip_config.json` (`{"model_cfg": …, "preprocess_cfg": …}`).
    pub fn from_json(text: &str) -> Result<ClipConfig, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        let value = match (value.get("model_cfg"), value.get("preprocess_cfg")) {
            (Some(serde_json::Value::Object(inner)), pre) => {
                let mut inner = inner.clone();
                if let Some(pre) = pre.filter(|p| !p.is_null()) {
                    inner.insert("preprocess_cfg".into(), pre.clone());
                }
                serde_json::Value::Object(inner)
            }
            (Some(_), _) => {
                return Err(ConfigError::Json("`model_cfg` is not an object".into()));
            }
            (None, _) => value,
        };
        let mut value = value;
        if let Some(serde_json::Value::Object(v)) = value.get_mut("vision_cfg") {
            timm::fill(v)?;
        }
        let cfg: ClipConfig =
            serde_json::from_value(value).map_err(|e| ConfigError::Json(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    /// Image side length the tower expects.
    pub fn image_size(&self) -> usize {
        self.vision_cfg.image_size
    }

    /// The image preprocessing: [`ClipConfig::preprocess_cfg`] or OpenAI's.
    pub fn preprocess(&self) -> PreprocessCfg {
        self.preprocess_cfg.clone().unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid model config: {0}")]
    Json(String),
    #[error("invalid model config: {0}")]
    Invalid(String),
    #[error("unknown model '{name}'; known models: {known}")]
    UnknownModel { name: String, known: String },
}

/// Names of the presets, comma-separated (for error messages).
pub fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The preset of that name. `-quickgelu` suffixes select QuickGELU, as in open_clip.
pub fn preset(name: &str) -> Result<ClipConfig, ConfigError> {
    let (base, quick) = match name.strip_suffix("-quickgelu") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let (_, json) = PRESETS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(base))
        .ok_or_else(|| ConfigError::UnknownModel {
            name: name.to_owned(),
            known: preset_names(),
        })?;
    let mut cfg = ClipConfig::from_json(json)?;
    cfg.quick_gelu |= quick;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_derive_heads() {
        for (name, _) in PRESETS {
            preset(name).unwrap();
        }
        let b32 = preset("ViT-B-32").unwrap();
        assert_eq!(
            b32.vision_kind().unwrap(),
            VisionKind::Vit {
                patch_size: 32,
                layers: 12,
                heads: 12
            }
        );
        let rn50 = preset("RN50").unwrap();
        assert_eq!(
            rn50.vision_kind().unwrap(),
            VisionKind::ResNet {
                layers: [3, 4, 6, 3],
                heads: 32
            }
        );
        assert!(preset("ViT-B-32-quickgelu").unwrap().quick_gelu);
    }

    #[test]
    fn mlp_ratio_of_truncates_back_to_the_width() {
        for w in 1..2048usize {
            for h in [
                w * 4,
                (w as f64 * 4.3637) as usize,
                (w as f64 * 4.9231) as usize,
                w * 8 / 3,
            ] {
                assert_eq!(mlp_width(w, mlp_ratio_of(h, w)), h, "width {w}, hidden {h}");
            }
        }
    }

    #[test]
    fn unknown_model_lists_known() {
        let err = preset("ViT-Z-99").unwrap_err();
        assert!(
            err.to_string().starts_with(
            "unknown model 'ViT-Z-99'; known models: RN50, RN101, RN50x4, RN50x16, RN50x64, ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-B-32-256, ViT-B-16-plus-240, ViT-H-14, ViT-H-14-378, ViT-g-14, ViT-bigG-14, ViT-B-16-SigLIP, "
        ), "{err}");
    }

    #[test]
    fn unknown_field_is_an_error() {
        let err = ClipConfig::from_json(
            r#"{"embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "ls_init_value": 0.1},
                "text_cfg": {"width": 64, "heads": 1, "layers": 1}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `ls_init_value`"),
            "{err}"
        );
    }
}
