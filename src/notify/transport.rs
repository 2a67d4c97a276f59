//! Delivery of a rendered notification: to an SMTP server with lettre, or as
//! `.eml` files in a directory (the embedded default when no SMTP server is
//! configured, SPEC §7). Every failure is classified as temporary (retry with
//! backoff: connection refused, timeouts, SMTP 4xx) or permanent (give up into
//! the dead-letter list: SMTP 5xx, bad addresses), because that is the one
//! thing the notifier needs to know. Retrying, backoff and the outbox live
//! with the notifier, not here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::io::AsyncWriteExt;

use super::email::{self, EmailError};
use super::{ContactAddress, Notification};

/// How long to wait for the SMTP server to accept a TCP connection.
const SMTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole SMTP exchange may take. lettre applies its timeout to
/// the connect only (on tokio), so a server that accepts and then stalls
/// would hold a notifier forever without this bound.
const SMTP_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

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
    #[error("unsupported mail url scheme {scheme:?} in {url}: only smtp:// (plain, without TLS) is supported so far")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("bad mail url {url}: {reason}")]
    BadUrl { url: String, reason: &'static str },
}

/// Where notifications go.
#[derive(Debug, Clone)]
pub enum Mailer {
    /// An SMTP server, e.g. the postfix next to the master.
    Smtp(SmtpRelay),
    /// A directory that receives one `<notification id>.eml` per message.
    EmlDir(PathBuf),
}

/// An SMTP server to hand messages to.
#[derive(Debug, Clone)]
pub struct SmtpRelay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port`, to say in errors which server failed.
    server: String,
}

impl Mailer {
    /// An SMTP mailer from `smtp://host[:port]` (port 25 by default: the
    /// usual setup is a local relay, as the reference's postfix on
    /// 127.0.0.1:25). Plain SMTP only for now; `smtps://` and STARTTLS are
    /// refused with an error rather than silently sent in clear text.
    pub fn smtp(url: &str) -> Result<Mailer, TransportError> {
        let (host, port) = parse_smtp_url(url)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .timeout(Some(SMTP_CONNECT_TIMEOUT))
            .build();
        let server = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Mailer::Smtp(SmtpRelay { transport, server }))
    }

    /// A mailer that writes `.eml` files into `dir` (created on first use).
    pub fn eml_dir(dir: impl Into<PathBuf>) -> Mailer {
        Mailer::EmlDir(dir.into())
    }

    /// Delivers one notification, sent as from `from` (e.g.
    /// `"coal Monitoring" <no-reply@example.com>`).
    pub async fn deliver(&self, n: &Notification, from: &str) -> Result<(), DeliveryError> {
        let recipient = match &n.contact {
            ContactAddress::Email(address) => address,
            ContactAddress::Webhook(_) => {
                return Err(DeliveryError::Permanent("webhook delivery is not built yet".to_owned()))
            }
        };
        let message = email::to_message(n, from)?;
        match self {
            Mailer::Smtp(relay) => relay.send(recipient, message).await,
            Mailer::EmlDir(dir) => write_eml(dir, n, &message.formatted()).await,
        }
    }
}

impl SmtpRelay {
    async fn send(&self, recipient: &str, message: lettre::Message) -> Result<(), DeliveryError> {
        match tokio::time::timeout(SMTP_EXCHANGE_TIMEOUT, self.transport.send(message)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(err)) => Err(classify(&err, &self.server, recipient)),
            Err(_elapsed) => Err(DeliveryError::Temporary(format!(
                "smtp server {} did not finish within {}s",
                self.server,
                SMTP_EXCHANGE_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Sorts an SMTP failure into retry-later or give-up.
fn classify(err: &lettre::transport::smtp::Error, server: &str, recipient: &str) -> DeliveryError {
    let detail = error_chain(err);
    if err.is_permanent() {
        DeliveryError::Permanent(format!("smtp server {server} refused mail to {recipient}: {detail}"))
    } else if err.is_transient() {
        DeliveryError::Temporary(format!("smtp server {server} deferred mail to {recipient}: {detail}"))
    } else if err.is_client() {
        // lettre's own "cannot do this" (e.g. a reply code outside 2xx-5xx):
        // the same message to the same server would fail the same way.
        DeliveryError::Permanent(format!("cannot talk to smtp server {server}: {detail}"))
    } else {
        // Connection refused, timeouts, resets, garbled replies: the server
        // or the network is having a bad moment.
        DeliveryError::Temporary(format!("cannot reach smtp server {server}: {detail}"))
    }
}

/// An error and its sources on one line, since the notifier logs only this
/// string (lettre's own Display already includes its first source, which we
/// then skip to avoid saying it twice).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
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

/// Writes `<dir>/<id>.eml` so that a reader never sees half a message: the
/// bytes go to a dot-named temporary file (ignored by `*.eml` globs), are
/// synced, and the file is renamed into place. Writing the same id again
/// replaces the file with identical content, so a redelivery is harmless.
async fn write_eml(dir: &Path, n: &Notification, bytes: &[u8]) -> Result<(), DeliveryError> {
    // Any I/O failure here (full disk, permissions) is something an operator
    // can fix while the outbox keeps the notification, so it is temporary.
    let io_err = |what: &str, path: &Path, err: std::io::Error| {
        DeliveryError::Temporary(format!("cannot {what} {}: {err}", path.display()))
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|err| io_err("create directory", dir, err))?;

    let target = dir.join(format!("{}.eml", n.id));
    // A fresh name per attempt so two concurrent writers of the same id never
    // interleave their bytes in one temporary file.
    let temp = dir.join(format!(".{}.{}.tmp", n.id, uuid::Uuid::new_v4()));
    let written = async {
        let mut file = tokio::fs::File::create(&temp).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        tokio::fs::rename(&temp, &target).await
    }
    .await;
    if let Err(err) = written {
        // Best effort: the temporary file is useless now, and hidden anyway.
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(io_err("write", &target, err));
    }
    // Sync the directory so the rename survives a crash before the outbox
    // forgets the notification. Some systems refuse to fsync a directory;
    // the file itself is already durable, so that is not worth failing for.
    if let Ok(dir_handle) = tokio::fs::File::open(dir).await {
        let _ = dir_handle.sync_all().await;
    }
    Ok(())
}

/// Splits `smtp://host[:port][/]` into host and port.
fn parse_smtp_url(url: &str) -> Result<(String, u16), TransportError> {
    let shown = redact(url);
    let bad = |reason| TransportError::BadUrl {
        url: shown.clone(),
        reason,
    };
    let (scheme, rest) = url
        .trim()
        .split_once("://")
        .ok_or_else(|| bad("expected smtp://host:port"))?;
    if !scheme.eq_ignore_ascii_case("smtp") {
        return Err(TransportError::UnsupportedScheme {
            url: shown.clone(),
            scheme: scheme.to_owned(),
        });
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !tail.is_empty() && tail != "/" {
        return Err(bad("paths and parameters (such as ?tls=) are not supported yet"));
    }
    if authority.contains('@') {
        return Err(bad("smtp authentication is not supported yet"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]:25`.
        let (host, after) = bracketed.split_once(']').ok_or_else(|| bad("unclosed [ in the host"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad("expected :port after the ]")),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = match port {
        None => 25,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(bad("port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_owned(), port))
}

/// The URL with any `user:password@` replaced, so config errors can be
/// logged without leaking a password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{MachineRef, NotificationKind, ProbeRef};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use uuid::Uuid;

    const FROM: &str = "\"coal Monitoring\" <no-reply@coal.example.com>";

    fn notification() -> Notification {
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
        }
    }

    /// The headers of an RFC 5322 message, unfolded, as (name, value) pairs.
    fn headers(text: &str) -> Vec<(String, String)> {
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

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn eml_dir_writes_one_whole_message_per_notification() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("outbox").join("mail");
        let mailer = Mailer::eml_dir(&dir);
        let n = notification();

        mailer.deliver(&n, FROM).await.unwrap();
        // Delivering the same notification again is harmless.
        mailer.deliver(&n, FROM).await.unwrap();

        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![format!("{}.eml", n.id)], "no temporary files left");

        let text = std::fs::read_to_string(dir.join(format!("{}.eml", n.id))).unwrap();
        let headers = headers(&text);
        assert_eq!(
            header(&headers, "Subject"),
            Some("[amon coal] Alarm 3: machine web0 (b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e) is down")
        );
        assert_eq!(
            header(&headers, "Message-ID"),
            Some("<6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d001@amon.coal.invalid>")
        );
        assert_eq!(header(&headers, "To"), Some("jill@example.com"));
        assert!(text.contains("Machine web0 (b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e) is down."));
    }

    #[tokio::test]
    async fn bad_address_is_permanent() {
        let tmp = tempfile::tempdir().unwrap();
        let mut n = notification();
        n.contact = ContactAddress::Email("jill at example".to_owned());
        let err = Mailer::eml_dir(tmp.path()).deliver(&n, FROM).await.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("jill at example")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn webhook_is_permanent_for_now() {
        let tmp = tempfile::tempdir().unwrap();
        let mut n = notification();
        n.contact = ContactAddress::Webhook("https://hooks.example.com/amon".to_owned());
        let err = Mailer::eml_dir(tmp.path()).deliver(&n, FROM).await.unwrap_err();
        assert_eq!(
            err,
            DeliveryError::Permanent("webhook delivery is not built yet".to_owned())
        );
    }

    /// A fake SMTP server that answers one connection with just enough SMTP
    /// and gives the final reply to the message's data (`250`, `451`, `550`).
    /// Returns its port and what it received after `DATA`.
    async fn fake_smtp(final_reply: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut data = String::new();
            write.write_all(b"220 fake.test ESMTP\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                let reply: &str = match verb.as_str() {
                    "EHLO" | "HELO" => "250 fake.test\r\n",
                    "MAIL" | "RCPT" | "RSET" | "NOOP" => "250 ok\r\n",
                    "DATA" => {
                        write.write_all(b"354 go ahead\r\n").await.unwrap();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if line == "." {
                                break;
                            }
                            data.push_str(&line);
                            data.push('\n');
                        }
                        final_reply
                    }
                    "QUIT" => {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    }
                    _ => "502 not implemented\r\n",
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
            data
        });
        (port, server)
    }

    #[tokio::test]
    async fn smtp_success_delivers_the_message() {
        let (port, server) = fake_smtp("250 queued\r\n").await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}")).unwrap();
        mailer.deliver(&notification(), FROM).await.unwrap();
        let data = server.await.unwrap();
        assert!(
            data.contains("Message-ID: <6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d001@amon.coal.invalid>"),
            "{data}"
        );
        assert!(
            data.contains("Machine web0 (b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e) is down."),
            "{data}"
        );
    }

    #[tokio::test]
    async fn smtp_4xx_is_temporary() {
        let (port, server) = fake_smtp("451 try again later\r\n").await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}")).unwrap();
        let err = mailer.deliver(&notification(), FROM).await.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Temporary(m) if m.contains("451")),
            "{err}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn smtp_5xx_is_permanent() {
        let (port, server) = fake_smtp("550 no such user\r\n").await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}")).unwrap();
        let err = mailer.deliver(&notification(), FROM).await.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("550") && m.contains("jill@example.com")),
            "{err}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn smtp_connection_refused_is_temporary() {
        // Bind and drop a listener: nothing listens on that port afterwards.
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}")).unwrap();
        let err = mailer.deliver(&notification(), FROM).await.unwrap_err();
        assert!(err.is_temporary(), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    }

    #[test]
    fn smtp_url_forms() {
        assert_eq!(
            parse_smtp_url("smtp://mail.example.com").unwrap(),
            ("mail.example.com".to_owned(), 25)
        );
        assert_eq!(
            parse_smtp_url("smtp://127.0.0.1:2525/").unwrap(),
            ("127.0.0.1".to_owned(), 2525)
        );
        assert_eq!(parse_smtp_url("SMTP://[::1]:587").unwrap(), ("::1".to_owned(), 587));
    }

    #[test]
    fn unsupported_smtp_urls_are_refused_clearly() {
        let err = Mailer::smtp("smtps://mail.example.com:465").unwrap_err();
        assert!(matches!(err, TransportError::UnsupportedScheme { ref scheme, .. } if scheme == "smtps"));
        assert!(err.to_string().contains("only smtp://"), "{err}");

        let err = Mailer::smtp("smtp://mail.example.com:587?tls=required").unwrap_err();
        assert!(err.to_string().contains("?tls="), "{err}");
        assert!(Mailer::smtp("mail.example.com:25").is_err());
        assert!(Mailer::smtp("smtp://mail.example.com:0").is_err());
        assert!(Mailer::smtp("smtp://:25").is_err());
    }

    #[test]
    fn url_errors_never_show_a_password() {
        let err = Mailer::smtp("smtp://jill:s3cret@mail.example.com:25").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("smtp://***@mail.example.com:25"), "{text}");
    }
}
