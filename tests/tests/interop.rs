//! Entries verified by tools we did not write: securesystemslib's DSSE verifier and
//! in-toto-attestation's strict Statement v1 / SLSA Provenance v1 models (PyPI).

use std::process::Command;
use std::time::Duration;

use provenix::logclient::LogClient;
use provenix_core::checkpoint::LogVerifier;
use provenix_core::entry::{Envelope, NixBuild, Output, Source};
use provenix_core::nix::NixSecretKey;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_e2e::{gen, python, runtime, workspace};

fn keys_json(keys: &[&NixSecretKey]) -> String {
    let m: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| (k.name().to_owned(), hex_pub(k).into()))
        .collect();
    serde_json::Value::Object(m).to_string()
}

fn hex_pub(k: &NixSecretKey) -> String {
    let s = k.public().to_string();
    let b64 = s.split_once(':').unwrap().1;
    use base64::Engine as _;
    hex::encode(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

fn check(
    py: &std::path::Path,
    dir: &std::path::Path,
    lines: &[Vec<u8>],
    keys: &str,
) -> (bool, String) {
    let env = dir.join("envelopes.jsonl");
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    std::fs::write(&env, text).unwrap();
    std::fs::write(dir.join("keys.json"), keys).unwrap();
    let out = Command::new(py)
        .arg(workspace().join("scripts/check_intoto.py"))
        .arg(&env)
        .arg(dir.join("keys.json"))
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), log)
}

fn rich_build(builder: &str) -> NixBuild {
    let mut b = gen::build(builder, 42, 42);
    b.outputs.push(Output {
        name: "dev".into(),
        path: gen::store_path(43, "pkg-42-dev"),
        nar_hash: gen::nar_hash(43),
        nar_size: Some(100),
        references: vec![],
    });
    b.source = Some(Source {
        uri: "git+https://github.com/NixOS/nixpkgs".into(),
        reference: Some("refs/heads/nixos-unstable".into()),
        attribute: Some("hello".into()),
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
    });
    b.drv_output_ids = vec![format!("sha256:{}!out", "ab".repeat(32))];
    b
}

#[test]
fn entries_served_by_the_log_verify_with_securesystemslib_and_parse_as_slsa_v1() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let alpha = gen::builder_key("alpha");
    let beta = gen::builder_key("beta");
    let opts = ServerOpts::default();
    add_builder(&dir.path().join("log"), &opts, &alpha.public().to_string());
    add_builder(&dir.path().join("log"), &opts, &beta.public().to_string());
    let server = Provenixd::start(&dir.path().join("log"), &opts);

    let envelopes = vec![
        gen::signed(&alpha, 1, 1),
        rich_build("beta").sign(&beta).canonical_json(),
    ];
    let served: Vec<Vec<u8>> = runtime().block_on(async {
        let client = LogClient::new(&server.url, Duration::from_secs(10)).unwrap();
        let resp = client.submit(&envelopes, true).await.unwrap();
        assert!(resp.checkpoint.is_some());
        let verifier: LogVerifier = server.verifier_key.parse().unwrap();
        let mut out = Vec::new();
        for (i, b) in [(0usize, gen::build("alpha", 1, 1)), (1, rich_build("beta"))] {
            let key = b.outputs[0].path.hash().to_string();
            let look = client.lookup(&key).await.unwrap();
            let (_, entries) = look.verify(&verifier).unwrap();
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].entry.leaf_bytes(), &envelopes[i][..]);
            out.push(look.entries[0].envelope.get().as_bytes().to_vec());
        }
        out
    });
    let keys = keys_json(&[&alpha, &beta]);
    let (ok, log) = check(&py, dir.path(), &served, &keys);
    assert!(ok, "third-party check failed:\n{log}");
    assert!(log.contains("ok: 2 envelope(s)"), "{log}");

    // The checkers really check: a flipped signature bit and an unknown predicate field fail.
    let mut env = Envelope::from_json(&served[0]).unwrap();
    env.signatures[0].sig[5] ^= 1;
    let (ok, log) = check(&py, dir.path(), &[env.canonical_json()], &keys);
    assert!(!ok, "a broken signature passed:\n{log}");

    let mut v: serde_json::Value =
        serde_json::to_value(gen::build("alpha", 7, 7).to_statement()).unwrap();
    v["predicate"]["runDetails"]["notInSlsa"] = 1.into();
    let bad = Envelope::sign(serde_json::to_vec(&v).unwrap(), &alpha).canonical_json();
    let (ok, log) = check(&py, dir.path(), &[bad], &keys);
    assert!(!ok, "an unknown SLSA field passed the strict model:\n{log}");
}
