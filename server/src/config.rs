//! `server.toml`: the settings of `provenixd serve`, also settable by flags (flags win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default data directory.
pub const DEFAULT_DATA: &str = "./provenix-data";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default log name (checkpoint origin) for a new log.
pub const DEFAULT_ORIGIN: &str = "provenix-log";

/// Everything in `server.toml`. Every field is optional; see `docs/server.md`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// Data directory: holds `log.key` (mode 0600) and, by default, the SQLite database.
    pub data: Option<PathBuf>,
    /// Address of the public HTTP listener (`127.0.0.1:8080`; port 0 picks a free port).
    pub listen: Option<String>,
    /// `sqlite://PATH` or `postgres://…`; default: SQLite in the data directory.
    pub database: Option<String>,
    /// Name (and checkpoint origin) of a new log. Used only when the log is created.
    pub origin: Option<String>,
    /// Shortest time between two checkpoints, in milliseconds (default 100).
    pub integrate_interval_ms: Option<u64>,
    /// Largest request body in bytes (default 32 MiB).
    pub max_body_bytes: Option<usize>,
    /// Submission requests waiting for the sequencer before new ones get 503 (default 256).
    pub queue_depth: Option<usize>,
    /// Reader connections to the database (default 4; on PostgreSQL at most the number of
    /// cores).
    pub read_pool_size: Option<u32>,
    /// Most keys one coalesced lookup query carries (default 64; 1 turns coalescing off).
    pub lookup_batch_keys: Option<usize>,
    /// Per-request time limit in seconds (default 60).
    pub request_timeout_secs: Option<u64>,
    /// Most open client connections (default 1024); more are closed at once.
    pub max_connections: Option<usize>,
    /// Seconds a client may take to send a request's headers (default 10).
    pub header_timeout_secs: Option<u64>,
    /// Serve the web explorer and keep its index (default true). The index is derived from the
    /// log and can be dropped and rebuilt; turning it off saves its ingest and disk cost.
    pub explorer: Option<bool>,
    /// Witnesses asked to cosign every checkpoint (C2SP tlog-witness), as `[[witness]]` tables.
    #[serde(default)]
    pub witness: Vec<WitnessConfig>,
    /// Time limit of one witness request in milliseconds (default 3000).
    pub witness_timeout_ms: Option<u64>,
}

/// One `[[witness]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's submission prefix; the log POSTs to `<url>/add-checkpoint`.
    pub url: String,
    /// The witness's cosigner key `NAME+HEXID+BASE64` (signature type 0x04).
    pub key: String,
}

/// A config that was checked: every value parsed and in range.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub database: Option<String>,
    pub origin: String,
    pub integrate_interval: Duration,
    pub max_body_bytes: usize,
    pub queue_depth: usize,
    /// `None`: [`crate::default_read_pool`] for the database in use.
    pub read_pool_size: Option<u32>,
    pub lookup_batch_keys: usize,
    pub request_timeout: Duration,
    pub serve: provenix_http::ServeLimits,
    pub explorer: bool,
    pub witnesses: Vec<crate::witness::WitnessSpec>,
    pub witness_timeout: Duration,
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ServerConfig {
    /// Reads and parses a config file (unknown fields are errors).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Applies defaults and checks every value.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let listen_s = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen = {listen_s:?} is not an IP:PORT address (e.g. 127.0.0.1:8080)"
            ))
        })?;
        if let Some(db) = &self.database {
            if !(db.starts_with("sqlite://") || crate::store::Store::is_postgres_url(db)) {
                return Err(ConfigError::Invalid(format!(
                    "database = {db:?}: use sqlite://PATH or postgres://USER@HOST/DB"
                )));
            }
        }
        let origin = self
            .origin
            .clone()
            .unwrap_or_else(|| DEFAULT_ORIGIN.to_owned());
        if !signed_note_name_ok(&origin) {
            return Err(ConfigError::Invalid(format!(
                "origin = {origin:?}: a log name must be non-empty, without spaces or '+'"
            )));
        }
        let data = self
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
        if data.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("data must not be empty".into()));
        }
        let interval = self.integrate_interval_ms.unwrap_or(100);
        if !(1..=10_000).contains(&interval) {
            return Err(ConfigError::Invalid(
                "integrate-interval-ms must be 1..=10000".into(),
            ));
        }
        let max_body = self.max_body_bytes.unwrap_or(32 << 20);
        if max_body < 70_000 {
            return Err(ConfigError::Invalid(
                "max-body-bytes must be at least 70000 (one maximal entry)".into(),
            ));
        }
        let queue = self.queue_depth.unwrap_or(256);
        if queue == 0 {
            return Err(ConfigError::Invalid(
                "queue-depth must be at least 1".into(),
            ));
        }
        let pool = self.read_pool_size;
        if pool.is_some_and(|p| !(1..=256).contains(&p)) {
            return Err(ConfigError::Invalid(
                "read-pool-size must be 1..=256".into(),
            ));
        }
        let lookup_batch_keys = self.lookup_batch_keys.unwrap_or(64);
        if !(1..=1000).contains(&lookup_batch_keys) {
            return Err(ConfigError::Invalid(
                "lookup-batch-keys must be 1..=1000 (1 turns lookup coalescing off)".into(),
            ));
        }
        let timeout = self.request_timeout_secs.unwrap_or(60);
        if timeout == 0 {
            return Err(ConfigError::Invalid(
                "request-timeout-secs must be at least 1".into(),
            ));
        }
        let mut witnesses = Vec::new();
        for w in &self.witness {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "witness url {:?} must be http:// or https://",
                    w.url
                )));
            }
            let key = w.key.parse().map_err(|e| {
                ConfigError::Invalid(format!(
                    "witness key {:?}: {e} (make one with `provenix witness keygen`)",
                    w.key
                ))
            })?;
            witnesses.push(crate::witness::WitnessSpec {
                url: w.url.clone(),
                key,
            });
        }
        let witness_timeout = self.witness_timeout_ms.unwrap_or(3000);
        if witness_timeout == 0 {
            return Err(ConfigError::Invalid(
                "witness-timeout-ms must be at least 1".into(),
            ));
        }
        let max_connections = self.max_connections.unwrap_or(1024);
        if max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max-connections must be at least 1".into(),
            ));
        }
        let header_timeout = self.header_timeout_secs.unwrap_or(10);
        if header_timeout == 0 {
            return Err(ConfigError::Invalid(
                "header-timeout-secs must be at least 1".into(),
            ));
        }
        Ok(Settings {
            explorer: self.explorer.unwrap_or(true),
            serve: provenix_http::ServeLimits {
                max_connections,
                header_read_timeout: Duration::from_secs(header_timeout),
                ..provenix_http::ServeLimits::default()
            },
            witnesses,
            witness_timeout: Duration::from_millis(witness_timeout),
            data,
            listen,
            database: self.database.clone(),
            origin,
            integrate_interval: Duration::from_millis(interval),
            max_body_bytes: max_body,
            queue_depth: queue,
            read_pool_size: pool,
            lookup_batch_keys,
            request_timeout: Duration::from_secs(timeout),
        })
    }
}

fn signed_note_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = ServerConfig::default().settings().unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.origin, DEFAULT_ORIGIN);
    }

    #[test]
    fn bad_values_say_what_to_do() {
        let bad = |toml: &str| match toml::from_str::<ServerConfig>(toml) {
            Err(e) => e.to_string(),
            Ok(c) => c.settings().unwrap_err().to_string(),
        };
        assert!(bad("listen = \"localhost\"").contains("IP:PORT"));
        assert!(bad("database = \"mysql://x\"").contains("sqlite://PATH or postgres://"));
        assert!(bad("origin = \"a b\"").contains("without spaces"));
        assert!(bad("listne = \"x\"").contains("unknown field"));
        assert!(bad("queue-depth = 0").contains("at least 1"));
        assert!(bad("lookup-batch-keys = 0").contains("1..=1000"));
    }
}
