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

/// Why events could not be taken in.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The backlog is full: the caller tries again later (`503`).
    #[error("{0} events wait to be applied; try again later")]
    Full(usize),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Takes events in as `POST /events` does, for every producer inside the
/// master too (the missing-data watch): room in the backlog first, then one
/// durable commit, then the new events to the router, from the store thread
/// in commit order. `Ok` means committed; how many were new (a uuid already
/// stored is a second copy, dropped). `router`: the router to hand the
/// new events to on commit; `None` when the router reads them back from the
/// store (masters sharing one: [`EventRouter::polling`]).
pub async fn ingest(
    store: &crate::store::Store,
    backlog: &Arc<Backlog>,
    router: Option<&Named<EventRouter>>,
    events: Vec<Event>,
    received: crate::model::EpochMs,
) -> Result<usize, IngestError> {
    let count = events.len();
    // When the alarm actors cannot keep up, producers wait (relays keep
    // events in their spool and retry). Handed to the router, the events
    // hold their room until applied; read back by a router (masters
    // sharing a store), the backlog is the store's count of unapplied
    // events, read at every cluster beat, and only checked here.
    let reserved = router.is_some();
    let admitted = if reserved {
        backlog.try_reserve(count)
    } else {
        backlog.has_room(count)
    };
    if !admitted {
        crate::metrics::ingest_refused();
        return Err(IngestError::Full(backlog.len()));
    }
    let (router, held) = (router.cloned(), backlog.clone());
    let committed = store
        .commit_events(events, received, move |committed| {
            let fresh = committed.fresh.len();
            if let Some(router) = router {
                // Second copies of a uuid were dropped: they need no room.
                held.release(count - fresh);
                if fresh > 0 {
                    match router.get() {
                        Some(router) => router.do_send(RouteEvents(committed.fresh)),
                        // Restarting: it replays everything after its
                        // watermark, these included.
                        None => tracing::debug!("event router restarting; its replay routes these events"),
                    }
                }
            }
            fresh
        })
        .await;
    if committed.is_err() && reserved {
        backlog.release(count);
    }
    Ok(committed?)
}

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

    /// Whether `n` more events fit, taking no room (the backlog of masters
    /// sharing a store, which the store counts). An empty backlog takes any
    /// batch.
    pub fn has_room(&self, n: usize) -> bool {
        let now = self.events.load(Ordering::Acquire);
        now == 0 || now + n <= self.limit
    }

    pub fn release(&self, n: usize) {
        let _ = self
            .events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| Some(now.saturating_sub(n)));
    }

    /// Starts over at `n` (the router, after loading what it replays; a
    /// cluster's leadership actor, from the store's count of unapplied
    /// events).
    pub fn reset(&self, n: usize) {
        self.events.store(n, Ordering::Release);
    }

    pub fn limit(&self) -> usize {
        self.limit
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

/// A polling router reads at most this many events at a time.
const POLL_BATCH: usize = 1000;

pub struct EventRouter {
    env: Arc<AlarmEnv>,
    catalog: SharedCatalog,
    shards: Vec<Named<AlarmShard>>,
    backlog: Arc<Backlog>,
    /// The highest sequence number handed to the shards.
    routed_upto: i64,
    /// The highest sequence number whose owners were learnt: a batch
    /// routed again is not learnt from again, since an inventory report
    /// since then may have replaced what it said.
    owners_upto: i64,
    /// Batches not yet past the watermark (`crate::progress`).
    progress: Progress,
    /// The watermark as stored (or being stored), and one waiting to be.
    mark: i64,
    writing_mark: bool,
    next_mark: Option<i64>,
    /// Compute nodes' hostnames, for faults on machines without an alias.
    server_names: ServerNames,
    /// Reads new events from the store this often, instead of being handed
    /// them on commit (masters sharing one store: any of them commits).
    poll: Option<std::time::Duration>,
    polling: bool,
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
            owners_upto: 0,
            progress: Progress::default(),
            mark: 0,
            writing_mark: false,
            next_mark: None,
            server_names: ServerNames::default(),
            poll: None,
            polling: false,
            lifeline,
        }
    }

    /// Reads new events from the store every `every` rather than being
    /// handed them: on PostgreSQL, events are committed in sequence order
    /// by whichever master took them in.
    pub fn polling(mut self, every: std::time::Duration) -> EventRouter {
        self.poll = Some(every);
        self
    }

    /// Routes what is new in the store, a page at a time, unless as many
    /// events as the backlog holds are already routed and not yet applied.
    fn poll_store(&mut self, ctx: &mut Context<Self>) {
        if self.polling || self.routed_upto - self.mark > self.backlog.limit() as i64 {
            return;
        }
        self.polling = true;
        let (store, after) = (self.env.store.clone(), self.routed_upto);
        ctx.spawn(
            async move { store.events_after_page(after, POLL_BATCH).await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.polling = false;
                    match result {
                        Ok(events) => {
                            let full = events.len() == POLL_BATCH;
                            act.take(events, ctx);
                            if full {
                                act.poll_store(ctx);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read new events from the store"),
                    }
                }),
        );
    }

    /// Routes the events after what is already routed.
    fn take(&mut self, events: Vec<(i64, Event)>, ctx: &mut Context<Self>) {
        // What the replay already covered came in before it was read.
        let fresh: Vec<(i64, Event)> = events.into_iter().filter(|(seq, _)| *seq > self.routed_upto).collect();
        if let Some((last, _)) = fresh.last() {
            self.routed_upto = *last;
            self.route(fresh, ctx);
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
        let upto = self.owners_upto;
        if let Some((last, _)) = events.last() {
            self.owners_upto = upto.max(*last);
        }
        let events: Vec<&Event> = events.iter().filter(|(seq, _)| *seq > upto).map(|(_, e)| e).collect();
        if !events
            .iter()
            .any(|e| matches!(e, Event::Machine(m) if m.owner.is_some()))
        {
            return;
        }
        let mut learned = Vec::new();
        {
            let mut catalog = self.catalog_mut();
            for event in events {
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

    /// Tells the missing-data watch which agents were heard from, and when
    /// (steady time): their relays' heartbeats report polls, and a probe
    /// event stamped by a relay is the agent's own word, as of its `time`
    /// (a relay's spool may deliver it late; never later than now). The
    /// watch's own events carry no relay.
    fn report_agents(&self, events: &[(i64, Event)]) {
        let moment = self.env.clock.moment();
        let ago = |ms: i64| moment.steady - ms.max(0);
        let mut heard = Vec::new();
        for (_, event) in events {
            match event {
                Event::Server(s) => heard.extend(
                    s.agents
                        .iter()
                        .map(|seen| (seen.agent, ago(seen.silent_ms.min(i64::MAX as u64) as i64))),
                ),
                Event::Probe(p) if p.relay.is_some() => {
                    heard.extend(p.agent.map(|agent| (agent, ago(moment.wall - p.time))))
                }
                _ => {}
            }
        }
        if heard.is_empty() {
            return;
        }
        if let Some(watch) = self.env.agent_watch.get() {
            watch.do_send(super::agent_watch::AgentsHeard(heard));
        }
    }

    fn route(&mut self, events: Vec<(i64, Event)>, ctx: &mut Context<Self>) {
        let (Some(first), Some(last)) = (events.first().map(|e| e.0), events.last().map(|e| e.0)) else {
            return;
        };
        let count = events.len();
        self.learn_owners(&events, ctx);
        self.report_agents(&events);
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
                    if let Some(every) = act.poll {
                        ctx.run_interval(every, |act, ctx| act.poll_store(ctx));
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
        self.take(msg.0, ctx);
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
    //! The backlog and the hostnames on their own; then the router in
    //! paused time with real alarm shards and actors on an in-memory store,
    //! fed as `POST /events` feeds it and checked through the store:
    //! alarms, the outbox, the watermark and the monitors' marks.

    use std::time::Duration;

    use super::*;
    use crate::actors::testkit::{self, until};
    use crate::model::{Alarm, MachineReport, ServerEvent, ServerEventKind};
    use crate::notify::{ContactAddress, NotificationKind};
    use crate::store::Store;

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

    #[test]
    fn a_shared_backlog_is_checked_without_taking_room() {
        let backlog = Backlog::new(10);
        assert!(backlog.has_room(100), "an empty backlog takes any batch");
        backlog.reset(8);
        assert!(backlog.has_room(2));
        assert!(!backlog.has_room(3));
        assert_eq!(backlog.len(), 8, "checking takes no room");
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

    const HOLD: Duration = Duration::from_secs(600);
    const IDLE: Duration = Duration::from_secs(3600);

    /// The master's routing half, wired as `daemon.rs` wires it (shards as
    /// `Named`, one catalog, one backlog) but without supervisors, and with
    /// every actor on the test's arbiter: a paused clock belongs to one
    /// runtime.
    struct Master {
        store: Store,
        env: Arc<AlarmEnv>,
        catalog: SharedCatalog,
        shards: Vec<Named<AlarmShard>>,
        backlog: Arc<Backlog>,
        router: Named<EventRouter>,
    }

    impl Master {
        fn new(store: &Store, shards: usize, backlog: usize) -> Master {
            Master {
                store: store.clone(),
                env: testkit::env(store, HOLD, IDLE),
                catalog: SharedCatalog::default(),
                shards: (0..shards).map(|_| Named::new()).collect(),
                backlog: Arc::new(Backlog::new(backlog)),
                router: Named::new(),
            }
        }

        fn start_shard(&self, index: usize) -> Addr<AlarmShard> {
            let addr = AlarmShard::new(index, self.env.clone(), self.catalog.clone(), Lifeline::detached()).start();
            self.shards[index].set(addr.clone());
            addr
        }

        fn start_router(&self) -> Addr<EventRouter> {
            let addr = EventRouter::new(
                self.env.clone(),
                self.catalog.clone(),
                self.shards.clone(),
                self.backlog.clone(),
                Lifeline::detached(),
            )
            .start();
            self.router.set(addr.clone());
            addr
        }

        /// Waits until the router has loaded (and routed its replay):
        /// what is committed after that is routed as it comes.
        async fn ready(&self) {
            let router = self.router.get().expect("the router runs");
            router.send(ProbesOn(Vec::new())).await.unwrap();
        }

        /// What `POST /events` does with events it admitted (a copy of its
        /// last steps, which live in the HTTP handler): room in the backlog,
        /// the commit, and the new events handed to the router by the store
        /// thread. Answers their sequence numbers.
        async fn post(&self, events: Vec<Event>) -> Vec<i64> {
            let count = events.len();
            assert!(
                self.backlog.try_reserve(count),
                "the backlog has room for {count} events"
            );
            let (router, backlog) = (self.router.clone(), self.backlog.clone());
            self.store
                .commit_events(events, testkit::START_MS, move |committed| {
                    backlog.release(count - committed.fresh.len());
                    let seqs = committed.fresh.iter().map(|(seq, _)| *seq).collect();
                    if let Some(router) = router.get().filter(|_| !committed.fresh.is_empty()) {
                        router.do_send(RouteEvents(committed.fresh));
                    }
                    seqs
                })
                .await
                .unwrap()
        }

        /// Waits until the watermark is `seq`.
        async fn applied_upto(&self, seq: i64) {
            until(&format!("the watermark reaches {seq}"), || async {
                self.store.route_mark().await.unwrap() == seq
            })
            .await;
        }
    }

    /// Gives the actors time (paused) and store round trips to write what
    /// they were about to write.
    async fn settle(store: &Store) {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            store.route_mark().await.unwrap();
        }
    }

    /// Makes probes until one's monitor falls in `shard` (of `shards`).
    fn in_shard(shard: usize, shards: usize, make: impl Fn() -> Arc<Probe>) -> Arc<Probe> {
        std::iter::repeat_with(make)
            .find(|p| shard_of(MonitorKey::of(p), shards) == shard)
            .unwrap()
    }

    /// A group of `user` whose monitor falls in `shard` (of `shards`).
    fn group_in_shard(user: uuid::Uuid, shard: usize, shards: usize) -> ProbeGroup {
        std::iter::repeat_with(|| testkit::group(user))
            .find(|g| shard_of(MonitorKey::ProbeGroup { user, group: g.uuid }, shards) == shard)
            .unwrap()
    }

    async fn define(store: &Store, accounts: &[&Account], groups: &[&ProbeGroup], probes: &[&Arc<Probe>]) {
        for account in accounts {
            store
                .create_account((*account).clone(), testkit::START_MS)
                .await
                .unwrap();
        }
        for group in groups {
            store.put_group((*group).clone()).await.unwrap();
        }
        for probe in probes {
            store.put_probe((***probe).clone()).await.unwrap();
        }
    }

    fn machine(machine: uuid::Uuid, server: uuid::Uuid, up: bool, owner: Option<uuid::Uuid>) -> Event {
        Event::Machine(testkit::machine_event(machine, server, up, owner))
    }

    fn probe_event(probe: &Probe, clear: bool) -> Event {
        Event::Probe(testkit::probe_event(probe, clear))
    }

    fn server_event(server: uuid::Uuid) -> Event {
        Event::Server(ServerEvent {
            v: 1,
            uuid: uuid::Uuid::new_v4(),
            time: testkit::START_MS,
            relay: server,
            server,
            event: ServerEventKind::Heartbeat,
            hostname: Some("cn-1".into()),
            agents: Vec::new(),
        })
    }

    fn owned(machine: uuid::Uuid, owner: uuid::Uuid) -> MachineReport {
        MachineReport {
            uuid: machine,
            alias: None,
            owner: Some(owner),
        }
    }

    /// The alarms of `probe`'s monitor, oldest first.
    async fn alarms_of(store: &Store, probe: &Probe) -> Vec<Alarm> {
        let key = MonitorKey::of(probe);
        let mut alarms: Vec<Alarm> = store
            .list_alarms(probe.user)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.monitor() == key)
            .collect();
        alarms.sort_by_key(|a| a.id);
        alarms
    }

    /// Each alarm of `probe`'s monitor, oldest first: how many events it
    /// counted, and whether it is closed.
    async fn counts(store: &Store, probe: &Probe) -> Vec<(u64, bool)> {
        alarms_of(store, probe)
            .await
            .iter()
            .map(|a| (a.num_events, a.closed))
            .collect()
    }

    async fn mark_of(store: &Store, probe: &Probe) -> Option<i64> {
        store.monitor_mark(MonitorKey::of(probe)).await.unwrap()
    }

    #[actix_rt::test]
    async fn a_machine_event_reaches_every_monitor_watching_the_machine_and_nobody_else() {
        tokio::time::pause();
        let store = Store::for_test();
        let (alice, bob) = (testkit::account("alice", false), testkit::account("bob", false));
        let [web0, web1, bobs, server] = [(); 4].map(|_| uuid::Uuid::new_v4());
        let reports = vec![owned(web0, alice.uuid), owned(web1, alice.uuid), owned(bobs, bob.uuid)];
        store
            .replace_server_machines(server, reports, testkit::START_MS)
            .await
            .unwrap();
        // Two monitors on web0, one in each shard: a group and a lone probe.
        let web = group_in_shard(alice.uuid, 0, 2);
        let grouped = testkit::machine_probe(alice.uuid, Some(web0), &["email"], Some(web.uuid));
        let alone = in_shard(1, 2, || {
            testkit::machine_probe(alice.uuid, Some(web0), &["email"], None)
        });
        let elsewhere = testkit::machine_probe(alice.uuid, Some(web1), &["email"], None);
        let bobs = testkit::machine_probe(bob.uuid, Some(bobs), &["email"], None);
        let agent = testkit::probe(alice.uuid);
        let unknown = testkit::probe(alice.uuid);
        define(
            &store,
            &[&alice, &bob],
            &[&web],
            &[&grouped, &alone, &elsewhere, &bobs, &agent],
        )
        .await;
        let master = Master::new(&store, 2, 1000);
        master.start_shard(0);
        master.start_shard(1);
        master.start_router();
        master.ready().await;

        assert_eq!(master.post(vec![machine(web0, server, false, None)]).await, [1]);
        assert_eq!(master.post(vec![probe_event(&agent, false)]).await, [2]);
        assert_eq!(master.post(vec![probe_event(&unknown, false)]).await, [3]);
        // The event for a probe nobody knows is dropped, and the watermark
        // moves past it all the same.
        master.applied_upto(3).await;

        for (probe, seq) in [(&grouped, 1), (&alone, 1), (&agent, 2)] {
            assert_eq!(counts(&store, probe).await, [(1, false)], "{probe:?}");
            assert_eq!(mark_of(&store, probe).await, Some(seq));
        }
        assert_eq!(store.list_alarms(alice.uuid).await.unwrap().len(), 3, "nobody else");
        assert_eq!(store.list_alarms(bob.uuid).await.unwrap(), []);
        for probe in [&elsewhere, &bobs, &unknown] {
            assert_eq!(mark_of(&store, probe).await, None, "{probe:?}");
        }
        assert!(master.backlog.is_empty());

        // After the hold, each monitor tells its contacts once; the group's
        // fault is the group's.
        tokio::time::sleep(HOLD).await;
        until("the faults are notified", || async {
            store.pending_deliveries().await.unwrap().len() >= 3
        })
        .await;
        settle(&store).await;
        let mut told: Vec<_> = store
            .pending_deliveries()
            .await
            .unwrap()
            .into_iter()
            .map(|p| {
                let n = p.notification;
                assert_eq!(n.kind, NotificationKind::Fault);
                assert_eq!(n.contact, ContactAddress::Email("alice@example.com".into()));
                (n.probe.uuid, n.probe.group, n.machine.map(|m| m.uuid))
            })
            .collect();
        told.sort();
        let mut expected = vec![
            (grouped.uuid, Some(web.uuid), Some(web0)),
            (alone.uuid, None, Some(web0)),
            (agent.uuid, None, None),
        ];
        expected.sort();
        assert_eq!(told, expected);
    }

    #[actix_rt::test]
    async fn the_watermark_moves_past_a_batch_only_once_every_earlier_one_is_applied() {
        tokio::time::pause();
        let store = Store::for_test();
        let alice = testkit::account("alice", false);
        let a = in_shard(0, 2, || testkit::probe(alice.uuid));
        let b = in_shard(1, 2, || testkit::probe(alice.uuid));
        define(&store, &[&alice], &[], &[&a, &b]).await;
        let master = Master::new(&store, 2, 1000);
        // a's shard is not running yet: what goes to a is not applied.
        master.start_shard(1);
        master.start_router();
        master.ready().await;

        assert_eq!(master.post(vec![probe_event(&b, false)]).await, [1]);
        master.applied_upto(1).await;
        assert_eq!(master.post(vec![probe_event(&a, false)]).await, [2]);
        assert_eq!(master.post(vec![probe_event(&b, true)]).await, [3]);
        // Concerns no monitor: applied as soon as it is routed.
        assert_eq!(master.post(vec![server_event(uuid::Uuid::new_v4())]).await, [4]);
        until("b applies its clear", || async { mark_of(&store, &b).await == Some(3) }).await;
        until("batches 3 and 4 are done", || async { master.backlog.len() == 1 }).await;
        settle(&store).await;
        assert_eq!(store.route_mark().await.unwrap(), 1, "batch 2 holds the watermark");
        assert_eq!(counts(&store, &b).await, [(2, true)]);
        assert_eq!(counts(&store, &a).await, []);

        master.start_shard(0);
        master.applied_upto(4).await;
        assert_eq!(counts(&store, &a).await, [(1, false)]);
        assert_eq!(mark_of(&store, &a).await, Some(2));
        assert_eq!(counts(&store, &b).await, [(2, true)]);
        assert!(master.backlog.is_empty());
    }

    #[actix_rt::test]
    async fn a_batch_a_shard_missed_is_routed_again_until_applied_and_each_monitor_applies_it_once() {
        tokio::time::pause();
        let store = Store::for_test();
        let alice = testkit::account("alice", false);
        let [web0, server] = [(); 2].map(|_| uuid::Uuid::new_v4());
        store
            .replace_server_machines(server, vec![owned(web0, alice.uuid)], testkit::START_MS)
            .await
            .unwrap();
        let x = in_shard(0, 2, || {
            testkit::machine_probe(alice.uuid, Some(web0), &["email"], None)
        });
        let y = in_shard(1, 2, || {
            testkit::machine_probe(alice.uuid, Some(web0), &["email"], None)
        });
        define(&store, &[&alice], &[], &[&x, &y]).await;
        let master = Master::new(&store, 2, 1000);
        master.start_shard(0);
        master.start_router();
        master.ready().await;

        // x applies its share; y's shard is down, so the batch fails, and
        // fails again at each retry (after 1 s, then 2 s) while it stays
        // down: x gets the batch each time and skips it.
        assert_eq!(master.post(vec![machine(web0, server, false, None)]).await, [1]);
        until("x applies its share", || async { mark_of(&store, &x).await == Some(1) }).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        settle(&store).await;
        assert_eq!(store.route_mark().await.unwrap(), 0);
        assert_eq!(master.backlog.len(), 1);
        assert_eq!(counts(&store, &x).await, [(1, false)]);

        // The next retry (4 s after the last) finds y's shard.
        master.start_shard(1);
        master.applied_upto(1).await;
        assert_eq!(counts(&store, &y).await, [(1, false)]);
        assert_eq!(counts(&store, &x).await, [(1, false)], "x applied it once");
        assert!(master.backlog.is_empty());
    }

    #[actix_rt::test]
    async fn events_committed_while_no_router_runs_are_applied_once_it_starts() {
        tokio::time::pause();
        let store = Store::for_test();
        let alice = testkit::account("alice", false);
        let [web0, server] = [(); 2].map(|_| uuid::Uuid::new_v4());
        store
            .replace_server_machines(server, vec![owned(web0, alice.uuid)], testkit::START_MS)
            .await
            .unwrap();
        let x = testkit::machine_probe(alice.uuid, Some(web0), &["email"], None);
        let p = testkit::probe(alice.uuid);
        define(&store, &[&alice], &[], &[&x, &p]).await;
        let master = Master::new(&store, 1, 1000);
        master.start_shard(0);

        // The router is restarting: the store's callback finds none.
        let first = master.post(vec![probe_event(&p, false), probe_event(&p, false)]).await;
        let second = master.post(vec![machine(web0, server, false, None)]).await;
        assert_eq!([first, second].concat(), [1, 2, 3]);
        master.start_router();
        // Committed while the new router loads: routed after its replay.
        assert_eq!(master.post(vec![probe_event(&p, false)]).await, [4]);
        master.applied_upto(4).await;
        assert_eq!(counts(&store, &p).await, [(3, false)]);
        assert_eq!(counts(&store, &x).await, [(1, false)]);

        assert_eq!(master.post(vec![probe_event(&p, true)]).await, [5]);
        master.applied_upto(5).await;
        assert_eq!(counts(&store, &p).await, [(4, true)]);
        assert!(master.backlog.is_empty());
    }

    #[actix_rt::test]
    async fn a_new_router_replays_after_the_watermark_and_monitors_skip_what_they_applied() {
        tokio::time::pause();
        let store = Store::for_test();
        let alice = testkit::account("alice", false);
        let [web0, server] = [(); 2].map(|_| uuid::Uuid::new_v4());
        store
            .replace_server_machines(server, vec![owned(web0, alice.uuid)], testkit::START_MS)
            .await
            .unwrap();
        let x = in_shard(0, 2, || {
            testkit::machine_probe(alice.uuid, Some(web0), &["email"], None)
        });
        let y = in_shard(1, 2, || {
            testkit::machine_probe(alice.uuid, Some(web0), &["email"], None)
        });
        define(&store, &[&alice], &[], &[&x, &y]).await;

        // x applies batches 1 and 2; y's shard is down, so batch 1 is not
        // applied and the watermark stays before it.
        let before = Master::new(&store, 2, 1000);
        let shard = before.start_shard(0);
        let router = before.start_router();
        before.ready().await;
        assert_eq!(before.post(vec![machine(web0, server, false, None)]).await, [1]);
        assert_eq!(before.post(vec![probe_event(&x, false)]).await, [2]);
        until("x applies both", || async { mark_of(&store, &x).await == Some(2) }).await;
        assert_eq!(store.route_mark().await.unwrap(), 0);

        // The master stops before the batch is routed again.
        router.send(Stop).await.unwrap();
        shard.send(Stop).await.unwrap();
        until("the router and the shard are gone", || async {
            !router.connected() && !shard.connected()
        })
        .await;

        let after = Master::new(&store, 2, 1000);
        after.start_shard(0);
        after.start_shard(1);
        after.start_router();
        after.applied_upto(2).await;
        assert_eq!(counts(&store, &x).await, [(2, false)], "x applied each once");
        assert_eq!(counts(&store, &y).await, [(1, false)]);
        assert_eq!(
            (mark_of(&store, &x).await, mark_of(&store, &y).await),
            (Some(2), Some(1))
        );
        assert!(after.backlog.is_empty());
    }

    #[actix_rt::test]
    async fn an_accounts_probe_hears_of_a_machine_only_while_the_account_owns_it() {
        tokio::time::pause();
        let store = Store::for_test();
        let (alice, bob) = (testkit::account("alice", false), testkit::account("bob", false));
        let root = testkit::account("root", true);
        let [web0, web1, server] = [(); 3].map(|_| uuid::Uuid::new_v4());
        let on = |user: uuid::Uuid, machine| testkit::machine_probe(user, Some(machine), &["email"], None);
        let (alices, bobs, roots) = (on(alice.uuid, web0), on(bob.uuid, web0), on(root.uuid, web0));
        let alices1 = on(alice.uuid, web1);
        define(&store, &[&alice, &bob, &root], &[], &[&alices, &bobs, &roots, &alices1]).await;
        let master = Master::new(&store, 1, 1000);
        master.start_shard(0);
        let router = master.start_router();
        master.ready().await;
        let mut seq = 0;
        let mut post = |events: Vec<Event>| {
            seq += events.len() as i64;
            let (master, upto) = (&master, seq);
            async move {
                master.post(events).await;
                master.applied_upto(upto).await;
            }
        };
        // Who the flood guard would tell about each machine.
        let watching = |machine: uuid::Uuid| {
            let router = router.clone();
            async move {
                let mut users: Vec<uuid::Uuid> = router
                    .send(ProbesOn(vec![machine]))
                    .await
                    .unwrap()
                    .iter()
                    .map(|w| w.probe.user)
                    .collect();
                users.sort();
                users
            }
        };
        let sorted = |mut users: Vec<uuid::Uuid>| {
            users.sort();
            users
        };

        // Nobody reported the owners: only the operator hears.
        post(vec![
            machine(web0, server, false, None),
            machine(web1, server, false, None),
        ])
        .await;
        assert_eq!(counts(&store, &roots).await, [(1, false)]);
        assert_eq!(store.list_alarms(alice.uuid).await.unwrap(), []);
        assert_eq!(store.list_alarms(bob.uuid).await.unwrap(), []);
        assert_eq!(watching(web0).await, [root.uuid]);
        assert!(watching(web1).await.is_empty());

        // An event that names web0's owner: Alice hears of it, this very
        // event included, and the inventory learns it.
        post(vec![machine(web0, server, false, Some(alice.uuid))]).await;
        assert_eq!(counts(&store, &alices).await, [(1, false)]);
        assert_eq!(counts(&store, &roots).await, [(2, false)]);
        assert_eq!(watching(web0).await, sorted(vec![alice.uuid, root.uuid]));
        until("the inventory has web0's owner", || async {
            store.inventory_machine(web0).await.unwrap().and_then(|m| m.owner) == Some(alice.uuid)
        })
        .await;
        post(vec![machine(web0, server, true, None)]).await;
        assert_eq!(counts(&store, &alices).await, [(2, true)]);

        // The relay's report: web0 is Bob's now, web1 Alice's.
        let changes = store
            .replace_server_machines(
                server,
                vec![owned(web0, bob.uuid), owned(web1, alice.uuid)],
                testkit::START_MS,
            )
            .await
            .unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        router.send(OwnersChanged(changes)).await.unwrap();
        assert_eq!(watching(web0).await, sorted(vec![bob.uuid, root.uuid]));
        assert_eq!(watching(web1).await, [alice.uuid]);
        post(vec![
            machine(web0, server, false, None),
            machine(web1, server, false, None),
        ])
        .await;
        assert_eq!(counts(&store, &bobs).await, [(1, false)]);
        assert_eq!(
            counts(&store, &alices).await,
            [(2, true)],
            "Alice's old machine is none of hers"
        );
        assert_eq!(counts(&store, &alices1).await, [(1, false)]);
        assert_eq!(counts(&store, &roots).await, [(3, true), (1, false)]);
        assert!(master.backlog.is_empty());
    }

    #[actix_rt::test]
    async fn the_backlog_holds_a_batch_until_it_is_applied_and_refuses_beyond_its_bound() {
        tokio::time::pause();
        let store = Store::for_test();
        let alice = testkit::account("alice", false);
        let a = in_shard(0, 2, || testkit::probe(alice.uuid));
        let b = in_shard(1, 2, || testkit::probe(alice.uuid));
        define(&store, &[&alice], &[], &[&a, &b]).await;
        let master = Master::new(&store, 2, 8);
        master.start_shard(1);
        master.start_router();
        master.ready().await;

        // Five events for a, whose shard is not running: they wait.
        master.post((0..5).map(|_| probe_event(&a, false)).collect()).await;
        // Three for b fit beside them, and are released once applied.
        master.post((0..3).map(|_| probe_event(&b, false)).collect()).await;
        until("b's events are applied", || async {
            mark_of(&store, &b).await == Some(8)
        })
        .await;
        until("b's room is released", || async { master.backlog.len() == 5 }).await;
        settle(&store).await;
        assert_eq!(master.backlog.len(), 5, "a's events still wait");
        assert!(!master.backlog.try_reserve(4), "a relay is told to come back later");

        master.start_shard(0);
        master.applied_upto(8).await;
        assert_eq!(counts(&store, &a).await, [(5, false)]);
        assert!(master.backlog.is_empty());
        assert!(master.backlog.try_reserve(8));
    }

    #[actix_rt::test]
    async fn a_batch_routed_again_does_not_bring_back_an_owner_the_inventory_has_replaced() {
        tokio::time::pause();
        let store = Store::for_test();
        let (alice, bob) = (testkit::account("alice", false), testkit::account("bob", false));
        let root = testkit::account("root", true);
        let [web0, server] = [(); 2].map(|_| uuid::Uuid::new_v4());
        let on = |user: uuid::Uuid| testkit::machine_probe(user, Some(web0), &["email"], None);
        let alices = in_shard(0, 2, || on(alice.uuid));
        let bobs = in_shard(0, 2, || on(bob.uuid));
        let roots = in_shard(1, 2, || on(root.uuid));
        define(&store, &[&alice, &bob, &root], &[], &[&alices, &bobs, &roots]).await;
        let master = Master::new(&store, 2, 1000);
        master.start_shard(0);
        let router = master.start_router();
        master.ready().await;

        // An event naming Alice as web0's owner; the operator's shard is
        // down, so its batch will be routed again.
        assert_eq!(
            master.post(vec![machine(web0, server, false, Some(alice.uuid))]).await,
            [1]
        );
        until("Alice's monitor applies it", || async {
            mark_of(&store, &alices).await == Some(1)
        })
        .await;
        // Then the relay reports web0 as Bob's.
        let changes = store
            .replace_server_machines(server, vec![owned(web0, bob.uuid)], testkit::START_MS)
            .await
            .unwrap();
        router.send(OwnersChanged(changes)).await.unwrap();

        master.start_shard(1);
        master.applied_upto(1).await;
        let owner = store.inventory_machine(web0).await.unwrap().and_then(|m| m.owner);
        assert_eq!(owner, Some(bob.uuid), "the older event's owner is not recorded again");
        let watching: Vec<uuid::Uuid> = router
            .send(ProbesOn(vec![web0]))
            .await
            .unwrap()
            .iter()
            .map(|w| w.probe.user)
            .collect();
        assert!(!watching.contains(&alice.uuid), "{watching:?}");
        assert_eq!(master.post(vec![machine(web0, server, false, None)]).await, [2]);
        master.applied_upto(2).await;
        assert_eq!(
            counts(&store, &alices).await,
            [(1, false)],
            "web0 is none of Alice's now"
        );
        assert_eq!(mark_of(&store, &bobs).await, Some(2));
    }
}
