//! `provenix`: the client side of provenix (DESIGN.md §7–§11).
//!
//! - [`logclient`]: HTTP client for `provenixd`.
//! - [`keygen`]: builder keys in Nix's format.
//! - [`quorum`]: gathering and checking votes from every configured log; the decision.
//! - [`substituter`]: the quorum substituter Nix talks to.
//! - [`verify`]: `provenix verify`, [`check_config`]: `provenix check-config`.

pub mod check_config;
pub mod keygen;
pub mod logclient;
pub mod quorum;
pub mod substituter;
pub mod verify;
