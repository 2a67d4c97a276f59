//! Logging: bunyan-compatible JSON lines on stderr (SMF keeps stderr in the
//! service log). `AMON_LOG` (or `RUST_LOG`) sets the filter at start;
//! default `info`. The filter can be changed while the daemon runs
//! ([`set_filter`]: `PUT /loglevel` on the Master API and on the relay's
//! admin API). A span writes no line of its own: it lends its fields to the
//! lines written inside it (an HTTP request's `req_id`, see
//! `http::server`).

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use serde::ser::{SerializeMap, Serializer as _};
use tracing::{Event, Level, Subscriber};
use tracing_bunyan_formatter::{JsonStorage, JsonStorageLayer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
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
        .with(BunyanLines::new(name, std::io::stderr));
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

/// Bunyan's core fields: an event's or a span's field of the same name is
/// left out rather than written twice.
const CORE_FIELDS: [&str; 7] = ["v", "name", "msg", "level", "hostname", "pid", "time"];

/// Writes each event as one bunyan record: the core fields, where it was
/// logged (`target`, `line`, `file`), its fields, then the fields of the
/// spans it is in (JsonStorageLayer keeps them, a child's with its
/// parents'). A field is written once: the event's wins over the span's and
/// over `target`, `line` and `file`. tracing-bunyan-formatter's own layer also writes a
/// `[SPAN - START]` and a `[SPAN - END]` record per span and prefixes every
/// message logged inside one (`[REQUEST - EVENT] …`), which would triple the
/// lines of every HTTP request and change messages operators and tests
/// search for; this one does neither.
struct BunyanLines<W> {
    name: String,
    hostname: String,
    pid: u32,
    make_writer: W,
}

impl<W: for<'a> MakeWriter<'a> + 'static> BunyanLines<W> {
    fn new(name: &str, make_writer: W) -> BunyanLines<W> {
        BunyanLines {
            name: name.to_string(),
            hostname: hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            pid: std::process::id(),
            make_writer,
        }
    }

    fn record<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>) -> Result<Vec<u8>, serde_json::Error>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let mut fields = JsonStorage::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let message = match fields.values().get("message") {
            Some(serde_json::Value::String(message)) => message.as_str(),
            _ => meta.target(),
        };
        // A log line's time is when it is written, whatever clock the
        // logic under test runs on.
        #[allow(clippy::disallowed_methods)]
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let mut line = Vec::with_capacity(256);
        let mut serializer = serde_json::Serializer::new(&mut line);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("v", &0)?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("msg", message)?;
        map.serialize_entry("level", &bunyan_level(*meta.level()))?;
        map.serialize_entry("hostname", &self.hostname)?;
        map.serialize_entry("pid", &self.pid)?;
        map.serialize_entry("time", &time)?;
        // Where it was logged, unless the event has a field of that name
        // (a skipped zone line's `line`).
        let given = |key: &str| fields.values().contains_key(key);
        if !given("target") {
            map.serialize_entry("target", meta.target())?;
        }
        if !given("line") {
            map.serialize_entry("line", &meta.line())?;
        }
        if !given("file") {
            map.serialize_entry("file", &meta.file())?;
        }
        let own = |key: &&str| *key != "message" && !CORE_FIELDS.contains(key);
        for (key, value) in fields.values().iter().filter(|(key, _)| own(key)) {
            map.serialize_entry(key, value)?;
        }
        if let Some(span) = ctx.lookup_current() {
            if let Some(lent) = span.extensions().get::<JsonStorage>() {
                for (key, value) in lent.values() {
                    if own(key) && !fields.values().contains_key(key) {
                        map.serialize_entry(key, value)?;
                    }
                }
            }
        }
        map.end()?;
        line.push(b'\n');
        Ok(line)
    }
}

impl<S, W> Layer<S> for BunyanLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Ok(line) = self.record(event, &ctx) {
            // One write per record, so concurrent lines do not interleave.
            let _ = self.make_writer.make_writer_for(event.metadata()).write_all(&line);
        }
    }
}

fn bunyan_level(level: Level) -> u8 {
    match level {
        Level::ERROR => 50,
        Level::WARN => 40,
        Level::INFO => 30,
        Level::DEBUG => 20,
        Level::TRACE => 10,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// What a [`BunyanLines`] under test wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    #[test]
    fn a_span_lends_its_fields_to_the_lines_inside_it_and_writes_none_itself() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(JsonStorageLayer)
            .with(BunyanLines::new("amon", move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(outside = 1, "before");
            let span = tracing::error_span!("request", req_id = "abc-123", server = "master");
            span.in_scope(|| {
                tracing::warn!(server = "mine", line = "not json {", "log filter changed");
            });
        });
        let lines = captured.lines();
        assert_eq!(lines.len(), 2, "no span records: {lines:?}");
        assert_eq!(lines[0]["msg"], "before");
        assert_eq!(lines[0]["outside"], 1);
        assert_eq!(lines[0]["level"], 30);
        assert_eq!(lines[0]["v"], 0);
        assert_eq!(lines[0]["name"], "amon");
        assert!(lines[0].get("req_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["msg"], "log filter changed", "the message is left as it is");
        assert_eq!(lines[1]["level"], 40);
        assert_eq!(lines[1]["req_id"], "abc-123");
        assert_eq!(lines[1]["server"], "mine", "the event's own field wins");
        assert_eq!(lines[1]["line"], "not json {", "over the source line too");
        for key in ["hostname", "pid", "time", "target", "line", "file"] {
            assert!(lines[1].get(key).is_some(), "{key} in {}", lines[1]);
        }
    }

    #[test]
    fn a_bad_filter_is_refused_with_its_text() {
        let err = set_filter("amon=loud").unwrap_err();
        assert!(err.to_string().contains("amon=loud"), "{err}");
    }
}
