//! TPM algorithm identifiers (`TPM_ALG_ID`, TPM 2.0 Part 2 §6.3) and the hash algorithms a
//! verifier computes with.

use std::fmt;
use std::str::FromStr;

use sha2::Digest;

pub(crate) const TPM_ALG_RSA: u16 = 0x0001;
pub(crate) const TPM_ALG_SHA1: u16 = 0x0004;
pub(crate) const TPM_ALG_AES: u16 = 0x0006;
pub(crate) const TPM_ALG_MGF1: u16 = 0x0007;
pub(crate) const TPM_ALG_SHA256: u16 = 0x000B;
pub(crate) const TPM_ALG_SHA384: u16 = 0x000C;
pub(crate) const TPM_ALG_SHA512: u16 = 0x000D;
pub(crate) const TPM_ALG_NULL: u16 = 0x0010;
pub(crate) const TPM_ALG_SM4: u16 = 0x0013;
pub(crate) const TPM_ALG_RSASSA: u16 = 0x0014;
pub(crate) const TPM_ALG_RSAES: u16 = 0x0015;
pub(crate) const TPM_ALG_RSAPSS: u16 = 0x0016;
pub(crate) const TPM_ALG_OAEP: u16 = 0x0017;
pub(crate) const TPM_ALG_ECDSA: u16 = 0x0018;
pub(crate) const TPM_ALG_ECDH: u16 = 0x0019;
pub(crate) const TPM_ALG_ECDAA: u16 = 0x001A;
pub(crate) const TPM_ALG_SM2: u16 = 0x001B;
pub(crate) const TPM_ALG_ECSCHNORR: u16 = 0x001C;
pub(crate) const TPM_ALG_ECMQV: u16 = 0x001D;
pub(crate) const TPM_ALG_KDF1_SP800_56A: u16 = 0x0020;
pub(crate) const TPM_ALG_KDF2: u16 = 0x0021;
pub(crate) const TPM_ALG_KDF1_SP800_108: u16 = 0x0022;
pub(crate) const TPM_ALG_ECC: u16 = 0x0023;
pub(crate) const TPM_ALG_CAMELLIA: u16 = 0x0026;
pub(crate) const TPM_ALG_CTR: u16 = 0x0040;
pub(crate) const TPM_ALG_OFB: u16 = 0x0041;
pub(crate) const TPM_ALG_CBC: u16 = 0x0042;
pub(crate) const TPM_ALG_CFB: u16 = 0x0043;
pub(crate) const TPM_ALG_ECB: u16 = 0x0044;

/// Largest digest of any hash algorithm here (SHA-512).
pub const MAX_DIGEST: usize = 64;

/// A hash algorithm a TPM uses for names, PCR banks, signatures and event logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Every supported algorithm.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// The `TPM_ALG_ID`.
    pub fn id(self) -> u16 {
        match self {
            HashAlg::Sha1 => TPM_ALG_SHA1,
            HashAlg::Sha256 => TPM_ALG_SHA256,
            HashAlg::Sha384 => TPM_ALG_SHA384,
            HashAlg::Sha512 => TPM_ALG_SHA512,
        }
    }

    /// The algorithm with this `TPM_ALG_ID`, if supported.
    pub fn from_id(id: u16) -> Option<Self> {
        HashAlg::ALL.into_iter().find(|h| h.id() == id)
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The lower-case name tpm2-tools and trust policies use (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            HashAlg::Sha1 => run::<sha1::Sha1>(parts),
            HashAlg::Sha256 => run::<sha2::Sha256>(parts),
            HashAlg::Sha384 => run::<sha2::Sha384>(parts),
            HashAlg::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        self.digest_parts(&[data])
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a hash algorithm name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash algorithm {0:?} (expected sha1, sha256, sha384 or sha512)")]
pub struct UnknownHashAlg(pub String);

impl FromStr for HashAlg {
    type Err = UnknownHashAlg;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashAlg::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| UnknownHashAlg(s.to_owned()))
    }
}

/// Reads a `TPMI_ALG_HASH` that must be one of the supported algorithms (never `TPM_ALG_NULL`).
pub(crate) fn read_hash(
    r: &mut super::wire::Reader<'_>,
    field: &'static str,
) -> Result<HashAlg, super::wire::ParseError> {
    let at = r.offset();
    let id = r.u16(field)?;
    HashAlg::from_id(id)
        .ok_or_else(|| r.invalid_at(at, field, format!("unsupported hash algorithm 0x{id:04x}")))
}
