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
//!
//! Search effort: recall at a fixed ef falls as collections grow and as their vectors spread
//! (0.86 at ef = 64 on a million clustered 512-d vectors in `bench/bench_search.py`), so each build
//! calibrates ef like FAISS's auto-tuning: the smallest of [`EF_STEPS`] whose measured recall@10
//! reaches [`TARGET_RECALL`] (else the largest), kept in the index as `ann_ef` and used by every
//! later search.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::search::Matrix;
use crate::store::StoreError;

/// HNSW parameters: links per node (M), candidate list while building (efConstruction) and
/// while searching (ef; raised to `2·k` for larger k).
pub const CONNECTIVITY: usize = 16;
pub const EXPANSION_ADD: usize = 128;
pub const EXPANSION_SEARCH: usize = 64;
/// The recall@10 the build calibrates ef for, and the values of ef it tries in order.
pub const TARGET_RECALL: f64 = 0.95;
pub const EF_STEPS: [usize; 6] = [64, 128, 256, 512, 1024, 2048];
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
    /// the search effort (HNSW ef) these figures were measured with, and that searches use
    pub ef: usize,
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
    /// the calibrated search effort
    ef: usize,
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
            .try_for_each(|i| index.add(m.ids[i] as u64, &m.row(i)))
            .map_err(|e| e.to_string())?;
        Ok(Ann::with(index))
    }

    fn with(index: Index) -> Ann {
        Ann {
            index,
            ef: EXPANSION_SEARCH,
        }
    }

    /// Search with effort `ef` from now on (at least `2·k`).
    pub fn set_ef(&mut self, ef: usize) {
        self.ef = ef.max(1);
    }

    pub fn ef(&self) -> usize {
        self.ef
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
        Ok(Ann::with(index))
    }

    pub fn len(&self) -> usize {
        self.index.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` nearest ids of the unit vector `q` with their cosines, best first.
    pub fn search(&self, q: &[f32], k: usize) -> Vec<(i64, f32)> {
        self.index.change_expansion_search(self.ef.max(2 * k));
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
    let mut q: Vec<f32> = m.row(a).iter().zip(&m.row(b)).map(|(x, y)| x + y).collect();
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

/// Queries for measuring recall@10 over `m`, with their exact answers: up to
/// [`RECALL_QUERIES`] midpoints of two indexed images chosen by a fixed-seed generator (so a query
/// is never an indexed vector itself, which would flatter the graph).
pub struct RecallProbe {
    queries: Vec<Vec<f32>>,
    exact: Vec<Vec<i64>>,
    /// median milliseconds of one exact query
    pub exact_ms: f64,
}

impl RecallProbe {
    pub fn new(m: &Matrix) -> RecallProbe {
        let n = m.len();
        let nq = RECALL_QUERIES.min(n);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        let queries: Vec<Vec<f32>> = (0..nq).map(|_| midpoint(m, next(), next())).collect();
        // answers in one batched pass; single queries timed apart (what a search costs)
        let exact = m
            .top_k_batch(&queries.concat(), 10)
            .into_iter()
            .map(|hits| hits.into_iter().map(|h| h.id).collect())
            .collect();
        let times = queries
            .iter()
            .take(9)
            .map(|q| {
                let t = Instant::now();
                std::hint::black_box(m.top_k(q, 10));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        RecallProbe {
            queries,
            exact,
            exact_ms: median(times),
        }
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// recall@10 of `approx` and its median milliseconds per query.
    pub fn measure(
        &self,
        mut approx: impl FnMut(&[f32]) -> Result<Vec<i64>, StoreError>,
    ) -> Result<(f64, f64), StoreError> {
        if self.queries.is_empty() {
            return Ok((1.0, 0.0));
        }
        let (mut hit, mut total) = (0usize, 0usize);
        let mut times = Vec::with_capacity(self.queries.len());
        for (q, exact) in self.queries.iter().zip(&self.exact) {
            let t = Instant::now();
            let got = approx(q)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            hit += got.iter().take(10).filter(|id| exact.contains(id)).count();
            total += exact.len();
        }
        Ok((hit as f64 / total.max(1) as f64, median(times)))
    }

    /// recall@10 of the graph `ann` at its current search effort, and its median ms per query.
    pub fn measure_ann(&self, ann: &Ann) -> (f64, f64) {
        self.measure(|q| Ok(ann.search(q, 10).into_iter().map(|(id, _)| id).collect()))
            .unwrap_or((0.0, 0.0))
    }

    /// The smallest of `steps` whose recall reaches [`TARGET_RECALL`] (else the last), with
    /// `measure_at(ef)` giving (recall, ms) at an effort: (ef, recall, approximate ms) at the
    /// effort chosen, which `measure_at` was called with last. A user's fixed effort is one step.
    pub fn calibrate(
        &self,
        steps: &[usize],
        mut measure_at: impl FnMut(usize) -> Result<(f64, f64), StoreError>,
    ) -> Result<(usize, f64, f64), StoreError> {
        let mut last = (steps.first().copied().unwrap_or(EXPANSION_SEARCH), 1.0, 0.0);
        for &ef in steps {
            let (recall, ms) = measure_at(ef)?;
            last = (ef, recall, ms);
            if recall >= TARGET_RECALL {
                break;
            }
        }
        Ok(last)
    }

    /// [`RecallProbe::calibrate`] for the graph `ann`, whose search effort it leaves at the one
    /// chosen.
    pub fn calibrate_ann(&self, ann: &mut Ann, steps: &[usize]) -> (usize, f64, f64) {
        self.calibrate(steps, |ef| {
            ann.set_ef(ef);
            Ok(self.measure_ann(ann))
        })
        .unwrap_or((ann.ef(), 0.0, 0.0))
    }
}

/// The efforts to try: the user's fixed one (`Some`, if above 0), else `steps`.
pub fn efforts(fixed: Option<usize>, steps: &[usize]) -> Vec<usize> {
    match fixed.filter(|&ef| ef > 0) {
        Some(ef) => vec![ef],
        None => steps.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors in `d` dimensions around `c` random centres, with noise `noise`.
    fn clustered(n: usize, d: usize, c: usize, noise: f32) -> Vec<f32> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let centres: Vec<f32> = (0..c * d).map(|_| next()).collect();
        let mut out = Vec::with_capacity(n * d);
        for i in 0..n {
            let ci = i % c;
            let v: Vec<f32> = (0..d)
                .map(|j| centres[ci * d + j] + noise * next())
                .collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            out.extend(v.iter().map(|a| a / norm));
        }
        out
    }

    #[test]
    fn calibration_picks_the_smallest_effort_that_reaches_the_target() {
        // a spread-out collection (noise far above the clusters): ef 64 is not enough here
        let (n, d) = (8000, 128);
        let data = clustered(n, d, 50, 20.0);
        let m = Matrix::from_rows((0..n as i64).collect(), vec![String::new(); n], &data, d);
        let mut ann = Ann::build(&m).unwrap();
        let probe = RecallProbe::new(&m);
        assert_eq!(probe.len(), RECALL_QUERIES);
        let (ef, recall, _) = probe.calibrate_ann(&mut ann, &EF_STEPS);
        assert_eq!(ann.ef(), ef);
        let at = |ann: &mut Ann, ef: usize| {
            ann.set_ef(ef);
            probe.measure_ann(ann).0
        };
        assert!(
            ef > EF_STEPS[0],
            "the data should need more than the first step"
        );
        let step = EF_STEPS.iter().position(|&e| e == ef).unwrap();
        if recall >= TARGET_RECALL {
            if step > 0 {
                assert!(at(&mut ann, EF_STEPS[step - 1]) < TARGET_RECALL);
            }
        } else {
            assert_eq!(ef, *EF_STEPS.last().unwrap());
        }
        assert_eq!(
            at(&mut ann, ef),
            recall,
            "the same queries give the same recall"
        );
        // recall does not fall as the effort grows
        assert!(at(&mut ann, 2048) >= at(&mut ann, 64));
    }
}
