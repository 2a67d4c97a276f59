//! Names of the metrics we count, in one place, through the `metrics` facade.
//! Without an installed recorder these are no-ops; `GET /metrics` installs the
//! Prometheus one.

pub fn actor_restarted(actor: &str) {
    metrics::counter!("amon_actor_restarts_total", "actor" => actor.to_string()).increment(1);
}

pub fn zone_lines_skipped(n: u64) {
    metrics::counter!("amon_zone_lines_skipped_total").increment(n);
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
