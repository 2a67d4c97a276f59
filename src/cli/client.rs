//! A small client of the Master API for the command line: one request at a
//! time over awc, JSON in and out, the bearer token in `Authorization` (and
//! nowhere else: not in errors, not in `Debug`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use awc::http::Method;
use serde_json::Value;

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The largest response body we read (a big alarm list).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// A bearer token. It is sent and never shown: `Debug` hides it and there is
/// no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

impl FromStr for Token {
    type Err = String;

    fn from_str(text: &str) -> Result<Token, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        if text.chars().any(|c| c.is_control()) {
            return Err("the token contains control characters".into());
        }
        Ok(Token(text.to_string()))
    }
}

/// One request to the Master API.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    /// Path and query, e.g. `/pub/alice/alarms?state=open`.
    pub path: String,
    pub body: Option<Value>,
}

impl Request {
    pub fn get(path: impl Into<String>) -> Request {
        Request {
            method: Method::GET,
            path: path.into(),
            body: None,
        }
    }

    pub fn post(path: impl Into<String>, body: Option<Value>) -> Request {
        Request {
            method: Method::POST,
            path: path.into(),
            body,
        }
    }

    pub fn put(path: impl Into<String>, body: Value) -> Request {
        Request {
            method: Method::PUT,
            path: path.into(),
            body: Some(body),
        }
    }

    pub fn delete(path: impl Into<String>) -> Request {
        Request {
            method: Method::DELETE,
            path: path.into(),
            body: None,
        }
    }
}

/// One field the API found wrong (`422 ValidationFailed`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The master answered with an error.
    #[error("{}", api_error_text(message, code, errors))]
    Api {
        status: u16,
        code: String,
        message: String,
        errors: Vec<FieldError>,
    },
    /// No answer: connection refused, DNS, timeout.
    #[error("cannot reach the master at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is not what the Master API sends.
    #[error("{0}")]
    Protocol(String),
}

fn api_error_text(message: &str, code: &str, errors: &[FieldError]) -> String {
    let mut text = format!("{message} ({code})");
    for error in errors {
        text.push_str(&format!("\n  {}: {}", error.field, error.message));
    }
    text
}

impl ClientError {
    /// The error of a non-2xx answer: the API's `{code, message, errors}`,
    /// or what HTTP says when the body is not that.
    pub fn from_response(method: &Method, url: &str, status: u16, body: &[u8]) -> ClientError {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        match parsed {
            Some(v) if v.get("code").is_some_and(Value::is_string) => ClientError::Api {
                status,
                code: text(&v, "code").unwrap_or_default(),
                message: text(&v, "message").unwrap_or_else(|| format!("{method} {url} answered {status}")),
                errors: v
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|errors| {
                        errors
                            .iter()
                            .map(|e| FieldError {
                                field: text(e, "field").unwrap_or_default(),
                                message: text(e, "message").unwrap_or_else(|| e.to_string()),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            _ => {
                let body = String::from_utf8_lossy(body);
                let body = body.trim();
                let reason = awc::http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                let mut message = format!("{method} {url} answered {status} {reason}");
                if !body.is_empty() {
                    let short: String = body.chars().take(200).collect();
                    message.push_str(&format!(": {short}"));
                }
                ClientError::Protocol(message.trim_end().to_string())
            }
        }
    }

    /// The API's error code, if the master answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The Master API at one URL, as one caller (token) sees it.
pub struct Client {
    base: String,
    token: Option<Token>,
    http: awc::Client,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Must be called inside an actix system (awc needs its runtime).
    pub fn new(base: &str, token: Option<Token>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: awc::Client::builder().timeout(TIMEOUT).finish(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request: the JSON answer of a 2xx (`None` for an empty
    /// body, as 202 and 204 have), or the error.
    pub async fn send(&self, request: &Request) -> Result<Option<Value>, ClientError> {
        let url = format!("{}{}", self.base, request.path);
        let mut builder = self
            .http
            .request(request.method.clone(), &url)
            .insert_header(("Accept", "application/json"));
        if let Some(token) = &self.token {
            builder = builder.insert_header(("Authorization", token.header()));
        }
        let sent = match &request.body {
            Some(body) => builder.send_json(body).await,
            None => builder.send().await,
        };
        let mut response = sent.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body()
            .limit(MAX_RESPONSE)
            .await
            .map_err(|e| ClientError::Protocol(format!("{} {url}: cannot read the answer: {e}", request.method)))?;
        if !(200..300).contains(&status) {
            return Err(ClientError::from_response(&request.method, &url, status, &body));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("{} {url}: the answer is not JSON: {e}", request.method)))
    }

    /// [`Client::send`] for requests that must answer with JSON.
    pub async fn json(&self, request: &Request) -> Result<Value, ClientError> {
        self.send(request).await?.ok_or_else(|| {
            ClientError::Protocol(format!(
                "{} {}{} answered with an empty body",
                request.method, self.base, request.path
            ))
        })
    }
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved
/// characters stay as they are).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows() {
        let token: Token = "s3cret".parse().unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        assert_eq!(token.header(), "Bearer s3cret");
        assert!("  ".parse::<Token>().is_err());
        assert!("a\nb".parse::<Token>().is_err());
    }

    #[test]
    fn api_errors_read_as_message_and_code() {
        let body = br#"{"code":"ResourceNotFound","message":"no such alarm: 9"}"#;
        let e = ClientError::from_response(&Method::GET, "http://m/pub/a/alarms/9", 404, body);
        assert_eq!(e.to_string(), "no such alarm: 9 (ResourceNotFound)");
        assert_eq!(e.code(), Some("ResourceNotFound"));

        let body = br#"{"code":"ValidationFailed","message":"invalid window","errors":[{"field":"end","code":"Invalid","message":"end is before start"}]}"#;
        let e = ClientError::from_response(&Method::POST, "http://m/maintenances", 422, body);
        assert_eq!(
            e.to_string(),
            "invalid window (ValidationFailed)\n  end: end is before start"
        );

        let e = ClientError::from_response(&Method::GET, "http://m/x", 502, b"<html>bad gateway</html>");
        assert_eq!(
            e.to_string(),
            "GET http://m/x answered 502 Bad Gateway: <html>bad gateway</html>"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("alice"), "alice");
        assert_eq!(encode("on call/ops"), "on%20call%2Fops");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
