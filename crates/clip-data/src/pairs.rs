//! Training data as (image, caption) pairs from any source the data layer reads: a CSV/JSONL
//! manifest, a tree of class folders (caption "a photo of a {class}."), or WebDataset shards.

use std::path::Path;

use crate::dataset::is_shard_spec;
use crate::files::{FilesError, class_folders, class_images};
use crate::image::Alpha;
use crate::manifest::{Manifest, ManifestError};
use crate::resize::Rgb8;
use crate::shards::{ShardError, Shards};

#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Shards(#[from] ShardError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error("'{0}' has no class folders with images")]
    NoFolders(String),
}

/// A finite set of training pairs.
pub enum Pairs {
    Manifest(Manifest),
    Shards(Shards),
}

impl Pairs {
    /// `spec`: a .csv/.jsonl manifest, a directory of class folders, or WebDataset shards (a .tar
    /// path or brace pattern such as `shards-{0000..0099}.tar`).
    pub fn open(spec: &str) -> Result<Pairs, PairsError> {
        let path = Path::new(spec);
        if is_shard_spec(spec) {
            return Ok(Pairs::Shards(Shards::open(spec)?));
        }
        if path.is_dir() {
            let mut pairs = Vec::new();
            for (folder, dir) in class_folders(path)? {
                let name = folder.replace('_', " ");
                pairs.extend(
                    class_images(&dir)?
                        .into_iter()
                        .map(|i| (i, format!("a photo of a {name}."))),
                );
            }
            if pairs.is_empty() {
                return Err(PairsError::NoFolders(spec.into()));
            }
            pairs.sort();
            return Ok(Pairs::Manifest(Manifest {
                pairs,
                alpha: Alpha::Drop,
            }));
        }
        Ok(Pairs::Manifest(Manifest::read(path)?))
    }

    /// Damage found while opening (truncated shards, incomplete samples).
    pub fn warnings(&self) -> &[String] {
        match self {
            Pairs::Manifest(_) => &[],
            Pairs::Shards(s) => &s.warnings,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Pairs::Manifest(m) => m.pairs.len(),
            Pairs::Shards(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The decoded pair at `index` (an error is a bad sample, named).
    pub fn pair(&self, index: usize) -> Result<(Rgb8, String), String> {
        match self {
            Pairs::Manifest(m) => m.pair(index),
            Pairs::Shards(s) => s.pair(index),
        }
    }
}
