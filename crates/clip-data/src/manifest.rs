//! Image–caption manifests: CSV (a header with `image`/`filepath`/`path` and one or more caption
//! columns: `caption`, `title`, `text`, `caption_2`, …) or JSONL (`{"image": …, "caption": …}` or
//! `"captions": […]`). Relative image paths are resolved against the manifest's directory. Each
//! (image, caption) combination is one training pair.

use std::path::{Path, PathBuf};

use crate::image::{Alpha, load_rgb};
use crate::resize::Rgb8;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest '{path}': {msg}")]
    Read { path: String, msg: String },
    #[error("manifest '{path}' line {line}: {msg}")]
    Line {
        path: String,
        line: usize,
        msg: String,
    },
    #[error("manifest '{path}' has no image–caption pairs")]
    Empty { path: String },
}

/// All pairs of a manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub pairs: Vec<(PathBuf, String)>,
    pub alpha: Alpha,
}

const IMAGE_COLUMNS: [&str; 4] = ["image", "filepath", "path", "file"];

fn is_caption_column(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["caption", "captions", "title", "text"]
        .iter()
        .any(|c| n == *c || n.starts_with(&format!("{c}_")))
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read {
            path: p.clone(),
            msg: e.to_string(),
        })?;
        // relative to the manifest's folder (`join` keeps absolute paths as they are)
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |s: &str| base.join(s);
        let mut pairs = Vec::new();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let err = |msg: String| ManifestError::Line {
                    path: p.clone(),
                    line: i + 1,
                    msg,
                };
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
                let image = IMAGE_COLUMNS
                    .iter()
                    .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
                    .ok_or_else(|| err("no \"image\" field".into()))?;
                let captions: Vec<String> = match (v.get("caption"), v.get("captions")) {
                    (Some(c), _) => vec![
                        c.as_str()
                            .ok_or_else(|| err("\"caption\" is not a string".into()))?
                            .to_owned(),
                    ],
                    (None, Some(serde_json::Value::Array(a))) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect(),
                    _ => return Err(err("no \"caption\" or \"captions\" field".into())),
                };
                pairs.extend(captions.into_iter().map(|c| (resolve(image), c)));
            }
        } else {
            let mut r = csv::Reader::from_reader(text.as_bytes());
            let headers = r
                .headers()
                .map_err(|e| ManifestError::Read {
                    path: p.clone(),
                    msg: e.to_string(),
                })?
                .clone();
            let img_col = headers
                .iter()
                .position(|h| IMAGE_COLUMNS.contains(&h.to_ascii_lowercase().as_str()))
                .ok_or_else(|| ManifestError::Line {
                    path: p.clone(),
                    line: 1,
                    msg: format!("no image column (one of {})", IMAGE_COLUMNS.join(", ")),
                })?;
            let cap_cols: Vec<usize> = headers
                .iter()
                .enumerate()
                .filter(|(_, h)| is_caption_column(h))
                .map(|(i, _)| i)
                .collect();
            if cap_cols.is_empty() {
                return Err(ManifestError::Line {
                    path: p,
                    line: 1,
                    msg: "no caption column (caption, title, text, caption_2, …)".into(),
                });
            }
            for (i, rec) in r.records().enumerate() {
                let rec = rec.map_err(|e| ManifestError::Line {
                    path: p.clone(),
                    line: i + 2,
                    msg: e.to_string(),
                })?;
                let image = resolve(rec.get(img_col).unwrap_or(""));
                for &c in &cap_cols {
                    if let Some(cap) = rec.get(c) {
                        pairs.push((image.clone(), cap.to_owned()));
                    }
                }
            }
        }
        if pairs.is_empty() {
            return Err(ManifestError::Empty { path: p });
        }
        Ok(Manifest {
            pairs,
            alpha: Alpha::Drop,
        })
    }

    /// Decode the image of pair `index` (errors are per-sample and name the file).
    pub fn pair(&self, index: usize) -> Result<(Rgb8, String), String> {
        let (path, caption) = &self.pairs[index % self.pairs.len()];
        let img = load_rgb(path, self.alpha).map_err(|e| e.to_string())?;
        Ok((img, caption.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl_with_several_captions() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("m.csv");
        std::fs::write(
            &csv,
            "image,caption,caption_2\na.png,\"a red, round thing\",a circle\nb.png,a square,\n",
        )
        .unwrap();
        let m = Manifest::read(&csv).unwrap();
        assert_eq!(m.pairs.len(), 4);
        assert_eq!(
            m.pairs[0],
            (dir.path().join("a.png"), "a red, round thing".to_owned())
        );
        let jsonl = dir.path().join("m.jsonl");
        std::fs::write(&jsonl, "{\"image\": \"a.png\", \"captions\": [\"x\", \"y\"]}\n{\"image\": \"/abs/b.png\", \"caption\": \"z\"}\n").unwrap();
        let m = Manifest::read(&jsonl).unwrap();
        assert_eq!(m.pairs.len(), 3);
        assert_eq!(m.pairs[2].0, PathBuf::from("/abs/b.png"));
        // a missing file is a per-sample error naming it
        let err = m.pair(0).unwrap_err();
        assert!(
            err.starts_with("cannot read image '") && err.contains("a.png"),
            "{err}"
        );
    }

    #[test]
    fn empty_and_malformed_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("empty.csv");
        std::fs::write(&csv, "image,caption\n").unwrap();
        assert_eq!(
            Manifest::read(&csv).unwrap_err().to_string(),
            format!("manifest '{}' has no image–caption pairs", csv.display())
        );
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"image\": \"a.png\"}\n").unwrap();
        assert_eq!(
            Manifest::read(&bad).unwrap_err().to_string(),
            format!(
                "manifest '{}' line 1: no \"caption\" or \"captions\" field",
                bad.display()
            )
        );
    }
}
