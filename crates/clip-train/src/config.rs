//! The training configuration: a TOML file (unknown keys are an error), every key also a flag,
//! validated before any work, saved with every checkpoint, and compared on resume — a resume that
//! would change a setting that changes results is refused unless the change is asked for by name
//! (and then recorded in the run's history of changes).

use std::path::{Path, PathBuf};

use clip_model::ClipConfig;

use crate::loss::Objective;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read '{path}': {msg}")]
    Read { path: String, msg: String },
    #[error("invalid training config '{path}': {msg}")]
    Parse { path: String, msg: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] clip_model::ConfigError),
    #[error(
        "--resume would change `{setting}` from {saved} (the run's value) to {now}; a resumed run \
         must keep the settings that change its results. Pass `--change {setting}` to change it \
         anyway (the change is recorded), or start a new run in another --out directory"
    )]
    Changed {
        setting: String,
        saved: String,
        now: String,
    },
    #[error("--change {0}: no such setting; settings that change results: {list}", list = RESULT_SETTINGS.join(", "))]
    UnknownChange(String),
}

/// The training configuration file. Unknown keys are an error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// a preset name (`ViT-B-32`, `RN50`, …) or `small` (the quickstart's 64-px ViT)
    pub model: String,
    /// custom dimensions in open_clip's schema; overrides `model`
    pub model_cfg: Option<ClipConfig>,
    /// `synthetic`, a manifest (.csv/.jsonl: image path + one or more captions), a directory of class
    /// folders, or WebDataset shards (`shards-{0000..0099}.tar`)
    pub data: String,
    /// share of the synthetic (colour, shape) combinations never trained on
    pub held_out_fraction: f64,
    pub batch_size: usize,
    /// pairs per forward pass (gradient caching); 0 = the whole batch
    pub micro_batch: usize,
    pub steps: usize,
    /// when set, steps = ceil(epochs × pairs / batch_size) (finite datasets only)
    pub epochs: Option<f64>,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub seed: u64,
    pub eval_every: usize,
    pub eval_samples: usize,
    pub checkpoint_every: usize,
    pub checkpoint_minutes: f64,
    /// random crops: the short side is resized to `crop_scale × size` (≥ 1)
    pub crop_scale: f64,
    pub max_bad_fraction: f64,
    /// clip the global gradient norm (off when absent)
    pub grad_clip_norm: Option<f64>,
    /// `clip` (softmax contrastive loss) or `siglip` (the pairwise sigmoid loss; the model gets a
    /// learned logit bias, initialised as open_clip's `--siglip` does: scale ln 10, bias -10)
    pub loss: Objective,
    pub out_dir: PathBuf,
    /// labelled evaluation manifest (`{"image", "label"}` rows) for zero-shot checks during training
    pub eval_manifest: Option<PathBuf>,
    /// class names, one per line (labels index into it)
    pub eval_classes: Option<PathBuf>,
    pub eval_templates: Vec<String>,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            model: "small".into(),
            model_cfg: None,
            data: "synthetic".into(),
            held_out_fraction: 0.25,
            batch_size: 64,
            micro_batch: 0,
            steps: 600,
            epochs: None,
            lr: 1e-3,
            warmup: 50,
            weight_decay: 0.2,
            seed: 0,
            eval_every: 100,
            eval_samples: 240,
            checkpoint_every: 200,
            checkpoint_minutes: 0.0,
            crop_scale: 1.0,
            max_bad_fraction: 0.05,
            grad_clip_norm: None,
            loss: Objective::Clip,
            out_dir: PathBuf::from("runs/train"),
            eval_manifest: None,
            eval_classes: None,
            eval_templates: vec!["a {}".into(), "{}".into()],
        }
    }
}

/// Settings whose change alters a run's results; a resume must keep them (unless `--change`).
pub const RESULT_SETTINGS: [&str; 14] = [
    "model",
    "model_cfg",
    "data",
    "held_out_fraction",
    "batch_size",
    "steps",
    "epochs",
    "lr",
    "warmup",
    "weight_decay",
    "seed",
    "crop_scale",
    "grad_clip_norm",
    "loss",
];

/// The largest batch the loop accepts (memory is checked by the allocator beyond that).
pub const MAX_BATCH: usize = 1 << 20;

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

impl TrainConfig {
    /// Read a TOML file (every key optional; unknown keys are an error that names them).
    pub fn from_toml_file(path: &Path) -> Result<TrainConfig, ConfigError> {
        let text = clip_data::text::read_text(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        toml::from_str::<TrainConfig>(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            msg: e.message().to_owned(),
        })
    }

    /// The model's configuration (a preset, `small`, or `model_cfg`), validated.
    pub fn model_config(&self) -> Result<ClipConfig, ConfigError> {
        let cfg = match (&self.model_cfg, self.model.as_str()) {
            (Some(c), _) => c.clone(),
            (None, "small") => small_model(),
            (None, name) => clip_model::preset(name)?,
        };
        let mut cfg = cfg;
        if self.loss == Objective::Siglip && cfg.init_logit_bias.is_none() {
            // open_clip's main.py with --siglip: init_logit_scale = ln 10, init_logit_bias = -10
            cfg.init_logit_bias = Some(-10.0);
            cfg.init_logit_scale.get_or_insert(10f64.ln());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every setting's range before any work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let finite_pos = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{name} must be a positive number, got {v}"
                )))
            }
        };
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(invalid(format!(
                "batch_size must be between 1 and {MAX_BATCH}, got {}",
                self.batch_size
            )));
        }
        if self.micro_batch > self.batch_size {
            return Err(invalid(format!(
                "micro_batch ({}) must not exceed batch_size ({})",
                self.micro_batch, self.batch_size
            )));
        }
        if self.steps == 0 && self.epochs.is_none() {
            return Err(invalid("steps must be at least 1".into()));
        }
        if let Some(e) = self.epochs {
            finite_pos("epochs", e)?;
        }
        finite_pos("lr", self.lr)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid(format!(
                "weight_decay must be 0 or a positive number, got {}",
                self.weight_decay
            )));
        }
        if !(self.crop_scale.is_finite() && (1.0..=4.0).contains(&self.crop_scale)) {
            return Err(invalid(format!(
                "crop_scale must be between 1 and 4 (the short side is resized to crop_scale × the \
                 model's input size, then cropped), got {}",
                self.crop_scale
            )));
        }
        if !(0.0..1.0).contains(&self.max_bad_fraction) {
            return Err(invalid(format!(
                "max_bad_fraction must be in [0, 1), got {}",
                self.max_bad_fraction
            )));
        }
        if self.data == "synthetic"
            && !(self.held_out_fraction > 0.0 && self.held_out_fraction < 1.0)
        {
            return Err(invalid(format!(
                "held_out_fraction must be in (0, 1) with synthetic data (the held-out combinations \
                 are the zero-shot test), got {}",
                self.held_out_fraction
            )));
        }
        if let Some(g) = self.grad_clip_norm {
            finite_pos("grad_clip_norm", g)?;
        }
        if !(self.checkpoint_minutes.is_finite() && self.checkpoint_minutes >= 0.0) {
            return Err(invalid(format!(
                "checkpoint_minutes must be 0 (off) or positive, got {}",
                self.checkpoint_minutes
            )));
        }
        if self.eval_manifest.is_some() != self.eval_classes.is_some() {
            return Err(invalid("eval_manifest and eval_classes go together".into()));
        }
        if let Some(t) = self.eval_templates.iter().find(|t| !t.contains("{}")) {
            return Err(invalid(format!(
                "eval template {t:?} has no {{}} where the class name goes"
            )));
        }
        let model = self.model_config()?;
        let micro = if self.micro_batch == 0 {
            self.batch_size
        } else {
            self.micro_batch
        };
        clip_data::limits::check_image_batch(self.batch_size, model.image_size(), "batch_size")
            .and_then(|()| {
                clip_data::limits::check_image_batch(micro, model.image_size(), "micro_batch")
            })
            .map_err(invalid)?;
        Ok(())
    }

    fn setting(&self, name: &str) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        v.get(name).map_or("(none)".into(), |x| x.to_string())
    }

    /// On resume: the settings of this run that differ from `saved` and change results. Each
    /// difference not named in `allowed` is an error naming the setting and both values; the
    /// allowed ones are returned as (setting, saved, now) to be recorded.
    pub fn check_resume(
        &self,
        saved: &TrainConfig,
        allowed: &[String],
    ) -> Result<Vec<(String, String, String)>, ConfigError> {
        if let Some(bad) = allowed
            .iter()
            .find(|a| !RESULT_SETTINGS.contains(&a.as_str()))
        {
            return Err(ConfigError::UnknownChange(bad.clone()));
        }
        let mut changes = Vec::new();
        for name in RESULT_SETTINGS {
            let (was, now) = (saved.setting(name), self.setting(name));
            if was == now {
                continue;
            }
            if !allowed.iter().any(|a| a == name) {
                return Err(ConfigError::Changed {
                    setting: name.into(),
                    saved: was,
                    now,
                });
            }
            changes.push((name.to_owned(), was, now));
        }
        Ok(changes)
    }
}

/// The quickstart's model: a 64-px ViT (patch 8, width 192, 4 layers) and a 4-layer text tower.
pub fn small_model() -> ClipConfig {
    let json = r#"{"embed_dim": 128, "quick_gelu": true,
            "vision_cfg": {"image_size": 64, "layers": 4, "width": 192, "patch_size": 8, "head_width": 48},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4}}"#;
    // a fixed, tested literal
    ClipConfig::from_json(json).unwrap_or_else(|e| unreachable!("small model config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_files_parse() {
        TrainConfig::default().validate().unwrap();
        for f in ["quickstart.toml", "emoji.toml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../configs/train")
                .join(f);
            TrainConfig::from_toml_file(&p).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn sigmoid_loss_gives_the_model_a_logit_bias() {
        let cfg: TrainConfig = toml::from_str("loss = \"siglip\"").unwrap();
        assert_eq!(cfg.loss, Objective::Siglip);
        let m = cfg.model_config().unwrap();
        assert_eq!(m.init_logit_bias, Some(-10.0));
        assert!((m.init_logit_scale.unwrap() - 10f64.ln()).abs() < 1e-12);
        // the softmax loss leaves the model as it is
        assert_eq!(
            TrainConfig::default()
                .model_config()
                .unwrap()
                .init_logit_bias,
            None
        );
        let e = toml::from_str::<TrainConfig>("loss = \"hinge\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `hinge`"), "{e}");
        // changing the objective on resume is a result-changing setting
        let e = cfg
            .check_resume(&TrainConfig::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--resume would change `loss`"), "{e}");
    }

    #[test]
    fn ranges_are_checked() {
        let bad = |f: &dyn Fn(&mut TrainConfig)| {
            let mut c = TrainConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.lr = f64::NAN).contains("lr must be a positive number, got NaN"));
        assert!(bad(&|c| c.lr = -1.0).contains("lr must be"));
        assert!(bad(&|c| c.weight_decay = -0.1).contains("weight_decay"));
        assert!(bad(&|c| c.epochs = Some(0.0)).contains("epochs must be a positive number"));
        assert!(bad(&|c| c.steps = 0).contains("steps must be at least 1"));
        assert!(bad(&|c| c.batch_size = 0).contains("batch_size must be between 1"));
        assert!(bad(&|c| c.max_bad_fraction = 2.0).contains("max_bad_fraction"));
        assert!(bad(&|c| c.crop_scale = 0.0).contains("crop_scale must be between 1 and 4"));
        assert!(
            bad(&|c| c.held_out_fraction = 0.0).contains("held_out_fraction must be in (0, 1)")
        );
        let e = bad(&|c| {
            let mut m = small_model();
            m.vision_cfg.width = 0;
            c.model_cfg = Some(m);
        });
        assert!(e.contains("invalid model config"), "{e}");
    }

    #[test]
    fn resume_refuses_changed_settings_unless_allowed() {
        let saved = TrainConfig::default();
        let mut now = saved.clone();
        now.lr = 5e-4;
        now.eval_every = 7; // does not change results
        let e = now.check_resume(&saved, &[]).unwrap_err().to_string();
        assert!(
            e.contains("change `lr` from 0.001") && e.contains("to 0.0005"),
            "{e}"
        );
        let changes = now.check_resume(&saved, &["lr".into()]).unwrap();
        assert_eq!(changes, [("lr".into(), "0.001".into(), "0.0005".into())]);
        assert!(now.check_resume(&saved, &["colour".into()]).is_err());
    }
}
