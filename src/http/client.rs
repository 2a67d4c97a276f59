//! The relay's client for the Master API: `POST /events` with a batch, and
//! the classification of the answer into "done", "retry" or "give up";
//! `HEAD` and `GET /agentprobes` for the agent probe cache. The relay's
//! agent API serves the same paths, so `amon agent` uses this client too,
//! with its relay's address and no token.

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

/// A client for one master.
pub struct MasterClient {
    base_url: String,
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
            base_url: base_url.trim_end_matches('/').to_string(),
            client,
        }
    }

    /// Sends a batch; `Ok` means the master answered 202, i.e. committed
    /// (a relay's agent API: the relay link has them). `T` is [`crate::model::Event`] for
    /// a relay, `AgentEvent` for an agent.
    pub async fn post_events<T: serde::Serialize>(&self, events: &[T]) -> Result<(), SendError> {
        match self
            .send_json(self.client.post(format!("{}/events", self.base_url)), events)
            .await?
        {
            (202, _) => Ok(()),
            (status, text) => Err(refused(status, text)),
        }
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
        let url = format!("{}/servers/{server}/machines", self.base_url);
        match self.send_json(self.client.put(url), machines).await? {
            (200..=299, _) => Ok(()),
            (status, text) => Err(refused(status, text)),
        }
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
        let response = self
            .client
            .head(format!("{}/agentprobes?agent={agent}", self.base_url))
            .send()
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(refused(status.as_u16(), String::new()));
        }
        content_md5_header(&response)
    }

    /// `GET /agentprobes?agent=`: the agent's probe list, checked against its
    /// `Content-MD5` and for being a JSON array of objects.
    pub async fn get_agent_probes(&self, agent: Uuid) -> Result<AgentProbes, SendError> {
        let mut response = self
            .client
            .get(format!("{}/agentprobes?agent={agent}", self.base_url))
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
