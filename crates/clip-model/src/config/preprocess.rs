//! open_clip's `preprocess_cfg`: how a pretrained model's images are normalised and made square.
//! Read from `open_clip_config.json`, the pretrained-tag table and our `config.json`; every key
//! open_clip reads is read here (`size` is replaced by the model's input size, as open_clip does),
//! and values open_clip would reject (a mode other than RGB) are errors. Keys open_clip ignores
//! are ignored.

use serde::{Deserialize, Serialize};

/// OpenAI's normalisation mean (open_clip's `OPENAI_DATASET_MEAN`).
pub const OPENAI_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI's normalisation std (open_clip's `OPENAI_DATASET_STD`).
pub const OPENAI_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Image preprocessing of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPreprocess")]
pub struct PreprocessCfg {
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub interpolation: Interpolation,
    pub resize_mode: ResizeMode,
    /// Padding colour of [`ResizeMode::Longest`].
    #[serde(skip_serializing_if = "is_zero")]
    pub fill_color: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Default for PreprocessCfg {
    /// OpenAI's: bicubic, shortest side + center crop, OpenAI's mean and std.
    fn default() -> Self {
        PreprocessCfg {
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
            interpolation: Interpolation::Bicubic,
            resize_mode: ResizeMode::Shortest,
            fill_color: 0,
        }
    }
}

/// Resampling filter of the resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    #[default]
    Bicubic,
    Bilinear,
    /// open_clip's training-time random choice
    Random,
}

/// How the image becomes `n×n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Short side to `n`, then center crop (OpenAI's).
    #[default]
    Shortest,
    /// Long side to `n`, then pad with `fill_color`.
    Longest,
    /// Resize to `n×n`, ignoring the aspect ratio.
    Squash,
}

impl Interpolation {
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bicubic => "bicubic",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Random => "random",
        }
    }
}

impl ResizeMode {
    pub fn name(self) -> &'static str {
        match self {
            ResizeMode::Shortest => "shortest",
            ResizeMode::Longest => "longest",
            ResizeMode::Squash => "squash",
        }
    }
}

/// A mean or std: one number for all channels or one per channel.
#[derive(Deserialize)]
#[serde(untagged)]
enum Channels {
    One(f64),
    Many(Vec<f64>),
}

impl Channels {
    fn three(self, what: &str) -> Result<[f64; 3], String> {
        let v = match self {
            Channels::One(x) => [x; 3],
            Channels::Many(v) => match v.as_slice() {
                [x] => [*x; 3],
                [a, b, c] => [*a, *b, *c],
                _ => {
                    return Err(format!(
                        "preprocess_cfg.{what} has {} values; an RGB image needs 1 or 3",
                        v.len()
                    ));
                }
            },
        };
        if what == "std" && v.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "preprocess_cfg.std must be positive numbers, got {v:?}"
            ));
        }
        if v.iter().any(|m| !m.is_finite()) {
            return Err(format!("preprocess_cfg.{what} must be numbers, got {v:?}"));
        }
        Ok(v)
    }
}

/// The JSON as written; `null` means "not set", as in open_clip's `merge_preprocess_dict`.
#[derive(Deserialize)]
struct RawPreprocess {
    #[serde(default)]
    mean: Option<Channels>,
    #[serde(default)]
    std: Option<Channels>,
    #[serde(default)]
    interpolation: Option<String>,
    #[serde(default)]
    resize_mode: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    fill_color: Option<i64>,
    /// Replaced by the model's input size in open_clip (`create_model` sets it from the tower).
    #[serde(default)]
    #[allow(dead_code)]
    size: Option<serde_json::Value>,
}

impl TryFrom<RawPreprocess> for PreprocessCfg {
    type Error = String;

    fn try_from(raw: RawPreprocess) -> Result<Self, String> {
        let d = PreprocessCfg::default();
        if let Some(mode) = raw.mode.filter(|m| m != "RGB") {
            return Err(format!(
                "preprocess_cfg.mode '{mode}' is not supported (open_clip accepts only RGB)"
            ));
        }
        let interpolation = match raw.interpolation.as_deref() {
            None => d.interpolation,
            Some("bicubic") => Interpolation::Bicubic,
            Some("bilinear") => Interpolation::Bilinear,
            Some("random") => Interpolation::Random,
            Some(other) => {
                return Err(format!(
                    "preprocess_cfg.interpolation '{other}' is not one of bicubic, bilinear, random"
                ));
            }
        };
        let resize_mode = match raw.resize_mode.as_deref() {
            None => d.resize_mode,
            Some("shortest") => ResizeMode::Shortest,
            Some("longest") => ResizeMode::Longest,
            Some("squash") => ResizeMode::Squash,
            Some(other) => {
                return Err(format!(
                    "preprocess_cfg.resize_mode '{other}' is not one of shortest, longest, squash"
                ));
            }
        };
        Ok(PreprocessCfg {
            mean: raw
                .mean
                .map(|m| m.three("mean"))
                .transpose()?
                .unwrap_or(d.mean),
            std: raw
                .std
                .map(|s| s.three("std"))
                .transpose()?
                .unwrap_or(d.std),
            interpolation,
            resize_mode,
            fill_color: raw.fill_color.unwrap_or(0),
        })
    }
}

impl PreprocessCfg {
    /// Whether this is OpenAI's preprocessing.
    pub fn is_openai(&self) -> bool {
        *self == PreprocessCfg::default()
    }

    /// One line for messages and listings: `mean 0.5/0.5/0.5, std …, bicubic, shortest`.
    pub fn describe(&self) -> String {
        let f = |v: &[f64; 3]| {
            v.iter()
                .map(|x| format!("{x}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        format!(
            "mean {}, std {}, {}, resize {}",
            f(&self.mean),
            f(&self.std),
            self.interpolation.name(),
            self.resize_mode.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_open_clip_forms() {
        let p: PreprocessCfg = serde_json::from_str(
            r#"{"mean": 0.5, "std": [0.5, 0.5, 0.5], "size": 224, "interpolation": "bicubic", "resize_mode": "squash", "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(p.mean, [0.5; 3]);
        assert_eq!(p.resize_mode, ResizeMode::Squash);
        let p: PreprocessCfg = serde_json::from_str(r#"{"mean": null}"#).unwrap();
        assert!(p.is_openai());
        let back: PreprocessCfg =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        for (bad, want) in [
            (r#"{"mode": "L"}"#, "mode 'L'"),
            (r#"{"interpolation": "lanczos"}"#, "interpolation 'lanczos'"),
            (r#"{"resize_mode": "fit"}"#, "resize_mode 'fit'"),
            (r#"{"std": [0.5, 0]}"#, "has 2 values"),
            (r#"{"std": [0.5, 0, 1]}"#, "positive"),
        ] {
            let err = serde_json::from_str::<PreprocessCfg>(bad).unwrap_err();
            assert!(err.to_string().contains(want), "{bad}: {err}");
        }
    }
}
