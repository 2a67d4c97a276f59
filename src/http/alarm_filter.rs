//! Which alarms a listing shows: the `state` filter of the Master API's
//! alarm listings and the web page's filters (account, server, probe group,
//! text). Pure: the handlers fetch the alarms and what they name, this
//! module decides.

use uuid::Uuid;

use crate::model::{Alarm, EpochMs};

/// How long a closed alarm still counts as `recent`.
pub const RECENT_MS: EpochMs = 60 * 60 * 1000;

/// The `state` of an alarm listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlarmState {
    /// Open, or closed within the last hour (the default).
    #[default]
    Recent,
    Open,
    Closed,
    All,
}

impl AlarmState {
    pub const ALL: [AlarmState; 4] = [
        AlarmState::Recent,
        AlarmState::Open,
        AlarmState::Closed,
        AlarmState::All,
    ];

    /// `recent`, `open`, `closed` or `all`; `None` for anything else.
    pub fn parse(text: &str) -> Option<AlarmState> {
        AlarmState::ALL.into_iter().find(|s| s.name() == text)
    }

    pub fn name(self) -> &'static str {
        match self {
            AlarmState::Recent => "recent",
            AlarmState::Open => "open",
            AlarmState::Closed => "closed",
            AlarmState::All => "all",
        }
    }

    pub fn keeps(self, alarm: &Alarm, now: EpochMs) -> bool {
        match self {
            AlarmState::Recent => !alarm.closed || alarm.time_closed.is_some_and(|t| now - t <= RECENT_MS),
            AlarmState::Open => !alarm.closed,
            AlarmState::Closed => alarm.closed,
            AlarmState::All => true,
        }
    }
}

/// What an alarm names, as the page shows it: looked up by the handler.
#[derive(Debug, Clone, Default)]
pub struct AlarmContext {
    pub account_login: String,
    /// The compute nodes its faults' machines are on.
    pub servers: Vec<Uuid>,
    /// Probe names, machine aliases, fault messages: what text search sees.
    pub words: Vec<String>,
}

/// The web page's alarm filters; empty ones let everything through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlarmFilter {
    pub state: AlarmState,
    /// An account's login or uuid.
    pub account: Option<String>,
    pub server: Option<Uuid>,
    pub group: Option<Uuid>,
    /// Case-insensitive, anywhere in the alarm's words or ids.
    pub text: Option<String>,
}

impl AlarmFilter {
    pub fn keeps(&self, alarm: &Alarm, context: &AlarmContext, now: EpochMs) -> bool {
        if !self.state.keeps(alarm, now) {
            return false;
        }
        if let Some(account) = &self.account {
            if *account != context.account_login && *account != alarm.user.to_string() {
                return false;
            }
        }
        if self.server.is_some_and(|s| !context.servers.contains(&s)) {
            return false;
        }
        if self.group.is_some() && alarm.probe_group != self.group {
            return false;
        }
        if let Some(text) = &self.text {
            let needle = text.to_lowercase();
            let ids = [
                alarm.id.to_string(),
                alarm.user.to_string(),
                context.account_login.clone(),
            ];
            let machines = alarm
                .faults
                .iter()
                .chain(&alarm.maint_faults)
                .filter_map(|f| f.event.machine.map(|m| m.to_string()));
            let found = context
                .words
                .iter()
                .cloned()
                .chain(ids)
                .chain(machines)
                .any(|w| w.to_lowercase().contains(&needle));
            if !found {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fault, ProbeEvent, ProbeEventData};

    fn alarm(closed_at: Option<EpochMs>, machine: Uuid) -> Alarm {
        let probe = Uuid::from_u128(7);
        Alarm {
            user: Uuid::from_u128(1),
            id: 3,
            probe: Some(probe),
            probe_group: None,
            closed: closed_at.is_some(),
            suppressed: false,
            time_opened: 0,
            time_closed: closed_at,
            time_last_event: None,
            num_events: 1,
            faults: vec![Fault {
                fault_type: "probe".into(),
                probe,
                event: ProbeEvent {
                    v: 1,
                    user: Uuid::from_u128(1),
                    probe_uuid: probe,
                    clear: false,
                    data: ProbeEventData {
                        message: "down".into(),
                        value: None,
                        details: None,
                    },
                    machine: Some(machine),
                    uuid: Uuid::from_u128(9),
                    time: 0,
                    agent: None,
                    agent_alias: None,
                    relay: None,
                },
                time_faulted: 0,
                notified: false,
                folded: false,
            }],
            maint_faults: vec![],
            num_notifications: 0,
        }
    }

    #[test]
    fn recent_means_open_or_closed_within_the_hour() {
        let now = 10 * RECENT_MS;
        let machine = Uuid::from_u128(5);
        assert!(AlarmState::Recent.keeps(&alarm(None, machine), now));
        assert!(AlarmState::Recent.keeps(&alarm(Some(now - RECENT_MS), machine), now));
        assert!(!AlarmState::Recent.keeps(&alarm(Some(now - RECENT_MS - 1), machine), now));
        assert!(AlarmState::Closed.keeps(&alarm(Some(0), machine), now));
        assert!(!AlarmState::Open.keeps(&alarm(Some(0), machine), now));
        assert_eq!(AlarmState::parse("bogus"), None);
        for s in AlarmState::ALL {
            assert_eq!(AlarmState::parse(s.name()), Some(s));
        }
    }

    #[test]
    fn filters_by_account_server_group_and_text() {
        let machine = Uuid::from_u128(5);
        let server = Uuid::from_u128(6);
        let a = alarm(None, machine);
        let context = AlarmContext {
            account_login: "alice".into(),
            servers: vec![server],
            words: vec!["Web Zone".into()],
        };
        let keeps = |f: AlarmFilter| f.keeps(&a, &context, 0);
        assert!(keeps(AlarmFilter::default()));
        assert!(keeps(AlarmFilter {
            account: Some("alice".into()),
            ..Default::default()
        }));
        assert!(keeps(AlarmFilter {
            account: Some(Uuid::from_u128(1).to_string()),
            ..Default::default()
        }));
        assert!(!keeps(AlarmFilter {
            account: Some("bob".into()),
            ..Default::default()
        }));
        assert!(keeps(AlarmFilter {
            server: Some(server),
            ..Default::default()
        }));
        assert!(!keeps(AlarmFilter {
            server: Some(machine),
            ..Default::default()
        }));
        assert!(!keeps(AlarmFilter {
            group: Some(Uuid::from_u128(8)),
            ..Default::default()
        }));
        for text in ["web zone", "ALICE", &machine.to_string()[..8]] {
            assert!(
                keeps(AlarmFilter {
                    text: Some(text.into()),
                    ..Default::default()
                }),
                "{text}"
            );
        }
        assert!(!keeps(AlarmFilter {
            text: Some("database".into()),
            ..Default::default()
        }));
    }
}
