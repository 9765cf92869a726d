//! Shared helpers of the provenix fuzz targets (see `docs/fuzzing.md`).
//!
//! Keys are generated once per fuzzing process and their secrets never leave it, so no input
//! the fuzzer can produce carries a valid signature by a *verifier-only* key: "garbage never
//! verifies" is an invariant the targets can assert. Where a target needs the success path it
//! signs the input itself with the matching signer.

use std::sync::OnceLock;

use provenix_core::checkpoint::{LogSigner, LogVerifier};
use provenix_core::nix::{NixPublicKey, NixSecretKey};
use provenix_core::witness::{CosignerKey, CosignerVerifier};

/// Name of the log keys below (also the checkpoint origin they accept).
pub const LOG_NAME: &str = "fuzz.example/log";

struct Keys {
    log: LogSigner,
    log_verifier: LogVerifier,
    stranger: LogVerifier,
    builder: NixPublicKey,
    witness: CosignerVerifier,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let log = LogSigner::generate(LOG_NAME).expect("log key");
        let log_verifier = log.verifier_key().parse().expect("log verifier");
        let stranger = LogSigner::generate(LOG_NAME)
            .expect("log key")
            .verifier_key()
            .parse()
            .expect("log verifier");
        let builder = NixSecretKey::generate("fuzz-builder-1")
            .expect("builder key")
            .public();
        let witness = CosignerKey::generate("fuzz.example/witness")
            .expect("witness key")
            .verifier_key()
            .parse()
            .expect("witness verifier");
        Keys {
            log,
            log_verifier,
            stranger,
            builder,
            witness,
        }
    })
}

/// A log signer whose verifier is [`log_verifier`].
pub fn log_signer() -> &'static LogSigner {
    &keys().log
}

/// The verifier of [`log_signer`].
pub fn log_verifier() -> &'static LogVerifier {
    &keys().log_verifier
}

/// A log verifier (same name as [`log_verifier`]) whose secret key was dropped at startup.
pub fn stranger_log() -> &'static LogVerifier {
    &keys().stranger
}

/// A builder public key whose secret key was dropped at startup.
pub fn stranger_builder() -> &'static NixPublicKey {
    &keys().builder
}

/// A witness verifier whose secret key was dropped at startup.
pub fn stranger_witness() -> &'static CosignerVerifier {
    &keys().witness
}

/// Splits fuzz input at the first occurrence of `sep` (for targets taking two inputs).
pub fn split2<'a>(data: &'a [u8], sep: &[u8]) -> (&'a [u8], &'a [u8]) {
    match data.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (&data[..i], &data[i + sep.len()..]),
        None => (data, &[]),
    }
}
