//! Witnessing end to end: `provenixd` asks a real `provenix witness` to cosign each checkpoint
//! and serves the cosigned checkpoint; the witness speaks C2SP tlog-witness exactly and refuses a
//! forked log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use provenix::logclient::LogClient;
use provenix_core::checkpoint::{LogSigner, LogVerifier};
use provenix_core::merkle::Hash;
use provenix_core::witness::{valid_cosignatures, AddCheckpoint, CosignerVerifier};
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_e2e::service::Service;
use provenix_e2e::{gen, runtime};

fn witness(dir: &std::path::Path, log_keys: &[&str]) -> (Service, CosignerVerifier) {
    provenix_e2e::witness::start(dir, log_keys)
}

fn log_with_witness(
    dir: &std::path::Path,
    name: &str,
    key_file: Option<&std::path::Path>,
    w: &Service,
    wkey: &CosignerVerifier,
) -> Provenixd {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    if let Some(k) = key_file {
        std::fs::copy(k, data.join("log.key")).unwrap();
    }
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "origin = \"log.example\"\n[[witness]]\nurl = {:?}\nkey = \"{wkey}\"\n",
            w.url
        ),
    )
    .unwrap();
    let opts = ServerOpts {
        config: Some(cfg),
        ..ServerOpts::default()
    };
    add_builder(
        &data,
        &opts,
        &gen::builder_key("alpha").public().to_string(),
    );
    Provenixd::start(&data, &opts)
}

#[test]
fn the_log_serves_checkpoints_cosigned_by_its_witness_and_a_fork_gets_none() {
    let dir = tempfile::tempdir().unwrap();
    // The log's key first, so the witness can be configured with it.
    let log_key = LogSigner::generate("log.example").unwrap();
    std::fs::write(dir.path().join("log.key"), log_key.secret_string()).unwrap();
    let (w, wkey) = witness(dir.path(), &[log_key.verifier_key()]);
    let log = log_with_witness(
        dir.path(),
        "log",
        Some(&dir.path().join("log.key")),
        &w,
        &wkey,
    );
    assert_eq!(log.verifier_key, log_key.verifier_key());
    let verifier: LogVerifier = log.verifier_key.parse().unwrap();
    let alpha = gen::builder_key("alpha");
    let rt = runtime();
    let client = LogClient::new(&log.url, Duration::from_secs(10)).unwrap();
    for round in 0..3u64 {
        let envs: Vec<Vec<u8>> = (0..5)
            .map(|i| gen::signed(&alpha, round * 10 + i, i))
            .collect();
        let r = rt.block_on(client.submit(&envs, true)).unwrap();
        let note = r.checkpoint.unwrap();
        let cp = verifier.verify(&note).unwrap();
        assert_eq!(cp.size(), 5 * (round + 1));
        let cos = valid_cosignatures(&note, std::slice::from_ref(&wkey));
        assert_eq!(
            cos.len(),
            1,
            "checkpoint {} not cosigned: {note}",
            cp.size()
        );
        // /checkpoint and lookups carry the same cosigned note.
        let served = rt.block_on(client.checkpoint()).unwrap();
        assert_eq!(
            valid_cosignatures(&served, std::slice::from_ref(&wkey)).len(),
            1
        );
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("wstate/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["origins"]["log.example"]["size"], 15);

    // A fork: the same key and origin, a different history. The witness refuses to cosign it.
    let fork = log_with_witness(
        dir.path(),
        "fork",
        Some(&dir.path().join("log.key")),
        &w,
        &wkey,
    );
    let fclient = LogClient::new(&fork.url, Duration::from_secs(10)).unwrap();
    let envs: Vec<Vec<u8>> = (0..20).map(|i| gen::signed(&alpha, 1000 + i, i)).collect();
    let r = rt.block_on(fclient.submit(&envs, true)).unwrap();
    let note = r.checkpoint.unwrap();
    assert_eq!(verifier.verify(&note).unwrap().size(), 20);
    assert!(
        valid_cosignatures(&note, std::slice::from_ref(&wkey)).is_empty(),
        "the witness cosigned a fork"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("wstate/state.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["origins"]["log.example"]["size"], 15,
        "the fork moved the witness's state"
    );
}

#[test]
fn witness_protocol_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogSigner::generate("log.example").unwrap();
    let (w, _) = witness(dir.path(), &[log.verifier_key()]);
    let rt = runtime();
    let http = reqwest::Client::new();
    let post = |body: String| {
        rt.block_on(async {
            let r = http
                .post(format!("{}/add-checkpoint", w.url))
                .body(body)
                .send()
                .await
                .unwrap();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), ct, r.text().await.unwrap())
        })
    };
    let req = |old: u64, proof: Vec<Hash>, note: &str| {
        AddCheckpoint {
            old_size: old,
            proof,
            checkpoint: note.to_owned(),
        }
        .to_body()
    };
    // Build a real tree to sign.
    let leaves: Vec<Hash> = (0u8..10)
        .map(|i| provenix_core::merkle::leaf_hash(&[i]))
        .collect();
    let tree = provenix_core::merkle::MemoryTree::from_leaves(leaves);
    let cp4 = log.sign(4, tree.root_at(4).unwrap()).unwrap();
    let cp10 = log.sign(10, tree.root_at(10).unwrap()).unwrap();

    assert_eq!(post("garbage".into()).0, 400);
    let stranger = LogSigner::generate("other.example")
        .unwrap()
        .sign(1, Hash::default())
        .unwrap();
    assert_eq!(post(req(0, vec![], stranger.note())).0, 404);
    let impostor = LogSigner::generate("log.example")
        .unwrap()
        .sign(4, tree.root_at(4).unwrap())
        .unwrap();
    assert_eq!(post(req(0, vec![], impostor.note())).0, 403);
    assert_eq!(post(req(11, vec![], cp10.note())).0, 400);
    assert_eq!(post(req(0, vec![Hash::default()], cp4.note())).0, 400);
    let (s, _, body) = post(req(0, vec![], cp4.note()));
    assert_eq!(s, 200);
    assert!(body.starts_with("\u{2014} witness.example/w1 "), "{body}");
    // Wrong old size: 409 with the size the witness has.
    let (s, ct, body) = post(req(3, tree.consistency_proof(3, 10).unwrap(), cp10.note()));
    assert_eq!(
        (s, ct.as_deref(), body.as_str()),
        (409, Some("text/x.tlog.size"), "4\n")
    );
    // A proof that does not verify: 422.
    let mut bad = tree.consistency_proof(4, 10).unwrap();
    bad[0].0[0] ^= 1;
    assert_eq!(post(req(4, bad, cp10.note())).0, 422);
    // The right proof: cosigned; same size with another root: 409.
    assert_eq!(
        post(req(4, tree.consistency_proof(4, 10).unwrap(), cp10.note())).0,
        200
    );
    let other10 = log.sign(10, Hash([7; 32])).unwrap();
    let (s, _, body) = post(req(10, vec![], other10.note()));
    assert_eq!((s, body.as_str()), (409, "10\n"));
}

/// `provenix substituter` with a trust file requiring the witness's cosignature on the log's
/// checkpoint: it refuses the log's entries while the checkpoint lacks it (HTTP 404, the decision
/// says why) and serves the path once the log publishes a checkpoint the witness cosigned.
#[test]
fn a_substituter_requiring_a_witness_refuses_a_checkpoint_without_its_cosignature() {
    use provenix_e2e::substituter::{proxy_key, Proxy, StaticServer, Trust};
    if !provenix_e2e::require_tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log_key = LogSigner::generate("log.example").unwrap();
    std::fs::write(dir.path().join("log.key"), log_key.secret_string()).unwrap();
    let (w, wkey) = witness(dir.path(), &[log_key.verifier_key()]);

    // The log first runs without witnesses: its checkpoints carry no cosignature.
    let data = dir.path().join("log");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(dir.path().join("log.key"), data.join("log.key")).unwrap();
    let plain = ServerOpts::default();
    let alpha = gen::builder_key("alpha");
    add_builder(&data, &plain, &alpha.public().to_string());
    let mut log = Provenixd::start(&data, &plain);
    let rt = runtime();
    let client = LogClient::new(&log.url, Duration::from_secs(10)).unwrap();
    let r = rt
        .block_on(client.submit(&[gen::signed_small(&alpha, 1, 1)], true))
        .unwrap();
    assert!(valid_cosignatures(&r.checkpoint.unwrap(), std::slice::from_ref(&wkey)).is_empty());

    // An upstream cache holding the path's narinfo (what the entry claims).
    let path = gen::store_path(1, "pkg-1");
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(
        cache.join(format!("{}.narinfo", path.hash())),
        format!(
            "StorePath: {path}\nURL: nar/{}.nar\nCompression: none\nNarHash: {}\nNarSize: 4097\n",
            path.hash(),
            gen::nar_hash(1).to_nix32_prefixed()
        ),
    )
    .unwrap();
    let upstream = StaticServer::start(&cache);
    let (sec, _) = proxy_key(&dir.path().join("proxy"), "proxy-witness-1");
    let trust = Trust {
        logs: vec![(log.url.clone(), log.verifier_key.clone())],
        builders: vec![("alpha".into(), alpha.public().to_string())],
        threshold: "1 of [alpha]".into(),
        dissent: "veto".into(),
        upstreams: vec![upstream.url.clone()],
        signing_key_file: sec,
        state_file: dir.path().join("proxy-state.json"),
        extra: String::new(),
    };
    let key_line = format!("key = {:?}\n", log.verifier_key);
    let text = trust.text().replacen(
        &key_line,
        &format!("{key_line}witnesses = [\"{wkey}\"]\nmin-witnesses = 1\n"),
        1,
    );
    assert!(text.contains("min-witnesses = 1"));
    let cfg = dir.path().join("trust.toml");
    std::fs::write(&cfg, text).unwrap();
    // The same trust file without the requirement serves it: the entry itself is fine.
    let lax_cfg = trust.write(&dir.path().join("lax.toml"));
    let proxy = Proxy::start(&cfg);
    let lax = Proxy::start(&lax_cfg);
    let get = |url: String| {
        rt.block_on(async {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    assert_eq!(
        get(format!("{}/{}.narinfo", lax.url, path.hash())).0,
        200,
        "without a witness requirement the path is served"
    );
    let (s, body) = get(format!("{}/{}.narinfo", proxy.url, path.hash()));
    assert_eq!(s, 404, "{body}");
    let (s, body) = get(format!("{}/v1/decision/{}?fresh=1", proxy.url, path.hash()));
    assert_eq!(s, 200, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["verdict"]["status"], "not_trusted", "{d:#}");
    let failed = d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "log_failed")
        .unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(failed["failure"]["code"], "unwitnessed", "{d:#}");
    assert!(
        failed["failure"]["detail"]
            .as_str()
            .unwrap()
            .contains("carries 0 valid cosignature(s) of the 1 required from [witness.example/w1]"),
        "{d:#}"
    );

    // The log restarts with the witness configured; its next checkpoint is cosigned.
    assert!(log.terminate());
    let cfg_log = dir.path().join("log.toml");
    std::fs::write(
        &cfg_log,
        format!("[[witness]]\nurl = {:?}\nkey = \"{wkey}\"\n", w.url),
    )
    .unwrap();
    let log = Provenixd::start(
        &data,
        &ServerOpts {
            config: Some(cfg_log),
            listen: Some(log.url.trim_start_matches("http://").to_owned()),
            ..ServerOpts::default()
        },
    );
    let r = rt
        .block_on(client.submit(&[gen::signed_small(&alpha, 2, 2)], true))
        .unwrap();
    let note = r.checkpoint.unwrap();
    assert_eq!(
        valid_cosignatures(&note, std::slice::from_ref(&wkey)).len(),
        1,
        "{note}"
    );
    let (s, body) = get(format!("{}/{}.narinfo", proxy.url, path.hash()));
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains(&format!(
            "NarHash: {}",
            gen::nar_hash(1).to_nix32_prefixed()
        )),
        "{body}"
    );
    drop((proxy, lax, log, w));
}
