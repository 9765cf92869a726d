//! `provenixd`'s command line: first start, key/database binding, check-config, builder
//! management while running, and shutdown that drains the sequencer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use provenix::logclient::LogClient;
use provenix_core::api::SubmitResult;
use provenix_core::checkpoint::{LogSigner, LogVerifier};
use provenix_e2e::server::{add_builder, remove_builder, Provenixd, ServerOpts};
use provenix_e2e::{bin, gen, runtime};

fn provenixd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("provenixd"))
        .args(args)
        .env("PROVENIX_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn first_start_creates_key_and_later_starts_refuse_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = data.to_str().unwrap();
    let (ok, out, _) = provenixd(&["key", "--data", d, "--origin", "example.org/log"]);
    assert!(ok);
    let vkey = out.trim().to_owned();
    assert!(vkey.starts_with("example.org/log+"), "{vkey}");
    vkey.parse::<LogVerifier>().unwrap();
    let mode = std::fs::metadata(data.join("log.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Same key again, and the origin of an existing log does not change.
    let (ok, out, _) = provenixd(&["key", "--data", d, "--origin", "other"]);
    assert!(ok);
    assert_eq!(out.trim(), vkey);

    // Another key for this database is refused.
    let other = LogSigner::generate("example.org/log").unwrap();
    std::fs::write(data.join("log.key"), other.secret_string()).unwrap();
    let (ok, _, err) = provenixd(&["serve", "--data", d, "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(
        err.contains("the database belongs to log") && err.contains("refusing to start"),
        "{err}"
    );
    // A missing key for an existing database is refused, not silently regenerated.
    std::fs::remove_file(data.join("log.key")).unwrap();
    let (ok, _, err) = provenixd(&["serve", "--data", d, "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("is missing; restore that key file"), "{err}");
    assert!(!data.join("log.key").exists());
}

#[test]
fn check_config_accepts_good_and_explains_bad() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "listen = \"127.0.0.1:9000\"\ndata = \"/var/lib/provenix\"\norigin = \"log.example\"\n",
    )
    .unwrap();
    let (ok, out, _) = provenixd(&["check-config", "--config", good.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("ok"));
    for (text, want) in [
        ("lisen = \"x\"", "unknown field `lisen`"),
        ("listen = \"localhost:80\"", "is not an IP:PORT address"),
        (
            "database = \"mysql://x\"",
            "use sqlite://PATH or postgres://",
        ),
        ("queue-depth = \"many\"", "invalid type"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let (ok, _, err) = provenixd(&["check-config", "--config", bad.to_str().unwrap()]);
        assert!(!ok, "{text} accepted");
        assert!(err.contains(want), "{text}: {err}");
    }
    let (ok, _, err) = provenixd(&["check-config", "--config", "/nonexistent.toml"]);
    assert!(!ok);
    assert!(err.contains("cannot read /nonexistent.toml"), "{err}");
}

#[test]
fn builders_are_managed_while_running_and_shutdown_drains() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let opts = ServerOpts::default();
    let (ok, _, err) = provenixd(&[
        "builders",
        "add",
        "--data",
        data.to_str().unwrap(),
        "alpha:notbase64",
    ]);
    assert!(!ok);
    assert!(err.contains("is not a Nix public key"), "{err}");
    let mut server = Provenixd::start(&data, &opts);
    let alpha = gen::builder_key("alpha");
    let rt = runtime();
    let client = LogClient::new(&server.url, Duration::from_secs(10)).unwrap();
    let code = |r: &SubmitResult| match r {
        SubmitResult::Accepted(_) => "accepted".to_owned(),
        SubmitResult::Rejected { error } => error.code.clone(),
    };
    let r = rt
        .block_on(client.submit(&[gen::signed(&alpha, 1, 1)], false))
        .unwrap();
    assert_eq!(code(&r.results[0]), "unknown_builder");
    add_builder(&data, &opts, &alpha.public().to_string());
    let (ok, out, _) = provenixd(&["builders", "list", "--data", data.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(out.trim(), alpha.public().to_string());
    std::thread::sleep(Duration::from_millis(1200));
    let r = rt
        .block_on(client.submit(&[gen::signed(&alpha, 1, 1)], false))
        .unwrap();
    assert_eq!(code(&r.results[0]), "accepted");
    remove_builder(&data, &opts, "alpha");
    std::thread::sleep(Duration::from_millis(1200));
    let r = rt
        .block_on(client.submit(&[gen::signed(&alpha, 2, 2)], false))
        .unwrap();
    assert_eq!(code(&r.results[0]), "unknown_builder");
    add_builder(&data, &opts, &alpha.public().to_string());
    std::thread::sleep(Duration::from_millis(1200));

    // Submissions in flight when SIGTERM arrives are answered, and covered by the last checkpoint.
    let envs: Vec<Vec<u8>> = (10..410).map(|i| gen::signed(&alpha, i, i)).collect();
    let handles: Vec<_> = envs
        .chunks(100)
        .map(|c| {
            let (client, c) = (client.clone(), c.to_vec());
            rt.spawn(async move { client.submit(&c, false).await })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(5));
    assert!(server.terminate(), "unclean shutdown");
    let mut acked = 0;
    for h in handles {
        if let Ok(Ok(r)) = rt.block_on(h) {
            acked += r
                .results
                .iter()
                .filter(|r| matches!(r, SubmitResult::Accepted(_)))
                .count();
        }
    }
    let tail = server.stdout_tail.lock().unwrap().join("\n");
    let stopped_at: u64 = tail
        .split("stopped at checkpoint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no final checkpoint line in {tail:?}"));
    let server = Provenixd::start(&data, &opts);
    let client = LogClient::new(&server.url, Duration::from_secs(10)).unwrap();
    let cp = rt.block_on(client.checkpoint()).unwrap();
    let size = server
        .verifier_key
        .parse::<LogVerifier>()
        .unwrap()
        .verify(&cp)
        .unwrap()
        .size();
    assert_eq!(
        size, stopped_at,
        "the final checkpoint was not the one published at shutdown"
    );
    eprintln!("{acked} entries acknowledged around SIGTERM; final checkpoint {size}");
    assert!(
        acked > 0,
        "no submission was in flight at SIGTERM: the test proved nothing"
    );
    assert!(
        size > acked as u64,
        "checkpoint {size} does not cover {acked} acknowledged entries"
    );
}
