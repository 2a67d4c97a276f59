//! HTTP: the only module that knows the wire formats of the Master API (and
//! of the relay's admin and agent APIs), on both sides: the servers' routes
//! and the relay's client for `POST /events` and `GET|HEAD /agentprobes`.
//!
//! Every handler reads its whole body (an unread body makes actix-web close
//! the connection) through [`read_json`], which bounds its size and turns bad
//! JSON into a clear `InvalidArgument`.

pub mod auth;
pub mod client;
pub mod error;
pub mod master;
pub mod relay_admin;
pub mod relay_agent;
#[cfg(target_os = "illumos")]
pub mod zone_socket;

use actix_web::{web, HttpRequest};
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

/// Answers a route nobody serves with `404 ResourceNotFound` (after reading
/// the body, so the connection stays open).
pub async fn not_found(req: HttpRequest, payload: web::Payload) -> Result<actix_web::HttpResponse, ApiError> {
    drain(payload).await?;
    Err(ApiError::ResourceNotFound(format!(
        "{} {} does not exist",
        req.method(),
        req.path()
    )))
}

/// The `Content-MD5` of a body (RFC 1864): the base64 of its MD5 digest.
/// Agent probe lists carry it so that pollers can ask "has it changed?"
/// with a `HEAD` and fetch the list only when it has.
pub fn content_md5(body: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_md5_is_base64_of_the_md5_digest() {
        // RFC 1321's empty-string vector, and a well-known sentence.
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(
            content_md5(b"The quick brown fox jumps over the lazy dog"),
            "nhB9nTcrtoJr2B01QqQZ1g=="
        );
        // What a master with no probes for an agent answers.
        assert_eq!(content_md5(b"[]"), "11FxOYiYfpMxmANj4kGJzg==");
    }
}
