//! `AgentWatch`: the master's missing-data alarm (SPEC §12). A dead agent
//! must not look like a healthy machine: when an agent with probes to run
//! has sent nothing for `notify.agent_silence` (no events, no polls reported
//! by its relay's heartbeats), each of its probes gets a fault, and when it
//! is heard from again, a clear of exactly those faults.
//!
//! The decisions are `crate::silence` (pure); this actor feeds it what the
//! router hears ([`AgentsHeard`]) and the catalog's agents, checks every
//! little while, and turns verdicts into probe events that go through the
//! normal pipeline (`router::ingest`: committed, routed, held, notified, one
//! alarm per monitor as any fault), marked `details.agentSilence` so that a
//! master restart finds in the open alarms what silence had opened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::json;
use uuid::Uuid;

use super::router::{ingest, Backlog, EventRouter, IngestError};
use super::supervisor::{Lifeline, Named, Stop};
use crate::catalog::SharedCatalog;
use crate::clock::Clock;
use crate::model::{EpochMs, Event, Probe, ProbeEvent, ProbeEventData};
use crate::silence::{AgentSilence, Verdict};
use crate::store::Store;

/// Agents heard from, with when (steady milliseconds), from the router.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AgentsHeard(pub Vec<(Uuid, EpochMs)>);

/// What the watch needs (again on every restart).
pub struct AgentWatchEnv {
    pub store: Store,
    pub clock: Clock,
    /// Which agents have which probes (the router keeps it).
    pub catalog: SharedCatalog,
    pub router: Named<EventRouter>,
    pub backlog: Arc<Backlog>,
    /// `notify.agent_silence`.
    pub silence: Duration,
}

/// The key in a missing-data event's `details` that marks it as the
/// watch's (the agent's own events never carry it: relays stamp theirs).
pub const MARK: &str = "agentSilence";

pub struct AgentWatch {
    env: Arc<AgentWatchEnv>,
    silence: AgentSilence,
    /// Events the store did not take yet (backlog full, store failing):
    /// tried again at the next check.
    unsent: Vec<Event>,
    sending: bool,
    lifeline: Lifeline,
}

impl AgentWatch {
    pub fn new(env: Arc<AgentWatchEnv>, lifeline: Lifeline) -> AgentWatch {
        AgentWatch {
            silence: AgentSilence::new(env.silence, env.clock.steady_ms()),
            env,
            unsent: Vec::new(),
            sending: false,
            lifeline,
        }
    }

    /// How often to check: often enough that an alarm comes within a tenth
    /// of the limit after it, at least every 30 s, at most every second.
    fn every(&self) -> Duration {
        (self.env.silence / 10).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        let agents = self
            .env
            .catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .agent_probes();
        let watched: BTreeMap<Uuid, Vec<Uuid>> = agents
            .iter()
            .map(|(agent, probes)| (*agent, probes.iter().map(|p| p.uuid).collect()))
            .collect();
        let now = self.env.clock.steady_ms();
        for verdict in self.silence.check(&watched, now) {
            match verdict {
                Verdict::Silent {
                    agent,
                    probes,
                    silent_ms,
                } => {
                    let text = humantime::format_duration(Duration::from_secs((silent_ms / 1000).max(0) as u64));
                    tracing::warn!(%agent, probes = probes.len(), silent = %text, "agent silent; missing-data faults on its probes");
                    let message = format!("agent {agent} has sent nothing for {text}");
                    for probe in probes.iter().filter_map(|p| find(&agents, agent, *p)) {
                        self.unsent.push(self.event(probe, agent, false, &message));
                    }
                }
                Verdict::Back { agent, probes } => {
                    tracing::info!(%agent, probes = probes.len(), "agent heard from again; missing-data faults cleared");
                    let message = format!("agent {agent} is sending again");
                    // A probe deleted meanwhile needs no clear (its alarm
                    // went with it); one disabled still gets it.
                    let all = self.env.catalog.read().unwrap_or_else(|e| e.into_inner());
                    for uuid in probes {
                        if let Some(probe) = all.probe(uuid) {
                            self.unsent.push(self.event(&probe, agent, true, &message));
                        }
                    }
                }
            }
        }
        self.send(ctx);
    }

    fn event(&self, probe: &Probe, agent: Uuid, clear: bool, message: &str) -> Event {
        Event::Probe(ProbeEvent {
            v: crate::model::EVENT_VERSION,
            user: probe.user,
            probe_uuid: probe.uuid,
            clear,
            data: ProbeEventData {
                message: message.to_string(),
                value: None,
                details: Some(json!({ MARK: true, "agent": agent })),
            },
            machine: probe.machine,
            uuid: Uuid::now_v7(),
            time: self.env.clock.now_ms(),
            agent: Some(agent),
            agent_alias: None,
            // No relay: the router does not take the watch's own events
            // for a sign of the agent's life.
            relay: None,
        })
    }

    fn send(&mut self, ctx: &mut Context<Self>) {
        if self.sending || self.unsent.is_empty() {
            return;
        }
        self.sending = true;
        let events = std::mem::take(&mut self.unsent);
        let env = self.env.clone();
        ctx.spawn(
            async move {
                let result = ingest(
                    &env.store,
                    &env.backlog,
                    &env.router,
                    events.clone(),
                    env.clock.now_ms(),
                )
                .await;
                (result, events)
            }
            .into_actor(self)
            .map(|(result, events), act, _| {
                act.sending = false;
                match result {
                    Ok(_) => {}
                    Err(e) => {
                        let level_full = matches!(e, IngestError::Full(_));
                        if level_full {
                            tracing::debug!(error = %e, "missing-data events wait for room");
                        } else {
                            tracing::warn!(error = %e, "cannot commit missing-data events; trying again");
                        }
                        // Before anything newer, in order.
                        let newer = std::mem::replace(&mut act.unsent, events);
                        act.unsent.extend(newer);
                    }
                }
            }),
        );
    }
}

fn find(agents: &BTreeMap<Uuid, Vec<Arc<Probe>>>, agent: Uuid, probe: Uuid) -> Option<&Arc<Probe>> {
    agents.get(&agent)?.iter().find(|p| p.uuid == probe)
}

impl Actor for AgentWatch {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // What silence opened before a restart: cleared when its agent is
        // heard from again (the grace of a fresh start applies to the rest).
        let store = self.env.store.clone();
        ctx.wait(async move { store.open_alarms().await }.into_actor(self).map(
            |result, act, _| match result {
                Ok(alarms) => {
                    let now = act.env.clock.steady_ms();
                    for fault in alarms.iter().flat_map(|a| a.faults.iter().chain(&a.maint_faults)) {
                        let event = &fault.event;
                        let marked = event
                            .data
                            .details
                            .as_ref()
                            .and_then(|d| d.get(MARK))
                            .and_then(serde_json::Value::as_bool)
                            .unwrap_or(false);
                        if let (true, Some(agent)) = (marked, event.agent) {
                            act.silence.restore(agent, event.probe_uuid, now);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read open alarms; missing-data faults opened before this start are cleared by hand")
                }
            },
        ));
        let every = self.every();
        ctx.run_interval(every, |act, ctx| act.check(ctx));
    }
}

impl Handler<AgentsHeard> for AgentWatch {
    type Result = ();

    fn handle(&mut self, msg: AgentsHeard, _: &mut Context<Self>) {
        for (agent, at) in msg.0 {
            self.silence.heard(agent, at);
        }
    }
}

impl Handler<Stop> for AgentWatch {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}
