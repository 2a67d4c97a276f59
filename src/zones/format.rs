//! Parsing one line of a zone source into a [`ZoneEvent`]: the four formats
//! SmartOS has printed (legacy C `zoneevent`, vminfod-based `zoneevent`,
//! `sysevent -j` and `vmadm events -j`, see SPEC §3), each line detected on its
//! own when the source's format is `auto`. Every value is checked here, at the
//! edge, so a hostile or truncated line becomes a [`ParseError`] naming the
//! field, never a panic and never a half-typed event downstream.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{ZoneEvent, ZoneMeta, ZoneSnapshot, ZoneState};

/// Which format a source prints; `Auto` detects it per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    #[default]
    Auto,
    Zoneevent,
    Vmadm,
    Sysevent,
}

/// Why a line could not be understood. The line is logged and skipped.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("line is not valid json: {0}")]
    NotJson(String),
    #[error("line is not a json object")]
    NotObject,
    #[error("line is not a known zone event format")]
    UnknownFormat,
    #[error("field {field} is missing or has the wrong type")]
    BadField { field: &'static str },
    /// The field has the right type but a value we cannot use (an unknown
    /// event type, an unparseable date or uuid, a number out of range).
    /// `value` is cut short so a hostile line cannot flood the log.
    #[error("field {field} has an invalid value {value:?}")]
    BadValue { field: &'static str, value: String },
}

/// Parses one line. `Ok(None)` means a well-formed line that says nothing
/// about zone state (e.g. a vmadm `modify` of other properties).
pub fn parse_line(line: &str, format: LineFormat) -> Result<Option<ZoneEvent>, ParseError> {
    // The caller splits on '\n'; a source on a pty or a file edited elsewhere
    // may still leave '\r' or padding behind.
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(line).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(ParseError::NotObject);
    };
    parse_object(&object, format)
}

/// Parses one line of a zone list (a `list_command` used for reconciliation
/// snapshots): either a JSON object `{"zonename", "state", "alias"?,
/// "owner_uuid"?}` or `zoneadm list -p` output
/// (`zoneid:zonename:state:zonepath:uuid:brand:ip-type`). `Ok(None)` for a
/// blank line or the global zone.
pub fn parse_list_line(line: &str) -> Result<Option<ZoneSnapshot>, ParseError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let zone = if line.starts_with('{') {
        let value: Value = serde_json::from_str(line).map_err(|e| ParseError::NotJson(e.to_string()))?;
        let Value::Object(object) = value else {
            return Err(ParseError::NotObject);
        };
        ZoneSnapshot {
            zonename: zonename(&object, "zonename")?,
            state: state_of(str_field(&object, "state")?, "state")?,
            meta: meta(&object, "alias", "owner_uuid")?,
        }
    } else {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 || fields[1].is_empty() {
            return Err(ParseError::UnknownFormat);
        }
        ZoneSnapshot {
            zonename: fields[1].to_string(),
            state: state_of(fields[2], "state")?,
            meta: ZoneMeta::default(),
        }
    };
    Ok((zone.zonename != "global").then_some(zone))
}

/// Parses one line of `vmadm list -H -o uuid,alias,owner_uuid` (columns
/// separated by white space, `-` for none) into a zone name and its
/// metadata. `Ok(None)` for a blank line. A bad owner is left out rather
/// than failing the line: missing metadata is not an error.
pub fn parse_meta_line(line: &str) -> Result<Option<(String, ZoneMeta)>, ParseError> {
    let mut columns = line.split_whitespace();
    let Some(zonename) = columns.next() else {
        return Ok(None);
    };
    let present = |c: Option<&str>| c.filter(|c| *c != "-").map(str::to_string);
    let alias = present(columns.next());
    let owner = present(columns.next()).and_then(|o| Uuid::parse_str(&o).ok());
    if Uuid::parse_str(zonename).is_err() {
        return Err(bad_value("uuid", zonename));
    }
    Ok(Some((zonename.to_string(), ZoneMeta { alias, owner })))
}

/// Splits the server tag off a line of a source that speaks for several
/// compute nodes (`relay.zones.server_tag`, e.g. a simulator or a load
/// generator): the node's uuid, one space, then the line as it would be
/// without the tag (an event line, or a zone list line). `Ok(None)` for a
/// blank line, which says nothing in any format.
pub fn split_server_tag(line: &str) -> Result<Option<(Uuid, &str)>, ParseError> {
    const FIELD: &str = "server tag";
    let line = line.trim_start();
    if line.trim_end().is_empty() {
        return Ok(None);
    }
    let (tag, rest) = line.split_once(' ').ok_or(ParseError::BadField { field: FIELD })?;
    let server = Uuid::parse_str(tag).map_err(|_| bad_value(FIELD, tag))?;
    Ok(Some((server, rest)))
}

type Object = Map<String, Value>;

fn parse_object(object: &Object, format: LineFormat) -> Result<Option<ZoneEvent>, ParseError> {
    match format {
        LineFormat::Auto => parse_object(object, detect(object)?),
        LineFormat::Zoneevent => zoneevent(object),
        LineFormat::Sysevent => sysevent(object),
        LineFormat::Vmadm => vmadm(object),
    }
}

/// Guesses the format of one line from its keys. vmadm and sysevent both
/// print `type`; their `ready` lines differ only in that vmadm's names a
/// subscriber (`uuid`) and may carry `vms`.
fn detect(object: &Object) -> Result<LineFormat, ParseError> {
    let has = |key: &str| object.contains_key(key);
    match object.get("type").and_then(Value::as_str) {
        // Decided by `type` alone so a broken vmadm line gets an error naming
        // its missing field rather than "unknown format".
        Some("create" | "modify" | "delete") => Ok(LineFormat::Vmadm),
        Some("ready") if has("vms") || has("uuid") || has("zonename") => Ok(LineFormat::Vmadm),
        Some("ready" | "event") => Ok(LineFormat::Sysevent),
        _ if has("data") && (has("class") || has("channel")) => Ok(LineFormat::Sysevent),
        _ if has("zonename") && has("newstate") => Ok(LineFormat::Zoneevent),
        _ => Err(ParseError::UnknownFormat),
    }
}

/// Both `zoneevent`s: legacy C (every value a string, `when` since boot, with
/// `channel/class/subclass`) and vminfod-based (no `channel`, `when` since
/// the epoch). A create has `oldstate: ""`, a delete `newstate: ""`.
fn zoneevent(object: &Object) -> Result<Option<ZoneEvent>, ParseError> {
    let zonename = zonename(object, "zonename")?;
    let newstate = str_field(object, "newstate")?;
    let oldstate = opt_str_field(object, "oldstate")?;
    // Only the vminfod-based zoneevent lacks `channel`, and only its `when`
    // is wall-clock time; the legacy one counts from boot, which says nothing
    // we could compare across machines.
    let time = if object.contains_key("channel") {
        None
    } else {
        epoch_nanos(object, "when")?
    };
    Ok(Some(if newstate.is_empty() {
        ZoneEvent::Deleted { zonename, time }
    } else if oldstate == Some("") {
        ZoneEvent::Created {
            zonename,
            state: ZoneState::parse(newstate),
            time,
            meta: ZoneMeta::default(),
        }
    } else {
        ZoneEvent::State {
            zonename,
            old: oldstate.and_then(ZoneState::parse),
            new: state_of(newstate, "newstate")?,
            time,
            meta: ZoneMeta::default(),
        }
    }))
}

/// `sysevent -j`: the kernel's zone status event inside an envelope, or the
/// `-r` ready line.
fn sysevent(object: &Object) -> Result<Option<ZoneEvent>, ParseError> {
    match str_field(object, "type")? {
        "ready" => return Ok(Some(ZoneEvent::Ready)),
        "event" => {}
        other => return Err(bad_value("type", other)),
    }
    // A wider subscription than ours (an `exec` source) may print other
    // events; they are well-formed, just not about zone state.
    let is_zone_status = str_field(object, "class")? == "status"
        && opt_str_field(object, "subclass")?.is_none_or(|s| s == "change")
        && opt_str_field(object, "channel")?.is_none_or(|c| c == "com.sun:zones:status");
    if !is_zone_status {
        return Ok(None);
    }
    let data = object
        .get("data")
        .and_then(Value::as_object)
        .ok_or(ParseError::BadField { field: "data" })?;
    Ok(Some(ZoneEvent::State {
        zonename: zonename(data, "data.zonename")?,
        old: opt_str_field(data, "data.oldstate")?.and_then(ZoneState::parse),
        new: state_of(str_field(data, "data.newstate")?, "data.newstate")?,
        // `data.when` is gethrtime(), since boot; `date` is when sysevent
        // received the event, the best wall-clock time there is.
        time: rfc3339(object, "date")?,
        meta: ZoneMeta::default(),
    }))
}

/// `vmadm events -j`: vminfod's create/modify/delete/ready events.
fn vmadm(object: &Object) -> Result<Option<ZoneEvent>, ParseError> {
    let kind = str_field(object, "type")?;
    let time = rfc3339(object, "date")?;
    Ok(match kind {
        "create" => {
            let vm = opt_object(object, "vm")?;
            let state = match vm {
                Some(vm) => opt_state(vm, "vm.zone_state")?,
                None => None,
            };
            Some(ZoneEvent::Created {
                zonename: zonename(object, "zonename")?,
                state,
                time,
                meta: vm_meta(vm)?,
            })
        }
        "modify" => {
            let zonename = zonename(object, "zonename")?;
            let changes = object
                .get("changes")
                .and_then(Value::as_array)
                .ok_or(ParseError::BadField { field: "changes" })?;
            match zone_state_change(changes)? {
                Some((old, new)) => Some(ZoneEvent::State {
                    zonename,
                    old,
                    new,
                    time,
                    meta: vm_meta(opt_object(object, "vm")?)?,
                }),
                // A new owner or alias (`vmadm update`): metadata only.
                None if changes_touch(changes, &["owner_uuid", "alias"]) => {
                    let meta = vm_meta(opt_object(object, "vm")?)?;
                    (meta != ZoneMeta::default()).then(|| ZoneEvent::Meta(vec![(zonename, meta)]))
                }
                None => None,
            }
        }
        "delete" => Some(ZoneEvent::Deleted {
            zonename: zonename(object, "zonename")?,
            time,
        }),
        "ready" => match object.get("vms") {
            None | Some(Value::Null) => Some(ZoneEvent::Ready),
            Some(Value::Object(vms)) => Some(ZoneEvent::Snapshot(snapshot(vms)?)),
            Some(_) => return Err(ParseError::BadField { field: "vms" }),
        },
        other => return Err(bad_value("type", other)),
    })
}

/// Finds the `zone_state` entry among a modify's changes (vminfod batches
/// every property that changed, e.g. `state`, `zoneid`, `pid`, in one event).
fn zone_state_change(changes: &[Value]) -> Result<Option<(Option<ZoneState>, ZoneState)>, ParseError> {
    for change in changes {
        let change = change.as_object().ok_or(ParseError::BadField { field: "changes" })?;
        let path = change
            .get("path")
            .and_then(Value::as_array)
            .ok_or(ParseError::BadField { field: "changes.path" })?;
        if matches!(path.as_slice(), [Value::String(p)] if p == "zone_state") {
            // `added` has no oldValue; `changed` has both.
            let old = opt_state(change, "changes.oldValue")?;
            let new = state_of(str_field(change, "changes.newValue")?, "changes.newValue")?;
            return Ok(Some((old, new)));
        }
    }
    Ok(None)
}

/// Whether a modify changed one of these top-level properties.
fn changes_touch(changes: &[Value], properties: &[&str]) -> bool {
    changes.iter().any(|change| {
        matches!(change.get("path").and_then(Value::as_array).map(Vec::as_slice),
            Some([Value::String(p)]) if properties.contains(&p.as_str()))
    })
}

fn snapshot(vms: &Object) -> Result<Vec<ZoneSnapshot>, ParseError> {
    vms.iter()
        .map(|(zonename, vm)| {
            let vm = vm.as_object().ok_or(ParseError::BadField { field: "vms" })?;
            if zonename.is_empty() {
                return Err(bad_value("vms", zonename));
            }
            Ok(ZoneSnapshot {
                zonename: zonename.clone(),
                state: state_of(str_field(vm, "vms.*.zone_state")?, "vms.*.zone_state")?,
                meta: meta(vm, "vms.*.alias", "vms.*.owner_uuid")?,
            })
        })
        .collect()
}

fn vm_meta(vm: Option<&Object>) -> Result<ZoneMeta, ParseError> {
    match vm {
        Some(vm) => meta(vm, "vm.alias", "vm.owner_uuid"),
        None => Ok(ZoneMeta::default()),
    }
}

fn meta(vm: &Object, alias_field: &'static str, owner_field: &'static str) -> Result<ZoneMeta, ParseError> {
    let alias = opt_str_field(vm, alias_field)?
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    let owner = match opt_str_field(vm, owner_field)? {
        Some(owner) => Some(Uuid::parse_str(owner).map_err(|_| bad_value(owner_field, owner))?),
        None => None,
    };
    Ok(ZoneMeta { alias, owner })
}

// Field helpers. `field` is the dotted name used in errors; the key looked up
// is its last segment, so "data.zonename" reads `zonename` from `data`.

fn key_of(field: &'static str) -> &'static str {
    field.rsplit('.').next().unwrap_or(field)
}

fn str_field<'a>(object: &'a Object, field: &'static str) -> Result<&'a str, ParseError> {
    object
        .get(key_of(field))
        .and_then(Value::as_str)
        .ok_or(ParseError::BadField { field })
}

/// A string that may be missing; `null` counts as missing because vmadm
/// prints unset properties that way.
fn opt_str_field<'a>(object: &'a Object, field: &'static str) -> Result<Option<&'a str>, ParseError> {
    match object.get(key_of(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ParseError::BadField { field }),
    }
}

fn opt_object<'a>(object: &'a Object, field: &'static str) -> Result<Option<&'a Object>, ParseError> {
    match object.get(key_of(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(ParseError::BadField { field }),
    }
}

fn zonename(object: &Object, field: &'static str) -> Result<String, ParseError> {
    match str_field(object, field)? {
        "" => Err(bad_value(field, "")),
        name => Ok(name.to_owned()),
    }
}

/// A state that must be present: empty is "no state", which only a create's
/// old state and a delete's new state may be.
fn state_of(name: &str, field: &'static str) -> Result<ZoneState, ParseError> {
    ZoneState::parse(name).ok_or_else(|| bad_value(field, name))
}

fn opt_state(object: &Object, field: &'static str) -> Result<Option<ZoneState>, ParseError> {
    Ok(opt_str_field(object, field)?.and_then(ZoneState::parse))
}

fn rfc3339(object: &Object, field: &'static str) -> Result<Option<DateTime<Utc>>, ParseError> {
    match opt_str_field(object, field)? {
        None => Ok(None),
        Some(date) => DateTime::parse_from_rfc3339(date)
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|_| bad_value(field, date)),
    }
}

/// Below this a "since the epoch" `when` is really since boot (no machine has
/// been up since 2000): an `exec` source may print legacy values without the
/// `channel` key, and 1970 timestamps would be worse than none.
const EARLIEST_EPOCH_NANOS: i64 = 946_684_800 * 1_000_000_000;

fn epoch_nanos(object: &Object, field: &'static str) -> Result<Option<DateTime<Utc>>, ParseError> {
    let text;
    let digits = match object.get(key_of(field)) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.as_str(),
        // Not what zoneevent prints, but an `exec` source might.
        Some(Value::Number(n)) => {
            text = n.to_string();
            text.as_str()
        }
        Some(_) => return Err(ParseError::BadField { field }),
    };
    // i64 nanoseconds reach 2262, the limit of what chrono can hold.
    let nanos: i64 = match digits.parse() {
        Ok(n) if n >= 0 => n,
        _ => return Err(bad_value(field, digits)),
    };
    Ok((nanos >= EARLIEST_EPOCH_NANOS).then(|| DateTime::from_timestamp_nanos(nanos)))
}

fn bad_value(field: &'static str, value: &str) -> ParseError {
    const SHOWN_CHARS: usize = 64;
    let value = match value.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    };
    ParseError::BadValue { field, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ZoneState::*;

    const Z: &str = "fb622681-3d62-413b-dc8a-c7515367464f";

    fn auto(line: &str) -> Result<Option<ZoneEvent>, ParseError> {
        parse_line(line, LineFormat::Auto)
    }

    fn parsed(line: &str, format: LineFormat) -> ZoneEvent {
        match parse_line(line, format) {
            Ok(Some(event)) => event,
            other => panic!("{line}: expected an event, got {other:?}"),
        }
    }

    fn state(old: Option<ZoneState>, new: ZoneState, time: Option<DateTime<Utc>>) -> ZoneEvent {
        ZoneEvent::State {
            zonename: Z.to_owned(),
            old,
            new,
            time,
            meta: ZoneMeta::default(),
        }
    }

    fn utc(ms: i64) -> Option<DateTime<Utc>> {
        Some(Utc.timestamp_millis_opt(ms).unwrap())
    }

    fn iso(s: &str) -> Option<DateTime<Utc>> {
        Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    // --- zoneevent, legacy C --------------------------------------------

    const LEGACY: &str = r#"{"zonename": "fb622681-3d62-413b-dc8a-c7515367464f", "newstate": "running", "oldstate": "ready", "zoneid": "19", "when": "4520616213191", "channel": "com.sun:zones:status", "class": "status", "subclass": "change"}"#;

    #[test]
    fn legacy_zoneevent_has_string_values_and_no_wall_clock_time() {
        let expected = state(Some(Ready), Running, None);
        assert_eq!(parsed(LEGACY, LineFormat::Zoneevent), expected);
        assert_eq!(parsed(LEGACY, LineFormat::Auto), expected);
    }

    #[test]
    fn legacy_zoneevent_since_boot_when_is_never_a_time_even_if_huge() {
        // An uptime that would read as a plausible epoch time still says
        // nothing: `channel` marks the legacy format.
        let line = LEGACY.replace("4520616213191", "1494617613097000000");
        assert_eq!(parsed(&line, LineFormat::Auto), state(Some(Ready), Running, None));
    }

    #[test]
    fn kernel_same_state_repeats_are_reported_as_is() {
        for (old, new, expected) in [
            ("shutting_down", "shutting_down", (ShuttingDown, ShuttingDown)),
            ("ready", "ready", (Ready, Ready)),
        ] {
            let line = LEGACY
                .replace(r#""newstate": "running""#, &format!(r#""newstate": "{new}""#))
                .replace(r#""oldstate": "ready""#, &format!(r#""oldstate": "{old}""#));
            assert_eq!(
                parsed(&line, LineFormat::Auto),
                state(Some(expected.0), expected.1, None)
            );
        }
    }

    #[test]
    fn legacy_full_reboot_sequence_parses_in_order() {
        let steps = [
            ("running", "shutting_down"),
            ("shutting_down", "shutting_down"),
            ("shutting_down", "shutting_down"),
            ("shutting_down", "shutting_down"),
            ("shutting_down", "uninitialized"),
            ("uninitialized", "initialized"),
            ("initialized", "ready"),
            ("ready", "ready"),
            ("ready", "running"),
        ];
        let news: Vec<ZoneState> = steps
            .iter()
            .map(|(old, new)| {
                let line = format!(
                    r#"{{"zonename": "{Z}", "newstate": "{new}", "oldstate": "{old}", "zoneid": "19", "when": "1", "channel": "com.sun:zones:status", "class": "status", "subclass": "change"}}"#
                );
                match parsed(&line, LineFormat::Zoneevent) {
                    ZoneEvent::State { new, .. } => new,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(
            news,
            [
                ShuttingDown,
                ShuttingDown,
                ShuttingDown,
                ShuttingDown,
                Uninitialized,
                Initialized,
                Ready,
                Ready,
                Running
            ]
        );
    }

    // --- zoneevent, current (vminfod) ---------------------------------------

    const CURRENT: &str = r#"{"zonename":"fb622681-3d62-413b-dc8a-c7515367464f","oldstate":"ready","newstate":"running","zoneid":"463","when":"1494617613097000000"}"#;

    #[test]
    fn current_zoneevent_when_is_epoch_nanos_as_a_string() {
        let expected = state(Some(Ready), Running, utc(1_494_617_613_097));
        assert_eq!(parsed(CURRENT, LineFormat::Zoneevent), expected);
        assert_eq!(parsed(CURRENT, LineFormat::Auto), expected);
    }

    #[test]
    fn current_zoneevent_create_has_empty_oldstate() {
        let line = r#"{"zonename":"fb622681-3d62-413b-dc8a-c7515367464f","oldstate":"","newstate":"uninitialized","zoneid":"-1","when":"1494617613097000000"}"#;
        assert_eq!(
            parsed(line, LineFormat::Auto),
            ZoneEvent::Created {
                zonename: Z.to_owned(),
                state: Some(Uninitialized),
                time: utc(1_494_617_613_097),
                meta: ZoneMeta::default(),
            }
        );
    }

    #[test]
    fn current_zoneevent_delete_has_empty_newstate_and_no_oldstate() {
        let line = r#"{"zonename":"fb622681-3d62-413b-dc8a-c7515367464f","newstate":"","zoneid":"-1","when":"1494617613097000000"}"#;
        assert_eq!(
            parsed(line, LineFormat::Auto),
            ZoneEvent::Deleted {
                zonename: Z.to_owned(),
                time: utc(1_494_617_613_097),
            }
        );
    }

    #[test]
    fn installed_shown_as_uninitialized_is_parsed_as_printed() {
        // vminfod says installed→ready; zoneevent prints uninitialized→ready.
        let line = r#"{"zonename":"fb622681-3d62-413b-dc8a-c7515367464f","oldstate":"uninitialized","newstate":"ready","zoneid":"463","when":"1494617613097000000"}"#;
        assert_eq!(
            parsed(line, LineFormat::Auto),
            state(Some(Uninitialized), Ready, utc(1_494_617_613_097))
        );
    }

    #[test]
    fn coalesced_uninitialized_to_running_is_one_event() {
        let line = r#"{"zonename":"fb622681-3d62-413b-dc8a-c7515367464f","oldstate":"uninitialized","newstate":"running","zoneid":"464","when":"1494617620000000000"}"#;
        assert_eq!(
            parsed(line, LineFormat::Auto),
            state(Some(Uninitialized), Running, utc(1_494_617_620_000))
        );
    }

    #[test]
    fn since_boot_when_without_channel_gives_no_time() {
        let line = CURRENT.replace("1494617613097000000", "4520616213191");
        assert_eq!(parsed(&line, LineFormat::Auto), state(Some(Ready), Running, None));
    }

    #[test]
    fn numeric_when_from_an_exec_source_is_accepted() {
        let line = CURRENT.replace(r#""1494617613097000000""#, "1494617613097000000");
        assert_eq!(
            parsed(&line, LineFormat::Auto),
            state(Some(Ready), Running, utc(1_494_617_613_097))
        );
    }

    #[test]
    fn unknown_state_names_are_other() {
        let line = CURRENT.replace(r#""newstate":"running""#, r#""newstate":"dying""#);
        assert_eq!(
            parsed(&line, LineFormat::Auto),
            state(Some(Ready), Other, utc(1_494_617_613_097))
        );
    }

    // --- sysevent -j ----------------------------------------------------------

    const SYSEVENT: &str = r#"{"date":"2024-05-01T12:00:00.123Z","type":"event","vendor":"sun.com","publisher":"kernel","class":"status","subclass":"change","pid":0,"data":{"zonename":"fb622681-3d62-413b-dc8a-c7515367464f","newstate":"running","oldstate":"ready","zoneid":19,"when":4520616213191},"channel":"com.sun:zones:status"}"#;

    #[test]
    fn sysevent_takes_zone_fields_from_data_and_time_from_date() {
        let expected = state(Some(Ready), Running, iso("2024-05-01T12:00:00.123Z"));
        assert_eq!(parsed(SYSEVENT, LineFormat::Sysevent), expected);
        assert_eq!(parsed(SYSEVENT, LineFormat::Auto), expected);
    }

    #[test]
    fn sysevent_ready_line_is_ready() {
        let line = r#"{"date":"2024-05-01T12:00:00.000Z","type":"ready"}"#;
        assert_eq!(parsed(line, LineFormat::Sysevent), ZoneEvent::Ready);
        assert_eq!(parsed(line, LineFormat::Auto), ZoneEvent::Ready);
    }

    #[test]
    fn sysevent_of_another_class_says_nothing() {
        let line = r#"{"date":"2024-05-01T12:00:00.123Z","type":"event","vendor":"sun.com","publisher":"kernel","class":"init","subclass":"restart","pid":0,"data":{"zonename":"z1","restarts":2},"channel":"com.sun:zones:status"}"#;
        assert_eq!(auto(line), Ok(None));
        let line = SYSEVENT.replace("com.sun:zones:status", "com.sun:other");
        assert_eq!(auto(&line), Ok(None));
    }

    #[test]
    fn sysevent_without_data_is_an_error() {
        let line =
            r#"{"date":"2024-05-01T12:00:00.123Z","type":"event","class":"status","subclass":"change","data":[1]}"#;
        assert_eq!(auto(line), Err(ParseError::BadField { field: "data" }));
        let line = SYSEVENT.replace(r#""newstate":"running""#, r#""newstate":7"#);
        assert_eq!(auto(&line), Err(ParseError::BadField { field: "data.newstate" }));
    }

    // --- vmadm events -j ------------------------------------------------------

    const OWNER: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

    fn web0() -> ZoneMeta {
        ZoneMeta {
            alias: Some("web0".to_owned()),
            owner: Some(OWNER.parse().unwrap()),
        }
    }

    #[test]
    fn vmadm_create_takes_state_and_meta_from_vm() {
        let line = format!(
            r#"{{"type":"create","date":"2018-10-01T12:00:00.000Z","zonename":"{Z}","uuid":"{Z}","vm":{{"uuid":"{Z}","alias":"web0","owner_uuid":"{OWNER}","zone_state":"installed","state":"stopped","ram":1024,"nics":[]}}}}"#
        );
        assert_eq!(
            parsed(&line, LineFormat::Auto),
            ZoneEvent::Created {
                zonename: Z.to_owned(),
                state: Some(Installed),
                time: iso("2018-10-01T12:00:00Z"),
                meta: web0(),
            }
        );
    }

    #[test]
    fn vmadm_modify_finds_zone_state_among_several_changes() {
        let line = format!(
            r#"{{"type":"modify","date":"2018-10-01T12:00:00.000Z","zonename":"{Z}","uuid":"{Z}","vm":{{"uuid":"{Z}","alias":"web0","owner_uuid":"{OWNER}","zone_state":"running","state":"running"}},"changes":[{{"prettyPath":"state","path":["state"],"action":"changed","oldValue":"stopped","newValue":"running"}},{{"prettyPath":"pid","path":["pid"],"action":"added","newValue":4242}},{{"prettyPath":"zone_state","path":["zone_state"],"action":"changed","oldValue":"ready","newValue":"running"}},{{"prettyPath":"zoneid","path":["zoneid"],"action":"changed","oldValue":19,"newValue":20}}]}}"#
        );
        assert_eq!(
            parsed(&line, LineFormat::Vmadm),
            ZoneEvent::State {
                zonename: Z.to_owned(),
                old: Some(Ready),
                new: Running,
                time: iso("2018-10-01T12:00:00Z"),
                meta: web0(),
            }
        );
    }

    #[test]
    fn vmadm_modify_coalesced_and_added_zone_state() {
        let line = format!(
            r#"{{"type":"modify","date":"2018-10-01T12:00:00.000Z","zonename":"{Z}","uuid":"{Z}","changes":[{{"prettyPath":"zone_state","path":["zone_state"],"action":"changed","oldValue":"installed","newValue":"running"}}]}}"#
        );
        assert_eq!(
            parsed(&line, LineFormat::Auto),
            state(Some(Installed), Running, iso("2018-10-01T12:00:00Z"))
        );
        let line = format!(
            r#"{{"type":"modify","date":"2018-10-01T12:00:00.000Z","zonename":"{Z}","uuid":"{Z}","changes":[{{"prettyPath":"zone_state","path":["zone_state"],"action":"added","newValue":"running"}}]}}"#
        );
        assert_eq!(
            parsed(&line, LineFormat::Auto),
            state(None, Running, iso("2018-10-01T12:00:00Z"))
        );
    }

    #[test]
    fn vmadm_modify_of_other_properties_says_nothing() {
        let line = format!(
            r#"{{"type":"modify","date":"2018-10-01T12:00:00.000Z","zonename":"{Z}","uuid":"{Z}","vm":{{"alias":"web0"}},"changes":[{{"prettyPath":"customer_metadata.foo","path":["customer_metadata","foo"],"action":"added","newValue":"bar"}},{{"prettyPath":"zone_state.x","path":["zone_state","x"],"action":"added","newValue":"y"}}]}}"#
        );
        assert_eq!(auto(&line), Ok(None));
    }

    #[test]
    fn vmadm_modify_of_the_owner_or_alias_is_metadata() {
        let line = format!(
            r#"{{"type":"modify","date":"2018-10-01T12:00:00.000Z","zonename":"{Z}","uuid":"{Z}","vm":{{"alias":"web0","owner_uuid":"{OWNER}","zone_state":"running"}},"changes":[{{"prettyPath":"owner_uuid","path":["owner_uuid"],"action":"changed","oldValue":"930896af-bf8c-48d4-885c-6573a94b1853","newValue":"{OWNER}"}}]}}"#
        );
        assert_eq!(
            parsed(&line, LineFormat::Auto),
            ZoneEvent::Meta(vec![(
                Z.to_owned(),
                ZoneMeta {
                    alias: Some("web0".into()),
                    owner: Some(OWNER.parse().unwrap()),
                }
            )])
        );
    }

    #[test]
    fn vmadm_delete_is_deleted() {
        let line = format!(r#"{{"type":"delete","date":"2018-10-01T12:00:00.000Z","zonename":"{Z}","uuid":"{Z}"}}"#);
        assert_eq!(
            parsed(&line, LineFormat::Auto),
            ZoneEvent::Deleted {
                zonename: Z.to_owned(),
                time: iso("2018-10-01T12:00:00Z"),
            }
        );
    }

    #[test]
    fn vmadm_ready_with_vms_is_a_snapshot() {
        let line = format!(
            r#"{{"type":"ready","date":"2018-10-01T12:00:00.000Z","uuid":"a1b2c3d4-0000-4000-8000-000000000001","vms":{{"{Z}":{{"uuid":"{Z}","alias":"web0","owner_uuid":"{OWNER}","zone_state":"running","state":"running"}},"global-ish":{{"zone_state":"installed","state":"stopped","alias":null}}}}}}"#
        );
        let ZoneEvent::Snapshot(mut zones) = parsed(&line, LineFormat::Auto) else {
            panic!("expected a snapshot");
        };
        zones.sort_by(|a, b| a.zonename.cmp(&b.zonename));
        assert_eq!(
            zones,
            vec![
                ZoneSnapshot {
                    zonename: Z.to_owned(),
                    state: Running,
                    meta: web0(),
                },
                ZoneSnapshot {
                    zonename: "global-ish".to_owned(),
                    state: Installed,
                    meta: ZoneMeta::default(),
                },
            ]
        );
    }

    #[test]
    fn vmadm_ready_without_vms_is_ready() {
        let line =
            r#"{"type":"ready","date":"2018-10-01T12:00:00.000Z","uuid":"a1b2c3d4-0000-4000-8000-000000000001"}"#;
        assert_eq!(parsed(line, LineFormat::Vmadm), ZoneEvent::Ready);
        assert_eq!(parsed(line, LineFormat::Auto), ZoneEvent::Ready);
    }

    #[test]
    fn vmadm_bad_meta_and_snapshot_entries_are_errors() {
        let line = format!(
            r#"{{"type":"create","date":"2018-10-01T12:00:00.000Z","zonename":"{Z}","vm":{{"owner_uuid":"not-a-uuid"}}}}"#
        );
        assert_eq!(
            auto(&line),
            Err(ParseError::BadValue {
                field: "vm.owner_uuid",
                value: "not-a-uuid".to_owned()
            })
        );
        let line = r#"{"type":"ready","uuid":"x","vms":{"z1":{"state":"running"}}}"#;
        assert_eq!(
            auto(line),
            Err(ParseError::BadField {
                field: "vms.*.zone_state"
            })
        );
        let line = r#"{"type":"ready","uuid":"x","vms":["z1"]}"#;
        assert_eq!(auto(line), Err(ParseError::BadField { field: "vms" }));
        let line = r#"{"type":"modify","zonename":"z1","changes":[{"path":"zone_state"}]}"#;
        assert_eq!(auto(line), Err(ParseError::BadField { field: "changes.path" }));
        let line = r#"{"type":"modify","zonename":"z1"}"#;
        assert_eq!(auto(line), Err(ParseError::BadField { field: "changes" }));
    }

    // --- detection and explicit formats ---------------------------------------

    #[test]
    fn an_explicit_format_parses_only_that_format() {
        assert_eq!(
            parse_line(SYSEVENT, LineFormat::Zoneevent),
            Err(ParseError::BadField { field: "zonename" })
        );
        assert_eq!(
            parse_line(CURRENT, LineFormat::Vmadm),
            Err(ParseError::BadField { field: "type" })
        );
        assert_eq!(
            parse_line(SYSEVENT, LineFormat::Vmadm),
            Err(ParseError::BadValue {
                field: "type",
                value: "event".to_owned()
            })
        );
        assert_eq!(
            parse_line(LEGACY, LineFormat::Sysevent),
            Err(ParseError::BadField { field: "type" })
        );
    }

    #[test]
    fn lines_of_no_known_format_are_unknown() {
        assert_eq!(auto(r#"{"hello":"world"}"#), Err(ParseError::UnknownFormat));
        assert_eq!(auto(r#"{"zonename":"z1"}"#), Err(ParseError::UnknownFormat));
        assert_eq!(
            auto(r#"{"type":"party","zonename":"z1"}"#),
            Err(ParseError::UnknownFormat)
        );
    }

    // --- hostile input ----------------------------------------------------------

    #[test]
    fn blank_lines_say_nothing_and_padding_is_ignored() {
        for line in ["", "   ", "\r", "\r\n", "\t \n"] {
            assert_eq!(auto(line), Ok(None), "{line:?}");
        }
        let padded = format!("  {CURRENT}\r\n");
        assert_eq!(parsed(&padded, LineFormat::Auto), parsed(CURRENT, LineFormat::Auto));
    }

    #[test]
    fn non_json_and_non_objects_are_errors() {
        for line in ["garbage", "{", r#"{"zonename":"#, "{'zonename': 'z1'}", "1e400"] {
            assert!(
                matches!(auto(line), Err(ParseError::NotJson(_))),
                "{line:?}: {:?}",
                auto(line)
            );
        }
        for line in ["[]", "[1,2]", "42", r#""running""#, "null", "true"] {
            assert_eq!(auto(line), Err(ParseError::NotObject), "{line:?}");
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases: [(&str, &'static str); 5] = [
            (r#"{"zonename":42,"newstate":"running","oldstate":"ready"}"#, "zonename"),
            (r#"{"zonename":"z1","newstate":null,"oldstate":"ready"}"#, "newstate"),
            (
                r#"{"zonename":"z1","newstate":"running","oldstate":["ready"]}"#,
                "oldstate",
            ),
            (r#"{"zonename":"z1","newstate":"running","when":{"ns":1}}"#, "when"),
            (r#"{"type":"create","zonename":"z1","vm":"web0"}"#, "vm"),
        ];
        for (line, field) in cases {
            assert_eq!(auto(line), Err(ParseError::BadField { field }), "{line}");
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases: [(&str, &'static str); 7] = [
            (r#"{"zonename":"","newstate":"running"}"#, "zonename"),
            (
                r#"{"zonename":"z1","newstate":"running","when":"99999999999999999999999"}"#,
                "when",
            ),
            (r#"{"zonename":"z1","newstate":"running","when":"-5"}"#, "when"),
            (r#"{"zonename":"z1","newstate":"running","when":1.5e300}"#, "when"),
            (r#"{"zonename":"z1","newstate":"running","when":" 12"}"#, "when"),
            (r#"{"type":"delete","zonename":"z1","date":"yesterday"}"#, "date"),
            (
                r#"{"type":"modify","zonename":"z1","changes":[{"path":["zone_state"],"newValue":""}]}"#,
                "changes.newValue",
            ),
        ];
        for (line, field) in cases {
            assert!(
                matches!(auto(line), Err(ParseError::BadValue { field: f, .. }) if f == field),
                "{line}: {:?}",
                auto(line)
            );
        }
    }

    #[test]
    fn huge_values_are_cut_short_in_errors() {
        let line = format!(r#"{{"type":"{}","zonename":"z1"}}"#, "é".repeat(10_000));
        let Err(ParseError::BadValue { value, .. }) = parse_line(&line, LineFormat::Vmadm) else {
            panic!("expected a bad value");
        };
        assert_eq!(value.chars().count(), 65);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let line = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(auto(&line), Err(ParseError::NotJson(_))));
    }

    #[test]
    fn error_messages_are_lower_case_and_name_the_field() {
        assert_eq!(
            ParseError::BadField { field: "data.newstate" }.to_string(),
            "field data.newstate is missing or has the wrong type"
        );
        assert_eq!(
            bad_value("when", "-5").to_string(),
            r#"field when has an invalid value "-5""#
        );
    }

    #[test]
    fn truncated_lines_never_panic() {
        let vmadm_ready = format!(
            r#"{{"type":"ready","uuid":"x","vms":{{"{Z}":{{"alias":"wéb0","owner_uuid":"{OWNER}","zone_state":"running"}}}}}}"#
        );
        for line in [LEGACY, CURRENT, SYSEVENT, vmadm_ready.as_str()] {
            for (cut, _) in line.char_indices() {
                for format in [
                    LineFormat::Auto,
                    LineFormat::Zoneevent,
                    LineFormat::Sysevent,
                    LineFormat::Vmadm,
                ] {
                    let _ = parse_line(&line[..cut], format);
                }
            }
        }
    }

    #[test]
    fn zone_lists_are_json_lines_or_zoneadm_parsable_output() {
        let json =
            parse_list_line(r#"{"zonename":"fb622681-3d62-413b-dc8a-c7515367464f","state":"running","alias":"web0"}"#)
                .unwrap()
                .unwrap();
        assert_eq!(json.state, ZoneState::Running);
        assert_eq!(json.meta.alias.as_deref(), Some("web0"));
        let zoneadm = parse_list_line("5:fb622681-3d62-413b-dc8a-c7515367464f:installed:/zones/fb62:fb622681-3d62-413b-dc8a-c7515367464f:joyent:excl")
            .unwrap()
            .unwrap();
        assert_eq!(zoneadm.zonename, "fb622681-3d62-413b-dc8a-c7515367464f");
        assert_eq!(zoneadm.state, ZoneState::Installed);
        assert_eq!(parse_list_line("0:global:running:/::joyent:shared").unwrap(), None);
        assert_eq!(parse_list_line("  ").unwrap(), None);
        assert!(parse_list_line("garbage").is_err());
        assert!(parse_list_line(r#"{"zonename":"x"}"#).is_err());
    }

    #[test]
    fn vmadm_list_lines_give_alias_and_owner_and_dashes_are_none() {
        let (zone, meta) =
            parse_meta_line("fb622681-3d62-413b-dc8a-c7515367464f  web0  930896af-bf8c-48d4-885c-6573a94b1853")
                .unwrap()
                .unwrap();
        assert_eq!(zone, "fb622681-3d62-413b-dc8a-c7515367464f");
        assert_eq!(meta.alias.as_deref(), Some("web0"));
        assert!(meta.owner.is_some());
        let (_, meta) = parse_meta_line("fb622681-3d62-413b-dc8a-c7515367464f - -")
            .unwrap()
            .unwrap();
        assert_eq!(meta, ZoneMeta::default());
        assert_eq!(parse_meta_line("   ").unwrap(), None);
        assert!(parse_meta_line("not-a-uuid web0 -").is_err());
    }

    // --- server tags -------------------------------------------------------------

    const SERVER: &str = "564d9a0c-6d4b-11ef-8d5e-3b7c1f0a2e11";

    #[test]
    fn a_server_tag_is_split_off_and_the_rest_parses_as_usual() {
        let tagged = format!("{SERVER} {LEGACY}");
        let (server, rest) = split_server_tag(&tagged).unwrap().unwrap();
        assert_eq!(server, SERVER.parse::<Uuid>().unwrap());
        // Only the first space separates: the line keeps its own spaces.
        assert_eq!(rest, LEGACY);
        assert_eq!(parsed(rest, LineFormat::Auto), parsed(LEGACY, LineFormat::Auto));
        let padded = format!("  {SERVER} 5:{Z}:running:/zones/x\r");
        let (_, rest) = split_server_tag(&padded).unwrap().unwrap();
        assert_eq!(parse_list_line(rest).unwrap().unwrap().zonename, Z);
    }

    #[test]
    fn a_line_without_a_space_after_a_tag_has_no_server_tag() {
        let untagged_compact = r#"{"zonename":"z1","newstate":"running"}"#;
        for line in [untagged_compact, SERVER, "garbage"] {
            assert_eq!(
                split_server_tag(line),
                Err(ParseError::BadField { field: "server tag" }),
                "{line}"
            );
        }
    }

    #[test]
    fn a_server_tag_that_is_not_a_uuid_is_a_bad_value() {
        // An untagged line whose JSON has spaces: its first word is no uuid.
        assert_eq!(
            split_server_tag(LEGACY),
            Err(ParseError::BadValue {
                field: "server tag",
                value: r#"{"zonename":"#.to_owned()
            })
        );
        let line = format!("{} {CURRENT}", &SERVER[1..]);
        assert!(matches!(
            split_server_tag(&line),
            Err(ParseError::BadValue {
                field: "server tag",
                ..
            })
        ));
        assert_eq!(
            split_server_tag(&format!("{SERVER} x")).unwrap().unwrap().1,
            "x",
            "the rest is the parser's business"
        );
    }

    #[test]
    fn a_blank_tagged_line_says_nothing() {
        for line in ["", "   ", "\r", "\t \n"] {
            assert_eq!(split_server_tag(line), Ok(None), "{line:?}");
        }
    }

    mod fuzz {
        //! Arbitrary lines, and arbitrary JSON shaped like the formats,
        //! never panic any line parser: they answer a value or an error.
        use proptest::prelude::*;

        use super::super::*;

        fn json() -> impl Strategy<Value = serde_json::Value> {
            crate::fuzz_json::json_with(
                &[
                    "zonename", "newstate", "oldstate", "when", "uuid", "state", "class", "data",
                ],
                &["running", "6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11"],
            )
        }

        fn every_parser(line: &str) {
            for format in [
                LineFormat::Auto,
                LineFormat::Zoneevent,
                LineFormat::Vmadm,
                LineFormat::Sysevent,
            ] {
                let _ = parse_line(line, format);
            }
            let _ = parse_list_line(line);
            let _ = parse_meta_line(line);
            let _ = split_server_tag(line);
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                every_parser(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn arbitrary_json_never_panics(value in json()) {
                let line = value.to_string();
                every_parser(&line);
                // A server-tagged line too (`<server uuid> <line>`).
                every_parser(&format!("6e8f5b0a-2c7e-4d43-9a37-0d3c3f6a2b11 {line}"));
            }
        }
    }
}
