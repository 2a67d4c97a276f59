//! Amon: the monitoring and alarming system of a SmartOS/Triton data center,
//! rebuilt as an actor-based supervision system.
//!
//! - [`zones`]: what the platform says about zones, parsed and classified.
//! - [`actors`]: zone watchers, relay link, event router, alarm actors,
//!   notifiers, the janitor, and the supervision that restarts them.
//! - [`http`]: the Master API (with auth), the relay's admin and agent APIs,
//!   and the relay's client for the master.
//! - [`store`]: the only code that knows SQL: database threads with group
//!   commit, for the master and for the relay.
//! - [`notify`]: what a notification says and how it is delivered.
//! - [`model`]: accounts, probes, alarms, faults, events; [`rules`]: Amon's alarm rules, pure;
//!   [`catalog`]: which monitors an event concerns, pure; [`progress`]: the
//!   router's watermark over routed batches, pure; [`flood`]: the flood
//!   guard's server incidents, pure; [`silence`]: which agents are silent
//!   (missing data), pure; [`activity`]: the master's last hour, per minute,
//!   in memory, for the web UI's chart.
//! - [`config`], [`clock`], [`telemetry`], [`metrics`]: settings, time, logs, counters.
//! - [`agent`]: `amon agent`, one supervised actor per probe, its queue to the relay.
//! - [`daemon`]: builds the supervision tree for each process; [`cli`]: the command line.
#![forbid(unsafe_code)]

pub mod activity;
pub mod actors;
pub mod agent;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod flood;
#[cfg(test)]
mod fuzz_json;
pub mod http;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod probes;
pub mod progress;
pub mod rules;
pub mod silence;
pub mod store;
pub mod telemetry;

/// The build's semantic version and the commit it was built from
/// (`0.1.0 (8a581b8)`; `unknown` outside a git checkout): what
/// `amon --version` prints and the daemon logs at start.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("AMON_COMMIT"), ")");

/// The commit the build was made from (see `build.rs`).
pub const COMMIT: &str = env!("AMON_COMMIT");
pub mod zones;
