//! `bunyan-log-scan` probes: a log-scan of a Bunyan (one JSON record per
//! line) log, where a hit is a record whose `fields` all have the given
//! values and, if `match` is given, that matches it (the whole line, or with
//! `match.field` that field of the record). Following, counting and the
//! fault are log-scan's ([`super::log_scan::scan`]).
//!
//! As in the original, a field's value must be *equal* to the record's
//! (so `level: "error"` is records at level 50 exactly, not "error or
//! worse"); field names may be dotted (`req.method`), the literal key being
//! tried first. Fixed from the original: `match.invert` works (it was
//! refused as "not yet implemented"), and lines are whole (the original
//! matched chunks of `tail` output and could split a record). Lines that are
//! not JSON objects are skipped and counted.

use serde_json::{json, Map, Value};

use super::log_scan::{self, Follow, Scan, Source};
use super::matcher::Matcher;
use super::Report;
use crate::http::FieldError;
use crate::model::ProbeType;

/// A `bunyan-log-scan` probe's config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: Source,
    /// Boxed: a compiled regex is large (see `log_scan::Config`).
    pub matcher: Option<Box<Matcher>>,
    /// Fields every hit has, with these values.
    pub fields: Vec<Field>,
    pub threshold: u32,
    pub period: std::time::Duration,
}

/// One of `fields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The (possibly dotted) name.
    pub name: String,
    /// The value a record must have (a level name is its number).
    pub value: Value,
    /// The value as the config gave it, for the message.
    pub given: Value,
}

/// Bunyan's level names and numbers.
const LEVELS: [(&str, u64); 6] = [
    ("trace", 10),
    ("debug", 20),
    ("info", 30),
    ("warn", 40),
    ("error", 50),
    ("fatal", 60),
];

/// Most `fields` a probe may give.
const MAX_FIELDS: usize = 64;

/// A record's line longer than this is shown clipped in `details`, not as
/// the record.
const MAX_SAMPLE_RECORD: usize = 4096;

pub fn parse(config: &Value, errors: &mut Vec<FieldError>) -> Option<Config> {
    let map = super::object(config, errors)?;
    let before = errors.len();
    super::refuse_unknown(
        map,
        &["path", "smfServiceName", "match", "fields", "threshold", "period"],
        ProbeType::BunyanLogScan,
        errors,
    );
    let source = log_scan::parse_source(map, errors);
    let matcher = match map.get("match") {
        None | Some(Value::Null) => None,
        Some(value) => Matcher::parse(value, "config.match", true, errors).map(Box::new),
    };
    let fields = match map.get("fields") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(fields)) => parse_fields(fields, errors),
        Some(other) => {
            errors.push(FieldError::invalid(
                "config.fields",
                format!("config.fields ({other}) must be an object of field names and values"),
            ));
            Vec::new()
        }
    };
    if map.get("match").is_none_or(Value::is_null) && fields.is_empty() && errors.len() == before {
        errors.push(FieldError::invalid(
            "config.fields",
            "at least one of \"config.fields\" or \"config.match\" is required",
        ));
    }
    let (threshold, period) = log_scan::parse_window(map, errors);
    if errors.len() > before {
        return None;
    }
    Some(Config {
        source: source?,
        matcher,
        fields,
        threshold,
        period,
    })
}

fn parse_fields(fields: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Vec<Field> {
    if fields.len() > MAX_FIELDS {
        errors.push(FieldError::invalid(
            "config.fields",
            format!("config.fields may name at most {MAX_FIELDS} fields"),
        ));
        return Vec::new();
    }
    let mut parsed = Vec::new();
    for (name, given) in fields {
        let field = format!("config.fields.{name}");
        let value = if name == "level" {
            level(given)
        } else {
            match given {
                // The original compared with `!==`: an object or array
                // never equals a record's, so it could never match.
                Value::Object(_) | Value::Array(_) => None,
                scalar => Some(scalar.clone()),
            }
        };
        match value {
            _ if name.is_empty() || name.starts_with('.') || name.ends_with('.') => {
                errors.push(FieldError::invalid(
                    &field,
                    format!("{field}: {name:?} is not a field name"),
                ));
            }
            None if name == "level" => errors.push(FieldError::invalid(
                &field,
                format!(
                    "config.fields.level is an invalid Bunyan log level: {given} \
                     (give one of trace, debug, info, warn, error, fatal, or a whole number)"
                ),
            )),
            None => errors.push(FieldError::invalid(
                &field,
                format!("{field} ({given}) must be a string, number, boolean or null"),
            )),
            Some(value) => parsed.push(Field {
                name: name.clone(),
                value,
                given: given.clone(),
            }),
        }
    }
    parsed
}

/// A level as Bunyan resolves it: a name (any case) or a whole number.
fn level(given: &Value) -> Option<Value> {
    match given {
        Value::String(name) => LEVELS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, number)| json!(number)),
        Value::Number(n) => n.as_u64().map(|n| json!(n)),
        _ => None,
    }
}

/// What a line is to a bunyan-log-scan probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not a JSON object: not a Bunyan record.
    NotRecord,
    Miss,
    /// A hit, and what `details.matches` says of it.
    Hit(Value),
}

impl Config {
    /// Judges one line of the log.
    pub fn judge(&self, line: &str) -> Verdict {
        let whole_line = self.matcher.as_deref().filter(|m| m.field.is_none());
        // Cheap first: a whole-line pattern that must be found and is not
        // spares parsing the JSON.
        if let Some(m) = whole_line.filter(|m| !m.invert) {
            if m.find(line).is_none() {
                return Verdict::Miss;
            }
        }
        let record = match serde_json::from_str::<Value>(line) {
            Ok(record @ Value::Object(_)) => record,
            _ => return Verdict::NotRecord,
        };
        let fields_hold = self
            .fields
            .iter()
            .all(|f| lookup(&record, &f.name).is_some_and(|v| same(v, &f.value)));
        if !fields_hold {
            return Verdict::Miss;
        }
        let matched = match self.matcher.as_deref() {
            None => true,
            Some(m) => match &m.field {
                None => m.hits(line),
                Some(name) => match lookup(&record, name) {
                    Some(Value::String(text)) => m.hits(text),
                    Some(other) => m.hits(&other.to_string()),
                    // No such field: the pattern is not found in it.
                    None => m.invert,
                },
            },
        };
        if !matched {
            return Verdict::Miss;
        }
        if line.len() > MAX_SAMPLE_RECORD {
            return Verdict::Hit(json!({ "match": log_scan::clip(line) }));
        }
        Verdict::Hit(json!({ "match": record }))
    }

    /// The conditions as the message shows them: `(msg=/re/, level=error)`.
    pub fn describe(&self) -> String {
        let mut conditions = Vec::new();
        if let Some(m) = &self.matcher {
            match &m.field {
                Some(field) => conditions.push(format!("{field}={}", m.describe())),
                None => conditions.push(m.describe()),
            }
        }
        for f in &self.fields {
            match &f.given {
                Value::String(s) => conditions.push(format!("{}={s}", f.name)),
                other => conditions.push(format!("{}={other}", f.name)),
            }
        }
        format!("({})", conditions.join(", "))
    }
}

/// The value at `name` in `record`: the key itself first (a record may
/// have a key with a dot), else the dotted path.
fn lookup<'r>(record: &'r Value, name: &str) -> Option<&'r Value> {
    if let Some(value) = record.get(name) {
        return Some(value);
    }
    if !name.contains('.') {
        return None;
    }
    name.split('.').try_fold(record, |value, part| value.get(part))
}

/// Equality as JavaScript's `===` on JSON scalars: numbers by value (`50`
/// is `50.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

pub async fn run(config: Config, report: Report) -> anyhow::Result<()> {
    run_with(config, Follow::default(), report).await
}

pub async fn run_with(config: Config, follow: Follow, report: Report) -> anyhow::Result<()> {
    let scan = Scan {
        source: config.source.clone(),
        threshold: config.threshold,
        period: config.period,
        describe: config.describe(),
    };
    let mut skipped: u64 = 0;
    log_scan::scan(scan, follow, report, move |line| match config.judge(line) {
        Verdict::Hit(sample) => Some(sample),
        Verdict::Miss => None,
        Verdict::NotRecord => {
            skipped += 1;
            // Once, then every 1000th: a log that is not Bunyan is worth
            // knowing about, not worth a log line per line.
            if skipped % 1000 == 1 {
                tracing::info!(skipped, "bunyan-log-scan: skipping lines that are not JSON records");
            }
            None
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::probes::Observation;

    fn config(value: Value) -> Config {
        let mut errors = Vec::new();
        parse(&value, &mut errors).unwrap_or_else(|| panic!("{errors:?}"))
    }

    fn fields(value: Value) -> Vec<String> {
        let mut errors = Vec::new();
        assert!(parse(&value, &mut errors).is_none(), "{value} parsed");
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn levels_resolve_as_bunyan_does() {
        let c = config(json!({"path": "/x", "fields": {"level": "ERROR", "req.method": "GET"}}));
        assert_eq!(c.fields[0].value, json!(50));
        assert_eq!(c.fields[0].given, json!("ERROR"));
        assert_eq!(c.fields[1].value, json!("GET"));
        assert_eq!(
            config(json!({"path": "/x", "fields": {"level": 45}})).fields[0].value,
            json!(45)
        );
        assert_eq!(c.describe(), "(level=ERROR, req.method=GET)");
    }

    #[test]
    fn each_wrong_field_is_named() {
        assert_eq!(fields(json!({"path": "/x"})), ["config.fields"]);
        assert_eq!(fields(json!({"path": "/x", "fields": {}})), ["config.fields"]);
        assert_eq!(fields(json!({"path": "/x", "fields": []})), ["config.fields"]);
        assert_eq!(
            fields(json!({"path": "/x", "fields": {"level": "loud"}})),
            ["config.fields.level"]
        );
        assert_eq!(
            fields(json!({"path": "/x", "fields": {"level": -1}})),
            ["config.fields.level"]
        );
        assert_eq!(
            fields(json!({"path": "/x", "fields": {"a": {"b": 1}}})),
            ["config.fields.a"]
        );
        assert_eq!(fields(json!({"path": "/x", "fields": {"": 1}})), ["config.fields."]);
        assert_eq!(fields(json!({"fields": {"a": 1}})), ["config.path"]);
        assert_eq!(
            fields(json!({"path": "/x", "match": {"pattern": "x", "field": 3}})),
            ["config.match.field"]
        );
        assert_eq!(
            fields(json!({"path": "/x", "match": {"pattern": "x"}, "threshold": "many", "extra": 1})),
            ["config.extra", "config.threshold"]
        );
    }

    #[test]
    fn a_hit_has_every_field_and_matches() {
        let c = config(json!({"path": "/x", "fields": {"level": "error", "req.method": "GET"},
            "match": {"pattern": "timed? ?out", "field": "msg"}}));
        let hit = r#"{"level":50,"msg":"request timed out","req":{"method":"GET"}}"#;
        assert_eq!(
            c.judge(hit),
            Verdict::Hit(json!({"match": serde_json::from_str::<Value>(hit).unwrap()}))
        );
        // Equality, as the original: a fatal record is not an error one.
        assert_eq!(
            c.judge(r#"{"level":60,"msg":"timeout","req":{"method":"GET"}}"#),
            Verdict::Miss
        );
        assert_eq!(
            c.judge(r#"{"level":50.0,"msg":"timeout","req":{"method":"GET"}}"#),
            Verdict::Hit(json!({"match": {"level": 50.0, "msg": "timeout", "req": {"method": "GET"}}}))
        );
        assert_eq!(
            c.judge(r#"{"level":50,"msg":"timeout","req":{"method":"PUT"}}"#),
            Verdict::Miss
        );
        assert_eq!(
            c.judge(r#"{"level":50,"msg":"slow","req":{"method":"GET"}}"#),
            Verdict::Miss
        );
        assert_eq!(
            c.judge(r#"{"level":50,"req.method":"GET","msg":"time out"}"#),
            Verdict::Hit(json!({"match": {"level": 50, "req.method": "GET", "msg": "time out"}}))
        );
        assert_eq!(c.judge("not json"), Verdict::NotRecord);
        assert_eq!(c.judge("[1,2]"), Verdict::NotRecord);
        assert_eq!(c.judge(r#"{"level":50,"msg":"#), Verdict::NotRecord, "a cut record");
    }

    #[test]
    fn a_whole_line_pattern_that_is_absent_needs_no_parse() {
        let c = config(json!({"path": "/x", "match": {"pattern": "boom"}}));
        assert_eq!(c.judge("not json"), Verdict::Miss);
        assert_eq!(c.judge("boom, not json"), Verdict::NotRecord);
        assert!(matches!(c.judge(r#"{"msg":"boom"}"#), Verdict::Hit(_)));
    }

    #[test]
    fn invert_counts_records_not_matching() {
        let c = config(json!({"path": "/x", "fields": {"level": "info"},
            "match": {"pattern": "^heartbeat$", "field": "msg", "invert": true}}));
        assert_eq!(c.judge(r#"{"level":30,"msg":"heartbeat"}"#), Verdict::Miss);
        assert!(matches!(
            c.judge(r#"{"level":30,"msg":"heartbeat late"}"#),
            Verdict::Hit(_)
        ));
        assert!(
            matches!(c.judge(r#"{"level":30}"#), Verdict::Hit(_)),
            "no msg is not a heartbeat"
        );
        assert_eq!(c.judge(r#"{"level":40,"msg":"other"}"#), Verdict::Miss);
        assert_eq!(c.judge("heartbeat"), Verdict::NotRecord);
        assert_eq!(c.describe(), "(msg=/^heartbeat$/ (inverted), level=info)");
    }

    #[test]
    fn a_non_string_field_is_matched_as_its_json() {
        let c = config(json!({"path": "/x", "match": {"pattern": "^5\\d\\d$", "field": "res.statusCode"}}));
        assert!(matches!(c.judge(r#"{"res":{"statusCode":503}}"#), Verdict::Hit(_)));
        assert_eq!(c.judge(r#"{"res":{"statusCode":200}}"#), Verdict::Miss);
    }

    #[test]
    fn a_large_record_is_shown_clipped() {
        let c = config(json!({"path": "/x", "fields": {"level": 50}}));
        let line = format!(r#"{{"level":50,"msg":"{}"}}"#, "x".repeat(10_000));
        let Verdict::Hit(sample) = c.judge(&line) else {
            panic!("not a hit")
        };
        assert!(sample["match"].as_str().unwrap().ends_with("..."));
    }

    fn keys() -> &'static [&'static str] {
        &[
            "path",
            "fields",
            "match",
            "level",
            "msg",
            "req.method",
            "req",
            "method",
            "pattern",
            "field",
            "invert",
        ]
    }

    proptest::proptest! {
        #[test]
        fn any_config_parses_or_names_its_wrong_fields(value in crate::fuzz_json::json_with(
            keys(), &["/var/log/x", "error", "GET", "msg", "req.method", "x+"],
        )) {
            let mut errors = Vec::new();
            let parsed = parse(&value, &mut errors);
            proptest::prop_assert_eq!(parsed.is_some(), errors.is_empty());
            proptest::prop_assert!(errors.iter().all(|e| e.field.starts_with("config")));
        }

        #[test]
        fn any_line_is_judged_without_panic(
            record in crate::fuzz_json::json_with(keys(), &["GET", "x", "error"]),
            junk in ".{0,64}",
        ) {
            let c = config(json!({"path": "/x", "fields": {"level": "error", "req.method": "GET"},
                "match": {"pattern": "x", "field": "msg", "invert": true}}));
            c.judge(&record.to_string());
            c.judge(&junk);
            let c = config(json!({"path": "/x", "match": {"pattern": "x"}}));
            c.judge(&record.to_string());
            c.judge(&junk);
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_reports_records_at_a_level_skipping_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let c = config(json!({"path": path.to_str().unwrap(), "fields": {"level": "error"}, "threshold": 2}));
        let (tx, mut rx) = mpsc::channel::<Observation>(4);
        let follow = Follow {
            poll: Duration::from_secs(1),
            svcs: "/nonexistent/svcs".into(),
        };
        let _task = tokio::spawn(run_with(c, follow, tx));
        tokio::time::sleep(Duration::from_secs(2)).await;
        append(
            &path,
            "plain text\n{\"level\":30,\"msg\":\"ok\"}\n{\"level\":50,\"msg\":\"a\"}\n{\"level\":50,\"msg\":\"b\"}\n",
        );
        let seen = rx.recv().await.unwrap();
        assert_eq!(
            seen.message,
            format!("Log \"{}\" matched (level=error) 2 times in 60 s", path.display())
        );
        assert_eq!(seen.value, Some(json!(2)));
        assert_eq!(
            seen.details,
            Some(json!({"matches": [{"match": {"level": 50, "msg": "a"}}, {"match": {"level": 50, "msg": "b"}}]}))
        );
    }
}
