//! One store interface over the two places an index can live: an SQLite file (one machine, rclip's
//! design) or a PostgreSQL database with pgvector (Immich's design; many indexers, many machines).
//! `--db` chooses: a `postgres://` or `postgresql://` URL, else a file path.

use std::path::Path;

use crate::store::{Dtype, ModelId, NewImage, Row, SqliteStore, StoreError, Vectors};

/// A hit from a database's own nearest-neighbour index: (image id, path or caption, cosine).
pub type DbHit = (i64, String, f32);

/// What `index`, `search`, `dedup` and `serve` need of a store.
pub trait Backend: Send {
    /// Where it is (a path, or the URL without its password).
    fn location(&self) -> String;
    fn model(&self) -> &ModelId;
    fn dtype(&self) -> Dtype;
    /// Every image row (without vectors).
    fn rows(&mut self) -> Result<Vec<Row>, StoreError>;
    /// Insert or replace images with their vectors and captions, in one transaction.
    fn put(&mut self, items: &[NewImage]) -> Result<(), StoreError>;
    /// Re-point rows `(id, new path, mtime, size)`, in one transaction.
    fn moved(&mut self, moves: &[(i64, String, i64, i64)]) -> Result<(), StoreError>;
    /// Remove rows by id, in one transaction.
    fn remove(&mut self, ids: &[i64]) -> Result<(), StoreError>;
    /// All image vectors `[n, dim]` with their ids and paths, by id.
    fn matrix(&mut self) -> Result<Vectors, StoreError>;
    /// All caption vectors with their images' ids and texts.
    fn caption_matrix(&mut self) -> Result<Vectors, StoreError>;
    /// The number of images and captions.
    fn counts(&mut self) -> Result<(usize, usize), StoreError>;
    /// The path and vector of image `id`.
    fn vector_of(&mut self, id: i64) -> Result<Option<(String, Vec<f32>)>, StoreError>;
    /// Whether [`Backend::nearest`] answers from the database's own index (then searches need
    /// not load the vectors).
    fn has_ann(&self) -> bool {
        false
    }
    /// The `k` nearest images (or captions) of the unit vector `q`, by the database's index.
    fn nearest(
        &mut self,
        _q: &[f32],
        _k: usize,
        _captions: bool,
    ) -> Result<Vec<DbHit>, StoreError> {
        Ok(Vec::new())
    }

    /// The `k` nearest image ids of `q` with their cosines, by the database's index (no paths:
    /// what `dedup` asks for every image).
    fn neighbours(&mut self, q: &[f32], k: usize) -> Result<Vec<(i64, f32)>, StoreError> {
        Ok(self
            .nearest(q, k, false)?
            .into_iter()
            .map(|(id, _, s)| (id, s))
            .collect())
    }
    /// Build, rebuild or check the approximate index (see [`crate::ann`]): when `want`, or when
    /// one was asked for before and is out of date; `ef` fixes its search effort (see
    /// [`crate::IndexOptions::ef`]). `None` when there was nothing to do.
    fn refresh_ann(
        &mut self,
        _want: bool,
        _ef: Option<usize>,
    ) -> Result<Option<crate::ann::AnnReport>, StoreError> {
        Ok(None)
    }
    /// Why an approximate index that was built is not used (it is out of date).
    fn ann_note(&self) -> Option<String> {
        None
    }
    /// Search exactly even where an approximate index exists (`--exact`).
    fn exact_only(&mut self) {}

    /// An error naming both models unless `emb` (loaded from `spec`) made this index.
    fn check_model(&self, emb: &clip_embed::Embedder, spec: &str) -> Result<(), StoreError> {
        let m = self.model();
        if emb.fingerprint == m.fingerprint && emb.dim() == m.dim {
            return Ok(());
        }
        Err(StoreError::OtherModel {
            path: self.location(),
            theirs: m.to_string(),
            ours: ModelId {
                spec: spec.to_owned(),
                fingerprint: emb.fingerprint.clone(),
                dim: emb.dim(),
            }
            .to_string(),
        })
    }
}

/// Whether `db` names a PostgreSQL database.
pub fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Open (or create) `db` for writing by `model` (see [`SqliteStore::create_or_open`]).
pub fn create_or_open(
    db: &str,
    model: &ModelId,
    dtype: Dtype,
    reembed: bool,
) -> Result<Box<dyn Backend>, StoreError> {
    if is_postgres(db) {
        return Ok(Box::new(crate::pg::PgStore::create_or_open(
            db, model, dtype, reembed,
        )?));
    }
    Ok(Box::new(SqliteStore::create_or_open(
        Path::new(db),
        model,
        dtype,
        reembed,
    )?))
}

/// Open an existing index for reading.
pub fn open(db: &str) -> Result<Box<dyn Backend>, StoreError> {
    if is_postgres(db) {
        return Ok(Box::new(crate::pg::PgStore::open(db)?));
    }
    Ok(Box::new(SqliteStore::open(Path::new(db))?))
}

impl Backend for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }
    fn model(&self) -> &ModelId {
        &self.model
    }
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn rows(&mut self) -> Result<Vec<Row>, StoreError> {
        SqliteStore::rows(self)
    }
    fn put(&mut self, items: &[NewImage]) -> Result<(), StoreError> {
        SqliteStore::put(self, items)
    }
    fn moved(&mut self, moves: &[(i64, String, i64, i64)]) -> Result<(), StoreError> {
        SqliteStore::moved(self, moves)
    }
    fn remove(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        SqliteStore::remove(self, ids)
    }
    fn matrix(&mut self) -> Result<Vectors, StoreError> {
        SqliteStore::matrix(self)
    }
    fn caption_matrix(&mut self) -> Result<Vectors, StoreError> {
        SqliteStore::caption_matrix(self)
    }
    fn counts(&mut self) -> Result<(usize, usize), StoreError> {
        SqliteStore::counts(self)
    }
    fn vector_of(&mut self, id: i64) -> Result<Option<(String, Vec<f32>)>, StoreError> {
        SqliteStore::vector_of(self, id)
    }
    fn has_ann(&self) -> bool {
        self.ann().is_some()
    }
    fn nearest(&mut self, q: &[f32], k: usize, captions: bool) -> Result<Vec<DbHit>, StoreError> {
        self.nearest_ann(q, k, captions)
    }
    fn refresh_ann(
        &mut self,
        want: bool,
        ef: Option<usize>,
    ) -> Result<Option<crate::ann::AnnReport>, StoreError> {
        SqliteStore::refresh_ann(self, want, ef)
    }
    fn ann_note(&self) -> Option<String> {
        SqliteStore::ann_note(self).map(str::to_owned)
    }
    fn exact_only(&mut self) {
        self.drop_ann()
    }
    fn neighbours(&mut self, q: &[f32], k: usize) -> Result<Vec<(i64, f32)>, StoreError> {
        match self.ann() {
            Some(a) => Ok(a.search(q, k)),
            None => Ok(self
                .nearest_ann(q, k, false)?
                .into_iter()
                .map(|(id, _, s)| (id, s))
                .collect()),
        }
    }
}
