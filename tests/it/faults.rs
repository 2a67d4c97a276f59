//! Delivery faults through the real binary (issue 12): a webhook receiver
//! that answers 5xx, or drops the connection, gets the same notification
//! again until it takes it, and once; one that answers 4xx dead-letters it,
//! visibly in `GET /deadletters`; one that never answers times out and gets
//! it again. The same for SMTP: a server that drops the
//! connection in the middle of DATA, then answers 451, gets the same
//! message (one Message-ID) until it takes it; a 554 dead-letters it; a
//! slow one within `notify.email.timeout` gets it once, and one slower gets
//! it again (one Message-ID) until it answers in time. The receivers are
//! small servers in this test, answering as they are told. No SMTP server
//! listening at all, then aiosmtpd starting on that port, is `flood.rs`'s
//! `mail_server_refusing_then_accepting_gets_every_email_once` (and across
//! a master SIGKILL, the test after it). And the master's own storage: a
//! full disk, and a database whose file system stops taking writes for a
//! while: `503` meanwhile, a clear log line, and then the master goes on
//! by itself with every acknowledged event kept.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{
    now_ms, tail_of, wait_until, webhook_receiver as receiver, Amon, AmonConfig, Answer, Api, Mode, Tmpfs,
};

/// A master with a 1 s hold, alice with the webhook contact `hook` at `url`
/// and a probe on `machine` that notifies it.
fn master(dir: &Path, url: &str, machine: Uuid) -> Amon {
    let text = AmonConfig::new(&dir.join("data"))
        .text()
        .replace("hold = \"2s\"", "hold = \"1s\"")
        .replace("burst_window = \"2s\"", "burst_window = \"1s\"");
    let config = dir.join("master.toml");
    std::fs::write(&config, text).expect("config");
    let amon = Amon::start(Mode::Master, &config, &dir.join("master.log"));
    let api = amon.api();
    api.create(
        "/accounts",
        &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
    );
    let (status, body) = api
        .exchange(
            "PUT",
            "/pub/alice/contacts/hook",
            Some(&json!({ "medium": "webhook", "address": url })),
        )
        .status_and_json();
    assert_eq!(status, 200, "{body}");
    api.create(
        "/pub/alice/probes",
        &json!({ "type": "machine-up", "machine": machine, "contacts": ["hook"] }),
    );
    amon
}

fn down(api: &Api, machine: Uuid) {
    let server = Uuid::new_v4();
    let (status, body) = api.post(
        "/events",
        &json!([{
            "type": "machine", "uuid": Uuid::new_v4(), "time": now_ms(), "relay": server,
            "machine": machine, "server": server, "oldState": "running", "newState": "stopped", "up": false,
        }]),
    );
    assert_eq!(status, 202, "{body}");
}

#[test]
fn a_webhook_answering_5xx_or_hanging_up_gets_the_notification_again_until_it_takes_it_once() {
    let dir = tempfile::Builder::new()
        .prefix("amon-faults-it-")
        .tempdir()
        .expect("tempdir");
    let (url, heard) = receiver(vec![Answer::Status(503), Answer::Hangup, Answer::Status(500)]);
    let machine = Uuid::new_v4();
    let amon = master(dir.path(), &url, machine);
    down(&amon.api(), machine);
    let log = dir.path().join("master.log");
    let got = wait_until(
        "the fourth attempt, answered 200",
        || tail_of(&log, 30),
        || {
            let heard = heard.lock().unwrap().clone();
            (heard.len() >= 4).then_some(heard)
        },
    );
    let ids: Vec<&Value> = got.iter().map(|(body, _)| &body["id"]).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the same notification each time: {got:?}"
    );
    assert_eq!(got[3].1, "Status(200)", "{got:?}");
    // Taken once: nothing more comes (the alarm is not cleared, so nothing
    // else is due), and nothing is dead.
    let (status, dead) = amon.api().get("/deadletters");
    assert_eq!((status, dead), (200, json!([])));
    let failed = amon
        .log_lines()
        .iter()
        .filter(|l| l["msg"] == "delivery failed; will retry")
        .count();
    assert_eq!(failed, 3, "three temporary failures logged\n{}", tail_of(&log, 30));
    wait_until(
        "the delivery to be recorded",
        || tail_of(&log, 30),
        || (amon.log_messages("notification delivered").len() == 1).then_some(()),
    );
    assert_eq!(heard.lock().unwrap().len(), 4, "delivered once, not again");
}

#[test]
fn a_webhook_answering_4xx_dead_letters_the_notification_visibly() {
    let dir = tempfile::Builder::new()
        .prefix("amon-faults-it-")
        .tempdir()
        .expect("tempdir");
    let (url, heard) = receiver(vec![Answer::Status(404)]);
    let machine = Uuid::new_v4();
    let amon = master(dir.path(), &url, machine);
    down(&amon.api(), machine);
    let log = dir.path().join("master.log");
    let dead = wait_until(
        "the notification in /deadletters",
        || tail_of(&log, 30),
        || {
            let (_, dead) = amon.api().get("/deadletters");
            dead.as_array().filter(|d| !d.is_empty()).cloned()
        },
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["contact"], "hook");
    assert!(
        dead[0]["error"].as_str().unwrap_or_default().contains("404"),
        "{dead:?}"
    );
    assert_eq!(heard.lock().unwrap().len(), 1, "a permanent failure is not retried");
}

// ---- SMTP ----

/// How the SMTP server answers one message's end of DATA.
#[derive(Debug, Clone, Copy)]
enum Mail {
    Reply(u16),
    /// Reads the first lines of the message, then closes the connection.
    HangupMidData,
    /// Takes the whole message, then says `250` only after this long.
    LateReply(Duration),
}

/// How fast the SMTP server answers on one connection.
#[derive(Debug, Clone, Copy)]
enum Pace {
    Prompt,
    /// Every reply, the greeting included, comes this long after the
    /// command: the fault being simulated, not a wait of the test's.
    Slow(Duration),
}

/// What the SMTP server got: each message's Message-ID and its answer.
type Mailed = Arc<Mutex<Vec<(String, String)>>>;

/// An SMTP server answering `script` message by message, then 250.
fn smtp_server(script: Vec<Mail>) -> (u16, Mailed) {
    smtp_server_paced(Vec::new(), script)
}

/// [`smtp_server`] whose connections answer at `paces`, one per
/// connection in the order they come, then promptly.
fn smtp_server_paced(paces: Vec<Pace>, script: Vec<Mail>) -> (u16, Mailed) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mailed: Mailed = Arc::default();
    let log = mailed.clone();
    std::thread::spawn(move || {
        let script = Arc::new(Mutex::new(script.into_iter()));
        let mut paces = paces.into_iter();
        for stream in listener.incoming().flatten() {
            let (script, log) = (script.clone(), log.clone());
            let pace = paces.next().unwrap_or(Pace::Prompt);
            std::thread::spawn(move || smtp_session(stream, pace, &script, &log));
        }
    });
    (port, mailed)
}

fn smtp_session(stream: TcpStream, pace: Pace, script: &Mutex<std::vec::IntoIter<Mail>>, log: &Mailed) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut say = |line: &str| {
        if let Pace::Slow(delay) = pace {
            std::thread::sleep(delay);
        }
        writer.write_all(format!("{line}\r\n").as_bytes()).is_ok()
    };
    if !say("220 faults.test ESMTP") {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let ok = match verb.as_str() {
            "EHLO" | "HELO" => say("250 faults.test"),
            "MAIL" | "RCPT" | "RSET" | "NOOP" => say("250 OK"),
            "QUIT" => {
                say("221 bye");
                return;
            }
            "DATA" => {
                let answer = script.lock().unwrap().next().unwrap_or(Mail::Reply(250));
                say("354 go ahead");
                let mut message_id = String::new();
                loop {
                    let mut data = String::new();
                    if reader.read_line(&mut data).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(id) = data
                        .strip_prefix("Message-ID:")
                        .or_else(|| data.strip_prefix("Message-Id:"))
                    {
                        message_id = id.trim().to_string();
                    }
                    if let Mail::HangupMidData = answer {
                        if !message_id.is_empty() {
                            log.lock().unwrap().push((message_id, format!("{answer:?}")));
                            return; // the connection closes mid-DATA
                        }
                    }
                    if data == ".\r\n" {
                        break;
                    }
                }
                log.lock().unwrap().push((message_id, format!("{answer:?}")));
                match answer {
                    Mail::Reply(250) => say("250 queued"),
                    Mail::Reply(code) => say(&format!("{code} not now")),
                    Mail::HangupMidData => return,
                    Mail::LateReply(delay) => {
                        // The server is slow to queue what it has taken.
                        std::thread::sleep(delay);
                        say("250 queued at last")
                    }
                }
            }
            _ => say("502 what"),
        };
        if !ok {
            return;
        }
    }
}

/// A master with a 1 s hold mailing through the SMTP server on `port`, and
/// alice's probe on `machine` (her account's email contact).
fn mailing_master(dir: &Path, port: u16, machine: Uuid) -> Amon {
    mailing_master_with(dir, port, machine, "")
}

/// [`mailing_master`] with more `[notify.email]` lines (TOML).
fn mailing_master_with(dir: &Path, port: u16, machine: Uuid, email_extra: &str) -> Amon {
    let text = AmonConfig {
        smtp_port: Some(port),
        ..AmonConfig::new(&dir.join("data"))
    }
    .text()
    .replace("hold = \"2s\"", "hold = \"1s\"")
    .replace("burst_window = \"2s\"", "burst_window = \"1s\"")
    .replace("[notify.email]\n", &format!("[notify.email]\n{email_extra}"));
    let config = dir.join("master.toml");
    std::fs::write(&config, text).expect("config");
    let amon = Amon::start(Mode::Master, &config, &dir.join("master.log"));
    let api = amon.api();
    api.create(
        "/accounts",
        &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
    );
    api.create(
        "/pub/alice/probes",
        &json!({ "type": "machine-up", "machine": machine }),
    );
    amon
}

#[test]
fn smtp_dropping_mid_data_then_451_gets_the_same_message_again_until_it_takes_it_once() {
    let dir = tempfile::Builder::new()
        .prefix("amon-faults-it-")
        .tempdir()
        .expect("tempdir");
    let (port, mailed) = smtp_server(vec![Mail::HangupMidData, Mail::Reply(451)]);
    let machine = Uuid::new_v4();
    let amon = mailing_master(dir.path(), port, machine);
    down(&amon.api(), machine);
    let log = dir.path().join("master.log");
    let got = wait_until(
        "the third attempt, answered 250",
        || tail_of(&log, 30),
        || {
            let mailed = mailed.lock().unwrap().clone();
            (mailed.len() >= 3).then_some(mailed)
        },
    );
    assert!(
        got.iter().all(|(id, _)| *id == got[0].0 && !id.is_empty()),
        "one Message-ID: {got:?}"
    );
    assert_eq!(got[2].1, "Reply(250)", "{got:?}");
    wait_until(
        "the delivery to be recorded",
        || tail_of(&log, 30),
        || (amon.log_messages("notification delivered").len() == 1).then_some(()),
    );
    assert_eq!(amon.api().get("/deadletters").1, json!([]));
    assert_eq!(mailed.lock().unwrap().len(), 3, "accepted once, not sent again");
}

#[test]
fn smtp_answering_5xx_dead_letters_the_message_visibly() {
    let dir = tempfile::Builder::new()
        .prefix("amon-faults-it-")
        .tempdir()
        .expect("tempdir");
    let (port, mailed) = smtp_server(vec![Mail::Reply(554)]);
    let machine = Uuid::new_v4();
    let amon = mailing_master(dir.path(), port, machine);
    down(&amon.api(), machine);
    let log = dir.path().join("master.log");
    let dead = wait_until(
        "the message in /deadletters",
        || tail_of(&log, 30),
        || {
            let (_, dead) = amon.api().get("/deadletters");
            dead.as_array().filter(|d| !d.is_empty()).cloned()
        },
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["error"].as_str().unwrap_or_default().contains("554"),
        "{dead:?}"
    );
    assert_eq!(mailed.lock().unwrap().len(), 1, "a permanent refusal is not retried");
}

/// A server that answers every command 2 s late (an exchange of ~12 s,
/// where a healthy one takes milliseconds, but within the 60 s
/// `notify.email.timeout`) gets the message once, at the first attempt.
#[test]
fn a_slow_smtp_server_within_the_timeout_gets_the_message_once() {
    let dir = tempfile::Builder::new()
        .prefix("amon-faults-it-")
        .tempdir()
        .expect("tempdir");
    let (port, mailed) = smtp_server_paced(vec![Pace::Slow(Duration::from_secs(2))], Vec::new());
    let machine = Uuid::new_v4();
    let amon = mailing_master(dir.path(), port, machine);
    down(&amon.api(), machine);
    let log = dir.path().join("master.log");
    crate::harness::wait_until_for(
        "the slow server's message to be recorded as delivered",
        90,
        || tail_of(&log, 30),
        || (amon.log_messages("notification delivered").len() == 1).then_some(()),
    );
    let got = mailed.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "taken once: {got:?}");
    assert!(!got[0].0.is_empty(), "{got:?}");
    assert_eq!(
        amon.log_messages("delivery failed; will retry"),
        Vec::<Value>::new(),
        "no attempt failed"
    );
    assert_eq!(amon.api().get("/deadletters").1, json!([]));
}

/// With `notify.email.timeout = "3s"`: a server answering every command
/// 2 s late never gets as far as DATA; the next one takes the whole message
/// but says `250` only 10 s later, by when the master has given up on it;
/// the third answers at once. The message arrives twice, as one Message-ID
/// (a reader's mail client shows it once), and is delivered: not dead,
/// nothing left to retry.
#[test]
fn an_smtp_server_slower_than_the_timeout_gets_the_same_message_again_until_it_is_fast() {
    let dir = tempfile::Builder::new()
        .prefix("amon-faults-it-")
        .tempdir()
        .expect("tempdir");
    let (port, mailed) = smtp_server_paced(
        vec![Pace::Slow(Duration::from_secs(2))],
        vec![Mail::LateReply(Duration::from_secs(10)), Mail::Reply(250)],
    );
    let machine = Uuid::new_v4();
    let amon = mailing_master_with(dir.path(), port, machine, "timeout = \"3s\"\n");
    down(&amon.api(), machine);
    let log = dir.path().join("master.log");
    crate::harness::wait_until_for(
        "the message to be recorded as delivered",
        90,
        || tail_of(&log, 30),
        || (amon.log_messages("notification delivered").len() == 1).then_some(()),
    );
    let got = mailed.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "the late one, then the prompt one: {got:?}");
    assert!(
        got.iter().all(|(id, _)| *id == got[0].0 && !id.is_empty()),
        "one Message-ID: {got:?}"
    );
    assert_eq!(got[0].1, "LateReply(10s)", "{got:?}");
    assert_eq!(got[1].1, "Reply(250)", "{got:?}");
    let failed = amon.log_messages("delivery failed; will retry");
    assert_eq!(failed.len(), 2, "two attempts timed out\n{}", tail_of(&log, 30));
    for line in &failed {
        assert!(
            line["error"]
                .as_str()
                .unwrap_or_default()
                .contains("did not finish within 3s"),
            "{line}"
        );
    }
    assert_eq!(amon.api().get("/deadletters").1, json!([]));
}

// ---- the disk ----

/// Fills the file system holding `path` until it refuses another byte.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
}

/// The last `n` lines of a daemon's log that are not request lines (a
/// test polling `/ping` fills the tail with its 503s).
fn not_requests(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("\"handled request\"")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A batch of [`BATCH`] machine-down events, as a relay posts them.
fn batch() -> Value {
    let server = Uuid::new_v4();
    Value::Array(
        (0..BATCH)
            .map(|_| {
                json!({
                    "type": "machine", "uuid": Uuid::new_v4(), "time": now_ms(), "relay": server,
                    "machine": Uuid::new_v4(), "server": server,
                    "oldState": "running", "newState": "stopped", "up": false,
                })
            })
            .collect(),
    )
}

const BATCH: u64 = 200;

/// Posts batches until the master answers 503: how many events it
/// acknowledged (202) before, and the batch it refused.
fn post_until_refused(api: &Api, log: &Path) -> (u64, Value) {
    let mut acknowledged = 0u64;
    loop {
        let body = batch();
        let response = api.exchange("POST", "/events", Some(&body));
        match response.status {
            202 => acknowledged += BATCH,
            503 => return (acknowledged, body),
            other => panic!(
                "POST /events answered {other}: {}\n{}",
                String::from_utf8_lossy(&response.body),
                tail_of(log, 20)
            ),
        }
        assert!(
            acknowledged < 1_000_000,
            "the master never refused a batch\n{}",
            tail_of(log, 20)
        );
    }
}

fn stored_events(api: &Api) -> u64 {
    let (_, metrics) = api.get("/metrics");
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("amon_events_stored"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_full_disk_answers_503_and_recovers_by_itself_losing_nothing_acknowledged() {
    let dir = tempfile::Builder::new()
        .prefix("amon-faults-it-")
        .tempdir()
        .expect("tempdir");
    let Some(disk) = Tmpfs::mount(&dir.path().join("data"), "8m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs for this test"
        );
        eprintln!("skipped: mounting a tmpfs needs root (this test fills a small disk)");
        return;
    };
    let text = AmonConfig::new(disk.path()).text();
    let config = dir.path().join("master.toml");
    std::fs::write(&config, text).expect("config");
    let log = dir.path().join("master.log");
    let amon = Amon::start(Mode::Master, &config, &log);
    let api = amon.api();
    assert_eq!(api.get("/ping").0, 200);

    fill(&disk.path().join("filler"));
    let (acknowledged, refused) = post_until_refused(&api, &log);
    assert!(
        amon.log_lines().iter().any(|l| l.to_string().contains("disk is full")),
        "a clear log line\n{}",
        tail_of(&log, 20)
    );
    wait_until(
        "GET /ping to answer 503",
        || tail_of(&log, 20),
        || (api.get("/ping").0 == 503).then_some(()),
    );

    // Room again: the master takes writes without anyone touching it.
    std::fs::remove_file(disk.path().join("filler")).expect("remove filler");
    wait_until(
        "GET /ping to answer 200",
        || tail_of(&log, 20),
        || (api.get("/ping").0 == 200).then_some(()),
    );
    let (status, body) = api.post("/events", &refused);
    assert_eq!(status, 202, "the refused batch, sent again: {body}");
    assert_eq!(
        stored_events(&api),
        acknowledged + BATCH,
        "every acknowledged event is stored"
    );
}

/// An ext4 file system in an image file, loop-mounted (root only); made
/// writable again and unmounted when dropped.
struct Ext4 {
    at: PathBuf,
}

impl Ext4 {
    fn mount(image: &Path, at: &Path) -> Option<Ext4> {
        std::fs::create_dir_all(at).expect("mount point");
        std::fs::File::create(image)
            .and_then(|f| f.set_len(64 << 20))
            .expect("image file");
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            std::process::Command::new(program)
                .args(args)
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let ok = run("mkfs.ext4", &["-q".as_ref(), "-F".as_ref(), image.as_os_str()])
            && run(
                "mount",
                &["-o".as_ref(), "loop".as_ref(), image.as_os_str(), at.as_os_str()],
            );
        ok.then(|| Ext4 { at: at.to_path_buf() })
    }

    /// Sets or clears the immutable attribute on the file system's root and
    /// what is in it, but SQLite's shared-memory index (`*-shm`): the
    /// nearest thing to a read-only remount that the kernel allows under
    /// open files (see the test).
    fn set_immutable(&self, on: bool) {
        let mut paths = vec![self.at.clone()];
        for entry in std::fs::read_dir(&self.at).expect("read the file system's root") {
            let path = entry.expect("an entry").path();
            if !path.to_string_lossy().ends_with("-shm") {
                paths.push(path);
            }
        }
        let flag = if on { "+i" } else { "-i" };
        let status = std::process::Command::new("chattr")
            .arg(flag)
            .args(&paths)
            .status()
            .expect("chattr");
        assert!(status.success(), "chattr {flag} {paths:?}");
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .args(["-R", "-i"])
            .arg(&self.at)
            .status();
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// The database's file system stops taking writes for a while, then takes
/// them again, as a ZFS dataset does with `zfs set readonly=on`, then
/// `off`. Linux has no such switch under open files: a read-only remount
/// is refused (EBUSY) while files are open for writing, a bind mount's
/// too; ext4 gone read-only on an error (`errors=remount-ro`) stays so until
/// it is unmounted and repaired; a read-only btrfs subvolume still takes
/// writes through open descriptors; there is no device mapper here. What
/// does work, on ext4, is the immutable attribute: a write through a
/// descriptor already open fails (EPERM), as on a file system gone
/// read-only (EROFS), and SQLite sees the same, a failed write (`disk I/O
/// error`). It is set on the directory, the database and its WAL, not on
/// the `-shm` index, which SQLite writes through a shared mapping: ext4
/// answers a write fault on an immutable file's mapping with SIGBUS, which
/// kills the master (it did), whereas under the real read-only ext4 the
/// master ran on. Clearing it is the file system coming back.
#[test]
fn a_database_that_cannot_be_written_answers_503_and_recovers_by_itself_losing_nothing_acknowledged() {
    let dir = tempfile::Builder::new()
        .prefix("amon-faults-it-")
        .tempdir()
        .expect("tempdir");
    let Some(disk) = Ext4::mount(&dir.path().join("disk.img"), &dir.path().join("data")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to loop-mount an ext4 image for this test"
        );
        eprintln!("skipped: loop-mounting an ext4 image needs root (this test makes the database unwritable)");
        return;
    };
    let text = AmonConfig::new(&disk.at).text();
    let config = dir.path().join("master.toml");
    std::fs::write(&config, text).expect("config");
    let log = dir.path().join("master.log");
    let mut amon = Amon::start(Mode::Master, &config, &log);
    let api = amon.api();
    let mut acknowledged = 0;
    for _ in 0..3 {
        let (status, body) = api.post("/events", &batch());
        assert_eq!(status, 202, "{body}");
        acknowledged += BATCH;
    }

    disk.set_immutable(true);
    let (more, refused) = post_until_refused(&api, &log);
    acknowledged += more;
    wait_until(
        "GET /ping to answer 503",
        || tail_of(&log, 20),
        || (api.get("/ping").0 == 503).then_some(()),
    );
    let said = amon.log_lines();
    assert!(
        said.iter().any(|l| {
            let msg = l["msg"].as_str().unwrap_or_default();
            msg.contains("cannot take writes") && msg.contains("read-only")
        }),
        "a clear log line\n{}",
        tail_of(&log, 20)
    );

    // Writable again: the master takes writes without anyone touching it.
    disk.set_immutable(false);
    wait_until(
        "GET /ping to answer 200",
        || not_requests(&log, 30),
        || (api.get("/ping").0 == 200).then_some(()),
    );
    let (status, body) = api.post("/events", &refused);
    assert_eq!(status, 202, "the refused batch, sent again: {body}");
    assert_eq!(
        stored_events(&api),
        acknowledged + BATCH,
        "every acknowledged event is stored"
    );

    // And durably: a master killed now finds them all in its database.
    amon.kill();
    let amon = Amon::start(Mode::Master, &config, &dir.path().join("master-again.log"));
    assert_eq!(stored_events(&amon.api()), acknowledged + BATCH, "after a SIGKILL too");
}

#[test]
fn a_webhook_that_never_answers_times_out_and_gets_the_notification_again() {
    let dir = tempfile::Builder::new()
        .prefix("amon-faults-it-")
        .tempdir()
        .expect("tempdir");
    let (url, heard) = receiver(vec![Answer::Stall]);
    let machine = Uuid::new_v4();
    let amon = master(dir.path(), &url, machine);
    down(&amon.api(), machine);
    let log = dir.path().join("master.log");
    // The master gives a webhook 10 s to answer, then retries after ~1 s:
    // a deadline of its own, well past both.
    let got = crate::harness::wait_until_for(
        "the attempt after the timeout, answered 200",
        60,
        || tail_of(&log, 30),
        || {
            let heard = heard.lock().unwrap().clone();
            (heard.len() >= 2).then_some(heard)
        },
    );
    assert_eq!(got[0].0["id"], got[1].0["id"], "the same notification: {got:?}");
    assert_eq!(got[1].1, "Status(200)");
    let retried = amon.log_messages("delivery failed; will retry");
    assert_eq!(retried.len(), 1, "one timeout\n{}", tail_of(&log, 30));
    assert_eq!(amon.api().get("/deadletters").1, json!([]));
}
