//! What the paused-time tests of the alarm actor, the shard and the flood
//! guard share (and the flood guard's unit tests, its probes): an
//! alarm environment on an in-memory store, a machine-up probe, its probe
//! events, and a wait for a condition. (Paused time stands still while the
//! store works: see `answer` in `src/store/db.rs`.)

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::alarm::AlarmEnv;
use super::maintenance::Maintenance;
use super::supervisor::Named;
use crate::clock::Clock;
use crate::model::{Account, MachineEvent, Probe, ProbeEvent, ProbeEventData, ProbeGroup};
use crate::store::Store;

/// Every event's time and the clock's start.
pub const START_MS: i64 = 1_000_000;

/// An environment with no notifier and no flood guard running (so
/// notifications stay in the outbox), a burst window of 0.
pub fn env(store: &Store, hold: Duration, idle_after: Duration) -> Arc<AlarmEnv> {
    Arc::new(AlarmEnv {
        store: store.clone(),
        clock: Clock::tokio(START_MS),
        notifier: Named::new(),
        guard: Named::new(),
        maintenance: Maintenance::default(),
        hold,
        burst_window: Duration::ZERO,
        datacenter: "test".into(),
        master_url: "http://127.0.0.1".into(),
        idle_after,
        agent_watch: Named::new(),
    })
}

/// An ungrouped machine-up probe of `user`, mailing its account.
pub fn probe(user: Uuid) -> Arc<Probe> {
    machine_probe(user, None, &["email"], None)
}

/// A machine-up probe of `user` on `machine`, telling `contacts`, in
/// `group` if one is given.
pub fn machine_probe(user: Uuid, machine: Option<Uuid>, contacts: &[&str], group: Option<Uuid>) -> Arc<Probe> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "uuid": Uuid::new_v4(), "user": user, "type": "machine-up", "name": null,
            "agent": null, "machine": machine, "contacts": contacts, "group": group,
            "groupEvents": true, "disabled": false,
        }))
        .unwrap(),
    )
}

/// A fault (or, with `clear`, its clear) of `probe`.
pub fn probe_event(probe: &Probe, clear: bool) -> ProbeEvent {
    ProbeEvent {
        v: 1,
        user: probe.user,
        probe_uuid: probe.uuid,
        clear,
        data: ProbeEventData {
            message: if clear { "up" } else { "down" }.into(),
            value: None,
            details: None,
        },
        machine: None,
        uuid: Uuid::new_v4(),
        time: START_MS,
        agent: None,
        agent_alias: None,
        relay: None,
    }
}

/// An account with no attributes; an `operator`'s probes may watch any
/// machine.
pub fn account(login: &str, operator: bool) -> Account {
    Account {
        uuid: Uuid::new_v4(),
        login: login.into(),
        email: format!("{login}@example.com"),
        operator,
        attributes: Default::default(),
    }
}

/// An enabled probe group of `user`, mailing its account, with no hold or
/// reminder of its own.
pub fn group(user: Uuid) -> ProbeGroup {
    ProbeGroup {
        uuid: Uuid::new_v4(),
        name: Some("web".into()),
        user,
        contacts: vec!["email".into()],
        disabled: false,
        hold: None,
        renotify: None,
    }
}

/// `machine` on `server` going down (or, with `up`, coming back), as its
/// relay reports it, naming its owner if the relay knows it.
pub fn machine_event(machine: Uuid, server: Uuid, up: bool, owner: Option<Uuid>) -> MachineEvent {
    MachineEvent {
        v: 1,
        uuid: Uuid::new_v4(),
        time: START_MS,
        relay: server,
        machine,
        alias: Some("web0".into()),
        owner,
        server,
        old_state: Some(if up { "stopped" } else { "running" }.into()),
        new_state: if up { "running" } else { "stopped" }.into(),
        up,
    }
}

/// Waits (in paused time) until `check` holds.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}
