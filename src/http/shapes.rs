//! The JSON bodies of the status routes whose content actors know: the
//! master's `GET /servers` (what the flood guard knows of each server,
//! [`ServerView`]) and the relay's `GET /state` (the zone dispatcher's
//! [`DispatcherState`], the relay link's [`LinkState`] and the supervisor's
//! [`ChildStatus`]). The actors fill them in and answer them to the
//! handlers; the wire shape (names, casing, what is left out) is decided
//! here, with the other wire formats.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::model::EpochMs;
use crate::notify::IncidentReason;

/// A server as the flood guard knows it (`GET /servers`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerView {
    pub uuid: Uuid,
    pub hostname: Option<String>,
    /// Master time of the last event from its relay, if it runs one.
    pub last_seen: Option<EpochMs>,
    pub machines: usize,
    pub machines_down: usize,
    pub incident: Option<IncidentView>,
}

/// An open incident, as `GET /servers` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentView {
    pub id: Uuid,
    pub server: Uuid,
    pub hostname: Option<String>,
    pub reason: IncidentReason,
    pub opened: EpochMs,
    pub announced: bool,
    pub returned: Option<EpochMs>,
    pub machines_down: usize,
}

/// What the zone dispatcher watches (the relay's `GET /state`, `zones`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatcherState {
    pub zones: usize,
    pub watcher_restarts: u64,
    /// machine uuid → state name, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub states: Option<BTreeMap<Uuid, String>>,
}

/// How the relay link is doing (the relay's `GET /state`, `link`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkState {
    /// Events written to the spool and not yet acknowledged by the master.
    pub spool_depth: usize,
    pub master_reachable: bool,
    pub sent: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
}

/// One of a supervisor's children (the relay's `GET /state`, `children`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChildStatus {
    pub name: String,
    pub running: bool,
    pub restarts: u64,
}
