//! Notifications: what we tell a contact, rendered for a human, and how it is
//! delivered (SMTP via lettre, `.eml` files, webhooks).
//!
//! This module owns the text of every email and the delivery transports. It
//! does not decide *whether* to notify (that is the alarm actor's job) and does
//! not keep the outbox (that is the store's).

pub mod email;
mod eml;
#[cfg(test)]
pub(crate) mod fake_webhook;
pub mod limit;
pub mod smtp;
pub mod transport;
pub mod webhook;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::EpochMs;

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    /// A fault is still open after the hold.
    Fault,
    /// A notified fault cleared.
    Clear,
    /// Notifications held back by the contact's rate limit, in one message
    /// (see [`Notification::digest`]).
    Digest,
    /// A whole server is down: one message per contact for all its machines
    /// (the flood guard, SPEC §6); details in [`Notification::incident`].
    ServerDown,
    /// The server of an announced incident is back: a summary.
    ServerBack,
}

/// Why a server incident opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentReason {
    /// The relay announced a shutdown.
    Shutdown,
    /// The relay stopped sending heartbeats.
    HeartbeatLost,
    /// Many of the server's machines went down within the hold.
    Burst,
}

/// One of the contact's machines on an incident's server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentMachine {
    pub uuid: Uuid,
    pub alias: Option<String>,
    pub probe: ProbeRef,
    /// Down at the time of the message.
    pub down: bool,
}

/// A server incident as one contact sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id of the incident (threads the down and back messages).
    pub id: Uuid,
    pub server: Uuid,
    pub hostname: Option<String>,
    pub reason: IncidentReason,
    pub opened: EpochMs,
    /// When the server came back (`ServerBack` only).
    pub returned: Option<EpochMs>,
    /// This contact's machines on the server.
    pub machines: Vec<IncidentMachine>,
}

/// Where a notification goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "medium", content = "address", rename_all = "lowercase")]
pub enum ContactAddress {
    Email(String),
    Webhook(String),
}

/// The machine a notification is about, as far as we know it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRef {
    pub uuid: Uuid,
    pub alias: Option<String>,
    pub server: Option<Uuid>,
}

/// The probe that faulted or cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRef {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub probe_type: String,
    pub group: Option<Uuid>,
}

/// One message to one contact, with everything needed to render and deliver
/// it. Stored in the outbox as JSON, so it must stay self-contained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable id: the `Message-ID` is derived from it, so a rare duplicate
    /// delivery is recognisable.
    pub id: Uuid,
    pub kind: NotificationKind,
    pub contact_name: String,
    pub contact: ContactAddress,
    pub datacenter: String,
    pub account_uuid: Uuid,
    pub account_login: String,
    pub alarm_id: u64,
    /// Whether the alarm is closed after this change.
    pub alarm_closed: bool,
    /// Open faults on the alarm after this change (not counting maintenance).
    pub alarm_fault_count: usize,
    pub probe: ProbeRef,
    pub machine: Option<MachineRef>,
    /// The event's message, e.g. `Machine "…" has gone down.`.
    pub message: String,
    /// When it happened (the event's time).
    pub event_time: EpochMs,
    /// The `Message-ID` of the alarm's first notification to this contact,
    /// for threading (`None` for the first one).
    pub thread_root: Option<String>,
    /// The master's base URL, to show the suppress command in the email.
    pub master_url: String,
    /// The raw event, shown last for the curious.
    pub event_json: serde_json::Value,
    /// For `ServerDown`/`ServerBack`: the incident (then `alarm_id` is 0 and
    /// `probe`/`machine` describe the first affected machine only).
    #[serde(default)]
    pub incident: Option<Incident>,
    /// For `Digest`: the notifications it stands for, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digest: Vec<Notification>,
    /// For a webhook contact: the whole alarm as `GET …/alarms/:id` showed
    /// it right after the change that decided this notification (kept in
    /// the outbox with it, so a retry an hour later sends the same alarm).
    /// `None` for email, which renders from the fields above, and for
    /// server incidents and digests, which are about no one alarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<Box<crate::model::Alarm>>,
}

/// Turns contact names into addresses ([`AccountBook::contact`]: the
/// account's stored contacts, the implicit `email`, and its attributes ending
/// in `email` or `webhook`). Unknown names are skipped with a warning (the
/// API refuses them on probes and groups, so this means a contact deleted
/// since).
///
/// [`AccountBook::contact`]: crate::model::AccountBook::contact
pub fn resolve_contacts(names: &[String], book: &crate::model::AccountBook) -> Vec<(String, ContactAddress)> {
    use crate::model::Medium;
    names
        .iter()
        .filter_map(|name| {
            let contact = match book.contact(name) {
                Ok(contact) => contact,
                Err(why) => {
                    tracing::warn!(contact = %name, account = %book.account.login, reason = %why, "unknown contact; not notified");
                    return None;
                }
            };
            let address = match contact.medium {
                Medium::Email => ContactAddress::Email(contact.address),
                Medium::Webhook => ContactAddress::Webhook(contact.address),
            };
            Some((name.clone(), address))
        })
        .collect()
}

/// The `Message-ID` of a notification: stable, so a duplicate delivery is
/// recognisable, and derivable, so later notifications can thread to it.
pub fn message_id(id: Uuid, datacenter: &str) -> String {
    format!("<{id}@amon.{datacenter}.invalid>")
}
