//! `provenixd`: the provenix transparency log (DESIGN.md §5, §6, §11).
//!
//! - [`store`]: the storage contract over SQLite and PostgreSQL.
//! - [`log`]: sequencer, integrator and the in-memory tree.
//! - [`api`]: the HTTP API (a pure `router(state)`), [`error`]: what clients see of errors.
//! - [`explorer`]: the web explorer (pages and JSON views over a derived index).
//! - [`registrar`]: TPM enrollment (`/v1/attest/*`): the log as registrar.
//! - [`serve`]: runs the router on an already-bound listener until a shutdown signal.

pub mod api;
pub mod config;
pub mod error;
pub mod explorer;
mod json;
pub mod log;
pub mod metrics;
pub mod registrar;
pub mod store;
pub mod witness;

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use provenix_core::checkpoint::LogSigner;
use tokio::net::TcpListener;

use crate::store::Store;

/// Metadata key holding the log's verifier key (binds the database to one log key).
pub const META_VERIFIER_KEY: &str = "verifier_key";

/// An opened data directory: the database and the log key that belongs to it.
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    pub signer: LogSigner,
    /// Whether this call created the log (new key and database).
    pub created: bool,
    pub key_file: PathBuf,
}

/// Reader connections when `read-pool-size` is not set: 4 on SQLite; on PostgreSQL as many as
/// the machine has cores, at most 4. Each PostgreSQL reader is a backend process competing for
/// the cores with the log itself; lookups beyond the readers are coalesced into their queries,
/// which is cheaper than more queries at once. Measured with `provenix-bench ingest` (1,000,000
/// entries, 2 cores, 16 clients): 11,894 and 13,962 lookups/s with 4 readers, 15,771 and 18,277
/// with 2 (`shared_buffers` 128 MB and 2 GB).
pub fn default_read_pool(url: &str) -> u32 {
    if Store::is_postgres_url(url) {
        let cores = std::thread::available_parallelism().map_or(4, std::num::NonZero::get);
        u32::try_from(cores).unwrap_or(4).clamp(1, 4)
    } else {
        4
    }
}

/// Opens the log in `data` (creating the directory, key and database on first use) and checks
/// that the key matches the database. `read_pool`: reader connections (`None`:
/// [`default_read_pool`]).
pub async fn open_data(
    data: &Path,
    database: Option<&str>,
    origin: &str,
    read_pool: Option<u32>,
) -> anyhow::Result<Opened> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create data directory {}", data.display()))?;
    let url = database.map_or_else(|| Store::sqlite_url_in(data), str::to_owned);
    let read_pool = read_pool.unwrap_or_else(|| default_read_pool(&url));
    let store = Store::open(&url, read_pool)
        .await
        .with_context(|| format!("cannot open the database at {}", redact_url(&url)))?;
    let key_file = data.join("log.key");
    let stored = store.meta(META_VERIFIER_KEY).await?;
    let (signer, created) = if key_file.exists() {
        let text = std::fs::read_to_string(&key_file)
            .with_context(|| format!("cannot read {}", key_file.display()))?;
        warn_if_readable(&key_file);
        let signer = LogSigner::from_secret(&text)
            .with_context(|| format!("{} is not a log secret key", key_file.display()))?;
        (signer, false)
    } else {
        if let Some(v) = &stored {
            anyhow::bail!(
                "the database belongs to log {v} but {} is missing; restore that key file",
                key_file.display()
            );
        }
        let signer = LogSigner::generate(origin).context("cannot create a log key")?;
        write_secret(&key_file, signer.secret_string())?;
        (signer, true)
    };
    let bound = store
        .init_meta(META_VERIFIER_KEY, signer.verifier_key())
        .await?;
    if bound != signer.verifier_key() {
        anyhow::bail!(
            "{} holds the key of log {} but the database belongs to log {bound}; refusing to start",
            key_file.display(),
            signer.verifier_key()
        );
    }
    Ok(Opened {
        store,
        signer,
        created,
        key_file,
    })
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "log key is readable by others; chmod 600 it");
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.split_once('@') {
            if let Some((user, _)) = creds.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_owned()
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes in-flight requests.
/// Connections are bounded and slow clients cut off (see [`provenix_http`]).
pub async fn serve(
    listener: TcpListener,
    state: api::AppState,
    request_timeout: Duration,
    limits: provenix_http::ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = api::router(state)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                time_limit(request_timeout, req, next)
            },
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let stats = std::sync::Arc::new(provenix_http::ServeStats::default());
    provenix_http::serve(listener, app, limits, stats, shutdown).await
}

/// The per-request time limit: a request (reading its body included) that takes longer gets
/// 408 `request_timeout` in the API's error format.
async fn time_limit(
    limit: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => error::AppError::Timeout.into_response(),
    }
}
