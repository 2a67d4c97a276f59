//! The Master API routes (SPEC §8), Amon shaped: JSON in and out, errors as
//! `{"code", "message"}`, create answers 200 with the object.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{content_md5, not_found, read_body, read_json, ApiError, FieldError, MAX_BODY};
use crate::actors::router::{AccountChanged, EventRouter, ProbeChanged, RouteEvents};
use crate::actors::supervisor::Named;
use crate::clock::Clock;
use crate::model::{Account, Alarm, Event, Probe, ProbeType};
use crate::store::{AlarmLookup, Store};

/// What every Master API handler may use.
#[derive(Clone)]
pub struct MasterApi {
    pub store: Store,
    /// Probe events older than this are refused (`422 EventTooOld`).
    pub event_max_age: std::time::Duration,
    /// The live event router, wherever its supervisor last started it.
    pub router: Named<EventRouter>,
    pub clock: Clock,
}

/// Mounts the Master API on an actix-web app.
mod alarms;

pub fn configure(api: MasterApi) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(api))
            .route("/ping", web::get().to(ping))
            .route("/metrics", web::get().to(metrics))
            .route("/deadletters", web::get().to(dead_letters))
            .route("/accounts", web::post().to(create_account))
            .route("/events", web::post().to(post_events))
            .route("/agentprobes", web::get().to(list_agent_probes))
            // HEAD is what relays poll: actix-web sends the GET answer's
            // headers (Content-Length included, as RFC 9110 requires) and
            // leaves out the body.
            .route("/agentprobes", web::head().to(list_agent_probes))
            .route("/pub/{account}", web::get().to(get_account))
            .route("/pub/{account}/probes", web::get().to(list_probes))
            .route("/pub/{account}/probes", web::post().to(create_probe))
            .route("/pub/{account}/probes/{uuid}", web::get().to(get_probe))
            .route("/pub/{account}/alarms", web::get().to(list_alarms))
            .route("/pub/{account}/alarms/{id}", web::get().to(get_alarm))
            .route("/pub/{account}/alarms/{id}", web::post().to(alarms::act_on_alarm))
            .route("/pub/{account}/alarms/{id}", web::delete().to(alarms::delete_alarm))
            .default_service(web::to(not_found));
    }
}

/// Notifications that will never be delivered (permanent failures, or
/// undelivered beyond `notify.max_age`), newest first.
async fn dead_letters(api: web::Data<MasterApi>) -> Result<HttpResponse, ApiError> {
    let letters: Vec<serde_json::Value> = api
        .store
        .dead_letters(1000)
        .await?
        .into_iter()
        .map(|(n, why)| {
            serde_json::json!({
                "id": n.id,
                "kind": n.kind,
                "account": n.account_login,
                "contact": n.contact_name,
                "alarm": n.alarm_id,
                "time": n.event_time,
                "error": why,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(letters))
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}

async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "ping": "pong", "pid": std::process::id() }))
}

impl MasterApi {
    fn router(&self) -> Result<actix::Addr<EventRouter>, ApiError> {
        self.router
            .get()
            .ok_or_else(|| ApiError::ServiceUnavailable("the event router is restarting".into()))
    }

    async fn account(&self, key: &str) -> Result<Account, ApiError> {
        self.store
            .get_account(key.to_string())
            .await?
            .ok_or_else(|| ApiError::ResourceNotFound(format!("no such account: {key:?}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    login: Option<String>,
    email: Option<String>,
    uuid: Option<Uuid>,
}

fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 64
        && login.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && Uuid::parse_str(login).is_err()
}

async fn create_account(api: web::Data<MasterApi>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body: NewAccount = read_json(payload, MAX_BODY).await?;
    let mut errors = Vec::new();
    match body.login.as_deref() {
        None => errors.push(FieldError::missing("login")),
        Some(login) if !valid_login(login) => errors.push(FieldError::invalid(
            "login",
            "login must be 1-64 characters of letters, digits, '_', '.', '-' and not a uuid",
        )),
        _ => {}
    }
    match body.email.as_deref() {
        None => errors.push(FieldError::missing("email")),
        Some(email) if !email.contains('@') => errors.push(FieldError::invalid("email", "email must contain '@'")),
        _ => {}
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let account = Account {
        uuid: body.uuid.unwrap_or_else(Uuid::new_v4),
        login: body.login.unwrap_or_default(),
        email: body.email.unwrap_or_default(),
    };
    let account = api
        .store
        .create_account(account, api.clock.now_ms())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(what) => ApiError::InvalidArgument(format!("{what} already exists")),
            other => other.into(),
        })?;
    api.router()?
        .send(AccountChanged(account.clone()))
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("event router: {e}")))?;
    Ok(HttpResponse::Ok().json(account))
}

async fn get_account(api: web::Data<MasterApi>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api.account(&path).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewProbe {
    name: Option<String>,
    #[serde(rename = "type")]
    probe_type: Option<String>,
    agent: Option<String>,
    machine: Option<String>,
    config: Option<serde_json::Value>,
    contacts: Option<Vec<String>>,
    group: Option<String>,
    group_events: Option<bool>,
    disabled: Option<bool>,
    hold: Option<serde_json::Value>,
    renotify: Option<serde_json::Value>,
}

/// A duration field: whole seconds, or a string like `"90s"`, `"5m"`.
fn seconds_field(field: &str, value: Option<&serde_json::Value>, errors: &mut Vec<FieldError>) -> Option<u64> {
    let value = value?;
    let parsed = match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(text) => humantime::parse_duration(text.trim()).ok().map(|d| d.as_secs()),
        _ => None,
    };
    if parsed.is_none() {
        errors.push(FieldError::invalid(
            field,
            format!("{field} must be whole seconds or a duration like \"90s\", not {value}"),
        ));
    }
    parsed
}

fn parse_uuid_field(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    let value = value?;
    match Uuid::parse_str(value) {
        Ok(uuid) => Some(uuid),
        Err(_) => {
            errors.push(FieldError::invalid(field, format!("{field} {value:?} is not a uuid")));
            None
        }
    }
}

/// Turns a create body into a probe or says every field that is wrong.
fn validate_probe(user: Uuid, body: NewProbe) -> Result<Probe, ApiError> {
    let mut errors = Vec::new();
    let probe_type = match body.probe_type.as_deref() {
        None => {
            errors.push(FieldError::missing("type"));
            None
        }
        Some("machine-up") => Some(ProbeType::MachineUp),
        Some(other) => {
            errors.push(FieldError::invalid(
                "type",
                format!("probe type {other:?} is not supported: valid types are \"machine-up\""),
            ));
            None
        }
    };
    if let Some(name) = &body.name {
        if name.len() > 512 {
            errors.push(FieldError::invalid("name", "name is longer than 512 characters"));
        }
    }
    let agent = parse_uuid_field("agent", body.agent.as_deref(), &mut errors);
    let machine = parse_uuid_field("machine", body.machine.as_deref(), &mut errors);
    let group = parse_uuid_field("group", body.group.as_deref(), &mut errors);
    // machine-up runs where the machine is: one of agent/machine names it.
    let (agent, machine) = match (agent, machine) {
        (Some(a), Some(m)) if a != m => {
            errors.push(FieldError::invalid(
                "machine",
                "agent and machine must be the same for machine-up",
            ));
            (Some(a), Some(m))
        }
        (None, None) if body.agent.is_none() && body.machine.is_none() => {
            errors.push(FieldError::missing("machine"));
            (None, None)
        }
        (a, m) => (a.or(m), m.or(a)),
    };
    let hold = seconds_field("hold", body.hold.as_ref(), &mut errors);
    let renotify = seconds_field("renotify", body.renotify.as_ref(), &mut errors);
    if renotify == Some(0) {
        errors.push(FieldError::invalid(
            "renotify",
            "renotify must be more than zero (omit it for no reminders)",
        ));
    }
    let contacts = body.contacts.unwrap_or_else(|| vec!["email".to_string()]);
    for contact in &contacts {
        if contact != "email" {
            errors.push(FieldError::invalid(
                "contacts",
                format!("unknown contact {contact:?}: only \"email\" exists yet"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(Probe {
        uuid: Uuid::new_v4(),
        name: body.name,
        user,
        probe_type: probe_type.unwrap_or(ProbeType::MachineUp),
        agent,
        machine,
        config: body.config.unwrap_or(serde_json::Value::Null),
        contacts,
        group,
        group_events: body.group_events.unwrap_or(true),
        disabled: body.disabled.unwrap_or(false),
        hold,
        renotify,
    })
}

async fn create_probe(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let account = api.account(&path).await?;
    let body: NewProbe = serde_json::from_slice(&body)
        .map_err(|e| ApiError::validation(vec![FieldError::invalid("body", format!("invalid probe: {e}"))]))?;
    let probe = validate_probe(account.uuid, body)?;
    let probe = api.store.put_probe(probe).await?;
    api.router()?
        .send(ProbeChanged(probe.clone()))
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("event router: {e}")))?;
    Ok(HttpResponse::Ok().json(probe))
}

async fn list_probes(api: web::Data<MasterApi>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let account = api.account(&path).await?;
    Ok(HttpResponse::Ok().json(api.store.list_probes(account.uuid).await?))
}

async fn get_probe(api: web::Data<MasterApi>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (account, uuid) = path.into_inner();
    let account = api.account(&account).await?;
    let uuid =
        Uuid::parse_str(&uuid).map_err(|_| ApiError::InvalidArgument(format!("{uuid:?} is not a probe uuid")))?;
    match api.store.get_probe(account.uuid, uuid).await? {
        Some(probe) => Ok(HttpResponse::Ok().json(probe)),
        None => Err(ApiError::ResourceNotFound(format!("no such probe: {uuid}"))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlarmQuery {
    state: Option<String>,
    probe_group: Option<Uuid>,
}

/// How long a closed alarm still counts as "recent".
const RECENT_MS: i64 = 60 * 60 * 1000;

async fn list_alarms(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
    query: web::Query<AlarmQuery>,
) -> Result<HttpResponse, ApiError> {
    let account = api.account(&path).await?;
    let now = api.clock.now_ms();
    let keep: Box<dyn Fn(&Alarm) -> bool> = match query.state.as_deref().unwrap_or("recent") {
        "recent" => Box::new(move |a: &Alarm| !a.closed || a.time_closed.is_some_and(|t| now - t <= RECENT_MS)),
        "open" => Box::new(|a: &Alarm| !a.closed),
        "closed" => Box::new(|a: &Alarm| a.closed),
        "all" => Box::new(|_: &Alarm| true),
        other => {
            return Err(ApiError::InvalidArgument(format!(
                "state {other:?} is invalid: expected recent, open, closed or all"
            )))
        }
    };
    let group = query.probe_group;
    let alarms: Vec<Alarm> = api
        .store
        .list_alarms(account.uuid)
        .await?
        .into_iter()
        .filter(|a| keep(a) && (group.is_none() || a.probe_group == group))
        .collect();
    Ok(HttpResponse::Ok().json(alarms))
}

async fn get_alarm(api: web::Data<MasterApi>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (account, id) = path.into_inner();
    let account = api.account(&account).await?;
    let alarm = api.alarm(account.uuid, &id).await?;
    Ok(HttpResponse::Ok().json(alarm))
}

impl MasterApi {
    /// An account's alarm by its id in the path: 400 for a bad id, 410 for
    /// a deleted or expunged one, 404 for one never issued.
    async fn alarm(&self, user: Uuid, id: &str) -> Result<Alarm, ApiError> {
        let id: u64 = id
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::InvalidArgument(format!("alarm id {id:?} is not a positive integer")))?;
        match self.store.get_alarm(user, id).await? {
            AlarmLookup::Found(alarm) => Ok(alarm),
            AlarmLookup::Gone => Err(ApiError::Gone(format!("alarm {id} was deleted or expunged"))),
            AlarmLookup::NotFound => Err(ApiError::ResourceNotFound(format!("no such alarm: {id}"))),
        }
    }
}

/// The `agent` of `GET|HEAD /agentprobes?agent=`: required, a uuid.
fn agent_param(query: &str) -> Result<Uuid, ApiError> {
    #[derive(Deserialize)]
    struct AgentQuery {
        agent: Option<String>,
    }
    let query = web::Query::<AgentQuery>::from_query(query)
        .map_err(|e| ApiError::InvalidArgument(format!("invalid query string: {e}")))?;
    let agent = query
        .into_inner()
        .agent
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::MissingParameter("agent is required".into()))?;
    Uuid::parse_str(&agent).map_err(|_| ApiError::InvalidArgument(format!("agent {agent:?} is not a uuid")))
}

/// Every probe the agent runs (any account), by probe uuid, as the JSON
/// body relays cache, and that body's `Content-MD5`.
async fn agent_probes(api: &MasterApi, req: &HttpRequest) -> Result<(Vec<u8>, String), ApiError> {
    let agent = agent_param(req.query_string())?;
    let probes = api.store.probes_for_agent(agent).await?;
    let body = serde_json::to_vec(&probes).map_err(|e| ApiError::Internal(format!("cannot encode probes: {e}")))?;
    let md5 = content_md5(&body);
    Ok((body, md5))
}

async fn list_agent_probes(api: web::Data<MasterApi>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (body, md5) = agent_probes(&api, &req).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Content-MD5", md5))
        .body(body))
}

/// Parses `POST /events`: one event or an array of them.
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = match first {
        Some(b'[') => serde_json::from_slice::<Vec<Event>>(body),
        Some(_) => serde_json::from_slice::<Event>(body).map(|e| vec![e]),
        None => {
            return Err(ApiError::InvalidArgument(
                "request body is empty: expected events".into(),
            ))
        }
    };
    parsed.map_err(|e| ApiError::InvalidArgument(format!("invalid events: {e}")))
}

async fn post_events(api: web::Data<MasterApi>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let events = parse_events(&body)?;
    // Amon's MON-343 rule, for agents' probe events only: a relay's spool
    // may legitimately deliver machine events an hour late.
    let now = api.clock.now_ms();
    let max_age = api.event_max_age.as_millis() as i64;
    if let Some(old) = events
        .iter()
        .find(|e| matches!(e, Event::Probe(_)) && now - e.time() > max_age)
    {
        return Err(ApiError::EventTooOld(format!(
            "event {} is {}s old: probe events older than {}s are refused",
            old.uuid(),
            (now - old.time()) / 1000,
            max_age / 1000
        )));
    }
    let count = events.len() as u64;
    let router = api.router()?;
    let fresh = api.store.commit_events(events, api.clock.now_ms()).await?;
    crate::metrics::events_ingested(count);
    if !fresh.is_empty() {
        // Committed: from here the event is the master's problem, not the
        // relay's. The router queues it for the alarm actors.
        router
            .send(RouteEvents(fresh))
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("event router: {e}")))?;
    }
    Ok(HttpResponse::Accepted().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_object_or_an_array() {
        let one = r#"{"type":"server","uuid":"6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11","time":1,"relay":"6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11","server":"6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11","event":"heartbeat"}"#;
        assert_eq!(parse_events(one.as_bytes()).unwrap().len(), 1);
        assert_eq!(parse_events(format!("[{one},{one}]").as_bytes()).unwrap().len(), 2);
        assert!(matches!(parse_events(b"  "), Err(ApiError::InvalidArgument(_))));
        assert!(matches!(
            parse_events(b"{\"type\":\"nope\"}"),
            Err(ApiError::InvalidArgument(_))
        ));
    }

    #[test]
    fn agentprobes_needs_an_agent_uuid() {
        let agent = Uuid::new_v4();
        assert_eq!(agent_param(&format!("agent={agent}")).unwrap(), agent);
        assert!(matches!(agent_param(""), Err(ApiError::MissingParameter(_))));
        assert!(matches!(agent_param("agent="), Err(ApiError::MissingParameter(_))));
        assert!(matches!(agent_param("machine=x"), Err(ApiError::MissingParameter(_))));
        assert!(matches!(agent_param("agent=cn-7"), Err(ApiError::InvalidArgument(_))));
    }
}
