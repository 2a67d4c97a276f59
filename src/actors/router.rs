//! `EventRouter`: takes committed events, in sequence order, and hands each
//! alarm shard its part: for every monitor an event concerns, the probe event
//! its actor applies. It keeps the catalog (accounts, probes, groups) up to
//! date and shows machine and server events to the flood guard.
//!
//! Routing is asynchronous: `POST /events` answers `202` once its events are
//! committed, and the store hands them to the router in commit order
//! ([`RouteEvents`]). Progress is one watermark: once every alarm actor a
//! batch went to has committed its effect, and every earlier batch is done,
//! the watermark moves past it (`route_mark` in the store). At start the
//! router replays every event after the watermark; each monitor skips what
//! it had already applied (its own mark), so nothing is lost and nothing is
//! applied twice. A batch an actor could not apply (a crash, a failed
//! commit) is routed again after a pause.
//!
//! The [`Backlog`] bounds the events in flight between the commit and the
//! alarm actors: beyond it, `POST /events` answers `503` and the relays
//! retry later, so no mailbox on the way grows without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use super::alarm::AlarmEnv;
pub use super::alarm::ReviewMaintenance;
use super::server_guard::{Observe, Sighting};
pub use super::shard::ForMonitor;
use super::shard::{shard_of, AlarmShard, BookChanged, Resume, ShardEvents, Tell};
use super::supervisor::{Lifeline, Named, Stop};
pub use crate::catalog::Watcher;
use crate::catalog::{Catalog, Dropped, SharedCatalog, Target};
use crate::model::{Account, Contact, Event, MonitorKey, Probe, ProbeEvent, ProbeGroup};
use crate::progress::{Progress, Retry};

/// How many committed events may wait to be applied. Shared by the Master
/// API (which reserves before it commits) and the router (which releases
/// once a batch is applied).
#[derive(Debug)]
pub struct Backlog {
    events: AtomicUsize,
    limit: usize,
}

impl Backlog {
    pub fn new(limit: usize) -> Backlog {
        Backlog {
            events: AtomicUsize::new(0),
            limit: limit.max(1),
        }
    }

    /// Takes room for `n` events; `false` if the backlog is full. An empty
    /// backlog takes any batch, so no batch is too big to ever get in.
    pub fn try_reserve(&self, n: usize) -> bool {
        self.events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now == 0 || now + n <= self.limit).then_some(now + n)
            })
            .is_ok()
    }

    pub fn release(&self, n: usize) {
        let _ = self
            .events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| Some(now.saturating_sub(n)));
    }

    /// Starts over at `n` (the router, after loading what it replays).
    fn reset(&self, n: usize) {
        self.events.store(n, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.events.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tracks one routed batch until every alarm actor it went to has committed
/// its share. When the last holder lets go, the router hears whether every
/// share was applied ([`BatchDone`]); an actor that never calls
/// [`RouteTicket::done`] (a crash, a failed commit) makes the batch fail,
/// and the router routes it again.
pub struct RouteTicket {
    pending: AtomicUsize,
    first: i64,
    events: usize,
    router: Recipient<BatchDone>,
}

impl RouteTicket {
    /// A ticket for `pending` shares of the batch starting at `first`
    /// (`events` long), reporting to `router`.
    pub fn new(pending: usize, first: i64, events: usize, router: Recipient<BatchDone>) -> RouteTicket {
        RouteTicket {
            pending: AtomicUsize::new(pending),
            first,
            events,
            router,
        }
    }

    /// One alarm actor has committed its part.
    pub fn done(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for RouteTicket {
    fn drop(&mut self) {
        self.router.do_send(BatchDone {
            first: self.first,
            events: self.events,
            applied: *self.pending.get_mut() == 0,
        });
    }
}

/// Committed events, in sequence order (sent by the store thread).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RouteEvents(pub Vec<(i64, Event)>);

/// A batch's ticket was let go: whether every share was applied.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BatchDone {
    pub first: i64,
    pub events: usize,
    pub applied: bool,
}

/// Who watches these machines: every enabled machine-up probe on them, with
/// its account (for the flood guard's per-contact messages).
#[derive(Debug, Message)]
#[rtype(result = "Vec<Watcher>")]
pub struct ProbesOn(pub Vec<uuid::Uuid>);

/// A probe was created or changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProbeChanged(pub Probe);

/// An account was created or changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AccountChanged(pub Account);

/// Events replayed at start go in batches of this many.
const REPLAY_BATCH: usize = 1000;

pub struct EventRouter {
    env: Arc<AlarmEnv>,
    catalog: SharedCatalog,
    shards: Vec<Named<AlarmShard>>,
    backlog: Arc<Backlog>,
    /// The highest sequence number handed to the shards.
    routed_upto: i64,
    /// Batches not yet past the watermark (`crate::progress`).
    progress: Progress,
    /// The watermark as stored (or being stored), and one waiting to be.
    mark: i64,
    writing_mark: bool,
    next_mark: Option<i64>,
    /// Compute nodes' hostnames, for faults on machines without an alias.
    server_names: ServerNames,
    lifeline: Lifeline,
}

/// The hostnames relays report for their compute nodes (server events, and
/// the `servers` table at start). A fault whose event has no `agentAlias`
/// (a zone or VM without an alias) gets its compute node's hostname, as the
/// reference's relay stamped it, so the alarm, emails and webhooks name a
/// place rather than only a uuid.
#[derive(Debug, Default)]
struct ServerNames(HashMap<uuid::Uuid, String>);

impl ServerNames {
    fn learn(&mut self, server: uuid::Uuid, hostname: Option<&str>) {
        let Some(hostname) = hostname.map(str::trim).filter(|h| !h.is_empty()) else {
            return;
        };
        if self.0.get(&server).map(String::as_str) != Some(hostname) {
            self.0.insert(server, hostname.to_string());
        }
    }

    /// Fills a missing `agentAlias` with the hostname of the event's agent
    /// (the compute node, for a machine's event) or else of its relay.
    fn name_agent(&self, event: &mut ProbeEvent) {
        if event.agent_alias.as_deref().is_some_and(|a| !a.trim().is_empty()) {
            return;
        }
        let hostname = [event.agent, event.relay]
            .into_iter()
            .flatten()
            .find_map(|server| self.0.get(&server));
        if let Some(hostname) = hostname {
            event.agent_alias = Some(hostname.clone());
        }
    }
}

impl EventRouter {
    pub fn new(
        env: Arc<AlarmEnv>,
        catalog: SharedCatalog,
        shards: Vec<Named<AlarmShard>>,
        backlog: Arc<Backlog>,
        lifeline: Lifeline,
    ) -> EventRouter {
        EventRouter {
            env,
            catalog,
            shards,
            backlog,
            routed_upto: 0,
            progress: Progress::default(),
            mark: 0,
            writing_mark: false,
            next_mark: None,
            server_names: ServerNames::default(),
            lifeline,
        }
    }

    fn catalog_mut(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|e| e.into_inner())
    }

    fn shard(&self, key: MonitorKey) -> Option<Addr<AlarmShard>> {
        self.shards[shard_of(key, self.shards.len())].get()
    }

    /// Routes one batch (in sequence order): each shard gets its targets
    /// with a share of one ticket.
    /// Owners that machine events carry, before the events are routed (a
    /// relay reports its inventory every little while; an event can be
    /// first). What changed is recorded in the inventory.
    fn learn_owners(&mut self, events: &[(i64, Event)], ctx: &mut Context<Self>) {
        if !events
            .iter()
            .any(|(_, e)| matches!(e, Event::Machine(m) if m.owner.is_some()))
        {
            return;
        }
        let mut learned = Vec::new();
        {
            let mut catalog = self.catalog_mut();
            for (_, event) in events {
                if let Event::Machine(m) = event {
                    if catalog.learn_owner(m) {
                        learned.push((m.machine, m.server, m.owner.unwrap_or_default(), m.alias.clone()));
                    }
                }
            }
        }
        if learned.is_empty() {
            return;
        }
        let (store, now) = (self.env.store.clone(), self.env.clock.now_ms());
        ctx.spawn(
            async move {
                if let Err(e) = store.learn_owners(learned, now).await {
                    tracing::warn!(error = %e, "cannot record machine owners");
                }
            }
            .into_actor(self),
        );
    }

    fn route(&mut self, events: Vec<(i64, Event)>, ctx: &mut Context<Self>) {
        let (Some(first), Some(last)) = (events.first().map(|e| e.0), events.last().map(|e| e.0)) else {
            return;
        };
        let count = events.len();
        self.learn_owners(&events, ctx);
        let mut per_shard: Vec<Vec<(i64, Target)>> = vec![Vec::new(); self.shards.len()];
        let mut sightings = Vec::new();
        {
            let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
            let mut targets = Vec::new();
            for (seq, event) in &events {
                match catalog.targets(event, &mut targets) {
                    Dropped::None => {}
                    Dropped::UnknownProbe => {
                        tracing::warn!(event = %event.uuid(), "event for an unknown probe dropped")
                    }
                    Dropped::UnknownAccount => {
                        tracing::warn!(event = %event.uuid(), "event for a probe of an unknown account dropped")
                    }
                }
                for mut target in targets.drain(..) {
                    self.server_names.name_agent(&mut target.event);
                    per_shard[shard_of(target.key, self.shards.len())].push((*seq, target));
                }
                match event {
                    Event::Machine(m) => sightings.push(Sighting::Machine {
                        machine: m.machine,
                        server: m.server,
                        relay: m.relay,
                        alias: m.alias.clone(),
                        up: m.up,
                        time: m.time,
                    }),
                    Event::Server(s) => {
                        self.server_names.learn(s.server, s.hostname.as_deref());
                        sightings.push(Sighting::Server {
                            server: s.server,
                            hostname: s.hostname.clone(),
                            kind: s.event,
                        })
                    }
                    Event::Probe(_) => {}
                }
            }
        }
        for (_, event) in events {
            if let Event::Server(s) = event {
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
        // The flood guard sees machines and servers before any hold can run
        // out on these events.
        if !sightings.is_empty() {
            match self.env.guard.get() {
                Some(guard) => guard.do_send(Observe(sightings)),
                None => tracing::warn!("flood guard is not running; server incidents may be missed"),
            }
        }
        self.progress.routed(first, last);
        let ticket = Arc::new(RouteTicket::new(
            per_shard.iter().map(Vec::len).sum(),
            first,
            count,
            ctx.address().recipient(),
        ));
        for (index, targets) in per_shard.into_iter().enumerate() {
            if targets.is_empty() {
                continue;
            }
            match self.shards[index].get() {
                Some(shard) => shard.do_send(ShardEvents {
                    targets,
                    ticket: ticket.clone(),
                }),
                // Its share stays pending: the batch fails and is routed again.
                None => tracing::warn!(
                    shard = index,
                    "alarm shard is not running; the batch will be routed again"
                ),
            }
        }
    }

    /// A batch is applied: stores the watermark if it moves (one write at
    /// a time; the latest wins).
    fn advance(&mut self, first: i64, ctx: &mut Context<Self>) {
        if let Some(mark) = self.progress.applied(first) {
            self.next_mark = Some(mark);
            self.write_mark(ctx);
        }
    }

    fn write_mark(&mut self, ctx: &mut Context<Self>) {
        if self.writing_mark {
            return;
        }
        let Some(mark) = self.next_mark.take() else { return };
        self.writing_mark = true;
        let store = self.env.store.clone();
        ctx.spawn(
            async move { store.set_route_mark(mark).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.writing_mark = false;
                    match result {
                        Ok(()) => act.mark = act.mark.max(mark),
                        // Replay starts a little earlier; marks skip the rest.
                        Err(e) => tracing::warn!(error = %e, "cannot store the route watermark"),
                    }
                    act.write_mark(ctx);
                }),
        );
    }

    /// Routes a failed batch again, from the store, after its pause.
    fn retry(&mut self, first: i64, ctx: &mut Context<Self>) {
        let Some(Retry { first, last, after }) = self.progress.failed(first) else {
            return;
        };
        metrics::counter!("amon_route_retries_total").increment(1);
        tracing::warn!(
            first,
            last,
            retry_in_ms = after.as_millis() as u64,
            "some alarm actors could not apply a batch; it will be routed again"
        );
        let store = self.env.store.clone();
        ctx.run_later(after, move |act, ctx| {
            ctx.spawn(
                async move { store.events_between(first, last).await }
                    .into_actor(act)
                    .map(move |result, act, ctx| match result {
                        Ok(events) if !events.is_empty() => act.route(events, ctx),
                        // Gone from the store (cannot happen before the
                        // watermark passes them): nothing to apply.
                        Ok(_) => act.advance(first, ctx),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read a batch back to route it again");
                            act.retry(first, ctx);
                        }
                    }),
            );
        });
    }
}

impl Actor for EventRouter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Bounded upstream by the backlog (events in flight).
        ctx.set_mailbox_capacity(16 * 1024);
        let store = self.env.store.clone();
        ctx.wait(
            async move {
                let accounts = store.all_accounts().await?;
                let contacts = store.all_contacts().await?;
                let groups = store.all_groups().await?;
                let probes = store.all_probes().await?;
                let owners = store.machine_owners().await?;
                let open = store.monitors_with_open_alarms().await?;
                let mark = store.route_mark().await?;
                let replay = store.events_after(mark).await?;
                let servers = store.servers().await?;
                let mut catalog = Catalog::load(accounts, contacts, groups, probes);
                for (machine, owner) in owners {
                    catalog.set_owner(machine, Some(owner));
                }
                Ok::<_, crate::store::StoreError>((catalog, open, mark, replay, servers))
            }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok((catalog, open, mark, replay, servers)) => {
                    let (accounts, probes) = (catalog.accounts(), catalog.probes());
                    *act.catalog_mut() = catalog;
                    for (server, hostname, ..) in servers {
                        act.server_names.learn(server, hostname.as_deref());
                    }
                    act.mark = mark;
                    act.routed_upto = replay.last().map_or(mark, |e| e.0);
                    act.backlog.reset(replay.len());
                    // Monitors with open alarms resume their holds now.
                    let mut resume: Vec<Vec<MonitorKey>> = vec![Vec::new(); act.shards.len()];
                    for key in open {
                        resume[shard_of(key, act.shards.len())].push(key);
                    }
                    for (shard, keys) in act.shards.iter().zip(resume) {
                        if let Some(shard) = shard.get() {
                            shard.do_send(Resume(keys));
                        }
                    }
                    if !replay.is_empty() {
                        // Acknowledged before the last stop, perhaps never
                        // applied: apply them now, before anything newer.
                        tracing::info!(
                            count = replay.len(),
                            after = mark,
                            "replaying events after the watermark"
                        );
                        let mut replay = replay.into_iter().peekable();
                        while replay.peek().is_some() {
                            let batch: Vec<_> = replay.by_ref().take(REPLAY_BATCH).collect();
                            act.route(batch, ctx);
                        }
                    }
                    tracing::info!(accounts, probes, shards = act.shards.len(), "event router ready");
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
        // What the replay already covered came in before it was read.
        let fresh: Vec<(i64, Event)> = msg.0.into_iter().filter(|(seq, _)| *seq > self.routed_upto).collect();
        if let Some((last, _)) = fresh.last() {
            self.routed_upto = *last;
            self.route(fresh, ctx);
        }
    }
}

impl Handler<BatchDone> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: BatchDone, ctx: &mut Context<Self>) {
        if msg.applied {
            self.backlog.release(msg.events);
            self.advance(msg.first, ctx);
        } else {
            self.retry(msg.first, ctx);
        }
    }
}

impl Handler<ForMonitor> for EventRouter {
    type Result = ResponseFuture<Result<(), super::alarm::CommandError>>;

    fn handle(&mut self, msg: ForMonitor, _ctx: &mut Context<Self>) -> Self::Result {
        let shard = self.shard(msg.monitor);
        Box::pin(async move {
            match shard {
                Some(shard) => shard
                    .send(msg)
                    .await
                    .unwrap_or_else(|e| Err(super::alarm::CommandError::Store(format!("alarm shard: {e}")))),
                None => Err(super::alarm::CommandError::Store(
                    "the alarm shard is restarting".into(),
                )),
            }
        })
    }
}

impl Handler<ProbesOn> for EventRouter {
    type Result = Vec<Watcher>;

    fn handle(&mut self, msg: ProbesOn, _ctx: &mut Context<Self>) -> Vec<Watcher> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner()).watchers(&msg.0)
    }
}

impl Handler<ProbeChanged> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: ProbeChanged, _ctx: &mut Context<Self>) {
        self.catalog_mut().put_probe(msg.0);
    }
}

impl EventRouter {
    /// Tells every shard of an account's new book.
    fn book_changed(&self, book: Arc<crate::model::AccountBook>) {
        for shard in self.shards.iter().filter_map(Named::get) {
            shard.do_send(BookChanged(book.clone()));
        }
    }
}

impl Handler<AccountChanged> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: AccountChanged, _ctx: &mut Context<Self>) {
        let book = self.catalog_mut().put_account(msg.0);
        self.book_changed(book);
    }
}

/// Machines changed owners in the inventory (a relay's report).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct OwnersChanged(pub Vec<crate::store::OwnerChange>);

impl Handler<OwnersChanged> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: OwnersChanged, _ctx: &mut Context<Self>) {
        let mut catalog = self.catalog_mut();
        for change in msg.0 {
            catalog.set_owner(change.machine, change.owner);
        }
    }
}

/// An account's stored contacts changed (all of them, as they are now).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ContactsChanged {
    pub user: uuid::Uuid,
    pub contacts: Vec<Contact>,
}

impl Handler<ContactsChanged> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: ContactsChanged, _ctx: &mut Context<Self>) {
        let book = self.catalog_mut().put_contacts(msg.user, msg.contacts);
        if let Some(book) = book {
            self.book_changed(book);
        }
    }
}

impl Handler<ReviewMaintenance> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: ReviewMaintenance, _ctx: &mut Context<Self>) {
        for shard in self.shards.iter().filter_map(Named::get) {
            shard.do_send(msg);
        }
    }
}

/// A probe was deleted.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProbeDeleted(pub uuid::Uuid);

impl Handler<ProbeDeleted> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: ProbeDeleted, _ctx: &mut Context<Self>) {
        let old = self.catalog_mut().remove_probe(msg.0);
        if let Some(old) = old {
            let monitor = MonitorKey::of(&old);
            if let Some(shard) = self.shard(monitor) {
                shard.do_send(Tell::ProbeGone {
                    monitor,
                    probe: old.uuid,
                });
            }
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
        self.catalog_mut().put_group(msg.0);
    }
}

/// A probe group was deleted; its probes (given, as they are now) were
/// ungrouped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct GroupDeleted {
    pub user: uuid::Uuid,
    pub group: uuid::Uuid,
    pub ungrouped: Vec<Probe>,
}

impl Handler<GroupDeleted> for EventRouter {
    type Result = ();

    fn handle(&mut self, msg: GroupDeleted, _ctx: &mut Context<Self>) {
        self.catalog_mut().remove_group(msg.group, msg.ungrouped);
        let monitor = MonitorKey::ProbeGroup {
            user: msg.user,
            group: msg.group,
        };
        if let Some(shard) = self.shard(monitor) {
            shard.do_send(Tell::MonitorGone(monitor));
        }
    }
}

impl Handler<Stop> for EventRouter {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_refuses_beyond_its_limit_but_never_an_empty_one() {
        let backlog = Backlog::new(10);
        assert!(backlog.try_reserve(25), "an empty backlog takes any batch");
        assert!(!backlog.try_reserve(1));
        backlog.release(25);
        assert!(backlog.try_reserve(6));
        assert!(backlog.try_reserve(4));
        assert!(!backlog.try_reserve(1));
        backlog.release(100);
        assert!(backlog.is_empty(), "releasing too much never wraps");
    }

    fn event(agent: Option<uuid::Uuid>, relay: Option<uuid::Uuid>, alias: Option<&str>) -> ProbeEvent {
        serde_json::from_value(serde_json::json!({
            "v": 1, "user": uuid::Uuid::nil(), "probeUuid": uuid::Uuid::nil(), "clear": false,
            "data": {"message": "down"}, "uuid": uuid::Uuid::nil(), "time": 1,
            "agent": agent, "relay": relay, "agentAlias": alias,
        }))
        .unwrap()
    }

    #[test]
    fn a_fault_without_an_alias_is_named_by_its_compute_nodes_hostname() {
        let (cn7, relay) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let mut names = ServerNames::default();
        names.learn(cn7, Some("cn-7"));
        names.learn(relay, None);
        let alias = |names: &ServerNames, mut e: ProbeEvent| {
            names.name_agent(&mut e);
            e.agent_alias
        };
        assert_eq!(
            alias(&names, event(Some(cn7), Some(relay), None)).as_deref(),
            Some("cn-7")
        );
        assert_eq!(alias(&names, event(Some(cn7), None, Some(""))).as_deref(), Some("cn-7"));
        assert_eq!(
            alias(&names, event(Some(cn7), Some(relay), Some("web7"))).as_deref(),
            Some("web7"),
            "a machine's own alias wins"
        );
        assert_eq!(
            alias(&names, event(Some(uuid::Uuid::new_v4()), Some(cn7), None)).as_deref(),
            Some("cn-7"),
            "an agent in a zone: its relay's hostname"
        );
        assert_eq!(alias(&names, event(Some(relay), None, None)), None, "no hostname known");
        names.learn(cn7, Some("cn-7b"));
        assert_eq!(
            alias(&names, event(Some(cn7), None, None)).as_deref(),
            Some("cn-7b"),
            "renamed"
        );
    }
}
