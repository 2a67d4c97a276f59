//! The agent's decisions, pure: which probes of the relay's list to run
//! ([`wanted`]), what to start, restart and stop when the list changes
//! ([`plan`]), and what the bounded event queue keeps when the relay is away
//! ([`Outbox`]). No actors, no I/O, no clock: the actors in `super` carry
//! these out, and the tests here need none of them.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;
use uuid::Uuid;

use crate::model::ProbeType;
use crate::probes::{Limits, ProbeConfig};

/// One probe this agent runs: what the relay's list says of it, and its
/// config parsed (checked again here: the agent trusts no list). `C` is the
/// parsed config; the plan never looks at it (tests use `()`).
#[derive(Debug, Clone)]
pub struct Wanted<C = ProbeConfig> {
    pub uuid: Uuid,
    /// The probe's account: every event names it.
    pub user: Uuid,
    pub probe_type: ProbeType,
    /// Sent with each event (`machine`), when the probe names one.
    pub machine: Option<Uuid>,
    /// The config as the list had it: what "changed" is decided on, so an
    /// edit the parsed config would not show (a field with its default
    /// written out) still restarts the probe, as an operator expects.
    pub raw_config: Value,
    pub config: C,
}

impl<C> Wanted<C> {
    /// Whether `other` is the same probe as far as running it goes: the
    /// same account, type, machine and config as written.
    pub fn same_as(&self, other: &Wanted<C>) -> bool {
        self.uuid == other.uuid
            && self.user == other.user
            && self.probe_type == other.probe_type
            && self.machine == other.machine
            && self.raw_config == other.raw_config
    }
}

/// A probe of the list this agent does not run, and why (each is logged).
#[derive(Debug, Clone, PartialEq)]
pub enum Skipped {
    /// An entry that is not a probe at all (no uuid, a user that is no uuid…).
    Malformed {
        index: usize,
        why: String,
    },
    /// `machine-up` probes are the relay's: it watches zones itself.
    MachineUp {
        uuid: Uuid,
    },
    Disabled {
        uuid: Uuid,
    },
    /// The list names another agent: this agent's `agent.uuid` and the
    /// relay it asks do not belong together.
    OtherAgent {
        uuid: Uuid,
        agent: Uuid,
    },
    /// A type this build does not know (a newer master's).
    UnknownType {
        uuid: Uuid,
        probe_type: String,
    },
    /// Its config does not parse: each wrong field, `config.<field>: why`.
    BadConfig {
        uuid: Uuid,
        errors: Vec<String>,
    },
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::Malformed { index, why } => write!(f, "probe list entry {index} is not a probe: {why}"),
            Skipped::MachineUp { uuid } => write!(f, "probe {uuid} is machine-up: the relay runs it"),
            Skipped::Disabled { uuid } => write!(f, "probe {uuid} is disabled"),
            Skipped::OtherAgent { uuid, agent } => {
                write!(
                    f,
                    "probe {uuid} belongs to agent {agent}, not this one (check agent.uuid and agent.relay_url)"
                )
            }
            Skipped::UnknownType { uuid, probe_type } => {
                write!(
                    f,
                    "probe {uuid} has type {probe_type:?}, which this agent does not know"
                )
            }
            Skipped::BadConfig { uuid, errors } => write!(f, "probe {uuid} has a bad config: {}", errors.join("; ")),
        }
    }
}

/// The relay's probe list (a JSON array of the master's probe objects) as
/// the probes this agent (`me`) runs, and the ones it skips. An error only
/// when the body is not a JSON array at all.
pub fn wanted(body: &[u8], me: Uuid, limits: Limits) -> Result<(Vec<Wanted>, Vec<Skipped>), String> {
    let entries: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| format!("the probe list is not a json array: {e}"))?;
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match one(entry, me, limits) {
            Ok(wanted) => run.push(wanted),
            Err(skip) => skipped.push(skip.unwrap_or_else(|why| Skipped::Malformed { index, why })),
        }
    }
    Ok((run, skipped))
}

/// One entry: run it, skip it, or (inner `Err`) it is no probe.
fn one(entry: &Value, me: Uuid, limits: Limits) -> Result<Wanted, Result<Skipped, String>> {
    let uuid_field = |name: &str| -> Result<Option<Uuid>, String> {
        match entry.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Uuid::parse_str(text)
                .map(Some)
                .map_err(|e| format!("{name}: invalid uuid {text:?}: {e}")),
            Some(other) => Err(format!("{name}: expected a uuid string, got {other}")),
        }
    };
    let required = |name: &str| uuid_field(name).and_then(|u| u.ok_or_else(|| format!("{name} is missing")));
    let uuid = required("uuid").map_err(Err)?;
    let user = required("user").map_err(Err)?;
    let machine = uuid_field("machine").map_err(Err)?;
    let agent = uuid_field("agent").map_err(Err)?;
    let type_name = entry
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Err("type is missing or not a string".to_string()))?;
    let Some(probe_type) = ProbeType::parse(type_name) else {
        return Err(Ok(Skipped::UnknownType {
            uuid,
            probe_type: type_name.to_string(),
        }));
    };
    if !probe_type.runs_in_agent() {
        return Err(Ok(Skipped::MachineUp { uuid }));
    }
    if entry.get("disabled").and_then(Value::as_bool).unwrap_or(false) {
        return Err(Ok(Skipped::Disabled { uuid }));
    }
    if let Some(agent) = agent.filter(|a| *a != me) {
        return Err(Ok(Skipped::OtherAgent { uuid, agent }));
    }
    let raw_config = entry.get("config").cloned().unwrap_or(Value::Null);
    let config = match crate::probes::parse(probe_type, &raw_config, limits) {
        Ok(Some(config)) => config,
        // Only machine-up has no config, and it was skipped above.
        Ok(None) => return Err(Err("a probe type without a config".into())),
        Err(errors) => {
            return Err(Ok(Skipped::BadConfig {
                uuid,
                errors: errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect(),
            }))
        }
    };
    Ok(Wanted {
        uuid,
        user,
        probe_type,
        machine,
        raw_config,
        config,
    })
}

/// What to do so that the running probes are the wanted ones.
#[derive(Debug)]
pub struct Plan<C = ProbeConfig> {
    /// Not running yet.
    pub start: Vec<Wanted<C>>,
    /// Running with another definition: stopped, then started with this one.
    pub restart: Vec<Wanted<C>>,
    /// Running, no longer wanted.
    pub stop: Vec<Uuid>,
}

impl<C> Plan<C> {
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.restart.is_empty() && self.stop.is_empty()
    }
}

/// Compares what runs with what is wanted. A probe is the same when
/// everything the agent uses of it is the same (user, type, machine, config
/// as written); an unchanged probe is left alone, whatever else changed in
/// the list.
pub fn plan<C>(running: &BTreeMap<Uuid, Wanted<C>>, wanted: Vec<Wanted<C>>) -> Plan<C> {
    let mut plan = Plan {
        start: Vec::new(),
        restart: Vec::new(),
        stop: Vec::new(),
    };
    let mut seen = std::collections::BTreeSet::new();
    for probe in wanted {
        if !seen.insert(probe.uuid) {
            // A list naming a probe twice: the first one counts.
            continue;
        }
        match running.get(&probe.uuid) {
            None => plan.start.push(probe),
            Some(old) if !old.same_as(&probe) => plan.restart.push(probe),
            Some(_) => {}
        }
    }
    plan.stop = running.keys().filter(|uuid| !seen.contains(uuid)).copied().collect();
    plan
}

/// The agent's bounded queue of events waiting for the relay. Beyond
/// `capacity` the **oldest** are dropped: when the relay comes back, what a
/// probe sees now matters more than what it saw an hour ago, and a clear
/// must not be lost behind the fault it ends.
#[derive(Debug)]
pub struct Outbox<T> {
    items: VecDeque<T>,
    capacity: usize,
    /// Dropped since the agent started, for the log and the warning.
    dropped: u64,
}

impl<T> Outbox<T> {
    pub fn new(capacity: usize) -> Outbox<T> {
        Outbox {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Queues an event; the number dropped to make room (0 or 1).
    pub fn push(&mut self, item: T) -> u64 {
        self.items.push_back(item);
        self.trim()
    }

    /// Takes up to `max` of the oldest events, to send as one batch.
    pub fn take_batch(&mut self, max: usize) -> Vec<T> {
        let n = max.min(self.items.len());
        self.items.drain(..n).collect()
    }

    /// A batch the relay did not take goes back in front, in its order;
    /// if newer events filled the queue meanwhile, the oldest go.
    /// Returns how many were dropped.
    pub fn put_back(&mut self, batch: Vec<T>) -> u64 {
        for item in batch.into_iter().rev() {
            self.items.push_front(item);
        }
        self.trim()
    }

    fn trim(&mut self) -> u64 {
        let mut dropped = 0;
        while self.items.len() > self.capacity {
            self.items.pop_front();
            dropped += 1;
        }
        self.dropped += dropped;
        dropped
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ME: &str = "0f6a1f4e-5d2b-4c1a-9e43-2b1f2a3c4d5e";
    const USER: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

    fn me() -> Uuid {
        Uuid::parse_str(ME).unwrap()
    }

    fn probe(n: u128, config: Value) -> Wanted<()> {
        Wanted {
            uuid: Uuid::from_u128(n),
            user: Uuid::parse_str(USER).unwrap(),
            probe_type: ProbeType::Cmd,
            machine: None,
            raw_config: config,
            config: (),
        }
    }

    fn running(probes: &[Wanted<()>]) -> BTreeMap<Uuid, Wanted<()>> {
        probes.iter().map(|p| (p.uuid, p.clone())).collect()
    }

    fn uuids(probes: &[Wanted<()>]) -> Vec<u128> {
        probes.iter().map(|p| p.uuid.as_u128()).collect()
    }

    #[test]
    fn a_first_list_starts_everything() {
        let plan = plan(&BTreeMap::new(), vec![probe(1, json!({})), probe(2, json!({}))]);
        assert_eq!(uuids(&plan.start), [1, 2]);
        assert!(plan.restart.is_empty() && plan.stop.is_empty());
    }

    #[test]
    fn unchanged_probes_are_left_alone() {
        let now = [probe(1, json!({"cmd": "true"})), probe(2, json!({"cmd": "false"}))];
        assert!(plan(&running(&now), now.to_vec()).is_empty());
    }

    #[test]
    fn a_changed_config_restarts_that_probe_only() {
        let now = [probe(1, json!({"cmd": "true"})), probe(2, json!({"cmd": "false"}))];
        let plan = plan(
            &running(&now),
            vec![
                probe(1, json!({"cmd": "true", "timeout": 5})),
                probe(2, json!({"cmd": "false"})),
            ],
        );
        assert_eq!(uuids(&plan.restart), [1]);
        assert_eq!(plan.restart[0].raw_config["timeout"], 5, "with the new config");
        assert!(plan.start.is_empty() && plan.stop.is_empty());
    }

    #[test]
    fn a_new_user_or_machine_restarts_too_since_events_name_them() {
        let now = [probe(1, json!({}))];
        let mut moved = probe(1, json!({}));
        moved.machine = Some(Uuid::from_u128(9));
        assert_eq!(uuids(&plan(&running(&now), vec![moved]).restart), [1]);
        let mut given = probe(1, json!({}));
        given.user = Uuid::from_u128(8);
        assert_eq!(uuids(&plan(&running(&now), vec![given]).restart), [1]);
    }

    #[test]
    fn a_removed_probe_is_stopped_and_an_empty_list_stops_all() {
        let now = [probe(1, json!({})), probe(2, json!({}))];
        let plan1 = plan(&running(&now), vec![probe(2, json!({}))]);
        assert_eq!(plan1.stop, [Uuid::from_u128(1)]);
        let all = plan(&running(&now), Vec::new());
        assert_eq!(all.stop, [Uuid::from_u128(1), Uuid::from_u128(2)]);
    }

    #[test]
    fn a_probe_listed_twice_counts_once() {
        let plan = plan(
            &BTreeMap::new(),
            vec![probe(1, json!({"a": 1})), probe(1, json!({"a": 2}))],
        );
        assert_eq!(uuids(&plan.start), [1]);
        assert_eq!(plan.start[0].raw_config["a"], 1);
    }

    fn entry(extra: Value) -> Value {
        let mut base = json!({
            "uuid": "6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11",
            "user": USER,
            "type": "cmd",
            "agent": ME,
            "machine": ME,
            "config": {"bogus": true},
            "disabled": false,
            "contacts": ["email"],
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn skipped(entries: Vec<Value>) -> Vec<Skipped> {
        let body = serde_json::to_vec(&entries).unwrap();
        let (run, skipped) = wanted(&body, me(), Limits::default()).unwrap();
        assert!(run.is_empty(), "{run:?}");
        skipped
    }

    #[test]
    fn the_list_skips_what_this_agent_does_not_run_and_says_why() {
        let probe = Uuid::parse_str("6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11").unwrap();
        let other = "11111111-2222-4333-8444-555555555555";
        let skipped = skipped(vec![
            entry(json!({"type": "machine-up", "config": null})),
            entry(json!({"disabled": true})),
            entry(json!({"agent": other})),
            entry(json!({"type": "smoke-signal"})),
            entry(json!({})),
            entry(json!({"user": "alice"})),
            json!(7),
        ]);
        assert_eq!(skipped[0], Skipped::MachineUp { uuid: probe });
        assert_eq!(skipped[1], Skipped::Disabled { uuid: probe });
        assert_eq!(
            skipped[2],
            Skipped::OtherAgent {
                uuid: probe,
                agent: Uuid::parse_str(other).unwrap()
            }
        );
        assert!(skipped[2].to_string().contains("agent.uuid"));
        assert!(matches!(&skipped[3], Skipped::UnknownType { probe_type, .. } if probe_type == "smoke-signal"));
        match &skipped[4] {
            Skipped::BadConfig { errors, .. } => assert!(!errors.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&skipped[5], Skipped::Malformed { index: 5, why } if why.contains("user")));
        assert!(matches!(&skipped[6], Skipped::Malformed { index: 6, .. }));
    }

    #[test]
    fn a_list_that_is_not_an_array_is_an_error() {
        assert!(wanted(b"{}", me(), Limits::default()).is_err());
        assert!(wanted(b"", me(), Limits::default()).is_err());
        assert!(wanted(b"[]", me(), Limits::default()).unwrap().0.is_empty());
    }

    #[test]
    fn the_outbox_drops_the_oldest_beyond_its_capacity_and_counts() {
        let mut outbox = Outbox::new(3);
        for n in 1..=3 {
            assert_eq!(outbox.push(n), 0);
        }
        assert_eq!(outbox.push(4), 1);
        assert_eq!(outbox.dropped(), 1);
        assert_eq!(outbox.take_batch(10), [2, 3, 4]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_batch_the_relay_refused_goes_back_in_front_and_the_oldest_make_room() {
        let mut outbox = Outbox::new(4);
        for n in 1..=4 {
            outbox.push(n);
        }
        let batch = outbox.take_batch(2);
        assert_eq!(batch, [1, 2]);
        // Newer events arrive while the batch is on the wire.
        outbox.push(5);
        outbox.push(6);
        assert_eq!(outbox.put_back(batch), 2, "the two oldest go");
        assert_eq!(outbox.take_batch(10), [3, 4, 5, 6]);
        assert_eq!(outbox.dropped(), 2);
    }

    #[test]
    fn an_agent_cut_off_from_its_relay_queues_at_most_its_capacity() {
        let mut outbox = Outbox::new(1000);
        for n in 0..100_000 {
            outbox.push(n);
        }
        assert_eq!(outbox.len(), 1000);
        assert_eq!(outbox.dropped(), 99_000);
        assert_eq!(outbox.take_batch(1), [99_000], "the newest are kept");
    }
}
