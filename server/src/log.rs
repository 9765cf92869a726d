//! The log: sequencing (durable index) separate from integration (tree + signed checkpoint).
//!
//! - **Sequencer** (one task, the only writer of entries): takes validated entries from a bounded
//!   queue, gives each new leaf the next index, drops identical envelopes (same leaf hash) to the
//!   index they already have, commits a whole batch in one transaction, and only then answers.
//!   After a failed write it re-reads the log's size from storage before taking more work, since
//!   the write may or may not have persisted.
//! - **Integrator**: at most every `integrate_interval`, when the tree has grown, computes the
//!   root, signs a checkpoint, stores it durably, and only then publishes it.
//! - Reads are served from memory (the tree, the published checkpoint) and from the read side
//!   of the database (leaf bytes), never through the sequencer.
//!
//! Invariants (checked at start-up, asserted by the crash tests): every index below the stored
//! entry count is present exactly once; every stored checkpoint's root is the root of that many
//! leaves; the published checkpoint never shrinks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use provenix_core::checkpoint::{LogSigner, LogVerifier, SignedCheckpoint};
use provenix_core::merkle::{Hash, MemoryTree, ProofError};
use provenix_core::nix::NixPublicKey;
use provenix_core::tile::{self, TileKind, TilePath};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::store::{KeyedEntry, NewEntry, Store, StoreError};

/// Tunables of the log core.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Shortest time between two checkpoints.
    pub integrate_interval: Duration,
    /// Submission requests that may wait for the sequencer before new ones get 503.
    pub queue_depth: usize,
    /// Most entries the sequencer commits in one transaction.
    pub max_commit_entries: usize,
    /// How often the builder allow-list is re-read from storage.
    pub builders_refresh: Duration,
    /// Full entry bundles kept in memory.
    pub bundle_cache: usize,
    /// Most keys one coalesced lookup query carries; 1 runs every lookup on its own.
    pub lookup_batch_keys: usize,
    /// Witnesses asked to cosign each checkpoint before it is published.
    pub witnesses: Vec<crate::witness::WitnessSpec>,
    /// Time limit of one witness request.
    pub witness_timeout: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            integrate_interval: Duration::from_millis(100),
            queue_depth: 256,
            max_commit_entries: 4096,
            builders_refresh: Duration::from_millis(500),
            bundle_cache: 64,
            lookup_batch_keys: 64,
            witnesses: Vec::new(),
            witness_timeout: Duration::from_secs(3),
        }
    }
}

/// Why the log could not take or serve something. All are retryable server-side conditions
/// except where noted.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the sequencer queue is full")]
    Overloaded,
    #[error("the log is shutting down")]
    ShuttingDown,
    #[error("storage unavailable: {0}")]
    Storage(#[from] StoreError),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The published checkpoint, with its note pre-escaped as a JSON string so responses can embed
/// it without re-serialising it each time. Derefs to the checkpoint.
#[derive(Debug)]
pub struct Published {
    pub checkpoint: SignedCheckpoint,
    /// `note` as a JSON string literal, quotes included.
    pub note_json: String,
}

impl Published {
    fn new(checkpoint: SignedCheckpoint) -> Self {
        let note_json = serde_json::to_string(checkpoint.note()).unwrap_or_else(|_| "\"\"".into());
        Self {
            checkpoint,
            note_json,
        }
    }
}

impl std::ops::Deref for Published {
    type Target = SignedCheckpoint;
    fn deref(&self) -> &SignedCheckpoint {
        &self.checkpoint
    }
}

/// An entry that passed validation and signature checks, ready to sequence.
#[derive(Debug, Clone)]
pub struct Validated {
    pub leaf: Vec<u8>,
    pub leaf_hash: Hash,
    pub keys: Vec<String>,
}

/// Where a sequenced entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub index: u64,
    pub leaf_hash: Hash,
    pub duplicate: bool,
}

struct SeqJob {
    entries: Vec<Validated>,
    reply: oneshot::Sender<Result<Vec<Assigned>, LogError>>,
}

/// Every tree node in memory, plus a leaf-hash index for de-duplication.
struct TreeState {
    tree: MemoryTree,
    /// First 8 bytes of a leaf hash → its index (checked against the full hash in `tree`).
    dedup: hashbrown::HashMap<u64, u64>,
}

impl TreeState {
    fn prefix(h: &Hash) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.0[..8]);
        u64::from_le_bytes(b)
    }

    fn find(&self, h: &Hash) -> Option<u64> {
        let idx = *self.dedup.get(&Self::prefix(h))?;
        (self.tree.leaf(idx).as_ref() == Some(h)).then_some(idx)
    }

    fn push(&mut self, h: Hash) {
        let idx = self.tree.push(h);
        self.dedup.entry(Self::prefix(&h)).or_insert(idx);
    }
}

struct Inner {
    store: Store,
    signer: LogSigner,
    verifier: LogVerifier,
    witnesses: crate::witness::Witnesses,
    config: LogConfig,
    state: RwLock<TreeState>,
    published: watch::Sender<Arc<Published>>,
    builders: RwLock<Arc<HashMap<String, NixPublicKey>>>,
    seq_tx: Mutex<Option<mpsc::Sender<SeqJob>>>,
    integrate: Notify,
    /// (last index of an acknowledged batch, when it was acknowledged), for the delay metric.
    acked: Mutex<std::collections::VecDeque<(u64, Instant)>>,
    bundles: Mutex<lru::LruCache<u64, Bytes>>,
    /// Lookups waiting to be coalesced into one query (see [`Log::lookup`]).
    lookup_queue: Mutex<Vec<LookupJob>>,
    /// One permit per lookup query in flight.
    lookup_readers: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
    /// Since when the latest write to storage has been failing (`None`: it succeeded).
    write_failing: Mutex<Option<std::time::SystemTime>>,
}

impl Inner {
    /// Records the outcome of a write to storage (for `/healthz`).
    fn note_write(&self, ok: bool) {
        let mut w = self.write_failing.lock().unwrap_or_else(poisoned);
        if ok {
            *w = None;
        } else if w.is_none() {
            *w = Some(std::time::SystemTime::now());
        }
    }
}

/// What `/healthz` reports about storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageHealth {
    /// Reads answer and the latest write succeeded.
    Ok,
    /// Reads answer but the latest write failed (e.g. a full disk), since this time.
    WritesFailing(std::time::SystemTime),
    /// The database does not answer a trivial query within the time limit.
    Unavailable,
}

impl StorageHealth {
    /// The stable code `/healthz` shows.
    pub fn code(&self) -> &'static str {
        match self {
            StorageHealth::Ok => "ok",
            StorageHealth::WritesFailing(_) => "writes_failing",
            StorageHealth::Unavailable => "unavailable",
        }
    }
}

/// A lookup waiting for a reader.
struct LookupJob {
    keys: Vec<String>,
    size: u64,
    reply: tokio::sync::oneshot::Sender<Result<Vec<KeyedEntry>, StoreError>>,
}

/// A handle to the running log. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    stop: Arc<Notify>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Log({})", self.inner.signer.name())
    }
}

fn poisoned<T>(e: std::sync::PoisonError<T>) -> T {
    // A panic while holding one of these locks leaves data that is still consistent (every
    // update is a single push or swap), so keep serving.
    e.into_inner()
}

impl Log {
    /// Opens the log over `store`: loads every leaf hash, checks the latest stored checkpoint
    /// against the recomputed tree, publishes it, and starts the sequencer, integrator and
    /// builder-refresh tasks.
    pub async fn open(
        store: Store,
        signer: LogSigner,
        config: LogConfig,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let verifier: LogVerifier = signer
            .verifier_key()
            .parse()
            .map_err(|e| anyhow::anyhow!("log key: {e}"))?;
        let count = store.entry_count().await?;
        let mut state = TreeState {
            tree: MemoryTree::new(),
            dedup: hashbrown::HashMap::with_capacity(count as usize),
        };
        state.tree.reserve(count as usize);
        load_hashes(&store, &mut state, count).await?;

        let published = match store.latest_checkpoint().await? {
            Some((size, note)) => {
                let cp = verifier.verify(&note).map_err(|e| {
                    anyhow::anyhow!(
                        "stored checkpoint of size {size} does not verify with this log's key: {e}"
                    )
                })?;
                if cp.size() != size {
                    anyhow::bail!(
                        "stored checkpoint row {size} holds a checkpoint of size {}",
                        cp.size()
                    );
                }
                if size > count {
                    anyhow::bail!(
                        "the database holds {count} entries but the log signed a checkpoint of size {size}: acknowledged entries are missing"
                    );
                }
                let root = state.tree.root_at(size)?;
                if &root != cp.root() {
                    anyhow::bail!("recomputed root of the first {size} entries does not match the signed checkpoint");
                }
                cp
            }
            None => {
                let cp = signer.sign(0, Hash::EMPTY_ROOT)?;
                store.put_checkpoint(0, cp.note()).await?;
                cp
            }
        };
        metrics.tree_size.set(count as i64);
        metrics.checkpoint_size.set(published.size() as i64);
        let builders = load_builders(&store).await?;
        let (published_tx, _) = watch::channel(Arc::new(Published::new(published)));
        let (seq_tx, seq_rx) = mpsc::channel(config.queue_depth.max(1));
        let bundle_cap = std::num::NonZeroUsize::new(config.bundle_cache.max(1))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        let witnesses =
            crate::witness::Witnesses::new(config.witnesses.clone(), config.witness_timeout);
        let store_readers = store.readers();
        let inner = Arc::new(Inner {
            store,
            signer,
            verifier,
            witnesses,
            config,
            state: RwLock::new(state),
            published: published_tx,
            builders: RwLock::new(Arc::new(builders)),
            seq_tx: Mutex::new(Some(seq_tx)),
            integrate: Notify::new(),
            acked: Mutex::new(Default::default()),
            bundles: Mutex::new(lru::LruCache::new(bundle_cap)),
            lookup_queue: Mutex::new(Vec::new()),
            lookup_readers: Arc::new(tokio::sync::Semaphore::new(store_readers)),
            metrics,
            write_failing: Mutex::new(None),
        });
        let stop = Arc::new(Notify::new());
        let tasks = vec![
            tokio::spawn(run_sequencer(inner.clone(), seq_rx)),
            tokio::spawn(run_integrator(inner.clone(), stop.clone())),
            tokio::spawn(run_builder_refresh(inner.clone(), stop.clone())),
        ];
        // Integrate anything sequenced before a restart right away.
        inner.integrate.notify_one();
        Ok(Self {
            inner,
            tasks: Arc::new(Mutex::new(tasks)),
            stop,
        })
    }

    /// Stops taking submissions, lets the sequencer finish every queued one, signs a final
    /// checkpoint covering them, and stops the background tasks.
    pub async fn shutdown(&self) {
        drop(self.inner.seq_tx.lock().unwrap_or_else(poisoned).take());
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(poisoned));
        let mut tasks = tasks.into_iter();
        if let Some(seq) = tasks.next() {
            let _ = seq.await;
        }
        if let Err(e) = integrate_once(&self.inner).await {
            tracing::error!(error = %e, "final integration failed");
        }
        self.stop.notify_waiters();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }

    /// The log's signer (its name and verifier key).
    pub fn signer(&self) -> &LogSigner {
        &self.inner.signer
    }

    /// The cosigner keys of the configured witnesses.
    pub fn witness_keys(&self) -> Vec<provenix_core::witness::CosignerVerifier> {
        self.inner
            .config
            .witnesses
            .iter()
            .map(|w| w.key.clone())
            .collect()
    }

    /// The storage.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The builder key for a DSSE keyid, if allow-listed.
    pub fn builder_key(&self, name: &str) -> Option<NixPublicKey> {
        self.inner
            .builders
            .read()
            .unwrap_or_else(poisoned)
            .get(name)
            .cloned()
    }

    /// The whole allow-list.
    pub fn builders(&self) -> Arc<HashMap<String, NixPublicKey>> {
        self.inner.builders.read().unwrap_or_else(poisoned).clone()
    }

    /// Re-reads the builder allow-list now.
    pub async fn refresh_builders(&self) -> Result<(), StoreError> {
        let b = load_builders(&self.inner.store).await?;
        *self.inner.builders.write().unwrap_or_else(poisoned) = Arc::new(b);
        Ok(())
    }

    /// Sequences validated entries; returns once they are durable.
    pub async fn submit(&self, entries: Vec<Validated>) -> Result<Vec<Assigned>, LogError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self
            .inner
            .seq_tx
            .lock()
            .unwrap_or_else(poisoned)
            .clone()
            .ok_or(LogError::ShuttingDown)?;
        let (reply, rx) = oneshot::channel();
        tx.try_send(SeqJob { entries, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => LogError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => LogError::ShuttingDown,
            })?;
        rx.await.map_err(|_| LogError::ShuttingDown)?
    }

    /// The state of storage: a trivial read (bounded by `timeout`) and the outcome of the
    /// latest write.
    pub async fn storage_health(&self, timeout: Duration) -> StorageHealth {
        match tokio::time::timeout(timeout, self.inner.store.ping()).await {
            Ok(Ok(())) => {}
            _ => return StorageHealth::Unavailable,
        }
        match *self.inner.write_failing.lock().unwrap_or_else(poisoned) {
            Some(since) => StorageHealth::WritesFailing(since),
            None => StorageHealth::Ok,
        }
    }

    /// The latest published checkpoint.
    pub fn checkpoint(&self) -> Arc<Published> {
        self.inner.published.borrow().clone()
    }

    /// Waits until a published checkpoint covers leaf `index` (or `timeout` passes).
    pub async fn wait_integrated(&self, index: u64, timeout: Duration) -> Option<Arc<Published>> {
        let mut rx = self.inner.published.subscribe();
        let fut = async {
            loop {
                let cp = rx.borrow_and_update().clone();
                if cp.size() > index {
                    return Some(cp);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.ok().flatten()
    }

    /// Number of sequenced (durable) leaves, integrated or not.
    pub fn sequenced_size(&self) -> u64 {
        self.inner.state.read().unwrap_or_else(poisoned).tree.size()
    }

    /// Inclusion proof of `index` against the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.inner
            .state
            .read()
            .unwrap_or_else(poisoned)
            .tree
            .inclusion_proof(index, size)
    }

    /// The leaf hash of `index` and its inclusion proof against `size`, under one lock.
    pub fn proved(&self, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), ProofError> {
        let st = self.inner.state.read().unwrap_or_else(poisoned);
        let proof = st.tree.inclusion_proof(index, size)?;
        let leaf = st
            .tree
            .leaf(index)
            .ok_or(ProofError::IndexOutOfRange { index, size })?;
        Ok((leaf, proof))
    }

    /// Inclusion proofs for many indices against one size, under one lock.
    pub fn inclusion_proofs(
        &self,
        indices: &[u64],
        size: u64,
    ) -> Result<Vec<Vec<Hash>>, ProofError> {
        let st = self.inner.state.read().unwrap_or_else(poisoned);
        indices
            .iter()
            .map(|&i| st.tree.inclusion_proof(i, size))
            .collect()
    }

    /// Consistency proof between two sizes no larger than the published checkpoint.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        self.inner
            .state
            .read()
            .unwrap_or_else(poisoned)
            .tree
            .consistency_proof(from, to)
    }

    /// Leaf hash at `index`.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.inner
            .state
            .read()
            .unwrap_or_else(poisoned)
            .tree
            .leaf(index)
    }

    /// A hash tile, if the published checkpoint covers all of it.
    pub fn hash_tile(&self, t: &TilePath) -> Option<Vec<u8>> {
        let TileKind::Hashes { level } = t.kind else {
            return None;
        };
        let size = self.checkpoint().size();
        let (full, partial) = tile::level_shape(size, level);
        let covered =
            t.index < full || (t.index == full && u64::from(t.width) <= u64::from(partial));
        if !covered {
            return None;
        }
        self.inner
            .state
            .read()
            .unwrap_or_else(poisoned)
            .tree
            .tile(level, t.index, t.width)
    }

    /// An entry bundle, if the published checkpoint covers all of it.
    pub async fn entry_bundle(&self, t: &TilePath) -> Result<Option<Bytes>, LogError> {
        let size = self.checkpoint().size();
        let (full, partial) = tile::level_shape(size, 0);
        let covered = t.index < full || (t.index == full && t.width <= partial);
        if !covered || t.kind != TileKind::Entries {
            return Ok(None);
        }
        if t.is_full() {
            if let Some(b) = self
                .inner
                .bundles
                .lock()
                .unwrap_or_else(poisoned)
                .get(&t.index)
            {
                return Ok(Some(b.clone()));
            }
        }
        let start = t.start();
        let leaves = self
            .inner
            .store
            .leaves(start, start + u64::from(t.width))
            .await?;
        if leaves.len() != usize::from(t.width) {
            return Err(StoreError::Corrupt(format!(
                "bundle {} has {} of {} leaves",
                t.index,
                leaves.len(),
                t.width
            ))
            .into());
        }
        let mut out = Vec::with_capacity(leaves.iter().map(|l| l.len() + 2).sum());
        for l in &leaves {
            tile::push_bundle_entry(&mut out, l)
                .map_err(|e| StoreError::Corrupt(format!("stored leaf: {e}")))?;
        }
        let out = Bytes::from(out);
        if t.is_full() {
            self.inner
                .bundles
                .lock()
                .unwrap_or_else(poisoned)
                .put(t.index, out.clone());
        }
        Ok(Some(out))
    }

    /// Stored leaves under `keys` below `size`.
    ///
    /// Concurrent lookups are coalesced: at most `lookup_readers` queries run at once, and when
    /// a reader is free it takes every lookup queued meanwhile (up to `lookup_batch_keys` keys)
    /// into one query, then hands each its own rows. An idle log runs a lookup at once. (Each
    /// query costs a few thread hand-offs in the database driver — for SQLite, about half the
    /// server's CPU per lookup when measured — so under load fewer, larger queries are cheaper.)
    pub async fn lookup(&self, keys: &[String], size: u64) -> Result<Vec<KeyedEntry>, LogError> {
        let max_keys = self.inner.config.lookup_batch_keys;
        if keys.len() >= max_keys {
            return Ok(self.inner.store.lookup(keys, size).await?);
        }
        let (reply, mut rx) = tokio::sync::oneshot::channel();
        self.inner
            .lookup_queue
            .lock()
            .unwrap_or_else(poisoned)
            .push(LookupJob {
                keys: keys.to_vec(),
                size,
                reply,
            });
        let permit = tokio::select! {
            biased;
            r = &mut rx => return lookup_reply(r),
            p = self.inner.lookup_readers.clone().acquire_owned() => p,
        };
        let Ok(permit) = permit else {
            return Err(LogError::Storage(StoreError::Shared(
                "the log is shutting down".into(),
            )));
        };
        let jobs = {
            let mut q = self.inner.lookup_queue.lock().unwrap_or_else(poisoned);
            let mut n = 0;
            let take = q
                .iter()
                .take_while(|j| {
                    n += j.keys.len();
                    n <= max_keys
                })
                .count()
                .max(1)
                .min(q.len());
            q.drain(..take).collect::<Vec<_>>()
        };
        if !jobs.is_empty() {
            // Its own task: a client that hangs up abandons nobody else's lookup.
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let _permit = permit;
                run_lookup_batch(&inner.store, jobs).await;
            });
        }
        lookup_reply(rx.await)
    }

    /// Leaf bytes at `index`.
    pub async fn leaf(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.inner.store.leaf(index).await?)
    }

    /// Signs and publishes a checkpoint now if the tree grew (tests, shutdown).
    pub async fn integrate_now(&self) -> Result<(), LogError> {
        integrate_once(&self.inner).await
    }
}

fn lookup_reply(
    r: Result<Result<Vec<KeyedEntry>, StoreError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<Vec<KeyedEntry>, LogError> {
    match r {
        Ok(r) => Ok(r?),
        Err(_) => Err(LogError::Storage(StoreError::Shared(
            "the lookup was abandoned".into(),
        ))),
    }
}

/// One query for the keys of every job, each job answered with its own keys below its own size.
async fn run_lookup_batch(store: &Store, jobs: Vec<LookupJob>) {
    if let [_] = jobs.as_slice() {
        if let Some(job) = jobs.into_iter().next() {
            let r = store.lookup(&job.keys, job.size).await;
            let _ = job.reply.send(r);
        }
        return;
    }
    let mut keys: Vec<String> = jobs.iter().flat_map(|j| j.keys.iter().cloned()).collect();
    keys.sort_unstable();
    keys.dedup();
    let below = jobs.iter().map(|j| j.size).max().unwrap_or(0);
    match store.lookup(&keys, below).await {
        Ok(rows) => {
            for job in jobs {
                let mine = rows
                    .iter()
                    .filter(|r| r.index < job.size && job.keys.contains(&r.key))
                    .cloned()
                    .collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Shared(msg.clone())));
            }
        }
    }
}

async fn load_hashes(store: &Store, state: &mut TreeState, count: u64) -> Result<(), StoreError> {
    const CHUNK: u64 = 100_000;
    let mut from = state.tree.size();
    while from < count {
        let hashes = store.leaf_hashes(from, CHUNK.min(count - from)).await?;
        if hashes.is_empty() {
            return Err(StoreError::Corrupt(format!("leaf {from} missing")));
        }
        for h in hashes {
            state.push(h);
        }
        from = state.tree.size();
    }
    Ok(())
}

async fn load_builders(store: &Store) -> Result<HashMap<String, NixPublicKey>, StoreError> {
    let mut out = HashMap::new();
    for (name, key) in store.builders().await? {
        match key.parse::<NixPublicKey>() {
            Ok(k) if k.name() == name => {
                out.insert(name, k);
            }
            _ => tracing::error!(builder = %name, "stored builder key is invalid; ignoring it"),
        }
    }
    Ok(out)
}

async fn run_sequencer(inner: Arc<Inner>, mut rx: mpsc::Receiver<SeqJob>) {
    let mut must_reload = false;
    while let Some(first) = rx.recv().await {
        let mut n = first.entries.len();
        let mut jobs = vec![first];
        while n < inner.config.max_commit_entries {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.entries.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        if must_reload {
            match reload(&inner).await {
                Ok(()) => must_reload = false,
                Err(e) => {
                    inner.note_write(false);
                    tracing::error!(error = %e, "storage still failing; refusing submissions");
                    let why = format!("re-reading the log state failed: {e}");
                    for j in jobs {
                        let _ = j
                            .reply
                            .send(Err(LogError::Storage(StoreError::Failed(why.clone()))));
                    }
                    continue;
                }
            }
        }
        let started = Instant::now();
        let (first_index, new, replies) = {
            let st = inner.state.read().unwrap_or_else(poisoned);
            let first_index = st.tree.size();
            let mut next = first_index;
            let mut batch: HashMap<Hash, u64> = HashMap::new();
            let mut new: Vec<NewEntry> = Vec::with_capacity(n);
            let mut replies = Vec::with_capacity(jobs.len());
            for j in &jobs {
                let mut out = Vec::with_capacity(j.entries.len());
                for e in &j.entries {
                    let existing = st
                        .find(&e.leaf_hash)
                        .or_else(|| batch.get(&e.leaf_hash).copied());
                    match existing {
                        Some(index) => out.push(Assigned {
                            index,
                            leaf_hash: e.leaf_hash,
                            duplicate: true,
                        }),
                        None => {
                            batch.insert(e.leaf_hash, next);
                            new.push(NewEntry {
                                leaf: e.leaf.clone(),
                                leaf_hash: e.leaf_hash,
                                keys: e.keys.clone(),
                            });
                            out.push(Assigned {
                                index: next,
                                leaf_hash: e.leaf_hash,
                                duplicate: false,
                            });
                            next += 1;
                        }
                    }
                }
                replies.push(out);
            }
            (first_index, new, replies)
        };
        match inner.store.append(first_index, &new).await {
            Ok(()) => {
                if !new.is_empty() {
                    inner.note_write(true);
                }
                {
                    let mut st = inner.state.write().unwrap_or_else(poisoned);
                    for e in &new {
                        st.push(e.leaf_hash);
                    }
                    inner.metrics.tree_size.set(st.tree.size() as i64);
                }
                inner
                    .metrics
                    .sequenced_batch_entries
                    .observe(new.len() as f64);
                inner
                    .metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                if !new.is_empty() {
                    inner
                        .acked
                        .lock()
                        .unwrap_or_else(poisoned)
                        .push_back((first_index + new.len() as u64 - 1, Instant::now()));
                    inner.integrate.notify_one();
                }
                for (j, r) in jobs.into_iter().zip(replies) {
                    let _ = j.reply.send(Ok(r));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = new.len(), "append failed; will re-read the log state");
                inner.note_write(false);
                inner.metrics.storage_errors.inc();
                must_reload = true;
                let why = format!("append failed: {e}");
                for j in jobs {
                    let _ = j
                        .reply
                        .send(Err(LogError::Storage(StoreError::Failed(why.clone()))));
                }
            }
        }
    }
}

/// Re-reads the stored entry count after a failed write and extends the in-memory tree with
/// whatever did persist. A store that lost entries the tree already had is corrupt.
async fn reload(inner: &Inner) -> Result<(), StoreError> {
    let count = inner.store.entry_count().await?;
    let have = inner.state.read().unwrap_or_else(poisoned).tree.size();
    if count < have {
        return Err(StoreError::Corrupt(format!(
            "storage holds {count} entries but {have} were committed before"
        )));
    }
    if count > have {
        let hashes = inner.store.leaf_hashes(have, count - have).await?;
        let mut st = inner.state.write().unwrap_or_else(poisoned);
        if st.tree.size() == have {
            for h in hashes {
                st.push(h);
            }
        }
        inner.metrics.tree_size.set(st.tree.size() as i64);
        inner.integrate.notify_one();
    }
    tracing::info!(entries = count, "log state re-read from storage");
    Ok(())
}

async fn integrate_once(inner: &Inner) -> Result<(), LogError> {
    let (size, root) = {
        let st = inner.state.read().unwrap_or_else(poisoned);
        (st.tree.size(), st.tree.root())
    };
    if size <= inner.published.borrow().size() {
        return Ok(());
    }
    let cp = inner
        .signer
        .sign(size, root)
        .map_err(|e| LogError::Signing(e.to_string()))?;
    inner.store.put_checkpoint(size, cp.note()).await?;
    inner.note_write(true);
    let cp = if inner.witnesses.is_empty() {
        cp
    } else {
        let lines = inner
            .witnesses
            .cosign(&cp, |from, to| {
                inner
                    .state
                    .read()
                    .unwrap_or_else(poisoned)
                    .tree
                    .consistency_proof(from, to)
            })
            .await;
        inner.metrics.cosignatures.inc_by(lines.len() as u64);
        if lines.is_empty() {
            cp
        } else {
            let note = provenix_core::witness::add_signature_lines(cp.note(), &lines);
            inner.store.update_checkpoint_note(size, &note).await?;
            inner
                .verifier
                .verify(&note)
                .map_err(|e| LogError::Signing(format!("cosigned checkpoint: {e}")))?
        }
    };
    inner.published.send_replace(Arc::new(Published::new(cp)));
    inner.metrics.checkpoint_size.set(size as i64);
    inner.metrics.checkpoints_signed.inc();
    let now = Instant::now();
    let mut acked = inner.acked.lock().unwrap_or_else(poisoned);
    while let Some(&(last, at)) = acked.front() {
        if last >= size {
            break;
        }
        inner
            .metrics
            .integration_delay_seconds
            .observe(now.duration_since(at).as_secs_f64());
        acked.pop_front();
    }
    Ok(())
}

async fn run_integrator(inner: Arc<Inner>, stop: Arc<Notify>) {
    let mut last = Instant::now() - inner.config.integrate_interval;
    loop {
        tokio::select! {
            _ = inner.integrate.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.notified() => return,
        }
        let since = last.elapsed();
        if since < inner.config.integrate_interval {
            tokio::time::sleep(inner.config.integrate_interval - since).await;
        }
        last = Instant::now();
        if let Err(e) = integrate_once(&inner).await {
            if matches!(e, LogError::Storage(_)) {
                inner.note_write(false);
            }
            inner.metrics.storage_errors.inc();
            tracing::error!(error = %e, "integration failed; will retry");
        }
    }
}

async fn run_builder_refresh(inner: Arc<Inner>, stop: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(inner.config.builders_refresh) => {}
            _ = stop.notified() => return,
        }
        match load_builders(&inner.store).await {
            Ok(b) => *inner.builders.write().unwrap_or_else(poisoned) = Arc::new(b),
            Err(e) => tracing::warn!(error = %e, "could not re-read the builder allow-list"),
        }
    }
}
