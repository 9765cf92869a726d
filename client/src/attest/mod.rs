//! `provenix attest`: TPM 2.0 remote attestation of a builder (`docs/attestation.md`).
//!
//! `provenix attest enroll --config builder.toml` creates the builder's attestation key (AK)
//! under the TPM's endorsement key (EK) — or reuses the one in `[tpm] ak-file` — and enrolls
//! it with every log of the builder: the log challenges the EK for the AK's Name
//! (`TPM2_MakeCredential`), the TPM answers (`TPM2_ActivateCredential`), the builder binds its
//! Ed25519 key to the AK both ways, and the log appends an enrollment record to itself. After
//! that, `provenix push` adds a quote by this AK to every entry (`Quoter`, with the feature).
//!
//! The TPM parts need the `tpm` cargo feature (tss-esapi, libtss2); without it these commands
//! explain that and fail.

#[cfg(feature = "tpm")]
pub mod tpm;

use std::path::PathBuf;
use std::process::ExitCode;

/// `provenix attest …`.
#[derive(clap::Subcommand, Debug)]
pub enum AttestCommand {
    /// Create the AK under the EK (or reuse the saved one) and enroll it with every log of
    /// builder.toml; prints the AK's Name (for `ak-name` in trust files).
    Enroll {
        /// The builder config (builder.toml) with a `[tpm]` table.
        #[arg(long, env = "PROVENIX_CONFIG")]
        config: PathBuf,
        /// Make a new AK even if `ak-file` exists (the old one stays enrolled in the logs).
        #[arg(long)]
        new_ak: bool,
    },
}

/// Runs `provenix attest`.
pub fn run(cmd: &AttestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AttestCommand::Enroll { config, new_ak } => {
            #[cfg(feature = "tpm")]
            {
                enabled::enroll(config, *new_ak)
            }
            #[cfg(not(feature = "tpm"))]
            {
                let _ = (config, new_ak);
                Err(anyhow::anyhow!(NO_TPM_FEATURE))
            }
        }
    }
}

/// Why TPM commands fail in a build without the `tpm` feature.
pub const NO_TPM_FEATURE: &str = "this provenix was built without the `tpm` feature (TPM 2.0 support needs libtss2): rebuild with `--features tpm`";

#[cfg(feature = "tpm")]
pub use enabled::*;

#[cfg(feature = "tpm")]
mod enabled {
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use anyhow::{bail, Context as _};
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use provenix_core::api::ErrorResponse;
    use provenix_core::enrollment::{
        binding_digest, builder_binding_message, challenge_request_message, pem_ders,
        ChallengeRequest, ChallengeResponse, DecodedChallengeRequest, EnrollRequest,
        EnrollResponse, NONCE_BYTES,
    };
    use provenix_core::nix::NixSecretKey;
    use provenix_core::tpm::{QuoteBundle, TpmtPublic};

    use super::tpm::{AkFile, Tpm};
    use crate::builder_config::{BuilderConfig, TpmConfig};

    fn tpm_config(cfg: &BuilderConfig) -> anyhow::Result<&TpmConfig> {
        cfg.tpm
            .as_ref()
            .context("the builder config has no [tpm] table (tcti = …)")
    }

    async fn post<Q: serde::Serialize, R: serde::de::DeserializeOwned>(
        http: &reqwest::Client,
        url: &str,
        body: &Q,
    ) -> anyhow::Result<R> {
        let resp = http
            .post(url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            if let Ok(e) = serde_json::from_slice::<ErrorResponse>(&bytes) {
                bail!("{url}: {status}: {}: {}", e.error.code, e.error.message);
            }
            bail!("{url}: {status}");
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{url}: unexpected answer"))
    }

    /// What was enrolled with one log.
    #[derive(Debug)]
    pub struct Enrolled {
        pub log: String,
        pub index: u64,
        pub duplicate: bool,
    }

    /// Enrolls the loaded AK of `tpm` with the log at `base` (the whole registrar protocol).
    #[allow(clippy::too_many_arguments)]
    pub fn enroll_with_log(
        rt: &tokio::runtime::Runtime,
        http: &reqwest::Client,
        base: &str,
        tpm: &mut Tpm,
        key: &NixSecretKey,
        tpm_cfg: &TpmConfig,
        ak: &AkFile,
        intermediates: &[Vec<u8>],
    ) -> anyhow::Result<Enrolled> {
        let base = base.trim_end_matches('/');
        let ek_public_bytes = tpm.ek_public()?;
        let ek_public = TpmtPublic::parse(&ek_public_bytes).context("the TPM's EK public area")?;
        let ak_public_bytes = STANDARD.decode(&ak.public)?;
        let ak_public = TpmtPublic::parse(&ak_public_bytes).context("AK file: public area")?;
        let mut decoded = DecodedChallengeRequest {
            builder: key.name().to_owned(),
            ek_certificate: tpm.ek_certificate()?,
            ek_intermediates: intermediates.to_vec(),
            ek_public_bytes,
            ek_public: ek_public.clone(),
            ak_public_bytes,
            ak_public: ak_public.clone(),
            signature: Vec::new(),
        };
        decoded.signature = key.sign(&challenge_request_message(&decoded)).to_vec();
        let req = ChallengeRequest {
            builder: decoded.builder.clone(),
            ek_certificate: STANDARD.encode(&decoded.ek_certificate),
            ek_intermediates: intermediates.iter().map(|c| STANDARD.encode(c)).collect(),
            ek_public: STANDARD.encode(&decoded.ek_public_bytes),
            ak_public: STANDARD.encode(&decoded.ak_public_bytes),
            signature: STANDARD.encode(&decoded.signature),
        };
        let ch: ChallengeResponse =
            rt.block_on(post(http, &format!("{base}/v1/attest/challenge"), &req))?;
        let secret = tpm.activate_credential(
            &STANDARD.decode(&ch.credential_blob)?,
            &STANDARD.decode(&ch.encrypted_secret)?,
        )?;
        let mut nonce = [0u8; NONCE_BYTES];
        hex::decode_to_slice(&ch.nonce, &mut nonce).context("the log's nonce")?;
        let binding: QuoteBundle =
            tpm.quote(&binding_digest(&key.public(), &nonce), &tpm_cfg.pcrs)?;
        let signature = key.sign(&builder_binding_message(
            key.name(),
            &ak_public.name(),
            &ek_public.name(),
            &nonce,
        ));
        let req = EnrollRequest {
            challenge_id: ch.challenge_id,
            secret: STANDARD.encode(&secret),
            binding_quote: binding.to_descriptor(),
            builder_signature: STANDARD.encode(signature),
        };
        let done: EnrollResponse =
            rt.block_on(post(http, &format!("{base}/v1/attest/enroll"), &req))?;
        Ok(Enrolled {
            log: base.to_owned(),
            index: done.index,
            duplicate: done.duplicate,
        })
    }

    fn read_intermediates(path: Option<&Path>) -> anyhow::Result<Vec<Vec<u8>>> {
        let Some(p) = path else {
            return Ok(Vec::new());
        };
        let pem = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read tpm.ek-intermediates {}", p.display()))?;
        let ders = pem_ders(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        if ders.is_empty() {
            bail!("{}: no CERTIFICATE block", p.display());
        }
        Ok(ders)
    }

    pub(super) fn enroll(config: &Path, new_ak: bool) -> anyhow::Result<ExitCode> {
        let cfg = BuilderConfig::from_file(config)?;
        let key = cfg.read_key()?;
        let tpm_cfg = tpm_config(&cfg)?;
        let ak_path: PathBuf = tpm_cfg.ak_path(&cfg.key_file);
        let intermediates = read_intermediates(tpm_cfg.ek_intermediates.as_deref())?;
        let mut tpm = Tpm::open(&tpm_cfg.tcti)?;
        let ak = if ak_path.exists() && !new_ak {
            let f = AkFile::read(&ak_path)?;
            tpm.load_ak(&f)?;
            f
        } else {
            let f = tpm.create_ak()?;
            f.write(&ak_path)?;
            f
        };
        println!("provenix attest: AK {} ({})", ak.name, ak_path.display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let http = crate::logclient::http_client(cfg.push.timeout());
        let mut failed = 0;
        for log in &cfg.logs {
            match enroll_with_log(
                &rt,
                &http,
                log,
                &mut tpm,
                &key,
                tpm_cfg,
                &ak,
                &intermediates,
            ) {
                Ok(e) => println!(
                    "provenix attest: enrolled with {} at index {}{}",
                    e.log,
                    e.index,
                    if e.duplicate { " (already there)" } else { "" }
                ),
                Err(e) => {
                    failed += 1;
                    eprintln!("provenix attest: enrollment with {log} failed: {e:#}");
                }
            }
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// Quotes entries for `push`: the TPM and AK of `[tpm]`, opened on first use and kept
    /// open (one client at a time: quotes are serialised through the TPM).
    pub struct Quoter {
        tcti: String,
        ak_path: PathBuf,
        pcrs: Vec<u8>,
        tpm: Option<Tpm>,
    }

    impl std::fmt::Debug for Quoter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Quoter")
                .field("tcti", &self.tcti)
                .field("ak", &self.ak_path)
                .finish()
        }
    }

    impl Quoter {
        /// The quoter of a builder config's `[tpm]` table.
        pub fn new(cfg: &TpmConfig, key_file: &Path) -> Self {
            Self {
                tcti: cfg.tcti.clone(),
                ak_path: cfg.ak_path(key_file),
                pcrs: cfg.pcrs.clone(),
                tpm: None,
            }
        }

        /// One quote per digest (each an entry's trace digest), in order. On any error the TPM
        /// is closed (and reopened on the next call).
        pub fn quote_all(&mut self, digests: &[[u8; 32]]) -> anyhow::Result<Vec<QuoteBundle>> {
            let r = self.try_quote_all(digests);
            if r.is_err() {
                self.tpm = None;
            }
            r
        }

        fn try_quote_all(&mut self, digests: &[[u8; 32]]) -> anyhow::Result<Vec<QuoteBundle>> {
            if self.tpm.is_none() {
                if !self.ak_path.exists() {
                    bail!(
                        "no AK at {}: run `provenix attest enroll` first",
                        self.ak_path.display()
                    );
                }
                let (tpm, _) = super::tpm::open_with_ak(&self.tcti, &self.ak_path)?;
                self.tpm = Some(tpm);
            }
            let tpm = self.tpm.as_mut().context("TPM not open")?;
            digests.iter().map(|d| tpm.quote(d, &self.pcrs)).collect()
        }
    }
}
