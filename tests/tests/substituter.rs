//! Issue 4 end to end: three builders (`alpha`, `beta`, `gamma`) with their own chroot stores,
//! keys and `file://` caches build real derivations with Nix 2.8; their hooks and `provenix
//! push` put the entries in three real `provenixd` logs; `provenix substituter` decides with the
//! trust file and a fresh client store whose only substituter is the proxy (and only trusted key
//! the proxy's) substitutes or builds locally. One set of builds serves every assertion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use provenix::logclient::LogClient;
use provenix_core::checkpoint::LogVerifier;
use provenix_core::nix::{NixSecretKey, StorePath};
use provenix_e2e::nix::{show, unique, Builder, Store};
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use provenix_e2e::substituter::{
    client_build, copy_to_cache, proxy_key, Proxy, StaticServer, Trust,
};
use provenix_e2e::{gen, require_tool};
use provenix_e2e::{get, rt};

fn head(url: &str) -> u16 {
    rt().block_on(async {
        reqwest::Client::new()
            .head(url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

fn narinfo(proxy: &Proxy, p: &StorePath) -> (u16, String) {
    get(&format!("{}/{}.narinfo", proxy.url, p.hash()))
}

fn decision(proxy: &Proxy, p: &StorePath) -> serde_json::Value {
    let (s, body) = get(&format!("{}/v1/decision/{}?fresh=1", proxy.url, p.hash()));
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn reason_codes(d: &serde_json::Value) -> Vec<String> {
    d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut c = r["code"].as_str().unwrap().to_owned();
            for k in ["rejection", "failure"] {
                if let Some(x) = r[k]["code"].as_str() {
                    c = format!("{c}:{x}");
                }
            }
            c
        })
        .collect()
}

/// The test derivations: `top` (depends on `dep`), `only`, `nondet`, `flavour` (its output is
/// the builder's `/flavour` file) and `chain`, a 55-deep chain whose closure has 56 paths.
fn write_expr(dir: &Path, tag: &str) -> PathBuf {
    let expr = format!(
        r#"let
  mk = name: script: derivation {{ inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; }};
  dep = mk "{tag}-dep" "echo dependency-{tag} > $out";
  chain = n: let prev = if n == 1 then dep else chain (n - 1); in
    mk "{tag}-chain-${{toString n}}" "read x < ${{prev}}; echo ${{toString n}} ${{prev}} > $out";
in {{
  inherit dep;
  top = mk "{tag}-top" "read x < ${{dep}}; echo $x ${{dep}} > $out";
  only = mk "{tag}-only" "echo only-{tag} > $out";
  nondet = mk "{tag}-nondet" "/usr/bin/date +%s%N > $out";
  flavour = mk "{tag}-flavour" "read x < /flavour; echo $x > $out";
  chain = chain 55;
}}
"#
    );
    let file = dir.join(format!("{tag}.nix"));
    std::fs::write(&file, expr).unwrap();
    file
}

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    logs: Vec<Provenixd>,
    log_dirs: Vec<PathBuf>,
    builders: Vec<Builder>,
    _caches: Vec<StaticServer>,
    upstreams: Vec<String>,
    expr: PathBuf,
    proxy_sec: PathBuf,
}

impl World {
    fn trust(&self, threshold: &str, dissent: &str, state: &str) -> Trust {
        Trust {
            logs: self
                .logs
                .iter()
                .map(|l| (l.url.clone(), l.verifier_key.clone()))
                .collect(),
            builders: self.builders[..3]
                .iter()
                .map(|b| (b.name.clone(), b.public_key.clone()))
                .collect(),
            threshold: threshold.into(),
            dissent: dissent.into(),
            upstreams: self.upstreams.clone(),
            signing_key_file: self.proxy_sec.clone(),
            state_file: self.dir.join(state),
            extra: String::new(),
        }
    }

    fn proxy(&self, name: &str, trust: &Trust) -> Proxy {
        Proxy::start(&trust.write(&self.dir.join(format!("{name}.toml"))))
    }

    fn client(&self, name: &str) -> Store {
        Store::new(&self.dir.join(format!("client-{name}")))
    }
}

/// Waits until every log holds `n` integrated entries for `p`.
fn wait_entries(logs: &[Provenixd], p: &StorePath, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for log in logs {
        let verifier: LogVerifier = log.verifier_key.parse().unwrap();
        let client = LogClient::new(&log.url, Duration::from_secs(10)).unwrap();
        loop {
            let resp = rt().block_on(client.lookup(&p.hash().to_string())).unwrap();
            let (_, entries) = resp.verify(&verifier).unwrap();
            if entries.len() >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{p}: {} of {n} entries",
                entries.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn provenix(args: &[&str]) -> Output {
    Command::new(provenix_e2e::bin("provenix"))
        .args(args)
        .env("PROVENIX_LOG", "warn")
        .output()
        .unwrap()
}

/// Builds everything: logs, builders, builds, pushes, caches.
fn world() -> (World, Vec<StorePath>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let names = ["alpha", "beta", "gamma", "mallory"];
    let builders: Vec<Builder> = names
        .iter()
        .map(|n| Builder::new(&dir.join(n), n, &[], ""))
        .collect();
    let mut logs = Vec::new();
    let mut log_dirs = Vec::new();
    for i in 0..3 {
        let d = dir.join(format!("log{i}"));
        let opts = ServerOpts {
            origin: Some(format!("log{i}.test")),
            ..ServerOpts::default()
        };
        for b in &builders {
            add_builder(&d, &opts, &b.public_key);
        }
        logs.push(Provenixd::start(&d, &opts));
        log_dirs.push(d);
    }
    let urls: Vec<&str> = logs.iter().map(|l| l.url.as_str()).collect();
    for b in &builders {
        b.write_config(&urls, "");
    }
    let expr = write_expr(&dir, &unique("subst"));

    // What each builder builds, and its /flavour.
    let plan: [(&[&str], &str); 4] = [
        (&["top", "only", "nondet", "flavour", "chain"], "same"),
        (&["top", "nondet", "flavour", "chain"], "same"),
        (&["top", "nondet", "flavour"], "other"),
        (&["only"], "same"),
    ];
    let mut caches = Vec::new();
    let mut upstreams = Vec::new();
    let mut outs = Vec::new();
    for (b, (attrs, flavour)) in builders.iter().zip(plan) {
        let store = b.store(&dir.join(format!("{}-store", b.name)));
        let fl = b.dir.join("flavour");
        std::fs::write(&fl, format!("{flavour}\n")).unwrap();
        let sb = format!("/flavour={}", fl.display());
        let built = store
            .try_build(&expr, attrs, &["--option", "extra-sandbox-paths", &sb])
            .unwrap_or_else(|o| panic!("{}: {}", b.name, show(&o)));
        let push = b.push_once();
        assert!(push.status.success(), "{}: {}", b.name, show(&push));
        let cache = dir.join(format!("{}-cache", b.name));
        copy_to_cache(
            &store,
            &cache,
            &built.iter().map(ToString::to_string).collect::<Vec<_>>(),
        );
        let srv = StaticServer::start(&cache);
        upstreams.push(srv.url.clone());
        caches.push(srv);
        if b.name == "alpha" {
            outs = built;
        }
    }
    // alpha built all five, in attribute order.
    wait_entries(&logs, &outs[0], 3); // top: alpha, beta, gamma
    wait_entries(&logs, &outs[4], 2); // chain: alpha, beta
    wait_entries(&logs, &outs[1], 2); // only: alpha, mallory
    let (proxy_sec, _) = proxy_key(&dir.join("proxy-key"), "proxy-test-1");
    (
        World {
            _tmp: tmp,
            dir,
            logs,
            log_dirs,
            builders,
            _caches: caches,
            upstreams,
            expr,
            proxy_sec,
        },
        outs,
    )
}

#[test]
fn quorum_substituter_with_real_nix_builders_and_logs() {
    if !require_tool("nix-build") || !require_tool("python3") {
        return;
    }
    let (mut w, outs) = world();
    let [top, only, nondet, flavour, chain] = <[StorePath; 5]>::try_from(outs).unwrap();
    let main = w.proxy(
        "main",
        &w.trust("2 of [alpha, beta, gamma]", "ignore", "state-main.json"),
    );

    // --- 2 of 3, all three built it: a fresh client substitutes it, no local build. ---
    let c1 = w.client("one");
    let o = client_build(
        &c1,
        &main.url,
        &main.public_key,
        &w.expr,
        "top",
        Some(0),
        &[],
    );
    assert!(
        o.status.success(),
        "substitution of top failed: {}",
        show(&o)
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("building '"),
        "{}",
        show(&o)
    );
    assert!(c1.real(&top).exists());
    let (s, text) = narinfo(&main, &top);
    assert_eq!(s, 200);
    assert!(text.ends_with('\n'));
    assert!(
        text.contains(&format!("URL: nar/{}-", top.hash())),
        "{text}"
    );
    assert!(text.contains("Compression: none\n"), "{text}");
    let sigs: Vec<&str> = text.lines().filter(|l| l.starts_with("Sig: ")).collect();
    assert_eq!(sigs.len(), 1, "only the proxy's signature: {text}");
    assert!(sigs[0].starts_with("Sig: proxy-test-1:"), "{text}");
    assert_eq!(head(&format!("{}/{}.narinfo", main.url, top.hash())), 200);
    let nar_url = text.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
    assert_eq!(head(&format!("{}/{nar_url}", main.url)), 200);
    assert_eq!(head(&format!("{}/{}.narinfo", main.url, only.hash())), 404);
    // Any other method, path or malformed hash is a 404 too, never a 4xx/5xx of another kind.
    let status = |m: reqwest::Method, u: String| {
        rt().block_on(async {
            reqwest::Client::new()
                .request(m, u)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_eq!(
        status(
            reqwest::Method::POST,
            format!("{}/{}.narinfo", main.url, top.hash())
        ),
        404
    );
    assert_eq!(
        status(reqwest::Method::GET, format!("{}/zzzz.narinfo", main.url)),
        404
    );
    assert_eq!(
        status(reqwest::Method::GET, format!("{}/nar/%FF.nar", main.url)),
        404
    );
    assert_eq!(
        status(
            reqwest::Method::GET,
            format!("{}/realisations/x.doi", main.url)
        ),
        404
    );
    let d = decision(&main, &top);
    assert_eq!(d["verdict"]["status"], "trusted");
    assert_eq!(d["agreed"], serde_json::json!(["alpha", "beta", "gamma"]));
    assert_eq!(d["substituter"]["served"], true);

    // --- A closure of 56 paths substitutes completely through the proxy. ---
    let o = client_build(
        &c1,
        &main.url,
        &main.public_key,
        &w.expr,
        "chain",
        Some(0),
        &[],
    );
    assert!(
        o.status.success(),
        "substitution of chain failed: {}",
        show(&o)
    );
    let q = c1
        .command("nix-store")
        .args(["-qR"])
        .arg(chain.to_string())
        .output()
        .unwrap();
    let closure = String::from_utf8_lossy(&q.stdout).lines().count();
    assert!(closure >= 50, "closure of {closure} paths");

    // --- Only one trusted builder (plus mallory, who is not in the trust file): 404, and Nix
    //     builds it locally. ---
    let (s, body) = narinfo(&main, &only);
    assert_eq!(s, 404, "{body}");
    let d = decision(&main, &only);
    assert_eq!(d["verdict"]["status"], "not_trusted");
    assert_eq!(d["agreed"], serde_json::json!(["alpha"]));
    let codes = reason_codes(&d);
    assert!(
        codes.contains(&"entry_rejected:unknown_builder".to_owned()),
        "{codes:?}"
    );
    assert!(codes.contains(&"threshold_not_met".to_owned()), "{codes:?}");
    let c2 = w.client("two");
    let o = client_build(&c2, &main.url, &main.public_key, &w.expr, "only", None, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("building '"),
        "{}",
        show(&o)
    );
    // The NAR endpoint is gated too.
    let (s, _) = get(&format!(
        "{}/nar/{}-{}.nar",
        main.url,
        only.hash(),
        "0".repeat(52)
    ));
    assert_eq!(s, 404);

    // --- Builders disagree (non-reproducible): 404, built locally. ---
    assert_eq!(narinfo(&main, &nondet).0, 404);
    let d = decision(&main, &nondet);
    assert_eq!(d["verdict"]["status"], "not_trusted");
    assert_eq!(d["candidates"].as_array().unwrap().len(), 3);
    let o = client_build(
        &c2,
        &main.url,
        &main.public_key,
        &w.expr,
        "nondet",
        None,
        &[],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("building '"),
        "{}",
        show(&o)
    );

    // --- An upstream NAR that does not match the agreed hash: the NAR is a 404 (checked before
    //     a byte is sent), and Nix builds the path locally. ---
    let narinfo_file = w
        .dir
        .join("alpha-cache")
        .join(format!("{}.narinfo", top.hash()));
    let url_line = std::fs::read_to_string(&narinfo_file).unwrap();
    let nar_rel = url_line
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_owned();
    let nar_file = w.dir.join("alpha-cache").join(&nar_rel);
    let genuine = std::fs::read(&nar_file).unwrap();
    let other = w.dir.join("alpha-cache").join(
        std::fs::read_to_string(
            w.dir
                .join("alpha-cache")
                .join(format!("{}.narinfo", only.hash())),
        )
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap(),
    );
    std::fs::copy(&other, &nar_file).unwrap(); // a valid xz NAR, of another path
    let tamper = w.proxy(
        "tamper",
        &w.trust("2 of [alpha, beta, gamma]", "ignore", "state-tamper.json"),
    );
    let (s, text) = narinfo(&tamper, &top);
    assert_eq!(s, 200, "the narinfo is right; only the NAR is not");
    let nar_url = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_owned();
    let (s, body) = get(&format!("{}/{nar_url}", tamper.url));
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("upstream NAR rejected"), "{body}");
    let c4 = w.client("four");
    let o = client_build(
        &c4,
        &tamper.url,
        &tamper.public_key,
        &w.expr,
        "top",
        None,
        &[],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("building '"),
        "{}",
        show(&o)
    );
    let (_, metrics) = get(&format!("{}/metrics", tamper.url));
    assert!(
        metrics.lines().any(
            |l| l.starts_with("provenix_substituter_nar_hash_mismatches_total ")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    std::fs::write(&nar_file, genuine).unwrap();
    drop(tamper);

    // --- One dissenter (gamma's flavour differs): ignore accepts, veto and 3-of refuse. ---
    assert_eq!(narinfo(&main, &flavour).0, 200);
    let veto = w.proxy(
        "veto",
        &w.trust("2 of [alpha, beta, gamma]", "veto", "state-veto.json"),
    );
    assert_eq!(narinfo(&veto, &flavour).0, 404);
    let d = decision(&veto, &flavour);
    assert_eq!(d["verdict"]["status"], "vetoed");
    assert_eq!(d["dissent"][0]["builder"], "gamma");
    assert_eq!(narinfo(&veto, &top).0, 200);
    let all3 = w.proxy(
        "all3",
        &w.trust("3 of [alpha, beta, gamma]", "ignore", "state-all3.json"),
    );
    assert_eq!(narinfo(&all3, &flavour).0, 404);
    assert_eq!(
        decision(&all3, &flavour)["verdict"]["status"],
        "not_trusted"
    );
    assert_eq!(narinfo(&all3, &top).0, 200);
    assert_eq!(narinfo(&all3, &chain).0, 404, "gamma never built chain");
    drop((veto, all3));

    // --- An entry whose signature does not verify never counts: a trust file holding another
    //     key for beta. ---
    let mut bad = w.trust("2 of [alpha, beta, gamma]", "ignore", "state-bad.json");
    bad.builders[1].1 = NixSecretKey::generate("beta").unwrap().public().to_string();
    let badp = w.proxy("badsig", &bad);
    assert_eq!(narinfo(&badp, &chain).0, 404);
    let d = decision(&badp, &chain);
    assert!(reason_codes(&d).contains(&"entry_rejected:bad_signature".to_owned()));
    assert_eq!(d["missing"][0]["builder"], "beta");
    assert_eq!(d["missing"][0]["cause"]["code"], "entries_rejected");
    drop(badp);

    // --- provenix verify: exit codes and JSON. ---
    let cfg = main.config.to_str().unwrap().to_owned();
    let o = provenix(&["verify", "--config", &cfg, &top.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("TRUSTED"),
        "{}",
        show(&o)
    );
    let o = provenix(&["verify", "--config", &cfg, "--json", &nondet.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"]["status"], "not_trusted");
    assert_eq!(v["logs"].as_array().unwrap().len(), 3);
    let o = provenix(&["verify", "--config", &cfg, "/tmp/not-a-store-path"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));

    // --- A log that rewrites its history: same key, new tree. Its entries stop counting, for
    //     good, and the decision says why. ---
    let mut one = w.trust("2 of [alpha, beta, gamma]", "ignore", "state-one.json");
    one.logs.truncate(1);
    let onep = w.proxy("one-log", &one);
    assert_eq!(narinfo(&onep, &top).0, 200);
    let forged = rewrite_history(&mut w, &top);
    assert!(forged > 0);
    let d = decision(&onep, &top);
    assert_eq!(d["verdict"]["status"], "not_trusted");
    let codes = reason_codes(&d);
    assert!(
        codes.contains(&"log_failed:inconsistent_checkpoint".to_owned()),
        "{codes:?}"
    );
    assert_eq!(narinfo(&onep, &top).0, 404);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.dir.join("state-one.json")).unwrap()).unwrap();
    let rec = &state["logs"][&w.logs[0].verifier_key]["failed"];
    assert_eq!(rec["evidence"].as_array().unwrap().len(), 2, "{state}");
    let (_, metrics) = get(&format!("{}/metrics", onep.url));
    assert!(
        metrics.contains(&format!(
            "provenix_substituter_log_marked_failed{{log=\"{}\"}} 1",
            w.logs[0].url
        )),
        "{metrics}"
    );
    drop(onep);
    // Persistent: a restarted proxy, and verify with the same state, still refuse it.
    let onep = Proxy::start(&w.dir.join("one-log.toml"));
    assert_eq!(narinfo(&onep, &top).0, 404);
    let o = provenix(&[
        "verify",
        "--config",
        w.dir.join("one-log.toml").to_str().unwrap(),
        &top.to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("inconsistent checkpoint"),
        "{}",
        show(&o)
    );
    drop(onep);

    // --- Every log down: 404 (never 5xx), Nix builds locally, verify cannot decide. ---
    for l in &mut w.logs {
        l.kill9();
    }
    let down = w.proxy(
        "down",
        &w.trust("2 of [alpha, beta, gamma]", "ignore", "state-down.json"),
    );
    let (s, body) = narinfo(&down, &top);
    assert_eq!(s, 404, "{body}");
    let c3 = w.client("three");
    let o = client_build(&c3, &down.url, &down.public_key, &w.expr, "top", None, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("building '"),
        "{}",
        show(&o)
    );
    let d = decision(&down, &top);
    assert!(reason_codes(&d).contains(&"log_failed:unreachable".to_owned()));
    let o = provenix(&["verify", "--config", &cfg, &top.to_string()]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    drop(main);
}

/// Replaces log 0 by a log with the same key and origin but another history: forged entries
/// first, then copies of the real entries for `p`. Returns its new size.
fn rewrite_history(w: &mut World, p: &StorePath) -> u64 {
    let old = &w.logs[0];
    let client = LogClient::new(&old.url, Duration::from_secs(10)).unwrap();
    let resp = rt().block_on(client.lookup(&p.hash().to_string())).unwrap();
    let real: Vec<Vec<u8>> = resp
        .entries
        .iter()
        .map(|e| e.envelope.get().as_bytes().to_vec())
        .collect();
    let verifier: LogVerifier = old.verifier_key.parse().unwrap();
    let old_size = verifier.verify(&resp.checkpoint).unwrap().size();
    let listen = old.url.trim_start_matches("http://").to_owned();
    w.logs[0].kill9();

    let forged_dir = w.dir.join("log0-forged");
    std::fs::create_dir_all(&forged_dir).unwrap();
    std::fs::copy(w.log_dirs[0].join("log.key"), forged_dir.join("log.key")).unwrap();
    let opts = ServerOpts {
        origin: Some("log0.test".into()),
        listen: Some(listen),
        ..ServerOpts::default()
    };
    let forger = gen::builder_key("forger");
    add_builder(&forged_dir, &opts, &forger.public().to_string());
    for b in &w.builders {
        add_builder(&forged_dir, &opts, &b.public_key);
    }
    let log = Provenixd::start(&forged_dir, &opts);
    assert_eq!(log.verifier_key, w.logs[0].verifier_key, "same log key");
    let mut envs: Vec<Vec<u8>> = (0..old_size + 1)
        .map(|i| gen::signed(&forger, 900 + i, i))
        .collect();
    envs.extend(real);
    let client = LogClient::new(&log.url, Duration::from_secs(10)).unwrap();
    let size = rt().block_on(async {
        let r = client.submit(&envs, true).await.unwrap();
        verifier.verify(&r.checkpoint.unwrap()).unwrap().size()
    });
    assert!(size > old_size);
    w.logs[0] = log;
    size
}

#[test]
fn check_config_validates_trust_files() {
    let tmp = tempfile::tempdir().unwrap();
    let key = gen::builder_key("alpha").public().to_string();
    let signer = provenix_core::checkpoint::LogSigner::generate("log.test").unwrap();
    let good = format!(
        "[[log]]\nurl = \"http://127.0.0.1:1\"\nkey = \"{}\"\n[[builder]]\nname = \"alpha\"\nkey = \"{key}\"\n[policy]\nthreshold = \"1 of [alpha]\"\n",
        signer.verifier_key()
    );
    let f = tmp.path().join("trust.toml");
    std::fs::write(&f, &good).unwrap();
    let o = provenix(&["check-config", "--config", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("ok: trust file: 1 log(s), 1 builder(s), threshold 1 of [alpha]"));
    std::fs::write(&f, good.replace("1 of [alpha]", "2 of [alpha, zeta]")).unwrap();
    let o = provenix(&["check-config", "--config", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "threshold names \"zeta\", which is neither a [[builder]] name nor an `operator`"
        ),
        "{}",
        show(&o)
    );
}
