//! `log-scan` probes: a fault when `threshold` lines of a log file match
//! `match` within a **sliding** `period`. Also what `bunyan-log-scan`
//! shares with it: where the log is (`path`, or the log of the SMF service
//! `smfServiceName`), the window's fields, the count of hits and the
//! following loop ([`scan`]).
//!
//! Fixed from the original: it counts matching *lines* (the original
//! counted `tail`'s read chunks, so three matches read together were one),
//! honours `match.invert` (it was accepted and ignored), slides its window
//! (the original reset a counter on a fixed timer), and a failed read is
//! logged and the file reopened (the original's `tail` died silently).
//!
//! After a fault the window starts empty again, so a steady stream of
//! matches makes one fault per `threshold` matches, not one per line (the
//! original sent an event for every matching chunk once over threshold).
//! Log scans never clear: the alarm stays open until someone closes it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::matcher::Matcher;
use super::tail::Follower;
use super::window::Window;
use super::{Observation, Report};
use crate::http::FieldError;
use crate::model::ProbeType;

/// The original's defaults.
pub const DEFAULT_THRESHOLD: u32 = 1;
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

/// Most hits a threshold can ask for (what the window keeps).
const MAX_THRESHOLD: u32 = 100_000;

/// Matched lines given in a fault's `details.matches`: enough to see what
/// happened, small enough for an event.
const MAX_SAMPLES: usize = 3;

/// Longest text of one line given in `details`.
const MAX_SAMPLE_CHARS: usize = 1024;

/// Consecutive read errors of one file after which the probe gives up and
/// leaves the retrying to the agent's backoff.
const MAX_READ_ERRORS: u32 = 5;

/// Where the log is.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `path`: this file.
    Path(PathBuf),
    /// `smfServiceName`: the log file(s) `svcs -L` names for this service
    /// (one per instance when the FMRI names several).
    Smf(String),
}

/// A `log-scan` probe's config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: Source,
    /// Boxed: a compiled regex is large, and `ProbeConfig` is as large as
    /// its largest variant.
    pub matcher: Box<Matcher>,
    /// Hits within `period` that make a fault.
    pub threshold: u32,
    pub period: Duration,
}

pub fn parse(config: &Value, errors: &mut Vec<FieldError>) -> Option<Config> {
    let map = super::object(config, errors)?;
    let before = errors.len();
    super::refuse_unknown(
        map,
        &["path", "smfServiceName", "match", "threshold", "period"],
        ProbeType::LogScan,
        errors,
    );
    let source = parse_source(map, errors);
    let matcher = match map.get("match") {
        None | Some(Value::Null) => {
            errors.push(FieldError::missing("config.match"));
            None
        }
        Some(value) => Matcher::parse(value, "config.match", false, errors),
    };
    let (threshold, period) = parse_window(map, errors);
    if errors.len() > before {
        return None;
    }
    Some(Config {
        source: source?,
        matcher: Box::new(matcher?),
        threshold,
        period,
    })
}

/// `path` or `smfServiceName`, exactly one.
pub(super) fn parse_source(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Source> {
    let given = |key: &str| map.get(key).filter(|v| !v.is_null());
    match (given("path"), given("smfServiceName")) {
        (None, None) => {
            errors.push(FieldError::invalid(
                "config.path",
                "either \"config.path\" or \"config.smfServiceName\" is required",
            ));
            None
        }
        (Some(_), Some(_)) => {
            errors.push(FieldError::invalid(
                "config.smfServiceName",
                "give either \"config.path\" or \"config.smfServiceName\", not both",
            ));
            None
        }
        (Some(path), None) => super::absolute_path(path, "config.path", errors).map(Source::Path),
        (None, Some(name)) => match name.as_str() {
            Some(n) if is_fmri(n) => Some(Source::Smf(n.to_string())),
            _ => {
                errors.push(FieldError::invalid(
                    "config.smfServiceName",
                    format!("config.smfServiceName ({name}) must be an SMF service name like \"svc:/site/app:default\" or \"app\""),
                ));
                None
            }
        },
    }
}

/// What an FMRI or service name may hold. It becomes an argument of
/// `svcs`, so it may not start with `-` (an option) or hold spaces.
fn is_fmri(name: &str) -> bool {
    (1..=1024).contains(&name.len())
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":/_.,@+-".contains(c))
}

/// `threshold` (default 1) and `period` (default 60 s, at least 1 s).
pub(super) fn parse_window(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> (u32, Duration) {
    let threshold = super::count(map, "threshold", DEFAULT_THRESHOLD, 1..=MAX_THRESHOLD, errors);
    let period = super::seconds(map, "period", DEFAULT_PERIOD, Duration::from_secs(1), errors);
    (threshold, period)
}

/// How the log is followed; tests shorten the poll and fake `svcs`.
#[derive(Debug, Clone)]
pub struct Follow {
    /// How often the files are looked at.
    pub poll: Duration,
    /// The program that names an SMF service's log.
    pub svcs: PathBuf,
}

impl Default for Follow {
    fn default() -> Follow {
        Follow {
            poll: Duration::from_secs(1),
            svcs: PathBuf::from("/usr/bin/svcs"),
        }
    }
}

pub async fn run(config: Config, report: Report) -> anyhow::Result<()> {
    run_with(config, Follow::default(), report).await
}

pub async fn run_with(config: Config, follow: Follow, report: Report) -> anyhow::Result<()> {
    let matcher = config.matcher;
    let describe = matcher.describe();
    let scan_config = Scan {
        source: config.source,
        threshold: config.threshold,
        period: config.period,
        describe,
    };
    scan(scan_config, follow, report, |line| line_hit(&matcher, line)).await
}

/// Whether a log-scan line is a hit, and what `details.matches` says of it:
/// the matched text and the line (`match` is null for an inverted hit,
/// which is a line where nothing matched).
pub fn line_hit(matcher: &Matcher, line: &str) -> Option<Value> {
    let found = matcher.find(line);
    if found.is_some() == matcher.invert {
        return None;
    }
    Some(json!({"match": found.map(clip), "context": clip(line)}))
}

/// Text cut to [`MAX_SAMPLE_CHARS`] for an event.
pub(super) fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_SAMPLE_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// What the shared loop needs to know of a log-scan probe.
#[derive(Debug, Clone)]
pub(super) struct Scan {
    pub source: Source,
    pub threshold: u32,
    pub period: Duration,
    /// What matched, as the message says it: `/re/flags`, or the bunyan
    /// conditions.
    pub describe: String,
}

/// Follows the log and reports a fault each time `threshold` lines for
/// which `hit` gives a sample fall within `period`.
pub(super) async fn scan(
    scan: Scan,
    follow: Follow,
    report: Report,
    mut hit: impl FnMut(&str) -> Option<Value>,
) -> anyhow::Result<()> {
    let paths = match &scan.source {
        Source::Path(path) => vec![path.clone()],
        Source::Smf(fmri) => smf_logs(&follow.svcs, fmri).await?,
    };
    tracing::info!(paths = ?paths, "log-scan following");
    let mut followers: Vec<(Follower, u32)> = paths.iter().map(|p| (Follower::new(p), 0)).collect();
    let mut tally = Tally::new(scan.threshold, scan.period);
    let mut ticker = tokio::time::interval(follow.poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut hits = Hits::default();
        for (follower, errors) in &mut followers {
            match follower.poll().await {
                Ok(lines) => {
                    *errors = 0;
                    lines
                        .iter()
                        .filter_map(|line| hit(line))
                        .for_each(|sample| hits.push(sample));
                }
                Err(e) => {
                    *errors += 1;
                    let path = follower.path().display().to_string();
                    if *errors >= MAX_READ_ERRORS {
                        return Err(e).with_context(|| format!("reading log {path} failed {MAX_READ_ERRORS} times"));
                    }
                    tracing::warn!(path = %path, error = %e, "reading log failed; reopening it");
                    follower.reopen();
                }
            }
        }
        if let Some((count, samples)) = tally.record(Instant::now(), hits) {
            let message = message(&paths, &scan.describe, count, scan.period);
            let details = json!({ "matches": samples });
            report
                .send(Observation::fault(message, Some(json!(count)), Some(details)))
                .await
                .context("nobody takes this probe's observations")?;
        }
    }
}

/// The hits of one poll: how many, and the last few to show (a busy log
/// can hit a million times a poll; only three are shown).
#[derive(Debug, Default)]
pub struct Hits {
    count: usize,
    last: VecDeque<Value>,
}

impl Hits {
    pub fn push(&mut self, sample: Value) {
        self.count += 1;
        if self.last.len() == MAX_SAMPLES {
            self.last.pop_front();
        }
        self.last.push_back(sample);
    }
}

impl FromIterator<Value> for Hits {
    fn from_iter<I: IntoIterator<Item = Value>>(samples: I) -> Hits {
        let mut hits = Hits::default();
        samples.into_iter().for_each(|s| hits.push(s));
        hits
    }
}

/// Counts hits in a sliding window and keeps the last few to show.
#[derive(Debug)]
pub struct Tally {
    threshold: usize,
    period: Duration,
    window: Window,
    samples: VecDeque<(Instant, Value)>,
}

impl Tally {
    pub fn new(threshold: u32, period: Duration) -> Tally {
        Tally {
            threshold: threshold.max(1) as usize,
            period,
            window: Window::new(period),
            samples: VecDeque::new(),
        }
    }

    /// Records the hits seen at `now` (each counts once, however many came
    /// in one read). A fault is `Some((hits in the period, the last few
    /// hits))`; the window then starts empty again.
    pub fn record(&mut self, now: Instant, hits: Hits) -> Option<(usize, Vec<Value>)> {
        if hits.count == 0 {
            return None;
        }
        for sample in hits.last {
            if self.samples.len() == MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back((now, sample));
        }
        let count = self.window.record(now, hits.count);
        if count < self.threshold {
            return None;
        }
        self.window.clear();
        let period = self.period;
        let samples = self
            .samples
            .drain(..)
            .filter(|(at, _)| now.duration_since(*at) < period)
            .map(|(_, sample)| sample)
            .collect();
        Some((count, samples))
    }
}

/// `Log "/var/log/x" matched /re/ 3 times in 60 s` (the original's words,
/// with the count and period it now really means).
pub(super) fn message(paths: &[PathBuf], describe: &str, count: usize, period: Duration) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| format!("\"{}\"", p.display())).collect();
    let logs = if paths.len() == 1 { "Log" } else { "Logs" };
    let times = if count == 1 {
        "once".to_string()
    } else {
        format!("{count} times")
    };
    let period = if period.subsec_nanos() == 0 {
        format!("{} s", period.as_secs())
    } else {
        humantime::format_duration(period).to_string()
    };
    format!("{logs} {} matched {describe} {times} in {period}", quoted.join(", "))
}

/// Longest wait for `svcs`.
const SVCS_TIMEOUT: Duration = Duration::from_secs(30);

/// The log files of SMF service `fmri`, as `svcs -L` names them (one line
/// per instance). An error says why, for the agent to log before it retries
/// with backoff: no `svcs` (not an SMF system: use `path`), an unknown
/// service, or an answer that is not absolute paths.
pub async fn smf_logs(svcs: &Path, fmri: &str) -> anyhow::Result<Vec<PathBuf>> {
    let run = tokio::process::Command::new(svcs)
        .arg("-L")
        .arg(fmri)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(SVCS_TIMEOUT, run).await {
        Err(_) => anyhow::bail!("cannot find the log of SMF service {fmri}: `svcs -L` took over 30 s"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "cannot find the log of SMF service {fmri}: {} does not exist (smfServiceName needs SMF, \
             i.e. SmartOS or illumos; give config.path elsewhere)",
            svcs.display()
        ),
        Ok(Err(e)) => return Err(e).with_context(|| format!("cannot run {} -L {fmri}", svcs.display())),
        Ok(Ok(output)) => output,
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stderr.trim().is_empty() {
        anyhow::bail!(
            "cannot find the log of SMF service {fmri}: `svcs -L {fmri}` failed ({}): {}",
            output.status,
            clip(stderr.trim())
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let paths: Vec<PathBuf> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() || paths.iter().any(|p| !p.is_absolute()) {
        anyhow::bail!(
            "cannot find the log of SMF service {fmri}: `svcs -L {fmri}` answered {:?}, not log file paths",
            clip(stdout.trim())
        );
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::sync::mpsc;

    use super::*;

    fn fields(config: Value) -> Vec<String> {
        let mut errors = Vec::new();
        assert!(parse(&config, &mut errors).is_none(), "{config} parsed");
        errors.into_iter().map(|e| e.field).collect()
    }

    fn config(value: Value) -> Config {
        let mut errors = Vec::new();
        parse(&value, &mut errors).unwrap_or_else(|| panic!("{errors:?}"))
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = config(json!({"path": "/var/log/app.log", "match": {"pattern": "ERROR"}}));
        assert_eq!(c.source, Source::Path("/var/log/app.log".into()));
        assert_eq!((c.threshold, c.period), (1, Duration::from_secs(60)));
        let c = config(
            json!({"smfServiceName": "svc:/site/app:default", "match": {"pattern": "x"},
            "threshold": 5, "period": "5m"}),
        );
        assert_eq!(c.source, Source::Smf("svc:/site/app:default".into()));
        assert_eq!((c.threshold, c.period), (5, Duration::from_secs(300)));
    }

    #[test]
    fn each_wrong_field_is_named() {
        let m = json!({"pattern": "x"});
        assert_eq!(fields(json!({"match": m})), ["config.path"]);
        assert_eq!(fields(json!({"path": "/x"})), ["config.match"]);
        assert_eq!(fields(json!({"path": "/x", "match": {}})), ["config.match.pattern"]);
        assert_eq!(
            fields(json!({"path": "/x", "match": {"pattern": "("}})),
            ["config.match.pattern"]
        );
        assert_eq!(fields(json!({"path": "rel/x", "match": m})), ["config.path"]);
        assert_eq!(
            fields(json!({"path": "/x", "smfServiceName": "app", "match": m})),
            ["config.smfServiceName"]
        );
        assert_eq!(
            fields(json!({"smfServiceName": "-o x", "match": m})),
            ["config.smfServiceName"]
        );
        assert_eq!(
            fields(json!({"path": "/x", "match": m, "threshold": 0, "period": "soon"})),
            ["config.threshold", "config.period"]
        );
        assert_eq!(
            fields(json!({"path": "/x", "match": m, "fields": {}})),
            ["config.fields"]
        );
        assert_eq!(fields(json!(["/x"])), ["config"]);
    }

    proptest::proptest! {
        #[test]
        fn any_config_parses_or_names_its_wrong_fields(value in crate::fuzz_json::json_with(
            &["path", "smfServiceName", "match", "pattern", "type", "flags", "invert", "threshold", "period"],
            &["/var/log/x", "svc:/a:default", "regex", "substring", "i", "60s", "ERR(", "-x"],
        )) {
            let mut errors = Vec::new();
            let parsed = parse(&value, &mut errors);
            proptest::prop_assert_eq!(parsed.is_some(), errors.is_empty());
            proptest::prop_assert!(errors.iter().all(|e| e.field.starts_with("config")));
        }
    }

    fn matcher(value: Value) -> Matcher {
        Matcher::parse(&value, "config.match", false, &mut Vec::new()).unwrap()
    }

    #[test]
    fn a_hit_is_a_matching_line_or_with_invert_a_line_not_matching() {
        let m = matcher(json!({"pattern": "ERR\\w*"}));
        assert_eq!(
            line_hit(&m, "an ERROR here"),
            Some(json!({"match": "ERROR", "context": "an ERROR here"}))
        );
        assert_eq!(line_hit(&m, "all good"), None);
        let m = matcher(json!({"pattern": "heartbeat", "invert": true}));
        assert_eq!(line_hit(&m, "heartbeat ok"), None);
        assert_eq!(
            line_hit(&m, "something else"),
            Some(json!({"match": null, "context": "something else"}))
        );
    }

    #[test]
    fn samples_are_clipped() {
        let long = "x".repeat(5000);
        let m = matcher(json!({"pattern": "x+"}));
        let hit = line_hit(&m, &long).unwrap();
        assert_eq!(hit["context"].as_str().unwrap().len(), MAX_SAMPLE_CHARS + 3);
        assert_eq!(clip("é".repeat(2000).as_str()).chars().count(), MAX_SAMPLE_CHARS + 3);
    }

    /// One poll's hits.
    fn seen(samples: Vec<Value>) -> Hits {
        samples.into_iter().collect()
    }

    fn hits(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!(i)).collect()
    }

    #[test]
    fn matches_in_one_read_count_one_each() {
        let now = Instant::now();
        let mut t = Tally::new(3, Duration::from_secs(60));
        let (count, samples) = t.record(now, seen(hits(3))).expect("3 matches in one chunk are 3");
        assert_eq!(count, 3);
        assert_eq!(samples, hits(3));
    }

    #[test]
    fn the_window_slides_and_restarts_after_a_fault() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut t = Tally::new(3, Duration::from_secs(60));
        assert_eq!(t.record(at(0), seen(hits(1))), None);
        assert_eq!(t.record(at(50), seen(vec![json!("b")])), None);
        assert_eq!(t.record(at(55), seen(vec![])), None);
        assert_eq!(
            t.record(at(70), seen(vec![json!("c")])),
            None,
            "the first hit left the period"
        );
        // A counter reset at 60 s would have seen 2 here, not 3.
        let (count, samples) = t.record(at(75), seen(vec![json!("d")])).unwrap();
        assert_eq!(count, 3);
        assert_eq!(samples, [json!("b"), json!("c"), json!("d")]);
        assert_eq!(t.record(at(76), seen(hits(2))), None, "the window restarted");
        assert_eq!(t.record(at(140), seen(hits(1))), None, "76's hits left the period");
    }

    #[test]
    fn samples_older_than_the_period_are_not_shown() {
        let start = Instant::now();
        let mut t = Tally::new(2, Duration::from_secs(60));
        assert_eq!(t.record(start, seen(vec![json!("old")])), None);
        let later = start + Duration::from_secs(100);
        assert_eq!(t.record(later, seen(hits(2))), Some((2, hits(2))));
    }

    #[test]
    fn threshold_one_faults_on_each_hit_and_samples_stay_few() {
        let now = Instant::now();
        let mut t = Tally::new(1, Duration::from_secs(60));
        let (count, samples) = t.record(now, seen(hits(10))).unwrap();
        assert_eq!(count, 10);
        assert_eq!(samples, [json!(7), json!(8), json!(9)]);
        assert_eq!(t.record(now, seen(hits(1))).unwrap().0, 1);
    }

    #[test]
    fn messages_name_the_logs_the_pattern_the_count_and_the_period() {
        let one = [PathBuf::from("/var/log/x")];
        assert_eq!(
            message(&one, "/ERROR/i", 3, Duration::from_secs(60)),
            "Log \"/var/log/x\" matched /ERROR/i 3 times in 60 s"
        );
        let two = [PathBuf::from("/a"), PathBuf::from("/b")];
        assert_eq!(
            message(&two, "/x/", 1, Duration::from_millis(1500)),
            "Logs \"/a\", \"/b\" matched /x/ once in 1s 500ms"
        );
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("svcs");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn smf_logs_are_what_svcs_names_or_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let svcs = script(
            dir.path(),
            r#"[ "$1" = -L ] && printf '/var/svc/log/a:default.log\n/var/svc/log/a:two.log\n'"#,
        );
        assert_eq!(
            smf_logs(&svcs, "a").await.unwrap(),
            [
                PathBuf::from("/var/svc/log/a:default.log"),
                PathBuf::from("/var/svc/log/a:two.log")
            ]
        );
        let svcs = script(
            dir.path(),
            "echo \"svcs: Pattern '$2' doesn't match any instances\" >&2; exit 1",
        );
        let err = smf_logs(&svcs, "nope").await.unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("doesn't match"), "{err}");
        let err = smf_logs(&dir.path().join("absent"), "a").await.unwrap_err().to_string();
        assert!(err.contains("does not exist") && err.contains("config.path"), "{err}");
        let svcs = script(dir.path(), "echo relative.log");
        assert!(smf_logs(&svcs, "a").await.is_err());
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Drives a running probe on the paused clock: each `step` is one poll.
    struct Probe {
        rx: mpsc::Receiver<Observation>,
        _task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    const POLL: Duration = Duration::from_secs(1);

    impl Probe {
        fn start(config: Config) -> Probe {
            let (tx, rx) = mpsc::channel(16);
            let follow = Follow {
                poll: POLL,
                svcs: "/nonexistent/svcs".into(),
            };
            Probe {
                rx,
                _task: tokio::spawn(run_with(config, follow, tx)),
            }
        }

        /// Lets `n` polls happen, then answers what was reported.
        async fn after_polls(&mut self, n: u32) -> Vec<Observation> {
            tokio::time::sleep(POLL * n).await;
            let mut seen = Vec::new();
            while let Ok(o) = self.rx.try_recv() {
                seen.push(o);
            }
            seen
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_counts_appended_matches_in_a_sliding_period_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "ERROR before the probe started\n");
        let mut probe = Probe::start(config(json!({
            "path": path.to_str().unwrap(),
            "match": {"pattern": "ERROR"},
            "threshold": 3,
            "period": 10,
        })));
        assert!(probe.after_polls(2).await.is_empty(), "lines there before do not count");

        append(&path, "ERROR one\nfine\nERROR two\n");
        assert!(probe.after_polls(1).await.is_empty());
        // Rename and create: the old file's last match and the new file's count.
        append(&path, "ERROR three\n");
        std::fs::rename(&path, dir.path().join("app.log.0")).unwrap();
        append(&path, "ERROR four\n");
        let seen = probe.after_polls(1).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].value, Some(json!(4)));
        assert!(!seen[0].clear);
        assert_eq!(
            seen[0].message,
            format!("Log \"{}\" matched /ERROR/ 4 times in 10 s", path.display())
        );
        assert_eq!(seen[0].details.as_ref().unwrap()["matches"][2]["context"], "ERROR four");

        // Copytruncate (seen before the file outgrows what was read), then
        // two matches now and one after the period: no fault.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(probe.after_polls(1).await.is_empty());
        append(&path, "ERROR five\nERROR six\n");
        assert!(probe.after_polls(11).await.is_empty());
        append(&path, "ERROR seven\n");
        assert!(probe.after_polls(1).await.is_empty(), "five and six left the period");
        append(&path, "ERROR eight\nERROR nine\n");
        assert_eq!(probe.after_polls(1).await.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_that_does_not_exist_yet_is_waited_for_and_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.log");
        let mut probe = Probe::start(config(json!({
            "path": path.to_str().unwrap(),
            "match": {"pattern": "alive", "invert": true},
        })));
        assert!(probe.after_polls(3).await.is_empty());
        append(&path, "alive\nalive\nhalf a li");
        assert!(probe.after_polls(2).await.is_empty(), "a partial line waits");
        append(&path, "ne\n");
        let seen = probe.after_polls(1).await;
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].value, Some(json!(1)));
        assert_eq!(
            seen[0].details,
            Some(json!({"matches": [{"match": null, "context": "half a line"}]}))
        );
        assert!(seen[0].message.contains("/alive/ (inverted) once in 60 s"));
    }

    #[tokio::test(start_paused = true)]
    async fn read_errors_reopen_the_log_then_stop_the_probe_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let c = config(json!({"path": dir.path().to_str().unwrap(), "match": {"pattern": "x"}}));
        let follow = Follow {
            poll: POLL,
            svcs: "/nonexistent/svcs".into(),
        };
        let started = Instant::now();
        let err = format!("{:#}", run_with(c, follow, tx).await.unwrap_err());
        assert!(
            err.contains("failed 5 times") && err.contains("not a regular file"),
            "{err}"
        );
        assert_eq!(started.elapsed(), POLL * 4, "tried once a poll");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unresolvable_smf_service_stops_the_probe_with_why() {
        let (tx, _rx) = mpsc::channel(1);
        let c = config(json!({"smfServiceName": "app", "match": {"pattern": "x"}}));
        let follow = Follow {
            poll: POLL,
            svcs: "/nonexistent/svcs".into(),
        };
        let err = run_with(c, follow, tx).await.unwrap_err().to_string();
        assert!(err.contains("SMF service app"), "{err}");
    }
}
