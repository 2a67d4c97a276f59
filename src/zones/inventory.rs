//! The relay's inventory: which machines each compute node it watches
//! carries, with alias and owner, as the zone sources told. The relay
//! reports it to the master (`PUT /servers/:server/machines`), which is how
//! the master knows who owns what (tenancy). Pure: the zone dispatcher feeds
//! it and asks what changed since the last report.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::ZoneMeta;
use crate::model::MachineReport;

#[derive(Debug, Default)]
pub struct Inventory {
    /// server → machine → what we know of it.
    servers: BTreeMap<Uuid, BTreeMap<Uuid, MachineReport>>,
    /// machine → its server.
    server_of: HashMap<Uuid, Uuid>,
    /// Servers whose list changed since it was last taken.
    changed: BTreeSet<Uuid>,
}

impl Inventory {
    /// A machine seen on `server`, with whatever metadata came with it (an
    /// alias or owner the report leaves out is kept as it was).
    pub fn saw(&mut self, machine: Uuid, server: Uuid, meta: &ZoneMeta) {
        // What we knew of it on another server (it migrated) moves with it.
        let mut moved = None;
        if let Some(old) = self.server_of.insert(machine, server) {
            if old != server {
                moved = self.servers.get_mut(&old).and_then(|list| list.remove(&machine));
                self.changed.insert(old);
            }
        }
        let list = self.servers.entry(server).or_default();
        let entry = list.entry(machine).or_insert_with(|| {
            self.changed.insert(server);
            moved.unwrap_or(MachineReport {
                uuid: machine,
                alias: None,
                owner: None,
            })
        });
        if meta.alias.is_some() && entry.alias != meta.alias {
            entry.alias = meta.alias.clone();
            self.changed.insert(server);
        }
        if meta.owner.is_some() && entry.owner != meta.owner {
            entry.owner = meta.owner;
            self.changed.insert(server);
        }
    }

    /// New metadata for a machine we know (a listing); unknown ones are
    /// ignored: metadata alone does not make a machine.
    pub fn update(&mut self, machine: Uuid, meta: &ZoneMeta) {
        if let Some(&server) = self.server_of.get(&machine) {
            self.saw(machine, server, meta);
        }
    }

    /// A machine deleted (or gone from its server's listing).
    pub fn forget(&mut self, machine: Uuid) {
        if let Some(server) = self.server_of.remove(&machine) {
            if let Some(list) = self.servers.get_mut(&server) {
                list.remove(&machine);
            }
            self.changed.insert(server);
        }
    }

    /// Each server whose list changed since the last call, with its list
    /// as it is now (possibly empty: everything on it was deleted).
    pub fn take_changed(&mut self) -> Vec<(Uuid, Vec<MachineReport>)> {
        let changed = std::mem::take(&mut self.changed);
        changed.into_iter().map(|server| (server, self.list(server))).collect()
    }

    /// Every server's list, changed or not (a periodic refresh, so a master
    /// restored from a backup catches up).
    pub fn take_all(&mut self) -> Vec<(Uuid, Vec<MachineReport>)> {
        self.changed.clear();
        let servers: Vec<Uuid> = self.servers.keys().copied().collect();
        servers.into_iter().map(|server| (server, self.list(server))).collect()
    }

    fn list(&self, server: Uuid) -> Vec<MachineReport> {
        self.servers
            .get(&server)
            .map(|list| list.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(alias: Option<&str>, owner: Option<Uuid>) -> ZoneMeta {
        ZoneMeta {
            alias: alias.map(String::from),
            owner,
        }
    }

    #[test]
    fn only_what_changed_is_reported_and_a_server_s_list_is_whole() {
        let mut inventory = Inventory::default();
        let (cn1, cn2) = (Uuid::new_v4(), Uuid::new_v4());
        let (web, db) = (Uuid::new_v4(), Uuid::new_v4());
        let alice = Uuid::new_v4();

        inventory.saw(web, cn1, &meta(Some("web0"), Some(alice)));
        inventory.saw(db, cn1, &meta(None, None));
        let reports = inventory.take_changed();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].0, cn1);
        assert_eq!(reports[0].1.len(), 2, "the whole list of the server");
        assert!(inventory.take_changed().is_empty(), "nothing new");

        // A report without metadata keeps what we knew.
        inventory.saw(web, cn1, &meta(None, None));
        assert!(inventory.take_changed().is_empty());
        // The owner changes (a listing).
        let bob = Uuid::new_v4();
        inventory.update(web, &meta(None, Some(bob)));
        let reports = inventory.take_changed();
        let web_now = reports[0].1.iter().find(|m| m.uuid == web).unwrap();
        assert_eq!((web_now.alias.as_deref(), web_now.owner), (Some("web0"), Some(bob)));
        // Metadata of a machine we never saw makes nothing.
        inventory.update(Uuid::new_v4(), &meta(Some("ghost"), Some(bob)));
        assert!(inventory.take_changed().is_empty());

        // web migrates to cn2: both lists are reported.
        inventory.saw(web, cn2, &meta(None, None));
        let reports = inventory.take_changed();
        assert_eq!(reports.iter().map(|r| r.0).collect::<Vec<_>>().len(), 2);
        let cn1_list = &reports.iter().find(|r| r.0 == cn1).unwrap().1;
        assert_eq!(cn1_list.iter().map(|m| m.uuid).collect::<Vec<_>>(), vec![db]);
        let cn2_list = &reports.iter().find(|r| r.0 == cn2).unwrap().1;
        assert_eq!(cn2_list[0].owner, Some(bob), "what we knew moves with it");

        // db deleted: cn1's list is reported empty.
        inventory.forget(db);
        assert_eq!(inventory.take_changed(), vec![(cn1, vec![])]);
        assert_eq!(inventory.take_all().len(), 2);
    }
}
