//! The builder spool's record formats (`client/src/spool/record.rs`), which `provenix push`
//! parses from disk: the hook journal (one JSON hook record per line, torn lines possible) and
//! pending batches (JSON lines with signed envelopes). The module is compiled here from the
//! client's own source file (see `docs/fuzzing.md` for why not the whole client crate).
#![no_main]

#[allow(dead_code)]
#[path = "../../client/src/spool/record.rs"]
mod record;

use libfuzzer_sys::fuzz_target;
use provenix_core::entry::Entry;
use record::{journal_lines, HookRecord, PendingRecord};

fuzz_target!(|data: &[u8]| {
    for line in journal_lines(data) {
        assert!(!line.is_empty() && !line.contains('\n'));
        if let Ok(r) = HookRecord::parse(&line) {
            // What the hook writes parses back to the same record.
            let back = serde_json::to_string(&r).expect("serializes");
            assert_eq!(HookRecord::parse(&back).as_ref(), Ok(&r));
        }
    }
    if let Ok(batch) = PendingRecord::parse_batch(data) {
        for p in &batch {
            let line = serde_json::to_vec(p).expect("serializes");
            assert!(!line.contains(&b'\n'));
            let again = PendingRecord::parse_batch(&line).expect("own output parses");
            assert_eq!(again.len(), 1);
            let q = &again[0];
            assert_eq!((&q.claim, q.counter, &q.drv), (&p.claim, p.counter, &p.drv));
            assert_eq!(q.envelope.get(), p.envelope.get());
            let _ = Entry::parse(p.envelope.get().as_bytes());
        }
    }
});
