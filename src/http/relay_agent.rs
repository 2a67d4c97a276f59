//! The relay's API for agents (the original's per-zone "App"): `POST /events`
//! takes Amon v1 probe events, stamps them with what only the relay knows
//! (`uuid`, `time`, `agent`, `agentAlias`, `relay`) and hands them to the
//! relay link, which spools and sends them like every other event;
//! `GET|HEAD /agentprobes` serves the agent's probe list from the
//! `AgentProbeCache`, with the master's `Content-MD5`.
//!
//! Who is asking is known from where the request arrived, never from the
//! request: in dev mode a TCP listener (`relay.agent_listen`) serves the
//! global zone's agent, whose uuid is the server's. On SmartOS each zone gets
//! its own Unix socket (see `zone_socket`, not built yet).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{not_found, read_body, ApiError};
use crate::actors::agent_probes::{AgentProbeCache, GetAgentProbes};
use crate::actors::relay_link::{AgentContact, Publish, RelayLink};
use crate::actors::supervisor::Named;
use crate::clock::Clock;
use crate::http::client::AgentProbes;
use crate::model::{Event, ProbeEvent, ProbeEventData};

/// Agents send a handful of small events; a bigger body is a broken agent.
const MAX_AGENT_BODY: usize = 1024 * 1024;

/// What the agent API of one agent needs.
#[derive(Clone)]
pub struct RelayAgentApi {
    /// The agent this listener serves: a zone's uuid, or the server's own for
    /// the global zone (dev mode).
    pub agent: Uuid,
    /// Stamped as `agentAlias`: the VM alias, or the server's hostname.
    pub agent_alias: Option<String>,
    /// This relay's server uuid, stamped as `relay`.
    pub relay: Uuid,
    pub clock: Clock,
    /// The live relay link, wherever its supervisor last started it.
    pub link: Named<RelayLink>,
    pub probes: Named<AgentProbeCache>,
}

/// Mounts the agent API on an actix-web app.
pub fn configure(api: RelayAgentApi) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(api))
            .route("/events", web::post().to(post_events))
            .route("/agentprobes", web::get().to(get_agent_probes))
            // HEAD (what agents poll) gets GET's headers and no body: actix-web
            // leaves the body out.
            .route("/agentprobes", web::head().to(get_agent_probes))
            .default_service(web::to(not_found));
    }
}

/// An Amon v1 event as an agent sends it, before the relay stamps it (what
/// `amon agent` sends, too: one shape for both ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentEvent {
    pub v: u32,
    #[serde(rename = "type")]
    pub event_type: String,
    pub user: Uuid,
    pub probe_uuid: Uuid,
    pub clear: bool,
    pub data: AgentEventData,
    #[serde(default)]
    pub machine: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEventData {
    pub message: String,
    #[serde(default)]
    pub value: serde_json::Value,
    #[serde(default)]
    pub details: serde_json::Value,
}

impl AgentEvent {
    /// A probe's observation as the event its agent sends.
    pub fn of(probe: Uuid, user: Uuid, machine: Option<Uuid>, seen: crate::probes::Observation) -> AgentEvent {
        AgentEvent {
            v: 1,
            event_type: "probe".into(),
            user,
            probe_uuid: probe,
            clear: seen.clear,
            data: AgentEventData {
                message: seen.message,
                value: seen.value.unwrap_or(serde_json::Value::Null),
                details: seen.details.unwrap_or(serde_json::Value::Null),
            },
            machine,
        }
    }
}

/// Parses `POST /events` from an agent (one event or an array) and checks
/// what serde cannot: the version, the type and the shape of `data`.
fn parse_agent_events(body: &[u8]) -> Result<Vec<AgentEvent>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = match first {
        Some(b'[') => serde_json::from_slice::<Vec<AgentEvent>>(body),
        Some(_) => serde_json::from_slice::<AgentEvent>(body).map(|e| vec![e]),
        None => {
            return Err(ApiError::InvalidArgument(
                "request body is empty: expected events".into(),
            ))
        }
    };
    let events = parsed.map_err(|e| ApiError::InvalidArgument(format!("invalid events: {e}")))?;
    for event in &events {
        if event.v != 1 {
            return Err(ApiError::InvalidArgument(format!(
                "event version {} is not supported: expected 1",
                event.v
            )));
        }
        if event.event_type != "probe" {
            return Err(ApiError::InvalidArgument(format!(
                "event type {:?} is not supported: expected \"probe\"",
                event.event_type
            )));
        }
        if event.data.message.is_empty() {
            return Err(ApiError::InvalidArgument("data.message must not be empty".into()));
        }
        if event.data.value.is_array() || event.data.value.is_object() {
            return Err(ApiError::InvalidArgument(
                "data.value must be a number, string, boolean or null".into(),
            ));
        }
        if !(event.data.details.is_object() || event.data.details.is_null()) {
            return Err(ApiError::InvalidArgument(
                "data.details must be an object or null".into(),
            ));
        }
    }
    Ok(events)
}

/// Null in JSON is "absent" in the model.
fn present(value: serde_json::Value) -> Option<serde_json::Value> {
    (!value.is_null()).then_some(value)
}

impl RelayAgentApi {
    /// An agent's event as the master receives it: stamped by this relay.
    fn stamp(&self, event: AgentEvent) -> Event {
        Event::Probe(ProbeEvent {
            v: event.v,
            user: event.user,
            probe_uuid: event.probe_uuid,
            clear: event.clear,
            data: ProbeEventData {
                message: event.data.message,
                value: present(event.data.value),
                details: present(event.data.details),
            },
            machine: event.machine,
            uuid: Uuid::new_v4(),
            time: self.clock.now_ms(),
            agent: Some(self.agent),
            agent_alias: self.agent_alias.clone(),
            relay: Some(self.relay),
        })
    }
}

impl RelayAgentApi {
    /// Every request of the agent is a sign of life, which the relay link
    /// carries to the master with its next heartbeat (missing data:
    /// `notify.agent_silence`). A broken request counts too: the agent runs.
    fn heard_from_agent(&self) {
        if let Some(link) = self.link.get() {
            link.do_send(AgentContact(self.agent));
        }
    }
}

async fn post_events(api: web::Data<RelayAgentApi>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    api.heard_from_agent();
    let body = read_body(payload, MAX_AGENT_BODY).await?;
    let events = parse_agent_events(&body)?;
    let link = api
        .link
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable("the relay link is restarting".into()))?;
    for event in events {
        // `send`, not `do_send`: 202 means the link has every event.
        link.send(Publish {
            event: api.stamp(event),
            zone: None,
        })
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("relay link: {e}")))?;
    }
    Ok(HttpResponse::Accepted().finish())
}

async fn agent_probes(api: &RelayAgentApi) -> Result<AgentProbes, ApiError> {
    let cache = api
        .probes
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable("the agent probe cache is restarting".into()))?;
    cache
        .send(GetAgentProbes)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("agent probe cache: {e}")))?
        .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))
}

async fn get_agent_probes(api: web::Data<RelayAgentApi>) -> Result<HttpResponse, ApiError> {
    api.heard_from_agent();
    let probes = agent_probes(&api).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Content-MD5", probes.content_md5))
        .body(probes.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "930896af-bf8c-48d4-885c-6573a94b1853";
    const PROBE: &str = "6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11";

    fn event(extra: &str) -> String {
        format!(
            r#"{{"v":1,"type":"probe","user":"{USER}","probeUuid":"{PROBE}","clear":false,
               "data":{{"message":"Log \"/var/log/x\" matched /ERROR/.","value":1,"details":{{"matches":[]}}}}{extra}}}"#
        )
    }

    fn invalid(body: &str) -> String {
        match parse_agent_events(body.as_bytes()) {
            Err(ApiError::InvalidArgument(why)) => why,
            other => panic!("expected InvalidArgument for {body}, got {other:?}"),
        }
    }

    #[test]
    fn agent_events_are_one_object_or_an_array() {
        let one = event("");
        assert_eq!(parse_agent_events(one.as_bytes()).unwrap().len(), 1);
        let machine = event(r#","machine":"0f6a1f4e-5d2b-4c1a-9e43-2b1f2a3c4d5e""#);
        let both = parse_agent_events(format!("[{one}, {machine}]").as_bytes()).unwrap();
        assert_eq!(both.len(), 2);
        assert!(both[1].machine.is_some());
        let bare = format!(
            r#"{{"v":1,"type":"probe","user":"{USER}","probeUuid":"{PROBE}","clear":true,"data":{{"message":"up"}}}}"#
        );
        assert!(
            parse_agent_events(bare.as_bytes()).is_ok(),
            "value and details may be left out"
        );
    }

    #[test]
    fn agent_events_are_validated_strictly() {
        assert!(invalid("").contains("empty"));
        assert!(invalid("{not json").contains("invalid events"));
        assert!(invalid(&event("").replace(r#""type":"probe""#, r#""type":"fake""#)).contains("\"fake\""));
        assert!(invalid(&event("").replace(r#""v":1"#, r#""v":2"#)).contains("version 2"));
        assert!(invalid(&event("").replace(USER, "alice")).contains("invalid events"));
        // The relay stamps these; an agent may not choose them.
        assert!(invalid(&event(r#","time":1"#)).contains("time"));
        assert!(invalid(&event(r#","relay":"x""#)).contains("relay"));
        assert!(invalid(&event("").replace(r#""value":1"#, r#""value":[1]"#)).contains("data.value"));
        assert!(invalid(&event("").replace(r#"{"matches":[]}"#, "7")).contains("data.details"));
        assert!(invalid(&event("").replace(r#""clear":false"#, r#""clear":"no""#)).contains("invalid events"));
    }

    #[test]
    fn what_an_agent_sends_is_what_the_relay_takes() {
        let seen = crate::probes::Observation::fault("cmd failed", Some(serde_json::json!(2)), None);
        let event = AgentEvent::of(Uuid::new_v4(), Uuid::new_v4(), None, seen);
        let body = serde_json::to_vec(&vec![event.clone()]).unwrap();
        assert_eq!(parse_agent_events(&body).unwrap(), [event]);
        let clear = AgentEvent::of(
            Uuid::new_v4(),
            Uuid::new_v4(),
            None,
            crate::probes::Observation::clear("ok"),
        );
        assert!(parse_agent_events(&serde_json::to_vec(&clear).unwrap()).unwrap()[0].clear);
    }

    #[test]
    fn the_relay_stamps_what_only_it_knows() {
        let (agent, relay) = (Uuid::new_v4(), Uuid::new_v4());
        let api = RelayAgentApi {
            agent,
            agent_alias: Some("cn-7".into()),
            relay,
            clock: Clock::system(),
            link: Named::new(),
            probes: Named::new(),
        };
        let parsed = parse_agent_events(event("").as_bytes()).unwrap().remove(0);
        let Event::Probe(stamped) = api.stamp(parsed) else {
            panic!("a probe event")
        };
        assert_eq!(stamped.agent, Some(agent));
        assert_eq!(stamped.relay, Some(relay));
        assert_eq!(stamped.agent_alias.as_deref(), Some("cn-7"));
        assert_eq!(stamped.probe_uuid.to_string(), PROBE);
        assert_eq!(stamped.data.value, Some(serde_json::json!(1)));
        assert!(stamped.time > 0);
        let other = api.stamp(parse_agent_events(event("").as_bytes()).unwrap().remove(0));
        assert_ne!(other.uuid(), stamped.uuid, "a fresh uuid per receipt");
    }
}
