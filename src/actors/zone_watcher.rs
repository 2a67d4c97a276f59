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

use super::relay_link::{Publish, RelayLink, ReportInventory};
use super::supervisor::{
    ChildExited, ExitReason, Lifeline, Named, RestartDecision, RestartPolicy, RestartTracker, Stop,
};
use crate::clock::Clock;
use crate::http::shapes::DispatcherState;
use crate::model::{Event, MachineEvent};
use crate::store::{RelayStore, ZoneRecord};
use crate::zones::inventory::Inventory;
use crate::zones::{classify, Transition, ZoneEvent, ZoneMeta, ZoneState};

/// How often the dispatcher looks for inventory changes to report: a new
/// machine is known to the master (its owner can put probes on it) this
/// soon after its relay sees it.
const INVENTORY_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Every this many checks, the whole inventory is reported (ten minutes).
const INVENTORY_REFRESH: u32 = 300;

/// What watchers share (one allocation for all of them).
pub struct WatcherEnv {
    pub link: Named<RelayLink>,
    pub clock: Clock,
    /// This relay's server uuid.
    pub relay: Uuid,
    /// Where the last state of every zone is kept across restarts.
    pub store: RelayStore,
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
    /// `last` is the zone's state as last recorded (after a restart), if known.
    pub fn new(
        machine: Uuid,
        server: Uuid,
        last: Option<ZoneState>,
        env: Arc<WatcherEnv>,
        lifeline: Lifeline,
    ) -> ZoneWatcher {
        ZoneWatcher {
            machine,
            server,
            last,
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
            v: crate::model::EVENT_VERSION,
            // Time-ordered (v7): the master's uniqueness index on event
            // uuids then grows at its end instead of at random pages.
            uuid: Uuid::now_v7(),
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
        tracing::info!(machine = %self.machine, alias = self.alias.as_deref().unwrap_or(""), up, state = %msg.new, "zone transition");
        // The new state is recorded in the same commit as the spooled event.
        let zone = ZoneRecord {
            machine: self.machine,
            server: self.server,
            state: msg.new,
            alias: self.alias.as_deref().map(String::from),
            owner: self.owner,
        };
        match self.env.link.get() {
            Some(link) => link.do_send(Publish {
                event,
                zone: Some(zone),
            }),
            None => tracing::error!(machine = %self.machine, "relay link is not running; transition lost"),
        }
    }
}

/// Fresh alias/owner for a zone (a periodic `vmadm list`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpdateMeta(pub ZoneMeta);

impl Handler<UpdateMeta> for ZoneWatcher {
    type Result = ();

    fn handle(&mut self, msg: UpdateMeta, _ctx: &mut Context<Self>) {
        if let Some(alias) = msg.0.alias {
            self.alias = Some(alias.into_boxed_str());
        }
        if msg.0.owner.is_some() {
            self.owner = msg.0.owner;
        }
    }
}

/// Asks a watcher what it knows.
#[derive(Debug, Message)]
#[rtype(result = "Option<ZoneState>")]
pub struct GetZoneState;

impl Handler<GetZoneState> for ZoneWatcher {
    type Result = Option<ZoneState>;

    fn handle(&mut self, _: GetZoneState, _ctx: &mut Context<Self>) -> Option<ZoneState> {
        self.last
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

/// Asks for a summary of what the dispatcher watches; with `states`, every
/// zone's state too (one message to each watcher).
#[derive(Debug, Message)]
#[rtype(result = "DispatcherState")]
pub struct GetDispatcherState {
    pub states: bool,
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
    /// Zone states recorded by a previous run, for zones not yet seen in
    /// this one (reconciliation); an entry moves into its watcher when the
    /// zone shows up.
    known: HashMap<Uuid, ZoneRecord>,
    /// Every machine and its server, alias and owner, for the master.
    inventory: Inventory,
    /// Inventory checks since the last full report.
    inventory_ticks: u32,
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
            known: HashMap::new(),
            inventory: Inventory::default(),
            inventory_ticks: 0,
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
        last: Option<ZoneState>,
        ctx: &mut Context<Self>,
    ) -> Addr<ZoneWatcher> {
        let lifeline = Lifeline::new(ctx.address().recipient(), child, generation as u64);
        ZoneWatcher::new(machine, server, last, self.env.clone(), lifeline).start()
    }

    /// The zone's watcher, started if needed from what a previous run
    /// recorded. The second value is `None` when the watcher already existed,
    /// else the state it started from.
    fn watcher(
        &mut self,
        machine: Uuid,
        server: Uuid,
        ctx: &mut Context<Self>,
    ) -> (Addr<ZoneWatcher>, Option<Option<ZoneState>>) {
        if let Some(slot) = self.by_machine.get(&machine).and_then(|&i| self.slots[i].as_ref()) {
            return (slot.addr.clone(), None);
        }
        let child = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let last = self.known.remove(&machine).map(|record| record.state);
        let addr = self.spawn_watcher(child, 1, machine, server, last, ctx);
        self.slots[child] = Some(Slot {
            machine,
            server,
            addr: addr.clone(),
            generation: 1,
        });
        self.by_machine.insert(machine, child);
        (addr, Some(last))
    }

    fn remove(&mut self, machine: Uuid) {
        if let Some(child) = self.by_machine.remove(&machine) {
            if let Some(slot) = self.slots[child].take() {
                slot.addr.do_send(Stop);
            }
            self.free.push(child);
            self.restarts.remove(&machine);
        }
        self.known.remove(&machine);
    }

    fn record(&self, first_seen: Vec<ZoneRecord>, forgotten: Vec<Uuid>, ctx: &mut Context<Self>) {
        if first_seen.is_empty() && forgotten.is_empty() {
            return;
        }
        let store = self.env.store.clone();
        ctx.spawn(
            async move {
                if !first_seen.is_empty() {
                    if let Err(e) = store.put_zones(first_seen).await {
                        tracing::warn!(error = %e, "cannot record zone states");
                    }
                }
                if !forgotten.is_empty() {
                    if let Err(e) = store.forget_zones(forgotten).await {
                        tracing::warn!(error = %e, "cannot forget deleted zones");
                    }
                }
            }
            .into_actor(self),
        );
    }

    /// Hands a report to the zone's watcher. A zone seen for the first time
    /// ever has its state recorded (in `first_seen`) so a later restart knows it.
    fn observe(
        &mut self,
        machine: Uuid,
        server: Uuid,
        mut observe: Observe,
        first_seen: &mut Vec<ZoneRecord>,
        ctx: &mut Context<Self>,
    ) {
        self.inventory.saw(machine, server, &observe.meta);
        let (addr, started) = self.watcher(machine, server, ctx);
        match started {
            // Recorded by a previous run: compare, do not take as baseline.
            Some(Some(_)) => observe.baseline = false,
            Some(None) => first_seen.push(ZoneRecord {
                machine,
                server,
                state: observe.new,
                alias: observe.meta.alias.clone(),
                owner: observe.meta.owner,
            }),
            None => {}
        }
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
        ctx.run_interval(INVENTORY_EVERY, |act, _ctx| act.report_inventory());
        // What a previous run knew, before any source speaks.
        let store = self.env.store.clone();
        ctx.wait(
            async move { store.zones().await }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(zones) => {
                        if !zones.is_empty() {
                            tracing::info!(zones = zones.len(), "zone states from the last run loaded");
                        }
                        for z in &zones {
                            let meta = ZoneMeta {
                                alias: z.alias.clone(),
                                owner: z.owner,
                            };
                            act.inventory.saw(z.machine, z.server, &meta);
                        }
                        act.known = zones.into_iter().map(|z| (z.machine, z)).collect();
                    }
                    Err(e) => {
                        act.lifeline.fail(format!("cannot load zone states: {e}"));
                        ctx.stop();
                    }
                }),
        );
    }
}

impl ZoneDispatcher {
    /// Sends the master what changed in the inventory since the last
    /// report, and everything every `INVENTORY_REFRESH`.
    fn report_inventory(&mut self) {
        let Some(link) = self.env.link.get() else {
            return; // Still marked as changed: next time.
        };
        self.inventory_ticks += 1;
        let reports = if self.inventory_ticks >= INVENTORY_REFRESH {
            self.inventory_ticks = 0;
            self.inventory.take_all()
        } else {
            self.inventory.take_changed()
        };
        if !reports.is_empty() {
            link.do_send(ReportInventory(reports));
        }
    }
}

impl Handler<ZoneEvents> for ZoneDispatcher {
    type Result = ();

    fn handle(&mut self, msg: ZoneEvents, ctx: &mut Context<Self>) {
        let server = msg.server;
        let mut first_seen = Vec::new();
        let mut forgotten = Vec::new();
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
                    let observe = Observe {
                        old,
                        new,
                        time_ms,
                        meta,
                        baseline: false,
                    };
                    self.observe(machine, server, observe, &mut first_seen, ctx);
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
                    let observe = Observe {
                        old: None,
                        new: state,
                        time_ms,
                        meta,
                        baseline: true,
                    };
                    self.observe(machine, server, observe, &mut first_seen, ctx);
                }
                ZoneEvent::Deleted { zonename, .. } => {
                    if let Some(machine) = machine_of(&zonename) {
                        self.remove(machine);
                        self.inventory.forget(machine);
                        forgotten.push(machine);
                    }
                }
                ZoneEvent::Snapshot(zones) => {
                    let mut present = std::collections::HashSet::with_capacity(zones.len());
                    for zone in zones {
                        let Some(machine) = machine_of(&zone.zonename) else {
                            continue;
                        };
                        present.insert(machine);
                        // Reconciliation: a zone we watch, or one a previous
                        // run recorded, compares the snapshot with what it
                        // knew, so a transition we missed shows up now, once.
                        // A zone never seen before takes it as its baseline.
                        let observe = Observe {
                            old: None,
                            new: zone.state,
                            time_ms: None,
                            meta: zone.meta,
                            baseline: true,
                        };
                        let baseline = !self.by_machine.contains_key(&machine) && !self.known.contains_key(&machine);
                        let observe = Observe { baseline, ..observe };
                        self.observe(machine, server, observe, &mut first_seen, ctx);
                    }
                    // Recorded zones of this server missing from its snapshot
                    // were deleted while we were away.
                    let gone: Vec<Uuid> = self
                        .known
                        .values()
                        .filter(|z| z.server == server && !present.contains(&z.machine))
                        .map(|z| z.machine)
                        .collect();
                    for machine in gone {
                        self.known.remove(&machine);
                        self.inventory.forget(machine);
                        forgotten.push(machine);
                    }
                }
                ZoneEvent::Meta(zones) => {
                    // Only zones we watch: metadata alone does not make a zone.
                    for (zonename, meta) in zones {
                        let Some(machine) = machine_of(&zonename) else { continue };
                        self.inventory.update(machine, &meta);
                        if let Some(slot) = self.by_machine.get(&machine).and_then(|&i| self.slots[i].as_ref()) {
                            slot.addr.do_send(UpdateMeta(meta));
                        }
                    }
                }
                ZoneEvent::Ready => {}
            }
        }
        self.record(first_seen, forgotten, ctx);
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
        tracing::error!(%machine, reason = ?msg.reason, "zone watcher crashed; restarting it from the recorded zone state");
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
                // The new watcher starts from the zone's recorded state: a
                // crash must not make us forget that a zone was running.
                let store = self.env.store.clone();
                ctx.spawn(
                    async move {
                        tokio::time::sleep(delay).await;
                        store.zone(machine).await
                    }
                    .into_actor(self)
                    .map(move |record, act, ctx| {
                        let Some(Some(slot)) = act.slots.get(child) else { return };
                        if slot.machine != machine {
                            return;
                        }
                        let last = record.ok().flatten().map(|r| r.state);
                        let generation = slot.generation + 1;
                        let addr = act.spawn_watcher(child, generation, machine, server, last, ctx);
                        act.slots[child] = Some(Slot {
                            machine,
                            server,
                            addr,
                            generation,
                        });
                    }),
                );
            }
        }
    }
}

impl Handler<GetDispatcherState> for ZoneDispatcher {
    type Result = ResponseFuture<DispatcherState>;

    fn handle(&mut self, msg: GetDispatcherState, _ctx: &mut Context<Self>) -> Self::Result {
        let summary = DispatcherState {
            zones: self.by_machine.len(),
            watcher_restarts: self.restart_count,
            states: None,
        };
        if !msg.states {
            return Box::pin(async move { summary });
        }
        let watchers: Vec<(Uuid, Addr<ZoneWatcher>)> = self
            .slots
            .iter()
            .flatten()
            .map(|s| (s.machine, s.addr.clone()))
            .collect();
        Box::pin(async move {
            let asks = watchers.into_iter().map(|(machine, addr)| async move {
                let state = addr.send(GetZoneState).await.ok().flatten();
                (
                    machine,
                    state
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|| "unknown".into()),
                )
            });
            let states = futures_util::future::join_all(asks).await.into_iter().collect();
            DispatcherState {
                states: Some(states),
                ..summary
            }
        })
    }
}

impl Drop for ZoneDispatcher {
    /// A dispatcher that dies (even by a panic) takes its watchers with it:
    /// its successor starts them again from the recorded states.
    fn drop(&mut self) {
        for slot in self.slots.iter().flatten() {
            slot.addr.do_send(Stop);
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
        // A master that is never there: the link keeps every event spooled,
        // and its spool is what we inspect.
        let store = RelayStore::in_memory().unwrap();
        let link = RelayLink::new(
            RelayLinkConfig::for_test(vec!["http://127.0.0.1:9".into()], store.clone()),
            Lifeline::detached(),
        )
        .start();
        let named = Named::new();
        named.set(link.clone());
        let env = Arc::new(WatcherEnv {
            link: named,
            clock: Clock::tokio(0),
            relay: Uuid::new_v4(),
            store,
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
        // Let every queued message be handled and the link's linger pass
        // (time is paused: no real wait). The link answers GetLinkState only
        // once its spool write is committed.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Polls (bounded) until the machine's watcher is a live, new instance.
    async fn restarted(dispatcher: &Addr<ZoneDispatcher>, machine: Uuid, old: &Addr<ZoneWatcher>) {
        for _ in 0..2000 {
            if let Some(addr) = dispatcher.send(WatcherOf(machine)).await.unwrap() {
                if addr.connected() && *addr != *old {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("watcher of {machine} was not restarted");
    }

    /// Polls (bounded) until the link's spool holds `n` events, then checks
    /// that no more arrive.
    async fn expect_spooled(link: &Addr<RelayLink>, n: usize, why: &str) {
        let mut depth = 0;
        for _ in 0..2000 {
            depth = link.send(GetLinkState).await.unwrap().spool_depth;
            if depth >= n {
                break;
            }
            // No real-time wait is needed for the store thread: once the
            // link has begun a spool write, it answers `GetLinkState` only
            // after the commit (its mailbox waits meanwhile).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        settle().await;
        depth = depth.max(link.send(GetLinkState).await.unwrap().spool_depth);
        assert_eq!(depth, n, "{why}");
    }

    #[actix_rt::test]
    async fn a_panicking_zone_watcher_is_restarted_from_its_recorded_state_and_others_do_not_notice() {
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
        // The relay's "started" and both zones' first "up".
        expect_spooled(&link, 3, "started + two ups").await;

        // Watcher A panics.
        let child = *dispatcher_slot(&dispatcher, a).await;
        let _ = child.send(Explode).await;
        restarted(&dispatcher, a, &child).await;
        let state_now = dispatcher.send(GetDispatcherState { states: false }).await.unwrap();
        assert_eq!(state_now.watcher_restarts, 1);
        assert_eq!(state_now.zones, 2);

        // The new A is a fresh actor built from A's recorded state (running),
        // so a report without an old state is a down for both zones.
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
        expect_spooled(&link, 5, "both downs are published").await;

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
        expect_spooled(&link, 6, "the restarted watcher reports A coming up").await;
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
