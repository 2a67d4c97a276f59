//! Logging: bunyan-compatible JSON lines on stderr (SMF keeps stderr in the
//! service log). `AMON_LOG` (or `RUST_LOG`) sets the filter at start;
//! default `info`. The filter can be changed while the daemon runs
//! ([`set_filter`]: `PUT /loglevel` on the Master API and on the relay's
//! admin API).

use std::sync::{Mutex, OnceLock};

use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The installed filter's reload handle, and the text it was made from.
static FILTER: OnceLock<(reload::Handle<EnvFilter, Registry>, Mutex<String>)> = OnceLock::new();

pub fn init(name: &str) {
    let wanted = std::env::var("AMON_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let (filter, text) = match EnvFilter::try_new(&wanted) {
        Ok(filter) => (filter, wanted),
        Err(_) => (EnvFilter::new("info"), "info".to_string()),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(JsonStorageLayer)
        .with(BunyanFormattingLayer::new(name.to_string(), std::io::stderr));
    // A second init (tests) keeps the first subscriber.
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        let _ = FILTER.set((handle, Mutex::new(text)));
    }
}

/// The filter in force, as it was given (`info`, `amon=debug,info`, …).
pub fn filter() -> Option<String> {
    let (_, text) = FILTER.get()?;
    Some(text.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

/// Why a new filter was not taken.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("invalid log filter {0:?}: {1}")]
    Invalid(String, String),
    #[error("logging is not set up in this process")]
    NotInstalled,
}

/// Replaces the filter while the process runs (`debug`, `warn`,
/// `amon::actors::router=debug,info`, …), and logs the change once.
pub fn set_filter(wanted: &str) -> Result<String, FilterError> {
    let wanted = wanted.trim();
    let filter = EnvFilter::try_new(wanted).map_err(|e| FilterError::Invalid(wanted.to_string(), e.to_string()))?;
    let (handle, text) = FILTER.get().ok_or(FilterError::NotInstalled)?;
    let mut text = text.lock().unwrap_or_else(|e| e.into_inner());
    let old = std::mem::replace(&mut *text, wanted.to_string());
    handle
        .reload(filter)
        .map_err(|e| FilterError::Invalid(wanted.to_string(), e.to_string()))?;
    // At warn, so the change shows at any level but the quietest.
    tracing::warn!(old = %old, new = %wanted, "log filter changed");
    Ok(wanted.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_with_its_text() {
        let err = set_filter("amon=loud").unwrap_err();
        assert!(err.to_string().contains("amon=loud"), "{err}");
    }
}
