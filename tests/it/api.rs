//! The Master API against a real `amon master` (SPEC §5, §8; issue #4):
//! probe groups sharing one alarm, maintenance windows (deleted, expired,
//! overlapping, across accounts for a whole server), every error code the
//! API has, bearer-token auth, and `api_examples`, which performs every
//! request `docs/api.md` shows and snapshots the answers
//! (`tests/it/snapshots/it__api__*.snap`), and `docs_show_every_api_snapshot`,
//! which fails until the documentation shows every snapshot as it is.
//!
//! The test plays the relay: it posts machine events to `POST /events` as a
//! relay sends them. Absence ("no email") is proven as in `e2e`: a marker
//! machine of another account goes down afterwards and its email is
//! awaited; with one notifier worker, an email due earlier would be there
//! before it. Nothing sleeps to synchronise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use insta::dynamic_redaction;
use insta::internals::{Content, Redaction};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{
    now_ms, sample, tail_of, wait_until, Amon, AmonConfig, Api, Email, Mode, Response, SmtpServer, HOLD,
};

/// Every master here runs with this hold (`[notify] hold`): short, as the
/// behaviour under test is not the hold.
const HOLD_HERE: &str = "1s";

/// Largest body the master reads (`MAX_BODY` in `src/http/mod.rs`).
const MAX_BODY: usize = 8 * 1024 * 1024;

// ---- a master and its mail ----

/// Where a master's mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mail {
    /// A real SMTP server (aiosmtpd).
    Smtp,
    /// `.eml` files: nothing reads them, the test needs no aiosmtpd.
    Files,
}

/// An `amon master` (with one notifier worker, so mail goes out in the
/// order it was decided) and, for [`Mail::Smtp`], its SMTP server.
struct Master {
    /// First, so it is killed before its files go.
    amon: Amon,
    smtp: Option<SmtpServer>,
    api: Api,
    dir: tempfile::TempDir,
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} once in the config:\n{text}");
    text.replacen(from, to, 1)
}

impl Master {
    /// `None` when [`Mail::Smtp`] is asked for and this machine has no
    /// aiosmtpd (see [`SmtpServer::start`]). `auth` replaces the harness's
    /// `[auth] open = true`.
    fn start(mail: Mail, auth: Option<&str>) -> Option<Master> {
        let dir = tempfile::Builder::new()
            .prefix("amon-api-it-")
            .tempdir()
            .expect("tempdir");
        let smtp = match mail {
            Mail::Smtp => Some(SmtpServer::start(dir.path())?),
            Mail::Files => None,
        };
        let text = AmonConfig {
            smtp_port: smtp.as_ref().map(|s| s.port),
            workers: 1,
            ..AmonConfig::new(&dir.path().join("data"))
        }
        .text();
        let text = replace_once(
            &text,
            &format!("hold = \"{}s\"", HOLD.as_secs()),
            &format!("hold = \"{HOLD_HERE}\""),
        );
        let text = match auth {
            Some(auth) => replace_once(&text, "[auth]\nopen = true\n", auth),
            None => text,
        };
        let config = dir.path().join("master.toml");
        std::fs::write(&config, text).expect("write master.toml");
        let amon = Amon::start(Mode::Master, &config, &dir.path().join("master.log"));
        let api = amon.api();
        Some(Master { amon, smtp, api, dir })
    }

    fn context(&self) -> String {
        let mut out = format!(
            "--- {}\n--- master log:\n{}\n",
            self.dir.path().display(),
            tail_of(&self.amon.log, 40)
        );
        if let Some(smtp) = &self.smtp {
            out.push_str(&format!(
                "--- smtp log:\n{}\n--- emails received:\n",
                tail_of(smtp.log(), 20)
            ));
            for email in smtp.emails() {
                out.push_str(&format!("to {}: {}\n", email.rcpt_to, email.subject));
            }
        }
        out
    }

    fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.context(), check)
    }

    fn emails(&self) -> Vec<Email> {
        self.smtp.as_ref().map(SmtpServer::emails).unwrap_or_default()
    }

    /// The emails to `<login>@example.com`, in arrival order.
    fn emails_to(&self, login: &str) -> Vec<Email> {
        let to = format!("{login}@example.com");
        self.emails().into_iter().filter(|e| e.rcpt_to == to).collect()
    }

    /// The emails whose subject names `machine`.
    fn emails_about(&self, machine: Uuid) -> Vec<Email> {
        let machine = machine.to_string();
        self.emails()
            .into_iter()
            .filter(|e| e.subject.contains(&machine))
            .collect()
    }

    fn wait_for_emails_about(&self, machine: Uuid, n: usize) -> Vec<Email> {
        self.wait_until(&format!("{n} email(s) about machine {machine}"), || {
            let emails = self.emails_about(machine);
            (emails.len() >= n).then_some(emails)
        })
    }

    /// Creates `<login>` with email `<login>@example.com`; returns its uuid.
    fn account(&self, login: &str) -> Uuid {
        let account = self.api.create(
            "/accounts",
            &json!({ "login": login, "email": format!("{login}@example.com"), "operator": true }),
        );
        uuid_of(&account["uuid"])
    }

    fn group(&self, login: &str, name: &str) -> Uuid {
        let group = self.api.create(
            &format!("/pub/{login}/probegroups"),
            &json!({ "name": name, "contacts": ["email"] }),
        );
        uuid_of(&group["uuid"])
    }

    /// A machine-up probe on `machine`, in `group` if given.
    fn probe(&self, login: &str, machine: &Machine, group: Option<Uuid>) -> Uuid {
        let mut body =
            json!({ "type": "machine-up", "machine": machine.uuid, "name": format!("{} up", machine.alias) });
        if let Some(group) = group {
            body["group"] = json!(group);
        }
        let probe = self.api.create(&format!("/pub/{login}/probes"), &body);
        uuid_of(&probe["uuid"])
    }

    /// `POST /events`, which must be committed (`202`).
    fn post(&self, events: Vec<Value>) {
        let (status, body) = self.api.post("/events", &Value::Array(events));
        assert_eq!(
            status,
            202,
            "POST /events answered {status}: {body}\n{}",
            self.context()
        );
    }

    /// Every alarm of `login` (`state=all`).
    fn alarms(&self, login: &str) -> Vec<Value> {
        let (status, alarms) = self.api.get(&format!("/pub/{login}/alarms?state=all"));
        assert_eq!(status, 200, "alarms of {login}: {alarms}");
        alarms.as_array().cloned().unwrap_or_default()
    }

    /// Waits for an alarm of `login` about `monitor` (a probe or a group)
    /// that satisfies `check`, and returns it.
    fn wait_for_alarm(&self, login: &str, monitor: Uuid, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let monitor = json!(monitor);
        self.wait_until(&format!("an alarm of {login} on {monitor} that {what}"), || {
            self.alarms(login)
                .into_iter()
                .find(|a| (a["probe"] == monitor || a["probeGroup"] == monitor) && check(a))
        })
    }

    /// Creates a window (`POST` to `path`); returns its id.
    fn window(&self, path: &str, body: Value) -> u64 {
        let window = self.api.create(path, &body);
        window["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("window without id: {window}"))
    }

    fn delete(&self, path: &str) -> u16 {
        self.api.exchange("DELETE", path, None).status
    }
}

fn uuid_of(value: &Value) -> Uuid {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value} is not a uuid: {e}"))
}

/// A zone: uuid and alias, on a compute node.
#[derive(Debug, Clone)]
struct Machine {
    uuid: Uuid,
    alias: String,
    server: Uuid,
}

impl Machine {
    fn new(alias: &str, server: Uuid) -> Machine {
        Machine {
            uuid: Uuid::new_v4(),
            alias: alias.into(),
            server,
        }
    }

    /// Its transition, as the relay of its server posts it.
    fn event(&self, up: bool) -> Value {
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
            "machine": self.uuid,
            "server": self.server,
            "alias": self.alias,
            "oldState": old,
            "newState": new,
            "up": up,
        })
    }

    fn down(&self) -> Value {
        self.event(false)
    }

    fn up(&self) -> Value {
        self.event(true)
    }
}

/// Bob's machine on a server of its own, with a probe: his email, awaited
/// after the behaviour under test, proves that no email about it is on its
/// way (with one notifier worker and the same hold, it would have been
/// sent first).
struct Marker {
    machine: Machine,
}

impl Marker {
    fn create(master: &Master) -> Marker {
        master.account("bob");
        let machine = Machine::new("marker", Uuid::new_v4());
        master.probe("bob", &machine, None);
        Marker { machine }
    }

    fn prove_quiet(&self, master: &Master) {
        master.post(vec![self.machine.down()]);
        let emails = master.wait_for_emails_about(self.machine.uuid, 1);
        assert_eq!(emails.len(), 1, "one email about the marker\n{}", master.context());
        assert_eq!(emails[0].rcpt_to, "bob@example.com");
    }
}

fn faults(alarm: &Value, key: &str) -> Vec<Uuid> {
    alarm[key]
        .as_array()
        .unwrap_or_else(|| panic!("alarm without {key}: {alarm}"))
        .iter()
        .map(|f| uuid_of(&f["probe"]))
        .collect()
}

// ---- issue #4, acceptance 1: a probe group shares one alarm ----

/// A group with two machine-up probes: the first one's fault opens one
/// alarm (with `probeGroup`, no `probe`) and sends one email; the second's
/// joins that alarm (two faults) and sends a second email.
#[test]
fn a_probe_group_shares_one_alarm_and_each_fault_notifies() {
    let Some(master) = Master::start(Mail::Smtp, None) else {
        return;
    };
    master.account("alice");
    let marker = Marker::create(&master);
    let server = Uuid::new_v4();
    let group = master.group("alice", "web tier");
    let (web7, web8) = (Machine::new("web7", server), Machine::new("web8", server));
    let p7 = master.probe("alice", &web7, Some(group));
    let p8 = master.probe("alice", &web8, Some(group));

    master.post(vec![web7.down()]);
    let emails = master.wait_for_emails_about(web7.uuid, 1);
    assert_eq!(emails[0].rcpt_to, "alice@example.com");
    assert!(
        emails[0].subject.ends_with("is down"),
        "fault subject: {:?}",
        emails[0].subject
    );
    assert!(
        emails[0].body.contains(&group.to_string()),
        "the email names the group:\n{}",
        emails[0].body
    );
    let (status, open) = master
        .api
        .get(&format!("/pub/alice/alarms?state=open&probeGroup={group}"));
    assert_eq!(status, 200, "{open}");
    let open = open.as_array().cloned().unwrap_or_default();
    assert_eq!(open.len(), 1, "one open alarm for the group: {open:?}");
    let alarm = &open[0];
    assert_eq!(alarm["probeGroup"], json!(group), "{alarm}");
    assert!(alarm.get("probe").is_none(), "a group's alarm has no probe: {alarm}");
    assert_eq!(alarm["closed"], false);
    assert_eq!(faults(alarm, "faults"), vec![p7]);
    assert_eq!(faults(alarm, "maintFaults"), Vec::<Uuid>::new());
    let id = alarm["id"].clone();

    master.post(vec![web8.down()]);
    let emails = master.wait_for_emails_about(web8.uuid, 1);
    assert_eq!(emails.len(), 1, "{}", master.context());
    assert_eq!(emails[0].rcpt_to, "alice@example.com");
    let alarm = master.wait_for_alarm("alice", group, "has two faults", |a| {
        a["faults"].as_array().is_some_and(|f| f.len() == 2)
    });
    assert_eq!(alarm["id"], id, "the second fault joins the same alarm: {alarm}");
    let mut expected = vec![p7, p8];
    expected.sort();
    let mut seen = faults(&alarm, "faults");
    seen.sort();
    assert_eq!(seen, expected);
    assert_eq!(master.alarms("alice").len(), 1, "still one alarm in all");

    marker.prove_quiet(&master);
    assert_eq!(master.emails_to("alice").len(), 2, "{}", master.context());
}

// ---- acceptance 2: faults under maintenance wait for the window's end ----

/// The group's alarm has a notified fault; a window covering the group
/// (open-ended) is created; the second probe's fault becomes a
/// `maintFault` and sends nothing; deleting the window sends it.
#[test]
fn a_fault_under_a_deleted_window_is_notified_when_the_window_goes() {
    let Some(master) = Master::start(Mail::Smtp, None) else {
        return;
    };
    master.account("alice");
    let marker = Marker::create(&master);
    let server = Uuid::new_v4();
    let group = master.group("alice", "web tier");
    let (web7, web8) = (Machine::new("web7", server), Machine::new("web8", server));
    let p7 = master.probe("alice", &web7, Some(group));
    let p8 = master.probe("alice", &web8, Some(group));

    master.post(vec![web7.down()]);
    master.wait_for_emails_about(web7.uuid, 1);

    let id = master.window(
        "/pub/alice/maintenances",
        json!({ "probeGroups": [group], "notes": "replacing web8's disk" }),
    );
    let (status, window) = master.api.get(&format!("/pub/alice/maintenances/{id}"));
    assert_eq!(status, 200, "{window}");
    assert_eq!(window["end"], Value::Null, "open-ended: {window}");

    master.post(vec![web8.down()]);
    let alarm = master.wait_for_alarm("alice", group, "has web8 as a maintFault", |a| {
        faults(a, "maintFaults") == vec![p8]
    });
    assert_eq!(faults(&alarm, "faults"), vec![p7], "{alarm}");
    marker.prove_quiet(&master);
    assert_eq!(master.emails_about(web8.uuid).len(), 0, "{}", master.context());

    assert_eq!(master.delete(&format!("/pub/alice/maintenances/{id}")), 204);
    let emails = master.wait_for_emails_about(web8.uuid, 1);
    assert_eq!(emails[0].rcpt_to, "alice@example.com");
    let alarm = master.wait_for_alarm("alice", group, "has no maintFaults", |a| {
        faults(a, "maintFaults").is_empty()
    });
    assert_eq!(faults(&alarm, "faults").len(), 2, "{alarm}");
    let (status, gone) = master.api.get(&format!("/pub/alice/maintenances/{id}"));
    assert_eq!((status, &gone["code"]), (410, &json!("Gone")), "{gone}");
    assert_eq!(master.emails_to("alice").len(), 2, "{}", master.context());
}

/// A window with an `end` a few seconds ahead (epoch ms): the fault waits
/// as a `maintFault`, is notified when the window expires (not before),
/// and the window's id answers `410 Gone` afterwards.
#[test]
fn a_fault_under_an_expiring_window_is_notified_when_it_expires() {
    let Some(master) = Master::start(Mail::Smtp, None) else {
        return;
    };
    master.account("alice");
    let group = master.group("alice", "web tier");
    let web7 = Machine::new("web7", Uuid::new_v4());
    let p7 = master.probe("alice", &web7, Some(group));

    // Long enough that a loaded machine still sees the fault waiting before
    // the end (it only costs this test the wait).
    let end = now_ms() + 10_000;
    let id = master.window("/pub/alice/maintenances", json!({ "probeGroups": [group], "end": end }));
    master.post(vec![web7.down()]);
    master.wait_for_alarm("alice", group, "has web7 as a maintFault", |a| {
        faults(a, "maintFaults") == vec![p7]
    });
    assert!(
        now_ms() < end,
        "the window ended before the test could see the maintFault: this box took more than 10 s to apply one event"
    );
    let emails = master.wait_for_emails_about(web7.uuid, 1);
    let arrived = now_ms();
    assert!(
        arrived >= end,
        "the email arrived {} ms before the window's end",
        end - arrived
    );
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].rcpt_to, "alice@example.com");
    let alarm = master.wait_for_alarm("alice", group, "has web7 as a fault", |a| {
        faults(a, "faults") == vec![p7]
    });
    assert_eq!(faults(&alarm, "maintFaults"), Vec::<Uuid>::new(), "{alarm}");
    // An ended window is removed: its id is gone.
    master.wait_until(&format!("window {id} to answer 410"), || {
        let (status, _) = master.api.get(&format!("/pub/alice/maintenances/{id}"));
        (status == 410).then_some(())
    });
}

/// Two windows cover the fault: deleting the first sends nothing (proven by
/// the marker); deleting the second sends it.
#[test]
fn overlapping_windows_notify_only_when_the_last_one_goes() {
    let Some(master) = Master::start(Mail::Smtp, None) else {
        return;
    };
    master.account("alice");
    let marker = Marker::create(&master);
    let group = master.group("alice", "web tier");
    let web7 = Machine::new("web7", Uuid::new_v4());
    let p7 = master.probe("alice", &web7, Some(group));

    let first = master.window(
        "/pub/alice/maintenances",
        json!({ "probeGroups": [group], "end": "1h" }),
    );
    let second = master.window("/pub/alice/maintenances", json!({ "machines": [web7.uuid] }));
    master.post(vec![web7.down()]);
    master.wait_for_alarm("alice", group, "has web7 as a maintFault", |a| {
        faults(a, "maintFaults") == vec![p7]
    });

    assert_eq!(master.delete(&format!("/pub/alice/maintenances/{first}")), 204);
    marker.prove_quiet(&master);
    assert_eq!(master.emails_about(web7.uuid).len(), 0, "{}", master.context());
    let alarm = master.wait_for_alarm("alice", group, "is open", |a| a["closed"] == false);
    assert_eq!(faults(&alarm, "maintFaults"), vec![p7], "still covered: {alarm}");

    assert_eq!(master.delete(&format!("/pub/alice/maintenances/{second}")), 204);
    let emails = master.wait_for_emails_about(web7.uuid, 1);
    assert_eq!(emails[0].rcpt_to, "alice@example.com");
    master.wait_for_alarm("alice", group, "has web7 as a fault", |a| {
        faults(a, "faults") == vec![p7] && faults(a, "maintFaults").is_empty()
    });
}

// ---- acceptance 3: back during the window: closed, silently ----

#[test]
fn a_machine_back_during_the_window_closes_its_alarm_silently() {
    let Some(master) = Master::start(Mail::Smtp, None) else {
        return;
    };
    master.account("alice");
    let marker = Marker::create(&master);
    let web7 = Machine::new("web7", Uuid::new_v4());
    let p7 = master.probe("alice", &web7, None);
    let id = master.window(
        "/pub/alice/maintenances",
        json!({ "machines": [web7.uuid], "end": "1h" }),
    );

    master.post(vec![web7.down()]);
    master.wait_for_alarm("alice", p7, "has web7 as a maintFault", |a| {
        faults(a, "maintFaults") == vec![p7]
    });
    master.post(vec![web7.up()]);
    let alarm = master.wait_for_alarm("alice", p7, "is closed", |a| a["closed"] == true);
    assert_eq!(faults(&alarm, "faults"), Vec::<Uuid>::new(), "{alarm}");
    assert_eq!(faults(&alarm, "maintFaults"), Vec::<Uuid>::new(), "{alarm}");
    assert!(alarm["timeClosed"].is_i64(), "{alarm}");
    // The window's end changes nothing for a closed alarm.
    assert_eq!(master.delete(&format!("/pub/alice/maintenances/{id}")), 204);

    marker.prove_quiet(&master);
    assert_eq!(master.emails_to("alice").len(), 0, "{}", master.context());
}

// ---- acceptance 6: an operator's window for a whole server ----

/// `POST /maintenances {"servers": [S], "end": "1h"}`: machines of two
/// accounts on S go down and nobody is told; alice's machine on another
/// server still gets its email (the marker here).
#[test]
fn an_operator_window_on_a_server_silences_every_account_on_it() {
    let Some(master) = Master::start(Mail::Smtp, None) else {
        return;
    };
    master.account("alice");
    master.account("bob");
    let (s, t) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, b, d) = (Machine::new("web1", s), Machine::new("web2", s), Machine::new("db1", s));
    let elsewhere = Machine::new("web9", t);
    let pa = master.probe("alice", &a, None);
    let pb = master.probe("alice", &b, None);
    let pd = master.probe("bob", &d, None);
    master.probe("alice", &elsewhere, None);

    let id = master.window(
        "/maintenances",
        json!({ "servers": [s], "end": "1h", "notes": "cn-7 firmware" }),
    );
    let (status, window) = master.api.get(&format!("/maintenances/{id}"));
    assert_eq!(status, 200, "{window}");
    assert!(window.get("user").is_none(), "an operator window has no user: {window}");

    master.post(vec![a.down(), b.down(), d.down()]);
    for (login, probe) in [("alice", pa), ("alice", pb), ("bob", pd)] {
        master.wait_for_alarm(login, probe, "has a maintFault", |al| {
            faults(al, "maintFaults") == vec![probe] && faults(al, "faults").is_empty()
        });
    }
    master.post(vec![elsewhere.down()]);
    let emails = master.wait_for_emails_about(elsewhere.uuid, 1);
    assert_eq!(emails[0].rcpt_to, "alice@example.com");
    for m in [&a, &b, &d] {
        assert_eq!(master.emails_about(m.uuid).len(), 0, "{}", master.context());
    }
    assert_eq!(master.emails().len(), 1, "{}", master.context());
    let (status, windows) = master.api.get("/maintenances");
    assert_eq!(status, 200, "{windows}");
    assert!(
        windows
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["id"] == json!(id))),
        "GET /maintenances lists it: {windows}"
    );
}

// ---- acceptance 4: every error code through the real server ----

/// One request with any method, headers and raw body, on its own
/// connection (`Connection: close`).
pub(crate) fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("{method} {path}: cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(crate::harness::DEADLINE))
        .expect("set_read_timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // A server that refuses a large body may answer before reading it all;
    // its answer is what matters.
    let _ = stream.write_all(&request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    parse(&response).unwrap_or_else(|| {
        panic!(
            "{method} {path}: unparseable response {:?}",
            String::from_utf8_lossy(&response)
        )
    })
}

fn parse(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut data = body.as_slice();
        loop {
            let end = data.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).ok()?.trim(), 16).ok()?;
            data = &data[end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(data.get(..size)?);
            data = data.get(size + 2..)?;
        }
        body = out;
    }
    Some(Response { status, headers, body })
}

/// Checks an error answer: the status, `{"code", "message"}` (and `errors`
/// only for `ValidationFailed`); returns the body.
fn assert_error(response: &Response, status: u16, code: &str, what: &str) -> Value {
    let body = response.json();
    assert_eq!(response.status, status, "{what}: {body}");
    assert_eq!(body["code"], code, "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: a message: {body}"
    );
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let expected: &[&str] = if code == "ValidationFailed" {
        &["code", "errors", "message"]
    } else {
        &["code", "message"]
    };
    assert_eq!(keys, expected, "{what}: {body}");
    body
}

#[test]
fn every_error_code_is_reachable_through_the_real_server() {
    let master = Master::start(Mail::Files, None).expect("a master without SMTP always starts");
    let addr = master.api.addr;
    let send = |method: &str, path: &str, body: &[u8]| raw(addr, method, path, &[], body);
    let alice = master.account("alice");

    // 400 InvalidArgument: bad JSON, a bad alarm id, a bad query.
    assert_error(
        &send("POST", "/accounts", b"{\"login\": "),
        400,
        "InvalidArgument",
        "bad json",
    );
    assert_error(&send("POST", "/events", b"[{]"), 400, "InvalidArgument", "bad events");
    assert_error(
        &send("GET", "/pub/alice/alarms/abc", b""),
        400,
        "InvalidArgument",
        "bad alarm id",
    );
    assert_error(
        &send("GET", "/pub/alice/alarms?state=bogus", b""),
        400,
        "InvalidArgument",
        "bad state",
    );
    assert_error(
        &send("POST", "/pub/alice/alarms/1?action=explode", b""),
        400,
        "InvalidArgument",
        "bad action",
    );

    // 400 MissingParameter.
    assert_error(
        &send("POST", "/pub/alice/alarms/1", b""),
        400,
        "MissingParameter",
        "alarm action without ?action=",
    );
    assert_error(
        &send("GET", "/agentprobes", b""),
        400,
        "MissingParameter",
        "agentprobes without ?agent=",
    );

    // 404 ResourceNotFound.
    for path in [
        "/pub/nobody",
        "/pub/nobody/probes",
        "/pub/alice/alarms/99",
        "/pub/alice/maintenances/99",
        "/maintenances/99",
        "/nowhere",
    ] {
        assert_error(&send("GET", path, b""), 404, "ResourceNotFound", path);
    }
    assert_error(
        &send("GET", &format!("/pub/alice/probes/{}", Uuid::new_v4()), b""),
        404,
        "ResourceNotFound",
        "unknown probe",
    );

    // 422 ValidationFailed, with `errors` naming the field and the contact.
    let body = assert_error(
        &send(
            "POST",
            "/pub/alice/probes",
            json!({ "type": "machine-up", "machine": Uuid::new_v4(), "contacts": ["pager"] })
                .to_string()
                .as_bytes(),
        ),
        422,
        "ValidationFailed",
        "unknown contact",
    );
    let errors = body["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e["field"] == "contacts" && e["message"].as_str().is_some_and(|m| m.contains("\"pager\""))),
        "an error names the contact: {body}"
    );
    let body = assert_error(
        &send("POST", "/pub/alice/maintenances", b"{}"),
        422,
        "ValidationFailed",
        "window without a scope",
    );
    assert!(body["errors"].as_array().is_some_and(|e| !e.is_empty()), "{body}");

    // 422 EventTooOld: one probe event ten minutes old (the limit is 5 min).
    let web7 = Machine::new("web7", Uuid::new_v4());
    let probe = master.probe("alice", &web7, None);
    let mut stale = json!({
        "v": 1, "type": "probe", "user": alice, "probeUuid": probe, "clear": false,
        "data": { "message": "disk full" }, "machine": web7.uuid,
        "uuid": Uuid::new_v4(), "time": now_ms() - 10 * 60 * 1000,
        "agent": web7.uuid, "relay": web7.server,
    });
    assert_error(
        &send("POST", "/events", stale.to_string().as_bytes()),
        422,
        "EventTooOld",
        "a probe event 10 min old",
    );
    // In a batch, a stale event is dropped and the rest is taken.
    stale["uuid"] = json!(Uuid::new_v4());
    let (status, body) = master.api.post("/events", &json!([stale, web7.server_heartbeat()]));
    assert_eq!(status, 202, "a batch with a stale event: {body}");

    // 413 RequestTooLarge: one byte over 8 MiB.
    let mut huge = vec![b' '; MAX_BODY + 1];
    huge[0] = b'[';
    assert_error(
        &send("POST", "/events", &huge),
        413,
        "RequestTooLarge",
        "a body over 8 MiB",
    );
    let (status, body) = master.api.get("/ping");
    assert_eq!(status, 200, "the master still answers: {body}");

    // 410 Gone: a deleted alarm, a deleted window.
    master.post(vec![web7.down()]);
    let alarm = master.wait_for_alarm("alice", probe, "is open", |a| a["closed"] == false);
    let id = alarm["id"].as_u64().expect("alarm id");
    assert_eq!(master.delete(&format!("/pub/alice/alarms/{id}")), 204);
    for (method, path) in [
        ("GET", format!("/pub/alice/alarms/{id}")),
        ("POST", format!("/pub/alice/alarms/{id}?action=close")),
        ("DELETE", format!("/pub/alice/alarms/{id}")),
    ] {
        assert_error(&send(method, &path, b""), 410, "Gone", &format!("{method} {path}"));
    }
    assert_error(
        &send("GET", &format!("/pub/alice/alarms/{}", id + 1), b""),
        404,
        "ResourceNotFound",
        "an alarm id never issued",
    );
    let window = master.window("/pub/alice/maintenances", json!({ "all": true, "end": "1h" }));
    assert_eq!(master.delete(&format!("/pub/alice/maintenances/{window}")), 204);
    assert_error(
        &send("GET", &format!("/pub/alice/maintenances/{window}"), b""),
        410,
        "Gone",
        "a deleted window",
    );
    assert_error(
        &send("DELETE", &format!("/pub/alice/maintenances/{window}"), b""),
        410,
        "Gone",
        "a window deleted twice",
    );
    let window = master.window("/maintenances", json!({ "servers": [web7.server] }));
    assert_eq!(master.delete(&format!("/maintenances/{window}")), 204);
    assert_error(
        &send("GET", &format!("/maintenances/{window}"), b""),
        410,
        "Gone",
        "a deleted operator window",
    );
}

impl Machine {
    /// A lifecycle event (`started`, `heartbeat`, `shutting_down`) of this
    /// machine's server's relay, which calls itself `cn-7`.
    fn server_event(&self, event: &str) -> Value {
        json!({
            "type": "server", "uuid": Uuid::new_v4(), "time": now_ms(),
            "relay": self.server, "server": self.server, "event": event, "hostname": "cn-7",
        })
    }

    fn server_heartbeat(&self) -> Value {
        self.server_event("heartbeat")
    }
}

// ---- auth: 401 without a token, 403 outside the role ----

const OPERATOR_TOKEN: &str = "operator-token-0123456789";
const RELAY_TOKEN: &str = "relay-token-0123456789abc";
const ALICE_TOKEN: &str = "alice-token-0123456789abc";

fn auth_config(alice: Uuid) -> String {
    format!(
        "[auth]\nopen = false\n\n\
         [[auth.tokens]]\ntoken = \"{OPERATOR_TOKEN}\"\nrole = \"operator\"\n\n\
         [[auth.tokens]]\ntoken = \"{RELAY_TOKEN}\"\nrole = \"relay\"\n\n\
         [[auth.tokens]]\ntoken = \"{ALICE_TOKEN}\"\nrole = \"account:{alice}\"\n"
    )
}

#[test]
fn tokens_are_required_and_roles_are_enforced() {
    let alice = Uuid::new_v4();
    let bob = Uuid::new_v4();
    let master = Master::start(Mail::Files, Some(&auth_config(alice))).expect("a master without SMTP always starts");
    let addr = master.api.addr;
    let bearer = |token: &str| format!("Bearer {token}");
    let as_ = |token: Option<&str>, method: &str, path: &str, body: &Value| {
        let header = token.map(bearer);
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        raw(addr, method, path, &headers, &body)
    };
    let operator = Some(OPERATOR_TOKEN);

    // /ping stays open for health checks.
    assert_eq!(as_(None, "GET", "/ping", &Value::Null).status, 200);

    // 401: no token, or one nobody configured.
    for token in [None, Some("not-a-token-0123456789")] {
        assert_error(
            &as_(
                token,
                "POST",
                "/accounts",
                &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
            ),
            401,
            "Unauthorized",
            &format!("POST /accounts with {token:?}"),
        );
        assert_error(
            &as_(token, "GET", "/pub/alice/probes", &Value::Null),
            401,
            "Unauthorized",
            "GET probes without a valid token",
        );
    }

    let labels = Labels::default();
    labels.name(alice, "alice");
    labels.name(bob, "bob");
    let r = as_(None, "GET", "/pub/alice/probes", &Value::Null);
    snapshot_example(&labels, "error_unauthorized", "GET /pub/alice/probes", None, &r, &[]);

    // The operator may do everything.
    for (uuid, login) in [(alice, "alice"), (bob, "bob")] {
        let created = as_(
            operator,
            "POST",
            "/accounts",
            &json!({ "uuid": uuid, "login": login, "email": format!("{login}@example.com"), "operator": true }),
        );
        assert_eq!(created.status, 200, "operator creates {login}: {:?}", created.json());
    }
    let web7 = Machine::new("web7", Uuid::new_v4());
    let probe = as_(
        operator,
        "POST",
        "/pub/bob/probes",
        &json!({ "type": "machine-up", "machine": web7.uuid }),
    );
    assert_eq!(probe.status, 200, "{:?}", probe.json());
    assert_eq!(as_(operator, "GET", "/maintenances", &Value::Null).status, 200);

    // An account token: its own account (by login or uuid), nothing else.
    let alice_token = Some(ALICE_TOKEN);
    for path in ["/pub/alice/probes".to_string(), format!("/pub/{alice}/alarms")] {
        let ok = as_(alice_token, "GET", &path, &Value::Null);
        assert_eq!(ok.status, 200, "alice reads {path}: {:?}", ok.json());
    }
    for (method, path, body) in [
        ("GET", "/pub/bob/probes".to_string(), Value::Null),
        ("GET", format!("/pub/{bob}/probes"), Value::Null),
        ("GET", "/pub/bob/alarms".to_string(), Value::Null),
        ("GET", "/pub/bob/maintenances".to_string(), Value::Null),
        ("POST", "/pub/bob/maintenances".to_string(), json!({ "all": true })),
        ("GET", "/maintenances".to_string(), Value::Null),
        ("POST", "/maintenances".to_string(), json!({ "all": true })),
        ("POST", "/events".to_string(), json!([web7.server_heartbeat()])),
        (
            "POST",
            "/accounts".to_string(),
            json!({ "login": "eve", "email": "eve@example.com", "operator": true }),
        ),
        // Not even its own attributes: accounts are the operator's.
        (
            "PUT",
            "/accounts/alice".to_string(),
            json!({ "login": "alice", "email": "alice@example.com", "attributes": { "opsemail": "o@example.com" } }),
        ),
    ] {
        assert_error(
            &as_(alice_token, method, &path, &body),
            403,
            "Forbidden",
            &format!("alice's token: {method} {path}"),
        );
    }

    let r = as_(alice_token, "GET", "/pub/bob/alarms", &Value::Null);
    snapshot_example(
        &labels,
        "error_forbidden",
        "GET /pub/bob/alarms (Authorization: Bearer <alice's token>)",
        None,
        &r,
        &[],
    );

    // A relay token: events and agent probes only.
    let relay = Some(RELAY_TOKEN);
    let posted = as_(relay, "POST", "/events", &json!([web7.server_heartbeat()]));
    assert_eq!(posted.status, 202, "the relay posts events");
    let probes = as_(relay, "GET", &format!("/agentprobes?agent={}", web7.uuid), &Value::Null);
    assert_eq!(probes.status, 200, "the relay reads agent probes: {:?}", probes.json());
    for (method, path, body) in [
        ("POST", "/maintenances", json!({ "servers": [web7.server] })),
        ("POST", "/pub/alice/maintenances", json!({ "all": true })),
        ("GET", "/pub/alice/probes", Value::Null),
        ("GET", "/maintenances", Value::Null),
    ] {
        assert_error(
            &as_(relay, method, path, &body),
            403,
            "Forbidden",
            &format!("the relay's token: {method} {path}"),
        );
    }
    // Refused requests created nothing.
    let windows = as_(operator, "GET", "/maintenances", &Value::Null).json();
    assert_eq!(windows, json!([]), "no window was created");
    // Tokens are never logged.
    let log = std::fs::read_to_string(&master.amon.log).unwrap_or_default();
    for token in [OPERATOR_TOKEN, RELAY_TOKEN, ALICE_TOKEN] {
        assert!(!log.contains(token), "the log shows a token");
    }
}

// ---- the examples of docs/api.md ----

/// Labels for the uuids of the examples: `[uuid:alice]` reads better than
/// a random uuid and stays the same from run to run.
#[derive(Clone, Default)]
struct Labels(Arc<Mutex<Vec<(String, String)>>>);

impl Labels {
    fn name(&self, uuid: impl ToString, label: &str) {
        self.0
            .lock()
            .expect("labels")
            .push((uuid.to_string(), format!("[uuid:{label}]")));
    }

    /// `text` with every uuid in it replaced by its label (`[uuid]` for one
    /// without).
    fn redact_text(&self, text: &str) -> String {
        let labels = self.0.lock().expect("labels");
        let mut out = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            let candidate = rest.get(..36).filter(|c| Uuid::parse_str(c).is_ok() && c.contains('-'));
            match candidate {
                Some(uuid) => {
                    let label = labels
                        .iter()
                        .find(|(u, _)| u == uuid)
                        .map_or("[uuid]", |(_, l)| l.as_str());
                    out.push_str(label);
                    rest = &rest[36..];
                }
                None => {
                    let c = rest.chars().next().expect("not empty");
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        out
    }

    fn redact(&self, content: Content) -> Content {
        match content {
            Content::String(s) => Content::String(self.redact_text(&s)),
            Content::Seq(items) => Content::Seq(items.into_iter().map(|c| self.redact(c)).collect()),
            Content::Some(inner) => Content::Some(Box::new(self.redact(*inner))),
            other => other,
        }
    }
}

/// Times are numbers; a string (`"1h"`, `"now"`) or null is kept.
fn redact_time(content: Content) -> Content {
    let number = matches!(
        content,
        Content::U64(_) | Content::I64(_) | Content::U32(_) | Content::I32(_) | Content::F64(_)
    );
    if number {
        Content::String("[time]".into())
    } else {
        content
    }
}

/// The fields that hold uuids (or text with uuids in it), and times.
const UUID_FIELDS: &[&str] = &[
    ".**.uuid",
    ".**.user",
    ".**.probe",
    ".**.probeGroup",
    ".**.group",
    ".**.machine",
    ".**.agent",
    ".**.relay",
    ".**.owner",
    ".**.server",
    ".**.probeUuid",
    ".**.probes",
    ".**.probeGroups",
    ".**.machines",
    ".**.servers",
    ".**.message",
    ".**.request",
];
const TIME_FIELDS: &[&str] = &[
    ".**.time",
    ".**.timeOpened",
    ".**.timeClosed",
    ".**.timeLastEvent",
    ".**.timeFaulted",
    ".**.start",
    ".**.end",
    ".**.lastSeen",
    ".**.opened",
    ".**.returned",
];

fn redactions(labels: &Labels) -> Vec<(&'static str, Redaction)> {
    let mut out: Vec<(&'static str, Redaction)> = Vec::new();
    for field in UUID_FIELDS {
        let labels = labels.clone();
        out.push((field, dynamic_redaction(move |content, _| labels.redact(content))));
    }
    for field in TIME_FIELDS {
        out.push((field, dynamic_redaction(|content, _| redact_time(content))));
    }
    out.push((".response.pid", Redaction::from("[pid]")));
    out.push((".headers[\"content-md5\"]", Redaction::from("[base64 md5]")));
    out
}

/// Performs the documented examples and snapshots each: the request, the
/// status, the headers worth showing, and the response body.
struct Examples<'a> {
    master: &'a Master,
    labels: Labels,
}

impl Examples<'_> {
    fn show(&self, name: &str, method: &str, path: &str, body: Option<Value>) -> Response {
        let bytes = body.as_ref().map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let response = raw(self.master.api.addr, method, path, &[], &bytes);
        self.snapshot(name, method, path, body, &response, &[]);
        response
    }

    /// [`Examples::show`] for a create: the new object's uuid gets `label`
    /// before the answer is snapshotted.
    fn create(&self, name: &str, path: &str, body: Value, label: &str) -> Uuid {
        let bytes = body.to_string().into_bytes();
        let response = raw(self.master.api.addr, "POST", path, &[], &bytes);
        assert_eq!(
            response.status,
            200,
            "POST {path}: {:?}\n{}",
            String::from_utf8_lossy(&response.body),
            self.master.context()
        );
        let uuid = uuid_of(&response.json()["uuid"]);
        self.labels.name(uuid, label);
        self.snapshot(name, "POST", path, Some(body), &response, &[]);
        uuid
    }

    fn snapshot(
        &self,
        name: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        response: &Response,
        headers: &[&str],
    ) {
        snapshot_example(&self.labels, name, &format!("{method} {path}"), body, response, headers);
    }
}

/// Snapshots one example: the request line, its body, the status, the
/// `headers` named, and the response body (`null` when empty), with uuids
/// labelled and times redacted.
fn snapshot_example(
    labels: &Labels,
    name: &str,
    request: &str,
    body: Option<Value>,
    response: &Response,
    headers: &[&str],
) {
    let mut example = json!({ "request": request });
    if let Some(body) = body {
        example["body"] = body;
    }
    example["status"] = json!(response.status);
    if !headers.is_empty() {
        example["headers"] = headers
            .iter()
            .map(|h| (h.to_string(), json!(response.header(h))))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    example["response"] = if response.body.is_empty() {
        Value::Null
    } else {
        response.json()
    };
    insta::with_settings!({ redactions => redactions(labels), omit_expression => true }, {
        insta::assert_json_snapshot!(name, example);
    });
}

/// Every request of `docs/api.md`, in its order, against a real master.
#[test]
fn api_examples() {
    let master = Master::start(Mail::Files, None).expect("a master without SMTP always starts");
    let ex = Examples {
        master: &master,
        labels: Labels::default(),
    };
    let labels = &ex.labels;
    let ok = |response: &Response, status: u16| {
        assert_eq!(
            response.status,
            status,
            "{:?}\n{}",
            String::from_utf8_lossy(&response.body),
            master.context()
        );
    };

    let ping = ex.show("ping", "GET", "/ping", None);
    ok(&ping, 200);

    // Accounts and contacts.
    let alice = Uuid::new_v4();
    labels.name(alice, "alice");
    let r = ex.show(
        "accounts_create",
        "POST",
        "/accounts",
        Some(json!({
            "login": "alice", "email": "alice@example.com", "uuid": alice,
            "attributes": { "pagerdutyemail": "alice-pd@example.com" },
        })),
    );
    ok(&r, 200);
    ok(
        &ex.show(
            "account_put",
            "PUT",
            "/accounts/alice",
            Some(json!({
                "login": "alice", "email": "alice@example.com",
                "attributes": { "pagerdutyemail": "alice-pd@example.com", "workPhone": "+1 555 0100" },
            })),
        ),
        200,
    );
    ok(&ex.show("account_get", "GET", "/pub/alice", None), 200);
    ok(
        &ex.show(
            "contact_put",
            "PUT",
            "/pub/alice/contacts/pager",
            Some(json!({ "medium": "webhook", "address": "https://pager.example.com/hooks/amon" })),
        ),
        200,
    );
    ok(&ex.show("contacts_list", "GET", "/pub/alice/contacts", None), 200);
    ok(&ex.show("contact_get", "GET", "/pub/alice/contacts/pager", None), 200);

    // Probe groups and probes.
    let group = ex.create(
        "probegroup_create",
        "/pub/alice/probegroups",
        json!({ "name": "web tier", "contacts": ["email"] }),
        "web-tier",
    );
    ok(&ex.show("probegroups_list", "GET", "/pub/alice/probegroups", None), 200);
    ok(
        &ex.show(
            "probegroup_put",
            "PUT",
            &format!("/pub/alice/probegroups/{group}"),
            Some(json!({ "name": "web tier", "contacts": ["email", "pager"] })),
        ),
        200,
    );
    ok(
        &ex.show(
            "probegroup_get",
            "GET",
            &format!("/pub/alice/probegroups/{group}"),
            None,
        ),
        200,
    );

    let server = Uuid::new_v4();
    labels.name(server, "cn-7");
    let web7 = Machine::new("web7", server);
    labels.name(web7.uuid, "web7");
    // What a relay reports: the machines of its compute node and their
    // owners. Alice may then watch web7.
    ok(
        &ex.show(
            "server_machines_put",
            "PUT",
            &format!("/servers/{server}/machines"),
            Some(json!([{ "uuid": web7.uuid, "alias": "web7", "owner": alice }])),
        ),
        204,
    );
    ok(
        &ex.show("account_machines_list", "GET", "/pub/alice/machines", None),
        200,
    );
    let probe = ex.create(
        "probe_create",
        "/pub/alice/probes",
        json!({ "name": "web7 up", "type": "machine-up", "machine": web7.uuid, "group": group }),
        "probe-web7-up",
    );
    ok(&ex.show("probes_list", "GET", "/pub/alice/probes", None), 200);
    ok(
        &ex.show(
            "probe_put",
            "PUT",
            &format!("/pub/alice/probes/{probe}"),
            Some(json!({ "name": "web7 is up", "type": "machine-up", "machine": web7.uuid, "group": group })),
        ),
        200,
    );
    ok(
        &ex.show("probe_get", "GET", &format!("/pub/alice/probes/{probe}"), None),
        200,
    );

    // What relays use: agent probes and events.
    let path = format!("/agentprobes?agent={}", web7.uuid);
    let r = raw(master.api.addr, "GET", &path, &[], b"");
    ok(&r, 200);
    ex.snapshot("agentprobes_get", "GET", &path, None, &r, &["content-md5"]);
    let head = raw(master.api.addr, "HEAD", &path, &[], b"");
    ok(&head, 200);
    assert_eq!(
        head.header("content-md5"),
        r.header("content-md5"),
        "HEAD and GET agree"
    );
    assert!(head.body.is_empty(), "HEAD has no body");

    ok(
        &ex.show(
            "events_post",
            "POST",
            "/events",
            Some(json!([web7.server_event("started"), web7.down()])),
        ),
        202,
    );

    // The alarm, once its fault is notified (a hold after the event).
    master.wait_for_alarm("alice", group, "has its fault notified", |a| {
        a["faults"][0]["notified"] == true
    });
    ok(
        &ex.show("alarms_list", "GET", "/pub/alice/alarms?state=open", None),
        200,
    );
    ok(&ex.show("alarm_get", "GET", "/pub/alice/alarms/1", None), 200);
    ok(&ex.show("operator_alarms_list", "GET", "/alarms?state=open", None), 200);
    ok(&ex.show("servers_list", "GET", "/servers", None), 200);
    ok(
        &ex.show("alarm_suppress", "POST", "/pub/alice/alarms/1?action=suppress", None),
        202,
    );
    let suppressed = master.api.get("/pub/alice/alarms/1").1;
    assert_eq!(suppressed["suppressed"], true, "{suppressed}");

    // Maintenance windows: an account's, an operator's.
    let r = ex.show(
        "maintenance_create",
        "POST",
        "/pub/alice/maintenances",
        Some(json!({ "probeGroups": [group], "end": "2h", "notes": "upgrading the web tier" })),
    );
    ok(&r, 200);
    let id = r.json()["id"].as_u64().expect("window id");
    ok(
        &ex.show("maintenances_list", "GET", "/pub/alice/maintenances", None),
        200,
    );
    ok(
        &ex.show("maintenance_get", "GET", &format!("/pub/alice/maintenances/{id}"), None),
        200,
    );
    ok(
        &ex.show(
            "maintenance_delete",
            "DELETE",
            &format!("/pub/alice/maintenances/{id}"),
            None,
        ),
        204,
    );
    let r = ex.show(
        "operator_maintenance_create",
        "POST",
        "/maintenances",
        Some(json!({ "servers": [server], "start": "now", "end": "1h", "notes": "cn-7 firmware" })),
    );
    ok(&r, 200);
    let op = r.json()["id"].as_u64().expect("window id");
    ok(
        &ex.show("operator_maintenances_list", "GET", "/maintenances", None),
        200,
    );
    ok(
        &ex.show("operator_maintenance_get", "GET", &format!("/maintenances/{op}"), None),
        200,
    );
    ok(
        &ex.show(
            "operator_maintenance_delete",
            "DELETE",
            &format!("/maintenances/{op}"),
            None,
        ),
        204,
    );

    // Closing and deleting the alarm; deleting the rest.
    ok(
        &ex.show("alarm_close", "POST", "/pub/alice/alarms/1?action=close", None),
        202,
    );
    ok(&ex.show("alarm_delete", "DELETE", "/pub/alice/alarms/1", None), 204);
    ok(&ex.show("error_gone", "GET", "/pub/alice/alarms/1", None), 410);
    ok(
        &ex.show("probe_delete", "DELETE", &format!("/pub/alice/probes/{probe}"), None),
        204,
    );
    ok(
        &ex.show(
            "probegroup_delete",
            "DELETE",
            &format!("/pub/alice/probegroups/{group}"),
            None,
        ),
        204,
    );
    ok(
        &ex.show("contact_delete", "DELETE", "/pub/alice/contacts/pager", None),
        204,
    );
    ok(&ex.show("deadletters", "GET", "/deadletters", None), 200);
    let metrics = raw(master.api.addr, "GET", "/metrics", &[], b"");
    ok(&metrics, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("amon_events_ingested_total"),
        "GET /metrics shows amon_events_ingested_total:\n{text}"
    );

    // Errors.
    let r = raw(master.api.addr, "POST", "/accounts", &[], b"{\"login\": ");
    ex.snapshot(
        "error_invalid_argument",
        "POST",
        "/accounts",
        Some(json!("{\"login\": ")),
        &r,
        &[],
    );
    ok(&r, 400);
    ok(
        &ex.show("error_missing_parameter", "POST", "/pub/alice/alarms/1", None),
        400,
    );
    ok(&ex.show("error_not_found", "GET", "/pub/nobody", None), 404);
    ok(
        &ex.show(
            "error_validation_failed",
            "POST",
            "/pub/alice/probes",
            Some(json!({ "type": "machine-up", "machine": web7.uuid, "contacts": ["sms"] })),
        ),
        422,
    );
    let stale = json!({
        "v": 1, "type": "probe", "user": alice, "probeUuid": Uuid::new_v4(), "clear": false,
        "data": { "message": "disk full" }, "uuid": Uuid::new_v4(), "time": now_ms() - 10 * 60 * 1000,
    });
    let r = raw(master.api.addr, "POST", "/events", &[], stale.to_string().as_bytes());
    ok(&r, 422);
    // The message says how old the event was, which varies by a second.
    let body = r.json();
    assert_eq!(body["code"], "EventTooOld", "{body}");
    let shown = Response {
        body: serde_json::to_vec(&json!({ "code": body["code"], "message": "[how old the event is]" })).expect("json"),
        ..r
    };
    ex.snapshot("error_event_too_old", "POST", "/events", Some(stale), &shown, &[]);
    let mut huge = vec![b' '; MAX_BODY + 1];
    huge[0] = b'[';
    let r = raw(master.api.addr, "POST", "/events", &[], &huge);
    ok(&r, 413);
    ex.snapshot(
        "error_request_too_large",
        "POST",
        "/events",
        Some(json!("[8 MiB and 1 byte]")),
        &r,
        &[],
    );
}

#[test]
fn metrics_show_how_many_events_of_each_type_are_stored() {
    let master = Master::start(Mail::Files, None).expect("a master without SMTP always starts");
    let server = Uuid::new_v4();
    let machines: Vec<Machine> = (0..5).map(|i| Machine::new(&format!("web{i}"), server)).collect();
    let downs: Vec<Value> = machines.iter().map(Machine::down).collect();
    master.post(downs.clone());
    // A second copy of an event is not stored twice.
    master.post(vec![downs[0].clone(), machines[1].up()]);
    const N: f64 = 6.0;

    let metrics = raw(master.api.addr, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200, "{}", master.context());
    let text = String::from_utf8_lossy(&metrics.body);
    assert_eq!(
        sample(&text, r#"amon_events_stored{type="machine"}"#),
        Some(N),
        "GET /metrics shows amon_events_stored{{type=\"machine\"}} {N}:\n{text}"
    );
    for kind in ["probe", "server"] {
        assert_eq!(
            sample(&text, &format!(r#"amon_events_stored{{type="{kind}"}}"#)),
            Some(0.0),
            "no {kind} events yet:\n{text}"
        );
    }
}

/// The relay's own APIs (`docs/api.md`, last section): its admin API and,
/// in dev mode, the global zone agent's API on TCP.
#[test]
fn relay_api_examples() {
    let dir = tempfile::Builder::new()
        .prefix("amon-api-it-relay-")
        .tempdir()
        .expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let config = AmonConfig::new(&path("master-data")).write(&path("master.toml"));
    let master = Amon::start(Mode::Master, &config, &path("master.log"));
    let zones = crate::harness::ZoneFeed::create(path("zones.jsonl"));
    let config = AmonConfig {
        master_url: Some(format!("http://{}", master.master_addr.expect("master address"))),
        zones: Some(crate::harness::ExecZones::auto(zones.command())),
        ..AmonConfig::new(&path("relay-data"))
    }
    .write(&path("relay.toml"));
    let relay = Amon::start(Mode::Relay, &config, &path("relay.log"));
    let context = || {
        format!(
            "--- master log:\n{}\n--- relay log:\n{}",
            tail_of(&master.log, 30),
            tail_of(&relay.log, 30)
        )
    };
    let admin = relay.relay_admin_addr.expect("relay admin address");
    let agent = relay.relay_agent_addr.expect("relay agent address");
    let labels = Labels::default();
    let snapshot =
        |name: &str, method: &str, path: &str, body: Option<Value>, response: &Response, headers: &[&str]| {
            snapshot_example(&labels, name, &format!("{method} {path}"), body, response, headers)
        };

    let ping = wait_until("the relay to be ready", context, || {
        let r = raw(admin, "GET", "/ping", &[], b"");
        (r.status == 200 && r.json()["status"] == "OK").then_some(r)
    });
    snapshot("relay_ping", "GET", "/ping", None, &ping, &[]);

    // `/state`: its numbers move (events sent, restarts), so it is checked
    // by shape, not snapshotted.
    let state = raw(admin, "GET", "/state?zones=true", &[], b"").json();
    let server = uuid_of(&state["serverUuid"]);
    labels.name(server, "cn-7");
    for key in ["zones", "link", "children"] {
        assert!(state.get(key).is_some(), "/state has {key}: {state}");
    }
    let keys = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        keys.sort();
        keys
    };
    assert_eq!(keys(&state), ["children", "link", "serverUuid", "zones"], "{state}");
    assert!(state["zones"]["states"].is_object(), "zones=true lists states: {state}");
    assert!(
        state["children"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["name"].is_string())),
        "{state}"
    );

    // The agent API: the global zone's agent is the server itself.
    let master_api = master.api();
    master_api.create(
        "/accounts",
        &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
    );
    let alice = uuid_of(&master_api.get("/pub/alice").1["uuid"]);
    labels.name(alice, "alice");
    let probe = master_api.create(
        "/pub/alice/probes",
        &json!({ "type": "machine-up", "agent": server, "name": "cn-7 up" }),
    );
    labels.name(uuid_of(&probe["uuid"]), "probe-cn-7-up");
    // The relay's cache refreshes every `agent_probes_poll` (1 s here).
    let probes = wait_until("the relay to cache the probe", context, || {
        let r = raw(agent, "GET", "/agentprobes", &[], b"");
        (r.status == 200 && r.json().as_array().is_some_and(|p| p.len() == 1)).then_some(r)
    });
    snapshot(
        "relay_agent_agentprobes",
        "GET",
        "/agentprobes",
        None,
        &probes,
        &["content-md5"],
    );
    let synced = raw(admin, "POST", "/state?action=syncprobes", &[], b"");
    assert_eq!(synced.status, 202, "{:?}\n{}", synced.body, context());
    snapshot(
        "relay_syncprobes",
        "POST",
        "/state?action=syncprobes",
        None,
        &synced,
        &[],
    );
    let event = json!({
        "v": 1, "type": "probe", "user": alice, "probeUuid": probe["uuid"], "clear": false,
        "data": { "message": "cn-7 is down", "value": 1, "details": {} },
    });
    let posted = raw(agent, "POST", "/events", &[], event.to_string().as_bytes());
    snapshot("relay_agent_events", "POST", "/events", Some(event), &posted, &[]);
    assert_eq!(posted.status, 202);
    let bad = json!({ "v": 2, "type": "probe", "user": alice, "probeUuid": probe["uuid"], "clear": false, "data": { "message": "x" } });
    let refused = raw(agent, "POST", "/events", &[], bad.to_string().as_bytes());
    snapshot(
        "relay_agent_events_refused",
        "POST",
        "/events",
        Some(bad),
        &refused,
        &[],
    );
    assert_eq!(refused.status, 400);
    // The master got it, stamped by the relay.
    wait_until("the agent's event to open an alarm on the master", context, || {
        let (_, alarms) = master_api.get("/pub/alice/alarms?state=open");
        alarms
            .as_array()
            .and_then(|a| a.first().cloned())
            .filter(|a| a["faults"][0]["event"]["relay"] == json!(server))
    });
    drop(relay);
    drop(master);
}

/// `docs/api.md` shows every snapshot of this file: its name, its request
/// line and its response, as the snapshot has them. A changed snapshot
/// fails here until the documentation shows the new answer too.
#[test]
fn docs_show_every_api_snapshot() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/api.md")).expect("docs/api.md");
    let dir = root.join("tests/it/snapshots");
    let mut missing = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/it/snapshots") {
        let path = entry.expect("snapshot entry").path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !(file.starts_with("it__api__") && file.ends_with(".snap")) {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).expect("snapshot");
        // `---` front matter, `---`, then the JSON.
        let json = text
            .splitn(3, "---\n")
            .nth(2)
            .unwrap_or_else(|| panic!("{file}: no body"));
        let example: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{file}: {e}"));
        let request = example["request"].as_str().unwrap_or_default();
        let request = request.split(" (").next().unwrap_or_default();
        let mut wanted = vec![format!("`{file}`"), format!("```http\n{request}\n")];
        if !example["response"].is_null() {
            wanted.push(serde_json::to_string_pretty(&example["response"]).expect("json"));
        }
        for piece in wanted {
            if !docs.contains(&piece) {
                missing.push(format!("{file}: docs/api.md does not show\n{piece}"));
            }
        }
    }
    assert!(seen > 0, "no it__api__ snapshots in {}", dir.display());
    assert!(missing.is_empty(), "{}", missing.join("\n\n"));
}

// ---- acceptance 6 through the CLI itself ----

/// `amon suppress --server U --for 1h`, run as an operator would, stops
/// every notification for that server's machines (a machine elsewhere still
/// mails: the marker that proves the quiet).
#[test]
fn amon_suppress_server_for_an_hour_stops_its_notifications() {
    let Some(master) = Master::start(Mail::Smtp, None) else {
        return;
    };
    master.account("alice");
    let (s, t) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, b) = (Machine::new("web1", s), Machine::new("web2", s));
    let elsewhere = Machine::new("web9", t);
    let (pa, pb) = (master.probe("alice", &a, None), master.probe("alice", &b, None));
    master.probe("alice", &elsewhere, None);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amon"))
        .args([
            "suppress",
            "--server",
            &s.to_string(),
            "--for",
            "1h",
            "--notes",
            "cn-7 firmware",
        ])
        .args(["--url", &format!("http://{}", master.api.addr)])
        .output()
        .expect("run amon suppress");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "amon suppress failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("maintenance window "), "{stdout}");

    master.post(vec![a.down(), b.down()]);
    for probe in [pa, pb] {
        master.wait_for_alarm("alice", probe, "has a maintFault", |al| {
            faults(al, "maintFaults") == vec![probe] && faults(al, "faults").is_empty()
        });
    }
    master.post(vec![elsewhere.down()]);
    master.wait_for_emails_about(elsewhere.uuid, 1);
    assert_eq!(
        master.emails().len(),
        1,
        "only the machine elsewhere mails\n{}",
        master.context()
    );
}

// ---- the codes nothing outside can provoke ----

/// `GET /ping?error=<Code>` (Amon's ping did the same) answers with any
/// error of the API: ServiceUnavailable and InternalError included, which a
/// healthy master never gives otherwise.
#[test]
fn ping_simulates_every_error_code() {
    let Some(master) = Master::start(Mail::Files, None) else {
        return;
    };
    for (code, status) in [
        ("InvalidArgument", 400),
        ("MissingParameter", 400),
        ("Unauthorized", 401),
        ("Forbidden", 403),
        ("ResourceNotFound", 404),
        ("Gone", 410),
        ("RequestTooLarge", 413),
        ("ValidationFailed", 422),
        ("EventTooOld", 422),
        ("InternalError", 500),
        ("ServiceUnavailable", 503),
    ] {
        let (got, body) = master.api.get(&format!("/ping?error={code}"));
        assert_eq!(got, status, "{code}: {body}");
        assert_eq!(body["code"], code, "{body}");
    }
    let (status, body) = master.api.get("/ping");
    assert_eq!((status, &body["ping"]), (200, &json!("pong")), "{body}");
}
