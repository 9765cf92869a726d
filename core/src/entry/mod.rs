//! The provenance entry: one builder's signed claim about one derivation build.
//!
//! An [`Entry`] is a DSSE envelope whose payload is an in-toto Statement v1 with a SLSA
//! Provenance v1 predicate (DESIGN.md §4). [`Entry::parse`] checks everything the log requires
//! except the signature, which needs the builder's key: [`Entry::verify`].
//!
//! Authenticated vs untrusted: nothing in an entry is trustworthy until `verify` succeeds with a
//! key the caller trusts; after that, the statement says what *that builder* claims, no more.

mod batch;
mod dsse;
mod nix_build;
mod statement;

use std::fmt;
use std::str::FromStr;

pub use batch::{verify_batch, verify_each};
pub use dsse::{pae, DsseSignature, Envelope, PAYLOAD_TYPE};
pub use nix_build::{trace_digest, Dependency, NixBuild, Output, Source};
pub use statement::{
    is_rfc3339, BuildDefinition, BuildMetadata, Builder, Provenance, ResourceDescriptor,
    RunDetails, Statement, BUILDER_ID_PREFIX, BUILD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE,
    TPM_QUOTE_BYPRODUCT,
};

use crate::merkle::{leaf_hash, Hash};
use crate::nix::{is_valid_key_name, NarHash, NixPublicKey, StorePath, StorePathHash};

/// Largest leaf the log takes (tlog-tiles bundles prefix each entry with a u16 length).
pub const MAX_LEAF_BYTES: usize = 65_535;

/// Why an entry was refused. [`EntryError::code`] is the stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("malformed entry: {0}")]
    Malformed(String),
    #[error("entry is {0} bytes; the limit is {MAX_LEAF_BYTES}")]
    TooLarge(usize),
    #[error("signature does not verify")]
    BadSignature,
    #[error("builder {0:?} is not on this log's allow-list")]
    UnknownBuilder(String),
}

impl EntryError {
    /// The stable error code of DESIGN.md §6.
    pub fn code(&self) -> &'static str {
        match self {
            EntryError::Malformed(_) => "malformed",
            EntryError::TooLarge(_) => "too_large",
            EntryError::BadSignature => "bad_signature",
            EntryError::UnknownBuilder(_) => "unknown_builder",
        }
    }
}

/// What the log indexes an entry under, and what lookups ask for.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LookupKey {
    /// Input-addressed output: the store path's hash part.
    Path(StorePathHash),
    /// Content-addressed output: the realisation id `sha256:<hex>!<output>`.
    Realisation(String),
    /// `builder:<key name>`: the TPM enrollment records the log wrote for that builder
    /// ([`crate::enrollment`]). Provenance entries are never indexed under these keys.
    Builder(String),
}

/// Prefix of [`LookupKey::Builder`] keys.
pub const BUILDER_KEY_PREFIX: &str = "builder:";

/// Why a lookup key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lookup key must be a 32-character store path hash part, a realisation id sha256:<64 hex>!<output> or builder:<key name>")]
pub struct BadLookupKey;

impl FromStr for LookupKey {
    type Err = BadLookupKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix(BUILDER_KEY_PREFIX) {
            if !is_valid_key_name(name) {
                return Err(BadLookupKey);
            }
            return Ok(LookupKey::Builder(name.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("sha256:") {
            let (hex, out) = rest.split_once('!').ok_or(BadLookupKey)?;
            NarHash::from_hex(hex).map_err(|_| BadLookupKey)?;
            if out.is_empty()
                || out.len() > 64
                || !out
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
            {
                return Err(BadLookupKey);
            }
            return Ok(LookupKey::Realisation(s.to_owned()));
        }
        s.parse().map(LookupKey::Path).map_err(|_| BadLookupKey)
    }
}

impl fmt::Display for LookupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupKey::Path(h) => h.fmt(f),
            LookupKey::Realisation(id) => f.write_str(id),
            LookupKey::Builder(name) => write!(f, "{BUILDER_KEY_PREFIX}{name}"),
        }
    }
}

impl fmt::Debug for LookupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LookupKey({self})")
    }
}

/// A subject of an entry that names a store path: an output and the NAR hash claimed for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedOutput {
    pub path: StorePath,
    pub nar_hash: NarHash,
    /// `annotations.output` (e.g. `out`), when given.
    pub output: Option<String>,
}

/// A structurally valid entry (signature not yet checked).
#[derive(Clone)]
pub struct Entry {
    envelope: Envelope,
    statement: Statement,
    leaf: Vec<u8>,
    leaf_hash: Hash,
    outputs: Vec<ClaimedOutput>,
    keys: Vec<LookupKey>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("keyid", &self.keyid())
            .field("keys", &self.keys)
            .field("leaf_hash", &self.leaf_hash)
            .finish()
    }
}

impl Entry {
    /// Parses and checks an envelope's JSON: everything the log requires but the signature.
    pub fn parse(json: &[u8]) -> Result<Self, EntryError> {
        Self::from_envelope(Envelope::from_json(json)?)
    }

    /// Checks a decoded envelope.
    pub fn from_envelope(envelope: Envelope) -> Result<Self, EntryError> {
        let [sig] = envelope.signatures.as_slice() else {
            return Err(EntryError::Malformed(format!(
                "envelope must carry exactly one signature, found {}",
                envelope.signatures.len()
            )));
        };
        if !is_valid_key_name(&sig.keyid) {
            return Err(EntryError::Malformed(
                "signature keyid is not a valid key name".into(),
            ));
        }
        if sig.sig.len() != 64 {
            return Err(EntryError::BadSignature);
        }
        if envelope.payload_type != PAYLOAD_TYPE {
            return Err(EntryError::Malformed(format!(
                "payloadType must be {PAYLOAD_TYPE}"
            )));
        }
        let leaf = envelope.canonical_json();
        if leaf.len() > MAX_LEAF_BYTES {
            return Err(EntryError::TooLarge(leaf.len()));
        }
        let statement: Statement = serde_json::from_slice(&envelope.payload)
            .map_err(|e| EntryError::Malformed(format!("statement: {e}")))?;
        if statement.type_ != STATEMENT_TYPE {
            return Err(EntryError::Malformed(format!(
                "_type must be {STATEMENT_TYPE}"
            )));
        }
        if statement.predicate_type != PREDICATE_TYPE {
            return Err(EntryError::Malformed(format!(
                "predicateType must be {PREDICATE_TYPE}"
            )));
        }
        let mut outputs = Vec::new();
        for s in &statement.subject {
            if s.digest.is_empty() {
                return Err(EntryError::Malformed("every subject needs a digest".into()));
            }
            let (Ok(path), Some(hex)) = (s.name.parse::<StorePath>(), s.digest.get("sha256"))
            else {
                continue;
            };
            let nar_hash = NarHash::from_hex(hex).map_err(|_| {
                EntryError::Malformed(
                    "subject digest.sha256 must be 64 lowercase hex characters".into(),
                )
            })?;
            outputs.push(ClaimedOutput {
                path,
                nar_hash,
                output: s
                    .annotations
                    .get("output")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
            });
        }
        if outputs.is_empty() {
            return Err(EntryError::Malformed(
                "need at least one subject naming a store path with digest.sha256".into(),
            ));
        }
        for t in [
            statement
                .predicate
                .run_details
                .metadata
                .started_on
                .as_deref(),
            statement
                .predicate
                .run_details
                .metadata
                .finished_on
                .as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            if !is_rfc3339(t) {
                return Err(EntryError::Malformed(format!(
                    "{t:?} is not an RFC 3339 time"
                )));
            }
        }
        let mut keys: Vec<LookupKey> = outputs
            .iter()
            .map(|o| LookupKey::Path(o.path.hash()))
            .collect();
        for id in statement.drv_output_ids() {
            let key = id
                .parse::<LookupKey>()
                .ok()
                .filter(|k| matches!(k, LookupKey::Realisation(_)))
                .ok_or_else(|| {
                    EntryError::Malformed(format!("drvOutputIds: {id:?} is not a realisation id"))
                })?;
            keys.push(key);
        }
        keys.sort();
        keys.dedup();
        let leaf_hash = leaf_hash(&leaf);
        Ok(Self {
            envelope,
            statement,
            leaf,
            leaf_hash,
            outputs,
            keys,
        })
    }

    /// The signing key's name (the builder name).
    pub fn keyid(&self) -> &str {
        self.envelope
            .signatures
            .first()
            .map(|s| s.keyid.as_str())
            .unwrap_or_default()
    }

    /// Verifies the signature with the builder's key.
    pub fn verify(&self, key: &NixPublicKey) -> Result<(), EntryError> {
        self.envelope.verify(key)
    }

    /// The canonical leaf bytes stored in the log.
    pub fn leaf_bytes(&self) -> &[u8] {
        &self.leaf
    }

    /// Consumes the entry, returning its leaf bytes.
    pub fn into_leaf_bytes(self) -> Vec<u8> {
        self.leaf
    }

    /// SHA-256(0x00 ‖ leaf).
    pub fn leaf_hash(&self) -> Hash {
        self.leaf_hash
    }

    /// The decoded envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The statement (claims; authenticated only after [`Entry::verify`]).
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// Subjects naming store paths, with their claimed NAR hashes.
    pub fn outputs(&self) -> &[ClaimedOutput] {
        &self.outputs
    }

    /// The TPM trace digest of this entry, recomputed from its statement (never read from it).
    pub fn trace_digest(&self) -> [u8; 32] {
        let derivation = self
            .statement
            .derivation()
            .and_then(|d| d.parse::<StorePath>().ok());
        trace_digest(
            self.keyid(),
            derivation.as_ref(),
            &self.outputs,
            self.statement.counter(),
        )
    }

    /// The store paths the builder says its build used, with the NAR hashes it recorded for
    /// them (`resolvedDependencies` naming a store path with a `digest.sha256`; the `.drv` file,
    /// whose digest is of the file rather than a NAR, is left out). Malformed items are skipped:
    /// this is what the entry claims, for comparison with what others agree on.
    pub fn dependencies(&self) -> Vec<(StorePath, NarHash)> {
        let drv = self.statement.derivation();
        self.statement
            .predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .filter(|d| Some(d.name.as_str()) != drv && !d.name.ends_with(".drv"))
            .filter_map(|d| {
                let path = d.name.parse::<StorePath>().ok()?;
                let hash = NarHash::from_hex(d.digest.get("sha256")?).ok()?;
                Some((path, hash))
            })
            .collect()
    }

    /// Keys this entry is indexed under (sorted, unique).
    pub fn keys(&self) -> &[LookupKey] {
        &self.keys
    }
}

#[cfg(test)]
mod tests;
