//! `clip search`: exact nearest neighbours of a query over the index's vectors, with rclip's query
//! algebra: words separated by `+` and `-` form terms, a term is a text or an image file (an
//! existing path with an image extension, or given with `--image`), and `W:term` weighs it
//! (`"2:golden retriever" + ./pool.jpg - fruit`). The query vector is the weighted sum of the
//! terms' L2-normalised embeddings, normalised; scores are cosines against every indexed image
//! (one matrix product, gemm's SIMD kernels picked at run time), the top k kept.

use std::path::{Path, PathBuf};

use clip_embed::Embedder;

use crate::backend::Backend;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Query(String),
    #[error(transparent)]
    Embed(#[from] clip_embed::EmbedError),
}

/// One term of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Text(String),
    Image(PathBuf),
}

/// A parsed query: weighted terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Query(pub Vec<(f32, Term)>);

/// Close the words gathered so far into one weighted term.
fn flush(terms: &mut Vec<(f32, Term)>, sign: f32, current: &mut Vec<&str>) {
    if current.is_empty() {
        return;
    }
    let text = current.join(" ");
    current.clear();
    let (weight, body) = match text.split_once(':') {
        Some((w, rest)) if !rest.is_empty() => match w.trim().parse::<f32>() {
            Ok(w) if w.is_finite() => (w, rest.trim().to_owned()),
            _ => (1.0, text.clone()),
        },
        _ => (1.0, text.clone()),
    };
    let p = Path::new(&body);
    let term = if p.is_file() && clip_data::files::is_image(p) {
        Term::Image(p.to_path_buf())
    } else {
        Term::Text(body)
    };
    terms.push((sign * weight, term));
}

impl Query {
    /// Parse words (as the shell split them) into weighted terms; `images` are extra image terms.
    pub fn parse(words: &[String], images: &[PathBuf]) -> Result<Query, SearchError> {
        let mut terms = Vec::new();
        let mut sign = 1.0f32;
        let mut current: Vec<&str> = Vec::new();
        for w in words {
            match w.as_str() {
                "+" | "-" => {
                    if current.is_empty() {
                        return Err(SearchError::Query(format!(
                            "'{w}' must stand between two terms (\"dog + beach - sand\")"
                        )));
                    }
                    flush(&mut terms, sign, &mut current);
                    sign = if w == "-" { -1.0 } else { 1.0 };
                }
                other => current.push(other),
            }
        }
        if current.is_empty() && !terms.is_empty() {
            return Err(SearchError::Query(
                "the query ends with an operator: add a term after it".into(),
            ));
        }
        flush(&mut terms, sign, &mut current);
        for img in images {
            terms.push((1.0, Term::Image(img.clone())));
        }
        if terms.is_empty() {
            return Err(SearchError::Query(
                "empty query: give a text, an image file, or --image FILE".into(),
            ));
        }
        Ok(Query(terms))
    }

    /// The query's unit vector for `emb`.
    pub fn vector(&self, emb: &Embedder) -> Result<Vec<f32>, SearchError> {
        let d = emb.dim();
        let mut q = vec![0f32; d];
        for (w, term) in &self.0 {
            let v = match term {
                Term::Text(t) => emb.embed_texts(std::slice::from_ref(t), true, false)?,
                Term::Image(p) => emb.embed_files(std::slice::from_ref(p), false)?,
            };
            for (a, b) in q.iter_mut().zip(&v) {
                *a += w * b;
            }
        }
        let norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm.is_nan() || norm <= 1e-12 {
            return Err(SearchError::Query(
                "the terms cancel out (the weighted sum is zero)".into(),
            ));
        }
        q.iter_mut().for_each(|x| *x /= norm);
        Ok(q)
    }
}

/// An index opened for searching with the model that made it.
pub struct Searcher {
    pub store: Box<dyn Backend>,
    pub emb: Embedder,
    /// the vectors in memory (`None` when the database searches with its own index)
    pub matrix: Option<Matrix>,
    /// why an approximate index that was built is not used, for the user
    pub note: Option<String>,
}

impl Searcher {
    /// Open `db` (a file or a `postgres://` URL) and load its model: `model` when given (it must
    /// be the one that made the index: same weights and config), else the model the index records.
    /// Searches go through the approximate index (`clip index --ann`, or PostgreSQL's HNSW index)
    /// when there is an up-to-date one, unless `exact` (images only: PostgreSQL's index is its
    /// own).
    pub fn open(
        db: &str,
        model: Option<&str>,
        opts: &clip_embed::models::ModelOptions,
        batch: usize,
        exact: bool,
    ) -> Result<Searcher, SearchError> {
        let mut store = crate::backend::open(db)?;
        let note = store.ann_note();
        if exact && !crate::is_postgres(db) {
            store.exact_only();
        }
        let spec = model.unwrap_or(&store.model().spec).to_owned();
        // the precision the index was built with, unless the user names one
        let opts = clip_embed::models::ModelOptions {
            precision: opts
                .precision
                .or(Some(clip_embed::pipeline::fingerprint_precision(
                    &store.model().fingerprint,
                ))),
            ..opts.clone()
        };
        let emb = Embedder::load_with(&spec, &opts, batch)?;
        store.check_model(&emb, &spec)?;
        let matrix = if store.has_ann() {
            None
        } else {
            Some(Matrix::load(store.as_mut())?)
        };
        Ok(Searcher {
            store,
            emb,
            matrix,
            note,
        })
    }

    /// The `k` nearest images of `query`.
    pub fn search(&mut self, query: &Query, k: usize) -> Result<Vec<Hit>, SearchError> {
        let q = query.vector(&self.emb)?;
        nearest(self.store.as_mut(), self.matrix.as_ref(), &q, k)
    }
}

/// The `k` nearest images of the unit vector `q`: exact over `matrix` when loaded, else by the
/// database's own index.
pub fn nearest(
    store: &mut dyn Backend,
    matrix: Option<&Matrix>,
    q: &[f32],
    k: usize,
) -> Result<Vec<Hit>, SearchError> {
    Ok(match matrix {
        Some(m) => m.top_k(q, k),
        None => store
            .nearest(q, k, false)?
            .into_iter()
            .map(|(id, path, score)| Hit { id, path, score })
            .collect(),
    })
}

/// Where `clip index` and `clip search` keep the index when `--db` is not given: `$CLIP_INDEX`,
/// else `$XDG_DATA_HOME/clip-rs/index.db`, else `~/.local/share/clip-rs/index.db` (rclip keeps
/// its database in the same place).
pub fn default_db() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLIP_INDEX").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("clip-rs").join("index.db"))
}

/// A search hit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    pub id: i64,
    pub path: String,
    pub score: f32,
}

/// Rows converted from f16 and multiplied at a time: 256 × 512 f32 = 512 KiB, about one core's
/// L2 cache, so the converted block is read back from cache by the product.
const BLOCK: usize = 256;

/// The index's vectors in memory, as the index stores them: f16, half the bytes of f32 (1 KiB per
/// 512-d vector, plus 4 bytes of scale), so a scan reads half the memory FAISS's `IndexFlatIP`
/// reads. Scores are computed a block of rows at a time: the block is widened to f32 (F16C,
/// detected at run time by `half`) into a cache-sized buffer and multiplied with all queries at
/// once by gemm's SIMD kernels (AVX-512 or AVX2+FMA, picked at run time); blocks are spread over
/// the threads, each keeping its own top-k per query, merged at the end. The product is
/// hand-arranged here because no crate multiplies f32 queries with an f16 matrix.
pub struct Matrix {
    pub ids: Vec<i64>,
    pub paths: Vec<String>,
    /// row-major `[n, dim]`
    data: Vec<half::f16>,
    /// `1 / |row|` of each f16 row: f16 rounding moves a unit vector's norm by up to ~1e-3, and
    /// the scale makes every row exactly unit length again (an image's cosine with itself is 1)
    scale: Vec<f32>,
    pub dim: usize,
}

/// A candidate in a top-k heap, ordered so that the heap's top is the worst kept: lowest score,
/// then highest row.
#[derive(Clone, Copy, PartialEq)]
struct Cand(f32, usize);

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

/// The `k` best of a stream of candidates.
struct TopK {
    k: usize,
    heap: std::collections::BinaryHeap<Cand>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: std::collections::BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    fn push(&mut self, c: Cand) {
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && c < *worst
        {
            *worst = c;
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<Cand> {
        self.heap.into_sorted_vec()
    }
}

impl Matrix {
    pub fn load(store: &mut dyn Backend) -> Result<Matrix, SearchError> {
        let (ids, paths, data) = store.matrix()?;
        Ok(Matrix::from_rows(ids, paths, &data, store.model().dim))
    }

    /// The index's caption vectors: `ids` are their images' ids, `paths` the caption texts.
    pub fn captions(store: &mut dyn Backend) -> Result<Matrix, SearchError> {
        let (ids, texts, data) = store.caption_matrix()?;
        Ok(Matrix::from_rows(ids, texts, &data, store.model().dim))
    }

    /// A matrix of `data`'s rows (`[n, dim]`, row-major), each stored as f16 and scaled to unit
    /// length (zero rows stay zero).
    pub fn from_rows(ids: Vec<i64>, paths: Vec<String>, data: &[f32], dim: usize) -> Matrix {
        use half::slice::HalfFloatSliceExt;
        let dim = dim.max(1);
        let mut half = vec![half::f16::ZERO; data.len()];
        half.convert_from_f32_slice(data);
        let mut wide = vec![0f32; dim];
        let scale = half
            .chunks(dim)
            .map(|row| {
                row.convert_to_f32_slice(&mut wide);
                let n = wide.iter().map(|x| x * x).sum::<f32>().sqrt();
                if n > 0.0 { 1.0 / n } else { 0.0 }
            })
            .collect();
        Matrix {
            ids,
            paths,
            data: half,
            scale,
            dim,
        }
    }

    /// Rows `start..start + rows` as unit f32 vectors (`[rows, dim]`).
    pub fn rows(&self, start: usize, rows: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * self.dim];
        self.widen(start, rows, &mut out);
        for (r, row) in out.chunks_mut(self.dim).enumerate() {
            let s = self.scale[start + r];
            row.iter_mut().for_each(|x| *x *= s);
        }
        out
    }

    /// Row `i` as a unit f32 vector.
    pub fn row(&self, i: usize) -> Vec<f32> {
        self.rows(i, 1)
    }

    fn widen(&self, start: usize, rows: usize, out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        let d = self.dim;
        self.data[start * d..(start + rows) * d].convert_to_f32_slice(&mut out[..rows * d]);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes each vector takes in memory (f16 values and an f32 scale).
    pub fn bytes_per_vector(&self) -> usize {
        self.dim * 2 + 4
    }

    /// Cosines of `queries` (`[m, dim]`) against rows `start..start + rows` into `out`
    /// (`[m, rows]`), widening the block into `wide` first.
    fn block(&self, queries: &[f32], start: usize, rows: usize, wide: &mut [f32], out: &mut [f32]) {
        let d = self.dim;
        let m = queries.len() / d;
        self.widen(start, rows, wide);
        clip_embed::linalg::matmul_into(
            m,
            rows,
            d,
            &mut out[..m * rows],
            false,
            queries,
            (1, d as isize),
            &wide[..rows * d],
            (d as isize, 1),
            false,
        );
        let scale = &self.scale[start..start + rows];
        for q in out[..m * rows].chunks_mut(rows) {
            for (x, s) in q.iter_mut().zip(scale) {
                *x *= s;
            }
        }
    }

    /// Rows per parallel task: blocks are grouped so each thread gets a few tasks.
    fn chunk(&self) -> usize {
        let tasks = rayon::current_num_threads().max(1) * 4;
        self.len().div_ceil(tasks).div_ceil(BLOCK).max(1) * BLOCK
    }

    /// Walk every row in blocks, chunks of blocks spread over the threads: each chunk starts from
    /// `init()` and `step(acc, first row, scores)` sees each block's cosines with `queries`
    /// (`[m, rows]`, row-major). Returns (first row, accumulator) per chunk, in row order.
    fn fold_blocks<T: Send>(
        &self,
        queries: &[f32],
        init: impl Fn() -> T + Sync,
        step: impl Fn(&mut T, usize, &[f32]) + Sync,
    ) -> Vec<(usize, T)> {
        use rayon::prelude::*;
        let (n, d) = (self.len(), self.dim);
        let m = queries.len() / d;
        let chunk = self.chunk();
        (0..n)
            .step_by(chunk)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let rows = chunk.min(n - start);
                let mut acc = init();
                let mut wide = vec![0f32; BLOCK * d];
                let mut block = vec![0f32; m * BLOCK];
                for b in (0..rows).step_by(BLOCK) {
                    let r = BLOCK.min(rows - b);
                    self.block(queries, start + b, r, &mut wide, &mut block);
                    step(&mut acc, start + b, &block[..m * r]);
                }
                (start, acc)
            })
            .collect()
    }

    /// Cosines of `queries` (`[m, dim]`, unit rows) against every row: `[m, n]`.
    pub fn scores(&self, queries: &[f32]) -> Vec<f32> {
        let n = self.len();
        let m = queries.len() / self.dim;
        let mut s = vec![0f32; m * n];
        // each chunk keeps its blocks (first row, [m, r] cosines); they land in `s` afterwards
        let parts = self.fold_blocks(queries, Vec::new, |acc, row, block| {
            acc.push((row, block.to_vec()))
        });
        for (row, block) in parts.into_iter().flat_map(|(_, blocks)| blocks) {
            let r = block.len() / m.max(1);
            for (q, cos) in block.chunks(r.max(1)).enumerate() {
                s[q * n + row..q * n + row + r].copy_from_slice(cos);
            }
        }
        s
    }

    /// The `k` best rows for each of `queries` (`[m, dim]`, unit rows), best first (ties by row).
    pub fn top_k_batch(&self, queries: &[f32], k: usize) -> Vec<Vec<Hit>> {
        let m = queries.len() / self.dim;
        let k = k.min(self.len());
        let fresh = || (0..m).map(|_| TopK::new(k)).collect::<Vec<_>>();
        let mut merged = fresh();
        if k > 0 && m > 0 {
            let parts = self.fold_blocks(queries, fresh, |heaps, row, block| {
                let r = block.len() / m;
                for (heap, s) in heaps.iter_mut().zip(block.chunks(r)) {
                    for (j, &x) in s.iter().enumerate() {
                        heap.push(Cand(x, row + j));
                    }
                }
            });
            for (_, heaps) in parts {
                for (x, y) in merged.iter_mut().zip(heaps) {
                    for c in y.heap {
                        x.push(c);
                    }
                }
            }
        }
        merged
            .into_iter()
            .map(|heap| {
                heap.into_sorted()
                    .into_iter()
                    .map(|Cand(score, i)| Hit {
                        id: self.ids[i],
                        path: self.paths[i].clone(),
                        score,
                    })
                    .collect()
            })
            .collect()
    }

    /// The `k` best rows for one unit query vector, best first (ties by row).
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<Hit> {
        self.top_k_batch(query, k).pop().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn blocked_top_k_equals_a_full_sort_of_the_f16_rows() {
        // more rows than one block per task, a ragged last block, duplicated rows for ties
        let (n, d, m, k) = (3 * BLOCK * rayon::current_num_threads() * 4 + 37, 24, 5, 12);
        let mut data = values(n * d, 1);
        let copy = data[7 * d..8 * d].to_vec();
        data[(n - 1) * d..].copy_from_slice(&copy); // row n-1 equals row 7
        let queries = values(m * d, 2);
        let mat = Matrix::from_rows(
            (0..n as i64).map(|i| 1000 + i).collect(),
            vec![String::new(); n],
            &data,
            d,
        );
        let got = mat.top_k_batch(&queries, k);
        let all = mat.scores(&queries);
        assert_eq!(got.len(), m);
        for (q, hits) in got.iter().enumerate() {
            // the reference: f64 dot products of the unit f16 rows, sorted by score then row
            let qv = &queries[q * d..(q + 1) * d];
            let mut want: Vec<(f64, usize)> = (0..n)
                .map(|r| {
                    let row = mat.row(r);
                    (
                        row.iter().zip(qv).map(|(a, b)| *a as f64 * *b as f64).sum(),
                        r,
                    )
                })
                .collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            assert_eq!(hits.len(), k);
            let truth: std::collections::HashMap<usize, f64> =
                want.iter().map(|&(s, r)| (r, s)).collect();
            let mut seen = std::collections::HashSet::new();
            for (h, (score, _)) in hits.iter().zip(&want) {
                let r = (h.id - 1000) as usize;
                assert!(seen.insert(r), "query {q}: row {r} twice in {hits:?}");
                // the k-th best score at each rank (a tie may swap equal rows) and the hit's own
                assert!((h.score as f64 - score).abs() < 1e-5, "query {q}: {hits:?}");
                assert!((h.score as f64 - truth[&r]).abs() < 1e-5);
                assert_eq!(h.score, all[q * n + r]);
            }
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
        // a row's cosine with itself is 1 after f16 storage
        let self_hit = mat.top_k(&mat.row(7), 2);
        let mut ids: Vec<i64> = self_hit.iter().map(|h| h.id).collect();
        ids.sort();
        assert_eq!(ids, vec![1007, 1000 + n as i64 - 1], "the row and its copy");
        assert!(
            (self_hit[0].score - 1.0).abs() < 1e-6,
            "{}",
            self_hit[0].score
        );
        // k above n, and an empty matrix
        assert_eq!(mat.top_k(&queries[..d], n + 5).len(), n);
        let empty = Matrix::from_rows(vec![], vec![], &[], d);
        assert!(empty.top_k(&queries[..d], 3).is_empty());
        assert!(empty.scores(&queries).is_empty());
    }
}
