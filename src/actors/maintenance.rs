//! Maintenance windows at run time (SPEC §5 rule 5).
//!
//! [`Maintenance`] is the shared, read-mostly set of windows that alarm
//! actors (and the flood guard) consult synchronously: "does a window cover
//! this fault now?". `MaintenanceKeeper` is the only writer: it creates and
//! deletes windows (store first, then the set), and keeps one timer for the
//! next window to end — no polling. When a window ends or is deleted it is
//! removed, and every alarm actor reviews its maintenance faults: those no
//! window covers any more become faults and notify (overlapping windows:
//! nothing until the last covering one ends). Windows live in the store, so
//! the timer survives restarts; a window that ended while the master was
//! down is handled at start.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::router::{EventRouter, ReviewMaintenance};
use super::supervisor::{Lifeline, Named, Stop};
use crate::clock::Clock;
use crate::model::{EpochMs, FaultSite, MaintenanceWindow};
use crate::store::{Store, StoreError};

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
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let now = self.env.clock.now_ms();
        if let Some(end) = self.windows.iter().filter_map(|w| w.end).min() {
            let delay = Duration::from_millis((end - now).max(0) as u64);
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
        self.publish(ctx);
        if ended.is_empty() {
            return;
        }
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
                        // Also handles windows that ended while we were down.
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
