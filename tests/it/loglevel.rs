//! The log filter of a running daemon changes without a restart (issue
//! 12): `PUT /loglevel` on the Master API and on the relay's admin API, in
//! a real standalone process. The change is logged once, debug lines start
//! to appear, and a filter that does not parse is refused with 400.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{now_ms, wait_until, Amon, AmonConfig, Mode};

/// Bunyan's level number for `debug`.
const DEBUG: u64 = 20;

#[test]
fn the_log_filter_changes_at_run_time_on_the_master_and_the_relay() {
    let dir = tempfile::Builder::new()
        .prefix("amon-loglevel-it-")
        .tempdir()
        .expect("tempdir");
    let config = AmonConfig::new(&dir.path().join("data")).write(&dir.path().join("standalone.toml"));
    let amon = Amon::start(Mode::Standalone, &config, &dir.path().join("standalone.log"));
    let api = amon.api();
    let admin = amon.admin();

    let (status, level) = api.get("/loglevel");
    assert_eq!((status, level), (200, json!({ "level": "info" })));
    let debug_lines = || amon.log_lines().iter().filter(|l| l["level"] == DEBUG).count();
    assert_eq!(debug_lines(), 0, "no debug line at info");

    // A machine with a probe comes up with no alarm open: the alarm actor
    // says so at debug level.
    api.create(
        "/accounts",
        &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
    );
    let machine = Uuid::new_v4();
    api.create(
        "/pub/alice/probes",
        &json!({ "type": "machine-up", "machine": machine }),
    );
    let up = |machine: Uuid| {
        let server = Uuid::new_v4();
        json!({
            "type": "machine", "uuid": Uuid::new_v4(), "time": now_ms(), "relay": server,
            "machine": machine, "server": server, "oldState": "stopped", "newState": "running", "up": true,
        })
    };

    let response = api.exchange("PUT", "/loglevel", Some(&json!({ "level": "debug" })));
    assert_eq!((response.status, response.json()), (200, json!({ "level": "debug" })));
    assert_eq!(amon.log_messages("log filter changed").len(), 1, "logged once");
    let (status, _) = api.post("/events", &Value::Array(vec![up(machine)]));
    assert_eq!(status, 202);
    wait_until("a debug line", String::new, || (debug_lines() > 0).then_some(()));

    // Back to warn through the relay's admin API: same process, same filter.
    let response = admin.exchange("PUT", "/loglevel", Some(&json!({ "level": "warn" })));
    assert_eq!((response.status, response.json()), (200, json!({ "level": "warn" })));
    assert_eq!(admin.get("/loglevel").1, json!({ "level": "warn" }));

    // A filter that does not parse changes nothing.
    let response = api.exchange("PUT", "/loglevel", Some(&json!({ "level": "amon=loud" })));
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["code"], "InvalidArgument");
    assert_eq!(api.get("/loglevel").1, json!({ "level": "warn" }));
}
