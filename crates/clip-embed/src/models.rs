//! `--model`: a checkpoint file or folder, a training run's folder, `NAME:TAG` (open_clip's
//! pretrained tags, fetched through the Hugging Face cache) or `hf-hub:ORG/NAME` (a repository with
//! an `open_clip_config.json`, or a transformers `CLIPModel` one). What a checkpoint does not state
//! (the activation and heads of a bare state dict) comes from [`ModelOptions`] or from the file's
//! SHA-256 in the pretrained table, else the load is refused with the options that would fix it.
//! `NAME:TAG` of a tag trained with QuickGELU runs QuickGELU (open_clip's `NAME-quickgelu:TAG`);
//! `NAME-quickgelu:TAG` of a GELU tag is refused, as open_clip refuses it.

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use clip_model::weights::{LoadOptions, load_clip_with, read_checkpoint, resolve_config};
use clip_model::{Clip, ClipConfig, config::Interpolation, config::ResizeMode, source::Checkpoint};
use clip_tokenizer::{HfTokenizer, TextTokenizer};

mod hub;
mod sha256;
mod table;

pub use hub::{Hub, Miss};
pub use sha256::file_hex as sha256_file;
pub use table::{Pretrained, by_sha256, clean_tag, pretrained, tags_of};

/// Why a model could not be resolved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Load(#[from] clip_model::LoadError),
    #[error(transparent)]
    Config(#[from] clip_model::ConfigError),
    #[error("{0}")]
    Resolve(String),
}

type Result<T> = std::result::Result<T, ModelError>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(ModelError::Resolve(format!($($t)*))) };
}

/// open_clip's weight files of a Hub repository, in the order it fetches them.
pub const OPEN_CLIP_WEIGHTS: [&str; 2] =
    ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

/// What the user states about `--model` (the command line's `--arch` and `--quick-gelu`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelOptions {
    /// `--arch`: the architecture of a checkpoint file or folder, instead of what it states: a
    /// preset (`ViT-B-32`, `ViT-B-32-quickgelu`), a pretrained tag (`ViT-L-14:laion2b_s32b_b82k`:
    /// the tag's activation and preprocessing too) or a config file (`open_clip_config.json`, a
    /// model config JSON).
    pub arch: Option<String>,
    /// `--quick-gelu true|false`: the activation of a checkpoint that does not state it.
    pub quick_gelu: Option<bool>,
    /// `--precision`: inference in bf16 or int8 ([`clip_model::lowp`]); `None`: f32, or for an
    /// index's model the precision the index was built with.
    pub precision: Option<clip_model::lowp::Precision>,
}

fn act(quick: bool) -> &'static str {
    if quick { "QuickGELU" } else { "GELU" }
}

/// `clip models`: presets and their pretrained tags.
pub fn listing() -> String {
    let mut out = String::new();
    for (name, _) in clip_model::config::PRESETS {
        let Ok(cfg) = clip_model::preset(name) else {
            continue;
        };
        let tags = tags_of(name);
        out.push_str(&format!(
            "{name:<14} image {:>3}px  embed {:>4}  tags: {}\n",
            cfg.image_size(),
            cfg.embed_dim,
            if tags.is_empty() {
                "-".to_owned()
            } else {
                tags.join(", ")
            }
        ));
    }
    out
}

/// The image transform a model's `preprocess_cfg` asks for, at its input size (OpenAI's when it
/// has none). Mean, std and squashing vary here; [`check_preprocess`] refuses the rest.
pub fn preprocess(config: &ClipConfig) -> clip_data::Preprocess {
    let p = config.preprocess();
    let f = |v: [f64; 3]| v.map(|x| x as f32);
    clip_data::Preprocess {
        resize: match p.resize_mode {
            ResizeMode::Squash => clip_data::Resize::Squash,
            _ => clip_data::Resize::ShortestCrop,
        },
        mean: f(p.mean),
        std: f(p.std),
        ..clip_data::Preprocess::clip(config.image_size())
    }
}

/// An error when the image pipeline cannot preprocess images as the model was trained to see
/// them (it resizes bicubically: the short side then a center crop, or both sides (squash)).
pub fn check_preprocess(config: &ClipConfig, what: &str) -> Result<()> {
    let p = config.preprocess();
    let n = config.image_size();
    let why = match (p.resize_mode, p.interpolation) {
        (ResizeMode::Longest, _) => format!(
            "resize_mode longest (long side to {n}, then padded), which the image pipeline does not do"
        ),
        // open_clip's evaluation transform resizes bicubically unless told `bilinear`
        (_, Interpolation::Bicubic | Interpolation::Random) => return Ok(()),
        (_, other) => format!(
            "{} interpolation, which the image pipeline does not do (it resizes bicubically)",
            other.name()
        ),
    };
    bail!(
        "{what} expects its images preprocessed with {why}; embedding center crops instead would give wrong \
         numbers, so it is refused (`clip convert` still converts it)"
    )
}

/// A hub model resolved to a local weights file and the architecture to build.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub weights: PathBuf,
    pub config: ClipConfig,
}

fn miss_message(spec: &str, repo: &str, files: &[String], miss: Miss, hub: &Hub) -> String {
    let why = match miss {
        Miss::Offline => "HF_HUB_OFFLINE is set, so nothing was downloaded".to_owned(),
        Miss::Download(e) => format!("could not be downloaded: {e}"),
    };
    let arch = if spec.starts_with("hf-hub:") {
        String::new()
    } else {
        format!(" --arch {spec}")
    };
    format!(
        "model '{spec}' is not in the Hugging Face cache and {why}.\n\
         Put {} of the Hub repository '{repo}' in the cache ({}: with a network, run this once; offline, copy \
         models--{}/ from a machine that has it, or point HF_HUB_CACHE or HF_HOME at a cache that has it), \
         or pass a downloaded copy as --model FILE{arch}",
        files.join(" or "),
        hub.cache.display(),
        repo.replace('/', "--"),
    )
}

/// Resolve `NAME:TAG` or `hf-hub:ORG/NAME`: the weights (from the cache, or downloaded) and the
/// architecture. `check` sees the architecture before any weights are fetched.
pub fn resolve(
    spec: &str,
    opts: &ModelOptions,
    hub: &Hub,
    check: &dyn Fn(&ClipConfig) -> Result<()>,
) -> Result<Resolved> {
    if opts.arch.is_some() {
        bail!(
            "--arch applies to checkpoint files and folders; '{spec}' already names its architecture"
        );
    }
    if let Some(repo) = spec.strip_prefix("hf-hub:") {
        return resolve_repo(spec, repo, opts, hub, check);
    }
    let Some((name, tag)) = spec.split_once(':') else {
        bail!("'{spec}' is not NAME:TAG");
    };
    clip_model::preset(name)?;
    let row = table::find(name, tag)?;
    if let Some(q) = opts.quick_gelu.filter(|&q| q != row.quick_gelu) {
        bail!(
            "{} was trained with {}; --quick-gelu {q} would run it with {}: drop --quick-gelu",
            row.spec(),
            act(row.quick_gelu),
            act(q)
        );
    }
    let config = row.config()?;
    check(&config)?;
    let files = row.weight_files();
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let weights = hub
        .get(&row.hf_hub, &names)
        .map_err(|m| ModelError::Resolve(miss_message(spec, &row.hf_hub, &files, m, hub)))?;
    Ok(Resolved { weights, config })
}

/// The architecture and preprocessing of a pretrained `NAME:TAG` (no weights are looked up).
pub fn tag_config(spec: &str) -> Result<ClipConfig> {
    let Some((name, tag)) = spec.split_once(':') else {
        bail!("'{spec}' is not NAME:TAG");
    };
    clip_model::preset(name)?;
    table::find(name, tag)?.config()
}

/// `hf-hub:ORG/NAME`: open_clip's layout (`open_clip_config.json` + weights), else transformers'
/// (`config.json` + `model.safetensors`).
fn resolve_repo(
    spec: &str,
    repo: &str,
    opts: &ModelOptions,
    hub: &Hub,
    check: &dyn Fn(&ClipConfig) -> Result<()>,
) -> Result<Resolved> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        bail!("'{spec}' is not hf-hub:ORG/NAME (a Hugging Face Hub repository)");
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| ModelError::Resolve(format!("{}: {e}", p.display())))
    };
    let (config, files): (ClipConfig, Vec<String>) = match hub.get(repo, &["open_clip_config.json"])
    {
        Ok(p) => {
            let cfg = ClipConfig::from_json(&read(&p)?)
                .map_err(|e| ModelError::Resolve(format!("{}: {e}", p.display())))?;
            (
                cfg,
                OPEN_CLIP_WEIGHTS.iter().map(|s| s.to_string()).collect(),
            )
        }
        Err(miss) => match hub.get(repo, &["config.json"]) {
            Ok(p) if read(&p)?.contains("\"vision_config\"") => {
                let cfg = clip_model::hf::hf_config(&read(&p)?, &p.display().to_string())?;
                (
                    cfg,
                    vec!["model.safetensors".into(), "pytorch_model.bin".into()],
                )
            }
            _ => {
                return Err(ModelError::Resolve(miss_message(
                    spec,
                    repo,
                    &["open_clip_config.json".into()],
                    miss,
                    hub,
                )));
            }
        },
    };
    if let Some(q) = opts.quick_gelu.filter(|&q| q != config.quick_gelu) {
        bail!(
            "{spec} states {} in its config; --quick-gelu {q} contradicts it: drop --quick-gelu",
            act(config.quick_gelu)
        );
    }
    check(&config)?;
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let weights = hub
        .get(repo, &names)
        .map_err(|m| ModelError::Resolve(miss_message(spec, repo, &files, m, hub)))?;
    Ok(Resolved { weights, config })
}

/// The architecture `--arch` names (see [`ModelOptions::arch`]), with `--quick-gelu`.
fn arch_config(arch: &str, quick_gelu: Option<bool>) -> Result<ClipConfig> {
    let path = Path::new(arch);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Resolve(format!("--arch {arch}: {e}")))?;
        let mut cfg = ClipConfig::from_json(&text)
            .map_err(|e| ModelError::Resolve(format!("--arch {arch}: {e}")))?;
        if let Some(q) = quick_gelu {
            cfg.quick_gelu = q;
        }
        return Ok(cfg);
    }
    if let Some((name, tag)) = arch.split_once(':') {
        clip_model::preset(name)?;
        let row = table::find(name, tag)?;
        if let Some(q) = quick_gelu.filter(|&q| q != row.quick_gelu) {
            bail!(
                "--arch {arch}: {} was trained with {}; --quick-gelu {q} contradicts it",
                row.spec(),
                act(row.quick_gelu)
            );
        }
        return row.config();
    }
    let mut cfg = clip_model::preset(arch)?;
    let (_, quick_name) = table::split_quickgelu(arch);
    match quick_gelu {
        Some(false) if quick_name => {
            bail!("--arch {arch} is QuickGELU; --quick-gelu false contradicts it")
        }
        Some(q) => cfg.quick_gelu = q,
        None => {}
    }
    Ok(cfg)
}

/// A checkpoint file or folder (`latest` pointers of training runs followed).
fn load_path(path: &Path, opts: &ModelOptions, device: &Device) -> Result<Clip> {
    let path = newest_step(path);
    if let Some(arch) = &opts.arch {
        let config = arch_config(arch, opts.quick_gelu)?;
        let stated = LoadOptions {
            config: Some(config),
            quick_gelu: None,
        };
        return Ok(load_clip_with(&path, &stated, device)?);
    }
    load_read(&path, opts, device)
}

/// The weights file `spec` loads: the file itself, a folder's weights file (open_clip's order),
/// a training run's newest checkpoint, or a pretrained tag's file in the Hugging Face cache
/// (fetched if missing, as loading would).
pub fn weights_file(spec: &str, opts: &ModelOptions, hub: &Hub) -> Result<PathBuf> {
    let path = Path::new(spec.strip_prefix("local-dir:").unwrap_or(spec));
    if path.exists() {
        let path = newest_step(path);
        return Ok(if path.is_dir() {
            clip_model::weights::weights_in_dir(&path)?
        } else {
            path
        });
    }
    if spec.starts_with("hf-hub:") || (spec.contains(':') && !spec.contains('/')) {
        return Ok(resolve(spec, opts, hub, &|_| Ok(()))?.weights);
    }
    bail!(
        "unknown model '{spec}': it is not a file or directory, nor NAME:TAG or hf-hub:ORG/NAME; known models: {} (see `clip models` for tags)",
        clip_model::preset_names()
    )
}

/// A training run's folder, its `checkpoints` folder or `checkpoints/latest` pointer: the newest
/// step's folder; anything else as it is.
fn newest_step(path: &Path) -> PathBuf {
    let pointer = if path.join("checkpoints/latest").is_file() {
        path.join("checkpoints/latest")
    } else if path.is_dir() {
        path.join("latest")
    } else {
        path.to_path_buf()
    };
    if pointer.file_name().is_some_and(|n| n == "latest")
        && pointer.is_file()
        && let Ok(step) = std::fs::read_to_string(&pointer)
        && let Some(dir) = pointer.parent().map(|d| d.join(step.trim()))
        && dir.is_dir()
    {
        dir
    } else {
        path.to_path_buf()
    }
}

/// Load a checkpoint path whose architecture the checkpoint (or its SHA-256) states.
fn load_read(path: &Path, opts: &ModelOptions, device: &Device) -> Result<Clip> {
    let loaded = read_checkpoint(path)?;
    let mut stated = LoadOptions {
        config: None,
        quick_gelu: opts.quick_gelu,
    };
    if loaded.config.is_none()
        && let Ok(hex) = sha256::file_hex(Path::new(&loaded.file))
        && let Some(row) = table::by_sha256(&hex)
    {
        // one of open_clip's release files: its tag says everything
        if let Some(q) = opts.quick_gelu.filter(|&q| q != row.quick_gelu) {
            bail!(
                "{} is the release file of {}, trained with {}; --quick-gelu {q} contradicts it",
                loaded.file,
                row.spec(),
                act(row.quick_gelu)
            );
        }
        stated = LoadOptions {
            config: Some(row.config()?),
            quick_gelu: None,
        };
    }
    let cfg = resolve_config(&loaded, &stated)?;
    Ok(Clip::from_checkpoint(
        &cfg,
        Checkpoint::new(loaded.tensors, loaded.file),
        device,
    )?)
}

/// Load without the pipeline check (what `convert` needs).
fn load_any(
    spec: &str,
    opts: &ModelOptions,
    hub: &Hub,
    device: &Device,
    check: &dyn Fn(&ClipConfig) -> Result<()>,
) -> Result<Clip> {
    let local = spec.strip_prefix("local-dir:").unwrap_or(spec);
    let path = Path::new(local);
    if path.exists() {
        return load_path(path, opts, device);
    }
    if spec.starts_with("hf-hub:") || (spec.contains(':') && !spec.contains('/')) {
        let r = resolve(spec, opts, hub, check)?;
        let stated = LoadOptions {
            config: Some(r.config),
            quick_gelu: None,
        };
        return Ok(load_clip_with(&r.weights, &stated, device)?);
    }
    if clip_model::preset(spec).is_ok() {
        let tags: Vec<String> = tags_of(spec)
            .iter()
            .map(|t| format!("{spec}:{t}"))
            .collect();
        bail!(
            "'{spec}' names an architecture, not weights; pick pretrained weights such as {}",
            tags.join(", ")
        );
    }
    bail!(
        "unknown model '{spec}': it is not a file or directory, nor NAME:TAG or hf-hub:ORG/NAME; known models: {} (see `clip models` for tags)",
        clip_model::preset_names()
    )
}

/// Load a model from a path, `NAME:TAG` or `hf-hub:ORG/NAME` for embedding, with the Hugging Face
/// cache of the environment.
pub fn load(spec: &str, device: &Device) -> Result<Clip> {
    load_with(spec, &ModelOptions::default(), device)
}

/// [`load`] with what the user states about the checkpoint.
pub fn load_with(spec: &str, opts: &ModelOptions, device: &Device) -> Result<Clip> {
    load_from(spec, opts, &Hub::from_env(), device)
}

/// [`load_with`] from a given Hugging Face cache / Hub. Refuses models whose preprocessing the
/// image pipeline cannot do ([`check_preprocess`]) before fetching their weights.
pub fn load_from(spec: &str, opts: &ModelOptions, hub: &Hub, device: &Device) -> Result<Clip> {
    let check = |c: &ClipConfig| check_preprocess(c, spec);
    let clip = load_any(spec, opts, hub, device, &check)?;
    check(&clip.config)?;
    Ok(clip)
}

/// The tokenizer of a model loaded from `spec`: CLIP's BPE, or the Hugging Face tokenizer its
/// config names (`text_cfg.hf_tokenizer_name`, SigLIP) — `tokenizer.json` beside the weights when
/// `spec` is a folder or file that has one, else that tokenizer's Hub repository through the cache
/// (fetched like weights; with `tokenizer_config.json` and `special_tokens_map.json` when the
/// repository has them).
pub fn text_tokenizer(spec: &str, config: &ClipConfig, hub: &Hub) -> Result<TextTokenizer> {
    let t = &config.text_cfg;
    let Some(name) = &t.hf_tokenizer_name else {
        return Ok(TextTokenizer::Clip);
    };
    let path = Path::new(spec.strip_prefix("local-dir:").unwrap_or(spec));
    let beside = if path.is_dir() {
        Some(path.to_path_buf())
    } else {
        path.parent()
            .filter(|_| path.is_file())
            .map(Path::to_path_buf)
    };
    let dir = match beside.filter(|d| d.join("tokenizer.json").is_file()) {
        Some(d) => d,
        None => {
            let repo = name.strip_prefix("hf-hub:").unwrap_or(name);
            let file = hub.get(repo, &["tokenizer.json"]).map_err(|m| {
                let why = match m {
                    Miss::Offline => "HF_HUB_OFFLINE is set, so nothing was downloaded".to_owned(),
                    Miss::Download(e) => format!("could not be downloaded: {e}"),
                };
                ModelError::Resolve(format!(
                    "this model's text tower uses the Hugging Face tokenizer '{repo}', which is neither beside the weights (tokenizer.json) nor in the Hugging Face cache ({}), and {why}",
                    hub.cache.display()
                ))
            })?;
            for companion in ["tokenizer_config.json", "special_tokens_map.json"] {
                let _ = hub.get(repo, &[companion]); // optional: pad token and padding side
            }
            file.parent().map(Path::to_path_buf).unwrap_or_default()
        }
    };
    let tok = HfTokenizer::from_dir(&dir, t.context_length, t.tokenizer_kwargs.as_ref())
        .map_err(|e| ModelError::Resolve(e.to_string()))?;
    Ok(TextTokenizer::Hf(std::sync::Arc::new(tok)))
}

/// Convert `spec` (anything [`load`] takes) to `out/model.safetensors` + `out/config.json`.
pub fn convert(spec: &str, out: &Path) -> Result<(PathBuf, PathBuf)> {
    convert_with(spec, &ModelOptions::default(), out)
}

/// [`convert`] with what the user states about the checkpoint. Refuses to write into its own
/// input or over existing files, before loading anything. The saved `config.json` carries the
/// model's preprocessing.
pub fn convert_with(spec: &str, opts: &ModelOptions, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let source = Path::new(spec);
    if source.exists() {
        clip_data::out::check_not_input(out, &[source.to_path_buf()])
            .map_err(|e| ModelError::Resolve(e.to_string()))?;
    }
    let (weights, config) = (out.join("model.safetensors"), out.join("config.json"));
    for f in [&weights, &config] {
        if f.exists() {
            bail!(
                "'{}' already exists; converting would overwrite it — choose another --out",
                f.display()
            );
        }
    }
    let clip = load_any(
        spec,
        opts,
        &Hub::from_env(),
        &clip_model::default_device(),
        &|_| Ok(()),
    )?;
    clip_model::save_clip(&clip, out)?;
    Ok((weights, config))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_tables_parse() {
        assert!(super::pretrained().len() >= 70);
        for (name, _) in clip_model::config::PRESETS {
            clip_model::preset(name).unwrap();
        }
        assert!(super::listing().contains("ViT-B-32"));
        assert!(super::listing().contains("ViT-bigG-14"));
    }

    #[test]
    fn pipeline_refuses_preprocessing_it_cannot_do() {
        let with = |pre: &str| {
            let mut cfg = clip_model::preset("ViT-B-32").unwrap();
            cfg.preprocess_cfg = Some(serde_json::from_str(pre).unwrap());
            super::check_preprocess(&cfg, "m")
        };
        assert!(with(r#"{"mean": 0.5, "std": 0.5}"#).is_ok());
        // open_clip evaluates `random` bicubically
        assert!(with(r#"{"interpolation": "random"}"#).is_ok());
        assert!(with(r#"{"resize_mode": "squash"}"#).is_ok());
        for (pre, want) in [
            (r#"{"interpolation": "bilinear"}"#, "bilinear interpolation"),
            (r#"{"resize_mode": "longest"}"#, "resize_mode longest"),
        ] {
            let e = with(pre).unwrap_err().to_string();
            assert!(
                e.starts_with("m expects its images preprocessed with") && e.contains(want),
                "{e}"
            );
        }
    }
}
