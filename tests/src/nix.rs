//! Real Nix (Debian's `nix-bin` 2.8) in tests: chroot stores, bare derivations, builders whose
//! `post-build-hook` is the built `provenix` binary. See `../shared/NIX-FACTS.md`.
//!
//! Each [`Store`] is a chroot store (`local?root=DIR`, store dir still `/nix/store`, so paths and
//! hashes equal real ones) with its own `XDG_CACHE_HOME`; every Nix process gets the
//! environment of NIX-FACTS.md (no sandbox users, no substituters) and `NIX_REMOTE` pointing at
//! the store, which the hook inherits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use provenix_core::nix::{NarHash, NixPublicKey, StorePath};

/// `nix.conf` settings every test Nix process runs with (NIX-FACTS.md).
pub const BASE_NIX_CONFIG: &str =
    "sandbox = false\nbuild-users-group =\nexperimental-features = nix-command\nsubstituters =\n";

/// Chroot stores force the sandbox; this makes `/bin/sh` and `/usr/bin/date` usable in it.
pub const SANDBOX_PATHS: &str = "/bin /lib /lib64 /usr";

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name no other test (in this or another run) uses: derivation names must be unique so
/// that each test really builds.
pub fn unique(prefix: &str) -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::SeqCst),
        ns % 1_000_000_000_000
    )
}

/// What to put in `post-build-hook` and the hook's environment.
#[derive(Debug, Clone)]
pub struct Hook {
    /// An executable Nix can run with no arguments (a `provenix-hook` symlink).
    pub program: PathBuf,
    /// `PROVENIX_CONFIG` for it.
    pub config: PathBuf,
}

/// A chroot Nix store.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
    pub xdg: PathBuf,
    pub hook: Option<Hook>,
}

/// One output as `nix path-info --json` reports it.
#[derive(Debug, Clone)]
pub struct PathInfo {
    pub path: StorePath,
    pub nar_hash: NarHash,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
}

impl Store {
    /// A new store under `dir` (created on first use by Nix).
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        Self {
            root: dir.join("root"),
            xdg: dir.join("xdg"),
            hook: None,
        }
    }

    /// The same store with `hook` as its post-build-hook.
    pub fn with_hook(mut self, hook: Hook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// `NIX_REMOTE` for this store.
    pub fn remote(&self) -> String {
        format!("local?root={}", self.root.display())
    }

    /// Where a store path's file is on this machine.
    pub fn real(&self, p: &StorePath) -> PathBuf {
        self.root.join(p.to_string().trim_start_matches('/'))
    }

    /// A Nix command (`nix`, `nix-build`, `nix-store`…) set up for this store.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let mut conf = BASE_NIX_CONFIG.to_owned();
        if let Some(h) = &self.hook {
            conf.push_str(&format!("post-build-hook = {}\n", h.program.display()));
            c.env("PROVENIX_CONFIG", &h.config);
        } else {
            c.env_remove("PROVENIX_CONFIG");
        }
        c.env("NIX_CONFIG", conf)
            .env("XDG_CACHE_HOME", &self.xdg)
            .env("NIX_REMOTE", self.remote())
            .env_remove("NIX_LOG_DIR")
            .env("PROVENIX_LOG", "warn");
        c
    }

    /// `nix-build FILE -A attr…`: the output paths, or the whole output on failure.
    pub fn try_build(
        &self,
        file: &Path,
        attrs: &[&str],
        extra: &[&str],
    ) -> Result<Vec<StorePath>, Output> {
        let mut c = self.command("nix-build");
        c.arg(file).arg("--no-out-link");
        c.args(["--option", "sandbox-paths", SANDBOX_PATHS]);
        for a in attrs {
            c.args(["-A", a]);
        }
        c.args(extra);
        let out = c.output().unwrap();
        if !out.status.success() {
            return Err(out);
        }
        Ok(String::from_utf8(out.stdout.clone())
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect())
    }

    /// Like [`Store::try_build`], panicking with Nix's stderr on failure.
    pub fn build(&self, file: &Path, attrs: &[&str]) -> Vec<StorePath> {
        self.try_build(file, attrs, &[]).unwrap_or_else(|o| {
            panic!(
                "nix-build {attrs:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        })
    }

    /// `nix path-info --json` for one path (NAR hash converted from Nix's SRI form).
    pub fn path_info(&self, p: &StorePath) -> PathInfo {
        let out = self
            .command("nix")
            .args(["path-info", "--json"])
            .arg(p.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let o = &v[0];
        let sri = o["narHash"].as_str().unwrap();
        assert!(sri.starts_with("sha256-"), "Nix 2.8 prints SRI: {sri}");
        PathInfo {
            path: o["path"].as_str().unwrap().parse().unwrap(),
            nar_hash: sri.parse().unwrap(),
            nar_size: o["narSize"].as_u64().unwrap(),
            references: o["references"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().parse().unwrap())
                .collect(),
        }
    }

    /// The derivation that produced `out` (`nix-store -q --deriver`).
    pub fn deriver(&self, out: &StorePath) -> StorePath {
        let o = self
            .command("nix-store")
            .args(["-q", "--deriver"])
            .arg(out.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().parse().unwrap()
    }

    /// Every output path of a derivation (`nix-store -q --outputs`; `nix-build` prints only
    /// the first output of a multi-output derivation).
    pub fn outputs(&self, drv: &StorePath) -> Vec<StorePath> {
        let o = self
            .command("nix-store")
            .args(["-q", "--outputs"])
            .arg(drv.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }

    /// `nix-instantiate FILE -A attr`: the derivation path, without building.
    pub fn instantiate(&self, file: &Path, attr: &str) -> StorePath {
        let o = self
            .command("nix-instantiate")
            .arg(file)
            .args(["-A", attr])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .unwrap()
            .trim()
            .trim_end_matches("!out")
            .parse()
            .unwrap()
    }
}

/// Bare derivations (no nixpkgs offline) with unique names, written as one Nix file whose
/// attributes are:
/// - `dep`: a single-output derivation;
/// - `top`: depends on `dep` and references it at run time;
/// - `multi`: outputs `out` and `dev`; `dev` references `dep`;
/// - `nondet`: a non-reproducible output (`/usr/bin/date +%s%N`);
/// - `many`: a list of 30 independent derivations.
pub fn write_test_expr(dir: &Path, tag: &str) -> PathBuf {
    let expr = format!(
        r#"let
  mk = name: script: derivation {{ inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; }};
  dep = mk "{tag}-dep" "echo dependency-{tag} > $out";
in {{
  inherit dep;
  top = mk "{tag}-top" "read x < ${{dep}}; echo $x ${{dep}} > $out";
  multi = derivation {{
    name = "{tag}-multi"; system = "x86_64-linux"; builder = "/bin/sh";
    outputs = [ "out" "dev" ];
    args = [ "-c" "echo lib-{tag} > $out; echo ${{dep}} > $dev" ];
  }};
  nondet = mk "{tag}-nondet" "/usr/bin/date +%s%N > $out";
  many = builtins.genList (i: mk "{tag}-many-${{toString i}}" "echo ${{toString i}} > $out") 30;
}}
"#
    );
    let file = dir.join(format!("{tag}.nix"));
    std::fs::write(&file, expr).unwrap();
    file
}

/// A builder: a key (made by `provenix keygen`), a spool and a `builder.toml`, and the
/// `provenix-hook` symlink Nix runs.
#[derive(Debug, Clone)]
pub struct Builder {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub spool: PathBuf,
    pub public_key: String,
    pub hook: Hook,
}

impl Builder {
    /// Creates the builder's files under `dir`; `extra` is appended to `builder.toml`.
    /// Tunables default to fast retries so that tests of outages stay short.
    pub fn new(dir: &Path, name: &str, logs: &[&str], extra: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let sec = dir.join(format!("{name}.sec"));
        let public = dir.join(format!("{name}.pub"));
        let out = Command::new(crate::bin("provenix"))
            .args(["keygen", name, "--secret-file"])
            .arg(&sec)
            .arg("--public-file")
            .arg(&public)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public_key = std::fs::read_to_string(&public).unwrap();
        public_key.parse::<NixPublicKey>().unwrap();
        let spool = dir.join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let program = dir.join("provenix-hook");
        if !program.exists() {
            std::os::unix::fs::symlink(crate::bin("provenix"), &program).unwrap();
        }
        let config = dir.join("builder.toml");
        let b = Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            config: config.clone(),
            spool,
            public_key,
            hook: Hook { program, config },
        };
        b.write_config(logs, extra);
        b
    }

    /// Rewrites `builder.toml` with another list of logs.
    pub fn write_config(&self, logs: &[&str], extra: &str) {
        let logs: Vec<String> = logs.iter().map(|l| format!("{l:?}")).collect();
        let text = format!(
            "key-file = \"{}.sec\"\nspool = \"spool\"\nlogs = [{}]\n{extra}\n[push]\nretry-initial-ms = 20\nretry-max-ms = 200\nonce-attempts = 3\ntimeout-secs = 10\npoll-interval-ms = 100\n",
            self.name,
            logs.join(", ")
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// A store whose builds run this builder's hook.
    pub fn store(&self, dir: &Path) -> Store {
        Store::new(dir).with_hook(self.hook.clone())
    }

    /// `provenix push --config builder.toml --once`.
    pub fn push_once(&self) -> Output {
        Command::new(crate::bin("provenix"))
            .args(["push", "--once", "--config"])
            .arg(&self.config)
            .env("NIX_CONFIG", BASE_NIX_CONFIG)
            .env("PROVENIX_LOG", "warn")
            .output()
            .unwrap()
    }

    /// `provenix push --config builder.toml` as a service (killed on drop of the child).
    pub fn spawn_push(&self) -> std::process::Child {
        Command::new(crate::bin("provenix"))
            .args(["push", "--config"])
            .arg(&self.config)
            .env("NIX_CONFIG", BASE_NIX_CONFIG)
            .env("PROVENIX_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs the hook directly, as Nix would, for `drv` built in `store`.
    pub fn run_hook(&self, store: &Store, drv: &StorePath) -> Output {
        Command::new(&self.hook.program)
            .env("PROVENIX_CONFIG", &self.config)
            .env("DRV_PATH", drv.to_string())
            .env("OUT_PATHS", "")
            .env("NIX_REMOTE", store.remote())
            .output()
            .unwrap()
    }

    /// What the spool holds.
    pub fn spool_counts(&self) -> provenix::spool::SpoolCounts {
        provenix::spool::counts(&self.spool).unwrap()
    }
}

/// Human-readable output of a finished process, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
