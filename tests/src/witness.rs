//! A real `provenix witness` (C2SP tlog-witness) on a free loopback port.

use std::path::Path;
use std::process::Command;

use provenix_core::witness::CosignerVerifier;

use crate::service::Service;

/// Makes a witness key named `witness.example/w1` in `dir` and serves `provenix witness` for
/// the logs whose verifier keys are `log_keys`; returns the service and its cosigner key.
pub fn start(dir: &Path, log_keys: &[&str]) -> (Service, CosignerVerifier) {
    let (sec, public) = (dir.join("w.sec"), dir.join("w.pub"));
    let out = Command::new(crate::bin("provenix"))
        .args(["witness", "keygen", "witness.example/w1", "--secret-file"])
        .arg(&sec)
        .arg("--public-file")
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vkey: CosignerVerifier = std::fs::read_to_string(&public).unwrap().parse().unwrap();
    let mut cfg = format!(
        "key-file = {:?}\nlisten = \"127.0.0.1:0\"\nstate-dir = {:?}\n",
        sec,
        dir.join("wstate")
    );
    for k in log_keys {
        cfg.push_str(&format!("[[log]]\nkey = {k:?}\n"));
    }
    std::fs::write(dir.join("witness.toml"), cfg).unwrap();
    let mut c = Command::new(crate::bin("provenix"));
    c.args(["witness", "serve", "--config"])
        .arg(dir.join("witness.toml"));
    (Service::start(c), vkey)
}
