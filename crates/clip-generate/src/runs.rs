//! Resumable training runs: a folder holds `settings.json` (what changes the results; a resume
//! must ask for the same), `progress.json` (the step of the last checkpoint, the training seconds
//! and the logged history) and that checkpoint's state files, named by step. A checkpoint writes
//! its new state files first and `progress.json` last, then removes the older state files, so a run
//! killed at any moment resumes from an intact checkpoint. `plot.png` draws the history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clip_data::chart::{self, Chart, Series, Style};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{EvalError, invalid};

/// One logged step: named values (`loss`, `mse`, `perplexity`, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Logged {
    pub step: usize,
    pub values: BTreeMap<String, f64>,
}

impl Logged {
    /// A history row; values that are not finite are left out (JSON has no NaN, and a history
    /// must stay readable for the run to resume).
    pub fn new(step: usize, mut values: BTreeMap<String, f64>) -> Logged {
        values.retain(|_, v| v.is_finite());
        Logged { step, values }
    }
}

/// Whether `name` is a state file this module writes: `state-NNNNNNN.safetensors` or
/// `codebook-NNNNNNN.safetensors`.
fn is_state_file(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".safetensors") else {
        return false;
    };
    let Some((kind, step)) = stem.rsplit_once('-') else {
        return false;
    };
    STATE_NAMES.contains(&kind) && step.len() == 7 && step.bytes().all(|b| b.is_ascii_digit())
}

/// The names of the state files runs write.
pub const STATE_NAMES: [&str; 2] = ["state", "codebook"];

/// Where a run stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Progress {
    pub step: usize,
    pub train_seconds: f64,
    pub history: Vec<Logged>,
}

/// A run folder.
pub struct Run {
    pub dir: PathBuf,
    pub progress: Progress,
}

/// The first top-level setting that differs, as (name, saved, asked).
pub fn first_difference(
    saved: &serde_json::Value,
    now: &serde_json::Value,
) -> Option<(String, String, String)> {
    let (Some(a), Some(b)) = (saved.as_object(), now.as_object()) else {
        return (saved != now).then(|| ("settings".into(), saved.to_string(), now.to_string()));
    };
    a.iter()
        .find(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            (
                k.clone(),
                v.to_string(),
                b.get(k).map_or("nothing".into(), |x| x.to_string()),
            )
        })
        .or_else(|| {
            b.iter()
                .find(|(k, _)| !a.contains_key(*k))
                .map(|(k, v)| (k.clone(), "nothing".into(), v.to_string()))
        })
}

pub(crate) use clip_eval::repro::fig2::read_json;

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), EvalError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| invalid(e.to_string()))?;
    clip_data::out::write_file(path, text.as_bytes())?;
    Ok(())
}

impl Run {
    /// Open `dir` for a run of `kind` with `settings`: a new or empty folder starts one, a folder
    /// of the same kind with the same settings resumes it, anything else is an error that names
    /// the first differing setting or says what the folder holds.
    pub fn open<S: Serialize>(dir: &Path, kind: &str, settings: &S) -> Result<Run, EvalError> {
        let now = serde_json::json!({ "kind": kind, "settings": settings });
        let path = dir.join("settings.json");
        match read_json::<serde_json::Value>(&path)? {
            Some(saved) => {
                if saved["kind"] != now["kind"] {
                    return Err(invalid(format!(
                        "'{}' holds a {} run, not a {kind} run; choose another --out",
                        dir.display(),
                        saved["kind"]
                    )));
                }
                let started =
                    read_json::<Progress>(&dir.join("progress.json"))?.is_some_and(|p| p.step > 0);
                if let Some((name, was, asked)) =
                    first_difference(&saved["settings"], &now["settings"])
                {
                    if started {
                        return Err(invalid(format!(
                            "'{}' was started with {name} = {was}; this run asks for {asked}. Resume with the \
                             same settings, or choose another --out",
                            dir.display()
                        )));
                    }
                    // no checkpoint yet: the new settings replace those of the failed start
                    write_json(&path, &now)?;
                }
            }
            None => {
                clip_data::out::check_output_dir(dir, "settings.json", "a training run")?;
                clip_data::out::create_dir(dir)?;
                write_json(&path, &now)?;
            }
        }
        let progress = read_json::<Progress>(&dir.join("progress.json"))?.unwrap_or_default();
        Ok(Run {
            dir: dir.to_owned(),
            progress,
        })
    }

    /// The settings a finished (or partial) run was started with.
    pub fn settings<S: DeserializeOwned>(
        dir: &Path,
        kind: &str,
    ) -> Result<(S, Progress), EvalError> {
        let path = dir.join("settings.json");
        let saved = read_json::<serde_json::Value>(&path)?.ok_or_else(|| {
            invalid(format!(
                "'{}' holds no training run (no settings.json)",
                dir.display()
            ))
        })?;
        if saved["kind"] != kind {
            return Err(invalid(format!(
                "'{}' holds a {} run, not a {kind}",
                dir.display(),
                saved["kind"]
            )));
        }
        let s = serde_json::from_value(saved["settings"].clone()).map_err(|e| {
            invalid(format!(
                "'{}' is from another version ({e})",
                path.display()
            ))
        })?;
        let p = read_json::<Progress>(&dir.join("progress.json"))?.unwrap_or_default();
        if p.step == 0 {
            return Err(invalid(format!(
                "'{}' has no checkpoint yet; train it first",
                dir.display()
            )));
        }
        Ok((s, p))
    }

    /// The state file `name` of the checkpoint at `step`.
    pub fn file(dir: &Path, name: &str, step: usize) -> PathBuf {
        dir.join(format!("{name}-{step:07}.safetensors"))
    }

    /// Make the checkpoint at `self.progress.step`: `write` has written its state files (named by
    /// [`Run::file`] with this step); then `progress.json` moves to it and older states go.
    pub fn commit(
        &mut self,
        write: impl FnOnce(&Path, usize) -> Result<(), EvalError>,
    ) -> Result<(), EvalError> {
        let step = self.progress.step;
        write(&self.dir, step)?;
        write_json(&self.dir.join("progress.json"), &self.progress)?;
        let mine = format!("-{step:07}.safetensors");
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if is_state_file(&name) && !name.ends_with(&mine) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// `plot.png`: each of `keys` of the history against the step, one panel each.
    pub fn plot(&self, keys: &[(&str, &str)]) -> Result<(), EvalError> {
        let last = self
            .progress
            .history
            .iter()
            .map(|h| h.step as f64)
            .fold(1.0, f64::max);
        let charts: Vec<Chart> = keys
            .iter()
            .map(|(key, title)| {
                let pts: Vec<(f64, f64)> = self
                    .progress
                    .history
                    .iter()
                    .filter_map(|h| {
                        h.values
                            .get(*key)
                            .filter(|v| v.is_finite())
                            .map(|v| (h.step as f64, *v))
                    })
                    .collect();
                let top = pts.iter().map(|p| p.1).fold(1e-9, f64::max);
                Chart {
                    title: (*title).into(),
                    x_label: "step".into(),
                    y_label: (*key).into(),
                    x_range: (0.0, last),
                    y_range: (0.0, top * 1.05),
                    log2_x: false,
                    series: vec![Series::new(key, pts, chart::BLUE, Style::Line)],
                }
            })
            .collect();
        chart::save_panels(&charts, &self.dir.join("plot.png")).map_err(|e| invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_state_files_are_recognised() {
        assert!(is_state_file("state-0000250.safetensors"));
        assert!(is_state_file("codebook-0001500.safetensors"));
        for other in [
            "clip-weights.safetensors",
            "model-encoder.safetensors",
            "state-000025.safetensors",
            "state-00002x0.safetensors",
            "notes-0000250.safetensors",
            "state-0000250.json",
        ] {
            assert!(!is_state_file(other), "{other}");
        }
    }

    #[test]
    fn settings_bind_only_once_a_checkpoint_exists() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("run");
        // a start that failed before its first checkpoint: new settings replace its own
        Run::open(&d, "toy", &serde_json::json!({"lr": 1.0})).unwrap();
        let mut run = Run::open(&d, "toy", &serde_json::json!({"lr": 2.0})).unwrap();
        let saved: serde_json::Value = read_json(&d.join("settings.json")).unwrap().unwrap();
        assert_eq!(saved["settings"]["lr"], 2.0);
        run.progress.step = 1;
        run.commit(|dir, step| {
            std::fs::write(Run::file(dir, "state", step), b"x").unwrap();
            Ok(())
        })
        .unwrap();
        let e = Run::open(&d, "toy", &serde_json::json!({"lr": 3.0}))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("lr = 2.0") && e.contains("asks for 3.0"), "{e}");
        let e = Run::open(&d, "other", &serde_json::json!({"lr": 2.0}))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a other run"), "{e}");
        assert_eq!(
            Run::open(&d, "toy", &serde_json::json!({"lr": 2.0}))
                .unwrap()
                .progress
                .step,
            1
        );
        // a user's own file in the folder survives the next checkpoint; the older state goes
        std::fs::write(d.join("clip-weights.safetensors"), b"mine").unwrap();
        run.progress.step = 2;
        run.commit(|dir, step| {
            std::fs::write(Run::file(dir, "state", step), b"y").unwrap();
            Ok(())
        })
        .unwrap();
        assert!(d.join("clip-weights.safetensors").is_file());
        assert!(!Run::file(&d, "state", 1).exists() && Run::file(&d, "state", 2).is_file());
    }

    #[test]
    fn history_drops_values_json_cannot_hold() {
        let mut v = BTreeMap::new();
        v.insert("loss".to_string(), 1.5);
        v.insert("val".to_string(), f64::NAN);
        let l = Logged::new(3, v);
        assert_eq!(l.values.len(), 1);
        let text = serde_json::to_string(&Progress {
            step: 3,
            train_seconds: 1.0,
            history: vec![l],
        })
        .unwrap();
        let back: Progress = serde_json::from_str(&text).unwrap();
        assert_eq!(back.history[0].values["loss"], 1.5);
    }
}
