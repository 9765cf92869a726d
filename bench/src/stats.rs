//! Percentiles and rates for benchmark reports.

use std::time::Duration;

/// Load clients' cheap seeded choice of what to ask for next (xorshift64; nothing secret).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of client `n` (distinct clients, distinct sequences).
    pub fn for_client(n: u64) -> Self {
        Self(0x9e37_79b9_7f4a_7c15 ^ (n + 1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sorted samples with percentile queries.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

#[allow(dead_code)]
impl Samples {
    pub fn new(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Self(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (0..=100), nearest-rank.
    pub fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn median(&self) -> Duration {
        self.pct(50.0)
    }
}

/// Milliseconds with 3 decimals.
#[allow(dead_code)]
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
