//! TPM 2.0 remote attestation, verifier side: pure Rust, no TPM library.
//!
//! - Strict parsers (and byte-exact marshallers) for the TPM structures a quote involves:
//!   [`Attest`] (`TPMS_ATTEST`), [`TpmtPublic`], [`Signature`] (`TPMT_SIGNATURE`),
//!   [`PcrSelection`] (`TPML_PCR_SELECTION`); Names and qualified names ([`Name`]).
//! - [`verify_quote`]: the checklist of `TPM-NOTES.md` (AK attributes, signature scheme and
//!   hash, structure, extraData, exact PCR selection, pcrDigest, unmeasured boot, golden PCR
//!   values, clock safety, deny-list), each failure its own [`QuoteError`] variant;
//!   [`ClockWatermark`] for the TPM clock's ordering across quotes.
//! - [`verify_ek_certificate`]: EK certificate chain to trusted roots, TCG EKU, certified key =
//!   EK public area.
//! - [`EventLog`]: TCG firmware event logs (legacy SHA-1 and crypto-agile), replay to PCRs.
//! - [`make_credential`]: `TPM2_MakeCredential` for an RSA EK (the registrar's challenge at
//!   enrollment).
//! - [`QuoteBundle`]: the `tpm2-quote` byproduct of an entry; [`verify_entry_quote`].
//!
//! Trust: everything that comes with an entry (bundle, AK public area, event log, EK
//! certificate and intermediates) is untrusted input; policies, root CAs, enrolled AK Names and
//! the expected extraData are the verifier's own, trusted configuration.

mod alg;
mod attest;
mod bundle;
mod credential;
mod ek;
mod eventlog;
mod pcr;
mod public;
mod quote;
mod wire;

pub use alg::{HashAlg, UnknownHashAlg, MAX_DIGEST};
pub use attest::{
    Attest, ClockInfo, QuoteInfo, Signature, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE,
};
pub use bundle::{
    verify_entry_quote, BundleError, EntryQuoteError, QuoteBundle, TPM_QUOTE_MEDIA_TYPE,
    TPM_QUOTE_VERSION,
};
pub use credential::{kdfa, make_credential, CredentialError, MadeCredential};
pub use ek::{
    check_ek_certificate_key, parse_ek_certificate, pem_certificates, verify_ek_certificate,
    EkError, EkRoots, TpmDevice, VerifiedEk, TCG_KP_EK_CERTIFICATE,
};
pub use eventlog::{Event, EventLog, EventLogError, EventLogFormat, MAX_EVENTS, MAX_EVENT_DATA};
pub use pcr::{PcrBankSelection, PcrBanks, PcrSelection, PcrValuesError, MAX_PCR_INDEX};
pub use public::{
    EccCurve, KdfScheme, Name, ObjectAttributes, PublicKey, Scheme, SymDef, TpmtPublic,
    TPM_RH_ENDORSEMENT, TPM_RH_NULL, TPM_RH_OWNER, TPM_RH_PLATFORM,
};
pub use quote::{
    check_ak, check_clock_sequence, check_scheme, verify_quote, verify_signature, AkTrust,
    ClockRegression, ClockWatermark, DenyContext, DenyHook, DenyRule, PcrAllowList, PcrPolicyError,
    QuoteError, QuotePolicy, VerifiedQuote,
};
pub use wire::ParseError;

#[cfg(test)]
mod tests;
