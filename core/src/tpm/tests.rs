//! Unit tests: every verifier check with a software P-256 "AK" (real TPM data is in
//! `core/tests/tpm_vectors.rs` and `core/tests/tpm_swtpm.rs`), parser robustness (truncation,
//! extension, bit flips, arbitrary bytes).

use std::sync::Arc;

use ecdsa::signature::hazmat::PrehashSigner;
use proptest::prelude::*;

use super::*;
use crate::entry::{Entry, NixBuild, Output};
use crate::nix::{NixSecretKey, StorePath};

const AK_ATTRS: u32 = ObjectAttributes::FIXED_TPM
    | ObjectAttributes::FIXED_PARENT
    | ObjectAttributes::SENSITIVE_DATA_ORIGIN
    | ObjectAttributes::USER_WITH_AUTH
    | ObjectAttributes::RESTRICTED
    | ObjectAttributes::SIGN;

struct SoftAk {
    sk: p256::ecdsa::SigningKey,
    public: TpmtPublic,
}

fn soft_ak_with(attrs: u32, scheme: Scheme, name_alg: HashAlg, seed: u8) -> SoftAk {
    let sk = p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).unwrap();
    let point = sk.verifying_key().to_encoded_point(false);
    let public = TpmtPublic {
        name_alg,
        attributes: ObjectAttributes(attrs),
        auth_policy: vec![],
        key: PublicKey::Ecc {
            symmetric: None,
            scheme,
            curve: EccCurve::NIST_P256,
            kdf: None,
            x: point.x().unwrap().to_vec(),
            y: point.y().unwrap().to_vec(),
        },
    };
    SoftAk { sk, public }
}

fn soft_ak() -> SoftAk {
    soft_ak_with(AK_ATTRS, Scheme::Ecdsa(HashAlg::Sha256), HashAlg::Sha256, 7)
}

fn sign(sk: &p256::ecdsa::SigningKey, msg: &[u8], hash: HashAlg) -> Signature {
    let sig: p256::ecdsa::Signature = sk.sign_prehash(&hash.digest(msg)).unwrap();
    let (r, s) = sig.split_bytes();
    Signature::Ecdsa {
        hash,
        r: r.to_vec(),
        s: s.to_vec(),
    }
}

fn parent() -> Name {
    Name::hierarchy(TPM_RH_ENDORSEMENT)
}

/// PCRs 0–23 of SHA-256, PCR i = [i + 1; 32].
fn sample_pcrs() -> PcrBanks {
    let mut p = PcrBanks::default();
    for i in 0..24u8 {
        p.insert(HashAlg::Sha256, i, vec![i + 1; 32]);
    }
    p
}

fn sample_attest(ak: &TpmtPublic, extra: &[u8], pcrs: &PcrBanks, hash: HashAlg) -> Attest {
    let pcr_select = PcrSelection::full_bank(HashAlg::Sha256);
    let pcr_digest = pcrs.digest_for(&pcr_select, hash).unwrap();
    Attest {
        qualified_signer: ak.qualified_name(&parent()),
        extra_data: extra.to_vec(),
        clock_info: ClockInfo {
            clock: 1000,
            reset_count: 2,
            restart_count: 0,
            safe: true,
        },
        firmware_version: 0x2019_1023_0016_3636,
        quote: QuoteInfo {
            pcr_select,
            pcr_digest,
        },
    }
}

/// A bundle signed by `ak` over `attest` (after `tweak`) with `hash`.
fn bundle_with(
    ak: &SoftAk,
    pcrs: PcrBanks,
    hash: HashAlg,
    tweak: impl FnOnce(&mut Attest),
) -> QuoteBundle {
    let mut attest = sample_attest(&ak.public, &NONCE, &pcrs, hash);
    tweak(&mut attest);
    let bytes = attest.marshal();
    QuoteBundle {
        signature: sign(&ak.sk, &bytes, hash).marshal(),
        attest: bytes,
        ak_public: ak.public.marshal(),
        pcrs,
        event_log_sha256: None,
    }
}

fn sample_bundle() -> QuoteBundle {
    bundle_with(&soft_ak(), sample_pcrs(), HashAlg::Sha256, |_| {})
}

const NONCE: [u8; 32] = [0x5a; 32];

fn trust() -> AkTrust {
    AkTrust {
        name: Some(soft_ak().public.name()),
        parent: Some(parent()),
        device: None,
    }
}

fn verify(b: &QuoteBundle) -> Result<VerifiedQuote, QuoteError> {
    verify_quote(b, &NONCE, &trust(), &QuotePolicy::default())
}

#[test]
fn structures_round_trip() {
    let b = sample_bundle();
    assert_eq!(Attest::parse(&b.attest).unwrap().marshal(), b.attest);
    assert_eq!(
        TpmtPublic::parse(&b.ak_public).unwrap().marshal(),
        b.ak_public
    );
    assert_eq!(
        Signature::parse(&b.signature).unwrap().marshal(),
        b.signature
    );
    let sel = PcrSelection::full_bank(HashAlg::Sha256);
    assert_eq!(sel.marshal(), [0, 0, 0, 1, 0, 0x0b, 3, 0xff, 0xff, 0xff]);
    assert_eq!(PcrSelection::parse(&sel.marshal()).unwrap(), sel);
    assert_eq!(
        sel.to_string(),
        "sha256:0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23"
    );
    let ak = soft_ak().public;
    let tpm2b = ak.marshal_tpm2b();
    let (p, inner) = TpmtPublic::parse_tpm2b(&tpm2b).unwrap();
    assert_eq!((p, inner), (ak.clone(), ak.marshal().as_slice()));
    // Name = nameAlg ‖ SHA-256(TPMT_PUBLIC); QN = nameAlg ‖ SHA-256(QN(parent) ‖ Name).
    let name = ak.name();
    assert_eq!(&name.0[..2], &[0, 0x0b]);
    assert_eq!(name.0[2..], HashAlg::Sha256.digest(&ak.marshal())[..]);
    let qn = ak.qualified_name(&parent());
    let mut pre = 0x4000_000Bu32.to_be_bytes().to_vec();
    pre.extend(&name.0);
    assert_eq!(qn.0[2..], HashAlg::Sha256.digest(&pre)[..]);
}

#[test]
fn a_good_quote_verifies() {
    let v = verify(&sample_bundle()).unwrap();
    assert!(v.parent_checked && v.enrolled_name_checked);
    assert_eq!(v.pcrs, sample_pcrs());
    assert_eq!(v.ak_name, soft_ak().public.name());
    // Without enrollment data the same quote passes too (the caller binds the AK otherwise).
    let v = verify_quote(
        &sample_bundle(),
        &NONCE,
        &AkTrust::default(),
        &QuotePolicy::default(),
    )
    .unwrap();
    assert!(!v.parent_checked && !v.enrolled_name_checked);
}

#[test]
fn each_ak_attribute_is_checked() {
    let cases = [
        (ObjectAttributes::RESTRICTED, 0, QuoteError::AkNotRestricted),
        (ObjectAttributes::SIGN, 0, QuoteError::AkNotSigning),
        (0, ObjectAttributes::DECRYPT, QuoteError::AkCanDecrypt),
        (ObjectAttributes::FIXED_TPM, 0, QuoteError::AkNotFixedTpm),
        (
            ObjectAttributes::FIXED_PARENT,
            0,
            QuoteError::AkNotFixedParent,
        ),
        (
            ObjectAttributes::SENSITIVE_DATA_ORIGIN,
            0,
            QuoteError::AkNotSensitiveDataOrigin,
        ),
    ];
    for (clear, set, expected) in cases {
        let ak = soft_ak_with(
            (AK_ATTRS & !clear) | set,
            Scheme::Ecdsa(HashAlg::Sha256),
            HashAlg::Sha256,
            7,
        );
        let b = bundle_with(&ak, sample_pcrs(), HashAlg::Sha256, |_| {});
        let err =
            verify_quote(&b, &NONCE, &AkTrust::default(), &QuotePolicy::default()).unwrap_err();
        assert_eq!(err, expected);
    }
    let ak = soft_ak_with(AK_ATTRS, Scheme::Ecdsa(HashAlg::Sha256), HashAlg::Sha1, 7);
    let b = bundle_with(&ak, sample_pcrs(), HashAlg::Sha256, |_| {});
    assert_eq!(
        verify_quote(&b, &NONCE, &AkTrust::default(), &QuotePolicy::default()).unwrap_err(),
        QuoteError::AkWeakNameAlg(HashAlg::Sha1)
    );
}

#[test]
fn weak_or_unsupported_keys_are_refused() {
    let mut b = sample_bundle();
    let mut ak = soft_ak().public;
    ak.key = PublicKey::Rsa {
        symmetric: None,
        scheme: Scheme::RsaSsa(HashAlg::Sha256),
        key_bits: 1024,
        exponent: 0,
        modulus: vec![0xc5; 128],
    };
    b.ak_public = ak.marshal();
    assert_eq!(verify(&b).unwrap_err().code(), "ak_weak_key");
    let mut ecc = soft_ak().public;
    if let PublicKey::Ecc { curve, .. } = &mut ecc.key {
        *curve = EccCurve::NIST_P521;
    }
    b.ak_public = ecc.marshal();
    assert_eq!(verify(&b).unwrap_err().code(), "ak_weak_key");
    // An enrolled Name that is not this AK's.
    let other = soft_ak_with(AK_ATTRS, Scheme::Ecdsa(HashAlg::Sha256), HashAlg::Sha256, 8);
    let b = bundle_with(&other, sample_pcrs(), HashAlg::Sha256, |_| {});
    assert_eq!(verify(&b).unwrap_err().code(), "ak_not_enrolled");
}

#[test]
fn signature_scheme_and_hash_are_checked() {
    // AK fixed to ECDSA-SHA256, signature ECDSA-SHA384.
    let b = bundle_with(&soft_ak(), sample_pcrs(), HashAlg::Sha384, |_| {});
    assert_eq!(
        verify(&b).unwrap_err(),
        QuoteError::SchemeMismatch {
            expected: "ecdsa-sha256".into(),
            got: "ecdsa-sha384".into()
        }
    );
    // An RSA signature for an ECC AK.
    let mut b = sample_bundle();
    b.signature = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig: vec![1; 256],
    }
    .marshal();
    assert_eq!(verify(&b).unwrap_err().code(), "scheme_mismatch");
    // AK without a fixed scheme: SHA-1 only when allowed, and then pcrDigest is SHA-1 too.
    let ak = soft_ak_with(AK_ATTRS, Scheme::Null, HashAlg::Sha256, 7);
    let b = bundle_with(&ak, sample_pcrs(), HashAlg::Sha1, |_| {});
    let mut policy = QuotePolicy::default();
    assert_eq!(
        verify_quote(&b, &NONCE, &AkTrust::default(), &policy).unwrap_err(),
        QuoteError::Sha1NotAllowed
    );
    policy.allow_sha1 = true;
    verify_quote(&b, &NONCE, &AkTrust::default(), &policy).unwrap();
    let b384 = bundle_with(&ak, sample_pcrs(), HashAlg::Sha384, |_| {});
    verify_quote(&b384, &NONCE, &AkTrust::default(), &QuotePolicy::default()).unwrap();
    // Signed by another key.
    let mut b = sample_bundle();
    let other = soft_ak_with(AK_ATTRS, Scheme::Ecdsa(HashAlg::Sha256), HashAlg::Sha256, 9);
    b.signature = sign(&other.sk, &b.attest, HashAlg::Sha256).marshal();
    assert_eq!(verify(&b).unwrap_err(), QuoteError::BadSignature);
    // Garbage signature bytes.
    b.signature = vec![0, 0x18, 0];
    assert_eq!(verify(&b).unwrap_err().code(), "signature_malformed");
}

#[test]
fn attest_structure_is_checked_after_the_signature() {
    // A validly signed structure that is not a quote (type certify).
    let ak = soft_ak();
    let mut b = sample_bundle();
    b.attest[4..6].copy_from_slice(&0x8017u16.to_be_bytes());
    b.signature = sign(&ak.sk, &b.attest, HashAlg::Sha256).marshal();
    assert!(matches!(
        verify(&b).unwrap_err(),
        QuoteError::Attest(ParseError::Invalid {
            field: "type",
            offset: 4,
            ..
        })
    ));
    // Trailing bytes after the structure.
    let mut b = sample_bundle();
    b.attest.push(0);
    b.signature = sign(&ak.sk, &b.attest, HashAlg::Sha256).marshal();
    assert!(matches!(
        verify(&b).unwrap_err(),
        QuoteError::Attest(ParseError::Trailing { extra: 1, .. })
    ));
    // qualifiedSigner = the plain Name, not the qualified name.
    let b = bundle_with(&ak, sample_pcrs(), HashAlg::Sha256, |a| {
        a.qualified_signer = soft_ak().public.name();
    });
    assert_eq!(verify(&b).unwrap_err().code(), "qualified_signer_mismatch");
}

#[test]
fn nonce_clock_and_pcr_checks() {
    let ak = soft_ak();
    assert_eq!(
        verify_quote(
            &sample_bundle(),
            &[1; 32],
            &trust(),
            &QuotePolicy::default()
        )
        .unwrap_err(),
        QuoteError::ExtraDataMismatch {
            expected: hex::encode([1; 32]),
            got: hex::encode(NONCE)
        }
    );
    let b = bundle_with(&ak, sample_pcrs(), HashAlg::Sha256, |a| {
        a.clock_info.safe = false
    });
    assert_eq!(verify(&b).unwrap_err(), QuoteError::ClockNotSafe);

    // A subset selection.
    let b = bundle_with(&ak, sample_pcrs(), HashAlg::Sha256, |a| {
        a.quote.pcr_select = PcrSelection {
            banks: vec![PcrBankSelection::new(HashAlg::Sha256, 0..8)],
        };
    });
    assert_eq!(
        verify(&b).unwrap_err(),
        QuoteError::PcrSelectionMismatch {
            expected: PcrSelection::full_bank(HashAlg::Sha256).to_string(),
            got: "sha256:0,1,2,3,4,5,6,7".into()
        }
    );
    // Claimed values: one missing, one extra.
    let mut b = sample_bundle();
    b.pcrs.0.get_mut(&HashAlg::Sha256).unwrap().remove(&5);
    assert_eq!(
        verify(&b).unwrap_err(),
        QuoteError::PcrValues(PcrValuesError::Missing {
            hash: HashAlg::Sha256,
            index: 5
        })
    );
    let mut b = sample_bundle();
    b.pcrs.insert(HashAlg::Sha1, 0, vec![0; 20]);
    assert_eq!(
        verify(&b).unwrap_err(),
        QuoteError::PcrValues(PcrValuesError::NotSelected {
            hash: HashAlg::Sha1,
            index: 0
        })
    );
    let mut b = sample_bundle();
    b.pcrs.insert(HashAlg::Sha256, 3, vec![0; 20]);
    assert_eq!(verify(&b).unwrap_err().code(), "pcr_values_mismatch");
    let mut b = sample_bundle();
    b.pcrs.insert(HashAlg::Sha256, 3, vec![0; 32]);
    assert_eq!(verify(&b).unwrap_err(), QuoteError::PcrDigestMismatch);

    // Unmeasured boot: PCRs 0–7 all zero.
    let mut zero = sample_pcrs();
    for i in 0..8 {
        zero.insert(HashAlg::Sha256, i, vec![0; 32]);
    }
    let b = bundle_with(&ak, zero, HashAlg::Sha256, |_| {});
    assert_eq!(
        verify(&b).unwrap_err(),
        QuoteError::UnmeasuredBoot(HashAlg::Sha256)
    );
    let lenient = QuotePolicy {
        allow_unmeasured_boot: true,
        ..QuotePolicy::default()
    };
    verify_quote(&b, &NONCE, &trust(), &lenient).unwrap();

    // Golden values.
    let mut policy = QuotePolicy {
        pcr_allow_list: PcrAllowList::from_policy(
            [(
                "7",
                "0x0808080808080808080808080808080808080808080808080808080808080808",
            )],
            HashAlg::Sha256,
        )
        .unwrap(),
        ..QuotePolicy::default()
    };
    verify_quote(&sample_bundle(), &NONCE, &trust(), &policy).unwrap();
    policy.pcr_allow_list.allow(HashAlg::Sha256, 8, vec![0; 32]);
    assert_eq!(
        verify_quote(&sample_bundle(), &NONCE, &trust(), &policy).unwrap_err(),
        QuoteError::PcrNotAllowed {
            hash: HashAlg::Sha256,
            index: 8,
            got: hex::encode([9u8; 32])
        }
    );
    // A second allowed value for PCR 8 makes it pass.
    policy.pcr_allow_list.allow(HashAlg::Sha256, 8, vec![9; 32]);
    verify_quote(&sample_bundle(), &NONCE, &trust(), &policy).unwrap();
    policy.pcr_allow_list.allow(HashAlg::Sha1, 0, vec![0; 20]);
    assert_eq!(
        verify_quote(&sample_bundle(), &NONCE, &trust(), &policy).unwrap_err(),
        QuoteError::PcrNotQuoted {
            hash: HashAlg::Sha1,
            index: 0
        }
    );
}

#[test]
fn pcr_policy_parsing() {
    let h = "ab".repeat(32);
    let l = PcrAllowList::from_policy(
        [("0", h.as_str()), ("sha1:7", &"cd".repeat(20))],
        HashAlg::Sha256,
    )
    .unwrap();
    assert_eq!(l.0.len(), 2);
    for bad in ["64", "-1", "+1", "x", "sha3:1", ""] {
        assert_eq!(
            PcrAllowList::from_policy([(bad, h.as_str())], HashAlg::Sha256).unwrap_err(),
            PcrPolicyError::BadIndex(bad.into())
        );
    }
    assert_eq!(
        PcrAllowList::from_policy([("1", "abcd")], HashAlg::Sha256).unwrap_err(),
        PcrPolicyError::BadValue {
            key: "1".into(),
            expected: 64
        }
    );
}

#[test]
fn deny_list_and_hook() {
    let device = TpmDevice {
        manufacturer: "id:49465800".into(),
        model: "SLB9670".into(),
        version: "id:0007003d".into(),
    };
    let with_device = AkTrust {
        device: Some(device),
        ..trust()
    };
    let rule = DenyRule {
        manufacturer: Some("id:49465800".into()),
        firmware: Some((0, u64::MAX)),
        key_type: Some("ecc".into()),
        reason: "TPM-Fail".into(),
        ..DenyRule::default()
    };
    let policy = QuotePolicy {
        deny_list: vec![rule.clone()],
        ..QuotePolicy::default()
    };
    assert_eq!(
        verify_quote(&sample_bundle(), &NONCE, &with_device, &policy).unwrap_err(),
        QuoteError::Denied("TPM-Fail".into())
    );
    // Unknown device: a manufacturer rule cannot match.
    verify_quote(&sample_bundle(), &NONCE, &trust(), &policy).unwrap();
    // Another key type or firmware range: no match.
    for r in [
        DenyRule {
            key_type: Some("rsa".into()),
            ..rule.clone()
        },
        DenyRule {
            firmware: Some((0, 5)),
            ..rule.clone()
        },
    ] {
        let p = QuotePolicy {
            deny_list: vec![r],
            ..QuotePolicy::default()
        };
        verify_quote(&sample_bundle(), &NONCE, &with_device, &p).unwrap();
    }
    let hook: DenyHook = Arc::new(|c: &DenyContext<'_>| {
        (c.firmware_version == 0x2019_1023_0016_3636).then(|| "bad firmware".to_owned())
    });
    let p = QuotePolicy {
        deny_hook: Some(hook),
        ..QuotePolicy::default()
    };
    assert_eq!(
        verify_quote(&sample_bundle(), &NONCE, &trust(), &p).unwrap_err(),
        QuoteError::Denied("bad firmware".into())
    );
}

#[test]
fn clock_watermark() {
    let c = |reset, restart, clock| ClockInfo {
        clock,
        reset_count: reset,
        restart_count: restart,
        safe: true,
    };
    check_clock_sequence(&[
        c(1, 0, 10),
        c(1, 0, 10),
        c(1, 0, 11),
        c(1, 1, 0),
        c(2, 0, 0),
    ])
    .unwrap();
    assert_eq!(
        check_clock_sequence(&[c(1, 0, 10), c(1, 0, 11), c(1, 0, 9)]).unwrap_err(),
        ClockRegression {
            position: 2,
            previous: (1, 0, 11),
            next: (1, 0, 9)
        }
    );
    let mut w = ClockWatermark::default();
    w.observe(&c(2, 0, 0)).unwrap();
    assert!(w.observe(&c(1, 9, 99)).is_err());
    assert_eq!(w.last(), Some((2, 0, 0)));
}

fn entry_with(byproducts: Vec<crate::entry::ResourceDescriptor>, counter: u64) -> Entry {
    let key = NixSecretKey::from_seed("alpha", [9; 32]).unwrap();
    let build = NixBuild {
        builder: "alpha".into(),
        derivation: Some(
            "/nix/store/cik26rpcmicqx5srxli3i3d0bbdy8dcq-hello-provenix.drv"
                .parse::<StorePath>()
                .unwrap(),
        ),
        outputs: vec![Output {
            name: "out".into(),
            path: "/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa-hello-provenix"
                .parse()
                .unwrap(),
            nar_hash: "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY="
                .parse()
                .unwrap(),
            nar_size: Some(120),
            references: vec![],
        }],
        built_locally: true,
        counter: Some(counter),
        byproducts,
        ..Default::default()
    };
    Entry::parse(&build.sign(&key).canonical_json()).unwrap()
}

#[test]
fn entry_quote_binds_the_trace_digest() {
    // The producer quotes the trace digest of the entry it is about to sign.
    let digest = entry_with(vec![], 3).trace_digest();
    let ak = soft_ak();
    let mut attest = sample_attest(&ak.public, &digest, &sample_pcrs(), HashAlg::Sha256);
    attest.extra_data = digest.to_vec();
    let bytes = attest.marshal();
    let bundle = QuoteBundle {
        signature: sign(&ak.sk, &bytes, HashAlg::Sha256).marshal(),
        attest: bytes,
        ak_public: ak.public.marshal(),
        pcrs: sample_pcrs(),
        event_log_sha256: Some([4; 32]),
    };
    let entry = entry_with(vec![bundle.to_descriptor()], 3);
    assert_eq!(entry.trace_digest(), digest);
    let v = verify_entry_quote(&entry, &trust(), &QuotePolicy::default()).unwrap();
    assert_eq!(v.attest.extra_data, digest);
    assert!(entry.leaf_bytes().len() < crate::entry::MAX_LEAF_BYTES);

    // The same quote in an entry with another counter: its digest no longer matches.
    let replayed = entry_with(vec![bundle.to_descriptor()], 4);
    let err = verify_entry_quote(&replayed, &trust(), &QuotePolicy::default()).unwrap_err();
    assert_eq!(err.code(), "extra_data_mismatch");

    let none = entry_with(vec![], 3);
    assert_eq!(
        verify_entry_quote(&none, &trust(), &QuotePolicy::default()).unwrap_err(),
        EntryQuoteError::Bundle(BundleError::Missing)
    );
    let two = entry_with(vec![bundle.to_descriptor(), bundle.to_descriptor()], 3);
    assert_eq!(
        verify_entry_quote(&two, &trust(), &QuotePolicy::default()).unwrap_err(),
        EntryQuoteError::Bundle(BundleError::Several(2))
    );
}

/// Fuzz regression (`tpm_bundle`): an empty PCR bank was accepted and dropped, so two
/// different descriptors read as the same bundle. The crashing input, minimized by hand.
#[test]
fn descriptor_refuses_an_empty_pcr_bank() {
    let input: &[u8] = br#"{"name":"tpm2-quote","digest":{"sha256":"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"},"mediaType":"application/vnd.provenix.tpm2-quote+json","annotations":{"version":1,"attest":"eA==","signature":"","akPublic":"","pcrs":{"sha1":{"0":"0000000000000000000000000000000000000000"},"sha256":{}}}}"#;
    let d: crate::entry::ResourceDescriptor = serde_json::from_slice(input).unwrap();
    assert_eq!(
        QuoteBundle::from_descriptor(&d).unwrap_err(),
        BundleError::Annotations("pcrs.sha256: a bank with no PCR values".into())
    );
    // Without the empty bank it reads, and writes back the same annotations.
    let mut d = d;
    d.annotations["pcrs"]
        .as_object_mut()
        .unwrap()
        .remove("sha256");
    let b = QuoteBundle::from_descriptor(&d).unwrap();
    assert_eq!(b.to_descriptor().annotations, d.annotations);
}

#[test]
fn descriptor_is_strict() {
    let b = sample_bundle();
    let d = b.to_descriptor();
    assert_eq!(d.name, crate::entry::TPM_QUOTE_BYPRODUCT);
    assert_eq!(d.media_type, TPM_QUOTE_MEDIA_TYPE);
    assert_eq!(QuoteBundle::from_descriptor(&d).unwrap(), b);

    let mutate = |f: &mut dyn FnMut(&mut crate::entry::ResourceDescriptor)| {
        let mut d = b.to_descriptor();
        f(&mut d);
        QuoteBundle::from_descriptor(&d).unwrap_err()
    };
    assert_eq!(
        mutate(&mut |d| d.media_type = "application/json".into()),
        BundleError::WrongMediaType("application/json".into())
    );
    assert_eq!(
        mutate(&mut |d| d.name = "x".into()),
        BundleError::WrongName("x".into())
    );
    assert_eq!(
        mutate(&mut |d| {
            d.digest.insert("sha256".into(), "00".repeat(32));
        }),
        BundleError::DigestMismatch
    );
    assert_eq!(
        mutate(&mut |d| {
            d.digest.clear();
        }),
        BundleError::DigestMismatch
    );
    let annotation = |key: &'static str, v: serde_json::Value| {
        move |d: &mut crate::entry::ResourceDescriptor| {
            d.annotations.insert(key.into(), v.clone());
        }
    };
    for (key, v) in [
        ("extra", serde_json::json!(1)),
        ("version", serde_json::json!(2)),
        ("attest", serde_json::json!("!!")),
        ("pcrs", serde_json::json!({"sha256": {"07": "00"}})),
        (
            "pcrs",
            serde_json::json!({"sha256": {"7": "AB".repeat(32)}}),
        ),
        ("pcrs", serde_json::json!({"md5": {}})),
        ("eventLogSha256", serde_json::json!("12")),
    ] {
        let mut f = annotation(key, v);
        assert!(
            matches!(mutate(&mut f), BundleError::Annotations(_)),
            "{key}"
        );
    }
}

// ---- parser robustness ----

fn rsa_public() -> TpmtPublic {
    TpmtPublic {
        name_alg: HashAlg::Sha256,
        attributes: ObjectAttributes(0x0003_00b2),
        auth_policy: vec![0x83; 32],
        key: PublicKey::Rsa {
            symmetric: Some(SymDef {
                algorithm: 0x0006,
                key_bits: 128,
                mode: 0x0043,
            }),
            scheme: Scheme::Null,
            key_bits: 2048,
            exponent: 0,
            modulus: vec![0xc7; 256],
        },
    }
}

/// A crypto-agile log (SHA-1 + SHA-256) with a StartupLocality event and a separator, and the
/// same measurements as a legacy SHA-1 log.
fn sample_logs() -> (Vec<u8>, Vec<u8>) {
    fn legacy_event(out: &mut Vec<u8>, pcr: u32, ty: u32, digest: &[u8], data: &[u8]) {
        out.extend(pcr.to_le_bytes());
        out.extend(ty.to_le_bytes());
        out.extend(digest);
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
    }
    fn agile_event(out: &mut Vec<u8>, pcr: u32, ty: u32, data: &[u8], digest_of: &[u8]) {
        out.extend(pcr.to_le_bytes());
        out.extend(ty.to_le_bytes());
        out.extend(2u32.to_le_bytes());
        for h in [HashAlg::Sha1, HashAlg::Sha256] {
            out.extend(h.id().to_le_bytes());
            out.extend(h.digest(digest_of));
        }
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
    }
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend(0u32.to_le_bytes());
    spec.extend([0, 2, 0, 2]);
    spec.extend(2u32.to_le_bytes());
    spec.extend([0x04, 0, 20, 0, 0x0b, 0, 32, 0]);
    spec.push(0);
    let mut agile = Vec::new();
    legacy_event(&mut agile, 0, 3, &[0; 20], &spec);
    let mut loc = b"StartupLocality\0".to_vec();
    loc.push(3);
    let mut no_action = Vec::new();
    no_action.extend(0u32.to_le_bytes());
    no_action.extend(3u32.to_le_bytes());
    no_action.extend(2u32.to_le_bytes());
    no_action.extend([0x04, 0]);
    no_action.extend([0; 20]);
    no_action.extend([0x0b, 0]);
    no_action.extend([0; 32]);
    no_action.extend((loc.len() as u32).to_le_bytes());
    no_action.extend(&loc);
    agile.extend(&no_action);
    agile_event(
        &mut agile,
        0,
        0x8000_0008,
        b"firmware blob",
        b"the firmware",
    );
    agile_event(
        &mut agile,
        7,
        0x8000_0001,
        b"SecureBoot var",
        b"SecureBoot var",
    );
    agile_event(&mut agile, 0, 4, &[0; 4], &[0; 4]);

    let mut legacy = Vec::new();
    legacy_event(
        &mut legacy,
        0,
        0x8000_0008,
        &HashAlg::Sha1.digest(b"the firmware"),
        b"firmware blob",
    );
    legacy_event(
        &mut legacy,
        7,
        0x8000_0001,
        &HashAlg::Sha1.digest(b"SecureBoot var"),
        b"SecureBoot var",
    );
    legacy_event(&mut legacy, 0, 4, &HashAlg::Sha1.digest(&[0; 4]), &[0; 4]);
    (agile, legacy)
}

#[test]
fn synthetic_event_logs_replay() {
    let (agile, legacy) = sample_logs();
    let a = EventLog::parse(&agile).unwrap();
    let l = EventLog::parse(&legacy).unwrap();
    assert_eq!(a.format, EventLogFormat::CryptoAgile);
    assert_eq!(l.format, EventLogFormat::LegacySha1);
    assert_eq!(a.startup_locality, Some(3));
    assert_eq!(a.banks, vec![HashAlg::Sha1, HashAlg::Sha256]);
    let ra = a.replay();
    let rl = l.replay();
    // PCR 0 starts at ...03 (locality 3) in the agile log, at zero in the legacy one.
    let mut init = vec![0u8; 32];
    init[31] = 3;
    let pcr0 = HashAlg::Sha256.digest_parts(&[
        &HashAlg::Sha256.digest_parts(&[&init, &HashAlg::Sha256.digest(b"the firmware")]),
        &HashAlg::Sha256.digest(&[0; 4]),
    ]);
    assert_eq!(ra.get(HashAlg::Sha256, 0).unwrap(), pcr0.as_slice());
    assert_eq!(ra.get(HashAlg::Sha1, 7), rl.get(HashAlg::Sha1, 7));
    assert_ne!(ra.get(HashAlg::Sha1, 0), rl.get(HashAlg::Sha1, 0));

    // A separator whose digest is not the hash of its data.
    let mut bad = legacy.clone();
    let n = bad.len();
    bad[n - 4] = 1;
    assert_eq!(
        EventLog::parse(&bad).unwrap_err(),
        EventLogError::BadEvent {
            index: 2,
            reason: "sha1 digest is not the hash of the event data".into()
        }
    );
}

/// Every strict prefix fails, one extra byte fails, every single-bit flip returns (Ok or Err)
/// without panicking; whatever parses re-marshals to its input.
fn robust<T>(
    what: &str,
    good: &[u8],
    parse: impl Fn(&[u8]) -> Result<T, ParseError>,
    marshal: impl Fn(&T) -> Vec<u8>,
) {
    assert!(parse(good).is_ok(), "{what}: sample must parse");
    for n in 0..good.len() {
        assert!(parse(&good[..n]).is_err(), "{what}: prefix {n} parsed");
    }
    let mut ext = good.to_vec();
    ext.push(0);
    assert!(
        matches!(parse(&ext), Err(ParseError::Trailing { extra: 1, .. })),
        "{what}"
    );
    for bit in 0..good.len() * 8 {
        let mut m = good.to_vec();
        m[bit / 8] ^= 1 << (bit % 8);
        if let Ok(v) = parse(&m) {
            assert_eq!(
                marshal(&v),
                m,
                "{what}: bit {bit} parsed but does not round-trip"
            );
        }
    }
}

#[test]
fn parsers_survive_truncation_extension_and_bit_flips() {
    let b = sample_bundle();
    robust("attest", &b.attest, Attest::parse, Attest::marshal);
    robust(
        "ecc public",
        &b.ak_public,
        TpmtPublic::parse,
        TpmtPublic::marshal,
    );
    robust(
        "rsa public",
        &rsa_public().marshal(),
        TpmtPublic::parse,
        TpmtPublic::marshal,
    );
    robust(
        "ecdsa signature",
        &b.signature,
        Signature::parse,
        Signature::marshal,
    );
    let rsa_sig = Signature::RsaPss {
        hash: HashAlg::Sha256,
        sig: vec![3; 256],
    };
    robust(
        "rsa signature",
        &rsa_sig.marshal(),
        Signature::parse,
        Signature::marshal,
    );
    let sel = PcrSelection {
        banks: vec![
            PcrBankSelection::new(HashAlg::Sha1, [0, 7]),
            PcrBankSelection::new(HashAlg::Sha256, 0..24),
        ],
    };
    robust(
        "selection",
        &sel.marshal(),
        PcrSelection::parse,
        PcrSelection::marshal,
    );

    // Event logs and descriptors: no panic on any mutation.
    let (agile, legacy) = sample_logs();
    for log in [agile, legacy] {
        for n in 0..log.len() {
            let _ = EventLog::parse(&log[..n]);
        }
        for bit in 0..log.len() * 8 {
            let mut m = log.clone();
            m[bit / 8] ^= 1 << (bit % 8);
            let _ = EventLog::parse(&m);
        }
    }
    // A verifier over bit-flipped evidence: errors, never panics, never accepts.
    for field in 0..3 {
        let good = sample_bundle();
        let len = [
            good.attest.len(),
            good.signature.len(),
            good.ak_public.len(),
        ][field];
        for bit in 0..len * 8 {
            let mut m = good.clone();
            let buf = match field {
                0 => &mut m.attest,
                1 => &mut m.signature,
                _ => &mut m.ak_public,
            };
            buf[bit / 8] ^= 1 << (bit % 8);
            assert!(verify(&m).is_err(), "field {field} bit {bit} accepted");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(a) = Attest::parse(&bytes) { prop_assert_eq!(a.marshal(), bytes.clone()); }
        if let Ok(p) = TpmtPublic::parse(&bytes) { prop_assert_eq!(p.marshal(), bytes.clone()); }
        let _ = TpmtPublic::parse_tpm2b(&bytes);
        if let Ok(s) = Signature::parse(&bytes) { prop_assert_eq!(s.marshal(), bytes.clone()); }
        if let Ok(s) = PcrSelection::parse(&bytes) { prop_assert_eq!(s.marshal(), bytes.clone()); }
        let _ = PcrBanks::from_concatenated(&PcrSelection::full_bank(HashAlg::Sha256), &bytes);
        let _ = EventLog::parse(&bytes);
        let _ = parse_ek_certificate(&bytes);
        let _ = EkRoots::from_pem(&String::from_utf8_lossy(&bytes));
        let b = QuoteBundle { attest: bytes.clone(), signature: bytes.clone(), ak_public: bytes.clone(), pcrs: PcrBanks::default(), event_log_sha256: None };
        prop_assert!(verify_quote(&b, &[], &AkTrust::default(), &QuotePolicy::default()).is_err());
    }

    #[test]
    fn structured_prefixes_never_panic(
        kind in 0usize..4,
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        // Valid headers followed by random bytes reach deeper parser states than pure noise.
        let prefix: Vec<u8> = match kind {
            0 => vec![0xff, 0x54, 0x43, 0x47, 0x80, 0x18],
            1 => vec![0x00, 0x23, 0x00, 0x0b],
            2 => vec![0x00, 0x01, 0x00, 0x0b],
            _ => {
                let (agile, _) = sample_logs();
                agile[..agile.len() / 2].to_vec()
            }
        };
        let mut bytes = prefix;
        bytes.extend(tail);
        let _ = Attest::parse(&bytes);
        let _ = TpmtPublic::parse(&bytes);
        let _ = EventLog::parse(&bytes);
    }
}
