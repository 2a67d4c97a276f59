//! The relay's client for the Master API: `POST /events` with a batch, and
//! the classification of the answer into "done", "retry" or "give up";
//! `HEAD` and `GET /agentprobes` for the agent probe cache. The relay's
//! agent API serves the same paths, so `amon agent` uses this client too,
//! with its relay's address and no token. A relay may know several masters
//! (`relay.master_urls`): the client talks to one at a time and turns to the
//! next after a request that found it unavailable ([`Masters`]).

use std::cell::RefCell;
use std::time::Duration;

use actix_web::web::Bytes;
use uuid::Uuid;

use crate::model::MachineReport;

/// What went wrong with one request to the master.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The master could not be reached or answered 5xx: try again later.
    #[error("master unavailable: {0}")]
    Unavailable(String),
    /// The master refused the request (4xx), or answered something unusable:
    /// retrying the same request will not help.
    #[error("master rejected the request: {status} {body}")]
    Rejected { status: u16, body: String },
}

/// The master's answer to `GET /agentprobes?agent=`: the probe list exactly
/// as the master sent it (a JSON array) and its `Content-MD5`, which the
/// relay serves to the agent unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentProbes {
    pub content_md5: String,
    pub body: Bytes,
}

/// Largest agent probe list we accept from the master.
const MAX_AGENT_PROBES: usize = 16 * 1024 * 1024;

/// The masters a client may talk to, and the one it talks to now: the
/// failover rule, pure, so it is tested without a network. Round robin: a
/// request that found the current master unavailable turns to the next in
/// the list, and after the last to the first again.
#[derive(Debug, Clone, PartialEq)]
pub struct Masters {
    /// Base URLs without a trailing `/`; never empty.
    urls: Vec<String>,
    /// How many times the client turned to the next master; the current one
    /// is `turns % urls.len()`. A count, not an index, so a failure reported
    /// late (a request sent before a switch, answered after it) is told
    /// from a failure of the current master even when the list came round.
    turns: u64,
}

/// Which master a request went to, for [`Masters::failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn(u64);

/// The client turned from one master to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub from: String,
    pub to: String,
}

impl Masters {
    /// `urls` must not be empty (the config never gives an empty list).
    pub fn new<S: AsRef<str>>(urls: &[S]) -> Masters {
        assert!(!urls.is_empty(), "a client needs at least one master");
        Masters {
            urls: urls
                .iter()
                .map(|u| u.as_ref().trim_end_matches('/').to_string())
                .collect(),
            turns: 0,
        }
    }

    /// The master to send the next request to, and its turn.
    pub fn current(&self) -> (Turn, &str) {
        let index = (self.turns % self.urls.len() as u64) as usize;
        (Turn(self.turns), &self.urls[index])
    }

    /// A request sent in `turn` found its master unavailable. If that is
    /// still the current master and there is another, the next request goes
    /// to the next one: the switch made. A failure from an earlier turn
    /// changes nothing (the client has already moved on), so requests in
    /// flight together never skip a master.
    pub fn failed(&mut self, turn: Turn) -> Option<Switch> {
        if turn.0 != self.turns || self.urls.len() < 2 {
            return None;
        }
        let from = self.current().1.to_string();
        self.turns += 1;
        let to = self.current().1.to_string();
        Some(Switch { from, to })
    }
}

/// A client for a master, or for several, one at a time ([`Masters`]).
pub struct MasterClient {
    /// `RefCell`: requests share the client (`Rc`), and each turns it to
    /// the next master when its own failed; never borrowed across an await.
    masters: RefCell<Masters>,
    client: awc::Client,
}

/// How a sender retries its upstream (the relay link to the master, the
/// agent's sender to its relay): from 250 ms, doubling to 30 s, jittered,
/// for ever.
pub fn retry_backoff() -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoff {
        initial_interval: Duration::from_millis(250),
        current_interval: Duration::from_millis(250),
        max_interval: Duration::from_secs(30),
        multiplier: 2.0,
        randomization_factor: 0.3,
        max_elapsed_time: None,
        ..backoff::ExponentialBackoff::default()
    }
}

impl MasterClient {
    /// `token`: the bearer token (role `relay`) when the master requires one.
    pub fn new(base_url: &str, token: Option<&str>) -> MasterClient {
        MasterClient::failover(Masters::new(&[base_url]), token)
    }

    /// A client for several masters that share one token, failing over
    /// between them.
    pub fn failover(masters: Masters, token: Option<&str>) -> MasterClient {
        // Idle connections are dropped well before the master's keep-alive
        // (75 s, `server::Shape::MASTER`) closes them, so a request never races a server-side close.
        let connector = awc::Connector::new().conn_keep_alive(Duration::from_secs(30));
        let mut builder = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_secs(30));
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        let client = builder.finish();
        MasterClient {
            masters: RefCell::new(masters),
            client,
        }
    }

    /// Runs one request against the current master; if it finds the master
    /// unavailable, the next request goes to the next master. A refusal
    /// (`Rejected`) is about the request, not the master: no switch.
    async fn on_master<T, F, Fut>(&self, request: F) -> Result<T, SendError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, SendError>>,
    {
        let (turn, base_url) = {
            let masters = self.masters.borrow();
            let (turn, url) = masters.current();
            (turn, url.to_string())
        };
        let result = request(base_url).await;
        if let Err(SendError::Unavailable(why)) = &result {
            let switch = self.masters.borrow_mut().failed(turn);
            if let Some(Switch { from, to }) = switch {
                tracing::warn!(from = %from, to = %to, error = %why, "master unavailable; turning to the next master");
                crate::metrics::master_switched();
            }
        }
        result
    }

    /// Sends a batch; `Ok` means the master answered 202, i.e. committed
    /// (a relay's agent API: the relay link has them). `T` is [`crate::model::Event`] for
    /// a relay, `AgentEvent` for an agent.
    pub async fn post_events<T: serde::Serialize>(&self, events: &[T]) -> Result<(), SendError> {
        self.on_master(|base| async move {
            match self
                .send_json(self.client.post(format!("{base}/events")), events)
                .await?
            {
                (202, _) => Ok(()),
                (status, text) => Err(refused(status, text)),
            }
        })
        .await
    }

    /// Sends `body` as JSON; the status and (the start of) the answer's body.
    async fn send_json<T: serde::Serialize + ?Sized>(
        &self,
        request: awc::ClientRequest,
        body: &T,
    ) -> Result<(u16, String), SendError> {
        let body = serde_json::to_vec(body).map_err(|e| SendError::Rejected {
            status: 0,
            body: format!("cannot encode the request: {e}"),
        })?;
        let mut response = request
            .insert_header(("content-type", "application/json"))
            .send_body(body)
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        let status = response.status();
        // Read the body either way so the connection can be reused.
        let text = response
            .body()
            .limit(64 * 1024)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok((status.as_u16(), text))
    }

    /// `PUT /servers/:server/machines`: every machine the compute node
    /// carries now (the master's inventory, for tenancy).
    pub async fn put_server_machines(&self, server: Uuid, machines: &[MachineReport]) -> Result<(), SendError> {
        self.on_master(|base| async move {
            let url = format!("{base}/servers/{server}/machines");
            match self.send_json(self.client.put(url), machines).await? {
                (200..=299, _) => Ok(()),
                (status, text) => Err(refused(status, text)),
            }
        })
        .await
    }

    /// `HEAD /agentprobes?agent=`: the `Content-MD5` of the agent's probe
    /// list, to compare with the cached one before fetching.
    /// The agent probe list if its `Content-MD5` is not `known` (`None`:
    /// unchanged); with nothing known every answer is news, so the `HEAD`
    /// is skipped.
    pub async fn agent_probes_if_changed(
        &self,
        agent: Uuid,
        known: Option<String>,
    ) -> Result<Option<AgentProbes>, SendError> {
        if let Some(known) = known {
            if self.head_agent_probes(agent).await? == known {
                return Ok(None);
            }
        }
        self.get_agent_probes(agent).await.map(Some)
    }

    pub async fn head_agent_probes(&self, agent: Uuid) -> Result<String, SendError> {
        self.on_master(|base| async move {
            let response = self
                .client
                .head(format!("{base}/agentprobes?agent={agent}"))
                .send()
                .await
                .map_err(|e| SendError::Unavailable(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(refused(status.as_u16(), String::new()));
            }
            content_md5_header(&response)
        })
        .await
    }

    /// `GET /agentprobes?agent=`: the agent's probe list, checked against its
    /// `Content-MD5` and for being a JSON array of objects.
    pub async fn get_agent_probes(&self, agent: Uuid) -> Result<AgentProbes, SendError> {
        self.on_master(|base| self.get_agent_probes_from(base, agent)).await
    }

    async fn get_agent_probes_from(&self, base_url: String, agent: Uuid) -> Result<AgentProbes, SendError> {
        let mut response = self
            .client
            .get(format!("{base_url}/agentprobes?agent={agent}"))
            .insert_header(("accept", "application/json"))
            .send()
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        let status = response.status();
        let body = response
            .body()
            .limit(MAX_AGENT_PROBES)
            .await
            .map_err(|e| SendError::Unavailable(format!("cannot read the probe list: {e}")))?;
        if !status.is_success() {
            return Err(refused(status.as_u16(), String::from_utf8_lossy(&body).into_owned()));
        }
        let content_md5 = content_md5_header(&response)?;
        let unusable = |why: String| SendError::Rejected {
            status: status.as_u16(),
            body: why,
        };
        if super::content_md5(&body) != content_md5 {
            return Err(unusable(format!(
                "probe list does not match its Content-MD5 {content_md5:?}"
            )));
        }
        // Checked as a list of objects only, not as our `Probe`: a relay
        // passes on probe types it does not know yet (the agent may), as the
        // original relay did.
        serde_json::from_slice::<Vec<serde_json::Map<String, serde_json::Value>>>(&body)
            .map_err(|e| unusable(format!("probe list is not a json array of objects: {e}")))?;
        Ok(AgentProbes { content_md5, body })
    }
}

/// Sorts a refusal: 5xx, and the refusals a fix elsewhere will lift —
/// 401/403 (our token is missing or wrong: an operator will fix the config),
/// 408, 429 — are worth retrying; any other 4xx is about these bytes.
fn refused(status: u16, body: String) -> SendError {
    if status >= 500 || matches!(status, 401 | 403 | 408 | 429) {
        SendError::Unavailable(format!("{status} {body}"))
    } else {
        SendError::Rejected { status, body }
    }
}

fn content_md5_header<S>(response: &awc::ClientResponse<S>) -> Result<String, SendError> {
    response
        .headers()
        .get("content-md5")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| SendError::Rejected {
            status: response.status().as_u16(),
            body: "no Content-MD5 header".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_master_is_always_the_current_one() {
        let mut masters = Masters::new(&["http://a:4300/"]);
        let (turn, url) = masters.current();
        assert_eq!(url, "http://a:4300");
        assert_eq!(masters.failed(turn), None);
        assert_eq!(masters.current().1, "http://a:4300");
    }

    #[test]
    fn a_failure_turns_to_the_next_master_round_robin() {
        let mut masters = Masters::new(&["http://a:4300", "http://b:4300", "http://c:4300"]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (turn, url) = masters.current();
            seen.push(url.to_string());
            let switch = masters.failed(turn).expect("a switch");
            assert_eq!(switch.from, *seen.last().unwrap());
            assert_eq!(switch.to, masters.current().1);
        }
        assert_eq!(
            seen,
            ["http://a:4300", "http://b:4300", "http://c:4300", "http://a:4300"]
        );
    }

    #[test]
    fn a_late_failure_from_an_earlier_turn_does_not_skip_a_master() {
        let mut masters = Masters::new(&["http://a:4300", "http://b:4300"]);
        // Two requests go to a; both fail.
        let (first, _) = masters.current();
        let (second, _) = masters.current();
        assert!(masters.failed(first).is_some());
        assert_eq!(masters.failed(second), None, "b is not given up for a's failure");
        assert_eq!(masters.current().1, "http://b:4300");
        // b fails too: back to a, and a request to b answered even later
        // still changes nothing, although a is current again.
        let (on_b, _) = masters.current();
        assert!(masters.failed(on_b).is_some());
        assert_eq!(masters.current().1, "http://a:4300");
        assert_eq!(masters.failed(on_b), None);
        assert_eq!(masters.failed(first), None);
        assert_eq!(masters.current().1, "http://a:4300");
    }

    #[test]
    fn only_an_unavailable_master_is_worth_leaving() {
        // The statuses `on_master` switches for (`Unavailable`) and those it
        // does not (`Rejected`: the request's fault, the same anywhere).
        for status in [500, 502, 503, 401, 403, 408, 429] {
            assert!(
                matches!(refused(status, String::new()), SendError::Unavailable(_)),
                "{status}"
            );
        }
        for status in [400, 404, 409, 413, 422] {
            assert!(
                matches!(refused(status, String::new()), SendError::Rejected { .. }),
                "{status}"
            );
        }
    }
}
