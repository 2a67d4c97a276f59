//! SmartOS mode of the agent API: one Unix socket per zone, not built yet.
//!
//! The original relay served every zone (the global zone included) its own
//! HTTP app on `/var/run/.smartdc-amon.sock` inside that zone, and knew who
//! was asking from which socket a request arrived. The plan for this crate:
//!
//! - global zone: unlink the path, bind a `UnixListener` on it and serve
//!   [`super::relay_agent`] with `agent` = the server uuid
//!   (`HttpServer::listen_uds`);
//! - every other zone: bind the socket *inside* the zone. That needs a child
//!   that `zone_enter(2)`s the zone, binds, and passes the fd back over a
//!   socketpair (`SCM_RIGHTS`) — FFI and `unsafe`, which the crate forbids
//!   today, so it belongs in a small separate helper;
//! - one agent API per zone with `agent` = the zone's uuid and `agentAlias`
//!   = its alias, started and stopped by the zone watcher as the zone comes
//!   and goes. An open fd into a zone blocks its halt, so the socket must be
//!   closed when the zone goes down (the original's MON-144);
//! - events from a non-global zone are accepted only if `user` is the zone's
//!   owner, as the original did;
//! - the probe cache keyed by agent, each zone's list fetched from the master.
//!
//! Until then, a relay on SmartOS serves only the dev-mode TCP listener
//! (`relay.agent_listen`) for the global zone's agent, which `amon agent`
//! reaches as its `agent.relay_url` (`docs/operator-guide.md`, "Agents").

/// The socket path inside every zone. The platform's `joyent` brand knows this
/// path (it kills a global-zone process holding it open when a zone halt
/// hangs), so it must not change.
pub const SOCKET_PATH: &str = "/var/run/.smartdc-amon.sock";
