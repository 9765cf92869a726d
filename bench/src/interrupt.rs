//! Ctrl-C or SIGTERM during a benchmark stops what it started.
//!
//! Every benchmark holds its servers (`provenixd`, nginx, the proxy) and temporary directories
//! (stores, caches, databases: tens of MB each) in guards that clean up on drop. A signal ends a
//! process without running drops, so an interrupted benchmark used to leave its servers running
//! and its directories in `/tmp`. Here the benchmark runs on a worker thread. On a signal the
//! main thread sends SIGTERM to every child process; the benchmark's next step then fails, and it
//! unwinds through its guards. The process exits with 130 once it has, or after [`GRACE`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How long an interrupted benchmark gets to unwind before the process exits anyway.
pub const GRACE: Duration = Duration::from_secs(15);

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether a signal asked the benchmark to stop: long waits and loops check it, since they
/// would not otherwise notice their servers are gone.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// `Err` once a signal asked the benchmark to stop.
pub fn check() -> anyhow::Result<()> {
    if requested() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// Sleeps for `d`, or until a signal asks the benchmark to stop (then `Err`).
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        check()?;
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    check()
}

/// Runs `bench` on a worker thread and returns its result, or exits the process with 130 after
/// SIGINT or SIGTERM (see the module doc).
pub fn run(bench: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> anyhow::Result<()> {
    let (tx, mut done) = oneshot::channel();
    let worker = std::thread::Builder::new()
        .name("bench".into())
        .spawn(move || {
            let _ = tx.send(bench());
        })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signo = rt.block_on(async {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        anyhow::Ok(tokio::select! {
            r = &mut done => Ok(r),
            _ = int.recv() => Err("interrupted"),
            _ = term.recv() => Err("terminated"),
        })
    })?;
    let signo = match signo {
        Ok(Ok(result)) => return result,
        // The sender was dropped: the benchmark panicked; re-raise its panic here.
        Ok(Err(_)) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => anyhow::bail!("the benchmark thread ended without a result"),
        },
        Err(signo) => signo,
    };
    eprintln!("\nprovenix-bench: {signo}: stopping the processes this benchmark started");
    REQUESTED.store(true, Ordering::Relaxed);
    let stopped = stop_children();
    eprintln!("provenix-bench: sent SIGTERM to {stopped} child process(es); cleaning up");
    let unwound = rt.block_on(async { tokio::time::timeout(GRACE, done).await.is_ok() });
    if !unwound {
        eprintln!(
            "provenix-bench: the benchmark did not stop within {} s; its temporary directories \
             (/tmp/.tmp*) may be left behind",
            GRACE.as_secs()
        );
    }
    std::process::exit(130)
}

/// Sends SIGTERM to every process whose parent is this one; returns how many.
fn stop_children() -> usize {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        if parent(&stat) == Some(me) {
            let signalled = rustix::process::Pid::from_raw(pid)
                .is_some_and(|pid| rustix::process::kill_process(pid, Signal::TERM).is_ok());
            n += usize::from(signalled);
        }
    }
    n
}

/// The parent pid in a `/proc/PID/stat` line: `pid (comm) state ppid …`, where comm may hold
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parent(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{parent, sleep, Ordering, REQUESTED};
    use std::time::{Duration, Instant};

    #[test]
    fn a_stop_request_ends_a_long_sleep() {
        assert!(sleep(Duration::from_millis(10)).is_ok());
        let t0 = Instant::now();
        let setter = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            REQUESTED.store(true, Ordering::Relaxed);
        });
        let err = sleep(Duration::from_secs(600)).unwrap_err();
        setter.join().unwrap();
        assert_eq!(err.to_string(), "interrupted");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        REQUESTED.store(false, Ordering::Relaxed);
    }

    #[test]
    fn parent_pid_from_a_stat_line() {
        assert_eq!(parent("42 (nginx) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent("42 (a b) c) (d) R 1234 1 1"), Some(1234));
        assert_eq!(parent("42 (nginx"), None);
        assert_eq!(parent("42 (x) S"), None);
    }

    #[test]
    fn this_process_is_its_childs_parent() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        assert_eq!(parent(&stat), Some(std::process::id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
