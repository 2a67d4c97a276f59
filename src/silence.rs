//! Missing data, decided: which agents have been silent for longer than
//! `notify.agent_silence` while they have probes to run, and which silent
//! ones are back. Pure: "now" is an argument (steady milliseconds, as the
//! flood guard's), the actor `actors::agent_watch` carries the verdicts out
//! as fault and clear events on the agent's probes.
//!
//! An agent is heard from when an event of its probes arrives, or when its
//! relay's heartbeat says it polled (`ServerEvent::agents`). After a master
//! start every agent gets a full `agent_silence` of grace: nothing survives
//! a restart but the faults silence had opened, which the actor reads back
//! from the open alarms ([`AgentSilence::restore`]) so that their clear is
//! still sent when the agent is heard from again. Only what silence opened
//! is ever cleared.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use crate::model::EpochMs;

/// What to do about one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The agent is silent: fault these probes of it (the ones not faulted
    /// yet), saying for how long nothing came.
    Silent {
        agent: Uuid,
        probes: Vec<Uuid>,
        silent_ms: EpochMs,
    },
    /// The agent was heard from again: clear what its silence faulted.
    Back { agent: Uuid, probes: Vec<Uuid> },
}

#[derive(Debug, Default)]
struct Opened {
    /// Faulted by this silence: cleared when it ends.
    probes: BTreeSet<Uuid>,
    /// Decided but not faulted ([`AgentSilence::forget`]): neither faulted
    /// again nor cleared while this silence lasts.
    passed: BTreeSet<Uuid>,
    /// When the silence was declared: only a contact after it ends it.
    at: EpochMs,
}

#[derive(Debug)]
pub struct AgentSilence {
    limit_ms: EpochMs,
    /// The master's start: no agent is silent before `limit` after it.
    started_ms: EpochMs,
    /// Last contact per agent.
    heard: HashMap<Uuid, EpochMs>,
    /// Agents whose silence has faulted probes, not yet cleared.
    opened: BTreeMap<Uuid, Opened>,
}

impl AgentSilence {
    pub fn new(limit: std::time::Duration, now: EpochMs) -> AgentSilence {
        AgentSilence {
            limit_ms: limit.as_millis().min(i64::MAX as u128) as EpochMs,
            started_ms: now,
            heard: HashMap::new(),
            opened: BTreeMap::new(),
        }
    }

    /// The agent was heard from at `at` (a heartbeat's report may be older
    /// than one already known: the newest counts).
    pub fn heard(&mut self, agent: Uuid, at: EpochMs) {
        let last = self.heard.entry(agent).or_insert(at);
        *last = (*last).max(at);
    }

    /// A fault silence opened before a restart, found in an open alarm: it
    /// is cleared when the agent is next heard from (after `now`).
    pub fn restore(&mut self, agent: Uuid, probe: Uuid, now: EpochMs) {
        self.opened
            .entry(agent)
            .or_insert_with(|| Opened {
                at: now,
                ..Opened::default()
            })
            .probes
            .insert(probe);
    }

    /// A fault `check` decided that was not raised after all (the probe's
    /// alarm already had a fault of its own): nothing to clear later.
    pub fn forget(&mut self, agent: Uuid, probe: Uuid) {
        if let Some(opened) = self.opened.get_mut(&agent) {
            if opened.probes.remove(&probe) {
                opened.passed.insert(probe);
            }
        }
    }

    /// Decides, given each agent's enabled probes as they are now.
    pub fn check(&mut self, watched: &BTreeMap<Uuid, Vec<Uuid>>, now: EpochMs) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let heard = &self.heard;
        let back: Vec<Uuid> = self
            .opened
            .iter()
            .filter(|(agent, opened)| heard.get(*agent).is_some_and(|&at| at > opened.at))
            .map(|(agent, _)| *agent)
            .collect();
        for agent in back {
            if let Some(opened) = self.opened.remove(&agent).filter(|o| !o.probes.is_empty()) {
                verdicts.push(Verdict::Back {
                    agent,
                    probes: opened.probes.into_iter().collect(),
                });
            }
        }
        for (agent, probes) in watched {
            if probes.is_empty() {
                continue;
            }
            let last = self
                .heard
                .get(agent)
                .copied()
                .unwrap_or(self.started_ms)
                .max(self.started_ms);
            let silent_ms = now - last;
            if silent_ms < self.limit_ms {
                continue;
            }
            let opened = self.opened.entry(*agent).or_insert_with(|| Opened {
                at: now,
                ..Opened::default()
            });
            // A probe added to a silent agent is faulted too; one already
            // decided is not again.
            let fresh: Vec<Uuid> = probes
                .iter()
                .filter(|p| !opened.probes.contains(p) && !opened.passed.contains(p))
                .copied()
                .collect();
            if fresh.is_empty() {
                continue;
            }
            opened.probes.extend(fresh.iter().copied());
            verdicts.push(Verdict::Silent {
                agent: *agent,
                probes: fresh,
                silent_ms,
            });
        }
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECOND: EpochMs = 1000;
    const LIMIT: Duration = Duration::from_secs(300);
    const T0: EpochMs = 1_000_000;

    fn agent(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn watched(pairs: &[(u128, &[u128])]) -> BTreeMap<Uuid, Vec<Uuid>> {
        pairs
            .iter()
            .map(|(a, probes)| (agent(*a), probes.iter().map(|p| Uuid::from_u128(*p)).collect()))
            .collect()
    }

    fn probes(n: &[u128]) -> Vec<Uuid> {
        n.iter().map(|p| Uuid::from_u128(*p)).collect()
    }

    #[test]
    fn an_agent_heard_within_the_limit_is_not_silent() {
        let mut s = AgentSilence::new(LIMIT, T0);
        let w = watched(&[(1, &[10])]);
        s.heard(agent(1), T0 + 100 * SECOND);
        assert!(s.check(&w, T0 + 399 * SECOND).is_empty());
    }

    #[test]
    fn a_silent_agent_faults_its_probes_once() {
        let mut s = AgentSilence::new(LIMIT, T0);
        let w = watched(&[(1, &[10, 11])]);
        s.heard(agent(1), T0);
        assert!(s.check(&w, T0 + 299 * SECOND).is_empty());
        assert_eq!(
            s.check(&w, T0 + 300 * SECOND),
            [Verdict::Silent {
                agent: agent(1),
                probes: probes(&[10, 11]),
                silent_ms: 300 * SECOND
            }]
        );
        for later in 301..400 {
            assert!(s.check(&w, T0 + later * SECOND).is_empty(), "never twice");
        }
    }

    #[test]
    fn a_silent_agent_heard_again_is_cleared_once_and_can_fall_silent_again() {
        let mut s = AgentSilence::new(LIMIT, T0);
        let w = watched(&[(1, &[10])]);
        assert_eq!(s.check(&w, T0 + 300 * SECOND).len(), 1);
        s.heard(agent(1), T0 + 310 * SECOND);
        assert_eq!(
            s.check(&w, T0 + 311 * SECOND),
            [Verdict::Back {
                agent: agent(1),
                probes: probes(&[10])
            }]
        );
        assert!(s.check(&w, T0 + 312 * SECOND).is_empty(), "cleared once");
        assert!(s.check(&w, T0 + 609 * SECOND).is_empty());
        assert_eq!(s.check(&w, T0 + 610 * SECOND).len(), 1, "silent again");
    }

    #[test]
    fn a_report_of_a_contact_before_the_silence_does_not_end_it() {
        let mut s = AgentSilence::new(LIMIT, T0);
        let w = watched(&[(1, &[10])]);
        assert_eq!(s.check(&w, T0 + 300 * SECOND).len(), 1);
        // A late heartbeat says the agent polled long ago.
        s.heard(agent(1), T0 + 10 * SECOND);
        assert!(s.check(&w, T0 + 301 * SECOND).is_empty());
    }

    #[test]
    fn after_a_master_start_every_agent_has_a_full_grace() {
        let mut s = AgentSilence::new(LIMIT, T0);
        let w = watched(&[(1, &[10]), (2, &[20])]);
        // Agent 2 was heard from (a replayed heartbeat) long before the start.
        s.heard(agent(2), T0 - 3600 * SECOND);
        assert!(s.check(&w, T0 + 299 * SECOND).is_empty());
        assert_eq!(s.check(&w, T0 + 300 * SECOND).len(), 2);
    }

    #[test]
    fn agents_without_enabled_probes_never_alarm() {
        let mut s = AgentSilence::new(LIMIT, T0);
        assert!(s.check(&watched(&[(1, &[])]), T0 + 3600 * SECOND).is_empty());
        assert!(s.check(&BTreeMap::new(), T0 + 3600 * SECOND).is_empty());
    }

    #[test]
    fn a_probe_added_to_a_silent_agent_is_faulted_alone() {
        let mut s = AgentSilence::new(LIMIT, T0);
        assert_eq!(s.check(&watched(&[(1, &[10])]), T0 + 300 * SECOND).len(), 1);
        assert_eq!(
            s.check(&watched(&[(1, &[10, 11])]), T0 + 301 * SECOND),
            [Verdict::Silent {
                agent: agent(1),
                probes: probes(&[11]),
                silent_ms: 301 * SECOND
            }]
        );
        s.heard(agent(1), T0 + 302 * SECOND);
        assert_eq!(
            s.check(&watched(&[(1, &[10, 11])]), T0 + 303 * SECOND),
            [Verdict::Back {
                agent: agent(1),
                probes: probes(&[10, 11])
            }]
        );
    }

    #[test]
    fn what_silence_opened_before_a_restart_is_cleared_when_the_agent_is_back() {
        let mut s = AgentSilence::new(LIMIT, T0);
        s.restore(agent(1), Uuid::from_u128(10), T0);
        let w = watched(&[(1, &[10])]);
        assert!(s.check(&w, T0 + SECOND).is_empty(), "still silent: nothing yet");
        s.heard(agent(1), T0 + 2 * SECOND);
        assert_eq!(
            s.check(&w, T0 + 3 * SECOND),
            [Verdict::Back {
                agent: agent(1),
                probes: probes(&[10])
            }]
        );
    }

    #[test]
    fn a_fault_not_raised_is_not_cleared_nor_raised_again() {
        let mut s = AgentSilence::new(LIMIT, T0);
        let w = watched(&[(1, &[10, 11])]);
        assert_eq!(s.check(&w, T0 + 300 * SECOND).len(), 1);
        s.forget(agent(1), Uuid::from_u128(10));
        assert!(
            s.check(&w, T0 + 301 * SECOND).is_empty(),
            "not raised again while silent"
        );
        s.heard(agent(1), T0 + 302 * SECOND);
        assert_eq!(
            s.check(&w, T0 + 303 * SECOND),
            [Verdict::Back {
                agent: agent(1),
                probes: probes(&[11])
            }]
        );
    }

    #[test]
    fn a_restored_silence_that_lasts_is_not_faulted_again() {
        let mut s = AgentSilence::new(LIMIT, T0);
        s.restore(agent(1), Uuid::from_u128(10), T0);
        assert!(s.check(&watched(&[(1, &[10])]), T0 + 600 * SECOND).is_empty());
    }
}
