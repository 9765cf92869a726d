//! The explorer in a real browser: a real `provenixd` with entries from three builders (one
//! conflict), its pages rendered by headless Chromium (Debian's `chromium`), the DOM checked
//! for the agreement table and the conflict listing, and screenshots kept as CI artifacts in
//! `target/test-artifacts/explorer/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use provenix_e2e::gen;
use provenix_e2e::server::{add_builder, Provenixd, ServerOpts};
use serde_json::Value;

/// Where screenshots go: `<target>/test-artifacts/explorer/` (CI uploads this folder).
fn artifacts() -> PathBuf {
    let target = provenix_e2e::bin_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| provenix_e2e::workspace().join("target"));
    let dir = target.join("test-artifacts").join("explorer");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium with the flags that work on these machines (no sandbox as root, no
/// background networking: the network is closed) and `args`; returns stdout.
fn chromium(profile: &Path, args: &[String]) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .env("HOME", profile)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "chromium {args:?} did not finish in 90 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn dump_dom(profile: &Path, url: &str) -> String {
    let dom = chromium(profile, &["--dump-dom".into(), url.into()]);
    assert!(dom.contains("</html>"), "{url}: no document: {dom}");
    dom
}

fn screenshot(profile: &Path, url: &str, file: &Path, height: u32) {
    let _ = std::fs::remove_file(file);
    chromium(
        profile,
        &[
            format!("--screenshot={}", file.display()),
            format!("--window-size=1280,{height}"),
            url.into(),
        ],
    );
    let png = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        file.display()
    );
    assert!(
        png.len() > 10_000,
        "{} looks empty ({} bytes)",
        file.display(),
        png.len()
    );
}

/// The element starting at the first `<tag … marker …>` through its closing tag (the pages
/// do not nest these elements).
fn element<'a>(dom: &'a str, tag: &str, marker: &str) -> &'a str {
    let open = format!("<{tag}");
    let mut from = 0;
    while let Some(i) = dom[from..].find(&open).map(|i| from + i) {
        let end_of_open = dom[i..].find('>').map_or(dom.len(), |e| i + e);
        if dom[i..end_of_open].contains(marker) {
            let close = format!("</{tag}>");
            let end = dom[i..]
                .find(&close)
                .map_or(dom.len(), |e| i + e + close.len());
            return &dom[i..end];
        }
        from = end_of_open;
    }
    panic!("no <{tag} …{marker}…> in {dom}");
}

/// The text of the first `<td class="cls">` in `row`, without tags.
fn cell(row: &str, cls: &str) -> String {
    let td = element(row, "td", &format!("class=\"{cls}\""));
    let mut out = String::new();
    let mut in_tag = false;
    for ch in td.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_owned()
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[test]
fn explorer_pages_in_headless_chromium() {
    if !provenix_e2e::require_tool("chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("log");
    let opts = ServerOpts {
        origin: Some("explorer.e2e/log".into()),
        ..ServerOpts::default()
    };
    let keys = ["alpha", "beta", "gamma"].map(gen::builder_key);
    for k in &keys {
        add_builder(&data, &opts, &k.public().to_string());
    }
    let server = Provenixd::start(&data, &opts);
    let [alpha, beta, gamma] = &keys;

    // alpha and beta build seeds 0..6 identically; gamma builds seed 2 with other content
    // (the conflict) and seed 4 like the others.
    let mut envs: Vec<Vec<u8>> = (0..6).map(|s| gen::signed(alpha, s, s)).collect();
    envs.extend((0..6).map(|s| gen::signed(beta, s, s)));
    envs.push(gen::signed(gamma, 2, 2002));
    envs.push(gen::signed(gamma, 4, 4));
    let rt = provenix_e2e::runtime();
    let http = reqwest::Client::new();
    rt.block_on(async {
        let body = format!(
            "{{\"entries\":[{}]}}",
            envs.iter()
                .map(|e| String::from_utf8(e.clone()).unwrap())
                .collect::<Vec<_>>()
                .join(",")
        );
        let r: Value = http
            .post(format!("{}/v1/entries?wait=integrated", server.url))
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["results"].as_array().unwrap().len(), 14, "{r}");
        assert!(r["checkpoint"].is_string(), "{r}");
        // The indexer follows the checkpoint by itself.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let home: Value = http
                .get(format!("{}/v1/explorer/home", server.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if home["indexed"] == 14 {
                break;
            }
            assert!(Instant::now() < deadline, "not indexed: {home}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let profile = dir.path().join("chromium");
    std::fs::create_dir_all(&profile).unwrap();
    let out = artifacts();

    // Home: the log, its checkpoint and the builders, and the search form we then submit.
    let home = dump_dom(&profile, &format!("{}/", server.url));
    assert!(
        home.contains("<dd id=\"checkpoint-size\">14</dd>"),
        "{home}"
    );
    assert!(home.contains(&server.verifier_key), "{home}");
    let alpha_row = element(&home, "tr", "data-builder=\"alpha\"");
    assert!(
        alpha_row.contains("<td class=\"num entries\">6</td>"),
        "{alpha_row}"
    );
    let gamma_row = element(&home, "tr", "data-builder=\"gamma\"");
    assert!(gamma_row.contains("50.0 %"), "{gamma_row}");
    let form = element(&home, "form", "role=\"search\"");
    assert!(form.contains("action=\"/search\""), "{form}");
    assert!(form.contains("method=\"get\""), "{form}");
    assert!(form.contains("name=\"q\""), "{form}");
    screenshot(
        &profile,
        &format!("{}/", server.url),
        &out.join("home.png"),
        1100,
    );

    // Search a store path the way the form submits it (GET /search?q=…).
    let path = gen::store_path(2, "pkg-2");
    let key = path.hash().to_string();
    let search_url = format!("{}/search?q={}", server.url, urlencode(&path.to_string()));
    let dom = dump_dom(&profile, &search_url);
    assert!(
        dom.contains(&format!("<code id=\"query\">{path}</code>")),
        "{dom}"
    );
    let table = element(&dom, "table", &format!("id=\"agreement-{key}\""));
    for (builder, label, content, differs) in [
        ("alpha", "A", 2u64, "gamma"),
        ("beta", "A", 2, "gamma"),
        ("gamma", "B", 2002, "alpha, beta"),
    ] {
        let row = element(table, "tr", &format!("data-builder=\"{builder}\""));
        assert!(row.contains(&format!("data-value=\"{label}\"")), "{row}");
        assert_eq!(cell(row, "builder"), builder);
        assert_eq!(cell(row, "nar"), gen::nar_hash(content).to_hex(), "{row}");
        assert_eq!(cell(row, "differs"), differs, "{row}");
    }
    assert_eq!(
        cell(element(table, "tr", "data-builder=\"alpha\""), "agrees"),
        "beta"
    );
    assert!(dom.contains("claims disagree"), "{dom}");
    // Every claim links its raw envelope and carries its proof.
    for idx in [2, 8, 12] {
        let row = element(&dom, "tr", &format!("data-index=\"{idx}\""));
        assert!(
            row.contains(&format!("href=\"/v1/entries/{idx}\"")),
            "{row}"
        );
        assert!(row.contains("inclusion proof ("), "{row}");
    }
    screenshot(&profile, &search_url, &out.join("search.png"), 1400);

    // The conflict listing.
    let dis_url = format!("{}/disagreements", server.url);
    let dom = dump_dom(&profile, &dis_url);
    assert!(
        dom.contains("<span id=\"disagreement-total\">1</span>"),
        "{dom}"
    );
    let row = element(&dom, "tr", &format!("data-key=\"{key}\""));
    let a = element(row, "div", "data-value=\"A\"");
    assert!(a.contains(&gen::nar_hash(2).to_hex()), "{a}");
    assert!(a.contains("alpha, beta"), "{a}");
    let b = element(row, "div", "data-value=\"B\"");
    assert!(b.contains(&gen::nar_hash(2002).to_hex()), "{b}");
    assert!(b.contains("gamma"), "{b}");
    assert!(
        row.contains("href=\"/entry/12\""),
        "conflict appeared with gamma's entry: {row}"
    );
    screenshot(&profile, &dis_url, &out.join("disagreements.png"), 700);

    // A builder page.
    let dom = dump_dom(&profile, &format!("{}/builder/gamma", server.url));
    assert!(dom.contains("<dd id=\"builder-entries\">2</dd>"), "{dom}");
    let row = element(&dom, "tr", "data-index=\"12\"");
    assert!(row.contains("differs"), "{row}");
    let row = element(&dom, "tr", "data-index=\"13\"");
    assert!(row.contains("matched: alpha, beta"), "{row}");
    eprintln!("screenshots in {}", out.display());
}

/// SIGKILL while the indexer is behind, restart: the index catches up to exactly the counts a
/// clean run gives (progress and rows commit together; repeated ranges count nothing).
#[test]
fn indexer_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("log");
    let opts = ServerOpts::default();
    let keys = ["alpha", "beta"].map(gen::builder_key);
    for k in &keys {
        add_builder(&data, &opts, &k.public().to_string());
    }
    let mut server = Provenixd::start(&data, &opts);
    let seeds = 3000u64;
    // beta claims other content for every 100th seed: 30 disagreements.
    let envs: Vec<Vec<u8>> = (0..seeds)
        .flat_map(|s| {
            [
                gen::signed_small(&keys[0], s, s),
                gen::signed_small(&keys[1], s, if s % 100 == 0 { s + 7 } else { s }),
            ]
        })
        .collect();
    let rt = provenix_e2e::runtime();
    let http = reqwest::Client::new();
    let home = |url: String| {
        let http = http.clone();
        async move {
            http.get(format!("{url}/v1/explorer/home"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let indexed_before_kill = rt.block_on(async {
        for chunk in envs.chunks(1000) {
            let body = format!(
                "{{\"entries\":[{}]}}",
                chunk
                    .iter()
                    .map(|e| String::from_utf8(e.clone()).unwrap())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let r = http
                .post(format!("{}/v1/entries?wait=integrated", server.url))
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        home(server.url.clone()).await["indexed"].as_u64().unwrap()
    });
    server.kill9();
    eprintln!("killed with {indexed_before_kill} of {} indexed", 2 * seeds);
    let server = Provenixd::start(&data, &opts);
    let v = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = home(server.url.clone()).await;
            if v["indexed"] == 2 * seeds {
                return v;
            }
            assert!(Instant::now() < deadline, "not indexed after restart: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(v["disagreements"], 30);
    for (i, name) in ["alpha", "beta"].iter().enumerate() {
        let b = v["builders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == *name)
            .unwrap();
        assert_eq!(
            (&b["entries"], &b["outputs"], &b["matched"]),
            (&seeds.into(), &seeds.into(), &(seeds - 30).into()),
            "builder {i}: {b}"
        );
    }
}
