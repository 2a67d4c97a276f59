//! `icmp` probes: the system `ping` sends `npackets` to `host` every
//! `interval`; a run that loses any packet or fails is a failed check (as
//! in the original), `threshold` failed checks within `period` are a fault,
//! and the first clean run after one is a clear. `ping` is iputils' on
//! Linux (`ping -n -c N -s SIZE -W 5 host`) and illumos' elsewhere
//! (`ping -s host SIZE N`); both print the same summary lines, which
//! [`parse_summary`] reads. Fixes the original's bugs: its details named
//! `stodut` (here `stdout`), it never cleared, and a host starting with `-`
//! could become an option of `ping`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::window::FaultTracker;
use super::{count, object, seconds, Observation, Report};
use crate::http::FieldError;
use crate::model::ProbeType;

const FIELDS: [&str; 6] = ["host", "npackets", "dataSize", "interval", "threshold", "period"];

/// The original's defaults.
const DEFAULT_NPACKETS: u32 = 5;
const DEFAULT_DATA_SIZE: u32 = 56;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(90);
const DEFAULT_PERIOD: Duration = Duration::from_secs(300);

/// At most this much of `ping`'s stdout and stderr goes into a fault's
/// details (the end of stdout, where the summary is; the start of stderr).
const OUTPUT_CHARS: usize = 1024;

/// A parsed `icmp` probe config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// A host name or an IPv4/IPv6 address.
    pub host: String,
    /// Packets per run (one a second).
    pub npackets: u32,
    /// Bytes of data per packet (`dataSize`, undocumented in the original).
    pub data_size: u32,
    pub interval: Duration,
    pub threshold: u32,
    pub period: Duration,
}

pub fn parse(config: &Value, errors: &mut Vec<FieldError>) -> Option<Config> {
    let map = object(config, errors)?;
    let before = errors.len();
    super::refuse_unknown(map, &FIELDS, ProbeType::Icmp, errors);
    let host = match map.get("host") {
        None | Some(Value::Null) => {
            errors.push(FieldError::missing("config.host"));
            None
        }
        Some(Value::String(host)) if valid_host(host) => Some(host.clone()),
        Some(other) => {
            errors.push(FieldError::invalid(
                "config.host",
                format!("config.host must be a host name or an IP address, not {other}"),
            ));
            None
        }
    };
    let npackets = count(map, "npackets", DEFAULT_NPACKETS, 1..=100, errors);
    let data_size = count(map, "dataSize", DEFAULT_DATA_SIZE, 0..=65_000, errors);
    let second = Duration::from_secs(1);
    let interval = seconds(map, "interval", DEFAULT_INTERVAL, second, errors);
    let period = seconds(map, "period", DEFAULT_PERIOD, second, errors);
    // 0 is accepted as 1: the original's `++count >= 0` made it mean 1.
    let threshold = count(map, "threshold", 1, 0..=1000, errors).max(1);
    if errors.len() > before {
        return None;
    }
    Some(Config {
        host: host?,
        npackets,
        data_size,
        interval,
        threshold,
        period,
    })
}

/// A host name (letters, digits, `-`, `.`, `_`) or an IPv4/IPv6 address;
/// never something `ping` would read as an option.
fn valid_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && !host.starts_with(['-', '.'])
            && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)))
}

/// Which `ping` is run, and how it is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    pub program: PathBuf,
    pub flavour: Flavour,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Flavour {
    /// Linux: `ping -n -c N -s SIZE -W 5 -- host`.
    Iputils,
    /// illumos: `ping -s host SIZE N`.
    Illumos,
}

impl Ping {
    /// This system's `ping`.
    pub fn system() -> Ping {
        if cfg!(any(target_os = "illumos", target_os = "solaris")) {
            Ping {
                program: "/usr/sbin/ping".into(),
                flavour: Flavour::Illumos,
            }
        } else {
            Ping {
                program: "ping".into(),
                flavour: Flavour::Iputils,
            }
        }
    }

    /// The arguments for one run.
    pub fn args(&self, config: &Config) -> Vec<String> {
        let (n, size) = (config.npackets.to_string(), config.data_size.to_string());
        match self.flavour {
            Flavour::Iputils => vec![
                "-n".into(),
                "-c".into(),
                n,
                "-s".into(),
                size,
                // Not `-w`, which keeps sending past `-c` until it expires.
                "-W".into(),
                REPLY_WAIT_SECS.to_string(),
                "--".into(),
                config.host.clone(),
            ],
            Flavour::Illumos => vec!["-s".into(), config.host.clone(), size, n],
        }
    }
}

/// How long iputils' `ping` waits for an answer to its last packet when
/// none came (its default is 10 s).
const REPLY_WAIT_SECS: u64 = 5;

/// How long a run may take before it is killed: a packet a second, the wait
/// for the last answer, and some grace.
fn run_deadline(config: &Config) -> Duration {
    Duration::from_secs(u64::from(config.npackets) + REPLY_WAIT_SECS + 5)
}

/// What `ping` printed as its summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub transmitted: u32,
    pub received: u32,
    /// Percent lost, as `ping` printed it.
    pub loss: f64,
    /// Round-trip min/avg/max in ms; absent when nothing was answered.
    pub rtt: Option<[f64; 3]>,
}

/// Reads the summary either `ping` prints:
///
/// iputils: `5 packets transmitted, 4 received, +1 errors, 20% packet loss,
/// time 4005ms` and `rtt min/avg/max/mdev = 0.03/0.04/0.05/0.01 ms`;
/// illumos: `5 packets transmitted, 4 packets received, 20% packet loss` and
/// `round-trip (ms)  min/avg/max/stddev = 0.26/0.30/0.35/0.03`.
pub fn parse_summary(stdout: &str) -> Option<Summary> {
    let counts = stdout.lines().find(|l| l.contains("packets transmitted"))?;
    let (mut transmitted, mut received, mut loss) = (None, None, None);
    for part in counts.split(',').map(str::trim) {
        let first = part.split_whitespace().next().unwrap_or("");
        if part.ends_with("transmitted") {
            transmitted = first.parse::<u32>().ok();
        } else if part.ends_with("received") {
            received = first.parse::<u32>().ok();
        } else if let Some(percent) = part.strip_suffix("% packet loss") {
            loss = percent.parse::<f64>().ok().filter(|l| l.is_finite());
        }
    }
    let (transmitted, received) = (transmitted?, received?);
    let loss = loss.or_else(|| {
        (transmitted > 0).then(|| 100.0 * f64::from(transmitted.saturating_sub(received)) / f64::from(transmitted))
    })?;
    let rtt = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("rtt ") || l.starts_with("round-trip"))
        .and_then(|l| {
            let numbers = l.split_once('=')?.1.trim().trim_end_matches("ms").trim();
            let mut values = numbers.split('/').map(|v| v.trim().parse::<f64>().ok());
            Some([values.next()??, values.next()??, values.next()??])
        });
    Some(Summary {
        transmitted,
        received,
        loss,
        rtt,
    })
}

/// What one run of `ping` came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Its exit status (`None`: killed by a signal, or by us at its deadline).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why a run is a failed check (`None`: every packet came back). Any loss
/// is a failure, as in the original; `threshold` and `period` say how many
/// make a fault.
pub fn judge(run: &Run) -> Option<String> {
    match parse_summary(&run.stdout) {
        Some(s) if s.received < s.transmitted || s.transmitted == 0 => Some(format!(
            "{}% packet loss ({} of {} answered)",
            s.loss, s.received, s.transmitted
        )),
        Some(_) if run.status == Some(0) => None,
        Some(_) => Some(exited(run.status)),
        None => {
            let said = run.stderr.lines().map(str::trim).find(|l| !l.is_empty());
            Some(match said {
                Some(line) => format!("{} ({line})", exited(run.status)),
                None => format!("{} and printed no statistics", exited(run.status)),
            })
        }
    }
}

fn exited(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("ping exited with status {code}"),
        None => "ping was killed".to_string(),
    }
}

/// The fault a failed run reports, `count` failures being in the period.
pub fn fault(config: &Config, run: &Run, reason: &str, count: usize) -> Observation {
    let summary = parse_summary(&run.stdout);
    let metrics = summary.as_ref().map(|s| {
        json!({
            "transmitted": s.transmitted,
            "received": s.received,
            "loss": s.loss,
            "min": s.rtt.map(|r| r[0]),
            "avg": s.rtt.map(|r| r[1]),
            "max": s.rtt.map(|r| r[2]),
        })
    });
    Observation::fault(
        format!("ping {}: {reason}", config.host),
        Some(summary.map_or(Value::Null, |s| json!(s.loss))),
        Some(json!({
            "host": config.host,
            "reason": reason,
            "metrics": metrics,
            "exitStatus": run.status,
            "stdout": tail(&run.stdout, OUTPUT_CHARS),
            "stderr": run.stderr.chars().take(OUTPUT_CHARS).collect::<String>(),
            "count": count,
        })),
    )
}

/// The last `n` characters of `text`.
fn tail(text: &str, n: usize) -> String {
    let skip = text.chars().count().saturating_sub(n);
    text.chars().skip(skip).collect()
}

/// Pings `config.host` every `interval` (the first at once) with the
/// system's `ping` until dropped; `Err` when `ping` cannot be run at all.
pub async fn run(config: Config, report: Report) -> anyhow::Result<()> {
    run_with(&Ping::system(), config, report).await
}

/// [`run`] with a given `ping` (tests run the other flavour's as a script).
pub async fn run_with(ping: &Ping, config: Config, report: Report) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = FaultTracker::new(config.threshold, config.period);
    loop {
        ticks.tick().await;
        let run = ping_once(ping, &config).await?;
        let observation = match judge(&run) {
            None if tracker.success() => {
                let rtt = parse_summary(&run.stdout)
                    .and_then(|s| s.rtt)
                    .map(|r| format!(" (rtt avg {} ms)", r[1]))
                    .unwrap_or_default();
                Observation::clear(format!(
                    "ping {}: all {} packets answered again{rtt}",
                    config.host, config.npackets
                ))
            }
            None => continue,
            Some(reason) => match tracker.failure(Instant::now()) {
                Some(count) => fault(&config, &run, &reason, count),
                None => continue,
            },
        };
        if report.send(observation).await.is_err() {
            anyhow::bail!("icmp probe of {}: nobody takes its observations", config.host);
        }
    }
}

/// One run of `ping`, killed if it outlives its own deadline. `Err` only
/// when it cannot be started (no `ping` on this system).
pub async fn ping_once(ping: &Ping, config: &Config) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new(&ping.program);
    command
        .args(ping.args(config))
        // Its summary lines in English, whatever the agent's locale.
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| {
        let program = ping.program.display();
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("cannot run {program}: not found (on Linux, install iputils-ping)")
        } else {
            anyhow::anyhow!("cannot run {program}: {e}")
        }
    })?;
    let deadline = run_deadline(config);
    Ok(match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(Ok(output)) => Run {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        Ok(Err(e)) => Run {
            status: None,
            stdout: String::new(),
            stderr: format!("reading ping's output failed: {e}"),
        },
        // The child was dropped, so killed.
        Err(_) => Run {
            status: None,
            stdout: String::new(),
            stderr: format!("ping did not finish within {} s", deadline.as_secs()),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tokio::sync::mpsc;

    use super::*;

    fn parsed(config: Value) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        parse(&config, &mut errors).ok_or_else(|| errors.into_iter().map(|e| e.field).collect())
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = parsed(json!({"host": "10.0.0.1"})).unwrap();
        assert_eq!(
            c,
            Config {
                host: "10.0.0.1".into(),
                npackets: 5,
                data_size: 56,
                interval: Duration::from_secs(90),
                threshold: 1,
                period: Duration::from_secs(300),
            }
        );
        let c = parsed(json!({"host": "db-1.example.com", "npackets": 3, "dataSize": 100,
            "interval": "30s", "threshold": 2, "period": 600}))
        .unwrap();
        assert_eq!((c.npackets, c.data_size, c.threshold), (3, 100, 2));
        assert_eq!(
            (c.interval, c.period),
            (Duration::from_secs(30), Duration::from_secs(600))
        );
        assert!(parsed(json!({"host": "fe80::1"})).is_ok());
    }

    #[test]
    fn each_wrong_field_is_named() {
        let fields = |config: Value| parsed(config).unwrap_err();
        assert_eq!(fields(json!({})), ["config.host"]);
        assert_eq!(fields(json!([])), ["config"]);
        for bad in [json!("-f"), json!("a host"), json!(""), json!("x;reboot"), json!(1)] {
            assert_eq!(fields(json!({ "host": bad })), ["config.host"], "{bad}");
        }
        assert_eq!(
            fields(json!({"host": "h", "npackets": "5", "dataSize": -1, "ttl": 3})),
            ["config.ttl", "config.npackets", "config.dataSize"]
        );
        assert_eq!(fields(json!({"host": "h", "npackets": 0})), ["config.npackets"]);
        assert_eq!(
            fields(json!({"host": "h", "interval": 0, "period": "soon", "threshold": 1.5})),
            ["config.interval", "config.period", "config.threshold"]
        );
    }

    fn config(host: &str) -> Config {
        Config {
            host: host.into(),
            npackets: 5,
            data_size: 56,
            interval: Duration::from_millis(20),
            threshold: 1,
            period: Duration::from_secs(60),
        }
    }

    #[test]
    fn each_flavour_is_asked_its_way() {
        let c = config("10.0.0.1");
        let iputils = Ping {
            program: "ping".into(),
            flavour: Flavour::Iputils,
        };
        assert_eq!(
            iputils.args(&c),
            ["-n", "-c", "5", "-s", "56", "-W", "5", "--", "10.0.0.1"]
        );
        let illumos = Ping {
            program: "/usr/sbin/ping".into(),
            flavour: Flavour::Illumos,
        };
        assert_eq!(illumos.args(&c), ["-s", "10.0.0.1", "56", "5"]);
    }

    // Outputs as each `ping` prints them (iputils 20221126; illumos
    // `ping -s`), with the address of a documentation network.

    const IPUTILS_OK: &str = "\
PING 192.0.2.9 (192.0.2.9) 56(84) bytes of data.
64 bytes from 192.0.2.9: icmp_seq=1 ttl=64 time=0.447 ms
64 bytes from 192.0.2.9: icmp_seq=2 ttl=64 time=0.036 ms
64 bytes from 192.0.2.9: icmp_seq=3 ttl=64 time=0.034 ms

--- 192.0.2.9 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 408ms
rtt min/avg/max/mdev = 0.034/0.172/0.447/0.194 ms
";

    const IPUTILS_LOSS: &str = "\
PING 192.0.2.9 (192.0.2.9) 56(84) bytes of data.
64 bytes from 192.0.2.9: icmp_seq=1 ttl=64 time=0.412 ms
64 bytes from 192.0.2.9: icmp_seq=3 ttl=64 time=0.388 ms

--- 192.0.2.9 ping statistics ---
3 packets transmitted, 2 received, 33.3333% packet loss, time 2041ms
rtt min/avg/max/mdev = 0.388/0.400/0.412/0.012 ms
";

    const IPUTILS_ALL_LOST: &str = "\
PING 192.0.2.250 (192.0.2.250) 56(84) bytes of data.
From 192.0.2.5 icmp_seq=1 Destination Host Unreachable
From 192.0.2.5 icmp_seq=2 Destination Host Unreachable
From 192.0.2.5 icmp_seq=3 Destination Host Unreachable

--- 192.0.2.250 ping statistics ---
5 packets transmitted, 0 received, +3 errors, 100% packet loss, time 4081ms
pipe 3
";

    const IPUTILS_UNKNOWN_STDERR: &str = "ping: nosuch.example: Name or service not known\n";

    const ILLUMOS_OK: &str = "\
PING 192.0.2.9: 56 data bytes
64 bytes from 192.0.2.9: icmp_seq=0. time=0.356 ms
64 bytes from 192.0.2.9: icmp_seq=1. time=0.262 ms
64 bytes from 192.0.2.9: icmp_seq=2. time=0.285 ms
64 bytes from 192.0.2.9: icmp_seq=3. time=0.301 ms
64 bytes from 192.0.2.9: icmp_seq=4. time=0.302 ms

----192.0.2.9 PING Statistics----
5 packets transmitted, 5 packets received, 0% packet loss
round-trip (ms)  min/avg/max/stddev = 0.262/0.301/0.356/0.036
";

    const ILLUMOS_LOSS: &str = "\
PING 192.0.2.9: 56 data bytes
64 bytes from 192.0.2.9: icmp_seq=0. time=0.356 ms
64 bytes from 192.0.2.9: icmp_seq=2. time=0.285 ms
64 bytes from 192.0.2.9: icmp_seq=4. time=0.302 ms

----192.0.2.9 PING Statistics----
5 packets transmitted, 3 packets received, 40% packet loss
round-trip (ms)  min/avg/max/stddev = 0.285/0.314/0.356/0.037
";

    const ILLUMOS_ALL_LOST: &str = "\
PING 192.0.2.250: 56 data bytes

----192.0.2.250 PING Statistics----
5 packets transmitted, 0 packets received, 100% packet loss
";

    const ILLUMOS_UNKNOWN_STDERR: &str = "ping: unknown host nosuch.example\n";

    fn run_of(status: i32, stdout: &str, stderr: &str) -> Run {
        Run {
            status: Some(status),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn iputils_output_is_read() {
        let s = parse_summary(IPUTILS_OK).unwrap();
        assert_eq!((s.transmitted, s.received, s.loss), (3, 3, 0.0));
        assert_eq!(s.rtt, Some([0.034, 0.172, 0.447]));
        assert_eq!(judge(&run_of(0, IPUTILS_OK, "")), None);

        let s = parse_summary(IPUTILS_LOSS).unwrap();
        assert_eq!((s.transmitted, s.received, s.loss), (3, 2, 33.3333));
        assert_eq!(
            judge(&run_of(1, IPUTILS_LOSS, "")).unwrap(),
            "33.3333% packet loss (2 of 3 answered)"
        );

        let s = parse_summary(IPUTILS_ALL_LOST).unwrap();
        assert_eq!((s.transmitted, s.received, s.loss, s.rtt), (5, 0, 100.0, None));
        assert_eq!(
            judge(&run_of(1, IPUTILS_ALL_LOST, "")).unwrap(),
            "100% packet loss (0 of 5 answered)"
        );

        assert_eq!(parse_summary(""), None);
        assert_eq!(
            judge(&run_of(2, "", IPUTILS_UNKNOWN_STDERR)).unwrap(),
            "ping exited with status 2 (ping: nosuch.example: Name or service not known)"
        );
    }

    #[test]
    fn illumos_output_is_read() {
        let s = parse_summary(ILLUMOS_OK).unwrap();
        assert_eq!((s.transmitted, s.received, s.loss), (5, 5, 0.0));
        assert_eq!(s.rtt, Some([0.262, 0.301, 0.356]));
        assert_eq!(judge(&run_of(0, ILLUMOS_OK, "")), None);

        let s = parse_summary(ILLUMOS_LOSS).unwrap();
        assert_eq!((s.received, s.loss, s.rtt), (3, 40.0, Some([0.285, 0.314, 0.356])));
        assert_eq!(
            judge(&run_of(0, ILLUMOS_LOSS, "")).unwrap(),
            "40% packet loss (3 of 5 answered)"
        );

        let s = parse_summary(ILLUMOS_ALL_LOST).unwrap();
        assert_eq!((s.received, s.loss, s.rtt), (0, 100.0, None));
        assert_eq!(
            judge(&run_of(1, ILLUMOS_ALL_LOST, "")).unwrap(),
            "100% packet loss (0 of 5 answered)"
        );

        assert_eq!(
            judge(&run_of(1, "", ILLUMOS_UNKNOWN_STDERR)).unwrap(),
            "ping exited with status 1 (ping: unknown host nosuch.example)"
        );
    }

    #[test]
    fn odd_runs_are_failures_not_panics() {
        let killed = Run {
            status: None,
            stdout: String::new(),
            stderr: String::new(),
        };
        assert_eq!(judge(&killed).unwrap(), "ping was killed and printed no statistics");
        // Every packet back but a failing exit.
        assert_eq!(judge(&run_of(1, ILLUMOS_OK, "")).unwrap(), "ping exited with status 1");
        for junk in [
            "x packets transmitted, y received",
            "packets transmitted",
            "0 packets transmitted, 0 received",
            "rtt min/avg/max/mdev = a/b/c ms",
        ] {
            assert!(judge(&run_of(0, junk, "")).is_some(), "{junk}");
        }
        // The counts decide; a loss that does not parse is computed.
        let odd = "5 packets transmitted, 4 received, NaN% packet loss";
        assert_eq!(judge(&run_of(0, odd, "")).unwrap(), "20% packet loss (4 of 5 answered)");
    }

    #[test]
    fn a_fault_names_the_host_and_keeps_the_output() {
        let c = config("192.0.2.9");
        let run = run_of(0, ILLUMOS_LOSS, "");
        let reason = judge(&run).unwrap();
        let o = fault(&c, &run, &reason, 2);
        assert_eq!(o.message, "ping 192.0.2.9: 40% packet loss (3 of 5 answered)");
        assert_eq!(o.value, Some(json!(40.0)));
        let d = o.details.unwrap();
        assert_eq!(d["metrics"]["received"], 3);
        assert_eq!(d["metrics"]["avg"], 0.314);
        assert_eq!(d["stdout"], ILLUMOS_LOSS, "stdout, not the original's `stodut`");
        assert_eq!(d["count"], 2);
        let unknown = run_of(1, "", ILLUMOS_UNKNOWN_STDERR);
        let o = fault(&c, &unknown, &judge(&unknown).unwrap(), 1);
        assert_eq!(
            (o.value, o.details.unwrap()["metrics"].clone()),
            (Some(Value::Null), Value::Null)
        );
    }

    /// An illumos-flavoured `ping` as a script: it answers as the file
    /// `state` says (`up` or `down`) and counts its runs in `runs`.
    fn fake_illumos_ping(dir: &std::path::Path) -> Ping {
        let script = dir.join("ping");
        let up = ILLUMOS_OK.replace("192.0.2.9", "$2");
        let down = ILLUMOS_ALL_LOST.replace("192.0.2.250", "$2");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> '{runs}'\nif [ \"$(cat '{state}')\" = up ]; then\ncat <<EOF\n{up}EOF\nexit 0\nfi\ncat <<EOF\n{down}EOF\nexit 1\n",
                runs = dir.join("runs").display(),
                state = dir.join("state").display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Ping {
            program: script,
            flavour: Flavour::Illumos,
        }
    }

    fn runs(dir: &std::path::Path) -> usize {
        std::fs::read_to_string(dir.join("runs")).map_or(0, |t| t.lines().count())
    }

    async fn next(rx: &mut mpsc::Receiver<Observation>) -> Observation {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("an observation within 20 s")
            .expect("the probe runs")
    }

    #[tokio::test]
    async fn loss_is_a_fault_and_recovery_clears_once() {
        let dir = tempfile::tempdir().unwrap();
        let ping = fake_illumos_ping(dir.path());
        std::fs::write(dir.path().join("state"), "down").unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let mut c = config("192.0.2.250");
        c.threshold = 2;
        let probe = tokio::spawn(async move { run_with(&ping, c, tx).await });

        let o = next(&mut rx).await;
        assert_eq!(o.message, "ping 192.0.2.250: 100% packet loss (0 of 5 answered)");
        assert_eq!(
            o.details.unwrap()["count"],
            2,
            "the first failure was under the threshold"
        );
        let args = std::fs::read_to_string(dir.path().join("runs")).unwrap();
        assert_eq!(args.lines().next(), Some("-s 192.0.2.250 56 5"));

        std::fs::write(dir.path().join("state"), "up").unwrap();
        let clear = loop {
            let o = next(&mut rx).await;
            if o.clear {
                break o;
            }
        };
        assert_eq!(
            clear.message,
            "ping 192.0.2.250: all 5 packets answered again (rtt avg 0.301 ms)"
        );
        let seen = runs(dir.path());
        tokio::time::timeout(Duration::from_secs(20), async {
            while runs(dir.path()) < seen + 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the probe keeps pinging");
        assert!(rx.try_recv().is_err(), "exactly one clear, then nothing");
        probe.abort();
    }

    /// A `ping` that hangs is killed at its deadline, on the paused clock
    /// (which jumps to the deadline as soon as nothing else can run).
    #[tokio::test(start_paused = true)]
    async fn a_hung_ping_is_killed_and_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("ping");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 1000\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ping = Ping {
            program: script,
            flavour: Flavour::Iputils,
        };
        let started = Instant::now();
        let run = ping_once(&ping, &config("192.0.2.9")).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(5 + 5 + 5));
        assert_eq!(
            judge(&run).unwrap(),
            "ping was killed (ping did not finish within 15 s)"
        );
    }

    #[tokio::test]
    async fn a_missing_ping_is_an_error() {
        let ping = Ping {
            program: "/nonexistent/ping".into(),
            flavour: Flavour::Iputils,
        };
        let (tx, _rx) = mpsc::channel(1);
        let err = run_with(&ping, config("127.0.0.1"), tx).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot run /nonexistent/ping: not found (on Linux, install iputils-ping)"
        );
    }

    /// The system's `ping` against loopback: skipped with a reason when
    /// there is none, except in CI, which installs it.
    #[tokio::test]
    async fn the_system_ping_reaches_loopback() {
        let ping = Ping::system();
        let mut c = config("127.0.0.1");
        c.npackets = 2;
        let run = match ping_once(&ping, &c).await {
            Ok(run) => run,
            // As tests/it does for the tools CI installs.
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("CI must install ping: {e}"),
        };
        assert_eq!(judge(&run), None, "{run:?}");
        let s = parse_summary(&run.stdout).unwrap();
        assert_eq!((s.transmitted, s.received), (2, 2));
        assert!(s.rtt.is_some());
    }
}
