//! The actors, and our supervision over them (SPEC §1–§2).
//!
//! Relay side: `ExecSource`/`SimSource` → `ZoneDispatcher` → `ZoneWatcher`
//! (one per zone) → `RelayLink`; `AgentProbeCache` keeps the master's probe
//! list for the relay's agent API. Master side: `EventRouter` → `AlarmShard`
//! (one per core, on its own thread) → `AlarmActor` (one per monitor) → `NotifierPool` → `Notifier`; `ServerGuard` folds a
//! down server's faults into one incident, `MaintenanceKeeper` owns the
//! maintenance windows, `Janitor` deletes what is past its retention.
//! `HttpService` wraps each
//! HTTP server. `docs/actors.md` describes each one and draws the tree.

pub mod agent_probes;
pub mod agent_watch;
pub mod alarm;
pub mod cluster;
pub mod http_service;
pub mod janitor;
pub mod maintenance;
pub mod notifier;
pub mod relay_link;
pub mod router;
pub mod server_guard;
pub mod shard;
pub mod supervisor;
#[cfg(test)]
pub(crate) mod testkit;
pub mod zone_source;
pub mod zone_watcher;
