//! `TPM2_MakeCredential` in pure Rust: what a registrar runs to challenge a TPM.
//!
//! The registrar (here: the log, at enrollment) encrypts a random secret so that only the TPM
//! holding the EK's private key can recover it, and only by `TPM2_ActivateCredential` with the
//! object whose Name it was made for loaded in that same TPM. Getting the secret back proves
//! both: the AK lives in the TPM of this EK (TPM 2.0 Part 1 §24, "Credential Protection";
//! Part 3 `TPM2_MakeCredential`).
//!
//! For an RSA EK (the kind this implementation supports; swtpm certifies an RSA-2048 EK):
//!
//! ```text
//! seed          = random, |H_nameAlg(EK)| bytes
//! secret        = RSA-OAEP(EK public key, hash = nameAlg(EK), label = "IDENTITY\0", seed)
//! symKey        = KDFa(nameAlg, seed, "STORAGE", Name(AK), "", EK symmetric key bits)
//! encIdentity   = AES-CFB(symKey, IV = 0, TPM2B_DIGEST(credential))
//! hmacKey       = KDFa(nameAlg, seed, "INTEGRITY", "", "", |H_nameAlg| * 8)
//! outerHMAC     = HMAC_nameAlg(hmacKey, encIdentity ‖ Name(AK))
//! credentialBlob = TPM2B_DIGEST(outerHMAC) ‖ encIdentity            (the TPM2B_ID_OBJECT body)
//! ```
//!
//! `KDFa` is SP 800-108 in counter mode with HMAC: blocks `HMAC(key, [i]₃₂ ‖ label ‖ 0x00 ‖
//! contextU ‖ contextV ‖ [bits]₃₂)` for i = 1, 2, … truncated to `bits`.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;

use super::alg::{HashAlg, TPM_ALG_AES, TPM_ALG_CFB};
use super::public::{Name, PublicKey, TpmtPublic};
use super::wire::Put;

/// Why a credential could not be made for an EK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the EK is not an RSA key; only RSA EKs can be challenged here")]
    NotRsa,
    #[error("the EK is not a restricted decryption key")]
    NotStorageKey,
    #[error("the EK's symmetric algorithm must be AES-128 or AES-256 in CFB mode")]
    UnsupportedSymmetric,
    #[error("the credential is {got} bytes; at most {max} (the EK's nameAlg digest size)")]
    CredentialSize { got: usize, max: usize },
    #[error("RSA encryption of the seed failed: {0}")]
    Rsa(String),
}

/// The two halves of a challenge the TPM's `TPM2_ActivateCredential` takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MadeCredential {
    /// Body of the `TPM2B_ID_OBJECT` (without its u16 size): `TPM2B_DIGEST(outerHMAC) ‖
    /// encIdentity`.
    pub credential_blob: Vec<u8>,
    /// Body of the `TPM2B_ENCRYPTED_SECRET` (without its u16 size): the OAEP-encrypted seed.
    pub encrypted_secret: Vec<u8>,
}

impl MadeCredential {
    /// The file `tpm2_makecredential -o` writes and `tpm2_activatecredential -i` reads:
    /// magic `0xBADCC0DE`, version 1, then both halves as `TPM2B`s (all big-endian).
    pub fn to_tpm2_tools_file(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u32(0xBADC_C0DE);
        out.put_u32(1);
        out.put_tpm2b(&self.credential_blob);
        out.put_tpm2b(&self.encrypted_secret);
        out
    }
}

fn hmac_parts(alg: HashAlg, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC takes keys of any length.
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| <M as hmac::digest::KeyInit>::new(&Default::default()));
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }
    match alg {
        HashAlg::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        HashAlg::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        HashAlg::Sha384 => run::<Hmac<sha2::Sha384>>(key, parts),
        HashAlg::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// `KDFa(hash, key, label, contextU, contextV, bits)` of TPM 2.0 Part 1 §11.4.10.2 (SP 800-108
/// counter mode, HMAC). `label` is given without its terminating zero, which is added here.
/// `bits` must be a multiple of 8.
pub fn kdfa(
    alg: HashAlg,
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let bytes = (bits / 8) as usize;
    let mut out = Vec::with_capacity(bytes + alg.size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend(hmac_parts(
            alg,
            key,
            &[
                &counter.to_be_bytes(),
                label.as_bytes(),
                &[0],
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        ));
        counter += 1;
    }
    out.truncate(bytes);
    out
}

fn aes_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), CredentialError> {
    let iv = [0u8; 16];
    match key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
            .map_err(|_| CredentialError::UnsupportedSymmetric)?
            .encrypt(data),
        32 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .map_err(|_| CredentialError::UnsupportedSymmetric)?
            .encrypt(data),
        _ => return Err(CredentialError::UnsupportedSymmetric),
    }
    Ok(())
}

fn oaep_encrypt(
    alg: HashAlg,
    key: &rsa::RsaPublicKey,
    rng: &mut impl CryptoRngCore,
    msg: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    const LABEL: &str = "IDENTITY\0";
    let padding = match alg {
        HashAlg::Sha1 => rsa::Oaep::new_with_label::<sha1::Sha1, _>(LABEL),
        HashAlg::Sha256 => rsa::Oaep::new_with_label::<sha2::Sha256, _>(LABEL),
        HashAlg::Sha384 => rsa::Oaep::new_with_label::<sha2::Sha384, _>(LABEL),
        HashAlg::Sha512 => rsa::Oaep::new_with_label::<sha2::Sha512, _>(LABEL),
    };
    key.encrypt(rng, padding, msg)
        .map_err(|e| CredentialError::Rsa(e.to_string()))
}

/// `TPM2_MakeCredential(ek, credential, object_name)`: a challenge that only the TPM holding
/// `ek`'s private key can answer, by activating it with the object named `object_name`.
///
/// `ek` is the EK's public area (its key must be the one an EK certificate certifies: check
/// that first, e.g. with [`super::check_ek_certificate_key`]); `object_name` is the AK's Name;
/// `credential` is the secret (at most the digest size of the EK's nameAlg). `rng` supplies the
/// seed and the OAEP randomness.
pub fn make_credential(
    ek: &TpmtPublic,
    object_name: &Name,
    credential: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<MadeCredential, CredentialError> {
    let PublicKey::Rsa {
        symmetric,
        exponent,
        modulus,
        ..
    } = &ek.key
    else {
        return Err(CredentialError::NotRsa);
    };
    if !ek.attributes.restricted() || !ek.attributes.decrypt() {
        return Err(CredentialError::NotStorageKey);
    }
    let sym = symmetric.ok_or(CredentialError::UnsupportedSymmetric)?;
    if sym.algorithm != TPM_ALG_AES || sym.mode != TPM_ALG_CFB || !matches!(sym.key_bits, 128 | 256)
    {
        return Err(CredentialError::UnsupportedSymmetric);
    }
    let alg = ek.name_alg;
    if credential.len() > alg.size() {
        return Err(CredentialError::CredentialSize {
            got: credential.len(),
            max: alg.size(),
        });
    }
    let e = if *exponent == 0 { 65_537 } else { *exponent };
    let key = rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(modulus), rsa::BigUint::from(e))
        .map_err(|err| CredentialError::Rsa(err.to_string()))?;

    let mut seed = vec![0u8; alg.size()];
    rng.fill_bytes(&mut seed);
    let encrypted_secret = oaep_encrypt(alg, &key, rng, &seed)?;

    let name = object_name.as_bytes();
    let sym_key = kdfa(alg, &seed, "STORAGE", name, &[], u32::from(sym.key_bits));
    let mut enc_identity = Vec::with_capacity(credential.len() + 2);
    enc_identity.put_tpm2b(credential);
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;
    let hmac_key = kdfa(alg, &seed, "INTEGRITY", &[], &[], (alg.size() * 8) as u32);
    let outer_hmac = hmac_parts(alg, &hmac_key, &[&enc_identity, name]);

    let mut credential_blob = Vec::with_capacity(2 + outer_hmac.len() + enc_identity.len());
    credential_blob.put_tpm2b(&outer_hmac);
    credential_blob.extend_from_slice(&enc_identity);
    Ok(MadeCredential {
        credential_blob,
        encrypted_secret,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kdfa_is_sp800_108_counter_mode_with_a_zero_after_the_label() {
        // Recomputed by hand: one block, i = 1, bits = 128.
        let key = [7u8; 32];
        let got = kdfa(HashAlg::Sha256, &key, "STORAGE", b"name", b"", 128);
        let mut m = <Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(&key).unwrap();
        m.update(&1u32.to_be_bytes());
        m.update(b"STORAGE\0name");
        m.update(&128u32.to_be_bytes());
        assert_eq!(got, m.finalize().into_bytes()[..16].to_vec());
        // Two blocks for more bits than one digest; the second block has i = 2.
        let long = kdfa(HashAlg::Sha256, &key, "X", b"", b"", 384);
        assert_eq!(long.len(), 48);
        let mut m = <Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(&key).unwrap();
        m.update(&2u32.to_be_bytes());
        m.update(b"X\0");
        m.update(&384u32.to_be_bytes());
        assert_eq!(long[32..], m.finalize().into_bytes()[..16]);
    }
}
