//! The routes, their request and response shapes (with OpenAPI schemas), and their errors.

mod body;
mod embed;
mod error;
mod search;
mod state;

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

const PAGE: &str = include_str!("../../assets/index.html");

pub use body::*;
pub use embed::*;
pub use error::*;
pub use search::*;
pub use state::*;

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
