//! `cmd` probes: run a shell command (`/bin/sh -c`, as the original's
//! `exec` did) right away and then `interval` after each run ends; a run
//! fails when it times out (its whole process group is killed), exits
//! non-zero (unless `ignoreExitStatus`), or when `stdoutMatch` /
//! `stderrMatch` hits its output — in that order, as the original checked.
//! `threshold` failures within a sliding `period` make a fault; the first
//! good run after a reported fault sends one clear (the original never
//! cleared). Unlike the original, `cmd` is validated: a probe without one
//! is refused at create instead of failing to exec every interval.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

use super::matcher::Matcher;
use super::window::FaultTracker;
use super::{Observation, Report};
use crate::http::FieldError;
use crate::model::ProbeType;

/// The longest `cmd`: a command line, not a script (`/bin/sh -c` takes far
/// more, but a probe config travels in every agent's probe list).
const MAX_CMD: usize = 16 * 1024;

/// The most `env` entries, and the longest name or value.
const MAX_ENV: usize = 256;
const MAX_ENV_TEXT: usize = 16 * 1024;

/// How much of each of stdout and stderr a run keeps and matches; the rest
/// is read and thrown away so a chatty command does not block on a full
/// pipe (and then time out for the wrong reason).
pub const MAX_OUTPUT: usize = 64 * 1024;

/// How much of each output a fault's `details` carries, as the original
/// (1024 characters, then `...`): an event is mailed, not archived.
const DETAILS_OUTPUT: usize = 1024;

/// How much of the command a message quotes.
const MESSAGE_CMD: usize = 100;

/// The original's defaults.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(90);
/// 180 s: the original's code (its docs said 300).
const DEFAULT_PERIOD: Duration = Duration::from_secs(180);

/// A `cmd` probe's config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Run as `/bin/sh -c <cmd>`.
    pub cmd: String,
    /// The working directory; the agent's when absent.
    pub cwd: Option<PathBuf>,
    /// When given, the command's whole environment (the original's `env`
    /// replaced it, PATH included); the agent's environment when absent.
    pub env: Option<BTreeMap<String, String>>,
    /// How the output is read into text before matching.
    pub encoding: Encoding,
    /// Whether a non-zero exit (or death by a signal) is a failure.
    pub ignore_exit_status: bool,
    /// Boxed: a compiled pattern is large, and this config is one variant
    /// of `ProbeConfig` among small ones.
    pub stdout_match: Option<Box<Matcher>>,
    pub stderr_match: Option<Box<Matcher>>,
    /// A run still going after this is killed and is a failure.
    pub timeout: Duration,
    /// The pause between the end of one run and the start of the next.
    pub interval: Duration,
    /// `threshold` failures within `period` make a fault.
    pub period: Duration,
    pub threshold: u32,
}

/// The original's `encoding` (Node's names); bytes that are not valid in
/// it become U+FFFD rather than an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    /// `latin1` (also `binary`, Node's old name): each byte is one character.
    Latin1,
}

impl Encoding {
    fn decode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Encoding::Latin1 => bytes.iter().map(|&b| char::from(b)).collect(),
        }
    }
}

const FIELDS: [&str; 11] = [
    "cmd",
    "cwd",
    "env",
    "encoding",
    "ignoreExitStatus",
    "stdoutMatch",
    "stderrMatch",
    "timeout",
    "interval",
    "period",
    "threshold",
];

pub fn parse(config: &Value, errors: &mut Vec<FieldError>) -> Option<Config> {
    let map = super::object(config, errors)?;
    let before = errors.len();
    super::refuse_unknown(map, &FIELDS, ProbeType::Cmd, errors);
    let cmd = match map.get("cmd") {
        None | Some(Value::Null) => {
            errors.push(FieldError::missing("config.cmd"));
            String::new()
        }
        Some(Value::String(cmd)) => {
            if cmd.trim().is_empty() || cmd.len() > MAX_CMD || cmd.contains('\0') {
                errors.push(FieldError::invalid(
                    "config.cmd",
                    format!("config.cmd must be a command of 1 to {MAX_CMD} bytes without NUL characters"),
                ));
            }
            cmd.clone()
        }
        Some(other) => {
            errors.push(FieldError::invalid(
                "config.cmd",
                format!("config.cmd must be a string, not {other}"),
            ));
            String::new()
        }
    };
    let cwd = match map.get("cwd") {
        None | Some(Value::Null) => None,
        Some(value) => super::absolute_path(value, "config.cwd", errors),
    };
    let env = parse_env(map.get("env"), errors);
    let encoding = match map.get("encoding") {
        None | Some(Value::Null) => Encoding::Utf8,
        Some(Value::String(e)) if matches!(e.to_ascii_lowercase().as_str(), "utf8" | "utf-8") => Encoding::Utf8,
        Some(Value::String(e)) if matches!(e.to_ascii_lowercase().as_str(), "latin1" | "binary") => Encoding::Latin1,
        Some(other) => {
            errors.push(FieldError::invalid(
                "config.encoding",
                format!("config.encoding ({other}) is invalid, must be one of: utf8, latin1"),
            ));
            Encoding::Utf8
        }
    };
    let ignore_exit_status = match map.get("ignoreExitStatus") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            errors.push(FieldError::invalid(
                "config.ignoreExitStatus",
                format!("config.ignoreExitStatus ({other}) is invalid, must be a boolean"),
            ));
            false
        }
    };
    let matcher = |field: &str, errors: &mut Vec<FieldError>| match map.get(field) {
        None | Some(Value::Null) => None,
        Some(value) => Matcher::parse(value, &format!("config.{field}"), false, errors).map(Box::new),
    };
    let stdout_match = matcher("stdoutMatch", errors);
    let stderr_match = matcher("stderrMatch", errors);
    let second = Duration::from_secs(1);
    let timeout = super::seconds(map, "timeout", DEFAULT_TIMEOUT, second, errors);
    let interval = super::seconds(map, "interval", DEFAULT_INTERVAL, second, errors);
    let period = super::seconds(map, "period", DEFAULT_PERIOD, second, errors);
    let threshold = super::count(map, "threshold", 1, 1..=1000, errors);
    if errors.len() > before {
        return None;
    }
    Some(Config {
        cmd,
        cwd,
        env,
        encoding,
        ignore_exit_status,
        stdout_match,
        stderr_match,
        timeout,
        interval,
        period,
        threshold,
    })
}

/// `env`: an object of names to string values, each one a real environment
/// entry (a name without `=` or NUL, a value without NUL), so the spawn
/// cannot fail on it every interval.
fn parse_env(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<BTreeMap<String, String>> {
    let map = match value {
        None | Some(Value::Null) => return None,
        Some(Value::Object(map)) if map.len() <= MAX_ENV => map,
        Some(other) => {
            errors.push(FieldError::invalid(
                "config.env",
                format!("config.env must be an object of at most {MAX_ENV} names to strings, not {other}"),
            ));
            return None;
        }
    };
    let mut env = BTreeMap::new();
    for (name, value) in map {
        let field = format!("config.env.{name}");
        let name_ok = !name.is_empty() && name.len() <= MAX_ENV_TEXT && !name.contains(['=', '\0']);
        match value {
            Value::String(v) if name_ok && v.len() <= MAX_ENV_TEXT && !v.contains('\0') => {
                env.insert(name.clone(), v.clone());
            }
            _ if !name_ok => errors.push(FieldError::invalid(
                &field,
                format!("{field} is not a valid environment variable name"),
            )),
            other => errors.push(FieldError::invalid(
                &field,
                format!("{field} must be a string of at most {MAX_ENV_TEXT} bytes without NUL, not {other}"),
            )),
        }
    }
    Some(env)
}

/// What one run of the command did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Why the command could not be started (or its output not read).
    pub error: Option<String>,
    /// The exit status, when it exited by itself.
    pub exit_status: Option<i32>,
    /// The signal that ended it (`SIGKILL` when it timed out).
    pub signal: Option<String>,
    pub timed_out: bool,
    /// The first [`MAX_OUTPUT`] bytes of each, decoded.
    pub stdout: String,
    pub stderr: String,
}

/// Why a run failed, or `None` for a good run: in the original's order,
/// so one failing run has one reason.
pub fn failure(config: &Config, outcome: &Outcome) -> Option<String> {
    if let Some(error) = &outcome.error {
        return Some(format!("could not run: {error}"));
    }
    if outcome.timed_out {
        return Some(format!(
            "timed out (took longer than {})",
            humantime::format_duration(config.timeout)
        ));
    }
    if !config.ignore_exit_status {
        if let Some(signal) = &outcome.signal {
            return Some(format!("failed (killed by {signal})"));
        }
        if let Some(status) = outcome.exit_status.filter(|s| *s != 0) {
            return Some(format!("failed (exit status: {status})"));
        }
    }
    let matched = |matcher: &Option<Box<Matcher>>, name: &str, text: &str| {
        let m = matcher.as_ref().filter(|m| m.hits(text))?;
        Some(if m.invert {
            format!("failed ({name} did not match /{}/{})", m.pattern, m.flags)
        } else {
            format!("failed ({name} matched {})", m.describe())
        })
    };
    matched(&config.stdout_match, "stdout", &outcome.stdout)
        .or_else(|| matched(&config.stderr_match, "stderr", &outcome.stderr))
}

/// The fault for a failed run: the message names the command and the
/// reason; `value` is the exit status (null when there is none).
pub fn fault(config: &Config, outcome: &Outcome, reason: &str) -> Observation {
    let mut details = json!({
        "cmd": config.cmd,
        "exitStatus": outcome.exit_status,
        "signal": outcome.signal,
        "timedOut": outcome.timed_out,
        "stdout": clip(&outcome.stdout, DETAILS_OUTPUT),
        "stderr": clip(&outcome.stderr, DETAILS_OUTPUT),
    });
    if let Some(error) = &outcome.error {
        details["error"] = json!(error);
    }
    // `env` is left out, unlike the original: it is where secrets go, and
    // an event is mailed.
    Observation::fault(
        format!("Command {} {reason}.", quote(&config.cmd)),
        outcome.exit_status.map(Value::from),
        Some(details),
    )
}

/// The clear sent by the first good run after a reported fault.
pub fn clear(config: &Config) -> Observation {
    Observation::clear(format!("Command {} succeeded again.", quote(&config.cmd)))
}

/// `text` cut to `max` characters, with `...` when it was longer.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// The command as a message quotes it: short, on one line.
fn quote(cmd: &str) -> String {
    format!("{:?}", clip(cmd, MESSAGE_CMD))
}

/// Runs the command every `interval` until the probe is stopped (the future
/// dropped, which kills a running command's process group) or the agent
/// stops taking observations.
pub async fn run(config: Config, report: Report) -> anyhow::Result<()> {
    let mut tracker = FaultTracker::new(config.threshold, config.period);
    loop {
        let outcome = execute(&config).await;
        let observation = match failure(&config, &outcome) {
            Some(reason) => tracker
                .failure(Instant::now())
                .map(|_| fault(&config, &outcome, &reason)),
            None => tracker.success().then(|| clear(&config)),
        };
        if let Some(observation) = observation {
            report
                .send(observation)
                .await
                .map_err(|_| anyhow::anyhow!("the agent no longer takes this probe's observations"))?;
        }
        tokio::time::sleep(config.interval).await;
    }
}

/// One run of the command, in its own process group so that a timeout (or
/// the probe stopping) kills everything it started, not only the shell.
pub async fn execute(config: &Config) -> Outcome {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&config.cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(cwd) = &config.cwd {
        command.current_dir(cwd);
    }
    if let Some(env) = &config.env {
        command.env_clear().envs(env);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // The error of a missing `cwd` is the same ENOENT as a missing
            // shell's, so say where it was started.
            let place = config
                .cwd
                .as_ref()
                .map(|cwd| format!(" in {}", cwd.display()))
                .unwrap_or_default();
            return Outcome {
                error: Some(format!("cannot start /bin/sh{place}: {e}")),
                ..Outcome::default()
            };
        }
    };
    // Declared after `child`, so dropped first: the group dies before
    // tokio reaps the shell.
    let _group = ProcessGroup::of(child.id());
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Outcome {
            error: Some("the command's output pipes were not opened".to_string()),
            ..Outcome::default()
        };
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let finished = tokio::time::timeout(config.timeout, async {
        tokio::join!(
            child.wait(),
            read_bounded(stdout, &mut out),
            read_bounded(stderr, &mut err)
        )
    })
    .await;
    let mut outcome = Outcome::default();
    match finished {
        Err(_elapsed) => {
            // `_group` and `child` are killed when dropped below.
            outcome.timed_out = true;
            outcome.signal = Some("SIGKILL".to_string());
        }
        Ok((status, read_out, read_err)) => {
            match status {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    outcome.exit_status = status.code();
                    outcome.signal = status.signal().map(signal_name);
                }
                Err(e) => outcome.error = Some(format!("cannot wait for the command: {e}")),
            }
            if let Err(e) = read_out.and(read_err) {
                outcome.error = Some(format!("cannot read the command's output: {e}"));
            }
        }
    }
    outcome.stdout = config.encoding.decode(&out);
    outcome.stderr = config.encoding.decode(&err);
    outcome
}

/// Reads `pipe` to its end, keeping the first [`MAX_OUTPUT`] bytes in
/// `kept` (which holds what was read even if this future is dropped).
async fn read_bounded(mut pipe: impl AsyncRead + Unpin, kept: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// A command's process group (its shell's pid, as `process_group(0)` made
/// it), killed with SIGKILL when dropped: after a timeout, when the probe
/// stops mid-run, and after a normal exit, so a probe leaves nothing
/// running behind it. The group id is not reused while any member lives,
/// so this cannot hit another group.
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    fn of(pid: Option<u32>) -> ProcessGroup {
        // Never 1: `kill(-1)` would signal every process.
        let pid = pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
            .and_then(Pid::from_raw);
        ProcessGroup(pid)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // ESRCH: the group is already gone, the usual case.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
}

/// A signal's name (`SIGTERM`), as the original's details carried it; the
/// number where the name is not one of the usual ones.
fn signal_name(raw: i32) -> String {
    let known = [
        (Signal::HUP, "SIGHUP"),
        (Signal::INT, "SIGINT"),
        (Signal::QUIT, "SIGQUIT"),
        (Signal::ILL, "SIGILL"),
        (Signal::TRAP, "SIGTRAP"),
        (Signal::ABORT, "SIGABRT"),
        (Signal::BUS, "SIGBUS"),
        (Signal::FPE, "SIGFPE"),
        (Signal::KILL, "SIGKILL"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::USR2, "SIGUSR2"),
        (Signal::PIPE, "SIGPIPE"),
        (Signal::ALARM, "SIGALRM"),
        (Signal::TERM, "SIGTERM"),
    ];
    known
        .iter()
        .find(|(signal, _)| signal.as_raw() == raw)
        .map_or_else(|| format!("signal {raw}"), |(_, name)| name.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;

    fn parse_errors(config: Value) -> Vec<String> {
        let mut errors = Vec::new();
        assert_eq!(parse(&config, &mut errors), None, "{config} should be refused");
        errors.into_iter().map(|e| e.field).collect()
    }

    /// A config for running real commands in tests: a timeout no loaded
    /// machine reaches, and checks in quick succession.
    fn config(cmd: &str) -> Config {
        Config {
            cmd: cmd.to_string(),
            cwd: None,
            env: None,
            encoding: Encoding::Utf8,
            ignore_exit_status: false,
            stdout_match: None,
            stderr_match: None,
            timeout: Duration::from_secs(120),
            interval: Duration::from_millis(10),
            period: Duration::from_secs(60),
            threshold: 1,
        }
    }

    fn matcher(value: Value) -> Option<Box<Matcher>> {
        let mut errors = Vec::new();
        let m = Matcher::parse(&value, "config.stdoutMatch", false, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        m.map(Box::new)
    }

    /// The next observation, waited for with a deadline no healthy run
    /// comes near.
    async fn next(rx: &mut mpsc::Receiver<Observation>) -> Observation {
        tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("an observation within the deadline")
            .expect("the probe is running")
    }

    #[test]
    fn the_originals_defaults() {
        let mut errors = Vec::new();
        let c = parse(&json!({"cmd": "true"}), &mut errors).unwrap();
        assert!(errors.is_empty());
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.interval, Duration::from_secs(90));
        assert_eq!(c.period, Duration::from_secs(180));
        assert_eq!(c.threshold, 1);
        assert_eq!((c.cwd, c.env, c.encoding), (None, None, Encoding::Utf8));
        assert!(!c.ignore_exit_status);
    }

    #[test]
    fn every_field_parses() {
        let mut errors = Vec::new();
        let c = parse(
            &json!({
                "cmd": "svcs -x", "cwd": "/var/tmp", "env": {"PATH": "/usr/bin"},
                "encoding": "latin1", "ignoreExitStatus": true,
                "stdoutMatch": {"pattern": "maintenance"}, "stderrMatch": {"pattern": "x", "type": "substring"},
                "timeout": "10s", "interval": 60, "period": "5m", "threshold": 3
            }),
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty());
        assert_eq!(c.cwd.as_deref(), Some(Path::new("/var/tmp")));
        assert_eq!(c.env.unwrap()["PATH"], "/usr/bin");
        assert_eq!(c.encoding, Encoding::Latin1);
        assert!(c.ignore_exit_status && c.stdout_match.is_some() && c.stderr_match.is_some());
        assert_eq!(
            (c.timeout, c.interval, c.period, c.threshold),
            (
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(300),
                3
            )
        );
    }

    #[test]
    fn each_wrong_field_is_named() {
        assert_eq!(parse_errors(json!({})), ["config.cmd"]);
        assert_eq!(parse_errors(json!("ls")), ["config"]);
        assert_eq!(parse_errors(json!({"cmd": ""})), ["config.cmd"]);
        assert_eq!(parse_errors(json!({"cmd": "  \n"})), ["config.cmd"]);
        assert_eq!(parse_errors(json!({"cmd": "ls\u{0}"})), ["config.cmd"]);
        assert_eq!(parse_errors(json!({"cmd": "x".repeat(MAX_CMD + 1)})), ["config.cmd"]);
        assert_eq!(parse_errors(json!({"cmd": ["ls"]})), ["config.cmd"]);
        assert_eq!(parse_errors(json!({"cmd": "ls", "cwd": "tmp"})), ["config.cwd"]);
        assert_eq!(parse_errors(json!({"cmd": "ls", "env": "A=b"})), ["config.env"]);
        assert_eq!(parse_errors(json!({"cmd": "ls", "env": {"A": 1}})), ["config.env.A"]);
        assert_eq!(
            parse_errors(json!({"cmd": "ls", "env": {"A=B": "c"}})),
            ["config.env.A=B"]
        );
        assert_eq!(
            parse_errors(json!({"cmd": "ls", "env": {"A": "\u{0}"}})),
            ["config.env.A"]
        );
        assert_eq!(
            parse_errors(json!({"cmd": "ls", "encoding": "ucs2"})),
            ["config.encoding"]
        );
        assert_eq!(
            parse_errors(json!({"cmd": "ls", "ignoreExitStatus": "yes"})),
            ["config.ignoreExitStatus"]
        );
        assert_eq!(
            parse_errors(json!({"cmd": "ls", "stdoutMatch": {"pattern": "("}})),
            ["config.stdoutMatch.pattern"]
        );
        assert_eq!(
            parse_errors(json!({"cmd": "ls", "stderrMatch": {"flags": "g"}})),
            ["config.stderrMatch.pattern", "config.stderrMatch.flags"]
        );
        assert_eq!(parse_errors(json!({"cmd": "ls", "timeout": 0})), ["config.timeout"]);
        assert_eq!(
            parse_errors(json!({"cmd": "ls", "interval": "soon"})),
            ["config.interval"]
        );
        assert_eq!(parse_errors(json!({"cmd": "ls", "period": -5})), ["config.period"]);
        assert_eq!(parse_errors(json!({"cmd": "ls", "threshold": 0})), ["config.threshold"]);
        assert_eq!(parse_errors(json!({"cmd": "ls", "command": "ls"})), ["config.command"]);
        assert_eq!(
            parse_errors(json!({"cwd": 7, "timeout": "x"})),
            ["config.cmd", "config.cwd", "config.timeout"]
        );
    }

    #[test]
    fn a_run_fails_for_one_reason_in_the_originals_order() {
        let mut c = config("x");
        c.timeout = Duration::from_secs(5);
        c.stdout_match = matcher(json!({"pattern": "ERROR"}));
        c.stderr_match = matcher(json!({"pattern": "warn", "flags": "i"}));
        let ran = |exit_status, stdout: &str, stderr: &str| Outcome {
            exit_status: Some(exit_status),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            ..Outcome::default()
        };
        assert_eq!(failure(&c, &ran(0, "ok", "")), None);
        assert_eq!(
            failure(&c, &ran(3, "ERROR", "WARN")).as_deref(),
            Some("failed (exit status: 3)")
        );
        assert_eq!(
            failure(&c, &ran(0, "an ERROR", "WARN")).as_deref(),
            Some("failed (stdout matched /ERROR/)")
        );
        assert_eq!(
            failure(&c, &ran(0, "", "Warning")).as_deref(),
            Some("failed (stderr matched /warn/i)")
        );
        let timed_out = Outcome {
            timed_out: true,
            signal: Some("SIGKILL".into()),
            ..Outcome::default()
        };
        assert_eq!(
            failure(&c, &timed_out).as_deref(),
            Some("timed out (took longer than 5s)")
        );
        let killed = Outcome {
            signal: Some("SIGSEGV".into()),
            ..Outcome::default()
        };
        assert_eq!(failure(&c, &killed).as_deref(), Some("failed (killed by SIGSEGV)"));
        let not_started = Outcome {
            error: Some("cannot start /bin/sh: gone".into()),
            ..Outcome::default()
        };
        assert_eq!(
            failure(&c, &not_started).as_deref(),
            Some("could not run: cannot start /bin/sh: gone")
        );

        c.ignore_exit_status = true;
        assert_eq!(failure(&c, &ran(3, "", "")), None);
        assert_eq!(failure(&c, &killed), None);
        assert!(failure(&c, &timed_out).is_some(), "a timeout is never ignored");
        assert!(failure(&c, &ran(3, "ERROR", "")).is_some(), "the output still counts");
    }

    #[test]
    fn an_inverted_match_fails_when_the_pattern_is_missing() {
        let mut c = config("x");
        c.stdout_match = matcher(json!({"pattern": "^ok$", "flags": "m", "invert": true}));
        let printed = |stdout: &str| Outcome {
            exit_status: Some(0),
            stdout: stdout.to_string(),
            ..Outcome::default()
        };
        assert_eq!(failure(&c, &printed("ok\n")), None);
        assert_eq!(
            failure(&c, &printed("degraded\n")).as_deref(),
            Some("failed (stdout did not match /^ok$/m)")
        );
    }

    #[test]
    fn a_fault_names_the_command_and_carries_clipped_output() {
        let c = config("check-thing --all");
        let outcome = Outcome {
            exit_status: Some(2),
            stdout: "é".repeat(2000),
            stderr: "short".into(),
            ..Outcome::default()
        };
        let o = fault(&c, &outcome, "failed (exit status: 2)");
        assert!(!o.clear);
        assert_eq!(o.message, r#"Command "check-thing --all" failed (exit status: 2)."#);
        assert_eq!(o.value, Some(json!(2)));
        let details = o.details.unwrap();
        assert_eq!(details["cmd"], "check-thing --all");
        assert_eq!(details["exitStatus"], 2);
        assert_eq!(details["signal"], Value::Null);
        assert_eq!(details["timedOut"], false);
        assert_eq!(details["stderr"], "short");
        let stdout = details["stdout"].as_str().unwrap();
        assert_eq!(stdout.chars().count(), DETAILS_OUTPUT + 3);
        assert!(stdout.ends_with("é..."));
        assert!(details.get("env").is_none());

        let long = config(&format!("echo {}\nexit 1", "a".repeat(300)));
        let message = fault(&long, &Outcome::default(), "failed").message;
        assert_eq!(
            message,
            format!(r#"Command "echo {}..." failed."#, "a".repeat(MESSAGE_CMD - 5))
        );
        assert_eq!(clear(&c).message, r#"Command "check-thing --all" succeeded again."#);
        assert!(clear(&c).clear);
    }

    #[tokio::test]
    async fn a_failing_command_is_a_fault_with_its_exit_status() {
        let (tx, mut rx) = mpsc::channel(8);
        let probe = tokio::spawn(run(config("echo out; echo err >&2; exit 3"), tx));
        let o = next(&mut rx).await;
        probe.abort();
        assert!(!o.clear);
        assert_eq!(
            o.message,
            r#"Command "echo out; echo err >&2; exit 3" failed (exit status: 3)."#
        );
        assert_eq!(o.value, Some(json!(3)));
        let details = o.details.unwrap();
        assert_eq!(
            (details["stdout"].as_str(), details["stderr"].as_str()),
            (Some("out\n"), Some("err\n"))
        );
    }

    #[tokio::test]
    async fn output_matching_the_pattern_is_a_fault() {
        let mut c = config("echo 'disk ERROR on sd0'");
        c.stdout_match = matcher(json!({"pattern": "ERROR"}));
        let (tx, mut rx) = mpsc::channel(8);
        let probe = tokio::spawn(run(c, tx));
        let o = next(&mut rx).await;
        probe.abort();
        assert_eq!(
            o.message,
            r#"Command "echo 'disk ERROR on sd0'" failed (stdout matched /ERROR/)."#
        );
        assert_eq!(o.value, Some(json!(0)));
    }

    #[tokio::test]
    async fn cwd_and_env_are_the_commands() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        let mut c = config(&format!(
            r#"test "$(pwd -P)" = "{}" && test "$ANSWER" = 42 && test -z "$HOME""#,
            cwd.display()
        ));
        c.cwd = Some(cwd);
        c.env = Some(BTreeMap::from([("ANSWER".to_string(), "42".to_string())]));
        let outcome = execute(&c).await;
        assert_eq!(outcome.exit_status, Some(0), "{outcome:?}");
        c.cwd = Some(dir.path().join("missing"));
        let outcome = execute(&c).await;
        assert!(outcome.error.is_some(), "{outcome:?}");
        let reason = failure(&c, &outcome).unwrap();
        assert!(
            reason.starts_with("could not run: cannot start /bin/sh in /"),
            "{reason}"
        );
        assert!(reason.contains("missing: "), "{reason}");
    }

    #[tokio::test]
    async fn a_command_killed_by_a_signal_fails_with_its_name() {
        let outcome = execute(&config("kill -TERM $$")).await;
        assert_eq!(
            (outcome.exit_status, outcome.signal.as_deref()),
            (None, Some("SIGTERM"))
        );
        assert_eq!(signal_name(Signal::KILL.as_raw()), "SIGKILL");
        assert_eq!(signal_name(99), "signal 99");
    }

    #[tokio::test]
    async fn output_is_kept_up_to_the_bound_and_the_rest_drained() {
        // Four times the bound: a command blocked on a full pipe would time out.
        let c = config(&format!("head -c {} /dev/zero | tr '\\0' a", 4 * MAX_OUTPUT));
        let outcome = execute(&c).await;
        assert_eq!(outcome.exit_status, Some(0), "{outcome:?}");
        assert!(!outcome.timed_out);
        assert_eq!(outcome.stdout.len(), MAX_OUTPUT);
    }

    #[tokio::test]
    async fn one_clear_when_the_command_passes_again() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("healthy");
        let (tx, mut rx) = mpsc::channel(8);
        let probe = tokio::spawn(run(config(&format!("test -e '{}'", flag.display())), tx));
        let first = next(&mut rx).await;
        assert!(!first.clear && first.message.contains("exit status: 1"), "{first:?}");
        std::fs::write(&flag, "").unwrap();
        // Faults of runs before the flag was seen, then the clear.
        let mut o = next(&mut rx).await;
        while !o.clear {
            o = next(&mut rx).await;
        }
        assert!(o.message.ends_with("succeeded again."));
        // Good runs go on; one clear only: the next observation is the
        // fault of the flag going away again, not another clear.
        std::fs::remove_file(&flag).unwrap();
        let o = next(&mut rx).await;
        probe.abort();
        assert!(!o.clear, "{o:?}");
    }

    /// The pids a test command wrote (`echo $$ $! > file`), once it has.
    fn pids_in(file: &Path) -> Option<Vec<i32>> {
        let text = std::fs::read_to_string(file).ok()?;
        let line = text.strip_suffix('\n')?;
        line.split(' ').map(|p| p.parse().ok()).collect()
    }

    /// Whether `pid` no longer runs: gone, or a zombie waiting for its
    /// reaper (a container's pid 1 may never reap it).
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
            Err(_) => true,
        }
    }

    /// Polls `condition` for up to 60 s: the processes are real, so their
    /// end is waited for, never assumed after a pause.
    fn eventually(mut condition: impl FnMut() -> bool) -> bool {
        for _ in 0..6000 {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Starts a probe whose command starts a grandchild (`sleep 1000`) and
    /// returns once both have written their pids: the clock, paused, does
    /// not move while this waits (the test task keeps yielding).
    async fn start_sleeper(
        c: &mut Config,
        dir: &Path,
    ) -> (
        tokio::task::JoinHandle<anyhow::Result<()>>,
        mpsc::Receiver<Observation>,
        Vec<i32>,
    ) {
        let pidfile = dir.join("pids");
        c.cmd = format!("sleep 1000 & echo $$ $! > '{}'; wait", pidfile.display());
        let (tx, rx) = mpsc::channel(8);
        let probe = tokio::spawn(run(c.clone(), tx));
        for _ in 0..6000 {
            tokio::task::yield_now().await;
            if let Some(pids) = pids_in(&pidfile) {
                return (probe, rx, pids);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the command never wrote its pids");
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config("");
        c.timeout = Duration::from_secs(5);
        c.interval = Duration::from_secs(3600);
        let (probe, mut rx, pids) = start_sleeper(&mut c, dir.path()).await;
        let o = next(&mut rx).await;
        assert_eq!(
            o.message,
            format!("Command {:?} timed out (took longer than 5s).", c.cmd)
        );
        assert_eq!(o.value, None);
        let details = o.details.unwrap();
        assert_eq!(
            (details["timedOut"].as_bool(), details["signal"].as_str()),
            (Some(true), Some("SIGKILL"))
        );
        assert!(eventually(|| pids.iter().all(|p| dead(*p))), "{pids:?} still run");
        probe.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_stopped_mid_run_leaves_nothing_running() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config("");
        let (probe, _rx, pids) = start_sleeper(&mut c, dir.path()).await;
        probe.abort();
        assert!(probe.await.unwrap_err().is_cancelled());
        assert!(eventually(|| pids.iter().all(|p| dead(*p))), "{pids:?} still run");
    }
}
