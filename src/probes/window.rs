//! When a probe's failures make a fault: `threshold` of them within a
//! **sliding** `period` (the original reset a counter on a fixed timer, so
//! a burst across the reset was never seen), and for types that can see
//! recovery, one clear when it ends. Time is passed in (the paused tokio
//! clock in tests).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Most hits kept: a window counts at most this many (a log writing a
/// million matching lines a minute is reported as this many).
const MAX_HITS: usize = 100_000;

/// Hits within the last `period`.
#[derive(Debug, Clone)]
pub struct Window {
    period: Duration,
    hits: VecDeque<Instant>,
}

impl Window {
    pub fn new(period: Duration) -> Window {
        Window {
            period,
            hits: VecDeque::new(),
        }
    }

    /// Records `n` hits at `now` and answers how many fall in the window.
    pub fn record(&mut self, now: Instant, n: usize) -> usize {
        for _ in 0..n.min(MAX_HITS) {
            if self.hits.len() == MAX_HITS {
                self.hits.pop_front();
            }
            self.hits.push_back(now);
        }
        self.count(now)
    }

    /// How many hits fall in the window ending at `now`.
    pub fn count(&mut self, now: Instant) -> usize {
        while self.hits.front().is_some_and(|t| now.duration_since(*t) >= self.period) {
            self.hits.pop_front();
        }
        self.hits.len()
    }

    pub fn clear(&mut self) {
        self.hits.clear();
    }
}

/// A probe that checks something repeatedly (http, icmp, cmd, disk-usage):
/// a fault once `threshold` failures fall within `period`, then one clear at
/// the first success after it.
#[derive(Debug, Clone)]
pub struct FaultTracker {
    threshold: usize,
    window: Window,
    faulted: bool,
}

impl FaultTracker {
    pub fn new(threshold: u32, period: Duration) -> FaultTracker {
        FaultTracker {
            threshold: threshold.max(1) as usize,
            window: Window::new(period),
            faulted: false,
        }
    }

    /// A failed check at `now`: `Some(count)` when it is a fault to report
    /// (`count` failures within the period, at least `threshold`).
    pub fn failure(&mut self, now: Instant) -> Option<usize> {
        let count = self.window.record(now, 1);
        if count >= self.threshold {
            self.faulted = true;
            Some(count)
        } else {
            None
        }
    }

    /// A good check: `true` once, when it ends a reported fault (send one
    /// clear). The failures counted so far are forgotten.
    pub fn success(&mut self) -> bool {
        self.window.clear();
        std::mem::take(&mut self.faulted)
    }

    pub fn faulted(&self) -> bool {
        self.faulted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut w = Window::new(Duration::from_secs(60));
        assert_eq!(w.record(at(0), 1), 1);
        assert_eq!(w.record(at(50), 2), 3);
        // A fixed 60 s counter would have reset at 60 s and seen 1 here.
        assert_eq!(w.record(at(70), 1), 3);
        assert_eq!(w.count(at(109)), 3);
        // A hit leaves the window `period` after it was seen.
        assert_eq!(w.count(at(110)), 1);
        assert_eq!(w.count(at(130)), 0);
    }

    #[test]
    fn a_fault_needs_threshold_failures_in_the_period_and_clears_once() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut t = FaultTracker::new(2, Duration::from_secs(60));
        assert_eq!(t.failure(at(0)), None);
        assert_eq!(t.failure(at(61)), None, "the first failure left the window");
        assert_eq!(t.failure(at(90)), Some(2));
        assert_eq!(t.failure(at(100)), Some(3));
        assert!(t.success());
        assert!(!t.success(), "one clear per fault");
        assert_eq!(t.failure(at(101)), None);
    }

    #[test]
    fn threshold_one_is_the_first_failure() {
        let mut t = FaultTracker::new(1, Duration::from_secs(60));
        assert_eq!(t.failure(Instant::now()), Some(1));
    }
}
