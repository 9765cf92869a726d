//! The log as TPM registrar (as Keylime's registrar): `POST /v1/attest/challenge` and
//! `POST /v1/attest/enroll` (`docs/api.md`, protocol in `docs/attestation.md`).
//!
//! 1. **Challenge.** An allow-listed builder sends its EK certificate (and intermediates), the
//!    EK and AK public areas, signed with its Ed25519 key. The log checks the signature, that
//!    the certificate certifies that EK (no chain: trust anchors are the verifiers' business)
//!    and that the AK is a restricted, TPM-resident signing key; then it runs
//!    `TPM2_MakeCredential` (pure Rust, [`provenix_core::tpm::make_credential`]) for a random
//!    32-byte secret against the EK and the AK's Name, and answers with the credential blob,
//!    the encrypted seed, a nonce and a challenge id. Pending challenges live in memory (at
//!    most [`MAX_PENDING`], for [`CHALLENGE_TTL`]), are single-use and are lost on restart (the
//!    builder asks again).
//! 2. **Enroll.** The builder returns the secret its TPM recovered with
//!    `TPM2_ActivateCredential`, a quote by the AK whose qualifying data binds its Ed25519 key
//!    and the nonce, and an Ed25519 signature binding the AK. If everything verifies, the log
//!    appends an enrollment record ([`EnrollmentRecord`], signed with the log's key, indexed
//!    under `builder:<name>`), waits for a checkpoint covering it, and answers with its index.
//!
//! Everything a builder sends is untrusted; the only authenticated inputs are the log's own
//! allow-list (the builder key) and the secret's round trip through the TPM.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provenix_core::enrollment::{
    check_binding_parts, Activation, ChallengeRequest, ChallengeResponse, DecodedChallengeRequest,
    EnrollRequest, EnrollResponse, EnrollmentPayload, EnrollmentRecord, ACTIVATION_METHOD,
    ENROLLMENT_TYPE, NONCE_BYTES,
};
use provenix_core::entry::LookupKey;
use provenix_core::tpm::{make_credential, QuoteBundle};
use rand_core::{OsRng, RngCore as _};
use serde_json::value::RawValue;

use crate::api::AppState;
use crate::error::AppError;
use crate::log::{Log, Validated};

/// How long a challenge can be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Most challenges pending at once (beyond that: 503, retry later).
pub const MAX_PENDING: usize = 1024;
/// Largest request body of these endpoints.
const MAX_BODY: usize = 256 * 1024;
/// How long `enroll` waits for a checkpoint covering the new record.
const WAIT_INTEGRATED: Duration = Duration::from_secs(10);

struct Pending {
    request: DecodedChallengeRequest,
    secret: [u8; 32],
    nonce: [u8; NONCE_BYTES],
    issued: String,
    expires: Instant,
}

/// The registrar's state: the log it writes to and the pending challenges.
pub struct Registrar {
    log: Log,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar").finish_non_exhaustive()
    }
}

/// The registrar's routes, sharing `state`'s log (merged into [`crate::api::router`]).
pub fn router(state: &AppState) -> Router<AppState> {
    let reg = Arc::new(Registrar {
        log: state.log.clone(),
        pending: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/v1/attest/challenge", post(challenge))
        .route("/v1/attest/enroll", post(enroll))
        .with_state(reg)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

async fn json_body<T: serde::de::DeserializeOwned>(body: Body, what: &str) -> Result<T, AppError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            AppError::TooLarge(format!("request body is over {MAX_BODY} bytes"))
        } else {
            AppError::bad("malformed", format!("could not read the request body: {e}"))
        }
    })?;
    crate::api::json_object(&bytes, what)
}

fn enrollment_error(e: provenix_core::enrollment::EnrollmentError) -> AppError {
    AppError::bad(e.code(), e.to_string())
}

async fn challenge(
    State(reg): State<Arc<Registrar>>,
    body: Body,
) -> Result<Json<ChallengeResponse>, AppError> {
    let req: ChallengeRequest = json_body(body, "a challenge request").await?;
    let decoded = req.decode().map_err(enrollment_error)?;
    let key = reg.log.builder_key(&decoded.builder).ok_or_else(|| {
        AppError::bad(
            "unknown_builder",
            format!(
                "builder {:?} is not on this log's allow-list",
                decoded.builder
            ),
        )
    })?;
    decoded.check(&key).map_err(enrollment_error)?;

    let mut secret = [0u8; 32];
    let mut nonce = [0u8; NONCE_BYTES];
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut secret);
    OsRng.fill_bytes(&mut nonce);
    OsRng.fill_bytes(&mut id);
    let made = make_credential(
        &decoded.ek_public,
        &decoded.ak_public.name(),
        &secret,
        &mut OsRng,
    )
    .map_err(|e| AppError::bad("unsupported_ek", e.to_string()))?;
    let id = hex::encode(id);
    {
        let mut pending = reg.pending.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        pending.retain(|_, p| p.expires > now);
        if pending.len() >= MAX_PENDING {
            return Err(AppError::Overloaded);
        }
        pending.insert(
            id.clone(),
            Pending {
                request: decoded,
                secret,
                nonce,
                issued: now_rfc3339(),
                expires: now + CHALLENGE_TTL,
            },
        );
    }
    Ok(Json(ChallengeResponse {
        challenge_id: id,
        credential_blob: STANDARD.encode(&made.credential_blob),
        encrypted_secret: STANDARD.encode(&made.encrypted_secret),
        nonce: hex::encode(nonce),
        expires_in_secs: CHALLENGE_TTL.as_secs(),
    }))
}

/// Constant-time equality of two secrets.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn enroll(
    State(reg): State<Arc<Registrar>>,
    body: Body,
) -> Result<Json<EnrollResponse>, AppError> {
    let req: EnrollRequest = json_body(body, "an enroll request").await?;
    // Single use: the challenge is gone whatever happens next.
    let pending = reg
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&req.challenge_id)
        .filter(|p| p.expires > Instant::now())
        .ok_or_else(|| {
            AppError::bad(
                "unknown_challenge",
                "no such challenge (expired, already used, or issued before a restart): ask for a new one",
            )
        })?;
    let secret = STANDARD
        .decode(&req.secret)
        .map_err(|_| AppError::bad("malformed", "secret: not standard base64"))?;
    if !same_secret(&secret, &pending.secret) {
        return Err(AppError::bad(
            "activation_failed",
            "the secret is not the one the credential carried: the AK is not in the TPM of that EK",
        ));
    }
    let r = &pending.request;
    let key = reg.log.builder_key(&r.builder).ok_or_else(|| {
        AppError::bad(
            "unknown_builder",
            format!("builder {:?} is not on this log's allow-list", r.builder),
        )
    })?;
    let binding = QuoteBundle::from_descriptor(&req.binding_quote)
        .map_err(|e| AppError::bad("malformed", format!("bindingQuote: {e}")))?;
    let builder_signature = STANDARD
        .decode(&req.builder_signature)
        .map_err(|_| AppError::bad("malformed", "builderSignature: not standard base64"))?;
    check_binding_parts(
        &r.builder,
        &key,
        &r.ek_certificate,
        &r.ek_public,
        &r.ak_public,
        &pending.nonce,
        &binding,
        &builder_signature,
    )
    .map_err(enrollment_error)?;

    let payload = EnrollmentPayload {
        type_: ENROLLMENT_TYPE.to_owned(),
        log: reg.log.signer().name().to_owned(),
        builder: r.builder.clone(),
        builder_key: key.to_string(),
        ek_certificate: STANDARD.encode(&r.ek_certificate),
        ek_intermediates: r
            .ek_intermediates
            .iter()
            .map(|c| STANDARD.encode(c))
            .collect(),
        ek_public: STANDARD.encode(&r.ek_public_bytes),
        ak_public: STANDARD.encode(&r.ak_public_bytes),
        ak_name: r.ak_public.name().to_string(),
        nonce: hex::encode(pending.nonce),
        binding_quote: binding.to_descriptor(),
        builder_signature: STANDARD.encode(&builder_signature),
        activation: Activation {
            method: ACTIVATION_METHOD.to_owned(),
            challenge_id: req.challenge_id.clone(),
            challenged_on: pending.issued.clone(),
            activated_on: now_rfc3339(),
        },
    };
    let record = EnrollmentRecord::sign(payload, reg.log.signer()).map_err(enrollment_error)?;
    let validated = Validated {
        leaf: record.leaf_bytes().to_vec(),
        leaf_hash: record.leaf_hash(),
        keys: vec![LookupKey::Builder(r.builder.clone()).to_string()],
    };
    let assigned = reg
        .log
        .submit(vec![validated])
        .await?
        .pop()
        .ok_or_else(|| AppError::Internal("sequencer returned no result".into()))?;
    reg.log.metrics().entry("enrollment");
    tracing::info!(builder = %r.builder, ak = %r.ak_public.name(), index = assigned.index, "TPM enrollment recorded");
    // So that a lookup right after this answer finds the record.
    let _ = reg
        .log
        .wait_integrated(assigned.index, WAIT_INTEGRATED)
        .await;
    let envelope = RawValue::from_string(
        String::from_utf8(record.leaf_bytes().to_vec())
            .map_err(|_| AppError::Internal("record is not UTF-8".into()))?,
    )
    .map_err(|_| AppError::Internal("record is not JSON".into()))?;
    Ok(Json(EnrollResponse {
        index: assigned.index,
        leaf_hash: assigned.leaf_hash,
        duplicate: assigned.duplicate,
        envelope,
    }))
}
