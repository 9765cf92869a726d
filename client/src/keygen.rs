//! `provenix keygen`: a builder key in Nix's binary-cache key format.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use provenix_core::nix::NixSecretKey;

/// Arguments of `provenix keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Key name: the builder's name in logs and trust files ([A-Za-z0-9._-], e.g. `alpha-1`).
    pub name: String,
    /// Where to write the secret key (created with mode 0600; never overwritten).
    #[arg(long)]
    pub secret_file: PathBuf,
    /// Where to write the public key (NAME:BASE64, as `nix-store --generate-binary-cache-key`).
    #[arg(long)]
    pub public_file: PathBuf,
}

/// Creates a new file with `mode` and `contents` (never overwrites), synced to disk.
pub fn create_file(path: &Path, mode: u32, contents: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an existing file is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Generates the key pair and writes both files (no trailing newline, like Nix).
pub fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = NixSecretKey::generate(&args.name).with_context(|| {
        format!(
            "{:?} is not a usable key name: use 1-128 of [A-Za-z0-9._-]",
            args.name
        )
    })?;
    create_file(&args.secret_file, 0o600, &key.to_secret_string())?;
    if let Err(e) = create_file(&args.public_file, 0o644, &key.public().to_string()) {
        let _ = std::fs::remove_file(&args.secret_file);
        return Err(e);
    }
    println!("{}", key.public());
    Ok(())
}
