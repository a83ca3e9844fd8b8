//! The Hugging Face cache and Hub, configured from the environment as `huggingface_hub` does:
//! `HF_HUB_CACHE` (or the legacy `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, `HF_HOME` defaulting
//! to `$XDG_CACHE_HOME/huggingface` or `~/.cache/huggingface`), `HF_HUB_OFFLINE` (or
//! `TRANSFORMERS_OFFLINE`: a miss fails at once, with no network attempt), `HF_TOKEN` (or
//! `HUGGING_FACE_HUB_TOKEN`, else the file `HF_TOKEN_PATH` or `$HF_HOME/token`), `HF_ENDPOINT`.
//! (The `hf-hub` crate alone reads only `HF_HOME` and the token file, and panics without a home
//! folder.) Cached files are found in the cache's layout: `models--org--name/refs/main` holds the
//! commit, `snapshots/<commit>/<file>` the file (a link into `blobs/`).

use std::path::{Path, PathBuf};

/// Where and how to get files of Hugging Face Hub repositories.
#[derive(Debug, Clone, PartialEq)]
pub struct Hub {
    /// The hub cache folder (`HF_HUB_CACHE`).
    pub cache: PathBuf,
    /// Never touch the network (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Bearer token for gated or private repositories (`HF_TOKEN`).
    pub token: Option<String>,
    /// Hub address (`HF_ENDPOINT`; `None`: huggingface.co).
    pub endpoint: Option<String>,
}

/// Why a file could not be had.
#[derive(Debug, Clone, PartialEq)]
pub enum Miss {
    /// Not cached, and offline mode forbids downloading.
    Offline,
    /// Not cached, and the download failed (the last error).
    Download(String),
}

/// `huggingface_hub`'s `_is_true`.
fn is_true(v: Option<String>) -> bool {
    v.is_some_and(|v| matches!(v.to_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}

/// `huggingface_hub`'s `_clean_token`.
fn clean_token(t: Option<String>) -> Option<String> {
    t.map(|t| t.replace(['\r', '\n'], "").trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Python's `os.path.expandvars(os.path.expanduser(p))`: a leading `~`, then `$NAME` and
/// `${NAME}` of set variables (unset ones stay as written).
fn expand(p: &str, var: &dyn Fn(&str) -> Option<String>, home: &Path) -> PathBuf {
    let p = match p.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", home.display())
        }
        _ => p.to_owned(),
    };
    let mut out = String::new();
    let mut rest = p.as_str();
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(j) => (&inner[..j], &inner[j + 1..]),
                None => ("", after),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], &after[n..])
        };
        match (!name.is_empty()).then(|| var(name)).flatten() {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[i..rest.len() - tail.len()]),
        }
        rest = tail;
    }
    out.push_str(rest);
    PathBuf::from(out)
}

impl Hub {
    /// From the process environment.
    pub fn from_env() -> Hub {
        Hub::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// From environment variables given by `var` (tests pass their own).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Hub {
        #[allow(deprecated)] // fixed on every platform since Rust 1.85
        let home = var("HOME")
            .map(PathBuf::from)
            .or_else(std::env::home_dir)
            .unwrap_or_else(|| PathBuf::from("."));
        let hf_home = match var("HF_HOME") {
            Some(h) => expand(&h, &var, &home),
            None => var("XDG_CACHE_HOME")
                .map(|x| expand(&x, &var, &home))
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface"),
        };
        let cache = match var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
            Some(c) => expand(&c, &var, &home),
            None => hf_home.join("hub"),
        };
        let offline = is_true(var("HF_HUB_OFFLINE").or_else(|| var("TRANSFORMERS_OFFLINE")));
        let token =
            clean_token(var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN"))).or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(|p| expand(&p, &var, &home))
                    .unwrap_or_else(|| hf_home.join("token"));
                clean_token(std::fs::read_to_string(path).ok())
            });
        Hub {
            cache,
            offline,
            token,
            endpoint: var("HF_ENDPOINT").map(|e| e.trim_end_matches('/').to_owned()),
        }
    }

    /// The cache folder of a model repository (`models--org--name`).
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache.join(format!(
            "models--{}",
            repo.split('/').collect::<Vec<_>>().join("--")
        ))
    }

    /// A cached file of `repo` at its `main` revision, if the cache holds it.
    pub fn cached(&self, repo: &str, file: &str) -> Option<PathBuf> {
        let dir = self.repo_dir(repo);
        let commit = std::fs::read_to_string(dir.join("refs/main")).ok()?;
        let commit = commit.trim();
        if commit.is_empty() || commit.contains(['/', '\\']) || commit == ".." {
            return None;
        }
        let path = dir.join("snapshots").join(commit).join(file);
        path.is_file().then_some(path)
    }

    /// The first of `files` the cache holds; else (online) the first that downloads.
    pub fn get(&self, repo: &str, files: &[&str]) -> Result<PathBuf, Miss> {
        if let Some(p) = files.iter().find_map(|f| self.cached(repo, f)) {
            return Ok(p);
        }
        if self.offline {
            return Err(Miss::Offline);
        }
        let mut builder =
            hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(self.cache.clone()))
                .with_token(self.token.clone())
                .with_progress(true);
        if let Some(e) = &self.endpoint {
            builder = builder.with_endpoint(e.clone());
        }
        let api = builder.build().map_err(|e| Miss::Download(e.to_string()))?;
        let remote = api.model(repo.to_owned());
        let mut last = String::from("no file to fetch");
        for f in files {
            match remote.download(f) {
                Ok(p) => return Ok(p),
                Err(e) => last = format!("{f}: {e}"),
            }
        }
        Err(Miss::Download(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(vars: &[(&str, &str)]) -> Hub {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Hub::from_vars(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn cache_folder_as_huggingface_hub_finds_it() {
        assert_eq!(
            hub(&[("HOME", "/h")]).cache,
            Path::new("/h/.cache/huggingface/hub")
        );
        assert_eq!(
            hub(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]).cache,
            Path::new("/x/huggingface/hub")
        );
        assert_eq!(
            hub(&[("HOME", "/h"), ("HF_HOME", "~/hf")]).cache,
            Path::new("/h/hf/hub")
        );
        assert_eq!(
            hub(&[("HF_HOME", "/a"), ("HUGGINGFACE_HUB_CACHE", "/legacy")]).cache,
            Path::new("/legacy")
        );
        assert_eq!(
            hub(&[
                ("HF_HOME", "/a"),
                ("HUGGINGFACE_HUB_CACHE", "/legacy"),
                ("HF_HUB_CACHE", "$ROOT/c/${SUB}/$UNSET")
            ]
            .iter()
            .copied()
            .chain([("ROOT", "/r"), ("SUB", "s")])
            .collect::<Vec<_>>())
            .cache,
            Path::new("/r/c/s/$UNSET")
        );
    }

    #[test]
    fn offline_and_token_as_huggingface_hub_reads_them() {
        for (v, want) in [
            ("1", true),
            ("yes", true),
            ("True", true),
            ("0", false),
            ("", false),
        ] {
            assert_eq!(hub(&[("HF_HUB_OFFLINE", v)]).offline, want, "{v:?}");
        }
        assert!(hub(&[("TRANSFORMERS_OFFLINE", "ON")]).offline);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let home = dir.path().to_str().unwrap();
        assert_eq!(hub(&[("HF_HOME", home)]).token.as_deref(), Some("hf_file"));
        assert_eq!(
            hub(&[("HF_HOME", home), ("HF_TOKEN", " hf_env\r\n")])
                .token
                .as_deref(),
            Some("hf_env")
        );
        assert_eq!(
            hub(&[("HF_HOME", home), ("HUGGING_FACE_HUB_TOKEN", "hf_old")])
                .token
                .as_deref(),
            Some("hf_old")
        );
        assert_eq!(hub(&[("HF_HOME", "/nowhere")]).token, None);
        assert_eq!(
            hub(&[("HF_ENDPOINT", "http://mirror/")])
                .endpoint
                .as_deref(),
            Some("http://mirror")
        );
    }

    #[test]
    fn offline_miss_fails_without_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let h = Hub {
            cache: dir.path().to_path_buf(),
            offline: true,
            token: None,
            // were the network tried, this address would answer with an error after a while
            endpoint: Some("http://192.0.2.1:9".into()),
        };
        let t = std::time::Instant::now();
        assert_eq!(
            h.get("org/repo", &["open_clip_model.safetensors"]),
            Err(Miss::Offline)
        );
        assert!(t.elapsed().as_secs() < 2);
    }
}
