//! Real processes for the end-to-end tests: the `amon` binary (standalone,
//! or a master and a relay), an SMTP server (Debian's `python3-aiosmtpd`,
//! writing a Maildir) and a zone source (`tail -F` of a file the test
//! appends zoneevent lines to), all on 127.0.0.1 with ports the kernel chose.
//!
//! Every child is owned by a [`ChildGuard`] that kills and reaps it on drop,
//! so a failing test leaves no process behind. Nothing here sleeps to
//! synchronise: [`wait_until`] polls a condition against a deadline and
//! fails with what it was waiting for.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use uuid::Uuid;

/// Longest any single condition may take; generous for a loaded CI box,
/// while a passing test waits only as long as the behaviour takes.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often a condition is re-checked.
const POLL: Duration = Duration::from_millis(50);

/// The notification hold every test runs with: short, but long enough that
/// "down and up again within the hold" is easy to arrange.
pub const HOLD: Duration = Duration::from_secs(2);

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`] with
/// `what` and whatever `context` says about the state of the world.
pub fn wait_until<T>(what: &str, context: impl Fn() -> String, check: impl FnMut() -> Option<T>) -> T {
    wait_until_for(what, DEADLINE.as_secs(), context, check)
}

/// [`wait_until`] with its own deadline, in seconds.
pub fn wait_until_for<T>(
    what: &str,
    seconds: u64,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let limit = Duration::from_secs(seconds);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}\n{}", context());
        }
        // Polling interval, not synchronisation: the condition decides.
        std::thread::sleep(POLL);
    }
}

// ---- child processes ----

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard {
    child: Child,
    /// For messages: which of the test's processes this is.
    name: String,
}

impl ChildGuard {
    pub fn spawn(name: impl Into<String>, command: &mut Command) -> ChildGuard {
        let name = name.into();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        ChildGuard { child, name }
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot check on {}: {e}", self.name))
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name such as `TERM`) with kill(1): the test has no
    /// libc binding of its own, and the shell tool is everywhere.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -s {signal} for {}: {e}", self.name));
        assert!(
            status.success(),
            "kill -s {signal} {} ({}) failed: {status}",
            self.child.id(),
            self.name
        );
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) -> ExitStatus {
        self.child
            .kill()
            .unwrap_or_else(|e| panic!("cannot kill {}: {e}", self.name));
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("cannot reap {}: {e}", self.name))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SIGKILL rather than a graceful SIGTERM: teardown must be quick and
        // certain. The zone source child notices its parent is gone by
        // itself (see `ZoneFeed::command`).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago. Whoever binds it next may lose a race
/// with another process; callers check they reached the server they meant.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind 127.0.0.1:0")
}

/// The last `n` lines of a file, for failure messages. A daemon's lines
/// for requests that succeeded are left out: a test polling the API would
/// otherwise fill the tail with them.
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !is_success_line(l)).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A daemon's `handled request` line for a request that succeeded.
fn is_success_line(line: &str) -> bool {
    serde_json::from_str::<Value>(line)
        .is_ok_and(|l| l["msg"] == "handled request" && l["status"].as_u64().is_some_and(|s| s < 400))
}

// ---- the amon binary ----

/// `standalone`, `master`, `relay` or `agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Master,
    Relay,
    Agent,
}

impl Mode {
    fn verb(self) -> &'static str {
        match self {
            Mode::Standalone => "standalone",
            Mode::Master => "master",
            Mode::Relay => "relay",
            Mode::Agent => "agent",
        }
    }
}

/// A running `amon` process and the addresses it logged.
pub struct Amon {
    process: ChildGuard,
    /// Its stderr: bunyan JSON lines.
    pub log: PathBuf,
    pub master_addr: Option<SocketAddr>,
    pub relay_admin_addr: Option<SocketAddr>,
    /// The relay's agent API (dev mode's TCP listener).
    pub relay_agent_addr: Option<SocketAddr>,
}

fn amon_command(mode: Mode, config: &Path, log: &Path, env: &[(&str, &str)]) -> Command {
    let stderr = File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_amon"));
    command
        .arg(mode.verb())
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // Only our overrides: a developer's own AMON__* must not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("AMON__") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// The bound addresses from the `amon started` log line, once it is there:
/// master, relay admin and relay agent.
type StartedAddrs = (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>);

fn started_line(log: &Path) -> Option<StartedAddrs> {
    let text = fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["msg"] == "amon started")?;
    let addr = |key: &str| {
        let text = line[key]
            .as_str()
            .unwrap_or_else(|| panic!("`amon started` has no string {key}: {line}"));
        (!text.is_empty()).then(|| {
            text.parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("`amon started` has a bad {key} {text:?}: {e}"))
        })
    };
    Some((
        addr("master_listen"),
        addr("relay_admin_listen"),
        addr("relay_agent_listen"),
    ))
}

impl Amon {
    /// Starts `amon <mode> -c <config>` and waits for its `amon started` line.
    pub fn start(mode: Mode, config: &Path, log: &Path) -> Amon {
        Amon::start_with_env(mode, config, log, &[])
    }

    /// [`Amon::start`] with more environment variables (e.g. `LD_PRELOAD`).
    pub fn start_with_env(mode: Mode, config: &Path, log: &Path, env: &[(&str, &str)]) -> Amon {
        let mut process = ChildGuard::spawn(
            format!("amon {}", mode.verb()),
            &mut amon_command(mode, config, log, env),
        );
        let (master_addr, relay_admin_addr, relay_agent_addr) = wait_until(
            &format!("amon {} to log `amon started`", mode.verb()),
            || format!("log {}:\n{}", log.display(), tail_of(log, 40)),
            || {
                if let Some(status) = process.exited() {
                    panic!(
                        "amon {} exited ({status}) before starting; log:\n{}",
                        mode.verb(),
                        tail_of(log, 40)
                    );
                }
                started_line(log)
            },
        );
        Amon {
            process,
            log: log.to_path_buf(),
            master_addr,
            relay_admin_addr,
            relay_agent_addr,
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Sends a signal (`HUP`, `TERM`, …) without waiting for anything.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// SIGTERM (what SMF's `:kill` sends), then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.process.signal("TERM");
        let log = self.log.clone();
        let process = &mut self.process;
        wait_until(
            "amon to exit after SIGTERM",
            || format!("log {}:\n{}", log.display(), tail_of(&log, 40)),
            || process.exited(),
        )
    }

    /// SIGKILL: no shutdown code runs, as when the machine loses power.
    pub fn kill(&mut self) -> ExitStatus {
        self.process.kill()
    }

    /// The relay admin API of this process.
    pub fn admin(&self) -> Api {
        Api::new(
            self.relay_admin_addr
                .expect("this amon process serves no relay admin API"),
        )
    }

    /// The log lines whose `msg` is `msg`.
    pub fn log_messages(&self, msg: &str) -> Vec<Value> {
        self.log_lines().into_iter().filter(|l| l["msg"] == msg).collect()
    }

    /// Every log line, parsed; lines that are not JSON are kept as strings.
    pub fn log_lines(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_string())))
            .collect()
    }

    /// The master API of this process.
    pub fn api(&self) -> Api {
        Api::new(self.master_addr.expect("this amon process serves no master API"))
    }
}

/// Runs `amon <mode> -c <config>` expecting it to exit on its own, and
/// returns its exit status and stderr.
pub fn run_to_exit(mode: Mode, config: &Path, log: &Path, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut process = ChildGuard::spawn(
        format!("amon {}", mode.verb()),
        &mut amon_command(mode, config, log, env),
    );
    let status = wait_until(
        &format!("amon {} to exit", mode.verb()),
        || format!("log {}:\n{}", log.display(), tail_of(log, 40)),
        || process.exited(),
    );
    (status, fs::read_to_string(log).unwrap_or_default())
}

/// The value of one sample (`name{labels} value`) in Prometheus text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

// ---- a tiny blocking HTTP client ----

/// The Master API of one process, over HTTP/1.1 with one connection per
/// request (`Connection: close`), so a response ends where the stream does.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer …`: for a master whose auth is not
    /// open (`Site` with tokens).
    pub token: Option<&'static str>,
}

impl Api {
    /// The API at `addr`, asked without a token.
    pub fn new(addr: SocketAddr) -> Api {
        Api { addr, token: None }
    }

    /// The same API, asked as the holder of `token`.
    pub fn with_token(self, token: &'static str) -> Api {
        Api {
            token: Some(token),
            ..self
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(body))
    }

    /// `POST` that must answer 200; returns the body.
    pub fn create(&self, path: &str, body: &Value) -> Value {
        let (status, response) = self.post(path, body);
        assert_eq!(status, 200, "POST {path} {body} answered {status}: {response}");
        response
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let response = self.exchange(method, path, body);
        let body = response.body;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        (response.status, value)
    }

    /// One request, and the whole response: status, headers and raw body.
    pub fn exchange(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(Value::to_string).unwrap_or_default();
        let authorization = self
            .token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n\
             {authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        send_request(self.addr, &format!("{method} {path}"), request.as_bytes())
    }
}

/// Sends `request`, a whole HTTP/1.1 request with `Connection: close`, to
/// `addr` on a connection of its own, and reads the whole response; `what`
/// names the request in failures.
pub fn send_request(addr: SocketAddr, what: &str, request: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{what}: cannot connect to {addr}: {e}"));
    stream.set_read_timeout(Some(DEADLINE)).expect("set_read_timeout");
    stream
        .write_all(request)
        .unwrap_or_else(|e| panic!("{what}: cannot send: {e}"));
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{what}: cannot read the response: {e}"));
    parse_response(&raw).unwrap_or_else(|| panic!("{what}: unparseable response {:?}", String::from_utf8_lossy(&raw)))
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics, showing it, if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not json ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The status and the body as JSON (`null` when it is not).
    pub fn status_and_json(self) -> (u16, Value) {
        let json = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        (self.status, json)
    }
}

/// A complete HTTP/1.1 response (identity or chunked body).
fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked"));
    if chunked && !body.is_empty() {
        body = dechunk(&body)?;
    }
    Some(Response { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---- the SMTP server ----

/// A python interpreter that has `aiosmtpd`, looked for once.
fn aiosmtpd_python() -> Option<&'static str> {
    static FOUND: OnceLock<Option<&'static str>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        ["/usr/bin/python3", "python3"].into_iter().find(|python| {
            Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    })
}

/// One received message, as the Maildir holds it.
#[derive(Debug, Clone)]
pub struct Email {
    pub subject: String,
    /// The envelope recipient (`X-RcptTo`, added by aiosmtpd).
    pub rcpt_to: String,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    /// Decoded from quoted-printable.
    pub body: String,
}

impl Email {
    fn parse(raw: &[u8]) -> Email {
        let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        // Unfold (RFC 5322 §2.2.3): a line starting with white space
        // continues the previous header; only the line break goes.
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            match (line.starts_with([' ', '\t']), headers.last_mut()) {
                (true, Some((_, value))) => value.push_str(line),
                _ => {
                    let (name, value) = line.split_once(':').unwrap_or((line, ""));
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                }
            }
        }
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let quoted_printable =
            header("content-transfer-encoding").is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        Email {
            subject: header("subject").unwrap_or_default(),
            rcpt_to: header("x-rcptto").unwrap_or_default(),
            message_id: header("message-id").unwrap_or_default(),
            in_reply_to: header("in-reply-to"),
            body: if quoted_printable {
                decode_quoted_printable(body)
            } else {
                body.to_string()
            },
        }
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// aiosmtpd with its `Mailbox` handler: every accepted message becomes one
/// file in `maildir/new`, moved there whole (Maildir's `tmp` → `new`), so a
/// file we see is a complete message.
pub struct SmtpServer {
    _process: ChildGuard,
    pub port: u16,
    maildir: PathBuf,
    log: PathBuf,
}

impl SmtpServer {
    /// Starts the server in `dir`, or `None` (after saying why) when no
    /// python with aiosmtpd exists here. Under CI, which installs it, its
    /// absence is a failure rather than a skip.
    pub fn start(dir: &Path) -> Option<SmtpServer> {
        let python = Self::python()?;
        // The port was free when chosen; if someone else took it meanwhile
        // the server exits (or we meet a non-SMTP peer), and we try again.
        for _ in 0..5 {
            if let Some(server) = Self::spawn(python, dir, free_port()) {
                return Some(server);
            }
        }
        panic!(
            "aiosmtpd would not start; last log:\n{}",
            tail_of(&dir.join("smtp.log"), 40)
        );
    }

    /// Starts the server in `dir` on `port`, which the caller has kept free
    /// (e.g. configured as a mail server that is down for now); `None` as
    /// for [`SmtpServer::start`].
    pub fn start_on(dir: &Path, port: u16) -> Option<SmtpServer> {
        let python = Self::python()?;
        let server = Self::spawn(python, dir, port).unwrap_or_else(|| {
            panic!(
                "aiosmtpd would not start on port {port}; log:\n{}",
                tail_of(&dir.join("smtp.log"), 40)
            )
        });
        Some(server)
    }

    /// The emails received so far whose subject names `machine`.
    pub fn emails_about(&self, machine: Uuid) -> Vec<Email> {
        let machine = machine.to_string();
        self.emails()
            .into_iter()
            .filter(|e| e.subject.contains(&machine))
            .collect()
    }

    /// True when [`SmtpServer::start`] can run here (saying why not, and
    /// panicking under CI, as it does).
    pub fn available() -> bool {
        Self::python().is_some()
    }

    fn python() -> Option<&'static str> {
        let python = aiosmtpd_python();
        if python.is_none() {
            let why = "no python3 with the aiosmtpd module (Debian: apt-get install python3-aiosmtpd)";
            if std::env::var_os("CI").is_some() {
                panic!("{why}; CI must provide it");
            }
            eprintln!("skipping: {why}");
        }
        python
    }

    /// One attempt on `port`: the server once it greets, `None` if it exited
    /// first (the port was taken).
    fn spawn(python: &str, dir: &Path, port: u16) -> Option<SmtpServer> {
        let maildir = dir.join("maildir");
        let log = dir.join("smtp.log");
        let stderr = File::create(&log).expect("smtp log");
        let mut process = ChildGuard::spawn(
            "aiosmtpd",
            Command::new(python)
                .args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr),
        );
        let ready = wait_until(
            "aiosmtpd to greet on its port",
            || format!("smtp log:\n{}", tail_of(&log, 40)),
            || {
                if process.exited().is_some() {
                    return Some(false);
                }
                smtp_greets(port).then_some(true)
            },
        );
        ready.then_some(SmtpServer {
            _process: process,
            port,
            maildir,
            log,
        })
    }

    /// Every message received so far, oldest file name first.
    pub fn emails(&self) -> Vec<Email> {
        let Ok(entries) = fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        paths
            .iter()
            .filter_map(|p| fs::read(p).ok())
            .map(|raw| Email::parse(&raw))
            .collect()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// True when an SMTP server answers `220` on the port.
fn smtp_greets(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), POLL) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut greeting = String::new();
    let mut reader = BufReader::new(&stream);
    let greeted = reader.read_line(&mut greeting).is_ok() && greeting.starts_with("220");
    let _ = (&stream).write_all(b"QUIT\r\n");
    greeted
}

// ---- the zone source ----

/// A file of zone event lines that the relay's `exec` source follows.
pub struct ZoneFeed {
    path: PathBuf,
}

impl ZoneFeed {
    pub fn create(path: PathBuf) -> ZoneFeed {
        File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        ZoneFeed { path }
    }

    /// The source command: `tail -F` of the file from its first line.
    /// `--pid=$PPID` (the shell's parent is amon; `exec` keeps it so) makes
    /// tail exit by itself when amon dies, even by SIGKILL, so no zone source
    /// outlives its test.
    pub fn command(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            r#"exec tail -n +1 -s 0.1 -F --pid="$PPID" "$0""#.into(),
            self.path.display().to_string(),
        ]
    }

    /// Appends one line in a single write, so the source never reads half.
    pub fn append(&self, line: &str) {
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.path.display()));
        file.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("cannot append to {}: {e}", self.path.display()));
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A line of the current (vminfod based) `zoneevent`: compact, every value a
/// string, `when` in nanoseconds since the epoch.
pub fn current_zoneevent(zone: Uuid, old: &str, new: &str) -> String {
    current_zoneevent_at(zone, Some(old), new, "5", now_ms())
}

/// [`current_zoneevent`] as `JSON.stringify` prints it, key order and all:
/// `when` is the event's Date in ms with `"000000"` appended. A create has
/// `old` = `Some("")`; a delete has `new` = `""` and `old` = `None` (the key
/// is missing); a zone without an id has `zoneid` `"-1"`.
pub fn current_zoneevent_at(zone: Uuid, old: Option<&str>, new: &str, zoneid: &str, when_ms: i64) -> String {
    let old = old
        .map(|old| format!(r#""oldstate":{},"#, json!(old)))
        .unwrap_or_default();
    format!(
        r#"{{"zonename":"{zone}",{old}"newstate":{},"zoneid":{},"when":"{when_ms}000000"}}"#,
        json!(new),
        json!(zoneid)
    )
}

/// A line of the legacy C `zoneevent`: the kernel's nvlist order with
/// `", "` separators, every value a string, `when` since boot, and the
/// channel/class/subclass trailer.
pub fn legacy_zoneevent(zone: Uuid, old: &str, new: &str) -> String {
    legacy_zoneevent_at(zone, old, new, 19, 4_520_616_213_191)
}

/// [`legacy_zoneevent`] with its zone id and `when` (ns since boot) given.
pub fn legacy_zoneevent_at(zone: Uuid, old: &str, new: &str, zoneid: i32, since_boot_ns: u64) -> String {
    format!(
        r#"{{"zonename": "{zone}", "newstate": "{new}", "oldstate": "{old}", "zoneid": "{zoneid}", "when": "{since_boot_ns}", "channel": "com.sun:zones:status", "class": "status", "subclass": "change"}}"#
    )
}

// ---- a webhook receiver ----

/// How the webhook receiver answers its next request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Reads the request and closes the connection without a word.
    Hangup,
    /// Reads the request and says nothing until the client gives up (the
    /// connection is held past the master's 10 s webhook timeout).
    Stall,
}

/// What the receiver got: each request's JSON body and its answer.
pub type Heard = Arc<Mutex<Vec<(Value, String)>>>;

/// A webhook receiver at the returned URL, answering `script` in order,
/// then 200 forever.
pub fn webhook_receiver(script: Vec<Answer>) -> (String, Heard) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let heard: Heard = Arc::default();
    let log = heard.clone();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming().flatten() {
            // One request per connection is enough: answers close it.
            let answer = script.next().unwrap_or(Answer::Status(200));
            if let Some(body) = read_webhook(&stream) {
                log.lock().unwrap().push((body, format!("{answer:?}")));
            }
            let mut stream = stream;
            match answer {
                Answer::Status(code) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
                Answer::Hangup => {}
                // Held open (not answered) on a thread of its own, so the
                // next connection is served meanwhile; the client closes it.
                Answer::Stall => {
                    std::thread::spawn(move || {
                        let mut sink = [0u8; 64];
                        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    });
                }
            }
        }
    });
    (url, heard)
}

/// Reads one request; returns its JSON body.
fn read_webhook(stream: &TcpStream) -> Option<Value> {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

// ---- a whole site ----

/// How the site runs: one process, or a master and a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Standalone,
    TwoProcess,
}

/// Knobs a test may turn.
#[derive(Debug, Clone, Copy)]
pub struct SiteOptions {
    pub layout: Layout,
    /// Notifier actors delivering in parallel.
    pub workers: usize,
    /// Bearer tokens as (token, role). Empty: `[auth] open = true`. Else
    /// auth is closed with these tokens (and one for the site's relay), and
    /// the site's `api` asks as the first `operator` token.
    pub tokens: &'static [(&'static str, &'static str)],
    /// Keep the master's database in a fresh schema of the PostgreSQL
    /// database at `AMON_TEST_DATABASE_URL` ([`postgres_url`]) instead of
    /// SQLite in its data dir.
    pub postgres: bool,
}

impl SiteOptions {
    pub fn new(layout: Layout) -> SiteOptions {
        SiteOptions {
            layout,
            workers: 4,
            tokens: &[],
            postgres: false,
        }
    }
}

/// The PostgreSQL database tests may use (`AMON_TEST_DATABASE_URL`, which
/// `.ci/run` sets after starting a server), or `None` after saying why
/// not; under CI its absence is a failure.
pub fn postgres_url() -> Option<String> {
    match std::env::var("AMON_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let why = "AMON_TEST_DATABASE_URL is not set: no PostgreSQL to test against";
            assert!(std::env::var_os("CI").is_none(), "{why}; CI must provide it");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    format!("amon_it_{}", Uuid::new_v4().simple())
}

/// The token a [`Site`] with tokens gives its relay.
const SITE_RELAY_TOKEN: &str = "site-relay-token-0123456789";

fn toml_string(text: &str) -> String {
    // A JSON string is a valid TOML basic string.
    serde_json::to_string(text).expect("string to json")
}

/// What a test puts in an amon config file; [`AmonConfig::text`] writes it
/// as TOML.
#[derive(Debug, Clone)]
pub struct AmonConfig {
    pub data_dir: PathBuf,
    /// `[master] listen`; `127.0.0.1:0` unless a test needs a known port.
    pub master_listen: String,
    /// `[relay] master_url`: set only for a separate relay.
    pub master_url: Option<String>,
    /// `[relay] master_urls`: several masters to fail over between; empty
    /// leaves the key out.
    pub master_urls: Vec<String>,
    /// `None`: no `smtp_url`, so mail goes to `.eml` files.
    pub smtp_port: Option<u16>,
    /// Notifier actors delivering in parallel.
    pub workers: usize,
    /// The exec zone source (absent for a master).
    pub zones: Option<ExecZones>,
    /// `[notify] heartbeat_timeout`; `None` leaves the key out (the default).
    pub heartbeat_timeout: Option<Duration>,
    /// More `[notify]` lines, `key = value` (TOML), e.g. a rate limit.
    pub notify_extra: Vec<String>,
    /// More `[master]` lines, e.g. `ingest_backlog = 10`.
    pub master_extra: Vec<String>,
    /// More lines at the end of the file, e.g. a `[probes]` section.
    pub tail_extra: Vec<String>,
    /// `[[auth.tokens]]` as (token, role); empty leaves `[auth] open = true`.
    pub tokens: Vec<(String, String)>,
    /// `[relay] master_token`: what the relay shows a closed master.
    pub master_token: Option<String>,
    /// `[store]` as (url, schema): the master's database in PostgreSQL.
    pub store: Option<(String, String)>,
}

/// `[relay.zones]` with `source = "exec"`.
#[derive(Debug, Clone)]
pub struct ExecZones {
    pub command: Vec<String>,
    /// `auto`, `zoneevent`, `sysevent` or `vmadm`.
    pub format: String,
    /// Prints every zone for reconciliation; `None` leaves the key out.
    pub list_command: Option<Vec<String>>,
    /// `server_tag = true`: every line starts with its compute node's uuid.
    pub server_tag: bool,
}

impl ExecZones {
    /// `command` in the `auto` format, without a zone list.
    pub fn auto(command: Vec<String>) -> ExecZones {
        ExecZones {
            command,
            format: "auto".into(),
            list_command: None,
            server_tag: false,
        }
    }
}

impl AmonConfig {
    /// Loopback on ports the kernel chooses, mail to files, four workers.
    pub fn new(data_dir: &Path) -> AmonConfig {
        AmonConfig {
            data_dir: data_dir.to_path_buf(),
            master_listen: "127.0.0.1:0".into(),
            master_url: None,
            master_urls: Vec::new(),
            smtp_port: None,
            workers: 4,
            zones: None,
            heartbeat_timeout: None,
            notify_extra: Vec::new(),
            master_extra: Vec::new(),
            tail_extra: Vec::new(),
            tokens: Vec::new(),
            master_token: None,
            store: None,
        }
    }

    pub fn text(&self) -> String {
        // A JSON array of strings is a valid TOML array.
        let json = |words: &[String]| serde_json::to_string(words).expect("strings to json");
        let mut text = format!(
            r#"datacenter = "coal"
data_dir = {data_dir}

[master]
listen = {listen}
{master_extra}
[relay]
admin_listen = "127.0.0.1:0"
heartbeat = "1s"
agent_listen = "127.0.0.1:0"
agent_probes_poll = "1s"
"#,
            data_dir = toml_string(&self.data_dir.display().to_string()),
            listen = toml_string(&self.master_listen),
            master_extra = self.master_extra.iter().map(|l| format!("{l}\n")).collect::<String>(),
        );
        if let Some(url) = &self.master_url {
            text.push_str(&format!("master_url = {}\n", toml_string(url)));
        }
        if !self.master_urls.is_empty() {
            text.push_str(&format!("master_urls = {}\n", json(&self.master_urls)));
        }
        if let Some(token) = &self.master_token {
            text.push_str(&format!("master_token = {}\n", toml_string(token)));
        }
        if let Some(zones) = &self.zones {
            text.push_str(&format!(
                "\n[relay.zones]\nsource = \"exec\"\ncommand = {}\nformat = {}\n",
                json(&zones.command),
                toml_string(&zones.format),
            ));
            if let Some(list) = &zones.list_command {
                text.push_str(&format!("list_command = {}\n", json(list)));
            }
            if zones.server_tag {
                text.push_str("server_tag = true\n");
            }
        }
        text.push_str(&format!(
            // The burst window as short as the hold: these tests are about
            // the hold (`notify.burst_window` has its own tests).
            "\n[notify]\nhold = \"{hold}s\"\nburst_window = \"{hold}s\"\nworkers = {workers}\n",
            hold = HOLD.as_secs(),
            workers = self.workers,
        ));
        if let Some(timeout) = self.heartbeat_timeout {
            text.push_str(&format!("heartbeat_timeout = \"{}ms\"\n", timeout.as_millis()));
        }
        for line in &self.notify_extra {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\n[notify.email]\n");
        if let Some(port) = self.smtp_port {
            text.push_str(&format!("smtp_url = \"smtp://127.0.0.1:{port}\"\n"));
        }
        text.push_str("from = \"amon@test.example.com\"\n\n");
        if self.tokens.is_empty() {
            text.push_str("[auth]\nopen = true\n");
        } else {
            text.push_str("[auth]\nopen = false\n");
            for (token, role) in &self.tokens {
                text.push_str(&format!(
                    "\n[[auth.tokens]]\ntoken = {}\nrole = {}\n",
                    toml_string(token),
                    toml_string(role)
                ));
            }
        }
        text.push_str("\n[demo]\nenabled = false\n");
        if let Some((url, schema)) = &self.store {
            text.push_str(&format!(
                "\n[store]\nurl = {}\nschema = {}\n",
                toml_string(url),
                toml_string(schema)
            ));
        }
        for line in &self.tail_extra {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Writes the file and returns its path.
    pub fn write(&self, path: &Path) -> PathBuf {
        fs::write(path, self.text()).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path.to_path_buf()
    }
}

/// An SMTP server, a zone feed and amon (standalone, or master + relay),
/// all in one temporary directory. Dropping it stops every process (the
/// relay first) and then removes the directory.
pub struct Site {
    relay: Option<Amon>,
    master: Amon,
    pub smtp: SmtpServer,
    pub zones: ZoneFeed,
    pub api: Api,
    /// Last, so the files outlive the processes using them.
    dir: tempfile::TempDir,
}

impl Site {
    /// Starts a site, or `None` when this machine cannot run the SMTP server
    /// (the reason is printed; under CI it panics instead).
    pub fn start(options: SiteOptions) -> Option<Site> {
        let store = match options.postgres {
            true => Some((postgres_url()?, fresh_schema())),
            false => None,
        };
        let dir = tempfile::Builder::new().prefix("amon-it-").tempdir().expect("tempdir");
        let smtp = SmtpServer::start(dir.path())?;
        let zones = ZoneFeed::create(dir.path().join("zones.jsonl"));
        let closed = !options.tokens.is_empty();
        let tokens: Vec<(String, String)> = options
            .tokens
            .iter()
            .chain(closed.then_some(&(SITE_RELAY_TOKEN, "relay")))
            .map(|&(token, role)| (token.to_string(), role.to_string()))
            .collect();
        let config_for = |data: &str, zones: Option<ExecZones>, master_url: Option<String>| AmonConfig {
            // The master's part (a master, or a standalone's) keeps its
            // database there; a relay's has none.
            store: store.clone().filter(|_| master_url.is_none()),
            smtp_port: Some(smtp.port),
            workers: options.workers,
            // The relay's part (a relay, or a standalone's) shows the
            // master its token; a master's own config needs none.
            master_token: (closed && zones.is_some()).then(|| SITE_RELAY_TOKEN.to_string()),
            tokens: tokens.clone(),
            zones,
            master_url,
            ..AmonConfig::new(&dir.path().join(data))
        };
        let source = ExecZones::auto(zones.command());
        let (master, relay) = match options.layout {
            Layout::Standalone => {
                let config = config_for("data", Some(source), None).write(&dir.path().join("standalone.toml"));
                let amon = Amon::start(Mode::Standalone, &config, &dir.path().join("standalone.log"));
                (amon, None)
            }
            Layout::TwoProcess => {
                let config = config_for("master-data", None, None).write(&dir.path().join("master.toml"));
                let master = Amon::start(Mode::Master, &config, &dir.path().join("master.log"));
                let master_url = format!("http://{}", master.master_addr.expect("master logged no master_listen"));
                let config =
                    config_for("relay-data", Some(source), Some(master_url)).write(&dir.path().join("relay.toml"));
                let relay = Amon::start(Mode::Relay, &config, &dir.path().join("relay.log"));
                (master, Some(relay))
            }
        };
        let api = match options.tokens.iter().find(|(_, role)| *role == "operator") {
            Some(&(token, _)) => master.api().with_token(token),
            None => {
                assert!(
                    !closed,
                    "a site with tokens needs an operator token for its own requests"
                );
                master.api()
            }
        };
        Some(Site {
            relay,
            master,
            smtp,
            zones,
            api,
            dir,
        })
    }

    /// The configuration file of the standalone process (or the relay's).
    pub fn config_path(&self) -> PathBuf {
        match self.relay {
            Some(_) => self.dir.path().join("relay.toml"),
            None => self.dir.path().join("standalone.toml"),
        }
    }

    /// The process that reads zones, to look at: the relay, or the
    /// standalone one.
    pub fn zone_process(&self) -> &Amon {
        self.relay.as_ref().unwrap_or(&self.master)
    }

    /// The process that reads zones: the relay, or the standalone one.
    pub fn relay(&mut self) -> &mut Amon {
        self.relay.as_mut().unwrap_or(&mut self.master)
    }

    /// What the processes said and what mail arrived, for failure messages.
    pub fn context(&self) -> String {
        let mut out = format!("--- site directory {}\n", self.dir.path().display());
        for amon in std::iter::once(&self.master).chain(self.relay.as_ref()) {
            out.push_str(&format!(
                "--- {} (pid {}):\n{}\n",
                amon.log.display(),
                amon.pid(),
                tail_of(&amon.log, 40)
            ));
        }
        out.push_str(&format!("--- smtp log:\n{}\n", tail_of(self.smtp.log(), 20)));
        out.push_str("--- emails received:\n");
        for email in self.smtp.emails() {
            out.push_str(&format!("to {}: {}\n", email.rcpt_to, email.subject));
        }
        out
    }

    /// [`wait_until`] with this site's logs and mail as the context.
    pub fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.context(), check)
    }

    /// Waits until the master knows the relay's compute node (its first
    /// server event is in `GET /servers`) and returns its uuid and hostname.
    pub fn wait_for_relay(&self) -> (Uuid, String) {
        self.wait_until("the relay's server in GET /servers", || {
            let (_, servers) = self.api.get("/servers");
            servers.as_array()?.iter().find_map(|s| {
                let uuid = Uuid::parse_str(s["uuid"].as_str()?).ok()?;
                let hostname = s["hostname"].as_str()?.to_string();
                s["lastEvent"].is_string().then_some((uuid, hostname))
            })
        })
    }

    /// Creates an operator account `login` with email `<login>@example.com`:
    /// its probes may watch any machine, reported by a relay or not (these
    /// tests are about holds, floods and delivery; `tenancy.rs` is about
    /// who may watch what).
    pub fn create_account(&self, login: &str) -> Value {
        self.api.create(
            "/accounts",
            &json!({ "login": login, "email": format!("{login}@example.com"), "operator": true }),
        )
    }

    /// Creates a customer (non-operator) account: its probes watch only
    /// machines a relay reported as its own.
    pub fn create_customer(&self, login: &str, uuid: Uuid) -> Value {
        self.api.create(
            "/accounts",
            &json!({ "login": login, "email": format!("{login}@example.com"), "uuid": uuid }),
        )
    }

    /// A machine-up probe on `machine`, mailing the account's email.
    pub fn create_machine_up_probe(&self, login: &str, machine: Uuid, name: &str) -> Value {
        self.api.create(
            &format!("/pub/{login}/probes"),
            &json!({ "type": "machine-up", "machine": machine.to_string(), "name": name }),
        )
    }

    /// Emails whose subject names `machine`.
    pub fn emails_about(&self, machine: Uuid) -> Vec<Email> {
        self.smtp.emails_about(machine)
    }

    /// Waits until at least `n` emails name `machine`, and returns them all.
    pub fn wait_for_emails_about(&self, machine: Uuid, n: usize) -> Vec<Email> {
        self.wait_until(&format!("{n} email(s) about machine {machine}"), || {
            let emails = self.emails_about(machine);
            (emails.len() >= n).then_some(emails)
        })
    }
}

// ---- a fake master ----

/// A stand-in for `amon master` that accepts every `POST /events` with the
/// `202` a committed batch gets, and records the events in arrival order, so
/// a test sees exactly what a relay decided and sent. Plain HTTP/1.1 on a
/// std `TcpListener`, keep-alive included (the relay reuses connections).
pub struct FakeMaster {
    pub addr: SocketAddr,
    /// Every event received, in order (a batch is flattened).
    events: Arc<Mutex<Vec<Value>>>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeMaster {
    pub fn start() -> FakeMaster {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("fake master: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake master: local_addr");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (events, stopping) = (events.clone(), stopping.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let events = events.clone();
                    // One thread per connection; it ends when the relay
                    // closes the connection (or dies).
                    std::thread::spawn(move || serve_fake_master(stream, &events));
                }
            })
        };
        FakeMaster {
            addr,
            events,
            stopping,
            acceptor: Some(acceptor),
        }
    }

    /// `[relay] master_url` for a relay that should talk to us.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every event received so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("fake master events").clone()
    }

    /// The `machine` events received so far.
    pub fn machine_events(&self) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["type"] == "machine").collect()
    }

    /// The `server` events of kind `kind` (`started`, `heartbeat`,
    /// `shutting_down`) received so far.
    pub fn server_events(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == "server" && e["event"] == kind)
            .collect()
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Serves one connection: requests until the peer closes it.
fn serve_fake_master(stream: TcpStream, events: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        let accepted = request.method == "POST" && request.path == "/events";
        if accepted {
            match serde_json::from_slice::<Value>(&request.body) {
                Ok(Value::Array(batch)) => events.lock().expect("fake master events").extend(batch),
                Ok(event) => events.lock().expect("fake master events").push(event),
                Err(e) => panic!(
                    "fake master: POST /events body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&request.body)
                ),
            }
        }
        let status = if accepted { "202 Accepted" } else { "404 Not Found" };
        let close = if request.close { "Connection: close\r\n" } else { "" };
        let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n{close}\r\n");
        if writer.write_all(response.as_bytes()).is_err() || request.close {
            return;
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

/// One HTTP/1.1 request (identity or chunked body); `None` at end of stream
/// or on anything unparseable.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let (mut length, mut chunked, mut close) = (0usize, false, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "content-length" => length = value.parse().ok()?,
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value == "close",
            _ => {}
        }
    }
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
        body
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        body
    };
    Some(Request {
        method,
        path,
        body,
        close,
    })
}

// ---- an agent with its relay and master ----

/// What an agent rig runs with.
#[derive(Debug, Clone, Copy)]
pub struct AgentRigOptions {
    /// `[agent] poll`: how often the agent asks its relay for its probes.
    pub poll: Duration,
    /// `[notify] agent_silence` on the master.
    pub agent_silence: Duration,
}

impl Default for AgentRigOptions {
    fn default() -> AgentRigOptions {
        AgentRigOptions {
            poll: Duration::from_secs(1),
            // Well above the relay's 1 s heartbeats, which carry the
            // agent's polls to the master: with 3 s, a machine loaded by
            // the whole suite and a build once delayed them past it, and
            // a live agent was reported silent.
            agent_silence: Duration::from_secs(10),
        }
    }
}

/// `amon agent`'s config file: the agent of the relay's own compute node
/// (the relay's TCP agent listener serves the global zone's agent).
fn agent_config_text(uuid: Uuid, relay: SocketAddr, poll: Duration) -> String {
    format!(
        "[agent]\nuuid = \"{uuid}\"\nrelay_url = \"http://{relay}\"\npoll = \"{}ms\"\n\n[probes]\nmin_disk_interval = \"1s\"\n",
        poll.as_millis()
    )
}

/// A master (SQLite, SMTP to a real aiosmtpd), a relay (its agent API on
/// loopback) and `amon agent` running as that relay's global-zone agent, in
/// one temporary directory: the rig for one end-to-end test per probe type.
///
/// ```ignore
/// let Some(rig) = AgentRig::start(AgentRigOptions::default()) else { return };
/// rig.create_account("ops");
/// let probe = rig.create_probe("ops", "cmd", json!({"cmd": "false"}));
/// let mail = rig.wait_for_emails(1);
/// ```
///
/// Probes get `agent` = [`AgentRig::agent_uuid`]; a probe on the master
/// reaches the agent within a poll of the relay's cache (1 s) and one of the
/// agent (`poll`). Files a probe should watch go in [`AgentRig::dir`].
/// Dropping it stops the agent, the relay, then the master.
pub struct AgentRig {
    agent: Option<Amon>,
    pub relay: Amon,
    pub master: Amon,
    pub smtp: SmtpServer,
    /// The master API.
    pub api: Api,
    /// The agent's uuid: the relay's compute node.
    pub agent_uuid: Uuid,
    agent_config: PathBuf,
    agent_starts: usize,
    master_starts: usize,
    _zones: ZoneFeed,
    /// Last, so the files outlive the processes using them.
    dir: tempfile::TempDir,
}

impl AgentRig {
    /// Starts the three processes and waits for the agent's first poll;
    /// `None` when this machine cannot run the SMTP server (as [`Site`]).
    pub fn start(options: AgentRigOptions) -> Option<AgentRig> {
        let dir = tempfile::Builder::new()
            .prefix("amon-it-agentrig-")
            .tempdir()
            .expect("tempdir");
        let path = |name: &str| dir.path().join(name);
        let smtp = SmtpServer::start(dir.path())?;
        let config = AmonConfig {
            // A port of its own, so a restarted master is where the relay
            // looks for it.
            master_listen: format!("127.0.0.1:{}", free_port()),
            smtp_port: Some(smtp.port),
            notify_extra: vec![format!("agent_silence = \"{}ms\"", options.agent_silence.as_millis())],
            tail_extra: vec!["\n[probes]\nmin_disk_interval = \"1s\"".into()],
            ..AmonConfig::new(&path("master-data"))
        }
        .write(&path("master.toml"));
        let master = Amon::start(Mode::Master, &config, &path("master.log"));
        let zones = ZoneFeed::create(path("zones.jsonl"));
        let config = AmonConfig {
            master_url: Some(format!("http://{}", master.master_addr.expect("master address"))),
            zones: Some(ExecZones::auto(zones.command())),
            ..AmonConfig::new(&path("relay-data"))
        }
        .write(&path("relay.toml"));
        let relay = Amon::start(Mode::Relay, &config, &path("relay.log"));
        // The relay wrote its generated server uuid before it logged that
        // it started.
        let agent_uuid = Uuid::parse_str(
            fs::read_to_string(path("relay-data").join("server_uuid"))
                .expect("the relay's server_uuid file")
                .trim(),
        )
        .expect("a uuid in server_uuid");
        let relay_agent = relay.relay_agent_addr.expect("the relay logged no relay_agent_listen");
        let agent_config = path("agent.toml");
        fs::write(&agent_config, agent_config_text(agent_uuid, relay_agent, options.poll)).expect("agent config");
        let api = master.api();
        let mut rig = AgentRig {
            agent: None,
            relay,
            master,
            smtp,
            api,
            agent_uuid,
            agent_config,
            agent_starts: 0,
            master_starts: 1,
            _zones: zones,
            dir,
        };
        rig.start_agent();
        Some(rig)
    }

    /// A directory for the files probes watch (and anything else).
    #[allow(dead_code)] // for the per-type tests built on the rig
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The running agent.
    #[allow(dead_code)] // for the per-type tests built on the rig
    pub fn agent(&self) -> &Amon {
        self.agent.as_ref().expect("the agent is not running")
    }

    /// Starts the agent (again, after [`AgentRig::kill_agent`]), each run
    /// with a log of its own (`agent-<n>.log`).
    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "the agent is already running");
        self.agent_starts += 1;
        let log = self.dir.path().join(format!("agent-{}.log", self.agent_starts));
        self.agent = Some(Amon::start(Mode::Agent, &self.agent_config, &log));
    }

    /// Stops the master (SIGTERM) and starts it again on the same data
    /// directory and port, with a log of its own (`master-<n>.log`).
    pub fn restart_master(&mut self) {
        self.restart_master_after("nothing", |_| true);
    }

    /// [`AgentRig::restart_master`], starting it again only once `down`
    /// holds (e.g. the relay has noticed that the master is gone).
    pub fn restart_master_after(&mut self, what: &str, mut down: impl FnMut(&AgentRig) -> bool) {
        self.master.terminate();
        self.wait_until(&format!("{what} while the master is down"), || down(self).then_some(()));
        self.master_starts += 1;
        let log = self.dir.path().join(format!("master-{}.log", self.master_starts));
        self.master = Amon::start(Mode::Master, &self.dir.path().join("master.toml"), &log);
    }

    /// SIGKILL: the agent is gone without a word.
    pub fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill();
        }
    }

    /// Creates an operator account `login` (`<login>@example.com`).
    pub fn create_account(&self, login: &str) -> Value {
        self.api.create(
            "/accounts",
            &json!({ "login": login, "email": format!("{login}@example.com"), "operator": true }),
        )
    }

    /// `POST /pub/:login/probes` for a probe this agent runs, answering
    /// with the status and body (a probe type not built answers 422).
    pub fn try_create_probe(&self, login: &str, probe_type: &str, config: Value) -> (u16, Value) {
        self.api.post(
            &format!("/pub/{login}/probes"),
            &json!({
                "type": probe_type,
                "name": format!("{probe_type} probe"),
                "agent": self.agent_uuid.to_string(),
                "config": config,
            }),
        )
    }

    /// As [`AgentRig::try_create_probe`], which must answer 200.
    #[allow(dead_code)] // for the per-type tests built on the rig
    pub fn create_probe(&self, login: &str, probe_type: &str, config: Value) -> Value {
        let (status, body) = self.try_create_probe(login, probe_type, config);
        assert_eq!(status, 200, "creating a {probe_type} probe answered {status}: {body}");
        body
    }

    /// `PUT /pub/:login/probes/:uuid` with a new config (the rest as it was).
    pub fn change_probe_config(&self, login: &str, probe: &Value, config: Value) -> Value {
        let mut changed = probe.clone();
        changed["config"] = config;
        let uuid = probe["uuid"].as_str().expect("probe uuid");
        let response = self
            .api
            .exchange("PUT", &format!("/pub/{login}/probes/{uuid}"), Some(&changed));
        let (status, body) = response.status_and_json();
        assert_eq!(status, 200, "PUT probe answered {status}: {body}");
        body
    }

    /// The account's alarms (`GET /pub/:login/alarms?state=all`).
    pub fn alarms(&self, login: &str) -> Vec<Value> {
        let (status, body) = self.api.get(&format!("/pub/{login}/alarms?state=all"));
        assert_eq!(status, 200, "GET alarms: {body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// Every email received so far.
    pub fn emails(&self) -> Vec<Email> {
        self.smtp.emails()
    }

    /// Waits until at least `n` emails arrived, and returns them all.
    pub fn wait_for_emails(&self, n: usize) -> Vec<Email> {
        self.wait_until(&format!("{n} email(s)"), || {
            let emails = self.emails();
            (emails.len() >= n).then_some(emails)
        })
    }

    /// The running agent's log lines whose `msg` is `msg`.
    pub fn agent_log(&self, msg: &str) -> Vec<Value> {
        self.agent.as_ref().map(|a| a.log_messages(msg)).unwrap_or_default()
    }

    /// What the processes said and what mail arrived, for failure messages.
    pub fn context(&self) -> String {
        let mut out = format!("--- rig directory {}\n", self.dir.path().display());
        for amon in [Some(&self.master), Some(&self.relay), self.agent.as_ref()]
            .into_iter()
            .flatten()
        {
            out.push_str(&format!(
                "--- {} (pid {}):\n{}\n",
                amon.log.display(),
                amon.pid(),
                tail_of(&amon.log, 40)
            ));
        }
        out.push_str("--- emails received:\n");
        for email in self.smtp.emails() {
            out.push_str(&format!("to {}: {}\n", email.rcpt_to, email.subject));
        }
        out
    }

    /// [`wait_until`] with the rig's logs and mail as the context.
    pub fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.context(), check)
    }
}

impl Drop for AgentRig {
    /// The agent first, then the relay (so it can still send), then the
    /// master; each process's guard kills whatever is left.
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.terminate();
        }
        self.relay.terminate();
    }
}

// ---- a small file system ----

/// A tmpfs of `size` mounted at `at` (root only), unmounted when dropped:
/// a disk a test can fill and empty.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
