//! Deterministic, realistic provenance entries for tests and benchmarks.

use provenix_core::entry::{Dependency, NixBuild, Output};
use provenix_core::nix::{base32, NarHash, NixSecretKey, StorePath};
use sha2::{Digest, Sha256};

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

/// A builder key whose seed is derived from its name (stable across runs).
pub fn builder_key(name: &str) -> NixSecretKey {
    NixSecretKey::from_seed(name, h(&[b"provenix-test-key", name.as_bytes()])).unwrap()
}

/// A valid store path whose hash part is derived from `seed`.
pub fn store_path(seed: u64, name: &str) -> StorePath {
    let d = h(&[b"path", &seed.to_be_bytes()]);
    format!("/nix/store/{}-{name}", base32::encode(&d[..20]))
        .parse()
        .unwrap()
}

/// A NAR hash derived from `content`.
pub fn nar_hash(content: u64) -> NarHash {
    NarHash::from_bytes(h(&[b"nar", &content.to_be_bytes()]))
}

/// A build of derivation `seed` whose output content is `content` (same content ⇒ same claim),
/// with one resolved input besides the `.drv`: about 1.2 KB once signed.
pub fn build(builder: &str, seed: u64, content: u64) -> NixBuild {
    let out = store_path(seed, &format!("pkg-{seed}"));
    NixBuild {
        builder: builder.to_owned(),
        derivation: Some(store_path(seed ^ 0xd7d7, &format!("pkg-{seed}.drv"))),
        drv_sha256: Some(h(&[b"drv", &seed.to_be_bytes()])),
        outputs: vec![Output {
            name: "out".into(),
            path: out,
            nar_hash: nar_hash(content),
            nar_size: Some(4096 + content % 1000),
            references: vec![store_path(seed + 1_000_000_007, "glibc-2.40")],
        }],
        dependencies: (0..1)
            .map(|i| Dependency {
                path: store_path(seed.wrapping_mul(31).wrapping_add(i), "dep"),
                nar_hash: nar_hash(seed ^ i),
            })
            .collect(),
        built_locally: true,
        counter: Some(seed),
        system: Some("x86_64-linux".into()),
        started_on: Some("2026-11-21T10:00:00Z".into()),
        finished_on: Some("2026-11-21T10:00:01Z".into()),
        ..Default::default()
    }
}

/// The canonical JSON of `build(..)` signed by `key`.
pub fn signed(key: &NixSecretKey, seed: u64, content: u64) -> Vec<u8> {
    build(key.name(), seed, content).sign(key).canonical_json()
}

/// A lean build claim (one output without references, the `.drv` and its hash, no other
/// inputs): about 1.1 KB once signed, the "~1 KB entry" the ingest benchmark uses.
pub fn small(builder: &str, seed: u64, content: u64) -> NixBuild {
    NixBuild {
        dependencies: Vec::new(),
        started_on: None,
        finished_on: None,
        system: None,
        outputs: vec![Output {
            references: Vec::new(),
            ..build(builder, seed, content).outputs.remove(0)
        }],
        ..build(builder, seed, content)
    }
}

/// The canonical JSON of `small(..)` signed by `key`.
pub fn signed_small(key: &NixSecretKey, seed: u64, content: u64) -> Vec<u8> {
    small(key.name(), seed, content).sign(key).canonical_json()
}
