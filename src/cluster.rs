//! Masters sharing one PostgreSQL database: which one runs the alarm core
//! (router, shards, flood guard, maintenance keeper, notifiers, janitor,
//! agent watch), decided here, pure. Every master takes every request: it
//! commits the events it is sent, and forwards the rest to the one that
//! leads. The leader holds a lease in the database (`store::cluster`),
//! renewed every quarter of `cluster.lease`; the database hands it to
//! another only once it has run out, on the database's clock.
//!
//! A leader counts its lease from when it *sent* the beat that renewed it
//! (the database renewed it later than that, so its expiry there is later
//! still), and steps down a fifth of the lease before it would run out if
//! no beat has renewed it since: by the time another master can take the
//! lease, the old leader has stopped its core, even if it is cut off from
//! the database and cannot tell. So at most one core runs at a time, as
//! long as the masters' monotonic clocks run at about the same rate.

use std::time::Duration;

use crate::model::EpochMs;
use crate::store::Beat;

/// Who leads, as one master last learnt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub id: String,
    /// Where its Master API listens (its `master.public_url`).
    pub url: String,
    pub epoch: i64,
}

/// What a beat, a failed beat or the passing of time changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    /// This master took the lease: start the core.
    Lead {
        epoch: i64,
    },
    /// This master no longer holds the lease, or can no longer be sure it
    /// does: stop the core now.
    StepDown {
        why: String,
    },
}

/// One master's standing in the cluster.
#[derive(Debug, Clone)]
pub struct Standing {
    me: String,
    lease_ms: u64,
    /// Steady time until which this master may act as the leader.
    leading_until: Option<EpochMs>,
    leader: Option<Leader>,
}

impl Standing {
    pub fn new(me: impl Into<String>, lease: Duration) -> Standing {
        Standing {
            me: me.into(),
            lease_ms: lease.as_millis().max(1) as u64,
            leading_until: None,
            leader: None,
        }
    }

    /// How often to beat: four times per lease.
    pub fn beat_every(&self) -> Duration {
        Duration::from_millis((self.lease_ms / 4).max(1))
    }

    /// How long the lease a beat asks for lasts, in ms.
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms as i64
    }

    pub fn leading(&self) -> bool {
        self.leading_until.is_some()
    }

    /// The leader as last seen (this master, when it leads).
    pub fn leader(&self) -> Option<&Leader> {
        self.leader.as_ref()
    }

    /// A beat sent at steady time `sent` came back with `beat`.
    pub fn beat(&mut self, sent: EpochMs, beat: &Beat) -> Change {
        self.leader = beat.lease.as_ref().map(|l| Leader {
            id: l.holder.clone(),
            url: l.url.clone(),
            epoch: l.epoch,
        });
        let mine = beat
            .lease
            .as_ref()
            .filter(|l| l.holder == self.me && l.expires > beat.now);
        match (mine, self.leading_until) {
            (Some(lease), None) => {
                self.leading_until = Some(self.deadline(sent));
                Change::Lead { epoch: lease.epoch }
            }
            (Some(_), Some(_)) => {
                self.leading_until = Some(self.deadline(sent));
                Change::None
            }
            (None, Some(_)) => {
                self.leading_until = None;
                let holder = beat.lease.as_ref().map_or("nobody".to_string(), |l| l.holder.clone());
                Change::StepDown {
                    why: format!("the lease is held by {holder}"),
                }
            }
            (None, None) => Change::None,
        }
    }

    /// Steady time is `now`, with or without a beat answered: a leader
    /// whose lease may run out before it can renew it steps down.
    pub fn tick(&mut self, now: EpochMs) -> Change {
        match self.leading_until {
            Some(until) if now >= until => {
                self.leading_until = None;
                Change::StepDown {
                    why: "no beat renewed the lease in time".into(),
                }
            }
            _ => Change::None,
        }
    }

    /// The steady time until which a lease renewed by a beat sent at
    /// `sent` is surely still this master's: a fifth of the lease short of
    /// its end.
    fn deadline(&self, sent: EpochMs) -> EpochMs {
        sent + (self.lease_ms - self.lease_ms / 5) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LeaseRecord;

    fn beat(holder: &str, epoch: i64, expires: EpochMs, now: EpochMs) -> Beat {
        Beat {
            lease: Some(LeaseRecord {
                holder: holder.into(),
                url: format!("http://{holder}"),
                epoch,
                acquired: 0,
                renewed: now,
                expires,
            }),
            now,
        }
    }

    #[test]
    fn a_master_leads_from_the_beat_that_gave_it_the_lease_until_four_fifths_of_it_after_its_last_renewal() {
        let mut s = Standing::new("a", Duration::from_secs(10));
        assert_eq!(s.beat_every(), Duration::from_millis(2_500));
        assert_eq!(
            s.beat(1_000, &beat("a", 3, 1_000_010_000, 1_000_000_000)),
            Change::Lead { epoch: 3 }
        );
        assert!(s.leading());
        assert_eq!(s.leader().unwrap().url, "http://a");
        // Renewed by a beat sent at 3 500: leads until 11 500.
        assert_eq!(s.beat(3_500, &beat("a", 3, 1_000_012_500, 1_000_002_500)), Change::None);
        assert_eq!(s.tick(11_499), Change::None);
        assert!(matches!(s.tick(11_500), Change::StepDown { .. }));
        assert!(!s.leading());
        assert_eq!(s.tick(20_000), Change::None, "steps down once");
    }

    #[test]
    fn a_leader_steps_down_when_a_beat_finds_the_lease_elsewhere_or_expired() {
        let mut s = Standing::new("a", Duration::from_secs(10));
        s.beat(0, &beat("a", 1, 10_000, 0));
        let change = s.beat(2_000, &beat("b", 2, 30_000, 20_000));
        assert!(
            matches!(&change, Change::StepDown { why } if why.contains('b')),
            "{change:?}"
        );
        assert_eq!(s.leader().unwrap().id, "b");

        let mut s = Standing::new("a", Duration::from_secs(10));
        s.beat(0, &beat("a", 1, 10_000, 0));
        // The row still names a, but its time is up in the database.
        assert!(matches!(
            s.beat(2_000, &beat("a", 1, 10_000, 10_000)),
            Change::StepDown { .. }
        ));
    }

    #[test]
    fn a_follower_learns_the_leader_and_never_steps_down() {
        let mut s = Standing::new("b", Duration::from_secs(10));
        assert_eq!(s.beat(0, &beat("a", 1, 10_000, 0)), Change::None);
        assert_eq!(s.leader().unwrap().id, "a");
        assert!(!s.leading());
        assert_eq!(s.tick(1_000_000), Change::None);
        assert_eq!(s.beat(0, &Beat { lease: None, now: 0 }), Change::None);
        assert_eq!(s.leader(), None);
    }
}
