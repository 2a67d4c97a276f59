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
use std::sync::OnceLock;
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
pub fn wait_until<T>(what: &str, context: impl Fn() -> String, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {DEADLINE:?} waiting for {what}\n{}", context());
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
    fn spawn(name: impl Into<String>, command: &mut Command) -> ChildGuard {
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
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind 127.0.0.1:0")
}

/// The last `n` lines of a file, for failure messages.
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---- the amon binary ----

/// `standalone`, `master` or `relay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Master,
    Relay,
}

impl Mode {
    fn verb(self) -> &'static str {
        match self {
            Mode::Standalone => "standalone",
            Mode::Master => "master",
            Mode::Relay => "relay",
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

/// The bound addresses from the `amon started` log line, once it is there.
fn started_line(log: &Path) -> Option<(Option<SocketAddr>, Option<SocketAddr>)> {
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
    Some((addr("master_listen"), addr("relay_admin_listen")))
}

impl Amon {
    /// Starts `amon <mode> -c <config>` and waits for its `amon started` line.
    pub fn start(mode: Mode, config: &Path, log: &Path) -> Amon {
        let mut process = ChildGuard::spawn(
            format!("amon {}", mode.verb()),
            &mut amon_command(mode, config, log, &[]),
        );
        let (master_addr, relay_admin_addr) = wait_until(
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
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
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
        Api {
            addr: self.master_addr.expect("this amon process serves no master API"),
        }
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

// ---- a tiny blocking HTTP client ----

/// The Master API of one process, over HTTP/1.1 with one connection per
/// request (`Connection: close`), so a response ends where the stream does.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub addr: SocketAddr,
}

impl Api {
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
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = TcpStream::connect(self.addr)
            .unwrap_or_else(|e| panic!("{method} {path}: cannot connect to {}: {e}", self.addr));
        stream.set_read_timeout(Some(DEADLINE)).expect("set_read_timeout");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: cannot send: {e}"));
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("{method} {path}: cannot read the response: {e}"));
        let (status, body) = parse_response(&raw).unwrap_or_else(|| {
            panic!(
                "{method} {path}: unparseable response {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        (status, value)
    }
}

/// Status and body of a complete HTTP/1.1 response (identity or chunked).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some((status, body))
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
        let Some(python) = aiosmtpd_python() else {
            let why = "no python3 with the aiosmtpd module (Debian: apt-get install python3-aiosmtpd)";
            if std::env::var_os("CI").is_some() {
                panic!("{why}; CI must provide it");
            }
            eprintln!("skipping: {why}");
            return None;
        };
        let maildir = dir.join("maildir");
        let log = dir.join("smtp.log");
        // The port was free when chosen; if someone else took it meanwhile
        // the server exits (or we meet a non-SMTP peer), and we try again.
        for _ in 0..5 {
            let port = free_port();
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
            if ready {
                return Some(SmtpServer {
                    _process: process,
                    port,
                    maildir,
                    log,
                });
            }
        }
        panic!("aiosmtpd would not start; last log:\n{}", tail_of(&log, 40));
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
    fn create(path: PathBuf) -> ZoneFeed {
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

/// A line of the current (vminfod based) `zoneevent`: compact, every value a
/// string, `when` in nanoseconds since the epoch.
pub fn current_zoneevent(zone: Uuid, old: &str, new: &str) -> String {
    let when = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    json!({
        "zonename": zone.to_string(),
        "oldstate": old,
        "newstate": new,
        "zoneid": "5",
        "when": when.to_string(),
    })
    .to_string()
}

/// A line of the legacy C `zoneevent`: the kernel's nvlist order with
/// `", "` separators, every value a string, `when` since boot, and the
/// channel/class/subclass trailer.
pub fn legacy_zoneevent(zone: Uuid, old: &str, new: &str) -> String {
    format!(
        r#"{{"zonename": "{zone}", "newstate": "{new}", "oldstate": "{old}", "zoneid": "19", "when": "4520616213191", "channel": "com.sun:zones:status", "class": "status", "subclass": "change"}}"#
    )
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
}

impl SiteOptions {
    pub fn new(layout: Layout) -> SiteOptions {
        SiteOptions { layout, workers: 4 }
    }
}

fn toml_string(text: &str) -> String {
    // A JSON string is a valid TOML basic string.
    serde_json::to_string(text).expect("string to json")
}

/// A config file's text. `zones` is the exec source (absent for a master);
/// `master_url` is set only for a separate relay.
fn config_text(
    data_dir: &Path,
    smtp_port: u16,
    workers: usize,
    zones: Option<&[String]>,
    master_url: Option<&str>,
) -> String {
    let mut text = format!(
        r#"datacenter = "coal"
data_dir = {data_dir}

[master]
listen = "127.0.0.1:0"

[relay]
admin_listen = "127.0.0.1:0"
heartbeat = "1s"
"#,
        data_dir = toml_string(&data_dir.display().to_string()),
    );
    if let Some(url) = master_url {
        text.push_str(&format!("master_url = {}\n", toml_string(url)));
    }
    if let Some(command) = zones {
        text.push_str(&format!(
            r#"
[relay.zones]
source = "exec"
command = {}
format = "auto"
"#,
            serde_json::to_string(command).expect("command to json"),
        ));
    }
    text.push_str(&format!(
        r#"
[notify]
hold = "{hold}s"
workers = {workers}

[notify.email]
smtp_url = "smtp://127.0.0.1:{smtp_port}"
from = "amon@test.example.com"

[auth]
open = true

[demo]
enabled = false
"#,
        hold = HOLD.as_secs(),
    ));
    text
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
        let dir = tempfile::Builder::new().prefix("amon-it-").tempdir().expect("tempdir");
        let smtp = SmtpServer::start(dir.path())?;
        let zones = ZoneFeed::create(dir.path().join("zones.jsonl"));
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            path
        };
        let command = zones.command();
        let (master, relay) = match options.layout {
            Layout::Standalone => {
                let config = write(
                    "standalone.toml",
                    config_text(
                        &dir.path().join("data"),
                        smtp.port,
                        options.workers,
                        Some(&command),
                        None,
                    ),
                );
                let amon = Amon::start(Mode::Standalone, &config, &dir.path().join("standalone.log"));
                (amon, None)
            }
            Layout::TwoProcess => {
                let config = write(
                    "master.toml",
                    config_text(&dir.path().join("master-data"), smtp.port, options.workers, None, None),
                );
                let master = Amon::start(Mode::Master, &config, &dir.path().join("master.log"));
                let master_url = format!("http://{}", master.master_addr.expect("master logged no master_listen"));
                let config = write(
                    "relay.toml",
                    config_text(
                        &dir.path().join("relay-data"),
                        smtp.port,
                        options.workers,
                        Some(&command),
                        Some(&master_url),
                    ),
                );
                let relay = Amon::start(Mode::Relay, &config, &dir.path().join("relay.log"));
                (master, Some(relay))
            }
        };
        let api = master.api();
        Some(Site {
            relay,
            master,
            smtp,
            zones,
            api,
            dir,
        })
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

    /// Creates an account `login` with email `<login>@example.com`.
    pub fn create_account(&self, login: &str) -> Value {
        self.api.create(
            "/accounts",
            &json!({ "login": login, "email": format!("{login}@example.com") }),
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
        let machine = machine.to_string();
        self.smtp
            .emails()
            .into_iter()
            .filter(|e| e.subject.contains(&machine))
            .collect()
    }

    /// Waits until at least `n` emails name `machine`, and returns them all.
    pub fn wait_for_emails_about(&self, machine: Uuid, n: usize) -> Vec<Email> {
        self.wait_until(&format!("{n} email(s) about machine {machine}"), || {
            let emails = self.emails_about(machine);
            (emails.len() >= n).then_some(emails)
        })
    }
}
