//! Agent probes: what each probe type's `config` means, checked once for
//! the master (create/update, `422` naming `config.<field>`) and again by the
//! agent, and how each type runs.
//!
//! A probe type is one module: its `Config`, `parse` (a `config` object in,
//! a typed config or one [`FieldError`] per wrong field out) and `run`, an
//! async loop that watches its thing and sends an [`Observation`] for each
//! fault (and, for types that can see recovery, one clear when it ends).
//! `run` returns only when it cannot go on (an `Err` the probe's actor logs
//! before it restarts it); the decisions (matching, the sliding window,
//! output parsers) are pure functions in the same module or in
//! [`matcher`] and [`window`], unit-tested without clocks or processes.

pub mod bunyan;
pub mod cmd;
pub mod disk;
pub mod http;
pub mod icmp;
pub mod log_scan;
pub mod matcher;
pub mod tail;
pub mod window;

use std::time::Duration;

use serde_json::Value;

use crate::http::FieldError;
use crate::model::ProbeType;

/// A probe's `config`, parsed.
// Built once per probe and moved a handful of times: boxing the larger
// configs would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeConfig {
    LogScan(log_scan::Config),
    BunyanLogScan(bunyan::Config),
    Http(http::Config),
    Icmp(icmp::Config),
    Cmd(cmd::Config),
    DiskUsage(disk::Config),
}

/// Limits that production and tests set differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The shortest `interval` a disk-usage probe may have (production:
    /// 300 s; `probes.min_disk_interval` lowers it for tests).
    pub min_disk_interval: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            min_disk_interval: Duration::from_secs(300),
        }
    }
}

/// Parses the `config` of a probe of `probe_type`: `Ok(None)` for
/// `machine-up` (it takes none, an empty object or null), else the typed
/// config or every field that is wrong, named `config.<field>`.
pub fn parse(probe_type: ProbeType, config: &Value, limits: Limits) -> Result<Option<ProbeConfig>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let parsed = match probe_type {
        ProbeType::MachineUp => {
            if !config.is_null() && !config.as_object().is_some_and(|o| o.is_empty()) {
                errors.push(FieldError::invalid("config", "machine-up probes take no config"));
            }
            None
        }
        ProbeType::LogScan => log_scan::parse(config, &mut errors).map(ProbeConfig::LogScan),
        ProbeType::BunyanLogScan => bunyan::parse(config, &mut errors).map(ProbeConfig::BunyanLogScan),
        ProbeType::Http => http::parse(config, &mut errors).map(ProbeConfig::Http),
        ProbeType::Icmp => icmp::parse(config, &mut errors).map(ProbeConfig::Icmp),
        ProbeType::Cmd => cmd::parse(config, &mut errors).map(ProbeConfig::Cmd),
        ProbeType::DiskUsage => disk::parse(config, limits, &mut errors).map(ProbeConfig::DiskUsage),
    };
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

/// What a probe saw: a fault, or (`clear`) the end of one. It becomes an
/// Amon v1 probe event (`data.message`, `data.value`, `data.details`).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub clear: bool,
    pub message: String,
    pub value: Option<Value>,
    pub details: Option<Value>,
}

impl Observation {
    pub fn fault(message: impl Into<String>, value: Option<Value>, details: Option<Value>) -> Observation {
        Observation {
            clear: false,
            message: message.into(),
            value,
            details,
        }
    }

    pub fn clear(message: impl Into<String>) -> Observation {
        Observation {
            clear: true,
            message: message.into(),
            value: None,
            details: None,
        }
    }
}

/// Where a running probe sends what it sees. Bounded: a probe whose
/// observations are not taken waits (the agent's queue decides what to
/// drop, not the probe).
pub type Report = tokio::sync::mpsc::Sender<Observation>;

/// Runs a probe until it cannot go on. It never returns `Ok` while the
/// probe should run; `Err` says why it stopped (the caller restarts it).
pub async fn run(config: ProbeConfig, report: Report) -> anyhow::Result<()> {
    match config {
        ProbeConfig::LogScan(c) => log_scan::run(c, report).await,
        ProbeConfig::BunyanLogScan(c) => bunyan::run(c, report).await,
        ProbeConfig::Http(c) => http::run(c, report).await,
        ProbeConfig::Icmp(c) => icmp::run(c, report).await,
        ProbeConfig::Cmd(c) => cmd::run(c, report).await,
        ProbeConfig::DiskUsage(c) => disk::run(c, report).await,
    }
}

/// The `config` object, or an error naming `config` (shared by the types'
/// `parse`).
pub fn object<'a>(config: &'a Value, errors: &mut Vec<FieldError>) -> Option<&'a serde_json::Map<String, Value>> {
    match config {
        Value::Object(map) => Some(map),
        Value::Null => {
            errors.push(FieldError::missing("config"));
            None
        }
        other => {
            errors.push(FieldError::invalid(
                "config",
                format!("config must be an object, not {other}"),
            ));
            None
        }
    }
}

/// Refuses every field of `config` that `known` does not list, naming it
/// (`config.<field>`) and the probe type it is not a field of.
pub fn refuse_unknown(
    map: &serde_json::Map<String, Value>,
    known: &[&str],
    probe_type: ProbeType,
    errors: &mut Vec<FieldError>,
) {
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.push(FieldError::invalid(
            &format!("config.{key}"),
            format!("unknown field config.{key} for a {} probe", probe_type.as_str()),
        ));
    }
}

/// Longest path a probe's config may name.
const MAX_PATH: usize = 4096;

/// A path field of `config` (`name` is `config.<field>`): absolute, at most
/// [`MAX_PATH`] bytes, no NUL; else an error naming the field.
pub fn absolute_path(value: &Value, name: &str, errors: &mut Vec<FieldError>) -> Option<std::path::PathBuf> {
    match value {
        Value::String(p) if p.starts_with('/') && p.len() <= MAX_PATH && !p.contains('\0') => Some(p.into()),
        other => {
            errors.push(FieldError::invalid(
                name,
                format!("{name} must be an absolute path of at most {MAX_PATH} bytes, not {other}"),
            ));
            None
        }
    }
}

/// A duration field of `config`: whole seconds (a number) or a string like
/// `"90s"`, `"5m"`; `default` when absent; at least `min`.
pub fn seconds(
    map: &serde_json::Map<String, Value>,
    field: &str,
    default: Duration,
    min: Duration,
    errors: &mut Vec<FieldError>,
) -> Duration {
    let name = format!("config.{field}");
    let parsed = match map.get(field) {
        None | Some(Value::Null) => return default,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
            .map(Duration::from_secs_f64),
        Some(Value::String(text)) => humantime::parse_duration(text.trim()).ok(),
        Some(_) => None,
    };
    match parsed {
        None => {
            errors.push(FieldError::invalid(
                &name,
                format!("{name} must be seconds or a duration like \"90s\""),
            ));
            default
        }
        Some(d) if d < min => {
            errors.push(FieldError::invalid(
                &name,
                format!("{name} must be at least {}", humantime::format_duration(min)),
            ));
            default
        }
        Some(d) => d,
    }
}

/// A whole-number field of `config` in `range`, `default` when absent.
pub fn count(
    map: &serde_json::Map<String, Value>,
    field: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    errors: &mut Vec<FieldError>,
) -> u32 {
    let name = format!("config.{field}");
    match map.get(field) {
        None | Some(Value::Null) => default,
        Some(value) => match value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| range.contains(n))
        {
            Some(n) => n,
            None => {
                errors.push(FieldError::invalid(
                    &name,
                    format!(
                        "{name} must be a whole number from {} to {}, not {value}",
                        range.start(),
                        range.end()
                    ),
                ));
                default
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn machine_up_takes_no_config() {
        assert_eq!(parse(ProbeType::MachineUp, &Value::Null, Limits::default()), Ok(None));
        assert_eq!(parse(ProbeType::MachineUp, &json!({}), Limits::default()), Ok(None));
        let errors = parse(ProbeType::MachineUp, &json!({"x": 1}), Limits::default()).unwrap_err();
        assert_eq!(errors[0].field, "config");
    }

    #[test]
    fn durations_and_counts_name_their_field() {
        let map = json!({"interval": "2m", "period": -1, "threshold": 0})
            .as_object()
            .cloned()
            .unwrap();
        let mut errors = Vec::new();
        let second = Duration::from_secs(1);
        assert_eq!(
            seconds(&map, "interval", second, second, &mut errors),
            Duration::from_secs(120)
        );
        assert_eq!(seconds(&map, "timeout", second, second, &mut errors), second);
        seconds(&map, "period", second, second, &mut errors);
        count(&map, "threshold", 1, 1..=1000, &mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["config.period", "config.threshold"]);
    }
}
