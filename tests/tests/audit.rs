//! `provenix audit` against real `provenixd` logs: conflicting claims (between builders and a
//! builder against itself), invalid entries, incremental runs; and a log operator who rewrites
//! history the way a malicious one would (editing the database, then signing new checkpoints
//! with the log's own key): a rewritten entry, data that contradicts its hash tiles, a rollback,
//! a truncated and re-grown tree. Each must exit 3 and name what broke.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use provenix::logclient::LogClient;
use provenix_core::checkpoint::{LogSigner, LogVerifier};
use provenix_core::merkle::{leaf_hash, Hash, MemoryTree};
use provenix_core::nix::NixSecretKey;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_e2e::{bin, gen, runtime};
use sqlx::Connection as _;

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

/// Runs `provenix audit`; returns the exit code and stdout.
fn audit(trust: &Path, state: &Path) -> (i32, String, Output) {
    let o = provenix(&[
        "audit",
        "--config",
        trust.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        o,
    )
}

fn audit_json(trust: &Path, state: &Path) -> (i32, serde_json::Value) {
    let o = provenix(&[
        "audit",
        "--config",
        trust.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--json",
    ]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    (o.status.code().unwrap_or(-1), v)
}

/// A trust file for `logs` and `builders` (name, Nix public key).
fn trust(dir: &Path, logs: &[&Provenixd], builders: &[(&str, String)]) -> PathBuf {
    let mut t = String::new();
    for l in logs {
        t.push_str(&format!(
            "[[log]]\nurl = {:?}\nkey = {:?}\n\n",
            l.url, l.verifier_key
        ));
    }
    for (n, k) in builders {
        t.push_str(&format!("[[builder]]\nname = {n:?}\nkey = {k:?}\n\n"));
    }
    let names: Vec<&str> = builders.iter().map(|(n, _)| *n).collect();
    t.push_str(&format!(
        "[policy]\nthreshold = \"1 of [{}]\"\n",
        names.join(", ")
    ));
    let p = dir.join("trust.toml");
    std::fs::write(&p, t).unwrap();
    p
}

fn start_log(dir: &Path, keys: &[&NixSecretKey]) -> Provenixd {
    start_named(dir, "audit.test", keys)
}

fn start_named(dir: &Path, origin: &str, keys: &[&NixSecretKey]) -> Provenixd {
    let opts = ServerOpts {
        origin: Some(origin.into()),
        ..ServerOpts::default()
    };
    for k in keys {
        add_builder(dir, &opts, &k.public().to_string());
    }
    Provenixd::start(dir, &opts)
}

/// Starts a stopped log again on its port.
fn restart(log: &Provenixd) -> Provenixd {
    let opts = ServerOpts {
        origin: Some("audit.test".into()),
        listen: Some(log.url.trim_start_matches("http://").to_owned()),
        ..ServerOpts::default()
    };
    Provenixd::start(&log.data, &opts)
}

/// Submits `envs` and waits for a checkpoint covering them; returns its size.
fn submit(log: &Provenixd, envs: &[Vec<u8>]) -> u64 {
    let client = LogClient::new(&log.url, Duration::from_secs(30)).unwrap();
    let verifier: LogVerifier = log.verifier_key.parse().unwrap();
    runtime().block_on(async {
        let mut size = 0;
        for chunk in envs.chunks(1000) {
            let r = client.submit(chunk, true).await.unwrap();
            for res in &r.results {
                assert!(
                    matches!(res, provenix_core::api::SubmitResult::Accepted(_)),
                    "{res:?}"
                );
            }
            size = verifier.verify(&r.checkpoint.unwrap()).unwrap().size();
        }
        size
    })
}

/// What a malicious operator does with the database of a stopped log: `edit` it, then sign a
/// checkpoint of the recomputed tree with the log's own key, replacing every stored checkpoint
/// (so the log's own start-up check passes).
fn tamper(log: &Provenixd, edit: &[(&str, Vec<Vec<u8>>)]) -> u64 {
    let db = log.data.join("log.db");
    let signer =
        LogSigner::from_secret(&std::fs::read_to_string(log.data.join("log.key")).unwrap())
            .unwrap();
    runtime().block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        for (sql, binds) in edit {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
            for b in binds {
                q = q.bind(b.clone());
            }
            q.execute(&mut c).await.unwrap();
        }
        let hashes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT leaf_hash FROM entries ORDER BY idx")
            .fetch_all(&mut c)
            .await
            .unwrap();
        let tree = MemoryTree::from_leaves(hashes.iter().map(|h| Hash::from_slice(h).unwrap()));
        let cp = signer.sign(tree.size(), tree.root()).unwrap();
        sqlx::query("DELETE FROM checkpoints")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO checkpoints (size, note, created_at) VALUES (?, ?, 0)")
            .bind(tree.size() as i64)
            .bind(cp.note())
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        tree.size()
    })
}

#[test]
fn conflicts_between_builders_and_across_rebuilds_unknown_and_invalid_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (alpha, beta, gamma, mallory) = (
        gen::builder_key("alpha"),
        gen::builder_key("beta"),
        gen::builder_key("gamma"),
        gen::builder_key("mallory"),
    );
    let log = start_log(&dir.join("log"), &[&alpha, &beta, &gamma, &mallory]);
    // alpha and beta build derivations 0..40; beta gets another output for 7.
    let mut envs: Vec<Vec<u8>> = Vec::new();
    for seed in 0..40 {
        envs.push(gen::signed(&alpha, seed, seed));
        envs.push(gen::signed(
            &beta,
            seed,
            if seed == 7 { 1007 } else { seed },
        ));
    }
    envs.push(gen::signed(&mallory, 3, 3)); // not in the trust file
    envs.push(gen::signed(&gamma, 5, 5)); // the trust file holds another key for gamma
    submit(&log, &envs);
    let other_gamma = NixSecretKey::generate("gamma").unwrap();
    let trust = trust(
        dir,
        &[&log],
        &[
            ("alpha", alpha.public().to_string()),
            ("beta", beta.public().to_string()),
            ("gamma", other_gamma.public().to_string()),
        ],
    );
    let state = dir.join("state");
    let key7 = gen::store_path(7, "pkg-7").hash().to_string();

    let (code, out, o) = audit(&trust, &state);
    assert_eq!(code, 1, "{}", show(&o));
    let conflict = out
        .lines()
        .find(|l| l.starts_with("conflict: "))
        .unwrap_or_else(|| panic!("{}", show(&o)));
    assert!(conflict.contains(&format!("key {key7}")), "{conflict}");
    assert!(conflict.contains("beta claims"), "{conflict}");
    assert!(conflict.contains("alpha claimed"), "{conflict}");
    assert!(
        conflict.contains(&gen::nar_hash(7).to_nix32_prefixed())
            && conflict.contains(&gen::nar_hash(1007).to_nix32_prefixed()),
        "{conflict}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("conflict: ")).count(),
        1
    );
    let invalid = out
        .lines()
        .find(|l| l.starts_with("invalid: "))
        .unwrap_or_else(|| panic!("{}", show(&o)));
    assert!(
        invalid.contains("#81") && invalid.contains("entry by gamma: signature does not verify"),
        "{invalid}"
    );
    assert!(out.contains("82 new entries"), "{out}");
    assert!(
        out.contains(
            "80 valid, 1 by unknown builders (mallory 1), 1 invalid, 1 conflicting claim(s)"
        ),
        "{out}"
    );

    // Nothing new: clean, and nothing re-reported.
    let (code, v) = audit_json(&trust, &state);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["logs"][0]["newEntries"], 0);
    assert_eq!(v["logs"][0]["consistency"], "same checkpoint as before");
    assert_eq!(v["logs"][0]["earlierFindings"], 2);
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);

    // alpha rebuilds 12 (which beta built too) and 399 and gets other outputs; 300 more
    // entries cross a tile boundary.
    let mut more = vec![gen::signed(&alpha, 12, 5012)];
    more.extend((100..400).map(|s| gen::signed(&alpha, s, s)));
    more.push(gen::signed(&alpha, 399, 5399));
    let size = submit(&log, &more);
    assert_eq!(size, 384);
    let (code, v) = audit_json(&trust, &state);
    assert_eq!(code, 1, "{v:#}");
    let l = &v["logs"][0];
    assert_eq!(l["previousSize"], 82);
    assert_eq!(l["auditedSize"], 384);
    assert_eq!(l["newEntries"], 302, "only what is new is read");
    assert_eq!(
        l["consistency"],
        "proof verified and root recomputed from the kept tree edge"
    );
    let f = v["findings"].as_array().unwrap();
    assert_eq!(f.len(), 2, "{v:#}");
    assert_eq!(f[0]["kind"], "conflict");
    assert_eq!(f[0]["index"], 82);
    assert_eq!(
        f[0]["key"],
        gen::store_path(12, "pkg-12").hash().to_string()
    );
    assert_eq!(f[0]["builders"], serde_json::json!(["alpha", "beta"]));
    let m = f[0]["message"].as_str().unwrap();
    assert!(
        m.contains("builders disagree: alpha claims")
            && m.contains("alpha itself claimed")
            && m.contains("(audit.test #24)")
            && m.contains("beta claimed")
            && m.contains("(audit.test #25)"),
        "{m}"
    );
    assert_eq!(f[1]["kind"], "self_conflict");
    assert_eq!(f[1]["index"], 383);
    assert_eq!(
        f[1]["key"],
        gen::store_path(399, "pkg-399").hash().to_string()
    );
    assert_eq!(f[1]["builders"], serde_json::json!(["alpha"]));
    assert_eq!(f[1]["claims"][1]["index"], 382);
    assert!(
        f[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("a rebuild that differs: alpha claims"),
        "{v:#}"
    );

    // A second log holding a claim that contradicts the first log's: found across logs.
    let log2 = start_named(&dir.join("log2"), "audit2.test", &[&beta]);
    submit(&log2, &[gen::signed(&beta, 20, 9020)]);
    let trust2 = {
        let t = std::fs::read_to_string(&trust).unwrap();
        let t2 = format!(
            "[[log]]\nurl = {:?}\nkey = {:?}\n\n{t}",
            log2.url, log2.verifier_key
        );
        let p = dir.join("trust2.toml");
        std::fs::write(&p, t2).unwrap();
        p
    };
    let (code, out, o) = audit(&trust2, &state);
    assert_eq!(code, 1, "{}", show(&o));
    let line = out
        .lines()
        .find(|l| l.starts_with("conflict: "))
        .unwrap_or_else(|| panic!("{}", show(&o)));
    assert!(
        line.contains("beta claims")
            && line.contains("beta itself claimed")
            && line.contains("alpha claimed"),
        "{line}"
    );
    assert!(line.contains("audit.test #"), "{line}");
}

#[test]
fn a_rewritten_entry_and_data_contradicting_the_tiles_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let alpha = gen::builder_key("alpha");
    let mut log = start_log(&dir.join("log"), &[&alpha]);
    submit(
        &log,
        &(0..200)
            .map(|s| gen::signed(&alpha, s, s))
            .collect::<Vec<_>>(),
    );
    let trust = trust(dir, &[&log], &[("alpha", alpha.public().to_string())]);
    let state = dir.join("state");
    let (code, _, o) = audit(&trust, &state);
    assert_eq!(code, 0, "{}", show(&o));

    // New entries, then the data of #250 is replaced without its leaf hash: the bundle the log
    // serves no longer hashes to its own hash tile.
    submit(
        &log,
        &(200..300)
            .map(|s| gen::signed(&alpha, s, s))
            .collect::<Vec<_>>(),
    );
    assert!(log.terminate(), "provenixd did not stop cleanly");
    let forged = gen::signed(&alpha, 250, 9999);
    tamper(
        &log,
        &[(
            "UPDATE entries SET data = ? WHERE idx = 250",
            vec![forged.clone()],
        )],
    );
    let mut log = restart(&log);
    let (code, out, o) = audit(&trust, &state);
    assert_eq!(code, 3, "{}", show(&o));
    assert!(
        out.contains("misbehaviour: log audit.test: the log serves data that contradicts itself: entry #250: the entry bundle hashes to"),
        "{}",
        show(&o)
    );
    // Not a fork: nothing is marked, the state stays at 200.
    assert!(out.contains("audited 200 (was 200)"), "{out}");

    // Now a proper rewrite of #5 (data and leaf hash), with a checkpoint re-signed by the log's
    // key. Audit against the earlier state: exit 3, entry #5 named, the log marked failed.
    assert!(log.terminate(), "provenixd did not stop cleanly");
    let forged5 = gen::signed(&alpha, 5, 777);
    tamper(
        &log,
        &[
            (
                "UPDATE entries SET data = ?, leaf_hash = ? WHERE idx = 250",
                vec![
                    gen::signed(&alpha, 250, 250),
                    leaf_hash(&gen::signed(&alpha, 250, 250)).0.to_vec(),
                ],
            ),
            (
                "UPDATE entries SET data = ?, leaf_hash = ? WHERE idx = 5",
                vec![forged5.clone(), leaf_hash(&forged5).0.to_vec()],
            ),
        ],
    );
    let _log = restart(&log);
    let (code, out, o) = audit(&trust, &state);
    assert_eq!(code, 3, "{}", show(&o));
    let line = out
        .lines()
        .find(|l| l.starts_with("misbehaviour: "))
        .unwrap_or_else(|| panic!("{}", show(&o)));
    assert!(
        line.contains("checkpoint 300 is not consistent with checkpoint 200 audited before"),
        "{line}"
    );
    let was = leaf_hash(&gen::signed(&alpha, 5, 5));
    assert!(
        line.contains(&format!(
            "entry #5 was rewritten: its leaf hash was {was}, the log now serves {}",
            leaf_hash(&forged5)
        )),
        "{line}"
    );
    assert!(line.contains("The log is marked failed"), "{line}");
    // It stays failed.
    let (code, out, o) = audit(&trust, &state);
    assert_eq!(code, 3, "{}", show(&o));
    assert!(out.contains("marked failed since"), "{}", show(&o));
}

#[test]
fn a_truncated_and_regrown_log_exits_3_naming_where_history_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let alpha = gen::builder_key("alpha");
    let mut log = start_log(&dir.join("log"), &[&alpha]);
    submit(
        &log,
        &(0..300)
            .map(|s| gen::signed(&alpha, s, s))
            .collect::<Vec<_>>(),
    );
    let trust = trust(dir, &[&log], &[("alpha", alpha.public().to_string())]);
    let state = dir.join("state");
    let (code, _, o) = audit(&trust, &state);
    assert_eq!(code, 0, "{}", show(&o));

    // Truncate to 200 and sign that: a rollback to an older (consistent) tree.
    assert!(log.terminate(), "provenixd did not stop cleanly");
    let size = tamper(
        &log,
        &[
            ("DELETE FROM entry_keys WHERE idx >= 200", vec![]),
            ("DELETE FROM entries WHERE idx >= 200", vec![]),
        ],
    );
    assert_eq!(size, 200);
    let log = restart(&log);
    let (code, out, o) = audit(&trust, &state);
    assert_eq!(code, 3, "{}", show(&o));
    assert!(
        out.contains(
            "its checkpoint shrank from 300 to 200 (an older checkpoint of the same history"
        ),
        "{}",
        show(&o)
    );

    // Re-grow it with other entries past the old size: a fork, located at #200.
    let size = submit(
        &log,
        &(1000..1150)
            .map(|s| gen::signed(&alpha, s, s))
            .collect::<Vec<_>>(),
    );
    assert_eq!(size, 350);
    let (code, v) = audit_json(&trust, &state);
    assert_eq!(code, 3, "{v:#}");
    let m = v["findings"][0]["message"].as_str().unwrap();
    assert_eq!(v["findings"][0]["kind"], "misbehaviour");
    assert!(
        m.contains("checkpoint 350 is not consistent with checkpoint 300 audited before")
            && m.contains("100 of the 300 entries audited before differ from what the log now serves, from #200 on"),
        "{m}"
    );
    assert_eq!(v["logs"][0]["status"], "misbehaved");
    assert_eq!(v["logs"][0]["auditedSize"], 300);
}
