//! The explorer's views: the data behind each page, served as JSON under `/v1/explorer/…` and
//! rendered as HTML by [`super::page`], so pages and scripts see the same values.
//!
//! Authenticated vs untrusted: the checkpoint, indices, leaf hashes and inclusion proofs come
//! from the log itself; every claim (paths, NAR hashes, derivations, builtLocally, times in the
//! statement) is what a builder signed, shown as claimed. Attestation status says only whether
//! a quote is present: verifying it needs the builder's enrollment, which the log does not hold.

use std::collections::{BTreeMap, HashMap, HashSet};

use provenix_core::entry::{Entry, LookupKey};
use provenix_core::nix::{StorePath, StorePathHash};
use provenix_core::tpm::QuoteBundle;
use serde::Serialize;

use super::db::{self, ClaimRow, ValueRow};
use crate::api::AppState;
use crate::error::AppError;

/// Default items per page.
pub const DEFAULT_LIMIT: u64 = 25;
/// Largest `?limit=`.
pub const MAX_LIMIT: u64 = 100;
/// Builders per page on the home view.
pub const BUILDERS_PER_PAGE: usize = 50;
/// Most keys one search shows (a derivation's outputs).
pub const MAX_SEARCH_KEYS: u64 = 16;
/// Dependencies listed on an entry view (the total is always given).
pub const MAX_DEPENDENCIES: usize = 100;
/// What the explorer says of a TPM quote it found (it cannot verify it).
pub const QUOTE_PRESENT: &str = "quote present, not verified here";

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn attestation_text(code: u8) -> &'static str {
    match code {
        0 => "absent",
        1 => QUOTE_PRESENT,
        _ => "malformed quote",
    }
}

/// The published checkpoint as the explorer shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointView {
    pub size: u64,
    /// Root hash, standard base64.
    pub root: String,
    /// When the log signed it (epoch seconds), if recorded.
    pub created_at: Option<i64>,
    pub age_seconds: Option<i64>,
    /// The signed note, with every signature line.
    pub note: String,
}

/// A signature on the published checkpoint other than the log's own (a witness cosignature).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CosignatureView {
    pub name: String,
    /// Key id, 8 hex digits.
    pub key_id: String,
    /// The cosignature's timestamp (epoch seconds), for C2SP tlog-cosignature lines.
    pub time: Option<u64>,
    /// Whether it verifies with a witness key configured on this log.
    pub verified: bool,
}

/// Entries integrated in one minute.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MinuteView {
    /// Start of the minute (epoch seconds).
    pub start: i64,
    pub entries: u64,
}

/// A builder's counts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuilderSummary {
    pub name: String,
    /// On the log's allow-list now.
    pub allowed: bool,
    pub entries: u64,
    /// Distinct outputs (key, path, NAR hash) it claimed.
    pub outputs: u64,
    /// Of those, claimed identically by at least one other builder.
    pub matched: u64,
    /// `matched / outputs`, when it claimed anything.
    pub reproducibility: Option<f64>,
    /// Entries carrying a TPM quote (present; not verified here).
    pub attested: u64,
}

/// `GET /` and `/v1/explorer/home`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HomeView {
    pub origin: String,
    pub verifier_key: String,
    pub checkpoint: CheckpointView,
    pub cosignatures: Vec<CosignatureView>,
    /// Leaves the explorer has indexed (it follows the checkpoint).
    pub indexed: u64,
    /// Entries per minute over the last hour, oldest first (60 minutes).
    pub ingest: Vec<MinuteView>,
    pub ingest_last_hour: u64,
    pub disagreements: u64,
    pub builders: Vec<BuilderSummary>,
    pub builders_total: usize,
    pub page: u64,
    pub next_page: Option<u64>,
}

/// One distinct claimed value under a key and who claimed it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueGroup {
    /// `A`, `B`, … by number of builders (most first).
    pub label: String,
    pub output_path: String,
    /// NAR hash, lowercase hex.
    pub nar_hash: String,
    pub builders: Vec<GroupBuilder>,
}

/// A builder claiming a value.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupBuilder {
    pub name: String,
    /// Entries of this builder claiming this value (more than one: identical rebuilds).
    pub claims: u64,
    pub first_index: u64,
}

/// A row of the agreement table: what one builder claims, against the others.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementRow {
    pub builder: String,
    pub label: String,
    pub nar_hash: String,
    pub output_path: String,
    pub claims: u64,
    /// Other builders claiming the same value.
    pub agree_with: Vec<String>,
    /// Builders (possibly itself, on a rebuild) claiming another value.
    pub differ_from: Vec<String>,
}

/// One claim with its proof.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimView {
    pub index: u64,
    pub builder: String,
    pub label: String,
    pub output_path: String,
    pub nar_hash: String,
    pub built_locally: Option<bool>,
    pub derivation: Option<String>,
    pub attestation: &'static str,
    /// When the log first covered it with a checkpoint (epoch seconds).
    pub logged_at: i64,
    /// An earlier entry of the same builder claims this key.
    pub rebuild: bool,
    pub leaf_hash: String,
    /// Against the checkpoint of the enclosing view.
    pub inclusion_proof: Vec<String>,
    /// The raw envelope with its proof.
    pub envelope: String,
}

/// Since when a key's claims disagree.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictInfo {
    pub since_index: u64,
    pub logged_at: i64,
}

/// Everything about one lookup key.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyResult {
    pub key: String,
    /// Every claim agrees (one value).
    pub agree: bool,
    pub conflict: Option<ConflictInfo>,
    pub values: Vec<ValueGroup>,
    pub agreement: Vec<AgreementRow>,
    pub claims: Vec<ClaimView>,
    /// Cursor of the next page of claims of this key.
    pub next_cursor: Option<String>,
}

/// `GET /search?q=` and `/v1/explorer/search?q=`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchView {
    pub query: String,
    /// `storePath`, `hashPart`, `derivation` or `realisation`.
    pub kind: &'static str,
    pub checkpoint_size: u64,
    /// The checkpoint every inclusion proof here is against.
    pub checkpoint: String,
    pub indexed: u64,
    pub results: Vec<KeyResult>,
}

/// One output claimed in a builder's entry, with how others see it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentOutput {
    pub key: String,
    pub output_path: String,
    pub nar_hash: String,
    /// `matched` (another builder claims the same), `differs` (some claim differs), `unique`.
    pub status: &'static str,
    pub matched_by: Vec<String>,
}

/// One of a builder's entries.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentEntry {
    pub index: u64,
    pub logged_at: i64,
    pub derivation: Option<String>,
    pub built_locally: Option<bool>,
    pub attestation: &'static str,
    pub outputs: Vec<RecentOutput>,
}

/// `GET /builder/{name}` and `/v1/explorer/builders/{name}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuilderView {
    pub name: String,
    /// Its key, if on the allow-list.
    pub key: Option<String>,
    pub summary: BuilderSummary,
    pub attestation: String,
    pub recent: Vec<RecentEntry>,
    pub next_cursor: Option<String>,
}

/// A key whose claims disagree.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisagreementView {
    pub key: String,
    pub since_index: u64,
    pub logged_at: i64,
    pub values: Vec<ValueGroup>,
}

/// `GET /disagreements` and `/v1/explorer/disagreements`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisagreementsView {
    pub total: u64,
    pub items: Vec<DisagreementView>,
    pub next_cursor: Option<String>,
}

/// An output as the entry claims it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryOutput {
    pub name: Option<String>,
    pub path: String,
    pub nar_hash: String,
}

/// A resolved dependency as claimed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryDependency {
    pub name: String,
    pub uri: String,
    pub digest: BTreeMap<String, String>,
}

/// `GET /entry/{index}` and `/v1/explorer/entries/{index}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryView {
    pub index: u64,
    pub leaf_hash: String,
    pub builder: String,
    pub builder_id: String,
    pub build_type: String,
    pub keys: Vec<String>,
    pub outputs: Vec<EntryOutput>,
    pub derivation: Option<String>,
    pub built_locally: Option<bool>,
    pub counter: Option<u64>,
    pub started_on: Option<String>,
    pub finished_on: Option<String>,
    /// `externalParameters.source`, as JSON text.
    pub source: Option<String>,
    pub dependencies_total: usize,
    pub dependencies: Vec<EntryDependency>,
    pub attestation: &'static str,
    pub checkpoint_size: u64,
    pub checkpoint: String,
    pub inclusion_proof: Vec<String>,
    pub envelope: String,
}

fn envelope_url(index: u64) -> String {
    format!("/v1/entries/{index}")
}

fn checkpoint_view(st: &AppState, created_at: Option<i64>) -> CheckpointView {
    let cp = st.log.checkpoint();
    CheckpointView {
        size: cp.size(),
        root: cp.root().to_base64(),
        created_at,
        age_seconds: created_at.map(|t| (now_secs() - t).max(0)),
        note: cp.note().to_owned(),
    }
}

fn cosignatures(st: &AppState, note: &str) -> Vec<CosignatureView> {
    let log_id = st
        .log
        .signer()
        .verifier_key()
        .parse::<provenix_core::checkpoint::LogVerifier>()
        .map(|v| v.key_id())
        .ok();
    cosignatures_of(note, st.log.signer().name(), log_id, &st.log.witness_keys())
}

/// The signature lines of `note` other than the log's own (`origin` with key id `log_id`),
/// each marked verified when it verifies with one of `witnesses`.
pub fn cosignatures_of(
    note: &str,
    origin: &str,
    log_id: Option<u32>,
    witnesses: &[provenix_core::witness::CosignerVerifier],
) -> Vec<CosignatureView> {
    let Ok((_, sigs)) = provenix_core::witness::split_note(note) else {
        return Vec::new();
    };
    let verified = provenix_core::witness::valid_cosignatures(note, witnesses);
    sigs.iter()
        .filter(|s| !(s.name == origin && Some(s.key_id) == log_id))
        .map(|s| {
            // tlog-cosignature: 8-byte timestamp then the 64-byte Ed25519 signature.
            let time = (s.sig.len() == 72)
                .then(|| s.sig.first_chunk::<8>().map(|b| u64::from_be_bytes(*b)))
                .flatten();
            CosignatureView {
                name: s.name.clone(),
                key_id: format!("{:08x}", s.key_id),
                time,
                verified: verified
                    .iter()
                    .any(|(n, t)| *n == s.name && Some(*t) == time),
            }
        })
        .collect()
}

/// Builds the home view.
pub async fn home(st: &AppState, page: u64) -> Result<HomeView, AppError> {
    let pools = st.log.store().pools();
    let cp = st.log.checkpoint();
    let created = db::checkpoint_created_at(pools, cp.size()).await?;
    let now = now_secs();
    let first_minute = now / 60 - 59;
    let (base, rows) = db::growth_by_minute(pools, first_minute * 60).await?;
    let by_minute: HashMap<i64, u64> = rows.into_iter().collect();
    let mut last = base;
    let mut ingest = Vec::with_capacity(60);
    for m in first_minute..first_minute + 60 {
        let size = by_minute.get(&m).copied().unwrap_or(last).max(last);
        ingest.push(MinuteView {
            start: m * 60,
            entries: size - last,
        });
        last = size;
    }
    let allowed = st.log.builders();
    let mut summaries: BTreeMap<String, BuilderSummary> = db::all_builder_stats(pools)
        .await?
        .into_iter()
        .map(|s| {
            (
                s.builder.clone(),
                summary(&s, allowed.contains_key(&s.builder)),
            )
        })
        .collect();
    for name in allowed.keys() {
        summaries
            .entry(name.clone())
            .or_insert_with(|| empty_summary(name, true));
    }
    let total = summaries.len();
    let page = page.max(1);
    let skip = usize::try_from(page - 1)
        .unwrap_or(usize::MAX)
        .saturating_mul(BUILDERS_PER_PAGE);
    let builders: Vec<BuilderSummary> = summaries
        .into_values()
        .skip(skip)
        .take(BUILDERS_PER_PAGE)
        .collect();
    let next_page = (skip.saturating_add(BUILDERS_PER_PAGE) < total).then_some(page + 1);
    Ok(HomeView {
        origin: st.log.signer().name().to_owned(),
        verifier_key: st.log.signer().verifier_key().to_owned(),
        checkpoint: checkpoint_view(st, created),
        cosignatures: cosignatures(st, cp.note()),
        indexed: db::progress(pools).await?,
        ingest_last_hour: ingest.iter().map(|m| m.entries).sum(),
        ingest,
        disagreements: db::conflict_count(pools).await?,
        builders,
        builders_total: total,
        page,
        next_page,
    })
}

fn summary(s: &db::BuilderStats, allowed: bool) -> BuilderSummary {
    BuilderSummary {
        name: s.builder.clone(),
        allowed,
        entries: s.entries,
        outputs: s.outputs,
        matched: s.matched,
        reproducibility: (s.outputs > 0).then(|| s.matched as f64 / s.outputs as f64),
        attested: s.attested,
    }
}

fn empty_summary(name: &str, allowed: bool) -> BuilderSummary {
    BuilderSummary {
        name: name.to_owned(),
        allowed,
        entries: 0,
        outputs: 0,
        matched: 0,
        reproducibility: None,
        attested: 0,
    }
}

/// A claimed value (output path, NAR hash), who claims it, and its first index.
type Grouping = ((String, [u8; 32]), Vec<GroupBuilder>, u64);

/// Groups a key's (value, builder) rows into labelled values, most builders first.
fn groups(rows: &[&ValueRow]) -> Vec<ValueGroup> {
    let mut by_value: Vec<Grouping> = Vec::new();
    for r in rows {
        let v = (r.output_path.clone(), r.nar_hash);
        let gb = GroupBuilder {
            name: r.builder.clone(),
            claims: r.claims,
            first_index: r.first_idx,
        };
        match by_value.iter_mut().find(|(k, _, _)| *k == v) {
            Some((_, b, first)) => {
                *first = (*first).min(r.first_idx);
                b.push(gb);
            }
            None => by_value.push((v, vec![gb], r.first_idx)),
        }
    }
    by_value.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.2.cmp(&b.2)));
    by_value
        .into_iter()
        .enumerate()
        .map(|(i, ((path, nar), mut builders, _))| {
            builders.sort_by(|a, b| a.name.cmp(&b.name));
            ValueGroup {
                label: label(i),
                output_path: path,
                nar_hash: hex::encode(nar),
                builders,
            }
        })
        .collect()
}

fn label(i: usize) -> String {
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    match letters.get(i) {
        Some(c) => char::from(*c).to_string(),
        None => format!("V{}", i + 1),
    }
}

fn agreement(values: &[ValueGroup]) -> Vec<AgreementRow> {
    let mut rows = Vec::new();
    for g in values {
        for b in &g.builders {
            let agree_with = g
                .builders
                .iter()
                .filter(|o| o.name != b.name)
                .map(|o| o.name.clone())
                .collect();
            let mut differ_from: Vec<String> = values
                .iter()
                .filter(|o| o.label != g.label)
                .flat_map(|o| o.builders.iter().map(|x| x.name.clone()))
                .collect();
            differ_from.sort();
            differ_from.dedup();
            rows.push(AgreementRow {
                builder: b.name.clone(),
                label: g.label.clone(),
                nar_hash: g.nar_hash.clone(),
                output_path: g.output_path.clone(),
                claims: b.claims,
                agree_with,
                differ_from,
            });
        }
    }
    rows.sort_by(|a, b| a.builder.cmp(&b.builder).then(a.label.cmp(&b.label)));
    rows
}

/// What a search box string asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchQuery {
    /// An output's lookup key (from a store path, hash part or realisation id).
    Key { key: String, kind: &'static str },
    /// A derivation, by its hash part (from a `.drv` path).
    Derivation { drv_hash: String },
    /// A bare hash part: a key, or else a derivation's.
    HashPart { hash: String },
}

/// Parses a search string: `/nix/store/<hash>-<name>` (a `.drv` path searches the derivation),
/// `<hash>-<name>`, a 32-character hash part, or a realisation id `sha256:<hex>!<output>`.
pub fn parse_query(q: &str) -> Result<SearchQuery, AppError> {
    let q = q.trim();
    if q.is_empty() || q.len() > 512 {
        return Err(AppError::bad(
            "bad_query",
            "search for a store path, a store-path hash part, a .drv path or a realisation id",
        ));
    }
    let path = q
        .parse::<StorePath>()
        .ok()
        .or_else(|| StorePath::from_basename(q).ok());
    if let Some(p) = path {
        return Ok(if p.is_derivation() {
            SearchQuery::Derivation {
                drv_hash: p.hash().to_string(),
            }
        } else {
            SearchQuery::Key {
                key: p.hash().to_string(),
                kind: "storePath",
            }
        });
    }
    if let Ok(h) = q.parse::<StorePathHash>() {
        return Ok(SearchQuery::HashPart {
            hash: h.to_string(),
        });
    }
    match q.parse::<LookupKey>() {
        Ok(k @ LookupKey::Realisation(_)) => Ok(SearchQuery::Key {
            key: k.to_string(),
            kind: "realisation",
        }),
        _ => Err(AppError::bad(
            "bad_query",
            format!("{q:?} is not a store path, a store-path hash part, a .drv path or a realisation id"),
        )),
    }
}

/// Builds the search view; `cursor` pages through the claims of a single key.
pub async fn search(
    st: &AppState,
    q: &str,
    cursor: Option<u64>,
    limit: u64,
) -> Result<SearchView, AppError> {
    let parsed = parse_query(q)?;
    let pools = st.log.store().pools();
    let (keys, kind) = match &parsed {
        SearchQuery::Key { key, kind } => (vec![key.clone()], *kind),
        SearchQuery::Derivation { drv_hash } => (
            db::keys_for_derivation(pools, drv_hash, MAX_SEARCH_KEYS).await?,
            "derivation",
        ),
        SearchQuery::HashPart { hash } => {
            let direct = db::claims_for_key(pools, hash, None, 1).await?;
            if direct.is_empty() {
                let by_drv = db::keys_for_derivation(pools, hash, MAX_SEARCH_KEYS).await?;
                if by_drv.is_empty() {
                    (vec![hash.clone()], "hashPart")
                } else {
                    (by_drv, "derivation")
                }
            } else {
                (vec![hash.clone()], "hashPart")
            }
        }
    };
    let cp = st.log.checkpoint();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values = db::values_for_keys(pools, &key_refs).await?;
    let conflicts = db::conflicts_for_keys(pools, &key_refs).await?;
    let mut results = Vec::new();
    for key in &keys {
        let rows: Vec<&ValueRow> = values.iter().filter(|v| v.key == *key).collect();
        let groups = groups(&rows);
        let mut claims = db::claims_for_key(pools, key, cursor, limit + 1).await?;
        claims.retain(|c| c.idx < cp.size());
        let next_cursor = if claims.len() as u64 > limit {
            claims.truncate(limit as usize);
            claims.last().map(|c| c.idx.to_string())
        } else {
            None
        };
        let claim_views = claim_views(st, &claims, &groups, cp.size(), &rows)?;
        results.push(KeyResult {
            key: key.clone(),
            agree: groups.len() <= 1,
            conflict: conflicts.get(key).map(|c| ConflictInfo {
                since_index: c.idx,
                logged_at: c.logged_at,
            }),
            agreement: agreement(&groups),
            values: groups,
            claims: claim_views,
            next_cursor,
        });
    }
    Ok(SearchView {
        query: q.trim().to_owned(),
        kind,
        checkpoint_size: cp.size(),
        checkpoint: cp.note().to_owned(),
        indexed: db::progress(pools).await?,
        results,
    })
}

fn claim_views(
    st: &AppState,
    claims: &[ClaimRow],
    groups: &[ValueGroup],
    size: u64,
    rows: &[&ValueRow],
) -> Result<Vec<ClaimView>, AppError> {
    let indices: Vec<u64> = claims.iter().map(|c| c.idx).collect();
    let proofs = st
        .log
        .inclusion_proofs(&indices, size)
        .map_err(|e| AppError::Internal(format!("explorer proof: {e}")))?;
    claims
        .iter()
        .zip(proofs)
        .map(|(c, proof)| {
            let nar = hex::encode(c.nar_hash);
            let label = groups
                .iter()
                .find(|g| g.nar_hash == nar && g.output_path == c.output_path)
                .map_or_else(String::new, |g| g.label.clone());
            // A rebuild: this builder has an earlier entry under the same key.
            let first_of_builder = rows
                .iter()
                .filter(|r| r.builder == c.builder)
                .map(|r| r.first_idx)
                .min()
                .unwrap_or(c.idx);
            let leaf_hash = st
                .log
                .leaf_hash(c.idx)
                .ok_or_else(|| AppError::Internal(format!("leaf hash {} missing", c.idx)))?;
            Ok(ClaimView {
                index: c.idx,
                builder: c.builder.clone(),
                label,
                output_path: c.output_path.clone(),
                nar_hash: nar,
                built_locally: c.built_locally,
                derivation: c.derivation.clone(),
                attestation: attestation_text(c.attestation),
                logged_at: c.logged_at,
                rebuild: first_of_builder < c.idx,
                leaf_hash: leaf_hash.to_base64(),
                inclusion_proof: proof.iter().map(|h| h.to_base64()).collect(),
                envelope: envelope_url(c.idx),
            })
        })
        .collect()
}

/// Builds a builder's view: counts and its most recent entries (before `cursor`).
pub async fn builder(
    st: &AppState,
    name: &str,
    cursor: Option<u64>,
    limit: u64,
) -> Result<BuilderView, AppError> {
    let pools = st.log.store().pools();
    let key = st.log.builder_key(name);
    let stats = db::builder_stats(pools, name).await?;
    let summary = match &stats {
        Some(s) => summary(s, key.is_some()),
        None if key.is_some() => empty_summary(name, true),
        None => {
            return Err(AppError::not_found(
                "unknown_builder",
                format!("no builder {name:?} on this log's allow-list or in its entries"),
            ))
        }
    };
    let rows = db::builder_recent(pools, name, cursor, limit + 1).await?;
    let mut order: Vec<u64> = Vec::new();
    for r in &rows {
        if order.last() != Some(&r.idx) {
            order.push(r.idx);
        }
    }
    let next_cursor = if order.len() as u64 > limit {
        order.truncate(limit as usize);
        order.last().map(u64::to_string)
    } else {
        None
    };
    let keep: HashSet<u64> = order.iter().copied().collect();
    let rows: Vec<&ClaimRow> = rows.iter().filter(|r| keep.contains(&r.idx)).collect();
    let mut keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let values = db::values_for_keys(pools, &keys).await?;
    let mut recent: Vec<RecentEntry> = Vec::new();
    for r in rows {
        let others: Vec<&ValueRow> = values.iter().filter(|v| v.key == r.key).collect();
        let matched_by: Vec<String> = others
            .iter()
            .filter(|v| {
                v.builder != r.builder && v.nar_hash == r.nar_hash && v.output_path == r.output_path
            })
            .map(|v| v.builder.clone())
            .collect();
        let differs = others
            .iter()
            .any(|v| v.nar_hash != r.nar_hash || v.output_path != r.output_path);
        let out = RecentOutput {
            key: r.key.clone(),
            output_path: r.output_path.clone(),
            nar_hash: hex::encode(r.nar_hash),
            status: if differs {
                "differs"
            } else if matched_by.is_empty() {
                "unique"
            } else {
                "matched"
            },
            matched_by,
        };
        match recent.last_mut() {
            Some(e) if e.index == r.idx => e.outputs.push(out),
            _ => recent.push(RecentEntry {
                index: r.idx,
                logged_at: r.logged_at,
                derivation: r.derivation.clone(),
                built_locally: r.built_locally,
                attestation: attestation_text(r.attestation),
                outputs: vec![out],
            }),
        }
    }
    let attestation = if summary.attested == 0 {
        "no entry carries a TPM quote".to_owned()
    } else {
        format!(
            "{} of {} entries carry a TPM quote ({QUOTE_PRESENT}: verifying one needs the builder's enrollment)",
            summary.attested, summary.entries
        )
    };
    Ok(BuilderView {
        name: name.to_owned(),
        key: key.map(|k| k.to_string()),
        summary,
        attestation,
        recent,
        next_cursor,
    })
}

/// Parses a disagreements cursor `<index>-<key>`.
pub fn parse_conflict_cursor(c: &str) -> Result<(u64, String), AppError> {
    c.split_once('-')
        .and_then(|(i, k)| Some((i.parse().ok()?, k.to_owned())))
        .filter(|(_, k)| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| {
            AppError::bad(
                "bad_cursor",
                format!("{c:?} is not a cursor from this view"),
            )
        })
}

/// Builds the disagreements view, newest first.
pub async fn disagreements(
    st: &AppState,
    cursor: Option<(u64, String)>,
    limit: u64,
) -> Result<DisagreementsView, AppError> {
    let pools = st.log.store().pools();
    let mut rows = db::conflicts_page(pools, cursor, limit + 1).await?;
    let next_cursor = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| format!("{}-{}", r.idx, r.key))
    } else {
        None
    };
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let values = db::values_for_keys(pools, &keys).await?;
    let items = rows
        .iter()
        .map(|r| {
            let vs: Vec<&ValueRow> = values.iter().filter(|v| v.key == r.key).collect();
            DisagreementView {
                key: r.key.clone(),
                since_index: r.idx,
                logged_at: r.logged_at,
                values: groups(&vs),
            }
        })
        .collect();
    Ok(DisagreementsView {
        total: db::conflict_count(pools).await?,
        items,
        next_cursor,
    })
}

/// Builds one entry's view from its leaf (parsed here; the log verified its signature when it
/// took it).
pub async fn entry(st: &AppState, index: u64) -> Result<EntryView, AppError> {
    let cp = st.log.checkpoint();
    if index >= cp.size() {
        return Err(AppError::not_found(
            "index_out_of_range",
            format!(
                "index {index} is not below the checkpoint size {}",
                cp.size()
            ),
        ));
    }
    let leaf = st
        .log
        .leaf(index)
        .await?
        .ok_or_else(|| AppError::Internal(format!("leaf {index} missing from storage")))?;
    let e = Entry::parse(&leaf)
        .map_err(|err| AppError::not_found("not_an_entry", format!("leaf {index}: {err}")))?;
    let proof = st
        .log
        .inclusion_proof(index, cp.size())
        .map_err(|err| AppError::Internal(format!("explorer proof: {err}")))?;
    let s = e.statement();
    let deps = &s.predicate.build_definition.resolved_dependencies;
    Ok(EntryView {
        index,
        leaf_hash: e.leaf_hash().to_base64(),
        builder: e.keyid().to_owned(),
        builder_id: s.builder_id().to_owned(),
        build_type: s.predicate.build_definition.build_type.clone(),
        keys: e.keys().iter().map(ToString::to_string).collect(),
        outputs: e
            .outputs()
            .iter()
            .map(|o| EntryOutput {
                name: o.output.clone(),
                path: o.path.to_string(),
                nar_hash: o.nar_hash.to_hex(),
            })
            .collect(),
        derivation: s.derivation().map(str::to_owned),
        built_locally: s.built_locally(),
        counter: s.counter(),
        started_on: s.predicate.run_details.metadata.started_on.clone(),
        finished_on: s.predicate.run_details.metadata.finished_on.clone(),
        source: s
            .predicate
            .build_definition
            .external_parameters
            .get("source")
            .map(ToString::to_string),
        dependencies_total: deps.len(),
        dependencies: deps
            .iter()
            .take(MAX_DEPENDENCIES)
            .map(|d| EntryDependency {
                name: d.name.clone(),
                uri: d.uri.clone(),
                digest: d.digest.clone(),
            })
            .collect(),
        attestation: match QuoteBundle::from_entry(&e) {
            Ok(None) => "absent",
            Ok(Some(_)) => QUOTE_PRESENT,
            Err(_) => "malformed quote",
        },
        checkpoint_size: cp.size(),
        checkpoint: cp.note().to_owned(),
        inclusion_proof: proof.iter().map(|h| h.to_base64()).collect(),
        envelope: envelope_url(index),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_to_what_they_name() {
        let h = "0c6kzph7l0dcbfmjap64f0czdafn3b7x";
        assert_eq!(
            parse_query(&format!("/nix/store/{h}-hello-2.12")).unwrap(),
            SearchQuery::Key {
                key: h.into(),
                kind: "storePath"
            }
        );
        assert_eq!(
            parse_query(&format!(" {h}-hello-2.12.drv ")).unwrap(),
            SearchQuery::Derivation { drv_hash: h.into() }
        );
        assert_eq!(
            parse_query(h).unwrap(),
            SearchQuery::HashPart { hash: h.into() }
        );
        let r = format!("sha256:{}!out", "ab".repeat(32));
        assert_eq!(
            parse_query(&r).unwrap(),
            SearchQuery::Key {
                key: r.clone(),
                kind: "realisation"
            }
        );
        for bad in ["", "hello", "/nix/store/short-x", "<script>"] {
            let e = parse_query(bad).unwrap_err();
            assert_eq!(e.parts().1, "bad_query", "{bad}");
        }
    }

    #[test]
    fn cosignatures_are_listed_and_verified_only_with_a_configured_key() {
        use provenix_core::checkpoint::{LogSigner, LogVerifier};
        use provenix_core::merkle::Hash;
        use provenix_core::witness::{add_signature_lines, split_note, CosignerKey};
        let signer = LogSigner::generate("log.example/x").unwrap();
        let log_id = signer
            .verifier_key()
            .parse::<LogVerifier>()
            .unwrap()
            .key_id();
        let cp = signer.sign(5, Hash::EMPTY_ROOT).unwrap();
        let (w1, w2) = (
            CosignerKey::generate("w1.example").unwrap(),
            CosignerKey::generate("w2.example").unwrap(),
        );
        let (text, _) = split_note(cp.note()).unwrap();
        let note = add_signature_lines(
            cp.note(),
            &[
                w1.cosign(text.as_bytes(), 1_700_000_000),
                w2.cosign(text.as_bytes(), 1_700_000_001),
            ],
        );
        let w1_key = w1.verifier_key().parse().unwrap();
        let got = cosignatures_of(&note, "log.example/x", Some(log_id), &[w1_key]);
        let summary: Vec<(&str, Option<u64>, bool)> = got
            .iter()
            .map(|c| (c.name.as_str(), c.time, c.verified))
            .collect();
        assert_eq!(
            summary,
            [
                ("w1.example", Some(1_700_000_000), true),
                ("w2.example", Some(1_700_000_001), false)
            ]
        );
        assert!(cosignatures_of(cp.note(), "log.example/x", Some(log_id), &[]).is_empty());
    }

    #[test]
    fn conflict_cursors_round_trip() {
        assert_eq!(
            parse_conflict_cursor("12-sha256:ab!out-x").unwrap(),
            (12, "sha256:ab!out-x".to_owned())
        );
        for bad in ["", "12", "x-k", "12-"] {
            assert_eq!(
                parse_conflict_cursor(bad).unwrap_err().parts().1,
                "bad_cursor"
            );
        }
    }
}
