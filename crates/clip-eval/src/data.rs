//! Evaluation datasets: class-folder trees, CSV/JSONL manifests and WebDataset shards, each with a
//! class-names file (one name per line) for classification, or several captions per image for
//! retrieval.
//!
//! - **Class folders**: `ROOT/<class>/<image>`; classes are the sub-folder names (sorted), or the
//!   names of a classes file, whose every name must have a folder with images.
//! - **Manifests**: JSONL rows `{"image": …, "label": 3}` (an index into the classes file) or
//!   `"label": "cat"` (a name), or `"caption"`/`"captions": […]` for retrieval; CSV with an
//!   `image`/`filepath` column and a `label` column or caption columns. Relative paths are resolved
//!   against the manifest's folder.
//! - **Shards**: `.tar` paths or brace patterns; `{key}.cls` holds a class index or name, `{key}.txt`
//!   a caption.
//!
//! Every set has a fingerprint of its items (paths, sizes, modification times, labels) that keys the
//! feature cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clip_data::image::{Alpha, load_rgb};
use clip_data::resize::Rgb8;
use clip_data::shards::Shards;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read '{path}': {msg}")]
    Read { path: String, msg: String },
    #[error("the class list '{0}' is empty")]
    NoClasses(String),
    #[error("class name {name:?} appears twice in '{path}' (lines {first} and {second})")]
    DuplicateClass {
        path: String,
        name: String,
        first: usize,
        second: usize,
    },
    #[error("class {name:?} has no images in '{path}'")]
    EmptyClass { path: String, name: String },
    #[error(
        "'{path}' row {row}: label {label} is not in the class list '{classes}' ({count} classes)"
    )]
    UnknownLabel {
        path: String,
        row: usize,
        label: String,
        classes: String,
        count: usize,
    },
    #[error("'{path}' row {row}: {msg}")]
    Row {
        path: String,
        row: usize,
        msg: String,
    },
    #[error("'{0}' has no images")]
    Empty(String),
    #[error("'{0}' is a classification set: give it a class list with --classes")]
    NeedClasses(String),
    #[error("'{0}' has no captions: retrieval needs \"caption\" or \"captions\" in each row")]
    NoCaptions(String),
    #[error("{0}")]
    Shards(String),
}

/// Where one image comes from.
#[derive(Debug, Clone)]
pub enum ImageRef {
    Path(PathBuf),
    Shard(Arc<Shards>, usize),
    /// an image held in memory (synthetic data)
    Memory(Arc<Rgb8>),
}

impl ImageRef {
    pub fn load(&self, alpha: Alpha) -> Result<Rgb8, String> {
        match self {
            ImageRef::Path(p) => load_rgb(p, alpha).map_err(|e| e.to_string()),
            ImageRef::Shard(s, i) => s.pair(*i).map(|(img, _)| img),
            ImageRef::Memory(img) => Ok((**img).clone()),
        }
    }

    pub fn name(&self) -> String {
        match self {
            ImageRef::Path(p) => p.display().to_string(),
            ImageRef::Shard(_, i) => format!("shard sample {i}"),
            ImageRef::Memory(_) => "in-memory image".into(),
        }
    }
}

/// A labelled (classification) or captioned (retrieval) evaluation set.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub name: String,
    pub images: Vec<ImageRef>,
    /// class index per image (classification sets)
    pub labels: Vec<usize>,
    /// captions per image (retrieval sets)
    pub captions: Vec<Vec<String>>,
    pub class_names: Vec<String>,
    /// identifies the items (paths, sizes, times, labels) for the feature cache
    pub fingerprint: u64,
}

/// FNV-1a over bytes, then mixed: a stable 64-bit content key (not cryptographic).
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(pub u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes()).bytes(&[0xff])
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Fast key of a float buffer: 4 lanes of multiply–rotate over 64-bit words.
    pub fn floats(&mut self, data: &[f32]) -> &mut Self {
        let mut lanes = [
            0x9E37_79B9_7F4A_7C15u64,
            0xC2B2_AE3D_27D4_EB4F,
            0x1656_67B1_9E37_79F9,
            0x27D4_EB2F_1656_67C5,
        ];
        for (i, chunk) in data.chunks(2).enumerate() {
            let w = chunk[0].to_bits() as u64
                | ((chunk.get(1).map_or(0, |v| v.to_bits()) as u64) << 32);
            let l = &mut lanes[i & 3];
            *l = (*l ^ w).wrapping_mul(0x9FB2_1C65_1E98_DF25).rotate_left(29);
        }
        for l in lanes {
            self.u64(l);
        }
        self.u64(data.len() as u64)
    }
}

/// Read a class-names file: one name per line (blank lines skipped), no duplicates.
pub fn read_classes(path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read(path).map_err(|e| DataError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let text = String::from_utf8(text).map_err(|_| DataError::Read {
        path: path.display().to_string(),
        msg: "not UTF-8 text".into(),
    })?;
    let names: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    check_classes(&names, &path.display().to_string())?;
    Ok(names.into_iter().map(|(_, n)| n).collect())
}

/// Empty lists and duplicate names are errors; `names` are (line, name).
pub fn check_classes(names: &[(usize, String)], origin: &str) -> Result<(), DataError> {
    if names.is_empty() {
        return Err(DataError::NoClasses(origin.into()));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (line, n) in names {
        if let Some(first) = seen.insert(n.as_str(), *line) {
            return Err(DataError::DuplicateClass {
                path: origin.into(),
                name: n.clone(),
                first,
                second: *line,
            });
        }
    }
    Ok(())
}

const IMAGE_EXT: [&str; 9] = [
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm",
];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXT.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_err(path: &Path, e: impl ToString) -> DataError {
    DataError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

fn fingerprint_paths(
    name: &str,
    images: &[ImageRef],
    labels: &[usize],
    captions: &[Vec<String>],
) -> u64 {
    let mut f = Fingerprint::default();
    f.str(name);
    for im in images {
        match im {
            ImageRef::Path(p) => {
                f.str(&p.display().to_string());
                if let Ok(m) = std::fs::metadata(p) {
                    f.u64(m.len());
                    if let Ok(t) = m.modified()
                        && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
                    {
                        f.u64(d.as_nanos() as u64);
                    }
                }
            }
            ImageRef::Shard(_, i) => {
                f.u64(*i as u64);
            }
            ImageRef::Memory(img) => {
                f.bytes(&img.data);
            }
        }
    }
    for l in labels {
        f.u64(*l as u64);
    }
    for c in captions {
        for t in c {
            f.str(t);
        }
    }
    f.0
}

impl EvalSet {
    /// A set held in memory.
    pub fn from_memory(
        name: &str,
        images: Vec<Rgb8>,
        labels: Vec<usize>,
        class_names: Vec<String>,
    ) -> EvalSet {
        let images: Vec<ImageRef> = images
            .into_iter()
            .map(|i| ImageRef::Memory(Arc::new(i)))
            .collect();
        Self::labelled(name.into(), images, labels, class_names)
    }

    /// Open a classification set (`classes` required for manifests and shards; optional for folders).
    pub fn classification(source: &str, classes: Option<&Path>) -> Result<EvalSet, DataError> {
        let class_list = classes.map(read_classes).transpose()?;
        let path = Path::new(source);
        let set = if path.is_dir() {
            Self::folders(path, class_list)?
        } else if is_shard_spec(source) {
            let names = class_list.ok_or_else(|| DataError::NeedClasses(source.into()))?;
            Self::shards(source, names, classes.expect("given"))?
        } else {
            let names = class_list.ok_or_else(|| DataError::NeedClasses(source.into()))?;
            Self::labelled_manifest(path, names, classes.expect("given"))?
        };
        if set.images.is_empty() {
            return Err(DataError::Empty(source.into()));
        }
        Ok(set)
    }

    fn folders(root: &Path, class_list: Option<Vec<String>>) -> Result<EvalSet, DataError> {
        let mut dirs: Vec<String> = std::fs::read_dir(root)
            .map_err(|e| read_err(root, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        let class_names = match class_list {
            Some(names) => {
                if let Some(extra) = dirs.iter().find(|d| !names.contains(d)) {
                    return Err(DataError::UnknownLabel {
                        path: root.display().to_string(),
                        row: 0,
                        label: format!("folder {extra:?}"),
                        classes: "the class list".into(),
                        count: names.len(),
                    });
                }
                names
            }
            None => {
                let named: Vec<(usize, String)> = dirs.iter().cloned().enumerate().collect();
                check_classes(&named, &root.display().to_string())?;
                dirs
            }
        };
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for (ci, name) in class_names.iter().enumerate() {
            let dir = root.join(name);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| is_image(p))
                        .collect()
                })
                .unwrap_or_default();
            if files.is_empty() {
                return Err(DataError::EmptyClass {
                    path: root.display().to_string(),
                    name: name.clone(),
                });
            }
            files.sort();
            labels.extend(std::iter::repeat_n(ci, files.len()));
            images.extend(files.into_iter().map(ImageRef::Path));
        }
        Ok(Self::labelled(
            root.display().to_string(),
            images,
            labels,
            class_names,
        ))
    }

    /// A classification set with its fingerprint.
    fn labelled(
        name: String,
        images: Vec<ImageRef>,
        labels: Vec<usize>,
        class_names: Vec<String>,
    ) -> EvalSet {
        let fingerprint = fingerprint_paths(&name, &images, &labels, &[]);
        EvalSet {
            name,
            images,
            labels,
            captions: Vec::new(),
            class_names,
            fingerprint,
        }
    }

    fn labelled_manifest(
        path: &Path,
        class_names: Vec<String>,
        classes_path: &Path,
    ) -> Result<EvalSet, DataError> {
        let rows = read_rows(path)?;
        let index = name_index(&class_names);
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for r in rows {
            let label = r.label.ok_or_else(|| DataError::Row {
                path: path.display().to_string(),
                row: r.row,
                msg: "no \"label\"".into(),
            })?;
            let l = resolve_label(&label, &index, class_names.len()).ok_or_else(|| {
                DataError::UnknownLabel {
                    path: path.display().to_string(),
                    row: r.row,
                    label: label.clone(),
                    classes: classes_path.display().to_string(),
                    count: class_names.len(),
                }
            })?;
            images.push(ImageRef::Path(r.image));
            labels.push(l);
        }
        Ok(Self::labelled(
            path.display().to_string(),
            images,
            labels,
            class_names,
        ))
    }

    fn shards(
        spec: &str,
        class_names: Vec<String>,
        classes_path: &Path,
    ) -> Result<EvalSet, DataError> {
        let shards = Arc::new(Shards::open(spec).map_err(|e| DataError::Shards(e.to_string()))?);
        let index = name_index(&class_names);
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let mut f = Fingerprint::default();
        f.str(spec);
        for i in 0..shards.len() {
            let label = shards.text(i).map_err(DataError::Shards)?;
            let l = resolve_label(&label, &index, class_names.len()).ok_or_else(|| {
                DataError::UnknownLabel {
                    path: spec.into(),
                    row: i + 1,
                    label: label.clone(),
                    classes: classes_path.display().to_string(),
                    count: class_names.len(),
                }
            })?;
            f.str(&label);
            images.push(ImageRef::Shard(shards.clone(), i));
            labels.push(l);
        }
        for p in shards.paths() {
            if let Ok(m) = std::fs::metadata(p) {
                f.u64(m.len());
            }
        }
        Ok(EvalSet {
            name: spec.into(),
            images,
            labels,
            captions: Vec::new(),
            class_names,
            fingerprint: f.0,
        })
    }

    /// Open a retrieval set: a manifest with one or more captions per image, or shards (one caption each).
    pub fn retrieval(source: &str) -> Result<EvalSet, DataError> {
        let mut images = Vec::new();
        let mut captions = Vec::new();
        if is_shard_spec(source) {
            // one caption per sample (`.txt` or the `.json` caption)
            let shards =
                Arc::new(Shards::open(source).map_err(|e| DataError::Shards(e.to_string()))?);
            for i in 0..shards.len() {
                images.push(ImageRef::Shard(shards.clone(), i));
                captions.push(vec![shards.text(i).map_err(DataError::Shards)?]);
            }
        } else {
            for r in read_rows(Path::new(source))? {
                if r.captions.is_empty() {
                    return Err(DataError::NoCaptions(source.into()));
                }
                images.push(ImageRef::Path(r.image));
                captions.push(r.captions);
            }
        }
        if images.is_empty() {
            return Err(DataError::Empty(source.into()));
        }
        Ok(Self::captioned(source, images, captions))
    }

    /// Open any image collection without requiring labels or captions (the training side of the
    /// overlap analysis): class folders, shards, or a manifest whose rows may lack captions.
    pub fn images_of(source: &str) -> Result<EvalSet, DataError> {
        if Path::new(source).is_dir() {
            return Self::classification(source, None);
        }
        if is_shard_spec(source) {
            return Self::retrieval(source);
        }
        let (images, captions): (Vec<ImageRef>, Vec<Vec<String>>) = read_rows(Path::new(source))?
            .into_iter()
            .map(|r| (ImageRef::Path(r.image), r.captions))
            .unzip();
        if images.is_empty() {
            return Err(DataError::Empty(source.into()));
        }
        Ok(Self::captioned(source, images, captions))
    }

    /// A set of images with captions (possibly none) and its fingerprint.
    fn captioned(name: &str, images: Vec<ImageRef>, captions: Vec<Vec<String>>) -> EvalSet {
        let fingerprint = fingerprint_paths(name, &images, &[], &captions);
        EvalSet {
            name: name.into(),
            images,
            labels: Vec::new(),
            captions,
            class_names: Vec::new(),
            fingerprint,
        }
    }

    /// The rows `idx` of a classification set, named `{name}-{tag}`; its fingerprint extends this
    /// set's with the tag and the indices.
    pub fn subset(&self, idx: &[usize], tag: &str) -> EvalSet {
        let mut f = Fingerprint(self.fingerprint);
        f.str(tag);
        for &i in idx {
            f.u64(i as u64);
        }
        EvalSet {
            name: format!("{}-{tag}", self.name),
            images: idx.iter().map(|&i| self.images[i].clone()).collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            captions: Vec::new(),
            class_names: self.class_names.clone(),
            fingerprint: f.0,
        }
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.class_names.len()];
        for &l in &self.labels {
            c[l] += 1;
        }
        c
    }

    /// Load image `i` (for sets read from disk, alpha per `alpha`).
    pub fn load(&self, i: usize, alpha: Alpha) -> Result<Rgb8, String> {
        self.images[i].load(alpha)
    }
}

fn is_shard_spec(s: &str) -> bool {
    s.ends_with(".tar") || s.contains('{') || s.contains("::")
}

fn name_index(names: &[String]) -> HashMap<&str, usize> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect()
}

fn resolve_label(label: &str, index: &HashMap<&str, usize>, count: usize) -> Option<usize> {
    if let Some(&i) = index.get(label) {
        return Some(i);
    }
    label.parse::<usize>().ok().filter(|&i| i < count)
}

struct Row {
    row: usize,
    image: PathBuf,
    label: Option<String>,
    captions: Vec<String>,
}

fn read_rows(path: &Path) -> Result<Vec<Row>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| read_err(path, e))?;
    // relative to the manifest's folder (`join` keeps absolute paths as they are)
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |s: &str| base.join(s);
    let row_err = |row: usize, msg: String| DataError::Row {
        path: path.display().to_string(),
        row,
        msg,
    };
    let mut rows = Vec::new();
    if path.extension().is_some_and(|e| e == "csv") {
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        let headers = rd.headers().map_err(|e| read_err(path, e))?.clone();
        let col = |names: &[&str]| {
            headers
                .iter()
                .position(|h| names.contains(&h.to_ascii_lowercase().as_str()))
        };
        let img_col = col(&["image", "filepath", "path", "file"])
            .ok_or_else(|| row_err(1, "no image/filepath column in the header".into()))?;
        let label_col = col(&["label", "class"]);
        let caption_cols: Vec<usize> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                let h = h.to_ascii_lowercase();
                ["caption", "title", "text"]
                    .iter()
                    .any(|c| h == *c || h.starts_with(&format!("{c}_")))
            })
            .map(|(i, _)| i)
            .collect();
        for (i, rec) in rd.records().enumerate() {
            let rec = rec.map_err(|e| row_err(i + 2, e.to_string()))?;
            rows.push(Row {
                row: i + 2,
                image: resolve(rec.get(img_col).unwrap_or("")),
                label: label_col
                    .and_then(|c| rec.get(c))
                    .map(|s| s.trim().to_owned()),
                captions: caption_cols
                    .iter()
                    .filter_map(|&c| rec.get(c))
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
            });
        }
    } else {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| row_err(i + 1, e.to_string()))?;
            let image = ["image", "filepath", "path", "file"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
                .ok_or_else(|| row_err(i + 1, "no \"image\" field".into()))?;
            let label = match v.get("label") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                Some(_) => {
                    return Err(row_err(
                        i + 1,
                        "\"label\" is neither a number nor a name".into(),
                    ));
                }
                None => None,
            };
            let mut captions = Vec::new();
            if let Some(c) = v.get("caption").and_then(|c| c.as_str()) {
                captions.push(c.to_owned());
            }
            if let Some(a) = v.get("captions").and_then(|c| c.as_array()) {
                captions.extend(a.iter().filter_map(|c| c.as_str().map(str::to_owned)));
            }
            rows.push(Row {
                row: i + 1,
                image: resolve(image),
                label,
                captions,
            });
        }
    }
    Ok(rows)
}
