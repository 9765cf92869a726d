//! Nix's vocabulary as small typed values: store paths, NAR hashes, binary-cache keys, narinfo.
//!
//! Every type here parses and formats (`Display`) byte-exactly in the form Nix itself uses.

mod key;
mod nar_hash;
mod narinfo;
mod store_path;

pub use key::{is_valid_key_name, KeyError, NixPublicKey, NixSecretKey};
pub use nar_hash::{NarHash, NarHashError};
pub use narinfo::{
    fingerprint, NarInfo, NarInfoError, NarInfoSignature, DEFAULT_COMPRESSION, MAX_NARINFO_BYTES,
    MAX_SIGNATURES,
};
pub use store_path::{StorePath, StorePathError, StorePathHash, STORE_DIR};

/// nixbase32 encoding (Nix's own alphabet and bit order).
pub mod base32 {
    /// The 32 characters Nix uses, in value order (no `e o u t`).
    pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

    /// Encodes bytes as nixbase32.
    pub fn encode(bytes: &[u8]) -> String {
        nix_base32::to_nix_base32(bytes)
    }

    /// Decodes nixbase32; `None` on a character outside the alphabet or a non-canonical length.
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        if !s.bytes().all(|b| ALPHABET.contains(&b)) {
            return None;
        }
        let out = nix_base32::from_nix_base32(s)?;
        // Reject strings that do not round-trip (padding bits set, wrong length).
        (encode(&out) == s).then_some(out)
    }

    /// Length of the nixbase32 encoding of `n` bytes.
    pub const fn encoded_len(n: usize) -> usize {
        (n * 8).div_ceil(5)
    }
}
