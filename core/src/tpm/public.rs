//! `TPMT_PUBLIC` (RSA and ECC keys), object attributes, Names and qualified names.

use std::fmt;

use super::alg::*;
use super::wire::{ParseError, Put, Reader};

/// `TPM2B_PUBLIC_KEY_RSA` limit (RSA-4096).
const MAX_RSA_KEY_BYTES: usize = 512;
/// `TPM2B_ECC_PARAMETER` limit (P-521).
const MAX_ECC_KEY_BYTES: usize = 66;
/// `TPM2B_DIGEST` limit.
const MAX_DIGEST_BYTES: usize = MAX_DIGEST;

/// `TPM_RH_OWNER`: the qualified name of the storage hierarchy (parent of its primaries).
pub const TPM_RH_OWNER: u32 = 0x4000_0001;
/// `TPM_RH_NULL`.
pub const TPM_RH_NULL: u32 = 0x4000_0007;
/// `TPM_RH_ENDORSEMENT`: parent of the EK and hence part of an AK's qualified name.
pub const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
/// `TPM_RH_PLATFORM`.
pub const TPM_RH_PLATFORM: u32 = 0x4000_000C;

/// `TPMA_OBJECT` (TPM 2.0 Part 2 §8.3). Reserved bits are refused when parsing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// TPM 2.0 Library 1.83: the object is bound to the firmware's secret.
    pub const FIRMWARE_LIMITED: u32 = 1 << 8;
    /// TPM 2.0 Library 1.83: the object is bound to the firmware's security version.
    pub const SVN_LIMITED: u32 = 1 << 9;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
    pub const X509_SIGN: u32 = 1 << 19;
    /// Bits the specification reserves (must be clear).
    pub const RESERVED: u32 = (1 << 0) | (1 << 3) | 0xF000 | 0xFFF0_0000;

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit == bit
    }
    pub fn fixed_tpm(self) -> bool {
        self.has(Self::FIXED_TPM)
    }
    pub fn fixed_parent(self) -> bool {
        self.has(Self::FIXED_PARENT)
    }
    pub fn sensitive_data_origin(self) -> bool {
        self.has(Self::SENSITIVE_DATA_ORIGIN)
    }
    pub fn restricted(self) -> bool {
        self.has(Self::RESTRICTED)
    }
    pub fn decrypt(self) -> bool {
        self.has(Self::DECRYPT)
    }
    pub fn sign(self) -> bool {
        self.has(Self::SIGN)
    }
}

impl fmt::Debug for ObjectAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u32, &str); 14] = [
            (ObjectAttributes::FIXED_TPM, "fixedTPM"),
            (ObjectAttributes::ST_CLEAR, "stClear"),
            (ObjectAttributes::FIXED_PARENT, "fixedParent"),
            (
                ObjectAttributes::SENSITIVE_DATA_ORIGIN,
                "sensitiveDataOrigin",
            ),
            (ObjectAttributes::USER_WITH_AUTH, "userWithAuth"),
            (ObjectAttributes::ADMIN_WITH_POLICY, "adminWithPolicy"),
            (ObjectAttributes::FIRMWARE_LIMITED, "firmwareLimited"),
            (ObjectAttributes::SVN_LIMITED, "svnLimited"),
            (ObjectAttributes::NO_DA, "noDA"),
            (
                ObjectAttributes::ENCRYPTED_DUPLICATION,
                "encryptedDuplication",
            ),
            (ObjectAttributes::RESTRICTED, "restricted"),
            (ObjectAttributes::DECRYPT, "decrypt"),
            (ObjectAttributes::SIGN, "sign"),
            (ObjectAttributes::X509_SIGN, "x509sign"),
        ];
        let set: Vec<&str> = NAMES
            .iter()
            .filter(|(b, _)| self.has(*b))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "0x{:08x}({})", self.0, set.join("|"))
    }
}

/// `TPMT_SYM_DEF_OBJECT`: the symmetric algorithm of a storage key (`None` = `TPM_ALG_NULL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymDef {
    /// AES, SM4 or Camellia.
    pub algorithm: u16,
    pub key_bits: u16,
    /// CTR, OFB, CBC, CFB or ECB.
    pub mode: u16,
}

/// An asymmetric scheme (`TPMT_RSA_SCHEME` / `TPMT_ECC_SCHEME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Null,
    RsaSsa(HashAlg),
    RsaEs,
    RsaPss(HashAlg),
    Oaep(HashAlg),
    Ecdsa(HashAlg),
    Ecdh(HashAlg),
    Ecdaa { hash: HashAlg, count: u16 },
    Sm2(HashAlg),
    EcSchnorr(HashAlg),
    Ecmqv(HashAlg),
}

impl Scheme {
    fn id(self) -> u16 {
        match self {
            Scheme::Null => TPM_ALG_NULL,
            Scheme::RsaSsa(_) => TPM_ALG_RSASSA,
            Scheme::RsaEs => TPM_ALG_RSAES,
            Scheme::RsaPss(_) => TPM_ALG_RSAPSS,
            Scheme::Oaep(_) => TPM_ALG_OAEP,
            Scheme::Ecdsa(_) => TPM_ALG_ECDSA,
            Scheme::Ecdh(_) => TPM_ALG_ECDH,
            Scheme::Ecdaa { .. } => TPM_ALG_ECDAA,
            Scheme::Sm2(_) => TPM_ALG_SM2,
            Scheme::EcSchnorr(_) => TPM_ALG_ECSCHNORR,
            Scheme::Ecmqv(_) => TPM_ALG_ECMQV,
        }
    }

    fn read(r: &mut Reader<'_>, rsa: bool) -> Result<Self, ParseError> {
        let at = r.offset();
        let id = r.u16("scheme")?;
        let s = match (rsa, id) {
            (_, TPM_ALG_NULL) => Scheme::Null,
            (true, TPM_ALG_RSASSA) => Scheme::RsaSsa(read_hash(r, "scheme.hashAlg")?),
            (true, TPM_ALG_RSAES) => Scheme::RsaEs,
            (true, TPM_ALG_RSAPSS) => Scheme::RsaPss(read_hash(r, "scheme.hashAlg")?),
            (true, TPM_ALG_OAEP) => Scheme::Oaep(read_hash(r, "scheme.hashAlg")?),
            (false, TPM_ALG_ECDSA) => Scheme::Ecdsa(read_hash(r, "scheme.hashAlg")?),
            (false, TPM_ALG_ECDH) => Scheme::Ecdh(read_hash(r, "scheme.hashAlg")?),
            (false, TPM_ALG_ECDAA) => Scheme::Ecdaa {
                hash: read_hash(r, "scheme.hashAlg")?,
                count: r.u16("scheme.count")?,
            },
            (false, TPM_ALG_SM2) => Scheme::Sm2(read_hash(r, "scheme.hashAlg")?),
            (false, TPM_ALG_ECSCHNORR) => Scheme::EcSchnorr(read_hash(r, "scheme.hashAlg")?),
            (false, TPM_ALG_ECMQV) => Scheme::Ecmqv(read_hash(r, "scheme.hashAlg")?),
            _ => return Err(r.invalid_at(at, "scheme", format!("unsupported scheme 0x{id:04x}"))),
        };
        Ok(s)
    }

    fn write(self, out: &mut Vec<u8>) {
        out.put_u16(self.id());
        match self {
            Scheme::Null | Scheme::RsaEs => {}
            Scheme::RsaSsa(h)
            | Scheme::RsaPss(h)
            | Scheme::Oaep(h)
            | Scheme::Ecdsa(h)
            | Scheme::Ecdh(h)
            | Scheme::Sm2(h)
            | Scheme::EcSchnorr(h)
            | Scheme::Ecmqv(h) => out.put_u16(h.id()),
            Scheme::Ecdaa { hash, count } => {
                out.put_u16(hash.id());
                out.put_u16(count);
            }
        }
    }
}

/// `TPMT_KDF_SCHEME` of an ECC key (`None` = `TPM_ALG_NULL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfScheme {
    /// MGF1, KDF1_SP800_56A, KDF2 or KDF1_SP800_108.
    pub algorithm: u16,
    pub hash: HashAlg,
}

/// A TPM ECC curve (`TPM_ECC_CURVE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EccCurve(pub u16);

impl EccCurve {
    pub const NIST_P256: EccCurve = EccCurve(0x0003);
    pub const NIST_P384: EccCurve = EccCurve(0x0004);
    pub const NIST_P521: EccCurve = EccCurve(0x0005);
    const KNOWN: [u16; 8] = [
        0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0010, 0x0011, 0x0020,
    ];

    /// Field size in bytes of the NIST curves a verifier supports.
    pub fn field_size(self) -> Option<usize> {
        match self {
            EccCurve::NIST_P256 => Some(32),
            EccCurve::NIST_P384 => Some(48),
            EccCurve::NIST_P521 => Some(66),
            _ => None,
        }
    }
}

/// Algorithm parameters and public key of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// `TPMS_RSA_PARMS` + `TPM2B_PUBLIC_KEY_RSA`.
    Rsa {
        symmetric: Option<SymDef>,
        scheme: Scheme,
        key_bits: u16,
        /// 0 means the default, 65537.
        exponent: u32,
        modulus: Vec<u8>,
    },
    /// `TPMS_ECC_PARMS` + `TPMS_ECC_POINT`.
    Ecc {
        symmetric: Option<SymDef>,
        scheme: Scheme,
        curve: EccCurve,
        kdf: Option<KdfScheme>,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// A `TPMT_PUBLIC`: the public area of a TPM object. Its bytes are what the object's Name
/// hashes, so a verifier that knows the Name can authenticate every field here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmtPublic {
    pub name_alg: HashAlg,
    pub attributes: ObjectAttributes,
    pub auth_policy: Vec<u8>,
    pub key: PublicKey,
}

fn read_symmetric(r: &mut Reader<'_>) -> Result<Option<SymDef>, ParseError> {
    let at = r.offset();
    let algorithm = r.u16("symmetric.algorithm")?;
    match algorithm {
        TPM_ALG_NULL => Ok(None),
        TPM_ALG_AES | TPM_ALG_SM4 | TPM_ALG_CAMELLIA => {
            let key_bits = r.u16("symmetric.keyBits")?;
            let mat = r.offset();
            let mode = r.u16("symmetric.mode")?;
            if ![
                TPM_ALG_CTR,
                TPM_ALG_OFB,
                TPM_ALG_CBC,
                TPM_ALG_CFB,
                TPM_ALG_ECB,
            ]
            .contains(&mode)
            {
                return Err(r.invalid_at(
                    mat,
                    "symmetric.mode",
                    format!("unknown mode 0x{mode:04x}"),
                ));
            }
            Ok(Some(SymDef {
                algorithm,
                key_bits,
                mode,
            }))
        }
        other => Err(r.invalid_at(
            at,
            "symmetric.algorithm",
            format!("unsupported symmetric algorithm 0x{other:04x}"),
        )),
    }
}

fn write_symmetric(s: Option<SymDef>, out: &mut Vec<u8>) {
    match s {
        None => out.put_u16(TPM_ALG_NULL),
        Some(s) => {
            out.put_u16(s.algorithm);
            out.put_u16(s.key_bits);
            out.put_u16(s.mode);
        }
    }
}

impl TpmtPublic {
    /// Parses a complete `TPMT_PUBLIC` (no size prefix, no trailing bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes, "TPMT_PUBLIC");
        let p = Self::read(&mut r)?;
        r.finish()?;
        Ok(p)
    }

    /// Parses a `TPM2B_PUBLIC` (u16 size, then a `TPMT_PUBLIC` of exactly that size), the form
    /// tpm2-tools writes with `-u`. Returns the public area and its `TPMT_PUBLIC` bytes.
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<(Self, &[u8]), ParseError> {
        let mut r = Reader::new(bytes, "TPM2B_PUBLIC");
        let inner = r.tpm2b(usize::from(u16::MAX), "size")?;
        r.finish()?;
        Ok((Self::parse(inner)?, inner))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let at = r.offset();
        let ty = r.u16("type")?;
        if ty != TPM_ALG_RSA && ty != TPM_ALG_ECC {
            return Err(r.invalid_at(
                at,
                "type",
                format!("unsupported object type 0x{ty:04x} (RSA or ECC only)"),
            ));
        }
        let name_alg = read_hash(r, "nameAlg")?;
        let at = r.offset();
        let attributes = ObjectAttributes(r.u32("objectAttributes")?);
        if attributes.0 & ObjectAttributes::RESERVED != 0 {
            return Err(r.invalid_at(
                at,
                "objectAttributes",
                format!("reserved bits set in 0x{:08x}", attributes.0),
            ));
        }
        let auth_policy = r.tpm2b(MAX_DIGEST_BYTES, "authPolicy")?.to_vec();
        let key = if ty == TPM_ALG_RSA {
            let symmetric = read_symmetric(r)?;
            let scheme = Scheme::read(r, true)?;
            let at = r.offset();
            let key_bits = r.u16("keyBits")?;
            if ![1024, 2048, 3072, 4096].contains(&key_bits) {
                return Err(r.invalid_at(
                    at,
                    "keyBits",
                    format!("unsupported RSA size {key_bits}"),
                ));
            }
            let exponent = r.u32("exponent")?;
            let at = r.offset();
            let modulus = r.tpm2b(MAX_RSA_KEY_BYTES, "unique.rsa")?.to_vec();
            if !modulus.is_empty() && modulus.len() != usize::from(key_bits / 8) {
                return Err(r.invalid_at(
                    at,
                    "unique.rsa",
                    format!("{} bytes for a {key_bits}-bit key", modulus.len()),
                ));
            }
            PublicKey::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            }
        } else {
            let symmetric = read_symmetric(r)?;
            let scheme = Scheme::read(r, false)?;
            let at = r.offset();
            let curve = EccCurve(r.u16("curveID")?);
            if !EccCurve::KNOWN.contains(&curve.0) {
                return Err(r.invalid_at(
                    at,
                    "curveID",
                    format!("unknown curve 0x{:04x}", curve.0),
                ));
            }
            let at = r.offset();
            let kdf_alg = r.u16("kdf.scheme")?;
            let kdf = match kdf_alg {
                TPM_ALG_NULL => None,
                TPM_ALG_MGF1 | TPM_ALG_KDF1_SP800_56A | TPM_ALG_KDF2 | TPM_ALG_KDF1_SP800_108 => {
                    Some(KdfScheme {
                        algorithm: kdf_alg,
                        hash: read_hash(r, "kdf.hashAlg")?,
                    })
                }
                other => {
                    return Err(r.invalid_at(
                        at,
                        "kdf.scheme",
                        format!("unknown KDF 0x{other:04x}"),
                    ))
                }
            };
            let x = r.tpm2b(MAX_ECC_KEY_BYTES, "unique.ecc.x")?.to_vec();
            let y = r.tpm2b(MAX_ECC_KEY_BYTES, "unique.ecc.y")?.to_vec();
            PublicKey::Ecc {
                symmetric,
                scheme,
                curve,
                kdf,
                x,
                y,
            }
        };
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            key,
        })
    }

    /// The marshalled `TPMT_PUBLIC`; byte-identical to what [`TpmtPublic::parse`] accepted.
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u16(match self.key {
            PublicKey::Rsa { .. } => TPM_ALG_RSA,
            PublicKey::Ecc { .. } => TPM_ALG_ECC,
        });
        out.put_u16(self.name_alg.id());
        out.put_u32(self.attributes.0);
        out.put_tpm2b(&self.auth_policy);
        match &self.key {
            PublicKey::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            } => {
                write_symmetric(*symmetric, &mut out);
                scheme.write(&mut out);
                out.put_u16(*key_bits);
                out.put_u32(*exponent);
                out.put_tpm2b(modulus);
            }
            PublicKey::Ecc {
                symmetric,
                scheme,
                curve,
                kdf,
                x,
                y,
            } => {
                write_symmetric(*symmetric, &mut out);
                scheme.write(&mut out);
                out.put_u16(curve.0);
                match kdf {
                    None => out.put_u16(TPM_ALG_NULL),
                    Some(k) => {
                        out.put_u16(k.algorithm);
                        out.put_u16(k.hash.id());
                    }
                }
                out.put_tpm2b(x);
                out.put_tpm2b(y);
            }
        }
        out
    }

    /// The marshalled `TPM2B_PUBLIC` (size-prefixed), as tpm2-tools writes it.
    pub fn marshal_tpm2b(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_tpm2b(&self.marshal());
        out
    }

    /// The object's Name: `nameAlg ‖ H_nameAlg(TPMT_PUBLIC)`.
    pub fn name(&self) -> Name {
        let mut n = self.name_alg.id().to_be_bytes().to_vec();
        n.extend(self.name_alg.digest(&self.marshal()));
        Name(n)
    }

    /// The object's qualified name under a parent whose qualified name is `parent`:
    /// `nameAlg ‖ H_nameAlg(QN(parent) ‖ Name)`. For a primary object (such as the EK) the
    /// parent is its hierarchy: [`Name::hierarchy`].
    pub fn qualified_name(&self, parent: &Name) -> Name {
        let mut n = self.name_alg.id().to_be_bytes().to_vec();
        n.extend(
            self.name_alg
                .digest_parts(&[parent.as_bytes(), self.name().as_bytes()]),
        );
        Name(n)
    }
}

/// A `TPM2B_NAME` value: either a handle (4 bytes, for hierarchies and PCRs) or an algorithm id
/// followed by a digest. Also used for qualified names, which have the same shape.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name(pub Vec<u8>);

impl Name {
    /// The qualified name of a hierarchy (its handle), the parent of its primary objects.
    pub fn hierarchy(handle: u32) -> Self {
        Name(handle.to_be_bytes().to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Self, ParseError> {
        let at = r.offset();
        let b = r.tpm2b(2 + MAX_DIGEST, field)?;
        if b.len() == 4 {
            return Ok(Name(b.to_vec()));
        }
        let ok = b.len() >= 2
            && HashAlg::from_id(u16::from_be_bytes([b[0], b[1]]))
                .is_some_and(|h| h.size() + 2 == b.len());
        if !ok {
            return Err(r.invalid_at(
                at,
                field,
                "neither a handle nor an algorithm id with a digest of its size",
            ));
        }
        Ok(Name(b.to_vec()))
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", hex::encode(&self.0))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}
