//! `clip index`: embed a collection into the index file, incrementally (rclip's behaviour).
//!
//! A run lists the source (a folder, recursively, hidden entries skipped; or a `.jsonl`/`.csv`
//! manifest whose captions are indexed too), compares each file with its row by modification time
//! and size, and then only: embeds new and changed files; re-points the row of a file that moved or
//! was renamed (same content hash) instead of embedding it again; refreshes the time of a file
//! touched without change (same hash); removes the rows of files that are gone from the source.
//! Files are decoded in parallel while batches are embedded; each batch is one transaction, so a
//! run killed at any moment loses at most the batch in flight and a re-run completes the index
//! without duplicates. Unreadable images (corrupt, empty, decompression bombs) are skipped, counted
//! and listed, and indexing goes on.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clip_data::shards::Shards;

use clip_embed::Embedder;
use rayon::prelude::*;

use crate::backend::Backend;
use crate::store::{Dtype, ModelId, NewImage, Row, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read source '{path}': {msg}")]
    Source { path: String, msg: String },
    #[error(transparent)]
    Embed(#[from] clip_embed::EmbedError),
}

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IndexReport {
    /// files listed by the source
    pub files: usize,
    pub unchanged: usize,
    pub embedded: usize,
    pub moved: usize,
    pub touched: usize,
    pub removed: usize,
    /// (path, why) of files that could not be embedded
    pub skipped: Vec<(String, String)>,
    pub captions: usize,
    /// damage found in the source (truncated shards, incomplete samples)
    pub warnings: Vec<String>,
    pub seconds: f64,
    /// the approximate index, when it was built or checked in this run
    pub ann: Option<crate::ann::AnnReport>,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub dtype: Dtype,
    pub reembed: bool,
    /// images per transaction (and per forward pass)
    pub batch: usize,
    pub quiet: bool,
    /// `--shard i/n`: index only partition i of n (see [`in_partition`])
    pub part: Option<(usize, usize)>,
    /// `--ann`: build the approximate index (and keep it up to date in later runs)
    pub ann: bool,
    /// `--ef N`: search the approximate index with effort N instead of calibrating it (kept for
    /// later rebuilds; 0 calibrates again)
    pub ef: Option<usize>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            dtype: Dtype::F16,
            reembed: false,
            batch: 32,
            quiet: false,
            part: None,
            ann: false,
            ef: None,
        }
    }
}

/// Where an item's image is.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Shard(Arc<Shards>, usize),
}

/// One image of the source, with its captions (manifests, shards), its stable name (the absolute
/// path, or `shard.tar#key`) and its modification time and size (a shard sample has its shard's
/// time and its image member's size).
#[derive(Debug, Clone)]
struct Entry {
    source: Source,
    name: String,
    captions: Vec<String>,
    stat: Option<(i64, i64)>,
}

impl Entry {
    fn file(path: PathBuf, captions: Vec<String>) -> Entry {
        let name = absolute(&path).display().to_string();
        let stat = stat(&path);
        Entry {
            source: Source::File(path),
            name,
            captions,
            stat,
        }
    }

    /// xxh3 of the image's bytes.
    fn hash(&self) -> String {
        let h = match &self.source {
            Source::File(p) => clip_data::dataset::content_hash(p),
            Source::Shard(s, i) => s
                .image_bytes(*i)
                .map_or(0, |(b, _)| xxhash_rust::xxh3::xxh3_64(&b)),
        };
        format!("{h:016x}")
    }

    /// The model input of the image.
    fn preprocess(&self, pre: &clip_data::Preprocess) -> Result<Vec<f32>, String> {
        match &self.source {
            Source::File(p) => pre.load(p).map_err(|e| e.to_string()),
            Source::Shard(s, i) => {
                let (bytes, name) = s.image_bytes(*i)?;
                pre.load_bytes(&bytes, &name).map_err(|e| e.to_string())
            }
        }
    }
}

/// The items of `source`: a folder (recursively, hidden entries skipped), a `.jsonl`/`.csv`
/// manifest, or WebDataset shards (`a.tar`, `a-{000..009}.tar`, `a.tar::b.tar`). Shard damage is
/// returned as warnings.
fn list(source: &str) -> Result<(Vec<Entry>, Vec<String>), IndexError> {
    let err = |msg: String| IndexError::Source {
        path: source.to_owned(),
        msg,
    };
    let path = Path::new(source);
    if path.is_dir() {
        let mut files = Vec::new();
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let rd = std::fs::read_dir(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
            for e in rd.flatten() {
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() && clip_data::files::is_image(&p) {
                    files.push(p);
                }
            }
        }
        files.sort();
        let out = files
            .into_par_iter()
            .map(|p| Entry::file(p, Vec::new()))
            .collect();
        return Ok((out, Vec::new()));
    }
    if clip_data::dataset::is_shard_spec(source) {
        let shards = Arc::new(Shards::open(source).map_err(|e| err(e.to_string()))?);
        let mut times = HashMap::new();
        for p in shards.paths() {
            times.insert(p.clone(), stat(p).map_or(0, |s| s.0));
        }
        let mut out = Vec::with_capacity(shards.len());
        for i in 0..shards.len() {
            let (shard, name, size) = shards.sample_id(i);
            let mtime = times.get(shard).copied().unwrap_or(0);
            let captions = match shards.text(i) {
                Ok(c) if !c.is_empty() => vec![c],
                _ => Vec::new(),
            };
            out.push(Entry {
                source: Source::Shard(shards.clone(), i),
                name,
                captions,
                stat: Some((mtime, size as i64)),
            });
        }
        return Ok((out, shards.warnings.clone()));
    }
    if path.is_file() {
        let rows = clip_data::manifest::read_rows(path).map_err(|e| err(e.to_string()))?;
        return Ok((
            rows.into_iter()
                .map(|r| Entry::file(r.image, r.captions))
                .collect(),
            Vec::new(),
        ));
    }
    Err(err("no such file or folder".into()))
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

fn stat(p: &Path) -> Option<(i64, i64)> {
    let m = std::fs::metadata(p).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    Some((mtime, m.len() as i64))
}

/// Whether `name` falls in partition `i` of `n` (`clip index --shard i/n`): a hash of the item's
/// stable name, so the n partitions are disjoint, cover the input, and do not depend on order.
pub fn in_partition(name: &str, part: Option<(usize, usize)>) -> bool {
    match part {
        None => true,
        Some((i, n)) => (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % n as u64) as usize == i,
    }
}

/// Work for one item: embed it (its hash computed while planning).
struct Job {
    entry: Entry,
    hash: String,
    /// the row it replaces, if any
    old: Option<i64>,
}

/// Index `source` (see [`list`]) into `db` with `emb`, recording `model_spec` as the model's name.
pub fn index(
    source: &str,
    db: &str,
    emb: &Embedder,
    model_spec: &str,
    opts: &IndexOptions,
) -> Result<IndexReport, IndexError> {
    let t0 = std::time::Instant::now();
    if let Some((i, n)) = opts.part
        && (n == 0 || i >= n)
    {
        return Err(IndexError::Source {
            path: source.to_owned(),
            msg: format!("--shard {i}/{n}: give i/n with 0 ≤ i < n"),
        });
    }
    let (mut entries, warnings) = list(source)?;
    entries.retain(|e| in_partition(&e.name, opts.part));
    let model = ModelId {
        spec: model_spec.to_owned(),
        fingerprint: emb.fingerprint.clone(),
        dim: emb.dim(),
    };
    let mut store = crate::backend::create_or_open(db, &model, opts.dtype, opts.reembed)?;
    let mut report = IndexReport {
        files: entries.len(),
        warnings,
        ..Default::default()
    };
    let rows = store.rows()?;
    let by_path: HashMap<&str, &Row> = rows.iter().map(|r| (r.path.as_str(), r)).collect();
    let present: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    // rows this run answers for: under the folder, in the listed shards, or (manifests) files
    // that no longer exist; and in this run's partition
    let path = Path::new(source);
    let root = absolute(path);
    let shard_prefixes: Vec<String> = if path.is_dir() {
        Vec::new()
    } else {
        let mut v: Vec<String> = entries
            .iter()
            .filter_map(|e| match &e.source {
                Source::Shard(s, _) => Some(
                    s.paths()
                        .iter()
                        .map(|p| format!("{}#", p.display()))
                        .collect::<Vec<_>>(),
                ),
                Source::File(_) => None,
            })
            .next()
            .unwrap_or_default();
        v.sort();
        v
    };
    let in_scope = |p: &str| {
        let listed_here = if path.is_dir() {
            Path::new(p).starts_with(&root)
        } else if !shard_prefixes.is_empty() {
            shard_prefixes.iter().any(|s| p.starts_with(s.as_str()))
        } else {
            !p.contains('#') && !Path::new(p).exists()
        };
        listed_here && in_partition(p, opts.part)
    };
    let gone: Vec<&Row> = rows
        .iter()
        .filter(|r| !present.contains(r.path.as_str()) && in_scope(&r.path))
        .collect();
    let mut gone_by_hash: HashMap<&str, Vec<&Row>> = HashMap::new();
    for r in &gone {
        gone_by_hash.entry(r.hash.as_str()).or_default().push(r);
    }
    let mut moves = Vec::new();
    let mut touched = Vec::new();
    let mut work: Vec<Job> = Vec::new();
    for e in entries {
        let Some((mtime, size)) = e.stat else {
            report
                .skipped
                .push((e.name.clone(), "cannot read its metadata".into()));
            continue;
        };
        match by_path.get(e.name.as_str()) {
            Some(r) if r.mtime_ns == mtime && r.size == size => report.unchanged += 1,
            Some(r) => {
                let hash = e.hash();
                if hash == r.hash && e.captions.is_empty() {
                    touched.push((r.id, e.name.clone(), mtime, size));
                } else {
                    work.push(Job {
                        entry: e,
                        hash,
                        old: Some(r.id),
                    });
                }
            }
            None => {
                let hash = e.hash();
                if let Some(r) = gone_by_hash.get_mut(hash.as_str()).and_then(Vec::pop) {
                    moves.push((r.id, e.name.clone(), mtime, size));
                } else {
                    work.push(Job {
                        entry: e,
                        hash,
                        old: None,
                    });
                }
            }
        }
    }
    let moved_ids: HashSet<i64> = moves.iter().map(|m| m.0).collect();
    report.moved = moves.len();
    report.touched = touched.len();
    store.moved(&moves)?;
    store.moved(&touched)?;

    let mut stale = Vec::new();
    embed_jobs(&work, store.as_mut(), emb, opts, &mut report, &mut stale)?;
    let removed: Vec<i64> = gone
        .iter()
        .map(|r| r.id)
        .filter(|id| !moved_ids.contains(id))
        .chain(stale)
        .collect();
    report.removed = removed.len();
    store.remove(&removed)?;
    report.ann = store.refresh_ann(opts.ann, opts.ef)?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Decode batch i+1 on a second thread (its images in parallel) while batch i is embedded and
/// committed.
fn embed_jobs(
    work: &[Job],
    store: &mut dyn Backend,
    emb: &Embedder,
    opts: &IndexOptions,
    report: &mut IndexReport,
    stale: &mut Vec<i64>,
) -> Result<(), IndexError> {
    let bar = clip_embed::progress(work.len(), "images");
    if opts.quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let batch = opts.batch.max(1);
    let dim = emb.dim();
    let pre = &emb.preprocess;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Vec<f32>, String>>>(1);
    let result = std::thread::scope(|scope| -> Result<(), IndexError> {
        scope.spawn(move || {
            for chunk in work.chunks(batch) {
                let prepared = chunk.par_iter().map(|j| j.entry.preprocess(pre)).collect();
                if tx.send(prepared).is_err() {
                    break;
                }
            }
        });
        for (chunk, prepared) in work.chunks(batch).zip(rx) {
            let mut ok = Vec::new();
            let mut pixels = Vec::new();
            for (job, p) in chunk.iter().zip(prepared) {
                match p {
                    Ok(px) => {
                        pixels.extend(px);
                        ok.push(job);
                    }
                    Err(why) => {
                        // a file that changed into something unreadable: its old vector is stale
                        stale.extend(job.old);
                        report.skipped.push((job.entry.name.clone(), why));
                    }
                }
            }
            if !ok.is_empty() {
                let vectors = emb.encode_pixels(pixels, ok.len(), false);
                let texts: Vec<String> = ok
                    .iter()
                    .flat_map(|j| j.entry.captions.iter().cloned())
                    .collect();
                let tv = if texts.is_empty() {
                    Vec::new()
                } else {
                    emb.embed_texts(&texts, true, false)?
                };
                let mut tv = tv.chunks(dim);
                let mut items = Vec::with_capacity(ok.len());
                for (job, v) in ok.iter().zip(vectors.chunks(dim)) {
                    let captions: Vec<(String, Vec<f32>)> = job
                        .entry
                        .captions
                        .iter()
                        .map(|c| (c.clone(), tv.next().unwrap_or_default().to_vec()))
                        .collect();
                    report.captions += captions.len();
                    let (mtime_ns, size) = job.entry.stat.unwrap_or_default();
                    items.push(NewImage {
                        path: job.entry.name.clone(),
                        mtime_ns,
                        size,
                        hash: job.hash.clone(),
                        vector: v.to_vec(),
                        captions,
                    });
                }
                store.put(&items)?;
                report.embedded += items.len();
            }
            bar.inc(chunk.len() as u64);
        }
        Ok(())
    });
    bar.finish_and_clear();
    result
}
