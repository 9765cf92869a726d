//! `provenix-bench audit`: audit throughput (issue 6) on a local log of N entries.
//!
//! A release `provenixd` is filled through its HTTP API with N pre-signed ~1 KB entries from 16
//! builders (`--data DIR` keeps the log between runs, so the fill is paid once); then a release
//! `provenix audit --json` with a trust file naming all 16 builders (so every signature is
//! verified) replays the whole log into a fresh state directory — the full replay — and, after
//! `--incremental` more entries are ingested, runs again on the same state — the incremental
//! run. Both report entries verified per second (wall clock of the whole command, from the
//! first request to the committed state), the audit's peak RSS, the server's CPU time while it
//! served the tiles, and the state's size on disk.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::procfs::{cpu_secs, dir_bytes, status_bytes};
use provenix::logclient::LogClient;
use provenix_core::api::SubmitResult;
use provenix_core::checkpoint::LogVerifier;
use provenix_e2e::gen;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};

/// Options of `provenix-bench audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Entries in the log for the full replay.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Entries added before the incremental run.
    #[arg(long, default_value_t = 10_000)]
    incremental: u64,
    /// Keep the log here (reused when it already holds entries of an earlier run).
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Builders (and concurrent submitting clients).
    #[arg(long, default_value_t = 16)]
    builders: usize,
    /// Entries per submission.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Tiles the audit fetches ahead.
    #[arg(long, default_value_t = 16)]
    fetch_ahead: usize,
}

struct Run {
    what: &'static str,
    entries: u64,
    secs: f64,
    peak_rss: u64,
    server_cpu: f64,
    audit_cpu: f64,
}

/// Ingests `to - from` new entries, spread over the builders, and waits until a checkpoint
/// covers them. Seeds start at a per-run base (the clock), so an interrupted earlier run that
/// left some of them in a reused log cannot turn them into duplicates.
async fn ingest(server: &Provenixd, args: &AuditArgs, from: u64, to: u64) -> anyhow::Result<()> {
    if to <= from {
        return Ok(());
    }
    let n = args.builders as u64;
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        / 1000
        * 1000;
    let (from, to) = (base, base + (to - from));
    eprintln!("signing {} entries (not timed)", to - from);
    let keys: Vec<_> = (0..args.builders)
        .map(|c| gen::builder_key(&format!("bench-{c}")))
        .collect();
    let per_client: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let hs: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(c, key)| {
                s.spawn(move || {
                    (from..to)
                        .filter(|seed| seed % n == c as u64)
                        .map(|seed| gen::signed_small(key, seed, seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("ingesting {} entries", to - from);
    let t0 = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let max_index = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for envs in per_client {
        let client = LogClient::new(&server.url, Duration::from_secs(120))?;
        let batch = args.batch;
        let (done, max_index) = (done.clone(), max_index.clone());
        tasks.push(tokio::spawn(async move {
            for b in envs.chunks(batch) {
                loop {
                    match client.submit(b, false).await {
                        Ok(r) => {
                            for res in &r.results {
                                match res {
                                    SubmitResult::Rejected { error } => {
                                        panic!("rejected: {error:?}")
                                    }
                                    SubmitResult::Accepted(a) => {
                                        assert!(!a.duplicate, "a duplicate entry");
                                        max_index.fetch_max(a.index, Ordering::Relaxed);
                                    }
                                }
                            }
                            done.fetch_add(b.len() as u64, Ordering::Relaxed);
                            break;
                        }
                        Err(e) if e.status() == Some(503) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("submit failed: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    wait_size(server, max_index.load(Ordering::Relaxed) + 1).await?;
    eprintln!(
        "ingested {} entries in {:.1} s",
        to - from,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn size_of(server: &Provenixd) -> anyhow::Result<u64> {
    let verifier: LogVerifier = server.verifier_key.parse()?;
    let client = LogClient::new(&server.url, Duration::from_secs(10))?;
    Ok(verifier.verify(&client.checkpoint().await?)?.size())
}

async fn wait_size(server: &Provenixd, size: u64) -> anyhow::Result<()> {
    while size_of(server).await? < size {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Runs `provenix audit --json` and measures it.
fn audit(
    what: &'static str,
    trust: &std::path::Path,
    state: &std::path::Path,
    server_pid: u32,
    fetch_ahead: usize,
) -> anyhow::Result<Run> {
    let cpu0 = cpu_secs(server_pid);
    let t0 = Instant::now();
    let mut child = std::process::Command::new(provenix_e2e::bin("provenix"))
        .args(["audit", "--json", "--config"])
        .arg(trust)
        .arg("--state")
        .arg(state)
        .arg("--fetch-ahead")
        .arg(fetch_ahead.to_string())
        .env(
            "PROVENIX_LOG",
            std::env::var("PROVENIX_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let (peak, cpu) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (stop, peak, cpu) = (stop.clone(), peak.clone(), cpu.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let rss = status_bytes(pid, "VmHWM:");
                peak.fetch_max(rss, Ordering::Relaxed);
                let c = (cpu_secs(pid) * 100.0) as u64;
                cpu.fetch_max(c, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        std::io::Read::read_to_string(&mut s, &mut out)?;
    }
    let status = child.wait()?;
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    anyhow::ensure!(status.code() == Some(0), "audit exited {status}: {out}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let entries = v["logs"][0]["newEntries"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        v["logs"][0]["valid"].as_u64() == Some(entries),
        "not every entry verified: {v:#}"
    );
    Ok(Run {
        what,
        entries,
        secs,
        peak_rss: peak.load(Ordering::Relaxed),
        server_cpu: cpu_secs(server_pid) - cpu0,
        audit_cpu: cpu.load(Ordering::Relaxed) as f64 / 100.0,
    })
}

/// Runs the benchmark.
pub fn run(args: &AuditArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let tmp = tempfile::tempdir()?;
    let data = args.data.clone().unwrap_or_else(|| tmp.path().join("log"));
    let opts = ServerOpts {
        origin: Some("bench.audit".into()),
        ..ServerOpts::default()
    };
    for c in 0..args.builders {
        add_builder(
            &data,
            &opts,
            &gen::builder_key(&format!("bench-{c}")).public().to_string(),
        );
    }
    let server = Provenixd::start(&data, &opts);
    let pid = server.child.id();
    // A reused log may hold more (the incremental entries of an earlier run): replay them all.
    let have = rt.block_on(size_of(&server))?;
    rt.block_on(ingest(&server, args, have, have.max(args.entries)))?;
    let size = rt.block_on(size_of(&server))?;

    let mut trust = format!(
        "[[log]]\nurl = {:?}\nkey = {:?}\n\n",
        server.url, server.verifier_key
    );
    for c in 0..args.builders {
        trust.push_str(&format!(
            "[[builder]]\nname = \"bench-{c}\"\nkey = {:?}\n",
            gen::builder_key(&format!("bench-{c}")).public().to_string()
        ));
    }
    trust.push_str("[policy]\nthreshold = \"1 of [bench-0]\"\n");
    let trust_file = tmp.path().join("trust.toml");
    std::fs::write(&trust_file, trust)?;
    let state = tmp.path().join("state");

    eprintln!("full replay of {size} entries");
    let full = audit("full replay", &trust_file, &state, pid, args.fetch_ahead)?;
    let state_bytes = dir_bytes(&state);
    rt.block_on(ingest(&server, args, size, size + args.incremental))?;
    eprintln!("incremental run over {} new entries", args.incremental);
    let inc = audit("incremental", &trust_file, &state, pid, args.fetch_ahead)?;
    let again = audit("nothing new", &trust_file, &state, pid, args.fetch_ahead)?;
    println!(
        "audit throughput, log of {size} entries (~1 KB, {} builders, every signature verified), {} tiles fetched ahead",
        args.builders, args.fetch_ahead
    );
    println!(
        "{:<14} {:>10} {:>9} {:>14} {:>10} {:>11} {:>11}",
        "run", "entries", "seconds", "entries/s", "peak RSS", "audit CPU", "server CPU"
    );
    for r in [&full, &inc, &again] {
        println!(
            "{:<14} {:>10} {:>9.2} {:>14.0} {:>8} MB {:>9.1} s {:>9.1} s",
            r.what,
            r.entries,
            r.secs,
            if r.secs > 0.0 {
                r.entries as f64 / r.secs
            } else {
                0.0
            },
            r.peak_rss / (1 << 20),
            r.audit_cpu,
            r.server_cpu
        );
    }
    println!(
        "state after the full replay: {:.1} MB ({:.0} bytes per entry)",
        state_bytes as f64 / 1e6,
        state_bytes as f64 / size.max(1) as f64
    );
    println!("target: >= 20,000 entries/s");
    Ok(())
}
