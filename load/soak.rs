//! `amon-load soak`: ingest run after run against one master, to see
//! whether it slows down with age (issue #10: "10 consecutive runs against
//! one master with < 10 % decay, and with 10 million events already
//! stored"). Optionally fills the database first (`--prefill`), unmeasured.
//! Every run posts new machine-down events for machines nobody watches, as
//! `compare`'s ingest does, so what is measured is the commit path: by
//! default about a fleet of 100,000 machines in turn (a data center's
//! machines do not change every event), or a new machine each event with
//! `--machines 0`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::compare::{bare_master, event_bodies, median, BATCH, CONNECTIONS};
use crate::poster::post_all;

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub amon: PathBuf,
    pub work: PathBuf,
    pub runs: usize,
    pub events: usize,
    pub prefill: usize,
    /// The fleet the events are about, in turn (0: a new machine each event).
    pub machines: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SoakFigures {
    pub prefill_events: usize,
    pub prefill_per_sec: f64,
    pub prefill_seconds: f64,
    /// Accepted events per second, run by run.
    pub runs: Vec<f64>,
    /// `503`s seen (and retried) in each run.
    pub refused: Vec<usize>,
    /// The master's RSS after each run, bytes.
    pub rss_after: Vec<u64>,
    /// 1 − (median of the last three runs ÷ median of the first three), in %.
    pub decay_percent: f64,
    pub database_bytes: u64,
}

/// Prefill bodies are built this many events at a time, not all at once.
const PREFILL_CHUNK: usize = 200_000;

pub async fn soak(o: &SoakOptions) -> anyhow::Result<SoakFigures> {
    let mut f = SoakFigures::default();
    let smtp = crate::smtp_sink::SmtpSink::start(0)?;
    let servers: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    let machines: Vec<Uuid> = (0..o.machines).map(|_| Uuid::new_v4()).collect();
    let cluster = bare_master(
        &crate::compare::CompareOptions {
            amon: o.amon.clone(),
            work: o.work.clone(),
            alertmanager: PathBuf::new(),
            runs: 1,
            ingest_events: 0,
            quick: false,
        },
        "soak",
        Duration::from_secs(60),
        smtp.port(),
    )?;
    let url = format!("{}/events", cluster.master_url());
    if o.prefill > 0 {
        let started = Instant::now();
        let mut done = 0;
        while done < o.prefill {
            let n = PREFILL_CHUNK.min(o.prefill - done);
            let stats = post_all(&url, event_bodies(&machines, &servers, n), BATCH, CONNECTIONS, None);
            anyhow::ensure!(stats.all_ok(202), "prefill: {:?}", stats.statuses);
            done += stats.items;
            eprintln!("soak: prefilled {done} events");
        }
        f.prefill_events = done;
        f.prefill_seconds = started.elapsed().as_secs_f64();
        f.prefill_per_sec = done as f64 / f.prefill_seconds;
    }
    for run in 0..o.runs.max(1) {
        let stats = post_all(
            &url,
            event_bodies(&machines, &servers, o.events),
            BATCH,
            CONNECTIONS,
            None,
        );
        anyhow::ensure!(stats.all_ok(202), "soak run {run}: {:?}", stats.statuses);
        f.runs.push(stats.items_per_sec());
        f.refused.push(stats.refused);
        f.rss_after.push(cluster.master_rss());
        eprintln!(
            "soak: run {run}: {:.0} events/s, {} refused, RSS {} MiB",
            stats.items_per_sec(),
            stats.refused,
            cluster.master_rss() / (1 << 20)
        );
    }
    let k = 3.min(f.runs.len());
    let first = median(f.runs[..k].to_vec());
    let last = median(f.runs[f.runs.len() - k..].to_vec());
    f.decay_percent = if first > 0.0 { (1.0 - last / first) * 100.0 } else { 0.0 };
    f.database_bytes = std::fs::read_dir(o.work.join("soak").join("master"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("amon.sqlite"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(f)
}

/// The figures as a Markdown table.
pub fn table(f: &SoakFigures) -> String {
    let mut out = String::from("| run | events/s | 503s retried | master RSS |\n|---|---|---|---|\n");
    for (i, rate) in f.runs.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.0} | {} | {} MiB |\n",
            i + 1,
            rate,
            f.refused[i],
            f.rss_after[i] / (1 << 20)
        ));
    }
    out.push_str(&format!(
        "\nprefill: {} events at {:.0}/s; decay (first 3 vs last 3, medians): {:.1} %; database: {} MiB\n",
        f.prefill_events,
        f.prefill_per_sec,
        f.decay_percent,
        f.database_bytes / (1 << 20)
    ));
    out
}
