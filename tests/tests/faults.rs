//! Faults and limits (issue 8), with real parts: the real `provenixd` and `provenix substituter`
//! binaries, a private PostgreSQL cluster of this test's own, a real size-limited filesystem,
//! real HTTP on loopback. Every negative answer is checked for its exact status and error code,
//! and every test that writes ends by reading the whole log back through the public tile API:
//! every acknowledged entry is at its index and the signed checkpoint's root recomputes.
//!
//! - PostgreSQL stopped under sustained ingest, then restarted (provenixd keeps running);
//! - the data disk full (SQLite on a small tmpfs), then freed;
//! - clients that dribble their headers or their body, and more connections than allowed;
//! - bodies, batches and JSON nesting over the limits, and a full sequencer queue;
//! - a substituter whose log answers slowly or with garbage, and its own connection limits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provenix_core::checkpoint::{LogSigner, LogVerifier};
use provenix_core::nix::NixSecretKey;
use provenix_e2e::fault::{
    check_acked, check_covered, entries_body, fill, peak_rss_kib, record_acked, send, Acked,
    Answer, FakeHttp, FakeRequest, Handler, Reply, Tmpfs,
};
use provenix_e2e::pg::PgCluster;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_e2e::substituter::{proxy_key, Proxy, Trust};
use provenix_e2e::{ci, gen, runtime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A log in `dir/log` with builder `alpha` allowed, started with `config` as its server.toml.
fn start_log(dir: &Path, config: &str, database: Option<String>) -> (Provenixd, ServerOpts) {
    let data = dir.join("log");
    let cfg = dir.join("server.toml");
    std::fs::write(&cfg, config).unwrap();
    let opts = ServerOpts {
        database,
        config: Some(cfg),
        ..ServerOpts::default()
    };
    add_builder(
        &data,
        &opts,
        &gen::builder_key("alpha").public().to_string(),
    );
    let server = Provenixd::start(&data, &opts);
    (server, opts)
}

/// A client that opens a connection per request: a server may close a connection after an
/// error answer, and a pooled one would make the next request fail for the wrong reason.
fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `POST /v1/entries` of `envelopes`.
async fn submit(http: &reqwest::Client, url: &str, envelopes: &[Vec<u8>]) -> Reply {
    send(
        http.post(format!("{url}/v1/entries"))
            .header("content-type", "application/json")
            .body(entries_body(envelopes)),
    )
    .await
    .unwrap()
}

/// `n` new envelopes by `key`, from seed `from`.
fn envelopes(key: &NixSecretKey, from: u64, n: u64) -> Vec<Vec<u8>> {
    (from..from + n).map(|s| gen::signed(key, s, s)).collect()
}

/// The lookup key (store-path hash part) of `gen::build(_, seed, _)`'s output.
fn key_of(seed: u64) -> String {
    gen::store_path(seed, &format!("pkg-{seed}"))
        .hash()
        .to_string()
}

/// A 503 with the given code and `Retry-After`.
fn assert_503(r: &Reply, code: &str) {
    assert_eq!(r.status_code(), (503, Some(code)), "{r:?}");
    assert_eq!(r.retry_after.as_deref(), Some("1"), "{r:?}");
}

/// What concurrent writers saw: acknowledged entries, and every refusal by (status, code).
#[derive(Default)]
struct Ingest {
    acked: Mutex<Acked>,
    refused: Mutex<BTreeMap<(u16, String), u64>>,
    /// Acknowledgements received after `outage_from` (ms since the writers started) and before
    /// `outage_to`, while the database was down: there must be none.
    acked_during_outage: AtomicU64,
    outage_from: AtomicU64,
    outage_to: AtomicU64,
    stop: AtomicBool,
    next_seed: AtomicU64,
}

impl Ingest {
    fn refused(&self, status: u16, code: &str) -> u64 {
        self.refused
            .lock()
            .unwrap()
            .get(&(status, code.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// Writers submitting batches of `batch` new entries until told to stop; a refused batch is
/// sent again (as `provenix push` does) after `pause` until it is acknowledged. Every refusal
/// must carry `Retry-After`.
fn spawn_writers(
    rt: &tokio::runtime::Runtime,
    url: &str,
    ingest: &Arc<Ingest>,
    writers: usize,
    batch: u64,
    pause: Duration,
    t0: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let key = gen::builder_key("alpha");
    (0..writers)
        .map(|_| {
            let (url, ingest, key) = (url.to_owned(), ingest.clone(), key.clone());
            rt.spawn(async move {
                let http = http(Duration::from_secs(30));
                let mut pending: Option<Vec<Vec<u8>>> = None;
                // A batch refused when told to stop is still sent until acknowledged.
                while !ingest.stop.load(Ordering::SeqCst) || pending.is_some() {
                    let envs = pending.take().unwrap_or_else(|| {
                        let first = ingest.next_seed.fetch_add(batch, Ordering::SeqCst);
                        envelopes(&key, first, batch)
                    });
                    let r = submit(&http, &url, &envs).await;
                    if r.status == 200 {
                        let at = t0.elapsed().as_millis() as u64;
                        let (from, to) = (
                            ingest.outage_from.load(Ordering::SeqCst),
                            ingest.outage_to.load(Ordering::SeqCst),
                        );
                        if from > 0 && at >= from && (to == 0 || at < to) {
                            ingest.acked_during_outage.fetch_add(1, Ordering::SeqCst);
                        }
                        record_acked(&mut ingest.acked.lock().unwrap(), &envs, &r);
                    } else {
                        assert_eq!(
                            r.retry_after.as_deref(),
                            Some("1"),
                            "a refusal without Retry-After: {r:?}"
                        );
                        *ingest
                            .refused
                            .lock()
                            .unwrap()
                            .entry((r.status, r.code.clone().unwrap_or_default()))
                            .or_default() += 1;
                        pending = Some(envs);
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (≤ 5 s) for `/healthz` to report storage `ok` again (a write that failed just before
/// the fault was repaired may still be reported until the next one succeeds).
async fn storage_ok_soon(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = send(http.get(format!("{url}/healthz"))).await.unwrap();
        assert_eq!(r.status, 200);
        let h = r.json();
        if h["storage"] == "ok" && h["status"] == "ok" {
            return;
        }
        assert!(Instant::now() < deadline, "storage still not ok: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `path` and time it.
async fn timed_get(http: &reqwest::Client, url: &str, path: &str) -> (Reply, Duration) {
    let t = Instant::now();
    let r = send(http.get(format!("{url}{path}"))).await.unwrap();
    (r, t.elapsed())
}

#[test]
fn postgres_stopped_under_ingest_then_restarted() {
    let Some(pg) = PgCluster::start() else {
        assert!(
            !ci(),
            "PostgreSQL binaries are required (PROVENIX_CI is set)"
        );
        eprintln!("SKIP: no PostgreSQL binaries (initdb) under /usr/lib/postgresql");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start_log(
        dir.path(),
        "integrate-interval-ms = 50\n",
        Some(pg.url.clone()),
    );
    let verifier: LogVerifier = server.verifier_key.parse().unwrap();
    let rt = runtime();
    let ingest = Arc::new(Ingest::default());
    let t0 = Instant::now();
    let writers = spawn_writers(
        &rt,
        &server.url,
        &ingest,
        3,
        10,
        Duration::from_millis(100),
        t0,
    );
    wait_until("ingest before the outage", Duration::from_secs(20), || {
        ingest.acked.lock().unwrap().len() >= 300
    });
    let probe = http(Duration::from_secs(30));
    let acked_key = key_of(*ingest.acked.lock().unwrap().keys().next().unwrap());
    let before = rt.block_on(async {
        let cp = send(probe.get(format!("{}/checkpoint", server.url)))
            .await
            .unwrap();
        verifier
            .verify(std::str::from_utf8(&cp.body).unwrap())
            .unwrap()
            .size()
    });

    // PostgreSQL goes away, first as in a crash, then as in an orderly shutdown.
    for mode in ["immediate", "fast"] {
        let refused_before = ingest.refused(503, "storage_unavailable");
        assert!(pg.stop(mode), "pg_ctl stop -m {mode} failed");
        ingest.outage_to.store(0, Ordering::SeqCst);
        ingest
            .outage_from
            .store(t0.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        wait_until(
            "submissions refused with storage_unavailable",
            Duration::from_secs(20),
            || ingest.refused(503, "storage_unavailable") >= refused_before + 3,
        );
        rt.block_on(async {
            let url = &server.url;
            // Reads that need the database: a clean 503 within the pool's acquire timeout.
            for path in [
                format!("/v1/lookup/{acked_key}"),
                "/v1/entries/0".to_owned(),
                "/tile/entries/000.p/1".to_owned(),
                "/v1/explorer/home".to_owned(),
                format!("/v1/explorer/search?q={acked_key}"),
            ] {
                let (r, took) = timed_get(&probe, url, &path).await;
                assert_503(&r, "storage_unavailable");
                assert!(
                    took < Duration::from_secs(8),
                    "{mode}: {path} took {took:?}"
                );
            }
            let r = send(
                probe
                    .post(format!("{url}/v1/lookup"))
                    .json(&serde_json::json!({"keys": [acked_key]})),
            )
            .await
            .unwrap();
            assert_503(&r, "storage_unavailable");
            // Reads served from memory keep working.
            let (r, _) = timed_get(&probe, url, "/checkpoint").await;
            assert_eq!(r.status, 200);
            let (r, _) = timed_get(&probe, url, "/tile/0/000.p/1").await;
            assert_eq!(r.status, 200);
            // Health says so, promptly.
            let (r, took) = timed_get(&probe, url, "/healthz").await;
            assert_eq!(r.status, 200);
            assert!(took < Duration::from_secs(5), "/healthz took {took:?}");
            let h = r.json();
            assert_eq!(h["status"], "degraded", "{h}");
            assert_eq!(h["storage"], "unavailable", "{h}");
        });
        std::thread::sleep(Duration::from_millis(300));

        // Back, on the same socket; provenixd is not restarted. (A submission waiting for a
        // connection may be acknowledged once the database answers again: after its commit.)
        ingest
            .outage_to
            .store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
        assert!(pg.start_again(), "pg_ctl start failed");
        let at_restart = ingest.acked.lock().unwrap().len();
        wait_until("ingest after the restart", Duration::from_secs(30), || {
            ingest.acked.lock().unwrap().len() >= at_restart + 300
        });
    }
    ingest.stop.store(true, Ordering::SeqCst);
    for w in writers {
        rt.block_on(w).expect("a writer failed");
    }
    let refused = ingest.refused.lock().unwrap().clone();
    assert!(
        refused
            .keys()
            .all(|(s, c)| *s == 503 && c == "storage_unavailable"),
        "unexpected refusals: {refused:?}"
    );
    assert_eq!(
        ingest.acked_during_outage.load(Ordering::SeqCst),
        0,
        "a submission was acknowledged while PostgreSQL was down"
    );
    let acked = ingest.acked.lock().unwrap().clone();
    assert_eq!(
        acked.len() as u64,
        ingest.next_seed.load(Ordering::SeqCst),
        "every entry made was acknowledged in the end, once"
    );
    rt.block_on(async {
        let cp = check_acked(&server.url, &verifier, &acked).await;
        assert!(
            cp.size() > before,
            "the checkpoint did not grow after recovery"
        );
        storage_ok_soon(&probe, &server.url).await;
        let (r, _) = timed_get(&probe, &server.url, &format!("/v1/lookup/{acked_key}")).await;
        assert_eq!(r.status, 200);
        eprintln!(
            "postgres outage: {} acknowledged, refusals {refused:?}, checkpoint {before} -> {}",
            acked.len(),
            cp.size()
        );
    });
    let mut server = server;
    assert!(server.terminate(), "provenixd did not shut down cleanly");
}

#[test]
fn full_disk_refuses_writes_and_keeps_serving_reads() {
    let Some(fs) = Tmpfs::mount(24 << 20) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The data directory (SQLite, the default backend) on the small filesystem.
    let cfg = format!(
        "data = {:?}\nintegrate-interval-ms = 50\n",
        fs.path.join("log").display().to_string()
    );
    std::fs::write(dir.path().join("server.toml"), &cfg).unwrap();
    let data = fs.path.join("log");
    let opts = ServerOpts {
        config: Some(dir.path().join("server.toml")),
        ..ServerOpts::default()
    };
    add_builder(
        &data,
        &opts,
        &gen::builder_key("alpha").public().to_string(),
    );
    let mut server = Provenixd::start(&data, &opts);
    let verifier: LogVerifier = server.verifier_key.parse().unwrap();
    let key = gen::builder_key("alpha");
    let rt = runtime();
    let client = http(Duration::from_secs(30));
    let url = server.url.clone();
    let mut acked = Acked::new();
    let mut seed = 0;

    rt.block_on(async {
        // Some entries while there is room.
        for _ in 0..4 {
            let envs = envelopes(&key, seed, 50);
            seed += 50;
            let r = submit(&client, &url, &envs).await;
            assert_eq!(r.status, 200, "{r:?}");
            record_acked(&mut acked, &envs, &r);
        }
        check_acked(&url, &verifier, &acked).await;
    });
    // Leave ~1 MB: a ballast file takes the rest.
    let ballast = fs.path.join("ballast");
    {
        let room = fs.free().saturating_sub(1 << 20);
        std::fs::write(&ballast, vec![0u8; room as usize]).unwrap();
    }
    let (full_at, refusals) = rt.block_on(async {
        let mut refusals = 0;
        let mut full_at = None;
        for _ in 0..200 {
            let envs = envelopes(&key, seed, 50);
            seed += 50;
            let r = submit(&client, &url, &envs).await;
            match r.status {
                200 => record_acked(&mut acked, &envs, &r),
                _ => {
                    // The contract (docs/api.md): a database that cannot write is a 503
                    // storage_unavailable, and nothing in the request was acknowledged.
                    assert_503(&r, "storage_unavailable");
                    refusals += 1;
                    full_at.get_or_insert(acked.len());
                    if refusals == 5 {
                        break;
                    }
                }
            }
        }
        (full_at.expect("the disk never filled up"), refusals)
    });
    // Squeeze out what space is left on the filesystem. Writes can still succeed for a while:
    // the failed appends above may have left free pages inside the database file, which SQLite
    // reuses. Every answer is a 200 (acknowledged: checked at the end) or a 503; once those
    // pages are used up, writes fail for good.
    let crumbs = fill(&fs.path, "crumbs");
    rt.block_on(async {
        let mut failing = 0;
        for _ in 0..100 {
            let envs = envelopes(&key, seed, 20);
            seed += 20;
            let r = submit(&client, &url, &envs).await;
            if r.status == 200 {
                record_acked(&mut acked, &envs, &r);
                failing = 0;
                continue;
            }
            assert_503(&r, "storage_unavailable");
            failing += 1;
            if failing == 3 {
                break;
            }
        }
        assert_eq!(failing, 3, "writes kept succeeding on a full disk");
        // Reads keep answering. (The checkpoint may not cover the entries acknowledged last
        // before the disk filled: storing a checkpoint is a write too. They are integrated once
        // there is room again.)
        let cp = check_covered(&url, &verifier, &acked, 0).await;
        eprintln!(
            "disk full: checkpoint {} of {} acknowledged entries",
            cp.size(),
            acked.len()
        );
        assert!(cp.size() >= 200);
        let some = *acked.range(..cp.size()).last().unwrap().0;
        let k = key_of(some);
        let (r, _) = timed_get(&client, &url, &format!("/v1/lookup/{k}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["entries"][0]["index"], some);
        let (r, _) = timed_get(&client, &url, &format!("/v1/entries/{some}")).await;
        assert_eq!(r.status, 200);
        let (r, _) = timed_get(&client, &url, "/v1/explorer/home").await;
        assert_eq!(r.status, 200);
        let r = send(
            client
                .post(format!("{url}/v1/lookup"))
                .json(&serde_json::json!({"keys": [k, key_of(0)]})),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        let (r, _) = timed_get(&client, &url, "/healthz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["status"], "degraded");
        assert_eq!(r.json()["storage"], "writes_failing");
    });
    // Space comes back: writes recover without a restart.
    std::fs::remove_file(&ballast).unwrap();
    std::fs::remove_file(&crumbs).unwrap();
    rt.block_on(async {
        let envs = envelopes(&key, seed, 50);
        seed += 50;
        let r = submit(&client, &url, &envs).await;
        assert_eq!(r.status, 200, "{r:?}");
        record_acked(&mut acked, &envs, &r);
        check_acked(&url, &verifier, &acked).await;
        storage_ok_soon(&client, &url).await;
    });
    // And the log starts again from what is on disk, every acknowledged entry included.
    assert!(server.terminate(), "provenixd did not shut down cleanly");
    let server = Provenixd::start(&data, &opts);
    let cp = rt.block_on(check_acked(&server.url, &verifier, &acked));
    eprintln!(
        "full disk: first refusal after {full_at} entries, {refusals} refusals, {} acknowledged, checkpoint {}",
        acked.len(),
        cp.size()
    );
    drop(server);
    drop(fs);
}

/// Reads what the server sends until it closes the connection (or `limit` passes): the bytes,
/// and how long after `since` it closed (`None`: still open at `limit`).
async fn read_until_closed(
    s: &mut tokio::net::TcpStream,
    since: Instant,
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = since + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (out, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(since.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a request head one line at a time, `every` apart, without ever finishing it, until the
/// server closes the connection; returns when that happened (since the connection opened).
async fn dribble_headers(addr: &str, every: Duration, limit: Duration) -> (Vec<u8>, Duration) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for i in 0.. {
            tokio::time::sleep(every).await;
            if wr
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), rd.read(&mut buf)).await {
            Err(_) => panic!("a client dribbling its headers was not cut off within {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break t.elapsed(),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    writer.abort();
    (out, closed)
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Opens `n` connections that send nothing.
async fn idle_connections(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    v
}

/// A connection beyond the limit: accepted by the kernel, then closed by the server without an
/// answer.
async fn assert_refused(addr: &str) {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    let _ = c
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (got, closed) = read_until_closed(&mut c, t, Duration::from_secs(3)).await;
    assert!(
        got.is_empty() && closed.is_some(),
        "a connection over the limit was served: {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// The bounded serving loop of a real binary at `url`, configured with 4 connections and a
/// 1-second header timeout: a dribbling client is cut off after the header timeout while others
/// are served; a fifth connection is refused while four idle ones are open, and served once the
/// header timeout has closed those.
async fn check_connection_limits(url: &str, ok_path: &str) {
    let addr = host_port(url);
    let normal = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = http(Duration::from_secs(5));
        let r = send(c.get(format!("{url}{ok_path}"))).await.unwrap();
        assert_eq!(r.status, 200, "a normal client next to a dribbling one");
    };
    let ((out, closed), ()) = tokio::join!(
        dribble_headers(&addr, Duration::from_millis(200), Duration::from_secs(6)),
        normal
    );
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(4),
        "cut off after {closed:?}, want about the 1 s header timeout"
    );
    assert!(
        !String::from_utf8_lossy(&out).contains(" 200 "),
        "the dribbled request was served"
    );

    let idle = idle_connections(&addr, 4).await;
    assert_refused(&addr).await;
    // The idle ones sent no request head: the header timeout closes them and frees the slots.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = http(Duration::from_secs(5));
    let r = send(c.get(format!("{url}{ok_path}"))).await.unwrap();
    assert_eq!(r.status, 200);
    drop(idle);
}

#[test]
fn slow_clients_and_too_many_connections_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start_log(
        dir.path(),
        "max-connections = 4\nheader-timeout-secs = 1\nrequest-timeout-secs = 2\n",
        None,
    );
    let rt = runtime();
    rt.block_on(async {
        check_connection_limits(&server.url, "/checkpoint").await;

        // A body that trickles in is cut off at the request timeout with a JSON 408.
        let mut s = tokio::net::TcpStream::connect(host_port(&server.url))
            .await
            .unwrap();
        let t = Instant::now();
        s.write_all(
            b"POST /v1/entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"entries\":[",
        )
        .await
        .unwrap();
        let (mut rd, mut wr) = s.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if wr.write_all(b"    ").await.is_err() {
                    break;
                }
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(8), rd.read(&mut buf)).await {
                Err(_) => panic!("a slow body upload was not cut off"),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
        let took = t.elapsed();
        trickle.abort();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "a slow upload got {text:?}"
        );
        assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
        assert!(
            took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
            "cut off after {took:?}, want about the 2 s request timeout"
        );
        // Still serving.
        let r = send(http(Duration::from_secs(5)).get(format!("{}/healthz", server.url)))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    });
}

/// `[` × depth, then `]` × depth.
fn nested(depth: usize, open: &str, close: &str, inner: &str) -> Vec<u8> {
    let mut v = open.repeat(depth).into_bytes();
    v.extend_from_slice(inner.as_bytes());
    v.extend_from_slice(close.repeat(depth).as_bytes());
    v
}

#[test]
fn request_limits_answer_exact_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start_log(dir.path(), "max-body-bytes = 200000\n", None);
    let url = server.url.clone();
    let rt = runtime();
    let key = gen::builder_key("alpha");
    rt.block_on(async {
        let c = http(Duration::from_secs(30));
        let post = |path: &str, body: Vec<u8>| {
            send(
                c.post(format!("{url}{path}"))
                    .header("content-type", "application/json")
                    .body(body),
            )
        };
        // Body over max-body-bytes: 413 too_large, whatever the endpoint.
        let big = entries_body(&envelopes(&key, 0, 200));
        assert!(big.len() > 200_000);
        for path in ["/v1/entries", "/v1/lookup"] {
            let r = post(path, big.clone()).await.unwrap();
            assert_eq!(r.status_code(), (413, Some("too_large")), "{path}");
        }
        // The same without a Content-Length (chunked): cut at the limit. The stream then
        // stalls, so the server has read everything sent when it answers.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big[..200_100]
            .chunks(10_000)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let stream =
            futures::StreamExt::chain(futures::stream::iter(chunks), futures::stream::pending());
        let r = send(
            c.post(format!("{url}/v1/entries"))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await
        .unwrap();
        assert_eq!(r.status_code(), (413, Some("too_large")));

        // Batches over 1000: 413 too_large.
        let r = post(
            "/v1/entries",
            format!("{{\"entries\":[{}]}}", vec!["{}"; 1001].join(",")).into_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(r.status_code(), (413, Some("too_large")));
        let keys: Vec<String> = (0..1001).map(key_of).collect();
        let r = post(
            "/v1/lookup",
            serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status_code(), (413, Some("too_large")));
        // 1000 is fine.
        let r = post(
            "/v1/lookup",
            serde_json::to_vec(&serde_json::json!({ "keys": keys[..1000] })).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);

        // JSON nested far beyond serde_json's 128 levels, in every place a body can nest:
        // a whole-request 400 `malformed`, or (inside one entry) that entry's `malformed`.
        let deep = 20_000;
        for (path, body) in [
            ("/v1/entries", nested(deep, "[", "]", "")),
            ("/v1/entries", nested(deep, "{\"a\":", "}", "1")),
            ("/v1/entries", {
                let mut b = b"{\"entries\":[],\"x\":".to_vec();
                b.extend(nested(deep, "{\"a\":", "}", "1"));
                b.push(b'}');
                b
            }),
            ("/v1/lookup", nested(deep, "[", "]", "")),
            ("/v1/lookup", {
                let mut b = b"{\"keys\":".to_vec();
                b.extend(nested(deep, "[", "]", ""));
                b.push(b'}');
                b
            }),
            ("/v1/attest/challenge", nested(deep, "{\"a\":", "}", "1")),
            ("/v1/attest/enroll", nested(deep, "[", "]", "")),
        ] {
            let r = post(path, body).await.unwrap();
            assert_eq!(r.status_code(), (400, Some("malformed")), "{path}: {r:?}");
        }
        // Deep nesting inside entries: the request is answered, each such entry refused.
        let mut b = b"{\"entries\":".to_vec();
        b.extend(nested(deep, "[", "]", ""));
        b.push(b'}');
        let r = post("/v1/entries", b).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["results"][0]["error"]["code"], "malformed");
        let mut b = b"{\"entries\":[".to_vec();
        b.extend(nested(deep / 2, "[", "]", ""));
        b.push(b',');
        b.extend(nested(deep / 2, "{\"a\":", "}", "1"));
        b.push(b',');
        // A signed envelope whose statement nests 10,000 levels deep in `annotations`.
        b.extend(deep_statement_envelope(&key, 10_000));
        b.extend_from_slice(b"]}");
        let r = post("/v1/entries", b).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let results = r.json()["results"].as_array().unwrap().clone();
        assert_eq!(results.len(), 3);
        for res in &results {
            assert_eq!(res["error"]["code"], "malformed", "{res}");
        }

        // Not JSON at all, and not UTF-8.
        let r = post("/v1/entries", vec![0xff, 0xfe, 0x00, 0x7b])
            .await
            .unwrap();
        assert_eq!(r.status_code(), (400, Some("malformed")));
        // Still healthy.
        let r = send(c.get(format!("{url}/healthz"))).await.unwrap();
        assert_eq!(r.status, 200);
    });
}

/// A validly signed envelope whose in-toto statement nests `depth` levels deep inside
/// `externalParameters` (a free-form JSON object), within the 65,535-byte entry limit.
fn deep_statement_envelope(key: &NixSecretKey, depth: usize) -> Vec<u8> {
    let statement =
        serde_json::to_string(&gen::build(key.name(), 777, 777).to_statement()).unwrap();
    let at = statement.find("\"externalParameters\":{").unwrap() + 22;
    let payload = format!(
        "{}\"deep\":{},{}",
        &statement[..at],
        String::from_utf8(nested(depth, "[", "]", "")).unwrap(),
        &statement[at..]
    );
    provenix_core::entry::Envelope::sign(payload.into_bytes(), key).canonical_json()
}

#[test]
fn a_full_sequencer_queue_answers_503_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start_log(
        dir.path(),
        "queue-depth = 1\nintegrate-interval-ms = 50\nexplorer = false\n",
        None,
    );
    let verifier: LogVerifier = server.verifier_key.parse().unwrap();
    let rt = runtime();
    let ingest = Arc::new(Ingest::default());
    let writers = spawn_writers(
        &rt,
        &server.url,
        &ingest,
        32,
        5,
        Duration::from_millis(5),
        Instant::now(),
    );
    wait_until("overload", Duration::from_secs(30), || {
        ingest.refused(503, "overloaded") >= 20 && ingest.acked.lock().unwrap().len() >= 500
    });
    ingest.stop.store(true, Ordering::SeqCst);
    for w in writers {
        rt.block_on(w).expect("a writer failed");
    }
    let refused = ingest.refused.lock().unwrap().clone();
    assert!(
        refused.keys().all(|(s, c)| *s == 503 && c == "overloaded"),
        "unexpected refusals: {refused:?}"
    );
    let acked = ingest.acked.lock().unwrap().clone();
    let cp = rt.block_on(check_acked(&server.url, &verifier, &acked));
    // Every refused batch was sent again until acknowledged: nothing is missing.
    assert_eq!(
        acked.len() as u64,
        ingest.next_seed.load(Ordering::SeqCst),
        "acknowledged entries vs entries made"
    );
    let rss = peak_rss_kib(server.child.id());
    eprintln!(
        "overload: {} acknowledged, refusals {refused:?}, checkpoint {}, provenixd peak RSS {} MiB",
        acked.len(),
        cp.size(),
        rss / 1024
    );
    assert!(rss < 256 * 1024, "provenixd peak RSS {rss} KiB");
}

// ---- the substituter ----------------------------------------------------------------------

/// What the fake log in front of a real one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Pass everything through.
    Forward,
    /// Answer after 5 s (the substituter's log timeout is 1 s).
    Slow,
    /// 200 with a body that is not JSON.
    BadJson,
    /// The real answer with its checkpoint re-signed by another key of the same name.
    WrongKey,
    /// Announce 10,000 bytes, send 100, close.
    Truncated,
    /// 80 MB of garbage without a length (the client's limit is 64 MiB).
    Huge,
    /// 500 with a JSON error.
    ServerError,
    /// Close without answering.
    Hangup,
}

fn narinfo_for(seed: u64) -> String {
    let b = gen::build("alpha", seed, seed);
    let o = &b.outputs[0];
    let refs: Vec<String> = o
        .references
        .iter()
        .map(|r| r.to_string().trim_start_matches("/nix/store/").to_owned())
        .collect();
    let size = o.nar_size.unwrap();
    let h = o.nar_hash.to_nix32_prefixed();
    let text = format!(
        "StorePath: {}\nURL: nar/{}.nar\nCompression: none\nFileHash: {h}\nFileSize: {size}\nNarHash: {h}\nNarSize: {size}\nReferences: {}\n",
        o.path,
        o.path.hash(),
        refs.join(" ")
    );
    text.parse::<provenix_core::nix::NarInfo>()
        .expect("the test narinfo parses");
    text
}

#[test]
fn substituter_answers_404_fast_when_a_log_is_slow_or_lies() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (alpha, beta) = (gen::builder_key("alpha"), gen::builder_key("beta"));
    // Two real logs: `healthy` is asked directly, `hidden` only through the fake log.
    let start = |name: &str| {
        let data = dir.path().join(name);
        let opts = ServerOpts {
            origin: Some(format!("{name}.test/log")),
            ..ServerOpts::default()
        };
        for k in [&alpha, &beta] {
            add_builder(&data, &opts, &k.public().to_string());
        }
        Provenixd::start(&data, &opts)
    };
    let (healthy, hidden) = (start("healthy"), start("hidden"));
    // Path 1: alpha and beta agree in the healthy log. Path 2: alpha in the healthy log, beta
    // only in the hidden one, so its quorum needs the fake log to answer well.
    rt.block_on(async {
        let c = http(Duration::from_secs(10));
        let ok = |r: Reply| assert_eq!(r.status, 200, "{r:?}");
        ok(submit(
            &c,
            &healthy.url,
            &[gen::signed(&alpha, 1, 1), gen::signed(&beta, 1, 1)],
        )
        .await);
        ok(submit(&c, &healthy.url, &[gen::signed(&alpha, 2, 2)]).await);
        ok(submit(&c, &hidden.url, &[gen::signed(&beta, 2, 2)]).await);
        let v = |s: &Provenixd| s.verifier_key.parse::<LogVerifier>().unwrap();
        check_covered(&healthy.url, &v(&healthy), &Acked::new(), 3).await;
        check_covered(&hidden.url, &v(&hidden), &Acked::new(), 1).await;
    });
    let mode = Arc::new(Mutex::new(Mode::Forward));
    let impostor = LogSigner::generate("hidden.test/log").unwrap();
    let hidden_verifier: LogVerifier = hidden.verifier_key.parse().unwrap();
    let fake = {
        let (mode, upstream) = (mode.clone(), hidden.url.clone());
        let fwd = http(Duration::from_secs(10));
        let handler: Handler = Arc::new(move |req: FakeRequest| {
            let (mode, upstream, fwd) = (*mode.lock().unwrap(), upstream.clone(), fwd.clone());
            let (impostor, verifier) = (impostor.clone(), hidden_verifier.clone());
            Box::pin(async move {
                match mode {
                    Mode::Forward => provenix_e2e::fault::forward(&fwd, &upstream, &req).await,
                    Mode::Slow => Answer::After(
                        Duration::from_secs(5),
                        Box::new(provenix_e2e::fault::forward(&fwd, &upstream, &req).await),
                    ),
                    Mode::BadJson => Answer::ok("application/json", &b"{\"checkpoint\": [nope"[..]),
                    Mode::WrongKey => {
                        let Answer::Full { status, body, .. } =
                            provenix_e2e::fault::forward(&fwd, &upstream, &req).await
                        else {
                            return Answer::Hangup;
                        };
                        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        if let Some(note) = v["checkpoint"].as_str() {
                            let cp = verifier.verify(note).unwrap();
                            let forged = impostor.sign(cp.size(), *cp.root()).unwrap();
                            v["checkpoint"] = forged.note().into();
                        }
                        Answer::Full {
                            status,
                            content_type: "application/json",
                            body: serde_json::to_vec(&v).unwrap(),
                        }
                    }
                    Mode::Truncated => Answer::Truncated {
                        declared: 10_000,
                        body: b"{\"checkpoint\":\"".repeat(7),
                    },
                    Mode::Huge => Answer::Endless {
                        bytes: 80 << 20,
                        filler: b'[',
                    },
                    Mode::ServerError => Answer::Full {
                        status: 500,
                        content_type: "application/json",
                        body: b"{\"error\":{\"code\":\"internal\",\"message\":\"x\"}}".to_vec(),
                    },
                    Mode::Hangup => Answer::Hangup,
                }
            })
        });
        rt.block_on(FakeHttp::start(handler))
    };
    let upstream = {
        let (n1, n2) = (narinfo_for(1), narinfo_for(2));
        let (h1, h2) = (key_of(1), key_of(2));
        let handler: Handler = Arc::new(move |req: FakeRequest| {
            let a = if req.path == format!("/{h1}.narinfo") {
                Answer::ok("text/x-nix-narinfo", n1.clone())
            } else if req.path == format!("/{h2}.narinfo") {
                Answer::ok("text/x-nix-narinfo", n2.clone())
            } else if req.path == "/nix-cache-info" {
                Answer::ok("text/x-nix-cache-info", "StoreDir: /nix/store\n")
            } else {
                Answer::not_found()
            };
            Box::pin(async move { a })
        });
        rt.block_on(FakeHttp::start(handler))
    };
    let (sec, _) = proxy_key(&dir.path().join("proxy"), "proxy-1");
    let trust = Trust {
        logs: vec![
            (healthy.url.clone(), healthy.verifier_key.clone()),
            (fake.url.clone(), hidden.verifier_key.clone()),
        ],
        builders: vec![
            ("alpha".into(), alpha.public().to_string()),
            ("beta".into(), beta.public().to_string()),
        ],
        threshold: "2 of [alpha, beta]".into(),
        dissent: "ignore".into(),
        upstreams: vec![upstream.url.clone()],
        signing_key_file: sec,
        state_file: dir.path().join("state.json"),
        extra: "log-timeout-ms = 1000\ndecision-ttl-secs = 0\n".into(),
    };
    let proxy = Proxy::start(&trust.write(&dir.path().join("trust.toml")));
    let timeout = Duration::from_millis(1000);
    // One narinfo: its status and how long it took. Paths decided by the healthy log alone
    // wait at most for the slow log's timeout (every log is asked at once); a second round
    // queued behind one in flight may add one more.
    let ask = |seed: u64| {
        let url = format!("{}/{}.narinfo", proxy.url, key_of(seed));
        async move {
            let t = Instant::now();
            let r = send(http(Duration::from_secs(30)).get(url)).await.unwrap();
            (r.status, t.elapsed())
        }
    };
    let bound = 2 * timeout + Duration::from_millis(1500);
    let mut figures = Vec::new();
    for m in [
        Mode::Forward,
        Mode::Slow,
        Mode::BadJson,
        Mode::WrongKey,
        Mode::Truncated,
        Mode::Huge,
        Mode::ServerError,
        Mode::Hangup,
        Mode::Forward,
    ] {
        *mode.lock().unwrap() = m;
        let ((s1, t1), (s2, t2)) = rt.block_on(async { tokio::join!(ask(1), ask(2)) });
        let want2 = if m == Mode::Forward { 200 } else { 404 };
        assert_eq!(s1, 200, "{m:?}: the path the healthy log decides");
        assert_eq!(s2, want2, "{m:?}: the path that needs the fake log");
        assert!(t1 < bound && t2 < bound, "{m:?}: took {t1:?} and {t2:?}");
        figures.push(format!("{m:?} {}/{} ms", t1.as_millis(), t2.as_millis()));
        if m != Mode::Forward {
            // The reason is visible: the fake log's failure, never a 5xx.
            let d = rt.block_on(send(http(Duration::from_secs(30)).get(format!(
                "{}/v1/decision/{}",
                proxy.url,
                key_of(2)
            ))));
            let d = d.unwrap();
            assert_eq!(d.status, 200);
            let text = String::from_utf8_lossy(&d.body).into_owned();
            let want = if m == Mode::WrongKey {
                "bad_checkpoint"
            } else {
                "unreachable"
            };
            assert!(text.contains(want), "{m:?}: decision {text}");
        }
    }
    eprintln!(
        "substituter vs a bad log (path 1 / path 2): {}",
        figures.join(", ")
    );
    drop(proxy);
}

#[test]
fn substituter_bounds_connections_and_slow_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, _) = proxy_key(&dir.path().join("proxy"), "proxy-1");
    let log = LogSigner::generate("nowhere.test/log").unwrap();
    let trust = Trust {
        logs: vec![("http://127.0.0.1:9".into(), log.verifier_key().to_owned())],
        builders: vec![(
            "alpha".into(),
            gen::builder_key("alpha").public().to_string(),
        )],
        threshold: "1 of [alpha]".into(),
        dissent: "ignore".into(),
        upstreams: vec!["http://127.0.0.1:9".into()],
        signing_key_file: sec,
        state_file: dir.path().join("state.json"),
        extra: "max-connections = 4\nheader-timeout-secs = 1\n".into(),
    };
    let proxy = Proxy::start(&trust.write(&dir.path().join("trust.toml")));
    runtime().block_on(check_connection_limits(&proxy.url, "/nix-cache-info"));
}
