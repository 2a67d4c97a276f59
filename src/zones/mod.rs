//! Zone sources: everything that knows how SmartOS reports zone and VM state.
//!
//! This is the only module that knows the platform's zone-event formats
//! (`zoneevent` legacy and current, `sysevent -j`, `vmadm events -j`) and the
//! simulated cloud. It turns them into typed [`ZoneEvent`]s and says, by state,
//! whether a change is a zone coming up or going down ([`classify`]). It does
//! not know about actors, HTTP or the master.

pub mod format;
pub mod inventory;
pub mod sim;
pub mod state;

pub use format::{parse_line, parse_list_line, parse_meta_line, split_server_tag, LineFormat, ParseError};
pub use state::{classify, Transition, ZoneState};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What the platform said about one zone (or all zones), in typed form.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneEvent {
    /// A zone's state was reported: a change, a repeat or a coalesced jump.
    State {
        zonename: String,
        /// The state the source says the zone left; `None` when the source did
        /// not say (legacy repeats, vmadm `added`).
        old: Option<ZoneState>,
        new: ZoneState,
        /// Wall-clock time of the change when the source gives one (legacy
        /// zoneevent gives only time since boot, so `None` there).
        time: Option<DateTime<Utc>>,
        meta: ZoneMeta,
    },
    /// A zone was created (zoneevent `oldstate: ""`, vmadm `create`).
    Created {
        zonename: String,
        state: Option<ZoneState>,
        time: Option<DateTime<Utc>>,
        meta: ZoneMeta,
    },
    /// A zone was deleted (zoneevent `newstate: ""`, vmadm `delete`).
    Deleted {
        zonename: String,
        time: Option<DateTime<Utc>>,
    },
    /// The current state of every zone (vmadm `ready` with `vms`): the
    /// natural startup snapshot for reconciliation.
    Snapshot(Vec<ZoneSnapshot>),
    /// The source is subscribed and will report from now on (sysevent `-r`,
    /// vmadm `ready` without `vms`).
    Ready,
    /// Fresh metadata (alias, owner) for zones, from a periodic listing such
    /// as `vmadm list -H -o uuid,alias,owner_uuid`; says nothing of state.
    Meta(Vec<(String, ZoneMeta)>),
}

/// Metadata about a zone that sources sometimes carry; missing is normal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZoneMeta {
    pub alias: Option<String>,
    pub owner: Option<Uuid>,
}

/// One zone in a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSnapshot {
    pub zonename: String,
    pub state: ZoneState,
    pub meta: ZoneMeta,
}

impl ZoneEvent {
    /// The zone this event is about, if it is about one zone.
    pub fn zonename(&self) -> Option<&str> {
        match self {
            ZoneEvent::State { zonename, .. }
            | ZoneEvent::Created { zonename, .. }
            | ZoneEvent::Deleted { zonename, .. } => Some(zonename),
            ZoneEvent::Snapshot(_) | ZoneEvent::Ready | ZoneEvent::Meta(_) => None,
        }
    }
}
