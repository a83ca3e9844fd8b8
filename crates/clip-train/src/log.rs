//! The metrics log of a run: one JSON line per optimiser step in `OUT/metrics.jsonl`.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One line of the metrics log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepLog {
    pub step: usize,
    pub loss: f32,
    pub lr: f64,
    pub logit_scale: f32,
    pub samples_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_shot_top1: Option<f64>,
}

fn io_err(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Append one line to `out/metrics.jsonl`.
pub fn append(out: &Path, log: &StepLog) -> std::io::Result<()> {
    let path = out.join("metrics.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    let line = serde_json::to_string(log).map_err(std::io::Error::other)?;
    writeln!(f, "{line}").map_err(|e| io_err(&path, e))
}

/// Every logged step of the run in `out` (including before a resume); a missing log is empty.
pub fn read(out: &Path) -> std::io::Result<Vec<StepLog>> {
    let path = out.join("metrics.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&path, e)),
    };
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                std::io::Error::other(format!("{} line {}: {e}", path.display(), i + 1))
            })
        })
        .collect()
}

/// Rewrite the log keeping only steps up to `step` (after a resume from `step`, the steps logged
/// after that checkpoint are run again and must not appear twice).
pub fn truncate_after(out: &Path, step: usize) -> std::io::Result<()> {
    let kept: Vec<StepLog> = read(out)?.into_iter().filter(|l| l.step <= step).collect();
    let mut text = String::new();
    for l in &kept {
        text.push_str(&serde_json::to_string(l).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    clip_data::out::write_atomic(&out.join("metrics.jsonl"), text.as_bytes())
}
