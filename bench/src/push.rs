//! `provenix-bench push`: how fast `provenix push --once` drains a spool into a local log.
//!
//! What is measured, honestly: `--records` real `.drv` files in a chroot store, each a
//! fixed-output derivation whose output was added with `nix-store --add-fixed` (so it is a valid
//! store path with a real NAR hash, but no builder ran: building 10,000 derivations here takes
//! ~15 minutes), each depending on a small chain of really built derivations (its input closure
//! has `--deps` paths). One hook record per derivation is written with the hook's own writer
//! (`provenix::spool::write_hook_record`, fsync per record). Then a real `provenixd` on SQLite
//! and the release `provenix push --once`: store queries, signing, pending batch writes,
//! submission, fsyncs; wall time from spawn to exit. The log's checkpoint must then cover every
//! record.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use provenix::spool::{write_hook_record, HookRecord};
use provenix_core::checkpoint::LogVerifier;
use provenix_e2e::nix::{unique, Builder, Store};
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use sha2::{Digest, Sha256};

/// Options of the push benchmark.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Records to spool and push.
    #[arg(long, default_value_t = 10_000)]
    pub records: usize,
    /// `push.batch-size` (records per store query and per submission).
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Length of the chain of real builds every record depends on (its input closure).
    #[arg(long, default_value_t = 3)]
    pub deps: usize,
    /// Directory for store, spool and log (default: a temporary directory under $TMPDIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn run(args: &PushArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let root = tmp.path();
    let tag = unique("pushbench");
    let store = Store::new(&root.join("store"));

    // 1. Output files, added as fixed-output paths.
    let t = Instant::now();
    let files = root.join("files");
    std::fs::create_dir_all(&files)?;
    let mut hashes = Vec::with_capacity(args.records);
    let mut names = Vec::with_capacity(args.records);
    for i in 0..args.records {
        let name = format!("{tag}-{i}");
        let content = format!("provenix push benchmark {tag} record {i}\n");
        std::fs::write(files.join(&name), &content)?;
        hashes.push(hex(&Sha256::digest(content.as_bytes())));
        names.push(name);
    }
    for chunk in names.chunks(2000) {
        let mut c = store.command("nix-store");
        c.args(["--add-fixed", "sha256"])
            .current_dir(&files)
            .args(chunk);
        let o = c.output()?;
        anyhow::ensure!(
            o.status.success(),
            "nix-store --add-fixed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // 2. The derivations (instantiated, not built) and their really built dependency chain.
    let mut expr = String::from("let\n  mk = name: script: derivation { inherit name; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" script ]; };\n");
    expr.push_str(&format!("  d0 = mk \"{tag}-dep0\" \"echo 0 > $out\";\n"));
    for d in 1..args.deps.max(1) {
        expr.push_str(&format!(
            "  d{d} = mk \"{tag}-dep{d}\" \"echo ${{d{}}} > $out\";\n",
            d - 1
        ));
    }
    let last = args.deps.max(1) - 1;
    expr.push_str("  hashes = [\n");
    for h in &hashes {
        expr.push_str(&format!("    \"{h}\"\n"));
    }
    expr.push_str(&format!("  ];\nin {{\n  dep = d{last};\n  all = builtins.genList (i: derivation {{ name = \"{tag}-${{toString i}}\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \"echo ${{d{last}}}; exit 1\" ]; outputHashMode = \"flat\"; outputHashAlgo = \"sha256\"; outputHash = builtins.elemAt hashes i; }}) {};\n}}\n", args.records));
    let file = root.join("bench.nix");
    std::fs::write(&file, expr)?;
    store.build(&file, &["dep"]);
    let o = store
        .command("nix-instantiate")
        .arg(&file)
        .args(["-A", "all"])
        .output()?;
    anyhow::ensure!(
        o.status.success(),
        "nix-instantiate: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let drvs: Vec<String> = String::from_utf8(o.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(
        drvs.len() == args.records,
        "instantiated {} of {}",
        drvs.len(),
        args.records
    );
    let setup = t.elapsed();
    eprintln!("setup done in {}", secs(setup));

    // 3. The builder, its spool and the log.
    let builder = Builder::new(&root.join("builder"), "bench", &["http://127.0.0.1:9"], "");
    let data = root.join("log");
    add_builder(&data, &ServerOpts::default(), &builder.public_key);
    let log = Provenixd::start(&data, &ServerOpts::default());
    let mut cfg = std::fs::File::create(&builder.config)?;
    write!(
        cfg,
        "key-file = \"bench.sec\"\nspool = \"spool\"\nlogs = [\"{}\"]\n[push]\nbatch-size = {}\n",
        log.url, args.batch_size
    )?;
    drop(cfg);
    let t = Instant::now();
    let remote = store.remote();
    for d in &drvs {
        let ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
        write_hook_record(
            &builder.spool,
            &HookRecord {
                v: 1,
                drv_path: d.clone(),
                out_paths: vec![],
                store: Some(remote.clone()),
                finished_ns: ns,
                started_ns: None,
            },
        )?;
    }
    let spooling = t.elapsed();
    eprintln!("spooled in {}", secs(spooling));

    // 4. The measured run.
    let t = Instant::now();
    let o = Command::new(provenix_e2e::bin("provenix"))
        .args(["push", "--once", "--config"])
        .arg(&builder.config)
        .env("NIX_CONFIG", provenix_e2e::nix::BASE_NIX_CONFIG)
        .env("PROVENIX_LOG", "warn")
        .output()?;
    let push = t.elapsed();
    eprintln!("pushed in {}", secs(push));
    let t = Instant::now();
    anyhow::ensure!(
        o.status.success(),
        "push failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let counts = builder.spool_counts();
    anyhow::ensure!(
        counts.undelivered() == 0 && counts.failed == 0,
        "spool not empty: {counts:?}"
    );

    // 5. The log must hold every record (integration follows within about a second).
    let verifier: LogVerifier = log.verifier_key.parse()?;
    let client = provenix::logclient::LogClient::new(&log.url, Duration::from_secs(10))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let size = loop {
        let size = verifier.verify(&rt.block_on(client.checkpoint())?)?.size();
        if size as usize >= args.records || Instant::now() > deadline {
            break size;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    anyhow::ensure!(
        size as usize == args.records,
        "log checkpoint covers {size} of {} entries",
        args.records
    );
    eprintln!(
        "checkpoint covered every record {} after push exited",
        secs(t.elapsed())
    );

    println!("provenix-bench push: {} records (real .drv files of fixed-output derivations whose outputs were added, not built; input closure of {} really built paths each)", args.records, args.deps.max(1));
    println!(
        "setup (add-fixed, build deps, instantiate): {}",
        secs(setup)
    );
    println!(
        "spooling {} hook records with the hook's writer: {} ({:.0} records/s)",
        args.records,
        secs(spooling),
        args.records as f64 / spooling.as_secs_f64()
    );
    println!(
        "provenix push --once (batch-size {}) into provenixd on SQLite: {} wall",
        args.batch_size,
        secs(push)
    );
    println!("  {}", String::from_utf8_lossy(&o.stdout).trim());
    println!(
        "push throughput: {:.0} records/s; log checkpoint size {size}; spool empty",
        args.records as f64 / push.as_secs_f64()
    );
    eprintln!(
        "removing {} (slow on a disk mounted with `discard`)",
        root.display()
    );
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
