//! The quote verifier: every check of the checklist in `TPM-NOTES.md`, each failure its own
//! error so a user can be told which check failed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ecdsa::signature::hazmat::PrehashVerifier;

use super::alg::HashAlg;
use super::attest::{Attest, ClockInfo, Signature};
use super::bundle::QuoteBundle;
use super::ek::TpmDevice;
use super::pcr::{PcrBanks, PcrSelection, PcrValuesError};
use super::public::{EccCurve, Name, PublicKey, Scheme, TpmtPublic};
use super::wire::ParseError;

/// Why a quote was refused. [`QuoteError::code`] is a stable identifier of the failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("AK public area: {0}")]
    AkPublic(ParseError),
    #[error(
        "AK is not restricted: it signs arbitrary data, so a \"quote\" it signed proves nothing"
    )]
    AkNotRestricted,
    #[error("AK is not a signing key")]
    AkNotSigning,
    #[error("AK can decrypt; an attestation key must be sign-only")]
    AkCanDecrypt,
    #[error("AK is not fixedTPM: it may have been duplicated out of the TPM")]
    AkNotFixedTpm,
    #[error("AK is not fixedParent: it may have been duplicated to another parent")]
    AkNotFixedParent,
    #[error("AK is not sensitiveDataOrigin: its private key was imported, not made by the TPM")]
    AkNotSensitiveDataOrigin,
    #[error("AK nameAlg {0} is too weak (SHA-256 or stronger required)")]
    AkWeakNameAlg(HashAlg),
    #[error("AK key refused: {0}")]
    AkWeakKey(String),
    #[error("AK Name {got} is not the enrolled AK {expected}")]
    AkNotEnrolled { expected: Name, got: Name },
    #[error("signature: {0}")]
    SignatureFormat(ParseError),
    #[error("signature scheme {got} does not match what the AK allows ({expected})")]
    SchemeMismatch { expected: String, got: String },
    #[error("the signature uses SHA-1, which this policy refuses")]
    Sha1NotAllowed,
    #[error("signature does not verify over the attest bytes with the AK")]
    BadSignature,
    #[error("attest: {0}")]
    Attest(ParseError),
    #[error("qualifiedSigner {got} is not the AK's qualified name {expected}")]
    QualifiedSignerMismatch { expected: Name, got: Name },
    #[error("extraData {got} is not the expected {expected}")]
    ExtraDataMismatch { expected: String, got: String },
    #[error("TPM clock is not safe (it may have gone backwards since last reported)")]
    ClockNotSafe,
    #[error("quote selects PCRs {got}; the policy requires exactly {expected}")]
    PcrSelectionMismatch { expected: String, got: String },
    #[error("claimed PCR values: {0}")]
    PcrValues(PcrValuesError),
    #[error("pcrDigest does not match the claimed PCR values")]
    PcrDigestMismatch,
    #[error("boot PCRs 0-7 of the {0} bank are all zero: the firmware measured nothing")]
    UnmeasuredBoot(HashAlg),
    #[error("the policy names PCR {hash}:{index}, which the quote does not cover")]
    PcrNotQuoted { hash: HashAlg, index: u8 },
    #[error("PCR {hash}:{index} is {got}, which the policy does not allow")]
    PcrNotAllowed {
        hash: HashAlg,
        index: u8,
        got: String,
    },
    #[error("TPM refused by the deny-list: {0}")]
    Denied(String),
}

impl QuoteError {
    /// A stable, machine-readable name of the failed check.
    pub fn code(&self) -> &'static str {
        match self {
            QuoteError::AkPublic(_) => "ak_public_malformed",
            QuoteError::AkNotRestricted => "ak_not_restricted",
            QuoteError::AkNotSigning => "ak_not_signing",
            QuoteError::AkCanDecrypt => "ak_can_decrypt",
            QuoteError::AkNotFixedTpm => "ak_not_fixed_tpm",
            QuoteError::AkNotFixedParent => "ak_not_fixed_parent",
            QuoteError::AkNotSensitiveDataOrigin => "ak_not_sensitive_data_origin",
            QuoteError::AkWeakNameAlg(_) => "ak_weak_name_alg",
            QuoteError::AkWeakKey(_) => "ak_weak_key",
            QuoteError::AkNotEnrolled { .. } => "ak_not_enrolled",
            QuoteError::SignatureFormat(_) => "signature_malformed",
            QuoteError::SchemeMismatch { .. } => "scheme_mismatch",
            QuoteError::Sha1NotAllowed => "sha1_not_allowed",
            QuoteError::BadSignature => "bad_signature",
            QuoteError::Attest(_) => "attest_malformed",
            QuoteError::QualifiedSignerMismatch { .. } => "qualified_signer_mismatch",
            QuoteError::ExtraDataMismatch { .. } => "extra_data_mismatch",
            QuoteError::ClockNotSafe => "clock_not_safe",
            QuoteError::PcrSelectionMismatch { .. } => "pcr_selection_mismatch",
            QuoteError::PcrValues(_) => "pcr_values_mismatch",
            QuoteError::PcrDigestMismatch => "pcr_digest_mismatch",
            QuoteError::UnmeasuredBoot(_) => "unmeasured_boot",
            QuoteError::PcrNotQuoted { .. } => "pcr_not_quoted",
            QuoteError::PcrNotAllowed { .. } => "pcr_not_allowed",
            QuoteError::Denied(_) => "denied",
        }
    }
}

/// Why a PCR allow-list from a trust policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcrPolicyError {
    #[error("PCR key {0:?} must be an index 0-63, optionally prefixed by a bank (`sha1:7`)")]
    BadIndex(String),
    #[error("PCR {key:?}: value must be {expected} hex characters for its bank")]
    BadValue { key: String, expected: usize },
}

/// Golden PCR values: for each (bank, index) the values a quote may show. Authenticated
/// configuration (from the verifier's trust policy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcrAllowList(pub BTreeMap<(HashAlg, u8), Vec<Vec<u8>>>);

impl PcrAllowList {
    /// From a trust policy's `pcrs = { "0" = "hex", "sha1:7" = "hex" }`: a bare index means
    /// `default_bank`. Values are hex (upper or lower case, optional `0x`).
    pub fn from_policy<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
        default_bank: HashAlg,
    ) -> Result<Self, PcrPolicyError> {
        let mut out = PcrAllowList::default();
        for (key, value) in entries {
            let (bank, idx) = match key.split_once(':') {
                Some((b, i)) => (
                    b.parse::<HashAlg>()
                        .map_err(|_| PcrPolicyError::BadIndex(key.to_owned()))?,
                    i,
                ),
                None => (default_bank, key),
            };
            let index = idx
                .parse::<u8>()
                .ok()
                .filter(|i| *i <= super::pcr::MAX_PCR_INDEX && !idx.starts_with('+'))
                .ok_or_else(|| PcrPolicyError::BadIndex(key.to_owned()))?;
            let v = value.strip_prefix("0x").unwrap_or(value);
            let bytes = hex::decode(v)
                .ok()
                .filter(|b| b.len() == bank.size())
                .ok_or_else(|| PcrPolicyError::BadValue {
                    key: key.to_owned(),
                    expected: bank.size() * 2,
                })?;
            out.allow(bank, index, bytes);
        }
        Ok(out)
    }

    /// Adds an allowed value for PCR `index` of bank `hash`.
    pub fn allow(&mut self, hash: HashAlg, index: u8, value: Vec<u8>) {
        self.0.entry((hash, index)).or_default().push(value);
    }
}

/// One entry of a TPM deny-list (e.g. TPM-Fail for ECDSA, ROCA for RSA). A rule matches when
/// every field it sets matches; a rule naming a manufacturer or model never matches a TPM whose
/// EK certificate was not verified (its identity is unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyRule {
    /// TPM manufacturer as the EK certificate names it (`id:49465800`).
    pub manufacturer: Option<String>,
    /// TPM model as the EK certificate names it.
    pub model: Option<String>,
    /// Inclusive range of the quote's `firmwareVersion`.
    pub firmware: Option<(u64, u64)>,
    /// Only for AKs of this kind (`"ecc"` or `"rsa"`); `None` = any.
    pub key_type: Option<String>,
    /// Shown to the user.
    pub reason: String,
}

/// What a deny-list hook is shown: authenticated facts about the quoting TPM.
#[derive(Clone, Copy, Debug)]
pub struct DenyContext<'a> {
    pub firmware_version: u64,
    pub device: Option<&'a TpmDevice>,
    pub ak: &'a TpmtPublic,
}

/// A caller's own deny check: `Some(reason)` refuses the TPM.
pub type DenyHook = Arc<dyn Fn(&DenyContext<'_>) -> Option<String> + Send + Sync>;

/// What a verifier requires of a quote. Authenticated configuration.
#[derive(Clone)]
pub struct QuotePolicy {
    /// The exact PCR selection a quote must carry (default: SHA-256 bank, PCRs 0–23).
    pub pcr_selection: PcrSelection,
    /// Golden values; PCRs not named here may hold anything.
    pub pcr_allow_list: PcrAllowList,
    /// Accept SHA-1 signatures (and hence a SHA-1 `pcrDigest`). Off by default.
    pub allow_sha1: bool,
    /// Accept quotes whose boot PCRs 0–7 are all zero (simulators). Off by default.
    pub allow_unmeasured_boot: bool,
    pub deny_list: Vec<DenyRule>,
    pub deny_hook: Option<DenyHook>,
}

impl fmt::Debug for QuotePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotePolicy")
            .field("pcr_selection", &self.pcr_selection)
            .field("pcr_allow_list", &self.pcr_allow_list)
            .field("allow_sha1", &self.allow_sha1)
            .field("allow_unmeasured_boot", &self.allow_unmeasured_boot)
            .field("deny_list", &self.deny_list)
            .field("deny_hook", &self.deny_hook.is_some())
            .finish()
    }
}

impl Default for QuotePolicy {
    fn default() -> Self {
        Self {
            pcr_selection: PcrSelection::full_bank(HashAlg::Sha256),
            pcr_allow_list: PcrAllowList::default(),
            allow_sha1: false,
            allow_unmeasured_boot: false,
            deny_list: Vec::new(),
            deny_hook: None,
        }
    }
}

/// What the verifier knows about the AK from elsewhere (enrollment). Authenticated input.
#[derive(Clone, Debug, Default)]
pub struct AkTrust {
    /// The AK Name bound to a verified EK by credential activation at enrollment. `None`: the
    /// caller binds the AK some other way (the quote then proves only "some TPM-resident
    /// restricted key signed this", if that key is genuine).
    pub name: Option<Name>,
    /// Qualified name of the AK's parent (for an AK under the EK: [`super::VerifiedEk::qualified_name`]).
    /// When set, `qualifiedSigner` must equal the AK's qualified name under it.
    pub parent: Option<Name>,
    /// The TPM's identity from its verified EK certificate, for deny rules.
    pub device: Option<TpmDevice>,
}

/// A quote that passed every check. Everything here is authenticated by the AK's signature.
#[derive(Clone, Debug)]
pub struct VerifiedQuote {
    pub ak: TpmtPublic,
    pub ak_name: Name,
    pub attest: Attest,
    /// PCR values covered by the quote's `pcrDigest`.
    pub pcrs: PcrBanks,
    /// Whether `qualifiedSigner` was checked against a known parent ([`AkTrust::parent`]).
    pub parent_checked: bool,
    /// Whether the AK was matched against an enrolled Name ([`AkTrust::name`]).
    pub enrolled_name_checked: bool,
}

/// Checks the AK's attributes and strength (checklist item 1 minus enrollment).
pub fn check_ak(ak: &TpmtPublic) -> Result<(), QuoteError> {
    let a = ak.attributes;
    if !a.restricted() {
        return Err(QuoteError::AkNotRestricted);
    }
    if !a.sign() {
        return Err(QuoteError::AkNotSigning);
    }
    if a.decrypt() {
        return Err(QuoteError::AkCanDecrypt);
    }
    if !a.fixed_tpm() {
        return Err(QuoteError::AkNotFixedTpm);
    }
    if !a.fixed_parent() {
        return Err(QuoteError::AkNotFixedParent);
    }
    if !a.sensitive_data_origin() {
        return Err(QuoteError::AkNotSensitiveDataOrigin);
    }
    if ak.name_alg == HashAlg::Sha1 {
        return Err(QuoteError::AkWeakNameAlg(ak.name_alg));
    }
    match &ak.key {
        PublicKey::Rsa {
            key_bits, modulus, ..
        } => {
            if *key_bits < 2048 {
                return Err(QuoteError::AkWeakKey(format!(
                    "RSA-{key_bits} (RSA-2048 or larger required)"
                )));
            }
            if modulus.len() != usize::from(key_bits / 8) {
                return Err(QuoteError::AkWeakKey(
                    "RSA modulus has the wrong length".into(),
                ));
            }
        }
        PublicKey::Ecc { curve, .. } => {
            if *curve != EccCurve::NIST_P256 && *curve != EccCurve::NIST_P384 {
                return Err(QuoteError::AkWeakKey(format!(
                    "ECC curve 0x{:04x} (NIST P-256 or P-384 required)",
                    curve.0
                )));
            }
        }
    }
    Ok(())
}

fn scheme_text(s: &Scheme) -> String {
    match s {
        Scheme::Null => "any".into(),
        Scheme::RsaSsa(h) => format!("rsassa-{h}"),
        Scheme::RsaPss(h) => format!("rsapss-{h}"),
        Scheme::Ecdsa(h) => format!("ecdsa-{h}"),
        other => format!("{other:?}"),
    }
}

fn signature_text(s: &Signature) -> String {
    match s {
        Signature::RsaSsa { hash, .. } => format!("rsassa-{hash}"),
        Signature::RsaPss { hash, .. } => format!("rsapss-{hash}"),
        Signature::Ecdsa { hash, .. } => format!("ecdsa-{hash}"),
    }
}

/// Checks that the signature's scheme is one the AK allows (its own scheme when it has one;
/// otherwise any signature scheme of its key type) and its hash one the policy accepts.
pub fn check_scheme(ak: &TpmtPublic, sig: &Signature, allow_sha1: bool) -> Result<(), QuoteError> {
    let (scheme, rsa) = match &ak.key {
        PublicKey::Rsa { scheme, .. } => (scheme, true),
        PublicKey::Ecc { scheme, .. } => (scheme, false),
    };
    let fits = match (scheme, sig) {
        (Scheme::Null, Signature::RsaSsa { .. } | Signature::RsaPss { .. }) => rsa,
        (Scheme::Null, Signature::Ecdsa { .. }) => !rsa,
        (Scheme::RsaSsa(h), Signature::RsaSsa { hash, .. }) => h == hash,
        (Scheme::RsaPss(h), Signature::RsaPss { hash, .. }) => h == hash,
        (Scheme::Ecdsa(h), Signature::Ecdsa { hash, .. }) => h == hash,
        _ => false,
    };
    if !fits {
        return Err(QuoteError::SchemeMismatch {
            expected: scheme_text(scheme),
            got: signature_text(sig),
        });
    }
    if sig.hash() == HashAlg::Sha1 && !allow_sha1 {
        return Err(QuoteError::Sha1NotAllowed);
    }
    Ok(())
}

fn left_pad(v: &[u8], size: usize) -> Option<Vec<u8>> {
    let v = &v[v.iter().take_while(|b| **b == 0).count()..];
    if v.len() > size {
        return None;
    }
    let mut out = vec![0u8; size - v.len()];
    out.extend_from_slice(v);
    Some(out)
}

/// Verifies `sig` over `message` with the public key of `key`. Checks nothing else (no
/// attributes, no scheme policy): on its own this is what naive verifiers do.
///
/// RSASSA-PSS: TPMs use a salt as long as the digest (older) or the longest the key allows
/// (newer, FIPS 186-4); both are accepted.
pub fn verify_signature(
    key: &TpmtPublic,
    message: &[u8],
    sig: &Signature,
) -> Result<(), QuoteError> {
    let hash = sig.hash();
    let digest = hash.digest(message);
    match (&key.key, sig) {
        (
            PublicKey::Rsa {
                exponent, modulus, ..
            },
            Signature::RsaSsa { sig: s, .. },
        ) => {
            let pk = rsa_key(*exponent, modulus)?;
            let scheme = match hash {
                HashAlg::Sha1 => rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                HashAlg::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                HashAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                HashAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            };
            pk.verify(scheme, &digest, s)
                .map_err(|_| QuoteError::BadSignature)
        }
        (
            PublicKey::Rsa {
                exponent, modulus, ..
            },
            Signature::RsaPss { sig: s, .. },
        ) => {
            let pk = rsa_key(*exponent, modulus)?;
            let em_len = (modulus.len() * 8 - 1).div_ceil(8);
            let max_salt = em_len.saturating_sub(hash.size() + 2);
            let try_salt = |salt: usize| {
                let scheme = match hash {
                    HashAlg::Sha1 => rsa::Pss::new_with_salt::<sha1::Sha1>(salt),
                    HashAlg::Sha256 => rsa::Pss::new_with_salt::<sha2::Sha256>(salt),
                    HashAlg::Sha384 => rsa::Pss::new_with_salt::<sha2::Sha384>(salt),
                    HashAlg::Sha512 => rsa::Pss::new_with_salt::<sha2::Sha512>(salt),
                };
                pk.verify(scheme, &digest, s).is_ok()
            };
            if try_salt(hash.size()) || try_salt(max_salt) {
                Ok(())
            } else {
                Err(QuoteError::BadSignature)
            }
        }
        (PublicKey::Ecc { curve, x, y, .. }, Signature::Ecdsa { r, s, .. }) => {
            let size = curve
                .field_size()
                .filter(|_| *curve != EccCurve::NIST_P521)
                .ok_or_else(|| {
                    QuoteError::AkWeakKey(format!("ECC curve 0x{:04x} is not supported", curve.0))
                })?;
            let coords = (left_pad(x, size), left_pad(y, size));
            let (Some(x), Some(y)) = coords else {
                return Err(QuoteError::AkWeakKey(
                    "ECC point coordinates too long".into(),
                ));
            };
            let (Some(r), Some(s)) = (left_pad(r, size), left_pad(s, size)) else {
                return Err(QuoteError::BadSignature);
            };
            let mut point = vec![0x04];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let mut rs = r;
            rs.extend_from_slice(&s);
            let ok = if *curve == EccCurve::NIST_P256 {
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| QuoteError::AkWeakKey("ECC point is not on P-256".into()))?;
                let sig = p256::ecdsa::Signature::from_slice(&rs)
                    .map_err(|_| QuoteError::BadSignature)?;
                vk.verify_prehash(&digest, &sig).is_ok()
            } else {
                let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| QuoteError::AkWeakKey("ECC point is not on P-384".into()))?;
                let sig = p384::ecdsa::Signature::from_slice(&rs)
                    .map_err(|_| QuoteError::BadSignature)?;
                vk.verify_prehash(&digest, &sig).is_ok()
            };
            if ok {
                Ok(())
            } else {
                Err(QuoteError::BadSignature)
            }
        }
        _ => Err(QuoteError::SchemeMismatch {
            expected: match key.key {
                PublicKey::Rsa { .. } => "an RSA signature".into(),
                PublicKey::Ecc { .. } => "an ECDSA signature".into(),
            },
            got: signature_text(sig),
        }),
    }
}

fn rsa_key(exponent: u32, modulus: &[u8]) -> Result<rsa::RsaPublicKey, QuoteError> {
    let e = if exponent == 0 { 65_537 } else { exponent };
    rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(modulus), rsa::BigUint::from(e))
        .map_err(|e| QuoteError::AkWeakKey(format!("RSA key: {e}")))
}

fn check_boot_measured(pcrs: &PcrBanks) -> Result<(), QuoteError> {
    for (hash, bank) in &pcrs.0 {
        let boot: Vec<&Vec<u8>> = (0u8..8).filter_map(|i| bank.get(&i)).collect();
        if !boot.is_empty() && boot.iter().all(|v| v.iter().all(|b| *b == 0)) {
            return Err(QuoteError::UnmeasuredBoot(*hash));
        }
    }
    Ok(())
}

fn check_deny(policy: &QuotePolicy, ctx: &DenyContext<'_>) -> Result<(), QuoteError> {
    let key_type = match ctx.ak.key {
        PublicKey::Rsa { .. } => "rsa",
        PublicKey::Ecc { .. } => "ecc",
    };
    for rule in &policy.deny_list {
        let field = |want: &Option<String>, have: Option<&str>| match (want, have) {
            (None, _) => true,
            (Some(w), Some(h)) => w == h,
            (Some(_), None) => false,
        };
        let matches = field(
            &rule.manufacturer,
            ctx.device.map(|d| d.manufacturer.as_str()),
        ) && field(&rule.model, ctx.device.map(|d| d.model.as_str()))
            && field(&rule.key_type, Some(key_type))
            && rule
                .firmware
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&ctx.firmware_version));
        if matches {
            return Err(QuoteError::Denied(rule.reason.clone()));
        }
    }
    if let Some(hook) = &policy.deny_hook {
        if let Some(reason) = hook(ctx) {
            return Err(QuoteError::Denied(reason));
        }
    }
    Ok(())
}

/// Verifies a quote against a policy, in checklist order:
///
/// 1. the AK's attributes and strength ([`check_ak`]) and, when known, its enrolled Name;
/// 2. the signature's scheme and hash ([`check_scheme`]), then the signature over the exact
///    attest bytes ([`verify_signature`]);
/// 3. the attest structure (magic, type quote, strict parse) and `qualifiedSigner` under the
///    AK's known parent;
/// 4. `extraData` = `expected_extra_data` (which the caller recomputes, never reads from the
///    evidence);
/// 5. `clockInfo.safe`;
/// 6. the PCR selection is exactly the policy's;
/// 7. `pcrDigest` = hash of the claimed PCR values (only then are they authentic);
/// 8. boot PCRs not all zero (unless `allow_unmeasured_boot`);
/// 9. golden PCR values;
/// 10. the deny-list.
///
/// Clock ordering across quotes needs history: [`ClockWatermark`]. Everything in `bundle` is
/// untrusted input; `trust`, `policy` and `expected_extra_data` are trusted.
pub fn verify_quote(
    bundle: &QuoteBundle,
    expected_extra_data: &[u8],
    trust: &AkTrust,
    policy: &QuotePolicy,
) -> Result<VerifiedQuote, QuoteError> {
    let ak = TpmtPublic::parse(&bundle.ak_public).map_err(QuoteError::AkPublic)?;
    check_ak(&ak)?;
    let ak_name = ak.name();
    if let Some(expected) = &trust.name {
        if *expected != ak_name {
            return Err(QuoteError::AkNotEnrolled {
                expected: expected.clone(),
                got: ak_name,
            });
        }
    }
    let sig = Signature::parse(&bundle.signature).map_err(QuoteError::SignatureFormat)?;
    check_scheme(&ak, &sig, policy.allow_sha1)?;
    verify_signature(&ak, &bundle.attest, &sig)?;
    let attest = Attest::parse(&bundle.attest).map_err(QuoteError::Attest)?;
    if let Some(parent) = &trust.parent {
        let expected = ak.qualified_name(parent);
        if attest.qualified_signer != expected {
            return Err(QuoteError::QualifiedSignerMismatch {
                expected,
                got: attest.qualified_signer,
            });
        }
    }
    if attest.extra_data != expected_extra_data {
        return Err(QuoteError::ExtraDataMismatch {
            expected: hex::encode(expected_extra_data),
            got: hex::encode(&attest.extra_data),
        });
    }
    if !attest.clock_info.safe {
        return Err(QuoteError::ClockNotSafe);
    }
    if !attest.quote.pcr_select.same_pcrs(&policy.pcr_selection) {
        return Err(QuoteError::PcrSelectionMismatch {
            expected: policy.pcr_selection.to_string(),
            got: attest.quote.pcr_select.to_string(),
        });
    }
    let digest = bundle
        .pcrs
        .digest_for(&attest.quote.pcr_select, sig.hash())
        .map_err(QuoteError::PcrValues)?;
    if digest != attest.quote.pcr_digest {
        return Err(QuoteError::PcrDigestMismatch);
    }
    if !policy.allow_unmeasured_boot {
        check_boot_measured(&bundle.pcrs)?;
    }
    for ((hash, index), allowed) in &policy.pcr_allow_list.0 {
        let got = bundle
            .pcrs
            .get(*hash, *index)
            .ok_or(QuoteError::PcrNotQuoted {
                hash: *hash,
                index: *index,
            })?;
        if !allowed.iter().any(|a| a == got) {
            return Err(QuoteError::PcrNotAllowed {
                hash: *hash,
                index: *index,
                got: hex::encode(got),
            });
        }
    }
    check_deny(
        policy,
        &DenyContext {
            firmware_version: attest.firmware_version,
            device: trust.device.as_ref(),
            ak: &ak,
        },
    )?;
    Ok(VerifiedQuote {
        ak,
        ak_name,
        pcrs: bundle.pcrs.clone(),
        attest,
        parent_checked: trust.parent.is_some(),
        enrolled_name_checked: trust.name.is_some(),
    })
}

/// The TPM clock went backwards between two quotes of one AK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TPM clock went backwards at quote {position}: (resetCount, restartCount, clock) {previous:?} then {next:?}")]
pub struct ClockRegression {
    /// Index of the offending quote in the sequence (0-based).
    pub position: usize,
    pub previous: (u32, u32, u64),
    pub next: (u32, u32, u64),
}

/// Tracks the latest (resetCount, restartCount, clock) seen from one AK: TPM-signed ordering
/// that never goes backwards on a genuine TPM. Equal values are accepted (the same quote seen
/// twice). Only meaningful for AKs in the endorsement hierarchy (otherwise the counters are
/// obfuscated); a `TPM2_Clear` resets them and requires re-enrollment.
#[derive(Clone, Debug, Default)]
pub struct ClockWatermark {
    last: Option<(u32, u32, u64)>,
    seen: usize,
}

impl ClockWatermark {
    /// Records the next quote's clock in sequence order.
    pub fn observe(&mut self, clock: &ClockInfo) -> Result<(), ClockRegression> {
        let next = clock.key();
        if let Some(previous) = self.last {
            if next < previous {
                return Err(ClockRegression {
                    position: self.seen,
                    previous,
                    next,
                });
            }
        }
        self.last = Some(next);
        self.seen += 1;
        Ok(())
    }

    /// The latest value seen.
    pub fn last(&self) -> Option<(u32, u32, u64)> {
        self.last
    }
}

/// Checks a whole sequence of one AK's quotes, oldest first.
pub fn check_clock_sequence<'a>(
    clocks: impl IntoIterator<Item = &'a ClockInfo>,
) -> Result<(), ClockRegression> {
    let mut w = ClockWatermark::default();
    clocks.into_iter().try_for_each(|c| w.observe(c))
}
