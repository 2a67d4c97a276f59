//! `Janitor`: every `master.gc_interval` it deletes what the master keeps no
//! longer: events past `master.event_retention` that every alarm actor has
//! applied (never the newest), delivered and dead outbox rows past
//! `notify.outbox_retention`, machines nobody reported for
//! `master.machine_retention`, closed alarms past `master.alarm_retention`,
//! and the closed alarms and replay marks of probes and groups that are
//! gone. Each table goes in batches of [`GC_BATCH`] rows, one store call
//! each, so ingest commits between batches and never waits behind one big
//! delete. It holds nothing worth keeping: a crash mid-collection leaves
//! each batch done or not done, and the next run carries on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::supervisor::{Lifeline, Stop};
use crate::clock::Clock;
use crate::model::EpochMs;
use crate::store::{Store, StoreError};

/// Most rows one store call deletes: small enough that the store thread
/// answers ingest within milliseconds between two batches.
pub const GC_BATCH: usize = 1_000;

/// The first collection after a start waits this long (or one interval,
/// when that is shorter), so the master's own start (loading, replay) goes
/// first.
const FIRST_RUN: Duration = Duration::from_secs(5);

/// How long each kind of row is kept.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Events, after they were received (`master.event_retention`).
    pub events: Duration,
    /// Delivered and dead outbox rows, after they were created
    /// (`notify.outbox_retention`).
    pub outbox: Duration,
    /// Machines, after the flood guard last saw them
    /// (`master.machine_retention`).
    pub machines: Duration,
    /// Closed alarms, after they closed (`master.alarm_retention`).
    pub alarms: Duration,
}

/// What the janitor needs; built once by the master.
pub struct JanitorEnv {
    pub store: Store,
    /// "Now", for what is past its retention.
    pub clock: Clock,
    pub retention: Retention,
    /// Between the end of one collection and the start of the next.
    pub interval: Duration,
}

/// Rows one collection deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub events: usize,
    pub outbox: usize,
    pub machines: usize,
    /// Closed alarms past their retention.
    pub expired_alarms: usize,
    /// Closed alarms whose probe or group is gone.
    pub orphan_alarms: usize,
    pub monitor_marks: usize,
    /// Masters of a cluster not seen for `master.machine_retention` (each
    /// master process joins under a new id).
    pub cluster_members: usize,
}

/// Collects every table once, as of `now`.
pub async fn collect(store: &Store, retention: &Retention, now: EpochMs) -> Collected {
    let before = |kept: Duration| now.saturating_sub(kept.as_millis() as EpochMs);
    let (events, outbox, machines, alarms) = (
        before(retention.events),
        before(retention.outbox),
        before(retention.machines),
        before(retention.alarms),
    );
    Collected {
        events: sweep("events", |batch| store.gc_events(events, batch)).await,
        outbox: sweep("outbox", |batch| store.gc_outbox(outbox, batch)).await,
        machines: sweep("machines", |batch| store.gc_machines(machines, batch)).await,
        expired_alarms: sweep("alarms", |batch| store.expunge_closed(alarms, batch)).await,
        orphan_alarms: sweep("alarms", |batch| store.gc_orphan_alarms(batch)).await,
        monitor_marks: sweep("monitor_marks", |batch| store.gc_monitor_marks(batch)).await,
        cluster_members: sweep("cluster_members", |_| store.gc_cluster_members(machines)).await,
    }
}

/// Deletes batches of [`GC_BATCH`] rows, one store call each, until one
/// comes back short; counts them in `amon_gc_deleted_total{table}`. A
/// failed batch is logged and ends this sweep (the rows stay for the next
/// collection); the other tables are still swept.
pub async fn sweep<F, Fut>(table: &'static str, mut delete_batch: F) -> usize
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<usize, StoreError>>,
{
    let mut deleted = 0;
    loop {
        match delete_batch(GC_BATCH).await {
            Ok(n) => {
                deleted += n;
                crate::metrics::gc_deleted(table, n as u64);
                if n < GC_BATCH {
                    return deleted;
                }
            }
            Err(e) => {
                tracing::warn!(table, error = %e, "garbage collection batch failed; the next collection retries");
                return deleted;
            }
        }
    }
}

pub struct Janitor {
    env: Arc<JanitorEnv>,
    lifeline: Lifeline,
}

impl Janitor {
    pub fn new(env: Arc<JanitorEnv>, lifeline: Lifeline) -> Janitor {
        Janitor { env, lifeline }
    }

    /// One collection, then the next one an interval after it ends: runs
    /// never overlap, however long one takes.
    fn collect(&mut self, ctx: &mut Context<Self>) {
        let env = self.env.clone();
        ctx.spawn(
            async move {
                let began = tokio::time::Instant::now();
                let collected = collect(&env.store, &env.retention, env.clock.now_ms()).await;
                let seconds = began.elapsed().as_secs_f64();
                crate::metrics::gc_seconds(seconds);
                if collected == Collected::default() {
                    tracing::debug!(seconds, "garbage collection found nothing past its retention");
                } else {
                    tracing::info!(
                        events = collected.events,
                        outbox = collected.outbox,
                        machines = collected.machines,
                        expired_alarms = collected.expired_alarms,
                        orphan_alarms = collected.orphan_alarms,
                        monitor_marks = collected.monitor_marks,
                        seconds,
                        "garbage collected"
                    );
                }
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                ctx.run_later(act.env.interval, |act, ctx| act.collect(ctx));
            }),
        );
    }
}

impl Actor for Janitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(self.env.interval.min(FIRST_RUN), |act, ctx| act.collect(ctx));
    }
}

impl Handler<Stop> for Janitor {
    type Result = ();

    /// A batch in flight commits or not on the store thread; either is fine.
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::model::{Event, ServerEvent, ServerEventKind};

    fn heartbeat() -> Event {
        Event::Server(ServerEvent {
            v: crate::model::EVENT_VERSION,
            uuid: Uuid::new_v4(),
            time: 0,
            relay: Uuid::nil(),
            server: Uuid::nil(),
            event: ServerEventKind::Heartbeat,
            hostname: None,
            agents: Vec::new(),
        })
    }

    const HOUR: Duration = Duration::from_secs(3600);

    async fn stored(store: &Store) -> u64 {
        store
            .events_stored_by_type()
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    #[actix_rt::test]
    async fn a_sweep_goes_on_in_batches_until_one_comes_back_short() {
        let mut calls = Vec::new();
        let mut left = 2 * GC_BATCH + 7;
        let deleted = sweep("events", |batch| {
            let n = left.min(batch);
            left -= n;
            calls.push(n);
            async move { Ok(n) }
        })
        .await;
        assert_eq!(deleted, 2 * GC_BATCH + 7);
        assert_eq!(calls, vec![GC_BATCH, GC_BATCH, 7]);
    }

    #[actix_rt::test]
    async fn a_failed_batch_ends_the_sweep_with_what_went_before_it() {
        let mut calls = 0;
        let deleted = sweep("events", |batch| {
            calls += 1;
            let result = match calls {
                1 => Ok(batch),
                _ => Err(StoreError::Stopped),
            };
            async move { result }
        })
        .await;
        assert_eq!((deleted, calls), (GC_BATCH, 2));
    }

    #[actix_rt::test]
    async fn a_collection_deletes_more_than_a_batch_of_events_leaving_the_newest() {
        let store = Store::for_test();
        let events: Vec<Event> = (0..GC_BATCH + 10).map(|_| heartbeat()).collect();
        let committed = store.commit_events(events, 0, |c| c).await.unwrap();
        store.set_route_mark(committed.fresh.last().unwrap().0).await.unwrap();
        let retention = Retention {
            events: HOUR,
            outbox: HOUR,
            machines: HOUR,
            alarms: HOUR,
        };
        let collected = collect(&store, &retention, 2 * 3_600_000).await;
        assert_eq!(collected.events, GC_BATCH + 9);
        assert_eq!(stored(&store).await, 1);
    }

    #[actix_rt::test]
    async fn the_janitor_collects_on_its_own_once_its_clock_passes_the_retention() {
        tokio::time::pause();
        let store = Store::for_test();
        let clock = Clock::tokio(0);
        let committed = store
            .commit_events(vec![heartbeat(), heartbeat(), heartbeat()], 0, |c| c)
            .await
            .unwrap();
        store.set_route_mark(committed.fresh.last().unwrap().0).await.unwrap();
        let env = Arc::new(JanitorEnv {
            store: store.clone(),
            clock: clock.clone(),
            retention: Retention {
                events: HOUR,
                outbox: HOUR,
                machines: HOUR,
                alarms: HOUR,
            },
            interval: Duration::from_secs(600),
        });
        let janitor = Janitor::new(env, Lifeline::detached()).start();

        // Several collections inside the retention delete nothing.
        tokio::time::sleep(Duration::from_secs(1800)).await;
        assert_eq!(stored(&store).await, 3);

        let mut polls = 0;
        while stored(&store).await != 1 {
            polls += 1;
            assert!(polls < 1000, "the janitor never collected");
            // `stored` waits for the store thread's answer; meanwhile paused
            // time may move on to the janitor's next run, which is fine.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        assert!(clock.now_ms() >= 3_600_000, "not before the retention");
        janitor.send(Stop).await.unwrap();
    }
}
