//! The spool's record formats, parsed by `provenix push` from files the hook and earlier pushes
//! wrote: hook records (journal lines) and pending batches (JSON lines).
//!
//! Self-contained on purpose (std, serde and serde_json only, nothing from this crate): the
//! fuzz target `spool_records` compiles this very file (`fuzz/`, `docs/fuzzing.md`) without
//! building the whole client.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What `provenix hook` records for one finished build. Written by the hook from Nix's
/// environment: trusted local data, but still parsed strictly by `push`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HookRecord {
    /// Record format version (1).
    pub v: u32,
    /// `$DRV_PATH`.
    pub drv_path: String,
    /// `$OUT_PATHS` split on spaces (empty on Nix 2.8.0, which never fills it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_paths: Vec<String>,
    /// `$NIX_REMOTE` when set: the store the build ran in, so `push` queries the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// When the hook ran (the outputs were registered just before): Unix time in ns.
    pub finished_ns: u64,
    /// When the build started, if known (creation time of Nix's build log): Unix time in ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ns: Option<u64>,
}

impl HookRecord {
    /// Parses one journal line strictly (known fields only, version 1), or says why not.
    pub fn parse(line: &str) -> Result<Self, String> {
        let r: Self = serde_json::from_str(line).map_err(|e| format!("not a hook record: {e}"))?;
        if r.v == 1 {
            Ok(r)
        } else {
            Err(format!("unknown hook record version {}", r.v))
        }
    }
}

/// The non-empty lines of a journal. A last line without its newline was torn by a crash
/// mid-write: it is returned as is (and fails to parse). Bytes that are not UTF-8 are replaced
/// (such a line fails to parse too).
pub fn journal_lines(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// One prepared entry: a claim, its counter and the signed envelope, exactly as submitted.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRecord {
    /// Hex SHA-256 of the claim (the statement without counter and times).
    pub claim: String,
    /// The builder counter in the envelope.
    pub counter: u64,
    /// The derivation (for messages).
    pub drv: String,
    /// The canonical DSSE envelope (the log leaf).
    pub envelope: Box<RawValue>,
}

impl PendingRecord {
    /// Parses a whole pending batch file (one record per non-empty line); any bad line fails
    /// the batch, with the reason.
    pub fn parse_batch(bytes: &[u8]) -> Result<Vec<Self>, String> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).map_err(|e| e.to_string()))
            .collect()
    }
}
