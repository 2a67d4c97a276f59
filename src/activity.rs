//! What the master did in the last hour, minute by minute: how many events
//! it ingested and how many notifications it delivered, for the operators'
//! chart in the web UI. [`Minutes`] is the pure count (a ring of 60
//! one-minute buckets on the wall clock); [`Activity`] the cheap, cloneable
//! handle the store writes after each commit (`commit_events`,
//! `record_deliveries`) and the UI reads.
//!
//! The counts live in memory only: a master restart (or a SIGHUP, which
//! reopens the store) starts from an empty hour. That is acceptable for a
//! one-hour chart: within an hour of the restart it is whole again, and what
//! must survive is elsewhere (the events table and the outbox are the
//! record; the Prometheus counters are the long-term figures). Keeping it in
//! the database instead would add a write to every ingest for a picture.
//!
//! Minutes are the wall clock's, since the chart shows moments people read.
//! A clock stepped back (NTP) must not corrupt it: a count goes into the
//! minute its time names while that minute is within the hour ending at the
//! newest minute counted so far, and is dropped if older. So after a step
//! back of more than an hour the chart stays empty until the clock reaches
//! the newest minute again; an empty chart, never a wrong one.

use std::sync::{Arc, Mutex};

use crate::model::EpochMs;

/// Minutes kept and shown: one hour.
pub const MINUTES: usize = 60;

const MINUTE_MS: EpochMs = 60_000;

/// One minute of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCount {
    /// The minute's start, in epoch milliseconds (a multiple of 60 000).
    pub minute: EpochMs,
    /// Events committed (new ones: second copies of a uuid are not counted).
    pub events: u64,
    /// Outbox rows recorded `sent` or `digested` (a digest is itself a
    /// notification, so a digest of n held notifications counts n + 1).
    pub notifications: u64,
}

/// A minute's counts, and which minute they are for.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Minute number (epoch ms / 60 000, floored); `None`: never used.
    minute: Option<i64>,
    events: u64,
    notifications: u64,
}

/// The last hour's counts: minute `m` is kept in bucket `m mod 60`, which
/// remembers its minute, so a bucket an hour old is recognised as stale and
/// reused rather than added to, and nothing needs clearing as time passes.
#[derive(Debug, Clone)]
pub struct Minutes {
    buckets: [Bucket; MINUTES],
    /// The newest minute counted: the hour kept ends with it.
    newest: Option<i64>,
}

impl Default for Minutes {
    fn default() -> Minutes {
        Minutes::new()
    }
}

impl Minutes {
    pub fn new() -> Minutes {
        Minutes {
            buckets: [Bucket {
                minute: None,
                events: 0,
                notifications: 0,
            }; MINUTES],
            newest: None,
        }
    }

    /// Counts `events` and `notifications` at `at` into its minute; a time
    /// an hour or more before the newest minute counted is dropped.
    pub fn record(&mut self, at: EpochMs, events: u64, notifications: u64) {
        let minute = minute_of(at);
        let newest = match self.newest {
            Some(newest) if minute <= newest - MINUTES as i64 => return,
            Some(newest) => newest.max(minute),
            None => minute,
        };
        self.newest = Some(newest);
        let bucket = &mut self.buckets[slot(minute)];
        // Within the hour, a bucket holds this minute or a stale one (an
        // hour or more before it): never a newer one.
        if bucket.minute != Some(minute) {
            *bucket = Bucket {
                minute: Some(minute),
                events: 0,
                notifications: 0,
            };
        }
        bucket.events = bucket.events.saturating_add(events);
        bucket.notifications = bucket.notifications.saturating_add(notifications);
    }

    /// The 60 minutes ending with the one containing `now`, oldest first;
    /// minutes with nothing counted (or counted too long ago) are zeros.
    pub fn last_hour(&self, now: EpochMs) -> Vec<MinuteCount> {
        let last = minute_of(now);
        (last - MINUTES as i64 + 1..=last)
            .map(|minute| {
                let bucket = &self.buckets[slot(minute)];
                let (events, notifications) = match bucket.minute {
                    Some(m) if m == minute => (bucket.events, bucket.notifications),
                    _ => (0, 0),
                };
                MinuteCount {
                    minute: minute.saturating_mul(MINUTE_MS),
                    events,
                    notifications,
                }
            })
            .collect()
    }
}

/// The minute number of a time, floored (so also for times before 1970).
fn minute_of(at: EpochMs) -> i64 {
    at.div_euclid(MINUTE_MS)
}

fn slot(minute: i64) -> usize {
    minute.rem_euclid(MINUTES as i64) as usize
}

/// A cheap, cloneable handle to the master's [`Minutes`]: every clone counts
/// into the same hour.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    minutes: Arc<Mutex<Minutes>>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity::default()
    }

    /// `n` events committed at `at`.
    pub fn record_events(&self, at: EpochMs, n: u64) {
        self.with(|m| m.record(at, n, 0));
    }

    /// `n` notifications delivered (sent, or held and sent in a digest) at `at`.
    pub fn record_notifications(&self, at: EpochMs, n: u64) {
        self.with(|m| m.record(at, 0, n));
    }

    /// See [`Minutes::last_hour`]: exactly 60 minutes, oldest first.
    pub fn last_hour(&self, now: EpochMs) -> Vec<MinuteCount> {
        self.with(|m| m.last_hour(now))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Minutes) -> T) -> T {
        // A poisoned lock is used anyway: no update leaves `Minutes` half
        // done (each is a few additions), and a chart must not take the
        // store thread down with it.
        let mut minutes = self.minutes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut minutes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10:00 UTC on some day, a minute's start.
    const T: EpochMs = 1_714_557_600_000;
    const MIN: EpochMs = MINUTE_MS;

    fn events(hour: &[MinuteCount]) -> Vec<u64> {
        hour.iter().map(|m| m.events).collect()
    }

    fn total(hour: &[MinuteCount]) -> (u64, u64) {
        hour.iter()
            .fold((0, 0), |(e, n), m| (e + m.events, n + m.notifications))
    }

    #[test]
    fn an_empty_hour_is_sixty_zero_minutes_ending_with_the_minute_of_now() {
        let hour = Minutes::new().last_hour(T + 30_000);
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(hour.last().unwrap().minute, T);
        assert_eq!(hour[0].minute, T - 59 * MIN);
        assert!(hour.windows(2).all(|w| w[1].minute - w[0].minute == MIN));
        assert_eq!(total(&hour), (0, 0));
    }

    #[test]
    fn counts_go_into_the_minute_containing_their_time() {
        let mut m = Minutes::new();
        m.record(T, 3, 0);
        m.record(T + MIN - 1, 2, 1);
        m.record(T + MIN, 7, 0);
        m.record(T + MIN + 59_999, 0, 4);
        let hour = m.last_hour(T + MIN);
        assert_eq!(
            hour[58],
            MinuteCount {
                minute: T,
                events: 5,
                notifications: 1
            }
        );
        assert_eq!(
            hour[59],
            MinuteCount {
                minute: T + MIN,
                events: 7,
                notifications: 4
            }
        );
        assert_eq!(total(&hour), (12, 5));
    }

    #[test]
    fn minutes_older_than_an_hour_roll_off() {
        let mut m = Minutes::new();
        m.record(T, 1, 0);
        m.record(T + 30 * MIN, 2, 0);
        assert_eq!(
            total(&m.last_hour(T + 59 * MIN)),
            (3, 0),
            "T is the oldest minute shown"
        );
        assert_eq!(total(&m.last_hour(T + 60 * MIN)), (2, 0));
        assert_eq!(total(&m.last_hour(T + 120 * MIN)), (0, 0));
    }

    #[test]
    fn a_bucket_an_hour_old_is_reused_not_added_to() {
        let mut m = Minutes::new();
        m.record(T, 5, 5);
        m.record(T + 60 * MIN, 1, 0);
        let hour = m.last_hour(T + 60 * MIN);
        assert_eq!(
            hour[59],
            MinuteCount {
                minute: T + 60 * MIN,
                events: 1,
                notifications: 0
            }
        );
        assert_eq!(total(&hour), (1, 0));
    }

    #[test]
    fn a_clock_stepped_back_within_the_hour_counts_into_the_minute_it_names() {
        let mut m = Minutes::new();
        m.record(T + 10 * MIN, 1, 0);
        m.record(T + 3 * MIN + 5, 2, 0);
        m.record(T + 10 * MIN + 1, 4, 0);
        let hour = m.last_hour(T + 10 * MIN);
        assert_eq!(
            hour[52],
            MinuteCount {
                minute: T + 3 * MIN,
                events: 2,
                notifications: 0
            }
        );
        assert_eq!(hour[59].events, 5);
        // Asked with the stepped-back clock, the hour ends there.
        let stepped = m.last_hour(T + 3 * MIN);
        assert_eq!(stepped.last().unwrap().events, 2);
        assert_eq!(total(&stepped), (2, 0));
    }

    #[test]
    fn a_clock_stepped_back_past_the_hour_is_dropped_and_corrupts_nothing() {
        let mut m = Minutes::new();
        m.record(T + 60 * MIN, 1, 0);
        // T shares its bucket with T + 60 min, the newest: dropped, it
        // must not reset that bucket.
        m.record(T, 9, 9);
        m.record(T - 600 * MIN, 9, 9);
        m.record(EpochMs::MIN, 9, 9);
        assert_eq!(total(&m.last_hour(T + 60 * MIN)), (1, 0));
        assert_eq!(total(&m.last_hour(T)), (0, 0));
        m.record(T + 61 * MIN, 2, 0);
        assert_eq!(events(&m.last_hour(T + 61 * MIN))[58..], [1, 2]);
    }

    #[test]
    fn extreme_times_neither_panic_nor_overflow() {
        let mut m = Minutes::new();
        m.record(EpochMs::MAX, u64::MAX, 1);
        m.record(EpochMs::MAX, 1, u64::MAX);
        let hour = m.last_hour(EpochMs::MAX);
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(hour[59].events, u64::MAX, "saturates");
        assert_eq!(hour[59].notifications, u64::MAX);
        assert_eq!(m.last_hour(EpochMs::MIN).len(), MINUTES);
        let before_1970 = Minutes::new().last_hour(-1);
        assert_eq!(before_1970.last().unwrap().minute, -MIN, "floored, not truncated");
    }

    #[test]
    fn clones_of_an_activity_count_into_one_hour() {
        let activity = Activity::new();
        let other = activity.clone();
        activity.record_events(T, 3);
        other.record_notifications(T + 1, 2);
        let hour = activity.last_hour(T);
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(
            hour[59],
            MinuteCount {
                minute: T,
                events: 3,
                notifications: 2
            }
        );
    }
}
