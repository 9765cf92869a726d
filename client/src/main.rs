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
    /// Run the quorum substituter Nix uses as its binary cache (`[substituter]` of trust.toml).
    Substituter(provenix::substituter::SubstituterArgs),
    /// Decide one store path and explain why. Exit 0 trusted, 1 not trusted, 2 could not decide.
    Verify(provenix::verify::VerifyArgs),
    /// Validate a configuration file (trust.toml) and exit: 0 if usable, 1 with the reason.
    CheckConfig(provenix::check_config::CheckConfigArgs),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Substituter(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROVENIX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Keygen(args) => provenix::keygen::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Substituter(args) => {
            runtime().and_then(|rt| rt.block_on(provenix::substituter::run(&args)))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            return match runtime().and_then(|rt| rt.block_on(provenix::verify::run(&args))) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("provenix verify: could not decide: {e:#}");
                    ExitCode::from(provenix::verify::EXIT_UNDECIDED)
                }
            };
        }
        Command::CheckConfig(args) => provenix::check_config::check_file(&args.config).map(|s| {
            println!("{s}");
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("provenix: {e:#}");
            ExitCode::FAILURE
        }
    }
}
