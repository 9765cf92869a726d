//! The threshold language of `trust.toml` (`2 of [alpha, any of [op-a, tpm-b]]`): parser,
//! canonical printing, and the evaluator against a direct restatement of its meaning.
//! Input: two bytes choosing which names hold, then the expression.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_core::policy::{Count, Threshold};

/// The meaning, stated directly: a name holds when chosen; a list when at least `need` items do.
fn reference(t: &Threshold, holds: &dyn Fn(&str) -> bool) -> bool {
    match t {
        Threshold::Name(n) => holds(n),
        Threshold::Of { count, items } => {
            let need = match count {
                Count::All => items.len(),
                Count::Any => 1,
                Count::AtLeast(k) => *k,
            };
            items.iter().filter(|i| reference(i, holds)).count() >= need
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (mask, expr) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => return,
    };
    let Ok(s) = std::str::from_utf8(expr) else {
        return;
    };
    let Ok(t) = s.parse::<Threshold>() else {
        return;
    };
    // Canonical printing parses back to the same expression and is a fixed point.
    let printed = t.to_string();
    let again: Threshold = printed.parse().expect("Display output parses");
    assert_eq!(again, t);
    assert_eq!(again.to_string(), printed);

    let names = t.names();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "a name appears once");
    let pos = |n: &str| names.iter().position(|m| *m == n).expect("known name");
    let chosen = |n: &str| mask & (1 << (pos(n) % 16)) != 0;

    let got = t.evaluate(&mut |n| chosen(n));
    assert_eq!(got, reference(&t, &chosen));
    // Everyone agreeing satisfies any expression, no one agreeing none.
    assert!(t.evaluate(&mut |_| true));
    assert!(!t.evaluate(&mut |_| false));
    // Monotone: one more name holding never breaks a satisfied expression.
    if got {
        for extra in &names {
            assert!(t.evaluate(&mut |n| chosen(n) || n == *extra));
        }
    }
});
