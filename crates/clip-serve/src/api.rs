//! The routes, their request and response shapes (with OpenAPI schemas), and their errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Path, Query, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use clip_embed::{Classifier, Embedder};
use clip_index::Matrix;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::batch::{Batcher, Input, Refused, normalize};
use crate::metrics::Metrics;
use crate::{ServeError, ServeOptions};

const PAGE: &str = include_str!("../assets/index.html");

/// An error answer, in text-embeddings-inference's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: String,
    pub error_type: String,
}

/// An HTTP error with its reason.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::UNPROCESSABLE_ENTITY => "Validation",
            StatusCode::PAYLOAD_TOO_LARGE => "Validation",
            StatusCode::TOO_MANY_REQUESTS => "Overloaded",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::NOT_FOUND => "NotFound",
            _ => "Backend",
        };
        (
            self.status,
            axum::Json(ErrorResponse {
                error: self.message,
                error_type: kind.into(),
            }),
        )
            .into_response()
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::Full { tower, capacity } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the {tower} queue is full ({capacity} requests waiting); retry later"),
            ),
            Refused::Failed(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
}

/// An index: an SQLite file's vectors are held in memory and searched exactly; a PostgreSQL
/// index is searched by its own HNSW index.
pub struct Index {
    pub location: String,
    pub name: String,
    store: Mutex<Box<dyn clip_index::Backend>>,
    images: Option<Matrix>,
    captions: Option<Matrix>,
    by_id: HashMap<i64, usize>,
    counts: (usize, usize),
}

impl Index {
    fn open(db: &str, emb: &Embedder, model: &str) -> Result<Index, ServeError> {
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

    fn db_error(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    /// The `k` nearest images (or captions) of the unit vector `q` (blocking).
    fn nearest(
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
    fn image(&self, id: i64) -> Result<(String, Vec<f32>), ApiError> {
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
async fn with_index<T: Send + 'static>(
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
    text: Batcher,
    image: Batcher,
    pub index: Option<Index>,
    max_inputs: usize,
    max_megapixels: f64,
    batching: bool,
    max_batch: usize,
    token: Option<String>,
    pub metrics: Arc<Metrics>,
    classifiers: Mutex<HashMap<ClassifierKey, Arc<Classifier>>>,
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

    fn check_count(&self, n: usize, what: &str) -> Result<(), ApiError> {
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
    fn tokenize(&self, texts: &[String], truncate: bool) -> Result<Vec<Vec<u32>>, ApiError> {
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
    async fn embed_texts(
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
    async fn embed_images(&self, images: Vec<Bytes>, unit: bool) -> Result<Vec<f32>, ApiError> {
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

    fn index(&self) -> Result<&Index, ApiError> {
        self.index.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "this server has no index: start it with `clip serve --db INDEX`",
            )
        })
    }
}

fn is_data_uri(t: &str) -> bool {
    let t = t.trim_start();
    // `get`: the first five bytes may end inside a character (any text can arrive here)
    t.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:")) && t.contains(";base64,")
}

/// Base64 (or a `data:…;base64,` URI) → bytes; `what` names the field in the error.
fn decode_b64(s: &str, what: &str) -> Result<Bytes, ApiError> {
    let body = match s.split_once(";base64,") {
        Some((head, rest)) if head.trim_start().starts_with("data:") => rest,
        _ => s,
    };
    let clean: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map(Bytes::from)
        .map_err(|e| ApiError::invalid(format!("{what} is not valid base64: {e}")))
}

/// A request body: JSON (whatever the content type says, as clip-retrieval's client sends it
/// without one) or a multipart form.
pub enum Body {
    Json(Bytes),
    Form(Vec<Part>),
}

/// One field of a multipart form.
pub struct Part {
    pub name: String,
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        if multipart {
            let mut mp = Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
            let mut parts = Vec::new();
            while let Some(field) = mp
                .next_field()
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()))?
            {
                let name = field.name().unwrap_or("").to_owned();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
                parts.push(Part { name, bytes });
            }
            Ok(Body::Form(parts))
        } else {
            let b = Bytes::from_request(req, state)
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
            Ok(Body::Json(b))
        }
    }
}

impl Body {
    /// The JSON body as `T` (422 with serde's reason).
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        match self {
            Body::Json(b) => serde_json::from_slice(b)
                .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}"))),
            Body::Form(_) => Err(ApiError::invalid(
                "this route takes a JSON body here, not a multipart form",
            )),
        }
    }
}

impl Part {
    fn text(&self) -> Result<String, ApiError> {
        String::from_utf8(self.bytes.to_vec())
            .map_err(|_| ApiError::invalid(format!("form field '{}' is not UTF-8", self.name)))
    }
}

fn form_field(parts: &[Part], name: &str) -> Result<Option<String>, ApiError> {
    parts
        .iter()
        .find(|p| p.name == name)
        .map(Part::text)
        .transpose()
}

fn form_images(parts: &[Part]) -> Vec<Bytes> {
    parts
        .iter()
        .filter(|p| p.name == "image" || p.name == "images" || p.name == "file")
        .map(|p| p.bytes.clone())
        .collect()
}

fn form_bool(parts: &[Part], name: &str, default: bool) -> Result<bool, ApiError> {
    match form_field(parts, name)?.as_deref() {
        None => Ok(default),
        Some("true" | "1" | "on") => Ok(true),
        Some("false" | "0" | "off") => Ok(false),
        Some(v) => Err(ApiError::invalid(format!(
            "form field '{name}' must be true or false, not {v:?}"
        ))),
    }
}

/// One string or a list of strings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

fn yes() -> bool {
    true
}

/// `POST /embed`: texts (`inputs`) or images (`images`, base64), not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// text(s) to embed
    pub inputs: Option<OneOrMany>,
    /// base64-encoded image files (or data URIs) to embed
    pub images: Option<Vec<String>>,
    /// L2-normalise (default true)
    #[serde(default = "yes")]
    pub normalize: bool,
    /// cut texts over the context length instead of refusing them (default false)
    #[serde(default)]
    pub truncate: bool,
}

#[utoipa::path(post, path = "/embed", request_body = EmbedRequest,
    responses((status = 200, description = "one embedding per input, in order", body = Vec<Vec<f32>>),
              (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse)))]
pub async fn embed(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let d = app.emb.dim();
    let v = match body {
        Body::Form(parts) => {
            let normalize = form_bool(&parts, "normalize", true)?;
            let images = form_images(&parts);
            let texts: Vec<String> = parts
                .iter()
                .filter(|p| p.name == "inputs" || p.name == "text")
                .map(Part::text)
                .collect::<Result<_, _>>()?;
            match (images.is_empty(), texts.is_empty()) {
                (false, true) => app.embed_images(images, normalize).await?,
                (true, false) => {
                    let truncate = form_bool(&parts, "truncate", false)?;
                    app.embed_texts(&texts, truncate, normalize).await?
                }
                _ => {
                    return Err(ApiError::invalid(
                        "send either texts or images in one request",
                    ));
                }
            }
        }
        body => {
            let r: EmbedRequest = body.json()?;
            match (r.inputs, r.images) {
                (Some(t), None) => {
                    app.embed_texts(&t.into_vec(), r.truncate, r.normalize)
                        .await?
                }
                (None, Some(imgs)) => {
                    let bytes = imgs
                        .iter()
                        .enumerate()
                        .map(|(i, s)| decode_b64(s, &format!("images[{i}]")))
                        .collect::<Result<Vec<_>, _>>()?;
                    app.embed_images(bytes, r.normalize).await?
                }
                _ => {
                    return Err(ApiError::invalid(
                        "give exactly one of \"inputs\" (texts) or \"images\" (base64 image files)",
                    ));
                }
            }
        }
    };
    let rows: Vec<&[f32]> = v.chunks(d).collect();
    Ok(axum::Json(rows).into_response())
}

/// `POST /v1/embeddings` (OpenAI's shape; texts only).
#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenAiRequest {
    pub input: OneOrMany,
    pub model: Option<String>,
    /// "float" (default) or "base64" (little-endian f32)
    pub encoding_format: Option<String>,
    /// must equal the model's dimension when given
    pub dimensions: Option<usize>,
}

#[utoipa::path(post, path = "/v1/embeddings", request_body = OpenAiRequest,
    responses((status = 200, description = "OpenAI's embeddings list"), (status = 422, body = ErrorResponse)))]
pub async fn openai(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let r: OpenAiRequest = body.json()?;
    let d = app.emb.dim();
    if let Some(want) = r.dimensions.filter(|&w| w != d) {
        return Err(ApiError::invalid(format!(
            "dimensions {want}: this model's embeddings have {d} dimensions"
        )));
    }
    let b64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::invalid(format!(
                "encoding_format {f:?}: use \"float\" or \"base64\""
            )));
        }
    };
    let texts = r.input.into_vec();
    let tokens: usize = app
        .tokenize(&texts, false)
        .map(|rows| {
            rows.iter()
                .map(|r| r.iter().filter(|&&t| t != 0).count())
                .sum()
        })
        .unwrap_or(0);
    let v = app.embed_texts(&texts, false, true).await?;
    let data: Vec<serde_json::Value> = v
        .chunks(d)
        .enumerate()
        .map(|(i, row)| {
            let embedding = if b64 {
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(row)
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "object": "list",
        "data": data,
        "model": r.model.unwrap_or_else(|| app.model.clone()),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

/// `POST /rerank`: candidates (texts, or images as base64) ordered by their cosine with the query.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RerankRequest {
    pub query: String,
    pub texts: Option<Vec<String>>,
    pub images: Option<Vec<String>>,
    /// include each text in the answer
    #[serde(default)]
    pub return_text: bool,
    #[serde(default)]
    pub truncate: bool,
}

/// One ranked candidate.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rank {
    /// position in the request
    pub index: usize,
    /// cosine similarity with the query
    pub score: f32,
    /// softmax over the candidates of 100 · cosine (clip-as-service's `/rank`)
    pub probability: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[utoipa::path(post, path = "/rerank", request_body = RerankRequest,
    responses((status = 200, body = Vec<Rank>), (status = 422, body = ErrorResponse)))]
pub async fn rerank(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let (query, texts, images, return_text, truncate) = match body {
        Body::Form(parts) => {
            let q = form_field(&parts, "query")?
                .ok_or_else(|| ApiError::invalid("form field 'query' is missing"))?;
            let texts: Vec<String> = parts
                .iter()
                .filter(|p| p.name == "texts" || p.name == "text")
                .map(Part::text)
                .collect::<Result<_, _>>()?;
            let images = form_images(&parts);
            (
                q,
                (!texts.is_empty()).then_some(texts),
                (!images.is_empty()).then_some(images),
                false,
                false,
            )
        }
        body => {
            let r: RerankRequest = body.json()?;
            let images = r
                .images
                .map(|v| {
                    v.iter()
                        .enumerate()
                        .map(|(i, s)| decode_b64(s, &format!("images[{i}]")))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            (r.query, r.texts, images, r.return_text, r.truncate)
        }
    };
    let q = app.embed_texts(&[query], truncate, true).await?;
    let (cands, texts) = match (texts, images) {
        (Some(t), None) => (app.embed_texts(&t, truncate, true).await?, Some(t)),
        (None, Some(i)) => (app.embed_images(i, true).await?, None),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of \"texts\" or \"images\" as the candidates",
            ));
        }
    };
    let ranked: Vec<Rank> = clip_index::rerank::rank(&q, &cands, app.emb.dim())
        .into_iter()
        .map(|(index, score, probability)| Rank {
            index,
            score,
            probability,
            text: if return_text {
                texts.as_ref().map(|t| t[index].clone())
            } else {
                None
            },
        })
        .collect();
    Ok(axum::Json(ranked).into_response())
}

/// `POST /classify`: zero-shot class probabilities of one image.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// base64 image file
    pub image: String,
    pub labels: Vec<String>,
    /// a template set's name (e.g. "imagenet") or templates with `{}`; default "a photo of a {}."
    pub templates: Option<OneOrMany>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Prediction {
    pub label: String,
    pub score: f32,
}

#[utoipa::path(post, path = "/classify", request_body = ClassifyRequest,
    responses((status = 200, body = Vec<Prediction>), (status = 422, body = ErrorResponse)))]
pub async fn classify(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let (image, labels, templates) = match body {
        Body::Form(parts) => {
            let image = form_images(&parts)
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::invalid("form field 'image' is missing"))?;
            let labels: Vec<String> = parts
                .iter()
                .filter(|p| p.name == "labels" || p.name == "label")
                .map(Part::text)
                .collect::<Result<Vec<_>, _>>()?
                .iter()
                .flat_map(|l| l.split(',').map(|s| s.trim().to_owned()))
                .filter(|s| !s.is_empty())
                .collect();
            let t = form_field(&parts, "templates")?.map(OneOrMany::One);
            (image, labels, t)
        }
        body => {
            let r: ClassifyRequest = body.json()?;
            (decode_b64(&r.image, "image")?, r.labels, r.templates)
        }
    };
    app.check_count(labels.len(), "labels")?;
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = labels.iter().find(|l| !seen.insert(l.as_str())) {
        return Err(ApiError::invalid(format!("label {d:?} is given twice")));
    }
    let templates = match templates {
        None => vec!["a photo of a {}.".to_owned()],
        Some(OneOrMany::One(name)) if !name.contains("{}") => {
            clip_embed::templates::templates(&name).map_err(|e| ApiError::invalid(e.to_string()))?
        }
        Some(t) => t.into_vec(),
    };
    let key = (labels.clone(), templates.clone());
    let cached = app
        .classifiers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let classifier = match cached {
        Some(c) => c,
        None => {
            let emb = app.emb.clone();
            let (l, t) = key.clone();
            let c = tokio::task::spawn_blocking(move || emb.classifier(&l, &t))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            let c = Arc::new(c);
            let mut cache = app.classifiers.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= 64 {
                cache.clear();
            }
            cache.insert(key, c.clone());
            c
        }
    };
    let f = app.embed_images(vec![image], true).await?;
    let p = classifier.probabilities(&f, 1, app.emb.clip.logit_scale(), app.emb.clip.logit_bias());
    let mut out: Vec<Prediction> = labels
        .iter()
        .zip(&p)
        .map(|(l, &score)| Prediction {
            label: l.clone(),
            score,
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(axum::Json(out).into_response())
}

/// `POST /search`: the indexed images nearest a text, an image, or an indexed image.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub text: Option<String>,
    /// base64 image file
    pub image: Option<String>,
    /// "more like this": the id of an indexed image
    pub id: Option<i64>,
    /// how many results (default 10)
    pub k: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    pub id: i64,
    pub path: String,
    pub score: f32,
    /// where the thumbnail is served
    pub thumbnail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub results: Vec<SearchHit>,
}

const MAX_K: usize = 1000;

#[utoipa::path(post, path = "/search", request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = 422, body = ErrorResponse)))]
pub async fn search(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    app.index()?;
    let (q, k) = match body {
        Body::Form(parts) => {
            let k = form_field(&parts, "k")?
                .map(|k| k.trim().parse::<usize>())
                .transpose()
                .map_err(|_| ApiError::invalid("form field 'k' is not a number"))?;
            let images = form_images(&parts);
            let q = if let Some(img) = images.into_iter().next() {
                app.embed_images(vec![img], true).await?
            } else if let Some(t) = form_field(&parts, "text")? {
                app.embed_texts(&[t], true, true).await?
            } else {
                return Err(ApiError::invalid("send an 'image' file or a 'text' field"));
            };
            (q, k)
        }
        body => {
            let r: SearchRequest = body.json()?;
            let q = match (r.text, r.image, r.id) {
                (Some(t), None, None) => app.embed_texts(&[t], true, true).await?,
                (None, Some(i), None) => {
                    app.embed_images(vec![decode_b64(&i, "image")?], true)
                        .await?
                }
                (None, None, Some(id)) => with_index(&app, move |i| i.image(id)).await?.1,
                _ => {
                    return Err(ApiError::invalid(
                        "give exactly one of \"text\", \"image\" (base64) or \"id\"",
                    ));
                }
            };
            (q, r.k)
        }
    };
    let k = k.unwrap_or(10);
    if k == 0 || k > MAX_K {
        return Err(ApiError::invalid(format!("k {k}: give 1 to {MAX_K}")));
    }
    let results = with_index(&app, move |i| i.nearest(&q, k, false))
        .await?
        .into_iter()
        .map(|h| SearchHit {
            thumbnail: format!("/thumb/{}", h.id),
            id: h.id,
            path: h.path,
            score: h.score,
        })
        .collect();
    Ok(axum::Json(SearchResponse { results }).into_response())
}

/// clip-retrieval's `POST /knn-service` request (its client sends every field; unknown ones are
/// ignored, as its back end does).
#[derive(Debug, Deserialize, ToSchema)]
pub struct KnnRequest {
    pub text: Option<String>,
    pub image: Option<String>,
    pub image_url: Option<String>,
    pub embedding_input: Option<Vec<f32>>,
    /// "image" (search the images) or "text" (search the captions)
    pub modality: Option<String>,
    pub num_images: Option<usize>,
    pub num_result_ids: Option<usize>,
    pub indice_name: Option<String>,
    pub deduplicate: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KnnResult {
    pub id: i64,
    pub similarity: f32,
    pub url: String,
    pub image_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

#[utoipa::path(post, path = "/knn-service", request_body = KnnRequest,
    responses((status = 200, body = Vec<KnnResult>), (status = 422, body = ErrorResponse)))]
pub async fn knn(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let index = app.index()?;
    let r: KnnRequest = body.json()?;
    if let Some(name) = r.indice_name.as_deref().filter(|n| *n != index.name) {
        return Err(ApiError::invalid(format!(
            "indice_name {name:?}: this server holds the index {:?} (see /indices-list)",
            index.name
        )));
    }
    let d = app.emb.dim();
    let q = match (r.text, r.image, r.image_url, r.embedding_input) {
        (Some(t), None, None, None) => app.embed_texts(&[t], true, true).await?,
        (None, Some(i), None, None) => {
            app.embed_images(vec![decode_b64(&i, "image")?], true)
                .await?
        }
        (None, None, Some(_), None) => {
            return Err(ApiError::invalid(
                "image_url: this server does not fetch URLs; send the image as base64 in \"image\"",
            ));
        }
        (None, None, None, Some(mut v)) => {
            if v.len() != d {
                return Err(ApiError::invalid(format!(
                    "embedding_input has {} values; this model's embeddings have {d}",
                    v.len()
                )));
            }
            normalize(&mut v, d);
            v
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of text, image, image_url or embedding_input",
            ));
        }
    };
    let n = r.num_images.unwrap_or(40).clamp(1, MAX_K);
    let base = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or(String::new(), |h| format!("http://{h}"));
    let text_side = r.modality.as_deref() == Some("text");
    let candidates = r.num_result_ids.unwrap_or(n).max(n).min(MAX_K * 10);
    let dedup = r.deduplicate.unwrap_or(true);
    let out = with_index(&app, move |index| {
        let hits = index.nearest(&q, candidates, text_side)?;
        let mut out: Vec<KnnResult> = Vec::new();
        let mut kept: Vec<Vec<f32>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for h in hits {
            // captions: one result per image
            if !seen.insert(h.id) {
                continue;
            }
            let Ok((path, v)) = index.image(h.id) else {
                continue; // removed since the search
            };
            if dedup {
                let dup = kept.iter().any(|k| {
                    k.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>()
                        >= clip_index::dedup::DEFAULT_THRESHOLD
                });
                if dup {
                    continue;
                }
                kept.push(v);
            }
            out.push(KnnResult {
                id: h.id,
                similarity: h.score,
                url: format!("{base}/image/{}", h.id),
                image_path: path,
                caption: text_side.then(|| h.path.clone()),
            });
            if out.len() == n {
                break;
            }
        }
        Ok(out)
    })
    .await?;
    Ok(axum::Json(out).into_response())
}

pub async fn indices_list(State(app): State<Arc<App>>) -> Response {
    let names: Vec<&str> = app.index.iter().map(|i| i.name.as_str()).collect();
    axum::Json(names).into_response()
}

/// The indexed file of `id`, if it is a file (not a shard member).
async fn indexed_file(app: &Arc<App>, id: i64) -> Result<PathBuf, ApiError> {
    let (path, _) = with_index(app, move |i| i.image(id)).await?;
    let p = PathBuf::from(path);
    if !p.is_file() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("image {id} is not a file on this machine (a shard member, or it was moved)"),
        ));
    }
    Ok(p)
}

#[derive(Debug, Deserialize)]
pub struct ThumbQuery {
    size: Option<u32>,
}

/// `GET /thumb/{id}`: a JPEG at most `size` (default 256, ≤ 1024) pixels on its longer side.
pub async fn thumb(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<ThumbQuery>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no image with id {id:?}")))?;
    let p = indexed_file(&app, id).await?;
    let size = q.size.unwrap_or(256).clamp(16, 1024);
    let jpeg = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let img =
            clip_data::load_rgb(&p, clip_data::Alpha::FlattenOnWhite).map_err(|e| e.to_string())?;
        let rgb = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
            .ok_or("bad image buffer")?;
        let t = image::DynamicImage::ImageRgb8(rgb).thumbnail(size, size);
        let mut out = std::io::Cursor::new(Vec::new());
        t.write_to(&mut out, image::ImageFormat::Jpeg)
            .map_err(|e| e.to_string())?;
        Ok(out.into_inner())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"))],
        jpeg,
    )
        .into_response())
}

/// `GET /image/{id}`: the indexed file's bytes.
pub async fn image_file(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no image with id {id:?}")))?;
    let p = indexed_file(&app, id).await?;
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mime = match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        _ => "application/octet-stream",
    };
    let bytes = tokio::fs::read(&p)
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(mime))],
        bytes,
    )
        .into_response())
}

#[utoipa::path(get, path = "/info", responses((status = 200, description = "the model, limits and index")))]
pub async fn info(State(app): State<Arc<App>>) -> Response {
    let c = &app.emb.clip.config;
    axum::Json(serde_json::json!({
        "model_id": app.model,
        "model_fingerprint": app.emb.fingerprint,
        "model_type": "clip",
        "dimensions": app.emb.dim(),
        "image_size": c.image_size(),
        "max_input_length": c.text_cfg.context_length,
        "max_client_batch_size": app.max_inputs,
        "max_batch_size": app.max_batch,
        "max_image_megapixels": app.max_megapixels,
        "dynamic_batching": app.batching,
        "index": app.index.as_ref().map(|i| serde_json::json!({
            "name": i.name, "location": i.location,
            "images": i.counts.0, "captions": i.counts.1,
            "search": if i.images.is_some() { "exact" } else { "hnsw (database)" }})),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/health", responses((status = 200, description = "the server answers")))]
pub async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    use std::sync::atomic::Ordering;
    let body = app.metrics.render(&[
        ("text", app.text.waiting.load(Ordering::Relaxed)),
        ("image", app.image.waiting.load(Ordering::Relaxed)),
    ]);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route (see /docs)")
}

/// Counts every request, and checks the bearer token on the API when one is set (the page,
/// `/health` and the docs stay open; thumbnails take it as `?token=` too, for `<img>` tags).
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_owned(), |m| m.as_str().to_owned());
    let open = matches!(
        route.as_str(),
        "/" | "/rerank-page" | "/health" | "/docs" | "/docs/{*rest}" | "/openapi.json"
    );
    if let (Some(token), false) = (&app.token, open) {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query_token = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
        if bearer != Some(token.as_str()) && query_token != Some(token.as_str()) {
            let r = ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
                .into_response();
            app.metrics
                .request(&route, r.status().as_u16(), t0.elapsed().as_secs_f64());
            return r;
        }
    }
    let r = next.run(req).await;
    app.metrics
        .request(&route, r.status().as_u16(), t0.elapsed().as_secs_f64());
    r
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clip-rs",
        description = "CLIP embeddings, reranking, zero-shot classification and image search"
    ),
    paths(embed, openai, rerank, classify, search, knn, info, health),
    components(schemas(
        EmbedRequest,
        OpenAiRequest,
        RerankRequest,
        Rank,
        ClassifyRequest,
        Prediction,
        SearchRequest,
        SearchHit,
        SearchResponse,
        KnnRequest,
        KnnResult,
        ErrorResponse,
        OneOrMany
    ))
)]
pub struct ApiDoc;

/// Every route, with the limits.
pub fn router(app: Arc<App>, opts: &ServeOptions) -> Router {
    let api = Router::new()
        .route("/", get(page))
        .route("/rerank-page", get(page))
        .route("/embed", post(embed))
        .route("/v1/embeddings", post(openai))
        .route("/rerank", post(rerank))
        .route("/classify", post(classify))
        .route("/search", post(search))
        .route("/knn-service", post(knn))
        .route("/indices-list", get(indices_list))
        .route("/thumb/{id}", get(thumb))
        .route("/image/{id}", get(image_file))
        .route("/info", get(info))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .fallback(not_found)
        .with_state(app.clone());
    api.layer(axum::middleware::from_fn_with_state(app, guard))
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            opts.timeout,
        ))
}
