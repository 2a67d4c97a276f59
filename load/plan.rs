//! Scenarios as plans: every zone transition and fault the run will cause,
//! at its offset from the start, and the notifications that must follow.
//! Pure and deterministic for a seed, so what a scenario expects is decided
//! (and unit-tested) before anything runs; `run.rs` carries a plan out.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::workload::Fleet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Machines go down and up at `--rate` events/s; every other one stays
    /// down past the hold (a fault and a clear each), the rest come back
    /// within it (nothing).
    Churn,
    /// Every zone reboots (down, up within the hold): no notification.
    RebootStorm,
    /// `--servers-down` whole servers go down: one notification per contact
    /// per server, listing that contact's machines, and no per-machine one.
    ServerDown,
    /// One zone per server bounces down and up, each time within the hold:
    /// no notification.
    Flap,
    /// Churn, with the master SIGKILLed and restarted halfway: nothing
    /// acknowledged lost, nothing decided twice (a delivery in flight at the
    /// kill is sent again with its Message-ID: at least once, SPEC §7).
    MasterRestart,
    /// Churn, with the SMTP sink (or webhook) refusing for the middle third:
    /// every notification still arrives, once.
    SmtpOutage,
    /// Every zone goes down and stays down (one fault each): the memory per
    /// open alarm, measured live once they are all open.
    OpenAlarms,
}

/// How a `server-down` server goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownMode {
    /// Its zones all go down; its relay keeps running (the burst detector).
    Zones,
    /// Its zones go down, then its relay stops cleanly and announces it
    /// (needs one relay per server).
    Announced,
    /// Its relay is SIGKILLed and says nothing: heartbeats stop (needs one
    /// relay per server).
    Silent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write a zone's transition line (`up`: ready → running; else running
    /// → shutting_down).
    Zone { zone: usize, up: bool },
    /// SIGKILL the master and start it again.
    RestartMaster,
    /// Make the notification sink refuse (true) or accept (false).
    SinkRefusing(bool),
    /// SIGTERM a relay (it announces its shutdown).
    TerminateRelay(usize),
    /// SIGKILL a relay.
    KillRelay(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// What must arrive once the plan has run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Expected {
    /// Zone transition lines written (each a real transition).
    pub events: u64,
    pub faults: u64,
    pub clears: u64,
    /// Server-down notifications: one per (server, contact).
    pub server_down: u64,
    /// The servers that go down, by index.
    #[serde(skip)]
    pub servers_down: Vec<usize>,
}

impl Expected {
    pub fn notifications(&self) -> u64 {
        self.faults + self.clears + self.server_down
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub expected: Expected,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub scenario: Scenario,
    /// Zone transitions per second.
    pub rate: f64,
    pub duration: Duration,
    pub hold: Duration,
    pub servers_down: usize,
    pub down_mode: DownMode,
    pub seed: u64,
}

/// How long a fault that must be notified stays down: past the hold with
/// room for the notification to be decided before the clear.
fn long_down(hold: Duration) -> Duration {
    hold + hold.max(Duration::from_secs(2))
}

/// How long a reboot takes: well within the hold.
fn short_down(hold: Duration) -> Duration {
    hold / 3
}

pub fn plan(fleet: &Fleet, o: &PlanOptions) -> Plan {
    let mut steps = Vec::new();
    let mut expected = Expected::default();
    let spacing = |events_per_sec: f64| Duration::from_secs_f64(1.0 / events_per_sec.max(0.001));
    match o.scenario {
        Scenario::Churn | Scenario::MasterRestart | Scenario::SmtpOutage => {
            churn(fleet, o, &mut steps, &mut expected);
            let d = o.duration;
            match o.scenario {
                Scenario::MasterRestart => steps.push(Step {
                    at: d / 2,
                    action: Action::RestartMaster,
                }),
                Scenario::SmtpOutage => {
                    steps.push(Step {
                        at: d / 3,
                        action: Action::SinkRefusing(true),
                    });
                    steps.push(Step {
                        at: d * 2 / 3,
                        action: Action::SinkRefusing(false),
                    });
                }
                _ => {}
            }
        }
        Scenario::RebootStorm => {
            // Every zone once, spread over the duration at the rate asked
            // (two events per reboot), in a shuffled order.
            let gap = spacing(o.rate / 2.0);
            for (i, zone) in shuffled(fleet, o.seed).into_iter().enumerate() {
                outage(&mut steps, &mut expected, zone, gap * i as u32, short_down(o.hold));
            }
        }
        Scenario::Flap => {
            // One zone per server, down and up every `period` for the duration.
            let period = short_down(o.hold) * 2;
            let mut at = Duration::ZERO;
            while at < o.duration {
                for s in 0..fleet.servers.len() {
                    outage(
                        &mut steps,
                        &mut expected,
                        fleet.zones_of(s).start,
                        at,
                        short_down(o.hold),
                    );
                }
                at += period;
            }
        }
        Scenario::ServerDown => {
            let k = o.servers_down.min(fleet.servers.len());
            for s in 0..k {
                let zones = fleet.zones_of(s);
                // A server's zones stop over about a second, as zoneadmd
                // halts them one after another.
                let gap = Duration::from_secs(1) / zones.len().max(1) as u32;
                if o.down_mode != DownMode::Silent {
                    for (i, zone) in zones.clone().enumerate() {
                        steps.push(Step {
                            at: gap * i as u32,
                            action: Action::Zone { zone, up: false },
                        });
                        expected.events += 1;
                    }
                }
                match o.down_mode {
                    DownMode::Zones => {}
                    DownMode::Announced => steps.push(Step {
                        at: Duration::from_millis(1500),
                        action: Action::TerminateRelay(fleet.servers[s].relay),
                    }),
                    DownMode::Silent => steps.push(Step {
                        at: Duration::ZERO,
                        action: Action::KillRelay(fleet.servers[s].relay),
                    }),
                }
                let owners: std::collections::BTreeSet<usize> = zones.map(|z| fleet.zones[z].owner).collect();
                expected.server_down += owners.len() as u64;
                expected.servers_down.push(s);
            }
        }
        Scenario::OpenAlarms => {
            let zones = shuffled(fleet, o.seed);
            let gap = spacing(o.rate);
            for (i, &zone) in zones.iter().enumerate() {
                steps.push(Step {
                    at: gap * i as u32,
                    action: Action::Zone { zone, up: false },
                });
            }
            expected.events = zones.len() as u64;
            expected.faults = zones.len() as u64;
        }
    }
    steps.sort_by_key(|s| s.at);
    Plan { steps, expected }
}

/// Every zone once, in an order fixed by the seed.
fn shuffled(fleet: &Fleet, seed: u64) -> Vec<usize> {
    let mut zones: Vec<usize> = (0..fleet.zones.len()).collect();
    zones.shuffle(&mut StdRng::seed_from_u64(seed));
    zones
}

/// A zone goes down at `at` and comes back `down_for` later: two events.
fn outage(steps: &mut Vec<Step>, expected: &mut Expected, zone: usize, at: Duration, down_for: Duration) {
    steps.push(Step {
        at,
        action: Action::Zone { zone, up: false },
    });
    steps.push(Step {
        at: at + down_for,
        action: Action::Zone { zone, up: true },
    });
    expected.events += 2;
}

/// Episodes start every 2/rate seconds (a down and an up each) until the
/// duration; every other one is long. A zone is never reused while its
/// previous episode runs; with no zone free, the slot is skipped.
fn churn(fleet: &Fleet, o: &PlanOptions, steps: &mut Vec<Step>, expected: &mut Expected) {
    let mut free: VecDeque<(usize, Duration)> = shuffled(fleet, o.seed)
        .into_iter()
        .map(|z| (z, Duration::ZERO))
        .collect();
    let gap = Duration::from_secs_f64(2.0 / o.rate.max(0.001));
    let mut at = Duration::ZERO;
    let mut episode = 0u64;
    while at < o.duration {
        let pick = (0..free.len()).find_map(|_| {
            let (zone, busy_until) = free.pop_front()?;
            if busy_until <= at {
                Some(zone)
            } else {
                free.push_back((zone, busy_until));
                None
            }
        });
        if let Some(zone) = pick {
            let long = episode % 2 == 0;
            let down_for = if long { long_down(o.hold) } else { short_down(o.hold) };
            outage(steps, expected, zone, at, down_for);
            if long {
                expected.faults += 1;
                expected.clears += 1;
            }
            // Free again once its alarm has closed and been notified.
            free.push_back((zone, at + down_for + o.hold + Duration::from_secs(1)));
            episode += 1;
        }
        at += gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(scenario: Scenario) -> PlanOptions {
        PlanOptions {
            scenario,
            rate: 100.0,
            duration: Duration::from_secs(10),
            hold: Duration::from_secs(2),
            servers_down: 2,
            down_mode: DownMode::Zones,
            seed: 1,
        }
    }

    fn steps_matching(plan: &Plan, what: impl Fn(&Action) -> bool) -> usize {
        plan.steps.iter().filter(|s| what(&s.action)).count()
    }

    /// Every zone's lines alternate down, up, down…, starting from running:
    /// each line is a real transition.
    fn assert_alternating(fleet: &Fleet, plan: &Plan) {
        let mut up = vec![true; fleet.zones.len()];
        for step in &plan.steps {
            if let Action::Zone { zone, up: to } = step.action {
                assert_ne!(up[zone], to, "zone {zone} repeats its state at {:?}", step.at);
                up[zone] = to;
            }
        }
    }

    #[test]
    fn churn_notifies_every_other_episode_twice_and_never_reuses_a_busy_zone() {
        let fleet = Fleet::new(1, 4, 200, 3, 2);
        let plan = plan(&fleet, &options(Scenario::Churn));
        assert_alternating(&fleet, &plan);
        // 100 events/s for 10 s: 500 episodes of two events.
        assert_eq!(plan.expected.events, 1000);
        assert_eq!(plan.expected.faults, 250);
        assert_eq!(plan.expected.clears, 250);
        assert!(plan.steps.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn churn_with_too_few_zones_skips_slots_rather_than_reusing_a_busy_zone() {
        let fleet = Fleet::new(1, 1, 5, 1, 1);
        let plan = plan(&fleet, &options(Scenario::Churn));
        assert_alternating(&fleet, &plan);
        assert!(plan.expected.events < 1000);
    }

    #[test]
    fn a_reboot_storm_expects_nothing_and_reboots_every_zone_within_the_hold() {
        let fleet = Fleet::new(1, 3, 20, 3, 1);
        let plan = plan(&fleet, &options(Scenario::RebootStorm));
        assert_alternating(&fleet, &plan);
        assert_eq!(plan.expected.notifications(), 0);
        assert_eq!(plan.expected.events, 120);
    }

    #[test]
    fn server_down_expects_one_notification_per_contact_per_server() {
        let fleet = Fleet::new(1, 5, 30, 3, 5);
        let plan = plan(&fleet, &options(Scenario::ServerDown));
        assert_eq!(plan.expected.server_down, 2 * 3);
        assert_eq!(plan.expected.events, 60);
        assert_eq!(plan.expected.faults, 0);
        let silent = super::plan(
            &fleet,
            &PlanOptions {
                down_mode: DownMode::Silent,
                ..options(Scenario::ServerDown)
            },
        );
        assert_eq!(silent.expected.events, 0);
        assert_eq!(steps_matching(&silent, |a| matches!(a, Action::KillRelay(_))), 2);
    }

    #[test]
    fn master_restart_and_smtp_outage_are_churn_with_an_interruption() {
        let fleet = Fleet::new(1, 4, 50, 3, 2);
        let restart = plan(&fleet, &options(Scenario::MasterRestart));
        assert_eq!(restart.expected, plan(&fleet, &options(Scenario::Churn)).expected);
        assert!(restart.steps.iter().any(|s| s.action == Action::RestartMaster));
        let outage = plan(&fleet, &options(Scenario::SmtpOutage));
        assert_eq!(steps_matching(&outage, |a| matches!(a, Action::SinkRefusing(_))), 2);
    }

    #[test]
    fn flap_bounces_one_zone_per_server_within_the_hold() {
        let fleet = Fleet::new(1, 4, 10, 1, 1);
        let plan = plan(&fleet, &options(Scenario::Flap));
        assert_alternating(&fleet, &plan);
        assert_eq!(plan.expected.notifications(), 0);
        let zones: std::collections::BTreeSet<usize> = plan
            .steps
            .iter()
            .filter_map(|s| match s.action {
                Action::Zone { zone, .. } => Some(zone),
                _ => None,
            })
            .collect();
        assert_eq!(zones.len(), 4);
    }

    #[test]
    fn open_alarms_takes_every_zone_down_once() {
        let fleet = Fleet::new(1, 2, 10, 1, 1);
        let plan = plan(&fleet, &options(Scenario::OpenAlarms));
        assert_eq!(
            (plan.expected.events, plan.expected.faults, plan.expected.clears),
            (20, 20, 0)
        );
    }
}
