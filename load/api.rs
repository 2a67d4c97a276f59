//! The harness as a client of the daemons it drives: the Master API to
//! create accounts, contacts and probes, and `/metrics` and the relay's
//! `/state` to read what they have done.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use crate::workload::Fleet;

#[derive(Clone)]
pub struct Api {
    client: awc::Client,
}

/// Where a probe's notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    /// The account's own email address (the implicit `email` contact).
    Email,
    /// A webhook contact per account, posting to the harness's sink.
    Webhook,
}

/// How the master learns who owns the fleet's machines (see [`Api::provision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inventory {
    Report,
    Await,
}

impl Api {
    /// Waits until the master knows every account's machines (the relays
    /// report them every couple of seconds once they watch them).
    async fn await_inventory(&self, master: &str, fleet: &Fleet) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        for (a, account) in fleet.accounts.iter().enumerate() {
            let want = fleet.zones.iter().filter(|z| z.owner == a).count();
            let url = format!("{master}/pub/{}/machines", account.login);
            loop {
                let have = self.get_json(&url).await?.as_array().map_or(0, Vec::len);
                if have >= want {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the master knows {have} of account {}'s {want} machines after 600 s",
                        account.login
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    pub fn new() -> Api {
        Api {
            client: awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .connector(awc::Connector::new().limit(64))
                .finish(),
        }
    }

    async fn request(&self, method: &str, url: &str, body: Option<&Value>) -> anyhow::Result<(u16, Vec<u8>)> {
        let request = match method {
            "POST" => self.client.post(url),
            "PUT" => self.client.put(url),
            _ => self.client.get(url),
        };
        let mut response = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        }
        .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
        let bytes = response
            .body()
            .limit(256 * 1024 * 1024)
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?;
        Ok((response.status().as_u16(), bytes.to_vec()))
    }

    /// `method url body`, expecting a 2xx JSON answer (or none).
    pub async fn call(&self, method: &str, url: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, bytes) = self.request(method, url, Some(body)).await?;
        if !(200..300).contains(&status) {
            bail!("{method} {url}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, url: &str) -> anyhow::Result<String> {
        let (status, bytes) = self.request("GET", url, None).await?;
        if status != 200 {
            bail!("GET {url}: {status}");
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn get_json(&self, url: &str) -> anyhow::Result<Value> {
        let text = self.get_text(url).await?;
        serde_json::from_str(&text).with_context(|| format!("GET {url}: not json"))
    }

    /// A gauge or counter from a Prometheus text page, by name and label
    /// set as written (e.g. `amon_events_stored{type="machine"}`).
    pub async fn metric(&self, base: &str, series: &str) -> anyhow::Result<f64> {
        let text = self.get_text(&format!("{base}/metrics")).await?;
        Ok(metric_in(&text, series).unwrap_or(0.0))
    }

    /// Creates the fleet's accounts, their contact, and one `machine-up`
    /// probe per zone, `parallel` requests at a time. Returns how long the
    /// probes took. An account may put a probe only on a machine the master
    /// knows it owns: with `Inventory::Report` the harness reports every
    /// server's machines itself, as a relay would (a master without relays);
    /// with `Inventory::Await` it waits for the relays' own reports.
    pub async fn provision(
        &self,
        master: &str,
        fleet: &Fleet,
        medium: Medium,
        webhook_base: &str,
        parallel: usize,
        inventory: Inventory,
    ) -> anyhow::Result<Duration> {
        for account in &fleet.accounts {
            self.call(
                "POST",
                &format!("{master}/accounts"),
                &json!({"login": account.login, "email": account.email, "uuid": account.uuid}),
            )
            .await?;
            if medium == Medium::Webhook {
                self.call(
                    "PUT",
                    &format!("{master}/pub/{}/contacts/hook", account.login),
                    &json!({"medium": "webhook", "address": format!("{webhook_base}/amon/{}", account.login)}),
                )
                .await?;
            }
        }
        match inventory {
            Inventory::Report => {
                for (s, server) in fleet.servers.iter().enumerate() {
                    let machines: Vec<Value> = fleet
                        .zones_of(s)
                        .map(|z| &fleet.zones[z])
                        .map(|z| json!({"uuid": z.uuid, "alias": z.alias, "owner": fleet.accounts[z.owner].uuid}))
                        .collect();
                    self.call(
                        "PUT",
                        &format!("{master}/servers/{}/machines", server.uuid),
                        &json!(machines),
                    )
                    .await?;
                }
            }
            Inventory::Await => self.await_inventory(master, fleet).await?,
        }
        let contact = match medium {
            Medium::Email => "email",
            Medium::Webhook => "hook",
        };
        let started = Instant::now();
        let results: Vec<anyhow::Result<Value>> = stream::iter(fleet.zones.iter())
            .map(|zone| {
                let account = &fleet.accounts[zone.owner];
                let url = format!("{master}/pub/{}/probes", account.login);
                let body = json!({
                    "name": format!("{} up", zone.alias),
                    "type": "machine-up",
                    "machine": zone.uuid,
                    "contacts": [contact],
                });
                async move { self.call("POST", &url, &body).await }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        if let Some(err) = results.into_iter().find_map(Result::err) {
            return Err(err.context("creating probes"));
        }
        Ok(started.elapsed())
    }

    /// The relay's `/state`: zones watched and events still spooled.
    pub async fn relay_state(&self, relay: &str) -> anyhow::Result<(u64, u64)> {
        let state = self.get_json(&format!("{relay}/state")).await?;
        let zones = state["zones"]["zones"].as_u64().unwrap_or(0);
        let link = &state["link"];
        let spooled = link["spoolDepth"]
            .as_u64()
            .or_else(|| link["spool_depth"].as_u64())
            .unwrap_or(0);
        Ok((zones, spooled))
    }
}

/// The value of one series in a Prometheus text page.
pub fn metric_in(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// A plain blocking `GET` on loopback (`Connection: close`), for the few
/// waits made before the harness's runtime has work: the body of a `200`,
/// else an error.
pub fn blocking_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no end of headers from {addr}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{addr}{path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_series_are_found_by_name_and_labels() {
        let text = "# TYPE amon_events_stored gauge\namon_events_stored{type=\"machine\"} 42\namon_events_stored{type=\"server\"} 3\n";
        assert_eq!(metric_in(text, "amon_events_stored{type=\"machine\"}"), Some(42.0));
        assert_eq!(metric_in(text, "amon_events_stored{type=\"probe\"}"), None);
    }
}
