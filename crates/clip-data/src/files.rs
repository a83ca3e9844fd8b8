//! Finding images on disk: the one list of image extensions the decoder reads, the images of a
//! folder, and class-folder trees (`ROOT/<class>/<image>`).

use std::path::{Path, PathBuf};

/// File extensions read as images (lower-case), everywhere: folders, class trees, shards.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff",
];

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot read directory '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no images ({}) in '{path}'", IMAGE_EXTENSIONS.join(", "))]
    NoImages { path: String },
}

/// Whether `p` has an image extension.
pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, FilesError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| FilesError::Read {
            path: dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Image files directly in `dir`, sorted by name; none is an error.
pub fn images_in(dir: &Path) -> Result<Vec<PathBuf>, FilesError> {
    let files: Vec<PathBuf> = read_dir(dir)?.into_iter().filter(|p| is_image(p)).collect();
    if files.is_empty() {
        return Err(FilesError::NoImages {
            path: dir.display().to_string(),
        });
    }
    Ok(files)
}

/// The sub-folders of a class-folder tree: (folder name, path), sorted by name.
pub fn class_folders(root: &Path) -> Result<Vec<(String, PathBuf)>, FilesError> {
    Ok(read_dir(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p)))
        .collect())
}

/// The images of one class folder, sorted (an empty list when there are none).
pub fn class_images(dir: &Path) -> Result<Vec<PathBuf>, FilesError> {
    match images_in(dir) {
        Ok(v) => Ok(v),
        Err(FilesError::NoImages { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
