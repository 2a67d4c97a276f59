//! The Amon domain: accounts, contacts, probes, alarms, faults and the events
//! that relays send. Plain data with serde shapes that follow Amon's field
//! names (camelCase), because these are also what the store keeps as JSON and
//! what the Master API shows. No I/O here.

use std::collections::{BTreeMap, HashMap};

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
    /// Extra attributes, as the reference's UFDS person had (e.g.
    /// `pagerdutyemail`): one whose name ends in `email` or `webhook` is
    /// also a contact of that medium ([`AttributeUse`]), which is how
    /// Triton's own clients named contacts.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
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

impl Account {
    /// The attribute `name` names as a contact, matched regardless of case
    /// (UFDS lowercased attribute names, so the reference's `secondaryEmail`
    /// found the attribute `secondaryemail`).
    fn attribute(&self, name: &str) -> Option<(&str, &str)> {
        self.attributes
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

/// What an account attribute is good for, by the end of its name (the
/// reference's rule, case-insensitive): `…email` is an email contact,
/// `…webhook` a webhook contact, `…phone` was the reference's Twilio call,
/// which we do not make, and anything else is just an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeUse {
    Contact(Medium),
    Phone,
    Plain,
}

impl AttributeUse {
    pub fn of(name: &str) -> AttributeUse {
        let name = name.to_ascii_lowercase();
        if name.ends_with("email") {
            AttributeUse::Contact(Medium::Email)
        } else if name.ends_with("webhook") {
            AttributeUse::Contact(Medium::Webhook)
        } else if name.ends_with("phone") {
            AttributeUse::Phone
        } else {
            AttributeUse::Plain
        }
    }
}

/// Attribute names an account cannot have: its own fields.
pub const RESERVED_ATTRIBUTES: [&str; 4] = ["uuid", "login", "email", "attributes"];

/// The probe types of Amon. `machine-up` is the relay's (it watches zones);
/// every other type runs in an agent (`amon agent`, `crate::probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeType {
    #[serde(rename = "machine-up")]
    MachineUp,
    #[serde(rename = "log-scan")]
    LogScan,
    #[serde(rename = "bunyan-log-scan")]
    BunyanLogScan,
    #[serde(rename = "http")]
    Http,
    #[serde(rename = "icmp")]
    Icmp,
    #[serde(rename = "cmd")]
    Cmd,
    #[serde(rename = "disk-usage")]
    DiskUsage,
}

impl ProbeType {
    pub const ALL: [ProbeType; 7] = [
        ProbeType::LogScan,
        ProbeType::BunyanLogScan,
        ProbeType::MachineUp,
        ProbeType::Http,
        ProbeType::Icmp,
        ProbeType::Cmd,
        ProbeType::DiskUsage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeType::MachineUp => "machine-up",
            ProbeType::LogScan => "log-scan",
            ProbeType::BunyanLogScan => "bunyan-log-scan",
            ProbeType::Http => "http",
            ProbeType::Icmp => "icmp",
            ProbeType::Cmd => "cmd",
            ProbeType::DiskUsage => "disk-usage",
        }
    }

    pub fn parse(name: &str) -> Option<ProbeType> {
        ProbeType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether the probe watches the machine its agent runs on (`agent` and
    /// `machine` are then one uuid, the master fills either from the other),
    /// as opposed to something reached over the network (`http`, `icmp`:
    /// `agent` says who runs it, `machine` is optional).
    pub fn runs_locally(self) -> bool {
        !matches!(self, ProbeType::Http | ProbeType::Icmp)
    }

    /// Whether an agent runs it (every type but `machine-up`).
    pub fn runs_in_agent(self) -> bool {
        self != ProbeType::MachineUp
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
    pub contacts: HashMap<String, Contact>,
}

/// Why a name is not a contact of an account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoContact {
    #[error("no contact and no account attribute is named {name:?}")]
    Unknown { name: String },
    #[error("account attribute {attribute:?} is not a contact: only names ending in \"email\" or \"webhook\" are")]
    Plain { attribute: String },
    #[error("account attribute {attribute:?} ends in \"phone\": amon makes no phone calls or text messages, so it is not a contact")]
    Phone { attribute: String },
}

impl AccountBook {
    /// The contact `name` stands for: a stored contact of that name first,
    /// then the implicit `email` (the account's address), then an account
    /// attribute of that name ending in `email` or `webhook`.
    pub fn contact(&self, name: &str) -> Result<Contact, NoContact> {
        if let Some(contact) = self.contacts.get(name) {
            return Ok(contact.clone());
        }
        if name == "email" {
            return Ok(Contact::default_email(&self.account));
        }
        let Some((attribute, address)) = self.account.attribute(name) else {
            return Err(NoContact::Unknown { name: name.to_string() });
        };
        match AttributeUse::of(attribute) {
            AttributeUse::Contact(medium) => Ok(Contact {
                name: name.to_string(),
                medium,
                address: address.to_string(),
            }),
            AttributeUse::Phone => Err(NoContact::Phone {
                attribute: attribute.to_string(),
            }),
            AttributeUse::Plain => Err(NoContact::Plain {
                attribute: attribute.to_string(),
            }),
        }
    }

    /// Every contact of the account, by name: the stored ones, `email`, and
    /// the attributes that are contacts (unless a stored contact has their
    /// name).
    pub fn all_contacts(&self) -> Vec<Contact> {
        let mut all: BTreeMap<String, Contact> = BTreeMap::new();
        all.insert("email".into(), Contact::default_email(&self.account));
        for name in self.account.attributes.keys() {
            if let Ok(contact) = self.contact(name) {
                all.insert(contact.name.clone(), contact);
            }
        }
        for contact in self.contacts.values() {
            all.insert(contact.name.clone(), contact.clone());
        }
        all.into_values().collect()
    }
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
    /// On a heartbeat: the agents that reached this relay's agent API since
    /// it started, and how long ago each last did, for the master's
    /// missing-data alarm. Left out when empty; a master of before ignores
    /// it (an unknown field of version 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentSeen>,
}

/// An agent a relay heard from, and how long before the heartbeat that
/// carries it: a duration, not a time, so the relay's and the master's
/// clocks need not agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSeen {
    pub agent: Uuid,
    pub silent_ms: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn book(attributes: &[(&str, &str)], stored: &[(&str, Medium, &str)]) -> AccountBook {
        AccountBook {
            account: Account {
                uuid: Uuid::nil(),
                login: "alice".into(),
                email: "alice@example.com".into(),
                operator: false,
                attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            },
            contacts: stored
                .iter()
                .map(|(name, medium, address)| {
                    let contact = Contact {
                        name: name.to_string(),
                        medium: *medium,
                        address: address.to_string(),
                    };
                    (contact.name.clone(), contact)
                })
                .collect(),
        }
    }

    #[test]
    fn an_attributes_medium_is_the_end_of_its_name_in_any_case() {
        assert_eq!(AttributeUse::of("email"), AttributeUse::Contact(Medium::Email));
        assert_eq!(AttributeUse::of("secondaryEmail"), AttributeUse::Contact(Medium::Email));
        assert_eq!(AttributeUse::of("PAGERDUTYEMAIL"), AttributeUse::Contact(Medium::Email));
        assert_eq!(AttributeUse::of("testwebhook"), AttributeUse::Contact(Medium::Webhook));
        assert_eq!(AttributeUse::of("opsWebHook"), AttributeUse::Contact(Medium::Webhook));
        assert_eq!(AttributeUse::of("workPhone"), AttributeUse::Phone);
        assert_eq!(AttributeUse::of("emailer"), AttributeUse::Plain);
        assert_eq!(AttributeUse::of("cn"), AttributeUse::Plain);
    }

    #[test]
    fn a_stored_contact_wins_over_an_attribute_of_its_name() {
        let book = book(
            &[
                ("pagerdutyemail", "pd@example.com"),
                ("opswebhook", "https://hooks.example.com/a"),
            ],
            &[("pagerdutyemail", Medium::Webhook, "https://pd.example.com/hook")],
        );
        let pd = book.contact("pagerdutyemail").unwrap();
        assert_eq!(
            (pd.medium, pd.address.as_str()),
            (Medium::Webhook, "https://pd.example.com/hook")
        );
        let ops = book.contact("opswebhook").unwrap();
        assert_eq!(
            (ops.medium, ops.address.as_str()),
            (Medium::Webhook, "https://hooks.example.com/a")
        );
        assert_eq!(book.contact("email").unwrap().address, "alice@example.com");
        let names: Vec<String> = book.all_contacts().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["email", "opswebhook", "pagerdutyemail"]);
        assert_eq!(book.all_contacts()[2].medium, Medium::Webhook, "the stored one");
    }

    #[test]
    fn contacts_find_attributes_regardless_of_case_as_ufds_did() {
        let book = book(&[("secondaryemail", "second@example.com")], &[]);
        let contact = book.contact("secondaryEmail").unwrap();
        assert_eq!(contact.name, "secondaryEmail", "named as the probe names it");
        assert_eq!(contact.address, "second@example.com");
    }

    #[test]
    fn phone_and_plain_attributes_are_no_contacts_and_say_why() {
        let book = book(&[("workPhone", "+1 555 0100"), ("cn", "Alice")], &[]);
        assert!(matches!(book.contact("workphone"), Err(NoContact::Phone { attribute }) if attribute == "workPhone"));
        assert!(matches!(book.contact("cn"), Err(NoContact::Plain { .. })));
        assert!(matches!(book.contact("pager"), Err(NoContact::Unknown { .. })));
        assert!(book.contact("workphone").unwrap_err().to_string().contains("phone"));
        let names: Vec<String> = book.all_contacts().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["email"]);
    }
}
