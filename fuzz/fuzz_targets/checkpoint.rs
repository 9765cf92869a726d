//! C2SP signed notes and `tlog-checkpoint` bodies (what a log serves at `/checkpoint`, what
//! witnesses and receipts carry), `tlog-cosignature` lines and note verifier keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::checkpoint::{Checkpoint, LogVerifier};
use provenix_core::witness::{split_note, valid_cosignatures, CosignerVerifier};
use provenix_fuzz::{log_signer, log_verifier, stranger_log, stranger_witness, LOG_NAME};

fuzz_target!(|data: &[u8]| {
    // A checkpoint body: strict, so printing it gives back the input byte for byte.
    if let Ok(cp) = Checkpoint::from_text(data) {
        assert_eq!(cp.to_text().as_bytes(), data);
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // A note from the outside: never verifies with a key whose secret nobody has.
    assert!(stranger_log().verify_note(s).is_err());
    assert!(stranger_log().verify(s).is_err());
    assert!(valid_cosignatures(s, std::slice::from_ref(stranger_witness())).is_empty());
    if let Ok((text, sigs)) = split_note(s) {
        let mut back = text.clone();
        back.push('\n');
        for sig in &sigs {
            back.push_str(&sig.line);
        }
        assert_eq!(back, s);
    }
    // The same text signed by us: verify_note gives it back, and verify accepts it exactly
    // when it is a checkpoint of this log.
    if let Ok(note) = log_signer().sign_note(s) {
        assert_eq!(log_verifier().verify_note(&note).as_deref(), Ok(data));
        let cp = Checkpoint::from_text(data);
        let ours = matches!(&cp, Ok(c) if c.origin == LOG_NAME);
        match log_verifier().verify(&note) {
            Ok(signed) => {
                assert!(ours);
                assert_eq!(Ok(signed.checkpoint()), cp.as_ref());
                assert_eq!(signed.note(), note);
            }
            Err(_) => assert!(!ours),
        }
    }
    // Verifier keys (trust.toml, witness configuration).
    if let Ok(v) = s.parse::<LogVerifier>() {
        let again: LogVerifier = v.to_string().parse().expect("Display output parses");
        assert_eq!((again.name(), again.key_id()), (v.name(), v.key_id()));
    }
    if let Ok(v) = s.parse::<CosignerVerifier>() {
        assert_eq!(v.to_string().parse::<CosignerVerifier>().as_ref(), Ok(&v));
    }
});
