//! The flood guard and delivery under trouble (issue #6, SPEC §6–§7),
//! against a real `amon master`, a real SMTP server, and events posted to
//! `POST /events` exactly as a relay sends them: the test plays the relay of
//! compute node `cn-7` (its `started`, heartbeats and `shutting_down`, and
//! its zones' up/down decisions).
//!
//! Absence is proven the way `e2e` does: once everything expected is in, a
//! marker machine on another server goes down and its email is awaited. Any
//! extra email (due no later than the marker's, which waits a whole hold)
//! would be there too. Nothing sleeps to synchronise; the only sleeps pace
//! the simulated relay's heartbeats, as a relay's timer does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{free_port, now_ms, tail_of, wait_until, Amon, AmonConfig, Api, Email, Mode, SmtpServer, HOLD};

/// `[notify] heartbeat_timeout` for every test here.
pub(crate) const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the simulated relay heartbeats: a twelfth of the timeout, so
/// only a stall of most of the timeout on a loaded machine could make a
/// live relay look silent (a real one beats every few seconds).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

/// Slack for "not before": the master's timers start a little after our
/// clock reading, but our polls notice an email up to a poll late.
const SLACK: Duration = Duration::from_millis(100);

/// How many zones `cn-7` runs.
const ZONES: usize = 30;

// ---- a master, its mail server, and the test in the relay's place ----

/// An `amon master` (restartable on its data dir), the SMTP server it mails
/// (possibly not started yet), in one temporary directory.
struct Rig {
    /// First, so it is killed before its files go.
    master: Amon,
    smtp: Option<SmtpServer>,
    smtp_port: u16,
    api: Api,
    config: PathBuf,
    starts: usize,
    dir: tempfile::TempDir,
}

impl Rig {
    /// A master mailing a running SMTP server; `None` when this machine has
    /// no aiosmtpd (see [`SmtpServer::start`]).
    fn start() -> Option<Rig> {
        Rig::start_with(Vec::new())
    }

    /// [`Rig::start`] with more `[notify]` lines.
    fn start_with(notify_extra: Vec<String>) -> Option<Rig> {
        let dir = tempdir();
        let smtp = SmtpServer::start(dir.path())?;
        let port = smtp.port;
        Some(Rig::with_master_config(dir, Some(smtp), port, notify_extra))
    }

    /// A master whose SMTP server is down: nothing listens on its port
    /// (connections are refused) until [`Rig::start_smtp`].
    fn start_without_smtp() -> Option<Rig> {
        if !SmtpServer::available() {
            return None;
        }
        let dir = tempdir();
        let port = free_port();
        Some(Rig::with_master(dir, None, port))
    }

    fn with_master(dir: tempfile::TempDir, smtp: Option<SmtpServer>, smtp_port: u16) -> Rig {
        Rig::with_master_config(dir, smtp, smtp_port, Vec::new())
    }

    fn with_master_config(
        dir: tempfile::TempDir,
        smtp: Option<SmtpServer>,
        smtp_port: u16,
        notify_extra: Vec<String>,
    ) -> Rig {
        let config = AmonConfig {
            smtp_port: Some(smtp_port),
            heartbeat_timeout: Some(HEARTBEAT_TIMEOUT),
            notify_extra,
            ..AmonConfig::new(&dir.path().join("master-data"))
        }
        .write(&dir.path().join("master.toml"));
        let master = Amon::start(Mode::Master, &config, &dir.path().join("master-1.log"));
        let api = master.api();
        Rig {
            master,
            smtp,
            smtp_port,
            api,
            config,
            starts: 1,
            dir,
        }
    }

    /// SIGKILLs the master and starts it again on the same data dir and
    /// config (a new log file per run).
    fn kill_and_restart(&mut self) {
        self.master.kill();
        self.starts += 1;
        let log = self.dir.path().join(format!("master-{}.log", self.starts));
        self.master = Amon::start(Mode::Master, &self.config, &log);
        self.api = self.master.api();
    }

    /// Starts aiosmtpd on the port the master was configured with.
    fn start_smtp(&mut self) {
        assert!(self.smtp.is_none(), "the SMTP server already runs");
        self.smtp = Some(SmtpServer::start_on(self.dir.path(), self.smtp_port).expect("aiosmtpd was available"));
    }

    /// Every email received so far (none while no SMTP server ever ran).
    fn emails(&self) -> Vec<Email> {
        self.smtp.as_ref().map(SmtpServer::emails).unwrap_or_default()
    }

    /// The emails to `<login>@example.com`, in arrival order.
    fn emails_to(&self, login: &str) -> Vec<Email> {
        let to = format!("{login}@example.com");
        self.emails().into_iter().filter(|e| e.rcpt_to == to).collect()
    }

    /// Waits until `<login>@example.com` has at least `n` emails; returns
    /// them all.
    fn wait_for_emails_to(&self, login: &str, n: usize) -> Vec<Email> {
        self.wait_until(&format!("{n} email(s) to {login}"), || {
            let emails = self.emails_to(login);
            (emails.len() >= n).then_some(emails)
        })
    }

    /// The logs of every master run, the SMTP log and the mail received.
    fn context(&self) -> String {
        let mut out = format!("--- rig directory {}\n", self.dir.path().display());
        for run in 1..=self.starts {
            let log = self.dir.path().join(format!("master-{run}.log"));
            out.push_str(&format!("--- {}:\n{}\n", log.display(), tail_of(&log, 40)));
        }
        if let Some(smtp) = &self.smtp {
            out.push_str(&format!("--- smtp log:\n{}\n", tail_of(smtp.log(), 20)));
        }
        out.push_str("--- emails received:\n");
        for email in self.emails() {
            out.push_str(&format!("to {}: {}\n", email.rcpt_to, email.subject));
        }
        out
    }

    fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.context(), check)
    }

    fn create_account(&self, login: &str) {
        self.api.create(
            "/accounts",
            &json!({ "login": login, "email": format!("{login}@example.com"), "operator": true }),
        );
    }

    /// One machine-up probe per machine, owned by `login`, mailing its email.
    fn watch(&self, login: &str, machines: &[Machine]) {
        for m in machines {
            self.api.create(
                &format!("/pub/{login}/probes"),
                &json!({ "type": "machine-up", "machine": m.uuid.to_string(), "name": format!("{} up", m.alias) }),
            );
        }
    }

    /// `POST /events` with a batch, which must be committed (`202`).
    fn post(&self, events: Vec<Value>) {
        post_events(self.api, events);
    }

    /// The master's `delivery failed; will retry` lines so far, in this run:
    /// notification id → the highest attempt that failed.
    fn failed_attempts(&self) -> BTreeMap<String, u64> {
        let mut failed = BTreeMap::new();
        for line in self.master.log_messages("delivery failed; will retry") {
            let id = line["notification"].as_str().unwrap_or_default().to_string();
            let attempt = line["attempt"].as_u64().unwrap_or_default();
            let highest = failed.entry(id).or_insert(0);
            *highest = attempt.max(*highest);
        }
        failed
    }

    /// Notification ids this run logged as delivered, with repeats.
    fn delivered(&self) -> Vec<String> {
        self.master
            .log_messages("notification delivered")
            .iter()
            .map(|line| line["notification"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Sends the marker machine (watched by bob, on another server with no
    /// relay lifecycle) down and waits for bob's email: from then on, any
    /// email due before it has arrived.
    fn marker(&self, marker: &Machine) {
        let elsewhere = Relay::new("cn-9");
        self.post(vec![elsewhere.machine(marker, false)]);
        let emails = self.wait_for_emails_to("bob", 1);
        assert_eq!(emails.len(), 1, "one email for the marker\n{}", self.context());
        assert!(
            emails[0].subject.contains(&marker.uuid.to_string()),
            "bob's email is the marker's: {:?}",
            emails[0].subject
        );
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("amon-flood-it-")
        .tempdir()
        .expect("tempdir")
}

pub(crate) fn post_events(api: Api, events: Vec<Value>) {
    let body = Value::Array(events);
    let (status, response) = api.post("/events", &body);
    assert_eq!(status, 202, "POST /events answered {status}: {response}");
}

/// A zone: its uuid and alias.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) uuid: Uuid,
    pub(crate) alias: String,
}

/// `n` fresh zones called `web0`, `web1`, …
pub(crate) fn machines(n: usize) -> Vec<Machine> {
    (0..n)
        .map(|i| Machine {
            uuid: Uuid::new_v4(),
            alias: format!("web{i}"),
        })
        .collect()
}

pub(crate) fn marker() -> Machine {
    Machine {
        uuid: Uuid::new_v4(),
        alias: "marker".into(),
    }
}

/// The test in a relay's place: the events of one compute node's relay.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    pub(crate) server: Uuid,
    hostname: &'static str,
}

impl Relay {
    pub(crate) fn new(hostname: &'static str) -> Relay {
        Relay {
            server: Uuid::new_v4(),
            hostname,
        }
    }

    /// A zone's transition, as the relay decided it.
    pub(crate) fn machine(&self, m: &Machine, up: bool) -> Value {
        let (old, new) = if up {
            ("ready", "running")
        } else {
            ("running", "shutting_down")
        };
        json!({
            "type": "machine",
            "uuid": Uuid::new_v4(),
            "time": now_ms(),
            "relay": self.server,
            "machine": m.uuid,
            "server": self.server,
            "alias": m.alias,
            "oldState": old,
            "newState": new,
            "up": up,
        })
    }

    pub(crate) fn machines(&self, ms: &[Machine], up: bool) -> Vec<Value> {
        ms.iter().map(|m| self.machine(m, up)).collect()
    }

    /// `started`, `heartbeat` or `shutting_down`.
    pub(crate) fn server(&self, event: &str) -> Value {
        json!({
            "type": "server",
            "uuid": Uuid::new_v4(),
            "time": now_ms(),
            "relay": self.server,
            "server": self.server,
            "event": event,
            "hostname": self.hostname,
        })
    }

    /// Comes up: `started`, then every zone it runs, up (what the master
    /// learns the server's machines from; an up with no open alarm makes
    /// nothing).
    pub(crate) fn come_up(&self, api: Api, running: &[Machine]) {
        let mut batch = vec![self.server("started")];
        batch.extend(self.machines(running, true));
        post_events(api, batch);
    }
}

/// The relay's heartbeat timer, posting to the master until stopped.
pub(crate) struct Heartbeats {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeats {
    pub(crate) fn start(api: Api, relay: &Relay) -> Heartbeats {
        let (stop, stopped) = mpsc::channel::<()>();
        let relay = relay.clone();
        let thread = std::thread::spawn(move || {
            // The timeout is the timer: a relay heartbeats on a period.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT_EVERY) {
                post_events(api, vec![relay.server("heartbeat")]);
            }
        });
        Heartbeats {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the timer (the relay is gone); a heartbeat that failed fails
    /// the test.
    pub(crate) fn stop(mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Checks an incident's down email: its subject names the server and the
/// count, its body the reason and every machine.
fn assert_server_down_email(email: &Email, reason: &str, listed: &[Machine], rig: &Rig) {
    assert_eq!(
        email.subject,
        format!(
            "[amon coal] Server cn-7 is down: {} of your machines are affected",
            listed.len()
        ),
        "server down subject\n{}",
        rig.context()
    );
    assert!(
        email.body.starts_with(&format!("Server cn-7 is down: {reason}.")),
        "server down body:\n{}",
        email.body
    );
    let missing: Vec<&Machine> = listed
        .iter()
        .filter(|m| !email.body.contains(&m.uuid.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "the body does not list {missing:?}:\n{}",
        email.body
    );
    assert!(
        email.body.contains(&format!("Affected machines ({}):", listed.len())),
        "server down body:\n{}",
        email.body
    );
}

// ---- issue #6, point 1: an announced shutdown ----

/// cn-7 announces its shutdown and its 30 zones go down: alice gets one
/// email naming the server and listing all 30. It comes back with 28 zones:
/// one summary in the same thread, then, a hold after the return, one alarm
/// email for each of the two still down. Four emails in all.
#[test]
fn announced_server_shutdown_mails_once_then_summary_then_alarms_for_machines_still_down() {
    let Some(rig) = Rig::start() else {
        return;
    };
    let zones = machines(ZONES);
    let marker = marker();
    rig.create_account("alice");
    rig.watch("alice", &zones);
    rig.create_account("bob");
    rig.watch("bob", std::slice::from_ref(&marker));

    let cn7 = Relay::new("cn-7");
    cn7.come_up(rig.api, &zones);

    // The relay says it is going down, its zones stop, and it is gone.
    let shut_down = Instant::now();
    rig.post(vec![cn7.server("shutting_down")]);
    rig.post(cn7.machines(&zones, false));

    let emails = rig.wait_for_emails_to("alice", 1);
    let waited = shut_down.elapsed();
    assert_eq!(emails.len(), 1, "one email for the shutdown\n{}", rig.context());
    let down = emails[0].clone();
    assert!(
        waited + SLACK >= HOLD,
        "the incident was mailed {waited:?} after the shutdown, before the {HOLD:?} hold"
    );
    assert_server_down_email(&down, "its relay announced a shutdown", &zones, &rig);

    // Back, with two zones that do not come up; heartbeats resume.
    let (up, still_down) = zones.split_at(ZONES - 2);
    let back = Instant::now();
    cn7.come_up(rig.api, up);
    let beats = Heartbeats::start(rig.api, &cn7);

    let emails = rig.wait_for_emails_to("alice", 4);
    let waited = back.elapsed();
    let summaries: Vec<&Email> = emails
        .iter()
        .filter(|e| e.in_reply_to.as_deref() == Some(down.message_id.as_str()))
        .collect();
    assert_eq!(summaries.len(), 1, "one summary in the thread\n{}", rig.context());
    let summary = summaries[0];
    assert_eq!(summary.subject, format!("Re: {}", down.subject));
    assert!(
        summary.body.starts_with("Server cn-7 is back (since "),
        "summary body:\n{}",
        summary.body
    );
    assert!(
        summary.body.contains("28 of your machines are up, 2 are still down."),
        "summary body:\n{}",
        summary.body
    );
    let (still_down_part, up_part) = summary
        .body
        .split_once("Up (28):")
        .unwrap_or_else(|| panic!("the summary lists the machines up:\n{}", summary.body));
    let still_down_part = still_down_part
        .split_once("Still down (2):")
        .unwrap_or_else(|| panic!("the summary lists the machines still down:\n{}", summary.body))
        .1;
    for m in still_down {
        assert!(
            still_down_part.contains(&m.uuid.to_string()),
            "{} listed as still down:\n{}",
            m.alias,
            summary.body
        );
    }
    for m in up {
        assert!(
            up_part.contains(&m.uuid.to_string()),
            "{} listed as up:\n{}",
            m.alias,
            summary.body
        );
    }

    // The alarms for the two still down: one each, after the hold.
    let alarms: Vec<&Email> = emails
        .iter()
        .filter(|e| e.message_id != down.message_id && e.message_id != summary.message_id)
        .collect();
    assert!(
        waited + SLACK >= HOLD,
        "the alarms came {waited:?} after the server was back, before the {HOLD:?} hold"
    );
    let named: BTreeSet<Uuid> = alarms
        .iter()
        .map(|e| {
            let machines: Vec<&Machine> = zones
                .iter()
                .filter(|m| e.subject.contains(&m.uuid.to_string()))
                .collect();
            assert_eq!(machines.len(), 1, "an alarm names one machine: {:?}", e.subject);
            assert!(
                e.subject.starts_with("[amon coal] Alarm ") && e.subject.ends_with("is down"),
                "alarm subject: {:?}",
                e.subject
            );
            assert!(
                e.in_reply_to.is_none(),
                "an alarm starts its own thread: {:?}",
                e.in_reply_to
            );
            machines[0].uuid
        })
        .collect();
    let expected: BTreeSet<Uuid> = still_down.iter().map(|m| m.uuid).collect();
    assert_eq!(named, expected, "one alarm per machine still down\n{}", rig.context());

    rig.marker(&marker);
    assert_eq!(
        rig.emails_to("alice").len(),
        4,
        "exactly four emails\n{}",
        rig.context()
    );
    assert_eq!(rig.emails().len(), 5, "{}", rig.context());
    beats.stop();
}

// ---- issue #6, point 2: a server lost without an announcement ----

/// All 30 zones go down at once while the relay keeps heartbeating (it did
/// not announce anything): still one email, listing the machines.
#[test]
fn burst_of_machine_downs_without_announcement_mails_once_listing_the_machines() {
    let Some(rig) = Rig::start() else {
        return;
    };
    let zones = machines(ZONES);
    let marker = marker();
    rig.create_account("alice");
    rig.watch("alice", &zones);
    rig.create_account("bob");
    rig.watch("bob", std::slice::from_ref(&marker));

    let cn7 = Relay::new("cn-7");
    cn7.come_up(rig.api, &zones);
    let beats = Heartbeats::start(rig.api, &cn7);

    let burst = Instant::now();
    rig.post(cn7.machines(&zones, false));

    let emails = rig.wait_for_emails_to("alice", 1);
    let waited = burst.elapsed();
    assert!(
        waited + SLACK >= HOLD,
        "the incident was mailed {waited:?} after the burst, before the {HOLD:?} hold"
    );
    assert_server_down_email(
        &emails[0],
        "many of its machines went down within minutes",
        &zones,
        &rig,
    );

    rig.marker(&marker);
    assert_eq!(rig.emails_to("alice").len(), 1, "exactly one email\n{}", rig.context());
    beats.stop();
}

/// The relay starts, heartbeats a few times and then falls silent: after
/// the heartbeat timeout and the hold, one email saying so and listing every
/// machine the master knows on that server.
#[test]
fn lost_heartbeats_mail_once_listing_the_servers_machines() {
    let Some(rig) = Rig::start() else {
        return;
    };
    let zones = machines(ZONES);
    let marker = marker();
    rig.create_account("alice");
    rig.watch("alice", &zones);
    rig.create_account("bob");
    rig.watch("bob", std::slice::from_ref(&marker));

    let cn7 = Relay::new("cn-7");
    cn7.come_up(rig.api, &zones);
    // Heartbeats for longer than the timeout keep the server alive…
    let mut beats = 0;
    let beating = Instant::now();
    while beating.elapsed() < HEARTBEAT_TIMEOUT + HEARTBEAT_EVERY {
        // Pacing, as the relay's timer does; not synchronisation.
        std::thread::sleep(HEARTBEAT_EVERY);
        rig.post(vec![cn7.server("heartbeat")]);
        beats += 1;
    }
    let silent = Instant::now();
    assert!(beats >= 4, "{beats} heartbeats");
    assert_eq!(
        rig.master.log_messages("server incident opened"),
        Vec::<Value>::new(),
        "no incident while the relay heartbeats\n{}",
        rig.context()
    );

    // …and then nothing more comes.
    let emails = rig.wait_for_emails_to("alice", 1);
    let waited = silent.elapsed();
    assert!(
        waited + SLACK >= HEARTBEAT_TIMEOUT + HOLD,
        "the incident was mailed {waited:?} after the last heartbeat, before the timeout and the hold"
    );
    assert_server_down_email(&emails[0], "its relay stopped sending heartbeats", &zones, &rig);

    rig.marker(&marker);
    assert_eq!(rig.emails_to("alice").len(), 1, "exactly one email\n{}", rig.context());
}

// ---- issue #6, point 3: one zone at a time ----

/// With two zones involved (no incident), a reboot within the hold sends
/// nothing, and a zone that stays down gets one email after the hold.
#[test]
fn zone_reboot_sends_nothing_and_a_zone_staying_down_one_email_after_the_hold() {
    let Some(rig) = Rig::start() else {
        return;
    };
    let zones = machines(2);
    let (rebooting, staying_down) = (&zones[0], &zones[1]);
    rig.create_account("alice");
    rig.watch("alice", &zones);

    let cn7 = Relay::new("cn-7");
    cn7.come_up(rig.api, &zones);
    let beats = Heartbeats::start(rig.api, &cn7);

    rig.post(vec![cn7.machine(rebooting, false)]);
    rig.post(vec![cn7.machine(rebooting, true)]);
    let went_down = Instant::now();
    rig.post(vec![cn7.machine(staying_down, false)]);

    let emails = rig.wait_for_emails_to("alice", 1);
    let waited = went_down.elapsed();
    assert!(
        waited + SLACK >= HOLD,
        "the alarm came {waited:?} after the zone went down, before the {HOLD:?} hold"
    );
    // The reboot's email would have been due before this one.
    assert_eq!(emails.len(), 1, "{}", rig.context());
    let email = &emails[0];
    assert!(
        email.subject.starts_with("[amon coal] Alarm ")
            && email.subject.contains(&staying_down.uuid.to_string())
            && email.subject.ends_with("is down"),
        "alarm subject: {:?}",
        email.subject
    );
    assert!(
        !email.body.contains(&rebooting.uuid.to_string()),
        "the reboot is not mentioned:\n{}",
        email.body
    );
    assert_eq!(
        rig.master.log_messages("server incident opened"),
        Vec::<Value>::new(),
        "two machines make no incident\n{}",
        rig.context()
    );
    beats.stop();
}

// ---- issue #6, point 4: the mail server is down for a while ----

/// Both down alarms have failed delivery (attempts ≥ `attempts`) in the
/// master's current run; returns their notification ids.
fn wait_for_failed_deliveries(rig: &Rig, attempts: u64) -> BTreeSet<String> {
    rig.wait_until(
        &format!("two notifications to fail delivery {attempts} time(s)"),
        || {
            let failed = rig.failed_attempts();
            let ids: BTreeSet<String> = failed
                .iter()
                .filter(|(_, attempt)| **attempt >= attempts)
                .map(|(id, _)| id.clone())
                .collect();
            (ids.len() >= 2).then_some(ids)
        },
    )
}

/// The two alarms arrive once each once the server accepts mail; the
/// marker proves no duplicate follows.
fn assert_each_mailed_once(rig: &Rig, zones: &[Machine], ids: &BTreeSet<String>, marker: &Machine) {
    for m in zones {
        rig.wait_until(&format!("the alarm email about {}", m.alias), || {
            rig.emails_to("alice")
                .iter()
                .any(|e| e.subject.contains(&m.uuid.to_string()))
                .then_some(())
        });
    }
    rig.marker(marker);
    for m in zones {
        let about: Vec<Email> = rig
            .emails_to("alice")
            .into_iter()
            .filter(|e| e.subject.contains(&m.uuid.to_string()))
            .collect();
        assert_eq!(about.len(), 1, "one email about {}\n{}", m.alias, rig.context());
        assert!(about[0].subject.ends_with("is down"), "{:?}", about[0].subject);
        let id = about[0]
            .message_id
            .trim_start_matches('<')
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            ids.contains(&id),
            "the email delivered is the notification that failed ({id} in {ids:?})"
        );
    }
    assert_eq!(rig.emails().len(), 3, "{}", rig.context());
    let delivered = rig.delivered();
    for id in ids {
        assert_eq!(
            delivered.iter().filter(|d| *d == id).count(),
            1,
            "{id} delivered once in this run: {delivered:?}"
        );
    }
    assert_eq!(rig.api.get("/deadletters"), (200, json!([])), "nothing dead");
}

/// Nothing listens on the mail server's port while two alarms fall due;
/// once an SMTP server starts there, each arrives exactly once.
#[test]
fn mail_server_refusing_then_accepting_gets_every_email_once() {
    let Some(mut rig) = Rig::start_without_smtp() else {
        return;
    };
    let zones = machines(2);
    let marker = marker();
    rig.create_account("alice");
    rig.watch("alice", &zones);
    rig.create_account("bob");
    rig.watch("bob", std::slice::from_ref(&marker));

    let cn7 = Relay::new("cn-7");
    rig.post(cn7.machines(&zones, false));
    // Refused at least twice each: the retries are under way.
    let ids = wait_for_failed_deliveries(&rig, 2);
    assert_eq!(rig.emails().len(), 0);
    for line in rig.master.log_messages("delivery failed; will retry") {
        let error = line["error"].as_str().unwrap_or_default();
        assert!(error.contains("Connection refused"), "{line}");
    }

    rig.start_smtp();
    assert_each_mailed_once(&rig, &zones, &ids, &marker);
}

/// As above, and the master is SIGKILLed during the outage and started
/// again: the deliveries pending in its outbox resume, and each email still
/// arrives exactly once.
#[test]
fn mail_server_outage_across_a_master_sigkill_gets_every_email_once() {
    let Some(mut rig) = Rig::start_without_smtp() else {
        return;
    };
    let zones = machines(2);
    let marker = marker();
    rig.create_account("alice");
    rig.watch("alice", &zones);
    rig.create_account("bob");
    rig.watch("bob", std::slice::from_ref(&marker));

    let cn7 = Relay::new("cn-7");
    rig.post(cn7.machines(&zones, false));
    let ids = wait_for_failed_deliveries(&rig, 1);

    rig.kill_and_restart();
    let resumed = rig.wait_until("the restarted master to resume the pending deliveries", || {
        rig.master
            .log_messages("resuming pending deliveries")
            .first()
            .map(|line| line["count"].as_u64())
    });
    assert_eq!(resumed, Some(2), "both deliveries resume\n{}", rig.context());
    // Still refused after the restart: the resumed deliveries retry.
    let retried = wait_for_failed_deliveries(&rig, 1);
    assert_eq!(retried, ids, "the same notifications are retried\n{}", rig.context());
    assert_eq!(rig.emails().len(), 0);

    rig.start_smtp();
    assert_each_mailed_once(&rig, &zones, &ids, &marker);
}

// ---- issue #6, point 5: a flooded contact ----

/// With a limit of 2 messages per 20 s, five alarms due at once give two
/// alarm emails and, when a token is back (10 s later), one digest for the
/// other three. The window is wide so that a loaded machine, spreading the
/// five holds' ends over a few seconds, still finds the bucket empty.
#[test]
fn a_contact_flooded_beyond_its_rate_limit_gets_one_digest_for_the_excess() {
    let Some(rig) = Rig::start_with(vec!["rate_limit = 2".into(), "rate_window = \"20s\"".into()]) else {
        return;
    };
    let zones = machines(5);
    rig.create_account("alice");
    rig.watch("alice", &zones);
    rig.create_account("bob");
    let marker = marker();
    rig.watch("bob", std::slice::from_ref(&marker));
    // Each zone on its own server: five downs on one server would be a
    // server incident, which is not what this is about.
    for zone in &zones {
        rig.post(vec![Relay::new("cn-x").machine(zone, false)]);
    }
    let emails = rig.wait_for_emails_to("alice", 3);
    let (digests, alarms): (Vec<Email>, Vec<Email>) = emails
        .into_iter()
        .partition(|e| e.subject.starts_with("[amon coal] 3 more notifications for alice"));
    assert_eq!(alarms.len(), 2, "two alarm emails within the limit\n{}", rig.context());
    assert_eq!(digests.len(), 1, "one digest for the excess\n{}", rig.context());
    // Every zone is in exactly one email: two alone, three in the digest.
    for zone in &zones {
        let id = zone.uuid.to_string();
        let alone = alarms.iter().filter(|e| e.subject.contains(&id)).count();
        let digested = usize::from(digests[0].body.contains(&id));
        assert_eq!(alone + digested, 1, "zone {id} mailed once\n{}", rig.context());
    }
    // Nothing more comes for alice: bob's marker arrives, alice still has 3.
    rig.marker(&marker);
    assert_eq!(rig.emails_to("alice").len(), 3, "{}", rig.context());
}
