//! The flood guard's decisions (SPEC §6), pure: which server is in an
//! **incident** (its relay announced a shutdown, its heartbeats stopped, or
//! a burst of its machines went down), when the incident is announced and
//! with which machines, when its server is back, which alarm actors folded a
//! fault into it, and who gets which machines in the one message per
//! contact. No timers, no actors, no I/O: every call takes "now" as an
//! argument. `ServerGuard` keeps one [`Flood`] and carries out what it
//! says: it runs the timers ([`Decision`]), asks the router who watches the
//! machines, writes the store and sends the messages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use uuid::Uuid;

use crate::catalog::Watcher;
use crate::http::shapes::{IncidentView, ServerView};
use crate::model::{Account, EpochMs, FaultSite, ServerEventKind};
use crate::notify::{resolve_contacts, ContactAddress, IncidentMachine, IncidentReason, NotificationKind, ProbeRef};

/// The flood guard's thresholds (`[notify]` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSettings {
    pub hold: Duration,
    /// This many machines down within the burst window make an incident.
    pub burst_count: usize,
    /// Or this percentage of the server's running machines (at least two).
    pub burst_percent: u32,
    /// No heartbeat for this long makes an incident.
    pub heartbeat_timeout: Duration,
    /// Machines going down within this window make a burst; it does not
    /// depend on the hold (a `hold = 0` still detects a server going down).
    pub burst_window: Duration,
}

impl GuardSettings {
    /// How long after opening an incident is announced: one hold, and never
    /// before the burst window has passed, so a burst lists every machine
    /// that went down within it (machine-down faults wait as long).
    pub fn announce_after(&self) -> Duration {
        self.hold.max(self.burst_window)
    }

    fn burst_window_ms(&self) -> EpochMs {
        self.burst_window.as_millis() as EpochMs
    }

    /// Whether `downs` machines down (that went down within the burst window) are a
    /// burst for a server with `running` machines up now. The percentage
    /// counts only once we know at least `burst_count` machines of the
    /// server: with fewer, two crashes would look like half a server.
    fn is_burst(&self, downs: usize, running: usize) -> bool {
        let known = running + downs;
        downs >= self.burst_count
            || (known >= self.burst_count && downs >= 2 && downs * 100 >= self.burst_percent as usize * known)
    }
}

/// What the router saw, reduced to what the guard needs.
#[derive(Debug, Clone)]
pub enum Sighting {
    Machine {
        machine: Uuid,
        server: Uuid,
        /// The relay that reported it: any event proves its relay alive.
        relay: Uuid,
        alias: Option<String>,
        up: bool,
        time: EpochMs,
    },
    Server {
        server: Uuid,
        hostname: Option<String>,
        kind: ServerEventKind,
    },
}

/// A timer the guard must start.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// An incident opened: [`Flood::announce`] it
    /// [`GuardSettings::announce_after`] from now, with every machine that
    /// went down by then; a server back before that was a reboot, and
    /// nobody hears of it.
    Opened {
        server: Uuid,
        incident: Uuid,
        reason: IncidentReason,
        hostname: Option<String>,
    },
    /// The incident's server is back: [`Flood::settle`] it one hold from now.
    Returned {
        server: Uuid,
        incident: Uuid,
        announced: bool,
    },
}

/// The incident fields common to every contact's notification.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentDraft {
    pub id: Uuid,
    pub server: Uuid,
    pub hostname: Option<String>,
    pub reason: IncidentReason,
    pub opened: EpochMs,
    pub returned: Option<EpochMs>,
}

/// Each contact's first (`ServerDown`) message of an incident, by (account,
/// contact name), so the summary threads under it.
pub type Roots = HashMap<(Uuid, String), Uuid>;

/// An incident to announce (`ServerDown`), or an announced one to sum up
/// (`ServerBack`).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub draft: IncidentDraft,
    /// The machines it lists.
    pub machines: Vec<Uuid>,
}

/// An incident that is over.
#[derive(Debug)]
pub struct Settled<F> {
    /// The summary to send, if the incident was announced, with the roots
    /// of its announcement.
    pub summary: Option<(Message, Roots)>,
    /// Who folded faults into it, to release now (after the summary).
    pub folded: Vec<F>,
}

/// A machine's alias and whether it is down, as a message shows it.
pub type MachineSnapshot = HashMap<Uuid, (Option<String>, bool)>;

struct MachineInfo {
    server: Uuid,
    alias: Option<String>,
    up: bool,
}

struct OpenIncident<F> {
    id: Uuid,
    reason: IncidentReason,
    opened: EpochMs,
    announced: bool,
    returned: Option<EpochMs>,
    /// Machines listed in the announcement (for the summary).
    listed: Vec<Uuid>,
    /// Contacts announced to: (account, contact name) → root notification id.
    roots: Roots,
    /// Alarm actors holding folded faults for this server.
    folded: Vec<F>,
}

struct ServerInfo<F> {
    hostname: Option<String>,
    /// Master time of the last event from this server's relay; only servers
    /// that run a relay (they have sent a server event) can lose heartbeats
    /// — a simulated server never sends any.
    last_seen: Option<EpochMs>,
    has_relay: bool,
    /// Machines known on this server, and how many of them are down: kept
    /// as counts so each event costs O(1), whatever the server's size.
    total: usize,
    down: usize,
    /// Machine downs within the burst window, in order (time, machine)…
    recent_downs: VecDeque<(EpochMs, Uuid)>,
    /// …and those of them still down (machine → when it went down).
    recent_down: HashMap<Uuid, EpochMs>,
    incident: Option<OpenIncident<F>>,
}

// Not derived: a derive would ask `F: Default`.
impl<F> Default for ServerInfo<F> {
    fn default() -> Self {
        ServerInfo {
            hostname: None,
            last_seen: None,
            has_relay: false,
            total: 0,
            down: 0,
            recent_downs: VecDeque::new(),
            recent_down: HashMap::new(),
            incident: None,
        }
    }
}

/// What the guard knows of servers and their machines, and their incidents.
/// `F` is whoever folds a fault into an incident (an alarm actor's address
/// in the guard), handed back when the incident settles.
pub struct Flood<F> {
    settings: GuardSettings,
    machines: HashMap<Uuid, MachineInfo>,
    servers: HashMap<Uuid, ServerInfo<F>>,
}

impl<F: PartialEq> Flood<F> {
    pub fn new(settings: GuardSettings) -> Flood<F> {
        Flood {
            settings,
            machines: HashMap::new(),
            servers: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &GuardSettings {
        &self.settings
    }

    /// A machine known before a restart (from the store).
    pub fn remember(&mut self, machine: Uuid, server: Uuid, alias: Option<String>, up: bool) {
        self.servers.entry(server).or_default();
        self.machines.insert(machine, MachineInfo { server, alias, up });
    }

    fn down_count(&self, server: Uuid) -> usize {
        self.servers.get(&server).map_or(0, |s| s.down)
    }

    fn running_count(&self, server: Uuid) -> usize {
        self.servers.get(&server).map_or(0, |s| s.total - s.down)
    }

    /// Records a machine's server and state, keeping the servers' counts.
    fn record_machine(&mut self, machine: Uuid, server: Uuid, alias: Option<String>, up: bool) {
        if let Some(old) = self.machines.get(&machine) {
            let (old_server, old_up) = (old.server, old.up);
            let info = self.servers.entry(old_server).or_default();
            info.total -= 1;
            if !old_up {
                info.down -= 1;
            }
            if old_server != server || up {
                info.recent_down.remove(&machine);
            }
        }
        let entry = self.machines.entry(machine).or_insert(MachineInfo {
            server,
            alias: None,
            up,
        });
        entry.server = server;
        entry.up = up;
        if alias.is_some() {
            entry.alias = alias;
        }
        let info = self.servers.entry(server).or_default();
        info.total += 1;
        if !up {
            info.down += 1;
        }
    }

    /// Takes in what the router saw at master time `now`.
    pub fn sight(&mut self, sighting: Sighting, now: EpochMs) -> Option<Decision> {
        match sighting {
            Sighting::Machine {
                machine,
                server,
                relay,
                alias,
                up,
                time: _,
            } => {
                self.servers.entry(relay).or_default().last_seen = Some(now);
                self.record_machine(machine, server, alias, up);
                if up {
                    return self.maybe_burst_over(server, now);
                }
                let window = self.settings.burst_window_ms();
                let running = self.running_count(server);
                let info = self.servers.entry(server).or_default();
                info.recent_downs.push_back((now, machine));
                info.recent_down.insert(machine, now);
                while let Some(&(t, m)) = info.recent_downs.front() {
                    if now - t <= window {
                        break;
                    }
                    info.recent_downs.pop_front();
                    if info.recent_down.get(&m) == Some(&t) {
                        info.recent_down.remove(&m);
                    }
                }
                let quiet = info.incident.is_none();
                let downs = info.recent_down.len();
                if quiet && self.settings.is_burst(downs, running) {
                    return Some(self.open(server, IncidentReason::Burst, now));
                }
                None
            }
            Sighting::Server { server, hostname, kind } => {
                let info = self.servers.entry(server).or_default();
                info.last_seen = Some(now);
                info.has_relay = true;
                if hostname.is_some() {
                    info.hostname = hostname;
                }
                match kind {
                    ServerEventKind::ShuttingDown => {
                        if info.incident.is_none() {
                            return Some(self.open(server, IncidentReason::Shutdown, now));
                        }
                        None
                    }
                    ServerEventKind::Started | ServerEventKind::Heartbeat => {
                        let back = info
                            .incident
                            .as_ref()
                            .is_some_and(|i| i.returned.is_none() && i.reason != IncidentReason::Burst);
                        if back {
                            return self.returned(server, now);
                        }
                        None
                    }
                }
            }
        }
    }

    /// A burst incident ends when fewer machines than the threshold are
    /// still down on its server.
    fn maybe_burst_over(&mut self, server: Uuid, now: EpochMs) -> Option<Decision> {
        let down = self.down_count(server);
        let running = self.running_count(server);
        let info = self.servers.get(&server)?;
        let burst_open = info
            .incident
            .as_ref()
            .is_some_and(|i| i.reason == IncidentReason::Burst && i.returned.is_none());
        if burst_open && !self.settings.is_burst(down, running) {
            return self.returned(server, now);
        }
        None
    }

    fn open(&mut self, server: Uuid, reason: IncidentReason, now: EpochMs) -> Decision {
        let id = Uuid::new_v4();
        let info = self.servers.entry(server).or_default();
        info.incident = Some(OpenIncident {
            id,
            reason,
            opened: now,
            announced: false,
            returned: None,
            listed: Vec::new(),
            roots: HashMap::new(),
            folded: Vec::new(),
        });
        Decision::Opened {
            server,
            incident: id,
            reason,
            hostname: info.hostname.clone(),
        }
    }

    fn returned(&mut self, server: Uuid, now: EpochMs) -> Option<Decision> {
        let incident = self.servers.get_mut(&server)?.incident.as_mut()?;
        incident.returned = Some(now);
        Some(Decision::Returned {
            server,
            incident: incident.id,
            announced: incident.announced,
        })
    }

    /// Servers whose relay has not been heard from for longer than the
    /// heartbeat timeout at `now`: each opens an incident.
    pub fn silent_servers(&mut self, now: EpochMs) -> Vec<Decision> {
        let timeout = self.settings.heartbeat_timeout.as_millis() as EpochMs;
        let silent: Vec<Uuid> = self
            .servers
            .iter()
            .filter(|(_, s)| s.has_relay && s.incident.is_none() && s.last_seen.is_some_and(|t| now - t > timeout))
            .map(|(uuid, _)| *uuid)
            .collect();
        silent
            .into_iter()
            .map(|server| self.open(server, IncidentReason::HeartbeatLost, now))
            .collect()
    }

    /// The announcement of `incident`, one hold after it opened: `None` if
    /// it is over or its server already back. A silent or shut-down server
    /// takes all its machines with it (its relay may stop before it can
    /// report them going down); a burst concerns those seen going down.
    pub fn announce(&mut self, server: Uuid, incident: Uuid) -> Option<Message> {
        let hostname = self.servers.get(&server).and_then(|s| s.hostname.clone());
        let open = self.servers.get_mut(&server)?.incident.as_mut()?;
        if open.id != incident || open.returned.is_some() {
            return None;
        }
        open.announced = true;
        let reason = open.reason;
        let listed: Vec<Uuid> = self
            .machines
            .iter()
            .filter(|(_, m)| m.server == server && (reason != IncidentReason::Burst || !m.up))
            .map(|(uuid, _)| *uuid)
            .collect();
        let open = self.servers.get_mut(&server)?.incident.as_mut()?;
        open.listed = listed.clone();
        Some(Message {
            draft: IncidentDraft {
                id: incident,
                server,
                hostname,
                reason,
                opened: open.opened,
                returned: None,
            },
            machines: listed,
        })
    }

    /// Ends `incident`, one hold after its server returned: `None` if it is
    /// not the server's open incident. The summary lists exactly the
    /// machines of the announcement, so each contact's summary threads
    /// under (and counts like) its down message; machines that went down
    /// later get their own alarms.
    pub fn settle(&mut self, server: Uuid, incident: Uuid) -> Option<Settled<F>> {
        let hostname = self.servers.get(&server).and_then(|s| s.hostname.clone());
        let info = self.servers.get_mut(&server)?;
        if info.incident.as_ref().is_none_or(|i| i.id != incident) {
            return None;
        }
        let open = info.incident.take()?;
        info.recent_downs.clear();
        info.recent_down.clear();
        let summary = open.announced.then(|| {
            let message = Message {
                draft: IncidentDraft {
                    id: incident,
                    server,
                    hostname,
                    reason: open.reason,
                    opened: open.opened,
                    returned: open.returned,
                },
                machines: open.listed,
            };
            (message, open.roots)
        });
        Some(Settled {
            summary,
            folded: open.folded,
        })
    }

    /// Whether `server` is in an incident; if so `monitor` is remembered,
    /// once, to be released when it settles.
    pub fn fold(&mut self, server: Uuid, monitor: F) -> bool {
        match self.servers.get_mut(&server).and_then(|s| s.incident.as_mut()) {
            Some(incident) => {
                if !incident.folded.contains(&monitor) {
                    incident.folded.push(monitor);
                }
                true
            }
            None => false,
        }
    }

    /// The roots of the server's open incident, if it has one.
    pub fn roots_mut(&mut self, server: Uuid) -> Option<&mut Roots> {
        Some(&mut self.servers.get_mut(&server)?.incident.as_mut()?.roots)
    }

    /// The known machines among `machines`, as a message shows them now.
    pub fn snapshot(&self, machines: &[Uuid]) -> MachineSnapshot {
        machines
            .iter()
            .filter_map(|m| self.machines.get(m).map(|info| (*m, (info.alias.clone(), !info.up))))
            .collect()
    }

    /// Every server known, by uuid (`GET /servers`).
    pub fn views(&self) -> Vec<ServerView> {
        let mut views: Vec<ServerView> = self
            .servers
            .iter()
            .map(|(uuid, info)| ServerView {
                uuid: *uuid,
                hostname: info.hostname.clone(),
                last_seen: info.last_seen,
                machines: info.total,
                machines_down: self.down_count(*uuid),
                incident: info.incident.as_ref().map(|i| IncidentView {
                    id: i.id,
                    server: *uuid,
                    hostname: info.hostname.clone(),
                    reason: i.reason,
                    opened: i.opened,
                    announced: i.announced,
                    returned: i.returned,
                    machines_down: self.down_count(*uuid),
                }),
            })
            .collect();
        views.sort_by_key(|v| v.uuid);
        views
    }
}

/// One contact's share of an incident message.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactShare {
    /// The notification's id.
    pub id: Uuid,
    /// For a summary, the id of the contact's announcement it threads under.
    pub thread_root: Option<Uuid>,
    pub account: Account,
    pub contact_name: String,
    pub contact: ContactAddress,
    /// The contact's machines, in the watchers' order.
    pub machines: Vec<IncidentMachine>,
}

/// Splits an incident message into one share per (account, contact) among
/// the probes watching its machines (`machines`: those listed, as they are
/// now). A machine under maintenance for a probe (`covered`) is left out for
/// that probe; a contact left with nothing gets nothing. A group's contacts
/// replace its probes' (Amon's rule). An announcement records each
/// contact's id in `roots`; a summary threads under the contact's root.
pub fn shares(
    kind: NotificationKind,
    server: Uuid,
    watchers: Vec<Watcher>,
    machines: &MachineSnapshot,
    roots: &mut Roots,
    covered: impl Fn(&FaultSite) -> bool,
) -> Vec<ContactShare> {
    // (account uuid, contact) → (account, address, machines)
    let mut per_contact: BTreeMap<(Uuid, String), (Account, ContactAddress, Vec<IncidentMachine>)> = BTreeMap::new();
    for w in watchers {
        let Some((alias, down)) = machines.get(&w.machine) else {
            continue;
        };
        let site = FaultSite {
            user: w.book.account.uuid,
            probe: w.probe.uuid,
            group: w.probe.group,
            machine: Some(w.machine),
            server: Some(server),
        };
        if covered(&site) {
            continue; // under maintenance: nobody is told
        }
        let names = match &w.group {
            Some(group) => &group.contacts,
            None => &w.probe.contacts,
        };
        let account = &w.book.account;
        for (contact, address) in resolve_contacts(names, account, &w.book.contacts) {
            let entry = per_contact
                .entry((account.uuid, contact))
                .or_insert_with(|| (account.clone(), address, Vec::new()));
            entry.2.push(IncidentMachine {
                uuid: w.machine,
                alias: alias.clone(),
                probe: ProbeRef {
                    uuid: w.probe.uuid,
                    name: w.probe.name.clone(),
                    probe_type: w.probe.probe_type.as_str().to_string(),
                    group: w.probe.group,
                },
                down: *down,
            });
        }
    }
    per_contact
        .into_iter()
        .map(|((account_uuid, contact_name), (account, contact, machines))| {
            let key = (account_uuid, contact_name.clone());
            let (id, thread_root) = match (kind, roots.get(&key)) {
                (NotificationKind::ServerBack, Some(root)) => (Uuid::new_v4(), Some(*root)),
                _ => {
                    let id = Uuid::new_v4();
                    roots.insert(key, id);
                    (id, None)
                }
            };
            ContactShare {
                id,
                thread_root,
                account,
                contact_name,
                contact,
                machines,
            }
        })
        .collect()
}
