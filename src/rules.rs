//! Amon's alarm rules (SPEC §5, rules 2–4) and the hold, as pure functions
//! over an [`Alarm`]: no actors, no timers, no I/O. The `AlarmActor` owns the
//! timers and the store; this module decides. Tests drive it with plain
//! numbers for time.

use std::time::Duration;

use uuid::Uuid;

use crate::model::{Alarm, EpochMs, Fault, MonitorKey, ProbeEvent};
use crate::notify::NotificationKind;

/// An open alarm takes new faults only while its last event is younger than
/// this (clears are exempt): Amon's 25 hours.
pub const REUSE_WINDOW_MS: EpochMs = 25 * 60 * 60 * 1000;

/// What an event means for the monitor's newest open alarm (rule 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Apply it to the open alarm.
    Join,
    /// Open a new alarm for it.
    Open,
    /// A clear with nothing open: nothing to do.
    Drop,
}

pub fn relate(open: Option<&Alarm>, event: &ProbeEvent, group_events: bool) -> Relation {
    if !group_events {
        // Amon's groupEvents: false: every event gets its own alarm.
        return Relation::Open;
    }
    let joins = open.is_some_and(|a| {
        !a.closed && (event.clear || a.time_last_event.is_none_or(|t| event.time - t < REUSE_WINDOW_MS))
    });
    match (joins, event.clear) {
        (true, _) => Relation::Join,
        (false, true) => Relation::Drop,
        (false, false) => Relation::Open,
    }
}

/// A fresh open alarm for a monitor.
pub fn new_alarm(key: MonitorKey, id: u64, now: EpochMs) -> Alarm {
    let (probe, probe_group) = match key {
        MonitorKey::Probe { probe, .. } => (Some(probe), None),
        MonitorKey::ProbeGroup { group, .. } => (None, Some(group)),
    };
    Alarm {
        user: key.user(),
        id,
        probe,
        probe_group,
        closed: false,
        suppressed: false,
        time_opened: now,
        time_closed: None,
        time_last_event: None,
        num_events: 0,
        faults: Vec::new(),
        maint_faults: Vec::new(),
        num_notifications: 0,
    }
}

/// What the alarm actor must do after a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A new fault: notify it if it is still open after the hold.
    StartHold { probe: Uuid },
    /// The fault cleared inside its hold: forget it, tell nobody.
    CancelHold { probe: Uuid },
    /// Tell the contacts (rule 4: the count of notified faults changed).
    Notify { kind: NotificationKind, fault: Box<Fault> },
}

/// Applies an event to an alarm (rule 3) and says what follows (rule 4 with
/// the hold: a fault is announced when its hold expires, see
/// [`hold_expired`]; a clear is announced only if its fault was).
/// `in_maintenance`: a window covers this event's fault, so a fault goes to
/// `maintFaults` and tells nobody (rule 3).
pub fn apply(alarm: &mut Alarm, event: ProbeEvent, now: EpochMs, in_maintenance: bool) -> Vec<Effect> {
    alarm.num_events += 1;
    alarm.time_last_event = Some(event.time);
    let probe = event.probe_uuid;
    let mut effects = Vec::new();
    if event.clear {
        alarm.maint_faults.retain(|f| f.probe != probe);
        if let Some(at) = alarm.faults.iter().position(|f| f.probe == probe) {
            let mut fault = alarm.faults.remove(at);
            if fault.notified {
                fault.event = event;
                effects.push(Effect::Notify {
                    kind: NotificationKind::Clear,
                    fault: Box::new(fault),
                });
            } else {
                effects.push(Effect::CancelHold { probe });
            }
        }
        if alarm.faults.is_empty() && alarm.maint_faults.is_empty() {
            alarm.closed = true;
            alarm.time_closed = Some(now);
        }
    } else if let Some(fault) = alarm.faults.iter_mut().find(|f| f.probe == probe) {
        // The latest event wins; the fault count does not change.
        fault.event = event;
    } else if in_maintenance {
        let fault = Fault {
            fault_type: "probe".into(),
            probe,
            time_faulted: now,
            notified: false,
            folded: false,
            event,
        };
        match alarm.maint_faults.iter_mut().find(|f| f.probe == probe) {
            Some(existing) => existing.event = fault.event,
            None => alarm.maint_faults.push(fault),
        }
        alarm.maint_faults.sort_by_key(|f| f.probe);
    } else {
        alarm.faults.push(Fault {
            fault_type: "probe".into(),
            probe,
            time_faulted: now,
            notified: false,
            folded: false,
            event,
        });
        alarm.faults.sort_by_key(|f| f.probe);
        effects.push(Effect::StartHold { probe });
    }
    effects
}

/// Whether `clear` finds its probe's fault past its hold by the events'
/// own times: unannounced (and not folded into an incident), though the
/// clear came at least `hold_ms` after the fault began. Live, the hold's
/// timer fires first; but events replayed after a crash or a takeover (a
/// fault and its clear committed while no core ran) arrive back to back,
/// and the clear must not pass for a reboot: the fault is announced first,
/// late, then cleared.
pub fn hold_ran_out_before(alarm: &Alarm, clear: &ProbeEvent, hold_ms: EpochMs) -> bool {
    alarm.faults.iter().any(|f| {
        f.probe == clear.probe_uuid
            && !f.notified
            && !f.folded
            && clear.time >= f.event.time.min(f.time_faulted).saturating_add(hold_ms)
    })
}

/// A hold ran out: if the probe's fault is still open and unannounced, it is
/// announced now.
pub fn hold_expired(alarm: &mut Alarm, probe: Uuid) -> Option<Effect> {
    if alarm.closed {
        return None;
    }
    let fault = alarm.faults.iter_mut().find(|f| f.probe == probe && !f.notified)?;
    fault.notified = true;
    Some(Effect::Notify {
        kind: NotificationKind::Fault,
        fault: Box::new(fault.clone()),
    })
}

/// A maintenance window ended or was deleted (rule 5): maintenance faults
/// no window covers any more become faults and are notified now; those
/// still covered (overlapping windows) wait for the last one.
pub fn review_maintenance(alarm: &mut Alarm, still_covered: impl Fn(&Fault) -> bool) -> Vec<Effect> {
    if alarm.closed {
        return Vec::new();
    }
    let (keep, promote): (Vec<Fault>, Vec<Fault>) = alarm.maint_faults.drain(..).partition(|f| still_covered(f));
    alarm.maint_faults = keep;
    let mut effects = Vec::new();
    for mut fault in promote {
        if alarm.faults.iter().any(|f| f.probe == fault.probe) {
            continue; // already a regular fault: nothing new to say
        }
        fault.notified = true;
        effects.push(Effect::Notify {
            kind: NotificationKind::Fault,
            fault: Box::new(fault.clone()),
        });
        alarm.faults.push(fault);
    }
    alarm.faults.sort_by_key(|f| f.probe);
    effects
}

/// An operator's action on an alarm (`POST …/alarms/:id?action=`). All of
/// them are silent: nobody is notified of a close, reopen or suppression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmAction {
    Close,
    Reopen,
    Suppress,
    Unsuppress,
}

impl AlarmAction {
    pub fn parse(text: &str) -> Option<AlarmAction> {
        Some(match text {
            "close" => AlarmAction::Close,
            "reopen" => AlarmAction::Reopen,
            "suppress" => AlarmAction::Suppress,
            "unsuppress" => AlarmAction::Unsuppress,
            _ => return None,
        })
    }
}

/// Applies an operator's action. A closed alarm keeps its faults (Amon's
/// rule): reopening it makes it a candidate for new events again.
pub fn act(alarm: &mut Alarm, action: AlarmAction, now: EpochMs) {
    match action {
        AlarmAction::Close => {
            if !alarm.closed {
                alarm.closed = true;
                alarm.time_closed = Some(now);
            }
        }
        AlarmAction::Reopen => {
            alarm.closed = false;
            alarm.time_closed = None;
        }
        AlarmAction::Suppress => alarm.suppressed = true,
        AlarmAction::Unsuppress => alarm.suppressed = false,
    }
}

/// A hold ran out while the fault's server is in an incident: the fault is
/// folded into the incident instead of being announced. `false` if there is
/// no such unannounced fault.
pub fn fold(alarm: &mut Alarm, probe: Uuid) -> bool {
    if alarm.closed {
        return false;
    }
    match alarm.faults.iter_mut().find(|f| f.probe == probe && !f.notified) {
        Some(fault) => {
            fault.folded = true;
            true
        }
        None => false,
    }
}

/// The incident on `server` is over: folded faults from that server that
/// are still open are announced now, one by one.
pub fn release(alarm: &mut Alarm, server: Uuid) -> Vec<Effect> {
    if alarm.closed {
        return Vec::new();
    }
    alarm
        .faults
        .iter_mut()
        .filter(|f| f.folded && !f.notified && f.event.agent == Some(server))
        .map(|fault| {
            fault.folded = false;
            fault.notified = true;
            Effect::Notify {
                kind: NotificationKind::Fault,
                fault: Box::new(fault.clone()),
            }
        })
        .collect()
}

/// The hold a fault waits before it is notified: its monitor's `hold`, but
/// for a machine-down fault never less than the flood guard's burst window,
/// so that when a whole server goes down the guard has seen the burst (and
/// folds the fault into one server message) before any machine of it is
/// notified on its own, even with `hold = 0` (SPEC §6).
pub fn least_hold(hold: Duration, machine_down: bool, burst_window: Duration) -> Duration {
    if machine_down {
        hold.max(burst_window)
    } else {
        hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProbeEventData;

    const HOUR: EpochMs = 60 * 60 * 1000;

    fn key() -> MonitorKey {
        MonitorKey::Probe {
            user: Uuid::from_u128(1),
            probe: Uuid::from_u128(2),
        }
    }

    fn event(probe: u128, clear: bool, time: EpochMs) -> ProbeEvent {
        ProbeEvent {
            v: 1,
            user: Uuid::from_u128(1),
            probe_uuid: Uuid::from_u128(probe),
            clear,
            data: ProbeEventData {
                message: if clear { "up" } else { "down" }.into(),
                value: None,
                details: None,
            },
            machine: None,
            uuid: Uuid::new_v4(),
            time,
            agent: None,
            agent_alias: None,
            relay: None,
        }
    }

    fn notified(effects: &[Effect]) -> Vec<NotificationKind> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_clear_a_hold_after_its_fault_finds_the_hold_run_out_by_event_time() {
        let mut alarm = new_alarm(key(), 1, 1_000);
        apply(&mut alarm, event(2, false, 1_000), 5_000, false);
        let hold = 60_000;
        // The fault began at its event's time (1 000), not when applied.
        assert!(!hold_ran_out_before(&alarm, &event(2, true, 60_999), hold));
        assert!(hold_ran_out_before(&alarm, &event(2, true, 61_000), hold));
        // Not for another probe, nor once announced.
        assert!(!hold_ran_out_before(&alarm, &event(99, true, 99_000), hold));
        hold_expired(&mut alarm, Uuid::from_u128(2));
        assert!(!hold_ran_out_before(&alarm, &event(2, true, 99_000), hold));
    }

    #[test]
    fn reboot_within_hold_sends_nothing() {
        let mut alarm = new_alarm(key(), 1, 0);
        let down = apply(&mut alarm, event(2, false, 0), 0, false);
        assert_eq!(
            down,
            vec![Effect::StartHold {
                probe: Uuid::from_u128(2)
            }]
        );
        let up = apply(&mut alarm, event(2, true, 10_000), 10_000, false);
        assert_eq!(
            up,
            vec![Effect::CancelHold {
                probe: Uuid::from_u128(2)
            }]
        );
        assert!(alarm.closed, "the alarm closes silently");
        assert_eq!(
            hold_expired(&mut alarm, Uuid::from_u128(2)),
            None,
            "a late timer finds nothing"
        );
    }

    #[test]
    fn down_and_staying_down_notifies_once_after_the_hold() {
        let mut alarm = new_alarm(key(), 1, 0);
        apply(&mut alarm, event(2, false, 0), 0, false);
        let expired = hold_expired(&mut alarm, Uuid::from_u128(2));
        assert!(matches!(
            expired,
            Some(Effect::Notify {
                kind: NotificationKind::Fault,
                ..
            })
        ));
        // A repeated fault from the same probe changes nothing.
        assert!(apply(&mut alarm, event(2, false, 5_000), 5_000, false).is_empty());
        assert_eq!(hold_expired(&mut alarm, Uuid::from_u128(2)), None);
        assert_eq!(alarm.num_events, 2);
        assert_eq!(alarm.faults.len(), 1);
    }

    #[test]
    fn a_clear_after_a_notified_fault_notifies_and_closes() {
        let mut alarm = new_alarm(key(), 1, 0);
        apply(&mut alarm, event(2, false, 0), 0, false);
        hold_expired(&mut alarm, Uuid::from_u128(2));
        let effects = apply(&mut alarm, event(2, true, 90_000), 90_000, false);
        assert_eq!(notified(&effects), vec![NotificationKind::Clear]);
        assert!(alarm.closed);
        assert_eq!(alarm.time_closed, Some(90_000));
    }

    #[test]
    fn each_probe_of_a_group_is_its_own_fault() {
        let mut alarm = new_alarm(
            MonitorKey::ProbeGroup {
                user: Uuid::from_u128(1),
                group: Uuid::from_u128(9),
            },
            1,
            0,
        );
        apply(&mut alarm, event(2, false, 0), 0, false);
        apply(&mut alarm, event(3, false, 0), 0, false);
        assert_eq!(alarm.faults.len(), 2);
        assert!(hold_expired(&mut alarm, Uuid::from_u128(2)).is_some());
        assert!(hold_expired(&mut alarm, Uuid::from_u128(3)).is_some());
        // One clears: the alarm stays open with the other.
        let effects = apply(&mut alarm, event(2, true, 1), 1, false);
        assert_eq!(notified(&effects), vec![NotificationKind::Clear]);
        assert!(!alarm.closed);
    }

    #[test]
    fn events_join_the_open_alarm_within_25_hours_and_clears_always() {
        let mut alarm = new_alarm(key(), 1, 0);
        apply(&mut alarm, event(2, false, 0), 0, false);
        assert_eq!(relate(Some(&alarm), &event(2, false, 24 * HOUR), true), Relation::Join);
        assert_eq!(relate(Some(&alarm), &event(2, false, 26 * HOUR), true), Relation::Open);
        assert_eq!(relate(Some(&alarm), &event(2, true, 26 * HOUR), true), Relation::Join);
    }

    #[test]
    fn a_clear_with_no_open_alarm_is_dropped_and_a_fault_opens_one() {
        assert_eq!(relate(None, &event(2, true, 0), true), Relation::Drop);
        assert_eq!(relate(None, &event(2, false, 0), true), Relation::Open);
        let mut closed = new_alarm(key(), 1, 0);
        closed.closed = true;
        assert_eq!(relate(Some(&closed), &event(2, false, 0), true), Relation::Open);
    }

    #[test]
    fn a_folded_fault_is_silent_and_released_only_if_still_open() {
        let server = Uuid::from_u128(77);
        let mut down = event(2, false, 0);
        down.agent = Some(server);
        let mut alarm = new_alarm(key(), 1, 0);
        apply(&mut alarm, down.clone(), 0, false);
        assert!(fold(&mut alarm, Uuid::from_u128(2)));
        assert!(alarm.faults[0].folded && !alarm.faults[0].notified);
        assert!(
            release(&mut alarm, Uuid::from_u128(99)).is_empty(),
            "another server's release"
        );
        assert_eq!(notified(&release(&mut alarm, server)), vec![NotificationKind::Fault]);
        assert!(release(&mut alarm, server).is_empty(), "released once");

        // A folded fault that clears before the release says nothing.
        let mut alarm = new_alarm(key(), 2, 0);
        apply(&mut alarm, down, 0, false);
        fold(&mut alarm, Uuid::from_u128(2));
        let mut up = event(2, true, 5);
        up.agent = Some(server);
        assert!(notified(&apply(&mut alarm, up, 5, false)).is_empty());
        assert!(alarm.closed);
        assert!(release(&mut alarm, server).is_empty());
    }

    #[test]
    fn a_fault_under_maintenance_waits_silently_until_the_window_ends() {
        let mut alarm = new_alarm(key(), 1, 0);
        assert!(
            apply(&mut alarm, event(2, false, 0), 0, true).is_empty(),
            "no hold, no notification"
        );
        assert!(alarm.faults.is_empty());
        assert_eq!(alarm.maint_faults.len(), 1);
        // An overlapping window still covers it: nothing.
        assert!(review_maintenance(&mut alarm, |_| true).is_empty());
        // The last window ends: notified now, and a regular fault from here on.
        assert_eq!(
            notified(&review_maintenance(&mut alarm, |_| false)),
            vec![NotificationKind::Fault]
        );
        assert!(alarm.maint_faults.is_empty());
        assert!(alarm.faults[0].notified);
    }

    #[test]
    fn a_machine_back_during_the_window_closes_its_alarm_silently() {
        let mut alarm = new_alarm(key(), 1, 0);
        apply(&mut alarm, event(2, false, 0), 0, true);
        let effects = apply(&mut alarm, event(2, true, 10), 10, true);
        assert!(notified(&effects).is_empty());
        assert!(alarm.closed);
        assert!(review_maintenance(&mut alarm, |_| false).is_empty());
    }

    #[test]
    fn group_events_false_opens_an_alarm_for_every_event() {
        let mut alarm = new_alarm(key(), 1, 0);
        apply(&mut alarm, event(2, false, 0), 0, false);
        assert_eq!(relate(Some(&alarm), &event(2, false, 1), false), Relation::Open);
        assert_eq!(relate(Some(&alarm), &event(2, true, 1), false), Relation::Open);
    }

    #[test]
    fn a_machine_down_waits_at_least_the_burst_window_and_other_faults_their_hold() {
        let (window, s) = (Duration::from_secs(10), Duration::from_secs);
        assert_eq!(least_hold(s(0), true, window), window);
        assert_eq!(least_hold(s(60), true, window), s(60));
        assert_eq!(least_hold(s(0), false, window), s(0));
        assert_eq!(least_hold(s(5), false, window), s(5));
    }
}
