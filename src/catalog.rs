//! The catalog: accounts with their contacts, probes and probe groups as the
//! master knows them now, indexed for routing. Pure: the router keeps it up
//! to date and asks it which monitors an event concerns ([`Catalog::targets`]);
//! the alarm shards read it to start a monitor's actor with its members.
//! Shared as [`SharedCatalog`]: one writer (the router), many readers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::model::{
    Account, AccountBook, Contact, Event, MachineEvent, MonitorKey, Probe, ProbeEvent, ProbeEventData, ProbeGroup,
    ProbeType,
};

/// The catalog behind a lock: the router writes, shards read.
pub type SharedCatalog = Arc<RwLock<Catalog>>;

/// One probe event for one monitor's actor.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: MonitorKey,
    pub probe: Arc<Probe>,
    /// The probe's group, when the monitor is one.
    pub group: Option<Arc<ProbeGroup>>,
    pub event: ProbeEvent,
}

/// Someone watching a machine: an enabled machine-up probe on it, with its
/// account (for the flood guard's per-contact messages).
#[derive(Debug, Clone)]
pub struct Watcher {
    pub machine: Uuid,
    pub probe: Arc<Probe>,
    /// The probe's group: its contacts replace the probe's.
    pub group: Option<Arc<ProbeGroup>>,
    pub book: Arc<AccountBook>,
}

#[derive(Debug, Default)]
pub struct Catalog {
    accounts: HashMap<Uuid, Arc<AccountBook>>,
    probes: HashMap<Uuid, Arc<Probe>>,
    groups: HashMap<Uuid, Arc<ProbeGroup>>,
    /// machine uuid → machine-up probes watching it.
    by_machine: HashMap<Uuid, Vec<Uuid>>,
    /// group uuid → its member probes.
    by_group: HashMap<Uuid, Vec<Uuid>>,
    /// machine uuid → its owner, as relays reported it (tenancy).
    owners: HashMap<Uuid, Uuid>,
}

impl Catalog {
    /// A catalog of what the store holds.
    pub fn load(
        accounts: Vec<Account>,
        contacts: Vec<(Uuid, Contact)>,
        groups: Vec<ProbeGroup>,
        probes: Vec<Probe>,
    ) -> Catalog {
        let mut books: HashMap<Uuid, AccountBook> = accounts
            .into_iter()
            .map(|account| {
                (
                    account.uuid,
                    AccountBook {
                        account,
                        contacts: HashMap::new(),
                    },
                )
            })
            .collect();
        for (user, contact) in contacts {
            if let Some(book) = books.get_mut(&user) {
                book.contacts.insert(contact.name.clone(), contact);
            }
        }
        let mut catalog = Catalog {
            accounts: books.into_iter().map(|(uuid, book)| (uuid, Arc::new(book))).collect(),
            groups: groups.into_iter().map(|g| (g.uuid, Arc::new(g))).collect(),
            ..Catalog::default()
        };
        for probe in probes {
            catalog.put_probe(probe);
        }
        catalog
    }

    /// Records who owns a machine now (`None`: nobody known: deleted, or
    /// reported without an owner).
    pub fn set_owner(&mut self, machine: Uuid, owner: Option<Uuid>) {
        match owner {
            Some(owner) => self.owners.insert(machine, owner),
            None => self.owners.remove(&machine),
        };
    }

    /// Takes the owner a machine event carries (relays know it from vmadm or
    /// the zone listing); true when that changed what the catalog knew, so
    /// the caller records it.
    pub fn learn_owner(&mut self, event: &MachineEvent) -> bool {
        match event.owner {
            Some(owner) => self.owners.insert(event.machine, owner) != Some(owner),
            None => false,
        }
    }

    /// The machine's owner, as the catalog knows it.
    pub fn owner_of(&self, machine: Uuid) -> Option<Uuid> {
        self.owners.get(&machine).copied()
    }

    /// Whether `book`'s probes may hear of `machine` (SPEC §5, tenancy): an
    /// operator's may watch anything, another account's only a machine it
    /// owns now. A machine whose owner nobody reported is nobody's.
    fn may_watch(&self, book: &AccountBook, machine: Uuid) -> bool {
        book.account.operator || self.owners.get(&machine) == Some(&book.account.uuid)
    }

    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    pub fn probes(&self) -> usize {
        self.probes.len()
    }

    pub fn book(&self, user: Uuid) -> Option<Arc<AccountBook>> {
        self.accounts.get(&user).cloned()
    }

    /// The probes (and group) of a monitor, as they are now.
    pub fn members_of(&self, key: MonitorKey) -> (Vec<Arc<Probe>>, Option<Arc<ProbeGroup>>) {
        match key {
            MonitorKey::Probe { probe, .. } => (self.probes.get(&probe).cloned().into_iter().collect(), None),
            MonitorKey::ProbeGroup { group, .. } => (
                self.by_group
                    .get(&group)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| self.probes.get(p).cloned())
                    .collect(),
                self.groups.get(&group).cloned(),
            ),
        }
    }

    /// A probe as the catalog knows it now.
    pub fn probe(&self, uuid: Uuid) -> Option<Arc<Probe>> {
        self.probes.get(&uuid).cloned()
    }

    /// Every agent that has probes to run (enabled, of a type an agent runs,
    /// not in a disabled group), with those probes: whom the missing-data
    /// watch expects to hear from.
    pub fn agent_probes(&self) -> std::collections::BTreeMap<Uuid, Vec<Arc<Probe>>> {
        let mut agents: std::collections::BTreeMap<Uuid, Vec<Arc<Probe>>> = Default::default();
        for probe in self.probes.values() {
            let group_disabled = probe
                .group
                .and_then(|g| self.groups.get(&g))
                .is_some_and(|g| g.disabled);
            if probe.disabled || group_disabled || !probe.probe_type.runs_in_agent() {
                continue;
            }
            if let Some(agent) = probe.agent {
                agents.entry(agent).or_default().push(probe.clone());
            }
        }
        for probes in agents.values_mut() {
            probes.sort_by_key(|p| p.uuid);
        }
        agents
    }

    /// Forgets a probe; returns its last definition.
    pub fn remove_probe(&mut self, uuid: Uuid) -> Option<Arc<Probe>> {
        let old = self.probes.remove(&uuid)?;
        if let Some(list) = old.machine.and_then(|m| self.by_machine.get_mut(&m)) {
            list.retain(|p| *p != uuid);
        }
        if let Some(list) = old.group.and_then(|g| self.by_group.get_mut(&g)) {
            list.retain(|p| *p != uuid);
        }
        Some(old)
    }

    /// Adds or replaces a probe.
    pub fn put_probe(&mut self, probe: Probe) {
        self.remove_probe(probe.uuid);
        if probe.probe_type == ProbeType::MachineUp {
            if let Some(machine) = probe.machine {
                self.by_machine.entry(machine).or_default().push(probe.uuid);
            }
        }
        if let Some(group) = probe.group {
            self.by_group.entry(group).or_default().push(probe.uuid);
        }
        self.probes.insert(probe.uuid, Arc::new(probe));
    }

    pub fn put_group(&mut self, group: ProbeGroup) {
        self.groups.insert(group.uuid, Arc::new(group));
    }

    /// Forgets a group; its probes (given as they are now, ungrouped) are
    /// put back.
    pub fn remove_group(&mut self, group: Uuid, ungrouped: Vec<Probe>) {
        self.groups.remove(&group);
        for probe in ungrouped {
            self.put_probe(probe);
        }
        self.by_group.remove(&group);
    }

    /// Replaces an account, keeping its contacts; returns the new book.
    pub fn put_account(&mut self, account: Account) -> Arc<AccountBook> {
        let contacts = self
            .accounts
            .get(&account.uuid)
            .map(|b| b.contacts.clone())
            .unwrap_or_default();
        let book = Arc::new(AccountBook { account, contacts });
        self.accounts.insert(book.account.uuid, book.clone());
        book
    }

    /// Replaces an account's contacts; the new book, if the account exists.
    pub fn put_contacts(&mut self, user: Uuid, contacts: Vec<Contact>) -> Option<Arc<AccountBook>> {
        let account = self.accounts.get(&user)?.account.clone();
        let contacts = contacts.into_iter().map(|c| (c.name.clone(), c)).collect();
        let book = Arc::new(AccountBook { account, contacts });
        self.accounts.insert(user, book.clone());
        Some(book)
    }

    /// Which monitors an event concerns, with the probe event each gets: a
    /// machine event goes to every enabled machine-up probe on the machine,
    /// a probe event to its probe. Disabled probes and groups, unknown
    /// probes and accounts get nothing (`dropped` counts what was lost to
    /// an unknown probe or account).
    pub fn targets(&self, event: &Event, out: &mut Vec<Target>) -> Dropped {
        match event {
            Event::Machine(m) => {
                let mut dropped = Dropped::None;
                for probe in self.by_machine.get(&m.machine).into_iter().flatten() {
                    let Some(probe) = self.probes.get(probe) else { continue };
                    if let Some(book) = self.accounts.get(&probe.user) {
                        if !self.may_watch(book, m.machine) {
                            continue;
                        }
                    }
                    dropped = dropped.or(self.target(probe, machine_probe_event(m, probe), out));
                }
                dropped
            }
            Event::Probe(p) => match self.probes.get(&p.probe_uuid) {
                Some(probe) if probe.user == p.user => self.target(probe, p.clone(), out),
                _ => Dropped::UnknownProbe,
            },
            Event::Server(_) => Dropped::None,
        }
    }

    fn target(&self, probe: &Arc<Probe>, event: ProbeEvent, out: &mut Vec<Target>) -> Dropped {
        if probe.disabled {
            return Dropped::None;
        }
        let group = match probe.group {
            Some(uuid) => match self.groups.get(&uuid) {
                Some(group) if group.disabled => return Dropped::None,
                Some(group) => Some(group.clone()),
                // A group deleted under us: its probes were ungrouped.
                None => None,
            },
            None => None,
        };
        if !self.accounts.contains_key(&probe.user) {
            return Dropped::UnknownAccount;
        }
        out.push(Target {
            key: MonitorKey::of(probe),
            probe: probe.clone(),
            group,
            event,
        });
        Dropped::None
    }

    /// Who watches these machines (enabled machine-up probes).
    pub fn watchers(&self, machines: &[Uuid]) -> Vec<Watcher> {
        let mut watchers = Vec::new();
        for &machine in machines {
            for uuid in self.by_machine.get(&machine).into_iter().flatten() {
                let Some(probe) = self.probes.get(uuid) else { continue };
                let Some(book) = self.accounts.get(&probe.user) else {
                    continue;
                };
                if !self.may_watch(book, machine) {
                    continue;
                }
                let group = probe.group.and_then(|g| self.groups.get(&g)).cloned();
                if !probe.disabled && !group.as_ref().is_some_and(|g| g.disabled) {
                    watchers.push(Watcher {
                        machine,
                        probe: probe.clone(),
                        group,
                        book: book.clone(),
                    });
                }
            }
        }
        watchers
    }
}

/// Why an event (or part of it) reached no monitor, when that is worth a
/// warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    None,
    UnknownProbe,
    UnknownAccount,
}

impl Dropped {
    fn or(self, other: Dropped) -> Dropped {
        if self == Dropped::None {
            other
        } else {
            self
        }
    }
}

/// The probe event a machine event makes for a machine-up probe.
fn machine_probe_event(m: &MachineEvent, probe: &Probe) -> ProbeEvent {
    let message = if m.up {
        format!("Machine \"{}\" has come up.", m.machine)
    } else {
        format!("Machine \"{}\" has gone down.", m.machine)
    };
    ProbeEvent {
        v: 1,
        user: probe.user,
        probe_uuid: probe.uuid,
        clear: m.up,
        data: ProbeEventData {
            message,
            value: None,
            details: Some(serde_json::json!({
                "machine": m.machine,
                "oldState": m.old_state,
                "newState": m.new_state,
            })),
        },
        machine: Some(m.machine),
        uuid: m.uuid,
        time: m.time,
        agent: Some(m.server),
        agent_alias: m.alias.clone(),
        relay: Some(m.relay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            uuid: Uuid::new_v4(),
            login: "alice".into(),
            email: "alice@example.com".into(),
            operator: false,
            attributes: Default::default(),
        }
    }

    fn probe(user: Uuid, machine: Uuid, group: Option<Uuid>) -> Probe {
        serde_json::from_value(serde_json::json!({
            "uuid": Uuid::new_v4(),
            "user": user,
            "type": "machine-up",
            "agent": machine,
            "machine": machine,
            "contacts": ["email"],
            "group": group,
            "groupEvents": true,
            "disabled": false,
            "name": null,
        }))
        .unwrap()
    }

    fn group(user: Uuid) -> ProbeGroup {
        serde_json::from_value(serde_json::json!({
            "uuid": Uuid::new_v4(), "user": user, "name": "web", "contacts": ["email"], "disabled": false,
        }))
        .unwrap()
    }

    #[test]
    fn agent_probes_are_the_enabled_agent_types_outside_disabled_groups() {
        let alice = account();
        let (agent, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut off = group(alice.uuid);
        off.disabled = true;
        let of_type = |probe_type: ProbeType, agent: Uuid| Probe {
            probe_type,
            config: serde_json::json!({}),
            ..probe(alice.uuid, agent, None)
        };
        let runs = of_type(ProbeType::Cmd, agent);
        let also = of_type(ProbeType::Http, agent);
        let disabled = Probe {
            disabled: true,
            ..of_type(ProbeType::LogScan, agent)
        };
        let in_off_group = Probe {
            group: Some(off.uuid),
            ..of_type(ProbeType::DiskUsage, agent)
        };
        let machine_up = probe(alice.uuid, agent, None);
        let elsewhere = of_type(ProbeType::Icmp, other);
        let catalog = Catalog::load(
            vec![alice],
            vec![],
            vec![off],
            vec![
                runs.clone(),
                also.clone(),
                disabled,
                in_off_group,
                machine_up,
                elsewhere.clone(),
            ],
        );
        let agents = catalog.agent_probes();
        let mut expected = vec![runs.uuid, also.uuid];
        expected.sort();
        let got: Vec<Uuid> = agents[&agent].iter().map(|p| p.uuid).collect();
        assert_eq!(got, expected);
        let got: Vec<Uuid> = agents[&other].iter().map(|p| p.uuid).collect();
        assert_eq!(got, [elsewhere.uuid]);
        assert_eq!(agents.len(), 2);
        assert_eq!(catalog.probe(runs.uuid).map(|p| p.uuid), Some(runs.uuid));
    }

    fn machine_event(machine: Uuid, up: bool) -> Event {
        serde_json::from_value(serde_json::json!({
            "type": "machine", "v": 1, "uuid": Uuid::new_v4(), "time": 1,
            "relay": Uuid::new_v4(), "server": Uuid::new_v4(), "machine": machine,
            "up": up, "oldState": "running", "newState": "stopped",
        }))
        .unwrap()
    }

    #[test]
    fn a_machine_event_goes_to_every_monitor_watching_the_machine() {
        let alice = account();
        let machine = Uuid::new_v4();
        let web = group(alice.uuid);
        let grouped = probe(alice.uuid, machine, Some(web.uuid));
        let alone = probe(alice.uuid, machine, None);
        let elsewhere = probe(alice.uuid, Uuid::new_v4(), None);
        let catalog = Catalog::load(
            vec![alice.clone()],
            vec![],
            vec![web.clone()],
            vec![grouped.clone(), alone.clone(), elsewhere],
        );
        let mut catalog = catalog;
        catalog.set_owner(machine, Some(alice.uuid));
        let mut out = Vec::new();
        assert_eq!(catalog.targets(&machine_event(machine, false), &mut out), Dropped::None);
        let mut keys: Vec<MonitorKey> = out.iter().map(|t| t.key).collect();
        keys.sort_by_key(|k| format!("{k:?}"));
        let mut expected = vec![MonitorKey::of(&grouped), MonitorKey::of(&alone)];
        expected.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(keys, expected);
        assert!(out.iter().all(|t| !t.event.clear && t.event.machine == Some(machine)));
        let (members, g) = catalog.members_of(MonitorKey::of(&grouped));
        assert_eq!(members.len(), 1);
        assert_eq!(g.map(|g| g.uuid), Some(web.uuid));
    }

    #[test]
    fn disabled_probes_and_unknown_accounts_get_nothing() {
        let alice = account();
        let machine = Uuid::new_v4();
        let mut disabled = probe(alice.uuid, machine, None);
        disabled.disabled = true;
        let orphan = probe(Uuid::new_v4(), machine, None);
        let catalog = Catalog::load(vec![alice], vec![], vec![], vec![disabled, orphan]);
        let mut out = Vec::new();
        assert_eq!(
            catalog.targets(&machine_event(machine, true), &mut out),
            Dropped::UnknownAccount
        );
        assert!(out.is_empty());
    }

    #[test]
    fn an_account_hears_only_of_machines_it_owns_and_an_operator_of_all() {
        let (alice, bob) = (
            account(),
            Account {
                login: "bob".into(),
                ..account()
            },
        );
        let root = Account {
            login: "root".into(),
            operator: true,
            ..account()
        };
        let machine = Uuid::new_v4();
        let alices = probe(alice.uuid, machine, None);
        let bobs = probe(bob.uuid, machine, None);
        let roots = probe(root.uuid, machine, None);
        let mut catalog = Catalog::load(
            vec![alice.clone(), bob.clone(), root.clone()],
            vec![],
            vec![],
            vec![alices.clone(), bobs.clone(), roots.clone()],
        );
        let heard = |catalog: &Catalog| {
            let mut out = Vec::new();
            catalog.targets(&machine_event(machine, false), &mut out);
            let mut users: Vec<Uuid> = out.iter().map(|t| t.probe.user).collect();
            users.sort();
            let mut watchers: Vec<Uuid> = catalog.watchers(&[machine]).iter().map(|w| w.probe.user).collect();
            watchers.sort();
            assert_eq!(users, watchers, "events and the flood guard agree");
            users
        };
        let sorted = |mut v: Vec<Uuid>| {
            v.sort();
            v
        };
        // Nobody reported an owner: only the operator hears.
        assert_eq!(heard(&catalog), vec![root.uuid]);
        // Alice's machine.
        catalog.set_owner(machine, Some(alice.uuid));
        assert_eq!(heard(&catalog), sorted(vec![alice.uuid, root.uuid]));
        // It moves to Bob: Alice hears nothing more.
        catalog.set_owner(machine, Some(bob.uuid));
        assert_eq!(heard(&catalog), sorted(vec![bob.uuid, root.uuid]));
        // Deleted.
        catalog.set_owner(machine, None);
        assert_eq!(heard(&catalog), vec![root.uuid]);
        // An event that carries its owner teaches the catalog once.
        let mut event: MachineEvent = match machine_event(machine, false) {
            Event::Machine(m) => m,
            _ => unreachable!(),
        };
        event.owner = Some(alice.uuid);
        assert!(catalog.learn_owner(&event));
        assert!(!catalog.learn_owner(&event));
        assert_eq!(catalog.owner_of(machine), Some(alice.uuid));
        event.owner = None;
        assert!(
            !catalog.learn_owner(&event),
            "an event without an owner changes nothing"
        );
        assert_eq!(heard(&catalog), sorted(vec![alice.uuid, root.uuid]));
    }

    #[test]
    fn a_deleted_group_gives_its_probes_back_ungrouped() {
        let alice = account();
        let machine = Uuid::new_v4();
        let web = group(alice.uuid);
        let member = probe(alice.uuid, machine, Some(web.uuid));
        let mut catalog = Catalog::load(vec![alice.clone()], vec![], vec![web.clone()], vec![member.clone()]);
        catalog.set_owner(machine, Some(alice.uuid));
        let mut ungrouped = member.clone();
        ungrouped.group = None;
        catalog.remove_group(web.uuid, vec![ungrouped.clone()]);
        let mut out = Vec::new();
        catalog.targets(&machine_event(machine, false), &mut out);
        assert_eq!(out[0].key, MonitorKey::of(&ungrouped));
        assert!(catalog.members_of(MonitorKey::of(&member)).0.is_empty());
        assert_eq!(catalog.watchers(&[machine]).len(), 1);
    }
}
