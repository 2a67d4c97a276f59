//! The outbox: every notification, written before any notifier sees it
//! (`pending`), then `sent`, `digested` (held by the rate limit and sent
//! inside a digest) or `dead` (a permanent failure, or too old), with its
//! attempts and last error. Notifications of an alarm change are written by
//! `save_alarm`, in the commit of the change.

use super::sql::{params, Conn};
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

/// Writes notifications to the outbox as `pending` (an id already there is
/// left alone): queued on their own, or in the commit of an alarm change.
pub(super) fn write_pending(conn: &Conn, notifications: &[Notification], now: EpochMs) -> Result<(), StoreError> {
    let mut enqueue = conn.prepare_cached(
        "INSERT INTO outbox (id, created, state, body) VALUES (?1, ?2, 'pending', ?3) ON CONFLICT DO NOTHING",
    )?;
    for n in notifications {
        enqueue.execute(params![n.id.to_string(), now, serde_json::to_string(n)?])?;
    }
    Ok(())
}

impl Store {
    /// Queues notifications that belong to no alarm change (server
    /// incidents) in the outbox.
    pub async fn enqueue(&self, notifications: Vec<Notification>, now: EpochMs) -> Result<(), StoreError> {
        let result = self.call(move |conn| write_pending(conn, &notifications, now)).await;
        self.changed(result)
    }

    /// Deliveries not yet done, oldest first (resumed after a restart).
    pub async fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.call(|conn| {
            // Rows created in the same ms (a late fault and its clear, in
            // one group commit) in the order they were written.
            let mut stmt = conn.prepare(conn.pick(
                "SELECT body, attempts, created, id FROM outbox WHERE state = 'pending' ORDER BY created, rowid",
                "SELECT body, attempts, created, id FROM outbox WHERE state = 'pending' ORDER BY created, ord",
            ))?;
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
        let result = self
            .db
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
            .await;
        self.changed(result)
    }

    /// Every outbox row of one alarm, whatever its state, oldest first:
    /// what the alarm told whom, and how it went (the web UI's alarm page).
    ///
    /// The outbox has no alarm column, so this reads every row's JSON body
    /// (`json_extract` in the `WHERE`): a scan, not an index. Chosen over a
    /// migration adding indexed columns because the janitor bounds the
    /// outbox (`notify.outbox_retention`, 7 days by default), the read runs
    /// on a reader thread, so it delays no write, and it answers an
    /// operator's page view, not a hot path. Alarm 0 is no alarm (server
    /// incidents and digests carry it): nothing. Digests are about no one
    /// alarm, so they are not listed; the alarm's rows they hold say
    /// `digested`, naming the digest in `last_error`.
    pub async fn alarm_deliveries(&self, user: Uuid, alarm: u64) -> Result<Vec<DeliveryRecord>, StoreError> {
        if alarm == 0 {
            return Ok(Vec::new());
        }
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(conn.pick(
                "SELECT body, state, attempts, last_error, created, id FROM outbox
                 WHERE json_extract(body, '$.account_uuid') = ?1 AND json_extract(body, '$.alarm_id') = ?2
                 ORDER BY created, rowid",
                "SELECT body, state, attempts, last_error, created, id FROM outbox
                 WHERE (body::jsonb ->> 'account_uuid') = ?1 AND (body::jsonb -> 'alarm_id') = to_jsonb(?2::bigint)
                 ORDER BY created, ord",
            ))?;
            let rows = stmt.query_map(params![user.to_string(), alarm as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    key_text_at(r, 5)?,
                ))
            })?;
            rows.map(|row| {
                let (body, state, attempts, last_error, created, key) = row?;
                Ok(DeliveryRecord {
                    notification: stored("outbox", &key, &body)?,
                    state,
                    attempts: attempts as u32,
                    last_error,
                    created,
                })
            })
            .collect()
        })
        .await
    }

    /// How many outbox rows are in each state, and since when the oldest
    /// pending one waits (the web UI's overview).
    pub async fn outbox_summary(&self) -> Result<OutboxSummary, StoreError> {
        self.read(|conn| {
            let mut summary = OutboxSummary::default();
            let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
            for row in stmt.rows([])? {
                let (state, count): (String, i64) = (row.get(0)?, row.get(1)?);
                let slot = match state.as_str() {
                    "pending" => &mut summary.pending,
                    "sent" => &mut summary.sent,
                    "digested" => &mut summary.digested,
                    "dead" => &mut summary.dead,
                    _ => {
                        return Err(StoreError::Corrupt {
                            table: "outbox",
                            key: format!("state = {state:?}"),
                            reason: format!("{count} rows in a state no delivery records"),
                        })
                    }
                };
                *slot = count as u64;
            }
            summary.oldest_pending = conn
                .prepare_cached("SELECT MIN(created) FROM outbox WHERE state = 'pending'")?
                .query_row([], |r| r.get(0))?;
            Ok(summary)
        })
        .await
    }
}

/// One outbox row, whatever its state, for people to read.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub notification: Notification,
    /// `pending`, `sent`, `digested` or `dead`.
    pub state: String,
    pub attempts: u32,
    /// Why the last attempt failed (`digested`: the digest it went in).
    pub last_error: Option<String>,
    /// When it entered the outbox.
    pub created: EpochMs,
}

/// The outbox at a glance: rows per state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxSummary {
    pub pending: u64,
    pub sent: u64,
    pub digested: u64,
    pub dead: u64,
    /// When the oldest pending row entered the outbox (`None`: none pending):
    /// how far behind delivery is.
    pub oldest_pending: Option<EpochMs>,
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
    async fn an_alarms_deliveries_are_all_its_rows_in_any_state_oldest_first() {
        let store = Store::for_test();
        let (jill, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let sent = enqueued(&store, of_alarm(jill, 3), 20).await;
        let dead = enqueued(&store, of_alarm(jill, 3), 10).await;
        let pending = enqueued(&store, of_alarm(jill, 3), 30).await;
        let same_time = enqueued(&store, of_alarm(jill, 3), 30).await;
        enqueued(&store, of_alarm(jill, 4), 5).await;
        enqueued(&store, of_alarm(bob, 3), 5).await;
        let incident = Notification {
            kind: crate::notify::NotificationKind::ServerDown,
            ..of_alarm(jill, 0)
        };
        enqueued(&store, incident, 5).await;
        store.record_delivery(sent, DeliveryOutcome::Sent, 40).await.unwrap();
        store
            .record_delivery(dead, DeliveryOutcome::Dead("550 no such user".into()), 40)
            .await
            .unwrap();
        store
            .record_delivery(pending, DeliveryOutcome::Retrying("421 busy".into()), 40)
            .await
            .unwrap();

        let rows = store.alarm_deliveries(jill, 3).await.unwrap();
        let seen: Vec<(Uuid, &str, u32, Option<&str>, EpochMs)> = rows
            .iter()
            .map(|r| {
                (
                    r.notification.id,
                    r.state.as_str(),
                    r.attempts,
                    r.last_error.as_deref(),
                    r.created,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (dead, "dead", 1, Some("550 no such user"), 10),
                (sent, "sent", 1, None, 20),
                (pending, "pending", 1, Some("421 busy"), 30),
                (same_time, "pending", 0, None, 30),
            ],
            "oldest first, then in the order they were written"
        );
        assert_eq!(rows[0].notification.account_uuid, jill);
        assert!(store.alarm_deliveries(jill, 5).await.unwrap().is_empty());
        assert!(
            store.alarm_deliveries(jill, 0).await.unwrap().is_empty(),
            "alarm 0 is no alarm, though incidents carry it"
        );
    }

    #[actix_rt::test]
    async fn the_outbox_summary_counts_rows_by_state_and_dates_the_oldest_pending() {
        let store = Store::for_test();
        assert_eq!(store.outbox_summary().await.unwrap(), OutboxSummary::default());
        let user = Uuid::new_v4();
        let mut ids = Vec::new();
        for created in [50, 10, 20, 30, 40, 60] {
            ids.push(enqueued(&store, of_alarm(user, 1), created).await);
        }
        let outcomes = vec![
            (ids[1], DeliveryOutcome::Sent),
            (ids[2], DeliveryOutcome::Digested(ids[5])),
            (ids[3], DeliveryOutcome::Dead("too old".into())),
            (ids[4], DeliveryOutcome::Retrying("421 busy".into())),
        ];
        store.record_deliveries(outcomes, 70).await.unwrap();
        assert_eq!(
            store.outbox_summary().await.unwrap(),
            OutboxSummary {
                pending: 3,
                sent: 1,
                digested: 1,
                dead: 1,
                oldest_pending: Some(40),
            }
        );
    }

    #[actix_rt::test]
    async fn notifications_sent_or_digested_count_in_the_minute_they_are_recorded() {
        let store = Store::for_test();
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
