//! Retention through the real binary: a master with a retention of seconds
//! deletes its old events (`amon_events_stored` falls), still recognises a
//! second copy of an event it kept, drops events older than its retention
//! at the door, and, SIGKILLed in the middle of a collection, comes back
//! with its counts equal to what is really stored and every newer event
//! still there. The database is read directly (the master dead or stopped)
//! to know what is really stored. Nothing sleeps to synchronise: the
//! conditions are polled, including "the retention has passed".

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{now_ms, sample, tail_of, wait_until, wait_until_for, Amon, AmonConfig, Api, Mode};

/// Every master here keeps events this long: short, so a test sees them go.
const RETENTION: &str = "2s";
const RETENTION_MS: i64 = 2_000;

/// `[master]` lines for a master that keeps events `RETENTION` and looks
/// for garbage every 200 ms.
fn short_retention() -> Vec<String> {
    vec![
        format!("event_retention = \"{RETENTION}\""),
        "event_max_age = \"1s\"".into(),
        "gc_interval = \"200ms\"".into(),
    ]
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("amon-gc-it-")
        .tempdir()
        .expect("tempdir")
}

/// A machine coming up, as a relay reports it, stamped now.
fn machine_up() -> Value {
    let server = Uuid::new_v4();
    json!({
        "type": "machine", "uuid": Uuid::new_v4(), "time": now_ms(), "relay": server,
        "machine": Uuid::new_v4(), "server": server,
        "oldState": "ready", "newState": "running", "up": true,
    })
}

fn post(api: Api, events: &[Value]) {
    let (status, body) = api.post("/events", &Value::Array(events.to_vec()));
    assert_eq!(status, 202, "POST /events answered {status}: {body}");
}

fn metrics(api: Api) -> String {
    let response = api.exchange("GET", "/metrics", None);
    assert_eq!(response.status, 200, "GET /metrics");
    String::from_utf8_lossy(&response.body).into_owned()
}

/// `amon_events_stored{type="machine"}`.
fn machines_stored(api: Api) -> u64 {
    sample(&metrics(api), r#"amon_events_stored{type="machine"}"#).expect("amon_events_stored is shown") as u64
}

/// `amon_events_too_old_total`, 0 until it has counted something.
fn too_old(api: Api) -> u64 {
    sample(&metrics(api), "amon_events_too_old_total").unwrap_or(0.0) as u64
}

fn context(amon: &Amon) -> String {
    format!("log {}:\n{}", amon.log.display(), tail_of(&amon.log, 30))
}

/// Waits until `ms` milliseconds have passed since `since` (epoch ms): what
/// a retention is made of.
fn wait_past(since: i64, ms: i64) {
    wait_until("the retention to pass", String::new, || {
        (now_ms() - since > ms).then_some(())
    });
}

/// What the database of a stopped master really holds: the events by
/// uuid, and the counts the master keeps of them.
struct Stored {
    uuids: Vec<Uuid>,
    counted: i64,
}

fn read_database(data_dir: &Path) -> Stored {
    let path = data_dir.join("amon.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut stmt = conn.prepare("SELECT uuid FROM events ORDER BY seq").expect("prepare");
    let uuids = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .expect("query")
        .map(|row| Uuid::from_slice(&row.expect("row")).expect("a 16-byte uuid"))
        .collect();
    let counted = conn
        .query_row("SELECT SUM(stored) FROM event_counts", [], |r| r.get(0))
        .expect("event_counts");
    Stored { uuids, counted }
}

fn uuid_of(event: &Value) -> Uuid {
    event["uuid"].as_str().and_then(|u| u.parse().ok()).expect("event uuid")
}

fn start_master(dir: &Path, data: &Path, master_extra: Vec<String>, name: &str) -> Amon {
    let config: PathBuf = AmonConfig {
        master_extra,
        ..AmonConfig::new(data)
    }
    .write(&dir.join(format!("{name}.toml")));
    Amon::start(Mode::Master, &config, &dir.join(format!("{name}.log")))
}

#[test]
fn events_past_their_retention_go_and_a_copy_of_a_kept_one_is_still_recognised() {
    let dir = tempdir();
    let master = start_master(dir.path(), &dir.path().join("data"), short_retention(), "master");
    let api = master.api();

    let old: Vec<Value> = (0..10).map(|_| machine_up()).collect();
    post(api, &old);
    assert_eq!(machines_stored(api), 10, "{}", context(&master));
    // Past the retention every event goes but the newest, which stays so
    // that its sequence number is never handed out again.
    wait_until(
        "old events to be collected but the newest",
        || format!("stored: {}\n{}", machines_stored(api), context(&master)),
        || (machines_stored(api) == 1).then_some(()),
    );

    // Newer events arrive; the next collection takes the last old one and
    // keeps them (they are inside the retention).
    let kept: Vec<Value> = (0..5).map(|_| machine_up()).collect();
    post(api, &kept);
    wait_until(
        "the last old event to be collected and the new ones kept",
        || format!("stored: {}\n{}", machines_stored(api), context(&master)),
        || (machines_stored(api) == 5).then_some(()),
    );
    // A relay sends them again (it never saw the 202): they are recognised
    // as copies, not dropped for their age, and not stored twice.
    post(api, &kept);
    assert_eq!(machines_stored(api), 5, "copies are not stored\n{}", context(&master));
    assert_eq!(
        too_old(api),
        0,
        "the copies were inside the retention\n{}",
        context(&master)
    );

    // An event whose own time is past the retention is taken (202) and
    // dropped: a first copy of it may have been collected already.
    let mut late = machine_up();
    late["time"] = json!(now_ms() - 10 * RETENTION_MS);
    post(api, &[late]);
    assert_eq!(too_old(api), 1, "{}", context(&master));
    assert_eq!(machines_stored(api), 5, "{}", context(&master));

    let text = metrics(api);
    assert!(
        sample(&text, r#"amon_gc_deleted_total{table="events"}"#).is_some_and(|n| n >= 10.0),
        "every collected event is counted:\n{text}"
    );
    assert!(
        sample(&text, "amon_gc_seconds").is_some(),
        "the last collection is timed:\n{text}"
    );
}

/// Events the first master posts: enough that collecting them takes many
/// batches (1,000 each), so the kill lands in the middle.
const MANY: usize = 50_000;

#[test]
fn a_master_killed_during_a_collection_keeps_exact_counts_and_every_newer_event() {
    let dir = tempdir();
    let data = dir.path().join("data");

    // Many events, stored by a master that keeps them for an hour.
    let mut first = start_master(
        dir.path(),
        &data,
        vec!["event_retention = \"1h\"".into(), "gc_interval = \"1h\"".into()],
        "master-1",
    );
    let api = first.api();
    for _ in 0..MANY / 1_000 {
        let batch: Vec<Value> = (0..1_000).map(|_| machine_up()).collect();
        post(api, &batch);
    }
    let posted = now_ms();
    assert_eq!(machines_stored(api), MANY as u64, "{}", context(&first));
    first.terminate();
    wait_past(posted, RETENTION_MS);

    // The same database under a retention of seconds: the first collection
    // finds every one of them old. Newer events come in meanwhile.
    let mut second = start_master(dir.path(), &data, short_retention(), "master-2");
    let api = second.api();
    let newer: Vec<Value> = (0..100).map(|_| machine_up()).collect();
    post(api, &newer);
    let all = (MANY + newer.len()) as u64;
    wait_until_for(
        "the collection to begin",
        60,
        || context(&second),
        || (machines_stored(api) < all).then_some(()),
    );
    second.kill();

    let stored = read_database(&data);
    assert_eq!(
        stored.counted,
        stored.uuids.len() as i64,
        "the counts are exactly what is stored after the kill"
    );
    for event in &newer {
        assert!(
            stored.uuids.contains(&uuid_of(event)),
            "a newer event was deleted: {event}"
        );
    }
    let old_left = stored.uuids.len() - newer.len();
    assert!(
        old_left > 0 && old_left < MANY,
        "killed in the middle of the collection ({old_left} of {MANY} old events left)"
    );

    // It starts again cleanly and finishes the job: all but the newest go,
    // and the gauge says what the database holds.
    let mut third = start_master(dir.path(), &data, short_retention(), "master-3");
    let api = third.api();
    wait_until_for(
        "everything past the retention to be collected",
        60,
        || format!("stored: {}\n{}", machines_stored(api), context(&third)),
        || (machines_stored(api) == 1).then_some(()),
    );
    assert!(third.terminate().success(), "{}", context(&third));
    let stored = read_database(&data);
    assert_eq!(stored.uuids, vec![uuid_of(newer.last().expect("newer events"))]);
    assert_eq!(stored.counted, 1);
}
