//! `Leadership`: a master's part in a cluster of masters sharing one
//! PostgreSQL store (`crate::cluster` decides, this actor carries it out).
//! It beats every quarter of `cluster.lease` (`Store::cluster_beat`), runs
//! the alarm core (a supervisor of the router, shards, flood guard,
//! maintenance keeper, notifier pool, agent watch and janitor) while this
//! master holds the lease, and stops it the moment it does not, or cannot be
//! sure it does. It publishes who leads in a [`ClusterView`], which the
//! Master API reads to forward what only the leader can do, and resets the
//! ingest backlog from the store (events committed by any master, not yet
//! applied by the leader's router).

use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;

use super::router::Backlog;
use super::supervisor::{ChildExited, ExitReason, Lifeline, Stop};
use crate::clock::Clock;
use crate::cluster::{Change, Leader, Standing};
use crate::store::Store;

/// Who leads the cluster, as this master last learnt it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewState {
    /// This master's member id (a fresh uuid each process start).
    pub me: String,
    pub leading: bool,
    pub leader: Option<Leader>,
}

/// Shared between the `Leadership` actor (the one writer) and the Master
/// API (which reads it synchronously in a handler, never across an await).
#[derive(Debug, Clone, Default)]
pub struct ClusterView(Arc<RwLock<ViewState>>);

impl ClusterView {
    pub fn new(me: String) -> ClusterView {
        ClusterView(Arc::new(RwLock::new(ViewState {
            me,
            ..ViewState::default()
        })))
    }

    pub fn get(&self) -> ViewState {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, leading: bool, leader: Option<Leader>) {
        let mut state = self.0.write().unwrap_or_else(|e| e.into_inner());
        state.leading = leading;
        state.leader = leader;
    }
}

/// Starts the alarm core under the given lifeline; returns its stop handle.
pub type CoreFn = Rc<dyn Fn(Lifeline) -> Recipient<Stop>>;

pub struct LeadershipEnv {
    pub store: Store,
    pub clock: Clock,
    /// This master's member id and public URL.
    pub me: String,
    pub url: String,
    pub lease: Duration,
    pub view: ClusterView,
    pub backlog: Arc<Backlog>,
    pub core: CoreFn,
}

pub struct Leadership {
    env: Rc<LeadershipEnv>,
    standing: Standing,
    /// The running core and its generation (which of its exits is news).
    core: Option<Recipient<Stop>>,
    generation: u64,
    beating: bool,
    /// Told to stop: waiting for the core to end first.
    stopping: bool,
    lifeline: Lifeline,
}

impl Leadership {
    pub fn new(env: Rc<LeadershipEnv>, lifeline: Lifeline) -> Leadership {
        Leadership {
            standing: Standing::new(env.me.clone(), env.lease),
            env,
            core: None,
            generation: 0,
            beating: false,
            stopping: false,
            lifeline,
        }
    }

    fn apply(&mut self, change: Change, ctx: &mut Context<Self>) {
        match change {
            Change::None => {}
            Change::Lead { epoch } => {
                self.generation += 1;
                let lifeline = Lifeline::new(ctx.address().recipient(), 0, self.generation);
                self.core = Some((self.env.core)(lifeline));
                crate::metrics::cluster_leadership(true);
                tracing::info!(member = %self.env.me, epoch, "this master leads the cluster: alarm core started");
            }
            Change::StepDown { why } => {
                if let Some(core) = self.core.take() {
                    core.do_send(Stop);
                }
                crate::metrics::cluster_leadership(false);
                tracing::warn!(member = %self.env.me, why, "this master no longer leads the cluster: alarm core stopped");
            }
        }
        self.env
            .view
            .set(self.standing.leading(), self.standing.leader().cloned());
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let change = self.standing.tick(self.env.clock.steady_ms());
        self.apply(change, ctx);
        if self.beating || self.stopping {
            return;
        }
        self.beating = true;
        let sent = self.env.clock.steady_ms();
        let (store, me, url, lease_ms) = (
            self.env.store.clone(),
            self.env.me.clone(),
            self.env.url.clone(),
            self.standing.lease_ms(),
        );
        ctx.spawn(
            async move {
                let beat = store.cluster_beat(me, url, lease_ms).await;
                let unapplied = store.unapplied_events().await;
                (beat, unapplied)
            }
            .into_actor(self)
            .map(move |(beat, unapplied), act, ctx| {
                act.beating = false;
                if act.stopping {
                    return;
                }
                match beat {
                    Ok(beat) => {
                        let change = act.standing.beat(sent, &beat);
                        act.apply(change, ctx);
                    }
                    Err(e) => {
                        crate::metrics::cluster_beat_failed();
                        tracing::warn!(error = %e, "cluster beat failed; a leader steps down if it cannot renew in time");
                    }
                }
                // Whichever master took them in, events wait for the
                // leader's router: the backlog is the store's count.
                if let Ok(unapplied) = unapplied {
                    act.env.backlog.reset(unapplied);
                }
            }),
        );
    }

    /// Gives the lease up (so another master takes over at once rather than
    /// when it runs out), then ends.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        let (store, me) = (self.env.store.clone(), self.env.me.clone());
        ctx.wait(
            async move {
                if let Err(e) = store.cluster_release(me).await {
                    tracing::warn!(error = %e, "cannot give the cluster lease up; it runs out on its own");
                }
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                act.lifeline.exit_normally();
                ctx.stop();
            }),
        );
    }
}

impl Actor for Leadership {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(member = %self.env.me, url = %self.env.url, lease_s = self.env.lease.as_secs_f64(), "joining the cluster");
        self.tick(ctx);
        ctx.run_interval(self.standing.beat_every(), |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(core) = self.core.take() {
            core.do_send(Stop);
        }
        self.env.view.set(false, None);
    }
}

impl Handler<ChildExited> for Leadership {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        if msg.generation != self.generation {
            return;
        }
        if self.stopping {
            self.finish(ctx);
        } else if self.core.is_some() {
            // The core gave up (its own restarts escalated): so does this
            // master's part in the cluster, and its supervisor decides.
            self.core = None;
            let why = match msg.reason {
                ExitReason::Failed(why) => why,
                other => format!("{other:?}"),
            };
            self.lifeline.fail(format!("the alarm core stopped: {why}"));
            ctx.stop();
        }
    }
}

impl Handler<Stop> for Leadership {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.stopping = true;
        match self.core.take() {
            // Its exit (ChildExited) finishes the stop.
            Some(core) => core.do_send(Stop),
            None => self.finish(ctx),
        }
    }
}
