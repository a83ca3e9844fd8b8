//! Evaluation datasets: class-folder trees, CSV/JSONL manifests and WebDataset shards, each with a
//! class-names file (one name per line) for classification, or several captions per image for
//! retrieval.
//!
//! - **Class folders**: `ROOT/<class>/<image>`; classes are the sub-folder names (sorted), or the
//!   names of a classes file, whose every name must have a folder with images.
//! - **Manifests** ([`crate::manifest`]): rows with `"label"` (a JSON number is an index into the
//!   classes file, a string a name) or `"caption"`/`"captions": […]` for retrieval.
//! - **Shards** ([`crate::shards`]): `.tar` paths or brace patterns; `{key}.cls` holds the label,
//!   `{key}.txt` a caption. Damage found while indexing is kept in [`EvalSet::warnings`] and reported
//!   by every command that reads the set, as training reports it.
//!
//! Every set has a fingerprint of its items (paths, the bytes of every file, labels, captions) that
//! keys the feature cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Preprocess;
use crate::files::{FilesError, class_folders, class_images};
use crate::image::{Alpha, load_rgb};
use crate::manifest::{Label, ManifestError, Row, read_rows};
use crate::resize::Rgb8;
use crate::shards::Shards;
use crate::text::{TextError, check_names, read_names};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read '{path}': {msg}")]
    Read { path: String, msg: String },
    #[error(transparent)]
    Text(#[from] TextError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
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

    /// The model input `[3, n, n]` of this image under `pre` (decoded in its own mode for files and
    /// shards, so the reference order applies).
    pub fn preprocess(&self, pre: &Preprocess) -> Result<Vec<f32>, String> {
        match self {
            ImageRef::Path(p) => pre.load(p).map_err(|e| e.to_string()),
            ImageRef::Shard(s, i) => {
                let (bytes, name) = s.image_bytes(*i)?;
                pre.load_bytes(&bytes, &name).map_err(|e| e.to_string())
            }
            ImageRef::Memory(img) => Ok(pre.apply(img)),
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
    /// identifies the items (paths, file contents, labels) for the feature cache
    pub fingerprint: u64,
    /// damage found while opening the set (truncated shards, incomplete samples): samples that are
    /// not in it. Report these; never drop them silently.
    pub warnings: Vec<String>,
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

/// Read a class-names file: one name per line, no blank lines, no duplicates.
pub fn read_classes(path: &Path) -> Result<Vec<String>, DataError> {
    Ok(read_names(path, "class")?)
}

/// A hash of a file's bytes (xxh3, streamed): a file replaced by another of the same size with its
/// modification time restored still changes it. An unreadable file hashes to 0 (its error is
/// reported when it is decoded).
pub fn content_hash(path: &Path) -> u64 {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return 0,
        }
    }
    h.digest()
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
                f.str(&p.display().to_string()).u64(content_hash(p));
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
        } else {
            let (Some(names), Some(classes)) = (class_list, classes) else {
                return Err(DataError::NeedClasses(source.into()));
            };
            if is_shard_spec(source) {
                Self::shards(source, names, classes)?
            } else {
                Self::labelled_manifest(path, names, classes)?
            }
        };
        if set.images.is_empty() {
            return Err(DataError::Empty(source.into()));
        }
        Ok(set)
    }

    fn folders(root: &Path, class_list: Option<Vec<String>>) -> Result<EvalSet, DataError> {
        let dirs: Vec<String> = class_folders(root)?.into_iter().map(|(n, _)| n).collect();
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
                check_names(&named, "class", &root.display().to_string())?;
                dirs
            }
        };
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for (ci, name) in class_names.iter().enumerate() {
            let files = class_images(&root.join(name))?;
            if files.is_empty() {
                return Err(DataError::EmptyClass {
                    path: root.display().to_string(),
                    name: name.clone(),
                });
            }
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
            warnings: Vec::new(),
        }
    }

    fn labelled_manifest(
        path: &Path,
        class_names: Vec<String>,
        classes_path: &Path,
    ) -> Result<EvalSet, DataError> {
        let index = name_index(&class_names);
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for r in manifest_rows(path)? {
            let label = r.label.ok_or_else(|| DataError::Row {
                path: path.display().to_string(),
                row: r.line,
                msg: "no \"label\"".into(),
            })?;
            let l = label.resolve(&index, class_names.len()).ok_or_else(|| {
                DataError::UnknownLabel {
                    path: path.display().to_string(),
                    row: r.line,
                    label: label.to_string(),
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
            let label = shards.label(i).map_err(DataError::Shards)?;
            let l = Label::Text(label.clone())
                .resolve(&index, class_names.len())
                .ok_or_else(|| DataError::UnknownLabel {
                    path: spec.into(),
                    row: i + 1,
                    label: label.clone(),
                    classes: classes_path.display().to_string(),
                    count: class_names.len(),
                })?;
            f.str(&label);
            images.push(ImageRef::Shard(shards.clone(), i));
            labels.push(l);
        }
        for p in shards.paths() {
            f.u64(content_hash(p));
        }
        Ok(EvalSet {
            name: spec.into(),
            images,
            labels,
            captions: Vec::new(),
            class_names,
            fingerprint: f.0,
            warnings: shards.warnings.clone(),
        })
    }

    /// Open a retrieval set: a manifest with one or more captions per image, or shards (one caption
    /// each). A row without captions, or with an empty caption, is an error naming the row.
    pub fn retrieval(source: &str) -> Result<EvalSet, DataError> {
        let mut images = Vec::new();
        let mut captions = Vec::new();
        let mut warnings = Vec::new();
        if is_shard_spec(source) {
            // one caption per sample (`.txt` or the `.json` caption)
            let shards =
                Arc::new(Shards::open(source).map_err(|e| DataError::Shards(e.to_string()))?);
            warnings = shards.warnings.clone();
            for i in 0..shards.len() {
                images.push(ImageRef::Shard(shards.clone(), i));
                captions.push(vec![shards.text(i).map_err(DataError::Shards)?]);
            }
        } else {
            let rows = manifest_rows(Path::new(source))?;
            if rows.iter().all(|r| r.captions.is_empty()) && !rows.is_empty() {
                return Err(DataError::NoCaptions(source.into()));
            }
            for r in rows {
                if r.captions.is_empty() || r.captions.iter().any(|c| c.trim().is_empty()) {
                    return Err(DataError::Row {
                        path: source.into(),
                        row: r.line,
                        msg: "retrieval needs at least one non-empty caption per image".into(),
                    });
                }
                images.push(ImageRef::Path(r.image));
                captions.push(r.captions);
            }
        }
        if images.is_empty() {
            return Err(DataError::Empty(source.into()));
        }
        let mut set = Self::captioned(source, images, captions);
        set.warnings = warnings;
        Ok(set)
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
        let (images, captions): (Vec<ImageRef>, Vec<Vec<String>>) =
            manifest_rows(Path::new(source))?
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
            warnings: Vec::new(),
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
            warnings: self.warnings.clone(),
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

/// Whether `s` names WebDataset shards (a `.tar`, a brace pattern, or several joined by `::`).
pub fn is_shard_spec(s: &str) -> bool {
    s.ends_with(".tar") || s.contains('{') || s.contains("::")
}

fn name_index(names: &[String]) -> HashMap<&str, usize> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect()
}

fn manifest_rows(path: &Path) -> Result<Vec<Row>, DataError> {
    Ok(read_rows(path)?)
}
