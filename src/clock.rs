//! The one source of "now" for logic that tests must drive: wall-clock
//! milliseconds for timestamps, and tokio time (pausable) for timers.
//!
//! Production uses [`Clock::system`]. Tests use [`Clock::tokio`], whose wall
//! time is derived from tokio's clock, so `tokio::time::pause()` and
//! `advance()` move timers and timestamps together.

use crate::model::EpochMs;

#[derive(Debug, Clone)]
pub struct Clock {
    kind: ClockKind,
}

#[derive(Debug, Clone)]
enum ClockKind {
    System,
    Tokio {
        base_ms: EpochMs,
        base: tokio::time::Instant,
    },
}

impl Clock {
    pub fn system() -> Clock {
        Clock {
            kind: ClockKind::System,
        }
    }

    /// A clock that reads `start_ms` now and then follows tokio's (possibly
    /// paused) time.
    pub fn tokio(start_ms: EpochMs) -> Clock {
        Clock {
            kind: ClockKind::Tokio {
                base_ms: start_ms,
                base: tokio::time::Instant::now(),
            },
        }
    }

    pub fn now_ms(&self) -> EpochMs {
        match &self.kind {
            #[allow(clippy::disallowed_methods)] // the one place wall time is read
            ClockKind::System => chrono::Utc::now().timestamp_millis(),
            ClockKind::Tokio { base_ms, base } => *base_ms + base.elapsed().as_millis() as EpochMs,
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}
