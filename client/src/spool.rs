//! The builder's durable spool: what `provenix hook` records and `provenix push` drains.
//!
//! Layout of the spool directory (all of it trusted local state, owned by the builder):
//!
//! ```text
//! incoming/journal              hook records, one JSON line each, appended by `provenix hook`
//! incoming/<ns>.sealed          journals the pusher sealed (renamed) for reading
//! incoming/<ns>.sealed.cursor   how many lines of a sealed journal are consumed
//! pending/<counter>.batch       prepared entries (JSON lines: claim, counter, signed envelope)
//! failed/<name>.json            records that can never be delivered, with the reason
//! counter                       the next builder counter to assign (never reused)
//! delivered                     claims every log acknowledged (hex, one per line; bounded)
//! push.lock                     flock held by the one running `provenix push`
//! ```
//!
//! **Why an append-only journal.** Nix blocks its build loop on the hook, so the hook may cost
//! one disk flush and no more: on this machine a flush costs ~4 ms, and a file-per-record
//! scheme needs two (the file, then its directory entry) for POSIX durability. A hook appends
//! its record with one `write` (`O_APPEND`) and one `fdatasync` (which covers the new file
//! size), holding a *shared* `flock` on the journal meanwhile: concurrent hooks never wait for
//! each other, and each record is one write, so lines never interleave. Every record starts
//! with a newline, so a line torn by a crash mid-write cannot swallow the next record.
//!
//! The pusher **seals** the journal by renaming it, then takes an *exclusive* `flock` on the
//! sealed file for an instant: that waits for hooks still writing to it. A hook that opened the
//! journal before the rename but locks it after checks, under its lock, that its file is still
//! the one named `journal`, and reopens otherwise. So every record lands in exactly one file
//! the pusher reads completely. The pusher then creates the next (empty) journal and syncs the
//! directory, so hooks normally never pay for creating it.
//!
//! **Exactly-once in the log.** `push` turns records into signed envelopes *once*: it reserves
//! counters (persisted before use, so a counter is never reused), writes the signed envelopes to
//! a `pending` batch (durable) and only then advances the sealed journal's cursor (or deletes
//! it). Retries after any crash re-submit byte-identical envelopes, which a log answers with the
//! same index (`duplicate: true`). A hook record whose claim (everything an entry says except
//! counter and times) is already pending or delivered is dropped, so a repeated hook call for an
//! unchanged build (or a record re-read after a crash) adds nothing, while a rebuild with a
//! different output is a new claim and a new entry.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

mod record;
pub use record::{journal_lines, HookRecord, PendingRecord};

/// Subdirectory of hook records.
pub const INCOMING: &str = "incoming";
/// The live journal hooks append to, inside [`INCOMING`].
pub const JOURNAL: &str = "journal";
/// Suffix of sealed journals.
const SEALED: &str = ".sealed";
/// Largest sealed journal read back at once (about 2 million records).
const MAX_JOURNAL_BYTES: u64 = 1 << 30;
/// Subdirectory of prepared batches.
pub const PENDING: &str = "pending";
/// Subdirectory of records that cannot be delivered.
pub const FAILED: &str = "failed";

/// Largest pending batch file read back (1000 entries of at most 64 KiB, plus framing).
const MAX_BATCH_BYTES: u64 = 80 << 20;

/// `fsync` a directory, making renames and unlinks in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Appends one hook record to `<spool>/incoming/journal` durably (see the module docs): one
/// `write`, one `fdatasync`, under a shared `flock`. Creates `incoming/` and the journal if the
/// spool exists but they do not. Returns the journal's path. This is the hook's whole job: no
/// store query, no network.
pub fn write_hook_record(spool: &Path, record: &HookRecord) -> io::Result<PathBuf> {
    let dir = spool.join(INCOMING);
    let journal = dir.join(JOURNAL);
    let mut line = Vec::with_capacity(256);
    line.push(b'\n');
    serde_json::to_writer(&mut line, record).map_err(io::Error::other)?;
    line.push(b'\n');
    loop {
        let f = match OpenOptions::new().append(true).open(&journal) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !spool.is_dir() {
                    return Err(e);
                }
                match fs::create_dir(&dir) {
                    Ok(()) => sync_dir(spool)?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                let f = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&journal)?;
                sync_dir(&dir)?;
                f
            }
            Err(e) => return Err(e),
        };
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared)?;
        // Sealed (renamed) between our open and our lock? Then write to the new journal.
        let current = match fs::metadata(&journal) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mine = f.metadata()?;
        if current != Some((mine.dev(), mine.ino())) {
            continue;
        }
        (&f).write_all(&line)?;
        f.sync_data()?;
        return Ok(journal);
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
    /// The lines of the sealed journal read last (sealed journals never change), so that a
    /// large backlog is read once, not once per batch.
    cache: std::cell::RefCell<Option<(PathBuf, std::rc::Rc<Vec<String>>)>>,
}

/// Counts records in a spool without locking it (for status output and tests).
pub fn counts(dir: &Path) -> Result<SpoolCounts, SpoolError> {
    let inc = dir.join(INCOMING);
    let mut c = SpoolCounts::default();
    let mut journals = list(&inc, SEALED)?;
    journals.push(inc.join(JOURNAL));
    for j in journals {
        let lines = match read_lines(&j) {
            Ok(l) => l,
            Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => return Err(e),
        };
        c.incoming += lines.len().saturating_sub(read_cursor(&j));
    }
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

/// The non-empty lines of a journal file (see [`journal_lines`]).
fn read_lines(path: &Path) -> Result<Vec<String>, SpoolError> {
    let bytes = read_bounded(path, MAX_JOURNAL_BYTES).map_err(io_err(path))?;
    Ok(journal_lines(&bytes))
}

fn cursor_path(journal: &Path) -> PathBuf {
    let mut p = journal.as_os_str().to_owned();
    p.push(".cursor");
    PathBuf::from(p)
}

/// Lines of a sealed journal already consumed (0 if no cursor).
fn read_cursor(journal: &Path) -> usize {
    fs::read_to_string(cursor_path(journal))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Identifies one hook record: a sealed journal and the record's line (0-based, counting
/// non-empty lines).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub journal: PathBuf,
    pub line: usize,
}

impl RecordId {
    /// A name for files about this record (`failed/<name>.json`).
    pub fn name(&self) -> String {
        let stem = self
            .journal
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{stem}-{}", self.line)
    }
}

/// A hook record read back by the pusher.
#[derive(Debug, Clone)]
pub struct IncomingRecord {
    pub id: RecordId,
    /// The line as written.
    pub raw: String,
    /// The record, or why it is not one.
    pub parsed: Result<HookRecord, String>,
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
            cache: std::cell::RefCell::new(None),
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

    /// Seals the live journal if it holds anything: renames it, waits (exclusive `flock`)
    /// for hooks still writing to it, then creates the next empty journal durably.
    fn seal(&self) -> Result<(), SpoolError> {
        let dir = self.dir.join(INCOMING);
        let journal = dir.join(JOURNAL);
        match fs::metadata(&journal) {
            Ok(m) if m.len() > 0 => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&journal)(e)),
        }
        let mut ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let sealed = loop {
            let p = dir.join(format!("{ns:020}{SEALED}"));
            if !p.exists() {
                break p;
            }
            ns += 1;
        };
        fs::rename(&journal, &sealed).map_err(io_err(&journal))?;
        let f = File::open(&sealed).map_err(io_err(&sealed))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(&sealed)(e.into()))?;
        drop(f);
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&journal)
            .map_err(io_err(&journal))?;
        sync_dir(&dir).map_err(io_err(&dir))
    }

    fn sealed_lines(&self, journal: &Path) -> Result<std::rc::Rc<Vec<String>>, SpoolError> {
        if let Some((p, lines)) = &*self.cache.borrow() {
            if p == journal {
                return Ok(lines.clone());
            }
        }
        let lines = std::rc::Rc::new(read_lines(journal)?);
        *self.cache.borrow_mut() = Some((journal.to_owned(), lines.clone()));
        Ok(lines)
    }

    /// Up to `limit` hook records not yet consumed, oldest first, each parsed (or the reason
    /// it cannot be). Seals the live journal first.
    pub fn incoming(&self, limit: usize) -> Result<Vec<IncomingRecord>, SpoolError> {
        self.seal()?;
        let mut out = Vec::new();
        for journal in list(&self.dir.join(INCOMING), SEALED)? {
            if out.len() >= limit {
                break;
            }
            let skip = read_cursor(&journal);
            let lines = self.sealed_lines(&journal)?;
            for (line, raw) in lines.iter().cloned().enumerate().skip(skip) {
                if out.len() >= limit {
                    break;
                }
                let parsed = HookRecord::parse(&raw);
                out.push(IncomingRecord {
                    id: RecordId {
                        journal: journal.clone(),
                        line,
                    },
                    raw,
                    parsed,
                });
            }
        }
        Ok(out)
    }

    /// Marks hook records consumed (call only once their entries are durable in `pending/` or
    /// they were dropped or set aside): each sealed journal's cursor advances over the records
    /// consumed contiguously from it; a journal consumed to its end is deleted. Records after
    /// a gap are read again later (and then dropped as duplicates of their pending claim).
    pub fn remove_incoming(&self, ids: &[RecordId]) -> Result<(), SpoolError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut by_journal: BTreeMap<&Path, BTreeSet<usize>> = BTreeMap::new();
        for id in ids {
            by_journal.entry(&id.journal).or_default().insert(id.line);
        }
        let dir = self.dir.join(INCOMING);
        for (journal, lines) in by_journal {
            let mut cursor = read_cursor(journal);
            while lines.contains(&cursor) {
                cursor += 1;
            }
            let total = self.sealed_lines(journal)?.len();
            let cpath = cursor_path(journal);
            if cursor >= total {
                fs::remove_file(journal).map_err(io_err(journal))?;
                match fs::remove_file(&cpath) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&cpath)(e)),
                }
            } else {
                let name = cpath
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // tmp + rename keeps the cursor whole; no fsync (see below).
                let tmp = dir.join(format!(".tmp-{name}"));
                fs::write(&tmp, format!("{cursor}\n"))
                    .and_then(|()| fs::rename(&tmp, &cpath))
                    .map_err(io_err(&cpath))?;
            }
        }
        // Not synced on purpose: if a crash undoes this, the records are read again and
        // dropped, because their claims are already in the (durable) pending batch or the
        // delivered index. That saves two disk flushes per batch.
        Ok(())
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
            let parsed = PendingRecord::parse_batch(&bytes);
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
    /// Not synced on purpose: a batch that reappears after a crash is submitted again, and
    /// every log answers its byte-identical envelopes with the indexes it already gave them.
    pub fn remove_pending(&self, path: &Path) -> Result<(), SpoolError> {
        fs::remove_file(path).map_err(io_err(path))
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
    use serde_json::value::RawValue;

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
    fn concurrent_hooks_and_sealing_lose_and_double_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // incoming/ does not exist yet: the first hook creates it.
        let spool = Spool::open(dir.path()).unwrap();
        std::fs::remove_dir(dir.path().join(INCOMING)).unwrap();
        let threads: Vec<_> = (0..6u64)
            .map(|t| {
                let d = dir.path().to_owned();
                std::thread::spawn(move || {
                    for i in 0..40 {
                        write_hook_record(&d, &rec(1000 + t * 100 + i)).unwrap();
                    }
                })
            })
            .collect();
        // Meanwhile the pusher seals and consumes, over and over.
        let mut seen: Vec<u64> = Vec::new();
        let mut drain = |spool: &Spool| {
            let got = spool.incoming(17).unwrap();
            seen.extend(got.iter().map(|r| r.parsed.as_ref().unwrap().finished_ns));
            let ids: Vec<RecordId> = got.into_iter().map(|r| r.id).collect();
            spool.remove_incoming(&ids).unwrap();
            !ids.is_empty()
        };
        while threads.iter().any(|t| !t.is_finished()) {
            drain(&spool);
        }
        for t in threads {
            t.join().unwrap();
        }
        while drain(&spool) {}
        seen.sort_unstable();
        let want: Vec<u64> = (0..6u64)
            .flat_map(|t| (0..40).map(move |i| 1000 + t * 100 + i))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(counts(dir.path()).unwrap(), SpoolCounts::default());
    }

    #[test]
    fn cursors_advance_only_over_contiguous_consumption() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        for i in 0..5 {
            write_hook_record(dir.path(), &rec(i)).unwrap();
        }
        let got = spool.incoming(10).unwrap();
        assert_eq!(got.len(), 5);
        // Lines 0, 1 and 3 consumed; 2 failed transiently: 2, 3, 4 come back.
        let ids: Vec<RecordId> = [0, 1, 3].iter().map(|&i| got[i].id.clone()).collect();
        spool.remove_incoming(&ids).unwrap();
        assert_eq!(counts(dir.path()).unwrap().incoming, 3);
        let again: Vec<u64> = spool
            .incoming(10)
            .unwrap()
            .iter()
            .map(|r| r.parsed.as_ref().unwrap().finished_ns)
            .collect();
        assert_eq!(again, [2, 3, 4]);
        // A new hook record goes to a new journal, read after the sealed one.
        write_hook_record(dir.path(), &rec(9)).unwrap();
        let all = spool.incoming(10).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].parsed.as_ref().unwrap().finished_ns, 9);
        spool
            .remove_incoming(&all.iter().map(|r| r.id.clone()).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(counts(dir.path()).unwrap(), SpoolCounts::default());
        let left: Vec<_> = fs::read_dir(dir.path().join(INCOMING))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, [JOURNAL], "sealed journals and cursors are gone");
    }

    #[test]
    fn hook_fails_cleanly_without_spool() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_hook_record(&dir.path().join("missing"), &rec(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn bad_and_torn_records_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        write_hook_record(dir.path(), &rec(1)).unwrap();
        // A record of an unknown version, then one torn by a crash mid-write: the next
        // record's leading newline keeps it separate.
        let j = dir.path().join(INCOMING).join(JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&j).unwrap();
        f.write_all(b"\n{\"v\":2,\"drvPath\":\"x\",\"finishedNs\":1}\n\n{\"v\":1,\"drv")
            .unwrap();
        drop(f);
        write_hook_record(dir.path(), &rec(2)).unwrap();
        let got = spool.incoming(10).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].parsed.as_ref().unwrap().finished_ns, 1);
        assert_eq!(
            got[1].parsed.as_ref().unwrap_err(),
            "unknown hook record version 2"
        );
        assert!(got[2]
            .parsed
            .as_ref()
            .unwrap_err()
            .starts_with("not a hook record"));
        assert_eq!(got[2].raw, "{\"v\":1,\"drv");
        assert_eq!(got[3].parsed.as_ref().unwrap().finished_ns, 2);
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
