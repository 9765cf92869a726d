//! The producer and the verifier together, in process, against swtpm: the registrar protocol
//! played locally (our `TPM2_MakeCredential`, the TPM's activation, the binding quote, a
//! log-signed enrollment record), then [`TpmAttestationVerifier`] on entries quoted by the AK,
//! including the TPM-clock order check. Needs the `tpm` feature and swtpm.

#![cfg(feature = "tpm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provenix::attest::tpm::Tpm;
use provenix::quorum::attest::{Fetched, TpmAttestationVerifier};
use provenix::quorum::AttestationVerifier;
use provenix_core::checkpoint::{LogSigner, LogVerifier};
use provenix_core::enrollment::{
    binding_digest, builder_binding_message, Activation, EnrollmentPayload, EnrollmentRecord,
    ACTIVATION_METHOD, ENROLLMENT_TYPE,
};
use provenix_core::entry::{Entry, NixBuild, Output};
use provenix_core::nix::{base32, NarHash, NixSecretKey};
use provenix_core::policy::{Attestation, TrustConfig};
use provenix_core::tpm::{make_credential, pem_certificates, TpmtPublic};
use provenix_e2e::swtpm::Swtpm;

const PCRS: [u8; 24] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];

/// Enrolls the TPM's AK for `key` with a log signed by `log` (the registrar's steps, locally).
fn enroll(tpm: &mut Tpm, swtpm: &Swtpm, key: &NixSecretKey, log: &LogSigner) -> EnrollmentRecord {
    let ak = tpm.create_ak().unwrap();
    let ak_public = ak.public_area().unwrap();
    let ek_public_bytes = tpm.ek_public().unwrap();
    let ek_public = TpmtPublic::parse(&ek_public_bytes).unwrap();
    let secret = [42u8; 32];
    let nonce = [7u8; 32];
    let made = make_credential(
        &ek_public,
        &ak_public.name(),
        &secret,
        &mut rand_core::OsRng,
    )
    .unwrap();
    let got = tpm
        .activate_credential(&made.credential_blob, &made.encrypted_secret)
        .unwrap();
    assert_eq!(got, secret);
    let binding = tpm
        .quote(&binding_digest(&key.public(), &nonce), &PCRS)
        .unwrap();
    let sig = key.sign(&builder_binding_message(
        key.name(),
        &ak_public.name(),
        &ek_public.name(),
        &nonce,
    ));
    let inter = pem_certificates(&std::fs::read_to_string(swtpm.state.intermediate_pem()).unwrap())
        .unwrap();
    let payload = EnrollmentPayload {
        type_: ENROLLMENT_TYPE.into(),
        log: log.name().into(),
        builder: key.name().into(),
        builder_key: key.public().to_string(),
        ek_certificate: STANDARD.encode(tpm.ek_certificate().unwrap()),
        ek_intermediates: inter.iter().map(|c| STANDARD.encode(c)).collect(),
        ek_public: STANDARD.encode(&ek_public_bytes),
        ak_public: STANDARD.encode(ak_public.marshal()),
        ak_name: ak_public.name().to_string(),
        nonce: hex::encode(nonce),
        binding_quote: binding.to_descriptor(),
        builder_signature: STANDARD.encode(sig),
        activation: Activation {
            method: ACTIVATION_METHOD.into(),
            challenge_id: "00".repeat(16),
            challenged_on: "2026-01-01T00:00:00Z".into(),
            activated_on: "2026-01-01T00:00:01Z".into(),
        },
    };
    let rec = EnrollmentRecord::sign(payload, log).unwrap();
    rec.check_binding().unwrap();
    rec
}

/// An entry by `key` for a made-up output, quoted by the TPM's loaded AK.
fn quoted_entry(tpm: &mut Tpm, key: &NixSecretKey, n: u8, counter: u64) -> Entry {
    let mut build = NixBuild {
        builder: key.name().into(),
        outputs: vec![Output {
            name: "out".into(),
            path: format!("/nix/store/{}-x{n}", base32::encode(&[n; 20]))
                .parse()
                .unwrap(),
            nar_hash: NarHash::from_bytes([n; 32]),
            nar_size: Some(1),
            references: vec![],
        }],
        built_locally: true,
        counter: Some(counter),
        ..Default::default()
    };
    let q = tpm.quote(&build.trace_digest(), &PCRS).unwrap();
    build.byproducts.push(q.to_descriptor());
    Entry::parse(&build.sign(key).canonical_json()).unwrap()
}

#[test]
fn enrolled_ak_quotes_verify_and_the_clock_must_follow_the_counter() {
    if !provenix_e2e::swtpm::tools_present() {
        return;
    }
    let swtpm = Swtpm::start();
    let key = NixSecretKey::from_seed("alpha", [5; 32]).unwrap();
    let log = LogSigner::generate("test.example/log").unwrap();
    let log_key: LogVerifier = log.verifier_key().parse().unwrap();
    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    let rec = enroll(&mut tpm, &swtpm, &key, &log);

    let trust = |extra: &str| {
        TrustConfig::parse(&format!(
            "[[log]]\nurl = \"http://127.0.0.1:1\"\nkey = {:?}\n\n[[builder]]\nname = \"alpha\"\nkey = {:?}\ntpm = {{ ek-roots = [{:?}], allow-unmeasured-boot = true{extra} }}\n\n[policy]\nthreshold = \"1 of [alpha]\"\nrequire-attestation = true\n",
            log.verifier_key(),
            key.public().to_string(),
            swtpm.state.root_pem().display().to_string(),
        ))
        .unwrap()
    };
    let config = trust("");
    let builder = &config.builders[0];
    let v = TpmAttestationVerifier::from_config(&config)
        .unwrap()
        .unwrap();

    // Entries quoted in counter order (5, then 6); one quoted later with a lower counter (3).
    let e5 = quoted_entry(&mut tpm, &key, 1, 5);
    let e6 = quoted_entry(&mut tpm, &key, 2, 6);
    let e3 = quoted_entry(&mut tpm, &key, 3, 3);

    // Before the enrollment record is known: not enrolled.
    match v.verify(builder, &e5) {
        Attestation::Failed(r) => assert!(r.starts_with("not_enrolled"), "{r}"),
        other => panic!("{other:?}"),
    }
    assert!(v.wanted_keys().contains(&"builder:alpha".to_owned()));
    let g = v.generation();
    v.learn(
        &log_key,
        "builder:alpha",
        vec![Fetched::Record {
            index: 0,
            record: Box::new(rec.clone()),
        }],
    );
    assert!(v.generation() > g, "new enrollment, new generation");
    assert_eq!(v.enrollments("alpha").len(), 1);

    assert_eq!(v.verify(builder, &e5), Attestation::Verified);
    assert_eq!(v.verify(builder, &e6), Attestation::Verified);
    // Seen twice: the same clock for the same counter is fine.
    assert_eq!(v.verify(builder, &e6), Attestation::Verified);
    match v.verify(builder, &e3) {
        Attestation::Failed(r) => assert!(r.starts_with("clock_regression"), "{r}"),
        other => panic!("{other:?}"),
    }

    // Another log's key did not sign the record: refused, with the reason kept for entries.
    let other_log: LogVerifier = LogSigner::generate("other.example/log")
        .unwrap()
        .verifier_key()
        .parse()
        .unwrap();
    let v2 = TpmAttestationVerifier::from_config(&config)
        .unwrap()
        .unwrap();
    v2.learn(
        &other_log,
        "builder:alpha",
        vec![Fetched::Record {
            index: 9,
            record: Box::new(rec.clone()),
        }],
    );
    match v2.verify(builder, &e5) {
        Attestation::Failed(r) => assert!(
            r.starts_with("not_enrolled") && r.contains("enrollment_bad_log_signature"),
            "{r}"
        ),
        other => panic!("{other:?}"),
    }

    // A record with another builder's key in it does not enroll alpha.
    let beta = NixSecretKey::from_seed("alpha", [6; 32]).unwrap();
    drop(tpm); // swtpm serves one client at a time
    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    let rec_beta = enroll(&mut tpm, &swtpm, &beta, &log);
    let v3 = TpmAttestationVerifier::from_config(&config)
        .unwrap()
        .unwrap();
    v3.learn(
        &log_key,
        "builder:alpha",
        vec![Fetched::Record {
            index: 1,
            record: Box::new(rec_beta),
        }],
    );
    assert!(v3.enrollments("alpha").is_empty());
    let e7 = quoted_entry(&mut tpm, &key, 4, 7);
    match v3.verify(builder, &e7) {
        Attestation::Failed(r) => assert!(r.contains("enrollment_other_builder_key"), "{r}"),
        other => panic!("{other:?}"),
    }
}
