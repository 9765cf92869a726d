//! The public TPM vectors in `../shared/vectors/tpm/` (real data from go-attestation) through
//! provenix's verifier and event-log replayer. Set `PROVENIX_VECTORS` to point elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use provenix_core::tpm::{
    verify_quote, AkTrust, Attest, EventLog, EventLogError, EventLogFormat, HashAlg, PcrAllowList,
    PcrBanks, PcrSelection, QuoteBundle, QuoteError, QuotePolicy, Signature, TpmtPublic,
};

fn dir() -> PathBuf {
    let dir = std::env::var_os("PROVENIX_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"))
        .join("tpm");
    assert!(dir.is_dir(), "TPM vectors not found at {}", dir.display());
    dir
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap()
}

/// `gcp.pcrs.txt`: "<alg> <index> <hex>" per line; `<alg>` is Go's `crypto.Hash` number
/// (3 = SHA-1, 5 = SHA-256), not a TPM algorithm id.
fn gcp_pcrs() -> PcrBanks {
    let mut out = PcrBanks::default();
    for line in String::from_utf8(read("gcp.pcrs.txt")).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let alg = match f[0] {
            "3" => HashAlg::Sha1,
            "5" => HashAlg::Sha256,
            other => panic!("unknown bank {other}"),
        };
        out.insert(alg, f[1].parse().unwrap(), hex::decode(f[2]).unwrap());
    }
    out
}

fn gcp_bundle() -> QuoteBundle {
    QuoteBundle {
        attest: read("gcp.quote.msg"),
        signature: read("gcp.quote.sig"),
        ak_public: read("gcp.ak.pub"),
        pcrs: gcp_pcrs(),
        event_log_sha256: None,
    }
}

fn gcp_policy() -> QuotePolicy {
    QuotePolicy {
        pcr_selection: PcrSelection::full_bank(HashAlg::Sha1),
        allow_sha1: true,
        ..QuotePolicy::default()
    }
}

/// `*.rust.txt` / `*.tools.txt`: "  <alg>:" then "    <index> : 0x<hex>" lines.
fn expected_replay(name: &str) -> PcrBanks {
    let text = String::from_utf8(read(name)).unwrap();
    let mut out = PcrBanks::default();
    let mut bank = None;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(alg) = t.strip_suffix(':') {
            bank = Some(alg.parse::<HashAlg>().unwrap());
            continue;
        }
        let (idx, val) = t.split_once(':').unwrap();
        let val = val.trim().strip_prefix("0x").unwrap();
        out.insert(
            bank.unwrap(),
            idx.trim().parse().unwrap(),
            hex::decode(val).unwrap(),
        );
    }
    out
}

#[test]
fn gcp_structures_parse_and_remarshal_byte_exactly() {
    let ak = TpmtPublic::parse(&read("gcp.ak.pub")).unwrap();
    assert_eq!(ak.marshal(), read("gcp.ak.pub"));
    let attest = Attest::parse(&read("gcp.quote.msg")).unwrap();
    assert_eq!(attest.marshal(), read("gcp.quote.msg"));
    let sig = Signature::parse(&read("gcp.quote.sig")).unwrap();
    assert_eq!(sig.marshal(), read("gcp.quote.sig"));
    assert_eq!(sig.hash(), HashAlg::Sha1);
    assert!(attest.extra_data.is_empty());
    assert!(attest.clock_info.safe);
    assert_eq!(
        attest.quote.pcr_select,
        PcrSelection::full_bank(HashAlg::Sha1)
    );
}

#[test]
fn gcp_quote_verifies_only_when_sha1_is_allowed() {
    let v = verify_quote(&gcp_bundle(), &[], &AkTrust::default(), &gcp_policy()).unwrap();
    assert_eq!(v.pcrs, gcp_pcrs());
    assert!(!v.parent_checked);

    let strict = QuotePolicy {
        allow_sha1: false,
        ..gcp_policy()
    };
    assert_eq!(
        verify_quote(&gcp_bundle(), &[], &AkTrust::default(), &strict).unwrap_err(),
        QuoteError::Sha1NotAllowed
    );
    // The default policy also wants the SHA-256 bank: SHA-1 is refused first.
    assert_eq!(
        verify_quote(
            &gcp_bundle(),
            &[],
            &AkTrust::default(),
            &QuotePolicy::default()
        )
        .unwrap_err(),
        QuoteError::Sha1NotAllowed
    );
}

#[test]
fn gcp_quote_negative_cases() {
    let trust = AkTrust::default();
    // Any PCR value changed: the digest no longer matches.
    let mut b = gcp_bundle();
    b.pcrs.insert(HashAlg::Sha1, 7, vec![0u8; 20]);
    assert_eq!(
        verify_quote(&b, &[], &trust, &gcp_policy()).unwrap_err(),
        QuoteError::PcrDigestMismatch
    );
    // A flipped bit in the attest bytes: the signature fails.
    let mut b = gcp_bundle();
    let last = b.attest.len() - 1;
    b.attest[last] ^= 1;
    assert_eq!(
        verify_quote(&b, &[], &trust, &gcp_policy()).unwrap_err(),
        QuoteError::BadSignature
    );
    // Caller expects a nonce the quote does not carry.
    assert_eq!(
        verify_quote(&gcp_bundle(), &[7u8; 32], &trust, &gcp_policy())
            .unwrap_err()
            .code(),
        "extra_data_mismatch"
    );
    // Golden values: the true PCR 0 passes, another value is refused.
    let mut policy = gcp_policy();
    let pcr0 = hex::encode(gcp_pcrs().get(HashAlg::Sha1, 0).unwrap());
    policy.pcr_allow_list =
        PcrAllowList::from_policy([("sha1:0", pcr0.as_str())], HashAlg::Sha256).unwrap();
    verify_quote(&gcp_bundle(), &[], &trust, &policy).unwrap();
    policy.pcr_allow_list = PcrAllowList::from_policy(
        [("0", "00000000000000000000000000000000000000aa")],
        HashAlg::Sha1,
    )
    .unwrap();
    assert_eq!(
        verify_quote(&gcp_bundle(), &[], &trust, &policy).unwrap_err(),
        QuoteError::PcrNotAllowed {
            hash: HashAlg::Sha1,
            index: 0,
            got: pcr0
        }
    );
    // A policy asking for a subset of PCRs refuses the full-bank quote (exact selection).
    let subset = QuotePolicy {
        pcr_selection: PcrSelection {
            banks: vec![provenix_core::tpm::PcrBankSelection::new(
                HashAlg::Sha1,
                0..8,
            )],
        },
        ..gcp_policy()
    };
    assert_eq!(
        verify_quote(&gcp_bundle(), &[], &trust, &subset)
            .unwrap_err()
            .code(),
        "pcr_selection_mismatch"
    );
    // Enrolled AK Name differs.
    let other = AkTrust {
        name: Some(provenix_core::tpm::Name(vec![0, 0x0b, 1, 2])),
        ..AkTrust::default()
    };
    assert_eq!(
        verify_quote(&gcp_bundle(), &[], &other, &gcp_policy())
            .unwrap_err()
            .code(),
        "ak_not_enrolled"
    );
}

#[test]
fn gcp_descriptor_round_trip() {
    let b = QuoteBundle {
        event_log_sha256: Some([9u8; 32]),
        ..gcp_bundle()
    };
    let d = b.to_descriptor();
    assert_eq!(QuoteBundle::from_descriptor(&d).unwrap(), b);
    let json = serde_json::to_string(&d).unwrap();
    let back: provenix_core::entry::ResourceDescriptor = serde_json::from_str(&json).unwrap();
    assert_eq!(QuoteBundle::from_descriptor(&back).unwrap(), b);
}

fn check_replay(log_name: &str, format: EventLogFormat) {
    let log = EventLog::parse(&read(log_name)).unwrap();
    assert_eq!(log.format, format);
    let replayed = log.replay();
    for reference in ["rust", "tools"] {
        let expected = expected_replay(&format!("{log_name}.{reference}.txt"));
        // The reference files list non-empty banks only.
        let got: BTreeMap<_, _> = replayed
            .0
            .iter()
            .filter(|(h, _)| expected.0.contains_key(h))
            .map(|(h, b)| (*h, b.clone()))
            .collect();
        assert_eq!(got, expected.0, "{log_name} vs {reference}");
        assert!(!expected.0.is_empty());
    }
}

#[test]
fn crypto_agile_log_replays_to_reference_values() {
    check_replay("crypto_agile_eventlog", EventLogFormat::CryptoAgile);
}

#[test]
fn ubuntu_log_replays_to_reference_values() {
    check_replay(
        "ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
        EventLogFormat::CryptoAgile,
    );
}

#[test]
fn legacy_windows_log_replays_to_reference_values() {
    check_replay("win.log", EventLogFormat::LegacySha1);
}

/// The Windows log is the boot log of the GCP quote: replaying it reproduces every quoted PCR
/// (PCRs without events hold their initial values).
#[test]
fn windows_log_reproduces_the_gcp_quote() {
    let v = verify_quote(&gcp_bundle(), &[], &AkTrust::default(), &gcp_policy()).unwrap();
    let log = EventLog::parse(&read("win.log")).unwrap();
    log.check_against(&v.pcrs, 0..24).unwrap();

    // Another log does not.
    let other = EventLog::parse(&read("ubuntu_2104_shielded_vm_no_secure_boot_eventlog")).unwrap();
    assert!(matches!(
        other.check_against(&v.pcrs, 0..24).unwrap_err(),
        EventLogError::ReplayMismatch {
            hash: HashAlg::Sha1,
            index: 0,
            ..
        }
    ));
}

#[test]
fn event_logs_refuse_tampering() {
    let good = read("crypto_agile_eventlog");
    // Truncated anywhere: an error, never a panic (and never a silently shorter log unless the
    // cut falls exactly between events).
    let full = EventLog::parse(&good).unwrap();
    for cut in (0..good.len()).step_by(7) {
        if let Ok(l) = EventLog::parse(&good[..cut]) {
            assert!(l.events.len() < full.events.len());
        }
    }
    // An unknown event type is refused: the 2nd event's type field (after the 32-byte header
    // event prefix and its data) is overwritten.
    let header_len = 32 + u32::from_le_bytes(good[28..32].try_into().unwrap()) as usize;
    let mut bad = good.clone();
    bad[header_len + 4..header_len + 8].copy_from_slice(&0x7777_0000u32.to_le_bytes());
    assert_eq!(
        EventLog::parse(&bad).unwrap_err(),
        EventLogError::UnknownEventType {
            index: 1,
            event_type: 0x7777_0000
        }
    );
    // A PCR index out of range.
    let mut bad = good.clone();
    bad[header_len..header_len + 4].copy_from_slice(&40u32.to_le_bytes());
    assert_eq!(
        EventLog::parse(&bad).unwrap_err(),
        EventLogError::BadPcr { index: 1, pcr: 40 }
    );
}
