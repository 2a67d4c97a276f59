//! The inventory: which machines each compute node carries and who owns
//! them, as relays report them. Tenancy rests on it: an account's probe
//! alarms only on a machine the inventory says it owns (`catalog::may_watch`).

use super::sql::{params, Conn, OptionalExtension};
use uuid::Uuid;

use super::{stored_uuid, Store, StoreError};
use crate::model::{EpochMs, MachineReport};

/// A machine's owner as it changed in the inventory: `None` when it is no
/// longer known (deleted, or reported without an owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerChange {
    pub machine: Uuid,
    pub owner: Option<Uuid>,
}

/// One machine of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRecord {
    pub uuid: Uuid,
    pub server: Uuid,
    pub alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Uuid>,
}

impl Store {
    /// Replaces what the inventory says `server` carries with `machines`: a
    /// machine that moved here from another server moves, one the server no
    /// longer reports is forgotten. Returns the owners that changed.
    pub async fn replace_server_machines(
        &self,
        server: Uuid,
        machines: Vec<MachineReport>,
        now: EpochMs,
    ) -> Result<Vec<OwnerChange>, StoreError> {
        self.call(move |conn| replace_server_machines(conn, server, &machines, now))
            .await
    }

    /// Records owners that machine events carried, where they differ from
    /// the inventory (a relay that does not report its machines, or one
    /// reporting a change before its next report). Returns what changed.
    pub async fn learn_owners(
        &self,
        seen: Vec<(Uuid, Uuid, Uuid, Option<String>)>,
        now: EpochMs,
    ) -> Result<Vec<OwnerChange>, StoreError> {
        self.call(move |conn| {
            let mut changed = Vec::new();
            let mut upsert = conn.prepare_cached(
                "INSERT INTO inventory (machine, server, owner, alias, updated) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(machine) DO UPDATE SET server = ?2, owner = ?3, alias = COALESCE(?4, inventory.alias), updated = ?5
                 WHERE inventory.owner IS DISTINCT FROM ?3",
            )?;
            for (machine, server, owner, alias) in &seen {
                let n = upsert.execute(params![
                    machine.to_string(),
                    server.to_string(),
                    owner.to_string(),
                    alias,
                    now
                ])?;
                if n > 0 {
                    changed.push(OwnerChange {
                        machine: *machine,
                        owner: Some(*owner),
                    });
                }
            }
            Ok(changed)
        })
        .await
    }

    /// Every machine with a known owner: the catalog's view at start.
    pub async fn machine_owners(&self) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT machine, owner FROM inventory WHERE owner IS NOT NULL")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut owners = Vec::new();
            for row in rows {
                let (machine, owner) = row?;
                owners.push((
                    stored_uuid("inventory", &machine, &machine)?,
                    stored_uuid("inventory", &machine, &owner)?,
                ));
            }
            Ok(owners)
        })
        .await
    }

    /// One machine as the inventory has it.
    pub async fn inventory_machine(&self, machine: Uuid) -> Result<Option<InventoryRecord>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT machine, server, alias, owner FROM inventory WHERE machine = ?1",
                    params![machine.to_string()],
                    inventory_row,
                )
                .optional()?;
            row.transpose()
        })
        .await
    }

    /// The machines an account owns, by uuid.
    pub async fn machines_of(&self, owner: Uuid) -> Result<Vec<InventoryRecord>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT machine, server, alias, owner FROM inventory WHERE owner = ?1 ORDER BY machine",
            )?;
            let rows = stmt.query_map(params![owner.to_string()], inventory_row)?;
            rows.map(|row| row?).collect()
        })
        .await
    }

    /// Whether `uuid` is a compute node: a relay's server, or a server the
    /// inventory has machines on.
    pub async fn is_compute_node(&self, uuid: Uuid) -> Result<bool, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM servers WHERE uuid = ?1)
                         OR EXISTS (SELECT 1 FROM inventory WHERE server = ?1)",
                params![uuid.to_string()],
                |r| r.get::<_, bool>(0),
            )
        })
        .await
    }
}

fn inventory_row(r: &super::sql::Row) -> Result<Result<InventoryRecord, StoreError>, StoreError> {
    let machine: String = r.get(0)?;
    let server: String = r.get(1)?;
    let alias: Option<String> = r.get(2)?;
    let owner: Option<String> = r.get(3)?;
    Ok((|| {
        Ok(InventoryRecord {
            uuid: stored_uuid("inventory", &machine, &machine)?,
            server: stored_uuid("inventory", &machine, &server)?,
            alias,
            owner: owner.map(|o| stored_uuid("inventory", &machine, &o)).transpose()?,
        })
    })())
}

fn replace_server_machines(
    tx: &Conn,
    server: Uuid,
    machines: &[MachineReport],
    now: EpochMs,
) -> Result<Vec<OwnerChange>, StoreError> {
    // The store thread runs every call inside its group's transaction.
    let server_text = server.to_string();
    let mut changed = Vec::new();
    {
        // What the server carried before, with owners.
        let mut before = std::collections::HashMap::new();
        let mut stmt = tx.prepare_cached("SELECT machine, owner FROM inventory WHERE server = ?1")?;
        let rows = stmt.query_map(params![server_text], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        for row in rows {
            let (machine, owner) = row?;
            before.insert(machine, owner);
        }
        let mut owner_of = tx.prepare_cached("SELECT owner FROM inventory WHERE machine = ?1")?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO inventory (machine, server, owner, alias, updated) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(machine) DO UPDATE SET server = ?2, owner = ?3, alias = ?4, updated = ?5",
        )?;
        for report in machines {
            let machine = report.uuid.to_string();
            let owner = report.owner.map(|o| o.to_string());
            let old: Option<Option<String>> = match before.remove(&machine) {
                Some(old) => Some(old),
                // Perhaps on another server until now.
                None => owner_of.query_row(params![machine], |r| r.get(0)).optional()?,
            };
            if old.as_ref() != Some(&owner) {
                changed.push(OwnerChange {
                    machine: report.uuid,
                    owner: report.owner,
                });
            }
            upsert.execute(params![machine, server_text, owner, report.alias, now])?;
        }
        // What the server no longer carries.
        let mut delete = tx.prepare_cached("DELETE FROM inventory WHERE machine = ?1 AND server = ?2")?;
        for (machine, owner) in before {
            delete.execute(params![machine, server_text])?;
            if owner.is_some() {
                changed.push(OwnerChange {
                    machine: stored_uuid("inventory", &machine, &machine)?,
                    owner: None,
                });
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(uuid: Uuid, owner: Option<Uuid>) -> MachineReport {
        MachineReport {
            uuid,
            alias: Some("web0".into()),
            owner,
        }
    }

    #[tokio::test]
    async fn a_server_report_replaces_what_it_carried_and_says_which_owners_changed() {
        let store = Store::for_test();
        let (cn1, cn2) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (web, db, cache) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

        let changed = store
            .replace_server_machines(cn1, vec![report(web, Some(a)), report(db, None)], 1)
            .await
            .unwrap();
        assert_eq!(
            changed,
            vec![
                OwnerChange {
                    machine: web,
                    owner: Some(a)
                },
                OwnerChange {
                    machine: db,
                    owner: None
                }
            ]
        );
        // The same report again changes nothing.
        let changed = store
            .replace_server_machines(cn1, vec![report(web, Some(a)), report(db, None)], 2)
            .await
            .unwrap();
        assert!(changed.is_empty(), "{changed:?}");

        // web moves to b; db is gone; cache is new and unowned.
        let changed = store
            .replace_server_machines(cn1, vec![report(web, Some(b)), report(cache, None)], 3)
            .await
            .unwrap();
        assert!(
            changed.contains(&OwnerChange {
                machine: web,
                owner: Some(b)
            }),
            "{changed:?}"
        );
        assert!(store.inventory_machine(db).await.unwrap().is_none());
        assert_eq!(store.machine_owners().await.unwrap(), vec![(web, b)]);

        // web migrates to cn2 with the same owner: no owner change, and cn1's
        // next report (without it) does not forget it.
        let changed = store
            .replace_server_machines(cn2, vec![report(web, Some(b))], 4)
            .await
            .unwrap();
        assert!(changed.is_empty(), "{changed:?}");
        store
            .replace_server_machines(cn1, vec![report(cache, None)], 5)
            .await
            .unwrap();
        let web_now = store.inventory_machine(web).await.unwrap().expect("web still known");
        assert_eq!((web_now.server, web_now.owner), (cn2, Some(b)));
        assert_eq!(store.machines_of(b).await.unwrap().len(), 1);
        assert!(store.is_compute_node(cn2).await.unwrap());
        assert!(!store.is_compute_node(web).await.unwrap());

        // Learning from an event: only a different owner is a change.
        let changed = store.learn_owners(vec![(web, cn2, b, None)], 6).await.unwrap();
        assert!(changed.is_empty());
        let changed = store.learn_owners(vec![(web, cn2, a, None)], 7).await.unwrap();
        assert_eq!(
            changed,
            vec![OwnerChange {
                machine: web,
                owner: Some(a)
            }]
        );
    }
}
