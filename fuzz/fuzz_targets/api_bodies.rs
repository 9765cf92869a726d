//! JSON bodies of provenixd's HTTP API, both directions: request bodies the server parses
//! (`POST /v1/entries`, `POST /v1/lookup`) and the responses a client checks against a log key
//! (`GET /v1/entries/{i}`, `/v1/lookup`, `/v1/proof/consistency`, `/v1/builders`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::api::{
    BatchLookupRequest, BatchLookupResponse, BuildersResponse, ConsistencyResponse, EntryResponse,
    LookupResponse, SubmitRequest, SubmitResponse,
};
use provenix_core::entry::{Entry, LookupKey};
use provenix_core::merkle::Hash;
use provenix_fuzz::{log_signer, stranger_log};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<SubmitRequest>(data) {
        for raw in &req.entries {
            let _ = Entry::parse(raw.get().as_bytes());
        }
    }
    if let Ok(req) = serde_json::from_slice::<BatchLookupRequest>(data) {
        for k in &req.keys {
            if let Ok(key) = k.parse::<LookupKey>() {
                assert_eq!(&key.to_string(), k);
            }
        }
    }
    // Responses: nothing a log sends verifies under a key whose secret nobody has.
    if let Ok(r) = serde_json::from_slice::<EntryResponse>(data) {
        assert!(r.verify(stranger_log()).is_err());
    }
    if let Ok(r) = serde_json::from_slice::<LookupResponse>(data) {
        assert!(r.verify(stranger_log()).is_err());
        // Each entry against a checkpoint we signed: parse, leaf hash, inclusion proof.
        let size = r.entries.iter().map(|e| e.index).max().unwrap_or(0);
        if let Ok(cp) = log_signer().sign(size.saturating_add(1), Hash::default()) {
            for e in &r.entries {
                let _ = e.verify(&cp);
            }
        }
    }
    if let Ok(r) = serde_json::from_slice::<BatchLookupResponse>(data) {
        assert!(r.verify(stranger_log()).is_err());
    }
    if let Ok(r) = serde_json::from_slice::<SubmitResponse>(data) {
        let back = serde_json::to_vec(&r).expect("serializes");
        let again: SubmitResponse = serde_json::from_slice(&back).expect("own output parses");
        assert_eq!(again.results, r.results);
    }
    let _ = serde_json::from_slice::<ConsistencyResponse>(data);
    let _ = serde_json::from_slice::<BuildersResponse>(data);
});
