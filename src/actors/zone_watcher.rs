//! `ZoneWatcher`: one actor per zone, remembering the zone's last state and
//! turning each report into "up", "down" or nothing (by state, SPEC §3).
//! `ZoneDispatcher`: owns the watchers — starts one when a zone is first seen
//! or created, stops it when the zone is deleted, and restarts a crashed one
//! with fresh state, so a crash of one watcher never touches another zone.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::time::Instant;
use uuid::Uuid;

use super::relay_link::{Publish, RelayLink};
use super::supervisor::{
    ChildExited, ExitReason, Lifeline, Named, RestartDecision, RestartPolicy, RestartTracker, Stop,
};
use crate::clock::Clock;
use crate::model::{Event, MachineEvent};
use crate::zones::{classify, Transition, ZoneEvent, ZoneMeta, ZoneState};

/// What watchers share (one allocation for all of them).
pub struct WatcherEnv {
    pub link: Named<RelayLink>,
    pub clock: Clock,
    /// This relay's server uuid.
    pub relay: Uuid,
}

/// A state report for one zone.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Observe {
    pub old: Option<ZoneState>,
    pub new: ZoneState,
    pub time_ms: Option<i64>,
    pub meta: ZoneMeta,
    /// A create or snapshot sets the state without it counting as a change.
    pub baseline: bool,
}

pub struct ZoneWatcher {
    machine: Uuid,
    server: Uuid,
    last: Option<ZoneState>,
    alias: Option<Box<str>>,
    owner: Option<Uuid>,
    env: Arc<WatcherEnv>,
    lifeline: Lifeline,
}

impl ZoneWatcher {
    pub fn new(machine: Uuid, server: Uuid, env: Arc<WatcherEnv>, lifeline: Lifeline) -> ZoneWatcher {
        ZoneWatcher {
            machine,
            server,
            last: None,
            alias: None,
            owner: None,
            env,
            lifeline,
        }
    }
}

impl Actor for ZoneWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Zone reports are rare; a small mailbox keeps 100k watchers cheap.
        ctx.set_mailbox_capacity(16);
    }
}

impl Handler<Observe> for ZoneWatcher {
    type Result = ();

    fn handle(&mut self, msg: Observe, _ctx: &mut Context<Self>) {
        if let Some(alias) = msg.meta.alias {
            self.alias = Some(alias.into_boxed_str());
        }
        if msg.meta.owner.is_some() {
            self.owner = msg.meta.owner;
        }
        let transition = if msg.baseline {
            Transition::None
        } else {
            classify(self.last, msg.old, msg.new)
        };
        let before = self.last.or(msg.old);
        self.last = Some(msg.new);
        let up = match transition {
            Transition::Up => true,
            Transition::Down => false,
            Transition::None => return,
        };
        let event = Event::Machine(MachineEvent {
            uuid: Uuid::new_v4(),
            time: msg.time_ms.unwrap_or_else(|| self.env.clock.now_ms()),
            relay: self.env.relay,
            machine: self.machine,
            alias: self.alias.as_deref().map(String::from),
            owner: self.owner,
            server: self.server,
            old_state: before.map(|s| s.as_str().to_string()),
            new_state: msg.new.as_str().to_string(),
            up,
        });
        tracing::info!(machine = %self.machine, alias = ?self.alias, up, state = %msg.new, "zone transition");
        match self.env.link.get() {
            Some(link) => link.do_send(Publish(event)),
            None => tracing::error!(machine = %self.machine, "relay link is not running; transition lost"),
        }
    }
}

impl Handler<Stop> for ZoneWatcher {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

/// Zone events from a source, all from one server.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ZoneEvents {
    pub server: Uuid,
    pub events: Vec<ZoneEvent>,
}

/// Asks for a summary of what the dispatcher watches.
#[derive(Debug, Message)]
#[rtype(result = "DispatcherState")]
pub struct GetDispatcherState;

#[derive(Debug, Clone, serde::Serialize, MessageResponse)]
pub struct DispatcherState {
    pub zones: usize,
    pub watcher_restarts: u64,
}

struct Slot {
    machine: Uuid,
    server: Uuid,
    addr: Addr<ZoneWatcher>,
    generation: u32,
}

pub struct ZoneDispatcher {
    env: Arc<WatcherEnv>,
    /// Watchers by child id (what their lifelines report); freed ids are reused.
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_machine: HashMap<Uuid, usize>,
    /// Restart bookkeeping only for watchers that have crashed.
    restarts: HashMap<Uuid, RestartTracker>,
    restart_count: u64,
    policy: RestartPolicy,
    lifeline: Lifeline,
}

impl ZoneDispatcher {
    pub fn new(env: Arc<WatcherEnv>, lifeline: Lifeline) -> ZoneDispatcher {
        ZoneDispatcher {
            env,
            slots: Vec::new(),
            free: Vec::new(),
            by_machine: HashMap::new(),
            restarts: HashMap::new(),
            restart_count: 0,
            policy: RestartPolicy::default(),
            lifeline,
        }
    }

    fn spawn_watcher(
        &self,
        child: usize,
        generation: u32,
        machine: Uuid,
        server: Uuid,
        ctx: &mut Context<Self>,
    ) -> Addr<ZoneWatcher> {
        let lifeline = Lifeline::new(ctx.address().recipient(), child, generation as u64);
        ZoneWatcher::new(machine, server, self.env.clone(), lifeline).start()
    }

    fn watcher(&mut self, machine: Uuid, server: Uuid, ctx: &mut Context<Self>) -> Addr<ZoneWatcher> {
        if let Some(slot) = self.by_machine.get(&machine).and_then(|&i| self.slots[i].as_ref()) {
            return slot.addr.clone();
        }
        let child = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let addr = self.spawn_watcher(child, 1, machine, server, ctx);
        self.slots[child] = Some(Slot {
            machine,
            server,
            addr: addr.clone(),
            generation: 1,
        });
        self.by_machine.insert(machine, child);
        addr
    }

    fn remove(&mut self, machine: Uuid) {
        if let Some(child) = self.by_machine.remove(&machine) {
            if let Some(slot) = self.slots[child].take() {
                slot.addr.do_send(Stop);
            }
            self.free.push(child);
            self.restarts.remove(&machine);
        }
    }

    fn observe(&mut self, machine: Uuid, server: Uuid, observe: Observe, ctx: &mut Context<Self>) {
        let addr = self.watcher(machine, server, ctx);
        if let Err(e) = addr.try_send(observe) {
            tracing::error!(%machine, error = %e, "zone watcher cannot take the report");
        }
    }
}

/// SmartOS zone names of VMs are their uuids; other zones (the global zone)
/// are not machines we alarm on.
fn machine_of(zonename: &str) -> Option<Uuid> {
    Uuid::parse_str(zonename).ok()
}

impl Actor for ZoneDispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<ZoneEvents> for ZoneDispatcher {
    type Result = ();

    fn handle(&mut self, msg: ZoneEvents, ctx: &mut Context<Self>) {
        let server = msg.server;
        for event in msg.events {
            match event {
                ZoneEvent::State {
                    zonename,
                    old,
                    new,
                    time,
                    meta,
                } => {
                    let Some(machine) = machine_of(&zonename) else { continue };
                    let time_ms = time.map(|t| t.timestamp_millis());
                    self.observe(
                        machine,
                        server,
                        Observe {
                            old,
                            new,
                            time_ms,
                            meta,
                            baseline: false,
                        },
                        ctx,
                    );
                }
                ZoneEvent::Created {
                    zonename,
                    state,
                    time,
                    meta,
                } => {
                    let Some(machine) = machine_of(&zonename) else { continue };
                    // A create is not a fault: its state is only a baseline.
                    let Some(state) = state else {
                        self.watcher(machine, server, ctx);
                        continue;
                    };
                    let time_ms = time.map(|t| t.timestamp_millis());
                    self.observe(
                        machine,
                        server,
                        Observe {
                            old: None,
                            new: state,
                            time_ms,
                            meta,
                            baseline: true,
                        },
                        ctx,
                    );
                }
                ZoneEvent::Deleted { zonename, .. } => {
                    if let Some(machine) = machine_of(&zonename) {
                        self.remove(machine);
                    }
                }
                ZoneEvent::Snapshot(zones) => {
                    for zone in zones {
                        let Some(machine) = machine_of(&zone.zonename) else {
                            continue;
                        };
                        // A zone we already watch compares the snapshot with
                        // what it saw (a missed transition shows up); a new
                        // one takes it as its baseline.
                        let baseline = !self.by_machine.contains_key(&machine);
                        let observe = Observe {
                            old: None,
                            new: zone.state,
                            time_ms: None,
                            meta: zone.meta,
                            baseline,
                        };
                        self.observe(machine, server, observe, ctx);
                    }
                }
                ZoneEvent::Ready => {}
            }
        }
    }
}

impl Handler<ChildExited> for ZoneDispatcher {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(Some(slot)) = self.slots.get(msg.child) else {
            return;
        };
        if slot.generation as u64 != msg.generation || msg.reason == ExitReason::Normal {
            return;
        }
        let (machine, server) = (slot.machine, slot.server);
        tracing::error!(%machine, reason = ?msg.reason, "zone watcher crashed; restarting it with fresh state");
        crate::metrics::actor_restarted("zone_watcher");
        self.restart_count += 1;
        let policy = self.policy.clone();
        let decision = self
            .restarts
            .entry(machine)
            .or_insert_with(|| RestartTracker::new(policy))
            .crashed(Instant::now());
        match decision {
            RestartDecision::Escalate => {
                // One zone's watcher is hopeless; the others are fine. Give up
                // on this one loudly rather than take the relay down.
                tracing::error!(%machine, "zone watcher keeps crashing; no longer watching this zone");
                self.remove(machine);
            }
            RestartDecision::RestartAfter(delay) => {
                let child = msg.child;
                ctx.run_later(delay, move |act, ctx| {
                    let Some(Some(slot)) = act.slots.get(child) else { return };
                    if slot.machine != machine {
                        return;
                    }
                    let generation = slot.generation + 1;
                    let addr = act.spawn_watcher(child, generation, machine, server, ctx);
                    act.slots[child] = Some(Slot {
                        machine,
                        server,
                        addr,
                        generation,
                    });
                });
            }
        }
    }
}

impl Handler<GetDispatcherState> for ZoneDispatcher {
    type Result = DispatcherState;

    fn handle(&mut self, _: GetDispatcherState, _ctx: &mut Context<Self>) -> DispatcherState {
        DispatcherState {
            zones: self.by_machine.len(),
            watcher_restarts: self.restart_count,
        }
    }
}

impl Handler<Stop> for ZoneDispatcher {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        for slot in self.slots.iter().flatten() {
            slot.addr.do_send(Stop);
        }
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

/// Makes a watcher panic, to test that supervision contains it.
#[cfg(test)]
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Explode;

#[cfg(test)]
impl Handler<Explode> for ZoneWatcher {
    type Result = ();

    fn handle(&mut self, _: Explode, _ctx: &mut Context<Self>) {
        panic!("zone watcher {} told to explode", self.machine);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::actors::relay_link::{GetLinkState, RelayLinkConfig};

    fn dispatcher_with_link() -> (Addr<ZoneDispatcher>, Addr<RelayLink>) {
        // A master that is never there: the link keeps every event queued,
        // and its queue is what we inspect.
        let link = RelayLink::new(
            RelayLinkConfig {
                master_url: "http://127.0.0.1:9".into(),
                relay: Uuid::new_v4(),
                hostname: None,
                heartbeat: Duration::from_secs(3600),
                batch_max: 100,
                clock: Clock::tokio(0),
            },
            Lifeline::detached(),
        )
        .start();
        let named = Named::new();
        named.set(link.clone());
        let env = Arc::new(WatcherEnv {
            link: named,
            clock: Clock::tokio(0),
            relay: Uuid::new_v4(),
        });
        (ZoneDispatcher::new(env, Lifeline::detached()).start(), link)
    }

    fn state(zonename: Uuid, old: ZoneState, new: ZoneState) -> ZoneEvent {
        ZoneEvent::State {
            zonename: zonename.to_string(),
            old: Some(old),
            new,
            time: None,
            meta: ZoneMeta::default(),
        }
    }

    async fn settle() {
        // Let every queued message be handled (time is paused: no real wait).
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    async fn queued(link: &Addr<RelayLink>) -> usize {
        link.send(GetLinkState).await.unwrap().queued
    }

    #[actix_rt::test]
    async fn a_panicking_zone_watcher_is_restarted_with_fresh_state_and_others_do_not_notice() {
        tokio::time::pause();
        let (dispatcher, link) = dispatcher_with_link();
        let server = Uuid::new_v4();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        // Both zones are seen running.
        dispatcher.do_send(ZoneEvents {
            server,
            events: vec![
                state(a, ZoneState::Ready, ZoneState::Running),
                state(b, ZoneState::Ready, ZoneState::Running),
            ],
        });
        settle().await;
        let baseline = queued(&link).await;

        // Watcher A panics.
        let child = *dispatcher_slot(&dispatcher, a).await;
        let _ = child.send(Explode).await;
        tokio::time::sleep(Duration::from_secs(1)).await; // past the restart backoff
        settle().await;
        let state_now = dispatcher.send(GetDispatcherState).await.unwrap();
        assert_eq!(state_now.watcher_restarts, 1);
        assert_eq!(state_now.zones, 2);

        // B still remembers "running": a report without an old state is a
        // down. A restarted fresh: the same report is only a first sighting.
        let down = |z| ZoneEvent::State {
            zonename: Uuid::to_string(&z),
            old: None,
            new: ZoneState::ShuttingDown,
            time: None,
            meta: ZoneMeta::default(),
        };
        dispatcher.do_send(ZoneEvents {
            server,
            events: vec![down(a), down(b)],
        });
        settle().await;
        assert_eq!(queued(&link).await, baseline + 1, "only B's down is published");

        // And the new A is alive and watching: its zone coming up is news.
        dispatcher.do_send(ZoneEvents {
            server,
            events: vec![ZoneEvent::State {
                zonename: a.to_string(),
                old: None,
                new: ZoneState::Running,
                time: None,
                meta: ZoneMeta::default(),
            }],
        });
        settle().await;
        assert_eq!(
            queued(&link).await,
            baseline + 2,
            "the restarted watcher reports A coming up"
        );
    }

    /// The live watcher of a machine (test helper).
    async fn dispatcher_slot(dispatcher: &Addr<ZoneDispatcher>, machine: Uuid) -> Box<Addr<ZoneWatcher>> {
        dispatcher
            .send(WatcherOf(machine))
            .await
            .unwrap()
            .expect("watcher exists")
    }

    #[derive(Message)]
    #[rtype(result = "Option<Box<Addr<ZoneWatcher>>>")]
    struct WatcherOf(Uuid);

    impl Handler<WatcherOf> for ZoneDispatcher {
        type Result = Option<Box<Addr<ZoneWatcher>>>;

        fn handle(&mut self, msg: WatcherOf, _ctx: &mut Context<Self>) -> Self::Result {
            let child = self.by_machine.get(&msg.0)?;
            self.slots[*child].as_ref().map(|s| Box::new(s.addr.clone()))
        }
    }
}
