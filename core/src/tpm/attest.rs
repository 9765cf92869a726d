//! `TPMS_ATTEST` of a quote (`TPM_ST_ATTEST_QUOTE`), and `TPMT_SIGNATURE`.

use super::alg::*;
use super::pcr::PcrSelection;
use super::public::Name;
use super::wire::{ParseError, Put, Reader};

/// `TPM_GENERATED_VALUE`: every structure a TPM signs starts with it, and a restricted key
/// refuses to sign external data that does.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM2B_DATA` limit (`sizeof(TPMT_HA)`).
const MAX_EXTRA_DATA: usize = 2 + MAX_DIGEST;

/// `TPMS_CLOCK_INFO`. When the signing key is not in the endorsement hierarchy the TPM
/// obfuscates `reset_count` and `restart_count` (and `firmwareVersion`) per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was made (or last cleared).
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    /// `clock` has not gone backwards since it was last reported (no unorderly shutdown lost it).
    pub safe: bool,
}

impl ClockInfo {
    /// The ordering key: (resetCount, restartCount, clock).
    pub fn key(&self) -> (u32, u32, u64) {
        (self.reset_count, self.restart_count, self.clock)
    }
}

/// `TPMS_QUOTE_INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteInfo {
    pub pcr_select: PcrSelection,
    /// Hash (with the signing scheme's hash) of the selected PCR values in selection order.
    pub pcr_digest: Vec<u8>,
}

/// A `TPMS_ATTEST` of type quote. Authenticated only once its signature verifies under a key
/// the verifier trusts ([`super::verify_quote`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attest {
    /// Qualified name of the signing key.
    pub qualified_signer: Name,
    /// The caller's qualifying data (our nonce: the entry's trace digest).
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    /// Vendor-defined firmware version (obfuscated outside the endorsement hierarchy).
    pub firmware_version: u64,
    pub quote: QuoteInfo,
}

impl Attest {
    /// Parses a complete `TPMS_ATTEST`: magic `TPM_GENERATED_VALUE`, type quote, no trailing bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED_VALUE {
            return Err(r.invalid_at(
                0,
                "magic",
                format!("0x{magic:08x} is not TPM_GENERATED_VALUE"),
            ));
        }
        let ty = r.u16("type")?;
        if ty != TPM_ST_ATTEST_QUOTE {
            return Err(r.invalid_at(4, "type", format!("0x{ty:04x} is not TPM_ST_ATTEST_QUOTE")));
        }
        let qualified_signer = Name::read(&mut r, "qualifiedSigner")?;
        if qualified_signer.0.len() == 4 {
            return Err(r.invalid_at(6, "qualifiedSigner", "a handle, not a key's qualified name"));
        }
        let extra_data = r.tpm2b(MAX_EXTRA_DATA, "extraData")?.to_vec();
        let clock = r.u64("clockInfo.clock")?;
        let reset_count = r.u32("clockInfo.resetCount")?;
        let restart_count = r.u32("clockInfo.restartCount")?;
        let at = r.offset();
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            v => {
                return Err(r.invalid_at(at, "clockInfo.safe", format!("{v} is not a TPMI_YES_NO")))
            }
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let pcr_select = PcrSelection::read(&mut r)?;
        let pcr_digest = r.tpm2b(MAX_DIGEST, "pcrDigest")?.to_vec();
        r.finish()?;
        Ok(Self {
            qualified_signer,
            extra_data,
            clock_info: ClockInfo {
                clock,
                reset_count,
                restart_count,
                safe,
            },
            firmware_version,
            quote: QuoteInfo {
                pcr_select,
                pcr_digest,
            },
        })
    }

    /// The marshalled `TPMS_ATTEST`; byte-identical to what [`Attest::parse`] accepted.
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u32(TPM_GENERATED_VALUE);
        out.put_u16(TPM_ST_ATTEST_QUOTE);
        out.put_tpm2b(&self.qualified_signer.0);
        out.put_tpm2b(&self.extra_data);
        out.put_u64(self.clock_info.clock);
        out.put_u32(self.clock_info.reset_count);
        out.put_u32(self.clock_info.restart_count);
        out.put_u8(u8::from(self.clock_info.safe));
        out.put_u64(self.firmware_version);
        self.quote.pcr_select.write(&mut out);
        out.put_tpm2b(&self.quote.pcr_digest);
        out
    }
}

/// A `TPMT_SIGNATURE` (the kinds a quote verifier accepts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa { hash: HashAlg, sig: Vec<u8> },
    /// RSASSA-PSS.
    RsaPss { hash: HashAlg, sig: Vec<u8> },
    /// ECDSA: `r` and `s` big-endian, as the TPM gives them (possibly without leading zeros).
    Ecdsa {
        hash: HashAlg,
        r: Vec<u8>,
        s: Vec<u8>,
    },
}

impl Signature {
    /// Parses a complete `TPMT_SIGNATURE`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE");
        let alg = r.u16("sigAlg")?;
        let s = match alg {
            TPM_ALG_RSASSA => Signature::RsaSsa {
                hash: read_hash(&mut r, "hash")?,
                sig: r.tpm2b(512, "sig")?.to_vec(),
            },
            TPM_ALG_RSAPSS => Signature::RsaPss {
                hash: read_hash(&mut r, "hash")?,
                sig: r.tpm2b(512, "sig")?.to_vec(),
            },
            TPM_ALG_ECDSA => Signature::Ecdsa {
                hash: read_hash(&mut r, "hash")?,
                r: r.tpm2b(66, "signatureR")?.to_vec(),
                s: r.tpm2b(66, "signatureS")?.to_vec(),
            },
            other => {
                return Err(r.invalid_at(
                    0,
                    "sigAlg",
                    format!(
                        "unsupported signature algorithm 0x{other:04x} (RSASSA, RSAPSS, ECDSA)"
                    ),
                ))
            }
        };
        r.finish()?;
        Ok(s)
    }

    /// The marshalled `TPMT_SIGNATURE`.
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Signature::RsaSsa { hash, sig } => {
                out.put_u16(TPM_ALG_RSASSA);
                out.put_u16(hash.id());
                out.put_tpm2b(sig);
            }
            Signature::RsaPss { hash, sig } => {
                out.put_u16(TPM_ALG_RSAPSS);
                out.put_u16(hash.id());
                out.put_tpm2b(sig);
            }
            Signature::Ecdsa { hash, r, s } => {
                out.put_u16(TPM_ALG_ECDSA);
                out.put_u16(hash.id());
                out.put_tpm2b(r);
                out.put_tpm2b(s);
            }
        }
        out
    }

    /// The signature's hash algorithm.
    pub fn hash(&self) -> HashAlg {
        match self {
            Signature::RsaSsa { hash, .. }
            | Signature::RsaPss { hash, .. }
            | Signature::Ecdsa { hash, .. } => *hash,
        }
    }
}
