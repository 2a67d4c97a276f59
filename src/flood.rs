//! The flood guard's decisions (SPEC §6), pure: which server is in an
//! **incident** (its relay announced a shutdown, its heartbeats stopped, or
//! a burst of its machines went down), when the incident is announced and
//! with which machines, when its server is back, which alarm actors folded a
//! fault into it, and who gets which machines in the one message per
//! contact. No timers, no actors, no I/O: every call takes "now" as an
//! argument, on both clocks ([`Moment`]): the burst window and the heartbeat
//! timeout are measured on steady time, so a step of the wall clock (NTP)
//! neither makes every relay look silent nor stretches a burst over an
//! hour; what people are shown (an incident's times, a relay's last event)
//! is wall-clock time. `ServerGuard` keeps one [`Flood`] and carries out
//! what it says: it runs the timers ([`Decision`]), asks the router who
//! watches the machines, writes the store and sends the messages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use uuid::Uuid;

use crate::catalog::Watcher;
use crate::clock::Moment;
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
    /// The same moment in steady time, to measure silence by.
    heard: Option<EpochMs>,
    has_relay: bool,
    /// Machines known on this server, and how many of them are down: kept
    /// as counts so each event costs O(1), whatever the server's size.
    total: usize,
    down: usize,
    /// Machine downs within the burst window, in order (steady time,
    /// machine)…
    recent_downs: VecDeque<(EpochMs, Uuid)>,
    /// …and those of them still down (machine → when it went down, steady).
    recent_down: HashMap<Uuid, EpochMs>,
    incident: Option<OpenIncident<F>>,
}

impl<F> ServerInfo<F> {
    /// Its relay was heard from `now`.
    fn heard_at(&mut self, now: Moment) {
        self.last_seen = Some(now.wall);
        self.heard = Some(now.steady);
    }
}

// Not derived: a derive would ask `F: Default`.
impl<F> Default for ServerInfo<F> {
    fn default() -> Self {
        ServerInfo {
            hostname: None,
            last_seen: None,
            heard: None,
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

    /// A machine known before a restart (from the store). It counts for its
    /// server like a machine seen now, so that seeing it again moves it
    /// rather than taking it off counts it was never on.
    pub fn remember(&mut self, machine: Uuid, server: Uuid, alias: Option<String>, up: bool) {
        self.record_machine(machine, server, alias, up);
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
    pub fn sight(&mut self, sighting: Sighting, now: impl Into<Moment>) -> Option<Decision> {
        let now = now.into();
        match sighting {
            Sighting::Machine {
                machine,
                server,
                relay,
                alias,
                up,
                time: _,
            } => {
                self.servers.entry(relay).or_default().heard_at(now);
                self.record_machine(machine, server, alias, up);
                if up {
                    return self.maybe_burst_over(server, now);
                }
                let window = self.settings.burst_window_ms();
                let running = self.running_count(server);
                let info = self.servers.entry(server).or_default();
                info.recent_downs.push_back((now.steady, machine));
                info.recent_down.insert(machine, now.steady);
                while let Some(&(t, m)) = info.recent_downs.front() {
                    if now.steady - t <= window {
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
                info.heard_at(now);
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
    fn maybe_burst_over(&mut self, server: Uuid, now: Moment) -> Option<Decision> {
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

    fn open(&mut self, server: Uuid, reason: IncidentReason, now: Moment) -> Decision {
        let id = Uuid::new_v4();
        let info = self.servers.entry(server).or_default();
        info.incident = Some(OpenIncident {
            id,
            reason,
            opened: now.wall,
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

    fn returned(&mut self, server: Uuid, now: Moment) -> Option<Decision> {
        let incident = self.servers.get_mut(&server)?.incident.as_mut()?;
        incident.returned = Some(now.wall);
        Some(Decision::Returned {
            server,
            incident: incident.id,
            announced: incident.announced,
        })
    }

    /// Servers whose relay has not been heard from for longer than the
    /// heartbeat timeout at `now`: each opens an incident.
    pub fn silent_servers(&mut self, now: impl Into<Moment>) -> Vec<Decision> {
        let now = now.into();
        let timeout = self.settings.heartbeat_timeout.as_millis() as EpochMs;
        let silent: Vec<Uuid> = self
            .servers
            .iter()
            .filter(|(_, s)| s.has_relay && s.incident.is_none() && s.heard.is_some_and(|t| now.steady - t > timeout))
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
        for (contact, address) in resolve_contacts(names, &w.book) {
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

#[cfg(test)]
mod tests {
    //! The flood guard's decisions with explicit times (master milliseconds):
    //! when an incident opens, what it lists, when it ends, what it releases,
    //! and who gets which machines.

    use std::sync::Arc;

    use super::*;
    use crate::model::{AccountBook, Contact, Medium, Probe, ProbeGroup};

    const T0: EpochMs = 1_700_000_000_000;
    const SECOND: EpochMs = 1_000;

    /// 5 machines (or half of a server known to have at least 5) down within
    /// 10 s make a burst; a relay silent for 30 s has lost its heartbeats.
    fn settings() -> GuardSettings {
        GuardSettings {
            hold: Duration::from_secs(60),
            burst_count: 5,
            burst_percent: 50,
            heartbeat_timeout: Duration::from_secs(30),
            burst_window: Duration::from_secs(10),
        }
    }

    /// Folded monitors are named by strings here.
    fn flood() -> Flood<&'static str> {
        Flood::new(settings())
    }

    fn uuids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    /// `machine` on `server`, reported by the server's own relay.
    fn machine(f: &mut Flood<&'static str>, machine: Uuid, server: Uuid, up: bool, now: EpochMs) -> Option<Decision> {
        f.sight(
            Sighting::Machine {
                machine,
                server,
                relay: server,
                alias: None,
                up,
                time: now,
            },
            now,
        )
    }

    fn relay(f: &mut Flood<&'static str>, server: Uuid, kind: ServerEventKind, now: EpochMs) -> Option<Decision> {
        f.sight(
            Sighting::Server {
                server,
                hostname: Some("cn-7".into()),
                kind,
            },
            now,
        )
    }

    /// The incident a decision opened, and why.
    fn opened(decision: Option<Decision>) -> (Uuid, IncidentReason) {
        match decision {
            Some(Decision::Opened { incident, reason, .. }) => (incident, reason),
            other => panic!("expected an incident to open, got {other:?}"),
        }
    }

    /// `n` machines seen running on `server` at `now`.
    fn running(f: &mut Flood<&'static str>, server: Uuid, n: usize, now: EpochMs) -> Vec<Uuid> {
        let machines = uuids(n);
        for m in &machines {
            assert_eq!(machine(f, *m, server, true, now), None);
        }
        machines
    }

    fn sorted(mut machines: Vec<Uuid>) -> Vec<Uuid> {
        machines.sort();
        machines
    }

    #[test]
    fn announce_waits_one_hold_and_never_less_than_the_burst_window() {
        assert_eq!(settings().announce_after(), Duration::from_secs(60));
        let short_hold = GuardSettings {
            hold: Duration::from_secs(2),
            ..settings()
        };
        assert_eq!(short_hold.announce_after(), Duration::from_secs(10));
    }

    #[test]
    fn burst_count_machines_down_within_the_window_open_an_incident() {
        let mut f = flood();
        let server = Uuid::new_v4();
        let downs = uuids(5);
        for (i, m) in downs[..4].iter().enumerate() {
            let at = T0 + i as EpochMs * 2 * SECOND;
            assert_eq!(
                machine(&mut f, *m, server, false, at),
                None,
                "{} down is no burst",
                i + 1
            );
        }
        let (_, reason) = opened(machine(&mut f, downs[4], server, false, T0 + 8 * SECOND));
        assert_eq!(reason, IncidentReason::Burst);
        // More machines going down join the incident: no second one.
        assert_eq!(machine(&mut f, Uuid::new_v4(), server, false, T0 + 9 * SECOND), None);
    }

    #[test]
    fn burst_percent_of_a_known_server_opens_an_incident() {
        let mut f = flood();
        let server = Uuid::new_v4();
        let machines = running(&mut f, server, 6, T0);
        // 2 of 6 is a third: not yet half.
        assert_eq!(machine(&mut f, machines[0], server, false, T0 + SECOND), None);
        assert_eq!(machine(&mut f, machines[1], server, false, T0 + SECOND), None);
        // 3 of 6 is half, though fewer than burst_count.
        let (_, reason) = opened(machine(&mut f, machines[2], server, false, T0 + 2 * SECOND));
        assert_eq!(reason, IncidentReason::Burst);
    }

    #[test]
    fn two_crashes_on_a_server_known_by_fewer_than_burst_count_machines_are_no_burst() {
        let mut f = flood();
        let server = Uuid::new_v4();
        let machines = running(&mut f, server, 2, T0);
        // All (100 %) of what we know, but we know too little to tell.
        assert_eq!(machine(&mut f, machines[0], server, false, T0 + SECOND), None);
        assert_eq!(machine(&mut f, machines[1], server, false, T0 + SECOND), None);
        assert!(f.views()[0].incident.is_none());
    }

    #[test]
    fn downs_spread_beyond_the_burst_window_are_no_burst() {
        let mut f = flood();
        let server = Uuid::new_v4();
        // One every 3 s: never more than 4 within 10 s, however many.
        for i in 0..20 {
            let at = T0 + i * 3 * SECOND;
            assert_eq!(machine(&mut f, Uuid::new_v4(), server, false, at), None, "down #{i}");
        }
        let view = &f.views()[0];
        assert_eq!((view.machines, view.machines_down), (20, 20));
        assert!(view.incident.is_none());
    }

    #[test]
    fn a_machine_back_up_within_the_window_no_longer_counts_for_a_burst() {
        // By count only: the machine back up is running, and 4 of 5 would
        // be a burst by percent.
        let mut f = Flood::new(GuardSettings {
            burst_percent: 100,
            ..settings()
        });
        let server = Uuid::new_v4();
        let downs = uuids(4);
        for m in &downs {
            assert_eq!(machine(&mut f, *m, server, false, T0), None);
        }
        // A reboot: down and up again.
        assert_eq!(machine(&mut f, downs[0], server, true, T0 + SECOND), None);
        assert_eq!(
            machine(&mut f, Uuid::new_v4(), server, false, T0 + 2 * SECOND),
            None,
            "still 4 down"
        );
        opened(machine(&mut f, Uuid::new_v4(), server, false, T0 + 3 * SECOND));
    }

    #[test]
    fn a_relay_silent_past_the_heartbeat_timeout_opens_an_incident_once() {
        let mut f = flood();
        let server = Uuid::new_v4();
        assert_eq!(relay(&mut f, server, ServerEventKind::Heartbeat, T0), None);
        assert_eq!(
            f.silent_servers(T0 + 30 * SECOND),
            vec![],
            "exactly the timeout is not past it"
        );
        let decisions = f.silent_servers(T0 + 30 * SECOND + 1);
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert!(matches!(
            &decisions[0],
            Decision::Opened { server: s, reason: IncidentReason::HeartbeatLost, hostname: Some(h), .. }
                if *s == server && h == "cn-7"
        ));
        assert_eq!(
            f.silent_servers(T0 + 90 * SECOND),
            vec![],
            "its incident is open already"
        );
    }

    /// A reading after the wall clock was stepped by `step` (NTP): steady
    /// time goes on, the wall clock is off by the step.
    fn stepped(steady: EpochMs, step: EpochMs) -> Moment {
        Moment {
            wall: steady + step,
            steady,
        }
    }

    const HOUR: EpochMs = 3_600 * SECOND;

    #[test]
    fn a_step_of_the_wall_clock_neither_silences_a_relay_nor_hides_a_silent_one() {
        let mut f = flood();
        let server = Uuid::new_v4();
        assert_eq!(relay(&mut f, server, ServerEventKind::Heartbeat, T0), None);
        // An hour forward, a second later: heard from a second ago.
        assert_eq!(f.silent_servers(stepped(T0 + SECOND, HOUR)), vec![]);
        // An hour back, just past the timeout: silent all the same.
        let decisions = f.silent_servers(stepped(T0 + 30 * SECOND + 1, -HOUR));
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        // What people are shown is wall-clock time.
        let view = &f.views()[0];
        assert_eq!(view.last_seen, Some(T0));
        assert_eq!(
            view.incident.as_ref().map(|i| i.opened),
            Some(T0 + 30 * SECOND + 1 - HOUR)
        );
    }

    #[test]
    fn downs_spread_beyond_the_burst_window_are_no_burst_whatever_the_wall_clock_says() {
        let mut f = flood();
        let server = Uuid::new_v4();
        // Five downs a minute apart, the wall clock stepped back a minute
        // before each: by the wall clock, all at once.
        for (i, m) in uuids(5).into_iter().enumerate() {
            let steady = T0 + i as EpochMs * 60 * SECOND;
            let at = stepped(steady, -(i as EpochMs) * 60 * SECOND);
            assert_eq!(at.wall, T0);
            let sighting = Sighting::Machine {
                machine: m,
                server,
                relay: server,
                alias: None,
                up: false,
                time: at.wall,
            };
            assert_eq!(f.sight(sighting, at), None, "down {i} is no burst");
        }
    }

    #[test]
    fn any_event_from_a_relay_proves_it_alive() {
        let mut f = flood();
        let server = Uuid::new_v4();
        relay(&mut f, server, ServerEventKind::Started, T0);
        machine(&mut f, Uuid::new_v4(), server, true, T0 + 20 * SECOND);
        assert_eq!(f.silent_servers(T0 + 45 * SECOND), vec![]);
        assert_eq!(f.silent_servers(T0 + 50 * SECOND + 1).len(), 1);
    }

    #[test]
    fn a_server_that_never_ran_a_relay_never_goes_silent() {
        let mut f = flood();
        // A simulated server: machine events only, no server event ever.
        machine(&mut f, Uuid::new_v4(), Uuid::new_v4(), true, T0);
        assert_eq!(f.silent_servers(T0 + 3_600 * SECOND), vec![]);
    }

    #[test]
    fn an_announced_shutdown_opens_an_incident_once() {
        let mut f = flood();
        let server = Uuid::new_v4();
        let (_, reason) = opened(relay(&mut f, server, ServerEventKind::ShuttingDown, T0));
        assert_eq!(reason, IncidentReason::Shutdown);
        assert_eq!(relay(&mut f, server, ServerEventKind::ShuttingDown, T0 + SECOND), None);
    }

    #[test]
    fn the_relay_starting_again_ends_a_shutdown_and_a_reboot_is_never_announced() {
        let mut f = flood();
        let server = Uuid::new_v4();
        running(&mut f, server, 3, T0);
        let (incident, _) = opened(relay(&mut f, server, ServerEventKind::ShuttingDown, T0));
        assert_eq!(f.views()[0].incident.as_ref().map(|i| i.id), Some(incident));
        assert_eq!(
            relay(&mut f, server, ServerEventKind::Started, T0 + 20 * SECOND),
            Some(Decision::Returned {
                server,
                incident,
                announced: false
            })
        );
        assert_eq!(
            relay(&mut f, server, ServerEventKind::Heartbeat, T0 + 21 * SECOND),
            None,
            "back once"
        );
        // Its announcement, due a hold after it opened, finds it back.
        assert_eq!(f.announce(server, incident), None);
        let settled = f.settle(server, incident).expect("it settles");
        assert_eq!(settled.summary, None, "never announced: no summary");
        assert!(f.views()[0].incident.is_none());
    }

    #[test]
    fn heartbeats_again_end_a_heartbeat_incident() {
        let mut f = flood();
        let server = Uuid::new_v4();
        relay(&mut f, server, ServerEventKind::Heartbeat, T0);
        let decisions = f.silent_servers(T0 + 31 * SECOND);
        let Some(Decision::Opened { incident, .. }) = decisions.first().cloned() else {
            panic!("{decisions:?}");
        };
        assert!(matches!(
            relay(&mut f, server, ServerEventKind::Heartbeat, T0 + 40 * SECOND),
            Some(Decision::Returned { incident: i, .. }) if i == incident
        ));
    }

    #[test]
    fn a_burst_ends_when_its_machines_come_back_not_on_a_heartbeat() {
        let mut f = flood();
        let server = Uuid::new_v4();
        relay(&mut f, server, ServerEventKind::Started, T0);
        let downs = uuids(6);
        let mut decision = None;
        for m in &downs {
            decision = decision.or(machine(&mut f, *m, server, false, T0 + SECOND));
        }
        let (incident, _) = opened(decision);
        assert_eq!(relay(&mut f, server, ServerEventKind::Heartbeat, T0 + 2 * SECOND), None);
        // 5 down is burst_count; 4 and 3 of the 6 are still at least half.
        assert_eq!(machine(&mut f, downs[0], server, true, T0 + 3 * SECOND), None);
        assert_eq!(machine(&mut f, downs[1], server, true, T0 + 4 * SECOND), None);
        assert_eq!(machine(&mut f, downs[2], server, true, T0 + 5 * SECOND), None);
        assert_eq!(
            machine(&mut f, downs[3], server, true, T0 + 6 * SECOND),
            Some(Decision::Returned {
                server,
                incident,
                announced: false
            }),
            "2 down of 6 is no burst any more"
        );
    }

    #[test]
    fn a_silent_or_shut_down_server_is_announced_with_all_its_machines_a_burst_with_those_down() {
        let mut f = flood();
        let silent = Uuid::new_v4();
        let all = running(&mut f, silent, 3, T0);
        let (incident, _) = opened(relay(&mut f, silent, ServerEventKind::ShuttingDown, T0));
        let message = f.announce(silent, incident).expect("announced");
        assert_eq!(
            sorted(message.machines),
            sorted(all.clone()),
            "its relay may stop before reporting them"
        );
        assert_eq!(message.draft.reason, IncidentReason::Shutdown);
        assert_eq!(message.draft.hostname.as_deref(), Some("cn-7"));
        assert_eq!(message.draft.returned, None);

        let burst = Uuid::new_v4();
        let up = running(&mut f, burst, 4, T0);
        let downs = uuids(5);
        let mut decision = None;
        for m in &downs {
            decision = decision.or(machine(&mut f, *m, burst, false, T0 + SECOND));
        }
        let (incident, _) = opened(decision);
        let message = f.announce(burst, incident).expect("announced");
        assert_eq!(sorted(message.machines.clone()), sorted(downs), "not {up:?}");
        assert!(f
            .views()
            .iter()
            .any(|v| v.uuid == burst && v.incident.as_ref().is_some_and(|i| i.announced)));
    }

    #[test]
    fn a_stale_timer_announces_and_settles_nothing() {
        let mut f = flood();
        let server = Uuid::new_v4();
        let (first, _) = opened(relay(&mut f, server, ServerEventKind::ShuttingDown, T0));
        relay(&mut f, server, ServerEventKind::Started, T0 + SECOND);
        assert!(f.settle(server, first).is_some());
        let (second, _) = opened(relay(&mut f, server, ServerEventKind::ShuttingDown, T0 + 2 * SECOND));
        // The first incident's timers, late: they concern the second nothing.
        assert_eq!(f.announce(server, first), None);
        assert!(f.settle(server, first).is_none());
        assert!(f.announce(server, second).is_some());
        assert!(f.announce(Uuid::new_v4(), second).is_none(), "an unknown server");
    }

    #[test]
    fn folded_monitors_are_released_once_each_when_the_incident_settles() {
        let mut f = flood();
        let server = Uuid::new_v4();
        assert!(!f.fold(server, "web0"), "no incident: notify as usual");
        let (incident, _) = opened(relay(&mut f, server, ServerEventKind::ShuttingDown, T0));
        assert!(f.fold(server, "web0"));
        assert!(f.fold(server, "db0"));
        assert!(f.fold(server, "web0"));
        assert!(!f.fold(Uuid::new_v4(), "other"), "another server is fine");
        relay(&mut f, server, ServerEventKind::Started, T0 + 90 * SECOND);
        // Back, but not settled: faults whose hold runs out now still fold.
        assert!(f.fold(server, "api0"));
        let settled = f.settle(server, incident).unwrap();
        assert_eq!(settled.folded, vec!["web0", "db0", "api0"]);
        assert!(!f.fold(server, "web0"), "over: faults are notified as usual");
        assert!(f.settle(server, incident).is_none(), "settled once");
    }

    #[test]
    fn the_summary_lists_the_announced_machines_and_threads_under_the_announcement() {
        let mut f = flood();
        let server = Uuid::new_v4();
        let machines = running(&mut f, server, 2, T0);
        let (incident, _) = opened(relay(&mut f, server, ServerEventKind::ShuttingDown, T0));
        let announced = f.announce(server, incident).unwrap();
        let root = Uuid::new_v4();
        f.roots_mut(server).unwrap().insert((Uuid::nil(), "email".into()), root);
        // A machine seen only after the announcement gets its own alarm.
        machine(&mut f, Uuid::new_v4(), server, false, T0 + 70 * SECOND);
        relay(&mut f, server, ServerEventKind::Started, T0 + 80 * SECOND);
        let (summary, roots) = f
            .settle(server, incident)
            .unwrap()
            .summary
            .expect("announced: a summary");
        assert_eq!(sorted(summary.machines.clone()), sorted(machines));
        assert_eq!(
            summary.machines, announced.machines,
            "the very list of the announcement"
        );
        assert_eq!(summary.draft.returned, Some(T0 + 80 * SECOND));
        assert_eq!(summary.draft.opened, T0);
        assert_eq!(roots.get(&(Uuid::nil(), "email".into())), Some(&root));
        assert!(f.roots_mut(server).is_none(), "no incident open any more");
    }

    #[test]
    fn a_snapshot_shows_aliases_and_who_is_down_now() {
        let mut f = flood();
        let server = Uuid::new_v4();
        let (web, db) = (Uuid::new_v4(), Uuid::new_v4());
        f.sight(
            Sighting::Machine {
                machine: web,
                server,
                relay: server,
                alias: Some("web0".into()),
                up: true,
                time: T0,
            },
            T0,
        );
        machine(&mut f, web, server, false, T0 + SECOND);
        machine(&mut f, db, server, true, T0 + SECOND);
        let snapshot = f.snapshot(&[web, db, Uuid::new_v4()]);
        assert_eq!(snapshot.len(), 2, "an unknown machine is left out");
        assert_eq!(
            snapshot[&web],
            (Some("web0".into()), true),
            "an alias is kept when none is given"
        );
        assert_eq!(snapshot[&db], (None, false));
    }

    #[test]
    fn views_count_each_servers_machines_as_they_move() {
        let mut f = flood();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let m = Uuid::new_v4();
        machine(&mut f, m, a, false, T0);
        machine(&mut f, Uuid::new_v4(), a, true, T0);
        // The machine migrates to b, up.
        machine(&mut f, m, b, true, T0 + SECOND);
        let views = f.views();
        let count = |s: Uuid| {
            let v = views.iter().find(|v| v.uuid == s).unwrap();
            (v.machines, v.machines_down)
        };
        assert_eq!(count(a), (1, 0));
        assert_eq!(count(b), (1, 0));
        assert!(views.windows(2).all(|w| w[0].uuid < w[1].uuid), "sorted by uuid");
    }

    #[test]
    fn machines_known_before_a_restart_count_for_their_server() {
        let mut f = flood();
        let server = Uuid::new_v4();
        let machines = uuids(6);
        for (i, m) in machines.iter().enumerate() {
            f.remember(*m, server, None, i != 0);
        }
        let count = |f: &Flood<&'static str>| {
            let v = &f.views()[0];
            (v.machines, v.machines_down)
        };
        assert_eq!(count(&f), (6, 1));
        // Seen again after the restart: moved, not counted twice.
        assert_eq!(machine(&mut f, machines[0], server, true, T0), None);
        assert_eq!(machine(&mut f, machines[1], server, false, T0), None);
        assert_eq!(count(&f), (6, 1));
        // Half of the 6 known going down is a burst.
        assert_eq!(machine(&mut f, machines[2], server, false, T0 + SECOND), None);
        opened(machine(&mut f, machines[3], server, false, T0 + SECOND));
    }

    // ---- one share per contact ----

    fn account(login: &str) -> Account {
        Account {
            uuid: Uuid::new_v4(),
            login: login.into(),
            email: format!("{login}@example.com"),
            operator: false,
            attributes: Default::default(),
        }
    }

    fn book(account: Account, contacts: &[(&str, &str)]) -> Arc<AccountBook> {
        let contacts = contacts
            .iter()
            .map(|(name, url)| {
                let contact = Contact {
                    name: name.to_string(),
                    medium: Medium::Webhook,
                    address: url.to_string(),
                };
                (name.to_string(), contact)
            })
            .collect();
        Arc::new(AccountBook { account, contacts })
    }

    fn probe(user: Uuid, contacts: &[&str], group: Option<Uuid>) -> Arc<Probe> {
        crate::actors::testkit::machine_probe(user, None, contacts, group)
    }

    fn group(user: Uuid, contacts: &[&str]) -> Arc<ProbeGroup> {
        Arc::new(ProbeGroup {
            uuid: Uuid::new_v4(),
            name: Some("web".into()),
            user,
            contacts: contacts.iter().map(|c| c.to_string()).collect(),
            disabled: false,
            hold: None,
            renotify: None,
        })
    }

    fn watcher(machine: Uuid, probe: &Arc<Probe>, group: Option<&Arc<ProbeGroup>>, book: &Arc<AccountBook>) -> Watcher {
        Watcher {
            machine,
            probe: probe.clone(),
            group: group.cloned(),
            book: book.clone(),
        }
    }

    /// (account login, contact name) → the uuids of its machines.
    fn by_contact(shares: &[ContactShare]) -> BTreeMap<(String, String), Vec<Uuid>> {
        shares
            .iter()
            .map(|s| {
                let key = (s.account.login.clone(), s.contact_name.clone());
                (key, s.machines.iter().map(|m| m.uuid).collect())
            })
            .collect()
    }

    #[test]
    fn each_contact_gets_one_share_with_its_own_machines() {
        let server = Uuid::new_v4();
        let [web0, web1, db0] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        let jill = book(account("jill"), &[("pager", "https://pager.example.com/hook")]);
        let bob = book(account("bob"), &[]);
        let jill_probe = probe(jill.account.uuid, &["email", "pager"], None);
        let jill_db = probe(jill.account.uuid, &["pager"], None);
        let bob_probe = probe(bob.account.uuid, &["email"], None);
        let watchers = vec![
            watcher(web0, &jill_probe, None, &jill),
            watcher(web1, &jill_probe, None, &jill),
            watcher(db0, &jill_db, None, &jill),
            watcher(web0, &bob_probe, None, &bob),
        ];
        let snapshot: MachineSnapshot = [
            (web0, (Some("web0".into()), true)),
            (web1, (Some("web1".into()), false)),
            (db0, (None, true)),
        ]
        .into();
        let mut roots = Roots::new();
        let shares = shares(
            NotificationKind::ServerDown,
            server,
            watchers,
            &snapshot,
            &mut roots,
            |_| false,
        );
        let expected: BTreeMap<(String, String), Vec<Uuid>> = [
            (("jill".into(), "email".into()), vec![web0, web1]),
            (("jill".into(), "pager".into()), vec![web0, web1, db0]),
            (("bob".into(), "email".into()), vec![web0]),
        ]
        .into();
        assert_eq!(by_contact(&shares), expected);
        let pager = shares.iter().find(|s| s.contact_name == "pager").unwrap();
        assert_eq!(
            pager.contact,
            ContactAddress::Webhook("https://pager.example.com/hook".into())
        );
        let jill_email = shares
            .iter()
            .find(|s| s.account.login == "jill" && s.contact_name == "email")
            .unwrap();
        assert_eq!(jill_email.contact, ContactAddress::Email("jill@example.com".into()));
        let web1_listed = &jill_email.machines[1];
        assert_eq!((web1_listed.alias.as_deref(), web1_listed.down), (Some("web1"), false));
        assert_eq!(web1_listed.probe.uuid, jill_probe.uuid);
        // Every share is a first message: each is a root, none threads.
        assert_eq!(roots.len(), 3);
        assert!(shares
            .iter()
            .all(|s| s.thread_root.is_none() && roots[&(s.account.uuid, s.contact_name.clone())] == s.id));
    }

    #[test]
    fn a_groups_contacts_replace_its_probes() {
        let server = Uuid::new_v4();
        let web0 = Uuid::new_v4();
        let jill = book(account("jill"), &[("ops", "https://ops.example.com/hook")]);
        let web = group(jill.account.uuid, &["ops"]);
        let member = probe(jill.account.uuid, &["email"], Some(web.uuid));
        let snapshot: MachineSnapshot = [(web0, (None, true))].into();
        let shares = shares(
            NotificationKind::ServerDown,
            server,
            vec![watcher(web0, &member, Some(&web), &jill)],
            &snapshot,
            &mut Roots::new(),
            |_| false,
        );
        assert_eq!(
            by_contact(&shares).into_keys().collect::<Vec<_>>(),
            vec![("jill".to_string(), "ops".to_string())]
        );
        assert_eq!(shares[0].machines[0].probe.group, Some(web.uuid));
    }

    #[test]
    fn machines_under_maintenance_are_left_out_and_a_contact_left_with_none_gets_nothing() {
        let server = Uuid::new_v4();
        let [web0, db0] = [Uuid::new_v4(), Uuid::new_v4()];
        let jill = book(account("jill"), &[]);
        let bob = book(account("bob"), &[]);
        let jill_probe = probe(jill.account.uuid, &["email"], None);
        let bob_probe = probe(bob.account.uuid, &["email"], None);
        let snapshot: MachineSnapshot = [(web0, (None, true)), (db0, (None, true))].into();
        let watchers = vec![
            watcher(web0, &jill_probe, None, &jill),
            watcher(db0, &jill_probe, None, &jill),
            watcher(db0, &bob_probe, None, &bob),
            // A machine not listed (not in the snapshot) is nobody's business.
            watcher(Uuid::new_v4(), &bob_probe, None, &bob),
        ];
        let asked = std::cell::Cell::new(0);
        // db0 is under maintenance (for every probe), and so is all of bob.
        let covered = |site: &FaultSite| {
            assert_eq!(site.server, Some(server));
            site.machine == Some(db0) || site.user == bob.account.uuid
        };
        let shares = shares(
            NotificationKind::ServerDown,
            server,
            watchers,
            &snapshot,
            &mut Roots::new(),
            |site| {
                asked.set(asked.get() + 1);
                covered(site)
            },
        );
        assert_eq!(
            by_contact(&shares),
            [(("jill".to_string(), "email".to_string()), vec![web0])].into()
        );
        assert_eq!(asked.get(), 3, "asked about each listed machine of each probe");
    }

    #[test]
    fn a_summary_threads_under_each_contacts_announcement() {
        let server = Uuid::new_v4();
        let web0 = Uuid::new_v4();
        let jill = book(account("jill"), &[]);
        let bob = book(account("bob"), &[]);
        let jill_probe = probe(jill.account.uuid, &["email"], None);
        let bob_probe = probe(bob.account.uuid, &["email"], None);
        let snapshot: MachineSnapshot = [(web0, (None, true))].into();
        let mut roots = Roots::new();
        let down = shares(
            NotificationKind::ServerDown,
            server,
            vec![watcher(web0, &jill_probe, None, &jill)],
            &snapshot,
            &mut roots,
            |_| false,
        );
        let back = shares(
            NotificationKind::ServerBack,
            server,
            vec![
                watcher(web0, &jill_probe, None, &jill),
                // Bob's probe came after the announcement: no root to thread under.
                watcher(web0, &bob_probe, None, &bob),
            ],
            &snapshot,
            &mut roots,
            |_| false,
        );
        let jill_back = back.iter().find(|s| s.account.login == "jill").unwrap();
        assert_eq!(jill_back.thread_root, Some(down[0].id));
        assert_ne!(jill_back.id, down[0].id);
        let bob_back = back.iter().find(|s| s.account.login == "bob").unwrap();
        assert_eq!(bob_back.thread_root, None);
        assert_eq!(roots.len(), 2);
        assert_eq!(
            roots[&(jill.account.uuid, "email".into())],
            down[0].id,
            "a summary never replaces a root"
        );
    }
}
