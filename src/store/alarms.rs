//! Alarms and their ids: each account's alarm ids count from 1 and are
//! never reused (`alarm_ids`), so a deleted or expunged alarm answers
//! `410`. An alarm is saved with the notifications it decided and the
//! monitor's replay mark, in one commit (`save_alarm`).

use super::sql::{params, OptionalExtension};
use uuid::Uuid;

use super::{events, json_row, json_rows, monitor_column, stored, Store, StoreError};
use crate::model::{Alarm, EpochMs, MonitorKey};
use crate::notify::Notification;

/// What `GET /alarms/:id` can find.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmLookup {
    Found(Alarm),
    /// The id was issued but the alarm is deleted or expunged.
    Gone,
    /// The id was never issued.
    NotFound,
}

impl Store {
    /// Issues the account's next alarm id (from 1, never reused).
    pub async fn next_alarm_id(&self, user: Uuid) -> Result<u64, StoreError> {
        self.call(move |conn| {
            let id: i64 = conn.query_row(
                "INSERT INTO alarm_ids (user, last_id) VALUES (?1, 1)
                 ON CONFLICT(user) DO UPDATE SET last_id = alarm_ids.last_id + 1 RETURNING last_id",
                params![user.to_string()],
                |r| r.get(0),
            )?;
            Ok(id as u64)
        })
        .await
    }

    /// Saves an alarm and queues its notifications in the same commit: a
    /// notification exists exactly when the change that decided it does.
    pub async fn save_alarm(
        &self,
        alarm: Alarm,
        notifications: Vec<Notification>,
        now: EpochMs,
        applied: Option<i64>,
    ) -> Result<(), StoreError> {
        let result = self
            .call(move |conn| {
                if let Some(seq) = applied {
                    events::write_monitor_mark(conn, &alarm.monitor(), seq)?;
                }
                conn.prepare_cached(
                    "INSERT INTO alarms (user, id, monitor, closed, time_closed, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(user, id) DO UPDATE SET monitor = ?3, closed = ?4, time_closed = ?5, body = ?6",
                )?
                .execute(params![
                    alarm.user.to_string(),
                    alarm.id as i64,
                    monitor_column(&alarm.monitor()),
                    alarm.closed,
                    alarm.time_closed,
                    serde_json::to_string(&alarm)?
                ])?;
                super::outbox::write_pending(conn, &notifications, now)
            })
            .await;
        self.changed(result)
    }

    /// Deletes an alarm; its id stays issued, so it answers 410 from now on.
    pub async fn delete_alarm(&self, user: Uuid, id: u64) -> Result<bool, StoreError> {
        let result = self
            .call(move |conn| {
                let deleted = conn.execute(
                    "DELETE FROM alarms WHERE user = ?1 AND id = ?2",
                    params![user.to_string(), id as i64],
                )?;
                Ok(deleted > 0)
            })
            .await;
        self.changed(result)
    }

    /// The newest open alarm of a monitor, if any.
    pub async fn open_alarm(&self, monitor: MonitorKey) -> Result<Option<Alarm>, StoreError> {
        self.call(move |conn| {
            json_row(
                conn,
                "alarms",
                "SELECT user || '/' || id, body FROM alarms WHERE monitor = ?1 AND closed = 0 ORDER BY id DESC LIMIT 1",
                params![monitor_column(&monitor)],
            )
        })
        .await
    }

    /// Every open alarm, read on the writer, behind every write sent before:
    /// for an actor that decides writes from them at its start (the
    /// missing-data watch finds the faults it had opened).
    pub async fn open_alarms(&self) -> Result<Vec<Alarm>, StoreError> {
        self.call(|conn| {
            json_rows(
                conn,
                "alarms",
                "SELECT user || '/' || id, body FROM alarms WHERE closed = 0",
                [],
            )
        })
        .await
    }

    /// Monitors with at least one open alarm (their actors are started at boot
    /// so that pending holds resume).
    pub async fn monitors_with_open_alarms(&self) -> Result<Vec<MonitorKey>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT user || '/' || id, body FROM alarms WHERE closed = 0")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut keys = Vec::new();
            for row in rows {
                let (key, body) = row?;
                let alarm: Alarm = stored("alarms", &key, &body)?;
                let key = alarm.monitor();
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            Ok(keys)
        })
        .await
    }

    /// An account's alarms, newest first.
    pub async fn list_alarms(&self, user: Uuid) -> Result<Vec<Alarm>, StoreError> {
        self.read(move |conn| {
            json_rows(
                conn,
                "alarms",
                "SELECT user || '/' || id, body FROM alarms WHERE user = ?1 ORDER BY id DESC",
                params![user.to_string()],
            )
        })
        .await
    }

    /// Every account's alarms (operators), newest first; `open_only` for
    /// the open ones.
    pub async fn all_alarms(&self, open_only: bool) -> Result<Vec<Alarm>, StoreError> {
        self.read(move |conn| {
            let sql = if open_only {
                "SELECT user || '/' || id, body FROM alarms WHERE closed = 0 ORDER BY time_closed DESC, user, id DESC"
            } else {
                "SELECT user || '/' || id, body FROM alarms ORDER BY user, id DESC"
            };
            json_rows(conn, "alarms", sql, [])
        })
        .await
    }

    /// How many alarms are open (for `amon_alarms_open`).
    pub async fn open_alarm_count(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row("SELECT COUNT(*) FROM alarms WHERE closed = 0", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
        })
        .await
    }

    pub async fn get_alarm(&self, user: Uuid, id: u64) -> Result<AlarmLookup, StoreError> {
        self.read(move |conn| {
            if let Some(found) = json_row(
                conn,
                "alarms",
                "SELECT user || '/' || id, body FROM alarms WHERE user = ?1 AND id = ?2",
                params![user.to_string(), id as i64],
            )? {
                return Ok(AlarmLookup::Found(found));
            }
            let last: Option<i64> = conn
                .query_row(
                    "SELECT last_id FROM alarm_ids WHERE user = ?1",
                    params![user.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match last {
                Some(last) if id as i64 <= last && id > 0 => AlarmLookup::Gone,
                _ => AlarmLookup::NotFound,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_alarm_with_neither_probe_nor_group_is_refused_as_corrupt() {
        let store = Store::for_test();
        let user = Uuid::new_v4();
        let body = serde_json::json!({
            "user": user, "id": 7, "closed": false, "suppressed": false, "timeOpened": 1,
            "timeClosed": null, "timeLastEvent": null, "numEvents": 1, "faults": [], "maintFaults": [],
        })
        .to_string();
        store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO alarms (user, id, monitor, closed, body) VALUES (?1, 7, 'x', 0, ?2)",
                    params![user.to_string(), body],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let expected = format!("corrupt row in alarms (key {user}/7): an alarm with neither probe nor probe group");
        // Boot reads it first: it must not reach `Alarm::monitor`.
        let err = store.monitors_with_open_alarms().await.unwrap_err();
        assert_eq!(err.to_string(), expected);
        let err = store.list_alarms(user).await.unwrap_err();
        assert_eq!(err.to_string(), expected);
        let err = store
            .call(|conn| json_rows::<Alarm>(conn, "alarms", "SELECT user || '/' || id, '{' FROM alarms", []))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unreadable json body"), "{err}");
    }
    #[actix_rt::test]
    async fn alarm_ids_count_from_one_per_account_and_deleted_ids_are_gone() {
        let store = Store::for_test();
        let alice = Uuid::new_v4();
        let bob = Uuid::new_v4();
        assert_eq!(store.next_alarm_id(alice).await.unwrap(), 1);
        assert_eq!(store.next_alarm_id(alice).await.unwrap(), 2);
        assert_eq!(store.next_alarm_id(bob).await.unwrap(), 1);
        assert_eq!(store.get_alarm(alice, 2).await.unwrap(), AlarmLookup::Gone);
        assert_eq!(store.get_alarm(alice, 3).await.unwrap(), AlarmLookup::NotFound);
    }
}
