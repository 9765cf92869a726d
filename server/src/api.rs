//! The HTTP API of DESIGN.md §6: C2SP tiles, submission, lookup, proofs, metrics.
//!
//! Handlers take raw bodies and parameters and parse them here, so every rejection is one of
//! ours (stable JSON error codes) rather than a framework default. See `docs/api.md`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use provenix_core::api::{
    Accepted, BatchLookupRequest, BuilderInfo, BuildersResponse, ConsistencyResponse, ErrorBody,
    SubmitRequest, SubmitResponse, SubmitResult, MAX_LOOKUP_BATCH, MAX_SUBMIT_BATCH,
};
use provenix_core::entry::{Entry, EntryError, LookupKey};
use provenix_core::merkle::ProofError;
use provenix_core::tile::{TileKind, TilePath};
use serde_json::value::RawValue;

use crate::error::AppError;
use crate::json::Out;
use crate::log::{Log, Validated};
use crate::metrics::{Metrics, RequestLabel};

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted (bytes); larger gets 413 `too_large`.
    pub max_body_bytes: usize,
    /// How long `?wait=integrated` waits for a covering checkpoint.
    pub wait_integrated: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            wait_integrated: Duration::from_secs(10),
        }
    }
}

/// Shared handler state.
#[derive(Clone, Debug)]
pub struct AppState {
    pub log: Log,
    pub limits: Arc<Limits>,
    /// Whether the web explorer's pages and JSON views are served.
    pub explorer: bool,
}

/// The public router. Pure: tests call it with `tower::ServiceExt::oneshot`.
pub fn router(state: AppState) -> Router {
    let metrics = state.log.metrics().clone();
    Router::new()
        .route("/checkpoint", get(get_checkpoint))
        .route("/tile/{*rest}", get(get_tile))
        .route("/v1/entries", post(post_entries))
        .route("/v1/entries/{index}", get(get_entry))
        .route("/v1/lookup/{key}", get(get_lookup))
        .route("/v1/lookup", post(post_lookup))
        .route("/v1/proof/consistency", get(get_consistency))
        .route("/v1/builders", get(get_builders))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_healthz))
        .merge(if state.explorer {
            crate::explorer::routes()
        } else {
            Router::new()
        })
        .merge(crate::registrar::router(&state))
        .route_layer(middleware::from_fn_with_state(metrics.clone(), track))
        .fallback(fallback)
        .with_state(state)
}

async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    metrics
        .requests
        .get_or_create(&RequestLabel {
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn fallback() -> AppError {
    AppError::not_found("not_found", "no such endpoint")
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, AppError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let msg = e.to_string();
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || msg.contains("length limit")
        {
            AppError::TooLarge(format!("request body is over {limit} bytes"))
        } else {
            AppError::bad(
                "malformed",
                format!("could not read the request body: {msg}"),
            )
        }
    })
}

/// Parses a request body that must be the JSON object `what` describes. serde would also take
/// a struct written as an array of its fields (`[[envelope]]` for `{"entries":[envelope]}`);
/// the API's bodies are objects, so anything else is `malformed`. Nesting beyond serde_json's
/// 128 levels is `malformed` too (values in ignored fields and raw envelopes are skipped
/// without recursion).
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, AppError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AppError::bad(
            "malformed",
            format!("body must be a JSON object ({what})"),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| AppError::bad("malformed", format!("body must be {what}: {e}")))
}

fn proof_error(e: ProofError) -> AppError {
    match e {
        ProofError::SizeOutOfRange { .. }
        | ProofError::IndexOutOfRange { .. }
        | ProofError::BadRange { .. } => AppError::bad("bad_range", e.to_string()),
        other => AppError::Internal(other.to_string()),
    }
}

async fn get_checkpoint(State(st): State<AppState>) -> Response {
    let cp = st.log.checkpoint();
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        cp.note().to_owned(),
    )
        .into_response()
}

async fn get_tile(
    State(st): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response, AppError> {
    let t = TilePath::parse(&rest).map_err(|_| {
        AppError::bad(
            "bad_tile_path",
            format!("tile/{rest} is not a C2SP tile path"),
        )
    })?;
    let body: bytes::Bytes = match t.kind {
        TileKind::Hashes { .. } => st.log.hash_tile(&t).map(Into::into),
        TileKind::Entries => st.log.entry_bundle(&t).await?,
    }
    .ok_or_else(|| {
        AppError::not_found(
            "tile_not_found",
            format!("{t} is not covered by the current checkpoint"),
        )
    })?;
    let cache = if t.is_full() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response())
}

fn validate(log: &Log, raw: &RawValue) -> Result<Validated, EntryError> {
    let entry = Entry::parse(raw.get().as_bytes())?;
    let key = log
        .builder_key(entry.keyid())
        .ok_or_else(|| EntryError::UnknownBuilder(entry.keyid().to_owned()))?;
    entry.verify(&key)?;
    let keys = entry.keys().iter().map(ToString::to_string).collect();
    let leaf_hash = entry.leaf_hash();
    Ok(Validated {
        leaf: entry.into_leaf_bytes(),
        leaf_hash,
        keys,
    })
}

fn wait_param(query: Option<&str>) -> Result<bool, AppError> {
    let mut wait = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("wait", "integrated")) => wait = true,
            Some(("wait", v)) => {
                return Err(AppError::bad(
                    "malformed",
                    format!("wait={v}: the only value is `integrated`"),
                ));
            }
            _ => {}
        }
    }
    Ok(wait)
}

async fn post_entries(
    State(st): State<AppState>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<SubmitResponse>, AppError> {
    let wait = wait_param(query.as_deref())?;
    let bytes = read_body(body, st.limits.max_body_bytes).await?;
    let req: SubmitRequest = json_object(&bytes, "{\"entries\":[envelope, …]}")?;
    if req.entries.is_empty() {
        return Err(AppError::bad("malformed", "entries is empty"));
    }
    if req.entries.len() > MAX_SUBMIT_BATCH {
        return Err(AppError::TooLarge(format!(
            "{} entries in one request; the limit is {MAX_SUBMIT_BATCH}",
            req.entries.len()
        )));
    }
    let log = st.log.clone();
    let checked: Vec<Result<Validated, EntryError>> = tokio::task::spawn_blocking(move || {
        req.entries.iter().map(|raw| validate(&log, raw)).collect()
    })
    .await
    .map_err(|e| AppError::Internal(format!("validation task: {e}")))?;

    let accepted: Vec<Validated> = checked
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let assigned = st.log.submit(accepted).await?;
    let metrics = st.log.metrics();
    let mut assigned = assigned.into_iter();
    let mut results = Vec::with_capacity(checked.len());
    for r in &checked {
        match r {
            Ok(_) => {
                let Some(a) = assigned.next() else {
                    return Err(AppError::Internal(
                        "sequencer returned too few results".into(),
                    ));
                };
                metrics.entry(if a.duplicate { "duplicate" } else { "accepted" });
                results.push(SubmitResult::Accepted(Accepted {
                    index: a.index,
                    leaf_hash: a.leaf_hash,
                    duplicate: a.duplicate,
                    inclusion_proof: None,
                }));
            }
            Err(e) => {
                metrics.entry(e.code());
                results.push(SubmitResult::Rejected {
                    error: ErrorBody {
                        code: e.code().to_owned(),
                        message: e.to_string(),
                    },
                });
            }
        }
    }
    let mut checkpoint = None;
    let max_index = results
        .iter()
        .filter_map(|r| match r {
            SubmitResult::Accepted(a) => Some(a.index),
            SubmitResult::Rejected { .. } => None,
        })
        .max();
    if let (true, Some(max)) = (wait, max_index) {
        if let Some(cp) = st.log.wait_integrated(max, st.limits.wait_integrated).await {
            for r in &mut results {
                if let SubmitResult::Accepted(a) = r {
                    a.inclusion_proof = Some(
                        st.log
                            .inclusion_proof(a.index, cp.size())
                            .map_err(proof_error)?,
                    );
                }
            }
            checkpoint = Some(cp.note().to_owned());
        }
    }
    Ok(Json(SubmitResponse {
        checkpoint,
        results,
    }))
}

async fn get_entry(
    State(st): State<AppState>,
    Path(index): Path<String>,
) -> Result<Response, AppError> {
    let index: u64 = index
        .parse()
        .map_err(|_| AppError::bad("bad_index", format!("{index:?} is not a leaf index")))?;
    let cp = st.log.checkpoint();
    if index >= cp.size() {
        return Err(AppError::not_found(
            "index_out_of_range",
            format!(
                "index {index} is not below the checkpoint size {}",
                cp.size()
            ),
        ));
    }
    let leaf = st
        .log
        .leaf(index)
        .await?
        .ok_or_else(|| AppError::Internal(format!("leaf {index} missing from storage")))?;
    let (leaf_hash, proof) = st.log.proved(index, cp.size()).map_err(proof_error)?;
    let mut out = Out::with_capacity(leaf.len() + cp.note_json.len() + 1024);
    out.raw(b"{\"index\":")
        .num(index)
        .raw(b",\"leafHash\":")
        .hash(&leaf_hash)
        .raw(b",\"envelope\":")
        .raw(&leaf)
        .raw(b",\"checkpoint\":")
        .raw(cp.note_json.as_bytes())
        .raw(b",\"inclusionProof\":")
        .hashes(&proof)
        .raw(b"}");
    Ok(out.response())
}

fn parse_key(s: &str) -> Result<String, AppError> {
    s.parse::<LookupKey>()
        .map(|k| k.to_string())
        .map_err(|e| AppError::bad("bad_key", format!("{s:?}: {e}")))
}

/// Looks up `keys` against the published checkpoint and writes, for each key in order, its
/// entries with proofs via `per_key(out, key, entries_json)`.
async fn proved_json(st: &AppState, keys: &[String], batch: bool) -> Result<Response, AppError> {
    let cp = st.log.checkpoint();
    let rows = st.log.lookup(keys, cp.size()).await?;
    st.log.metrics().lookup_keys.inc_by(keys.len() as u64);
    let mut out = Out::with_capacity(
        cp.note_json.len() + 64 + rows.iter().map(|r| r.leaf.len() + 64 * 40).sum::<usize>(),
    );
    out.raw(b"{\"checkpoint\":").raw(cp.note_json.as_bytes());
    out.raw(if batch {
        b",\"results\":{"
    } else {
        b",\"entries\":["
    });
    // Group by key (never rely on the database's collation matching our key order).
    let mut by_key: std::collections::HashMap<&str, Vec<&crate::store::KeyedEntry>> =
        std::collections::HashMap::new();
    for r in &rows {
        by_key.entry(r.key.as_str()).or_default().push(r);
    }
    for (k, key) in keys.iter().enumerate() {
        if batch {
            if k > 0 {
                out.raw(b",");
            }
            out.string(key).raw(b":[");
        }
        for (i, row) in by_key.get(key.as_str()).into_iter().flatten().enumerate() {
            let (leaf_hash, proof) = st.log.proved(row.index, cp.size()).map_err(proof_error)?;
            if i > 0 {
                out.raw(b",");
            }
            out.proved_entry(row.index, &leaf_hash, &row.leaf, &proof);
        }
        if batch {
            out.raw(b"]");
        }
    }
    out.raw(if batch { b"}}" } else { b"]}" });
    Ok(out.response())
}

async fn get_lookup(
    State(st): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, AppError> {
    let key = parse_key(&key)?;
    proved_json(&st, std::slice::from_ref(&key), false).await
}

async fn post_lookup(State(st): State<AppState>, body: Body) -> Result<Response, AppError> {
    let bytes = read_body(body, st.limits.max_body_bytes).await?;
    let req: BatchLookupRequest = json_object(&bytes, "{\"keys\":[…]}")?;
    if req.keys.len() > MAX_LOOKUP_BATCH {
        return Err(AppError::TooLarge(format!(
            "{} keys in one request; the limit is {MAX_LOOKUP_BATCH}",
            req.keys.len()
        )));
    }
    let mut keys = req
        .keys
        .iter()
        .map(|k| parse_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    keys.sort();
    keys.dedup();
    proved_json(&st, &keys, true).await
}

async fn get_consistency(
    State(st): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<ConsistencyResponse>, AppError> {
    let (mut from, mut to) = (None, None);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n = || {
            v.parse::<u64>()
                .map_err(|_| AppError::bad("bad_range", format!("{k}={v:?} is not a tree size")))
        };
        match k {
            "from" => from = Some(n()?),
            "to" => to = Some(n()?),
            _ => {}
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(AppError::bad("bad_range", "need ?from=M&to=N"));
    };
    let size = st.log.checkpoint().size();
    if from > to || to > size {
        return Err(AppError::bad(
            "bad_range",
            format!("need from <= to <= {size} (the current checkpoint size); got {from}..{to}"),
        ));
    }
    // An empty tree is a prefix of every tree: nothing to prove (C2SP tlog-witness).
    let proof = if from == 0 || from == to {
        Vec::new()
    } else {
        st.log.consistency_proof(from, to).map_err(proof_error)?
    };
    Ok(Json(ConsistencyResponse { from, to, proof }))
}

async fn get_builders(State(st): State<AppState>) -> Json<BuildersResponse> {
    let b = st.log.builders();
    let mut builders: Vec<BuilderInfo> = b
        .iter()
        .map(|(name, key)| BuilderInfo {
            name: name.clone(),
            key: key.to_string(),
        })
        .collect();
    builders.sort_by(|a, b| a.name.cmp(&b.name));
    Json(BuildersResponse { builders })
}

async fn get_metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        st.log.metrics().encode(),
    )
        .into_response()
}

/// How long `/healthz` waits for the database to answer a trivial query.
const HEALTH_STORAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness (always 200 while the process serves: restarting it would not repair a database),
/// with the storage state: `status` is `degraded` when storage is not `ok`.
async fn get_healthz(State(st): State<AppState>) -> Response {
    let cp = st.log.checkpoint();
    let storage = st.log.storage_health(HEALTH_STORAGE_TIMEOUT).await;
    let mut body = serde_json::json!({
        "status": if storage == crate::log::StorageHealth::Ok { "ok" } else { "degraded" },
        "storage": storage.code(),
        "origin": st.log.signer().name(),
        "sequenced": st.log.sequenced_size(),
        "checkpoint": cp.size(),
    });
    if let crate::log::StorageHealth::WritesFailing(since) = storage {
        body["writesFailingSince"] = since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .into();
    }
    (StatusCode::OK, Json(body)).into_response()
}
