//! The registrar endpoints' refusals, in process (`router()` + `oneshot`) over SQLite. The
//! successful enrollment needs a TPM: `tests/tests/attestation.rs` runs it with swtpm.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use provenix_core::api::{ErrorResponse, SubmitResponse, SubmitResult};
use provenix_core::checkpoint::LogSigner;
use provenix_core::enrollment::{
    challenge_request_message, Activation, ChallengeRequest, DecodedChallengeRequest,
    EnrollRequest, EnrollmentPayload, EnrollmentRecord, ACTIVATION_METHOD, ENROLLMENT_PAYLOAD_TYPE,
    ENROLLMENT_TYPE,
};
use provenix_core::entry::{pae, DsseSignature, Envelope, ResourceDescriptor};
use provenix_core::nix::NixSecretKey;
use provenix_core::tpm::{
    EccCurve, HashAlg, ObjectAttributes, PublicKey, Scheme, SymDef, TpmtPublic,
};
use provenix_e2e::gen;
use provenix_server::api::{router, AppState, Limits};
use provenix_server::log::{Log, LogConfig};
use provenix_server::metrics::Metrics;
use provenix_server::store::Store;
use tower::ServiceExt as _;

struct Fx {
    app: Router,
    signer: LogSigner,
    alpha: NixSecretKey,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url_in(dir.path()), 2)
        .await
        .unwrap();
    let alpha = gen::builder_key("alpha");
    store
        .add_builder(alpha.name(), &alpha.public().to_string())
        .await
        .unwrap();
    let signer = LogSigner::generate("test.example/log").unwrap();
    let log = Log::open(store, signer.clone(), LogConfig::default(), Metrics::new())
        .await
        .unwrap();
    let app = router(AppState {
        explorer: false,
        log,
        limits: Arc::new(Limits::default()),
    });
    Fx {
        app,
        signer,
        alpha,
        _dir: dir,
    }
}

async fn post(app: &Router, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn code(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorResponse>(body)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(body)))
        .error
        .code
}

/// An RSA EK public area (standard template shape) and an ECC AK public area.
fn areas() -> (TpmtPublic, TpmtPublic) {
    let ek = TpmtPublic {
        name_alg: HashAlg::Sha256,
        attributes: ObjectAttributes(
            ObjectAttributes::FIXED_TPM
                | ObjectAttributes::FIXED_PARENT
                | ObjectAttributes::SENSITIVE_DATA_ORIGIN
                | ObjectAttributes::ADMIN_WITH_POLICY
                | ObjectAttributes::RESTRICTED
                | ObjectAttributes::DECRYPT,
        ),
        auth_policy: vec![0x11; 32],
        key: PublicKey::Rsa {
            symmetric: Some(SymDef {
                algorithm: 0x0006,
                key_bits: 128,
                mode: 0x0043,
            }),
            scheme: Scheme::Null,
            key_bits: 2048,
            exponent: 0,
            modulus: vec![0xC5; 256],
        },
    };
    let ak = TpmtPublic {
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
    };
    (ek, ak)
}

fn challenge_body(key: &NixSecretKey, builder: &str, ek_cert: &[u8]) -> Vec<u8> {
    let (ek, ak) = areas();
    let mut d = DecodedChallengeRequest {
        builder: builder.into(),
        ek_certificate: ek_cert.to_vec(),
        ek_intermediates: vec![],
        ek_public_bytes: ek.marshal(),
        ek_public: ek,
        ak_public_bytes: ak.marshal(),
        ak_public: ak,
        signature: vec![],
    };
    d.signature = key.sign(&challenge_request_message(&d)).to_vec();
    serde_json::to_vec(&ChallengeRequest {
        builder: d.builder.clone(),
        ek_certificate: STANDARD.encode(&d.ek_certificate),
        ek_intermediates: vec![],
        ek_public: STANDARD.encode(&d.ek_public_bytes),
        ak_public: STANDARD.encode(&d.ak_public_bytes),
        signature: STANDARD.encode(&d.signature),
    })
    .unwrap()
}

#[tokio::test]
async fn challenge_refusals_have_their_codes() {
    let fx = fixture().await;
    let (s, b) = post(&fx.app, "/v1/attest/challenge", b"{\"builder\":1}".to_vec()).await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "malformed")
    );

    // A builder the log does not allow.
    let stranger = gen::builder_key("stranger");
    let (s, b) = post(
        &fx.app,
        "/v1/attest/challenge",
        challenge_body(&stranger, "stranger", b"not a certificate"),
    )
    .await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "unknown_builder")
    );

    // Signed by another key than the allow-listed one.
    let (s, b) = post(
        &fx.app,
        "/v1/attest/challenge",
        challenge_body(&stranger, "alpha", b"not a certificate"),
    )
    .await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "enrollment_bad_builder_signature")
    );

    // Properly signed, but the EK certificate does not certify the EK.
    let (s, b) = post(
        &fx.app,
        "/v1/attest/challenge",
        challenge_body(&fx.alpha, "alpha", b"not a certificate"),
    )
    .await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "ek_key_mismatch")
    );
}

#[tokio::test]
async fn enroll_needs_a_live_challenge() {
    let fx = fixture().await;
    let req = EnrollRequest {
        challenge_id: "00".repeat(16),
        secret: STANDARD.encode([0u8; 32]),
        binding_quote: ResourceDescriptor::default(),
        builder_signature: STANDARD.encode([0u8; 64]),
    };
    let (s, b) = post(
        &fx.app,
        "/v1/attest/enroll",
        serde_json::to_vec(&req).unwrap(),
    )
    .await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "unknown_challenge")
    );
}

/// Only the registrar writes enrollment records: submitted as an entry, even one signed with
/// the log's own key, it is refused.
#[tokio::test]
async fn enrollment_records_cannot_be_submitted_as_entries() {
    let fx = fixture().await;
    let (ek, ak) = areas();
    let payload = EnrollmentPayload {
        type_: ENROLLMENT_TYPE.into(),
        log: fx.signer.name().into(),
        builder: "alpha".into(),
        builder_key: fx.alpha.public().to_string(),
        ek_certificate: STANDARD.encode(b"x"),
        ek_intermediates: vec![],
        ek_public: STANDARD.encode(ek.marshal()),
        ak_public: STANDARD.encode(ak.marshal()),
        ak_name: ak.name().to_string(),
        nonce: "00".repeat(32),
        binding_quote: provenix_core::tpm::QuoteBundle {
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
            activated_on: "2026-01-01T00:00:00Z".into(),
        },
    };
    let rec = EnrollmentRecord::sign(payload, &fx.signer).unwrap();
    // The same payload signed by an allow-listed builder, with the enrollment payload type.
    let by_alpha = Envelope {
        payload: rec.envelope().payload.clone(),
        payload_type: ENROLLMENT_PAYLOAD_TYPE.into(),
        signatures: vec![DsseSignature {
            keyid: "alpha".into(),
            sig: fx
                .alpha
                .sign(&pae(ENROLLMENT_PAYLOAD_TYPE, &rec.envelope().payload))
                .to_vec(),
        }],
    };
    let mut body = b"{\"entries\":[".to_vec();
    body.extend_from_slice(rec.leaf_bytes());
    body.push(b',');
    body.extend_from_slice(&by_alpha.canonical_json());
    body.extend_from_slice(b"]}");
    let (s, b) = post(&fx.app, "/v1/entries", body).await;
    assert_eq!(s, StatusCode::OK);
    let resp: SubmitResponse = serde_json::from_slice(&b).unwrap();
    assert_eq!(resp.results.len(), 2);
    for (i, r) in resp.results.iter().enumerate() {
        match r {
            SubmitResult::Rejected { error } => assert_eq!(error.code, "malformed", "{i}"),
            other => panic!("{i} accepted: {other:?}"),
        }
    }
    match &resp.results[1] {
        SubmitResult::Rejected { error } => {
            assert!(error.message.contains("payloadType"), "{}", error.message)
        }
        other => panic!("accepted: {other:?}"),
    }
    // And the builder key index stays empty.
    let req = Request::builder()
        .uri("/v1/lookup/builder:alpha")
        .body(Body::empty())
        .unwrap();
    let resp = fx.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["entries"], serde_json::json!([]));
    let req = Request::builder()
        .uri("/v1/lookup/builder:")
        .body(Body::empty())
        .unwrap();
    let resp = fx.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}
