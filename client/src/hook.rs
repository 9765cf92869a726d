//! `provenix hook`: Nix's `post-build-hook`.
//!
//! Nix runs the hook synchronously after every local build, blocking its build loop, and fails
//! the build if the hook exits non-zero (NIX-FACTS.md). So the hook does the least that keeps
//! the build's record safe: it appends one record to the durable spool
//! ([`crate::spool::write_hook_record`]) and exits 0 **whatever happens**. No store query, no
//! network, no async runtime, no key. If anything is missing (no `PROVENIX_CONFIG`, no spool
//! directory, a full disk) it says so on stderr, which Nix shows to the user, and still exits 0.
//!
//! Nix calls the hook with no arguments, so `post-build-hook` must name an executable: either a
//! symlink to `provenix` named `provenix-hook` (`argv[0]` selects this mode) or a two-line script
//! `exec provenix hook`.
//!
//! Inputs (all from Nix's environment; trusted as much as the build's own environment):
//! `DRV_PATH`, `OUT_PATHS` (empty on Nix 2.8.0), `NIX_REMOTE` (the store, recorded so that
//! `push` queries the same one), `NIX_LOG_DIR` (to find the build log whose creation time is the
//! build's start).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use provenix_core::nix::StorePath;

use crate::builder_config::CONFIG_ENV;
use crate::nixstore::StoreLocation;
use crate::spool::{write_hook_record, HookRecord};

/// The name under which a `provenix` symlink acts as the hook.
pub const HOOK_ARGV0: &str = "provenix-hook";

/// Runs the hook with the process environment; never fails (see the module docs).
pub fn run() {
    if let Err(msg) = record(|k| std::env::var(k).ok()) {
        eprintln!("provenix hook: {msg}; the build itself is unaffected");
    }
}

fn nanos(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
}

/// The hook's work with an injectable environment. Returns the record's path.
pub fn record(env: impl Fn(&str) -> Option<String>) -> Result<PathBuf, String> {
    let finished_ns = nanos(SystemTime::now()).unwrap_or(0);
    let config = env(CONFIG_ENV)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{CONFIG_ENV} is not set: this build is NOT recorded"))?;
    let spool =
        spool_dir(Path::new(&config)).map_err(|e| format!("{e}: this build is NOT recorded"))?;
    let drv_path = env("DRV_PATH").unwrap_or_default();
    let drv: StorePath = drv_path.parse().map_err(|e| {
        format!("DRV_PATH {drv_path:?} is not a store path ({e}): nothing to record")
    })?;
    if !drv.is_derivation() {
        return Err(format!(
            "DRV_PATH {drv_path:?} is not a .drv path: nothing to record"
        ));
    }
    let out_paths = env("OUT_PATHS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let store = env("NIX_REMOTE").filter(|s| !s.is_empty());
    let started_ns = build_log_created(&drv, store.as_deref(), env("NIX_LOG_DIR"));
    let rec = HookRecord {
        v: 1,
        drv_path,
        out_paths,
        store,
        finished_ns,
        started_ns,
    };
    write_hook_record(&spool, &rec).map_err(|e| {
        if spool.is_dir() {
            format!(
                "cannot write to spool {}: {e}: this build is NOT recorded",
                spool.display()
            )
        } else {
            format!(
                "spool directory {} does not exist (`provenix push` creates it): this build is NOT recorded",
                spool.display()
            )
        }
    })
}

/// Reads only `spool` from the builder config, so that a mistake elsewhere in the file (which
/// `push` reports loudly) never costs a record.
fn spool_dir(config: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read builder config {}: {e}", config.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("builder config {}: {e}", config.display()))?;
    let spool = table
        .get("spool")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("builder config {}: no `spool` path", config.display()))?;
    Ok(config.parent().unwrap_or(Path::new(".")).join(spool))
}

/// Creation time of Nix's build log for `drv` (Nix creates it when the build starts), if the
/// filesystem records it. One `statx` per candidate; never fails.
fn build_log_created(drv: &StorePath, store: Option<&str>, log_dir: Option<String>) -> Option<u64> {
    let dir = match log_dir.filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => StoreLocation::parse(store)
            .ok()?
            .real_path(Path::new("/nix/var/log/nix")),
    };
    let base = drv.basename();
    let (a, b) = base.split_at(2);
    let stem = dir.join("drvs").join(a);
    for name in [format!("{b}.bz2"), b.to_owned()] {
        if let Ok(t) = std::fs::metadata(stem.join(name)).and_then(|m| m.created()) {
            return nanos(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::collections::HashMap;

    const DRV: &str = "/nix/store/92wwbnb2x9qbsi4lyajmkzmz0ypak6ki-top-x1.drv";

    fn env(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn records_drv_out_paths_store_and_log_time() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("builder.toml");
        // Only `spool` matters to the hook; an invalid field elsewhere does not cost a record.
        std::fs::write(&cfg, "spool = \"spool\"\nlogs = []\n").unwrap();
        std::fs::create_dir(dir.path().join("spool")).unwrap();
        let root = dir.path().join("store");
        let logs = root.join("nix/var/log/nix/drvs/92");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(
            logs.join("wwbnb2x9qbsi4lyajmkzmz0ypak6ki-top-x1.drv.bz2"),
            b"",
        )
        .unwrap();
        let remote = format!("local?root={}", root.display());
        let p = record(env(&[
            (CONFIG_ENV, cfg.display().to_string()),
            ("DRV_PATH", DRV.into()),
            ("OUT_PATHS", " /nix/store/a  /nix/store/b ".into()),
            ("NIX_REMOTE", remote.clone()),
        ]))
        .unwrap();
        let r: HookRecord = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(r.drv_path, DRV);
        assert_eq!(r.out_paths, ["/nix/store/a", "/nix/store/b"]);
        assert_eq!(r.store.as_deref(), Some(remote.as_str()));
        let started = r.started_ns.expect("log file creation time");
        assert!(started <= r.finished_ns && r.finished_ns - started < 60_000_000_000);
    }

    #[test]
    fn every_failure_is_a_message_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("builder.toml");
        std::fs::write(&cfg, "spool = \"nope\"\n").unwrap();
        let c = cfg.display().to_string();
        let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
            (vec![("DRV_PATH", DRV.into())], "PROVENIX_CONFIG is not set"),
            (
                vec![
                    (CONFIG_ENV, "/nonexistent/b.toml".into()),
                    ("DRV_PATH", DRV.into()),
                ],
                "cannot read builder config /nonexistent/b.toml",
            ),
            (
                vec![(CONFIG_ENV, c.clone()), ("DRV_PATH", DRV.into())],
                "/nope does not exist (`provenix push` creates it): this build is NOT recorded",
            ),
            (
                vec![(CONFIG_ENV, c.clone())],
                "DRV_PATH \"\" is not a store path",
            ),
            (
                vec![
                    (CONFIG_ENV, c.clone()),
                    (
                        "DRV_PATH",
                        "/nix/store/92wwbnb2x9qbsi4lyajmkzmz0ypak6ki-top".into(),
                    ),
                ],
                "is not a .drv path",
            ),
        ];
        for (pairs, want) in cases {
            let e = record(env(&pairs)).unwrap_err();
            assert!(e.contains(want), "{pairs:?}: {e}");
        }
        std::fs::write(&cfg, "spool = [").unwrap();
        let e = record(env(&[(CONFIG_ENV, c), ("DRV_PATH", DRV.into())])).unwrap_err();
        assert!(e.starts_with("builder config"), "{e}");
    }
}
