//! Upgrades and backups (issue 12): data dirs written by the last release
//! (commit 040829a; the fixtures in `tests/fixtures/040829a/` were made by
//! `tests/fixtures/make-040829a.sh` with that build) are opened by today's
//! `amon master` and `amon relay` with everything in them, the open alarm
//! still notifies on its clear, and the relay's spool still reaches a
//! master. `amon backup` copies a live master's database.
//!
//! Mail goes to `.eml` files in `data_dir/mail/` (no SMTP server needed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{now_ms, sample, tail_of, wait_until, Amon, AmonConfig, Api, ExecZones, Mode};

/// The fixtures of release 040829a.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/040829a");

// The fixed uuids of `make-040829a.sh`.
const ALICE: &str = "a11ce000-0000-4000-8000-000000000001";
const BOB: &str = "b0b00000-0000-4000-8000-000000000002";
const CN7: &str = "c0000000-0000-4000-8000-000000000007";
const CN9: &str = "c0000000-0000-4000-8000-000000000009";
const WEB7: &str = "e0000000-0000-4000-8000-000000000007";
const WEB9: &str = "e0000000-0000-4000-8000-000000000009";
const RELAY_SERVER: &str = "c0000000-0000-4000-8000-0000000000aa";
const RELAY_ZONE: &str = "e0000000-0000-4000-8000-0000000000aa";

/// A data dir holding a copy of the fixture `file`.
fn data_dir_with(dir: &Path, file: &str) -> PathBuf {
    let data = dir.join("data");
    fs::create_dir_all(&data).expect("create data dir");
    fs::copy(Path::new(FIXTURES).join(file), data.join(file)).unwrap_or_else(|e| panic!("cannot copy {file}: {e}"));
    data
}

/// A master on `data`, one notifier worker, a heartbeat timeout long
/// enough that the fixture's silent servers raise no incident, and events
/// and deliveries of any age taken (a fixture is as old as it is).
fn start_master(dir: &Path, data: &Path) -> Amon {
    let config = AmonConfig {
        workers: 1,
        heartbeat_timeout: Some(std::time::Duration::from_secs(86_400)),
        master_extra: vec!["event_retention = \"36500d\"".into()],
        // The fixture's pending delivery is as old as the fixture.
        notify_extra: vec!["max_age = \"36500d\"".into()],
        ..AmonConfig::new(data)
    }
    .write(&dir.join("master.toml"));
    Amon::start(Mode::Master, &config, &dir.join("master.log"))
}

fn get_ok(api: &Api, path: &str) -> Value {
    let (status, body) = api.get(path);
    assert_eq!(status, 200, "GET {path} answered {status}: {body}");
    body
}

fn list(api: &Api, path: &str) -> Vec<Value> {
    get_ok(api, path)
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("GET {path} is not a list"))
}

fn names(items: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .map(|i| i["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

/// The `.eml` files of a data dir, as text.
fn emails(data: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(data.join("mail")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .collect()
}

#[test]
fn a_master_data_dir_of_release_040829a_opens_with_everything_in_it() {
    let dir = tempfile::Builder::new()
        .prefix("amon-upgrade-it-")
        .tempdir()
        .expect("tempdir");
    let data = data_dir_with(dir.path(), "amon.sqlite");
    let master = start_master(dir.path(), &data);
    let api = master.api();
    let context = || format!("master log:\n{}", tail_of(&master.log, 40));

    // The migrations ran at start, and said so.
    let upgraded: Vec<u64> = master
        .log_messages("database schema upgraded")
        .iter()
        .filter_map(|l| l["version"].as_u64())
        .collect();
    // The release was at version 6.
    let expected: Vec<u64> = (7..=amon::store::MASTER_SCHEMA_VERSION as u64).collect();
    assert_eq!(upgraded, expected, "{}", context());

    // Accounts, contacts, groups, probes.
    assert_eq!(get_ok(&api, "/pub/alice")["uuid"], ALICE);
    assert_eq!(
        get_ok(&api, "/pub/alice")["attributes"],
        json!({}),
        "no attributes before 9"
    );
    assert_eq!(get_ok(&api, "/pub/bob")["uuid"], BOB);
    let contacts = list(&api, "/pub/alice/contacts");
    // `email` is the account's implicit contact, listed with the stored ones.
    assert_eq!(names(&contacts), ["email", "ops", "pager"], "{contacts:?}");
    let ops = contacts.iter().find(|c| c["name"] == "ops").unwrap();
    assert_eq!(ops["medium"], "email", "{ops}");
    assert_eq!(ops["address"], "ops@example.com", "{ops}");
    let pager = contacts.iter().find(|c| c["name"] == "pager").unwrap();
    assert_eq!(pager["medium"], "webhook", "{pager}");
    assert_eq!(names(&list(&api, "/pub/bob/contacts")), ["email", "hook"]);
    let groups = list(&api, "/pub/alice/probegroups");
    assert_eq!(names(&groups), ["web tier"]);
    assert_eq!(groups[0]["contacts"], json!(["email", "ops"]), "{groups:?}");
    let web_tier = groups[0]["uuid"].clone();
    assert_eq!(names(&list(&api, "/pub/bob/probegroups")), ["db tier"]);
    let probes = list(&api, "/pub/alice/probes");
    assert_eq!(names(&probes), ["web7 up", "web8 up"]);
    let web7 = probes.iter().find(|p| p["name"] == "web7 up").unwrap();
    assert_eq!(web7["group"], web_tier, "{web7}");
    assert_eq!(web7["machine"], WEB7, "{web7}");
    let web8 = probes.iter().find(|p| p["name"] == "web8 up").unwrap();
    assert!(web8["group"].is_null(), "web8 up is in no group: {web8}");
    assert_eq!(names(&list(&api, "/pub/bob/probes")), ["db1 up"]);

    // Maintenance windows: the account's and the operator's.
    let windows = list(&api, "/pub/alice/maintenances");
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0]["machines"], json!([WEB9]), "{windows:?}");
    let operator = list(&api, "/maintenances");
    let on_cn9: Vec<&Value> = operator.iter().filter(|w| w["servers"] == json!([CN9])).collect();
    assert_eq!(on_cn9.len(), 1, "the operator's window on cn-9: {operator:?}");

    // The open alarms, as the old build left them: alice's notified.
    let open = list(&api, "/pub/alice/alarms?state=open");
    assert_eq!(open.len(), 1, "{open:?}");
    let alarm = &open[0];
    assert_eq!(alarm["probeGroup"], web_tier, "{alarm}");
    assert_eq!(alarm["faults"][0]["notified"], true, "{alarm}");
    assert_eq!(list(&api, "/pub/bob/alarms?state=open").len(), 1);

    // bob's webhook delivery was pending in the outbox: the new build takes
    // it up again (its webhook still refuses, so it retries) and loses
    // nothing.
    wait_until("the pending webhook delivery to be retried", context, || {
        (!master.log_messages("delivery failed; will retry").is_empty()).then_some(())
    });
    assert_eq!(list(&api, "/deadletters"), Vec::<Value>::new());

    // The clear of the open alarm closes it and notifies. The release kept
    // no owners; the event says who owns the machine, as relays' events
    // always did, and alice (not an operator) hears of her own machine.
    let before = emails(&data).len();
    assert_eq!(before, 0, "no mail before the clear");
    let up = json!([{
        "type": "machine", "uuid": Uuid::new_v4(), "time": now_ms(), "relay": CN7, "machine": WEB7,
        "server": CN7, "alias": "web7", "owner": ALICE, "oldState": "ready", "newState": "running", "up": true,
    }]);
    let (status, body) = api.post("/events", &up);
    assert_eq!(status, 202, "POST /events: {body}");
    let id = alarm["id"].as_u64().expect("alarm id");
    wait_until("alice's alarm to close", context, || {
        let alarm = get_ok(&api, &format!("/pub/alice/alarms/{id}"));
        (alarm["closed"] == true).then_some(())
    });
    let mail = wait_until("the clear to be mailed", context, || {
        let mail = emails(&data);
        (!mail.is_empty()).then_some(mail)
    });
    assert!(
        mail.iter()
            .any(|m| m.contains("alice@example.com") || m.contains("ops@example.com")),
        "the clear goes to the group's contacts: {mail:?}"
    );
    // Only the clear: the fault was notified by the old build, and the new
    // one does not notify it again. It answers the old build's message.
    for m in &mail {
        assert!(m.contains("is back up"), "a clear: {m}");
        assert!(
            m.contains(&format!("Alarm {id}: machine web7")),
            "about alarm {id}: {m}"
        );
        assert!(m.contains("In-Reply-To:"), "threaded under the fault's email: {m}");
    }
}

#[test]
fn a_relay_spool_of_release_040829a_is_sent_to_the_master() {
    let dir = tempfile::Builder::new()
        .prefix("amon-upgrade-it-")
        .tempdir()
        .expect("tempdir");
    let master_dir = dir.path().join("master");
    fs::create_dir_all(&master_dir).unwrap();
    let master = start_master(&master_dir, &master_dir.join("data"));
    let api = master.api();

    // Someone watches the zone whose events were spooled.
    api.create(
        "/accounts",
        &json!({ "login": "carol", "email": "carol@example.com", "operator": true }),
    );
    let probe = api.create(
        "/pub/carol/probes",
        &json!({ "type": "machine-up", "machine": RELAY_ZONE, "name": "zone up" }),
    );

    let relay_dir = dir.path().join("relay");
    let data = data_dir_with(&relay_dir, "relay.sqlite");
    let text = AmonConfig {
        master_url: Some(format!("http://{}", master.master_addr.unwrap())),
        zones: Some(ExecZones::auto(vec![
            "sh".into(),
            "-c".into(),
            "exec sleep 3600".into(),
        ])),
        ..AmonConfig::new(&data)
    }
    .text();
    // The server the spooled events came from.
    let text = text.replacen("[relay]\n", &format!("[relay]\nserver_uuid = \"{RELAY_SERVER}\"\n"), 1);
    let config = relay_dir.join("relay.toml");
    fs::write(&config, text).unwrap();
    let relay = Amon::start(Mode::Relay, &config, &relay_dir.join("relay.log"));
    let context = || {
        format!(
            "master log:\n{}\nrelay log:\n{}",
            tail_of(&master.log, 30),
            tail_of(&relay.log, 30)
        )
    };

    wait_until("the spooled zone events to be stored by the master", context, || {
        let (_, metrics) = api.get("/metrics");
        let stored = sample(metrics.as_str().unwrap_or(""), "amon_events_stored{type=\"machine\"}")?;
        (stored >= 2.0).then_some(())
    });
    // They reached the alarm of the probe on that zone (down, then up).
    let alarms = wait_until("an alarm about the spooled zone", context, || {
        let alarms = list(&api, "/pub/carol/alarms?state=all");
        (!alarms.is_empty()).then_some(alarms)
    });
    assert_eq!(alarms[0]["probe"], probe["uuid"], "{alarms:?}");
    drop(relay);
}

#[test]
fn backup_copies_a_running_master_with_what_it_committed() {
    let dir = tempfile::Builder::new()
        .prefix("amon-backup-it-")
        .tempdir()
        .expect("tempdir");
    let data = dir.path().join("data");
    let master = start_master(dir.path(), &data);
    let api = master.api();
    for n in 0..20 {
        api.create(
            "/accounts",
            &json!({ "login": format!("user{n}"), "email": format!("user{n}@example.com") }),
        );
    }
    // Events keep arriving while the backup runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut posted = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let events: Vec<Value> = (0..50)
                    .map(|_| {
                        json!({
                            "type": "machine", "uuid": Uuid::new_v4(), "time": now_ms(), "relay": CN7,
                            "machine": Uuid::new_v4(), "server": CN7, "oldState": "running",
                            "newState": "shutting_down", "up": false,
                        })
                    })
                    .collect();
                let (status, body) = api.post("/events", &Value::Array(events));
                assert_eq!(status, 202, "POST /events: {body}");
                posted += 1;
            }
            posted
        })
    };

    let dest = dir.path().join("backup");
    let out = Command::new(env!("CARGO_BIN_EXE_amon"))
        .arg("backup")
        .arg(&data)
        .arg(&dest)
        .output()
        .expect("run amon backup");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let batches: u32 = feeder.join().expect("the feeder");
    assert!(
        out.status.success(),
        "amon backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(batches > 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("amon.sqlite"),
        "it names what it wrote"
    );

    // The copy opens with today's build, with every account committed
    // before the backup started.
    let restored_dir = dir.path().join("restored");
    let copy = restored_dir.join("data");
    fs::create_dir_all(&copy).unwrap();
    fs::copy(dest.join("amon.sqlite"), copy.join("amon.sqlite")).unwrap();
    let restored = start_master(&restored_dir, &copy);
    let accounts: Vec<String> = (0..20)
        .map(|n| {
            get_ok(&restored.api(), &format!("/pub/user{n}"))["login"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(accounts.len(), 20);

    // A second backup into the same place refuses to overwrite.
    let again = Command::new(env!("CARGO_BIN_EXE_amon"))
        .arg("backup")
        .arg(&data)
        .arg(&dest)
        .output()
        .expect("run amon backup");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
