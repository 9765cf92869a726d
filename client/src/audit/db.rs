//! The auditor's state: one SQLite database (`audit.db`) in the state directory, through sqlx.
//!
//! | table | holds |
//! |---|---|
//! | `logs` | per log (by verifier key): the last verified checkpoint note, its size, the right edge of the tree (the [`Frontier`]'s hashes), counters, and a `failed` record once the log was caught |
//! | `leaves` | every audited leaf hash, 256 per row (one C2SP tile), so a later fork can be located entry by entry |
//! | `claims` | the conflict index: key → (NAR hash, builder, log, first index), one row per distinct claim |
//! | `builders` | builder names, numbered (claims store the number) |
//! | `findings` | every finding reported, with the run that found it |
//!
//! A run's changes to one log are one transaction: a run that stops half-way (or finds the log
//! misbehaving) leaves the state exactly as the previous run left it. Only signed notes are
//! stored as checkpoints; the caller re-verifies them and re-derives the root from the stored
//! edge on every run, so an edited database cannot make a rewritten log look consistent. An
//! exclusive `flock` on `audit.lock` keeps two audits from sharing a state directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use provenix_core::merkle::{Frontier, Hash};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{
    ConnectOptions as _, Connection as _, QueryBuilder, Row as _, Sqlite, SqliteConnection,
};

/// Schema version (`PRAGMA user_version`; set by a literal statement in [`AuditDb::open`]).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logs (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    checkpoint TEXT,
    size       INTEGER NOT NULL DEFAULT 0,
    frontier   BLOB NOT NULL DEFAULT x'',
    failed     TEXT,
    valid      INTEGER NOT NULL DEFAULT 0,
    unknown    INTEGER NOT NULL DEFAULT 0,
    invalid    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS leaves (
    log    INTEGER NOT NULL,
    tile   INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (log, tile)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS builders (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS claims (
    key     TEXT NOT NULL,
    nar     BLOB NOT NULL,
    builder INTEGER NOT NULL,
    log     INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    PRIMARY KEY (key, nar, builder, log)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS findings (
    id     INTEGER PRIMARY KEY,
    log    INTEGER NOT NULL,
    at     TEXT NOT NULL,
    kind   TEXT NOT NULL,
    idx    INTEGER,
    key    TEXT,
    line   TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// Rows per multi-row INSERT (4 binds each; SQLite allows 32,766).
const INSERT_CHUNK: usize = 500;
/// Keys per `IN (…)` lookup.
const LOOKUP_CHUNK: usize = 500;

/// Why the state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("audit state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit state {0}: another `provenix audit` is using this state directory")]
    Locked(PathBuf),
    #[error("audit database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("audit database {path} is from another version (schema {found}, want {SCHEMA_VERSION}): use another --state")]
    Version { path: PathBuf, found: i64 },
    #[error("audit database holds inconsistent data: {0}")]
    Corrupt(String),
}

/// The open state directory (holding its lock).
pub struct AuditDb {
    pub conn: SqliteConnection,
    /// Builder numbers (a cache of the `builders` table).
    pub builders: Builders,
    path: PathBuf,
    _lock: std::fs::File,
}

/// Builder name ↔ number.
#[derive(Clone, Debug, Default)]
pub struct Builders {
    ids: HashMap<String, i64>,
    names: HashMap<i64, String>,
}

impl Builders {
    /// The builder's number (allocated on first use, inside the caller's transaction; restore a
    /// clone taken before the transaction if it is rolled back).
    pub async fn id(&mut self, conn: &mut SqliteConnection, name: &str) -> Result<i64, DbError> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        sqlx::query("INSERT INTO builders (name) VALUES (?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&mut *conn)
            .await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM builders WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
        self.ids.insert(name.to_owned(), id);
        self.names.insert(id, name.to_owned());
        Ok(id)
    }

    /// A builder's name by number.
    pub fn name(&self, id: i64) -> &str {
        self.names.get(&id).map_or("?", String::as_str)
    }
}

impl std::fmt::Debug for AuditDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditDb({})", self.path.display())
    }
}

/// One log's kept state.
#[derive(Clone, Debug, Default)]
pub struct LogRow {
    pub id: i64,
    /// The last verified checkpoint (signed note), if any run finished.
    pub checkpoint: Option<String>,
    pub size: u64,
    /// The stored right edge (size taken from `size`).
    pub frontier: Vec<Hash>,
    /// JSON of the failure record, once the log was caught misbehaving.
    pub failed: Option<String>,
    pub valid: u64,
    pub unknown: u64,
    pub invalid: u64,
}

impl LogRow {
    /// The stored right edge as a [`Frontier`].
    pub fn frontier(&self) -> Result<Frontier, DbError> {
        Frontier::from_parts(self.size, self.frontier.clone()).map_err(|_| {
            DbError::Corrupt(format!(
                "log {}: stored tree edge does not fit size {}",
                self.id, self.size
            ))
        })
    }
}

/// A stored claim: `key` claimed with NAR hash `nar` by `builder` in `log`, first at `idx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRow {
    pub key: String,
    pub nar: [u8; 32],
    pub builder: i64,
    pub log: i64,
    pub idx: u64,
}

/// A finding to store.
#[derive(Clone, Debug)]
pub struct FindingRow<'a> {
    pub log: i64,
    pub kind: &'a str,
    pub idx: Option<u64>,
    pub key: Option<&'a str>,
    pub line: &'a str,
    pub detail: &'a str,
}

fn i64_of(v: u64) -> Result<i64, DbError> {
    i64::try_from(v).map_err(|_| DbError::Corrupt(format!("{v} out of range")))
}

fn u64_of(v: i64) -> Result<u64, DbError> {
    u64::try_from(v).map_err(|_| DbError::Corrupt(format!("negative value {v}")))
}

fn hashes_of(blob: &[u8]) -> Result<Vec<Hash>, DbError> {
    if !blob.len().is_multiple_of(32) {
        return Err(DbError::Corrupt(
            "a hash list is not a multiple of 32 bytes".into(),
        ));
    }
    blob.chunks_exact(32)
        .map(|c| Hash::from_slice(c).map_err(|_| DbError::Corrupt("bad hash".into())))
        .collect()
}

/// Concatenated hashes.
pub fn blob_of(hashes: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hashes.len() * 32);
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
    out
}

impl AuditDb {
    /// Opens (creating) the state in `dir`, taking its lock.
    pub async fn open(dir: &Path) -> Result<Self, DbError> {
        let io = |source| DbError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("audit.lock"))
            .map_err(io)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| DbError::Locked(dir.to_owned()))?;
        let path = dir.join("audit.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("cache_size", "-262144")
            .pragma("mmap_size", "4294967296")
            .disable_statement_logging();
        let mut conn = opts.connect().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut conn)
            .await?;
        if version != 0 && version != SCHEMA_VERSION {
            return Err(DbError::Version {
                path,
                found: version,
            });
        }
        sqlx::raw_sql(SCHEMA).execute(&mut conn).await?;
        sqlx::raw_sql("PRAGMA user_version = 1")
            .execute(&mut conn)
            .await?;
        let rows = sqlx::query("SELECT id, name FROM builders")
            .fetch_all(&mut conn)
            .await?;
        let mut builders = Builders::default();
        for r in rows {
            let (id, name): (i64, String) = (r.try_get(0)?, r.try_get(1)?);
            builders.ids.insert(name.clone(), id);
            builders.names.insert(id, name);
        }
        Ok(Self {
            conn,
            builders,
            path,
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kept state of the log with verifier key `key` (a fresh row if never seen).
    pub async fn log_row(&mut self, key: &str) -> Result<LogRow, DbError> {
        sqlx::query("INSERT INTO logs (key) VALUES (?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .execute(&mut self.conn)
            .await?;
        let r = sqlx::query(
            "SELECT id, checkpoint, size, frontier, failed, valid, unknown, invalid FROM logs WHERE key = ?",
        )
        .bind(key)
        .fetch_one(&mut self.conn)
        .await?;
        Ok(LogRow {
            id: r.try_get(0)?,
            checkpoint: r.try_get(1)?,
            size: u64_of(r.try_get(2)?)?,
            frontier: hashes_of(&r.try_get::<Vec<u8>, _>(3)?)?,
            failed: r.try_get(4)?,
            valid: u64_of(r.try_get(5)?)?,
            unknown: u64_of(r.try_get(6)?)?,
            invalid: u64_of(r.try_get(7)?)?,
        })
    }

    /// How many findings were stored for `log` before.
    pub async fn finding_count(&mut self, log: i64) -> Result<u64, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM findings WHERE log = ?")
            .bind(log)
            .fetch_one(&mut self.conn)
            .await?;
        u64_of(n)
    }
}

/// Every log's verifier key by row id.
pub async fn log_keys(conn: &mut SqliteConnection) -> Result<Vec<(i64, String)>, DbError> {
    let rows = sqlx::query("SELECT id, key FROM logs")
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// The stored leaf hashes of one tile of `log` (empty if none).
pub async fn leaves_tile(
    conn: &mut SqliteConnection,
    log: i64,
    tile: u64,
) -> Result<Vec<Hash>, DbError> {
    let blob: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT hashes FROM leaves WHERE log = ? AND tile = ?")
            .bind(log)
            .bind(i64_of(tile)?)
            .fetch_optional(&mut *conn)
            .await?;
    hashes_of(&blob.unwrap_or_default())
}

/// Stores (replaces) the leaf hashes of one tile.
pub async fn put_leaves_tile(
    conn: &mut SqliteConnection,
    log: i64,
    tile: u64,
    hashes: &[Hash],
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO leaves (log, tile, hashes) VALUES (?, ?, ?) \
         ON CONFLICT (log, tile) DO UPDATE SET hashes = excluded.hashes",
    )
    .bind(log)
    .bind(i64_of(tile)?)
    .bind(blob_of(hashes))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every stored claim under any of `keys`.
pub async fn claims_for(
    conn: &mut SqliteConnection,
    keys: &[&str],
) -> Result<Vec<ClaimRow>, DbError> {
    let mut out = Vec::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT key, nar, builder, log, idx FROM claims WHERE key IN (",
        );
        let mut sep = q.separated(", ");
        for k in chunk {
            sep.push_bind(*k);
        }
        q.push(")");
        for r in q.build().fetch_all(&mut *conn).await? {
            let nar: Vec<u8> = r.try_get(1)?;
            out.push(ClaimRow {
                key: r.try_get(0)?,
                nar: nar
                    .try_into()
                    .map_err(|_| DbError::Corrupt("a claim's NAR hash is not 32 bytes".into()))?,
                builder: r.try_get(2)?,
                log: r.try_get(3)?,
                idx: u64_of(r.try_get(4)?)?,
            });
        }
    }
    Ok(out)
}

/// Inserts claims (a claim already stored keeps its first index).
pub async fn insert_claims(conn: &mut SqliteConnection, rows: &[ClaimRow]) -> Result<(), DbError> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO claims (key, nar, builder, log, idx) ",
        );
        let mut err = None;
        q.push_values(chunk, |mut b, r| match i64_of(r.idx) {
            Ok(idx) => {
                b.push_bind(r.key.as_str())
                    .push_bind(&r.nar[..])
                    .push_bind(r.builder)
                    .push_bind(r.log)
                    .push_bind(idx);
            }
            Err(e) => err = Some(e),
        });
        if let Some(e) = err {
            return Err(e);
        }
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Stores a finding.
pub async fn insert_finding(
    conn: &mut SqliteConnection,
    at: &str,
    f: &FindingRow<'_>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO findings (log, at, kind, idx, key, line, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(f.log)
    .bind(at)
    .bind(f.kind)
    .bind(f.idx.map(i64_of).transpose()?)
    .bind(f.key)
    .bind(f.line)
    .bind(f.detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes a log's new state after a verified run.
pub async fn save_log(conn: &mut SqliteConnection, row: &LogRow) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE logs SET checkpoint = ?, size = ?, frontier = ?, failed = ?, valid = ?, unknown = ?, invalid = ? WHERE id = ?",
    )
    .bind(&row.checkpoint)
    .bind(i64_of(row.size)?)
    .bind(blob_of(&row.frontier))
    .bind(&row.failed)
    .bind(i64_of(row.valid)?)
    .bind(i64_of(row.unknown)?)
    .bind(i64_of(row.invalid)?)
    .bind(row.id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks a log failed (the record is JSON), keeping everything else.
pub async fn mark_failed(
    conn: &mut SqliteConnection,
    log: i64,
    record: &str,
) -> Result<(), DbError> {
    sqlx::query("UPDATE logs SET failed = ? WHERE id = ? AND failed IS NULL")
        .bind(record)
        .bind(log)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Begins a transaction on `conn`.
pub async fn begin(conn: &mut SqliteConnection) -> Result<sqlx::Transaction<'_, Sqlite>, DbError> {
    Ok(conn.begin().await?)
}
