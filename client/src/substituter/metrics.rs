//! Prometheus metrics of `provenix substituter` (served at `/metrics`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub route: String,
    pub status: u16,
}

/// Label of a decision outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Label naming a log.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogLabel {
    pub log: String,
}

/// Label of a log failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogFailureLabel {
    pub log: String,
    pub kind: String,
}

fn lookup_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0002, 2.0, 16))
}

/// Every metric the substituter keeps. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub requests: Family<RequestLabel, Counter>,
    pub outcomes: Family<OutcomeLabel, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub prefetched: Counter,
    pub log_lookup_seconds: Family<LogLabel, Histogram, fn() -> Histogram>,
    pub log_failures: Family<LogFailureLabel, Counter>,
    pub log_marked_failed: Family<LogLabel, Gauge>,
    pub nar_bytes: Counter,
    pub nar_hash_mismatches: Counter,
    pub upstream_errors: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("provenix_substituter");
        let m = Self {
            registry: Arc::new(Registry::default()),
            requests: Family::default(),
            outcomes: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            prefetched: Counter::default(),
            log_lookup_seconds: Family::new_with_constructor(lookup_histogram),
            log_failures: Family::default(),
            log_marked_failed: Family::default(),
            nar_bytes: Counter::default(),
            nar_hash_mismatches: Counter::default(),
            upstream_errors: Counter::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register(
            "decisions",
            "Paths resolved, by outcome (trusted, not_trusted, vetoed, conflict, not_upstream, upstream_mismatch)",
            m.outcomes.clone(),
        );
        r.register(
            "cache_hits",
            "Requests answered from the decision cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Requests that needed a new decision",
            m.cache_misses.clone(),
        );
        r.register(
            "prefetched_paths",
            "Paths decided ahead of Nix asking (references of served paths)",
            m.prefetched.clone(),
        );
        r.register(
            "log_lookup_seconds",
            "Time for one batched lookup in one log, checks included",
            m.log_lookup_seconds.clone(),
        );
        r.register(
            "log_failures",
            "Log lookups that failed, by log and kind",
            m.log_failures.clone(),
        );
        r.register(
            "log_marked_failed",
            "1 for a log caught presenting inconsistent checkpoints (its entries never count)",
            m.log_marked_failed.clone(),
        );
        r.register("nar_bytes", "NAR bytes served", m.nar_bytes.clone());
        r.register(
            "nar_hash_mismatches",
            "Upstream NARs whose content did not match the agreed NAR hash or size",
            m.nar_hash_mismatches.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream requests that failed (other than 404)",
            m.upstream_errors.clone(),
        );
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Counts one outcome.
    pub fn outcome(&self, outcome: &str) {
        self.outcomes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
