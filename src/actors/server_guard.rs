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
//! The decisions are [`crate::flood`]'s, a pure module; this actor carries
//! them out: the announce and settle timers, the heartbeat check every
//! second, the router's `ProbesOn` for who watches the machines, the outbox
//! and the notifier pool, the releases, and the machines table.
//!
//! Incidents live in memory: a master restart forgets open incidents. Their
//! folded faults are then re-held by their alarm actors and notified one by
//! one after the hold if still open — more email than the incident would
//! have sent, never less. Persisting incidents is future work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::alarm::{AlarmActor, ReleaseFolded};
use super::notifier::{Deliver, NotifierPool};
use super::router::{EventRouter, ProbesOn};
use super::supervisor::{Lifeline, Named, Stop};
use crate::catalog::Watcher;
use crate::clock::Clock;
use crate::flood::{self, Decision, Flood, IncidentDraft, MachineSnapshot, Message, Roots};
pub use crate::flood::{GuardSettings, Sighting};
use crate::http::shapes::ServerView;
use crate::model::EpochMs;
use crate::notify::{message_id, Incident, MachineRef, Notification, NotificationKind, ProbeRef};
use crate::store::{MachineRecord, Store};

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
    /// Servers, their machines and incidents: what decides.
    flood: Flood<Addr<AlarmActor>>,
    /// Machines changed since the last write to the store (written once a
    /// second, the latest state of each: a burst costs one small commit).
    unsaved: HashMap<Uuid, MachineRecord>,
    lifeline: Lifeline,
}

impl ServerGuard {
    pub fn new(env: Arc<GuardEnv>, lifeline: Lifeline) -> ServerGuard {
        ServerGuard {
            flood: Flood::new(env.settings.clone()),
            env,
            unsaved: HashMap::new(),
            lifeline,
        }
    }

    fn now(&self) -> EpochMs {
        self.env.clock.now_ms()
    }

    /// Starts the timer a decision asks for.
    fn carry_out(&mut self, decision: Decision, ctx: &mut Context<Self>) {
        match decision {
            Decision::Opened {
                server,
                incident,
                reason,
                hostname,
            } => {
                tracing::warn!(%server, hostname = hostname.as_deref().unwrap_or(""), ?reason, %incident, "server incident opened");
                metrics::counter!("amon_server_incidents_total").increment(1);
                let after = self.flood.settings().announce_after();
                ctx.run_later(after, move |act, ctx| act.announce(server, incident, ctx));
            }
            Decision::Returned {
                server,
                incident,
                announced,
            } => {
                tracing::info!(%server, %incident, announced, "server returned");
                let hold = self.flood.settings().hold;
                ctx.run_later(hold, move |act, ctx| act.settle(server, incident, ctx));
            }
        }
    }

    fn announce(&mut self, server: Uuid, incident: Uuid, ctx: &mut Context<Self>) {
        if let Some(message) = self.flood.announce(server, incident) {
            self.notify_contacts(message, NotificationKind::ServerDown, None, ctx);
        }
    }

    fn settle(&mut self, server: Uuid, incident: Uuid, ctx: &mut Context<Self>) {
        let Some(settled) = self.flood.settle(server, incident) else {
            return;
        };
        if let Some((message, roots)) = settled.summary {
            self.notify_contacts(message, NotificationKind::ServerBack, Some(roots), ctx);
        }
        tracing::info!(%server, %incident, folded = settled.folded.len(), "server incident closed");
        // After the summary: alarms for machines still down are notified.
        // The guard's own mailbox orders this after the summary is queued.
        let folded = settled.folded;
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
        message: Message,
        kind: NotificationKind,
        roots: Option<Roots>,
        ctx: &mut Context<Self>,
    ) {
        let server = message.draft.server;
        let Some(router) = self.env.router.get() else {
            tracing::error!(%server, "event router not running; incident notification lost");
            return;
        };
        let env = self.env.clone();
        let snapshot = self.flood.snapshot(&message.machines);
        let Message { draft, machines } = message;
        ctx.wait(
            async move { router.send(ProbesOn(machines)).await.unwrap_or_default() }
                .into_actor(self)
                .map(move |watchers, act, ctx| {
                    let notifications = match roots {
                        Some(mut roots) => build(&env, &draft, kind, watchers, &snapshot, &mut roots),
                        None => match act.flood.roots_mut(server) {
                            Some(roots) => build(&env, &draft, kind, watchers, &snapshot, roots),
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
        for decision in self.flood.silent_servers(self.env.clock.moment()) {
            self.carry_out(decision, ctx);
        }
    }
}

/// One notification per (account, contact) among the probes watching the
/// machines ([`flood::shares`]). `roots` remembers each contact's first
/// (ServerDown) message so the summary threads under it.
fn build(
    env: &GuardEnv,
    draft: &IncidentDraft,
    kind: NotificationKind,
    watchers: Vec<Watcher>,
    machines: &MachineSnapshot,
    roots: &mut Roots,
) -> Vec<Notification> {
    let covered = |site: &crate::model::FaultSite| env.maintenance.covers(site, env.clock.now_ms());
    flood::shares(kind, draft.server, watchers, machines, roots, covered)
        .into_iter()
        .map(|share| {
            let list = share.machines;
            let first = list.first().cloned();
            Notification {
                id: share.id,
                kind,
                contact_name: share.contact_name,
                contact: share.contact,
                datacenter: env.datacenter.clone(),
                account_uuid: share.account.uuid,
                account_login: share.account.login.clone(),
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
                thread_root: share.thread_root.map(|root| message_id(root, &env.datacenter)),
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
                alarm: None,
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
                            act.flood.remember(m.uuid, m.server, m.alias, m.up);
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
            if let Some(decision) = self.flood.sight(sighting, self.env.clock.moment()) {
                self.carry_out(decision, ctx);
            }
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
        self.flood.fold(msg.server, msg.monitor)
    }
}

/// What the guard knows of every server (for `GET /servers`).
#[derive(Debug, Message)]
#[rtype(result = "Vec<ServerView>")]
pub struct GetServers;

impl Handler<GetServers> for ServerGuard {
    type Result = Vec<ServerView>;

    fn handle(&mut self, _: GetServers, _ctx: &mut Context<Self>) -> Vec<ServerView> {
        self.flood.views()
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

#[cfg(test)]
mod tests {
    //! The guard as an actor, in paused time, with a real router (for
    //! `ProbesOn`) and a real alarm actor: its timers announce an incident
    //! one hold after it opened and settle it one hold after the server
    //! returned, the summary goes before the releases, and a folded fault
    //! still open then is notified. Notifications are read from the outbox
    //! (no notifier pool runs).
    //!
    //! Paused time stands still while the store thread works (in unit
    //! tests the store's answers are awaited on a blocking task, which stops
    //! tokio's auto-advance); "not before" is still checked on the times the
    //! guard stamped (an incident's `opened`, `returned`, an outbox row's
    //! `created`).

    use std::sync::RwLock;

    use super::*;
    use crate::actors::alarm::{AlarmEnv, MonitorEvent};
    use crate::actors::router::Backlog;
    use crate::actors::testkit::{self, until};
    use crate::catalog::Catalog;
    use crate::model::{Account, AccountBook, MonitorKey, Probe, ProbeEvent, ServerEventKind};
    use crate::store::PendingDelivery;

    const HOLD: Duration = Duration::from_secs(60);
    const HOLD_MS: EpochMs = 60_000;

    /// A relay not heard from for this long has lost its heartbeats. The
    /// tests' relays never heartbeat on their own: the tests that are not
    /// about it use a day.
    const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

    fn settings(heartbeat_timeout: Duration) -> GuardSettings {
        GuardSettings {
            hold: HOLD,
            burst_count: 5,
            burst_percent: 50,
            heartbeat_timeout,
            burst_window: Duration::from_secs(10),
        }
    }

    /// A master's flood guard, router and one machine's alarm actor.
    struct Rig {
        store: Store,
        clock: Clock,
        guard: Addr<ServerGuard>,
        alarm: Addr<AlarmActor>,
        probe: Arc<Probe>,
        server: Uuid,
        machine: Uuid,
    }

    impl Rig {
        async fn start() -> Rig {
            Rig::start_with(settings(Duration::from_secs(24 * 3600))).await
        }

        async fn start_with(settings: GuardSettings) -> Rig {
            let store = Store::for_test();
            // An operator account: its probe watches the machine without a
            // relay's report of who owns it.
            let account = Account {
                uuid: Uuid::new_v4(),
                login: "alice".into(),
                email: "alice@example.com".into(),
                operator: true,
                attributes: Default::default(),
            };
            let (server, machine) = (Uuid::new_v4(), Uuid::new_v4());
            let probe = testkit::machine_probe(account.uuid, Some(machine), &["email"], None);
            store.create_account(account.clone(), testkit::START_MS).await.unwrap();
            store.put_probe((*probe).clone()).await.unwrap();

            let guard_name = Named::<ServerGuard>::new();
            let alarm_env = Arc::new(AlarmEnv {
                guard: guard_name.clone(),
                burst_window: settings.burst_window,
                ..Arc::into_inner(testkit::env(&store, HOLD, Duration::from_secs(3600))).unwrap()
            });
            // The router loads the account and the probe from the store. It
            // routes nothing here: one shard, never started.
            let catalog = Arc::new(RwLock::new(Catalog::default()));
            let router = EventRouter::new(
                alarm_env.clone(),
                catalog,
                vec![Named::new()],
                Arc::new(Backlog::new(1024)),
                Lifeline::detached(),
            )
            .start();
            let router_name = Named::new();
            router_name.set(router);
            let guard = ServerGuard::new(
                Arc::new(GuardEnv {
                    maintenance: alarm_env.maintenance.clone(),
                    settings,
                    store: store.clone(),
                    clock: alarm_env.clock.clone(),
                    router: router_name,
                    notifier: Named::new(),
                    datacenter: "test".into(),
                    master_url: "http://127.0.0.1".into(),
                }),
                Lifeline::detached(),
            )
            .start();
            guard_name.set(guard.clone());
            let book = Arc::new(AccountBook {
                account,
                contacts: HashMap::new(),
            });
            let clock = alarm_env.clock.clone();
            let alarm = AlarmActor::new(MonitorKey::of(&probe), book, alarm_env, Lifeline::detached())
                .with_members(vec![probe.clone()], None)
                .start();
            Rig {
                store,
                clock,
                guard,
                alarm,
                probe,
                server,
                machine,
            }
        }

        /// The server's relay says `kind`.
        async fn relay(&self, kind: ServerEventKind) {
            let sighting = Sighting::Server {
                server: self.server,
                hostname: Some("cn-7".into()),
                kind,
            };
            self.guard.send(Observe(vec![sighting])).await.unwrap();
        }

        /// The machine goes down (or, with `up`, comes back), as the router
        /// shows it to the guard and to its probe's alarm actor.
        async fn machine(&self, seq: i64, up: bool) {
            let sighting = Sighting::Machine {
                machine: self.machine,
                server: self.server,
                relay: self.server,
                alias: Some("web0".into()),
                up,
                time: self.clock.now_ms(),
            };
            self.guard.send(Observe(vec![sighting])).await.unwrap();
            let event = ProbeEvent {
                machine: Some(self.machine),
                agent: Some(self.server),
                time: self.clock.now_ms(),
                ..testkit::probe_event(&self.probe, up)
            };
            let event = MonitorEvent {
                probe: self.probe.clone(),
                group: None,
                event,
                seq,
                ticket: None,
            };
            self.alarm.send(event).await.unwrap();
        }

        /// What waits in the outbox, oldest first.
        async fn outbox(&self) -> Vec<PendingDelivery> {
            let mut pending = self.store.pending_deliveries().await.unwrap();
            pending.sort_by_key(|p| p.created);
            pending
        }

        async fn kinds(&self) -> Vec<NotificationKind> {
            self.outbox().await.into_iter().map(|p| p.notification.kind).collect()
        }

        /// Waits `at_least`, then until the outbox holds `kinds`, in that
        /// order.
        async fn until_outbox(&self, at_least: Duration, kinds: &[NotificationKind]) -> Vec<PendingDelivery> {
            tokio::time::sleep(at_least).await;
            until(&format!("the outbox holds {kinds:?}"), || async {
                self.kinds().await == kinds
            })
            .await;
            self.outbox().await
        }

        /// Whether the machine's fault is folded into the incident.
        async fn folded(&self) -> bool {
            let alarms = self.store.list_alarms(self.probe.user).await.unwrap();
            alarms.iter().flat_map(|a| &a.faults).any(|f| f.folded && !f.notified)
        }
    }

    #[actix_rt::test]
    async fn a_machine_still_down_a_hold_after_its_server_returned_gets_its_alarm_after_the_summary() {
        use NotificationKind::{Fault, ServerBack, ServerDown};
        tokio::time::pause();
        let rig = Rig::start().await;
        rig.relay(ServerEventKind::Started).await;
        rig.relay(ServerEventKind::ShuttingDown).await;
        rig.machine(1, false).await;
        // The fault's hold runs out inside the incident: folded, not told.
        let outbox = rig.until_outbox(HOLD, &[ServerDown]).await;
        until("the fault is folded", || rig.folded()).await;
        let down = &outbox[0];
        let incident = down.notification.incident.clone().expect("an incident message");
        assert!(
            down.created - incident.opened >= HOLD_MS,
            "announced one hold after it opened"
        );
        assert_eq!(incident.hostname.as_deref(), Some("cn-7"));
        assert_eq!(incident.returned, None);
        let machines: Vec<(Uuid, bool)> = incident.machines.iter().map(|m| (m.uuid, m.down)).collect();
        assert_eq!(machines, vec![(rig.machine, true)]);
        assert_eq!(down.notification.contact_name, "email");
        assert_eq!(down.notification.alarm_fault_count, 1);

        // Back; the machine is not: the summary a hold later, threaded
        // under the announcement, then the machine's own alarm.
        rig.relay(ServerEventKind::Started).await;
        let outbox = rig.until_outbox(HOLD, &[ServerDown, ServerBack, Fault]).await;
        let back = &outbox[1];
        let summary = back.notification.incident.clone().unwrap();
        let returned = summary.returned.expect("the summary says when it returned");
        assert!(
            back.created - returned >= HOLD_MS,
            "summed up one hold after the return"
        );
        assert_eq!(summary.id, incident.id);
        assert_eq!(
            back.notification.thread_root,
            Some(message_id(down.notification.id, "test"))
        );
        assert!(outbox[2].created >= back.created);
        assert_eq!(
            outbox[2].notification.machine.as_ref().map(|m| m.uuid),
            Some(rig.machine)
        );
        let views = rig.guard.send(GetServers).await.unwrap();
        assert!(views[0].incident.is_none(), "settled: {views:?}");
    }

    #[actix_rt::test]
    async fn a_machine_back_before_the_incident_settles_gets_no_alarm() {
        use NotificationKind::{ServerBack, ServerDown};
        tokio::time::pause();
        let rig = Rig::start().await;
        rig.relay(ServerEventKind::Started).await;
        rig.relay(ServerEventKind::ShuttingDown).await;
        rig.machine(1, false).await;
        rig.until_outbox(HOLD, &[ServerDown]).await;
        until("the fault is folded", || rig.folded()).await;
        rig.relay(ServerEventKind::Started).await;
        rig.machine(2, true).await;
        rig.until_outbox(HOLD, &[ServerDown, ServerBack]).await;
        // The release went out right after the summary: a fault still open
        // would have been told by now.
        tokio::time::sleep(HOLD).await;
        assert_eq!(rig.kinds().await, vec![ServerDown, ServerBack]);
    }

    #[actix_rt::test]
    async fn a_server_back_within_the_hold_tells_nobody() {
        tokio::time::pause();
        let rig = Rig::start().await;
        rig.relay(ServerEventKind::Started).await;
        rig.machine(1, false).await;
        rig.relay(ServerEventKind::ShuttingDown).await;
        // Nothing but time between the shutdown and the start.
        tokio::time::sleep(HOLD / 4).await;
        rig.relay(ServerEventKind::Started).await;
        rig.machine(2, true).await;
        tokio::time::sleep(HOLD * 3).await;
        let views = rig.guard.send(GetServers).await.unwrap();
        assert!(views[0].incident.is_none(), "settled: {views:?}");
        assert_eq!(rig.kinds().await, vec![], "a reboot sends nothing");
    }

    #[actix_rt::test]
    async fn a_relay_silent_past_the_heartbeat_timeout_is_announced_a_hold_later() {
        tokio::time::pause();
        let rig = Rig::start_with(settings(HEARTBEAT_TIMEOUT)).await;
        let heard = rig.clock.now_ms();
        rig.relay(ServerEventKind::Heartbeat).await;
        // The server's machine, running: a silent server takes it along.
        rig.machine(1, true).await;
        let outbox = rig
            .until_outbox(HEARTBEAT_TIMEOUT + HOLD, &[NotificationKind::ServerDown])
            .await;
        let down = &outbox[0];
        let incident = down.notification.incident.clone().unwrap();
        assert_eq!(incident.reason, crate::notify::IncidentReason::HeartbeatLost);
        assert!(incident.opened - heard > HEARTBEAT_TIMEOUT.as_millis() as EpochMs);
        assert!(down.created - incident.opened >= HOLD_MS);
        let machines: Vec<(Uuid, bool)> = incident.machines.iter().map(|m| (m.uuid, m.down)).collect();
        assert_eq!(
            machines,
            vec![(rig.machine, false)],
            "listed, though not seen going down"
        );
    }

    #[actix_rt::test]
    async fn a_step_of_the_wall_clock_neither_silences_a_relay_nor_hides_a_silent_one() {
        tokio::time::pause();
        let rig = Rig::start_with(settings(HEARTBEAT_TIMEOUT)).await;
        rig.relay(ServerEventKind::Heartbeat).await;
        // NTP steps the clock an hour forward: the relay was heard from
        // moments ago, whatever the wall clock says now.
        rig.clock.step(3_600_000);
        tokio::time::sleep(HEARTBEAT_TIMEOUT / 2).await;
        let views = rig.guard.send(GetServers).await.unwrap();
        assert!(views[0].incident.is_none(), "a step is not silence: {views:?}");
        // Two hours back; the relay says nothing more: it is silent once
        // the timeout has passed on monotonic time, not an hour later.
        rig.clock.step(-2 * 3_600_000);
        tokio::time::sleep(HEARTBEAT_TIMEOUT / 2).await;
        until("the silent relay's incident", || async {
            rig.guard.send(GetServers).await.unwrap()[0].incident.is_some()
        })
        .await;
    }
}
