//! Asking witnesses to cosign the log's checkpoints (C2SP tlog-witness, log side).
//!
//! After signing a checkpoint, the integrator sends it to every configured witness with a
//! consistency proof from the size that witness last cosigned, keeps the cosignatures that
//! verify with that witness's key, and publishes the checkpoint with them. A witness that is
//! slow, down or refuses does not stop the log: its cosignature is simply missing.

use std::sync::Mutex;
use std::time::Duration;

use provenix_core::checkpoint::SignedCheckpoint;
use provenix_core::merkle::{Hash, ProofError};
use provenix_core::witness::{self, AddCheckpoint, CosignerVerifier};

/// One configured witness.
#[derive(Debug)]
struct Witness {
    url: String,
    key: CosignerVerifier,
    /// The size this witness last cosigned, as far as we know (0 = never / unknown).
    known: Mutex<u64>,
}

/// The witnesses a log asks.
#[derive(Debug)]
pub struct Witnesses {
    list: Vec<Witness>,
    http: reqwest::Client,
}

/// A configured witness: its `add-checkpoint` submission prefix and its cosigner key.
#[derive(Debug, Clone)]
pub struct WitnessSpec {
    pub url: String,
    pub key: CosignerVerifier,
}

impl Witnesses {
    /// Witnesses to ask, each request bounded by `timeout`.
    pub fn new(specs: Vec<WitnessSpec>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            list: specs
                .into_iter()
                .map(|s| Witness {
                    url: s.url.trim_end_matches('/').to_owned(),
                    key: s.key,
                    known: Mutex::new(0),
                })
                .collect(),
            http,
        }
    }

    /// Whether any witness is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Asks every witness (concurrently) to cosign `cp`; returns the valid cosignature lines.
    /// `proof(from, to)` gives consistency proofs from the log's tree.
    pub async fn cosign<F>(&self, cp: &SignedCheckpoint, proof: F) -> Vec<String>
    where
        F: Fn(u64, u64) -> Result<Vec<Hash>, ProofError> + Sync,
    {
        let asks = self.list.iter().map(|w| self.ask(w, cp, &proof));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn ask<F>(&self, w: &Witness, cp: &SignedCheckpoint, proof: &F) -> Option<String>
    where
        F: Fn(u64, u64) -> Result<Vec<Hash>, ProofError> + Sync,
    {
        let size = cp.size();
        let mut old = *w
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for _ in 0..2 {
            if old > size {
                tracing::error!(witness = %w.key.name(), witness_size = old, size, "witness has cosigned a larger tree than this log has");
                return None;
            }
            let p = if old == 0 || old == size {
                Vec::new()
            } else {
                match proof(old, size) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(witness = %w.key.name(), error = %e, "cannot prove consistency for witness");
                        return None;
                    }
                }
            };
            let body = AddCheckpoint {
                old_size: old,
                proof: p,
                checkpoint: cp.note().to_owned(),
            }
            .to_body();
            let resp = match self
                .http
                .post(format!("{}/add-checkpoint", w.url))
                .body(body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(witness = %w.key.name(), error = %e, "witness unreachable");
                    return None;
                }
            };
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            match status {
                200 => {
                    let lines: Vec<String> = text
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(|l| format!("{l}\n"))
                        .collect();
                    let with = witness::add_signature_lines(cp.note(), &lines);
                    if witness::valid_cosignatures(&with, std::slice::from_ref(&w.key)).is_empty() {
                        tracing::warn!(witness = %w.key.name(), "witness answered without a valid cosignature");
                        return None;
                    }
                    *w.known
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = size;
                    // Keep only this witness's lines that verify.
                    return lines.into_iter().find(|l| {
                        let one = witness::add_signature_lines(cp.note(), std::slice::from_ref(l));
                        !witness::valid_cosignatures(&one, std::slice::from_ref(&w.key)).is_empty()
                    });
                }
                409 => match text.trim().parse::<u64>() {
                    Ok(n) if n != old => old = n,
                    _ => {
                        tracing::error!(witness = %w.key.name(), size, "witness reports a conflicting checkpoint of the same size");
                        return None;
                    }
                },
                _ => {
                    tracing::warn!(witness = %w.key.name(), status, body = %text.trim(), "witness refused the checkpoint");
                    return None;
                }
            }
        }
        None
    }
}
