//! WebDataset tar shards, the format of LAION/DataComp: each sample is `{key}.jpg|jpeg|png|webp`
//! plus `{key}.txt` (the caption) or `{key}.json` (`"caption"` or `"text"`); classification shards
//! carry `{key}.cls` (a class index or name): it is the sample's label (and its text when it has no
//! caption); a caption is never taken for the label when a `.cls` is there. Shards are given as a
//! list or a brace pattern (`shards-{0000..0099}.tar`). They are indexed once, sequentially (member
//! headers only), then samples are read by offset. A truncated or damaged shard keeps the samples
//! before the damage; the loss is reported, never fatal.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::image::{Alpha, decode_rgb};
use crate::resize::Rgb8;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("no shards match '{0}'")]
    NoShards(String),
    #[error("bad brace pattern '{0}': use {{START..END}} with numbers")]
    Pattern(String),
    #[error("cannot open shard '{path}': {msg}")]
    Open { path: String, msg: String },
    #[error("the shards '{0}' hold no complete samples")]
    Empty(String),
}

/// `a-{000..002}.tar` → `a-000.tar, a-001.tar, a-002.tar` (zero padding kept); several braces
/// expand as a product; a comma list `{a,b}` works too.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, ShardError> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_owned()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| ShardError::Pattern(pattern.into()))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let items: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let (start, end): (u64, u64) = (
            a.parse().map_err(|_| ShardError::Pattern(pattern.into()))?,
            b.parse().map_err(|_| ShardError::Pattern(pattern.into()))?,
        );
        if end < start {
            return Err(ShardError::Pattern(pattern.into()));
        }
        let width = a.len();
        (start..=end).map(|i| format!("{i:0width$}")).collect()
    } else {
        body.split(',').map(str::to_owned).collect()
    };
    let mut out = Vec::new();
    for item in items {
        for rest in expand_braces(tail)? {
            out.push(format!("{head}{item}{rest}"));
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct Member {
    offset: u64,
    size: u64,
}

/// A sample being collected while indexing.
#[derive(Default)]
struct Pending {
    key: String,
    image: Option<Member>,
    /// `.txt` (false) or `.json` (true) caption
    caption: Option<(Member, bool)>,
    /// `.cls` label
    label: Option<Member>,
}

#[derive(Debug, Clone)]
struct Sample {
    shard: usize,
    key: String,
    image: Member,
    caption: Option<(Member, bool)>,
    label: Option<Member>,
}

/// Indexed shards.
#[derive(Debug, Clone)]
pub struct Shards {
    paths: Vec<PathBuf>,
    samples: Vec<Sample>,
    /// damage found while indexing (truncated shards, samples without image or caption)
    pub warnings: Vec<String>,
}

/// `dir/key.ext` → (`dir/key`, lower-case `ext`); `None` for a name without an extension.
fn key_and_ext(name: &str) -> Option<(String, String)> {
    let (dir, base) = name.rsplit_once('/').unwrap_or(("", name));
    let (k, e) = base.split_once('.')?;
    Some((format!("{dir}{k}"), e.to_ascii_lowercase()))
}

impl Pending {
    /// Record a member by its extension.
    fn add(&mut self, ext: &str, member: Member) {
        if crate::files::IMAGE_EXTENSIONS.contains(&ext) {
            self.image = Some(member);
        } else if ext == "txt" {
            self.caption = Some((member, false));
        } else if ext == "cls" {
            self.label = Some(member);
        } else if ext == "json" && self.caption.is_none() {
            self.caption = Some((member, true));
        }
    }

    /// Whether a member reaches past the end of a file of `len` bytes (cut by truncation).
    fn cut_at(&self, len: u64) -> bool {
        let cut = |m: Option<&Member>| m.is_some_and(|m| m.offset.saturating_add(m.size) > len);
        cut(self.image.as_ref())
            || cut(self.caption.as_ref().map(|c| &c.0))
            || cut(self.label.as_ref())
    }
}

/// Index the samples of shard number `si` at `path` (member headers only): complete samples go to
/// `samples`; incomplete ones and damage to `warnings`.
fn index_shard(
    si: usize,
    path: &Path,
    samples: &mut Vec<Sample>,
    warnings: &mut Vec<String>,
) -> Result<(), ShardError> {
    let file = std::fs::File::open(path).map_err(|e| ShardError::Open {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut archive = tar::Archive::new(file);
    let mut flush = |cur: Option<Pending>, warnings: &mut Vec<String>| {
        let Some(p) = cur else { return };
        match (p.image, p.caption.is_some() || p.label.is_some()) {
            (Some(image), true) => samples.push(Sample {
                shard: si,
                key: p.key,
                image,
                caption: p.caption,
                label: p.label,
            }),
            _ => warnings.push(format!(
                "{}: sample '{}' lacks an image or a caption",
                path.display(),
                p.key
            )),
        }
    };
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            warnings.push(format!("{}: unreadable ({e})", path.display()));
            return Ok(());
        }
    };
    let mut current: Option<Pending> = None;
    let mut damaged = None;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                damaged = Some(e.to_string());
                break;
            }
        };
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((key, ext)) = key_and_ext(&name) else {
            continue;
        };
        let member = Member {
            offset: entry.raw_file_position(),
            size: entry.size(),
        };
        if current.as_ref().is_none_or(|c| c.key != key) {
            flush(current.take(), warnings);
        }
        current
            .get_or_insert_with(|| Pending {
                key,
                ..Pending::default()
            })
            .add(&ext, member);
    }
    // a sample whose last member was cut off by truncation is not complete
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if current.as_ref().is_some_and(|p| p.cut_at(file_len)) {
        current = None;
        damaged.get_or_insert_with(|| "truncated".into());
    }
    flush(current.take(), warnings);
    if let Some(why) = damaged {
        warnings.push(format!(
            "{}: damaged or truncated ({why}); kept the complete samples before it",
            path.display()
        ));
    }
    Ok(())
}

impl Shards {
    /// Index the shards named by `spec` (a path or brace pattern; several separated by `::`).
    pub fn open(spec: &str) -> Result<Shards, ShardError> {
        let mut paths = Vec::new();
        for part in spec.split("::") {
            paths.extend(expand_braces(part)?.into_iter().map(PathBuf::from));
        }
        if paths.is_empty() {
            return Err(ShardError::NoShards(spec.into()));
        }
        let mut samples = Vec::new();
        let mut warnings = Vec::new();
        for (si, path) in paths.iter().enumerate() {
            index_shard(si, path, &mut samples, &mut warnings)?;
        }
        if samples.is_empty() {
            return Err(ShardError::Empty(spec.into()));
        }
        Ok(Shards {
            paths,
            samples,
            warnings,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    fn read(&self, shard: usize, m: &Member) -> Result<Vec<u8>, String> {
        let path = &self.paths[shard];
        let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.seek(SeekFrom::Start(m.offset))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut buf = vec![0; m.size as usize];
        f.read_exact(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(buf)
    }

    /// The shard files.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn sample_name(&self, index: usize) -> String {
        let s = &self.samples[index % self.samples.len()];
        format!(
            "{}#{}",
            self.paths[s.shard].display(),
            index % self.samples.len()
        )
    }

    /// The stable identity of sample `index`: its shard file and its WebDataset key
    /// (`shard.tar#key`), and the size of its image member.
    pub fn sample_id(&self, index: usize) -> (&Path, String, u64) {
        let s = &self.samples[index % self.samples.len()];
        let shard = &self.paths[s.shard];
        (
            shard,
            format!("{}#{}", shard.display(), s.key),
            s.image.size,
        )
    }

    /// The caption of sample `index` (its `.cls` text when it has no caption), without decoding
    /// its image.
    pub fn text(&self, index: usize) -> Result<String, String> {
        let s = &self.samples[index % self.samples.len()];
        match &s.caption {
            Some((m, json)) => self.read_text(index, m, *json),
            None => self.label(index),
        }
    }

    /// The class label of sample `index`: its `.cls` text, or its caption when it has no `.cls`.
    pub fn label(&self, index: usize) -> Result<String, String> {
        let s = &self.samples[index % self.samples.len()];
        match (&s.label, &s.caption) {
            (Some(m), _) => self.read_text(index, m, false),
            (None, Some((m, json))) => self.read_text(index, m, *json),
            (None, None) => Err(format!("{}: no caption or label", self.sample_name(index))),
        }
    }

    fn read_text(&self, index: usize, m: &Member, json: bool) -> Result<String, String> {
        let s = &self.samples[index % self.samples.len()];
        let name = self.sample_name(index);
        let raw = self.read(s.shard, m)?;
        let caption = if json {
            let v: serde_json::Value =
                serde_json::from_slice(&raw).map_err(|e| format!("{name}: caption JSON: {e}"))?;
            v.get("caption")
                .or_else(|| v.get("text"))
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_owned()
        } else {
            crate::text::decode_text(raw, &name).map_err(|e| e.to_string())?
        };
        Ok(caption.trim().to_owned())
    }

    /// The encoded image bytes of sample `index` and the sample's name (`shard.tar#i`).
    pub fn image_bytes(&self, index: usize) -> Result<(Vec<u8>, String), String> {
        let s = &self.samples[index % self.samples.len()];
        Ok((self.read(s.shard, &s.image)?, self.sample_name(index)))
    }

    /// Decoded image and caption of sample `index`.
    pub fn pair(&self, index: usize) -> Result<(Rgb8, String), String> {
        let s = &self.samples[index % self.samples.len()];
        let img = decode_rgb(
            &self.read(s.shard, &s.image)?,
            &self.sample_name(index),
            Alpha::Drop,
        )
        .map_err(|e| e.to_string())?;
        Ok((img, self.text(index)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn braces_expand_with_padding() {
        assert_eq!(
            expand_braces("s-{00..02}.tar").unwrap(),
            ["s-00.tar", "s-01.tar", "s-02.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}-{1..2}").unwrap(),
            ["a-1", "a-2", "b-1", "b-2"]
        );
        assert!(expand_braces("s-{3..1}.tar").is_err());
    }

    fn shard(path: &Path, samples: &[(&str, &[u8], &str)]) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (key, png, caption) in samples {
            for (name, data) in [
                (format!("{key}.png"), *png),
                (format!("{key}.txt"), caption.as_bytes()),
            ] {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, data).unwrap();
            }
        }
        b.finish().unwrap();
    }

    fn png() -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn reads_samples_and_survives_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = png();
        shard(
            &dir.path().join("s-0.tar"),
            &[("a", &p, "first"), ("b", &p, "second")],
        );
        shard(
            &dir.path().join("s-1.tar"),
            &[("c", &p, "third"), ("d", &p, "fourth")],
        );
        // cut the second shard inside its last sample
        let s1 = dir.path().join("s-1.tar");
        let bytes = std::fs::read(&s1).unwrap();
        std::fs::write(&s1, &bytes[..512 * 2 + p.len() + 512 + 512]).unwrap();
        let spec = format!("{}/s-{{0..1}}.tar", dir.path().display());
        let s = Shards::open(&spec).unwrap();
        assert_eq!(s.len(), 3, "{:?}", s.warnings);
        assert_eq!(s.pair(1).unwrap().1, "second");
        assert_eq!(s.pair(2).unwrap().1, "third");
        assert_eq!(s.pair(0).unwrap().0.data[..3], [10, 20, 30]);
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("s-1.tar: damaged or truncated")),
            "{:?}",
            s.warnings
        );
        let missing =
            Shards::open(&format!("{}/none-{{0..1}}.tar", dir.path().display())).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot open shard '"),
            "{missing}"
        );
    }
}
