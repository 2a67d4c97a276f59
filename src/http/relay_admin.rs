//! The relay's admin API on loopback (like the original's port 4307):
//! `GET /ping`, `GET /state` (`?zones=true` for every zone's state),
//! `POST /state?action=syncprobes` (fetch the agent probes from the master
//! now), `GET /metrics` and `GET|PUT /loglevel`.

use actix_web::{web, HttpResponse};

use super::{drain, not_found, ApiError};
use crate::actors::agent_probes::{AgentProbeCache, RefreshAgentProbes};
use crate::actors::relay_link::{GetLinkState, RelayLink};
use crate::actors::supervisor::{GetChildren, Named, Supervisor};
use crate::actors::zone_watcher::{GetDispatcherState, ZoneDispatcher};

#[derive(Clone)]
pub struct RelayAdminApi {
    pub server_uuid: uuid::Uuid,
    pub dispatcher: Named<ZoneDispatcher>,
    pub link: Named<RelayLink>,
    /// The relay's supervisor: its children's restarts (the zone source's
    /// above all) are shown in `/state`.
    pub supervisor: Named<Supervisor>,
    /// The agent probe cache, which `syncprobes` refreshes.
    pub agent_probes: Named<AgentProbeCache>,
}

pub fn configure(api: RelayAdminApi) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(api))
            .route("/ping", web::get().to(ping))
            .route("/state", web::get().to(state))
            .route("/state", web::post().to(act))
            .route("/metrics", web::get().to(metrics))
            .route("/loglevel", web::get().to(super::loglevel::get_loglevel))
            .route("/loglevel", web::put().to(super::loglevel::put_loglevel))
            .default_service(web::to(not_found));
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}

async fn ping(api: web::Data<RelayAdminApi>) -> HttpResponse {
    let status = if api.dispatcher.get().is_some() && api.link.get().is_some() {
        "OK"
    } else {
        "initializing"
    };
    HttpResponse::Ok().json(serde_json::json!({ "ping": "pong", "status": status }))
}

#[derive(serde::Deserialize)]
struct StateQuery {
    /// Include every zone's state (asks each watcher).
    zones: Option<bool>,
}

async fn state(api: web::Data<RelayAdminApi>, query: web::Query<StateQuery>) -> Result<HttpResponse, ApiError> {
    let unavailable = |what: &str| ApiError::ServiceUnavailable(format!("{what} is not running"));
    let zones = api
        .dispatcher
        .get()
        .ok_or_else(|| unavailable("zone dispatcher"))?
        .send(GetDispatcherState {
            states: query.zones.unwrap_or(false),
        })
        .await
        .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
    let link = api
        .link
        .get()
        .ok_or_else(|| unavailable("relay link"))?
        .send(GetLinkState)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
    let children = match api.supervisor.get() {
        Some(supervisor) => supervisor.send(GetChildren).await.unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "serverUuid": api.server_uuid,
        "zones": zones,
        "link": link,
        "children": children,
    })))
}

#[derive(serde::Deserialize)]
struct ActionQuery {
    action: Option<String>,
}

/// `POST /state?action=syncprobes`: the original relay's way to push probe
/// changes to agents now rather than at the next poll. `202` once a
/// refresh that started after the request has fetched the list from the
/// master (as the original answered after its round); `503` if the master
/// did not answer (the cached list is kept). No action: `400
/// MissingParameter`; another: `400 InvalidArgument`, with the original's
/// messages (it answered 409 for both, restify's old status for them).
async fn act(
    api: web::Data<RelayAdminApi>,
    query: web::Query<ActionQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    drain(payload).await?;
    match query.action.as_deref() {
        None => Err(ApiError::MissingParameter("\"action\" is required".into())),
        Some("syncprobes") => {
            let cache = api
                .agent_probes
                .get()
                .ok_or_else(|| ApiError::ServiceUnavailable("the agent probe cache is not running".into()))?;
            cache
                .send(RefreshAgentProbes)
                .await
                .map_err(|e| ApiError::ServiceUnavailable(format!("agent probe cache: {e}")))?
                .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
            Ok(HttpResponse::Accepted().finish())
        }
        Some(other) => Err(ApiError::InvalidArgument(format!("{other:?} is not a valid action"))),
    }
}
