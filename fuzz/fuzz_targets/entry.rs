//! DSSE envelope, in-toto Statement v1 and SLSA Provenance v1: `Envelope::from_json`,
//! `Entry::parse` (what `POST /v1/entries` and every log reader run on a leaf), the lookup keys
//! an entry is indexed under and the `tpm2-quote` byproduct it may carry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::entry::{Entry, Envelope, LookupKey};
use provenix_core::tpm::QuoteBundle;
use provenix_fuzz::stranger_builder;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_json(data) {
        // The canonical form parses back to the same envelope and is a fixed point.
        let canon = env.canonical_json();
        let again = Envelope::from_json(&canon).expect("canonical JSON parses");
        assert_eq!(again, env);
        assert_eq!(again.canonical_json(), canon);
        assert!(env.verify(stranger_builder()).is_err());
    }
    if let Ok(entry) = Entry::parse(data) {
        // The leaf is the canonical envelope: it parses to the same entry.
        let again = Entry::parse(entry.leaf_bytes()).expect("leaf bytes parse");
        assert_eq!(again.leaf_bytes(), entry.leaf_bytes());
        assert_eq!(again.leaf_hash(), entry.leaf_hash());
        assert_eq!(again.keys(), entry.keys());
        assert_eq!(again.outputs(), entry.outputs());
        for k in entry.keys() {
            assert_eq!(k.to_string().parse::<LookupKey>().as_ref(), Ok(k));
        }
        let _ = entry.trace_digest();
        let _ = entry.dependencies();
        let st = entry.statement();
        let _ = (st.built_locally(), st.counter(), st.derivation());
        let _ = (st.drv_output_ids(), st.builder_id());
        if let Ok(Some(bundle)) = QuoteBundle::from_entry(&entry) {
            let back = QuoteBundle::from_descriptor(&bundle.to_descriptor());
            assert_eq!(back.as_ref(), Ok(&bundle));
        }
        assert!(entry.verify(stranger_builder()).is_err());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(k) = s.parse::<LookupKey>() {
            assert_eq!(k.to_string(), s);
        }
    }
});
