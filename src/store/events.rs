//! Events: committed once each (the uuid is the idempotency key), in the
//! order of their sequence numbers, and the two marks that make replay
//! exact: the router's watermark (every event up to it is applied) and each
//! monitor's last applied event (written in the commit of its alarm).

use super::sql::{params, Conn, OptionalExtension};

use super::{monitor_column, Store, StoreError};
use crate::model::{EpochMs, Event, MonitorKey};

/// What a commit of events did: the new ones (second copies of a uuid are
/// dropped), each with the sequence number it got, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub fresh: Vec<(i64, Event)>,
}

impl Store {
    /// Commits events, dropping those whose `uuid` is already stored, and
    /// hands the new ones with their sequence numbers to `after` once they
    /// are durable, on the store thread, in commit order: two concurrent
    /// callers are answered in any order, but their `after`s run in the
    /// order of the sequence numbers. Answers what `after` returns. The new
    /// ones count in the [`Store::activity`] minute of `received`.
    pub async fn commit_events<U, A>(&self, events: Vec<Event>, received: EpochMs, after: A) -> Result<U, StoreError>
    where
        U: Send + 'static,
        A: FnOnce(Committed) -> U + Send + 'static,
    {
        let activity = self.activity.clone();
        self.db
            .call_then(
                move |conn| insert_events(conn, events, received),
                move |committed| {
                    activity.record_events(received, committed.fresh.len() as u64);
                    after(committed)
                },
            )
            .await
    }

    /// A small write, committed: whether the database takes writes now
    /// (`GET /ping` asks, so a full disk shows as `503`).
    /// The probe writes (and at once deletes, in the same transaction, so
    /// nobody ever sees it) a 64 KiB row: a write the size of an event batch,
    /// which a nearly full disk refuses as it would refuse the batch. A
    /// failing WAL checkpoint counts as unavailable too.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        if self.db.checkpoint_failing() {
            return Err(StoreError::Commit(
                "WAL checkpoints fail (disk full or read-only?)".into(),
            ));
        }
        self.call(|conn| {
            conn.prepare_cached(conn.pick(
                "INSERT INTO event_counts (type, stored) VALUES ('~probe ' || hex(zeroblob(32768)), 0)",
                "INSERT INTO event_counts (type, stored) VALUES ('~probe ' || repeat('00', 32768), 0)",
            ))?
            .execute([])?;
            conn.prepare_cached("DELETE FROM event_counts WHERE type LIKE '~probe %'")?
                .execute([])?;
            Ok(())
        })
        .await
    }

    /// The router's watermark: every event with a sequence number up to it
    /// has been applied by every alarm actor it concerns.
    pub async fn route_mark(&self) -> Result<i64, StoreError> {
        self.call(|conn| conn.query_row("SELECT applied FROM route_mark WHERE id = 0", [], |r| r.get(0)))
            .await
    }

    /// Moves the watermark forward (never back).
    pub async fn set_route_mark(&self, applied: i64) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.prepare_cached("UPDATE route_mark SET applied = ?1 WHERE id = 0 AND applied < ?1")?
                .execute(params![applied])?;
            Ok(())
        })
        .await
    }

    /// Events after the watermark: committed (and acknowledged with 202) but
    /// perhaps not applied when the master last stopped, oldest first.
    pub async fn events_after(&self, seq: i64) -> Result<Vec<(i64, Event)>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq")?;
            let rows = stmt.query_map(params![seq], sequenced)?;
            rows.map(|row| {
                let (seq, body) = row?;
                Ok((seq, super::stored("events", &seq.to_string(), &body)?))
            })
            .collect()
        })
        .await
    }

    /// At most `limit` events after `seq`, oldest first: how the router of
    /// a master in a cluster learns of events every master commits. On
    /// PostgreSQL events are written in sequence order across masters
    /// (`insert_events` takes a lock), so none can appear later behind one
    /// already read.
    pub async fn events_after_page(&self, seq: i64, limit: usize) -> Result<Vec<(i64, Event)>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows = stmt.query_map(params![seq, limit], sequenced)?;
            rows.map(|row| {
                let (seq, body) = row?;
                Ok((seq, super::stored("events", &seq.to_string(), &body)?))
            })
            .collect()
        })
        .await
    }

    /// How many stored events are after the router's watermark: committed,
    /// not yet applied (a cluster's backlog, whichever master took them).
    pub async fn unapplied_events(&self) -> Result<usize, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM events WHERE seq > (SELECT applied FROM route_mark WHERE id = 0)",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    /// The events from `first` to `last` (sequence numbers), to route a
    /// batch again.
    pub async fn events_between(&self, first: i64, last: i64) -> Result<Vec<(i64, Event)>, StoreError> {
        self.call(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT seq, body FROM events WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq")?;
            let rows = stmt.query_map(params![first, last], sequenced)?;
            rows.map(|row| {
                let (seq, body) = row?;
                Ok((seq, super::stored("events", &seq.to_string(), &body)?))
            })
            .collect()
        })
        .await
    }

    /// How many events of each type (`machine`, `probe`, `server`) are
    /// stored (for `amon_events_stored`), from the counts `commit_events`
    /// keeps, not by counting the events. Whatever deletes events lowers
    /// these counts in the same commit (`gc_events` does).
    pub async fn events_stored_by_type(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT type, stored FROM event_counts ORDER BY type")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect::<Result<_, _>>()
        })
        .await
    }

    /// The last event a monitor applied (`None`: none recorded).
    pub async fn monitor_mark(&self, monitor: MonitorKey) -> Result<Option<i64>, StoreError> {
        self.call(move |conn| {
            conn.prepare_cached("SELECT seq FROM monitor_marks WHERE monitor = ?1")?
                .query_row(params![monitor_column(&monitor)], |r| r.get(0))
                .optional()
        })
        .await
    }
}

/// Records the last event a monitor applied; called inside the commit that
/// saves the effect of that event.
pub(super) fn write_monitor_mark(conn: &Conn, monitor: &MonitorKey, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO monitor_marks (monitor, seq) VALUES (?1, ?2)
         ON CONFLICT (monitor) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > monitor_marks.seq",
    )?
    .execute(params![monitor_column(monitor), seq])?;
    Ok(())
}

fn sequenced(row: &super::sql::Row) -> Result<(i64, String), StoreError> {
    Ok((row.get(0)?, row.get(1)?))
}

/// Inserts events one statement each (SQLite: no round trip to pay), the
/// new ones with their sequence numbers, in order. Ingest's hot path, so on
/// rusqlite itself: no row or parameter is copied into `sql::Value`s (which
/// halved ingest when it was).
fn insert_one_by_one(
    conn: &rusqlite::Connection,
    events: Vec<Event>,
    received: EpochMs,
) -> Result<Vec<(i64, Event)>, StoreError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (uuid, time, received, body) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    )?;
    let mut fresh = Vec::with_capacity(events.len());
    for event in events {
        let body = serde_json::to_string(&event)?;
        let inserted = insert.execute(rusqlite::params![event.uuid().as_bytes(), event.time(), received, body])?;
        if inserted == 1 {
            fresh.push((conn.last_insert_rowid(), event));
        }
    }
    Ok(fresh)
}

/// Rows per multi-row `INSERT` on PostgreSQL: a round trip per this many
/// events, not per event (each round trip is the cost there).
const ROWS_PER_INSERT: usize = 100;

/// Inserts events [`ROWS_PER_INSERT`] to a statement, the new ones with
/// their sequence numbers, in sequence order. `RETURNING` names the uuids
/// it inserted (its order is not promised): a uuid twice in one request is
/// new once.
fn insert_in_rows(conn: &Conn, events: Vec<Event>, received: EpochMs) -> Result<Vec<(i64, Event)>, StoreError> {
    let mut fresh = Vec::with_capacity(events.len());
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let chunk: Vec<Event> = events.by_ref().take(ROWS_PER_INSERT).collect();
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(?{}, ?{}, ?{}, ?{})", 4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4))
            .collect();
        let sql = format!(
            "INSERT INTO events (uuid, time, received, body) VALUES {} ON CONFLICT DO NOTHING RETURNING seq, uuid",
            rows.join(", ")
        );
        let mut values = Vec::with_capacity(4 * chunk.len());
        for event in &chunk {
            values.push(super::sql::Value::Blob(event.uuid().as_bytes().to_vec()));
            values.push(super::sql::Value::Int(event.time()));
            values.push(super::sql::Value::Int(received));
            values.push(super::sql::Value::Text(serde_json::to_string(event)?));
        }
        let mut inserted: std::collections::HashMap<Vec<u8>, i64> = conn
            .prepare_cached(&sql)?
            .query_map(values, |r| Ok((r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(0)?)))?
            .collect::<Result<_, _>>()?;
        for event in chunk {
            if let Some(seq) = inserted.remove(event.uuid().as_bytes().as_slice()) {
                fresh.push((seq, event));
            }
        }
    }
    fresh.sort_by_key(|(seq, _)| *seq);
    Ok(fresh)
}

/// The advisory lock that orders event commits across masters sharing a
/// PostgreSQL database (an arbitrary constant, "amon" in ASCII).
const EVENTS_LOCK: i64 = 0x616d_6f6e;

fn insert_events(conn: &Conn, events: Vec<Event>, received: EpochMs) -> Result<Committed, StoreError> {
    if conn.engine() == super::sql::Engine::Postgres {
        // Sequence numbers are handed out at insert and become visible at
        // commit: two masters committing at once could make seq 11 visible
        // before seq 10, and a router that has read 11 would never see 10.
        // Held to the end of the transaction, this lock makes commit order
        // sequence order. (SQLite has one writer: it always is.)
        conn.query_row("SELECT pg_advisory_xact_lock(?1)::text", params![EVENTS_LOCK], |_| {
            Ok(())
        })?;
    }
    let fresh = match conn {
        Conn::Sqlite(sqlite) => insert_one_by_one(sqlite, events, received)?,
        Conn::Postgres(_) => insert_in_rows(conn, events, received)?,
    };
    let mut counts: Vec<(&'static str, i64)> = Vec::new();
    for (_, event) in &fresh {
        let kind = event_type(event);
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    // One statement per type and request, not per event: ingest is the hot
    // path.
    let mut count = conn.prepare_cached(
        "INSERT INTO event_counts (type, stored) VALUES (?1, ?2)
         ON CONFLICT (type) DO UPDATE SET stored = event_counts.stored + excluded.stored",
    )?;
    for (kind, n) in counts {
        count.execute(params![kind, n])?;
    }
    Ok(Committed { fresh })
}

pub(super) fn event_type(event: &Event) -> &'static str {
    match event {
        Event::Machine(_) => "machine",
        Event::Probe(_) => "probe",
        Event::Server(_) => "server",
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use uuid::Uuid;

    use super::super::tests::{machine_event, probe_event, server_event};
    use super::super::{schema, Db};
    use super::*;
    use crate::model::MonitorKey;

    fn counts(machine: u64, probe: u64, server: u64) -> Vec<(String, u64)> {
        vec![
            ("machine".to_owned(), machine),
            ("probe".to_owned(), probe),
            ("server".to_owned(), server),
        ]
    }
    #[test]
    fn an_events_type_is_the_type_its_json_says() {
        for event in [
            machine_event(Uuid::nil()),
            probe_event(Uuid::nil()),
            server_event(Uuid::nil()),
        ] {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["type"], event_type(&event), "{json}");
        }
    }

    #[actix_rt::test]
    async fn stored_events_are_counted_by_type_and_second_copies_are_not() {
        let store = Store::for_test();
        assert_eq!(store.events_stored_by_type().await.unwrap(), counts(0, 0, 0));
        let machines: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut batch: Vec<Event> = machines.iter().map(|m| machine_event(*m)).collect();
        batch.push(server_event(Uuid::new_v4()));
        store.commit_events(batch, 1, |c| c).await.unwrap();
        assert_eq!(store.events_stored_by_type().await.unwrap(), counts(3, 0, 1));

        let again = vec![
            machine_event(machines[0]),
            probe_event(Uuid::new_v4()),
            machine_event(Uuid::new_v4()),
        ];
        store.commit_events(again, 2, |c| c).await.unwrap();
        assert_eq!(store.events_stored_by_type().await.unwrap(), counts(4, 1, 1));
    }

    #[actix_rt::test]
    async fn event_counts_are_backfilled_from_events_stored_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amon.sqlite");
        {
            // A database as schema version 6 left it.
            drop(Db::open(&path, &schema::MASTER[..6]).unwrap());
            let conn = Connection::open(&path).unwrap();
            for event in [
                machine_event(Uuid::new_v4()),
                machine_event(Uuid::new_v4()),
                server_event(Uuid::new_v4()),
            ] {
                conn.execute(
                    "INSERT INTO events (uuid, time, received, body) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![
                        event.uuid().as_bytes(),
                        event.time(),
                        1,
                        serde_json::to_string(&event).unwrap()
                    ],
                )
                .unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.events_stored_by_type().await.unwrap(), counts(2, 0, 1));
        store
            .commit_events(vec![machine_event(Uuid::new_v4())], 2, |c| c)
            .await
            .unwrap();
        assert_eq!(store.events_stored_by_type().await.unwrap(), counts(3, 0, 1));
    }

    #[actix_rt::test]
    async fn new_events_count_in_the_activity_minute_they_are_received_and_second_copies_do_not() {
        let store = Store::for_test();
        let a = Uuid::new_v4();
        let minute = 600_000;
        store
            .commit_events(vec![machine_event(a), server_event(Uuid::new_v4())], minute + 1, |c| c)
            .await
            .unwrap();
        store
            .commit_events(
                vec![machine_event(a), probe_event(Uuid::new_v4())],
                minute + 59_999,
                |c| c,
            )
            .await
            .unwrap();
        let hour = store.activity().last_hour(minute);
        assert_eq!(hour.last().unwrap().minute, minute);
        assert_eq!(hour.iter().map(|m| m.events).sum::<u64>(), 3);
        assert_eq!(hour.last().unwrap().events, 3);
    }

    #[actix_rt::test]
    async fn a_second_copy_of_an_event_uuid_is_dropped() {
        let store = Store::for_test();
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let first = store.commit_events(vec![machine_event(a)], 1, |c| c).await.unwrap();
        assert_eq!(first.fresh.len(), 1);
        let second = store
            .commit_events(vec![machine_event(a), machine_event(b)], 2, |c| c)
            .await
            .unwrap();
        assert_eq!(second.fresh.iter().map(|(_, e)| e.uuid()).collect::<Vec<_>>(), vec![b]);
        assert!(second.fresh[0].0 > first.fresh[0].0, "sequence numbers grow");
        let third = store.commit_events(vec![machine_event(b)], 3, |c| c).await.unwrap();
        assert!(third.fresh.is_empty());
    }

    /// A request larger than one multi-row insert (PostgreSQL writes 100
    /// rows a statement), with a uuid twice and one already stored: each
    /// new uuid once, numbered in the order the request gave them.
    #[actix_rt::test]
    async fn a_large_request_is_numbered_in_its_order_and_each_uuid_is_new_once() {
        let store = Store::for_test();
        let stored = Uuid::new_v4();
        store
            .commit_events(vec![machine_event(stored)], 1, |c| c)
            .await
            .unwrap();
        let uuids: Vec<Uuid> = (0..250).map(|_| Uuid::new_v4()).collect();
        let mut request: Vec<Event> = uuids.iter().map(|u| machine_event(*u)).collect();
        request.insert(120, machine_event(uuids[10]));
        request.insert(5, machine_event(stored));
        let committed = store.commit_events(request, 2, |c| c).await.unwrap();
        assert_eq!(committed.fresh.iter().map(|(_, e)| e.uuid()).collect::<Vec<_>>(), uuids);
        assert!(
            committed.fresh.windows(2).all(|w| w[0].0 < w[1].0),
            "sequence numbers grow in the request's order"
        );
        assert_eq!(
            store.events_stored_by_type().await.unwrap()[0],
            ("machine".to_string(), 251)
        );
    }

    #[actix_rt::test]
    async fn events_after_the_route_mark_are_replayed_in_order() {
        let store = Store::for_test();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let committed = store
            .commit_events(vec![machine_event(b), machine_event(a), machine_event(c)], 1, |c| c)
            .await
            .unwrap();
        assert_eq!(store.route_mark().await.unwrap(), 0);
        let after: Vec<Uuid> = store
            .events_after(0)
            .await
            .unwrap()
            .iter()
            .map(|(_, e)| e.uuid())
            .collect();
        assert_eq!(after, vec![b, a, c], "arrival order");
        store.set_route_mark(committed.fresh[1].0).await.unwrap();
        let mark = store.route_mark().await.unwrap();
        let after: Vec<Uuid> = store
            .events_after(mark)
            .await
            .unwrap()
            .iter()
            .map(|(_, e)| e.uuid())
            .collect();
        assert_eq!(after, vec![c]);
        store.set_route_mark(0).await.unwrap();
        assert_eq!(store.route_mark().await.unwrap(), mark, "the mark never goes back");
    }

    #[actix_rt::test]
    async fn callbacks_see_commits_in_sequence_order() {
        let store = Store::for_test();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let commits = (0..50).map(|_| {
            let seen = seen.clone();
            let store = store.clone();
            async move {
                store
                    .commit_events(
                        vec![machine_event(Uuid::new_v4()), machine_event(Uuid::new_v4())],
                        1,
                        move |c| seen.lock().unwrap().extend(c.fresh.iter().map(|(seq, _)| *seq)),
                    )
                    .await
                    .unwrap()
            }
        });
        futures_util::future::join_all(commits).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 100);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }

    #[actix_rt::test]
    async fn a_monitor_mark_is_written_with_its_alarm_and_never_goes_back() {
        let store = Store::for_test();
        let key = MonitorKey::Probe {
            user: Uuid::new_v4(),
            probe: Uuid::new_v4(),
        };
        assert_eq!(store.monitor_mark(key).await.unwrap(), None);
        let alarm = crate::rules::new_alarm(key, 1, 0);
        store.save_alarm(alarm.clone(), Vec::new(), 0, Some(7)).await.unwrap();
        assert_eq!(store.monitor_mark(key).await.unwrap(), Some(7));
        store.save_alarm(alarm.clone(), Vec::new(), 0, Some(5)).await.unwrap();
        store.save_alarm(alarm, Vec::new(), 0, None).await.unwrap();
        assert_eq!(store.monitor_mark(key).await.unwrap(), Some(7));
    }
}
