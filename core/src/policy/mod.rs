//! The trust policy: `trust.toml` (DESIGN.md §7), its threshold language, and the decision for
//! one store path.
//!
//! - [`TrustConfig::parse`] reads a `trust.toml` text (the caller reads the file) into checked
//!   values; every mistake is one [`TrustError`] with a line and column and a hint.
//! - [`Threshold`] is the `K of [..]` / `all of [..]` / `any of [..]` language.
//! - [`TrustPolicy::decide`] turns the [`Votes`] for one store path (what the logs returned,
//!   after the caller checked signatures, inclusion proofs and log consistency) into a
//!   [`Decision`]: a verdict with who agreed, who dissented, who is missing and why.
//!
//! # Authenticated vs untrusted
//! The configuration is trusted (it is the user's). Votes are only as good as the caller's checks:
//! a [`Claim`] must be an entry whose DSSE signature verified under the named builder's key from
//! this configuration, whose inclusion proof verified against a checkpoint signed by a configured
//! log, and whose log was consistent with every checkpoint seen before. Entries failing any of
//! that go into [`Votes::rejected`] and never count. The evaluator itself also ignores claims by
//! builders it does not know and claims that do not name the store path being decided.

mod config;
mod decision;
mod threshold;

pub use config::{
    BuilderConfig, LogConfig, SubstituterConfig, TpmPolicy, TrustConfig, DEFAULT_LISTEN,
    MAX_TRUST_TOML_BYTES,
};
pub use decision::{
    Attestation, Candidate, Claim, Content, Decision, Dissent, LogFailure, LogFailureKind, Missing,
    MissingCause, Reason, RejectedEntry, Rejection, Verdict, Votes,
};
pub use threshold::{
    Count, Threshold, ThresholdError, ThresholdErrorKind, MAX_DEPTH, MAX_THRESHOLD_LEN,
};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::checkpoint::CheckpointError;
use crate::nix::{is_valid_key_name, KeyError};

/// A position in the `trust.toml` text (1-based; the column counts characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a trust configuration was refused: what, where (when known) and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TrustError {
    /// Where in the `trust.toml` text (`None` for policies built in code).
    pub location: Option<Location>,
    pub kind: TrustErrorKind,
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: {}", self.kind),
            None => self.kind.fmt(f),
        }
    }
}

impl From<TrustErrorKind> for TrustError {
    fn from(kind: TrustErrorKind) -> Self {
        Self {
            location: None,
            kind,
        }
    }
}

/// Every way a `trust.toml` can be wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustErrorKind {
    #[error("the file is {0} bytes; the limit is {MAX_TRUST_TOML_BYTES}")]
    FileTooLarge(usize),
    #[error("invalid TOML: {0}")]
    Toml(String),
    #[error("unknown field `{field}` (expected {expected}): fix its spelling or remove it")]
    UnknownField { field: String, expected: String },
    #[error("no [[log]]: add at least one log with its `url` and `key`")]
    NoLogs,
    #[error("log url {0:?} must start with http:// or https://")]
    BadLogUrl(String),
    #[error("log key is not a C2SP note verifier key NAME+HEXID+BASE64 (as `provenixd key` prints it): {0}")]
    BadLogKey(CheckpointError),
    #[error("two [[log]] entries use the key of log {0:?}: list each log once")]
    DuplicateLog(String),
    #[error("witness key {0:?} is not a C2SP cosignature verifier key NAME+HEXID+BASE64 (type 0x04, as `provenix witness keygen` prints it)")]
    BadWitnessKey(String),
    #[error("`min-witnesses` needs a `witnesses` list")]
    MinWitnessesWithoutWitnesses,
    #[error("`{field}` is an empty list: list at least one, or remove the field")]
    EmptyList { field: &'static str },
    #[error("`{field}` = 0 would require nothing: use at least 1")]
    Zero { field: &'static str },
    #[error("`{field}` = {k} but only {n} listed: it cannot exceed the list's length")]
    TooLarge {
        field: &'static str,
        k: usize,
        n: usize,
    },
    #[error("{field} {name:?} is not a valid name: use 1-128 characters of A-Z a-z 0-9 . _ -")]
    BadName { field: &'static str, name: String },
    #[error("builder {builder:?}: `key` is not a Nix public key NAME:BASE64 (as `nix-store --generate-binary-cache-key` writes it): {error}")]
    BadBuilderKey { builder: String, error: KeyError },
    #[error(
        "builder {builder:?}: its key is named {key_name:?}; the builder name must be the key name"
    )]
    KeyNameMismatch { builder: String, key_name: String },
    #[error("builder {0:?} is defined twice: keep one [[builder]] per name")]
    DuplicateBuilder(String),
    #[error("{0:?} is both a builder name and an operator name: rename one so the threshold is unambiguous")]
    NameClash(String),
    #[error("builder {builder:?}: tpm.pcrs key {index:?} is not a PCR index 0-23")]
    BadPcrIndex { builder: String, index: String },
    #[error("builder {builder:?}: tpm.pcrs.\"{index}\" must be 64 hex characters (a SHA-256 bank value)")]
    BadPcrValue { builder: String, index: u8 },
    #[error("builder {builder:?}: tpm.ak-name must be the hex TPM name of the AK: 000b followed by 64 hex characters")]
    BadAkName { builder: String },
    #[error("invalid threshold: {} (character {} of the expression)", .0.kind, .0.column)]
    Threshold(ThresholdError),
    #[error("threshold names {0:?}, which is neither a [[builder]] name nor an `operator`: add that builder or fix the name")]
    UnknownName(String),
    #[error("threshold names {first:?} and {second:?}, which both count {unit}: name each builder or operator only once")]
    CountsTwice {
        first: String,
        second: String,
        unit: String,
    },
    #[error("require-attestation names {0:?}, which is not a [[builder]]")]
    AttestationUnknownBuilder(String),
    #[error("require-attestation covers builder {0:?}, which has no `tpm` table: add one or stop requiring its attestation")]
    AttestationWithoutTpm(String),
    #[error("`{field}` lists {name:?} twice")]
    Duplicate { field: &'static str, name: String },
    #[error("`require-attestation` must be true, false or a list of builder names")]
    BadRequireAttestation,
    #[error("`listen` {0:?} is not an address like 127.0.0.1:37515")]
    BadListen(String),
    #[error("upstream {0:?} must start with http:// or https://")]
    BadUpstreamUrl(String),
    #[error("`{0}` must not be empty")]
    EmptyString(&'static str),
}

/// What an operator's dissent does (`[policy] dissent`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DissentRule {
    /// Agreement of the threshold suffices; other claims are reported but do not block.
    Ignore,
    /// Any configured builder with an authenticated claim of other content blocks the path.
    /// The default: a disagreement means someone's build is not what it claims, so build locally.
    #[default]
    Veto,
}

/// Which builders' entries vote only with a verified TPM attestation (`require-attestation`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RequireAttestation {
    /// `false`: no builder needs one.
    #[default]
    None,
    /// `true`: every builder needs one (each must have a `tpm` table).
    All,
    /// A list of builder names (each must have a `tpm` table).
    Builders(BTreeSet<String>),
}

impl RequireAttestation {
    /// Whether `builder`'s entries need a verified attestation to vote.
    pub fn requires(&self, builder: &str) -> bool {
        match self {
            RequireAttestation::None => false,
            RequireAttestation::All => true,
            RequireAttestation::Builders(b) => b.contains(builder),
        }
    }
}

/// What the policy needs to know about one configured builder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// The operator running it, if named: a threshold naming the operator counts its builders once.
    pub operator: Option<String>,
    /// Whether it has a `tpm` table (so its attestations can be verified).
    pub has_tpm: bool,
}

/// The decision rules: builders, threshold, dissent rule, and which entries may vote.
///
/// Invariants checked by [`TrustPolicy::new`]: every threshold name is a builder or an operator;
/// no name is both; no two threshold names count the same builder (a builder and its operator,
/// two builders of one operator, or one operator twice); builders required to attest have a TPM
/// policy. Hence a plain boolean evaluation of the threshold never counts a builder twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustPolicy {
    members: BTreeMap<String, Member>,
    threshold: Threshold,
    dissent: DissentRule,
    require_built: bool,
    require_attestation: RequireAttestation,
}

impl TrustPolicy {
    /// Checks and builds a policy. Errors carry no location (see [`TrustConfig::parse`] for that).
    pub fn new(
        members: BTreeMap<String, Member>,
        threshold: Threshold,
        dissent: DissentRule,
        require_built: bool,
        require_attestation: RequireAttestation,
    ) -> Result<Self, TrustErrorKind> {
        let mut operators: BTreeSet<&str> = BTreeSet::new();
        for (name, m) in &members {
            if !is_valid_key_name(name) {
                return Err(TrustErrorKind::BadName {
                    field: "builder",
                    name: name.clone(),
                });
            }
            if let Some(op) = &m.operator {
                if !is_valid_key_name(op) {
                    return Err(TrustErrorKind::BadName {
                        field: "operator",
                        name: op.clone(),
                    });
                }
                operators.insert(op);
            }
        }
        if let Some(clash) = operators.iter().find(|o| members.contains_key(**o)) {
            return Err(TrustErrorKind::NameClash((*clash).to_owned()));
        }
        // Each threshold name stands for an independent unit: an operator, or a builder that has
        // no operator. Two names of one unit would let one party count twice.
        let mut units: BTreeMap<&str, &str> = BTreeMap::new();
        for name in threshold.names() {
            let unit = match members.get(name) {
                Some(m) => m.operator.as_deref().unwrap_or(name),
                None if operators.contains(name) => name,
                None => return Err(TrustErrorKind::UnknownName(name.to_owned())),
            };
            if let Some(first) = units.insert(unit, name) {
                let what = if operators.contains(unit) {
                    format!("operator {unit:?}")
                } else {
                    format!("builder {unit:?}")
                };
                return Err(TrustErrorKind::CountsTwice {
                    first: first.to_owned(),
                    second: name.to_owned(),
                    unit: what,
                });
            }
        }
        match &require_attestation {
            RequireAttestation::None => {}
            RequireAttestation::All => {
                if let Some((name, _)) = members.iter().find(|(_, m)| !m.has_tpm) {
                    return Err(TrustErrorKind::AttestationWithoutTpm(name.clone()));
                }
            }
            RequireAttestation::Builders(list) => {
                for name in list {
                    match members.get(name) {
                        None => {
                            return Err(TrustErrorKind::AttestationUnknownBuilder(name.clone()))
                        }
                        Some(m) if !m.has_tpm => {
                            return Err(TrustErrorKind::AttestationWithoutTpm(name.clone()))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(Self {
            members,
            threshold,
            dissent,
            require_built,
            require_attestation,
        })
    }

    /// The configured builders.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// The threshold expression.
    pub fn threshold(&self) -> &Threshold {
        &self.threshold
    }

    /// The dissent rule.
    pub fn dissent(&self) -> DissentRule {
        self.dissent
    }

    /// Whether only `builtLocally = true` entries vote.
    pub fn require_built(&self) -> bool {
        self.require_built
    }

    /// Which builders need a verified attestation to vote.
    pub fn require_attestation(&self) -> &RequireAttestation {
        &self.require_attestation
    }

    /// Whether the threshold holds when exactly `voters` (builder names) agree.
    pub fn is_satisfied_by(&self, voters: &BTreeSet<String>) -> bool {
        self.threshold.evaluate(&mut |name| {
            if self.members.contains_key(name) {
                voters.contains(name)
            } else {
                self.members
                    .iter()
                    .any(|(b, m)| m.operator.as_deref() == Some(name) && voters.contains(b))
            }
        })
    }
}

#[cfg(test)]
mod tests;
