//! The quorum substituter in tests and benchmarks: trust files, a running `provenix substituter`,
//! static file servers for upstream caches (Python's `http.server`, or nginx), and Nix clients
//! whose only substituter is the proxy.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::nix::{Store, BASE_NIX_CONFIG, SANDBOX_PATHS};

/// Reads lines from `child`'s stdout until `pick` returns a value (60 s at most); the rest of
/// the output is drained in the background.
fn wait_line<T>(child: &mut Child, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "{what} did not start in time");
        let Some(line) = lines.next() else {
            let status = child.wait().ok();
            panic!("{what} exited before it was ready ({status:?})");
        };
        if let Some(v) = pick(&line.unwrap()) {
            std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
            return v;
        }
    }
}

/// A directory served over HTTP on a free loopback port by Python's `http.server` (404 for
/// missing files, as a `file://` binary cache needs). Killed on drop.
#[derive(Debug)]
pub struct StaticServer {
    pub child: Child,
    pub url: String,
}

impl StaticServer {
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = wait_line(&mut child, "python3 -m http.server", |l| {
            l.split(" port ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u16>()
                .ok()
        });
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx (Debian's `nginx-light`) serving a directory on `port` with keep-alive, from a config
/// in a temporary directory. Killed on drop.
#[derive(Debug)]
pub struct Nginx {
    pub child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(root: &Path, port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nginx.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 keepalive_requests 1000000;\n  types {{ text/x-nix-narinfo narinfo; }}\n\
                 server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Nix signing key for the proxy, made by `provenix keygen`: (secret file, public key).
pub fn proxy_key(dir: &Path, name: &str) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let sec = dir.join(format!("{name}.sec"));
    let public = dir.join(format!("{name}.pub"));
    let out = Command::new(crate::bin("provenix"))
        .args(["keygen", name, "--secret-file"])
        .arg(&sec)
        .arg("--public-file")
        .arg(&public)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::nix::show(&out));
    (sec, std::fs::read_to_string(&public).unwrap())
}

/// The parts of a `trust.toml`.
#[derive(Debug, Clone)]
pub struct Trust {
    /// `(url, verifier key)` per log.
    pub logs: Vec<(String, String)>,
    /// `(name, public key)` per builder.
    pub builders: Vec<(String, String)>,
    pub threshold: String,
    pub dissent: String,
    pub upstreams: Vec<String>,
    pub signing_key_file: PathBuf,
    pub state_file: PathBuf,
    /// More `[substituter]` lines.
    pub extra: String,
}

impl Trust {
    /// The file's text.
    pub fn text(&self) -> String {
        let mut t = String::new();
        for (url, key) in &self.logs {
            t.push_str(&format!("[[log]]\nurl = {url:?}\nkey = {key:?}\n\n"));
        }
        for (name, key) in &self.builders {
            t.push_str(&format!("[[builder]]\nname = {name:?}\nkey = {key:?}\n\n"));
        }
        t.push_str(&format!(
            "[policy]\nthreshold = {:?}\ndissent = {:?}\n\n",
            self.threshold, self.dissent
        ));
        let ups: Vec<String> = self.upstreams.iter().map(|u| format!("{u:?}")).collect();
        t.push_str(&format!(
            "[substituter]\nlisten = \"127.0.0.1:0\"\nupstreams = [{}]\nsigning-key-file = {:?}\nstate-file = {:?}\nnegative-ttl-secs = 0\n{}\n",
            ups.join(", "),
            self.signing_key_file.display().to_string(),
            self.state_file.display().to_string(),
            self.extra
        ));
        t
    }

    /// Writes the file to `path` and returns the path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text()).unwrap();
        path.to_owned()
    }
}

/// A running `provenix substituter`, killed on drop.
#[derive(Debug)]
pub struct Proxy {
    pub child: Child,
    pub url: String,
    pub public_key: String,
    pub config: PathBuf,
}

impl Proxy {
    /// Starts the substituter for `config` on a free port.
    pub fn start(config: &Path) -> Self {
        Self::start_with(config, &[])
    }

    /// The same with more arguments and environment (e.g. `PROVENIX_LOG`).
    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut c = Command::new(crate::bin("provenix"));
        c.args(["substituter", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("PROVENIX_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn provenix substituter");
        let mut key = None;
        let url = wait_line(&mut child, "provenix substituter", |l| {
            if let Some(k) = l.strip_prefix("provenix substituter: public key ") {
                key = Some(k.trim().to_owned());
            }
            l.strip_prefix("provenix substituter: listening on ")
                .map(|u| u.trim().to_owned())
        });
        Self {
            child,
            url,
            public_key: key.expect("public key line"),
            config: config.to_owned(),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nix copy --to file://CACHE PATHS` from `store` (xz-compressed NARs, Nix's default).
pub fn copy_to_cache(store: &Store, cache: &Path, paths: &[String]) {
    nix_copy(store, &format!("file://{}", cache.display()), paths);
}

/// [`copy_to_cache`], the narinfos signed with the Nix secret key in `key_file` (as a
/// builder's cache is).
pub fn copy_to_signed_cache(store: &Store, cache: &Path, key_file: &Path, paths: &[String]) {
    let to = format!(
        "file://{}?secret-key={}",
        cache.display(),
        key_file.display()
    );
    nix_copy(store, &to, paths);
}

fn nix_copy(store: &Store, to: &str, paths: &[String]) {
    let out = store
        .command("nix")
        .arg("copy")
        .arg("--to")
        .arg(to)
        .args(paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "nix copy: {}", crate::nix::show(&out));
}

/// `nix-build FILE -A ATTR` in `store` with `substituter` as the only substituter and
/// `trusted_key` as the only trusted key; `max_jobs = Some(0)` forbids local builds.
pub fn client_build(
    store: &Store,
    substituter: &str,
    trusted_key: &str,
    file: &Path,
    attr: &str,
    max_jobs: Option<u32>,
    extra: &[&str],
) -> Output {
    let conf = format!(
        "{BASE_NIX_CONFIG}substituters = {substituter}\ntrusted-public-keys = {trusted_key}\nnarinfo-cache-negative-ttl = 0\n"
    );
    let mut c = store.command("nix-build");
    c.env("NIX_CONFIG", conf)
        .arg(file)
        .arg("--no-out-link")
        .args(["--option", "sandbox-paths", SANDBOX_PATHS])
        .args(["-A", attr]);
    if let Some(j) = max_jobs {
        c.args(["--max-jobs", &j.to_string()]);
    }
    c.args(extra);
    c.output().unwrap()
}
