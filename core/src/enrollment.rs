//! TPM enrollment records: the second kind of record a log holds, written by the log itself
//! (format and protocol: `docs/attestation.md`).
//!
//! A builder proves to a log, acting as registrar, that its attestation key (AK) lives in the
//! TPM whose endorsement key (EK) certificate it presents: the log challenges the EK with
//! `TPM2_MakeCredential` for the AK's Name ([`crate::tpm::make_credential`]), the TPM answers
//! with `TPM2_ActivateCredential`, and the builder binds its Ed25519 key to the AK both ways (a
//! quote whose qualifying data is [`binding_digest`], and an Ed25519 signature over
//! [`builder_binding_message`]). The log then appends an [`EnrollmentRecord`]: a DSSE envelope
//! **signed by the log's own key** (keyid = the log's name), payload type
//! [`ENROLLMENT_PAYLOAD_TYPE`], indexed under `builder:<name>`
//! ([`crate::entry::LookupKey::Builder`]) and covered by the log's checkpoints like any entry.
//!
//! The log signature states the fact only the log knows (the challenge was answered); a
//! verifier checks everything else itself with its own trust file: the EK chain against its
//! roots, the AK's attributes, the binding quote and the builder signature
//! ([`EnrollmentRecord::verify`]).
//!
//! Trust: a record is untrusted input until [`EnrollmentRecord::verify`] accepts it with the
//! log key, the builder key and the EK roots the caller trusts.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{LogSigner, LogVerifier};
use crate::entry::{pae, DsseSignature, Envelope, ResourceDescriptor, MAX_LEAF_BYTES};
use crate::merkle::{leaf_hash, Hash};
use crate::nix::{is_valid_key_name, NixPublicKey};
use crate::tpm::{
    check_ak, check_ek_certificate_key, pem_certificates, verify_ek_certificate, verify_quote,
    AkTrust, Attest, ClockInfo, EkError, EkRoots, Name, PcrSelection, QuoteBundle, QuoteError,
    QuotePolicy, TpmtPublic, VerifiedEk, TPM_RH_ENDORSEMENT,
};

/// `payloadType` of an enrollment record's DSSE envelope.
pub const ENROLLMENT_PAYLOAD_TYPE: &str = "application/vnd.provenix.tpm-enrollment+json";
/// `_type` of an enrollment record's payload.
pub const ENROLLMENT_TYPE: &str = "https://provenix.dev/tpm-enrollment/v1";
/// The only activation method: `TPM2_MakeCredential` by the log, `TPM2_ActivateCredential` by
/// the builder's TPM.
pub const ACTIVATION_METHOD: &str = "TPM2_ActivateCredential";
/// Size of the log's challenge nonce and of the credential secret.
pub const NONCE_BYTES: usize = 32;
/// Most intermediate certificates a builder may present.
pub const MAX_INTERMEDIATES: usize = 4;
/// Largest certificate or TPM structure accepted in a request or record (decoded).
const MAX_BLOB_BYTES: usize = 16 * 1024;

const BIND_TAG: &[u8] = b"provenix-bind-ed25519-v1\n";
const ENROLL_TAG: &[u8] = b"provenix-enroll-v1\n";
const CHALLENGE_TAG: &[u8] = b"provenix-attest-challenge-v1\n";

/// The qualifying data (`extraData`) of the binding quote: SHA-256 of a tag, the builder's
/// Ed25519 public key (32 bytes) and the log's nonce. The AK thereby vouches for the builder key.
pub fn binding_digest(builder_key: &NixPublicKey, nonce: &[u8; NONCE_BYTES]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(BIND_TAG);
    h.update(builder_key.verifying_key().as_bytes());
    h.update(nonce);
    h.finalize().into()
}

/// What the builder's Ed25519 key signs at enrollment: a tag, the builder name, the AK's Name,
/// the EK's Name and the nonce. The builder key thereby vouches for the AK (and its TPM).
pub fn builder_binding_message(
    builder: &str,
    ak_name: &Name,
    ek_name: &Name,
    nonce: &[u8; NONCE_BYTES],
) -> Vec<u8> {
    let mut m = ENROLL_TAG.to_vec();
    m.extend_from_slice(builder.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(&(ak_name.as_bytes().len() as u16).to_be_bytes());
    m.extend_from_slice(ak_name.as_bytes());
    m.extend_from_slice(&(ek_name.as_bytes().len() as u16).to_be_bytes());
    m.extend_from_slice(ek_name.as_bytes());
    m.extend_from_slice(nonce);
    m
}

/// What the builder's key signs to ask for a challenge: a tag, the builder name and the
/// SHA-256 of each decoded part (EK certificate, intermediates, EK and AK public areas).
pub fn challenge_request_message(req: &DecodedChallengeRequest) -> Vec<u8> {
    let mut m = CHALLENGE_TAG.to_vec();
    m.extend_from_slice(req.builder.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(&Sha256::digest(&req.ek_certificate));
    m.extend_from_slice(&(req.ek_intermediates.len() as u32).to_be_bytes());
    for i in &req.ek_intermediates {
        m.extend_from_slice(&Sha256::digest(i));
    }
    m.extend_from_slice(&Sha256::digest(&req.ek_public_bytes));
    m.extend_from_slice(&Sha256::digest(&req.ak_public_bytes));
    m
}

/// Why an enrollment request or record was refused. [`EnrollmentError::code`] is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentError {
    #[error("malformed enrollment: {0}")]
    Malformed(String),
    #[error("enrollment record is {0} bytes; the limit is {MAX_LEAF_BYTES}")]
    TooLarge(usize),
    #[error("enrollment record is not signed by log {0:?}")]
    LogSignature(String),
    #[error("enrollment record is for builder key {got}, not the configured {expected}")]
    OtherBuilderKey { expected: String, got: String },
    #[error("the builder's Ed25519 signature over the AK binding does not verify")]
    BuilderSignature,
    #[error("EK certificate does not certify the EK public area: {0}")]
    EkKey(EkError),
    #[error("EK certificate: {0}")]
    EkUntrusted(EkError),
    #[error("AK: {0}")]
    Ak(QuoteError),
    #[error("AK {got} is not the AK pinned in the trust file ({expected})")]
    AkNotPinned { expected: Name, got: Name },
    #[error("binding quote ({code}): {0}", code = .0.code())]
    BindingQuote(QuoteError),
}

impl EnrollmentError {
    /// A stable, machine-readable name of the failed check.
    pub fn code(&self) -> &'static str {
        match self {
            EnrollmentError::Malformed(_) => "enrollment_malformed",
            EnrollmentError::TooLarge(_) => "too_large",
            EnrollmentError::LogSignature(_) => "enrollment_bad_log_signature",
            EnrollmentError::OtherBuilderKey { .. } => "enrollment_other_builder_key",
            EnrollmentError::BuilderSignature => "enrollment_bad_builder_signature",
            EnrollmentError::EkKey(_) => "ek_key_mismatch",
            EnrollmentError::EkUntrusted(_) => "ek_untrusted",
            EnrollmentError::Ak(q) => q.code(),
            EnrollmentError::AkNotPinned { .. } => "ak_not_pinned",
            EnrollmentError::BindingQuote(_) => "binding_quote_invalid",
        }
    }
}

fn malformed(m: impl Into<String>) -> EnrollmentError {
    EnrollmentError::Malformed(m.into())
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, EnrollmentError> {
    let v = STANDARD
        .decode(s)
        .map_err(|_| malformed(format!("{field}: not standard base64 with padding")))?;
    if v.len() > MAX_BLOB_BYTES {
        return Err(malformed(format!(
            "{field}: {} bytes exceed {MAX_BLOB_BYTES}",
            v.len()
        )));
    }
    Ok(v)
}

fn hex_fixed<const N: usize>(field: &str, s: &str) -> Result<[u8; N], EnrollmentError> {
    let mut out = [0u8; N];
    let lower = s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if s.len() != 2 * N || !lower || hex::decode_to_slice(s, &mut out).is_err() {
        return Err(malformed(format!(
            "{field}: must be {} lowercase hex characters",
            2 * N
        )));
    }
    Ok(out)
}

// ---- the registrar protocol's bodies (POST /v1/attest/challenge, POST /v1/attest/enroll) ----

/// `POST /v1/attest/challenge` body. Binary fields are standard base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChallengeRequest {
    /// The builder's key name (must be on the log's allow-list).
    pub builder: String,
    /// DER of the EK certificate (as read from TPM NV; zero padding allowed).
    pub ek_certificate: String,
    /// DER of intermediate CA certificates up to (not including) a root, if any.
    #[serde(default)]
    pub ek_intermediates: Vec<String>,
    /// The EK's `TPMT_PUBLIC`.
    pub ek_public: String,
    /// The AK's `TPMT_PUBLIC`.
    pub ak_public: String,
    /// Ed25519 signature by the builder key over [`challenge_request_message`].
    pub signature: String,
}

/// A [`ChallengeRequest`] with its parts decoded and parsed (not yet verified).
#[derive(Clone, Debug)]
pub struct DecodedChallengeRequest {
    pub builder: String,
    pub ek_certificate: Vec<u8>,
    pub ek_intermediates: Vec<Vec<u8>>,
    pub ek_public_bytes: Vec<u8>,
    pub ek_public: TpmtPublic,
    pub ak_public_bytes: Vec<u8>,
    pub ak_public: TpmtPublic,
    pub signature: Vec<u8>,
}

impl ChallengeRequest {
    /// Decodes and parses every part strictly (sizes bounded).
    pub fn decode(&self) -> Result<DecodedChallengeRequest, EnrollmentError> {
        if !is_valid_key_name(&self.builder) {
            return Err(malformed("builder: not a valid key name"));
        }
        if self.ek_intermediates.len() > MAX_INTERMEDIATES {
            return Err(malformed(format!(
                "ekIntermediates: more than {MAX_INTERMEDIATES}"
            )));
        }
        let ek_public_bytes = b64("ekPublic", &self.ek_public)?;
        let ak_public_bytes = b64("akPublic", &self.ak_public)?;
        Ok(DecodedChallengeRequest {
            builder: self.builder.clone(),
            ek_certificate: b64("ekCertificate", &self.ek_certificate)?,
            ek_intermediates: self
                .ek_intermediates
                .iter()
                .map(|c| b64("ekIntermediates", c))
                .collect::<Result<_, _>>()?,
            ek_public: TpmtPublic::parse(&ek_public_bytes)
                .map_err(|e| malformed(format!("ekPublic: {e}")))?,
            ek_public_bytes,
            ak_public: TpmtPublic::parse(&ak_public_bytes)
                .map_err(|e| malformed(format!("akPublic: {e}")))?,
            ak_public_bytes,
            signature: b64("signature", &self.signature)?,
        })
    }
}

impl DecodedChallengeRequest {
    /// The registrar's checks before it challenges: the builder signature, the EK
    /// certificate certifies the EK public area (no chain: that is the verifiers' call), the
    /// AK is a restricted, TPM-resident signing key.
    pub fn check(&self, builder_key: &NixPublicKey) -> Result<(), EnrollmentError> {
        if builder_key.name() != self.builder
            || !builder_key.verify(&challenge_request_message(self), &self.signature)
        {
            return Err(EnrollmentError::BuilderSignature);
        }
        check_ek_certificate_key(&self.ek_certificate, &self.ek_public)
            .map_err(EnrollmentError::EkKey)?;
        check_ak(&self.ak_public).map_err(EnrollmentError::Ak)
    }
}

/// `POST /v1/attest/challenge` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChallengeResponse {
    /// Opaque id to quote in `POST /v1/attest/enroll`.
    pub challenge_id: String,
    /// `TPM2B_ID_OBJECT` body (base64) for `TPM2_ActivateCredential`.
    pub credential_blob: String,
    /// `TPM2B_ENCRYPTED_SECRET` body (base64).
    pub encrypted_secret: String,
    /// The nonce the binding quote and signature must cover (64 lowercase hex).
    pub nonce: String,
    /// Seconds until the challenge expires.
    pub expires_in_secs: u64,
}

/// `POST /v1/attest/enroll` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnrollRequest {
    pub challenge_id: String,
    /// The secret `TPM2_ActivateCredential` recovered (base64).
    pub secret: String,
    /// The binding quote (a `tpm2-quote` descriptor) with extraData = [`binding_digest`].
    pub binding_quote: ResourceDescriptor,
    /// Ed25519 signature by the builder key over [`builder_binding_message`] (base64).
    pub builder_signature: String,
}

/// `POST /v1/attest/enroll` response: where the record landed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollResponse {
    pub index: u64,
    pub leaf_hash: Hash,
    /// The same record was already in the log.
    pub duplicate: bool,
    /// The record (DSSE envelope as a JSON object).
    pub envelope: Box<serde_json::value::RawValue>,
}

// ---- the record ----

/// What the log attests about the activation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Activation {
    /// [`ACTIVATION_METHOD`].
    pub method: String,
    /// The challenge's id.
    pub challenge_id: String,
    /// RFC 3339 time the challenge was issued.
    pub challenged_on: String,
    /// RFC 3339 time the correct secret came back.
    pub activated_on: String,
}

/// The payload of an enrollment record (JSON; binary fields standard base64).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnrollmentPayload {
    /// [`ENROLLMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// Name (checkpoint origin) of the log that ran the challenge and signed the record.
    pub log: String,
    /// The builder's key name.
    pub builder: String,
    /// The builder's Ed25519 public key, Nix format.
    pub builder_key: String,
    /// DER of the EK certificate.
    pub ek_certificate: String,
    /// DER of the intermediates the builder presented.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ek_intermediates: Vec<String>,
    /// The EK's `TPMT_PUBLIC`.
    pub ek_public: String,
    /// The AK's `TPMT_PUBLIC`.
    pub ak_public: String,
    /// The AK's Name (hex), recomputed and compared when parsed.
    pub ak_name: String,
    /// The challenge nonce (hex).
    pub nonce: String,
    /// The binding quote.
    pub binding_quote: ResourceDescriptor,
    /// The builder's Ed25519 signature over [`builder_binding_message`].
    pub builder_signature: String,
    pub activation: Activation,
}

/// A parsed enrollment record (structure checked; nothing verified yet).
#[derive(Clone, Debug)]
pub struct EnrollmentRecord {
    envelope: Envelope,
    payload: EnrollmentPayload,
    leaf: Vec<u8>,
    leaf_hash: Hash,
    builder_key: NixPublicKey,
    ek_certificate: Vec<u8>,
    ek_intermediates: Vec<Vec<u8>>,
    ek_public: TpmtPublic,
    ak_public: TpmtPublic,
    ak_name: Name,
    nonce: [u8; NONCE_BYTES],
    binding: QuoteBundle,
    builder_signature: Vec<u8>,
}

/// An enrollment record that passed [`EnrollmentRecord::verify`].
#[derive(Clone, Debug)]
pub struct VerifiedEnrollment {
    pub builder: String,
    /// The enrolled AK's Name: entries' quotes must be signed by this AK.
    pub ak_name: Name,
    /// The EK, its certificate verified against the caller's roots. Its qualified name is the
    /// parent qualified name of the AK ([`AkTrust::parent`]).
    pub ek: VerifiedEk,
    /// The log that ran the challenge.
    pub log: String,
    pub activated_on: String,
    /// The TPM clock at enrollment (from the binding quote).
    pub clock: ClockInfo,
}

impl VerifiedEnrollment {
    /// What [`crate::tpm::verify_quote`] needs to check an entry's quote against this AK.
    pub fn ak_trust(&self) -> AkTrust {
        AkTrust {
            name: Some(self.ak_name.clone()),
            parent: Some(self.ek.qualified_name.clone()),
            device: self.ek.device.clone(),
        }
    }
}

impl EnrollmentRecord {
    /// Builds and signs a record with the log's key (the registrar, after a successful
    /// activation). The payload is checked as [`EnrollmentRecord::parse`] would.
    pub fn sign(payload: EnrollmentPayload, log: &LogSigner) -> Result<Self, EnrollmentError> {
        let body = serde_json::to_vec(&payload).map_err(|e| malformed(e.to_string()))?;
        let sig = log
            .sign_message(&pae(ENROLLMENT_PAYLOAD_TYPE, &body))
            .map_err(|e| malformed(format!("log key: {e}")))?;
        Self::from_envelope(Envelope {
            payload: body,
            payload_type: ENROLLMENT_PAYLOAD_TYPE.to_owned(),
            signatures: vec![DsseSignature {
                keyid: log.name().to_owned(),
                sig: sig.to_vec(),
            }],
        })
    }

    /// Parses a record's envelope JSON (as a log serves it) strictly.
    pub fn parse(json: &[u8]) -> Result<Self, EnrollmentError> {
        let envelope = Envelope::from_json(json).map_err(|e| malformed(e.to_string()))?;
        Self::from_envelope(envelope)
    }

    /// Checks a decoded envelope's structure.
    pub fn from_envelope(envelope: Envelope) -> Result<Self, EnrollmentError> {
        let [sig] = envelope.signatures.as_slice() else {
            return Err(malformed("envelope must carry exactly one signature"));
        };
        if !crate::checkpoint::is_valid_log_name(&sig.keyid) || sig.sig.len() != 64 {
            return Err(malformed("signature keyid or length"));
        }
        if envelope.payload_type != ENROLLMENT_PAYLOAD_TYPE {
            return Err(malformed(format!(
                "payloadType must be {ENROLLMENT_PAYLOAD_TYPE}"
            )));
        }
        let leaf = envelope.canonical_json();
        if leaf.len() > MAX_LEAF_BYTES {
            return Err(EnrollmentError::TooLarge(leaf.len()));
        }
        let payload: EnrollmentPayload = serde_json::from_slice(&envelope.payload)
            .map_err(|e| malformed(format!("payload: {e}")))?;
        if payload.type_ != ENROLLMENT_TYPE {
            return Err(malformed(format!("_type must be {ENROLLMENT_TYPE}")));
        }
        if payload.log != sig.keyid {
            return Err(malformed("`log` is not the signing key's name"));
        }
        let builder_key: NixPublicKey = payload
            .builder_key
            .parse()
            .map_err(|e| malformed(format!("builderKey: {e}")))?;
        if builder_key.name() != payload.builder {
            return Err(malformed("builderKey is not named `builder`"));
        }
        if payload.ek_intermediates.len() > MAX_INTERMEDIATES {
            return Err(malformed("too many ekIntermediates"));
        }
        let ek_public = TpmtPublic::parse(&b64("ekPublic", &payload.ek_public)?)
            .map_err(|e| malformed(format!("ekPublic: {e}")))?;
        let ak_public = TpmtPublic::parse(&b64("akPublic", &payload.ak_public)?)
            .map_err(|e| malformed(format!("akPublic: {e}")))?;
        let ak_name = ak_public.name();
        if payload.ak_name != ak_name.to_string() {
            return Err(malformed("akName is not the Name of akPublic"));
        }
        let binding = QuoteBundle::from_descriptor(&payload.binding_quote)
            .map_err(|e| malformed(format!("bindingQuote: {e}")))?;
        if binding.ak_public != ak_public.marshal() {
            return Err(malformed("bindingQuote.akPublic is not akPublic"));
        }
        if payload.activation.method != ACTIVATION_METHOD
            || !crate::entry::is_rfc3339(&payload.activation.challenged_on)
            || !crate::entry::is_rfc3339(&payload.activation.activated_on)
        {
            return Err(malformed("activation: unknown method or bad times"));
        }
        let leaf_hash = leaf_hash(&leaf);
        Ok(Self {
            ek_certificate: b64("ekCertificate", &payload.ek_certificate)?,
            ek_intermediates: payload
                .ek_intermediates
                .iter()
                .map(|c| b64("ekIntermediates", c))
                .collect::<Result<_, _>>()?,
            nonce: hex_fixed("nonce", &payload.nonce)?,
            builder_signature: b64("builderSignature", &payload.builder_signature)?,
            envelope,
            payload,
            leaf,
            leaf_hash,
            builder_key,
            ek_public,
            ak_public,
            ak_name,
            binding,
        })
    }

    /// The builder this record enrolls.
    pub fn builder(&self) -> &str {
        &self.payload.builder
    }

    /// The enrolled AK's Name (claimed until verified).
    pub fn ak_name(&self) -> &Name {
        &self.ak_name
    }

    /// The payload.
    pub fn payload(&self) -> &EnrollmentPayload {
        &self.payload
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The builder key the record binds.
    pub fn builder_key(&self) -> &NixPublicKey {
        &self.builder_key
    }

    /// The canonical leaf bytes.
    pub fn leaf_bytes(&self) -> &[u8] {
        &self.leaf
    }

    /// SHA-256(0x00 ‖ leaf).
    pub fn leaf_hash(&self) -> Hash {
        self.leaf_hash
    }

    /// The log's signature over the record (the activation fact).
    pub fn verify_log_signature(&self, log: &LogVerifier) -> Result<(), EnrollmentError> {
        let ok = self.envelope.signatures.first().is_some_and(|s| {
            s.keyid == log.name()
                && log.verify_message(
                    &pae(&self.envelope.payload_type, &self.envelope.payload),
                    &s.sig,
                )
        });
        if ok {
            Ok(())
        } else {
            Err(EnrollmentError::LogSignature(log.name().to_owned()))
        }
    }

    /// The checks that need no trust anchor, shared by the registrar and verifiers: the EK
    /// certificate certifies the EK, the AK is an attestation key, the builder's signature
    /// binds the AK and the binding quote (by that AK, under that EK, with extraData =
    /// [`binding_digest`]) binds the builder key. Returns the binding quote's clock.
    pub fn check_binding(&self) -> Result<ClockInfo, EnrollmentError> {
        check_binding_parts(
            &self.payload.builder,
            &self.builder_key,
            &self.ek_certificate,
            &self.ek_public,
            &self.ak_public,
            &self.nonce,
            &self.binding,
            &self.builder_signature,
        )
    }

    /// Verifies the record for a verifier: signed by `log` (the activation fact), for exactly
    /// `builder_key`, the EK certificate chains to `roots` (valid at `now_unix` when given),
    /// the AK equals `pinned_ak` when the trust file pins one, and [`Self::check_binding`].
    pub fn verify(
        &self,
        log: &LogVerifier,
        builder_key: &NixPublicKey,
        roots: &EkRoots,
        now_unix: Option<u64>,
        pinned_ak: Option<&Name>,
    ) -> Result<VerifiedEnrollment, EnrollmentError> {
        self.verify_log_signature(log)?;
        if self.builder_key != *builder_key {
            return Err(EnrollmentError::OtherBuilderKey {
                expected: builder_key.to_string(),
                got: self.builder_key.to_string(),
            });
        }
        if let Some(pin) = pinned_ak {
            if *pin != self.ak_name {
                return Err(EnrollmentError::AkNotPinned {
                    expected: pin.clone(),
                    got: self.ak_name.clone(),
                });
            }
        }
        let clock = self.check_binding()?;
        let ek = verify_ek_certificate(
            &self.ek_certificate,
            &self.ek_intermediates,
            roots,
            &self.ek_public,
            now_unix,
        )
        .map_err(EnrollmentError::EkUntrusted)?;
        Ok(VerifiedEnrollment {
            builder: self.payload.builder.clone(),
            ak_name: self.ak_name.clone(),
            ek,
            log: self.payload.log.clone(),
            activated_on: self.payload.activation.activated_on.clone(),
            clock,
        })
    }
}

/// [`EnrollmentRecord::check_binding`] on loose parts (the registrar checks these before it
/// writes the record).
#[allow(clippy::too_many_arguments)]
pub fn check_binding_parts(
    builder: &str,
    builder_key: &NixPublicKey,
    ek_certificate: &[u8],
    ek_public: &TpmtPublic,
    ak_public: &TpmtPublic,
    nonce: &[u8; NONCE_BYTES],
    binding: &QuoteBundle,
    builder_signature: &[u8],
) -> Result<ClockInfo, EnrollmentError> {
    check_ek_certificate_key(ek_certificate, ek_public).map_err(EnrollmentError::EkKey)?;
    check_ak(ak_public).map_err(EnrollmentError::Ak)?;
    let ak_name = ak_public.name();
    let ek_name = ek_public.name();
    let msg = builder_binding_message(builder, &ak_name, &ek_name, nonce);
    if builder_key.name() != builder || !builder_key.verify(&msg, builder_signature) {
        return Err(EnrollmentError::BuilderSignature);
    }
    if binding.ak_public != ak_public.marshal() {
        return Err(malformed(
            "the binding quote is not by the AK being enrolled",
        ));
    }
    // The binding quote proves the AK signed the binding; its PCRs describe the boot at
    // enrollment and are not judged here (entries' quotes are). Its selection is its own.
    let selection = Attest::parse(&binding.attest)
        .map(|a| a.quote.pcr_select)
        .unwrap_or_else(|_| PcrSelection::default());
    let policy = QuotePolicy {
        pcr_selection: selection,
        allow_unmeasured_boot: true,
        ..QuotePolicy::default()
    };
    let trust = AkTrust {
        name: Some(ak_name),
        parent: Some(ek_public.qualified_name(&Name::hierarchy(TPM_RH_ENDORSEMENT))),
        device: None,
    };
    let verified = verify_quote(
        binding,
        &binding_digest(builder_key, nonce),
        &trust,
        &policy,
    )
    .map_err(EnrollmentError::BindingQuote)?;
    Ok(verified.attest.clock_info)
}

/// Reads EK root CAs from PEM texts (a trust file's `ek-roots` files, read by the caller).
pub fn ek_roots_from_pems<'a>(pems: impl IntoIterator<Item = &'a str>) -> Result<EkRoots, EkError> {
    let mut roots = EkRoots::default();
    for pem in pems {
        roots.add_pem(pem)?;
    }
    Ok(roots)
}

/// The DER certificates of a PEM text (e.g. a builder's EK intermediates file).
pub fn pem_ders(pem: &str) -> Result<Vec<Vec<u8>>, EnrollmentError> {
    pem_certificates(pem).map_err(malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::nix::NixSecretKey;
    use crate::tpm::{EccCurve, HashAlg, ObjectAttributes, PublicKey, Scheme};

    fn ak() -> TpmtPublic {
        TpmtPublic {
            name_alg: HashAlg::Sha256,
            attributes: ObjectAttributes(
                ObjectAttributes::FIXED_TPM
                    | ObjectAttributes::FIXED_PARENT
                    | ObjectAttributes::SENSITIVE_DATA_ORIGIN
                    | ObjectAttributes::USER_WITH_AUTH
                    | ObjectAttributes::RESTRICTED
                    | ObjectAttributes::SIGN,
            ),
            auth_policy: vec![],
            key: PublicKey::Ecc {
                symmetric: None,
                scheme: Scheme::Ecdsa(HashAlg::Sha256),
                curve: EccCurve::NIST_P256,
                kdf: None,
                x: vec![1; 32],
                y: vec![2; 32],
            },
        }
    }

    fn payload(log: &LogSigner, key: &NixSecretKey) -> EnrollmentPayload {
        let ak = ak();
        EnrollmentPayload {
            type_: ENROLLMENT_TYPE.into(),
            log: log.name().into(),
            builder: key.name().into(),
            builder_key: key.public().to_string(),
            ek_certificate: STANDARD.encode(b"cert"),
            ek_intermediates: vec![],
            ek_public: STANDARD.encode(ak.marshal()),
            ak_public: STANDARD.encode(ak.marshal()),
            ak_name: ak.name().to_string(),
            nonce: "ab".repeat(32),
            binding_quote: QuoteBundle {
                attest: vec![1],
                signature: vec![2],
                ak_public: ak.marshal(),
                pcrs: Default::default(),
                event_log_sha256: None,
            }
            .to_descriptor(),
            builder_signature: STANDARD.encode([0u8; 64]),
            activation: Activation {
                method: ACTIVATION_METHOD.into(),
                challenge_id: "00".repeat(16),
                challenged_on: "2026-01-01T00:00:00Z".into(),
                activated_on: "2026-01-01T00:00:01Z".into(),
            },
        }
    }

    #[test]
    fn signed_records_round_trip_and_only_the_log_key_verifies_them() {
        let log = LogSigner::generate("log.example/a").unwrap();
        let key = NixSecretKey::from_seed("alpha", [1; 32]).unwrap();
        let rec = EnrollmentRecord::sign(payload(&log, &key), &log).unwrap();
        let back = EnrollmentRecord::parse(rec.leaf_bytes()).unwrap();
        assert_eq!(back.leaf_hash(), rec.leaf_hash());
        assert_eq!(back.builder(), "alpha");
        assert_eq!(back.envelope().payload_type, ENROLLMENT_PAYLOAD_TYPE);
        let v: LogVerifier = log.verifier_key().parse().unwrap();
        back.verify_log_signature(&v).unwrap();
        let other: LogVerifier = LogSigner::generate("log.example/a")
            .unwrap()
            .verifier_key()
            .parse()
            .unwrap();
        assert_eq!(
            back.verify_log_signature(&other).unwrap_err().code(),
            "enrollment_bad_log_signature"
        );
        // Checks that come before the binding: the builder key, then the pinned AK.
        let roots = EkRoots::default();
        let beta = NixSecretKey::from_seed("alpha", [2; 32]).unwrap();
        assert_eq!(
            back.verify(&v, &beta.public(), &roots, None, None)
                .unwrap_err()
                .code(),
            "enrollment_other_builder_key"
        );
        let pin = Name(vec![0, 0x0b, 9, 9]);
        assert_eq!(
            back.verify(&v, &key.public(), &roots, None, Some(&pin))
                .unwrap_err()
                .code(),
            "ak_not_pinned"
        );
        // Then the binding: this synthetic EK certificate is not one.
        assert_eq!(
            back.verify(&v, &key.public(), &roots, None, None)
                .unwrap_err()
                .code(),
            "ek_key_mismatch"
        );
    }

    #[test]
    fn parse_is_strict() {
        let log = LogSigner::generate("log.example").unwrap();
        let key = NixSecretKey::from_seed("alpha", [1; 32]).unwrap();
        let bad = |f: &dyn Fn(&mut EnrollmentPayload)| {
            let mut p = payload(&log, &key);
            f(&mut p);
            EnrollmentRecord::sign(p, &log).unwrap_err().code()
        };
        assert_eq!(bad(&|p| p.type_ = "x".into()), "enrollment_malformed");
        assert_eq!(bad(&|p| p.log = "other".into()), "enrollment_malformed");
        assert_eq!(
            bad(&|p| p.ak_name = "000b00".into()),
            "enrollment_malformed"
        );
        assert_eq!(bad(&|p| p.nonce = "AB".repeat(32)), "enrollment_malformed");
        assert_eq!(
            bad(&|p| p.activation.method = "trust me".into()),
            "enrollment_malformed"
        );
        assert_eq!(bad(&|p| p.builder = "beta".into()), "enrollment_malformed");
        // Unknown fields in the payload.
        let rec = EnrollmentRecord::sign(payload(&log, &key), &log).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&rec.envelope().payload).unwrap();
        v["extra"] = serde_json::json!(1);
        let env = Envelope {
            payload: serde_json::to_vec(&v).unwrap(),
            ..rec.envelope().clone()
        };
        assert_eq!(
            EnrollmentRecord::from_envelope(env).unwrap_err().code(),
            "enrollment_malformed"
        );
        // A provenance payload type is not an enrollment.
        let env = Envelope {
            payload_type: crate::entry::PAYLOAD_TYPE.into(),
            ..rec.envelope().clone()
        };
        assert!(EnrollmentRecord::from_envelope(env).is_err());
    }

    #[test]
    fn binding_digests_commit_to_key_and_nonce() {
        let a = NixSecretKey::from_seed("alpha", [1; 32]).unwrap().public();
        let b = NixSecretKey::from_seed("alpha", [2; 32]).unwrap().public();
        let d = binding_digest(&a, &[0; 32]);
        assert_ne!(d, binding_digest(&b, &[0; 32]));
        assert_ne!(d, binding_digest(&a, &[1; 32]));
        let n = Name(vec![0, 0x0b, 1]);
        let m = Name(vec![0, 0x0b, 2]);
        assert_ne!(
            builder_binding_message("alpha", &n, &m, &[0; 32]),
            builder_binding_message("alpha", &m, &n, &[0; 32])
        );
    }
}
