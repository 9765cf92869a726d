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

/// `Err` once a signal asked the benchmark to stop: long waits and loops check it, since they
/// would not otherwise notice their servers are gone.
pub fn check() -> anyhow::Result<()> {
    if REQUESTED.load(Ordering::Relaxed) {
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

/// Sends SIGTERM to every child of this process; returns how many were signalled.
fn stop_children() -> usize {
    crate::procfs::children()
        .into_iter()
        .filter_map(|pid| rustix::process::Pid::from_raw(i32::try_from(pid).ok()?))
        .filter(|&pid| rustix::process::kill_process(pid, Signal::TERM).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::{sleep, Ordering, REQUESTED};
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
}
