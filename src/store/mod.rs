//! The store: the only code that knows SQL. The master's [`Store`] (accounts,
//! probes, events, alarms, outbox) and the relay's [`RelayStore`] (spool and
//! last zone states) each sit on a [`Db`]: a database thread with a bounded
//! mailbox and group commit, so nothing blocks an actix arbiter and every
//! answer means "durable". The thread is not an actix actor because group
//! commit needs to drain the mailbox, which an actix `SyncContext` cannot.
//! The master's methods are grouped by table, an `impl Store` block per
//! file (`accounts.rs`, `probes.rs`, `alarms.rs`, `outbox.rs`, …); this file
//! holds `Store` itself and the checked row readers they all share.

mod accounts;
mod alarms;
mod backup;
mod checkpoint;
mod cluster;
mod db;
mod events;
mod gc;
mod inventory;
mod maintenance;
mod outbox;
mod probes;
mod relay;
mod schema;
#[cfg(test)]
mod schema_fixtures;
mod servers;
pub(crate) mod sql;

use std::path::Path;

use sql::{Conn, OptionalExtension, Params};
use uuid::Uuid;

pub use alarms::AlarmLookup;
pub use backup::backup_database;
pub use cluster::{Beat, LeaseRecord, MemberRecord};
pub use db::{redact_url, Db, StoreError};
pub use events::Committed;
pub use inventory::{InventoryRecord, OwnerChange};
pub use outbox::{DeliveryOutcome, DeliveryRecord, OutboxSummary, PendingDelivery};
pub use relay::{RelayStore, ZoneRecord};
pub use servers::MachineRecord;

use crate::activity::Activity;
use crate::model::{Alarm, Contact, MaintenanceWindow, MonitorKey, Probe, ProbeGroup};
use crate::notify::Notification;

/// The master's database file in a data dir.
pub const MASTER_FILE: &str = "amon.sqlite";

/// The master database's schema version this build migrates to.
pub const MASTER_SCHEMA_VERSION: usize = schema::MASTER.len();
/// The relay's database file in a data dir.
pub const RELAY_FILE: &str = "relay.sqlite";

/// What a lookup by a per-owner id can find.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    Found(T),
    /// The id was issued but the thing is deleted, expired or expunged.
    Gone,
    /// The id was never issued.
    NotFound,
}

/// A cheap, cloneable handle to the master's store.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Events and notifications per minute over the last hour, counted
    /// here after each commit (`commit_events`, `record_deliveries`): the
    /// store is where both become true, whoever asked for them.
    activity: Activity,
    /// Grows with every committed change of what the web page shows
    /// (alarms, notifications, maintenance windows), so a page can ask
    /// "anything new?" without reading the tables ([`Store::generation`]).
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// Opens (creating and migrating if needed) the master database.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::open_with_readers(path, schema::MASTER, db::READERS)?,
            activity: Activity::new(),
            generation: Default::default(),
        })
    }

    /// Connects to the master database in PostgreSQL (`url`, in `schema`),
    /// migrating it if needed: a database several masters can share.
    pub fn connect_postgres(url: &str, schema: &str) -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::connect_postgres(url, schema, schema::MASTER_POSTGRES, db::READERS)?,
            activity: Activity::new(),
            generation: Default::default(),
        })
    }

    /// Which engine keeps this store.
    pub fn engine(&self) -> sql::Engine {
        self.db.engine()
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::in_memory(schema::MASTER)?,
            activity: Activity::new(),
            generation: Default::default(),
        })
    }

    /// The last hour's events and notifications, per minute (in memory:
    /// empty again after a restart).
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// How many changes the web page would show have been committed since
    /// the master started: equal readings mean nothing new.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a committed change for [`Store::generation`].
    fn changed<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_ok() {
            self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
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
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.read(f).await
    }
}

#[cfg(test)]
impl Store {
    /// The store a unit test runs on: in memory on SQLite, or with
    /// `AMON_TEST_STORE=postgres` a fresh schema of the PostgreSQL database
    /// at `AMON_TEST_DATABASE_URL` (so `.ci/run` runs the store's tests,
    /// and the actors' on top of it, on both engines).
    pub(crate) fn for_test() -> Store {
        match std::env::var("AMON_TEST_STORE").as_deref() {
            Ok("postgres") => {
                let url = std::env::var("AMON_TEST_DATABASE_URL")
                    .expect("AMON_TEST_STORE=postgres needs AMON_TEST_DATABASE_URL");
                let schema = format!("amon_t_{}", Uuid::new_v4().simple());
                Store::connect_postgres(&url, &schema)
                    .unwrap_or_else(|e| panic!("cannot open a test store in PostgreSQL: {e}"))
            }
            Ok("sqlite") | Err(_) => Store::in_memory().expect("an in-memory store opens"),
            Ok(other) => panic!("AMON_TEST_STORE={other:?}: expected sqlite or postgres"),
        }
    }
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

/// A PostgreSQL schema name Amon accepts (`store.schema`): lower-case
/// letters, digits and `_`, not starting with a digit, at most 63 bytes, so
/// it needs no quoting anywhere.
pub fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A row's key (its first column) as text, whatever its type.
fn key_text(r: &sql::Row) -> Result<String, StoreError> {
    key_text_at(r, 0)
}

fn key_text_at(r: &sql::Row, column: usize) -> Result<String, StoreError> {
    Ok(match r.get::<_, sql::Value>(column)? {
        sql::Value::Int(n) => n.to_string(),
        sql::Value::Text(t) => t,
        other => format!("{other:?}"),
    })
}

/// Runs a query for at most one row of `table` whose columns are its key
/// (for the error that names a corrupt row) and its JSON body.
fn json_row<T: Stored>(
    conn: &Conn,
    table: &'static str,
    sql: &str,
    params: impl Params,
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
    conn: &Conn,
    table: &'static str,
    sql: &str,
    params: impl Params,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| Ok((key_text(r)?, r.get::<_, String>(1)?)))?;
    rows.map(|row| {
        let (key, body) = row?;
        stored(table, &key, &body)
    })
    .collect()
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
    use crate::model::{Event, MachineEvent, ProbeEvent, ProbeEventData, ServerEvent, ServerEventKind};

    pub(super) fn machine_event(uuid: Uuid) -> Event {
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

    pub(super) fn server_event(uuid: Uuid) -> Event {
        Event::Server(ServerEvent {
            v: crate::model::EVENT_VERSION,
            uuid,
            time: 1_000,
            relay: Uuid::nil(),
            server: Uuid::nil(),
            event: ServerEventKind::Heartbeat,
            hostname: None,
            agents: Vec::new(),
        })
    }

    pub(super) fn probe_event(uuid: Uuid) -> Event {
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

    #[test]
    fn migrations_apply_once_and_record_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amon.sqlite");
        drop(Store::open(&path).unwrap());
        drop(Store::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
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

    pub(super) fn user_version(path: &Path) -> usize {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap() as usize
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
        assert_eq!(user_version(&path), MASTER_SCHEMA_VERSION);
    }
}
