//! What a received email or webhook says, read back into one shape: its
//! kind, the machine it is about, the machines a server message lists, its
//! recipient and its stable id (Message-ID, or the webhook's `id`), so the
//! scenarios can count, match and time notifications whatever the medium.
//! Pure: the sinks record, this reads.

use std::time::Instant;

use uuid::Uuid;

use crate::smtp_sink::Email;
use crate::webhook_sink::Hook;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Fault,
    Clear,
    ServerDown,
    ServerBack,
    Digest,
    Other,
}

#[derive(Debug, Clone)]
pub struct Notice {
    pub at: Instant,
    pub kind: Kind,
    /// The machine of a fault or clear.
    pub machine: Option<Uuid>,
    /// The machines a server-down or server-back message lists.
    pub machines: Vec<Uuid>,
    /// The recipient (email address) or the webhook path.
    pub to: String,
    /// Message-ID or notification id: the same for a resent duplicate.
    pub id: String,
}

/// Reads one email as Amon writes them (`src/notify/email.rs`): subjects
/// `[amon DC] Alarm N: machine ALIAS (UUID) is down` (a clear is the same
/// subject with `Re: `, its body saying "is back up"), `Server X is down: …`
/// (`Re: ` for the summary) and `N more notifications for …`.
pub fn from_email(email: &Email) -> Notice {
    let subject = email.subject.as_str();
    let reply = subject.starts_with("Re: ");
    let first_line = email.body.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let kind = if subject.contains("more notifications for") {
        Kind::Digest
    } else if subject.contains("] Server ") {
        if reply {
            Kind::ServerBack
        } else {
            Kind::ServerDown
        }
    } else if subject.contains(": machine ") {
        if first_line.contains("is back up") {
            Kind::Clear
        } else if !reply {
            Kind::Fault
        } else {
            Kind::Other
        }
    } else {
        Kind::Other
    };
    let machine = match kind {
        Kind::Fault | Kind::Clear => subject
            .rsplit_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .and_then(|(id, _)| Uuid::parse_str(id).ok()),
        _ => None,
    };
    let machines = match kind {
        Kind::ServerDown | Kind::ServerBack => listed_machines(&email.body),
        _ => Vec::new(),
    };
    Notice {
        at: email.at,
        kind,
        machine,
        machines,
        to: email.rcpt_to.join(","),
        id: email.message_id.clone(),
    }
}

/// The machine uuids under "Affected machines (N):", one per line (alias,
/// uuid, probe), up to the first blank line.
fn listed_machines(body: &str) -> Vec<Uuid> {
    body.lines()
        .skip_while(|l| !l.trim_start().starts_with("Affected machines") && !l.contains("machines ("))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().find_map(|w| Uuid::parse_str(w).ok()))
        .collect()
}

/// Reads one Amon webhook body (`notify::transport::webhook_body`).
pub fn from_hook(hook: &Hook) -> Notice {
    let body = &hook.body;
    let kind = match body["kind"].as_str() {
        Some("fault") => Kind::Fault,
        Some("clear") => Kind::Clear,
        Some("serverdown") => Kind::ServerDown,
        Some("serverback") => Kind::ServerBack,
        Some("digest") => Kind::Digest,
        _ => Kind::Other,
    };
    let machine = body["event"]["machine"].as_str().and_then(|m| Uuid::parse_str(m).ok());
    let machines = body["incident"]["machines"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| m["uuid"].as_str().and_then(|u| Uuid::parse_str(u).ok()))
                .collect()
        })
        .unwrap_or_default();
    Notice {
        at: hook.at,
        kind,
        machine: if matches!(kind, Kind::Fault | Kind::Clear) {
            machine
        } else {
            None
        },
        machines,
        to: hook.path.clone(),
        id: body["id"].as_str().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e";

    fn email(subject: &str, body: &str) -> Email {
        Email {
            at: Instant::now(),
            rcpt_to: vec!["load0@load.invalid".into()],
            subject: subject.into(),
            message_id: "<1@x>".into(),
            body: body.into(),
        }
    }

    #[test]
    fn fault_and_clear_emails_name_their_machine() {
        let fault = from_email(&email(
            &format!("[amon load] Alarm 3: machine web0 ({M}) is down"),
            &format!("Machine web0 ({M}) is down.\n"),
        ));
        assert_eq!((fault.kind, fault.machine), (Kind::Fault, Some(M.parse().unwrap())));
        let clear = from_email(&email(
            &format!("Re: [amon load] Alarm 3: machine web0 ({M}) is down"),
            &format!("Machine web0 ({M}) is back up.\n"),
        ));
        assert_eq!((clear.kind, clear.machine), (Kind::Clear, Some(M.parse().unwrap())));
    }

    #[test]
    fn a_server_down_email_lists_its_machines() {
        let body = format!(
            "Server cn-7 is down.\n\nWhen: x\n\nAffected machines (2):\n  web0  {M}  web0 up\n  -     0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f  c0ffee00-1234-4abc-8def-0123456789ab\n\nWhen the server is back…\n"
        );
        let n = from_email(&email(
            "[amon load] Server cn-7 is down: 2 of your machines are affected",
            &body,
        ));
        assert_eq!(n.kind, Kind::ServerDown);
        assert_eq!(n.machines.len(), 2);
        assert_eq!(n.machines[0], M.parse::<Uuid>().unwrap());
        let back = from_email(&email(
            "Re: [amon load] Server cn-7 is down: 2 of your machines are affected",
            &body,
        ));
        assert_eq!(back.kind, Kind::ServerBack);
    }

    #[test]
    fn webhook_bodies_are_read_by_kind() {
        let hook = Hook {
            at: Instant::now(),
            path: "/amon/load0".into(),
            body: serde_json::json!({"id": "n1", "kind": "serverdown", "event": null,
                "incident": {"machines": [{"uuid": M}]}}),
        };
        let n = from_hook(&hook);
        assert_eq!((n.kind, n.machines.len(), n.id.as_str()), (Kind::ServerDown, 1, "n1"));
        let hook = Hook {
            body: serde_json::json!({"id": "n2", "kind": "fault", "event": {"machine": M}}),
            ..hook
        };
        assert_eq!(from_hook(&hook).machine, Some(M.parse().unwrap()));
    }
}
