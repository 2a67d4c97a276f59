//! The master's ingest path through the real binary (issue #10): `POST
//! /events` answers `202` once the events are committed and routing goes on
//! asynchronously, so a master SIGKILLed right after its `202`s must still
//! apply every acknowledged event after it restarts, and none twice; and when
//! the alarm actors cannot keep up, it answers `503` with `Retry-After`
//! instead of queueing without bound, and loses nothing.
//!
//! The test plays the relays: each machine is on a server of its own (no
//! server incident), and the hold is an hour, so nothing is notified and the
//! alarms are the whole effect. "Applied once" is `numEvents == 1` on every
//! alarm: a second application of the same down event would make it 2.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{now_ms, tail_of, wait_until, Amon, AmonConfig, Api, Mode};

/// A master whose hold is an hour, with `master_extra` in `[master]`.
fn start_master(dir: &Path, master_extra: &[&str]) -> Amon {
    let text = AmonConfig {
        master_extra: master_extra.iter().map(|l| l.to_string()).collect(),
        ..AmonConfig::new(&dir.join("data"))
    }
    .text()
    .replace("hold = \"2s\"", "hold = \"1h\"");
    let config = dir.join("master.toml");
    std::fs::write(&config, text).expect("write config");
    Amon::start(Mode::Master, &config, &dir.join("master.log"))
}

/// An account with one machine-up probe per machine; returns the machines.
fn provision(api: &Api, machines: usize) -> Vec<Uuid> {
    api.create(
        "/accounts",
        &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
    );
    (0..machines)
        .map(|_| {
            let machine = Uuid::new_v4();
            api.create(
                "/pub/alice/probes",
                &json!({ "type": "machine-up", "machine": machine }),
            );
            machine
        })
        .collect()
}

/// The machine going down, as its relay (one per server) posts it.
fn down(machine: Uuid) -> Value {
    let server = Uuid::new_v4();
    json!({
        "type": "machine",
        "uuid": Uuid::new_v4(),
        "time": now_ms(),
        "relay": server,
        "machine": machine,
        "server": server,
        "oldState": "running",
        "newState": "stopped",
        "up": false,
    })
}

/// Alice's open alarms, once there are `expected` of them.
fn open_alarms(api: &Api, expected: usize, log: &Path) -> Vec<Value> {
    wait_until(
        &format!("{expected} open alarms"),
        || tail_of(log, 30),
        || {
            let (status, alarms) = api.get("/pub/alice/alarms?state=open");
            let alarms = alarms.as_array().cloned().unwrap_or_default();
            (status == 200 && alarms.len() >= expected).then_some(alarms)
        },
    )
}

/// Every alarm applied its one event exactly once.
fn assert_each_applied_once(alarms: &[Value], machines: &[Uuid]) {
    assert_eq!(alarms.len(), machines.len(), "one alarm per machine");
    for alarm in alarms {
        assert_eq!(alarm["numEvents"], 1, "an event applied twice: {alarm}");
    }
    let mut seen: Vec<String> = alarms
        .iter()
        .map(|a| {
            a["faults"][0]["event"]["machine"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    seen.sort();
    let mut expected: Vec<String> = machines.iter().map(Uuid::to_string).collect();
    expected.sort();
    assert_eq!(seen, expected, "every machine's event reached its alarm");
}

#[test]
fn a_master_killed_right_after_its_202s_applies_every_event_once_after_restart() {
    let dir = tempfile::Builder::new()
        .prefix("amon-ingest-it-")
        .tempdir()
        .expect("tempdir");
    let mut master = start_master(dir.path(), &[]);
    let api = master.api();
    let machines = provision(&api, 600);
    // Batches as a relay sends them; the last 202 is followed at once by a
    // SIGKILL, while the router and the alarm shards are still at work.
    for chunk in machines.chunks(100) {
        let batch: Vec<Value> = chunk.iter().map(|m| down(*m)).collect();
        let (status, body) = api.post("/events", &Value::Array(batch));
        assert_eq!(status, 202, "{body}");
    }
    master.kill();

    let master = Amon::start(
        Mode::Master,
        &dir.path().join("master.toml"),
        &dir.path().join("master.log"),
    );
    let api = master.api();
    let alarms = open_alarms(&api, machines.len(), &dir.path().join("master.log"));
    assert_each_applied_once(&alarms, &machines);

    // Killed again once everything was applied: the replay (from a
    // watermark that may lag) applies nothing a second time.
    drop(master);
    let master = Amon::start(
        Mode::Master,
        &dir.path().join("master.toml"),
        &dir.path().join("master.log"),
    );
    let api = master.api();
    let alarms = open_alarms(&api, machines.len(), &dir.path().join("master.log"));
    assert_each_applied_once(&alarms, &machines);
}

#[test]
fn a_saturated_master_answers_503_with_retry_after_and_loses_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("amon-ingest-it-")
        .tempdir()
        .expect("tempdir");
    // Room for one batch in flight at a time.
    let master = start_master(dir.path(), &["ingest_backlog = 5"]);
    let api = master.api();
    let machines = provision(&api, 400);
    let refused = Arc::new(AtomicUsize::new(0));
    // Eight relays at once, ten events a batch, each retrying a refused
    // batch as a relay does.
    let posters: Vec<_> = machines
        .chunks(50)
        .map(|share| {
            let share = share.to_vec();
            let refused = refused.clone();
            std::thread::spawn(move || {
                for chunk in share.chunks(10) {
                    let batch = Value::Array(chunk.iter().map(|m| down(*m)).collect());
                    loop {
                        let response = api.exchange("POST", "/events", Some(&batch));
                        match response.status {
                            202 => break,
                            503 => {
                                assert_eq!(response.json()["code"], "ServiceUnavailable");
                                let wait = response.header("retry-after").expect("a 503 says when to retry");
                                assert!(wait.parse::<u64>().is_ok(), "Retry-After: {wait}");
                                refused.fetch_add(1, Ordering::Relaxed);
                                // A relay would wait Retry-After; retrying
                                // soon keeps the test short.
                                std::thread::sleep(std::time::Duration::from_millis(5));
                            }
                            other => panic!("POST /events answered {other}: {:?}", response.json()),
                        }
                    }
                }
            })
        })
        .collect();
    for poster in posters {
        poster.join().expect("poster");
    }
    let alarms = open_alarms(&api, machines.len(), &dir.path().join("master.log"));
    assert_each_applied_once(&alarms, &machines);
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "eight relays against a backlog of five events were never refused"
    );
    let (_, metrics) = api.get("/metrics");
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("amon_ingest_refused_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}
