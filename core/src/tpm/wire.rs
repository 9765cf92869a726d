//! The TPM 2.0 wire format: big-endian integers and `TPM2B_*` size-prefixed buffers, read with
//! bounds checks and a location for every error, written back byte-exactly.

/// Why a marshalled TPM structure (or a TCG event log) was refused. Every variant names the
/// structure, the field and the byte offset where parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{structure}: truncated at offset {offset} reading {field}")]
    Truncated {
        structure: &'static str,
        field: &'static str,
        offset: usize,
    },
    #[error("{structure}: {extra} trailing bytes at offset {offset}")]
    Trailing {
        structure: &'static str,
        offset: usize,
        extra: usize,
    },
    #[error("{structure}: {field} at offset {offset}: {reason}")]
    Invalid {
        structure: &'static str,
        field: &'static str,
        offset: usize,
        reason: String,
    },
}

/// A bounded big-endian reader over one structure's bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], structure: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            structure,
        }
    }

    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An [`ParseError::Invalid`] at `offset` of this structure.
    pub(crate) fn invalid_at(
        &self,
        offset: usize,
        field: &'static str,
        reason: impl Into<String>,
    ) -> ParseError {
        ParseError::Invalid {
            structure: self.structure,
            field,
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ParseError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(ParseError::Truncated {
                structure: self.structure,
                field,
                offset: self.pos,
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ParseError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u16_le(&mut self, field: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32_le(&mut self, field: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// A `TPM2B_*`: a u16 size, then at most `max` bytes.
    pub(crate) fn tpm2b(
        &mut self,
        max: usize,
        field: &'static str,
    ) -> Result<&'a [u8], ParseError> {
        let at = self.pos;
        let n = usize::from(self.u16(field)?);
        if n > max {
            return Err(self.invalid_at(at, field, format!("size {n} exceeds {max}")));
        }
        self.bytes(n, field)
    }

    /// Requires that every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), ParseError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(ParseError::Trailing {
                structure: self.structure,
                offset: self.pos,
                extra: self.buf.len() - self.pos,
            })
        }
    }
}

/// Appends big-endian values to a buffer.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    /// A `TPM2B_*`. Callers keep buffers within their `TPM2B` limits (all far below 64 KiB).
    fn put_tpm2b(&mut self, b: &[u8]);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_tpm2b(&mut self, b: &[u8]) {
        let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.put_u16(n);
        self.extend_from_slice(&b[..usize::from(n)]);
    }
}
