//! [`TpmAttestationVerifier`]: TPM quotes of entries, checked against the builder's enrollment
//! record and the trust file's `tpm` policy (`docs/attestation.md`).
//!
//! For each builder with a `tpm` table, the verifier looks its enrollment records up in every
//! configured log (`builder:<name>`, one batched lookup per log, before the entries of a lookup
//! are checked; again every [`REFRESH`], and every [`RETRY`] while none verified). A record
//! counts only if its inclusion proof verifies against a checkpoint signed by that log and
//! consistent with every checkpoint seen before (the same checks as entries), the log's
//! signature on it verifies (the activation fact), it enrolls exactly the trust file's key of
//! that builder, its EK certificate chains to the trust file's `ek-roots` (read once, when the
//! verifier is built), its AK is the pinned `ak-name` when one is set, and its binding quote
//! and the builder's binding signature verify ([`EnrollmentRecord::verify`]).
//!
//! An entry's quote then verifies when its AK is an enrolled one and
//! [`verify_entry_quote`] accepts it under the policy built from the trust file (SHA-256 PCRs
//! 0-23, golden `pcrs`, `allow-unmeasured-boot`), with `qualifiedSigner` checked against the
//! enrolled EK. Finally, per AK, the TPM clock (resetCount, restartCount, clock) must not go
//! backwards as the entries' counters go up (checked among the entries seen so far). Every
//! failure is reported as `code: message`, the code being [`provenix_core::tpm::QuoteError::code`] or one of
//! `tpm_quote_malformed`, `not_enrolled`, `clock_regression`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use provenix_core::checkpoint::LogVerifier;
use provenix_core::enrollment::{EnrollmentRecord, VerifiedEnrollment};
use provenix_core::entry::{Entry, LookupKey, BUILDER_KEY_PREFIX};
use provenix_core::merkle::{self, Hash};
use provenix_core::nix::NixPublicKey;
use provenix_core::policy::{Attestation, BuilderConfig, TrustConfig};
use provenix_core::tpm::{
    verify_entry_quote, EkRoots, HashAlg, Name, PcrAllowList, QuoteBundle, QuotePolicy, TpmtPublic,
};

use super::state::ConsistencyError;
use super::{AttestationVerifier, LogSource, Quorum};

/// How often enrollment records are looked up again (new enrollments, new AKs).
pub const REFRESH: Duration = Duration::from_secs(60);
/// How often a builder without a verified enrollment is looked up again.
pub const RETRY: Duration = Duration::from_secs(2);

/// One record a log returned under a `builder:` key, after the inclusion check.
#[derive(Debug)]
pub enum Fetched {
    /// Included in the log's verified, consistent checkpoint (not otherwise checked yet).
    Record {
        index: u64,
        record: Box<EnrollmentRecord>,
    },
    /// Unusable: why.
    Bad { index: u64, reason: String },
}

/// A builder's `tpm` table, read and built once.
struct TpmBuilder {
    key: NixPublicKey,
    roots: EkRoots,
    policy: QuotePolicy,
    pin: Option<Name>,
}

#[derive(Default)]
struct State {
    /// Verified enrollments per builder.
    enrolled: HashMap<String, Vec<VerifiedEnrollment>>,
    /// Why records of a builder were refused (`log #index: code: message`), by leaf.
    refused: HashMap<String, BTreeMap<String, String>>,
    /// Records already judged (by leaf hash).
    seen: HashSet<Hash>,
    /// When each builder was last asked for.
    asked: HashMap<String, Instant>,
    /// Per AK: entry counter → TPM clock, of verified quotes.
    clocks: HashMap<Name, BTreeMap<u64, (u32, u32, u64)>>,
}

/// Verifies entries' TPM quotes against enrollment records and the trust file's `tpm` policies.
pub struct TpmAttestationVerifier {
    builders: HashMap<String, TpmBuilder>,
    state: RwLock<State>,
    generation: AtomicU64,
}

impl std::fmt::Debug for TpmAttestationVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmAttestationVerifier")
            .field("builders", &self.builders.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn policy_of(t: &provenix_core::policy::TpmPolicy) -> QuotePolicy {
    let mut allow = PcrAllowList::default();
    for (i, v) in &t.pcrs {
        allow.allow(HashAlg::Sha256, *i, v.to_vec());
    }
    QuotePolicy {
        pcr_allow_list: allow,
        allow_unmeasured_boot: t.allow_unmeasured_boot,
        ..QuotePolicy::default()
    }
}

impl TpmAttestationVerifier {
    /// The verifier for a trust file, reading each builder's `ek-roots` PEM files (paths as
    /// written: relative ones are relative to the working directory). `None` when no builder
    /// has a `tpm` table.
    pub fn from_config(config: &TrustConfig) -> Result<Option<Self>, String> {
        let mut builders = HashMap::new();
        for b in &config.builders {
            let Some(t) = &b.tpm else { continue };
            let mut roots = EkRoots::default();
            for path in &t.ek_roots {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "builder {:?}: cannot read ek-roots file {path}: {e}",
                        b.name
                    )
                })?;
                roots
                    .add_pem(&pem)
                    .map_err(|e| format!("builder {:?}: ek-roots file {path}: {e}", b.name))?;
            }
            builders.insert(
                b.name.clone(),
                TpmBuilder {
                    key: b.key.clone(),
                    roots,
                    policy: policy_of(t),
                    pin: t.ak_name.map(|n| Name(n.to_vec())),
                },
            );
        }
        if builders.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            builders,
            state: RwLock::new(State::default()),
            generation: AtomicU64::new(1),
        }))
    }

    /// The verified enrollments of `builder` known so far.
    pub fn enrollments(&self, builder: &str) -> Vec<VerifiedEnrollment> {
        self.state
            .read()
            .map(|s| s.enrolled.get(builder).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn not_enrolled(&self, st: &State, builder: &str, ak: &Name) -> Attestation {
        let mut msg = format!(
            "not_enrolled: AK {ak} has no verified enrollment record for builder {builder} in the configured logs"
        );
        if let Some(r) = st.refused.get(builder).filter(|r| !r.is_empty()) {
            msg.push_str(" (refused: ");
            msg.push_str(&r.values().cloned().collect::<Vec<_>>().join("; "));
            msg.push(')');
        }
        Attestation::Failed(msg)
    }
}

impl AttestationVerifier for TpmAttestationVerifier {
    fn verify(&self, builder: &BuilderConfig, entry: &Entry) -> Attestation {
        let bundle = match QuoteBundle::from_entry(entry) {
            Ok(None) => return Attestation::Absent,
            Ok(Some(b)) => b,
            Err(e) => return Attestation::Failed(format!("tpm_quote_malformed: {e}")),
        };
        let Some(tb) = self.builders.get(&builder.name) else {
            return Attestation::Failed(format!(
                "no_tpm_policy: the trust file has no tpm table for builder {}",
                builder.name
            ));
        };
        let ak = match TpmtPublic::parse(&bundle.ak_public) {
            Ok(p) => p.name(),
            Err(e) => {
                return Attestation::Failed(format!("ak_public_malformed: AK public area: {e}"))
            }
        };
        let trust = {
            let Ok(st) = self.state.read() else {
                return Attestation::Failed("internal: state lock".into());
            };
            let found = st
                .enrolled
                .get(&builder.name)
                .and_then(|v| v.iter().find(|e| e.ak_name == ak));
            match found {
                Some(e) => e.ak_trust(),
                None => return self.not_enrolled(&st, &builder.name, &ak),
            }
        };
        let verified = match verify_entry_quote(entry, &trust, &tb.policy) {
            Ok(v) => v,
            Err(e) => return Attestation::Failed(format!("{}: {e}", e.code())),
        };
        // The TPM clock must follow the builder's counter.
        let (Some(counter), Ok(mut st)) = (entry.statement().counter(), self.state.write()) else {
            return Attestation::Verified;
        };
        let clock = verified.attest.clock_info.key();
        let seen = st.clocks.entry(ak).or_default();
        let before = seen.range(..=counter).next_back();
        let after = seen.range(counter..).next();
        for (c, other) in before.into_iter().chain(after) {
            let ok = match c.cmp(&counter) {
                std::cmp::Ordering::Less => *other <= clock,
                std::cmp::Ordering::Greater => *other >= clock,
                std::cmp::Ordering::Equal => *other == clock,
            };
            if !ok {
                return Attestation::Failed(format!(
                    "clock_regression: entry counter {counter} has TPM clock {clock:?} but counter {c} has {other:?}: the TPM clock went backwards"
                ));
            }
        }
        seen.insert(counter, clock);
        Attestation::Verified
    }

    fn wanted_keys(&self) -> Vec<String> {
        let Ok(mut st) = self.state.write() else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut out = Vec::new();
        for name in self.builders.keys() {
            let every = if st.enrolled.get(name).is_some_and(|v| !v.is_empty()) {
                REFRESH
            } else {
                RETRY
            };
            let due = st
                .asked
                .get(name)
                .is_none_or(|t| now.duration_since(*t) >= every);
            if due {
                st.asked.insert(name.clone(), now);
                out.push(LookupKey::Builder(name.clone()).to_string());
            }
        }
        out.sort();
        out
    }

    fn learn(&self, log: &LogVerifier, key: &str, found: Vec<Fetched>) {
        let Some(name) = key.strip_prefix(BUILDER_KEY_PREFIX) else {
            return;
        };
        let Some(tb) = self.builders.get(name) else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .ok();
        let Ok(mut st) = self.state.write() else {
            return;
        };
        let mut changed = false;
        for f in found {
            let (index, outcome) = match f {
                Fetched::Bad { index, reason } => (index, Err(reason)),
                Fetched::Record { index, record } => {
                    if !st.seen.insert(record.leaf_hash()) {
                        continue;
                    }
                    let r = if record.builder() != name {
                        Err(format!(
                            "enrollment_malformed: a record for builder {} under {key}",
                            record.builder()
                        ))
                    } else {
                        record
                            .verify(log, &tb.key, &tb.roots, now, tb.pin.as_ref())
                            .map_err(|e| format!("{}: {e}", e.code()))
                    };
                    (index, r)
                }
            };
            changed = true;
            let at = format!("{} #{index}", log.name());
            match outcome {
                Ok(v) => {
                    tracing::info!(builder = %name, ak = %v.ak_name, log = %log.name(), index, "TPM enrollment verified");
                    if let Some(r) = st.refused.get_mut(name) {
                        r.remove(&at);
                    }
                    let list = st.enrolled.entry(name.to_owned()).or_default();
                    if !list.iter().any(|e| e.ak_name == v.ak_name) {
                        list.push(v);
                    }
                }
                Err(reason) => {
                    tracing::warn!(builder = %name, log = %log.name(), index, "TPM enrollment record refused: {reason}");
                    st.refused
                        .entry(name.to_owned())
                        .or_default()
                        .insert(at.clone(), format!("{at}: {reason}"));
                }
            }
        }
        if changed {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

impl Quorum {
    /// Fetches the enrollment records the attestation verifier wants from every log (one
    /// batched lookup per log, concurrently, bounded by the log timeout) and hands what passed
    /// the log checks to it. A no-op when it wants nothing (most lookups).
    pub(super) async fn refresh_attestation(&self) {
        let keys = self.attestation.wanted_keys();
        if keys.is_empty() {
            return;
        }
        let jobs = self.logs.iter().map(|log| {
            let keys = &keys;
            async move {
                let r = tokio::time::timeout(self.timeout, self.fetch_records(log, keys))
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".into()));
                (log, r)
            }
        });
        for (log, r) in futures::future::join_all(jobs).await {
            match r {
                Ok(found) => {
                    for (k, f) in found {
                        self.attestation.learn(&log.key, &k, f);
                    }
                }
                Err(e) => {
                    tracing::warn!(log = %log.url, "cannot look up enrollment records: {e}");
                }
            }
        }
    }

    async fn fetch_records(
        &self,
        log: &LogSource,
        keys: &[String],
    ) -> Result<Vec<(String, Vec<Fetched>)>, String> {
        if self.state.failed(&log.key).is_some() {
            return Err("the log is marked failed".into());
        }
        let resp = {
            let _permit = self.limiter.acquire().await;
            log.client.lookup_batch(keys).await
        }
        .map_err(|e| e.to_string())?;
        let cp = log
            .verify_checkpoint(&resp.checkpoint)
            .map_err(|e| e.to_string())?;
        self.state
            .check(&log.key, &cp, |from, to| async move {
                let _permit = self.limiter.acquire().await;
                let r = log
                    .client
                    .consistency(from, to)
                    .await
                    .map_err(|e| e.to_string())?;
                if r.from != from || r.to != to {
                    return Err(format!(
                        "asked for {from} → {to}, got {} → {}",
                        r.from, r.to
                    ));
                }
                Ok(r.proof)
            })
            .await
            .map_err(|e| match e {
                ConsistencyError::Failed(f) => f.reason,
                ConsistencyError::Unproven(m) | ConsistencyError::State(m) => m,
            })?;
        let mut out = Vec::new();
        for (k, entries) in resp.results {
            if !keys.contains(&k) {
                continue;
            }
            let found = entries
                .iter()
                .map(|e| {
                    let index = e.index;
                    let record = match EnrollmentRecord::parse(e.envelope.get().as_bytes()) {
                        Ok(r) => r,
                        Err(err) => {
                            return Fetched::Bad {
                                index,
                                reason: format!("{}: {err}", err.code()),
                            }
                        }
                    };
                    match merkle::verify_inclusion(
                        &record.leaf_hash(),
                        index,
                        cp.size(),
                        &e.inclusion_proof,
                        cp.root(),
                    ) {
                        Ok(()) => Fetched::Record {
                            index,
                            record: Box::new(record),
                        },
                        Err(err) => Fetched::Bad {
                            index,
                            reason: format!("bad_inclusion_proof: {err}"),
                        },
                    }
                })
                .collect();
            out.push((k, found));
        }
        Ok(out)
    }
}
