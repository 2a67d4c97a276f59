//! The relay's store: the spool (events written before they are sent, deleted
//! only after the master's `202`) and the last known state of every zone (so
//! that after a restart the relay can tell which transitions it missed).

use std::path::Path;

use super::sql::{params, Conn};
use uuid::Uuid;

use super::db::{Db, StoreError};
use super::schema;
use crate::model::{EpochMs, Event};
use crate::zones::ZoneState;

/// What the relay last knew of a zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneRecord {
    pub machine: Uuid,
    pub server: Uuid,
    pub state: ZoneState,
    pub alias: Option<String>,
    pub owner: Option<Uuid>,
}

#[derive(Clone)]
pub struct RelayStore {
    db: Db,
}

impl RelayStore {
    pub fn open(path: &Path) -> Result<RelayStore, StoreError> {
        Ok(RelayStore {
            db: Db::open(path, schema::RELAY)?,
        })
    }

    pub fn in_memory() -> Result<RelayStore, StoreError> {
        Ok(RelayStore {
            db: Db::in_memory(schema::RELAY)?,
        })
    }

    /// Makes events durable, together with the zone states they establish,
    /// in one commit: after a crash either both are there or neither.
    /// Returns the number of events now spooled.
    pub async fn spool(&self, events: Vec<Event>, zones: Vec<ZoneRecord>) -> Result<u64, StoreError> {
        self.db
            .call(move |conn| {
                let mut insert = conn.prepare_cached("INSERT OR IGNORE INTO spool (uuid, body) VALUES (?1, ?2)")?;
                for event in &events {
                    insert.execute(params![event.uuid().as_bytes(), serde_json::to_string(event)?])?;
                }
                put_zones(conn, &zones)?;
                let depth: i64 = conn.query_row("SELECT COUNT(*) FROM spool", [], |r| r.get(0))?;
                Ok(depth as u64)
            })
            .await
    }

    /// Forgets events the master has committed.
    pub async fn acknowledge(&self, uuids: Vec<Uuid>) -> Result<(), StoreError> {
        self.db
            .call(move |conn| {
                let mut delete = conn.prepare_cached("DELETE FROM spool WHERE uuid = ?1")?;
                for uuid in &uuids {
                    delete.execute(params![uuid.as_bytes()])?;
                }
                Ok(())
            })
            .await
    }

    /// Every spooled event, oldest first (resent after a restart).
    pub async fn spooled(&self) -> Result<Vec<Event>, StoreError> {
        self.db
            .call(|conn| {
                let mut stmt = conn.prepare("SELECT body FROM spool ORDER BY seq")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                rows.map(|body| Ok(serde_json::from_str(&body?)?)).collect()
            })
            .await
    }

    /// Records zone states that are not transitions (first sightings).
    pub async fn put_zones(&self, zones: Vec<ZoneRecord>) -> Result<(), StoreError> {
        self.db.call(move |conn| put_zones(conn, &zones)).await
    }

    /// Forgets deleted zones.
    pub async fn forget_zones(&self, machines: Vec<Uuid>) -> Result<(), StoreError> {
        self.db
            .call(move |conn| {
                let mut delete = conn.prepare_cached("DELETE FROM zones WHERE machine = ?1")?;
                for machine in &machines {
                    delete.execute(params![machine.to_string()])?;
                }
                Ok(())
            })
            .await
    }

    /// One zone's last known state (after its watcher crashed).
    pub async fn zone(&self, machine: Uuid) -> Result<Option<ZoneRecord>, StoreError> {
        self.db
            .call(move |conn| {
                Ok(read_zones(
                    conn,
                    "SELECT machine, server, state, alias, owner FROM zones WHERE machine = ?1",
                    params![machine.to_string()],
                )?
                .pop())
            })
            .await
    }

    /// Moves events the master refused (4xx) out of the spool into the
    /// dead-letter table, where an operator can look at them.
    pub async fn dead_letter(
        &self,
        events: Vec<Event>,
        status: u16,
        reason: String,
        now: EpochMs,
    ) -> Result<(), StoreError> {
        self.db
            .call(move |conn| {
                let mut keep = conn.prepare_cached(
                    "INSERT OR REPLACE INTO dead_letter (uuid, time, status, reason, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut delete = conn.prepare_cached("DELETE FROM spool WHERE uuid = ?1")?;
                for event in &events {
                    keep.execute(params![
                        event.uuid().as_bytes(),
                        now,
                        status,
                        reason,
                        serde_json::to_string(event)?
                    ])?;
                    delete.execute(params![event.uuid().as_bytes()])?;
                }
                Ok(())
            })
            .await
    }

    /// Deletes dead letters moved there before `before`, at most `batch`;
    /// returns how many went.
    pub async fn gc_dead_letters(&self, before: EpochMs, batch: usize) -> Result<usize, StoreError> {
        self.db
            .call(move |conn| {
                // Rows are in the order they were dead-lettered, by rowid, so
                // the old ones are found first.
                conn.prepare_cached(
                    "DELETE FROM dead_letter WHERE rowid IN (
                            SELECT rowid FROM dead_letter WHERE time < ?1 LIMIT ?2)",
                )?
                .execute(params![before, batch as i64])
            })
            .await
    }

    /// Every zone's last known state.
    pub async fn zones(&self) -> Result<Vec<ZoneRecord>, StoreError> {
        self.db
            .call(|conn| read_zones(conn, "SELECT machine, server, state, alias, owner FROM zones", []))
            .await
    }
}

/// Zone rows (machine, server, state, alias, owner) as records. A row whose
/// uuids do not parse is skipped with an error naming the table and key (the
/// zone is then watched from its next report, as a new one), never read as
/// a nil uuid; an unreadable owner is left out, with a warning.
fn read_zones(conn: &Conn, sql: &str, params: impl super::sql::Params) -> Result<Vec<ZoneRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut zones = Vec::new();
    for row in rows {
        let (machine, server, state, alias, owner) = row?;
        let (Ok(machine_uuid), Ok(server_uuid)) = (Uuid::parse_str(&machine), Uuid::parse_str(&server)) else {
            tracing::error!(table = "zones", key = %machine, server = %server, "corrupt row skipped: a uuid does not parse");
            continue;
        };
        let owner = owner.and_then(|o| match Uuid::parse_str(&o) {
            Ok(owner) => Some(owner),
            Err(_) => {
                tracing::warn!(table = "zones", key = %machine, owner = %o, "unreadable owner left out");
                None
            }
        });
        zones.push(ZoneRecord {
            machine: machine_uuid,
            server: server_uuid,
            state: ZoneState::parse(&state).unwrap_or(ZoneState::Other),
            alias,
            owner,
        });
    }
    Ok(zones)
}

fn put_zones(conn: &Conn, zones: &[ZoneRecord]) -> Result<(), StoreError> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO zones (machine, server, state, alias, owner) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(machine) DO UPDATE SET server = ?2, state = ?3,
             alias = COALESCE(?4, alias), owner = COALESCE(?5, owner)",
    )?;
    for z in zones {
        upsert.execute(params![
            z.machine.to_string(),
            z.server.to_string(),
            z.state.as_str(),
            z.alias,
            z.owner.map(|o| o.to_string())
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ServerEvent, ServerEventKind};

    fn beat() -> Event {
        Event::Server(ServerEvent {
            v: crate::model::EVENT_VERSION,
            uuid: Uuid::new_v4(),
            time: 1,
            relay: Uuid::nil(),
            server: Uuid::nil(),
            event: ServerEventKind::Heartbeat,
            hostname: None,
            agents: Vec::new(),
        })
    }

    #[actix_rt::test]
    async fn a_zone_row_with_a_bad_uuid_is_skipped_never_read_as_nil() {
        let store = RelayStore::in_memory().unwrap();
        let (good, server, owner) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        store
            .db
            .call(move |c| {
                c.execute(
                    "INSERT INTO zones (machine, server, state, alias, owner) VALUES
                     (?1, ?2, 'running', 'web0', ?3), ('not-a-uuid', ?2, 'running', NULL, NULL),
                     (?4, ?2, 'running', NULL, 'nobody')",
                    params![
                        good.to_string(),
                        server.to_string(),
                        owner.to_string(),
                        Uuid::new_v4().to_string()
                    ],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let zones = store.zones().await.unwrap();
        assert_eq!(zones.len(), 2, "the corrupt row is skipped: {zones:?}");
        assert!(zones.iter().all(|z| !z.machine.is_nil() && z.server == server));
        let web0 = zones.iter().find(|z| z.machine == good).unwrap();
        assert_eq!(web0.owner, Some(owner));
        assert!(
            zones.iter().any(|z| z.machine != good && z.owner.is_none()),
            "an unreadable owner is left out"
        );
    }

    #[actix_rt::test]
    async fn spooled_events_stay_until_acknowledged_in_order() {
        let store = RelayStore::in_memory().unwrap();
        let (a, b, c) = (beat(), beat(), beat());
        assert_eq!(store.spool(vec![a.clone(), b.clone()], vec![]).await.unwrap(), 2);
        assert_eq!(
            store.spool(vec![c.clone(), a.clone()], vec![]).await.unwrap(),
            3,
            "a second copy is ignored"
        );
        store.acknowledge(vec![a.uuid()]).await.unwrap();
        assert_eq!(store.spooled().await.unwrap(), vec![b, c]);
    }

    #[actix_rt::test]
    async fn dead_letters_past_retention_are_deleted_in_batches() {
        let store = RelayStore::in_memory().unwrap();
        let old = vec![beat(), beat(), beat()];
        store.spool(old.clone(), vec![]).await.unwrap();
        store.dead_letter(old, 400, "bad".into(), 10).await.unwrap();
        let recent = beat();
        store.spool(vec![recent.clone()], vec![]).await.unwrap();
        store.dead_letter(vec![recent], 422, "bad".into(), 5_000).await.unwrap();
        assert_eq!(store.gc_dead_letters(1_000, 2).await.unwrap(), 2);
        assert_eq!(store.gc_dead_letters(1_000, 2).await.unwrap(), 1);
        assert_eq!(store.gc_dead_letters(1_000, 2).await.unwrap(), 0);
        assert_eq!(store.gc_dead_letters(10_000, 2).await.unwrap(), 1);
        assert!(store.spooled().await.unwrap().is_empty());
    }

    #[actix_rt::test]
    async fn zone_states_are_upserted_and_forgotten() {
        let store = RelayStore::in_memory().unwrap();
        let zone = ZoneRecord {
            machine: Uuid::new_v4(),
            server: Uuid::new_v4(),
            state: ZoneState::Running,
            alias: Some("web0".into()),
            owner: None,
        };
        store.put_zones(vec![zone.clone()]).await.unwrap();
        let down = ZoneRecord {
            state: ZoneState::ShuttingDown,
            alias: None,
            ..zone.clone()
        };
        store.spool(vec![], vec![down]).await.unwrap();
        let zones = store.zones().await.unwrap();
        assert_eq!(zones.len(), 1);
        assert_eq!(zones[0].state, ZoneState::ShuttingDown);
        assert_eq!(
            zones[0].alias.as_deref(),
            Some("web0"),
            "a missing alias keeps the known one"
        );
        store.forget_zones(vec![zone.machine]).await.unwrap();
        assert!(store.zones().await.unwrap().is_empty());
    }

    #[actix_rt::test]
    async fn a_spool_of_release_040829a_opens_with_its_events() {
        let (_dir, path) = crate::store::tests::fixture_copy("040829a", "relay.sqlite");
        let store = RelayStore::open(&path).unwrap();
        let machine_events = store
            .spooled()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e, Event::Machine(_)))
            .count();
        assert!(
            machine_events >= 2,
            "the two zone events spooled while the master was away"
        );
        assert!(!store.zones().await.unwrap().is_empty());
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version as usize, schema::RELAY.len());
    }
}
