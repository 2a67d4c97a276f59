//! `ProbeSupervisor` and `ProbeActor`: one supervised actor per probe.
//!
//! The supervisor is told the wanted probes ([`SetProbes`], from the poller,
//! after every poll) and carries out [`super::plan::plan`]: a new probe is
//! started, a changed one stopped and started with its new config, a removed
//! one stopped. A probe actor runs `crate::probes::run` on the supervisor's
//! arbiter (the future may be `!Send`) and turns each observation into an
//! event for the sender. When `run` gives up (an `Err`, or the stubs of types
//! not built yet), or the actor panics, the supervisor logs why and starts it
//! again after a backoff (1 s doubling up to 5 min): one broken probe never
//! stops another, and it never escalates, because the other probes are fine.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::plan::{plan, Wanted};
use super::sender::{EventSender, Observed};
use crate::actors::supervisor::{
    ChildExited, ExitReason, Lifeline, Named, RestartDecision, RestartPolicy, RestartTracker, Stop,
};
use crate::http::relay_agent::AgentEvent;

/// The probes this agent should run now (every poll, changed or not: a
/// supervisor that restarted gets the list again at the next poll).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetProbes(pub Vec<Wanted>);

/// A probe's restarts: for ever, 1 s doubling up to 5 min. A probe that
/// cannot run (a file system gone, a command missing) is retried slowly
/// until an operator fixes it, with one log line per attempt.
pub fn probe_restarts() -> RestartPolicy {
    RestartPolicy {
        max_restarts: usize::MAX,
        within: Duration::from_secs(300),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(300),
    }
}

/// Observations a probe may have waiting for its actor; a probe that sees
/// more waits (the sender's queue decides what to drop, not the probe).
const REPORT_DEPTH: usize = 64;

struct Slot {
    probe: Wanted,
    /// `None` while it waits out its backoff.
    addr: Option<Addr<ProbeActor>>,
    /// Raised at every start, so the death notice of a stopped instance is
    /// told apart from the running one's.
    generation: u64,
    restarts: RestartTracker,
}

pub struct ProbeSupervisor {
    sender: Named<EventSender>,
    /// Child index (as lifelines carry it) → the probe in it.
    slots: BTreeMap<usize, Slot>,
    by_probe: BTreeMap<Uuid, usize>,
    next_child: usize,
    lifeline: Lifeline,
}

impl ProbeSupervisor {
    pub fn new(sender: Named<EventSender>, lifeline: Lifeline) -> ProbeSupervisor {
        ProbeSupervisor {
            sender,
            slots: BTreeMap::new(),
            by_probe: BTreeMap::new(),
            next_child: 0,
            lifeline,
        }
    }

    fn running(&self) -> BTreeMap<Uuid, Wanted> {
        self.by_probe
            .iter()
            .filter_map(|(&uuid, child)| self.slots.get(child).map(|slot| (uuid, slot.probe.clone())))
            .collect()
    }

    fn spawn(&self, child: usize, generation: u64, probe: &Wanted, ctx: &mut Context<Self>) -> Addr<ProbeActor> {
        let lifeline = Lifeline::new(ctx.address().recipient(), child, generation);
        ProbeActor {
            probe: probe.clone(),
            sender: self.sender.clone(),
            lifeline,
        }
        .start()
    }

    fn start_probe(&mut self, probe: Wanted, ctx: &mut Context<Self>) {
        let child = self.next_child;
        self.next_child += 1;
        let addr = self.spawn(child, 0, &probe, ctx);
        self.by_probe.insert(probe.uuid, child);
        self.slots.insert(
            child,
            Slot {
                probe,
                addr: Some(addr),
                generation: 0,
                restarts: RestartTracker::new(probe_restarts()),
            },
        );
    }

    fn stop_probe(&mut self, uuid: Uuid) {
        if let Some(slot) = self.by_probe.remove(&uuid).and_then(|child| self.slots.remove(&child)) {
            if let Some(addr) = slot.addr {
                addr.do_send(Stop);
            }
        }
    }
}

impl Actor for ProbeSupervisor {
    type Context = Context<Self>;
}

impl Drop for ProbeSupervisor {
    /// However the supervisor ends, its probes end with it: a restarted
    /// supervisor starts them again from the next poll's list.
    fn drop(&mut self) {
        for slot in self.slots.values() {
            if let Some(addr) = &slot.addr {
                addr.do_send(Stop);
            }
        }
    }
}

impl Handler<SetProbes> for ProbeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SetProbes, ctx: &mut Context<Self>) {
        let plan = plan(&self.running(), msg.0);
        for uuid in plan.stop {
            tracing::info!(probe = %uuid, "probe removed from the list; stopping it");
            self.stop_probe(uuid);
        }
        for probe in plan.restart {
            tracing::info!(probe = %probe.uuid, r#type = probe.probe_type.as_str(), config = %probe.raw_config, "probe changed; restarting it with its new config");
            self.stop_probe(probe.uuid);
            self.start_probe(probe, ctx);
        }
        for probe in plan.start {
            tracing::info!(probe = %probe.uuid, r#type = probe.probe_type.as_str(), "starting probe");
            self.start_probe(probe, ctx);
        }
    }
}

impl Handler<ChildExited> for ProbeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(&msg.child) else {
            return; // stopped on purpose: removed or replaced
        };
        if slot.generation != msg.generation || msg.reason == ExitReason::Normal {
            return;
        }
        slot.addr = None;
        let uuid = slot.probe.uuid;
        let why = match &msg.reason {
            ExitReason::Failed(why) => why.clone(),
            _ => "the probe's actor crashed".to_string(),
        };
        crate::metrics::actor_restarted("probe");
        match slot.restarts.crashed(Instant::now()) {
            // The policy never escalates; were it changed to, giving up on
            // this probe alone is still right.
            RestartDecision::Escalate => {
                tracing::error!(probe = %uuid, error = %why, "probe keeps failing; no longer running it");
                self.by_probe.remove(&uuid);
                self.slots.remove(&msg.child);
            }
            RestartDecision::RestartAfter(delay) => {
                tracing::error!(probe = %uuid, error = %why, retry_in_ms = delay.as_millis() as u64, "probe stopped; restarting it after a backoff");
                let child = msg.child;
                ctx.run_later(delay, move |act, ctx| {
                    let Some(slot) = act.slots.get(&child) else { return };
                    if slot.addr.is_some() {
                        return;
                    }
                    let (generation, probe) = (slot.generation + 1, slot.probe.clone());
                    let addr = act.spawn(child, generation, &probe, ctx);
                    if let Some(slot) = act.slots.get_mut(&child) {
                        slot.generation = generation;
                        slot.addr = Some(addr);
                    }
                });
            }
        }
    }
}

impl Handler<Stop> for ProbeSupervisor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

/// One probe, running. Its whole state is the probe's definition: a
/// restart starts `run` again from scratch (a log scan from the end of its
/// file, a window empty).
pub struct ProbeActor {
    probe: Wanted,
    sender: Named<EventSender>,
    lifeline: Lifeline,
}

impl Actor for ProbeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (report, mut seen) = mpsc::channel(REPORT_DEPTH);
        let (uuid, user, machine) = (self.probe.uuid, self.probe.user, self.probe.machine);
        let sender = self.sender.clone();
        // What the probe sees goes to the sender as it comes. Dropped with
        // the actor, as is the probe's own future (cancel-safe by contract).
        ctx.spawn(
            async move {
                while let Some(observation) = seen.recv().await {
                    let event = AgentEvent::of(uuid, user, machine, observation);
                    match sender.get() {
                        Some(sender) => sender.do_send(Observed(event)),
                        None => tracing::warn!(probe = %uuid, "event sender restarting; an event is lost"),
                    }
                }
            }
            .into_actor(self),
        );
        ctx.spawn(
            crate::probes::run(self.probe.config.clone(), report)
                .into_actor(self)
                .map(|result, act, ctx| {
                    let why = match result {
                        Ok(()) => "the probe ended by itself".to_string(),
                        Err(e) => format!("{e:#}"),
                    };
                    act.lifeline.fail(why);
                    ctx.stop();
                }),
        );
    }
}

impl Handler<Stop> for ProbeActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}
