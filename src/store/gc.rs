//! Garbage collection of the master's database: what is past its retention,
//! and what belongs to a monitor that is gone. Every method deletes at most
//! `batch` rows in one store call (its own savepoint in the thread's group
//! commit) and says how many went, so the janitor's batches interleave with
//! ingest, and a crash loses at most the batch in flight, which deleted
//! only rows nothing needs any more.

use super::sql::params;

use super::{Store, StoreError};
use crate::model::EpochMs;

/// SQL: the monitor named by the `monitor` column of `{row}` (as
/// `super::monitor_column` writes it: `{user}/probe/{uuid}` or
/// `{user}/group/{uuid}`, a uuid being 36 characters) still exists. The
/// lookups are by primary key, so finding orphans costs one index probe
/// per row.
fn monitor_exists(row: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM probes p WHERE substr({row}.monitor, 37, 7) = '/probe/'
                     AND p.uuid = substr({row}.monitor, 44) AND p.user = substr({row}.monitor, 1, 36))
          OR EXISTS (SELECT 1 FROM probegroups g WHERE substr({row}.monitor, 37, 7) = '/group/'
                     AND g.uuid = substr({row}.monitor, 44) AND g.user = substr({row}.monitor, 1, 36)))"
    )
}

impl Store {
    /// Deletes the oldest events received before `received_before`, at most
    /// `batch`, and lowers the stored counts by type in the same commit.
    ///
    /// Never an event after the route watermark (`route_mark.applied`):
    /// some alarm actor may not have applied it yet, and replay needs it.
    /// Never the newest event: SQLite gives a new row `MAX(seq) + 1`, so
    /// deleting the newest would hand its `seq` out again, and the router
    /// relies on `seq` only growing.
    ///
    /// It deletes from the front of the table, in arrival order, and stops
    /// at the first event still inside the retention: each batch reads at
    /// most `batch` rows whatever the table holds (filtering on `received`
    /// instead would read the whole table when nothing is old). `received`
    /// follows `seq` except across a clock stepped back, which only keeps
    /// events longer.
    pub async fn gc_events(&self, received_before: EpochMs, batch: usize) -> Result<usize, StoreError> {
        self.call(move |conn| {
            // PostgreSQL's LEAST skips a NULL (no events), where SQLite's
            // MIN is NULL: either way nothing is then deleted.
            let last_allowed: Option<i64> = conn.query_row(
                conn.pick(
                    "SELECT MIN((SELECT applied FROM route_mark WHERE id = 0), (SELECT MAX(seq) FROM events) - 1)",
                    "SELECT LEAST((SELECT applied FROM route_mark WHERE id = 0), (SELECT MAX(seq) FROM events) - 1)",
                ),
                [],
                |r| r.get(0),
            )?;
            let Some(last_allowed) = last_allowed else {
                return Ok(0);
            };
            let mut front = conn.prepare_cached(conn.pick(
                "SELECT seq, received, json_extract(body, '$.type') FROM events
                 WHERE seq <= ?1 ORDER BY seq LIMIT ?2",
                "SELECT seq, received, body::jsonb ->> 'type' FROM events
                 WHERE seq <= ?1 ORDER BY seq LIMIT ?2",
            ))?;
            let rows = front.query_map(params![last_allowed, batch as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<String>>(2)?))
            })?;
            let mut last = None;
            let mut deleted = 0usize;
            let mut by_type: Vec<(String, i64)> = Vec::new();
            for row in rows {
                let (seq, received, kind) = row?;
                if received >= received_before {
                    break;
                }
                last = Some(seq);
                deleted += 1;
                let kind = kind.unwrap_or_default();
                match by_type.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => by_type.push((kind, 1)),
                }
            }
            let Some(last) = last else {
                return Ok(0);
            };
            // Everything up to `last` is what was just read: the front.
            conn.prepare_cached("DELETE FROM events WHERE seq <= ?1")?
                .execute(params![last])?;
            let mut uncount = conn.prepare_cached("UPDATE event_counts SET stored = stored - ?2 WHERE type = ?1")?;
            for (kind, n) in by_type {
                uncount.execute(params![kind, n])?;
            }
            Ok(deleted)
        })
        .await
    }

    /// Deletes delivered (`sent`, `digested`) and dead outbox rows created
    /// before `before`, at most `batch`. Pending rows are never deleted,
    /// however old: they are still to be delivered or dead-lettered.
    pub async fn gc_outbox(&self, before: EpochMs, batch: usize) -> Result<usize, StoreError> {
        self.call(move |conn| {
            // SQLite's rows are in creation order by rowid, so the old ones
            // are found first; PostgreSQL's row address (ctid) has no order.
            conn.prepare_cached(conn.pick(
                "DELETE FROM outbox WHERE rowid IN (
                        SELECT rowid FROM outbox
                        WHERE state IN ('sent', 'digested', 'dead') AND created < ?1
                        LIMIT ?2)",
                "DELETE FROM outbox WHERE ctid IN (
                        SELECT ctid FROM outbox
                        WHERE state IN ('sent', 'digested', 'dead') AND created < ?1
                        LIMIT ?2)",
            ))?
            .execute(params![before, batch as i64])
        })
        .await
    }

    /// Forgets machines the flood guard has not been shown since
    /// `seen_before`, at most `batch`: down machines (a deleted zone's last
    /// word was a down), and machines whose server has not been heard from
    /// since then either (a server taken out of service). A running machine
    /// on a server whose relay still reports is kept, however long ago its
    /// last transition: a zone that runs for months says nothing, and the
    /// guard must still count it when its server goes down.
    pub async fn gc_machines(&self, seen_before: EpochMs, batch: usize) -> Result<usize, StoreError> {
        self.call(move |conn| {
            conn.prepare_cached(conn.pick(
                "DELETE FROM machines WHERE rowid IN (
                        SELECT m.rowid FROM machines m
                        WHERE m.seen < ?1
                          AND (m.up = 0 OR NOT EXISTS (
                                SELECT 1 FROM servers s WHERE s.uuid = m.server AND s.last_seen >= ?1))
                        LIMIT ?2)",
                "DELETE FROM machines WHERE ctid IN (
                        SELECT m.ctid FROM machines m
                        WHERE m.seen < ?1
                          AND (m.up = 0 OR NOT EXISTS (
                                SELECT 1 FROM servers s WHERE s.uuid = m.server AND s.last_seen >= ?1))
                        LIMIT ?2)",
            ))?
            .execute(params![seen_before, batch as i64])
        })
        .await
    }

    /// Expunges alarms closed before `before` (the retention period), at
    /// most `batch`; their ids answer 410 from now on.
    pub async fn expunge_closed(&self, before: EpochMs, batch: usize) -> Result<usize, StoreError> {
        self.call(move |conn| {
            conn.prepare_cached(conn.pick(
                "DELETE FROM alarms WHERE rowid IN (
                        SELECT rowid FROM alarms
                        WHERE closed = 1 AND time_closed IS NOT NULL AND time_closed < ?1
                        LIMIT ?2)",
                "DELETE FROM alarms WHERE ctid IN (
                        SELECT ctid FROM alarms
                        WHERE closed = 1 AND time_closed IS NOT NULL AND time_closed < ?1
                        LIMIT ?2)",
            ))?
            .execute(params![before, batch as i64])
        })
        .await
    }

    /// Deletes closed alarms whose probe or probe group no longer exists,
    /// at most `batch`; their ids answer 410 from now on. Open ones are left
    /// to their alarm actor, which closes them when told the monitor is gone.
    pub async fn gc_orphan_alarms(&self, batch: usize) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let row = conn.pick("rowid", "ctid");
            let sql = format!(
                "DELETE FROM alarms WHERE {row} IN (
                    SELECT a.{row} FROM alarms a WHERE a.closed = 1 AND NOT {} LIMIT ?1)",
                monitor_exists("a")
            );
            conn.prepare_cached(&sql)?.execute(params![batch as i64])
        })
        .await
    }

    /// Deletes the replay marks (`monitor_marks`) of probes and probe groups
    /// that no longer exist, at most `batch`.
    pub async fn gc_monitor_marks(&self, batch: usize) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let sql = format!(
                "DELETE FROM monitor_marks WHERE monitor IN (
                    SELECT m.monitor FROM monitor_marks m WHERE NOT {} LIMIT ?1)",
                monitor_exists("m")
            );
            conn.prepare_cached(&sql)?.execute(params![batch as i64])
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::store::sql::Conn;
    use uuid::Uuid;

    use super::super::{monitor_column, DeliveryOutcome, MachineRecord};
    use super::*;
    use crate::model::{Alarm, Event, MachineEvent, MonitorKey, Probe, ProbeGroup, ProbeType};
    use crate::notify::{ContactAddress, Notification, NotificationKind, ProbeRef};

    fn machine_event(time: EpochMs) -> Event {
        Event::Machine(MachineEvent {
            v: crate::model::EVENT_VERSION,
            uuid: Uuid::new_v4(),
            time,
            relay: Uuid::nil(),
            machine: Uuid::new_v4(),
            alias: None,
            owner: None,
            server: Uuid::nil(),
            old_state: Some("running".into()),
            new_state: "shutting_down".into(),
            up: false,
        })
    }

    fn server_event(time: EpochMs) -> Event {
        Event::Server(crate::model::ServerEvent {
            v: crate::model::EVENT_VERSION,
            uuid: Uuid::new_v4(),
            time,
            relay: Uuid::nil(),
            server: Uuid::nil(),
            event: crate::model::ServerEventKind::Heartbeat,
            hostname: None,
            agents: Vec::new(),
        })
    }

    /// Runs raw SQL on the store thread: what a test sets up or looks at
    /// directly.
    async fn sql<T: Send + 'static>(
        store: &Store,
        f: impl FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> T {
        store.call(f).await.unwrap()
    }

    async fn set_watermark(store: &Store, applied: i64) {
        sql(store, move |c| {
            c.execute("UPDATE route_mark SET applied = ?1 WHERE id = 0", params![applied])
        })
        .await;
    }

    async fn stored_seqs(store: &Store) -> Vec<i64> {
        sql(store, |c| {
            let mut stmt = c.prepare("SELECT seq FROM events ORDER BY seq")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// The counts `commit_events` and `gc_events` keep, against a real count
    /// of the rows.
    async fn assert_counts_exact(store: &Store) {
        let real: Vec<(String, u64)> = sql(store, |c| {
            let mut stmt = c.prepare(c.pick(
                "SELECT t.type, (SELECT COUNT(*) FROM events WHERE json_extract(body, '$.type') = t.type)
                 FROM event_counts t ORDER BY t.type",
                "SELECT t.type, (SELECT COUNT(*) FROM events WHERE body::jsonb ->> 'type' = t.type)
                 FROM event_counts t ORDER BY t.type",
            ))?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
        .await;
        assert_eq!(store.events_stored_by_type().await.unwrap(), real);
    }

    /// Commits events received at `received`; returns their seq range.
    async fn commit(store: &Store, events: Vec<Event>, received: EpochMs) -> (i64, i64) {
        let seqs: Vec<i64> = store
            .commit_events(events, received, |c| c)
            .await
            .unwrap()
            .fresh
            .iter()
            .map(|(seq, _)| *seq)
            .collect();
        (seqs[0], seqs[seqs.len() - 1])
    }

    #[actix_rt::test]
    async fn events_past_retention_go_oldest_first_in_batches_and_their_counts_with_them() {
        let store = Store::for_test();
        commit(&store, (0..5).map(|_| machine_event(100)).collect(), 100).await;
        commit(&store, (0..3).map(|_| server_event(200)).collect(), 200).await;
        let (_, newest) = commit(&store, vec![machine_event(900)], 900).await;
        set_watermark(&store, newest).await;

        assert_eq!(store.gc_events(500, 4).await.unwrap(), 4, "one batch");
        assert_counts_exact(&store).await;
        assert_eq!(store.gc_events(500, 4).await.unwrap(), 4);
        assert_eq!(
            store.gc_events(500, 4).await.unwrap(),
            0,
            "the rest is inside the retention"
        );
        assert_eq!(stored_seqs(&store).await, vec![newest]);
        assert_counts_exact(&store).await;
        assert_eq!(
            store.events_stored_by_type().await.unwrap(),
            vec![("machine".into(), 1), ("probe".into(), 0), ("server".into(), 0)]
        );
    }

    #[actix_rt::test]
    async fn events_after_the_route_watermark_are_kept_however_old() {
        let store = Store::for_test();
        let (first, last) = commit(&store, (0..6).map(|_| machine_event(1)).collect(), 1).await;
        commit(&store, vec![machine_event(2)], 2).await;
        // Alarm actors have applied the first two events only.
        set_watermark(&store, first + 1).await;
        assert_eq!(store.gc_events(1_000, 1_000).await.unwrap(), 2);
        assert_eq!(stored_seqs(&store).await.first(), Some(&(first + 2)));
        set_watermark(&store, last).await;
        assert_eq!(store.gc_events(1_000, 1_000).await.unwrap(), 4);
        assert_counts_exact(&store).await;
    }

    #[actix_rt::test]
    async fn the_newest_event_is_kept_so_its_seq_is_never_handed_out_again() {
        let store = Store::for_test();
        let (_, newest) = commit(&store, (0..3).map(|_| machine_event(1)).collect(), 1).await;
        set_watermark(&store, newest).await;
        assert_eq!(store.gc_events(1_000, 1_000).await.unwrap(), 2);
        assert_eq!(stored_seqs(&store).await, vec![newest]);
        assert_eq!(store.gc_events(1_000, 1_000).await.unwrap(), 0, "even alone and old");
        let (next, _) = commit(&store, vec![machine_event(2)], 2).await;
        assert_eq!(next, newest + 1, "seqs only grow");
    }

    #[actix_rt::test]
    async fn collection_stops_at_the_first_event_inside_the_retention() {
        let store = Store::for_test();
        commit(&store, vec![machine_event(1)], 1).await;
        // Received later, but a clock stepped back stamped the next one
        // earlier: it waits for the one before it.
        commit(&store, vec![machine_event(5_000)], 5_000).await;
        commit(&store, vec![machine_event(2)], 2).await;
        let (_, newest) = commit(&store, vec![machine_event(9_000)], 9_000).await;
        set_watermark(&store, newest).await;
        assert_eq!(store.gc_events(1_000, 1_000).await.unwrap(), 1);
        assert_eq!(stored_seqs(&store).await.len(), 3);
    }

    #[actix_rt::test]
    async fn a_second_copy_of_a_kept_event_is_still_dropped_after_a_collection() {
        let store = Store::for_test();
        let old = machine_event(1);
        let kept = machine_event(5_000);
        commit(&store, vec![old.clone()], 1).await;
        commit(&store, vec![kept.clone()], 5_000).await;
        let (_, newest) = commit(&store, vec![machine_event(6_000)], 6_000).await;
        set_watermark(&store, newest).await;
        assert_eq!(store.gc_events(1_000, 1_000).await.unwrap(), 1);
        let again = store.commit_events(vec![kept], 7_000, |c| c).await.unwrap();
        assert!(again.fresh.is_empty(), "a copy of a kept event is recognised");
        assert_counts_exact(&store).await;
    }

    fn probe(user: Uuid, group: Option<Uuid>) -> Probe {
        Probe {
            uuid: Uuid::new_v4(),
            name: None,
            user,
            probe_type: ProbeType::MachineUp,
            agent: None,
            machine: Some(Uuid::new_v4()),
            config: serde_json::Value::Null,
            contacts: vec!["email".into()],
            group,
            group_events: true,
            disabled: false,
            hold: None,
            renotify: None,
        }
    }

    fn group(user: Uuid) -> ProbeGroup {
        ProbeGroup {
            uuid: Uuid::new_v4(),
            name: Some("web".into()),
            user,
            contacts: vec!["email".into()],
            disabled: false,
            hold: None,
            renotify: None,
        }
    }

    async fn alarm(store: &Store, monitor: &MonitorKey, closed_at: Option<EpochMs>) -> u64 {
        let (user, probe, group) = match monitor {
            MonitorKey::Probe { user, probe } => (*user, Some(*probe), None),
            MonitorKey::ProbeGroup { user, group } => (*user, None, Some(*group)),
        };
        let id = store.next_alarm_id(user).await.unwrap();
        let alarm = Alarm {
            user,
            id,
            probe,
            probe_group: group,
            closed: closed_at.is_some(),
            suppressed: false,
            time_opened: 0,
            time_closed: closed_at,
            time_last_event: None,
            num_events: 1,
            faults: Vec::new(),
            maint_faults: Vec::new(),
            num_notifications: 0,
        };
        assert_eq!(&alarm.monitor(), monitor, "the test built the alarm it meant");
        store.save_alarm(alarm, vec![], 0, None).await.unwrap();
        id
    }

    async fn alarm_ids(store: &Store, user: Uuid) -> Vec<u64> {
        let mut ids: Vec<u64> = store.list_alarms(user).await.unwrap().iter().map(|a| a.id).collect();
        ids.sort();
        ids
    }

    #[actix_rt::test]
    async fn closed_alarms_past_retention_are_expunged_in_batches() {
        let store = Store::for_test();
        let user = Uuid::new_v4();
        let p = probe(user, None);
        store.put_probe(p.clone()).await.unwrap();
        let key = MonitorKey::of(&p);
        let old: Vec<u64> = vec![
            alarm(&store, &key, Some(10)).await,
            alarm(&store, &key, Some(20)).await,
            alarm(&store, &key, Some(30)).await,
        ];
        let recent = alarm(&store, &key, Some(5_000)).await;
        let open = alarm(&store, &key, None).await;
        assert_eq!(store.expunge_closed(1_000, 2).await.unwrap(), 2);
        assert_eq!(store.expunge_closed(1_000, 2).await.unwrap(), 1);
        assert_eq!(store.expunge_closed(1_000, 2).await.unwrap(), 0);
        assert_eq!(alarm_ids(&store, user).await, vec![recent, open]);
        assert_eq!(
            store.get_alarm(user, old[0]).await.unwrap(),
            crate::store::AlarmLookup::Gone
        );
    }

    #[actix_rt::test]
    async fn closed_alarms_and_marks_of_deleted_monitors_go_and_the_rest_stays() {
        let store = Store::for_test();
        let user = Uuid::new_v4();
        let kept_probe = probe(user, None);
        let gone_probe = probe(user, None);
        let kept_group = group(user);
        let gone_group = group(user);
        for p in [&kept_probe, &gone_probe] {
            store.put_probe(p.clone()).await.unwrap();
        }
        for g in [&kept_group, &gone_group] {
            store.put_group(g.clone()).await.unwrap();
        }
        let group_key = |g: &ProbeGroup| MonitorKey::ProbeGroup { user, group: g.uuid };
        let keep = vec![
            alarm(&store, &MonitorKey::of(&kept_probe), Some(1)).await,
            alarm(&store, &group_key(&kept_group), Some(1)).await,
            // Open: its alarm actor closes it when told the probe is gone.
            alarm(&store, &MonitorKey::of(&gone_probe), None).await,
        ];
        alarm(&store, &MonitorKey::of(&gone_probe), Some(1)).await;
        alarm(&store, &group_key(&gone_group), Some(1)).await;
        alarm(&store, &group_key(&gone_group), Some(2)).await;
        let monitors = [
            MonitorKey::of(&kept_probe),
            MonitorKey::of(&gone_probe),
            group_key(&kept_group),
            group_key(&gone_group),
        ]
        .map(|k| monitor_column(&k));
        let marks = monitors.to_vec();
        sql(&store, move |c| {
            for m in &marks {
                c.execute("INSERT INTO monitor_marks (monitor, seq) VALUES (?1, 1)", params![m])?;
            }
            Ok(())
        })
        .await;

        assert_eq!(store.gc_orphan_alarms(1_000).await.unwrap(), 0, "every monitor exists");
        assert_eq!(store.gc_monitor_marks(1_000).await.unwrap(), 0);
        store.delete_probe(user, gone_probe.uuid).await.unwrap();
        store.delete_group(user, gone_group.uuid).await.unwrap();
        assert_eq!(store.gc_orphan_alarms(2).await.unwrap(), 2, "a batch");
        assert_eq!(store.gc_orphan_alarms(2).await.unwrap(), 1);
        assert_eq!(store.gc_orphan_alarms(2).await.unwrap(), 0);
        let mut keep = keep;
        keep.sort();
        assert_eq!(alarm_ids(&store, user).await, keep);

        assert_eq!(store.gc_monitor_marks(1_000).await.unwrap(), 2);
        let left: Vec<String> = sql(&store, |c| {
            let mut stmt = c.prepare("SELECT monitor FROM monitor_marks ORDER BY monitor")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await;
        let mut expected = vec![monitors[0].clone(), monitors[2].clone()];
        expected.sort();
        assert_eq!(left, expected);
    }

    fn notification() -> Notification {
        Notification {
            id: Uuid::new_v4(),
            kind: NotificationKind::Fault,
            contact_name: "email".into(),
            contact: ContactAddress::Email("alice@example.com".into()),
            datacenter: "coal".into(),
            account_uuid: Uuid::nil(),
            account_login: "alice".into(),
            alarm_id: 1,
            alarm_closed: false,
            alarm_fault_count: 1,
            probe: ProbeRef {
                uuid: Uuid::nil(),
                name: None,
                probe_type: "machine-up".into(),
                group: None,
            },
            machine: None,
            message: "down".into(),
            event_time: 0,
            thread_root: None,
            master_url: "http://127.0.0.1:4300".into(),
            event_json: serde_json::Value::Null,
            incident: None,
            digest: Vec::new(),
            alarm: None,
        }
    }

    #[actix_rt::test]
    async fn finished_outbox_rows_past_retention_go_and_pending_ones_never() {
        let store = Store::for_test();
        let at = |n: Notification, created: EpochMs| {
            let store = store.clone();
            async move {
                store.enqueue(vec![n.clone()], created).await.unwrap();
                n.id
            }
        };
        let sent = at(notification(), 10).await;
        let dead = at(notification(), 10).await;
        let digested = at(notification(), 10).await;
        let pending = at(notification(), 10).await;
        let recent = at(notification(), 5_000).await;
        store.record_delivery(sent, DeliveryOutcome::Sent, 0).await.unwrap();
        store
            .record_delivery(dead, DeliveryOutcome::Dead("550 no such user".into()), 0)
            .await
            .unwrap();
        store
            .record_delivery(digested, DeliveryOutcome::Digested(recent), 0)
            .await
            .unwrap();
        store
            .record_delivery(pending, DeliveryOutcome::Retrying("421 busy".into()), 0)
            .await
            .unwrap();
        store.record_delivery(recent, DeliveryOutcome::Sent, 0).await.unwrap();

        assert_eq!(store.gc_outbox(1_000, 2).await.unwrap(), 2);
        assert_eq!(store.gc_outbox(1_000, 2).await.unwrap(), 1);
        assert_eq!(store.gc_outbox(1_000, 2).await.unwrap(), 0);
        let left: Vec<String> = sql(&store, |c| {
            let mut stmt = c.prepare("SELECT id FROM outbox ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await;
        let mut expected = vec![pending.to_string(), recent.to_string()];
        expected.sort();
        assert_eq!(left, expected);
        assert!(store.dead_letters(10).await.unwrap().is_empty());
        assert_eq!(store.pending_deliveries().await.unwrap().len(), 1);
    }

    #[actix_rt::test]
    async fn machines_nobody_reported_go_unless_running_on_a_server_still_heard_from() {
        let store = Store::for_test();
        let (live, retired) = (Uuid::new_v4(), Uuid::new_v4());
        let machine = |server, up| MachineRecord {
            uuid: Uuid::new_v4(),
            server,
            alias: None,
            up,
        };
        let stable = machine(live, true);
        let deleted = machine(live, false);
        let on_retired = machine(retired, true);
        let fresh = machine(retired, false);
        store
            .put_machines(vec![stable.clone(), deleted.clone(), on_retired.clone()], 10)
            .await
            .unwrap();
        store.put_machines(vec![fresh.clone()], 5_000).await.unwrap();
        store.touch_server(live, None, "heartbeat".into(), 4_000).await.unwrap();
        store.touch_server(retired, None, "heartbeat".into(), 10).await.unwrap();

        assert_eq!(store.gc_machines(1_000, 1).await.unwrap(), 1, "a batch");
        assert_eq!(store.gc_machines(1_000, 1).await.unwrap(), 1);
        assert_eq!(store.gc_machines(1_000, 1).await.unwrap(), 0);
        let mut left: Vec<Uuid> = store.all_machines().await.unwrap().iter().map(|m| m.uuid).collect();
        left.sort();
        let mut expected = vec![stable.uuid, fresh.uuid];
        expected.sort();
        assert_eq!(left, expected);
    }
}
