//! Hostile input on the Master API, through the real binary: malformed JSON,
//! wrong types, unknown fields, bad uuids, bodies over the limit, deep
//! nesting, huge arrays and bytes that are not UTF-8 each get a 4xx with a
//! clear `{code, message}` (never a 5xx or a dropped connection), and the
//! master keeps serving after every one of them.

use serde_json::{json, Value};

use crate::api::raw;
use crate::harness::{Amon, AmonConfig, Api, Mode};

/// Largest body the master reads (`MAX_BODY` in `src/http/mod.rs`).
const MAX_BODY: usize = 8 * 1024 * 1024;

struct Master {
    /// First, so it is killed before its files go.
    amon: Amon,
    api: Api,
    _dir: tempfile::TempDir,
}

fn start_master() -> Master {
    let dir = tempfile::Builder::new()
        .prefix("amon-hostile-it-")
        .tempdir()
        .expect("tempdir");
    let config = dir.path().join("master.toml");
    std::fs::write(&config, AmonConfig::new(&dir.path().join("data")).text()).expect("write master.toml");
    let amon = Amon::start(Mode::Master, &config, &dir.path().join("master.log"));
    let api = amon.api();
    Master { amon, api, _dir: dir }
}

/// What a hostile body should get: a status (0: any 4xx), an error code
/// (empty: any) and, for `ValidationFailed`, the field named first.
struct Expect {
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

const fn invalid() -> Expect {
    Expect {
        status: 400,
        code: "InvalidArgument",
        field: None,
    }
}

const fn unfit(field: &'static str) -> Expect {
    Expect {
        status: 422,
        code: "ValidationFailed",
        field: Some(field),
    }
}

/// Deep nesting: `400` where the recursion limit stops it, `422` where a
/// struct (which serde also reads from an array) finds its first element
/// does not fit.
const fn refused() -> Expect {
    Expect {
        status: 0,
        code: "",
        field: None,
    }
}

const fn too_large() -> Expect {
    Expect {
        status: 413,
        code: "RequestTooLarge",
        field: None,
    }
}

fn check(master: &Master, path: &str, what: &str, body: &[u8], expect: Expect) {
    let response = raw(master.api.addr, "POST", path, &[], body);
    let answer: Value = serde_json::from_slice(&response.body).unwrap_or_else(|_| {
        panic!(
            "POST {path} ({what}) answered {} with a body that is not json: {:?}\n{}",
            response.status,
            String::from_utf8_lossy(&response.body),
            crate::harness::tail_of(&master.amon.log, 20)
        )
    });
    if expect.status == 0 {
        assert!((400..500).contains(&response.status), "POST {path} ({what}): {answer}");
    } else {
        assert_eq!(response.status, expect.status, "POST {path} ({what}): {answer}");
    }
    if !expect.code.is_empty() {
        assert_eq!(answer["code"], expect.code, "POST {path} ({what}): {answer}");
    }
    assert!(
        answer["message"].as_str().is_some_and(|m| !m.is_empty()),
        "POST {path} ({what}) says why: {answer}"
    );
    if let Some(field) = expect.field {
        let named = answer["errors"][0]["field"].as_str().unwrap_or_default();
        assert!(
            named == field || named.starts_with(&format!("{field}.")),
            "POST {path} ({what}) names {field}: {answer}"
        );
    }
    // Still serving, on a new connection.
    let (status, pong) = master.api.get("/ping");
    assert_eq!(status, 200, "GET /ping after POST {path} ({what}): {pong}");
}

/// The shapes every endpoint refuses the same way, whatever it expects.
fn common(master: &Master, path: &str) {
    check(master, path, "cut short", b"{\"lo", invalid());
    check(master, path, "not json", b"login=alice", invalid());
    check(master, path, "trailing bytes", b"{} {}", refused());
    check(master, path, "empty", b"", invalid());
    check(
        master,
        path,
        "100,000 nested [",
        "[".repeat(100_000).as_bytes(),
        refused(),
    );
    check(
        master,
        path,
        "100,000 nested {",
        "{\"a\":".repeat(100_000).as_bytes(),
        refused(),
    );
    check(master, path, "not UTF-8", b"\xff\xfe{}", invalid());
    check(master, path, "over the limit", &vec![b' '; MAX_BODY + 1], too_large());
    // Just under the limit: about two million numbers.
    let mut huge = b"[0".to_vec();
    while huge.len() < MAX_BODY - 8 {
        huge.extend_from_slice(b",0,0,0,0");
    }
    huge.push(b']');
    let response = raw(master.api.addr, "POST", path, &[], &huge);
    assert!(
        (400..500).contains(&response.status),
        "POST {path} (a huge array) answered {}: {:?}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    let (status, _) = master.api.get("/ping");
    assert_eq!(status, 200, "GET /ping after a huge array to {path}");
}

#[test]
fn hostile_bodies_get_a_clear_4xx_and_the_master_keeps_serving() {
    let master = start_master();
    let account = master
        .api
        .create("/accounts", &json!({"login": "alice", "email": "alice@example.com"}));
    let uuid = account["uuid"].as_str().expect("account uuid").to_string();
    let event = |extra: Value| {
        let mut event = json!({
            "type": "server", "uuid": uuid, "time": crate::harness::now_ms(),
            "relay": uuid, "server": uuid, "event": "heartbeat",
        });
        for (k, v) in extra.as_object().expect("an object") {
            event[k] = v.clone();
        }
        event.to_string().into_bytes()
    };

    common(&master, "/events");
    check(
        &master,
        "/events",
        "a wrong type",
        &event(json!({"time": "soon"})),
        unfit("time"),
    );
    let batch = format!("[{}]", String::from_utf8(event(json!({"uuid": "nope"}))).unwrap());
    check(
        &master,
        "/events",
        "a bad uuid in a batch",
        batch.as_bytes(),
        unfit("[0]"),
    );
    check(
        &master,
        "/events",
        "an unknown type",
        b"{\"type\": \"mood\"}",
        unfit("type"),
    );

    common(&master, "/accounts");
    let account = |body: Value| body.to_string().into_bytes();
    check(
        &master,
        "/accounts",
        "a wrong type",
        &account(json!({"login": 7, "email": "b@example.com"})),
        unfit("login"),
    );
    check(
        &master,
        "/accounts",
        "an unknown field",
        &account(json!({"login": "bob", "email": "b@example.com", "colour": "red"})),
        unfit("colour"),
    );
    check(
        &master,
        "/accounts",
        "a bad uuid",
        &account(json!({"login": "bob", "email": "b@example.com", "uuid": "nope"})),
        unfit("uuid"),
    );

    let probes = "/pub/alice/probes";
    common(&master, probes);
    let probe = |extra: Value| {
        let mut probe = json!({"type": "machine-up", "machine": uuid, "contacts": ["email"]});
        for (k, v) in extra.as_object().expect("an object") {
            probe[k] = v.clone();
        }
        probe.to_string().into_bytes()
    };
    check(
        &master,
        probes,
        "a wrong type",
        &probe(json!({"contacts": "email"})),
        unfit("contacts"),
    );
    check(
        &master,
        probes,
        "an unknown field",
        &probe(json!({"colour": 1})),
        unfit("colour"),
    );
    check(
        &master,
        probes,
        "a bad uuid",
        &probe(json!({"machine": "nope"})),
        unfit("machine"),
    );
    check(
        &master,
        "/pub/no-such-account/probes",
        "no such account",
        &probe(json!({})),
        Expect {
            status: 404,
            code: "ResourceNotFound",
            field: None,
        },
    );
}
