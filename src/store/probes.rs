//! Probes and probe groups: what each account watches. A probe's agent
//! has its own indexed column, because relays ask for every probe of an
//! agent (`GET|HEAD /agentprobes`); deleting a group ungroups its probes in
//! the same commit.

use super::sql::params;
use uuid::Uuid;

use super::{json_row, json_rows, stored, Store, StoreError};
use crate::model::{Probe, ProbeGroup};

impl Store {
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
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::{schema, Db};
    use super::*;
    use crate::model::ProbeType;

    #[actix_rt::test]
    async fn probes_round_trip() {
        let store = Store::for_test();
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
        let store = Store::for_test();
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
                rusqlite::params![
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
}
