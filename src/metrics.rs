//! Metrics: the names we count, in one place, through the `metrics` facade,
//! and the Prometheus recorder that `GET /metrics` renders. Without an
//! installed recorder (unit tests) the counters are no-ops.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls reuse it).
pub fn install() {
    RECORDER.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics will be empty");
            None
        }
    });
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    RECORDER
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default()
}

pub fn actor_restarted(actor: &str) {
    metrics::counter!("amon_actor_restarts_total", "actor" => actor.to_string()).increment(1);
}

pub fn zone_lines_skipped(n: u64) {
    metrics::counter!("amon_zone_lines_skipped_total").increment(n);
}

/// Gauges refreshed from the master's database at each scrape of its
/// `GET /metrics`.
pub fn alarms_open(open: u64) {
    metrics::gauge!("amon_alarms_open").set(open as f64);
}

pub fn events_stored(kind: &str, stored: u64) {
    metrics::gauge!("amon_events_stored", "type" => kind.to_string()).set(stored as f64);
}

pub fn events_ingested(n: u64) {
    metrics::counter!("amon_events_ingested_total").increment(n);
}

pub fn notifications_sent(n: u64) {
    metrics::counter!("amon_notifications_sent_total").increment(n);
}

pub fn notifications_failed(n: u64) {
    metrics::counter!("amon_notifications_failed_total").increment(n);
}

pub fn spool_dropped(n: u64) {
    metrics::counter!("amon_relay_spool_dropped_total").increment(n);
}

pub fn spool_depth(depth: u64) {
    metrics::gauge!("amon_relay_spool_depth").set(depth as f64);
}

pub fn dead_lettered(n: u64) {
    metrics::counter!("amon_relay_dead_lettered_total").increment(n);
}

/// A relay's client turned from an unavailable master to the next one
/// (`relay.master_urls`).
pub fn master_switched() {
    metrics::counter!("amon_relay_master_switches_total").increment(1);
}

/// Alarm actors running in one shard (idle ones are stopped).
pub fn alarm_actors(shard: usize, running: usize) {
    metrics::gauge!("amon_alarm_actors", "shard" => shard.to_string()).set(running as f64);
}

/// Committed events not yet applied by their alarm actors, and how many
/// `POST /events` were refused because there were too many.
pub fn ingest_backlog(events: usize) {
    metrics::gauge!("amon_ingest_backlog").set(events as f64);
}

pub fn ingest_refused() {
    metrics::counter!("amon_ingest_refused_total").increment(1);
}

/// Rows the janitor (or the relay link, for `relay_dead_letter`) deleted
/// past their retention, by table.
pub fn gc_deleted(table: &str, n: u64) {
    metrics::counter!("amon_gc_deleted_total", "table" => table.to_string()).increment(n);
}

/// How long the janitor's last collection took, in seconds.
pub fn gc_seconds(seconds: f64) {
    metrics::gauge!("amon_gc_seconds").set(seconds);
}

/// Whether this master leads its cluster (`amon_cluster_leader`, 1 or 0),
/// and each time that changes (`amon_cluster_leadership_changes_total`,
/// by `to`: `leader` or `follower`).
pub fn cluster_leadership(leading: bool) {
    metrics::gauge!("amon_cluster_leader").set(if leading { 1.0 } else { 0.0 });
    let to = if leading { "leader" } else { "follower" };
    metrics::counter!("amon_cluster_leadership_changes_total", "to" => to).increment(1);
}

/// A cluster beat that failed (the database unreachable or refusing).
pub fn cluster_beat_failed() {
    metrics::counter!("amon_cluster_beat_failures_total").increment(1);
}
