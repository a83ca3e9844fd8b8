//! What the routes share: the embedder, the classifier cache, the batcher and the open index.

use super::*;

/// An index: an SQLite file's vectors are held in memory and searched exactly; a PostgreSQL
/// index is searched by its own HNSW index.
pub struct Index {
    pub location: String,
    pub name: String,
    pub(crate) store: Mutex<Box<dyn clip_index::Backend>>,
    pub(crate) images: Option<Matrix>,
    pub(crate) captions: Option<Matrix>,
    pub(crate) by_id: HashMap<i64, usize>,
    pub(crate) counts: (usize, usize),
}

impl Index {
    pub(crate) fn open(db: &str, emb: &Embedder, model: &str) -> Result<Index, ServeError> {
        let mut store = clip_index::open(db)?;
        store.check_model(emb, model)?;
        let counts = store.counts()?;
        let (images, captions) = if store.has_ann() {
            (None, None)
        } else {
            (
                Some(Matrix::load(store.as_mut())?),
                Some(Matrix::captions(store.as_mut())?),
            )
        };
        let by_id = images
            .iter()
            .flat_map(|m| m.ids.iter().enumerate().map(|(i, &id)| (id, i)))
            .collect();
        let name = if clip_index::is_postgres(db) {
            db.rsplit('/')
                .next()
                .and_then(|t| t.split('?').next())
                .filter(|t| !t.is_empty())
                .unwrap_or("index")
                .to_owned()
        } else {
            std::path::Path::new(db)
                .file_stem()
                .map_or("index".into(), |s| s.to_string_lossy().into_owned())
        };
        Ok(Index {
            location: store.location(),
            name,
            store: Mutex::new(store),
            images,
            captions,
            by_id,
            counts,
        })
    }

    pub(crate) fn db_error(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    /// The `k` nearest images (or captions) of the unit vector `q` (blocking).
    pub(crate) fn nearest(
        &self,
        q: &[f32],
        k: usize,
        captions: bool,
    ) -> Result<Vec<clip_index::Hit>, ApiError> {
        let m = if captions {
            &self.captions
        } else {
            &self.images
        };
        if let Some(m) = m {
            return Ok(m.top_k(q, k));
        }
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        Ok(store
            .nearest(q, k, captions)
            .map_err(Index::db_error)?
            .into_iter()
            .map(|(id, path, score)| clip_index::Hit { id, path, score })
            .collect())
    }

    /// The path and vector of image `id` (blocking).
    pub(crate) fn image(&self, id: i64) -> Result<(String, Vec<f32>), ApiError> {
        let missing = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no image with id {id} in the index"),
            )
        };
        if let Some(m) = &self.images {
            let row = *self.by_id.get(&id).ok_or_else(missing)?;
            return Ok((m.paths[row].clone(), m.row(row)));
        }
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        store
            .vector_of(id)
            .map_err(Index::db_error)?
            .ok_or_else(missing)
    }
}

/// Run `f` on the index off the async threads.
pub(crate) async fn with_index<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&Index) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    app.index()?;
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(app.index()?))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// The server's state.
pub struct App {
    pub emb: Arc<Embedder>,
    pub model: String,
    pub(crate) text: Batcher,
    pub(crate) image: Batcher,
    pub index: Option<Index>,
    pub(crate) max_inputs: usize,
    pub(crate) max_megapixels: f64,
    pub(crate) batching: bool,
    pub(crate) max_batch: usize,
    pub(crate) token: Option<String>,
    pub metrics: Arc<Metrics>,
    pub(crate) classifiers: Mutex<HashMap<ClassifierKey, Arc<Classifier>>>,
}

/// A zero-shot classifier's labels and templates.
type ClassifierKey = (Vec<String>, Vec<String>);

impl App {
    pub fn new(emb: Arc<Embedder>, model: &str, opts: &ServeOptions) -> Result<App, ServeError> {
        let index = match &opts.db {
            None => None,
            Some(db) => Some(Index::open(db, &emb, model)?),
        };
        let metrics = Arc::new(Metrics::default());
        let start = |tower| {
            Batcher::start(
                emb.clone(),
                tower,
                opts.queue,
                opts.max_batch,
                opts.batching,
                metrics.clone(),
            )
        };
        Ok(App {
            text: start("text"),
            image: start("image"),
            emb,
            model: model.to_owned(),
            index,
            max_inputs: opts.max_inputs,
            max_megapixels: opts.max_megapixels,
            batching: opts.batching,
            max_batch: opts.max_batch,
            token: opts.token.clone(),
            metrics,
            classifiers: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn check_count(&self, n: usize, what: &str) -> Result<(), ApiError> {
        if n == 0 {
            return Err(ApiError::invalid(format!("no {what} given")));
        }
        if n > self.max_inputs {
            return Err(ApiError::invalid(format!(
                "{n} {what} in one request; the limit is {} (--max-inputs)",
                self.max_inputs
            )));
        }
        Ok(())
    }

    /// Token rows of `texts`; a data URI or an over-long text (unless `truncate`) is a 422.
    pub(crate) fn tokenize(
        &self,
        texts: &[String],
        truncate: bool,
    ) -> Result<Vec<Vec<u32>>, ApiError> {
        for (i, t) in texts.iter().enumerate() {
            if is_data_uri(t) {
                return Err(ApiError::invalid(format!(
                    "input {} is a data URI: send images in \"images\" (base64) or as a multipart upload; they are never embedded as text",
                    i + 1
                )));
            }
        }
        self.emb.tokenize(texts, truncate).map_err(|e| match e {
            clip_embed::EmbedError::Tokenize { row, source } => ApiError::invalid(format!(
                "input {row}: {}",
                source
                    .to_string()
                    .replace("pass --truncate", "set \"truncate\": true")
            )),
            e => ApiError::invalid(e.to_string()),
        })
    }

    /// Embeddings `[n, D]` of texts through the text queue.
    pub(crate) async fn embed_texts(
        &self,
        texts: &[String],
        truncate: bool,
        unit: bool,
    ) -> Result<Vec<f32>, ApiError> {
        self.check_count(texts.len(), "texts")?;
        let rows = self.tokenize(texts, truncate)?;
        let mut v = self.text.embed(Input::Tokens(rows)).await?;
        if unit {
            normalize(&mut v, self.emb.dim());
        }
        Ok(v)
    }

    /// Embeddings `[n, D]` of encoded images through the image queue. Headers are checked
    /// against the megapixel limit before anything is decoded.
    pub(crate) async fn embed_images(
        &self,
        images: Vec<Bytes>,
        unit: bool,
    ) -> Result<Vec<f32>, ApiError> {
        self.check_count(images.len(), "images")?;
        let emb = self.emb.clone();
        let limit = self.max_megapixels;
        let n = images.len();
        let pixels = tokio::task::spawn_blocking(move || -> Result<Vec<f32>, ApiError> {
            use rayon::prelude::*;
            let parts: Vec<Vec<f32>> = images
                .par_iter()
                .enumerate()
                .map(|(i, b)| {
                    let name = format!("image {}", i + 1);
                    let (w, h) = clip_data::image_dimensions(b, &name)
                        .map_err(|e| ApiError::invalid(e.to_string()))?;
                    let mp = w as f64 * h as f64 / 1e6;
                    if mp > limit {
                        return Err(ApiError::invalid(format!(
                            "{name} is {w}×{h} pixels ({mp:.1} megapixels), over this server's limit of {limit} megapixels; it was not decoded"
                        )));
                    }
                    emb.preprocess
                        .load_bytes(b, &name)
                        .map_err(|e| ApiError::invalid(e.to_string()))
                })
                .collect::<Result<_, _>>()?;
            Ok(parts.concat())
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        let mut v = self.image.embed(Input::Pixels(pixels, n)).await?;
        if unit {
            normalize(&mut v, self.emb.dim());
        }
        Ok(v)
    }

    pub(crate) fn index(&self) -> Result<&Index, ApiError> {
        self.index.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "this server has no index: start it with `clip serve --db INDEX`",
            )
        })
    }
}
