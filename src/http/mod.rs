//! HTTP: the only module that knows the wire formats of the Master API (and
//! of the relay's admin and agent APIs), on both sides: the servers' routes
//! and the relay's client for `POST /events` and `GET|HEAD /agentprobes`.
//! Every server is started by [`serve`] (`server.rs`), which adds the
//! headers and the log line every response gets.
//!
//! Every handler reads its whole body (an unread body makes actix-web close
//! the connection) through [`read_json`], which bounds its size and turns bad
//! JSON into a clear `InvalidArgument`.

pub mod alarm_filter;
pub mod auth;
pub mod client;
pub mod error;
pub mod forward;
pub mod loglevel;
pub mod master;
pub mod relay_admin;
pub mod relay_agent;
pub mod server;
pub mod shapes;
pub mod ui;
#[cfg(target_os = "illumos")]
pub mod zone_socket;

use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

pub use error::{ApiError, FieldError};
pub use server::serve;

/// Largest request body we read (`413 RequestTooLarge` beyond).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// Reads the whole body, up to `limit` bytes (a handler's `web::Payload`,
/// or a middleware's taken payload).
pub async fn read_body<S>(mut payload: S, limit: usize) -> Result<web::Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>> + Unpin,
{
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

/// Reads and parses a JSON body into `T` (see [`decode_json`]).
pub async fn read_json<T: DeserializeOwned>(payload: web::Payload, limit: usize, what: &str) -> Result<T, ApiError> {
    let body = read_body(payload, limit).await?;
    decode_json(&body, what)
}

/// Decodes a JSON request body into `what`, the one place that says which
/// error a bad body gets (SPEC §8):
///
/// - empty, not JSON, not UTF-8, cut short, or nested deeper than
///   serde_json's recursion limit (128): `400 InvalidArgument`;
/// - well-formed JSON that does not fit `T` (a wrong type, an unknown or
///   missing field, a bad uuid): `422 ValidationFailed` naming the field by
///   its path in the body (`probes[2].machine`; `body` for the whole).
pub fn decode_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidArgument(format!(
            "request body is empty: expected {what} as json"
        )));
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    // Trailing characters after the value are a syntax error, as
    // `serde_json::from_slice` would say.
    let decoded = match serde_path_to_error::deserialize::<_, T>(&mut json) {
        Ok(value) => json.end().map(|()| value).map_err(|e| ("body".to_string(), e)),
        Err(e) => Err((field_name(&e), e.into_inner())),
    };
    decoded.map_err(|(field, e)| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::validation(vec![FieldError::invalid(&field, format!("invalid {what}: {e}"))])
        }
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof | serde_json::error::Category::Io => {
            ApiError::InvalidArgument(format!("invalid json body: {e}"))
        }
    })
}

/// The field a decoding error is about, by its path in the body: an unknown
/// field is named itself (serde reports it at its parent), the body as a
/// whole is `body`.
fn field_name(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let parent = if path == "." { None } else { Some(path) };
    let message = e.inner().to_string();
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    match (parent, unknown) {
        (Some(parent), Some(name)) if !parent.ends_with(&name) => format!("{parent}.{name}"),
        (Some(parent), _) => parent,
        (None, Some(name)) => name,
        (None, None) => "body".to_string(),
    }
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Window {
        start: u64,
        machines: Option<Vec<uuid::Uuid>>,
    }

    /// Status, code and the first field named.
    fn refusal(body: &[u8]) -> (u16, &'static str, String) {
        let e = decode_json::<Window>(body, "window").unwrap_err();
        let field = match &e {
            ApiError::ValidationFailed { errors, .. } => errors[0].field.clone(),
            _ => String::new(),
        };
        (actix_web::ResponseError::status_code(&e).as_u16(), e.code(), field)
    }

    #[test]
    fn malformed_json_is_invalid_argument_and_a_misfit_names_its_field() {
        let invalid = (400, "InvalidArgument", String::new());
        let unfit = |field: &str| (422, "ValidationFailed", field.to_string());
        assert_eq!(refusal(b""), invalid);
        assert_eq!(refusal(b"{\"start\": "), invalid);
        assert_eq!(refusal(b"{\"start\": 1} x"), invalid);
        // Into a struct the first `[` already does not fit; into free-form
        // json (a probe's `config`) the recursion limit stops it.
        assert_eq!(refusal("[".repeat(100_000).as_bytes()), unfit("[0]"));
        let deep = decode_json::<serde_json::Value>("[".repeat(100_000).as_bytes(), "config").unwrap_err();
        assert_eq!(deep.code(), "InvalidArgument", "{deep}");
        assert_eq!(refusal(b"{\"start\": \"\xff\"}"), invalid);
        assert_eq!(refusal(b"{\"start\": \"one\"}"), unfit("start"));
        assert_eq!(refusal(b"{\"start\": 1, \"end\": 2}"), unfit("end"));
        assert_eq!(refusal(b"{}"), unfit("body"));
        assert_eq!(
            refusal(b"{\"start\": 1, \"machines\": [\"web7\"]}"),
            unfit("machines[0]")
        );
        assert_eq!(refusal(b"[1, 2]"), unfit("[1]"));
    }

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
