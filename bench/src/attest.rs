//! `provenix-bench attest`: what TPM attestation costs per entry (issue 5).
//!
//! Starts swtpm with an EK certificate from a local CA (as the tests do), opens it with the
//! producer `provenix push` uses (`provenix::attest::tpm`), creates the EK and an AK, and times:
//!
//! - **quote per entry**: one `Tpm::quote` of the configured PCRs (PCR read, `TPM2_Quote`, the
//!   read-vs-quoted digest check), the TPM-bound part of what `push` adds per entry;
//! - **verification per entry**: `verify_entry_quote` on a signed entry carrying that quote
//!   (bundle parse, trace digest, ECDSA P-256 verify, PCR digest), what the substituter adds per
//!   entry (the enrollment record is verified once per builder, timed separately);
//! - the one-time costs: opening the TPM with EK creation, AK creation, an enrollment record
//!   check (EK chain, binding quote).
//!
//! Needs the `tpm` feature: `cargo run --release -p provenix-bench --features tpm -- attest`.

use std::time::Duration;

/// Options of the attestation benchmark.
#[derive(clap::Args, Debug)]
pub struct AttestArgs {
    /// Quotes to time.
    #[arg(long, default_value_t = 200)]
    pub quotes: usize,
    /// SHA-256 PCRs per quote (0..N); 24 is what verifiers require by default.
    #[arg(long, default_value_t = 24)]
    pub pcrs: u8,
}

#[allow(dead_code)]
fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[allow(dead_code)]
fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[allow(dead_code)]
fn per_sec(d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        1.0 / d.as_secs_f64()
    }
}

#[cfg(not(feature = "tpm"))]
pub fn run(_a: &AttestArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "the attest benchmark needs the TPM producer: cargo run --release -p provenix-bench --features tpm -- attest"
    )
}

#[cfg(feature = "tpm")]
pub fn run(a: &AttestArgs) -> anyhow::Result<()> {
    use std::time::Instant;

    use provenix::attest::tpm::Tpm;
    use provenix_core::entry::{Entry, NixBuild, Output};
    use provenix_core::nix::{NarHash, NixSecretKey};
    use provenix_core::tpm::{
        verify_entry_quote, AkTrust, EkRoots, Name, QuotePolicy, TpmtPublic, TPM_RH_ENDORSEMENT,
    };
    use provenix_e2e::swtpm::Swtpm;

    use crate::stats::{ms, Samples};

    anyhow::ensure!((1..=24).contains(&a.pcrs), "--pcrs must be 1..=24");
    let swtpm = Swtpm::start();
    let t = Instant::now();
    let mut tpm = Tpm::open(&swtpm.tcti())?;
    let open = t.elapsed();
    let t = Instant::now();
    let ak = tpm.create_ak()?;
    let create_ak = t.elapsed();
    let pcrs: Vec<u8> = (0..a.pcrs).collect();

    let key = NixSecretKey::from_seed("bench", [7; 32])?;
    let mut quote_times = Vec::with_capacity(a.quotes);
    let mut entries = Vec::with_capacity(a.quotes);
    for i in 0..a.quotes {
        let path = format!(
            "/nix/store/{}-bench-{i}",
            provenix_core::nix::base32::encode(&[(i % 251) as u8; 20])
        );
        let mut build = NixBuild {
            builder: "bench".into(),
            outputs: vec![Output {
                name: "out".into(),
                path: path.parse()?,
                nar_hash: NarHash::from_bytes([(i % 256) as u8; 32]),
                nar_size: Some(1),
                references: vec![],
            }],
            built_locally: true,
            counter: Some(i as u64),
            ..Default::default()
        };
        let digest = build.trace_digest();
        let t = Instant::now();
        let bundle = tpm.quote(&digest, &pcrs)?;
        quote_times.push(t.elapsed());
        build.byproducts.push(bundle.to_descriptor());
        entries.push(Entry::parse(&build.sign(&key).canonical_json())?);
    }
    let ek_public_bytes = tpm.ek_public()?;
    let ek_public = TpmtPublic::parse(&ek_public_bytes)?;
    let ek_cert = tpm.ek_certificate()?;

    // An enrollment, played locally as the registrar would (challenge, activation, binding
    // quote, log-signed record), to size the record and time its verification.
    let inter = provenix_core::enrollment::pem_ders(&std::fs::read_to_string(
        swtpm.state.intermediate_pem(),
    )?)?;
    let ak_public = ak.public_area()?;
    let nonce = [9u8; 32];
    let t = Instant::now();
    let made = provenix_core::tpm::make_credential(
        &ek_public,
        &ak_public.name(),
        &[1u8; 32],
        &mut rand_core::OsRng,
    )?;
    let make_credential = t.elapsed();
    let t = Instant::now();
    let secret = tpm.activate_credential(&made.credential_blob, &made.encrypted_secret)?;
    let activate = t.elapsed();
    anyhow::ensure!(secret == [1u8; 32], "activation returned another secret");
    let binding = tpm.quote(
        &provenix_core::enrollment::binding_digest(&key.public(), &nonce),
        &pcrs,
    )?;
    drop(tpm);
    let log = provenix_core::checkpoint::LogSigner::generate("bench.example/log")?;
    let payload = provenix_core::enrollment::EnrollmentPayload {
        type_: provenix_core::enrollment::ENROLLMENT_TYPE.into(),
        log: log.name().into(),
        builder: "bench".into(),
        builder_key: key.public().to_string(),
        ek_certificate: b64(&ek_cert),
        ek_intermediates: inter.iter().map(|c| b64(c)).collect(),
        ek_public: b64(&ek_public_bytes),
        ak_public: b64(&ak_public.marshal()),
        ak_name: ak_public.name().to_string(),
        nonce: hex_of(&nonce),
        binding_quote: binding.to_descriptor(),
        builder_signature: b64(
            &key.sign(&provenix_core::enrollment::builder_binding_message(
                "bench",
                &ak_public.name(),
                &ek_public.name(),
                &nonce,
            )),
        ),
        activation: provenix_core::enrollment::Activation {
            method: provenix_core::enrollment::ACTIVATION_METHOD.into(),
            challenge_id: "00".repeat(16),
            challenged_on: "2026-01-01T00:00:00Z".into(),
            activated_on: "2026-01-01T00:00:00Z".into(),
        },
    };
    let record = provenix_core::enrollment::EnrollmentRecord::sign(payload, &log)?;
    let log_key: provenix_core::checkpoint::LogVerifier = log.verifier_key().parse()?;
    let record_roots = EkRoots::from_pem(&std::fs::read_to_string(swtpm.state.root_pem())?)?;
    let t = Instant::now();
    record.verify(&log_key, &key.public(), &record_roots, None, None)?;
    let record_verify = t.elapsed();

    let trust = AkTrust {
        name: Some(ak.public_area()?.name()),
        parent: Some(ek_public.qualified_name(&Name::hierarchy(TPM_RH_ENDORSEMENT))),
        device: None,
    };
    let policy = QuotePolicy {
        pcr_selection: provenix_core::tpm::PcrSelection {
            banks: vec![provenix_core::tpm::PcrBankSelection::new(
                provenix_core::tpm::HashAlg::Sha256,
                pcrs.iter().copied(),
            )],
        },
        allow_unmeasured_boot: true,
        ..QuotePolicy::default()
    };
    let mut verify_times = Vec::with_capacity(entries.len());
    for e in &entries {
        let t = Instant::now();
        verify_entry_quote(e, &trust, &policy)?;
        verify_times.push(t.elapsed());
    }
    // The EK chain check alone.
    let roots = EkRoots::from_pem(&std::fs::read_to_string(swtpm.state.root_pem())?)?;
    let t = Instant::now();
    provenix_core::tpm::verify_ek_certificate(&ek_cert, &inter, &roots, &ek_public, None)?;
    let ek_chain = t.elapsed();

    let q = Samples::new(quote_times);
    let v = Samples::new(verify_times);
    println!("provenix-bench attest: swtpm 0.7.1 (libtpms), tss-esapi 7.7 over libtss2, {} quotes of SHA-256 PCRs 0-{}", a.quotes, a.pcrs - 1);
    println!(
        "  one-time: open TPM + create EK {}, create + load AK {}, EK chain check {}",
        ms(open),
        ms(create_ak),
        ms(ek_chain)
    );
    println!(
        "  enrollment: MakeCredential (registrar) {}, ActivateCredential (TPM) {}, record {} bytes of leaf, record verification (log sig, EK chain, binding quote, builder sig) {}",
        ms(make_credential),
        ms(activate),
        record.leaf_bytes().len(),
        ms(record_verify)
    );
    println!(
        "  quote per entry (PCR read + TPM2_Quote + digest check): median {}, p90 {}, max {} ({:.0} entries/s through one TPM)",
        ms(q.median()),
        ms(q.pct(90.0)),
        ms(q.pct(100.0)),
        per_sec(q.median())
    );
    println!(
        "  verify per entry (verify_entry_quote): median {}, p90 {}, max {}",
        ms(v.median()),
        ms(v.pct(90.0)),
        ms(v.pct(100.0))
    );
    Ok(())
}
