//! Rendering a [`Notification`] as an email for the on-call human who reads
//! it at 3 a.m.: a subject that says what is wrong and stays the same for the
//! whole alarm (so mail clients show one thread per alarm, SPEC §6), a plain
//! text body that starts with what happened in words and ends with how to
//! silence it, and the raw event only at the very end. The reference sent the
//! raw event JSON as most of the body and a subject like
//! `[Alarm: probe=…, vm=…, type=…] login#55 in dc`, which users found hard to
//! read; this module is where we do better. It builds the `lettre::Message`
//! too, but never sends anything (that is [`super::transport`]).
//!
//! Server incidents (`ServerDown`/`ServerBack`, the flood guard of SPEC §6)
//! get their own subject and body: one message for all of a contact's
//! machines on the server, with the list capped at [`MAX_LISTED`] lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::Message;

use super::{ContactAddress, Incident, IncidentMachine, IncidentReason, Notification, NotificationKind};
use crate::model::{EpochMs, ProbeType};

/// Why a notification could not be turned into an email.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// A sender or recipient that is not a valid mailbox.
    #[error("bad {role} email address {address:?}")]
    BadAddress {
        /// `sender` or `recipient`, so the log says which side to fix.
        role: &'static str,
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    /// The contact is not an email contact (e.g. a webhook).
    #[error("contact {contact:?} is not an email contact")]
    NotEmail { contact: String },
    /// lettre refused to assemble the message.
    #[error("cannot build the email message")]
    Build(#[source] lettre::error::Error),
}

/// The human-facing parts of an email, before it becomes a `lettre::Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub body: String,
    /// Derived from the notification id only, so a redelivery of the same
    /// notification carries the same id and a mail client can drop the copy.
    pub message_id: String,
    /// The alarm's first message to this contact, for threading.
    pub in_reply_to: Option<String>,
}

/// Renders the subject, body and threading ids of a notification.
pub fn render(n: &Notification) -> RenderedEmail {
    let (subject, body) = match incident(n) {
        _ if n.kind == NotificationKind::Digest => (digest_subject(n), digest_body(n)),
        Some(incident) => {
            let machines = machine_lines(&incident.machines);
            (
                incident_subject(n, incident, &machines),
                incident_body(n, incident, &machines),
            )
        }
        None => (subject(n), body(n)),
    };
    RenderedEmail {
        subject,
        body,
        message_id: super::message_id(n.id, &n.datacenter),
        in_reply_to: n.thread_root.clone(),
    }
}

/// Builds the message to send: From, To (the contact's address), Subject,
/// Message-ID, In-Reply-To/References when the alarm already has a thread,
/// Date and a UTF-8 plain-text body.
pub fn to_message(n: &Notification, from: &str) -> Result<Message, EmailError> {
    let to = match &n.contact {
        ContactAddress::Email(address) => address,
        ContactAddress::Webhook(_) => {
            return Err(EmailError::NotEmail {
                contact: n.contact_name.clone(),
            })
        }
    };
    let from = parse_mailbox("sender", from)?;
    let to = parse_mailbox("recipient", to)?;
    let rendered = render(n);

    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(rendered.subject)
        .message_id(Some(rendered.message_id))
        // The event's time rather than the sending time: a message delivered
        // after an hour of SMTP retries still sorts where the outage began,
        // and the same notification always renders to the same bytes. For a
        // server incident: when the server went down, or came back.
        .date(system_time(message_time(n)))
        .header(ContentType::TEXT_PLAIN);
    if let Some(root) = rendered.in_reply_to {
        // Every follow-up points at the first message rather than at the
        // previous one: we do not know which of the earlier messages the
        // contact received, but the root is the thread everyone has.
        builder = builder.in_reply_to(root.clone()).references(root);
    }
    builder.body(rendered.body).map_err(EmailError::Build)
}

fn parse_mailbox(role: &'static str, address: &str) -> Result<Mailbox, EmailError> {
    address.trim().parse().map_err(|source| EmailError::BadAddress {
        role,
        address: address.to_owned(),
        source,
    })
}

/// The subject, stable per alarm (SPEC §6).
///
/// Gmail and Outlook group a conversation by its subject (ignoring `Re:`)
/// and split it as soon as the subject text changes; Thunderbird and Apple
/// Mail follow `References`. So every message after the first one in an
/// alarm's thread repeats the first one's subject behind `Re: `, and the
/// change of state is told by the body's first line, which those clients show
/// as the preview. A subject of the form `… is down` / `… is up` would read a
/// little better alone but split the thread in the most used clients.
///
/// A clear without a thread (the contact got no fault message, e.g. it was
/// added to the probe while the alarm was open) starts its own thread and
/// may then say what it is: `… is back up`.
fn subject(n: &Notification) -> String {
    let prefix = format!("[amon {}] Alarm {}: ", one_line(&n.datacenter), n.alarm_id);
    if n.thread_root.is_some() {
        format!("Re: {prefix}{}", headline(n, NotificationKind::Fault))
    } else {
        format!("{prefix}{}", headline(n, n.kind))
    }
}

/// What happened, in the fewest words: `machine web0 (…) is down`. The
/// subject uses it as is; the body's first line as a sentence.
fn headline(n: &Notification, kind: NotificationKind) -> String {
    // A `ServerDown` without its incident (a malformed outbox row) renders
    // as the fault it stands for, a `ServerBack` as a clear.
    let fault = matches!(kind, NotificationKind::Fault | NotificationKind::ServerDown);
    let verb = if fault { "faulted" } else { "cleared" };
    match (&n.machine, is_machine_up(n)) {
        (Some(_), true) => {
            let state = if fault { "is down" } else { "is back up" };
            format!("machine {} {state}", machine_label(n))
        }
        (Some(_), false) => {
            format!("probe {} {verb} on machine {}", probe_label(n), machine_label(n))
        }
        (None, _) => format!("probe {} {verb}", probe_label(n)),
    }
}

/// The body's first line: a whole sentence, so that a preview pane or a
/// phone's lock screen tells the reader what changed without opening it.
fn first_line(n: &Notification) -> String {
    let headline = headline(n, n.kind);
    let mut chars = headline.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

fn body(n: &Notification) -> String {
    let mut out = String::new();
    // `writeln!` into a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(out, "{}", first_line(n));
    let _ = writeln!(out);

    field(&mut out, "When", &format_time(n.event_time));
    if let Some(machine) = &n.machine {
        field(&mut out, "Machine", &machine_label(n));
        if let Some(server) = machine.server {
            field(&mut out, "Server", &server.to_string());
        }
    }
    let probe = match &n.probe.name {
        Some(name) => format!("{} ({})", one_line(name), n.probe.uuid),
        None => n.probe.uuid.to_string(),
    };
    field(
        &mut out,
        "Probe",
        &format!("{probe}, type {}", one_line(&n.probe.probe_type)),
    );
    if let Some(group) = n.probe.group {
        field(&mut out, "Probe group", &group.to_string());
    }
    field(&mut out, "Alarm", &alarm_state(n));
    field(
        &mut out,
        "Account",
        &format!("{} ({})", one_line(&n.account_login), n.account_uuid),
    );
    field(&mut out, "Datacenter", &one_line(&n.datacenter));
    // A machine-up event's message (`Machine "<uuid>" has gone down.`) only
    // repeats the first line; other probe types say what they saw in it.
    if !is_machine_up(n) && !n.message.trim().is_empty() {
        field(&mut out, "Message", n.message.trim());
    }
    let _ = writeln!(out);

    if n.alarm_closed {
        let _ = writeln!(out, "Alarm {} is closed: there is nothing more to do.", n.alarm_id);
    } else {
        let login = shell_word(&n.account_login);
        let _ = writeln!(out, "To stop email about alarm {} until it closes:", n.alarm_id);
        let _ = writeln!(out, "    amon alarms suppress {} --account {login}", n.alarm_id);
        if let Some(machine) = &n.machine {
            let _ = writeln!(out, "To hold off alarms for this machine while you work on it:");
            let _ = writeln!(out, "    amon suppress --machine {} --for 2h", machine.uuid);
        }
        if !n.master_url.trim().is_empty() {
            let _ = writeln!(out, "Master API: {}", one_line(n.master_url.trim()));
        }
    }

    // The raw event is for whoever debugs Amon itself, not for the on-call
    // reader, so it comes last, after a visible break.
    let _ = writeln!(out);
    let _ = writeln!(out);
    let _ = writeln!(out, "Raw event");
    let _ = writeln!(out, "---------");
    let raw = serde_json::to_string_pretty(&n.event_json).unwrap_or_else(|_| n.event_json.to_string());
    let _ = writeln!(out, "{raw}");
    out
}

/// At most this many machine lines in one email: a server with thousands of
/// zones must not produce a message nobody can scroll through.
const MAX_LISTED: usize = 500;

/// At most this wide the alias column: one long alias must not push every
/// line's uuid off the screen.
const MAX_ALIAS_WIDTH: usize = 24;

/// The incident of a `ServerDown`/`ServerBack` notification; `None` for other
/// kinds, and for an incident kind without one (then it renders like the
/// fault or clear it stands for).
fn incident(n: &Notification) -> Option<&Incident> {
    match n.kind {
        NotificationKind::ServerDown | NotificationKind::ServerBack => n.incident.as_ref(),
        NotificationKind::Fault | NotificationKind::Clear | NotificationKind::Digest => None,
    }
}

/// A digest's subject: how many messages the rate limit held back.
fn digest_subject(n: &Notification) -> String {
    let count = n.digest.len();
    let noun = if count == 1 { "notification" } else { "notifications" };
    format!(
        "[amon {}] {count} more {noun} for {}",
        one_line(&n.datacenter),
        one_line(&n.account_login)
    )
}

/// A digest's body: one line per held notification (when, its subject),
/// oldest first, then why they were held.
fn digest_body(n: &Notification) -> String {
    let mut out = String::new();
    let count = n.digest.len();
    let _ = writeln!(
        out,
        "{count} notification{} for {} arrived faster than the contact's rate limit allows, so they come together:",
        if count == 1 { "" } else { "s" },
        one_line(&n.account_login)
    );
    let _ = writeln!(out);
    for (shown, held) in n.digest.iter().enumerate() {
        if shown == MAX_LISTED {
            let _ = writeln!(out, "  … and {} more", count - shown);
            break;
        }
        // What each one says on its own, not its thread's subject: a clear
        // reads "is back up", not "Re: … is down".
        let line = match (held.kind, incident(held)) {
            (_, Some(_)) => render(held).subject.trim_start_matches("Re: ").to_string(),
            (kind, None) => format!("Alarm {}: {}", held.alarm_id, headline(held, kind)),
        };
        let _ = writeln!(out, "  {}  {line}", format_time(message_time(held)));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Datacenter:  {}", one_line(&n.datacenter));
    let _ = writeln!(out, "Master API:  {}", one_line(&n.master_url));
    let _ = writeln!(
        out,
        "\nEach alarm's current state: amon alarms list --account {}",
        one_line(&n.account_login)
    );
    out
}

/// The message's `Date`: the event's time, or for a server incident when the
/// server went down (`ServerDown`) or came back (`ServerBack`).
fn message_time(n: &Notification) -> EpochMs {
    match (n.kind, incident(n)) {
        (NotificationKind::ServerDown, Some(incident)) => incident.opened,
        (NotificationKind::ServerBack, Some(incident)) => incident.returned.unwrap_or(n.event_time),
        _ => n.event_time,
    }
}

/// One line of an incident's machine list: a machine with every probe of
/// this contact that watches it (a machine watched by two probes is one
/// machine, so the counts and the list agree).
#[derive(Debug)]
struct MachineLine {
    alias: Option<String>,
    uuid: uuid::Uuid,
    probes: Vec<String>,
    down: bool,
}

/// The incident's machines, one line per machine, sorted by alias (machines
/// without one last) then uuid.
fn machine_lines(machines: &[IncidentMachine]) -> Vec<MachineLine> {
    let mut by_uuid: BTreeMap<uuid::Uuid, MachineLine> = BTreeMap::new();
    for m in machines {
        let line = by_uuid.entry(m.uuid).or_insert_with(|| MachineLine {
            alias: None,
            uuid: m.uuid,
            probes: Vec::new(),
            down: false,
        });
        if line.alias.is_none() {
            line.alias = m.alias.as_deref().map(one_line).filter(|alias| !alias.is_empty());
        }
        let probe = match m.probe.name.as_deref().map(one_line) {
            Some(name) if !name.is_empty() => name,
            _ => m.probe.uuid.to_string(),
        };
        if !line.probes.contains(&probe) {
            line.probes.push(probe);
        }
        line.down |= m.down;
    }
    let mut lines: Vec<MachineLine> = by_uuid.into_values().collect();
    for line in &mut lines {
        line.probes.sort();
    }
    lines.sort_by(|a, b| (a.alias.is_none(), &a.alias, a.uuid).cmp(&(b.alias.is_none(), &b.alias, b.uuid)));
    lines
}

/// `cn-7` when the server's hostname is known, else its uuid.
fn server_name(incident: &Incident) -> String {
    match incident.hostname.as_deref().map(one_line) {
        Some(hostname) if !hostname.is_empty() => hostname,
        _ => incident.server.to_string(),
    }
}

/// `cn-7 (uuid)` when the hostname is known, else the uuid alone.
fn server_label(incident: &Incident) -> String {
    match incident.hostname.as_deref().map(one_line) {
        Some(hostname) if !hostname.is_empty() => format!("{hostname} ({})", incident.server),
        _ => incident.server.to_string(),
    }
}

/// `1 of your machines is` / `30 of your machines are`.
fn of_your_machines(count: usize) -> String {
    if count == 1 {
        "1 of your machines is".to_owned()
    } else {
        format!("{count} of your machines are")
    }
}

fn is_are(count: usize) -> &'static str {
    if count == 1 {
        "is"
    } else {
        "are"
    }
}

/// Why the incident opened, as the end of a sentence.
fn reason_text(reason: IncidentReason) -> &'static str {
    match reason {
        IncidentReason::Shutdown => "its relay announced a shutdown",
        IncidentReason::HeartbeatLost => "its relay stopped sending heartbeats",
        IncidentReason::Burst => "many of its machines went down within minutes",
    }
}

/// The subject of a server incident's messages: the summary repeats the down
/// message's subject behind `Re: ` so that it stays in the same thread (see
/// [`subject`]); without a thread it says what it is.
///
/// The summary recounts the machines from its own list, so its subject
/// matches the down message's as long as no machine of the contact went down
/// after the announcement.
fn incident_subject(n: &Notification, incident: &Incident, machines: &[MachineLine]) -> String {
    let prefix = format!("[amon {}] Server {}", one_line(&n.datacenter), server_name(incident));
    let down_subject = format!("{prefix} is down: {} affected", of_your_machines(machines.len()));
    match n.kind {
        NotificationKind::ServerBack if n.thread_root.is_some() => format!("Re: {down_subject}"),
        NotificationKind::ServerBack => match machines.iter().filter(|m| m.down).count() {
            0 => format!("{prefix} is back"),
            down => format!("{prefix} is back: {} still down", of_your_machines(down)),
        },
        _ => down_subject,
    }
}

fn incident_body(n: &Notification, incident: &Incident, machines: &[MachineLine]) -> String {
    let mut out = String::new();
    let server = server_name(incident);
    let mut budget = MAX_LISTED;
    let still_down = match n.kind {
        NotificationKind::ServerBack => {
            let (down, up): (Vec<&MachineLine>, Vec<&MachineLine>) = machines.iter().partition(|m| m.down);
            let since = match incident.returned {
                Some(returned) => format!(" (since {})", format_time(returned)),
                None => String::new(),
            };
            let counts = if down.is_empty() {
                format!("{} up", of_your_machines(up.len()))
            } else {
                format!(
                    "{} up, {} {} still down",
                    of_your_machines(up.len()),
                    down.len(),
                    is_are(down.len())
                )
            };
            let _ = writeln!(out, "Server {server} is back{since}: {counts}.");
            let _ = writeln!(out);
            field(
                &mut out,
                "Down since",
                &format!("{} ({})", format_time(incident.opened), reason_text(incident.reason)),
            );
            if let Some(returned) = incident.returned {
                field(&mut out, "Back since", &format_time(returned));
            }
            incident_fields(&mut out, n, incident);
            if !down.is_empty() {
                let _ = writeln!(out);
                let _ = writeln!(out, "Still down ({}):", down.len());
                machine_list(&mut out, &down, &mut budget);
            }
            if !up.is_empty() {
                let _ = writeln!(out);
                let _ = writeln!(out, "Up ({}):", up.len());
                machine_list(&mut out, &up, &mut budget);
            }
            let _ = writeln!(out);
            if down.is_empty() {
                let _ = writeln!(out, "There is nothing more to do.");
            } else {
                let _ = writeln!(out, "Machines still down get their own alarm emails after the hold.");
            }
            !down.is_empty()
        }
        _ => {
            let _ = writeln!(
                out,
                "Server {server} is down: {}. {} affected.",
                reason_text(incident.reason),
                of_your_machines(machines.len())
            );
            let _ = writeln!(out);
            field(&mut out, "When", &format_time(incident.opened));
            incident_fields(&mut out, n, incident);
            let _ = writeln!(out);
            let _ = writeln!(out, "Affected machines ({}):", machines.len());
            let all: Vec<&MachineLine> = machines.iter().collect();
            machine_list(&mut out, &all, &mut budget);
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "When the server is back you get one summary; machines still down a hold later get \
                 their own alarm emails."
            );
            true
        }
    };
    if still_down {
        let _ = writeln!(out);
        let _ = writeln!(out, "To hold off alarms for this server while you work on it:");
        let _ = writeln!(
            out,
            "    amon suppress --server {} --for 2h --notes \"…\"",
            incident.server
        );
        if !n.master_url.trim().is_empty() {
            let _ = writeln!(out, "Master API: {}", one_line(n.master_url.trim()));
        }
    }
    out
}

/// The fields both incident bodies share, after the times.
fn incident_fields(out: &mut String, n: &Notification, incident: &Incident) {
    field(out, "Server", &server_label(incident));
    field(out, "Datacenter", &one_line(&n.datacenter));
    field(
        out,
        "Account",
        &format!("{} ({})", one_line(&n.account_login), n.account_uuid),
    );
    field(out, "Incident", &incident.id.to_string());
}

/// Writes the machines, one per line (`alias  uuid  probes`), while the
/// email's `budget` of lines lasts; the rest become `… and N more`.
fn machine_list(out: &mut String, machines: &[&MachineLine], budget: &mut usize) {
    let shown = machines.len().min(*budget);
    *budget -= shown;
    let width = machines[..shown]
        .iter()
        .map(|m| m.alias.as_deref().map_or(1, |alias| alias.chars().count()))
        .max()
        .unwrap_or(1)
        .min(MAX_ALIAS_WIDTH);
    for m in &machines[..shown] {
        let alias = m.alias.as_deref().unwrap_or("-");
        let _ = writeln!(out, "  {alias:<width$}  {}  {}", m.uuid, m.probes.join(", "));
    }
    if shown < machines.len() {
        let _ = writeln!(out, "  … and {} more", machines.len() - shown);
    }
}

/// Width of the label column in the body, so the values line up.
const LABEL_WIDTH: usize = 13;

/// One `Label:  value` line; continuation lines of a multi-line value are
/// indented under the value so the columns stay readable.
fn field(out: &mut String, label: &str, value: &str) {
    let label = format!("{label}:");
    let mut lines = value.lines();
    let first = lines.next().unwrap_or("");
    let _ = writeln!(out, "{label:<LABEL_WIDTH$}{first}");
    for line in lines {
        let _ = writeln!(out, "{:LABEL_WIDTH$}{line}", "");
    }
}

fn alarm_state(n: &Notification) -> String {
    if n.alarm_closed {
        return format!("{}, closed", n.alarm_id);
    }
    let faults = match n.alarm_fault_count {
        1 => "1 fault".to_owned(),
        count => format!("{count} faults"),
    };
    format!("{}, open ({faults})", n.alarm_id)
}

fn is_machine_up(n: &Notification) -> bool {
    n.probe.probe_type == ProbeType::MachineUp.as_str()
}

/// `web0 (uuid)` when the alias is known, else the uuid alone.
fn machine_label(n: &Notification) -> String {
    match &n.machine {
        Some(machine) => match machine.alias.as_deref().map(one_line) {
            Some(alias) if !alias.is_empty() => format!("{alias} ({})", machine.uuid),
            _ => machine.uuid.to_string(),
        },
        None => String::new(),
    }
}

/// The probe's name when it has one, else its uuid.
fn probe_label(n: &Notification) -> String {
    match n.probe.name.as_deref().map(one_line) {
        Some(name) if !name.is_empty() => name,
        _ => n.probe.uuid.to_string(),
    }
}

/// Aliases and names come from users and the platform; a newline or other
/// control character in one must not break a header or the body's layout.
fn one_line(text: &str) -> String {
    text.split(char::is_control)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

/// Quotes a login for the shell command shown in the body if it has anything
/// beyond the characters logins normally have, so copy-paste just works.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", one_line(word).replace('\'', r"'\''"))
    }
}

fn format_time(ms: EpochMs) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::Secs, true),
        None => format!("{ms} ms since the epoch (out of range)"),
    }
}

fn system_time(ms: EpochMs) -> SystemTime {
    let offset = Duration::from_millis(ms.unsigned_abs());
    let time = if ms >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    time.unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Incident, IncidentMachine, IncidentReason, MachineRef, ProbeRef};
    use uuid::Uuid;

    const NOTIFICATION: &str = "6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d001";
    const FIRST_NOTIFICATION: &str = "6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d000";
    const MACHINE: &str = "b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e";
    const SERVER: &str = "44454c4c-4800-1034-804a-b2c04f354d31";
    const PROBE: &str = "f7a3c9e1-2b4d-4f6a-8c0e-1d3b5a7c9e2f";
    const ACCOUNT: &str = "930896af-bf8c-48d4-885c-6573a94b1853";
    const EVENT: &str = "2c9d4e6f-8a1b-4c3d-9e5f-7a0b1c2d3e4f";
    /// 2024-05-01T03:12:45Z.
    const TIME: EpochMs = 1_714_533_165_000;

    fn uuid(s: &str) -> Uuid {
        s.parse().unwrap()
    }

    fn fault() -> Notification {
        Notification {
            id: uuid(NOTIFICATION),
            kind: NotificationKind::Fault,
            contact_name: "email".to_owned(),
            contact: ContactAddress::Email("jill@example.com".to_owned()),
            datacenter: "coal".to_owned(),
            account_uuid: uuid(ACCOUNT),
            account_login: "jill".to_owned(),
            alarm_id: 3,
            alarm_closed: false,
            alarm_fault_count: 1,
            probe: ProbeRef {
                uuid: uuid(PROBE),
                name: Some("web0 up".to_owned()),
                probe_type: "machine-up".to_owned(),
                group: None,
            },
            machine: Some(MachineRef {
                uuid: uuid(MACHINE),
                alias: Some("web0".to_owned()),
                server: Some(uuid(SERVER)),
            }),
            message: format!("Machine \"{MACHINE}\" has gone down."),
            event_time: TIME,
            thread_root: None,
            master_url: "http://10.99.99.20:8080".to_owned(),
            event_json: serde_json::json!({
                "type": "machine",
                "uuid": EVENT,
                "time": TIME,
                "relay": SERVER,
                "server": SERVER,
                "machine": MACHINE,
                "alias": "web0",
                "owner": ACCOUNT,
                "oldState": "running",
                "newState": "shutting_down",
                "up": false,
            }),
            incident: None,
            digest: Vec::new(),
            alarm: None,
        }
    }

    fn clear() -> Notification {
        let mut n = fault();
        n.kind = NotificationKind::Clear;
        n.alarm_closed = true;
        n.alarm_fault_count = 0;
        n.thread_root = Some(crate::notify::message_id(uuid(FIRST_NOTIFICATION), "coal"));
        n.message = format!("Machine \"{MACHINE}\" has come up.");
        n.event_time = TIME + 94_000;
        n.event_json["time"] = serde_json::json!(TIME + 94_000);
        n.event_json["oldState"] = serde_json::json!("ready");
        n.event_json["newState"] = serde_json::json!("running");
        n.event_json["up"] = serde_json::json!(true);
        n
    }

    fn snapshot_text(n: &Notification) -> String {
        let r = render(n);
        let mut text = format!("Subject: {}\nMessage-ID: {}\n", r.subject, r.message_id);
        if let Some(root) = &r.in_reply_to {
            text.push_str(&format!("In-Reply-To: {root}\n"));
        }
        text.push('\n');
        text.push_str(&r.body);
        text
    }

    #[test]
    fn fault_reads_as_machine_down() {
        let n = fault();
        assert_eq!(
            render(&n).subject,
            format!("[amon coal] Alarm 3: machine web0 ({MACHINE}) is down")
        );
        insta::assert_snapshot!("fault", snapshot_text(&n));
    }

    #[test]
    fn clear_replies_in_the_alarms_thread() {
        let n = clear();
        let r = render(&n);
        // Same subject as the fault, so every client keeps one thread.
        assert_eq!(r.subject, format!("Re: {}", render(&fault()).subject));
        assert_eq!(r.in_reply_to, n.thread_root);
        assert!(r.body.starts_with(&format!("Machine web0 ({MACHINE}) is back up.\n")));
        insta::assert_snapshot!("clear", snapshot_text(&n));
    }

    #[test]
    fn clear_without_a_thread_says_back_up() {
        let mut n = clear();
        n.thread_root = None;
        assert_eq!(
            render(&n).subject,
            format!("[amon coal] Alarm 3: machine web0 ({MACHINE}) is back up")
        );
    }

    #[test]
    fn machine_without_alias_is_named_by_uuid() {
        let mut n = fault();
        n.machine.as_mut().unwrap().alias = None;
        n.event_json["alias"] = serde_json::Value::Null;
        assert_eq!(
            render(&n).subject,
            format!("[amon coal] Alarm 3: machine {MACHINE} is down")
        );
        insta::assert_snapshot!("no_alias", snapshot_text(&n));
    }

    #[test]
    fn non_ascii_alias_is_kept() {
        let mut n = fault();
        n.machine.as_mut().unwrap().alias = Some("büro-ölpreis-東京".to_owned());
        n.event_json["alias"] = serde_json::json!("büro-ölpreis-東京");
        insta::assert_snapshot!("non_ascii_alias", snapshot_text(&n));
    }

    #[test]
    fn non_ascii_subject_and_body_are_encoded() {
        let mut n = fault();
        n.machine.as_mut().unwrap().alias = Some("büro-東京".to_owned());
        let text = String::from_utf8(to_message(&n, "no-reply@coal.example.com").unwrap().formatted()).unwrap();
        assert!(text.is_ascii(), "the message on the wire is 7-bit: {text}");
        assert!(text.contains("=?utf-8?b?YsO8cm8t5p2x5Lqs?="), "{text}");
    }

    #[test]
    fn other_probe_types_show_their_message() {
        let mut n = fault();
        n.probe.probe_type = "log-scan".to_owned();
        n.message = "Log \"/var/log/app.log\" matched /ERROR/ 3 times.".to_owned();
        let r = render(&n);
        assert_eq!(
            r.subject,
            format!("[amon coal] Alarm 3: probe web0 up faulted on machine web0 ({MACHINE})")
        );
        assert!(r
            .body
            .contains("\nMessage:     Log \"/var/log/app.log\" matched /ERROR/ 3 times.\n"));
    }

    #[test]
    fn without_machine_the_probe_is_named() {
        let mut n = fault();
        n.machine = None;
        n.probe.probe_type = "log-scan".to_owned();
        assert_eq!(render(&n).subject, "[amon coal] Alarm 3: probe web0 up faulted");
        n.probe.name = None;
        assert_eq!(
            render(&n).subject,
            format!("[amon coal] Alarm 3: probe {PROBE} faulted")
        );
        n.kind = NotificationKind::Clear;
        assert_eq!(
            render(&n).subject,
            format!("[amon coal] Alarm 3: probe {PROBE} cleared")
        );
    }

    #[test]
    fn control_characters_in_an_alias_cannot_break_the_subject() {
        let mut n = fault();
        n.machine.as_mut().unwrap().alias = Some("web0\r\nBcc: evil@example.com".to_owned());
        let subject = render(&n).subject;
        assert!(!subject.contains('\n') && !subject.contains('\r'), "{subject}");
    }

    #[test]
    fn message_id_is_derived_from_the_notification_id() {
        let n = fault();
        assert_eq!(render(&n).message_id, format!("<{NOTIFICATION}@amon.coal.invalid>"));
    }

    #[test]
    fn message_has_threading_headers() {
        let message = to_message(&clear(), "\"coal Monitoring\" <no-reply@coal.example.com>").unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(text.contains("To: jill@example.com\r\n"), "{text}");
        assert!(text.contains(&format!("Message-ID: <{NOTIFICATION}@amon.coal.invalid>\r\n")));
        assert!(text.contains(&format!("In-Reply-To: <{FIRST_NOTIFICATION}@amon.coal.invalid>\r\n")));
        assert!(text.contains(&format!("References: <{FIRST_NOTIFICATION}@amon.coal.invalid>\r\n")));
        assert!(text.contains("Date: Wed, 01 May 2024 03:14:19 +0000\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"));
    }

    #[test]
    fn first_message_has_no_threading_headers() {
        let message = to_message(&fault(), "no-reply@coal.example.com").unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(!text.contains("In-Reply-To:"));
        assert!(!text.contains("References:"));
    }

    #[test]
    fn bad_recipient_is_named() {
        let mut n = fault();
        n.contact = ContactAddress::Email("not an address".to_owned());
        let err = to_message(&n, "no-reply@coal.example.com").unwrap_err();
        assert!(matches!(err, EmailError::BadAddress { role: "recipient", .. }));
        assert!(err.to_string().contains("not an address"), "{err}");
    }

    #[test]
    fn bad_sender_is_named() {
        let err = to_message(&fault(), "nobody").unwrap_err();
        assert_eq!(err.to_string(), "bad sender email address \"nobody\"");
    }

    #[test]
    fn webhook_contact_is_not_an_email() {
        let mut n = fault();
        n.contact_name = "ops-hook".to_owned();
        n.contact = ContactAddress::Webhook("https://hooks.example.com/amon".to_owned());
        let err = to_message(&n, "no-reply@coal.example.com").unwrap_err();
        assert_eq!(err.to_string(), "contact \"ops-hook\" is not an email contact");
    }

    const INCIDENT: &str = "0d6c1e9a-5b3f-4a7d-8e2c-9f1b3d5a7c01";
    const DOWN_NOTIFICATION: &str = "6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d100";
    const BACK_NOTIFICATION: &str = "6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d101";
    const DB_MACHINE: &str = "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d";
    const BARE_MACHINE: &str = "0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f";
    const DB_PROBE: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
    const NAMELESS_PROBE: &str = "c0ffee00-1234-4abc-8def-0123456789ab";
    /// 2024-05-01T03:40:00Z: the server came back.
    const RETURNED: EpochMs = 1_714_534_800_000;

    fn machine(uuid: Uuid, alias: Option<&str>, probe: Uuid, probe_name: Option<&str>, down: bool) -> IncidentMachine {
        IncidentMachine {
            uuid,
            alias: alias.map(str::to_owned),
            probe: ProbeRef {
                uuid: probe,
                name: probe_name.map(str::to_owned),
                probe_type: "machine-up".to_owned(),
                group: None,
            },
            down,
        }
    }

    /// Jill's three machines on cn-7: web0, db0 and one without an alias
    /// watched by a probe without a name, given out of order.
    fn three_machines() -> Vec<IncidentMachine> {
        vec![
            machine(uuid(MACHINE), Some("web0"), uuid(PROBE), Some("web0 up"), true),
            machine(uuid(BARE_MACHINE), None, uuid(NAMELESS_PROBE), None, true),
            machine(uuid(DB_MACHINE), Some("db0"), uuid(DB_PROBE), Some("db0 up"), true),
        ]
    }

    /// A `ServerDown` as the flood guard builds it.
    fn server_down(machines: Vec<IncidentMachine>) -> Notification {
        let mut n = fault();
        n.id = uuid(DOWN_NOTIFICATION);
        n.kind = NotificationKind::ServerDown;
        n.alarm_id = 0;
        n.alarm_fault_count = machines.iter().filter(|m| m.down).count();
        n.message = format!("Server {SERVER} is down.");
        n.event_json = serde_json::Value::Null;
        n.incident = Some(Incident {
            id: uuid(INCIDENT),
            server: uuid(SERVER),
            hostname: Some("cn-7".to_owned()),
            reason: IncidentReason::Shutdown,
            opened: TIME,
            returned: None,
            machines,
        });
        n
    }

    /// The summary after cn-7 came back: web0 and db0 are up, the machine
    /// without an alias is still down.
    fn server_back() -> Notification {
        let mut machines = three_machines();
        for m in &mut machines {
            m.down = m.uuid == uuid(BARE_MACHINE);
        }
        let mut n = server_down(machines);
        n.id = uuid(BACK_NOTIFICATION);
        n.kind = NotificationKind::ServerBack;
        n.thread_root = Some(crate::notify::message_id(uuid(DOWN_NOTIFICATION), "coal"));
        n.message = format!("Server {SERVER} is back.");
        n.event_time = RETURNED;
        n.incident.as_mut().unwrap().returned = Some(RETURNED);
        n
    }

    /// The machine lines of a body: those indented under a list heading.
    fn listed_lines(body: &str) -> Vec<&str> {
        body.lines()
            .filter(|line| line.starts_with("  ") && !line.starts_with("    "))
            .collect()
    }

    #[test]
    fn server_down_lists_the_contacts_machines() {
        let n = server_down(three_machines());
        let r = render(&n);
        assert_eq!(
            r.subject,
            "[amon coal] Server cn-7 is down: 3 of your machines are affected"
        );
        assert_eq!(r.in_reply_to, None);
        assert!(r
            .body
            .starts_with("Server cn-7 is down: its relay announced a shutdown. 3 of your machines are affected.\n"));
        // Sorted by alias, the machine without one last.
        let listed = listed_lines(&r.body);
        assert_eq!(listed.len(), 3, "{}", r.body);
        assert!(
            listed[0].starts_with("  db0 ") && listed[1].starts_with("  web0 "),
            "{listed:?}"
        );
        assert!(
            listed[2].starts_with(&format!("  -     {BARE_MACHINE}  {NAMELESS_PROBE}")),
            "{listed:?}"
        );
        assert!(r
            .body
            .contains(&format!("    amon suppress --server {SERVER} --for 2h --notes \"…\"\n")));
        assert!(!r.body.contains("Raw event"), "no single event to show");
        insta::assert_snapshot!("server_down", snapshot_text(&n));
    }

    #[test]
    fn server_down_with_one_machine_is_singular() {
        let mut n = server_down(vec![machine(
            uuid(MACHINE),
            Some("web0"),
            uuid(PROBE),
            Some("web0 up"),
            true,
        )]);
        n.incident.as_mut().unwrap().reason = IncidentReason::HeartbeatLost;
        let r = render(&n);
        assert_eq!(
            r.subject,
            "[amon coal] Server cn-7 is down: 1 of your machines is affected"
        );
        insta::assert_snapshot!("server_down_one_machine", snapshot_text(&n));
    }

    #[test]
    fn server_down_without_hostname_is_named_by_uuid() {
        let mut n = server_down(three_machines());
        let incident = n.incident.as_mut().unwrap();
        incident.hostname = None;
        incident.reason = IncidentReason::Burst;
        let r = render(&n);
        assert_eq!(
            r.subject,
            format!("[amon coal] Server {SERVER} is down: 3 of your machines are affected")
        );
        assert!(r.body.starts_with(&format!(
            "Server {SERVER} is down: many of its machines went down within minutes. 3 of your machines are affected.\n"
        )));
        assert!(r.body.contains(&format!("\nServer:      {SERVER}\n")), "{}", r.body);
    }

    #[test]
    fn a_machine_watched_by_two_probes_is_one_machine() {
        let mut machines = three_machines();
        machines.push(machine(
            uuid(MACHINE),
            Some("web0"),
            uuid(EVENT),
            Some("web0 http"),
            true,
        ));
        let r = render(&server_down(machines));
        assert_eq!(
            r.subject,
            "[amon coal] Server cn-7 is down: 3 of your machines are affected"
        );
        assert!(
            r.body.contains(&format!("  web0  {MACHINE}  web0 http, web0 up\n")),
            "{}",
            r.body
        );
    }

    #[test]
    fn server_back_replies_in_the_down_thread() {
        let n = server_back();
        let r = render(&n);
        assert_eq!(
            r.subject,
            format!("Re: {}", render(&server_down(three_machines())).subject)
        );
        assert_eq!(r.in_reply_to, n.thread_root);
        assert!(r.body.starts_with(
            "Server cn-7 is back (since 2024-05-01T03:40:00Z): 2 of your machines are up, 1 is still down.\n"
        ));
        // The machines still down come first.
        let still_down = r.body.find("Still down (1):\n").expect("a still-down list");
        let up = r.body.find("Up (2):\n").expect("an up list");
        assert!(still_down < up);
        insta::assert_snapshot!("server_back", snapshot_text(&n));
    }

    #[test]
    fn server_back_with_all_up_has_nothing_to_do() {
        let mut n = server_back();
        n.thread_root = None;
        for m in &mut n.incident.as_mut().unwrap().machines {
            m.down = false;
        }
        let r = render(&n);
        assert_eq!(r.subject, "[amon coal] Server cn-7 is back");
        assert!(r
            .body
            .starts_with("Server cn-7 is back (since 2024-05-01T03:40:00Z): 3 of your machines are up.\n"));
        assert!(!r.body.contains("Still down"));
        assert!(!r.body.contains("amon suppress"));
        assert!(r.body.contains("\nThere is nothing more to do.\n"));
    }

    #[test]
    fn server_back_without_a_thread_says_what_is_still_down() {
        let mut n = server_back();
        n.thread_root = None;
        assert_eq!(
            render(&n).subject,
            "[amon coal] Server cn-7 is back: 1 of your machines is still down"
        );
    }

    fn many_machines(count: u128, down: impl Fn(u128) -> bool) -> Vec<IncidentMachine> {
        // Given in reverse, so the list is sorted by the renderer.
        (0..count)
            .rev()
            .map(|i| {
                let alias = format!("zone-{i:04}");
                machine(
                    Uuid::from_u128(0x1000 + i),
                    Some(&alias),
                    uuid(PROBE),
                    Some("zones up"),
                    down(i),
                )
            })
            .collect()
    }

    #[test]
    fn a_long_list_is_capped() {
        let n = server_down(many_machines(600, |_| true));
        let r = render(&n);
        assert_eq!(
            r.subject,
            "[amon coal] Server cn-7 is down: 600 of your machines are affected"
        );
        let listed = listed_lines(&r.body);
        assert_eq!(listed.len(), MAX_LISTED + 1, "500 machines and the rest counted");
        assert_eq!(listed.last(), Some(&"  … and 100 more"));
        // The list's tail, from the last few machines shown to the end.
        let tail_start = r.body.find("  zone-0497 ").expect("zone-0497 is listed");
        insta::assert_snapshot!("server_down_capped_tail", &r.body[tail_start..]);
    }

    #[test]
    fn the_cap_counts_both_lists_of_a_summary() {
        let mut n = server_back();
        n.incident.as_mut().unwrap().machines = many_machines(700, |i| i % 7 < 4);
        let r = render(&n);
        assert_eq!(
            r.subject,
            "Re: [amon coal] Server cn-7 is down: 700 of your machines are affected"
        );
        assert!(r.body.starts_with(
            "Server cn-7 is back (since 2024-05-01T03:40:00Z): 300 of your machines are up, 400 are still down.\n"
        ));
        let listed = listed_lines(&r.body);
        assert_eq!(listed.len(), MAX_LISTED + 1, "{listed:?}");
        // All 400 still down are listed, then 100 of the 300 up.
        assert_eq!(listed.last(), Some(&"  … and 200 more"));
        assert!(listed[399].starts_with("  zone-0696 "), "{}", listed[399]);
        assert!(listed[400].starts_with("  zone-0004 "), "{}", listed[400]);
    }

    #[test]
    fn incident_message_is_dated_when_the_server_went_down_or_came_back() {
        let mut n = server_down(three_machines());
        n.event_time = TIME + 60_000;
        let text = String::from_utf8(to_message(&n, "no-reply@coal.example.com").unwrap().formatted()).unwrap();
        assert!(text.contains("Date: Wed, 01 May 2024 03:12:45 +0000\r\n"), "{text}");
        assert!(text.contains(&format!("Message-ID: <{DOWN_NOTIFICATION}@amon.coal.invalid>\r\n")));
        assert!(!text.contains("In-Reply-To:"));

        let text = String::from_utf8(
            to_message(&server_back(), "no-reply@coal.example.com")
                .unwrap()
                .formatted(),
        )
        .unwrap();
        assert!(text.contains("Date: Wed, 01 May 2024 03:40:00 +0000\r\n"), "{text}");
        assert!(text.contains(&format!("In-Reply-To: <{DOWN_NOTIFICATION}@amon.coal.invalid>\r\n")));
        assert!(text.contains(&format!("References: <{DOWN_NOTIFICATION}@amon.coal.invalid>\r\n")));
        assert!(text.is_ascii(), "the ellipsis is encoded on the wire");
    }

    #[test]
    fn incident_kind_without_incident_renders_like_a_fault_or_clear() {
        let mut n = fault();
        n.kind = NotificationKind::ServerDown;
        assert_eq!(render(&n).subject, render(&fault()).subject);
        let mut n = clear();
        n.kind = NotificationKind::ServerBack;
        assert_eq!(render(&n).body, render(&clear()).body);
    }

    #[test]
    fn a_digest_lists_what_the_rate_limit_held_back() {
        let mut digest = fault();
        digest.kind = NotificationKind::Digest;
        digest.id = uuid::Uuid::from_u128(0xd1);
        digest.alarm_id = 0;
        digest.machine = None;
        let mut second = fault();
        second.alarm_id = 4;
        second.event_time += 60_000;
        let mut third = clear();
        third.alarm_id = 3;
        third.event_time += 120_000;
        digest.digest = vec![fault(), second, third];
        let rendered = render(&digest);
        insta::assert_snapshot!("digest", format!("Subject: {}\n\n{}", rendered.subject, rendered.body));
        assert!(rendered.subject.contains("3 more notifications"));
    }
}
