//! One scenario run: start the daemons and the sinks, provision the fleet,
//! carry out the plan on schedule, wait for everything to be committed and
//! notified, and read back what happened into a [`Report`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use uuid::Uuid;

use crate::api::{Api, Inventory, Medium};
use crate::cluster::{Cluster, MasterOptions, MasterSpec};
use crate::notices::{self, Kind, Notice};
use crate::plan::{self, Action, DownMode, PlanOptions, Scenario};
use crate::report::{self, Latency, PerProcess, Report, Sample};
use crate::smtp_sink::SmtpSink;
use crate::webhook_sink::WebhookSink;
use crate::workload::Fleet;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub amon: PathBuf,
    pub work: PathBuf,
    pub servers: usize,
    pub zones_per_server: usize,
    pub accounts: usize,
    pub relays: usize,
    /// The scenario and its timing (`plan.hold` is the master's
    /// `notify.hold`).
    pub plan: PlanOptions,
    /// The master's `notify.burst_window`.
    pub burst_window: Duration,
    pub medium: Medium,
    /// Probe creations in flight at once.
    pub parallel: usize,
    /// How long to wait for events to commit and notifications to arrive
    /// after the last step.
    pub drain_timeout: Duration,
    /// Drive this running master instead of starting one.
    pub master_url: Option<String>,
    /// That master's pid, to read its memory and CPU.
    pub master_pid: Option<u32>,
    /// Port for the SMTP sink (0: any), so a running master can be pointed at it.
    pub smtp_port: u16,
    /// Masters to start, sharing the PostgreSQL store at `store_url`.
    pub masters: usize,
    /// Keep the masters' database there (a fresh schema per run) instead of
    /// SQLite in their data dirs.
    pub store_url: Option<String>,
    /// Their `cluster.lease`.
    pub lease: Duration,
}

/// How long without a new notification, short of the expected count, ends
/// the wait (the drain timeout bounds it too).
const STALLED: Duration = Duration::from_secs(60);

const METRIC_EVENTS: &str = "amon_events_stored{type=\"machine\"}";
const METRIC_OPEN: &str = "amon_alarms_open";

/// The master's settings for a scenario. Churn-like scenarios measure the
/// per-machine path, so the flood guard's burst detector is set out of reach
/// (at 1,000 events/s over 100 servers, five of a server's machines are down
/// within any hold); the others keep its defaults. The rate limit is off:
/// each account's one contact receives thousands of messages.
fn master_options(o: &RunOptions, smtp_port: u16) -> MasterOptions {
    let per_machine = matches!(
        o.plan.scenario,
        Scenario::Churn | Scenario::MasterRestart | Scenario::SmtpOutage | Scenario::OpenAlarms
    );
    MasterOptions {
        hold: o.plan.hold,
        smtp_port,
        burst_count: if per_machine { 1_000_000 } else { 5 },
        burst_percent: if per_machine { 100 } else { 50 },
        rate_limit: 0,
        workers: 4,
        heartbeat_timeout: Duration::from_secs(3),
        burst_window: o.burst_window,
        store: o
            .store_url
            .as_ref()
            .map(|url| (url.clone(), format!("amon_load_{}", Uuid::new_v4().simple()))),
        lease: o.lease,
    }
}

pub async fn run(o: &RunOptions) -> anyhow::Result<Report> {
    if o.masters > 1 && o.store_url.is_none() {
        bail!("--masters above 1 needs --store-url: several masters share one PostgreSQL store");
    }
    let fleet = Fleet::new(o.plan.seed, o.servers, o.zones_per_server, o.accounts, o.relays);
    if matches!(o.plan.down_mode, DownMode::Announced | DownMode::Silent)
        && o.plan.scenario == Scenario::ServerDown
        && fleet.relays != fleet.servers.len()
    {
        bail!("--down-mode announced|silent stops a server's relay: it needs --relays equal to --servers");
    }
    let smtp = Arc::new(SmtpSink::start(o.smtp_port).context("cannot start the SMTP sink")?);
    let hooks = Arc::new(WebhookSink::start(2).context("cannot start the webhook sink")?);
    let options = master_options(o, smtp.port());
    let relay_server: Vec<Option<Uuid>> = (0..fleet.relays)
        .map(|r| (fleet.relays == fleet.servers.len()).then(|| fleet.servers[r].uuid))
        .collect();
    eprintln!(
        "amon-load: starting a master and {} relays in {}",
        fleet.relays,
        o.work.display()
    );
    let spec = match &o.master_url {
        Some(url) => MasterSpec::External {
            url: url.clone(),
            pid: o.master_pid,
        },
        None => MasterSpec::Start(options.clone(), o.masters),
    };
    if o.master_url.is_some() && o.plan.scenario == Scenario::MasterRestart {
        bail!("master-restart kills the master: it needs a master this harness starts (no --master-url)");
    }
    let mut cluster = Cluster::start(&o.amon, &o.work, spec, fleet.relays, &relay_server)?;
    let api = Api::new();
    let master_url = cluster.master_url().to_string();
    let relay_idle_rss = cluster.relays_rss();

    eprintln!("amon-load: giving the relays their zones");
    let now = chrono::Utc::now();
    for s in 0..fleet.servers.len() {
        cluster.relays[fleet.servers[s].relay].write(fleet.snapshot_line(s, now));
    }
    for relay in &cluster.relays {
        let want = fleet.servers_of_relay(relay.index).count() * o.zones_per_server;
        let url = relay.daemon.url();
        wait_for(
            &format!("relay-{} to watch {want} zones", relay.index),
            Duration::from_secs(600),
            || {
                let api = api.clone();
                let url = url.clone();
                async move {
                    api.relay_state(&url)
                        .await
                        .map(|(zones, _)| zones as usize >= want)
                        .unwrap_or(false)
                }
            },
        )
        .await?;
    }
    eprintln!(
        "amon-load: creating {} accounts and {} probes",
        fleet.accounts.len(),
        fleet.zones.len()
    );
    let probes_took = api
        .provision(
            &master_url,
            &fleet,
            o.medium,
            &hooks.url(""),
            o.parallel,
            Inventory::Await,
        )
        .await?;

    let relay_full_rss = cluster.relays_rss();
    let master_rss_before = cluster.master_rss();
    let master_cpu_before = cluster.master_cpu();
    let relay_cpu_before = cluster.relays_cpu();
    let committed_before = api.metric(&master_url, METRIC_EVENTS).await.unwrap_or(0.0) as u64;

    // A machine-down notification waits the hold, or the burst window if
    // that is longer: the plan's reboots and outages are timed against that.
    let delay = o.plan.hold.max(o.burst_window);
    let plan = plan::plan(
        &fleet,
        &PlanOptions {
            hold: delay,
            ..o.plan.clone()
        },
    );
    eprintln!(
        "amon-load: running {:?}: {} steps, expecting {} events and {} notifications",
        o.plan.scenario,
        plan.steps.len(),
        plan.expected.events,
        plan.expected.notifications()
    );

    // What the sampler reads while the plan runs.
    let written = Arc::new(AtomicU64::new(0));
    let master_pid = Arc::new(AtomicU32::new(cluster.master_pid().unwrap_or(0)));
    let samples: Rc<RefCell<Vec<Sample>>> = Rc::default();
    let start = Instant::now();
    let sampler = {
        let (api, url, written, master_pid, samples, smtp, hooks) = (
            api.clone(),
            master_url.clone(),
            written.clone(),
            master_pid.clone(),
            samples.clone(),
            smtp.clone(),
            hooks.clone(),
        );
        let total = plan.expected.events;
        actix_rt::spawn(async move {
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = indicatif::ProgressBar::new(total.max(1));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:40}] {pos}/{len} events committed {msg}",
                    )
                    .expect("progress template"),
                );
                bar
            });
            let mut ticks = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let text = api.get_text(&format!("{url}/metrics")).await.unwrap_or_default();
                let committed = crate::api::metric_in(&text, METRIC_EVENTS).unwrap_or(0.0) as u64;
                let sample = Sample {
                    t: start.elapsed().as_secs_f64(),
                    events_written: written.load(Ordering::Relaxed),
                    events_committed: committed.saturating_sub(committed_before),
                    open_alarms: crate::api::metric_in(&text, METRIC_OPEN).unwrap_or(0.0) as u64,
                    master_rss: crate::procstat::rss_bytes(master_pid.load(Ordering::Relaxed)).unwrap_or(0),
                    notifications: (smtp.count() + hooks.count()) as u64,
                    latency_p99_ms: None,
                };
                ticks += 1;
                match &bar {
                    Some(bar) => {
                        bar.set_position(sample.events_committed);
                        bar.set_message(format!(
                            "· {} notified · {} alarms open",
                            sample.notifications, sample.open_alarms
                        ));
                    }
                    None if ticks % 5 == 0 => eprintln!(
                        "amon-load: {:.0}s: {} written, {} committed, {} notified, {} alarms open",
                        sample.t,
                        sample.events_written,
                        sample.events_committed,
                        sample.notifications,
                        sample.open_alarms
                    ),
                    None => {}
                }
                samples.borrow_mut().push(sample);
            }
        })
    };

    // Carry out the plan on schedule; steps due together go out together.
    let mut writes: Vec<Vec<(Instant, bool)>> = vec![Vec::new(); fleet.zones.len()];
    let mut pending: Vec<String> = vec![String::new(); fleet.relays];
    let base = tokio::time::Instant::now();
    let mut i = 0;
    while i < plan.steps.len() {
        let due = plan.steps[i].at;
        tokio::time::sleep_until(base + due).await;
        let now_wall = chrono::Utc::now();
        let at = Instant::now();
        let late = base.elapsed();
        while i < plan.steps.len() && plan.steps[i].at <= late {
            match &plan.steps[i].action {
                Action::Zone { zone, up } => {
                    let relay = fleet.servers[fleet.zones[*zone].server].relay;
                    pending[relay].push_str(&fleet.transition_line(*zone, *up, now_wall));
                    writes[*zone].push((at, *up));
                    written.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    flush(&cluster, &mut pending);
                    match other {
                        Action::RestartMaster => {
                            eprintln!("amon-load: SIGKILL to the master, and a restart");
                            cluster.restart_master()?;
                            master_pid.store(cluster.master_pid().unwrap_or(0), Ordering::Relaxed);
                        }
                        Action::SinkRefusing(refusing) => {
                            eprintln!(
                                "amon-load: the sinks {}",
                                if *refusing { "refuse" } else { "accept again" }
                            );
                            smtp.set_refusing(*refusing);
                            hooks.set_failing(*refusing);
                        }
                        Action::TerminateRelay(r) => cluster.relays[*r].daemon.signal_term(),
                        Action::KillRelay(r) => cluster.relays[*r].daemon.kill(),
                        Action::Zone { .. } => unreachable!("handled above"),
                    }
                }
            }
            i += 1;
        }
        flush(&cluster, &mut pending);
    }
    let sent = written.load(Ordering::Relaxed);
    eprintln!("amon-load: all {sent} transitions written; waiting for the master");

    // Everything written must be committed.
    let deadline = Instant::now() + o.drain_timeout;
    let mut committed = 0;
    let mut committed_at = Instant::now();
    while Instant::now() < deadline {
        committed =
            (api.metric(&master_url, METRIC_EVENTS).await.unwrap_or(0.0) as u64).saturating_sub(committed_before);
        committed_at = Instant::now();
        if committed >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then the notifications, and a quiet while for any extra one: the
    // longest a late or duplicate notification could take to be decided.
    let quiet = delay
        + options.heartbeat_timeout
        + Duration::from_secs(3)
        + if o.plan.scenario == Scenario::ServerDown {
            delay
        } else {
            Duration::ZERO
        };
    let expected = plan.expected.notifications() as usize;
    let mut last_count = usize::MAX;
    let mut last_change = Instant::now();
    while Instant::now() < deadline {
        let count = smtp.count() + hooks.count();
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
        if count >= expected && last_change.elapsed() >= quiet {
            break;
        }
        // Short of what the plan expects and nothing has arrived for a long
        // while: what is missing is not coming (the checks will say so).
        if last_change.elapsed() >= STALLED.max(quiet * 4) {
            eprintln!("amon-load: {count} of {expected} notifications, none for {STALLED:?}; giving up waiting");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sampler.abort();

    // Read back what arrived.
    let mut report = Report {
        scenario: format!("{:?}", o.plan.scenario),
        medium: format!("{:?}", o.medium).to_lowercase(),
        servers: fleet.servers.len(),
        zones: fleet.zones.len(),
        relays: fleet.relays,
        accounts: fleet.accounts.len(),
        hold_ms: o.plan.hold.as_millis() as u64,
        burst_window_ms: o.burst_window.as_millis() as u64,
        rate: o.plan.rate,
        duration_s: o.plan.duration.as_secs_f64(),
        probes_created: fleet.zones.len(),
        probes_per_sec: fleet.zones.len() as f64 / report::secs(probes_took).max(1e-9),
        events_sent: sent,
        events_committed: committed,
        events_per_sec: committed as f64 / report::secs(committed_at - start).max(1e-9),
        emails_expected: expected as u64,
        refused: smtp.refused() as u64,
        ..Report::default()
    };
    report.settings = BTreeMap::from([
        ("notify.hold".into(), format!("{:?}", options.hold)),
        ("notify.burst_window".into(), format!("{:?}", options.burst_window)),
        ("notify.burst_count".into(), options.burst_count.to_string()),
        ("notify.burst_percent".into(), options.burst_percent.to_string()),
        ("notify.rate_limit".into(), options.rate_limit.to_string()),
        ("notify.workers".into(), options.workers.to_string()),
        (
            "notify.heartbeat_timeout".into(),
            format!("{:?}", options.heartbeat_timeout),
        ),
    ]);
    let received: Vec<Notice> = match o.medium {
        Medium::Email => smtp.emails().iter().map(notices::from_email).collect(),
        Medium::Webhook => hooks.hooks().iter().map(notices::from_hook).collect(),
    };
    report.emails = received.len() as u64;
    let mut seen = BTreeSet::new();
    for n in &received {
        *report
            .by_kind
            .entry(format!("{:?}", n.kind).to_lowercase())
            .or_default() += 1;
        if !n.id.is_empty() && !seen.insert(n.id.clone()) {
            report.duplicates += 1;
        }
    }
    let zone_of: HashMap<Uuid, usize> = fleet.zones.iter().enumerate().map(|(i, z)| (z.uuid, i)).collect();
    let (mut faults, mut over, mut clears) = (report::histogram(), report::histogram(), report::histogram());
    // Per second of the run (by arrival), for the plot.
    let mut per_second: BTreeMap<u64, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    for n in &received {
        let Some(zone) = n.machine.and_then(|m| zone_of.get(&m)) else {
            continue;
        };
        let want_up = match n.kind {
            Kind::Fault => false,
            Kind::Clear => true,
            _ => continue,
        };
        let written = writes[*zone].iter().rev().find(|(t, up)| *up == want_up && *t <= n.at);
        if let Some((t, _)) = written {
            let us = (n.at - *t).as_micros() as u64;
            if want_up {
                let _ = clears.record(us.max(1));
            } else {
                let _ = faults.record(us.max(1));
                let _ = over.record(us.saturating_sub(delay.as_micros() as u64).max(1));
                let second = n.at.saturating_duration_since(start).as_secs();
                let _ = per_second
                    .entry(second)
                    .or_insert_with(report::histogram)
                    .record(us.max(1));
            }
        }
    }
    // A server-down message is timed from the first of its machines' down
    // lines (the server starting to go down).
    let mut server_down = report::histogram();
    for n in received.iter().filter(|n| n.kind == Kind::ServerDown) {
        let first = n
            .machines
            .iter()
            .filter_map(|m| zone_of.get(m))
            .filter_map(|&z| writes[z].iter().find(|(t, up)| !*up && *t <= n.at).map(|(t, _)| *t))
            .min();
        if let Some(t) = first {
            let _ = server_down.record(((n.at - t).as_micros() as u64).max(1));
        }
    }
    report.server_down_latency_ms = Latency::of(&server_down);
    report.latency_ms = Latency::of(&faults);
    report.latency_over_hold_ms = Latency::of(&over);
    report.clear_latency_ms = Latency::of(&clears);

    report.rss_bytes = PerProcess {
        master: cluster.master_rss() as f64,
        relay: cluster.relays_rss() as f64,
    };
    report.cpu_seconds = PerProcess {
        master: cluster.master_cpu()
            - if o.plan.scenario == Scenario::MasterRestart {
                0.0
            } else {
                master_cpu_before
            },
        // A relay stopped by the scenario reads as 0 from then on.
        relay: (cluster.relays_cpu() - relay_cpu_before).max(0.0),
    };
    report.bytes_per_zone = relay_full_rss.saturating_sub(relay_idle_rss) as f64 / fleet.zones.len().max(1) as f64;
    report.timeline = samples.borrow().clone();
    for sample in &mut report.timeline {
        // A sample taken at t covers arrivals in the second before it.
        let second = (sample.t.max(1.0) - 1.0) as u64;
        sample.latency_p99_ms = per_second
            .get(&second)
            .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0);
    }
    if let Some(peak) = report.timeline.iter().max_by_key(|s| (s.open_alarms, s.master_rss)) {
        report.open_alarms_peak = peak.open_alarms;
        if peak.open_alarms > 0 {
            report.bytes_per_open_alarm =
                peak.master_rss.saturating_sub(master_rss_before) as f64 / peak.open_alarms as f64;
        }
    }

    let restarted = (o.plan.scenario == Scenario::MasterRestart).then_some(options.workers);
    check(&mut report, &fleet, &plan.expected, &received, restarted);
    Ok(report)
}

fn flush(cluster: &Cluster, pending: &mut [String]) {
    for (r, lines) in pending.iter_mut().enumerate() {
        if !lines.is_empty() {
            cluster.relays[r].write(std::mem::take(lines));
        }
    }
}

/// The scenario's invariants, as checks on the report.
/// `restarted_workers`: the notifier workers of a master that was SIGKILLed
/// during the run (master-restart), or `None`.
fn check(
    report: &mut Report,
    fleet: &Fleet,
    expected: &plan::Expected,
    received: &[Notice],
    restarted_workers: Option<usize>,
) {
    report.check(
        "events_committed == events_sent",
        report.events_committed == report.events_sent && report.events_sent == expected.events,
        format!(
            "sent {}, committed {}, planned {}",
            report.events_sent, report.events_committed, expected.events
        ),
    );
    // A notification sent twice with the same id (Message-ID) is a
    // redelivery; one decided twice would have a new id and show in the
    // counts below, which take each id once.
    let redelivered_ok = match restarted_workers {
        // SIGKILL during a delivery: the message went out but its outcome
        // was not recorded, so the restarted master sends it again with the
        // same Message-ID (at least once, SPEC §7): at most one per
        // notifier worker busy at the moment of the kill.
        Some(workers) => report.duplicates <= workers as u64,
        None => report.duplicates == 0,
    };
    report.check(
        "no notification delivered twice",
        redelivered_ok,
        match restarted_workers {
            Some(workers) => format!(
                "{} redelivered with the same Message-ID after the SIGKILL (at most {workers}, one per notifier worker in flight)",
                report.duplicates
            ),
            None => format!("{} received twice", report.duplicates),
        },
    );
    let mut ids = BTreeSet::new();
    let unique: Vec<&Notice> = received
        .iter()
        .filter(|n| n.id.is_empty() || ids.insert(n.id.clone()))
        .collect();
    let count = |k: Kind| unique.iter().filter(|n| n.kind == k).count() as u64;
    report.check(
        "notifications == expected, none decided twice",
        unique.len() as u64 == expected.notifications()
            && count(Kind::Fault) == expected.faults
            && count(Kind::Clear) == expected.clears
            && count(Kind::ServerDown) == expected.server_down,
        format!(
            "faults {}/{}, clears {}/{}, server-down {}/{}, other {}",
            count(Kind::Fault),
            expected.faults,
            count(Kind::Clear),
            expected.clears,
            count(Kind::ServerDown),
            expected.server_down,
            unique.len() as u64 - count(Kind::Fault) - count(Kind::Clear) - count(Kind::ServerDown)
        ),
    );
    if !expected.servers_down.is_empty() {
        report.servers_down = expected.servers_down.len();
        report.contacts = fleet.accounts.len();
        // Each (server, contact) gets one message listing exactly that
        // contact's machines on that server.
        let server_of: HashMap<Uuid, usize> = fleet.zones.iter().map(|z| (z.uuid, z.server)).collect();
        let owner_of: HashMap<Uuid, usize> = fleet.zones.iter().map(|z| (z.uuid, z.owner)).collect();
        let mut wrong = Vec::new();
        let mut per_pair: BTreeMap<(usize, String), usize> = BTreeMap::new();
        for n in received.iter().filter(|n| n.kind == Kind::ServerDown) {
            report.server_down_machines_named += n.machines.len() as u64;
            let servers: BTreeSet<usize> = n.machines.iter().filter_map(|m| server_of.get(m).copied()).collect();
            let owners: BTreeSet<usize> = n.machines.iter().filter_map(|m| owner_of.get(m).copied()).collect();
            let (Some(&server), true, true) = (servers.first(), servers.len() == 1, owners.len() == 1) else {
                wrong.push(format!(
                    "{} lists machines of servers {servers:?} and owners {owners:?}",
                    n.to
                ));
                continue;
            };
            let owner = *owners.first().expect("one owner");
            let want = fleet
                .zones_of(server)
                .filter(|&z| fleet.zones[z].owner == owner)
                .count();
            if n.machines.len() != want {
                wrong.push(format!(
                    "{} names {} of its {want} machines on server {server}",
                    n.to,
                    n.machines.len()
                ));
            }
            *per_pair.entry((server, n.to.clone())).or_default() += 1;
        }
        let pairs_ok = per_pair.len() as u64 == expected.server_down && per_pair.values().all(|&c| c == 1);
        report.check(
            "one server-down notification per contact per server, listing its machines",
            wrong.is_empty() && pairs_ok,
            if wrong.is_empty() {
                format!("{} (server, contact) pairs notified", per_pair.len())
            } else {
                wrong.join("; ")
            },
        );
    }
}

/// Polls `check` every 100 ms until it is true or `timeout` passes.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}
