//! The explorer in process (`router()` + `oneshot`) over real storage, on SQLite and on
//! PostgreSQL: the indexer's counts, agreement, disagreements and paging; the JSON views and
//! the pages that render them; escaping, headers and error codes; re-indexing and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use provenix_core::checkpoint::{LogSigner, LogVerifier};
use provenix_core::merkle::{self, Hash};
use provenix_core::nix::NixSecretKey;
use provenix_core::tpm::{PcrBanks, QuoteBundle};
use provenix_e2e::gen;
use provenix_e2e::pg::PgDb;
use provenix_server::api::{router, AppState, Limits};
use provenix_server::explorer;
use provenix_server::log::{Log, LogConfig};
use provenix_server::metrics::Metrics;
use provenix_server::store::Store;
use serde_json::Value;
use sqlx::Connection as _;
use tower::ServiceExt as _;

struct Fx {
    log: Log,
    app: Router,
    store: Store,
    signer: LogSigner,
    verifier: LogVerifier,
    url: String,
    keys: [NixSecretKey; 3],
    _dir: tempfile::TempDir,
    _pg: Option<PgDb>,
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn fixture(b: Backend) -> Option<Fx> {
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = match b {
        Backend::Sqlite => (Store::sqlite_url_in(dir.path()), None),
        Backend::Postgres => {
            let db = PgDb::create().await?;
            (db.url.clone(), Some(db))
        }
    };
    let store = Store::open(&url, 2).await.unwrap();
    let signer = LogSigner::generate("explorer.test/log").unwrap();
    let keys = [
        gen::builder_key("alpha"),
        gen::builder_key("beta"),
        gen::builder_key("gamma"),
    ];
    for k in &keys {
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
    let app = app_for(&log);
    Some(Fx {
        verifier: signer.verifier_key().parse().unwrap(),
        log,
        app,
        store,
        signer,
        url,
        keys,
        _dir: dir,
        _pg: pg,
    })
}

fn app_for(log: &Log) -> Router {
    router(AppState {
        log: log.clone(),
        explorer: true,
        limits: Arc::new(Limits::default()),
    })
}

async fn get(app: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn json(app: &Router, uri: &str) -> Value {
    let (s, _, body) = get(app, uri).await;
    assert_eq!(s, StatusCode::OK, "{uri}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn error_code(app: &Router, uri: &str) -> (StatusCode, String) {
    let (s, _, body) = get(app, uri).await;
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{uri}: {body}"));
    (s, v["error"]["code"].as_str().unwrap().to_owned())
}

async fn submit(fx: &Fx, envs: &[Vec<u8>]) {
    let mut body = b"{\"entries\":[".to_vec();
    for (i, e) in envs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e);
    }
    body.extend_from_slice(b"]}");
    let req = Request::builder()
        .method("POST")
        .uri("/v1/entries?wait=integrated")
        .body(Body::from(body))
        .unwrap();
    let resp = fx.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    for r in v["results"].as_array().unwrap() {
        assert!(r.get("index").is_some(), "rejected: {r}");
    }
}

fn nar(content: u64) -> String {
    gen::nar_hash(content).to_hex()
}

fn key_of(seed: u64) -> String {
    gen::store_path(seed, &format!("pkg-{seed}"))
        .hash()
        .to_string()
}

/// The scenario every test starts from (indices in order):
/// 0..9   alpha builds seeds 0..9 (content = seed)
/// 10..19 beta builds seeds 0..9 identically
/// 20     gamma builds seed 3 with other content, carrying a TPM quote byproduct
/// 21     alpha rebuilds seed 5 identically (another counter, so another leaf)
/// 22     alpha rebuilds seed 7 with other content
async fn scenario(fx: &Fx) {
    let [alpha, beta, gamma] = &fx.keys;
    let mut envs: Vec<Vec<u8>> = (0..10).map(|s| gen::signed(alpha, s, s)).collect();
    envs.extend((0..10).map(|s| gen::signed(beta, s, s)));
    let mut g = gen::build("gamma", 3, 1003);
    g.byproducts.push(
        QuoteBundle {
            attest: b"not a real TPMS_ATTEST".to_vec(),
            signature: vec![1, 2, 3],
            ak_public: vec![4, 5, 6],
            pcrs: PcrBanks::default(),
            event_log_sha256: None,
        }
        .to_descriptor(),
    );
    envs.push(g.sign(gamma).canonical_json());
    let mut re = gen::build("alpha", 5, 5);
    re.counter = Some(1005);
    envs.push(re.sign(alpha).canonical_json());
    envs.push(gen::signed(alpha, 7, 77));
    submit(fx, &envs).await;
    assert_eq!(explorer::catch_up(&fx.log).await.unwrap(), 23);
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
    counts_and_reproducibility,
    search_shows_agreement_and_proofs,
    builder_pages_page_through_entries,
    disagreements_newest_first,
    entries_pages_and_escaping,
    bad_parameters_get_their_codes,
    reindexing_and_restart_change_nothing,
    indexer_task_follows_the_checkpoint,
);

fn builder<'a>(home: &'a Value, name: &str) -> &'a Value {
    home["builders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no builder {name} in {home}"))
}

async fn counts_and_reproducibility(fx: Fx) {
    scenario(&fx).await;
    let home = json(&fx.app, "/v1/explorer/home").await;
    assert_eq!(home["origin"], "explorer.test/log");
    assert_eq!(home["verifierKey"], fx.signer.verifier_key());
    assert_eq!(home["checkpoint"]["size"], 23);
    assert_eq!(
        home["checkpoint"]["root"],
        fx.log.checkpoint().root().to_base64()
    );
    assert!(home["checkpoint"]["ageSeconds"].as_i64().unwrap() >= 0);
    assert_eq!(home["indexed"], 23);
    assert_eq!(home["disagreements"], 2);
    assert_eq!(home["cosignatures"], serde_json::json!([]));
    // The chart: 60 minutes, and the 23 entries all within them.
    assert_eq!(home["ingest"].as_array().unwrap().len(), 60);
    assert_eq!(home["ingestLastHour"], 23);
    // alpha: 12 entries (seed 5's identical rebuild is a leaf too); outputs: seeds 0..9 plus
    // seed 7's other content = 11, of which beta matched the first 10.
    let a = builder(&home, "alpha");
    assert_eq!(
        (&a["entries"], &a["outputs"], &a["matched"], &a["attested"]),
        (&12.into(), &11.into(), &10.into(), &0.into())
    );
    assert!((a["reproducibility"].as_f64().unwrap() - 10.0 / 11.0).abs() < 1e-9);
    let b = builder(&home, "beta");
    assert_eq!(
        (&b["entries"], &b["outputs"], &b["matched"]),
        (&10.into(), &10.into(), &10.into())
    );
    assert_eq!(b["reproducibility"], 1.0);
    let g = builder(&home, "gamma");
    assert_eq!(
        (&g["entries"], &g["outputs"], &g["matched"], &g["attested"]),
        (&1.into(), &1.into(), &0.into(), &1.into())
    );
    assert_eq!(g["reproducibility"], 0.0);

    // The page renders the same numbers.
    let (s, h, page) = get(&fx.app, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["content-security-policy"], explorer::page::CSP);
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        page.contains(&format!(
            "<code id=\"verifier-key\">{}</code>",
            fx.signer.verifier_key()
        )),
        "{page}"
    );
    assert!(
        page.contains("<dd id=\"checkpoint-size\">23</dd>"),
        "{page}"
    );
    assert!(page.contains("<tr data-builder=\"alpha\">"));
    assert!(page.contains("<td class=\"num\">90.9 %</td>"), "{page}");
    assert!(page.contains("<svg class=\"chart\" id=\"ingest-chart\""));
    assert!(!page.contains("<script"));
    let (s, h, css) = get(&fx.app, "/explorer.css").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/css; charset=utf-8");
    assert!(css.contains("table"));
}

async fn search_shows_agreement_and_proofs(fx: Fx) {
    scenario(&fx).await;
    // Seed 3: alpha and beta agree (value A), gamma differs (B), since gamma's entry 20.
    let path = gen::store_path(3, "pkg-3").to_string();
    let uri = format!("/v1/explorer/search?q={}", path.replace('/', "%2F"));
    let v = json(&fx.app, &uri).await;
    assert_eq!(v["kind"], "storePath");
    assert_eq!(v["query"], path);
    let r = &v["results"][0];
    assert_eq!(r["key"], key_of(3));
    assert_eq!(r["agree"], false);
    assert_eq!(r["conflict"]["sinceIndex"], 20);
    assert_eq!(r["values"][0]["label"], "A");
    assert_eq!(r["values"][0]["narHash"], nar(3));
    assert_eq!(
        r["values"][0]["builders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["alpha", "beta"]
    );
    assert_eq!(r["values"][1]["label"], "B");
    assert_eq!(r["values"][1]["narHash"], nar(1003));
    let rows: Vec<(String, String, String)> = r["agreement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["builder"].as_str().unwrap().to_owned(),
                a["label"].as_str().unwrap().to_owned(),
                a["differFrom"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("alpha".into(), "A".into(), "[\"gamma\"]".into()),
            ("beta".into(), "A".into(), "[\"gamma\"]".into()),
            ("gamma".into(), "B".into(), "[\"alpha\",\"beta\"]".into()),
        ]
    );
    // Each claim's inclusion proof verifies against the checkpoint in the response.
    let cp = fx
        .verifier
        .verify(v["checkpoint"].as_str().unwrap())
        .unwrap();
    assert_eq!(cp.size(), v["checkpointSize"].as_u64().unwrap());
    let claims = r["claims"].as_array().unwrap();
    assert_eq!(
        claims
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [3, 13, 20]
    );
    for c in claims {
        let idx = c["index"].as_u64().unwrap();
        let leaf = fx.store.leaf(idx).await.unwrap().unwrap();
        let lh = merkle::leaf_hash(&leaf);
        assert_eq!(c["leafHash"], lh.to_base64());
        let proof: Vec<Hash> = c["inclusionProof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| Hash::from_base64(h.as_str().unwrap()).unwrap())
            .collect();
        merkle::verify_inclusion(&lh, idx, cp.size(), &proof, cp.root()).unwrap();
        assert_eq!(c["envelope"], format!("/v1/entries/{idx}"));
    }
    assert_eq!(claims[2]["attestation"], "quote present, not verified here");
    assert_eq!(claims[0]["attestation"], "absent");

    // Seed 5: everyone agrees; alpha's second entry is a rebuild.
    let v = json(&fx.app, &format!("/v1/explorer/search?q={}", key_of(5))).await;
    let r = &v["results"][0];
    assert_eq!(
        (&v["kind"], &r["agree"]),
        (&"hashPart".into(), &true.into())
    );
    assert!(r["conflict"].is_null());
    let rebuilds: Vec<(u64, bool)> = r["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["index"].as_u64().unwrap(),
                c["rebuild"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(rebuilds, [(5, false), (15, false), (21, true)]);
    assert_eq!(r["values"][0]["builders"][0]["claims"], 2);

    // A .drv path finds the derivation's output; so does the .drv's bare hash part.
    let drv = gen::store_path(9 ^ 0xd7d7, "pkg-9.drv");
    for q in [drv.to_string(), drv.hash().to_string()] {
        let v = json(
            &fx.app,
            &format!("/v1/explorer/search?q={}", q.replace('/', "%2F")),
        )
        .await;
        assert_eq!(v["kind"], "derivation", "{q}");
        assert_eq!(v["results"][0]["key"], key_of(9));
        assert_eq!(v["results"][0]["claims"].as_array().unwrap().len(), 2);
    }
    // Unknown but well-formed: an empty result, not an error.
    let v = json(&fx.app, &format!("/v1/explorer/search?q={}", key_of(999))).await;
    assert_eq!(v["results"][0]["claims"], serde_json::json!([]));

    // Paging the claims of one key.
    let v = json(
        &fx.app,
        &format!("/v1/explorer/search?q={}&limit=2", key_of(3)),
    )
    .await;
    let r = &v["results"][0];
    assert_eq!(r["claims"].as_array().unwrap().len(), 2);
    assert_eq!(r["nextCursor"], "13");
    let v = json(
        &fx.app,
        &format!("/v1/explorer/search?q={}&limit=2&cursor=13", key_of(3)),
    )
    .await;
    let r = &v["results"][0];
    assert_eq!(r["claims"][0]["index"], 20);
    assert!(r["nextCursor"].is_null());

    // The page: the agreement table with each builder's row and value.
    let (s, _, page) = get(&fx.app, &format!("/search?q={}", path.replace('/', "%2F"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains(&format!(
        "<table class=\"agreement\" id=\"agreement-{}\">",
        key_of(3)
    )));
    assert!(
        page.contains("<tr data-builder=\"gamma\" data-value=\"B\" class=\"differ\">"),
        "{page}"
    );
    assert!(page.contains(&format!(
        "<td class=\"nar\"><code>{}</code></td>",
        nar(1003)
    )));
    assert!(page.contains("claims disagree"));
    assert!(page.contains("<a href=\"/v1/entries/20\">raw envelope</a>"));
    // The search box keeps the query.
    assert!(page.contains(&format!("value=\"{path}\"")), "{page}");
}

async fn builder_pages_page_through_entries(fx: Fx) {
    scenario(&fx).await;
    let v = json(&fx.app, "/v1/explorer/builders/alpha?limit=5").await;
    assert_eq!(v["key"], fx.keys[0].public().to_string());
    assert_eq!(v["summary"]["entries"], 12);
    let idx = |v: &Value| -> Vec<u64> {
        v["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["index"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(idx(&v), [22, 21, 9, 8, 7]);
    // 22 is seed 7 with other content: differs (from alpha's own and beta's build).
    assert_eq!(v["recent"][0]["outputs"][0]["status"], "differs");
    assert_eq!(v["recent"][2]["outputs"][0]["status"], "matched");
    assert_eq!(
        v["recent"][2]["outputs"][0]["matchedBy"],
        serde_json::json!(["beta"])
    );
    assert_eq!(v["recent"][4]["outputs"][0]["status"], "differs");
    let mut seen = idx(&v);
    let mut cursor = v["nextCursor"].as_str().unwrap().to_owned();
    loop {
        let v = json(
            &fx.app,
            &format!("/v1/explorer/builders/alpha?limit=5&cursor={cursor}"),
        )
        .await;
        seen.extend(idx(&v));
        match v["nextCursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, [22, 21, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    let g = json(&fx.app, "/v1/explorer/builders/gamma").await;
    assert_eq!(
        g["recent"][0]["attestation"],
        "quote present, not verified here"
    );
    assert!(g["attestation"]
        .as_str()
        .unwrap()
        .starts_with("1 of 1 entries carry a TPM quote (quote present, not verified here"));
    assert_eq!(g["recent"][0]["outputs"][0]["status"], "differs");

    let (s, _, page) = get(&fx.app, "/builder/gamma").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("<dd id=\"builder-repro\">0.0 %"), "{page}");
    assert!(page.contains("<tr data-index=\"20\">"));
    let (s, _, page) = get(&fx.app, "/builder/alpha?limit=5").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("href=\"/builder/alpha?cursor=7\""), "{page}");
    // A removed builder keeps its page; an unknown one is 404.
    fx.store.remove_builder("gamma").await.unwrap();
    fx.log.refresh_builders().await.unwrap();
    let g = json(&fx.app, "/v1/explorer/builders/gamma").await;
    assert!(g["key"].is_null());
    assert_eq!(g["summary"]["allowed"], false);
    assert_eq!(
        error_code(&fx.app, "/v1/explorer/builders/mallory").await,
        (StatusCode::NOT_FOUND, "unknown_builder".into())
    );
}

async fn disagreements_newest_first(fx: Fx) {
    scenario(&fx).await;
    let v = json(&fx.app, "/v1/explorer/disagreements").await;
    assert_eq!(v["total"], 2);
    let items = v["items"].as_array().unwrap();
    assert_eq!(
        items
            .iter()
            .map(|i| (
                i["key"].as_str().unwrap().to_owned(),
                i["sinceIndex"].as_u64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [(key_of(7), 22), (key_of(3), 20)]
    );
    // Seed 7: alpha and beta agree on content 7 (A); alpha alone claims 77 (B).
    assert_eq!(items[0]["values"][0]["narHash"], nar(7));
    assert_eq!(items[0]["values"][1]["narHash"], nar(77));
    assert_eq!(items[0]["values"][1]["builders"][0]["name"], "alpha");
    let p1 = json(&fx.app, "/v1/explorer/disagreements?limit=1").await;
    assert_eq!(p1["items"][0]["key"], key_of(7));
    let c = p1["nextCursor"].as_str().unwrap().to_owned();
    assert_eq!(c, format!("22-{}", key_of(7)));
    let p2 = json(
        &fx.app,
        &format!("/v1/explorer/disagreements?limit=1&cursor={c}"),
    )
    .await;
    assert_eq!(p2["items"][0]["key"], key_of(3));
    assert!(p2["nextCursor"].is_null());

    let (s, _, page) = get(&fx.app, "/disagreements").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("<span id=\"disagreement-total\">2</span>"));
    let first = page
        .find(&format!("<tr data-key=\"{}\">", key_of(7)))
        .unwrap();
    let second = page
        .find(&format!("<tr data-key=\"{}\">", key_of(3)))
        .unwrap();
    assert!(first < second, "newest first");
    assert!(page.contains("by <span class=\"builders\">alpha, beta</span>"));
}

async fn entries_pages_and_escaping(fx: Fx) {
    scenario(&fx).await;
    let v = json(&fx.app, "/v1/explorer/entries/20").await;
    assert_eq!(v["builder"], "gamma");
    assert_eq!(v["builderId"], "https://provenix.dev/builder/gamma");
    assert_eq!(v["outputs"][0]["narHash"], nar(1003));
    assert_eq!(v["keys"], serde_json::json!([key_of(3)]));
    assert_eq!(v["builtLocally"], true);
    assert_eq!(v["counter"], 3);
    assert_eq!(v["dependenciesTotal"], 2);
    assert_eq!(v["attestation"], "quote present, not verified here");
    assert_eq!(v["envelope"], "/v1/entries/20");
    assert_eq!(v["checkpointSize"], 23);

    // Everything from an entry is untrusted: a derivation and a source full of markup are
    // shown escaped, on every page that shows them.
    let mut evil = gen::build("beta", 50, 50);
    evil.derivation = None;
    evil.source = Some(provenix_core::entry::Source {
        uri: "\"><script>alert(1)</script>".into(),
        ..Default::default()
    });
    let mut stmt = evil.to_statement();
    stmt.predicate
        .build_definition
        .external_parameters
        .insert("derivation".into(), "<img src=x onerror=alert(2)>".into());
    let env = provenix_core::entry::Envelope::sign(serde_json::to_vec(&stmt).unwrap(), &fx.keys[1])
        .canonical_json();
    submit(&fx, &[env]).await;
    explorer::catch_up(&fx.log).await.unwrap();
    for uri in [
        "/entry/23",
        "/builder/beta",
        &format!("/search?q={}", key_of(50)),
    ] {
        let (s, _, page) = get(&fx.app, uri).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert!(!page.contains("<script"), "{uri}: {page}");
        assert!(!page.contains("<img"), "{uri}: {page}");
    }
    let (_, _, page) = get(&fx.app, "/entry/23").await;
    assert!(
        page.contains("&#60;img src=x onerror=alert(2)&#62;"),
        "{page}"
    );
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    // The search box echoes the query escaped.
    let (s, _, page) = get(&fx.app, "/search?q=%22%3E%3Cscript%3E").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(!page.contains("<script"), "{page}");
    assert!(
        page.contains("value=\"&#34;&#62;&#60;script&#62;\""),
        "{page}"
    );
}

async fn bad_parameters_get_their_codes(fx: Fx) {
    scenario(&fx).await;
    for (uri, status, code) in [
        ("/v1/explorer/search", StatusCode::BAD_REQUEST, "bad_query"),
        (
            "/v1/explorer/search?q=hello",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "/v1/explorer/search?q=%2Fnix%2Fstore%2Fxyz-a",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "/v1/explorer/disagreements?limit=0",
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            "/v1/explorer/disagreements?limit=101",
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            "/v1/explorer/disagreements?cursor=x",
            StatusCode::BAD_REQUEST,
            "bad_cursor",
        ),
        (
            "/v1/explorer/builders/alpha?cursor=-1",
            StatusCode::BAD_REQUEST,
            "bad_cursor",
        ),
        (
            "/v1/explorer/home?page=0",
            StatusCode::BAD_REQUEST,
            "bad_page",
        ),
        (
            "/v1/explorer/entries/x",
            StatusCode::BAD_REQUEST,
            "bad_index",
        ),
        (
            "/v1/explorer/entries/23",
            StatusCode::NOT_FOUND,
            "index_out_of_range",
        ),
    ] {
        assert_eq!(
            error_code(&fx.app, uri).await,
            (status, code.to_owned()),
            "{uri}"
        );
    }
    // Pages answer with the same status, as a page.
    for (uri, status) in [
        ("/search?q=hello", StatusCode::BAD_REQUEST),
        ("/entry/99", StatusCode::NOT_FOUND),
        ("/builder/mallory", StatusCode::NOT_FOUND),
        ("/disagreements?limit=1000", StatusCode::BAD_REQUEST),
    ] {
        let (s, h, page) = get(&fx.app, uri).await;
        assert_eq!(s, status, "{uri}");
        assert_eq!(h["content-security-policy"], explorer::page::CSP);
        assert!(
            page.contains("<section class=\"card error\" id=\"error\">"),
            "{page}"
        );
    }
    // An empty search is the search form.
    let (s, _, page) = get(&fx.app, "/search").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("<h1>Search</h1>"));
}

async fn read_stats(app: &Router) -> (Value, Value) {
    let home = json(app, "/v1/explorer/home").await;
    let dis = json(app, "/v1/explorer/disagreements").await;
    (home["builders"].clone(), dis)
}

async fn set_progress(fx: &Fx, value: &str) {
    let sql = "UPDATE meta SET value = $1 WHERE key = 'explorer_indexed'";
    if fx.url.starts_with("sqlite://") {
        let mut c = sqlx::SqliteConnection::connect(&fx.url).await.unwrap();
        sqlx::query(sql).bind(value).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(&fx.url).await.unwrap();
        sqlx::query(sql).bind(value).execute(&mut c).await.unwrap();
    }
}

async fn reindexing_and_restart_change_nothing(fx: Fx) {
    scenario(&fx).await;
    let before = read_stats(&fx.app).await;
    // Forget the progress (as after a crash before the progress write, or a deliberate
    // re-index): indexing the same leaves again is a no-op.
    set_progress(&fx, "0").await;
    assert_eq!(explorer::indexed(&fx.log).await.unwrap(), 0);
    assert_eq!(explorer::catch_up(&fx.log).await.unwrap(), 23);
    assert_eq!(read_stats(&fx.app).await, before);
    set_progress(&fx, "21").await;
    explorer::catch_up(&fx.log).await.unwrap();
    assert_eq!(read_stats(&fx.app).await, before);

    // A restart continues from where the index is.
    fx.log.shutdown().await;
    let log = Log::open(
        fx.store.clone(),
        fx.signer.clone(),
        LogConfig::default(),
        Metrics::new(),
    )
    .await
    .unwrap();
    let app = app_for(&log);
    assert_eq!(read_stats(&app).await, before);
    let fx = Fx { log, app, ..fx };
    submit(&fx, &[gen::signed(&fx.keys[2], 4, 4)]).await;
    assert_eq!(explorer::catch_up(&fx.log).await.unwrap(), 24);
    let home = json(&fx.app, "/v1/explorer/home").await;
    let g = builder(&home, "gamma");
    assert_eq!(
        (&g["entries"], &g["outputs"], &g["matched"]),
        (&2.into(), &2.into(), &1.into())
    );
    fx.log.shutdown().await;
}

async fn indexer_task_follows_the_checkpoint(fx: Fx) {
    let indexer = explorer::Indexer::start(fx.log.clone());
    for round in 0..3u64 {
        let envs: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                gen::signed(
                    &fx.keys[(i % 2) as usize],
                    round * 100 + i / 2,
                    round * 100 + i / 2,
                )
            })
            .collect();
        submit(&fx, &envs).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while explorer::indexed(&fx.log).await.unwrap() < 120 {
        assert!(
            std::time::Instant::now() < deadline,
            "indexer did not catch up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    indexer.stop().await;
    let home = json(&fx.app, "/v1/explorer/home").await;
    let a = builder(&home, "alpha");
    assert_eq!((&a["entries"], &a["matched"]), (&60.into(), &60.into()));
    assert_eq!(home["disagreements"], 0);
}
