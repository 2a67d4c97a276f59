//! `RelayLink`: the relay's one connection to the master. It queues events,
//! sends them in batches with `POST /events`, forgets them only after the
//! master's `202` (sent after a durable commit), and retries with exponential
//! backoff and jitter while the master is unreachable or answers 5xx. It also
//! announces the relay itself: started, heartbeats, shutting down.
//!
//! (The on-disk spool that survives a SIGKILL of the relay is issue #5; until
//! then the queue is in memory.)

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use uuid::Uuid;

use super::supervisor::{Lifeline, Stop};
use crate::clock::Clock;
use crate::http::client::{MasterClient, SendError};
use crate::model::{Event, ServerEvent, ServerEventKind};

/// An event to deliver to the master.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Publish(pub Event);

/// Asks for the link's state (relay admin API).
#[derive(Debug, Message)]
#[rtype(result = "LinkState")]
pub struct GetLinkState;

#[derive(Debug, Clone, serde::Serialize, MessageResponse)]
#[serde(rename_all = "camelCase")]
pub struct LinkState {
    pub queued: usize,
    pub master_reachable: bool,
    pub sent: u64,
}

/// How long events may wait to be batched with others.
const LINGER: Duration = Duration::from_millis(20);

pub struct RelayLink {
    client: Rc<MasterClient>,
    relay: Uuid,
    hostname: Option<String>,
    heartbeat: Duration,
    batch_max: usize,
    clock: Clock,
    queue: VecDeque<Event>,
    /// A batch is on the wire, or a retry is scheduled.
    busy: bool,
    reachable: bool,
    sent: u64,
    backoff: ExponentialBackoff,
    lifeline: Lifeline,
}

/// What the link needs to be built (again, on every restart).
#[derive(Clone)]
pub struct RelayLinkConfig {
    pub master_url: String,
    pub relay: Uuid,
    pub hostname: Option<String>,
    pub heartbeat: Duration,
    pub batch_max: usize,
    pub clock: Clock,
}

impl RelayLink {
    pub fn new(config: RelayLinkConfig, lifeline: Lifeline) -> RelayLink {
        RelayLink {
            client: Rc::new(MasterClient::new(&config.master_url)),
            relay: config.relay,
            hostname: config.hostname,
            heartbeat: config.heartbeat,
            batch_max: config.batch_max,
            clock: config.clock,
            queue: VecDeque::new(),
            busy: false,
            reachable: true,
            sent: 0,
            backoff: ExponentialBackoff {
                initial_interval: Duration::from_millis(250),
                current_interval: Duration::from_millis(250),
                max_interval: Duration::from_secs(30),
                multiplier: 2.0,
                randomization_factor: 0.3,
                max_elapsed_time: None,
                ..ExponentialBackoff::default()
            },
            lifeline,
        }
    }

    fn server_event(&self, kind: ServerEventKind) -> Event {
        Event::Server(ServerEvent {
            uuid: Uuid::new_v4(),
            time: self.clock.now_ms(),
            relay: self.relay,
            server: self.relay,
            event: kind,
            hostname: self.hostname.clone(),
        })
    }

    fn enqueue(&mut self, event: Event, ctx: &mut Context<Self>) {
        self.queue.push_back(event);
        if !self.busy {
            self.busy = true;
            ctx.run_later(LINGER, |act, ctx| act.flush(ctx));
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.queue.is_empty() {
            self.busy = false;
            return;
        }
        self.busy = true;
        let n = self.queue.len().min(self.batch_max);
        let batch: Vec<Event> = self.queue.iter().take(n).cloned().collect();
        let client = self.client.clone();
        ctx.spawn(
            async move { client.post_events(&batch).await }
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(()) => {
                        act.queue.drain(..n);
                        act.sent += n as u64;
                        act.backoff.reset();
                        if !act.reachable {
                            tracing::info!(queued = act.queue.len(), "master reachable again");
                        }
                        act.reachable = true;
                        act.flush(ctx);
                    }
                    Err(SendError::Unavailable(why)) => {
                        let delay = act.backoff.next_backoff().unwrap_or(Duration::from_secs(30));
                        if act.reachable {
                            tracing::warn!(error = %why, queued = act.queue.len(), "master unreachable; retrying with backoff");
                        } else {
                            tracing::debug!(error = %why, delay_ms = delay.as_millis() as u64, "master still unreachable");
                        }
                        act.reachable = false;
                        ctx.run_later(delay, |act, ctx| act.flush(ctx));
                    }
                    Err(SendError::Rejected { status, body }) => {
                        // Retrying the same events would be refused again.
                        tracing::error!(status, body = %body, count = n, "master rejected events; dropped");
                        act.queue.drain(..n);
                        act.flush(ctx);
                    }
                }),
        );
    }
}

impl Actor for RelayLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let started = self.server_event(ServerEventKind::Started);
        self.enqueue(started, ctx);
        ctx.run_interval(self.heartbeat, |act, ctx| {
            let beat = act.server_event(ServerEventKind::Heartbeat);
            act.enqueue(beat, ctx);
        });
    }
}

impl Handler<Publish> for RelayLink {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        self.enqueue(msg.0, ctx);
    }
}

impl Handler<GetLinkState> for RelayLink {
    type Result = LinkState;

    fn handle(&mut self, _: GetLinkState, _ctx: &mut Context<Self>) -> LinkState {
        LinkState {
            queued: self.queue.len(),
            master_reachable: self.reachable,
            sent: self.sent,
        }
    }
}

impl Handler<Stop> for RelayLink {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, _ctx: &mut Context<Self>) -> Self::Result {
        // Tell the master this is a planned shutdown, with whatever is still
        // queued, in one last try that does not hold shutdown up for long.
        let mut last: Vec<Event> = self.queue.drain(..).collect();
        last.push(self.server_event(ServerEventKind::ShuttingDown));
        let client = self.client.clone();
        Box::pin(
            async move {
                match tokio::time::timeout(Duration::from_secs(3), client.post_events(&last)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, unsent = last.len(), "cannot send shutdown to master"),
                    Err(_) => tracing::warn!(unsent = last.len(), "master too slow at shutdown"),
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
