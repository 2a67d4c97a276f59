//! Delivery of a rendered notification, whichever way it goes: the
//! [`Mailer`] hands an email to an SMTP server ([`super::smtp`]) or writes it
//! as a `.eml` file (`eml.rs`, the embedded default when no SMTP server
//! is configured, SPEC §7), and posts a webhook contact's JSON
//! ([`super::webhook`]). Every failure is classified as temporary (retry
//! with backoff: connection refused, timeouts, SMTP 4xx, HTTP 5xx) or
//! permanent (give up into the dead-letter list: SMTP 5xx, HTTP 4xx, bad
//! addresses, configuration the server cannot work with), because that is
//! the one thing the notifier needs to know. Retrying, backoff and the outbox
//! live with the notifier, not here.

use std::path::PathBuf;
use std::time::Duration;

use super::email::{self, EmailError};
use super::smtp::SmtpRelay;
use super::{eml, ContactAddress, Notification};
use crate::config::{SmtpCredentials, SmtpUrlError};
use crate::model::EpochMs;

pub use super::webhook::Webhooks;

/// Why a delivery failed, in the only terms the notifier acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying later: the server is down, slow or said 4xx.
    #[error("temporary delivery failure: {0}")]
    Temporary(String),
    /// Retrying will not help: the server said 5xx, or the address is bad.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

impl DeliveryError {
    pub fn is_temporary(&self) -> bool {
        matches!(self, DeliveryError::Temporary(_))
    }
}

impl From<EmailError> for DeliveryError {
    /// A notification that cannot become a valid message never will.
    fn from(err: EmailError) -> Self {
        DeliveryError::Permanent(error_chain(&err))
    }
}

/// Why a mailer could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Url(#[from] SmtpUrlError),
    #[error("cannot set up TLS for smtp server {server}: {detail}")]
    Tls { server: String, detail: String },
}

/// Where notifications go.
#[derive(Debug, Clone)]
pub enum Mailer {
    /// An SMTP server, e.g. the postfix next to the master.
    Smtp(SmtpRelay),
    /// A directory that receives one `<notification id>.eml` per message.
    EmlDir(PathBuf),
}

impl Mailer {
    /// An SMTP mailer from `smtp://host[:port]` (port 25 by default: the
    /// usual setup is a local relay, as the reference's postfix on
    /// 127.0.0.1:25), `smtp://host[:port]?tls=starttls` (STARTTLS required),
    /// `smtp://host[:port]?tls=opportunistic` (STARTTLS if offered) or
    /// `smtps://host[:port]` (implicit TLS, port 465 by default). Server
    /// certificates are checked against the Mozilla roots (webpki-roots).
    ///
    /// Credentials come from the configuration, never from the URL. Must be
    /// called inside a tokio runtime: the connection pool starts a task that
    /// closes idle connections.
    pub fn smtp(url: &str, credentials: Option<SmtpCredentials>) -> Result<Mailer, TransportError> {
        Ok(Mailer::Smtp(SmtpRelay::new(url, credentials)?))
    }

    /// The same mailer with `timeout` as the bound on one message's whole
    /// SMTP exchange (`notify.email.timeout`); `.eml` files take no timeout.
    pub fn with_smtp_timeout(self, timeout: Duration) -> Mailer {
        match self {
            Mailer::Smtp(relay) => Mailer::Smtp(relay.with_timeout(timeout)),
            other => other,
        }
    }

    /// A mailer that writes `.eml` files into `dir` (created on first use).
    pub fn eml_dir(dir: impl Into<PathBuf>) -> Mailer {
        Mailer::EmlDir(dir.into())
    }

    /// Delivers one notification: an email sent as from `from` (e.g.
    /// `"coal Monitoring" <no-reply@example.com>`), or a webhook POST through
    /// `webhooks` (which goes over HTTP whichever way email goes) whose
    /// `time` is `now_ms`. Must run on the arbiter that built `webhooks`.
    pub async fn deliver_at(
        &self,
        n: &Notification,
        from: &str,
        now_ms: EpochMs,
        webhooks: &Webhooks,
    ) -> Result<(), DeliveryError> {
        let recipient = match &n.contact {
            ContactAddress::Email(address) => address,
            ContactAddress::Webhook(url) => return webhooks.post(url, n, now_ms).await,
        };
        let message = email::to_message(n, from)?;
        match self {
            Mailer::Smtp(relay) => relay.send(recipient, message).await,
            Mailer::EmlDir(dir) => eml::write(dir, n, &message.formatted()).await,
        }
    }
}

/// An error and its sources on one line, since the notifier logs only this
/// string (lettre's own Display already includes its first source, which we
/// then skip to avoid saying it twice).
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use uuid::Uuid;

    use crate::notify::{MachineRef, NotificationKind, ProbeRef};

    pub(crate) const FROM: &str = "\"coal Monitoring\" <no-reply@coal.example.com>";

    /// Jill's alarm 3: machine web0 is down (also the notifier's tests').
    pub(crate) fn notification() -> Notification {
        let machine: Uuid = "b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e".parse().unwrap();
        Notification {
            id: "6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d001".parse().unwrap(),
            kind: NotificationKind::Fault,
            contact_name: "email".to_owned(),
            contact: ContactAddress::Email("jill@example.com".to_owned()),
            datacenter: "coal".to_owned(),
            account_uuid: "930896af-bf8c-48d4-885c-6573a94b1853".parse().unwrap(),
            account_login: "jill".to_owned(),
            alarm_id: 3,
            alarm_closed: false,
            alarm_fault_count: 1,
            probe: ProbeRef {
                uuid: "f7a3c9e1-2b4d-4f6a-8c0e-1d3b5a7c9e2f".parse().unwrap(),
                name: Some("web0 up".to_owned()),
                probe_type: "machine-up".to_owned(),
                group: None,
            },
            machine: Some(MachineRef {
                uuid: machine,
                alias: Some("web0".to_owned()),
                server: None,
            }),
            message: format!("Machine \"{machine}\" has gone down."),
            event_time: 1_714_533_165_000,
            thread_root: None,
            master_url: "http://10.99.99.20:8080".to_owned(),
            event_json: serde_json::json!({"type": "machine", "up": false}),
            incident: None,
            digest: Vec::new(),
            alarm: None,
        }
    }

    /// Jill's alarm 3 as the store keeps it: web0's machine-up fault,
    /// notified once.
    pub(crate) fn alarm() -> crate::model::Alarm {
        let n = notification();
        let machine = n.machine.as_ref().unwrap().uuid;
        let event = serde_json::json!({
            "v": 1, "user": n.account_uuid, "probeUuid": n.probe.uuid, "clear": false,
            "data": {"message": n.message, "value": null,
                     "details": {"machine": machine, "oldState": "running", "newState": "stopped"}},
            "machine": machine, "uuid": "0b8d3f4c-6a1e-4f2b-9c7d-5e3a1b2c4d5e", "time": n.event_time,
            "agent": "44454c4c-4800-1034-804a-b2c04f354d31", "agentAlias": "web0",
            "relay": "44454c4c-4800-1034-804a-b2c04f354d31",
        });
        serde_json::from_value(serde_json::json!({
            "user": n.account_uuid, "id": n.alarm_id, "probe": n.probe.uuid,
            "closed": false, "suppressed": false, "timeOpened": n.event_time + 12,
            "timeClosed": null, "timeLastEvent": n.event_time, "numEvents": 1,
            "faults": [{"type": "probe", "probe": n.probe.uuid, "event": event,
                        "timeFaulted": n.event_time + 12, "notified": true, "folded": false}],
            "maintFaults": [], "numNotifications": 1,
        }))
        .unwrap()
    }

    /// [`notification`] to a webhook contact.
    pub(crate) fn webhook(url: String) -> Notification {
        let mut n = notification();
        n.contact_name = "ops-hook".to_owned();
        n.contact = ContactAddress::Webhook(url);
        let alarm = alarm();
        n.event_json = serde_json::to_value(&alarm.faults[0].event).unwrap();
        n.alarm = Some(Box::new(alarm));
        n
    }

    /// The headers of an RFC 5322 message, unfolded, as (name, value) pairs.
    pub(crate) fn headers(text: &str) -> Vec<(String, String)> {
        let head = text.split_once("\r\n\r\n").expect("a blank line ends the headers").0;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().expect("a folded line follows a header");
                last.1.push_str(line);
            } else {
                let (name, value) = line.split_once(':').expect("a header line has a colon");
                headers.push((name.to_owned(), value.trim().to_owned()));
            }
        }
        headers
    }

    pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Delivers as a notifier worker would, now.
    pub(crate) async fn deliver(mailer: &Mailer, n: &Notification) -> Result<(), DeliveryError> {
        let now = crate::clock::Clock::system().now_ms();
        mailer.deliver_at(n, FROM, now, &Webhooks::new()).await
    }

    #[tokio::test]
    async fn bad_address_is_permanent() {
        let tmp = tempfile::tempdir().unwrap();
        let mut n = notification();
        n.contact = ContactAddress::Email("jill at example".to_owned());
        let err = deliver(&Mailer::eml_dir(tmp.path()), &n).await.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("jill at example")),
            "{err}"
        );
    }
}
