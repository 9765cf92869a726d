//! `provenix-bench`: each subcommand runs one benchmark on this machine and prints its figures.
//! Build with `--release`; binaries under test are taken from the same target directory, so
//! run `cargo build --release --workspace --bins` first.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p provenix-bench -- <benchmark> [options]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attest;
mod audit;
mod explorer;
mod hook;
mod ingest;
mod interrupt;
mod procfs;
mod push;
mod soak;
mod stats;
mod substituter;

use clap::{Parser, Subcommand};

/// provenix benchmarks. Figures are medians/percentiles over the run; the machine is shared,
/// so compare ratios taken in the same run.
#[derive(Parser)]
#[command(name = "provenix-bench")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The log (issue 2): ingest rate, ack→checkpoint delay, lookups, disk, RSS; SQLite and PostgreSQL.
    Ingest(ingest::IngestArgs),
    /// Cost of `provenix hook` per build: median/p90/max over real hook runs (issue 3).
    Hook(hook::HookArgs),
    /// Throughput of `provenix push --once` draining spooled records into a local log (issue 3).
    Push(push::PushArgs),
    /// Issue 4: warm narinfo latency and throughput against nginx, cold decision latency with
    /// three logs, and real Nix substituting a closure through the proxy versus directly.
    Substituter(substituter::SubstituterArgs),
    /// The explorer on a large log (issue 9): indexer lag, p50/p99 render time of its pages.
    Explorer(explorer::ExplorerArgs),
    /// Issue 5: TPM quote time per entry with swtpm (median/p90) and verification time
    /// (needs `--features tpm`).
    Attest(attest::AttestArgs),
    /// Issue 6: `provenix audit` throughput on a local log (full replay and incremental run).
    Audit(audit::AuditArgs),
    /// Issue 8: a long soak of mixed ingest and lookups against one server (default 30
    /// minutes): throughput per window and memory, first window against last.
    Soak(soak::SoakArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    interrupt::run(move || match cli.bench {
        Bench::Ingest(a) => ingest::run(a),
        Bench::Hook(a) => hook::run(&a),
        Bench::Push(a) => push::run(&a),
        Bench::Substituter(args) => substituter::run(&args),
        Bench::Explorer(a) => explorer::run(a),
        Bench::Attest(a) => attest::run(&a),
        Bench::Audit(a) => audit::run(&a),
        Bench::Soak(a) => soak::run(&a),
    })
}
