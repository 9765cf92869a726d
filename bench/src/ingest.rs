//! `provenix-bench ingest`: the log's figures from issue 2, on SQLite and PostgreSQL in one run.
//!
//! For each backend: start a release `provenixd`, ingest N pre-signed ~1.2 KB entries from 16
//! concurrent clients in batches of 100, measure sustained entries/s and the delay from each
//! batch's acknowledgement to the first published checkpoint covering it (a watcher polls
//! `/checkpoint` every 2 ms), then run lookups-with-proof at 16 concurrent clients on the
//! resulting log, and report bytes on disk per entry and the server's peak RSS and CPU.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use provenix::logclient::LogClient;
use provenix_core::api::SubmitResult;
use provenix_core::checkpoint::LogVerifier;
use provenix_e2e::gen;
use provenix_e2e::pg::PgCluster;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_server::store::Store;

use crate::procfs::{cpu_secs, status_bytes};
use crate::stats::{ms, Samples};

/// Options of `provenix-bench ingest`.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Entries to ingest; the lookup phase runs on a log of this size.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Concurrent submitting clients (one builder key each).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Entries per submission.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds of the lookup phase.
    #[arg(long, default_value_t = 20)]
    lookup_secs: u64,
    /// Concurrent lookup clients.
    #[arg(long, default_value_t = 16)]
    lookup_clients: usize,
    /// `sqlite`, `postgres` or `both`.
    #[arg(long, default_value = "both")]
    backend: String,
    /// Use this PostgreSQL (a URL with CREATE DATABASE rights) instead of a private cluster.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Keep the web explorer's index while ingesting (off: the log alone, issue 2's figures).
    #[arg(long)]
    explorer: bool,
    /// After the lookup phase, this many rounds each of lookups with coalescing off
    /// (`lookup-batch-keys = 1`) and on (64), alternating, each on a restarted server.
    #[arg(long, default_value_t = 0)]
    lookup_ab: usize,
    /// The server's `read-pool-size` (default: the server's own default).
    #[arg(long)]
    read_pool_size: Option<u32>,
    /// `shared_buffers` of the private PostgreSQL cluster (default: 2 KiB per entry, about the
    /// working set: leaves, keys and indexes take ~1.6 KB per entry; PostgreSQL's own default of
    /// `128MB` leaves most lookups reading pages through the kernel).
    #[arg(long)]
    pg_shared_buffers: Option<String>,
}

struct Report {
    /// Lookup rounds with coalescing off (1) and on (64): (lookup-batch-keys, lookups/s, latency).
    ab: Vec<(usize, f64, Samples)>,
    backend: &'static str,
    explorer: bool,
    entries: u64,
    ingest_secs: f64,
    first_tenth_rate: f64,
    last_tenth_rate: f64,
    delay: Samples,
    overloaded: u64,
    server_cpu_ingest: f64,
    server_cpu_lookup: f64,
    client_cpu_lookup: f64,
    lookups: u64,
    lookup_secs: f64,
    lookup_lat: Samples,
    disk_bytes: u64,
    leaf_bytes: u64,
    peak_rss: u64,
    commit_share: f64,
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// One kept-alive HTTP/1.1 connection that GETs a path and reads the whole response, and does
/// nothing else. The load generator shares the machine's cores with the server, so it must cost
/// as little as it can: reqwest took ~25 µs of CPU per lookup here, a third of the server's own.
struct RawConn {
    io: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
    line: String,
    body: Vec<u8>,
}

impl RawConn {
    async fn connect(base: &str) -> anyhow::Result<Self> {
        let host = base
            .strip_prefix("http://")
            .context("the load generator speaks plain http only")?
            .trim_end_matches('/')
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&host).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            io: tokio::io::BufReader::with_capacity(64 << 10, stream),
            host,
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// GET `path`: the status and the body (in `self.body`).
    async fn get(&mut self, path: &str) -> anyhow::Result<u16> {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.io.get_mut().write_all(req.as_bytes()).await?;
        self.line.clear();
        self.io.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {:?}", self.line))?;
        let mut len = None;
        loop {
            self.line.clear();
            if self.io.read_line(&mut self.line).await? == 0 {
                anyhow::bail!("connection closed in the headers");
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
            }
        }
        let len = len.context("no content-length")?;
        self.body.resize(len, 0);
        self.io.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

/// Lookups with proof at `clients` concurrent clients for `secs`, random keys over the log's
/// `total` entries; their latencies.
async fn lookup_load(
    base: &str,
    total: u64,
    clients: usize,
    secs: f64,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    // It reads each response body without parsing it (a full response and its proof are
    // verified before), on one kept-alive connection per client.
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = base.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(&base).await?;
            let mut rng = crate::stats::Rng::for_client(c as u64);
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let rnd = rng.next_u64();
                let seed = rnd % total;
                let path = format!(
                    "/v1/lookup/{}",
                    gen::store_path(seed, &format!("pkg-{seed}")).hash()
                );
                let t = Instant::now();
                let status = conn.get(&path).await?;
                lat.push(t.elapsed());
                anyhow::ensure!(status == 200, "lookup {path}: HTTP {status}");
                anyhow::ensure!(conn.body.len() > 1000, "lookup {path}: short body");
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(lat)
}

/// Pre-signs every entry (not timed): client `c` signs with builder `bench-c`.
fn generate(args: &IngestArgs) -> Vec<Vec<Vec<u8>>> {
    let per = args.entries / args.clients as u64;
    let keys: Vec<_> = (0..args.clients)
        .map(|c| gen::builder_key(&format!("bench-{c}")))
        .collect();
    let started = Instant::now();
    let out: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(c, key)| {
                s.spawn(move || {
                    let first = c as u64 * per;
                    (first..first + per)
                        .map(|seed| gen::signed_small(key, seed, seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!(
        "signed {} entries in {:.1} s (not part of any figure)",
        per * args.clients as u64,
        started.elapsed().as_secs_f64()
    );
    out
}

async fn run_backend(
    backend: &'static str,
    database: Option<String>,
    args: &IngestArgs,
    envs: &[Vec<Vec<u8>>],
) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("log");
    let config = dir.path().join("server.toml");
    let base_config = match args.read_pool_size {
        Some(n) => format!("explorer = {}\nread-pool-size = {n}\n", args.explorer),
        None => format!("explorer = {}\n", args.explorer),
    };
    std::fs::write(&config, &base_config)?;
    let opts = ServerOpts {
        database: database.clone(),
        config: Some(config.clone()),
        ..ServerOpts::default()
    };
    for c in 0..args.clients {
        add_builder(
            &data,
            &opts,
            &gen::builder_key(&format!("bench-{c}")).public().to_string(),
        );
    }
    let mut server = Provenixd::start(&data, &opts);
    let pid = server.child.id();
    let verifier: LogVerifier = server.verifier_key.parse()?;
    let total: u64 = envs.iter().map(|e| e.len() as u64).sum();
    let leaf_bytes: u64 = envs.iter().flatten().map(|e| e.len() as u64).sum();
    eprintln!(
        "[{backend}] ingesting {total} entries from {} clients, batches of {}",
        args.clients, args.batch
    );

    // Checkpoint watcher: when each size was first published.
    let seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop, url) = (seen.clone(), stop.clone(), server.url.clone());
        tokio::spawn(async move {
            let client = LogClient::new(&url, Duration::from_secs(5)).unwrap();
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(note) = client.checkpoint().await {
                    let size: u64 = note
                        .lines()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if size > last {
                        last = size;
                        seen.lock().unwrap().push((size, Instant::now()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let overloaded = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for client_envs in envs {
        let client = LogClient::new(&server.url, Duration::from_secs(60))?;
        let batches: Vec<Vec<Vec<u8>>> =
            client_envs.chunks(args.batch).map(<[_]>::to_vec).collect();
        let overloaded = overloaded.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::with_capacity(batches.len());
            for b in batches {
                loop {
                    match client.submit(&b, false).await {
                        Ok(r) => {
                            let at = Instant::now();
                            let mut max = 0;
                            for res in &r.results {
                                match res {
                                    SubmitResult::Accepted(a) => max = max.max(a.index),
                                    SubmitResult::Rejected { error } => {
                                        panic!("rejected: {error:?}")
                                    }
                                }
                            }
                            acks.push((max, at, b.len() as u64));
                            break;
                        }
                        Err(e) if e.status() == Some(503) => {
                            overloaded.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("submit failed: {e}"),
                    }
                }
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await?);
    }
    let ingest = t0.elapsed();
    let cpu_ingest = cpu_secs(pid) - cpu0;
    // Wait for the last checkpoint, then stop the watcher.
    let client = LogClient::new(&server.url, Duration::from_secs(10))?;
    loop {
        let cp = verifier.verify(&client.checkpoint().await?)?;
        if cp.size() >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::Relaxed);
    watcher.await?;
    let seen = seen.lock().unwrap().clone();
    let delays: Vec<Duration> = acks
        .iter()
        .map(|(max, at, _)| {
            let i = seen.partition_point(|(s, _)| *s <= *max);
            seen.get(i)
                .map_or(Duration::MAX, |(_, t)| t.saturating_duration_since(*at))
        })
        .collect();
    // Throughput of the first and last tenth of the run (steady state, not warm-up).
    acks.sort_by_key(|a| a.1);
    let tenth = |from: f64, to: f64| {
        let (a, b) = (t0 + ingest.mul_f64(from), t0 + ingest.mul_f64(to));
        let n: u64 = acks
            .iter()
            .filter(|x| x.1 >= a && x.1 < b)
            .map(|x| x.2)
            .sum();
        n as f64 / (b - a).as_secs_f64()
    };
    let (first_tenth_rate, last_tenth_rate) = (tenth(0.0, 0.1), tenth(0.9, 1.0));
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await?
        .text()
        .await?;
    let commit_secs = metric_sum(&metrics, "provenix_sequencer_commit_seconds_sum");

    // Lookups with proof, random keys over the whole log.
    eprintln!(
        "[{backend}] lookups for {} s at {} clients",
        args.lookup_secs, args.lookup_clients
    );
    let key_of = |seed: u64| {
        gen::store_path(seed, &format!("pkg-{seed}"))
            .hash()
            .to_string()
    };
    let look = client.lookup(&key_of(total / 2)).await?;
    let (_, found) = look.verify(&verifier)?;
    anyhow::ensure!(
        found.len() == 1,
        "lookup sanity check found {} entries",
        found.len()
    );
    let lt0 = Instant::now();
    let (scpu0, ccpu0) = (cpu_secs(pid), cpu_secs(std::process::id()));
    let lat = lookup_load(
        &server.url,
        total,
        args.lookup_clients,
        args.lookup_secs as f64,
    )
    .await?;
    let lookup_secs = lt0.elapsed().as_secs_f64();
    let server_cpu_lookup = (cpu_secs(pid) - scpu0) / lookup_secs;
    let client_cpu_lookup = (cpu_secs(std::process::id()) - ccpu0) / lookup_secs;
    let peak_rss = status_bytes(pid, "VmHWM:");
    anyhow::ensure!(server.terminate(), "provenixd did not stop cleanly");

    // Lookup coalescing on and off, alternating restarts of the same log (side by side).
    let mut ab = Vec::new();
    if args.lookup_ab > 0 {
        for round in 0..args.lookup_ab * 2 {
            let keys = if round % 2 == 0 { 1 } else { 64 };
            std::fs::write(
                &config,
                format!("{base_config}lookup-batch-keys = {keys}\n"),
            )?;
            let mut s = Provenixd::start(&data, &opts);
            let lat = lookup_load(&s.url, total, args.lookup_clients, 2.0).await?;
            drop(lat);
            let t = Instant::now();
            let lat = lookup_load(
                &s.url,
                total,
                args.lookup_clients,
                args.lookup_secs as f64 / 2.0,
            )
            .await?;
            ab.push((
                keys,
                lat.len() as f64 / t.elapsed().as_secs_f64(),
                Samples::new(lat),
            ));
            anyhow::ensure!(s.terminate(), "provenixd did not stop cleanly");
        }
    }

    let store = match &database {
        Some(u) => Store::open(u, 1).await?,
        None => Store::open(&Store::sqlite_url_in(&data), 1).await?,
    };
    let disk_bytes = store.disk_bytes(Some(&data.join("log.db"))).await?;
    store.close().await;
    Ok(Report {
        ab,
        backend,
        explorer: args.explorer,
        entries: total,
        ingest_secs: ingest.as_secs_f64(),
        first_tenth_rate,
        last_tenth_rate,
        delay: Samples::new(delays),
        overloaded: overloaded.load(Ordering::Relaxed),
        server_cpu_ingest: cpu_ingest / ingest.as_secs_f64(),
        server_cpu_lookup,
        client_cpu_lookup,
        lookups: lat.len() as u64,
        lookup_secs,
        lookup_lat: Samples::new(lat),
        disk_bytes,
        leaf_bytes,
        peak_rss,
        commit_share: commit_secs / ingest.as_secs_f64(),
    })
}

fn print(r: &Report) {
    println!(
        "== {} ({} entries{}) ==",
        r.backend,
        r.entries,
        if r.explorer {
            ", explorer index on"
        } else {
            ", explorer index off"
        }
    );
    println!(
        "ingest            {:>10.0} entries/s   (first tenth {:.0}/s, last tenth {:.0}/s; {} x 503 overloaded)",
        r.entries as f64 / r.ingest_secs,
        r.first_tenth_rate,
        r.last_tenth_rate,
        r.overloaded
    );
    println!(
        "ack→checkpoint    p50 {}   p99 {}   max {}",
        ms(r.delay.median()),
        ms(r.delay.pct(99.0)),
        ms(r.delay.pct(100.0))
    );
    println!(
        "lookups w/ proof  {:>10.0} /s         p50 {}   p99 {}",
        r.lookups as f64 / r.lookup_secs,
        ms(r.lookup_lat.median()),
        ms(r.lookup_lat.pct(99.0))
    );
    println!(
        "lookup CPU        server {:.2} cores, load generator {:.2} cores (of 2)",
        r.server_cpu_lookup, r.client_cpu_lookup
    );
    println!(
        "disk              {:.1} bytes/entry = {:.3} x the raw leaf bytes ({:.1} bytes/leaf)",
        r.disk_bytes as f64 / r.entries as f64,
        r.disk_bytes as f64 / r.leaf_bytes as f64,
        r.leaf_bytes as f64 / r.entries as f64
    );
    for keys in [1, 64] {
        let runs: Vec<&(usize, f64, Samples)> = r.ab.iter().filter(|a| a.0 == keys).collect();
        if runs.is_empty() {
            continue;
        }
        let mut rates: Vec<f64> = runs.iter().map(|a| a.1).collect();
        rates.sort_by(f64::total_cmp);
        let p99: Vec<String> = runs.iter().map(|a| ms(a.2.pct(99.0))).collect();
        println!(
            "  lookup-batch-keys = {keys:>2}: median {:.0} lookups/s over {} rounds ({}), p99 {}",
            rates[rates.len() / 2],
            rates.len(),
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            p99.join(", ")
        );
    }
    println!("server peak RSS   {:.1} MB", r.peak_rss as f64 / 1e6);
    println!(
        "server CPU        {:.2} cores busy during ingest (of 2); sequencer commits {:.0}% of wall time",
        r.server_cpu_ingest,
        r.commit_share * 100.0
    );
}

/// Runs the benchmark.
pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    let envs = generate(&args);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    if matches!(args.backend.as_str(), "sqlite" | "both") {
        reports.push(rt.block_on(run_backend("sqlite", None, &args, &envs))?);
        print(reports.last().unwrap());
    }
    if matches!(args.backend.as_str(), "postgres" | "both") {
        let cluster;
        let admin = match &args.postgres_url {
            Some(u) => u.clone(),
            None => {
                let buffers = args
                    .pg_shared_buffers
                    .clone()
                    .unwrap_or_else(|| format!("{}MB", (args.entries * 2048 / (1 << 20)).max(128)));
                eprintln!("[postgres] private cluster with shared_buffers = {buffers}");
                cluster = PgCluster::start_with(&[&format!("shared_buffers={buffers}")])
                    .context("cannot start a private PostgreSQL (is postgresql installed?)")?;
                cluster.url.clone()
            }
        };
        let db = rt.block_on(crate::procfs::fresh_database(&admin, "provenix_bench"))?;
        reports.push(rt.block_on(run_backend("postgres", Some(db), &args, &envs))?);
        print(reports.last().unwrap());
    }
    println!("\nmachine: {} cores; targets: ≥10,000 entries/s, checkpoint p99 ≤ 1 s, ≥20,000 lookups/s with p99 ≤ 5 ms, ≤1.3x raw leaf bytes, ≤300 MB RSS", std::thread::available_parallelism().map_or(0, |n| n.get()));
    Ok(())
}
