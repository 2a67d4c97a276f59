//! The real daemons under test: one `amon master` and N `amon relay` child
//! processes on loopback, each with its own TOML file and data directory
//! under the run's work directory. Every relay reads its zone lines with
//! `cat` from a named pipe the harness holds open for reading and writing,
//! so lines written while the relay restarts its source wait in the pipe.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::procstat::Process;

/// What the master is configured with, beyond loopback and the data dir.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    pub hold: Duration,
    pub smtp_port: u16,
    /// `notify.burst_count`: machines of one server down within the hold
    /// that open a server incident.
    pub burst_count: usize,
    /// `notify.burst_percent`.
    pub burst_percent: u32,
    /// `notify.rate_limit` (0: off).
    pub rate_limit: u32,
    pub workers: usize,
    pub heartbeat_timeout: Duration,
    /// `notify.burst_window`: also the least delay of a machine-down
    /// notification.
    pub burst_window: Duration,
    /// `[store]` as (url, schema): the masters keep their database in
    /// PostgreSQL (several then share it); `None`: SQLite in the data dir.
    pub store: Option<(String, String)>,
    /// `cluster.lease`, for masters on PostgreSQL.
    pub lease: Duration,
}

/// One daemon process and the address it serves.
pub struct Daemon {
    pub process: Process,
    /// `master_listen` for the master, `relay_admin_listen` for a relay.
    pub addr: SocketAddr,
}

impl Daemon {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl std::ops::Deref for Daemon {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Starts `amon <mode> -c <config>` and waits (up to 60 s) for its
/// `amon started` log line, which names the bound addresses.
fn spawn(amon: &Path, mode: &str, name: &str, config: &Path, log: PathBuf, addr_key: &str) -> anyhow::Result<Daemon> {
    let stderr = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = Command::new(amon);
    command
        .arg(mode)
        .arg("-c")
        .arg(config)
        .env("AMON_LOG", "warn,amon=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (key, _) in std::env::vars() {
        if key.starts_with("AMON__") {
            command.env_remove(key);
        }
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot run {}", amon.display()))?;
    let mut daemon = Daemon {
        process: Process::new(child, log),
        addr: "127.0.0.1:0".parse().expect("address"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if daemon.exit_status().is_some() {
            bail!("{name} exited before starting; its log:\n{}", daemon.log_tail(30));
        }
        if let Some(addr) = started_addr(&daemon.log, addr_key) {
            daemon.addr = addr;
            return Ok(daemon);
        }
        if Instant::now() > deadline {
            bail!("{name} did not start within 60 s; its log:\n{}", daemon.log_tail(30));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn started_addr(log: &Path, key: &str) -> Option<SocketAddr> {
    let text = fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["msg"] == "amon started")
        .and_then(|v| v[key].as_str().and_then(|a| a.parse().ok()))
}

fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("string to json")
}

/// The master's configuration file.
pub fn master_config(data_dir: &Path, listen: &str, o: &MasterOptions) -> String {
    format!(
        r#"datacenter = "load"
data_dir = {data_dir}

[master]
listen = {listen}

[notify]
hold = "{hold}ms"
workers = {workers}
burst_count = {burst_count}
burst_percent = {burst_percent}
rate_limit = {rate_limit}
heartbeat_timeout = "{heartbeat}ms"
burst_window = "{window}ms"

[notify.email]
smtp_url = "smtp://127.0.0.1:{smtp}"
from = "amon-load@load.invalid"

[auth]
open = true

[demo]
enabled = false
{store}"#,
        store = match &o.store {
            Some((url, schema)) => format!(
                "\n[store]\nurl = {}\nschema = {}\n\n[cluster]\nlease = \"{}ms\"\n",
                toml_string(url),
                toml_string(schema),
                o.lease.as_millis()
            ),
            None => String::new(),
        },
        data_dir = toml_string(&data_dir.display().to_string()),
        listen = toml_string(listen),
        hold = o.hold.as_millis(),
        workers = o.workers,
        burst_count = o.burst_count,
        burst_percent = o.burst_percent,
        rate_limit = o.rate_limit,
        heartbeat = o.heartbeat_timeout.as_millis(),
        window = o.burst_window.as_millis(),
        smtp = o.smtp_port,
    )
}

/// A relay's configuration file: zone lines from `cat FIFO`, tagged with
/// their server; its own server uuid when it carries exactly one server.
pub fn relay_config(data_dir: &Path, master_urls: &[String], fifo: &Path, server_uuid: Option<uuid::Uuid>) -> String {
    let mut text = format!(
        r#"datacenter = "load"
data_dir = {data_dir}

[relay]
master_urls = [{master_urls}]
admin_listen = "127.0.0.1:0"
agent_listen = "127.0.0.1:0"
heartbeat = "1s"
"#,
        data_dir = toml_string(&data_dir.display().to_string()),
        master_urls = master_urls
            .iter()
            .map(|u| toml_string(u))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if let Some(uuid) = server_uuid {
        text.push_str(&format!("server_uuid = \"{uuid}\"\n"));
    }
    text.push_str(&format!(
        "\n[relay.zones]\nsource = \"exec\"\ncommand = [\"cat\", {fifo}]\nformat = \"auto\"\nserver_tag = true\n",
        fifo = toml_string(&fifo.display().to_string())
    ));
    text
}

/// A relay process and the pipe it reads its zone lines from.
pub struct Relay {
    pub daemon: Daemon,
    pub index: usize,
    /// Lines to write to the relay's pipe, in order (a writer thread drains it).
    feed: mpsc::Sender<String>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Queues one or more lines (each ending in `\n`) for the relay's pipe.
    pub fn write(&self, lines: String) {
        let _ = self.feed.send(lines);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Closing the channel ends the writer thread.
        let (tx, _) = mpsc::channel();
        self.feed = tx;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Makes a named pipe and opens it for reading and writing, so writes never
/// fail for want of a reader, and a writer thread that copies queued lines
/// into it (blocking when the relay reads slower than we write: the pipe is
/// the relay's own back-pressure).
fn feed(fifo: &Path) -> anyhow::Result<(mpsc::Sender<String>, std::thread::JoinHandle<()>)> {
    let status = Command::new("mkfifo").arg(fifo).status().context("cannot run mkfifo")?;
    if !status.success() {
        bail!("mkfifo {} failed", fifo.display());
    }
    let pipe = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fifo)
        .with_context(|| format!("cannot open {}", fifo.display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let writer = std::thread::Builder::new().name("zone-feed".into()).spawn(move || {
        let mut pipe = std::io::BufWriter::with_capacity(1 << 16, pipe);
        while let Ok(lines) = rx.recv() {
            if pipe.write_all(lines.as_bytes()).is_err() {
                return;
            }
            // Batch whatever else is already queued, then flush.
            while let Ok(more) = rx.try_recv() {
                if pipe.write_all(more.as_bytes()).is_err() {
                    return;
                }
            }
            if pipe.flush().is_err() {
                return;
            }
        }
    })?;
    Ok((tx, writer))
}

/// Waits (up to 60 s) until the master at `url` says it leads its cluster
/// (`GET /cluster`), with a blocking client: the harness has not started
/// its runtime's work yet.
fn wait_until_leading(url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let addr = url.trim_start_matches("http://").to_string();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(body) = crate::api::blocking_get(&addr, "/cluster") {
            let view: Value = serde_json::from_str(&body).unwrap_or_default();
            let leads = view["masters"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["self"] == true && m["leader"] == true));
            if leads {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the master at {url} did not lead its cluster within 60 s")
}

/// The master to drive: one this harness starts (or several, sharing a
/// PostgreSQL store: the first starts alone, so it leads at first), or one
/// already running.
#[derive(Debug, Clone)]
pub enum MasterSpec {
    Start(MasterOptions, usize),
    /// A running master's URL; the harness starts only relays. Its memory
    /// and CPU are read only if its pid is given.
    External {
        url: String,
        pid: Option<u32>,
    },
}

/// The master and its relays.
pub struct Cluster {
    amon: PathBuf,
    work: PathBuf,
    /// The master process, when this harness started it.
    pub master: Option<Daemon>,
    /// The other masters sharing its store (`--masters`).
    pub others: Vec<Daemon>,
    master_url: String,
    external_pid: Option<u32>,
    pub relays: Vec<Relay>,
    restarts: usize,
}

impl Cluster {
    /// Starts the master, then `relays` relays; `relay_server[r]` is the
    /// server uuid of relay `r` when it carries one server only.
    pub fn start(
        amon: &Path,
        work: &Path,
        master: MasterSpec,
        relays: usize,
        relay_server: &[Option<uuid::Uuid>],
    ) -> anyhow::Result<Cluster> {
        fs::create_dir_all(work)?;
        let mut others = Vec::new();
        let (daemon, master_url, external_pid) = match master {
            MasterSpec::Start(options, count) => {
                let data = work.join("master");
                let config = work.join("master.toml");
                fs::write(&config, master_config(&data, "127.0.0.1:0", &options))?;
                let daemon = spawn(
                    amon,
                    "master",
                    "master",
                    &config,
                    work.join("master.log"),
                    "master_listen",
                )?;
                // Restarts reuse the port the relays know.
                fs::write(&config, master_config(&data, &daemon.addr.to_string(), &options))?;
                if count > 1 {
                    // It leads before the others join.
                    wait_until_leading(&daemon.url())?;
                }
                for m in 1..count {
                    let name = format!("master-{m}");
                    let config = work.join(format!("{name}.toml"));
                    fs::write(&config, master_config(&work.join(&name), "127.0.0.1:0", &options))?;
                    others.push(spawn(
                        amon,
                        "master",
                        &name,
                        &config,
                        work.join(format!("{name}.log")),
                        "master_listen",
                    )?);
                }
                let url = daemon.url();
                (Some(daemon), url, None)
            }
            MasterSpec::External { url, pid } => (None, url.trim_end_matches('/').to_string(), pid),
        };
        let mut cluster = Cluster {
            amon: amon.to_path_buf(),
            work: work.to_path_buf(),
            master: daemon,
            others,
            master_url: master_url.clone(),
            external_pid,
            relays: Vec::new(),
            restarts: 0,
        };
        // Every relay knows every master, the first first.
        let master_urls: Vec<String> = std::iter::once(master_url.clone())
            .chain(cluster.others.iter().map(Daemon::url))
            .collect();
        for r in 0..relays {
            let fifo = work.join(format!("relay-{r}.zones"));
            let (tx, writer) = feed(&fifo)?;
            let config = work.join(format!("relay-{r}.toml"));
            let server = relay_server.get(r).copied().flatten();
            fs::write(
                &config,
                relay_config(&work.join(format!("relay-{r}")), &master_urls, &fifo, server),
            )?;
            let daemon = spawn(
                amon,
                "relay",
                &format!("relay-{r}"),
                &config,
                work.join(format!("relay-{r}.log")),
                "relay_admin_listen",
            )?;
            cluster.relays.push(Relay {
                daemon,
                index: r,
                feed: tx,
                writer: Some(writer),
            });
        }
        Ok(cluster)
    }

    /// SIGKILLs the master and starts it again on the same port and data.
    pub fn restart_master(&mut self) -> anyhow::Result<()> {
        let Some(master) = self.master.as_mut() else {
            bail!("cannot restart a master this harness did not start");
        };
        master.kill();
        self.restarts += 1;
        let log = self.work.join(format!("master.{}.log", self.restarts));
        self.master = Some(spawn(
            &self.amon,
            "master",
            "master",
            &self.work.join("master.toml"),
            log,
            "master_listen",
        )?);
        Ok(())
    }

    pub fn master_url(&self) -> &str {
        &self.master_url
    }

    /// The master's pid, if known (started here, or given).
    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(|m| m.pid()).or(self.external_pid)
    }

    /// The masters' RSS in bytes, all together (0 when unknown).
    pub fn master_rss(&self) -> u64 {
        self.master_pid().and_then(crate::procstat::rss_bytes).unwrap_or(0)
            + self.others.iter().map(|m| m.rss_bytes()).sum::<u64>()
    }

    /// The masters' CPU seconds, all together (0 when unknown).
    pub fn master_cpu(&self) -> f64 {
        self.master_pid().and_then(crate::procstat::cpu_seconds).unwrap_or(0.0)
            + self.others.iter().map(|m| m.cpu_seconds()).sum::<f64>()
    }

    /// Resident memory of every relay together.
    pub fn relays_rss(&self) -> u64 {
        self.relays.iter().map(|r| r.daemon.rss_bytes()).sum()
    }

    pub fn relays_cpu(&self) -> f64 {
        self.relays.iter().map(|r| r.daemon.cpu_seconds()).sum()
    }
}
