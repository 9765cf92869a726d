//! `provenix check-config --config FILE`: validates a provenix configuration file and exits
//! non-zero with the reason if it is not usable. The kind of file is recognised by its top-level
//! keys, so one command serves every kind; add a kind by adding a [`FileKind`] variant, its
//! detection in [`detect`] and its check in [`check`].

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use provenix_core::policy::TrustConfig;

/// Arguments of `provenix check-config`.
#[derive(clap::Args, Debug)]
pub struct CheckConfigArgs {
    /// The file to check (a `trust.toml`).
    #[arg(long)]
    pub config: PathBuf,
}

/// The kinds of configuration file provenix reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `trust.toml` (DESIGN.md §7): `[[log]]`, `[[builder]]`, `[policy]`, `[substituter]`.
    Trust,
}

/// Which kind of file `text` is, from its top-level keys; `None` if it is none we know (or not
/// TOML at all).
pub fn detect(text: &str) -> Option<FileKind> {
    let table: toml::Table = text.parse().ok()?;
    let has = |k: &str| table.contains_key(k);
    if has("policy") || has("log") || has("builder") || has("substituter") {
        return Some(FileKind::Trust);
    }
    None
}

/// Checks `text` as a file of `kind`; returns a one-line summary.
pub fn check(kind: FileKind, text: &str) -> Result<String, String> {
    match kind {
        FileKind::Trust => {
            let c = TrustConfig::parse(text).map_err(|e| e.to_string())?;
            let sub = match &c.substituter {
                Some(s) => format!(
                    ", substituter on {} with {} upstream(s)",
                    s.listen,
                    s.upstreams.len()
                ),
                None => String::new(),
            };
            Ok(format!(
                "trust file: {} log(s), {} builder(s), threshold {} (dissent = {}){sub}",
                c.logs.len(),
                c.builders.len(),
                c.policy.threshold(),
                match c.policy.dissent() {
                    provenix_core::policy::DissentRule::Ignore => "ignore",
                    provenix_core::policy::DissentRule::Veto => "veto",
                }
            ))
        }
    }
}

/// Reads `path`, detects its kind and checks it.
pub fn check_file(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let kind = match detect(&text) {
        Some(k) => k,
        None => {
            // Not recognisable: let the trust-file parser say what is wrong (TOML syntax, or
            // which keys it expected).
            if let Err(e) = TrustConfig::parse(&text) {
                anyhow::bail!(
                    "{}: not a provenix configuration file (trust files have [[log]], [[builder]] and [policy]): {e}",
                    path.display()
                );
            }
            FileKind::Trust
        }
    };
    let summary = check(kind, &text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(format!("{}: ok: {summary}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kinds_by_top_level_keys() {
        assert_eq!(detect("[policy]\nthreshold = \"a\"\n"), Some(FileKind::Trust));
        assert_eq!(detect("[[log]]\nurl = \"x\"\n"), Some(FileKind::Trust));
        assert_eq!(detect("nothing = 1\n"), None);
        assert_eq!(detect("not toml ["), None);
    }
}
