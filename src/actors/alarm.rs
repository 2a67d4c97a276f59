//! `AlarmActor`: one per monitor (a probe, or a probe group), so that the
//! events of one monitor are applied one at a time, in order, and concurrent
//! events never open duplicate alarms (SPEC §5 rule 7).
//!
//! It carries out Amon's alarm rules (decided in [`crate::rules`]) and the hold: a new fault is notified
//! only if it is still open `hold` after it appeared; a clear inside the hold
//! cancels it silently; a clear after a sent fault notification sends a clear.
//! Each change is saved with the notifications it decides in one store commit,
//! and only then handed to the notifier pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::maintenance::Maintenance;
use super::notifier::{Deliver, NotifierPool};
use super::router::RouteTicket;
use super::server_guard::{Fold, ServerGuard};
use super::shard::Idle;
use super::supervisor::{Lifeline, Named, Stop};
use crate::clock::Clock;
use crate::model::{
    AccountBook, Alarm, EpochMs, Fault, FaultSite, MonitorKey, Probe, ProbeEvent, ProbeGroup, ProbeType,
};
use crate::notify::{
    message_id, resolve_contacts, ContactAddress, MachineRef, Notification, NotificationKind, ProbeRef,
};
use crate::rules::{self, AlarmAction, Effect, Relation};
use crate::store::Store;

/// Everything alarm actors share; built once by the master.
pub struct AlarmEnv {
    pub store: Store,
    pub clock: Clock,
    pub notifier: Named<NotifierPool>,
    /// The flood guard, asked before a machine-down fault is announced.
    pub guard: Named<ServerGuard>,
    /// The maintenance windows in force.
    pub maintenance: Maintenance,
    /// Default hold before a fault is notified.
    pub hold: Duration,
    /// The flood guard's burst window: the least hold of a machine-down
    /// fault, so the guard has seen a server's burst before it is asked.
    pub burst_window: Duration,
    pub datacenter: String,
    /// Shown in emails so the reader can act.
    pub master_url: String,
    /// How long an actor with nothing to wait for stays in memory.
    pub idle_after: Duration,
    /// The missing-data watch: the router tells it which agents were heard
    /// from (it is in this environment because the router reads it here).
    pub agent_watch: Named<super::agent_watch::AgentWatch>,
}

/// A probe event for this monitor, with the probe it came from.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MonitorEvent {
    pub probe: Arc<Probe>,
    /// The probe's group, when the monitor is one.
    pub group: Option<Arc<ProbeGroup>>,
    pub event: ProbeEvent,
    /// The event's sequence number: an event at or below the monitor's
    /// last applied one is a replay of something already applied.
    pub seq: i64,
    /// Told when the event's effect is committed (see `RouteTicket`).
    pub ticket: Option<Arc<RouteTicket>>,
}

/// The account behind the monitor, or its contacts, changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AccountUpdated(pub Arc<AccountBook>);

pub struct AlarmActor {
    key: MonitorKey,
    /// The owner and its contacts (replaced when they change).
    book: Arc<AccountBook>,
    /// The monitor's group, when it is one (from the latest event).
    group: Option<Arc<ProbeGroup>>,
    env: Arc<AlarmEnv>,
    /// The monitor's newest open alarm, if any; closed alarms live only in
    /// the store.
    alarm: Option<Alarm>,
    /// The latest definition of each probe we saw an event from.
    probes: HashMap<Uuid, Arc<Probe>>,
    /// Pending hold timers, per faulted probe.
    holds: HashMap<Uuid, SpawnHandle>,
    /// Tickets of events whose effect the next commit makes durable.
    tickets: Vec<Arc<RouteTicket>>,
    /// A clear waiting for the commit of the fault it ends (see `apply`).
    deferred: Option<Deferred>,
    /// A commit is on its way to the store.
    committing: bool,
    /// The last event applied (what the next commit records as the
    /// monitor's mark), and whether a commit must still record it.
    applied: i64,
    mark_due: bool,
    /// The shard to tell when there is nothing to wait for, and how many of
    /// its messages this actor has handled.
    shard: Option<Recipient<Idle>>,
    handled: u64,
    idle_timer: Option<SpawnHandle>,
    lifeline: Lifeline,
}

impl AlarmActor {
    pub fn new(key: MonitorKey, book: Arc<AccountBook>, env: Arc<AlarmEnv>, lifeline: Lifeline) -> AlarmActor {
        AlarmActor {
            key,
            book,
            group: None,
            env,
            alarm: None,
            probes: HashMap::new(),
            holds: HashMap::new(),
            tickets: Vec::new(),
            deferred: None,
            committing: false,
            applied: 0,
            mark_due: false,
            shard: None,
            handled: 0,
            idle_timer: None,
            lifeline,
        }
    }

    /// Reports to `shard` when idle, so the shard can stop it.
    pub fn with_shard(mut self, shard: Recipient<Idle>) -> AlarmActor {
        self.shard = Some(shard);
        self
    }

    /// Nothing to wait for: no hold, no reminder, no folded or maintenance
    /// fault, so everything this actor knows is in the store and a new
    /// instance would pick up exactly here.
    fn quiet(&self) -> bool {
        if !self.holds.is_empty() {
            return false;
        }
        let Some(alarm) = &self.alarm else { return true };
        let reminders = self.group.as_ref().is_some_and(|g| g.renotify.is_some())
            || self.probes.values().any(|p| p.renotify.is_some());
        alarm.maint_faults.is_empty() && !reminders && alarm.faults.iter().all(|f| f.notified && !f.folded)
    }

    /// (Re)starts the idle timer: when it runs out with the actor quiet, the
    /// shard hears of it. Called after every message and every commit.
    fn arm_idle(&mut self, ctx: &mut Context<Self>) {
        if self.shard.is_none() {
            return;
        }
        if let Some(old) = self.idle_timer.take() {
            ctx.cancel_future(old);
        }
        self.idle_timer = Some(ctx.run_later(self.env.idle_after, |act, _ctx| {
            act.idle_timer = None;
            if !act.quiet() {
                return;
            }
            let (child, generation) = act.lifeline.child();
            if let Some(shard) = &act.shard {
                shard.do_send(Idle {
                    child,
                    generation,
                    handled: act.handled,
                });
            }
        }));
    }

    /// One more message from the shard handled.
    fn handled(&mut self, ctx: &mut Context<Self>) {
        self.handled += 1;
        self.arm_idle(ctx);
    }

    /// Starts with the monitor's current probes (and group), so holds and
    /// contacts are right before its first event, e.g. after a restart.
    pub fn with_members(mut self, probes: Vec<Arc<Probe>>, group: Option<Arc<ProbeGroup>>) -> AlarmActor {
        self.probes = probes.into_iter().map(|p| (p.uuid, p)).collect();
        self.group = group;
        self
    }

    fn now(&self) -> EpochMs {
        self.env.clock.now_ms()
    }

    fn schedule_hold(&mut self, alarm_id: u64, probe: Uuid, delay: Duration, ctx: &mut Context<Self>) {
        let handle = ctx.run_later(delay, move |act, ctx| act.hold_expired(alarm_id, probe, ctx));
        if let Some(old) = self.holds.insert(probe, handle) {
            ctx.cancel_future(old);
        }
    }

    /// Where a fault of `probe` with this event sits, for maintenance windows.
    fn site(&self, probe: Uuid, event: &ProbeEvent) -> FaultSite {
        FaultSite {
            user: self.key.user(),
            probe,
            group: self.probes.get(&probe).and_then(|p| p.group),
            machine: event.machine,
            server: event.agent,
        }
    }

    /// The group's or the probe's own hold, else the configured one; for a
    /// `machine-up` probe at least the flood guard's burst window.
    fn hold_of(&self, probe: Uuid) -> Duration {
        let group = self.group.as_ref().and_then(|g| g.hold);
        let hold = group
            .or_else(|| self.probes.get(&probe).and_then(|p| p.hold))
            .map(Duration::from_secs)
            .unwrap_or(self.env.hold);
        let machine_up = self
            .probes
            .get(&probe)
            .is_some_and(|p| p.probe_type == ProbeType::MachineUp);
        rules::least_hold(hold, machine_up, self.env.burst_window)
    }

    /// Reminders are off unless the probe asks for them (`renotify`).
    fn schedule_reminder(&mut self, alarm_id: u64, probe: Uuid, ctx: &mut Context<Self>) {
        let group = self.group.as_ref().and_then(|g| g.renotify);
        let Some(every) = group.or_else(|| self.probes.get(&probe).and_then(|p| p.renotify)) else {
            return;
        };
        ctx.run_later(Duration::from_secs(every), move |act, ctx| {
            act.remind(alarm_id, probe, ctx)
        });
    }

    /// A notified fault is still open `renotify` seconds later: say so again.
    fn remind(&mut self, alarm_id: u64, probe: Uuid, ctx: &mut Context<Self>) {
        let Some(alarm) = self.alarm.take() else {
            return;
        };
        let fault = alarm.faults.iter().find(|f| f.probe == probe && f.notified).cloned();
        match fault {
            Some(fault) if alarm.id == alarm_id && !alarm.closed => {
                self.schedule_reminder(alarm_id, probe, ctx);
                self.commit(alarm, vec![(NotificationKind::Fault, fault)], ctx);
            }
            _ => self.alarm = Some(alarm),
        }
    }

    fn cancel_holds(&mut self, ctx: &mut Context<Self>) {
        for (_, handle) in self.holds.drain() {
            ctx.cancel_future(handle);
        }
    }

    /// Applies one event to the open alarm (rules 3–4) and carries out
    /// what the rules say. A clear that finds its fault past its hold by
    /// the events' times (a replay: `rules::hold_ran_out_before`) first lets
    /// the hold run out, as its timer would have, and is applied after.
    fn apply(&mut self, event: ProbeEvent, ctx: &mut Context<Self>) {
        let hold = self.hold_of(event.probe_uuid).as_millis() as EpochMs;
        let late = event.clear
            && self
                .alarm
                .as_ref()
                .is_some_and(|a| rules::hold_ran_out_before(a, &event, hold));
        match self.alarm.as_ref().map(|a| a.id) {
            Some(alarm_id) if late => {
                let probe = event.probe_uuid;
                if let Some(handle) = self.holds.remove(&probe) {
                    ctx.cancel_future(handle);
                }
                // The fault's commit is not the clear's: the clear's
                // ticket and mark wait for its own commit.
                let after = Deferred {
                    event,
                    tickets: std::mem::take(&mut self.tickets),
                    mark_due: std::mem::take(&mut self.mark_due),
                };
                self.expire_hold(alarm_id, probe, Some(after), ctx);
            }
            _ => self.apply_now(event, ctx),
        }
    }

    fn resume_deferred(&mut self, ctx: &mut Context<Self>) {
        if let Some(Deferred {
            event,
            tickets,
            mark_due,
        }) = self.deferred.take()
        {
            self.tickets.extend(tickets);
            self.mark_due |= mark_due;
            self.apply_now(event, ctx);
        }
    }

    fn apply_now(&mut self, event: ProbeEvent, ctx: &mut Context<Self>) {
        let now = self.now();
        let Some(mut alarm) = self.alarm.take() else {
            return;
        };
        let site = self.site(event.probe_uuid, &event);
        let in_maintenance = self.env.maintenance.covers(&site, event.time);
        let effects = rules::apply(&mut alarm, event, now, in_maintenance);
        self.carry_out(alarm, effects, ctx);
    }

    fn hold_expired(&mut self, alarm_id: u64, probe: Uuid, ctx: &mut Context<Self>) {
        self.holds.remove(&probe);
        self.expire_hold(alarm_id, probe, None, ctx);
    }

    /// The hold of `probe`'s fault is over: announce it (or let the flood
    /// guard speak for it), then apply `after`, if any.
    fn expire_hold(&mut self, alarm_id: u64, probe: Uuid, after: Option<Deferred>, ctx: &mut Context<Self>) {
        // The deferred clear goes after the fault's commit, if it made one
        // (actix runs the futures a context waits for newest first: a
        // second commit started now would reach the store first).
        let then = |act: &mut AlarmActor, after: Option<Deferred>, ctx: &mut Context<AlarmActor>| {
            act.deferred = after;
            if !act.committing {
                act.resume_deferred(ctx);
            }
        };
        let Some(alarm) = self.alarm.as_ref().filter(|a| a.id == alarm_id) else {
            return then(self, after, ctx);
        };
        let Some(fault) = alarm.faults.iter().find(|f| f.probe == probe && !f.notified) else {
            return then(self, after, ctx);
        };
        // A machine down on a server in an incident: the flood guard's one
        // message speaks for it (SPEC §6). Ask before announcing.
        let server = fault.event.machine.and(fault.event.agent);
        match (server, self.env.guard.get()) {
            (Some(server), Some(guard)) => {
                let monitor = ctx.address();
                ctx.wait(
                    async move { guard.send(Fold { server, monitor }).await.unwrap_or(false) }
                        .into_actor(self)
                        .map(move |folded, act, ctx| {
                            act.finish_hold(alarm_id, probe, folded, ctx);
                            then(act, after, ctx);
                        }),
                );
            }
            _ => {
                self.finish_hold(alarm_id, probe, false, ctx);
                then(self, after, ctx);
            }
        }
    }

    fn finish_hold(&mut self, alarm_id: u64, probe: Uuid, folded: bool, ctx: &mut Context<Self>) {
        let Some(mut alarm) = self.alarm.take() else {
            return;
        };
        if alarm.id != alarm_id {
            self.alarm = Some(alarm);
            return;
        }
        if folded {
            if rules::fold(&mut alarm, probe) {
                self.commit(alarm, Vec::new(), ctx);
            } else {
                self.alarm = Some(alarm);
            }
            return;
        }
        match rules::hold_expired(&mut alarm, probe) {
            Some(effect) => self.carry_out(alarm, vec![effect], ctx),
            None => self.alarm = Some(alarm),
        }
    }

    fn carry_out(&mut self, alarm: Alarm, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        let mut due = Vec::new();
        for effect in effects {
            match effect {
                Effect::StartHold { probe } => {
                    let hold = self.hold_of(probe);
                    self.schedule_hold(alarm.id, probe, hold, ctx)
                }
                Effect::CancelHold { probe } => {
                    if let Some(handle) = self.holds.remove(&probe) {
                        ctx.cancel_future(handle);
                    }
                }
                Effect::Notify { kind, fault } => {
                    if kind == NotificationKind::Fault {
                        self.schedule_reminder(alarm.id, fault.probe, ctx);
                    }
                    due.push((kind, *fault))
                }
            }
        }
        self.commit(alarm, due, ctx);
    }

    /// Saves the alarm with the notifications it makes due, then hands them
    /// to the notifier. Blocks this actor's mailbox until the store answers,
    /// so the next event sees the saved state.
    fn commit(&mut self, mut alarm: Alarm, due: Vec<(NotificationKind, Fault)>, ctx: &mut Context<Self>) {
        let mut notifications = if alarm.suppressed {
            Vec::new()
        } else {
            due.iter()
                .flat_map(|(kind, fault)| self.notifications(&alarm, *kind, fault))
                .collect::<Vec<_>>()
        };
        if !notifications.is_empty() {
            alarm.num_notifications += 1;
        }
        // A webhook gets the whole alarm, as the API shows it after this
        // change (the reference's receivers got its public alarm).
        for n in &mut notifications {
            if matches!(n.contact, ContactAddress::Webhook(_)) {
                n.alarm = Some(Box::new(alarm.clone()));
            }
        }
        let saved = alarm.clone();
        let tickets = std::mem::take(&mut self.tickets);
        let mark = std::mem::take(&mut self.mark_due).then_some(self.applied);
        self.alarm = (!alarm.closed).then_some(alarm);
        let store = self.env.store.clone();
        let now = self.now();
        let notifier = self.env.notifier.clone();
        self.committing = true;
        ctx.wait(
            async move {
                store.save_alarm(saved, notifications.clone(), now, mark).await?;
                Ok::<_, crate::store::StoreError>(notifications)
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.committing = false;
                act.committed(result, tickets, notifier, ctx);
                act.resume_deferred(ctx);
            }),
        );
    }

    /// A commit's answer: its events are done, its notifications go out.
    fn committed(
        &mut self,
        result: Result<Vec<Notification>, crate::store::StoreError>,
        tickets: Vec<Arc<RouteTicket>>,
        notifier: Named<NotifierPool>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok(notifications) => {
                self.arm_idle(ctx);
                // Durable: the events behind this change need no replay.
                for ticket in tickets {
                    ticket.done();
                }
                if notifications.is_empty() {
                    return;
                }
                match notifier.get() {
                    Some(pool) => pool.do_send(Deliver(notifications)),
                    // Still in the outbox: the pool picks it up when it starts.
                    None => tracing::warn!("notifier pool is not running; notifications wait in the outbox"),
                }
            }
            // The tickets are dropped undone: their events are replayed
            // at the next start.
            Err(e) => tracing::error!(monitor = ?self.key, error = %e, "cannot save alarm"),
        }
    }

    fn notifications(&self, alarm: &Alarm, kind: NotificationKind, fault: &Fault) -> Vec<Notification> {
        let probe = self.probes.get(&fault.probe);
        // A group's contacts replace its probes' (Amon's rule).
        let names: Vec<String> = match (&self.group, probe) {
            (Some(group), _) => group.contacts.clone(),
            (None, Some(probe)) => probe.contacts.clone(),
            (None, None) => vec!["email".into()],
        };
        let event = &fault.event;
        let account = &self.book.account;
        resolve_contacts(&names, &self.book)
            .into_iter()
            .map(|(name, address)| {
                // The first notification of an alarm roots the thread; its id
                // is derived so later ones can refer to it.
                let root = Uuid::new_v5(
                    &Uuid::NAMESPACE_OID,
                    format!("amon/{}/{}/{}", alarm.user, alarm.id, name).as_bytes(),
                );
                let (id, thread_root) = if alarm.num_notifications == 0 {
                    (root, None)
                } else {
                    (Uuid::new_v4(), Some(message_id(root, &self.env.datacenter)))
                };
                Notification {
                    id,
                    kind,
                    contact_name: name.clone(),
                    contact: address,
                    datacenter: self.env.datacenter.clone(),
                    account_uuid: account.uuid,
                    account_login: account.login.clone(),
                    alarm_id: alarm.id,
                    alarm_closed: alarm.closed,
                    alarm_fault_count: alarm.faults.len(),
                    probe: ProbeRef {
                        uuid: fault.probe,
                        name: probe.and_then(|p| p.name.clone()),
                        probe_type: probe.map(|p| p.probe_type.as_str()).unwrap_or("machine-up").to_string(),
                        group: probe.and_then(|p| p.group),
                    },
                    machine: event.machine.map(|uuid| MachineRef {
                        uuid,
                        alias: event.agent_alias.clone(),
                        server: event.agent,
                    }),
                    message: event.data.message.clone(),
                    event_time: event.time,
                    thread_root,
                    master_url: self.env.master_url.clone(),
                    event_json: serde_json::to_value(event).unwrap_or_default(),
                    incident: None,
                    digest: Vec::new(),
                    // Filled in by `commit`, once the alarm is final.
                    alarm: None,
                }
            })
            .collect()
    }
}

/// A clear held back until the hold it ends has run out (see
/// [`AlarmActor::apply`]), with what its own commit must carry.
struct Deferred {
    event: ProbeEvent,
    tickets: Vec<Arc<super::router::RouteTicket>>,
    mark_due: bool,
}

impl Actor for AlarmActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Pick up where a previous instance (or process) left off: the open
        // alarm, and the holds of faults not yet notified.
        let store = self.env.store.clone();
        let key = self.key;
        ctx.wait(
            async move {
                let alarm = store.open_alarm(key).await?;
                let mark = store.monitor_mark(key).await?;
                Ok::<_, crate::store::StoreError>((alarm, mark))
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                let result = result.map(|(alarm, mark)| {
                    act.applied = mark.unwrap_or(0);
                    act.arm_idle(ctx);
                    alarm
                });
                match result {
                    Ok(Some(alarm)) => {
                        let now = act.now();
                        for fault in alarm.faults.iter().filter(|f| !f.notified) {
                            // Folded faults too: the incident they were folded
                            // into did not survive the restart, so they are
                            // notified on their own after their hold.
                            let hold = act.hold_of(fault.probe).as_millis() as EpochMs;
                            let left = (fault.time_faulted + hold - now).max(0) as u64;
                            act.schedule_hold(alarm.id, fault.probe, Duration::from_millis(left), ctx);
                        }
                        act.alarm = Some(alarm);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        act.lifeline.fail(format!("cannot load open alarm: {e}"));
                        ctx.stop();
                    }
                }
            }),
        );
    }
}

impl Handler<MonitorEvent> for AlarmActor {
    type Result = ();

    fn handle(&mut self, msg: MonitorEvent, ctx: &mut Context<Self>) {
        let MonitorEvent {
            probe,
            group,
            event,
            seq,
            ticket,
        } = msg;
        self.handled(ctx);
        if seq <= self.applied {
            // Replayed after a restart, and already applied before it.
            tracing::debug!(monitor = ?self.key, seq, "event already applied");
            if let Some(ticket) = ticket {
                ticket.done();
            }
            return;
        }
        self.applied = seq;
        self.mark_due = true;
        if group.is_some() {
            self.group = group;
        }
        let group_events = probe.group_events;
        self.probes.insert(probe.uuid, probe);
        match rules::relate(self.alarm.as_ref(), &event, group_events) {
            Relation::Join => {
                self.tickets.extend(ticket);
                self.apply(event, ctx);
                return;
            }
            Relation::Drop => {
                tracing::debug!(monitor = ?self.key, "clear with no open alarm dropped");
                if let Some(ticket) = ticket {
                    ticket.done();
                }
                return;
            }
            Relation::Open => self.tickets.extend(ticket),
        }
        // A fault with no related alarm (or groupEvents: false) opens one.
        let store = self.env.store.clone();
        let user = self.key.user();
        ctx.wait(
            async move { store.next_alarm_id(user).await }
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(id) => {
                        act.cancel_holds(ctx);
                        act.alarm = Some(rules::new_alarm(act.key, id, act.now()));
                        act.apply(event, ctx);
                    }
                    Err(e) => {
                        // Left unrouted: replayed at the next start.
                        act.tickets.clear();
                        tracing::error!(monitor = ?act.key, error = %e, "cannot open alarm");
                    }
                }),
        );
    }
}

/// The incident on a server is over: faults folded into it that are still
/// open are announced now.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReleaseFolded {
    pub server: Uuid,
}

impl Handler<ReleaseFolded> for AlarmActor {
    type Result = ();

    fn handle(&mut self, msg: ReleaseFolded, ctx: &mut Context<Self>) {
        let Some(mut alarm) = self.alarm.take() else {
            return;
        };
        let effects = rules::release(&mut alarm, msg.server);
        if effects.is_empty() {
            self.alarm = Some(alarm);
            return;
        }
        self.carry_out(alarm, effects, ctx);
    }
}

/// An operator's action on one of this monitor's alarms.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CommandError>")]
pub enum AlarmCommand {
    Act { id: u64, action: AlarmAction },
    Delete { id: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("alarm {0} does not exist")]
    Missing(u64),
    #[error("{0}")]
    Store(String),
}

impl AlarmActor {
    /// Takes the alarm `id` out of memory if it is the open one we hold
    /// (cancelling its holds), else loads it from the store.
    fn take_alarm(&mut self, id: u64, ctx: &mut Context<Self>) -> Option<Alarm> {
        if self.alarm.as_ref().is_some_and(|a| a.id == id) {
            self.cancel_holds(ctx);
            return self.alarm.take();
        }
        None
    }
}

impl Handler<AlarmCommand> for AlarmActor {
    type Result = AtomicResponse<Self, Result<(), CommandError>>;

    fn handle(&mut self, msg: AlarmCommand, ctx: &mut Context<Self>) -> Self::Result {
        self.handled(ctx);
        let id = match msg {
            AlarmCommand::Act { id, .. } | AlarmCommand::Delete { id } => id,
        };
        let in_memory = self.take_alarm(id, ctx);
        let store = self.env.store.clone();
        let user = self.key.user();
        let now = self.now();
        AtomicResponse::new(Box::pin(
            async move {
                let alarm = match in_memory {
                    Some(alarm) => Some(alarm),
                    // From a reader thread, which may overtake queued
                    // writes: none of this monitor's can be queued, since
                    // `started` read the open alarm from the writer and
                    // this actor awaits its own writes.
                    None => match store.get_alarm(user, id).await {
                        Ok(crate::store::AlarmLookup::Found(alarm)) => Some(alarm),
                        Ok(_) => None,
                        Err(e) => return Err(CommandError::Store(e.to_string())),
                    },
                };
                let Some(mut alarm) = alarm else {
                    return Err(CommandError::Missing(id));
                };
                match msg {
                    AlarmCommand::Delete { .. } => {
                        store
                            .delete_alarm(user, id)
                            .await
                            .map_err(|e| CommandError::Store(e.to_string()))?;
                        Ok(None)
                    }
                    AlarmCommand::Act { action, .. } => {
                        rules::act(&mut alarm, action, now);
                        store
                            .save_alarm(alarm.clone(), Vec::new(), now, None)
                            .await
                            .map_err(|e| CommandError::Store(e.to_string()))?;
                        Ok(Some(alarm))
                    }
                }
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                let alarm = result?;
                // The open alarm we keep is the newest open one (rule 2).
                if let Some(alarm) = alarm.filter(|a| !a.closed) {
                    if act.alarm.as_ref().is_none_or(|current| current.id < alarm.id) {
                        let now = act.now();
                        for fault in alarm.faults.iter().filter(|f| !f.notified && !f.folded) {
                            let hold = act.hold_of(fault.probe).as_millis() as EpochMs;
                            let left = (fault.time_faulted + hold - now).max(0) as u64;
                            act.schedule_hold(alarm.id, fault.probe, Duration::from_millis(left), ctx);
                        }
                        act.alarm = Some(alarm);
                    }
                }
                Ok(())
            }),
        ))
    }
}

/// A maintenance window ended or was deleted: faults no window covers any
/// more are notified now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ReviewMaintenance;

impl Handler<ReviewMaintenance> for AlarmActor {
    type Result = ();

    fn handle(&mut self, _: ReviewMaintenance, ctx: &mut Context<Self>) {
        self.handled(ctx);
        let Some(mut alarm) = self.alarm.take() else { return };
        if alarm.maint_faults.is_empty() {
            self.alarm = Some(alarm);
            return;
        }
        let now = self.now();
        let effects = rules::review_maintenance(&mut alarm, |f| {
            let site = self.site(f.probe, &f.event);
            self.env.maintenance.covers(&site, now)
        });
        if effects.is_empty() {
            self.alarm = Some(alarm);
            return;
        }
        self.carry_out(alarm, effects, ctx);
    }
}

/// A probe of this monitor was deleted: its faults leave the open alarm,
/// which closes (silently) if nothing is left. No alarm is orphaned.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProbeGone(pub Uuid);

impl Handler<ProbeGone> for AlarmActor {
    type Result = ();

    fn handle(&mut self, msg: ProbeGone, ctx: &mut Context<Self>) {
        self.handled(ctx);
        self.probes.remove(&msg.0);
        if let Some(handle) = self.holds.remove(&msg.0) {
            ctx.cancel_future(handle);
        }
        let Some(mut alarm) = self.alarm.take() else { return };
        alarm.faults.retain(|f| f.probe != msg.0);
        alarm.maint_faults.retain(|f| f.probe != msg.0);
        if alarm.faults.is_empty() && alarm.maint_faults.is_empty() {
            rules::act(&mut alarm, AlarmAction::Close, self.now());
        }
        self.commit(alarm, Vec::new(), ctx);
    }
}

/// The monitor itself (a probe group) was deleted: its open alarm closes,
/// silently.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MonitorGone;

impl Handler<MonitorGone> for AlarmActor {
    type Result = ();

    fn handle(&mut self, _: MonitorGone, ctx: &mut Context<Self>) {
        self.handled(ctx);
        self.cancel_holds(ctx);
        let Some(mut alarm) = self.alarm.take() else { return };
        rules::act(&mut alarm, AlarmAction::Close, self.now());
        self.commit(alarm, Vec::new(), ctx);
    }
}

impl Handler<AccountUpdated> for AlarmActor {
    type Result = ();

    fn handle(&mut self, msg: AccountUpdated, ctx: &mut Context<Self>) {
        self.handled(ctx);
        self.book = msg.0;
    }
}

impl Handler<Stop> for AlarmActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    //! The alarm actor's decisions, in paused time: a fault still open after
    //! its hold is notified once, a clear after that is notified too, and a
    //! reboot inside the hold tells nobody. Notifications are read from the
    //! outbox (no notifier runs here).

    use super::*;
    use crate::actors::testkit::{self, until};
    use crate::model::Account;
    use crate::store::Store;

    const HOLD: Duration = Duration::from_secs(60);

    fn actor(store: &Store) -> (Addr<AlarmActor>, Arc<Probe>) {
        actor_with(store, Default::default(), &["email"])
    }

    /// An actor whose account has `attributes` and whose probe names
    /// `contacts`.
    fn actor_with(
        store: &Store,
        attributes: std::collections::BTreeMap<String, String>,
        contacts: &[&str],
    ) -> (Addr<AlarmActor>, Arc<Probe>) {
        let account = Account {
            uuid: Uuid::new_v4(),
            login: "alice".into(),
            email: "alice@example.com".into(),
            operator: false,
            attributes,
        };
        let mut probe = (*testkit::probe(account.uuid)).clone();
        probe.contacts = contacts.iter().map(|c| c.to_string()).collect();
        let probe = Arc::new(probe);
        let book = Arc::new(AccountBook {
            account,
            contacts: HashMap::new(),
        });
        let addr = AlarmActor::new(
            MonitorKey::of(&probe),
            book,
            testkit::env(store, HOLD, Duration::from_secs(3600)),
            Lifeline::detached(),
        )
        .with_members(vec![probe.clone()], None)
        .start();
        (addr, probe)
    }

    fn event(probe: &Arc<Probe>, seq: i64, clear: bool) -> MonitorEvent {
        MonitorEvent {
            probe: probe.clone(),
            group: None,
            event: testkit::probe_event(probe, clear),
            seq,
            ticket: None,
        }
    }

    async fn kinds(store: &Store) -> Vec<NotificationKind> {
        let mut pending = store.pending_deliveries().await.unwrap();
        pending.sort_by_key(|p| p.created);
        pending.into_iter().map(|p| p.notification.kind).collect()
    }

    async fn settle(store: &Store) {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = store.route_mark().await;
        }
    }

    #[actix_rt::test]
    async fn a_fault_open_after_its_hold_is_notified_once_and_its_clear_too() {
        tokio::time::pause();
        let store = Store::for_test();
        let (addr, probe) = actor(&store);
        addr.send(event(&probe, 1, false)).await.unwrap();
        tokio::time::sleep(HOLD).await;
        until("the fault is notified", || async {
            kinds(&store).await == [NotificationKind::Fault]
        })
        .await;
        // Paused time runs ahead while the store thread works, so "nothing
        // inside the hold" is read from when the notification was made.
        let fault = store.pending_deliveries().await.unwrap().remove(0);
        let hold_ms = HOLD.as_millis() as crate::model::EpochMs;
        assert!(fault.created - testkit::START_MS >= hold_ms, "nothing inside the hold");
        // The same fault again: joins the alarm, tells nobody again.
        addr.send(event(&probe, 2, false)).await.unwrap();
        tokio::time::sleep(HOLD * 2).await;
        settle(&store).await;
        assert_eq!(kinds(&store).await, vec![NotificationKind::Fault]);
        addr.send(event(&probe, 3, true)).await.unwrap();
        until("the clear is notified", || async {
            kinds(&store).await == [NotificationKind::Fault, NotificationKind::Clear]
        })
        .await;
    }

    #[actix_rt::test]
    async fn contact_attributes_are_notified_and_a_webhook_gets_the_alarm_as_saved() {
        tokio::time::pause();
        let store = Store::for_test();
        let attributes = [
            ("pagerdutyemail".to_string(), "pd@example.com".to_string()),
            ("opswebhook".to_string(), "https://hooks.example.com/amon".to_string()),
        ]
        .into();
        let (addr, probe) = actor_with(&store, attributes, &["pagerdutyemail", "opswebhook"]);
        addr.send(event(&probe, 1, false)).await.unwrap();
        tokio::time::sleep(HOLD).await;
        settle(&store).await;
        let mut pending: Vec<Notification> = store
            .pending_deliveries()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.notification)
            .collect();
        pending.sort_by(|a, b| a.contact_name.cmp(&b.contact_name));
        let to: Vec<(&str, &ContactAddress)> = pending.iter().map(|n| (n.contact_name.as_str(), &n.contact)).collect();
        assert_eq!(
            to,
            [
                (
                    "opswebhook",
                    &ContactAddress::Webhook("https://hooks.example.com/amon".into())
                ),
                ("pagerdutyemail", &ContactAddress::Email("pd@example.com".into())),
            ]
        );
        let saved = match store.get_alarm(probe.user, 1).await.unwrap() {
            crate::store::AlarmLookup::Found(alarm) => alarm,
            other => panic!("{other:?}"),
        };
        assert_eq!(saved.num_notifications, 1);
        assert_eq!(
            pending[0].alarm.as_deref(),
            Some(&saved),
            "the alarm as committed with it"
        );
        assert_eq!(pending[1].alarm, None, "email renders from its own fields");
    }

    /// A fault and its clear a whole hold later (by their own times) that
    /// reach the actor back to back, as a replay after a takeover delivers
    /// them: the fault is announced, late, then the clear; not a reboot.
    #[actix_rt::test]
    async fn a_clear_a_hold_after_its_fault_by_event_time_announces_the_fault_first_even_back_to_back() {
        tokio::time::pause();
        let store = Store::for_test();
        let (addr, probe) = actor(&store);
        addr.send(event(&probe, 1, false)).await.unwrap();
        let mut clear = event(&probe, 2, true);
        clear.event.time += HOLD.as_millis() as crate::model::EpochMs;
        addr.send(clear).await.unwrap();
        until("the fault and then the clear are notified", || async {
            kinds(&store).await == [NotificationKind::Fault, NotificationKind::Clear]
        })
        .await;
        tokio::time::sleep(HOLD * 2).await;
        settle(&store).await;
        assert_eq!(
            kinds(&store).await,
            [NotificationKind::Fault, NotificationKind::Clear],
            "the hold's timer announces nothing more"
        );
        let alarms = store.list_alarms(probe.user).await.unwrap();
        assert!(alarms.iter().all(|a| a.closed), "its alarm closed: {alarms:?}");
        assert_eq!(store.monitor_mark(MonitorKey::of(&probe)).await.unwrap(), Some(2));
    }

    #[actix_rt::test]
    async fn a_reboot_inside_the_hold_tells_nobody() {
        tokio::time::pause();
        let store = Store::for_test();
        let (addr, probe) = actor(&store);
        addr.send(event(&probe, 1, false)).await.unwrap();
        tokio::time::sleep(HOLD / 2).await;
        addr.send(event(&probe, 2, true)).await.unwrap();
        tokio::time::sleep(HOLD * 2).await;
        settle(&store).await;
        assert_eq!(kinds(&store).await, vec![], "a reboot sends nothing");
        let alarms = store.list_alarms(probe.user).await.unwrap();
        assert!(alarms.iter().all(|a| a.closed), "its alarm closed: {alarms:?}");
    }
}
