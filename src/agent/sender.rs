//! `EventSender`: the agent's one way out. It owns the bounded queue
//! ([`Outbox`], `agent.queue` events; beyond it the oldest are dropped and
//! counted) and sends it in batches to the relay's `POST /events`. While the
//! relay is unreachable or answers 5xx it retries with backoff (250 ms
//! doubling up to 30 s, ±30 %), without end; the probes go on meanwhile. A
//! batch the relay refuses (4xx) is logged and dropped: the same bytes would
//! be refused again.

use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;

use super::plan::Outbox;
use crate::actors::supervisor::{Lifeline, Stop};
use crate::http::client::{MasterClient, SendError};
use crate::http::relay_agent::AgentEvent;

/// An event a probe saw, to send.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Observed(pub AgentEvent);

/// Most events in one `POST /events`: the relay takes 1 MiB bodies.
const BATCH_MAX: usize = 100;

pub struct EventSender {
    client: Rc<MasterClient>,
    outbox: Outbox<AgentEvent>,
    /// A batch is on the wire, or a retry is scheduled.
    sending: bool,
    /// The last send failed (so the next failure is not logged as news).
    failing: bool,
    backoff: ExponentialBackoff,
    lifeline: Lifeline,
}

impl EventSender {
    pub fn new(client: Rc<MasterClient>, capacity: usize, lifeline: Lifeline) -> EventSender {
        EventSender {
            client,
            outbox: Outbox::new(capacity),
            sending: false,
            failing: false,
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

    fn send_next(&mut self, ctx: &mut Context<Self>) {
        if self.sending || self.outbox.is_empty() {
            return;
        }
        self.sending = true;
        let batch = self.outbox.take_batch(BATCH_MAX);
        let client = self.client.clone();
        ctx.spawn(
            async move {
                let result = client.post_events(&batch).await;
                (result, batch)
            }
            .into_actor(self)
            .map(|(result, batch), act, ctx| match result {
                Ok(()) => {
                    if act.failing {
                        tracing::info!(sent = batch.len(), "relay reachable again; events sent");
                    }
                    tracing::debug!(sent = batch.len(), "events sent to the relay");
                    act.failing = false;
                    act.backoff.reset();
                    act.sending = false;
                    act.send_next(ctx);
                }
                Err(SendError::Unavailable(e)) => {
                    let delay = act.backoff.next_backoff().unwrap_or(Duration::from_secs(30));
                    if act.failing {
                        tracing::debug!(error = %e, waiting = act.outbox.len() + batch.len(), "relay still unavailable");
                    } else {
                        tracing::warn!(error = %e, waiting = act.outbox.len() + batch.len(), "relay unavailable; events wait and are retried");
                    }
                    act.failing = true;
                    act.requeue(batch);
                    ctx.run_later(delay, |act, ctx| {
                        act.sending = false;
                        act.send_next(ctx);
                    });
                }
                Err(SendError::Rejected { status, body }) => {
                    tracing::error!(status, body = %body, dropped = batch.len(), "relay refused events; dropping them");
                    act.sending = false;
                    act.send_next(ctx);
                }
            }),
        );
    }

    fn requeue(&mut self, batch: Vec<AgentEvent>) {
        let dropped = self.outbox.put_back(batch);
        self.dropped(dropped);
    }

    fn dropped(&self, dropped: u64) {
        if dropped > 0 {
            tracing::warn!(
                dropped,
                dropped_total = self.outbox.dropped(),
                queued = self.outbox.len(),
                "event queue full (agent.queue); oldest events dropped"
            );
        }
    }
}

impl Actor for EventSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Probes use do_send; the outbox, not the mailbox, is the bound.
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Observed> for EventSender {
    type Result = ();

    fn handle(&mut self, msg: Observed, ctx: &mut Context<Self>) {
        let dropped = self.outbox.push(msg.0);
        self.dropped(dropped);
        self.send_next(ctx);
    }
}

impl Handler<Stop> for EventSender {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        if !self.outbox.is_empty() {
            tracing::warn!(lost = self.outbox.len(), "agent stopping with events not sent");
        }
        self.lifeline.exit_normally();
        ctx.stop();
    }
}
