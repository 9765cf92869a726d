use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::base32;

/// Why a string is not a NAR hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarHashError {
    #[error("NAR hash must be SHA-256: `sha256:<nix32|hex>`, `sha256-<base64>` or 64 lowercase hex characters")]
    Format,
}

/// A SHA-256 NAR hash. Nix shows it three ways; provenix entries carry lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NarHash([u8; 32]);

impl NarHash {
    /// From the raw digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as in-toto `digest.sha256` wants it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 lowercase hex characters.
    pub fn from_hex(s: &str) -> Result<Self, NarHashError> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(NarHashError::Format);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| NarHashError::Format)?;
        Ok(Self(out))
    }

    /// `sha256:<nix32>`, the form narinfo `NarHash:` and signature fingerprints use.
    pub fn to_nix32_prefixed(&self) -> String {
        format!("sha256:{}", base32::encode(&self.0))
    }

    /// `sha256-<base64>`, the SRI form `nix path-info --json` prints.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", STANDARD.encode(self.0))
    }
}

impl FromStr for NarHash {
    type Err = NarHashError;
    /// Accepts every form Nix prints: `sha256:<nix32>`, `sha256:<hex>`, `sha256-<base64>` (SRI),
    /// and bare lowercase hex.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("sha256:") {
            if rest.len() == base32::encoded_len(32) {
                let v = base32::decode(rest).ok_or(NarHashError::Format)?;
                return Ok(Self(v.try_into().map_err(|_| NarHashError::Format)?));
            }
            return Self::from_hex(rest);
        }
        if let Some(rest) = s.strip_prefix("sha256-") {
            let v = STANDARD.decode(rest).map_err(|_| NarHashError::Format)?;
            return Ok(Self(v.try_into().map_err(|_| NarHashError::Format)?));
        }
        Self::from_hex(s)
    }
}

impl fmt::Display for NarHash {
    /// Displays as `sha256:<nix32>` (narinfo form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32_prefixed())
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarHash({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_forms_of_a_real_hash_agree() {
        // From `nix path-info --json` on this machine, and its nix32 form from `nix hash to-base32`.
        let sri = "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=";
        let h: NarHash = sri.parse().unwrap();
        assert_eq!(h.to_sri(), sri);
        let hex = h.to_hex();
        assert_eq!(hex.parse::<NarHash>().unwrap(), h);
        assert_eq!(format!("sha256:{hex}").parse::<NarHash>().unwrap(), h);
        let nix32 = h.to_nix32_prefixed();
        // `nix hash to-base32` on this machine:
        assert_eq!(
            nix32,
            "sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h"
        );
        assert_eq!(nix32.parse::<NarHash>().unwrap(), h);
    }

    #[test]
    fn rejects_other_forms() {
        for s in [
            "",
            "sha256:",
            "md5:abc",
            "sha512-AAAA",
            "sha256-AAAA",
            &"A".repeat(64),
            &"0".repeat(63),
        ] {
            assert!(s.parse::<NarHash>().is_err(), "{s}");
        }
    }
}
