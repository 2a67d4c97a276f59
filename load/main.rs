//! `amon-load`: thousands of simulated zones driving real Amon daemons, and
//! the same workload against Prometheus Alertmanager, side by side.
//!
//! A run starts a real `amon master` and `--relays` real `amon relay`
//! processes on loopback, an SMTP sink and a webhook sink in this process,
//! creates accounts and one `machine-up` probe per zone through the Master
//! API, and writes zone lines into each relay's exec source (a named pipe),
//! so every transition crosses the relay's parser, a `ZoneWatcher`, the
//! spool, `POST /events`, an alarm actor and the notifier. The parts:
//! `workload` (the fleet and its zone lines), `plan` (scenarios as timed
//! steps with what they must cause), `cluster` (the daemons), `api` (the
//! harness as a Master API client), `smtp_sink` and `webhook_sink`,
//! `notices` (reading notifications back), `run` (one scenario),
//! `report` and `plot` (JSON, Markdown, SVG), `poster` and `alertmanager`
//! (the side-by-side comparison), `soak` (run after run against one master),
//! `procstat` (RSS and CPU from /proc).

#![forbid(unsafe_code)]
// A load harness measures wall time; the paused-time rule is for logic.
#![allow(clippy::disallowed_methods)]

mod alertmanager;
mod api;
mod cluster;
mod compare;
mod notices;
mod plan;
mod plot;
mod poster;
mod procstat;
mod report;
mod run;
mod smtp_sink;
mod soak;
mod webhook_sink;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::api::Medium;
use crate::plan::{DownMode, Scenario};

#[derive(Debug, Parser)]
#[command(
    name = "amon-load",
    version,
    about = "Load Amon with simulated zones and measure it",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Verb>,
    #[command(flatten)]
    run: Args,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Measure Amon and Prometheus Alertmanager with the same workload, in
    /// one run, and print one table (SPEC §11).
    Compare(CompareArgs),
    /// Ingest run after run against one master (optionally filled first),
    /// to see whether it slows down with age.
    Soak(SoakArgs),
}

#[derive(Debug, clap::Args)]
struct SoakArgs {
    /// Consecutive ingest runs against the same master.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Events per run.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events stored before the first run (unmeasured).
    #[arg(long, default_value_t = 0)]
    prefill: usize,
    /// Machines the events are about, in turn (0: a new machine each event).
    #[arg(long, default_value_t = 100_000)]
    machines: usize,
    /// The `amon` binary (default: the one beside this program).
    #[arg(long)]
    amon: Option<PathBuf>,
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write the figures as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// Ingest runs per system; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Events (alerts) per ingest run.
    #[arg(long, default_value_t = 200_000)]
    ingest_events: usize,
    /// Small sizes, to check the comparison itself runs.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value = alertmanager::DEFAULT_BINARY)]
    alertmanager: PathBuf,
    /// The `amon` binary (default: the one beside this program).
    #[arg(long)]
    amon: Option<PathBuf>,
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write both systems' figures as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct Args {
    /// What to drive.
    #[arg(long, value_enum, default_value = "churn")]
    scenario: Scenario,
    /// Simulated compute nodes.
    #[arg(long, default_value_t = 10)]
    servers: usize,
    /// Zones on each server.
    #[arg(long, default_value_t = 100)]
    zones_per_server: usize,
    /// Accounts owning the zones (zone z of each server belongs to account z mod A).
    #[arg(long, default_value_t = 3)]
    accounts: usize,
    /// Relay processes the servers are spread over.
    #[arg(long, default_value_t = 1)]
    relays: usize,
    /// Zone transitions per second (churn, reboot-storm, open-alarms).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long transitions are written (churn, flap, master-restart, smtp-outage).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The master's `notify.hold`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// The master's `notify.burst_window` (default: the hold, or 2 s when
    /// the hold is 0); a machine-down notification waits at least this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    burst_window: Option<Duration>,
    /// server-down: how many servers go down.
    #[arg(long, default_value_t = 5)]
    servers_down: usize,
    /// server-down: how a server goes (announced and silent need --relays = --servers).
    #[arg(long, value_enum, default_value = "zones")]
    down_mode: DownMode,
    /// Where notifications go.
    #[arg(long = "notify", value_enum, default_value = "email")]
    medium: Medium,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probe creations in flight at once.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// Longest wait for events and notifications after the last step.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Drive this running master instead of starting one (its relays are
    /// still started here). Notifications reach the harness with `--notify
    /// webhook`, or by email if that master's `notify.email.smtp_url` points
    /// at `--smtp-port`. What the scenario expects assumes the settings the
    /// harness gives its own master (see the report's `settings`); a running
    /// master's flood guard and rate limit may rightly differ.
    #[arg(long)]
    master_url: Option<String>,
    /// The running master's pid, to report its memory and CPU.
    #[arg(long, requires = "master_url")]
    master_pid: Option<u32>,
    /// Masters to start, sharing one PostgreSQL store (needs --store-url
    /// when more than one); every relay is given all of them, the first
    /// first. master-restart SIGKILLs the first (the leader at the start).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    masters: u8,
    /// Keep the masters' database in this PostgreSQL database (a fresh
    /// schema per run) instead of SQLite.
    #[arg(long, conflicts_with = "master_url")]
    store_url: Option<String>,
    /// The masters' `cluster.lease` (with --store-url).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// Port of the harness's SMTP sink on 127.0.0.1 (default: any free one).
    #[arg(long, default_value_t = 0)]
    smtp_port: u16,
    /// The `amon` binary (default: the one beside this program).
    #[arg(long)]
    amon: Option<PathBuf>,
    /// Where daemons keep their data and logs (default: a new temporary
    /// directory, removed afterwards unless --keep).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work directory.
    #[arg(long)]
    keep: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Draw events/s and latency over the run as SVG here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn amon_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let amon = match given {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this program")?
            .join("amon"),
    };
    anyhow::ensure!(amon.exists(), "no amon binary at {} (give --amon)", amon.display());
    Ok(amon)
}

fn work_dir(given: &Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<TempDir>)> {
    Ok(match given {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempdir()?;
            (temp.path.clone(), Some(temp))
        }
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Verb::Compare(args)) => compare_main(args),
        Some(Verb::Soak(args)) => soak_main(args),
        None => run_main(cli.run),
    }
}

fn compare_main(args: CompareArgs) -> anyhow::Result<()> {
    let (work, _temp) = work_dir(&args.work_dir)?;
    let options = compare::CompareOptions {
        amon: amon_binary(args.amon)?,
        work,
        alertmanager: args.alertmanager,
        runs: args.runs.max(1),
        ingest_events: args.ingest_events,
        quick: args.quick,
    };
    let (amon, am, table) = actix_rt::System::new().block_on(compare::compare(&options))?;
    println!("{table}");
    if let Some(path) = &args.report {
        let json = serde_json::json!({ "amon": amon, "alertmanager": am, "table": table });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn soak_main(args: SoakArgs) -> anyhow::Result<()> {
    let (work, _temp) = work_dir(&args.work_dir)?;
    let options = soak::SoakOptions {
        amon: amon_binary(args.amon)?,
        work,
        runs: args.runs.max(1),
        events: args.events,
        prefill: args.prefill,
        machines: args.machines,
    };
    let figures = actix_rt::System::new().block_on(soak::soak(&options))?;
    println!("{}", soak::table(&figures));
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn run_main(args: Args) -> anyhow::Result<()> {
    let amon = amon_binary(args.amon.clone())?;
    let (work, _temp) = work_dir(&args.work_dir)?;
    let options = run::RunOptions {
        amon,
        work: work.clone(),
        servers: args.servers,
        zones_per_server: args.zones_per_server,
        accounts: args.accounts,
        relays: args.relays,
        plan: plan::PlanOptions {
            scenario: args.scenario,
            rate: args.rate,
            duration: args.duration,
            hold: args.hold,
            servers_down: args.servers_down,
            down_mode: args.down_mode,
            seed: args.seed,
        },
        burst_window: args.burst_window.unwrap_or(if args.hold.is_zero() {
            Duration::from_secs(2)
        } else {
            args.hold
        }),
        medium: args.medium,
        parallel: args.parallel.max(1),
        drain_timeout: args.drain_timeout,
        master_url: args.master_url.clone(),
        master_pid: args.master_pid,
        smtp_port: args.smtp_port,
        masters: usize::from(args.masters),
        store_url: args.store_url,
        lease: args.lease,
    };
    let report = actix_rt::System::new().block_on(run::run(&options))?;
    println!("{}", report.markdown());
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        plot::draw(&report, path)?;
    }
    if let Some(mut temp) = _temp {
        temp.keep = args.keep;
        if args.keep {
            eprintln!("amon-load: kept {}", work.display());
        }
    }
    if !report.ok {
        eprintln!("amon-load: some checks failed");
        std::process::exit(1);
    }
    Ok(())
}

/// A temporary directory removed on drop unless `keep`.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

fn tempdir() -> anyhow::Result<TempDir> {
    let path = std::env::temp_dir().join(format!("amon-load-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&path)?;
    Ok(TempDir { path, keep: false })
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
