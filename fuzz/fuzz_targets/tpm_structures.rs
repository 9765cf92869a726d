//! TPM 2.0 structures that come with an entry or an enrollment: `TPMS_ATTEST`,
//! `TPMT_SIGNATURE`, `TPMT_PUBLIC` / `TPM2B_PUBLIC`, `TPML_PCR_SELECTION`, and the PCR values
//! of a selection. Strict parsers with byte-exact marshallers: parse then marshal gives back
//! the input. Then a signature check over parsed parts, which must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::tpm::{verify_signature, Attest, PcrBanks, PcrSelection, Signature, TpmtPublic};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Attest::parse(data) {
        assert_eq!(a.marshal(), data);
    }
    if let Ok(s) = Signature::parse(data) {
        assert_eq!(s.marshal(), data);
    }
    if let Ok(p) = TpmtPublic::parse(data) {
        assert_eq!(p.marshal(), data);
        assert_eq!(p.name(), p.name());
    }
    if let Ok((p, inner)) = TpmtPublic::parse_tpm2b(data) {
        assert_eq!(p.marshal_tpm2b(), data);
        assert_eq!(p.marshal(), inner);
    }
    if let Ok(sel) = PcrSelection::parse(data) {
        assert_eq!(sel.marshal(), data);
        assert!(sel.same_pcrs(&sel));
    }
    // Composite: a selection followed by concatenated PCR values; an AK public area, a
    // signature and a message, split on a separator.
    let mut parts = data.split(|b| *b == 0xA5);
    if let (Some(sel), Some(values)) = (parts.next(), parts.next()) {
        if let Ok(sel) = PcrSelection::parse(sel) {
            let _ = PcrBanks::from_concatenated(&sel, values);
        }
    }
    let mut parts = data.splitn(3, |b| *b == 0x5A);
    if let (Some(key), Some(sig), Some(msg)) = (parts.next(), parts.next(), parts.next()) {
        if let (Ok(key), Ok(sig)) = (TpmtPublic::parse(key), Signature::parse(sig)) {
            let _ = verify_signature(&key, msg, &sig);
        }
    }
});
