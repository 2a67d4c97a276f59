//! Each agent probe type end to end (#13): a master, a relay and `amon
//! agent` as real processes ([`AgentRig`]), watching real things — files
//! appended to and rotated, a local HTTP server, commands, `ping
//! 127.0.0.1`, a small file system filled and emptied — with real SQLite
//! and a real SMTP server. Every wait is for a condition (an alarm in the
//! API, an email) with the harness's generous deadline.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{AgentRig, AgentRigOptions, Email, Tmpfs};

const LOGIN: &str = "ops";

/// The rig with an operator account, or `None` (with the reason printed)
/// where this machine cannot run the SMTP server.
fn rig() -> Option<AgentRig> {
    // Not about missing data: a silence far beyond any test's length, so
    // a slow heartbeat on a loaded machine cannot put a missing-data fault
    // where the probe's own is expected.
    let rig = AgentRig::start(AgentRigOptions {
        agent_silence: Duration::from_secs(600),
        ..AgentRigOptions::default()
    })?;
    rig.create_account(LOGIN);
    Some(rig)
}

fn uuid_of(probe: &Value) -> String {
    probe["uuid"].as_str().expect("probe uuid").to_string()
}

/// The alarms of `probe`, oldest first.
fn alarms_of(rig: &AgentRig, probe: &Value) -> Vec<Value> {
    let uuid = uuid_of(probe);
    let mut alarms: Vec<Value> = rig
        .alarms(LOGIN)
        .into_iter()
        .filter(|a| a["probe"].as_str() == Some(uuid.as_str()))
        .collect();
    alarms.sort_by_key(|a| a["id"].as_u64());
    alarms
}

/// Waits until `probe` has an alarm whose `numEvents` is at least `events`,
/// and returns it.
fn wait_for_alarm_events(rig: &AgentRig, probe: &Value, events: u64) -> Value {
    rig.wait_until(
        &format!("an alarm of {} with {events} event(s)", uuid_of(probe)),
        || {
            alarms_of(rig, probe)
                .into_iter()
                .rev()
                .find(|a| a["numEvents"].as_u64() >= Some(events))
        },
    )
}

/// The data of the latest fault event of an open alarm.
fn fault_data(alarm: &Value) -> Value {
    alarm["faults"][0]["event"]["data"].clone()
}

/// Waits until the agent has started `probe` (its actor is running it).
fn wait_for_start(rig: &AgentRig, probe: &Value) {
    let uuid = uuid_of(probe);
    rig.wait_until(&format!("the agent starting probe {uuid}"), || {
        rig.agent_log("starting probe")
            .into_iter()
            .any(|l| l.to_string().contains(&uuid))
            .then_some(())
    });
}

fn append(path: &Path, text: &str) {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log for appending");
    file.write_all(text.as_bytes()).expect("append");
}

/// Acceptance 1: log-scan counts matches (not reads) in its window across a
/// rename-and-create rotation and a copytruncate, alarming exactly when the
/// threshold is reached; `invert` counts the lines that do not match;
/// bunyan-log-scan matches on a field and a level name.
#[test]
fn log_scans_alarm_at_their_threshold_across_rotations_invert_and_bunyan_fields() {
    let Some(rig) = rig() else { return };
    let log = rig.dir().join("app.log");
    let inverted = rig.dir().join("heartbeat.log");
    let bunyan = rig.dir().join("service.log");
    // Files that do not exist yet: each is read from its start once it
    // appears, so no line can be missed to a probe still starting.
    let scan = rig.create_probe(
        LOGIN,
        "log-scan",
        json!({"path": log, "match": {"pattern": "ERROR"}, "threshold": 3, "period": 600}),
    );
    let invert = rig.create_probe(
        LOGIN,
        "log-scan",
        json!({"path": inverted, "match": {"pattern": "^OK$", "invert": true}}),
    );
    let fields = rig.create_probe(
        LOGIN,
        "bunyan-log-scan",
        json!({"path": bunyan, "fields": {"level": "error"}, "match": {"pattern": "disk", "field": "msg"}}),
    );
    for probe in [&scan, &invert, &fields] {
        wait_for_start(&rig, probe);
    }

    // Two matches, a rename-and-create rotation, then the third: one fault
    // counting three (a probe firing at two would have said so first).
    // The padding makes the new file longer than what follows the
    // copytruncate below, so that the truncation cannot look like an append.
    append(&log, "ERROR one\nall fine\nERROR two\n");
    // Rotated only once the agent has it open: a file created and renamed
    // away between two of its polls was never this path's to read.
    let path = log.display().to_string();
    rig.wait_until("the agent reading app.log", || {
        rig.agent_log("log file appeared; reading it from the start")
            .into_iter()
            .any(|l| l["path"] == path.as_str())
            .then_some(())
    });
    fs::rename(&log, rig.dir().join("app.log.0")).expect("rotate");
    let padding: String = (0..400).map(|i| format!("request {i} served\n")).collect();
    append(&log, &format!("{padding}ERROR three\n"));
    let alarm = wait_for_alarm_events(&rig, &scan, 1);
    let data = fault_data(&alarm);
    assert_eq!(data["value"], 3, "{alarm}\n{}", rig.context());
    assert!(data["message"].as_str().unwrap_or("").contains("3 times"), "{alarm}");

    // copytruncate: the content copied away, the file emptied in place; two
    // matches, then the third makes the next fault, of three again.
    fs::copy(&log, rig.dir().join("app.log.1")).expect("copy");
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .expect("truncate");
    append(&log, "ERROR four\nERROR five\n");
    append(&log, "ERROR six\n");
    let alarm = wait_for_alarm_events(&rig, &scan, 2);
    let data = fault_data(&alarm);
    assert_eq!(data["value"], 3, "{alarm}\n{}", rig.context());
    assert_eq!(alarm["numEvents"], 2, "{alarm}");
    assert_eq!(alarm["closed"], false, "a log scan's alarm stays open until closed");
    let lines = data["details"].to_string();
    assert!(lines.contains("ERROR six") && !lines.contains("ERROR three"), "{data}");

    // invert: the lines that are OK are not hits; the one that is not is.
    append(&inverted, "OK\nOK\n");
    append(&inverted, "boom\n");
    let alarm = wait_for_alarm_events(&rig, &invert, 1);
    let data = fault_data(&alarm);
    assert_eq!(data["value"], 1, "{alarm}\n{}", rig.context());
    assert!(data["details"].to_string().contains("boom"), "{data}");

    // bunyan: only an error record whose msg matches counts.
    let record = |level: u32, msg: &str| {
        format!(
            "{}\n",
            json!({"name": "svc", "hostname": "h", "pid": 1, "level": level, "msg": msg, "time": "2026-12-01T00:00:00Z", "v": 0})
        )
    };
    append(
        &bunyan,
        &format!(
            "{}{}not json at all\n{}",
            record(30, "disk almost full"),
            record(50, "network down"),
            record(50, "disk full")
        ),
    );
    let alarm = wait_for_alarm_events(&rig, &fields, 1);
    let data = fault_data(&alarm);
    assert_eq!(data["value"], 1, "{alarm}\n{}", rig.context());
    let matched = data["details"].to_string();
    assert!(
        matched.contains("disk full") && !matched.contains("network down"),
        "{data}"
    );

    // Each alarm was emailed once, after its hold; none was cleared.
    let emails = rig.wait_for_emails(3);
    assert!(emails.iter().all(|e| e.in_reply_to.is_none()), "{emails:#?}");
}

/// What the local HTTP server answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Answer {
    Healthy = 0,
    Error500 = 1,
    /// 200 and the right body, three seconds late.
    Slow = 2,
    WrongBody = 3,
}

/// A real HTTP/1.1 server on loopback whose answer the test switches.
fn http_server() -> (String, Arc<AtomicU8>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/health", listener.local_addr().expect("addr"));
    let answer = Arc::new(AtomicU8::new(Answer::Healthy as u8));
    let shared = answer.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mode = shared.load(Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let (status, body) = match mode {
                    1 => ("500 Internal Server Error", "healthy"),
                    2 => {
                        // The server being slow, not the test waiting.
                        std::thread::sleep(Duration::from_secs(3));
                        ("200 OK", "healthy")
                    }
                    3 => ("200 OK", "sick"),
                    _ => ("200 OK", "healthy"),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (url, answer)
}

fn is_clear(email: &Email) -> bool {
    email.in_reply_to.is_some()
}

/// Acceptance 2: a 500, an answer slower than `maxResponseTime` and a body
/// not matching each open an alarm, emailed once; the server recovering
/// closes it with one clear email.
#[test]
fn http_faults_open_an_alarm_each_and_recovery_closes_it_with_one_clear_email() {
    let Some(rig) = rig() else { return };
    let (url, answer) = http_server();
    let probe = rig.create_probe(
        LOGIN,
        "http",
        json!({
            "url": url, "statusCodes": [200], "bodyMatch": {"pattern": "healthy"},
            "maxResponseTime": 1000, "timeout": 10, "interval": 1, "period": 60,
        }),
    );
    wait_for_start(&rig, &probe);
    let mut emails = 0;
    for (n, bad) in [Answer::Error500, Answer::Slow, Answer::WrongBody]
        .into_iter()
        .enumerate()
    {
        answer.store(bad as u8, Ordering::SeqCst);
        let fault = rig.wait_for_emails(emails + 1).remove(emails);
        assert!(!is_clear(&fault), "{bad:?}: {fault:#?}");
        let alarms = alarms_of(&rig, &probe);
        assert_eq!(alarms.len(), n + 1, "{bad:?}: one new alarm\n{alarms:#?}");
        let open = alarms.last().expect("an alarm");
        assert_eq!(open["closed"], false, "{open}");
        let reason = fault_data(open)["details"]["reason"].to_string();
        let expected = match bad {
            Answer::Error500 => "500",
            Answer::Slow => "maxResponseTime",
            _ => "body ",
        };
        assert!(reason.contains(expected), "{bad:?}: {reason}\n{open}");

        answer.store(Answer::Healthy as u8, Ordering::SeqCst);
        let clear = rig.wait_for_emails(emails + 2).remove(emails + 1);
        assert!(is_clear(&clear), "{bad:?}: {clear:#?}");
        assert_eq!(clear.in_reply_to.as_deref(), Some(fault.message_id.as_str()));
        let closed = rig.wait_until("the alarm closed", || {
            alarms_of(&rig, &probe)
                .into_iter()
                .nth(n)
                .filter(|a| a["closed"] == true)
        });
        assert_eq!(closed["faults"], json!([]), "{closed}");
        emails += 2;
    }
    // One clear each: the fourth fault of a new phase would be the next
    // email, so the count so far is exact.
    let all = rig.emails();
    assert_eq!(all.iter().filter(|e| is_clear(e)).count(), 3, "{all:#?}");
}

/// Processes whose command line is exactly `argv` (read from /proc).
fn processes_running(argv: &[&str]) -> Vec<String> {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                .filter(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Acceptance 3 (cmd): a command that fails and one that hangs past its
/// `timeout` (killed, with what it started) each open an alarm; the command
/// succeeding again closes it with one clear email.
#[test]
fn cmd_failing_or_hanging_opens_an_alarm_and_recovery_closes_it() {
    let Some(rig) = rig() else { return };
    let mode = rig.dir().join("mode");
    fs::write(&mode, "ok").expect("mode");
    // `sleep` as a child of the shell, not exec'd: the whole process group
    // must go, not only the shell.
    let script = format!(
        "m=$(cat {mode}); if [ \"$m\" = fail ]; then echo broken >&2; exit 3; fi; if [ \"$m\" = hang ]; then sleep 987654; fi; exit 0",
        mode = mode.display()
    );
    let probe = rig.create_probe(
        LOGIN,
        "cmd",
        json!({"cmd": script, "timeout": 1, "interval": 1, "period": 60}),
    );
    wait_for_start(&rig, &probe);
    let mut emails = 0;
    for (n, bad) in ["fail", "hang"].into_iter().enumerate() {
        fs::write(&mode, bad).expect("mode");
        let fault = rig.wait_for_emails(emails + 1).remove(emails);
        assert!(!is_clear(&fault), "{bad}: {fault:#?}");
        let alarms = alarms_of(&rig, &probe);
        assert_eq!(alarms.len(), n + 1, "{bad}: one new alarm\n{alarms:#?}");
        let details = fault_data(alarms.last().expect("alarm"))["details"].clone();
        match bad {
            "fail" => assert_eq!(details["exitStatus"], 3, "{details}"),
            _ => assert_eq!(details["timedOut"], true, "{details}"),
        }
        fs::write(&mode, "ok").expect("mode");
        let clear = rig.wait_for_emails(emails + 2).remove(emails + 1);
        assert!(is_clear(&clear), "{bad}: {clear:#?}");
        assert_eq!(clear.in_reply_to.as_deref(), Some(fault.message_id.as_str()));
        emails += 2;
    }
    // Every timed-out run was killed with its child: once the command
    // succeeds again, no `sleep 987654` is left.
    rig.wait_until("no sleep left behind by the timed-out runs", || {
        processes_running(&["sleep", "987654"]).is_empty().then_some(())
    });
    let closed = alarms_of(&rig, &probe);
    assert!(closed.iter().all(|a| a["closed"] == true), "{closed:#?}");
}

/// Acceptance 3 (icmp): `ping 127.0.0.1` answers, so the probe runs without
/// a fault. (The fault side is the parsers of both `ping` flavours' output,
/// unit-tested in `src/probes/icmp.rs`: no test may send packets off
/// loopback.) Its checks are seen to have run because a `cmd` probe created
/// after it, failing every second, has had its alarm emailed meanwhile.
#[test]
fn icmp_to_a_reachable_host_runs_without_a_fault() {
    let has_ping = std::process::Command::new("ping").arg("-V").output().is_ok();
    if !has_ping {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs iputils-ping for this test"
        );
        eprintln!("skipped: no ping on this machine (apt-get install iputils-ping)");
        return;
    }
    let Some(rig) = rig() else { return };
    let icmp = rig.create_probe(
        LOGIN,
        "icmp",
        json!({"host": "127.0.0.1", "npackets": 1, "interval": 1, "period": 60}),
    );
    wait_for_start(&rig, &icmp);
    let marker = rig.create_probe(LOGIN, "cmd", json!({"cmd": "exit 1", "interval": 1}));
    rig.wait_for_emails(1);
    assert_eq!(alarms_of(&rig, &marker).len(), 1, "{}", rig.context());
    assert_eq!(alarms_of(&rig, &icmp), Vec::<Value>::new(), "{}", rig.context());
    let uuid = uuid_of(&icmp);
    let failures: Vec<Value> = rig
        .agent_log("probe stopped; restarting it after a backoff")
        .into_iter()
        .filter(|l| l.to_string().contains(&uuid))
        .collect();
    assert!(failures.is_empty(), "ping could not run: {failures:#?}");
}

/// Acceptance 3 (disk-usage): a small file system filled below the
/// threshold opens an alarm; emptied again, the alarm closes with one
/// clear email (the original sent a clear every interval).
#[test]
fn disk_usage_below_its_threshold_opens_an_alarm_and_room_again_closes_it() {
    let Some(rig) = rig() else { return };
    let Some(disk) = Tmpfs::mount(&rig.dir().join("disk"), "16m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs for this test"
        );
        eprintln!("skipped: mounting a tmpfs needs root (this test fills a small disk)");
        return;
    };
    let probe = rig.create_probe(
        LOGIN,
        "disk-usage",
        json!({"path": disk.path(), "threshold": "8M", "interval": 1}),
    );
    wait_for_start(&rig, &probe);
    // 12 MiB of the 16: 4 MiB free, below the 8 MiB threshold.
    fs::write(disk.path().join("filler"), vec![0u8; 12 * 1024 * 1024]).expect("fill");
    let fault = rig.wait_for_emails(1).remove(0);
    assert!(!is_clear(&fault), "{fault:#?}");
    let alarm = wait_for_alarm_events(&rig, &probe, 1);
    assert_eq!(alarm["closed"], false, "{alarm}");
    fs::remove_file(disk.path().join("filler")).expect("empty");
    let clear = rig.wait_for_emails(2).remove(1);
    assert!(is_clear(&clear), "{clear:#?}");
    rig.wait_until("the alarm closed", || {
        alarms_of(&rig, &probe).first().filter(|a| a["closed"] == true).cloned()
    });
    assert_eq!(alarms_of(&rig, &probe).len(), 1, "one alarm in all");
    assert_eq!(rig.emails().len(), 2, "one fault email and one clear");
}
