//! `builder.toml`: what `provenix hook` and `provenix push` read (DESIGN.md §11).
//!
//! ```toml
//! key-file = "/var/lib/provenix/alpha.sec"     # Nix secret-key format; its name is the builder name
//! spool = "/var/lib/provenix/spool"
//! logs = ["http://127.0.0.1:8080"]
//! source = { uri = "git+https://github.com/NixOS/nixpkgs", ref = "nixos-24.05" }   # optional
//! store = "local?root=/srv/builder"             # optional: the Nix store `push` queries
//!
//! [push]                                        # optional tunables (defaults shown)
//! batch-size = 500
//! retry-initial-ms = 500
//! retry-max-ms = 60000
//! once-attempts = 5
//! poll-interval-ms = 1000
//! timeout-secs = 30
//! dedup-window = 1000000
//!
//! [tpm]                                         # optional; needs the `tpm` feature
//! tcti = "swtpm:host=127.0.0.1,port=2321"
//! ak-file = "alpha.ak"                          # default: the key file's path + ".ak"
//! ek-intermediates = "ek-intermediates.pem"     # optional: CA certificates between the EK
//!                                               # certificate and its root, sent at enrollment
//! pcrs = [0, 1, 2, …, 23]                       # SHA-256 PCRs to quote (default: 0-23)
//! ```
//!
//! The file is trusted local configuration (written by the operator). Unknown fields are errors,
//! so a typo never silently disables something.

use std::path::{Path, PathBuf};
use std::time::Duration;

use provenix_core::api::MAX_SUBMIT_BATCH;
use provenix_core::nix::NixSecretKey;
use serde::Deserialize;

/// The environment variable `provenix hook` reads the config path from.
pub const CONFIG_ENV: &str = "PROVENIX_CONFIG";

/// Everything in `builder.toml`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BuilderConfig {
    /// The builder's secret key file (Nix binary-cache key format, as `provenix keygen` or
    /// `nix-store --generate-binary-cache-key` write it). The key name is the builder name.
    /// Read by `push` only; the hook never touches it.
    pub key_file: PathBuf,
    /// The spool directory (created by `push`; the hook only writes into it).
    pub spool: PathBuf,
    /// Base URLs of every log the builder submits to. A record leaves the spool only after all
    /// of them acknowledged it.
    pub logs: Vec<String>,
    /// Where the builds' expressions come from (recorded in every entry), optional.
    #[serde(default)]
    pub source: Option<SourceConfig>,
    /// The Nix store `push` queries (a store URI as in `NIX_REMOTE`, e.g.
    /// `local?root=/srv/builder`). Default: the store the hook saw (`$NIX_REMOTE` at build
    /// time), else Nix's default store.
    #[serde(default)]
    pub store: Option<String>,
    /// Directory holding the `nix` binary `push` runs (default: found on `PATH`).
    #[serde(default)]
    pub nix_bin_dir: Option<PathBuf>,
    /// Tunables of `push`.
    #[serde(default)]
    pub push: PushTunables,
    /// TPM 2.0 attestation of the builder: `provenix attest enroll` enrolls its AK with every
    /// log, `push` adds a `tpm2-quote` to every entry (the `tpm` feature).
    #[serde(default)]
    pub tpm: Option<TpmConfig>,
}

/// `source = { … }`: the expression's origin, copied into each entry's
/// `externalParameters.source` (and a `gitCommit` resolved dependency when `git-commit` is set).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceConfig {
    /// e.g. `git+https://github.com/NixOS/nixpkgs`.
    pub uri: String,
    /// Branch or tag, e.g. `nixos-24.05`.
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    /// Attribute built, e.g. `hello`.
    #[serde(default)]
    pub attribute: Option<String>,
    /// Full commit hash (40 or 64 lowercase hex characters).
    #[serde(default)]
    pub git_commit: Option<String>,
}

/// `[push]`: how `provenix push` batches, retries and polls.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PushTunables {
    /// Records prepared per store query and entries per submission (1..=1000; default 500).
    pub batch_size: usize,
    /// First retry delay after a log failed, in ms (default 500); doubles per failure.
    pub retry_initial_ms: u64,
    /// Longest retry delay, in ms (default 60000).
    pub retry_max_ms: u64,
    /// With `--once`: failed attempts per log before giving up and exiting non-zero with the
    /// records kept in the spool (default 5).
    pub once_attempts: u32,
    /// How often the service looks for new hook records, in ms (default 1000).
    pub poll_interval_ms: u64,
    /// Time limit of one HTTP request to a log, in seconds (default 30).
    pub timeout_secs: u64,
    /// How many delivered claims are remembered so that a repeated hook call for an unchanged
    /// build adds no second entry (default 1,000,000; about 65 bytes each on disk).
    pub dedup_window: usize,
}

impl Default for PushTunables {
    fn default() -> Self {
        Self {
            batch_size: 500,
            retry_initial_ms: 500,
            retry_max_ms: 60_000,
            once_attempts: 5,
            poll_interval_ms: 1000,
            timeout_secs: 30,
            dedup_window: 1_000_000,
        }
    }
}

impl PushTunables {
    /// The first retry delay.
    pub fn retry_initial(&self) -> Duration {
        Duration::from_millis(self.retry_initial_ms)
    }
    /// The longest retry delay.
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }
    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    /// The HTTP request time limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// `[tpm]`: which TPM the builder quotes with.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TpmConfig {
    /// TSS2 TCTI string: `device:/dev/tpmrm0`, `swtpm:host=…,port=…`, `mssim:…`, `tabrmd:…`.
    pub tcti: String,
    /// Where the AK's public area and TPM-wrapped private part are kept (made by `provenix
    /// attest enroll`). Default: the key file's path with `.ak` appended.
    #[serde(default)]
    pub ak_file: Option<PathBuf>,
    /// A PEM file of the CA certificates between the EK certificate and its root, presented
    /// at enrollment (real TPMs: the vendor's intermediate CA).
    #[serde(default)]
    pub ek_intermediates: Option<PathBuf>,
    /// The SHA-256 PCRs each quote covers (default 0-23, what verifiers require unless told
    /// otherwise).
    #[serde(default = "all_pcrs")]
    pub pcrs: Vec<u8>,
}

fn all_pcrs() -> Vec<u8> {
    (0..24).collect()
}

impl TpmConfig {
    /// The AK file (resolved; see [`TpmConfig::ak_file`]).
    pub fn ak_path(&self, key_file: &Path) -> PathBuf {
        self.ak_file.clone().unwrap_or_else(|| {
            let mut p = key_file.as_os_str().to_owned();
            p.push(".ak");
            PathBuf::from(p)
        })
    }
}

/// Why a builder config was refused.
#[derive(Debug, thiserror::Error)]
pub enum BuilderConfigError {
    #[error("cannot read builder config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("builder config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("builder config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot read key file {path}: {source}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is not a Nix secret key (NAME:BASE64 of 64 bytes): {message}")]
    KeyFormat { path: PathBuf, message: String },
}

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path)?;
    let mut s = String::new();
    f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut s)?;
    if s.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    Ok(s)
}

impl BuilderConfig {
    /// Reads, parses and validates a builder config (does not read the key file).
    pub fn from_file(path: &Path) -> Result<Self, BuilderConfigError> {
        let text = read_bounded(path).map_err(|source| BuilderConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages and to resolve
    /// relative paths (relative to the config file's directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, BuilderConfigError> {
        let mut cfg: Self = toml::from_str(text).map_err(|e| BuilderConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.key_file = base.join(&cfg.key_file);
        cfg.spool = base.join(&cfg.spool);
        if let Some(d) = &cfg.nix_bin_dir {
            cfg.nix_bin_dir = Some(base.join(d));
        }
        if let Some(t) = &mut cfg.tpm {
            t.ak_file = t.ak_file.as_ref().map(|p| base.join(p));
            t.ek_intermediates = t.ek_intermediates.as_ref().map(|p| base.join(p));
        }
        cfg.validate()
            .map_err(|message| BuilderConfigError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.logs.is_empty() {
            return Err("logs: name at least one log URL".into());
        }
        for (i, l) in self.logs.iter().enumerate() {
            let u = url::Url::parse(l).map_err(|e| format!("logs: {l:?} is not a URL: {e}"))?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(format!("logs: {l:?} must be an http(s) URL"));
            }
            if self.logs[..i].contains(l) {
                return Err(format!("logs: {l:?} is listed twice"));
            }
        }
        if let Some(s) = &self.source {
            if s.uri.trim().is_empty() {
                return Err("source.uri is empty".into());
            }
            if let Some(c) = &s.git_commit {
                if !matches!(c.len(), 40 | 64)
                    || !c.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                {
                    return Err(format!(
                        "source.git-commit {c:?} must be 40 or 64 lowercase hex characters"
                    ));
                }
            }
        }
        if let Some(store) = &self.store {
            crate::nixstore::StoreLocation::parse(Some(store))
                .map_err(|e| format!("store: {e}"))?;
        }
        let p = &self.push;
        if !(1..=MAX_SUBMIT_BATCH).contains(&p.batch_size) {
            return Err(format!(
                "push.batch-size must be 1..={MAX_SUBMIT_BATCH}, not {}",
                p.batch_size
            ));
        }
        if p.retry_initial_ms == 0 || p.retry_max_ms < p.retry_initial_ms {
            return Err("push.retry-initial-ms must be > 0 and <= push.retry-max-ms".into());
        }
        if p.once_attempts == 0 {
            return Err("push.once-attempts must be at least 1".into());
        }
        if p.poll_interval_ms == 0 || p.timeout_secs == 0 {
            return Err("push.poll-interval-ms and push.timeout-secs must be > 0".into());
        }
        if let Some(t) = &self.tpm {
            validate_tcti(&t.tcti)?;
            if t.pcrs.is_empty() || t.pcrs.iter().any(|i| *i > 23) {
                return Err("tpm.pcrs: list PCR indices 0-23".into());
            }
            let mut sorted = t.pcrs.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != t.pcrs.len() {
                return Err("tpm.pcrs lists a PCR twice".into());
            }
        }
        Ok(())
    }

    /// Reads the builder key named by `key-file`.
    pub fn read_key(&self) -> Result<NixSecretKey, BuilderConfigError> {
        let text = read_bounded(&self.key_file).map_err(|source| BuilderConfigError::KeyRead {
            path: self.key_file.clone(),
            source,
        })?;
        text.trim()
            .parse()
            .map_err(
                |e: provenix_core::nix::KeyError| BuilderConfigError::KeyFormat {
                    path: self.key_file.clone(),
                    message: e.to_string(),
                },
            )
    }
}

/// Checks a TCTI string's shape (`device:PATH`, `swtpm:…`, `mssim:…`, `tabrmd[:…]`).
fn validate_tcti(tcti: &str) -> Result<(), String> {
    let (kind, conf) = tcti.split_once(':').unwrap_or((tcti, ""));
    match kind {
        "device" if conf.starts_with('/') => Ok(()),
        "swtpm" | "mssim" | "tabrmd" if !conf.contains(char::is_whitespace) => Ok(()),
        _ => Err(format!(
            "tpm.tcti {tcti:?}: expected device:/dev/tpmrm0, swtpm:host=…,port=…, mssim:… or tabrmd"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn parse(s: &str) -> Result<BuilderConfig, BuilderConfigError> {
        BuilderConfig::parse(s, Path::new("/etc/provenix/builder.toml"))
    }

    const MIN: &str = "key-file = \"alpha.sec\"\nspool = \"/var/spool/provenix\"\nlogs = [\"http://127.0.0.1:8080\"]\n";

    #[test]
    fn minimal_config_gets_defaults_and_relative_paths() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.key_file, Path::new("/etc/provenix/alpha.sec"));
        assert_eq!(c.spool, Path::new("/var/spool/provenix"));
        assert_eq!(c.push, PushTunables::default());
        assert!(c.source.is_none() && c.tpm.is_none() && c.store.is_none());
    }

    #[test]
    fn full_config_parses() {
        let c = parse(&format!(
            "{MIN}source = {{ uri = \"git+https://example.org/x\", ref = \"main\", attribute = \"hello\", git-commit = \"{}\" }}\nstore = \"local?root=/srv/b\"\n[push]\nbatch-size = 1000\nretry-initial-ms = 10\nretry-max-ms = 10\n[tpm]\ntcti = \"swtpm:host=127.0.0.1,port=2321\"\n",
            "a".repeat(40)
        ))
        .unwrap();
        let s = c.source.unwrap();
        assert_eq!(s.reference.as_deref(), Some("main"));
        assert_eq!(s.attribute.as_deref(), Some("hello"));
        assert_eq!(c.push.batch_size, 1000);
        assert_eq!(c.push.once_attempts, 5);
        let t = c.tpm.unwrap();
        assert_eq!(t.tcti, "swtpm:host=127.0.0.1,port=2321");
        assert_eq!(t.pcrs, (0..24).collect::<Vec<u8>>());
        assert_eq!(
            t.ak_path(&c.key_file),
            Path::new("/etc/provenix/alpha.sec.ak")
        );
    }

    #[test]
    fn rejects_bad_configs_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "key-file = \"k\"\nspool = \"s\"\nlogs = []\n",
                "name at least one log URL",
            ),
            (
                "key-file = \"k\"\nspool = \"s\"\nlogs = [\"ftp://x\"]\n",
                "must be an http(s) URL",
            ),
            (
                "key-file = \"k\"\nspool = \"s\"\nlogs = [\"http://a\", \"http://a\"]\n",
                "listed twice",
            ),
            (
                "spool = \"s\"\nlogs = [\"http://a\"]\n",
                "missing field `key-file`",
            ),
            (&format!("{MIN}colour = 1\n"), "unknown field `colour`"),
            (
                &format!("{MIN}[push]\nbatch-size = 0\n"),
                "batch-size must be",
            ),
            (
                &format!("{MIN}[push]\nbatch-size = 1001\n"),
                "batch-size must be",
            ),
            (
                &format!("{MIN}[push]\nbatchsize = 1\n"),
                "unknown field `batchsize`",
            ),
            (
                &format!("{MIN}[push]\nretry-initial-ms = 10\nretry-max-ms = 5\n"),
                "retry-initial-ms",
            ),
            (&format!("{MIN}[tpm]\ntcti = \"usb:x\"\n"), "tpm.tcti"),
            (&format!("{MIN}[tpm]\n"), "missing field `tcti`"),
            (
                &format!("{MIN}[tpm]\ntcti = \"device:/dev/tpmrm0\"\npcrs = [24]\n"),
                "tpm.pcrs",
            ),
            (
                &format!("{MIN}[tpm]\ntcti = \"device:/dev/tpmrm0\"\npcrs = [1, 1]\n"),
                "twice",
            ),
            (
                &format!("{MIN}source = {{ uri = \"x\", git-commit = \"abc\" }}\n"),
                "git-commit",
            ),
            (&format!("{MIN}store = \"ssh://host\"\n"), "store:"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn key_file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BuilderConfig::parse(MIN, &dir.path().join("builder.toml")).unwrap();
        let e = cfg.read_key().unwrap_err().to_string();
        assert!(e.starts_with("cannot read key file "), "{e}");
        std::fs::write(dir.path().join("alpha.sec"), "alpha:AAAA").unwrap();
        let e = cfg.read_key().unwrap_err().to_string();
        assert!(
            e.contains("is not a Nix secret key") && e.contains("64 bytes"),
            "{e}"
        );
        let key = NixSecretKey::from_seed("alpha", [1; 32]).unwrap();
        std::fs::write(dir.path().join("alpha.sec"), key.to_secret_string()).unwrap();
        assert_eq!(cfg.read_key().unwrap().public(), key.public());
    }
}
