//! The run's report: what was sent, committed and notified, how fast, and
//! at what cost, as JSON (`--report FILE`) and as a Markdown table; and the
//! invariants the scenario must keep (`checks`), which decide the exit code.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of a latency histogram recorded in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// A new histogram for latencies from 1 µs to an hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PerProcess {
    pub master: f64,
    pub relay: f64,
}

/// One invariant and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// One second of the run, for the plot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub t: f64,
    pub events_written: u64,
    pub events_committed: u64,
    pub open_alarms: u64,
    pub master_rss: u64,
    pub notifications: u64,
    /// p99 of the latency (line written → fault notification accepted) of
    /// the fault notifications that arrived during this second, in ms.
    pub latency_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub medium: String,
    pub servers: usize,
    pub zones: usize,
    pub relays: usize,
    pub accounts: usize,
    pub hold_ms: u64,
    /// The master's burst window, the least delay of a machine-down
    /// notification.
    pub burst_window_ms: u64,
    pub rate: f64,
    pub duration_s: f64,
    /// The master's notify settings this run used, as a reader needs them.
    pub settings: BTreeMap<String, String>,
    pub probes_created: usize,
    pub probes_per_sec: f64,
    pub events_sent: u64,
    pub events_committed: u64,
    /// Committed events over the time from the first line written to the
    /// last event committed.
    pub events_per_sec: f64,
    /// Transition line written → fault notification accepted by the sink
    /// (includes the hold).
    pub latency_ms: Latency,
    /// The same minus the hold (or the burst window, if longer): what Amon
    /// adds.
    pub latency_over_hold_ms: Latency,
    /// Up line written → clear notification accepted (no hold).
    pub clear_latency_ms: Latency,
    /// First down line of a server's listed machines → its server-down
    /// notification accepted.
    pub server_down_latency_ms: Latency,
    /// Notifications received (emails, or webhook posts with `--notify webhook`).
    pub emails: u64,
    pub emails_expected: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// Notifications received more than once (same Message-ID / id).
    pub duplicates: u64,
    /// Sink refusals during an outage.
    pub refused: u64,
    pub rss_bytes: PerProcess,
    pub cpu_seconds: PerProcess,
    /// Relay memory per zone watcher: (RSS with every zone − RSS before any) / zones.
    pub bytes_per_zone: f64,
    /// Master memory per open alarm at the most alarms open:
    /// (RSS then − RSS before the scenario) / open alarms. Meaningful in
    /// `open-alarms`, where alarms are most of what grows; in other
    /// scenarios queued notifications and allocator slack dominate it.
    pub bytes_per_open_alarm: f64,
    pub open_alarms_peak: u64,
    pub servers_down: usize,
    pub contacts: usize,
    /// Machines listed in all server-down notifications together.
    pub server_down_machines_named: u64,
    pub checks: Vec<Check>,
    pub ok: bool,
    pub timeline: Vec<Sample>,
}

impl Report {
    pub fn check(&mut self, name: &str, ok: bool, detail: String) {
        self.checks.push(Check {
            name: name.to_string(),
            ok,
            detail,
        });
        self.ok = self.checks.iter().all(|c| c.ok);
    }

    /// A Markdown table of the figures, then the checks.
    pub fn markdown(&self) -> String {
        let mb = |b: f64| format!("{:.1} MiB", b / 1048576.0);
        let lat = |l: &Latency| {
            if l.count == 0 {
                "–".to_string()
            } else {
                format!(
                    "{:.1} / {:.1} / {:.1} / {:.1} ms (n={})",
                    l.p50, l.p90, l.p99, l.max, l.count
                )
            }
        };
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), format!("{} ({})", self.scenario, self.medium)),
            (
                "fleet".into(),
                format!(
                    "{} zones on {} servers, {} relays, {} accounts",
                    self.zones, self.servers, self.relays, self.accounts
                ),
            ),
            (
                "hold, burst window, rate, duration".into(),
                format!(
                    "{} ms, {} ms, {}/s, {:.0} s",
                    self.hold_ms, self.burst_window_ms, self.rate, self.duration_s
                ),
            ),
            (
                "probes created".into(),
                format!("{} ({:.0}/s)", self.probes_created, self.probes_per_sec),
            ),
            (
                "events sent / committed".into(),
                format!("{} / {}", self.events_sent, self.events_committed),
            ),
            ("events_per_sec".into(), format!("{:.0}", self.events_per_sec)),
            ("latency p50/p90/p99/max".into(), lat(&self.latency_ms)),
            ("latency over hold".into(), lat(&self.latency_over_hold_ms)),
            ("clear latency".into(), lat(&self.clear_latency_ms)),
            ("server-down latency".into(), lat(&self.server_down_latency_ms)),
            (
                "notifications / expected".into(),
                format!("{} / {}", self.emails, self.emails_expected),
            ),
            (
                "by kind".into(),
                self.by_kind
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("duplicates".into(), self.duplicates.to_string()),
            (
                "RSS master / relays".into(),
                format!("{} / {}", mb(self.rss_bytes.master), mb(self.rss_bytes.relay)),
            ),
            (
                "CPU s master / relays".into(),
                format!("{:.1} / {:.1}", self.cpu_seconds.master, self.cpu_seconds.relay),
            ),
            ("bytes per zone watcher".into(), format!("{:.0}", self.bytes_per_zone)),
            (
                "bytes per open alarm".into(),
                format!("{:.0} (at {} open)", self.bytes_per_open_alarm, self.open_alarms_peak),
            ),
        ];
        if self.servers_down > 0 {
            rows.push((
                "servers down × contacts".into(),
                format!("{} × {}", self.servers_down, self.contacts),
            ));
        }
        let mut out = String::from("| figure | value |\n|---|---|\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out.push_str("\n| check | ok | detail |\n|---|---|---|\n");
        for c in &self.checks {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                c.name,
                if c.ok { "yes" } else { "**NO**" },
                c.detail
            ));
        }
        out
    }
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_are_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 2.0, "{l:?}");
    }

    #[test]
    fn one_failed_check_fails_the_report() {
        let mut r = Report::default();
        r.check("a", true, String::new());
        assert!(r.ok);
        r.check("b", false, "x".into());
        assert!(!r.ok);
        assert!(r.markdown().contains("| b | **NO** | x |"));
    }
}
