//! `AlarmShard`: owns the monitors whose key falls in its shard
//! ([`shard_of`]) and runs their alarm actors on its own arbiter, one arbiter
//! per core. It is the only place a monitor's actor is started, so a monitor
//! never has two; the shard is also the unit a later change can hand to
//! another master process.
//!
//! It is a dynamic supervisor: an alarm actor that crashes is restarted with
//! fresh state (its open alarm and last applied event reloaded from the
//! store) after a backoff; one that crashes too often escalates, and the
//! shard fails to the router. An actor with nothing to wait for reports
//! itself idle ([`Idle`]); if nothing was sent to it since, the shard stops it
//! and forgets it, and the next message for that monitor starts it again.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::time::Instant;

use super::alarm::{
    AccountUpdated, AlarmActor, AlarmCommand, AlarmEnv, CommandError, MonitorEvent, MonitorGone, ProbeGone,
    ReviewMaintenance,
};
use super::router::RouteTicket;
use super::supervisor::{ChildExited, ExitReason, Lifeline, RestartDecision, RestartPolicy, RestartTracker, Stop};
use crate::catalog::{SharedCatalog, Target};
use crate::model::{AccountBook, MonitorKey};

/// The shard that owns a monitor: the first eight bytes of the probe's or
/// group's uuid, modulo the number of shards. Stable across processes and
/// restarts (a uuid's bytes do not change), so ownership can be shared.
pub fn shard_of(key: MonitorKey, shards: usize) -> usize {
    let uuid = match key {
        MonitorKey::Probe { probe, .. } => probe,
        MonitorKey::ProbeGroup { group, .. } => group,
    };
    let (high, _) = uuid.as_u64_pair();
    (high % shards.max(1) as u64) as usize
}

/// This shard's part of a routed batch, in sequence order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShardEvents {
    pub targets: Vec<(i64, Target)>,
    pub ticket: Arc<RouteTicket>,
}

/// Start the actors of these monitors (they have open alarms whose holds
/// must resume).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Resume(pub Vec<MonitorKey>);

/// An operator's command for one monitor's alarm.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CommandError>")]
pub struct ForMonitor {
    pub monitor: MonitorKey,
    pub command: AlarmCommand,
}

/// Tell a monitor's actor, if it runs (nothing to do otherwise: an actor
/// that is not running has no open alarm to change).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Tell {
    ProbeGone { monitor: MonitorKey, probe: uuid::Uuid },
    MonitorGone(MonitorKey),
}

/// An account or its contacts changed: its running actors get the new book.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BookChanged(pub Arc<AccountBook>);

/// From an alarm actor with nothing to wait for: it has handled `handled`
/// of the messages this shard sent it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Idle {
    pub child: usize,
    pub generation: u64,
    pub handled: u64,
}

/// How many alarm actors run in this shard now.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct RunningActors;

struct Monitor {
    key: MonitorKey,
    addr: Addr<AlarmActor>,
    generation: u64,
    /// Messages sent to the current generation.
    sent: u64,
    restarts: RestartTracker,
}

pub struct AlarmShard {
    index: usize,
    env: Arc<AlarmEnv>,
    catalog: SharedCatalog,
    monitors: HashMap<usize, Monitor>,
    by_key: HashMap<MonitorKey, usize>,
    next_child: usize,
    policy: RestartPolicy,
    lifeline: Lifeline,
}

impl AlarmShard {
    pub fn new(index: usize, env: Arc<AlarmEnv>, catalog: SharedCatalog, lifeline: Lifeline) -> AlarmShard {
        AlarmShard {
            index,
            env,
            catalog,
            monitors: HashMap::new(),
            by_key: HashMap::new(),
            next_child: 0,
            policy: RestartPolicy::default(),
            lifeline,
        }
    }

    /// A new actor for `key` (its members and owner as the catalog has them
    /// now); `None` if the account is unknown.
    fn spawn(
        &self,
        key: MonitorKey,
        child: usize,
        generation: u64,
        ctx: &mut Context<Self>,
    ) -> Option<Addr<AlarmActor>> {
        let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        let book = catalog.book(key.user())?;
        let (probes, group) = catalog.members_of(key);
        let lifeline = Lifeline::new(ctx.address().recipient(), child, generation);
        Some(
            AlarmActor::new(key, book, self.env.clone(), lifeline)
                .with_members(probes, group)
                .with_shard(ctx.address().recipient())
                .start(),
        )
    }

    /// The running actor of a monitor, started if needed; counts the message
    /// about to be sent.
    fn actor(&mut self, key: MonitorKey, ctx: &mut Context<Self>) -> Option<Addr<AlarmActor>> {
        if let Some(monitor) = self.by_key.get(&key).and_then(|child| self.monitors.get_mut(child)) {
            monitor.sent += 1;
            return Some(monitor.addr.clone());
        }
        let child = self.next_child;
        let addr = self.spawn(key, child, 1, ctx)?;
        self.next_child += 1;
        self.monitors.insert(
            child,
            Monitor {
                key,
                addr: addr.clone(),
                generation: 1,
                sent: 1,
                restarts: RestartTracker::new(self.policy.clone()),
            },
        );
        self.by_key.insert(key, child);
        crate::metrics::alarm_actors(self.index, self.monitors.len());
        Some(addr)
    }

    /// The running actor of a monitor, if any; counts the message.
    fn running(&mut self, key: MonitorKey) -> Option<Addr<AlarmActor>> {
        let monitor = self.by_key.get(&key).and_then(|child| self.monitors.get_mut(child))?;
        monitor.sent += 1;
        Some(monitor.addr.clone())
    }

    fn forget(&mut self, child: usize) {
        if let Some(monitor) = self.monitors.remove(&child) {
            self.by_key.remove(&monitor.key);
        }
        crate::metrics::alarm_actors(self.index, self.monitors.len());
    }
}

impl Actor for AlarmShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Bounded upstream: the router holds at most `master.ingest_backlog`
        // events in flight across every shard.
        ctx.set_mailbox_capacity(16 * 1024);
    }
}

impl Handler<ShardEvents> for AlarmShard {
    type Result = ();

    fn handle(&mut self, msg: ShardEvents, ctx: &mut Context<Self>) {
        for (seq, target) in msg.targets {
            let key = target.key;
            let Some(addr) = self.actor(key, ctx) else {
                tracing::warn!(monitor = ?key, "event for a monitor of an unknown account dropped");
                msg.ticket.done();
                continue;
            };
            let event = MonitorEvent {
                probe: target.probe,
                group: target.group,
                event: target.event,
                seq,
                ticket: Some(msg.ticket.clone()),
            };
            // Never refused (a fresh clone); the router's backlog bounds how
            // many events are in flight.
            if let Err(e) = addr.try_send(event) {
                tracing::error!(monitor = ?key, error = %e, "alarm actor cannot take the event");
            }
        }
    }
}

impl Handler<Resume> for AlarmShard {
    type Result = ();

    fn handle(&mut self, msg: Resume, ctx: &mut Context<Self>) {
        for key in msg.0 {
            if self.actor(key, ctx).is_some() {
                // Starting is all it needs: not a message it will handle.
                if let Some(monitor) = self.by_key.get(&key).and_then(|c| self.monitors.get_mut(c)) {
                    monitor.sent -= 1;
                }
            }
        }
    }
}

impl Handler<ForMonitor> for AlarmShard {
    type Result = ResponseFuture<Result<(), CommandError>>;

    fn handle(&mut self, msg: ForMonitor, ctx: &mut Context<Self>) -> Self::Result {
        let addr = self.actor(msg.monitor, ctx);
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

impl Handler<Tell> for AlarmShard {
    type Result = ();

    fn handle(&mut self, msg: Tell, _ctx: &mut Context<Self>) {
        match msg {
            Tell::ProbeGone { monitor, probe } => {
                if let Some(addr) = self.running(monitor) {
                    addr.do_send(ProbeGone(probe));
                }
            }
            Tell::MonitorGone(monitor) => {
                if let Some(addr) = self.running(monitor) {
                    addr.do_send(MonitorGone);
                }
            }
        }
    }
}

impl Handler<BookChanged> for AlarmShard {
    type Result = ();

    fn handle(&mut self, msg: BookChanged, _ctx: &mut Context<Self>) {
        let user = msg.0.account.uuid;
        for monitor in self.monitors.values_mut().filter(|m| m.key.user() == user) {
            monitor.sent += 1;
            monitor.addr.do_send(AccountUpdated(msg.0.clone()));
        }
    }
}

impl Handler<ReviewMaintenance> for AlarmShard {
    type Result = ();

    fn handle(&mut self, msg: ReviewMaintenance, _ctx: &mut Context<Self>) {
        for monitor in self.monitors.values_mut() {
            monitor.sent += 1;
            monitor.addr.do_send(msg);
        }
    }
}

impl Handler<RunningActors> for AlarmShard {
    type Result = usize;

    fn handle(&mut self, _: RunningActors, _ctx: &mut Context<Self>) -> usize {
        self.monitors.len()
    }
}

impl Handler<Idle> for AlarmShard {
    type Result = ();

    fn handle(&mut self, msg: Idle, _ctx: &mut Context<Self>) {
        let Some(monitor) = self.monitors.get(&msg.child) else {
            return;
        };
        // Something sent since is still in its mailbox: not idle after all;
        // it reports again once it has handled it.
        if monitor.generation != msg.generation || monitor.sent != msg.handled {
            return;
        }
        monitor.addr.do_send(Stop);
        self.forget(msg.child);
    }
}

impl Handler<ChildExited> for AlarmShard {
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
            self.forget(msg.child);
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
                    let Some(generation) = act.monitors.get(&child).map(|m| m.generation + 1) else {
                        return;
                    };
                    match act.spawn(key, child, generation, ctx) {
                        Some(addr) => {
                            if let Some(monitor) = act.monitors.get_mut(&child) {
                                monitor.generation = generation;
                                monitor.addr = addr;
                                monitor.sent = 0;
                            }
                        }
                        None => act.forget(child),
                    }
                });
            }
        }
    }
}

impl Drop for AlarmShard {
    /// A shard that dies (even by a panic) takes its alarm actors with it,
    /// so its successor never shares a monitor with an orphan.
    fn drop(&mut self) {
        for monitor in self.monitors.values() {
            monitor.addr.do_send(Stop);
        }
    }
}

impl Handler<Stop> for AlarmShard {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        for monitor in self.monitors.values() {
            monitor.addr.do_send(Stop);
        }
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;
    use std::time::Duration;

    use super::*;
    use crate::actors::testkit::{self, until};
    use crate::catalog::Catalog;
    use crate::model::{Account, Alarm, Probe};
    use crate::store::Store;

    const IDLE: Duration = Duration::from_secs(60);
    const HOLD: Duration = Duration::from_secs(600);

    fn target(probe: &Arc<Probe>, clear: bool) -> Target {
        Target {
            key: MonitorKey::of(probe),
            probe: probe.clone(),
            group: None,
            event: testkit::probe_event(probe, clear),
        }
    }

    /// A ticket nobody waits for.
    fn ticket() -> Arc<RouteTicket> {
        Arc::new(RouteTicket::new(1, 1, 1, Lifeline::detached_recipient()))
    }

    async fn alarms(store: &Store, user: uuid::Uuid) -> Vec<Alarm> {
        store.list_alarms(user).await.unwrap()
    }

    #[actix_rt::test]
    async fn an_idle_actor_stops_and_the_next_event_brings_it_back_with_its_state() {
        tokio::time::pause();
        let store = Store::for_test();
        let account = Account {
            uuid: uuid::Uuid::new_v4(),
            login: "alice".into(),
            email: "alice@example.com".into(),
            operator: false,
            attributes: Default::default(),
        };
        let user = account.uuid;
        let probe = testkit::probe(user);
        let catalog: SharedCatalog = Arc::new(RwLock::new(Catalog::load(
            vec![account],
            vec![],
            vec![],
            vec![(*probe).clone()],
        )));
        let shard = AlarmShard::new(0, testkit::env(&store, HOLD, IDLE), catalog, Lifeline::detached()).start();
        let send = |seq: i64, clear: bool| ShardEvents {
            targets: vec![(seq, target(&probe, clear))],
            ticket: ticket(),
        };

        // A fault opens alarm 1; its clear (inside the hold) closes it.
        shard.send(send(1, false)).await.unwrap();
        until("alarm 1 opens", || async { alarms(&store, user).await.len() == 1 }).await;
        shard.send(send(2, true)).await.unwrap();
        until("alarm 1 closes", || async { alarms(&store, user).await[0].closed }).await;
        assert_eq!(shard.send(RunningActors).await.unwrap(), 1);

        // Nothing to wait for: after the idle time the actor is gone.
        tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
        until("the idle actor stops", || async {
            shard.send(RunningActors).await.unwrap() == 0
        })
        .await;

        // A replay of an event it applied before it stopped changes nothing:
        // the new actor knows its last applied event from the store.
        shard.send(send(2, false)).await.unwrap();
        until("the actor is back", || async {
            shard.send(RunningActors).await.unwrap() == 1
        })
        .await;
        // A new fault opens alarm 2.
        shard.send(send(3, false)).await.unwrap();
        until("alarm 2 opens", || async { alarms(&store, user).await.len() == 2 }).await;
        let all = alarms(&store, user).await;
        let open: Vec<u64> = all.iter().filter(|a| !a.closed).map(|a| a.id).collect();
        assert_eq!(open, vec![2], "the replayed seq 2 opened nothing: {all:?}");
        assert_eq!(store.monitor_mark(MonitorKey::of(&probe)).await.unwrap(), Some(3));

        // While a fault waits out its hold, the actor stays.
        tokio::time::sleep(IDLE * 2).await;
        assert_eq!(shard.send(RunningActors).await.unwrap(), 1);

        // Once notified, an open alarm is all in the store: the actor goes,
        // and the clear that comes later closes the alarm it reloads.
        tokio::time::sleep(HOLD).await;
        until("the notified fault is saved", || async {
            alarms(&store, user)
                .await
                .iter()
                .any(|a| a.id == 2 && a.faults.iter().all(|f| f.notified))
        })
        .await;
        tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
        until("the quiet actor stops", || async {
            shard.send(RunningActors).await.unwrap() == 0
        })
        .await;
        shard.send(send(4, true)).await.unwrap();
        until("alarm 2 closes", || async {
            alarms(&store, user).await.iter().all(|a| a.closed)
        })
        .await;
    }

    #[test]
    fn a_monitor_always_falls_in_the_same_shard() {
        let user = uuid::Uuid::new_v4();
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            let key = MonitorKey::Probe {
                user,
                probe: uuid::Uuid::new_v4(),
            };
            let shard = shard_of(key, 4);
            assert_eq!(shard, shard_of(key, 4));
            seen[shard] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "spread over every shard: {seen:?}");
        assert_eq!(
            shard_of(
                MonitorKey::ProbeGroup {
                    user,
                    group: uuid::Uuid::nil()
                },
                0
            ),
            0
        );
    }
}
