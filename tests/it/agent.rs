//! The agent-facing API end to end: the master's `GET|HEAD /agentprobes`,
//! the relay's cache of it on the agent listener, and a probe event posted
//! by an agent becoming an alarm on the master.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{free_port, wait_until, Amon, AmonConfig, Api, ExecZones, Mode, ZoneFeed};

/// A master and a relay in one temporary directory (no SMTP server: mail
/// goes to `.eml` files, which nothing here reads).
struct Pair {
    master: Amon,
    relay: Amon,
    _zones: ZoneFeed,
    dir: tempfile::TempDir,
}

impl Pair {
    fn start() -> Pair {
        let dir = tempfile::Builder::new()
            .prefix("amon-it-agent-")
            .tempdir()
            .expect("tempdir");
        let path = |name: &str| dir.path().join(name);
        let config = AmonConfig::new(&path("master-data")).write(&path("master.toml"));
        let master = Amon::start(Mode::Master, &config, &path("master.log"));
        let zones = ZoneFeed::create(path("zones.jsonl"));
        let config = AmonConfig {
            master_url: Some(format!("http://{}", master.master_addr.expect("master address"))),
            zones: Some(ExecZones::auto(zones.command())),
            ..AmonConfig::new(&path("relay-data"))
        }
        .write(&path("relay.toml"));
        let relay = Amon::start(Mode::Relay, &config, &path("relay.log"));
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
            crate::harness::tail_of(&self.master.log, 30),
            crate::harness::tail_of(&self.relay.log, 30)
        )
    }

    fn agent_api(&self) -> Api {
        Api::new(
            self.relay
                .relay_agent_addr
                .expect("the relay logged no relay_agent_listen"),
        )
    }

    /// The relay's server uuid, which is its global zone agent's uuid.
    fn server_uuid(&self) -> Uuid {
        let (status, state) = self.relay.admin().get("/state");
        assert_eq!(status, 200, "relay /state: {state}");
        serde_json::from_value(state["serverUuid"].clone()).expect("serverUuid")
    }
}

fn create_probe(api: &Api, login: &str, agent: Uuid, name: &str) -> Uuid {
    let probe = api.create(
        &format!("/pub/{login}/probes"),
        &json!({ "type": "machine-up", "agent": agent.to_string(), "name": name }),
    );
    serde_json::from_value(probe["uuid"].clone()).expect("probe uuid")
}

fn uuids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a json array")
        .iter()
        .map(|p| p["uuid"].as_str().expect("uuid").to_string())
        .collect()
}

#[test]
fn agent_probes_flow_down_and_probe_events_flow_up() {
    let pair = Pair::start();
    let master = pair.master.api();
    let server = pair.server_uuid();
    let alice = master.create(
        "/accounts",
        &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
    );
    master.create(
        "/accounts",
        &json!({ "login": "bob", "email": "bob@example.com", "operator": true }),
    );
    let web = create_probe(&master, "alice", server, "cn up (alice)");
    let db = create_probe(&master, "bob", server, "cn up (bob)");
    create_probe(&master, "alice", Uuid::new_v4(), "elsewhere");

    // The master: every account's probes for the agent, by uuid, with the
    // body's MD5; HEAD gives the same MD5.
    let path = format!("/agentprobes?agent={server}");
    let listed = master.exchange("GET", &path, None);
    assert_eq!(listed.status, 200, "{}", String::from_utf8_lossy(&listed.body));
    let md5 = listed.header("content-md5").expect("Content-MD5").to_string();
    assert_eq!(md5, amon::http::content_md5(&listed.body));
    let mut expected = vec![web.to_string(), db.to_string()];
    expected.sort();
    assert_eq!(uuids(&listed.json()), expected);
    let head = master.exchange("HEAD", &path, None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-md5"), Some(md5.as_str()));
    assert!(head.body.is_empty(), "HEAD has no body");

    let (status, error) = master.get("/agentprobes");
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("MissingParameter")),
        "{error}"
    );
    let (status, error) = master.get("/agentprobes?agent=cn-7");
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("InvalidArgument")),
        "{error}"
    );

    // The relay's agent listener serves the same bytes and MD5.
    let agent = pair.agent_api();
    let served = agent.exchange("GET", "/agentprobes", None);
    assert_eq!(
        served.status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&served.body),
        pair.context()
    );
    assert_eq!(served.header("content-md5"), Some(md5.as_str()));
    assert_eq!(served.body, listed.body);
    let head = agent.exchange("HEAD", "/agentprobes", None);
    assert_eq!((head.status, head.header("content-md5")), (200, Some(md5.as_str())));

    // A new probe for the agent reaches the relay at its next poll.
    let later = create_probe(&master, "alice", server, "cn up again");
    let changed = master.exchange("HEAD", &path, None);
    let new_md5 = changed.header("content-md5").expect("Content-MD5").to_string();
    assert_ne!(new_md5, md5);
    let served = wait_until(
        "the relay to serve the new probe list",
        || pair.context(),
        || {
            let served = agent.exchange("GET", "/agentprobes", None);
            (served.header("content-md5") == Some(new_md5.as_str())).then_some(served)
        },
    );
    assert!(uuids(&served.json()).contains(&later.to_string()));

    // An agent's probe event: stamped by the relay, an alarm on the master.
    let event = json!({
        "v": 1, "type": "probe", "user": alice["uuid"], "probeUuid": web.to_string(), "clear": false,
        "data": { "message": "Log \"/var/log/app.log\" matched /ERROR/.", "value": 1, "details": null },
    });
    let (status, body) = agent.post("/events", &json!([event]));
    assert_eq!(status, 202, "{body}");
    let alarm = wait_until(
        "an alarm for the probe on the master",
        || pair.context(),
        || {
            let (_, alarms) = master.get("/pub/alice/alarms?state=all");
            alarms
                .as_array()?
                .iter()
                .find(|a| a["probe"] == web.to_string())
                .cloned()
        },
    );
    assert_eq!(alarm["closed"], false, "{alarm}");
    let stamped = &alarm["faults"][0]["event"];
    assert_eq!(stamped["agent"], server.to_string(), "{alarm}");
    assert_eq!(stamped["relay"], server.to_string(), "{alarm}");
    assert!(stamped["uuid"].is_string() && stamped["time"].is_number(), "{alarm}");
    assert_eq!(stamped["data"]["message"], event["data"]["message"]);

    let (status, error) = agent.post("/events", &json!({ "v": 1, "type": "fake" }));
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("InvalidArgument")),
        "{error}"
    );
}

#[test]
fn an_unreachable_master_is_unavailable_never_an_empty_list() {
    let dir = tempfile::Builder::new()
        .prefix("amon-it-agent-")
        .tempdir()
        .expect("tempdir");
    let zones = ZoneFeed::create(dir.path().join("zones.jsonl"));
    let config = AmonConfig {
        // Nobody listens here.
        master_url: Some(format!("http://127.0.0.1:{}", free_port())),
        zones: Some(ExecZones::auto(zones.command())),
        ..AmonConfig::new(&dir.path().join("relay-data"))
    }
    .write(&dir.path().join("relay.toml"));
    let relay = Amon::start(Mode::Relay, &config, &dir.path().join("relay.log"));
    let agent = Api::new(relay.relay_agent_addr.expect("relay_agent_listen"));
    let (status, error) = agent.get("/agentprobes");
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("ServiceUnavailable")),
        "{error}"
    );
    let head = agent.exchange("HEAD", "/agentprobes", None);
    assert_eq!(head.status, 503);
    assert_eq!(head.header("content-md5"), None);
}
