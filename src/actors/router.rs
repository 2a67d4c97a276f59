//! `EventRouter`: takes committed events and hands each to the alarm actor of
//! every monitor it concerns, starting (and supervising) those actors as
//! needed. It keeps the probe index in memory: machine → machine-up probes.
//!
//! It is a dynamic supervisor: an alarm actor that crashes is restarted with
//! fresh state (its open alarm reloaded from the store) after a backoff; one
//! that crashes too often escalates, and the router fails to its supervisor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio::time::Instant;
use uuid::Uuid;

use super::alarm::{
    AccountUpdated, AlarmActor, AlarmCommand, AlarmEnv, CommandError, MonitorEvent, MonitorGone, ProbeGone,
};
use super::server_guard::{Observe, Sighting};
use super::supervisor::{ChildExited, ExitReason, Lifeline, RestartDecision, RestartPolicy, RestartTracker, Stop};
use crate::model::{
    Account, AccountBook, Contact, Event, MachineEvent, MonitorKey, Probe, ProbeEvent, ProbeEventData, ProbeGroup,
    ProbeType,
};
use crate::store::Store;

/// Tracks one routed batch until every alarm actor it went to has committed
/// its share; then the batch's events are marked routed in the store. An
/// actor that never calls [`RouteTicket::done`] (a crash, a full mailbox, a
/// process killed mid-way) leaves the events unrouted, and they are replayed
/// when the master starts again.
pub struct RouteTicket {
    pending: AtomicUsize,
    events: RoutedEvents,
    store: Store,
}

/// Which events a ticket marks routed when done.
#[derive(Debug, Clone)]
enum RoutedEvents {
    /// One commit's events, by their (consecutive) sequence numbers.
    Range(i64, i64),
    /// Events replayed at start, one by one.
    Uuids(Vec<Uuid>),
}

impl RouteTicket {
    fn new(deliveries: usize, events: RoutedEvents, store: Store) -> Arc<RouteTicket> {
        Arc::new(RouteTicket {
            pending: AtomicUsize::new(deliveries),
            events,
            store,
        })
    }

    fn finish(&self) {
        let store = self.store.clone();
        let events = self.events.clone();
        actix::spawn(async move {
            let marked = match events {
                RoutedEvents::Range(first, last) => store.mark_routed_range(first, last).await,
                RoutedEvents::Uuids(uuids) => store.mark_routed(uuids).await,
            };
            if let Err(e) = marked {
                tracing::warn!(error = %e, "cannot mark events routed; they will be replayed");
            }
        });
    }

    /// One alarm actor has committed its part.
    pub fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }
}

/// Committed events to route, with the sequence range their commit gave them.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RouteEvents {
    pub events: Vec<Event>,
    pub seqs: (i64, i64),
}

/// Who watches these machines: every enabled machine-up probe on them, with
/// its account (for the flood guard's per-contact messages).
#[derive(Debug, Message)]
#[rtype(result = "Vec<Watcher>")]
pub struct ProbesOn(pub Vec<Uuid>);

#[derive(Debug, Clone)]
pub struct Watcher {
    pub machine: Uuid,
    pub probe: Arc<Probe>,
    /// The probe's group: its contacts replace the probe's.
    pub group: Option<Arc<ProbeGroup>>,
    pub book: Arc<AccountBook>,
}

/// An operator's command for one monitor's alarm, handed to that
/// monitor's actor (started if needed) so it never races the actor's own
/// writes.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CommandError>")]
pub struct ForMonitor {
    pub monitor: MonitorKey,
    pub command: AlarmCommand,
}

/// A probe was created or changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProbeChanged(pub Probe);

/// An account was created or changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AccountChanged(pub Account);

/// One event for one alarm actor.
type Delivery = (Addr<AlarmActor>, Arc<Probe>, Option<Arc<ProbeGroup>>, ProbeEvent);

struct Monitor {
    key: MonitorKey,
    addr: Addr<AlarmActor>,
    generation: u64,
    restarts: RestartTracker,
}

pub struct EventRouter {
    env: Arc<AlarmEnv>,
    /// Accounts with their contacts.
    accounts: HashMap<Uuid, Arc<AccountBook>>,
    probes: HashMap<Uuid, Arc<Probe>>,
    groups: HashMap<Uuid, Arc<ProbeGroup>>,
    /// machine uuid → machine-up probes watching it.
    by_machine: HashMap<Uuid, Vec<Uuid>>,
    /// Alarm actors by child id (the id their lifelines report).
    monitors: HashMap<usize, Monitor>,
    by_key: HashMap<MonitorKey, usize>,
    next_child: usize,
    policy: RestartPolicy,
    lifeline: Lifeline,
}

impl EventRouter {
    pub fn new(env: Arc<AlarmEnv>, lifeline: Lifeline) -> EventRouter {
        EventRouter {
            env,
            accounts: HashMap::new(),
            probes: HashMap::new(),
            groups: HashMap::new(),
            by_machine: HashMap::new(),
            monitors: HashMap::new(),
            by_key: HashMap::new(),
            next_child: 0,
            policy: RestartPolicy::default(),
            lifeline,
        }
    }

    /// The probes (and group) of a monitor, as they are now.
    fn members_of(&self, key: MonitorKey) -> (Vec<Arc<Probe>>, Option<Arc<ProbeGroup>>) {
        match key {
            MonitorKey::Probe { probe, .. } => (self.probes.get(&probe).cloned().into_iter().collect(), None),
            MonitorKey::ProbeGroup { group, .. } => (
                self.probes
                    .values()
                    .filter(|p| p.group == Some(group))
                    .cloned()
                    .collect(),
                self.groups.get(&group).cloned(),
            ),
        }
    }

    /// Forgets a probe; returns its last definition.
    fn unindex_probe(&mut self, uuid: Uuid) -> Option<Arc<Probe>> {
        let old = self.probes.remove(&uuid)?;
        if let Some(machine) = old.machine {
            if let Some(list) = self.by_machine.get_mut(&machine) {
                list.retain(|p| *p != old.uuid);
            }
        }
        Some(old)
    }

    fn index_probe(&mut self, probe: Probe) {
        self.unindex_probe(probe.uuid);
        if probe.probe_type == ProbeType::MachineUp {
            if let Some(machine) = probe.machine {
                self.by_machine.entry(machine).or_default().push(probe.uuid);
            }
        }
        self.probes.insert(probe.uuid, Arc::new(probe));
    }

    fn start_monitor(&mut self, key: MonitorKey, ctx: &mut Context<Self>) -> Option<Addr<AlarmActor>> {
        let account = self.accounts.get(&key.user())?.clone();
        let child = self.next_child;
        self.next_child += 1;
        let lifeline = Lifeline::new(ctx.address().recipient(), child, 1);
        let (probes, group) = self.members_of(key);
        let addr = AlarmActor::new(key, account, self.env.clone(), lifeline)
            .with_members(probes, group)
            .start();
        self.monitors.insert(
            child,
            Monitor {
                key,
                addr: addr.clone(),
                generation: 1,
                restarts: RestartTracker::new(self.policy.clone()),
            },
        );
        self.by_key.insert(key, child);
        Some(addr)
    }

    fn monitor(&mut self, key: MonitorKey, ctx: &mut Context<Self>) -> Option<Addr<AlarmActor>> {
        match self.by_key.get(&key).and_then(|child| self.monitors.get(child)) {
            Some(m) => Some(m.addr.clone()),
            None => self.start_monitor(key, ctx),
        }
    }

    fn target(&mut self, probe: Arc<Probe>, event: ProbeEvent, out: &mut Vec<Delivery>, ctx: &mut Context<Self>) {
        if probe.disabled {
            return;
        }
        let group = match probe.group {
            Some(uuid) => match self.groups.get(&uuid) {
                Some(group) if group.disabled => return,
                Some(group) => Some(group.clone()),
                // A group deleted under us: its probes were ungrouped.
                None => None,
            },
            None => None,
        };
        let key = MonitorKey::of(&probe);
        match self.monitor(key, ctx) {
            Some(addr) => out.push((addr, probe, group, event)),
            None => tracing::warn!(monitor = ?key, "event for a probe of an unknown account dropped"),
        }
    }

    /// Routes a batch: every (alarm actor, event) pair gets a share of one
    /// ticket that marks the batch routed when all have committed.
    fn route(&mut self, events: Vec<Event>, seqs: Option<(i64, i64)>, ctx: &mut Context<Self>) {
        let marks = match seqs {
            Some((first, last)) => RoutedEvents::Range(first, last),
            None => RoutedEvents::Uuids(events.iter().map(Event::uuid).collect()),
        };
        let mut deliveries = Vec::new();
        let mut sightings = Vec::new();
        for event in events {
            match &event {
                Event::Machine(m) => sightings.push(Sighting::Machine {
                    machine: m.machine,
                    server: m.server,
                    relay: m.relay,
                    alias: m.alias.clone(),
                    up: m.up,
                    time: m.time,
                }),
                Event::Server(s) => sightings.push(Sighting::Server {
                    server: s.server,
                    hostname: s.hostname.clone(),
                    kind: s.event,
                }),
                Event::Probe(_) => {}
            }
            match event {
                Event::Machine(m) => self.route_machine(m, &mut deliveries, ctx),
                Event::Probe(p) => match self.probes.get(&p.probe_uuid).cloned() {
                    Some(probe) if probe.user == p.user => self.target(probe, p, &mut deliveries, ctx),
                    _ => tracing::warn!(probe = %p.probe_uuid, "event for an unknown probe dropped"),
                },
                Event::Server(s) => {
                    let store = self.env.store.clone();
                    let what = serde_json::to_value(s.event)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default();
                    ctx.spawn(
                        async move {
                            if let Err(e) = store.touch_server(s.server, s.hostname, what, s.time).await {
                                tracing::warn!(error = %e, "cannot record server event");
                            }
                        }
                        .into_actor(self),
                    );
                }
            }
        }
        // The flood guard sees machines and servers before any hold can run
        // out on these events.
        if !sightings.is_empty() {
            match self.env.guard.get() {
                Some(guard) => guard.do_send(Observe(sightings)),
                None => tracing::warn!("flood guard is not running; server incidents may be missed"),
            }
        }
        let ticket = RouteTicket::new(deliveries.len(), marks, self.env.store.clone());
        if deliveries.is_empty() {
            ticket.finish();
            return;
        }
        for (addr, probe, group, event) in deliveries {
            let key = MonitorKey::of(&probe);
            // Through the mailbox bound: try_send fails only if the alarm
            // actor is hopelessly behind; the event stays unrouted and is
            // replayed at the next start.
            let msg = MonitorEvent {
                probe,
                group,
                event,
                ticket: Some(ticket.clone()),
            };
            if let Err(e) = addr.try_send(msg) {
                tracing::error!(monitor = ?key, error = %e, "alarm actor cannot take the event");
            }
        }
    }

    fn route_machine(&mut self, m: MachineEvent, out: &mut Vec<Delivery>, ctx: &mut Context<Self>) {
        let Some(probes) = self.by_machine.get(&m.machine) else {
            return;
        };
        let probes: Vec<Arc<Probe>> = probes.iter().filter_map(|p| self.probes.get(p).cloned()).collect();
        for probe in probes {
            let message = if m.up {
                format!("Machine \"{}\" has come up.", m.machine)
            } else {
                format!("Machine \"{}\" has gone down.", m.machine)
            };
            let event = ProbeEvent {
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
            };
            self.target(probe, event, out, ctx);
        }
    }
}

impl Actor for EventRouter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(16 * 1024);
        let store = self.env.store.clone();
        ctx.wait(
            async move {
                let accounts = store.all_accounts().await?;
                let contacts = store.all_contacts().await?;
                let groups = store.all_groups().await?;
                let probes = store.all_probes().await?;
                let open = store.monitors_with_open_alarms().await?;
                let unrouted = store.unrouted_events().await?;
                Ok::<_, crate::store::StoreError>((accounts, contacts, groups, probes, open, unrouted))
            }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok((accounts, contacts, groups, probes, open, unrouted)) => {
                    let mut books: HashMap<Uuid, AccountBook> = accounts
                        .into_iter()
                        .map(|account| {
                            let book = AccountBook {
                                account: account.clone(),
                                contacts: HashMap::new(),
                            };
                            (account.uuid, book)
                        })
                        .collect();
                    for (user, contact) in contacts {
                        if let Some(book) = books.get_mut(&user) {
                            book.contacts.insert(contact.name.clone(), contact);
                        }
                    }
                    act.accounts = books.into_iter().map(|(uuid, book)| (uuid, Arc::new(book))).collect();
                    act.groups = groups.into_iter().map(|g| (g.uuid, Arc::new(g))).collect();
                    for probe in probes {
                        act.index_probe(probe);
                    }
                    // Monitors with open alarms resume their holds now.
                    for key in open {
                        act.monitor(key, ctx);
                    }
                    if !unrouted.is_empty() {
                        // Acknowledged before the last stop, never applied:
                        // apply them now, before anything newer.
                        tracing::info!(
                            count = unrouted.len(),
                            "replaying events not applied before the last stop"
                        );
                        act.route(unrouted, None, ctx);
                    }
                    tracing::info!(
                        accounts = act.accounts.len(),
                        probes = act.probes.len(),
                        "event router ready"
                    );
                }
                Err(e) => {
                    act.lifeline.fail(format!("cannot load probes: {e}"));
                    ctx.stop();
                }
            }),
        );
    }
}

impl Handler<RouteEvents> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: RouteEvents, ctx: &mut Context<Self>) {
        self.route(msg.events, Some(msg.seqs), ctx);
    }
}

impl Handler<ForMonitor> for EventRouter {
    type Result = ResponseFuture<Result<(), CommandError>>;

    fn handle(&mut self, msg: ForMonitor, ctx: &mut Context<Self>) -> Self::Result {
        let addr = self.monitor(msg.monitor, ctx);
        Box::pin(async move {
            match addr {
                Some(addr) => addr
                    .send(msg.command)
                    .await
                    .unwrap_or_else(|e| Err(CommandError::Store(format!("alarm actor: {e}")))),
                None => Err(CommandError::Store("the alarm's account is unknown".into())),
            }
        })
    }
}

impl Handler<ProbesOn> for EventRouter {
    type Result = Vec<Watcher>;

    fn handle(&mut self, msg: ProbesOn, _ctx: &mut Context<Self>) -> Vec<Watcher> {
        let mut watchers = Vec::new();
        for machine in msg.0 {
            for uuid in self.by_machine.get(&machine).into_iter().flatten() {
                let Some(probe) = self.probes.get(uuid) else { continue };
                let Some(book) = self.accounts.get(&probe.user) else {
                    continue;
                };
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

impl Handler<ProbeChanged> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: ProbeChanged, _ctx: &mut Context<Self>) {
        self.index_probe(msg.0);
    }
}

impl EventRouter {
    /// Replaces an account's book and tells its alarm actors.
    fn update_book(&mut self, book: AccountBook) {
        let book = Arc::new(book);
        for monitor in self.monitors.values().filter(|m| m.key.user() == book.account.uuid) {
            monitor.addr.do_send(AccountUpdated(book.clone()));
        }
        self.accounts.insert(book.account.uuid, book);
    }

    /// Tells a monitor's actor, if it runs.
    fn tell<M>(&self, key: MonitorKey, msg: M)
    where
        M: Message<Result = ()> + Send + 'static,
        AlarmActor: Handler<M>,
    {
        if let Some(monitor) = self.by_key.get(&key).and_then(|c| self.monitors.get(c)) {
            monitor.addr.do_send(msg);
        }
    }
}

impl Handler<AccountChanged> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: AccountChanged, _ctx: &mut Context<Self>) {
        let account = msg.0;
        let contacts = self
            .accounts
            .get(&account.uuid)
            .map(|b| b.contacts.clone())
            .unwrap_or_default();
        self.update_book(AccountBook { account, contacts });
    }
}

/// An account's stored contacts changed (all of them, as they are now).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ContactsChanged {
    pub user: Uuid,
    pub contacts: Vec<Contact>,
}

impl Handler<ContactsChanged> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: ContactsChanged, _ctx: &mut Context<Self>) {
        let Some(book) = self.accounts.get(&msg.user) else {
            return;
        };
        let account = book.account.clone();
        let contacts = msg.contacts.into_iter().map(|c| (c.name.clone(), c)).collect();
        self.update_book(AccountBook { account, contacts });
    }
}

/// A maintenance window ended or was deleted: every alarm actor reviews its
/// maintenance faults.
pub use super::alarm::ReviewMaintenance;

impl Handler<ReviewMaintenance> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: ReviewMaintenance, _ctx: &mut Context<Self>) {
        for monitor in self.monitors.values() {
            monitor.addr.do_send(msg);
        }
    }
}

/// A probe was deleted.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProbeDeleted(pub Uuid);

impl Handler<ProbeDeleted> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: ProbeDeleted, _ctx: &mut Context<Self>) {
        if let Some(old) = self.unindex_probe(msg.0) {
            self.tell(MonitorKey::of(&old), ProbeGone(old.uuid));
        }
    }
}

/// A probe group was created or changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct GroupChanged(pub ProbeGroup);

impl Handler<GroupChanged> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: GroupChanged, _ctx: &mut Context<Self>) {
        self.groups.insert(msg.0.uuid, Arc::new(msg.0));
    }
}

/// A probe group was deleted; its probes (given, as they are now) were
/// ungrouped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct GroupDeleted {
    pub user: Uuid,
    pub group: Uuid,
    pub ungrouped: Vec<Probe>,
}

impl Handler<GroupDeleted> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: GroupDeleted, _ctx: &mut Context<Self>) {
        self.groups.remove(&msg.group);
        for probe in msg.ungrouped {
            self.index_probe(probe);
        }
        self.tell(
            MonitorKey::ProbeGroup {
                user: msg.user,
                group: msg.group,
            },
            MonitorGone,
        );
    }
}

impl Handler<ChildExited> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(monitor) = self.monitors.get_mut(&msg.child) else {
            return;
        };
        if monitor.generation != msg.generation {
            return;
        }
        let key = monitor.key;
        if msg.reason == ExitReason::Normal {
            self.monitors.remove(&msg.child);
            self.by_key.remove(&key);
            return;
        }
        tracing::error!(monitor = ?key, reason = ?msg.reason, "alarm actor crashed");
        crate::metrics::actor_restarted("alarm");
        match monitor.restarts.crashed(Instant::now()) {
            RestartDecision::Escalate => {
                self.lifeline.fail(format!("alarm actor for {key:?} keeps crashing"));
                ctx.stop();
            }
            RestartDecision::RestartAfter(delay) => {
                let child = msg.child;
                ctx.run_later(delay, move |act, ctx| {
                    let Some(account) = act.accounts.get(&key.user()).cloned() else {
                        return;
                    };
                    let (probes, group) = act.members_of(key);
                    let env = act.env.clone();
                    if let Some(monitor) = act.monitors.get_mut(&child) {
                        monitor.generation += 1;
                        let lifeline = Lifeline::new(ctx.address().recipient(), child, monitor.generation);
                        monitor.addr = AlarmActor::new(key, account, env, lifeline)
                            .with_members(probes, group)
                            .start();
                    }
                });
            }
        }
    }
}

impl Drop for EventRouter {
    /// A router that dies (even by a panic) takes its alarm actors with it,
    /// so its successor never shares a monitor with an orphan.
    fn drop(&mut self) {
        for monitor in self.monitors.values() {
            monitor.addr.do_send(Stop);
        }
    }
}

impl Handler<Stop> for EventRouter {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        for monitor in self.monitors.values() {
            monitor.addr.do_send(Stop);
        }
        self.lifeline.exit_normally();
        ctx.stop();
    }
}
