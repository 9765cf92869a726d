//! Endorsement-key certificates: the chain to a root CA the policy trusts, the TCG EK
//! extended key usage, and that the certified key is the EK whose public area is given.
//!
//! swtpm (0.7.1, `swtpm_localca`) issues EK certificates that carry the TCG EKU
//! `2.23.133.8.1` (`tcg-kp-EKCertificate`, not critical), a critical subjectAltName
//! directoryName with the TPM manufacturer/model/version (`2.23.133.2.1-3`), a critical
//! `basicConstraints CA:FALSE`, a critical keyUsage (keyEncipherment for RSA, keyAgreement for
//! ECC), subjectDirectoryAttributes, and subject `CN=unknown`; signed sha256WithRSAEncryption by
//! an intermediate (`swtpm-localca`) under a self-signed root (`swtpm-localca-rootca`), both
//! RSA-3072. It certifies an RSA-2048 EK (NV 0x01c00002, persistent 0x81010001) and an ECC
//! NIST P-384 EK (NV 0x01c00016, persistent 0x81010016, nameAlg SHA-384).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};
use x509_cert::Certificate;

use super::alg::HashAlg;
use super::public::{EccCurve, Name, PublicKey, TpmtPublic, TPM_RH_ENDORSEMENT};

/// `tcg-kp-EKCertificate`.
pub const TCG_KP_EK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.1");
const TCG_AT_TPM_MANUFACTURER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.1");
const TCG_AT_TPM_MODEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.2");
const TCG_AT_TPM_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.3");

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

const EXT_SUBJECT_DIRECTORY_ATTRIBUTES: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.9");
const EXT_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const EXT_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const EXT_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const EXT_CRL_DISTRIBUTION_POINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.31");
const EXT_CERTIFICATE_POLICIES: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32");
const EXT_AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const EXT_EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const EXT_AUTHORITY_INFO_ACCESS: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1");

/// Extensions whose meaning this verifier knows (it may ignore their content, which is fine
/// for a critical one only because they do not restrict what a verifier of an EK must do
/// beyond what is checked here).
const KNOWN_EXTENSIONS: [ObjectIdentifier; 10] = [
    EXT_SUBJECT_DIRECTORY_ATTRIBUTES,
    EXT_SUBJECT_KEY_ID,
    EXT_KEY_USAGE,
    EXT_SUBJECT_ALT_NAME,
    EXT_BASIC_CONSTRAINTS,
    EXT_CRL_DISTRIBUTION_POINTS,
    EXT_CERTIFICATE_POLICIES,
    EXT_AUTHORITY_KEY_ID,
    EXT_EXTENDED_KEY_USAGE,
    EXT_AUTHORITY_INFO_ACCESS,
];

/// Longest chain (EK certificate, intermediates, root) considered.
const MAX_CHAIN: usize = 6;
/// Largest certificate accepted.
const MAX_CERT_BYTES: usize = 16 * 1024;

/// Why an EK certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EkError {
    #[error("{what}: not a DER X.509 certificate: {reason}")]
    Certificate { what: String, reason: String },
    #[error("root CA PEM: {0}")]
    RootPem(String),
    #[error("no root CA configured")]
    NoRoots,
    #[error("no configured root CA or given intermediate issued {subject:?} (issuer {issuer:?})")]
    UnknownIssuer { subject: String, issuer: String },
    #[error("signature on {subject:?} does not verify with the key of its issuer {issuer:?}")]
    BadChainSignature { subject: String, issuer: String },
    #[error("{subject:?} is not a CA (basicConstraints/keyUsage) but issued a certificate")]
    NotCa { subject: String },
    #[error("{subject:?} is not valid at the verification time")]
    Expired { subject: String },
    #[error("{subject:?} has an unknown critical extension {oid}")]
    UnknownCriticalExtension { subject: String, oid: String },
    #[error("{subject:?}: malformed extension {oid}: {reason}")]
    BadExtension {
        subject: String,
        oid: String,
        reason: String,
    },
    #[error("EK certificate's extended key usage lacks tcg-kp-EKCertificate (2.23.133.8.1)")]
    WrongExtendedKeyUsage,
    #[error("EK certificate is a CA certificate")]
    EkIsCa,
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    #[error("chain longer than {MAX_CHAIN} certificates")]
    ChainTooLong,
    #[error("the certified key is not the EK whose public area was given")]
    KeyMismatch,
    #[error("EK public area is not an endorsement key: {0}")]
    EkAttributes(String),
}

/// Root CAs a policy trusts for EK certificates (trusted configuration).
#[derive(Clone, Debug, Default)]
pub struct EkRoots {
    roots: Vec<Certificate>,
}

impl EkRoots {
    /// Parses every `CERTIFICATE` block of a PEM text (e.g. a `ek-roots` file).
    pub fn from_pem(pem: &str) -> Result<Self, EkError> {
        let mut out = EkRoots::default();
        out.add_pem(pem)?;
        Ok(out)
    }

    /// Adds every `CERTIFICATE` block of a PEM text.
    pub fn add_pem(&mut self, pem: &str) -> Result<(), EkError> {
        let ders = pem_certificates(pem).map_err(EkError::RootPem)?;
        if ders.is_empty() {
            return Err(EkError::RootPem("no CERTIFICATE block".into()));
        }
        for der in ders {
            self.roots.push(parse_cert(&der, "root CA")?);
        }
        Ok(())
    }

    /// Adds one DER root certificate.
    pub fn add_der(&mut self, der: &[u8]) -> Result<(), EkError> {
        self.roots.push(parse_cert(der, "root CA")?);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// The DER bodies of the `CERTIFICATE` blocks of a PEM text.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let end = body
            .find(END)
            .ok_or_else(|| "BEGIN CERTIFICATE without END".to_owned())?;
        let b64: String = body[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        out.push(
            STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| format!("certificate {}: bad base64: {e}", out.len() + 1))?,
        );
        rest = &body[end + END.len()..];
    }
    Ok(out)
}

fn parse_cert(der: &[u8], what: &str) -> Result<Certificate, EkError> {
    let bad = |reason: String| EkError::Certificate {
        what: what.to_owned(),
        reason,
    };
    if der.len() > MAX_CERT_BYTES {
        return Err(bad(format!("{} bytes exceed {MAX_CERT_BYTES}", der.len())));
    }
    Certificate::from_der(der).map_err(|e| bad(e.to_string()))
}

/// Parses an EK certificate as read from TPM NV. Some TPMs store it zero-padded to the NV
/// index's size: trailing zero bytes after the DER are removed; anything else is refused.
pub fn parse_ek_certificate(der: &[u8]) -> Result<Certificate, EkError> {
    use der::Reader as _;
    let bad = |reason: String| EkError::Certificate {
        what: "EK certificate".into(),
        reason,
    };
    if der.len() > MAX_CERT_BYTES {
        return Err(bad(format!("{} bytes exceed {MAX_CERT_BYTES}", der.len())));
    }
    let mut r = der::SliceReader::new(der).map_err(|e| bad(e.to_string()))?;
    let cert = Certificate::decode(&mut r).map_err(|e| bad(e.to_string()))?;
    let rest_len = r.remaining_len();
    let rest = r.read_slice(rest_len).map_err(|e| bad(e.to_string()))?;
    if rest.iter().any(|b| *b != 0) {
        return Err(bad(format!(
            "{} trailing bytes that are not zero padding",
            rest.len()
        )));
    }
    Ok(cert)
}

/// The TPM's identity as its EK certificate states it (subjectAltName directoryName).
/// Authenticated once the certificate chain is verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TpmDevice {
    /// e.g. `id:00001014` (IBM, i.e. swtpm), `id:49465800` (Infineon).
    pub manufacturer: String,
    pub model: String,
    pub version: String,
}

/// An EK whose certificate chains to a trusted root.
#[derive(Clone, Debug)]
pub struct VerifiedEk {
    pub public: TpmtPublic,
    pub name: Name,
    /// The EK's qualified name as a primary key of the endorsement hierarchy: the parent
    /// qualified name of an AK created under it ([`super::AkTrust::parent`]).
    pub qualified_name: Name,
    pub device: Option<TpmDevice>,
    /// Subjects from the EK certificate up to the root, as RFC 4514 strings.
    pub chain: Vec<String>,
    /// Whether the certificate carried an extended key usage extension (which then contains
    /// `tcg-kp-EKCertificate`).
    pub has_ek_eku: bool,
}

fn subject_of(c: &Certificate) -> String {
    c.tbs_certificate.subject.to_string()
}

fn check_validity(c: &Certificate, now_unix: Option<u64>) -> Result<(), EkError> {
    let Some(now) = now_unix else { return Ok(()) };
    let v = &c.tbs_certificate.validity;
    let nb = v.not_before.to_unix_duration().as_secs();
    let na = v.not_after.to_unix_duration().as_secs();
    if now < nb || now > na {
        return Err(EkError::Expired {
            subject: subject_of(c),
        });
    }
    Ok(())
}

fn check_extensions(c: &Certificate) -> Result<(), EkError> {
    for e in c.tbs_certificate.extensions.iter().flatten() {
        if e.critical && !KNOWN_EXTENSIONS.contains(&e.extn_id) {
            return Err(EkError::UnknownCriticalExtension {
                subject: subject_of(c),
                oid: e.extn_id.to_string(),
            });
        }
    }
    Ok(())
}

fn extension<'a, T: Decode<'a>>(
    c: &'a Certificate,
    oid: ObjectIdentifier,
) -> Result<Option<T>, EkError> {
    let Some(e) = c
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == oid)
    else {
        return Ok(None);
    };
    T::from_der(e.extn_value.as_bytes())
        .map(Some)
        .map_err(|err| EkError::BadExtension {
            subject: subject_of(c),
            oid: oid.to_string(),
            reason: err.to_string(),
        })
}

fn check_is_ca(c: &Certificate) -> Result<(), EkError> {
    let not_ca = || EkError::NotCa {
        subject: subject_of(c),
    };
    let bc: Option<BasicConstraints> = extension(c, EXT_BASIC_CONSTRAINTS)?;
    if !bc.is_some_and(|b| b.ca) {
        return Err(not_ca());
    }
    let ku: Option<KeyUsage> = extension(c, EXT_KEY_USAGE)?;
    if ku.is_some_and(|k| !k.key_cert_sign()) {
        return Err(not_ca());
    }
    Ok(())
}

fn hash_digest(h: HashAlg, data: &[u8]) -> Vec<u8> {
    h.digest(data)
}

/// Verifies `child`'s signature with `issuer`'s public key.
fn verify_issued_by(child: &Certificate, issuer: &Certificate) -> Result<bool, EkError> {
    let tbs = child
        .tbs_certificate
        .to_der()
        .map_err(|e| EkError::Certificate {
            what: subject_of(child),
            reason: e.to_string(),
        })?;
    let sig = child.signature.raw_bytes();
    let alg = child.signature_algorithm.oid;
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let key_bytes = spki.subject_public_key.raw_bytes();
    let unsupported = || {
        EkError::UnsupportedAlgorithm(format!(
            "certificate signature {alg} with key {}",
            spki.algorithm.oid
        ))
    };
    if spki.algorithm.oid == RSA_ENCRYPTION {
        let (scheme, h) = match alg {
            SHA256_WITH_RSA => (rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), HashAlg::Sha256),
            SHA384_WITH_RSA => (rsa::Pkcs1v15Sign::new::<sha2::Sha384>(), HashAlg::Sha384),
            SHA512_WITH_RSA => (rsa::Pkcs1v15Sign::new::<sha2::Sha512>(), HashAlg::Sha512),
            _ => return Err(unsupported()),
        };
        let key = rsa::RsaPublicKey::from_pkcs1_der(key_bytes).map_err(|_| unsupported())?;
        return Ok(key.verify(scheme, &hash_digest(h, &tbs), sig).is_ok());
    }
    if spki.algorithm.oid == EC_PUBLIC_KEY {
        let h = match alg {
            ECDSA_SHA256 => HashAlg::Sha256,
            ECDSA_SHA384 => HashAlg::Sha384,
            ECDSA_SHA512 => HashAlg::Sha512,
            _ => return Err(unsupported()),
        };
        let curve: ObjectIdentifier = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as().ok())
            .ok_or_else(unsupported)?;
        let digest = hash_digest(h, &tbs);
        return Ok(match curve {
            SECP256R1 => {
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                    .map_err(|_| unsupported())?;
                p256::ecdsa::Signature::from_der(sig)
                    .is_ok_and(|s| vk.verify_prehash(&digest, &s).is_ok())
            }
            SECP384R1 => {
                let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                    .map_err(|_| unsupported())?;
                p384::ecdsa::Signature::from_der(sig)
                    .is_ok_and(|s| vk.verify_prehash(&digest, &s).is_ok())
            }
            _ => return Err(unsupported()),
        });
    }
    Err(unsupported())
}

/// Checks that the certificate's key is the EK's public key.
fn check_key_matches(cert: &Certificate, ek: &TpmtPublic) -> Result<(), EkError> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key_bytes = spki.subject_public_key.raw_bytes();
    match &ek.key {
        PublicKey::Rsa {
            exponent, modulus, ..
        } => {
            if spki.algorithm.oid != RSA_ENCRYPTION && spki.algorithm.oid != RSAES_OAEP {
                return Err(EkError::KeyMismatch);
            }
            let k =
                rsa::RsaPublicKey::from_pkcs1_der(key_bytes).map_err(|_| EkError::KeyMismatch)?;
            let e = if *exponent == 0 { 65_537 } else { *exponent };
            if k.n().to_bytes_be() != modulus.as_slice() || *k.e() != rsa::BigUint::from(e) {
                return Err(EkError::KeyMismatch);
            }
        }
        PublicKey::Ecc { curve, x, y, .. } => {
            let oid = match *curve {
                EccCurve::NIST_P256 => SECP256R1,
                EccCurve::NIST_P384 => SECP384R1,
                _ => {
                    return Err(EkError::UnsupportedAlgorithm(format!(
                        "EK curve 0x{:04x}",
                        curve.0
                    )))
                }
            };
            let cert_curve: Option<ObjectIdentifier> = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok());
            if spki.algorithm.oid != EC_PUBLIC_KEY || cert_curve != Some(oid) {
                return Err(EkError::KeyMismatch);
            }
            let size = curve.field_size().unwrap_or(0);
            if x.len() != size || y.len() != size {
                return Err(EkError::KeyMismatch);
            }
            let mut point = vec![0x04];
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            if key_bytes != point.as_slice() {
                return Err(EkError::KeyMismatch);
            }
        }
    }
    Ok(())
}

fn check_ek_attributes(ek: &TpmtPublic) -> Result<(), EkError> {
    let a = ek.attributes;
    let missing = [
        (a.fixed_tpm(), "fixedTPM"),
        (a.fixed_parent(), "fixedParent"),
        (a.sensitive_data_origin(), "sensitiveDataOrigin"),
        (a.restricted(), "restricted"),
        (a.decrypt(), "decrypt"),
        (!a.sign(), "not sign"),
    ];
    let bad: Vec<&str> = missing
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, n)| *n)
        .collect();
    if !bad.is_empty() {
        return Err(EkError::EkAttributes(format!(
            "{:?} lacks {}",
            a,
            bad.join(", ")
        )));
    }
    Ok(())
}

fn device_info(cert: &Certificate) -> Result<Option<TpmDevice>, EkError> {
    let san: Option<SubjectAltName> = extension(cert, EXT_SUBJECT_ALT_NAME)?;
    let Some(san) = san else { return Ok(None) };
    let mut dev = TpmDevice::default();
    let mut found = false;
    for gn in &san.0 {
        let GeneralName::DirectoryName(name) = gn else {
            continue;
        };
        for rdn in &name.0 {
            for atv in rdn.0.iter() {
                let slot = match atv.oid {
                    TCG_AT_TPM_MANUFACTURER => &mut dev.manufacturer,
                    TCG_AT_TPM_MODEL => &mut dev.model,
                    TCG_AT_TPM_VERSION => &mut dev.version,
                    _ => continue,
                };
                *slot = String::from_utf8_lossy(atv.value.value()).into_owned();
                found = true;
            }
        }
    }
    Ok(found.then_some(dev))
}

/// Checks, without a chain, that `ek_cert_der` certifies the key of `ek` and that `ek` has an
/// EK's attributes (restricted decryption key, fixedTPM, fixedParent, sensitiveDataOrigin).
/// What a registrar checks before it challenges the EK with [`super::make_credential`]: the
/// challenge must go to the certified key. Whether the certificate is trustworthy is the
/// verifiers' question ([`verify_ek_certificate`] with their roots).
pub fn check_ek_certificate_key(ek_cert_der: &[u8], ek: &TpmtPublic) -> Result<(), EkError> {
    let leaf = parse_ek_certificate(ek_cert_der)?;
    check_ek_attributes(ek)?;
    check_key_matches(&leaf, ek)
}

/// Verifies an EK certificate (`ek_cert_der`, as read from NV; see [`parse_ek_certificate`])
/// against trusted `roots`, through untrusted `intermediates` (DER), and that it certifies the
/// EK whose public area is `ek` (untrusted input; the certificate authenticates it).
///
/// Checks: every signature up to a root; intermediates are CAs (basicConstraints cA, keyUsage
/// keyCertSign when present); no unknown critical extension; validity at `now_unix` (seconds
/// since the epoch) when given; the EK certificate is not a CA and, when it has an extended key
/// usage, that includes `tcg-kp-EKCertificate`; the EK's attributes are an EK's (restricted
/// decryption key, fixedTPM, fixedParent, sensitiveDataOrigin); its key equals the certified
/// key (RSA modulus and exponent, or ECC curve and point).
pub fn verify_ek_certificate(
    ek_cert_der: &[u8],
    intermediates: &[Vec<u8>],
    roots: &EkRoots,
    ek: &TpmtPublic,
    now_unix: Option<u64>,
) -> Result<VerifiedEk, EkError> {
    if roots.is_empty() {
        return Err(EkError::NoRoots);
    }
    let leaf = parse_ek_certificate(ek_cert_der)?;
    let inter: Vec<Certificate> = intermediates
        .iter()
        .enumerate()
        .map(|(i, d)| parse_cert(d, &format!("intermediate {}", i + 1)))
        .collect::<Result<_, _>>()?;

    check_extensions(&leaf)?;
    check_validity(&leaf, now_unix)?;
    let bc: Option<BasicConstraints> = extension(&leaf, EXT_BASIC_CONSTRAINTS)?;
    if bc.is_some_and(|b| b.ca) {
        return Err(EkError::EkIsCa);
    }
    let eku: Option<ExtendedKeyUsage> = extension(&leaf, EXT_EXTENDED_KEY_USAGE)?;
    if eku
        .as_ref()
        .is_some_and(|e| !e.0.contains(&TCG_KP_EK_CERTIFICATE))
    {
        return Err(EkError::WrongExtendedKeyUsage);
    }
    check_ek_attributes(ek)?;
    check_key_matches(&leaf, ek)?;
    let device = device_info(&leaf)?;

    // Walk up: at each step prefer a root (done), else an intermediate not yet used.
    let mut chain = vec![subject_of(&leaf)];
    let mut current = leaf;
    let mut used = vec![false; inter.len()];
    loop {
        if chain.len() > MAX_CHAIN {
            return Err(EkError::ChainTooLong);
        }
        let issuer_name = &current.tbs_certificate.issuer;
        let mut bad_sig = false;
        for root in roots
            .roots
            .iter()
            .filter(|r| r.tbs_certificate.subject == *issuer_name)
        {
            if verify_issued_by(&current, root)? {
                check_validity(root, now_unix)?;
                chain.push(subject_of(root));
                let name = ek.name();
                let qualified_name = ek.qualified_name(&Name::hierarchy(TPM_RH_ENDORSEMENT));
                return Ok(VerifiedEk {
                    public: ek.clone(),
                    name,
                    qualified_name,
                    device,
                    chain,
                    has_ek_eku: eku.is_some(),
                });
            }
            bad_sig = true;
        }
        let mut next = None;
        for (i, c) in inter.iter().enumerate() {
            if used[i] || c.tbs_certificate.subject != *issuer_name {
                continue;
            }
            if verify_issued_by(&current, c)? {
                next = Some(i);
                break;
            }
            bad_sig = true;
        }
        let Some(i) = next else {
            return Err(if bad_sig {
                EkError::BadChainSignature {
                    subject: subject_of(&current),
                    issuer: issuer_name.to_string(),
                }
            } else {
                EkError::UnknownIssuer {
                    subject: subject_of(&current),
                    issuer: issuer_name.to_string(),
                }
            });
        };
        used[i] = true;
        let c = inter[i].clone();
        check_extensions(&c)?;
        check_validity(&c, now_unix)?;
        check_is_ca(&c)?;
        chain.push(subject_of(&c));
        current = c;
    }
}
