//! The approximate index for large collections (`clip index --ann`): an HNSW graph over the
//! index's image vectors, kept next to the SQLite file as `INDEX.db.usearch`, its recall@10
//! against exact search measured and reported every time it is built.
//!
//! The graph is USearch's (`usearch` crate, Unum's single-file HNSW; also inside ClickHouse,
//! DuckDB and ScyllaDB), chosen over `hnsw_rs` because it stores the vectors as f16 (the index's own
//! type: 2 bytes a dimension, like the SQLite file), dispatches its distance kernels at run time
//! (AVX2, AVX-512, NEON), builds from many threads, and saves to and memory-maps one file.
//! Writing our own HNSW would re-do well-kept work.
//!
//! Freshness: every write to the images table (`put`, `remove`) deletes the `ann` stamp in the
//! same transaction; the builder writes the stamp (the sidecar's size and mtime) after the file
//! is in place. A search uses the graph only when the stamp matches the file, else it falls back
//! to exact search and says so, so a stale graph never gives silently wrong answers.
//! `clip index` rebuilds a stale graph once one has been asked for (`ann = 1` in the index).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::search::{Matrix, top_k};
use crate::store::StoreError;

/// HNSW parameters: links per node (M), candidate list while building (efConstruction) and
/// while searching (ef; raised to `2·k` for larger k).
pub const CONNECTIVITY: usize = 16;
pub const EXPANSION_ADD: usize = 128;
pub const EXPANSION_SEARCH: usize = 64;
/// Queries used to measure recall@10.
pub const RECALL_QUERIES: usize = 1000;

/// What building (or checking) an approximate index found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AnnReport {
    pub images: usize,
    /// seconds to build the graph (0 for PostgreSQL, whose index is kept by the database)
    pub build_seconds: f64,
    /// mean over the queries of |approximate top 10 ∩ exact top 10| / 10
    pub recall_at_10: f64,
    pub queries: usize,
    /// median milliseconds per query, exact and approximate
    pub exact_ms: f64,
    pub ann_ms: f64,
    /// the graph's size on disk
    pub bytes: u64,
    /// where it is
    pub location: String,
}

/// `pics.db` → `pics.db.usearch`.
pub fn sidecar(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".usearch");
    PathBuf::from(s)
}

/// The sidecar's identity as stored in the index: its size and modification time.
pub fn file_stamp(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    let t = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{}:{}", m.len(), t.as_nanos()))
}

fn options(dim: usize) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: MetricKind::Cos,
        quantization: ScalarKind::F16,
        connectivity: CONNECTIVITY,
        expansion_add: EXPANSION_ADD,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    }
}

/// An HNSW graph over image vectors; keys are image ids.
pub struct Ann {
    index: Index,
}

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        msg: format!("{what}: {e}"),
    }
}

impl Ann {
    /// Build the graph over `m`'s rows (on every rayon thread).
    pub fn build(m: &Matrix) -> Result<Ann, String> {
        let index = Index::new(&options(m.dim)).map_err(|e| e.to_string())?;
        index
            .reserve_capacity_and_threads(m.len().max(1), rayon::current_num_threads())
            .map_err(|e| e.to_string())?;
        (0..m.len())
            .into_par_iter()
            .try_for_each(|i| index.add(m.ids[i] as u64, m.row(i)))
            .map_err(|e| e.to_string())?;
        Ok(Ann { index })
    }

    /// Save to `path` through a temporary file in the same folder (an interrupted save leaves
    /// the previous graph, if any, in place).
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let s = tmp.to_str().ok_or_else(|| {
            err(
                path,
                "saving the approximate index",
                "the path is not UTF-8",
            )
        })?;
        self.index
            .save(s)
            .map_err(|e| err(path, "saving the approximate index", e))?;
        std::fs::rename(&tmp, path).map_err(|e| err(path, "saving the approximate index", e))
    }

    /// Memory-map the graph at `path` (built for vectors of `dim` values).
    pub fn open(path: &Path, dim: usize) -> Result<Ann, StoreError> {
        let s = path.to_str().ok_or_else(|| {
            err(
                path,
                "opening the approximate index",
                "the path is not UTF-8",
            )
        })?;
        let meta = Index::metadata(s).map_err(|e| err(path, "opening the approximate index", e))?;
        if meta.dimensions as usize != dim {
            return Err(err(
                path,
                "opening the approximate index",
                format!("it holds {}-value vectors, not {dim}", meta.dimensions),
            ));
        }
        let index =
            Index::new(&options(dim)).map_err(|e| err(path, "opening the approximate index", e))?;
        index
            .view(s)
            .map_err(|e| err(path, "opening the approximate index", e))?;
        Ok(Ann { index })
    }

    pub fn len(&self) -> usize {
        self.index.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` nearest ids of the unit vector `q` with their cosines, best first.
    pub fn search(&self, q: &[f32], k: usize) -> Vec<(i64, f32)> {
        if k > EXPANSION_SEARCH / 2 {
            self.index
                .change_expansion_search((2 * k).max(EXPANSION_SEARCH));
        }
        let Ok(m) = self.index.search(q, k) else {
            return Vec::new();
        };
        m.keys
            .iter()
            .zip(&m.distances)
            .map(|(&key, &d)| (key as i64, 1.0 - d))
            .collect()
    }
}

/// A query that is not an indexed vector: the normalised midpoint of rows `a` and `b`.
fn midpoint(m: &Matrix, a: usize, b: usize) -> Vec<f32> {
    let mut q: Vec<f32> = m.row(a).iter().zip(m.row(b)).map(|(x, y)| x + y).collect();
    let n = q.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    q.iter_mut().for_each(|x| *x /= n);
    q
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// recall@10 of `approx` against exact search over `m`, on up to [`RECALL_QUERIES`] queries that
/// are midpoints of two indexed images chosen by a fixed-seed generator (so the query is never
/// an indexed vector itself, which would flatter the graph); also the median time per query of
/// both. Returns (recall, queries, exact ms, approximate ms).
pub fn measure_recall(
    m: &Matrix,
    mut approx: impl FnMut(&[f32]) -> Result<Vec<i64>, StoreError>,
) -> Result<(f64, usize, f64, f64), StoreError> {
    let n = m.len();
    if n == 0 {
        return Ok((1.0, 0, 0.0, 0.0));
    }
    let nq = RECALL_QUERIES.min(n);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut hit, mut total) = (0usize, 0usize);
    let (mut te, mut ta) = (Vec::with_capacity(nq), Vec::with_capacity(nq));
    for _ in 0..nq {
        let q = midpoint(m, next(), next());
        let t = Instant::now();
        let exact: Vec<i64> = top_k(&m.scores(&q), 10)
            .into_iter()
            .map(|i| m.ids[i])
            .collect();
        te.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let got = approx(&q)?;
        ta.push(t.elapsed().as_secs_f64() * 1e3);
        hit += got.iter().take(10).filter(|id| exact.contains(id)).count();
        total += exact.len();
    }
    Ok((hit as f64 / total.max(1) as f64, nq, median(te), median(ta)))
}
