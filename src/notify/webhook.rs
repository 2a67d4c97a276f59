//! Webhooks: a notification POSTed as JSON in Amon's shape
//! ([`webhook_body`]), over connections kept alive per arbiter
//! ([`Webhooks`]), and the sorting of HTTP failures into temporary and
//! permanent. No error shows a webhook's path or query, which often carry a
//! token.

use std::time::Duration;

use super::transport::{error_chain, DeliveryError};
use super::Notification;
use crate::model::EpochMs;

/// How long a webhook may take, from connecting to the response's head.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this much of a response's body is read (the rest closes the
/// connection), and at most [`WEBHOOK_SNIPPET_CHARS`] of an error's shown
/// in the error.
const WEBHOOK_BODY_LIMIT: usize = 4096;
/// How long reading that body may take after the head.
const WEBHOOK_BODY_TIMEOUT: Duration = Duration::from_secs(2);
const WEBHOOK_SNIPPET_CHARS: usize = 200;

const USER_AGENT: &str = concat!("amon/", env!("CARGO_PKG_VERSION"));

/// The HTTP client that posts webhooks, kept for every delivery so that
/// connections to a receiver stay open between notifications (awc keeps an
/// idle connection 15 s and checks it is still open before reusing it). An
/// awc client belongs to the arbiter (thread and runtime) that built it and
/// cannot leave it, so the notifier pool builds one on its arbiter and its
/// workers there share it; cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct Webhooks {
    client: awc::Client,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks::new()
    }
}

impl Webhooks {
    pub fn new() -> Webhooks {
        Webhooks {
            client: awc::Client::builder()
                .timeout(WEBHOOK_TIMEOUT)
                .disable_redirects()
                .finish(),
        }
    }

    /// POSTs the notification to a webhook contact as JSON (Amon's shape,
    /// see [`webhook_body`]). Any 2xx is success; 5xx, 408, 429, timeouts
    /// and connection failures are temporary; other statuses are permanent
    /// (a 4xx will not change by itself, and redirects are not followed: a
    /// POST should not wander, so the contact's URL must be the final one).
    pub(super) async fn post(&self, url: &str, n: &Notification, now_ms: EpochMs) -> Result<(), DeliveryError> {
        let target = webhook_target(url)?;
        let body = webhook_body(n, now_ms);
        let request = self
            .client
            .post(url.trim())
            .insert_header((awc::http::header::USER_AGENT, USER_AGENT))
            .insert_header((awc::http::header::CONTENT_TYPE, "application/json"))
            .send_json(&body);
        let mut response = match tokio::time::timeout(WEBHOOK_TIMEOUT, request).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(classify_send_error(&err, &target)),
            Err(_elapsed) => {
                return Err(DeliveryError::Temporary(format!(
                    "webhook {target} did not answer within {}s",
                    WEBHOOK_TIMEOUT.as_secs()
                )))
            }
        };
        let status = response.status();
        // Read to its end, so that awc can keep the connection for the next
        // webhook (it closes one whose answer was left unread). A success
        // does not depend on it: a body too long or too slow only costs
        // the connection.
        let answer = tokio::time::timeout(WEBHOOK_BODY_TIMEOUT, response.body().limit(WEBHOOK_BODY_LIMIT)).await;
        if status.is_success() {
            return Ok(());
        }
        let snippet = match answer {
            Ok(Ok(bytes)) => snippet(&bytes),
            _ => String::new(),
        };
        Err(classify_status(status, &target, &snippet))
    }
}

/// Checks a webhook URL and returns how errors name it: `scheme://host[:port]`
/// only, since webhook paths and queries often carry a token.
fn webhook_target(url: &str) -> Result<String, DeliveryError> {
    let bad =
        |reason: &str| DeliveryError::Permanent(format!("bad webhook url {}: {reason}", webhook_origin_text(url)));
    let uri: awc::http::Uri = url.trim().parse().map_err(|_| bad("not a valid url"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad("must start with http:// or https://"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    Ok(match authority.port_u16() {
        Some(port) => format!("{}://{}:{port}", scheme.to_ascii_lowercase(), authority.host()),
        None => format!("{}://{}", scheme.to_ascii_lowercase(), authority.host()),
    })
}

/// The scheme and host of a URL that may not parse, for its error message.
fn webhook_origin_text(url: &str) -> String {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{:?}", url.chars().take(40).collect::<String>());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}")
}

/// The JSON a webhook receives. Amon's shape: the whole `alarm` (as `GET
/// …/alarms/:id` shows it, kept with the notification since it was
/// decided), the event's `message`, the `time` of sending in ms, the
/// `datacenter` and the full `event`; plus what this rebuild knows beyond
/// it: the notification `id` (stable across retries, so a receiver can drop
/// a duplicate), its `kind`, the server `incident` for flood-guard messages
/// (which are about no one alarm: `alarm` and `event` are `null`) and the
/// held notifications of a `digest`, each with its alarm.
pub fn webhook_body(n: &Notification, now_ms: EpochMs) -> serde_json::Value {
    let mut body = serde_json::json!({
        "id": n.id,
        "kind": n.kind,
        "alarm": n.alarm,
        "message": n.message,
        "time": now_ms,
        "datacenter": n.datacenter,
        "event": n.event_json,
    });
    if let Some(incident) = &n.incident {
        body["incident"] = serde_json::to_value(incident).unwrap_or(serde_json::Value::Null);
    }
    if !n.digest.is_empty() {
        body["digest"] = n
            .digest
            .iter()
            .map(|held| {
                serde_json::json!({
                    "kind": held.kind,
                    "alarm": held.alarm,
                    "message": held.message,
                    "time": held.event_time,
                    "event": held.event_json,
                })
            })
            .collect();
    }
    body
}

fn classify_send_error(err: &awc::error::SendRequestError, target: &str) -> DeliveryError {
    use awc::error::{ConnectError, SendRequestError};
    match err {
        SendRequestError::Url(_) | SendRequestError::Http(_) | SendRequestError::TunnelNotSupported => {
            DeliveryError::Permanent(format!("cannot post to webhook {target}: {err}"))
        }
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => DeliveryError::Temporary(
            format!("webhook {target} did not answer within {}s", WEBHOOK_TIMEOUT.as_secs()),
        ),
        _ => DeliveryError::Temporary(format!("cannot reach webhook {target}: {}", error_chain(err))),
    }
}

fn classify_status(status: awc::http::StatusCode, target: &str, snippet: &str) -> DeliveryError {
    let said = if snippet.is_empty() {
        format!("webhook {target} answered {status}")
    } else {
        format!("webhook {target} answered {status}: {snippet}")
    };
    let retry = status.is_server_error()
        || status == awc::http::StatusCode::REQUEST_TIMEOUT
        || status == awc::http::StatusCode::TOO_MANY_REQUESTS;
    if retry {
        DeliveryError::Temporary(said)
    } else if status.is_redirection() {
        DeliveryError::Permanent(format!("{said} (redirects are not followed: use the final url)"))
    } else {
        DeliveryError::Permanent(said)
    }
}

/// The start of a response body on one line, for an error message.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() > WEBHOOK_SNIPPET_CHARS {
        words = words.chars().take(WEBHOOK_SNIPPET_CHARS).collect::<String>() + "…";
    }
    words
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use uuid::Uuid;

    use super::*;
    use crate::notify::fake_webhook::{FakeWebhook, Posted};
    use crate::notify::transport::tests::{alarm, deliver, notification, webhook, FROM};
    use crate::notify::transport::Mailer;
    use crate::notify::{Incident, IncidentMachine, IncidentReason, NotificationKind};

    /// When the tests' webhooks are sent.
    const SENT: EpochMs = 1_714_533_200_000;

    async fn post(status: &'static str) -> (Result<(), DeliveryError>, Posted) {
        let receiver = FakeWebhook::answering(status);
        let n = webhook(receiver.url("/hooks/amon?token=t0ken"));
        let tmp = tempfile::tempdir().unwrap();
        let result = Mailer::eml_dir(tmp.path())
            .deliver_at(&n, FROM, SENT, &Webhooks::new())
            .await;
        (result, receiver.next())
    }

    #[actix_rt::test]
    async fn webhook_connections_are_kept_alive_across_deliveries() {
        let receiver = FakeWebhook::answering("200 OK");
        let tmp = tempfile::tempdir().unwrap();
        let mailer = Mailer::eml_dir(tmp.path());
        let webhooks = Webhooks::new();
        for path in ["/first", "/second", "/third"] {
            let n = webhook(receiver.url(path));
            mailer.deliver_at(&n, FROM, SENT, &webhooks).await.unwrap();
            assert!(receiver.next().head.starts_with(&format!("POST {path} ")));
        }
        assert_eq!(receiver.accepted(), 1, "one connection for every delivery");
    }

    #[actix_rt::test]
    async fn a_webhook_gets_amons_json_shape() {
        let (result, request) = post("200 OK").await;
        result.unwrap();
        assert!(
            request.head.starts_with("POST /hooks/amon?token=t0ken HTTP/1.1"),
            "{request:?}"
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert!(request.header("user-agent").unwrap().starts_with("amon/"));
        let body = request.json();
        // The alarm exactly as the Master API serialises it, not a summary.
        assert_eq!(body["alarm"], serde_json::to_value(alarm()).unwrap());
        insta::assert_json_snapshot!("webhook_fault", body);
    }

    #[actix_rt::test]
    async fn a_webhook_5xx_is_temporary() {
        let (result, _) = post("500 Internal Server Error").await;
        let err = result.unwrap_err();
        assert!(err.is_temporary(), "{err}");
        let text = err.to_string();
        assert!(text.contains("500") && text.contains("said"), "{text}");
        assert!(
            !text.contains("t0ken") && !text.contains("/hooks"),
            "no path in errors: {text}"
        );
    }

    #[actix_rt::test]
    async fn a_webhook_4xx_is_permanent_but_429_is_temporary() {
        let (result, _) = post("404 Not Found").await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("404")),
            "{err}"
        );

        let (result, _) = post("429 Too Many Requests").await;
        assert!(result.unwrap_err().is_temporary());
    }

    #[actix_rt::test]
    async fn a_webhook_redirect_is_not_followed() {
        let (result, _) = post("302 Found").await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("302") && m.contains("redirect")),
            "{err}"
        );
    }

    #[actix_rt::test]
    async fn an_unreachable_webhook_is_temporary() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let tmp = tempfile::tempdir().unwrap();
        let n = webhook(format!("http://127.0.0.1:{port}/hook"));
        let err = deliver(&Mailer::eml_dir(tmp.path()), &n).await.unwrap_err();
        assert!(err.is_temporary(), "{err}");
        assert!(err.to_string().contains(&format!("http://127.0.0.1:{port}")), "{err}");
    }

    #[actix_rt::test]
    async fn https_webhooks_speak_tls() {
        // Against a clear-text server the TLS handshake fails: https is
        // really attempted (not refused as unsupported), and a failed
        // handshake is worth retrying.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        });
        let tmp = tempfile::tempdir().unwrap();
        let n = webhook(format!("https://127.0.0.1:{port}/hook"));
        let err = deliver(&Mailer::eml_dir(tmp.path()), &n).await.unwrap_err();
        assert!(err.is_temporary(), "{err}");
        assert!(err.to_string().contains(&format!("https://127.0.0.1:{port}")), "{err}");
        server.join().unwrap();
    }

    #[actix_rt::test]
    async fn only_http_webhooks_are_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        let mailer = Mailer::eml_dir(tmp.path());
        for url in [
            "ftp://hooks.example.com/x",
            "hooks.example.com/x",
            "http://",
            "not a url",
        ] {
            let err = deliver(&mailer, &webhook(url.to_owned())).await.unwrap_err();
            assert!(
                matches!(&err, DeliveryError::Permanent(m) if m.contains("bad webhook url")),
                "{url}: {err}"
            );
        }
        let err = deliver(&mailer, &webhook("ftp://jill:s3cret@hooks.example.com/x".to_owned()))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn webhook_body_carries_incidents_and_digests() {
        let url = "https://hooks.example.com/amon".to_owned();
        let event = serde_json::to_value(&alarm().faults[0].event).unwrap();
        let mut closed = alarm();
        closed.id = 4;
        closed.closed = true;
        closed.faults.clear();
        let mut held = webhook(url.clone());
        held.alarm_id = 4;
        held.alarm_closed = true;
        held.alarm_fault_count = 0;
        held.kind = NotificationKind::Clear;
        held.message = "Machine web0 is up.".to_owned();
        held.alarm = Some(Box::new(closed.clone()));
        let mut digest = webhook(url.clone());
        digest.kind = NotificationKind::Digest;
        digest.message = "2 notifications held by the rate limit".to_owned();
        digest.alarm = None;
        digest.event_json = serde_json::Value::Null;
        digest.digest = vec![webhook(url), held];
        let body = webhook_body(&digest, 1_714_533_200_000);
        assert_eq!(body["kind"], "digest");
        assert_eq!(body["time"], 1_714_533_200_000i64);
        assert_eq!(body["alarm"], serde_json::Value::Null, "a digest is about no one alarm");
        assert!(body.get("incident").is_none(), "{body}");
        assert_eq!(
            body["digest"],
            serde_json::json!([
                {
                    "kind": "fault",
                    "alarm": alarm(),
                    "message": "Machine \"b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e\" has gone down.",
                    "time": 1_714_533_165_000i64,
                    "event": event,
                },
                {
                    "kind": "clear",
                    "alarm": closed,
                    "message": "Machine web0 is up.",
                    "time": 1_714_533_165_000i64,
                    "event": event,
                },
            ])
        );

        let mut down = notification();
        down.kind = NotificationKind::ServerDown;
        down.alarm_id = 0;
        down.event_json = serde_json::Value::Null;
        let server: Uuid = "44454c4c-4800-1034-804a-b2c04f354d31".parse().unwrap();
        down.incident = Some(Incident {
            id: Uuid::new_v5(&server, b"incident"),
            server,
            hostname: Some("cn-7".to_owned()),
            reason: IncidentReason::HeartbeatLost,
            opened: 1_714_533_100_000,
            returned: None,
            machines: vec![IncidentMachine {
                uuid: down.machine.as_ref().unwrap().uuid,
                alias: Some("web0".to_owned()),
                probe: down.probe.clone(),
                down: true,
            }],
        });
        let body = webhook_body(&down, 1_714_533_200_000);
        assert!(body.get("digest").is_none(), "{body}");
        assert_eq!(body["incident"]["hostname"], "cn-7");
        assert_eq!(body["incident"]["reason"], "heartbeat_lost");
        assert_eq!(body["incident"]["machines"][0]["alias"], "web0");
        assert_eq!(
            body["alarm"],
            serde_json::Value::Null,
            "an incident is about no one alarm"
        );
        assert_eq!(body["event"], serde_json::Value::Null);
        assert_eq!(body["datacenter"], "coal");
    }
}
