//! `provenix-core`: everything two provenix programs must agree on, with no I/O.
//!
//! - [`nix`]: Nix's own vocabulary (store paths, nixbase32, NAR hashes, binary-cache keys).
//! - [`entry`]: the provenance entry (DSSE envelope, in-toto Statement v1, SLSA Provenance v1)
//!   and its canonical leaf bytes.
//! - [`merkle`]: RFC 6962 / RFC 9162 hashing, inclusion and consistency proofs, an append-only
//!   in-memory tree.
//! - [`checkpoint`]: C2SP `tlog-checkpoint` in C2SP `signed-note`, log keys.
//! - [`tile`]: C2SP `tlog-tiles` paths and entry bundles.
//! - [`witness`]: C2SP `tlog-cosignature` and `tlog-witness` bodies; [`receipt`]: C2SP
//!   `tlog-proof`, the offline receipt of an entry's inclusion.
//! - [`policy`]: `trust.toml`, the threshold language and the quorum decision for a store path.
//! - [`enrollment`]: TPM enrollment records (the log as registrar; records the log writes).
//! - [`tpm`]: TPM 2.0 quote verification (structures, EK certificates, event logs, the
//!   `tpm2-quote` byproduct).
//!
//! Contracts are in `../shared/DESIGN.md`; this crate is where they are implemented once.

pub mod api;
pub mod checkpoint;
pub mod enrollment;
pub mod entry;
pub mod merkle;
pub mod nix;
pub mod policy;
pub mod receipt;
pub mod tile;
pub mod tpm;
pub mod witness;
