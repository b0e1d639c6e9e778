//! Per-source rate limits for log lines about refused or malformed input.
//!
//! Refusals are counted in metrics, every one; the log gets the first few lines
//! per source per interval and then one summary line per interval saying how many
//! were left out and from how many sources. One INFO line per crafted packet was a
//! way to fill the disk.
//!
//! Pure: the caller passes `now`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default interval of the limit and of its summary lines: 10 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default lines per source per interval: 5.
pub const DEFAULT_LINES_PER_SOURCE: u32 = 5;
/// Default sources tracked per interval: 1024. Past that, new sources share one
/// budget of the same size (so a spoofed-source flood logs at most that much more).
pub const DEFAULT_MAX_SOURCES: usize = 1024;

/// Lines left out during one interval, reported at the start of the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    /// Lines not written.
    pub lines: u64,
    /// Sources they came from (the untracked ones count as one).
    pub sources: u64,
}

/// What to do with one line: write it or not, and a summary of the previous
/// interval to write first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Write this line.
    pub write: bool,
    /// Lines left out in the interval that just ended, if any.
    pub summary: Option<Suppressed>,
}

struct Window<K> {
    started: Instant,
    lines: HashMap<K, u32>,
    untracked: u32,
    suppressed: u64,
    suppressed_sources: u64,
}

/// A log rate limit keyed by source (an IP address, a peer).
pub struct LogLimit<K> {
    what: &'static str,
    interval: Duration,
    per_source: u32,
    max_sources: usize,
    window: Mutex<Option<Window<K>>>,
}

impl<K: Hash + Eq> LogLimit<K> {
    /// A limit with the defaults, for lines about `what` (named in the summary).
    pub fn new(what: &'static str) -> Self {
        Self::with(what, DEFAULT_INTERVAL, DEFAULT_LINES_PER_SOURCE, DEFAULT_MAX_SOURCES)
    }

    /// A limit of `per_source` lines per source per `interval`, tracking at most
    /// `max_sources` sources.
    pub fn with(what: &'static str, interval: Duration, per_source: u32, max_sources: usize) -> Self {
        Self { what, interval, per_source, max_sources, window: Mutex::new(None) }
    }

    /// Whether a line from `source` at `now` may be written, and what was left
    /// out in the interval before, if that interval just ended.
    pub fn check(&self, source: K, now: Instant) -> Verdict {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let mut summary = None;
        let fresh =
            || Window { started: now, lines: HashMap::new(), untracked: 0, suppressed: 0, suppressed_sources: 0 };
        let w = window.get_or_insert_with(fresh);
        if now.saturating_duration_since(w.started) >= self.interval {
            if w.suppressed > 0 {
                summary = Some(Suppressed { lines: w.suppressed, sources: w.suppressed_sources });
            }
            *w = fresh();
        }
        let tracked = w.lines.len();
        let count = match w.lines.get_mut(&source) {
            Some(n) => n,
            None if tracked < self.max_sources => w.lines.entry(source).or_insert(0),
            None => &mut w.untracked,
        };
        let write = *count < self.per_source;
        if write {
            *count += 1;
        } else {
            if *count == self.per_source {
                // First line left out for this source: count the source once.
                *count += 1;
                w.suppressed_sources += 1;
            }
            w.suppressed += 1;
        }
        Verdict { write, summary }
    }

    /// Runs `line` if a line from `source` may be written now, after a WARN
    /// summary of what the previous interval left out.
    pub fn log(&self, source: K, line: impl FnOnce()) {
        let verdict = self.check(source, Instant::now());
        if let Some(s) = verdict.summary {
            tracing::warn!(
                what = self.what,
                suppressed = s.lines,
                sources = s.sources,
                interval = ?self.interval,
                "log lines suppressed (rate limit per source; the metrics count every one)"
            );
        }
        if verdict.write {
            line();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_lines_then_a_summary_next_interval() {
        let limit = LogLimit::with("refused", Duration::from_secs(10), 2, 100);
        let t0 = Instant::now();
        let ok = |v: Verdict| v.write;
        assert!(ok(limit.check("a", t0)) && ok(limit.check("a", t0)));
        for _ in 0..1000 {
            assert!(!ok(limit.check("a", t0)), "over its budget");
        }
        assert!(ok(limit.check("b", t0)), "another source has its own");
        let next = limit.check("a", t0 + Duration::from_secs(10));
        assert_eq!(next, Verdict { write: true, summary: Some(Suppressed { lines: 1000, sources: 1 }) });
        assert_eq!(limit.check("a", t0 + Duration::from_secs(25)).summary, None, "nothing left out since");
    }

    #[test]
    fn a_flood_of_sources_shares_one_budget_past_the_cap() {
        let limit = LogLimit::with("refused", Duration::from_secs(10), 1, 10);
        let t0 = Instant::now();
        let written = (0..100_000u32).filter(|i| limit.check(*i, t0).write).count();
        assert_eq!(written, 11, "ten tracked sources and one shared budget");
        let s = limit.check(0, t0 + Duration::from_secs(10)).summary.unwrap();
        assert_eq!(s, Suppressed { lines: 100_000 - 11, sources: 1 });
        assert!(limit.window.lock().unwrap().as_ref().unwrap().lines.len() <= 10, "bounded");
    }
}
