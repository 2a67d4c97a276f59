//! `GET|PUT /loglevel`: the log filter of the running process, on the
//! Master API (operators) and on the relay's admin API (loopback). The
//! body is `{"level": "debug"}`; any filter `AMON_LOG` takes works
//! (`amon::actors::router=debug,info`). The change is logged once.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{read_json, ApiError};
use crate::telemetry::{self, FilterError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelBody {
    level: String,
}

/// Small: a filter is a line of text.
const LIMIT: usize = 4096;

pub async fn get_loglevel() -> Result<HttpResponse, ApiError> {
    let level = telemetry::filter().ok_or_else(|| ApiError::ServiceUnavailable("logging is not set up".into()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "level": level })))
}

pub async fn put_loglevel(payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body: LevelBody = read_json(payload, LIMIT, "a log level ({\"level\": \"debug\"})").await?;
    match telemetry::set_filter(&body.level) {
        Ok(level) => Ok(HttpResponse::Ok().json(serde_json::json!({ "level": level }))),
        Err(e @ FilterError::Invalid(..)) => Err(ApiError::InvalidArgument(e.to_string())),
        Err(e @ FilterError::NotInstalled) => Err(ApiError::ServiceUnavailable(e.to_string())),
    }
}
