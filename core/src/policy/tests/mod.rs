use super::*;
use crate::nix::{NarHash, NixPublicKey, NixSecretKey, StorePath};
use sha2::{Digest, Sha256};

mod config;
mod decision;
mod reference;

fn seed(name: &str) -> [u8; 32] {
    Sha256::digest(name.as_bytes()).into()
}

/// A deterministic Nix public key named `name`.
pub(super) fn builder_key(name: &str) -> NixPublicKey {
    NixSecretKey::from_seed(name, seed(name)).unwrap().public()
}

/// A deterministic C2SP verifier key named `name`.
pub(super) fn log_key(name: &str) -> String {
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed(name));
    signed_note::new_ed25519_verifier_key(name, &sk.verifying_key())
}

/// A deterministic C2SP cosignature (witness) verifier key named `name`.
pub(super) fn witness_key(name: &str) -> String {
    crate::witness::CosignerKey::from_seed(name, seed(name))
        .unwrap()
        .verifier_key()
}

pub(super) fn path(name: &str) -> StorePath {
    let h = crate::nix::base32::encode(&Sha256::digest(name.as_bytes())[..20]);
    format!("/nix/store/{h}-{name}").parse().unwrap()
}

pub(super) fn hash(tag: u8) -> NarHash {
    NarHash::from_bytes([tag; 32])
}
