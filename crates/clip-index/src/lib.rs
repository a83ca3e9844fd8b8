//! Semantic search over image collections, on the shared embedding pipeline (`clip_embed`):
//! the incremental index ([`index`]) in an SQLite file ([`store`]) or PostgreSQL with pgvector
//! ([`pg`]) behind one interface ([`backend`]), search with query algebra ([`search`]),
//! near-duplicate groups ([`dedup`]), reranking ([`rerank`]) and the approximate index for large
//! collections ([`ann`]).

pub mod ann;
pub mod backend;
pub mod dedup;
pub mod index;
pub mod pg;
pub mod rerank;
pub mod search;
pub mod store;

pub use backend::{Backend, create_or_open, is_postgres, open};
pub use index::{IndexError, IndexOptions, IndexReport, index};
pub use search::{Hit, Matrix, Query, SearchError, Searcher, default_db, nearest};
pub use store::{Dtype, ModelId, SqliteStore, StoreError};
