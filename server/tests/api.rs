//! The log's HTTP API, in process (`router()` + `oneshot`), over real storage: every test runs
//! once on SQLite and once on PostgreSQL (the same suite, one storage contract).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use provenix_core::api::{
    BatchLookupResponse, ConsistencyResponse, EntryResponse, LookupResponse, SubmitResponse,
    SubmitResult,
};
use provenix_core::checkpoint::{LogSigner, LogVerifier};
use provenix_core::entry::Envelope;
use provenix_core::merkle::{self, MemoryTree};
use provenix_core::nix::NixSecretKey;
use provenix_core::tile;
use provenix_e2e::gen;
use provenix_e2e::pg::PgDb;
use provenix_server::api::{router, AppState, Limits};
use provenix_server::log::{Log, LogConfig};
use provenix_server::metrics::Metrics;
use provenix_server::store::Store;
use tower::ServiceExt as _;

struct Fx {
    log: Log,
    app: Router,
    store: Store,
    signer: LogSigner,
    verifier: LogVerifier,
    alpha: NixSecretKey,
    beta: NixSecretKey,
    _dir: tempfile::TempDir,
    _pg: Option<PgDb>,
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn open_store(b: Backend, dir: &std::path::Path) -> Option<(Store, Option<PgDb>)> {
    match b {
        Backend::Sqlite => Some((
            Store::open(&Store::sqlite_url_in(dir), 2).await.unwrap(),
            None,
        )),
        Backend::Postgres => {
            let db = PgDb::create().await?;
            Some((Store::open(&db.url, 2).await.unwrap(), Some(db)))
        }
    }
}

async fn fixture(b: Backend) -> Option<Fx> {
    let dir = tempfile::tempdir().unwrap();
    let (store, pg) = open_store(b, dir.path()).await?;
    let signer = LogSigner::generate("test.example/log").unwrap();
    let alpha = gen::builder_key("alpha");
    let beta = gen::builder_key("beta");
    for k in [&alpha, &beta] {
        store
            .add_builder(k.name(), &k.public().to_string())
            .await
            .unwrap();
    }
    let log = Log::open(
        store.clone(),
        signer.clone(),
        LogConfig::default(),
        Metrics::new(),
    )
    .await
    .unwrap();
    let app = router(AppState {
        log: log.clone(),
        explorer: false,
        limits: Arc::new(Limits {
            max_body_bytes: 1 << 20,
            ..Limits::default()
        }),
    });
    Some(Fx {
        verifier: signer.verifier_key().parse().unwrap(),
        log,
        app,
        store,
        signer,
        alpha,
        beta,
        _dir: dir,
        _pg: pg,
    })
}

async fn call(app: &Router, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn submit_body(envs: &[Vec<u8>]) -> Vec<u8> {
    let mut b = b"{\"entries\":[".to_vec();
    for (i, e) in envs.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(e);
    }
    b.extend_from_slice(b"]}");
    b
}

async fn submit(fx: &Fx, envs: &[Vec<u8>], wait: bool) -> SubmitResponse {
    let uri = if wait {
        "/v1/entries?wait=integrated"
    } else {
        "/v1/entries"
    };
    let (s, body) = call(&fx.app, Method::POST, uri, submit_body(envs)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["error"]["code"].as_str().unwrap().to_owned()
}

fn accepted(r: &SubmitResult) -> &provenix_core::api::Accepted {
    match r {
        SubmitResult::Accepted(a) => a,
        SubmitResult::Rejected { error } => panic!("rejected: {error:?}"),
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(fx) = super::fixture(super::Backend::Sqlite).await {
                    super::$name(fx).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(fx) = super::fixture(super::Backend::Postgres).await {
                    super::$name(fx).await;
                }
            }
        }
    )*};
}

both_backends!(
    submit_lookup_and_prove,
    duplicates_are_one_leaf,
    bad_input_gets_its_code_and_stores_nothing,
    removed_builder_is_refused,
    tiles_and_bundles_match_the_tree,
    consistency_between_checkpoints,
    restart_keeps_everything,
    storage_faults_lose_nothing,
    concurrent_lookups_are_coalesced_and_each_sees_its_own,
);

async fn submit_lookup_and_prove(fx: Fx) {
    let envs: Vec<Vec<u8>> = (0..5).map(|i| gen::signed(&fx.alpha, i, i)).collect();
    let resp = submit(&fx, &envs, true).await;
    let cp = fx
        .verifier
        .verify(resp.checkpoint.as_deref().unwrap())
        .unwrap();
    assert_eq!(cp.size(), 5);
    for (i, r) in resp.results.iter().enumerate() {
        let a = accepted(r);
        assert_eq!(a.index, i as u64);
        assert!(!a.duplicate);
        assert_eq!(a.leaf_hash, merkle::leaf_hash(&envs[i]));
        merkle::verify_inclusion(
            &a.leaf_hash,
            a.index,
            cp.size(),
            a.inclusion_proof.as_ref().unwrap(),
            cp.root(),
        )
        .unwrap();
    }
    // Lookup by store-path hash part, single and batch, each against one checkpoint.
    let key = gen::store_path(3, "pkg-3").hash().to_string();
    let (s, body) = call(&fx.app, Method::GET, &format!("/v1/lookup/{key}"), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let look: LookupResponse = serde_json::from_slice(&body).unwrap();
    let (_, entries) = look.verify(&fx.verifier).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].index, 3);
    assert_eq!(entries[0].entry.leaf_bytes(), &envs[3][..]);
    entries[0].entry.verify(&fx.alpha.public()).unwrap();

    let missing = gen::store_path(999, "x").hash().to_string();
    let body =
        serde_json::json!({"keys": [key, missing, gen::store_path(1, "pkg-1").hash().to_string()]});
    let (s, body) = call(
        &fx.app,
        Method::POST,
        "/v1/lookup",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let batch: BatchLookupResponse = serde_json::from_slice(&body).unwrap();
    let (_, results) = batch.verify(&fx.verifier).unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[&missing].is_empty());
    assert_eq!(results[&key][0].index, 3);

    // Realisation ids and hash parts in one batch: each key gets exactly its entries, whatever
    // order the database's collation sorts them in.
    let mut ca = gen::build("alpha", 50, 50);
    let rid = format!("sha256:{}!out", "0f".repeat(32));
    ca.drv_output_ids = vec![rid.clone()];
    let r = submit(&fx, &[ca.sign(&fx.alpha).canonical_json()], true).await;
    let ca_index = accepted(&r.results[0]).index;
    let ca_path = gen::store_path(50, "pkg-50").hash().to_string();
    let body = serde_json::json!({"keys": [rid.clone(), key.clone(), ca_path.clone(), "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"]});
    let (s, body) = call(
        &fx.app,
        Method::POST,
        "/v1/lookup",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let batch: BatchLookupResponse = serde_json::from_slice(&body).unwrap();
    let (_, results) = batch.verify(&fx.verifier).unwrap();
    assert_eq!(
        results[&rid].iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![ca_index]
    );
    assert_eq!(
        results[&ca_path]
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![ca_index]
    );
    assert_eq!(
        results[&key].iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![3]
    );
    assert!(results["zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"].is_empty());
    let (s, body) = call(&fx.app, Method::GET, &format!("/v1/lookup/{rid}"), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let look: LookupResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(look.verify(&fx.verifier).unwrap().1[0].index, ca_index);

    // By index.
    let (s, body) = call(&fx.app, Method::GET, "/v1/entries/4", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let e: EntryResponse = serde_json::from_slice(&body).unwrap();
    let (_, inc) = e.verify(&fx.verifier).unwrap();
    assert_eq!(inc.entry.leaf_bytes(), &envs[4][..]);

    // The explorer is off in this router: its pages are not served.
    let (s, b) = call(&fx.app, Method::GET, "/", vec![]).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );

    // Builders and health.
    let (s, body) = call(&fx.app, Method::GET, "/v1/builders", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["builders"][0]["name"], "alpha");
    assert_eq!(v["builders"][0]["key"], fx.alpha.public().to_string());
    let (s, body) = call(&fx.app, Method::GET, "/metrics", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("provenix_entries_total{result=\"accepted\"} 6"));
}

async fn duplicates_are_one_leaf(fx: Fx) {
    let e = gen::signed(&fx.alpha, 1, 1);
    let other = gen::signed(&fx.alpha, 2, 2);
    let r = submit(&fx, &[e.clone(), e.clone(), other.clone()], false).await;
    let idx: Vec<(u64, bool)> = r
        .results
        .iter()
        .map(|r| (accepted(r).index, accepted(r).duplicate))
        .collect();
    assert_eq!(idx, vec![(0, false), (0, true), (1, false)]);
    let r = submit(&fx, &[other, e], false).await;
    let idx: Vec<(u64, bool)> = r
        .results
        .iter()
        .map(|r| (accepted(r).index, accepted(r).duplicate))
        .collect();
    assert_eq!(idx, vec![(1, true), (0, true)]);
    assert_eq!(fx.log.sequenced_size(), 2);
    assert_eq!(fx.store.entry_count().await.unwrap(), 2);
    // A rebuild with a different result by the same builder is a new leaf.
    let rebuilt = gen::signed(&fx.alpha, 1, 77);
    let r = submit(&fx, &[rebuilt], false).await;
    assert_eq!(accepted(&r.results[0]).index, 2);
}

async fn bad_input_gets_its_code_and_stores_nothing(fx: Fx) {
    let app = &fx.app;
    let good = gen::signed(&fx.alpha, 1, 1);
    let mut env = Envelope::from_json(&good).unwrap();

    // Whole-request errors.
    for (body, status, code) in [
        (b"not json".to_vec(), StatusCode::BAD_REQUEST, "malformed"),
        (
            b"{\"entries\":[]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            b"{\"entries\":{}}".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            b"{\"entrys\":[1]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            vec![b' '; 2 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            submit_body(&vec![b"{}".to_vec(); 1001]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ] {
        let (s, b) = call(app, Method::POST, "/v1/entries", body).await;
        assert_eq!(
            (s, error_code(&b).as_str()),
            (status, code),
            "{}",
            String::from_utf8_lossy(&b)
        );
    }
    let (s, b) = call(
        app,
        Method::POST,
        "/v1/entries?wait=soon",
        submit_body(std::slice::from_ref(&good)),
    )
    .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "malformed")
    );

    // Per-entry errors, each in a batch with one good entry.
    let mut wrong_type = env.clone();
    wrong_type.payload_type = "application/json".into();
    let wrong_type = Envelope::sign(wrong_type.payload.clone(), &fx.alpha);
    let mut wrong_type_env = wrong_type.clone();
    wrong_type_env.payload_type = "application/json".into();
    let bad_b64 = String::from_utf8(good.clone())
        .unwrap()
        .replacen("\"payload\":\"", "\"payload\":\"!", 1)
        .into_bytes();
    let unknown = gen::signed(&gen::builder_key("mallory"), 1, 1);
    env.signatures[0].sig[0] ^= 0x40;
    let bad_sig = env.canonical_json();
    let mut big = gen::build("alpha", 9, 9);
    big.dependencies = (0..400)
        .map(|i| provenix_core::entry::Dependency {
            path: gen::store_path(i, "d"),
            nar_hash: gen::nar_hash(i),
        })
        .collect();
    let too_large = big.sign(&fx.alpha).canonical_json();
    assert!(too_large.len() > 65_535);
    let not_json = b"[1,2]".to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (wrong_type_env.canonical_json(), "malformed"),
        (bad_b64, "malformed"),
        (unknown, "unknown_builder"),
        (bad_sig, "bad_signature"),
        (too_large, "too_large"),
        (not_json, "malformed"),
    ];
    let before = fx.log.sequenced_size();
    for (bad, code) in &cases {
        let r = submit(&fx, std::slice::from_ref(bad), false).await;
        match &r.results[0] {
            SubmitResult::Rejected { error } => assert_eq!(error.code, *code, "{}", error.message),
            other => panic!("accepted a bad entry ({code}): {other:?}"),
        }
    }
    assert_eq!(
        fx.log.sequenced_size(),
        before,
        "a rejected entry was stored"
    );
    // A batch mixing good and bad: only the good one is stored, results stay in order.
    let r = submit(
        &fx,
        &[cases[2].0.clone(), good.clone(), cases[3].0.clone()],
        true,
    )
    .await;
    assert!(
        matches!(&r.results[0], SubmitResult::Rejected { error } if error.code == "unknown_builder")
    );
    assert_eq!(accepted(&r.results[1]).index, before);
    assert!(
        matches!(&r.results[2], SubmitResult::Rejected { error } if error.code == "bad_signature")
    );
    assert_eq!(fx.store.entry_count().await.unwrap(), before + 1);

    // Reads with bad parameters.
    let size = fx.log.checkpoint().size();
    for (uri, status, code) in [
        (
            "/tile/0/0001".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_tile_path",
        ),
        (
            "/tile/9/000".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_tile_path",
        ),
        (
            "/tile/0/x000/001".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_tile_path",
        ),
        (
            "/tile/0/000".to_owned(),
            StatusCode::NOT_FOUND,
            "tile_not_found",
        ),
        (
            "/tile/0/000.p/200".to_owned(),
            StatusCode::NOT_FOUND,
            "tile_not_found",
        ),
        (
            "/tile/entries/001".to_owned(),
            StatusCode::NOT_FOUND,
            "tile_not_found",
        ),
        (
            format!("/v1/entries/{size}"),
            StatusCode::NOT_FOUND,
            "index_out_of_range",
        ),
        (
            "/v1/entries/18446744073709551615".to_owned(),
            StatusCode::NOT_FOUND,
            "index_out_of_range",
        ),
        (
            "/v1/entries/-1".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_index",
        ),
        (
            "/v1/entries/99999999999999999999999".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_index",
        ),
        (
            "/v1/lookup/not-a-key".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            "/v1/proof/consistency?from=2&to=1".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_range",
        ),
        (
            format!("/v1/proof/consistency?from=1&to={}", size + 1),
            StatusCode::BAD_REQUEST,
            "bad_range",
        ),
        (
            "/v1/proof/consistency?from=x&to=1".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_range",
        ),
        (
            "/v1/proof/consistency".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_range",
        ),
        ("/nope".to_owned(), StatusCode::NOT_FOUND, "not_found"),
    ] {
        let (s, b) = call(app, Method::GET, &uri, vec![]).await;
        assert_eq!((s, error_code(&b).as_str()), (status, code), "{uri}");
    }
    for (body, status, code) in [
        (
            b"{\"keys\":[\"bad\"]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            b"{\"key\":[]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            serde_json::json!({"keys": vec!["0".repeat(32); 1001]})
                .to_string()
                .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ] {
        let (s, b) = call(app, Method::POST, "/v1/lookup", body).await;
        assert_eq!((s, error_code(&b).as_str()), (status, code));
    }
    // Still serving.
    let r = submit(&fx, &[gen::signed(&fx.beta, 5, 5)], true).await;
    assert!(r.checkpoint.is_some());
}

async fn removed_builder_is_refused(fx: Fx) {
    let r = submit(&fx, &[gen::signed(&fx.beta, 1, 1)], false).await;
    accepted(&r.results[0]);
    assert!(fx.store.remove_builder("beta").await.unwrap());
    fx.log.refresh_builders().await.unwrap();
    let r = submit(&fx, &[gen::signed(&fx.beta, 2, 2)], false).await;
    assert!(
        matches!(&r.results[0], SubmitResult::Rejected { error } if error.code == "unknown_builder")
    );
    // Re-adding works, and the log picks it up by itself within a second.
    fx.store
        .add_builder("beta", &fx.beta.public().to_string())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let r = submit(&fx, &[gen::signed(&fx.beta, 2, 2)], false).await;
    accepted(&r.results[0]);
}

async fn tiles_and_bundles_match_the_tree(fx: Fx) {
    let envs: Vec<Vec<u8>> = (0..300).map(|i| gen::signed(&fx.alpha, i, i)).collect();
    for chunk in envs.chunks(100) {
        submit(&fx, chunk, false).await;
    }
    fx.log.integrate_now().await.unwrap();
    let cp = fx.log.checkpoint();
    assert_eq!(cp.size(), 300);
    let (s, body) = call(&fx.app, Method::GET, "/checkpoint", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let cp2 = fx
        .verifier
        .verify(std::str::from_utf8(&body).unwrap())
        .unwrap();
    assert_eq!(cp2.size(), 300);

    // Rebuild the tree from tiles alone, as a static-file client would.
    let mut leaves = Vec::new();
    for t in tile::tiles_for_size(300)
        .iter()
        .filter(|t| t.kind == tile::TileKind::Hashes { level: 0 })
    {
        let (s, body) = call(&fx.app, Method::GET, &format!("/{t}"), vec![]).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(body.len(), usize::from(t.width) * 32);
        leaves.extend(
            body.chunks(32)
                .map(|c| merkle::Hash::from_slice(c).unwrap()),
        );
    }
    assert_eq!(merkle::root_of(&leaves), *cp2.root());
    let (s, body) = call(&fx.app, Method::GET, "/tile/1/000.p/1", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, merkle::root_of(&leaves[..256]).0.to_vec());

    // Entry bundles hold the leaves, each hashing to the tile's hash.
    let mut n = 0;
    for path in ["/tile/entries/000", "/tile/entries/001.p/44"] {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let resp = fx.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let immutable = resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable");
        assert_eq!(immutable, !path.contains(".p/"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        for leaf in tile::split_bundle(&body).unwrap() {
            assert_eq!(merkle::leaf_hash(leaf), leaves[n]);
            assert_eq!(leaf, &envs[n][..]);
            n += 1;
        }
    }
    assert_eq!(n, 300);
}

async fn consistency_between_checkpoints(fx: Fx) {
    let mut seen = Vec::new();
    for round in 0..4u64 {
        let envs: Vec<Vec<u8>> = (0..7)
            .map(|i| gen::signed(&fx.alpha, round * 100 + i, i))
            .collect();
        let r = submit(&fx, &envs, true).await;
        seen.push(
            fx.verifier
                .verify(r.checkpoint.as_deref().unwrap())
                .unwrap(),
        );
    }
    for a in &seen {
        for b in &seen {
            if a.size() > b.size() {
                continue;
            }
            let uri = format!("/v1/proof/consistency?from={}&to={}", a.size(), b.size());
            let (s, body) = call(&fx.app, Method::GET, &uri, vec![]).await;
            assert_eq!(s, StatusCode::OK);
            let c: ConsistencyResponse = serde_json::from_slice(&body).unwrap();
            if a.size() == b.size() {
                assert!(c.proof.is_empty());
                continue;
            }
            merkle::verify_consistency(a.size(), b.size(), &c.proof, a.root(), b.root()).unwrap();
        }
    }
    let (s, body) = call(
        &fx.app,
        Method::GET,
        "/v1/proof/consistency?from=0&to=7",
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(serde_json::from_slice::<ConsistencyResponse>(&body)
        .unwrap()
        .proof
        .is_empty());
}

async fn restart_keeps_everything(fx: Fx) {
    let envs: Vec<Vec<u8>> = (0..20).map(|i| gen::signed(&fx.alpha, i, i)).collect();
    submit(&fx, &envs, true).await;
    let before = fx.log.checkpoint();
    fx.log.shutdown().await;
    let log = Log::open(
        fx.store.clone(),
        fx.signer.clone(),
        LogConfig::default(),
        Metrics::new(),
    )
    .await
    .unwrap();
    assert_eq!(log.checkpoint().note(), before.note());
    assert_eq!(log.sequenced_size(), 20);
    // De-duplication survives the restart.
    let app = router(AppState {
        log: log.clone(),
        explorer: false,
        limits: Arc::new(Limits::default()),
    });
    let (s, body) = call(&app, Method::POST, "/v1/entries", submit_body(&envs[3..4])).await;
    assert_eq!(s, StatusCode::OK);
    let r: SubmitResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (
            accepted(&r.results[0]).index,
            accepted(&r.results[0]).duplicate
        ),
        (3, true)
    );
    // A different key for the same database is refused at start-up by open_data (CLI test);
    // here: the log refuses a stored checkpoint signed by another key.
    let other = LogSigner::generate("test.example/log").unwrap();
    let err = Log::open(
        fx.store.clone(),
        other,
        LogConfig::default(),
        Metrics::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    log.shutdown().await;
}

/// Recomputes everything from storage alone: entries contiguous, every stored checkpoint
/// signed by the log and equal to the root of that many stored leaves, sizes increasing.
async fn fsck(store: &Store, verifier: &LogVerifier) -> u64 {
    let count = store.entry_count().await.unwrap();
    let hashes = store.leaf_hashes(0, count).await.unwrap();
    let leaves = store.leaves(0, count).await.unwrap();
    for (h, l) in hashes.iter().zip(&leaves) {
        assert_eq!(*h, merkle::leaf_hash(l));
    }
    let tree = MemoryTree::from_leaves(hashes);
    let mut last = 0;
    for (size, note) in store.checkpoints().await.unwrap() {
        let cp = verifier.verify(&note).unwrap();
        assert_eq!(cp.size(), size);
        assert!(size >= last);
        last = size;
        assert_eq!(tree.root_at(size).unwrap(), *cp.root(), "checkpoint {size}");
    }
    count
}

async fn storage_faults_lose_nothing(fx: Fx) {
    let batch = |from: u64| -> Vec<Vec<u8>> {
        (from..from + 5)
            .map(|i| gen::signed(&fx.alpha, i, i))
            .collect()
    };
    submit(&fx, &batch(0), true).await;

    // Fails without persisting: 503, nothing stored, and the next write takes the same indices.
    fx.store
        .faults()
        .fail_before_commit
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let (s, b) = call(
        &fx.app,
        Method::POST,
        "/v1/entries",
        submit_body(&batch(100)),
    )
    .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
    );
    assert_eq!(fsck(&fx.store, &fx.verifier).await, 5);
    let r = submit(&fx, &batch(100), true).await;
    assert_eq!(accepted(&r.results[0]).index, 5);
    assert!(!accepted(&r.results[0]).duplicate);

    // Fails after persisting: 503, but the entries are stored; a retry finds them as duplicates
    // at the indices they got, and the tree and checkpoints include them.
    fx.store
        .faults()
        .fail_after_commit
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let (s, b) = call(
        &fx.app,
        Method::POST,
        "/v1/entries",
        submit_body(&batch(200)),
    )
    .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
    );
    assert_eq!(fsck(&fx.store, &fx.verifier).await, 15);
    let r = submit(&fx, &batch(200), true).await;
    for (i, res) in r.results.iter().enumerate() {
        assert_eq!(
            (accepted(res).index, accepted(res).duplicate),
            (10 + i as u64, true)
        );
    }
    let r = submit(&fx, &batch(300), true).await;
    assert_eq!(accepted(&r.results[0]).index, 15);
    assert_eq!(fx.log.checkpoint().size(), 20);
    assert_eq!(fsck(&fx.store, &fx.verifier).await, 20);
    // A fresh log over the same storage agrees.
    fx.log.shutdown().await;
    let log = Log::open(
        fx.store.clone(),
        fx.signer.clone(),
        LogConfig::default(),
        Metrics::new(),
    )
    .await
    .unwrap();
    assert_eq!(log.checkpoint().size(), 20);
    log.shutdown().await;
}

/// Many concurrent lookups (coalesced into shared queries by the log): each gets exactly the
/// entries under its own keys below its own size, in index order.
async fn concurrent_lookups_are_coalesced_and_each_sees_its_own(fx: Fx) {
    let mut envs = Vec::new();
    for seed in 0..20u64 {
        envs.push(gen::signed(&fx.alpha, seed, seed));
        // Every other path is also built by beta, with other content: two entries per key.
        if seed % 2 == 0 {
            envs.push(gen::signed(&fx.beta, seed, seed + 1000));
        }
    }
    let r = submit(&fx, &envs, true).await;
    let mut rows: Vec<(String, u64)> = Vec::new();
    for (env, res) in envs.iter().zip(&r.results) {
        let entry = provenix_core::entry::Entry::parse(env).unwrap();
        for k in entry.keys() {
            rows.push((k.to_string(), accepted(res).index));
        }
    }
    let keys: Vec<String> = {
        let mut k: Vec<String> = rows.iter().map(|(k, _)| k.clone()).collect();
        k.sort();
        k.dedup();
        k
    };
    let total = envs.len() as u64;
    let by_index: std::collections::HashMap<u64, Vec<u8>> = envs
        .iter()
        .zip(&r.results)
        .map(|(env, res)| (accepted(res).index, env.clone()))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..300usize {
        let log = fx.log.clone();
        let mine: Vec<String> = (0..1 + i % 3)
            .map(|j| keys[(i * 7 + j * 5) % keys.len()].clone())
            .chain(std::iter::once(format!("missing-{i}")))
            .collect();
        let size = (i as u64 * 13) % (total + 1);
        tasks.push(tokio::spawn(async move {
            let got = log.lookup(&mine, size).await.unwrap();
            (mine, size, got)
        }));
    }
    for t in tasks {
        let (mine, size, got) = t.await.unwrap();
        let mut want: Vec<(String, u64)> = rows
            .iter()
            .filter(|(k, i)| mine.contains(k) && *i < size)
            .cloned()
            .collect();
        want.sort();
        for e in &got {
            assert_eq!(e.leaf, by_index[&e.index], "the leaf of another index");
        }
        let got: Vec<(String, u64)> = got.iter().map(|e| (e.key.clone(), e.index)).collect();
        assert_eq!(got, want, "keys {mine:?} below {size}");
    }
}
