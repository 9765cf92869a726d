//! `provenix`: builder hook and pusher, quorum substituter, verifier and auditor.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// provenix — make a Nix binary cache answer to evidence, not a single signature.
///
/// Builders record every build (`hook`, `push`) in provenix logs; users substitute through a
/// local proxy that serves a path only when a quorum of builders they trust agree on its
/// content; auditors check every proof.
#[derive(Parser)]
#[command(name = "provenix", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a builder key pair (Nix binary-cache key format).
    Keygen(provenix::keygen::KeygenArgs),
    /// Run a transparency-log witness (C2SP tlog-witness) or make its key.
    #[command(subcommand)]
    Witness(provenix::witness::WitnessCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROVENIX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Keygen(args) => provenix::keygen::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Witness(cmd) => runtime()
            .and_then(|rt| rt.block_on(provenix::witness::run(cmd)))
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("provenix: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
