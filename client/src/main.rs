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
    /// Nix post-build-hook: record $DRV_PATH in the spool of $PROVENIX_CONFIG and exit 0,
    /// whatever happens. Nix runs hooks without arguments: point `post-build-hook` at a
    /// symlink to this binary named `provenix-hook`, or at a script `exec provenix hook`.
    Hook,
    /// Drain the spool: describe, sign and submit every recorded build to every log.
    Push(provenix::push::PushArgs),
    /// TPM 2.0 attestation of this builder (needs the `tpm` feature).
    #[command(subcommand)]
    Attest(provenix::attest::AttestCommand),
    /// Run the quorum substituter Nix uses as its binary cache (`[substituter]` of trust.toml).
    Substituter(provenix::substituter::SubstituterArgs),
    /// Decide one store path (or, with --closure, every path of its closure and every link
    /// between them) and explain why. Exit 0 trusted, 1 not trusted, 2 could not decide.
    Verify(provenix::verify::VerifyArgs),
    /// Follow every log of a trust file: verify checkpoints, consistency, every new entry; report
    /// conflicting claims. Exit 0 clean, 1 conflicts or invalid entries, 2 could not reach a log
    /// (or bad configuration), 3 a log misbehaved.
    Audit(provenix::audit::AuditArgs),
    /// Write every entry the logs hold for a store path, with C2SP tlog-proof receipts, as an
    /// in-toto bundle (`.intoto.jsonl`) that third-party tools verify offline.
    Export(provenix::export::ExportArgs),
    /// Check a bundle written by `export` offline with the trust file's keys: every DSSE
    /// signature and every receipt. Exit 0 all verified, 1 some did not, 2 unusable input.
    VerifyReceipt(provenix::export::VerifyReceiptArgs),
    /// Validate a configuration file (trust.toml or builder.toml, recognised by its keys) and exit:
    /// 0 if usable, 1 with the reason.
    CheckConfig(provenix::check_config::CheckConfigArgs),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

fn main() -> ExitCode {
    // The hook path first: no argument parsing beyond argv, no tracing, no runtime, exit 0.
    let mut args = std::env::args_os();
    let argv0 = args.next();
    let first = args.next();
    let as_hook = argv0
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == provenix::hook::HOOK_ARGV0);
    if (as_hook && first.is_none())
        || (first.as_deref() == Some("hook".as_ref()) && args.next().is_none())
    {
        provenix::hook::run();
        return ExitCode::SUCCESS;
    }

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
        Command::Witness(cmd) => runtime()
            .and_then(|rt| rt.block_on(provenix::witness::run(cmd)))
            .map(|()| ExitCode::SUCCESS),
        Command::Hook => {
            provenix::hook::run();
            Ok(ExitCode::SUCCESS)
        }
        Command::Push(args) => provenix::push::run(&args),
        Command::Attest(cmd) => provenix::attest::run(&cmd),
        Command::Substituter(args) => runtime()
            .and_then(|rt| rt.block_on(provenix::substituter::run(&args)))
            .map(|()| ExitCode::SUCCESS),
        Command::Verify(args) => {
            return match runtime().and_then(|rt| rt.block_on(provenix::verify::run(&args))) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("provenix verify: could not decide: {e:#}");
                    ExitCode::from(provenix::verify::EXIT_UNDECIDED)
                }
            };
        }
        Command::Audit(args) => {
            return match runtime().and_then(|rt| rt.block_on(provenix::audit::run(&args))) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("provenix audit: {e:#}");
                    ExitCode::from(provenix::audit::EXIT_UNREACHABLE)
                }
            };
        }
        Command::Export(args) => runtime()
            .and_then(|rt| rt.block_on(provenix::export::export(&args)))
            .map(|()| ExitCode::SUCCESS),
        Command::VerifyReceipt(args) => {
            return match provenix::export::verify_bundle(&args) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("provenix verify-receipt: {e:#}");
                    ExitCode::from(2)
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
