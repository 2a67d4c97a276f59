//! The notifier pool: delivers notifications from the outbox, several at a
//! time, retrying temporary failures with exponential backoff, and records
//! each outcome in the outbox. Deliveries still pending after a restart are
//! picked up again when the pool starts.
//!
//! It also keeps each contact's rate limit (SPEC §6): beyond `rate_limit`
//! messages per `rate_window`, notifications are held and, when the bucket
//! has a token again, sent together as one digest. A notification older
//! than `max_age` (it kept failing) is dead-lettered: visible in the
//! operator API and metrics, never retried again.
//!
//! In the daemon the pool and its workers run on an arbiter of their own
//! (`Lifeline::start_on_own_thread`), so rendering and the SMTP and
//! HTTP exchanges never take turns with the other actors on the System
//! arbiter; the SMTP connections and the webhook client, bound to the
//! runtime that opened them, stay on that one arbiter, shared by every
//! worker. A test that pauses tokio's clock starts the pool on its own
//! arbiter instead (`NotifierPool::new(..).start()`), since a paused clock
//! belongs to one runtime.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use uuid::Uuid;

use super::supervisor::{Lifeline, Stop};
use crate::clock::Clock;
use crate::model::EpochMs;
use crate::notify::limit::{Admission, DigestDue, Limiter, RateLimit};
use crate::notify::transport::{DeliveryError, Mailer, Webhooks};
use crate::notify::{ContactAddress, Notification, NotificationKind};
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
    /// When it entered the outbox.
    created: EpochMs,
}

/// What the notifiers need.
pub struct NotifierEnv {
    pub store: Store,
    pub mailer: Mailer,
    pub from: String,
    pub clock: Clock,
    /// `None`: no rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Older than this and still undelivered: dead-lettered.
    pub max_age: Duration,
}

pub struct NotifierPool {
    env: Arc<NotifierEnv>,
    workers: Vec<Addr<Notifier>>,
    size: usize,
    /// The contacts' rate limits and what they hold (with each
    /// notification's outbox time); `None`: no rate limit.
    limiter: Option<Limiter<(Notification, EpochMs)>>,
    /// The webhook client of this arbiter, which every worker (started on
    /// the same arbiter) shares, so a receiver's connections are reused.
    webhooks: Webhooks,
    /// Its death notice; in the daemon it also owns the pool's thread
    /// (`Lifeline::start_on_own_thread`), so a pool that stops or panics
    /// takes its thread and its workers with it.
    lifeline: Lifeline,
}

/// Who a rate limit is about: the address, whatever alarm it is for.
fn contact_key(n: &Notification) -> String {
    match &n.contact {
        ContactAddress::Email(address) => format!("email:{}", address.trim().to_lowercase()),
        ContactAddress::Webhook(url) => format!("webhook:{url}"),
    }
}

/// Which of `size` workers delivers to the contact with this key.
fn worker_index(key: &str, size: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % size as u64) as usize
}

impl NotifierPool {
    /// A pool to start on the current arbiter, its workers with it. Must be
    /// built on that arbiter (it builds the webhook client there).
    pub fn new(env: Arc<NotifierEnv>, size: usize, lifeline: Lifeline) -> NotifierPool {
        NotifierPool {
            workers: Vec::new(),
            size: size.max(1),
            limiter: env.rate_limit.map(Limiter::new),
            webhooks: Webhooks::new(),
            env,
            lifeline,
        }
    }

    /// A worker on the pool's arbiter, sharing its webhook client.
    fn start_worker(&self) -> Addr<Notifier> {
        Notifier {
            env: self.env.clone(),
            webhooks: self.webhooks.clone(),
            outcomes: Vec::new(),
            recording: false,
        }
        .start()
    }

    /// The worker for a contact: always the same one, and a worker delivers
    /// one message at a time, so each contact gets its messages in the order
    /// they were decided (a server's summary before the alarms it releases).
    fn worker(&mut self, key: &str) -> Addr<Notifier> {
        let index = worker_index(key, self.size);
        // A worker that died (it holds no state worth keeping) is replaced.
        if !self.workers[index].connected() {
            crate::metrics::actor_restarted("notifier");
            self.workers[index] = self.start_worker();
        }
        self.workers[index].clone()
    }

    fn attempt(&mut self, notification: Notification, attempt: u32, created: EpochMs) {
        let key = contact_key(&notification);
        self.worker(&key).do_send(Attempt {
            notification,
            attempt,
            created,
        });
    }

    /// A notification's first try: through the contact's rate limit.
    fn dispatch(&mut self, notification: Notification, attempts: u32, created: EpochMs, ctx: &mut Context<Self>) {
        // A digest already spent its token; a retry spent one on its first try.
        let Some(limiter) = self
            .limiter
            .as_mut()
            .filter(|_| notification.kind != NotificationKind::Digest)
        else {
            return self.attempt(notification, attempts, created);
        };
        let now = tokio::time::Instant::now();
        let key = contact_key(&notification);
        let (id, contact) = (notification.id, notification.contact_name.clone());
        match limiter.admit(&key, (notification, created), now) {
            Admission::Send((notification, created)) => self.attempt(notification, attempts, created),
            Admission::Held { digest_at } => {
                metrics::counter!("amon_notifications_held_total").increment(1);
                tracing::info!(notification = %id, %contact, "rate limit reached; held for the digest");
                if let Some(at) = digest_at {
                    self.schedule_digest(key, at, now, ctx);
                }
            }
        }
    }

    /// The contact's digest goes at `at` (its next token).
    fn schedule_digest(
        &mut self,
        key: String,
        at: tokio::time::Instant,
        now: tokio::time::Instant,
        ctx: &mut Context<Self>,
    ) {
        ctx.run_later(at.saturating_duration_since(now), move |act, ctx| {
            act.send_digest(key, ctx)
        });
    }

    /// A token is back: everything held for the contact goes as one message.
    fn send_digest(&mut self, key: String, ctx: &mut Context<Self>) {
        let Some(limiter) = self.limiter.as_mut() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let held = match limiter.digest_due(&key, now) {
            DigestDue::Nothing => return,
            // Not yet (the clock rounded): try again at the next token.
            DigestDue::NotYet(at) => return self.schedule_digest(key, at, now, ctx),
            DigestDue::Send(held) => held,
        };
        let first = &held[0].0;
        let created = self.env.clock.now_ms();
        let digest = Notification {
            id: Uuid::new_v4(),
            kind: NotificationKind::Digest,
            contact_name: first.contact_name.clone(),
            contact: first.contact.clone(),
            datacenter: first.datacenter.clone(),
            account_uuid: first.account_uuid,
            account_login: first.account_login.clone(),
            alarm_id: 0,
            alarm_closed: false,
            alarm_fault_count: 0,
            probe: first.probe.clone(),
            machine: None,
            message: format!("{} notifications held by the rate limit", held.len()),
            event_time: created,
            thread_root: None,
            master_url: first.master_url.clone(),
            event_json: serde_json::Value::Null,
            incident: None,
            digest: held.iter().map(|(n, _)| n.clone()).collect(),
            alarm: None,
        };
        let held_ids: Vec<Uuid> = held.iter().map(|(n, _)| n.id).collect();
        let store = self.env.store.clone();
        tracing::info!(digest = %digest.id, count = held_ids.len(), contact = %digest.contact_name, "sending digest");
        // The digest is in the outbox before its parts are marked as sent
        // in it: a crash in between sends them again, never loses them.
        ctx.wait(
            async move {
                store.enqueue(vec![digest.clone()], created).await?;
                for id in held_ids {
                    store
                        .record_delivery(id, DeliveryOutcome::Digested(digest.id), created)
                        .await?;
                }
                Ok::<_, crate::store::StoreError>(digest)
            }
            .into_actor(self)
            .map(move |result, act, _ctx| match result {
                Ok(digest) => act.attempt(digest, 0, created),
                Err(e) => tracing::error!(error = %e, "cannot queue the digest; its notifications stay pending"),
            }),
        );
    }

    /// Forgets buckets that are full again, so idle contacts cost nothing.
    fn forget_full_buckets(&mut self) {
        if let Some(limiter) = self.limiter.as_mut() {
            limiter.forget_full(tokio::time::Instant::now());
        }
    }
}

impl Actor for NotifierPool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.workers = (0..self.size).map(|_| self.start_worker()).collect();
        if let Some(limit) = self.env.rate_limit {
            ctx.run_interval(limit.window, |act, _ctx| act.forget_full_buckets());
        }
        let store = self.env.store.clone();
        ctx.wait(async move { store.pending_deliveries().await }.into_actor(self).map(
            |result, act, ctx| match result {
                Ok(pending) => {
                    if !pending.is_empty() {
                        tracing::info!(count = pending.len(), "resuming pending deliveries");
                    }
                    for p in pending {
                        if p.attempts == 0 {
                            act.dispatch(p.notification, 0, p.created, ctx);
                        } else {
                            act.attempt(p.notification, p.attempts, p.created);
                        }
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

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let now = self.env.clock.now_ms();
        for n in msg.0 {
            self.dispatch(n, 0, now, ctx);
        }
    }
}

impl Handler<Stop> for NotifierPool {
    type Result = ResponseActFuture<Self, ()>;

    /// Stops once every worker has recorded the outcomes it holds, so a
    /// clean restart delivers nothing twice.
    fn handle(&mut self, _: Stop, _ctx: &mut Context<Self>) -> Self::Result {
        let flushes: Vec<_> = self
            .workers
            .iter()
            .filter(|w| w.connected())
            .map(|w| w.send(Flush))
            .collect();
        Box::pin(
            futures_util::future::join_all(flushes)
                .into_actor(self)
                .map(|_, act, ctx| {
                    act.lifeline.exit_normally();
                    ctx.stop();
                }),
        )
    }
}

/// Record every outcome held now; answered once they are committed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

impl Handler<Flush> for Notifier {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        // A record under way was sent to the store first: the store answers
        // in order, so this one's answer comes after it.
        let outcomes = std::mem::take(&mut self.outcomes);
        let store = self.env.store.clone();
        let now = self.env.clock.now_ms();
        Box::pin(async move {
            if outcomes.is_empty() {
                // Still a round trip, to let a record under way finish first.
                let _ = store.record_deliveries(Vec::new(), now).await;
            } else if let Err(e) = store.record_deliveries(outcomes, now).await {
                tracing::error!(error = %e, "cannot record delivery outcomes at stop");
            }
        })
    }
}

/// One delivery worker.
pub struct Notifier {
    env: Arc<NotifierEnv>,
    /// The pool's webhook client (the worker runs on the pool's arbiter).
    webhooks: Webhooks,
    /// Outcomes not yet recorded in the outbox, and whether a record is
    /// under way: a worker delivers its next message without waiting for
    /// the last outcome's commit, and outcomes go to the store in groups.
    outcomes: Vec<(Uuid, DeliveryOutcome)>,
    recording: bool,
}

impl Notifier {
    /// Records what waits, one group at a time. A crash before the record
    /// leaves a delivered message pending: it is delivered again after the
    /// restart, with the same `Message-ID`.
    fn record(&mut self, ctx: &mut Context<Self>) {
        if self.recording || self.outcomes.is_empty() {
            return;
        }
        self.recording = true;
        let outcomes = std::mem::take(&mut self.outcomes);
        let store = self.env.store.clone();
        let now = self.env.clock.now_ms();
        ctx.spawn(
            async move {
                if let Err(e) = store.record_deliveries(outcomes, now).await {
                    tracing::error!(error = %e, "cannot record delivery outcomes");
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.recording = false;
                act.record(ctx);
            }),
        );
    }
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
        let webhooks = self.webhooks.clone();
        // One delivery at a time per worker (see NotifierPool::worker).
        ctx.wait(
            async move {
                let n = &msg.notification;
                let age = env.clock.now_ms() - msg.created;
                let result = if age > env.max_age.as_millis() as EpochMs {
                    Err(DeliveryError::Permanent(format!(
                        "undelivered for longer than the maximum age ({}s)",
                        env.max_age.as_secs()
                    )))
                } else {
                    env.mailer
                        .deliver_at(n, &env.from, env.clock.now_ms(), &webhooks)
                        .await
                };
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
                (msg, outcome)
            }
            .into_actor(self)
            .map(|(msg, outcome), act, ctx| {
                let retry = matches!(outcome, DeliveryOutcome::Retrying(_));
                act.outcomes.push((msg.notification.id, outcome));
                act.record(ctx);
                if retry {
                    let delay = retry_delay(msg.attempt);
                    ctx.run_later(delay, move |_act, ctx| {
                        ctx.notify(Attempt {
                            notification: msg.notification,
                            attempt: msg.attempt + 1,
                            created: msg.created,
                        })
                    });
                }
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fake_webhook::{FakeWebhook, Posted};
    use crate::notify::transport::tests::{notification, webhook};

    fn env(mail: &std::path::Path) -> Arc<NotifierEnv> {
        Arc::new(NotifierEnv {
            store: Store::for_test(),
            mailer: Mailer::eml_dir(mail),
            from: "amon <no-reply@example.com>".into(),
            clock: Clock::system(),
            rate_limit: None,
            max_age: Duration::from_secs(3600),
        })
    }

    /// A pool of two workers on `arbiter`, as the daemon starts it.
    fn on_own_thread(arbiter: Arbiter, env: Arc<NotifierEnv>) -> Addr<NotifierPool> {
        Lifeline::detached().start_on(arbiter, move |lifeline| NotifierPool::new(env, 2, lifeline))
    }

    /// A webhook notification to `url` with an id of its own.
    fn to(url: &str) -> Notification {
        Notification {
            id: Uuid::new_v4(),
            ..webhook(url.to_owned())
        }
    }

    fn id(heard: &Posted) -> String {
        heard.json()["id"].as_str().unwrap().to_owned()
    }

    #[actix_rt::test]
    async fn contacts_are_delivered_in_parallel_each_in_its_order() {
        let receiver = FakeWebhook::holding();
        let mail = tempfile::tempdir().unwrap();
        let a = receiver.url("/a");
        // A second contact that another of the two workers delivers to.
        let b = (0..)
            .map(|i| receiver.url(&format!("/b{i}")))
            .find(|b| worker_index(&format!("webhook:{b}"), 2) != worker_index(&format!("webhook:{a}"), 2))
            .unwrap();
        let (a1, a2, b1) = (to(&a), to(&a), to(&b));
        let pool = on_own_thread(Arbiter::new(), env(mail.path()));
        pool.do_send(Deliver(vec![a1.clone(), a2.clone(), b1.clone()]));

        // From here this test blocks its own arbiter, the System's: only a
        // pool running elsewhere can deliver anything.
        let mut first = [receiver.next(), receiver.next()];
        first.sort_by_key(|heard| id(heard) != a1.id.to_string());
        let [mut heard_a1, mut heard_b1] = first;
        // b1 is out while a1 waits for its answer: contacts in parallel;
        // a2 is not: it waits for a1.
        assert_eq!(id(&heard_a1), a1.id.to_string());
        assert_eq!(id(&heard_b1), b1.id.to_string());
        heard_b1.answer("200 OK");
        heard_a1.answer("200 OK");
        let mut heard_a2 = receiver.next();
        assert_eq!(id(&heard_a2), a2.id.to_string());
        heard_a2.answer("200 OK");
    }

    #[actix_rt::test]
    async fn outcomes_recorded_in_groups_are_all_recorded_before_the_pool_stops() {
        let receiver = FakeWebhook::holding();
        let mail = tempfile::tempdir().unwrap();
        let env = env(mail.path());
        let url = receiver.url("/hook");
        let batch: Vec<Notification> = (0..20).map(|_| to(&url)).collect();
        env.store.enqueue(batch.clone(), 0).await.unwrap();
        let pool = on_own_thread(Arbiter::new(), env.clone());
        pool.do_send(Deliver(batch));
        for _ in 0..19 {
            receiver.next().answer("200 OK");
        }
        // The pool is told to stop while the last delivery waits for its
        // answer: it stops only once that outcome is recorded too.
        let mut last = receiver.next();
        let mut stopped = Box::pin(pool.send(Stop));
        // Not stopped while it waits (a slow machine can only make this
        // wait longer, never fail it).
        let early = tokio::time::timeout(Duration::from_millis(200), &mut stopped).await;
        assert!(early.is_err(), "the pool stopped before its last outcome was recorded");
        last.answer("200 OK");
        stopped.await.unwrap();
        let pending = env.store.pending_deliveries().await.unwrap();
        assert!(pending.is_empty(), "{} delivered but still pending", pending.len());
    }

    #[actix_rt::test]
    async fn beyond_its_rate_limit_a_contact_gets_the_rest_in_one_digest() {
        tokio::time::pause();
        let mail = tempfile::tempdir().unwrap();
        let env = Arc::new(NotifierEnv {
            clock: Clock::tokio(crate::actors::testkit::START_MS),
            rate_limit: Some(RateLimit {
                messages: 2,
                window: Duration::from_secs(60),
            }),
            ..Arc::into_inner(env(mail.path())).unwrap()
        });
        // Five emails to jill, never tried: the pool takes them from the
        // outbox when it starts, through her rate limit.
        let batch: Vec<Notification> = (0..5)
            .map(|_| Notification {
                id: Uuid::new_v4(),
                ..notification()
            })
            .collect();
        env.store.enqueue(batch.clone(), 0).await.unwrap();
        let _pool = NotifierPool::new(env.clone(), 2, Lifeline::detached()).start();
        // Her next token is back 30 s after the first two went.
        tokio::time::sleep(Duration::from_secs(30)).await;
        crate::actors::testkit::until("every notification is delivered or digested", || async {
            env.store.pending_deliveries().await.unwrap().is_empty()
        })
        .await;
        let mut files: Vec<String> = std::fs::read_dir(mail.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".eml"))
            .collect();
        let sent: Vec<String> = batch.iter().map(|n| format!("{}.eml", n.id)).collect();
        files.retain(|name| !sent[..2].contains(name));
        assert_eq!(files.len(), 1, "the first two, then one digest: {files:?}");
        assert!(!sent[2..].contains(&files[0]), "the rest went in the digest only");
        let digest = std::fs::read_to_string(mail.path().join(&files[0])).unwrap();
        assert!(digest.contains("3 more notifications for jill"), "{digest}");
        let hour = env.store.activity().last_hour(env.clock.now_ms());
        assert_eq!(
            hour.iter().map(|m| m.notifications).sum::<u64>(),
            6,
            "on the activity chart: two sent, three digested, and the digest"
        );
    }

    #[actix_rt::test]
    async fn the_pool_stops_its_arbiter_when_it_stops() {
        let mail = tempfile::tempdir().unwrap();
        let arbiter = Arbiter::new();
        // A task that lives as long as the arbiter's runtime does.
        let (alive, gone) = tokio::sync::oneshot::channel::<()>();
        arbiter.spawn(async move {
            let _alive = alive;
            std::future::pending::<()>().await
        });
        let pool = on_own_thread(arbiter, env(mail.path()));
        pool.send(Stop).await.unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the arbiter stopped with the pool");
        assert!(stopped.is_err(), "its tasks were dropped");
    }
}
