//! Issue 3 end to end: real Nix 2.8 builds in chroot stores run `provenix-hook` as their
//! post-build-hook; `provenix push --once` delivers to real `provenixd` logs; entries are looked
//! up, their inclusion proofs and builder signatures verified, and compared with what
//! `nix path-info --json` says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use provenix::logclient::LogClient;
use provenix_core::api::IncludedEntry;
use provenix_core::checkpoint::LogVerifier;
use provenix_core::entry::Entry;
use provenix_core::nix::{NixPublicKey, StorePath};
use provenix_e2e::nix::{show, unique, write_test_expr, Builder, Store};
use provenix_e2e::require_tool;
use provenix_e2e::rt;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use sha2::{Digest, Sha256};

/// Entries under `key` in `log`, inclusion-verified against the log's signed checkpoint, once
/// at least `want` are integrated (waits up to 15 s). Also returns the checkpoint size.
fn lookup(log: &Provenixd, key: &str, want: usize) -> (Vec<IncludedEntry>, u64) {
    let verifier: LogVerifier = log.verifier_key.parse().unwrap();
    let client = LogClient::new(&log.url, Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = rt().block_on(client.lookup(key)).unwrap();
        let (cp, entries) = resp.verify(&verifier).expect("lookup answer verifies");
        if entries.len() >= want || Instant::now() > deadline {
            return (entries, cp.size());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The log's current (verified) tree size, after giving integration a moment.
fn tree_size(log: &Provenixd) -> u64 {
    std::thread::sleep(Duration::from_millis(400));
    let verifier: LogVerifier = log.verifier_key.parse().unwrap();
    let client = LogClient::new(&log.url, Duration::from_secs(10)).unwrap();
    let note = rt().block_on(client.checkpoint()).unwrap();
    verifier.verify(&note).unwrap().size()
}

fn hex_digest(e: &Entry, subject: &StorePath) -> String {
    let s = e
        .statement()
        .subject
        .iter()
        .find(|s| s.name == subject.to_string())
        .unwrap_or_else(|| panic!("no subject {subject}"));
    s.digest["sha256"].clone()
}

/// `(name, sha256)` of every resolved dependency.
fn resolved(e: &Entry) -> BTreeSet<(String, String)> {
    e.statement()
        .predicate
        .build_definition
        .resolved_dependencies
        .iter()
        .map(|d| (d.name.clone(), d.digest["sha256"].clone()))
        .collect()
}

fn start_log(dir: &Path, builder: &Builder) -> Provenixd {
    let opts = ServerOpts::default();
    add_builder(dir, &opts, &builder.public_key);
    Provenixd::start(dir, &opts)
}

fn drv_sha256(store: &Store, drv: &StorePath) -> String {
    let d: [u8; 32] = Sha256::digest(std::fs::read(store.real(drv)).unwrap()).into();
    provenix_core::nix::NarHash::from_bytes(d).to_hex()
}

#[test]
fn built_outputs_are_in_the_log_with_nar_hashes_inputs_and_proofs() {
    if !require_tool("nix-build") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let builder = Builder::new(&tmp.path().join("alpha"), "alpha", &[], "");
    let log = start_log(&tmp.path().join("log"), &builder);
    builder.write_config(
        &[&log.url],
        "source = { uri = \"git+https://example.org/pkgs\", ref = \"main\" }",
    );
    let store = builder.store(&tmp.path().join("store"));
    let expr = write_test_expr(tmp.path(), &unique("e2e"));

    let outs = store.build(&expr, &["top", "multi"]);
    assert_eq!(outs.len(), 2, "{outs:?}");
    let top = outs.iter().find(|p| p.name().ends_with("-top")).unwrap();
    let m_out = outs.iter().find(|p| p.name().ends_with("-multi")).unwrap();
    // nix-build prints only the first output of a multi-output derivation.
    let m_drv = store.deriver(m_out);
    let m_outs = store.outputs(&m_drv);
    assert_eq!(m_outs.len(), 2);
    let m_dev = m_outs
        .iter()
        .find(|p| p.name().ends_with("-multi-dev"))
        .unwrap();
    assert_eq!(
        builder.spool_counts().incoming,
        3,
        "dep, top and multi were built"
    );

    let push = builder.push_once();
    assert!(push.status.success(), "{}", show(&push));
    assert!(
        String::from_utf8_lossy(&push.stdout).contains("3 prepared, 3 delivered"),
        "{}",
        show(&push)
    );
    assert_eq!(builder.spool_counts().undelivered(), 0);

    let key: NixPublicKey = builder.public_key.parse().unwrap();

    // The dependent derivation: subject digest = path-info NAR hash in hex; the dependency and
    // the .drv (with the SHA-256 of its file) among the resolved dependencies.
    let info = store.path_info(top);
    let (entries, _) = lookup(&log, &top.hash().to_string(), 1);
    assert_eq!(entries.len(), 1);
    let e = &entries[0].entry;
    e.verify(&key).unwrap();
    assert_eq!(hex_digest(e, top), info.nar_hash.to_hex());
    let drv = store.deriver(top);
    assert_eq!(e.statement().derivation(), Some(drv.to_string().as_str()));
    let dep = info.references[0].clone();
    assert!(dep.name().ends_with("-dep"));
    let dep_info = store.path_info(&dep);
    assert_eq!(
        resolved(e),
        BTreeSet::from([
            (drv.to_string(), drv_sha256(&store, &drv)),
            (dep.to_string(), dep_info.nar_hash.to_hex()),
        ])
    );
    let subject = &e.statement().subject[0];
    assert_eq!(subject.annotations["narSize"], info.nar_size);
    assert_eq!(subject.annotations["references"][0], dep.to_string());
    assert_eq!(e.statement().built_locally(), Some(true));
    assert!(e.statement().counter().is_some());
    assert_eq!(
        e.statement().builder_id(),
        "https://provenix.dev/builder/alpha"
    );
    let bd = &e.statement().predicate.build_definition;
    assert_eq!(
        bd.external_parameters["source"]["uri"],
        "git+https://example.org/pkgs"
    );
    assert_eq!(bd.internal_parameters["system"], "x86_64-linux");
    let md = &e.statement().predicate.run_details.metadata;
    let (started, finished) = (
        md.started_on.clone().unwrap(),
        md.finished_on.clone().unwrap(),
    );
    assert!(started <= finished, "{started} <= {finished}");

    // The dependency's own entry: no inputs but its .drv.
    let (entries, _) = lookup(&log, &dep.hash().to_string(), 1);
    let d = &entries[0].entry;
    d.verify(&key).unwrap();
    assert_eq!(hex_digest(d, &dep), dep_info.nar_hash.to_hex());
    let dep_drv = store.deriver(&dep);
    assert_eq!(
        resolved(d),
        BTreeSet::from([(dep_drv.to_string(), drv_sha256(&store, &dep_drv))])
    );

    // The multi-output derivation: one entry, both outputs as subjects, found under both keys.
    let (by_out, _) = lookup(&log, &m_out.hash().to_string(), 1);
    let (by_dev, _) = lookup(&log, &m_dev.hash().to_string(), 1);
    assert_eq!(by_out.len(), 1);
    assert_eq!(by_dev.len(), 1);
    assert_eq!(by_out[0].index, by_dev[0].index);
    let m = &by_out[0].entry;
    m.verify(&key).unwrap();
    assert_eq!(m.statement().subject.len(), 2);
    for (p, name) in [(m_out, "out"), (m_dev, "dev")] {
        assert_eq!(hex_digest(m, p), store.path_info(p).nar_hash.to_hex());
        let s = m
            .statement()
            .subject
            .iter()
            .find(|s| s.name == p.to_string())
            .unwrap();
        assert_eq!(s.annotations["output"], name);
    }
    let dev_subject = m
        .statement()
        .subject
        .iter()
        .find(|s| s.name == m_dev.to_string())
        .unwrap();
    assert_eq!(dev_subject.annotations["references"][0], dep.to_string());
    assert_eq!(
        resolved(m),
        BTreeSet::from([
            (m_drv.to_string(), drv_sha256(&store, &m_drv)),
            (dep.to_string(), dep_info.nar_hash.to_hex()),
        ])
    );
    assert_eq!(tree_size(&log), 3);
}

#[test]
fn log_outages_lose_nothing_and_every_log_gets_every_entry_once() {
    if !require_tool("nix-build") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let builder = Builder::new(&tmp.path().join("alpha"), "alpha", &[], "");
    // Two logs, started once to learn their ports, then both stopped.
    let (a_dir, b_dir) = (tmp.path().join("log-a"), tmp.path().join("log-b"));
    let mut a = start_log(&a_dir, &builder);
    let mut b = start_log(&b_dir, &builder);
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    builder.write_config(&[&a_url, &b_url], "");
    a.kill9();
    b.kill9();

    // Builds succeed with every log down; the hook keeps the records.
    let store = builder.store(&tmp.path().join("store"));
    let expr = write_test_expr(tmp.path(), &unique("outage"));
    let outs = store.build(&expr, &["top"]);
    let push = builder.push_once();
    assert_eq!(push.status.code(), Some(2), "{}", show(&push));
    assert!(
        String::from_utf8_lossy(&push.stderr).contains("2 records remain in the spool"),
        "{}",
        show(&push)
    );
    assert_eq!(builder.spool_counts().undelivered(), 2);

    // Log A returns (same port, same data); B is still down: A gets the entries, the spool
    // keeps them for B.
    let restart = |dir: &Path, url: &str| {
        let listen = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        Provenixd::start(
            dir,
            &ServerOpts {
                listen: Some(listen),
                ..Default::default()
            },
        )
    };
    let a = restart(&a_dir, &a_url);
    let push = builder.push_once();
    assert_eq!(push.status.code(), Some(2), "{}", show(&push));
    assert_eq!(builder.spool_counts().undelivered(), 2);
    let (in_a, _) = lookup(&a, &outs[0].hash().to_string(), 1);
    assert_eq!(in_a.len(), 1);

    // Another build while B is down.
    let multi = store.build(&expr, &["multi"]);
    assert_eq!(builder.spool_counts().undelivered(), 3);

    // B returns: everything reaches B, A answers the re-submissions as duplicates, and the
    // spool empties.
    let b = restart(&b_dir, &b_url);
    let push = builder.push_once();
    assert!(push.status.success(), "{}", show(&push));
    let stdout = String::from_utf8_lossy(&push.stdout);
    assert!(
        stdout.contains("3 delivered (2 already in the log)"),
        "{}",
        show(&push)
    );
    assert_eq!(
        builder.spool_counts(),
        provenix::spool::SpoolCounts::default()
    );
    for log in [&a, &b] {
        for p in outs.iter().chain(&multi) {
            let (e, _) = lookup(log, &p.hash().to_string(), 1);
            assert_eq!(e.len(), 1, "{p} in {}", log.url);
            assert_eq!(
                hex_digest(&e[0].entry, p),
                store.path_info(p).nar_hash.to_hex()
            );
        }
        assert_eq!(
            tree_size(log),
            3,
            "dep, top and multi once each in {}",
            log.url
        );
    }
}

#[test]
fn a_non_reproducible_rebuild_is_a_new_entry_but_a_repeated_hook_call_is_not() {
    if !require_tool("nix-build") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let builder = Builder::new(&tmp.path().join("alpha"), "alpha", &[], "");
    let log = start_log(&tmp.path().join("log"), &builder);
    builder.write_config(&[&log.url], "");
    let expr = write_test_expr(tmp.path(), &unique("nondet"));
    let s1 = builder.store(&tmp.path().join("store-1"));
    let s2 = builder.store(&tmp.path().join("store-2"));
    let o1 = s1.build(&expr, &["nondet"]);
    let o2 = s2.build(&expr, &["nondet"]);
    assert_eq!(o1, o2, "same derivation, same output path");
    let out = &o1[0];
    let (h1, h2) = (s1.path_info(out).nar_hash, s2.path_info(out).nar_hash);
    assert_ne!(h1, h2, "date +%s%N differs between the two builds");

    // Nix calling the hook again for the same build (twice) adds nothing.
    let drv = s1.deriver(out);
    for _ in 0..2 {
        let h = builder.run_hook(&s1, &drv);
        assert!(h.status.success() && h.stderr.is_empty(), "{}", show(&h));
    }
    assert_eq!(builder.spool_counts().incoming, 4);
    let push = builder.push_once();
    assert!(push.status.success(), "{}", show(&push));
    assert!(
        String::from_utf8_lossy(&push.stdout).contains(
            "2 prepared, 2 delivered (0 already in the log), 2 repeated hook calls dropped"
        ),
        "{}",
        show(&push)
    );
    let (entries, size) = lookup(&log, &out.hash().to_string(), 2);
    assert_eq!(entries.len(), 2);
    assert_eq!(size, 2);
    let digests: BTreeSet<String> = entries.iter().map(|e| hex_digest(&e.entry, out)).collect();
    assert_eq!(digests, BTreeSet::from([h1.to_hex(), h2.to_hex()]));
    let counters: BTreeSet<u64> = entries
        .iter()
        .map(|e| e.entry.statement().counter().unwrap())
        .collect();
    assert_eq!(counters.len(), 2, "each build has its own counter");

    // Later repeats (after delivery) are still recognised.
    assert!(builder.run_hook(&s2, &drv).status.success());
    let push = builder.push_once();
    assert!(push.status.success(), "{}", show(&push));
    assert!(
        String::from_utf8_lossy(&push.stdout).contains(
            "0 prepared, 0 delivered (0 already in the log), 1 repeated hook calls dropped"
        ),
        "{}",
        show(&push)
    );
    assert_eq!(tree_size(&log), 2);
}

#[test]
fn crashes_between_steps_resubmit_identical_envelopes() {
    if !require_tool("nix-build") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let builder = Builder::new(
        &tmp.path().join("alpha"),
        "alpha",
        &["http://127.0.0.1:9"],
        "",
    );
    let store = builder.store(&tmp.path().join("store"));
    let expr = write_test_expr(tmp.path(), &unique("crash"));
    let dep = store.build(&expr, &["dep"]);
    // The hook appended one line to the spool's journal.
    let record = builder.spool.join("incoming").join("journal");
    let saved_record = std::fs::read(&record).unwrap();

    // Log unreachable: the record becomes a signed pending entry.
    let push = builder.push_once();
    assert_eq!(push.status.code(), Some(2), "{}", show(&push));
    let c = builder.spool_counts();
    assert_eq!((c.incoming, c.pending), (0, 1));
    // A crash after writing pending/ but before the hook record was marked consumed: it is
    // read again.
    std::fs::write(&record, &saved_record).unwrap();
    assert_eq!(builder.spool_counts().incoming, 1);
    let pending = std::fs::read_dir(builder.spool.join("pending"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let saved_batch = std::fs::read(&pending).unwrap();

    let log = start_log(&tmp.path().join("log"), &builder);
    builder.write_config(&[&log.url], "");
    let push = builder.push_once();
    assert!(push.status.success(), "{}", show(&push));
    assert!(
        String::from_utf8_lossy(&push.stdout).contains(
            "0 prepared, 1 delivered (0 already in the log), 1 repeated hook calls dropped"
        ),
        "{}",
        show(&push)
    );
    // A crash after the log acknowledged but before pending/ was cleared: the same bytes are
    // submitted again and the log answers with the same index.
    std::fs::write(&pending, &saved_batch).unwrap();
    let push = builder.push_once();
    assert!(push.status.success(), "{}", show(&push));
    assert!(
        String::from_utf8_lossy(&push.stdout).contains("1 delivered (1 already in the log)"),
        "{}",
        show(&push)
    );
    let (entries, _) = lookup(&log, &dep[0].hash().to_string(), 1);
    assert_eq!(entries.len(), 1);
    assert_eq!(tree_size(&log), 1);
    // The counter is persisted next to the spool and never reused.
    assert_eq!(
        std::fs::read_to_string(builder.spool.join("counter"))
            .unwrap()
            .trim(),
        "2"
    );
}

#[test]
fn the_hook_never_fails_a_build() {
    if !require_tool("nix-build") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let builder = Builder::new(
        &tmp.path().join("alpha"),
        "alpha",
        &["http://127.0.0.1:9"],
        "",
    );
    let expr = write_test_expr(tmp.path(), &unique("nofail"));

    // The spool directory is gone: the build still succeeds, and Nix shows why nothing was
    // recorded.
    std::fs::remove_dir_all(&builder.spool).unwrap();
    let store = builder.store(&tmp.path().join("store"));
    let mut c = store.command("nix-build");
    c.arg(&expr).args([
        "-A",
        "dep",
        "--no-out-link",
        "--option",
        "sandbox-paths",
        provenix_e2e::nix::SANDBOX_PATHS,
    ]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("provenix hook: spool directory") && stderr.contains("does not exist"),
        "{stderr}"
    );

    // No config at all, or an unreadable one: exit 0 and a message.
    let drv = store.instantiate(&expr, "top");
    for config in ["", "/nonexistent/builder.toml"] {
        let o = std::process::Command::new(&builder.hook.program)
            .env("PROVENIX_CONFIG", config)
            .env("DRV_PATH", drv.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("this build is NOT recorded"),
            "{}",
            show(&o)
        );
    }
    // And with everything in place the hook is silent.
    std::fs::create_dir(&builder.spool).unwrap();
    let o = builder.run_hook(&store, &drv);
    assert!(
        o.status.success() && o.stderr.is_empty() && o.stdout.is_empty(),
        "{}",
        show(&o)
    );
    assert_eq!(builder.spool_counts().incoming, 1);
}

#[test]
fn the_push_service_delivers_parallel_builds_exactly_once_across_kills() {
    if !require_tool("nix-build") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let builder = Builder::new(&tmp.path().join("alpha"), "alpha", &[], "");
    let log = start_log(&tmp.path().join("log"), &builder);
    builder.write_config(&[&log.url], "");
    let store = builder.store(&tmp.path().join("store"));
    let expr = write_test_expr(tmp.path(), &unique("service"));

    // The service runs while Nix builds 30 derivations in parallel; it is SIGKILLed twice
    // mid-way and restarted.
    let mut push = builder.spawn_push();
    let build = {
        let (store, expr) = (store.clone(), expr.clone());
        std::thread::spawn(move || store.try_build(&expr, &["many"], &["--max-jobs", "4"]))
    };
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(400));
        push.kill().unwrap();
        push.wait().unwrap();
        push = builder.spawn_push();
    }
    let outs = build
        .join()
        .unwrap()
        .unwrap_or_else(|o| panic!("{}", show(&o)));
    assert_eq!(outs.len(), 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    while builder.spool_counts().undelivered() > 0 {
        assert!(
            Instant::now() < deadline,
            "spool not drained: {:?}",
            builder.spool_counts()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    push.kill().unwrap();
    push.wait().unwrap();
    assert_eq!(
        builder.spool_counts(),
        provenix::spool::SpoolCounts::default()
    );
    for p in &outs {
        let (e, _) = lookup(&log, &p.hash().to_string(), 1);
        assert_eq!(e.len(), 1, "{p}");
    }
    assert_eq!(tree_size(&log), 30, "every build exactly once");
}

#[test]
fn a_log_that_refuses_the_builder_keeps_the_records_until_it_accepts_it() {
    if !require_tool("nix-build") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let builder = Builder::new(&tmp.path().join("alpha"), "alpha", &[], "");
    // The log does not know this builder yet.
    let data = tmp.path().join("log");
    let log = Provenixd::start(&data, &ServerOpts::default());
    builder.write_config(&[&log.url], "");
    let store = builder.store(&tmp.path().join("store"));
    let expr = write_test_expr(tmp.path(), &unique("unknown"));
    let out = store.build(&expr, &["dep"]);
    let push = builder.push_once();
    assert_eq!(push.status.code(), Some(2), "{}", show(&push));
    assert!(
        String::from_utf8_lossy(&push.stderr).contains("unknown_builder"),
        "{}",
        show(&push)
    );
    let c = builder.spool_counts();
    assert_eq!((c.pending, c.failed), (1, 0), "kept, not set aside");
    // Once the operator allows the builder (the running log sees it within a second), the
    // same entry goes through.
    add_builder(&data, &ServerOpts::default(), &builder.public_key);
    std::thread::sleep(Duration::from_millis(1500));
    let push = builder.push_once();
    assert!(push.status.success(), "{}", show(&push));
    let (e, _) = lookup(&log, &out[0].hash().to_string(), 1);
    assert_eq!(e.len(), 1);
    assert_eq!(
        builder.spool_counts(),
        provenix::spool::SpoolCounts::default()
    );
}
