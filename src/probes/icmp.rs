//! `icmp` probes: not built yet (issue 13).

use serde_json::Value;

use super::Report;
use crate::http::FieldError;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {}

pub fn parse(_config: &Value, errors: &mut Vec<FieldError>) -> Option<Config> {
    errors.push(FieldError::invalid("type", "icmp probes are not built yet"));
    None
}

pub async fn run(_config: Config, _report: Report) -> anyhow::Result<()> {
    anyhow::bail!("icmp probes are not built yet")
}
