//! Checkpoint formats: OpenAI TorchScript archives and PyTorch zip state dicts (`.pt`/`.bin`, parsed
//! without executing the pickle), safetensors (open_clip's and ours), and Hugging Face `CLIPModel`
//! directories. All are read into one map of OpenAI/open_clip keys; the architecture comes from a
//! config beside the weights or, as OpenAI's `build_model` does, from the tensor shapes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use half::{bf16, f16};

use crate::config::ClipConfig;
use crate::error::LoadError;
use crate::pickle::{self, PickleError, StorageType, TensorRef};
use crate::source::RawTensor;

mod locate;

pub use crate::hf::{hf_config, hf_to_openai};
pub use locate::{
    LoadOptions, WEIGHT_FILES, infer_config, load_clip, load_clip_with, matching_preset,
    read_checkpoint, read_checkpoint_with, resolve_config, save_clip, weights_in_dir,
};

/// The format a checkpoint was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI's TorchScript archive (`ViT-B-32.pt` …)
    TorchScript,
    /// `torch.save` of a state dict (open_clip `.pt`/`.bin`, training checkpoints)
    TorchZip,
    Safetensors,
    /// Hugging Face `CLIPModel` directory
    HuggingFace,
}

/// Tensors under OpenAI/open_clip keys, plus the architecture when the checkpoint states it.
pub struct Loaded {
    pub tensors: BTreeMap<String, RawTensor>,
    /// The architecture as the checkpoint states it: a config beside the weights
    /// (`open_clip_config.json`, ours), a Hugging Face `config.json`, or — for a TorchScript
    /// archive — the shapes with the activation its code runs. `None` for a bare state dict: its
    /// tensors look the same under QuickGELU and GELU.
    pub config: Option<ClipConfig>,
    /// The file `config` was read from (`None`: none, or derived from a TorchScript archive).
    pub config_file: Option<String>,
    /// TorchScript only: the activation the archive's code runs, when it can be told.
    pub code_quick_gelu: Option<bool>,
    pub format: Format,
    pub file: String,
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// The error of an I/O operation on `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        file: display(path),
        source,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(io(path))
}

/// The file mapped read-only: its values are converted to f32 straight from the page cache, where
/// reading it first would allocate (and have the kernel zero) a second copy of every weight, which
/// was most of the time a 600 MB checkpoint took to load. The map lives only while this loader
/// converts it.
fn map(path: &Path) -> Result<memmap2::Mmap, LoadError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    // SAFETY: the map is read-only and private to this call; the one hazard is another process
    // truncating the file while it is mapped (then reading faults), the caveat every safetensors
    // loader that maps files (safetensors' own, candle, transformers) accepts.
    unsafe { memmap2::Mmap::map(&f) }.map_err(io(path))
}

/// Convert little-endian element bytes to f32 (the element type chosen once, not per value, so
/// that each loop vectorises; large tensors in parallel chunks).
fn to_f32(bytes: &[u8], dtype: StorageType) -> Vec<f32> {
    use rayon::prelude::*;
    fn convert<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32 + Sync) -> Vec<f32> {
        let mut out = vec![0f32; bytes.len() / N];
        out.par_chunks_mut(1 << 16)
            .zip(bytes.par_chunks(N << 16))
            .for_each(|(o, b)| {
                for (v, c) in o.iter_mut().zip(b.chunks_exact(N)) {
                    *v = f(c.try_into().expect("chunks of N"));
                }
            });
        out
    }
    match dtype {
        StorageType::F32 => convert::<4>(bytes, f32::from_le_bytes),
        StorageType::F16 => convert::<2>(bytes, |c| f16::from_le_bytes(c).to_f32()),
        StorageType::BF16 => convert::<2>(bytes, |c| bf16::from_le_bytes(c).to_f32()),
        StorageType::F64 => convert::<8>(bytes, |c| f64::from_le_bytes(c) as f32),
        StorageType::I64 => convert::<8>(bytes, |c| i64::from_le_bytes(c) as f32),
        StorageType::I32 => convert::<4>(bytes, |c| i32::from_le_bytes(c) as f32),
        StorageType::I16 => convert::<2>(bytes, |c| i16::from_le_bytes(c) as f32),
        StorageType::I8 => convert::<1>(bytes, |c| c[0] as i8 as f32),
        StorageType::U8 | StorageType::Bool => convert::<1>(bytes, |c| c[0] as f32),
    }
}

/// Gather a strided view of a storage into a contiguous row-major tensor.
fn materialise(
    t: &TensorRef,
    storage: &[f32],
    file: &str,
    key: &str,
) -> Result<RawTensor, LoadError> {
    if t.shape.len() != t.strides.len() {
        return Err(LoadError::format(
            file,
            format!("tensor '{key}' has mismatched size and stride"),
        ));
    }
    // every size and offset comes from the file: overflow is a damaged (or crafted) file
    let overflow = || {
        LoadError::format(
            file,
            format!(
                "tensor '{key}' has sizes {:?}, strides {:?} and offset {} beyond any storage",
                t.shape, t.strides, t.offset
            ),
        )
    };
    let n = t
        .shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(overflow)?;
    let last = if n == 0 {
        0
    } else {
        t.shape
            .iter()
            .zip(&t.strides)
            .try_fold(t.offset, |acc, (&s, &st)| {
                acc.checked_add((s - 1).checked_mul(st)?)
            })
            .ok_or_else(overflow)?
    };
    if n > 0 && last >= storage.len() {
        return Err(LoadError::format(
            file,
            format!("tensor '{key}' reads past the end of its storage (truncated file?)"),
        ));
    }
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..n {
        let pos = t.offset
            + idx
                .iter()
                .zip(&t.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        out.push(storage[pos]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(RawTensor::new(t.shape.clone(), out))
}

fn pickle_error(file: &str, e: PickleError) -> LoadError {
    match e {
        PickleError::UnsafeGlobal(global) => LoadError::UnsafeGlobal {
            file: file.to_owned(),
            global,
        },
        PickleError::Malformed(msg) => LoadError::format(file, format!("malformed pickle: {msg}")),
    }
}

/// Read a PyTorch zip checkpoint (state dict, training checkpoint or TorchScript archive).
pub fn read_torch_zip(path: &Path) -> Result<(BTreeMap<String, RawTensor>, Format), LoadError> {
    read_torch_zip_code(path).map(|(t, f, _)| (t, f))
}

/// What a TorchScript archive's code tells about the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScriptCode {
    /// The activation: `Some(true)` when the code uses a `QuickGELU` module (OpenAI's
    /// `clip.model.QuickGELU`, open_clip's), `Some(false)` when it calls exact `torch.gelu` and no
    /// QuickGELU, `None` when it says neither (or both).
    pub quick_gelu: Option<bool>,
    /// Traced from OpenAI's `clip.model` (code under `__torch__/clip/`): `build_model`'s shape
    /// rules (64-wide heads) are the ones its code used.
    pub openai: bool,
}

fn script_code(code: &[(String, String)]) -> ScriptCode {
    let quick = code.iter().any(|(_, c)| c.contains("QuickGELU"));
    let exact = code.iter().any(|(_, c)| c.contains("torch.gelu("));
    let openai = code.iter().any(|(n, _)| n.contains("code/__torch__/clip/"));
    ScriptCode {
        quick_gelu: match (quick, exact) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        },
        openai,
    }
}

/// Tensors, format and (TorchScript) what the code tells.
pub(crate) type ZipContents = (BTreeMap<String, RawTensor>, Format, Option<ScriptCode>);

/// As [`read_torch_zip`], plus what a TorchScript archive's code tells (`None` for state dicts).
pub(crate) fn read_torch_zip_code(path: &Path) -> Result<ZipContents, LoadError> {
    let file = display(path);
    let bytes = read(path)?;
    if !bytes.starts_with(b"PK") {
        if bytes.first() == Some(&0x80) {
            return Err(LoadError::format(
                &file,
                "this is PyTorch's legacy (pre-1.6) serialisation, which is not supported; re-save it with a current torch.save",
            ));
        }
        return Err(LoadError::format(
            &file,
            "not a PyTorch checkpoint (no zip archive inside)",
        ));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| {
        LoadError::format(
            &file,
            format!("unreadable zip archive ({e}); is the file truncated?"),
        )
    })?;
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    let data_pkl = names
        .iter()
        .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .min_by_key(|n| n.len())
        .ok_or_else(|| {
            LoadError::format(
                &file,
                "zip archive has no data.pkl: not a PyTorch checkpoint",
            )
        })?
        .clone();
    let prefix = data_pkl.trim_end_matches("data.pkl").to_owned();
    let format = if names
        .iter()
        .any(|n| n.starts_with(&format!("{prefix}code/")))
    {
        Format::TorchScript
    } else {
        Format::TorchZip
    };
    let mut read_entry = |name: &str| -> Result<Vec<u8>, LoadError> {
        let mut f = zip.by_name(name).map_err(|_| {
            LoadError::format(
                &file,
                format!("zip entry '{name}' is missing (truncated file?)"),
            )
        })?;
        // the declared size is only a hint (a crafted header may claim anything)
        let mut buf = Vec::with_capacity((f.size() as usize).min(1 << 28));
        f.read_to_end(&mut buf).map_err(|e| {
            LoadError::format(&file, format!("zip entry '{name}' is unreadable ({e})"))
        })?;
        Ok(buf)
    };
    let script = if format == Format::TorchScript {
        let mut code = Vec::new();
        for name in names
            .iter()
            .filter(|n| n.starts_with(&format!("{prefix}code/")) && n.ends_with(".py"))
        {
            let text = String::from_utf8_lossy(&read_entry(name)?).into_owned();
            code.push((name.clone(), text));
        }
        Some(script_code(&code))
    } else {
        None
    };
    let root = pickle::parse(&read_entry(&data_pkl)?).map_err(|e| pickle_error(&file, e))?;
    let root = unwrap_training_checkpoint(root);
    let mut refs = Vec::new();
    pickle::collect_tensors(&root, "", &mut refs);
    let mut storages: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (key, t) in refs {
        if !storages.contains_key(&t.storage_key) {
            let raw = read_entry(&format!("{prefix}data/{}", t.storage_key))?;
            storages.insert(t.storage_key.clone(), to_f32(&raw, t.dtype));
        }
        let key = key.strip_prefix("module.").unwrap_or(&key).to_owned();
        check_float(&key, t.dtype, &file)?;
        out.insert(
            key.clone(),
            materialise(&t, &storages[&t.storage_key], &file, &key)?,
        );
    }
    Ok((out, format, script))
}

/// open_clip training checkpoints hold the weights under `state_dict` (or `model`).
fn unwrap_training_checkpoint(root: pickle::Value) -> pickle::Value {
    if let pickle::Value::Dict(items) = &root {
        for wanted in ["state_dict", "model", "state_dict_ema"] {
            if let Some((_, v @ pickle::Value::Dict(_))) = items
                .iter()
                .find(|(k, _)| *k == pickle::Value::Str(wanted.into()))
            {
                return v.clone();
            }
        }
    }
    root
}

/// Integer or boolean tensors are refused unless they are buffers that are not weights (masks,
/// sizes, ids, BatchNorm's counter): an integer "weight" would load as a silently wrong model.
fn check_float(key: &str, dtype: StorageType, file: &str) -> Result<(), LoadError> {
    let float = matches!(
        dtype,
        StorageType::F32 | StorageType::F16 | StorageType::BF16 | StorageType::F64
    );
    let buffer = [
        "attn_mask",
        "input_resolution",
        "context_length",
        "vocab_size",
        "position_ids",
    ]
    .iter()
    .any(|b| key.ends_with(b))
        || key.ends_with("num_batches_tracked")
        || key.ends_with("token_type_ids");
    if float || buffer {
        return Ok(());
    }
    Err(LoadError::format(
        file,
        format!(
            "tensor '{key}' is stored as {dtype:?}, not floating point; CLIP weights are float32/16 — the file is not a CLIP checkpoint or was converted wrongly"
        ),
    ))
}

/// Read a safetensors file (any dtype, converted to f32).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, RawTensor>, LoadError> {
    read_safetensors_as(path, false)
}

/// Read a safetensors file of model weights: integer tensors other than known buffers are refused.
pub fn read_safetensors_weights(path: &Path) -> Result<BTreeMap<String, RawTensor>, LoadError> {
    read_safetensors_as(path, true)
}

fn read_safetensors_as(
    path: &Path,
    weights_only: bool,
) -> Result<BTreeMap<String, RawTensor>, LoadError> {
    let file = display(path);
    let bytes = map(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| LoadError::format(&file, format!("not a valid safetensors file ({e})")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        use safetensors::Dtype;
        let dtype = match view.dtype() {
            Dtype::F32 => StorageType::F32,
            Dtype::F16 => StorageType::F16,
            Dtype::BF16 => StorageType::BF16,
            Dtype::F64 => StorageType::F64,
            Dtype::I64 => StorageType::I64,
            Dtype::I32 => StorageType::I32,
            Dtype::I16 => StorageType::I16,
            Dtype::I8 => StorageType::I8,
            Dtype::U8 => StorageType::U8,
            Dtype::BOOL => StorageType::Bool,
            other => {
                return Err(LoadError::format(
                    &file,
                    format!("tensor '{name}' has unsupported dtype {other:?}"),
                ));
            }
        };
        if weights_only {
            check_float(&name, dtype, &file)?;
        }
        out.insert(
            name,
            RawTensor::new(view.shape().to_vec(), to_f32(view.data(), dtype)),
        );
    }
    Ok(out)
}

/// Write tensors as a safetensors file (f32), atomically (temp file + rename).
pub fn write_safetensors(path: &Path, tensors: &[(String, RawTensor)]) -> Result<(), LoadError> {
    let file = display(path);
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, b, s)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .expect("consistent view"),
            )
        })
        .collect();
    let data =
        safetensors::serialize(views, None).map_err(|e| LoadError::format(&file, e.to_string()))?;
    write_atomic(path, &data)
}

/// Write `data` to `path` via a temporary file in the same directory and a rename, so a crash
/// leaves either the old file or the new one.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), LoadError> {
    clip_data::out::write_atomic(path, data).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_storage_type_converts_in_and_across_parallel_chunks() {
        let n = (1 << 16) + 5; // one full chunk and a ragged one
        let vals: Vec<f32> = (0..n).map(|i| (i % 200) as f32 - 100.0).collect(); // fits i8, exact in bf16
        let bytes =
            |f: &dyn Fn(f32) -> Vec<u8>| vals.iter().flat_map(|&v| f(v)).collect::<Vec<u8>>();
        let cases: Vec<(StorageType, Vec<u8>)> = vec![
            (StorageType::F32, bytes(&|v| v.to_le_bytes().to_vec())),
            (
                StorageType::F16,
                bytes(&|v| f16::from_f32(v).to_le_bytes().to_vec()),
            ),
            (
                StorageType::BF16,
                bytes(&|v| bf16::from_f32(v).to_le_bytes().to_vec()),
            ),
            (
                StorageType::F64,
                bytes(&|v| (v as f64).to_le_bytes().to_vec()),
            ),
            (
                StorageType::I64,
                bytes(&|v| (v as i64).to_le_bytes().to_vec()),
            ),
            (
                StorageType::I32,
                bytes(&|v| (v as i32).to_le_bytes().to_vec()),
            ),
            (
                StorageType::I16,
                bytes(&|v| (v as i16).to_le_bytes().to_vec()),
            ),
            (StorageType::I8, bytes(&|v| vec![(v as i8) as u8])),
        ];
        for (dtype, b) in cases {
            assert_eq!(to_f32(&b, dtype), vals, "{dtype:?}");
        }
        let u8s: Vec<u8> = (0..n).map(|i| (i % 256) as u8).collect();
        let want: Vec<f32> = u8s.iter().map(|&v| v as f32).collect();
        assert_eq!(to_f32(&u8s, StorageType::U8), want);
    }
}
