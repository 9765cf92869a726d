//! The `tpm2-quote` byproduct of an entry (a JSON resource descriptor with base64 TPM
//! structures and hex PCR values): `QuoteBundle::from_descriptor`, strict, and its inverse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::entry::ResourceDescriptor;
use provenix_core::tpm::QuoteBundle;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = serde_json::from_slice::<ResourceDescriptor>(data) else {
        return;
    };
    let Ok(b) = QuoteBundle::from_descriptor(&d) else {
        return;
    };
    let d2 = b.to_descriptor();
    assert_eq!(QuoteBundle::from_descriptor(&d2).as_ref(), Ok(&b));
    // Canonical encodings only: the annotations we write are the ones we read.
    assert_eq!(d2.annotations, d.annotations);
});
