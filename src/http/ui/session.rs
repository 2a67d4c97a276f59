//! Who is looking at the web page: sign-in turns a bearer token (the API's,
//! with its role) into a session, and the browser keeps only the session's
//! random id in an `HttpOnly`, `SameSite=Strict` cookie. The token itself is
//! never stored, put in a URL or logged; a session forgets its role after
//! [`SESSION_TTL`] of idleness, at sign-out, and when the master restarts
//! (sessions are in memory: signing in again is the cost of a restart).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use rand::RngCore;
use uuid::Uuid;

use crate::http::auth::Role;
use crate::model::EpochMs;

/// The cookie that carries the session id.
pub const COOKIE: &str = "amon_session";

/// How long a session lives without a request.
pub const SESSION_TTL: EpochMs = 12 * 3600 * 1000;

/// At most this many sessions are kept; signing in beyond it forgets the
/// one idle longest (a flood of sign-ins cannot grow the master's memory).
const MAX_SESSIONS: usize = 10_000;

/// The signed-in viewer of a page: what the token may see, and how the page
/// names it (`operator`, `account alice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub role: Role,
    pub name: String,
}

impl Viewer {
    /// The viewer of a standalone with `auth.open`: everything, unsigned.
    pub fn open() -> Viewer {
        Viewer {
            role: Role::Operator,
            name: "operator (auth.open: no sign-in)".into(),
        }
    }

    /// The account this viewer is limited to (`None`: an operator sees all).
    pub fn account(&self) -> Option<Uuid> {
        match self.role {
            Role::Account(uuid) => Some(uuid),
            _ => None,
        }
    }

    /// Whether this viewer may see (and act on) what belongs to `account`.
    pub fn may_see(&self, account: Uuid) -> bool {
        self.account().is_none_or(|own| own == account)
    }
}

struct Session {
    viewer: Viewer,
    last_used: EpochMs,
}

/// The live sessions, by id. Cheap to clone; shared by every HTTP worker.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

impl Sessions {
    /// Opens a session for `viewer` and returns its id: 32 random bytes,
    /// URL-safe base64, unguessable.
    pub fn open(&self, viewer: Viewer, now: EpochMs) -> String {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut sessions = self.lock();
        sessions.retain(|_, s| now - s.last_used < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), Session { viewer, last_used: now });
        id
    }

    /// The viewer of a live session, which this request keeps alive.
    pub fn viewer(&self, id: &str, now: EpochMs) -> Option<Viewer> {
        let mut sessions = self.lock();
        let session = sessions.get_mut(id)?;
        if now - session.last_used >= SESSION_TTL {
            sessions.remove(id);
            return None;
        }
        session.last_used = now.max(session.last_used);
        Some(session.viewer.clone())
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the map leaves it consistent (every change
        // is one insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Viewer {
        Viewer {
            role: Role::Account(Uuid::from_u128(1)),
            name: "account alice".into(),
        }
    }

    #[test]
    fn a_session_id_is_random_and_carries_its_viewer() {
        let sessions = Sessions::default();
        let a = sessions.open(alice(), 0);
        let b = sessions.open(alice(), 0);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in base64 without padding");
        assert_eq!(sessions.viewer(&a, 1000), Some(alice()));
        assert_eq!(sessions.viewer("made-up", 1000), None);
    }

    #[test]
    fn an_idle_session_expires_and_a_used_one_lives_on() {
        let sessions = Sessions::default();
        let id = sessions.open(alice(), 0);
        assert!(sessions.viewer(&id, SESSION_TTL - 1).is_some());
        // Used just now: alive for another TTL from here.
        assert!(sessions.viewer(&id, 2 * SESSION_TTL - 2).is_some());
        assert!(sessions.viewer(&id, 3 * SESSION_TTL).is_none());
        assert!(sessions.viewer(&id, 0).is_none(), "gone for good");
    }

    #[test]
    fn sign_out_forgets_the_session() {
        let sessions = Sessions::default();
        let id = sessions.open(alice(), 0);
        sessions.close(&id);
        assert_eq!(sessions.viewer(&id, 0), None);
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::default();
        let first = sessions.open(alice(), 0);
        for at in 1..=MAX_SESSIONS as EpochMs {
            sessions.open(alice(), at);
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        assert_eq!(
            sessions.viewer(&first, MAX_SESSIONS as EpochMs),
            None,
            "the longest idle went"
        );
    }

    #[test]
    fn an_account_sees_only_its_own_and_an_operator_everything() {
        assert!(alice().may_see(Uuid::from_u128(1)));
        assert!(!alice().may_see(Uuid::from_u128(2)));
        assert!(Viewer::open().may_see(Uuid::from_u128(2)));
    }
}
