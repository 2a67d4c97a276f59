//! Delivery faults through the real binary (issue 12): a webhook receiver
//! that answers 5xx, or drops the connection, gets the same notification
//! again until it takes it, and once; one that answers 4xx dead-letters it,
//! visibly in `GET /deadletters`. The receiver is a small HTTP server in
//! this test, answering as it is told, request by request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{now_ms, tail_of, wait_until, Amon, AmonConfig, Api, Mode};

/// How the receiver answers its next request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Reads the request and closes the connection without a word.
    Hangup,
}

/// What the receiver got: each request's notification id and its answer.
type Heard = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver answering `script` in order, then 200 forever.
fn receiver(script: Vec<Answer>) -> (String, Heard) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let heard: Heard = Arc::default();
    let log = heard.clone();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming().flatten() {
            // One request per connection is enough: answers close it.
            let answer = script.next().unwrap_or(Answer::Status(200));
            if let Some(id) = read_request(&stream) {
                log.lock().unwrap().push((id, format!("{answer:?}")));
            }
            let mut stream = stream;
            if let Answer::Status(code) = answer {
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        }
    });
    (url, heard)
}

/// Reads one request; returns the `id` of the notification it carries.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let json: Value = serde_json::from_slice(&body).ok()?;
    json["id"].as_str().map(String::from)
}

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
    api.create("/accounts", &json!({ "login": "alice", "email": "alice@example.com" }));
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

trait StatusAndJson {
    fn status_and_json(self) -> (u16, Value);
}

impl StatusAndJson for crate::harness::Response {
    fn status_and_json(self) -> (u16, Value) {
        let json = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        (self.status, json)
    }
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
    let ids: Vec<&String> = got.iter().map(|(id, _)| id).collect();
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
