//! Nix binary-cache `.narinfo` files (from upstream caches and other substituters), and the
//! small Nix values inside them: store paths, NAR hashes, signatures, public keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::nix::{NarHash, NarInfo, NarInfoSignature, NixPublicKey, StorePath};
use provenix_fuzz::stranger_builder;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = NarInfo::parse(data) {
        // Display writes a narinfo that parses back to the same value, byte-stable.
        let text = info.to_string();
        let again = NarInfo::parse(text.as_bytes()).expect("Display output parses");
        assert_eq!(again, info);
        assert_eq!(again.to_string(), text);
        let _ = info.fingerprint();
        for sig in info.signatures() {
            assert!(!info.verify_signature(sig, stranger_builder()));
        }
        assert!(info
            .verified_signers(std::slice::from_ref(stranger_builder()))
            .is_empty());
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = s.parse::<StorePath>() {
        assert_eq!(p.to_string().parse::<StorePath>().as_ref(), Ok(&p));
    }
    if let Ok(h) = s.parse::<NarHash>() {
        assert_eq!(h.to_string().parse::<NarHash>().as_ref(), Ok(&h));
        assert_eq!(NarHash::from_hex(&h.to_hex()).as_ref(), Ok(&h));
    }
    if let Ok(sig) = s.parse::<NarInfoSignature>() {
        assert_eq!(
            sig.to_string().parse::<NarInfoSignature>().as_ref(),
            Ok(&sig)
        );
    }
    if let Ok(k) = s.parse::<NixPublicKey>() {
        let _ = k.verify(data, &[0; 64]);
    }
});
