//! Events: committed once each (the uuid is the idempotency key), in the
//! order of their sequence numbers, and the two marks that make replay
//! exact: the router's watermark (every event up to it is applied) and each
//! monitor's last applied event (written in the commit of its alarm).

use rusqlite::{params, Connection, OptionalExtension};

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
    /// order of the sequence numbers. Answers what `after` returns.
    pub async fn commit_events<U, A>(&self, events: Vec<Event>, received: EpochMs, after: A) -> Result<U, StoreError>
    where
        U: Send + 'static,
        A: FnOnce(Committed) -> U + Send + 'static,
    {
        self.db
            .call_then(move |conn| insert_events(conn, events, received), after)
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
            conn.prepare_cached(
                "INSERT INTO event_counts (type, stored) VALUES ('~probe ' || hex(zeroblob(32768)), 0)",
            )?
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
        self.call(|conn| Ok(conn.query_row("SELECT applied FROM route_mark WHERE id = 0", [], |r| r.get(0))?))
            .await
    }

    /// Moves the watermark forward (never back).
    pub async fn set_route_mark(&self, applied: i64) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.prepare_cached("UPDATE route_mark SET applied = MAX(applied, ?1) WHERE id = 0")?
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

    /// The last event a monitor applied (`None`: none recorded).
    pub async fn monitor_mark(&self, monitor: MonitorKey) -> Result<Option<i64>, StoreError> {
        self.call(move |conn| {
            Ok(conn
                .prepare_cached("SELECT seq FROM monitor_marks WHERE monitor = ?1")?
                .query_row(params![monitor_column(&monitor)], |r| r.get(0))
                .optional()?)
        })
        .await
    }
}

/// Records the last event a monitor applied; called inside the commit that
/// saves the effect of that event.
pub(super) fn write_monitor_mark(conn: &Connection, monitor: &MonitorKey, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO monitor_marks (monitor, seq) VALUES (?1, ?2)
         ON CONFLICT (monitor) DO UPDATE SET seq = MAX(seq, excluded.seq)",
    )?
    .execute(params![monitor_column(monitor), seq])?;
    Ok(())
}

fn sequenced(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String)> {
    Ok((row.get(0)?, row.get(1)?))
}

fn insert_events(conn: &Connection, events: Vec<Event>, received: EpochMs) -> Result<Committed, StoreError> {
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO events (uuid, time, received, body) VALUES (?1, ?2, ?3, ?4)")?;
    let mut fresh = Vec::with_capacity(events.len());
    let mut counts: Vec<(&'static str, i64)> = Vec::new();
    for event in events {
        let body = serde_json::to_string(&event)?;
        let inserted = insert.execute(params![event.uuid().as_bytes(), event.time(), received, body])?;
        if inserted == 1 {
            let kind = event_type(&event);
            match counts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind, 1)),
            }
            fresh.push((conn.last_insert_rowid(), event));
        }
    }
    // One statement per type and request, not per event: ingest is the hot
    // path.
    let mut count = conn.prepare_cached(
        "INSERT INTO event_counts (type, stored) VALUES (?1, ?2)
         ON CONFLICT (type) DO UPDATE SET stored = stored + excluded.stored",
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
