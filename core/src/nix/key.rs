use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// Why a key string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key must be NAME:BASE64 (Nix binary-cache key format)")]
    Format,
    #[error("key name must be 1-128 characters of [A-Za-z0-9._-]")]
    Name,
    #[error("key material must be base64 of {0} bytes")]
    Length(usize),
    #[error("secret key's public half does not match its seed")]
    Mismatch,
    #[error("public key is not a valid Ed25519 point")]
    Point,
}

/// Whether `name` is usable as a key name everywhere provenix puts one: Nix key files, DSSE
/// `keyid`, signed-note signature lines and threshold expressions.
pub fn is_valid_key_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn split(s: &str) -> Result<(&str, Vec<u8>), KeyError> {
    let (name, b64) = s.trim().split_once(':').ok_or(KeyError::Format)?;
    if !is_valid_key_name(name) {
        return Err(KeyError::Name);
    }
    let bytes = STANDARD.decode(b64).map_err(|_| KeyError::Format)?;
    Ok((name, bytes))
}

/// An Ed25519 public key in Nix's format `NAME:base64(32 bytes)`.
#[derive(Clone, PartialEq, Eq)]
pub struct NixPublicKey {
    name: String,
    key: VerifyingKey,
}

impl NixPublicKey {
    /// The key name (the builder name, the DSSE `keyid`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Verifies a 64-byte Ed25519 signature over `msg` (strict: rejects malleable encodings).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

impl FromStr for NixPublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, bytes) = split(s)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Length(32))?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::Point)?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }
}

impl fmt::Display for NixPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for NixPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NixPublicKey({self})")
    }
}

/// An Ed25519 secret key in Nix's format `NAME:base64(32-byte seed ‖ 32-byte public)`, as
/// `nix-store --generate-binary-cache-key` writes it. `Debug` never shows the secret.
#[derive(Clone)]
pub struct NixSecretKey {
    name: String,
    key: SigningKey,
}

impl NixSecretKey {
    /// Generates a new key from the operating system's randomness.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::Name);
        }
        let key = SigningKey::generate(&mut rand_core::OsRng);
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// From a 32-byte seed (deterministic; for tests and benchmarks).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::Name);
        }
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn public(&self) -> NixPublicKey {
        NixPublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `msg`, returning the 64-byte signature.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// The secret in Nix's file format (no trailing newline). Handle with care.
    pub fn to_secret_string(&self) -> String {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(self.key.as_bytes());
        bytes[32..].copy_from_slice(self.key.verifying_key().as_bytes());
        format!("{}:{}", self.name, STANDARD.encode(bytes))
    }
}

impl FromStr for NixSecretKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, bytes) = split(s)?;
        let arr: [u8; 64] = bytes.try_into().map_err(|_| KeyError::Length(64))?;
        let key = SigningKey::from_keypair_bytes(&arr).map_err(|_| KeyError::Mismatch)?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }
}

impl fmt::Debug for NixSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NixSecretKey({}:<redacted>)", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated on this machine by `nix-store --generate-binary-cache-key test-1 sec pub`.
    const SEC: &str = "test-1:QHePv2cp9amBfUeqlmgzN9vj1htuCiszqT/eoHAOz5SraB7Ap6R3j47MT+0U4mp7ZCkrAhJIBvYneEyO5GA42w==";
    const PUB: &str = "test-1:q2gewKekd4+OzE/tFOJqe2QpKwISSAb2J3hMjuRgONs=";

    #[test]
    fn secret_and_public_round_trip() {
        let sk: NixSecretKey = SEC.parse().unwrap();
        assert_eq!(sk.to_secret_string(), SEC);
        let pk: NixPublicKey = PUB.parse().unwrap();
        assert_eq!(pk.to_string(), PUB);
        assert_eq!(sk.public(), pk);
        let sig = sk.sign(b"hello");
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellO", &sig));
        assert!(!pk.verify(b"hello", &sig[..63]));
        assert!(!format!("{sk:?}").contains(&SEC[7..15]));
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(
            "nocolon".parse::<NixPublicKey>().unwrap_err(),
            KeyError::Format
        );
        assert_eq!(
            "a b:AAAA".parse::<NixPublicKey>().unwrap_err(),
            KeyError::Name
        );
        assert_eq!(
            "a:AAAA".parse::<NixPublicKey>().unwrap_err(),
            KeyError::Length(32)
        );
        assert_eq!(
            "a:!!".parse::<NixPublicKey>().unwrap_err(),
            KeyError::Format
        );
        assert_eq!(
            PUB.parse::<NixSecretKey>().unwrap_err(),
            KeyError::Length(64)
        );
    }
}
