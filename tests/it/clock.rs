//! The wall clock stepped under a running standalone (issue 12), as NTP
//! steps a clock that was wrong: libfaketime (Debian's `faketime`) is
//! preloaded into the process with an offset read from a file at every
//! clock reading, so the test moves the wall clock at run time. The
//! monotonic clock is left alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`), as in
//! a real step.
//!
//! What is right: a hold is a duration, so it runs on monotonic time and a
//! step either way changes nothing; a relay heard a second ago is not
//! silent because the wall clock moved an hour. A maintenance window's end
//! is a wall-clock time: a step forward past it ends the window (its faults
//! notify at once), and a step back only postpones its end until the wall
//! clock reaches it again.
//!
//! Nothing sleeps to synchronise: the test waits until the daemon's `Date`
//! header shows the step, and for emails with deadlines. The only bounds on
//! time are lower ones ("not before the hold"), which load cannot break.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{
    current_zoneevent, now_ms, tail_of, wait_until_for, Amon, AmonConfig, Api, Email, ExecZones, Mode, SmtpServer,
    ZoneFeed,
};

/// The hold of these tests: long enough that the step lands well inside it
/// however slow the machine is.
const HOLD: Duration = Duration::from_secs(15);

/// Slack for "not before": the hold runs from the event, which the relay
/// reads just after our clock reading.
const SLACK: Duration = Duration::from_millis(500);

/// How long an email may take here: the hold, plus whatever a loaded
/// machine adds. A hold on the wall clock stepped an hour would take an
/// hour; a window end missed after a step forward, the rest of the window.
const EMAIL_DEADLINE: u64 = 90;

/// libfaketime's multi-threaded variant (amon has many threads), wherever
/// Debian's multiarch layout put it. `None` says why, or panics under CI,
/// which installs the `faketime` package.
fn libfaketime() -> Option<PathBuf> {
    let found = fs::read_dir("/usr/lib").ok().and_then(|dirs| {
        dirs.filter_map(|d| d.ok())
            .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
            .find(|p| p.exists())
    });
    if found.is_none() {
        let why = "no libfaketime (Debian: apt-get install faketime)";
        assert!(std::env::var_os("CI").is_none(), "{why}; CI must provide it");
        eprintln!("skipped: {why}; these tests step the wall clock under amon");
    }
    found
}

/// A standalone under libfaketime, its SMTP server and its zone feed.
struct SteppedSite {
    amon: Amon,
    api: Api,
    smtp: SmtpServer,
    zones: ZoneFeed,
    /// What libfaketime reads at every clock reading: the offset.
    offset_file: PathBuf,
    /// Last, so the files outlive the processes using them.
    dir: tempfile::TempDir,
}

impl SteppedSite {
    /// `None` when this machine has no libfaketime or no aiosmtpd.
    fn start(hold: Duration) -> Option<SteppedSite> {
        let library = libfaketime()?;
        let dir = tempfile::Builder::new()
            .prefix("amon-clock-it-")
            .tempdir()
            .expect("tempdir");
        let smtp = SmtpServer::start(dir.path())?;
        let zones = ZoneFeed::create(dir.path().join("zones.jsonl"));
        let offset_file = dir.path().join("faketime");
        write_offset(&offset_file, "+0");
        let text = AmonConfig {
            smtp_port: Some(smtp.port),
            zones: Some(ExecZones::auto(zones.command())),
            ..AmonConfig::new(&dir.path().join("data"))
        }
        .text()
        .replace("hold = \"2s\"", &format!("hold = \"{}s\"", hold.as_secs()));
        let config = dir.path().join("standalone.toml");
        fs::write(&config, text).expect("config");
        let library = library.display().to_string();
        let offset = offset_file.display().to_string();
        let amon = Amon::start_with_env(
            Mode::Standalone,
            &config,
            &dir.path().join("standalone.log"),
            &[
                ("LD_PRELOAD", &library),
                ("FAKETIME_TIMESTAMP_FILE", &offset),
                // Read the file at every clock reading, so a step takes
                // effect at once…
                ("FAKETIME_NO_CACHE", "1"),
                // …and only the wall clock moves, as when NTP steps it.
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        );
        let api = amon.api();
        api.create(
            "/accounts",
            &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
        );
        Some(SteppedSite {
            amon,
            api,
            smtp,
            zones,
            offset_file,
            dir,
        })
    }

    /// A machine-up probe of alice's on a new zone, which runs.
    fn running_zone(&self) -> Uuid {
        let zone = Uuid::new_v4();
        self.api.create(
            "/pub/alice/probes",
            &json!({ "type": "machine-up", "machine": zone, "name": "web0 up" }),
        );
        // A baseline, so the watcher knows the zone runs.
        self.zones.append(&current_zoneevent(zone, "ready", "running"));
        zone
    }

    /// Sets the wall clock `seconds` off the real one and waits until the
    /// daemon's `Date` header shows it.
    fn step(&self, seconds: i64) {
        write_offset(&self.offset_file, &format!("{seconds:+}"));
        self.wait_until(&format!("the daemon's wall clock {seconds:+} s off"), || {
            let off = self.clock_offset();
            ((off - seconds).abs() <= 5).then_some(())
        });
    }

    /// How far (in seconds) the daemon's wall clock is from ours, from the
    /// `Date` header of a `GET /ping` (whole seconds; actix refreshes it
    /// twice a second).
    fn clock_offset(&self) -> i64 {
        let response = self.api.exchange("GET", "/ping", None);
        let date = response.header("date").expect("a Date header");
        let theirs = chrono::DateTime::parse_from_rfc2822(date)
            .unwrap_or_else(|e| panic!("Date {date:?}: {e}"))
            .timestamp();
        theirs - now_ms() / 1000
    }

    /// Alice's open alarm, once `ready` says it is as expected.
    fn open_alarm(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(what, || {
            let (_, alarms) = self.api.get("/pub/alice/alarms?state=open");
            alarms.as_array()?.iter().find(|a| ready(a)).cloned()
        })
    }

    fn emails_about(&self, zone: Uuid) -> Vec<Email> {
        let zone = zone.to_string();
        self.smtp
            .emails()
            .into_iter()
            .filter(|e| e.subject.contains(&zone))
            .collect()
    }

    fn wait_for_emails_about(&self, zone: Uuid, n: usize) -> Vec<Email> {
        wait_until_for(
            &format!("{n} email(s) about {zone}"),
            EMAIL_DEADLINE,
            || self.context(),
            || {
                let emails = self.emails_about(zone);
                (emails.len() >= n).then_some(emails)
            },
        )
    }

    fn log_lines_with(&self, msg: &str) -> Vec<Value> {
        self.amon.log_messages(msg)
    }

    fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        wait_until_for(what, 30, || self.context(), check)
    }

    fn context(&self) -> String {
        format!(
            "--- {} (offset file: {:?})\n{}\n--- emails: {:?}",
            self.dir.path().display(),
            fs::read_to_string(&self.offset_file).unwrap_or_default(),
            tail_of(&self.amon.log, 40),
            self.smtp.emails().iter().map(|e| &e.subject).collect::<Vec<_>>()
        )
    }
}

/// Replaces the offset file in one rename, so libfaketime never reads half.
fn write_offset(path: &Path, offset: &str) {
    let next = path.with_extension("next");
    fs::write(&next, format!("{offset}\n")).expect("offset file");
    fs::rename(&next, path).expect("offset file");
}

/// A zone goes down; an hour's step of the wall clock (`step` seconds)
/// comes while its hold runs. The email comes after the hold, not before it
/// and not an hour off; no server incident opens (the relay in the same
/// process went on heartbeating); the clear follows when the zone is back.
fn a_hold_across_a_step(step: i64) {
    let Some(site) = SteppedSite::start(HOLD) else {
        return;
    };
    let zone = site.running_zone();
    let went_down = Instant::now();
    site.zones.append(&current_zoneevent(zone, "running", "shutting_down"));
    site.open_alarm("the alarm, its hold running", |a| {
        a["faults"].as_array().is_some_and(|f| !f.is_empty())
    });
    site.step(step);
    assert!(
        site.emails_about(zone).is_empty() && went_down.elapsed() < HOLD,
        "the step came only after the {HOLD:?} hold: this machine is too slow for this test to mean anything\n{}",
        site.context()
    );

    let emails = site.wait_for_emails_about(zone, 1);
    let waited = went_down.elapsed();
    assert!(
        waited + SLACK >= HOLD,
        "the email came {waited:?} after the zone went down, before the {HOLD:?} hold"
    );
    assert_eq!(emails.len(), 1, "{}", site.context());
    assert!(emails[0].subject.ends_with("is down"), "{:?}", emails[0].subject);
    assert_eq!(
        site.log_lines_with("server incident opened"),
        Vec::<Value>::new(),
        "a step of the wall clock is not a silent relay\n{}",
        site.context()
    );

    let fault = emails[0].message_id.clone();
    site.zones.append(&current_zoneevent(zone, "shutting_down", "running"));
    let emails = site.wait_for_emails_about(zone, 2);
    let clear = emails.iter().find(|e| e.message_id != fault).expect("a second message");
    assert!(clear.body.contains("is back up"), "{}", clear.body);
}

#[test]
fn a_hold_running_when_the_wall_clock_steps_back_an_hour_ends_after_the_hold() {
    a_hold_across_a_step(-3600);
}

#[test]
fn a_hold_running_when_the_wall_clock_steps_forward_an_hour_ends_after_the_hold_not_before() {
    a_hold_across_a_step(3600);
}

/// A fault recorded under a window that ends in two hours; the wall clock
/// steps three hours forward: the window is over, removed, and the fault
/// notifies at once, not two (monotonic) hours later.
#[test]
fn a_step_forward_past_a_maintenance_windows_end_ends_it_and_its_fault_notifies() {
    let Some(site) = SteppedSite::start(Duration::from_secs(2)) else {
        return;
    };
    let zone = site.running_zone();
    let window = site.api.create(
        "/pub/alice/maintenances",
        &json!({ "end": "2h", "machines": [zone], "notes": "clock test" }),
    );
    let id = window["id"].as_u64().expect("window id");
    site.zones.append(&current_zoneevent(zone, "running", "shutting_down"));
    site.open_alarm("the fault recorded as a maintenance fault", |a| {
        a["maintFaults"].as_array().is_some_and(|f| !f.is_empty())
    });

    site.step(3 * 3600);
    let emails = site.wait_for_emails_about(zone, 1);
    assert_eq!(emails.len(), 1, "{}", site.context());
    assert!(emails[0].subject.ends_with("is down"), "{:?}", emails[0].subject);
    let (status, body) = site.api.get(&format!("/pub/alice/maintenances/{id}"));
    assert_eq!(status, 410, "the ended window is gone: {body}");
}

/// A fault recorded under a window that ends in 20 s; the wall clock then
/// steps 20 s back. The window ends when the wall clock reaches its end
/// again, 20 s later than it would have: never at the monotonic instant it
/// first aimed at, and not lost.
#[test]
fn a_step_back_keeps_a_maintenance_window_until_the_wall_clock_reaches_its_end_again() {
    const WINDOW: i64 = 20_000;
    const BACK: i64 = 20;
    let Some(site) = SteppedSite::start(Duration::from_secs(2)) else {
        return;
    };
    let zone = site.running_zone();
    // The daemon's wall clock is ours (offset 0) until the step.
    let end = now_ms() + WINDOW;
    site.api.create(
        "/pub/alice/maintenances",
        &json!({ "end": end, "machines": [zone], "notes": "clock test" }),
    );
    site.zones.append(&current_zoneevent(zone, "running", "shutting_down"));
    site.open_alarm("the fault recorded as a maintenance fault", |a| {
        a["maintFaults"].as_array().is_some_and(|f| !f.is_empty())
    });
    site.step(-BACK);
    assert!(
        now_ms() < end && site.emails_about(zone).is_empty(),
        "the step came only after the window's end: this machine is too slow for this test to mean anything\n{}",
        site.context()
    );

    site.wait_for_emails_about(zone, 1);
    let late = now_ms() - end;
    assert!(
        late + SLACK.as_millis() as i64 >= BACK * 1000,
        "the window ended {late} ms after its end by our clock, before the daemon's (stepped {BACK} s back) reached it\n{}",
        site.context()
    );
}
