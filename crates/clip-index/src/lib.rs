//! Semantic search over image collections, on the shared embedding pipeline (`clip_embed`):
//! the incremental index file ([`store`], [`index`]), exact search with query algebra
//! ([`search`]), near-duplicate groups ([`dedup`]) and reranking ([`rerank`]).

pub mod dedup;
pub mod index;
pub mod rerank;
pub mod search;
pub mod store;

pub use index::{IndexError, IndexOptions, IndexReport, index};
pub use search::{Hit, Matrix, Query, SearchError, Searcher, default_db};
pub use store::{Dtype, ModelId, Store, StoreError};
