//! Configuration in two stages (ripgrep's way): [`RawConfig`] is what serde
//! read from the TOML file and `AMON__SECTION__KEY` environment overrides;
//! [`Settings`] is the validated, typed result every other module uses.
//! A bad value is reported as `key: what is wrong`, and `main` exits 96
//! (`SMF_EXIT_ERR_CONFIG`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

use crate::notify::limit::RateLimit;
use crate::zones::sim::SimConfig;
use crate::zones::LineFormat;

mod secret;
mod smtp;

pub use secret::Secret;
pub use smtp::{SmtpCredentials, SmtpSecurity, SmtpUrl, SmtpUrlError};

/// The exit status SMF reads as "configuration error, do not restart".
pub const EXIT_CONFIG: i32 = 96;

/// Which process we are configuring: defaults differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Master,
    Relay,
    /// `amon agent`: runs probes in a zone or a global zone.
    Agent,
}

/// A configuration value that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

// ---- stage 1: raw, as read ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    datacenter: String,
    data_dir: String,
    master: RawMaster,
    relay: RawRelay,
    notify: RawNotify,
    auth: RawAuth,
    #[serde(default)]
    demo: RawDemo,
    agent: RawAgent,
    probes: RawProbes,
    #[serde(default)]
    store: RawStore,
    cluster: RawCluster,
}

/// `[cluster]`: masters sharing one PostgreSQL store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    lease: String,
}

/// `[store]`: where the master keeps its database. Unset, SQLite in
/// `data_dir` (embedded, nothing to run).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    /// `Secret`: the URL may hold a password.
    #[serde(default)]
    url: Option<Secret>,
    #[serde(default)]
    schema: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    /// No default: an agent must be told whose probes it runs.
    #[serde(default)]
    uuid: Option<String>,
    relay_url: String,
    poll: String,
    queue: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbes {
    min_disk_interval: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaster {
    listen: String,
    #[serde(default)]
    public_url: Option<String>,
    alarm_retention: String,
    event_max_age: String,
    shards: usize,
    ingest_backlog: usize,
    monitor_idle: String,
    event_retention: String,
    machine_retention: String,
    gc_interval: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    #[serde(default)]
    master_url: Option<String>,
    /// Several masters to fail over between; not with `master_url`.
    #[serde(default)]
    master_urls: Option<Vec<String>>,
    #[serde(default)]
    server_uuid: Option<String>,
    admin_listen: String,
    /// `Secret`: a `RawConfig` printed with `{:?}` shows no token.
    #[serde(default)]
    master_token: Option<Secret>,
    #[serde(default)]
    master_token_file: Option<String>,
    agent_listen: String,
    agent_probes_poll: String,
    heartbeat: String,
    batch_max: usize,
    spool_max: usize,
    dead_letter_retention: String,
    zones: RawZones,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZones {
    source: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    list_command: Option<Vec<String>>,
    #[serde(default)]
    meta_command: Option<Vec<String>>,
    meta_refresh: String,
    format: String,
    server_tag: bool,
    sim: RawSim,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSim {
    servers: u32,
    zones_per_server: u32,
    seed: u64,
    reboot_every: String,
    crash_every: String,
    crash_downtime: String,
    server_shutdown_every: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    hold: String,
    workers: usize,
    burst_count: usize,
    burst_percent: u32,
    heartbeat_timeout: String,
    burst_window: String,
    rate_limit: u32,
    rate_window: String,
    max_age: String,
    outbox_retention: String,
    agent_silence: String,
    email: RawEmail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    #[serde(default)]
    smtp_url: Option<String>,
    from: String,
    #[serde(default)]
    username: Option<String>,
    /// `Secret`: a `RawConfig` printed with `{:?}` shows no password.
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    password_file: Option<String>,
    timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    open: bool,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_file: Option<String>,
    role: String,
}

impl std::fmt::Debug for RawToken {
    /// Never print a token, even when the whole raw config is logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawToken")
            .field("token_file", &self.token_file)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemo {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    email: Option<String>,
}

// ---- stage 2: validated ----

fn store_settings(raw: RawStore) -> Result<StoreSettings, ConfigError> {
    let url = raw.url.filter(|u| !u.expose().trim().is_empty());
    let Some(url) = url else {
        if raw.schema.is_some() {
            return Err(ConfigError::new(
                "store.schema",
                "is a PostgreSQL schema: set store.url too (without it the store is SQLite in data_dir)",
            ));
        }
        return Ok(StoreSettings::Sqlite);
    };
    let text = url.expose().trim();
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        return Err(ConfigError::new(
            "store.url",
            "must be a postgres:// or postgresql:// URL (leave it unset for SQLite in data_dir)",
        ));
    }
    // Checked now, so a typo is a config error, not a failed start; the
    // parser's message never repeats the URL.
    if let Err(e) = text.parse::<postgres::Config>() {
        return Err(ConfigError::new("store.url", format!("is not a PostgreSQL URL: {e}")));
    }
    let schema = raw.schema.unwrap_or_else(|| DEFAULT_STORE_SCHEMA.to_string());
    if !crate::store::valid_schema_name(&schema) {
        return Err(ConfigError::new(
            "store.schema",
            "must be lower-case letters, digits and _, not starting with a digit, at most 63 characters",
        ));
    }
    Ok(StoreSettings::Postgres {
        url: Secret::new(text),
        schema,
    })
}

/// Everything a process needs, typed and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// Names the data center in email subjects (`[amon coal]`).
    pub datacenter: String,
    /// Database, spool and `.eml` mail live here.
    pub data_dir: PathBuf,
    pub master: MasterSettings,
    pub relay: RelaySettings,
    pub notify: NotifySettings,
    pub auth: AuthSettings,
    pub demo: DemoSettings,
    pub agent: AgentSettings,
    /// Limits on probe configs, shared by the master (create/update) and
    /// the agent (which checks every config again).
    pub probes: crate::probes::Limits,
    /// Where the master keeps its database.
    pub store: StoreSettings,
    /// `cluster.lease`: how long the lease of the master that runs the
    /// alarm core lasts without renewal (masters on one PostgreSQL store);
    /// a dead leader's core is taken over within it.
    pub cluster_lease: Duration,
}

/// Where the master keeps its database (`[store]`).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSettings {
    /// SQLite in `data_dir` (`amon.sqlite`): the default.
    Sqlite,
    /// A schema of a PostgreSQL database, which several masters may share
    /// (`store.url`, `store.schema`). The URL's `Debug` hides it (it may
    /// hold a password).
    Postgres { url: Secret, schema: String },
}

/// The schema a PostgreSQL store uses when `store.schema` is unset.
pub const DEFAULT_STORE_SCHEMA: &str = "amon";

/// `amon agent`'s settings (the other modes read none of them).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Whose probes this agent runs: the zone's uuid, or the compute node's
    /// for the global zone. Required in agent mode (`None` elsewhere).
    pub uuid: Option<Uuid>,
    /// The relay's agent API (`relay.agent_listen` of the relay).
    pub relay_url: String,
    /// How often the agent asks its relay whether its probe list changed;
    /// each ask also tells the master, through the relay, that the agent
    /// lives (`notify.agent_silence`).
    pub poll: Duration,
    /// Most events waiting for the relay; beyond it the oldest are dropped
    /// (and counted), so an agent cut off from its relay keeps running in
    /// bounded memory.
    pub queue: usize,
}

#[derive(Debug, Clone)]
pub struct MasterSettings {
    pub listen: SocketAddr,
    /// How operators reach the master, for the hints in emails; defaults to
    /// `http://<listen>`.
    pub public_url: Option<String>,
    /// Closed alarms are expunged this long after they closed (then 410).
    pub alarm_retention: Duration,
    /// Probe events older than this are refused (`422 EventTooOld`), as
    /// Amon did; machine and server events from a relay's spool are not.
    pub event_max_age: Duration,
    /// Events are kept this long after they were received, so a second copy
    /// is recognised; older ones are collected, and events whose own time is
    /// older are dropped at ingest (the master could no longer tell a copy).
    /// At least `event_max_age`.
    pub event_retention: Duration,
    /// The flood guard's machines that nobody reported for this long are
    /// forgotten (a deleted zone does not stay listed under its server).
    pub machine_retention: Duration,
    /// How often the janitor collects what is past its retention.
    pub gc_interval: Duration,
    /// Alarm shards, each on its own thread (0: one per core).
    pub shards: usize,
    /// Committed events that may wait to be applied before `POST /events`
    /// answers 503.
    pub ingest_backlog: usize,
    /// How long an alarm actor with nothing to wait for stays in memory.
    pub monitor_idle: Duration,
}

impl MasterSettings {
    /// How many alarm shards to run: as configured, else one per core.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The masters the relay sends to, one at a time, turning to the next
    /// when one is unavailable (`relay.master_urls`, or the one
    /// `relay.master_url`). Empty only in standalone: the relay talks to the
    /// master in the same process.
    pub master_urls: Vec<String>,
    /// `None`: the platform's, else a stable one generated in the data dir.
    pub server_uuid: Option<Uuid>,
    pub admin_listen: SocketAddr,
    /// The bearer token (role `relay`) the relay shows the master, if its
    /// API requires one. Never logged (`Secret`'s Debug hides it).
    pub master_token: Option<Secret>,
    /// Dev mode's TCP listener for the global zone's agent (`None`: off).
    /// On SmartOS agents will use per-zone Unix sockets instead.
    pub agent_listen: Option<SocketAddr>,
    /// How often the agent probe list is refreshed from the master.
    pub agent_probes_poll: Duration,
    pub heartbeat: Duration,
    /// Most events in one `POST /events`.
    pub batch_max: usize,
    /// Most events the spool keeps while the master is away; beyond it new
    /// events are dropped and counted.
    pub spool_max: usize,
    /// Batches the master refused are kept this long in the dead-letter
    /// table, for an operator to look at, then deleted.
    pub dead_letter_retention: Duration,
    pub zones: ZoneSourceSettings,
}

/// Where zone events come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneSourceSettings {
    /// A child process whose stdout is one of the zone formats; before it
    /// starts (and after every restart), `list_command`, when not empty,
    /// prints every zone for a reconciliation snapshot.
    Exec {
        command: Vec<String>,
        format: LineFormat,
        list_command: Vec<String>,
        /// Prints `uuid alias owner_uuid` per zone, run every `meta_refresh`
        /// to keep aliases and owners fresh; empty: never.
        meta_command: Vec<String>,
        meta_refresh: Duration,
        /// Every line of `command` and `list_command` starts with the uuid
        /// of the compute node it is about (one relay carrying several, for
        /// simulators and load tests); only `exec` sources may set it.
        server_tag: bool,
    },
    /// The built-in simulated cloud.
    Sim(SimConfig),
}

#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// A fault is notified only if still open after the hold.
    pub hold: Duration,
    /// Notifier actors delivering in parallel.
    pub workers: usize,
    /// The flood guard: this many machines of one server down within the
    /// hold make a server incident…
    pub burst_count: usize,
    /// …or this percentage of its running machines (at least two)…
    pub burst_percent: u32,
    /// …or this long without a heartbeat from its relay.
    pub heartbeat_timeout: Duration,
    /// The flood guard's burst window: machines of one server going down
    /// within it make a burst. It is also the least delay of a machine-down
    /// notification, so the guard can see a burst before any of its
    /// machines is notified, whatever the hold.
    pub burst_window: Duration,
    /// Per contact: at most this many messages per `rate_window`; beyond,
    /// they are held and sent as one digest (`None`: no limit).
    pub rate_limit: Option<RateLimit>,
    /// Undelivered for this long: dead-lettered.
    pub max_age: Duration,
    /// Delivered and dead-lettered outbox rows are deleted this long after
    /// they were created (pending ones never).
    pub outbox_retention: Duration,
    /// `None`: write `.eml` files under `data_dir/mail`.
    pub smtp_url: Option<String>,
    /// The SMTP login (`notify.email.username` with `password` or
    /// `password_file`); `None`: no AUTH. Its `Debug` hides the password.
    pub smtp_credentials: Option<SmtpCredentials>,
    /// How long one message's whole SMTP exchange may take (connecting
    /// included); a server slower than this gets the message again later.
    pub smtp_timeout: Duration,
    pub from: String,
    /// An agent with enabled probes that has sent nothing (events, or its
    /// polls through its relay) for this long gets a missing-data alarm on
    /// its probes.
    pub agent_silence: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// No tokens required (loopback standalone).
    pub open: bool,
    /// Bearer tokens and their roles (only digests are kept).
    pub tokens: Vec<crate::http::auth::Token>,
}

#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Create a demo account with machine-up probes on the simulated zones.
    pub enabled: bool,
    pub email: String,
}

const ZONEEVENT_PATH: &str = "/usr/vm/sbin/zoneevent";

/// The simulated cloud is for demos and load tests; this is plenty for both.
const MAX_SIM_ZONES: u64 = 10_000_000;

fn defaults(mode: Mode) -> Vec<(&'static str, config::Value)> {
    let data_dir = match mode {
        Mode::Standalone => "./amon-data",
        Mode::Master | Mode::Relay | Mode::Agent => "/var/db/amon",
    };
    let no_command: Vec<String> = Vec::new();
    vec![
        ("datacenter", "coal".into()),
        ("data_dir", data_dir.into()),
        ("master.listen", "127.0.0.1:4300".into()),
        ("master.alarm_retention", "7d".into()),
        ("master.event_max_age", "5m".into()),
        ("master.shards", 0i64.into()),
        ("master.ingest_backlog", 50_000i64.into()),
        ("master.monitor_idle", "60s".into()),
        ("master.event_retention", "7d".into()),
        ("master.machine_retention", "30d".into()),
        ("master.gc_interval", "10m".into()),
        ("cluster.lease", "10s".into()),
        ("relay.admin_listen", "127.0.0.1:4307".into()),
        ("relay.agent_listen", "127.0.0.1:4308".into()),
        ("relay.agent_probes_poll", "30m".into()),
        ("relay.heartbeat", "5s".into()),
        ("relay.batch_max", 1000i64.into()),
        ("relay.spool_max", 1_000_000i64.into()),
        ("relay.dead_letter_retention", "7d".into()),
        ("relay.zones.source", "auto".into()),
        ("relay.zones.command", no_command.into()),
        ("relay.zones.format", "auto".into()),
        ("relay.zones.meta_refresh", "1h".into()),
        ("relay.zones.server_tag", false.into()),
        ("relay.zones.sim.servers", 2i64.into()),
        ("relay.zones.sim.zones_per_server", 10i64.into()),
        ("relay.zones.sim.seed", 1i64.into()),
        ("relay.zones.sim.reboot_every", "30s".into()),
        ("relay.zones.sim.crash_every", "60s".into()),
        ("relay.zones.sim.crash_downtime", "150s".into()),
        ("relay.zones.sim.server_shutdown_every", "10m".into()),
        ("notify.hold", "60s".into()),
        ("notify.workers", 4i64.into()),
        ("notify.burst_count", 5i64.into()),
        ("notify.burst_percent", 50i64.into()),
        ("notify.heartbeat_timeout", "30s".into()),
        ("notify.burst_window", "10s".into()),
        ("notify.rate_limit", 10i64.into()),
        ("notify.rate_window", "10m".into()),
        ("notify.max_age", "24h".into()),
        ("notify.outbox_retention", "7d".into()),
        ("notify.email.from", "amon@localhost".into()),
        ("notify.email.timeout", "60s".into()),
        ("notify.agent_silence", "5m".into()),
        ("agent.relay_url", "http://127.0.0.1:4308".into()),
        ("agent.poll", "30s".into()),
        ("agent.queue", 1000i64.into()),
        ("probes.min_disk_interval", "300s".into()),
        // Open only where it is safe by default: the loopback standalone.
        // A master must say what it wants ([auth] open = true, or tokens).
        ("auth.open", (mode == Mode::Standalone).into()),
    ]
}

/// Reads the file (if any) and the environment, then validates.
///
/// `file` is the `--config` path; a named file that does not exist is an
/// error, no file at all means defaults.
pub fn load(mode: Mode, file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_from(mode, file, std::env::vars())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_from(
    mode: Mode,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let file = match file {
        Some(path) if !path.exists() => {
            return Err(ConfigError::new(
                "--config",
                format!("file {} does not exist", path.display()),
            ))
        }
        Some(path) => Some(config::File::from(path).format(config::FileFormat::Toml)),
        None => None,
    };
    load_source(mode, file, env)
}

/// [`load_from`] with the file's TOML text instead of its path: for the
/// config loader's fuzz target (`fuzz/`), which must not touch the disk for
/// every input. A `password_file` or `*_token_file` it names is still read.
pub fn load_str(
    mode: Mode,
    toml: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    load_source(mode, Some(config::File::from_str(toml, config::FileFormat::Toml)), env)
}

fn load_source<S: config::Source + Send + Sync + 'static>(
    mode: Mode,
    file: Option<S>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder();
    for (key, value) in defaults(mode) {
        builder = builder
            .set_default(key, value)
            .map_err(|e| ConfigError::new(key, e.to_string()))?;
    }
    if let Some(file) = file {
        builder = builder.add_source(file);
    }
    let mut env: std::collections::HashMap<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with("AMON__")).collect();
    let mut verbatim = Vec::new();
    env.retain(
        |name, value| match VERBATIM_ENV.iter().find(|(n, _)| name.eq_ignore_ascii_case(n)) {
            Some((_, key)) => {
                verbatim.push((*key, std::mem::take(value)));
                false
            }
            None => true,
        },
    );
    builder = builder.add_source(
        config::Environment::with_prefix("AMON")
            .prefix_separator("__")
            .separator("__")
            .list_separator(" ")
            .with_list_parse_key("relay.master_urls")
            .with_list_parse_key("relay.zones.command")
            .with_list_parse_key("relay.zones.list_command")
            .with_list_parse_key("relay.zones.meta_command")
            .try_parsing(true)
            .source(Some(env)),
    );
    for (key, value) in verbatim {
        builder = builder
            .set_override(key, value)
            .map_err(|e| ConfigError::new(key, e.to_string()))?;
    }
    let raw: RawConfig = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::new(&config_error_key(&e), e.to_string()))?;
    validate(mode, raw)
}

/// Environment variables taken as they are: `try_parsing` would turn a
/// password such as `007` or `True` into a number or a boolean, and it would
/// reach the SMTP server as `7` or `true`.
const VERBATIM_ENV: &[(&str, &str)] = &[
    ("AMON__NOTIFY__EMAIL__USERNAME", "notify.email.username"),
    ("AMON__NOTIFY__EMAIL__PASSWORD", "notify.email.password"),
    ("AMON__NOTIFY__EMAIL__PASSWORD_FILE", "notify.email.password_file"),
    ("AMON__RELAY__MASTER_TOKEN", "relay.master_token"),
    ("AMON__RELAY__MASTER_TOKEN_FILE", "relay.master_token_file"),
    ("AMON__STORE__URL", "store.url"),
];

/// The key a `config` crate error names, if it names one.
fn config_error_key(error: &config::ConfigError) -> String {
    let text = error.to_string();
    match (text.find("key `"), text.rfind('`')) {
        (Some(start), Some(end)) if end > start + 5 => text[start + 5..end].to_string(),
        _ => "config".to_string(),
    }
}

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| ConfigError::new(key, format!("invalid duration {text:?}: {e}")))
}

/// A duration that must be more than zero (a retention of nothing, or a
/// janitor that never rests, is a mistake, not a wish).
fn positive(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let value = duration(key, text)?;
    if value.is_zero() {
        return Err(ConfigError::new(key, "must be more than zero"));
    }
    Ok(value)
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|e| ConfigError::new(key, format!("invalid socket address {text:?}: {e}")))
}

fn http_url(key: &str, text: &str) -> Result<String, ConfigError> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| {
            ConfigError::new(
                key,
                format!("invalid url {text:?}: must start with http:// or https://"),
            )
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(ConfigError::new(key, format!("invalid url {text:?}: no host")));
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn validate(mode: Mode, raw: RawConfig) -> Result<Settings, ConfigError> {
    if raw.datacenter.trim().is_empty() {
        return Err(ConfigError::new("datacenter", "must not be empty"));
    }
    if raw.data_dir.trim().is_empty() {
        return Err(ConfigError::new("data_dir", "must not be empty"));
    }
    let master = MasterSettings {
        listen: socket_addr("master.listen", &raw.master.listen)?,
        public_url: raw
            .master
            .public_url
            .as_deref()
            .map(|u| http_url("master.public_url", u))
            .transpose()?,
        alarm_retention: duration("master.alarm_retention", &raw.master.alarm_retention)?,
        event_max_age: duration("master.event_max_age", &raw.master.event_max_age)?,
        shards: raw.master.shards,
        ingest_backlog: match raw.master.ingest_backlog {
            0 => return Err(ConfigError::new("master.ingest_backlog", "must be at least 1")),
            n => n,
        },
        monitor_idle: duration("master.monitor_idle", &raw.master.monitor_idle)?,
        event_retention: positive("master.event_retention", &raw.master.event_retention)?,
        machine_retention: positive("master.machine_retention", &raw.master.machine_retention)?,
        gc_interval: positive("master.gc_interval", &raw.master.gc_interval)?,
    };
    // A second copy of an event must find the first still stored: events
    // the ingest rule lets in must be younger than what the janitor keeps.
    if master.event_retention < master.event_max_age {
        return Err(ConfigError::new(
            "master.event_retention",
            format!(
                "must be at least master.event_max_age ({})",
                humantime::format_duration(master.event_max_age)
            ),
        ));
    }
    let master_urls = match (mode, raw.relay.master_url.as_deref(), raw.relay.master_urls.as_deref()) {
        (Mode::Standalone, _, _) => Vec::new(),
        (_, Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "relay.master_urls",
                "set one of them: relay.master_url or relay.master_urls",
            ))
        }
        (_, Some(url), None) => vec![http_url("relay.master_url", url)?],
        (_, None, Some([])) => return Err(ConfigError::new("relay.master_urls", "must not be empty")),
        (_, None, Some(urls)) => urls
            .iter()
            .enumerate()
            .map(|(i, url)| http_url(&format!("relay.master_urls[{i}]"), url))
            .collect::<Result<_, _>>()?,
        (_, None, None) => vec![format!("http://{}", master.listen)],
    };
    let server_uuid = raw
        .relay
        .server_uuid
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            Uuid::parse_str(s).map_err(|e| ConfigError::new("relay.server_uuid", format!("invalid uuid {s:?}: {e}")))
        })
        .transpose()?;
    if raw.relay.spool_max == 0 {
        return Err(ConfigError::new("relay.spool_max", "must be at least 1"));
    }
    if raw.relay.batch_max == 0 {
        return Err(ConfigError::new("relay.batch_max", "must be at least 1"));
    }
    let zones = validate_zones(&raw.relay.zones)?;
    let relay = RelaySettings {
        master_urls,
        server_uuid,
        admin_listen: socket_addr("relay.admin_listen", &raw.relay.admin_listen)?,
        master_token: secret(
            "relay.master_token",
            raw.relay.master_token.as_ref().map(|t| t.expose().to_string()),
            raw.relay.master_token_file.clone(),
        )?
        .map(Secret::new),
        agent_listen: match raw.relay.agent_listen.trim() {
            "" => None,
            text => Some(socket_addr("relay.agent_listen", text)?),
        },
        agent_probes_poll: duration("relay.agent_probes_poll", &raw.relay.agent_probes_poll)?,
        heartbeat: duration("relay.heartbeat", &raw.relay.heartbeat)?,
        batch_max: raw.relay.batch_max,
        spool_max: raw.relay.spool_max,
        dead_letter_retention: positive("relay.dead_letter_retention", &raw.relay.dead_letter_retention)?,
        zones,
    };
    if relay.heartbeat.is_zero() {
        return Err(ConfigError::new("relay.heartbeat", "must be more than zero"));
    }
    if relay.agent_probes_poll.is_zero() {
        return Err(ConfigError::new("relay.agent_probes_poll", "must be more than zero"));
    }
    let smtp_url = raw.notify.email.smtp_url.clone().filter(|u| !u.is_empty());
    if let Some(url) = &smtp_url {
        SmtpUrl::parse(url).map_err(|e| ConfigError::new("notify.email.smtp_url", e.to_string()))?;
    }
    let smtp_credentials = smtp_credentials(&raw.notify.email, smtp_url.is_some())?;
    if !raw.notify.email.from.contains('@') {
        return Err(ConfigError::new(
            "notify.email.from",
            format!("invalid email address {:?}", raw.notify.email.from),
        ));
    }
    if raw.notify.workers == 0 {
        return Err(ConfigError::new("notify.workers", "must be at least 1"));
    }
    if humantime::parse_duration(raw.notify.burst_window.trim()).is_ok_and(|d| d.is_zero()) {
        return Err(ConfigError::new("notify.burst_window", "must be more than zero"));
    }
    if humantime::parse_duration(raw.notify.heartbeat_timeout.trim()).is_ok_and(|d| d.is_zero()) {
        return Err(ConfigError::new("notify.heartbeat_timeout", "must be more than zero"));
    }
    if raw.notify.burst_count < 2 {
        return Err(ConfigError::new("notify.burst_count", "must be at least 2"));
    }
    if !(1..=100).contains(&raw.notify.burst_percent) {
        return Err(ConfigError::new("notify.burst_percent", "must be between 1 and 100"));
    }
    let notify = NotifySettings {
        hold: duration("notify.hold", &raw.notify.hold)?,
        workers: raw.notify.workers,
        burst_count: raw.notify.burst_count,
        burst_percent: raw.notify.burst_percent,
        heartbeat_timeout: duration("notify.heartbeat_timeout", &raw.notify.heartbeat_timeout)?,
        burst_window: duration("notify.burst_window", &raw.notify.burst_window)?,
        rate_limit: match raw.notify.rate_limit {
            0 => None,
            messages => {
                let window = duration("notify.rate_window", &raw.notify.rate_window)?;
                if window.is_zero() {
                    return Err(ConfigError::new("notify.rate_window", "must be more than zero"));
                }
                Some(RateLimit { messages, window })
            }
        },
        max_age: duration("notify.max_age", &raw.notify.max_age)?,
        outbox_retention: positive("notify.outbox_retention", &raw.notify.outbox_retention)?,
        smtp_url,
        smtp_credentials,
        smtp_timeout: positive("notify.email.timeout", &raw.notify.email.timeout)?,
        from: raw.notify.email.from,
        agent_silence: positive("notify.agent_silence", &raw.notify.agent_silence)?,
    };
    let agent = validate_agent(mode, &raw.agent)?;
    let probes = crate::probes::Limits {
        min_disk_interval: positive("probes.min_disk_interval", &raw.probes.min_disk_interval)?,
    };
    let is_sim = matches!(relay.zones, ZoneSourceSettings::Sim(_));
    let store = store_settings(raw.store)?;
    let cluster_lease = duration("cluster.lease", &raw.cluster.lease)?;
    if cluster_lease < Duration::from_secs(1) || cluster_lease > Duration::from_secs(600) {
        return Err(ConfigError::new("cluster.lease", "must be between 1s and 10m"));
    }
    let demo = DemoSettings {
        enabled: mode == Mode::Standalone && raw.demo.enabled.unwrap_or(is_sim),
        email: raw.demo.email.unwrap_or_else(|| "operator@localhost".to_string()),
    };
    Ok(Settings {
        mode,
        datacenter: raw.datacenter,
        data_dir: PathBuf::from(raw.data_dir),
        master,
        relay,
        notify,
        auth: validate_auth(mode, raw.auth)?,
        demo,
        store,
        cluster_lease,
        agent,
        probes,
    })
}

fn validate_agent(mode: Mode, raw: &RawAgent) -> Result<AgentSettings, ConfigError> {
    let uuid = raw
        .uuid
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Uuid::parse_str(s).map_err(|e| ConfigError::new("agent.uuid", format!("invalid uuid {s:?}: {e}"))))
        .transpose()?;
    if mode == Mode::Agent && uuid.is_none() {
        return Err(ConfigError::new(
            "agent.uuid",
            "is required: the zone's uuid, or the compute node's for the global zone",
        ));
    }
    if raw.queue == 0 {
        return Err(ConfigError::new("agent.queue", "must be at least 1"));
    }
    Ok(AgentSettings {
        uuid,
        relay_url: http_url("agent.relay_url", &raw.relay_url)?,
        poll: positive("agent.poll", &raw.poll)?,
        queue: raw.queue,
    })
}

/// The SMTP login: a username with exactly one of `password` (which
/// `AMON__NOTIFY__EMAIL__PASSWORD` sets) and `password_file` (a file holding
/// the password; surrounding whitespace, such as the final newline, is
/// dropped). No error names the password itself.
fn smtp_credentials(raw: &RawEmail, has_smtp_url: bool) -> Result<Option<SmtpCredentials>, ConfigError> {
    let username = raw.username.as_deref().filter(|u| !u.trim().is_empty());
    let password = raw.password.as_ref().filter(|p| !p.is_empty());
    let password_file = raw.password_file.as_deref().filter(|p| !p.trim().is_empty());
    if username.is_none() && password.is_none() && password_file.is_none() {
        return Ok(None);
    }
    if password.is_some() && password_file.is_some() {
        return Err(ConfigError::new(
            "notify.email.password_file",
            "cannot be used together with notify.email.password: set one",
        ));
    }
    let Some(username) = username else {
        let key = if password.is_some() {
            "notify.email.password"
        } else {
            "notify.email.password_file"
        };
        return Err(ConfigError::new(
            "notify.email.username",
            format!("is required when {key} is set"),
        ));
    };
    if !has_smtp_url {
        return Err(ConfigError::new(
            "notify.email.username",
            "is set but notify.email.smtp_url is not: the login is for an SMTP server",
        ));
    }
    let password = match (password, password_file) {
        (Some(password), _) => password.clone(),
        (None, Some(path)) => {
            let key = "notify.email.password_file";
            let path = path.trim();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new(key, format!("cannot read {path:?}: {e}")))?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(ConfigError::new(key, format!("file {path:?} is empty")));
            }
            Secret::new(secret)
        }
        (None, None) => {
            return Err(ConfigError::new(
                "notify.email.password",
                "is required when notify.email.username is set (or set notify.email.password_file)",
            ))
        }
    };
    Ok(Some(SmtpCredentials {
        username: username.to_string(),
        password,
    }))
}

/// A secret given inline or in a file (the file is read now, trimmed).
fn secret(key: &str, inline: Option<String>, file: Option<String>) -> Result<Option<String>, ConfigError> {
    match (inline.filter(|s| !s.is_empty()), file.filter(|f| !f.is_empty())) {
        (Some(_), Some(_)) => Err(ConfigError::new(key, "give the secret or a file holding it, not both")),
        (Some(secret), None) => Ok(Some(secret)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| ConfigError::new(key, format!("cannot read {path}: {e}"))),
        (None, None) => Ok(None),
    }
}

fn validate_auth(mode: Mode, raw: RawAuth) -> Result<AuthSettings, ConfigError> {
    use crate::http::auth::{Role, Token};
    let mut tokens = Vec::new();
    for (i, token) in raw.tokens.into_iter().enumerate() {
        let key = format!("auth.tokens[{i}]");
        let role = Role::parse(&token.role).ok_or_else(|| {
            ConfigError::new(
                &format!("{key}.role"),
                format!(
                    "unknown role {:?}: expected operator, relay or account:<uuid>",
                    token.role
                ),
            )
        })?;
        let secret = secret(&format!("{key}.token"), token.token, token.token_file)?
            .ok_or_else(|| ConfigError::new(&format!("{key}.token"), "token or token_file is required"))?;
        if secret.len() < 16 {
            return Err(ConfigError::new(
                &format!("{key}.token"),
                "must be at least 16 characters (use a random string)",
            ));
        }
        tokens.push(Token::new(&secret, role));
    }
    // Only a master serves the Master API; a relay's APIs are on loopback.
    if mode == Mode::Master && !raw.open && tokens.is_empty() {
        return Err(ConfigError::new(
            "auth.tokens",
            "auth.open is false but no tokens are configured: nobody could use the API",
        ));
    }
    Ok(AuthSettings { open: raw.open, tokens })
}

fn validate_zones(raw: &RawZones) -> Result<ZoneSourceSettings, ConfigError> {
    let format = match raw.format.as_str() {
        "auto" => LineFormat::Auto,
        "zoneevent" => LineFormat::Zoneevent,
        "vmadm" => LineFormat::Vmadm,
        "sysevent" => LineFormat::Sysevent,
        other => {
            return Err(ConfigError::new(
                "relay.zones.format",
                format!("unknown format {other:?}: expected auto, zoneevent, vmadm or sysevent"),
            ))
        }
    };
    let source = match raw.source.as_str() {
        // The platform's tool when it exists, else the simulated cloud.
        "auto" if Path::new(ZONEEVENT_PATH).exists() => "zoneevent",
        "auto" => "sim",
        other => other,
    };
    let strings = |words: &[&str]| words.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // zoneevent and sysevent say nothing about zones that do not change, so
    // reconciliation lists them; vmadm's ready event carries the snapshot.
    let zoneadm = strings(&["/usr/sbin/zoneadm", "list", "-cp"]);
    let list_command = |default: Vec<String>| raw.list_command.clone().unwrap_or(default);
    let vmadm_list = strings(&["/usr/sbin/vmadm", "list", "-H", "-o", "uuid,alias,owner_uuid"]);
    let meta_command = |default: Vec<String>| raw.meta_command.clone().unwrap_or(default);
    let meta_refresh = duration("relay.zones.meta_refresh", &raw.meta_refresh)?;
    if meta_refresh.is_zero() {
        return Err(ConfigError::new("relay.zones.meta_refresh", "must be more than zero"));
    }
    let platform = |command: &[&str], format, list: Vec<String>| ZoneSourceSettings::Exec {
        command: strings(command),
        format,
        list_command: list_command(list),
        meta_command: meta_command(vmadm_list.clone()),
        meta_refresh,
        server_tag: false,
    };
    // The platform's tools never tag their lines; a tag would make every
    // line malformed, or the simulated cloud would silently ignore it.
    if raw.server_tag && source != "exec" {
        return Err(ConfigError::new(
            "relay.zones.server_tag",
            format!("applies only when relay.zones.source is \"exec\", not {source:?}"),
        ));
    }
    Ok(match source {
        "exec" => {
            if raw.command.is_empty() {
                return Err(ConfigError::new(
                    "relay.zones.command",
                    "is required when relay.zones.source is \"exec\"",
                ));
            }
            ZoneSourceSettings::Exec {
                command: raw.command.clone(),
                format,
                list_command: list_command(Vec::new()),
                meta_command: meta_command(Vec::new()),
                meta_refresh,
                server_tag: raw.server_tag,
            }
        }
        "zoneevent" => platform(&[ZONEEVENT_PATH, "-i", "amon-relay"], LineFormat::Zoneevent, zoneadm),
        "vmadm" => platform(
            &["/usr/sbin/vmadm", "events", "-j", "-r"],
            LineFormat::Vmadm,
            Vec::new(),
        ),
        "sysevent" => platform(
            &["/usr/sbin/sysevent", "-j", "-r", "-c", "com.sun:zones:status", "status"],
            LineFormat::Sysevent,
            zoneadm,
        ),
        "sim" if u64::from(raw.sim.servers) * u64::from(raw.sim.zones_per_server) > MAX_SIM_ZONES => {
            return Err(ConfigError::new(
                "relay.zones.sim.zones_per_server",
                format!("servers × zones_per_server must be at most {MAX_SIM_ZONES}"),
            ))
        }
        "sim" => ZoneSourceSettings::Sim(SimConfig {
            servers: raw.sim.servers,
            zones_per_server: raw.sim.zones_per_server,
            seed: raw.sim.seed,
            reboot_every: duration("relay.zones.sim.reboot_every", &raw.sim.reboot_every)?,
            crash_every: duration("relay.zones.sim.crash_every", &raw.sim.crash_every)?,
            crash_downtime: duration("relay.zones.sim.crash_downtime", &raw.sim.crash_downtime)?,
            server_shutdown_every: duration("relay.zones.sim.server_shutdown_every", &raw.sim.server_shutdown_every)?,
        }),
        other => {
            return Err(ConfigError::new(
                "relay.zones.source",
                format!("unknown source {other:?}: expected auto, exec, zoneevent, vmadm, sysevent or sim"),
            ))
        }
    })
}

#[cfg(test)]
mod tests {

    mod hostile {
        use proptest::prelude::*;

        use super::super::*;

        /// TOML-ish text: keys of ours, any values, and plain garbage.
        fn config_text() -> impl Strategy<Value = String> {
            let keys = prop::sample::select(vec![
                "datacenter",
                "data_dir",
                "[master]\nlisten",
                "[master]\nshards",
                "[master]\ningest_backlog",
                "[master]\nevent_retention",
                "[notify]\nhold",
                "[notify]\nrate_limit",
                "[relay]\nmaster_url",
                "[relay]\nmaster_urls",
                "[relay.zones]\ncommand",
                "[auth]\ntokens",
            ]);
            let value = prop_oneof![
                "[ -~]{0,20}".prop_map(|v| format!("{v:?}")),
                any::<i64>().prop_map(|v| v.to_string()),
                any::<f64>().prop_map(|v| v.to_string()),
                Just("[1, \"a\", {x = 1}]".to_string()),
                Just("true".to_string()),
                "\\PC{0,30}",
            ];
            prop_oneof![
                prop::collection::vec((keys, value), 0..6)
                    .prop_map(|pairs| pairs.into_iter().map(|(k, v)| format!("{k} = {v}\n")).collect()),
                "\\PC{0,200}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// No configuration file, however broken, panics the loader: it
            /// is settings or an error naming a key.
            #[test]
            fn any_config_file_is_settings_or_an_error(text in config_text()) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("amon.toml");
                std::fs::write(&path, &text).unwrap();
                for mode in [Mode::Master, Mode::Relay, Mode::Standalone, Mode::Agent] {
                    let _ = load_from(mode, Some(&path), Vec::new());
                }
            }

            /// Nor does any value in the environment.
            #[test]
            fn any_environment_value_is_settings_or_an_error(value in "\\PC{0,40}") {
                for key in ["AMON__MASTER__SHARDS", "AMON__NOTIFY__HOLD", "AMON__RELAY__ZONES__COMMAND", "AMON__MASTER__LISTEN"] {
                    let _ = load_from(Mode::Standalone, None, vec![(key.to_string(), value.clone())]);
                }
            }
        }
    }

    use super::*;

    /// The environment of a test; an open API unless the test says (a
    /// master is closed by default and would want tokens).
    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if !env.iter().any(|(k, _)| k == "AMON__AUTH__OPEN") {
            env.push(("AMON__AUTH__OPEN".into(), "true".into()));
        }
        env
    }

    #[test]
    fn the_store_is_sqlite_unless_a_postgres_url_is_set_and_its_password_is_never_shown() {
        let s = load_from(Mode::Master, None, env(&[])).unwrap();
        assert_eq!(s.store, StoreSettings::Sqlite);

        let url = "postgres://amon:hunter2@db.example:5432/amon";
        let s = load_from(Mode::Master, None, env(&[("AMON__STORE__URL", url)])).unwrap();
        let StoreSettings::Postgres { url: got, schema } = &s.store else {
            panic!("{:?}", s.store)
        };
        assert_eq!(got.expose(), url);
        assert_eq!(schema, DEFAULT_STORE_SCHEMA);
        assert!(
            !format!("{s:?}").contains("hunter2"),
            "the settings' Debug shows the password"
        );

        let s = load_str(
            Mode::Master,
            "[auth]\nopen = true\n[store]\nurl = \"postgresql://db/amon\"\nschema = \"amon_east\"\n",
            Vec::new(),
        )
        .unwrap();
        assert!(matches!(&s.store, StoreSettings::Postgres { schema, .. } if schema == "amon_east"));
    }

    #[test]
    fn a_bad_store_setting_is_an_error_naming_it() {
        for (pairs, key, says) in [
            (
                vec![("AMON__STORE__URL", "mysql://db/amon")],
                "store.url",
                "postgres://",
            ),
            (
                vec![("AMON__STORE__URL", "postgres://db:notaport/amon")],
                "store.url",
                "not a PostgreSQL URL",
            ),
            (
                vec![
                    ("AMON__STORE__URL", "postgres://db/amon"),
                    ("AMON__STORE__SCHEMA", "Amon-East"),
                ],
                "store.schema",
                "lower-case",
            ),
            (vec![("AMON__STORE__SCHEMA", "amon")], "store.schema", "set store.url"),
        ] {
            let err = load_from(Mode::Master, None, env(&pairs)).unwrap_err();
            assert_eq!(err.key, key, "{pairs:?}: {err}");
            assert!(err.to_string().contains(says), "{pairs:?}: {err}");
            assert!(!err.to_string().contains("notaport@"), "{err}");
        }
    }

    #[test]
    fn standalone_without_a_file_is_a_demo_on_the_simulated_cloud() {
        let s = load_from(Mode::Standalone, None, env(&[])).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("./amon-data"));
        assert!(s.demo.enabled);
        assert_eq!(s.notify.hold, Duration::from_secs(60));
        assert!(s.relay.master_urls.is_empty());
        if !Path::new(ZONEEVENT_PATH).exists() {
            assert!(matches!(s.relay.zones, ZoneSourceSettings::Sim(_)));
        }
    }

    #[test]
    fn the_burst_window_is_ten_seconds_by_default_and_never_zero() {
        let s = load_from(Mode::Master, None, env(&[])).unwrap();
        assert_eq!(s.notify.burst_window, Duration::from_secs(10));
        let s = load_from(Mode::Master, None, env(&[("AMON__NOTIFY__BURST_WINDOW", "3s")])).unwrap();
        assert_eq!(s.notify.burst_window, Duration::from_secs(3));
        let err = load_from(Mode::Master, None, env(&[("AMON__NOTIFY__BURST_WINDOW", "0s")])).unwrap_err();
        assert_eq!(err.key, "notify.burst_window");
    }

    #[test]
    fn environment_overrides_name_section_and_key() {
        let s = load_from(
            Mode::Relay,
            None,
            env(&[
                ("AMON__MASTER__LISTEN", "127.0.0.1:9999"),
                ("AMON__NOTIFY__HOLD", "2s"),
                ("AMON__RELAY__ZONES__SOURCE", "exec"),
                ("AMON__RELAY__ZONES__COMMAND", "tail -F /tmp/z"),
            ]),
        )
        .unwrap();
        assert_eq!(s.master.listen.port(), 9999);
        assert_eq!(s.notify.hold, Duration::from_secs(2));
        assert_eq!(s.relay.master_urls, ["http://127.0.0.1:9999"]);
        assert_eq!(
            s.relay.zones,
            ZoneSourceSettings::Exec {
                command: vec!["tail".into(), "-F".into(), "/tmp/z".into()],
                format: LineFormat::Auto,
                list_command: Vec::new(),
                meta_command: Vec::new(),
                meta_refresh: Duration::from_secs(3600),
                server_tag: false,
            }
        );
    }

    #[test]
    fn a_relay_takes_several_master_urls_from_the_file_or_the_environment() {
        let s = load_str(
            Mode::Relay,
            "[relay]\nmaster_urls = [\"http://a:4300/\", \"https://b:4300\"]\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(s.relay.master_urls, ["http://a:4300", "https://b:4300"]);

        // As `relay.zones.command`: space-separated.
        let s = load_from(
            Mode::Relay,
            None,
            env(&[("AMON__RELAY__MASTER_URLS", "http://a:4300 http://b:4300")]),
        )
        .unwrap();
        assert_eq!(s.relay.master_urls, ["http://a:4300", "http://b:4300"]);

        // One URL is a list of one, whichever key says it.
        let s = load_from(Mode::Relay, None, env(&[("AMON__RELAY__MASTER_URL", "http://a:4300")])).unwrap();
        assert_eq!(s.relay.master_urls, ["http://a:4300"]);
        let s = load_from(Mode::Relay, None, env(&[("AMON__RELAY__MASTER_URLS", "http://a:4300")])).unwrap();
        assert_eq!(s.relay.master_urls, ["http://a:4300"]);

        // Standalone's relay talks to its own master, whatever is set.
        let s = load_from(
            Mode::Standalone,
            None,
            env(&[("AMON__RELAY__MASTER_URLS", "http://a:4300")]),
        )
        .unwrap();
        assert!(s.relay.master_urls.is_empty());
    }

    #[test]
    fn master_urls_is_not_empty_not_beside_master_url_and_each_is_an_http_url() {
        let err = load_str(
            Mode::Relay,
            "[relay]\nmaster_url = \"http://a:4300\"\nmaster_urls = [\"http://b:4300\"]\n",
            env(&[]),
        )
        .unwrap_err();
        assert_eq!(err.key, "relay.master_urls", "{err}");
        assert!(err.to_string().contains("set one of them"), "{err}");

        let err = load_from(
            Mode::Relay,
            None,
            env(&[
                ("AMON__RELAY__MASTER_URL", "http://a:4300"),
                ("AMON__RELAY__MASTER_URLS", "http://b:4300"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.key, "relay.master_urls", "{err}");

        let err = load_str(Mode::Relay, "[relay]\nmaster_urls = []\n", env(&[])).unwrap_err();
        assert_eq!(err.key, "relay.master_urls", "{err}");
        assert!(err.to_string().contains("must not be empty"), "{err}");

        let err = load_str(
            Mode::Relay,
            "[relay]\nmaster_urls = [\"http://a:4300\", \"b:4300\"]\n",
            env(&[]),
        )
        .unwrap_err();
        assert_eq!(err.key, "relay.master_urls[1]", "{err}");
        assert!(err.to_string().contains("must start with http://"), "{err}");

        let err = load_from(Mode::Relay, None, env(&[("AMON__RELAY__MASTER_URL", "ftp://a")])).unwrap_err();
        assert_eq!(err.key, "relay.master_url", "{err}");
    }

    #[test]
    fn server_tags_are_off_by_default_and_only_for_an_exec_source() {
        let exec = [
            ("AMON__RELAY__ZONES__SOURCE", "exec"),
            ("AMON__RELAY__ZONES__COMMAND", "tail -F /tmp/z"),
        ];
        let server_tag = |pairs: &[(&str, &str)]| match load_from(Mode::Relay, None, env(pairs)).unwrap().relay.zones {
            ZoneSourceSettings::Exec { server_tag, .. } => server_tag,
            other => panic!("expected an exec source, got {other:?}"),
        };
        assert!(!server_tag(&exec));
        let mut tagged = exec.to_vec();
        tagged.push(("AMON__RELAY__ZONES__SERVER_TAG", "true"));
        assert!(server_tag(&tagged));

        for source in ["sim", "vmadm"] {
            let err = load_from(
                Mode::Relay,
                None,
                env(&[
                    ("AMON__RELAY__ZONES__SOURCE", source),
                    ("AMON__RELAY__ZONES__SERVER_TAG", "true"),
                ]),
            )
            .unwrap_err();
            assert_eq!(err.key, "relay.zones.server_tag", "{err}");
            assert!(err.to_string().contains(source), "{err}");
        }
        let err = load_from(
            Mode::Relay,
            None,
            env(&[
                ("AMON__RELAY__ZONES__SOURCE", "exec"),
                ("AMON__RELAY__ZONES__COMMAND", "cat"),
                ("AMON__RELAY__ZONES__SERVER_TAG", "sometimes"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.key, "relay.zones.server_tag", "{err}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = load_from(Mode::Master, None, env(&[("AMON__MASTER__LISTEN", "nowhere")])).unwrap_err();
        assert_eq!(err.key, "master.listen");
        assert!(
            err.to_string()
                .starts_with("master.listen: invalid socket address \"nowhere\""),
            "{err}"
        );

        let err = load_from(Mode::Master, None, env(&[("AMON__NOTIFY__HOLD", "soon")])).unwrap_err();
        assert_eq!(err.key, "notify.hold");
    }

    #[test]
    fn a_file_is_read_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amon.toml");
        std::fs::write(&path, "datacenter = \"us-east-1\"\n[notify]\nhold = \"5s\"\n").unwrap();
        let s = load_from(Mode::Master, Some(&path), env(&[])).unwrap();
        assert_eq!(s.datacenter, "us-east-1");
        assert_eq!(s.notify.hold, Duration::from_secs(5));

        std::fs::write(&path, "[master]\nlisen = \"x\"\n").unwrap();
        let err = load_from(Mode::Master, Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn the_agent_listener_defaults_to_loopback_and_an_empty_value_turns_it_off() {
        let s = load_from(Mode::Relay, None, env(&[])).unwrap();
        assert_eq!(s.relay.agent_listen, Some("127.0.0.1:4308".parse().unwrap()));
        assert_eq!(s.relay.agent_probes_poll, Duration::from_secs(30 * 60));

        let s = load_from(
            Mode::Relay,
            None,
            env(&[
                ("AMON__RELAY__AGENT_LISTEN", ""),
                ("AMON__RELAY__AGENT_PROBES_POLL", "2s"),
            ]),
        )
        .unwrap();
        assert_eq!(s.relay.agent_listen, None);
        assert_eq!(s.relay.agent_probes_poll, Duration::from_secs(2));

        let err = load_from(Mode::Relay, None, env(&[("AMON__RELAY__AGENT_PROBES_POLL", "0s")])).unwrap_err();
        assert_eq!(err.key, "relay.agent_probes_poll");
        let err = load_from(Mode::Relay, None, env(&[("AMON__RELAY__AGENT_LISTEN", "4308")])).unwrap_err();
        assert_eq!(err.key, "relay.agent_listen");
    }

    #[test]
    fn an_agent_needs_its_uuid_and_takes_its_relay_poll_and_queue() {
        let err = load_from(Mode::Agent, None, env(&[])).unwrap_err();
        assert_eq!(err.key, "agent.uuid");
        let uuid = "0f6a1f4e-5d2b-4c1a-9e43-2b1f2a3c4d5e";
        let s = load_from(Mode::Agent, None, env(&[("AMON__AGENT__UUID", uuid)])).unwrap();
        assert_eq!(s.agent.uuid, Some(Uuid::parse_str(uuid).unwrap()));
        assert_eq!(s.agent.relay_url, "http://127.0.0.1:4308");
        assert_eq!(s.agent.poll, Duration::from_secs(30));
        assert_eq!(s.agent.queue, 1000);
        assert_eq!(s.probes.min_disk_interval, Duration::from_secs(300));
        let bad = |pairs: &[(&str, &str)]| {
            let mut all = vec![("AMON__AGENT__UUID", uuid)];
            all.extend_from_slice(pairs);
            load_from(Mode::Agent, None, env(&all)).unwrap_err().key
        };
        assert_eq!(bad(&[("AMON__AGENT__UUID", "zone-1")]), "agent.uuid");
        assert_eq!(bad(&[("AMON__AGENT__POLL", "0s")]), "agent.poll");
        assert_eq!(bad(&[("AMON__AGENT__QUEUE", "0")]), "agent.queue");
        assert_eq!(bad(&[("AMON__AGENT__RELAY_URL", "127.0.0.1:4308")]), "agent.relay_url");
        // The other modes need no agent uuid.
        assert_eq!(load_from(Mode::Relay, None, env(&[])).unwrap().agent.uuid, None);
    }

    #[test]
    fn the_master_takes_the_agent_silence_and_the_probe_limits() {
        let s = load_from(Mode::Master, None, env(&[("AMON__AUTH__OPEN", "true")])).unwrap();
        assert_eq!(s.notify.agent_silence, Duration::from_secs(300));
        let s = load_from(
            Mode::Standalone,
            None,
            env(&[
                ("AMON__NOTIFY__AGENT_SILENCE", "3s"),
                ("AMON__PROBES__MIN_DISK_INTERVAL", "1s"),
            ]),
        )
        .unwrap();
        assert_eq!(s.notify.agent_silence, Duration::from_secs(3));
        assert_eq!(s.probes.min_disk_interval, Duration::from_secs(1));
        let err = load_from(Mode::Standalone, None, env(&[("AMON__NOTIFY__AGENT_SILENCE", "0s")])).unwrap_err();
        assert_eq!(err.key, "notify.agent_silence");
    }

    #[test]
    fn smtp_urls_are_checked_when_the_config_is_read() {
        for url in [
            "smtp://127.0.0.1",
            "smtp://mail.example.com:587?tls=starttls",
            "smtps://mail.example.com",
        ] {
            let s = load_from(Mode::Master, None, env(&[("AMON__NOTIFY__EMAIL__SMTP_URL", url)])).unwrap();
            assert_eq!(s.notify.smtp_url.as_deref(), Some(url));
            assert_eq!(s.notify.smtp_credentials, None);
        }
        for url in ["http://mail.example.com", "smtp://mail.example.com?tls=yes"] {
            let err = load_from(Mode::Master, None, env(&[("AMON__NOTIFY__EMAIL__SMTP_URL", url)])).unwrap_err();
            assert_eq!(err.key, "notify.email.smtp_url", "{err}");
        }
    }

    #[test]
    fn the_smtp_login_comes_from_the_file_or_the_environment_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amon.toml");
        std::fs::write(
            &path,
            "[notify.email]\nsmtp_url = \"smtps://mail.example.com\"\nusername = \"amon\"\npassword = \"s3cret\"\n",
        )
        .unwrap();
        let s = load_from(Mode::Master, Some(&path), env(&[])).unwrap();
        let credentials = s.notify.smtp_credentials.clone().unwrap();
        assert_eq!(credentials.username, "amon");
        assert_eq!(credentials.password.expose(), "s3cret");
        let shown = format!("{s:?}");
        assert!(shown.contains("<redacted>") && !shown.contains("s3cret"), "{shown}");

        // The environment wins, and a password that looks like a number or a
        // boolean arrives as typed.
        for password in ["007", "True", "1e3", "s3cret with spaces"] {
            let s = load_from(
                Mode::Master,
                Some(&path),
                env(&[
                    ("AMON__NOTIFY__EMAIL__PASSWORD", password),
                    ("AMON__NOTIFY__EMAIL__USERNAME", "0042"),
                ]),
            )
            .unwrap();
            let credentials = s.notify.smtp_credentials.unwrap();
            assert_eq!(credentials.password.expose(), password);
            assert_eq!(credentials.username, "0042");
        }
    }

    #[test]
    fn the_smtp_password_can_live_in_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("smtp-password");
        std::fs::write(&secret, "  s3cret\n").unwrap();
        let base = [
            ("AMON__NOTIFY__EMAIL__SMTP_URL", "smtp://127.0.0.1?tls=starttls"),
            ("AMON__NOTIFY__EMAIL__USERNAME", "amon"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            load_from(Mode::Master, None, env(&pairs))
        };
        let s = with(&[("AMON__NOTIFY__EMAIL__PASSWORD_FILE", secret.to_str().unwrap())]).unwrap();
        assert_eq!(s.notify.smtp_credentials.unwrap().password.expose(), "s3cret");

        let missing = dir.path().join("nope");
        let err = with(&[("AMON__NOTIFY__EMAIL__PASSWORD_FILE", missing.to_str().unwrap())]).unwrap_err();
        assert_eq!(err.key, "notify.email.password_file");
        assert!(err.to_string().contains("cannot read"), "{err}");

        std::fs::write(&secret, "\n").unwrap();
        let err = with(&[("AMON__NOTIFY__EMAIL__PASSWORD_FILE", secret.to_str().unwrap())]).unwrap_err();
        assert_eq!(err.key, "notify.email.password_file");
        assert!(err.to_string().contains("empty"), "{err}");

        let err = with(&[
            ("AMON__NOTIFY__EMAIL__PASSWORD_FILE", secret.to_str().unwrap()),
            ("AMON__NOTIFY__EMAIL__PASSWORD", "s3cret"),
        ])
        .unwrap_err();
        assert_eq!(err.key, "notify.email.password_file");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn half_an_smtp_login_is_an_error_naming_the_missing_key() {
        let url = ("AMON__NOTIFY__EMAIL__SMTP_URL", "smtps://mail.example.com");
        let err = load_from(
            Mode::Master,
            None,
            env(&[url, ("AMON__NOTIFY__EMAIL__USERNAME", "amon")]),
        )
        .unwrap_err();
        assert_eq!(err.key, "notify.email.password", "{err}");

        let err = load_from(
            Mode::Master,
            None,
            env(&[url, ("AMON__NOTIFY__EMAIL__PASSWORD", "s3cret")]),
        )
        .unwrap_err();
        assert_eq!(err.key, "notify.email.username", "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");

        let err = load_from(
            Mode::Master,
            None,
            env(&[
                ("AMON__NOTIFY__EMAIL__USERNAME", "amon"),
                ("AMON__NOTIFY__EMAIL__PASSWORD", "s3cret"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.key, "notify.email.username", "{err}");
        assert!(err.to_string().contains("smtp_url"), "{err}");
    }

    #[test]
    fn a_master_is_closed_by_default_and_a_standalone_open() {
        let err = load_from(Mode::Master, None, vec![]).unwrap_err();
        assert_eq!(err.key, "auth.tokens");
        assert!(load_from(Mode::Standalone, None, vec![]).unwrap().auth.open);
        let s = load_from(
            Mode::Master,
            None,
            vec![("AMON__AUTH__OPEN".to_string(), "false".to_string())],
        );
        assert!(s.is_err(), "closed without tokens is refused");
    }

    #[test]
    fn retention_keeps_a_week_of_events_and_outbox_a_month_of_machines_by_default() {
        let s = load_from(Mode::Standalone, None, env(&[])).unwrap();
        const DAY: u64 = 24 * 3600;
        assert_eq!(s.master.event_retention, Duration::from_secs(7 * DAY));
        assert_eq!(s.master.machine_retention, Duration::from_secs(30 * DAY));
        assert_eq!(s.master.gc_interval, Duration::from_secs(600));
        assert_eq!(s.notify.outbox_retention, Duration::from_secs(7 * DAY));
        assert_eq!(s.relay.dead_letter_retention, Duration::from_secs(7 * DAY));
    }

    #[test]
    fn event_retention_shorter_than_event_max_age_is_refused() {
        let s = load_from(
            Mode::Master,
            None,
            env(&[
                ("AMON__MASTER__EVENT_RETENTION", "2s"),
                ("AMON__MASTER__EVENT_MAX_AGE", "2s"),
            ]),
        )
        .unwrap();
        assert_eq!(s.master.event_retention, Duration::from_secs(2));
        let err = load_from(
            Mode::Master,
            None,
            env(&[
                ("AMON__MASTER__EVENT_RETENTION", "1m"),
                ("AMON__MASTER__EVENT_MAX_AGE", "5m"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.key, "master.event_retention", "{err}");
        assert!(err.to_string().contains("master.event_max_age (5m)"), "{err}");
    }

    #[test]
    fn retentions_and_the_gc_interval_are_never_zero() {
        for (var, key) in [
            ("AMON__MASTER__EVENT_RETENTION", "master.event_retention"),
            ("AMON__MASTER__MACHINE_RETENTION", "master.machine_retention"),
            ("AMON__MASTER__GC_INTERVAL", "master.gc_interval"),
            ("AMON__NOTIFY__OUTBOX_RETENTION", "notify.outbox_retention"),
            ("AMON__RELAY__DEAD_LETTER_RETENTION", "relay.dead_letter_retention"),
        ] {
            let err = load_from(Mode::Standalone, None, env(&[(var, "0s")])).unwrap_err();
            assert_eq!(err.key, key, "{err}");
            let err = load_from(Mode::Standalone, None, env(&[(var, "a while")])).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }

    #[test]
    fn the_smtp_timeout_is_a_minute_by_default_and_never_zero() {
        let s = load_from(Mode::Master, None, env(&[("AMON__AUTH__OPEN", "true")])).unwrap();
        assert_eq!(s.notify.smtp_timeout, Duration::from_secs(60));
        let s = load_from(
            Mode::Master,
            None,
            env(&[("AMON__AUTH__OPEN", "true"), ("AMON__NOTIFY__EMAIL__TIMEOUT", "5s")]),
        )
        .unwrap();
        assert_eq!(s.notify.smtp_timeout, Duration::from_secs(5));
        for bad in ["0s", "soon"] {
            let err = load_from(Mode::Standalone, None, env(&[("AMON__NOTIFY__EMAIL__TIMEOUT", bad)])).unwrap_err();
            assert_eq!(err.key, "notify.email.timeout", "{err}");
        }
    }

    #[test]
    fn a_missing_named_file_is_an_error() {
        let err = load_from(Mode::Master, Some(Path::new("/nonexistent/amon.toml")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }

    /// The fuzz target's entry point reads text as the loader reads a file.
    #[test]
    fn text_loads_as_the_same_file_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amon.toml");
        let good = "datacenter = \"us-east-1\"\n[notify]\nhold = \"5s\"\n";
        std::fs::write(&path, good).unwrap();
        let from_file = load_from(Mode::Master, Some(&path), env(&[])).unwrap();
        let from_text = load_str(Mode::Master, good, env(&[])).unwrap();
        assert_eq!(from_text.datacenter, from_file.datacenter);
        assert_eq!(from_text.notify.hold, from_file.notify.hold);
        let bad = "[master]\nlisen = \"x\"\n";
        std::fs::write(&path, bad).unwrap();
        let from_file = load_from(Mode::Master, Some(&path), env(&[])).unwrap_err();
        let from_text = load_str(Mode::Master, bad, env(&[])).unwrap_err();
        assert_eq!(from_text.key, from_file.key);
    }
}
