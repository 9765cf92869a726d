//! A real TPM 2.0 simulator for tests: swtpm over a state manufactured by `swtpm_setup` with
//! EK certificates from a local CA kept in a temp dir (`../shared/TPM-NOTES.md`). One swtpm
//! per test (it serves one client at a time), on a free port, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The tools a TPM test needs; [`tools_present`] checks them.
pub const TOOLS: [&str; 4] = ["swtpm", "swtpm_setup", "swtpm_localca", "tpm2_checkquote"];

/// Whether swtpm and its tools are present (else: panic under `PROVENIX_CI`, skip otherwise).
pub fn tools_present() -> bool {
    TOOLS.iter().all(|t| crate::require_tool(t))
}

fn which(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
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

/// A manufactured TPM state: EK certificates issued by a fresh local CA (root + intermediate).
#[derive(Debug)]
pub struct TpmState {
    pub dir: tempfile::TempDir,
}

impl TpmState {
    /// Runs `swtpm_setup` with a new local CA (about a second).
    pub fn new() -> Self {
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
                which("swtpm_localca").display(),
                p("localca.conf"),
                p("localca.options")
            ),
        )
        .unwrap();
        check(
            Command::new("swtpm_setup")
                .args(["--tpm2", "--tpm-state", &p("state")])
                .args(["--config", &p("setup.conf")])
                .args(["--createek", "--create-ek-cert", "--create-platform-cert"])
                .args(["--pcr-banks", "sha256"])
                .args(["--write-ek-cert-files", &p("ekcerts")])
                .arg("--overwrite")
                .output()
                .unwrap(),
            "swtpm_setup",
        );
        Self { dir }
    }

    /// A file in the state directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The local CA's self-signed root (PEM): what a trust file's `ek-roots` names.
    pub fn root_pem(&self) -> PathBuf {
        self.path("ca/swtpm-localca-rootca-cert.pem")
    }

    /// The intermediate CA that signed the EK certificates (PEM): a builder's
    /// `ek-intermediates`.
    pub fn intermediate_pem(&self) -> PathBuf {
        self.path("ca/issuercert.pem")
    }
}

impl Default for TpmState {
    fn default() -> Self {
        Self::new()
    }
}

/// A running swtpm over a manufactured state; killed on drop.
#[derive(Debug)]
pub struct Swtpm {
    pub state: TpmState,
    child: Child,
    pub port: u16,
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
    /// Manufactures a TPM and starts swtpm on it.
    pub fn start() -> Self {
        Self::start_on(TpmState::new())
    }

    /// Starts swtpm on `state`.
    pub fn start_on(state: TpmState) -> Self {
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

    /// The TCTI string (`[tpm] tcti`, `TPM2TOOLS_TCTI`).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Runs a tpm2-tools command against this TPM in `dir`.
    pub fn tool(&self, dir: &Path, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .args(args)
            .current_dir(dir)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap()
    }
}
