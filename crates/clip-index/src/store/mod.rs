//! The index file: one SQLite database (rclip's design) holding, per image, its absolute path,
//! modification time, size, content hash (xxh3) and embedding (f16 by default, or f32), plus the
//! embeddings of captions read from manifests, and the identity of the model that made them.
//!
//! Writes happen in transactions of one batch each, so an indexer killed at any moment leaves a
//! database whose every row is complete; a second indexer on the same file is refused (an
//! exclusive `flock` on the database file for the whole run).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

mod ann;
mod dtype;
pub use dtype::Dtype;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("index '{path}': {source}")]
    Sql {
        path: String,
        source: rusqlite::Error,
    },
    #[error("'{path}' is not a clip-rs index: {why}")]
    NotAnIndex { path: String, why: String },
    #[error(
        "index '{path}' was made by model {theirs}; this model is {ours}. Search it with the model that made it, or pass --reembed to rebuild it with this one"
    )]
    OtherModel {
        path: String,
        theirs: String,
        ours: String,
    },
    #[error(
        "index '{path}' is being written by another `clip index` (its file is locked); wait for it to finish"
    )]
    Busy { path: String },
    #[error("cannot open index '{path}': {msg}")]
    Open { path: String, msg: String },
    #[error(
        "index '{path}' does not exist; make it with `clip index SOURCE --model M --db {path}`"
    )]
    Missing { path: String },
    #[error("PostgreSQL at {url}: {msg}")]
    Postgres { url: String, msg: String },
}

/// Vectors with their rows: (image ids, paths or caption texts, `[n, dim]` values).
pub type Vectors = (Vec<i64>, Vec<String>, Vec<f32>);

/// The model that made an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    /// what the user named (`--model`)
    pub spec: String,
    /// `clip_embed::pipeline::model_fingerprint`: config and every weight
    pub fingerprint: String,
    pub dim: usize,
}

impl ModelId {
    /// The (key, value) rows an index stores about its vectors, in the SQLite file and in
    /// PostgreSQL alike: the layout version `schema`, this model and the vectors' `dtype`.
    pub(crate) fn meta_rows(&self, schema: &str, dtype: Dtype) -> [(&'static str, String); 5] {
        [
            ("schema", schema.to_owned()),
            ("model", self.spec.clone()),
            ("fingerprint", self.fingerprint.clone()),
            ("dim", self.dim.to_string()),
            ("dtype", dtype.name().to_owned()),
        ]
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "'{}' (fingerprint {}, {} dimensions)",
            self.spec, self.fingerprint, self.dim
        )
    }
}

/// One indexed image.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub path: String,
    pub mtime_ns: i64,
    pub size: i64,
    pub hash: String,
}

/// An open SQLite index.
pub struct SqliteStore {
    conn: Connection,
    pub path: PathBuf,
    pub model: ModelId,
    pub dtype: Dtype,
    /// held for writers: the exclusive lock on the database file
    _lock: Option<std::fs::File>,
    /// readers: the approximate index, when one is built and up to date
    ann: Option<crate::ann::Ann>,
    /// readers: why an approximate index that was asked for is not used
    ann_note: Option<String>,
    /// readers with an approximate index: the caption vectors, loaded on first use
    captions: Option<crate::search::Matrix>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_hash ON images(hash);
CREATE TABLE IF NOT EXISTS captions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    text TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS captions_image ON captions(image_id);
";

const SCHEMA_VERSION: &str = "1";

impl SqliteStore {
    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sql {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Open (or create) `path` for writing by `model`. A new file gets the schema and the
    /// model's identity; an existing index must have been made by the same model unless `reembed`
    /// (then its rows are removed and it takes this model's identity).
    pub fn create_or_open(
        path: &Path,
        model: &ModelId,
        dtype: Dtype,
        reembed: bool,
    ) -> Result<SqliteStore, StoreError> {
        let p = path.display().to_string();
        let existed = path.exists();
        if existed {
            check_sqlite_header(path)?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Sql {
            path: p.clone(),
            source,
        })?;
        // the writer's lock: one indexer per file (readers are not blocked: WAL)
        let lock = std::fs::File::open(path).map_err(|e| StoreError::Open {
            path: p.clone(),
            msg: e.to_string(),
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Busy { path: p }),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Open {
                    path: p,
                    msg: e.to_string(),
                });
            }
        }
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            model: model.clone(),
            dtype,
            _lock: Some(lock),
            ann: None,
            ann_note: None,
            captions: None,
        };
        let sql = |source| StoreError::Sql {
            path: p.clone(),
            source,
        };
        store
            .conn
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
            )
            .map_err(sql)?;
        if existed && let Some((theirs, their_dtype)) = store.read_meta()? {
            let same = theirs.fingerprint == model.fingerprint && theirs.dim == model.dim;
            if !same && !reembed {
                return Err(StoreError::OtherModel {
                    path: p,
                    theirs: theirs.to_string(),
                    ours: model.to_string(),
                });
            }
            if same && !reembed {
                store.dtype = their_dtype; // an index keeps its storage type
                return Ok(store);
            }
            store
                .conn
                .execute_batch("DELETE FROM captions; DELETE FROM images;")
                .map_err(sql)?;
        }
        store.conn.execute_batch(SCHEMA).map_err(sql)?;
        let tx = store.conn.transaction().map_err(sql)?;
        for (k, v) in model.meta_rows(SCHEMA_VERSION, dtype) {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![k, v],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok(store)
    }

    /// Open an existing index for reading.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let p = path.display().to_string();
        if !path.exists() {
            return Err(StoreError::Missing { path: p });
        }
        check_sqlite_header(path)?;
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Sql {
            path: p.clone(),
            source,
        })?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            model: ModelId {
                spec: String::new(),
                fingerprint: String::new(),
                dim: 0,
            },
            dtype: Dtype::F16,
            _lock: None,
            ann: None,
            ann_note: None,
            captions: None,
        };
        let (model, dtype) = store.read_meta()?.ok_or_else(|| StoreError::NotAnIndex {
            path: p,
            why: "it has no clip-rs metadata".into(),
        })?;
        store.model = model;
        store.dtype = dtype;
        store.load_ann();
        Ok(store)
    }

    /// A value of the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.sql())
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    /// The stored model identity and dtype; `None` for a database without our tables.
    fn read_meta(&self) -> Result<Option<(ModelId, Dtype)>, StoreError> {
        let p = self.path.display().to_string();
        let has_meta: bool = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(self.sql())?
            > 0;
        if !has_meta {
            let tables: i64 = self
                .conn
                .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(self.sql())?;
            if tables > 0 {
                return Err(StoreError::NotAnIndex {
                    path: p,
                    why: "it is an SQLite database with other tables (it is not overwritten)"
                        .into(),
                });
            }
            return Ok(None);
        }
        let get = |k: &str| -> Result<Option<String>, StoreError> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()
                .map_err(self.sql())
        };
        let bad = |why: &str| StoreError::NotAnIndex {
            path: p.clone(),
            why: why.to_owned(),
        };
        if get("schema")?.as_deref() != Some(SCHEMA_VERSION) {
            return Err(bad("its schema version is not one this build reads"));
        }
        let dim = get("dim")?
            .and_then(|d| d.parse().ok())
            .filter(|&d: &usize| d > 0 && d <= 1 << 16)
            .ok_or_else(|| bad("its dimension is missing or invalid"))?;
        let dtype = get("dtype")?
            .as_deref()
            .and_then(Dtype::parse)
            .ok_or_else(|| bad("its vector type is missing or invalid"))?;
        Ok(Some((
            ModelId {
                spec: get("model")?.unwrap_or_default(),
                fingerprint: get("fingerprint")?.unwrap_or_default(),
                dim,
            },
            dtype,
        )))
    }

    /// Every image row (without vectors), by path.
    pub fn rows(&self) -> Result<Vec<Row>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, path, mtime_ns, size, hash FROM images ORDER BY path")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    mtime_ns: r.get(2)?,
                    size: r.get(3)?,
                    hash: r.get(4)?,
                })
            })
            .map_err(self.sql())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql())?;
        Ok(rows)
    }

    /// Insert or replace images with their vectors and captions, in one transaction.
    pub fn put(&mut self, items: &[NewImage]) -> Result<(), StoreError> {
        let dtype = self.dtype;
        let p = self.path.display().to_string();
        let sql = |source| StoreError::Sql {
            path: p.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        if !items.is_empty() {
            tx.execute("DELETE FROM meta WHERE key = 'ann_stamp'", [])
                .map_err(sql)?;
        }
        for it in items {
            tx.execute("DELETE FROM images WHERE path = ?1", [&it.path])
                .map_err(sql)?;
            tx.execute(
                "INSERT INTO images (path, mtime_ns, size, hash, vector) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![it.path, it.mtime_ns, it.size, it.hash, dtype.encode(&it.vector)],
            )
            .map_err(sql)?;
            let id = tx.last_insert_rowid();
            for (text, v) in &it.captions {
                tx.execute(
                    "INSERT INTO captions (image_id, text, vector) VALUES (?1, ?2, ?3)",
                    params![id, text, dtype.encode(v)],
                )
                .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Point the row of `old` at `new` (a moved or renamed file: its vector is kept), in one
    /// transaction with the other moves.
    pub fn moved(&mut self, moves: &[(i64, String, i64, i64)]) -> Result<(), StoreError> {
        let p = self.path.display().to_string();
        let sql = |source| StoreError::Sql {
            path: p.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        for (id, path, mtime, size) in moves {
            tx.execute(
                "UPDATE images SET path = ?2, mtime_ns = ?3, size = ?4 WHERE id = ?1",
                params![id, path, mtime, size],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    /// Remove rows by id (files that are gone), in one transaction.
    pub fn remove(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let p = self.path.display().to_string();
        let sql = |source| StoreError::Sql {
            path: p.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        if !ids.is_empty() {
            tx.execute("DELETE FROM meta WHERE key = 'ann_stamp'", [])
                .map_err(sql)?;
        }
        for id in ids {
            tx.execute("DELETE FROM images WHERE id = ?1", [id])
                .map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    /// All image vectors as one row-major `[n, dim]` matrix, with their ids and paths.
    pub fn matrix(&self) -> Result<Vectors, StoreError> {
        self.vectors(
            "SELECT id, path, vector FROM images ORDER BY id",
            "the vector of row",
        )
    }

    /// All caption vectors as one row-major `[n, dim]` matrix, with their image ids and texts.
    pub fn caption_matrix(&self) -> Result<Vectors, StoreError> {
        self.vectors(
            "SELECT image_id, text, vector FROM captions ORDER BY id",
            "a caption vector of image",
        )
    }

    /// The rows of `query` (an id, a text, a vector) as ids, texts and one `[n, dim]` matrix; a
    /// vector of the wrong size is an error naming `what` and the id.
    fn vectors(&self, query: &str, what: &str) -> Result<Vectors, StoreError> {
        let dim = self.model.dim;
        let mut st = self.conn.prepare(query).map_err(self.sql())?;
        let mut rows = st.query([]).map_err(self.sql())?;
        let (mut ids, mut texts, mut data) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(r) = rows.next().map_err(self.sql())? {
            let id: i64 = r.get(0).map_err(self.sql())?;
            let bytes: Vec<u8> = r.get(2).map_err(self.sql())?;
            self.dtype
                .decode_into(&bytes, dim, &mut data)
                .ok_or_else(|| StoreError::NotAnIndex {
                    path: self.path.display().to_string(),
                    why: format!("{what} {id} is not {dim} {} values", self.dtype.name()),
                })?;
            ids.push(id);
            texts.push(r.get(1).map_err(self.sql())?);
        }
        Ok((ids, texts, data))
    }

    /// The number of images and captions.
    pub fn counts(&self) -> Result<(usize, usize), StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM images", [], |r| r.get(0))
            .map_err(self.sql())?;
        let c: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM captions", [], |r| r.get(0))
            .map_err(self.sql())?;
        Ok((n as usize, c as usize))
    }

    /// The path and vector of image `id`, if indexed.
    pub fn vector_of(&self, id: i64) -> Result<Option<(String, Vec<f32>)>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self
            .conn
            .query_row("SELECT path, vector FROM images WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(self.sql())?;
        Ok(row.and_then(|(p, b)| {
            let mut v = Vec::new();
            self.dtype.decode_into(&b, self.model.dim, &mut v)?;
            Some((p, v))
        }))
    }

    /// The path of image `id`, if indexed.
    pub fn path_of(&self, id: i64) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT path FROM images WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(self.sql())
    }
}

/// An image to store.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub path: String,
    pub mtime_ns: i64,
    pub size: i64,
    pub hash: String,
    pub vector: Vec<f32>,
    pub captions: Vec<(String, Vec<f32>)>,
}

/// An existing file must be an SQLite database (or empty) before SQLite touches it.
fn check_sqlite_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
    if n == 0 {
        return Ok(());
    }
    if n < 16 || &head != b"SQLite format 3\0" {
        return Err(StoreError::NotAnIndex {
            path: path.display().to_string(),
            why: "it is not an SQLite database (it is left as it is)".into(),
        });
    }
    Ok(())
}
