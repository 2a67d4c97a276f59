//! The store: the only code that knows SQL. The master's [`Store`] (accounts,
//! probes, events, alarms, outbox) and the relay's [`RelayStore`] (spool and
//! last zone states) each sit on a [`Db`]: a database thread with a bounded
//! mailbox and group commit, so nothing blocks an actix arbiter and every
//! answer means "durable". The thread is not an actix actor because group
//! commit needs to drain the mailbox, which an actix `SyncContext` cannot.

mod backup;
mod checkpoint;
mod db;
mod events;
mod gc;
mod inventory;
mod relay;
mod schema;

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

pub use backup::backup_database;
pub use db::{Db, StoreError};
pub use events::Committed;
pub use inventory::{InventoryRecord, OwnerChange};
pub use relay::{RelayStore, ZoneRecord};

use crate::model::{Account, Alarm, Contact, EpochMs, MaintenanceWindow, MonitorKey, Probe, ProbeGroup};
use crate::notify::Notification;

/// The master's database file in a data dir.
pub const MASTER_FILE: &str = "amon.sqlite";

/// The master database's schema version this build migrates to.
pub const MASTER_SCHEMA_VERSION: usize = schema::MASTER.len();
/// The relay's database file in a data dir.
pub const RELAY_FILE: &str = "relay.sqlite";

/// A machine as the flood guard last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineRecord {
    pub uuid: Uuid,
    pub server: Uuid,
    pub alias: Option<String>,
    pub up: bool,
}

/// What a lookup by a per-owner id can find.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    Found(T),
    /// The id was issued but the thing is deleted, expired or expunged.
    Gone,
    /// The id was never issued.
    NotFound,
}

/// What `GET /alarms/:id` can find.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmLookup {
    Found(Alarm),
    /// The id was issued but the alarm is deleted or expunged.
    Gone,
    /// The id was never issued.
    NotFound,
}

/// A delivery waiting in the outbox.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub notification: Notification,
    pub attempts: u32,
    /// When it entered the outbox (for the maximum age).
    pub created: EpochMs,
}

/// A cheap, cloneable handle to the master's store.
#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens (creating and migrating if needed) the master database.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::open_with_readers(path, schema::MASTER, db::READERS)?,
        })
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::in_memory(schema::MASTER)?,
        })
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.call(f).await
    }

    /// A read that only answers someone (the Master API, `/metrics`): on a
    /// reader thread, waiting for no commit. It sees every commit answered
    /// before it, but may overtake writes still waiting in the writer's
    /// mailbox, so what an actor reads to decide a write, or at its start
    /// (when a predecessor's last write may still be queued), stays on
    /// [`Store::call`].
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.read(f).await
    }

    /// Notes what a relay last said about itself (for `GET /servers`).
    pub async fn touch_server(
        &self,
        server: Uuid,
        hostname: Option<String>,
        last_event: String,
        seen: EpochMs,
    ) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO servers (uuid, hostname, last_event, last_seen) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(uuid) DO UPDATE SET hostname = COALESCE(?2, hostname), last_event = ?3, last_seen = ?4",
            )?
            .execute(params![server.to_string(), hostname, last_event, seen])?;
            Ok(())
        })
        .await
    }

    // ---- accounts ----

    pub async fn create_account(&self, account: Account, now: EpochMs) -> Result<Account, StoreError> {
        self.call(move |conn| {
            let exists: Option<String> = conn
                .query_row(
                    "SELECT uuid FROM accounts WHERE uuid = ?1 OR login = ?2",
                    params![account.uuid.to_string(), account.login],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!("account {}", account.login)));
            }
            conn.execute(
                "INSERT INTO accounts (uuid, login, email, created, operator, attributes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    account.uuid.to_string(),
                    account.login,
                    account.email,
                    now,
                    account.operator,
                    serde_json::to_string(&account.attributes)?
                ],
            )?;
            Ok(account)
        })
        .await
    }

    /// Makes an account an operator's (its probes may watch any machine).
    pub async fn make_operator(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "UPDATE accounts SET operator = 1 WHERE uuid = ?1",
                params![uuid.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    /// Replaces an account's login, email, attributes and operator flag (its
    /// uuid stays).
    /// `None` if there is no such account; a login another account has is a
    /// [`StoreError::Conflict`].
    pub async fn update_account(&self, account: Account) -> Result<Option<Account>, StoreError> {
        self.call(move |conn| {
            let taken: Option<String> = conn
                .query_row(
                    "SELECT uuid FROM accounts WHERE login = ?1 AND uuid <> ?2",
                    params![account.login, account.uuid.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!("account {}", account.login)));
            }
            let changed = conn.execute(
                "UPDATE accounts SET login = ?2, email = ?3, attributes = ?4, operator = ?5 WHERE uuid = ?1",
                params![
                    account.uuid.to_string(),
                    account.login,
                    account.email,
                    serde_json::to_string(&account.attributes)?,
                    account.operator
                ],
            )?;
            Ok((changed > 0).then_some(account))
        })
        .await
    }

    /// Finds an account by uuid or login.
    pub async fn get_account(&self, key: String) -> Result<Option<Account>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT uuid, login, email, operator, attributes FROM accounts WHERE uuid = ?1 OR login = ?1",
                params![key],
                account_row,
            )
            .optional()?
            .transpose()
        })
        .await
    }

    pub async fn all_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT uuid, login, email, operator, attributes FROM accounts")?;
            let rows = stmt.query_map([], account_row)?;
            rows.map(|row| row?).collect()
        })
        .await
    }

    // ---- probes ----

    pub async fn put_probe(&self, probe: Probe) -> Result<Probe, StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO probes (uuid, user, machine, agent, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(uuid) DO UPDATE SET user = ?2, machine = ?3, agent = ?4, body = ?5",
                params![
                    probe.uuid.to_string(),
                    probe.user.to_string(),
                    probe.machine.map(|m| m.to_string()),
                    probe.agent.map(|a| a.to_string()),
                    serde_json::to_string(&probe)?
                ],
            )?;
            Ok(probe)
        })
        .await
    }

    pub async fn list_probes(&self, user: Uuid) -> Result<Vec<Probe>, StoreError> {
        self.read(move |conn| {
            json_rows(
                conn,
                "probes",
                "SELECT uuid, body FROM probes WHERE user = ?1 ORDER BY uuid",
                params![user.to_string()],
            )
        })
        .await
    }

    pub async fn get_probe(&self, user: Uuid, uuid: Uuid) -> Result<Option<Probe>, StoreError> {
        self.read(move |conn| {
            json_row(
                conn,
                "probes",
                "SELECT uuid, body FROM probes WHERE user = ?1 AND uuid = ?2",
                params![user.to_string(), uuid.to_string()],
            )
        })
        .await
    }

    /// Every probe (of any account) that `agent` runs, by probe uuid: what
    /// a relay fetches for that agent (`GET /agentprobes?agent=`).
    pub async fn probes_for_agent(&self, agent: Uuid) -> Result<Vec<Probe>, StoreError> {
        self.read(move |conn| {
            json_rows(
                conn,
                "probes",
                "SELECT uuid, body FROM probes WHERE agent = ?1 ORDER BY uuid",
                params![agent.to_string()],
            )
        })
        .await
    }

    pub async fn all_probes(&self) -> Result<Vec<Probe>, StoreError> {
        self.call(|conn| json_rows(conn, "probes", "SELECT uuid, body FROM probes", []))
            .await
    }

    /// Deletes a probe; `false` if it did not exist.
    pub async fn delete_probe(&self, user: Uuid, uuid: Uuid) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute(
                "DELETE FROM probes WHERE user = ?1 AND uuid = ?2",
                params![user.to_string(), uuid.to_string()],
            )? > 0)
        })
        .await
    }

    // ---- probe groups ----

    pub async fn put_group(&self, group: ProbeGroup) -> Result<ProbeGroup, StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO probegroups (uuid, user, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(uuid) DO UPDATE SET user = ?2, body = ?3",
                params![
                    group.uuid.to_string(),
                    group.user.to_string(),
                    serde_json::to_string(&group)?
                ],
            )?;
            Ok(group)
        })
        .await
    }

    pub async fn list_groups(&self, user: Uuid) -> Result<Vec<ProbeGroup>, StoreError> {
        self.read(move |conn| {
            json_rows(
                conn,
                "probegroups",
                "SELECT uuid, body FROM probegroups WHERE user = ?1 ORDER BY uuid",
                params![user.to_string()],
            )
        })
        .await
    }

    pub async fn all_groups(&self) -> Result<Vec<ProbeGroup>, StoreError> {
        self.call(|conn| json_rows(conn, "probegroups", "SELECT uuid, body FROM probegroups", []))
            .await
    }

    pub async fn get_group(&self, user: Uuid, uuid: Uuid) -> Result<Option<ProbeGroup>, StoreError> {
        self.read(move |conn| {
            json_row(
                conn,
                "probegroups",
                "SELECT uuid, body FROM probegroups WHERE user = ?1 AND uuid = ?2",
                params![user.to_string(), uuid.to_string()],
            )
        })
        .await
    }

    /// Deletes a group and ungroups its probes (in one commit); returns the
    /// probes that were ungrouped, or `None` if the group did not exist.
    pub async fn delete_group(&self, user: Uuid, uuid: Uuid) -> Result<Option<Vec<Probe>>, StoreError> {
        self.call(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM probegroups WHERE user = ?1 AND uuid = ?2",
                params![user.to_string(), uuid.to_string()],
            )?;
            if deleted == 0 {
                return Ok(None);
            }
            let mut stmt = conn.prepare_cached("SELECT uuid, body FROM probes WHERE user = ?1")?;
            let rows = stmt.query_map(params![user.to_string()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut members = Vec::new();
            for row in rows {
                let (key, body) = row?;
                let mut probe: Probe = stored("probes", &key, &body)?;
                if probe.group == Some(uuid) {
                    probe.group = None;
                    members.push(probe);
                }
            }
            let mut update = conn.prepare_cached("UPDATE probes SET body = ?2 WHERE uuid = ?1")?;
            for probe in &members {
                update.execute(params![probe.uuid.to_string(), serde_json::to_string(probe)?])?;
            }
            Ok(Some(members))
        })
        .await
    }

    // ---- contacts ----

    pub async fn put_contact(&self, user: Uuid, contact: Contact) -> Result<Contact, StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO contacts (user, name, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user, name) DO UPDATE SET body = ?3",
                params![user.to_string(), contact.name, serde_json::to_string(&contact)?],
            )?;
            Ok(contact)
        })
        .await
    }

    /// An account's stored contacts (without the implicit `email`).
    pub async fn list_contacts(&self, user: Uuid) -> Result<Vec<Contact>, StoreError> {
        self.read(move |conn| {
            json_rows(
                conn,
                "contacts",
                "SELECT user || '/' || name, body FROM contacts WHERE user = ?1 ORDER BY name",
                params![user.to_string()],
            )
        })
        .await
    }

    /// Every stored contact, by account.
    pub async fn all_contacts(&self) -> Result<Vec<(Uuid, Contact)>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT user, name, body FROM contacts")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?;
            let mut contacts = Vec::new();
            for row in rows {
                let (user, name, body) = row?;
                let key = format!("{user}/{name}");
                contacts.push((stored_uuid("contacts", &key, &user)?, stored("contacts", &key, &body)?));
            }
            Ok(contacts)
        })
        .await
    }

    pub async fn delete_contact(&self, user: Uuid, name: String) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute(
                "DELETE FROM contacts WHERE user = ?1 AND name = ?2",
                params![user.to_string(), name],
            )? > 0)
        })
        .await
    }

    // ---- machines (the flood guard's view) ----

    /// Records machines' servers and states (latest wins).
    pub async fn put_machines(&self, machines: Vec<MachineRecord>, now: EpochMs) -> Result<(), StoreError> {
        self.call(move |conn| {
            let mut upsert = conn.prepare_cached(
                "INSERT INTO machines (uuid, server, alias, up, seen) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(uuid) DO UPDATE SET server = ?2, alias = COALESCE(?3, alias), up = ?4, seen = ?5",
            )?;
            for m in &machines {
                upsert.execute(params![m.uuid.to_string(), m.server.to_string(), m.alias, m.up, now])?;
            }
            Ok(())
        })
        .await
    }

    pub async fn all_machines(&self) -> Result<Vec<MachineRecord>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT uuid, server, alias, up FROM machines")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })?;
            let mut machines = Vec::new();
            for row in rows {
                let (uuid, server, alias, up) = row?;
                machines.push(MachineRecord {
                    uuid: stored_uuid("machines", &uuid, &uuid)?,
                    server: stored_uuid("machines", &uuid, &server)?,
                    alias,
                    up,
                });
            }
            Ok(machines)
        })
        .await
    }

    // ---- maintenance windows ----

    /// Stores a new window, giving it its owner's next id.
    pub async fn create_window(&self, mut window: MaintenanceWindow) -> Result<MaintenanceWindow, StoreError> {
        self.call(move |conn| {
            let owner = window_owner(window.user);
            let id: i64 = conn.query_row(
                "INSERT INTO maintenance_ids (owner, last_id) VALUES (?1, 1)
                 ON CONFLICT(owner) DO UPDATE SET last_id = last_id + 1 RETURNING last_id",
                params![owner],
                |r| r.get(0),
            )?;
            window.id = id as u64;
            conn.execute(
                "INSERT INTO maintenances (owner, id, body) VALUES (?1, ?2, ?3)",
                params![owner, id, serde_json::to_string(&window)?],
            )?;
            Ok(window)
        })
        .await
    }

    pub async fn delete_window(&self, user: Option<Uuid>, id: u64) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute(
                "DELETE FROM maintenances WHERE owner = ?1 AND id = ?2",
                params![window_owner(user), id as i64],
            )? > 0)
        })
        .await
    }

    /// Every stored window (ended ones are deleted when they end).
    pub async fn all_windows(&self) -> Result<Vec<MaintenanceWindow>, StoreError> {
        self.call(|conn| {
            json_rows(
                conn,
                "maintenances",
                "SELECT owner || '/' || id, body FROM maintenances ORDER BY owner, id",
                [],
            )
        })
        .await
    }

    /// One owner's window: found, gone (ended or deleted), or never issued.
    pub async fn get_window(&self, user: Option<Uuid>, id: u64) -> Result<Lookup<MaintenanceWindow>, StoreError> {
        self.read(move |conn| {
            let owner = window_owner(user);
            if let Some(found) = json_row(
                conn,
                "maintenances",
                "SELECT owner || '/' || id, body FROM maintenances WHERE owner = ?1 AND id = ?2",
                params![owner, id as i64],
            )? {
                return Ok(Lookup::Found(found));
            }
            let last: Option<i64> = conn
                .query_row(
                    "SELECT last_id FROM maintenance_ids WHERE owner = ?1",
                    params![owner],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match last {
                Some(last) if id > 0 && id as i64 <= last => Lookup::Gone,
                _ => Lookup::NotFound,
            })
        })
        .await
    }

    // ---- alarms ----

    /// Issues the account's next alarm id (from 1, never reused).
    pub async fn next_alarm_id(&self, user: Uuid) -> Result<u64, StoreError> {
        self.call(move |conn| {
            let id: i64 = conn.query_row(
                "INSERT INTO alarm_ids (user, last_id) VALUES (?1, 1)
                 ON CONFLICT(user) DO UPDATE SET last_id = last_id + 1 RETURNING last_id",
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
        self.call(move |conn| {
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

    /// Deletes an alarm; its id stays issued, so it answers 410 from now on.
    pub async fn delete_alarm(&self, user: Uuid, id: u64) -> Result<bool, StoreError> {
        self.call(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM alarms WHERE user = ?1 AND id = ?2",
                params![user.to_string(), id as i64],
            )?;
            Ok(deleted > 0)
        })
        .await
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

    /// How many events of each type (`machine`, `probe`, `server`) are
    /// stored (for `amon_events_stored`), from the counts `commit_events`
    /// keeps, not by counting the events. Whatever deletes events lowers
    /// these counts in the same commit (`gc_events` does).
    pub async fn events_stored_by_type(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT type, stored FROM event_counts ORDER BY type")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Every relay the master has heard from: (uuid, hostname, last event,
    /// last seen).
    pub async fn servers(&self) -> Result<Vec<(Uuid, Option<String>, String, EpochMs)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT uuid, hostname, last_event, last_seen FROM servers ORDER BY uuid")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut servers = Vec::new();
            for row in rows {
                let (uuid, hostname, last_event, last_seen) = row?;
                servers.push((stored_uuid("servers", &uuid, &uuid)?, hostname, last_event, last_seen));
            }
            Ok(servers)
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

    // ---- outbox ----

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

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Account, StoreError>> {
    let uuid: String = r.get(0)?;
    let login: String = r.get(1)?;
    let email: String = r.get(2)?;
    let operator: bool = r.get(3)?;
    let attributes: String = r.get(4)?;
    Ok(stored_uuid("accounts", &uuid, &uuid).and_then(|key| {
        Ok(Account {
            uuid: key,
            login,
            email,
            operator,
            attributes: stored("accounts", &uuid, &attributes)?,
        })
    }))
}

/// A uuid column of a stored row, or [`StoreError::Corrupt`] naming the row.
fn stored_uuid(table: &'static str, key: &str, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_string(),
        reason: format!("{text:?} is not a uuid: {e}"),
    })
}

/// A row's JSON body as `T`, checked ([`Stored::check`]), or
/// [`StoreError::Corrupt`] naming the row.
pub(crate) fn stored<T: Stored>(table: &'static str, key: &str, body: &str) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table,
        key: key.to_string(),
        reason,
    };
    let value: T = serde_json::from_str(body).map_err(|e| corrupt(format!("unreadable json body: {e}")))?;
    value.check().map_err(corrupt)?;
    Ok(value)
}

/// What the store keeps as a JSON body: read back only through [`stored`],
/// which refuses a body the model cannot hold (the model then never meets
/// one, e.g. an alarm with neither probe nor group).
pub(crate) trait Stored: serde::de::DeserializeOwned {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Stored for Probe {}
impl Stored for ProbeGroup {}
impl Stored for Contact {}
impl Stored for std::collections::BTreeMap<String, String> {}
impl Stored for MaintenanceWindow {}
impl Stored for Notification {}
impl Stored for crate::model::Event {}

impl Stored for Alarm {
    fn check(&self) -> Result<(), String> {
        match (self.probe, self.probe_group) {
            (None, None) => Err("an alarm with neither probe nor probe group".into()),
            _ => Ok(()),
        }
    }
}

/// A row's key (its first column) as text, whatever its SQLite type.
fn key_text(r: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
    key_text_at(r, 0)
}

fn key_text_at(r: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<String> {
    Ok(match r.get::<_, rusqlite::types::Value>(column)? {
        rusqlite::types::Value::Integer(n) => n.to_string(),
        rusqlite::types::Value::Text(t) => t,
        other => format!("{other:?}"),
    })
}

/// Runs a query for at most one row of `table` whose columns are its key
/// (for the error that names a corrupt row) and its JSON body.
fn json_row<T: Stored>(
    conn: &Connection,
    table: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<T>, StoreError> {
    let row: Option<(String, String)> = conn
        .prepare_cached(sql)?
        .query_row(params, |r| Ok((key_text(r)?, r.get(1)?)))
        .optional()?;
    row.map(|(key, body)| stored(table, &key, &body)).transpose()
}

/// Runs a query of `table` whose columns are a key and a JSON body, and
/// parses every row.
fn json_rows<T: Stored>(
    conn: &Connection,
    table: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| Ok((key_text(r)?, r.get::<_, String>(1)?)))?;
    rows.map(|row| {
        let (key, body) = row?;
        stored(table, &key, &body)
    })
    .collect()
}

fn window_owner(user: Option<Uuid>) -> String {
    user.map(|u| u.to_string()).unwrap_or_else(|| "operator".into())
}

fn monitor_column(key: &MonitorKey) -> String {
    match key {
        MonitorKey::Probe { user, probe } => format!("{user}/probe/{probe}"),
        MonitorKey::ProbeGroup { user, group } => format!("{user}/group/{group}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, MachineEvent, ProbeEvent, ProbeEventData, ProbeType, ServerEvent, ServerEventKind};

    fn machine_event(uuid: Uuid) -> Event {
        Event::Machine(MachineEvent {
            v: crate::model::EVENT_VERSION,
            uuid,
            time: 1_000,
            relay: Uuid::nil(),
            machine: Uuid::nil(),
            alias: None,
            owner: None,
            server: Uuid::nil(),
            old_state: Some("running".into()),
            new_state: "shutting_down".into(),
            up: false,
        })
    }

    fn server_event(uuid: Uuid) -> Event {
        Event::Server(ServerEvent {
            v: crate::model::EVENT_VERSION,
            uuid,
            time: 1_000,
            relay: Uuid::nil(),
            server: Uuid::nil(),
            event: ServerEventKind::Heartbeat,
            hostname: None,
        })
    }

    fn probe_event(uuid: Uuid) -> Event {
        Event::Probe(ProbeEvent {
            v: 1,
            user: Uuid::nil(),
            probe_uuid: Uuid::nil(),
            clear: false,
            data: ProbeEventData {
                message: "disk full".into(),
                value: None,
                details: None,
            },
            machine: None,
            uuid,
            time: 1_000,
            agent: None,
            agent_alias: None,
            relay: None,
        })
    }

    #[tokio::test]
    async fn an_unreadable_uuid_is_an_error_naming_the_table_and_row() {
        let store = Store::in_memory().unwrap();
        store
            .call(|conn| {
                conn.execute(
                    "INSERT INTO accounts (uuid, login, email, created) VALUES ('not-a-uuid', 'mallory', 'm@example.com', 0)",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store.get_account("mallory".into()).await.unwrap_err();
        match &err {
            StoreError::Corrupt { table, key, reason } => {
                assert_eq!((*table, key.as_str()), ("accounts", "not-a-uuid"));
                assert!(reason.contains("is not a uuid"), "{reason}");
            }
            other => panic!("expected a corrupt row, got {other}"),
        }
        assert!(store.all_accounts().await.is_err(), "never the nil uuid");
    }

    #[tokio::test]
    async fn an_alarm_with_neither_probe_nor_group_is_refused_as_corrupt() {
        let store = Store::in_memory().unwrap();
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
            assert_eq!(json["type"], events::event_type(&event), "{json}");
        }
    }

    #[actix_rt::test]
    async fn stored_events_are_counted_by_type_and_second_copies_are_not() {
        let store = Store::in_memory().unwrap();
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
                    params![
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
    async fn a_second_copy_of_an_event_uuid_is_dropped() {
        let store = Store::in_memory().unwrap();
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

    #[actix_rt::test]
    async fn events_after_the_route_mark_are_replayed_in_order() {
        let store = Store::in_memory().unwrap();
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
        let store = Store::in_memory().unwrap();
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
        let store = Store::in_memory().unwrap();
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

    #[actix_rt::test]
    async fn alarm_ids_count_from_one_per_account_and_deleted_ids_are_gone() {
        let store = Store::in_memory().unwrap();
        let alice = Uuid::new_v4();
        let bob = Uuid::new_v4();
        assert_eq!(store.next_alarm_id(alice).await.unwrap(), 1);
        assert_eq!(store.next_alarm_id(alice).await.unwrap(), 2);
        assert_eq!(store.next_alarm_id(bob).await.unwrap(), 1);
        assert_eq!(store.get_alarm(alice, 2).await.unwrap(), AlarmLookup::Gone);
        assert_eq!(store.get_alarm(alice, 3).await.unwrap(), AlarmLookup::NotFound);
    }

    #[actix_rt::test]
    async fn accounts_are_found_by_uuid_or_login_and_unique() {
        let store = Store::in_memory().unwrap();
        let account = Account {
            uuid: Uuid::new_v4(),
            login: "alice".into(),
            email: "alice@example.com".into(),
            operator: false,
            attributes: [("pagerdutyemail".to_string(), "pd@example.com".to_string())].into(),
        };
        store.create_account(account.clone(), 0).await.unwrap();
        assert_eq!(store.get_account("alice".into()).await.unwrap(), Some(account.clone()));
        assert_eq!(
            store.get_account(account.uuid.to_string()).await.unwrap(),
            Some(account.clone())
        );
        assert!(matches!(
            store.create_account(account, 0).await,
            Err(StoreError::Conflict(_))
        ));
    }

    #[actix_rt::test]
    async fn probes_round_trip() {
        let store = Store::in_memory().unwrap();
        let user = Uuid::new_v4();
        let probe = Probe {
            uuid: Uuid::new_v4(),
            name: Some("web0 up".into()),
            user,
            probe_type: ProbeType::MachineUp,
            agent: None,
            machine: Some(Uuid::new_v4()),
            config: serde_json::Value::Null,
            contacts: vec!["email".into()],
            group: None,
            group_events: true,
            disabled: false,
            hold: None,
            renotify: None,
        };
        store.put_probe(probe.clone()).await.unwrap();
        assert_eq!(store.list_probes(user).await.unwrap(), vec![probe.clone()]);
        assert_eq!(store.get_probe(user, probe.uuid).await.unwrap(), Some(probe));
    }

    fn machine_up(user: Uuid, uuid: Uuid, agent: Option<Uuid>) -> Probe {
        Probe {
            uuid,
            name: None,
            user,
            probe_type: ProbeType::MachineUp,
            agent,
            machine: agent,
            config: serde_json::Value::Null,
            contacts: vec!["email".into()],
            group: None,
            group_events: true,
            disabled: false,
            hold: None,
            renotify: None,
        }
    }

    #[actix_rt::test]
    async fn probes_for_an_agent_span_accounts_in_uuid_order() {
        let store = Store::in_memory().unwrap();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let agent = Uuid::new_v4();
        let later = machine_up(alice, Uuid::from_u128(3), Some(agent));
        let earlier = machine_up(bob, Uuid::from_u128(1), Some(agent));
        store.put_probe(later.clone()).await.unwrap();
        store.put_probe(earlier.clone()).await.unwrap();
        store
            .put_probe(machine_up(alice, Uuid::from_u128(2), Some(Uuid::new_v4())))
            .await
            .unwrap();
        assert_eq!(
            store.probes_for_agent(agent).await.unwrap(),
            vec![earlier.clone(), later.clone()]
        );

        // Moving a probe to another agent moves it out of the answer.
        let moved = machine_up(alice, later.uuid, Some(Uuid::new_v4()));
        store.put_probe(moved).await.unwrap();
        assert_eq!(store.probes_for_agent(agent).await.unwrap(), vec![earlier]);
    }

    #[actix_rt::test]
    async fn the_agent_column_is_backfilled_from_probes_stored_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amon.sqlite");
        let agent = Uuid::new_v4();
        let probe = machine_up(Uuid::new_v4(), Uuid::new_v4(), Some(agent));
        {
            // A database as schema version 2 left it.
            drop(Db::open(&path, &schema::MASTER[..2]).unwrap());
            let conn = Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO probes (uuid, user, machine, body) VALUES (?1, ?2, ?3, ?4)",
                params![
                    probe.uuid.to_string(),
                    probe.user.to_string(),
                    agent.to_string(),
                    serde_json::to_string(&probe).unwrap()
                ],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.probes_for_agent(agent).await.unwrap(), vec![probe]);
    }

    #[test]
    fn migrations_apply_once_and_record_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amon.sqlite");
        drop(Store::open(&path).unwrap());
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version as usize, schema::MASTER.len());
    }

    /// A copy of a fixture written by an earlier release
    /// (`tests/fixtures/<commit>/<name>`, see `make-040829a.sh` there) in
    /// a temporary directory, so opening it (which migrates it) leaves the
    /// committed file alone.
    pub(crate) fn fixture_copy(commit: &str, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(commit)
            .join(name);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::copy(&from, &path).unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
        (dir, path)
    }

    fn user_version(path: &Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
    }

    #[actix_rt::test]
    async fn a_database_of_release_040829a_is_migrated_to_the_current_version_with_its_rows() {
        let (_dir, path) = fixture_copy("040829a", "amon.sqlite");
        assert_eq!(user_version(&path), 6, "the last release wrote schema version 6");
        let store = Store::open(&path).unwrap();
        let logins: Vec<String> = store
            .all_accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.login)
            .collect();
        assert_eq!(logins.len(), 2, "{logins:?}");
        assert!(
            store
                .all_accounts()
                .await
                .unwrap()
                .iter()
                .all(|a| a.attributes.is_empty()),
            "accounts of before version 9 have no attributes"
        );
        assert_eq!(store.all_probes().await.unwrap().len(), 3);
        assert_eq!(store.all_groups().await.unwrap().len(), 2);
        assert_eq!(store.all_contacts().await.unwrap().len(), 3);
        assert_eq!(store.all_windows().await.unwrap().len(), 2);
        assert_eq!(store.open_alarm_count().await.unwrap(), 2);
        assert!(
            !store.pending_deliveries().await.unwrap().is_empty(),
            "the webhook delivery that kept failing is still pending"
        );
        drop(store);
        assert_eq!(user_version(&path), MASTER_SCHEMA_VERSION as i64);
    }
}
