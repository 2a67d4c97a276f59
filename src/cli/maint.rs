//! Maintenance windows: `amon maint list|create|get|delete`, and
//! `amon suppress`, the everyday way to make one ("silence these machines
//! for two hours").
//!
//! Without `--account` these use the operator-wide `/maintenances`; with
//! it, the account's `/pub/:account/maintenances`.

use anyhow::{anyhow, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::client::{encode, Request};
use super::table::{self, Table, NONE};
use super::{emit, ClientOpts, Ctx};

#[derive(Debug, Args)]
pub struct MaintArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub verb: MaintVerb,
}

#[derive(Debug, Subcommand)]
pub enum MaintVerb {
    /// Lists maintenance windows (every account's without --account).
    #[command(alias = "ls")]
    List,
    /// Creates a maintenance window.
    Create(CreateArgs),
    /// Shows one maintenance window.
    #[command(alias = "show")]
    Get {
        #[arg(value_parser = window_id())]
        id: u64,
    },
    /// Deletes maintenance windows: what they covered notifies again.
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true, value_parser = window_id())]
        ids: Vec<u64>,
    },
}

fn window_id() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..)
}

/// What a window covers: `--all`; or monitors (`--probe` or
/// `--probegroup`), machines (`--machine` or `--server`), or one of each,
/// which then must both match.
#[derive(Debug, Clone, Default, Args)]
pub struct Scope {
    /// Everything (the account's probes; every account's without --account).
    #[arg(long)]
    pub all: bool,
    /// A probe (repeat, or comma-separate, for several).
    #[arg(long = "probe", value_name = "UUID", value_delimiter = ',')]
    pub probes: Vec<Uuid>,
    /// A probe group.
    #[arg(long = "probegroup", value_name = "UUID", value_delimiter = ',')]
    pub probe_groups: Vec<Uuid>,
    /// A machine (zone or VM).
    #[arg(long = "machine", value_name = "UUID", value_delimiter = ',')]
    pub machines: Vec<Uuid>,
    /// A compute node: every machine on it.
    #[arg(long = "server", value_name = "UUID", value_delimiter = ',')]
    pub servers: Vec<Uuid>,
}

/// When a window ends.
#[derive(Debug, Clone, Default, Args)]
#[group(multiple = false)]
pub struct End {
    /// How long from now: 30m, 2h, 1d, 1h30m (whole minutes).
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
    /// When: ISO 8601 (UTC unless it has an offset) or epoch ms.
    #[arg(long, visible_alias = "end", value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// When it starts: now, ISO 8601 (UTC unless it has an offset) or epoch ms.
    #[arg(long, default_value = "now", value_name = "TIME")]
    pub start: String,
    /// Without --for or --until the window is open-ended: until deleted.
    #[command(flatten)]
    pub end: End,
    /// Why (shown with the window).
    #[arg(long)]
    pub notes: Option<String>,
}

#[derive(Debug, Args)]
pub struct SuppressArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub end: End,
    /// Why (shown with the window).
    #[arg(long)]
    pub notes: Option<String>,
}

/// Epoch ms from ISO 8601 (an offset, or UTC), a date (midnight UTC) or
/// epoch ms itself.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    let naive = text.strip_suffix('Z').unwrap_or(text);
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(naive, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// A duration as the API takes it (`N` then `m`, `h` or `d`, from now), in
/// the largest unit that is exact: `90m`, `2h`, `1d`.
pub fn api_duration(text: &str) -> anyhow::Result<String> {
    let wrong = || anyhow!("{text:?} is not a duration in whole minutes, like 30m, 2h, 1d or 1h30m");
    let duration = humantime::parse_duration(text.trim()).map_err(|_| wrong())?;
    let secs = duration.as_secs();
    if duration.subsec_nanos() != 0 || secs == 0 || secs % 60 != 0 {
        return Err(wrong());
    }
    Ok(if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}m", secs / 60)
    })
}

/// `start`: `"now"`, or epoch ms.
pub fn api_start(text: &str) -> anyhow::Result<Value> {
    if text.trim().eq_ignore_ascii_case("now") {
        return Ok(json!("now"));
    }
    parse_time(text)
        .map(Value::from)
        .ok_or_else(|| anyhow!("--start {text:?} is not now, an ISO 8601 time or epoch ms"))
}

/// `end`: a duration from now, epoch ms, or none (open-ended).
pub fn api_end(end: &End) -> anyhow::Result<Option<Value>> {
    match (&end.for_, &end.until) {
        (Some(_), Some(_)) => bail!("give --for or --until, not both"),
        (Some(duration), None) => Ok(Some(json!(api_duration(duration).map_err(|e| anyhow!("--for {e}"))?))),
        (None, Some(time)) => parse_time(time)
            .map(|ms| Some(json!(ms)))
            .ok_or_else(|| anyhow!("--until {time:?} is not an ISO 8601 time or epoch ms")),
        (None, None) => Ok(None),
    }
}

fn uuids(list: &[Uuid]) -> Value {
    let mut seen = Vec::new();
    for uuid in list {
        if !seen.contains(uuid) {
            seen.push(*uuid);
        }
    }
    json!(seen)
}

/// The scope fields of a window body, or why the options do not make one.
pub fn scope_fields(scope: &Scope) -> anyhow::Result<Map<String, Value>> {
    let monitors = !scope.probes.is_empty() || !scope.probe_groups.is_empty();
    let machines = !scope.machines.is_empty() || !scope.servers.is_empty();
    if scope.all && (monitors || machines) {
        bail!("--all covers everything: it cannot be combined with --probe, --probegroup, --machine or --server");
    }
    if !scope.all && !monitors && !machines {
        bail!("say what the window covers: --all, --probe, --probegroup, --machine or --server");
    }
    if !scope.probes.is_empty() && !scope.probe_groups.is_empty() {
        bail!("give --probe or --probegroup, not both (a window has one monitor scope)");
    }
    if !scope.machines.is_empty() && !scope.servers.is_empty() {
        bail!("give --machine or --server, not both (a window has one machine scope)");
    }
    let mut fields = Map::new();
    if scope.all {
        fields.insert("all".into(), json!(true));
    }
    for (key, list) in [
        ("probes", &scope.probes),
        ("probeGroups", &scope.probe_groups),
        ("machines", &scope.machines),
        ("servers", &scope.servers),
    ] {
        if !list.is_empty() {
            fields.insert(key.into(), uuids(list));
        }
    }
    Ok(fields)
}

/// The body of `POST …/maintenances`.
pub fn window_body(scope: &Scope, start: Value, end: Option<Value>, notes: Option<&str>) -> anyhow::Result<Value> {
    let mut body = Map::new();
    body.insert("start".into(), start);
    if let Some(end) = end {
        body.insert("end".into(), end);
    }
    if let Some(notes) = notes.map(str::trim).filter(|n| !n.is_empty()) {
        body.insert("notes".into(), json!(notes));
    }
    body.extend(scope_fields(scope)?);
    Ok(Value::Object(body))
}

/// `amon maint create`.
pub fn create_body(args: &CreateArgs) -> anyhow::Result<Value> {
    window_body(
        &args.scope,
        api_start(&args.start)?,
        api_end(&args.end)?,
        args.notes.as_deref(),
    )
}

/// `amon suppress`: starts now, and must say when it ends.
pub fn suppress_body(args: &SuppressArgs) -> anyhow::Result<Value> {
    let end = api_end(&args.end)?.ok_or_else(|| {
        anyhow!(
            "say for how long: --for 2h, or --until 2024-05-01T18:00Z (`amon maint create` makes open-ended windows)"
        )
    })?;
    window_body(&args.scope, json!("now"), Some(end), args.notes.as_deref())
}

/// The account's windows, or the operator-wide ones.
pub fn base_path(account: Option<&str>) -> String {
    match account {
        Some(account) => format!("/pub/{}/maintenances", encode(account)),
        None => "/maintenances".to_string(),
    }
}

pub async fn run(ctx: &Ctx, args: MaintArgs) -> anyhow::Result<()> {
    let account = ctx.account.as_deref();
    let base = base_path(account);
    match args.verb {
        MaintVerb::List => {
            let windows = ctx.client.json(&Request::get(base)).await?;
            emit(&if ctx.json {
                table::pretty(&windows)
            } else {
                render_list(table::items(&windows), account.is_none())
            });
        }
        MaintVerb::Create(create) => {
            let window = ctx
                .client
                .json(&Request::post(base, Some(create_body(&create)?)))
                .await?;
            emit(&if ctx.json {
                table::pretty(&window)
            } else {
                render_window(&window)
            });
        }
        MaintVerb::Get { id } => {
            let window = match account {
                Some(_) => ctx.client.json(&Request::get(format!("{base}/{id}"))).await?,
                // There is no operator-wide GET by id: find it in the list.
                None => {
                    let windows = ctx.client.json(&Request::get(base)).await?;
                    operator_window(&windows, id).cloned().ok_or_else(|| {
                        anyhow!("no operator-wide maintenance window {id} (an account's needs --account)")
                    })?
                }
            };
            emit(&if ctx.json {
                table::pretty(&window)
            } else {
                render_window(&window)
            });
        }
        MaintVerb::Delete { ids } => {
            for id in ids {
                ctx.client.send(&Request::delete(format!("{base}/{id}"))).await?;
                if !ctx.json {
                    emit(&format!("maintenance window {id} deleted\n"));
                }
            }
        }
    }
    Ok(())
}

/// The window `id` that belongs to no account, in a `GET /maintenances`.
fn operator_window(windows: &Value, id: u64) -> Option<&Value> {
    table::items(windows)
        .iter()
        .find(|w| w.get("id").and_then(Value::as_u64) == Some(id) && w.get("user").is_none_or(Value::is_null))
}

pub async fn suppress(ctx: &Ctx, args: SuppressArgs) -> anyhow::Result<()> {
    let body = suppress_body(&args)?;
    let window = ctx
        .client
        .json(&Request::post(base_path(ctx.account.as_deref()), Some(body)))
        .await?;
    emit(&if ctx.json {
        table::pretty(&window)
    } else {
        render_created(&window, ctx.account.as_deref())
    });
    Ok(())
}

/// `amon suppress`'s answer: the window's id, its end, and how to end it.
pub fn render_created(window: &Value, account: Option<&str>) -> String {
    let id = table::text(window.get("id"));
    let until = match window.get("end") {
        None | Some(Value::Null) => "until deleted".to_string(),
        end => format!("until {} UTC", table::time(end)),
    };
    let account = account.map(|a| format!(" --account {a}")).unwrap_or_default();
    format!(
        "maintenance window {id} ({}) {until}\nto end it early: amon maint delete {id}{account}\n",
        scope_text(window)
    )
}

/// What a window covers, in a few words.
pub fn scope_text(window: &Value) -> String {
    let mut parts = Vec::new();
    if window.get("all").and_then(Value::as_bool).unwrap_or(false) {
        parts.push("all".to_string());
    }
    for (key, word) in [
        ("probes", "probes"),
        ("probeGroups", "probe groups"),
        ("machines", "machines"),
        ("servers", "servers"),
    ] {
        let list = window.get(key).map(table::items).unwrap_or(&[]);
        if !list.is_empty() {
            parts.push(format!("{word} {}", table::text(window.get(key))));
        }
    }
    if parts.is_empty() {
        NONE.to_string()
    } else {
        parts.join("; ")
    }
}

fn end_text(window: &Value) -> String {
    match window.get("end") {
        None | Some(Value::Null) => "open-ended".to_string(),
        end => table::time(end),
    }
}

/// `maint list`: by id; operator-wide lists say whose each window is.
pub fn render_list(windows: &[Value], operator: bool) -> String {
    let mut windows: Vec<&Value> = windows.iter().collect();
    windows.sort_by_key(|w| {
        (
            w.get("user").and_then(Value::as_str).map(str::to_string),
            w.get("id").and_then(Value::as_u64).unwrap_or(0),
        )
    });
    let mut header = vec!["ID"];
    if operator {
        header.push("ACCOUNT");
    }
    header.extend(["START (UTC)", "END (UTC)", "SCOPE", "NOTES"]);
    let mut out = Table::new(&header);
    for window in windows {
        let mut row = vec![table::text(window.get("id"))];
        if operator {
            row.push(table::text(window.get("user")));
        }
        row.extend([
            table::time(window.get("start")),
            end_text(window),
            scope_text(window),
            table::text(window.get("notes")),
        ]);
        out.row(row);
    }
    out.render()
}

/// `maint get` and `maint create`: one window.
pub fn render_window(window: &Value) -> String {
    let mut pairs = vec![("maintenance window", table::text(window.get("id")))];
    if window.get("user").is_some_and(|u| !u.is_null()) {
        pairs.push(("account", table::text(window.get("user"))));
    }
    let end = match end_text(window) {
        e if e == "open-ended" => "open-ended: until deleted".to_string(),
        e => format!("{e} UTC"),
    };
    pairs.extend([
        ("start", format!("{} UTC", table::time(window.get("start")))),
        ("end", end),
        ("covers", scope_text(window)),
        ("notes", table::text(window.get("notes"))),
    ]);
    table::fields(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::cli::{Cli, Command};

    const M1: &str = "d0d0d0d0-0000-4000-8000-000000000001";
    const M2: &str = "d0d0d0d0-0000-4000-8000-000000000002";
    const P1: &str = "b0b0b0b0-0000-4000-8000-000000000001";
    const G1: &str = "c0c0c0c0-0000-4000-8000-000000000001";
    const S1: &str = "e0e0e0e0-0000-4000-8000-000000000001";

    fn suppress(args: &[&str]) -> anyhow::Result<Value> {
        let cli = Cli::try_parse_from(["amon", "suppress"].iter().chain(args).copied())?;
        let Command::Suppress(args) = cli.command else {
            panic!("not suppress")
        };
        suppress_body(&args)
    }

    fn create(args: &[&str]) -> anyhow::Result<Value> {
        let cli = Cli::try_parse_from(["amon", "maint", "create"].iter().chain(args).copied())?;
        let Command::Maint(MaintArgs {
            verb: MaintVerb::Create(args),
            ..
        }) = cli.command
        else {
            panic!("not maint create")
        };
        create_body(&args)
    }

    #[test]
    fn suppress_machines_for_two_hours() {
        let body = suppress(&[
            "--machine",
            M1,
            "--machine",
            M2,
            "--for",
            "2h",
            "--notes",
            "kernel upgrade",
        ])
        .unwrap();
        assert_eq!(
            body,
            json!({ "start": "now", "end": "2h", "notes": "kernel upgrade", "machines": [M1, M2] })
        );
        let body = suppress(&["--machine", &format!("{M1},{M2},{M1}"), "--for", "90m"]).unwrap();
        assert_eq!(body, json!({ "start": "now", "end": "90m", "machines": [M1, M2] }));
    }

    #[test]
    fn suppress_other_scopes() {
        assert_eq!(
            suppress(&["--server", S1, "--for", "1d"]).unwrap(),
            json!({ "start": "now", "end": "1d", "servers": [S1] })
        );
        assert_eq!(
            suppress(&["--all", "--until", "2024-05-01T18:00:00Z"]).unwrap(),
            json!({ "start": "now", "end": 1_714_586_400_000_i64, "all": true })
        );
        assert_eq!(
            suppress(&["--probegroup", G1, "--machine", M1, "--for", "1h30m"]).unwrap(),
            json!({ "start": "now", "end": "90m", "probeGroups": [G1], "machines": [M1] })
        );
        assert_eq!(
            suppress(&["--probe", P1, "--until", "1714586400000"]).unwrap(),
            json!({ "start": "now", "end": 1_714_586_400_000_i64, "probes": [P1] })
        );
    }

    #[test]
    fn suppress_refuses_what_is_not_a_window() {
        let error = |args: &[&str]| suppress(args).unwrap_err().to_string();
        assert!(error(&["--for", "2h"]).starts_with("say what the window covers"));
        assert!(error(&["--machine", M1]).starts_with("say for how long"));
        assert!(error(&["--all", "--machine", M1, "--for", "2h"]).starts_with("--all covers everything"));
        assert!(error(&["--probe", P1, "--probegroup", G1, "--for", "2h"]).starts_with("give --probe or --probegroup"));
        assert!(error(&["--machine", M1, "--server", S1, "--for", "2h"]).starts_with("give --machine or --server"));
        assert!(error(&["--machine", M1, "--for", "30s"]).contains("whole minutes"));
        assert!(error(&["--machine", M1, "--until", "tomorrow"]).contains("not an ISO 8601"));
        // clap: one end only, and uuids only.
        assert!(error(&["--machine", M1, "--for", "2h", "--until", "2024-05-01"]).contains("cannot be used with"));
        assert!(error(&["--machine", "web0", "--for", "2h"]).contains("invalid value"));
    }

    #[test]
    fn maint_create_is_the_general_form() {
        assert_eq!(
            create(&[
                "--probe",
                P1,
                "--start",
                "2024-05-01T12:00Z",
                "--end",
                "2024-05-01 14:00",
                "--notes",
                " "
            ])
            .unwrap(),
            json!({ "start": 1_714_564_800_000_i64, "end": 1_714_572_000_000_i64, "probes": [P1] })
        );
        // No end: open-ended.
        assert_eq!(
            create(&["--all", "--notes", "migration"]).unwrap(),
            json!({ "start": "now", "notes": "migration", "all": true })
        );
        assert!(create(&["--all", "--start", "soon"]).is_err());
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(api_duration("30m").unwrap(), "30m");
        assert_eq!(api_duration("120m").unwrap(), "2h");
        assert_eq!(api_duration("48h").unwrap(), "2d");
        assert_eq!(api_duration("1week").unwrap(), "7d");
        assert!(api_duration("0m").is_err());
        assert!(api_duration("2").is_err());
        assert_eq!(parse_time("2024-05-01"), Some(1_714_521_600_000));
        assert_eq!(parse_time("2024-05-01T14:00:00+02:00"), Some(1_714_564_800_000));
        assert_eq!(parse_time("2024-05-01T12:00:00.5"), Some(1_714_564_800_500));
        assert_eq!(parse_time("42"), Some(42));
        assert_eq!(parse_time(""), None);
    }

    #[test]
    fn operator_wide_without_an_account() {
        assert_eq!(base_path(None), "/maintenances");
        assert_eq!(base_path(Some("alice")), "/pub/alice/maintenances");
    }

    fn windows() -> Vec<Value> {
        vec![
            json!({ "id": 2, "user": "a0a0a0a0-0000-4000-8000-000000000001", "start": 1_714_564_800_000_i64,
                    "end": null, "notes": "db migration", "probeGroups": [G1] }),
            json!({ "id": 1, "start": 1_714_564_800_000_i64, "end": 1_714_572_000_000_i64,
                    "notes": "kernel upgrade\nrack 4", "servers": [S1] }),
            json!({ "id": 3, "user": "a0a0a0a0-0000-4000-8000-000000000001", "start": "2024-05-01T12:00:00Z",
                    "end": "2024-05-01T13:00:00Z", "probes": [P1], "machines": [M1, M2] }),
        ]
    }

    #[test]
    fn window_tables() {
        insta::assert_snapshot!("operator_list", render_list(&windows(), true));
        insta::assert_snapshot!("account_list", render_list(&windows()[..1], false));
    }

    #[test]
    fn one_window() {
        insta::assert_snapshot!(render_window(&windows()[2]));
        assert_eq!(
            render_created(&windows()[1], None),
            format!(
                "maintenance window 1 (servers {S1}) until 2024-05-01 14:00:00 UTC\n\
                 to end it early: amon maint delete 1\n"
            )
        );
        assert_eq!(
            render_created(&windows()[0], Some("alice")),
            format!(
                "maintenance window 2 (probe groups {G1}) until deleted\n\
                 to end it early: amon maint delete 2 --account alice\n"
            )
        );
    }

    #[test]
    fn operator_get_finds_the_window_of_no_account() {
        let list = Value::Array(windows());
        assert_eq!(operator_window(&list, 1).unwrap()["servers"], json!([S1]));
        assert!(operator_window(&list, 2).is_none());
    }
}
