//! The Amon domain: accounts, contacts, probes, alarms, faults and the events
//! that relays send. Plain data with serde shapes that follow Amon's field
//! names (camelCase), because these are also what the store keeps as JSON and
//! what the Master API shows. No I/O here.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Milliseconds since the Unix epoch, as Amon uses everywhere.
pub type EpochMs = i64;

/// An account (Amon's "user"): owns contacts, probes and alarms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub uuid: Uuid,
    pub login: String,
    pub email: String,
    /// An operator's probes may watch any machine and compute nodes (Amon's
    /// `operators` group); other accounts' only the machines they own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator: bool,
}

/// One machine a relay reports on a compute node (`PUT
/// /servers/:server/machines`): the master's record of who owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineReport {
    pub uuid: Uuid,
    #[serde(default)]
    pub alias: Option<String>,
    /// `None`: the relay does not know (yet); nobody but operators hears of it.
    #[serde(default)]
    pub owner: Option<Uuid>,
}

/// The probe types we implement. Amon's other types (log-scan, http, …) come
/// with the agent work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeType {
    #[serde(rename = "machine-up")]
    MachineUp,
}

impl ProbeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeType::MachineUp => "machine-up",
        }
    }
}

/// A probe: what to watch and whom to tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub user: Uuid,
    #[serde(rename = "type")]
    pub probe_type: ProbeType,
    pub agent: Option<Uuid>,
    pub machine: Option<Uuid>,
    #[serde(default)]
    pub config: serde_json::Value,
    pub contacts: Vec<String>,
    pub group: Option<Uuid>,
    pub group_events: bool,
    pub disabled: bool,
    /// Seconds a new fault waits before it is notified (`None`: the
    /// configured `notify.hold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<u64>,
    /// Seconds between reminders while a notified fault stays open (`None`:
    /// no reminders, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renotify: Option<u64>,
}

/// A probe group: its probes share one alarm, and its contacts replace
/// theirs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeGroup {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub user: Uuid,
    pub contacts: Vec<String>,
    pub disabled: bool,
    /// Seconds before a new fault is notified (overrides probes' and the
    /// configured hold for the group's alarm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renotify: Option<u64>,
}

/// How a contact is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    Email,
    Webhook,
}

/// A named way to reach an account's people (`/pub/:account/contacts/:name`).
/// The contact named `email` exists without being stored: the account's
/// email address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub name: String,
    pub medium: Medium,
    pub address: String,
}

impl Contact {
    /// The implicit `email` contact of an account.
    pub fn default_email(account: &Account) -> Contact {
        Contact {
            name: "email".into(),
            medium: Medium::Email,
            address: account.email.clone(),
        }
    }
}

/// An account with its contacts: what is needed to address its people.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountBook {
    pub account: Account,
    /// Stored contacts by name (the implicit `email` is not in here).
    pub contacts: std::collections::HashMap<String, Contact>,
}

/// Which alarm stream an event belongs to (SPEC §5 rule 1): the probe's group
/// if it has one, else the probe itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MonitorKey {
    Probe { user: Uuid, probe: Uuid },
    ProbeGroup { user: Uuid, group: Uuid },
}

impl MonitorKey {
    pub fn of(probe: &Probe) -> MonitorKey {
        match probe.group {
            Some(group) => MonitorKey::ProbeGroup {
                user: probe.user,
                group,
            },
            None => MonitorKey::Probe {
                user: probe.user,
                probe: probe.uuid,
            },
        }
    }

    pub fn user(&self) -> Uuid {
        match *self {
            MonitorKey::Probe { user, .. } | MonitorKey::ProbeGroup { user, .. } => user,
        }
    }
}

/// One probe's current problem inside an alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    #[serde(rename = "type")]
    pub fault_type: String,
    pub probe: Uuid,
    pub event: ProbeEvent,
    /// When the fault was first seen in this alarm (master clock), for the hold.
    pub time_faulted: EpochMs,
    /// Whether its fault notification has gone out (after the hold).
    pub notified: bool,
    /// Its hold ran out while its server was in an incident: the incident's
    /// message spoke for it; it is notified on its own only if still open
    /// when the incident is over.
    #[serde(default)]
    pub folded: bool,
}

/// An alarm: Amon's unit of "something is wrong", per monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alarm {
    pub user: Uuid,
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_group: Option<Uuid>,
    pub closed: bool,
    pub suppressed: bool,
    pub time_opened: EpochMs,
    pub time_closed: Option<EpochMs>,
    pub time_last_event: Option<EpochMs>,
    pub num_events: u64,
    pub faults: Vec<Fault>,
    pub maint_faults: Vec<Fault>,
    /// Notifications decided for this alarm so far; the first one roots the
    /// email thread.
    #[serde(default)]
    pub num_notifications: u64,
}

impl Alarm {
    pub fn monitor(&self) -> MonitorKey {
        match (self.probe_group, self.probe) {
            (Some(group), _) => MonitorKey::ProbeGroup { user: self.user, group },
            (None, Some(probe)) => MonitorKey::Probe { user: self.user, probe },
            (None, None) => unreachable!("an alarm always has a probe or a probe group"),
        }
    }
}

/// The data of an Amon v1 probe event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEventData {
    pub message: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

/// Amon v1 probe event, as agents send it and relays stamp it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeEvent {
    pub v: u32,
    pub user: Uuid,
    pub probe_uuid: Uuid,
    pub clear: bool,
    pub data: ProbeEventData,
    #[serde(default)]
    pub machine: Option<Uuid>,
    pub uuid: Uuid,
    pub time: EpochMs,
    #[serde(default)]
    pub agent: Option<Uuid>,
    #[serde(default)]
    pub agent_alias: Option<String>,
    #[serde(default)]
    pub relay: Option<Uuid>,
}

/// The version of the event format this build speaks (`v` on every event).
/// An event of another version is refused with a `422` naming its `v`:
/// fields a later version adds within version 1 are ignored, but a new
/// version says its events mean something this master cannot know.
pub const EVENT_VERSION: u32 = 1;

fn event_version() -> u32 {
    EVENT_VERSION
}

/// A zone/VM coming up or going down, as a relay saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineEvent {
    /// The event format's version; relays before it was sent meant 1.
    #[serde(default = "event_version")]
    pub v: u32,
    pub uuid: Uuid,
    pub time: EpochMs,
    /// The relay that saw it (the compute node's server uuid).
    pub relay: Uuid,
    pub machine: Uuid,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub owner: Option<Uuid>,
    /// The compute node the machine runs on (the relay's server, or a
    /// simulated server).
    pub server: Uuid,
    #[serde(default)]
    pub old_state: Option<String>,
    pub new_state: String,
    pub up: bool,
}

/// What happened to a relay itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerEventKind {
    Started,
    Heartbeat,
    ShuttingDown,
}

/// A relay's own lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerEvent {
    /// The event format's version; relays before it was sent meant 1.
    #[serde(default = "event_version")]
    pub v: u32,
    pub uuid: Uuid,
    pub time: EpochMs,
    pub relay: Uuid,
    pub server: Uuid,
    pub event: ServerEventKind,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// Every event a relay sends to `POST /events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    Probe(ProbeEvent),
    Machine(MachineEvent),
    Server(ServerEvent),
}

impl Event {
    /// The event format's version (`v`).
    pub fn version(&self) -> u32 {
        match self {
            Event::Probe(e) => e.v,
            Event::Machine(e) => e.v,
            Event::Server(e) => e.v,
        }
    }

    /// The relay-assigned idempotency key.
    pub fn uuid(&self) -> Uuid {
        match self {
            Event::Probe(e) => e.uuid,
            Event::Machine(e) => e.uuid,
            Event::Server(e) => e.uuid,
        }
    }

    pub fn time(&self) -> EpochMs {
        match self {
            Event::Probe(e) => e.time,
            Event::Machine(e) => e.time,
            Event::Server(e) => e.time,
        }
    }
}

/// What a maintenance window covers (SPEC §5): everything of its account(s)
/// (`all`), or a monitor scope (`probes` or `probeGroups`), a machine scope
/// (`machines`, or `servers`: every machine on those compute nodes), or one
/// of each, and then both must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceScope {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_groups: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Uuid>,
}

/// A maintenance window: faults it covers are kept as `maintFaults` and
/// notify nobody until it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    pub id: u64,
    /// The account; `None` for an operator's window across accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
    pub start: EpochMs,
    /// `None`: open-ended, until deleted.
    pub end: Option<EpochMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(flatten)]
    pub scope: MaintenanceScope,
}

/// What a fault is, for the question "does a window cover it?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSite {
    pub user: Uuid,
    pub probe: Uuid,
    pub group: Option<Uuid>,
    pub machine: Option<Uuid>,
    pub server: Option<Uuid>,
}

impl MaintenanceWindow {
    /// Whether the window is in force at `at` (start inclusive, end exclusive).
    pub fn active_at(&self, at: EpochMs) -> bool {
        self.start <= at && self.end.is_none_or(|end| at < end)
    }

    /// Whether the window covers the fault at `at`.
    pub fn covers(&self, site: &FaultSite, at: EpochMs) -> bool {
        if self.user.is_some_and(|user| user != site.user) || !self.active_at(at) {
            return false;
        }
        let s = &self.scope;
        if s.all {
            return true;
        }
        let monitor = (s.probes.is_empty() && s.probe_groups.is_empty())
            || s.probes.contains(&site.probe)
            || site.group.is_some_and(|g| s.probe_groups.contains(&g));
        let machine = (s.machines.is_empty() && s.servers.is_empty())
            || site.machine.is_some_and(|m| s.machines.contains(&m))
            || site.server.is_some_and(|m| s.servers.contains(&m));
        monitor && machine
    }
}
