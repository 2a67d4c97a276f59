//! Maintenance windows at run time (SPEC §5 rule 5).
//!
//! [`Maintenance`] is the shared, read-mostly set of windows that alarm
//! actors (and the flood guard) consult synchronously: "does a window cover
//! this fault now?". `MaintenanceKeeper` is the only writer: it creates and
//! deletes windows (store first, then the set), and keeps one timer for the
//! next window to end. When a window ends or is deleted it is
//! removed, and every alarm actor reviews its maintenance faults: those no
//! window covers any more become faults and notify (overlapping windows:
//! nothing until the last covering one ends). Windows live in the store, so
//! the timer survives restarts; a window that ended while the master was
//! down is handled at start.
//!
//! A window's end is a wall-clock time, while the timer runs on monotonic
//! time, and the wall clock can be stepped under us (NTP). So the timer is
//! never set further ahead than [`WALL_CLOCK_RECHECK`], and each time it
//! fires the ends are compared with the wall clock again: a step forward
//! past an end ends the window within that, a step back postpones it until
//! the wall clock reaches the end again.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::router::{EventRouter, ReviewMaintenance};
use super::supervisor::{Lifeline, Named, Stop};
use crate::clock::Clock;
use crate::model::{EpochMs, FaultSite, MaintenanceWindow};
use crate::store::{Store, StoreError};

/// The longest the keeper waits before comparing the windows' ends with the
/// wall clock again, however far off the next end is: how late a step of
/// the wall clock past an end may be noticed.
const WALL_CLOCK_RECHECK: Duration = Duration::from_secs(10);

/// The windows in force or to come, shared with alarm actors.
#[derive(Clone, Default)]
pub struct Maintenance {
    windows: Arc<RwLock<Vec<MaintenanceWindow>>>,
}

impl Maintenance {
    /// Whether any window covers the fault at `at`.
    pub fn covers(&self, site: &FaultSite, at: EpochMs) -> bool {
        self.windows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|w| w.covers(site, at))
    }

    fn set(&self, windows: Vec<MaintenanceWindow>) {
        *self.windows.write().unwrap_or_else(|e| e.into_inner()) = windows;
    }
}

pub struct KeeperEnv {
    pub store: Store,
    pub clock: Clock,
    pub maintenance: Maintenance,
    pub router: Named<EventRouter>,
}

/// Creates a window (its id is assigned here); answers with it.
#[derive(Debug, Message)]
#[rtype(result = "Result<MaintenanceWindow, StoreError>")]
pub struct CreateWindow(pub MaintenanceWindow);

/// Deletes a window; `Ok(false)` if it did not exist.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct DeleteWindow {
    pub user: Option<Uuid>,
    pub id: u64,
}

pub struct MaintenanceKeeper {
    env: Arc<KeeperEnv>,
    windows: Vec<MaintenanceWindow>,
    timer: Option<SpawnHandle>,
    lifeline: Lifeline,
}

impl MaintenanceKeeper {
    pub fn new(env: Arc<KeeperEnv>, lifeline: Lifeline) -> MaintenanceKeeper {
        MaintenanceKeeper {
            env,
            windows: Vec::new(),
            timer: None,
            lifeline,
        }
    }

    fn publish(&mut self, ctx: &mut Context<Self>) {
        self.env.maintenance.set(self.windows.clone());
        self.arm(ctx);
    }

    /// Sets the timer for the next end, or for the next recheck of the wall
    /// clock if that comes first.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let now = self.env.clock.now_ms();
        if let Some(end) = self.windows.iter().filter_map(|w| w.end).min() {
            let delay = Duration::from_millis((end - now).max(0) as u64).min(WALL_CLOCK_RECHECK);
            self.timer = Some(ctx.run_later(delay, |act, ctx| act.expire(ctx)));
        }
    }

    /// Removes windows that have ended, from the store too (their ids then
    /// answer 410, as Amon's did), and has the alarms reviewed.
    fn expire(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        let now = self.env.clock.now_ms();
        let (ended, live): (Vec<_>, Vec<_>) = self.windows.drain(..).partition(|w| w.end.is_some_and(|e| e <= now));
        self.windows = live;
        if ended.is_empty() {
            // A recheck, or a step of the wall clock back: nothing changed.
            self.arm(ctx);
            return;
        }
        self.publish(ctx);
        tracing::info!(windows = ended.len(), "maintenance windows ended");
        let store = self.env.store.clone();
        let keys: Vec<(Option<Uuid>, u64)> = ended.iter().map(|w| (w.user, w.id)).collect();
        ctx.spawn(
            async move {
                for (user, id) in keys {
                    if let Err(e) = store.delete_window(user, id).await {
                        tracing::warn!(error = %e, id, "cannot remove an ended maintenance window");
                    }
                }
            }
            .into_actor(self),
        );
        self.review();
    }

    fn review(&self) {
        match self.env.router.get() {
            Some(router) => router.do_send(ReviewMaintenance),
            None => tracing::warn!("event router not running; maintenance review skipped"),
        }
    }
}

impl Actor for MaintenanceKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let store = self.env.store.clone();
        ctx.wait(
            async move { store.all_windows().await }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(windows) => {
                        act.windows = windows;
                        act.publish(ctx);
                        // Ends windows that ended while we were down.
                        act.expire(ctx);
                    }
                    Err(e) => {
                        act.lifeline.fail(format!("cannot load maintenance windows: {e}"));
                        ctx.stop();
                    }
                }),
        );
    }
}

impl Handler<CreateWindow> for MaintenanceKeeper {
    type Result = ResponseActFuture<Self, Result<MaintenanceWindow, StoreError>>;

    fn handle(&mut self, msg: CreateWindow, _ctx: &mut Context<Self>) -> Self::Result {
        let store = self.env.store.clone();
        Box::pin(async move { store.create_window(msg.0).await }.into_actor(self).map(
            |result, act, ctx| {
                let window = result?;
                tracing::info!(id = window.id, user = ?window.user, start = window.start, end = ?window.end, "maintenance window created");
                act.windows.push(window.clone());
                act.publish(ctx);
                Ok(window)
            },
        ))
    }
}

impl Handler<DeleteWindow> for MaintenanceKeeper {
    type Result = ResponseActFuture<Self, Result<bool, StoreError>>;

    fn handle(&mut self, msg: DeleteWindow, _ctx: &mut Context<Self>) -> Self::Result {
        let store = self.env.store.clone();
        let (user, id) = (msg.user, msg.id);
        Box::pin(
            async move { store.delete_window(user, id).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let deleted = result?;
                    let before = act.windows.len();
                    act.windows.retain(|w| !(w.user == user && w.id == id));
                    if act.windows.len() < before {
                        act.publish(ctx);
                        // Deleting a window ends it now (rule 5).
                        act.review();
                    }
                    Ok(deleted)
                }),
        )
    }
}

impl Handler<Stop> for MaintenanceKeeper {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    //! The keeper's timer in paused time, with the wall clock stepped under
    //! it as NTP steps it: window ends are wall-clock times.

    use super::*;
    use crate::actors::testkit::until;
    use crate::model::MaintenanceScope;

    const START: EpochMs = 1_000_000_000;
    const HOUR: EpochMs = 3_600_000;

    /// A keeper (with no router: the review is only logged) on `clock`.
    fn start_keeper(clock: &Clock, store: &Store) -> (Addr<MaintenanceKeeper>, Maintenance) {
        let maintenance = Maintenance::default();
        let env = Arc::new(KeeperEnv {
            store: store.clone(),
            clock: clock.clone(),
            maintenance: maintenance.clone(),
            router: Named::new(),
        });
        (MaintenanceKeeper::new(env, Lifeline::detached()).start(), maintenance)
    }

    /// Whether a window covering everything, from `START`, is still in the
    /// shared set.
    fn in_force(maintenance: &Maintenance) -> bool {
        let site = FaultSite {
            user: Uuid::new_v4(),
            probe: Uuid::new_v4(),
            group: None,
            machine: None,
            server: None,
        };
        maintenance.covers(&site, START)
    }

    async fn create(keeper: &Addr<MaintenanceKeeper>, end: EpochMs) {
        let window = MaintenanceWindow {
            id: 0,
            user: None,
            start: START,
            end: Some(end),
            notes: None,
            scope: MaintenanceScope {
                all: true,
                ..Default::default()
            },
        };
        keeper.send(CreateWindow(window)).await.unwrap().unwrap();
    }

    #[actix_rt::test]
    async fn a_step_of_the_wall_clock_past_a_windows_end_ends_it_within_a_recheck() {
        tokio::time::pause();
        let (clock, store) = (Clock::tokio(START), Store::for_test());
        let (keeper, maintenance) = start_keeper(&clock, &store);
        create(&keeper, START + 2 * HOUR).await;
        assert!(in_force(&maintenance));

        clock.step(3 * HOUR);
        tokio::time::sleep(WALL_CLOCK_RECHECK).await;
        until("the window to end", || async { !in_force(&maintenance) }).await;
        assert_eq!(store.all_windows().await.unwrap(), vec![], "removed from the store too");
    }

    #[actix_rt::test]
    async fn a_step_back_postpones_a_windows_end_until_the_wall_clock_reaches_it_again() {
        tokio::time::pause();
        let (clock, store) = (Clock::tokio(START), Store::for_test());
        let (keeper, maintenance) = start_keeper(&clock, &store);
        create(&keeper, START + 60_000).await;

        clock.step(-HOUR);
        // Its first end, by monotonic time, and some rechecks after.
        tokio::time::sleep(Duration::from_secs(60) + 3 * WALL_CLOCK_RECHECK).await;
        assert!(in_force(&maintenance), "not ended by monotonic time");
        // The wall clock reaches the end an hour later.
        tokio::time::sleep(Duration::from_millis(HOUR as u64) - 3 * WALL_CLOCK_RECHECK).await;
        until("the window to end", || async { !in_force(&maintenance) }).await;
        assert_eq!(store.all_windows().await.unwrap(), vec![]);
    }

    #[actix_rt::test]
    async fn windows_in_the_store_are_in_force_after_a_restart() {
        tokio::time::pause();
        let (clock, store) = (Clock::tokio(START), Store::for_test());
        let (first, _) = start_keeper(&clock, &store);
        create(&first, START + HOUR).await;
        let (_again, maintenance) = start_keeper(&clock, &store);
        until("the stored window in force", || async { in_force(&maintenance) }).await;
    }
}
