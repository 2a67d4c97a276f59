//! The relay's admin API on loopback (like the original's port 4307):
//! `GET /ping`, `GET /state` (`?zones=true` for every zone's state),
//! `GET /metrics` and `GET|PUT /loglevel`.

use actix_web::{web, HttpResponse};

use super::ApiError;
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
}

pub fn configure(api: RelayAdminApi) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(api))
            .route("/ping", web::get().to(ping))
            .route("/state", web::get().to(state))
            .route("/metrics", web::get().to(metrics))
            .route("/loglevel", web::get().to(super::loglevel::get_loglevel))
            .route("/loglevel", web::put().to(super::loglevel::put_loglevel));
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
