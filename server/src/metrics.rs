//! Prometheus metrics of `provenixd` (served at `/metrics`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of a submitted entry's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Label of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub route: String,
    pub status: u16,
}

/// Every metric the server keeps. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub entries: Family<ResultLabel, Counter>,
    pub requests: Family<RequestLabel, Counter>,
    pub tree_size: Gauge,
    pub checkpoint_size: Gauge,
    pub checkpoints_signed: Counter,
    pub storage_errors: Counter,
    pub sequenced_batch_entries: Histogram,
    pub commit_seconds: Histogram,
    pub integration_delay_seconds: Histogram,
    pub lookup_keys: Counter,
    pub cosignatures: Counter,
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
        let mut r = Registry::with_prefix("provenix");
        let m = Self {
            registry: Arc::new(Registry::default()),
            entries: Family::default(),
            requests: Family::default(),
            tree_size: Gauge::default(),
            checkpoint_size: Gauge::default(),
            checkpoints_signed: Counter::default(),
            storage_errors: Counter::default(),
            sequenced_batch_entries: Histogram::new(exponential_buckets(1.0, 4.0, 8)),
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            integration_delay_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            lookup_keys: Counter::default(),
            cosignatures: Counter::default(),
        };
        r.register("entries", "Submitted entries by outcome", m.entries.clone());
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register("tree_size", "Leaves durably sequenced", m.tree_size.clone());
        r.register(
            "checkpoint_size",
            "Size of the latest published checkpoint",
            m.checkpoint_size.clone(),
        );
        r.register(
            "checkpoints_signed",
            "Checkpoints signed",
            m.checkpoints_signed.clone(),
        );
        r.register(
            "storage_errors",
            "Failed storage writes",
            m.storage_errors.clone(),
        );
        r.register(
            "sequencer_batch_entries",
            "New entries per committed batch",
            m.sequenced_batch_entries.clone(),
        );
        r.register(
            "sequencer_commit_seconds",
            "Time to commit a batch durably",
            m.commit_seconds.clone(),
        );
        r.register(
            "integration_delay_seconds",
            "From acknowledging a batch to publishing a checkpoint covering it",
            m.integration_delay_seconds.clone(),
        );
        r.register("lookup_keys", "Keys looked up", m.lookup_keys.clone());
        r.register(
            "witness_cosignatures",
            "Witness cosignatures obtained",
            m.cosignatures.clone(),
        );
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Counts one entry outcome.
    pub fn entry(&self, result: &str) {
        self.entries
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
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
