//! `http` probes: a request to a URL every `interval`, judged by its status
//! (`statusCodes`), its body (`bodyMatch`) and how long it took
//! (`maxResponseTime`); `threshold` failed checks within `period` are a
//! fault, and the first good check after one is a clear. Fixes the
//! original's bugs: https is spoken over TLS (the original sent https URLs
//! over plain HTTP), a refused connection is a failed check (it crashed the
//! agent), a timeout abandons the request, the threshold is not off by one,
//! and credentials never appear in an event.

use std::time::Duration;

use awc::http::header::{HeaderName, HeaderValue};
use awc::http::{Method, Uri};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::matcher::Matcher;
use super::window::FaultTracker;
use super::{count, object, seconds, Observation, Report};
use crate::http::FieldError;
use crate::model::ProbeType;

const FIELDS: [&str; 13] = [
    "url",
    "method",
    "headers",
    "body",
    "username",
    "password",
    "statusCodes",
    "bodyMatch",
    "maxResponseTime",
    "timeout",
    "interval",
    "threshold",
    "period",
];

/// The original's defaults.
const DEFAULT_STATUS_CODES: [u16; 5] = [200, 201, 202, 203, 204];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(90);
const DEFAULT_PERIOD: Duration = Duration::from_secs(300);

/// At most this much of a body is read; `bodyMatch` sees only this much (a
/// probe watches a health page, not a download), and a longer body is not a
/// failure.
const BODY_LIMIT: usize = 1024 * 1024;
/// At most this many characters of the body go into a fault's details.
const SNIPPET_CHARS: usize = 512;

const USER_AGENT: &str = concat!("amon-agent/", env!("CARGO_PKG_VERSION"));

/// A parsed `http` probe config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// An `http` or `https` URL without credentials in it.
    pub url: Uri,
    /// GET (the default), HEAD or POST.
    pub method: Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Sent as the request body (with any method, as the original did).
    pub body: Option<String>,
    /// HTTP basic authentication, from `username` and `password`.
    pub basic_auth: Option<BasicAuth>,
    /// The statuses that are a good answer.
    pub status_codes: Vec<u16>,
    pub body_match: Option<Matcher>,
    /// A check that has no full answer within this long has failed; it stops
    /// waiting then rather than at `timeout`.
    pub max_response_time: Option<Duration>,
    /// How long a check waits for connecting, the answer and its body.
    pub timeout: Duration,
    pub interval: Duration,
    pub threshold: u32,
    pub period: Duration,
}

/// Credentials whose `Debug` does not show the password (configs are logged).
#[derive(Clone, PartialEq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

pub fn parse(config: &Value, errors: &mut Vec<FieldError>) -> Option<Config> {
    let map = object(config, errors)?;
    let before = errors.len();
    super::refuse_unknown(map, &FIELDS, ProbeType::Http, errors);
    let url = parse_url(map, errors);
    let method = match map.get("method") {
        None | Some(Value::Null) => Method::GET,
        Some(Value::String(m)) if m == "GET" => Method::GET,
        Some(Value::String(m)) if m == "HEAD" => Method::HEAD,
        Some(Value::String(m)) if m == "POST" => Method::POST,
        Some(other) => {
            errors.push(FieldError::invalid(
                "config.method",
                format!("config.method ({other}) is invalid, must be one of: GET, HEAD, POST"),
            ));
            Method::GET
        }
    };
    let headers = parse_headers(map, errors);
    let body = match map.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(b)) => Some(b.clone()),
        Some(other) => {
            errors.push(FieldError::invalid(
                "config.body",
                format!("config.body must be a string, not {other}"),
            ));
            None
        }
    };
    let basic_auth = parse_basic_auth(map, errors);
    let status_codes = parse_status_codes(map, errors);
    let body_match = match map.get("bodyMatch") {
        None | Some(Value::Null) => None,
        Some(value) => Matcher::parse(value, "config.bodyMatch", false, errors),
    };
    let max_response_time = match map.get("maxResponseTime") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_f64().filter(|ms| ms.is_finite() && *ms >= 1.0 && *ms <= 1e9) {
            Some(ms) => Some(Duration::from_secs_f64(ms / 1000.0)),
            None => {
                errors.push(FieldError::invalid(
                    "config.maxResponseTime",
                    format!("config.maxResponseTime must be milliseconds from 1 to 1000000000, not {value}"),
                ));
                None
            }
        },
    };
    let second = Duration::from_secs(1);
    let timeout = seconds(map, "timeout", DEFAULT_TIMEOUT, second, errors);
    let interval = seconds(map, "interval", DEFAULT_INTERVAL, second, errors);
    let period = seconds(map, "period", DEFAULT_PERIOD, second, errors);
    // 0 is accepted as 1, as the original coerced it.
    let threshold = count(map, "threshold", 1, 0..=1000, errors).max(1);
    if errors.len() > before {
        return None;
    }
    Some(Config {
        url: url?,
        method,
        headers,
        body,
        basic_auth,
        status_codes,
        body_match,
        max_response_time,
        timeout,
        interval,
        threshold,
        period,
    })
}

fn parse_url(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Uri> {
    let text = match map.get("url") {
        None | Some(Value::Null) => {
            errors.push(FieldError::missing("config.url"));
            return None;
        }
        Some(Value::String(text)) => text.trim(),
        Some(other) => {
            errors.push(FieldError::invalid(
                "config.url",
                format!("config.url must be a string, not {other}"),
            ));
            return None;
        }
    };
    let bad = |why: &str| FieldError::invalid("config.url", format!("config.url must be a valid http(s) url: {why}"));
    let uri: Uri = match text.parse() {
        Ok(uri) => uri,
        Err(e) => {
            errors.push(bad(&e.to_string()));
            return None;
        }
    };
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let authority = uri.authority();
    if !scheme_ok {
        errors.push(bad("it must start with http:// or https://"));
    } else if authority.is_none_or(|a| a.host().is_empty()) {
        errors.push(bad("it has no host"));
    } else if authority.is_some_and(|a| a.as_str().contains('@')) {
        // It would end up in every event's message.
        errors.push(bad(
            "put credentials in config.username and config.password, not in the url",
        ));
    } else {
        return Some(uri);
    }
    None
}

fn parse_headers(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    match map.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (name, value) in given {
                let field = format!("config.headers.{name}");
                let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                    errors.push(FieldError::invalid(
                        &field,
                        format!("{name:?} is not a valid header name"),
                    ));
                    continue;
                };
                match value.as_str().map(HeaderValue::from_str) {
                    Some(Ok(value)) => headers.push((header, value)),
                    _ => errors.push(FieldError::invalid(
                        &field,
                        format!("{field} must be a string that is a valid header value"),
                    )),
                }
            }
        }
        Some(other) => errors.push(FieldError::invalid(
            "config.headers",
            format!("config.headers must be an object of header names to strings, not {other}"),
        )),
    }
    headers
}

fn parse_basic_auth(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<BasicAuth> {
    let mut text = |key: &str| match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::invalid(
                &format!("config.{key}"),
                format!("config.{key} must be a string"),
            ));
            None
        }
    };
    let username = text("username");
    let password = text("password");
    match (username, password) {
        (Some(username), Some(password)) => Some(BasicAuth { username, password }),
        (None, None) => None,
        (Some(_), None) if !map.contains_key("password") => {
            errors.push(FieldError::missing("config.password"));
            None
        }
        (None, Some(_)) if !map.contains_key("username") => {
            errors.push(FieldError::missing("config.username"));
            None
        }
        _ => None,
    }
}

fn parse_status_codes(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Vec<u16> {
    let wrong = |errors: &mut Vec<FieldError>, value: &Value| {
        errors.push(FieldError::invalid(
            "config.statusCodes",
            format!("config.statusCodes must be a non-empty array of HTTP statuses (100 to 599), not {value}"),
        ));
        DEFAULT_STATUS_CODES.to_vec()
    };
    match map.get("statusCodes") {
        None | Some(Value::Null) => DEFAULT_STATUS_CODES.to_vec(),
        Some(value @ Value::Array(items)) if !items.is_empty() => {
            let codes: Option<Vec<u16>> = items
                .iter()
                .map(|item| item.as_u64().filter(|c| (100..=599).contains(c)).map(|c| c as u16))
                .collect();
            match codes {
                Some(codes) => codes,
                None => wrong(errors, value),
            }
        }
        Some(value) => wrong(errors, value),
    }
}

/// What one request came to, before it is judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Exchange {
    /// A full answer: its status, how long it took to its last byte read,
    /// and the first [`BODY_LIMIT`] bytes of its body.
    Answered {
        status: u16,
        elapsed: Duration,
        body: Vec<u8>,
    },
    /// No full answer within `maxResponseTime` (shorter than `timeout`).
    TooSlow,
    /// No full answer within `timeout`.
    TimedOut,
    /// No answer: connecting, TLS or the request failed (the error, said).
    Failed(String),
}

/// Why a check failed, in order (none: it passed).
pub fn judge(config: &Config, exchange: &Exchange) -> Vec<String> {
    let ms = |d: Duration| d.as_millis();
    match exchange {
        Exchange::Answered { status, elapsed, body } => {
            let mut reasons = Vec::new();
            if !config.status_codes.contains(status) {
                reasons.push(format!("status {status} not in {:?}", config.status_codes));
            }
            if let Some(max) = config.max_response_time.filter(|max| elapsed > max) {
                reasons.push(format!(
                    "response time {} ms over maxResponseTime {} ms",
                    ms(*elapsed),
                    ms(max)
                ));
            }
            if let Some(m) = &config.body_match {
                if !m.hits(&String::from_utf8_lossy(body)) {
                    let verb = if m.invert { "matches" } else { "does not match" };
                    reasons.push(format!("body {verb} {}", m.describe()));
                }
            }
            reasons
        }
        Exchange::TooSlow => vec![format!(
            "no answer within maxResponseTime {} ms",
            ms(config.max_response_time.unwrap_or_default())
        )],
        Exchange::TimedOut => vec![format!("no answer within timeout {} s", config.timeout.as_secs_f64())],
        Exchange::Failed(error) => vec![error.clone()],
    }
}

/// How a check names its target in messages: `<url> <method>`.
fn target(config: &Config) -> String {
    format!("{} {}", config.url, config.method)
}

/// The fault a failed check reports, `count` failures being in the period.
pub fn fault(config: &Config, exchange: &Exchange, reasons: &[String], count: usize) -> Observation {
    let reason = reasons.join("; ");
    let (status, elapsed, snippet) = match exchange {
        Exchange::Answered { status, elapsed, body } => {
            let text = String::from_utf8_lossy(body);
            let snippet: String = text.chars().take(SNIPPET_CHARS).collect();
            (json!(status), json!(elapsed.as_millis() as u64), json!(snippet))
        }
        _ => (Value::Null, Value::Null, Value::Null),
    };
    Observation::fault(
        format!("{}: {reason}", target(config)),
        Some(status.clone()),
        Some(json!({
            "url": config.url.to_string(),
            "method": config.method.as_str(),
            "status": status,
            "statusCodes": config.status_codes,
            "responseTime": elapsed,
            "reason": reason,
            "reasons": reasons,
            "bodySnippet": snippet,
            "count": count,
        })),
    )
}

/// Checks `config.url` every `interval` (the first at once, where the
/// original waited an interval) until dropped. Runs on an actix arbiter
/// (awc's connections belong to the thread that made them).
pub async fn run(config: Config, report: Report) -> anyhow::Result<()> {
    let deadline = config
        .max_response_time
        .map_or(config.timeout, |m| m.min(config.timeout));
    let client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(deadline).handshake_timeout(deadline))
        // The whole exchange is bounded by `deadline` below.
        .disable_timeout()
        // A redirect is an answer to judge (list 301 in statusCodes to accept
        // it), as the original saw it.
        .disable_redirects()
        .add_default_header((awc::http::header::USER_AGENT, USER_AGENT))
        .finish();
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = FaultTracker::new(config.threshold, config.period);
    loop {
        ticks.tick().await;
        let exchange = exchange(&client, &config, deadline).await;
        let reasons = judge(&config, &exchange);
        let observation = if reasons.is_empty() {
            if !tracker.success() {
                continue;
            }
            let took = match &exchange {
                Exchange::Answered { status, elapsed, .. } => {
                    format!(" (status {status} in {} ms)", elapsed.as_millis())
                }
                _ => String::new(),
            };
            Observation::clear(format!("{}: answering as expected again{took}", target(&config)))
        } else {
            match tracker.failure(Instant::now()) {
                Some(count) => fault(&config, &exchange, &reasons, count),
                None => continue,
            }
        };
        if report.send(observation).await.is_err() {
            anyhow::bail!("http probe {}: nobody takes its observations", target(&config));
        }
    }
}

/// One request, answered or not within `deadline`.
async fn exchange(client: &awc::Client, config: &Config, deadline: Duration) -> Exchange {
    let started = Instant::now();
    match tokio::time::timeout(deadline, answer(client, config)).await {
        Ok(Ok((status, body))) => Exchange::Answered {
            status,
            elapsed: started.elapsed(),
            body,
        },
        Ok(Err(error)) => Exchange::Failed(error),
        Err(_) if deadline < config.timeout => Exchange::TooSlow,
        Err(_) => Exchange::TimedOut,
    }
}

/// Sends the request and reads the answer's body, at most [`BODY_LIMIT`] of
/// it (the rest is left unread and the connection closed).
async fn answer(client: &awc::Client, config: &Config) -> Result<(u16, Vec<u8>), String> {
    let mut request = client.request(config.method.clone(), config.url.clone());
    for (name, value) in &config.headers {
        request = request.insert_header((name.clone(), value.clone()));
    }
    if let Some(auth) = &config.basic_auth {
        request = request.basic_auth(&auth.username, &auth.password);
    }
    let sent = match &config.body {
        Some(body) => request.send_body(body.clone()).await,
        None => request.send().await,
    };
    let mut response = sent.map_err(|e| format!("request failed: {}", chain(&e)))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < BODY_LIMIT {
        match response.next().await {
            Some(Ok(chunk)) => {
                let room = BODY_LIMIT - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Some(Err(e)) => return Err(format!("reading the body failed: {}", chain(&e))),
            None => break,
        }
    }
    Ok((status, body))
}

/// An error and its sources on one line (awc's connect errors say little on
/// their own).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let said = e.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    use tokio::sync::{mpsc, watch};

    use super::*;

    fn parsed(config: Value) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        parse(&config, &mut errors).ok_or_else(|| errors.into_iter().map(|e| e.field).collect())
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = parsed(json!({"url": "http://example.com/health"})).unwrap();
        assert_eq!(c.method, Method::GET);
        assert_eq!(c.status_codes, [200, 201, 202, 203, 204]);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.interval, Duration::from_secs(90));
        assert_eq!(c.period, Duration::from_secs(300));
        assert_eq!(c.threshold, 1);
        assert_eq!((c.body_match, c.max_response_time, c.basic_auth), (None, None, None));
    }

    #[test]
    fn every_field_is_read() {
        let c = parsed(json!({
            "url": "https://example.com:8443/x?y=1",
            "method": "POST",
            "headers": {"X-Probe": "amon"},
            "body": "{}",
            "username": "u",
            "password": "secret",
            "statusCodes": [200, 301],
            "bodyMatch": {"pattern": "ok", "invert": true},
            "maxResponseTime": 250,
            "timeout": "5s",
            "interval": 60,
            "threshold": 0,
            "period": "10m",
        }))
        .unwrap();
        assert_eq!(c.url.to_string(), "https://example.com:8443/x?y=1");
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.headers[0].0.as_str(), "x-probe");
        assert_eq!(c.body.as_deref(), Some("{}"));
        assert_eq!(c.status_codes, [200, 301]);
        assert!(c.body_match.as_ref().unwrap().invert);
        assert_eq!(c.max_response_time, Some(Duration::from_millis(250)));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.threshold, 1, "0 means 1, as in the original");
        assert_eq!(c.period, Duration::from_secs(600));
        let logged = format!("{c:?}");
        assert!(!logged.contains("secret"), "{logged}");
    }

    #[test]
    fn each_wrong_field_is_named() {
        let fields = |config: Value| parsed(config).unwrap_err();
        let url = "http://example.com/";
        assert_eq!(fields(json!({})), ["config.url"]);
        assert_eq!(fields(json!(null)), ["config"]);
        for bad in [
            json!("ftp://example.com/"),
            json!("http://"),
            json!("not a url"),
            json!(7),
        ] {
            assert_eq!(fields(json!({ "url": bad })), ["config.url"], "{bad}");
        }
        assert_eq!(fields(json!({"url": "http://u:p@example.com/"})), ["config.url"]);
        assert_eq!(
            fields(json!({"url": url, "method": "DELETE", "flavour": 1})),
            ["config.flavour", "config.method"]
        );
        assert_eq!(fields(json!({"url": url, "headers": ["a"]})), ["config.headers"]);
        assert_eq!(
            fields(json!({"url": url, "headers": {"ok": "1", "bad name": "x", "n": 1}})),
            ["config.headers.bad name", "config.headers.n"]
        );
        assert_eq!(fields(json!({"url": url, "body": {}})), ["config.body"]);
        for bad in [json!([]), json!(["200"]), json!([99]), json!(200)] {
            assert_eq!(
                fields(json!({"url": url, "statusCodes": bad})),
                ["config.statusCodes"],
                "{bad}"
            );
        }
        assert_eq!(
            fields(json!({"url": url, "bodyMatch": {}})),
            ["config.bodyMatch.pattern"]
        );
        for bad in [json!("fast"), json!(0), json!(-5)] {
            assert_eq!(
                fields(json!({"url": url, "maxResponseTime": bad})),
                ["config.maxResponseTime"]
            );
        }
        assert_eq!(
            fields(json!({"url": url, "timeout": "x", "interval": 0, "period": [], "threshold": -1})),
            ["config.timeout", "config.interval", "config.period", "config.threshold"]
        );
        assert_eq!(fields(json!({"url": url, "username": "u"})), ["config.password"]);
        assert_eq!(fields(json!({"url": url, "password": 1})), ["config.password"]);
    }

    fn config(url: &str) -> Config {
        Config {
            url: url.parse().unwrap(),
            method: Method::GET,
            headers: Vec::new(),
            body: None,
            basic_auth: None,
            status_codes: vec![200],
            body_match: None,
            max_response_time: None,
            timeout: Duration::from_secs(30),
            interval: Duration::from_millis(20),
            threshold: 1,
            period: Duration::from_secs(60),
        }
    }

    fn matcher(spec: Value) -> Option<Matcher> {
        Some(Matcher::parse(&spec, "config.bodyMatch", false, &mut Vec::new()).unwrap())
    }

    fn answered(status: u16, ms: u64, body: &str) -> Exchange {
        Exchange::Answered {
            status,
            elapsed: Duration::from_millis(ms),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_check_fails_on_status_time_and_body() {
        let mut c = config("http://x/");
        assert!(judge(&c, &answered(200, 5000, "anything")).is_empty());
        assert_eq!(judge(&c, &answered(500, 1, "")), ["status 500 not in [200]"]);
        c.max_response_time = Some(Duration::from_millis(100));
        c.body_match = matcher(json!({"pattern": "ok"}));
        assert!(judge(&c, &answered(200, 100, "all ok")).is_empty());
        assert_eq!(
            judge(&c, &answered(503, 101, "down")),
            [
                "status 503 not in [200]",
                "response time 101 ms over maxResponseTime 100 ms",
                "body does not match /ok/"
            ]
        );
        c.body_match = matcher(json!({"pattern": "error", "flags": "i", "invert": true}));
        assert!(judge(&c, &answered(200, 1, "fine")).is_empty());
        assert_eq!(
            judge(&c, &answered(200, 1, "ERROR")),
            ["body matches /error/i (inverted)"]
        );
        assert_eq!(
            judge(&c, &Exchange::TooSlow),
            ["no answer within maxResponseTime 100 ms"]
        );
        assert_eq!(judge(&c, &Exchange::TimedOut), ["no answer within timeout 30 s"]);
        let refused = Exchange::Failed("request failed: connection refused".into());
        assert_eq!(judge(&c, &refused), ["request failed: connection refused"]);
    }

    #[test]
    fn a_fault_names_the_url_and_the_reason_and_bounds_the_body() {
        let c = config("http://x/");
        let exchange = answered(500, 12, &"e".repeat(10_000));
        let reasons = judge(&c, &exchange);
        let o = fault(&c, &exchange, &reasons, 3);
        assert_eq!(o.message, "http://x/ GET: status 500 not in [200]");
        assert!(!o.clear);
        assert_eq!(o.value, Some(json!(500)));
        let details = o.details.unwrap();
        assert_eq!(details["status"], 500);
        assert_eq!(details["responseTime"], 12);
        assert_eq!(details["reason"], "status 500 not in [200]");
        assert_eq!(details["count"], 3);
        assert_eq!(details["bodySnippet"].as_str().unwrap().len(), SNIPPET_CHARS);
        let o = fault(&c, &Exchange::TimedOut, &judge(&c, &Exchange::TimedOut), 1);
        assert_eq!(o.value, Some(Value::Null));
        assert_eq!(o.details.unwrap()["responseTime"], Value::Null);
    }

    /// What the test server answers at `/`.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mode {
        Ok,
        Error,
        /// Holds the answer until the mode changes.
        Slow,
        WrongBody,
    }

    struct Server {
        url: String,
        mode: watch::Sender<Mode>,
        served: Arc<AtomicUsize>,
        handle: actix_web::dev::ServerHandle,
    }

    async fn answer_as(mode: web::Data<watch::Receiver<Mode>>, served: web::Data<AtomicUsize>) -> HttpResponse {
        served.fetch_add(1, Ordering::SeqCst);
        let mut mode = mode.get_ref().clone();
        let now = *mode.borrow_and_update();
        match now {
            Mode::Ok => HttpResponse::Ok().body("status: ok"),
            Mode::Error => HttpResponse::InternalServerError().body("status: broken"),
            Mode::WrongBody => HttpResponse::Ok().body("maintenance"),
            Mode::Slow => {
                // Bounded, so the server stops even if the test fails.
                let _ = tokio::time::timeout(Duration::from_secs(60), mode.wait_for(|m| *m != Mode::Slow)).await;
                HttpResponse::Ok().body("status: ok, late")
            }
        }
    }

    /// Checks what `every_request_field_is_sent` sends.
    async fn echo(req: HttpRequest, body: web::Bytes) -> HttpResponse {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let expected = req.method() == Method::POST
            && header("x-probe") == "amon"
            // "u:secret" in base64.
            && header("authorization") == "Basic dTpzZWNyZXQ="
            && header("user-agent").starts_with("amon-agent/")
            && body.as_ref() == b"ping";
        if expected {
            HttpResponse::Ok().body("echo ok")
        } else {
            HttpResponse::BadRequest().body(format!("{:?} {body:?}", req.headers()))
        }
    }

    fn serve() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (mode, watching) = watch::channel(Mode::Ok);
        let watching = web::Data::new(watching);
        let served = web::Data::new(AtomicUsize::new(0));
        let counter = served.clone().into_inner();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(watching.clone())
                .app_data(served.clone())
                .route(
                    "/big",
                    web::get().to(|| async { HttpResponse::Ok().body(vec![b'x'; 3 * BODY_LIMIT]) }),
                )
                .route("/echo", web::post().to(echo))
                .default_service(web::to(answer_as))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Server {
            url,
            mode,
            served: counter,
            handle,
        }
    }

    /// Waits (generously) for the next observation.
    async fn next(rx: &mut mpsc::Receiver<Observation>) -> Observation {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("an observation within 20 s")
            .expect("the probe runs")
    }

    /// Waits for a fault whose message holds `text`, skipping faults of an
    /// earlier phase still on their way; a clear on the way is a bug.
    async fn fault_saying(rx: &mut mpsc::Receiver<Observation>, text: &str) -> Observation {
        loop {
            let o = next(rx).await;
            assert!(!o.clear, "no clear while failing: {o:?}");
            if o.message.contains(text) {
                return o;
            }
        }
    }

    /// Waits until the server has answered `n` more requests.
    async fn served_more(server: &Server, n: usize) {
        let target = server.served.load(Ordering::SeqCst) + n;
        tokio::time::timeout(Duration::from_secs(20), async {
            while server.served.load(Ordering::SeqCst) < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the probe keeps checking");
    }

    #[actix_rt::test]
    async fn a_500_a_slow_answer_and_a_wrong_body_are_faults_and_recovery_clears_once() {
        let server = serve();
        let mut c = config(&server.url);
        // Small against a server that holds its answer until told, large
        // against a loaded machine's good answers.
        c.max_response_time = Some(Duration::from_secs(2));
        c.body_match = matcher(json!({"pattern": "ok"}));
        let (tx, mut rx) = mpsc::channel(4);
        let probe = actix_rt::spawn(run(c, tx));

        served_more(&server, 3).await;
        assert!(rx.try_recv().is_err(), "good answers are not reported");

        server.mode.send_replace(Mode::Error);
        let o = fault_saying(&mut rx, "status 500").await;
        assert_eq!(o.message, format!("{} GET: status 500 not in [200]", server.url));
        assert_eq!(o.value, Some(json!(500)));
        assert_eq!(o.details.as_ref().unwrap()["bodySnippet"], "status: broken");

        server.mode.send_replace(Mode::Slow);
        let o = fault_saying(&mut rx, "maxResponseTime").await;
        assert_eq!(
            o.message,
            format!("{} GET: no answer within maxResponseTime 2000 ms", server.url)
        );

        server.mode.send_replace(Mode::WrongBody);
        let o = fault_saying(&mut rx, "body").await;
        assert_eq!(o.message, format!("{} GET: body does not match /ok/", server.url));

        server.mode.send_replace(Mode::Ok);
        let clear = loop {
            let o = next(&mut rx).await;
            if o.clear {
                break o;
            }
        };
        let expected = format!("{} GET: answering as expected again (status 200 in ", server.url);
        assert!(clear.message.starts_with(&expected), "{clear:?}");
        served_more(&server, 3).await;
        assert!(rx.try_recv().is_err(), "exactly one clear, then nothing");

        probe.abort();
        server.handle.stop(false).await;
    }

    #[actix_rt::test]
    async fn a_refused_connection_is_a_failure_and_the_threshold_is_not_off_by_one() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let mut c = config(&url);
        c.threshold = 2;
        let (tx, mut rx) = mpsc::channel(4);
        let probe = actix_rt::spawn(run(c, tx));
        let o = next(&mut rx).await;
        assert!(o.message.starts_with(&format!("{url} GET: request failed")), "{o:?}");
        // The first failure was not reported, the second was (the original
        // needed threshold + 1).
        assert_eq!(o.details.unwrap()["count"], 2);
        probe.abort();
    }

    /// https is spoken as TLS: against a plain HTTP server the handshake
    /// fails (the original sent https URLs over plain HTTP and succeeded).
    #[actix_rt::test]
    async fn https_is_tls() {
        let server = serve();
        let url = server.url.replacen("http://", "https://", 1);
        let (tx, mut rx) = mpsc::channel(4);
        let probe = actix_rt::spawn(run(config(&url), tx));
        let o = next(&mut rx).await;
        assert!(o.message.starts_with(&format!("{url} GET: request failed")), "{o:?}");
        probe.abort();
        server.handle.stop(false).await;
    }

    #[actix_rt::test]
    async fn every_request_field_is_sent_and_a_big_body_is_read_only_so_far() {
        let server = serve();
        let client = awc::Client::default();
        let mut c = config(&format!("{}echo", server.url));
        c.method = Method::POST;
        c.headers = vec![(HeaderName::from_static("x-probe"), HeaderValue::from_static("amon"))];
        c.body = Some("ping".into());
        c.basic_auth = Some(BasicAuth {
            username: "u".into(),
            password: "secret".into(),
        });
        let client_with_agent = awc::Client::builder()
            .add_default_header((awc::http::header::USER_AGENT, USER_AGENT))
            .finish();
        let (status, body) = answer(&client_with_agent, &c).await.unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (200, b"echo ok".as_slice()),
            "{}",
            String::from_utf8_lossy(&body)
        );

        let c = config(&format!("{}big", server.url));
        let (status, body) = answer(&client, &c).await.unwrap();
        assert_eq!((status, body.len()), (200, BODY_LIMIT));

        let mut c = config(&server.url);
        c.method = Method::HEAD;
        let (status, body) = answer(&client, &c).await.unwrap();
        assert_eq!((status, body.len()), (200, 0));
        server.handle.stop(false).await;
    }
}
