//! Text bodies around checkpoints: the C2SP `tlog-witness` `add-checkpoint` request (what a
//! witness receives) and the C2SP `tlog-proof` receipt (what `provenix verify-receipt` reads).
//! Both are strict: parse then print gives back the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::checkpoint::Checkpoint;
use provenix_core::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use provenix_core::receipt::TlogProof;
use provenix_core::witness::{split_note, AddCheckpoint};
use provenix_fuzz::{stranger_log, stranger_witness};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = AddCheckpoint::parse(s) {
        assert_eq!(req.to_body(), s);
    }
    if let Ok(receipt) = TlogProof::parse(s) {
        assert_eq!(receipt.to_text(), s);
        let witnesses = [stranger_witness().clone()];
        assert!(receipt
            .verify(&leaf_hash(b"leaf"), stranger_log(), &witnesses, 0)
            .is_err());
        // The proof against the (unverified) tree head it carries: must not panic.
        if let Ok((text, _)) = split_note(&receipt.checkpoint) {
            if let Ok(cp) = Checkpoint::from_text(text.as_bytes()) {
                let _ = verify_inclusion(
                    &leaf_hash(b"leaf"),
                    receipt.index,
                    cp.size,
                    &receipt.proof,
                    &cp.root,
                );
            }
        }
    }
    if let Ok(req) = AddCheckpoint::parse(s) {
        // Likewise the consistency proof a witness checks.
        if let Ok((text, _)) = split_note(&req.checkpoint) {
            if let Ok(cp) = Checkpoint::from_text(text.as_bytes()) {
                let _ = verify_consistency(req.old_size, cp.size, &req.proof, &cp.root, &cp.root);
            }
        }
    }
});
