//! Running `nix-instantiate` for the NixOS module tests without touching the machine's Nix:
//! a private store (`--store` under a temp dir, opened read-only), no user or system
//! `nix.conf`, no substituters, no `NIX_PATH`, a private cache directory (see NIX-FACTS.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An isolated Nix evaluator. Each instance has its own temporary state.
pub struct NixEval {
    dir: tempfile::TempDir,
}

/// Why an evaluation failed: Nix's exit status and its error output.
#[derive(Debug)]
pub struct NixError {
    /// The command line, for the message.
    pub command: String,
    /// Nix's stderr (the evaluation error, with location).
    pub stderr: String,
}

impl std::fmt::Display for NixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed:\n{}", self.command, self.stderr)
    }
}

impl NixEval {
    /// A fresh evaluator, or `None` (after printing why, outside CI) when `nix-instantiate` is
    /// not installed.
    pub fn new() -> Option<Self> {
        if !crate::require_tool("nix-instantiate") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("conf")).expect("conf dir");
        std::fs::write(dir.path().join("conf/nix.conf"), "").expect("nix.conf");
        Some(Self { dir })
    }

    fn command(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("nix-instantiate");
        c.env(
            "NIX_CONFIG",
            "sandbox = false\nbuild-users-group =\nexperimental-features = nix-command\nsubstituters =",
        )
        .env("NIX_CONF_DIR", d.join("conf"))
        .env("NIX_USER_CONF_FILES", d.join("conf/nix.conf"))
        .env("XDG_CACHE_HOME", d.join("xdg-cache"))
        .env("HOME", d)
        .env("NIX_PATH", "")
        .arg("--store")
        .arg(d.join("store"))
        .arg("--readonly-mode");
        c
    }

    fn run(&self, mut c: Command) -> Result<Output, NixError> {
        let command = format!("{c:?}");
        let out = c.output().expect("spawn nix-instantiate");
        if out.status.success() {
            Ok(out)
        } else {
            Err(NixError {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// `nix-instantiate --parse FILE`: does the file parse?
    pub fn parse(&self, file: &Path) -> Result<(), NixError> {
        let mut c = self.command();
        c.arg("--parse").arg(file);
        self.run(c).map(|_| ())
    }

    /// `nix-instantiate --eval --strict --json FILE [-A ATTR]`, parsed.
    pub fn eval_file(
        &self,
        file: &Path,
        attr: Option<&str>,
    ) -> Result<serde_json::Value, NixError> {
        let mut c = self.command();
        c.args(["--eval", "--strict", "--json"]).arg(file);
        if let Some(a) = attr {
            c.arg("-A").arg(a);
        }
        let out = self.run(c)?;
        Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate printed JSON"))
    }

    /// `nix-instantiate --eval --strict --json --expr EXPR`, parsed. Relative paths in the
    /// expression resolve against the current directory of the test (use absolute ones).
    pub fn eval_expr(&self, expr: &str) -> Result<serde_json::Value, NixError> {
        let mut c = self.command();
        c.args(["--eval", "--strict", "--json", "--expr", expr]);
        let out = self.run(c)?;
        Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate printed JSON"))
    }
}

/// Every `*.nix` file under `root`, skipping `target/`, hidden directories and `result*` links
/// (`nix build` outputs, which point into the store).
pub fn nix_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') && !name.starts_with("result") {
                    walk(&p, out);
                }
            } else if name.ends_with(".nix") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}
