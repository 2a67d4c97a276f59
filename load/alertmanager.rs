//! Prometheus Alertmanager measured with Amon's workload, in the same run:
//! "machine down" alerts posted to `POST /api/v2/alerts` of a private
//! Alertmanager started fresh for each phase (so memory figures start clean)
//! under the run's work directory, notifying the harness's webhook sink. It
//! owns the Alertmanager configurations compared (ungrouped, grouped by
//! server with an inhibit rule, and a receiver that notifies nobody), the
//! alert bodies, and the reading of Alertmanager's webhook bodies.
//!
//! **Architecture Invariant:** nothing here knows Amon; `measure` returns
//! Alertmanager's figures and the caller sets them beside Amon's.
//!
//! Run it alone against the installed Alertmanager (about 3 minutes):
//!   cargo test --release --bin amon-load alertmanager::tests::measure_installed -- --ignored --nocapture

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::poster::{post_all, post_paced, PostStats};
use crate::procstat::Process;
use crate::webhook_sink::{Hook, WebhookSink};

/// Where Debian's `prometheus-alertmanager` package puts the binary.
pub const DEFAULT_BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// The sink path Alertmanager's webhook posts to (Amon's use others).
const HOOK_PATH: &str = "/alertmanager";

/// Alerts per `POST` in the throughput and memory phases.
const BATCH: usize = 1000;
/// Concurrent connections in the throughput and memory phases.
const CONNECTIONS: usize = 4;
/// Servers the machines are spread over: 100 machines per server at 100k.
const SERVERS: usize = 1000;
/// Customer accounts owning the machines.
const OWNERS: usize = 3;
/// Machines of the one server that goes down in the server-down phases.
const SERVER_ZONES: usize = 500;
/// Rate of the latency phase, one alert per request.
const LATENCY_PER_SEC: f64 = 1000.0;
/// Connections of the latency phase: a second keeps the schedule while one
/// answer is slow.
const LATENCY_CONNECTIONS: usize = 2;
/// A count of webhooks that has not moved for this long is settled.
const QUIET: Duration = Duration::from_secs(3);

/// What to measure and where.
#[derive(Debug, Clone)]
pub struct AmOptions {
    pub binary: PathBuf,
    /// Each phase's Alertmanager gets a directory below it (config, storage
    /// and log), removed when the phase ends.
    pub work_dir: PathBuf,
    /// Alerts per ingest run (rounded up to whole batches of 1000).
    pub ingest_alerts: usize,
    /// Ingest runs per configuration; the median is reported.
    pub runs: usize,
    /// Length of the paced latency phase.
    pub latency_secs: u64,
    /// Small sizes for a smoke run: 2k alerts per ingest run, 2k delivered,
    /// 1k alerts for every memory figure, 2 s of latency.
    pub quick: bool,
}

impl AmOptions {
    /// The default sizes: 200k alerts per ingest run, 3 runs, 10 s latency.
    pub fn new(work_dir: PathBuf) -> AmOptions {
        AmOptions {
            binary: PathBuf::from(DEFAULT_BINARY),
            work_dir,
            ingest_alerts: 200_000,
            runs: 3,
            latency_secs: 10,
            quick: false,
        }
    }
}

/// Alertmanager's figures, named as SPEC §11 compares them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AmFigures {
    /// `prometheus-alertmanager --version`, e.g. `0.25.0 (branch: …)`.
    pub version: String,
    /// Alerts/s accepted (`200`), grouped config, null receiver: median run.
    pub ingest_grouped_per_sec: f64,
    /// Alerts/s accepted, ungrouped config, webhook receiver: median run.
    pub ingest_ungrouped_per_sec: f64,
    /// Every alert notifying: webhooks received / time from the first post
    /// to the last webhook, for `delivered_alerts` alerts posted at once.
    pub delivered_per_sec: f64,
    /// Alerts posted in the delivery phase.
    pub delivered_alerts: u64,
    /// Webhooks that arrived in the delivery phase (should equal the above).
    pub delivered_notifications: u64,
    /// From just before each alert's `POST` to its webhook at the sink.
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Alerts posted in the latency phase.
    pub latency_sent: u64,
    /// Of those, alerts whose webhook arrived and was matched by machine.
    pub latency_matched: u64,
    /// 500 machines of one server down, ungrouped: webhooks received…
    pub server_down_notifications_ungrouped: u64,
    /// …and distinct machines they name.
    pub server_down_machines_named_ungrouped: u64,
    /// Grouped by server, `ServerDown` posted first: webhooks received…
    pub server_down_notifications_grouped: u64,
    /// …and distinct machines they name (0: the inhibit rule leaves only
    /// the `ServerDown` alert, which names the server alone).
    pub server_down_machines_named_grouped: u64,
    /// Bytes of RSS per active alert (after minus idle, over N).
    pub rss_per_alert_10k_grouped: f64,
    pub rss_per_alert_100k_grouped: f64,
    pub rss_per_alert_100k_ungrouped: f64,
    /// Alertmanager's user+system CPU seconds per 10,000 alerts during the
    /// grouped ingest (median run).
    pub cpu_seconds_per_10k: f64,
    /// Wall time of the whole `measure`.
    pub measure_secs: f64,
    /// What a reader must know: configs, sizes, anything that went wrong.
    pub notes: Vec<String>,
}

/// Whether `binary` runs and says it is an Alertmanager.
pub fn available(binary: &Path) -> bool {
    version(binary).is_ok()
}

/// The first line of `--version`, without its `alertmanager, version ` head.
fn version(binary: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    // Older releases print the version to stderr, newer to stdout.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_version(&text).with_context(|| format!("{} --version printed no alertmanager version", binary.display()))
}

fn parse_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("alertmanager"))?;
    line.split_once("version ").map(|(_, v)| v.trim().to_string())
}

/// How alerts are gathered into notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    /// `group_by: ['...']`: one group, so one notification, per alert.
    PerAlert,
    /// `group_by: [server]` with the inhibit rule Amon needs no config for:
    /// a `ServerDown` mutes its server's `MachineDown` alerts.
    ByServer,
}

/// Who is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiver<'a> {
    /// Alertmanager's webhook to this URL, every alert of a group in one body.
    Webhook(&'a str),
    /// A receiver with no integrations: accepted, grouped, nobody notified.
    Null,
}

/// The whole `--config.file`. `group_wait: 0s` flushes a new group at once
/// (Amon's comparison point is a notification as soon as the alarm opens);
/// `group_interval: 1s` sends a changed group's next notification a second
/// later; `repeat_interval: 1000h` keeps unchanged groups quiet for the run.
fn config_yaml(grouping: Grouping, receiver: Receiver) -> String {
    let group_by = match grouping {
        Grouping::PerAlert => "['...']",
        Grouping::ByServer => "[server]",
    };
    let mut yaml = format!(
        "route:\n  receiver: hook\n  group_by: {group_by}\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1000h\n\
         receivers:\n  - name: hook\n"
    );
    if let Receiver::Webhook(url) = receiver {
        // JSON strings are valid YAML flow scalars, escapes and all.
        let url = serde_json::to_string(url).expect("string to json");
        yaml.push_str(&format!(
            "    webhook_configs:\n      - url: {url}\n        send_resolved: false\n        max_alerts: 0\n"
        ));
    }
    if grouping == Grouping::ByServer {
        yaml.push_str(
            "inhibit_rules:\n  - source_matchers: ['alertname=\"ServerDown\"']\n    \
             target_matchers: ['alertname=\"MachineDown\"']\n    equal: [server]\n",
        );
    }
    yaml
}

/// The simulated fleet's names: servers and accounts, fixed; machines made
/// fresh per phase (each phase's Alertmanager is new anyway).
struct Fleet {
    servers: Vec<Uuid>,
    owners: Vec<Uuid>,
}

/// Names the fleet's fixed uuids, so runs name the same servers.
const NAMESPACE: Uuid = Uuid::from_u128(0x616d6f6e_6c6f_6164_8000_00000000a1e7);

impl Fleet {
    fn new() -> Fleet {
        let name = |kind: &str, i: usize| Uuid::new_v5(&NAMESPACE, format!("{kind}/{i}").as_bytes());
        Fleet {
            servers: (0..SERVERS).map(|i| name("server", i)).collect(),
            owners: (0..OWNERS).map(|i| name("owner", i)).collect(),
        }
    }

    /// `n` distinct machines down, spread round-robin over the servers and
    /// owners; returns the alerts and their machines in the same order.
    fn machines_down(&self, n: usize, times: &Times) -> (Vec<Value>, Vec<Uuid>) {
        let machines: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        let alerts = machines
            .iter()
            .enumerate()
            .map(|(i, m)| {
                machine_down(
                    *m,
                    self.servers[i % self.servers.len()],
                    self.owners[i % self.owners.len()],
                    times,
                )
            })
            .collect();
        (alerts, machines)
    }

    /// `n` machines of one server down (the server-down phases).
    fn server_zones_down(&self, server: Uuid, n: usize, times: &Times) -> Vec<Value> {
        (0..n)
            .map(|i| machine_down(Uuid::new_v4(), server, self.owners[i % self.owners.len()], times))
            .collect()
    }
}

/// `startsAt` and `endsAt` of every alert of a phase: built now, ending far
/// enough ahead that every alert stays active for the whole phase.
struct Times {
    starts: String,
    ends: String,
}

impl Times {
    fn now() -> Times {
        Times::at(Utc::now())
    }

    fn at(now: DateTime<Utc>) -> Times {
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        Times {
            starts: fmt(now),
            ends: fmt(now + chrono::Duration::hours(1)),
        }
    }
}

/// One postable alert (API v2 `postableAlert`).
fn machine_down(machine: Uuid, server: Uuid, owner: Uuid, times: &Times) -> Value {
    json!({
        "labels": {
            "alertname": "MachineDown",
            "machine": machine.to_string(),
            "server": server.to_string(),
            "owner": owner.to_string(),
        },
        "startsAt": times.starts,
        "endsAt": times.ends,
    })
}

fn server_down(server: Uuid, times: &Times) -> Value {
    json!({
        "labels": {"alertname": "ServerDown", "server": server.to_string()},
        "startsAt": times.starts,
        "endsAt": times.ends,
    })
}

/// JSON arrays of at most `per_body` alerts each, in order.
fn bodies(alerts: &[Value], per_body: usize) -> Vec<Vec<u8>> {
    alerts
        .chunks(per_body.max(1))
        .map(|chunk| serde_json::to_vec(chunk).expect("alerts to json"))
        .collect()
}

/// The `machine` label of every alert an Alertmanager webhook body names.
fn machines_named(body: &Value) -> impl Iterator<Item = &str> {
    body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|alert| alert["labels"]["machine"].as_str())
}

/// Alertmanager's webhooks only (the sink may serve Amon on other paths).
fn am_hooks(hooks: Vec<Hook>) -> Vec<Hook> {
    hooks.into_iter().filter(|h| h.path == HOOK_PATH).collect()
}

/// When each machine was first named by a webhook.
fn first_named(hooks: &[Hook]) -> HashMap<String, Instant> {
    let mut first: HashMap<String, Instant> = HashMap::new();
    for hook in hooks {
        for machine in machines_named(&hook.body) {
            first
                .entry(machine.to_string())
                .and_modify(|at| *at = (*at).min(hook.at))
                .or_insert(hook.at);
        }
    }
    first
}

/// Each sent alert's latency: from its send time to the first webhook
/// naming its machine; alerts never named are left out.
fn latencies(machines: &[Uuid], sent: &[Option<Instant>], hooks: &[Hook]) -> Vec<Duration> {
    let first = first_named(hooks);
    machines
        .iter()
        .zip(sent)
        .filter_map(|(machine, sent)| {
            let at = first.get(&machine.to_string())?;
            Some(at.saturating_duration_since((*sent)?))
        })
        .collect()
}

fn distinct_machines(hooks: &[Hook]) -> usize {
    hooks
        .iter()
        .flat_map(|h| machines_named(&h.body))
        .collect::<HashSet<_>>()
        .len()
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// One private Alertmanager, killed and its directory removed on drop.
struct Alertmanager {
    process: Process,
    port: u16,
    dir: PathBuf,
}

impl Alertmanager {
    /// Writes `config` under `dir`, starts the binary on a free loopback port
    /// with clustering off, and waits (up to 30 s) for `/-/ready`. A port
    /// taken between our probe and its bind shows as an early exit; that is
    /// retried on another port.
    fn start(binary: &Path, dir: PathBuf, config: &str) -> anyhow::Result<Alertmanager> {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).with_context(|| format!("cannot create {}", dir.display()))?;
        let config_file = dir.join("alertmanager.yml");
        fs::write(&config_file, config).with_context(|| format!("cannot write {}", config_file.display()))?;
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let log = File::create(dir.join("alertmanager.log")).context("cannot create the alertmanager log")?;
            let child = Command::new(binary)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot run {}", binary.display()))?;
            let mut am = Alertmanager {
                process: Process::new(child, dir.join("alertmanager.log")),
                port,
                dir: dir.clone(),
            };
            match am.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return Ok(am),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("three attempts"))
    }

    fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.process.exit_status() {
                bail!(
                    "alertmanager exited ({status}) before it was ready; its log:\n{}",
                    self.log_tail()
                );
            }
            if matches!(http_get(self.port, "/-/ready"), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "alertmanager was not ready within {within:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn rss(&self) -> u64 {
        self.process.rss_bytes()
    }

    fn cpu(&self) -> f64 {
        self.process.cpu_seconds()
    }

    /// `alertmanager_alerts{state="active"}` from `/metrics`.
    fn active_alerts(&self) -> Option<u64> {
        let (_, text) = http_get(self.port, "/metrics").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("alertmanager_alerts{state=\"active\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    fn log_tail(&self) -> String {
        self.process.log_tail(20)
    }

    /// Fails with the statuses and Alertmanager's log unless every post was
    /// answered `200`.
    fn check(&self, what: &str, stats: &PostStats) -> anyhow::Result<()> {
        ensure!(
            stats.all_ok(200),
            "alertmanager {what}: {} requests, {} errors, statuses {:?}; its log:\n{}",
            stats.requests,
            stats.errors,
            stats.statuses,
            self.log_tail()
        );
        Ok(())
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.process.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A blocking `GET` on loopback; HTTP/1.0 so the answer is neither chunked
/// nor kept alive. Returns the status and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The process's RSS once start-up allocations are over: two readings
/// 200 ms apart within 1 % of each other (at most 5 s of readings).
fn settled_rss(am: &Alertmanager) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = am.rss();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = am.rss();
        if now.abs_diff(last) * 100 <= last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// Waits until the sink has `expected` requests (when given) or its count
/// has not moved for `QUIET`, at most `deadline`; returns the count.
fn settle(sink: &WebhookSink, expected: Option<usize>, deadline: Duration) -> usize {
    let started = Instant::now();
    let mut last = sink.count();
    let mut moved = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let count = sink.count();
        if expected.is_some_and(|e| count >= e) || started.elapsed() >= deadline {
            return count;
        }
        if count != last {
            last = count;
            moved = Instant::now();
        } else if moved.elapsed() >= QUIET {
            return count;
        }
    }
}

/// The sizes a run uses, from the options.
struct Sizes {
    ingest: usize,
    delivered: usize,
    latency_secs: u64,
    memory_small: usize,
    memory_large: usize,
}

impl Sizes {
    fn of(opts: &AmOptions) -> Sizes {
        if opts.quick {
            Sizes {
                ingest: 2_000,
                delivered: 2_000,
                latency_secs: 2,
                memory_small: 1_000,
                memory_large: 1_000,
            }
        } else {
            Sizes {
                ingest: opts.ingest_alerts.div_ceil(BATCH).max(1) * BATCH,
                delivered: 10_000,
                latency_secs: opts.latency_secs.max(1),
                memory_small: 10_000,
                memory_large: 100_000,
            }
        }
    }
}

/// Runs every phase against fresh Alertmanagers and returns the figures;
/// blocks for about three minutes at default sizes, printing one line per
/// phase to stderr. It uses `sink` alone while it runs: it clears it at each
/// phase and counts every request it receives as Alertmanager's.
pub fn measure(opts: &AmOptions, sink: &WebhookSink) -> anyhow::Result<AmFigures> {
    let started = Instant::now();
    let version = version(&opts.binary)?;
    fs::create_dir_all(&opts.work_dir).with_context(|| format!("cannot create {}", opts.work_dir.display()))?;
    let mut run = Phases {
        opts,
        sizes: Sizes::of(opts),
        sink,
        hook_url: sink.url(HOOK_PATH),
        fleet: Fleet::new(),
        started: 0,
        notes: Vec::new(),
    };
    let runs = opts.runs.max(1);
    run.notes.push(format!(
        "Alertmanager {version}, clustering off, one fresh process per phase; group_wait 0s, group_interval 1s, \
         repeat_interval 1000h; webhook with max_alerts 0 and send_resolved false"
    ));
    run.notes.push(format!(
        "ungrouped: group_by ['...'] (one group per alert); grouped: group_by [server] plus the inhibit rule \
         ServerDown mutes MachineDown with equal [server]; {SERVERS} servers, {OWNERS} owners, alerts active for 1 h"
    ));
    run.notes.push(format!(
        "ingest: {} alerts per run in batches of {BATCH} over {CONNECTIONS} connections, median of {runs} runs",
        run.sizes.ingest
    ));
    let (ingest_grouped_per_sec, cpu_seconds_per_10k) = run.ingest(Grouping::ByServer, runs)?;
    let (ingest_ungrouped_per_sec, _) = run.ingest(Grouping::PerAlert, runs)?;
    let (delivered_per_sec, delivered_notifications) = run.delivery()?;
    let latency = run.latency()?;
    let (server_down_notifications_ungrouped, server_down_machines_named_ungrouped) = run.server_down_ungrouped()?;
    let (server_down_notifications_grouped, server_down_machines_named_grouped) = run.server_down_grouped()?;
    let rss_per_alert_10k_grouped = run.memory(run.sizes.memory_small, Grouping::ByServer)?;
    let rss_per_alert_100k_grouped = run.memory(run.sizes.memory_large, Grouping::ByServer)?;
    let rss_per_alert_100k_ungrouped = run.memory(run.sizes.memory_large, Grouping::PerAlert)?;
    sink.clear();
    run.notes.push(format!(
        "memory: RSS after {} / {} alerts (webhook receiver, read once the sink was quiet for {QUIET:?}) minus RSS \
         of the same fresh process idle, over the alert count; Go's collector keeps garbage up to about the live \
         heap (GOGC=100), so RSS is above the live heap",
        run.sizes.memory_small, run.sizes.memory_large
    ));
    if opts.quick {
        run.notes
            .push("quick run: sizes are too small for the figures to mean much".to_string());
    }
    let measure_secs = started.elapsed().as_secs_f64();
    eprintln!("alertmanager: measured in {measure_secs:.0} s");
    let ms = |q: f64| latency.histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(AmFigures {
        version,
        ingest_grouped_per_sec,
        ingest_ungrouped_per_sec,
        delivered_per_sec,
        delivered_alerts: run.sizes.delivered as u64,
        delivered_notifications,
        latency_p50_ms: ms(0.50),
        latency_p90_ms: ms(0.90),
        latency_p99_ms: ms(0.99),
        latency_max_ms: latency.histogram.max() as f64 / 1000.0,
        latency_sent: latency.sent as u64,
        latency_matched: latency.matched as u64,
        server_down_notifications_ungrouped,
        server_down_machines_named_ungrouped,
        server_down_notifications_grouped,
        server_down_machines_named_grouped,
        rss_per_alert_10k_grouped,
        rss_per_alert_100k_grouped,
        rss_per_alert_100k_ungrouped,
        cpu_seconds_per_10k,
        measure_secs,
        notes: run.notes,
    })
}

/// What every phase shares: the options, the sink, the fleet's names, and
/// the notes gathered so far.
struct Phases<'a> {
    opts: &'a AmOptions,
    sizes: Sizes,
    sink: &'a WebhookSink,
    hook_url: String,
    fleet: Fleet,
    /// Alertmanagers started so far, naming each one's directory.
    started: usize,
    notes: Vec<String>,
}

/// The latency phase's outcome.
struct Latency {
    /// Microseconds from each send to its webhook.
    histogram: Histogram<u64>,
    sent: usize,
    matched: usize,
}

impl Phases<'_> {
    /// A fresh Alertmanager with this configuration, and an empty sink.
    fn fresh(&mut self, grouping: Grouping, webhook: bool) -> anyhow::Result<Alertmanager> {
        self.started += 1;
        let dir = self.opts.work_dir.join(format!("alertmanager-{}", self.started));
        let receiver = if webhook {
            Receiver::Webhook(&self.hook_url)
        } else {
            Receiver::Null
        };
        let config = config_yaml(grouping, receiver);
        self.sink.clear();
        Alertmanager::start(&self.opts.binary, dir, &config)
    }

    /// Alerts/s accepted (median of `runs`) and CPU seconds per 10k alerts
    /// (median): grouped with the null receiver (accepted, nobody
    /// notified), or ungrouped with the webhook (every alert notifying while
    /// the rest are posted; the process is killed at the last answer).
    fn ingest(&mut self, grouping: Grouping, runs: usize) -> anyhow::Result<(f64, f64)> {
        let webhook = grouping == Grouping::PerAlert;
        let mut rates = Vec::new();
        let mut cpu_per_10k = Vec::new();
        for run in 1..=runs {
            let (alerts, _) = self.fleet.machines_down(self.sizes.ingest, &Times::now());
            let bodies = bodies(&alerts, BATCH);
            drop(alerts);
            let am = self.fresh(grouping, webhook)?;
            let cpu = am.cpu();
            let stats = post_all(&am.url("/api/v2/alerts"), bodies, BATCH, CONNECTIONS, None);
            let cpu = am.cpu() - cpu;
            let notified = self.sink.count();
            am.check("ingest", &stats)?;
            rates.push(stats.items_per_sec());
            cpu_per_10k.push(cpu / self.sizes.ingest as f64 * 10_000.0);
            eprintln!(
                "alertmanager: ingest {grouping:?} ({}) run {run}/{runs}: {:.0} alerts/s, {cpu:.2} CPU s, {notified} \
                 webhooks by the last answer",
                if webhook { "webhook" } else { "null receiver" },
                stats.items_per_sec()
            );
        }
        self.sink.clear();
        Ok((median(rates), median(cpu_per_10k)))
    }

    /// Every alert notifying, all posted at once: webhooks per second from
    /// the first post to the last webhook, and how many arrived.
    fn delivery(&mut self) -> anyhow::Result<(f64, u64)> {
        let n = self.sizes.delivered;
        let (alerts, _) = self.fleet.machines_down(n, &Times::now());
        let bodies = bodies(&alerts, BATCH);
        let am = self.fresh(Grouping::PerAlert, true)?;
        let first_post = Instant::now();
        let stats = post_all(&am.url("/api/v2/alerts"), bodies, BATCH, CONNECTIONS, None);
        am.check("delivery", &stats)?;
        settle(self.sink, Some(n), Duration::from_secs(120));
        let hooks = am_hooks(self.sink.hooks());
        drop(am);
        let last = hooks.iter().map(|h| h.at).max().unwrap_or(first_post);
        let secs = last.saturating_duration_since(first_post).as_secs_f64();
        let rate = if secs > 0.0 { hooks.len() as f64 / secs } else { 0.0 };
        let named = distinct_machines(&hooks);
        eprintln!(
            "alertmanager: delivery: {} webhooks naming {named} machines for {n} alerts in {secs:.2} s: {rate:.0}/s",
            hooks.len()
        );
        self.notes.push(format!(
            "delivery: {n} distinct alerts posted at once (ungrouped, batches of {BATCH}, {CONNECTIONS} \
             connections), {} webhooks naming {named} machines arrived; Alertmanager flushes each group in its own \
             goroutine, so webhooks go out as concurrently as groups flush; the sink answers each at once",
            hooks.len()
        ));
        Ok((rate, hooks.len() as u64))
    }

    /// One alert per `POST` at 1,000/s, ungrouped: from just before each
    /// `POST` to the first webhook naming its machine.
    fn latency(&mut self) -> anyhow::Result<Latency> {
        let n = (LATENCY_PER_SEC as u64 * self.sizes.latency_secs) as usize;
        let (alerts, machines) = self.fleet.machines_down(n, &Times::now());
        let bodies = bodies(&alerts, 1);
        let am = self.fresh(Grouping::PerAlert, true)?;
        let sent = Arc::new(Mutex::new(vec![None; n]));
        let record = sent.clone();
        let stats = post_paced(
            &am.url("/api/v2/alerts"),
            bodies,
            LATENCY_PER_SEC,
            LATENCY_CONNECTIONS,
            None,
            move |i, at| record.lock().expect("send times")[i] = Some(at),
        );
        am.check("latency", &stats)?;
        settle(self.sink, Some(n), Duration::from_secs(60));
        let hooks = am_hooks(self.sink.hooks());
        drop(am);
        let sent = sent.lock().expect("send times").clone();
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
        let found = latencies(&machines, &sent, &hooks);
        for latency in &found {
            histogram.saturating_record((latency.as_micros() as u64).max(1));
        }
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let answered = format!(
            "POSTs answered in p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; sends at most {:.1} ms behind schedule",
            ms(&stats.latencies, 0.5),
            ms(&stats.latencies, 0.99),
            stats.latencies.max() as f64 / 1000.0,
            stats.max_late.as_secs_f64() * 1000.0
        );
        eprintln!(
            "alertmanager: latency at {LATENCY_PER_SEC}/s for {} s: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max \
             {:.2} ms ({}/{n} matched; {answered})",
            self.sizes.latency_secs,
            ms(&histogram, 0.5),
            ms(&histogram, 0.9),
            ms(&histogram, 0.99),
            histogram.max() as f64 / 1000.0,
            found.len()
        );
        self.notes.push(format!(
            "latency: ungrouped, one alert per POST at {LATENCY_PER_SEC}/s over {LATENCY_CONNECTIONS} connections \
             for {} s, from just before the POST to the webhook's arrival, matched by the machine label; {} of {n} \
             matched; {answered} (a send held up by slow answers is timed from when it left, not from when it was \
             due)",
            self.sizes.latency_secs,
            found.len()
        ));
        Ok(Latency {
            histogram,
            sent: n,
            matched: found.len(),
        })
    }

    /// 500 machines of one server down in one `POST`, ungrouped: webhooks
    /// and distinct machines named, once the sink is quiet.
    fn server_down_ungrouped(&mut self) -> anyhow::Result<(u64, u64)> {
        let server = self.fleet.servers[0];
        let body = bodies(
            &self.fleet.server_zones_down(server, SERVER_ZONES, &Times::now()),
            SERVER_ZONES,
        );
        let am = self.fresh(Grouping::PerAlert, true)?;
        let stats = post_all(&am.url("/api/v2/alerts"), body, SERVER_ZONES, 1, None);
        am.check("server down (ungrouped)", &stats)?;
        settle(self.sink, None, Duration::from_secs(120));
        let hooks = am_hooks(self.sink.hooks());
        let (sent, named) = (hooks.len() as u64, distinct_machines(&hooks) as u64);
        eprintln!("alertmanager: server down, ungrouped: {sent} webhooks naming {named} machines");
        Ok((sent, named))
    }

    /// The same, grouped by server, with the server's `ServerDown` alert
    /// posted first so the inhibit rule mutes its machines.
    fn server_down_grouped(&mut self) -> anyhow::Result<(u64, u64)> {
        let server = self.fleet.servers[0];
        let times = Times::now();
        let first = bodies(&[server_down(server, &times)], 1);
        let then = bodies(
            &self.fleet.server_zones_down(server, SERVER_ZONES, &times),
            SERVER_ZONES,
        );
        let am = self.fresh(Grouping::ByServer, true)?;
        let url = am.url("/api/v2/alerts");
        am.check("server down (grouped)", &post_all(&url, first, 1, 1, None))?;
        am.check("server down (grouped)", &post_all(&url, then, SERVER_ZONES, 1, None))?;
        settle(self.sink, None, Duration::from_secs(120));
        let hooks = am_hooks(self.sink.hooks());
        let names_server = hooks.iter().any(|h| {
            h.body["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["labels"]["alertname"] == "ServerDown")
        });
        let (sent, named) = (hooks.len() as u64, distinct_machines(&hooks) as u64);
        eprintln!(
            "alertmanager: server down, grouped + inhibit: {sent} webhooks naming {named} machines (ServerDown \
             named: {names_server})"
        );
        self.notes.push(format!(
            "server down: {SERVER_ZONES} MachineDown alerts of one server in one POST; grouped: a ServerDown alert \
             POSTed first, then the {SERVER_ZONES}; counts taken once the sink was quiet for {QUIET:?}; grouped \
             webhooks name {named} machines because the inhibit rule mutes every MachineDown and leaves only \
             ServerDown, which names the server alone (ServerDown named: {names_server})"
        ));
        Ok((sent, named))
    }

    /// Bytes of RSS per active alert: `n` alerts posted to a fresh process
    /// with the webhook receiver, read once the sink is quiet, minus the
    /// same process idle.
    fn memory(&mut self, n: usize, grouping: Grouping) -> anyhow::Result<f64> {
        let (alerts, _) = self.fleet.machines_down(n, &Times::now());
        let bodies = bodies(&alerts, BATCH);
        drop(alerts);
        let am = self.fresh(grouping, true)?;
        let idle = settled_rss(&am);
        let stats = post_all(&am.url("/api/v2/alerts"), bodies, BATCH, CONNECTIONS, None);
        am.check("memory", &stats)?;
        let notified = settle(self.sink, None, Duration::from_secs(300));
        let loaded = am.rss();
        let active = am.active_alerts();
        let per_alert = loaded.saturating_sub(idle) as f64 / n as f64;
        eprintln!(
            "alertmanager: memory, {n} alerts {grouping:?}: idle {:.1} MiB, loaded {:.1} MiB, {per_alert:.0} B per \
             alert ({} active, {notified} webhooks)",
            idle as f64 / 1048576.0,
            loaded as f64 / 1048576.0,
            active.map_or("?".to_string(), |a| a.to_string())
        );
        if active != Some(n as u64) {
            self.notes.push(format!(
                "memory {n} {grouping:?}: /metrics counted {active:?} active alerts, not {n}"
            ));
        }
        Ok(per_alert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(at: Instant, body: Value) -> Hook {
        Hook {
            at,
            path: HOOK_PATH.to_string(),
            body,
        }
    }

    fn webhook_body(machines: &[&str]) -> Value {
        json!({
            "receiver": "hook",
            "status": "firing",
            "alerts": machines.iter().map(|m| json!({
                "status": "firing",
                "labels": {"alertname": "MachineDown", "machine": m, "server": "s"},
            })).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn ungrouped_config_groups_by_every_label_and_posts_to_the_sink() {
        let yaml = config_yaml(Grouping::PerAlert, Receiver::Webhook("http://127.0.0.1:9/alertmanager"));
        assert_eq!(
            yaml,
            "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1s\n  \
             repeat_interval: 1000h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: \
             \"http://127.0.0.1:9/alertmanager\"\n        send_resolved: false\n        max_alerts: 0\n"
        );
    }

    #[test]
    fn grouped_config_groups_by_server_and_inhibits_machines_of_a_down_server() {
        let yaml = config_yaml(Grouping::ByServer, Receiver::Null);
        assert_eq!(
            yaml,
            "route:\n  receiver: hook\n  group_by: [server]\n  group_wait: 0s\n  group_interval: 1s\n  \
             repeat_interval: 1000h\nreceivers:\n  - name: hook\ninhibit_rules:\n  - source_matchers: \
             ['alertname=\"ServerDown\"']\n    target_matchers: ['alertname=\"MachineDown\"']\n    equal: [server]\n"
        );
    }

    #[test]
    fn machine_down_alert_is_a_postable_alert_with_four_labels() {
        let times = Times::at(DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z").unwrap().to_utc());
        let (m, s, o) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert_eq!(
            machine_down(m, s, o, &times),
            json!({
                "labels": {
                    "alertname": "MachineDown",
                    "machine": "00000000-0000-0000-0000-000000000001",
                    "server": "00000000-0000-0000-0000-000000000002",
                    "owner": "00000000-0000-0000-0000-000000000003",
                },
                "startsAt": "2024-05-01T12:00:00.000Z",
                "endsAt": "2024-05-01T13:00:00.000Z",
            })
        );
        assert_eq!(
            server_down(s, &times)["labels"],
            json!({"alertname": "ServerDown", "server": s})
        );
    }

    #[test]
    fn bodies_are_json_arrays_of_whole_batches_then_the_rest() {
        let fleet = Fleet::new();
        let (alerts, machines) = fleet.machines_down(2500, &Times::now());
        assert_eq!(machines.iter().collect::<HashSet<_>>().len(), 2500);
        let bodies = bodies(&alerts, 1000);
        let sizes: Vec<usize> = bodies
            .iter()
            .map(|b| serde_json::from_slice::<Vec<Value>>(b).unwrap().len())
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let first: Vec<Value> = serde_json::from_slice(&bodies[0]).unwrap();
        assert_eq!(first[1]["labels"]["machine"], machines[1].to_string());
        assert_eq!(first[1]["labels"]["server"], fleet.servers[1].to_string());
        assert_eq!(first[3]["labels"]["owner"], fleet.owners[0].to_string());
    }

    #[test]
    fn each_sent_alert_is_matched_to_the_first_webhook_naming_its_machine() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let machines = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        let names: Vec<String> = machines.iter().map(|m| m.to_string()).collect();
        let hooks = vec![
            hook(t0 + ms(9), webhook_body(&[&names[0]])),
            hook(t0 + ms(5), webhook_body(&[&names[0], &names[1]])),
            hook(t0 + ms(7), json!({"not": "alertmanager"})),
        ];
        let sent = [Some(t0 + ms(1)), Some(t0 + ms(2)), Some(t0 + ms(3))];
        // Machine 3 was never named, so it is left out.
        assert_eq!(latencies(&machines, &sent, &hooks), [ms(4), ms(3)]);
        assert_eq!(distinct_machines(&hooks), 2);
    }

    #[test]
    fn only_alertmanager_paths_count() {
        let now = Instant::now();
        let mut amon = hook(now, json!({}));
        amon.path = "/amon".to_string();
        assert_eq!(am_hooks(vec![amon, hook(now, json!({}))]).len(), 1);
    }

    #[test]
    fn version_is_the_first_line_after_its_name() {
        let text = "alertmanager, version 0.25.0 (branch: debian/sid, revision: 0.25.0-1+b4)\n  build user: x\n";
        assert_eq!(
            parse_version(text).as_deref(),
            Some("0.25.0 (branch: debian/sid, revision: 0.25.0-1+b4)")
        );
        assert_eq!(parse_version("bash: not found"), None);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    /// The whole measurement against the installed Alertmanager, printed;
    /// `AMON_LOAD_QUICK=1` for the smoke sizes.
    #[test]
    #[ignore = "runs Alertmanager for about three minutes"]
    fn measure_installed() {
        let binary = PathBuf::from(DEFAULT_BINARY);
        assert!(available(&binary), "{} is not installed", binary.display());
        let work_dir = std::env::temp_dir().join(format!("amon-load-alertmanager-{}", std::process::id()));
        let mut opts = AmOptions::new(work_dir.clone());
        opts.quick = std::env::var_os("AMON_LOAD_QUICK").is_some();
        let sink = WebhookSink::start(2).expect("webhook sink");
        let figures = measure(&opts, &sink);
        let _ = fs::remove_dir_all(&work_dir);
        println!("{:#?}", figures.expect("measure"));
    }
}
