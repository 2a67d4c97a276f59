//! `amon-load compare`: the same machine-down workload against Amon and
//! against Prometheus Alertmanager in one run, one table (SPEC §11). Amon's
//! side uses the same poster as Alertmanager's for ingest (batches of 1,000
//! over 4 connections, straight to `POST /events`, each `202` after the
//! commit), and full scenario runs (`run.rs`, through relays) for latency,
//! the server shutdown and memory per open alarm.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use uuid::Uuid;

use crate::alertmanager::{self, AmFigures, AmOptions};
use crate::api::{Api, Inventory, Medium};
use crate::cluster::{Cluster, MasterOptions, MasterSpec};
use crate::plan::{DownMode, PlanOptions, Scenario};
use crate::poster::post_all;
use crate::run::{self, RunOptions};
use crate::webhook_sink::WebhookSink;
use crate::workload::Fleet;

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub amon: PathBuf,
    pub work: PathBuf,
    pub alertmanager: PathBuf,
    pub runs: usize,
    pub ingest_events: usize,
    /// Small sizes: a smoke run of the comparison itself.
    pub quick: bool,
}

/// Amon's figures, beside [`AmFigures`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AmonFigures {
    pub ingest_per_sec: f64,
    pub ingest_runs: Vec<f64>,
    pub ingest_notifying_per_sec: f64,
    pub delivered_per_sec: f64,
    pub delivered: u64,
    /// The same with the alarms spread over 100 accounts, each with its own
    /// webhook contact (one contact's messages go out one at a time, in
    /// order; different contacts in parallel).
    pub delivered_per_sec_100_contacts: f64,
    pub latency_hold_ms: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_over_hold_p50_ms: f64,
    pub latency_over_hold_p99_ms: f64,
    pub server_down_notifications: u64,
    pub server_down_machines_named: u64,
    pub rss_per_alarm_10k: f64,
    pub rss_per_alarm_100k: f64,
    pub cpu_seconds_per_10k: f64,
}

/// The master's burst window in every phase: the least delay of a
/// machine-down notification, so the delivery phase (hold 0) is timed
/// without it.
const BURST_WINDOW: Duration = Duration::from_secs(1);

pub(crate) const BATCH: usize = 1000;
pub(crate) const CONNECTIONS: usize = 4;

/// Machine-down events as a relay would post them, in batches of 1,000: for
/// `machines` in turn, or a new machine each event when there are none.
pub(crate) fn event_bodies(machines: &[Uuid], servers: &[Uuid], count: usize) -> Vec<Vec<u8>> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..count.div_ceil(BATCH))
        .map(|b| {
            let list: Vec<_> = (0..BATCH)
                .map(|i| {
                    let n = b * BATCH + i;
                    // Machines in turn when given, else a new one each event.
                    let machine = match machines.len() {
                        0 => Uuid::new_v4(),
                        len => machines[n % len],
                    };
                    let server = servers[n % servers.len()];
                    json!({
                        "type": "machine", "uuid": Uuid::now_v7(), "time": now + n as i64,
                        "relay": server, "machine": machine, "server": server,
                        "oldState": "running", "newState": "shutting_down", "up": false,
                    })
                })
                .collect();
            serde_json::to_vec(&list).expect("json")
        })
        .collect()
}

pub(crate) fn bare_master(o: &CompareOptions, name: &str, hold: Duration, smtp_port: u16) -> anyhow::Result<Cluster> {
    Cluster::start(
        &o.amon,
        &o.work.join(name),
        MasterSpec::Start(
            MasterOptions {
                hold,
                smtp_port,
                burst_count: 1_000_000,
                burst_percent: 100,
                rate_limit: 0,
                workers: 4,
                heartbeat_timeout: Duration::from_secs(30),
                burst_window: BURST_WINDOW,
                store: None,
                lease: Duration::from_secs(10),
            },
            1,
        ),
        0,
        &[],
    )
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub async fn amon(o: &CompareOptions, sink: &WebhookSink) -> anyhow::Result<AmonFigures> {
    let mut f = AmonFigures::default();
    let smtp = crate::smtp_sink::SmtpSink::start(0)?;
    let servers: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    let ingest = if o.quick { 2_000 } else { o.ingest_events };

    // Ingest, nobody notified: a fresh master per run, new machines each event.
    let mut cpu = Vec::new();
    for run in 0..o.runs.max(1) {
        let bodies = event_bodies(&[], &servers, ingest);
        let cluster = bare_master(o, &format!("ingest-{run}"), Duration::from_secs(60), smtp.port())?;
        let before = cluster.master_cpu();
        let stats = post_all(
            &format!("{}/events", cluster.master_url()),
            bodies,
            BATCH,
            CONNECTIONS,
            None,
        );
        anyhow::ensure!(stats.all_ok(202), "ingest run {run}: {:?}", stats.statuses);
        cpu.push((cluster.master_cpu() - before) / (stats.items as f64 / 10_000.0));
        f.ingest_runs.push(stats.items_per_sec());
        eprintln!("compare: amon ingest run {run}: {:.0} events/s", stats.items_per_sec());
    }
    f.ingest_per_sec = median(f.ingest_runs.clone());
    f.cpu_seconds_per_10k = median(cpu);

    // Every event notifying: 10,000 machines with a webhook probe each, hold
    // 0; all of one account (one contact), then spread over 100 accounts.
    let n = if o.quick { 1_000 } else { 10_000 };
    for accounts in [1, 100] {
        let fleet = Fleet::new(7, 100, n / 100, accounts, 1);
        let cluster = bare_master(o, &format!("notifying-{accounts}"), Duration::ZERO, smtp.port())?;
        Api::new()
            .provision(
                cluster.master_url(),
                &fleet,
                Medium::Webhook,
                &sink.url(""),
                16,
                Inventory::Report,
            )
            .await?;
        sink.clear();
        let machines: Vec<Uuid> = fleet.zones.iter().map(|z| z.uuid).collect();
        let bodies = event_bodies(&machines, &servers, n);
        let started = Instant::now();
        let stats = tokio::task::spawn_blocking({
            let url = format!("{}/events", cluster.master_url());
            move || post_all(&url, bodies, BATCH, CONNECTIONS, None)
        })
        .await?;
        anyhow::ensure!(stats.all_ok(202), "notifying ingest: {:?}", stats.statuses);
        let deadline = Instant::now() + Duration::from_secs(600);
        while sink.count() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last = sink.hooks().iter().map(|h| h.at).max().unwrap_or(started);
        let delivered = sink.count() as u64;
        let per_sec = delivered as f64 / (last - started).saturating_sub(BURST_WINDOW).as_secs_f64().max(1e-9);
        if accounts == 1 {
            f.ingest_notifying_per_sec = stats.items_per_sec();
            f.delivered = delivered;
            f.delivered_per_sec = per_sec;
        } else {
            f.delivered_per_sec_100_contacts = per_sec;
        }
        eprintln!(
            "compare: amon every event notifying, {accounts} contact(s): {:.0} events/s accepted, {delivered} webhooks, {per_sec:.0}/s delivered",
            stats.items_per_sec()
        );
        drop(cluster);
    }

    let scenario = |name: &str, scenario, servers, per, rate, duration: Duration, hold| RunOptions {
        amon: o.amon.clone(),
        work: o.work.join(name),
        servers,
        zones_per_server: per,
        accounts: 3,
        relays: 1,
        plan: PlanOptions {
            scenario,
            rate,
            duration,
            hold,
            servers_down: 1,
            down_mode: DownMode::Zones,
            seed: 1,
        },
        burst_window: BURST_WINDOW.max(hold),
        medium: Medium::Webhook,
        parallel: 16,
        drain_timeout: Duration::from_secs(900),
        master_url: None,
        master_pid: None,
        masters: 1,
        store_url: None,
        lease: Duration::from_secs(10),
        smtp_port: 0,
    };
    let quick = o.quick;
    // Latency at 1,000 events/s through relays, hold 1 s.
    let hold = Duration::from_secs(1);
    let r = run::run(&scenario(
        "latency",
        Scenario::Churn,
        100,
        if quick { 10 } else { 100 },
        if quick { 100.0 } else { 1000.0 },
        Duration::from_secs(if quick { 3 } else { 20 }),
        hold,
    ))
    .await?;
    f.latency_hold_ms = r.hold_ms;
    f.latency_p50_ms = r.latency_ms.p50;
    f.latency_p99_ms = r.latency_ms.p99;
    f.latency_over_hold_p50_ms = r.latency_over_hold_ms.p50;
    f.latency_over_hold_p99_ms = r.latency_over_hold_ms.p99;
    eprintln!(
        "compare: amon latency over hold p50 {:.1} ms p99 {:.1} ms",
        r.latency_over_hold_ms.p50, r.latency_over_hold_ms.p99
    );

    // One server of 500 zones (3 accounts) shuts down.
    let r = run::run(&scenario(
        "server-down",
        Scenario::ServerDown,
        2,
        500,
        100.0,
        Duration::from_secs(1),
        Duration::from_secs(2),
    ))
    .await?;
    f.server_down_notifications = r.emails;
    f.server_down_machines_named = r.server_down_machines_named;
    anyhow::ensure!(r.ok, "server-down run failed its checks: {:?}", r.checks);

    // Memory per open alarm, live, at 10k and 100k.
    for (size, slot) in [(10_000usize, 0), (100_000, 1)] {
        let size = if quick { size / 100 } else { size };
        let r = run::run(&scenario(
            &format!("open-alarms-{size}"),
            Scenario::OpenAlarms,
            100,
            size / 100,
            if quick { 500.0 } else { 5000.0 },
            Duration::from_secs(1),
            Duration::from_secs(1),
        ))
        .await?;
        let value = r.bytes_per_open_alarm;
        if slot == 0 {
            f.rss_per_alarm_10k = value;
        } else {
            f.rss_per_alarm_100k = value;
        }
        eprintln!(
            "compare: amon {size} open alarms: {value:.0} bytes each (peak {} open)",
            r.open_alarms_peak
        );
    }
    Ok(f)
}

/// Both systems, one table.
pub async fn compare(o: &CompareOptions) -> anyhow::Result<(AmonFigures, AmFigures, String)> {
    anyhow::ensure!(
        alertmanager::available(&o.alertmanager),
        "no Alertmanager at {} (apt-get install prometheus-alertmanager, or give --alertmanager)",
        o.alertmanager.display()
    );
    let sink = WebhookSink::start(2).context("cannot start the webhook sink")?;
    let amon = amon(o, &sink).await?;
    let mut am_options = AmOptions::new(o.work.join("alertmanager"));
    am_options.binary = o.alertmanager.clone();
    am_options.runs = o.runs;
    am_options.ingest_alerts = o.ingest_events;
    am_options.quick = o.quick;
    let am = tokio::task::spawn_blocking({
        let sink = std::sync::Arc::new(sink);
        move || alertmanager::measure(&am_options, &sink)
    })
    .await??;
    let table = table(&amon, &am);
    Ok((amon, am, table))
}

fn table(a: &AmonFigures, m: &AmFigures) -> String {
    let ratio = |x: f64, y: f64| if y > 0.0 { format!("{:.2}", x / y) } else { "–".into() };
    let rows = [
        (
            "ingest, accepted events/s (Amon: committed before 202; AM: grouped, null receiver, in memory)".to_string(),
            format!("{:.0}", a.ingest_per_sec),
            format!("{:.0}", m.ingest_grouped_per_sec),
            ratio(a.ingest_per_sec, m.ingest_grouped_per_sec),
        ),
        (
            // Not the same size: Amon's figure is the 10k events of the
            // delivery phase (10k probes), Alertmanager's its 200k-alert runs.
            "ingest with every event notifying, accepted/s (Amon: 10k events, hold 0; AM: ungrouped, 200k alerts; sizes differ, no ratio)".into(),
            format!("{:.0}", a.ingest_notifying_per_sec),
            format!("{:.0}", m.ingest_ungrouped_per_sec),
            "–".into(),
        ),
        (
            "every event notifying: webhooks delivered/s (10k; Amon: hold 0, minus the 1 s burst window every machine-down waits)".into(),
            format!("{:.0}", a.delivered_per_sec),
            format!("{:.0}", m.delivered_per_sec),
            ratio(a.delivered_per_sec, m.delivered_per_sec),
        ),
        (
            "the same, Amon's 10k alarms over 100 accounts' webhook contacts (one contact's messages in order, contacts in parallel)".into(),
            format!("{:.0}", a.delivered_per_sec_100_contacts),
            format!("{:.0}", m.delivered_per_sec),
            ratio(a.delivered_per_sec_100_contacts, m.delivered_per_sec),
        ),
        (
            format!(
                "transition → webhook at 1,000/s, p50 / p99 (Amon: through a relay, minus its {} ms hold)",
                a.latency_hold_ms
            ),
            format!(
                "{:.1} / {:.1} ms",
                a.latency_over_hold_p50_ms, a.latency_over_hold_p99_ms
            ),
            format!("{:.1} / {:.1} ms", m.latency_p50_ms, m.latency_p99_ms),
            format!(
                "{} / {}",
                ratio(a.latency_over_hold_p50_ms, m.latency_p50_ms),
                ratio(a.latency_over_hold_p99_ms, m.latency_p99_ms)
            ),
        ),
        (
            "500-zone server down (3 accounts): notifications (machines named)".into(),
            format!("{} ({})", a.server_down_notifications, a.server_down_machines_named),
            format!(
                "grouped+inhibit {} ({}); ungrouped {}",
                m.server_down_notifications_grouped,
                m.server_down_machines_named_grouped,
                m.server_down_notifications_ungrouped
            ),
            "".into(),
        ),
        (
            "bytes per open alarm / active alert at 10k".into(),
            format!("{:.0}", a.rss_per_alarm_10k),
            format!("{:.0} (grouped)", m.rss_per_alert_10k_grouped),
            ratio(a.rss_per_alarm_10k, m.rss_per_alert_10k_grouped),
        ),
        (
            "bytes per open alarm / active alert at 100k".into(),
            format!("{:.0}", a.rss_per_alarm_100k),
            format!(
                "{:.0} (grouped), {:.0} (ungrouped)",
                m.rss_per_alert_100k_grouped, m.rss_per_alert_100k_ungrouped
            ),
            ratio(a.rss_per_alarm_100k, m.rss_per_alert_100k_grouped),
        ),
        (
            "CPU seconds per 10k events ingested".into(),
            format!("{:.2}", a.cpu_seconds_per_10k),
            format!("{:.2}", m.cpu_seconds_per_10k),
            ratio(a.cpu_seconds_per_10k, m.cpu_seconds_per_10k),
        ),
    ];
    let mut out = format!(
        "| | Amon {} | Alertmanager {} | Amon/AM |\n|---|---|---|---|\n",
        env!("CARGO_PKG_VERSION"),
        m.version
    );
    for (what, a, m, r) in rows {
        out.push_str(&format!("| {what} | {a} | {m} | {r} |\n"));
    }
    out.push('\n');
    for note in &m.notes {
        out.push_str(&format!("- {note}\n"));
    }
    out
}
