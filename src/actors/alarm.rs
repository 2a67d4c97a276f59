//! `AlarmActor`: one per monitor (a probe, or a probe group), so that the
//! events of one monitor are applied one at a time, in order, and concurrent
//! events never open duplicate alarms (SPEC §5 rule 7).
//!
//! It applies Amon's alarm rules 1–4 and the hold: a new fault is notified
//! only if it is still open `hold` after it appeared; a clear inside the hold
//! cancels it silently; a clear after a sent fault notification sends a clear.
//! Each change is saved with the notifications it decides in one store commit,
//! and only then handed to the notifier pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::notifier::{Deliver, NotifierPool};
use super::supervisor::{Lifeline, Named, Stop};
use crate::clock::Clock;
use crate::model::{Account, Alarm, EpochMs, Fault, MonitorKey, Probe, ProbeEvent};
use crate::notify::{message_id, ContactAddress, MachineRef, Notification, NotificationKind, ProbeRef};
use crate::store::Store;

/// An open alarm takes new events only while its last event is younger than
/// this (clears are exempt): Amon's 25 hours.
const REUSE_WINDOW_MS: EpochMs = 25 * 60 * 60 * 1000;

/// Everything alarm actors share; built once by the master.
pub struct AlarmEnv {
    pub store: Store,
    pub clock: Clock,
    pub notifier: Named<NotifierPool>,
    /// Default hold before a fault is notified.
    pub hold: Duration,
    pub datacenter: String,
    /// Shown in emails so the reader can act.
    pub master_url: String,
}

/// A probe event for this monitor, with the probe it came from.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MonitorEvent {
    pub probe: Arc<Probe>,
    pub event: ProbeEvent,
}

/// The account behind the monitor changed (e.g. its email).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AccountUpdated(pub Account);

pub struct AlarmActor {
    key: MonitorKey,
    account: Account,
    env: Arc<AlarmEnv>,
    /// The monitor's newest open alarm, if any; closed alarms live only in
    /// the store.
    alarm: Option<Alarm>,
    /// The latest definition of each probe we saw an event from.
    probes: HashMap<Uuid, Arc<Probe>>,
    /// Pending hold timers, per faulted probe.
    holds: HashMap<Uuid, SpawnHandle>,
    lifeline: Lifeline,
}

impl AlarmActor {
    pub fn new(key: MonitorKey, account: Account, env: Arc<AlarmEnv>, lifeline: Lifeline) -> AlarmActor {
        AlarmActor {
            key,
            account,
            env,
            alarm: None,
            probes: HashMap::new(),
            holds: HashMap::new(),
            lifeline,
        }
    }

    fn now(&self) -> EpochMs {
        self.env.clock.now_ms()
    }

    fn new_alarm(&self, id: u64) -> Alarm {
        let (probe, probe_group) = match self.key {
            MonitorKey::Probe { probe, .. } => (Some(probe), None),
            MonitorKey::ProbeGroup { group, .. } => (None, Some(group)),
        };
        Alarm {
            user: self.key.user(),
            id,
            probe,
            probe_group,
            closed: false,
            suppressed: false,
            time_opened: self.now(),
            time_closed: None,
            time_last_event: None,
            num_events: 0,
            faults: Vec::new(),
            maint_faults: Vec::new(),
            num_notifications: 0,
        }
    }

    fn schedule_hold(&mut self, alarm_id: u64, probe: Uuid, delay: Duration, ctx: &mut Context<Self>) {
        let handle = ctx.run_later(delay, move |act, ctx| act.hold_expired(alarm_id, probe, ctx));
        if let Some(old) = self.holds.insert(probe, handle) {
            ctx.cancel_future(old);
        }
    }

    fn cancel_holds(&mut self, ctx: &mut Context<Self>) {
        for (_, handle) in self.holds.drain() {
            ctx.cancel_future(handle);
        }
    }

    /// Applies one event to the open alarm (rules 2–4).
    fn apply(&mut self, event: ProbeEvent, ctx: &mut Context<Self>) {
        let now = self.now();
        let hold = self.env.hold;
        let Some(mut alarm) = self.alarm.take() else {
            return;
        };
        alarm.num_events += 1;
        alarm.time_last_event = Some(event.time);
        let mut due = Vec::new();
        if event.clear {
            alarm.maint_faults.retain(|f| f.probe != event.probe_uuid);
            if let Some(at) = alarm.faults.iter().position(|f| f.probe == event.probe_uuid) {
                let mut fault = alarm.faults.remove(at);
                if fault.notified {
                    fault.event = event.clone();
                    due.push((NotificationKind::Clear, fault));
                } else if let Some(handle) = self.holds.remove(&event.probe_uuid) {
                    // Cleared inside the hold: it never happened, as far as
                    // anyone's inbox is concerned.
                    ctx.cancel_future(handle);
                }
            }
            if alarm.faults.is_empty() && alarm.maint_faults.is_empty() {
                alarm.closed = true;
                alarm.time_closed = Some(now);
            }
        } else if let Some(fault) = alarm.faults.iter_mut().find(|f| f.probe == event.probe_uuid) {
            fault.event = event; // latest event wins; count unchanged
        } else {
            let probe = event.probe_uuid;
            alarm.faults.push(Fault {
                fault_type: "probe".into(),
                probe,
                time_faulted: now,
                notified: false,
                event,
            });
            alarm.faults.sort_by_key(|f| f.probe);
            self.schedule_hold(alarm.id, probe, hold, ctx);
        }
        self.commit(alarm, due, ctx);
    }

    fn hold_expired(&mut self, alarm_id: u64, probe: Uuid, ctx: &mut Context<Self>) {
        self.holds.remove(&probe);
        let Some(mut alarm) = self.alarm.take() else {
            return;
        };
        if alarm.id != alarm_id {
            self.alarm = Some(alarm);
            return;
        }
        let mut due = Vec::new();
        if let Some(fault) = alarm.faults.iter_mut().find(|f| f.probe == probe && !f.notified) {
            fault.notified = true;
            due.push((NotificationKind::Fault, fault.clone()));
        }
        if due.is_empty() {
            self.alarm = Some(alarm);
            return;
        }
        self.commit(alarm, due, ctx);
    }

    /// Saves the alarm with the notifications it makes due, then hands them
    /// to the notifier. Blocks this actor's mailbox until the store answers,
    /// so the next event sees the saved state.
    fn commit(&mut self, mut alarm: Alarm, due: Vec<(NotificationKind, Fault)>, ctx: &mut Context<Self>) {
        let notifications = if alarm.suppressed {
            Vec::new()
        } else {
            due.iter()
                .flat_map(|(kind, fault)| self.notifications(&alarm, *kind, fault))
                .collect::<Vec<_>>()
        };
        if !notifications.is_empty() {
            alarm.num_notifications += 1;
        }
        let saved = alarm.clone();
        self.alarm = (!alarm.closed).then_some(alarm);
        let store = self.env.store.clone();
        let now = self.now();
        let notifier = self.env.notifier.clone();
        ctx.wait(
            async move {
                store.save_alarm(saved, notifications.clone(), now).await?;
                Ok::<_, crate::store::StoreError>(notifications)
            }
            .into_actor(self)
            .map(move |result, act, _ctx| match result {
                Ok(notifications) if !notifications.is_empty() => match notifier.get() {
                    Some(pool) => pool.do_send(Deliver(notifications)),
                    // Still in the outbox: the pool picks it up when it starts.
                    None => tracing::warn!("notifier pool is not running; notifications wait in the outbox"),
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(monitor = ?act.key, error = %e, "cannot save alarm");
                }
            }),
        );
    }

    fn notifications(&self, alarm: &Alarm, kind: NotificationKind, fault: &Fault) -> Vec<Notification> {
        let probe = self.probes.get(&fault.probe);
        let contacts: Vec<String> = probe
            .map(|p| p.contacts.clone())
            .unwrap_or_else(|| vec!["email".into()]);
        let event = &fault.event;
        contacts
            .iter()
            .filter_map(|name| {
                let address = match name.as_str() {
                    "email" => ContactAddress::Email(self.account.email.clone()),
                    other => {
                        tracing::warn!(contact = other, account = %self.account.login, "unknown contact; not notified");
                        return None;
                    }
                };
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
                Some(Notification {
                    id,
                    kind,
                    contact_name: name.clone(),
                    contact: address,
                    datacenter: self.env.datacenter.clone(),
                    account_uuid: self.account.uuid,
                    account_login: self.account.login.clone(),
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
                })
            })
            .collect()
    }
}

impl Actor for AlarmActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Pick up where a previous instance (or process) left off: the open
        // alarm, and the holds of faults not yet notified.
        let store = self.env.store.clone();
        let key = self.key;
        ctx.wait(
            async move { store.open_alarm(key).await }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(Some(alarm)) => {
                        let now = act.now();
                        let hold = act.env.hold.as_millis() as EpochMs;
                        for fault in alarm.faults.iter().filter(|f| !f.notified) {
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
                }),
        );
    }
}

impl Handler<MonitorEvent> for AlarmActor {
    type Result = ();

    fn handle(&mut self, msg: MonitorEvent, ctx: &mut Context<Self>) {
        let MonitorEvent { probe, event } = msg;
        let group_events = probe.group_events;
        self.probes.insert(probe.uuid, probe);
        let related = self.alarm.as_ref().is_some_and(|a| {
            group_events && (event.clear || a.time_last_event.is_none_or(|t| event.time - t < REUSE_WINDOW_MS))
        });
        if related {
            self.apply(event, ctx);
            return;
        }
        if event.clear && group_events {
            tracing::debug!(monitor = ?self.key, "clear with no open alarm dropped");
            return;
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
                        act.alarm = Some(act.new_alarm(id));
                        act.apply(event, ctx);
                    }
                    Err(e) => tracing::error!(monitor = ?act.key, error = %e, "cannot open alarm; event dropped"),
                }),
        );
    }
}

impl Handler<AccountUpdated> for AlarmActor {
    type Result = ();

    fn handle(&mut self, msg: AccountUpdated, _ctx: &mut Context<Self>) {
        self.account = msg.0;
    }
}

impl Handler<Stop> for AlarmActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}
