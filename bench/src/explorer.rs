//! `provenix-bench explorer`: the explorer's figures from issue 9 on a large log.
//!
//! Builds an N-entry log (default 1,000,000) through the HTTP API with pre-signed entries:
//! every derivation seed is built by two of B builders, and every `conflict-every`-th seed's
//! second build claims other content (a disagreement). Measures how fast the indexer follows
//! (it runs during ingest, as in production), then the render time of each page and JSON view
//! at a few concurrent clients: p50/p99/max and requests/s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use provenix_e2e::gen;
use provenix_e2e::pg::PgCluster;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_server::store::Store;
use serde_json::Value;

use crate::stats::{ms, Samples};

/// Options of `provenix-bench explorer`.
#[derive(clap::Args, Debug)]
pub struct ExplorerArgs {
    /// Entries in the log.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Builders (each seed is built by two of them).
    #[arg(long, default_value_t = 4)]
    builders: u64,
    /// Every N-th seed's second build claims other content.
    #[arg(long, default_value_t = 100)]
    conflict_every: u64,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 8)]
    ingest_clients: usize,
    /// Entries per submission.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent page clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds of measurement per view.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// `sqlite`, `postgres` or `both`.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Use this PostgreSQL (a URL with CREATE DATABASE rights) instead of a private cluster.
    #[arg(long)]
    postgres_url: Option<String>,
}

fn builder_name(b: u64) -> String {
    format!("bench-{b}")
}

/// Seed `s` is built by builders `s % B` and `(s + 1) % B`.
fn builders_of(s: u64, b: u64) -> [u64; 2] {
    [s % b, (s + 1) % b]
}

fn content(s: u64, second: bool, every: u64) -> u64 {
    if second && s.is_multiple_of(every) {
        s + 1_000_000_000
    } else {
        s
    }
}

/// Pre-signs every entry (not timed), in submission order: seed by seed, both builds.
fn generate(args: &ExplorerArgs) -> Vec<Vec<u8>> {
    let seeds = args.entries / 2;
    let keys: Vec<_> = (0..args.builders)
        .map(|b| gen::builder_key(&builder_name(b)))
        .collect();
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let out: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let keys = &keys;
                s.spawn(move || {
                    let (lo, hi) = (seeds * t / threads, seeds * (t + 1) / threads);
                    let mut v = Vec::with_capacity(((hi - lo) * 2) as usize);
                    for seed in lo..hi {
                        for (i, b) in builders_of(seed, args.builders).iter().enumerate() {
                            let c = content(seed, i == 1, args.conflict_every);
                            v.push(gen::signed_small(&keys[*b as usize], seed, c));
                        }
                    }
                    v
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    eprintln!(
        "signed {} entries in {:.1} s (not part of any figure)",
        out.len(),
        started.elapsed().as_secs_f64()
    );
    out
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let r = http.get(url).send().await?;
    anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
    Ok(r.json().await?)
}

struct ViewReport {
    name: &'static str,
    lat: Samples,
    rps: f64,
}

/// Requests `url_of(client, i)` from `clients` concurrent clients for `secs` seconds.
async fn measure<F>(
    name: &'static str,
    http: &reqwest::Client,
    clients: usize,
    secs: u64,
    url_of: F,
) -> anyhow::Result<ViewReport>
where
    F: Fn(u64) -> String + Send + Sync + 'static,
{
    let url_of = Arc::new(url_of);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let counter = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url_of, counter) = (http.clone(), url_of.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = crate::stats::Rng::for_client(c as u64);
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let rnd = rng.next_u64();
                let url = url_of(rnd);
                let t = Instant::now();
                let resp = http.get(&url).send().await?;
                let status = resp.status();
                let body = resp.bytes().await?;
                lat.push(t.elapsed());
                anyhow::ensure!(status.is_success(), "{url}: {status}");
                anyhow::ensure!(body.len() > 200, "{url}: short body");
                counter.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let rps = counter.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    Ok(ViewReport {
        name,
        lat: Samples::new(lat),
        rps,
    })
}

fn enc(s: &str) -> String {
    s.replace('/', "%2F")
}

async fn run_backend(
    backend: &'static str,
    database: Option<String>,
    args: &ExplorerArgs,
    envs: &[Vec<u8>],
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("log");
    let opts = ServerOpts {
        database: database.clone(),
        ..ServerOpts::default()
    };
    for b in 0..args.builders {
        add_builder(
            &data,
            &opts,
            &gen::builder_key(&builder_name(b)).public().to_string(),
        );
    }
    let mut server = Provenixd::start(&data, &opts);
    let total = envs.len() as u64;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()?;
    eprintln!(
        "[{backend}] ingesting {total} entries ({} builders, a disagreement every {} seeds)",
        args.builders, args.conflict_every
    );
    let batches: Arc<Mutex<std::vec::IntoIter<Vec<Vec<u8>>>>> = Arc::new(Mutex::new(
        envs.chunks(args.batch)
            .map(<[_]>::to_vec)
            .collect::<Vec<_>>()
            .into_iter(),
    ));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.ingest_clients {
        let (http, batches, url) = (http.clone(), batches.clone(), server.url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(b) = batches.lock().unwrap().next() else {
                    return anyhow::Ok(());
                };
                let body = {
                    let mut s = b"{\"entries\":[".to_vec();
                    for (i, e) in b.iter().enumerate() {
                        if i > 0 {
                            s.push(b',');
                        }
                        s.extend_from_slice(e);
                    }
                    s.extend_from_slice(b"]}");
                    s
                };
                loop {
                    let r = http
                        .post(format!("{url}/v1/entries"))
                        .body(body.clone())
                        .send()
                        .await?;
                    if r.status().as_u16() == 503 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    anyhow::ensure!(r.status().is_success(), "submit: {}", r.status());
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ingest = t0.elapsed();
    let home_url = format!("{}/v1/explorer/home", server.url);
    let mut indexed_at_ingest_end = None;
    loop {
        let home = get_json(&http, &home_url).await?;
        let indexed = home["indexed"].as_u64().unwrap_or(0);
        indexed_at_ingest_end.get_or_insert(indexed);
        if indexed >= total && home["checkpoint"]["size"] == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let indexed_all = t0.elapsed();
    eprintln!(
        "[{backend}] measuring views, {} clients, {} s each",
        args.clients, args.secs
    );

    // Sanity: a conflicting seed shows both values, and the counts add up.
    let seeds = total / 2;
    let probe = args.conflict_every * 3;
    let key = gen::store_path(probe, &format!("pkg-{probe}"))
        .hash()
        .to_string();
    let v = get_json(&http, &format!("{}/v1/explorer/search?q={key}", server.url)).await?;
    anyhow::ensure!(
        v["results"][0]["values"].as_array().map(Vec::len) == Some(2),
        "seed {probe} should have two values: {v}"
    );
    let home = get_json(&http, &home_url).await?;
    let expected_conflicts = seeds.div_ceil(args.conflict_every);
    anyhow::ensure!(
        home["disagreements"] == expected_conflicts,
        "expected {expected_conflicts} disagreements: {}",
        home["disagreements"]
    );

    let base = server.url.clone();
    let b = args.builders;
    let every = args.conflict_every;
    let per_builder = total / b;
    let mut reports = Vec::new();
    let path_of =
        move |r: u64| gen::store_path(r % seeds, &format!("pkg-{}", r % seeds)).to_string();
    {
        let base = base.clone();
        reports.push(
            measure(
                "search page (store path)",
                &http,
                args.clients,
                args.secs,
                move |r| format!("{base}/search?q={}", enc(&path_of(r))),
            )
            .await?,
        );
    }
    {
        let base = base.clone();
        reports.push(
            measure(
                "search JSON (store path)",
                &http,
                args.clients,
                args.secs,
                move |r| format!("{base}/v1/explorer/search?q={}", enc(&path_of(r))),
            )
            .await?,
        );
    }
    {
        let base = base.clone();
        reports.push(
            measure(
                "search page (.drv)",
                &http,
                args.clients,
                args.secs,
                move |r| {
                    let s = r % seeds;
                    format!(
                        "{base}/search?q={}",
                        enc(&gen::store_path(s ^ 0xd7d7, &format!("pkg-{s}.drv")).to_string())
                    )
                },
            )
            .await?,
        );
    }
    {
        let base = base.clone();
        reports.push(
            measure(
                "builder page (newest)",
                &http,
                args.clients,
                args.secs,
                move |r| format!("{base}/builder/{}", builder_name(r % b)),
            )
            .await?,
        );
    }
    {
        let base = base.clone();
        reports.push(
            measure(
                "builder page (deep cursor)",
                &http,
                args.clients,
                args.secs,
                move |r| {
                    format!(
                        "{base}/builder/{}?cursor={}",
                        builder_name(r % b),
                        (r >> 8) % total
                    )
                },
            )
            .await?,
        );
    }
    {
        let base = base.clone();
        reports.push(
            measure(
                "builder JSON (newest)",
                &http,
                args.clients,
                args.secs,
                move |r| format!("{base}/v1/explorer/builders/{}", builder_name(r % b)),
            )
            .await?,
        );
    }
    {
        let base = base.clone();
        reports.push(
            measure(
                "disagreements page",
                &http,
                args.clients,
                args.secs,
                move |_| format!("{base}/disagreements"),
            )
            .await?,
        );
    }
    {
        let base = base.clone();
        reports.push(
            measure(
                "disagreements page (deep)",
                &http,
                args.clients,
                args.secs,
                move |r| {
                    let s = (r % seeds) / every * every;
                    let k = gen::store_path(s, &format!("pkg-{s}")).hash();
                    format!("{base}/disagreements?cursor={}-{k}", 2 * s + 1)
                },
            )
            .await?,
        );
    }
    {
        let base = base.clone();
        reports.push(
            measure("home page", &http, args.clients, args.secs, move |_| {
                format!("{base}/")
            })
            .await?,
        );
    }
    {
        let base = base.clone();
        reports.push(
            measure("entry page", &http, args.clients, args.secs, move |r| {
                format!("{base}/entry/{}", r % total)
            })
            .await?,
        );
    }
    let peak_rss = crate::procfs::status_bytes(server.child.id(), "VmHWM:");
    anyhow::ensure!(server.terminate(), "provenixd did not stop cleanly");
    let store = match &database {
        Some(u) => Store::open(u, 1).await?,
        None => Store::open(&Store::sqlite_url_in(&data), 1).await?,
    };
    let disk = store.disk_bytes(Some(&data.join("log.db"))).await?;
    store.close().await;

    println!("== explorer, {backend}, {total} entries, {b} builders ({per_builder} entries each), {expected_conflicts} disagreements ==");
    println!(
        "ingest            {:.0} entries/s with the indexer running; indexed {} of {total} when ingest ended",
        total as f64 / ingest.as_secs_f64(),
        indexed_at_ingest_end.unwrap_or(0)
    );
    println!(
        "indexer           everything indexed {:.1} s after ingest began ({:.1} s after it ended): {:.0} entries/s",
        indexed_all.as_secs_f64(),
        (indexed_all - ingest).as_secs_f64(),
        total as f64 / indexed_all.as_secs_f64()
    );
    println!(
        "disk              {:.1} bytes/entry (log + explorer index); server peak RSS {:.1} MB",
        disk as f64 / total as f64,
        peak_rss as f64 / 1e6
    );
    println!(
        "{:<28} {:>10} {:>12} {:>12} {:>12}",
        "view", "req/s", "p50", "p99", "max"
    );
    for r in &reports {
        println!(
            "{:<28} {:>10.0} {:>12} {:>12} {:>12}",
            r.name,
            r.rps,
            ms(r.lat.median()),
            ms(r.lat.pct(99.0)),
            ms(r.lat.pct(100.0))
        );
    }
    Ok(())
}

/// Runs the benchmark.
pub fn run(args: ExplorerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.builders >= 2, "need at least two builders");
    anyhow::ensure!(
        args.conflict_every >= 1,
        "conflict-every must be at least 1"
    );
    let envs = generate(&args);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if matches!(args.backend.as_str(), "sqlite" | "both") {
        rt.block_on(run_backend("sqlite", None, &args, &envs))?;
    }
    if matches!(args.backend.as_str(), "postgres" | "both") {
        let cluster;
        let admin = match &args.postgres_url {
            Some(u) => u.clone(),
            None => {
                cluster = PgCluster::start()
                    .context("cannot start a private PostgreSQL (is postgresql installed?)")?;
                cluster.url.clone()
            }
        };
        let db = rt.block_on(crate::procfs::fresh_database(
            &admin,
            "provenix_bench_explorer",
        ))?;
        rt.block_on(run_backend("postgres", Some(db), &args, &envs))?;
    }
    println!(
        "\nmachine: {} cores; server and load generator share them",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}
