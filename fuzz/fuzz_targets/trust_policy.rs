//! `trust.toml`: `TrustConfig::parse` (logs, builders, operators, TPM policies, threshold,
//! substituter section) and the policy it builds.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use provenix_core::policy::TrustConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = s.parse::<TrustConfig>() else {
        return;
    };
    assert!(!cfg.logs.is_empty());
    let names: BTreeSet<String> = cfg.builders.iter().map(|b| b.name.clone()).collect();
    assert_eq!(names.len(), cfg.builders.len(), "builder names are unique");
    for b in &cfg.builders {
        assert!(cfg.builder(&b.name).is_some());
    }
    let policy = &cfg.policy;
    assert!(policy.members().keys().eq(names.iter()));
    // Every threshold name resolves to at least one builder: all of them satisfy it, none
    // of them does not, and the threshold prints canonically.
    assert!(policy.is_satisfied_by(&names));
    assert!(!policy.is_satisfied_by(&BTreeSet::new()));
    let t = policy.threshold();
    assert_eq!(t.to_string().parse().as_ref(), Ok(t));
});
