//! Helpers of the fault tests (`tests/tests/faults.rs`): a size-limited tmpfs to fill, a
//! programmable HTTP server on loopback that can answer slowly or with garbage, raw HTTP
//! responses with their error codes, and the check that every acknowledged entry is still in
//! the log at its index, read back through the public tile API.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use provenix::logclient::LogClient;
use provenix_core::checkpoint::{LogVerifier, SignedCheckpoint};
use provenix_core::merkle::{self, Hash, MemoryTree};
use provenix_core::tile::{self, TileKind, TilePath};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Whether we run as root (needed to mount a tmpfs).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A tmpfs of a fixed size mounted on a fresh directory, unmounted (lazily, so a process
/// still holding files open cannot keep it) and removed on drop.
#[derive(Debug)]
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes`; `None` (after printing why) when we are not root, outside CI.
    /// In CI (`PROVENIX_CI=1`) not being root, or a failed mount, is a failure.
    pub fn mount(bytes: u64) -> Option<Self> {
        if !is_root() {
            assert!(
                !crate::ci(),
                "the full-disk test mounts a tmpfs and needs root (PROVENIX_CI is set)"
            );
            eprintln!("SKIP: not root, cannot mount a tmpfs for the full-disk test");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("provenix-faults")
            .arg(dir.path())
            .output()
            .expect("run mount");
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!crate::ci(), "mount -t tmpfs failed: {msg}");
            eprintln!("SKIP: mount -t tmpfs failed: {msg}");
            return None;
        }
        Some(Self {
            path: dir.path().to_owned(),
            _dir: dir,
        })
    }

    /// Bytes still free on the filesystem.
    pub fn free(&self) -> u64 {
        let s = rustix::fs::statvfs(&self.path).unwrap();
        s.f_bavail * s.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Fills `dir` with a file of zeros until the filesystem is full; returns its path.
pub fn fill(dir: &Path, name: &str) -> PathBuf {
    use std::io::Write as _;
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // A partial last chunk: write byte by byte until ENOSPC.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    p
}

/// An HTTP response as a test sees it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `error.code` of a JSON error body, if any.
    pub code: Option<String>,
    pub retry_after: Option<String>,
    pub body: bytes::Bytes,
}

impl Reply {
    /// The status and error code, for exact assertions.
    pub fn status_code(&self) -> (u16, Option<&str>) {
        (self.status, self.code.as_deref())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends `req` and collects the reply (`Err` only for transport failures).
pub async fn send(req: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.bytes().await?;
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    Ok(Reply {
        status,
        code,
        retry_after,
        body,
    })
}

/// `{"entries":[…]}` of these envelopes.
pub fn entries_body(envelopes: &[Vec<u8>]) -> Vec<u8> {
    let mut body = b"{\"entries\":[".to_vec();
    for (i, e) in envelopes.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e);
    }
    body.extend_from_slice(b"]}");
    body
}

/// Acknowledged entries: index → leaf hash.
pub type Acked = BTreeMap<u64, Hash>;

/// Records the accepted results of a 200 submission of `envelopes`; panics if an entry was
/// rejected or an index was acknowledged for two different entries.
pub fn record_acked(acked: &mut Acked, envelopes: &[Vec<u8>], reply: &Reply) {
    let v = reply.json();
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), envelopes.len());
    for (e, r) in envelopes.iter().zip(results) {
        let index = r["index"]
            .as_u64()
            .unwrap_or_else(|| panic!("entry rejected: {r}"));
        let h = merkle::leaf_hash(e);
        assert_eq!(r["leafHash"].as_str(), Some(h.to_base64().as_str()));
        if let Some(prev) = acked.insert(index, h) {
            assert_eq!(
                prev, h,
                "index {index} acknowledged for two different entries"
            );
        }
    }
}

/// Waits (≤ 20 s) for a checkpoint of the log at `url` covering every acknowledged entry, then
/// checks it with [`check_covered`]. Returns the checkpoint.
pub async fn check_acked(url: &str, verifier: &LogVerifier, acked: &Acked) -> SignedCheckpoint {
    let need = acked.keys().last().map_or(0, |l| l + 1);
    check_covered(url, verifier, acked, need).await
}

/// Waits (≤ 20 s) for a checkpoint of the log at `url` of at least `need` entries, then reads
/// every entry bundle up to it through the tile API, recomputes the tree, and checks that the
/// signed root is the root of the leaves read, that the hash tiles agree, and that every
/// acknowledged entry the checkpoint covers is at its index. Returns the checkpoint.
pub async fn check_covered(
    url: &str,
    verifier: &LogVerifier,
    acked: &Acked,
    need: u64,
) -> SignedCheckpoint {
    let client = LogClient::new(url, Duration::from_secs(10)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let cp = loop {
        let cp = verifier
            .verify(&client.checkpoint().await.unwrap())
            .expect("the checkpoint verifies with the log key");
        if cp.size() >= need {
            break cp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint covers index {} (size {})",
            need - 1,
            cp.size()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let size = cp.size();
    let mut leaves = Vec::with_capacity(size as usize);
    let (full, partial) = tile::level_shape(size, 0);
    for index in 0..=full {
        let width = if index < full { 256 } else { partial };
        if width == 0 {
            break;
        }
        let t = TilePath {
            kind: TileKind::Entries,
            index,
            width,
        };
        let b = client
            .tile(&t)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{t} missing"));
        let entries = tile::split_bundle(&b).unwrap();
        assert_eq!(entries.len(), usize::from(width), "{t}");
        leaves.extend(entries.iter().map(|e| merkle::leaf_hash(e)));
    }
    let tree = MemoryTree::from_leaves(leaves.iter().copied());
    assert_eq!(
        tree.root_at(size).unwrap(),
        *cp.root(),
        "the signed root is not the root of the entries the log serves"
    );
    for t in tile::tiles_for_size(size) {
        let TileKind::Hashes { level } = t.kind else {
            continue;
        };
        let served = client.tile(&t).await.unwrap().expect("hash tile");
        assert_eq!(
            Some(served.to_vec()),
            tree.tile(level, t.index, t.width),
            "{t}"
        );
    }
    for (&index, h) in acked.range(..size) {
        assert_eq!(
            leaves[index as usize], *h,
            "acknowledged entry {index} lost or changed"
        );
    }
    cp
}

/// Peak resident memory of process `pid` in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A request the [`FakeHttp`] server received.
#[derive(Debug, Clone)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// What the [`FakeHttp`] server does with a request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A complete response.
    Full {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// Wait, then answer.
    After(Duration, Box<Answer>),
    /// Headers announcing `declared` bytes, then only `body`, then the connection closes.
    Truncated { declared: usize, body: Vec<u8> },
    /// A chunked body of `bytes` bytes of `filler`, without a length up front.
    Endless { bytes: usize, filler: u8 },
    /// Close the connection without answering.
    Hangup,
}

impl Answer {
    /// 200 with this body.
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self::Full {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    /// A plain 404.
    pub fn not_found() -> Self {
        Self::Full {
            status: 404,
            content_type: "text/plain",
            body: b"not found\n".to_vec(),
        }
    }
}

/// A handler of [`FakeHttp`].
pub type Handler =
    Arc<dyn Fn(FakeRequest) -> Pin<Box<dyn Future<Output = Answer> + Send>> + Send + Sync>;

/// A small HTTP/1.1 server on a loopback port whose answers a test programs (one request per
/// connection: every answer says `Connection: close`). Stops when dropped.
#[derive(Debug)]
pub struct FakeHttp {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHttp {
    /// Starts serving with `handler` on the current runtime.
    pub async fn start(handler: Handler) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let _ = serve_one(stream, handler).await;
                });
            }
        });
        Self { url, task }
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(mut s: tokio::net::TcpStream, handler: Handler) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 << 10 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mut answer = handler(FakeRequest { method, path, body }).await;
    loop {
        match answer {
            Answer::After(d, next) => {
                tokio::time::sleep(d).await;
                answer = *next;
            }
            Answer::Full {
                status,
                content_type,
                body,
            } => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).await?;
                s.write_all(&body).await?;
                break;
            }
            Answer::Truncated { declared, body } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await?;
                s.write_all(&body).await?;
                break;
            }
            Answer::Endless { bytes, filler } => {
                s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                )
                .await?;
                let piece = vec![filler; 64 << 10];
                let mut sent = 0;
                while sent < bytes {
                    s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                        .await?;
                    s.write_all(&piece).await?;
                    s.write_all(b"\r\n").await?;
                    sent += piece.len();
                }
                s.write_all(b"0\r\n\r\n").await?;
                break;
            }
            Answer::Hangup => break,
        }
    }
    let _ = s.shutdown().await;
    Ok(())
}

/// Forwards a request to `upstream` (a real log) and returns its answer as an [`Answer`].
pub async fn forward(http: &reqwest::Client, upstream: &str, req: &FakeRequest) -> Answer {
    let url = format!("{upstream}{}", req.path);
    let r = match req.method.as_str() {
        "POST" => {
            http.post(&url)
                .header("content-type", "application/json")
                .body(req.body.clone())
                .send()
                .await
        }
        _ => http.get(&url).send().await,
    };
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            Answer::Full {
                status,
                content_type: "application/json",
                body,
            }
        }
        Err(_) => Answer::Hangup,
    }
}
