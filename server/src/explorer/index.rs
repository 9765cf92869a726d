//! The indexer: follows the published checkpoint and turns newly integrated leaves into the
//! explorer's derived index (claims, per-builder counts, disagreements).
//!
//! It runs beside the log, never inside it: it reads leaves from the store's read side, parses
//! them off the async threads, and writes one transaction per batch. Progress (`meta`
//! `explorer_indexed`) is written in the same transaction as the rows, so a crash at any point
//! leaves the index at a batch boundary; claim rows are keyed by `(key, idx)` and entries
//! already present are skipped when counting, so indexing a range again changes nothing.
//!
//! Everything indexed is as the builder claimed it: the log checked the signature when it took
//! the entry, nothing else. A leaf that does not parse as an entry is skipped (and logged).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use provenix_core::entry::{Entry, LookupKey};
use provenix_core::tpm::QuoteBundle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::db::{self, BatchWrite, BuilderStats, ClaimRow, ConflictRow};
use crate::log::Log;
use crate::store::StoreError;

/// Most leaves indexed in one transaction.
pub const DEFAULT_BATCH: u64 = 1000;

/// A running indexer task; stop it with [`Indexer::stop`].
#[derive(Debug)]
pub struct Indexer {
    stop: Arc<Stop>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Stop {
    flag: AtomicBool,
    notify: Notify,
}

impl Indexer {
    /// Starts following `log`'s published checkpoint.
    pub fn start(log: Log) -> Self {
        let stop = Arc::new(Stop::default());
        let task = tokio::spawn(run(log, stop.clone()));
        Self { stop, task }
    }

    /// Stops the task after the batch in progress (a batch is one transaction).
    pub async fn stop(self) {
        self.stop.flag.store(true, Ordering::SeqCst);
        self.stop.notify.notify_one();
        let _ = self.task.await;
    }
}

async fn run(log: Log, stop: Arc<Stop>) {
    let mut failing = false;
    while !stop.flag.load(Ordering::SeqCst) {
        match index_batch(&log, DEFAULT_BATCH).await {
            Ok(Some(_)) => failing = false,
            Ok(None) => {
                failing = false;
                let next = db::progress(log.store().pools()).await.unwrap_or(0);
                tokio::select! {
                    _ = log.wait_integrated(next, Duration::from_secs(1)) => {}
                    _ = stop.notify.notified() => {}
                }
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "explorer indexer failed; will retry every second");
                }
                failing = true;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.notify.notified() => {}
                }
            }
        }
    }
}

/// How many leaves (from index 0) the explorer has indexed.
pub async fn indexed(log: &Log) -> Result<u64, StoreError> {
    db::progress(log.store().pools()).await
}

/// Indexes until the index covers the published checkpoint as it is now (tests, benchmarks).
pub async fn catch_up(log: &Log) -> Result<u64, StoreError> {
    let target = log.checkpoint().size();
    loop {
        match index_batch(log, DEFAULT_BATCH).await? {
            Some(n) if n < target => {}
            Some(n) => return Ok(n),
            None => return db::progress(log.store().pools()).await,
        }
    }
}

/// One claim of a parsed leaf, before it gets its time.
struct Parsed {
    idx: u64,
    builder: String,
    attestation: u8,
    claims: Vec<ClaimRow>,
}

fn parse_leaf(idx: u64, leaf: &[u8], logged_at: i64) -> Option<Parsed> {
    let entry = match Entry::parse(leaf) {
        Ok(e) => e,
        Err(e) => {
            // TPM enrollment records are the log's own; they have no claims to index.
            if provenix_core::enrollment::EnrollmentRecord::parse(leaf).is_err() {
                tracing::warn!(index = idx, error = %e, "explorer: leaf is not a provenance entry; skipped");
            }
            return None;
        }
    };
    let builder = entry.keyid().to_owned();
    let attestation = match QuoteBundle::from_entry(&entry) {
        Ok(None) => 0,
        Ok(Some(_)) => 1,
        Err(_) => 2,
    };
    let st = entry.statement();
    let built_locally = st.built_locally();
    let derivation = st.derivation().map(str::to_owned);
    let drv_hash = derivation
        .as_deref()
        .and_then(|d| d.parse::<provenix_core::nix::StorePath>().ok())
        .map(|p| p.hash().to_string());
    let mut claims = Vec::new();
    for key in entry.keys() {
        let out = match key {
            LookupKey::Path(h) => entry.outputs().iter().find(|o| o.path.hash() == *h),
            LookupKey::Realisation(id) => {
                let name = id.rsplit_once('!').map(|(_, n)| n);
                entry
                    .outputs()
                    .iter()
                    .find(|o| o.output.as_deref() == name)
                    .or(match entry.outputs() {
                        [only] => Some(only),
                        _ => None,
                    })
            }
            // Enrollment records' key; provenance entries never carry one.
            LookupKey::Builder(_) => None,
        };
        let Some(out) = out else { continue };
        claims.push(ClaimRow {
            key: key.to_string(),
            idx,
            output_path: out.path.to_string(),
            nar_hash: *out.nar_hash.as_bytes(),
            builder: builder.clone(),
            built_locally,
            derivation: derivation.clone(),
            drv_hash: drv_hash.clone(),
            attestation,
            logged_at,
        });
    }
    Some(Parsed {
        idx,
        builder,
        attestation,
        claims,
    })
}

/// A claimed value under a key: (output path, NAR hash).
type Value = (String, [u8; 32]);

/// Indexes the next batch of at most `max` leaves covered by the published checkpoint.
/// Returns the new progress, or `None` when there was nothing to index.
pub async fn index_batch(log: &Log, max: u64) -> Result<Option<u64>, StoreError> {
    let pools = log.store().pools();
    let from = db::progress(pools).await?;
    let size = log.checkpoint().size();
    if from >= size {
        return Ok(None);
    }
    let mut to = size.min(from.saturating_add(max.max(1)));
    // When each leaf was logged: the first checkpoint covering it.
    let cps = db::checkpoints_after(pools, from, 4096).await?;
    let Some(&(last, _)) = cps.last() else {
        return Err(StoreError::Corrupt(format!(
            "no stored checkpoint covers leaf {from}"
        )));
    };
    to = to.min(last);
    let leaves = log.store().leaves(from, to).await?;
    if leaves.len() as u64 != to - from {
        return Err(StoreError::Corrupt(format!(
            "leaves {from}..{to}: got {}",
            leaves.len()
        )));
    }
    let parsed: Vec<Parsed> = tokio::task::spawn_blocking(move || {
        let mut cp = cps.iter().peekable();
        leaves
            .iter()
            .enumerate()
            .filter_map(|(i, leaf)| {
                let idx = from + i as u64;
                while cp.peek().is_some_and(|(s, _)| *s <= idx) {
                    cp.next();
                }
                let at = cp.peek().map_or(0, |(_, t)| *t);
                parse_leaf(idx, leaf, at)
            })
            .collect()
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("explorer parse task: {e}")))?;

    let keys: HashSet<String> = parsed
        .iter()
        .flat_map(|p| p.claims.iter().map(|c| c.key.clone()))
        .collect();
    let key_list = db::key_refs(&keys);
    let existing = db::claims_for_keys(pools, &key_list).await?;
    let mut conflicted: HashSet<String> = db::conflicts_for_keys(pools, &key_list)
        .await?
        .into_keys()
        .collect();
    let write = plan(from, to, &parsed, &existing, &mut conflicted);
    db::write_batch(pools, &write).await?;
    Ok(Some(to))
}

/// Computes a batch's rows and count deltas from the parsed leaves and what is already
/// indexed under their keys. Leaves already indexed (a repeated range) add nothing.
fn plan(
    from: u64,
    to: u64,
    parsed: &[Parsed],
    existing: &[ClaimRow],
    conflicted: &mut HashSet<String>,
) -> BatchWrite {
    // key → distinct (value, builder) claimed so far.
    let mut known: HashMap<&str, Vec<(Value, &str)>> = HashMap::new();
    let mut done: HashSet<u64> = HashSet::new();
    for c in existing {
        if (from..to).contains(&c.idx) {
            done.insert(c.idx);
        }
        let v = known.entry(c.key.as_str()).or_default();
        let item = ((c.output_path.clone(), c.nar_hash), c.builder.as_str());
        if !v.contains(&item) {
            v.push(item);
        }
    }
    let mut stats: HashMap<String, BuilderStats> = HashMap::new();
    let mut out = BatchWrite {
        indexed: to,
        ..BatchWrite::default()
    };
    for p in parsed {
        if done.contains(&p.idx) {
            continue;
        }
        let logged_at = p.claims.first().map_or(0, |c| c.logged_at);
        {
            let s = stats
                .entry(p.builder.clone())
                .or_insert_with(|| BuilderStats {
                    builder: p.builder.clone(),
                    first_idx: p.idx,
                    ..BuilderStats::default()
                });
            s.entries += 1;
            s.attested += u64::from(p.attestation == 1);
            s.last_idx = p.idx;
            s.last_at = s.last_at.max(logged_at);
        }
        for c in &p.claims {
            let value: Value = (c.output_path.clone(), c.nar_hash);
            let vals = known.entry(c.key.as_str()).or_default();
            if !vals.iter().any(|(v, b)| *v == value && *b == c.builder) {
                let others: Vec<&str> = vals
                    .iter()
                    .filter(|(v, b)| *v == value && *b != c.builder)
                    .map(|(_, b)| *b)
                    .collect();
                let differs = vals.iter().any(|(v, _)| *v != value);
                if let Some(s) = stats.get_mut(&c.builder) {
                    s.outputs += 1;
                    s.matched += u64::from(!others.is_empty());
                }
                if let [other] = others.as_slice() {
                    // Its claim just got its first match.
                    let other = (*other).to_owned();
                    // A delta row that moves no index or time (the upsert keeps the extremes).
                    let s = stats.entry(other.clone()).or_insert_with(|| BuilderStats {
                        builder: other,
                        first_idx: i64::MAX as u64,
                        ..BuilderStats::default()
                    });
                    s.matched += 1;
                }
                vals.push((value, c.builder.as_str()));
                if differs && conflicted.insert(c.key.clone()) {
                    out.conflicts.push(ConflictRow {
                        key: c.key.clone(),
                        idx: c.idx,
                        logged_at: c.logged_at,
                    });
                }
            }
            out.claims.push(c.clone());
        }
    }
    let mut builders: Vec<BuilderStats> = stats.into_values().collect();
    builders.sort_by(|a, b| a.builder.cmp(&b.builder));
    out.builders = builders;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(key: &str, idx: u64, nar: u8, builder: &str) -> ClaimRow {
        ClaimRow {
            key: key.into(),
            idx,
            output_path: format!("/nix/store/{key}-x"),
            nar_hash: [nar; 32],
            builder: builder.into(),
            built_locally: Some(true),
            derivation: None,
            drv_hash: None,
            attestation: 0,
            logged_at: 100 + idx as i64,
        }
    }

    fn parsed(c: ClaimRow) -> Parsed {
        Parsed {
            idx: c.idx,
            builder: c.builder.clone(),
            attestation: 0,
            claims: vec![c],
        }
    }

    fn stat<'a>(w: &'a BatchWrite, b: &str) -> &'a BuilderStats {
        w.builders.iter().find(|s| s.builder == b).unwrap()
    }

    #[test]
    fn matches_rebuilds_and_conflicts() {
        // alpha and beta agree on k1; gamma differs on k1 (conflict at 2); alpha rebuilds k1
        // identically (no new output); beta builds k2 alone.
        let batch = vec![
            parsed(claim("k1", 0, 1, "alpha")),
            parsed(claim("k1", 1, 1, "beta")),
            parsed(claim("k1", 2, 2, "gamma")),
            parsed(claim("k1", 3, 1, "alpha")),
            parsed(claim("k2", 4, 9, "beta")),
        ];
        let mut conflicted = HashSet::new();
        let w = plan(0, 5, &batch, &[], &mut conflicted);
        assert_eq!(w.claims.len(), 5);
        let a = stat(&w, "alpha");
        assert_eq!((a.entries, a.outputs, a.matched), (2, 1, 1));
        let b = stat(&w, "beta");
        assert_eq!((b.entries, b.outputs, b.matched), (2, 2, 1));
        let g = stat(&w, "gamma");
        assert_eq!((g.entries, g.outputs, g.matched), (1, 1, 0));
        assert_eq!(
            w.conflicts,
            vec![ConflictRow {
                key: "k1".into(),
                idx: 2,
                logged_at: 102
            }]
        );
        assert_eq!(w.indexed, 5);
    }

    #[test]
    fn later_batches_see_earlier_claims_and_repeats_count_nothing() {
        let first = vec![claim("k1", 0, 1, "alpha")];
        let mut conflicted = HashSet::new();
        // beta matches alpha's earlier claim: both get a match (alpha's delta row is new).
        let w = plan(
            1,
            2,
            &[parsed(claim("k1", 1, 1, "beta"))],
            &first,
            &mut conflicted,
        );
        assert_eq!(stat(&w, "beta").matched, 1);
        assert_eq!(
            (stat(&w, "alpha").matched, stat(&w, "alpha").entries),
            (1, 0)
        );
        // A third agreeing builder: only it gains a match.
        let known = vec![claim("k1", 0, 1, "alpha"), claim("k1", 1, 1, "beta")];
        let w = plan(
            2,
            3,
            &[parsed(claim("k1", 2, 1, "gamma"))],
            &known,
            &mut conflicted,
        );
        assert_eq!(w.builders.len(), 1);
        assert_eq!(stat(&w, "gamma").matched, 1);
        // Re-indexing a range already indexed writes the same keyed rows and counts nothing.
        let known = vec![
            claim("k1", 0, 1, "alpha"),
            claim("k1", 1, 1, "beta"),
            claim("k1", 2, 1, "gamma"),
        ];
        let again = [
            parsed(claim("k1", 1, 1, "beta")),
            parsed(claim("k1", 2, 1, "gamma")),
        ];
        let w = plan(1, 3, &again, &known, &mut conflicted);
        assert!(w.claims.is_empty() && w.builders.is_empty() && w.conflicts.is_empty());
        // A disagreement already recorded is not recorded again.
        conflicted.insert("k1".into());
        let w = plan(
            3,
            4,
            &[parsed(claim("k1", 3, 7, "delta"))],
            &known,
            &mut conflicted,
        );
        assert!(w.conflicts.is_empty());
        assert_eq!(stat(&w, "delta").outputs, 1);
    }
}
