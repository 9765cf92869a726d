//! `provenixd`: run and administer a provenix log. See `provenixd --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use provenix_core::nix::NixPublicKey;
use provenix_server::api::{AppState, Limits};
use provenix_server::config::{ServerConfig, Settings};
use provenix_server::log::{Log, LogConfig};
use provenix_server::metrics::Metrics;
use provenix_server::{open_data, redact_url};

/// mimalloc instead of glibc's malloc: a lookup allocates and frees a few dozen small buffers on
/// whichever worker thread runs it, and glibc's arenas showed up in the profile (malloc, free,
/// their arena locks: a fifth of the server's CPU under lookup load). With mimalloc the server's
/// CPU per lookup went from 41 to 34 µs (`provenix-bench ingest --backend postgres`, issue 2).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// provenixd — an append-only, verifiable log of Nix build provenance.
///
/// Builders submit signed provenance entries; the log assigns each a durable index, folds it
/// into an RFC 6962 Merkle tree, and signs C2SP checkpoints that anyone can check. Start one on
/// the embedded defaults with `provenixd serve` (SQLite and a new key in ./provenix-data,
/// listening on 127.0.0.1:8080), then allow builders with `provenixd builders add`.
#[derive(Parser)]
#[command(name = "provenixd", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the log's HTTP API (creates the log on first start and prints its verifier key).
    Serve(ServeArgs),
    /// Validate a server.toml and exit: 0 if usable, 1 with the reason if not.
    CheckConfig {
        /// The file to check.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the log's C2SP verifier key (what users put in trust.toml).
    Key(DataArgs),
    /// Manage the builder allow-list (works whether or not the server runs; a running server
    /// sees changes within a second).
    Builders {
        #[command(subcommand)]
        action: BuildersAction,
    },
}

#[derive(Args, Clone)]
struct DataArgs {
    /// Read settings from this server.toml (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (default ./provenix-data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://… (default: SQLite in the data directory).
    #[arg(long, env = "PROVENIX_DATABASE_URL")]
    database: Option<String>,
    /// Name (checkpoint origin) for a new log; ignored once the log exists.
    #[arg(long)]
    origin: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Listen address (default 127.0.0.1:8080; port 0 picks a free one and prints it).
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum BuildersAction {
    /// Allow a builder key (Nix public-key format NAME:BASE64); replaces a key of the same name.
    Add {
        #[command(flatten)]
        data: DataArgs,
        /// The builder's public key, e.g. `alpha:R5Qm…=` (from `provenix keygen`).
        key: String,
    },
    /// Remove a builder (by NAME or NAME:KEY). Its entries stay in the log.
    Remove {
        #[command(flatten)]
        data: DataArgs,
        /// The builder's name.
        name: String,
    },
    /// List allowed builders, one `NAME:KEY` per line.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
}

fn settings(args: &DataArgs, listen: Option<&String>) -> anyhow::Result<Settings> {
    let mut cfg = match &args.config {
        Some(p) => ServerConfig::from_file(p)?,
        None => ServerConfig::default(),
    };
    if let Some(d) = &args.data {
        cfg.data = Some(d.clone());
    }
    if let Some(d) = &args.database {
        cfg.database = Some(d.clone());
    }
    if let Some(o) = &args.origin {
        cfg.origin = Some(o.clone());
    }
    if let Some(l) = listen {
        cfg.listen = Some(l.clone());
    }
    Ok(cfg.settings()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROVENIX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Command::CheckConfig { config } = &cli.command {
        return match ServerConfig::from_file(config).and_then(|c| c.settings()) {
            Ok(s) => {
                println!(
                    "{}: ok (listen {}, data {}, database {})",
                    config.display(),
                    s.listen,
                    s.data.display(),
                    s.database
                        .as_deref()
                        .map_or_else(|| "SQLite in the data directory".into(), redact_url)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("provenixd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("provenixd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("provenixd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Key(args) => {
            let s = settings(&args, None)?;
            let o = open_data(&s.data, s.database.as_deref(), &s.origin, Some(1)).await?;
            println!("{}", o.signer.verifier_key());
            o.store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Builders { action } => builders(action).await,
        Command::CheckConfig { .. } => Ok(ExitCode::SUCCESS),
    }
}

async fn builders(action: BuildersAction) -> anyhow::Result<ExitCode> {
    let args = match &action {
        BuildersAction::Add { data, .. }
        | BuildersAction::Remove { data, .. }
        | BuildersAction::List { data } => data.clone(),
    };
    let s = settings(&args, None)?;
    let o = open_data(&s.data, s.database.as_deref(), &s.origin, Some(1)).await?;
    if o.created {
        println!(
            "provenixd: created log {} (verifier key {})",
            o.signer.name(),
            o.signer.verifier_key()
        );
    }
    let code = match action {
        BuildersAction::Add { key, .. } => {
            let k: NixPublicKey = key.parse().with_context(|| {
                format!("{key:?} is not a Nix public key NAME:BASE64 (32 bytes)")
            })?;
            let new = o.store.add_builder(k.name(), &k.to_string()).await?;
            println!(
                "{} builder {}",
                if new { "added" } else { "replaced" },
                k.name()
            );
            ExitCode::SUCCESS
        }
        BuildersAction::Remove { name, .. } => {
            let name = name
                .split_once(':')
                .map_or(name.as_str(), |(n, _)| n)
                .to_owned();
            if o.store.remove_builder(&name).await? {
                println!("removed builder {name}");
                ExitCode::SUCCESS
            } else {
                eprintln!("provenixd: no builder named {name:?}");
                ExitCode::FAILURE
            }
        }
        BuildersAction::List { .. } => {
            for (_, key) in o.store.builders().await? {
                println!("{key}");
            }
            ExitCode::SUCCESS
        }
    };
    o.store.close().await;
    Ok(code)
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let s = settings(&args.data, args.listen.as_ref())?;
    let o = open_data(&s.data, s.database.as_deref(), &s.origin, s.read_pool_size).await?;
    if o.created {
        println!(
            "provenixd: created log {} (key in {})",
            o.signer.name(),
            o.key_file.display()
        );
    }
    println!("provenixd: verifier key {}", o.signer.verifier_key());
    let metrics = Metrics::new();
    let log = Log::open(
        o.store.clone(),
        o.signer.clone(),
        LogConfig {
            integrate_interval: s.integrate_interval,
            queue_depth: s.queue_depth,
            lookup_batch_keys: s.lookup_batch_keys,
            witnesses: s.witnesses.clone(),
            witness_timeout: s.witness_timeout,
            ..LogConfig::default()
        },
        metrics,
    )
    .await?;
    // The explorer's index is derived data on the same database; operators who do not want it
    // (or its ingest and disk cost) turn it off with `explorer = false`.
    let indexer = s
        .explorer
        .then(|| provenix_server::explorer::Indexer::start(log.clone()));
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("cannot listen on {}", s.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "provenixd: listening on http://{addr} ({} entries, checkpoint {}, {})",
        log.sequenced_size(),
        log.checkpoint().size(),
        o.store.backend_name()
    );
    let state = AppState {
        explorer: s.explorer,
        log: log.clone(),
        limits: Arc::new(Limits {
            max_body_bytes: s.max_body_bytes,
            ..Limits::default()
        }),
    };
    provenix_server::serve(
        listener,
        state,
        s.request_timeout,
        s.serve.clone(),
        shutdown_signal(),
    )
    .await?;
    tracing::info!("draining the sequencer");
    if let Some(indexer) = indexer {
        indexer.stop().await;
    }
    log.shutdown().await;
    o.store.close().await;
    println!(
        "provenixd: stopped at checkpoint {}",
        log.checkpoint().size()
    );
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
    tracing::info!("shutdown requested");
}
