//! The JSON bodies of `provenixd`'s HTTP API (DESIGN.md §6), shared by the server and every
//! client, and the client-side checks of what a log returns.
//!
//! Nothing a log sends is trusted: [`LookupResponse::verify`] and friends check the checkpoint
//! signature with the log's key, recompute each leaf hash from the envelope's canonical bytes
//! (the `leafHash` field is ignored), and verify each inclusion proof against that checkpoint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::checkpoint::{CheckpointError, LogVerifier, SignedCheckpoint};
use crate::entry::{Entry, EntryError};
use crate::merkle::{self, Hash, LeafIndex, ProofError};

/// Most entries one `POST /v1/entries` may carry.
pub const MAX_SUBMIT_BATCH: usize = 1000;
/// Most keys one `POST /v1/lookup` may carry.
pub const MAX_LOOKUP_BATCH: usize = 1000;

/// `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// A whole-request error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// `POST /v1/entries` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub entries: Vec<Box<RawValue>>,
}

/// One entry's result in a submission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubmitResult {
    Accepted(Accepted),
    Rejected { error: ErrorBody },
}

/// An accepted entry: durable at `index`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub index: LeafIndex,
    pub leaf_hash: Hash,
    /// The identical envelope was already in the log at `index`.
    pub duplicate: bool,
    /// Only with `?wait=integrated`: proof against the response's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion_proof: Option<Vec<Hash>>,
}

/// `POST /v1/entries` response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// Only with `?wait=integrated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    pub results: Vec<SubmitResult>,
}

/// An entry with its inclusion proof (against a checkpoint given alongside).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvedEntry {
    pub index: LeafIndex,
    pub leaf_hash: Hash,
    pub envelope: Box<RawValue>,
    pub inclusion_proof: Vec<Hash>,
}

/// `GET /v1/entries/{index}` response.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryResponse {
    pub index: LeafIndex,
    pub leaf_hash: Hash,
    pub envelope: Box<RawValue>,
    pub checkpoint: String,
    pub inclusion_proof: Vec<Hash>,
}

/// `GET /v1/lookup/{key}` response.
#[derive(Debug, Serialize, Deserialize)]
pub struct LookupResponse {
    pub checkpoint: String,
    pub entries: Vec<ProvedEntry>,
}

/// `POST /v1/lookup` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchLookupRequest {
    pub keys: Vec<String>,
}

/// `POST /v1/lookup` response.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchLookupResponse {
    pub checkpoint: String,
    pub results: BTreeMap<String, Vec<ProvedEntry>>,
}

/// `GET /v1/proof/consistency` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyResponse {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<Hash>,
}

/// One allow-listed builder key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderInfo {
    pub name: String,
    /// Nix public-key format `name:base64`.
    pub key: String,
}

/// `GET /v1/builders` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildersResponse {
    pub builders: Vec<BuilderInfo>,
}

/// Why a log's answer was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("entry {index}: {error}")]
    Entry { index: LeafIndex, error: EntryError },
    #[error("entry {index}: inclusion proof: {error}")]
    Inclusion { index: LeafIndex, error: ProofError },
}

/// An entry whose inclusion in a log's signed checkpoint has been verified.
/// Its builder signature is *not* checked here (the caller knows which keys it trusts).
#[derive(Debug, Clone)]
pub struct IncludedEntry {
    pub index: LeafIndex,
    pub entry: Entry,
}

impl ProvedEntry {
    /// Parses the envelope, recomputes its leaf hash and checks the proof against `checkpoint`.
    pub fn verify(&self, checkpoint: &SignedCheckpoint) -> Result<IncludedEntry, ResponseError> {
        verify_included(
            self.index,
            &self.envelope,
            &self.inclusion_proof,
            checkpoint,
        )
    }
}

fn verify_included(
    index: LeafIndex,
    envelope: &RawValue,
    proof: &[Hash],
    checkpoint: &SignedCheckpoint,
) -> Result<IncludedEntry, ResponseError> {
    let entry = Entry::parse(envelope.get().as_bytes())
        .map_err(|error| ResponseError::Entry { index, error })?;
    merkle::verify_inclusion(
        &entry.leaf_hash(),
        index,
        checkpoint.size(),
        proof,
        checkpoint.root(),
    )
    .map_err(|error| ResponseError::Inclusion { index, error })?;
    Ok(IncludedEntry { index, entry })
}

impl EntryResponse {
    /// Verifies the checkpoint with `log` and the entry's inclusion in it.
    pub fn verify(
        &self,
        log: &LogVerifier,
    ) -> Result<(SignedCheckpoint, IncludedEntry), ResponseError> {
        let cp = log.verify(&self.checkpoint)?;
        let e = verify_included(self.index, &self.envelope, &self.inclusion_proof, &cp)?;
        Ok((cp, e))
    }
}

impl LookupResponse {
    /// Verifies the checkpoint with `log` and every entry's inclusion in it. Fails as a whole on
    /// the first bad entry: a log that serves one bad proof is not to be believed about the rest.
    pub fn verify(
        &self,
        log: &LogVerifier,
    ) -> Result<(SignedCheckpoint, Vec<IncludedEntry>), ResponseError> {
        let cp = log.verify(&self.checkpoint)?;
        let entries = self
            .entries
            .iter()
            .map(|e| e.verify(&cp))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((cp, entries))
    }
}

impl BatchLookupResponse {
    /// Like [`LookupResponse::verify`], per key.
    #[allow(clippy::type_complexity)]
    pub fn verify(
        &self,
        log: &LogVerifier,
    ) -> Result<(SignedCheckpoint, BTreeMap<String, Vec<IncludedEntry>>), ResponseError> {
        let cp = log.verify(&self.checkpoint)?;
        let mut out = BTreeMap::new();
        for (k, v) in &self.results {
            let entries = v
                .iter()
                .map(|e| e.verify(&cp))
                .collect::<Result<Vec<_>, _>>()?;
            out.insert(k.clone(), entries);
        }
        Ok((cp, out))
    }
}
