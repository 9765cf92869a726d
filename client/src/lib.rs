//! `provenix`: the client side of provenix (DESIGN.md §7–§11).
//!
//! - [`logclient`]: HTTP client for `provenixd`.
//! - [`keygen`]: builder keys in Nix's format.

pub mod keygen;
pub mod logclient;
