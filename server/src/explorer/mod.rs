//! The log explorer (issue 9): server-rendered pages and JSON views of the log for people and
//! scripts, over a derived index kept beside the log.
//!
//! - [`index`]: the indexer task, which follows the published checkpoint and writes claim
//!   rows, per-builder counts and disagreements (tables of migration `0002_explorer`). It never
//!   touches the sequencer; the pages read only the derived tables, the in-memory tree (proofs)
//!   and single leaves.
//! - [`view`]: the data of each view (the JSON bodies), [`page`]: HTML and handlers.
//! - `db`: the SQL, one text for SQLite and PostgreSQL.
//!
//! Pages: `/`, `/search?q=`, `/builder/{name}`, `/disagreements`, `/entry/{index}`;
//! JSON: `/v1/explorer/{home, search, builders/{name}, disagreements, entries/{index}}`.
//! See `docs/explorer.md`.

pub(crate) mod db;
pub mod index;
pub mod page;
pub mod view;

use axum::routing::get;
use axum::Router;

pub use index::{catch_up, indexed, Indexer};

use crate::api::AppState;

/// The explorer's routes, merged into [`crate::api::router`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page::get_home))
        .route("/search", get(page::get_search))
        .route("/builder/{name}", get(page::get_builder))
        .route("/disagreements", get(page::get_disagreements))
        .route("/entry/{index}", get(page::get_entry))
        .route("/explorer.css", get(page::get_css))
        .route("/v1/explorer/home", get(page::get_home_json))
        .route("/v1/explorer/search", get(page::get_search_json))
        .route("/v1/explorer/builders/{name}", get(page::get_builder_json))
        .route(
            "/v1/explorer/disagreements",
            get(page::get_disagreements_json),
        )
        .route("/v1/explorer/entries/{index}", get(page::get_entry_json))
}
