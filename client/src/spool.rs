//! The builder's durable spool: what `provenix hook` records and `provenix push` drains.
//!
//! Layout of the spool directory (all of it trusted local state, owned by the builder):
//!
//! ```text
//! incoming/<ns>-<pid>-<n>.rec   one hook record per file (JSON), written by `provenix hook`
//! pending/<counter>.batch       prepared entries (JSON lines: claim, counter, signed envelope)
//! failed/<name>.json            records that can never be delivered, with the reason
//! counter                       the next builder counter to assign (never reused)
//! delivered                     claims every log acknowledged (hex, one per line; bounded)
//! push.lock                     flock held by the one running `provenix push`
//! ```
//!
//! **Why one file per hook record.** Hooks of concurrent builds (several `nix-daemon` workers)
//! must never interleave or lose each other's records, and a hook killed half-way must never
//! leave a torn record that blocks the pusher. Each hook writes its record to a private
//! temporary file (`create_new`), `fdatasync`s it, renames it into `incoming/` and `fsync`s the
//! directory: the record is either wholly there and durable, or absent. No lock is taken, so a
//! stuck or killed process can never block a build, and the pusher consumes records
//! independently (unlink one when done) with no journal to compact. The cost is two syncs per
//! build, measured by `provenix-bench hook`.
//!
//! **Exactly-once in the log.** `push` turns records into signed envelopes *once*: it reserves
//! counters (persisted before use, so a counter is never reused), writes the signed envelopes to
//! a `pending` batch (durable) and only then unlinks the hook records. Retries after any crash
//! re-submit byte-identical envelopes, which a log answers with the same index
//! (`duplicate: true`). A hook record whose claim (everything an entry says except counter and
//! times) is already pending or delivered is dropped, so a repeated hook call for an unchanged
//! build adds nothing, while a rebuild with a different output is a new claim and a new entry.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Subdirectory of hook records.
pub const INCOMING: &str = "incoming";
/// Subdirectory of prepared batches.
pub const PENDING: &str = "pending";
/// Subdirectory of records that cannot be delivered.
pub const FAILED: &str = "failed";

/// Largest hook record read back (a derivation with very many outputs still fits).
const MAX_RECORD_BYTES: u64 = 1 << 20;
/// Largest pending batch file read back (1000 entries of at most 64 KiB, plus framing).
const MAX_BATCH_BYTES: u64 = 80 << 20;

/// What `provenix hook` records for one finished build. Written by the hook from Nix's
/// environment: trusted local data, but still parsed strictly by `push`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HookRecord {
    /// Record format version (1).
    pub v: u32,
    /// `$DRV_PATH`.
    pub drv_path: String,
    /// `$OUT_PATHS` split on spaces (empty on Nix 2.8.0, which never fills it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_paths: Vec<String>,
    /// `$NIX_REMOTE` when set: the store the build ran in, so `push` queries the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// When the hook ran (the outputs were registered just before): Unix time in ns.
    pub finished_ns: u64,
    /// When the build started, if known (creation time of Nix's build log): Unix time in ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ns: Option<u64>,
}

/// `fsync` a directory, making renames and unlinks in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes one hook record into `<spool>/incoming/` durably and atomically (see the module
/// docs). Creates `incoming/` if the spool exists but it does not. Returns the record's path.
/// This is the hook's whole job: no store query, no network.
pub fn write_hook_record(spool: &Path, record: &HookRecord) -> io::Result<PathBuf> {
    let dir = spool.join(INCOMING);
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    let pid = std::process::id();
    loop {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{:020}-{pid}-{seq}.rec", record.finished_ns);
        let tmp = dir.join(format!(".tmp-{name}"));
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound && spool.is_dir() => {
                match fs::create_dir(&dir) {
                    Ok(()) => {
                        sync_dir(spool)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let done = f.write_all(&bytes).and_then(|()| f.sync_data());
        drop(f);
        let path = dir.join(&name);
        let done = done.and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = done {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&dir)?;
        return Ok(path);
    }
}

/// Writes `bytes` to `dir/name` atomically and durably (tmp file, fsync, rename, dir fsync).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(out)
}

/// One prepared entry: a claim, its counter and the signed envelope, exactly as submitted.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRecord {
    /// Hex SHA-256 of the claim (the statement without counter and times).
    pub claim: String,
    /// The builder counter in the envelope.
    pub counter: u64,
    /// The derivation (for messages).
    pub drv: String,
    /// The canonical DSSE envelope (the log leaf).
    pub envelope: Box<RawValue>,
}

/// A pending batch file and its records.
#[derive(Debug)]
pub struct PendingBatch {
    pub path: PathBuf,
    pub records: Vec<PendingRecord>,
}

/// How many records each part of the spool holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolCounts {
    /// Hook records not yet prepared.
    pub incoming: usize,
    /// Prepared entries not yet acknowledged by every log.
    pub pending: usize,
    /// Records set aside as undeliverable.
    pub failed: usize,
}

impl SpoolCounts {
    /// Records still to deliver (incoming + pending).
    pub fn undelivered(&self) -> usize {
        self.incoming + self.pending
    }
}

/// Why the spool could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool {0} is in use by another `provenix push`")]
    Locked(PathBuf),
    #[error("spool file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The spool as `push` sees it: exclusively locked while the value lives.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    _lock: File,
}

/// Counts records in a spool without locking it (for status output and tests).
pub fn counts(dir: &Path) -> Result<SpoolCounts, SpoolError> {
    let mut c = SpoolCounts {
        incoming: list(&dir.join(INCOMING), ".rec")?.len(),
        ..Default::default()
    };
    for p in list(&dir.join(PENDING), ".batch")? {
        let bytes = read_bounded(&p, MAX_BATCH_BYTES).map_err(io_err(&p))?;
        c.pending += bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
    }
    c.failed = list(&dir.join(FAILED), ".json")?.len();
    Ok(c)
}

/// Sorted files in `dir` ending in `ext`, skipping temporary files; a missing dir is empty.
fn list(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, SpoolError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && name.ends_with(ext) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

impl Spool {
    /// Creates the spool's directories if needed and takes the pusher lock.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        for sub in ["", INCOMING, PENDING, FAILED] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let lock_path = dir.join("push.lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(SpoolError::Locked(dir.to_owned())),
            Err(e) => return Err(io_err(&lock_path)(e.into())),
        }
        let spool = Self {
            dir: dir.to_owned(),
            _lock: lock,
        };
        spool.remove_stale_temporaries();
        Ok(spool)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Temporary files older than an hour belong to writers that died; remove them.
    fn remove_stale_temporaries(&self) {
        for sub in [INCOMING, PENDING, FAILED, ""] {
            let Ok(rd) = fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 3600);
                if old && e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Up to `limit` hook records, oldest first, each parsed (or the reason it cannot be).
    pub fn incoming(
        &self,
        limit: usize,
    ) -> Result<Vec<(PathBuf, Result<HookRecord, String>)>, SpoolError> {
        let mut out = Vec::new();
        for p in list(&self.dir.join(INCOMING), ".rec")?
            .into_iter()
            .take(limit)
        {
            let parsed = match read_bounded(&p, MAX_RECORD_BYTES) {
                Ok(b) => serde_json::from_slice::<HookRecord>(&b)
                    .map_err(|e| format!("not a hook record: {e}"))
                    .and_then(|r| {
                        if r.v == 1 {
                            Ok(r)
                        } else {
                            Err(format!("unknown hook record version {}", r.v))
                        }
                    }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => Err(format!("unreadable: {e}")),
            };
            out.push((p, parsed));
        }
        Ok(out)
    }

    /// Unlinks consumed hook records and makes that durable.
    pub fn remove_incoming(&self, paths: &[PathBuf]) -> Result<(), SpoolError> {
        if paths.is_empty() {
            return Ok(());
        }
        for p in paths {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(p)(e)),
            }
        }
        let d = self.dir.join(INCOMING);
        sync_dir(&d).map_err(io_err(&d))
    }

    /// Reserves `n` consecutive counter values and returns the first. The new next value is
    /// durable before this returns, so a value handed out is never handed out again.
    pub fn reserve_counters(&self, n: u64) -> Result<u64, SpoolError> {
        let path = self.dir.join("counter");
        let next = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|_| SpoolError::Corrupt {
                path: path.clone(),
                message: format!("{:?} is not a counter value", s.trim()),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let after = next.checked_add(n).ok_or_else(|| SpoolError::Corrupt {
            path: path.clone(),
            message: "counter overflow".into(),
        })?;
        write_atomic(&self.dir, "counter", format!("{after}\n").as_bytes())
            .map_err(io_err(&path))?;
        Ok(next)
    }

    /// Writes a batch of prepared records durably; returns its path.
    pub fn write_pending(&self, records: &[PendingRecord]) -> Result<PathBuf, SpoolError> {
        let dir = self.dir.join(PENDING);
        let first = records.first().map_or(0, |r| r.counter);
        let name = format!("{first:020}.batch");
        let mut bytes = Vec::new();
        for r in records {
            serde_json::to_writer(&mut bytes, r).map_err(|e| io_err(&dir)(io::Error::other(e)))?;
            bytes.push(b'\n');
        }
        write_atomic(&dir, &name, &bytes).map_err(io_err(&dir))?;
        Ok(dir.join(name))
    }

    /// Every pending batch, oldest first. A batch that does not parse is moved to `failed/`
    /// (it cannot be produced by `write_pending`, which is atomic) and reported in the error
    /// list.
    pub fn pending(&self) -> Result<(Vec<PendingBatch>, Vec<String>), SpoolError> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for p in list(&self.dir.join(PENDING), ".batch")? {
            let bytes = read_bounded(&p, MAX_BATCH_BYTES).map_err(io_err(&p))?;
            let parsed: Result<Vec<PendingRecord>, String> = bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).map_err(|e| e.to_string()))
                .collect();
            match parsed {
                Ok(records) => out.push(PendingBatch { path: p, records }),
                Err(e) => {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let msg = format!("pending batch {name} is corrupt: {e}");
                    self.fail(&name, &msg, &String::from_utf8_lossy(&bytes))?;
                    let _ = fs::remove_file(&p);
                    bad.push(msg);
                }
            }
        }
        Ok((out, bad))
    }

    /// Deletes a fully delivered pending batch.
    pub fn remove_pending(&self, path: &Path) -> Result<(), SpoolError> {
        fs::remove_file(path).map_err(io_err(path))?;
        let d = self.dir.join(PENDING);
        sync_dir(&d).map_err(io_err(&d))
    }

    /// Sets an undeliverable record aside in `failed/` with the reason (durably).
    pub fn fail(&self, name: &str, reason: &str, record: &str) -> Result<(), SpoolError> {
        let dir = self.dir.join(FAILED);
        let body = serde_json::json!({ "reason": reason, "record": record });
        let stem: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let file = format!("{stem}.json");
        write_atomic(&dir, &file, body.to_string().as_bytes()).map_err(io_err(&dir))
    }

    /// Loads the delivered-claims index.
    pub fn delivered(&self, window: usize) -> Result<DeliveredIndex, SpoolError> {
        DeliveredIndex::load(&self.dir.join("delivered"), window)
    }
}

/// The claims every log acknowledged, newest last, bounded to `window` entries.
#[derive(Debug)]
pub struct DeliveredIndex {
    path: PathBuf,
    window: usize,
    set: HashSet<String>,
    order: VecDeque<String>,
    file_lines: usize,
}

impl DeliveredIndex {
    fn load(path: &Path, window: usize) -> Result<Self, SpoolError> {
        let mut me = Self {
            path: path.to_owned(),
            window,
            set: HashSet::new(),
            order: VecDeque::new(),
            file_lines: 0,
        };
        match File::open(path) {
            Ok(f) => {
                for line in io::BufReader::new(f).lines() {
                    let line = line.map_err(io_err(path))?;
                    let line = line.trim();
                    // A torn last line (crash during append) is just not a claim.
                    if line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
                        me.file_lines += 1;
                        me.remember(line.to_owned());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        Ok(me)
    }

    fn remember(&mut self, claim: String) {
        if self.set.insert(claim.clone()) {
            self.order.push_back(claim);
            while self.order.len() > self.window {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    /// Whether `claim` (hex) was delivered.
    pub fn contains(&self, claim: &str) -> bool {
        self.set.contains(claim)
    }

    /// Records delivered claims durably (append + fsync); compacts the file when it holds
    /// more than twice the window.
    pub fn add(&mut self, claims: &[String]) -> Result<(), SpoolError> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(claims.len() * 65);
        for c in claims {
            text.push_str(c);
            text.push('\n');
            self.remember(c.clone());
        }
        self.file_lines += claims.len();
        if self.file_lines > self.window.saturating_mul(2).max(1024) {
            let mut all = String::with_capacity(self.order.len() * 65);
            for c in &self.order {
                all.push_str(c);
                all.push('\n');
            }
            let dir = self.path.parent().unwrap_or(Path::new("."));
            write_atomic(dir, "delivered", all.as_bytes()).map_err(io_err(&self.path))?;
            self.file_lines = self.order.len();
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        f.write_all(text.as_bytes()).map_err(io_err(&self.path))?;
        f.sync_data().map_err(io_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn rec(n: u64) -> HookRecord {
        HookRecord {
            v: 1,
            drv_path: format!("/nix/store/00000000000000000000000000000000-x{n}.drv"),
            out_paths: vec![],
            store: None,
            finished_ns: n,
            started_ns: None,
        }
    }

    #[test]
    fn hook_records_round_trip_in_order_and_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        // incoming/ does not exist yet: the hook creates it.
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let d = dir.path().to_owned();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        write_hook_record(&d, &rec(1000 + t * 100 + i)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        let got = spool.incoming(1000).unwrap();
        assert_eq!(got.len(), 200);
        let ns: Vec<u64> = got
            .iter()
            .map(|(_, r)| r.as_ref().unwrap().finished_ns)
            .collect();
        let mut sorted = ns.clone();
        sorted.sort();
        assert_eq!(ns, sorted, "records come back oldest first");
        assert_eq!(counts(dir.path()).unwrap().incoming, 200);
        let paths: Vec<_> = got.into_iter().map(|(p, _)| p).collect();
        spool.remove_incoming(&paths[..150]).unwrap();
        assert_eq!(counts(dir.path()).unwrap().incoming, 50);
    }

    #[test]
    fn hook_fails_cleanly_without_spool() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_hook_record(&dir.path().join("missing"), &rec(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn bad_records_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        fs::write(dir.path().join(INCOMING).join("1-1-1.rec"), b"{\"v\":1").unwrap();
        fs::write(
            dir.path().join(INCOMING).join("2-1-1.rec"),
            br#"{"v":2,"drvPath":"x","finishedNs":1}"#,
        )
        .unwrap();
        fs::write(dir.path().join(INCOMING).join(".tmp-3-1-1.rec"), b"").unwrap();
        let got = spool.incoming(10).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0]
            .1
            .as_ref()
            .unwrap_err()
            .starts_with("not a hook record"));
        assert_eq!(
            got[1].1.as_ref().unwrap_err(),
            "unknown hook record version 2"
        );
    }

    #[test]
    fn second_pusher_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Spool::open(dir.path()).unwrap();
        assert!(matches!(
            Spool::open(dir.path()).unwrap_err(),
            SpoolError::Locked(_)
        ));
    }

    #[test]
    fn counters_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path()).unwrap();
            assert_eq!(s.reserve_counters(3).unwrap(), 1);
            assert_eq!(s.reserve_counters(2).unwrap(), 4);
        }
        let s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.reserve_counters(1).unwrap(), 6);
        fs::write(dir.path().join("counter"), "x\n").unwrap();
        assert!(s
            .reserve_counters(1)
            .unwrap_err()
            .to_string()
            .contains("is not a counter value"));
    }

    #[test]
    fn pending_batches_round_trip_byte_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        let env = r#"{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"keyid":"a","sig":"AA=="}]}"#;
        let recs = vec![PendingRecord {
            claim: "ab".repeat(32),
            counter: 7,
            drv: "/nix/store/x.drv".into(),
            envelope: RawValue::from_string(env.into()).unwrap(),
        }];
        let p = s.write_pending(&recs).unwrap();
        let (batches, bad) = s.pending().unwrap();
        assert!(bad.is_empty());
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].records[0].envelope.get(), env);
        assert_eq!(counts(dir.path()).unwrap().pending, 1);
        s.remove_pending(&p).unwrap();
        assert_eq!(counts(dir.path()).unwrap(), SpoolCounts::default());
    }

    #[test]
    fn delivered_index_is_bounded_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        let claims: Vec<String> = (0..3000u32).map(|i| format!("{i:064x}")).collect();
        {
            let mut d = s.delivered(1000).unwrap();
            for c in claims.chunks(100) {
                d.add(c).unwrap();
            }
            assert!(d.contains(&claims[2999]));
            assert!(!d.contains(&claims[0]));
        }
        let d = s.delivered(1000).unwrap();
        assert!(d.contains(&claims[2999]) && d.contains(&claims[2000]));
        assert!(!d.contains(&claims[1999]));
        let lines = fs::read_to_string(dir.path().join("delivered"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 2100, "compacted: {lines}");
    }
}
