//! Wiring: builds the supervision tree of `amon standalone`, `master` or
//! `relay` from validated settings and already-bound listeners, and runs it
//! until a shutdown signal or an escalation (SIGHUP handling is in `main`).
//!
//! ```text
//! amon (root)
//! ├── master                      (master, standalone)
//! │   ├── notifier pool ── notifiers (one per worker)
//! │   ├── maintenance keeper
//! │   ├── server guard (flood guard)
//! │   ├── event router ── alarm shards (one per core) ── alarm actors (one per monitor)
//! │   ├── janitor                 (deletes what is past its retention)
//! │   └── master http
//! └── relay                       (relay, standalone)
//!     ├── relay link
//!     ├── agent probe cache
//!     ├── zone dispatcher ── zone watchers (one per zone)
//!     ├── zone source (exec | sim)
//!     ├── relay admin http
//!     └── relay agent http        (when relay.agent_listen is set)
//! amon (root)                     (agent)
//! └── agent
//!     ├── event sender            (bounded queue to the relay's POST /events)
//!     ├── probe supervisor ── probe actors (one per probe)
//!     └── probe poller            (HEAD|GET /agentprobes every agent.poll)
//! ```

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use uuid::Uuid;

use crate::actors::agent_probes::AgentProbeCache;
use crate::actors::agent_watch::{AgentWatch, AgentWatchEnv};
use crate::actors::alarm::AlarmEnv;
use crate::actors::cluster::{ClusterView, Leadership, LeadershipEnv};
use crate::actors::http_service::{HttpService, ServeFn};
use crate::actors::janitor::{Janitor, JanitorEnv, Retention};
use crate::actors::maintenance::{KeeperEnv, Maintenance, MaintenanceKeeper};
use crate::actors::notifier::{NotifierEnv, NotifierPool};
use crate::actors::relay_link::{RelayLink, RelayLinkConfig};
use crate::actors::router::{Backlog, EventRouter};
use crate::actors::server_guard::{GuardEnv, GuardSettings, ServerGuard};
use crate::actors::shard::AlarmShard;
use crate::actors::supervisor::{ChildSpec, Named, Restart, RestartPolicy, Shutdown, Supervisor};
use crate::actors::zone_source::{ExecCommands, ExecSource, SimSource};
use crate::actors::zone_watcher::{WatcherEnv, ZoneDispatcher};
use crate::catalog::SharedCatalog;
use crate::clock::Clock;
use crate::config::{Mode, Settings, ZoneSourceSettings};
use crate::http::master::MasterApi;
use crate::http::relay_admin::RelayAdminApi;
use crate::http::relay_agent::RelayAgentApi;
use crate::http::server::Shape;
use crate::model::{Account, Probe, ProbeType};
use crate::notify::transport::Mailer;
use crate::store::{RelayStore, Store};
use crate::zones::sim::SimCloud;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot set up mail: {0}")]
    Mail(String),
    #[error("cannot set up the demo: {0}")]
    Demo(String),
}

/// The sockets a process serves on, bound before anything starts.
pub struct Listeners {
    pub master: Option<TcpListener>,
    pub relay_admin: Option<TcpListener>,
    /// Dev mode's agent API (`relay.agent_listen`), if configured.
    pub relay_agent: Option<TcpListener>,
}

impl Listeners {
    /// The same sockets again (a reload serves on the ones already bound).
    pub fn try_clone(&self) -> std::io::Result<Listeners> {
        let clone = |l: &Option<TcpListener>| l.as_ref().map(TcpListener::try_clone).transpose();
        Ok(Listeners {
            master: clone(&self.master)?,
            relay_admin: clone(&self.relay_admin)?,
            relay_agent: clone(&self.relay_agent)?,
        })
    }

    pub fn bind(settings: &Settings) -> Result<Listeners, DaemonError> {
        let bind =
            |what, addr: SocketAddr| TcpListener::bind(addr).map_err(|source| DaemonError::Bind { what, addr, source });
        Ok(Listeners {
            master: match settings.mode {
                Mode::Standalone | Mode::Master => Some(bind("master.listen", settings.master.listen)?),
                Mode::Relay | Mode::Agent => None,
            },
            relay_admin: match settings.mode {
                Mode::Standalone | Mode::Relay => Some(bind("relay.admin_listen", settings.relay.admin_listen)?),
                Mode::Master | Mode::Agent => None,
            },
            relay_agent: match (settings.mode, settings.relay.agent_listen) {
                (Mode::Standalone | Mode::Relay, Some(addr)) => Some(bind("relay.agent_listen", addr)?),
                _ => None,
            },
        })
    }
}

/// A running process: its root supervisor.
pub struct Running {
    pub root: Addr<Supervisor>,
    /// Where the Master API listens (`None` for a relay).
    pub master_addr: Option<SocketAddr>,
    /// Where the relay admin API listens (`None` for a master).
    pub relay_admin_addr: Option<SocketAddr>,
    /// Where the relay's agent API listens (`None` for a master, or when off).
    pub relay_agent_addr: Option<SocketAddr>,
}

impl Running {
    /// Stops every actor in reverse start order.
    pub async fn shutdown(&self) {
        let _ = self.root.send(Shutdown).await;
    }
}

/// Loopback form of a listening address, for talking to ourselves.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        SocketAddr::V6(a) if a.ip().is_unspecified() => SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], a.port())),
        other => other,
    }
}

/// Starts the tree. Must run inside an actix `System`.
pub async fn start(settings: Settings, listeners: Listeners, clock: Clock) -> Result<Running, DaemonError> {
    if settings.mode == Mode::Agent {
        return Ok(start_agent(&settings));
    }
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| DaemonError::DataDir {
        path: settings.data_dir.clone(),
        source,
    })?;
    let master_addr = listeners.master.as_ref().and_then(|l| l.local_addr().ok());
    let relay_admin_addr = listeners.relay_admin.as_ref().and_then(|l| l.local_addr().ok());
    let relay_agent_addr = listeners.relay_agent.as_ref().and_then(|l| l.local_addr().ok());
    let mut root = Supervisor::new("amon", RestartPolicy::default());

    if let Some(listener) = listeners.master {
        let store = match &settings.store {
            crate::config::StoreSettings::Sqlite => Store::open(&database_path(&settings.data_dir))?,
            crate::config::StoreSettings::Postgres { url, schema } => {
                let store = Store::connect_postgres(url.expose(), schema)?;
                tracing::info!(url = %crate::store::redact_url(url.expose()), schema, "store in PostgreSQL");
                store
            }
        };
        if settings.demo.enabled {
            set_up_demo(&settings, &store, &clock).await?;
        }
        let mailer = match &settings.notify.smtp_url {
            Some(url) => Mailer::smtp(url, settings.notify.smtp_credentials.clone())
                .map_err(|e| DaemonError::Mail(e.to_string()))?
                .with_smtp_timeout(settings.notify.smtp_timeout),
            None => {
                let dir = settings.data_dir.join("mail");
                tracing::info!(dir = %dir.display(), "no smtp_url configured: writing email as .eml files");
                Mailer::eml_dir(dir)
            }
        };
        let public_url = settings
            .master
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", reachable(master_addr.unwrap_or(settings.master.listen))));
        if settings.auth.open {
            tracing::warn!("auth.open = true: the Master API requires no token (fine for a loopback standalone)");
        }
        let master = MasterParts {
            store: store.clone(),
            clock: clock.clone(),
            notifier_env: Arc::new(NotifierEnv {
                store: store.clone(),
                mailer,
                from: settings.notify.from.clone(),
                clock: clock.clone(),
                rate_limit: settings.notify.rate_limit,
                max_age: settings.notify.max_age,
            }),
            workers: settings.notify.workers,
            hold: settings.notify.hold,
            retention: Retention {
                events: settings.master.event_retention,
                outbox: settings.notify.outbox_retention,
                machines: settings.master.machine_retention,
                alarms: settings.master.alarm_retention,
            },
            gc_interval: settings.master.gc_interval,
            event_max_age: settings.master.event_max_age,
            shards: settings.master.shard_count(),
            ingest_backlog: settings.master.ingest_backlog,
            monitor_idle: settings.master.monitor_idle,
            auth: crate::http::auth::Auth {
                open: settings.auth.open,
                tokens: settings.auth.tokens.clone(),
            },
            sessions: Default::default(),
            guard: GuardSettings {
                hold: settings.notify.hold,
                burst_count: settings.notify.burst_count,
                burst_percent: settings.notify.burst_percent,
                heartbeat_timeout: settings.notify.heartbeat_timeout,
                burst_window: settings.notify.burst_window,
            },
            datacenter: settings.datacenter.clone(),
            public_url,
            listener: Rc::new(listener),
            probe_limits: settings.probes,
            agent_silence: settings.notify.agent_silence,
            cluster: match settings.store {
                crate::config::StoreSettings::Sqlite => None,
                crate::config::StoreSettings::Postgres { .. } => Some(ClusterParts {
                    view: ClusterView::new(uuid::Uuid::new_v4().to_string()),
                    lease: settings.cluster_lease,
                }),
            },
        };
        root = root.child(master.into_spec());
    }

    if let Some(listener) = listeners.relay_admin {
        let master_urls = match settings.relay.master_urls.as_slice() {
            [] => vec![format!(
                "http://{}",
                reachable(master_addr.unwrap_or(settings.master.listen))
            )],
            urls => urls.to_vec(),
        };
        let server_uuid = server_uuid(&settings)?;
        let relay_store = RelayStore::open(&settings.data_dir.join(crate::store::RELAY_FILE))?;
        let relay = RelayParts {
            link_config: RelayLinkConfig {
                master_urls,
                master_token: settings.relay.master_token.as_ref().map(|t| t.expose().to_string()),
                relay: server_uuid,
                hostname: hostname(),
                heartbeat: settings.relay.heartbeat,
                batch_max: settings.relay.batch_max,
                spool_max: settings.relay.spool_max,
                dead_letter_retention: settings.relay.dead_letter_retention,
                clock: clock.clone(),
                store: relay_store.clone(),
            },
            store: relay_store,
            source: settings.relay.zones.clone(),
            clock: clock.clone(),
            listener: Rc::new(listener),
            agent_listener: listeners.relay_agent.map(Rc::new),
            agent_probes_poll: settings.relay.agent_probes_poll,
        };
        root = root.child(relay.into_spec());
    }

    Ok(Running {
        root: root.start(),
        master_addr,
        relay_admin_addr,
        relay_agent_addr,
    })
}

/// `amon agent`: no listener, no data dir (it keeps nothing on disk), one
/// supervisor under the root.
fn start_agent(settings: &Settings) -> Running {
    let parts = crate::agent::AgentParts {
        uuid: settings
            .agent
            .uuid
            .expect("config validation requires agent.uuid in agent mode"),
        relay_url: settings.agent.relay_url.clone(),
        poll: settings.agent.poll,
        queue: settings.agent.queue,
        limits: settings.probes,
    };
    tracing::info!(agent = %parts.uuid, relay_url = %parts.relay_url, poll_s = parts.poll.as_secs_f64(), "agent starting");
    let root = Supervisor::new("amon", RestartPolicy::default()).child(parts.into_spec());
    Running {
        root: root.start(),
        master_addr: None,
        relay_admin_addr: None,
        relay_agent_addr: None,
    }
}

struct MasterParts {
    store: Store,
    clock: Clock,
    notifier_env: Arc<NotifierEnv>,
    workers: usize,
    hold: std::time::Duration,
    guard: GuardSettings,
    retention: Retention,
    gc_interval: std::time::Duration,
    event_max_age: std::time::Duration,
    shards: usize,
    ingest_backlog: usize,
    monitor_idle: std::time::Duration,
    auth: crate::http::auth::Auth,
    /// The web page's signed-in viewers: kept across restarts of the
    /// master's subtree (a reload signs everyone out).
    sessions: crate::http::ui::Sessions,
    datacenter: String,
    public_url: String,
    listener: Rc<TcpListener>,
    /// `probes.min_disk_interval`, for the probe configs the API checks.
    probe_limits: crate::probes::Limits,
    /// `notify.agent_silence`: the missing-data alarm's threshold.
    agent_silence: std::time::Duration,
    /// Masters sharing this store (PostgreSQL): who leads, and the lease.
    cluster: Option<ClusterParts>,
}

/// A master's place in a cluster of masters sharing one PostgreSQL store.
struct ClusterParts {
    /// Who leads (this master's member id inside); kept across restarts of
    /// the master's subtree, so the lease it holds stays its own.
    view: ClusterView,
    lease: std::time::Duration,
}

/// How often a polling router (masters sharing a store) looks for new
/// events: up to this much latency on every event, for one indexed read on
/// a reader thread each time (100 a second, a few percent of one reader).
const ROUTER_POLL: std::time::Duration = std::time::Duration::from_millis(10);

impl MasterParts {
    fn into_spec(self) -> ChildSpec {
        ChildSpec::new("master", Restart::Permanent, move |lifeline| {
            let notifier = Named::<NotifierPool>::new();
            let router = Named::<EventRouter>::new();
            let guard = Named::<ServerGuard>::new();
            let keeper = Named::<MaintenanceKeeper>::new();
            let agent_watch = Named::<AgentWatch>::new();
            let shards: Vec<Named<AlarmShard>> = (0..self.shards).map(|_| Named::new()).collect();
            // The router writes it, the shards read it.
            let catalog: SharedCatalog = Default::default();
            let backlog = Arc::new(Backlog::new(self.ingest_backlog));
            // Shared by alarm actors, the flood guard and the keeper (writer).
            let maintenance = Maintenance::default();
            let keeper_env = Arc::new(KeeperEnv {
                store: self.store.clone(),
                clock: self.clock.clone(),
                maintenance: maintenance.clone(),
                router: router.clone(),
            });
            let guard_env = Arc::new(GuardEnv {
                maintenance: maintenance.clone(),
                settings: self.guard.clone(),
                store: self.store.clone(),
                clock: self.clock.clone(),
                router: router.clone(),
                notifier: notifier.clone(),
                datacenter: self.datacenter.clone(),
                master_url: self.public_url.clone(),
            });
            let alarm_env = Arc::new(AlarmEnv {
                store: self.store.clone(),
                clock: self.clock.clone(),
                notifier: notifier.clone(),
                guard: guard.clone(),
                maintenance: maintenance.clone(),
                hold: self.hold,
                burst_window: self.guard.burst_window,
                datacenter: self.datacenter.clone(),
                master_url: self.public_url.clone(),
                idle_after: self.monitor_idle,
                agent_watch: agent_watch.clone(),
            });
            let janitor_env = Arc::new(JanitorEnv {
                store: self.store.clone(),
                clock: self.clock.clone(),
                retention: self.retention.clone(),
                interval: self.gc_interval,
            });
            let polled = self.cluster.is_some();
            let agent_watch_env = Arc::new(AgentWatchEnv {
                polled,
                store: self.store.clone(),
                clock: self.clock.clone(),
                catalog: catalog.clone(),
                router: router.clone(),
                backlog: backlog.clone(),
                silence: self.agent_silence,
            });
            let api = MasterApi {
                polled,
                shards: self.shards,
                cluster: self.cluster.as_ref().map(|c| crate::http::master::ClusterApi {
                    view: c.view.clone(),
                    lease: c.lease,
                }),
                store: self.store.clone(),
                event_max_age: self.event_max_age,
                event_retention: self.retention.events,
                router: router.clone(),
                backlog: backlog.clone(),
                keeper: keeper.clone(),
                guard: guard.clone(),
                clock: self.clock.clone(),
                probe_limits: self.probe_limits,
            };
            let auth = self.auth.clone();
            let ui = crate::http::ui::Ui {
                api: api.clone(),
                auth: auth.clone(),
                sessions: self.sessions.clone(),
                heartbeat_timeout: self.guard.heartbeat_timeout,
            };
            let serve: Rc<ServeFn> = Rc::new(Box::new(move |listener| {
                let (api, auth, ui) = (api.clone(), auth.clone(), ui.clone());
                crate::http::serve("master", listener, Shape::MASTER, move || {
                    let mut app = actix_web::App::new();
                    if let Some(cluster) = &api.cluster {
                        app = app.app_data(crate::http::forward::Forwarder::new(cluster.view.clone()));
                    }
                    app.app_data(actix_web::web::Data::new(auth.clone()))
                        .app_data(actix_web::web::Data::new(api.store.clone()))
                        .wrap(actix_web::middleware::from_fn(crate::http::auth::authorize))
                        // Outermost: a follower forwards before checking.
                        .wrap(actix_web::middleware::from_fn(crate::http::forward::forward))
                        .configure(crate::http::ui::configure(ui.clone()))
                        .configure(crate::http::master::configure(api.clone()))
                })
            }));
            let notifier_env = self.notifier_env.clone();
            let workers = self.workers;
            let listener = self.listener.clone();
            let poll = polled.then_some(ROUTER_POLL);
            let cluster_backlog = backlog.clone();
            // The alarm core: everything that decides and notifies. A
            // master alone runs it under its own supervisor; masters
            // sharing a store run it only while they lead (`Leadership`),
            // so it can be built again and again.
            let add_core = move |mut supervisor: Supervisor| -> Supervisor {
                supervisor = supervisor
                    .child(ChildSpec::new("notifier", Restart::Permanent, {
                        let (notifier, notifier_env) = (notifier.clone(), notifier_env.clone());
                        move |lifeline| {
                            // Off the System arbiter, so deliveries never hold up
                            // the router and the alarm actors (or they it).
                            let env = notifier_env.clone();
                            let addr =
                                lifeline.start_on_own_thread(move |lifeline| NotifierPool::new(env, workers, lifeline));
                            notifier.set(addr.clone());
                            addr.recipient()
                        }
                    }))
                    .child(ChildSpec::new("maintenance", Restart::Permanent, {
                        let (keeper, keeper_env) = (keeper.clone(), keeper_env.clone());
                        move |lifeline| {
                            let addr = MaintenanceKeeper::new(keeper_env.clone(), lifeline).start();
                            keeper.set(addr.clone());
                            addr.recipient()
                        }
                    }))
                    .child(ChildSpec::new("server-guard", Restart::Permanent, {
                        let (guard, guard_env) = (guard.clone(), guard_env.clone());
                        move |lifeline| {
                            let guard_env = guard_env.clone();
                            let addr =
                                lifeline.start_on_own_thread(move |lifeline| ServerGuard::new(guard_env, lifeline));
                            guard.set(addr.clone());
                            addr.recipient()
                        }
                    }));
                // One shard per core, each on its own thread; started before the
                // router that feeds them, stopped after it.
                for (index, named) in shards.iter().enumerate() {
                    let (named, env, catalog) = (named.clone(), alarm_env.clone(), catalog.clone());
                    supervisor = supervisor.child(ChildSpec::new(
                        format!("shard-{index}"),
                        Restart::Permanent,
                        move |lifeline| {
                            let (env, catalog) = (env.clone(), catalog.clone());
                            let addr = lifeline
                                .start_on_own_thread(move |lifeline| AlarmShard::new(index, env, catalog, lifeline));
                            named.set(addr.clone());
                            addr.recipient()
                        },
                    ));
                }
                supervisor
                    .child(ChildSpec::new("router", Restart::Permanent, {
                        let (router, alarm_env, catalog, shards, backlog) = (
                            router.clone(),
                            alarm_env.clone(),
                            catalog.clone(),
                            shards.clone(),
                            backlog.clone(),
                        );
                        move |lifeline| {
                            let mut actor = EventRouter::new(
                                alarm_env.clone(),
                                catalog.clone(),
                                shards.clone(),
                                backlog.clone(),
                                lifeline,
                            );
                            if let Some(every) = poll {
                                actor = actor.polling(every);
                            }
                            let addr = actor.start();
                            router.set(addr.clone());
                            addr.recipient()
                        }
                    }))
                    // After the router, whose catalog it reads and to which it
                    // hands the events it makes; stopped before it.
                    .child(ChildSpec::new("agent-watch", Restart::Permanent, {
                        let (agent_watch, agent_watch_env) = (agent_watch.clone(), agent_watch_env.clone());
                        move |lifeline| {
                            let addr = AgentWatch::new(agent_watch_env.clone(), lifeline).start();
                            agent_watch.set(addr.clone());
                            addr.recipient()
                        }
                    }))
                    // Deleting is the least urgent work: it starts after the
                    // router and stops before it, leaving the store thread to the
                    // router's last commits at shutdown.
                    .child(ChildSpec::new("janitor", Restart::Permanent, {
                        let janitor_env = janitor_env.clone();
                        move |lifeline| Janitor::new(janitor_env.clone(), lifeline).start().recipient()
                    }))
            };
            let supervisor = match &self.cluster {
                None => add_core(Supervisor::new("master", RestartPolicy::default())),
                Some(cluster) => {
                    let add_core = Rc::new(add_core);
                    let core: crate::actors::cluster::CoreFn = Rc::new(move |lifeline| {
                        add_core(Supervisor::new("core", RestartPolicy::default()))
                            .with_lifeline(lifeline)
                            .start()
                            .recipient()
                    });
                    let env = Rc::new(LeadershipEnv {
                        store: self.store.clone(),
                        clock: self.clock.clone(),
                        me: cluster.view.get().me,
                        url: self.public_url.clone(),
                        lease: cluster.lease,
                        view: cluster.view.clone(),
                        backlog: cluster_backlog,
                        core,
                    });
                    Supervisor::new("master", RestartPolicy::default()).child(ChildSpec::new(
                        "leadership",
                        Restart::Permanent,
                        move |lifeline| Leadership::new(env.clone(), lifeline).start().recipient(),
                    ))
                }
            };
            let supervisor = supervisor
                .child(ChildSpec::new("master-http", Restart::Permanent, move |lifeline| {
                    HttpService::new("master", listener.clone(), serve.clone(), lifeline)
                        .start()
                        .recipient()
                }))
                .with_lifeline(lifeline);
            supervisor.start().recipient()
        })
    }
}

struct RelayParts {
    link_config: RelayLinkConfig,
    store: RelayStore,
    source: ZoneSourceSettings,
    clock: Clock,
    listener: Rc<TcpListener>,
    /// Dev mode's agent API listener, if configured.
    agent_listener: Option<Rc<TcpListener>>,
    agent_probes_poll: std::time::Duration,
}

impl RelayParts {
    fn into_spec(self) -> ChildSpec {
        ChildSpec::new("relay", Restart::Permanent, move |lifeline| {
            let link = Named::<RelayLink>::new();
            let agent_probes = Named::<AgentProbeCache>::new();
            let dispatcher = Named::<ZoneDispatcher>::new();
            let watcher_env = Arc::new(WatcherEnv {
                link: link.clone(),
                clock: self.clock.clone(),
                relay: self.link_config.relay,
                store: self.store.clone(),
            });
            let supervisor = Named::<Supervisor>::new();
            let admin = RelayAdminApi {
                server_uuid: self.link_config.relay,
                dispatcher: dispatcher.clone(),
                link: link.clone(),
                supervisor: supervisor.clone(),
                agent_probes: agent_probes.clone(),
            };
            let serve: Rc<ServeFn> = Rc::new(Box::new(move |listener| {
                let admin = admin.clone();
                crate::http::serve("relay-admin", listener, Shape::RELAY, move || {
                    actix_web::App::new().configure(crate::http::relay_admin::configure(admin.clone()))
                })
            }));
            // In dev mode the agent on the TCP listener is the global zone's,
            // and the global zone's agent uuid is the server's.
            let agent_api = RelayAgentApi {
                agent: self.link_config.relay,
                agent_alias: self.link_config.hostname.clone(),
                relay: self.link_config.relay,
                clock: self.clock.clone(),
                link: link.clone(),
                probes: agent_probes.clone(),
            };
            let serve_agents: Rc<ServeFn> = Rc::new(Box::new(move |listener| {
                let api = agent_api.clone();
                crate::http::serve("relay-agent", listener, Shape::RELAY, move || {
                    actix_web::App::new().configure(crate::http::relay_agent::configure(api.clone()))
                })
            }));
            let master_urls = self.link_config.master_urls.clone();
            let master_token = self.link_config.master_token.clone();
            let agent = self.link_config.relay;
            let poll = self.agent_probes_poll;
            let link_config = self.link_config.clone();
            let source = self.source.clone();
            let clock = self.clock.clone();
            let server = self.link_config.relay;
            let listener = self.listener.clone();
            let source_dispatcher = dispatcher.clone();
            let relay = Supervisor::new("relay", RestartPolicy::default())
                .child(ChildSpec::new("relay-link", Restart::Permanent, {
                    let link = link.clone();
                    move |lifeline| {
                        let addr = RelayLink::new(link_config.clone(), lifeline).start();
                        link.set(addr.clone());
                        addr.recipient()
                    }
                }))
                .child(ChildSpec::new("agent-probes", Restart::Permanent, {
                    let agent_probes = agent_probes.clone();
                    move |lifeline| {
                        let addr =
                            AgentProbeCache::new(&master_urls, master_token.as_deref(), agent, poll, lifeline).start();
                        agent_probes.set(addr.clone());
                        addr.recipient()
                    }
                }))
                .child(ChildSpec::new("zone-dispatcher", Restart::Permanent, {
                    let dispatcher = dispatcher.clone();
                    move |lifeline| {
                        let addr = ZoneDispatcher::new(watcher_env.clone(), lifeline).start();
                        dispatcher.set(addr.clone());
                        addr.recipient()
                    }
                }))
                .child(
                    ChildSpec::new("zone-source", Restart::Permanent, move |lifeline| match &source {
                        ZoneSourceSettings::Exec {
                            command,
                            format,
                            list_command,
                            meta_command,
                            meta_refresh,
                            server_tag,
                        } => ExecSource::new(
                            ExecCommands {
                                command: command.clone(),
                                format: *format,
                                list_command: list_command.clone(),
                                meta_command: meta_command.clone(),
                                meta_refresh: *meta_refresh,
                                server_tag: *server_tag,
                            },
                            server,
                            source_dispatcher.clone(),
                            lifeline,
                        )
                        .start()
                        .recipient(),
                        ZoneSourceSettings::Sim(config) => {
                            SimSource::new(config.clone(), source_dispatcher.clone(), clock.clone(), lifeline)
                                .start()
                                .recipient()
                        }
                    })
                    .with_policy(source_restarts()),
                )
                .child(ChildSpec::new(
                    "relay-admin-http",
                    Restart::Permanent,
                    move |lifeline| {
                        HttpService::new("relay-admin", listener.clone(), serve.clone(), lifeline)
                            .start()
                            .recipient()
                    },
                ))
                .with_lifeline(lifeline);
            let relay = match self.agent_listener.clone() {
                Some(listener) => relay.child(ChildSpec::new(
                    "relay-agent-http",
                    Restart::Permanent,
                    move |lifeline| {
                        HttpService::new("relay-agent", listener.clone(), serve_agents.clone(), lifeline)
                            .start()
                            .recipient()
                    },
                )),
                None => relay,
            }
            .start();
            supervisor.set(relay.clone());
            relay.recipient()
        })
    }
}

/// The zone source is the relay's eye: a source child that keeps dying is
/// restarted with backoff (1 s up to 1 min) for as long as it takes, never
/// escalated, so the relay keeps its link, spool and admin API.
fn source_restarts() -> RestartPolicy {
    RestartPolicy {
        max_restarts: usize::MAX,
        within: std::time::Duration::from_secs(60),
        backoff_initial: std::time::Duration::from_secs(1),
        backoff_max: std::time::Duration::from_secs(60),
    }
}

/// The node's name (gethostname(3); SmartOS has no /etc/hostname).
fn hostname() -> Option<String> {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The file in a relay's data dir that keeps its generated server uuid.
pub const SERVER_UUID_FILE: &str = "server_uuid";

/// The relay's server uuid: configured, else stable in the data dir.
fn server_uuid(settings: &Settings) -> Result<Uuid, DaemonError> {
    if let Some(uuid) = settings.relay.server_uuid {
        return Ok(uuid);
    }
    let path = settings.data_dir.join(SERVER_UUID_FILE);
    if let Some(uuid) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
    {
        return Ok(uuid);
    }
    let uuid = Uuid::new_v4();
    std::fs::write(&path, format!("{uuid}\n")).map_err(|source| DaemonError::DataDir { path, source })?;
    Ok(uuid)
}

/// The demo account's uuid: stable, so restarts find it again.
pub fn demo_account_uuid() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, b"amon/demo-account")
}

/// Creates the demo account and a machine-up probe per simulated zone, once.
async fn set_up_demo(settings: &Settings, store: &Store, clock: &Clock) -> Result<(), DaemonError> {
    let ZoneSourceSettings::Sim(sim) = &settings.relay.zones else {
        return Ok(());
    };
    let uuid = demo_account_uuid();
    // An operator account: it watches every simulated zone, whoever the
    // simulation says owns it (a demo account of an earlier release becomes
    // one).
    match store.get_account(uuid.to_string()).await? {
        None => {
            let account = Account {
                uuid,
                login: "demo".into(),
                email: settings.demo.email.clone(),
                operator: true,
                attributes: Default::default(),
            };
            store.create_account(account, clock.now_ms()).await?;
        }
        Some(account) if !account.operator => store.make_operator(uuid).await?,
        Some(_) => {}
    }
    let existing: Vec<Uuid> = store
        .list_probes(uuid)
        .await?
        .iter()
        .filter_map(|p| p.machine)
        .collect();
    let cloud = SimCloud::new(sim);
    let mut created = 0;
    for (_server, zone) in cloud.snapshot() {
        let machine = Uuid::parse_str(&zone.zonename).map_err(|e| DaemonError::Demo(e.to_string()))?;
        if existing.contains(&machine) {
            continue;
        }
        store
            .put_probe(Probe {
                uuid: Uuid::new_v5(&machine, b"amon/demo-probe"),
                name: Some(format!("{} up", zone.meta.alias.as_deref().unwrap_or("zone"))),
                user: uuid,
                probe_type: ProbeType::MachineUp,
                agent: Some(machine),
                machine: Some(machine),
                config: serde_json::Value::Null,
                contacts: vec!["email".into()],
                group: None,
                group_events: true,
                disabled: false,
                hold: None,
                renotify: None,
            })
            .await?;
        created += 1;
    }
    tracing::info!(
        account = "demo",
        email = %settings.demo.email,
        probes_created = created,
        "demo: account \"demo\" watches every simulated zone; mail goes to data_dir/mail unless smtp_url is set. \
         Turn the demo off with [demo] enabled = false or AMON__DEMO__ENABLED=false"
    );
    Ok(())
}

/// The database file of a data dir.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(crate::store::MASTER_FILE)
}
