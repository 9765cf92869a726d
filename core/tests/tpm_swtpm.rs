//! The quote verifier against a real TPM simulator: swtpm with an EK certificate from a local
//! CA, keys and quotes made by tpm2-tools. Each test starts its own swtpm (one client at a
//! time) on a free port and kills it on drop.
//!
//! Needs `swtpm`, `swtpm_setup`, `swtpm_localca` and tpm2-tools. Without them a test prints why
//! it skips, unless `PROVENIX_CI` is set, which turns the skip into a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use provenix_core::tpm::{
    check_clock_sequence, pem_certificates, verify_ek_certificate, verify_quote, verify_signature,
    AkTrust, Attest, EkError, EkRoots, HashAlg, Name, PcrAllowList, PcrBanks, PcrSelection,
    QuoteBundle, QuoteError, QuotePolicy, Signature, TpmtPublic, VerifiedEk, TPM_RH_ENDORSEMENT,
};
use sha2::{Digest, Sha256};

const TOOLS: [&str; 14] = [
    "swtpm",
    "swtpm_setup",
    "swtpm_localca",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_quote",
    "tpm2_nvread",
    "tpm2_readpublic",
    "tpm2_flushcontext",
    "tpm2_createprimary",
    "tpm2_create",
    "tpm2_load",
    "tpm2_sign",
    "tpm2_pcrextend",
];

/// The full path of `tool` on PATH.
fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether every tool is on PATH; otherwise skip (locally) or fail (CI).
fn tools_present() -> bool {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("PROVENIX_CI").is_some() {
        panic!("PROVENIX_CI is set and these tools are missing: {missing:?}");
    }
    eprintln!("SKIPPED: missing {missing:?} (install swtpm swtpm-tools tpm2-tools)");
    false
}

fn check(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A manufactured TPM state (EK certificates from a fresh local CA) in a temp dir.
struct TpmState {
    dir: tempfile::TempDir,
}

impl TpmState {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["ca", "state", "ekcerts"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let p = |s: &str| d.join(s).display().to_string();
        std::fs::write(
            d.join("localca.conf"),
            format!(
                "statedir = {}\nsigningkey = {}\nissuercert = {}\ncertserial = {}\n",
                p("ca"),
                p("ca/signkey.pem"),
                p("ca/issuercert.pem"),
                p("ca/certserial")
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("localca.options"),
            "--platform-manufacturer provenix-test\n--platform-version 2.1\n--platform-model swtpm\n",
        )
        .unwrap();
        std::fs::write(
            d.join("setup.conf"),
            format!(
                "create_certs_tool= {}\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                which("swtpm_localca").unwrap().display(),
                p("localca.conf"),
                p("localca.options")
            ),
        )
        .unwrap();
        check(
            Command::new("swtpm_setup")
                .args([
                    "--tpm2",
                    "--tpm-state",
                    &p("state"),
                    "--config",
                    &p("setup.conf"),
                ])
                .args(["--createek", "--create-ek-cert", "--create-platform-cert"])
                .args([
                    "--pcr-banks",
                    "sha256",
                    "--write-ek-cert-files",
                    &p("ekcerts"),
                ])
                .arg("--overwrite")
                .output()
                .unwrap(),
            "swtpm_setup",
        );
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn root_pem(&self) -> String {
        std::fs::read_to_string(self.path("ca/swtpm-localca-rootca-cert.pem")).unwrap()
    }

    fn intermediate_der(&self) -> Vec<u8> {
        let pem = std::fs::read_to_string(self.path("ca/issuercert.pem")).unwrap();
        pem_certificates(&pem).unwrap().remove(0)
    }
}

/// A running swtpm over a manufactured state; killed on drop.
struct Swtpm {
    state: TpmState,
    child: Child,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two consecutive free ports (server, control), found by binding to port 0.
fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

impl Swtpm {
    fn start() -> Self {
        let state = TpmState::new();
        // The ports are released before swtpm binds them, so another process may take one in
        // between: then swtpm exits and we try again with new ports.
        for _ in 0..10 {
            let port = free_port_pair();
            let log = std::fs::File::create(state.path("swtpm.log")).unwrap();
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2"])
                .arg("--tpmstate")
                .arg(format!("dir={}", state.path("state").display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // port taken: retry
                }
                if TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                    return Swtpm { state, child, port };
                }
                assert!(Instant::now() < deadline, "swtpm did not come up");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("could not start swtpm on a free port");
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .args(args)
            .current_dir(self.state.dir.path())
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .output()
            .unwrap()
    }

    /// Runs a tpm2-tools command that must succeed, then flushes transient objects (swtpm has
    /// three slots and no resource manager).
    fn tpm2(&self, tool: &str, args: &[&str]) -> Output {
        let out = check(self.run(tool, args), tool);
        check(self.run("tpm2_flushcontext", &["-t"]), "tpm2_flushcontext");
        out
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.state.path(rel)).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The RSA-2048 EK from the standard template (`tpm2_createek`) and its certificate from NV,
/// verified against swtpm's local CA.
fn rsa_ek(tpm: &Swtpm) -> VerifiedEk {
    tpm.tpm2(
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
    );
    tpm.tpm2(
        "tpm2_nvread",
        &["0x01c00002", "-C", "o", "-o", "ekcert.der"],
    );
    let (ek_public, _) = TpmtPublic::parse_tpm2b(&tpm.read("ek.pub")).unwrap();
    let roots = EkRoots::from_pem(&tpm.state.root_pem()).unwrap();
    verify_ek_certificate(
        &tpm.read("ekcert.der"),
        &[tpm.state.intermediate_der()],
        &roots,
        &ek_public,
        Some(now()),
    )
    .unwrap()
}

struct Ak {
    /// tpm2-tools' name of the signing scheme (`ecdsa`, `rsassa`, `rsapss`).
    scheme: String,
    public: TpmtPublic,
    public_bytes: Vec<u8>,
}

/// `tpm2_createak` under `parent` with key type, hash and scheme; checks our Name and
/// qualified name against the ones tpm2-tools prints.
fn create_ak(tpm: &Swtpm, parent: &str, ek: &VerifiedEk, alg: &str, scheme: &str) -> Ak {
    tpm.tpm2(
        "tpm2_createak",
        &[
            "-C", parent, "-c", "ak.ctx", "-G", alg, "-g", "sha256", "-s", scheme, "-u", "ak.pub",
            "-n", "ak.name", "-q", "ak.qname",
        ],
    );
    let file = tpm.read("ak.pub");
    let (public, inner) = TpmtPublic::parse_tpm2b(&file).unwrap();
    assert_eq!(public.name().as_bytes(), tpm.read("ak.name").as_slice());
    assert_eq!(
        public.qualified_name(&ek.qualified_name).as_bytes(),
        tpm.read("ak.qname").as_slice()
    );
    Ak {
        scheme: scheme.to_owned(),
        public_bytes: inner.to_vec(),
        public,
    }
}

/// `tpm2_quote` of the whole SHA-256 bank with qualifying data `nonce`.
fn quote(tpm: &Swtpm, ak: &Ak, nonce: &[u8]) -> QuoteBundle {
    tpm.tpm2(
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            "sha256:all",
            "-q",
            &hex::encode(nonce),
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-o",
            "pcrs.bin",
            "-F",
            "values",
            "-g",
            "sha256",
            "--scheme",
            &ak.scheme,
        ],
    );
    QuoteBundle {
        attest: tpm.read("quote.msg"),
        signature: tpm.read("quote.sig"),
        ak_public: ak.public_bytes.clone(),
        pcrs: PcrBanks::from_concatenated(
            &PcrSelection::full_bank(HashAlg::Sha256),
            &tpm.read("pcrs.bin"),
        )
        .unwrap(),
        event_log_sha256: None,
    }
}

/// swtpm's boot PCRs are zero (no firmware): a test policy must say so.
fn test_policy() -> QuotePolicy {
    QuotePolicy {
        allow_unmeasured_boot: true,
        ..QuotePolicy::default()
    }
}

fn trust(ek: &VerifiedEk, ak: &Ak) -> AkTrust {
    AkTrust {
        name: Some(ak.public.name()),
        parent: Some(ek.qualified_name.clone()),
        device: ek.device.clone(),
    }
}

#[test]
fn swtpm_quote_verifies_with_ek_chain() {
    if !tools_present() {
        return;
    }
    let tpm = Swtpm::start();
    let ek = rsa_ek(&tpm);
    let dev = ek.device.clone().unwrap();
    assert_eq!(
        (dev.manufacturer.as_str(), dev.model.as_str()),
        ("id:00001014", "swtpm")
    );
    assert!(ek.has_ek_eku);
    assert_eq!(ek.chain.len(), 3, "{:?}", ek.chain);
    assert_eq!(
        ek.qualified_name,
        ek.public
            .qualified_name(&Name::hierarchy(TPM_RH_ENDORSEMENT))
    );

    let ak = create_ak(&tpm, "ek.ctx", &ek, "ecc", "ecdsa");
    let nonce = digest("trace digest of some entry");
    let bundle = quote(&tpm, &ak, &nonce);
    let v = verify_quote(&bundle, &nonce, &trust(&ek, &ak), &test_policy()).unwrap();
    assert!(v.parent_checked && v.enrolled_name_checked);
    assert_eq!(v.attest.extra_data, nonce);
    assert!(v.attest.clock_info.safe);

    // The same quote through the entry's byproduct form.
    let back = QuoteBundle::from_descriptor(&bundle.to_descriptor()).unwrap();
    verify_quote(&back, &nonce, &trust(&ek, &ak), &test_policy()).unwrap();

    // A real policy refuses swtpm: its boot PCRs are all zero.
    assert_eq!(
        verify_quote(&bundle, &nonce, &trust(&ek, &ak), &QuotePolicy::default()).unwrap_err(),
        QuoteError::UnmeasuredBoot(HashAlg::Sha256)
    );
    // An AK under another parent: qualifiedSigner does not match.
    let wrong_parent = AkTrust {
        parent: Some(Name::hierarchy(TPM_RH_ENDORSEMENT)),
        ..trust(&ek, &ak)
    };
    assert_eq!(
        verify_quote(&bundle, &nonce, &wrong_parent, &test_policy())
            .unwrap_err()
            .code(),
        "qualified_signer_mismatch"
    );
}

#[test]
fn swtpm_rsa_aks_verify() {
    if !tools_present() {
        return;
    }
    let tpm = Swtpm::start();
    let ek = rsa_ek(&tpm);
    for scheme in ["rsassa", "rsapss"] {
        let ak = create_ak(&tpm, "ek.ctx", &ek, "rsa", scheme);
        let nonce = digest(scheme);
        let bundle = quote(&tpm, &ak, &nonce);
        verify_quote(&bundle, &nonce, &trust(&ek, &ak), &test_policy())
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
    }
}

#[test]
fn swtpm_ecc_p384_ek_verifies() {
    if !tools_present() {
        return;
    }
    let tpm = Swtpm::start();
    tpm.tpm2("tpm2_readpublic", &["-c", "0x81010016", "-o", "eccek.pub"]);
    tpm.tpm2(
        "tpm2_nvread",
        &["0x01c00016", "-C", "o", "-o", "eccekcert.der"],
    );
    let (ek_public, _) = TpmtPublic::parse_tpm2b(&tpm.read("eccek.pub")).unwrap();
    let roots = EkRoots::from_pem(&tpm.state.root_pem()).unwrap();
    let ek = verify_ek_certificate(
        &tpm.read("eccekcert.der"),
        &[tpm.state.intermediate_der()],
        &roots,
        &ek_public,
        Some(now()),
    )
    .unwrap();
    assert_eq!(ek.public.name_alg, HashAlg::Sha384);
    // The certificate does not certify the RSA EK.
    tpm.tpm2("tpm2_readpublic", &["-c", "0x81010001", "-o", "rsaek.pub"]);
    let (rsa_public, _) = TpmtPublic::parse_tpm2b(&tpm.read("rsaek.pub")).unwrap();
    assert_eq!(
        verify_ek_certificate(
            &tpm.read("eccekcert.der"),
            &[tpm.state.intermediate_der()],
            &roots,
            &rsa_public,
            Some(now()),
        )
        .unwrap_err(),
        EkError::KeyMismatch
    );
    // An AK under the persistent ECC EK: its qualified name goes through the SHA-384 EK.
    let ak = create_ak(&tpm, "0x81010016", &ek, "ecc", "ecdsa");
    let nonce = digest("p384");
    let bundle = quote(&tpm, &ak, &nonce);
    verify_quote(&bundle, &nonce, &trust(&ek, &ak), &test_policy()).unwrap();
}

#[test]
fn swtpm_wrong_root_ca_is_refused() {
    if !tools_present() {
        return;
    }
    let tpm = Swtpm::start();
    tpm.tpm2(
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
    );
    tpm.tpm2(
        "tpm2_nvread",
        &["0x01c00002", "-C", "o", "-o", "ekcert.der"],
    );
    let (ek_public, _) = TpmtPublic::parse_tpm2b(&tpm.read("ek.pub")).unwrap();
    let cert = tpm.read("ekcert.der");
    let inter = tpm.state.intermediate_der();

    // Another local CA: same root name ("swtpm-localca-rootca"), different key.
    let other = TpmState::new();
    let other_roots = EkRoots::from_pem(&other.root_pem()).unwrap();
    assert!(matches!(
        verify_ek_certificate(
            &cert,
            std::slice::from_ref(&inter),
            &other_roots,
            &ek_public,
            Some(now())
        )
        .unwrap_err(),
        EkError::BadChainSignature { .. }
    ));
    // Without the intermediate the chain does not reach the (right) root.
    let roots = EkRoots::from_pem(&tpm.state.root_pem()).unwrap();
    assert!(matches!(
        verify_ek_certificate(&cert, &[], &roots, &ek_public, Some(now())).unwrap_err(),
        EkError::UnknownIssuer { .. }
    ));
    // Outside the validity period.
    assert!(matches!(
        verify_ek_certificate(
            &cert,
            std::slice::from_ref(&inter),
            &roots,
            &ek_public,
            Some(1_000_000)
        )
        .unwrap_err(),
        EkError::Expired { .. }
    ));
    // The intermediate offered as the EK certificate: a CA.
    assert_eq!(
        verify_ek_certificate(&inter, &[], &roots, &ek_public, Some(now())).unwrap_err(),
        EkError::EkIsCa
    );
    // A truncated or extended certificate: refused, never a panic (zero padding is accepted,
    // as some TPMs store the certificate padded to the NV index size).
    for n in 0..cert.len() {
        assert!(verify_ek_certificate(&cert[..n], &[], &roots, &ek_public, None).is_err());
    }
    let mut padded = cert.clone();
    padded.extend([0u8; 64]);
    verify_ek_certificate(
        &padded,
        std::slice::from_ref(&inter),
        &roots,
        &ek_public,
        None,
    )
    .unwrap();
    padded.push(1);
    assert!(matches!(
        verify_ek_certificate(
            &padded,
            std::slice::from_ref(&inter),
            &roots,
            &ek_public,
            None
        )
        .unwrap_err(),
        EkError::Certificate { .. }
    ));
    // And the right root passes.
    verify_ek_certificate(&cert, &[inter], &roots, &ek_public, Some(now())).unwrap();
}

#[test]
fn swtpm_pcr_policy_and_extra_data_mismatches_are_refused() {
    if !tools_present() {
        return;
    }
    let tpm = Swtpm::start();
    let ek = rsa_ek(&tpm);
    let ak = create_ak(&tpm, "ek.ctx", &ek, "ecc", "ecdsa");
    // Make PCR 16 non-zero so the allow-list has something to compare.
    let extended = hex::encode(digest("measured thing"));
    tpm.tpm2("tpm2_pcrextend", &[&format!("16:sha256={extended}")]);
    let nonce = digest("entry A");
    let bundle = quote(&tpm, &ak, &nonce);
    let pcr16 = hex::encode(bundle.pcrs.get(HashAlg::Sha256, 16).unwrap());
    let zero = "00".repeat(32);

    let mut policy = test_policy();
    policy.pcr_allow_list = PcrAllowList::from_policy(
        [("0", zero.as_str()), ("16", pcr16.as_str())],
        HashAlg::Sha256,
    )
    .unwrap();
    verify_quote(&bundle, &nonce, &trust(&ek, &ak), &policy).unwrap();

    policy.pcr_allow_list =
        PcrAllowList::from_policy([("16", zero.as_str())], HashAlg::Sha256).unwrap();
    assert_eq!(
        verify_quote(&bundle, &nonce, &trust(&ek, &ak), &policy).unwrap_err(),
        QuoteError::PcrNotAllowed {
            hash: HashAlg::Sha256,
            index: 16,
            got: pcr16
        }
    );

    // The quote answers entry A; a verifier of entry B refuses it.
    let other = digest("entry B");
    assert_eq!(
        verify_quote(&bundle, &other, &trust(&ek, &ak), &test_policy()).unwrap_err(),
        QuoteError::ExtraDataMismatch {
            expected: hex::encode(other),
            got: hex::encode(nonce)
        }
    );

    // Claimed PCR values that differ from the quoted ones.
    let mut lying = bundle.clone();
    lying.pcrs.insert(HashAlg::Sha256, 16, vec![0u8; 32]);
    assert_eq!(
        verify_quote(&lying, &nonce, &trust(&ek, &ak), &test_policy()).unwrap_err(),
        QuoteError::PcrDigestMismatch
    );

    // The TPM clock orders quotes of one AK.
    let later = quote(&tpm, &ak, &nonce);
    let c1 = Attest::parse(&bundle.attest).unwrap().clock_info;
    let c2 = Attest::parse(&later.attest).unwrap().clock_info;
    check_clock_sequence([&c1, &c2]).unwrap();
    assert!(
        c2.clock > c1.clock
            || c2.reset_count > c1.reset_count
            || c2.restart_count > c1.restart_count
    );
    assert_eq!(check_clock_sequence([&c2, &c1]).unwrap_err().position, 1);
}

/// The case `tpm2_checkquote` gets wrong: an ordinary (unrestricted) signing key in the same
/// TPM signs a hand-made TPMS_ATTEST. The signature is valid; the AK attribute check refuses it.
#[test]
fn swtpm_forged_quote_from_unrestricted_key_is_refused() {
    if !tools_present() {
        return;
    }
    let tpm = Swtpm::start();
    let ek = rsa_ek(&tpm);
    let ak = create_ak(&tpm, "ek.ctx", &ek, "ecc", "ecdsa");
    let genuine = quote(&tpm, &ak, &digest("genuine"));

    tpm.tpm2(
        "tpm2_createprimary",
        &["-C", "o", "-g", "sha256", "-G", "ecc", "-c", "primary.ctx"],
    );
    tpm.tpm2(
        "tpm2_create",
        &[
            "-C",
            "primary.ctx",
            "-G",
            "ecc256:ecdsa-sha256",
            "-u",
            "key.pub",
            "-r",
            "key.priv",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
        ],
    );
    tpm.tpm2(
        "tpm2_load",
        &[
            "-C",
            "primary.ctx",
            "-u",
            "key.pub",
            "-r",
            "key.priv",
            "-c",
            "key.ctx",
        ],
    );
    let key_file = tpm.read("key.pub");
    let (key, key_bytes) = TpmtPublic::parse_tpm2b(&key_file).unwrap();
    assert!(!key.attributes.restricted());

    // Forge: claim arbitrary PCR values (here: PCR 0 = a "measured" value) for our nonce.
    let nonce = digest("forged entry");
    let mut pcrs = genuine.pcrs.clone();
    pcrs.insert(
        HashAlg::Sha256,
        0,
        digest("a firmware that never ran").to_vec(),
    );
    let mut attest = Attest::parse(&genuine.attest).unwrap();
    attest.extra_data = nonce.to_vec();
    attest.quote.pcr_digest = pcrs
        .digest_for(&attest.quote.pcr_select, HashAlg::Sha256)
        .unwrap();
    attest.qualified_signer = key.name();
    std::fs::write(tpm.state.path("forged.msg"), attest.marshal()).unwrap();

    // The real AK (restricted) refuses to sign it: it starts with TPM_GENERATED_VALUE.
    let refused = tpm.run(
        "tpm2_sign",
        &[
            "-c",
            "ak.ctx",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-o",
            "ak-forged.sig",
            "forged.msg",
        ],
    );
    assert!(
        !refused.status.success(),
        "a restricted AK signed external TPM_GENERATED data"
    );
    check(tpm.run("tpm2_flushcontext", &["-t"]), "tpm2_flushcontext");

    // The unrestricted key signs it.
    tpm.tpm2(
        "tpm2_sign",
        &[
            "-c",
            "key.ctx",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-o",
            "forged.sig",
            "forged.msg",
        ],
    );
    let forged = QuoteBundle {
        attest: tpm.read("forged.msg"),
        signature: tpm.read("forged.sig"),
        ak_public: key_bytes.to_vec(),
        pcrs,
        event_log_sha256: None,
    };
    // A naive verifier (signature + digest) would accept it:
    let sig = Signature::parse(&forged.signature).unwrap();
    verify_signature(&key, &forged.attest, &sig).unwrap();
    // Ours refuses it for the key's attributes, even without an enrolled Name to compare.
    let policy = test_policy();
    assert_eq!(
        verify_quote(&forged, &nonce, &AkTrust::default(), &policy).unwrap_err(),
        QuoteError::AkNotRestricted
    );
    // And with enrollment, the genuine AK's Name does not match either.
    let mut unrestricted_but_enrolled = forged.clone();
    unrestricted_but_enrolled.ak_public = ak.public_bytes.clone();
    assert_eq!(
        verify_quote(
            &unrestricted_but_enrolled,
            &nonce,
            &trust(&ek, &ak),
            &policy
        )
        .unwrap_err(),
        QuoteError::BadSignature
    );
}

/// Activates a credential file with tpm2-tools: a policy session satisfying the EK's policy
/// (PolicySecret on the endorsement hierarchy), then `tpm2_activatecredential`.
fn activate(tpm: &Swtpm, cred_file: &str) -> Result<Vec<u8>, String> {
    let _ = std::fs::remove_file(tpm.state.path("actcred.bin"));
    check(
        tpm.run(
            "tpm2_startauthsession",
            &["--policy-session", "-S", "session.ctx"],
        ),
        "tpm2_startauthsession",
    );
    check(
        tpm.run("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"]),
        "tpm2_policysecret",
    );
    let out = tpm.run(
        "tpm2_activatecredential",
        &[
            "-c",
            "ak.ctx",
            "-C",
            "ek.ctx",
            "-i",
            cred_file,
            "-o",
            "actcred.bin",
            "-P",
            "session:session.ctx",
        ],
    );
    check(
        tpm.run("tpm2_flushcontext", &["session.ctx"]),
        "tpm2_flushcontext session",
    );
    check(tpm.run("tpm2_flushcontext", &["-t"]), "tpm2_flushcontext");
    if out.status.success() {
        Ok(tpm.read("actcred.bin"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Our pure-Rust `TPM2_MakeCredential` against the real thing: swtpm's
/// `TPM2_ActivateCredential` (through tpm2-tools) recovers the secret only with the AK it was
/// made for; the file format is the one `tpm2_makecredential` writes.
#[test]
fn swtpm_activates_our_make_credential() {
    if !tools_present() {
        return;
    }
    let tpm = Swtpm::start();
    let ek = rsa_ek(&tpm);
    let ak = create_ak(&tpm, "ek.ctx", &ek, "ecc", "ecdsa");
    let secret = digest("the registrar's secret");
    let made = provenix_core::tpm::make_credential(
        &ek.public,
        &ak.public.name(),
        &secret,
        &mut rand_core::OsRng,
    )
    .unwrap();
    std::fs::write(tpm.state.path("cred.bin"), made.to_tpm2_tools_file()).unwrap();
    assert_eq!(activate(&tpm, "cred.bin").unwrap(), secret);

    // Our file layout is tpm2_makecredential's (made offline, `-T none`, for the same EK and
    // Name): same header, same sizes (the contents are randomised by the seed).
    check(
        Command::new("tpm2_makecredential")
            .current_dir(tpm.state.dir.path())
            .args(["-T", "none", "-u", "ek.pub", "-s", "-", "-n"])
            .arg(hex::encode(ak.public.name().as_bytes()))
            .args(["-o", "theirs.bin"])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(&secret)?;
                c.wait_with_output()
            })
            .unwrap(),
        "tpm2_makecredential",
    );
    let theirs = tpm.read("theirs.bin");
    let ours = made.to_tpm2_tools_file();
    assert_eq!(theirs.len(), ours.len());
    assert_eq!(theirs[..10], ours[..10], "header and ID object size");
    assert_eq!(activate(&tpm, "theirs.bin").unwrap(), secret);

    // Made for another Name (here the EK's), the TPM refuses: the AK is not that object.
    let other = provenix_core::tpm::make_credential(
        &ek.public,
        &ek.public.name(),
        &secret,
        &mut rand_core::OsRng,
    )
    .unwrap();
    std::fs::write(tpm.state.path("other.bin"), other.to_tpm2_tools_file()).unwrap();
    let err = activate(&tpm, "other.bin").unwrap_err();
    assert!(err.contains("integrity") || err.contains("0x"), "{err}");
}
