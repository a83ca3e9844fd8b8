//! Reading text inputs and writing embeddings (.npy, .safetensors, .jsonl), atomically.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Lines of a UTF-8 text file (empty lines dropped). Non-UTF-8 input is an error with the offset.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "'{}' is not valid UTF-8 text (invalid byte at offset {}); convert it to UTF-8 first",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// NPY v1.0 bytes of a little-endian float32 array.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_str = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_str}, }}");
    // magic(6) + version(2) + header length(2) + header + '\n', padded to a multiple of 64
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    clip_model::weights::write_atomic(path, &npy_bytes(shape, data))?;
    Ok(())
}

/// Fail early when `--out` has an extension we cannot write.
pub fn check_embedding_path(path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy" | "safetensors" | "jsonl") => Ok(()),
        _ => bail!(
            "--out '{}' must end in .npy, .safetensors or .jsonl",
            path.display()
        ),
    }
}

/// Write `[n, d]` embeddings in the format the extension names.
pub fn write_embeddings(path: &Path, inputs: &[String], dim: usize, data: &[f32]) -> Result<()> {
    let n = inputs.len();
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => write_npy(path, &[n, dim], data),
        Some("safetensors") => {
            let t = clip_model::source::RawTensor::new(vec![n, dim], data.to_vec());
            clip_model::weights::write_safetensors(path, &[("embeddings".to_owned(), t)])?;
            Ok(())
        }
        Some("jsonl") => {
            let mut out = String::new();
            for (input, row) in inputs.iter().zip(data.chunks(dim)) {
                out.push_str(&serde_json::to_string(
                    &serde_json::json!({ "input": input, "embedding": row }),
                )?);
                out.push('\n');
            }
            clip_model::weights::write_atomic(path, out.as_bytes())?;
            Ok(())
        }
        _ => bail!(
            "--out '{}' must end in .npy, .safetensors or .jsonl",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() {
        let b = npy_bytes(&[2, 3], &[0.0; 6]);
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(b.len(), 10 + hlen + 24);
        assert!(
            std::str::from_utf8(&b[10..10 + hlen])
                .unwrap()
                .contains("'shape': (2, 3)")
        );
    }
}
