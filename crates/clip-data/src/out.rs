//! Writing result files: one atomic-write helper (temporary file in the same folder + `fsync` +
//! rename, so a kill or a full disk never leaves a half-written file and never damages the previous
//! one), `.npy` through `npyz`, CSV through `csv`, and the checks every writer makes first: the
//! extension it was asked for, and that it does not write over one of the command's own inputs.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OutError {
    #[error("cannot write '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("--out '{path}' must end in {}", one_of(want))]
    Extension { path: String, want: Vec<String> },
    #[error("--out '{path}' is also an input of this command; choose another output path")]
    OverwritesInput { path: String },
    #[error(
        "'{path}' is not empty and does not hold a previous {what}; choose an empty or new folder \
         (nothing was deleted or overwritten)"
    )]
    NotOurs { path: String, what: String },
}

/// "a", "a or b", "a, b or c".
fn one_of(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutError + '_ {
    move |source| OutError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Write `data` to `path` atomically: a temporary file beside it, synced, then renamed over it
/// (missing parent folders are created).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`] with the path in the error.
pub fn write_file(path: &Path, data: &[u8]) -> Result<(), OutError> {
    write_atomic(path, data).map_err(io_err(path))
}

/// Create `dir` (and its parents) if needed.
pub fn create_dir(dir: &Path) -> Result<(), OutError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))
}

/// The extension of `path` must be one of `want` (lower-case, without the dot).
pub fn check_extension(path: &Path, want: &[&str]) -> Result<(), OutError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if ext.as_deref().is_some_and(|e| want.contains(&e)) {
        return Ok(());
    }
    Err(OutError::Extension {
        path: path.display().to_string(),
        want: want.iter().map(|w| format!(".{w}")).collect(),
    })
}

/// `out` must not be (or resolve to) one of `inputs`.
pub fn check_not_input(out: &Path, inputs: &[PathBuf]) -> Result<(), OutError> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let o = canon(out);
    if inputs.iter().any(|i| canon(i) == o) {
        return Err(OutError::OverwritesInput {
            path: out.display().to_string(),
        });
    }
    Ok(())
}

/// An output folder a command may write into: missing, empty, or marked by `marker` (a file that
/// only this command writes there). Anything else is refused before any work.
pub fn check_output_dir(dir: &Path, marker: &str, what: &str) -> Result<(), OutError> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        if dir.exists() {
            return Err(OutError::NotOurs {
                path: dir.display().to_string(),
                what: what.into(),
            });
        }
        return Ok(());
    };
    if entries.next().is_none() || dir.join(marker).is_file() {
        return Ok(());
    }
    Err(OutError::NotOurs {
        path: dir.display().to_string(),
        what: what.into(),
    })
}

/// NPY bytes (version 1.0, little-endian float32, C order) of an array of `shape`.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> std::io::Result<Vec<u8>> {
    if shape.iter().product::<usize>() != data.len() {
        return Err(std::io::Error::other(format!(
            "{} values do not fill shape {shape:?}",
            data.len()
        )));
    }
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut out = Vec::with_capacity(128 + data.len() * 4);
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut out)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(out)
}

/// Write a float32 `.npy` file atomically.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), OutError> {
    let bytes = npy_bytes(shape, data).map_err(io_err(path))?;
    write_file(path, &bytes)
}

/// Write a CSV file (header + rows, quoted where needed) atomically.
pub fn write_csv<R, S>(path: &Path, header: &[&str], rows: R) -> Result<(), OutError>
where
    R: IntoIterator<Item = Vec<S>>,
    S: AsRef<[u8]>,
{
    let mut w = csv::Writer::from_writer(Vec::new());
    let to_io = |e: csv::Error| std::io::Error::other(e.to_string());
    w.write_record(header)
        .map_err(to_io)
        .map_err(io_err(path))?;
    for r in rows {
        w.write_record(&r).map_err(to_io).map_err(io_err(path))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
        .map_err(io_err(path))?;
    write_file(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_header_alignment() {
        let b = npy_bytes(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.5]).unwrap();
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let f = npyz::NpyFile::new(&b[..]).unwrap();
        assert_eq!(f.shape(), &[2, 3]);
        assert_eq!(f.into_vec::<f32>().unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.5]);
        assert!(npy_bytes(&[2, 2], &[0.0; 3]).is_err());
    }

    #[test]
    fn csv_quotes_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        write_csv(&p, &["a", "b"], [vec!["x,y", "say \"hi\""]]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n"
        );
    }

    #[test]
    fn output_checks() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("good.png");
        std::fs::write(&img, b"png").unwrap();
        assert!(check_extension(&img, &["npy"]).is_err());
        assert!(check_extension(&dir.path().join("X.NPY"), &["npy"]).is_ok());
        let e = check_not_input(&img, std::slice::from_ref(&img)).unwrap_err();
        assert!(e.to_string().contains("is also an input"), "{e}");
        // a folder with someone else's file is refused; an empty one or one with the marker is not
        let run = dir.path().join("run");
        assert!(check_output_dir(&run, "marker", "run").is_ok());
        std::fs::create_dir(&run).unwrap();
        assert!(check_output_dir(&run, "marker", "run").is_ok());
        std::fs::write(run.join("notes.txt"), b"mine").unwrap();
        let e = check_output_dir(&run, "marker", "quickstart run").unwrap_err();
        assert!(
            e.to_string()
                .contains("does not hold a previous quickstart run"),
            "{e}"
        );
        std::fs::write(run.join("marker"), b"").unwrap();
        assert!(check_output_dir(&run, "marker", "run").is_ok());
    }
}
