//! Offline receipts: C2SP `tlog-proof` (`c2sp.org/tlog-proof@v1`).
//!
//! A receipt proves, with no network, that a leaf is at `index` of a log whose checkpoint (with
//! any witness cosignatures) is carried verbatim:
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64>              (optional, unauthenticated)
//! index <decimal>
//! <base64 hash>               (the RFC 6962 inclusion proof, one hash per line, 0..63 lines)
//!
//! <the signed checkpoint note, verbatim>
//! ```
//!
//! # Authenticated vs untrusted
//! Everything in a receipt is untrusted until [`TlogProof::verify`] succeeds with the log key
//! (and witness keys) the verifier chose: then the checkpoint is the log's, at least
//! `min_witnesses` of the given witnesses cosigned it, and the leaf hash the verifier computed
//! itself (from the entry it holds) is at `index` of that tree. `extra` is never authenticated.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::checkpoint::{CheckpointError, LogVerifier, SignedCheckpoint};
use crate::merkle::{self, Hash, LeafIndex, ProofError};
use crate::witness::{valid_cosignatures, CosignerVerifier};

/// The first line of every receipt.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";
/// Largest receipt parsed (a checkpoint with a few dozen cosignatures and 63 proof lines fit
/// easily).
pub const MAX_RECEIPT_BYTES: usize = 64 * 1024;
/// Most inclusion-proof lines (a tree of 2^63 leaves needs 63).
pub const MAX_PROOF_LINES: usize = 63;

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("malformed tlog-proof: {0}")]
    Malformed(&'static str),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("inclusion proof for index {index} in the checkpoint of size {size}: {error}")]
    Inclusion {
        index: LeafIndex,
        size: u64,
        error: ProofError,
    },
    #[error("checkpoint has {have} of the {need} witness cosignatures required")]
    NotWitnessed { have: usize, need: usize },
}

/// A parsed `c2sp.org/tlog-proof@v1` receipt (unverified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque application data (never authenticated).
    pub extra: Option<Vec<u8>>,
    /// The leaf's index in the log.
    pub index: LeafIndex,
    /// RFC 6962 inclusion proof, from the leaf's sibling up.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim (ends with a newline).
    pub checkpoint: String,
}

/// What a verified receipt establishes.
#[derive(Clone, Debug)]
pub struct VerifiedReceipt {
    /// The log's checkpoint the leaf is included in.
    pub checkpoint: SignedCheckpoint,
    /// The witnesses (of those given) whose cosignature on it verifies, with their timestamps.
    pub cosigners: Vec<(String, u64)>,
}

fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

impl TlogProof {
    /// The receipt text.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.checkpoint.len() + 64 + self.proof.len() * 45);
        out.push_str(TLOG_PROOF_HEADER);
        out.push('\n');
        if let Some(e) = &self.extra {
            out.push_str("extra ");
            STANDARD.encode_string(e, &mut out);
            out.push('\n');
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.proof {
            out.push_str(&h.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses a receipt strictly: the header, an optional `extra` line, the `index` line, base64
    /// SHA-256 hashes, an empty line, and a non-empty checkpoint.
    pub fn parse(text: &str) -> Result<Self, ReceiptError> {
        if text.len() > MAX_RECEIPT_BYTES {
            return Err(ReceiptError::Malformed("larger than 64 KiB"));
        }
        let rest = text
            .strip_prefix(TLOG_PROOF_HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or(ReceiptError::Malformed(
                "the first line must be c2sp.org/tlog-proof@v1",
            ))?;
        let (head, checkpoint) = rest.split_once("\n\n").ok_or(ReceiptError::Malformed(
            "no empty line before the checkpoint",
        ))?;
        if checkpoint.is_empty() {
            return Err(ReceiptError::Malformed("no checkpoint"));
        }
        let mut lines = head.split('\n').peekable();
        let mut extra = None;
        if let Some(e) = lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            extra = Some(
                STANDARD
                    .decode(e)
                    .map_err(|_| ReceiptError::Malformed("extra is not standard base64"))?,
            );
            lines.next();
        }
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .and_then(decimal)
            .ok_or(ReceiptError::Malformed(
                "expected `index <decimal without leading zeroes>`",
            ))?;
        let mut proof = Vec::new();
        for l in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(ReceiptError::Malformed("more than 63 proof lines"));
            }
            proof.push(
                Hash::from_base64(l)
                    .map_err(|_| ReceiptError::Malformed("a proof line is not a base64 hash"))?,
            );
        }
        Ok(Self {
            extra,
            index,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// Verifies the receipt for the leaf whose hash the caller computed (`SHA-256(0x00 ‖ leaf)`):
    /// the checkpoint is signed by `log` (its origin is the log's name), at least
    /// `min_witnesses` of `witnesses` cosigned it, and the inclusion proof places `leaf` at
    /// `index` of that tree.
    pub fn verify(
        &self,
        leaf: &Hash,
        log: &LogVerifier,
        witnesses: &[CosignerVerifier],
        min_witnesses: usize,
    ) -> Result<VerifiedReceipt, ReceiptError> {
        let checkpoint = log.verify(&self.checkpoint)?;
        let cosigners = valid_cosignatures(&self.checkpoint, witnesses);
        if cosigners.len() < min_witnesses {
            return Err(ReceiptError::NotWitnessed {
                have: cosigners.len(),
                need: min_witnesses,
            });
        }
        merkle::verify_inclusion(
            leaf,
            self.index,
            checkpoint.size(),
            &self.proof,
            checkpoint.root(),
        )
        .map_err(|error| ReceiptError::Inclusion {
            index: self.index,
            size: checkpoint.size(),
            error,
        })?;
        Ok(VerifiedReceipt {
            checkpoint,
            cosigners,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::LogSigner;
    use crate::merkle::{leaf_hash, MemoryTree};
    use crate::witness::{add_signature_lines, split_note, CosignerKey};

    fn setup() -> (LogSigner, MemoryTree, Vec<Hash>) {
        let leaves: Vec<Hash> = (0u32..37).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        (
            LogSigner::generate("log.example").unwrap(),
            MemoryTree::from_leaves(leaves.iter().copied()),
            leaves,
        )
    }

    #[test]
    fn spec_shape_round_trips_and_verifies() {
        let (log, tree, leaves) = setup();
        let w = CosignerKey::generate("witness.example").unwrap();
        let wv: CosignerVerifier = w.verifier_key().parse().unwrap();
        let cp = log.sign(tree.size(), tree.root()).unwrap();
        let (text, _) = split_note(cp.note()).unwrap();
        let note = add_signature_lines(cp.note(), &[w.cosign(text.as_bytes(), 1_700_000_000)]);
        let r = TlogProof {
            extra: Some(b"hello".to_vec()),
            index: 21,
            proof: tree.inclusion_proof(21, tree.size()).unwrap(),
            checkpoint: note.clone(),
        };
        let t = r.to_text();
        assert!(t.starts_with("c2sp.org/tlog-proof@v1\nextra aGVsbG8=\nindex 21\n"));
        assert!(t.ends_with(&format!("\n\n{note}")));
        assert_eq!(TlogProof::parse(&t).unwrap(), r);
        let lv: LogVerifier = log.verifier_key().parse().unwrap();
        let ok = r
            .verify(&leaves[21], &lv, std::slice::from_ref(&wv), 1)
            .unwrap();
        assert_eq!(ok.checkpoint.size(), 37);
        assert_eq!(
            ok.cosigners,
            vec![("witness.example".into(), 1_700_000_000)]
        );

        // Another leaf, another index, a missing witness, another log key: refused.
        assert!(matches!(
            r.verify(&leaves[20], &lv, &[], 0),
            Err(ReceiptError::Inclusion { index: 21, .. })
        ));
        let other = CosignerKey::generate("witness2.example").unwrap();
        let ov: CosignerVerifier = other.verifier_key().parse().unwrap();
        assert_eq!(
            r.verify(&leaves[21], &lv, &[ov], 1).unwrap_err(),
            ReceiptError::NotWitnessed { have: 0, need: 1 }
        );
        let stranger: LogVerifier = LogSigner::generate("log.example")
            .unwrap()
            .verifier_key()
            .parse()
            .unwrap();
        assert!(matches!(
            r.verify(&leaves[21], &stranger, &[], 0),
            Err(ReceiptError::Checkpoint(CheckpointError::NotSignedByLog(_)))
        ));
        // Without extra, index 0, a one-leaf tree: no proof lines at all.
        let one = MemoryTree::from_leaves([leaves[0]]);
        let r0 = TlogProof {
            extra: None,
            index: 0,
            proof: vec![],
            checkpoint: log.sign(1, one.root()).unwrap().note().to_owned(),
        };
        let t0 = r0.to_text();
        assert!(t0.starts_with("c2sp.org/tlog-proof@v1\nindex 0\n\nlog.example\n1\n"));
        assert_eq!(TlogProof::parse(&t0).unwrap(), r0);
        r0.verify(&leaves[0], &lv, &[], 0).unwrap();
    }

    #[test]
    fn refuses_malformed_receipts() {
        let (log, tree, _) = setup();
        let note = log
            .sign(tree.size(), tree.root())
            .unwrap()
            .note()
            .to_owned();
        let h = Hash::default().to_base64();
        for bad in [
            String::new(),
            format!("c2sp.org/tlog-proof@v2\nindex 1\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 01\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex -1\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n\n"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\nnot-a-hash\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nextra !!\nindex 1\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\nextra aGk=\n\n{note}"),
            format!(
                "c2sp.org/tlog-proof@v1\nindex 1\n{}\n{note}",
                format!("{h}\n").repeat(64)
            ),
            format!("c2sp.org/tlog-proof@v1\n{}", "x".repeat(MAX_RECEIPT_BYTES)),
        ] {
            assert!(
                matches!(TlogProof::parse(&bad), Err(ReceiptError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
