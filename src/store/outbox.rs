//! The outbox: every notification, written before any notifier sees it
//! (`pending`), then `sent`, `digested` (held by the rate limit and sent
//! inside a digest) or `dead` (a permanent failure, or too old), with its
//! attempts and last error. Notifications of an alarm change are written by
//! `save_alarm`, in the commit of the change.

use rusqlite::params;
use uuid::Uuid;

use super::{key_text_at, stored, Store, StoreError};
use crate::model::EpochMs;
use crate::notify::Notification;

/// A delivery waiting in the outbox.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub notification: Notification,
    pub attempts: u32,
    /// When it entered the outbox (for the maximum age).
    pub created: EpochMs,
}

impl Store {
    /// Queues notifications that belong to no alarm change (server
    /// incidents) in the outbox.
    pub async fn enqueue(&self, notifications: Vec<Notification>, now: EpochMs) -> Result<(), StoreError> {
        self.call(move |conn| {
            let mut enqueue = conn.prepare_cached(
                "INSERT OR IGNORE INTO outbox (id, created, state, body) VALUES (?1, ?2, 'pending', ?3)",
            )?;
            for n in &notifications {
                enqueue.execute(params![n.id.to_string(), now, serde_json::to_string(n)?])?;
            }
            Ok(())
        })
        .await
    }

    /// Deliveries not yet done, oldest first (resumed after a restart).
    pub async fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn
                .prepare("SELECT body, attempts, created, id FROM outbox WHERE state = 'pending' ORDER BY created")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    key_text_at(r, 3)?,
                ))
            })?;
            rows.map(|row| {
                let (body, attempts, created, key) = row?;
                Ok(PendingDelivery {
                    notification: stored("outbox", &key, &body)?,
                    attempts: attempts as u32,
                    created,
                })
            })
            .collect()
        })
        .await
    }

    /// Dead-lettered deliveries (permanent failures, too old), newest first,
    /// with why: for the operator API.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<(Notification, String)>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT body, COALESCE(last_error, ''), id FROM outbox WHERE state = 'dead' ORDER BY created DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, key_text_at(r, 2)?))
            })?;
            rows.map(|row| {
                let (body, why, key) = row?;
                Ok((stored("outbox", &key, &body)?, why))
            })
            .collect()
        })
        .await
    }

    /// Records a delivery attempt: `Ok` marks it sent, a permanent error
    /// marks it dead, a temporary one leaves it pending.
    pub async fn record_delivery(&self, id: Uuid, outcome: DeliveryOutcome, at: EpochMs) -> Result<(), StoreError> {
        self.record_deliveries(vec![(id, outcome)], at).await
    }

    /// Records several delivery outcomes in one call (a worker's outcomes
    /// since its last record). Those sent or digested count in the
    /// [`Store::activity`] minute of `at` (when they are recorded: at most
    /// a commit after they happened), once committed.
    pub async fn record_deliveries(
        &self,
        outcomes: Vec<(Uuid, DeliveryOutcome)>,
        at: EpochMs,
    ) -> Result<(), StoreError> {
        let activity = self.activity.clone();
        self.db
            .call_then(
                move |conn| {
                    let mut update = conn.prepare_cached(
                        "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_error = ?3 WHERE id = ?1",
                    )?;
                    let mut delivered = 0;
                    for (id, outcome) in &outcomes {
                        let digest;
                        let (state, error) = match outcome {
                            DeliveryOutcome::Sent => ("sent", None),
                            DeliveryOutcome::Digested(into) => {
                                digest = format!("sent in digest {into}");
                                ("digested", Some(digest.as_str()))
                            }
                            DeliveryOutcome::Retrying(e) => ("pending", Some(e.as_str())),
                            DeliveryOutcome::Dead(e) => ("dead", Some(e.as_str())),
                        };
                        let updated = update.execute(params![id.to_string(), state, error])?;
                        if matches!(outcome, DeliveryOutcome::Sent | DeliveryOutcome::Digested(_)) {
                            delivered += updated as u64;
                        }
                    }
                    Ok(delivered)
                },
                move |delivered| activity.record_notifications(at, delivered),
            )
            .await
    }
}

/// The result of one delivery attempt, as the outbox records it.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Sent,
    /// Held by the rate limit and sent inside the digest with this id.
    Digested(Uuid),
    Retrying(String),
    Dead(String),
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::notify::transport::tests::notification;

    /// A fault notification of `user`'s alarm `alarm`, with a fresh id.
    fn of_alarm(user: Uuid, alarm: u64) -> Notification {
        Notification {
            id: Uuid::new_v4(),
            account_uuid: user,
            alarm_id: alarm,
            ..notification()
        }
    }

    async fn enqueued(store: &Store, n: Notification, created: EpochMs) -> Uuid {
        store.enqueue(vec![n.clone()], created).await.unwrap();
        n.id
    }

    #[actix_rt::test]
    async fn notifications_sent_or_digested_count_in_the_minute_they_are_recorded() {
        let store = Store::in_memory().unwrap();
        let user = Uuid::new_v4();
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(enqueued(&store, of_alarm(user, 1), 0).await);
        }
        let at = 120_000;
        let outcomes = vec![
            (ids[0], DeliveryOutcome::Sent),
            (ids[1], DeliveryOutcome::Digested(ids[0])),
            (ids[2], DeliveryOutcome::Dead("550 no such user".into())),
            (ids[3], DeliveryOutcome::Retrying("421 busy".into())),
            (Uuid::new_v4(), DeliveryOutcome::Sent),
        ];
        store.record_deliveries(outcomes, at + 59_999).await.unwrap();
        let last = *store.activity().last_hour(at).last().unwrap();
        assert_eq!(last.minute, at);
        assert_eq!(
            (last.events, last.notifications),
            (0, 2),
            "a row not in the outbox is no delivery"
        );
    }
}
