//! `provenix-bench hook`: what `provenix hook` costs a Nix build.
//!
//! Builds one real derivation in a chroot store (so `DRV_PATH` is real and Nix's build log
//! exists for the hook's start-time lookup), then runs the real hook the way Nix does: the
//! `provenix-hook` symlink to the release `provenix`, no arguments, Nix's environment, a real
//! spool on this machine's disk (append + fsync). Each sample is the wall time of spawn + run +
//! exit as the parent sees it, which is what blocks Nix's build loop.
//!
//! Peers measured in the same run: `/bin/true` (the floor: spawning any process) and the naive
//! shell hook NIX-FACTS.md describes (`nix path-info` + `nix show-derivation` in the hook).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use provenix_e2e::nix::{unique, write_test_expr, Builder, Store};

use crate::stats::{ms, Samples};

/// Options of the hook benchmark.
#[derive(clap::Args, Debug)]
pub struct HookArgs {
    /// Hook calls to time.
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    /// Calls of the naive shell hook (each runs two `nix` processes; 0 skips it).
    #[arg(long, default_value_t = 20)]
    pub naive_calls: usize,
    /// Directory for the store and spool (default: a temporary directory under $TMPDIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn time(n: usize, mut f: impl FnMut()) -> Samples {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    Samples::new(v)
}

fn line(label: &str, s: &Samples) {
    println!(
        "{label:<34} n={:<4} median {}  p90 {}  max {}",
        s.len(),
        ms(s.median()),
        ms(s.pct(90.0)),
        ms(s.pct(100.0))
    );
}

pub fn run(args: &HookArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let builder = Builder::new(
        &tmp.path().join("builder"),
        "bench",
        &["http://127.0.0.1:9"],
        "",
    );
    // Build without the hook, then call the hook ourselves.
    let store = Store::new(&tmp.path().join("store"));
    let expr = write_test_expr(tmp.path(), &unique("hookbench"));
    let out = store.build(&expr, &["dep"]);
    let drv = store.deriver(&out[0]);
    let hook_cmd = || {
        let mut c = Command::new(&builder.hook.program);
        c.env("PROVENIX_CONFIG", &builder.config)
            .env("DRV_PATH", drv.to_string())
            .env("OUT_PATHS", "")
            .env("NIX_REMOTE", store.remote());
        c
    };
    // Warm the page cache and the binary.
    for _ in 0..5 {
        let o = hook_cmd().output()?;
        anyhow::ensure!(
            o.status.success() && o.stderr.is_empty(),
            "hook failed: {o:?}"
        );
    }
    let before = builder.spool_counts().incoming;

    println!(
        "provenix-bench hook: {} calls of the real `provenix-hook` (release build), spool on {}",
        args.calls,
        builder.spool.display()
    );
    let hook = time(args.calls, || {
        let s = hook_cmd().status();
        assert!(s.is_ok_and(|s| s.success()));
    });
    let written = builder.spool_counts().incoming - before;
    anyhow::ensure!(
        written == args.calls,
        "expected {} records, spool has {written} new",
        args.calls
    );
    let floor = time(args.calls, || {
        let s = Command::new("/bin/true").status();
        assert!(s.is_ok_and(|s| s.success()));
    });
    // The flush floor: the same append + fdatasync, in process, next to the spool.
    let probe = builder.spool.join("flush-probe");
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&probe)?;
    let flush = time(args.calls, || {
        use std::io::Write as _;
        (&f).write_all(b"\n{\"probe\":1}\n").unwrap();
        f.sync_data().unwrap();
    });
    drop(f);
    std::fs::remove_file(&probe)?;
    line("provenix hook (spawn+record+exit)", &hook);
    line("/bin/true (process spawn floor)", &floor);
    line("append+fdatasync in process (disk)", &flush);
    if args.naive_calls > 0 {
        let script = tmp.path().join("naive-hook.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nset -e\nnix path-info --json $(nix-store -q --outputs \"$DRV_PATH\") >/dev/null\nnix show-derivation \"$DRV_PATH\" >/dev/null\n",
        )?;
        let naive = time(args.naive_calls, || {
            let s = store
                .command("/bin/sh")
                .arg(&script)
                .env("DRV_PATH", drv.to_string())
                .status();
            assert!(s.is_ok_and(|s| s.success()));
        });
        line("naive shell hook (path-info+show-drv)", &naive);
    }
    let median = hook.median();
    println!(
        "hook median {} per build: {} the 5 ms target; records written: {written}",
        ms(median),
        if median <= Duration::from_millis(5) {
            "meets"
        } else {
            "MISSES"
        }
    );
    println!(
        "of which process spawn ~{} and one disk flush ~{} (this disk's flush latency varies with other load): the hook's own work ~{}",
        ms(floor.median()),
        ms(flush.median()),
        ms(median.saturating_sub(floor.median() + flush.median()))
    );
    Ok(())
}
