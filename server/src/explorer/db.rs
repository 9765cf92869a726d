//! The explorer's SQL: the indexer's batch writes and the pages' reads, over the log's own
//! database (tables of migration `0002_explorer`).
//!
//! One SQL text serves both backends: placeholders are `$N` (sqlx's SQLite driver binds `$N` by
//! number) and the statements stay within what SQLite and PostgreSQL share. Variable-length
//! lists are built with `QueryBuilder`, which binds every value. Page reads use SQLite's
//! read-only connections; the indexer's one write transaction per batch uses the writer.

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row};

use crate::store::{Pools, StoreError};

/// Metadata key of the indexer's progress: every leaf below this index is indexed.
pub const META_INDEXED: &str = "explorer_indexed";

/// Runs `$body` once per backend with `$c` bound to the pool (`read` or `write` side for
/// SQLite) and `$db` to the sqlx database type.
macro_rules! on_db {
    ($pools:expr, $side:ident, |$c:ident, $db:ident| $body:block) => {
        match $pools {
            Pools::Sqlite { $side: $c, .. } => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            Pools::Postgres($c) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

fn u64_of(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v)
        .map_err(|_| StoreError::Corrupt(format!("negative value {v} in the explorer index")))
}

fn i64_of(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range")))
}

fn hash32(v: &[u8]) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("explorer NAR hash is not 32 bytes".into()))
}

/// One indexed claim: what entry `idx` says about `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRow {
    pub key: String,
    pub idx: u64,
    pub output_path: String,
    pub nar_hash: [u8; 32],
    pub builder: String,
    pub built_locally: Option<bool>,
    pub derivation: Option<String>,
    pub drv_hash: Option<String>,
    /// 0: no quote, 1: a `tpm2-quote` byproduct is present, 2: it is malformed.
    pub attestation: u8,
    pub logged_at: i64,
}

const CLAIM_COLUMNS: &str = "key, idx, output_path, nar_hash, builder, built_locally, derivation, drv_hash, attestation, logged_at";

macro_rules! claim_of {
    ($r:expr) => {{
        let r = $r;
        let built: Option<i64> = r.try_get(5)?;
        let att: i64 = r.try_get(8)?;
        ClaimRow {
            key: r.try_get(0)?,
            idx: u64_of(r.try_get(1)?)?,
            output_path: r.try_get(2)?,
            nar_hash: hash32(&r.try_get::<Vec<u8>, _>(3)?)?,
            builder: r.try_get(4)?,
            built_locally: built.map(|b| b != 0),
            derivation: r.try_get(6)?,
            drv_hash: r.try_get(7)?,
            attestation: u8::try_from(att).unwrap_or(2),
            logged_at: r.try_get(9)?,
        }
    }};
}

/// Per-builder counts kept by the indexer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuilderStats {
    pub builder: String,
    pub entries: u64,
    pub outputs: u64,
    pub matched: u64,
    pub attested: u64,
    pub first_idx: u64,
    pub last_idx: u64,
    pub last_at: i64,
}

macro_rules! stats_of {
    ($r:expr) => {{
        let r = $r;
        BuilderStats {
            builder: r.try_get(0)?,
            entries: u64_of(r.try_get(1)?)?,
            outputs: u64_of(r.try_get(2)?)?,
            matched: u64_of(r.try_get(3)?)?,
            attested: u64_of(r.try_get(4)?)?,
            first_idx: u64_of(r.try_get(5)?)?,
            last_idx: u64_of(r.try_get(6)?)?,
            last_at: r.try_get(7)?,
        }
    }};
}

/// A disagreement: `key`'s claims differ since entry `idx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRow {
    pub key: String,
    pub idx: u64,
    pub logged_at: i64,
}

/// What one indexer batch writes, in one transaction.
#[derive(Debug, Default)]
pub struct BatchWrite {
    pub claims: Vec<ClaimRow>,
    /// Deltas of `entries, outputs, matched, attested`, with the batch's first/last index and
    /// time, per builder.
    pub builders: Vec<BuilderStats>,
    pub conflicts: Vec<ConflictRow>,
    /// The new progress (exclusive end of the indexed range).
    pub indexed: u64,
}

/// The indexer's progress.
pub async fn progress(pools: Pools<'_>) -> Result<u64, StoreError> {
    let v: Option<String> = on_db!(pools, read, |c, Db| {
        sqlx::query_scalar::<Db, String>("SELECT value FROM meta WHERE key = $1")
            .bind(META_INDEXED)
            .fetch_optional(c)
            .await?
    });
    match v {
        None => Ok(0),
        Some(s) => s
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("meta {META_INDEXED} = {s:?}"))),
    }
}

/// Checkpoints (size, created_at) larger than `size`, smallest first, at most `limit`.
pub async fn checkpoints_after(
    pools: Pools<'_>,
    size: u64,
    limit: u64,
) -> Result<Vec<(u64, i64)>, StoreError> {
    let (size, limit) = (i64_of(size)?, i64_of(limit)?);
    let rows: Vec<(i64, i64)> = on_db!(pools, read, |c, Db| {
        sqlx::query_as::<Db, (i64, i64)>(
            "SELECT size, created_at FROM checkpoints WHERE size > $1 ORDER BY size LIMIT $2",
        )
        .bind(size)
        .bind(limit)
        .fetch_all(c)
        .await?
    });
    rows.into_iter().map(|(s, t)| Ok((u64_of(s)?, t))).collect()
}

/// When the checkpoint of `size` was signed (epoch seconds), if recorded.
pub async fn checkpoint_created_at(pools: Pools<'_>, size: u64) -> Result<Option<i64>, StoreError> {
    let size = i64_of(size)?;
    Ok(on_db!(pools, read, |c, Db| {
        sqlx::query_scalar::<Db, i64>("SELECT created_at FROM checkpoints WHERE size = $1")
            .bind(size)
            .fetch_optional(c)
            .await?
    }))
}

/// Tree growth since `since` (epoch seconds): the last checkpoint size before it, and the
/// largest size signed in each minute (`created_at / 60`) from then on.
pub async fn growth_by_minute(
    pools: Pools<'_>,
    since: i64,
) -> Result<(u64, Vec<(i64, u64)>), StoreError> {
    let (base, rows): (Option<i64>, Vec<(i64, i64)>) = on_db!(pools, read, |c, Db| {
        let base = sqlx::query_scalar::<Db, i64>(
            "SELECT size FROM checkpoints WHERE created_at < $1 ORDER BY created_at DESC, size DESC LIMIT 1",
        )
        .bind(since)
        .fetch_optional(c)
        .await?;
        let rows = sqlx::query_as::<Db, (i64, i64)>(
            "SELECT created_at / 60, MAX(size) FROM checkpoints WHERE created_at >= $1 GROUP BY created_at / 60 ORDER BY 1",
        )
        .bind(since)
        .fetch_all(c)
        .await?;
        (base, rows)
    });
    let base = base.map(u64_of).transpose()?.unwrap_or(0);
    let rows = rows
        .into_iter()
        .map(|(m, s)| Ok((m, u64_of(s)?)))
        .collect::<Result<_, StoreError>>()?;
    Ok((base, rows))
}

/// Every claim under any of `keys` (the indexer's view of what is already known).
pub async fn claims_for_keys(pools: Pools<'_>, keys: &[&str]) -> Result<Vec<ClaimRow>, StoreError> {
    let mut out = Vec::new();
    for chunk in keys.chunks(1000) {
        let rows = on_db!(pools, read, |c, Db| {
            let mut q = QueryBuilder::<Db>::new(format!(
                "SELECT {CLAIM_COLUMNS} FROM explorer_claims WHERE key IN ("
            ));
            let mut sep = q.separated(", ");
            for k in chunk {
                sep.push_bind(k.to_string());
            }
            q.push(") ORDER BY key, idx");
            let rows = q.build().fetch_all(c).await?;
            rows.iter()
                .map(|r| Ok(claim_of!(r)))
                .collect::<Result<Vec<_>, StoreError>>()?
        });
        out.extend(rows);
    }
    Ok(out)
}

/// The disagreements recorded for any of `keys`.
pub async fn conflicts_for_keys(
    pools: Pools<'_>,
    keys: &[&str],
) -> Result<HashMap<String, ConflictRow>, StoreError> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(1000) {
        let rows: Vec<(String, i64, i64)> = on_db!(pools, read, |c, Db| {
            let mut q = QueryBuilder::<Db>::new(
                "SELECT key, idx, logged_at FROM explorer_conflicts WHERE key IN (",
            );
            let mut sep = q.separated(", ");
            for k in chunk {
                sep.push_bind(k.to_string());
            }
            q.push(")");
            q.build_query_as::<(String, i64, i64)>()
                .fetch_all(c)
                .await?
        });
        for (key, idx, logged_at) in rows {
            out.insert(
                key.clone(),
                ConflictRow {
                    key,
                    idx: u64_of(idx)?,
                    logged_at,
                },
            );
        }
    }
    Ok(out)
}

/// Writes one indexer batch atomically: claims (keyed, so re-inserting is a no-op), builder
/// count deltas, new disagreements, and the progress. Durable on return (same settings as the
/// log's own writes).
pub async fn write_batch(pools: Pools<'_>, b: &BatchWrite) -> Result<(), StoreError> {
    const CHUNK: usize = 500;
    let indexed = i64_of(b.indexed)?.to_string();
    on_db!(pools, write, |c, Db| {
        // Not sqlx's `Transaction` on SQLite: see `store::SqliteTx`.
        let mut tx = crate::store::BeginWrite::begin_write(c).await?;
        for chunk in b.claims.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<Db>::new(format!("INSERT INTO explorer_claims ({CLAIM_COLUMNS}) "));
            let mut err = None;
            q.push_values(chunk, |mut v, r| {
                let idx = i64_of(r.idx).unwrap_or_else(|e| {
                    err = Some(e);
                    0
                });
                v.push_bind(r.key.clone())
                    .push_bind(idx)
                    .push_bind(r.output_path.clone())
                    .push_bind(r.nar_hash.to_vec())
                    .push_bind(r.builder.clone())
                    .push_bind(r.built_locally.map(i64::from))
                    .push_bind(r.derivation.clone())
                    .push_bind(r.drv_hash.clone())
                    .push_bind(i64::from(r.attestation))
                    .push_bind(r.logged_at);
            });
            if let Some(e) = err {
                return Err(e);
            }
            q.push(" ON CONFLICT (key, idx) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        for s in &b.builders {
            sqlx::query::<Db>(
                "INSERT INTO explorer_builders (builder, entries, outputs, matched, attested, first_idx, last_idx, last_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (builder) DO UPDATE SET \
                   entries = explorer_builders.entries + excluded.entries, \
                   outputs = explorer_builders.outputs + excluded.outputs, \
                   matched = explorer_builders.matched + excluded.matched, \
                   attested = explorer_builders.attested + excluded.attested, \
                   first_idx = CASE WHEN excluded.first_idx < explorer_builders.first_idx THEN excluded.first_idx ELSE explorer_builders.first_idx END, \
                   last_idx = CASE WHEN excluded.last_idx > explorer_builders.last_idx THEN excluded.last_idx ELSE explorer_builders.last_idx END, \
                   last_at = CASE WHEN excluded.last_at > explorer_builders.last_at THEN excluded.last_at ELSE explorer_builders.last_at END",
            )
            .bind(s.builder.clone())
            .bind(i64_of(s.entries)?)
            .bind(i64_of(s.outputs)?)
            .bind(i64_of(s.matched)?)
            .bind(i64_of(s.attested)?)
            .bind(i64_of(s.first_idx)?)
            .bind(i64_of(s.last_idx)?)
            .bind(s.last_at)
            .execute(&mut *tx)
            .await?;
        }
        for k in &b.conflicts {
            sqlx::query::<Db>(
                "INSERT INTO explorer_conflicts (key, idx, logged_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
            )
            .bind(k.key.clone())
            .bind(i64_of(k.idx)?)
            .bind(k.logged_at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query::<Db>(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(META_INDEXED)
        .bind(indexed.clone())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// Every builder's counts, by name.
pub async fn all_builder_stats(pools: Pools<'_>) -> Result<Vec<BuilderStats>, StoreError> {
    Ok(on_db!(pools, read, |c, Db| {
        let rows = sqlx::query::<Db>(
            "SELECT builder, entries, outputs, matched, attested, first_idx, last_idx, last_at FROM explorer_builders ORDER BY builder",
        )
        .fetch_all(c)
        .await?;
        rows.iter()
            .map(|r| Ok(stats_of!(r)))
            .collect::<Result<Vec<_>, StoreError>>()?
    }))
}

/// One builder's counts.
pub async fn builder_stats(
    pools: Pools<'_>,
    name: &str,
) -> Result<Option<BuilderStats>, StoreError> {
    Ok(on_db!(pools, read, |c, Db| {
        let row = sqlx::query::<Db>(
            "SELECT builder, entries, outputs, matched, attested, first_idx, last_idx, last_at FROM explorer_builders WHERE builder = $1",
        )
        .bind(name.to_owned())
        .fetch_optional(c)
        .await?;
        match row {
            Some(r) => Some(stats_of!(&r)),
            None => None,
        }
    }))
}

/// Claims under `key` with index above `after` (if any), oldest first, at most `limit`.
pub async fn claims_for_key(
    pools: Pools<'_>,
    key: &str,
    after: Option<u64>,
    limit: u64,
) -> Result<Vec<ClaimRow>, StoreError> {
    let after = after.map(i64_of).transpose()?.unwrap_or(-1);
    let limit = i64_of(limit)?;
    Ok(on_db!(pools, read, |c, Db| {
        let rows = sqlx::query::<Db>(
            "SELECT key, idx, output_path, nar_hash, builder, built_locally, derivation, drv_hash, attestation, logged_at \
             FROM explorer_claims WHERE key = $1 AND idx > $2 ORDER BY idx LIMIT $3",
        )
        .bind(key.to_owned())
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await?;
        rows.iter()
            .map(|r| Ok(claim_of!(r)))
            .collect::<Result<Vec<_>, StoreError>>()?
    }))
}

/// One distinct claimed value under a key and the builders claiming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRow {
    pub key: String,
    pub output_path: String,
    pub nar_hash: [u8; 32],
    pub builder: String,
    /// How many entries of this builder claim this value (rebuilds).
    pub claims: u64,
    pub first_idx: u64,
}

/// For each of `keys`: every (output path, NAR hash, builder) claimed, with counts.
pub async fn values_for_keys(pools: Pools<'_>, keys: &[&str]) -> Result<Vec<ValueRow>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String, Vec<u8>, String, i64, i64)> = on_db!(pools, read, |c, Db| {
        let mut q = QueryBuilder::<Db>::new(
            "SELECT key, output_path, nar_hash, builder, COUNT(*), MIN(idx) FROM explorer_claims WHERE key IN (",
        );
        let mut sep = q.separated(", ");
        for k in keys {
            sep.push_bind(k.to_string());
        }
        q.push(") GROUP BY key, output_path, nar_hash, builder ORDER BY key, MIN(idx)");
        q.build_query_as::<(String, String, Vec<u8>, String, i64, i64)>()
            .fetch_all(c)
            .await?
    });
    rows.into_iter()
        .map(|(key, output_path, nar, builder, n, first)| {
            Ok(ValueRow {
                key,
                output_path,
                nar_hash: hash32(&nar)?,
                builder,
                claims: u64_of(n)?,
                first_idx: u64_of(first)?,
            })
        })
        .collect()
}

/// Keys whose claims name the derivation with hash part `drv_hash`.
pub async fn keys_for_derivation(
    pools: Pools<'_>,
    drv_hash: &str,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    let limit = i64_of(limit)?;
    Ok(on_db!(pools, read, |c, Db| {
        sqlx::query_scalar::<Db, String>(
            "SELECT DISTINCT key FROM explorer_claims WHERE drv_hash = $1 ORDER BY key LIMIT $2",
        )
        .bind(drv_hash.to_owned())
        .bind(limit)
        .fetch_all(c)
        .await?
    }))
}

/// A builder's most recent entries below `before` (if any): every claim of the newest `limit`
/// entries, newest first.
pub async fn builder_recent(
    pools: Pools<'_>,
    builder: &str,
    before: Option<u64>,
    limit: u64,
) -> Result<Vec<ClaimRow>, StoreError> {
    let before = before.map(i64_of).transpose()?.unwrap_or(i64::MAX);
    let limit = i64_of(limit)?;
    Ok(on_db!(pools, read, |c, Db| {
        let idxs: Vec<i64> = sqlx::query_scalar::<Db, i64>(
            "SELECT DISTINCT idx FROM explorer_claims WHERE builder = $1 AND idx < $2 ORDER BY idx DESC LIMIT $3",
        )
        .bind(builder.to_owned())
        .bind(before)
        .bind(limit)
        .fetch_all(c)
        .await?;
        match (idxs.last(), idxs.first()) {
            (Some(&lo), Some(&hi)) => {
                let rows = sqlx::query::<Db>(
                    "SELECT key, idx, output_path, nar_hash, builder, built_locally, derivation, drv_hash, attestation, logged_at \
                     FROM explorer_claims WHERE builder = $1 AND idx >= $2 AND idx <= $3 ORDER BY idx DESC, key",
                )
                .bind(builder.to_owned())
                .bind(lo)
                .bind(hi)
                .fetch_all(c)
                .await?;
                rows.iter()
                    .map(|r| Ok(claim_of!(r)))
                    .collect::<Result<Vec<_>, StoreError>>()?
            }
            _ => Vec::new(),
        }
    }))
}

/// Disagreements, newest first, strictly after the cursor `(idx, key)` in that order.
pub async fn conflicts_page(
    pools: Pools<'_>,
    before: Option<(u64, String)>,
    limit: u64,
) -> Result<Vec<ConflictRow>, StoreError> {
    let (bidx, bkey) = match before {
        Some((i, k)) => (i64_of(i)?, k),
        None => (i64::MAX, String::new()),
    };
    let limit = i64_of(limit)?;
    let rows: Vec<(String, i64, i64)> = on_db!(pools, read, |c, Db| {
        sqlx::query_as::<Db, (String, i64, i64)>(
            "SELECT key, idx, logged_at FROM explorer_conflicts \
             WHERE idx < $1 OR (idx = $1 AND key < $2) ORDER BY idx DESC, key DESC LIMIT $3",
        )
        .bind(bidx)
        .bind(bkey)
        .bind(limit)
        .fetch_all(c)
        .await?
    });
    rows.into_iter()
        .map(|(key, idx, logged_at)| {
            Ok(ConflictRow {
                key,
                idx: u64_of(idx)?,
                logged_at,
            })
        })
        .collect()
}

/// Number of keys with disagreeing claims.
pub async fn conflict_count(pools: Pools<'_>) -> Result<u64, StoreError> {
    let n: i64 = on_db!(pools, read, |c, Db| {
        sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM explorer_conflicts")
            .fetch_one(c)
            .await?
    });
    u64_of(n)
}

/// The set of keys among `keys` (helper for callers holding owned strings).
pub fn key_refs(keys: &HashSet<String>) -> Vec<&str> {
    let mut v: Vec<&str> = keys.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}
