//! Crash safety: SIGKILL `provenixd` at random moments during sustained ingest, many times,
//! restart it, and check that every acknowledged entry is present at its index, that every
//! signed checkpoint's root is the root of that many stored leaves, and that no client ever saw
//! a checkpoint shrink. Run on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use provenix::logclient::LogClient;
use provenix_core::api::SubmitResult;
use provenix_core::checkpoint::LogVerifier;
use provenix_core::merkle::{self, Hash, MemoryTree};
use provenix_e2e::gen;
use provenix_e2e::pg::PgDb;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_server::store::Store;

/// xorshift64*, seeded from the clock and printed, so a failing run can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const KILLS: usize = 15;
const WRITERS: usize = 4;

fn crash_run(database: Option<String>) {
    let seed = std::env::var("PROVENIX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set PROVENIX_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("log");
    let opts = ServerOpts {
        database: database.clone(),
        ..ServerOpts::default()
    };
    let keys = [gen::builder_key("alpha"), gen::builder_key("beta")];
    for k in &keys {
        add_builder(&data, &opts, &k.public().to_string());
    }
    let mut server = Provenixd::start(&data, &opts);
    let verifier: LogVerifier = server.verifier_key.parse().unwrap();
    let url = Arc::new(RwLock::new(server.url.clone()));
    let acked: Arc<Mutex<BTreeMap<u64, Hash>>> = Arc::default();
    let max_seen = Arc::new(AtomicU64::new(0));
    let observed: Arc<Mutex<Vec<(u64, Hash)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next_seed = Arc::new(AtomicU64::new(0));
    let rt = provenix_e2e::runtime();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (url, acked, stop, next_seed) =
            (url.clone(), acked.clone(), stop.clone(), next_seed.clone());
        let key = keys[w % 2].clone();
        tasks.push(rt.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let first = next_seed.fetch_add(20, Ordering::SeqCst);
                let envs: Vec<Vec<u8>> = (first..first + 20)
                    .map(|s| gen::signed(&key, s, s))
                    .collect();
                let base = url.read().unwrap().clone();
                let client = LogClient::new(&base, Duration::from_secs(5)).unwrap();
                match client.submit(&envs, false).await {
                    Ok(resp) => {
                        let mut a = acked.lock().unwrap();
                        for (e, r) in envs.iter().zip(&resp.results) {
                            let SubmitResult::Accepted(acc) = r else {
                                panic!("rejected: {r:?}")
                            };
                            let h = merkle::leaf_hash(e);
                            assert_eq!(acc.leaf_hash, h);
                            if let Some(prev) = a.insert(acc.index, h) {
                                assert_eq!(
                                    prev, h,
                                    "index {} acknowledged for two different entries",
                                    acc.index
                                );
                            }
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    {
        let (url, stop, max_seen, observed, verifier) = (
            url.clone(),
            stop.clone(),
            max_seen.clone(),
            observed.clone(),
            verifier.clone(),
        );
        tasks.push(rt.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let base = url.read().unwrap().clone();
                if let Ok(c) = LogClient::new(&base, Duration::from_secs(2))
                    .unwrap()
                    .checkpoint()
                    .await
                {
                    let cp = verifier
                        .verify(&c)
                        .expect("a checkpoint that does not verify");
                    let prev = max_seen.fetch_max(cp.size(), Ordering::SeqCst);
                    assert!(
                        cp.size() >= prev,
                        "checkpoint shrank from {prev} to {}",
                        cp.size()
                    );
                    observed.lock().unwrap().push((cp.size(), *cp.root()));
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }

    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(150 + rng.next() % 450));
        server.kill9();
        server = Provenixd::start(&data, &opts);
        *url.write().unwrap() = server.url.clone();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(t).expect("a client task failed");
    }

    // Every acknowledged entry is at its index, proven against the final checkpoint.
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 500,
        "too little ingest to mean anything: {}",
        acked.len()
    );
    let (cp, count) = rt.block_on(async {
        let client = LogClient::new(&server.url, Duration::from_secs(10)).unwrap();
        let last = *acked.keys().last().unwrap();
        let cp = loop {
            let cp = verifier
                .verify(&client.checkpoint().await.unwrap())
                .unwrap();
            if cp.size() > last {
                break cp;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let store = match &database {
            Some(u) => Store::open(u, 1).await.unwrap(),
            None => Store::open(&Store::sqlite_url_in(&data), 1).await.unwrap(),
        };
        let count = store.entry_count().await.unwrap();
        let hashes = store.leaf_hashes(0, count).await.unwrap();
        for (&index, h) in &acked {
            assert_eq!(
                hashes[index as usize], *h,
                "acknowledged entry {index} lost or changed"
            );
        }
        for &index in acked.keys().step_by(97) {
            let e = client.entry(index).await.unwrap();
            let (_, inc) = e.verify(&verifier).unwrap();
            assert_eq!(inc.entry.leaf_hash(), acked[&index]);
        }
        // Every checkpoint the log ever stored, and every one a client saw, matches the tree
        // recomputed from storage.
        let tree = MemoryTree::from_leaves(hashes);
        let stored = store.checkpoints().await.unwrap();
        assert!(stored.len() > KILLS);
        for (size, note) in &stored {
            let c = verifier.verify(note).unwrap();
            assert_eq!(c.size(), *size);
            assert_eq!(
                tree.root_at(*size).unwrap(),
                *c.root(),
                "stored checkpoint {size}"
            );
        }
        for (size, root) in observed.lock().unwrap().iter() {
            assert_eq!(
                tree.root_at(*size).unwrap(),
                *root,
                "observed checkpoint {size}"
            );
        }
        store.close().await;
        (cp, count)
    });
    eprintln!(
        "{} kills, {} acknowledged entries, {} stored, final checkpoint {}",
        KILLS,
        acked.len(),
        count,
        cp.size()
    );
    assert!(server.terminate(), "provenixd did not shut down cleanly");
}

#[test]
fn sigkill_during_ingest_sqlite() {
    crash_run(None);
}

#[test]
fn sigkill_during_ingest_postgres() {
    let rt = provenix_e2e::runtime();
    let Some(db) = rt.block_on(PgDb::create()) else {
        return;
    };
    crash_run(Some(db.url.clone()));
    drop(db);
}
