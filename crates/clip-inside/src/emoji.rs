//! The rows of an emoji import (`clip import-emoji`): every image of every imported style with
//! its concept, tone, category and subcategory, read from the `eval_STYLE_seen.jsonl` and
//! `eval_STYLE_heldout.jsonl` manifests (which list each image once).

use std::path::{Path, PathBuf};

use clip_eval::EvalError;

/// One image of the import.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub image: PathBuf,
    pub concept: String,
    pub style: String,
    /// `default`, `light`, …, `dark`, or two tones as `light/dark`
    pub tone: String,
    pub category: String,
    pub subcategory: String,
    /// whether the concept is a training concept (from the `seen` manifest)
    pub trained: bool,
}

impl Row {
    /// The image, flattened onto white.
    pub fn load(&self) -> Result<clip_data::resize::Rgb8, EvalError> {
        clip_data::image::load_rgb(&self.image, clip_data::image::Alpha::FlattenOnWhite)
            .map_err(|e| EvalError::Invalid(e.to_string()))
    }
}

/// The images of `rows`, in order.
pub fn load_all(rows: &[&Row]) -> Result<Vec<clip_data::resize::Rgb8>, EvalError> {
    rows.iter().map(|r| r.load()).collect()
}

/// Every row of an import, style by style in `import.json`'s order.
pub struct Import {
    pub dir: PathBuf,
    pub styles: Vec<String>,
    pub rows: Vec<Row>,
    pub skin_tones: bool,
}

fn read_err(path: &Path, msg: impl std::fmt::Display) -> EvalError {
    EvalError::Invalid(format!("cannot read '{}': {msg}", path.display()))
}

impl Import {
    /// Read the import in `dir` (its `import.json` must exist: it marks a complete import).
    pub fn read(dir: &Path) -> Result<Import, EvalError> {
        let record = dir.join("import.json");
        let text = std::fs::read_to_string(&record).map_err(|e| {
            EvalError::Invalid(format!(
                "'{}' is not a complete emoji import ({e}); run `clip import-emoji --packages PKGS --out {}` first",
                dir.display(),
                dir.display()
            ))
        })?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| read_err(&record, e))?;
        let styles: Vec<String> = meta["styles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if styles.is_empty() {
            return Err(read_err(&record, "no \"styles\" list"));
        }
        let mut rows = Vec::new();
        for style in &styles {
            for (part, trained) in [("seen", true), ("heldout", false)] {
                let path = dir.join(format!("eval_{style}_{part}.jsonl"));
                let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_str(line)
                        .map_err(|e| read_err(&path, format!("row {}: {e}", i + 1)))?;
                    let field = |k: &str| -> Result<String, EvalError> {
                        v[k].as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| read_err(&path, format!("row {} has no \"{k}\"", i + 1)))
                    };
                    rows.push(Row {
                        image: dir.join(field("image")?),
                        concept: field("concept")?,
                        style: field("style")?,
                        tone: v["tone"].as_str().unwrap_or("default").to_owned(),
                        category: v["category"].as_str().unwrap_or("").to_owned(),
                        subcategory: v["subcategory"].as_str().unwrap_or("").to_owned(),
                        trained,
                    });
                }
            }
        }
        Ok(Import {
            dir: dir.to_owned(),
            styles,
            rows,
            skin_tones: meta["skin_tones"].as_bool().unwrap_or(false),
        })
    }

    /// The default-tone rows of `concept`, one per style.
    pub fn images_of(&self, concept: &str) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.concept == concept && r.tone == "default")
            .collect()
    }

    /// Every concept name (sorted, unique).
    pub fn concepts(&self) -> Vec<String> {
        let mut v: Vec<String> = self.rows.iter().map(|r| r.concept.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}
