//! `provenix audit --config trust.toml [--state DIR] [--json]`: follow every configured log,
//! trusting none of them (DESIGN.md §10).
//!
//! Per log, each run:
//! 1. fetches `/checkpoint` and verifies its signature with the trust file's key (and counts the
//!    cosignatures of the log's `witnesses`);
//! 2. compares it with the checkpoint kept in the state: a larger tree must be consistent with
//!    it, shown both by the log's `/v1/proof/consistency` proof and by recomputation; the same
//!    size must have the same root; a smaller tree is a rollback (or, if it is not even a prefix
//!    of what was audited, a fork);
//! 3. fetches the new level-0 hash tiles and entry bundles (C2SP `tlog-tiles`, several in
//!    flight), recomputes every leaf hash from the bundle and checks it against the hash tile,
//!    extends the kept right edge of the tree ([`Frontier`]) with them and compares the
//!    resulting root with the signed one;
//! 4. checks every new entry: schema and canonical bytes, and the signature under the trust
//!    file's key of its builder (entries by builders the trust file does not list are counted as
//!    "unknown builder"); signatures are verified in batches on the blocking pool;
//! 5. indexes each valid entry's claims (key → NAR hash, builder) and reports a claim whose NAR
//!    hash differs from one already indexed — from another builder, or from the same builder
//!    in an earlier build — in this log or another.
//!
//! A run's effect on one log's state is one database transaction, committed only when the
//! recomputed root matched: a log caught misbehaving, or a run cut short, leaves the previous
//! state. A log that signed two checkpoints that cannot both be honest (a fork, a rewritten
//! entry, a truncated and re-grown tree) is marked failed with both notes as evidence, and stays
//! failed. Every audited leaf hash is kept, so such a fork is located: which entries changed.
//!
//! Exit codes: 3 a log misbehaved; else 1 new conflicts or invalid entries were found; else 2 a
//! log could not be reached (or the configuration or state is unusable); else 0.

pub mod check;
pub mod db;
pub mod progress;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use provenix_core::checkpoint::SignedCheckpoint;
use provenix_core::merkle::{self, Frontier, Hash, TreeSize};
use provenix_core::nix::{NarHash, NixPublicKey};
use provenix_core::policy::LogConfig;
use provenix_core::tile::{TileKind, TilePath};
use provenix_core::witness::valid_cosignatures;
use serde::Serialize;
use sqlx::SqliteConnection;

use crate::logclient::{http_client, LogClient};
use check::{CheckedTile, KeyClaim, Outcome, RawTile, TileError};
use db::{AuditDb, Builders, ClaimRow, DbError, FindingRow, LogRow};
use progress::Progress;

/// Exit code: nothing found.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: new conflicting claims or invalid entries.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: a log could not be reached, or the configuration or state is unusable.
pub const EXIT_UNREACHABLE: u8 = 2;
/// Exit code: a log misbehaved.
pub const EXIT_MISBEHAVED: u8 = 3;

/// Claims checked against the index at once.
const CLAIM_BATCH: usize = 4096;
/// Tiles checked at once on the blocking pool.
const CHECK_AHEAD: usize = 4;
/// Findings of one kind listed per log in the output (all are stored).
const MAX_LISTED: usize = 1000;

/// Arguments of `provenix audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// The trust file (its logs are audited, its builders' keys check the entries).
    #[arg(long)]
    pub config: PathBuf,
    /// State directory (default `$XDG_STATE_HOME/provenix/audit`, else
    /// `~/.local/state/provenix/audit`).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Tiles fetched ahead per log.
    #[arg(long, default_value_t = 16)]
    pub fetch_ahead: usize,
    /// Time limit of one request to a log, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The log misbehaved: a bad checkpoint signature, inconsistent or shrinking checkpoints,
    /// data that does not hash to its signed root.
    Misbehaviour,
    /// The log could not be reached or did not serve what its checkpoint covers.
    Unreachable,
    /// Two builders claim different NAR hashes for one key.
    Conflict,
    /// One builder claims different NAR hashes for one key (its rebuilds differ).
    SelfConflict,
    /// An entry that fails the schema, is not canonical, or whose signature does not verify.
    Invalid,
    /// The checkpoint lacks the witness cosignatures the trust file requires (a warning).
    Unwitnessed,
}

impl FindingKind {
    fn as_str(self) -> &'static str {
        match self {
            FindingKind::Misbehaviour => "misbehaviour",
            FindingKind::Unreachable => "unreachable",
            FindingKind::Conflict => "conflict",
            FindingKind::SelfConflict => "self_conflict",
            FindingKind::Invalid => "invalid",
            FindingKind::Unwitnessed => "unwitnessed",
        }
    }
}

/// One claim named by a conflict finding.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRef {
    pub builder: String,
    pub nar_hash: String,
    pub log: String,
    pub index: u64,
}

/// One finding: a line of the text report, an object of the JSON one.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: FindingKind,
    /// The log's name (its checkpoint origin).
    pub log: String,
    /// Its URL.
    pub url: String,
    pub index: Option<u64>,
    pub key: Option<String>,
    /// The builders involved.
    pub builders: Vec<String>,
    /// What was found.
    pub message: String,
    /// For conflicts: the new claim and the claims it contradicts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimRef>,
}

impl Finding {
    /// The text line.
    pub fn line(&self) -> String {
        let mut s = format!("{}: log {}", self.kind.as_str(), self.log);
        if let Some(i) = self.index {
            s.push_str(&format!(" #{i}"));
        }
        if let Some(k) = &self.key {
            s.push_str(&format!(" key {k}"));
        }
        s.push_str(": ");
        s.push_str(&self.message);
        s
    }
}

/// How one log's audit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStatus {
    Clean,
    Findings,
    Misbehaved,
    Unreachable,
}

/// One log's part of the report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogReport {
    pub log: String,
    pub url: String,
    pub status: LogStatus,
    /// The size audited before this run.
    pub previous_size: u64,
    /// The size of the checkpoint the log served (if verified).
    pub size: Option<u64>,
    /// The size audited after this run.
    pub audited_size: u64,
    pub new_entries: u64,
    pub valid: u64,
    pub unknown_builder: u64,
    /// Entries by builders the trust file does not list, per builder.
    pub unknown_builders: BTreeMap<String, u64>,
    pub invalid: u64,
    /// TPM enrollment records the log wrote as registrar (signed by the log, binding checked).
    pub enrollments: u64,
    pub conflicts: u64,
    /// Valid cosignatures by the log's configured witnesses, when it has any.
    pub cosignatures: Option<usize>,
    /// How consistency with the kept checkpoint was shown.
    pub consistency: String,
    pub seconds: f64,
    pub entries_per_sec: f64,
    /// Findings stored by earlier runs.
    pub earlier_findings: u64,
}

/// The whole report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub exit_code: u8,
    pub state: PathBuf,
    pub logs: Vec<LogReport>,
    pub findings: Vec<Finding>,
}

/// The default state directory.
pub fn default_state_dir() -> Option<PathBuf> {
    crate::quorum::state::default_state_file().and_then(|f| f.parent().map(|d| d.join("audit")))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs `provenix audit`; returns the exit code. Errors mean 2 (configuration or state).
pub async fn run(args: &AuditArgs) -> anyhow::Result<u8> {
    let config = crate::substituter::load_config(&args.config)?;
    let dir = args
        .state
        .clone()
        .or_else(default_state_dir)
        .context("no state directory: pass --state or set HOME")?;
    let mut db = AuditDb::open(&dir).await?;
    let keys: Arc<HashMap<String, NixPublicKey>> = Arc::new(
        config
            .builders
            .iter()
            .map(|b| (b.name.clone(), b.key.clone()))
            .collect(),
    );
    let http = http_client(Duration::from_secs(args.timeout_secs.max(1)));
    let mut logs = Vec::new();
    let mut findings = Vec::new();
    for log in &config.logs {
        let mut a = LogAudit {
            log,
            keys: keys.clone(),
            client: LogClient::with_http(&log.url, http.clone())?,
            fetch_ahead: args.fetch_ahead.max(1),
            report: LogReport {
                log: log.key.name().to_owned(),
                url: log.url.clone(),
                status: LogStatus::Clean,
                previous_size: 0,
                size: None,
                audited_size: 0,
                new_entries: 0,
                valid: 0,
                unknown_builder: 0,
                unknown_builders: BTreeMap::new(),
                invalid: 0,
                enrollments: 0,
                conflicts: 0,
                cosignatures: None,
                consistency: String::new(),
                seconds: 0.0,
                entries_per_sec: 0.0,
                earlier_findings: 0,
            },
            findings: Vec::new(),
            listed: HashMap::new(),
            run_at: now_rfc3339(),
        };
        let started = Instant::now();
        a.run(&mut db).await?;
        a.report.seconds = started.elapsed().as_secs_f64();
        a.report.entries_per_sec = if a.report.seconds > 0.0 {
            a.report.new_entries as f64 / a.report.seconds
        } else {
            0.0
        };
        a.report.status = status_of(&a.findings);
        logs.push(a.report);
        findings.extend(a.findings);
    }
    let exit_code = exit_code_of(&logs);
    let report = Report {
        exit_code,
        state: dir,
        logs,
        findings,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(exit_code)
}

fn status_of(findings: &[Finding]) -> LogStatus {
    let has = |k: &[FindingKind]| findings.iter().any(|f| k.contains(&f.kind));
    if has(&[FindingKind::Misbehaviour]) {
        LogStatus::Misbehaved
    } else if has(&[
        FindingKind::Conflict,
        FindingKind::SelfConflict,
        FindingKind::Invalid,
    ]) {
        LogStatus::Findings
    } else if has(&[FindingKind::Unreachable]) {
        LogStatus::Unreachable
    } else {
        LogStatus::Clean
    }
}

fn exit_code_of(logs: &[LogReport]) -> u8 {
    let any = |s: LogStatus| logs.iter().any(|l| l.status == s);
    if any(LogStatus::Misbehaved) {
        EXIT_MISBEHAVED
    } else if any(LogStatus::Findings) {
        EXIT_FINDINGS
    } else if any(LogStatus::Unreachable) {
        EXIT_UNREACHABLE
    } else {
        EXIT_CLEAN
    }
}

fn print_text(r: &Report) {
    for f in &r.findings {
        println!("{}", f.line());
    }
    for l in &r.logs {
        let status = match l.status {
            LogStatus::Clean => "ok",
            LogStatus::Findings => "FINDINGS",
            LogStatus::Misbehaved => "MISBEHAVED",
            LogStatus::Unreachable => "UNREACHABLE",
        };
        let mut s = format!("{} ({}): {status}", l.log, l.url);
        match l.size {
            Some(n) => s.push_str(&format!(", checkpoint {n}")),
            None => s.push_str(", no verified checkpoint"),
        }
        s.push_str(&format!(
            ", audited {} (was {})",
            l.audited_size, l.previous_size
        ));
        if l.new_entries > 0 {
            s.push_str(&format!(
                "; {} new entries in {:.2} s ({:.0}/s): {} valid, {} by unknown builders",
                l.new_entries, l.seconds, l.entries_per_sec, l.valid, l.unknown_builder
            ));
            if !l.unknown_builders.is_empty() {
                let names: Vec<String> = l
                    .unknown_builders
                    .iter()
                    .map(|(b, n)| format!("{b} {n}"))
                    .collect();
                s.push_str(&format!(" ({})", names.join(", ")));
            }
            if l.enrollments > 0 {
                s.push_str(&format!(", {} TPM enrollment record(s)", l.enrollments));
            }
            s.push_str(&format!(
                ", {} invalid, {} conflicting claim(s)",
                l.invalid, l.conflicts
            ));
        }
        if let Some(c) = l.cosignatures {
            s.push_str(&format!("; {c} witness cosignature(s)"));
        }
        if !l.consistency.is_empty() {
            s.push_str(&format!("; consistency: {}", l.consistency));
        }
        if l.earlier_findings > 0 {
            s.push_str(&format!(
                "; {} finding(s) from earlier runs in the state",
                l.earlier_findings
            ));
        }
        println!("{s}");
    }
    println!(
        "audit: {} finding(s), exit {} (state {})",
        r.findings.len(),
        r.exit_code,
        r.state.display()
    );
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error("{0}")]
    Unreachable(String),
    #[error("the log serves data that contradicts itself: {0}")]
    Tile(#[from] TileError),
    #[error("entry #{index} differs from what was audited before: its leaf hash was {was}, the log now serves {now}")]
    Rewritten { index: u64, was: Hash, now: Hash },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A claim waiting to be checked against the index.
struct Pending {
    index: u64,
    builder: String,
    claims: Vec<KeyClaim>,
}

/// Differences between the leaves audited before and what the log serves now.
#[derive(Debug, Default)]
struct Divergence {
    count: u64,
    examples: Vec<(u64, Hash, Hash)>,
}

/// The failure record kept for a log caught forking.
#[derive(Serialize, serde::Deserialize)]
struct FailureRecord {
    at: String,
    reason: String,
    evidence: Vec<String>,
}

struct LogAudit<'a> {
    log: &'a LogConfig,
    keys: Arc<HashMap<String, NixPublicKey>>,
    client: LogClient,
    fetch_ahead: usize,
    report: LogReport,
    findings: Vec<Finding>,
    /// Findings made so far per kind (the output lists `MAX_LISTED` of each).
    listed: HashMap<FindingKind, usize>,
    /// When this run started (RFC 3339), stored with its findings.
    run_at: String,
}

impl LogAudit<'_> {
    /// A finding about this log, and whether to list it: only the first `MAX_LISTED` of each
    /// kind are (every one is counted, and stored by the caller).
    #[allow(clippy::too_many_arguments)]
    fn make(
        &mut self,
        kind: FindingKind,
        index: Option<u64>,
        key: Option<String>,
        builders: Vec<String>,
        message: String,
        claims: Vec<ClaimRef>,
    ) -> (Finding, bool) {
        let n = self.listed.entry(kind).or_insert(0);
        *n += 1;
        let f = Finding {
            kind,
            log: self.report.log.clone(),
            url: self.log.url.clone(),
            index,
            key,
            builders,
            message,
            claims,
        };
        (f, *n <= MAX_LISTED)
    }

    /// Stores a finding of the replay in its transaction, and lists it (up to the cap).
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &mut self,
        tx: &mut SqliteConnection,
        log_id: i64,
        listed: &mut Vec<Finding>,
        kind: FindingKind,
        index: Option<u64>,
        key: Option<String>,
        builders: Vec<String>,
        message: String,
        claims: Vec<ClaimRef>,
    ) -> Result<(), DbError> {
        let (f, list) = self.make(kind, index, key, builders, message, claims);
        let detail = serde_json::to_string(&f).unwrap_or_default();
        let line = f.line();
        db::insert_finding(
            tx,
            &self.run_at,
            &FindingRow {
                log: log_id,
                kind: kind.as_str(),
                idx: f.index,
                key: f.key.as_deref(),
                line: &line,
                detail: &detail,
            },
        )
        .await?;
        if list {
            listed.push(f);
        }
        Ok(())
    }

    fn simple(&mut self, kind: FindingKind, message: String) {
        let (f, _) = self.make(kind, None, None, Vec::new(), message, Vec::new());
        self.findings.push(f);
    }

    async fn run(&mut self, db: &mut AuditDb) -> anyhow::Result<()> {
        let key = self.log.key.to_string();
        let mut row = db.log_row(&key).await?;
        self.report.earlier_findings = db.finding_count(row.id).await?;
        self.report.previous_size = row.size;
        self.report.audited_size = row.size;
        let kept = match &row.checkpoint {
            Some(note) => Some(self.log.key.verify(note).map_err(|e| {
                DbError::Corrupt(format!(
                    "the checkpoint kept for {} does not verify: {e}",
                    self.report.log
                ))
            })?),
            None => None,
        };
        let frontier = row.frontier()?;
        let kept_root = kept.as_ref().map_or(Hash::EMPTY_ROOT, |k| *k.root());
        if kept.as_ref().map_or(0, SignedCheckpoint::size) != row.size
            || frontier.root() != kept_root
        {
            return Err(DbError::Corrupt(format!(
                "the tree edge kept for {} does not match its kept checkpoint",
                self.report.log
            ))
            .into());
        }
        if let Some(f) = &row.failed {
            let rec: Option<FailureRecord> = serde_json::from_str(f).ok();
            let (at, reason) = rec.map_or(("?".into(), f.clone()), |r| (r.at, r.reason));
            self.simple(
                FindingKind::Misbehaviour,
                format!(
                    "marked failed since {at}: {reason} (both signed checkpoints are kept in {}; audit it with a fresh --state to start over)",
                    db.path().display()
                ),
            );
            return Ok(());
        }

        let note = match self.client.checkpoint().await {
            Ok(n) => n,
            Err(e) => {
                self.simple(FindingKind::Unreachable, format!("GET /checkpoint: {e}"));
                return Ok(());
            }
        };
        let cp = match self.log.key.verify(&note) {
            Ok(cp) => cp,
            Err(e) => {
                self.simple(
                    FindingKind::Misbehaviour,
                    format!("its checkpoint is not validly signed by the trust file's key: {e}"),
                );
                return Ok(());
            }
        };
        self.report.size = Some(cp.size());
        if !self.log.witnesses.is_empty() {
            let have = valid_cosignatures(&note, &self.log.witnesses).len();
            self.report.cosignatures = Some(have);
            if have < self.log.min_witnesses {
                self.simple(
                    FindingKind::Unwitnessed,
                    format!(
                        "checkpoint {} carries {have} valid witness cosignature(s); the trust file requires {} before its entries count",
                        cp.size(),
                        self.log.min_witnesses
                    ),
                );
            }
        }

        let old = row.size;
        let new = cp.size();
        if new < old {
            self.shrunk(db, &row, kept.as_ref(), &cp).await?;
            return Ok(());
        }
        if new == old {
            if cp.root() != &kept_root {
                self.forked(
                    db,
                    &row,
                    kept.as_ref(),
                    &cp,
                    format!("two checkpoints of size {new} with different roots"),
                    new,
                )
                .await?;
            } else {
                self.report.consistency = "same checkpoint as before".into();
            }
            return Ok(());
        }
        // A larger tree: the log's consistency proof first (cheap), then recomputation.
        let mut proof_ok = None;
        if old > 0 {
            match self.client.consistency(old, new).await {
                Ok(r) if r.from == old && r.to == new => {
                    let ok = merkle::verify_consistency(old, new, &r.proof, &kept_root, cp.root())
                        .is_ok();
                    if !ok {
                        self.forked(
                            db,
                            &row,
                            kept.as_ref(),
                            &cp,
                            format!(
                                "checkpoint {new} is not consistent with checkpoint {old} audited before: the log's consistency proof does not verify"
                            ),
                            old,
                        )
                        .await?;
                        return Ok(());
                    }
                    proof_ok = Some(true);
                }
                Ok(r) => {
                    self.simple(
                        FindingKind::Misbehaviour,
                        format!(
                            "asked for a consistency proof {old} → {new}, the log answered {} → {}",
                            r.from, r.to
                        ),
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(log = %self.log.url, error = %e, "no consistency proof; checking by recomputation only");
                    self.report.consistency = format!("proof unavailable ({e}); ");
                    proof_ok = Some(false);
                }
            }
        }

        let builders_before = db.builders.clone();
        let mut tx = db::begin(&mut db.conn).await?;
        let mut frontier = frontier;
        let mut listed: Vec<Finding> = Vec::new();
        let replay = self
            .replay(
                &mut tx,
                &mut db.builders,
                &mut row,
                &mut frontier,
                new,
                &mut listed,
            )
            .await;
        match replay {
            Ok(()) if frontier.root() == *cp.root() => {
                row.checkpoint = Some(note.clone());
                row.size = new;
                row.frontier = frontier.nodes().to_vec();
                db::save_log(&mut tx, &row).await?;
                let committing = Instant::now();
                tx.commit().await.map_err(DbError::from)?;
                tracing::debug!(
                    secs = committing.elapsed().as_secs_f64(),
                    "committed the audit state"
                );
                listed.sort_by_key(|f| f.index);
                self.findings.extend(listed);
                for (kind, n) in &self.listed {
                    if *n > MAX_LISTED {
                        let kind = *kind;
                        self.findings.push(Finding {
                            kind,
                            log: self.report.log.clone(),
                            url: self.log.url.clone(),
                            index: None,
                            key: None,
                            builders: Vec::new(),
                            message: format!(
                                "{n} {} findings in all; the first {MAX_LISTED} are listed, every one is stored in {}",
                                kind.as_str(),
                                db.path().display()
                            ),
                            claims: Vec::new(),
                        });
                    }
                }
                self.report.audited_size = new;
                self.report.consistency.push_str(match proof_ok {
                    None => "first audit: root recomputed from every entry",
                    Some(true) => "proof verified and root recomputed from the kept tree edge",
                    Some(false) => "root recomputed from the kept tree edge",
                });
                Ok(())
            }
            outcome => {
                drop(tx);
                db.builders = builders_before;
                self.discard_counts();
                match outcome {
                    Ok(()) => {
                        let msg = format!(
                            "the entries it serves for #{old}..#{} do not hash to the root of its signed checkpoint {new}",
                            new - 1
                        );
                        // Without a verified proof, nothing shows the new tree extends the
                        // old one: if entries audited before changed, it is a fork.
                        let rewritten = proof_ok == Some(false)
                            && self
                                .divergence(&mut db.conn, row.id, old)
                                .await
                                .is_ok_and(|d| d.count > 0);
                        if rewritten {
                            self.forked(db, &row, kept.as_ref(), &cp, msg, old).await?;
                        } else {
                            self.simple(FindingKind::Misbehaviour, msg);
                        }
                    }
                    Err(ReplayError::Unreachable(m)) => self.simple(FindingKind::Unreachable, m),
                    Err(ReplayError::Db(e)) => return Err(e.into()),
                    Err(e @ (ReplayError::Tile(_) | ReplayError::Rewritten { .. })) => {
                        self.simple(FindingKind::Misbehaviour, e.to_string());
                    }
                }
                Ok(())
            }
        }
    }

    /// Forgets what a rolled-back replay counted.
    fn discard_counts(&mut self) {
        let r = &mut self.report;
        r.new_entries = 0;
        r.valid = 0;
        r.unknown_builder = 0;
        r.unknown_builders.clear();
        r.invalid = 0;
        r.enrollments = 0;
        r.conflicts = 0;
        self.listed.clear();
    }

    /// Fetches, checks and indexes entries `row.size .. new`, extending `frontier`.
    async fn replay(
        &mut self,
        tx: &mut SqliteConnection,
        builders: &mut Builders,
        row: &mut LogRow,
        frontier: &mut Frontier,
        new: TreeSize,
        listed: &mut Vec<Finding>,
    ) -> Result<(), ReplayError> {
        let old = row.size;
        let first_tile = old / 256;
        let end_tile = new.div_ceil(256);
        let client = self.client.clone();
        let keys = self.keys.clone();
        let log_key = Arc::new(self.log.key.clone());
        let fetch_ahead = self.fetch_ahead;
        let (send, mut recv) =
            tokio::sync::mpsc::channel::<Result<CheckedTile, ReplayError>>(fetch_ahead * 2);
        let producer = tokio::spawn(async move {
            let tiles = futures::stream::iter(first_tile..end_tile)
                .map(|t| {
                    let client = client.clone();
                    async move {
                        let start = t * 256;
                        let width = (new - start).min(256) as usize;
                        let skip = old.saturating_sub(start) as usize;
                        fetch_tile(&client, t, width, skip).await
                    }
                })
                .buffered(fetch_ahead)
                .map(|r| {
                    let (keys, log_key) = (keys.clone(), log_key.clone());
                    async move {
                        let raw = r?;
                        tokio::task::spawn_blocking(move || {
                            check::check_tile(&raw, &keys, &log_key).map_err(ReplayError::from)
                        })
                        .await
                        .unwrap_or_else(|e| {
                            Err(ReplayError::Unreachable(format!(
                                "checking task failed: {e}"
                            )))
                        })
                    }
                })
                .buffered(CHECK_AHEAD);
            futures::pin_mut!(tiles);
            while let Some(t) = tiles.next().await {
                let stop = t.is_err();
                if send.send(t).await.is_err() || stop {
                    break;
                }
            }
        });
        let _abort = AbortOnDrop(producer);

        let mut progress = Progress::new(&self.report.log, new - old);
        let started = Instant::now();
        let (mut waited, mut in_db) = (Duration::ZERO, Duration::ZERO);
        let mut pending: Vec<Pending> = Vec::new();
        let mut pending_claims = 0usize;
        let mut names = HashMap::from([(row.id, self.report.log.clone())]);
        loop {
            let w = Instant::now();
            let Some(t) = recv.recv().await else {
                break;
            };
            waited += w.elapsed();
            let t = t?;
            let d = Instant::now();
            if t.skip > 0 {
                let stored = db::leaves_tile(tx, row.id, t.tile).await?;
                for i in 0..t.skip {
                    let (was, now) = (stored.get(i).copied(), t.leaves[i]);
                    if was != Some(now) {
                        return Err(ReplayError::Rewritten {
                            index: t.tile * 256 + i as u64,
                            was: was.unwrap_or_default(),
                            now,
                        });
                    }
                }
            }
            for h in &t.leaves[t.skip..] {
                frontier.push(*h);
            }
            db::put_leaves_tile(tx, row.id, t.tile, &t.leaves).await?;
            let base = t.tile * 256 + t.skip as u64;
            let n = t.outcomes.len() as u64;
            for (j, o) in t.outcomes.into_iter().enumerate() {
                let index = base + j as u64;
                match o {
                    Outcome::Valid { builder, claims } => {
                        self.report.valid += 1;
                        pending_claims += claims.len();
                        pending.push(Pending {
                            index,
                            builder,
                            claims,
                        });
                    }
                    Outcome::Enrollment { .. } => {
                        self.report.enrollments += 1;
                    }
                    Outcome::UnknownBuilder { builder } => {
                        self.report.unknown_builder += 1;
                        *self.report.unknown_builders.entry(builder).or_insert(0) += 1;
                    }
                    Outcome::Invalid {
                        builder,
                        key,
                        reason,
                    } => {
                        self.report.invalid += 1;
                        let by = builder.clone().unwrap_or_else(|| "?".into());
                        self.record(
                            tx,
                            row.id,
                            listed,
                            FindingKind::Invalid,
                            Some(index),
                            key,
                            builder.into_iter().collect(),
                            format!("entry by {by}: {reason}"),
                            Vec::new(),
                        )
                        .await?;
                    }
                }
            }
            self.report.new_entries += n;
            if pending_claims >= CLAIM_BATCH {
                self.flush(tx, builders, row.id, &mut names, &mut pending, listed)
                    .await?;
                pending_claims = 0;
            }
            in_db += d.elapsed();
            progress.add(n);
        }
        let d = Instant::now();
        self.flush(tx, builders, row.id, &mut names, &mut pending, listed)
            .await?;
        in_db += d.elapsed();
        progress.finish();
        tracing::debug!(
            log = %self.report.log,
            entries = new - old,
            secs = started.elapsed().as_secs_f64(),
            waiting_for_tiles = waited.as_secs_f64(),
            indexing = in_db.as_secs_f64(),
            "replayed"
        );
        row.valid += self.report.valid;
        row.unknown += self.report.unknown_builder;
        row.invalid += self.report.invalid;
        if frontier.size() != new {
            return Err(ReplayError::Unreachable(format!(
                "the replay stopped at {} of {new} entries",
                frontier.size()
            )));
        }
        Ok(())
    }

    /// Checks pending claims against the index (and each other), reports conflicts, and
    /// indexes the new ones.
    async fn flush(
        &mut self,
        tx: &mut SqliteConnection,
        builders: &mut Builders,
        log_id: i64,
        log_names: &mut HashMap<i64, String>,
        pending: &mut Vec<Pending>,
        listed: &mut Vec<Finding>,
    ) -> Result<(), ReplayError> {
        if pending.is_empty() {
            return Ok(());
        }
        let keys: BTreeSet<&str> = pending
            .iter()
            .flat_map(|p| p.claims.iter().map(|c| c.key.as_str()))
            .collect();
        let keys: Vec<&str> = keys.into_iter().collect();
        let mut index: HashMap<String, Vec<ClaimRow>> = HashMap::new();
        for r in db::claims_for(tx, &keys).await? {
            index.entry(r.key.clone()).or_default().push(r);
        }
        if index
            .values()
            .flatten()
            .any(|r| !log_names.contains_key(&r.log))
        {
            let mut all = HashMap::new();
            for (id, key) in db::log_keys(tx).await? {
                let name = key
                    .parse::<provenix_core::checkpoint::LogVerifier>()
                    .map(|v| v.name().to_owned())
                    .unwrap_or(key);
                all.insert(id, name);
            }
            log_names.extend(all);
        }
        let mut new_rows = Vec::new();
        for p in pending.drain(..) {
            let bid = builders.id(tx, &p.builder).await?;
            for c in p.claims {
                let nar = *c.nar.as_bytes();
                let known = index.entry(c.key.clone()).or_default();
                let others: Vec<&ClaimRow> = known.iter().filter(|r| r.nar != nar).collect();
                if !others.is_empty() {
                    self.report.conflicts += 1;
                    let only_self = others.iter().all(|r| r.builder == bid);
                    let kind = if only_self {
                        FindingKind::SelfConflict
                    } else {
                        FindingKind::Conflict
                    };
                    let mut refs = vec![ClaimRef {
                        builder: p.builder.clone(),
                        nar_hash: c.nar.to_nix32_prefixed(),
                        log: self.report.log.clone(),
                        index: p.index,
                    }];
                    let mut parts = Vec::new();
                    let mut names = vec![p.builder.clone()];
                    for r in &others {
                        let b = builders.name(r.builder).to_owned();
                        let log = log_names.get(&r.log).cloned().unwrap_or_default();
                        let h = NarHash::from_bytes(r.nar).to_nix32_prefixed();
                        let who = if r.builder == bid {
                            format!("{b} itself")
                        } else {
                            b.clone()
                        };
                        parts.push(format!("{who} claimed {h} ({log} #{})", r.idx));
                        if !names.contains(&b) {
                            names.push(b.clone());
                        }
                        refs.push(ClaimRef {
                            builder: b,
                            nar_hash: h,
                            log,
                            index: r.idx,
                        });
                    }
                    let what = if only_self {
                        "a rebuild that differs"
                    } else {
                        "builders disagree"
                    };
                    let message = format!(
                        "{what}: {} claims {} for {}; {}",
                        p.builder,
                        c.nar.to_nix32_prefixed(),
                        c.path,
                        parts.join("; ")
                    );
                    self.record(
                        tx,
                        log_id,
                        listed,
                        kind,
                        Some(p.index),
                        Some(c.key.clone()),
                        names,
                        message,
                        refs,
                    )
                    .await?;
                }
                let already = known
                    .iter()
                    .any(|r| r.nar == nar && r.builder == bid && r.log == log_id);
                if !already {
                    let r = ClaimRow {
                        key: c.key,
                        nar,
                        builder: bid,
                        log: log_id,
                        idx: p.index,
                    };
                    known.push(r.clone());
                    new_rows.push(r);
                }
            }
        }
        db::insert_claims(tx, &new_rows).await?;
        Ok(())
    }

    /// The log's tree shrank below what was audited.
    async fn shrunk(
        &mut self,
        db: &mut AuditDb,
        row: &LogRow,
        kept: Option<&SignedCheckpoint>,
        cp: &SignedCheckpoint,
    ) -> anyhow::Result<()> {
        let prefix = stored_root(&mut db.conn, row.id, cp.size()).await?;
        if prefix == *cp.root() {
            self.simple(
                FindingKind::Misbehaviour,
                format!(
                    "its checkpoint shrank from {} to {} (an older checkpoint of the same history: a rollback or a stale replica)",
                    row.size,
                    cp.size()
                ),
            );
            return Ok(());
        }
        self.forked(
            db,
            row,
            kept,
            cp,
            format!(
                "its checkpoint shrank from {} to {}, and its root is not the root of the first {} entries audited before",
                row.size,
                cp.size(),
                cp.size()
            ),
            cp.size(),
        )
        .await
    }

    /// The log signed `cp`, which cannot be honest together with the kept checkpoint: mark it
    /// failed (with both notes) and locate the entries below `upto` that changed.
    async fn forked(
        &mut self,
        db: &mut AuditDb,
        row: &LogRow,
        kept: Option<&SignedCheckpoint>,
        cp: &SignedCheckpoint,
        reason: String,
        upto: u64,
    ) -> anyhow::Result<()> {
        let located = match self.divergence(&mut db.conn, row.id, upto).await {
            Ok(d) => describe(&d, upto),
            Err(e) => format!("could not compare the entries audited before: {e}"),
        };
        let reason = format!("{reason}; {located}");
        let record = FailureRecord {
            at: now_rfc3339(),
            reason: reason.clone(),
            evidence: kept
                .map(|k| k.note().to_owned())
                .into_iter()
                .chain([cp.note().to_owned()])
                .collect(),
        };
        db::mark_failed(&mut db.conn, row.id, &serde_json::to_string(&record)?).await?;
        self.simple(
            FindingKind::Misbehaviour,
            format!(
                "{reason}. The log is marked failed; both signed checkpoints are kept in {}",
                db.path().display()
            ),
        );
        if let Some(f) = self.findings.last().cloned() {
            let detail = serde_json::to_string(&f)?;
            let line = f.line();
            db::insert_finding(
                &mut db.conn,
                &self.run_at,
                &FindingRow {
                    log: row.id,
                    kind: f.kind.as_str(),
                    idx: f.index,
                    key: None,
                    line: &line,
                    detail: &detail,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Compares the stored leaf hashes of entries `0 .. upto` with the log's level-0 tiles.
    async fn divergence(
        &self,
        conn: &mut SqliteConnection,
        log_id: i64,
        upto: u64,
    ) -> Result<Divergence, String> {
        let mut d = Divergence::default();
        let client = self.client.clone();
        let tiles = futures::stream::iter(0..upto.div_ceil(256))
            .map(|t| {
                let client = client.clone();
                async move {
                    let width = (upto - t * 256).min(256) as u16;
                    let path = TilePath {
                        kind: TileKind::Hashes { level: 0 },
                        index: t,
                        width,
                    };
                    let bytes = client
                        .tile(&path)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("the log does not serve {path}"))?;
                    Ok::<_, String>((t, bytes))
                }
            })
            .buffered(self.fetch_ahead);
        futures::pin_mut!(tiles);
        while let Some(r) = tiles.next().await {
            let (t, bytes) = r?;
            let stored = db::leaves_tile(conn, log_id, t)
                .await
                .map_err(|e| e.to_string())?;
            for (i, now) in bytes.chunks_exact(32).enumerate() {
                let now = Hash::from_slice(now).unwrap_or_default();
                let was = stored.get(i).copied().unwrap_or_default();
                if was != now {
                    d.count += 1;
                    if d.examples.len() < 5 {
                        d.examples.push((t * 256 + i as u64, was, now));
                    }
                }
            }
        }
        Ok(d)
    }
}

fn describe(d: &Divergence, upto: u64) -> String {
    match (d.count, d.examples.first()) {
        (0, _) | (_, None) => format!(
            "none of the first {upto} entries audited before differs in the log's hash tiles"
        ),
        (1, Some((i, was, now))) => {
            format!("entry #{i} was rewritten: its leaf hash was {was}, the log now serves {now}")
        }
        (n, Some((i, was, now))) => {
            let rest: Vec<String> = d
                .examples
                .iter()
                .skip(1)
                .map(|(i, _, _)| format!("#{i}"))
                .collect();
            format!(
                "{n} of the {upto} entries audited before differ from what the log now serves, from #{i} on (#{i}: leaf hash was {was}, now {now}{}{})",
                if rest.is_empty() { "" } else { "; also " },
                rest.join(", ")
            )
        }
    }
}

/// The root of the first `n` stored leaves of `log`.
async fn stored_root(conn: &mut SqliteConnection, log: i64, n: u64) -> Result<Hash, DbError> {
    let mut f = Frontier::new();
    for t in 0..n.div_ceil(256) {
        let hashes = db::leaves_tile(conn, log, t).await?;
        for h in hashes.iter().take((n - t * 256).min(256) as usize) {
            f.push(*h);
        }
    }
    if f.size() != n {
        return Err(DbError::Corrupt(format!(
            "only {} of {n} audited leaf hashes are stored",
            f.size()
        )));
    }
    Ok(f.root())
}

/// Fetches the level-0 hash tile and the entry bundle of tile `t` (`width` leaves).
async fn fetch_tile(
    client: &LogClient,
    t: u64,
    width: usize,
    skip: usize,
) -> Result<RawTile, ReplayError> {
    let w = u16::try_from(width).unwrap_or(256);
    let hp = TilePath {
        kind: TileKind::Hashes { level: 0 },
        index: t,
        width: w,
    };
    let ep = TilePath {
        kind: TileKind::Entries,
        index: t,
        width: w,
    };
    let (h, e) = futures::join!(client.tile(&hp), client.tile(&ep));
    let get = |r: Result<Option<bytes::Bytes>, crate::logclient::ClientError>, p: &TilePath| {
        r.map_err(|e| ReplayError::Unreachable(format!("GET {p}: {e}")))?
            .ok_or_else(|| {
                ReplayError::Unreachable(format!(
                    "the log does not serve {p}, which its checkpoint covers"
                ))
            })
    };
    Ok(RawTile {
        tile: t,
        width,
        skip,
        hashes: get(h, &hp)?,
        bundle: get(e, &ep)?,
    })
}

/// Aborts a task when dropped (the replay's producer, when the consumer stops early).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
