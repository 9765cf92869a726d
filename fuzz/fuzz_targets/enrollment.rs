//! TPM enrollment: the records a log writes (`EnrollmentRecord::parse`, read back by every
//! auditor and verifier), the registrar's request bodies (`POST /v1/attest/challenge` and
//! `/enroll`), EK certificates (DER and PEM).
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::enrollment::{ChallengeRequest, EnrollRequest, EnrollmentRecord};
use provenix_core::tpm::{parse_ek_certificate, pem_certificates, QuoteBundle};
use provenix_fuzz::stranger_log;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = EnrollmentRecord::parse(data) {
        // The leaf is canonical: it parses to the same record.
        let again = EnrollmentRecord::parse(rec.leaf_bytes()).expect("leaf bytes parse");
        assert_eq!(again.leaf_bytes(), rec.leaf_bytes());
        assert_eq!(again.payload(), rec.payload());
        assert_eq!(again.ak_name(), rec.ak_name());
        let _ = rec.check_binding();
        assert!(rec.verify_log_signature(stranger_log()).is_err());
    }
    if let Ok(req) = serde_json::from_slice::<ChallengeRequest>(data) {
        if let Ok(d) = req.decode() {
            assert_eq!(d.ak_public.marshal(), d.ak_public_bytes);
            assert_eq!(d.ek_public.marshal(), d.ek_public_bytes);
        }
    }
    if let Ok(req) = serde_json::from_slice::<EnrollRequest>(data) {
        let _ = QuoteBundle::from_descriptor(&req.binding_quote);
    }
    let _ = parse_ek_certificate(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(ders) = pem_certificates(s) {
            for der in ders {
                let _ = parse_ek_certificate(&der);
            }
        }
    }
});
