//! The relay's admin API on loopback (like the original's port 4307):
//! `GET /ping` and `GET /state`.

use actix_web::{web, HttpResponse};

use super::ApiError;
use crate::actors::relay_link::{GetLinkState, RelayLink};
use crate::actors::supervisor::Named;
use crate::actors::zone_watcher::{GetDispatcherState, ZoneDispatcher};

#[derive(Clone)]
pub struct RelayAdminApi {
    pub server_uuid: uuid::Uuid,
    pub dispatcher: Named<ZoneDispatcher>,
    pub link: Named<RelayLink>,
}

pub fn configure(api: RelayAdminApi) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(api))
            .route("/ping", web::get().to(ping))
            .route("/state", web::get().to(state));
    }
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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "serverUuid": api.server_uuid,
        "zones": zones,
        "link": link,
    })))
}
