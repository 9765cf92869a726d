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

#[tokio::test]
async fn a_log_without_the_required_cosignatures_does_not_count() {
    use provenix_core::witness::{add_signature_lines, split_note, CosignerKey};
    let alpha = key("alpha");
    let leaf = envelope(&alpha).canonical_json();
    let tree = MemoryTree::from_leaves([leaf_hash(&leaf)]);
    let signer = LogSigner::generate("witnessed.test").unwrap();
    let cp = signer.sign(1, tree.root()).unwrap();
    let w1 = CosignerKey::generate("w1.example").unwrap();
    let w2 = CosignerKey::generate("w2.example").unwrap();
    let (text, _) = split_note(cp.note()).unwrap();
    let answer = |note: String| BatchLookupResponse {
        checkpoint: note,
        results: BTreeMap::from([(
            path().hash().to_string(),
            vec![ProvedEntry {
                index: 0,
                leaf_hash: tree.leaf(0).unwrap(),
                envelope: RawValue::from_string(String::from_utf8(leaf.clone()).unwrap()).unwrap(),
                inclusion_proof: vec![],
            }],
        )]),
    };
    let bare = fake_log(answer(cp.note().to_owned())).await;
    let by_w1 = fake_log(answer(add_signature_lines(
        cp.note(),
        &[w1.cosign(text.as_bytes(), 1_700_000_000)],
    )))
    .await;
    // A cosignature line under w1's name but made with w2's key: not w1's.
    let forged = {
        let line = w2.cosign(text.as_bytes(), 1_700_000_000);
        line.replace("w2.example", "w1.example")
    };
    let fake_w1 = fake_log(answer(add_signature_lines(cp.note(), &[forged]))).await;
    let decide = |url: String, witnesses: &str| {
        let text = format!(
            "[[log]]\nurl = {url:?}\nkey = {:?}\n{witnesses}\n[[builder]]\nname = \"alpha\"\nkey = {:?}\n[policy]\nthreshold = \"1 of [alpha]\"\n",
            signer.verifier_key(),
            alpha.public().to_string()
        );
        async move {
            let config = TrustConfig::parse(&text).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let state = Arc::new(
                LogState::open(&dir.path().join("s.json"), &[config.logs[0].key.clone()]).unwrap(),
            );
            let q = Quorum::new(&config, &QuorumOptions::default(), state).unwrap();
            let (mut d, lookup) = q.decide(&[path()]).await;
            (d.pop().unwrap().0, lookup)
        }
    };
    let require_w1 = format!("witnesses = [{:?}]\nmin-witnesses = 1", w1.verifier_key());
    // Without a witness requirement the bare checkpoint counts.
    let (d, _) = decide(bare.clone(), "").await;
    assert!(d.is_trusted(), "{d}");
    // Required and missing, or forged: the log's entries do not count, and the decision says why.
    for url in [bare, fake_w1] {
        let (d, lookup) = decide(url, &require_w1).await;
        assert_eq!(d.verdict, Verdict::NotTrusted, "{d}");
        let failure = lookup.logs[0].failure.clone().unwrap();
        assert_eq!(
            failure,
            provenix_core::policy::LogFailureKind::Unwitnessed(
                "its checkpoint of size 1 carries 0 valid cosignature(s) of the 1 required from [w1.example]".into()
            )
        );
        assert!(
            d.to_string()
                .contains("not witnessed: its checkpoint of size 1 carries 0 valid cosignature(s)"),
            "{d}"
        );
    }
    // Cosigned by w1: counts.
    let (d, lookup) = decide(by_w1.clone(), &require_w1).await;
    assert!(lookup.logs[0].failure.is_none(), "{:?}", lookup.logs);
    assert!(d.is_trusted(), "{d}");
    // Two required, one present: refused.
    let both = format!(
        "witnesses = [{:?}, {:?}]",
        w1.verifier_key(),
        w2.verifier_key()
    );
    let (d, lookup) = decide(by_w1, &both).await;
    assert!(!d.is_trusted(), "{d}");
    assert!(matches!(
        lookup.logs[0].failure,
        Some(provenix_core::policy::LogFailureKind::Unwitnessed(_))
    ));
}
