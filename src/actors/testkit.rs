//! What the alarm actor's and the shard's paused-time tests share: an
//! alarm environment on an in-memory store, a machine-up probe, its probe
//! events, and the ticker that keeps paused time from leaping.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::alarm::AlarmEnv;
use super::maintenance::Maintenance;
use super::supervisor::Named;
use crate::clock::Clock;
use crate::model::{Probe, ProbeEvent, ProbeEventData};
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
    })
}

/// An ungrouped machine-up probe of `user`, mailing its account.
pub fn probe(user: Uuid) -> Arc<Probe> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "uuid": Uuid::new_v4(), "user": user, "type": "machine-up", "name": null,
            "agent": null, "machine": null, "contacts": ["email"], "group": null,
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

/// Paused time jumps to the next timer whenever the runtime waits, also
/// for the store thread's answers: a ticker keeps those jumps to 10 ms, so
/// a wait never runs through a hold or an idle timer.
pub fn tick() {
    actix_rt::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
        }
    });
}
