//! narinfo against real Nix output.
//!
//! - `fixtures/narinfo/*.narinfo` were written by Nix 2.8.0 (`nix copy --to file://…` with
//!   `secret-key-files`; see `fixtures/narinfo/generate.sh`): parse → format must give the same
//!   bytes, and every signature Nix wrote must verify with our fingerprint.
//! - `nix_accepts_our_signatures` runs the real Nix: it copies a fresh build into a file cache,
//!   re-signs every narinfo with a provenix key, and has a second store substitute from it trusting
//!   only that key (and refuse it when the signature is wrong). Needs `nix-build`/`nix` on PATH;
//!   skips with a reason unless `PROVENIX_CI` is set.

// Test helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use provenix_core::nix::{NarHash, NarInfo, NixPublicKey, NixSecretKey};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/narinfo")
}

fn fixture_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "narinfo"))
        .collect();
    files.sort();
    files
}

fn fixture_keys() -> Vec<NixPublicKey> {
    ["key.pub", "key2.pub"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(fixtures().join(f))
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn nix_written_narinfo_round_trips_byte_exactly() {
    let files = fixture_files();
    assert!(files.len() >= 8, "fixtures missing: {files:?}");
    let mut with_refs = 0;
    let mut with_ca = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let n = NarInfo::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(
            n.to_string().as_bytes(),
            bytes.as_slice(),
            "{}",
            f.display()
        );
        // The file is named after the hash part of the path it describes.
        assert_eq!(
            f.file_stem().unwrap().to_str().unwrap(),
            n.store_path().hash().to_string()
        );
        with_refs += usize::from(!n.references().is_empty());
        with_ca += usize::from(n.ca().is_some());
    }
    assert!(with_refs >= 3 && with_ca >= 3, "fixtures lack variety");
}

#[test]
fn signatures_nix_wrote_verify_with_our_fingerprint() {
    let keys = fixture_keys();
    let mut verified = 0;
    for f in fixture_files() {
        let n = NarInfo::parse(&std::fs::read(&f).unwrap()).unwrap();
        for sig in n.signatures() {
            let key = keys
                .iter()
                .find(|k| k.name() == sig.key_name())
                .unwrap_or_else(|| panic!("{}: no key {}", f.display(), sig.key_name()));
            assert!(n.verify_signature(sig, key), "{}", f.display());
            verified += 1;
        }
        // Any change to a signed field breaks every signature.
        if !n.signatures().is_empty() {
            let mut h = *n.nar_hash().as_bytes();
            h[0] ^= 1;
            // Through the text form, so that the signatures stay attached.
            let tampered: NarInfo = n
                .to_string()
                .replace(
                    &n.nar_hash().to_nix32_prefixed(),
                    &NarHash::from_bytes(h).to_nix32_prefixed(),
                )
                .parse()
                .unwrap();
            assert_eq!(tampered.signatures(), n.signatures());
            assert!(
                tampered.verified_signers(&keys).is_empty(),
                "{}",
                f.display()
            );
        }
    }
    // One path carries two signatures (generate.sh adds a second with `nix store sign`).
    assert!(verified >= 6, "only {verified} signatures checked");
}

#[test]
fn retain_verified_drops_unknown_and_bad_signatures() {
    let keys = fixture_keys();
    let two = fixture_files()
        .into_iter()
        .map(|f| NarInfo::parse(&std::fs::read(f).unwrap()).unwrap())
        .find(|n| n.signatures().len() == 2)
        .expect("a fixture with two signatures");
    let mut only_first = two.clone();
    assert_eq!(only_first.retain_verified_signatures(&keys[..1]), 1);
    assert_eq!(only_first.signatures()[0].key_name(), "provenix-fixture-1");
    let mut none = two.clone();
    assert_eq!(none.retain_verified_signatures(&[]), 0);
    assert!(!none.to_string().contains("Sig:"));
    // A signature under a trusted name but by another key is dropped too.
    let impostor = NixSecretKey::from_seed("provenix-fixture-1", [3; 32]).unwrap();
    let mut forged = two.clone();
    forged.resign(&impostor);
    assert_eq!(forged.retain_verified_signatures(&keys), 0);
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn nix_env(cmd: &mut Command, run_dir: &Path, extra: &str) {
    cmd.env(
        "NIX_CONFIG",
        format!(
            "sandbox = false\nbuild-users-group =\nexperimental-features = nix-command\nsubstituters =\n{extra}"
        ),
    )
    .env("XDG_CACHE_HOME", run_dir.join("xdg"))
    .env_remove("NIX_REMOTE");
}

#[test]
fn nix_accepts_our_signatures() {
    if !(have("nix") && have("nix-build")) {
        assert!(
            std::env::var_os("PROVENIX_CI").is_none(),
            "nix is required in CI (PROVENIX_CI is set)"
        );
        eprintln!("SKIP nix_accepts_our_signatures: nix/nix-build not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unique = format!(
        "provenix-narinfo-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    std::fs::write(
        d.join("default.nix"),
        format!(
            r#"let dep = derivation {{ name = "{unique}-dep"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo dep > $out" ]; }};
in derivation {{ name = "{unique}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${{dep}} > $out" ]; }}"#
        ),
    )
    .unwrap();
    let builder_store = d.join("builder");
    let client_store = d.join("client");
    let cache = d.join("cache");
    let mut build = Command::new("nix-build");
    build
        .arg("--store")
        .arg(&builder_store)
        .args([
            "--option",
            "sandbox-paths",
            "/bin /lib /lib64 /usr",
            "--no-out-link",
        ])
        .arg(d.join("default.nix"));
    nix_env(&mut build, d, "");
    let out = run(&mut build).trim().to_owned();
    let mut copy = Command::new("nix");
    copy.args(["copy", "--store"])
        .arg(&builder_store)
        .arg("--to")
        .arg(format!("file://{}?compression=none", cache.display()))
        .arg(&out);
    nix_env(&mut copy, d, "");
    run(&mut copy);

    let key = NixSecretKey::from_seed("provenix-test-1", [42; 32]).unwrap();
    let mut paths = 0;
    for e in std::fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "narinfo") {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let mut n = NarInfo::parse(&bytes).unwrap();
        assert_eq!(n.to_string().as_bytes(), bytes.as_slice());
        assert!(n.signatures().is_empty(), "built without a signing key");
        n.resign(&key);
        std::fs::write(&p, n.to_string()).unwrap();
        paths += 1;
    }
    assert_eq!(paths, 2);

    let substitute = |trusted: &str, store: &Path| {
        let mut c = Command::new("nix");
        c.args(["copy", "--from"])
            .arg(format!("file://{}", cache.display()))
            .arg("--store")
            .arg(store)
            .arg(&out);
        nix_env(
            &mut c,
            d,
            &format!("trusted-public-keys = {trusted}\nrequire-sigs = true\n"),
        );
        c.output().unwrap()
    };
    // Trusting another key of the same name: Nix refuses the path.
    let impostor = NixSecretKey::from_seed("provenix-test-1", [43; 32]).unwrap();
    let refused = substitute(&impostor.public().to_string(), &d.join("client-bad"));
    assert!(
        !refused.status.success(),
        "Nix accepted a path signed by another key"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("lacks a valid signature"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Trusting our key: Nix verifies our signature and takes the closure.
    let ok = substitute(&key.public().to_string(), &client_store);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut check = Command::new("nix-store");
    check
        .arg("--store")
        .arg(&client_store)
        .args(["-q", "--references"])
        .arg(&out);
    nix_env(&mut check, d, "");
    assert!(run(&mut check).contains(&format!("{unique}-dep")));
}
