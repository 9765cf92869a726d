//! The Nix side of provenix: every `.nix` file parses, and the NixOS modules (`nix/modules/`)
//! evaluate in the stand-in module system (`nix/tests/stand-in/`, because nixpkgs is not
//! available offline) to the systemd units, `nix.settings`, config files and assertions they
//! must produce. The config files they generate are then fed to the real binaries'
//! `check-config` (what the modules run at build time), and a bad config is shown to be
//! rejected with a clear message. The VM tests (`nix/tests/{log,builder,substituter}.nix`) run
//! where nixpkgs is available, as the flake's checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use provenix_core::policy::TrustConfig;
use provenix_e2e::nixeval::{nix_files, NixEval};
use provenix_e2e::{bin, workspace};
use serde_json::{json, Value};

fn root() -> PathBuf {
    workspace().canonicalize().unwrap()
}

fn modules_nix() -> PathBuf {
    root().join("nix/tests/modules.nix")
}

/// One evaluated sample of nix/tests/modules.nix.
fn case(nix: &NixEval, name: &str) -> Value {
    nix.eval_file(&modules_nix(), Some(&format!("cases.{name}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn key(name: &str) -> String {
    std::fs::read_to_string(root().join("nix/tests/keys").join(name))
        .unwrap()
        .trim_end()
        .to_owned()
}

/// The value at a JSON pointer, which must exist.
fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer} missing in {v:#}"))
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer)
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} is not a string: {}", at(v, pointer)))
}

/// Evaluates `body` (an expression over `e`, the stand-in evaluation of the modules plus
/// `config`) and returns its JSON, or Nix's error text.
fn eval_with(nix: &NixEval, config: &str, body: &str) -> Result<Value, String> {
    let r = root();
    let expr = format!(
        "let e = import {}/nix/tests/stand-in/eval.nix {{ modules = [ {}/nix/modules ({{ lib, ... }}: {config}) ]; }}; in {body}",
        r.display(),
        r.display()
    );
    nix.eval_expr(&expr).map_err(|e| e.stderr)
}

/// The fake provenix package's store path in the stand-in.
fn package_path(nix: &NixEval) -> String {
    let r = root();
    let v = nix
        .eval_expr(&format!(
            "(import {0}/nix/tests/stand-in/pkgs.nix {{ lib = import {0}/nix/tests/stand-in/lib.nix; }}).provenix.outPath",
            r.display()
        ))
        .unwrap();
    v.as_str().unwrap().to_owned()
}

/// What `BIN check-config --config FILE` did.
struct Checked {
    ok: bool,
    stdout: String,
    stderr: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Runs `BIN check-config --config FILE` on `toml` written to a temp file.
fn check_config(binary: &str, toml: &str) -> Checked {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(bin(binary))
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("PROVENIX_DATABASE_URL")
        .output()
        .unwrap();
    Checked {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        file,
        _dir: dir,
    }
}

fn assert_provenixd_accepts(toml: &str) -> String {
    let c = check_config("provenixd", toml);
    assert!(
        c.ok,
        "provenixd check-config refused the generated file:\n{toml}\n{}",
        c.stderr
    );
    assert!(
        c.stdout.starts_with(&format!("{}: ok (", c.file.display())),
        "{}",
        c.stdout
    );
    c.stdout
}

/// The sandboxing every provenix unit gets (nix/modules/common.nix).
fn assert_hardened(unit: &Value) {
    let sc = at(unit, "/serviceConfig");
    for (k, v) in [
        ("NoNewPrivileges", json!(true)),
        ("PrivateTmp", json!(true)),
        ("PrivateMounts", json!(true)),
        ("ProtectSystem", json!("strict")),
        ("ProtectHome", json!(true)),
        ("ProtectKernelTunables", json!(true)),
        ("ProtectKernelModules", json!(true)),
        ("ProtectKernelLogs", json!(true)),
        ("ProtectControlGroups", json!(true)),
        ("ProtectClock", json!(true)),
        ("ProtectHostname", json!(true)),
        ("ProtectProc", json!("invisible")),
        (
            "RestrictAddressFamilies",
            json!(["AF_INET", "AF_INET6", "AF_UNIX"]),
        ),
        ("RestrictNamespaces", json!(true)),
        ("RestrictRealtime", json!(true)),
        ("RestrictSUIDSGID", json!(true)),
        ("LockPersonality", json!(true)),
        ("MemoryDenyWriteExecute", json!(true)),
        ("SystemCallArchitectures", json!("native")),
        ("SystemCallErrorNumber", json!("EPERM")),
        ("DevicePolicy", json!("closed")),
        ("RemoveIPC", json!(true)),
        ("UMask", json!("0077")),
    ] {
        assert_eq!(sc.get(k), Some(&v), "{k} in {sc:#}");
    }
    let filter = at(sc, "/SystemCallFilter").as_array().unwrap();
    assert_eq!(filter[0], "@system-service");
    assert!(filter.contains(&json!("~@privileged")), "{filter:?}");
}

// ---- parsing -----------------------------------------------------------------------------------

#[test]
fn every_nix_file_parses() {
    let Some(nix) = NixEval::new() else { return };
    let root = root();
    let files = nix_files(&root);
    let rel: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    for expected in [
        "flake.nix",
        "nix/package.nix",
        "nix/overlay.nix",
        "nix/modules/default.nix",
        "nix/modules/common.nix",
        "nix/modules/log.nix",
        "nix/modules/builder.nix",
        "nix/modules/substituter.nix",
        "nix/tests/log.nix",
        "nix/tests/builder.nix",
        "nix/tests/substituter.nix",
        "nix/tests/vm-common.nix",
        "nix/tests/modules.nix",
        "nix/tests/stand-in/lib.nix",
        "nix/tests/stand-in/pkgs.nix",
        "nix/tests/stand-in/nixos.nix",
        "nix/tests/stand-in/eval.nix",
        "nix/tests/flake-outputs.nix",
        "nix/tests/mock-nixpkgs/default.nix",
        "nix/tests/mock-nixpkgs/lib.nix",
    ] {
        assert!(
            rel.iter().any(|r| r == expected),
            "{expected} not found in {rel:?}"
        );
    }
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| nix.parse(f).err().map(|e| e.to_string()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_syntax_error_is_caught_by_the_parse_check() {
    let Some(nix) = NixEval::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.nix");
    std::fs::write(&f, "{ a = 1; b = ; }\n").unwrap();
    let err = nix.parse(&f).unwrap_err();
    assert!(err.stderr.contains("syntax error"), "{}", err.stderr);
}

// ---- every sample declares its assertions and warnings -------------------------------------------

#[test]
fn stand_in_samples_fail_exactly_the_assertions_they_declare() {
    let Some(nix) = NixEval::new() else { return };
    let names = nix.eval_file(&modules_nix(), Some("names")).unwrap();
    assert!(names.as_array().unwrap().len() >= 14, "{names}");
    // `check` throws, naming the case, when a sample's assertions or warnings differ.
    let ok = nix
        .eval_file(&modules_nix(), Some("check"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok, json!(true));
}

// ---- services.provenix-log ------------------------------------------------------------------------

#[test]
fn log_module_runs_provenixd_sandboxed_with_a_checked_config() {
    let Some(nix) = NixEval::new() else { return };
    let pkg = package_path(&nix);
    let c = case(&nix, "log-minimal");
    assert_eq!(c["failedAssertions"], json!([]));

    let unit = at(&c, "/services/provenix-log");
    let config = at(&c, "/configFiles/log");
    let config_path = text(config, "/path");
    assert_eq!(
        text(unit, "/serviceConfig/ExecStart"),
        format!("{pkg}/bin/provenixd serve --config {config_path}")
    );
    // The file the service runs is the output of `provenixd check-config` on the generated one.
    let unchecked = text(config, "/unchecked/path");
    assert_eq!(
        text(config, "/buildCommand"),
        format!("{pkg}/bin/provenixd check-config --config \"$unchecked\"\ncp \"$unchecked\" \"$out\"\n")
    );
    assert!(unchecked.ends_with("-provenix-log.toml"), "{unchecked}");
    assert_eq!(unit["restartTriggers"][0]["path"], config_path);

    let sc = at(unit, "/serviceConfig");
    assert_eq!(sc["DynamicUser"], json!(true));
    assert_eq!(sc["User"], "provenix-log");
    assert_eq!(sc["StateDirectory"], "provenix-log");
    assert_eq!(sc["StateDirectoryMode"], "0700");
    assert_eq!(sc["WorkingDirectory"], "/var/lib/provenix-log");
    assert_eq!(sc["CapabilityBoundingSet"], "");
    assert_eq!(sc["AmbientCapabilities"], "");
    assert_eq!(sc["PrivateUsers"], json!(true));
    assert_eq!(sc["PrivateDevices"], json!(true));
    assert_eq!(sc["ProcSubset"], "pid");
    assert_eq!(
        sc["SystemCallFilter"],
        json!(["@system-service", "~@privileged", "~@resources"])
    );
    assert_eq!(sc["ExecStartPre"], json!([]), "no keyFile, no builders");
    assert_eq!(sc["EnvironmentFile"], json!([]));
    assert_hardened(unit);
    assert_eq!(unit["wantedBy"], json!(["multi-user.target"]));
    assert_eq!(c["firewall"], json!([]));

    let toml = text(config, "/unchecked/text");
    assert_eq!(
        toml,
        "data = \"/var/lib/provenix-log\"\nlisten = \"127.0.0.1:8080\"\n"
    );
    let out = assert_provenixd_accepts(toml);
    assert!(
        out.contains("listen 127.0.0.1:8080, data /var/lib/provenix-log, database SQLite in the data directory"),
        "{out}"
    );

    // The admin wrapper runs provenixd as the service's dynamic user, on the same config.
    let admin = &c["systemPackages"][0];
    assert_eq!(admin["destination"], "/bin/provenix-log-admin");
    let script = text(admin, "/text");
    assert!(
        script.contains(&format!("key) set -- key --config {config_path} \"$@\" ;;")),
        "{script}"
    );
    assert!(
        script.contains("--property=DynamicUser=yes --property=User=provenix-log")
            && script.contains("--property=StateDirectory=provenix-log --property=UMask=0077")
            && script.contains("-provenix-log-admin-run \"$@\"")
            && !script.contains("EnvironmentFile")
            && !script.contains("LoadCredential"),
        "{script}"
    );
}

#[test]
fn log_module_full_options() {
    let Some(nix) = NixEval::new() else { return };
    let pkg = package_path(&nix);
    let c = case(&nix, "log-full");
    assert_eq!(c["failedAssertions"], json!([]));
    assert_eq!(c["warnings"], json!([]));
    let unit = at(&c, "/services/provenix-log");
    let sc = at(unit, "/serviceConfig");
    let config_path = text(&c, "/configFiles/log/path");

    assert_eq!(sc["StateDirectory"], "provenix/log-a");
    assert_eq!(sc["WorkingDirectory"], "/var/lib/provenix/log-a");
    // The database password comes from a root-read EnvironmentFile, the log key as a credential.
    assert_eq!(
        sc["EnvironmentFile"],
        json!(["/run/secrets/provenix-log.env"])
    );
    assert_eq!(
        sc["LoadCredential"],
        json!(["log-key:/run/secrets/provenix-log.key"])
    );
    assert_eq!(c["firewall"], json!([8443]));

    let pre = at(sc, "/ExecStartPre").as_array().unwrap();
    assert_eq!(pre.len(), 2, "{pre:?}");
    let install = text(&pre[0], "/text");
    assert!(
        install.contains(
            "key=\"$CREDENTIALS_DIRECTORY/log-key\"\ndest=/var/lib/provenix/log-a/log.key\n"
        ),
        "{install}"
    );
    assert!(
        install.contains("install -m 0600 \"$key\" \"$dest.tmp\""),
        "{install}"
    );
    assert!(
        install.contains("holds another key than services.provenix-log.keyFile"),
        "{install}"
    );
    let sync = text(&pre[1], "/text");
    let add = |k: &str| format!("{pkg}/bin/provenixd builders add --config {config_path} {k}\n");
    assert!(sync.contains(&add(&key("alpha.pub"))), "{sync}");
    assert!(sync.contains(&add(&key("beta.pub"))), "{sync}");
    assert!(sync.contains("keep=\" alpha beta \""), "{sync}");
    // The admin wrapper passes the same environment file and key to its transient unit.
    let admin = text(&c, "/systemPackages/0/text");
    assert!(
        admin.contains("--property=EnvironmentFile=/run/secrets/provenix-log.env")
            && admin.contains("--property=LoadCredential=log-key:/run/secrets/provenix-log.key")
            && admin.contains("--property=StateDirectory=provenix/log-a"),
        "{admin}"
    );
    assert!(
        sync.contains(&format!(
            "{pkg}/bin/provenixd builders remove --config {config_path} \"$name\""
        )),
        "{sync}"
    );

    let toml = text(&c, "/configFiles/log/unchecked/text");
    assert_eq!(
        toml,
        "data = \"/var/lib/provenix/log-a\"\n\
         database = \"postgres://provenix@db.example.org/provenix\"\n\
         integrate-interval-ms = 250\n\
         listen = \"[::]:8443\"\n\
         origin = \"log.example.org/provenix\"\n\
         queue-depth = 512\n"
    );
    assert_provenixd_accepts(toml);
}

#[test]
fn log_module_local_postgres_and_privileged_port() {
    let Some(nix) = NixEval::new() else { return };
    let c = case(&nix, "log-local-postgres");
    assert_eq!(
        c["postgresql"],
        json!({
            "enable": true,
            "ensureDatabases": ["provenix-log"],
            "ensureUsers": [{"name": "provenix-log", "ensureDBOwnership": true}],
        })
    );
    let unit = at(&c, "/services/provenix-log");
    assert_eq!(
        unit["after"],
        json!([
            "network-online.target",
            "postgresql.service",
            "postgresql.target"
        ])
    );
    assert_eq!(unit["requires"], json!(["postgresql.service"]));
    let toml = text(&c, "/configFiles/log/unchecked/text");
    assert!(
        toml.contains(
            "database = \"postgres:///provenix-log?host=/run/postgresql&user=provenix-log\"\n"
        ),
        "{toml}"
    );
    assert_provenixd_accepts(toml);

    let c = case(&nix, "log-port-80");
    let sc = at(&c, "/services/provenix-log/serviceConfig");
    assert_eq!(sc["CapabilityBoundingSet"], json!(["CAP_NET_BIND_SERVICE"]));
    assert_eq!(sc["AmbientCapabilities"], json!(["CAP_NET_BIND_SERVICE"]));
    assert_eq!(sc["PrivateUsers"], json!(false));
    assert_provenixd_accepts(text(&c, "/configFiles/log/unchecked/text"));
}

#[test]
fn log_module_refuses_secrets_in_the_store_and_conflicting_settings() {
    let Some(nix) = NixEval::new() else { return };
    let store = nix.eval_expr("builtins.storeDir").unwrap();
    let store = store.as_str().unwrap();
    let c = case(&nix, "log-secret-in-store");
    assert_eq!(
        c["failedAssertions"],
        json!([
            format!("services.provenix-log.environmentFile = {store}/0c5q9kfxlcj6xx8gb8dvwz3rpj7ik8qz-provenix.env is in the world-readable Nix store. Give the path of a file outside the store, e.g. \"/run/secrets/provenix\"."),
            format!("services.provenix-log.keyFile = {} is a Nix path: it would be copied into the world-readable Nix store. Give the path of a file outside the store as a string, e.g. \"/run/secrets/provenix\".", root().join("nix/tests/keys/log.key").display()),
        ])
    );
    let c = case(&nix, "log-conflicts");
    let failed = c["failedAssertions"].as_array().unwrap();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert_eq!(
        failed[2],
        "services.provenix-log.settings.listen = \"localhost\" is not an IP:PORT address (e.g. 127.0.0.1:8080 or [::]:8080)."
    );
}

#[test]
fn a_bad_log_setting_fails_the_build_time_check() {
    let Some(nix) = NixEval::new() else { return };
    // The stand-in takes any string for `database`; provenixd check-config (the build-time
    // check of the real module) refuses it, so the system would not build.
    let toml = eval_with(
        &nix,
        r#"{ services.provenix-log = { enable = true; settings.origin = "log.example"; settings.database = "mysql://db/provenix"; }; }"#,
        "e.config.services.provenix-log.configFile.unchecked.text",
    )
    .unwrap();
    let c = check_config("provenixd", toml.as_str().unwrap());
    assert!(!c.ok);
    assert_eq!(
        c.stderr,
        "provenixd: database = \"mysql://db/provenix\": use sqlite://PATH or postgres://USER@HOST/DB\n"
    );
}

// ---- provenixd check-config ------------------------------------------------------------------------

#[test]
fn provenixd_check_config_rejects_bad_configs_with_a_clear_message() {
    let c = check_config("provenixd", "listen = \"localhost:8080\"\n");
    assert!(!c.ok);
    assert_eq!(
        c.stderr,
        "provenixd: listen = \"localhost:8080\" is not an IP:PORT address (e.g. 127.0.0.1:8080)\n"
    );

    let c = check_config("provenixd", "lisen = \"127.0.0.1:8080\"\n");
    assert!(!c.ok);
    assert!(
        c.stderr
            .starts_with(&format!("provenixd: {}: ", c.file.display()))
            && c.stderr.contains("unknown field `lisen`"),
        "{}",
        c.stderr
    );

    let c = check_config("provenixd", "origin = \"a b\"\n");
    assert!(!c.ok);
    assert_eq!(
        c.stderr,
        "provenixd: origin = \"a b\": a log name must be non-empty, without spaces or '+'\n"
    );

    let c = check_config("provenixd", "queue-depth = \"many\"\n");
    assert!(!c.ok);
    assert!(
        c.stderr
            .starts_with(&format!("provenixd: {}: ", c.file.display()))
            && c.stderr.contains("invalid type: string \"many\""),
        "{}",
        c.stderr
    );

    let missing = Path::new("/nonexistent/provenix/server.toml");
    let out = Command::new(bin("provenixd"))
        .args(["check-config", "--config"])
        .arg(missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("provenixd: cannot read /nonexistent/provenix/server.toml: "),
        "{stderr}"
    );
}

// ---- services.provenix-builder ---------------------------------------------------------------------

#[test]
fn builder_module_hooks_nix_and_runs_push_as_capability_free_root() {
    let Some(nix) = NixEval::new() else { return };
    let pkg = package_path(&nix);
    let c = case(&nix, "builder");
    assert_eq!(c["failedAssertions"], json!([]));
    let config_path = text(&c, "/configFiles/builder/path");

    // post-build-hook: export the config, exec `provenix hook` (which spools and exits 0).
    let hook = at(&c, "/nixSettings/post-build-hook");
    assert!(text(hook, "/path").ends_with("-provenix-post-build-hook"));
    let script = text(hook, "/text");
    let (shebang, body) = script.split_once('\n').unwrap();
    assert!(
        shebang.starts_with("#!/nix/store/") && shebang.ends_with("/bin/bash"),
        "{shebang}"
    );
    assert_eq!(
        body,
        format!("export PROVENIX_CONFIG={config_path}\nexec {pkg}/bin/provenix hook\n")
    );
    assert_eq!(
        text(&c, "/configFiles/builder/buildCommand"),
        format!(
            "{pkg}/bin/provenix check-config --config \"$unchecked\"\ncp \"$unchecked\" \"$out\"\n"
        )
    );
    // The builder module leaves the substituters alone.
    assert_eq!(
        c["nixSettings"]["substituters"],
        json!(["https://cache.nixos.org/"])
    );

    // The spool exists from boot (for the hook), root-only.
    assert_eq!(
        c["tmpfiles"],
        json!([
            "d /var/lib/provenix-builder 0700 root root - -",
            "d /var/lib/provenix-builder/spool 0700 root root - -"
        ])
    );

    let unit = at(&c, "/services/provenix-push");
    let sc = at(unit, "/serviceConfig");
    assert_eq!(
        text(sc, "/ExecStart"),
        format!("{pkg}/bin/provenix push --config {config_path}")
    );
    assert_eq!(sc["User"], "root");
    assert_eq!(sc.get("DynamicUser"), None);
    assert_eq!(sc["CapabilityBoundingSet"], "", "root without capabilities");
    assert_eq!(sc["AmbientCapabilities"], "");
    assert_eq!(sc["StateDirectory"], "provenix-builder");
    assert_eq!(sc["StateDirectoryMode"], "0700");
    assert_eq!(sc["Restart"], "always");
    assert_eq!(sc["PrivateDevices"], json!(true));
    assert_eq!(
        sc["SystemCallFilter"],
        json!(["@system-service", "~@privileged"])
    );
    assert_hardened(unit);
    assert_eq!(unit["environment"]["NIX_REMOTE"], "daemon");
    assert_eq!(unit["environment"]["HOME"], "/var/lib/provenix-builder");
    assert_eq!(sc["CacheDirectory"], "provenix-builder");
    assert_eq!(
        unit["environment"]["NIX_CONFIG"],
        "extra-experimental-features = nix-command"
    );
    let path = unit["path"].as_array().unwrap();
    assert!(
        path.len() == 1 && text(&path[0], "").contains("-nix-"),
        "{path:?}"
    );
    assert!(unit["after"]
        .as_array()
        .unwrap()
        .contains(&json!("nix-daemon.socket")));

    assert_eq!(
        text(&c, "/configFiles/builder/unchecked/text"),
        "key-file = \"/var/lib/provenix-builder/alpha.sec\"\n\
         logs = [\"http://log-a.example:8080\", \"https://log-b.example\"]\n\
         spool = \"/var/lib/provenix-builder/spool\"\n\
         \n[push]\nbatch-size = 100\n\
         \n[source]\nref = \"nixos-24.11\"\nuri = \"git+https://github.com/NixOS/nixpkgs\"\n"
    );
}

#[test]
fn builder_module_tpm_device_and_extra_hook_commands() {
    let Some(nix) = NixEval::new() else { return };
    let pkg = package_path(&nix);
    let c = case(&nix, "builder-tpm-and-extra-hook");
    let sc = at(&c, "/services/provenix-push/serviceConfig");
    assert_eq!(sc["PrivateDevices"], json!(false));
    assert_eq!(sc["DeviceAllow"], json!(["/dev/tpmrm0 rw"]));
    assert_eq!(sc["DevicePolicy"], "closed");
    let script = text(&c, "/nixSettings/post-build-hook/text");
    assert!(
        script.ends_with(&format!(
            "\n{pkg}/bin/provenix hook\necho built $OUT_PATHS\n\n"
        )),
        "{script}"
    );
    assert!(text(&c, "/configFiles/builder/unchecked/text")
        .ends_with("\n[tpm]\ntcti = \"device:/dev/tpmrm0\"\n"));
}

#[test]
fn builder_module_requires_a_key_outside_the_store_and_a_log() {
    let Some(nix) = NixEval::new() else { return };
    let store = nix.eval_expr("builtins.storeDir").unwrap();
    let store = store.as_str().unwrap();
    let c = case(&nix, "builder-key-in-store");
    assert_eq!(
        c["failedAssertions"][0],
        format!("services.provenix-builder.keyFile = {store}/9ynp5kq1dz4pmb4jn0r5rkhv0gqk3nmm-alpha.sec is in the world-readable Nix store. Give the path of a file outside the store, e.g. \"/run/secrets/provenix\".")
    );
    let c = case(&nix, "builder-unset");
    assert_eq!(c["failedAssertions"].as_array().unwrap().len(), 2);
    assert!(text(&c, "/failedAssertions/0")
        .starts_with("services.provenix-builder.keyFile must be set"));
}

// ---- services.provenix-substituter -------------------------------------------------------------------

#[test]
fn substituter_module_makes_the_proxy_nix_only_substituter() {
    let Some(nix) = NixEval::new() else { return };
    let pkg = package_path(&nix);
    let c = case(&nix, "substituter");
    assert_eq!(c["failedAssertions"], json!([]));
    assert_eq!(c["warnings"], json!([]));
    let client = key("client.pub");

    // Only the proxy, only its key, nothing untrusted users could add, 404s not remembered —
    // although NixOS itself defines cache.nixos.org (mkForce wins).
    let s = at(&c, "/nixSettings");
    assert_eq!(s["substituters"], json!(["http://127.0.0.1:37515"]));
    assert_eq!(s["trusted-public-keys"], json!([client]));
    assert_eq!(s["trusted-substituters"], json!([]));
    assert_eq!(s["narinfo-cache-negative-ttl"], json!(0));
    assert_eq!(s["require-sigs"], json!(true));

    let unit = at(&c, "/services/provenix-substituter");
    let sc = at(unit, "/serviceConfig");
    let config_path = text(&c, "/configFiles/substituter/path");
    assert_eq!(
        text(sc, "/ExecStart"),
        format!("{pkg}/bin/provenix substituter --config {config_path}")
    );
    assert_eq!(sc["DynamicUser"], json!(true));
    assert_eq!(sc["User"], "provenix-substituter");
    assert_eq!(sc["StateDirectory"], "provenix-substituter");
    assert_eq!(
        sc["LoadCredential"],
        json!(["signing-key:/var/lib/secrets/provenix-substituter.sec"])
    );
    assert_eq!(sc["CapabilityBoundingSet"], "");
    assert_eq!(sc["PrivateUsers"], json!(true));
    assert_eq!(sc["Restart"], "always");
    assert_hardened(unit);
    assert_eq!(unit["before"], json!(["nix-daemon.service"]));
    assert_eq!(unit["after"], json!(["network.target"]));
    assert_eq!(unit["wants"], json!([]));

    // The service's trust.toml is a valid trust policy, with the key handed over by systemd.
    let toml = text(&c, "/configFiles/substituter/unchecked/text");
    let t = TrustConfig::parse(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(t.logs.len(), 1);
    assert_eq!(t.logs[0].url, "http://log-a.example:8080");
    assert_eq!(t.logs[0].key.to_string(), key("log.vkey"));
    let names: Vec<&str> = t.builders.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(t.builders[0].operator.as_deref(), Some("acme"));
    assert_eq!(t.builders[0].key.to_string(), key("alpha.pub"));
    let sub = t.substituter.as_ref().unwrap();
    assert_eq!(sub.listen.to_string(), "127.0.0.1:37515");
    assert_eq!(sub.upstreams, ["http://cache.example:5000"]);
    assert_eq!(
        sub.signing_key_file,
        "/run/credentials/provenix-substituter.service/signing-key"
    );
    assert_eq!(
        sub.state_file.as_deref(),
        Some("/var/lib/provenix-substituter/checkpoints.json")
    );
    assert_eq!(sub.priority, 20);

    // /etc/provenix/trust.toml, for `provenix verify`: the same policy without [substituter].
    let etc = at(&c, "/etc/provenix~1trust.toml");
    let cli = text(etc, "/unchecked/text");
    assert!(!cli.contains("[substituter]"), "{cli}");
    let t = TrustConfig::parse(cli).unwrap_or_else(|e| panic!("{e}\n{cli}"));
    assert!(t.substituter.is_none());
    assert_eq!(t.builders.len(), 2);
    assert!(
        text(etc, "/buildCommand").contains("/bin/provenix check-config --config \"$unchecked\"")
    );
}

#[test]
fn substituter_module_shared_mode_and_bypass_assertions() {
    let Some(nix) = NixEval::new() else { return };
    let c = case(&nix, "substituter-shared");
    let s = at(&c, "/nixSettings");
    // Added to NixOS' defaults, reachable on loopback although it listens on all addresses.
    assert_eq!(
        s["substituters"],
        json!(["https://cache.nixos.org/", "http://127.0.0.1:37600"])
    );
    assert_eq!(
        s["trusted-public-keys"],
        json!([
            "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
            key("client.pub")
        ])
    );
    assert_eq!(
        c["warnings"],
        json!(["services.provenix-substituter.exclusive = false: every other substituter whose key Nix trusts can serve paths without the quorum."])
    );

    let c = case(&nix, "substituter-forced-elsewhere");
    assert_eq!(
        c["failedAssertions"],
        json!(["services.provenix-substituter.exclusive is set, but nix.conf would also trust other caches, which bypass the quorum: substituters = [\"https://cache.example\"]. Remove these definitions (another module may use mkForce too), or set exclusive = false."])
    );
    let c = case(&nix, "substituter-bypass");
    let failed = c["failedAssertions"].as_array().unwrap();
    assert_eq!(
        failed[0],
        format!("services.provenix-substituter.signingKeyFile = {} is a Nix path: it would be copied into the world-readable Nix store. Give the path of a file outside the store as a string, e.g. \"/run/secrets/provenix\".", root().join("nix/tests/keys/client.sec").display())
    );
    assert!(failed[3]
        .as_str()
        .unwrap()
        .ends_with("extra-substituters = [\"https://other.example\"]. Remove these definitions (another module may use mkForce too), or set exclusive = false."));
}

#[test]
fn all_three_roles_on_one_machine() {
    let Some(nix) = NixEval::new() else { return };
    let c = case(&nix, "all-roles");
    assert_eq!(c["failedAssertions"], json!([]));
    let mut units: Vec<&String> = c["services"].as_object().unwrap().keys().collect();
    units.sort();
    assert_eq!(
        units,
        ["provenix-log", "provenix-push", "provenix-substituter"]
    );
    assert_provenixd_accepts(text(&c, "/configFiles/log/unchecked/text"));
    TrustConfig::parse(text(&c, "/configFiles/substituter/unchecked/text")).unwrap();
}

// ---- the stand-in behaves like the NixOS module system --------------------------------------------

#[test]
fn stand_in_rejects_what_nixos_rejects() {
    let Some(nix) = NixEval::new() else { return };
    let err = |config: &str, body: &str| {
        eval_with(&nix, config, body).expect_err("evaluation should fail")
    };

    let e = err(
        "{ services.provenix-log.enable = true; services.provenix-log.lisen = 1; }",
        "e.config.services.provenix-log.enable",
    );
    assert!(
        e.contains("The option `services.provenix-log.lisen' does not exist."),
        "{e}"
    );

    let e = err(
        r#"{ services.provenix-log = { enable = true; builders = [ "alpha" ]; }; }"#,
        "e.config.services.provenix-log.builders",
    );
    assert!(
        e.contains("A definition for option `services.provenix-log.builders.[definition 1-entry 1]' is not of type `string matching the pattern"),
        "{e}"
    );

    // TOML has no null: a freeform setting must not be null.
    let e = err(
        "{ services.provenix-log = { enable = true; settings.queue-depth = null; }; }",
        "e.config.services.provenix-log.settings",
    );
    assert!(
        e.contains("A definition for option `services.provenix-log.settings.queue-depth' is not of type `TOML value'"),
        "{e}"
    );

    let e = err(
        r#"{ imports = [ { services.provenix-log.settings.origin = "a"; } ]; services.provenix-log.settings.origin = "b"; }"#,
        "e.config.services.provenix-log.settings.origin",
    );
    assert!(
        e.contains(
            "The option `services.provenix-log.settings.origin' has conflicting definition values"
        ),
        "{e}"
    );

    let e = err(
        r#"{ services.provenix-log = { enable = true; configFile = "/etc/server.toml"; }; }"#,
        "e.config.services.provenix-log.configFile",
    );
    assert!(
        e.contains("The option `services.provenix-log.configFile' is read-only, but it's set multiple times."),
        "{e}"
    );

    let e = err(
        "{ services.provenix-substituter.enable = true; }",
        "e.config.services.provenix-substituter.configFile",
    );
    assert!(
        e.contains(
            "The option `services.provenix-substituter.settings.policy' is used but not defined."
        ),
        "{e}"
    );
}

#[test]
fn stand_in_disabled_modules_define_nothing_and_priorities_apply() {
    let Some(nix) = NixEval::new() else { return };
    let v = eval_with(
        &nix,
        "{ }",
        "{ units = builtins.attrNames e.config.systemd.services; settings = builtins.attrNames e.config.nix.settings; assertions = e.config.assertions; }",
    )
    .unwrap();
    assert_eq!(
        v,
        json!({
            "units": [],
            "settings": ["require-sigs", "substituters", "trusted-public-keys", "trusted-substituters"],
            "assertions": []
        })
    );
    // mkDefault loses to a plain definition, mkForce beats it, mkIf false removes a definition.
    let v = eval_with(
        &nix,
        r#"{ services.provenix-log = { enable = true; settings.origin = "x"; }; systemd.services.provenix-log.environment.PROVENIX_LOG = "debug"; systemd.services.provenix-log.serviceConfig.Restart = lib.mkForce "always"; systemd.services.provenix-log.wantedBy = lib.mkIf false [ "other.target" ]; }"#,
        "let u = e.config.systemd.services.provenix-log; in [ u.environment.PROVENIX_LOG u.serviceConfig.Restart u.wantedBy ]",
    )
    .unwrap();
    assert_eq!(v, json!(["debug", "always", ["multi-user.target"]]));
}

// ---- flake.nix --------------------------------------------------------------------------------------

#[test]
fn flake_outputs_evaluate_against_a_mock_nixpkgs() {
    let Some(nix) = NixEval::new() else { return };
    let f = nix
        .eval_file(&root().join("nix/tests/flake-outputs.nix"), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f["systems"], json!(["aarch64-linux", "x86_64-linux"]));

    // One build of the workspace's two binaries, offline from Cargo.lock, at the workspace's
    // version; `provenixd` is the same build (no rebuild) with provenixd as main program.
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let version = cargo_toml
        .split("[workspace.package]")
        .nth(1)
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let p = at(&f, "/packages");
    for name in ["default", "provenix", "provenixd", "provenix-tpm"] {
        let pkg = &p[name];
        assert_eq!(pkg["pname"], "provenix", "{name}");
        assert_eq!(pkg["version"], version, "{name}");
        assert_eq!(
            pkg["cargoBuildFlags"],
            json!(["--package", "provenix-server", "--package", "provenix"])
        );
        assert_eq!(
            pkg["cargoTestFlags"],
            json!(["--package", "provenix-core", "--lib"])
        );
        assert_eq!(
            pkg["lockFile"],
            root().join("Cargo.lock").display().to_string()
        );
    }
    assert_eq!(p["default"]["path"], p["provenix"]["path"]);
    assert_eq!(p["provenixd"]["path"], p["provenix"]["path"]);
    assert_eq!(p["provenix"]["mainProgram"], "provenix");
    assert_eq!(p["provenixd"]["mainProgram"], "provenixd");
    assert_eq!(p["provenix"]["buildFeatures"], json!([]));
    assert_eq!(p["provenix-tpm"]["withTpm"], json!(true));
    assert_eq!(p["provenix-tpm"]["buildFeatures"], json!(["provenix/tpm"]));
    assert_eq!(p["provenix-tpm"]["checkFeatures"], json!([]));
    assert_eq!(
        p["provenix-tpm"]["nativeBuildInputs"],
        json!(["pkg-config-0.29.2"])
    );
    assert_eq!(p["provenix-tpm"]["buildInputs"], json!(["tpm2-tss-4.1.3"]));
    assert_ne!(p["provenix-tpm"]["path"], p["provenix"]["path"]);

    // The source holds what Cargo reads, not the Nix files, docs or build results.
    for (k, v) in at(&f, "/source/kept").as_object().unwrap() {
        assert_eq!(v, &json!(true), "{k} must be in the package source");
    }
    for (k, v) in at(&f, "/source/dropped").as_object().unwrap() {
        assert_eq!(v, &json!(true), "{k} must not be in the package source");
    }

    assert_eq!(f["overlay"], json!(["provenix", "provenixd"]));
    assert_eq!(
        f["nixosModules"],
        json!(["builder", "default", "log", "substituter"])
    );
    assert_eq!(
        f["checks"]["x86_64-linux"],
        json!([
            "fmt",
            "modules-stand-in",
            "package",
            "vm-builder",
            "vm-log",
            "vm-substituter"
        ])
    );
    assert_eq!(
        f["checks"]["aarch64-linux"],
        json!(["fmt", "modules-stand-in", "package"])
    );
    let vm = at(&f, "/vmTests");
    assert_eq!(vm["vm-log"]["nodeNames"], json!(["client", "log", "logpg"]));
    assert_eq!(vm["vm-builder"]["nodeNames"], json!(["builder", "log"]));
    assert_eq!(
        vm["vm-substituter"]["nodeNames"],
        json!(["builder", "client", "log"])
    );
    assert!(text(vm, "/vm-log/testScript").contains(&format!("vkey = \"{}\"", key("log.vkey"))));
    assert!(text(vm, "/vm-substituter/testScript")
        .contains(&format!("re.escape(\"{}\")", key("client.pub"))));

    // Through the flake, the modules run the flake's own package: the default module with all
    // three roles, and each role's module alone (where only its own options exist).
    let pkg = text(&f, "/packages/default/path");
    for (pointer, command) in [
        ("/modulePackage/log", "bin/provenixd serve"),
        ("/modulePackage/push", "bin/provenix push"),
        ("/modulePackage/substituter", "bin/provenix substituter"),
        ("/singleModules/log", "bin/provenixd serve"),
        ("/singleModules/builder", "bin/provenix push"),
        ("/singleModules/substituter", "bin/provenix substituter"),
    ] {
        let exec = text(&f, pointer);
        assert!(
            exec.starts_with(&format!("{pkg}/{command} --config /nix/store/")),
            "{pointer}: {exec}"
        );
    }
}

// ---- provenix check-config (builder.toml and trust.toml) ------------------------------------------

/// `provenix check-config` (DESIGN §11) accepts what the modules generate and rejects bad files,
/// as the modules' build-time checks rely on.
#[test]
fn provenix_check_config_accepts_the_generated_files_and_rejects_bad_ones() {
    let Some(nix) = NixEval::new() else { return };
    for (case_name, pointer) in [
        ("builder", "/configFiles/builder/unchecked/text"),
        (
            "builder-tpm-and-extra-hook",
            "/configFiles/builder/unchecked/text",
        ),
        ("substituter", "/configFiles/substituter/unchecked/text"),
        ("substituter", "/etc/provenix~1trust.toml/unchecked/text"),
        (
            "substituter-shared",
            "/configFiles/substituter/unchecked/text",
        ),
    ] {
        let c = case(&nix, case_name);
        let toml = text(&c, pointer);
        let r = check_config("provenix", toml);
        assert!(
            r.ok,
            "{case_name} {pointer}: provenix check-config refused\n{toml}\n{}",
            r.stderr
        );
    }
    // A builder file naming no log, and a trust file whose threshold names an unknown builder.
    let r = check_config(
        "provenix",
        "key-file = \"/k.sec\"\nspool = \"/s\"\nlogs = []\n",
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains(&r.file.display().to_string()) && r.stderr.contains("logs"),
        "{}",
        r.stderr
    );
    let c = case(&nix, "substituter");
    let bad = text(&c, "/configFiles/substituter/unchecked/text")
        .replace("1 of [acme, beta]", "1 of [acme, gamma]");
    let r = check_config("provenix", &bad);
    assert!(!r.ok);
    assert!(r.stderr.contains("gamma"), "{}", r.stderr);
}
