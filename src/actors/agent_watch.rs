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
use crate::model::{EpochMs, Event, MonitorKey, Probe, ProbeEvent, ProbeEventData};
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
    /// The router reads events from the store (masters sharing one): do
    /// not hand it what is committed.
    pub polled: bool,
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
                    let probes: Vec<Arc<Probe>> = probes
                        .iter()
                        .filter_map(|p| find(&agents, agent, *p))
                        .cloned()
                        .collect();
                    self.fault_unless_faulted(agent, probes, message, ctx);
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

    /// Faults each probe, unless its alarm already holds a fault of the
    /// probe's own (a log scan's match, say): a missing-data fault would
    /// replace it, and its clear would later close that alarm. Such a
    /// probe's open alarm already asks for attention; it is left alone, and
    /// nothing is cleared for it when the agent is back.
    fn fault_unless_faulted(&mut self, agent: Uuid, probes: Vec<Arc<Probe>>, message: String, ctx: &mut Context<Self>) {
        let store = self.env.store.clone();
        ctx.spawn(
            async move {
                let mut checked = Vec::with_capacity(probes.len());
                for probe in probes {
                    let faulted = match store.open_alarm(MonitorKey::of(&probe)).await {
                        Ok(Some(alarm)) => alarm
                            .faults
                            .iter()
                            .chain(&alarm.maint_faults)
                            .any(|f| f.probe == probe.uuid && !marked(&f.event)),
                        Ok(None) => false,
                        // Better a missing-data fault too many than none.
                        Err(e) => {
                            tracing::warn!(error = %e, probe = %probe.uuid, "cannot read the probe's alarm; faulting it");
                            false
                        }
                    };
                    checked.push((probe, faulted));
                }
                checked
            }
            .into_actor(self)
            .map(move |checked, act, ctx| {
                for (probe, faulted) in checked {
                    if faulted {
                        tracing::info!(%agent, probe = %probe.uuid, "probe's alarm already has a fault of its own; no missing-data fault on it");
                        act.silence.forget(agent, probe.uuid);
                    } else {
                        let event = act.event(&probe, agent, false, &message);
                        act.unsent.push(event);
                    }
                }
                act.send(ctx);
            }),
        );
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
                    (!env.polled).then_some(&env.router),
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

/// Whether a fault's event is the watch's own.
fn marked(event: &ProbeEvent) -> bool {
    event
        .data
        .details
        .as_ref()
        .and_then(|d| d.get(MARK))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
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
                        if let (true, Some(agent)) = (marked(event), event.agent) {
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

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use super::*;
    use crate::actors::testkit::{self, until, START_MS};
    use crate::catalog::Catalog;
    use crate::model::{Fault, ProbeType};

    const SILENCE: Duration = Duration::from_secs(3);

    /// A probe of an agent type on `agent`.
    fn agent_probe(user: Uuid, agent: Uuid) -> Probe {
        Probe {
            probe_type: ProbeType::Cmd,
            agent: Some(agent),
            config: json!({ "cmd": "true" }),
            ..(*testkit::machine_probe(user, Some(agent), &["email"], None)).clone()
        }
    }

    async fn committed(store: &Store) -> Vec<ProbeEvent> {
        store
            .events_after(0)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Probe(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[actix_rt::test]
    async fn a_silent_agents_probes_are_faulted_but_not_one_whose_alarm_has_a_fault_of_its_own() {
        tokio::time::pause();
        let store = Store::for_test();
        let account = testkit::account("ops", true);
        let agent = Uuid::new_v4();
        let (busy, quiet) = (agent_probe(account.uuid, agent), agent_probe(account.uuid, agent));
        // The busy probe's alarm is open with a fault the probe reported.
        let mut alarm = crate::rules::new_alarm(MonitorKey::of(&busy), 1, START_MS);
        alarm.faults.push(Fault {
            fault_type: "probe".into(),
            probe: busy.uuid,
            event: testkit::probe_event(&busy, false),
            time_faulted: START_MS,
            notified: true,
            folded: false,
        });
        store.save_alarm(alarm, Vec::new(), START_MS, None).await.unwrap();
        let catalog = Arc::new(RwLock::new(Catalog::load(
            vec![account],
            Vec::new(),
            Vec::new(),
            vec![busy.clone(), quiet.clone()],
        )));
        let clock = Clock::tokio(START_MS);
        let env = Arc::new(AgentWatchEnv {
            polled: false,
            store: store.clone(),
            clock: clock.clone(),
            catalog,
            router: Named::new(),
            backlog: Arc::new(Backlog::new(100)),
            silence: SILENCE,
        });
        let watch = AgentWatch::new(env, Lifeline::detached()).start();

        // Heard from now and then: nothing.
        for _ in 0..4 {
            watch.do_send(AgentsHeard(vec![(agent, clock.steady_ms())]));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(committed(&store).await.is_empty(), "an agent heard from is not silent");

        // Silent for longer than the limit: one fault, on the quiet probe.
        tokio::time::sleep(SILENCE + Duration::from_secs(2)).await;
        until("a missing-data fault is committed", || async {
            !committed(&store).await.is_empty()
        })
        .await;
        let events = committed(&store).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].probe_uuid, quiet.uuid);
        assert!(!events[0].clear);
        assert!(marked(&events[0]));
        assert!(events[0]
            .data
            .message
            .contains(&format!("agent {agent} has sent nothing")));
        assert_eq!(events[0].relay, None, "not taken for the agent's own word");

        // Back: one clear, of the quiet probe only.
        watch.do_send(AgentsHeard(vec![(agent, clock.steady_ms())]));
        until("the clear is committed", || async {
            committed(&store).await.len() == 2
        })
        .await;
        tokio::time::sleep(SILENCE / 2).await;
        let events = committed(&store).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!((events[1].probe_uuid, events[1].clear), (quiet.uuid, true));
    }
}
