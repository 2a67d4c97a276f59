//! What Triton's own clients rely on (issue #11), against a real master and
//! relay: every response of every API carries `Request-Id`, `Response-Time`
//! and `Server` (errors and refusals too), the request id is on the
//! request's log line, a probe or probe group read with `GET` can be `PUT`
//! back as it is (read-modify-write, as `putProbe` and `amon update` do),
//! and `POST /state?action=syncprobes` on the relay pushes probe changes to
//! its agents without waiting for the next poll.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::raw;
use crate::harness::{tail_of, wait_until, Amon, AmonConfig, Api, ExecZones, Mode, Response, ZoneFeed};

const OPERATOR_TOKEN: &str = "operator-token-0123456789";
const RELAY_TOKEN: &str = "relay-token-0123456789abc";
const BOB_TOKEN: &str = "bob-token-0123456789abcdef";
/// Bob's account, which `BOB_TOKEN` may act for.
const BOB: &str = "b0b00000-0000-4000-8000-00000000000b";

/// What `Server` says.
const SERVER: &str = concat!("amon/", env!("CARGO_PKG_VERSION"));

/// A master that wants tokens and a relay that polls agent probes only
/// once an hour, so that only `syncprobes` brings a change sooner.
struct Pair {
    master: Amon,
    relay: Amon,
    _zones: ZoneFeed,
    dir: tempfile::TempDir,
}

impl Pair {
    fn start() -> Pair {
        let dir = tempfile::Builder::new()
            .prefix("amon-it-clients-")
            .tempdir()
            .expect("tempdir");
        let path = |name: &str| dir.path().join(name);
        let replace_once = |text: String, from: &str, to: &str| {
            assert_eq!(text.matches(from).count(), 1, "{from:?} once in:\n{text}");
            text.replacen(from, to, 1)
        };
        let text = AmonConfig::new(&path("master-data")).text();
        let text = replace_once(
            text,
            "[auth]\nopen = true\n",
            &format!(
                "[auth]\nopen = false\n\n\
                 [[auth.tokens]]\ntoken = \"{OPERATOR_TOKEN}\"\nrole = \"operator\"\n\n\
                 [[auth.tokens]]\ntoken = \"{RELAY_TOKEN}\"\nrole = \"relay\"\n\n\
                 [[auth.tokens]]\ntoken = \"{BOB_TOKEN}\"\nrole = \"account:{BOB}\"\n"
            ),
        );
        std::fs::write(path("master.toml"), text).expect("write master.toml");
        let master = Amon::start(Mode::Master, &path("master.toml"), &path("master.log"));
        let zones = ZoneFeed::create(path("zones.jsonl"));
        let text = AmonConfig {
            master_url: Some(format!("http://{}", master.master_addr.expect("master address"))),
            zones: Some(ExecZones::auto(zones.command())),
            ..AmonConfig::new(&path("relay-data"))
        }
        .text();
        let text = replace_once(
            text,
            "agent_probes_poll = \"1s\"\n",
            &format!("agent_probes_poll = \"1h\"\nmaster_token = \"{RELAY_TOKEN}\"\n"),
        );
        std::fs::write(path("relay.toml"), text).expect("write relay.toml");
        let relay = Amon::start(Mode::Relay, &path("relay.toml"), &path("relay.log"));
        Pair {
            master,
            relay,
            _zones: zones,
            dir,
        }
    }

    fn context(&self) -> String {
        format!(
            "--- {}\n--- master log:\n{}\n--- relay log:\n{}",
            self.dir.path().display(),
            tail_of(&self.master.log, 30),
            tail_of(&self.relay.log, 30)
        )
    }

    /// A request to the master as the operator.
    fn operator(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(Value::to_string).unwrap_or_default();
        let bearer = format!("Bearer {OPERATOR_TOKEN}");
        raw(
            self.master.api().addr,
            method,
            path,
            &[("Authorization", &bearer)],
            body.as_bytes(),
        )
    }

    /// As [`Pair::operator`], and the answer must have `status`; its body.
    fn expect(&self, status: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
        let response = self.operator(method, path, body);
        let text = String::from_utf8_lossy(&response.body).into_owned();
        assert_eq!(
            response.status,
            status,
            "{method} {path} {body:?}: {text}\n{}",
            self.context()
        );
        if response.body.is_empty() {
            Value::Null
        } else {
            response.json()
        }
    }

    fn agent_api(&self) -> Api {
        Api::new(self.relay.relay_agent_addr.expect("relay_agent_listen"))
    }

    fn admin_api(&self) -> Api {
        self.relay.admin()
    }
}

/// Checks the three headers on one answer; returns its request id.
fn stamped(response: &Response, what: &str) -> String {
    let id = response
        .header("request-id")
        .unwrap_or_else(|| panic!("{what}: no Request-Id in {:?}", response.headers));
    let took = response
        .header("response-time")
        .unwrap_or_else(|| panic!("{what}: no Response-Time in {:?}", response.headers));
    assert!(
        took.parse::<u64>().is_ok(),
        "{what}: Response-Time {took:?} is whole ms"
    );
    assert_eq!(response.header("server"), Some(SERVER), "{what}");
    id.to_string()
}

/// Checks a fresh request id (none was given): a uuid.
fn fresh_id(response: &Response, what: &str) -> String {
    let id = stamped(response, what);
    assert!(Uuid::parse_str(&id).is_ok(), "{what}: Request-Id {id:?} is a uuid");
    id
}

fn field_named(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_answer_of_every_api_carries_request_id_response_time_and_server() {
    let pair = Pair::start();
    let master = pair.master.api().addr;
    pair.expect(
        200,
        "POST",
        "/accounts",
        Some(&json!({ "login": "alice", "email": "alice@example.com" })),
    );
    let bearer = |token: &str| format!("Bearer {token}");
    let (operator, relay) = (bearer(OPERATOR_TOKEN), bearer(RELAY_TOKEN));
    let as_ = |token: Option<&str>, method: &str, path: &str, body: &[u8]| {
        let headers: Vec<(&str, &str)> = token.iter().map(|t| ("Authorization", *t)).collect();
        raw(master, method, path, &headers, body)
    };
    let probe = br#"{"type": "machine-up", "machine": "web7"}"#;
    let master_cases: Vec<(u16, Response, &str)> = vec![
        (200, as_(None, "GET", "/ping", b""), "GET /ping"),
        (
            200,
            as_(Some(operator.as_str()), "GET", "/pub/alice/probes", b""),
            "a list",
        ),
        (
            404,
            as_(
                Some(operator.as_str()),
                "GET",
                &format!("/pub/alice/probes/{}", Uuid::new_v4()),
                b"",
            ),
            "no such probe",
        ),
        (
            404,
            as_(Some(operator.as_str()), "GET", "/nowhere", b""),
            "no such route",
        ),
        (401, as_(None, "GET", "/pub/alice/probes", b""), "no token"),
        (
            403,
            as_(Some(relay.as_str()), "GET", "/pub/alice/probes", b""),
            "outside the role",
        ),
        (
            400,
            as_(Some(operator.as_str()), "POST", "/pub/alice/probes", b"{"),
            "not json",
        ),
        (
            422,
            as_(Some(operator.as_str()), "POST", "/pub/alice/probes", probe),
            "a bad machine",
        ),
        (
            503,
            as_(None, "GET", "/ping?error=ServiceUnavailable", b""),
            "a simulated 503",
        ),
    ];
    let mut ids = Vec::new();
    for (status, response, what) in &master_cases {
        assert_eq!(response.status, *status, "master, {what}: {:?}", response.body);
        ids.push(fresh_id(response, &format!("master, {what}")));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), master_cases.len(), "every request its own id: {ids:?}");

    // A client's own id comes back, and is on the request's log line; one
    // that is not sane (a space) is replaced.
    let named = raw(
        master,
        "GET",
        "/pub/alice/probes",
        &[("Authorization", &operator), ("x-request-id", "abc-123")],
        b"",
    );
    assert_eq!(named.status, 200);
    assert_eq!(stamped(&named, "named"), "abc-123");
    let line = wait_until(
        "the master's line for request abc-123",
        || pair.context(),
        || {
            pair.master
                .log_messages("handled request")
                .into_iter()
                .find(|l| l["req_id"] == "abc-123")
        },
    );
    assert_eq!(line["url"], "/pub/alice/probes", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["server"], "master", "{line}");
    // Lines a handler logs carry it too.
    let changed = raw(
        master,
        "PUT",
        "/loglevel",
        &[("Authorization", &operator), ("x-request-id", "abc-127")],
        br#"{"level": "info"}"#,
    );
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    let line = wait_until(
        "the handler's own line for request abc-127",
        || pair.context(),
        || pair.master.log_messages("log filter changed").into_iter().next(),
    );
    assert_eq!(line["req_id"], "abc-127", "{line}");
    let refused = raw(master, "GET", "/pub/alice", &[("x-request-id", "abc-124")], b"");
    assert_eq!(refused.status, 401);
    assert_eq!(stamped(&refused, "named, refused"), "abc-124");
    let insane = raw(master, "GET", "/ping", &[("x-request-id", "two words")], b"");
    fresh_id(&insane, "an id with a space");

    // The relay's admin API.
    let admin = pair.admin_api().addr;
    let admin_cases = [
        (200, raw(admin, "GET", "/ping", &[], b""), "GET /ping"),
        (200, raw(admin, "GET", "/state", &[], b""), "GET /state"),
        (404, raw(admin, "GET", "/nowhere", &[], b""), "no such route"),
        (400, raw(admin, "POST", "/state", &[], b""), "no action"),
        (400, raw(admin, "PUT", "/loglevel", &[], b"{"), "not json"),
    ];
    for (status, response, what) in &admin_cases {
        assert_eq!(response.status, *status, "relay admin, {what}: {:?}", response.body);
        fresh_id(response, &format!("relay admin, {what}"));
    }
    let named = raw(admin, "GET", "/ping", &[("x-request-id", "abc-125")], b"");
    assert_eq!(stamped(&named, "relay admin, named"), "abc-125");

    // The relay's agent API (1 MiB bodies at most).
    let agent = pair.agent_api().addr;
    let huge = vec![b' '; 1024 * 1024 + 1];
    let agent_cases = [
        (200, raw(agent, "GET", "/agentprobes", &[], b""), "GET /agentprobes"),
        (200, raw(agent, "HEAD", "/agentprobes", &[], b""), "HEAD /agentprobes"),
        (400, raw(agent, "POST", "/events", &[], b"{"), "not json"),
        (413, raw(agent, "POST", "/events", &[], &huge), "too large"),
        (404, raw(agent, "GET", "/nowhere", &[], b""), "no such route"),
    ];
    for (status, response, what) in &agent_cases {
        assert_eq!(response.status, *status, "relay agent, {what}: {:?}", response.body);
        fresh_id(response, &format!("relay agent, {what}"));
    }
    let named = raw(agent, "GET", "/agentprobes", &[("x-request-id", "abc-126")], b"");
    assert_eq!(stamped(&named, "relay agent, named"), "abc-126");
}

#[test]
fn a_probe_or_group_read_with_get_can_be_put_back_as_it_is() {
    let pair = Pair::start();
    let alice = pair.expect(
        200,
        "POST",
        "/accounts",
        Some(&json!({ "login": "alice", "email": "alice@example.com" })),
    );
    pair.expect(
        200,
        "PUT",
        "/pub/alice/contacts/pager",
        Some(&json!({ "medium": "webhook", "address": "https://pager.example.com/amon" })),
    );
    // Created with user as Triton's clients may send it: the account.
    let group = pair.expect(
        200,
        "POST",
        "/pub/alice/probegroups",
        Some(&json!({ "name": "web tier", "contacts": ["pager"], "hold": 30, "user": alice["uuid"] })),
    );
    // Alice's machine, as its relay reports it.
    let machine = Uuid::new_v4();
    pair.expect(
        204,
        "PUT",
        &format!("/servers/{}/machines", Uuid::new_v4()),
        Some(&json!([{ "uuid": machine, "alias": "web7", "owner": alice["uuid"] }])),
    );
    let probe = pair.expect(
        200,
        "POST",
        "/pub/alice/probes",
        Some(&json!({
            "name": "web7 up", "type": "machine-up", "machine": machine, "group": group["uuid"],
            "groupEvents": false, "hold": 60, "renotify": 3600, "user": alice["uuid"],
        })),
    );

    for (kind, object) in [("probegroups", &group), ("probes", &probe)] {
        let path = format!("/pub/alice/{kind}/{}", object["uuid"].as_str().expect("uuid"));
        let got = pair.expect(200, "GET", &path, None);
        assert!(got.get("uuid").is_some() && got.get("user").is_some(), "{got}");
        let put = pair.expect(200, "PUT", &path, Some(&got));
        assert_eq!(put, got, "{kind}: PUT of the GET body answers it unchanged");
        assert_eq!(pair.expect(200, "GET", &path, None), got, "{kind}: and changes nothing");
        // The owner may be named by login too.
        let mut by_login = got.clone();
        by_login["user"] = json!("alice");
        assert_eq!(pair.expect(200, "PUT", &path, Some(&by_login)), got, "{kind}");

        // Read, modify, write: a change goes through.
        let mut renamed = got.clone();
        renamed["name"] = json!("renamed");
        let put = pair.expect(200, "PUT", &path, Some(&renamed));
        assert_eq!(put["name"], "renamed", "{kind}: {put}");
        assert_eq!(put["uuid"], got["uuid"], "{kind}: {put}");

        // Server-owned fields cannot be changed.
        let mut moved = got.clone();
        moved["uuid"] = json!(Uuid::new_v4());
        let refused = pair.expect(422, "PUT", &path, Some(&moved));
        assert_eq!(refused["code"], "ValidationFailed", "{refused}");
        assert_eq!(field_named(&refused), ["uuid"], "{kind}: {refused}");
        let mut given_away = got.clone();
        given_away["user"] = json!(Uuid::new_v4());
        let refused = pair.expect(422, "PUT", &path, Some(&given_away));
        assert_eq!(field_named(&refused), ["user"], "{kind}: {refused}");
        assert_eq!(pair.expect(200, "GET", &path, None)["name"], "renamed", "{kind}");
    }

    // A create cannot choose its uuid.
    let refused = pair.expect(
        422,
        "POST",
        "/pub/alice/probes",
        Some(&json!({ "type": "machine-up", "machine": Uuid::new_v4(), "uuid": Uuid::new_v4() })),
    );
    assert_eq!(field_named(&refused), ["uuid"], "{refused}");
}

#[test]
fn syncprobes_on_the_relay_serves_a_new_probe_to_its_agents_before_the_next_poll() {
    let pair = Pair::start();
    let admin = pair.admin_api();
    let agent = pair.agent_api();
    let (status, state) = admin.get("/state");
    assert_eq!(status, 200, "{state}");
    let server = state["serverUuid"].as_str().expect("serverUuid").to_string();
    pair.expect(
        200,
        "POST",
        "/accounts",
        // An operator account (as sdc-amonadm's admin): only it may watch
        // a compute node.
        Some(&json!({ "login": "alice", "email": "alice@example.com", "operator": true })),
    );

    // The relay caches the list (empty) at its agent's first request, and
    // next asks the master in an hour.
    let before = agent.exchange("GET", "/agentprobes", None);
    assert_eq!(before.status, 200, "{:?}\n{}", before.body, pair.context());
    assert_eq!(before.json(), json!([]));
    let probe = pair.expect(
        200,
        "POST",
        "/pub/alice/probes",
        Some(&json!({ "type": "machine-up", "agent": server, "name": "cn up" })),
    );
    let still = agent.exchange("GET", "/agentprobes", None);
    assert_eq!(still.json(), json!([]), "the relay has not asked the master again");

    let synced = admin.exchange("POST", "/state?action=syncprobes", None);
    assert_eq!(
        synced.status,
        202,
        "{:?}\n{}",
        String::from_utf8_lossy(&synced.body),
        pair.context()
    );
    stamped(&synced, "syncprobes");
    let served = wait_until(
        "the relay's agent API to serve the new probe",
        || pair.context(),
        || {
            let served = agent.exchange("GET", "/agentprobes", None);
            (served.status == 200 && served.json().as_array().is_some_and(|l| !l.is_empty())).then_some(served)
        },
    );
    assert_eq!(served.json()[0]["uuid"], probe["uuid"], "{:?}", served.json());

    // What else `POST /state` says.
    let (status, error) = admin.post("/state", &Value::Null);
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("MissingParameter")),
        "{error}"
    );
    let (status, error) = admin.post("/state?action=reboot", &Value::Null);
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("InvalidArgument")),
        "{error}"
    );
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains("reboot")),
        "{error}"
    );
}

/// Tenancy with the tokens Triton's cloudapi would hold for an account
/// (issue #11, acceptance 2): bob's own token cannot put a probe on alice's
/// machine nor on a compute node, and is told nothing about either; his own
/// machine works.
#[test]
fn an_account_token_cannot_watch_another_accounts_machine_or_a_compute_node() {
    let pair = Pair::start();
    let alice = pair.expect(
        200,
        "POST",
        "/accounts",
        Some(&json!({ "login": "alice", "email": "alice@example.com" })),
    );
    pair.expect(
        200,
        "POST",
        "/accounts",
        Some(&json!({ "login": "bob", "email": "bob@example.com", "uuid": BOB })),
    );
    let (server, web, db) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    pair.expect(
        204,
        "PUT",
        &format!("/servers/{server}/machines"),
        Some(&json!([
            { "uuid": web, "alias": "web0", "owner": alice["uuid"] },
            { "uuid": db, "alias": "db0", "owner": BOB },
        ])),
    );
    let bearer = format!("Bearer {BOB_TOKEN}");
    let as_bob = |method: &str, path: &str, body: Option<Value>| {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        raw(
            pair.master.api().addr,
            method,
            path,
            &[("Authorization", &bearer)],
            body.as_bytes(),
        )
    };
    let probe_on = |machine: Uuid| json!({ "type": "machine-up", "machine": machine, "name": "up" });

    for (what, machine) in [("alice's machine", web), ("the compute node", server)] {
        let refused = as_bob("POST", "/pub/bob/probes", Some(probe_on(machine)));
        assert_eq!(refused.status, 422, "bob's probe on {what}: {:?}", refused.json());
        assert_eq!(field_named(&refused.json()), vec!["machine"], "{what}");
        let text = refused.json().to_string();
        assert!(
            !text.contains("alice") && !text.contains(alice["uuid"].as_str().unwrap()),
            "{text}"
        );
    }
    let mine = as_bob("GET", "/pub/bob/machines", None);
    assert_eq!(mine.status, 200);
    let listed: Vec<String> = mine
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["uuid"].as_str().map(String::from))
        .collect();
    assert_eq!(listed, vec![db.to_string()], "bob sees only his machine");
    let own = as_bob("POST", "/pub/bob/probes", Some(probe_on(db)));
    assert_eq!(own.status, 200, "{:?}", own.json());
    // Nor may his token report machines (a relay's job) or read alice's.
    assert_eq!(
        as_bob("PUT", &format!("/servers/{server}/machines"), Some(json!([]))).status,
        403
    );
    assert_eq!(as_bob("GET", "/pub/alice/machines", None).status, 403);
}
