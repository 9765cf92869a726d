//! [`QuoteBundle`]: the TPM evidence an entry carries, as the `runDetails.byproducts[]`
//! ResourceDescriptor named `tpm2-quote` (format: `docs/tpm-quote.md`).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::alg::HashAlg;
use super::pcr::{PcrBanks, MAX_PCR_INDEX};
use super::quote::{verify_quote, AkTrust, QuoteError, QuotePolicy, VerifiedQuote};
use crate::entry::{Entry, ResourceDescriptor, TPM_QUOTE_BYPRODUCT};

/// `mediaType` of the `tpm2-quote` byproduct.
pub const TPM_QUOTE_MEDIA_TYPE: &str = "application/vnd.provenix.tpm2-quote+json";
/// Version of the annotations layout.
pub const TPM_QUOTE_VERSION: u64 = 1;
/// Limit on each marshalled structure in a bundle (real ones are a few hundred bytes).
const MAX_STRUCTURE_BYTES: usize = 2048;

/// Why a `tpm2-quote` byproduct could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("byproduct is named {0:?}, not {TPM_QUOTE_BYPRODUCT:?}")]
    WrongName(String),
    #[error("mediaType {0:?} is not {TPM_QUOTE_MEDIA_TYPE}")]
    WrongMediaType(String),
    #[error("annotations: {0}")]
    Annotations(String),
    #[error("digest.sha256 is not the SHA-256 of the attest bytes")]
    DigestMismatch,
    #[error("the entry has no {TPM_QUOTE_BYPRODUCT:?} byproduct")]
    Missing,
    #[error("the entry has {0} {TPM_QUOTE_BYPRODUCT:?} byproducts; at most one is allowed")]
    Several(usize),
}

/// The evidence of one quote: marshalled TPM structures plus the claimed PCR values. All of it
/// is untrusted until [`verify_quote`] (or [`verify_entry_quote`]) accepts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteBundle {
    /// `TPMS_ATTEST` bytes exactly as signed.
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// The AK's `TPMT_PUBLIC` (no size prefix).
    pub ak_public: Vec<u8>,
    /// The quoted PCR values, exactly the quote's selection.
    pub pcrs: PcrBanks,
    /// SHA-256 of the boot event log, which travels beside the entry (never inside it).
    pub event_log_sha256: Option<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Annotations {
    version: u64,
    attest: String,
    signature: String,
    ak_public: String,
    pcrs: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_log_sha256: Option<String>,
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, BundleError> {
    let v = STANDARD
        .decode(s)
        .map_err(|e| BundleError::Annotations(format!("{field}: bad base64: {e}")))?;
    if v.len() > MAX_STRUCTURE_BYTES {
        return Err(BundleError::Annotations(format!(
            "{field}: {} bytes exceed {MAX_STRUCTURE_BYTES}",
            v.len()
        )));
    }
    Ok(v)
}

fn lower_hex(field: &str, s: &str, len: usize) -> Result<Vec<u8>, BundleError> {
    let ok = s.len() == 2 * len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err(BundleError::Annotations(format!(
            "{field}: must be {} lowercase hex characters",
            2 * len
        )));
    }
    hex::decode(s).map_err(|e| BundleError::Annotations(format!("{field}: {e}")))
}

impl QuoteBundle {
    /// The byproduct descriptor an entry carries.
    pub fn to_descriptor(&self) -> ResourceDescriptor {
        let pcrs = self
            .pcrs
            .0
            .iter()
            .map(|(h, bank)| {
                (
                    h.name().to_owned(),
                    bank.iter()
                        .map(|(i, v)| (i.to_string(), hex::encode(v)))
                        .collect(),
                )
            })
            .collect();
        let ann = Annotations {
            version: TPM_QUOTE_VERSION,
            attest: STANDARD.encode(&self.attest),
            signature: STANDARD.encode(&self.signature),
            ak_public: STANDARD.encode(&self.ak_public),
            pcrs,
            event_log_sha256: self.event_log_sha256.map(hex::encode),
        };
        let annotations = match serde_json::to_value(ann) {
            Ok(Value::Object(m)) => m,
            // Serialising strings and maps cannot fail.
            _ => Map::new(),
        };
        ResourceDescriptor {
            name: TPM_QUOTE_BYPRODUCT.to_owned(),
            digest: [(
                "sha256".to_owned(),
                hex::encode(Sha256::digest(&self.attest)),
            )]
            .into(),
            media_type: TPM_QUOTE_MEDIA_TYPE.to_owned(),
            annotations,
            ..Default::default()
        }
    }

    /// Reads a `tpm2-quote` byproduct strictly (known fields only, canonical encodings).
    pub fn from_descriptor(d: &ResourceDescriptor) -> Result<Self, BundleError> {
        if d.name != TPM_QUOTE_BYPRODUCT {
            return Err(BundleError::WrongName(d.name.clone()));
        }
        if d.media_type != TPM_QUOTE_MEDIA_TYPE {
            return Err(BundleError::WrongMediaType(d.media_type.clone()));
        }
        let ann: Annotations = serde_json::from_value(Value::Object(d.annotations.clone()))
            .map_err(|e| BundleError::Annotations(e.to_string()))?;
        if ann.version != TPM_QUOTE_VERSION {
            return Err(BundleError::Annotations(format!(
                "version {} is not {TPM_QUOTE_VERSION}",
                ann.version
            )));
        }
        let attest = b64("attest", &ann.attest)?;
        let signature = b64("signature", &ann.signature)?;
        let ak_public = b64("akPublic", &ann.ak_public)?;
        let mut pcrs = PcrBanks::default();
        for (bank, values) in &ann.pcrs {
            let hash: HashAlg = bank
                .parse()
                .map_err(|e| BundleError::Annotations(format!("pcrs: {e}")))?;
            // A bank is listed only with values: an empty one would give a second encoding of
            // the same bundle (found by the `tpm_bundle` fuzz target).
            if values.is_empty() {
                return Err(BundleError::Annotations(format!(
                    "pcrs.{bank}: a bank with no PCR values"
                )));
            }
            for (idx, v) in values {
                let index = idx
                    .parse::<u8>()
                    .ok()
                    .filter(|i| *i <= MAX_PCR_INDEX && i.to_string() == *idx)
                    .ok_or_else(|| {
                        BundleError::Annotations(format!("pcrs.{bank}: {idx:?} is not a PCR index"))
                    })?;
                pcrs.insert(
                    hash,
                    index,
                    lower_hex(&format!("pcrs.{bank}.{idx}"), v, hash.size())?,
                );
            }
        }
        let event_log_sha256 = match &ann.event_log_sha256 {
            None => None,
            Some(s) => {
                let v = lower_hex("eventLogSha256", s, 32)?;
                let mut a = [0u8; 32];
                a.copy_from_slice(&v);
                Some(a)
            }
        };
        match d.digest.get("sha256") {
            Some(h) if *h == hex::encode(Sha256::digest(&attest)) => {}
            _ => return Err(BundleError::DigestMismatch),
        }
        Ok(Self {
            attest,
            signature,
            ak_public,
            pcrs,
            event_log_sha256,
        })
    }

    /// The entry's `tpm2-quote` byproduct, if it has one (refuses several).
    pub fn from_entry(entry: &Entry) -> Result<Option<Self>, BundleError> {
        let found: Vec<&ResourceDescriptor> = entry
            .statement()
            .predicate
            .run_details
            .byproducts
            .iter()
            .filter(|b| b.name == TPM_QUOTE_BYPRODUCT)
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [d] => Self::from_descriptor(d).map(Some),
            more => Err(BundleError::Several(more.len())),
        }
    }
}

/// Why an entry's TPM quote was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryQuoteError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Quote(#[from] QuoteError),
}

impl EntryQuoteError {
    /// A stable, machine-readable name of the failed check.
    pub fn code(&self) -> &'static str {
        match self {
            EntryQuoteError::Bundle(BundleError::Missing) => "tpm_quote_missing",
            EntryQuoteError::Bundle(_) => "tpm_quote_malformed",
            EntryQuoteError::Quote(q) => q.code(),
        }
    }
}

/// Verifies the TPM quote an entry carries: its `extraData` must be the entry's trace digest,
/// recomputed here from the statement ([`Entry::trace_digest`]), never read from the evidence.
///
/// The entry's own signature is not checked here ([`Entry::verify`] with the builder's key), nor
/// is the AK matched to the builder unless `trust.name` is the AK enrolled for that builder.
pub fn verify_entry_quote(
    entry: &Entry,
    trust: &AkTrust,
    policy: &QuotePolicy,
) -> Result<VerifiedQuote, EntryQuoteError> {
    let bundle = QuoteBundle::from_entry(entry)?.ok_or(BundleError::Missing)?;
    Ok(verify_quote(&bundle, &entry.trace_digest(), trust, policy)?)
}
