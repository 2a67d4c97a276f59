//! `ProbePoller`: every `agent.poll` asks the relay `HEAD /agentprobes` and,
//! when the `Content-MD5` differs from the list it has (or it has none),
//! `GET`s the list, keeps what this agent runs ([`super::plan::wanted`]; each
//! probe skipped is logged once per list) and hands it to the probe
//! supervisor. After every poll it hands the list again, changed or not, so a
//! restarted supervisor is running its probes again within one poll.
//!
//! A relay that cannot be reached, or that has no list yet (`503`), changes
//! nothing: the probes run on with the list they have. Every poll is also the
//! agent's sign of life: the relay reports it to the master.

use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::plan::{wanted, Wanted};
use super::probes::{ProbeSupervisor, SetProbes};
use crate::actors::supervisor::{Lifeline, Named, Stop};
use crate::http::client::MasterClient;
use crate::probes::Limits;

pub struct ProbePoller {
    client: Rc<MasterClient>,
    /// This agent: the list's probes for another are skipped.
    agent: Uuid,
    poll: Duration,
    limits: Limits,
    probes: Named<ProbeSupervisor>,
    /// The `Content-MD5` of the list `wanted` came from.
    known: Option<String>,
    wanted: Vec<Wanted>,
    /// A poll is on the wire: the next tick waits for the one after.
    polling: bool,
    /// The last poll failed (so the next failure is not logged as news).
    failing: bool,
    lifeline: Lifeline,
}

impl ProbePoller {
    pub fn new(
        client: Rc<MasterClient>,
        agent: Uuid,
        poll: Duration,
        limits: Limits,
        probes: Named<ProbeSupervisor>,
        lifeline: Lifeline,
    ) -> ProbePoller {
        ProbePoller {
            client,
            agent,
            poll,
            limits,
            probes,
            known: None,
            wanted: Vec::new(),
            polling: false,
            failing: false,
            lifeline,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            return;
        }
        self.polling = true;
        let client = self.client.clone();
        let (agent, known) = (self.agent, self.known.clone());
        ctx.spawn(
            async move { client.agent_probes_if_changed(agent, known).await }
            .into_actor(self)
            .map(|result, act, _| {
                act.polling = false;
                match result {
                    Ok(None) => {
                        act.recovered();
                    }
                    Ok(Some(list)) => {
                        act.recovered();
                        match wanted(&list.body, act.agent, act.limits) {
                            Ok((run, skipped)) => {
                                for skip in &skipped {
                                    tracing::warn!(reason = %skip, "probe skipped");
                                }
                                tracing::info!(
                                    content_md5 = %list.content_md5,
                                    probes = run.len(),
                                    skipped = skipped.len(),
                                    "probe list updated"
                                );
                                act.wanted = run;
                                act.known = Some(list.content_md5);
                            }
                            Err(e) => tracing::error!(error = %e, "relay sent an unusable probe list; keeping the running probes"),
                        }
                    }
                    Err(e) => {
                        if act.failing {
                            tracing::debug!(error = %e, "relay still not answering the probe list poll");
                        } else {
                            tracing::warn!(error = %e, "cannot poll the relay for the probe list; probes run on as they are");
                        }
                        act.failing = true;
                        // Until it has a first list, an agent has nothing to
                        // hand on (and must not stop what runs).
                        if act.known.is_none() {
                            return;
                        }
                    }
                }
                if act.known.is_some() {
                    match act.probes.get() {
                        Some(probes) => probes.do_send(SetProbes(act.wanted.clone())),
                        None => tracing::debug!("probe supervisor restarting; the next poll hands it the list"),
                    }
                }
            }),
        );
    }

    fn recovered(&mut self) {
        if self.failing {
            tracing::info!("relay answers the probe list poll again");
        }
        self.failing = false;
    }
}

impl Actor for ProbePoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.poll(ctx);
        ctx.run_interval(self.poll, |act, ctx| act.poll(ctx));
    }
}

impl Handler<Stop> for ProbePoller {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}
