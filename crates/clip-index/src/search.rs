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
        let emb = Embedder::load_with(&spec, opts, batch)?;
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

/// The index's vectors in memory.
pub struct Matrix {
    pub ids: Vec<i64>,
    pub paths: Vec<String>,
    /// row-major `[n, dim]`
    pub data: Vec<f32>,
    pub dim: usize,
}

impl Matrix {
    pub fn load(store: &mut dyn Backend) -> Result<Matrix, SearchError> {
        let (ids, paths, data) = store.matrix()?;
        Ok(Matrix::unit(ids, paths, data, store.model().dim))
    }

    /// The index's caption vectors: `ids` are their images' ids, `paths` the caption texts.
    pub fn captions(store: &mut dyn Backend) -> Result<Matrix, SearchError> {
        let (ids, texts, data) = store.caption_matrix()?;
        Ok(Matrix::unit(ids, texts, data, store.model().dim))
    }

    /// Rows scaled back to unit length: vectors were stored unit-length, and f16 rounding moves
    /// their norm by up to ~1e-3 (an image's cosine with itself is then 1, as before storage).
    fn unit(ids: Vec<i64>, paths: Vec<String>, mut data: Vec<f32>, dim: usize) -> Matrix {
        for row in data.chunks_mut(dim.max(1)) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                row.iter_mut().for_each(|x| *x /= n);
            }
        }
        Matrix {
            ids,
            paths,
            data,
            dim,
        }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Cosines of `queries` (`[m, dim]`, unit rows) against every row: `[m, n]`.
    pub fn scores(&self, queries: &[f32]) -> Vec<f32> {
        let m = queries.len() / self.dim.max(1);
        let zero = vec![0f32; self.len()];
        clip_embed::linalg::scores(queries, m, self.dim, &self.data, &zero)
    }

    /// The `k` best rows for one unit query vector, best first (ties by id).
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let s = self.scores(query);
        top_k(&s, k)
            .into_iter()
            .map(|i| Hit {
                id: self.ids[i],
                path: self.paths[i].clone(),
                score: s[i],
            })
            .collect()
    }
}

/// Indices of the `k` largest values, largest first (stable: lower index first on ties).
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(scores.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let cmp = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}
