//! `provenix verify --config trust.toml STOREPATH [--json]`: decides one store path the way the
//! substituter would and explains the decision. With `--closure`, decides every node of the
//! path's closure and checks every link between them ([`closure`]).
//!
//! Exit codes (for scripts): 0 trusted; 1 not trusted (the policy's answer with every log
//! heard, or with a log that misbehaved); 2 could not decide (bad configuration or arguments,
//! unusable state file, or not trusted while a log could not be reached — its votes might have
//! changed the answer).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use provenix_core::nix::StorePath;
use provenix_core::policy::Decision;
use serde::Serialize;

use crate::quorum::state::LogState;
use crate::quorum::{LogReport, Quorum, QuorumOptions};
use crate::substituter::{load_config, state_path};

pub mod closure;

/// Exit code: trusted.
pub const EXIT_TRUSTED: u8 = 0;
/// Exit code: not trusted.
pub const EXIT_NOT_TRUSTED: u8 = 1;
/// Exit code: could not decide.
pub const EXIT_UNDECIDED: u8 = 2;

/// Arguments of `provenix verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The trust file.
    #[arg(long)]
    pub config: PathBuf,
    /// Print the decision as JSON (the same object as the substituter's `/v1/decision/<hash>`,
    /// plus `logs`).
    #[arg(long)]
    pub json: bool,
    /// Log consistency state file (default: the trust file's `state-file`, else
    /// `$XDG_STATE_HOME/provenix/state.json`); shared with a running substituter.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Decide every path of the closure and check each agreeing builder's recorded
    /// dependencies against what the quorum agrees on; print the weakest links.
    #[arg(long)]
    pub closure: bool,
    /// With `--closure`: the Nix store to read references from when the path is in it (a store
    /// URI as in `$NIX_REMOTE`, default `$NIX_REMOTE`); otherwise the trust file's upstream
    /// narinfos, else the references the agreeing entries state.
    #[arg(long, requires = "closure")]
    pub store: Option<String>,
    /// The store path (`/nix/store/<hash>-<name>`, optionally followed by a path inside it).
    pub store_path: String,
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    decision: &'a Decision,
    logs: &'a [LogReport],
}

/// Parses `/nix/store/<hash>-<name>[/sub/path]`.
pub fn parse_store_path(s: &str) -> anyhow::Result<StorePath> {
    let rest = s
        .strip_prefix("/nix/store/")
        .with_context(|| format!("{s:?} is not a path under /nix/store"))?;
    let base = rest.split('/').next().unwrap_or_default();
    format!("/nix/store/{base}")
        .parse()
        .map_err(|e| anyhow::anyhow!("{s:?} is not a store path: {e}"))
}

/// Runs `provenix verify`; returns the exit code. Errors are "could not decide" (2).
pub async fn run(args: &VerifyArgs) -> anyhow::Result<u8> {
    let path = parse_store_path(&args.store_path)?;
    let config = load_config(&args.config)?;
    let state_file = state_path(args.state.as_ref(), &config)?;
    let verifiers: Vec<_> = config.logs.iter().map(|l| l.key.clone()).collect();
    let state = Arc::new(LogState::open(&state_file, &verifiers)?);
    let quorum = Quorum::new(&config, &QuorumOptions::from_config(&config), state)?;
    if args.closure {
        return closure::run(path, &config, &quorum, args.store.as_deref(), args.json).await;
    }
    let (mut decided, lookup) = quorum.decide(std::slice::from_ref(&path)).await;
    let (decision, _) = decided
        .pop()
        .context("internal: no decision for the path")?;
    if args.json {
        let out = Output {
            decision: &decision,
            logs: &lookup.logs,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{decision}");
        println!("  logs:");
        for r in &lookup.logs {
            match (&r.failure, r.checkpoint_size) {
                (Some(f), _) => println!("    - {}: FAILED, {f}", r.log),
                (None, size) => println!(
                    "    - {}: ok, checkpoint size {} ({:.1} ms)",
                    r.log,
                    size.unwrap_or_default(),
                    r.elapsed.as_secs_f64() * 1000.0
                ),
            }
        }
    }
    Ok(if decision.is_trusted() {
        EXIT_TRUSTED
    } else if lookup.any_unreachable() {
        if !args.json {
            println!(
                "  could not decide: a log was unreachable, its votes might change the answer"
            );
        }
        EXIT_UNDECIDED
    } else {
        EXIT_NOT_TRUSTED
    })
}
