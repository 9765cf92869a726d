//! The quorum's checks against a log that lies: a fake log (axum on loopback) built from core's
//! `MemoryTree` and `LogSigner`, serving entries a real log would refuse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::routing::post;
use axum::{Json, Router};
use provenix_core::api::{BatchLookupResponse, ProvedEntry};
use provenix_core::checkpoint::LogSigner;
use provenix_core::entry::{Envelope, NixBuild, Output};
use provenix_core::merkle::{leaf_hash, Hash, MemoryTree};
use provenix_core::nix::{NarHash, NixSecretKey, StorePath};
use provenix_core::policy::{Rejection, TrustConfig, Verdict};
use serde_json::value::RawValue;

use super::state::LogState;
use super::{Quorum, QuorumOptions};

fn key(name: &str) -> NixSecretKey {
    use sha2::Digest as _;
    NixSecretKey::from_seed(name, sha2::Sha256::digest(name.as_bytes()).into()).unwrap()
}

fn path() -> StorePath {
    "/nix/store/00000000000000000000000000000000-hello"
        .parse()
        .unwrap()
}

fn envelope(k: &NixSecretKey) -> Envelope {
    NixBuild {
        builder: k.name().into(),
        outputs: vec![Output {
            name: "out".into(),
            path: path(),
            nar_hash: NarHash::from_bytes([7; 32]),
            nar_size: Some(100),
            references: vec![],
        }],
        built_locally: true,
        ..Default::default()
    }
    .sign(k)
}

/// Serves `POST /v1/lookup` with a fixed answer.
async fn fake_log(answer: BatchLookupResponse) -> String {
    let body = serde_json::to_value(&answer).unwrap();
    let app = Router::new().route(
        "/v1/lookup",
        post(move || {
            let b = body.clone();
            async move { Json(b) }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

#[tokio::test]
async fn only_entries_passing_every_check_vote() {
    let (alpha, beta, gamma, mallory) = (key("alpha"), key("beta"), key("gamma"), key("mallory"));
    let good_alpha = envelope(&alpha);
    // beta's signature is broken, but the log included it anyway.
    let mut bad_beta = envelope(&beta);
    bad_beta.signatures[0].sig[3] ^= 1;
    let good_gamma = envelope(&gamma);
    let unknown = envelope(&mallory);
    let leaves: Vec<Vec<u8>> = [&good_alpha, &bad_beta, &good_gamma, &unknown]
        .iter()
        .map(|e| e.canonical_json())
        .collect();
    let tree = MemoryTree::from_leaves(leaves.iter().map(|l| leaf_hash(l)));
    let signer = LogSigner::generate("fake.test").unwrap();
    let cp = signer.sign(tree.size(), tree.root()).unwrap();
    let proved = |i: usize, proof_for: u64, leaf_hash: Hash| ProvedEntry {
        index: i as u64,
        leaf_hash,
        envelope: RawValue::from_string(String::from_utf8(leaves[i].clone()).unwrap()).unwrap(),
        inclusion_proof: tree.inclusion_proof(proof_for, tree.size()).unwrap(),
    };
    let entries = vec![
        // The leafHash field is garbage: it is recomputed, never trusted.
        proved(0, 0, Hash([9; 32])),
        proved(1, 1, tree.leaf(1).unwrap()),
        // gamma's entry with the proof of another leaf.
        proved(2, 3, tree.leaf(2).unwrap()),
        proved(3, 3, tree.leaf(3).unwrap()),
    ];
    let url = fake_log(BatchLookupResponse {
        checkpoint: cp.note().to_owned(),
        results: BTreeMap::from([(path().hash().to_string(), entries)]),
    })
    .await;

    let text = format!(
        "[[log]]\nurl = {url:?}\nkey = {:?}\n{}[policy]\nthreshold = \"2 of [alpha, beta, gamma]\"\n",
        signer.verifier_key(),
        [&alpha, &beta, &gamma]
            .iter()
            .map(|k| format!("[[builder]]\nname = {:?}\nkey = {:?}\n", k.name(), k.public().to_string()))
            .collect::<String>()
    );
    let config = TrustConfig::parse(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(
        LogState::open(
            &dir.path().join("state.json"),
            &[config.logs[0].key.clone()],
        )
        .unwrap(),
    );
    let q = Quorum::new(&config, &QuorumOptions::default(), state).unwrap();
    let (mut decided, lookup) = q.decide(&[path()]).await;
    let (d, ev) = decided.pop().unwrap();
    assert!(lookup.logs[0].failure.is_none(), "{:?}", lookup.logs);
    assert_eq!(lookup.logs[0].checkpoint_size, Some(4));
    assert_eq!(ev.claims.len(), 1);
    assert_eq!(ev.claims[0].builder, "alpha");
    let rejected: Vec<(Option<&str>, &Rejection)> = ev
        .rejected
        .iter()
        .map(|r| (r.builder.as_deref(), &r.reason))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (Some("beta"), &Rejection::BadSignature),
            (Some("gamma"), &Rejection::BadInclusionProof),
            (Some("mallory"), &Rejection::UnknownBuilder),
        ]
    );
    assert_eq!(d.verdict, Verdict::NotTrusted);
    assert_eq!(d.agreed, vec!["alpha".to_owned()]);

    // A checkpoint signed by another key: the whole answer is refused.
    let other = LogSigner::generate("fake.test").unwrap();
    let url2 = fake_log(BatchLookupResponse {
        checkpoint: other
            .sign(tree.size(), tree.root())
            .unwrap()
            .note()
            .to_owned(),
        results: BTreeMap::new(),
    })
    .await;
    let config2 = TrustConfig::parse(&text.replace(&url, &url2)).unwrap();
    let q2 = Quorum::new(&config2, &QuorumOptions::default(), q.state().clone()).unwrap();
    let (_, lookup) = q2.decide(&[path()]).await;
    assert!(
        matches!(&lookup.logs[0].failure, Some(provenix_core::policy::LogFailureKind::BadCheckpoint(m)) if m.contains("no signature by the log key")),
        "{:?}",
        lookup.logs[0].failure
    );
}
