//! Delivery of a rendered notification: email to an SMTP server with lettre
//! (clear text, STARTTLS or implicit TLS, optionally authenticated, over
//! pooled connections), email as `.eml` files in a directory (the embedded
//! default when no SMTP server is configured, SPEC §7), and webhooks as a
//! JSON POST in Amon's shape, over connections kept alive per arbiter
//! ([`Webhooks`]). Every failure is classified as temporary
//! (retry with backoff: connection refused, timeouts, SMTP 4xx, HTTP 5xx) or
//! permanent (give up into the dead-letter list: SMTP 5xx, HTTP 4xx, bad
//! addresses, configuration the server cannot work with), because that is
//! the one thing the notifier needs to know. Retrying, backoff and the outbox
//! live with the notifier, not here.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::authentication::DEFAULT_MECHANISMS;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::email::{self, EmailError};
use super::{ContactAddress, Notification};
use crate::model::EpochMs;

/// How long to wait for the SMTP server to accept a TCP connection.
const SMTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole SMTP exchange may take. lettre applies its timeout to
/// the connect only (on tokio), so a server that accepts and then stalls
/// would hold a notifier forever without this bound.
const SMTP_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most idle SMTP connections kept for reuse: more than the notifier pool
/// usually has workers, so each worker finds a warm connection.
const SMTP_POOL_SIZE: usize = 10;

/// An idle pooled connection is closed after this long, well before the
/// five minutes after which RFC 5321 lets a server hang up on a silent client.
const SMTP_POOL_IDLE: Duration = Duration::from_secs(60);

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
    #[error("unsupported mail url scheme {scheme:?} in {url}: expected smtp:// or smtps://")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("bad mail url {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot set up TLS for smtp server {server}: {detail}")]
    Tls { server: String, detail: String },
}

/// A password or other secret from the configuration. Its `Debug` never
/// shows the value, so settings and mailers can be logged whole; the value
/// is reachable only through [`Secret::expose`], and no error message
/// includes it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Who we are to an SMTP server that wants a login (AUTH PLAIN or LOGIN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: Secret,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://host`: clear text, for a relay next to the master.
    None,
    /// `smtp://host?tls=starttls`: STARTTLS, required. A server that does not
    /// offer it gets nothing, not even the login.
    StartTls,
    /// `smtp://host?tls=opportunistic`: STARTTLS when the server offers it,
    /// else clear text (an active attacker can force the latter).
    Opportunistic,
    /// `smtps://host`: TLS from the first byte (port 465 by default).
    Implicit,
}

/// A parsed `smtp_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    /// A name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
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
    /// Pooled: connections (and their TLS sessions and logins) are reused by
    /// every notifier worker.
    pool: std::sync::Arc<SmtpPool>,
    /// `host:port`, to say in errors which server failed.
    server: String,
    security: SmtpSecurity,
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
        let endpoint = SmtpUrl::parse(url)?;
        let server = endpoint.server();
        let tls = endpoint.tls().map_err(|err| TransportError::Tls {
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
        Ok(Mailer::Smtp(SmtpRelay {
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
        }))
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
            Mailer::EmlDir(dir) => write_eml(dir, n, &message.formatted()).await,
        }
    }
}

impl SmtpRelay {
    async fn send(&self, recipient: &str, message: lettre::Message) -> Result<(), DeliveryError> {
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
        match tokio::time::timeout(SMTP_EXCHANGE_TIMEOUT, exchange).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ConnectError::Smtp(err))) => Err(classify(&err, &self.server, self.security, recipient)),
            Ok(Err(ConnectError::Io(detail))) => Err(DeliveryError::Temporary(format!(
                "cannot reach smtp server {}: {detail}",
                self.server
            ))),
            Err(_elapsed) => Err(DeliveryError::Temporary(format!(
                "smtp server {} did not finish within {}s",
                self.server,
                SMTP_EXCHANGE_TIMEOUT.as_secs()
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

impl SmtpUrl {
    /// Parses `smtp://host[:port][/][?tls=starttls|opportunistic]` or
    /// `smtps://host[:port][/]`. Anything else (other schemes, paths, other
    /// parameters, `user@`) is refused with the reason, so a typo never
    /// silently means clear text.
    pub fn parse(url: &str) -> Result<SmtpUrl, TransportError> {
        let shown = redact(url);
        let bad = |reason: String| TransportError::BadUrl {
            url: shown.clone(),
            reason,
        };
        let (scheme, rest) = url
            .trim()
            .split_once("://")
            .ok_or_else(|| bad("expected smtp://host[:port] or smtps://host[:port]".to_owned()))?;
        let (default_port, mut security) = if scheme.eq_ignore_ascii_case("smtp") {
            (25, SmtpSecurity::None)
        } else if scheme.eq_ignore_ascii_case("smtps") {
            (465, SmtpSecurity::Implicit)
        } else {
            return Err(TransportError::UnsupportedScheme {
                url: shown.clone(),
                scheme: scheme.to_owned(),
            });
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in the url: set notify.email.username and \
                 notify.email.password or notify.email.password_file (or AMON__NOTIFY__EMAIL__PASSWORD)"
                    .to_owned(),
            ));
        }
        if tail.contains('#') {
            return Err(bad("a #fragment is not supported".to_owned()));
        }
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        if !path.is_empty() && path != "/" {
            return Err(bad("a path is not supported: expected smtp://host[:port]".to_owned()));
        }
        let mut tls_seen = false;
        for param in query.into_iter().flat_map(|q| q.split('&')) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            if !key.eq_ignore_ascii_case("tls") {
                return Err(bad(format!("unknown parameter {key:?}: only tls= is supported")));
            }
            if tls_seen {
                return Err(bad("tls= given twice".to_owned()));
            }
            tls_seen = true;
            if security == SmtpSecurity::Implicit {
                return Err(bad(
                    "tls= applies to smtp:// only: smtps:// is TLS from the start".to_owned()
                ));
            }
            security = if value.eq_ignore_ascii_case("starttls") {
                SmtpSecurity::StartTls
            } else if value.eq_ignore_ascii_case("opportunistic") {
                SmtpSecurity::Opportunistic
            } else {
                return Err(bad(format!(
                    "unknown tls mode {value:?}: expected tls=starttls (required) or tls=opportunistic \
                     (if offered), or smtps:// for TLS from the start"
                )));
            };
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]:25`.
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host".to_owned()))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad("expected :port after the ]".to_owned())),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host".to_owned()));
        }
        if host.contains(char::is_whitespace) {
            return Err(bad("the host contains a space".to_owned()));
        }
        let port = match port {
            None => default_port,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(bad("port must be a number from 1 to 65535".to_owned())),
            },
        };
        Ok(SmtpUrl {
            host: host.to_owned(),
            port,
            security,
        })
    }

    /// `host:port` (`[v6]:port`), as errors name the server.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// lettre's TLS setting; certificates must name `host`.
    fn tls(&self) -> Result<Tls, lettre::transport::smtp::Error> {
        let parameters = || TlsParameters::new(self.host.clone());
        Ok(match self.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(parameters()?),
            SmtpSecurity::Opportunistic => Tls::Opportunistic(parameters()?),
            SmtpSecurity::Implicit => Tls::Wrapper(parameters()?),
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The URL with any `user:password@` and every parameter value but `tls=`'s
/// masked, so config errors can be logged without leaking a password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        None => tail.to_owned(),
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, value)) if key.eq_ignore_ascii_case("tls") => format!("{key}={value}"),
                    Some((key, _)) => format!("{key}=***"),
                    None => param.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
    };
    format!("{scheme}://{authority}{tail}")
}

// ---- webhooks ----

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
    async fn post(&self, url: &str, n: &Notification, now_ms: EpochMs) -> Result<(), DeliveryError> {
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
pub(crate) mod tests {
    use super::*;
    use crate::notify::fake_webhook::{FakeWebhook, Posted};
    use crate::notify::{Incident, IncidentMachine, IncidentReason, MachineRef, NotificationKind, ProbeRef};
    use base64::Engine as _;
    use std::io::Write as _;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use uuid::Uuid;

    const FROM: &str = "\"coal Monitoring\" <no-reply@coal.example.com>";

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

    /// Delivers as a notifier worker would, now.
    async fn deliver(mailer: &Mailer, n: &Notification) -> Result<(), DeliveryError> {
        let now = crate::clock::Clock::system().now_ms();
        mailer.deliver_at(n, FROM, now, &Webhooks::new()).await
    }

    #[tokio::test]
    async fn eml_dir_writes_one_whole_message_per_notification() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("outbox").join("mail");
        let mailer = Mailer::eml_dir(&dir);
        let n = notification();

        deliver(&mailer, &n).await.unwrap();
        // Delivering the same notification again is harmless.
        deliver(&mailer, &n).await.unwrap();

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
        let err = deliver(&Mailer::eml_dir(tmp.path()), &n).await.unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("jill at example")),
            "{err}"
        );
    }

    // ---- SMTP ----

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

    #[test]
    fn smtp_url_forms() {
        let url = |host: &str, port, security| SmtpUrl {
            host: host.to_owned(),
            port,
            security,
        };
        let parse = |text: &str| SmtpUrl::parse(text).unwrap();
        assert_eq!(
            parse("smtp://mail.example.com"),
            url("mail.example.com", 25, SmtpSecurity::None)
        );
        assert_eq!(
            parse("smtp://127.0.0.1:2525/"),
            url("127.0.0.1", 2525, SmtpSecurity::None)
        );
        assert_eq!(parse("SMTP://[::1]:587"), url("::1", 587, SmtpSecurity::None));
        assert_eq!(
            parse("smtp://mail.example.com:587?tls=starttls"),
            url("mail.example.com", 587, SmtpSecurity::StartTls)
        );
        assert_eq!(
            parse("smtp://mail.example.com/?TLS=StartTLS"),
            url("mail.example.com", 25, SmtpSecurity::StartTls)
        );
        assert_eq!(
            parse("smtp://[::1]?tls=opportunistic"),
            url("::1", 25, SmtpSecurity::Opportunistic)
        );
        assert_eq!(
            parse("smtps://mail.example.com"),
            url("mail.example.com", 465, SmtpSecurity::Implicit)
        );
        assert_eq!(
            parse("smtps://mail.example.com:2465/"),
            url("mail.example.com", 2465, SmtpSecurity::Implicit)
        );
        assert_eq!(parse("smtps://[::1]:465").server(), "[::1]:465");
    }

    #[test]
    fn unsupported_smtp_urls_are_refused_clearly() {
        let refused = |url: &str| SmtpUrl::parse(url).unwrap_err().to_string();

        let err = SmtpUrl::parse("submission://mail.example.com:587").unwrap_err();
        assert!(matches!(err, TransportError::UnsupportedScheme { ref scheme, .. } if scheme == "submission"));
        assert!(err.to_string().contains("smtp:// or smtps://"), "{err}");

        let text = refused("smtp://mail.example.com:587?tls=required");
        assert!(text.contains("unknown tls mode \"required\""), "{text}");
        let text = refused("smtp://mail.example.com?tls=");
        assert!(text.contains("unknown tls mode"), "{text}");
        let text = refused("smtps://mail.example.com?tls=starttls");
        assert!(text.contains("smtps:// is TLS from the start"), "{text}");
        let text = refused("smtp://mail.example.com?tls=starttls&tls=starttls");
        assert!(text.contains("twice"), "{text}");
        let text = refused("smtp://mail.example.com?timeout=5");
        assert!(text.contains("unknown parameter \"timeout\""), "{text}");
        let text = refused("smtp://mail.example.com/relay");
        assert!(text.contains("path"), "{text}");
        let text = refused("smtp://mail.example.com#x");
        assert!(text.contains("fragment"), "{text}");
        assert!(SmtpUrl::parse("mail.example.com:25").is_err());
        assert!(SmtpUrl::parse("smtp://mail.example.com:0").is_err());
        assert!(SmtpUrl::parse("smtp://:25").is_err());
        assert!(SmtpUrl::parse("smtp://[::1:25").is_err());
    }

    #[test]
    fn url_errors_never_show_a_password() {
        let err = SmtpUrl::parse("smtp://jill:s3cret@mail.example.com:25").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("smtp://***@mail.example.com:25"), "{text}");
        assert!(text.contains("notify.email.username"), "{text}");

        let err = SmtpUrl::parse("smtp://mail.example.com?tls=starttls&password=s3cret").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("?tls=starttls&password=***"), "{text}");
    }

    // ---- webhooks ----

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
