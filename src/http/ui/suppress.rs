//! Suppression in one click: "hold off this machine / this server / this
//! probe for 1 h / 4 h / until I end it" turned into the maintenance window
//! it means. Pure; the handler hands the window to the maintenance keeper.

use uuid::Uuid;

use crate::model::{EpochMs, MaintenanceScope, MaintenanceWindow};

/// What to hold off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Machine(Uuid),
    Server(Uuid),
    Probe(Uuid),
    ProbeGroup(Uuid),
}

/// For how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldFor {
    Hours(u32),
    /// Until someone ends the window.
    UntilEnded,
}

/// The hold-off lengths the page offers, as the form sends them.
pub const CHOICES: [(&str, &str); 3] = [("1h", "1 h"), ("4h", "4 h"), ("open", "until I end it")];

impl Target {
    /// The form's `scope` and `target` fields.
    pub fn parse(scope: &str, target: &str) -> Result<Target, String> {
        let uuid = Uuid::parse_str(target).map_err(|_| format!("target {target:?} is not a uuid"))?;
        match scope {
            "machine" => Ok(Target::Machine(uuid)),
            "server" => Ok(Target::Server(uuid)),
            "probe" => Ok(Target::Probe(uuid)),
            "group" => Ok(Target::ProbeGroup(uuid)),
            other => Err(format!("scope {other:?} is not machine, server, probe or group")),
        }
    }

    pub fn scope_name(self) -> &'static str {
        match self {
            Target::Machine(_) => "machine",
            Target::Server(_) => "server",
            Target::Probe(_) => "probe",
            Target::ProbeGroup(_) => "group",
        }
    }

    /// "this machine", as the button's text says it.
    pub fn noun(self) -> &'static str {
        match self {
            Target::Machine(_) => "this machine",
            Target::Server(_) => "this server",
            Target::Probe(_) => "this probe",
            Target::ProbeGroup(_) => "this probe group",
        }
    }

    pub fn uuid(self) -> Uuid {
        match self {
            Target::Machine(u) | Target::Server(u) | Target::Probe(u) | Target::ProbeGroup(u) => u,
        }
    }
}

impl HoldFor {
    /// The form's `for` field: `1h`, `4h` or `open`.
    pub fn parse(text: &str) -> Result<HoldFor, String> {
        match text {
            "1h" => Ok(HoldFor::Hours(1)),
            "4h" => Ok(HoldFor::Hours(4)),
            "open" => Ok(HoldFor::UntilEnded),
            other => Err(format!("for {other:?} is not 1h, 4h or open")),
        }
    }
}

/// The window: from `now`, owned by `owner` (an account's window covers only
/// its own alarms; `None`, an operator's, covers every account's).
pub fn window(owner: Option<Uuid>, target: Target, hold: HoldFor, now: EpochMs, notes: String) -> MaintenanceWindow {
    let mut scope = MaintenanceScope::default();
    match target {
        Target::Machine(u) => scope.machines.push(u),
        Target::Server(u) => scope.servers.push(u),
        Target::Probe(u) => scope.probes.push(u),
        Target::ProbeGroup(u) => scope.probe_groups.push(u),
    }
    MaintenanceWindow {
        id: 0,
        user: owner,
        start: now,
        end: match hold {
            HoldFor::Hours(h) => Some(now + EpochMs::from(h) * 3_600_000),
            HoldFor::UntilEnded => None,
        },
        notes: Some(notes),
        scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_for_an_hour_is_a_window_on_that_server_ending_in_an_hour() {
        let server = Uuid::from_u128(3);
        let target = Target::parse("server", &server.to_string()).unwrap();
        let w = window(None, target, HoldFor::parse("1h").unwrap(), 1000, "why".into());
        assert_eq!(w.scope.servers, vec![server]);
        assert!(w.scope.machines.is_empty() && !w.scope.all);
        assert_eq!((w.start, w.end), (1000, Some(1000 + 3_600_000)));
        assert_eq!(w.user, None);
    }

    #[test]
    fn until_ended_has_no_end_and_an_account_owns_its_window() {
        let account = Uuid::from_u128(1);
        let probe = Uuid::from_u128(2);
        let w = window(
            Some(account),
            Target::Probe(probe),
            HoldFor::parse("open").unwrap(),
            5,
            String::new(),
        );
        assert_eq!(w.end, None);
        assert_eq!(w.user, Some(account));
        assert_eq!(w.scope.probes, vec![probe]);
        let w = window(None, Target::ProbeGroup(probe), HoldFor::Hours(4), 0, String::new());
        assert_eq!(w.scope.probe_groups, vec![probe]);
        assert_eq!(w.end, Some(4 * 3_600_000));
    }

    #[test]
    fn anything_else_is_refused_naming_it() {
        assert!(Target::parse("rack", &Uuid::nil().to_string())
            .unwrap_err()
            .contains("rack"));
        assert!(Target::parse("machine", "nope").unwrap_err().contains("nope"));
        assert!(HoldFor::parse("2d").unwrap_err().contains("2d"));
        for (value, _) in CHOICES {
            assert!(HoldFor::parse(value).is_ok());
        }
    }
}
