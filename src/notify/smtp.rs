//! Email to an SMTP server with lettre: clear text, STARTTLS or implicit
//! TLS, optionally authenticated, over connections pooled for every notifier
//! worker ([`SmtpRelay`]), and the sorting of SMTP failures into temporary
//! and permanent. The URL and the login are parsed by `config::smtp`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::authentication::DEFAULT_MECHANISMS;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use super::transport::{error_chain, DeliveryError, TransportError};
use crate::config::{SmtpCredentials, SmtpSecurity, SmtpUrl};

/// How long to wait for the SMTP server to accept a TCP connection.
const SMTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole SMTP exchange may take unless `notify.email.timeout`
/// says otherwise. lettre applies its timeout to the connect only (on
/// tokio), so a server that accepts and then stalls would hold a notifier
/// forever without this bound.
const SMTP_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most idle SMTP connections kept for reuse: more than the notifier pool
/// usually has workers, so each worker finds a warm connection.
const SMTP_POOL_SIZE: usize = 10;

/// An idle pooled connection is closed after this long, well before the
/// five minutes after which RFC 5321 lets a server hang up on a silent client.
const SMTP_POOL_IDLE: Duration = Duration::from_secs(60);

/// An SMTP server to hand messages to.
#[derive(Debug, Clone)]
pub struct SmtpRelay {
    /// Pooled: connections (and their TLS sessions and logins) are reused by
    /// every notifier worker.
    pool: std::sync::Arc<SmtpPool>,
    /// `host:port`, to say in errors which server failed.
    server: String,
    security: SmtpSecurity,
    /// The bound on one message's whole exchange ([`SMTP_EXCHANGE_TIMEOUT`]
    /// unless [`SmtpRelay::with_timeout`] set another).
    timeout: Duration,
}

/// Our own pool of lettre SMTP connections rather than lettre's transport:
/// lettre writes a message and its final `.` in two writes, and on a socket
/// with Nagle's algorithm on (lettre never sets `TCP_NODELAY`) the `.` then
/// waits for the server's delayed ACK, about 40 ms per message (measured with
/// amon-load, `docs/benchmarks.md`). Here clear and STARTTLS connections are
/// our own `TcpStream`s with `TCP_NODELAY`; implicit TLS (`smtps://`) is
/// still connected by lettre, which offers no way to hand it a stream there.
struct SmtpPool {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    /// Our name in EHLO (the host name), looked up once.
    hello: ClientId,
    /// Parked connections and when they were parked; a connection is
    /// checked with NOOP before reuse, and one idle past [`SMTP_POOL_IDLE`]
    /// is closed instead. Locked only to push or pop, never across an await.
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, tokio::time::Instant)>>,
}

impl fmt::Debug for SmtpPool {
    // Never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpPool")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("login", &self.credentials.is_some())
            .finish()
    }
}

/// Why a connection could not be had: lettre's own error, or ours before
/// lettre saw a stream.
enum ConnectError {
    Smtp(lettre::transport::smtp::Error),
    Io(String),
}

impl From<lettre::transport::smtp::Error> for ConnectError {
    fn from(err: lettre::transport::smtp::Error) -> Self {
        ConnectError::Smtp(err)
    }
}

impl SmtpPool {
    /// A parked connection that still answers NOOP, else a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, ConnectError> {
        loop {
            let parked = self.idle.lock().expect("smtp pool lock").pop();
            let Some((mut conn, since)) = parked else { break };
            if since.elapsed() < SMTP_POOL_IDLE && conn.test_connected().await {
                return Ok(conn);
            }
            let _ = conn.quit().await;
        }
        self.connect().await
    }

    /// Parks a connection that delivered, if there is room.
    fn park(&self, conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().expect("smtp pool lock");
        if idle.len() < SMTP_POOL_SIZE && !conn.has_broken() {
            idle.push((conn, tokio::time::Instant::now()));
        }
        // Else dropped: the socket closes (a full pool is rare and harmless).
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, ConnectError> {
        let hello = &self.hello;
        let mut conn = match &self.tls {
            Tls::Wrapper(params) => {
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(SMTP_CONNECT_TIMEOUT),
                    hello,
                    Some(params.clone()),
                    None,
                )
                .await?
            }
            tls => {
                let tcp = tokio::time::timeout(
                    SMTP_CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
                )
                .await
                .map_err(|_| ConnectError::Io(format!("no connection within {}s", SMTP_CONNECT_TIMEOUT.as_secs())))?
                .map_err(|e| ConnectError::Io(e.to_string()))?;
                tcp.set_nodelay(true).map_err(|e| ConnectError::Io(e.to_string()))?;
                let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), hello).await?;
                match tls {
                    Tls::Opportunistic(params) if conn.can_starttls() => conn.starttls(params.clone(), hello).await?,
                    Tls::Required(params) => conn.starttls(params.clone(), hello).await?,
                    _ => {}
                }
                conn
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }
}

impl Drop for SmtpPool {
    /// Says QUIT on every parked connection, from a task, when a runtime is
    /// there to run it (a mailer dropped at shutdown, or a SIGHUP reload).
    fn drop(&mut self) {
        let parked: Vec<AsyncSmtpConnection> = self
            .idle
            .get_mut()
            .map(|idle| idle.drain(..).map(|(conn, _)| conn).collect())
            .unwrap_or_default();
        if parked.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for mut conn in parked {
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn.quit()).await;
                }
            });
        }
    }
}

impl SmtpRelay {
    /// An SMTP server from its `smtp_url` (see `Mailer::smtp`). Must be
    /// called inside a tokio runtime.
    pub fn new(url: &str, credentials: Option<SmtpCredentials>) -> Result<SmtpRelay, TransportError> {
        let endpoint = SmtpUrl::parse(url)?;
        let server = endpoint.server();
        let tls = tls(&endpoint).map_err(|err| TransportError::Tls {
            server: server.clone(),
            detail: error_chain(&err),
        })?;
        let mut login = None;
        if let Some(credentials) = credentials {
            let exposed = matches!(endpoint.security, SmtpSecurity::None | SmtpSecurity::Opportunistic);
            if exposed && !is_loopback(&endpoint.host) {
                tracing::warn!(
                    server = %server,
                    "the smtp password may cross the network unencrypted: use smtps:// or ?tls=starttls in notify.email.smtp_url"
                );
            }
            login = Some(Credentials::new(
                credentials.username,
                credentials.password.expose().to_owned(),
            ));
        }
        Ok(SmtpRelay {
            pool: std::sync::Arc::new(SmtpPool {
                host: endpoint.host.clone(),
                port: endpoint.port,
                tls,
                credentials: login,
                hello: ClientId::default(),
                idle: std::sync::Mutex::new(Vec::new()),
            }),
            server,
            security: endpoint.security,
            timeout: SMTP_EXCHANGE_TIMEOUT,
        })
    }

    /// The same relay with `timeout` as the bound on one message's whole
    /// exchange (`notify.email.timeout`).
    pub fn with_timeout(self, timeout: Duration) -> SmtpRelay {
        SmtpRelay { timeout, ..self }
    }

    pub(super) async fn send(&self, recipient: &str, message: lettre::Message) -> Result<(), DeliveryError> {
        let exchange = async {
            let mut conn = self.pool.checkout().await?;
            let result = conn.send(message.envelope(), &message.formatted()).await;
            match result {
                Ok(_response) => {
                    self.pool.park(conn);
                    Ok(())
                }
                Err(err) => {
                    // A refused message leaves a usable connection, but we
                    // do not know how the server feels about it: start over.
                    let _ = conn.quit().await;
                    Err(ConnectError::Smtp(err))
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ConnectError::Smtp(err))) => Err(classify(&err, &self.server, self.security, recipient)),
            Ok(Err(ConnectError::Io(detail))) => Err(DeliveryError::Temporary(format!(
                "cannot reach smtp server {}: {detail}",
                self.server
            ))),
            Err(_elapsed) => Err(DeliveryError::Temporary(format!(
                "smtp server {} did not finish within {} (notify.email.timeout)",
                self.server,
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

/// Sorts an SMTP failure into retry-later or give-up.
fn classify(
    err: &lettre::transport::smtp::Error,
    server: &str,
    security: SmtpSecurity,
    recipient: &str,
) -> DeliveryError {
    let detail = error_chain(err);
    let code = err.status().map(|code| code.to_string());
    if err.is_permanent() && code.as_deref() == Some("535") {
        DeliveryError::Permanent(format!(
            "smtp server {server} refused our login (check notify.email.username and password): {detail}"
        ))
    } else if err.is_permanent() {
        DeliveryError::Permanent(format!("smtp server {server} refused mail to {recipient}: {detail}"))
    } else if err.is_transient() {
        DeliveryError::Temporary(format!("smtp server {server} deferred mail to {recipient}: {detail}"))
    } else if err.is_client() && security == SmtpSecurity::StartTls && detail.contains("STARTTLS") {
        // We require STARTTLS and the server does not offer it: that is the
        // configuration (or the server's), not a bad moment, so say so now
        // rather than retry for a day. (It is also what a downgrade attack
        // looks like; either way nothing is sent in clear text.)
        DeliveryError::Permanent(format!(
            "smtp server {server} does not offer STARTTLS, which notify.email.smtp_url requires (?tls=starttls): {detail}"
        ))
    } else if err.is_client() {
        // lettre's own "cannot do this" (e.g. no authentication mechanism in
        // common, a reply code outside 2xx-5xx): the same message to the
        // same server would fail the same way.
        DeliveryError::Permanent(format!("cannot talk to smtp server {server}: {detail}"))
    } else if err.is_tls() {
        // A failed handshake or an untrusted certificate. Usually fixed on
        // the server (a renewed certificate), so worth retrying until then.
        DeliveryError::Temporary(format!("TLS with smtp server {server} failed: {detail}"))
    } else {
        // Connection refused, timeouts, resets, garbled replies: the server
        // or the network is having a bad moment.
        DeliveryError::Temporary(format!("cannot reach smtp server {server}: {detail}"))
    }
}

/// lettre's TLS setting; certificates must name the url's host.
fn tls(url: &SmtpUrl) -> Result<Tls, lettre::transport::smtp::Error> {
    let parameters = || TlsParameters::new(url.host.clone());
    Ok(match url.security {
        SmtpSecurity::None => Tls::None,
        SmtpSecurity::StartTls => Tls::Required(parameters()?),
        SmtpSecurity::Opportunistic => Tls::Opportunistic(parameters()?),
        SmtpSecurity::Implicit => Tls::Wrapper(parameters()?),
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::Secret;
    use crate::notify::transport::tests::{deliver, notification};
    use crate::notify::transport::Mailer;

    /// How the fake SMTP server behaves.
    #[derive(Clone, Copy)]
    struct FakeSmtp {
        /// EHLO keywords after the greeting, e.g. `AUTH PLAIN LOGIN`.
        extensions: &'static [&'static str],
        /// The reply once the client has authenticated.
        auth_reply: &'static str,
        /// The reply to the end of a message's data (`250`, `451`, `550`).
        final_reply: &'static str,
    }

    const PLAIN: FakeSmtp = FakeSmtp {
        extensions: &[],
        auth_reply: "235 2.7.0 ok\r\n",
        final_reply: "250 queued\r\n",
    };

    /// What the fake server heard on its one connection: every command line
    /// (and AUTH continuation line), and the data of every message.
    #[derive(Debug, Default)]
    struct Heard {
        commands: Vec<String>,
        data: String,
    }

    /// A fake SMTP server that answers one connection with just enough SMTP,
    /// for as many messages as the client sends on it, until QUIT or EOF.
    /// Returns its port and what it heard. With pooling the client keeps the
    /// connection open, so a test drops its mailer (which QUITs the parked
    /// connections) before awaiting the server.
    async fn fake_smtp_with(fake: FakeSmtp) -> (u16, tokio::task::JoinHandle<Heard>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut heard = Heard::default();
            let ehlo = match fake.extensions.split_last() {
                None => "250 fake.test\r\n".to_owned(),
                Some((last, rest)) => {
                    let mut reply = "250-fake.test\r\n".to_owned();
                    for extension in rest {
                        reply.push_str(&format!("250-{extension}\r\n"));
                    }
                    reply.push_str(&format!("250 {last}\r\n"));
                    reply
                }
            };
            write.write_all(b"220 fake.test ESMTP\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                heard.commands.push(line.clone());
                let words: Vec<&str> = line.split(' ').collect();
                let verb = words[0].to_ascii_uppercase();
                let reply: String = match verb.as_str() {
                    "EHLO" | "HELO" => ehlo.clone(),
                    "MAIL" | "RCPT" | "RSET" | "NOOP" => "250 ok\r\n".to_owned(),
                    "AUTH" => {
                        let mechanism = words.get(1).map(|m| m.to_ascii_uppercase());
                        let prompts: &[&str] = match (mechanism.as_deref(), words.len()) {
                            (Some("LOGIN"), _) => &["334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n"],
                            (Some("PLAIN"), 2) => &["334 \r\n"],
                            _ => &[],
                        };
                        for prompt in prompts {
                            write.write_all(prompt.as_bytes()).await.unwrap();
                            match lines.next_line().await {
                                Ok(Some(answer)) => heard.commands.push(answer),
                                _ => return heard,
                            }
                        }
                        fake.auth_reply.to_owned()
                    }
                    "DATA" => {
                        write.write_all(b"354 go ahead\r\n").await.unwrap();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if line == "." {
                                break;
                            }
                            heard.data.push_str(&line);
                            heard.data.push('\n');
                        }
                        fake.final_reply.to_owned()
                    }
                    "QUIT" => {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    }
                    _ => "502 not implemented\r\n".to_owned(),
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
            heard
        });
        (port, server)
    }

    async fn fake_smtp(final_reply: &'static str) -> (u16, tokio::task::JoinHandle<Heard>) {
        fake_smtp_with(FakeSmtp { final_reply, ..PLAIN }).await
    }

    /// Waits for the fake server to finish, bounded so a regression fails
    /// rather than hangs.
    async fn heard(server: tokio::task::JoinHandle<Heard>) -> Heard {
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the fake smtp server finished")
            .unwrap()
    }

    fn credentials() -> SmtpCredentials {
        SmtpCredentials {
            username: "jill".to_owned(),
            password: Secret::new("s3cret pass"),
        }
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[tokio::test]
    async fn smtp_success_delivers_the_message() {
        let (port, server) = fake_smtp("250 queued\r\n").await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), None).unwrap();
        deliver(&mailer, &notification()).await.unwrap();
        drop(mailer);
        let heard = heard(server).await;
        assert!(
            heard
                .data
                .contains("Message-ID: <6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d001@amon.coal.invalid>"),
            "{heard:?}"
        );
        assert!(
            heard
                .data
                .contains("Machine web0 (b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e) is down."),
            "{heard:?}"
        );
        assert!(!heard.commands.iter().any(|c| c.starts_with("AUTH")), "{heard:?}");
        assert_eq!(heard.commands.last().map(String::as_str), Some("QUIT"), "{heard:?}");
    }

    #[tokio::test]
    async fn smtp_connections_are_pooled_and_reused() {
        // The fake server accepts one connection only: a second delivery
        // that opened a new one would never be answered.
        let (port, server) = fake_smtp("250 queued\r\n").await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), None).unwrap();
        let mut second = notification();
        second.id = "6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d002".parse().unwrap();
        for n in [notification(), second] {
            tokio::time::timeout(Duration::from_secs(10), deliver(&mailer, &n))
                .await
                .expect("the pooled connection was reused")
                .unwrap();
        }
        drop(mailer);
        let heard = heard(server).await;
        assert_eq!(heard.data.matches("Message-ID:").count(), 2, "{heard:?}");
        assert_eq!(
            heard.commands.iter().filter(|c| c.starts_with("EHLO")).count(),
            1,
            "{heard:?}"
        );
    }

    #[tokio::test]
    async fn smtp_4xx_is_temporary() {
        let (port, server) = fake_smtp("451 try again later\r\n").await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), None).unwrap();
        let err = deliver(&mailer, &notification()).await.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Temporary(m) if m.contains("451")),
            "{err}"
        );
        drop(mailer);
        heard(server).await;
    }

    #[tokio::test]
    async fn smtp_5xx_is_permanent() {
        let (port, server) = fake_smtp("550 no such user\r\n").await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), None).unwrap();
        let err = deliver(&mailer, &notification()).await.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("550") && m.contains("jill@example.com")),
            "{err}"
        );
        drop(mailer);
        heard(server).await;
    }

    #[tokio::test]
    async fn an_smtp_server_slower_than_the_timeout_is_a_temporary_failure_naming_the_key() {
        // Greets, then never answers EHLO: only the exchange timeout ends it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"220 slow.test ESMTP\r\n").await.unwrap();
            let mut sink = [0u8; 256];
            while matches!(tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await, Ok(n) if n > 0) {}
        });
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), None)
            .unwrap()
            .with_smtp_timeout(Duration::from_millis(300));
        let err = tokio::time::timeout(Duration::from_secs(10), deliver(&mailer, &notification()))
            .await
            .expect("the mailer's own timeout ended the exchange")
            .unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Temporary(m) if m.contains("within 300ms (notify.email.timeout)")),
            "{err}"
        );
        // The connection was dropped, not parked: the server sees it close.
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the stalled connection was closed")
            .unwrap();
    }

    #[tokio::test]
    async fn smtp_connection_refused_is_temporary() {
        // Bind and drop a listener: nothing listens on that port afterwards.
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), None).unwrap();
        let err = deliver(&mailer, &notification()).await.unwrap_err();
        assert!(err.is_temporary(), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    }

    #[tokio::test]
    async fn required_starttls_that_the_server_does_not_offer_is_permanent() {
        // A server without STARTTLS when the configuration demands it will
        // not grow it by itself: dead-letter now, loudly, and send nothing.
        let (port, server) = fake_smtp_with(PLAIN).await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}?tls=starttls"), Some(credentials())).unwrap();
        let err = deliver(&mailer, &notification()).await.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("STARTTLS") && m.contains(&format!("127.0.0.1:{port}"))),
            "{err}"
        );
        drop(mailer);
        let heard = heard(server).await;
        assert!(
            heard.commands.iter().all(|c| c.starts_with("EHLO")),
            "nothing but EHLO in clear text: {heard:?}"
        );
    }

    #[tokio::test]
    async fn opportunistic_tls_falls_back_to_clear_text() {
        let (port, server) = fake_smtp_with(PLAIN).await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}/?tls=opportunistic"), None).unwrap();
        deliver(&mailer, &notification()).await.unwrap();
        drop(mailer);
        assert!(heard(server).await.data.contains("Message-ID:"));
    }

    #[tokio::test]
    async fn implicit_tls_against_a_clear_text_server_fails_in_the_handshake() {
        let (port, server) = fake_smtp_with(PLAIN).await;
        let mailer = Mailer::smtp(&format!("smtps://127.0.0.1:{port}"), Some(credentials())).unwrap();
        let err = deliver(&mailer, &notification()).await.unwrap_err();
        assert!(err.is_temporary(), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
        drop(mailer);
        let heard = heard(server).await;
        assert!(heard.commands.is_empty(), "the client spoke TLS, not SMTP: {heard:?}");
    }

    #[tokio::test]
    async fn auth_plain_sends_the_configured_credentials() {
        let (port, server) = fake_smtp_with(FakeSmtp {
            extensions: &["AUTH PLAIN LOGIN", "8BITMIME"],
            ..PLAIN
        })
        .await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), Some(credentials())).unwrap();
        deliver(&mailer, &notification()).await.unwrap();
        drop(mailer);
        let heard = heard(server).await;
        let auth = format!("AUTH PLAIN {}", b64("\0jill\0s3cret pass"));
        let position = |prefix: &str| heard.commands.iter().position(|c| c.starts_with(prefix));
        assert_eq!(
            heard
                .commands
                .iter()
                .filter(|c| c.starts_with("AUTH"))
                .collect::<Vec<_>>(),
            vec![&auth],
            "{heard:?}"
        );
        assert!(position("AUTH") < position("MAIL"), "login before mail: {heard:?}");
    }

    #[tokio::test]
    async fn auth_login_answers_both_prompts() {
        let (port, server) = fake_smtp_with(FakeSmtp {
            extensions: &["AUTH LOGIN"],
            ..PLAIN
        })
        .await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), Some(credentials())).unwrap();
        deliver(&mailer, &notification()).await.unwrap();
        drop(mailer);
        let heard = heard(server).await;
        let at = heard
            .commands
            .iter()
            .position(|c| c == "AUTH LOGIN")
            .unwrap_or_else(|| panic!("{heard:?}"));
        assert_eq!(heard.commands[at + 1], b64("jill"), "{heard:?}");
        assert_eq!(heard.commands[at + 2], b64("s3cret pass"), "{heard:?}");
    }

    #[tokio::test]
    async fn a_refused_login_is_permanent_and_never_shows_the_password() {
        let (port, server) = fake_smtp_with(FakeSmtp {
            extensions: &["AUTH PLAIN LOGIN"],
            auth_reply: "535 5.7.8 authentication failed\r\n",
            ..PLAIN
        })
        .await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), Some(credentials())).unwrap();
        let err = deliver(&mailer, &notification()).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("535") && m.contains("login")),
            "{err}"
        );
        assert!(
            !text.contains("s3cret") && !text.contains(&b64("\0jill\0s3cret pass")),
            "{text}"
        );
        drop(mailer);
        heard(server).await;
    }

    #[tokio::test]
    async fn credentials_for_a_server_without_auth_are_permanent() {
        let (port, server) = fake_smtp_with(PLAIN).await;
        let mailer = Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), Some(credentials())).unwrap();
        let err = deliver(&mailer, &notification()).await.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("authentication")),
            "{err}"
        );
        drop(mailer);
        heard(server).await;
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_password() {
        let credentials = credentials();
        assert_eq!(format!("{:?}", credentials.password), "\"<redacted>\"");
        let shown = format!("{credentials:?} {:#?}", Some(&credentials));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("jill"), "{shown}");

        let mailer = Mailer::smtp("smtps://mail.example.com", Some(credentials)).unwrap();
        let shown = format!("{mailer:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
