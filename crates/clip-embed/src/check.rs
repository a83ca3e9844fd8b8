//! `clip check`: evidence that this install and this weights file give the reference's numbers.
//!
//! 1. **checksum** — the weights file's SHA-256 against the published one where the project knows
//!    it (OpenAI's release URLs carry it, open_clip's GitHub releases a prefix of it).
//! 2. **stored record** — the model's embeddings of built-in inputs (three pictures exercising the
//!    RGB, tall/wide and transparent preprocessing paths, five captions including one longer than
//!    the context) against a record open_clip made for the same file (`configs/checks.json`, keyed
//!    by SHA-256: the first 16 dimensions of every embedding and the full image×text cosine
//!    matrix; `tools/gen_check_records.py`, which a maintainer with a tag's weights runs to add it).
//! 3. **reference** — with `--reference PYTHON`, open_clip itself run in that Python environment
//!    on the same file and inputs (`tools/clip_check_reference.py`, compiled in), compared on
//!    every dimension.
//!
//! Every step says what it compared and the largest difference; a step that cannot run says why
//! (skipped), and the check fails only on a difference above [`TOLERANCE`] or an unusable file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::models::{self, Hub, ModelError, ModelOptions};
use crate::pipeline::{EmbedError, Embedder};

/// Largest accepted |Δ| between our embeddings (L2-normalised) and the reference's.
pub const TOLERANCE: f32 = 1e-4;

const SCRIPT: &str = include_str!("../../../tools/clip_check_reference.py");
const IMAGES: [(&str, &[u8]); 3] = [
    ("wide.png", include_bytes!("../assets/check/wide.png")),
    ("tall.png", include_bytes!("../assets/check/tall.png")),
    ("alpha.png", include_bytes!("../assets/check/alpha.png")),
];
const TEXTS: &str = include_str!("../assets/check/texts.txt");
const RECORDS: &str = include_str!("../../../configs/checks.json");

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

/// One step of the check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

/// What `clip check` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub model: String,
    pub weights: PathBuf,
    pub sha256: String,
    pub steps: Vec<Step>,
}

impl Report {
    /// No step failed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.outcome != Outcome::Fail)
    }

    /// Some step compared something and passed.
    pub fn verified(&self) -> bool {
        self.passed() && self.steps.iter().any(|s| s.outcome == Outcome::Pass)
    }
}

/// A stored reference record.
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub name: String,
    pub sha256: String,
    pub image: Vec<Vec<f32>>,
    pub text: Vec<Vec<f32>>,
    pub similarity: Vec<Vec<f32>>,
    pub made_with: serde_json::Value,
}

/// The records shipped in the binary.
pub fn records() -> Vec<Record> {
    serde_json::from_str(RECORDS).unwrap_or_else(|e| unreachable!("configs/checks.json: {e}"))
}

/// The built-in captions.
pub fn texts() -> Vec<String> {
    TEXTS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn step(name: &'static str, outcome: Outcome, detail: impl Into<String>) -> Step {
    Step {
        name,
        outcome,
        detail: detail.into(),
    }
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> Option<f32> {
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.len() != y.len()) {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
            .fold(0.0, f32::max),
    )
}

fn judge(name: &'static str, what: &str, diffs: &[(&str, Option<f32>)]) -> Step {
    let mut parts = Vec::new();
    let mut worst = 0f32;
    for (label, d) in diffs {
        match d {
            Some(d) => {
                worst = worst.max(*d);
                parts.push(format!("{label} max |Δ| {d:.1e}"));
            }
            None => {
                return step(
                    name,
                    Outcome::Fail,
                    format!("{what}: {label} have other shapes than ours"),
                );
            }
        }
    }
    let outcome = if worst <= TOLERANCE {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    step(
        name,
        outcome,
        format!("{what}: {} (tolerance {TOLERANCE:.0e})", parts.join(", ")),
    )
}

/// Check `spec` (anything `clip embed --model` takes). `reference`: a Python interpreter with
/// open_clip installed, to compare with on the spot.
pub fn check(
    spec: &str,
    opts: &ModelOptions,
    reference: Option<&Path>,
) -> Result<Report, EmbedError> {
    let hub = Hub::from_env();
    let weights = models::weights_file(spec, opts, &hub)?;
    let sha256 = models::sha256_file(&weights)
        .map_err(|e| ModelError::Resolve(format!("cannot read '{}': {e}", weights.display())))?;
    let mut steps = vec![checksum(spec, &sha256)];

    let emb = Embedder::load_with(spec, opts, 8)?;
    let dir = tempfile::tempdir().map_err(|e| EmbedError::Image(e.to_string()))?;
    let mut images = Vec::new();
    for (name, bytes) in IMAGES {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).map_err(|e| EmbedError::Image(e.to_string()))?;
        images.push(p);
    }
    let dim = emb.dim();
    let ours_img: Vec<Vec<f32>> = emb
        .embed_files(&images, false)?
        .chunks(dim)
        .map(<[f32]>::to_vec)
        .collect();
    // a tiny model's vocabulary can be smaller than CLIP's tokenizer's: its texts are not checked
    let with_texts = matches!(emb.tokenizer, clip_tokenizer::TextTokenizer::Hf(_))
        || emb.clip.config.text_cfg.vocab_size >= clip_tokenizer::VOCAB_SIZE;
    let texts = if with_texts { texts() } else { Vec::new() };
    let ours_txt: Vec<Vec<f32>> = emb
        .embed_texts(&texts, true, false)?
        .chunks(dim)
        .map(<[f32]>::to_vec)
        .collect();
    let note = if with_texts {
        ""
    } else {
        " (texts not checked: the model's vocabulary is smaller than its tokenizer's)"
    };

    steps.push(match records().into_iter().find(|r| r.sha256 == sha256) {
        Some(r) => {
            let prefix = |rows: &[Vec<f32>]| -> Vec<Vec<f32>> {
                rows.iter().map(|v| v[..v.len().min(16)].to_vec()).collect()
            };
            let sim: Vec<Vec<f32>> = ours_img
                .iter()
                .map(|i| {
                    ours_txt
                        .iter()
                        .map(|t| i.iter().zip(t).map(|(a, b)| a * b).sum())
                        .collect()
                })
                .collect();
            let mut diffs = vec![("image embeddings", max_diff(&prefix(&ours_img), &r.image))];
            if !texts.is_empty() || !r.text.is_empty() {
                diffs.push(("text embeddings", max_diff(&prefix(&ours_txt), &r.text)));
                diffs.push(("image×text cosines", max_diff(&sim, &r.similarity)));
            }
            judge(
                "stored record",
                &format!("record '{}' made with {}{note}", r.name, r.made_with),
                &diffs,
            )
        }
        None => step(
            "stored record",
            Outcome::Skip,
            "no stored record for this file (tools/gen_check_records.py makes one from open_clip)",
        ),
    });

    steps.push(match reference {
        None => step(
            "reference",
            Outcome::Skip,
            "not asked for (--reference PYTHON runs open_clip on the same file and inputs)",
        ),
        Some(python) => run_reference(
            python,
            &emb,
            &weights,
            &images,
            &texts,
            dir.path(),
            (&ours_img, &ours_txt),
            note,
        ),
    });
    Ok(Report {
        model: spec.to_owned(),
        weights,
        sha256,
        steps,
    })
}

/// The published-checksum step.
fn checksum(spec: &str, sha256: &str) -> Step {
    if let Some(row) = models::by_sha256(sha256) {
        return step(
            "checksum",
            Outcome::Pass,
            format!(
                "SHA-256 {}… is the published checksum of {}'s release file",
                &sha256[..16],
                row.spec()
            ),
        );
    }
    let published = spec.split_once(':').and_then(|(name, tag)| {
        models::pretrained()
            .iter()
            .find(|p| p.model.eq_ignore_ascii_case(name) && p.tag == models::clean_tag(tag))
            .and_then(|p| p.sha256.clone())
    });
    match published {
        Some(want) => step(
            "checksum",
            Outcome::Skip,
            format!(
                "SHA-256 {}…; the published checksum ({}…) is of the original release file, not of this Hugging Face copy",
                &sha256[..16],
                &want[..want.len().min(16)]
            ),
        ),
        None => step(
            "checksum",
            Outcome::Skip,
            format!(
                "SHA-256 {}…: no published checksum for this file",
                &sha256[..16]
            ),
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_reference(
    python: &Path,
    emb: &Embedder,
    weights: &Path,
    images: &[PathBuf],
    texts: &[String],
    dir: &Path,
    (ours_img, ours_txt): (&[Vec<f32>], &[Vec<f32>]),
    note: &str,
) -> Step {
    let fail = |msg: String| step("reference", Outcome::Fail, msg);
    if let Some(cfg) = weights.parent().map(|d| d.join("config.json"))
        && let Ok(text) = std::fs::read_to_string(&cfg)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && clip_model::hf::is_hf_config(&v)
    {
        return step(
            "reference",
            Outcome::Skip,
            "a transformers CLIPModel folder: open_clip cannot load it (its parity with transformers is tested in CI)",
        );
    }
    let mut config = match serde_json::to_value(&emb.clip.config) {
        Ok(v) => v,
        Err(e) => return fail(format!("cannot write the model's config: {e}")),
    };
    let pre = config
        .as_object_mut()
        .and_then(|m| m.remove("preprocess_cfg"))
        .unwrap_or(serde_json::json!({}));
    let files = [
        ("clip_check_reference.py", SCRIPT.to_owned()),
        (
            "config.json",
            serde_json::json!({"model_cfg": config, "preprocess_cfg": pre}).to_string(),
        ),
        ("texts.txt", texts.join("\n") + "\n"),
    ];
    for (name, body) in &files {
        if let Err(e) = std::fs::write(dir.join(name), body) {
            return fail(format!("cannot write {name}: {e}"));
        }
    }
    let out = dir.join("reference.json");
    let mut cmd = Command::new(python);
    cmd.arg(dir.join("clip_check_reference.py"))
        .arg("--config")
        .arg(dir.join("config.json"))
        .arg("--weights")
        .arg(weights)
        .arg("--texts")
        .arg(dir.join("texts.txt"))
        .arg("--out")
        .arg(&out)
        .arg("--images")
        .args(images);
    if let clip_tokenizer::TextTokenizer::Hf(t) = &emb.tokenizer
        && let Some(d) = t.path.parent()
    {
        cmd.arg("--tokenizer-dir").arg(d);
    }
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => return fail(format!("cannot run '{}': {e}", python.display())),
    };
    if output.status.code() == Some(3) {
        return step(
            "reference",
            Outcome::Skip,
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        );
    }
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        return fail(format!(
            "'{}' failed ({}); is open_clip_torch installed there? Its last words:\n    {}",
            python.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
        ));
    }
    #[derive(Deserialize)]
    struct Out {
        image: Vec<Vec<f32>>,
        text: Vec<Vec<f32>>,
        versions: serde_json::Value,
    }
    let r: Out = match std::fs::read_to_string(&out)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot read the reference's output: {e}")),
    };
    let text = if texts.is_empty() {
        None
    } else {
        Some(max_diff(ours_txt, &r.text))
    };
    let mut diffs = vec![("image embeddings", max_diff(ours_img, &r.image))];
    if let Some(t) = text {
        diffs.push(("text embeddings", t));
    }
    judge(
        "reference",
        &format!("open_clip ({}) on this file{note}", r.versions),
        &diffs,
    )
}
