//! `clip serve`: one model behind an HTTP API on axum, with the web page.
//!
//! - text-embeddings-inference's routes where they fit: `POST /embed`, `POST /rerank`,
//!   `GET /info`, `GET /health`, `GET /metrics`; OpenAI's `POST /v1/embeddings`;
//! - images always with an explicit modality (`"images"` in JSON as base64, or a multipart
//!   upload); a data URI sent as text is refused, never embedded as text;
//! - `POST /classify` (zero-shot: labels × templates), `POST /search` over an index made by
//!   `clip index` (text, image, upload, or "more like image ID"), clip-retrieval's
//!   `POST /knn-service` and `GET /indices-list` so its clients work unchanged, thumbnails by id
//!   (`GET /thumb/{id}`, never by a client-supplied path);
//! - an OpenAPI document (`/openapi.json`) and Swagger UI (`/docs`, vendored);
//! - dynamic batching per tower ([`batch`]) with a bounded queue (429 when full), and limits on
//!   body size (413), inputs per request (422), image megapixels (checked from the header before
//!   decoding), and request time (408); an optional bearer token; graceful shutdown on SIGTERM.

pub mod api;
pub mod batch;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clip_embed::Embedder;

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// an index made by `clip index` with the same model, a file or a `postgres://` URL (enables
    /// /search, /knn-service, the page)
    pub db: Option<String>,
    /// request bodies above this many bytes are refused (413)
    pub max_body_bytes: usize,
    /// texts or images per request (422 above)
    pub max_inputs: usize,
    /// images whose header claims more pixels are refused before decoding (422)
    pub max_megapixels: f64,
    /// inputs per forward pass
    pub max_batch: usize,
    /// requests waiting per tower before 429
    pub queue: usize,
    /// run each request alone (for comparison with dynamic batching)
    pub batching: bool,
    pub timeout: Duration,
    /// required as `Authorization: Bearer TOKEN` on the API when set
    pub token: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db: None,
            max_body_bytes: 16 << 20,
            max_inputs: 64,
            max_megapixels: 40.0,
            max_batch: 32,
            queue: 256,
            batching: true,
            timeout: Duration::from_secs(30),
            token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Search(#[from] clip_index::SearchError),
    #[error(transparent)]
    Store(#[from] clip_index::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

/// Serve `emb` (loaded from `model`) until SIGTERM or Ctrl-C; in-flight requests finish first.
/// `ready` is called with the bound address once the server accepts connections.
pub fn serve(
    emb: Embedder,
    model: &str,
    opts: ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    // the app outlives the runtime: a PostgreSQL client holds a runtime of its own, which may
    // not be dropped inside an async context
    let app = Arc::new(api::App::new(Arc::new(emb), model, &opts)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Runtime(e.to_string()))?;
    let served = app.clone();
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: opts.addr,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServeError::Runtime(e.to_string()))?;
        // the handlers are installed before anyone learns the address: a SIGTERM sent as soon as
        // the server says it is ready must stop it gracefully, not kill it (the default action)
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        ready(addr);
        axum::serve(listener, api::router(served, &opts))
            .with_graceful_shutdown(shutdown_signal(term, int))
            .await
            .map_err(|e| ServeError::Runtime(e.to_string()))
    });
    drop(rt);
    drop(app);
    result
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C) of the handlers installed at start.
async fn shutdown_signal(
    mut term: Option<tokio::signal::unix::Signal>,
    mut int: Option<tokio::signal::unix::Signal>,
) {
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    tokio::select! {
        _ = recv(&mut term) => {},
        _ = recv(&mut int) => {},
    }
    eprintln!("shutting down: finishing the requests in flight");
}
