//! `provenix`: the client side of provenix (DESIGN.md §7–§11).
//!
//! - [`logclient`]: HTTP client for `provenixd`.
//! - [`keygen`]: builder keys in Nix's format.
//! - [`builder_config`]: the builder's `builder.toml`.
//! - [`hook`], [`spool`], [`push`], [`nixstore`]: from a finished Nix build to entries in
//!   every configured log.

pub mod builder_config;
pub mod hook;
pub mod keygen;
pub mod logclient;
pub mod nixstore;
pub mod push;
pub mod spool;
