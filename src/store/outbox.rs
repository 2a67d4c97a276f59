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
    pub async fn record_delivery(&self, id: Uuid, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        self.record_deliveries(vec![(id, outcome)]).await
    }

    /// Records several delivery outcomes in one call (a worker's outcomes
    /// since its last record).
    pub async fn record_deliveries(&self, outcomes: Vec<(Uuid, DeliveryOutcome)>) -> Result<(), StoreError> {
        self.call(move |conn| {
            let mut update = conn.prepare_cached(
                "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_error = ?3 WHERE id = ?1",
            )?;
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
                update.execute(params![id.to_string(), state, error])?;
            }
            Ok(())
        })
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
