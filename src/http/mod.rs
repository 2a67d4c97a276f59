//! HTTP: the only module that knows the wire formats of the Master API (and
//! of the relay's admin API), on both sides: the servers' routes and the
//! relay's client for `POST /events`.
//!
//! Every handler reads its whole body (an unread body makes actix-web close
//! the connection) through [`read_json`], which bounds its size and turns bad
//! JSON into a clear `InvalidArgument`.

pub mod client;
pub mod error;
pub mod master;
pub mod relay_admin;

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

pub use error::{ApiError, FieldError};

/// Largest request body we read (`413 RequestTooLarge` beyond).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// Reads the whole body, up to `limit` bytes.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::InvalidArgument(format!("cannot read request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::RequestTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads and parses a JSON body into `T`.
pub async fn read_json<T: DeserializeOwned>(payload: web::Payload, limit: usize) -> Result<T, ApiError> {
    let body = read_body(payload, limit).await?;
    if body.is_empty() {
        return Err(ApiError::InvalidArgument("request body is empty: expected json".into()));
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::InvalidArgument(format!("invalid json body: {e}")))
}

/// Reads and discards a body nobody needs, so the connection stays open.
pub async fn drain(payload: web::Payload) -> Result<(), ApiError> {
    read_body(payload, MAX_BODY).await.map(|_| ())
}
