//! The one way our HTTP servers are built ([`serve`]): the Master API, the
//! relay's admin and agent APIs (and the fake masters of unit tests) get the
//! same worker, keep-alive and shutdown settings and the same outermost
//! middleware ([`stamp`]), so a new server cannot forget them. The
//! middleware gives every response, errors included, what restify gave
//! Amon's clients: `Request-Id` (the client's `x-request-id` when it is
//! sane, else a new uuid), `Response-Time` (milliseconds) and
//! `Server: amon/<version>`; it runs the request in a span carrying the
//! request id, so every line logged while handling it carries `req_id`, and
//! writes one line per request.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::{App, HttpServer};
use tracing::Instrument as _;

/// The `Server` header of every response.
pub const SERVER: &str = concat!("amon/", env!("CARGO_PKG_VERSION"));

/// The request header a client may name its request with.
pub const X_REQUEST_ID: &str = "x-request-id";

/// The response header that says which request this answers.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// The response header with the milliseconds the request took.
pub const RESPONSE_TIME: HeaderName = HeaderName::from_static("response-time");

/// Longest client request id we repeat; a longer one is replaced.
const MAX_REQUEST_ID: usize = 64;

/// How one server differs from the others.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub workers: usize,
    /// How long an idle client connection is kept open.
    pub keep_alive: Duration,
    /// How long a stopping server waits for the requests in flight (and for
    /// idle connections to go).
    pub shutdown_timeout: Duration,
}

impl Shape {
    /// The Master API: two workers; idle connections kept longer than
    /// relays keep theirs (30 s, `http::client`), so the client, not the
    /// server, closes an idle one and a request never meets a connection
    /// being closed; time at stop for `POST /events` commits in flight.
    pub const MASTER: Shape = Shape {
        workers: 2,
        keep_alive: Duration::from_secs(75),
        shutdown_timeout: Duration::from_secs(5),
    };

    /// The relay's small loopback APIs (admin, agents): one worker,
    /// actix-web's usual keep-alive, and a quick stop.
    pub const RELAY: Shape = Shape {
        workers: 1,
        keep_alive: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(2),
    };
}

/// Starts an HTTP server called `name` (`master`, `relay-admin`,
/// `relay-agent`: the `server` field of its log lines) on an already-bound
/// listener, serving the apps `app` makes wrapped in [`stamp`]. Signals are
/// the supervision tree's business, not the server's.
pub fn serve<F, T, B>(name: &'static str, listener: TcpListener, shape: Shape, app: F) -> std::io::Result<Server>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    Ok(
        HttpServer::new(move || app().wrap(from_fn(move |req, next| stamp(name, req, next))))
            .workers(shape.workers)
            .keep_alive(shape.keep_alive)
            .disable_signals()
            .shutdown_timeout(shape.shutdown_timeout.as_secs())
            .listen(listener)?
            .run(),
    )
}

/// The middleware, outermost, so that it sees every answer. An inner
/// middleware's refusal (`auth::authorize`'s `401`) arrives here as an
/// error, not a response; it is rendered here, stamped, and passed on as an
/// error that renders as that response.
async fn stamp<B: MessageBody + 'static>(
    name: &'static str,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let started = tokio::time::Instant::now();
    let id = request_id(req.headers().get(X_REQUEST_ID).map(HeaderValue::as_bytes));
    // At error level so it exists whenever any line inside it could be
    // written; it writes no line of its own (see `telemetry`).
    let span = tracing::error_span!("request", server = name, req_id = %id);
    // Not the request itself: a clone would stop the router from matching it.
    let (method, url) = (req.method().clone(), req.uri().clone());
    let answer = next.call(req).instrument(span.clone()).await;
    let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let stamped = |headers: &mut HeaderMap| {
        if let Ok(value) = HeaderValue::from_str(&id) {
            headers.insert(REQUEST_ID, value);
        }
        headers.insert(RESPONSE_TIME, HeaderValue::from(took));
        headers.insert(header::SERVER, HeaderValue::from_static(SERVER));
    };
    let (answer, status) = match answer {
        Ok(mut response) => {
            stamped(response.headers_mut());
            let status = response.status();
            (Ok(response), status)
        }
        Err(e) => {
            let mut response = e.error_response();
            stamped(response.headers_mut());
            let status = response.status();
            (Err(InternalError::from_response(e, response).into()), status)
        }
    };
    let status = status.as_u16();
    span.in_scope(|| {
        if is_routine(&method, url.path()) && status < 400 {
            tracing::debug!(%method, %url, status, response_time = took, "handled request");
        } else {
            tracing::info!(%method, %url, status, response_time = took, "handled request");
        }
    });
    answer
}

/// The id of a request: the client's `x-request-id` when it is 1 to 64
/// printable ASCII characters without spaces (safe in a header and a log
/// line as it is), else a new uuid.
pub fn request_id(given: Option<&[u8]>) -> String {
    given
        .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(u8::is_ascii_graphic))
        .and_then(|id| std::str::from_utf8(id).ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Requests that pollers and scrapers repeat all day (health checks,
/// `HEAD /agentprobes`, Prometheus): their line is at debug level unless
/// they fail (SPEC §9).
fn is_routine(method: &Method, path: &str) -> bool {
    matches!(
        (method.as_str(), path),
        ("GET", "/ping") | ("HEAD", "/agentprobes") | ("GET", "/metrics")
    )
}

#[cfg(test)]
mod tests {
    use actix_web::{web, HttpResponse};

    use super::*;
    use crate::http::ApiError;

    #[test]
    fn a_sane_client_request_id_is_kept_anything_else_replaced() {
        assert_eq!(request_id(Some(b"abc-123")), "abc-123");
        let longest = "r".repeat(64);
        assert_eq!(request_id(Some(longest.as_bytes())), longest);
        let fresh = |given: Option<&[u8]>| {
            let id = request_id(given);
            assert!(
                uuid::Uuid::parse_str(&id).is_ok(),
                "{given:?} gave {id:?}, not a new uuid"
            );
        };
        fresh(None);
        fresh(Some(b""));
        fresh(Some("r".repeat(65).as_bytes()));
        fresh(Some(b"two words"));
        fresh(Some(b"tab\there"));
        fresh(Some(b"line\nbreak"));
        fresh(Some("caf\u{e9}".as_bytes()));
        fresh(Some(b"\xff\xfe"));
    }

    #[test]
    fn only_polls_are_routine() {
        assert!(is_routine(&Method::GET, "/ping"));
        assert!(is_routine(&Method::HEAD, "/agentprobes"));
        assert!(is_routine(&Method::GET, "/metrics"));
        assert!(!is_routine(&Method::GET, "/agentprobes"));
        assert!(!is_routine(&Method::POST, "/events"));
        assert!(!is_routine(&Method::GET, "/pub/alice/probes"));
    }

    /// Refuses every request, as the auth middleware refuses one.
    async fn refuse<B: MessageBody + 'static>(
        _req: ServiceRequest,
        _next: Next<B>,
    ) -> Result<ServiceResponse<B>, actix_web::Error> {
        Err(ApiError::Unauthorized("a bearer token is required".into()).into())
    }

    #[actix_rt::test]
    async fn every_answer_carries_the_headers_an_inner_middlewares_refusal_too() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = serve("test", listener, Shape::RELAY, || {
            App::new()
                .route("/ok", web::get().to(|| async { HttpResponse::Ok().finish() }))
                .service(
                    web::scope("/closed")
                        .wrap(from_fn(refuse))
                        .route("", web::get().to(|| async { HttpResponse::Ok().finish() })),
                )
        })
        .unwrap();
        let handle = server.handle();
        actix_rt::spawn(server);
        let client = awc::Client::default();
        let header = |response: &awc::ClientResponse<_>, name: &str| {
            let value = response.headers().get(name);
            value.map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
        };

        let ok = client
            .get(format!("{url}/ok"))
            .insert_header((X_REQUEST_ID, "abc-123"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(header(&ok, "request-id"), "abc-123");
        assert_eq!(header(&ok, "server"), SERVER);
        let took = header(&ok, "response-time");
        assert!(took.parse::<u64>().is_ok(), "whole milliseconds: {took:?}");

        let mut refused = client.get(format!("{url}/closed")).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        let id = header(&refused, "request-id");
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "a fresh id: {id:?}");
        assert!(header(&refused, "response-time").parse::<u64>().is_ok());
        assert_eq!(header(&refused, "server"), SERVER);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "Unauthorized", "the error's own body: {body}");

        let missing = client.get(format!("{url}/nowhere")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(header(&missing, "server"), SERVER);
        handle.stop(false).await;
    }
}
