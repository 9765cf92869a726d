//! `provenix substituter`: a Nix binary cache that serves a path only when the quorum agrees
//! (DESIGN.md §8, `docs/substituter.md`).
//!
//! Nix asks for `/<hash>.narinfo`; the substituter fetches the upstream narinfo, looks the path
//! up in every configured log ([`crate::quorum`]) and decides. Only a trusted path whose upstream
//! narinfo carries exactly the agreed NAR hash (and the NAR size and references the agreeing
//! entries state) is served: re-signed with the local key alone, its `URL` pointing at this
//! proxy's `/nar/<hash>-<narhash>.nar`, uncompressed. The NAR endpoint is gated the same way and
//! checks the NAR while it streams. Every "no" — and every failure — is a 404, the only answer
//! after which Nix 2.8 builds locally instead of failing (NIX-FACTS). The reason is logged and
//! shown at `/v1/decision/<hash>`.
//!
//! Resolutions (upstream narinfo + decision) are cached with a TTL in a bounded LRU, resolved
//! single-flight, and prefetched: when a path is resolved, its references are resolved next in
//! one batch (one lookup per log), and theirs after them, ahead of Nix walking the closure.

pub mod cache;
pub mod coalesce;
pub mod metrics;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt as _;
use provenix_core::nix::{NarHash, NixSecretKey, StorePath, StorePathHash};
use provenix_core::policy::{Decision, LogFailureKind, TrustConfig};
use serde::Serialize;

use crate::quorum::state::{default_state_file, LogState};
use crate::quorum::{Evidence, Lookup, Quorum, QuorumOptions};
use cache::{Cache, Entry, Owner};
use metrics::{LogFailureLabel, LogLabel, Metrics, RequestLabel};
use upstream::{UpstreamNarInfo, Upstreams};

/// NARs up to this size are read and checked whole before the first byte is sent, so a mismatch
/// is still a 404; larger ones stream and are cut short on a mismatch.
pub const DEFAULT_BUFFER_NAR_BYTES: u64 = 32 << 20;

/// NARs up to this size are fetched (and checked) as soon as Nix reads their narinfo, and kept
/// in memory until Nix asks for them (Nix asks for the narinfos of the paths it lacks, then for
/// their NARs), at most [`PREFETCHED_NARS`] at once for [`PREFETCHED_NAR_TTL`].
pub const PREFETCH_NAR_BYTES: u64 = 1 << 20;

/// How many prefetched NARs are held at most.
pub const PREFETCHED_NARS: usize = 256;

/// How long a prefetched NAR is held.
pub const PREFETCHED_NAR_TTL: Duration = Duration::from_secs(60);

/// A checked NAR held in memory: the NAR hash it matched, and its bytes (or why not).
type NarBlob = (NarHash, Result<Bytes, String>);

/// How many resolutions are cached.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;

/// Deepest chain of reference prefetches started from one request.
const MAX_PREFETCH_DEPTH: u32 = 256;

/// Upstream narinfo requests in flight at once per batch.
const UPSTREAM_CONCURRENCY: usize = 32;

/// Arguments of `provenix substituter`.
#[derive(clap::Args, Debug)]
pub struct SubstituterArgs {
    /// The trust file (`trust.toml`) with a `[substituter]` section.
    #[arg(long)]
    pub config: PathBuf,
    /// Listen here instead of the trust file's `listen` (port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Log consistency state file (default: the trust file's `state-file`, else
    /// `$XDG_STATE_HOME/provenix/state.json`).
    #[arg(long)]
    pub state: Option<PathBuf>,
}

/// Settings of a running substituter.
#[derive(Clone, Debug)]
pub struct Options {
    /// `Priority` in `/nix-cache-info`.
    pub priority: u32,
    /// How long a servable resolution is reused.
    pub decision_ttl: Duration,
    /// How long any other resolution is reused.
    pub negative_ttl: Duration,
    /// Deadline for one upstream narinfo.
    pub upstream_timeout: Duration,
    /// See [`DEFAULT_BUFFER_NAR_BYTES`].
    pub buffer_nar_bytes: u64,
    /// See [`DEFAULT_CACHE_ENTRIES`].
    pub cache_entries: usize,
}

/// What the substituter will do with one path.
#[derive(Debug)]
pub enum Serve {
    /// Serve it: the narinfo text (signed by the local key) and what the NAR must be.
    Yes {
        narinfo: Bytes,
        nar_hash: NarHash,
        nar_size: u64,
        references: Vec<StorePath>,
    },
    /// Answer 404, for this reason.
    No(String),
}

/// One resolved store path hash: what the upstream said, what the quorum decided, and so what
/// is served.
#[derive(Debug)]
pub struct Resolved {
    pub hash: StorePathHash,
    pub upstream: Option<UpstreamNarInfo>,
    pub decision: Option<Decision>,
    pub serve: Serve,
}

impl Resolved {
    fn outcome(&self) -> &'static str {
        match (&self.serve, &self.decision) {
            (Serve::Yes { .. }, _) => "trusted",
            (_, None) => "not_upstream",
            (_, Some(d)) if d.is_trusted() => "upstream_mismatch",
            (_, Some(d)) => match d.verdict {
                provenix_core::policy::Verdict::Vetoed => "vetoed",
                provenix_core::policy::Verdict::Conflict => "conflict",
                _ => "not_trusted",
            },
        }
    }
}

/// The substituter's shared state.
pub struct Substituter {
    quorum: Arc<Quorum>,
    lookups: Arc<coalesce::Coalescer>,
    upstreams: Upstreams,
    key: NixSecretKey,
    cache: Cache<StorePathHash, Resolved>,
    nars: Cache<StorePathHash, NarBlob>,
    metrics: Metrics,
    opts: Options,
}

impl std::fmt::Debug for Substituter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substituter")
            .field("quorum", &self.quorum)
            .field("key", &self.key.public().to_string())
            .finish_non_exhaustive()
    }
}

/// Why the served narinfo must not be built from this upstream narinfo, if it must not.
fn check_upstream(
    up: &UpstreamNarInfo,
    decision: &Decision,
    ev: &Evidence,
) -> Result<NarHash, String> {
    let agreed = decision
        .trusted_nar_hash()
        .ok_or_else(|| format!("not trusted: {}", decision.verdict))?;
    let ni = &up.narinfo;
    if ni.store_path() != &decision.path {
        return Err(format!(
            "upstream narinfo names {}, not {}",
            ni.store_path(),
            decision.path
        ));
    }
    if ni.nar_hash() != agreed {
        return Err(format!(
            "upstream NarHash {} differs from the agreed {}",
            ni.nar_hash().to_nix32_prefixed(),
            agreed.to_nix32_prefixed()
        ));
    }
    let meta = ev.agreed_meta(decision);
    if !meta.nar_sizes.is_empty() && meta.nar_sizes.iter().any(|s| *s != ni.nar_size()) {
        return Err(format!(
            "upstream NarSize {} differs from the agreeing entries' {:?}",
            ni.nar_size(),
            meta.nar_sizes
        ));
    }
    let refs: std::collections::BTreeSet<StorePath> = ni.references().iter().cloned().collect();
    if meta.references.iter().any(|r| *r != refs) {
        return Err("upstream References differ from those the agreeing entries state".to_owned());
    }
    Ok(*agreed)
}

/// Counts one lookup round in the metrics.
fn record_lookup(metrics: &Metrics, lookup: &Lookup) {
    for r in &lookup.logs {
        metrics
            .log_lookup_seconds
            .get_or_create(&LogLabel { log: r.log.clone() })
            .observe(r.elapsed.as_secs_f64());
        if let Some(f) = &r.failure {
            let kind = match f {
                LogFailureKind::Unreachable(_) => "unreachable",
                LogFailureKind::BadCheckpoint(_) => "bad_checkpoint",
                LogFailureKind::InconsistentCheckpoint(_) => "inconsistent_checkpoint",
                LogFailureKind::Unwitnessed(_) => "unwitnessed",
            };
            metrics
                .log_failures
                .get_or_create(&LogFailureLabel {
                    log: r.log.clone(),
                    kind: kind.into(),
                })
                .inc();
        }
    }
}

/// The narinfo this proxy serves for `up`: agreed hash, uncompressed NAR at this proxy, signed
/// by the local key alone.
fn served_narinfo(
    up: &UpstreamNarInfo,
    nar_hash: NarHash,
    key: &NixSecretKey,
) -> Result<Bytes, String> {
    let mut ni = up.narinfo.clone();
    let size = ni.nar_size();
    ni.set_nar_hash(nar_hash);
    ni.set_url(&nar_url(&ni.store_path().hash(), &nar_hash))
        .map_err(|e| e.to_string())?;
    ni.set_compression("none").map_err(|e| e.to_string())?;
    ni.set_file(Some((nar_hash, size)));
    ni.resign(key);
    Ok(Bytes::from(ni.to_string()))
}

/// `nar/<store path hash>-<nix32 NAR hash>.nar`: names both the path (for the gate) and the
/// content (so a cached narinfo can never fetch other bytes).
pub fn nar_url(hash: &StorePathHash, nar_hash: &NarHash) -> String {
    let h = nar_hash.to_nix32_prefixed();
    format!("nar/{hash}-{}.nar", h.trim_start_matches("sha256:"))
}

fn parse_nar_file(file: &str) -> Option<(StorePathHash, NarHash)> {
    let stem = file.strip_suffix(".nar")?;
    let (h, n) = stem.split_once('-')?;
    Some((h.parse().ok()?, format!("sha256:{n}").parse().ok()?))
}

impl Substituter {
    /// A substituter deciding with `quorum`, fetching from `upstreams`, signing with `key`.
    pub fn new(
        quorum: Arc<Quorum>,
        upstreams: Upstreams,
        key: NixSecretKey,
        opts: Options,
    ) -> Self {
        let metrics = Metrics::new();
        let m = metrics.clone();
        Self {
            lookups: coalesce::Coalescer::new(
                quorum.clone(),
                Box::new(move |l: &Lookup| record_lookup(&m, l)),
            ),
            quorum,
            upstreams,
            key,
            cache: Cache::new(opts.cache_entries),
            nars: Cache::new(PREFETCHED_NARS),
            metrics,
            opts,
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The resolution of `hash`: cached, shared with a resolution in flight, or new.
    pub async fn resolve(self: &Arc<Self>, hash: StorePathHash) -> Option<Arc<Resolved>> {
        match self.cache.entry(&hash) {
            Entry::Ready(v) => {
                self.metrics.cache_hits.inc();
                Some(v)
            }
            Entry::Pending(w) => {
                self.metrics.cache_hits.inc();
                w.wait().await
            }
            Entry::Owned(owner) => {
                self.metrics.cache_misses.inc();
                let w = owner.waiter();
                // A task of its own: a client hanging up does not abandon the waiters.
                tokio::spawn(self.clone().resolve_batch(vec![owner], 0));
                match w {
                    Some(w) => w.wait().await,
                    None => None,
                }
            }
        }
    }

    /// Resolves every owned key in one batch: fetches their upstream narinfos, starts the
    /// prefetch of their references, looks the keys up in every log at once, decides and
    /// completes them.
    fn resolve_batch(
        self: Arc<Self>,
        owners: Vec<Owner<StorePathHash, Resolved>>,
        depth: u32,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(self.resolve_batch_inner(owners, depth))
    }

    async fn resolve_batch_inner(
        self: Arc<Self>,
        owners: Vec<Owner<StorePathHash, Resolved>>,
        depth: u32,
    ) {
        let t = self.opts.upstream_timeout;
        let wanted: Vec<StorePathHash> = owners.iter().map(|o| *o.key()).collect();
        let mut fetches = Vec::with_capacity(wanted.len());
        for h in wanted {
            let up = self.upstreams.clone();
            fetches.push(async move { up.narinfo(&h, 0, t).await });
        }
        let fetched: Vec<Result<Option<UpstreamNarInfo>, String>> = futures::stream::iter(fetches)
            .buffered(UPSTREAM_CONCURRENCY)
            .collect()
            .await;
        // Crawl on before deciding: the references are known now, and Nix will ask for them
        // next. Their resolution (upstream narinfos, then their own references, then one
        // lookup per log) runs while this batch is being decided, so the crawl of a deep closure
        // goes at the speed of upstream narinfo fetches, not of decisions.
        let next: Vec<StorePath> = fetched
            .iter()
            .filter_map(|f| f.as_ref().ok().and_then(Option::as_ref))
            .flat_map(|up| {
                let own = up.narinfo.store_path().hash();
                up.narinfo
                    .references()
                    .iter()
                    .filter(move |r| r.hash() != own)
                    .cloned()
            })
            .collect();
        self.prefetch(next, depth + 1);
        let keys: Vec<StorePathHash> = owners
            .iter()
            .zip(&fetched)
            .filter(|(_, f)| matches!(f, Ok(Some(_))))
            .map(|(o, _)| *o.key())
            .collect();
        let lookup = if keys.is_empty() {
            Arc::new(Lookup::default())
        } else {
            self.lookups.lookup(keys).await
        };
        for (owner, f) in owners.into_iter().zip(fetched) {
            let hash = *owner.key();
            let resolved = match f {
                Err(e) => {
                    self.metrics.upstream_errors.inc();
                    tracing::warn!(%hash, error = %e, "upstream narinfo failed");
                    Resolved {
                        hash,
                        upstream: None,
                        decision: None,
                        serve: Serve::No(format!("upstream: {e}")),
                    }
                }
                Ok(None) => Resolved {
                    hash,
                    upstream: None,
                    decision: None,
                    serve: Serve::No("no upstream has this path".into()),
                },
                Ok(Some(up)) => {
                    let ev = lookup.evidence(&hash);
                    self.decide_one(up, ev).await
                }
            };
            let outcome = resolved.outcome();
            self.metrics.outcome(outcome);
            match &resolved.serve {
                Serve::Yes { .. } => tracing::info!(%hash, "trusted: serving"),
                Serve::No(why) => {
                    tracing::info!(%hash, outcome, reason = %why, "not serving (404)")
                }
            }
            let ttl = match resolved.serve {
                Serve::Yes { .. } => self.opts.decision_ttl,
                Serve::No(_) => self.opts.negative_ttl,
            };
            owner.complete(Arc::new(resolved), ttl);
        }
    }

    /// Starts fetching the NAR of a small servable path in the background.
    fn prefetch_nar(self: &Arc<Self>, r: &Arc<Resolved>) {
        if let Entry::Owned(owner) = self.nars.entry(&r.hash) {
            let this = self.clone();
            let r = r.clone();
            tokio::spawn(async move {
                let blob = this.fetch_small_nar(&r).await;
                owner.complete(Arc::new(blob), PREFETCHED_NAR_TTL);
            });
        }
    }

    /// The checked NAR of a small servable path: prefetched, being prefetched, or fetched now.
    async fn small_nar(self: &Arc<Self>, r: &Arc<Resolved>) -> Arc<NarBlob> {
        match self.nars.entry(&r.hash) {
            Entry::Ready(v) => v,
            Entry::Pending(w) => match w.wait().await {
                Some(v) => v,
                None => Arc::new(self.fetch_small_nar(r).await),
            },
            Entry::Owned(owner) => {
                let blob = Arc::new(self.fetch_small_nar(r).await);
                owner.complete(blob.clone(), PREFETCHED_NAR_TTL);
                blob
            }
        }
    }

    async fn fetch_small_nar(&self, r: &Resolved) -> NarBlob {
        let (
            Serve::Yes {
                nar_hash, nar_size, ..
            },
            Some(up),
        ) = (&r.serve, &r.upstream)
        else {
            return (NarHash::from_bytes([0; 32]), Err("not servable".into()));
        };
        // Compressed NAR files are not much larger than the NAR; anything far larger is refused.
        let max_file = nar_size
            .saturating_add(nar_size / 8)
            .saturating_add(64 << 10);
        let file = match self.upstreams.nar_file(up, max_file).await {
            Ok(f) => f,
            Err(e) => {
                self.metrics.upstream_errors.inc();
                tracing::warn!(hash = %r.hash, error = %e, "upstream NAR failed");
                return (*nar_hash, Err(format!("upstream NAR: {e}")));
            }
        };
        // Decompressing and hashing a NAR of up to 1 MiB takes milliseconds of CPU: on the
        // blocking pool, so that narinfo answers on the async workers do not queue behind it.
        let compression = up.narinfo.compression().to_owned();
        let (want, size) = (*nar_hash, *nar_size);
        let checked = tokio::task::spawn_blocking(move || {
            upstream::check_nar_file(&compression, &file, want, size)
        })
        .await
        .unwrap_or_else(|e| Err(format!("checking the NAR failed: {e}")));
        match checked {
            Ok(bytes) => (*nar_hash, Ok(bytes)),
            Err(e) => {
                self.metrics.nar_hash_mismatches.inc();
                tracing::error!(hash = %r.hash, error = %e, "upstream NAR rejected");
                self.cache.invalidate(&r.hash);
                (*nar_hash, Err(format!("upstream NAR rejected: {e}")))
            }
        }
    }

    /// Starts resolving those of `paths` that are neither cached nor being resolved, as one
    /// batch in a task of its own.
    fn prefetch(self: &Arc<Self>, mut paths: Vec<StorePath>, depth: u32) {
        if depth > MAX_PREFETCH_DEPTH || paths.is_empty() {
            return;
        }
        paths.sort();
        paths.dedup();
        let owners: Vec<_> = paths
            .iter()
            .filter_map(|p| match self.cache.entry(&p.hash()) {
                Entry::Owned(o) => Some(o),
                _ => None,
            })
            .collect();
        if !owners.is_empty() {
            self.metrics.prefetched.inc_by(owners.len() as u64);
            tokio::spawn(self.clone().resolve_batch(owners, depth));
        }
    }

    /// Decides one path whose upstream narinfo is `up`; on a NAR hash mismatch, tries the later
    /// upstreams for one that matches.
    async fn decide_one(&self, mut up: UpstreamNarInfo, ev: Evidence) -> Resolved {
        let hash = up.narinfo.store_path().hash();
        let decision = self
            .quorum
            .policy()
            .decide(&ev.votes(up.narinfo.store_path()));
        loop {
            let serve = match check_upstream(&up, &decision, &ev) {
                Ok(nar_hash) => match served_narinfo(&up, nar_hash, &self.key) {
                    Ok(narinfo) => Serve::Yes {
                        narinfo,
                        nar_hash,
                        nar_size: up.narinfo.nar_size(),
                        references: up.narinfo.references().to_vec(),
                    },
                    Err(e) => Serve::No(format!("cannot write the narinfo: {e}")),
                },
                Err(why) => Serve::No(why),
            };
            let retry = matches!(serve, Serve::No(_))
                && decision.is_trusted()
                && up.upstream + 1 < self.upstreams.len();
            if retry {
                if let Ok(Some(other)) = self
                    .upstreams
                    .narinfo(&hash, up.upstream + 1, self.opts.upstream_timeout)
                    .await
                {
                    if other.narinfo.store_path() == &decision.path {
                        up = other;
                        continue;
                    }
                }
            }
            return Resolved {
                hash,
                upstream: Some(up),
                decision: Some(decision),
                serve,
            };
        }
    }
}

// ---- HTTP ----

/// The router. Pure: tests call it with `tower::ServiceExt::oneshot`. Every route answers 200 or
/// 404, nothing else (a wrong method is a 404 too).
pub fn router(state: Arc<Substituter>) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/nix-cache-info", get(get_cache_info))
        .route("/nar/{file}", get(get_nar))
        .route("/v1/decision/{hash}", get(get_decision))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_healthz))
        .route("/{file}", get(get_narinfo))
        .route_layer(middleware::from_fn_with_state(metrics, track))
        .fallback(not_found_route)
        .method_not_allowed_fallback(not_found_route)
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

/// The one way this server says no.
fn not_found(reason: impl Into<String>) -> Response {
    let mut body = reason.into();
    body.push('\n');
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn not_found_route() -> Response {
    not_found("not found")
}

async fn get_cache_info(State(st): State<Arc<Substituter>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/x-nix-cache-info"),
        )],
        format!(
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: {}\n",
            st.opts.priority
        ),
    )
        .into_response()
}

async fn get_narinfo(
    State(st): State<Arc<Substituter>>,
    method: Method,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Ok(Path(file)) = path else {
        return not_found("not found");
    };
    let Some(hash) = file
        .strip_suffix(".narinfo")
        .and_then(|h| h.parse::<StorePathHash>().ok())
    else {
        return not_found("not found");
    };
    let Some(r) = st.resolve(hash).await else {
        return not_found("could not decide (see the substituter's log)");
    };
    match &r.serve {
        Serve::Yes {
            narinfo, nar_size, ..
        } => {
            if method == Method::GET && *nar_size <= PREFETCH_NAR_BYTES {
                st.prefetch_nar(&r);
            }
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/x-nix-narinfo"),
                )],
                narinfo.clone(),
            )
                .into_response()
        }
        Serve::No(why) => not_found(format!("{why} (details: /v1/decision/{hash})")),
    }
}

async fn get_nar(
    State(st): State<Arc<Substituter>>,
    method: Method,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Some((hash, want)) = path.ok().and_then(|Path(f)| parse_nar_file(&f)) else {
        return not_found("not found");
    };
    let Some(r) = st.resolve(hash).await else {
        return not_found("could not decide (see the substituter's log)");
    };
    let (
        Serve::Yes {
            nar_hash, nar_size, ..
        },
        Some(up),
    ) = (&r.serve, &r.upstream)
    else {
        return not_found(match &r.serve {
            Serve::No(why) => why.clone(),
            Serve::Yes { .. } => "no upstream".into(),
        });
    };
    if *nar_hash != want {
        return not_found("this NAR is not the agreed content of the path");
    }
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-nix-nar"),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from(*nar_size)),
    ];
    if method == Method::HEAD {
        return (headers, Body::empty()).into_response();
    }
    if *nar_size <= PREFETCH_NAR_BYTES {
        let blob = st.small_nar(&r).await;
        // Served once: Nix does not ask again, and the memory is better used ahead.
        st.nars.invalidate(&hash);
        return match &*blob {
            (h, Ok(bytes)) if h == nar_hash => {
                st.metrics.nar_bytes.inc_by(bytes.len() as u64);
                (headers, bytes.clone()).into_response()
            }
            (_, Ok(_)) => not_found("the path's agreed content changed; ask again"),
            (_, Err(e)) => not_found(e.clone()),
        };
    }
    let stream = match st.upstreams.nar(up, *nar_hash, *nar_size).await {
        Ok(s) => s,
        Err(e) => {
            st.metrics.upstream_errors.inc();
            tracing::warn!(%hash, error = %e, "upstream NAR failed");
            return not_found(format!("upstream NAR: {e}"));
        }
    };
    if *nar_size <= st.opts.buffer_nar_bytes {
        match upstream::collect(stream, *nar_size).await {
            Ok(bytes) => {
                st.metrics.nar_bytes.inc_by(bytes.len() as u64);
                (headers, bytes).into_response()
            }
            Err(e) => {
                st.metrics.nar_hash_mismatches.inc();
                tracing::error!(%hash, error = %e, "upstream NAR rejected");
                st.cache.invalidate(&hash);
                not_found(format!("upstream NAR rejected: {e}"))
            }
        }
    } else {
        let metrics = st.metrics.clone();
        let st2 = st.clone();
        let body = stream.map(move |c| {
            match &c {
                Ok(b) => {
                    metrics.nar_bytes.inc_by(b.len() as u64);
                }
                Err(e) => {
                    metrics.nar_hash_mismatches.inc();
                    tracing::error!(%hash, error = %e, "upstream NAR rejected mid-stream: cutting the transfer");
                    st2.cache.invalidate(&hash);
                }
            }
            c
        });
        (headers, Body::from_stream(body)).into_response()
    }
}

/// The body of `/v1/decision/<hash>`: the decision's JSON, plus what the substituter does.
#[derive(Serialize)]
struct DecisionBody<'a> {
    #[serde(flatten)]
    decision: &'a Decision,
    substituter: ServeInfo,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServeInfo {
    served: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_nar_hash: Option<String>,
}

fn json(v: &impl Serialize) -> Response {
    match serde_json::to_vec_pretty(v) {
        Ok(mut b) => {
            b.push(b'\n');
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                b,
            )
                .into_response()
        }
        Err(e) => not_found(format!("cannot encode: {e}")),
    }
}

async fn get_decision(
    State(st): State<Arc<Substituter>>,
    RawQuery(query): RawQuery,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Some(hash) = path.ok().and_then(|Path(h)| {
        h.strip_suffix(".narinfo")
            .unwrap_or(&h)
            .parse::<StorePathHash>()
            .ok()
    }) else {
        return not_found("not a store path hash");
    };
    if query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "fresh=1"))
    {
        st.cache.invalidate(&hash);
    }
    let Some(r) = st.resolve(hash).await else {
        return not_found("could not decide (see the substituter's log)");
    };
    let (served, reason) = match &r.serve {
        Serve::Yes { .. } => (true, None),
        Serve::No(why) => (false, Some(why.clone())),
    };
    let info = ServeInfo {
        served,
        reason,
        upstream_nar_hash: r
            .upstream
            .as_ref()
            .map(|u| u.narinfo.nar_hash().to_nix32_prefixed()),
    };
    if let Some(d) = &r.decision {
        return json(&DecisionBody {
            decision: d,
            substituter: info,
        });
    }
    // No upstream narinfo: ask the logs anyway, to explain.
    let lookup = st.quorum.lookup(&[hash]).await;
    record_lookup(&st.metrics, &lookup);
    let ev = lookup.evidence(&hash);
    match ev.path_for(&hash) {
        Some(p) => {
            let d = st.quorum.policy().decide(&ev.votes(&p));
            json(&DecisionBody {
                decision: &d,
                substituter: info,
            })
        }
        None => not_found(format!(
            "{}; no log has an entry for it",
            info.reason.unwrap_or_default()
        )),
    }
}

async fn get_metrics(State(st): State<Arc<Substituter>>) -> Response {
    for (url, _size, failed) in st.quorum.log_summaries() {
        st.metrics
            .log_marked_failed
            .get_or_create(&LogLabel { log: url })
            .set(i64::from(failed.is_some()));
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        st.metrics.encode(),
    )
        .into_response()
}

async fn get_healthz(State(st): State<Arc<Substituter>>) -> Response {
    let logs: Vec<serde_json::Value> = st
        .quorum
        .log_summaries()
        .into_iter()
        .map(|(url, size, failed)| {
            serde_json::json!({"log": url, "checkpointSize": size, "failed": failed})
        })
        .collect();
    json(&serde_json::json!({
        "status": "ok",
        "key": st.key.public().to_string(),
        "cached": st.cache.len(),
        "logs": logs,
    }))
}

/// Serves on `listener` until `shutdown` resolves, through the bounded serving loop
/// [`provenix_http::serve`] (at most `limits.max_connections` connections, request heads within
/// `limits.header_read_timeout`, in-flight requests drained at shutdown). Panics and handlers
/// slower than `request_timeout` become 404s, the only failure Nix takes as "not here".
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<Substituter>,
    limits: provenix_http::ServeLimits,
    request_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::NOT_FOUND,
            request_timeout,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| not_found("internal error"),
        ));
    // The loop sets TCP_NODELAY: small answers on keep-alive connections never wait for Nagle.
    let stats = Arc::new(provenix_http::ServeStats::default());
    provenix_http::serve(listener, app, limits, stats, shutdown).await
}

/// Reads and checks a trust file.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<TrustConfig> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > provenix_core::policy::MAX_TRUST_TOML_BYTES as u64 {
        anyhow::bail!("{}: too large to be a trust file", path.display());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    TrustConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The state file to use: the flag, else the trust file's `state-file`, else the default.
pub fn state_path(flag: Option<&PathBuf>, config: &TrustConfig) -> anyhow::Result<PathBuf> {
    flag.cloned()
        .or_else(|| {
            config
                .substituter
                .as_ref()
                .and_then(|s| s.state_file.as_ref().map(PathBuf::from))
        })
        .or_else(default_state_file)
        .context("no state file: set [substituter] state-file, --state, or HOME")
}

fn read_signing_key(path: &std::path::Path) -> anyhow::Result<NixSecretKey> {
    use std::os::unix::fs::PermissionsExt as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "signing key is readable by others; chmod 600 it");
        }
    }
    text.trim().parse::<NixSecretKey>().map_err(|e| {
        anyhow::anyhow!(
            "{} is not a Nix secret key NAME:BASE64 (as `nix-store --generate-binary-cache-key` writes it): {e}",
            path.display()
        )
    })
}

/// `provenix substituter`: runs until SIGTERM/SIGINT.
pub async fn run(args: &SubstituterArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let sub = config.substituter.clone().with_context(|| {
        format!(
            "{} has no [substituter] section (listen, upstreams, signing-key-file)",
            args.config.display()
        )
    })?;
    let key = read_signing_key(std::path::Path::new(&sub.signing_key_file))?;
    let state_file = state_path(args.state.as_ref(), &config)?;
    let verifiers: Vec<_> = config.logs.iter().map(|l| l.key.clone()).collect();
    let state = Arc::new(LogState::open(&state_file, &verifiers)?);
    let quorum = Arc::new(Quorum::new(
        &config,
        &QuorumOptions::from_config(&config),
        state,
    )?);
    let upstreams =
        Upstreams::new(&sub.upstreams, sub.log_timeout).map_err(|e| anyhow::anyhow!(e))?;
    let opts = Options {
        priority: sub.priority,
        decision_ttl: sub.decision_ttl,
        negative_ttl: sub.negative_ttl,
        upstream_timeout: sub.log_timeout,
        buffer_nar_bytes: DEFAULT_BUFFER_NAR_BYTES,
        cache_entries: DEFAULT_CACHE_ENTRIES,
    };
    let listen = args.listen.unwrap_or(sub.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    for (url, _, failed) in quorum.log_summaries() {
        if let Some(f) = failed {
            tracing::error!(log = %url, at = %f.at, reason = %f.reason, "log is marked failed: its entries do not count");
        }
    }
    let public = key.public().to_string();
    let st = Arc::new(Substituter::new(quorum, upstreams, key, opts));
    println!("provenix substituter: public key {public}");
    println!("provenix substituter: listening on http://{addr}");
    let limits = provenix_http::ServeLimits {
        max_connections: sub.max_connections,
        header_read_timeout: sub.header_timeout,
        ..provenix_http::ServeLimits::default()
    };
    serve(listener, st, limits, sub.request_timeout, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
