//! Two masters on one PostgreSQL store (issue 15): every master takes every
//! request, one leads and runs the alarm core, and when it is SIGKILLed the
//! other takes over within `cluster.lease`; each email is sent once. Real
//! processes: two `amon master`, a relay fed zone lines (or the test in a
//! relay's place, posting to both masters), aiosmtpd, PostgreSQL at
//! `AMON_TEST_DATABASE_URL` in a fresh schema.
//!
//! Absence is proven as in `e2e`: a marker's email is awaited last; any
//! extra email, due no later, would be there too.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::flood::{machines, marker, post_events, Heartbeats, Machine, Relay, HEARTBEAT_TIMEOUT};
use crate::harness::{
    current_zoneevent, fresh_schema, postgres_url, tail_of, wait_until, Amon, AmonConfig, Api, Email, ExecZones, Mode,
    SmtpServer, ZoneFeed,
};

/// `cluster.lease` here: short, so a takeover is quick to wait for, but
/// long enough that a loaded machine does not stall a leader past it.
const LEASE: Duration = Duration::from_secs(5);

/// Two masters on one schema, their mail server, in one directory.
struct Cluster {
    masters: Vec<Amon>,
    relay: Option<Amon>,
    smtp: SmtpServer,
    zones: ZoneFeed,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts master `a`, waits until it leads, then master `b`; `None`
    /// (said why) without PostgreSQL or aiosmtpd.
    fn start() -> Option<Cluster> {
        let url = postgres_url()?;
        let schema = fresh_schema();
        let dir = tempfile::Builder::new()
            .prefix("amon-cluster-it-")
            .tempdir()
            .expect("tempdir");
        let smtp = SmtpServer::start(dir.path())?;
        let zones = ZoneFeed::create(dir.path().join("zones.jsonl"));
        let mut cluster = Cluster {
            masters: Vec::new(),
            relay: None,
            smtp,
            zones,
            dir,
        };
        for name in ["a", "b"] {
            let config = AmonConfig {
                smtp_port: Some(cluster.smtp.port),
                heartbeat_timeout: Some(HEARTBEAT_TIMEOUT),
                store: Some((url.clone(), schema.clone())),
                tail_extra: vec!["\n[cluster]".into(), format!("lease = \"{}s\"", LEASE.as_secs())],
                ..AmonConfig::new(&cluster.dir.path().join(format!("{name}-data")))
            }
            .write(&cluster.dir.path().join(format!("{name}.toml")));
            let master = Amon::start(Mode::Master, &config, &cluster.dir.path().join(format!("{name}.log")));
            cluster.masters.push(master);
            if name == "a" {
                // a leads before b joins, so which is which is known.
                cluster.wait_until("master a to lead", || cluster.leads(0).then_some(()));
            }
        }
        cluster.wait_until("master b to see master a lead", || {
            let view = cluster.view(1)?;
            (view["lease"]["url"] == cluster.url(0).as_str()).then_some(())
        });
        Some(cluster)
    }

    fn api(&self, master: usize) -> Api {
        self.masters[master].api()
    }

    fn url(&self, master: usize) -> String {
        format!("http://{}", self.masters[master].master_addr.expect("a master address"))
    }

    /// `GET /cluster` on a master, if it answers.
    fn view(&self, master: usize) -> Option<Value> {
        let (status, view) = self.api(master).get("/cluster");
        (status == 200).then_some(view)
    }

    /// Whether a master says it leads.
    fn leads(&self, master: usize) -> bool {
        self.view(master).is_some_and(|v| {
            v["masters"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["self"] == true && m["leader"] == true))
        })
    }

    /// A relay whose zone source is the feed, sending to `urls` in turn.
    fn start_relay(&mut self, urls: Vec<String>) {
        let config = AmonConfig {
            zones: Some(ExecZones::auto(self.zones.command())),
            master_urls: urls,
            ..AmonConfig::new(&self.dir.path().join("relay-data"))
        }
        .write(&self.dir.path().join("relay.toml"));
        self.relay = Some(Amon::start(Mode::Relay, &config, &self.dir.path().join("relay.log")));
    }

    fn emails_about(&self, machine: Uuid) -> Vec<Email> {
        self.smtp.emails_about(machine)
    }

    fn emails_to(&self, login: &str) -> Vec<Email> {
        let to = format!("{login}@example.com");
        self.smtp.emails().into_iter().filter(|e| e.rcpt_to == to).collect()
    }

    fn context(&self) -> String {
        let mut out = String::new();
        for (name, file) in [("a", "a.log"), ("b", "b.log"), ("relay", "relay.log")] {
            let path = self.dir.path().join(file);
            if Path::new(&path).exists() {
                out.push_str(&format!("--- master {name}:\n{}\n", tail_of(&path, 30)));
            }
        }
        out.push_str("--- emails:\n");
        for email in self.smtp.emails() {
            out.push_str(&format!(
                "to {}: {} ({})\n",
                email.rcpt_to, email.subject, email.message_id
            ));
        }
        out
    }

    fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.context(), check)
    }

    fn create_account(&self, master: usize, login: &str) {
        self.api(master).create(
            "/accounts",
            &json!({ "login": login, "email": format!("{login}@example.com"), "operator": true }),
        );
    }

    fn watch(&self, master: usize, login: &str, machine: Uuid, name: &str) {
        self.api(master).create(
            &format!("/pub/{login}/probes"),
            &json!({ "type": "machine-up", "machine": machine.to_string(), "name": name }),
        );
    }

    /// Every email's `Message-ID` is its own: nothing was sent twice.
    fn assert_no_message_twice(&self) {
        let emails = self.smtp.emails();
        let ids: BTreeSet<&str> = emails.iter().map(|e| e.message_id.as_str()).collect();
        assert_eq!(ids.len(), emails.len(), "an email was sent twice\n{}", self.context());
    }
}

/// Acceptance 1 (with a relay instead of `amon-load`): a relay sends to
/// the follower first; the leader applies what the follower committed and
/// mails once. The leader is SIGKILLed: the follower takes the lease over
/// (a new epoch), resumes the open alarm from the store, and mails the
/// clear and the next fault once each.
#[test]
fn the_follower_takes_over_when_the_leader_is_killed_and_each_email_is_sent_once() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    // Through the follower: forwarded to the leader, which owns the catalog.
    cluster.create_account(1, "alice");
    let (zone1, zone2, last) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    cluster.watch(1, "alice", zone1, "zone1 up");
    cluster.watch(1, "alice", zone2, "zone2 up");
    cluster.watch(0, "alice", last, "last up");
    cluster.start_relay(vec![cluster.url(1), cluster.url(0)]);

    cluster.zones.append(&current_zoneevent(zone1, "ready", "running"));
    cluster
        .zones
        .append(&current_zoneevent(zone1, "running", "shutting_down"));
    cluster.wait_until("the fault email about zone1", || {
        (!cluster.emails_about(zone1).is_empty()).then_some(())
    });
    let epoch = cluster.view(1).expect("b answers")["lease"]["epoch"].as_i64().unwrap();

    let killed = Instant::now();
    cluster.masters[0].kill();
    cluster.wait_until("master b to lead", || cluster.leads(1).then_some(()));
    let took = killed.elapsed();
    eprintln!("master b led {took:?} after master a was killed (cluster.lease {LEASE:?})");
    let view = cluster.view(1).expect("b answers");
    assert_eq!(view["lease"]["url"], cluster.url(1).as_str(), "{view}");
    assert!(view["lease"]["epoch"].as_i64().unwrap() > epoch, "a new epoch: {view}");

    // The alarm master a opened is closed by master b's core.
    cluster
        .zones
        .append(&current_zoneevent(zone1, "shutting_down", "running"));
    cluster.zones.append(&current_zoneevent(zone2, "ready", "running"));
    cluster
        .zones
        .append(&current_zoneevent(zone2, "running", "shutting_down"));
    cluster.wait_until("the clear about zone1 and the fault about zone2", || {
        (cluster.emails_about(zone1).len() >= 2 && !cluster.emails_about(zone2).is_empty()).then_some(())
    });
    cluster
        .zones
        .append(&current_zoneevent(last, "running", "shutting_down"));
    cluster.wait_until("the last email", || {
        (!cluster.emails_about(last).is_empty()).then_some(())
    });

    assert_eq!(cluster.emails_about(zone1).len(), 2, "{}", cluster.context());
    assert_eq!(cluster.emails_about(zone2).len(), 1, "{}", cluster.context());
    assert_eq!(cluster.smtp.emails().len(), 4, "{}", cluster.context());
    cluster.assert_no_message_twice();
    let (status, alarm) = cluster.api(1).get("/pub/alice/alarms/1");
    assert_eq!((status, &alarm["closed"]), (200, &Value::Bool(true)), "{alarm}");
}

/// Acceptance 2: a compute node's zones go down in a burst whose events
/// arrive half at one master and half at the other (as from a relay
/// failing over, heartbeats to both): one server-down email per contact.
#[test]
fn a_server_down_burst_split_across_both_masters_is_one_email_per_contact() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let zones: Vec<Machine> = machines(20);
    let marker = marker();
    cluster.create_account(0, "alice");
    cluster.create_account(1, "bob");
    for m in &zones {
        cluster.watch(0, "alice", m.uuid, &format!("{} up", m.alias));
        cluster.watch(1, "bob", m.uuid, &format!("{} up", m.alias));
    }
    cluster.create_account(1, "carol");
    cluster.watch(1, "carol", marker.uuid, "marker up");

    let cn7 = Relay::new("cn-7");
    cn7.come_up(cluster.api(0), &zones);
    let beats_a = Heartbeats::start(cluster.api(0), &cn7);
    let beats_b = Heartbeats::start(cluster.api(1), &cn7);

    let (first, second) = zones.split_at(zones.len() / 2);
    post_events(cluster.api(0), cn7.machines(first, false));
    post_events(cluster.api(1), cn7.machines(second, false));

    cluster.wait_until("the incident email to alice and bob", || {
        (!cluster.emails_to("alice").is_empty() && !cluster.emails_to("bob").is_empty()).then_some(())
    });
    let elsewhere = Relay::new("cn-9");
    post_events(cluster.api(1), vec![elsewhere.machine(&marker, false)]);
    cluster.wait_until("the marker's email", || {
        (!cluster.emails_to("carol").is_empty()).then_some(())
    });

    for login in ["alice", "bob"] {
        let emails = cluster.emails_to(login);
        assert_eq!(emails.len(), 1, "one email to {login}\n{}", cluster.context());
        assert!(
            emails[0].subject.contains("cn-7"),
            "the email is the server's incident: {:?}",
            emails[0].subject
        );
    }
    cluster.assert_no_message_twice();
    beats_a.stop();
    beats_b.stop();
}
