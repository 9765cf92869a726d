//! The decision for one store path: [`TrustPolicy::decide`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::ser::SerializeMap as _;
use serde::{Serialize, Serializer};

use super::{DissentRule, TrustPolicy};
use crate::nix::{NarHash, StorePath};

/// What one entry claims: each output store path with its NAR hash.
pub type Content = BTreeMap<StorePath, NarHash>;

fn ser_content<S: Serializer>(c: &Content, s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(c.len()))?;
    for (p, h) in c {
        m.serialize_entry(&p.to_string(), &h.to_nix32_prefixed())?;
    }
    m.end()
}

fn fmt_content(c: &Content) -> String {
    c.iter()
        .map(|(p, h)| format!("{p} {}", h.to_nix32_prefixed()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything the caller learned about one store path from the configured logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Votes {
    /// The store path being decided.
    pub path: StorePath,
    /// Entries that passed the caller's checks: signature under the configured key of the builder
    /// they name, inclusion proof against a checkpoint signed by a configured log, and that log
    /// consistent with every checkpoint seen before.
    pub claims: Vec<Claim>,
    /// Entries that failed those checks (reported, never counted).
    pub rejected: Vec<RejectedEntry>,
    /// Logs that could not be used (reported; their entries are simply absent).
    pub log_failures: Vec<LogFailure>,
}

/// One authenticated entry's claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The builder (key name) whose key signed the entry.
    pub builder: String,
    /// The log it came from (its URL or name, for reports).
    pub log: String,
    /// Its index in that log.
    pub index: Option<u64>,
    /// The outputs and NAR hashes it claims.
    pub outputs: Content,
    /// `builtLocally`: "I built it" (true) or "I only vouch for what I hold" (false).
    pub built_locally: bool,
    /// What became of its TPM attestation.
    pub attestation: Attestation,
}

/// The state of an entry's TPM attestation, as the caller's verifier found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Attestation {
    /// A quote that passed every check of the builder's `tpm` policy.
    Verified,
    /// No quote in the entry.
    Absent,
    /// A quote that failed a check: why.
    Failed(String),
}

/// An entry that failed the caller's checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedEntry {
    /// The builder it names (its DSSE keyid), when readable. Unauthenticated.
    pub builder: Option<String>,
    /// The log it came from.
    pub log: String,
    /// Its index in that log.
    pub index: Option<u64>,
    /// Why it was rejected.
    pub reason: Rejection,
}

/// Why an entry was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum Rejection {
    /// Its signature does not verify under the named builder's configured key.
    BadSignature,
    /// Its inclusion proof does not verify against the log's checkpoint.
    BadInclusionProof,
    /// Its log showed a checkpoint inconsistent with one seen before.
    InconsistentLog,
    /// It names a builder that is not in `trust.toml`.
    UnknownBuilder,
    /// It is not a well-formed entry.
    Malformed(String),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::BadSignature => f.write_str("bad signature"),
            Rejection::BadInclusionProof => f.write_str("bad inclusion proof"),
            Rejection::InconsistentLog => f.write_str("inconsistent log"),
            Rejection::UnknownBuilder => f.write_str("unknown builder"),
            Rejection::Malformed(m) => write!(f, "malformed: {m}"),
        }
    }
}

/// A log that could not be used for this lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogFailure {
    /// The log (URL or name).
    pub log: String,
    /// What went wrong.
    pub kind: LogFailureKind,
}

/// What went wrong with a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum LogFailureKind {
    /// No answer (refused, timed out, HTTP error).
    Unreachable(String),
    /// Its checkpoint is not signed by the configured key or is malformed.
    BadCheckpoint(String),
    /// Its checkpoint is inconsistent with one seen before: the log forked or rewrote history.
    InconsistentCheckpoint(String),
    /// Its checkpoint lacks the witness cosignatures the trust file requires (`min-witnesses`).
    Unwitnessed(String),
}

impl fmt::Display for LogFailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogFailureKind::Unreachable(m) => write!(f, "unreachable: {m}"),
            LogFailureKind::BadCheckpoint(m) => write!(f, "bad checkpoint: {m}"),
            LogFailureKind::InconsistentCheckpoint(m) => write!(f, "inconsistent checkpoint: {m}"),
            LogFailureKind::Unwitnessed(m) => write!(f, "not witnessed: {m}"),
        }
    }
}

/// The outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// Exactly one content satisfied the threshold and no veto applied: serve these NAR hashes.
    Trusted {
        #[serde(serialize_with = "ser_content")]
        outputs: Content,
    },
    /// No content satisfied the threshold.
    NotTrusted,
    /// One content satisfied the threshold but a configured builder claims another (`veto`).
    Vetoed,
    /// Several contents satisfied the threshold.
    Conflict,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Trusted { .. } => "TRUSTED",
            Verdict::NotTrusted => "NOT TRUSTED",
            Verdict::Vetoed => "NOT TRUSTED (vetoed)",
            Verdict::Conflict => "NOT TRUSTED (conflict)",
        })
    }
}

/// A configured builder that claims a content other than the decided one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dissent {
    pub builder: String,
    /// The content it claims.
    #[serde(serialize_with = "ser_content")]
    pub outputs: Content,
    /// Whether that claim was eligible to vote (see [`TrustPolicy::decide`]).
    pub eligible: bool,
}

/// A configured builder that cast no eligible vote and does not dissent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Missing {
    pub builder: String,
    pub cause: MissingCause,
}

/// Why a builder's vote is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum MissingCause {
    /// No entry of it was found (or its log was unreachable).
    NoEntry,
    /// Its entries were rejected (see the reasons).
    EntriesRejected,
    /// It only vouched (`builtLocally = false`) and `require-built` is on.
    NotBuiltLocally,
    /// Its attestation is required and its entry has none.
    AttestationMissing,
    /// Its attestation is required and failed: why.
    AttestationFailed(String),
}

impl fmt::Display for MissingCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissingCause::NoEntry => f.write_str("no entry"),
            MissingCause::EntriesRejected => f.write_str("entries rejected"),
            MissingCause::NotBuiltLocally => f.write_str("did not build it"),
            MissingCause::AttestationMissing => f.write_str("no attestation"),
            MissingCause::AttestationFailed(r) => write!(f, "attestation failed: {r}"),
        }
    }
}

/// One content claimed by some configured builder, with its eligible voters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(serialize_with = "ser_content")]
    pub outputs: Content,
    pub voters: Vec<String>,
    /// Whether the threshold holds over `voters`.
    pub satisfied: bool,
}

/// One line of explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "code",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Reason {
    /// A log could not be used.
    LogFailed {
        log: String,
        failure: LogFailureKind,
    },
    /// An entry failed the caller's checks.
    EntryRejected {
        builder: Option<String>,
        log: String,
        index: Option<u64>,
        rejection: Rejection,
    },
    /// A claim by a builder not in the policy (ignored).
    UnknownBuilder {
        builder: String,
        log: String,
        index: Option<u64>,
    },
    /// A claim that does not name the path being decided (ignored).
    WrongPath {
        builder: String,
        log: String,
        index: Option<u64>,
    },
    /// A `builtLocally = false` claim under `require-built` (cannot vote).
    NotBuiltLocally {
        builder: String,
        log: String,
        index: Option<u64>,
    },
    /// A claim without the required attestation (cannot vote).
    AttestationMissing {
        builder: String,
        log: String,
        index: Option<u64>,
    },
    /// A claim whose required attestation failed (cannot vote).
    AttestationFailed {
        builder: String,
        log: String,
        index: Option<u64>,
        reason: String,
    },
    /// A builder claimed several different contents (a non-reproducible rebuild, or worse).
    SelfDisagreement { builder: String, contents: usize },
    /// No content reached the threshold; `best` are the voters of the leading content.
    ThresholdNotMet {
        threshold: String,
        best: Vec<String>,
    },
    /// The satisfied content was vetoed by these builders.
    Vetoed { by: Vec<String> },
    /// This many contents reached the threshold.
    Conflict { candidates: usize },
}

fn at(log: &str, index: Option<u64>) -> String {
    match index {
        Some(i) => format!("{log} #{i}"),
        None => log.to_owned(),
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::LogFailed { log, failure } => write!(f, "log {log}: {failure}"),
            Reason::EntryRejected {
                builder,
                log,
                index,
                rejection,
            } => write!(
                f,
                "entry {} by {}: rejected, {rejection}",
                at(log, *index),
                builder.as_deref().unwrap_or("?")
            ),
            Reason::UnknownBuilder {
                builder,
                log,
                index,
            } => write!(
                f,
                "entry {} by {builder}: not a configured builder, ignored",
                at(log, *index)
            ),
            Reason::WrongPath {
                builder,
                log,
                index,
            } => write!(
                f,
                "entry {} by {builder}: does not claim this path, ignored",
                at(log, *index)
            ),
            Reason::NotBuiltLocally {
                builder,
                log,
                index,
            } => write!(
                f,
                "entry {} by {builder}: builtLocally = false, cannot vote (require-built)",
                at(log, *index)
            ),
            Reason::AttestationMissing {
                builder,
                log,
                index,
            } => write!(
                f,
                "entry {} by {builder}: no attestation, cannot vote (require-attestation)",
                at(log, *index)
            ),
            Reason::AttestationFailed {
                builder,
                log,
                index,
                reason,
            } => write!(
                f,
                "entry {} by {builder}: attestation failed ({reason}), cannot vote",
                at(log, *index)
            ),
            Reason::SelfDisagreement { builder, contents } => write!(
                f,
                "{builder} claims {contents} different contents for this derivation"
            ),
            Reason::ThresholdNotMet { threshold, best } => {
                if best.is_empty() {
                    write!(f, "threshold {threshold} not met: no eligible votes agree")
                } else {
                    write!(
                        f,
                        "threshold {threshold} not met: only {} agree",
                        best.join(", ")
                    )
                }
            }
            Reason::Vetoed { by } => write!(
                f,
                "vetoed (dissent = \"veto\"): {} claim other content",
                by.join(", ")
            ),
            Reason::Conflict { candidates } => write!(
                f,
                "{candidates} different contents each satisfy the threshold"
            ),
        }
    }
}

/// The decision for one store path, with reasons. Serialises to the JSON of
/// `GET /v1/decision/<hash>` and `provenix verify --json`; `Display` is the human form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The store path decided.
    pub path: StorePath,
    /// The threshold applied (canonical form).
    pub threshold: String,
    /// The dissent rule applied.
    pub dissent_rule: DissentRule,
    pub verdict: Verdict,
    /// Eligible voters for the decided content: the satisfied one, or when none is satisfied, the
    /// one with the most voters (if unique). Sorted.
    pub agreed: Vec<String>,
    /// Configured builders claiming a content other than the decided one.
    pub dissent: Vec<Dissent>,
    /// Configured builders with no eligible vote that do not dissent.
    pub missing: Vec<Missing>,
    /// Every content claimed by a configured builder (satisfied first, then by voters).
    pub candidates: Vec<Candidate>,
    /// Why, line by line.
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// The agreed outputs, when trusted.
    pub fn trusted_outputs(&self) -> Option<&Content> {
        match &self.verdict {
            Verdict::Trusted { outputs } => Some(outputs),
            _ => None,
        }
    }

    /// Whether the path may be served.
    pub fn is_trusted(&self) -> bool {
        self.trusted_outputs().is_some()
    }

    /// The agreed NAR hash of the decided path itself, when trusted.
    pub fn trusted_nar_hash(&self) -> Option<&NarHash> {
        self.trusted_outputs().and_then(|o| o.get(&self.path))
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.path, self.verdict)?;
        let rule = match self.dissent_rule {
            DissentRule::Ignore => "ignore",
            DissentRule::Veto => "veto",
        };
        writeln!(f, "  policy:  {} (dissent = {rule})", self.threshold)?;
        if let Some(o) = self.trusted_outputs() {
            for (p, h) in o {
                writeln!(f, "  output:  {p} {}", h.to_nix32_prefixed())?;
            }
        }
        if !self.agreed.is_empty() {
            writeln!(f, "  agreed:  {}", self.agreed.join(", "))?;
        }
        for d in &self.dissent {
            writeln!(
                f,
                "  dissent: {} claims {}{}",
                d.builder,
                fmt_content(&d.outputs),
                if d.eligible {
                    ""
                } else {
                    " (not eligible to vote)"
                }
            )?;
        }
        for m in &self.missing {
            writeln!(f, "  missing: {} ({})", m.builder, m.cause)?;
        }
        if !self.reasons.is_empty() {
            writeln!(f, "  reasons:")?;
            for r in &self.reasons {
                writeln!(f, "    - {r}")?;
            }
        }
        Ok(())
    }
}

impl TrustPolicy {
    /// Decides whether `votes.path` may be served, and explains why.
    ///
    /// # Rules (DESIGN.md §7)
    /// - A *content* is what an entry claims for the derivation: the map output path → NAR hash.
    ///   Two claims agree only if their contents are exactly equal.
    /// - A claim is *authenticated* when the caller put it in [`Votes::claims`] (signature, inclusion
    ///   proof and log consistency checked), its builder is configured, and it names the path being
    ///   decided. Anything else never counts.
    /// - An authenticated claim is *eligible* to vote unless `require-built` is on and it says
    ///   `builtLocally = false`, or its builder is listed in `require-attestation` and its attestation
    ///   did not verify.
    /// - Each builder votes at most once per content, however many entries (rebuilds, logs) repeat it.
    /// - A content is *satisfied* when the threshold holds over the builders with an eligible claim of
    ///   exactly that content. Missing builders and unreachable logs are simply not voters: "no",
    ///   never a share of whoever answered.
    /// - Verdict: two or more satisfied contents → [`Verdict::Conflict`]; none →
    ///   [`Verdict::NotTrusted`]; exactly one → with `dissent = "veto"`, any configured builder with an
    ///   authenticated claim of another content (eligible or not: it says the path holds something
    ///   else) makes it [`Verdict::Vetoed`]; otherwise [`Verdict::Trusted`].
    /// - A builder that claimed two contents (it rebuilt and got different output): its claims stand
    ///   side by side. Under `veto` its other claim dissents against the satisfied content — it vetoes
    ///   itself. Under `ignore` its claim matching the satisfied content still votes, and it is also
    ///   listed under `dissent`. Either way the decision carries [`Reason::SelfDisagreement`].
    pub fn decide(&self, votes: &Votes) -> Decision {
        let mut reasons = Vec::new();
        let mut rejected: BTreeSet<&str> = BTreeSet::new();
        for l in &votes.log_failures {
            reasons.push(Reason::LogFailed {
                log: l.log.clone(),
                failure: l.kind.clone(),
            });
        }
        for r in &votes.rejected {
            if let Some(b) = &r.builder {
                rejected.insert(b);
            }
            reasons.push(Reason::EntryRejected {
                builder: r.builder.clone(),
                log: r.log.clone(),
                index: r.index,
                rejection: r.reason.clone(),
            });
        }

        // builder → content → eligible (any eligible claim of it), plus why not.
        let mut claims: BTreeMap<&str, BTreeMap<&Content, bool>> = BTreeMap::new();
        let mut causes: BTreeMap<(&str, &Content), MissingCause> = BTreeMap::new();
        for c in &votes.claims {
            let (builder, log, index) = (c.builder.clone(), c.log.clone(), c.index);
            if !self.members().contains_key(&c.builder) {
                reasons.push(Reason::UnknownBuilder {
                    builder,
                    log,
                    index,
                });
                continue;
            }
            if !c.outputs.contains_key(&votes.path) {
                rejected.insert(&c.builder);
                reasons.push(Reason::WrongPath {
                    builder,
                    log,
                    index,
                });
                continue;
            }
            let mut cause = None;
            if self.require_built() && !c.built_locally {
                cause = Some(MissingCause::NotBuiltLocally);
                reasons.push(Reason::NotBuiltLocally {
                    builder: builder.clone(),
                    log: log.clone(),
                    index,
                });
            }
            if self.require_attestation().requires(&c.builder) {
                match &c.attestation {
                    Attestation::Verified => {}
                    Attestation::Absent => {
                        cause.get_or_insert(MissingCause::AttestationMissing);
                        reasons.push(Reason::AttestationMissing {
                            builder,
                            log,
                            index,
                        });
                    }
                    Attestation::Failed(why) => {
                        cause.get_or_insert(MissingCause::AttestationFailed(why.clone()));
                        reasons.push(Reason::AttestationFailed {
                            builder,
                            log,
                            index,
                            reason: why.clone(),
                        });
                    }
                }
            }
            let eligible = claims
                .entry(&c.builder)
                .or_default()
                .entry(&c.outputs)
                .or_insert(false);
            *eligible |= cause.is_none();
            if let Some(cause) = cause {
                causes.entry((&c.builder, &c.outputs)).or_insert(cause);
            }
        }
        for (b, contents) in &claims {
            if contents.len() > 1 {
                reasons.push(Reason::SelfDisagreement {
                    builder: (*b).to_owned(),
                    contents: contents.len(),
                });
            }
        }

        let mut voters: BTreeMap<&Content, BTreeSet<String>> = BTreeMap::new();
        for (b, contents) in &claims {
            for (c, eligible) in contents {
                let v = voters.entry(*c).or_default();
                if *eligible {
                    v.insert((*b).to_owned());
                }
            }
        }
        let mut candidates: Vec<Candidate> = voters
            .iter()
            .map(|(c, v)| Candidate {
                outputs: (*c).clone(),
                voters: v.iter().cloned().collect(),
                satisfied: self.is_satisfied_by(v),
            })
            .collect();
        candidates.sort_by(|a, b| {
            b.satisfied
                .cmp(&a.satisfied)
                .then(b.voters.len().cmp(&a.voters.len()))
                .then_with(|| a.outputs.cmp(&b.outputs))
        });
        let satisfied = candidates.iter().filter(|c| c.satisfied).count();
        let subject: Option<&Candidate> = match satisfied {
            1 => candidates.first(),
            0 => match candidates.as_slice() {
                [first, second, ..] if first.voters.len() == second.voters.len() => None,
                [first, ..] if !first.voters.is_empty() => Some(first),
                _ => None,
            },
            _ => None,
        };

        let mut dissent = Vec::new();
        if let Some(s) = subject {
            for (b, contents) in &claims {
                for (c, eligible) in contents {
                    if **c != s.outputs {
                        dissent.push(Dissent {
                            builder: (*b).to_owned(),
                            outputs: (*c).clone(),
                            eligible: *eligible,
                        });
                    }
                }
            }
        }
        let agreed: Vec<String> = subject.map(|s| s.voters.clone()).unwrap_or_default();

        let threshold = self.threshold().to_string();
        let verdict = match (satisfied, subject) {
            (1, Some(s)) => {
                if self.dissent() == DissentRule::Veto && !dissent.is_empty() {
                    let by: BTreeSet<String> = dissent.iter().map(|d| d.builder.clone()).collect();
                    reasons.push(Reason::Vetoed {
                        by: by.into_iter().collect(),
                    });
                    Verdict::Vetoed
                } else {
                    Verdict::Trusted {
                        outputs: s.outputs.clone(),
                    }
                }
            }
            (0, _) => {
                reasons.push(Reason::ThresholdNotMet {
                    threshold: threshold.clone(),
                    best: agreed.clone(),
                });
                Verdict::NotTrusted
            }
            (n, _) => {
                reasons.push(Reason::Conflict { candidates: n });
                Verdict::Conflict
            }
        };

        let dissenters: BTreeSet<&str> = dissent.iter().map(|d| d.builder.as_str()).collect();
        let mut missing = Vec::new();
        for b in self.members().keys() {
            let b = b.as_str();
            let voted = claims
                .get(b)
                .is_some_and(|cs| cs.values().any(|eligible| *eligible));
            if voted || dissenters.contains(b) {
                continue;
            }
            let subject_cause = subject.and_then(|s| causes.get(&(b, &s.outputs)));
            let any_cause = causes.iter().find(|((cb, _), _)| *cb == b).map(|(_, c)| c);
            let cause = match subject_cause.or(any_cause) {
                Some(c) => c.clone(),
                None if rejected.contains(b) => MissingCause::EntriesRejected,
                None => MissingCause::NoEntry,
            };
            missing.push(Missing {
                builder: b.to_owned(),
                cause,
            });
        }

        Decision {
            path: votes.path.clone(),
            threshold,
            dissent_rule: self.dissent(),
            verdict,
            agreed,
            dissent,
            missing,
            candidates,
            reasons,
        }
    }
}
