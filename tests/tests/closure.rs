//! `provenix verify --closure` with real Nix builders: every node of a closure decided, and each
//! agreeing builder's recorded dependencies checked against what the quorum agrees on.
//!
//! Three builders build `app`, which references `top` and `solo`; `top` references `dep`.
//! `dep`'s content is the builder's `/flavour` file (beta's differs), `top`'s does not depend on
//! `dep`'s content (so beta agrees on `top` while having built it against another `dep`), and
//! `solo` is not reproducible (no two builders agree).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use provenix::logclient::LogClient;
use provenix_core::checkpoint::LogVerifier;
use provenix_core::nix::StorePath;
use provenix_e2e::nix::{show, unique, Builder, Store};
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_e2e::substituter::{copy_to_cache, StaticServer};
use provenix_e2e::{bin, require_tool, runtime};

fn write_expr(dir: &Path, tag: &str) -> std::path::PathBuf {
    let expr = format!(
        r#"let
  mk = name: script: derivation {{ inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; }};
  dep = mk "{tag}-dep" "read x < /flavour; echo $x > $out";
  top = mk "{tag}-top" "test -e ${{dep}}; echo ${{dep}} > $out";
  solo = mk "{tag}-solo" "/usr/bin/date +%s%N > $out";
in {{
  inherit dep top solo;
  app = mk "{tag}-app" "echo ${{top}} ${{solo}} > $out";
}}
"#
    );
    let file = dir.join(format!("{tag}.nix"));
    std::fs::write(&file, expr).unwrap();
    file
}

fn verify(args: &[&str]) -> (i32, serde_json::Value, Output) {
    let o = Command::new(bin("provenix"))
        .arg("verify")
        .args(args)
        .arg("--json")
        .env("PROVENIX_LOG", "warn")
        .env_remove("NIX_REMOTE")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    (o.status.code().unwrap_or(-1), v, o)
}

fn node<'a>(v: &'a serde_json::Value, p: &StorePath) -> &'a serde_json::Value {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["path"] == p.to_string())
        .unwrap_or_else(|| panic!("{p} not in {v:#}"))
}

#[test]
fn every_node_and_every_link_of_a_closure() {
    if !require_tool("nix-build") || !require_tool("python3") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let names = ["alpha", "beta", "gamma"];
    let builders: Vec<Builder> = names
        .iter()
        .map(|n| Builder::new(&dir.join(n), n, &[], ""))
        .collect();
    let data = dir.join("log");
    let opts = ServerOpts {
        origin: Some("closure.test".into()),
        ..ServerOpts::default()
    };
    for b in &builders {
        add_builder(&data, &opts, &b.public_key);
    }
    let log = Provenixd::start(&data, &opts);
    for b in &builders {
        b.write_config(&[&log.url], "");
    }
    let expr = write_expr(dir, &unique("closure"));
    let mut stores = Vec::new();
    for (b, flavour) in builders.iter().zip(["same", "other", "same"]) {
        let store = b.store(&dir.join(format!("{}-store", b.name)));
        let fl = b.dir.join("flavour");
        std::fs::write(&fl, format!("{flavour}\n")).unwrap();
        let sb = format!("/flavour={}", fl.display());
        store
            .try_build(&expr, &["app"], &["--option", "extra-sandbox-paths", &sb])
            .unwrap_or_else(|o| panic!("{}: {}", b.name, show(&o)));
        let push = b.push_once();
        assert!(push.status.success(), "{}: {}", b.name, show(&push));
        stores.push(store);
    }
    let alpha = &stores[0];
    let app = alpha.build(&expr, &["app"]).remove(0);
    let top = alpha.build(&expr, &["top"]).remove(0);
    let dep = alpha.build(&expr, &["dep"]).remove(0);
    let solo = alpha.build(&expr, &["solo"]).remove(0);
    // 4 paths × 3 builders, integrated.
    let client = LogClient::new(&log.url, Duration::from_secs(10)).unwrap();
    let verifier: LogVerifier = log.verifier_key.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = runtime()
            .block_on(client.lookup(&app.hash().to_string()))
            .unwrap();
        if r.verify(&verifier).unwrap().1.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "entries not integrated");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cache = dir.join("cache");
    copy_to_cache(alpha, &cache, &[app.to_string()]);
    let upstream = StaticServer::start(&cache);

    let trust = |name: &str, builders: &[&Builder], upstreams: bool| {
        let mut t = format!(
            "[[log]]\nurl = {:?}\nkey = {:?}\n\n",
            log.url, log.verifier_key
        );
        for b in builders {
            t.push_str(&format!(
                "[[builder]]\nname = {:?}\nkey = {:?}\n",
                b.name, b.public_key
            ));
        }
        let names: Vec<&str> = builders.iter().map(|b| b.name.as_str()).collect();
        t.push_str(&format!(
            "[policy]\nthreshold = \"2 of [{}]\"\ndissent = \"ignore\"\n",
            names.join(", ")
        ));
        if upstreams {
            t.push_str(&format!(
                "[substituter]\nupstreams = [{:?}]\nsigning-key-file = \"/nonexistent\"\n",
                upstream.url
            ));
        }
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(&p, t).unwrap();
        p
    };
    let all = trust("all", &[&builders[0], &builders[1], &builders[2]], true);
    let state = dir.join("state.json");
    let common = |cfg: &Path| {
        vec![
            "--config".to_owned(),
            cfg.display().to_string(),
            "--state".to_owned(),
            state.display().to_string(),
            "--closure".to_owned(),
        ]
    };
    let run = |cfg: &Path, store: &str, path: &StorePath| {
        let mut a = common(cfg);
        a.extend(["--store".to_owned(), store.to_owned(), path.to_string()]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        verify(&a)
    };
    let dep_hash = |s: &Store| s.path_info(&dep).nar_hash.to_nix32_prefixed();
    let (alpha_dep, beta_dep) = (dep_hash(&stores[0]), dep_hash(&stores[1]));
    assert_ne!(alpha_dep, beta_dep);

    // From alpha's store.
    let (code, v, o) = run(&all, &alpha.remote(), &app);
    assert_eq!(code, 1, "{}", show(&o));
    assert_eq!(v["source"], "local_store");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 4, "{v:#}");
    assert_eq!(
        (v["trusted"].as_u64(), v["notTrusted"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(node(&v, &solo)["trusted"], false);
    assert_eq!(
        node(&v, &dep)["agreed"],
        serde_json::json!(["alpha", "gamma"])
    );
    let w = v["weakest"].as_array().unwrap();
    assert_eq!(w[0]["kind"], "not_trusted");
    assert_eq!(w[0]["path"], solo.to_string());
    let disagree: Vec<&serde_json::Value> = w
        .iter()
        .filter(|x| x["kind"] == "dependency_disagrees")
        .collect();
    assert_eq!(disagree.len(), 2, "{v:#}");
    assert_eq!(v["linksDisagreeing"], 2);
    let top_msg = disagree
        .iter()
        .find(|x| x["path"] == top.to_string())
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        top_msg,
        format!(
            "beta built it against {dep} with {beta_dep}, but the quorum agrees on {alpha_dep}"
        )
    );
    // Everything before the unverified links.
    assert!(
        w[1..3].iter().all(|x| x["kind"] == "dependency_disagrees"),
        "{v:#}"
    );
    assert!(
        w[3..].iter().all(|x| x["kind"] == "dependency_unverified"),
        "{v:#}"
    );
    let links = node(&v, &top)["links"].as_array().unwrap();
    assert_eq!(
        links.len(),
        3,
        "alpha, beta and gamma each recorded dep: {v:#}"
    );
    assert_eq!(
        links.iter().filter(|l| l["status"] == "agrees").count(),
        2,
        "{v:#}"
    );

    // From beta's store: its dep is not what the quorum agrees on.
    let (code, v, o) = run(&all, &stores[1].remote(), &top);
    assert_eq!(code, 1, "{}", show(&o));
    assert_eq!(node(&v, &dep)["contentMismatch"], beta_dep);
    assert!(v["weakest"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["kind"] == "content_differs"
            && x["message"]
                == format!(
                    "the local store holds {beta_dep}, but the quorum agrees on {alpha_dep}"
                )));

    // Not in the local store: the upstream narinfos, then the entries, give the same closure.
    let empty = format!("local?root={}", dir.join("empty").display());
    let (code, v, o) = run(&all, &empty, &app);
    assert_eq!(code, 1, "{}", show(&o));
    assert_eq!(v["source"], "upstreams");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 4, "{v:#}");
    let no_upstream = trust(
        "entries",
        &[&builders[0], &builders[1], &builders[2]],
        false,
    );
    let (code, v, o) = run(&no_upstream, &empty, &app);
    assert_eq!(code, 1, "{}", show(&o));
    assert_eq!(v["source"], "entries");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 4, "{v:#}");
    assert_eq!(v["unwalked"], serde_json::json!([solo.to_string()]));

    // Trusting only alpha and gamma: top's closure is trusted and every link agrees.
    let ag = trust("ag", &[&builders[0], &builders[2]], true);
    let (code, v, o) = run(&ag, &alpha.remote(), &top);
    assert_eq!(code, 0, "{}", show(&o));
    assert_eq!(v["weakest"], serde_json::json!([]));
    assert_eq!(v["linksChecked"], 2);
    // The text form names the weakest links.
    let o = Command::new(bin("provenix"))
        .args(["verify", "--config"])
        .arg(&all)
        .arg("--state")
        .arg(&state)
        .args(["--closure", "--store", &alpha.remote(), &app.to_string()])
        .env("PROVENIX_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "closure of {app}: 4 path(s) (references from the local store)"
        )),
        "{out}"
    );
    assert!(out.contains("trusted: 3, not trusted: 1"), "{out}");
    assert!(out.contains(&format!("  NOT TRUSTED {solo}: ")), "{out}");
    assert!(
        out.contains(&format!("  DISAGREES {top}: beta built it against {dep}")),
        "{out}"
    );
}
