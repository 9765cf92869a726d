//! Issue 5 end to end: TPM 2.0 remote attestation of a builder with real parts only — swtpm
//! with an EK certificate from a local CA, a real `provenixd` acting as registrar, a real Nix
//! builder whose `builder.toml` has `[tpm]`, `provenix attest enroll`, `provenix push`, and the
//! real substituter with `require-attestation`. Cross-check: `tpm2_checkquote` accepts a quote
//! our producer made.
//!
//! Needs nix-build, swtpm, swtpm-tools, tpm2-tools and a `provenix` built with `--features tpm`
//! (`scripts/test.sh` builds with `--all-features`). With `PROVENIX_CI=1` a missing piece fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use provenix::logclient::LogClient;
use provenix_core::entry::{Entry, NixBuild, Output as BuildOutput, TPM_QUOTE_BYPRODUCT};
use provenix_core::nix::{NixSecretKey, StorePath};
use provenix_core::tpm::{Attest, QuoteBundle, TpmtPublic};
use provenix_e2e::nix::{show, unique, Builder, Store};
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_e2e::substituter::{client_build, copy_to_cache, proxy_key, Proxy, StaticServer};
use provenix_e2e::swtpm::{Swtpm, TpmState};
use provenix_e2e::{bin, ci, require_tool};
use provenix_e2e::{get, rt};

/// Whether this `provenix` has the `tpm` feature (else: fail in CI, skip otherwise).
fn attest_built() -> bool {
    let out = Command::new(bin("provenix"))
        .args(["attest", "enroll", "--config", "/nonexistent/builder.toml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    if text.contains("without the `tpm` feature") {
        assert!(
            !ci(),
            "PROVENIX_CI is set but provenix was built without --features tpm"
        );
        eprintln!("SKIP: provenix built without the `tpm` feature (cargo build --all-features)");
        return false;
    }
    true
}

fn tools() -> bool {
    require_tool("nix-build") && provenix_e2e::swtpm::tools_present() && attest_built()
}

/// `only` is built outside the spool (its entry is made by hand); `top` depends on `dep`.
fn write_expr(dir: &Path, tag: &str) -> PathBuf {
    let expr = format!(
        r#"let
  mk = name: script: derivation {{ inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; }};
  dep = mk "{tag}-dep" "echo dependency-{tag} > $out";
in {{
  inherit dep;
  top = mk "{tag}-top" "read x < ${{dep}}; echo $x ${{dep}} > $out";
  only = mk "{tag}-only" "echo only-{tag} > $out";
}}
"#
    );
    let file = dir.join(format!("{tag}.nix"));
    std::fs::write(&file, expr).unwrap();
    file
}

/// A trust file with one log, builder `alpha` with the given `tpm` table, and
/// `require-attestation = true`.
fn trust(
    dir: &Path,
    name: &str,
    log: &Provenixd,
    builder: &Builder,
    tpm_table: &str,
    upstream: &str,
    signing_key: &Path,
) -> PathBuf {
    let text = format!(
        "[[log]]\nurl = {:?}\nkey = {:?}\n\n[[builder]]\nname = \"alpha\"\nkey = {:?}\ntpm = {tpm_table}\n\n[policy]\nthreshold = \"1 of [alpha]\"\nrequire-attestation = true\n\n[substituter]\nlisten = \"127.0.0.1:0\"\nupstreams = [{upstream:?}]\nsigning-key-file = {:?}\nstate-file = {:?}\nnegative-ttl-secs = 0\n",
        log.url,
        log.verifier_key,
        builder.public_key.trim(),
        signing_key.display().to_string(),
        dir.join(format!("{name}.state")).display().to_string(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn decision(proxy: &Proxy, p: &StorePath) -> serde_json::Value {
    let (s, body) = get(&format!("{}/v1/decision/{}?fresh=1", proxy.url, p.hash()));
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The `reason` of every `attestation_failed` line of a decision.
fn attestation_failures(d: &serde_json::Value) -> Vec<String> {
    d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["code"] == "attestation_failed")
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect()
}

fn verify(config: &Path, p: &StorePath) -> Output {
    Command::new(bin("provenix"))
        .args(["verify", "--config"])
        .arg(config)
        .arg(p.to_string())
        .env("PROVENIX_LOG", "error")
        .output()
        .unwrap()
}

/// The entries the log holds for `p` (any builder).
fn entries(log: &Provenixd, p: &StorePath) -> Vec<Entry> {
    let client = LogClient::new(&log.url, std::time::Duration::from_secs(10)).unwrap();
    let resp = rt().block_on(client.lookup(&p.hash().to_string())).unwrap();
    resp.entries
        .iter()
        .map(|e| Entry::parse(e.envelope.get().as_bytes()).unwrap())
        .collect()
}

/// `tpm2_checkquote` (a verifier we did not write) on a quote our producer made.
fn checkquote(dir: &Path, bundle: &QuoteBundle, nonce: &[u8]) -> Output {
    std::fs::write(dir.join("quote.msg"), &bundle.attest).unwrap();
    std::fs::write(dir.join("quote.sig"), &bundle.signature).unwrap();
    // The AK as tpm2-tools' TSS public file (TPM2B_PUBLIC).
    let ak = TpmtPublic::parse(&bundle.ak_public).unwrap();
    std::fs::write(dir.join("ak.pub"), ak.marshal_tpm2b()).unwrap();
    // The PCR file as `tpm2_quote -o` writes it (the `-l` + raw values form is broken in
    // tpm2-tools 5.4 for 24 PCRs): C structs dumped in host order (little-endian here) —
    // TPML_PCR_SELECTION (count, 16 × {hash u16, sizeofSelect u8, pcrSelect[4], pad}), the
    // number of TPML_DIGESTs (u32), then TPML_DIGESTs of at most 8 values (count u32, 8 ×
    // {size u16, buffer[64]}).
    let attest = Attest::parse(&bundle.attest).unwrap();
    let mut file = Vec::new();
    let banks = &attest.quote.pcr_select.banks;
    file.extend_from_slice(&(banks.len() as u32).to_le_bytes());
    for i in 0..16 {
        let mut sel = [0u8; 8];
        if let Some(b) = banks.get(i) {
            sel[..2].copy_from_slice(&b.hash.id().to_le_bytes());
            sel[2] = b.size_of_select;
            sel[3..7].copy_from_slice(&(b.mask as u32).to_le_bytes());
        }
        file.extend_from_slice(&sel);
    }
    let mut values: Vec<&[u8]> = Vec::new();
    for b in banks {
        for i in b.indices() {
            values.push(bundle.pcrs.get(b.hash, i).unwrap());
        }
    }
    let chunks: Vec<&[&[u8]]> = values.chunks(8).collect();
    file.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for chunk in chunks {
        file.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        for j in 0..8 {
            let mut d = [0u8; 66];
            if let Some(v) = chunk.get(j) {
                d[..2].copy_from_slice(&(v.len() as u16).to_le_bytes());
                d[2..2 + v.len()].copy_from_slice(v);
            }
            file.extend_from_slice(&d);
        }
    }
    std::fs::write(dir.join("pcrs.bin"), file).unwrap();
    Command::new("tpm2_checkquote")
        .current_dir(dir)
        .args(["-u", "ak.pub", "-m", "quote.msg", "-s", "quote.sig"])
        .args(["-f", "pcrs.bin"])
        .args(["-g", "sha256", "-q", &hex::encode(nonce)])
        .output()
        .unwrap()
}

#[test]
fn attested_builds_verify_and_the_substituter_requires_attestation() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tpm = Swtpm::start();
    let opts = ServerOpts::default();
    let log = Provenixd::start(&dir.join("log"), &opts);
    let b = Builder::new(
        &dir.join("alpha"),
        "alpha",
        &[&log.url],
        &format!(
            "[tpm]\ntcti = {:?}\nek-intermediates = {:?}\n",
            tpm.tcti(),
            tpm.state.intermediate_pem().display().to_string()
        ),
    );

    // Not allow-listed yet: the registrar refuses to challenge.
    let enroll = || {
        Command::new(bin("provenix"))
            .args(["attest", "enroll", "--config"])
            .arg(&b.config)
            .env("PROVENIX_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = enroll();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown_builder"),
        "{}",
        show(&out)
    );

    add_builder(&log.data, &opts, &b.public_key);
    // The running log re-reads its allow-list within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let out = enroll();
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let ak_name = stdout
        .lines()
        .find_map(|l| l.strip_prefix("provenix attest: AK "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(
        ak_name.starts_with("000b") && ak_name.len() == 68,
        "{stdout}"
    );
    assert!(stdout.contains("enrolled with"), "{stdout}");

    // Builds, hook, push: every entry carries a quote.
    let tag = unique("att");
    let expr = write_expr(dir, &tag);
    let store = b.store(&dir.join("store"));
    let top = store.build(&expr, &["top"]).remove(0);
    let dep = store.build(&expr, &["dep"]).remove(0);
    let out = b.push_once();
    assert!(out.status.success(), "{}", show(&out));
    let top_entry = entries(&log, &top).remove(0);
    let dep_entry = entries(&log, &dep).remove(0);
    let bundle = QuoteBundle::from_entry(&top_entry).unwrap().unwrap();

    // tpm2_checkquote accepts our producer's quote (with the entry's trace digest as nonce),
    // and refuses it for another nonce.
    let out = checkquote(dir, &bundle, &top_entry.trace_digest());
    assert!(out.status.success(), "{}", show(&out));
    let out = checkquote(dir, &bundle, &dep_entry.trace_digest());
    assert!(!out.status.success(), "{}", show(&out));

    // An upstream cache holding the builder's outputs, a client that may not build.
    let cache = dir.join("cache");
    copy_to_cache(&store, &cache, &[top.to_string(), dep.to_string()]);
    let upstream = StaticServer::start(&cache);
    let (proxy_sec, _) = proxy_key(&dir.join("proxy"), "proxy");
    let root = tpm.state.root_pem().display().to_string();
    let good_table =
        format!("{{ ek-roots = [{root:?}], allow-unmeasured-boot = true, ak-name = {ak_name:?} }}");
    let good = trust(
        dir,
        "good",
        &log,
        &b,
        &good_table,
        &upstream.url,
        &proxy_sec,
    );

    // `provenix verify` with require-attestation: trusted.
    let out = verify(&good, &top);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // The substituter accepts it; Nix substitutes instead of building.
    let proxy = Proxy::start(&good);
    let d = decision(&proxy, &top);
    assert_eq!(d["verdict"]["status"], "trusted", "{d:#}");
    assert!(attestation_failures(&d).is_empty(), "{d:#}");
    let client = Store::new(&dir.join("client"));
    let out = client_build(
        &client,
        &proxy.url,
        &proxy.public_key,
        &expr,
        "top",
        Some(0),
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    drop(proxy);

    // An EK root that is not the simulator's CA: the enrollment does not verify, no vote.
    let other = TpmState::new();
    let table = format!(
        "{{ ek-roots = [{:?}], allow-unmeasured-boot = true }}",
        other.root_pem().display().to_string()
    );
    let cfg = trust(
        dir,
        "other-root",
        &log,
        &b,
        &table,
        &upstream.url,
        &proxy_sec,
    );
    let proxy = Proxy::start(&cfg);
    let d = decision(&proxy, &top);
    assert_eq!(d["verdict"]["status"], "not_trusted", "{d:#}");
    let f = attestation_failures(&d);
    assert!(
        f.iter()
            .any(|r| r.starts_with("not_enrolled") && r.contains("ek_untrusted")),
        "{f:?}"
    );
    let (s, _) = get(&format!("{}/{}.narinfo", proxy.url, top.hash()));
    assert_eq!(s, 404);
    drop(proxy);
    let out = verify(&cfg, &top);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ek_untrusted"),
        "{}",
        show(&out)
    );

    // A PCR allow-list the quote does not match.
    let table = format!(
        "{{ ek-roots = [{root:?}], pcrs = {{ \"0\" = \"{}\" }}, allow-unmeasured-boot = true }}",
        "01".repeat(32)
    );
    let cfg = trust(dir, "pcrs", &log, &b, &table, &upstream.url, &proxy_sec);
    let proxy = Proxy::start(&cfg);
    let d = decision(&proxy, &top);
    assert_eq!(d["verdict"]["status"], "not_trusted", "{d:#}");
    let f = attestation_failures(&d);
    assert!(f.iter().any(|r| r.starts_with("pcr_not_allowed")), "{f:?}");
    drop(proxy);

    // Without allow-unmeasured-boot, swtpm's all-zero boot PCRs are refused.
    let table = format!("{{ ek-roots = [{root:?}] }}");
    let cfg = trust(dir, "measured", &log, &b, &table, &upstream.url, &proxy_sec);
    let out = verify(&cfg, &top);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unmeasured_boot"),
        "{}",
        show(&out)
    );

    // A pinned AK that is not the enrolled one.
    let table = format!(
        "{{ ek-roots = [{root:?}], allow-unmeasured-boot = true, ak-name = \"000b{}\" }}",
        "ab".repeat(32)
    );
    let cfg = trust(dir, "pin", &log, &b, &table, &upstream.url, &proxy_sec);
    let out = verify(&cfg, &top);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ak_not_pinned"),
        "{}",
        show(&out)
    );

    // An entry whose quote was made for another entry: `only`, built outside the spool, gets
    // an entry signed by alpha carrying the quote of `dep`'s entry.
    let plain = Store::new(&dir.join("store"));
    let only = plain.build(&expr, &["only"]).remove(0);
    let info = plain.path_info(&only);
    let key: NixSecretKey = std::fs::read_to_string(b.dir.join("alpha.sec"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let dep_quote = dep_entry
        .statement()
        .predicate
        .run_details
        .byproducts
        .iter()
        .find(|d| d.name == TPM_QUOTE_BYPRODUCT)
        .unwrap()
        .clone();
    let forged = NixBuild {
        builder: "alpha".into(),
        derivation: Some(plain.deriver(&only)),
        outputs: vec![BuildOutput {
            name: "out".into(),
            path: only.clone(),
            nar_hash: info.nar_hash,
            nar_size: Some(info.nar_size),
            references: vec![],
        }],
        built_locally: true,
        counter: Some(1_000_000),
        byproducts: vec![dep_quote],
        ..Default::default()
    };
    let env = forged.sign(&key).canonical_json();
    let client_api = LogClient::new(&log.url, std::time::Duration::from_secs(10)).unwrap();
    let resp = rt().block_on(client_api.submit(&[env], true)).unwrap();
    assert!(
        matches!(
            resp.results[0],
            provenix_core::api::SubmitResult::Accepted(_)
        ),
        "{:?}",
        resp.results
    );
    copy_to_cache(&plain, &cache, &[only.to_string()]);
    let proxy = Proxy::start(&good);
    let d = decision(&proxy, &only);
    assert_eq!(d["verdict"]["status"], "not_trusted", "{d:#}");
    let f = attestation_failures(&d);
    assert!(
        f.iter().any(|r| r.starts_with("extra_data_mismatch")),
        "{f:?}"
    );
    let (s, _) = get(&format!("{}/{}.narinfo", proxy.url, only.hash()));
    assert_eq!(s, 404);
    // The genuine entries still pass under the same trust file.
    assert_eq!(decision(&proxy, &dep)["verdict"]["status"], "trusted");

    // The enrollment record is in the log under builder:alpha, signed by the log.
    let client = LogClient::new(&log.url, std::time::Duration::from_secs(10)).unwrap();
    let resp = rt().block_on(client.lookup("builder:alpha")).unwrap();
    assert_eq!(resp.entries.len(), 1);
    let rec = provenix_core::enrollment::EnrollmentRecord::parse(
        resp.entries[0].envelope.get().as_bytes(),
    )
    .unwrap();
    assert_eq!(rec.ak_name().to_string(), ak_name);
    let log_key: provenix_core::checkpoint::LogVerifier = log.verifier_key.parse().unwrap();
    let roots = provenix_core::tpm::EkRoots::from_pem(
        &std::fs::read_to_string(tpm.state.root_pem()).unwrap(),
    )
    .unwrap();
    let builder_key = b.public_key.trim().parse().unwrap();
    let v = rec
        .verify(&log_key, &builder_key, &roots, None, None)
        .unwrap();
    assert_eq!(v.ek.chain.len(), 3, "{:?}", v.ek.chain);
    // Signed by the log, not by anyone else.
    let other: provenix_core::checkpoint::LogVerifier =
        provenix_core::checkpoint::LogSigner::generate("other.log")
            .unwrap()
            .verifier_key()
            .parse()
            .unwrap();
    assert_eq!(
        rec.verify(&other, &builder_key, &roots, None, None)
            .unwrap_err()
            .code(),
        "enrollment_bad_log_signature"
    );

    // An auditor replaying the log counts the record as the log's own (signed by it, its
    // binding valid), not as an invalid entry or one by an unknown builder.
    let out = Command::new(bin("provenix"))
        .args(["audit", "--json", "--config"])
        .arg(&good)
        .arg("--state")
        .arg(dir.join("audit"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = &report["logs"][0];
    assert_eq!(l["enrollments"], 1, "{report:#}");
    assert_eq!(l["invalid"], 0, "{report:#}");
    assert_eq!(l["unknownBuilder"], 0, "{report:#}");
}
