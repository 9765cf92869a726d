//! The README's walkthrough, run exactly as written: every ```` ```bash ```` block of README.md,
//! in order, as one `bash -euo pipefail` script in an empty directory, with the built binaries on
//! PATH. A README that drifts from the code fails here.
//!
//! The environment stands in for a fresh machine: a private network namespace (the walkthrough's
//! fixed ports are free; loopback only), private HOME/XDG directories, and `NIX_CONFIG` with what a
//! daemon-less single-user Nix needs here (NIX-FACTS.md: no sandbox build users, no default
//! substituter, `/bin/sh` visible to builds in chroot stores). ```` ```sh ```` blocks (the set-up
//! commands, production snippets) are not run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use provenix_e2e::{bin_dir, require_tool, workspace};

fn bash_blocks(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in readme.lines() {
        match &mut cur {
            None if line.trim_end() == "```bash" => cur = Some(String::new()),
            Some(block) if line.trim_end() == "```" => {
                out.push(std::mem::take(block));
                cur = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// How to get a private network namespace with loopback up, if this machine allows it.
fn netns_prefix() -> Vec<&'static str> {
    for args in [&["-n"][..], &["-rn"][..]] {
        let ok = Command::new("unshare")
            .args(args)
            .args(["ip", "link", "set", "lo", "up"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let mut v = vec!["unshare"];
            v.extend_from_slice(args);
            return v;
        }
    }
    eprintln!(
        "note: no private network namespace here; the walkthrough uses the host's loopback ports"
    );
    Vec::new()
}

#[test]
fn readme_has_the_required_shape() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let first_block: Vec<&str> = readme
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap()
        .lines()
        .collect();
    assert_eq!(
        first_block.len(),
        2,
        "the README starts with exactly two set-up commands"
    );
    assert!(first_block[0]
        .starts_with("cargo run --release -p provenix-server --bin provenixd -- serve"));
    assert!(first_block[1].starts_with("./scripts/test.sh"));
    for heading in [
        "### Log operator",
        "### Builder operator",
        "### Nix user",
        "### Auditor",
        "## Threat model",
    ] {
        assert!(readme.contains(heading), "README lacks {heading:?}");
    }
    assert!(bash_blocks(&readme).len() >= 5);
}

#[test]
fn readme_walkthrough_runs_as_written() {
    for tool in ["nix-build", "python3", "unshare"] {
        if !require_tool(tool) {
            return;
        }
    }
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let blocks = bash_blocks(&readme);
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("walkthrough");
    std::fs::create_dir_all(&work).unwrap();
    let mut script = String::from("set -euo pipefail\nset -x\n");
    for b in &blocks {
        script.push_str(b);
    }
    script.push_str("echo WALKTHROUGH-DONE\n");
    std::fs::write(dir.path().join("walkthrough.sh"), &script).unwrap();

    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let prefix = netns_prefix();
    let mut cmd = if prefix.is_empty() {
        let mut c = Command::new("bash");
        c.arg(dir.path().join("walkthrough.sh"));
        c
    } else {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).args(["bash", "-c"]).arg(format!(
            "ip link set lo up && exec bash {}",
            dir.path().join("walkthrough.sh").display()
        ));
        c
    };
    let home = dir.path().join("home");
    cmd.current_dir(&work)
        .env("PATH", path)
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env(
            "NIX_CONFIG",
            "sandbox = false\nbuild-users-group =\nsubstituters =\nsandbox-paths = /bin /lib /lib64 /usr\n",
        )
        .env("PROVENIX_LOG", "warn")
        .env_remove("NIX_REMOTE")
        .env_remove("PROVENIX_CONFIG")
        // Files, not pipes: the walkthrough's background servers keep its output open.
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let pgid = child.id();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(240) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the walkthrough left running in the background goes with its process group.
    provenix_e2e::kill_process_group(pgid);
    let _ = child.wait();
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    let tail: String = stderr
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        stdout.contains("WALKTHROUGH-DONE"),
        "the README walkthrough failed ({}).\n--- stdout ---\n{stdout}\n--- stderr (last 60 lines) ---\n{tail}",
        status.map_or_else(|| "timed out after 240 s".to_owned(), |s| s.to_string())
    );
    // What the walkthrough claims happened, happened.
    let log_vkey = std::fs::read_to_string(work.join("log.vkey")).unwrap();
    assert!(log_vkey.starts_with("provenix-log+"), "{log_vkey}");
    assert!(
        work.join("user-store/nix/store").is_dir(),
        "the user's store got nothing"
    );
    let exported = std::fs::read_to_string(work.join("hello.intoto.jsonl")).unwrap();
    assert!(exported.lines().count() >= 2, "export wrote {exported:?}");
}
