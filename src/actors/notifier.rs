//! The notifier pool: delivers notifications from the outbox, several at a
//! time, retrying temporary failures with exponential backoff, and records
//! each outcome in the outbox. Deliveries still pending after a restart are
//! picked up again when the pool starts.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;

use super::supervisor::{Lifeline, Stop};
use crate::notify::transport::{DeliveryError, Mailer};
use crate::notify::Notification;
use crate::store::{DeliveryOutcome, Store};

/// Notifications to deliver (already in the outbox).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Vec<Notification>);

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Attempt {
    notification: Notification,
    attempt: u32,
}

/// What the notifiers need.
pub struct NotifierEnv {
    pub store: Store,
    pub mailer: Mailer,
    pub from: String,
}

pub struct NotifierPool {
    env: Arc<NotifierEnv>,
    workers: Vec<Addr<Notifier>>,
    size: usize,
    next: usize,
    lifeline: Lifeline,
}

impl NotifierPool {
    pub fn new(env: Arc<NotifierEnv>, size: usize, lifeline: Lifeline) -> NotifierPool {
        NotifierPool {
            env,
            workers: Vec::new(),
            size: size.max(1),
            next: 0,
            lifeline,
        }
    }

    fn worker(&mut self) -> Addr<Notifier> {
        let index = self.next % self.size;
        self.next = self.next.wrapping_add(1);
        // A worker that died (it holds no state worth keeping) is replaced.
        if !self.workers[index].connected() {
            crate::metrics::actor_restarted("notifier");
            self.workers[index] = Notifier { env: self.env.clone() }.start();
        }
        self.workers[index].clone()
    }

    fn dispatch(&mut self, notification: Notification, attempt: u32) {
        self.worker().do_send(Attempt { notification, attempt });
    }
}

impl Actor for NotifierPool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.workers = (0..self.size)
            .map(|_| Notifier { env: self.env.clone() }.start())
            .collect();
        let store = self.env.store.clone();
        ctx.wait(async move { store.pending_deliveries().await }.into_actor(self).map(
            |result, act, ctx| match result {
                Ok(pending) => {
                    if !pending.is_empty() {
                        tracing::info!(count = pending.len(), "resuming pending deliveries");
                    }
                    for p in pending {
                        act.dispatch(p.notification, p.attempts);
                    }
                }
                Err(e) => {
                    act.lifeline.fail(format!("cannot read the outbox: {e}"));
                    ctx.stop();
                }
            },
        ));
    }
}

impl Handler<Deliver> for NotifierPool {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) {
        for n in msg.0 {
            self.dispatch(n, 0);
        }
    }
}

impl Handler<Stop> for NotifierPool {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

/// One delivery worker.
pub struct Notifier {
    env: Arc<NotifierEnv>,
}

impl Actor for Notifier {
    type Context = Context<Self>;
}

/// Delay before the retry after `attempt` failed attempts.
fn retry_delay(attempt: u32) -> Duration {
    let mut backoff = ExponentialBackoff {
        initial_interval: Duration::from_secs(1),
        current_interval: Duration::from_secs(1),
        max_interval: Duration::from_secs(300),
        multiplier: 2.0,
        randomization_factor: 0.2,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    };
    let mut delay = Duration::from_secs(1);
    for _ in 0..=attempt.min(20) {
        delay = backoff.next_backoff().unwrap_or(Duration::from_secs(300));
    }
    delay
}

impl Handler<Attempt> for Notifier {
    type Result = ();

    fn handle(&mut self, msg: Attempt, ctx: &mut Context<Self>) {
        let env = self.env.clone();
        ctx.spawn(
            async move {
                let n = &msg.notification;
                let result = env.mailer.deliver(n, &env.from).await;
                let outcome = match &result {
                    Ok(()) => {
                        crate::metrics::notifications_sent(1);
                        tracing::info!(notification = %n.id, alarm = n.alarm_id, account = %n.account_login, kind = ?n.kind, "notification delivered");
                        DeliveryOutcome::Sent
                    }
                    Err(DeliveryError::Temporary(e)) => {
                        tracing::warn!(notification = %n.id, attempt = msg.attempt + 1, error = %e, "delivery failed; will retry");
                        DeliveryOutcome::Retrying(e.clone())
                    }
                    Err(DeliveryError::Permanent(e)) => {
                        crate::metrics::notifications_failed(1);
                        tracing::error!(notification = %n.id, error = %e, "delivery failed permanently; dead-lettered");
                        DeliveryOutcome::Dead(e.clone())
                    }
                };
                let retry = matches!(outcome, DeliveryOutcome::Retrying(_));
                if let Err(e) = env.store.record_delivery(n.id, outcome).await {
                    tracing::error!(notification = %n.id, error = %e, "cannot record delivery outcome");
                }
                (msg, retry)
            }
            .into_actor(self)
            .map(|(msg, retry), _act, ctx| {
                if retry {
                    let delay = retry_delay(msg.attempt);
                    ctx.run_later(delay, move |_act, ctx| {
                        ctx.notify(Attempt {
                            notification: msg.notification,
                            attempt: msg.attempt + 1,
                        })
                    });
                }
            }),
        );
    }
}
