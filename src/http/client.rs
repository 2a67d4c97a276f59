//! The relay's client for the Master API: `POST /events` with a batch, and
//! the classification of the answer into "done", "retry" or "give up".

use std::time::Duration;

use crate::model::Event;

/// What became of one `POST /events`.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The master could not be reached or answered 5xx: try again later.
    #[error("master unavailable: {0}")]
    Unavailable(String),
    /// The master refused the batch (4xx): retrying the same bytes will not help.
    #[error("master rejected the events: {status} {body}")]
    Rejected { status: u16, body: String },
}

/// A client for one master.
pub struct MasterClient {
    base_url: String,
    client: awc::Client,
}

impl MasterClient {
    pub fn new(base_url: &str) -> MasterClient {
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        MasterClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            client,
        }
    }

    /// Sends a batch; `Ok` means the master answered 202, i.e. committed.
    pub async fn post_events(&self, events: &[Event]) -> Result<(), SendError> {
        let body = serde_json::to_vec(events).map_err(|e| SendError::Rejected {
            status: 0,
            body: format!("cannot encode events: {e}"),
        })?;
        let mut response = self
            .client
            .post(format!("{}/events", self.base_url))
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
        if status.as_u16() == 202 {
            Ok(())
        } else if status.is_server_error() {
            Err(SendError::Unavailable(format!("{status} {text}")))
        } else {
            Err(SendError::Rejected {
                status: status.as_u16(),
                body: text,
            })
        }
    }
}
