//! `provenix push`: drains the spool into every configured log.
//!
//! For each hook record (see [`crate::spool`] for the on-disk protocol):
//!
//! 1. **Describe** the build from the store ([`crate::nixstore`]): outputs with NAR hashes, sizes
//!    and references; the `.drv` path and the SHA-256 of its file; the input closure with NAR
//!    hashes; the system. One `nix path-info` call per batch.
//! 2. **Claim**: the SHA-256 of the statement without counter and times. A claim that is
//!    already pending or delivered is a repeated hook call for an unchanged build: the record
//!    is dropped. A rebuild with another output (or other inputs) is a new claim.
//! 3. **Prepare**: reserve counters (durable first), build the statement (source from the
//!    config, `builtLocally: true`, counter, `startedOn` = creation of Nix's build log when
//!    known, `finishedOn` = when the hook ran), sign with the builder key, and write the
//!    envelopes to a pending batch *before* unlinking the hook records.
//! 4. **Deliver** each pending envelope to every log, in batches, concurrently across logs,
//!    retrying with exponential backoff. A log that answers `duplicate: true` already holds
//!    that exact envelope (a retry after a crash). A batch is removed only after every log
//!    acknowledged every record in it; an entry a log refuses as `malformed` or `too_large`
//!    can never succeed and is set aside in `failed/` with the reason. Every other refusal
//!    (`unknown_builder`, `bad_signature`, HTTP errors) is the log's configuration or health:
//!    the records wait.
//!
//! `--once` drains and exits: 0 when the spool is empty, [`EXIT_UNDELIVERED`] when records
//! remain because a log or the store stayed unavailable after `push.once-attempts` tries,
//! [`EXIT_SET_ASIDE`] when everything else was delivered but some records went to `failed/`.
//! Without `--once` it runs as a service, polling the spool. Killing it at any point loses
//! nothing: every step is durable before the next begins.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use provenix_core::api::SubmitResult;
use provenix_core::entry::{Envelope, NixBuild, Source, MAX_LEAF_BYTES};
use provenix_core::nix::{NixSecretKey, StorePath};
use serde_json::json;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::builder_config::BuilderConfig;
use crate::logclient::{ClientError, LogClient};
use crate::nixstore::{BuildFacts, FactsError, NixStore, StoreLocation};
use crate::spool::{DeliveredIndex, HookRecord, IncomingRecord, PendingRecord, RecordId, Spool};

/// Exit status of `push --once` when records remain undelivered.
pub const EXIT_UNDELIVERED: u8 = 2;
/// Exit status of `push --once` when all deliverable records were delivered but some were
/// set aside in `failed/`.
pub const EXIT_SET_ASIDE: u8 = 3;
/// Prepared records held in memory before `push` stops preparing more until logs catch up.
const MAX_IN_MEMORY: usize = 20_000;
/// Largest request body `push` sends (well under `provenixd`'s default limit).
const MAX_SUBMIT_BYTES: usize = 8 << 20;

/// Arguments of `provenix push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The builder config (builder.toml).
    #[arg(long, env = "PROVENIX_CONFIG")]
    pub config: PathBuf,
    /// Drain the spool and exit (0: empty; 2: records remain; 3: some set aside in failed/).
    #[arg(long)]
    pub once: bool,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Hook records turned into signed entries.
    pub prepared: u64,
    /// Hook records dropped because the same claim was pending or delivered already.
    pub duplicates_dropped: u64,
    /// Entries every log acknowledged (and that left the spool).
    pub delivered: u64,
    /// Of the acknowledgements, how many a log answered with `duplicate: true`.
    pub already_in_log: u64,
    /// Records set aside in `failed/`.
    pub set_aside: u64,
    /// Records still in the spool at exit (incoming + pending).
    pub remaining: u64,
}

/// Runs `provenix push` (the CLI entry point).
pub fn run(args: &PushArgs) -> anyhow::Result<ExitCode> {
    let cfg = BuilderConfig::from_file(&args.config)?;
    let key = cfg.read_key()?;
    let mut pusher = Pusher::new(cfg, key)?;
    let report = pusher.run(args.once)?;
    println!(
        "provenix push: {} prepared, {} delivered ({} already in the log), {} repeated hook calls dropped, {} set aside, {} remaining",
        report.prepared,
        report.delivered,
        report.already_in_log,
        report.duplicates_dropped,
        report.set_aside,
        report.remaining
    );
    Ok(if report.remaining > 0 {
        eprintln!(
            "provenix push: {} records remain in the spool {} (a log or the store is unavailable); they will be delivered by the next push",
            report.remaining,
            pusher.spool.dir().display()
        );
        ExitCode::from(EXIT_UNDELIVERED)
    } else if report.set_aside > 0 {
        eprintln!(
            "provenix push: {} records could not be delivered and were set aside in {}",
            report.set_aside,
            pusher.spool.dir().join(crate::spool::FAILED).display()
        );
        ExitCode::from(EXIT_SET_ASIDE)
    } else {
        ExitCode::SUCCESS
    })
}

struct LogState {
    client: LogClient,
    failures: u32,
    next_try: Instant,
    gave_up: bool,
}

struct Rec {
    claim: String,
    counter: u64,
    drv: String,
    envelope: Vec<u8>,
    acked: Vec<bool>,
    set_aside: bool,
}

struct Batch {
    path: PathBuf,
    records: Vec<Rec>,
}

/// Retry schedule: doubles from `initial` up to `max`, with ±25% jitter so that many builders
/// do not return to a recovered log in lock-step.
fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let base = initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max);
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 501)
        .unwrap_or(250);
    base.mul_f64(0.75 + f64::from(jitter) / 1000.0)
}

/// An error with its causes (`reqwest` keeps the useful part, e.g. "connection refused", in
/// the source chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Unix nanoseconds as an RFC 3339 UTC time with nanoseconds (`2026-11-21T23:48:31.687143418Z`).
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Civil from days (H. Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The claim of a build: SHA-256 over a domain tag and the statement without counter and
/// times (hex). Equal claims are the same build result; the log needs it only once.
pub fn claim_of(build: &NixBuild) -> String {
    let mut b = build.clone();
    b.counter = None;
    b.started_on = None;
    b.finished_on = None;
    let statement = serde_json::to_vec(&b.to_statement()).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(b"provenix-claim-v1\n");
    h.update(&statement);
    hex::encode(h.finalize())
}

/// Signs `build`; if the envelope would exceed the log's leaf limit, lists only the direct
/// inputs in `resolvedDependencies` and commits to the whole input closure by digest
/// (`internalParameters.inputClosure`). `None` if even that is too large.
fn sign_bounded(build: &NixBuild, facts: &BuildFacts, key: &NixSecretKey) -> Option<Vec<u8>> {
    let env = build.sign(key).canonical_json();
    if env.len() <= MAX_LEAF_BYTES {
        return Some(env);
    }
    let mut small = build.clone();
    small
        .dependencies
        .retain(|d| facts.direct_inputs.binary_search(&d.path).is_ok());
    let mut closure = Sha256::new();
    for d in &build.dependencies {
        closure.update(format!("{} {}\n", d.path, d.nar_hash.to_hex()).as_bytes());
    }
    let mut statement = small.to_statement();
    statement
        .predicate
        .build_definition
        .internal_parameters
        .insert(
            "inputClosure".into(),
            json!({
                "paths": build.dependencies.len(),
                "sha256": hex::encode(closure.finalize()),
            }),
        );
    let payload = serde_json::to_vec(&statement).ok()?;
    let env = Envelope::sign(payload, key).canonical_json();
    (env.len() <= MAX_LEAF_BYTES).then_some(env)
}

/// The pusher: the spool (locked), the builder key and one client per log.
pub struct Pusher {
    cfg: BuilderConfig,
    key: NixSecretKey,
    spool: Spool,
    delivered: DeliveredIndex,
    logs: Vec<LogState>,
    batches: Vec<Batch>,
    pending_claims: HashSet<String>,
    store_failures: u32,
    store_next_try: Instant,
    rt: tokio::runtime::Runtime,
    report: PushReport,
    once: bool,
    /// Quotes each entry's trace digest with the builder's TPM (`[tpm]`).
    #[cfg(feature = "tpm")]
    quoter: Option<crate::attest::Quoter>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("spool", &self.spool.dir())
            .field("builder", &self.key.name())
            .finish()
    }
}

impl Pusher {
    /// Opens (and locks) the spool, loads pending batches and the delivered index.
    pub fn new(cfg: BuilderConfig, key: NixSecretKey) -> anyhow::Result<Self> {
        #[cfg(feature = "tpm")]
        let quoter = cfg
            .tpm
            .as_ref()
            .map(|t| crate::attest::Quoter::new(t, &cfg.key_file));
        #[cfg(not(feature = "tpm"))]
        if cfg.tpm.is_some() {
            // A builder configured to attest must not push unattested entries.
            anyhow::bail!(
                "builder.toml has a [tpm] table but {}",
                crate::attest::NO_TPM_FEATURE
            );
        }
        let spool = Spool::open(&cfg.spool)?;
        let delivered = spool.delivered(cfg.push.dedup_window)?;
        let http = crate::logclient::http_client(cfg.push.timeout());
        let now = Instant::now();
        let logs = cfg
            .logs
            .iter()
            .map(|u| {
                Ok(LogState {
                    client: LogClient::with_http(u, http.clone())?,
                    failures: 0,
                    next_try: now,
                    gave_up: false,
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let mut me = Self {
            cfg,
            key,
            spool,
            delivered,
            logs,
            batches: Vec::new(),
            pending_claims: HashSet::new(),
            store_failures: 0,
            store_next_try: now,
            rt,
            report: PushReport::default(),
            once: false,
            #[cfg(feature = "tpm")]
            quoter,
        };
        let (batches, bad) = me.spool.pending()?;
        for msg in bad {
            tracing::error!("{msg}; set aside in failed/");
        }
        let n = me.logs.len();
        for b in batches {
            let records = b
                .records
                .into_iter()
                .map(|r| Rec {
                    claim: r.claim,
                    counter: r.counter,
                    drv: r.drv,
                    envelope: r.envelope.get().as_bytes().to_vec(),
                    acked: vec![false; n],
                    set_aside: false,
                })
                .collect::<Vec<_>>();
            me.pending_claims
                .extend(records.iter().map(|r| r.claim.clone()));
            me.batches.push(Batch {
                path: b.path,
                records,
            });
        }
        Ok(me)
    }

    /// Drains the spool; with `once == false` runs until killed.
    pub fn run(&mut self, once: bool) -> anyhow::Result<PushReport> {
        self.once = once;
        let cap = MAX_IN_MEMORY.max(self.cfg.push.batch_size);
        let in_memory = |b: &[Batch]| b.iter().map(|b| b.records.len()).sum::<usize>();
        loop {
            // Prepare more only while the backlog held in memory is bounded (a long outage
            // leaves the rest in the journal, where it is just as safe).
            let more_incoming = if in_memory(&self.batches) >= cap {
                true
            } else {
                self.intake(once)?
            };
            self.deliver();
            self.finalize()?;
            let waiting = self.batches.iter().any(|b| !b.records.is_empty());
            let full = in_memory(&self.batches) >= cap;
            if once {
                let logs_done = !waiting
                    || self
                        .logs
                        .iter()
                        .enumerate()
                        .all(|(i, l)| l.gave_up || !self.has_work(i));
                let store_done =
                    !more_incoming || self.store_failures >= self.cfg.push.once_attempts || full;
                if logs_done && store_done {
                    break;
                }
            }
            // Sleep unless something can be done right now.
            let now = Instant::now();
            let log_ready = self
                .logs
                .iter()
                .enumerate()
                .any(|(i, l)| !l.gave_up && l.next_try <= now && self.has_work(i));
            let store_ready = more_incoming && !full && self.store_next_try <= now;
            if log_ready || store_ready {
                continue;
            }
            let mut wake = now + self.cfg.push.poll_interval();
            for (i, l) in self.logs.iter().enumerate() {
                if !l.gave_up && self.has_work(i) {
                    wake = wake.min(l.next_try);
                }
            }
            if more_incoming && !full {
                wake = wake.min(self.store_next_try);
            }
            if once && !more_incoming && !waiting {
                break;
            }
            std::thread::sleep(wake.saturating_duration_since(now));
        }
        let counts = crate::spool::counts(self.spool.dir())?;
        self.report.remaining = counts.undelivered() as u64;
        Ok(self.report)
    }

    fn has_work(&self, log: usize) -> bool {
        self.batches
            .iter()
            .flat_map(|b| &b.records)
            .any(|r| !r.set_aside && !r.acked[log])
    }

    /// Prepares one batch of hook records. Returns whether hook records remain to prepare.
    fn intake(&mut self, once: bool) -> anyhow::Result<bool> {
        if Instant::now() < self.store_next_try
            || (once && self.store_failures >= self.cfg.push.once_attempts)
        {
            return Ok(!self.spool.incoming(1)?.is_empty());
        }
        let batch_size = self.cfg.push.batch_size;
        let items = self.spool.incoming(batch_size)?;
        if items.is_empty() {
            return Ok(false);
        }
        let full = items.len() == batch_size;
        let mut consumed: Vec<RecordId> = Vec::new();
        // Group the records by the store they were built in.
        type Item = (IncomingRecord, HookRecord, StorePath, Vec<StorePath>);
        let mut groups: BTreeMap<Option<String>, Vec<Item>> = BTreeMap::new();
        for item in items {
            let checked = item.parsed.clone().and_then(|r| {
                let drv: StorePath = r
                    .drv_path
                    .parse()
                    .map_err(|e| format!("drvPath {:?}: {e}", r.drv_path))?;
                let outs = r
                    .out_paths
                    .iter()
                    .map(|p| {
                        p.parse::<StorePath>()
                            .map_err(|e| format!("outPaths {p:?}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((r, drv, outs))
            });
            match checked {
                Ok((r, drv, outs)) => {
                    let store = self.cfg.store.clone().or_else(|| r.store.clone());
                    groups.entry(store).or_default().push((item, r, drv, outs));
                }
                Err(reason) => {
                    self.set_aside_incoming(&item, &reason)?;
                    consumed.push(item.id);
                }
            }
        }
        let mut new_records: Vec<(NixBuild, BuildFacts, String, RecordId)> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut transient: Option<String> = None;
        for (store, recs) in groups {
            let loc = match StoreLocation::parse(store.as_deref()) {
                Ok(l) => l,
                Err(e) => {
                    for (item, ..) in &recs {
                        self.set_aside_incoming(item, &e.to_string())?;
                        consumed.push(item.id.clone());
                    }
                    continue;
                }
            };
            let nix = NixStore::new(loc, self.cfg.nix_bin_dir.as_deref());
            let queries: Vec<(StorePath, Vec<StorePath>)> = recs
                .iter()
                .map(|(_, _, d, o)| (d.clone(), o.clone()))
                .collect();
            let results = nix.describe(&queries);
            for ((item, rec, ..), res) in recs.into_iter().zip(results) {
                match res {
                    Ok(facts) => {
                        let build = self.build_of(&facts, &rec);
                        let claim = claim_of(&build);
                        if self.delivered.contains(&claim)
                            || self.pending_claims.contains(&claim)
                            || !seen.insert(claim.clone())
                        {
                            tracing::info!(drv = %facts.derivation, "same build result already recorded; dropping the repeated hook record");
                            self.report.duplicates_dropped += 1;
                        } else {
                            new_records.push((build, facts, claim, item.id.clone()));
                        }
                        consumed.push(item.id);
                    }
                    Err(FactsError::Permanent(reason)) => {
                        self.set_aside_incoming(&item, &reason)?;
                        consumed.push(item.id);
                    }
                    Err(FactsError::Transient(reason)) => {
                        transient.get_or_insert(reason);
                    }
                }
            }
        }
        if let Some(reason) = &transient {
            self.store_failures += 1;
            self.store_next_try = Instant::now()
                + backoff(
                    self.cfg.push.retry_initial(),
                    self.cfg.push.retry_max(),
                    self.store_failures,
                );
            tracing::warn!(
                attempt = self.store_failures,
                "cannot query the Nix store: {reason}"
            );
        } else {
            self.store_failures = 0;
        }
        if !new_records.is_empty() {
            let first = self.spool.reserve_counters(new_records.len() as u64)?;
            for (i, (build, ..)) in new_records.iter_mut().enumerate() {
                build.counter = Some(first + i as u64);
            }
            if let Err(e) = self.attest(&mut new_records) {
                // The TPM is part of what a record needs: like an unavailable store, the hook
                // records stay and are tried again (their reserved counters are skipped).
                let ids: HashSet<&RecordId> = new_records.iter().map(|r| &r.3).collect();
                consumed.retain(|id| !ids.contains(id));
                self.spool.remove_incoming(&consumed)?;
                self.store_failures += 1;
                self.store_next_try = Instant::now()
                    + backoff(
                        self.cfg.push.retry_initial(),
                        self.cfg.push.retry_max(),
                        self.store_failures,
                    );
                tracing::warn!(
                    attempt = self.store_failures,
                    "cannot quote with the TPM: {e:#}"
                );
                return Ok(true);
            }
            let mut pending = Vec::with_capacity(new_records.len());
            let mut recs = Vec::with_capacity(new_records.len());
            for (build, facts, claim, _) in new_records {
                let Some(counter) = build.counter else {
                    continue;
                };
                let Some(envelope) = sign_bounded(&build, &facts, &self.key) else {
                    let reason = format!(
                        "the entry for {} exceeds {MAX_LEAF_BYTES} bytes even with direct inputs only",
                        facts.derivation
                    );
                    self.spool.fail(
                        &format!("{counter:020}"),
                        &reason,
                        &facts.derivation.to_string(),
                    )?;
                    self.report.set_aside += 1;
                    continue;
                };
                let raw = RawValue::from_string(String::from_utf8(envelope.clone())?)?;
                pending.push(PendingRecord {
                    claim: claim.clone(),
                    counter,
                    drv: facts.derivation.to_string(),
                    envelope: raw,
                });
                recs.push(Rec {
                    claim,
                    counter,
                    drv: facts.derivation.to_string(),
                    envelope,
                    acked: vec![false; self.logs.len()],
                    set_aside: false,
                });
            }
            if !pending.is_empty() {
                let path = self.spool.write_pending(&pending)?;
                self.report.prepared += recs.len() as u64;
                self.pending_claims
                    .extend(recs.iter().map(|r| r.claim.clone()));
                self.batches.push(Batch {
                    path,
                    records: recs,
                });
            }
        }
        // Only now that the entries are durable in pending/ do the hook records go.
        self.spool.remove_incoming(&consumed)?;
        Ok(full || transient.is_some())
    }

    /// Adds a `tpm2-quote` byproduct (qualifying data = the entry's trace digest, which the
    /// byproduct does not change) to each build, when the builder attests.
    #[cfg(feature = "tpm")]
    fn attest(
        &mut self,
        records: &mut [(NixBuild, BuildFacts, String, RecordId)],
    ) -> anyhow::Result<()> {
        let Some(q) = self.quoter.as_mut() else {
            return Ok(());
        };
        let digests: Vec<[u8; 32]> = records.iter().map(|r| r.0.trace_digest()).collect();
        let quotes = q.quote_all(&digests)?;
        for (r, quote) in records.iter_mut().zip(quotes) {
            r.0.byproducts.push(quote.to_descriptor());
        }
        Ok(())
    }

    #[cfg(not(feature = "tpm"))]
    fn attest(
        &mut self,
        _records: &mut [(NixBuild, BuildFacts, String, RecordId)],
    ) -> anyhow::Result<()> {
        Ok(())
    }

    fn set_aside_incoming(&mut self, item: &IncomingRecord, reason: &str) -> anyhow::Result<()> {
        let name = item.id.name();
        tracing::error!("hook record {name} cannot be delivered: {reason}; set aside in failed/");
        self.spool.fail(&name, reason, &item.raw)?;
        self.report.set_aside += 1;
        Ok(())
    }

    fn build_of(&self, facts: &BuildFacts, rec: &HookRecord) -> NixBuild {
        NixBuild {
            builder: self.key.name().to_owned(),
            derivation: Some(facts.derivation.clone()),
            drv_sha256: Some(facts.drv_sha256),
            outputs: facts.outputs.clone(),
            dependencies: facts.dependencies.clone(),
            source: self.cfg.source.as_ref().map(|s| Source {
                uri: s.uri.clone(),
                reference: s.reference.clone(),
                attribute: s.attribute.clone(),
                git_commit: s.git_commit.clone(),
            }),
            built_locally: true,
            counter: None,
            system: Some(facts.system.clone()),
            drv_output_ids: Vec::new(),
            started_on: rec
                .started_ns
                .filter(|s| *s <= rec.finished_ns)
                .map(rfc3339),
            finished_on: Some(rfc3339(rec.finished_ns)),
            byproducts: Vec::new(),
        }
    }

    /// One delivery round: every ready log gets its unacknowledged records, concurrently.
    fn deliver(&mut self) {
        let now = Instant::now();
        let batch_size = self.cfg.push.batch_size;
        // Per log: chunks of (batch index, record index) and their envelopes.
        // (log index, its client, chunks of (batch index, record index)).
        type Chunks = Vec<Vec<(usize, usize)>>;
        let mut work: Vec<(usize, LogClient, Chunks)> = Vec::new();
        for (li, log) in self.logs.iter().enumerate() {
            if log.gave_up || log.next_try > now {
                continue;
            }
            let mut chunks: Vec<Vec<(usize, usize)>> = Vec::new();
            let mut cur: Vec<(usize, usize)> = Vec::new();
            let mut bytes = 0;
            for (bi, b) in self.batches.iter().enumerate() {
                for (ri, r) in b.records.iter().enumerate() {
                    if r.set_aside || r.acked[li] {
                        continue;
                    }
                    if cur.len() == batch_size || bytes + r.envelope.len() > MAX_SUBMIT_BYTES {
                        chunks.push(std::mem::take(&mut cur));
                        bytes = 0;
                    }
                    bytes += r.envelope.len() + 1;
                    cur.push((bi, ri));
                }
            }
            if !cur.is_empty() {
                chunks.push(cur);
            }
            if !chunks.is_empty() {
                work.push((li, log.client.clone(), chunks));
            }
        }
        if work.is_empty() {
            return;
        }
        let batches = &self.batches;
        let futures = work.into_iter().map(|(li, client, chunks)| async move {
            let mut results = Vec::new();
            for chunk in chunks {
                let envs: Vec<Vec<u8>> = chunk
                    .iter()
                    .map(|&(bi, ri)| batches[bi].records[ri].envelope.clone())
                    .collect();
                let r = client.submit(&envs, false).await;
                let failed = r.is_err();
                results.push((chunk, r));
                if failed {
                    break;
                }
            }
            (li, results)
        });
        let outcomes = self.rt.block_on(futures::future::join_all(futures));
        for (li, results) in outcomes {
            let mut log_error: Option<String> = None;
            for (chunk, r) in results {
                match r {
                    Ok(resp) if resp.results.len() == chunk.len() => {
                        for ((bi, ri), res) in chunk.into_iter().zip(resp.results) {
                            self.apply(li, bi, ri, res, &mut log_error);
                        }
                    }
                    Ok(resp) => {
                        log_error = Some(format!(
                            "answered {} results for {} entries",
                            resp.results.len(),
                            chunk.len()
                        ));
                    }
                    Err(e) => log_error = Some(error_chain(&e)),
                }
            }
            let log = &mut self.logs[li];
            match log_error {
                None => {
                    log.failures = 0;
                    log.next_try = Instant::now();
                }
                Some(msg) => {
                    log.failures += 1;
                    let delay = backoff(
                        self.cfg.push.retry_initial(),
                        self.cfg.push.retry_max(),
                        log.failures,
                    );
                    log.next_try = Instant::now() + delay;
                    tracing::warn!(
                        log = %log.client.base(),
                        attempt = log.failures,
                        retry_in_ms = delay.as_millis() as u64,
                        "submission failed: {msg}"
                    );
                    if self.once && log.failures >= self.cfg.push.once_attempts {
                        // Only `--once` stops here; the service keeps retrying.
                        log.gave_up = true;
                    }
                }
            }
        }
    }

    fn apply(
        &mut self,
        li: usize,
        bi: usize,
        ri: usize,
        res: SubmitResult,
        log_error: &mut Option<String>,
    ) {
        let url = self.logs[li].client.base().to_string();
        let rec = &mut self.batches[bi].records[ri];
        match res {
            SubmitResult::Accepted(a) => {
                rec.acked[li] = true;
                if a.duplicate {
                    self.report.already_in_log += 1;
                }
                tracing::debug!(log = %url, index = a.index, drv = %rec.drv, "accepted");
            }
            SubmitResult::Rejected { error }
                if matches!(error.code.as_str(), "malformed" | "too_large") =>
            {
                let reason = format!(
                    "{url} refused the entry for {}: {}: {}",
                    rec.drv, error.code, error.message
                );
                let envelope = String::from_utf8_lossy(&rec.envelope).into_owned();
                let name = format!("{:020}", rec.counter);
                match self.spool.fail(&name, &reason, &envelope) {
                    Ok(()) => {
                        tracing::error!("{reason}; set aside in failed/");
                        self.batches[bi].records[ri].set_aside = true;
                        self.report.set_aside += 1;
                    }
                    Err(e) => {
                        log_error.get_or_insert(format!("{reason}; cannot write to failed/: {e}"));
                    }
                }
            }
            SubmitResult::Rejected { error } => {
                log_error.get_or_insert(format!(
                    "refused the entry for {}: {}: {}",
                    rec.drv, error.code, error.message
                ));
            }
        }
    }

    /// Removes batches that every log acknowledged, remembering their claims first.
    fn finalize(&mut self) -> anyhow::Result<()> {
        let mut keep = Vec::with_capacity(self.batches.len());
        for b in std::mem::take(&mut self.batches) {
            let done = b
                .records
                .iter()
                .all(|r| r.set_aside || r.acked.iter().all(|a| *a));
            if !done {
                keep.push(b);
                continue;
            }
            let claims: Vec<String> = b
                .records
                .iter()
                .filter(|r| !r.set_aside)
                .map(|r| r.claim.clone())
                .collect();
            self.delivered.add(&claims)?;
            self.spool.remove_pending(&b.path)?;
            self.report.delivered += claims.len() as u64;
            for r in &b.records {
                self.pending_claims.remove(&r.claim);
            }
        }
        self.batches = keep;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // `date -u -d @1795304911` on this machine: 2026-11-21 23:48:31 UTC.
        assert_eq!(
            rfc3339(1_795_304_911_687_143_418),
            "2026-11-21T23:48:31.687143418Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert!(provenix_core::entry::is_rfc3339(&rfc3339(
            4_102_444_800_000_000_001
        )));
    }

    #[test]
    fn oversized_entries_fall_back_to_direct_inputs_and_a_closure_digest() {
        use provenix_core::entry::{Dependency, Entry, Output};
        use provenix_core::nix::NarHash;
        let key = NixSecretKey::from_seed("alpha", [3; 32]).unwrap();
        let path = |i: u32| -> StorePath {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&i.to_be_bytes());
            format!(
                "/nix/store/{}-dep-{i}",
                provenix_core::nix::base32::encode(&h)
            )
            .parse()
            .unwrap()
        };
        let deps: Vec<Dependency> = (0..600)
            .map(|i| Dependency {
                path: path(i),
                nar_hash: NarHash::from_bytes([i as u8; 32]),
            })
            .collect();
        let mut direct: Vec<StorePath> = vec![path(1), path(2)];
        direct.sort();
        let out = Output {
            name: "out".into(),
            path: path(999),
            nar_hash: NarHash::from_bytes([9; 32]),
            nar_size: Some(1),
            references: vec![],
        };
        let facts = BuildFacts {
            derivation: "/nix/store/92wwbnb2x9qbsi4lyajmkzmz0ypak6ki-top-x1.drv"
                .parse()
                .unwrap(),
            drv_sha256: [1; 32],
            system: "x86_64-linux".into(),
            outputs: vec![out.clone()],
            dependencies: deps.clone(),
            direct_inputs: direct,
        };
        let build = NixBuild {
            builder: "alpha".into(),
            derivation: Some(facts.derivation.clone()),
            drv_sha256: Some(facts.drv_sha256),
            outputs: vec![out],
            dependencies: deps,
            built_locally: true,
            counter: Some(1),
            ..Default::default()
        };
        assert!(build.sign(&key).canonical_json().len() > MAX_LEAF_BYTES);
        let env = sign_bounded(&build, &facts, &key).unwrap();
        assert!(env.len() <= MAX_LEAF_BYTES);
        let e = Entry::parse(&env).unwrap();
        e.verify(&key.public()).unwrap();
        let bd = &e.statement().predicate.build_definition;
        // The .drv and the two direct inputs.
        assert_eq!(bd.resolved_dependencies.len(), 3);
        assert_eq!(bd.internal_parameters["inputClosure"]["paths"], 600);
        assert_eq!(
            bd.internal_parameters["inputClosure"]["sha256"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let (i, m) = (Duration::from_millis(100), Duration::from_millis(1000));
        for (n, base) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let d = backoff(i, m, n).as_millis() as u64;
            assert!(d >= base * 3 / 4 && d <= base * 5 / 4, "{n}: {d}");
        }
    }

    #[test]
    fn claims_ignore_counter_and_times_but_not_content() {
        let b = |content, counter, t: &str| {
            let mut x = NixBuild {
                builder: "alpha".into(),
                derivation: Some(
                    "/nix/store/92wwbnb2x9qbsi4lyajmkzmz0ypak6ki-top-x1.drv"
                        .parse()
                        .unwrap(),
                ),
                outputs: vec![provenix_core::entry::Output {
                    name: "out".into(),
                    path: "/nix/store/ah5bz1dcwprp4q1mn4w2dads8b172lfr-top-x1"
                        .parse()
                        .unwrap(),
                    nar_hash: provenix_core::nix::NarHash::from_bytes([content; 32]),
                    nar_size: Some(1),
                    references: vec![],
                }],
                built_locally: true,
                ..Default::default()
            };
            x.counter = Some(counter);
            x.finished_on = Some(t.to_owned());
            x
        };
        let a = claim_of(&b(1, 1, "2026-01-01T00:00:00Z"));
        assert_eq!(a, claim_of(&b(1, 9, "2027-01-01T00:00:00Z")));
        assert_ne!(a, claim_of(&b(2, 1, "2026-01-01T00:00:00Z")));
        assert_eq!(a.len(), 64);
    }
}
