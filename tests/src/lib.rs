//! Test harness shared by provenix's end-to-end tests: locating the built binaries, starting
//! `provenixd` on a free port, PostgreSQL databases, and the "required in CI" rule.
//!
//! Binaries are the ones `cargo build --workspace` put next to the test executable
//! (`target/<profile>/`); the README's test command builds them first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fault;
pub mod gen;
pub mod nix;
pub mod nixeval;
pub mod pg;
pub mod server;
pub mod service;
pub mod substituter;
pub mod swtpm;
pub mod witness;

use std::path::PathBuf;

/// Whether we run under CI rules (`PROVENIX_CI=1`): every test's tools must be present.
pub fn ci() -> bool {
    std::env::var_os("PROVENIX_CI").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Returns true if `tool` is on PATH. Without it: in CI, panic; otherwise print why the test is
/// skipped and return false.
pub fn require_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        if ci() {
            panic!("{tool} is required (PROVENIX_CI is set) but not on PATH");
        }
        eprintln!("SKIP: {tool} not found on PATH (set PROVENIX_CI=1 to make this a failure)");
    }
    found
}

/// The directory holding the workspace's built binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    // A test binary lives in target/<profile>/deps/, a bench binary in target/<profile>/.
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary (`provenixd`, `provenix`), built beforehand.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --workspace --bins` first (the README's test command does)",
        p.display()
    );
    p
}

/// The shared test vectors (`../shared/vectors` beside the workspace).
pub fn vectors() -> PathBuf {
    std::env::var_os("PROVENIX_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors"))
        })
}

/// The Python interpreter with the third-party checkers installed (`PROVENIX_PYTHON`, set by the
/// README's test command). `None` (after printing why) outside CI when it is not set.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("PROVENIX_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                !ci(),
                "PROVENIX_PYTHON must be set in CI (the test script creates the venv)"
            );
            eprintln!("SKIP: PROVENIX_PYTHON not set; run the README's test command");
            None
        }
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A multi-threaded tokio runtime for tests that drive real processes.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A current-thread tokio runtime, for a test's occasional async call.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `GET url` on a fresh current-thread runtime: the status and the body as text.
pub fn get(url: &str) -> (u16, String) {
    rt().block_on(async {
        let r = reqwest::get(url).await.unwrap();
        let s = r.status().as_u16();
        (s, r.text().await.unwrap())
    })
}

/// SIGKILLs every process in process group `pgid` (a test's own group of background servers).
/// Refuses group ids ≤ 1, which would mean "every process we may signal".
pub fn kill_process_group(pgid: u32) {
    if pgid <= 1 {
        return;
    }
    if let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
