//! A real `provenixd` process on a free loopback port.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `provenixd serve`, killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Provenixd {
    pub child: Child,
    pub url: String,
    pub verifier_key: String,
    pub data: PathBuf,
    pub database: Option<String>,
    /// Lines the process printed on stdout after start-up (drained in the background).
    pub stdout_tail: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Options for starting a log.
#[derive(Debug, Clone, Default)]
pub struct ServerOpts {
    pub database: Option<String>,
    pub origin: Option<String>,
    pub config: Option<PathBuf>,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Listen address (default `127.0.0.1:0`, a free port); set it to restart a log on the
    /// port it had.
    pub listen: Option<String>,
}

fn base_cmd(sub: &[&str], data: &Path, opts: &ServerOpts) -> Command {
    let mut c = Command::new(crate::bin("provenixd"));
    c.args(sub).arg("--data").arg(data);
    if let Some(db) = &opts.database {
        c.arg("--database").arg(db);
    }
    if let Some(o) = &opts.origin {
        c.arg("--origin").arg(o);
    }
    if let Some(cfg) = &opts.config {
        c.arg("--config").arg(cfg);
    }
    c.env("PROVENIX_LOG", "warn");
    for (k, v) in &opts.env {
        c.env(k, v);
    }
    c
}

/// Runs `provenixd builders add KEY` against a data dir (server running or not).
pub fn add_builder(data: &Path, opts: &ServerOpts, public_key: &str) {
    let out = base_cmd(&["builders", "add"], data, opts)
        .arg(public_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "builders add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `provenixd builders remove NAME`.
pub fn remove_builder(data: &Path, opts: &ServerOpts, name: &str) {
    let out = base_cmd(&["builders", "remove"], data, opts)
        .arg(name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "builders remove failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Provenixd {
    /// Starts a log in `data` (created if new) and waits until it listens.
    pub fn start(data: &Path, opts: &ServerOpts) -> Self {
        let mut c = base_cmd(&["serve"], data, opts);
        c.arg("--listen")
            .arg(opts.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .args(&opts.extra_args);
        c.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn provenixd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut url, mut key) = (None, None);
        while url.is_none() {
            assert!(Instant::now() < deadline, "provenixd did not start in time");
            let Some(line) = lines.next() else {
                let status = child.wait().ok();
                panic!("provenixd exited before listening ({status:?})");
            };
            let line = line.unwrap();
            if let Some(k) = line.strip_prefix("provenixd: verifier key ") {
                key = Some(k.trim().to_owned());
            }
            if let Some(rest) = line.strip_prefix("provenixd: listening on ") {
                url = rest.split_whitespace().next().map(str::to_owned);
            }
        }
        let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let t2 = tail.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                t2.lock().unwrap().push(l);
            }
        });
        Self {
            child,
            url: url.unwrap(),
            verifier_key: key.expect("verifier key line"),
            data: data.to_owned(),
            database: opts.database.clone(),
            stdout_tail: tail,
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Provenixd {
    fn drop(&mut self) {
        self.kill9();
    }
}
