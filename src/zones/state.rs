//! Zone states as the kernel and vmadm name them, and the one rule that turns
//! a reported state into "up", "down" or nothing.
//!
//! We classify by state, not by exact pairs (SPEC §3): vminfod coalesces fast
//! transitions (`uninitialized → running`), the kernel repeats states, and the
//! original's exact-pair matching missed both.

use std::fmt;

/// A zone state, from the kernel (`uninitialized … shutting_down`) or vmadm
/// (`configured, installed, down, stopped, provisioning, failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneState {
    Configured,
    Incomplete,
    Installed,
    Uninitialized,
    Initialized,
    Ready,
    Running,
    ShuttingDown,
    Down,
    Stopped,
    Provisioning,
    Failed,
    Receiving,
    Stopping,
    /// A state name we do not know; it is "not running", which is all the
    /// classification needs.
    Other,
}

impl ZoneState {
    /// Parses a state name as the platform prints it. Empty means "no state"
    /// (a create's old state, a delete's new state) and gives `None`.
    pub fn parse(name: &str) -> Option<ZoneState> {
        Some(match name {
            "" => return None,
            "configured" => ZoneState::Configured,
            "incomplete" => ZoneState::Incomplete,
            "installed" => ZoneState::Installed,
            "uninitialized" => ZoneState::Uninitialized,
            "initialized" => ZoneState::Initialized,
            "ready" => ZoneState::Ready,
            "running" => ZoneState::Running,
            "shutting_down" => ZoneState::ShuttingDown,
            "down" => ZoneState::Down,
            "stopped" => ZoneState::Stopped,
            "provisioning" => ZoneState::Provisioning,
            "failed" => ZoneState::Failed,
            "receiving" => ZoneState::Receiving,
            "stopping" => ZoneState::Stopping,
            _ => ZoneState::Other,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ZoneState::Configured => "configured",
            ZoneState::Incomplete => "incomplete",
            ZoneState::Installed => "installed",
            ZoneState::Uninitialized => "uninitialized",
            ZoneState::Initialized => "initialized",
            ZoneState::Ready => "ready",
            ZoneState::Running => "running",
            ZoneState::ShuttingDown => "shutting_down",
            ZoneState::Down => "down",
            ZoneState::Stopped => "stopped",
            ZoneState::Provisioning => "provisioning",
            ZoneState::Failed => "failed",
            ZoneState::Receiving => "receiving",
            ZoneState::Stopping => "stopping",
            ZoneState::Other => "other",
        }
    }

    pub fn is_running(self) -> bool {
        self == ZoneState::Running
    }
}

impl fmt::Display for ZoneState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reported state means for the zone's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The zone entered `running`.
    Up,
    /// The zone left `running`.
    Down,
    /// A repeat, or a change between two non-running states.
    None,
}

/// Classifies a newly reported state against what we knew before.
///
/// `known` is the state the watcher last saw; when it has seen nothing yet,
/// the source's own `old` state stands in. With neither, nothing is known to
/// have changed: a first sighting is not a transition.
pub fn classify(known: Option<ZoneState>, reported_old: Option<ZoneState>, new: ZoneState) -> Transition {
    let Some(before) = known.or(reported_old) else {
        return Transition::None;
    };
    match (before.is_running(), new.is_running()) {
        (false, true) => Transition::Up,
        (true, false) => Transition::Down,
        _ => Transition::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ZoneState::*;

    #[test]
    fn entering_running_is_up_from_any_state() {
        assert_eq!(classify(Some(Ready), None, Running), Transition::Up);
        assert_eq!(classify(Some(Uninitialized), None, Running), Transition::Up);
        assert_eq!(classify(None, Some(Installed), Running), Transition::Up);
    }

    #[test]
    fn leaving_running_is_down_to_any_state() {
        assert_eq!(classify(Some(Running), None, ShuttingDown), Transition::Down);
        assert_eq!(classify(Some(Running), None, Uninitialized), Transition::Down);
        assert_eq!(classify(None, Some(Running), Down), Transition::Down);
    }

    #[test]
    fn repeats_and_non_running_changes_are_nothing() {
        assert_eq!(classify(Some(Running), Some(Running), Running), Transition::None);
        assert_eq!(classify(Some(ShuttingDown), None, ShuttingDown), Transition::None);
        assert_eq!(classify(Some(Ready), None, Ready), Transition::None);
        assert_eq!(classify(Some(ShuttingDown), None, Uninitialized), Transition::None);
    }

    #[test]
    fn what_the_watcher_saw_wins_over_what_the_source_claims() {
        // The source says ready→running but we already saw running: a repeat.
        assert_eq!(classify(Some(Running), Some(Ready), Running), Transition::None);
    }

    #[test]
    fn first_sighting_without_an_old_state_is_nothing() {
        assert_eq!(classify(None, None, Running), Transition::None);
        assert_eq!(classify(None, None, ShuttingDown), Transition::None);
    }

    #[test]
    fn state_names_round_trip() {
        for name in [
            "configured",
            "installed",
            "uninitialized",
            "initialized",
            "ready",
            "running",
            "shutting_down",
            "down",
            "stopped",
            "provisioning",
            "failed",
        ] {
            assert_eq!(ZoneState::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(ZoneState::parse(""), None);
        assert_eq!(ZoneState::parse("dying"), Some(Other));
    }
}
