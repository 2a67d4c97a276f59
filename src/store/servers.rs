//! Servers and machines: the relays the master has heard from (for `GET
//! /servers`), and the flood guard's view of machines (which server, alias,
//! up or down), kept so a restarted master still knows what a silent server
//! takes down.

use super::sql::params;
use uuid::Uuid;

use super::{stored_uuid, Store, StoreError};
use crate::model::EpochMs;

/// A machine as the flood guard last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineRecord {
    pub uuid: Uuid,
    pub server: Uuid,
    pub alias: Option<String>,
    pub up: bool,
}

impl Store {
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
                 ON CONFLICT(uuid) DO UPDATE SET hostname = COALESCE(?2, servers.hostname), last_event = ?3, last_seen = ?4",
            )?
            .execute(params![server.to_string(), hostname, last_event, seen])?;
            Ok(())
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

    // ---- machines (the flood guard's view) ----

    /// Records machines' servers and states (latest wins).
    pub async fn put_machines(&self, machines: Vec<MachineRecord>, now: EpochMs) -> Result<(), StoreError> {
        self.call(move |conn| {
            let mut upsert = conn.prepare_cached(
                "INSERT INTO machines (uuid, server, alias, up, seen) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(uuid) DO UPDATE SET server = ?2, alias = COALESCE(?3, machines.alias), up = ?4, seen = ?5",
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
}
