//! C2SP `tlog-tiles` paths (`GET /tile/...` requests) and entry bundles (what a reader of the
//! tiles gets from a log or a mirror).
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::tile::{encode_index, level_shape, push_bundle_entry, split_bundle, TilePath};

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = split_bundle(data) {
        assert!(entries.len() <= 256);
        let mut back = Vec::new();
        for e in &entries {
            push_bundle_entry(&mut back, e).expect("entry from a bundle fits a bundle");
        }
        assert_eq!(back, data);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = TilePath::parse(s) {
            // Strict: only the canonical encoding parses.
            assert_eq!(t.to_string().strip_prefix("tile/"), Some(s));
            assert!((1..=256).contains(&t.width));
        }
    }
    if let Some(n) = data.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)) {
        let level = data.get(8).map_or(0, |l| l % 8);
        let p = format!("{level}/{}", encode_index(n));
        let t = TilePath::parse(&p).expect("encoded index parses");
        assert_eq!(t.index, n);
        let _ = level_shape(n, level);
    }
});
