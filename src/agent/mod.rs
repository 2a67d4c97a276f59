//! `amon agent`: runs an agent's probes (every type but `machine-up`) in a
//! zone or a global zone and sends what they see to its relay.
//!
//! Three actors under the `agent` supervisor (see `docs/actors.md`):
//! [`sender::EventSender`] owns the bounded queue of events for the relay's
//! `POST /events` and retries while the relay is away;
//! [`probes::ProbeSupervisor`] runs one [`probes::ProbeActor`] per probe and
//! restarts a failed one with backoff; [`poller::ProbePoller`] asks the relay
//! every `agent.poll` whether the probe list changed (`HEAD /agentprobes`,
//! `Content-MD5`) and hands the list to the supervisor. Decisions (which
//! probes, what to start, restart or stop, what the queue drops) are
//! [`plan`], pure.
//!
//! **Architecture Invariant:** the agent never talks to the master: its
//! relay stamps, spools and forwards its events, and its polls are what
//! tells the master (through the relay's heartbeat) that it lives.

pub mod plan;
pub mod poller;
pub mod probes;
pub mod sender;

use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use crate::actors::supervisor::{ChildSpec, Named, Restart, RestartPolicy, Supervisor};
use crate::http::client::MasterClient;
use crate::probes::Limits;

/// What the agent's tree is built from (again on every restart of it).
#[derive(Clone)]
pub struct AgentParts {
    /// Whose probes: the zone's uuid, or the compute node's.
    pub uuid: Uuid,
    pub relay_url: String,
    pub poll: Duration,
    pub queue: usize,
    pub limits: Limits,
}

impl AgentParts {
    /// The `agent` supervisor and its children, in start order: the sender
    /// first (it stops last, so probes' last events can still go), then the
    /// probe supervisor, then the poller that feeds it.
    pub fn into_spec(self) -> ChildSpec {
        ChildSpec::new("agent", Restart::Permanent, move |lifeline| {
            let sender = Named::<sender::EventSender>::new();
            let probes = Named::<probes::ProbeSupervisor>::new();
            // One client for the relay: its connections are reused by the
            // poller and the sender alike (both on this arbiter).
            let client = Rc::new(MasterClient::new(&self.relay_url, None));
            let parts = self.clone();
            Supervisor::new("agent", RestartPolicy::default())
                .child(ChildSpec::new("event-sender", Restart::Permanent, {
                    let (sender, client, queue) = (sender.clone(), client.clone(), parts.queue);
                    move |lifeline| {
                        let addr = sender::EventSender::new(client.clone(), queue, lifeline).start();
                        sender.set(addr.clone());
                        addr.recipient()
                    }
                }))
                .child(ChildSpec::new("probes", Restart::Permanent, {
                    let (probes, sender) = (probes.clone(), sender.clone());
                    move |lifeline| {
                        let addr = probes::ProbeSupervisor::new(sender.clone(), lifeline).start();
                        probes.set(addr.clone());
                        addr.recipient()
                    }
                }))
                .child(ChildSpec::new("probe-poller", Restart::Permanent, {
                    let probes = probes.clone();
                    move |lifeline| {
                        poller::ProbePoller::new(
                            client.clone(),
                            parts.uuid,
                            parts.poll,
                            parts.limits,
                            probes.clone(),
                            lifeline,
                        )
                        .start()
                        .recipient()
                    }
                }))
                .with_lifeline(lifeline)
                .start()
                .recipient()
        })
    }
}
