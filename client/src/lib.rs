//! `provenix`: the client side of provenix (DESIGN.md §7–§11).
//!
//! - [`logclient`]: HTTP client for `provenixd`.
//! - [`keygen`]: builder keys in Nix's format.
//! - [`quorum`] gathers and checks votes from every configured log; the decision.
//! - [`substituter`]: the quorum substituter Nix talks to.
//! - [`verify`]: `provenix verify` (one path, or a whole closure), [`check_config`]:
//!   `provenix check-config`.
//! - [`audit`]: `provenix audit`, following logs; [`export`]: `provenix export` and
//!   `provenix verify-receipt`, offline in-toto bundles with C2SP receipts.
//! - [`builder_config`]: the builder's `builder.toml`.
//! - [`attest`]: `provenix attest` (TPM enrollment) and the quote producer `push` uses.
//! - [`hook`], [`spool`], [`push`], [`nixstore`]: from a finished Nix build to entries in
//!   every configured log.

pub mod attest;
pub mod audit;
pub mod builder_config;
pub mod check_config;
pub mod export;
pub mod hook;
pub mod keygen;
pub mod logclient;
pub mod witness;

/// Resolves on SIGTERM or SIGINT (for graceful shutdown of the long-running commands).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
pub mod nixstore;
pub mod push;
pub mod quorum;
pub mod spool;
pub mod substituter;
pub mod verify;
