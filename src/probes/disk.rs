//! `disk-usage` probes: every `interval`, the space left on the file system
//! holding `path` (statvfs, counted as `df` counts it), against `threshold`
//! — `"N%"` of the file system free or `"NM"` MiB free. Each check below it
//! is a fault; the first check at or above it after a fault sends one
//! clear. The original sent a fault or a clear at **every** interval, so a
//! healthy disk mailed a clear each hour; here a healthy disk is silent.
//! A path that cannot be checked (it does not exist, or the mount hangs) is
//! a fault too, not an error: the probe exists to be heard, and an `Err`
//! would only restart it, visible in the agent's log and nowhere else.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::window::FaultTracker;
use super::{Limits, Observation, Report};
use crate::http::FieldError;
use crate::model::ProbeType;

/// The original's defaults: 20 % free, checked hourly.
const DEFAULT_THRESHOLD: Threshold = Threshold::Percent(20);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// How long a statvfs may take before the check counts as failed: a hung
/// NFS mount blocks it for good, and the probe must say so rather than
/// wait with it.
const STATVFS_TIMEOUT: Duration = Duration::from_secs(30);

const MIB: u64 = 1 << 20;

/// A `disk-usage` probe's config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Any path on the file system to watch.
    pub path: PathBuf,
    pub threshold: Threshold,
    /// Between checks; at least [`Limits::min_disk_interval`].
    pub interval: Duration,
}

/// The least free space that is not a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    /// `"N%"`: percent of the file system (1 to 100).
    Percent(u8),
    /// `"NM"`: MiB.
    Mebibytes(u64),
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Percent(n) => write!(f, "{n}%"),
            Threshold::Mebibytes(n) => write!(f, "{n}M"),
        }
    }
}

/// A file system's space as `df` counts it: `total` is used plus
/// `available`, so blocks reserved for the super-user count as neither
/// (and a nearly full disk reads 100 % used, as an operator expects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged process may still write.
    pub available: u64,
    /// Bytes used plus `available`.
    pub total: u64,
}

impl Space {
    /// The free space in `threshold`'s unit, rounded down: whole percent
    /// or whole MiB (a file system of no blocks is 100 % free).
    pub fn free_in(&self, threshold: Threshold) -> u64 {
        match threshold {
            Threshold::Percent(_) if self.total == 0 => 100,
            Threshold::Percent(_) => (u128::from(self.available) * 100 / u128::from(self.total)) as u64,
            Threshold::Mebibytes(_) => self.available / MIB,
        }
    }
}

/// Whether `space` is below `threshold`. For a percentage this is exactly
/// the original's `100 - df's capacity% < N` (df rounds used up), without
/// rounding: `available / total < N / 100`.
pub fn below(threshold: Threshold, space: Space) -> bool {
    match threshold {
        Threshold::Percent(n) => u128::from(space.available) * 100 < u128::from(n) * u128::from(space.total),
        Threshold::Mebibytes(n) => u128::from(space.available) < u128::from(n) * u128::from(MIB),
    }
}

pub fn parse(config: &Value, limits: Limits, errors: &mut Vec<FieldError>) -> Option<Config> {
    let map = super::object(config, errors)?;
    let before = errors.len();
    super::refuse_unknown(map, &["path", "threshold", "interval"], ProbeType::DiskUsage, errors);
    let path = match map.get("path") {
        None | Some(Value::Null) => {
            errors.push(FieldError::missing("config.path"));
            PathBuf::new()
        }
        Some(value) => super::absolute_path(value, "config.path", errors).unwrap_or_default(),
    };
    let threshold = match map.get("threshold") {
        None | Some(Value::Null) => DEFAULT_THRESHOLD,
        Some(value) => parse_threshold(value).unwrap_or_else(|| {
            errors.push(FieldError::invalid(
                "config.threshold",
                format!(
                    "config.threshold has an invalid format: must be a string like \"20%\" (1 to 100 percent free) \
                     or \"500M\" (MiB free, at least 1), not {value}"
                ),
            ));
            DEFAULT_THRESHOLD
        }),
    };
    let interval = super::seconds(map, "interval", DEFAULT_INTERVAL, limits.min_disk_interval, errors);
    if errors.len() > before {
        return None;
    }
    Some(Config {
        path,
        threshold,
        interval,
    })
}

/// The original's `^\d+[M%]$`, with the amount in range.
fn parse_threshold(value: &Value) -> Option<Threshold> {
    let text = value.as_str()?;
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if let Some(n) = text.strip_suffix('%') {
        let n = digits(n).filter(|n| (1..=100).contains(n))?;
        Some(Threshold::Percent(n as u8))
    } else if let Some(n) = text.strip_suffix('M') {
        digits(n).filter(|n| *n >= 1).map(Threshold::Mebibytes)
    } else {
        None
    }
}

/// The fault of a check that found too little space. The message is the
/// original's, with the free space it saw; `value` is that free space in
/// the threshold's unit.
pub fn fault(config: &Config, space: Space) -> Observation {
    let free = space.free_in(config.threshold);
    let unit = match config.threshold {
        Threshold::Percent(_) => "%",
        Threshold::Mebibytes(_) => "M",
    };
    Observation::fault(
        format!(
            "Remaining space on {} has dropped below {} ({free}{unit} left).",
            config.path.display(),
            config.threshold
        ),
        Some(json!(free)),
        Some(json!({
            "path": config.path,
            "threshold": config.threshold.to_string(),
            "availableBytes": space.available,
            "totalBytes": space.total,
        })),
    )
}

/// The fault of a check that could not see the file system.
pub fn unchecked(config: &Config, error: &str) -> Observation {
    Observation::fault(
        format!("Cannot check remaining space on {}: {error}.", config.path.display()),
        None,
        Some(json!({"path": config.path, "error": error})),
    )
}

/// The one clear after a fault.
pub fn clear(config: &Config) -> Observation {
    Observation::clear(format!(
        "Remaining space on {} is no longer below {}.",
        config.path.display(),
        config.threshold
    ))
}

/// The space of the file system holding `path`.
pub fn statvfs(path: &Path) -> io::Result<Space> {
    let st = rustix::fs::statvfs(path)?;
    let block = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
    let available = st.f_bavail.saturating_mul(block);
    let used = st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(block);
    Ok(Space {
        available,
        total: used.saturating_add(available),
    })
}

/// Checks the file system now and then every `interval` until the probe
/// is stopped or the agent stops taking observations. (The original waited
/// one `interval`, an hour by default, before its first check: an agent
/// restart left a full disk unseen for that long.)
pub async fn run(config: Config, report: Report) -> anyhow::Result<()> {
    watch(config, report, statvfs, STATVFS_TIMEOUT).await
}

/// [`run`] with the free space read by `source` (tests give their own),
/// given up on after `timeout` ([`STATVFS_TIMEOUT`] in production). `source`
/// runs on tokio's blocking threads: statvfs can block.
pub async fn watch<F>(config: Config, report: Report, source: F, timeout: Duration) -> anyhow::Result<()>
where
    F: Fn(&Path) -> io::Result<Space> + Send + Sync + 'static,
{
    let source = Arc::new(source);
    let mut tracker = FaultTracker::new(1, config.interval);
    // A statvfs that did not answer in time: waited for again rather than
    // started anew, so a hung mount holds one thread, not one per check.
    let mut pending: Option<JoinHandle<io::Result<Space>>> = None;
    loop {
        let mut check = pending.take().unwrap_or_else(|| {
            let (source, path) = (source.clone(), config.path.clone());
            tokio::task::spawn_blocking(move || source(&path))
        });
        let seen = match tokio::time::timeout(timeout, &mut check).await {
            Ok(Ok(result)) => result.map_err(|e| e.to_string()),
            Ok(Err(join)) => Err(format!("the check failed: {join}")),
            Err(_elapsed) => {
                pending = Some(check);
                Err(format!(
                    "the file system did not answer within {}",
                    humantime::format_duration(timeout)
                ))
            }
        };
        let observation = match seen {
            Ok(space) if !below(config.threshold, space) => tracker.success().then(|| clear(&config)),
            Ok(space) => tracker.failure(Instant::now()).map(|_| fault(&config, space)),
            Err(error) => tracker.failure(Instant::now()).map(|_| unchecked(&config, &error)),
        };
        if let Some(observation) = observation {
            report
                .send(observation)
                .await
                .map_err(|_| anyhow::anyhow!("the agent no longer takes this probe's observations"))?;
        }
        tokio::time::sleep(config.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;

    fn limits() -> Limits {
        Limits {
            min_disk_interval: Duration::from_secs(1),
        }
    }

    fn parse_errors(config: Value, limits: Limits) -> Vec<String> {
        let mut errors = Vec::new();
        assert_eq!(parse(&config, limits, &mut errors), None, "{config} should be refused");
        errors.into_iter().map(|e| e.field).collect()
    }

    fn space(available: u64, total: u64) -> Space {
        Space { available, total }
    }

    #[test]
    fn the_originals_defaults() {
        let mut errors = Vec::new();
        let c = parse(&json!({"path": "/var"}), Limits::default(), &mut errors).unwrap();
        assert!(errors.is_empty());
        assert_eq!(
            c,
            Config {
                path: PathBuf::from("/var"),
                threshold: Threshold::Percent(20),
                interval: Duration::from_secs(3600),
            }
        );
    }

    #[test]
    fn thresholds_are_percent_or_mebibytes() {
        let threshold = |t: Value| {
            let mut errors = Vec::new();
            parse(&json!({"path": "/", "threshold": t}), limits(), &mut errors).map(|c| c.threshold)
        };
        assert_eq!(threshold(json!("5%")), Some(Threshold::Percent(5)));
        assert_eq!(threshold(json!("100%")), Some(Threshold::Percent(100)));
        assert_eq!(threshold(json!("512M")), Some(Threshold::Mebibytes(512)));
        assert_eq!(threshold(json!("007M")), Some(Threshold::Mebibytes(7)));
        for bad in [
            json!(20),
            json!("20"),
            json!("0%"),
            json!("101%"),
            json!("0M"),
            json!("-5%"),
            json!("+5%"),
            json!(" 5%"),
            json!("5 %"),
            json!("5G"),
            json!("5m"),
            json!("1.5M"),
            json!("99999999999999999999999M"),
            json!("%"),
            json!("M"),
        ] {
            assert_eq!(
                parse_errors(json!({"path": "/", "threshold": bad}), limits()),
                ["config.threshold"],
                "{bad}"
            );
        }
    }

    #[test]
    fn each_wrong_field_is_named() {
        assert_eq!(parse_errors(json!({}), limits()), ["config.path"]);
        assert_eq!(parse_errors(json!(null), limits()), ["config"]);
        assert_eq!(parse_errors(json!({"path": "var"}), limits()), ["config.path"]);
        assert_eq!(parse_errors(json!({"path": ""}), limits()), ["config.path"]);
        assert_eq!(parse_errors(json!({"path": "/a\u{0}"}), limits()), ["config.path"]);
        assert_eq!(parse_errors(json!({"path": 1}), limits()), ["config.path"]);
        assert_eq!(
            parse_errors(json!({"path": "/", "interval": "x"}), limits()),
            ["config.interval"]
        );
        assert_eq!(
            parse_errors(json!({"path": "/", "period": 60}), limits()),
            ["config.period"]
        );
        assert_eq!(
            parse_errors(json!({"threshold": 5, "interval": 0}), limits()),
            ["config.path", "config.threshold", "config.interval"]
        );
    }

    #[test]
    fn the_interval_has_a_floor_that_tests_lower() {
        let config = json!({"path": "/", "interval": 60});
        let errors = {
            let mut errors = Vec::new();
            parse(&config, Limits::default(), &mut errors);
            errors
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "config.interval");
        assert_eq!(errors[0].message, "config.interval must be at least 5m");
        let mut errors = Vec::new();
        let c = parse(&config, limits(), &mut errors).unwrap();
        assert_eq!(c.interval, Duration::from_secs(60));
    }

    #[test]
    fn below_the_threshold_as_df_counts() {
        let gib = 1 << 30;
        // 20 %: 19.9 % free is below, 20 % is not.
        assert!(below(Threshold::Percent(20), space(199, 1000)));
        assert!(!below(Threshold::Percent(20), space(200, 1000)));
        assert!(!below(Threshold::Percent(100), space(1000, 1000)));
        assert!(below(Threshold::Percent(1), space(0, 1000)));
        assert!(!below(Threshold::Percent(50), space(0, 0)), "nothing to run out of");
        assert!(below(Threshold::Mebibytes(512), space(512 * MIB - 1, gib)));
        assert!(!below(Threshold::Mebibytes(512), space(512 * MIB, gib)));
        // No overflow at the ends.
        assert!(!below(Threshold::Percent(100), space(u64::MAX, u64::MAX)));
        assert!(below(Threshold::Mebibytes(u64::MAX), space(u64::MAX, u64::MAX)));
    }

    #[test]
    fn free_space_in_the_thresholds_unit() {
        assert_eq!(space(199, 1000).free_in(Threshold::Percent(20)), 19);
        assert_eq!(space(0, 0).free_in(Threshold::Percent(20)), 100);
        assert_eq!(space(3 * MIB - 1, 10 * MIB).free_in(Threshold::Mebibytes(5)), 2);
        assert_eq!(space(u64::MAX, u64::MAX).free_in(Threshold::Percent(5)), 100);
    }

    #[test]
    fn fault_and_clear_say_what_was_seen() {
        let c = Config {
            path: PathBuf::from("/data"),
            threshold: Threshold::Percent(20),
            interval: Duration::from_secs(300),
        };
        let o = fault(&c, space(150, 1000));
        assert!(!o.clear);
        assert_eq!(o.message, "Remaining space on /data has dropped below 20% (15% left).");
        assert_eq!(o.value, Some(json!(15)));
        assert_eq!(
            o.details,
            Some(json!({"path": "/data", "threshold": "20%", "availableBytes": 150, "totalBytes": 1000}))
        );
        let o = clear(&c);
        assert!(o.clear);
        assert_eq!(o.message, "Remaining space on /data is no longer below 20%.");
        let o = unchecked(&c, "No such file or directory (os error 2)");
        assert_eq!(
            o.message,
            "Cannot check remaining space on /data: No such file or directory (os error 2)."
        );
        assert_eq!(o.value, None);
    }

    /// A file system whose free space the test sets, counting its checks.
    #[derive(Default)]
    struct FakeDisk {
        available: AtomicU64,
        checks: AtomicUsize,
    }

    impl FakeDisk {
        fn source(self: &Arc<Self>) -> impl Fn(&Path) -> io::Result<Space> + Send + Sync + 'static {
            let disk = self.clone();
            move |_| {
                disk.checks.fetch_add(1, Ordering::SeqCst);
                Ok(space(disk.available.load(Ordering::SeqCst), 1000))
            }
        }

        fn set(&self, available: u64) {
            self.available.store(available, Ordering::SeqCst);
        }

        fn checks(&self) -> usize {
            self.checks.load(Ordering::SeqCst)
        }
    }

    fn watched(threshold: Threshold) -> Config {
        Config {
            path: PathBuf::from("/data"),
            threshold,
            interval: Duration::from_secs(300),
        }
    }

    async fn next(rx: &mut mpsc::Receiver<Observation>) -> Observation {
        tokio::time::timeout(Duration::from_secs(24 * 3600), rx.recv())
            .await
            .expect("an observation")
            .expect("the probe is running")
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_disk_is_silent() {
        let disk = Arc::new(FakeDisk::default());
        disk.set(500);
        let (tx, mut rx) = mpsc::channel(8);
        let probe = tokio::spawn(watch(
            watched(Threshold::Percent(20)),
            tx,
            disk.source(),
            STATVFS_TIMEOUT,
        ));
        tokio::time::sleep(Duration::from_secs(300) * 10).await;
        assert!(disk.checks() >= 10, "{} checks", disk.checks());
        // The original sent a clear at every one of those checks.
        assert!(rx.try_recv().is_err());
        probe.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_threshold_crossed_and_recovered_is_faults_then_one_clear() {
        let disk = Arc::new(FakeDisk::default());
        disk.set(100);
        let (tx, mut rx) = mpsc::channel(8);
        let start = Instant::now();
        let probe = tokio::spawn(watch(
            watched(Threshold::Percent(20)),
            tx,
            disk.source(),
            STATVFS_TIMEOUT,
        ));
        let o = next(&mut rx).await;
        assert_eq!(o.message, "Remaining space on /data has dropped below 20% (10% left).");
        assert_eq!(start.elapsed(), Duration::ZERO, "the first check is at once");
        // Each check below the threshold is a fault.
        let o = next(&mut rx).await;
        assert!(!o.clear);
        assert_eq!(start.elapsed(), Duration::from_secs(300));

        disk.set(200);
        let o = next(&mut rx).await;
        assert!(o.clear, "{o:?}");
        assert_eq!(o.message, "Remaining space on /data is no longer below 20%.");
        // Several good checks, then the disk fills again: the next thing
        // reported is that fault, so the good checks sent no more clears.
        let checks = disk.checks();
        tokio::time::sleep(Duration::from_secs(300) * 5 + Duration::from_secs(150)).await;
        assert!(disk.checks() >= checks + 5, "{} then {} checks", checks, disk.checks());
        disk.set(0);
        let o = next(&mut rx).await;
        assert!(!o.clear);
        assert_eq!(o.value, Some(json!(0)));
        probe.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_disk_that_cannot_be_seen_is_a_fault_until_it_can() {
        let seen = Arc::new(AtomicUsize::new(0));
        let source = {
            let seen = seen.clone();
            move |_: &Path| match seen.fetch_add(1, Ordering::SeqCst) {
                0 => Err(io::Error::from(io::ErrorKind::NotFound)),
                _ => Ok(space(MIB * 1000, MIB * 2000)),
            }
        };
        let (tx, mut rx) = mpsc::channel(8);
        let probe = tokio::spawn(watch(watched(Threshold::Mebibytes(100)), tx, source, STATVFS_TIMEOUT));
        let o = next(&mut rx).await;
        assert!(!o.clear);
        assert!(
            o.message.starts_with("Cannot check remaining space on /data: "),
            "{o:?}"
        );
        assert!(next(&mut rx).await.clear);
        probe.abort();
    }

    /// On the real clock: a blocking check holds the paused clock still
    /// (tokio does not auto-advance while one runs), so a hang would never
    /// time out there. The check hangs until released, so the short
    /// timeout is certain to pass first.
    #[tokio::test]
    async fn a_hung_file_system_is_a_fault_and_holds_one_thread() {
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = std::sync::Mutex::new(hold);
        let calls = Arc::new(AtomicUsize::new(0));
        let source = {
            let calls = calls.clone();
            move |_: &Path| {
                calls.fetch_add(1, Ordering::SeqCst);
                // Hangs until the test lets it go, like statvfs on a dead
                // NFS server.
                let _ = hold.lock().unwrap().recv();
                Ok(space(MIB * 1000, MIB * 2000))
            }
        };
        let (tx, mut rx) = mpsc::channel(8);
        let mut c = watched(Threshold::Mebibytes(100));
        c.interval = Duration::from_millis(10);
        let probe = tokio::spawn(watch(c, tx, source, Duration::from_millis(50)));
        let o = next(&mut rx).await;
        assert_eq!(
            o.message,
            "Cannot check remaining space on /data: the file system did not answer within 50ms."
        );
        assert!(!next(&mut rx).await.clear);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the hung check is waited for, not repeated"
        );
        release.send(()).unwrap();
        assert!(next(&mut rx).await.clear);
        probe.abort();
    }

    #[test]
    fn statvfs_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = statvfs(dir.path()).unwrap();
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
        let e = statvfs(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn run_checks_the_real_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        // More MiB free than any disk has (about 953 PiB).
        let full = Config {
            path: dir.path().to_path_buf(),
            threshold: Threshold::Mebibytes(1_000_000_000_000),
            interval: Duration::from_secs(3600),
        };
        let probe = tokio::spawn(run(full, tx.clone()));
        let o = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .unwrap()
            .unwrap();
        probe.abort();
        assert!(o.message.contains("has dropped below 1000000000000M"), "{o:?}");
        let missing = Config {
            path: dir.path().join("missing"),
            threshold: Threshold::Percent(1),
            interval: Duration::from_secs(3600),
        };
        let probe = tokio::spawn(run(missing, tx));
        let o = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .unwrap()
            .unwrap();
        probe.abort();
        assert!(o.message.starts_with("Cannot check remaining space on "), "{o:?}");
        assert!(o.message.contains("No such file or directory"), "{o:?}");
    }
}
