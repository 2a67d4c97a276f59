//! `RelayLink`: the relay's one connection to the master, and the reason a
//! transition is never lost (SPEC §4).
//!
//! Every event is written to the on-disk spool (with the zone state it
//! establishes, in one commit) before it is sent; batches go to `POST /events`
//! with the event `uuid` as idempotency key; an event leaves the spool only
//! after the master's `202` (sent after a durable commit). While the master is
//! unreachable or answers 5xx, it retries with exponential backoff and jitter,
//! capped. A 4xx means the master will never take those bytes: they go to the
//! dead-letter table with a log line, where they stay for
//! `relay.dead_letter_retention`. After a restart (even a SIGKILL) the
//! spool is sent first.
//!
//! Spool policy when full (`relay.spool_max` events): new events are dropped,
//! counted in `amon_relay_spool_dropped_total` and logged as errors. Heartbeats
//! are never spooled: an hour-old heartbeat tells the master nothing, so they
//! are sent only while nothing else is waiting, and dropped when a send
//! fails.
//!
//! Each heartbeat also says which agents reached the relay's agent API and
//! how long ago ([`AgentContact`], `ServerEvent::agents`): the master's
//! missing-data alarm (`notify.agent_silence`) learns from it that an agent
//! lives even when its probes have nothing to report.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use uuid::Uuid;

use super::janitor::sweep;
use super::supervisor::{Lifeline, Stop};
use crate::clock::Clock;
use crate::http::client::{MasterClient, Masters, SendError};
use crate::http::shapes::LinkState;
use crate::model::{AgentSeen, Event, MachineReport, ServerEvent, ServerEventKind};
use crate::store::{RelayStore, ZoneRecord};

/// An event to deliver to the master, with the zone state it establishes
/// (recorded in the same commit as the spooled event).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub event: Event,
    pub zone: Option<ZoneRecord>,
}

/// An agent used the relay's agent API just now (any request: a probe list
/// poll, events). Kept in memory, reported with each heartbeat.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AgentContact(pub Uuid);

/// The inventory of the servers whose machine lists changed (the zone
/// dispatcher's), for `PUT /servers/:server/machines`. Not spooled: the
/// newest list of a server replaces an unsent older one, and the dispatcher
/// sends every list again every ten minutes.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReportInventory(pub Vec<(Uuid, Vec<MachineReport>)>);

/// How long an inventory report that did not get through waits to be tried
/// again.
const INVENTORY_RETRY: Duration = Duration::from_secs(5);

/// Asks for the link's state (relay admin API).
#[derive(Debug, Message)]
#[rtype(result = "LinkState")]
pub struct GetLinkState;

/// How long events may wait to be spooled and batched with others. Short:
/// under load, batches form anyway from what arrives while the previous
/// spool commit is under way (the mailbox waits meanwhile); 10 ms here was
/// half of a transition's latency at 1,000 events/s.
const LINGER: Duration = Duration::from_millis(1);

/// How often dead letters past `relay.dead_letter_retention` are deleted.
/// They are rare (a master refusing a batch), so this is no hurry.
const DEAD_LETTER_GC_EVERY: Duration = Duration::from_secs(600);

/// What the link needs to be built (again, on every restart).
#[derive(Clone)]
pub struct RelayLinkConfig {
    /// The masters, one at a time: the client turns to the next when one is
    /// unavailable (`http::client::Masters`). Not empty.
    pub master_urls: Vec<String>,
    /// Bearer token for the master (never logged).
    pub master_token: Option<String>,
    pub relay: Uuid,
    pub hostname: Option<String>,
    pub heartbeat: Duration,
    pub batch_max: usize,
    pub spool_max: usize,
    /// Dead letters are deleted this long after the master refused them.
    pub dead_letter_retention: Duration,
    pub clock: Clock,
    pub store: RelayStore,
}

struct Queued {
    event: Event,
    /// Whether it is in the spool (and must be acknowledged there).
    spooled: bool,
}

pub struct RelayLink {
    config: RelayLinkConfig,
    client: Rc<MasterClient>,
    /// Received, not yet spooled.
    incoming: Vec<Publish>,
    spooling: bool,
    /// Spooled (or heartbeats), in order, waiting for the master's 202.
    queue: VecDeque<Queued>,
    /// A batch is on the wire, or a retry is scheduled.
    sending: bool,
    reachable: bool,
    sent: u64,
    dropped: u64,
    dead_lettered: u64,
    backoff: ExponentialBackoff,
    /// Server machine lists waiting to be sent, newest per server.
    inventory: std::collections::BTreeMap<Uuid, Vec<MachineReport>>,
    /// A list is on the wire or a retry is scheduled.
    inventory_sending: bool,
    /// When each agent last reached the agent API (steady time), for the
    /// heartbeat. Few entries: one per agent of this compute node.
    agents: std::collections::BTreeMap<Uuid, tokio::time::Instant>,
    lifeline: Lifeline,
}

impl RelayLink {
    pub fn new(config: RelayLinkConfig, lifeline: Lifeline) -> RelayLink {
        RelayLink {
            client: Rc::new(MasterClient::failover(
                Masters::new(&config.master_urls),
                config.master_token.as_deref(),
            )),
            config,
            incoming: Vec::new(),
            spooling: false,
            queue: VecDeque::new(),
            sending: false,
            reachable: true,
            sent: 0,
            dropped: 0,
            dead_lettered: 0,
            backoff: crate::http::client::retry_backoff(),
            inventory: std::collections::BTreeMap::new(),
            inventory_sending: false,
            agents: std::collections::BTreeMap::new(),
            lifeline,
        }
    }

    /// Sends the waiting machine lists one server at a time. A master that
    /// is down gets them later; a refusal (4xx, e.g. a master older than the
    /// inventory) is logged, and the list dropped until it changes again.
    fn send_inventory(&mut self, ctx: &mut Context<Self>) {
        let Some((&server, _)) = self.inventory.iter().next() else {
            self.inventory_sending = false;
            return;
        };
        self.inventory_sending = true;
        let machines = self.inventory.remove(&server).unwrap_or_default();
        let client = self.client.clone();
        ctx.spawn(
            async move {
                let result = client.put_server_machines(server, &machines).await;
                (result, machines)
            }
            .into_actor(self)
            .map(move |(result, machines), act, ctx| match result {
                Ok(()) => {
                    tracing::debug!(%server, machines = machines.len(), "inventory reported");
                    act.send_inventory(ctx);
                }
                Err(SendError::Unavailable(e)) => {
                    tracing::debug!(%server, error = %e, "master unavailable; inventory report waits");
                    // Unless a newer list arrived meanwhile.
                    act.inventory.entry(server).or_insert(machines);
                    ctx.run_later(INVENTORY_RETRY, |act, ctx| act.send_inventory(ctx));
                }
                Err(SendError::Rejected { status, body }) => {
                    tracing::warn!(%server, status, body = %body, "master refused the inventory report; it does not know who owns these machines");
                    act.send_inventory(ctx);
                }
            }),
        );
    }

    fn server_event(&self, kind: ServerEventKind) -> Event {
        Event::Server(ServerEvent {
            v: crate::model::EVENT_VERSION,
            // Time-ordered, as machine events (see `ZoneWatcher`).
            uuid: Uuid::now_v7(),
            time: self.config.clock.now_ms(),
            relay: self.config.relay,
            server: self.config.relay,
            event: kind,
            hostname: self.config.hostname.clone(),
            agents: match kind {
                ServerEventKind::Heartbeat => {
                    let now = tokio::time::Instant::now();
                    self.agents
                        .iter()
                        .map(|(&agent, &at)| AgentSeen {
                            agent,
                            silent_ms: now.duration_since(at).as_millis() as u64,
                        })
                        .collect()
                }
                _ => Vec::new(),
            },
        })
    }

    fn spool_depth(&self) -> usize {
        self.queue.iter().filter(|q| q.spooled).count()
    }

    fn receive(&mut self, publish: Publish, ctx: &mut Context<Self>) {
        self.incoming.push(publish);
        if !self.spooling {
            self.spooling = true;
            ctx.run_later(LINGER, |act, ctx| act.spool(ctx));
        }
    }

    /// Writes what arrived to the spool in one commit, then queues it.
    fn spool(&mut self, ctx: &mut Context<Self>) {
        let mut batch: Vec<Publish> = std::mem::take(&mut self.incoming);
        let room = self.config.spool_max.saturating_sub(self.spool_depth());
        if batch.len() > room {
            let dropped = batch.len() - room;
            self.dropped += dropped as u64;
            crate::metrics::spool_dropped(dropped as u64);
            tracing::error!(
                dropped,
                spool_max = self.config.spool_max,
                "spool full: newest events dropped"
            );
            batch.truncate(room);
        }
        if batch.is_empty() {
            self.spooling = false;
            return;
        }
        let events: Vec<Event> = batch.iter().map(|p| p.event.clone()).collect();
        let zones: Vec<ZoneRecord> = batch.into_iter().filter_map(|p| p.zone).collect();
        let store = self.config.store.clone();
        let spooled = events.clone();
        // Wait: the next batch must be spooled after this one, in order.
        ctx.wait(
            async move { store.spool(spooled, zones).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    match result {
                        Ok(depth) => {
                            crate::metrics::spool_depth(depth);
                            act.queue
                                .extend(events.into_iter().map(|event| Queued { event, spooled: true }));
                        }
                        Err(e) => {
                            // Not durable, but not lost yet either: send from
                            // memory and say so.
                            tracing::error!(error = %e, count = events.len(), "cannot write spool; sending unspooled");
                            act.queue
                                .extend(events.into_iter().map(|event| Queued { event, spooled: false }));
                        }
                    }
                    act.spooling = false;
                    if !act.incoming.is_empty() {
                        act.spooling = true;
                        ctx.run_later(LINGER, |act, ctx| act.spool(ctx));
                    }
                    act.send_next(ctx);
                }),
        );
    }

    fn send_next(&mut self, ctx: &mut Context<Self>) {
        if self.sending || self.queue.is_empty() {
            return;
        }
        self.sending = true;
        let n = self.queue.len().min(self.config.batch_max);
        let batch: Vec<Event> = self.queue.iter().take(n).map(|q| q.event.clone()).collect();
        let client = self.client.clone();
        ctx.spawn(
            async move {
                let result = client.post_events(&batch).await;
                (batch, result)
            }
            .into_actor(self)
            .map(move |(batch, result), act, ctx| match result {
                Ok(()) => {
                    let done: Vec<Queued> = act.queue.drain(..n).collect();
                    act.sent += n as u64;
                    act.backoff.reset();
                    if !act.reachable {
                        tracing::info!(spool_depth = act.spool_depth(), "master reachable again");
                    }
                    act.reachable = true;
                    crate::metrics::spool_depth(act.spool_depth() as u64);
                    let acknowledged: Vec<Uuid> = done.iter().filter(|q| q.spooled).map(|q| q.event.uuid()).collect();
                    if !acknowledged.is_empty() {
                        let store = act.config.store.clone();
                        ctx.spawn(
                            async move {
                                // If this fails the events are sent again after a
                                // restart; the master drops the second copies.
                                if let Err(e) = store.acknowledge(acknowledged).await {
                                    tracing::warn!(error = %e, "cannot remove acknowledged events from the spool");
                                }
                            }
                            .into_actor(act),
                        );
                    }
                    act.sending = false;
                    act.send_next(ctx);
                }
                Err(SendError::Unavailable(why)) => {
                    let delay = act.backoff.next_backoff().unwrap_or(Duration::from_secs(30));
                    if act.reachable {
                        tracing::warn!(error = %why, spool_depth = act.spool_depth(), "master unreachable; retrying with backoff");
                    } else {
                        tracing::debug!(error = %why, delay_ms = delay.as_millis() as u64, "master still unreachable");
                    }
                    act.reachable = false;
                    // Heartbeats are worthless late: drop them from the queue.
                    act.queue.retain(|q| q.spooled || !is_heartbeat(&q.event));
                    ctx.run_later(delay, |act, ctx| {
                        act.sending = false;
                        act.send_next(ctx);
                    });
                }
                Err(SendError::Rejected { status, body }) => {
                    // The same bytes would be refused again: keep them aside.
                    tracing::error!(status, body = %body, count = n, "master rejected events; dead-lettered");
                    act.queue.drain(..n);
                    act.dead_lettered += n as u64;
                    crate::metrics::dead_lettered(n as u64);
                    let store = act.config.store.clone();
                    let now = act.config.clock.now_ms();
                    ctx.wait(
                        async move {
                            if let Err(e) = store.dead_letter(batch, status, body, now).await {
                                tracing::error!(error = %e, "cannot dead-letter events");
                            }
                        }
                        .into_actor(act),
                    );
                    act.sending = false;
                    act.send_next(ctx);
                }
            }),
        );
    }
}

impl RelayLink {
    /// Deletes dead letters past their retention, in batches, beside the
    /// link's own work (`spawn`, not `wait`: sending goes on meanwhile).
    fn collect_dead_letters(&mut self, ctx: &mut Context<Self>) {
        let store = self.config.store.clone();
        let before = self.config.clock.now_ms() - self.config.dead_letter_retention.as_millis() as i64;
        ctx.spawn(
            async move {
                let deleted = sweep("relay_dead_letter", |batch| store.gc_dead_letters(before, batch)).await;
                if deleted > 0 {
                    tracing::info!(deleted, "dead letters past their retention deleted");
                }
            }
            .into_actor(self),
        );
    }
}

fn is_heartbeat(event: &Event) -> bool {
    matches!(event, Event::Server(s) if s.event == ServerEventKind::Heartbeat)
}

impl Actor for RelayLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64 * 1024);
        // What a previous run spooled goes first, in its order.
        let store = self.config.store.clone();
        ctx.wait(
            async move { store.spooled().await }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(events) => {
                        if !events.is_empty() {
                            tracing::info!(count = events.len(), "resending spooled events");
                        }
                        act.queue
                            .extend(events.into_iter().map(|event| Queued { event, spooled: true }));
                        let started = act.server_event(ServerEventKind::Started);
                        act.receive(
                            Publish {
                                event: started,
                                zone: None,
                            },
                            ctx,
                        );
                    }
                    Err(e) => {
                        act.lifeline.fail(format!("cannot read the spool: {e}"));
                        ctx.stop();
                    }
                }),
        );
        ctx.run_interval(DEAD_LETTER_GC_EVERY, |act, ctx| act.collect_dead_letters(ctx));
        ctx.run_interval(self.config.heartbeat, |act, ctx| {
            // Also while the master is unreachable: with nothing else to
            // send, a heartbeat is how the link learns that the master is
            // back (at the backoff's pace: `send_next` waits for a retry
            // already scheduled). Without it, a master restart while the
            // relay is idle would end its heartbeats for good.
            if act.queue.is_empty() {
                let beat = act.server_event(ServerEventKind::Heartbeat);
                act.queue.push_back(Queued {
                    event: beat,
                    spooled: false,
                });
                act.send_next(ctx);
            }
        });
    }
}

impl Handler<Publish> for RelayLink {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        self.receive(msg, ctx);
    }
}

impl Handler<AgentContact> for RelayLink {
    type Result = ();

    fn handle(&mut self, msg: AgentContact, _: &mut Context<Self>) {
        self.agents.insert(msg.0, tokio::time::Instant::now());
    }
}

impl Handler<ReportInventory> for RelayLink {
    type Result = ();

    fn handle(&mut self, msg: ReportInventory, ctx: &mut Context<Self>) {
        self.inventory.extend(msg.0);
        if !self.inventory_sending {
            self.send_inventory(ctx);
        }
    }
}

impl Handler<GetLinkState> for RelayLink {
    type Result = MessageResult<GetLinkState>;

    fn handle(&mut self, _: GetLinkState, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(LinkState {
            spool_depth: self.spool_depth() + self.incoming.len(),
            master_reachable: self.reachable,
            sent: self.sent,
            dropped: self.dropped,
            dead_lettered: self.dead_lettered,
        })
    }
}

impl Handler<Stop> for RelayLink {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, _ctx: &mut Context<Self>) -> Self::Result {
        // Tell the master this is a planned shutdown: spool the notice with
        // whatever just arrived, then one last short try to send everything.
        let mut events: Vec<Event> = self.incoming.drain(..).map(|p| p.event).collect();
        events.push(self.server_event(ServerEventKind::ShuttingDown));
        let store = self.config.store.clone();
        let client = self.client.clone();
        let mut all: Vec<Event> = self.queue.iter().map(|q| q.event.clone()).collect();
        all.extend(events.iter().cloned());
        Box::pin(
            async move {
                if let Err(e) = store.spool(events, Vec::new()).await {
                    tracing::warn!(error = %e, "cannot spool the shutdown notice");
                }
                match tokio::time::timeout(Duration::from_secs(3), client.post_events(&all)).await {
                    Ok(Ok(())) => {
                        let uuids = all.iter().map(Event::uuid).collect();
                        if let Err(e) = store.acknowledge(uuids).await {
                            tracing::warn!(error = %e, "cannot clear the spool at shutdown");
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, unsent = all.len(), "master did not take the shutdown notice; it stays spooled"),
                    Err(_) => tracing::warn!(unsent = all.len(), "master too slow at shutdown; events stay spooled"),
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
impl RelayLinkConfig {
    /// A link's settings in a unit test: no heartbeats (only what the test
    /// publishes, and the link's own `started`, travel), small batches.
    pub(crate) fn for_test(master_urls: Vec<String>, store: RelayStore) -> RelayLinkConfig {
        RelayLinkConfig {
            master_urls,
            master_token: None,
            relay: Uuid::new_v4(),
            hostname: None,
            heartbeat: Duration::from_secs(3600),
            batch_max: 100,
            spool_max: 1000,
            dead_letter_retention: Duration::from_secs(3600),
            clock: Clock::tokio(0),
            store,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use actix_web::{web, App, HttpResponse};
    use serde_json::Value;

    use super::*;
    use crate::http::server::Shape;

    /// A master's `POST /events` on loopback that answers every request
    /// with `status`, and keeps the uuids of the events it was sent.
    #[derive(Clone)]
    struct FakeMaster {
        url: String,
        uuids: Arc<Mutex<Vec<String>>>,
    }

    impl FakeMaster {
        fn start(status: u16) -> FakeMaster {
            let uuids: Arc<Mutex<Vec<String>>> = Arc::default();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let seen = uuids.clone();
            let server = crate::http::serve("fake-master", listener, Shape::RELAY, move || {
                let seen = seen.clone();
                App::new().route(
                    "/events",
                    web::post().to(move |body: web::Json<Vec<Value>>| {
                        let seen = seen.clone();
                        async move {
                            let uuids = body.iter().map(|e| e["uuid"].as_str().unwrap_or_default().to_string());
                            seen.lock().unwrap().extend(uuids);
                            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
                        }
                    }),
                )
            })
            .unwrap();
            actix_rt::spawn(server);
            FakeMaster { url, uuids }
        }

        fn got(&self, uuid: Uuid) -> bool {
            self.uuids.lock().unwrap().contains(&uuid.to_string())
        }

        fn events_seen(&self) -> usize {
            self.uuids.lock().unwrap().len()
        }
    }

    /// A URL where nobody listens: a port that was free a moment ago.
    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    fn link(master_urls: Vec<String>, store: RelayStore) -> Addr<RelayLink> {
        RelayLink::new(RelayLinkConfig::for_test(master_urls, store), Lifeline::detached()).start()
    }

    fn started_event() -> Event {
        Event::Server(ServerEvent {
            v: crate::model::EVENT_VERSION,
            uuid: Uuid::now_v7(),
            time: 0,
            relay: Uuid::new_v4(),
            server: Uuid::new_v4(),
            event: ServerEventKind::Started,
            hostname: None,
            agents: Vec::new(),
        })
    }

    /// Polls (real time: real servers answer, and the link backs off for
    /// real) until `done`, for at most 30 s.
    async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done().await {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[actix_rt::test]
    async fn events_reach_the_next_master_when_the_first_ones_are_unavailable() {
        // Nobody at the first, 503 at the second: both are unavailable.
        let busy = FakeMaster::start(503);
        let live = FakeMaster::start(202);
        let store = RelayStore::in_memory().unwrap();
        let link = link(vec![dead_url(), busy.url.clone(), live.url.clone()], store.clone());
        let event = started_event();
        let uuid = event.uuid();
        link.do_send(Publish { event, zone: None });

        wait_for("the event at the live master", async || live.got(uuid)).await;
        assert!(busy.got(uuid), "the busy master was tried on the way");
        wait_for("the spool to empty", async || {
            let state = link.send(GetLinkState).await.unwrap();
            state.spool_depth == 0 && state.master_reachable
        })
        .await;
        // Acknowledged only after the live master's 202.
        wait_for("the event to leave the spool on disk", async || {
            !store.spooled().await.unwrap().iter().any(|e| e.uuid() == uuid)
        })
        .await;
    }

    #[actix_rt::test]
    async fn a_refusing_master_is_not_left_for_the_next() {
        let refusing = FakeMaster::start(400);
        let live = FakeMaster::start(202);
        let link = link(
            vec![refusing.url.clone(), live.url.clone()],
            RelayStore::in_memory().unwrap(),
        );
        let first = started_event();
        let first_uuid = first.uuid();
        link.do_send(Publish {
            event: first,
            zone: None,
        });
        wait_for("the first event dead-lettered", async || {
            refusing.got(first_uuid) && link.send(GetLinkState).await.unwrap().dead_lettered >= 1
        })
        .await;

        // The next event still goes to the refusing master: a 4xx is about
        // the bytes, not the master.
        let second = started_event();
        let second_uuid = second.uuid();
        link.do_send(Publish {
            event: second,
            zone: None,
        });
        wait_for("the second event at the refusing master", async || {
            refusing.got(second_uuid)
        })
        .await;
        assert_eq!(live.events_seen(), 0, "the live master heard nothing");
    }
}
