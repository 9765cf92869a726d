//! `provenix-bench soak`: issue 8's soak — one release `provenixd` (its defaults: SQLite,
//! explorer on) under mixed load for a long time (default 30 minutes): writers submitting
//! freshly signed entries at a steady offered rate, and readers doing lookups with proof as
//! fast as they are answered, over keys already acknowledged.
//!
//! Every window (default 5 minutes) it prints entries/s acknowledged, lookups/s, lookup p50/p99,
//! 503s, and the server's RSS (mean and max of samples every 5 s) — then compares the first and
//! the last window: throughput steady and memory flat, or not. Nothing is asserted: it prints
//! what it measured, and the disk it used.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provenix::logclient::LogClient;
use provenix_core::api::SubmitResult;
use provenix_core::checkpoint::LogVerifier;
use provenix_e2e::gen;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};

use crate::procfs::{dir_bytes, status_bytes};
use crate::stats::{ms, Samples};

/// Options of `provenix-bench soak`.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Total minutes.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Length of a reporting window, seconds.
    #[arg(long, default_value_t = 300)]
    window_secs: u64,
    /// Offered ingest rate, entries/s (spread over the writers, in batches).
    #[arg(long, default_value_t = 800)]
    rate: u64,
    /// Concurrent writers (one builder key each).
    #[arg(long, default_value_t = 4)]
    writers: u64,
    /// Entries per submission.
    #[arg(long, default_value_t = 20)]
    batch: u64,
    /// Concurrent lookup clients (closed loop).
    #[arg(long, default_value_t = 4)]
    readers: u64,
    /// Use this PostgreSQL database URL instead of the embedded SQLite.
    #[arg(long)]
    database: Option<String>,
}

/// What happened in one window.
#[derive(Default, Clone)]
struct Window {
    acked: u64,
    overloaded: u64,
    lookups: Vec<Duration>,
    rss: Vec<u64>,
}

struct Shared {
    t0: Instant,
    window: Duration,
    windows: Mutex<Vec<Window>>,
    /// Entries acknowledged per writer (writer `w` uses seeds `w, w + writers, …`).
    acked: Vec<AtomicU64>,
    stop: AtomicBool,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Window) -> R) -> R {
        let i = (self.t0.elapsed().as_secs_f64() / self.window.as_secs_f64()) as usize;
        let mut w = self.windows.lock().unwrap();
        if w.len() <= i {
            w.resize(i + 1, Window::default());
        }
        f(&mut w[i])
    }
}

pub fn run(args: &SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.writers > 0 && args.batch > 0 && args.rate > 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("log");
    let opts = ServerOpts {
        database: args.database.clone(),
        ..ServerOpts::default()
    };
    let keys: Vec<_> = (0..args.writers)
        .map(|w| gen::builder_key(&format!("soak-{w}")))
        .collect();
    for k in &keys {
        add_builder(&data, &opts, &k.public().to_string());
    }
    let mut server = Provenixd::start(&data, &opts);
    let pid = server.child.id();
    let verifier: LogVerifier = server.verifier_key.parse()?;
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        window: Duration::from_secs(args.window_secs),
        windows: Mutex::default(),
        acked: (0..args.writers).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
    });
    eprintln!(
        "soak: {:.0} min, {} writers offering {} entries/s in batches of {}, {} lookup clients, {} s windows",
        args.minutes, args.writers, args.rate, args.batch, args.readers, args.window_secs
    );
    let url = server.url.clone();
    rt.block_on(async {
        let mut tasks = Vec::new();
        // Writers: each sends a batch every `batch * writers / rate` seconds.
        let period = Duration::from_secs_f64((args.batch * args.writers) as f64 / args.rate as f64);
        for (w, key) in keys.into_iter().enumerate() {
            let (shared, url) = (shared.clone(), url.clone());
            let (writers, batch) = (args.writers, args.batch);
            tasks.push(tokio::spawn(async move {
                let client = LogClient::new(&url, Duration::from_secs(60)).unwrap();
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut next = 0u64;
                while !shared.stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let envs: Vec<Vec<u8>> = (next..next + batch)
                        .map(|k| {
                            let seed = k * writers + w as u64;
                            gen::signed_small(&key, seed, seed)
                        })
                        .collect();
                    loop {
                        match client.submit(&envs, false).await {
                            Ok(r) => {
                                for res in &r.results {
                                    if let SubmitResult::Rejected { error } = res {
                                        panic!("rejected: {error:?}");
                                    }
                                }
                                next += batch;
                                shared.acked[w].store(next, Ordering::Relaxed);
                                shared.with(|win| win.acked += batch);
                                break;
                            }
                            Err(e) if e.status() == Some(503) => {
                                shared.with(|win| win.overloaded += 1);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Err(e) => panic!("submit failed: {e}"),
                        }
                    }
                }
            }));
        }
        // Readers: lookups of acknowledged keys (they may not be in a checkpoint yet: a miss
        // is a 200 with no entries, as for any client), raw bodies, closed loop.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        for r in 0..args.readers {
            let (shared, http, url) = (shared.clone(), http.clone(), url.clone());
            let writers = args.writers;
            tasks.push(tokio::spawn(async move {
                let mut rng = crate::stats::Rng::for_client(r);
                while !shared.stop.load(Ordering::Relaxed) {
                    let rnd = rng.next_u64();
                    let w = rnd % writers;
                    let n = shared.acked[w as usize].load(Ordering::Relaxed);
                    if n == 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let seed = ((rnd >> 8) % n) * writers + w;
                    let key = gen::store_path(seed, &format!("pkg-{seed}"));
                    let t = Instant::now();
                    let resp = http
                        .get(format!("{url}/v1/lookup/{}", key.hash()))
                        .send()
                        .await
                        .expect("lookup");
                    assert!(resp.status().is_success(), "lookup: {}", resp.status());
                    resp.bytes().await.expect("lookup body");
                    let d = t.elapsed();
                    shared.with(|win| win.lookups.push(d));
                }
            }));
        }
        // Memory sampler and progress.
        let mut last_print = Instant::now();
        while shared.t0.elapsed() < total {
            crate::interrupt::check()?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let rss = status_bytes(pid, "VmRSS:");
            shared.with(|win| win.rss.push(rss));
            if last_print.elapsed() >= Duration::from_secs(60) {
                last_print = Instant::now();
                let acked: u64 = shared.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
                eprintln!(
                    "  {:>5.1} min: {acked} entries acknowledged, RSS {:.0} MB",
                    shared.t0.elapsed().as_secs_f64() / 60.0,
                    rss as f64 / 1e6
                );
            }
        }
        shared.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await?;
        }
        // Everything acknowledged is in a signed checkpoint.
        let acked: u64 = shared.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
        let client = LogClient::new(&url, Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let cp = verifier.verify(&client.checkpoint().await?)?;
            if cp.size() >= acked {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "checkpoint {} < {acked} acknowledged",
                cp.size()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    })?;
    let disk = dir_bytes(&data);
    anyhow::ensure!(server.terminate(), "provenixd did not stop cleanly");

    let windows = shared.windows.lock().unwrap().clone();
    let full = (total.as_secs_f64() / args.window_secs as f64).floor() as usize;
    let win_secs = args.window_secs as f64;
    println!(
        "soak: {:.0} min against one provenixd ({}), offered {} entries/s + closed-loop lookups x{}",
        args.minutes,
        if args.database.is_some() { "PostgreSQL" } else { "SQLite" },
        args.rate,
        args.readers
    );
    println!(
        "minutes      entries/s  lookups/s  lookup p50  lookup p99  503s  RSS mean  RSS max  log size  RSS - per-entry state"
    );
    let mut rows = Vec::new();
    let mut size = 0u64;
    for (i, w) in windows.iter().take(full.max(1)).enumerate() {
        size += w.acked;
        let lat = Samples::new(w.lookups.clone());
        let mean = w.rss.iter().sum::<u64>() as f64 / w.rss.len().max(1) as f64;
        let max = w.rss.iter().copied().max().unwrap_or(0);
        // Memory that grows with the log by design, not a leak: the Merkle tree (every stored
        // hash, 2n - popcount(n) of 32 bytes for n leaves) and the duplicate index (a hashbrown
        // map of 16-byte items: a power-of-two number of buckets holding n at 7/8 load, 17
        // bytes each).
        let tree = (2 * size - u64::from(size.count_ones())) as f64 * 32.0;
        let buckets = (size.max(1) * 8).div_ceil(7).next_power_of_two();
        let tree = tree + buckets as f64 * 17.0;
        let row = (
            w.acked as f64 / win_secs,
            w.lookups.len() as f64 / win_secs,
            mean,
            max as f64 - tree,
        );
        println!(
            "{:>5.1}-{:<5.1}  {:>9.0}  {:>9.0}  {:>10}  {:>10}  {:>4}  {:>6.0} MB  {:>5.0} MB  {:>8}  {:>7.0} MB",
            i as f64 * win_secs / 60.0,
            (i + 1) as f64 * win_secs / 60.0,
            row.0,
            row.1,
            if lat.is_empty() {
                "-".into()
            } else {
                ms(lat.median())
            },
            if lat.is_empty() {
                "-".into()
            } else {
                ms(lat.pct(99.0))
            },
            w.overloaded,
            mean / 1e6,
            max as f64 / 1e6,
            size,
            row.3 / 1e6
        );
        rows.push(row);
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        println!(
            "last / first window: ingest {:.3}x, lookups {:.3}x, mean RSS {:.3}x, max RSS less the per-entry state {:.3}x",
            last.0 / first.0,
            last.1 / first.1,
            last.2 / first.2,
            last.3 / first.3
        );
    }
    let acked: u64 = shared.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    println!(
        "{acked} entries acknowledged (all in a signed checkpoint), {:.2} GB on disk",
        disk as f64 / 1e9
    );
    Ok(())
}
