//! Masters sharing one store: every master takes every request. What any
//! master can do itself it does (`POST /events` commits to the shared
//! store, whose leader's router reads it back; `GET /ping`, `/metrics`,
//! `/loglevel` and `GET /cluster` are about this process); everything else
//! (alarms, probes, maintenance, the web page…) goes to the actors of the
//! master that leads (`actors::cluster`), so a follower forwards it there,
//! whole, and hands back the answer. With no leader known yet: `503`, and
//! the client retries. Which is which is [`served_here`], pure.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName};
use actix_web::middleware::Next;
use actix_web::HttpResponse;

use super::{read_body, ApiError, MAX_BODY};
use crate::actors::cluster::ClusterView;

/// What a master sharing a store needs to forward requests: who leads, and
/// its HTTP worker's client (one per worker, so connections to the leader
/// are kept and reused). Given to the app as plain app data (per worker:
/// the client is not `Send`).
pub struct Forwarder {
    view: ClusterView,
    client: awc::Client,
}

impl Forwarder {
    pub fn new(view: ClusterView) -> Forwarder {
        Forwarder {
            view,
            client: awc::Client::builder().timeout(FORWARD_TIMEOUT).finish(),
        }
    }
}

/// How long a forwarded request may take at the leader.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a follower answers this request itself rather than forwarding it.
pub fn served_here(method: &str, path: &str) -> bool {
    matches!(
        (method, path),
        ("POST", "/events") | ("GET", "/ping") | ("GET", "/metrics") | ("GET", "/cluster") | (_, "/loglevel")
    )
}

/// Headers that belong to one connection, not to the request it carries
/// (RFC 9110, 7.6.1), and the length, which the forwarded body sets again.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::CONTENT_LENGTH,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// The middleware (outside the auth check: the leader checks the token of
/// what it is forwarded, and this master checks what it serves).
pub async fn forward(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let here = served_here(req.method().as_str(), req.path());
    let target = req.app_data::<Forwarder>().and_then(|f| {
        let view = f.view.get();
        (!view.leading && !here).then(|| (view, f.client.clone()))
    });
    let Some((view, client)) = target else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let body = {
        use actix_web::HttpMessage;
        read_body(req.take_payload(), MAX_BODY).await?
    };
    let Some(leader) = view.leader.filter(|l| l.id != view.me) else {
        return Err(ApiError::ServiceUnavailable(
            "no master leads the cluster yet (one takes over within cluster.lease); try again".into(),
        )
        .into());
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{}", leader.url.trim_end_matches('/'), path);
    let mut out = client.request(req.method().clone(), &url);
    for (name, value) in req.headers() {
        if !hop_by_hop(name) {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    let peer = req.connection_info().peer_addr().unwrap_or("").to_string();
    out = out.insert_header(("x-forwarded-for", peer));
    let answer = out.send_body(body).await;
    let mut answer = answer.map_err(|e| {
        ApiError::ServiceUnavailable(format!("the leading master at {} did not answer: {e}", leader.url))
    })?;
    let answer_body = answer
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("the leading master's answer was cut short: {e}")))?;
    let mut response = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            response.append_header((name.clone(), value.clone()));
        }
    }
    let response = response.body(answer_body);
    Ok(req.into_response(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_serves_ingest_and_what_is_about_itself_and_forwards_the_rest() {
        assert!(served_here("POST", "/events"));
        assert!(served_here("GET", "/ping"));
        assert!(served_here("GET", "/metrics"));
        assert!(served_here("GET", "/cluster"));
        assert!(served_here("PUT", "/loglevel"));
        assert!(!served_here("GET", "/events"));
        assert!(!served_here("GET", "/pub/alice/alarms"));
        assert!(!served_here("POST", "/pub/alice/probes"));
        assert!(!served_here("PUT", "/servers/x/machines"));
        assert!(!served_here("GET", "/ui/"));
        assert!(!served_here("GET", "/agentprobes"));
    }
}
