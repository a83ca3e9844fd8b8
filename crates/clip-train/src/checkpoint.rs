//! Training checkpoints: model (`model.safetensors` + `config.json`), optimiser moments, step, data
//! position and counters, written into a temporary directory that is renamed into place, then
//! `checkpoints/latest` is replaced atomically — a kill or a full disk at any moment leaves the
//! previous checkpoint intact and `latest` pointing at a complete one.

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use clip_model::source::{Checkpoint, RawTensor};
use clip_model::weights::{read_safetensors, write_atomic, write_safetensors};
use clip_model::{Clip, ClipConfig};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::optim::{AdamW, AdamWConfig};

/// Everything besides weights and moments needed to continue exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// completed optimiser steps
    pub step: usize,
    /// data position: index of the next pair to draw (batches and augmentation are seeded by it)
    pub next_index: u64,
    pub seen: u64,
    pub bad: u64,
    pub last_bad: String,
    pub truncated: u64,
    /// the run's seed (all randomness derives from it and the data position)
    pub seed: u64,
    /// the run's full configuration (absent in checkpoints of older versions)
    #[serde(default)]
    pub config: Option<TrainConfig>,
    /// settings changed on resume with `--change`: (step, setting, old value, new value)
    #[serde(default)]
    pub changes: Vec<(usize, String, String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {path}: {source}; the previous checkpoint is intact")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] clip_model::LoadError),
    #[error("checkpoint {path} is damaged: {msg}")]
    Damaged { path: String, msg: String },
    #[error(
        "checkpoint {path} is of another model than this run:\n  checkpoint: {theirs}\n  this run:   {ours}\n\
         resume with the same model settings, or start a new run in another --out directory"
    )]
    OtherModel {
        path: String,
        theirs: String,
        ours: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Write {
        path: path.display().to_string(),
        source,
    }
}

fn load_err(e: clip_model::LoadError, path: &Path) -> CheckpointError {
    match e {
        clip_model::LoadError::Io { source, .. } => CheckpointError::Write {
            path: path.display().to_string(),
            source,
        },
        other => CheckpointError::Load(other),
    }
}

/// The newest complete checkpoint of the run in `out`: the one `checkpoints/latest` points at, or,
/// when that pointer is missing or points at a deleted step, the highest `step-N` folder that holds
/// a complete checkpoint (its `state.json` is written last).
pub fn latest(out: &Path) -> Option<PathBuf> {
    let dir = out.join("checkpoints");
    let complete =
        |p: &Path| p.join("state.json").is_file() && p.join("model.safetensors").is_file();
    if let Ok(name) = std::fs::read_to_string(dir.join("latest")) {
        let p = dir.join(name.trim());
        if complete(&p) {
            return Some(p);
        }
    }
    steps(out).into_iter().rev().find(|p| complete(p))
}

/// The `step-N` folders of the run in `out`, in step order.
pub fn steps(out: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(out.join("checkpoints")) else {
        return Vec::new();
    };
    let mut v: Vec<(usize, PathBuf)> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix("step-")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Remove temporary folders that a killed checkpoint write left behind (`.step-N.tmpPID`).
pub fn clean_partial(out: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(out.join("checkpoints")) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for p in rd.filter_map(|e| e.ok().map(|e| e.path())) {
        let partial = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".step-") && n.contains(".tmp"));
        if partial && p.is_dir() && std::fs::remove_dir_all(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// Write a checkpoint for the current step and point `latest` at it.
pub fn save(
    out: &Path,
    clip: &Clip,
    opt: &AdamW,
    state: &TrainState,
) -> Result<PathBuf, CheckpointError> {
    let dir = out.join("checkpoints");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = format!("step-{:07}", state.step);
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let final_dir = dir.join(&name);
    let result = (|| -> Result<(), CheckpointError> {
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        write_safetensors(&tmp.join("model.safetensors"), &clip.state_dict())
            .map_err(|e| load_err(e, &tmp))?;
        write_atomic(&tmp.join("config.json"), clip.config.to_json().as_bytes())
            .map_err(|e| load_err(e, &tmp))?;
        write_safetensors(&tmp.join("optimizer.safetensors"), &opt.export(clip))
            .map_err(|e| load_err(e, &tmp))?;
        let st = serde_json::to_string_pretty(&(state, opt.config_json())).expect("serialisable");
        write_atomic(&tmp.join("state.json"), st.as_bytes()).map_err(|e| load_err(e, &tmp))?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        write_atomic(&dir.join("latest"), name.as_bytes()).map_err(|e| load_err(e, &dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| final_dir)
}

/// Load a checkpoint to continue training `config` on `device` (an autodiff device).
pub fn load(
    path: &Path,
    config: &ClipConfig,
    device: &Device,
) -> Result<(Clip, AdamW, TrainState), CheckpointError> {
    let damaged = |msg: String| CheckpointError::Damaged {
        path: path.display().to_string(),
        msg,
    };
    let saved_cfg =
        std::fs::read_to_string(path.join("config.json")).map_err(|e| damaged(e.to_string()))?;
    let saved = ClipConfig::from_json(&saved_cfg).map_err(|e| damaged(e.to_string()))?;
    if &saved != config {
        return Err(CheckpointError::OtherModel {
            path: path.display().to_string(),
            theirs: serde_json::to_string(&saved).expect("json"),
            ours: serde_json::to_string(config).expect("json"),
        });
    }
    let weights = read_safetensors(&path.join("model.safetensors"))?;
    let clip = Clip::from_checkpoint(
        config,
        Checkpoint::new(
            weights,
            path.join("model.safetensors").display().to_string(),
        ),
        device,
    )?;
    let text =
        std::fs::read_to_string(path.join("state.json")).map_err(|e| damaged(e.to_string()))?;
    let (state, opt_cfg): (TrainState, AdamWConfigJson) =
        serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
    let mut opt = AdamW::new(opt_cfg.into(), &clip);
    opt.import(
        &clip,
        &read_safetensors(&path.join("optimizer.safetensors"))?,
    )
    .map_err(damaged)?;
    Ok((clip, opt, state))
}

/// The optimiser's settings as saved in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdamWConfigJson {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
}

impl From<AdamWConfigJson> for AdamWConfig {
    fn from(c: AdamWConfigJson) -> AdamWConfig {
        AdamWConfig {
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
        }
    }
}

impl AdamW {
    pub fn config_json(&self) -> AdamWConfigJson {
        let c = self.config;
        AdamWConfigJson {
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            step: self.step,
        }
    }

    /// Moments under the parameters' checkpoint keys (`m.KEY`, `v.KEY`) and the step count.
    pub fn export(&self, clip: &Clip) -> Vec<(String, RawTensor)> {
        let mut out = vec![(
            "step".to_owned(),
            RawTensor::new(vec![1], vec![self.step as f32]),
        )];
        for b in &clip.bindings {
            if let Some((m, v)) = self.moments_of(b.id) {
                out.push((
                    format!("m.{}", b.key),
                    RawTensor::new(vec![m.len()], m.to_vec()),
                ));
                out.push((
                    format!("v.{}", b.key),
                    RawTensor::new(vec![v.len()], v.to_vec()),
                ));
            }
        }
        out
    }

    /// Restore what [`AdamW::export`] wrote, for the same model.
    pub fn import(
        &mut self,
        clip: &Clip,
        t: &std::collections::BTreeMap<String, RawTensor>,
    ) -> Result<(), String> {
        self.step = t
            .get("step")
            .and_then(|s| s.data.first())
            .filter(|s| s.is_finite() && **s >= 0.0)
            .map(|&s| s as u64)
            .ok_or("optimizer.safetensors has no valid step")?;
        let sizes: std::collections::HashMap<String, usize> = clip
            .state_dict()
            .into_iter()
            .map(|(k, v)| (k, v.data.len()))
            .collect();
        for b in &clip.bindings {
            if let (Some(m), Some(v)) = (
                t.get(&format!("m.{}", b.key)),
                t.get(&format!("v.{}", b.key)),
            ) {
                let want = sizes.get(&b.key).copied().unwrap_or(0);
                if m.data.len() != want || v.data.len() != want {
                    return Err(format!(
                        "optimizer moments of '{}' hold {} and {} values; the parameter has {want}",
                        b.key,
                        m.data.len(),
                        v.data.len()
                    ));
                }
                self.set_moments(b.id, m.data.clone(), v.data.clone());
            }
        }
        Ok(())
    }
}
