//! `trust.toml`: the model of DESIGN.md §7, parsed strictly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    DissentRule, Location, Member, RequireAttestation, Threshold, TrustError, TrustErrorKind,
    TrustPolicy,
};
use crate::checkpoint::LogVerifier;
use crate::nix::{is_valid_key_name, NixPublicKey};
use crate::witness::CosignerVerifier;

/// Largest `trust.toml` accepted (1 MiB).
pub const MAX_TRUST_TOML_BYTES: usize = 1024 * 1024;

/// The substituter's default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:37515";

/// A parsed and checked `trust.toml`.
///
/// ```toml
/// [[log]]
/// url = "http://127.0.0.1:8080"            # the log's HTTP API (provenixd)
/// key = "log.example+1a2b3c4d+AbC…"        # its C2SP note verifier key (`provenixd key`)
/// witnesses = ["w1+…+…"]                    # optional: C2SP cosignature verifier keys
/// min-witnesses = 1                         # optional: cosignatures needed (default: all listed)
///
/// [[builder]]
/// name = "alpha"                            # the key name (DSSE keyid)
/// key = "alpha:BASE64PUBLICKEY="            # Nix public-key format; its name must be `name`
/// operator = "acme"                         # optional
/// tpm = { ek-roots = ["/etc/provenix/ek-ca.pem"], pcrs = { "7" = "hex…" },
///         allow-unmeasured-boot = false, ak-name = "000b…" }   # optional
///
/// [policy]
/// threshold = "2 of [alpha, beta, gamma]"
/// dissent = "veto"                          # or "ignore"; default "veto"
/// require-built = true                      # default true
/// require-attestation = false               # or true, or a list of builder names
///
/// [substituter]                             # optional; needed by `provenix substituter`
/// listen = "127.0.0.1:37515"
/// upstreams = ["http://127.0.0.1:18071"]
/// signing-key-file = "/var/lib/provenix/substituter.sec"
/// ```
/// Unknown fields are refused everywhere. Paths are kept as written: the caller reads the files.
#[derive(Clone, Debug)]
pub struct TrustConfig {
    /// The logs to consult (at least one).
    pub logs: Vec<LogConfig>,
    /// The builders the user trusts to vote, in file order (names unique).
    pub builders: Vec<BuilderConfig>,
    /// The decision rules.
    pub policy: TrustPolicy,
    /// The `[substituter]` section, when present.
    pub substituter: Option<SubstituterConfig>,
}

/// One `[[log]]`.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `url`: base URL of the log's HTTP API (`http://` or `https://`).
    pub url: String,
    /// `key`: the log's C2SP note verifier key; checkpoints must be signed by it and their origin
    /// must equal its name.
    pub key: LogVerifier,
    /// `witnesses`: C2SP `tlog-cosignature` verifier keys (`NAME+HEXID+BASE64`, type 0x04) of
    /// witnesses whose cosignatures on this log's checkpoints are counted (may be empty).
    pub witnesses: Vec<CosignerVerifier>,
    /// `min-witnesses`: valid cosignatures (by distinct listed witnesses) a checkpoint needs
    /// before any entry it covers counts (0 when no witnesses are listed; all listed witnesses
    /// when omitted).
    pub min_witnesses: usize,
}

/// One `[[builder]]`.
#[derive(Clone, Debug)]
pub struct BuilderConfig {
    /// `name`: the builder's key name, its DSSE `keyid`.
    pub name: String,
    /// `key`: its Ed25519 public key in Nix's format; entries must be signed by it.
    pub key: NixPublicKey,
    /// `operator`: who runs it; a threshold naming the operator counts its builders once.
    pub operator: Option<String>,
    /// `tpm`: how to verify its TPM attestations, when it has any.
    pub tpm: Option<TpmPolicy>,
}

/// A builder's `tpm = { … }` table: what its TPM quotes must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmPolicy {
    /// `ek-roots`: PEM files of the CAs its EK certificate must chain to (at least one; paths as
    /// written, the caller reads them).
    pub ek_roots: Vec<String>,
    /// `pcrs`: expected SHA-256 bank values by PCR index 0-23 (`{ "7" = "hex" }`).
    pub pcrs: BTreeMap<u8, [u8; 32]>,
    /// `allow-unmeasured-boot` (default false): accept all-zero boot PCRs (firmware that never
    /// measured, as swtpm's). Test setups only.
    pub allow_unmeasured_boot: bool,
    /// `ak-name`: the AK's TPM name (0x000b ‖ SHA-256 of its public area), pinning one AK.
    pub ak_name: Option<[u8; 34]>,
}

/// The `[substituter]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubstituterConfig {
    /// `listen` (default 127.0.0.1:37515): where Nix reaches the substituter.
    pub listen: SocketAddr,
    /// `upstreams`: ordinary Nix binary caches holding the NARs, tried in order (at least one).
    pub upstreams: Vec<String>,
    /// `signing-key-file`: the local Nix secret key that signs what the substituter serves (the
    /// only key the user's `nix.conf` trusts). A path, read by the caller.
    pub signing_key_file: String,
    /// `decision-ttl-secs` (default 300): how long a "trusted" decision is reused.
    pub decision_ttl: Duration,
    /// `negative-ttl-secs` (default 10): how long a "not trusted" decision is reused; short so
    /// a path that reaches its quorum later is served soon.
    pub negative_ttl: Duration,
    /// `log-timeout-ms` (default 3000): the deadline for one log request; a log that misses it
    /// counts as unreachable ("no").
    pub log_timeout: Duration,
    /// `max-concurrent-lookups` (default 32): log lookups in flight at once.
    pub max_concurrent_lookups: usize,
    /// `state-file`: where the checkpoints seen so far are kept for consistency checks; when
    /// omitted the caller picks its default.
    pub state_file: Option<String>,
    /// `priority` (default 30): the `Priority` of `/nix-cache-info` (lower is tried first;
    /// cache.nixos.org uses 40).
    pub priority: u32,
    /// `max-connections` (default 1024): open client connections; more are closed at once.
    pub max_connections: usize,
    /// `header-timeout-secs` (default 10): a client must send a request's headers within this
    /// (also between requests on a kept-alive connection), else it is disconnected.
    pub header_timeout: Duration,
    /// `request-timeout-secs` (default 60): the longest time to the first byte of an answer;
    /// a request that takes longer is answered 404.
    pub request_timeout: Duration,
}

// ---- the serde layer: raw values with their spans ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    log: Vec<RawLog>,
    #[serde(default)]
    builder: Vec<RawBuilder>,
    policy: RawPolicy,
    substituter: Option<RawSubstituter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLog {
    url: Spanned<String>,
    key: Spanned<String>,
    witnesses: Option<Spanned<Vec<String>>>,
    min_witnesses: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBuilder {
    name: Spanned<String>,
    key: Spanned<String>,
    operator: Option<Spanned<String>>,
    tpm: Option<Spanned<RawTpm>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTpm {
    ek_roots: Spanned<Vec<String>>,
    #[serde(default)]
    pcrs: BTreeMap<String, String>,
    #[serde(default)]
    allow_unmeasured_boot: bool,
    ak_name: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPolicy {
    threshold: Spanned<String>,
    #[serde(default)]
    dissent: DissentRule,
    #[serde(default = "yes")]
    require_built: bool,
    require_attestation: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSubstituter {
    listen: Option<Spanned<String>>,
    upstreams: Spanned<Vec<Spanned<String>>>,
    signing_key_file: Spanned<String>,
    decision_ttl_secs: Option<u64>,
    negative_ttl_secs: Option<u64>,
    log_timeout_ms: Option<Spanned<u64>>,
    max_concurrent_lookups: Option<Spanned<usize>>,
    state_file: Option<Spanned<String>>,
    priority: Option<u32>,
    max_connections: Option<Spanned<usize>>,
    header_timeout_secs: Option<Spanned<u64>>,
    request_timeout_secs: Option<Spanned<u64>>,
}

/// Builds errors located in one text.
struct Ctx<'a> {
    text: &'a str,
}

impl Ctx<'_> {
    /// The value of an optional setting that must not be zero (`default` when absent); a zero
    /// is an error at the value, naming `field`.
    fn positive<T: Copy + PartialEq + From<u8>>(
        &self,
        v: Option<&Spanned<T>>,
        field: &'static str,
        default: T,
    ) -> Result<T, TrustError> {
        match v {
            Some(v) if *v.get_ref() == T::from(0) => {
                Err(self.at(v.span(), TrustErrorKind::Zero { field }))
            }
            Some(v) => Ok(*v.get_ref()),
            None => Ok(default),
        }
    }

    fn at(&self, span: Range<usize>, kind: TrustErrorKind) -> TrustError {
        TrustError {
            location: Some(Location::of_offset(self.text, span.start)),
            kind,
        }
    }

    /// Where character `offset` of a string value is, when the value is a one-line string
    /// literal without escapes (else the start of the value).
    fn inside(&self, span: &Range<usize>, value: &str, offset: usize) -> Range<usize> {
        let raw = self.text.get(span.clone()).unwrap_or_default();
        let quoted = raw.len() == value.len() + 2
            && (raw.starts_with('"') || raw.starts_with('\''))
            && raw.get(1..raw.len() - 1) == Some(value);
        if quoted {
            let at = span.start + 1 + offset;
            at..at
        } else {
            span.clone()
        }
    }

    fn toml(&self, e: &toml::de::Error) -> TrustError {
        let msg = e.message().trim_end();
        let kind = msg
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, tail)| TrustErrorKind::UnknownField {
                field: field.to_owned(),
                expected: tail
                    .strip_prefix(", expected ")
                    .unwrap_or("no fields here")
                    .to_owned(),
            })
            .unwrap_or_else(|| TrustErrorKind::Toml(msg.to_owned()));
        TrustError {
            location: e.span().map(|s| Location::of_offset(self.text, s.start)),
            kind,
        }
    }
}

/// Offset of `name` as a whole word in a threshold text.
fn word_offset(text: &str, name: &str) -> Option<usize> {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    text.match_indices(name).map(|(i, _)| i).find(|&i| {
        let before = i.checked_sub(1).and_then(|j| text.as_bytes().get(j));
        let after = text.as_bytes().get(i + name.len());
        !before.is_some_and(|b| is_word(*b)) && !after.is_some_and(|b| is_word(*b))
    })
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty()) && s.bytes().all(|b| b.is_ascii_graphic())
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    (s.len() == 64)
        .then(|| hex::decode_to_slice(s, &mut out).ok())
        .flatten()
        .map(|()| out)
}

impl FromStr for TrustConfig {
    type Err = TrustError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TrustConfig {
    /// Parses and checks a `trust.toml` text. The error says where and what to do.
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        if text.len() > MAX_TRUST_TOML_BYTES {
            return Err(TrustErrorKind::FileTooLarge(text.len()).into());
        }
        let cx = Ctx { text };
        let raw: RawFile = toml::from_str(text).map_err(|e| cx.toml(&e))?;

        let logs = Self::logs(&cx, raw.log)?;
        let (builders, operator_spans) = Self::builders(&cx, raw.builder)?;

        let p = raw.policy;
        let threshold: Threshold =
            p.threshold
                .get_ref()
                .parse()
                .map_err(|e: super::ThresholdError| {
                    let span = cx.inside(&p.threshold.span(), p.threshold.get_ref(), e.offset);
                    cx.at(span, TrustErrorKind::Threshold(e))
                })?;
        let (require_attestation, ra_span) = match &p.require_attestation {
            None => (RequireAttestation::None, None),
            Some(v) => (Self::require_attestation(&cx, v)?, Some(v.span())),
        };
        let members: BTreeMap<String, Member> = builders
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    Member {
                        operator: b.operator.clone(),
                        has_tpm: b.tpm.is_some(),
                    },
                )
            })
            .collect();
        let policy = TrustPolicy::new(
            members,
            threshold,
            p.dissent,
            p.require_built,
            require_attestation,
        )
        .map_err(|kind| {
            let th = &p.threshold;
            let span = match &kind {
                TrustErrorKind::NameClash(n) => operator_spans.get(n).cloned(),
                TrustErrorKind::UnknownName(n) => {
                    word_offset(th.get_ref(), n).map(|o| cx.inside(&th.span(), th.get_ref(), o))
                }
                TrustErrorKind::CountsTwice { second, .. } => word_offset(th.get_ref(), second)
                    .map(|o| cx.inside(&th.span(), th.get_ref(), o)),
                TrustErrorKind::AttestationUnknownBuilder(_)
                | TrustErrorKind::AttestationWithoutTpm(_) => ra_span.clone(),
                _ => None,
            };
            TrustError {
                location: span.map(|s| Location::of_offset(text, s.start)),
                kind,
            }
        })?;

        let substituter = raw
            .substituter
            .map(|s| Self::substituter(&cx, s))
            .transpose()?;
        Ok(Self {
            logs,
            builders,
            policy,
            substituter,
        })
    }

    /// The builder named `name`.
    pub fn builder(&self, name: &str) -> Option<&BuilderConfig> {
        self.builders.iter().find(|b| b.name == name)
    }

    fn logs(cx: &Ctx<'_>, raw: Vec<RawLog>) -> Result<Vec<LogConfig>, TrustError> {
        if raw.is_empty() {
            return Err(TrustErrorKind::NoLogs.into());
        }
        let mut logs: Vec<LogConfig> = Vec::new();
        for l in raw {
            if !is_http_url(l.url.get_ref()) {
                return Err(cx.at(l.url.span(), TrustErrorKind::BadLogUrl(l.url.into_inner())));
            }
            let key: LogVerifier = l
                .key
                .get_ref()
                .parse()
                .map_err(|e| cx.at(l.key.span(), TrustErrorKind::BadLogKey(e)))?;
            if logs.iter().any(|o| o.key.name() == key.name()) {
                return Err(cx.at(
                    l.key.span(),
                    TrustErrorKind::DuplicateLog(key.name().to_owned()),
                ));
            }
            if logs.iter().any(|o| &o.url == l.url.get_ref()) {
                return Err(cx.at(
                    l.url.span(),
                    TrustErrorKind::DuplicateLog(l.url.into_inner()),
                ));
            }
            let witnesses = match &l.witnesses {
                None => Vec::new(),
                Some(w) => {
                    if w.get_ref().is_empty() {
                        return Err(
                            cx.at(w.span(), TrustErrorKind::EmptyList { field: "witnesses" })
                        );
                    }
                    let mut seen = BTreeSet::new();
                    let mut keys = Vec::new();
                    for k in w.get_ref() {
                        let key: CosignerVerifier = k.parse().map_err(|_| {
                            cx.at(w.span(), TrustErrorKind::BadWitnessKey(k.clone()))
                        })?;
                        if !seen.insert(key.name().to_owned()) {
                            return Err(cx.at(
                                w.span(),
                                TrustErrorKind::Duplicate {
                                    field: "witnesses",
                                    name: k.clone(),
                                },
                            ));
                        }
                        keys.push(key);
                    }
                    keys
                }
            };
            let min_witnesses = match &l.min_witnesses {
                None => witnesses.len(),
                Some(_) if witnesses.is_empty() => {
                    return Err(cx.at(
                        l.min_witnesses
                            .as_ref()
                            .map(Spanned::span)
                            .unwrap_or_default(),
                        TrustErrorKind::MinWitnessesWithoutWitnesses,
                    ))
                }
                Some(k) if *k.get_ref() == 0 => {
                    return Err(cx.at(
                        k.span(),
                        TrustErrorKind::Zero {
                            field: "min-witnesses",
                        },
                    ))
                }
                Some(k) if *k.get_ref() > witnesses.len() => {
                    return Err(cx.at(
                        k.span(),
                        TrustErrorKind::TooLarge {
                            field: "min-witnesses",
                            k: *k.get_ref(),
                            n: witnesses.len(),
                        },
                    ))
                }
                Some(k) => *k.get_ref(),
            };
            logs.push(LogConfig {
                url: l.url.into_inner(),
                key,
                witnesses,
                min_witnesses,
            });
        }
        Ok(logs)
    }

    #[allow(clippy::type_complexity)]
    fn builders(
        cx: &Ctx<'_>,
        raw: Vec<RawBuilder>,
    ) -> Result<(Vec<BuilderConfig>, BTreeMap<String, Range<usize>>), TrustError> {
        let mut builders: Vec<BuilderConfig> = Vec::new();
        let mut operator_spans: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for b in raw {
            let name = b.name.get_ref();
            if !is_valid_key_name(name) {
                return Err(cx.at(
                    b.name.span(),
                    TrustErrorKind::BadName {
                        field: "builder",
                        name: name.clone(),
                    },
                ));
            }
            if builders.iter().any(|o| &o.name == name) {
                return Err(cx.at(
                    b.name.span(),
                    TrustErrorKind::DuplicateBuilder(name.clone()),
                ));
            }
            let key: NixPublicKey = b.key.get_ref().parse().map_err(|error| {
                cx.at(
                    b.key.span(),
                    TrustErrorKind::BadBuilderKey {
                        builder: name.clone(),
                        error,
                    },
                )
            })?;
            if key.name() != name {
                return Err(cx.at(
                    b.key.span(),
                    TrustErrorKind::KeyNameMismatch {
                        builder: name.clone(),
                        key_name: key.name().to_owned(),
                    },
                ));
            }
            if let Some(op) = &b.operator {
                if !is_valid_key_name(op.get_ref()) {
                    return Err(cx.at(
                        op.span(),
                        TrustErrorKind::BadName {
                            field: "operator",
                            name: op.get_ref().clone(),
                        },
                    ));
                }
                operator_spans
                    .entry(op.get_ref().clone())
                    .or_insert_with(|| op.span());
            }
            let tpm = b.tpm.as_ref().map(|t| Self::tpm(cx, name, t)).transpose()?;
            builders.push(BuilderConfig {
                name: name.clone(),
                key,
                operator: b.operator.map(Spanned::into_inner),
                tpm,
            });
        }
        for (op, span) in &operator_spans {
            if builders.iter().any(|b| &b.name == op) {
                return Err(cx.at(span.clone(), TrustErrorKind::NameClash(op.clone())));
            }
        }
        Ok((builders, operator_spans))
    }

    fn tpm(cx: &Ctx<'_>, builder: &str, t: &Spanned<RawTpm>) -> Result<TpmPolicy, TrustError> {
        let raw = t.get_ref();
        if raw.ek_roots.get_ref().is_empty() {
            return Err(cx.at(
                raw.ek_roots.span(),
                TrustErrorKind::EmptyList { field: "ek-roots" },
            ));
        }
        if raw.ek_roots.get_ref().iter().any(String::is_empty) {
            return Err(cx.at(raw.ek_roots.span(), TrustErrorKind::EmptyString("ek-roots")));
        }
        let mut pcrs = BTreeMap::new();
        for (index, value) in &raw.pcrs {
            let i: u8 = index
                .parse()
                .ok()
                .filter(|i| *i <= 23 && (index == "0" || !index.starts_with('0')))
                .ok_or_else(|| {
                    cx.at(
                        t.span(),
                        TrustErrorKind::BadPcrIndex {
                            builder: builder.to_owned(),
                            index: index.clone(),
                        },
                    )
                })?;
            let v = hex32(value).ok_or_else(|| {
                cx.at(
                    t.span(),
                    TrustErrorKind::BadPcrValue {
                        builder: builder.to_owned(),
                        index: i,
                    },
                )
            })?;
            pcrs.insert(i, v);
        }
        let ak_name = match &raw.ak_name {
            None => None,
            Some(s) => {
                let mut out = [0u8; 34];
                let ok = s.get_ref().len() == 68
                    && s.get_ref().starts_with("000b")
                    && hex::decode_to_slice(s.get_ref(), &mut out).is_ok();
                if !ok {
                    return Err(cx.at(
                        s.span(),
                        TrustErrorKind::BadAkName {
                            builder: builder.to_owned(),
                        },
                    ));
                }
                Some(out)
            }
        };
        Ok(TpmPolicy {
            ek_roots: raw.ek_roots.get_ref().clone(),
            pcrs,
            allow_unmeasured_boot: raw.allow_unmeasured_boot,
            ak_name,
        })
    }

    fn require_attestation(
        cx: &Ctx<'_>,
        v: &Spanned<toml::Value>,
    ) -> Result<RequireAttestation, TrustError> {
        match v.get_ref() {
            toml::Value::Boolean(false) => Ok(RequireAttestation::None),
            toml::Value::Boolean(true) => Ok(RequireAttestation::All),
            toml::Value::Array(items) => {
                if items.is_empty() {
                    return Err(cx.at(
                        v.span(),
                        TrustErrorKind::EmptyList {
                            field: "require-attestation",
                        },
                    ));
                }
                let mut set = BTreeSet::new();
                for item in items {
                    let toml::Value::String(name) = item else {
                        return Err(cx.at(v.span(), TrustErrorKind::BadRequireAttestation));
                    };
                    if !set.insert(name.clone()) {
                        return Err(cx.at(
                            v.span(),
                            TrustErrorKind::Duplicate {
                                field: "require-attestation",
                                name: name.clone(),
                            },
                        ));
                    }
                }
                Ok(RequireAttestation::Builders(set))
            }
            _ => Err(cx.at(v.span(), TrustErrorKind::BadRequireAttestation)),
        }
    }

    fn substituter(cx: &Ctx<'_>, s: RawSubstituter) -> Result<SubstituterConfig, TrustError> {
        let listen = match &s.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 37515)),
            Some(l) => l
                .get_ref()
                .parse()
                .map_err(|_| cx.at(l.span(), TrustErrorKind::BadListen(l.get_ref().clone())))?,
        };
        if s.upstreams.get_ref().is_empty() {
            return Err(cx.at(
                s.upstreams.span(),
                TrustErrorKind::EmptyList { field: "upstreams" },
            ));
        }
        let mut upstreams = Vec::new();
        for u in s.upstreams.get_ref() {
            if !is_http_url(u.get_ref()) {
                return Err(cx.at(
                    u.span(),
                    TrustErrorKind::BadUpstreamUrl(u.get_ref().clone()),
                ));
            }
            if upstreams.contains(u.get_ref()) {
                return Err(cx.at(
                    u.span(),
                    TrustErrorKind::Duplicate {
                        field: "upstreams",
                        name: u.get_ref().clone(),
                    },
                ));
            }
            upstreams.push(u.get_ref().clone());
        }
        if s.signing_key_file.get_ref().is_empty() {
            return Err(cx.at(
                s.signing_key_file.span(),
                TrustErrorKind::EmptyString("signing-key-file"),
            ));
        }
        let log_timeout_ms = cx.positive(s.log_timeout_ms.as_ref(), "log-timeout-ms", 3000)?;
        let max_concurrent_lookups = cx.positive(
            s.max_concurrent_lookups.as_ref(),
            "max-concurrent-lookups",
            32,
        )?;
        let max_connections = cx.positive(s.max_connections.as_ref(), "max-connections", 1024)?;
        let header_timeout =
            cx.positive(s.header_timeout_secs.as_ref(), "header-timeout-secs", 10)?;
        let request_timeout =
            cx.positive(s.request_timeout_secs.as_ref(), "request-timeout-secs", 60)?;
        let state_file = match s.state_file {
            Some(f) if f.get_ref().is_empty() => {
                return Err(cx.at(f.span(), TrustErrorKind::EmptyString("state-file")))
            }
            f => f.map(Spanned::into_inner),
        };
        Ok(SubstituterConfig {
            listen,
            upstreams,
            signing_key_file: s.signing_key_file.into_inner(),
            decision_ttl: Duration::from_secs(s.decision_ttl_secs.unwrap_or(300)),
            negative_ttl: Duration::from_secs(s.negative_ttl_secs.unwrap_or(10)),
            log_timeout: Duration::from_millis(log_timeout_ms),
            max_concurrent_lookups,
            state_file,
            priority: s.priority.unwrap_or(30),
            max_connections,
            header_timeout: Duration::from_secs(header_timeout),
            request_timeout: Duration::from_secs(request_timeout),
        })
    }
}
