//! The Master API routes (SPEC §8), Amon shaped: JSON in and out, errors as
//! `{"code", "message"}`, create answers 200 with the object.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{content_md5, decode_json, not_found, read_body, ApiError, FieldError, MAX_BODY};
use crate::actors::router::{EventRouter, IngestError};
use crate::actors::server_guard::GetServers;
use crate::actors::supervisor::Named;
use crate::clock::Clock;
use crate::http::alarm_filter::AlarmState;
use crate::model::{Account, Alarm, EpochMs, Event};
use crate::store::{AlarmLookup, Store};

/// What every Master API handler may use.
#[derive(Clone)]
pub struct MasterApi {
    pub store: Store,
    /// Probe events older than this are refused (`422 EventTooOld`).
    pub event_max_age: std::time::Duration,
    /// Events older than this are dropped (see [`Admission::Expired`]).
    pub event_retention: std::time::Duration,
    /// The live event router, wherever its supervisor last started it.
    pub router: Named<EventRouter>,
    /// The router reads committed events from the store (masters sharing
    /// one), so ingest does not hand them over.
    pub polled: bool,
    /// Committed events not yet applied (`POST /events` answers 503 when
    /// it is full).
    pub backlog: std::sync::Arc<crate::actors::router::Backlog>,
    /// The flood guard (server incidents for `GET /servers`).
    pub guard: Named<crate::actors::server_guard::ServerGuard>,
    /// The keeper of maintenance windows (creates and deletes them).
    pub keeper: Named<crate::actors::maintenance::MaintenanceKeeper>,
    pub clock: Clock,
    /// What probe configs may ask for (`probes.*` settings).
    pub probe_limits: crate::probes::Limits,
    /// How many alarm shards the core runs (`GET /cluster`).
    pub shards: usize,
    /// Masters sharing this store: who leads, and the lease (`None`: a
    /// master alone, on SQLite).
    pub cluster: Option<ClusterApi>,
}

/// What the API knows of the cluster.
#[derive(Clone)]
pub struct ClusterApi {
    pub view: crate::actors::cluster::ClusterView,
    pub lease: std::time::Duration,
}

/// Mounts the Master API on an actix-web app.
mod accounts;
mod alarms;
mod cluster;
mod maintenances;
mod probes;

pub(crate) use maintenances::{validate as validate_window, WindowBody};

pub fn configure(api: MasterApi) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(api))
            .route("/ping", web::get().to(ping))
            .route("/metrics", web::get().to(metrics))
            .route("/cluster", web::get().to(cluster::get_cluster))
            .route("/deadletters", web::get().to(dead_letters))
            .route("/alarms", web::get().to(list_all_alarms))
            .route("/servers", web::get().to(list_servers))
            .route("/servers/{server}/machines", web::put().to(put_server_machines))
            .route("/accounts", web::post().to(accounts::create_account))
            .route("/accounts/{account}", web::put().to(accounts::put_account))
            .route("/events", web::post().to(post_events))
            .route("/loglevel", web::get().to(crate::http::loglevel::get_loglevel))
            .route("/loglevel", web::put().to(crate::http::loglevel::put_loglevel))
            .route("/agentprobes", web::get().to(list_agent_probes))
            // HEAD is what relays poll: actix-web sends the GET answer's
            // headers (Content-Length included, as RFC 9110 requires) and
            // leaves out the body.
            .route("/agentprobes", web::head().to(list_agent_probes))
            .route("/pub/{account}", web::get().to(accounts::get_account))
            .route("/pub/{account}/machines", web::get().to(list_account_machines))
            .route("/pub/{account}/probes", web::get().to(probes::list_probes))
            .route("/pub/{account}/probes", web::post().to(probes::create_probe))
            .route("/pub/{account}/probes/{uuid}", web::get().to(probes::get_probe))
            .route("/pub/{account}/probes/{uuid}", web::put().to(probes::put_probe))
            .route("/pub/{account}/probes/{uuid}", web::delete().to(probes::delete_probe))
            .route("/pub/{account}/probegroups", web::get().to(probes::list_groups))
            .route("/pub/{account}/probegroups", web::post().to(probes::create_group))
            .route("/pub/{account}/probegroups/{uuid}", web::get().to(probes::get_group))
            .route("/pub/{account}/probegroups/{uuid}", web::put().to(probes::put_group))
            .route(
                "/pub/{account}/probegroups/{uuid}",
                web::delete().to(probes::delete_group),
            )
            .route("/pub/{account}/maintenances", web::get().to(maintenances::list))
            .route("/pub/{account}/maintenances", web::post().to(maintenances::create))
            .route("/pub/{account}/maintenances/{id}", web::get().to(maintenances::get))
            .route(
                "/pub/{account}/maintenances/{id}",
                web::delete().to(maintenances::delete),
            )
            .route("/maintenances", web::get().to(maintenances::list_all))
            .route("/maintenances", web::post().to(maintenances::create_operator))
            .route("/maintenances/{id}", web::get().to(maintenances::get_operator))
            .route("/maintenances/{id}", web::delete().to(maintenances::delete_operator))
            .route("/pub/{account}/contacts", web::get().to(probes::list_contacts))
            .route("/pub/{account}/contacts/{name}", web::get().to(probes::get_contact))
            .route("/pub/{account}/contacts/{name}", web::put().to(probes::put_contact))
            .route(
                "/pub/{account}/contacts/{name}",
                web::delete().to(probes::delete_contact),
            )
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

async fn metrics(api: web::Data<MasterApi>) -> HttpResponse {
    if let Ok(open) = api.store.open_alarm_count().await {
        crate::metrics::alarms_open(open);
    }
    if let Ok(stored) = api.store.events_stored_by_type().await {
        for (kind, n) in stored {
            crate::metrics::events_stored(&kind, n);
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}

#[derive(Deserialize)]
struct PingQuery {
    error: Option<String>,
}

/// `GET /ping`; `?error=<Code>` answers with that error instead, as Amon's
/// ping did, so clients (and tests) can see every error the API can give.
async fn ping(query: web::Query<PingQuery>, api: web::Data<MasterApi>) -> Result<HttpResponse, ApiError> {
    let Some(code) = query.error.as_deref() else {
        // Healthy means able to commit: a full disk or a read-only
        // database answers 503 while it lasts, and 200 again once it is over.
        api.store.probe_write().await?;
        return Ok(pong());
    };
    let message = format!("simulated {code} (GET /ping?error=)");
    Err(match code.trim_end_matches("Error") {
        "InvalidArgument" => ApiError::InvalidArgument(message),
        "MissingParameter" => ApiError::MissingParameter(message),
        "Unauthorized" => ApiError::Unauthorized(message),
        "Forbidden" => ApiError::Forbidden(message),
        "ResourceNotFound" => ApiError::ResourceNotFound(message),
        "Gone" => ApiError::Gone(message),
        "RequestTooLarge" => ApiError::RequestTooLarge { limit: MAX_BODY },
        "ValidationFailed" => ApiError::validation(vec![FieldError::invalid("error", message)]),
        "EventTooOld" => ApiError::EventTooOld(message),
        "ServiceUnavailable" => ApiError::ServiceUnavailable(message),
        "" | "Internal" => ApiError::Internal(message),
        other => ApiError::InvalidArgument(format!("{other:?} is not an error code of this API")),
    })
}

fn pong() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "ping": "pong", "pid": std::process::id() }))
}

impl MasterApi {
    pub(crate) fn router(&self) -> Result<actix::Addr<EventRouter>, ApiError> {
        self.router
            .get()
            .ok_or_else(|| ApiError::ServiceUnavailable("the event router is restarting".into()))
    }

    pub(crate) async fn account(&self, key: &str) -> Result<Account, ApiError> {
        self.store
            .get_account(key.to_string())
            .await?
            .ok_or_else(|| ApiError::ResourceNotFound(format!("no such account: {key:?}")))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlarmQuery {
    state: Option<String>,
    probe_group: Option<Uuid>,
}

/// The `state` filter of alarm listings ([`AlarmState`]; `recent` when
/// none is given).
fn state_filter(state: Option<&str>) -> Result<AlarmState, ApiError> {
    match state {
        None => Ok(AlarmState::default()),
        Some(text) => AlarmState::parse(text).ok_or_else(|| {
            ApiError::InvalidArgument(format!(
                "state {text:?} is invalid: expected recent, open, closed or all"
            ))
        }),
    }
}

async fn list_alarms(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
    query: web::Query<AlarmQuery>,
) -> Result<HttpResponse, ApiError> {
    let account = api.account(&path).await?;
    let now = api.clock.now_ms();
    let keep = state_filter(query.state.as_deref())?;
    let group = query.probe_group;
    let alarms: Vec<Alarm> = api
        .store
        .list_alarms(account.uuid)
        .await?
        .into_iter()
        .filter(|a| keep.keeps(a, now) && (group.is_none() || a.probe_group == group))
        .collect();
    Ok(HttpResponse::Ok().json(alarms))
}

/// `GET /alarms?state=`: every account's alarms (operators).
async fn list_all_alarms(api: web::Data<MasterApi>, query: web::Query<AlarmQuery>) -> Result<HttpResponse, ApiError> {
    let now = api.clock.now_ms();
    let keep = state_filter(query.state.as_deref())?;
    let group = query.probe_group;
    let alarms: Vec<Alarm> = api
        .store
        .all_alarms(keep == AlarmState::Open)
        .await?
        .into_iter()
        .filter(|a| keep.keeps(a, now) && (group.is_none() || a.probe_group == group))
        .collect();
    Ok(HttpResponse::Ok().json(alarms))
}

/// `GET /servers`: every relay heard from, with machine counts and any
/// open server incident (from the flood guard).
/// `PUT /servers/:server/machines` (relays): every machine the compute node
/// carries now, with its alias and owner. Replaces what it carried before;
/// owners that changed reach the router at once (tenancy).
async fn put_server_machines(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let server = Uuid::parse_str(&path)
        .map_err(|_| ApiError::InvalidArgument(format!("not a server uuid: {:?}", path.as_str())))?;
    let machines: Vec<crate::model::MachineReport> = crate::http::decode_json(&body, "machines")?;
    let count = machines.len();
    let changed = api
        .store
        .replace_server_machines(server, machines, api.clock.now_ms())
        .await?;
    if !changed.is_empty() {
        tracing::info!(%server, machines = count, owners_changed = changed.len(), "inventory changed");
        api.router()?
            .send(crate::actors::router::OwnersChanged(changed))
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("event router: {e}")))?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /pub/:account/machines`: the machines the account owns, as relays
/// reported them (what its probes may watch).
async fn list_account_machines(api: web::Data<MasterApi>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let account = api.account(&path).await?;
    Ok(HttpResponse::Ok().json(api.store.machines_of(account.uuid).await?))
}

async fn list_servers(api: web::Data<MasterApi>) -> Result<HttpResponse, ApiError> {
    let known = match api.guard.get() {
        Some(guard) => guard.send(GetServers).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut servers: Vec<serde_json::Value> = Vec::new();
    let stored = api.store.servers().await?;
    for (uuid, hostname, last_event, last_seen) in &stored {
        let view = known.iter().find(|v| v.uuid == *uuid);
        servers.push(serde_json::json!({
            "uuid": uuid,
            "hostname": hostname,
            "lastEvent": last_event,
            "lastSeen": last_seen,
            "machines": view.map(|v| v.machines).unwrap_or(0),
            "machinesDown": view.map(|v| v.machines_down).unwrap_or(0),
            "incident": view.and_then(|v| v.incident.clone()),
        }));
    }
    // Servers known only from their machines' events (no relay of their own,
    // e.g. simulated ones).
    for view in known.iter().filter(|v| !stored.iter().any(|s| s.0 == v.uuid)) {
        servers.push(serde_json::json!({
            "uuid": view.uuid,
            "hostname": view.hostname,
            "lastEvent": null,
            "lastSeen": view.last_seen,
            "machines": view.machines,
            "machinesDown": view.machines_down,
            "incident": view.incident,
        }));
    }
    Ok(HttpResponse::Ok().json(servers))
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
    pub(crate) async fn alarm(&self, user: Uuid, id: &str) -> Result<Alarm, ApiError> {
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

/// Parses `POST /events`: one event or an array of them. Malformed JSON is
/// `400 InvalidArgument`, an event that does not fit `422 ValidationFailed`
/// naming it (`[3].machine`), as for every other body ([`decode_json`]).
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, ApiError> {
    let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let events = decode_events(body, batch)?;
    // Unknown fields are ignored (a later relay's additions within version
    // 1); another version is refused, naming the event.
    if let Some((i, event)) = events
        .iter()
        .enumerate()
        .find(|(_, e)| e.version() != crate::model::EVENT_VERSION)
    {
        let field = if batch { format!("[{i}].v") } else { "v".to_string() };
        return Err(ApiError::validation(vec![FieldError::invalid(
            &field,
            format!(
                "event version {} is not supported: this master takes version {} (upgrade masters before relays)",
                event.version(),
                crate::model::EVENT_VERSION
            ),
        )]));
    }
    Ok(events)
}

fn decode_events(body: &[u8], batch: bool) -> Result<Vec<Event>, ApiError> {
    let parsed = if batch {
        decode_json::<Vec<Event>>(body, "events")
    } else {
        decode_json::<Event>(body, "event").map(|e| vec![e])
    };
    let events = parsed.map_err(|e| match e {
        // An internally tagged enum is decoded from a buffered copy, which
        // hides the field's path: look for it again, on this rare path only
        // (the happy path stays one pass).
        ApiError::ValidationFailed { mut errors, .. } => {
            if let (Some(error), Some(field)) = (errors.first_mut(), misfit_event_field(body, batch)) {
                error.field = field;
            }
            ApiError::validation(errors)
        }
        other => other,
    })?;
    if let Some((i, event)) = events
        .iter()
        .enumerate()
        .find(|(_, e)| !EVENT_TIMES.contains(&e.time()))
    {
        let field = if batch {
            format!("[{i}].time")
        } else {
            "time".to_string()
        };
        return Err(ApiError::validation(vec![FieldError::invalid(
            &field,
            format!(
                "time {} is not epoch milliseconds from 1970 to the end of 9999",
                event.time()
            ),
        )]));
    }
    Ok(events)
}

/// The event times the master takes: epoch milliseconds from 1970 to the
/// end of 9999. Everything after the edge computes with them (`now - time`
/// ages an event, `rules` compares it with the alarm's last event), which a
/// time near `i64::MIN` or `i64::MAX` would overflow.
const EVENT_TIMES: std::ops::RangeInclusive<EpochMs> = 0..=253_402_300_799_999;

/// A Master API body, by the route that takes it (see [`fuzz_body`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `POST /accounts`
    Account,
    /// `POST /pub/:account/probes`, `PUT …/probes/:uuid`
    Probe,
    /// `POST /pub/:account/probegroups`, `PUT …/probegroups/:uuid`
    ProbeGroup,
    /// `PUT /pub/:account/contacts/ops`
    Contact,
    /// `POST /pub/:account/maintenances`, `POST /maintenances`
    MaintenanceWindow,
    /// The query string of `POST /pub/:account/alarms/:id?action=` (the
    /// request has no body).
    AlarmAction,
    /// `PUT /servers/:server/machines`
    ServerMachines,
}

/// Decodes and validates `body` as its handler does, as far as it goes
/// without the store (the account may use the contacts `email` and `ops`;
/// no probe group exists). It exists for the fuzz targets (`fuzz/`): a
/// hostile body must come out as `Ok` or a 4xx `ApiError`, never a panic.
pub fn fuzz_body(kind: BodyKind, body: &[u8]) -> Result<(), ApiError> {
    use probes::Target;
    let user = Uuid::from_u128(1);
    let account = Account {
        uuid: user,
        login: "alice".into(),
        email: "alice@example.com".into(),
        operator: false,
        attributes: Default::default(),
    };
    let ops = crate::model::Contact {
        name: "ops".into(),
        medium: crate::model::Medium::Email,
        address: "ops@example.com".into(),
    };
    let book = crate::model::AccountBook {
        account: account.clone(),
        contacts: [("ops".to_string(), ops)].into(),
    };
    match kind {
        BodyKind::Account => accounts::validate_account(user, decode_json(body, "account")?).map(drop),
        BodyKind::Probe => {
            let mut errors = Vec::new();
            probes::check_probe(
                &account,
                Target::Existing(user),
                decode_json(body, "probe")?,
                &book,
                crate::probes::Limits::default(),
                &mut errors,
            );
            errors
                .is_empty()
                .then_some(())
                .ok_or_else(|| ApiError::validation(errors))
        }
        BodyKind::ProbeGroup => probes::check_group(
            &account,
            Target::Existing(user),
            decode_json(body, "probe group")?,
            &book,
        )
        .map(drop),
        BodyKind::Contact => probes::validate_contact("ops".into(), decode_json(body, "contact")?).map(drop),
        BodyKind::MaintenanceWindow => {
            maintenances::validate(Some(user), decode_json(body, "window")?, 1_700_000_000_000).map(drop)
        }
        BodyKind::AlarmAction => {
            let query = std::str::from_utf8(body).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
            let query = web::Query::<alarms::ActionQuery>::from_query(query)
                .map_err(|e| ApiError::InvalidArgument(format!("invalid query string: {e}")))?;
            alarms::action_of(&query).map(drop)
        }
        BodyKind::ServerMachines => decode_json::<Vec<crate::model::MachineReport>>(body, "machines").map(drop),
    }
}

/// The path of the first event field that does not fit (`[2].time`), by
/// decoding each event as the variant its `type` names.
fn misfit_event_field(body: &[u8], batch: bool) -> Option<String> {
    use crate::model::{MachineEvent, ProbeEvent, ServerEvent};
    fn path<T: serde::de::DeserializeOwned>(event: &serde_json::Value) -> Option<String> {
        serde_path_to_error::deserialize::<_, T>(event)
            .err()
            .map(|e| e.path().to_string())
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let events = if batch { value.as_array()?.clone() } else { vec![value] };
    events.iter().enumerate().find_map(|(i, event)| {
        let within = match event.get("type").and_then(serde_json::Value::as_str) {
            Some("probe") => path::<ProbeEvent>(event),
            Some("machine") => path::<MachineEvent>(event),
            Some("server") => path::<ServerEvent>(event),
            _ => Some("type".to_string()),
        }?;
        let within = if within == "." { None } else { Some(within) };
        Some(match (batch, within) {
            (true, Some(field)) => format!("[{i}].{field}"),
            (true, None) => format!("[{i}]"),
            (false, Some(field)) => field,
            (false, None) => "body".to_string(),
        })
    })
}

/// What `POST /events` does with one event, by its age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Taken,
    /// A probe event older than `master.event_max_age`: Amon's MON-343
    /// rule, for agents' probe events only (a relay's spool may rightly
    /// deliver machine events an hour late). Alone it is refused with
    /// `422 EventTooOld`; in a batch it is dropped so the rest is not lost.
    Stale,
    /// Any event older than `master.event_retention`: its first copy may
    /// have been collected already, so a second copy could not be told from
    /// a new event. Dropped, alone too: the `202` lets a relay forget it
    /// instead of retrying or dead-lettering what nobody can use.
    Expired,
}

fn admission(event: &Event, now: EpochMs, max_age: Duration, retention: Duration) -> Admission {
    let age = now - event.time();
    if matches!(event, Event::Probe(_)) && age > max_age.as_millis() as i64 {
        Admission::Stale
    } else if age > retention.as_millis() as i64 {
        Admission::Expired
    } else {
        Admission::Taken
    }
}

async fn post_events(api: web::Data<MasterApi>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let events = parse_events(&body)?;
    // Stale and expired events are dropped, logged and counted (see
    // `Admission`); a single stale probe event is refused.
    let now = api.clock.now_ms();
    let max_age = api.event_max_age.as_millis() as i64;
    let admit = |e: &Event| admission(e, now, api.event_max_age, api.event_retention);
    if let [only] = events.as_slice() {
        if admit(only) == Admission::Stale {
            return Err(ApiError::EventTooOld(format!(
                "event {} is {}s old: probe events older than {}s are refused",
                only.uuid(),
                (now - only.time()) / 1000,
                max_age / 1000
            )));
        }
    }
    let before = events.len();
    let events: Vec<Event> = events.into_iter().filter(|e| admit(e) == Admission::Taken).collect();
    if events.len() < before {
        let dropped = (before - events.len()) as u64;
        metrics::counter!("amon_events_too_old_total").increment(dropped);
        tracing::warn!(
            dropped,
            max_age_s = max_age / 1000,
            retention_s = api.event_retention.as_secs(),
            "stale probe events, or events older than the retention, dropped"
        );
    }
    let count = events.len();
    let router = (!api.polled).then_some(&api.router);
    crate::actors::router::ingest(&api.store, &api.backlog, router, events, api.clock.now_ms())
        .await
        .map_err(|e| match e {
            IngestError::Full(_) => ApiError::ServiceUnavailable(e.to_string()),
            IngestError::Store(e) => ApiError::from(e),
        })?;
    crate::metrics::events_ingested(count as u64);
    crate::metrics::ingest_backlog(api.backlog.len());
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
        assert!(matches!(parse_events(b"[{\"type\""), Err(ApiError::InvalidArgument(_))));
        let field = |body: String| match parse_events(body.as_bytes()) {
            Err(ApiError::ValidationFailed { errors, .. }) => errors[0].field.clone(),
            other => panic!("{other:?}"),
        };
        let late = one.replace("\"time\":1", "\"time\":\"soon\"");
        assert_eq!(field(late.clone()), "time");
        assert_eq!(field(format!("[{one},{late}]")), "[1].time");
        assert_eq!(field(r#"[{"type":"mood"}]"#.into()), "[0].type");
        assert!(matches!(
            parse_events(b"{\"type\":\"nope\"}"),
            Err(ApiError::ValidationFailed { .. })
        ));
    }

    /// The fuzz target's entry point takes what the handlers take and
    /// refuses the rest as they do.
    #[test]
    fn fuzz_body_decodes_and_validates_each_body_as_its_handler() {
        let machine = "fb622681-3d62-413b-dc8a-c7515367464f";
        let good = [
            (
                BodyKind::Account,
                r#"{"login":"alice","email":"alice@example.com"}"#.to_string(),
            ),
            (
                BodyKind::Probe,
                format!(r#"{{"type":"machine-up","machine":"{machine}","contacts":["ops"]}}"#),
            ),
            (BodyKind::ProbeGroup, r#"{"contacts":["email"],"hold":"2m"}"#.into()),
            (
                BodyKind::Contact,
                r#"{"medium":"webhook","address":"https://example.com/hook"}"#.into(),
            ),
            (BodyKind::MaintenanceWindow, r#"{"end":"2h","all":true}"#.into()),
            (BodyKind::AlarmAction, "action=close".into()),
            (BodyKind::ServerMachines, format!(r#"[{{"uuid":"{machine}"}}]"#)),
        ];
        for (kind, body) in good {
            fuzz_body(kind, body.as_bytes()).unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        }
        let refused = |kind, body: &str| fuzz_body(kind, body.as_bytes()).unwrap_err().code();
        assert_eq!(refused(BodyKind::Account, r#"{"login":"alice"}"#), "ValidationFailed");
        assert_eq!(
            refused(BodyKind::Probe, r#"{"type":"machine-up","machine":"web7"}"#),
            "ValidationFailed"
        );
        assert_eq!(
            refused(BodyKind::ProbeGroup, r#"{"contacts":["sms"]}"#),
            "ValidationFailed"
        );
        assert_eq!(
            refused(BodyKind::Contact, r#"{"medium":"pigeon","address":"x"}"#),
            "ValidationFailed"
        );
        assert_eq!(
            refused(BodyKind::MaintenanceWindow, r#"{"end":"2h"}"#),
            "ValidationFailed"
        );
        assert_eq!(refused(BodyKind::AlarmAction, "action="), "MissingParameter");
        assert_eq!(refused(BodyKind::ServerMachines, "[{"), "InvalidArgument");
    }

    /// Found by the `events` fuzz target: serde_json's default float
    /// parsing is off by one ulp for some numbers, so a probe event's
    /// `data.value` changed each time the event was stored and read back.
    #[test]
    fn a_parsed_event_serialised_again_parses_equal() {
        let body = r#"{"type":"probe","v":1,"user":"930896af-bf8c-48d4-885c-6573a94b1853","probeUuid":"6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b14","clear":false,"data":{"message":"m","value":919999999999992233720368547758079990},"uuid":"6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b15","time":1714564800123}"#;
        let events = parse_events(body.as_bytes()).unwrap();
        let again = parse_events(&serde_json::to_vec(&events).unwrap()).unwrap();
        assert_eq!(again, events);
    }

    /// A time at the ends of `i64` made `POST /events` overflow when it
    /// aged the event (`now - time`): refused at the edge instead, naming it.
    #[test]
    fn an_event_time_outside_1970_to_9999_is_refused_naming_it() {
        let one = r#"{"type":"server","uuid":"6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11","time":1,"relay":"6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11","server":"6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11","event":"heartbeat"}"#;
        let at = |time: &str| one.replace("\"time\":1", &format!("\"time\":{time}"));
        for time in ["-9223372036854775808", "-1", "253402300800000", "9223372036854775807"] {
            let field = |body: String| match parse_events(body.as_bytes()) {
                Err(ApiError::ValidationFailed { errors, .. }) => errors[0].field.clone(),
                other => panic!("{time}: {other:?}"),
            };
            assert_eq!(field(at(time)), "time");
            assert_eq!(field(format!("[{one},{}]", at(time))), "[1].time");
        }
        for time in ["0", "1714564800123", "253402300799999"] {
            assert_eq!(
                parse_events(at(time).as_bytes()).unwrap()[0].time(),
                time.parse::<i64>().unwrap()
            );
        }
    }

    #[test]
    fn events_older_than_the_retention_are_dropped_and_stale_probe_events_refused() {
        let max_age = Duration::from_secs(300);
        let retention = Duration::from_secs(3600);
        let now = 10_000_000;
        let machine = |age_ms: i64| {
            serde_json::from_value::<Event>(serde_json::json!({
                "type": "machine", "uuid": Uuid::new_v4(), "time": now - age_ms, "relay": Uuid::nil(),
                "machine": Uuid::nil(), "server": Uuid::nil(), "newState": "running", "up": true,
            }))
            .unwrap()
        };
        let probe = |age_ms: i64| {
            serde_json::from_value::<Event>(serde_json::json!({
                "type": "probe", "v": 1, "user": Uuid::nil(), "probeUuid": Uuid::nil(), "clear": false,
                "data": { "message": "disk full" }, "uuid": Uuid::new_v4(), "time": now - age_ms,
            }))
            .unwrap()
        };
        let admit = |e: Event| admission(&e, now, max_age, retention);
        assert_eq!(admit(machine(0)), Admission::Taken);
        assert_eq!(admit(machine(-60_000)), Admission::Taken, "a relay's clock ahead");
        assert_eq!(admit(machine(600_000)), Admission::Taken, "a late machine event");
        assert_eq!(admit(machine(3_600_000)), Admission::Taken, "the retention itself");
        assert_eq!(admit(machine(3_600_001)), Admission::Expired);
        assert_eq!(admit(probe(300_000)), Admission::Taken);
        assert_eq!(admit(probe(300_001)), Admission::Stale);
        assert_eq!(
            admit(probe(7_200_000)),
            Admission::Stale,
            "refused as Amon did, not dropped"
        );
    }

    #[test]
    fn events_of_another_version_are_refused_and_unknown_fields_ignored() {
        let machine = |extra: serde_json::Value| {
            let mut event = serde_json::json!({
                "type": "machine", "uuid": Uuid::new_v4(), "time": 1, "relay": Uuid::nil(),
                "machine": Uuid::nil(), "server": Uuid::nil(), "newState": "running", "up": true,
            });
            event
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            event
        };
        // No `v` (relays before it): version 1. A field we do not know: ignored.
        let events = parse_events(
            serde_json::json!([
                machine(serde_json::json!({})),
                machine(serde_json::json!({"v": 1, "zoneid": 7}))
            ])
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert!(events.iter().all(|e| e.version() == 1));
        // Version 2: refused, naming the event.
        let refused = parse_events(
            serde_json::json!([machine(serde_json::json!({})), machine(serde_json::json!({"v": 2}))])
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        match refused {
            ApiError::ValidationFailed { errors, .. } => {
                assert_eq!(errors[0].field, "[1].v");
                assert!(
                    errors[0].message.contains("event version 2 is not supported"),
                    "{}",
                    errors[0].message
                );
            }
            other => panic!("{other:?}"),
        }
        let single = parse_events(machine(serde_json::json!({"v": 0})).to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(single, ApiError::ValidationFailed { ref errors, .. } if errors[0].field == "v"),
            "{single:?}"
        );
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

    mod fuzz {
        //! Arbitrary bytes and arbitrary JSON never panic the events
        //! decoder: it answers events or a 4xx.
        use proptest::prelude::*;

        use super::super::*;

        fn json() -> impl Strategy<Value = serde_json::Value> {
            crate::fuzz_json::json_with(
                &[
                    "type", "uuid", "time", "relay", "server", "machine", "event", "data", "v",
                ],
                &["probe", "machine", "server", "6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11"],
            )
        }

        fn is_a_4xx(result: Result<Vec<Event>, ApiError>) -> bool {
            use actix_web::ResponseError as _;
            result.map_or_else(|e| e.status_code().is_client_error(), |_| true)
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_answer_events_or_a_4xx(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                prop_assert!(is_a_4xx(parse_events(&bytes)));
            }

            #[test]
            fn arbitrary_json_answers_events_or_a_4xx(value in json()) {
                prop_assert!(is_a_4xx(parse_events(value.to_string().as_bytes())));
            }
        }
    }
}
