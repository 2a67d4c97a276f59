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
            backoff: crate::http::client::retry_backoff(),
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use actix_web::{web, App, HttpResponse};
    use serde_json::Value;
    use uuid::Uuid;

    use super::*;
    use crate::http::server::Shape;
    use crate::probes::Observation;

    /// A relay's `POST /events` on loopback that refuses (503) until told
    /// to accept, and keeps every message it accepted, in order.
    #[derive(Default)]
    struct FakeRelay {
        accepting: AtomicBool,
        requests: AtomicUsize,
        accepted: Mutex<Vec<String>>,
    }

    async fn post_events(relay: web::Data<FakeRelay>, body: web::Json<Vec<Value>>) -> HttpResponse {
        relay.requests.fetch_add(1, Ordering::SeqCst);
        if !relay.accepting.load(Ordering::SeqCst) {
            return HttpResponse::ServiceUnavailable().finish();
        }
        let mut accepted = relay.accepted.lock().unwrap();
        accepted.extend(
            body.iter()
                .map(|e| e["data"]["message"].as_str().unwrap_or_default().to_string()),
        );
        HttpResponse::Accepted().finish()
    }

    fn start_relay() -> (Arc<FakeRelay>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let relay = Arc::new(FakeRelay::default());
        let data = web::Data::from(relay.clone());
        let server = crate::http::serve("fake-relay", listener, Shape::RELAY, move || {
            App::new()
                .app_data(data.clone())
                .route("/events", web::post().to(post_events))
        })
        .unwrap();
        actix_rt::spawn(server);
        (relay, url)
    }

    fn sender(url: &str, capacity: usize) -> Addr<EventSender> {
        EventSender::new(Rc::new(MasterClient::new(url, None)), capacity, Lifeline::detached()).start()
    }

    fn observed(n: usize) -> Observed {
        let seen = Observation::fault(format!("event {n}"), None, None);
        Observed(AgentEvent::of(Uuid::from_u128(1), Uuid::from_u128(2), None, seen))
    }

    /// Polls (real time: a real server answers) until `done`, for at most 30 s.
    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[actix_rt::test]
    async fn events_wait_while_the_relay_refuses_and_arrive_in_order_once_it_takes_them() {
        let (relay, url) = start_relay();
        let sender = sender(&url, 100);
        for n in 0..3 {
            sender.do_send(observed(n));
        }
        wait_for("two refused attempts", || relay.requests.load(Ordering::SeqCst) >= 2).await;
        assert!(relay.accepted.lock().unwrap().is_empty());
        relay.accepting.store(true, Ordering::SeqCst);
        wait_for("every event", || relay.accepted.lock().unwrap().len() >= 3).await;
        assert_eq!(*relay.accepted.lock().unwrap(), ["event 0", "event 1", "event 2"]);
    }

    #[actix_rt::test]
    async fn a_relay_away_for_long_gets_only_the_newest_events_the_queue_holds() {
        let (relay, url) = start_relay();
        let sender = sender(&url, 2);
        for n in 0..5 {
            sender.do_send(observed(n));
        }
        wait_for("two refused attempts", || relay.requests.load(Ordering::SeqCst) >= 2).await;
        relay.accepting.store(true, Ordering::SeqCst);
        wait_for("the queued events", || relay.accepted.lock().unwrap().len() >= 2).await;
        // One more event after the relay is back, to see that nothing else
        // was still waiting before it.
        sender.do_send(observed(5));
        wait_for("the new event", || relay.accepted.lock().unwrap().len() >= 3).await;
        assert_eq!(*relay.accepted.lock().unwrap(), ["event 3", "event 4", "event 5"]);
    }
}
