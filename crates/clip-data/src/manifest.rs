//! Manifests, the one reader for every command: CSV (a header with an `image`/`filepath`/`path`/
//! `file` column, an optional `label`/`class` column, and caption columns `caption`, `captions`,
//! `title`, `text`, `caption_2`, …) or JSONL (`{"image": …}` with `"label"` and/or `"caption"` /
//! `"captions": […]`). Relative image paths are resolved against the manifest's folder. In JSONL a
//! numeric `label` is always a class index and a string always a class name; CSV cells have no
//! types, so a CSV label is a class name when one matches and an index otherwise.
//!
//! Every non-blank line is one row (blank lines in JSONL are skipped: they hold no row); a row that
//! cannot be read is an error naming the manifest and its line.

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

/// A row's class label as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    /// a JSON number: an index into the class list
    Index(u64),
    /// a JSON string: a class name
    Name(String),
    /// untyped text (CSV cells, shard `.cls` files): a name when one matches, else an index
    Text(String),
}

impl Label {
    /// The class index of this label in `names` (looked up through `index`), if it is one.
    pub fn resolve(
        &self,
        index: &std::collections::HashMap<&str, usize>,
        count: usize,
    ) -> Option<usize> {
        match self {
            Label::Index(i) => usize::try_from(*i).ok().filter(|&i| i < count),
            Label::Name(n) => index.get(n.as_str()).copied(),
            Label::Text(t) => index
                .get(t.as_str())
                .copied()
                .or_else(|| t.parse::<usize>().ok().filter(|&i| i < count)),
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Index(i) => write!(f, "{i}"),
            Label::Name(n) => write!(f, "{n:?}"),
            Label::Text(t) => write!(f, "{t}"),
        }
    }
}

/// One manifest row. Captions are as written (an empty CSV cell is an empty caption: training
/// counts it as a bad sample, retrieval refuses it).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line in the file
    pub line: usize,
    pub image: PathBuf,
    pub label: Option<Label>,
    pub captions: Vec<String>,
}

const IMAGE_COLUMNS: [&str; 4] = ["image", "filepath", "path", "file"];
const LABEL_COLUMNS: [&str; 2] = ["label", "class"];

fn is_caption_column(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["caption", "captions", "title", "text"]
        .iter()
        .any(|c| n == *c || n.starts_with(&format!("{c}_")))
}

/// Every row of a CSV or JSONL manifest (by extension: `.csv` is CSV, anything else JSONL).
pub fn read_rows(path: &Path) -> Result<Vec<Row>, ManifestError> {
    let p = path.display().to_string();
    let text = crate::text::read_text(path).map_err(|e| ManifestError::Read {
        path: p.clone(),
        msg: e.to_string(),
    })?;
    // relative to the manifest's folder (`join` keeps absolute paths as they are)
    let base = path.parent().unwrap_or(Path::new("."));
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        csv_rows(&text, base, &p)
    } else {
        jsonl_rows(&text, base, &p)
    }
}

fn jsonl_rows(text: &str, base: &Path, p: &str) -> Result<Vec<Row>, ManifestError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| ManifestError::Line {
            path: p.to_owned(),
            line: i + 1,
            msg,
        };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        let image = IMAGE_COLUMNS
            .iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
            .ok_or_else(|| err("no \"image\" field".into()))?;
        let label = match v.get("label") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(Label::Name(s.clone())),
            Some(serde_json::Value::Number(n)) => {
                Some(Label::Index(n.as_u64().ok_or_else(|| {
                    err(format!("\"label\" {n} is not a class index (0, 1, 2, …)"))
                })?))
            }
            Some(_) => return Err(err("\"label\" is neither a number nor a name".into())),
        };
        let mut captions = Vec::new();
        if let Some(c) = v.get("caption") {
            let c = c
                .as_str()
                .ok_or_else(|| err("\"caption\" is not a string".into()))?;
            captions.push(c.to_owned());
        }
        if let Some(a) = v.get("captions") {
            let a = a
                .as_array()
                .ok_or_else(|| err("\"captions\" is not a list".into()))?;
            for c in a {
                let c = c
                    .as_str()
                    .ok_or_else(|| err("\"captions\" holds a value that is not a string".into()))?;
                captions.push(c.to_owned());
            }
        }
        rows.push(Row {
            line: i + 1,
            image: base.join(image),
            label,
            captions,
        });
    }
    Ok(rows)
}

fn csv_rows(text: &str, base: &Path, p: &str) -> Result<Vec<Row>, ManifestError> {
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let headers = rd
        .headers()
        .map_err(|e| ManifestError::Read {
            path: p.to_owned(),
            msg: e.to_string(),
        })?
        .clone();
    let col = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.contains(&h.trim().to_ascii_lowercase().as_str()))
    };
    let img_col = col(&IMAGE_COLUMNS).ok_or_else(|| ManifestError::Line {
        path: p.to_owned(),
        line: 1,
        msg: format!("no image column (one of {})", IMAGE_COLUMNS.join(", ")),
    })?;
    let label_col = col(&LABEL_COLUMNS);
    let caption_cols: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| is_caption_column(h.trim()))
        .map(|(i, _)| i)
        .collect();
    let mut rows = Vec::new();
    for rec in rd.records() {
        let rec = rec.map_err(|e| ManifestError::Line {
            path: p.to_owned(),
            line: e.position().map_or(0, |pos| pos.line() as usize),
            msg: e.to_string(),
        })?;
        let line = rec
            .position()
            .map_or(rows.len() + 2, |pos| pos.line() as usize);
        rows.push(Row {
            line,
            image: base.join(rec.get(img_col).unwrap_or("").trim()),
            label: label_col
                .and_then(|c| rec.get(c))
                .map(|s| Label::Text(s.trim().to_owned())),
            captions: caption_cols
                .iter()
                .filter_map(|&c| rec.get(c))
                .map(|s| s.trim().to_owned())
                .collect(),
        });
    }
    Ok(rows)
}

/// The (image, caption) pairs of a manifest, for training: each caption of a row is one pair.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub pairs: Vec<(PathBuf, String)>,
    pub alpha: Alpha,
}

impl Manifest {
    /// Every caption of every row; a row without a caption is an error naming its line.
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let p = path.display().to_string();
        let mut pairs = Vec::new();
        for row in read_rows(path)? {
            if row.captions.is_empty() {
                return Err(ManifestError::Line {
                    path: p,
                    line: row.line,
                    msg: "no \"caption\" or \"captions\" field".into(),
                });
            }
            pairs.extend(row.captions.into_iter().map(|c| (row.image.clone(), c)));
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
        let (path, caption) = self
            .pairs
            .get(index % self.pairs.len().max(1))
            .ok_or("the manifest has no pairs")?;
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
