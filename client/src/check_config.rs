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
    /// The file to check (a `trust.toml` or a `builder.toml`).
    #[arg(long)]
    pub config: PathBuf,
}

/// The kinds of configuration file provenix reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `trust.toml` (DESIGN.md §7): `[[log]]`, `[[builder]]`, `[policy]`, `[substituter]`.
    Trust,
    /// `builder.toml` (DESIGN.md §11): `key-file`, `spool`, `logs`.
    Builder,
}

/// Which kind of file `text` is, from its top-level keys; `None` if it is none we know (or not
/// TOML at all).
pub fn detect(text: &str) -> Option<FileKind> {
    let table: toml::Table = text.parse().ok()?;
    let has = |k: &str| table.contains_key(k);
    if has("policy") || has("log") || has("builder") || has("substituter") {
        return Some(FileKind::Trust);
    }
    if has("key-file") || has("spool") || has("logs") {
        return Some(FileKind::Builder);
    }
    None
}

/// Checks `text` (read from `path`, which relative paths in it are resolved against) as a file
/// of `kind`; returns a one-line summary. Secret files are not read (the NixOS module checks
/// configurations at build time, where they do not exist).
pub fn check(kind: FileKind, text: &str, path: &Path) -> Result<String, String> {
    match kind {
        FileKind::Builder => {
            let c = crate::builder_config::BuilderConfig::parse(text, path)
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "builder file: key {}, spool {}, {} log(s)",
                c.key_file.display(),
                c.spool.display(),
                c.logs.len()
            ))
        }
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
                    "{}: not a provenix configuration file (trust files have [[log]], [[builder]] and [policy]; builder files key-file, spool and logs): {e}",
                    path.display()
                );
            }
            FileKind::Trust
        }
    };
    let summary =
        check(kind, &text, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(format!("{}: ok: {summary}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kinds_by_top_level_keys() {
        assert_eq!(
            detect("[policy]\nthreshold = \"a\"\n"),
            Some(FileKind::Trust)
        );
        assert_eq!(detect("[[log]]\nurl = \"x\"\n"), Some(FileKind::Trust));
        assert_eq!(detect("key-file = \"a.sec\"\n"), Some(FileKind::Builder));
        assert_eq!(detect("nothing = 1\n"), None);
        assert_eq!(detect("not toml ["), None);
    }
}
