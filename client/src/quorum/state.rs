//! Log consistency state: per log, the largest checkpoint verified so far, and whether the log
//! was caught presenting two inconsistent signed checkpoints (a fork or a rewritten history).
//!
//! # The file
//! JSON, keyed by the log's C2SP verifier key (so a log that moves to a new URL keeps its
//! history, and two logs can never share an entry):
//! ```json
//! {"version":1,"logs":{"log.example+1a2b3c4d+AbC…":{
//!    "checkpoint":"<the signed note of the largest verified checkpoint>",
//!    "failed":{"at":"2026-11-21T10:00:00Z","reason":"…","evidence":["<note A>","<note B>"]}}}}
//! ```
//! Only signed notes are stored; sizes and roots are re-derived from them (and their signatures
//! re-checked with the configured key) whenever the file is read, so a hand-edited file cannot
//! smuggle in a checkpoint the log never signed. A `failed` record is permanent: it holds the two
//! signed checkpoints that cannot both be honest, which is evidence anyone can check offline.
//! Delete the log's record by hand to trust it again.
//!
//! # Concurrency
//! Several processes may share one file (`provenix substituter` and `provenix verify`). Every
//! change is a read-modify-write under an exclusive `flock` on `<file>.lock`, written to a
//! temporary file, fsynced and renamed over the old one, so readers (which take no lock) see the
//! old or the new content, never a torn one. Within a process, each log's checks are serialised
//! by an async mutex so concurrent lookups that see the same new checkpoint fetch one proof.
//!
//! # Rules (DESIGN.md §7)
//! For a checkpoint `new` (signature already verified) against the stored `old`:
//! - no `old`: accepted as is (trust on first use), and stored;
//! - same size: the roots must be equal;
//! - larger: accepted only with a consistency proof `old → new` from the log that verifies; it
//!   becomes the stored checkpoint;
//! - smaller (a lagging replica): accepted only with a consistency proof `new → old` that
//!   verifies; the stored checkpoint does not change.
//!
//! A proof that does not verify, or two different roots for one size, marks the log failed. A
//! proof the log cannot serve (unreachable, error status) only fails the current lookup.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use provenix_core::checkpoint::{LogVerifier, SignedCheckpoint};
use provenix_core::merkle::{self, Hash, TreeSize};
use serde::{Deserialize, Serialize};

/// Largest state file read (it holds a few notes per log).
pub const MAX_STATE_BYTES: u64 = 16 << 20;

/// How many smaller (lagging-replica) checkpoints per log are remembered as proven.
const MAX_PROVEN_SMALLER: usize = 4096;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not a provenix log state file: {message} (move it away to start afresh)")]
    Corrupt { path: PathBuf, message: String },
}

/// A log caught presenting two signed checkpoints that cannot both be honest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// When it was detected (RFC 3339, UTC).
    pub at: String,
    /// What was found.
    pub reason: String,
    /// The two signed checkpoint notes (the one seen before, the one that contradicts it).
    pub evidence: Vec<String>,
}

/// Why a checkpoint was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// The log is marked failed (now or earlier): its entries never count.
    #[error("log marked failed at {}: {}", .0.at, .0.reason)]
    Failed(FailureRecord),
    /// Consistency could not be established this time (the log could not serve a proof).
    #[error("cannot prove consistency with the checkpoint seen before: {0}")]
    Unproven(String),
    /// The state file could not be updated.
    #[error("{0}")]
    State(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    #[serde(default)]
    logs: BTreeMap<String, FileLog>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<FailureRecord>,
}

/// What this process knows of one log.
#[derive(Debug, Default)]
struct Known {
    /// The largest verified checkpoint.
    largest: Option<SignedCheckpoint>,
    failed: Option<FailureRecord>,
    /// Smaller checkpoints proven consistent with `largest` (size → root).
    proven_smaller: BTreeMap<TreeSize, Hash>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Keyed by verifier key string.
    logs: HashMap<String, Known>,
    /// (modified time, length) of the file when last read.
    stamp: Option<(SystemTime, u64)>,
}

/// The consistency state of every configured log, backed by a file shared between processes.
#[derive(Debug)]
pub struct LogState {
    path: PathBuf,
    lock_path: PathBuf,
    /// Verifier key string → verifier, for re-checking stored notes.
    verifiers: HashMap<String, LogVerifier>,
    inner: Mutex<Inner>,
    /// One async mutex per log: checks of one log run one at a time.
    gates: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// A summary of one log's state, for reports and metrics.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogSummary {
    pub key: String,
    pub size: Option<TreeSize>,
    pub failed: Option<FailureRecord>,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

impl LogState {
    /// Opens (or prepares to create) the state file at `path` for the logs in `logs`.
    /// The directory is created if missing; a file that exists must parse.
    pub fn open(path: &Path, logs: &[LogVerifier]) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut lock_name = path.file_name().unwrap_or_default().to_owned();
        lock_name.push(".lock");
        let verifiers: HashMap<String, LogVerifier> =
            logs.iter().map(|v| (v.to_string(), v.clone())).collect();
        let gates = verifiers
            .keys()
            .map(|k| (k.clone(), Arc::new(tokio::sync::Mutex::new(()))))
            .collect();
        let s = Self {
            path: path.to_owned(),
            lock_path: path.with_file_name(lock_name),
            verifiers,
            inner: Mutex::new(Inner::default()),
            gates,
        };
        let mut inner = s.lock_inner();
        s.refresh(&mut inner, true)?;
        drop(inner);
        Ok(s)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_file(&self) -> Result<Option<FileFormat>, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |message: String| StateError::Corrupt {
            path: self.path.clone(),
            message,
        };
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(corrupt(format!("over {MAX_STATE_BYTES} bytes")));
        }
        let f: FileFormat = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if f.version != 1 {
            return Err(corrupt(format!("unknown version {}", f.version)));
        }
        Ok(Some(f))
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    }

    /// Re-reads the file if it changed since it was last read (or always with `force`).
    fn refresh(&self, inner: &mut Inner, force: bool) -> Result<(), StateError> {
        let stamp = self.stamp();
        if !force && stamp == inner.stamp {
            return Ok(());
        }
        let file = self.read_file()?.unwrap_or_default();
        for (key, log) in &file.logs {
            let Some(verifier) = self.verifiers.get(key) else {
                continue;
            };
            let k = inner.logs.entry(key.clone()).or_default();
            if log.failed.is_some() {
                k.failed.clone_from(&log.failed);
            }
            if let Some(note) = &log.checkpoint {
                let cp = verifier.verify(note).map_err(|e| StateError::Corrupt {
                    path: self.path.clone(),
                    message: format!("stored checkpoint of {key} does not verify: {e}"),
                })?;
                // The file only ever grows; a smaller stored checkpoint than ours means the file
                // was replaced by an older copy: keep ours (it is written back on the next update).
                if k.largest.as_ref().is_none_or(|l| l.size() < cp.size()) {
                    k.largest = Some(cp);
                    k.proven_smaller.clear();
                }
            }
        }
        inner.stamp = stamp;
        Ok(())
    }

    /// Read-modify-write of the file under the exclusive lock. `f` changes the in-memory state
    /// (freshly re-read) and returns whether anything needs writing, plus its own result.
    fn update<T>(&self, f: impl FnOnce(&mut Inner) -> (bool, T)) -> Result<T, StateError> {
        let io = |source| StateError::Io {
            path: self.lock_path.clone(),
            source,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(io)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(e.into()))?;
        let mut inner = self.lock_inner();
        self.refresh(&mut inner, true)?;
        let (changed, out) = f(&mut inner);
        if changed {
            self.write(&inner)?;
            inner.stamp = self.stamp();
        }
        drop(inner);
        // Closing the file releases the lock.
        drop(lock);
        Ok(out)
    }

    fn write(&self, inner: &Inner) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        // Keep records of logs this process does not know (another trust file may share it).
        let mut file = self.read_file()?.unwrap_or_default();
        file.version = 1;
        for (key, k) in &inner.logs {
            let rec = file.logs.entry(key.clone()).or_default();
            if let Some(cp) = &k.largest {
                rec.checkpoint = Some(cp.note().to_owned());
            }
            if k.failed.is_some() {
                rec.failed.clone_from(&k.failed);
            }
        }
        let mut bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        bytes.push(b'\n');
        let tmp = self.path.with_file_name(format!(
            ".{}.tmp.{}",
            file_name(&self.path),
            std::process::id()
        ));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// The failure record of a log, if it is marked failed (re-reading the file if it changed).
    pub fn failed(&self, log: &LogVerifier) -> Option<FailureRecord> {
        let mut inner = self.lock_inner();
        if let Err(e) = self.refresh(&mut inner, false) {
            tracing::warn!(error = %e, "cannot re-read the log state file");
        }
        inner
            .logs
            .get(&log.to_string())
            .and_then(|k| k.failed.clone())
    }

    /// Every configured log's state.
    pub fn summary(&self) -> Vec<LogSummary> {
        let mut inner = self.lock_inner();
        let _ = self.refresh(&mut inner, false);
        let mut out: Vec<LogSummary> = self
            .verifiers
            .keys()
            .map(|key| {
                let k = inner.logs.get(key);
                LogSummary {
                    key: key.clone(),
                    size: k.and_then(|k| k.largest.as_ref().map(SignedCheckpoint::size)),
                    failed: k.and_then(|k| k.failed.clone()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Checks that `cp` (whose signature by `log` was verified by the caller) is consistent with
    /// every checkpoint of `log` seen before, fetching a consistency proof with `prove(from, to)`
    /// when needed. See the module documentation for the rules.
    pub async fn check<F, Fut, E>(
        &self,
        log: &LogVerifier,
        cp: &SignedCheckpoint,
        prove: F,
    ) -> Result<(), ConsistencyError>
    where
        F: Fn(TreeSize, TreeSize) -> Fut,
        Fut: Future<Output = Result<Vec<Hash>, E>>,
        E: std::fmt::Display,
    {
        let key = log.to_string();
        if self.fast_ok(&key, cp)? {
            return Ok(());
        }
        let gate = self
            .gates
            .get(&key)
            .cloned()
            .ok_or_else(|| ConsistencyError::State(format!("log {key} is not configured")))?;
        let _gate = gate.lock().await;
        // Another task may have done the work while we waited; another process may have
        // advanced the file: a few rounds at most.
        for _ in 0..4 {
            if self.fast_ok(&key, cp)? {
                return Ok(());
            }
            let largest = {
                let mut inner = self.lock_inner();
                self.refresh(&mut inner, false)
                    .map_err(|e| ConsistencyError::State(e.to_string()))?;
                inner.logs.get(&key).and_then(|k| k.largest.clone())
            };
            let Some(old) = largest else {
                // First sight of this log: trust on first use.
                if cp.size() == 0 && cp.root() != &Hash::EMPTY_ROOT {
                    return Err(self.mark_failed(
                        &key,
                        None,
                        cp,
                        "a size-0 checkpoint whose root is not the empty root",
                    ));
                }
                if self.commit(&key, None, cp)? {
                    return Ok(());
                }
                continue;
            };
            if cp.size() == old.size() {
                // fast_ok saw a different root.
                return Err(self.mark_failed(
                    &key,
                    Some(&old),
                    cp,
                    &format!("two checkpoints of size {} with different roots", cp.size()),
                ));
            }
            let (from, to, from_root, to_root) = if cp.size() > old.size() {
                (old.size(), cp.size(), *old.root(), *cp.root())
            } else {
                (cp.size(), old.size(), *cp.root(), *old.root())
            };
            let consistent = if from == 0 {
                // The empty tree is a prefix of every tree; its root must be the empty root.
                from_root == Hash::EMPTY_ROOT
            } else {
                let proof = prove(from, to).await.map_err(|e| {
                    ConsistencyError::Unproven(format!("consistency proof {from} → {to}: {e}"))
                })?;
                merkle::verify_consistency(from, to, &proof, &from_root, &to_root).is_ok()
            };
            if !consistent {
                return Err(self.mark_failed(
                    &key,
                    Some(&old),
                    cp,
                    &format!(
                        "checkpoint of size {} is not consistent with the checkpoint of size {} seen before (no valid consistency proof {from} → {to})",
                        cp.size(),
                        old.size()
                    ),
                ));
            }
            if cp.size() < old.size() {
                let mut inner = self.lock_inner();
                if let Some(k) = inner.logs.get_mut(&key) {
                    if k.largest.as_ref() == Some(&old) {
                        if k.proven_smaller.len() >= MAX_PROVEN_SMALLER {
                            k.proven_smaller.clear();
                        }
                        k.proven_smaller.insert(cp.size(), *cp.root());
                        return Ok(());
                    }
                }
                continue;
            }
            if self.commit(&key, Some(&old), cp)? {
                return Ok(());
            }
        }
        Err(ConsistencyError::Unproven(
            "the state file kept changing under us; try again".into(),
        ))
    }

    /// Whether `cp` is already known consistent, without I/O. Errors if the log is failed.
    fn fast_ok(&self, key: &str, cp: &SignedCheckpoint) -> Result<bool, ConsistencyError> {
        let mut inner = self.lock_inner();
        if let Err(e) = self.refresh(&mut inner, false) {
            return Err(ConsistencyError::State(e.to_string()));
        }
        let Some(k) = inner.logs.get(key) else {
            return Ok(false);
        };
        if let Some(f) = &k.failed {
            return Err(ConsistencyError::Failed(f.clone()));
        }
        Ok(match &k.largest {
            Some(l) if l.size() == cp.size() => l.root() == cp.root(),
            Some(l) if l.size() > cp.size() => k.proven_smaller.get(&cp.size()) == Some(cp.root()),
            _ => false,
        })
    }

    /// Stores `cp` as the largest checkpoint if the file still holds `expected`. Returns false
    /// if someone else changed it meanwhile (the caller checks again).
    fn commit(
        &self,
        key: &str,
        expected: Option<&SignedCheckpoint>,
        cp: &SignedCheckpoint,
    ) -> Result<bool, ConsistencyError> {
        self.update(|inner| {
            let k = inner.logs.entry(key.to_owned()).or_default();
            if k.failed.is_some() || k.largest.as_ref() != expected {
                return (false, false);
            }
            k.largest = Some(cp.clone());
            k.proven_smaller.clear();
            (true, true)
        })
        .map_err(|e| ConsistencyError::State(e.to_string()))
    }

    /// Marks `key` failed with `old` and `new` as evidence; returns the error to report.
    fn mark_failed(
        &self,
        key: &str,
        old: Option<&SignedCheckpoint>,
        new: &SignedCheckpoint,
        reason: &str,
    ) -> ConsistencyError {
        let record = FailureRecord {
            at: now_rfc3339(),
            reason: reason.to_owned(),
            evidence: old
                .map(|o| o.note().to_owned())
                .into_iter()
                .chain([new.note().to_owned()])
                .collect(),
        };
        tracing::error!(
            log = key,
            reason,
            "LOG MISBEHAVIOUR: the log presented inconsistent signed checkpoints; its entries no longer count (evidence in the state file)"
        );
        let rec = record.clone();
        let stored = self.update(move |inner| {
            let k = inner.logs.entry(key.to_owned()).or_default();
            match &k.failed {
                Some(existing) => (false, existing.clone()),
                None => {
                    k.failed = Some(rec.clone());
                    (true, rec)
                }
            }
        });
        match stored {
            Ok(r) => ConsistencyError::Failed(r),
            Err(e) => {
                tracing::error!(error = %e, "cannot record the log failure in the state file");
                // Still refuse in this process.
                let mut inner = self.lock_inner();
                inner.logs.entry(key.to_owned()).or_default().failed = Some(record.clone());
                ConsistencyError::Failed(record)
            }
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into())
}

/// The default state file: `$XDG_STATE_HOME/provenix/state.json`, else
/// `~/.local/state/provenix/state.json`.
pub fn default_state_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(base.join("provenix/state.json"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use provenix_core::checkpoint::LogSigner;
    use provenix_core::merkle::{leaf_hash, MemoryTree};

    fn tree(prefix: &str, n: u64) -> MemoryTree {
        MemoryTree::from_leaves((0..n).map(|i| leaf_hash(format!("{prefix}{i}").as_bytes())))
    }

    fn prover(
        t: &MemoryTree,
    ) -> impl Fn(u64, u64) -> std::future::Ready<Result<Vec<Hash>, String>> + '_ {
        move |from, to| std::future::ready(t.consistency_proof(from, to).map_err(|e| e.to_string()))
    }

    #[tokio::test]
    async fn grows_with_proofs_accepts_lagging_replicas_and_catches_forks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let signer = LogSigner::generate("log.test").unwrap();
        let v: LogVerifier = signer.verifier_key().parse().unwrap();
        let honest = tree("a", 20);
        let cp = |t: &MemoryTree, n: u64| signer.sign(n, t.root_at(n).unwrap()).unwrap();

        let st = LogState::open(&path, std::slice::from_ref(&v)).unwrap();
        st.check(&v, &cp(&honest, 10), prover(&honest))
            .await
            .unwrap();
        st.check(&v, &cp(&honest, 15), prover(&honest))
            .await
            .unwrap();
        // A lagging replica: smaller, proven consistent; the stored checkpoint stays at 15.
        st.check(&v, &cp(&honest, 12), prover(&honest))
            .await
            .unwrap();
        assert_eq!(st.summary()[0].size, Some(15));
        // A second process sharing the file sees 15 and moves on from there.
        let other = LogState::open(&path, std::slice::from_ref(&v)).unwrap();
        other
            .check(&v, &cp(&honest, 20), prover(&honest))
            .await
            .unwrap();
        assert_eq!(
            st.summary()[0].size,
            Some(20),
            "re-read after the file changed"
        );

        // A proof the log cannot serve only fails this check.
        let err = st
            .check(&v, &cp(&tree("a", 25), 25), |_, _| {
                std::future::ready(Err::<Vec<Hash>, _>("connection refused"))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ConsistencyError::Unproven(_)), "{err:?}");
        assert!(st.failed(&v).is_none());

        // A fork: same key, another history. No valid proof exists: failed, with evidence, for
        // every process and after a restart.
        let forked = tree("b", 30);
        let err = st
            .check(&v, &cp(&forked, 30), prover(&forked))
            .await
            .unwrap_err();
        let ConsistencyError::Failed(rec) = err else {
            panic!("{err:?}")
        };
        assert_eq!(rec.evidence.len(), 2);
        v.verify(&rec.evidence[0]).unwrap();
        v.verify(&rec.evidence[1]).unwrap();
        assert!(matches!(
            other.check(&v, &cp(&honest, 20), prover(&honest)).await,
            Err(ConsistencyError::Failed(_))
        ));
        let reopened = LogState::open(&path, std::slice::from_ref(&v)).unwrap();
        assert!(reopened.failed(&v).is_some());
    }

    #[tokio::test]
    async fn same_size_different_root_is_a_fork_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/state.json");
        let signer = LogSigner::generate("log.test").unwrap();
        let v: LogVerifier = signer.verifier_key().parse().unwrap();
        let st = LogState::open(&path, std::slice::from_ref(&v)).unwrap();
        let a = signer.sign(5, tree("a", 5).root()).unwrap();
        let b = signer.sign(5, tree("b", 5).root()).unwrap();
        let never = |_, _| std::future::ready(Err::<Vec<Hash>, _>("unused"));
        st.check(&v, &a, never).await.unwrap();
        let err = st.check(&v, &b, never).await.unwrap_err();
        assert!(
            matches!(&err, ConsistencyError::Failed(r) if r.reason.contains("same size") || r.reason.contains("different roots")),
            "{err:?}"
        );

        // A stored checkpoint that the log never signed is refused when the file is read.
        let text = std::fs::read_to_string(&path).unwrap();
        let tampered = text.replacen("\\n5\\n", "\\n6\\n", 1);
        assert_ne!(tampered, text);
        std::fs::write(&path, tampered).unwrap();
        let e = LogState::open(&path, std::slice::from_ref(&v)).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            LogState::open(&path, std::slice::from_ref(&v)),
            Err(StateError::Corrupt { .. })
        ));
    }
}
