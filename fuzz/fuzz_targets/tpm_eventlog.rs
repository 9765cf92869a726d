//! TCG firmware event logs (legacy SHA-1 and crypto-agile), as a builder ships them beside a
//! quote: `EventLog::parse`, replay to PCR values, and the check of a log against PCRs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::tpm::EventLog;

fuzz_target!(|data: &[u8]| {
    let Ok(log) = EventLog::parse(data) else {
        return;
    };
    let replayed = log.replay();
    // A log always agrees with its own replay.
    assert!(log.check_against(&replayed, 0..24).is_ok());
    for (hash, bank) in &replayed.0 {
        for v in bank.values() {
            assert_eq!(v.len(), hash.size());
        }
    }
});
