//! Storage: one contract, two backends (SQLite in WAL mode, PostgreSQL), through sqlx.
//!
//! The log needs little from a database: an append-only table of leaves with their lookup keys,
//! the signed checkpoints, the builder allow-list and a few metadata values. Every method states
//! its durability contract. The sequencer is the only writer of `entries`; reads may run
//! concurrently (SQLite WAL readers never block the writer).
//!
//! Queries bind every value (no SQL is built from input). Multi-row inserts are assembled with
//! `QueryBuilder`, which also binds.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use provenix_core::merkle::Hash;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Postgres, QueryBuilder, Row, Sqlite, SqliteConnection};

/// A storage failure. The log maps every variant to `503 storage_unavailable` and, after a
/// failed write, reloads its state from storage (the write may or may not have persisted).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database holds inconsistent data: {0}")]
    Corrupt(String),
    /// An earlier operation failed (its error was logged where it happened).
    #[error("{0}")]
    Failed(String),
    #[error("injected fault ({0})")]
    Injected(&'static str),
    #[error("unsupported database URL {0:?} (want sqlite://PATH or postgres://...)")]
    BadUrl(String),
    /// A failure of a query run for several coalesced requests, as each of them sees it.
    #[error("{0}")]
    Shared(String),
}

/// A leaf to append: canonical bytes, their RFC 6962 leaf hash, and its lookup keys.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub leaf: Vec<u8>,
    pub leaf_hash: Hash,
    pub keys: Vec<String>,
}

/// A stored leaf found by key.
#[derive(Debug, Clone)]
pub struct KeyedEntry {
    pub key: String,
    pub index: u64,
    pub leaf: Vec<u8>,
}

/// Test hook for storage fault injection (Sunlight/Tessera style). Inert unless armed through
/// this API, which nothing reachable from the network calls.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next N appends fail before committing: nothing persists.
    pub fail_before_commit: AtomicU32,
    /// The next N appends commit, then report failure: everything persists.
    pub fail_after_commit: AtomicU32,
}

impl Faults {
    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[derive(Clone)]
enum Backend {
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
    /// `pool` for writes and every read but lookups; `lookups` for lookups by key, whose
    /// sessions always run the cached generic plan (see [`Store::open`]).
    Postgres {
        pool: PgPool,
        lookups: PgPool,
    },
}

/// The log's database.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    faults: Arc<Faults>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Sqlite { .. } => "Store(sqlite)",
            Backend::Postgres { .. } => "Store(postgres)",
        })
    }
}

const SQLITE_INSERT_CHUNK: usize = 250;

/// A write transaction on SQLite's single writer connection, begun and ended with plain
/// `BEGIN IMMEDIATE` / `COMMIT` / `ROLLBACK` statements rather than sqlx's `Transaction`.
///
/// Why: on some errors — `SQLITE_FULL` (a full disk) among them — SQLite rolls the whole
/// transaction back by itself. sqlx's `Transaction` does not notice: its `ROLLBACK` then fails,
/// its transaction depth stays at 1, the next `begin()` on that connection becomes a
/// `SAVEPOINT` and a later error's `ROLLBACK TO SAVEPOINT` leaves a real transaction open. From
/// then on every "commit" only released a savepoint: writes were acknowledged that no other
/// connection saw and a crash would have lost (the full-disk fault test found this). Here a
/// failed statement or `COMMIT` is followed by `ROLLBACK` (its error ignored: the transaction
/// may be gone already) and the connection is closed rather than returned to the pool, and a
/// `BEGIN IMMEDIATE` that fails (the connection is somehow inside a transaction) closes it too.
/// Closing a connection rolls back whatever it had open; the pool opens a fresh one.
pub(crate) struct SqliteTx {
    conn: PoolConnection<Sqlite>,
    done: bool,
}

impl SqliteTx {
    /// Begins a write transaction on a connection of `pool` (the writer pool).
    pub(crate) async fn begin(pool: &SqlitePool) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            conn.close_on_drop();
            return Err(e.into());
        }
        Ok(Self { conn, done: false })
    }

    /// Commits; on failure rolls back and retires the connection.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        match sqlx::query("COMMIT").execute(&mut *self.conn).await {
            Ok(_) => {
                self.done = true;
                Ok(())
            }
            Err(e) => {
                self.abort().await;
                Err(e.into())
            }
        }
    }

    /// Rolls back and retires the connection.
    pub(crate) async fn rollback(mut self) {
        self.abort().await;
    }

    async fn abort(&mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut *self.conn).await;
        self.done = true;
        self.conn.close_on_drop();
    }
}

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        // Dropped without commit (an error between statements): closing rolls back.
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

/// Begins a write transaction the same way on either backend (see [`SqliteTx`] for SQLite).
pub(crate) trait BeginWrite {
    type Tx;
    async fn begin_write(&self) -> Result<Self::Tx, StoreError>;
}

impl BeginWrite for SqlitePool {
    type Tx = SqliteTx;
    async fn begin_write(&self) -> Result<SqliteTx, StoreError> {
        SqliteTx::begin(self).await
    }
}

impl BeginWrite for PgPool {
    type Tx = sqlx::Transaction<'static, Postgres>;
    async fn begin_write(&self) -> Result<Self::Tx, StoreError> {
        Ok(self.begin().await?)
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn idx_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative index {v}")))
}

fn idx_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("index {v} out of range")))
}

fn hash_of(bytes: &[u8]) -> Result<Hash, StoreError> {
    Hash::from_slice(bytes).map_err(|_| StoreError::Corrupt("leaf hash is not 32 bytes".into()))
}

/// The connection pools behind a [`Store`], for derived indexes kept in the same database
/// (the explorer's indexer and pages). SQLite: `write` is the single writer connection the
/// sequencer also uses; `read` are read-only connections.
#[derive(Clone, Copy)]
pub(crate) enum Pools<'a> {
    Sqlite {
        write: &'a SqlitePool,
        read: &'a SqlitePool,
    },
    Postgres(&'a PgPool),
}

impl Store {
    /// The pools (see [`Pools`]).
    pub(crate) fn pools(&self) -> Pools<'_> {
        match &self.backend {
            Backend::Sqlite { write, read } => Pools::Sqlite { write, read },
            Backend::Postgres { pool: p, .. } => Pools::Postgres(p),
        }
    }

    /// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
    pub fn is_postgres_url(url: &str) -> bool {
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// The SQLite database inside a data directory (the embedded default).
    pub fn sqlite_url_in(dir: &Path) -> String {
        format!("sqlite://{}", dir.join("log.db").display())
    }

    /// Opens (creating if needed) the database at `url` and applies migrations.
    /// `read_pool` is the number of reader connections.
    pub async fn open(url: &str, read_pool: u32) -> Result<Self, StoreError> {
        let backend = if let Some(path) = url.strip_prefix("sqlite://") {
            // 16 KiB pages pack ~1 KB leaves densely (4 KiB pages waste up to a third of each
            // page on rows of 1-2 KB); only takes effect when the database is created.
            let base = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
                .page_size(16384)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .pragma("journal_size_limit", "67108864")
                .disable_statement_logging();
            // FULL: a commit is on disk when it returns (WAL + NORMAL would survive a process
            // crash but not a power loss, and we acknowledge only durable entries).
            let write_opts = base
                .clone()
                .create_if_missing(true)
                .synchronous(SqliteSynchronous::Full);
            // No ping before each acquire (sqlx's default): a SQLite file does not drop a
            // connection, and each ping is one more hand-off to the connection's worker thread.
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .test_before_acquire(false)
                .connect_with(write_opts)
                .await?;
            sqlx::migrate!("../migrations/sqlite").run(&write).await?;
            let read = SqlitePoolOptions::new()
                .max_connections(read_pool.max(1))
                .test_before_acquire(false)
                .connect_with(base.read_only(true))
                .await?;
            Backend::Sqlite { write, read }
        } else if Self::is_postgres_url(url) {
            // Lookups are single-row index probes; a parallel plan (which PostgreSQL picks for
            // `key = ANY($1)` while a growing table's statistics are stale) costs a worker start-up
            // per query: measured 41 ms vs sub-millisecond at 1,000,000 entries. Likewise JIT
            // compilation, which the same stale estimates trigger (cost above `jit_above_cost`):
            // LLVM compiling a plan for every lookup showed up in PostgreSQL's profile under load.
            let opts = PgConnectOptions::from_str(url)?
                .options([("max_parallel_workers_per_gather", "0"), ("jit", "off")])
                .disable_statement_logging();
            // No ping before each acquire (sqlx's default): it doubled the round trips, and the
            // database's work, of every lookup. A connection that broke (the server restarted)
            // fails its next query instead, is dropped by the pool, and the request gets a 503.
            let pool = PgPoolOptions::new()
                .max_connections(read_pool.max(1) + 2)
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
                .connect_with(opts.clone())
                .await?;
            sqlx::migrate!("../migrations/postgres").run(&pool).await?;
            // Lookups by key get connections of their own that always use the prepared
            // statement's generic plan. PostgreSQL otherwise re-plans `key = ANY($1)` on every
            // execution (its custom plan for the given keys looks cheaper than the generic one,
            // which is the same index probe): planning was a quarter of PostgreSQL's CPU under
            // lookup load, and forcing the generic plan raised lookups/s by ~29 % (issue 2).
            // The other queries keep the default, which re-plans when the values matter.
            let lookups = PgPoolOptions::new()
                .max_connections(read_pool.max(1))
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
                .connect_with(opts.options([("plan_cache_mode", "force_generic_plan")]))
                .await?;
            Backend::Postgres { pool, lookups }
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        Ok(Self {
            backend,
            faults: Arc::new(Faults::default()),
        })
    }

    /// The fault-injection hook (tests).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Which backend this is ("sqlite" or "postgres").
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// Closes all connections.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres { pool, lookups } => {
                lookups.close().await;
                pool.close().await
            }
        }
    }

    /// A trivial query through the read side (health checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite { read, .. } => {
                sqlx::query("SELECT 1").execute(read).await?;
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query("SELECT 1").execute(p).await?;
            }
        }
        Ok(())
    }

    /// A metadata value.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = match &self.backend {
            Backend::Sqlite { write, .. } => {
                sqlx::query_scalar::<Sqlite, String>("SELECT value FROM meta WHERE key = ?")
                    .bind(key)
                    .fetch_optional(write)
                    .await?
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query_scalar::<Postgres, String>("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(p)
                    .await?
            }
        };
        Ok(row)
    }

    /// Sets `key` to `value` unless it is already set; returns the value now stored.
    /// Durable on return.
    pub async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        match &self.backend {
            Backend::Sqlite { write, .. } => {
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(write)
                .await?;
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(p)
                .await?;
            }
        }
        self.meta(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("meta {key} vanished")))
    }

    /// Appends leaves `first, first+1, …` with their keys in one transaction.
    ///
    /// Durability: when this returns `Ok`, every row is committed (SQLite `synchronous=FULL`,
    /// PostgreSQL default `synchronous_commit=on`). On `Err` the rows may or may not have been
    /// committed; the caller must re-read the log's state before appending again.
    pub async fn append(&self, first: u64, entries: &[NewEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let first = idx_i64(first)?;
        match &self.backend {
            Backend::Sqlite { write, .. } => {
                let mut tx = SqliteTx::begin(write).await?;
                for (c, chunk) in entries.chunks(SQLITE_INSERT_CHUNK).enumerate() {
                    let base = first + (c * SQLITE_INSERT_CHUNK) as i64;
                    let mut q =
                        QueryBuilder::<Sqlite>::new("INSERT INTO entries (idx, leaf_hash, data) ");
                    q.push_values(chunk.iter().enumerate(), |mut b, (i, e)| {
                        b.push_bind(base + i as i64)
                            .push_bind(&e.leaf_hash.0[..])
                            .push_bind(&e.leaf[..]);
                    });
                    q.build().execute(&mut *tx).await?;
                    let keys: Vec<(i64, &String)> = chunk
                        .iter()
                        .enumerate()
                        .flat_map(|(i, e)| e.keys.iter().map(move |k| (base + i as i64, k)))
                        .collect();
                    for kc in keys.chunks(SQLITE_INSERT_CHUNK * 2) {
                        let mut q = QueryBuilder::<Sqlite>::new(
                            "INSERT OR IGNORE INTO entry_keys (key, idx) ",
                        );
                        q.push_values(kc, |mut b, (idx, key)| {
                            b.push_bind(key.as_str()).push_bind(*idx);
                        });
                        q.build().execute(&mut *tx).await?;
                    }
                }
                if Faults::take(&self.faults.fail_before_commit) {
                    tx.rollback().await;
                    return Err(StoreError::Injected("before commit"));
                }
                tx.commit().await?;
            }
            Backend::Postgres { pool: p, .. } => {
                let idxs: Vec<i64> = (0..entries.len() as i64).map(|i| first + i).collect();
                let hashes: Vec<&[u8]> = entries.iter().map(|e| &e.leaf_hash.0[..]).collect();
                let datas: Vec<&[u8]> = entries.iter().map(|e| &e.leaf[..]).collect();
                let (mut kk, mut ki): (Vec<&str>, Vec<i64>) = (Vec::new(), Vec::new());
                for (i, e) in entries.iter().enumerate() {
                    for k in &e.keys {
                        kk.push(k);
                        ki.push(first + i as i64);
                    }
                }
                let mut tx = p.begin().await?;
                sqlx::query(
                    "INSERT INTO entries (idx, leaf_hash, data) \
                     SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::BYTEA[])",
                )
                .bind(&idxs)
                .bind(&hashes)
                .bind(&datas)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO entry_keys (key, idx) \
                     SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[]) ON CONFLICT DO NOTHING",
                )
                .bind(&kk)
                .bind(&ki)
                .execute(&mut *tx)
                .await?;
                if Faults::take(&self.faults.fail_before_commit) {
                    tx.rollback().await?;
                    return Err(StoreError::Injected("before commit"));
                }
                tx.commit().await?;
            }
        }
        if Faults::take(&self.faults.fail_after_commit) {
            return Err(StoreError::Injected("after commit"));
        }
        Ok(())
    }

    /// Number of leaves stored, after checking they are contiguous from 0.
    pub async fn entry_count(&self) -> Result<u64, StoreError> {
        let (count, max): (i64, Option<i64>) = match &self.backend {
            Backend::Sqlite { write, .. } => {
                let r = sqlx::query("SELECT COUNT(*), MAX(idx) FROM entries")
                    .fetch_one(write)
                    .await?;
                (r.try_get(0)?, r.try_get(1)?)
            }
            Backend::Postgres { pool: p, .. } => {
                let r = sqlx::query("SELECT COUNT(*), MAX(idx) FROM entries")
                    .fetch_one(p)
                    .await?;
                (r.try_get(0)?, r.try_get(1)?)
            }
        };
        let expected = max.map_or(0, |m| m + 1);
        if count != expected {
            return Err(StoreError::Corrupt(format!(
                "{count} entries stored but the highest index is {}",
                expected - 1
            )));
        }
        idx_u64(count)
    }

    /// Leaf hashes of `[from, from+limit)` in index order.
    pub async fn leaf_hashes(&self, from: u64, limit: u64) -> Result<Vec<Hash>, StoreError> {
        let (from, to) = (idx_i64(from)?, idx_i64(from.saturating_add(limit))?);
        let rows: Vec<Vec<u8>> = match &self.backend {
            Backend::Sqlite { write, .. } => {
                sqlx::query_scalar::<Sqlite, Vec<u8>>(
                    "SELECT leaf_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                )
                .bind(from)
                .bind(to)
                .fetch_all(write)
                .await?
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query_scalar::<Postgres, Vec<u8>>(
                    "SELECT leaf_hash FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                )
                .bind(from)
                .bind(to)
                .fetch_all(p)
                .await?
            }
        };
        rows.iter().map(|r| hash_of(r)).collect()
    }

    /// Leaf bytes of `[from, to)` in index order (entry bundles, audits).
    pub async fn leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let (from, to) = (idx_i64(from)?, idx_i64(to)?);
        Ok(match &self.backend {
            Backend::Sqlite { read, .. } => {
                sqlx::query_scalar::<Sqlite, Vec<u8>>(
                    "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                )
                .bind(from)
                .bind(to)
                .fetch_all(read)
                .await?
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query_scalar::<Postgres, Vec<u8>>(
                    "SELECT data FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                )
                .bind(from)
                .bind(to)
                .fetch_all(p)
                .await?
            }
        })
    }

    /// Leaf bytes at `index`.
    pub async fn leaf(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let index = idx_i64(index)?;
        Ok(match &self.backend {
            Backend::Sqlite { read, .. } => {
                sqlx::query_scalar::<Sqlite, Vec<u8>>("SELECT data FROM entries WHERE idx = ?")
                    .bind(index)
                    .fetch_optional(read)
                    .await?
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query_scalar::<Postgres, Vec<u8>>("SELECT data FROM entries WHERE idx = $1")
                    .bind(index)
                    .fetch_optional(p)
                    .await?
            }
        })
    }

    /// How many read queries can run at once (the reader connections).
    pub fn readers(&self) -> usize {
        match &self.backend {
            Backend::Sqlite { read, .. } => read.options().get_max_connections() as usize,
            // Lookups have a pool of their own (the other pool also serves the writers).
            Backend::Postgres { lookups, .. } => lookups.options().get_max_connections() as usize,
        }
    }

    /// Every stored leaf indexed under one of `keys` with index below `below`, ordered by key
    /// then index.
    pub async fn lookup(&self, keys: &[String], below: u64) -> Result<Vec<KeyedEntry>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let below = idx_i64(below)?;
        let rows = match &self.backend {
            Backend::Sqlite { read, .. } => {
                if let [key] = keys {
                    sqlx::query(
                        "SELECT k.key, k.idx, e.data FROM entry_keys k JOIN entries e ON e.idx = k.idx \
                         WHERE k.key = ? AND k.idx < ? ORDER BY k.idx",
                    )
                    .bind(key)
                    .bind(below)
                    .fetch_all(read)
                    .await?
                } else {
                    let mut q = QueryBuilder::<Sqlite>::new(
                        "SELECT k.key, k.idx, e.data FROM entry_keys k JOIN entries e ON e.idx = k.idx WHERE k.idx < ",
                    );
                    q.push_bind(below).push(" AND k.key IN (");
                    let mut sep = q.separated(", ");
                    for k in keys {
                        sep.push_bind(k.as_str());
                    }
                    q.push(") ORDER BY k.key, k.idx");
                    q.build().fetch_all(read).await?
                }
            }
            Backend::Postgres { lookups: p, .. } => {
                let pg_rows = if let [key] = keys {
                    sqlx::query(
                        "SELECT k.key, k.idx, e.data FROM entry_keys k JOIN entries e ON e.idx = k.idx \
                         WHERE k.key = $1 AND k.idx < $2 ORDER BY k.idx",
                    )
                    .bind(key)
                    .bind(below)
                    .fetch_all(p)
                    .await?
                } else {
                    sqlx::query(
                        "SELECT k.key, k.idx, e.data FROM entry_keys k JOIN entries e ON e.idx = k.idx \
                         WHERE k.key = ANY($1) AND k.idx < $2 ORDER BY k.key, k.idx",
                    )
                    .bind(keys)
                    .bind(below)
                    .fetch_all(p)
                    .await?
                };
                return pg_rows
                    .iter()
                    .map(|r| {
                        Ok(KeyedEntry {
                            key: r.try_get(0)?,
                            index: idx_u64(r.try_get(1)?)?,
                            leaf: r.try_get(2)?,
                        })
                    })
                    .collect();
            }
        };
        rows.iter()
            .map(|r| {
                Ok(KeyedEntry {
                    key: r.try_get(0)?,
                    index: idx_u64(r.try_get(1)?)?,
                    leaf: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Records a signed checkpoint. Durable on return. Re-recording a size is a no-op.
    pub async fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), StoreError> {
        let size = idx_i64(size)?;
        match &self.backend {
            Backend::Sqlite { write, .. } => {
                // In a transaction of its own: a published checkpoint must be durable, and
                // `BEGIN IMMEDIATE` fails on a connection left inside a transaction.
                let mut tx = SqliteTx::begin(write).await?;
                sqlx::query("INSERT INTO checkpoints (size, note, created_at) VALUES (?, ?, ?) ON CONFLICT (size) DO NOTHING")
                    .bind(size)
                    .bind(note)
                    .bind(now_secs())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query("INSERT INTO checkpoints (size, note, created_at) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING")
                    .bind(size)
                    .bind(note)
                    .bind(now_secs())
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// Replaces a recorded checkpoint's note with the same checkpoint carrying more signatures
    /// (witness cosignatures). Durable on return.
    pub async fn update_checkpoint_note(&self, size: u64, note: &str) -> Result<(), StoreError> {
        let size = idx_i64(size)?;
        match &self.backend {
            Backend::Sqlite { write, .. } => {
                let mut tx = SqliteTx::begin(write).await?;
                sqlx::query("UPDATE checkpoints SET note = ? WHERE size = ?")
                    .bind(note)
                    .bind(size)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query("UPDATE checkpoints SET note = $1 WHERE size = $2")
                    .bind(note)
                    .bind(size)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// The largest checkpoint recorded, as `(size, note)`.
    pub async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let row: Option<(i64, String)> = match &self.backend {
            Backend::Sqlite { write, .. } => {
                sqlx::query_as("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
                    .fetch_optional(write)
                    .await?
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query_as("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
                    .fetch_optional(p)
                    .await?
            }
        };
        row.map(|(s, n)| Ok((idx_u64(s)?, n))).transpose()
    }

    /// Every recorded checkpoint, smallest first.
    pub async fn checkpoints(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let rows: Vec<(i64, String)> = match &self.backend {
            Backend::Sqlite { read, .. } => {
                sqlx::query_as("SELECT size, note FROM checkpoints ORDER BY size")
                    .fetch_all(read)
                    .await?
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query_as("SELECT size, note FROM checkpoints ORDER BY size")
                    .fetch_all(p)
                    .await?
            }
        };
        rows.into_iter()
            .map(|(s, n)| Ok((idx_u64(s)?, n)))
            .collect()
    }

    /// The builder allow-list as `(name, Nix public key)`, by name.
    pub async fn builders(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite { read, .. } => {
                sqlx::query_as("SELECT name, key FROM builders ORDER BY name")
                    .fetch_all(read)
                    .await?
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query_as("SELECT name, key FROM builders ORDER BY name")
                    .fetch_all(p)
                    .await?
            }
        })
    }

    /// Adds or replaces a builder key. Durable on return. Returns whether the name was new.
    pub async fn add_builder(&self, name: &str, key: &str) -> Result<bool, StoreError> {
        let existed = self.builders().await?.iter().any(|(n, _)| n == name);
        match &self.backend {
            Backend::Sqlite { write, .. } => {
                sqlx::query("INSERT INTO builders (name, key, added_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET key = excluded.key, added_at = excluded.added_at")
                    .bind(name)
                    .bind(key)
                    .bind(now_secs())
                    .execute(write)
                    .await?;
            }
            Backend::Postgres { pool: p, .. } => {
                sqlx::query("INSERT INTO builders (name, key, added_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET key = excluded.key, added_at = excluded.added_at")
                    .bind(name)
                    .bind(key)
                    .bind(now_secs())
                    .execute(p)
                    .await?;
            }
        }
        Ok(!existed)
    }

    /// Removes a builder. Durable on return. Returns whether it was present.
    pub async fn remove_builder(&self, name: &str) -> Result<bool, StoreError> {
        let n = match &self.backend {
            Backend::Sqlite { write, .. } => sqlx::query("DELETE FROM builders WHERE name = ?")
                .bind(name)
                .execute(write)
                .await?
                .rows_affected(),
            Backend::Postgres { pool: p, .. } => {
                sqlx::query("DELETE FROM builders WHERE name = $1")
                    .bind(name)
                    .execute(p)
                    .await?
                    .rows_affected()
            }
        };
        Ok(n > 0)
    }

    /// Bytes the database occupies on disk (SQLite: file + WAL; PostgreSQL: the database).
    pub async fn disk_bytes(&self, sqlite_file: Option<&Path>) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite { .. } => {
                let Some(f) = sqlite_file else { return Ok(0) };
                let mut total = 0;
                for suffix in ["", "-wal", "-shm"] {
                    let p = format!("{}{suffix}", f.display());
                    total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                }
                Ok(total)
            }
            Backend::Postgres { pool: p, .. } => {
                let n: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(p)
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn entry(i: u64) -> NewEntry {
        let leaf = format!("{{\"leaf\":{i},\"pad\":\"{}\"}}", "x".repeat(1000)).into_bytes();
        NewEntry {
            leaf_hash: provenix_core::merkle::leaf_hash(&leaf),
            leaf,
            keys: vec![format!("k{i}")],
        }
    }

    /// Entries another connection sees (what survives this process).
    async fn durable(path: &Path) -> u64 {
        Store::open(&Store::sqlite_url_in(path), 1)
            .await
            .unwrap()
            .entry_count()
            .await
            .unwrap()
    }

    async fn limit_pages(store: &Store, extra: i64) {
        let Backend::Sqlite { write, .. } = &store.backend else {
            panic!("sqlite")
        };
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(write)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {}",
            pages + extra
        )))
        .execute(write)
        .await
        .unwrap();
    }

    /// A database that fills up (SQLITE_FULL, here through `max_page_count`) makes SQLite roll
    /// the transaction back by itself. Every append that returned `Ok` must still be visible to
    /// another connection, before and after the failure, and appends work again once there is
    /// room (the writer connection is replaced).
    #[tokio::test]
    async fn a_full_database_never_acknowledges_what_it_did_not_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url_in(dir.path()), 1)
            .await
            .unwrap();
        let mut acked = 0u64;
        let mut failures = 0;
        for round in 0..2 {
            limit_pages(&store, 6).await;
            for _ in 0..200 {
                let first = store.entry_count().await.unwrap();
                assert_eq!(first, acked, "round {round}");
                let batch: Vec<NewEntry> = (first..first + 20).map(entry).collect();
                match store.append(first, &batch).await {
                    Ok(()) => acked += 20,
                    Err(_) => {
                        failures += 1;
                        break;
                    }
                }
            }
            assert_eq!(durable(dir.path()).await, acked, "round {round}");
            // Room again (the new writer connection has no page limit).
            let first = store.entry_count().await.unwrap();
            let batch: Vec<NewEntry> = (first..first + 20).map(entry).collect();
            store.append(first, &batch).await.unwrap();
            acked += 20;
            assert_eq!(durable(dir.path()).await, acked, "round {round}");
            store.put_checkpoint(acked, "note").await.unwrap();
            assert_eq!(
                Store::open(&Store::sqlite_url_in(dir.path()), 1)
                    .await
                    .unwrap()
                    .latest_checkpoint()
                    .await
                    .unwrap()
                    .map(|(s, _)| s),
                Some(acked)
            );
        }
        assert_eq!(failures, 2, "the page limit never filled the database");
    }
}
