//! The relay as an operator meets it (issue #5): zone lines in every format
//! SmartOS has printed go through a real `amon relay` reading a real child
//! process, and what it decides is read where it lands — a fake master that
//! records every `POST /events`, or the real master and its email.
//!
//! Each input ends with a marker: one more zone changes last, and once its
//! decision has arrived every line before it has been processed, so an
//! extra (wrong) decision would be there too. Nothing sleeps to synchronise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{
    current_zoneevent, current_zoneevent_at, free_port, legacy_zoneevent, legacy_zoneevent_at, now_ms, sample, tail_of,
    wait_until, Amon, AmonConfig, Api, Email, ExecZones, FakeMaster, Mode, SmtpServer, ZoneFeed,
};

// ---- a relay under test ----

/// Where the relay's zone events come from.
#[derive(Debug, Clone)]
enum Source {
    /// A fresh, empty feed file per start (a real source does not replay
    /// history after a restart, and `tail -n +1` would), in `format`, with
    /// an optional zone list for reconciliation.
    Feed {
        format: &'static str,
        list_command: Option<Vec<String>>,
        /// `server_tag = true`: every line starts with a compute node's uuid.
        server_tag: bool,
    },
    /// Any command, e.g. one that keeps dying.
    Command(Vec<String>),
}

impl Source {
    fn feed(format: &'static str) -> Source {
        Source::Feed {
            format,
            list_command: None,
            server_tag: false,
        }
    }
}

/// A relay process (started and restarted on one data dir), its current
/// feed, and a temporary directory for everything.
struct RelayRig {
    /// First, so it is killed before its files go.
    relay: Option<Amon>,
    feed: Option<ZoneFeed>,
    /// One is written as `master_url`, several as `master_urls`.
    master_urls: Vec<String>,
    /// `[relay] master_token`, for closed masters.
    master_token: Option<String>,
    /// How many times a relay was started here (names each run's files).
    runs: usize,
    dir: tempfile::TempDir,
}

impl RelayRig {
    fn new(master_url: String) -> RelayRig {
        RelayRig::failover(vec![master_url], None)
    }

    /// A relay with several masters to fail over between.
    fn failover(master_urls: Vec<String>, master_token: Option<String>) -> RelayRig {
        RelayRig {
            relay: None,
            feed: None,
            master_urls,
            master_token,
            runs: 0,
            dir: tempfile::Builder::new()
                .prefix("amon-relay-it-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The relay's data dir: spool and zone states, kept across restarts.
    fn data_dir(&self) -> PathBuf {
        self.dir().join("relay-data")
    }

    /// Starts a relay (the previous one must have ended) and waits for its
    /// `amon started`.
    fn start(&mut self, source: &Source) -> &mut Amon {
        assert!(
            self.relay.as_mut().is_none_or(|r| !r.is_running()),
            "the previous relay still runs"
        );
        self.runs += 1;
        let run = self.runs;
        let zones = match source {
            Source::Feed {
                format,
                list_command,
                server_tag,
            } => {
                let feed = ZoneFeed::create(self.dir().join(format!("zones-{run}.jsonl")));
                let zones = ExecZones {
                    command: feed.command(),
                    format: format.to_string(),
                    list_command: list_command.clone(),
                    server_tag: *server_tag,
                };
                self.feed = Some(feed);
                zones
            }
            Source::Command(command) => {
                self.feed = None;
                ExecZones::auto(command.clone())
            }
        };
        let (master_url, master_urls) = match self.master_urls.as_slice() {
            [one] => (Some(one.clone()), Vec::new()),
            several => (None, several.to_vec()),
        };
        let config = AmonConfig {
            master_url,
            master_urls,
            master_token: self.master_token.clone(),
            zones: Some(zones),
            ..AmonConfig::new(&self.data_dir())
        }
        .write(&self.dir().join(format!("relay-{run}.toml")));
        let relay = Amon::start(Mode::Relay, &config, &self.dir().join(format!("relay-{run}.log")));
        self.relay.insert(relay)
    }

    fn relay(&mut self) -> &mut Amon {
        self.relay.as_mut().expect("no relay was started")
    }

    /// Appends lines to the running relay's feed.
    fn append(&self, lines: &[String]) {
        let feed = self.feed.as_ref().expect("this relay reads no feed");
        for line in lines {
            feed.append(line);
        }
    }

    /// `GET /state` on the relay admin API.
    fn state(&self) -> Value {
        let admin = self.relay.as_ref().expect("no relay was started").admin();
        let (status, state) = admin.get("/state");
        assert_eq!(status, 200, "relay GET /state: {state}");
        state
    }

    /// The logs of every relay run, for failure messages.
    fn context(&self) -> String {
        let mut out = format!("--- rig directory {}\n", self.dir().display());
        for run in 1..=self.runs {
            let log = self.dir().join(format!("relay-{run}.log"));
            out.push_str(&format!("--- {}:\n{}\n", log.display(), tail_of(&log, 30)));
        }
        out
    }
}

/// What a machine event says, compactly, for comparisons and messages.
fn decision(event: &Value) -> String {
    let up = if event["up"] == true { "up" } else { "down" };
    format!("{up} ({} -> {})", event["oldState"], event["newState"])
}

// ---- recorded-style input, one scenario per format ----

/// Lines for a relay and the decisions they must produce.
struct Scenario {
    name: &'static str,
    /// Zone uuid → a readable name, for messages.
    zones: BTreeMap<Uuid, &'static str>,
    lines: Vec<String>,
    expected: Vec<Expected>,
    /// The zone that changes last.
    marker: Uuid,
    /// Wall clock of the next line, in ms: a minute ago, 10 ms apart.
    clock_ms: i64,
    /// `when` of the next kernel event, in ns since boot.
    since_boot_ns: u64,
}

/// One decision the relay must send.
#[derive(Debug, Clone)]
struct Expected {
    machine: Uuid,
    up: bool,
    new_state: &'static str,
    /// The event's `time` when the line carries a wall clock; else the relay
    /// stamps its own.
    time: Option<i64>,
    alias: Option<&'static str>,
    owner: Option<Uuid>,
}

impl Scenario {
    fn new(name: &'static str) -> Scenario {
        Scenario {
            name,
            zones: BTreeMap::new(),
            lines: Vec::new(),
            expected: Vec::new(),
            marker: Uuid::nil(),
            clock_ms: now_ms() - 60_000,
            since_boot_ns: 4_520_616_213_191,
        }
    }

    fn zone(&mut self, name: &'static str) -> Uuid {
        let zone = Uuid::new_v4();
        self.zones.insert(zone, name);
        zone
    }

    /// The wall clock of the next line.
    fn tick(&mut self) -> i64 {
        self.clock_ms += 10;
        self.clock_ms
    }

    fn tick_iso(&mut self) -> (i64, String) {
        let ms = self.tick();
        let iso = DateTime::from_timestamp_millis(ms)
            .expect("a representable time")
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        (ms, iso)
    }

    fn since_boot(&mut self) -> u64 {
        self.since_boot_ns += 1_234_567;
        self.since_boot_ns
    }

    fn expect(&mut self, machine: Uuid, up: bool, new_state: &'static str, time: Option<i64>) {
        self.expected.push(Expected {
            machine,
            up,
            new_state,
            time,
            alias: None,
            owner: None,
        });
    }

    /// Ends the input: `marker` changes last and is a down.
    fn end_with(&mut self, marker: Uuid, line: String, time: Option<i64>) {
        self.lines.push(line);
        self.expect(marker, false, "shutting_down", time);
        self.marker = marker;
    }
}

/// The kernel's sequences (the reference's "state machines"): a boot of
/// `web` with a same-state repeat, a reboot of `web` (shutting_down ×3, a
/// new zone id), a halt of `db` first seen running. `line` writes one
/// kernel event in the scenario's format.
fn kernel_sequences(s: &mut Scenario, line: fn(&mut Scenario, Uuid, i32, &str, &str) -> Option<i64>) {
    let (web, db) = (s.zone("web"), s.zone("db"));
    for (old, new) in [
        ("uninitialized", "initialized"),
        ("initialized", "ready"),
        ("ready", "ready"),
    ] {
        line(s, web, 19, old, new);
    }
    let time = line(s, web, 19, "ready", "running");
    s.expect(web, true, "running", time);

    let time = line(s, web, 19, "running", "shutting_down");
    s.expect(web, false, "shutting_down", time);
    for _ in 0..3 {
        line(s, web, 19, "shutting_down", "shutting_down");
    }
    line(s, web, 19, "shutting_down", "uninitialized");
    for (old, new) in [
        ("uninitialized", "initialized"),
        ("initialized", "ready"),
        ("ready", "ready"),
    ] {
        line(s, web, 20, old, new);
    }
    let time = line(s, web, 20, "ready", "running");
    s.expect(web, true, "running", time);

    let time = line(s, db, 7, "running", "shutting_down");
    s.expect(db, false, "shutting_down", time);
    for _ in 0..3 {
        line(s, db, 7, "shutting_down", "shutting_down");
    }
    line(s, db, 7, "shutting_down", "uninitialized");
}

/// Legacy C `zoneevent`: every value a string, `when` since boot (so the
/// relay stamps the time), channel/class/subclass trailer.
fn zoneevent_legacy() -> Scenario {
    fn line(s: &mut Scenario, zone: Uuid, zoneid: i32, old: &str, new: &str) -> Option<i64> {
        let when = s.since_boot();
        s.lines.push(legacy_zoneevent_at(zone, old, new, zoneid, when));
        None
    }
    let mut s = Scenario::new("zoneevent, legacy C");
    kernel_sequences(&mut s, line);
    let marker = s.zone("marker");
    let when = s.since_boot();
    s.end_with(
        marker,
        legacy_zoneevent_at(marker, "running", "shutting_down", 3, when),
        None,
    );
    s
}

/// vminfod-based `zoneevent`: compact, `when` = ns since the epoch as a
/// string, creates with `oldstate: ""`, deletes with `newstate: ""` and no
/// `oldstate`, `installed` shown as `uninitialized` (except after
/// `incomplete`), fast changes coalesced.
fn zoneevent_current() -> Scenario {
    let mut s = Scenario::new("zoneevent, current (vminfod)");
    let (web, db, cache, marker) = (s.zone("web"), s.zone("db"), s.zone("cache"), s.zone("marker"));
    let line = |s: &mut Scenario, zone: Uuid, old: Option<&str>, new: &str, zoneid: &str| {
        let when = s.tick();
        s.lines.push(current_zoneevent_at(zone, old, new, zoneid, when));
        Some(when)
    };
    // web is created installed (shown as uninitialized) and boots.
    line(&mut s, web, Some(""), "uninitialized", "-1");
    line(&mut s, web, Some("uninitialized"), "ready", "41");
    let time = line(&mut s, web, Some("ready"), "running", "41");
    s.expect(web, true, "running", time);
    // The same report twice.
    line(&mut s, web, Some("ready"), "running", "41");
    // A reboot whose way back up vminfod coalesced.
    let time = line(&mut s, web, Some("running"), "shutting_down", "41");
    s.expect(web, false, "shutting_down", time);
    line(&mut s, web, Some("shutting_down"), "down", "41");
    line(&mut s, web, Some("down"), "uninitialized", "-1");
    let time = line(&mut s, web, Some("uninitialized"), "running", "42");
    s.expect(web, true, "running", time);
    // db is provisioned: configured → incomplete → installed (not
    // translated after incomplete) → booted.
    line(&mut s, db, Some(""), "configured", "-1");
    line(&mut s, db, Some("configured"), "incomplete", "-1");
    line(&mut s, db, Some("incomplete"), "installed", "-1");
    line(&mut s, db, Some("uninitialized"), "ready", "43");
    let time = line(&mut s, db, Some("ready"), "running", "43");
    s.expect(db, true, "running", time);
    // cache appears already running: a create is neither a fault nor an up,
    // but it is a baseline, so its later stop is a down.
    line(&mut s, cache, Some(""), "running", "44");
    let time = line(&mut s, cache, Some("running"), "shutting_down", "44");
    s.expect(cache, false, "shutting_down", time);
    // Deleting the running web is not a fault.
    line(&mut s, web, None, "", "-1");
    let when = s.tick();
    s.end_with(
        marker,
        current_zoneevent_at(marker, Some("running"), "shutting_down", "45", when),
        Some(when),
    );
    s
}

/// `sysevent -j -r -c com.sun:zones:status status`: `{type:"ready"}` first,
/// then the kernel's events in an envelope, numbers as JSON numbers, the
/// time in `date`.
fn sysevent() -> Scenario {
    /// `data` is the event's nvlist as `nvlist_print_json` prints it, in
    /// the kernel's order.
    fn envelope(s: &mut Scenario, class: &str, data: &str) -> (i64, String) {
        let (ms, date) = s.tick_iso();
        let line = format!(
            r#"{{"date":"{date}","type":"event","vendor":"sun.com","publisher":"kernel","class":"{class}","subclass":"change","pid":0,"data":{data},"channel":"com.sun:zones:status"}}"#
        );
        (ms, line)
    }
    fn line(s: &mut Scenario, zone: Uuid, zoneid: i32, old: &str, new: &str) -> Option<i64> {
        let when = s.since_boot();
        let data =
            format!(r#"{{"zonename":"{zone}","newstate":"{new}","oldstate":"{old}","zoneid":{zoneid},"when":{when}}}"#);
        let (ms, line) = envelope(s, "status", &data);
        s.lines.push(line);
        Some(ms)
    }
    let mut s = Scenario::new("sysevent -j");
    let (_, date) = s.tick_iso();
    s.lines.push(format!(r#"{{"date":"{date}","type":"ready"}}"#));
    kernel_sequences(&mut s, line);
    // A well-formed event of another class on the channel: not a zone state.
    let other = s.zones.keys().next().copied().expect("a zone");
    let (_, restart) = envelope(&mut s, "init", &format!(r#"{{"zonename":"{other}","restarts":1}}"#));
    s.lines.push(restart);
    let marker = s.zone("marker");
    let when = s.since_boot();
    let data = format!(
        r#"{{"zonename":"{marker}","newstate":"shutting_down","oldstate":"running","zoneid":3,"when":{when}}}"#
    );
    let (ms, last) = envelope(&mut s, "status", &data);
    s.end_with(marker, last, Some(ms));
    s
}

/// A vmadm VM object, as `vmadm events -j` embeds it.
fn vm(zone: Uuid, alias: &str, owner: Uuid, zone_state: &str, state: &str) -> Value {
    json!({
        "uuid": zone.to_string(),
        "zonename": zone.to_string(),
        "alias": alias,
        "owner_uuid": owner.to_string(),
        "brand": "joyent-minimal",
        "ram": 1024,
        "autoboot": true,
        "zone_state": zone_state,
        "state": state,
    })
}

/// One entry of a modify's `changes`.
fn change(path: &str, action: &str, old: Option<Value>, new: Option<Value>) -> Value {
    let mut entry = json!({ "prettyPath": path, "path": [path], "action": action });
    if let Some(old) = old {
        entry["oldValue"] = old;
    }
    if let Some(new) = new {
        entry["newValue"] = new;
    }
    entry
}

fn changed(path: &str, old: impl Into<Value>, new: impl Into<Value>) -> Value {
    change(path, "changed", Some(old.into()), Some(new.into()))
}

/// `vmadm events -j -r`: a ready snapshot of every VM first, then creates,
/// modifies whose `changes` carry several paths at once (the zone state
/// among them, not necessarily first), deletes.
fn vmadm() -> Scenario {
    let mut s = Scenario::new("vmadm events -j");
    let owner = Uuid::new_v4();
    let (web, db, cache, marker) = (s.zone("web"), s.zone("db"), s.zone("cache"), s.zone("marker"));
    let event = |s: &mut Scenario, kind: &str, zone: Uuid, vm: Option<Value>, changes: Option<Vec<Value>>| {
        let (ms, date) = s.tick_iso();
        // vminfod's key order: type, date, zonename, uuid, vm, changes.
        let mut line = format!(r#"{{"type":"{kind}","date":"{date}","zonename":"{zone}","uuid":"{zone}""#);
        if let Some(vm) = vm {
            line.push_str(&format!(r#","vm":{vm}"#));
        }
        if let Some(changes) = changes {
            line.push_str(&format!(r#","changes":{}"#, Value::Array(changes)));
        }
        line.push('}');
        s.lines.push(line);
        Some(ms)
    };

    let (_, date) = s.tick_iso();
    let vms = json!({
        web.to_string(): vm(web, "web0", owner, "running", "running"),
        db.to_string(): vm(db, "db0", owner, "installed", "stopped"),
    });
    s.lines.push(format!(
        r#"{{"type":"ready","date":"{date}","uuid":"{}","vms":{vms}}}"#,
        Uuid::new_v4()
    ));

    // web (running in the snapshot) is stopped and started again.
    let time = event(
        &mut s,
        "modify",
        web,
        Some(vm(web, "web0", owner, "shutting_down", "stopping")),
        Some(vec![
            changed("state", "running", "stopping"),
            changed("zone_state", "running", "shutting_down"),
        ]),
    );
    s.expected.push(Expected {
        machine: web,
        up: false,
        new_state: "shutting_down",
        time,
        alias: Some("web0"),
        owner: Some(owner),
    });
    event(
        &mut s,
        "modify",
        web,
        Some(vm(web, "web0", owner, "down", "stopping")),
        Some(vec![changed("zone_state", "shutting_down", "down")]),
    );
    event(
        &mut s,
        "modify",
        web,
        Some(vm(web, "web0", owner, "installed", "stopped")),
        Some(vec![
            changed("state", "stopping", "stopped"),
            changed("zone_state", "down", "installed"),
            change("zoneid", "removed", Some(json!(41)), None),
            change("pid", "removed", Some(json!(5150)), None),
        ]),
    );
    event(
        &mut s,
        "modify",
        web,
        Some(vm(web, "web0", owner, "ready", "stopped")),
        Some(vec![
            changed("zone_state", "installed", "ready"),
            change("zoneid", "added", None, Some(json!(42))),
        ]),
    );
    let time = event(
        &mut s,
        "modify",
        web,
        Some(vm(web, "web0", owner, "running", "running")),
        Some(vec![
            changed("boot_timestamp", "2024-05-01T11:00:00.000Z", "2024-05-01T12:00:00.000Z"),
            change("pid", "added", None, Some(json!(5151))),
            changed("state", "stopped", "running"),
            changed("zone_state", "ready", "running"),
        ]),
    );
    s.expected.push(Expected {
        machine: web,
        up: true,
        new_state: "running",
        time,
        alias: Some("web0"),
        owner: Some(owner),
    });
    // A modify that does not touch the zone state.
    event(
        &mut s,
        "modify",
        web,
        Some(vm(web, "web0", owner, "running", "running")),
        Some(vec![changed(
            "last_modified",
            "2024-05-01T12:00:00.000Z",
            "2024-05-01T12:00:01.000Z",
        )]),
    );
    // db (installed in the snapshot) boots in one coalesced step.
    let time = event(
        &mut s,
        "modify",
        db,
        Some(vm(db, "db0", owner, "running", "running")),
        Some(vec![
            changed("state", "stopped", "running"),
            changed("zone_state", "installed", "running"),
        ]),
    );
    s.expected.push(Expected {
        machine: db,
        up: true,
        new_state: "running",
        time,
        alias: Some("db0"),
        owner: Some(owner),
    });
    // cache is created (not a fault) and then boots.
    event(
        &mut s,
        "create",
        cache,
        Some(vm(cache, "cache0", owner, "installed", "stopped")),
        None,
    );
    let time = event(
        &mut s,
        "modify",
        cache,
        Some(vm(cache, "cache0", owner, "running", "running")),
        Some(vec![
            changed("zone_state", "installed", "running"),
            changed("state", "stopped", "running"),
        ]),
    );
    s.expected.push(Expected {
        machine: cache,
        up: true,
        new_state: "running",
        time,
        alias: Some("cache0"),
        owner: Some(owner),
    });
    // Deleting the running db is not a fault.
    event(&mut s, "delete", db, None, None);
    let (ms, date) = s.tick_iso();
    let last = format!(
        r#"{{"type":"modify","date":"{date}","zonename":"{marker}","uuid":"{marker}","vm":{},"changes":[{}]}}"#,
        vm(marker, "marker0", owner, "shutting_down", "stopping"),
        changed("zone_state", "running", "shutting_down"),
    );
    s.end_with(marker, last, Some(ms));
    s
}

/// Feeds the scenarios, in order, to one relay reading `format`, and checks
/// that exactly the expected decisions reach the master.
fn decisions_come_out(format: &'static str, scenarios: Vec<Scenario>) {
    let master = FakeMaster::start();
    let mut rig = RelayRig::new(master.url());
    let started_ms = now_ms();
    rig.start(&Source::feed(format));
    let server = rig.state()["serverUuid"].clone();
    for scenario in &scenarios {
        rig.append(&scenario.lines);
    }
    let names: BTreeMap<Uuid, String> = scenarios
        .iter()
        .flat_map(|s| s.zones.iter().map(|(z, n)| (*z, format!("{} {n}", s.name))))
        .collect();
    let expected: Vec<&Expected> = scenarios.iter().flat_map(|s| &s.expected).collect();
    let context = |events: &[Value]| {
        let mut out = rig.context();
        out.push_str("--- machine events received:\n");
        for e in events {
            let name = Uuid::parse_str(e["machine"].as_str().unwrap_or_default())
                .ok()
                .and_then(|m| names.get(&m).cloned())
                .unwrap_or_else(|| format!("unknown machine {}", e["machine"]));
            out.push_str(&format!("{name}: {}\n", decision(e)));
        }
        out
    };

    // Every expected decision arrives (the last marker is among them)...
    let marker = scenarios.last().expect("a scenario").marker.to_string();
    let events = wait_until(
        "the marker's and every expected decision",
        || context(&master.machine_events()),
        || {
            let events = master.machine_events();
            let arrived = |machine: Uuid| events.iter().filter(|e| e["machine"] == machine.to_string()).count();
            let all = events.iter().any(|e| e["machine"] == marker)
                && names
                    .keys()
                    .all(|z| arrived(*z) >= expected.iter().filter(|e| e.machine == *z).count());
            all.then_some(events)
        },
    );

    // ...and nothing else: per zone, exactly these, in this order. (Zones
    // are separate actors, so only each zone's own order is promised.)
    let context = context(&events);
    for (zone, name) in &names {
        let got: Vec<String> = events
            .iter()
            .filter(|e| e["machine"] == zone.to_string())
            .map(|e| format!("{} {}", if e["up"] == true { "up" } else { "down" }, e["newState"]))
            .collect();
        let want: Vec<String> = expected
            .iter()
            .filter(|e| e.machine == *zone)
            .map(|e| format!("{} \"{}\"", if e.up { "up" } else { "down" }, e.new_state))
            .collect();
        assert_eq!(got, want, "decisions for {name}\n{context}");
    }
    assert_eq!(events.len(), expected.len(), "machine events\n{context}");

    // What each event says besides up/down.
    let finished_ms = now_ms();
    // The n-th expectation of a zone is its n-th event (the orders matched).
    let mut seen: BTreeMap<Uuid, usize> = BTreeMap::new();
    for want in &expected {
        let name = &names[&want.machine];
        let nth = seen.entry(want.machine).or_default();
        let event = events
            .iter()
            .filter(|e| e["machine"] == want.machine.to_string())
            .nth(*nth)
            .expect("matched above");
        *nth += 1;
        assert_eq!(event["relay"], server, "{name}: relay uuid in {event}");
        assert_eq!(event["server"], server, "{name}: server uuid in {event}");
        assert!(
            Uuid::parse_str(event["uuid"].as_str().unwrap_or_default()).is_ok(),
            "{name}: event uuid in {event}"
        );
        let time = event["time"]
            .as_i64()
            .unwrap_or_else(|| panic!("{name}: no time in {event}"));
        match want.time {
            Some(ms) => assert_eq!(time, ms, "{name}: the time the source gave, in {event}"),
            None => assert!(
                (started_ms..=finished_ms).contains(&time),
                "{name}: the relay's own clock ({started_ms}..={finished_ms}) in {event}"
            ),
        }
        if let Some(alias) = want.alias {
            assert_eq!(event["alias"], alias, "{name}: alias in {event}");
        }
        if let Some(owner) = want.owner {
            assert_eq!(event["owner"], owner.to_string(), "{name}: owner in {event}");
        }
    }
    let uuids: std::collections::HashSet<&Value> = events.iter().map(|e| &e["uuid"]).collect();
    assert_eq!(uuids.len(), events.len(), "event uuids are unique\n{context}");

    // Every line was recorded-style and valid: none was skipped.
    let relay = rig.relay();
    let skipped = relay.log_messages("malformed zone line skipped");
    assert!(skipped.is_empty(), "lines skipped as malformed: {skipped:#?}");
    assert!(relay.is_running(), "the relay exited\n{context}");
}

#[test]
fn zoneevent_legacy_lines_decide_up_and_down() {
    decisions_come_out("zoneevent", vec![zoneevent_legacy()]);
}

#[test]
fn zoneevent_current_lines_decide_up_and_down() {
    decisions_come_out("zoneevent", vec![zoneevent_current()]);
}

#[test]
fn sysevent_lines_decide_up_and_down() {
    decisions_come_out("sysevent", vec![sysevent()]);
}

#[test]
fn vmadm_events_decide_up_and_down() {
    decisions_come_out("vmadm", vec![vmadm()]);
}

#[test]
fn auto_format_tells_every_format_apart_in_one_stream() {
    decisions_come_out(
        "auto",
        vec![zoneevent_legacy(), zoneevent_current(), sysevent(), vmadm()],
    );
}

// ---- master outage and relay SIGKILL ----

/// The machines of the outage timeline, and the account watching them.
struct Machines {
    /// Goes down and stays down.
    a: Uuid,
    /// Reboots, shorter than the hold.
    b: Uuid,
    /// Goes down last, once the rest is settled (see the module comment).
    marker: Uuid,
}

/// The emails of a run as (machine, what) pairs, in arrival order.
fn summary(smtp: &SmtpServer, machines: &Machines) -> Vec<(&'static str, &'static str)> {
    let name = |email: &Email| {
        [(machines.a, "A"), (machines.b, "B"), (machines.marker, "marker")]
            .into_iter()
            .find(|(m, _)| email.subject.contains(&m.to_string()))
            .map_or("unknown", |(_, n)| n)
    };
    smtp.emails()
        .iter()
        .map(|email| {
            let what = if email.subject.ends_with("is down") {
                "down"
            } else {
                "other"
            };
            (name(email), what)
        })
        .collect()
}

/// The events in the master's database.
struct MasterEvents {
    /// Machine uuid → (newState, up) of its events, in arrival order.
    by_machine: BTreeMap<String, Vec<(String, bool)>>,
}

fn master_events(data_dir: &Path) -> MasterEvents {
    let path = data_dir.join("amon.sqlite");
    let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut statement = db
        .prepare("SELECT body FROM events ORDER BY seq")
        .expect("events query");
    let bodies: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .expect("events rows")
        .collect::<Result<_, _>>()
        .expect("events bodies");
    let mut machines: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for body in bodies {
        let event: Value = serde_json::from_str(&body).expect("event json");
        if event["type"] == "machine" {
            machines
                .entry(event["machine"].as_str().expect("machine").to_string())
                .or_default()
                .push((
                    event["newState"].as_str().expect("newState").to_string(),
                    event["up"] == true,
                ));
        }
    }
    MasterEvents { by_machine: machines }
}

/// The relay's spool, read from its database: the events not yet
/// acknowledged, committed to disk.
fn spooled_events(data_dir: &Path) -> Vec<Value> {
    let path = data_dir.join("relay.sqlite");
    let Ok(db) = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return Vec::new();
    };
    let Ok(mut statement) = db.prepare("SELECT body FROM spool ORDER BY seq") else {
        return Vec::new();
    };
    let bodies: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .unwrap_or_default();
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).expect("spooled event json"))
        .collect()
}

/// A master on a port chosen in advance, so a relay can be told about it
/// before it runs.
struct FixedMaster {
    config: PathBuf,
    data_dir: PathBuf,
    dir: PathBuf,
    starts: usize,
}

impl FixedMaster {
    fn new(dir: &Path, port: u16, smtp: &SmtpServer) -> FixedMaster {
        let data_dir = dir.join("master-data");
        let config = AmonConfig {
            master_listen: format!("127.0.0.1:{port}"),
            smtp_port: Some(smtp.port),
            // One worker delivers in due order: the marker's email arriving
            // proves an earlier-due one was not merely late.
            workers: 1,
            ..AmonConfig::new(&data_dir)
        }
        .write(&dir.join("master.toml"));
        FixedMaster {
            config,
            data_dir,
            dir: dir.to_path_buf(),
            starts: 0,
        }
    }

    fn start(&mut self) -> Amon {
        self.starts += 1;
        Amon::start(
            Mode::Master,
            &self.config,
            &self.dir.join(format!("master-{}.log", self.starts)),
        )
    }
}

/// The outage timeline: A goes down for good, B reboots (down, up) quicker
/// than the hold. With `interrupted`, the master is stopped throughout, the
/// relay is SIGKILLed with the transitions still spooled and restarted, and
/// only then does the master come back. Returns the emails.
fn outage_timeline(interrupted: bool) -> Option<Vec<(&'static str, &'static str)>> {
    let port = free_port();
    let mut rig = RelayRig::new(format!("http://127.0.0.1:{port}"));
    let smtp = SmtpServer::start(rig.dir())?;
    let mut masters = FixedMaster::new(rig.dir(), port, &smtp);
    let machines = Machines {
        a: Uuid::new_v4(),
        b: Uuid::new_v4(),
        marker: Uuid::new_v4(),
    };

    // Account and probes first: events for unwatched machines make no alarm.
    let mut master = masters.start();
    assert_eq!(master.master_addr.map(|a| a.port()), Some(port), "master port");
    let api = master.api();
    api.create(
        "/accounts",
        &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
    );
    for (machine, name) in [
        (machines.a, "A up"),
        (machines.b, "B up"),
        (machines.marker, "marker up"),
    ] {
        api.create(
            "/pub/alice/probes",
            &json!({ "type": "machine-up", "machine": machine.to_string(), "name": name }),
        );
    }
    let mut master = if interrupted {
        let status = master.terminate();
        assert!(status.success(), "master after SIGTERM: {status}");
        None
    } else {
        Some(master)
    };

    let source = Source::feed("auto");
    rig.start(&source);
    let (a, b) = (machines.a, machines.b);
    rig.append(&[
        // Baselines: both run.
        current_zoneevent(a, "ready", "running"),
        current_zoneevent(b, "ready", "running"),
        current_zoneevent(a, "running", "shutting_down"),
        current_zoneevent(b, "running", "shutting_down"),
        current_zoneevent(b, "shutting_down", "shutting_down"),
        current_zoneevent(b, "shutting_down", "uninitialized"),
        current_zoneevent(b, "uninitialized", "initialized"),
        current_zoneevent(b, "initialized", "ready"),
        current_zoneevent(b, "ready", "running"),
    ]);
    // Five transitions: A up, B up, A down, B down, B up.
    let transitions = 5;

    if interrupted {
        // Wait until all five are committed to the spool (not merely in
        // memory), then kill the relay the hard way.
        let data_dir = rig.data_dir();
        let spooled = wait_until(
            "the relay to spool five transitions",
            || rig.context(),
            || {
                let spooled = spooled_events(&data_dir);
                (spooled.iter().filter(|e| e["type"] == "machine").count() >= transitions).then_some(spooled)
            },
        );
        wait_until(
            "the relay to find no master",
            || rig.context(),
            || (rig.state()["link"]["masterReachable"] == false).then_some(()),
        );
        let relay = rig.relay();
        relay.kill();
        let spooled_machine: Vec<&Value> = spooled.iter().filter(|e| e["type"] == "machine").collect();
        assert_eq!(spooled_machine.len(), transitions, "spooled: {spooled:#?}");
        assert!(
            spooled_machine
                .iter()
                .any(|e| e["machine"] == a.to_string() && e["up"] == false),
            "A's down is in the spool: {spooled:#?}"
        );

        // Restarted on the same data dir (a source that does not replay).
        rig.start(&source);
        let resent = wait_until(
            "the restarted relay to resend its spool",
            || rig.context(),
            || {
                rig.relay
                    .as_ref()
                    .map(|r| r.log_messages("resending spooled events"))
                    .filter(|l| !l.is_empty())
            },
        );
        assert_eq!(resent.len(), 1, "{}", rig.context());
        assert_eq!(resent[0]["count"], spooled.len(), "{}", rig.context());
        let state = rig.state();
        assert!(
            state["link"]["spoolDepth"].as_u64() >= Some(spooled.len() as u64),
            "the spool survived SIGKILL: {state}"
        );

        master = Some(masters.start());
        assert_eq!(
            master.as_ref().and_then(|m| m.master_addr).map(|a| a.port()),
            Some(port),
            "master port"
        );
    }
    let master = master.expect("a running master");

    // Everything reaches the master and leaves the spool.
    let context = || format!("{}--- master log:\n{}\n", rig.context(), tail_of(&master.log, 30));
    wait_until("the relay's spool to empty", context, || {
        let state = rig.state();
        (state["link"]["spoolDepth"] == 0 && state["link"]["masterReachable"] == true).then_some(())
    });

    // A's fault email after the hold; then the marker goes down, and once
    // its email is in, any email about B (due earlier) would be too.
    wait_until("an email about A", context, || {
        summary(&smtp, &machines).iter().any(|(m, _)| *m == "A").then_some(())
    });
    rig.append(&[current_zoneevent(machines.marker, "running", "shutting_down")]);
    wait_until("an email about the marker", context, || {
        summary(&smtp, &machines)
            .iter()
            .any(|(m, _)| *m == "marker")
            .then_some(())
    });

    // Every transition is in the master once: no transition twice under two
    // uuids (one row per uuid is the schema's own rule, not checked here).
    let MasterEvents { by_machine } = master_events(&masters.data_dir);
    let states = |m: Uuid| by_machine.get(&m.to_string()).cloned().unwrap_or_default();
    let s = |name: &str, up| (name.to_string(), up);
    assert_eq!(
        states(a),
        vec![s("running", true), s("shutting_down", false)],
        "A's transitions at the master\n{}",
        context()
    );
    assert_eq!(
        states(b),
        vec![s("running", true), s("shutting_down", false), s("running", true)],
        "B's transitions at the master\n{}",
        context()
    );

    // The alarms say the same: A open, B opened and closed.
    let (status, alarms) = master.api().get("/pub/alice/alarms?state=all");
    assert_eq!(status, 200, "{alarms}");
    let alarms = alarms.as_array().cloned().unwrap_or_default();
    assert_eq!(alarms.len(), 3, "A, B and the marker have one alarm each: {alarms:#?}");
    Some(summary(&smtp, &machines))
}

/// What a run of the outage timeline must send, interrupted or not: one
/// email for A (down), none for B (its reboot outlasted nothing), one for
/// the marker.
const OUTAGE_EMAILS: &[(&str, &str)] = &[("A", "down"), ("marker", "down")];

#[test]
fn never_interrupted_run_mails_a_and_not_the_reboot() {
    if let Some(emails) = outage_timeline(false) {
        assert_eq!(emails, OUTAGE_EMAILS);
    }
}

#[test]
fn master_outage_and_relay_sigkill_lose_nothing_and_mail_the_same() {
    if let Some(emails) = outage_timeline(true) {
        assert_eq!(emails, OUTAGE_EMAILS);
    }
}

// ---- reconciliation ----

/// `{"zonename", "state"}` lines for `list_command = ["cat", path]`.
fn write_zone_list(path: &Path, zones: &[(Uuid, &str)]) {
    let text: String = zones
        .iter()
        .map(|(zone, state)| format!("{}\n", json!({ "zonename": zone.to_string(), "state": state })))
        .collect();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[test]
fn zone_that_went_down_while_the_relay_was_stopped_is_reported_once() {
    let master = FakeMaster::start();
    let mut rig = RelayRig::new(master.url());
    let list = rig.dir().join("zones.list");
    let source = Source::Feed {
        format: "auto",
        list_command: Some(vec!["cat".into(), list.display().to_string()]),
        server_tag: false,
    };
    let (zone, steady, marker) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let events_about = |machine: Uuid| -> Vec<Value> {
        master
            .machine_events()
            .into_iter()
            .filter(|e| e["machine"] == machine.to_string())
            .collect()
    };
    // Waits for the marker's `n`th decision: every earlier one is in.
    let marker_decided = |rig: &RelayRig, n: usize| {
        wait_until(
            &format!("decision {n} about the marker"),
            || rig.context(),
            || (events_about(marker).len() >= n).then_some(()),
        )
    };

    // Run 1: both zones run; the snapshot is their baseline. The marker
    // boots after the list was taken.
    write_zone_list(&list, &[(zone, "running"), (steady, "running")]);
    rig.start(&source);
    rig.append(&[current_zoneevent(marker, "ready", "running")]);
    marker_decided(&rig, 1);
    let (status, state) = rig.relay().admin().get("/state?zones=true");
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["zones"]["states"][zone.to_string()], "running", "{state}");
    assert!(events_about(zone).is_empty(), "a baseline is not a decision");
    let status = rig.relay().terminate();
    assert!(status.success(), "relay after SIGTERM: {status}\n{}", rig.context());
    assert_eq!(master.server_events("shutting_down").len(), 1, "the relay said goodbye");

    // While it is stopped, the zone halts.
    write_zone_list(&list, &[(zone, "installed"), (steady, "running"), (marker, "running")]);
    rig.start(&source);
    let down = wait_until(
        "the missed down",
        || rig.context(),
        || events_about(zone).into_iter().next(),
    );
    assert_eq!(down["up"], false, "{down}");
    assert_eq!(down["oldState"], "running", "{down}");
    assert_eq!(down["newState"], "installed", "{down}");
    rig.append(&[current_zoneevent(marker, "running", "shutting_down")]);
    marker_decided(&rig, 2);
    assert_eq!(events_about(zone).len(), 1, "reported once\n{}", rig.context());
    let status = rig.relay().terminate();
    assert!(status.success(), "relay after SIGTERM: {status}\n{}", rig.context());

    // Another restart with nothing changed: nothing to report.
    write_zone_list(
        &list,
        &[(zone, "installed"), (steady, "running"), (marker, "installed")],
    );
    rig.start(&source);
    rig.append(&[current_zoneevent(marker, "ready", "running")]);
    marker_decided(&rig, 3);
    assert_eq!(events_about(zone).len(), 1, "not again\n{}", rig.context());
    assert!(events_about(steady).is_empty(), "the steady zone never changed");
    assert_eq!(master.server_events("started").len(), 3, "three relay starts");
}

// ---- one relay carrying several compute nodes ----

/// Machine uuid → server uuid of every zone the relay recorded, read from
/// its database.
fn recorded_zone_servers(data_dir: &Path) -> BTreeMap<String, String> {
    let path = data_dir.join("relay.sqlite");
    let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut statement = db.prepare("SELECT machine, server FROM zones").expect("zones query");
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("zones rows")
        .collect::<Result<_, _>>()
        .expect("zones")
}

#[test]
fn tagged_lines_are_about_the_server_they_name_and_untagged_ones_are_skipped() {
    let master = FakeMaster::start();
    let mut rig = RelayRig::new(master.url());
    let (cn1, cn2) = (Uuid::new_v4(), Uuid::new_v4());
    // In the zone list: one zone per server, and one untagged line.
    let (listed1, listed2, listed_untagged) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let list = rig.dir().join("zones.list");
    let tagged_list = [(Some(cn1), listed1), (Some(cn2), listed2), (None, listed_untagged)]
        .iter()
        .map(|(server, zone)| {
            let line = json!({ "zonename": zone.to_string(), "state": "running" }).to_string();
            match server {
                Some(server) => format!("{server} {line}\n"),
                None => format!("{line}\n"),
            }
        })
        .collect::<String>();
    std::fs::write(&list, tagged_list).expect("write the zone list");
    rig.start(&Source::Feed {
        format: "auto",
        list_command: Some(vec!["cat".into(), list.display().to_string()]),
        server_tag: true,
    });
    let relay_server = rig.state()["serverUuid"].clone();

    // Two formats on two servers, an untagged line between them, and the
    // marker last.
    let (a, b, untagged, marker) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    rig.append(&[
        format!("{cn1} {}", current_zoneevent(a, "running", "shutting_down")),
        current_zoneevent(untagged, "running", "shutting_down"),
        format!("{cn2} {}", legacy_zoneevent(b, "ready", "running")),
        format!("{cn2} {}", current_zoneevent(marker, "running", "shutting_down")),
    ]);
    let about = |events: &[Value], machine: Uuid| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["machine"] == machine.to_string())
            .cloned()
            .collect()
    };
    let events = wait_until(
        "the decisions about a, b and the marker",
        || rig.context(),
        || {
            let events = master.machine_events();
            [a, b, marker]
                .iter()
                .all(|m| !about(&events, *m).is_empty())
                .then_some(events)
        },
    );
    let context = format!("{}\n--- machine events: {events:#?}", rig.context());
    for (machine, server, up) in [(a, cn1, false), (b, cn2, true), (marker, cn2, false)] {
        let got = about(&events, machine);
        assert_eq!(got.len(), 1, "one decision about {machine}\n{context}");
        assert_eq!(got[0]["server"], server.to_string(), "server of {machine}\n{context}");
        assert_eq!(got[0]["relay"], relay_server, "the relay that sent it\n{context}");
        assert_eq!(got[0]["up"], up, "{}\n{context}", got[0]);
    }
    assert!(
        about(&events, untagged).is_empty(),
        "the untagged line decided\n{context}"
    );
    assert_eq!(events.len(), 3, "machine events\n{context}");

    // The untagged lines were logged, counted and skipped; the relay runs on.
    let relay = rig.relay();
    assert!(relay.is_running(), "the relay exited\n{context}");
    let skipped = relay.log_messages("malformed zone line skipped");
    assert_eq!(skipped.len(), 1, "{skipped:#?}\n{context}");
    assert!(
        skipped[0]["error"].as_str().is_some_and(|e| e.contains("server tag")),
        "{:#?}",
        skipped[0]
    );
    let skipped_list = relay.log_messages("malformed zone list line skipped");
    assert_eq!(skipped_list.len(), 1, "{skipped_list:#?}\n{context}");
    let (status, metrics) = relay.admin().get("/metrics");
    assert_eq!(status, 200, "relay GET /metrics: {metrics}");
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let skipped_total = metrics
        .lines()
        .find(|l| l.starts_with("amon_zone_lines_skipped_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(
        skipped_total,
        Some(2.0),
        "amon_zone_lines_skipped_total 2 (a list line, a stream line) in:\n{metrics}"
    );

    // Each server's zones, from its own snapshot or its own lines, are
    // recorded as that server's.
    let recorded = recorded_zone_servers(&rig.data_dir());
    for (machine, server) in [(listed1, cn1), (listed2, cn2), (a, cn1), (b, cn2), (marker, cn2)] {
        assert_eq!(
            recorded.get(&machine.to_string()),
            Some(&server.to_string()),
            "recorded server of {machine}: {recorded:#?}\n{context}"
        );
    }
    assert!(
        !recorded.contains_key(&listed_untagged.to_string()) && !recorded.contains_key(&untagged.to_string()),
        "untagged zones recorded: {recorded:#?}"
    );
}

// ---- a zone source that keeps dying ----

fn dying_source_is_restarted_with_backoff(command: &[&str]) {
    let master = FakeMaster::start();
    let mut rig = RelayRig::new(master.url());
    rig.start(&Source::Command(command.iter().map(|s| s.to_string()).collect()));

    let source = wait_until(
        "two restarts of the zone source",
        || rig.context(),
        || {
            let state = rig.state();
            let children = state["children"].as_array().cloned().unwrap_or_default();
            children
                .into_iter()
                .find(|c| c["name"] == "zone-source")
                .filter(|c| c["restarts"].as_u64() >= Some(2))
        },
    );
    assert!(source["running"].is_boolean(), "{source}");

    // The relay lives on: its admin API answers and its link keeps
    // heartbeating to the master.
    let relay = rig.relay();
    assert!(relay.is_running(), "the relay exited\n{}", rig.context());
    let admin: Api = relay.admin();
    let (status, ping) = admin.get("/ping");
    assert_eq!(status, 200, "{ping}");
    assert_eq!(ping, json!({ "ping": "pong", "status": "OK" }));
    let beats = master.server_events("heartbeat").len();
    wait_until(
        "one more heartbeat",
        || rig.context(),
        || (master.server_events("heartbeat").len() > beats).then_some(()),
    );

    // With backoff: each restart waited (1 s at first, growing), rather
    // than spinning.
    let delays: Vec<u64> = rig
        .relay()
        .log_messages("restarting child")
        .iter()
        .filter(|l| l["child"] == "zone-source")
        .map(|l| l["delay_ms"].as_u64().expect("delay_ms"))
        .collect();
    assert!(delays.len() >= 2, "restarts logged: {delays:?}\n{}", rig.context());
    assert!(delays.iter().all(|d| *d >= 500), "restart delays: {delays:?}");
    assert!(delays.last() >= delays.first(), "restart delays grow: {delays:?}");

    // And the restarts are counted in the metrics.
    let (status, metrics) = admin.get("/metrics");
    assert_eq!(status, 200, "relay GET /metrics: {metrics}");
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let restarts = metrics
        .lines()
        .find(|l| l.starts_with("amon_actor_restarts_total") && l.contains(r#"actor="zone-source""#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        restarts.is_some_and(|n| n >= 2.0),
        "amon_actor_restarts_total{{actor=\"zone-source\"}} >= 2 in:\n{metrics}"
    );
}

#[test]
fn source_that_exits_is_restarted_with_backoff_and_the_relay_lives_on() {
    dying_source_is_restarted_with_backoff(&["sh", "-c", "echo hi; exit 1"]);
}

#[test]
fn source_that_cannot_start_is_retried_with_backoff_and_the_relay_lives_on() {
    dying_source_is_restarted_with_backoff(&["/nonexistent/amon-zone-source"]);
}

// ---- several masters ----

/// The token the failover tests' relays show their closed masters; it must
/// appear in no log line, the failover's warning included.
const FAILOVER_TOKEN: &str = "failover-relay-token-5f0c2e9a";

/// A closed master on a port the kernel chose, with its own data dir under
/// `dir` (`<name>-data`), taking the relay's token.
fn start_master(dir: &Path, name: &str) -> (Amon, PathBuf) {
    let data_dir = dir.join(format!("{name}-data"));
    let config = AmonConfig {
        tokens: vec![(FAILOVER_TOKEN.to_string(), "relay".to_string())],
        ..AmonConfig::new(&data_dir)
    }
    .write(&dir.join(format!("{name}.toml")));
    let master = Amon::start(Mode::Master, &config, &dir.join(format!("{name}.log")));
    (master, data_dir)
}

fn url_of(master: &Amon) -> String {
    format!("http://{}", master.master_addr.expect("master address"))
}

/// The machine events about `machine` a master committed, as (newState, up).
fn committed_about(data_dir: &Path, machine: Uuid) -> Vec<(String, bool)> {
    master_events(data_dir)
        .by_machine
        .get(&machine.to_string())
        .cloned()
        .unwrap_or_default()
}

/// The relay's warnings that it turned from one master to another, as
/// (from, to).
fn switches(relay: &Amon) -> Vec<(String, String)> {
    relay
        .log_messages("master unavailable; turning to the next master")
        .iter()
        .map(|l| {
            (
                l["from"].as_str().unwrap_or_default().to_string(),
                l["to"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn assert_no_token_in(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!text.contains(FAILOVER_TOKEN), "{} shows the token", log.display());
}

#[test]
fn a_relay_whose_first_master_is_dead_sends_to_the_next() {
    let dir = tempfile::Builder::new()
        .prefix("amon-failover-it-")
        .tempdir()
        .expect("tempdir");
    let (master, data_dir) = start_master(dir.path(), "master");
    // Nobody listens on the first: connection refused, the next is tried.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut rig = RelayRig::failover(vec![dead.clone(), url_of(&master)], Some(FAILOVER_TOKEN.into()));
    rig.start(&Source::feed("auto"));
    let context = || format!("{}--- master log:\n{}\n", rig.context(), tail_of(&master.log, 30));

    let zone = Uuid::new_v4();
    rig.append(&[current_zoneevent(zone, "ready", "running")]);
    let committed = wait_until("the zone's up at the live master", context, || {
        Some(committed_about(&data_dir, zone)).filter(|c| !c.is_empty())
    });
    assert_eq!(committed, [("running".to_string(), true)], "{}", context());
    wait_until("the relay's spool to empty", context, || {
        let state = rig.state();
        (state["link"]["spoolDepth"] == 0 && state["link"]["masterReachable"] == true).then_some(())
    });

    let relay = rig.relay.as_ref().expect("relay");
    let turned = switches(relay);
    assert!(
        turned.contains(&(dead.clone(), url_of(&master))),
        "a warning names both masters: {turned:?}\n{}",
        context()
    );
    let metrics = relay.admin().exchange("GET", "/metrics", None);
    assert_eq!(metrics.status, 200, "GET /metrics");
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        sample(&metrics, "amon_relay_master_switches_total").is_some_and(|n| n >= 1.0),
        "the switch is counted:\n{metrics}"
    );
    assert_no_token_in(&relay.log);
}

#[test]
fn events_after_the_first_master_is_killed_reach_the_second() {
    let dir = tempfile::Builder::new()
        .prefix("amon-failover-it-")
        .tempdir()
        .expect("tempdir");
    let (mut first, first_data) = start_master(dir.path(), "first");
    let (second, second_data) = start_master(dir.path(), "second");
    let (first_url, second_url) = (url_of(&first), url_of(&second));
    let mut rig = RelayRig::failover(vec![first_url.clone(), second_url.clone()], Some(FAILOVER_TOKEN.into()));
    rig.start(&Source::feed("auto"));
    let first_log = first.log.clone();
    let context = || {
        format!(
            "{}--- first master log:\n{}\n--- second master log:\n{}\n",
            rig.context(),
            tail_of(&first_log, 20),
            tail_of(&second.log, 20)
        )
    };

    // While the first master lives, it gets the events.
    let (before, after) = (Uuid::new_v4(), Uuid::new_v4());
    rig.append(&[current_zoneevent(before, "ready", "running")]);
    wait_until("the first event at the first master", context, || {
        (!committed_about(&first_data, before).is_empty()).then_some(())
    });
    // And has answered 202: the relay will not send it again.
    wait_until("the relay's spool to empty", context, || {
        (rig.state()["link"]["spoolDepth"] == 0).then_some(())
    });
    assert!(switches(rig.relay.as_ref().expect("relay")).is_empty(), "{}", context());

    first.kill();
    rig.append(&[
        current_zoneevent(after, "ready", "running"),
        current_zoneevent(after, "running", "shutting_down"),
    ]);
    let context = || {
        format!(
            "{}--- second master log:\n{}\n",
            rig.context(),
            tail_of(&second.log, 20)
        )
    };
    let committed = wait_until("the later events at the second master", context, || {
        Some(committed_about(&second_data, after)).filter(|c| c.len() >= 2)
    });
    assert_eq!(
        committed,
        [("running".to_string(), true), ("shutting_down".to_string(), false)],
        "{}",
        context()
    );
    wait_until("the relay's spool to empty", context, || {
        let state = rig.state();
        (state["link"]["spoolDepth"] == 0 && state["link"]["masterReachable"] == true).then_some(())
    });
    // What the first master acknowledged was not sent again.
    assert!(committed_about(&second_data, before).is_empty(), "{}", context());

    let relay = rig.relay.as_ref().expect("relay");
    assert!(
        switches(relay).contains(&(first_url.clone(), second_url.clone())),
        "a warning names both masters: {:?}\n{}",
        switches(relay),
        context()
    );
    assert_no_token_in(&relay.log);
}
