//! `ServerGuard`: the flood guard (SPEC §6). When a whole server goes down,
//! its operators get one email per contact, not one per machine; when it was
//! a reboot, they get none.
//!
//! It watches every machine and server event the router sees. A **server
//! incident** opens when the server's relay announces a shutdown, when its
//! heartbeats stop for `heartbeat_timeout`, or when at least `burst_count`
//! machines (or `burst_percent` of its running ones, at least two) go down
//! within `burst_window`. Alarm actors ask it, when a machine-down fault's
//! hold runs out (never sooner than the burst window), whether to [`Fold`]
//! the fault into the incident instead of notifying. One hold (at least one
//! burst window) after the incident opened it is **announced**: one
//! `ServerDown` notification per contact listing that contact's machines on
//! the server. When the server returns (its relay starts or heartbeats again;
//! for a burst, when fewer than the threshold are still down), one hold later
//! every announced contact gets one `ServerBack` summary, and then the
//! folded faults are released to their alarm actors, which notify those
//! still down. A server back within the hold was never announced: nobody
//! hears of it, and only machines still down a hold after its return get
//! ordinary alarm emails.
//!
//! Incidents live in memory: a master restart forgets open incidents. Their
//! folded faults are then re-held by their alarm actors and notified one by
//! one after the hold if still open — more email than the incident would
//! have sent, never less. Persisting incidents is future work.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::alarm::{AlarmActor, ReleaseFolded};
use super::notifier::{Deliver, NotifierPool};
use super::router::{EventRouter, ProbesOn};
use super::supervisor::{Lifeline, Named, Stop};
use crate::clock::Clock;
use crate::http::shapes::{IncidentView, ServerView};
use crate::model::{EpochMs, ServerEventKind};
use crate::notify::{
    message_id, resolve_contacts, ContactAddress, Incident, IncidentMachine, IncidentReason, MachineRef, Notification,
    NotificationKind, ProbeRef,
};
use crate::store::{MachineRecord, Store};

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

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Observe(pub Vec<Sighting>);

/// Asked by an alarm actor when a machine-down fault's hold runs out: is the
/// machine's server in an incident? If so the guard will release the fault
/// (with [`ReleaseFolded`]) once the server has returned.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Fold {
    pub server: Uuid,
    pub monitor: Addr<AlarmActor>,
}

struct MachineInfo {
    server: Uuid,
    alias: Option<String>,
    up: bool,
}

struct OpenIncident {
    id: Uuid,
    reason: IncidentReason,
    opened: EpochMs,
    announced: bool,
    returned: Option<EpochMs>,
    /// Machines listed in the announcement (for the summary).
    listed: Vec<Uuid>,
    /// Contacts announced to: (account, contact name) → root notification id.
    roots: HashMap<(Uuid, String), Uuid>,
    /// Alarm actors holding folded faults for this server.
    folded: Vec<Addr<AlarmActor>>,
}

#[derive(Default)]
struct ServerInfo {
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
    incident: Option<OpenIncident>,
}

pub struct GuardEnv {
    /// Machines under maintenance are left out of incident messages.
    pub maintenance: super::maintenance::Maintenance,
    pub settings: GuardSettings,
    pub store: Store,
    pub clock: Clock,
    pub router: Named<EventRouter>,
    pub notifier: Named<NotifierPool>,
    pub datacenter: String,
    pub master_url: String,
}

pub struct ServerGuard {
    env: Arc<GuardEnv>,
    machines: HashMap<Uuid, MachineInfo>,
    /// Machines changed since the last write to the store (written once a
    /// second, the latest state of each: a burst costs one small commit).
    unsaved: HashMap<Uuid, MachineRecord>,
    servers: HashMap<Uuid, ServerInfo>,
    lifeline: Lifeline,
}

impl ServerGuard {
    pub fn new(env: Arc<GuardEnv>, lifeline: Lifeline) -> ServerGuard {
        ServerGuard {
            env,
            machines: HashMap::new(),
            unsaved: HashMap::new(),
            servers: HashMap::new(),
            lifeline,
        }
    }

    fn now(&self) -> EpochMs {
        self.env.clock.now_ms()
    }

    fn burst_window_ms(&self) -> EpochMs {
        self.env.settings.burst_window.as_millis() as EpochMs
    }

    /// How long after opening an incident is announced: one hold, and never
    /// before the burst window has passed, so a burst lists every machine
    /// that went down within it (machine-down faults wait as long).
    fn announce_after(&self) -> Duration {
        self.env.settings.hold.max(self.env.settings.burst_window)
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

    /// Whether `downs` machines down (that went down within the burst window) are a
    /// burst for a server with `running` machines up now. The percentage
    /// counts only once we know at least `burst_count` machines of the
    /// server: with fewer, two crashes would look like half a server.
    fn is_burst(&self, downs: usize, running: usize) -> bool {
        let s = &self.env.settings;
        let known = running + downs;
        downs >= s.burst_count
            || (known >= s.burst_count && downs >= 2 && downs * 100 >= s.burst_percent as usize * known)
    }

    fn sight(&mut self, sighting: Sighting, ctx: &mut Context<Self>) {
        let now = self.now();
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
                    self.maybe_burst_over(server, ctx);
                    return;
                }
                let window = self.burst_window_ms();
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
                if quiet && self.is_burst(downs, running) {
                    self.open(server, IncidentReason::Burst, ctx);
                }
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
                            self.open(server, IncidentReason::Shutdown, ctx);
                        }
                    }
                    ServerEventKind::Started | ServerEventKind::Heartbeat => {
                        let back = info
                            .incident
                            .as_ref()
                            .is_some_and(|i| i.returned.is_none() && i.reason != IncidentReason::Burst);
                        if back {
                            self.returned(server, ctx);
                        }
                    }
                }
            }
        }
    }

    /// A burst incident ends when fewer machines than the threshold are
    /// still down on its server.
    fn maybe_burst_over(&mut self, server: Uuid, ctx: &mut Context<Self>) {
        let down = self.down_count(server);
        let running = self.running_count(server);
        let Some(info) = self.servers.get(&server) else { return };
        let burst_open = info
            .incident
            .as_ref()
            .is_some_and(|i| i.reason == IncidentReason::Burst && i.returned.is_none());
        if burst_open && !self.is_burst(down, running) {
            self.returned(server, ctx);
        }
    }

    fn open(&mut self, server: Uuid, reason: IncidentReason, ctx: &mut Context<Self>) {
        let now = self.now();
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
        tracing::warn!(%server, hostname = info.hostname.as_deref().unwrap_or(""), ?reason, incident = %id, "server incident opened");
        metrics::counter!("amon_server_incidents_total").increment(1);
        // Announce one hold (at least one burst window) later, with every
        // machine that went down by then; a server back before that was a
        // reboot, and nobody hears of it.
        ctx.run_later(self.announce_after(), move |act, ctx| act.announce(server, id, ctx));
    }

    fn returned(&mut self, server: Uuid, ctx: &mut Context<Self>) {
        let now = self.now();
        let Some(incident) = self.servers.get_mut(&server).and_then(|i| i.incident.as_mut()) else {
            return;
        };
        incident.returned = Some(now);
        let id = incident.id;
        tracing::info!(%server, incident = %id, announced = incident.announced, "server returned");
        ctx.run_later(self.env.settings.hold, move |act, ctx| act.settle(server, id, ctx));
    }

    fn announce(&mut self, server: Uuid, id: Uuid, ctx: &mut Context<Self>) {
        let hostname = self.servers.get(&server).and_then(|s| s.hostname.clone());
        let Some(incident) = self.servers.get_mut(&server).and_then(|i| i.incident.as_mut()) else {
            return;
        };
        if incident.id != id || incident.returned.is_some() {
            return;
        }
        incident.announced = true;
        let reason = incident.reason;
        let opened = incident.opened;
        // A silent or shut-down server takes all its machines with it (its
        // relay may stop before it can report them going down); a burst
        // concerns those seen going down.
        let listed: Vec<Uuid> = self
            .machines
            .iter()
            .filter(|(_, m)| m.server == server && (reason != IncidentReason::Burst || !m.up))
            .map(|(uuid, _)| *uuid)
            .collect();
        if let Some(incident) = self.servers.get_mut(&server).and_then(|i| i.incident.as_mut()) {
            incident.listed = listed.clone();
        }
        let view = IncidentDraft {
            id,
            server,
            hostname,
            reason,
            opened,
            returned: None,
        };
        self.notify_contacts(server, view, listed, NotificationKind::ServerDown, None, ctx);
    }

    fn settle(&mut self, server: Uuid, id: Uuid, ctx: &mut Context<Self>) {
        let hostname = self.servers.get(&server).and_then(|s| s.hostname.clone());
        let Some(info) = self.servers.get_mut(&server) else {
            return;
        };
        if info.incident.as_ref().is_none_or(|i| i.id != id) {
            return;
        }
        let Some(incident) = info.incident.take() else { return };
        info.recent_downs.clear();
        info.recent_down.clear();
        if incident.announced {
            let view = IncidentDraft {
                id,
                server,
                hostname,
                reason: incident.reason,
                opened: incident.opened,
                returned: incident.returned,
            };
            // Exactly the machines of the announcement, so each contact's
            // summary threads under (and counts like) its down message;
            // machines that went down later get their own alarms.
            let listed = incident.listed.clone();
            self.notify_contacts(
                server,
                view,
                listed,
                NotificationKind::ServerBack,
                Some(incident.roots.clone()),
                ctx,
            );
        }
        tracing::info!(%server, incident = %id, folded = incident.folded.len(), "server incident closed");
        // After the summary: alarms for machines still down are notified.
        // The guard's own mailbox orders this after the summary is queued.
        let folded = incident.folded;
        ctx.run_later(Duration::ZERO, move |_act, _ctx| {
            for monitor in folded {
                monitor.do_send(ReleaseFolded { server });
            }
        });
    }

    /// Builds and sends one incident notification per contact. `roots`:
    /// for a summary, the settled incident's first message per contact
    /// (the open incident's are used otherwise).
    fn notify_contacts(
        &mut self,
        server: Uuid,
        draft: IncidentDraft,
        machines: Vec<Uuid>,
        kind: NotificationKind,
        roots: Option<HashMap<(Uuid, String), Uuid>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(router) = self.env.router.get() else {
            tracing::error!(%server, "event router not running; incident notification lost");
            return;
        };
        let env = self.env.clone();
        let snapshot: HashMap<Uuid, (Option<String>, bool)> = machines
            .iter()
            .filter_map(|m| self.machines.get(m).map(|info| (*m, (info.alias.clone(), !info.up))))
            .collect();
        ctx.wait(
            async move { router.send(ProbesOn(machines)).await.unwrap_or_default() }
                .into_actor(self)
                .map(move |watchers, act, ctx| {
                    let notifications = match roots {
                        Some(mut roots) => build(&env, &draft, kind, watchers, &snapshot, &mut roots),
                        None => match act.servers.get_mut(&server).and_then(|i| i.incident.as_mut()) {
                            Some(incident) => build(&env, &draft, kind, watchers, &snapshot, &mut incident.roots),
                            None => build(&env, &draft, kind, watchers, &snapshot, &mut HashMap::new()),
                        },
                    };
                    act.send(notifications, ctx);
                }),
        );
    }

    fn send(&mut self, notifications: Vec<Notification>, ctx: &mut Context<Self>) {
        if notifications.is_empty() {
            return;
        }
        let store = self.env.store.clone();
        let notifier = self.env.notifier.clone();
        let now = self.now();
        ctx.wait(
            async move {
                store.enqueue(notifications.clone(), now).await?;
                Ok::<_, crate::store::StoreError>(notifications)
            }
            .into_actor(self)
            .map(move |result, _act, _ctx| match result {
                Ok(notifications) => match notifier.get() {
                    Some(pool) => pool.do_send(Deliver(notifications)),
                    None => tracing::warn!("notifier pool is not running; notifications wait in the outbox"),
                },
                Err(e) => tracing::error!(error = %e, "cannot queue incident notifications"),
            }),
        );
    }

    fn check_heartbeats(&mut self, ctx: &mut Context<Self>) {
        let now = self.now();
        let timeout = self.env.settings.heartbeat_timeout.as_millis() as EpochMs;
        let silent: Vec<Uuid> = self
            .servers
            .iter()
            .filter(|(_, s)| s.has_relay && s.incident.is_none() && s.last_seen.is_some_and(|t| now - t > timeout))
            .map(|(uuid, _)| *uuid)
            .collect();
        for server in silent {
            self.open(server, IncidentReason::HeartbeatLost, ctx);
        }
    }
}

/// The incident fields common to every contact's notification.
struct IncidentDraft {
    id: Uuid,
    server: Uuid,
    hostname: Option<String>,
    reason: IncidentReason,
    opened: EpochMs,
    returned: Option<EpochMs>,
}

/// One notification per (account, contact) among the probes watching the
/// machines. `roots` remembers each contact's first (ServerDown) message so
/// the summary threads under it.
fn build(
    env: &GuardEnv,
    draft: &IncidentDraft,
    kind: NotificationKind,
    watchers: Vec<super::router::Watcher>,
    machines: &HashMap<Uuid, (Option<String>, bool)>,
    roots: &mut HashMap<(Uuid, String), Uuid>,
) -> Vec<Notification> {
    // (account uuid, contact) → (account, address, machines)
    let mut per_contact: BTreeMap<(Uuid, String), (crate::model::Account, ContactAddress, Vec<IncidentMachine>)> =
        BTreeMap::new();
    for w in watchers {
        let Some((alias, down)) = machines.get(&w.machine) else {
            continue;
        };
        let site = crate::model::FaultSite {
            user: w.book.account.uuid,
            probe: w.probe.uuid,
            group: w.probe.group,
            machine: Some(w.machine),
            server: Some(draft.server),
        };
        if env.maintenance.covers(&site, env.clock.now_ms()) {
            continue; // under maintenance: nobody is told
        }
        // A group's contacts replace its probes' (Amon's rule).
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
        .map(|((account_uuid, contact_name), (account, address, list))| {
            let key = (account_uuid, contact_name.clone());
            let (id, thread_root) = match (kind, roots.get(&key)) {
                (NotificationKind::ServerBack, Some(root)) => {
                    (Uuid::new_v4(), Some(message_id(*root, &env.datacenter)))
                }
                _ => {
                    let id = Uuid::new_v4();
                    roots.insert(key, id);
                    (id, None)
                }
            };
            let first = list.first().cloned();
            Notification {
                id,
                kind,
                contact_name,
                contact: address,
                datacenter: env.datacenter.clone(),
                account_uuid,
                account_login: account.login.clone(),
                alarm_id: 0,
                alarm_closed: false,
                alarm_fault_count: list.iter().filter(|m| m.down).count(),
                probe: first.as_ref().map(|m| m.probe.clone()).unwrap_or(ProbeRef {
                    uuid: Uuid::nil(),
                    name: None,
                    probe_type: "machine-up".into(),
                    group: None,
                }),
                machine: first.as_ref().map(|m| MachineRef {
                    uuid: m.uuid,
                    alias: m.alias.clone(),
                    server: Some(draft.server),
                }),
                message: match kind {
                    NotificationKind::ServerBack => format!("Server {} is back.", draft.server),
                    _ => format!("Server {} is down.", draft.server),
                },
                event_time: draft.returned.unwrap_or(draft.opened),
                thread_root,
                master_url: env.master_url.clone(),
                event_json: serde_json::Value::Null,
                incident: Some(Incident {
                    id: draft.id,
                    server: draft.server,
                    hostname: draft.hostname.clone(),
                    reason: draft.reason,
                    opened: draft.opened,
                    returned: draft.returned,
                    machines: list,
                }),
                digest: Vec::new(),
            }
        })
        .collect()
}

impl Actor for ServerGuard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(16 * 1024);
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            act.check_heartbeats(ctx);
            act.save_machines(ctx);
        });
        // What we knew of machines before a restart.
        let store = self.env.store.clone();
        ctx.wait(
            async move { store.all_machines().await }
                .into_actor(self)
                .map(|result, act, _ctx| match result {
                    Ok(machines) => {
                        for m in machines {
                            act.servers.entry(m.server).or_default();
                            act.machines.insert(
                                m.uuid,
                                MachineInfo {
                                    server: m.server,
                                    alias: m.alias,
                                    up: m.up,
                                },
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot load machines; the guard starts blind"),
                }),
        );
    }
}

impl Handler<Observe> for ServerGuard {
    type Result = ();

    fn handle(&mut self, msg: Observe, ctx: &mut Context<Self>) {
        for sighting in &msg.0 {
            if let Sighting::Machine {
                machine,
                server,
                alias,
                up,
                ..
            } = sighting
            {
                // Kept so a restarted master still knows each server's machines.
                self.unsaved.insert(
                    *machine,
                    MachineRecord {
                        uuid: *machine,
                        server: *server,
                        alias: alias.clone(),
                        up: *up,
                    },
                );
            }
        }
        for sighting in msg.0 {
            self.sight(sighting, ctx);
        }
    }
}

impl ServerGuard {
    fn save_machines(&mut self, ctx: &mut Context<Self>) {
        if self.unsaved.is_empty() {
            return;
        }
        let machines: Vec<MachineRecord> = self.unsaved.drain().map(|(_, m)| m).collect();
        let store = self.env.store.clone();
        let now = self.now();
        ctx.spawn(
            async move {
                if let Err(e) = store.put_machines(machines, now).await {
                    tracing::warn!(error = %e, "cannot record machines");
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Fold> for ServerGuard {
    type Result = bool;

    fn handle(&mut self, msg: Fold, _ctx: &mut Context<Self>) -> bool {
        match self.servers.get_mut(&msg.server).and_then(|s| s.incident.as_mut()) {
            Some(incident) => {
                if !incident.folded.contains(&msg.monitor) {
                    incident.folded.push(msg.monitor);
                }
                true
            }
            None => false,
        }
    }
}

/// What the guard knows of every server (for `GET /servers`).
#[derive(Debug, Message)]
#[rtype(result = "Vec<ServerView>")]
pub struct GetServers;

impl Handler<GetServers> for ServerGuard {
    type Result = Vec<ServerView>;

    fn handle(&mut self, _: GetServers, _ctx: &mut Context<Self>) -> Vec<ServerView> {
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

impl Handler<Stop> for ServerGuard {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, _ctx: &mut Context<Self>) -> Self::Result {
        // What changed in the last second is written before we go.
        let machines: Vec<MachineRecord> = self.unsaved.drain().map(|(_, m)| m).collect();
        let store = self.env.store.clone();
        let now = self.now();
        Box::pin(
            async move {
                if !machines.is_empty() {
                    if let Err(e) = store.put_machines(machines, now).await {
                        tracing::warn!(error = %e, "cannot record machines at shutdown");
                    }
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.lifeline.exit_normally();
                ctx.stop();
            }),
        )
    }
}
