//! A one-line progress bar on stderr, drawn only when stderr is a terminal.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// Redraws at most every 100 ms; draws nothing unless enabled.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    drawn: Option<Instant>,
}

const WIDTH: usize = 30;

impl Progress {
    /// A bar for `total` entries of `label`, shown only when stderr is a terminal.
    pub fn new(label: &str, total: u64) -> Self {
        Self::with(label, total, std::io::stderr().is_terminal())
    }

    /// A bar that is drawn only if `enabled`.
    pub fn with(label: &str, total: u64, enabled: bool) -> Self {
        Self {
            enabled: enabled && total > 0,
            label: label.to_owned(),
            total,
            done: 0,
            started: Instant::now(),
            drawn: None,
        }
    }

    /// Adds `n` finished entries.
    pub fn add(&mut self, n: u64) {
        self.done = (self.done + n).min(self.total);
        if !self.enabled
            || self
                .drawn
                .is_some_and(|d| d.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let _ = write!(std::io::stderr(), "\r{}", self.line());
    }

    /// The current line (without the carriage return).
    pub fn line(&self) -> String {
        let frac = if self.total == 0 {
            1.0
        } else {
            self.done as f64 / self.total as f64
        };
        let filled = ((frac * WIDTH as f64) as usize).min(WIDTH);
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        };
        let eta = if rate > 0.0 {
            format!("{:.0}s left", (self.total - self.done) as f64 / rate)
        } else {
            "…".into()
        };
        format!(
            "{} [{}{}] {}/{} entries ({:.1}%) {:.0}/s {}   ",
            self.label,
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.done,
            self.total,
            frac * 100.0,
            rate,
            eta
        )
    }

    /// Erases the line.
    pub fn finish(&mut self) {
        if self.enabled && self.drawn.is_some() {
            let _ = write!(std::io::stderr(), "\r{}\r", " ".repeat(self.line().len()));
        }
        self.enabled = false;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_counts_and_share() {
        let mut p = Progress::with("log.example", 200, false);
        p.add(50);
        let l = p.line();
        assert!(l.starts_with("log.example [#######-"), "{l}");
        assert!(l.contains("50/200 entries (25.0%)"), "{l}");
        p.add(500);
        assert!(p.line().contains("200/200 entries (100.0%)"));
    }
}
