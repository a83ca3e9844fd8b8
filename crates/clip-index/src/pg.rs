//! The index in PostgreSQL with pgvector, Immich's design: tables `clip_meta`, `clip_images` and
//! `clip_captions`, vectors as `halfvec(D)` (or `vector(D)` with `--f32`) under an HNSW index
//! with cosine distance, the model's identity in `clip_meta`. Searches are one
//! `ORDER BY vector <=> $1 LIMIT k` — no other sort key, so the planner keeps the HNSW index.
//!
//! Many indexers may write at once (`clip index --shard i/n` on n machines): rows are upserted by
//! path, each batch is one transaction, and the schema is created under an advisory lock. Tables
//! this module did not create are never written: a `clip_meta` without our keys is an error.

use std::time::Duration;

use pgvector::{HalfVector, Vector};
use postgres::types::ToSql;
use postgres::{Client, NoTls};

use crate::backend::{Backend, DbHit};
use crate::store::{Dtype, ModelId, NewImage, Row, StoreError, Vectors};

/// A vector as a query parameter.
type Param = Box<dyn ToSql + Sync>;

/// An open PostgreSQL index.
pub struct PgStore {
    client: Client,
    url: String,
    model: ModelId,
    dtype: Dtype,
    /// `hnsw.ef_search` for searches (at least k), read from `clip_meta` on first use
    ef: Option<usize>,
}

const SCHEMA_VERSION: &str = "1";
/// `pg_advisory_xact_lock` key for schema changes ("clip" in ASCII).
const LOCK: i64 = 0x636c_6970;
/// pgvector's default `hnsw.ef_search`, used until `clip index --ann` calibrates one; searches
/// use at least k, at most pgvector's limit of 1,000.
const EF_SEARCH_MIN: usize = 40;
const EF_SEARCH_MAX: usize = 1000;
/// The values of `hnsw.ef_search` the calibration tries, in order.
const EF_SEARCH_STEPS: [usize; 6] = [40, 64, 128, 256, 512, 1000];

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((cred, host)) => match cred.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn connect(url: &str) -> Result<Client, StoreError> {
    let err = |msg: String| StoreError::Postgres {
        url: redact(url),
        msg,
    };
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| err(format!("not a valid connection URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config
        .connect(NoTls)
        .map_err(|e| err(format!("cannot connect: {}", chain(&e))))
}

/// An error with its causes (the postgres crate puts the reason in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl PgStore {
    fn err(&self) -> impl Fn(postgres::Error) -> StoreError + '_ {
        |e| StoreError::Postgres {
            url: self.url.clone(),
            msg: chain(&e),
        }
    }

    /// Open (or create) the index at `url` for writing by `model`; another model's index is an
    /// error unless `reembed` (then its tables are rebuilt for this model).
    pub fn create_or_open(
        url: &str,
        model: &ModelId,
        dtype: Dtype,
        reembed: bool,
    ) -> Result<PgStore, StoreError> {
        let mut store = PgStore {
            client: connect(url)?,
            url: redact(url),
            model: model.clone(),
            dtype,
            ef: None,
        };
        let e = |e: postgres::Error| StoreError::Postgres {
            url: redact(url),
            msg: chain(&e),
        };
        let mut tx = store.client.transaction().map_err(e)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
            .map_err(e)?;
        tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
            .map_err(|x| StoreError::Postgres {
                url: redact(url),
                msg: format!(
                    "the pgvector extension is not available ({}); install pgvector in this server",
                    chain(&x)
                ),
            })?;
        let existing = read_meta(&mut tx, url)?;
        let fresh = match existing {
            Some((theirs, their_dtype)) => {
                let same = theirs.fingerprint == model.fingerprint && theirs.dim == model.dim;
                if !same && !reembed {
                    return Err(StoreError::OtherModel {
                        path: redact(url),
                        theirs: theirs.to_string(),
                        ours: model.to_string(),
                    });
                }
                if same && !reembed {
                    store.dtype = their_dtype;
                    false
                } else {
                    tx.batch_execute(
                        "DROP TABLE IF EXISTS clip_captions; DROP TABLE IF EXISTS clip_images;",
                    )
                    .map_err(e)?;
                    true
                }
            }
            None => true,
        };
        if fresh {
            let d = model.dim;
            let (ty, ops) = match dtype {
                Dtype::F16 => (format!("halfvec({d})"), "halfvec_cosine_ops"),
                Dtype::F32 => (format!("vector({d})"), "vector_cosine_ops"),
            };
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS clip_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE clip_images (id BIGSERIAL PRIMARY KEY, path TEXT NOT NULL UNIQUE,
                     mtime_ns BIGINT NOT NULL, size BIGINT NOT NULL, hash TEXT NOT NULL, vector {ty} NOT NULL);
                 CREATE INDEX clip_images_hash ON clip_images (hash);
                 CREATE INDEX clip_images_hnsw ON clip_images USING hnsw (vector {ops});
                 CREATE TABLE clip_captions (id BIGSERIAL PRIMARY KEY,
                     image_id BIGINT NOT NULL REFERENCES clip_images(id) ON DELETE CASCADE,
                     text TEXT NOT NULL, vector {ty} NOT NULL);
                 CREATE INDEX clip_captions_image ON clip_captions (image_id);
                 CREATE INDEX clip_captions_hnsw ON clip_captions USING hnsw (vector {ops});"
            ))
            .map_err(e)?;
            for (k, v) in model.meta_rows(SCHEMA_VERSION, dtype) {
                tx.execute(
                    "INSERT INTO clip_meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&k.to_owned(), &v],
                )
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(store)
    }

    /// Open an existing index for reading.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let mut client = connect(url)?;
        let (model, dtype) = {
            let mut tx = client.transaction().map_err(|e| StoreError::Postgres {
                url: redact(url),
                msg: chain(&e),
            })?;
            read_meta(&mut tx, url)?.ok_or_else(|| StoreError::NotAnIndex {
                path: redact(url),
                why: "it has no clip_meta table; make the index with `clip index SOURCE --db URL`"
                    .into(),
            })?
        };
        Ok(PgStore {
            client,
            url: redact(url),
            model,
            dtype,
            ef: None,
        })
    }

    /// A value of `clip_meta` (settings beside the model identity).
    fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .client
            .query_opt("SELECT value FROM clip_meta WHERE key = $1", &[&key])
            .map_err(self.err())?
            .map(|r| r.get(0)))
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO clip_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn param(&self, v: &[f32]) -> Param {
        match self.dtype {
            Dtype::F16 => Box::new(HalfVector::from(
                v.iter()
                    .map(|x| half::f16::from_f32(*x))
                    .collect::<Vec<_>>(),
            )),
            Dtype::F32 => Box::new(Vector::from(v.to_vec())),
        }
    }

    fn read_vector(&self, row: &postgres::Row, i: usize) -> Result<Vec<f32>, StoreError> {
        let v: Vec<f32> = match self.dtype {
            Dtype::F16 => row
                .try_get::<_, HalfVector>(i)
                .map_err(self.err())?
                .to_vec()
                .into_iter()
                .map(half::f16::to_f32)
                .collect(),
            Dtype::F32 => row.try_get::<_, Vector>(i).map_err(self.err())?.to_vec(),
        };
        if v.len() != self.model.dim {
            return Err(StoreError::NotAnIndex {
                path: self.url.clone(),
                why: format!("a vector has {} values, not {}", v.len(), self.model.dim),
            });
        }
        Ok(v)
    }

    fn vectors(&mut self, sql: &str) -> Result<Vectors, StoreError> {
        let rows = self
            .client
            .query(sql, &[])
            .map_err(|e| StoreError::Postgres {
                url: self.url.clone(),
                msg: chain(&e),
            })?;
        let (mut ids, mut names, mut data) = (Vec::new(), Vec::new(), Vec::new());
        for r in &rows {
            ids.push(r.try_get(0).map_err(self.err())?);
            names.push(r.try_get(1).map_err(self.err())?);
            data.extend(self.read_vector(r, 2)?);
        }
        Ok((ids, names, data))
    }
}

/// The model identity in `clip_meta`; `None` when there is no such table.
fn read_meta(
    tx: &mut postgres::Transaction<'_>,
    url: &str,
) -> Result<Option<(ModelId, Dtype)>, StoreError> {
    let e = |e: postgres::Error| StoreError::Postgres {
        url: redact(url),
        msg: chain(&e),
    };
    let exists: bool = tx
        .query_one("SELECT to_regclass('clip_meta') IS NOT NULL", &[])
        .map_err(e)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = tx
        .query("SELECT key, value FROM clip_meta", &[])
        .map_err(e)?;
    let get = |k: &str| {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == k)
            .map(|r| r.get::<_, String>(1))
    };
    let bad = |why: &str| StoreError::NotAnIndex {
        path: redact(url),
        why: why.to_owned(),
    };
    if get("schema").as_deref() != Some(SCHEMA_VERSION) {
        return Err(bad(
            "its clip_meta table was not made by clip-rs (or by another version); it is left as it is",
        ));
    }
    let dim = get("dim")
        .and_then(|d| d.parse().ok())
        .filter(|&d: &usize| d > 0 && d <= 1 << 16)
        .ok_or_else(|| bad("its dimension is missing or invalid"))?;
    let dtype = match get("dtype").as_deref() {
        Some("f16") => Dtype::F16,
        Some("f32") => Dtype::F32,
        _ => return Err(bad("its vector type is missing or invalid")),
    };
    Ok(Some((
        ModelId {
            spec: get("model").unwrap_or_default(),
            fingerprint: get("fingerprint").unwrap_or_default(),
            dim,
        },
        dtype,
    )))
}

impl Backend for PgStore {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn model(&self) -> &ModelId {
        &self.model
    }

    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn rows(&mut self) -> Result<Vec<Row>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT id, path, mtime_ns, size, hash FROM clip_images ORDER BY path",
                &[],
            )
            .map_err(|e| StoreError::Postgres {
                url: self.url.clone(),
                msg: chain(&e),
            })?;
        rows.iter()
            .map(|r| {
                Ok(Row {
                    id: r.try_get(0).map_err(self.err())?,
                    path: r.try_get(1).map_err(self.err())?,
                    mtime_ns: r.try_get(2).map_err(self.err())?,
                    size: r.try_get(3).map_err(self.err())?,
                    hash: r.try_get(4).map_err(self.err())?,
                })
            })
            .collect()
    }

    fn put(&mut self, items: &[NewImage]) -> Result<(), StoreError> {
        let params: Vec<(Param, Vec<Param>)> = items
            .iter()
            .map(|it| {
                (
                    self.param(&it.vector),
                    it.captions.iter().map(|(_, v)| self.param(v)).collect(),
                )
            })
            .collect();
        let url = self.url.clone();
        let e = |e: postgres::Error| StoreError::Postgres {
            url: url.clone(),
            msg: chain(&e),
        };
        let mut tx = self.client.transaction().map_err(e)?;
        for (it, (v, caps)) in items.iter().zip(&params) {
            let id: i64 = tx
                .query_one(
                    "INSERT INTO clip_images (path, mtime_ns, size, hash, vector) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (path) DO UPDATE SET mtime_ns = EXCLUDED.mtime_ns, size = EXCLUDED.size,
                         hash = EXCLUDED.hash, vector = EXCLUDED.vector
                     RETURNING id",
                    &[&it.path, &it.mtime_ns, &it.size, &it.hash, v.as_ref()],
                )
                .map_err(e)?
                .get(0);
            tx.execute("DELETE FROM clip_captions WHERE image_id = $1", &[&id])
                .map_err(e)?;
            for ((text, _), cv) in it.captions.iter().zip(caps) {
                tx.execute(
                    "INSERT INTO clip_captions (image_id, text, vector) VALUES ($1, $2, $3)",
                    &[&id, text, cv.as_ref()],
                )
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    fn moved(&mut self, moves: &[(i64, String, i64, i64)]) -> Result<(), StoreError> {
        let url = self.url.clone();
        let e = |e: postgres::Error| StoreError::Postgres {
            url: url.clone(),
            msg: chain(&e),
        };
        let mut tx = self.client.transaction().map_err(e)?;
        for (id, path, mtime, size) in moves {
            tx.execute(
                "UPDATE clip_images SET path = $2, mtime_ns = $3, size = $4 WHERE id = $1",
                &[id, path, mtime, size],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    fn remove(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.client
            .execute("DELETE FROM clip_images WHERE id = ANY($1)", &[&ids])
            .map(|_| ())
            .map_err(|e| StoreError::Postgres {
                url: self.url.clone(),
                msg: chain(&e),
            })
    }

    fn matrix(&mut self) -> Result<Vectors, StoreError> {
        self.vectors("SELECT id, path, vector FROM clip_images ORDER BY id")
    }

    fn caption_matrix(&mut self) -> Result<Vectors, StoreError> {
        self.vectors("SELECT image_id, text, vector FROM clip_captions ORDER BY id")
    }

    fn counts(&mut self) -> Result<(usize, usize), StoreError> {
        let r = self
            .client
            .query_one(
                "SELECT (SELECT COUNT(*) FROM clip_images), (SELECT COUNT(*) FROM clip_captions)",
                &[],
            )
            .map_err(|e| StoreError::Postgres {
                url: self.url.clone(),
                msg: chain(&e),
            })?;
        Ok((r.get::<_, i64>(0) as usize, r.get::<_, i64>(1) as usize))
    }

    fn vector_of(&mut self, id: i64) -> Result<Option<(String, Vec<f32>)>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT path, vector FROM clip_images WHERE id = $1", &[&id])
            .map_err(|e| StoreError::Postgres {
                url: self.url.clone(),
                msg: chain(&e),
            })?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some((
                r.try_get(0).map_err(self.err())?,
                self.read_vector(&r, 1)?,
            ))),
        }
    }

    fn has_ann(&self) -> bool {
        true
    }

    /// PostgreSQL keeps its HNSW index itself; `--ann` calibrates `hnsw.ef_search` as the SQLite
    /// graph's ef is calibrated (the smallest of [`EF_SEARCH_STEPS`] reaching recall@10 ≥ 0.95
    /// against exact search over the same vectors), or takes `ef` (kept as `ef_search_fixed`;
    /// 0 calibrates again), and keeps it in `clip_meta` for later searches.
    fn refresh_ann(
        &mut self,
        want: bool,
        ef: Option<usize>,
    ) -> Result<Option<crate::ann::AnnReport>, StoreError> {
        if !want {
            return Ok(None);
        }
        let m = crate::search::Matrix::load(self).map_err(|e| StoreError::Postgres {
            url: self.url.clone(),
            msg: e.to_string(),
        })?;
        let probe = crate::ann::RecallProbe::new(&m);
        if let Some(ef) = ef {
            self.set_meta("ef_search_fixed", &ef.min(EF_SEARCH_MAX).to_string())?;
        }
        let fixed = self.meta("ef_search_fixed")?.and_then(|v| v.parse().ok());
        let steps = crate::ann::efforts(fixed, &EF_SEARCH_STEPS);
        let (chosen, recall_at_10, ann_ms) = probe.calibrate(&steps, |ef| {
            self.ef = Some(ef);
            probe.measure(|q| {
                Ok(self
                    .nearest(q, 10, false)?
                    .into_iter()
                    .map(|(id, _, _)| id)
                    .collect())
            })
        })?;
        self.ef = Some(chosen);
        self.set_meta("ef_search", &chosen.to_string())?;
        let bytes: i64 = self
            .client
            .query_one("SELECT pg_relation_size('clip_images_hnsw')", &[])
            .map_err(self.err())?
            .get(0);
        Ok(Some(crate::ann::AnnReport {
            images: m.len(),
            build_seconds: 0.0,
            recall_at_10,
            queries: probe.len(),
            exact_ms: probe.exact_ms,
            ann_ms,
            ef: chosen,
            bytes: bytes as u64,
            location: format!("{} (clip_images_hnsw)", self.url),
        }))
    }

    fn nearest(&mut self, q: &[f32], k: usize, captions: bool) -> Result<Vec<DbHit>, StoreError> {
        let sql = nearest_sql(captions);
        let v = self.param(q);
        let limit = k as i64;
        let ef = match self.ef {
            Some(ef) => ef,
            None => {
                let ef = self
                    .meta("ef_search")?
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(EF_SEARCH_MIN);
                self.ef = Some(ef);
                ef
            }
        };
        let ef = ef.max(k).min(EF_SEARCH_MAX) as i64;
        let url = self.url.clone();
        let e = |e: postgres::Error| StoreError::Postgres {
            url: url.clone(),
            msg: chain(&e),
        };
        let mut tx = self.client.transaction().map_err(e)?;
        tx.batch_execute(&format!("SET LOCAL hnsw.ef_search = {ef}"))
            .map_err(e)?;
        let rows = tx.query(sql, &[v.as_ref(), &limit]).map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), 1.0 - r.get::<_, f64>(2) as f32))
            .collect())
    }
}

/// The nearest-neighbour query: one `ORDER BY vector <=> $1` with nothing else to sort by, so
/// PostgreSQL answers it from the HNSW index.
pub fn nearest_sql(captions: bool) -> &'static str {
    if captions {
        "SELECT image_id, text, vector <=> $1 AS d FROM clip_captions ORDER BY vector <=> $1 LIMIT $2"
    } else {
        "SELECT id, path, vector <=> $1 AS d FROM clip_images ORDER BY vector <=> $1 LIMIT $2"
    }
}
