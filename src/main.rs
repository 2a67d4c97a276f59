//! The `amon` binary: parses the command line, loads configuration (exit 96
//! on a bad value), and runs a daemon or a client verb.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use amon::cli::{Cli, Command};
use amon::clock::Clock;
use amon::config::{self, Mode, EXIT_CONFIG};
use amon::daemon::{self, Listeners};

/// jemalloc instead of glibc's allocator: with its background thread it
/// gives memory freed after a burst back to the system (glibc's per-thread
/// arenas kept it: a master stayed at its peak after its alarm actors had
/// gone idle).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mode, file) = match cli.command {
        Command::Standalone { config } => (Mode::Standalone, config),
        Command::Master { config } => (Mode::Master, config),
        Command::Relay { config } => (Mode::Relay, config),
        Command::Agent { config } => (Mode::Agent, config),
        Command::Ping { url } => return ping(&url),
        client => return amon::cli::run(client).expect("daemons and ping are matched above"),
    };
    let settings = match config::load(mode, file.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("amon: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    amon::telemetry::init("amon");
    amon::metrics::install();
    match run_daemon(settings, file) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "fatal");
            eprintln!("amon: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_daemon(settings: config::Settings, file: Option<PathBuf>) -> anyhow::Result<i32> {
    let listeners = Listeners::bind(&settings)?;
    let system = actix_rt::System::new();
    let mode = settings.mode;
    let running = system
        .block_on(daemon::start(settings, listeners.try_clone()?, Clock::system()))
        .context("cannot start")?;
    // The handlers are in place before "amon started" is said: a refresh
    // (SIGHUP) sent as soon as the service is up is a reload, never the
    // default action of a signal nobody handles yet (ending the process).
    let signals = system.block_on(async { Signals::install() })?;
    let show = |addr: Option<std::net::SocketAddr>| addr.map(|a| a.to_string()).unwrap_or_default();
    // Tests and operators read the bound addresses from this line.
    tracing::info!(
        mode = ?mode,
        master_listen = %show(running.master_addr),
        relay_admin_listen = %show(running.relay_admin_addr),
        relay_agent_listen = %show(running.relay_agent_addr),
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        commit = amon::COMMIT,
        "amon started"
    );
    system.block_on(async move {
        actix_rt::spawn(handle_signals(signals, running, listeners, mode, file));
    });
    Ok(system.run_with_code()?)
}

/// The signals the daemon answers, caught from the moment they are made.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// SIGTERM/SIGINT: stop every actor in reverse order and exit 0. SIGHUP (SMF
/// `refresh`): read the configuration again; if it is valid, stop the tree
/// and start it again with it, on the sockets already bound (listen
/// addresses change only with a restart); if not, say why and keep running.
async fn handle_signals(
    signals: Signals,
    mut running: daemon::Running,
    listeners: Listeners,
    mode: Mode,
    file: Option<PathBuf>,
) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let settings = match config::load(mode, file.as_deref()) {
                    Ok(settings) => settings,
                    Err(e) => {
                        tracing::error!(key = %e.key, error = %e, "configuration reload refused; keeping the running one");
                        continue;
                    }
                };
                let sockets = match listeners.try_clone() {
                    Ok(sockets) => sockets,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reuse the listening sockets; keeping the running configuration");
                        continue;
                    }
                };
                tracing::info!("reloading configuration");
                running.shutdown().await;
                match daemon::start(settings, sockets, Clock::system()).await {
                    Ok(restarted) => {
                        running = restarted;
                        tracing::info!("configuration reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start with the new configuration");
                        actix_rt::System::current().stop_with_code(1);
                        return;
                    }
                }
            }
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    actix_rt::System::current().stop_with_code(0);
}

fn ping(url: &str) -> ExitCode {
    let url = format!("{}/ping", url.trim_end_matches('/'));
    let result = actix_rt::System::new().block_on(async {
        let mut response = awc::Client::default()
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body = response.body().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((response.status(), String::from_utf8_lossy(&body).into_owned()))
    });
    match result {
        Ok((status, body)) if status.is_success() => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("amon: {url}: {status} {body}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("amon: {url}: {e}");
            ExitCode::from(1)
        }
    }
}
