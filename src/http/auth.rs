//! Bearer-token auth for the Master API (SPEC §8): tokens from the config,
//! each with a role — `operator` (everything), `account:<uuid>` (only its own
//! `/pub/:account`), `relay` (only `/events` and `/agentprobes`). Without a
//! valid token: `401`; outside the role: `403`. `GET /ping` is always open
//! (health checks); the web page under `/ui` checks its own sessions. With `auth.open` nothing is checked (a loopback
//! standalone), and the startup log says so.
//!
//! Tokens are compared in constant time (as fixed-size digests, so neither
//! their content nor their length shows in the timing) and never logged.

use std::fmt;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use actix_web::HttpMessage;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use uuid::Uuid;

use super::{ApiError, MAX_BODY};
use crate::store::Store;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    Relay,
    Account(Uuid),
}

impl Role {
    /// `operator`, `relay` or `account:<uuid>`.
    pub fn parse(text: &str) -> Option<Role> {
        match text.trim() {
            "operator" => Some(Role::Operator),
            "relay" => Some(Role::Relay),
            other => other
                .strip_prefix("account:")
                .and_then(|uuid| Uuid::parse_str(uuid).ok())
                .map(Role::Account),
        }
    }
}

/// A configured token: only its digest is kept.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 16],
    pub role: Role,
}

impl Token {
    pub fn new(secret: &str, role: Role) -> Token {
        Token {
            digest: digest(secret),
            role,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

fn digest(secret: &str) -> [u8; 16] {
    Md5::digest(secret.as_bytes()).into()
}

/// Equal without an early exit: the time does not depend on where they differ.
fn same(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The auth settings the HTTP layer checks against.
#[derive(Clone, Debug)]
pub struct Auth {
    pub open: bool,
    pub tokens: Vec<Token>,
}

impl Auth {
    /// The role of a presented token, checking every configured token.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let presented = digest(presented);
        let mut found = None;
        for token in &self.tokens {
            if same(&token.digest, &presented) && found.is_none() {
                found = Some(token.role);
            }
        }
        found
    }
}

/// Whether `role` may make this request; `account_of` resolves a
/// `/pub/:account` segment (uuid or login) to the account's uuid.
async fn allowed(role: Role, method: &str, path: &str, store: &Store) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match role {
        Role::Operator => true,
        Role::Relay => matches!(
            (method, segments.as_slice()),
            ("POST", ["events"]) | ("GET" | "HEAD", ["agentprobes"]) | ("PUT", ["servers", _, "machines"])
        ),
        Role::Account(uuid) => match segments.as_slice() {
            ["pub", account, ..] => {
                if Uuid::parse_str(account).is_ok_and(|a| a == uuid) {
                    return true;
                }
                // A login: allowed only if it names this very account.
                matches!(store.get_account(account.to_string()).await, Ok(Some(a)) if a.uuid == uuid)
            }
            _ => false,
        },
    }
}

/// Reads and drops a request body we refuse, so the connection stays usable.
async fn drain(req: &mut ServiceRequest) {
    let mut payload = req.take_payload();
    let mut read = 0usize;
    while let Some(Ok(chunk)) = payload.next().await {
        read += chunk.len();
        if read > MAX_BODY {
            break;
        }
    }
}

/// The middleware: every Master API request but `GET /ping` passes here.
pub async fn authorize(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let auth = req.app_data::<web::Data<Auth>>().cloned();
    let store = req.app_data::<web::Data<Store>>().cloned();
    let (Some(auth), Some(store)) = (auth, store) else {
        return Err(ApiError::Internal("auth is not configured".into()).into());
    };
    // The web page (`/ui`) signs its viewers in with the same tokens and
    // keeps them in sessions of its own (`http::ui`).
    let page = req.path() == "/ui" || req.path().starts_with("/ui/");
    if auth.open || page || (req.method() == actix_web::http::Method::GET && req.path() == "/ping") {
        return next.call(req).await;
    }
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .map(String::from);
    let Some(role) = presented.as_deref().and_then(|t| auth.role_of(t)) else {
        drain(&mut req).await;
        let why = if presented.is_some() {
            "the bearer token is not valid"
        } else {
            "a bearer token is required (Authorization: Bearer <token>)"
        };
        return Err(ApiError::Unauthorized(why.into()).into());
    };
    let method = req.method().as_str().to_string();
    let path = req.path().to_string();
    if !allowed(role, &method, &path, &store).await {
        drain(&mut req).await;
        return Err(ApiError::Forbidden(format!("this token may not {method} {path}")).into());
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_tokens_match_only_themselves() {
        let account = Uuid::new_v4();
        assert_eq!(Role::parse("operator"), Some(Role::Operator));
        assert_eq!(Role::parse(&format!("account:{account}")), Some(Role::Account(account)));
        assert_eq!(Role::parse("account:bob"), None);
        let auth = Auth {
            open: false,
            tokens: vec![
                Token::new("s3cret-operator", Role::Operator),
                Token::new("relay-token", Role::Relay),
            ],
        };
        assert_eq!(auth.role_of("relay-token"), Some(Role::Relay));
        assert_eq!(auth.role_of("s3cret-operator"), Some(Role::Operator));
        assert_eq!(auth.role_of("s3cret-operato"), None);
        assert_eq!(auth.role_of(""), None);
        assert!(!format!("{auth:?}").contains("s3cret"), "tokens never show in Debug");
    }

    #[actix_rt::test]
    async fn roles_reach_only_their_paths() {
        let store = Store::for_test();
        let mine = Uuid::new_v4();
        store
            .create_account(
                crate::model::Account {
                    uuid: mine,
                    login: "alice".into(),
                    email: "a@example.com".into(),
                    operator: false,
                    attributes: Default::default(),
                },
                0,
            )
            .await
            .unwrap();
        let account = Role::Account(mine);
        assert!(allowed(account, "GET", &format!("/pub/{mine}/alarms"), &store).await);
        assert!(allowed(account, "GET", "/pub/alice/probes", &store).await);
        assert!(!allowed(account, "GET", "/pub/bob/probes", &store).await);
        assert!(!allowed(account, "GET", &format!("/pub/{}/probes", Uuid::new_v4()), &store).await);
        assert!(!allowed(account, "POST", "/maintenances", &store).await);
        assert!(!allowed(account, "POST", "/events", &store).await);
        assert!(allowed(Role::Relay, "POST", "/events", &store).await);
        assert!(allowed(Role::Relay, "HEAD", "/agentprobes", &store).await);
        assert!(allowed(Role::Relay, "PUT", &format!("/servers/{mine}/machines"), &store).await);
        assert!(!allowed(account, "PUT", &format!("/servers/{mine}/machines"), &store).await);
        assert!(!allowed(Role::Relay, "POST", "/pub/alice/maintenances", &store).await);
        assert!(!allowed(Role::Relay, "POST", "/maintenances", &store).await);
        assert!(allowed(Role::Operator, "POST", "/maintenances", &store).await);
    }
}
