//! The names a page shows instead of uuids — accounts' logins, probes' and
//! groups' names, machines' aliases and servers' hostnames — and which
//! server each machine is on, read once per page.

use std::collections::HashMap;

use uuid::Uuid;

use crate::http::alarm_filter::AlarmContext;
use crate::model::{Alarm, Probe, ProbeGroup};
use crate::store::{MachineRecord, Store, StoreError};

#[derive(Default)]
pub struct Directory {
    logins: HashMap<Uuid, String>,
    machines: HashMap<Uuid, MachineRecord>,
    hostnames: HashMap<Uuid, String>,
    probes: HashMap<Uuid, Probe>,
    groups: HashMap<Uuid, ProbeGroup>,
}

impl Directory {
    pub async fn load(store: &Store) -> Result<Directory, StoreError> {
        let logins = store
            .all_accounts()
            .await?
            .into_iter()
            .map(|a| (a.uuid, a.login))
            .collect();
        let machines = store.all_machines().await?.into_iter().map(|m| (m.uuid, m)).collect();
        let hostnames = store
            .servers()
            .await?
            .into_iter()
            .filter_map(|(uuid, hostname, _, _)| hostname.map(|h| (uuid, h)))
            .collect();
        let probes = store.all_probes().await?.into_iter().map(|p| (p.uuid, p)).collect();
        let groups = store.all_groups().await?.into_iter().map(|g| (g.uuid, g)).collect();
        Ok(Directory {
            logins,
            machines,
            hostnames,
            probes,
            groups,
        })
    }

    pub fn login(&self, account: Uuid) -> String {
        self.logins
            .get(&account)
            .cloned()
            .unwrap_or_else(|| account.to_string())
    }

    pub fn server_of(&self, machine: Uuid) -> Option<Uuid> {
        self.machines.get(&machine).map(|m| m.server)
    }

    /// A machine's alias, or its uuid.
    pub fn machine_name(&self, machine: Uuid) -> String {
        self.machines
            .get(&machine)
            .and_then(|m| m.alias.clone())
            .unwrap_or_else(|| machine.to_string())
    }

    /// A server's hostname, or its uuid.
    pub fn server_name(&self, server: Uuid) -> String {
        self.hostnames
            .get(&server)
            .cloned()
            .unwrap_or_else(|| server.to_string())
    }

    pub fn probe_name(&self, probe: Uuid) -> String {
        self.probes
            .get(&probe)
            .and_then(|p| p.name.clone())
            .unwrap_or_else(|| probe.to_string())
    }

    pub fn group_name(&self, group: Uuid) -> String {
        self.groups
            .get(&group)
            .and_then(|g| g.name.clone())
            .unwrap_or_else(|| group.to_string())
    }

    /// What the alarm watches: its probe group's name, or its probe's.
    pub fn monitor_name(&self, alarm: &Alarm) -> String {
        match (alarm.probe_group, alarm.probe) {
            (Some(group), _) => format!("group {}", self.group_name(group)),
            (None, Some(probe)) => format!("probe {}", self.probe_name(probe)),
            (None, None) => String::new(),
        }
    }

    /// The groups an account may filter by (every group for an operator).
    pub fn groups_of(&self, account: Option<Uuid>) -> Vec<&ProbeGroup> {
        let mut groups: Vec<&ProbeGroup> = self
            .groups
            .values()
            .filter(|g| account.is_none_or(|a| g.user == a))
            .collect();
        groups.sort_by_key(|g| (g.name.clone(), g.uuid));
        groups
    }

    /// The machines the alarm's faults are on, first seen first.
    pub fn machines_of(alarm: &Alarm) -> Vec<Uuid> {
        let mut machines = Vec::new();
        for fault in alarm.faults.iter().chain(&alarm.maint_faults) {
            if let Some(m) = fault.event.machine {
                if !machines.contains(&m) {
                    machines.push(m);
                }
            }
        }
        machines
    }

    /// The servers the alarm's machines are on.
    pub fn servers_of(&self, alarm: &Alarm) -> Vec<Uuid> {
        let mut servers = Vec::new();
        for m in Directory::machines_of(alarm) {
            if let Some(s) = self.server_of(m) {
                if !servers.contains(&s) {
                    servers.push(s);
                }
            }
        }
        servers
    }

    /// What the alarm filters match against.
    pub fn context(&self, alarm: &Alarm) -> AlarmContext {
        let mut words = vec![self.monitor_name(alarm)];
        for fault in alarm.faults.iter().chain(&alarm.maint_faults) {
            words.push(fault.event.data.message.clone());
            words.push(self.probe_name(fault.probe));
            if let Some(m) = fault.event.machine {
                words.push(self.machine_name(m));
            }
        }
        let servers = self.servers_of(alarm);
        words.extend(servers.iter().map(|s| self.server_name(*s)));
        AlarmContext {
            account_login: self.login(alarm.user),
            servers,
            words,
        }
    }

    /// Every server known by name or by its machines, sorted by name.
    pub fn servers(&self) -> Vec<(Uuid, String)> {
        let mut servers: Vec<Uuid> = self.hostnames.keys().copied().collect();
        for m in self.machines.values() {
            if !servers.contains(&m.server) {
                servers.push(m.server);
            }
        }
        let mut named: Vec<(Uuid, String)> = servers.into_iter().map(|s| (s, self.server_name(s))).collect();
        named.sort_by(|a, b| a.1.cmp(&b.1));
        named
    }
}
