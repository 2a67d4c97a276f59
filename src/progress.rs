//! The router's progress over the batches it has routed, pure: which are in
//! flight, when the watermark may move (past every batch applied, never past
//! one that is not), and how long to wait before routing a failed batch
//! again. `EventRouter` keeps one and carries out what it says.

use std::collections::BTreeMap;
use std::time::Duration;

/// The first pause before a failed batch is routed again, and the longest.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Batch {
    last: i64,
    applied: bool,
    /// How long to wait before routing it again if it fails.
    retry: Duration,
}

/// What to do about a failed batch: read `first..=last` back and route it
/// again after `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub first: i64,
    pub last: i64,
    pub after: Duration,
}

#[derive(Debug, Default)]
pub struct Progress {
    /// Batches not yet past the watermark, by first sequence number.
    inflight: BTreeMap<i64, Batch>,
}

impl Progress {
    /// A batch `first..=last` went out (again, if it had failed).
    pub fn routed(&mut self, first: i64, last: i64) {
        let retry = self.inflight.get(&first).map_or(RETRY_FIRST, |b| b.retry);
        self.inflight.insert(
            first,
            Batch {
                last,
                applied: false,
                retry,
            },
        );
    }

    /// Every share of the batch starting at `first` is applied. Returns the
    /// new watermark if it moves: the last event of the longest run of
    /// applied batches at the front.
    pub fn applied(&mut self, first: i64) -> Option<i64> {
        self.inflight.get_mut(&first)?.applied = true;
        let mut mark = None;
        while let Some(entry) = self.inflight.first_entry() {
            if !entry.get().applied {
                break;
            }
            mark = Some(entry.remove().last);
        }
        mark
    }

    /// Some share of the batch starting at `first` was not applied: route
    /// it again after its pause, which doubles (up to [`RETRY_MAX`]) for
    /// the next failure. `None` for a batch it does not know.
    pub fn failed(&mut self, first: i64) -> Option<Retry> {
        let batch = self.inflight.get_mut(&first)?;
        let after = batch.retry;
        batch.retry = (after * 2).min(RETRY_MAX);
        Some(Retry {
            first,
            last: batch.last,
            after,
        })
    }

    /// Batches routed and not yet past the watermark.
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_moves_past_applied_batches_at_the_front_only() {
        let mut p = Progress::default();
        p.routed(1, 10);
        p.routed(11, 20);
        p.routed(21, 30);
        assert_eq!(p.applied(11), None, "batch 1 is still out");
        assert_eq!(p.applied(1), Some(20), "1 and 11 are done");
        assert_eq!(p.applied(21), Some(30));
        assert!(p.is_empty());
        assert_eq!(p.applied(99), None, "an unknown batch moves nothing");
    }

    #[test]
    fn a_failed_batch_holds_the_watermark_until_it_is_applied_and_its_pause_doubles() {
        let mut p = Progress::default();
        p.routed(1, 10);
        p.routed(11, 20);
        let retry = p.failed(1).unwrap();
        assert_eq!(
            retry,
            Retry {
                first: 1,
                last: 10,
                after: RETRY_FIRST
            }
        );
        assert_eq!(p.applied(11), None, "the failed batch is in front");
        p.routed(1, 10);
        assert_eq!(
            p.failed(1).unwrap().after,
            RETRY_FIRST * 2,
            "its pause survives routing again"
        );
        for _ in 0..10 {
            p.failed(1);
        }
        assert_eq!(p.failed(1).unwrap().after, RETRY_MAX);
        p.routed(1, 10);
        assert_eq!(p.applied(1), Some(20));
        assert_eq!(p.failed(1), None);
    }
}
