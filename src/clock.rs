//! The one source of "now" for logic that tests must drive: wall-clock
//! milliseconds for timestamps, steady milliseconds for durations measured
//! between two readings, and tokio time (pausable) for timers.
//!
//! The wall clock can be stepped under a running daemon (NTP correcting a
//! clock that was wrong), while timers run on monotonic time. So anything
//! that is a duration (a hold, a timeout, a window of "recent" events) is
//! measured on monotonic time, either as a timer or with [`Clock::steady_ms`];
//! only what is a moment in the calendar (an event's time, a maintenance
//! window's end, what people are shown) uses [`Clock::now_ms`].
//!
//! Production uses [`Clock::system`]. Tests use [`Clock::tokio`], whose wall
//! time is derived from tokio's clock, so `tokio::time::pause()` and
//! `advance()` move timers and timestamps together; `Clock::step` (tests
//! only) steps its wall time alone, as NTP would.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::model::EpochMs;

#[derive(Debug, Clone)]
pub struct Clock {
    kind: ClockKind,
    /// The wall clock's reading, and tokio's, when this clock was made:
    /// steady time is the first advanced by the second since.
    base_ms: EpochMs,
    base: tokio::time::Instant,
}

#[derive(Debug, Clone)]
enum ClockKind {
    System,
    /// Wall time is steady time plus the steps taken so far.
    Tokio {
        stepped_ms: Arc<AtomicI64>,
    },
}

/// One reading of both clocks: `wall` for what is a moment in the calendar
/// or shown to people, `steady` for measuring durations against another
/// steady reading (never shown: after a step it differs from `wall`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub wall: EpochMs,
    pub steady: EpochMs,
}

impl From<EpochMs> for Moment {
    /// A moment when the wall clock has never been stepped: both readings
    /// agree (tests with explicit times).
    fn from(ms: EpochMs) -> Moment {
        Moment { wall: ms, steady: ms }
    }
}

impl Clock {
    pub fn system() -> Clock {
        Clock {
            kind: ClockKind::System,
            base_ms: system_ms(),
            base: tokio::time::Instant::now(),
        }
    }

    /// A clock that reads `start_ms` now and then follows tokio's (possibly
    /// paused) time.
    pub fn tokio(start_ms: EpochMs) -> Clock {
        Clock {
            kind: ClockKind::Tokio {
                stepped_ms: Arc::new(AtomicI64::new(0)),
            },
            base_ms: start_ms,
            base: tokio::time::Instant::now(),
        }
    }

    /// Wall-clock milliseconds since the epoch: moments in the calendar.
    pub fn now_ms(&self) -> EpochMs {
        match &self.kind {
            ClockKind::System => system_ms(),
            ClockKind::Tokio { stepped_ms } => self.steady_ms() + stepped_ms.load(Ordering::Relaxed),
        }
    }

    /// Milliseconds that no step of the wall clock moves: the wall clock's
    /// reading when this clock was made, advanced by monotonic time since.
    /// Only for differences between two readings of the same clock.
    pub fn steady_ms(&self) -> EpochMs {
        self.base_ms + self.base.elapsed().as_millis() as EpochMs
    }

    /// Both readings at once.
    pub fn moment(&self) -> Moment {
        Moment {
            wall: self.now_ms(),
            steady: self.steady_ms(),
        }
    }

    /// Steps a test clock's wall time by `by_ms` (back if negative), as NTP
    /// steps the system clock; tokio time, and so every timer and
    /// [`Clock::steady_ms`], goes on unmoved. Every clone sees the step.
    #[cfg(test)]
    pub fn step(&self, by_ms: EpochMs) {
        match &self.kind {
            ClockKind::Tokio { stepped_ms } => {
                stepped_ms.fetch_add(by_ms, Ordering::Relaxed);
            }
            ClockKind::System => panic!("only the system steps the system clock"),
        }
    }
}

#[allow(clippy::disallowed_methods)] // the one place wall time is read
fn system_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_moves_the_wall_clock_of_every_clone_and_not_steady_time() {
        let clock = Clock::tokio(1_000_000);
        let clone = clock.clone();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(clone.moment(), Moment::from(1_001_000));
        clock.step(-3_600_000);
        assert_eq!(
            clone.moment(),
            Moment {
                wall: 1_001_000 - 3_600_000,
                steady: 1_001_000
            }
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(clone.steady_ms(), 1_002_000);
    }
}
