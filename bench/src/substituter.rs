//! `provenix-bench substituter`: the figures of issue 4, measured side by side in one run.
//!
//! 1. Builds a closure of `levels × width + 2` real derivations with Nix in a chroot store,
//!    copies it to a `file://` cache (xz, Nix's default; signed by builder `alpha`, as a
//!    builder's cache is) served by nginx, and puts one entry per
//!    path from each of three builders (`alpha`, `beta`, `gamma`) into three real `provenixd`
//!    logs on loopback.
//! 2. Warm narinfo latency (p50/p99) and requests/s at concurrency 1 and 16: the proxy
//!    (`2 of [alpha, beta, gamma]`, every decision cached) against nginx serving the same narinfo
//!    files, with one in-process keep-alive HTTP client.
//! 3. Cold decision latency per path with 3 logs: `Quorum::decide` for one path at a time
//!    (three batched lookups, every proof and signature checked), and the proxy's
//!    `/v1/decision/<hash>?fresh=1` (upstream narinfo + decision).
//! 4. Real Nix (`nix-store --realise --max-jobs 0`) substituting the whole closure into a fresh
//!    store: from the `file://` cache directly, from nginx directly (both checking the cache's
//!    signatures, Nix's default), through a freshly started proxy (nothing cached), through the
//!    same proxy again (decisions cached), and from nginx with `require-sigs = false` for
//!    reference. They run in a rotating order each repetition; median and best are printed.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p provenix-bench -- substituter [--levels 50 --width 4 --reps 11]
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use provenix::quorum::state::LogState;
use provenix::quorum::{Quorum, QuorumOptions};
use provenix_core::entry::{NixBuild, Output};
use provenix_core::nix::{NarHash, StorePath};
use provenix_core::policy::TrustConfig;
use provenix_e2e::gen;
use provenix_e2e::nix::{show, unique, Store, BASE_NIX_CONFIG};
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_e2e::substituter::{copy_to_signed_cache, proxy_key, Nginx, Proxy, Trust};

use crate::stats::{ms, Samples};

/// Options of the substituter benchmark.
#[derive(clap::Args, Debug)]
pub struct SubstituterArgs {
    /// Levels of the closure (each depends on every path of the level below).
    #[arg(long, default_value_t = 50)]
    pub levels: usize,
    /// Paths per level.
    #[arg(long, default_value_t = 4)]
    pub width: usize,
    /// Bytes written into each output (so NARs are not trivially small).
    #[arg(long, default_value_t = 65_536)]
    pub output_bytes: usize,
    /// Seconds of load per warm-latency run.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Repetitions of each real-Nix closure substitution (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// After setting up, print the URLs and wait this many seconds (to look at it by hand).
    #[arg(long, default_value_t = 0)]
    pub pause_secs: u64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn write_expr(dir: &Path, tag: &str, levels: usize, width: usize, bytes: usize) -> PathBuf {
    let expr = format!(
        r#"let
  mk = name: script: derivation {{ inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; }};
  pad = "/usr/bin/yes {tag} | /usr/bin/head -c {bytes} >> $out";
  root = mk "{tag}-root" "echo root > $out; ${{pad}}";
  level = n: if n == 0 then [ root ] else
    let prev = level (n - 1); in
    builtins.genList (i: mk "{tag}-l${{toString n}}-${{toString i}}"
      "echo ${{toString n}} ${{toString i}} ${{builtins.concatStringsSep " " (map toString prev)}} > $out; ${{pad}}") {width};
in mk "{tag}-top" "echo ${{builtins.concatStringsSep " " (map toString (level {levels}))}} > $out"
"#
    );
    let file = dir.join("closure.nix");
    std::fs::write(&file, expr).unwrap();
    file
}

struct Info {
    path: StorePath,
    nar_hash: NarHash,
    nar_size: u64,
    references: Vec<StorePath>,
}

fn closure_info(store: &Store, top: &StorePath) -> anyhow::Result<Vec<Info>> {
    let out = store
        .command("nix")
        .args(["path-info", "--json", "-r"])
        .arg(top.to_string())
        .output()?;
    if !out.status.success() {
        bail!("nix path-info: {}", show(&out));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut infos = Vec::new();
    for o in v.as_array().context("path-info array")? {
        infos.push(Info {
            path: o["path"].as_str().context("path")?.parse()?,
            nar_hash: o["narHash"].as_str().context("narHash")?.parse()?,
            nar_size: o["narSize"].as_u64().context("narSize")?,
            references: o["references"]
                .as_array()
                .context("references")?
                .iter()
                .map(|r| r.as_str().unwrap_or_default().parse())
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(infos)
}

/// `(p50, p99, requests/s)` of GETs of `urls` at `conc` concurrent keep-alive connections.
async fn load(
    urls: Arc<Vec<String>>,
    conc: usize,
    dur: Duration,
) -> anyhow::Result<(Samples, f64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .build()?;
    // Warm the connections.
    for u in urls.iter().take(conc) {
        client.get(u).send().await?.bytes().await?;
    }
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for t in 0..conc {
        let client = client.clone();
        let urls = urls.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = t * 7919;
            while Instant::now() < deadline {
                let u = &urls[i % urls.len()];
                i += 1;
                let t0 = Instant::now();
                let r = client.get(u).send().await?;
                let status = r.status().as_u16();
                r.bytes().await?;
                lat.push(t0.elapsed());
                if status != 200 {
                    bail!("{u}: HTTP {status}");
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = all.len() as f64;
    Ok((Samples::new(all), n / secs))
}

/// Substitutes `top`'s closure into a fresh store with `conf` lines; returns the wall time and
/// the CPU time (user + system) `nix-store` itself used.
fn realise(
    dir: &Path,
    top: &StorePath,
    conf: &str,
    expect: usize,
) -> anyhow::Result<(Duration, f64)> {
    let client = Store::new(dir);
    let mut c = client.command("nix-store");
    c.env("NIX_CONFIG", format!("{BASE_NIX_CONFIG}{conf}"))
        .args(["--realise", "--max-jobs", "0"])
        .arg(top.to_string());
    let cpu0 = crate::procfs::children_cpu_secs();
    let t0 = Instant::now();
    let out = c.output()?;
    let took = t0.elapsed();
    let cpu = crate::procfs::children_cpu_secs() - cpu0;
    if !out.status.success() {
        bail!("nix-store --realise: {}", show(&out));
    }
    let q = client
        .command("nix-store")
        .args(["-qR"])
        .arg(top.to_string())
        .output()?;
    let n = String::from_utf8_lossy(&q.stdout).lines().count();
    if n != expect {
        bail!("substituted {n} paths, expected {expect}");
    }
    Ok((took, cpu))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs the benchmark and prints its figures.
pub fn run(args: &SubstituterArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    println!("# provenix-bench substituter (work dir {})", dir.display());

    // --- logs and builders ---
    let names = ["alpha", "beta", "gamma"];
    let keys: Vec<_> = names.iter().map(|n| gen::builder_key(n)).collect();
    let mut logs = Vec::new();
    for i in 0..3 {
        let d = dir.join(format!("log{i}"));
        let opts = ServerOpts {
            origin: Some(format!("log{i}.bench")),
            ..ServerOpts::default()
        };
        for k in &keys {
            add_builder(&d, &opts, &k.public().to_string());
        }
        logs.push(Provenixd::start(&d, &opts));
    }

    // --- the closure, built by real Nix ---
    let t0 = Instant::now();
    let store = Store::new(&dir.join("build"));
    let expr = write_expr(
        dir,
        &unique("bench"),
        args.levels,
        args.width,
        args.output_bytes,
    );
    let top = store
        .try_build(&expr, &[], &[])
        .map_err(|o| anyhow::anyhow!("nix-build: {}", show(&o)))?
        .pop()
        .context("no output")?;
    let infos = closure_info(&store, &top)?;
    let n = infos.len();
    // The file cache is signed, as a builder's cache is: Nix's default (`require-sigs = true`)
    // then checks each narinfo's signature when substituting directly, as it checks the
    // proxy's. (Comparing against `require-sigs = false` would charge the proxy for a check
    // the direct run skipped: ~30 ms of Nix's CPU on this closure; that run is printed too.)
    let cache = dir.join("cache");
    let cache_key = gen::builder_key("alpha");
    let cache_key_file = dir.join("cache.sec");
    std::fs::write(&cache_key_file, cache_key.to_secret_string())?;
    copy_to_signed_cache(&store, &cache, &cache_key_file, &[top.to_string()]);
    println!(
        "closure: {n} paths (built and copied to a file:// cache in {:.1} s)",
        t0.elapsed().as_secs_f64()
    );

    // --- one entry per path per builder, in every log ---
    let envelopes: Vec<Vec<u8>> = keys
        .iter()
        .flat_map(|k| {
            infos.iter().map(move |i| {
                NixBuild {
                    builder: k.name().to_owned(),
                    outputs: vec![Output {
                        name: "out".into(),
                        path: i.path.clone(),
                        nar_hash: i.nar_hash,
                        nar_size: Some(i.nar_size),
                        references: i.references.clone(),
                    }],
                    built_locally: true,
                    started_on: Some("2026-11-21T10:00:00Z".into()),
                    finished_on: Some("2026-11-21T10:00:01Z".into()),
                    ..Default::default()
                }
                .sign(k)
                .canonical_json()
            })
        })
        .collect();
    rt.block_on(async {
        for log in &logs {
            let c = provenix::logclient::LogClient::new(&log.url, Duration::from_secs(30))?;
            for chunk in envelopes.chunks(1000) {
                let r = c.submit(chunk, true).await?;
                if r.checkpoint.is_none() {
                    bail!("{}: not integrated in time", log.url);
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    println!("entries: {} per log, 3 logs", envelopes.len());

    // --- nginx and the proxy ---
    let nginx = Nginx::start(&cache, free_port()?);
    let (sec, _) = proxy_key(&dir.join("proxy-key"), "proxy-bench-1");
    let trust = Trust {
        logs: logs
            .iter()
            .map(|l| (l.url.clone(), l.verifier_key.clone()))
            .collect(),
        builders: keys
            .iter()
            .map(|k| (k.name().to_owned(), k.public().to_string()))
            .collect(),
        threshold: "2 of [alpha, beta, gamma]".into(),
        dissent: "veto".into(),
        upstreams: vec![nginx.url.clone()],
        signing_key_file: sec,
        state_file: dir.join("state.json"),
        extra: "decision-ttl-secs = 3600".into(),
    };
    let trust_file = trust.write(&dir.join("trust.toml"));
    let proxy = Proxy::start(&trust_file);
    if args.pause_secs > 0 {
        println!(
            "proxy {} (key {}), nginx {}, top {top}, cache {}",
            proxy.url,
            proxy.public_key,
            nginx.url,
            cache.display()
        );
        crate::interrupt::sleep(Duration::from_secs(args.pause_secs))?;
    }

    // --- warm narinfo latency ---
    let hashes: Vec<String> = infos.iter().map(|i| i.path.hash().to_string()).collect();
    let proxy_urls: Arc<Vec<String>> = Arc::new(
        hashes
            .iter()
            .map(|h| format!("{}/{h}.narinfo", proxy.url))
            .collect(),
    );
    let nginx_urls: Arc<Vec<String>> = Arc::new(
        hashes
            .iter()
            .map(|h| format!("{}/{h}.narinfo", nginx.url))
            .collect(),
    );
    rt.block_on(async {
        let c = reqwest::Client::new();
        for u in proxy_urls.iter() {
            let r = c.get(u).send().await?;
            if r.status().as_u16() != 200 {
                bail!("{u}: {} {}", r.status(), r.text().await.unwrap_or_default());
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let dur = Duration::from_secs_f64(args.seconds);
    println!();
    println!(
        "## warm narinfo ({n} distinct paths, {:.1} s per run, keep-alive, in-process client)",
        args.seconds
    );
    println!("| server | concurrency | p50 | p99 | requests/s |");
    println!("|---|---|---|---|---|");
    let mut p50s = Vec::new();
    for conc in [1, 16] {
        for (name, urls) in [("nginx", &nginx_urls), ("provenix", &proxy_urls)] {
            let (s, rps) = rt.block_on(load(urls.clone(), conc, dur))?;
            println!(
                "| {name} | {conc} | {} | {} | {rps:.0} |",
                ms(s.median()),
                ms(s.pct(99.0))
            );
            p50s.push((name, conc, s.median()));
        }
    }
    for conc in [1, 16] {
        let get = |who: &str| {
            p50s.iter()
                .find(|(n, c, _)| *n == who && *c == conc)
                .map(|(_, _, d)| d.as_secs_f64())
                .unwrap_or(f64::NAN)
        };
        println!(
            "ratio p50 provenix/nginx at concurrency {conc}: {:.2} (target <= 1.5)",
            get("provenix") / get("nginx")
        );
    }

    // --- cold decisions ---
    let config = TrustConfig::parse(&trust.text())?;
    let verifiers: Vec<_> = config.logs.iter().map(|l| l.key.clone()).collect();
    let state = Arc::new(LogState::open(&dir.join("state-quorum.json"), &verifiers)?);
    let quorum = Quorum::new(&config, &QuorumOptions::from_config(&config), state)?;
    let paths: Vec<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let (lat, trusted) = rt.block_on(async {
        // First sight of each log's checkpoint (trust on first use) is not a per-path cost.
        quorum.decide(&paths[..1]).await;
        let mut lat = Vec::new();
        let mut trusted = 0;
        for p in &paths {
            let t0 = Instant::now();
            let (d, _) = quorum.decide(std::slice::from_ref(p)).await;
            lat.push(t0.elapsed());
            trusted += usize::from(d.first().is_some_and(|(d, _)| d.is_trusted()));
        }
        (lat, trusted)
    });
    if trusted != n {
        bail!("only {trusted} of {n} paths trusted");
    }
    let s = Samples::new(lat);
    println!();
    println!("## cold decision, one path at a time, 3 logs on loopback ({n} paths)");
    println!("| what | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| Quorum::decide (3 batched lookups, proofs + signatures checked) | {} | {} | {} |",
        ms(s.median()),
        ms(s.pct(99.0)),
        ms(s.pct(100.0))
    );
    let lat = rt.block_on(async {
        let c = reqwest::Client::new();
        let mut lat = Vec::new();
        for h in &hashes {
            let u = format!("{}/v1/decision/{h}?fresh=1", proxy.url);
            let t0 = Instant::now();
            let r = c.get(&u).send().await?;
            let ok = r.status().as_u16() == 200;
            r.bytes().await?;
            lat.push(t0.elapsed());
            if !ok {
                bail!("{u}: not 200");
            }
        }
        Ok::<_, anyhow::Error>(lat)
    })?;
    let s = Samples::new(lat);
    println!(
        "| proxy /v1/decision?fresh=1 (upstream narinfo + decision + JSON) | {} | {} | {} |",
        ms(s.median()),
        ms(s.pct(99.0)),
        ms(s.pct(100.0))
    );
    drop(proxy);

    // --- real Nix: the whole closure ---
    println!();
    println!("## real Nix: nix-store --realise of the {n}-path closure into a fresh store (median of {})", args.reps);
    // The four ways, in a rotating order each repetition (the machine is shared: noise should
    // not always hit the same one). Median and best of the repetitions are reported.
    let names = [
        "file:// cache directly",
        "nginx over HTTP directly",
        "provenix substituter, cold (fresh process) -> nginx",
        "provenix substituter, decisions cached -> nginx",
        "nginx directly, require-sigs = false (reference)",
    ];
    let direct_sigs = format!("trusted-public-keys = {}\n", cache_key.public());
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let mut nix_cpu = vec![0.0f64; names.len()];
    for r in 0..args.reps {
        // A freshly started proxy: nothing cached, every decision made while Nix walks.
        let p = Proxy::start(&trust_file);
        let proxy_conf = format!(
            "substituters = {}\ntrusted-public-keys = {}\n",
            p.url, p.public_key
        );
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.rotate_left(r % names.len());
        // The cached run needs the cold one first.
        if order.iter().position(|&i| i == 3) < order.iter().position(|&i| i == 2) {
            order.retain(|&i| i != 3);
            let at = order.iter().position(|&i| i == 2).unwrap_or(0) + 1;
            order.insert(at, 3);
        }
        for i in order {
            let conf = match i {
                0 => format!("substituters = file://{}\n{direct_sigs}", cache.display()),
                1 => format!("substituters = {}\n{direct_sigs}", nginx.url),
                4 => format!("substituters = {}\nrequire-sigs = false\n", nginx.url),
                _ => proxy_conf.clone(),
            };
            let (took, cpu) = realise(&dir.join(format!("c-{i}-{r}")), &top, &conf, n)?;
            times[i].push(took);
            nix_cpu[i] += cpu;
        }
        if r == 0 {
            let m = rt.block_on(async {
                reqwest::get(format!("{}/metrics", p.url))
                    .await?
                    .text()
                    .await
            })?;
            for l in m.lines().filter(|l| {
                l.starts_with("provenix_substituter_cache_")
                    || l.starts_with("provenix_substituter_prefetched")
                    || l.starts_with("provenix_substituter_decisions_total")
            }) {
                println!("  proxy metric after the first cold and cached runs: {l}");
            }
        }
    }
    // Nix's own CPU per run: what reading from that source costs Nix itself, whatever the
    // server does (the file:// figure is a floor no HTTP cache can reach).
    println!("| source | median | best | nix-store CPU per run (mean) |");
    println!("|---|---|---|---|");
    let mut med = Vec::new();
    for ((name, t), cpu) in names.iter().zip(&times).zip(&nix_cpu) {
        let best = t.iter().min().copied().unwrap_or_default();
        let m = median(t.clone());
        println!(
            "| {name} | {} | {} | {:.0} ms |",
            ms(m),
            ms(best),
            cpu * 1000.0 / t.len().max(1) as f64
        );
        med.push(m.as_secs_f64());
    }
    println!(
        "ratio cold proxy / direct (medians): {:.2} vs file://, {:.2} vs nginx (target <= 1.3)",
        med[2] / med[0],
        med[2] / med[1]
    );
    println!(
        "ratio cached proxy / direct (medians): {:.2} vs file://, {:.2} vs nginx",
        med[3] / med[0],
        med[3] / med[1]
    );
    drop(nginx);
    drop(logs);
    Ok(())
}
