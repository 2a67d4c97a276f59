//! `amon alarms list|get|close|reopen|suppress|unsuppress|delete`.

use std::collections::HashMap;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use uuid::Uuid;

use super::client::Request;
use super::table::{self, Table, NONE};
use super::{emit, pub_path, ClientOpts, Ctx};

#[derive(Debug, Args)]
pub struct AlarmsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub verb: AlarmsVerb,
}

#[derive(Debug, Subcommand)]
pub enum AlarmsVerb {
    /// Lists alarms (by default the open ones and those closed in the last hour).
    #[command(alias = "ls")]
    List {
        /// Which alarms: recent (the default), open, closed or all.
        #[arg(long, value_enum)]
        state: Option<AlarmState>,
        /// Only the alarms of this probe group.
        #[arg(long, value_name = "UUID")]
        probegroup: Option<Uuid>,
    },
    /// Shows one alarm and its faults.
    #[command(alias = "show")]
    Get {
        #[arg(value_parser = alarm_id())]
        id: u64,
    },
    /// Closes alarms (silently: no notification).
    Close {
        #[arg(required = true, value_parser = alarm_id())]
        ids: Vec<u64>,
    },
    /// Reopens closed alarms (silently).
    Reopen {
        #[arg(required = true, value_parser = alarm_id())]
        ids: Vec<u64>,
    },
    /// Stops an alarm's notifications; it stays open.
    Suppress {
        #[arg(required = true, value_parser = alarm_id())]
        ids: Vec<u64>,
    },
    /// Lets an alarm notify again.
    Unsuppress {
        #[arg(required = true, value_parser = alarm_id())]
        ids: Vec<u64>,
    },
    /// Deletes alarms and their faults for good.
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true, value_parser = alarm_id())]
        ids: Vec<u64>,
    },
}

fn alarm_id() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..)
}

/// `?state=` of `GET /pub/:account/alarms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlarmState {
    Recent,
    Open,
    Closed,
    All,
}

impl AlarmState {
    fn as_str(self) -> &'static str {
        match self {
            AlarmState::Recent => "recent",
            AlarmState::Open => "open",
            AlarmState::Closed => "closed",
            AlarmState::All => "all",
        }
    }
}

/// What an action verb does to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Close,
    Reopen,
    Suppress,
    Unsuppress,
    Delete,
}

impl Action {
    fn done(self) -> &'static str {
        match self {
            Action::Close => "closed",
            Action::Reopen => "reopened",
            Action::Suppress => "suppressed: it will not notify",
            Action::Unsuppress => "unsuppressed: it notifies again",
            Action::Delete => "deleted",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Close => "close",
            Action::Reopen => "reopen",
            Action::Suppress => "suppress",
            Action::Unsuppress => "unsuppress",
            Action::Delete => "delete",
        }
    }
}

/// `GET /pub/:account/alarms?state=…&probeGroup=…`.
pub fn list_request(account: Option<&str>, state: Option<AlarmState>, group: Option<Uuid>) -> anyhow::Result<Request> {
    let mut query = Vec::new();
    if let Some(state) = state {
        query.push(format!("state={}", state.as_str()));
    }
    if let Some(group) = group {
        query.push(format!("probeGroup={group}"));
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    Ok(Request::get(pub_path(
        account,
        "alarms list",
        &format!("/alarms{query}"),
    )?))
}

/// `POST /pub/:account/alarms/:id?action=…`, or `DELETE` for delete.
pub fn action_request(account: Option<&str>, id: u64, action: Action) -> anyhow::Result<Request> {
    let path = pub_path(account, &format!("alarms {}", action.verb()), &format!("/alarms/{id}"))?;
    Ok(match action {
        Action::Delete => Request::delete(path),
        other => Request::post(format!("{path}?action={}", other.verb()), None),
    })
}

pub async fn run(ctx: &Ctx, args: AlarmsArgs) -> anyhow::Result<()> {
    let account = ctx.account.as_deref();
    let (ids, action) = match args.verb {
        AlarmsVerb::List { state, probegroup } => {
            let alarms = ctx.client.json(&list_request(account, state, probegroup)?).await?;
            if ctx.json {
                emit(&table::pretty(&alarms));
            } else {
                let names = Names::fetch(ctx, table::items(&alarms)).await;
                emit(&render_list(table::items(&alarms), &names));
            }
            return Ok(());
        }
        AlarmsVerb::Get { id } => {
            let path = pub_path(account, "alarms get", &format!("/alarms/{id}"))?;
            let alarm = ctx.client.json(&Request::get(path)).await?;
            if ctx.json {
                emit(&table::pretty(&alarm));
            } else {
                let names = Names::fetch(ctx, std::slice::from_ref(&alarm)).await;
                emit(&render_alarm(&alarm, &names));
            }
            return Ok(());
        }
        AlarmsVerb::Close { ids } => (ids, Action::Close),
        AlarmsVerb::Reopen { ids } => (ids, Action::Reopen),
        AlarmsVerb::Suppress { ids } => (ids, Action::Suppress),
        AlarmsVerb::Unsuppress { ids } => (ids, Action::Unsuppress),
        AlarmsVerb::Delete { ids } => (ids, Action::Delete),
    };
    for id in ids {
        ctx.client.send(&action_request(account, id, action)?).await?;
        if !ctx.json {
            emit(&format!("alarm {id} {}\n", action.done()));
        }
    }
    Ok(())
}

/// Probe and probe group names by uuid, to say what an alarm is about.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub probes: HashMap<String, String>,
    pub groups: HashMap<String, String>,
}

impl Names {
    /// The account's probe (and, if an alarm needs them, probe group) names;
    /// best effort: without them the table shows uuids.
    async fn fetch(ctx: &Ctx, alarms: &[Value]) -> Names {
        let mut names = Names::default();
        if alarms.is_empty() {
            return names;
        }
        let (Ok(probes), Ok(groups)) = (
            ctx.pub_path("probes", "/probes"),
            ctx.pub_path("probegroups", "/probegroups"),
        ) else {
            return names;
        };
        if let Ok(list) = ctx.client.json(&Request::get(probes)).await {
            names.probes = by_uuid(&list);
        }
        if alarms.iter().any(|a| a.get("probeGroup").is_some_and(Value::is_string)) {
            if let Ok(list) = ctx.client.json(&Request::get(groups)).await {
                names.groups = by_uuid(&list);
            }
        }
        names
    }
}

fn by_uuid(list: &Value) -> HashMap<String, String> {
    table::items(list)
        .iter()
        .filter_map(|item| {
            let uuid = item.get("uuid")?.as_str()?;
            let name = item.get("name")?.as_str().filter(|n| !n.is_empty())?;
            Some((uuid.to_string(), name.to_string()))
        })
        .collect()
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn flag(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn faults<'a>(alarm: &'a Value, key: &str) -> &'a [Value] {
    alarm.get(key).map(table::items).unwrap_or(&[])
}

/// open, closed or suppressed (an open alarm that does not notify).
fn state(alarm: &Value) -> &'static str {
    if flag(alarm, "closed") {
        "closed"
    } else if flag(alarm, "suppressed") {
        "suppressed"
    } else {
        "open"
    }
}

/// `probe <name>` or `group <name>` (the uuid when the name is unknown).
fn monitor(alarm: &Value, names: &Names) -> String {
    if let Some(group) = str_field(alarm, "probeGroup") {
        format!("group {}", names.groups.get(group).map(String::as_str).unwrap_or(group))
    } else if let Some(probe) = str_field(alarm, "probe") {
        format!("probe {}", names.probes.get(probe).map(String::as_str).unwrap_or(probe))
    } else {
        NONE.to_string()
    }
}

/// A fault's machine: its alias if the event had one, else its uuid.
fn fault_machine(fault: &Value) -> Option<String> {
    let event = fault.get("event")?;
    str_field(event, "agentAlias")
        .filter(|a| !a.is_empty())
        .or_else(|| str_field(event, "machine"))
        .map(str::to_string)
}

/// The monitor, and the first fault's machine with how many more there are.
fn what(alarm: &Value, names: &Names) -> String {
    let mut out = monitor(alarm, names);
    let all: Vec<&Value> = faults(alarm, "faults")
        .iter()
        .chain(faults(alarm, "maintFaults"))
        .collect();
    if let Some(machine) = all.first().and_then(|f| fault_machine(f)) {
        out.push_str(&format!(": {machine}"));
        if all.len() > 1 {
            out.push_str(&format!(" (+{} more)", all.len() - 1));
        }
    }
    out
}

fn fault_count(alarm: &Value) -> String {
    let (faults, maint) = (faults(alarm, "faults").len(), faults(alarm, "maintFaults").len());
    if maint == 0 {
        faults.to_string()
    } else {
        format!("{faults} (+{maint} in maint)")
    }
}

/// The `alarms list` table, by id.
pub fn render_list(alarms: &[Value], names: &Names) -> String {
    let mut alarms: Vec<&Value> = alarms.iter().collect();
    alarms.sort_by_key(|a| a.get("id").and_then(Value::as_u64).unwrap_or(0));
    let mut out = Table::new(&["ID", "STATE", "OPENED (UTC)", "LAST EVENT (UTC)", "FAULTS", "WHAT"]);
    for alarm in alarms {
        out.row(vec![
            table::text(alarm.get("id")),
            state(alarm).to_string(),
            table::time(alarm.get("timeOpened")),
            table::time(alarm.get("timeLastEvent")),
            fault_count(alarm),
            what(alarm, names),
        ]);
    }
    out.render()
}

fn fault_table(faults: &[Value], names: &Names) -> String {
    let mut out = Table::new(&["PROBE", "MACHINE", "ALIAS", "SINCE (UTC)", "MESSAGE"]);
    for fault in faults {
        let event = fault.get("event").cloned().unwrap_or(Value::Null);
        let probe = str_field(fault, "probe").unwrap_or(NONE);
        let since = fault.get("timeFaulted").or_else(|| event.get("time"));
        out.row(vec![
            names.probes.get(probe).cloned().unwrap_or_else(|| probe.to_string()),
            table::text(event.get("machine")),
            table::text(event.get("agentAlias")),
            table::time(since),
            table::text(event.get("data").and_then(|d| d.get("message"))),
        ]);
    }
    out.render()
}

/// `alarms get`: the alarm's fields, then its faults.
pub fn render_alarm(alarm: &Value, names: &Names) -> String {
    let mut status = if flag(alarm, "closed") { "closed" } else { "open" }.to_string();
    if flag(alarm, "suppressed") {
        status.push_str(", suppressed (no notifications)");
    }
    let mut pairs = vec![("alarm", table::text(alarm.get("id"))), ("state", status)];
    if let Some(group) = str_field(alarm, "probeGroup") {
        pairs.push(("probe group", labelled(group, names.groups.get(group))));
    }
    if let Some(probe) = str_field(alarm, "probe") {
        pairs.push(("probe", labelled(probe, names.probes.get(probe))));
    }
    pairs.extend([
        ("opened", utc(alarm.get("timeOpened"))),
        ("closed", utc(alarm.get("timeClosed"))),
        ("last event", utc(alarm.get("timeLastEvent"))),
        ("events", table::text(alarm.get("numEvents"))),
    ]);
    let mut out = table::fields(&pairs);
    let (open, maint) = (faults(alarm, "faults"), faults(alarm, "maintFaults"));
    if open.is_empty() {
        out.push_str("\nFaults: none\n");
    } else {
        out.push_str(&format!("\nFaults ({}):\n", open.len()));
        out.push_str(&fault_table(open, names));
    }
    if !maint.is_empty() {
        out.push_str(&format!(
            "\nFaults under maintenance ({}): not notified while a window covers them\n",
            maint.len()
        ));
        out.push_str(&fault_table(maint, names));
    }
    out
}

fn labelled(uuid: &str, name: Option<&String>) -> String {
    match name {
        Some(name) => format!("{uuid} ({name})"),
        None => uuid.to_string(),
    }
}

fn utc(value: Option<&Value>) -> String {
    match table::time(value) {
        t if t == NONE => t,
        t => format!("{t} UTC"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::encode;
    use serde_json::json;

    const USER: &str = "a0a0a0a0-0000-4000-8000-000000000001";
    const PROBE: &str = "b0b0b0b0-0000-4000-8000-000000000002";
    const GROUP: &str = "c0c0c0c0-0000-4000-8000-000000000003";
    const MACHINE: &str = "d0d0d0d0-0000-4000-8000-000000000004";
    const OTHER: &str = "e0e0e0e0-0000-4000-8000-000000000005";

    fn fault(probe: &str, machine: &str, alias: Option<&str>, time: i64) -> Value {
        json!({
            "type": "probe",
            "probe": probe,
            "timeFaulted": time,
            "notified": true,
            "event": {
                "v": 1, "user": USER, "probeUuid": probe, "clear": false,
                "data": { "message": format!("Machine \"{machine}\" has gone down.") },
                "machine": machine, "uuid": OTHER, "time": time, "agentAlias": alias,
            },
        })
    }

    fn alarms() -> Vec<Value> {
        vec![
            json!({
                "user": USER, "id": 12, "probeGroup": GROUP, "closed": false, "suppressed": true,
                "timeOpened": 1_714_566_896_000_i64, "timeClosed": null, "timeLastEvent": 1_714_570_000_000_i64,
                "numEvents": 5,
                "faults": [fault(PROBE, MACHINE, Some("web0"), 1_714_566_896_000), fault(OTHER, OTHER, None, 1_714_567_000_000)],
                "maintFaults": [fault(PROBE, OTHER, Some("db1"), 1_714_568_000_000)],
            }),
            json!({
                "user": USER, "id": 3, "probe": PROBE, "closed": true, "suppressed": false,
                "timeOpened": 1_714_500_000_000_i64, "timeClosed": 1_714_500_600_000_i64,
                "timeLastEvent": 1_714_500_600_000_i64, "numEvents": 2, "faults": [], "maintFaults": [],
            }),
            json!({
                "user": USER, "id": 4, "probe": OTHER, "closed": false, "suppressed": false,
                "timeOpened": 1_714_566_000_000_i64, "timeClosed": null, "timeLastEvent": null, "numEvents": 1,
                "faults": [fault(OTHER, MACHINE, None, 1_714_566_000_000)], "maintFaults": [],
            }),
        ]
    }

    fn names() -> Names {
        Names {
            probes: HashMap::from([(PROBE.to_string(), "web0 up".to_string())]),
            groups: HashMap::from([(GROUP.to_string(), "web tier".to_string())]),
        }
    }

    #[test]
    fn list_table() {
        insta::assert_snapshot!(render_list(&alarms(), &names()));
    }

    #[test]
    fn list_table_without_names_shows_uuids() {
        insta::assert_snapshot!(render_list(&alarms()[1..], &Names::default()));
    }

    #[test]
    fn an_empty_list_is_the_header() {
        assert_eq!(
            render_list(&[], &Names::default()),
            "ID  STATE  OPENED (UTC)  LAST EVENT (UTC)  FAULTS  WHAT\n"
        );
    }

    #[test]
    fn alarm_details() {
        insta::assert_snapshot!(render_alarm(&alarms()[0], &names()));
    }

    #[test]
    fn closed_alarm_details() {
        insta::assert_snapshot!(render_alarm(&alarms()[1], &Names::default()));
    }

    #[test]
    fn list_requests() {
        let r = list_request(Some("alice"), None, None).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/pub/alice/alarms"));
        let group = Uuid::parse_str(GROUP).unwrap();
        let r = list_request(Some("alice"), Some(AlarmState::Open), Some(group)).unwrap();
        assert_eq!(r.path, format!("/pub/alice/alarms?state=open&probeGroup={GROUP}"));
        assert!(list_request(None, None, None).is_err());
    }

    #[test]
    fn action_requests() {
        let r = action_request(Some("alice"), 7, Action::Close).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.body),
            ("POST", "/pub/alice/alarms/7?action=close", None)
        );
        let r = action_request(Some("alice"), 7, Action::Unsuppress).unwrap();
        assert_eq!(r.path, "/pub/alice/alarms/7?action=unsuppress");
        let r = action_request(Some("alice"), 7, Action::Delete).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("DELETE", "/pub/alice/alarms/7"));
        let e = action_request(None, 7, Action::Suppress).unwrap_err();
        assert!(
            e.to_string().starts_with("`amon alarms suppress` needs an account"),
            "{e}"
        );
    }

    #[test]
    fn ids_are_positive_integers() {
        use clap::Parser;
        let parse = |args: &[&str]| super::super::Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["amon", "alarms", "close", "0"]).is_err());
        assert!(parse(&["amon", "alarms", "close"]).is_err());
        assert!(parse(&["amon", "alarms", "get", "x"]).is_err());
        assert!(parse(&["amon", "alarms", "close", "1", "2"]).is_ok());
    }

    #[test]
    fn account_paths_are_encoded() {
        let r = list_request(Some("a b"), None, None).unwrap();
        assert_eq!(r.path, format!("/pub/{}/alarms", encode("a b")));
    }
}
