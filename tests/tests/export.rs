//! `provenix export` writes every entry for a path with C2SP tlog-proof receipts; the bundle's
//! envelopes verify with securesystemslib (DSSE) and parse under in-toto-attestation's strict
//! SLSA v1 models (PyPI), and `provenix verify-receipt` checks every receipt with the trust file
//! alone, with every log down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use provenix::logclient::LogClient;
use provenix_core::nix::NixSecretKey;
use provenix_core::receipt::TlogProof;
use provenix_core::witness::CosignerKey;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_e2e::{bin, gen, python, runtime, workspace};

fn provenix(args: &[&str]) -> Output {
    Command::new(bin("provenix"))
        .args(args)
        .env("PROVENIX_LOG", "warn")
        .output()
        .unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn hex_pub(k: &NixSecretKey) -> String {
    let s = k.public().to_string();
    hex::encode(
        base64::engine::general_purpose::STANDARD
            .decode(s.split_once(':').unwrap().1)
            .unwrap(),
    )
}

fn submit(log: &Provenixd, envs: &[Vec<u8>]) {
    let client = LogClient::new(&log.url, Duration::from_secs(10)).unwrap();
    let r = runtime().block_on(client.submit(envs, true)).unwrap();
    assert!(r.checkpoint.is_some());
}

fn log(dir: &Path, origin: &str, keys: &[&NixSecretKey], config: Option<&Path>) -> Provenixd {
    let opts = ServerOpts {
        origin: Some(origin.into()),
        config: config.map(Path::to_path_buf),
        ..ServerOpts::default()
    };
    for k in keys {
        add_builder(dir, &opts, &k.public().to_string());
    }
    Provenixd::start(dir, &opts)
}

#[test]
fn exported_bundles_verify_with_third_party_tools_and_receipts_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (alpha, beta) = (gen::builder_key("alpha"), gen::builder_key("beta"));
    // Log A is witnessed; log B is not.
    let a_key = provenix_core::checkpoint::LogSigner::generate("a.test").unwrap();
    std::fs::create_dir_all(d.join("a")).unwrap();
    std::fs::write(d.join("a/log.key"), a_key.secret_string()).unwrap();
    let (w, wkey) = provenix_e2e::witness::start(d, &[a_key.verifier_key()]);
    std::fs::write(
        d.join("a.toml"),
        format!("[[witness]]\nurl = {:?}\nkey = \"{wkey}\"\n", w.url),
    )
    .unwrap();
    let log_a = log(
        &d.join("a"),
        "a.test",
        &[&alpha, &beta],
        Some(&d.join("a.toml")),
    );
    let log_b = log(&d.join("b"), "b.test", &[&alpha], None);
    // alpha's entry is in both logs (one line, two receipts), beta's in A; an unrelated entry.
    let alpha_env = gen::signed(&alpha, 42, 42);
    submit(&log_a, &[gen::signed(&alpha, 1, 1), alpha_env.clone()]);
    submit(&log_a, &[gen::signed(&beta, 42, 42)]);
    submit(&log_b, std::slice::from_ref(&alpha_env));
    let path = gen::store_path(42, "pkg-42");

    let (a_url, a_key, b_url, b_key) = (
        log_a.url.clone(),
        log_a.verifier_key.clone(),
        log_b.url.clone(),
        log_b.verifier_key.clone(),
    );
    let trust_text = |witnesses: &str| {
        format!(
            "[[log]]\nurl = {:?}\nkey = {:?}\n{witnesses}\n[[log]]\nurl = {:?}\nkey = {:?}\n\n\
             [[builder]]\nname = \"alpha\"\nkey = {:?}\n[[builder]]\nname = \"beta\"\nkey = {:?}\n\
             [policy]\nthreshold = \"2 of [alpha, beta]\"\n",
            a_url,
            a_key,
            b_url,
            b_key,
            alpha.public().to_string(),
            beta.public().to_string()
        )
    };
    let trust = d.join("trust.toml");
    std::fs::write(
        &trust,
        trust_text(&format!("witnesses = [\"{wkey}\"]\nmin-witnesses = 1")),
    )
    .unwrap();
    let bundle = d.join("pkg-42.intoto.jsonl");
    let o = provenix(&[
        "export",
        "--config",
        trust.to_str().unwrap(),
        &path.to_string(),
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("2 entries for"),
        "{}",
        show(&o)
    );
    let text = std::fs::read_to_string(&bundle).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    // The envelope is the log leaf, byte for byte.
    assert_eq!(
        serde_json::to_vec(&lines[0]["dsseEnvelope"]).unwrap(),
        alpha_env
    );
    let receipts: Vec<&str> = lines[0]["tlogProofs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(receipts.len(), 2);
    let r0 = TlogProof::parse(receipts[0]).unwrap();
    assert!(receipts[0].starts_with("c2sp.org/tlog-proof@v1\nindex 1\n"));
    assert!(
        r0.checkpoint.starts_with("a.test\n3\n"),
        "{}",
        r0.checkpoint
    );
    assert!(
        r0.checkpoint.contains("\u{2014} witness.example/w1 "),
        "a witnessed log's receipt carries the cosignature: {}",
        r0.checkpoint
    );
    assert!(receipts[1].starts_with("c2sp.org/tlog-proof@v1\nindex 0\n\nb.test\n1\n"));

    // Third-party tools: DSSE with securesystemslib, SLSA v1 with in-toto-attestation.
    if let Some(py) = python() {
        let keys = d.join("keys.json");
        std::fs::write(
            &keys,
            serde_json::json!({"alpha": hex_pub(&alpha), "beta": hex_pub(&beta)}).to_string(),
        )
        .unwrap();
        let out = Command::new(&py)
            .arg(workspace().join("scripts/check_intoto.py"))
            .arg(&bundle)
            .arg(&keys)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("ok: 2 envelope(s)"),
            "{}",
            show(&out)
        );
        // The checker really checks the bundle's envelopes: a flipped signature bit fails.
        let mut bad: serde_json::Value = lines[1].clone();
        let sig = bad["dsseEnvelope"]["signatures"][0]["sig"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap();
        raw[7] ^= 1;
        bad["dsseEnvelope"]["signatures"][0]["sig"] =
            base64::engine::general_purpose::STANDARD.encode(raw).into();
        let badf = d.join("bad.intoto.jsonl");
        std::fs::write(&badf, format!("{bad}\n")).unwrap();
        let out = Command::new(&py)
            .arg(workspace().join("scripts/check_intoto.py"))
            .arg(&badf)
            .arg(&keys)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", show(&out));
    }

    // Every log and the witness down: the receipts verify with the trust file alone.
    drop((log_a, log_b, w));
    let o = provenix(&[
        "verify-receipt",
        "--config",
        trust.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("line 1: entry by alpha for"), "{out}");
    assert!(
        out.contains("receipt a.test #1: ok (checkpoint 3, cosigned by witness.example/w1)"),
        "{out}"
    );
    assert!(
        out.contains("receipt b.test #0: ok (checkpoint 1)"),
        "{out}"
    );
    assert!(out.contains("receipt a.test #2: ok"), "{out}");
    assert!(
        out.contains(&format!(
            "offline decision (receipts and signatures only): {path}: TRUSTED"
        )),
        "{out}"
    );
    assert!(out.contains("ok: 2 of 2 line(s) verified"), "{out}");

    // A receipt whose proof was altered, an envelope altered, a witness the checkpoint lacks.
    let mut tampered = lines.clone();
    let r = tampered[0]["tlogProofs"][1].as_str().unwrap().to_owned();
    tampered[0]["tlogProofs"][1] = r.replacen("index 0", "index 1", 1).into();
    let tf = d.join("tampered.intoto.jsonl");
    let write = |v: &[serde_json::Value]| {
        std::fs::write(&tf, v.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    };
    write(&tampered);
    let o = provenix(&[
        "verify-receipt",
        "--config",
        trust.to_str().unwrap(),
        tf.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(
            "receipt b.test #1: NOT OK: inclusion proof for index 1 in the checkpoint of size 1: leaf index 1 is not below tree size 1"
        ),
        "{}",
        show(&o)
    );
    let mut v: serde_json::Value = lines[1].clone();
    let other = serde_json::from_slice::<serde_json::Value>(&gen::signed(&beta, 42, 43)).unwrap();
    v["dsseEnvelope"] = other;
    write(&[v]);
    let o = provenix(&[
        "verify-receipt",
        "--config",
        trust.to_str().unwrap(),
        tf.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert!(
        j["lines"][0]["signatureError"].is_null(),
        "beta's signature is fine: {j:#}"
    );
    assert_eq!(
        j["lines"][0]["receipts"][0]["error"],
        "inclusion proof for index 2 in the checkpoint of size 3: proof does not verify"
    );
    let other_witness = CosignerKey::generate("witness.example/w2").unwrap();
    let strict = d.join("strict.toml");
    std::fs::write(
        &strict,
        trust_text(&format!(
            "witnesses = [\"{}\"]",
            other_witness.verifier_key()
        )),
    )
    .unwrap();
    let o = provenix(&[
        "verify-receipt",
        "--config",
        strict.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(
            "receipt a.test #1: NOT OK: checkpoint has 0 of the 1 witness cosignatures required"
        ),
        "{}",
        show(&o)
    );
    // Not a bundle at all: exit 2.
    std::fs::write(&tf, "").unwrap();
    let o = provenix(&[
        "verify-receipt",
        "--config",
        trust.to_str().unwrap(),
        tf.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}
