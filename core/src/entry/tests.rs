use super::*;
use crate::nix::NixSecretKey;

pub(crate) fn sample_build(builder: &str) -> NixBuild {
    let out: StorePath = "/nix/store/y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa-hello-provenix"
        .parse()
        .unwrap();
    let drv: StorePath = "/nix/store/cik26rpcmicqx5srxli3i3d0bbdy8dcq-hello-provenix.drv"
        .parse()
        .unwrap();
    NixBuild {
        builder: builder.into(),
        derivation: Some(drv),
        drv_sha256: Some([1; 32]),
        outputs: vec![Output {
            name: "out".into(),
            path: out,
            nar_hash: "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY="
                .parse()
                .unwrap(),
            nar_size: Some(120),
            references: vec![],
        }],
        built_locally: true,
        counter: Some(3),
        started_on: Some("2026-11-21T23:25:15Z".into()),
        finished_on: Some("2026-11-21T23:25:16.123Z".into()),
        ..Default::default()
    }
}

#[test]
fn signed_build_parses_and_verifies() {
    let key = NixSecretKey::from_seed("alpha", [9; 32]).unwrap();
    let env = sample_build("alpha").sign(&key);
    let entry = Entry::parse(&env.canonical_json()).unwrap();
    assert_eq!(entry.keyid(), "alpha");
    entry.verify(&key.public()).unwrap();
    assert_eq!(entry.keys().len(), 1);
    assert_eq!(
        entry.keys()[0].to_string(),
        "y7ibd4yx63vi2jvrxcgn3diqh8qcsvfa"
    );
    assert_eq!(
        entry.outputs()[0].nar_hash.to_hex(),
        "10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6"
    );
    assert_eq!(entry.statement().built_locally(), Some(true));
    assert_eq!(entry.statement().counter(), Some(3));
    assert_eq!(entry.trace_digest(), sample_build("alpha").trace_digest());
    let other = NixSecretKey::from_seed("alpha", [8; 32]).unwrap();
    assert_eq!(entry.verify(&other.public()), Err(EntryError::BadSignature));
}

fn resign(payload: serde_json::Value, key: &NixSecretKey) -> Vec<u8> {
    Envelope::sign(serde_json::to_vec(&payload).unwrap(), key).canonical_json()
}

#[test]
fn log_requirements_are_enforced() {
    let key = NixSecretKey::from_seed("alpha", [9; 32]).unwrap();
    let good: serde_json::Value =
        serde_json::to_value(sample_build("alpha").to_statement()).unwrap();

    let mut v = good.clone();
    v["predicateType"] = "https://slsa.dev/provenance/v0.2".into();
    assert!(matches!(
        Entry::parse(&resign(v, &key)),
        Err(EntryError::Malformed(_))
    ));

    let mut v = good.clone();
    v["subject"][0]["digest"]["sha256"] = "ABC".into();
    assert!(matches!(
        Entry::parse(&resign(v, &key)),
        Err(EntryError::Malformed(_))
    ));

    let mut v = good.clone();
    v["subject"][0]["name"] = "not-a-store-path".into();
    assert!(matches!(
        Entry::parse(&resign(v, &key)),
        Err(EntryError::Malformed(_))
    ));

    let mut v = good.clone();
    v["predicate"]["runDetails"]["unknownField"] = 1.into();
    assert!(matches!(
        Entry::parse(&resign(v, &key)),
        Err(EntryError::Malformed(_))
    ));

    let mut v = good.clone();
    v["predicate"]["runDetails"]["metadata"]["startedOn"] = "yesterday".into();
    assert!(matches!(
        Entry::parse(&resign(v, &key)),
        Err(EntryError::Malformed(_))
    ));

    // Free-form structs take anything.
    let mut v = good.clone();
    v["predicate"]["buildDefinition"]["externalParameters"]["anything"] =
        serde_json::json!({"x": [1, 2]});
    assert!(Entry::parse(&resign(v, &key)).is_ok());

    let mut v = good.clone();
    v["predicate"]["buildDefinition"]["externalParameters"]["pad"] = "x".repeat(70_000).into();
    assert!(matches!(
        Entry::parse(&resign(v, &key)),
        Err(EntryError::TooLarge(_))
    ));

    let env = sample_build("alpha").sign(&key);
    let mut wrong_type = env.clone();
    wrong_type.payload_type = "text/plain".into();
    assert!(matches!(
        Entry::from_envelope(wrong_type),
        Err(EntryError::Malformed(_))
    ));
    let mut two = env.clone();
    two.signatures.push(two.signatures[0].clone());
    assert!(matches!(
        Entry::from_envelope(two),
        Err(EntryError::Malformed(_))
    ));
    let mut short = env;
    short.signatures[0].sig.truncate(10);
    assert_eq!(
        Entry::from_envelope(short).unwrap_err(),
        EntryError::BadSignature
    );
}

#[test]
fn realisation_ids_become_keys() {
    let key = NixSecretKey::from_seed("alpha", [9; 32]).unwrap();
    let mut b = sample_build("alpha");
    let id = format!("sha256:{}!out", "ab".repeat(32));
    b.drv_output_ids = vec![id.clone()];
    let e = Entry::parse(&b.sign(&key).canonical_json()).unwrap();
    assert!(e.keys().contains(&id.parse().unwrap()));
    assert_eq!(e.keys().len(), 2);
    for bad in [
        "sha256:zz!out",
        "sha256:abc",
        "md5:x!out",
        "",
        "builder:",
        "builder:a b",
    ] {
        assert!(bad.parse::<LookupKey>().is_err(), "{bad}");
    }
    assert_eq!(
        "builder:alpha".parse::<LookupKey>().unwrap(),
        LookupKey::Builder("alpha".into())
    );
    assert_eq!(
        LookupKey::Builder("alpha".into()).to_string(),
        "builder:alpha"
    );
    // A builder cannot get its provenance entry indexed under a builder key.
    let mut b = sample_build("alpha");
    b.drv_output_ids = vec!["builder:alpha".into()];
    assert!(matches!(
        Entry::parse(&b.sign(&key).canonical_json()),
        Err(EntryError::Malformed(m)) if m.contains("not a realisation id")
    ));
}

#[test]
fn rfc3339() {
    for ok in [
        "2026-11-21T23:25:15Z",
        "2026-11-21T23:25:15.1Z",
        "2026-11-21T23:25:15+01:00",
    ] {
        assert!(is_rfc3339(ok), "{ok}");
    }
    for bad in [
        "2026-11-21",
        "2026-11-21T23:25:15",
        "2026-11-21T23:25:15.Z",
        "2026-11-21 23:25:15Z",
    ] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
}

#[test]
fn dependencies_are_the_resolved_store_paths_but_the_drv() {
    let key = NixSecretKey::from_seed("alpha", [9; 32]).unwrap();
    let dep: StorePath = "/nix/store/00000000000000000000000000000000-dep"
        .parse()
        .unwrap();
    let mut b = sample_build("alpha");
    b.dependencies = vec![Dependency {
        path: dep.clone(),
        nar_hash: NarHash::from_bytes([5; 32]),
    }];
    b.source = Some(Source {
        uri: "git+https://example.org/repo".into(),
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        ..Default::default()
    });
    let entry = Entry::parse(&b.sign(&key).canonical_json()).unwrap();
    // The .drv (with the file's sha256) and the git commit are resolved dependencies too.
    assert_eq!(
        entry
            .statement()
            .predicate
            .build_definition
            .resolved_dependencies
            .len(),
        3
    );
    assert_eq!(
        entry.dependencies(),
        vec![(dep, NarHash::from_bytes([5; 32]))]
    );
}

/// `n` entries, every third signed by `beta` and the others by `alpha`.
fn signed_entries(alpha: &NixSecretKey, beta: &NixSecretKey, n: u64) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let k = if i % 3 == 0 { beta } else { alpha };
            let mut b = sample_build(k.name());
            b.counter = Some(i);
            Entry::parse(&b.sign(k).canonical_json()).unwrap()
        })
        .collect()
}

#[test]
fn batch_verification_agrees_with_one_by_one() {
    let alpha = NixSecretKey::from_seed("alpha", [9; 32]).unwrap();
    let beta = NixSecretKey::from_seed("beta", [10; 32]).unwrap();
    let entries = signed_entries(&alpha, &beta, 20);
    let (pa, pb) = (alpha.public(), beta.public());
    let pairs: Vec<(&Entry, &NixPublicKey)> = entries
        .iter()
        .map(|e| (e, if e.keyid() == "beta" { &pb } else { &pa }))
        .collect();
    assert!(verify_batch(&pairs));
    assert!(verify_batch(&[]));
    // One flipped bit, or one entry paired with another builder's key, fails the batch.
    let mut env = entries[4].envelope().clone();
    env.signatures[0].sig[10] ^= 1;
    let broken = Entry::from_envelope(env).unwrap();
    let mut bad = pairs.clone();
    bad[4] = (&broken, &pa);
    assert!(!verify_batch(&bad));
    assert_eq!(broken.verify(&pa), Err(EntryError::BadSignature));
    let mut swapped = pairs.clone();
    swapped[1] = (&entries[1], &pb);
    assert!(!verify_batch(&swapped));
}

#[test]
fn verify_each_finds_the_bad_signatures_among_many() {
    let alpha = NixSecretKey::from_seed("alpha", [9; 32]).unwrap();
    let beta = NixSecretKey::from_seed("beta", [10; 32]).unwrap();
    let (pa, pb) = (alpha.public(), beta.public());
    let entries = signed_entries(&alpha, &beta, 40);
    let broken = |e: &Entry| {
        let mut env = e.envelope().clone();
        env.signatures[0].sig[7] ^= 0x40;
        Entry::from_envelope(env).unwrap()
    };
    let (b5, b6, b31) = (
        broken(&entries[5]),
        broken(&entries[6]),
        broken(&entries[31]),
    );
    let mut pairs: Vec<(&Entry, &NixPublicKey)> = entries
        .iter()
        .map(|e| (e, if e.keyid() == "beta" { &pb } else { &pa }))
        .collect();
    assert_eq!(verify_each(&pairs), vec![true; 40]);
    assert_eq!(verify_each(&[]), Vec::<bool>::new());
    // Two adjacent bad signatures, one far away, and one good entry paired with the wrong key.
    pairs[5].0 = &b5;
    pairs[6].0 = &b6;
    pairs[31].0 = &b31;
    pairs[20].1 = &pb;
    let want: Vec<bool> = (0..40).map(|i| ![5, 6, 20, 31].contains(&i)).collect();
    assert_eq!(verify_each(&pairs), want);
    // Each result is what the item gets alone, and what the strict check says of these.
    for (i, p) in pairs.iter().enumerate() {
        assert_eq!(
            verify_each(std::slice::from_ref(p)),
            vec![want[i]],
            "item {i}"
        );
        assert_eq!(p.0.verify(p.1).is_ok(), want[i], "item {i}");
    }
}

/// A signature whose R carries a small-order component, made with the secret key: the
/// cofactored equation of [`verify_each`] accepts it (alone or in a batch), the strict,
/// cofactorless [`Entry::verify`] refuses it. This is the only kind of signature on which the two
/// disagree.
#[test]
fn verify_each_is_the_cofactored_equation() {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};

    let seed = [11u8; 32];
    let key = NixSecretKey::from_seed("alpha", seed).unwrap();
    let honest = Entry::parse(&sample_build("alpha").sign(&key).canonical_json()).unwrap();
    let mut env = honest.envelope().clone();
    // RFC 8032 §5.1.5: the secret scalar is the clamped first half of SHA-512(seed).
    let h = Sha512::digest(seed);
    let mut a_bytes = [0u8; 32];
    a_bytes.copy_from_slice(&h[..32]);
    a_bytes[0] &= 248;
    a_bytes[31] &= 127;
    a_bytes[31] |= 64;
    let a = Scalar::from_bytes_mod_order(a_bytes);
    let a_point = (a * B).compress();
    assert_eq!(
        a_point.as_bytes(),
        key.public().verifying_key().as_bytes(),
        "the secret scalar matches the public key"
    );
    let r = Scalar::from_bytes_mod_order([42; 32]);
    let r_point = (r * B + EIGHT_TORSION[2]).compress();
    let mut hk = Sha512::new();
    hk.update(r_point.as_bytes());
    hk.update(a_point.as_bytes());
    hk.update(pae(&env.payload_type, &env.payload));
    let k = Scalar::from_bytes_mod_order_wide(&hk.finalize().into());
    let s = r + k * a;
    let mut sig = r_point.as_bytes().to_vec();
    sig.extend_from_slice(s.as_bytes());
    env.signatures[0].sig = sig;
    let crafted = Entry::from_envelope(env).unwrap();
    let pk = key.public();
    assert_eq!(crafted.verify(&pk), Err(EntryError::BadSignature));
    assert_eq!(verify_each(&[(&crafted, &pk)]), vec![true]);
    assert_eq!(
        verify_each(&[(&honest, &pk), (&crafted, &pk), (&honest, &pk)]),
        vec![true; 3]
    );
}
