//! Gathering the votes for store paths from every configured log, and deciding (DESIGN.md §7).
//!
//! Shared by `provenix substituter`, `provenix verify` and the auditors. One [`Quorum`] is built
//! from a [`TrustConfig`]; [`Quorum::lookup`] asks every log at once for many keys (one batched
//! `POST /v1/lookup` per log per 1000 keys, all logs concurrently, each bounded by the log
//! timeout) and returns the [`Evidence`] for each key; [`Evidence::votes`] and
//! [`TrustPolicy::decide`] turn that into a [`Decision`]. [`Quorum::decide`] does both.
//!
//! # What is checked, in order (nothing a log sends is trusted)
//! 1. The log's checkpoint signature, with the log key from the trust file (else the whole answer
//!    is a [`LogFailureKind::BadCheckpoint`]); and, when the trust file lists `witnesses` for the
//!    log, at least `min-witnesses` valid cosignatures by distinct listed witnesses on it (else
//!    [`LogFailureKind::Unwitnessed`]: none of that log's entries count).
//! 2. Its consistency with every checkpoint of that log seen before ([`state::LogState`]); a log
//!    caught forking is marked failed for good ([`LogFailureKind::InconsistentCheckpoint`]).
//! 3. Per entry: the envelope parses, its leaf hash is recomputed from the canonical bytes and its
//!    inclusion proof verifies against the checkpoint ([`Rejection::BadInclusionProof`],
//!    [`Rejection::Malformed`]).
//! 4. Per entry: its DSSE signature verifies under the trust file's key for its `keyid`
//!    ([`Rejection::UnknownBuilder`], [`Rejection::BadSignature`]), with the cofactored
//!    equation, every distinct entry of a lookup's answers once and all in one batch
//!    ([`verify_each`]).
//!
//! Only entries passing all four become [`Claim`]s. A log that does not answer in time is a
//! [`LogFailureKind::Unreachable`]: its builders' votes are simply missing ("no").

pub mod attest;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provenix_core::api::{ProvedEntry, ResponseError, MAX_LOOKUP_BATCH};
use provenix_core::checkpoint::{LogVerifier, SignedCheckpoint};
use provenix_core::entry::{verify_each, Entry, TPM_QUOTE_BYPRODUCT};
use provenix_core::merkle::{self, leaf_hash, Hash};
use provenix_core::nix::{NarHash, NixPublicKey, StorePath, StorePathHash};
use provenix_core::policy::{
    Attestation, BuilderConfig, Claim, Content, Decision, LogFailure, LogFailureKind,
    RejectedEntry, Rejection, TrustConfig, TrustPolicy, Votes,
};
use provenix_core::witness::{valid_cosignatures, CosignerVerifier};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::logclient::{http_client, LogClient};
use state::{ConsistencyError, LogState};

/// Checked entries by (leaf hash, attestation generation).
type VerifiedCache = Arc<Mutex<lru::LruCache<(Hash, u64), Arc<Judged>>>>;

/// How many checked entries are remembered (by leaf hash).
const VERIFIED_CACHE: usize = 65_536;

/// Above this many entries in all the answers to one lookup, checks run on the blocking pool.
const BLOCKING_THRESHOLD: usize = 32;

/// Settings of a [`Quorum`] that are not part of the trust policy.
#[derive(Clone, Debug)]
pub struct QuorumOptions {
    /// Deadline for one log's whole answer (lookup plus any consistency proof).
    pub log_timeout: Duration,
    /// Log requests in flight at once, over all logs.
    pub max_concurrent: usize,
}

impl QuorumOptions {
    /// The options of a trust file's `[substituter]` section, or the defaults without one.
    pub fn from_config(config: &TrustConfig) -> Self {
        match &config.substituter {
            Some(s) => Self {
                log_timeout: s.log_timeout,
                max_concurrent: s.max_concurrent_lookups,
            },
            None => Self::default(),
        }
    }
}

impl Default for QuorumOptions {
    fn default() -> Self {
        Self {
            log_timeout: Duration::from_millis(3000),
            max_concurrent: 32,
        }
    }
}

/// Decides whether a builder's TPM attestation on an entry verifies under its `tpm` policy.
pub trait AttestationVerifier: Send + Sync {
    /// The state of `entry`'s attestation for `builder` (whose signature already verified).
    fn verify(&self, builder: &BuilderConfig, entry: &Entry) -> Attestation;
    /// Lookup keys (`builder:<name>`) whose records the verifier wants fetched from every log
    /// before the next entries are checked; empty (the default) when it needs nothing now.
    fn wanted_keys(&self) -> Vec<String> {
        Vec::new()
    }
    /// What `log` returned under `key`, each record's inclusion checked against a checkpoint
    /// of that log that verified and is consistent with those seen before.
    fn learn(&self, _log: &LogVerifier, _key: &str, _found: Vec<attest::Fetched>) {}
    /// Changes whenever a verdict of [`AttestationVerifier::verify`] may change (new
    /// enrollments): cached verdicts of another generation are recomputed.
    fn generation(&self) -> u64 {
        0
    }
}

/// The verifier used until TPM quote verification is wired in: an entry without a quote is
/// [`Attestation::Absent`]; one with a quote is [`Attestation::Failed`], never `Verified`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAttestationVerifier;

impl AttestationVerifier for NoAttestationVerifier {
    fn verify(&self, _builder: &BuilderConfig, entry: &Entry) -> Attestation {
        let has_quote = entry
            .statement()
            .predicate
            .run_details
            .byproducts
            .iter()
            .any(|b| b.name == TPM_QUOTE_BYPRODUCT);
        if has_quote {
            Attestation::Failed("TPM quote verification is not available in this build".into())
        } else {
            Attestation::Absent
        }
    }
}

/// Metadata an entry gives for one output, beyond its NAR hash (from its subject annotations;
/// authenticated as that builder's claim once the entry is a [`Claim`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputMeta {
    pub nar_size: Option<u64>,
    pub references: Option<BTreeSet<StorePath>>,
}

/// Everything the logs said about one key, after every check.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Entries that passed every check.
    pub claims: Vec<Claim>,
    /// For each claim (same order): the metadata its entry gives per output.
    pub claim_meta: Vec<BTreeMap<StorePath, OutputMeta>>,
    /// For each claim (same order): the dependencies its builder says the build used, with the
    /// NAR hashes it recorded (`Entry::dependencies`).
    pub claim_deps: Vec<Vec<(StorePath, NarHash)>>,
    /// Entries that failed a check.
    pub rejected: Vec<RejectedEntry>,
    /// Logs that could not be used for this key.
    pub log_failures: Vec<LogFailure>,
}

/// What the agreeing builders' entries say about the decided path beyond its NAR hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgreedMeta {
    /// NAR sizes stated by agreeing entries.
    pub nar_sizes: BTreeSet<u64>,
    /// Reference sets stated by agreeing entries.
    pub references: BTreeSet<BTreeSet<StorePath>>,
}

impl Evidence {
    /// The [`Votes`] for deciding `path`.
    pub fn votes(&self, path: &StorePath) -> Votes {
        Votes {
            path: path.clone(),
            claims: self.claims.clone(),
            rejected: self.rejected.clone(),
            log_failures: self.log_failures.clone(),
        }
    }

    /// The store path these entries name for `key` (the first claim's output with that hash),
    /// for when no other source (an upstream narinfo, the user) gives it.
    pub fn path_for(&self, key: &StorePathHash) -> Option<StorePath> {
        self.claims
            .iter()
            .flat_map(|c| c.outputs.keys())
            .find(|p| &p.hash() == key)
            .cloned()
    }

    /// For a trusted `decision`: the NAR sizes and reference sets that the agreeing builders'
    /// entries state for the decided path.
    pub fn agreed_meta(&self, decision: &Decision) -> AgreedMeta {
        let mut out = AgreedMeta::default();
        let Some(content) = decision.trusted_outputs() else {
            return out;
        };
        for (c, meta) in self.claims.iter().zip(&self.claim_meta) {
            if &c.outputs != content || !decision.agreed.contains(&c.builder) {
                continue;
            }
            if let Some(m) = meta.get(&decision.path) {
                out.nar_sizes.extend(m.nar_size);
                if let Some(r) = &m.references {
                    out.references.insert(r.clone());
                }
            }
        }
        out
    }
}

/// How one log answered a lookup.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogReport {
    /// The log's URL.
    pub log: String,
    /// The size of the (verified, consistent) checkpoint it answered with.
    pub checkpoint_size: Option<u64>,
    /// What went wrong, if anything.
    pub failure: Option<LogFailureKind>,
    /// How long it took.
    #[serde(serialize_with = "ser_ms")]
    pub elapsed: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// The result of [`Quorum::lookup`].
#[derive(Debug, Default)]
pub struct Lookup {
    evidence: HashMap<StorePathHash, Evidence>,
    /// One report per log request (per log, per batch of keys).
    pub logs: Vec<LogReport>,
}

impl Lookup {
    /// The evidence for `key` (empty if it was not looked up).
    pub fn evidence(&self, key: &StorePathHash) -> Evidence {
        self.evidence.get(key).cloned().unwrap_or_default()
    }

    /// Moves the evidence for `key` out.
    pub fn take(&mut self, key: &StorePathHash) -> Evidence {
        self.evidence.remove(key).unwrap_or_default()
    }

    /// Whether any log failed because it could not be reached (as opposed to misbehaving).
    pub fn any_unreachable(&self) -> bool {
        self.logs
            .iter()
            .any(|l| matches!(l.failure, Some(LogFailureKind::Unreachable(_))))
    }
}

struct LogSource {
    url: String,
    client: LogClient,
    key: LogVerifier,
    /// Witnesses whose cosignatures count, and how many a checkpoint needs.
    witnesses: Vec<CosignerVerifier>,
    min_witnesses: usize,
    /// The last checkpoint note that passed [`LogSource::verify_checkpoint`] (a log answers
    /// with the same one until it integrates more entries).
    last: Mutex<Option<SignedCheckpoint>>,
}

impl LogSource {
    /// Verifies a checkpoint note with the log key and counts the required witness
    /// cosignatures (the same text as last time needs no new check: it is byte-for-byte what
    /// passed).
    fn verify_checkpoint(&self, note: &str) -> Result<SignedCheckpoint, LogFailureKind> {
        if let Ok(last) = self.last.lock() {
            if let Some(cp) = last.as_ref().filter(|cp| cp.note() == note) {
                return Ok(cp.clone());
            }
        }
        let cp = self
            .key
            .verify(note)
            .map_err(|e| LogFailureKind::BadCheckpoint(e.to_string()))?;
        if self.min_witnesses > 0 {
            let have = valid_cosignatures(note, &self.witnesses);
            if have.len() < self.min_witnesses {
                let names: Vec<&str> = self.witnesses.iter().map(|w| w.name()).collect();
                return Err(LogFailureKind::Unwitnessed(format!(
                    "its checkpoint of size {} carries {} valid cosignature(s) of the {} required from [{}]",
                    cp.size(),
                    have.len(),
                    self.min_witnesses,
                    names.join(", ")
                )));
            }
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(cp.clone());
        }
        Ok(cp)
    }
}

/// Why a [`Quorum`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Client(#[from] crate::logclient::ClientError),
    #[error("TPM attestation: {0}")]
    Attestation(String),
}

/// The logs, builder keys and policy of one trust file, with the log consistency state.
pub struct Quorum {
    logs: Vec<LogSource>,
    builders: HashMap<String, BuilderConfig>,
    policy: TrustPolicy,
    state: Arc<LogState>,
    limiter: Arc<Semaphore>,
    timeout: Duration,
    attestation: Arc<dyn AttestationVerifier>,
    /// (Leaf hash, attestation generation) → what checking that entry found (builder keys
    /// never change in a Quorum).
    verified: VerifiedCache,
}

impl fmt::Debug for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quorum")
            .field(
                "logs",
                &self.logs.iter().map(|l| &l.url).collect::<Vec<_>>(),
            )
            .field("builders", &self.builders.keys().collect::<Vec<_>>())
            .field("threshold", &self.policy.threshold().to_string())
            .finish()
    }
}

/// One entry as checked.
enum Checked {
    Claim(
        Claim,
        BTreeMap<StorePath, OutputMeta>,
        Vec<(StorePath, NarHash)>,
    ),
    Rejected(RejectedEntry),
}

impl Quorum {
    /// Builds the quorum for `config`, keeping log consistency state in `state`.
    pub fn new(
        config: &TrustConfig,
        opts: &QuorumOptions,
        state: Arc<LogState>,
    ) -> Result<Self, QuorumError> {
        let http = http_client(opts.log_timeout);
        let logs = config
            .logs
            .iter()
            .map(|l| {
                Ok(LogSource {
                    url: l.url.clone(),
                    client: LogClient::with_http(&l.url, http.clone())?,
                    key: l.key.clone(),
                    witnesses: l.witnesses.clone(),
                    min_witnesses: l.min_witnesses,
                    last: Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>, QuorumError>>()?;
        let attestation: Arc<dyn AttestationVerifier> =
            match attest::TpmAttestationVerifier::from_config(config)
                .map_err(QuorumError::Attestation)?
            {
                Some(v) => Arc::new(v),
                None => Arc::new(NoAttestationVerifier),
            };
        Ok(Self {
            logs,
            builders: config
                .builders
                .iter()
                .map(|b| (b.name.clone(), b.clone()))
                .collect(),
            policy: config.policy.clone(),
            state,
            limiter: Arc::new(Semaphore::new(opts.max_concurrent.max(1))),
            timeout: opts.log_timeout,
            attestation,
            verified: Arc::new(Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(VERIFIED_CACHE).unwrap_or(NonZeroUsize::MIN),
            ))),
        })
    }

    /// Replaces the attestation verifier.
    pub fn with_attestation_verifier(mut self, v: Arc<dyn AttestationVerifier>) -> Self {
        self.attestation = v;
        self
    }

    /// The decision rules.
    pub fn policy(&self) -> &TrustPolicy {
        &self.policy
    }

    /// The log consistency state.
    pub fn state(&self) -> &Arc<LogState> {
        &self.state
    }

    /// Per configured log (trust-file order): its URL, the size of the largest checkpoint
    /// verified so far, and its failure record if it is marked failed.
    pub fn log_summaries(&self) -> Vec<(String, Option<u64>, Option<state::FailureRecord>)> {
        let summary = self.state.summary();
        self.logs
            .iter()
            .map(|l| {
                let key = l.key.to_string();
                let s = summary.iter().find(|s| s.key == key);
                (
                    l.url.clone(),
                    s.and_then(|s| s.size),
                    s.and_then(|s| s.failed.clone()),
                )
            })
            .collect()
    }

    /// The configured log URLs, in trust-file order.
    pub fn log_urls(&self) -> Vec<String> {
        self.logs.iter().map(|l| l.url.clone()).collect()
    }

    /// Looks up the paths in every log and decides each.
    pub async fn decide(&self, paths: &[StorePath]) -> (Vec<(Decision, Evidence)>, Lookup) {
        let keys: Vec<StorePathHash> = paths.iter().map(StorePath::hash).collect();
        let mut lookup = self.lookup(&keys).await;
        let out = paths
            .iter()
            .map(|p| {
                let ev = lookup.evidence(&p.hash());
                (self.policy.decide(&ev.votes(p)), ev)
            })
            .collect();
        lookup.evidence.clear();
        (out, lookup)
    }

    /// Asks every log about `keys` (batched, concurrently) and checks every answer.
    pub async fn lookup(&self, keys: &[StorePathHash]) -> Lookup {
        self.refresh_attestation().await;
        let mut uniq: Vec<StorePathHash> = keys.to_vec();
        uniq.sort();
        uniq.dedup();
        let chunks: Vec<&[StorePathHash]> = uniq.chunks(MAX_LOOKUP_BATCH).collect();
        let jobs = self.logs.iter().flat_map(|log| {
            chunks
                .iter()
                .map(move |chunk| async move { (*chunk, self.lookup_chunk(log, chunk).await) })
        });
        let results = futures::future::join_all(jobs).await;
        let mut reports = Vec::with_capacity(results.len());
        let mut answers = Vec::new();
        for (i, (chunk, (report, answer))) in results.into_iter().enumerate() {
            answers.extend(answer.map(|a| (i, a)));
            reports.push((chunk, report));
        }
        let checked = self.check_answers(answers).await;
        let mut lookup = Lookup {
            evidence: uniq.iter().map(|k| (*k, Evidence::default())).collect(),
            logs: Vec::new(),
        };
        let mut checked = checked.into_iter().peekable();
        for (i, (chunk, mut report)) in reports.into_iter().enumerate() {
            let per_key = match checked.next_if(|(j, _)| *j == i) {
                Some((_, Ok(per_key))) => per_key,
                Some((_, Err(kind))) => {
                    report.failure = Some(kind);
                    report.checkpoint_size = None;
                    Vec::new()
                }
                None => Vec::new(),
            };
            if let Some(kind) = &report.failure {
                for k in chunk {
                    if let Some(ev) = lookup.evidence.get_mut(k) {
                        ev.log_failures.push(LogFailure {
                            log: report.log.clone(),
                            kind: kind.clone(),
                        });
                    }
                }
            }
            for (k, checked) in per_key {
                let Some(ev) = lookup.evidence.get_mut(&k) else {
                    continue;
                };
                for c in checked {
                    match c {
                        Checked::Claim(claim, meta, deps) => {
                            ev.claims.push(claim);
                            ev.claim_meta.push(meta);
                            ev.claim_deps.push(deps);
                        }
                        Checked::Rejected(r) => ev.rejected.push(r),
                    }
                }
            }
            lookup.logs.push(report);
        }
        lookup
    }

    /// Checks the entries of every log's answer to one lookup together (on the blocking pool
    /// when there are many), so an entry that several logs serve is parsed and its signature
    /// checked once, and the signatures are checked in one batch. Per answer (same order): the
    /// checked entries per key, or why the answer could not be checked.
    async fn check_answers(
        &self,
        answers: Vec<(usize, Answer)>,
    ) -> Vec<(usize, Result<PerKey, LogFailureKind>)> {
        let total: usize = answers.iter().map(|(_, a)| a.entries()).sum();
        let checker = Checker::from(self);
        if total <= BLOCKING_THRESHOLD {
            return checker.check(answers);
        }
        let indexes: Vec<usize> = answers.iter().map(|(i, _)| *i).collect();
        tokio::task::spawn_blocking(move || checker.check(answers))
            .await
            .unwrap_or_else(|e| {
                let kind = LogFailureKind::Unreachable(format!("checking task: {e}"));
                indexes
                    .into_iter()
                    .map(|i| (i, Err(kind.clone())))
                    .collect()
            })
    }

    /// One log, one batch of keys: the report, and the answer whose entries are still to be
    /// checked (also for a log found inconsistent in this very answer: its entries are listed,
    /// as rejected).
    async fn lookup_chunk(
        &self,
        log: &LogSource,
        chunk: &[StorePathHash],
    ) -> (LogReport, Option<Answer>) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, self.query(log, chunk))
            .await
            .unwrap_or_else(|_| {
                Err(LogFailureKind::Unreachable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            });
        let (answer, failure) = match outcome {
            Ok(answer) => {
                let failure = answer.failure.clone();
                (Some(answer), failure)
            }
            Err(kind) => (None, Some(kind)),
        };
        if let Some(kind) = &failure {
            match kind {
                LogFailureKind::Unreachable(_) => {
                    tracing::warn!(log = %log.url, failure = %kind, "log lookup failed");
                }
                _ => tracing::error!(log = %log.url, failure = %kind, "log lookup failed"),
            }
        }
        let report = LogReport {
            log: log.url.clone(),
            checkpoint_size: match (&answer, &failure) {
                (Some(a), None) => Some(a.cp.size()),
                _ => None,
            },
            failure,
            elapsed: started.elapsed(),
        };
        (report, answer)
    }

    async fn query(
        &self,
        log: &LogSource,
        chunk: &[StorePathHash],
    ) -> Result<Answer, LogFailureKind> {
        if let Some(f) = self.state.failed(&log.key) {
            return Err(LogFailureKind::InconsistentCheckpoint(format!(
                "marked failed since {}: {} (evidence in {})",
                f.at,
                f.reason,
                self.state.path().display()
            )));
        }
        let keys: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let resp = {
            let _permit = self.limiter.acquire().await;
            log.client.lookup_batch(&keys).await
        }
        .map_err(|e| LogFailureKind::Unreachable(e.to_string()))?;
        let cp = log.verify_checkpoint(&resp.checkpoint)?;
        let consistency = self
            .state
            .check(&log.key, &cp, |from, to| async move {
                let _permit = self.limiter.acquire().await;
                let r = log
                    .client
                    .consistency(from, to)
                    .await
                    .map_err(|e| e.to_string())?;
                if r.from != from || r.to != to {
                    return Err(format!(
                        "asked for {from} → {to}, the log answered {} → {}",
                        r.from, r.to
                    ));
                }
                Ok(r.proof)
            })
            .await;
        let failure = match consistency {
            Ok(()) => None,
            Err(ConsistencyError::Failed(f)) => Some(LogFailureKind::InconsistentCheckpoint(
                format!("{} (evidence in {})", f.reason, self.state.path().display()),
            )),
            Err(ConsistencyError::Unproven(m)) => return Err(LogFailureKind::Unreachable(m)),
            Err(ConsistencyError::State(m)) => {
                return Err(LogFailureKind::Unreachable(format!("local state: {m}")))
            }
        };
        let wanted: BTreeSet<&StorePathHash> = chunk.iter().collect();
        let mut results: Vec<(StorePathHash, Vec<ProvedEntry>)> = Vec::new();
        for (k, entries) in resp.results {
            // Keys we did not ask for are ignored.
            if let Ok(h) = k.parse::<StorePathHash>() {
                if wanted.contains(&h) {
                    results.push((h, entries));
                }
            }
        }
        Ok(Answer {
            url: log.url.clone(),
            cp,
            failure,
            results,
        })
    }
}

/// The checked entries of one answer, per key.
type PerKey = Vec<(StorePathHash, Vec<Checked>)>;

/// A log's answer to one lookup request: its checkpoint verified and checked for consistency,
/// its entries not yet checked.
struct Answer {
    url: String,
    cp: SignedCheckpoint,
    /// Set when the checkpoint contradicts one seen before (the log is now marked failed): every
    /// entry of the answer is then listed as rejected.
    failure: Option<LogFailureKind>,
    results: Vec<(StorePathHash, Vec<ProvedEntry>)>,
}

impl Answer {
    fn entries(&self) -> usize {
        self.results.iter().map(|(_, e)| e.len()).sum()
    }
}

/// One answer's entries per key, after the first pass of [`Checker::check`].
type Slotted = Vec<(StorePathHash, Vec<Slot>)>;

/// Where an entry of an answer stands between the two passes of [`Checker::check`].
enum Slot {
    Done(Checked),
    /// Included under this leaf hash; waits for the judgement of that leaf.
    Judge(Hash, u64),
}

/// What checking entries needs, owned so it can move to the blocking pool.
struct Checker {
    builders: HashMap<String, BuilderConfig>,
    attestation: Arc<dyn AttestationVerifier>,
    verified: VerifiedCache,
}

impl Checker {
    fn from(q: &Quorum) -> Self {
        Self {
            builders: q.builders.clone(),
            attestation: q.attestation.clone(),
            verified: q.verified.clone(),
        }
    }

    /// Checks every entry of every answer: first each entry's inclusion in its own log's
    /// checkpoint (and the cache of entries judged before); then each distinct entry left is
    /// judged once, its signature checked in one batch with the others'.
    fn check(&self, answers: Vec<(usize, Answer)>) -> Vec<(usize, Result<PerKey, LogFailureKind>)> {
        let generation = self.attestation.generation();
        let mut parsed: HashMap<Hash, Entry> = HashMap::new();
        let slotted: Vec<(usize, &Answer, Slotted)> = answers
            .iter()
            .map(|(i, a)| {
                let per_key = a
                    .results
                    .iter()
                    .map(|(k, entries)| {
                        let slots = entries
                            .iter()
                            .map(|e| self.include(e, a, generation, &mut parsed))
                            .collect();
                        (*k, slots)
                    })
                    .collect();
                (*i, a, per_key)
            })
            .collect();
        let judged = self.judge_all(parsed, generation);
        slotted
            .into_iter()
            .map(|(i, a, per_key)| {
                let per_key = per_key
                    .into_iter()
                    .map(|(k, slots)| {
                        let checked = slots
                            .into_iter()
                            .map(|slot| match slot {
                                Slot::Done(c) => c,
                                Slot::Judge(h, index) => match judged.get(&h) {
                                    Some(j) => place(&a.url, j, index),
                                    None => reject(
                                        &a.url,
                                        None,
                                        index,
                                        Rejection::Malformed("internal: not judged".into()),
                                    ),
                                },
                            })
                            .collect();
                        (k, checked)
                    })
                    .collect();
                (i, Ok(per_key))
            })
            .collect()
    }

    /// The first pass for one entry of answer `a`: proves its inclusion, and either finishes it
    /// (a rejection, or an outcome judged before) or leaves it to be judged under its leaf hash,
    /// parsed once in `parsed` whichever logs serve it.
    fn include(
        &self,
        e: &ProvedEntry,
        a: &Answer,
        generation: u64,
        parsed: &mut HashMap<Hash, Entry>,
    ) -> Slot {
        let log_inconsistent = a.failure.is_some();
        // Fast path: a log serves the canonical leaf bytes, so hashing what it sent and checking
        // the proof with that hash proves these exact bytes are the included leaf. An entry seen
        // before under that leaf hash (in another log, or an earlier lookup) was parsed and
        // checked from the same bytes: reuse the outcome.
        let raw = e.envelope.get().as_bytes();
        let raw_hash = leaf_hash(raw);
        if !log_inconsistent
            && merkle::verify_inclusion(
                &raw_hash,
                e.index,
                a.cp.size(),
                &e.inclusion_proof,
                a.cp.root(),
            )
            .is_ok()
        {
            if parsed.contains_key(&raw_hash) {
                return Slot::Judge(raw_hash, e.index);
            }
            let cached = self
                .verified
                .lock()
                .ok()
                .and_then(|mut c| c.get(&(raw_hash, generation)).cloned());
            if let Some(outcome) = cached {
                return Slot::Done(place(&a.url, &outcome, e.index));
            }
            // Inclusion is proven for these bytes: parsing them is all that is left, unless they
            // are not the canonical form (then the slow path below says what is wrong).
            if let Ok(entry) = Entry::parse(raw) {
                if entry.leaf_hash() == raw_hash {
                    parsed.insert(raw_hash, entry);
                    return Slot::Judge(raw_hash, e.index);
                }
            }
        }
        let included = match e.verify(&a.cp) {
            Ok(i) => i,
            Err(ResponseError::Inclusion { index, .. }) => {
                let builder = Entry::parse(raw).ok().map(|en| en.keyid().to_owned());
                return Slot::Done(reject(&a.url, builder, index, Rejection::BadInclusionProof));
            }
            Err(ResponseError::Entry { index, error }) => {
                return Slot::Done(reject(
                    &a.url,
                    None,
                    index,
                    Rejection::Malformed(error.to_string()),
                ));
            }
            Err(ResponseError::Checkpoint(c)) => {
                return Slot::Done(reject(
                    &a.url,
                    None,
                    e.index,
                    Rejection::Malformed(c.to_string()),
                ));
            }
        };
        let entry = included.entry;
        if log_inconsistent {
            return Slot::Done(reject(
                &a.url,
                Some(entry.keyid().to_owned()),
                included.index,
                Rejection::InconsistentLog,
            ));
        }
        let h = entry.leaf_hash();
        parsed.entry(h).or_insert(entry);
        Slot::Judge(h, included.index)
    }

    /// Judges each distinct included entry once (signatures in one batch) and remembers the
    /// outcomes.
    fn judge_all(
        &self,
        parsed: HashMap<Hash, Entry>,
        generation: u64,
    ) -> HashMap<Hash, Arc<Judged>> {
        let mut judged = HashMap::with_capacity(parsed.len());
        let mut signed: Vec<(Hash, &Entry, &BuilderConfig)> = Vec::with_capacity(parsed.len());
        for (h, entry) in &parsed {
            match self.builders.get(entry.keyid()) {
                Some(b) => signed.push((*h, entry, b)),
                None => {
                    let name = entry.keyid().to_owned();
                    judged.insert(
                        *h,
                        Arc::new(Judged::Rejected(Some(name), Rejection::UnknownBuilder)),
                    );
                }
            }
        }
        let pairs: Vec<(&Entry, &NixPublicKey)> =
            signed.iter().map(|(_, e, b)| (*e, &b.key)).collect();
        let good = verify_each(&pairs);
        for ((h, entry, builder), good) in signed.into_iter().zip(good) {
            let outcome = Arc::new(if good {
                self.claim(builder, entry)
            } else {
                Judged::Rejected(Some(entry.keyid().to_owned()), Rejection::BadSignature)
            });
            if let Ok(mut c) = self.verified.lock() {
                c.put((h, generation), outcome.clone());
            }
            judged.insert(h, outcome);
        }
        judged
    }

    /// What an entry whose signature verified under `builder`'s key claims.
    fn claim(&self, builder: &BuilderConfig, entry: &Entry) -> Judged {
        let name = entry.keyid().to_owned();
        let mut outputs: Content = BTreeMap::new();
        for o in entry.outputs() {
            if outputs
                .insert(o.path.clone(), o.nar_hash)
                .is_some_and(|h| h != o.nar_hash)
            {
                return Judged::Rejected(
                    Some(name),
                    Rejection::Malformed(format!("claims two NAR hashes for {}", o.path)),
                );
            }
        }
        Judged::Claim {
            builder: name,
            outputs,
            built_locally: entry.statement().built_locally().unwrap_or(false),
            attestation: self.attestation.verify(builder, entry),
            meta: output_meta(entry),
            deps: entry.dependencies(),
        }
    }
}

fn reject(url: &str, builder: Option<String>, index: u64, reason: Rejection) -> Checked {
    Checked::Rejected(RejectedEntry {
        builder,
        log: url.to_owned(),
        index: Some(index),
        reason,
    })
}

/// A judged entry as found at `index` of the log at `url`.
fn place(url: &str, j: &Judged, index: u64) -> Checked {
    match j {
        Judged::Rejected(b, r) => reject(url, b.clone(), index, r.clone()),
        Judged::Claim {
            builder,
            outputs,
            built_locally,
            attestation,
            meta,
            deps,
        } => Checked::Claim(
            Claim {
                builder: builder.clone(),
                log: url.to_owned(),
                index: Some(index),
                outputs: outputs.clone(),
                built_locally: *built_locally,
                attestation: attestation.clone(),
            },
            meta.clone(),
            deps.clone(),
        ),
    }
}

/// What checking an included entry found, independent of the log and index it came from.
#[derive(Debug)]
enum Judged {
    Rejected(Option<String>, Rejection),
    Claim {
        builder: String,
        outputs: Content,
        built_locally: bool,
        attestation: Attestation,
        meta: BTreeMap<StorePath, OutputMeta>,
        deps: Vec<(StorePath, NarHash)>,
    },
}

/// The per-output annotations `narSize` and `references` of an entry's subjects.
fn output_meta(entry: &Entry) -> BTreeMap<StorePath, OutputMeta> {
    let mut out = BTreeMap::new();
    for s in &entry.statement().subject {
        let Ok(path) = s.name.parse::<StorePath>() else {
            continue;
        };
        let nar_size = s.annotations.get("narSize").and_then(|v| v.as_u64());
        let references = s
            .annotations
            .get("references")
            .and_then(|v| v.as_array())
            .and_then(|a| {
                a.iter()
                    .map(|r| r.as_str().and_then(|r| r.parse::<StorePath>().ok()))
                    .collect::<Option<BTreeSet<StorePath>>>()
            });
        out.insert(
            path,
            OutputMeta {
                nar_size,
                references,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests;
