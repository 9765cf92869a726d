//! PCR selections (`TPML_PCR_SELECTION`) and PCR values per bank.

use std::collections::BTreeMap;
use std::fmt;

use super::alg::{read_hash, HashAlg};
use super::wire::{ParseError, Put, Reader};

/// Highest PCR index a selection can name (`sizeofSelect` ≤ 8 bytes).
pub const MAX_PCR_INDEX: u8 = 63;
/// Banks in one selection (`HASH_COUNT` is at most a handful; this bounds parsing).
const MAX_BANKS: u32 = 16;
/// `sizeofSelect` limit (64 PCRs; PC-Client TPMs have 24 and use 3).
const MAX_SIZE_OF_SELECT: u8 = 8;

/// One bank of a selection: a hash algorithm and a set of PCR indices (`TPMS_PCR_SELECTION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcrBankSelection {
    pub hash: HashAlg,
    /// Bytes of the bitmap on the wire (3 for 24 PCRs).
    pub size_of_select: u8,
    /// Bit `i` set = PCR `i` selected.
    pub mask: u64,
}

impl PcrBankSelection {
    /// A bank selecting `indices` with the usual 3-byte bitmap (or larger if an index needs it).
    /// Indices above [`MAX_PCR_INDEX`] are ignored.
    pub fn new(hash: HashAlg, indices: impl IntoIterator<Item = u8>) -> Self {
        let mut mask = 0u64;
        for i in indices.into_iter().filter(|i| *i <= MAX_PCR_INDEX) {
            mask |= 1u64 << i;
        }
        let bytes_needed = ((64 - mask.leading_zeros()) as u8).div_ceil(8);
        Self {
            hash,
            size_of_select: bytes_needed.max(3),
            mask,
        }
    }

    /// Selected indices, ascending (the order PCR values are hashed in).
    pub fn indices(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=MAX_PCR_INDEX).filter(|i| self.mask & (1u64 << i) != 0)
    }

    pub fn contains(&self, index: u8) -> bool {
        index <= MAX_PCR_INDEX && self.mask & (1u64 << index) != 0
    }
}

/// A `TPML_PCR_SELECTION`: banks in wire order. Parsing refuses a bank named twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcrSelection {
    pub banks: Vec<PcrBankSelection>,
}

impl PcrSelection {
    /// PCRs 0–23 of one bank: what a policy normally requires.
    pub fn full_bank(hash: HashAlg) -> Self {
        Self {
            banks: vec![PcrBankSelection::new(hash, 0..24)],
        }
    }

    /// Parses a complete `TPML_PCR_SELECTION`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes, "TPML_PCR_SELECTION");
        let s = Self::read(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let at = r.offset();
        let count = r.u32("count")?;
        if count > MAX_BANKS {
            return Err(r.invalid_at(at, "count", format!("{count} banks exceed {MAX_BANKS}")));
        }
        let mut banks: Vec<PcrBankSelection> = Vec::new();
        for _ in 0..count {
            let at = r.offset();
            let hash = read_hash(r, "pcrSelections.hash")?;
            if banks.iter().any(|b| b.hash == hash) {
                return Err(r.invalid_at(at, "pcrSelections.hash", format!("{hash} bank twice")));
            }
            let at = r.offset();
            let size_of_select = r.u8("pcrSelections.sizeofSelect")?;
            if size_of_select > MAX_SIZE_OF_SELECT {
                return Err(r.invalid_at(
                    at,
                    "pcrSelections.sizeofSelect",
                    format!("{size_of_select} exceeds {MAX_SIZE_OF_SELECT}"),
                ));
            }
            let bitmap = r.bytes(usize::from(size_of_select), "pcrSelections.pcrSelect")?;
            let mask = bitmap
                .iter()
                .enumerate()
                .fold(0u64, |m, (i, b)| m | (u64::from(*b) << (8 * i)));
            banks.push(PcrBankSelection {
                hash,
                size_of_select,
                mask,
            });
        }
        Ok(Self { banks })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.put_u32(self.banks.len() as u32);
        for b in &self.banks {
            out.put_u16(b.hash.id());
            out.put_u8(b.size_of_select);
            for i in 0..usize::from(b.size_of_select) {
                out.put_u8((b.mask >> (8 * i.min(7))) as u8);
            }
        }
    }

    /// The marshalled `TPML_PCR_SELECTION`.
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// Whether two selections name the same PCRs in the same banks (bitmap width, bank order and
    /// banks with nothing selected do not matter).
    pub fn same_pcrs(&self, other: &PcrSelection) -> bool {
        let norm = |s: &PcrSelection| {
            let mut v: Vec<(HashAlg, u64)> = s
                .banks
                .iter()
                .filter(|b| b.mask != 0)
                .map(|b| (b.hash, b.mask))
                .collect();
            v.sort();
            v
        };
        norm(self) == norm(other)
    }

    /// The bank of `hash`, if selected.
    pub fn bank(&self, hash: HashAlg) -> Option<&PcrBankSelection> {
        self.banks.iter().find(|b| b.hash == hash)
    }
}

impl fmt::Display for PcrSelection {
    /// `sha256:0,1,2+sha1:7`, the tpm2-tools notation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, b) in self.banks.iter().enumerate() {
            if n > 0 {
                f.write_str("+")?;
            }
            write!(f, "{}:", b.hash)?;
            let idx: Vec<String> = b.indices().map(|i| i.to_string()).collect();
            f.write_str(&idx.join(","))?;
        }
        Ok(())
    }
}

/// Why claimed PCR values do not fit a selection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcrValuesError {
    #[error("no value given for PCR {hash}:{index}")]
    Missing { hash: HashAlg, index: u8 },
    #[error("PCR {hash}:{index} has {len} bytes; a {hash} value has {expected}")]
    BadLength {
        hash: HashAlg,
        index: u8,
        len: usize,
        expected: usize,
    },
    #[error("PCR {hash}:{index} is given but was not quoted")]
    NotSelected { hash: HashAlg, index: u8 },
}

/// PCR values per bank: `hash → index → value`. Claimed (untrusted) until a verified quote's
/// `pcrDigest` covers them; [`super::VerifiedQuote::pcrs`] holds authenticated ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcrBanks(pub BTreeMap<HashAlg, BTreeMap<u8, Vec<u8>>>);

impl PcrBanks {
    /// The value of PCR `index` in bank `hash`.
    pub fn get(&self, hash: HashAlg, index: u8) -> Option<&[u8]> {
        self.0.get(&hash)?.get(&index).map(Vec::as_slice)
    }

    /// Sets a value.
    pub fn insert(&mut self, hash: HashAlg, index: u8, value: Vec<u8>) {
        self.0.entry(hash).or_default().insert(index, value);
    }

    /// Checks that the values are exactly those `selection` names (no missing, no extra, right
    /// sizes) and returns `H_alg` over them in selection order: what a quote's `pcrDigest` is.
    pub fn digest_for(
        &self,
        selection: &PcrSelection,
        alg: HashAlg,
    ) -> Result<Vec<u8>, PcrValuesError> {
        for (hash, bank) in &self.0 {
            for index in bank.keys() {
                if !selection.bank(*hash).is_some_and(|b| b.contains(*index)) {
                    return Err(PcrValuesError::NotSelected {
                        hash: *hash,
                        index: *index,
                    });
                }
            }
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        for b in &selection.banks {
            for index in b.indices() {
                let v = self.get(b.hash, index).ok_or(PcrValuesError::Missing {
                    hash: b.hash,
                    index,
                })?;
                if v.len() != b.hash.size() {
                    return Err(PcrValuesError::BadLength {
                        hash: b.hash,
                        index,
                        len: v.len(),
                        expected: b.hash.size(),
                    });
                }
                parts.push(v);
            }
        }
        Ok(alg.digest_parts(&parts))
    }

    /// Parses tpm2-tools' `-F values` output: the selected PCR values concatenated in selection
    /// order.
    pub fn from_concatenated(selection: &PcrSelection, bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes, "PCR values");
        let mut out = PcrBanks::default();
        for b in &selection.banks {
            for index in b.indices() {
                out.insert(b.hash, index, r.bytes(b.hash.size(), "value")?.to_vec());
            }
        }
        r.finish()?;
        Ok(out)
    }
}
