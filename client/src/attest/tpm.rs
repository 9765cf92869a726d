//! The TPM side of attestation (tss-esapi 7, needs libtss2): the EK from the standard
//! RSA-2048 template and its certificate (NV `0x01c00002`), an ECC P-256 ECDSA-SHA256 AK
//! under the EK (endorsement hierarchy, so the quote's clock fields are not obfuscated),
//! credential activation, and quotes.
//!
//! Without a resource manager (swtpm's socket, `/dev/tpm0`) a TPM has three object slots and
//! keeps objects across connections: every transient object and session made here is flushed
//! when [`Tpm`] is dropped (and sessions right after use).

use std::path::Path;
use std::str::FromStr as _;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provenix_core::tpm::{
    Attest as CoreAttest, HashAlg, PcrBankSelection, PcrBanks, PcrSelection, QuoteBundle,
    TpmtPublic,
};
use serde::{Deserialize, Serialize};
use tss_esapi::abstraction::ak::{create_ak_2, load_ak};
use tss_esapi::abstraction::ek::{create_ek_object_2, retrieve_ek_pubcert};
use tss_esapi::abstraction::{pcr, AsymmetricAlgorithmSelection};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, EncryptedSecret, IdObject, PcrSelectionList, PcrSlot, Private, Public, SignatureScheme,
    SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;

/// How often a quote is retried when the PCRs changed between reading them and quoting.
const QUOTE_ATTEMPTS: usize = 5;

/// The AK as kept on disk next to the builder key: its public area and its private part
/// (wrapped by the EK: useless outside that TPM). JSON, base64 fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AkFile {
    /// `TPMT_PUBLIC`.
    pub public: String,
    /// `TPM2B_PRIVATE` body.
    pub private: String,
    /// The AK's Name (hex), for operators who pin it in a trust file.
    pub name: String,
}

impl AkFile {
    /// Reads an AK file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the AK file {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not an AK file", path.display()))
    }

    /// Writes it (mode 0600, atomically).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// The AK's public area.
    pub fn public_area(&self) -> anyhow::Result<TpmtPublic> {
        TpmtPublic::parse(&STANDARD.decode(&self.public)?).context("AK file: public area")
    }
}

/// An open TPM with the EK loaded.
pub struct Tpm {
    ctx: Context,
    ek: KeyHandle,
    ak: Option<KeyHandle>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        if let Some(ak) = self.ak.take() {
            let _ = self.ctx.flush_context(ak.into());
        }
        let _ = self.ctx.flush_context(self.ek.into());
    }
}

fn ek_selection() -> AsymmetricAlgorithmSelection {
    AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048)
}

/// A policy session satisfying the EK's policy (PolicyA: PolicySecret on the endorsement
/// hierarchy), which `TPM2_ActivateCredential` and loading keys under the EK need.
fn ek_policy_session(ctx: &mut Context) -> anyhow::Result<AuthSession> {
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )?
        .context("the TPM started no session")?;
    let (attrs, mask) = SessionAttributesBuilder::new()
        .with_decrypt(true)
        .with_encrypt(true)
        .build();
    ctx.tr_sess_set_attributes(session, attrs, mask)?;
    let policy = PolicySession::try_from(session)?;
    let r = ctx.execute_with_nullauth_session(|c| {
        c.policy_secret(
            policy,
            AuthHandle::Endorsement,
            Default::default(),
            Default::default(),
            Default::default(),
            None,
        )
    });
    if let Err(e) = r {
        let _ = ctx.flush_context(SessionHandle::from(session).into());
        return Err(e.into());
    }
    Ok(session)
}

impl Tpm {
    /// Connects to the TPM named by a TCTI string and creates the EK from the standard
    /// RSA-2048 template (the key swtpm and TPM vendors certify at NV `0x01c00002`).
    pub fn open(tcti: &str) -> anyhow::Result<Self> {
        let conf = TctiNameConf::from_str(tcti).with_context(|| format!("TCTI {tcti:?}"))?;
        let mut ctx =
            Context::new(conf).with_context(|| format!("cannot open the TPM at {tcti}"))?;
        let ek = create_ek_object_2(&mut ctx, ek_selection(), None)
            .context("cannot create the EK (RSA-2048 template)")?;
        Ok(Self { ctx, ek, ak: None })
    }

    /// The EK's `TPMT_PUBLIC`.
    pub fn ek_public(&mut self) -> anyhow::Result<Vec<u8>> {
        let (public, _, _) = self.ctx.read_public(self.ek)?;
        Ok(public.marshall()?)
    }

    /// The EK certificate (DER, as stored in NV `0x01c00002`).
    pub fn ek_certificate(&mut self) -> anyhow::Result<Vec<u8>> {
        retrieve_ek_pubcert(&mut self.ctx, ek_selection())
            .context("cannot read the RSA EK certificate from NV index 0x01c00002")
    }

    /// Creates a new AK under the EK (ECC NIST P-256, ECDSA-SHA256, restricted, fixedTPM,
    /// fixedParent, sensitiveDataOrigin, userWithAuth with an empty auth value) and loads it.
    pub fn create_ak(&mut self) -> anyhow::Result<AkFile> {
        let created = create_ak_2(
            &mut self.ctx,
            self.ek,
            HashingAlgorithm::Sha256,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            SignatureSchemeAlgorithm::EcDsa,
            None,
            None,
        )
        .context("cannot create the AK")?;
        let public = created.out_public.marshall()?;
        let name = TpmtPublic::parse(&public)
            .context("the TPM's AK public area")?
            .name();
        let file = AkFile {
            public: STANDARD.encode(&public),
            private: STANDARD.encode(created.out_private.value()),
            name: name.to_string(),
        };
        self.load_ak(&file)?;
        Ok(file)
    }

    /// Loads a saved AK under the EK.
    pub fn load_ak(&mut self, file: &AkFile) -> anyhow::Result<()> {
        let public = Public::unmarshall(&STANDARD.decode(&file.public)?)?;
        let private = Private::try_from(STANDARD.decode(&file.private)?)?;
        if let Some(old) = self.ak.take() {
            let _ = self.ctx.flush_context(old.into());
        }
        let ak = load_ak(&mut self.ctx, self.ek, None, private, public)
            .context("cannot load the AK under the EK (another TPM, or the TPM was cleared?)")?;
        self.ak = Some(ak);
        Ok(())
    }

    /// `TPM2_ActivateCredential` with the loaded AK and the EK: the secret the registrar put in
    /// the credential.
    pub fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let ak = self.ak.context("no AK loaded")?;
        let blob = IdObject::try_from(credential_blob.to_vec())?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())?;
        let session = ek_policy_session(&mut self.ctx)?;
        let r = self
            .ctx
            .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
                c.activate_credential(ak, self.ek, blob, secret)
            });
        let _ = self.ctx.flush_context(SessionHandle::from(session).into());
        Ok(r.context("TPM2_ActivateCredential failed")?
            .value()
            .to_vec())
    }

    /// A quote by the loaded AK of `pcrs` (SHA-256 bank) with qualifying data `extra`, with
    /// the PCR values it covers. PCRs are read, then quoted; if they changed in between (the
    /// quote's pcrDigest does not match what was read) both are done again.
    pub fn quote(&mut self, extra: &[u8], pcrs: &[u8]) -> anyhow::Result<QuoteBundle> {
        let ak = self.ak.context("no AK loaded")?;
        let ak_public = self.ctx.read_public(ak)?.0.marshall()?;
        let mut slots = Vec::with_capacity(pcrs.len());
        for i in pcrs {
            slots.push(PcrSlot::try_from(1u32 << i)?);
        }
        let selection = PcrSelectionList::builder()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()?;
        let core_selection = PcrSelection {
            banks: vec![PcrBankSelection::new(HashAlg::Sha256, pcrs.iter().copied())],
        };
        for _ in 0..QUOTE_ATTEMPTS {
            let data = pcr::read_all(&mut self.ctx, selection.clone())?;
            let bank = data
                .pcr_bank(HashingAlgorithm::Sha256)
                .context("the TPM returned no SHA-256 bank")?;
            let mut values = PcrBanks::default();
            for (i, slot) in pcrs.iter().zip(&slots) {
                let d = bank
                    .get_digest(*slot)
                    .with_context(|| format!("no value for PCR {i}"))?;
                values.insert(HashAlg::Sha256, *i, d.value().to_vec());
            }
            let (attest, signature) = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.quote(
                        ak,
                        Data::try_from(extra.to_vec())?,
                        SignatureScheme::Null,
                        selection.clone(),
                    )
                })
                .context("TPM2_Quote failed")?;
            let attest = attest.marshall()?;
            let parsed = CoreAttest::parse(&attest).context("the TPM's TPMS_ATTEST")?;
            let expected = values.digest_for(&core_selection, HashAlg::Sha256)?;
            if parsed.quote.pcr_digest == expected {
                return Ok(QuoteBundle {
                    attest,
                    signature: signature.marshall()?,
                    ak_public: ak_public.clone(),
                    pcrs: values,
                    event_log_sha256: None,
                });
            }
            tracing::debug!("PCRs changed between reading and quoting; quoting again");
        }
        bail!("the PCRs kept changing while quoting ({QUOTE_ATTEMPTS} attempts)")
    }
}

/// Loads the AK from `path` (its private part is bound to this TPM's EK).
pub fn open_with_ak(tcti: &str, path: &Path) -> anyhow::Result<(Tpm, AkFile)> {
    let file = AkFile::read(path)?;
    let mut tpm = Tpm::open(tcti)?;
    tpm.load_ak(&file)?;
    Ok((tpm, file))
}
