//! `amon probes …` and `amon probegroups …`: list, get, create, update,
//! enable, disable, delete.
//!
//! Updates read the object, change what the options say and `PUT` the
//! whole of it back, so they work whether the API replaces or merges.

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::client::Request;
use super::table::{self, Table};
use super::{emit, pub_path, ClientOpts, Ctx};

#[derive(Debug, Args)]
pub struct ProbesArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub verb: ProbesVerb,
}

#[derive(Debug, Subcommand)]
pub enum ProbesVerb {
    /// Lists the account's probes.
    #[command(alias = "ls")]
    List,
    /// Shows one probe.
    #[command(alias = "show")]
    Get { uuid: Uuid },
    /// Creates a probe (type machine-up unless --type says otherwise).
    Create {
        #[command(flatten)]
        fields: ProbeFields,
        /// Created disabled: it does not alarm.
        #[arg(long)]
        disabled: bool,
    },
    /// Changes a probe.
    Update {
        uuid: Uuid,
        #[command(flatten)]
        fields: ProbeFields,
    },
    /// Lets probes alarm again.
    Enable {
        #[arg(required = true)]
        uuids: Vec<Uuid>,
    },
    /// Stops probes from alarming (they stay configured).
    Disable {
        #[arg(required = true)]
        uuids: Vec<Uuid>,
    },
    /// Deletes probes (their alarms stay).
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        uuids: Vec<Uuid>,
    },
}

/// A probe's fields, as options; only those given are sent.
#[derive(Debug, Clone, Default, Args)]
pub struct ProbeFields {
    #[arg(long)]
    pub name: Option<String>,
    /// The probe type (machine-up).
    #[arg(long = "type", value_name = "TYPE")]
    pub probe_type: Option<String>,
    /// The machine (zone or VM) it watches.
    #[arg(long, value_name = "UUID")]
    pub machine: Option<Uuid>,
    /// Where it runs (for machine-up: the machine).
    #[arg(long, value_name = "UUID")]
    pub agent: Option<Uuid>,
    /// A contact to notify (repeat, or comma-separate, for several).
    #[arg(long = "contact", value_name = "NAME", value_delimiter = ',')]
    pub contacts: Vec<String>,
    /// Its probe group: the group's alarm and contacts.
    #[arg(long, value_name = "UUID", conflicts_with = "no_group")]
    pub group: Option<Uuid>,
    /// Takes it out of its probe group.
    #[arg(long)]
    pub no_group: bool,
    /// false: every event opens a new alarm.
    #[arg(long, value_name = "BOOL")]
    pub group_events: Option<bool>,
    /// How long a fault waits before it notifies (90s, 5m; or seconds).
    #[arg(long, value_name = "DURATION")]
    pub hold: Option<String>,
    /// Reminders while a fault stays open (1h; or seconds).
    #[arg(long, value_name = "DURATION")]
    pub renotify: Option<String>,
    /// The type's config, as JSON.
    #[arg(long, value_name = "JSON")]
    pub config: Option<String>,
    /// Raw fields as a JSON object; the options above override it.
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
}

/// `--data`: a JSON object, or nothing.
fn data_object(data: Option<&str>) -> anyhow::Result<Map<String, Value>> {
    match data {
        None => Ok(Map::new()),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => bail!("--data must be a JSON object"),
            Err(e) => bail!("--data is not JSON: {e}"),
        },
    }
}

/// Whole seconds stay numbers; anything else ("90s") goes as the API reads it.
fn duration_value(text: &str) -> Value {
    match text.trim().parse::<u64>() {
        Ok(secs) => json!(secs),
        Err(_) => json!(text.trim()),
    }
}

/// The fields the options set, over `--data`.
pub fn probe_fields(fields: &ProbeFields) -> anyhow::Result<Map<String, Value>> {
    let mut body = data_object(fields.data.as_deref())?;
    let mut set = |key: &str, value: Value| {
        body.insert(key.to_string(), value);
    };
    if let Some(name) = &fields.name {
        set("name", json!(name));
    }
    if let Some(probe_type) = &fields.probe_type {
        set("type", json!(probe_type));
    }
    if let Some(machine) = fields.machine {
        set("machine", json!(machine));
    }
    if let Some(agent) = fields.agent {
        set("agent", json!(agent));
    }
    if !fields.contacts.is_empty() {
        set("contacts", json!(fields.contacts));
    }
    if let Some(group) = fields.group {
        set("group", json!(group));
    }
    if fields.no_group {
        set("group", Value::Null);
    }
    if let Some(group_events) = fields.group_events {
        set("groupEvents", json!(group_events));
    }
    if let Some(hold) = &fields.hold {
        set("hold", duration_value(hold));
    }
    if let Some(renotify) = &fields.renotify {
        set("renotify", duration_value(renotify));
    }
    if let Some(config) = &fields.config {
        let config: Value = serde_json::from_str(config).map_err(|e| anyhow!("--config is not JSON: {e}"))?;
        set("config", config);
    }
    Ok(body)
}

/// `POST /pub/:account/probes`.
pub fn create_probe_body(fields: &ProbeFields, disabled: bool) -> anyhow::Result<Value> {
    let mut body = probe_fields(fields)?;
    body.entry("type").or_insert_with(|| json!("machine-up"));
    if disabled {
        body.insert("disabled".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// What to `PUT`: the object as it is (less what the API assigns, and
/// nulls), with `changes` over it.
pub fn update_body(current: &Value, changes: Map<String, Value>) -> anyhow::Result<Value> {
    let Value::Object(current) = current else {
        bail!("the API answered with something that is not an object: {current}");
    };
    let mut body: Map<String, Value> = current
        .iter()
        .filter(|(key, value)| !matches!(key.as_str(), "uuid" | "user") && !value.is_null())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    body.extend(changes);
    Ok(Value::Object(body))
}

/// [`update_body`] for a probe: a new `machine` without an `agent` (or
/// the reverse) drops the old other one, which the API derives again
/// (machine-up runs where its machine is).
pub fn probe_update_body(current: &Value, changes: Map<String, Value>) -> anyhow::Result<Value> {
    let mut current = current.clone();
    if let Value::Object(fields) = &mut current {
        let stale = match (changes.contains_key("machine"), changes.contains_key("agent")) {
            (true, false) => Some("agent"),
            (false, true) => Some("machine"),
            _ => None,
        };
        if let Some(stale) = stale {
            fields.remove(stale);
        }
    }
    update_body(&current, changes)
}

fn probe_path(ctx: &Ctx, verb: &str, uuid: Option<Uuid>) -> anyhow::Result<String> {
    let rest = uuid.map(|u| format!("/probes/{u}")).unwrap_or_else(|| "/probes".into());
    ctx.pub_path(&format!("probes {verb}"), &rest)
}

/// GET, change, PUT; the updated object.
async fn update(
    ctx: &Ctx,
    path: String,
    changes: Map<String, Value>,
    merge: fn(&Value, Map<String, Value>) -> anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    let current = ctx.client.json(&Request::get(path.clone())).await?;
    let body = merge(&current, changes)?;
    Ok(ctx
        .client
        .send(&Request::put(path, body.clone()))
        .await?
        .unwrap_or(body))
}

fn show(ctx: &Ctx, value: &Value, render: fn(&Value) -> String) {
    emit(&if ctx.json { table::pretty(value) } else { render(value) });
}

pub async fn run(ctx: &Ctx, args: ProbesArgs) -> anyhow::Result<()> {
    match args.verb {
        ProbesVerb::List => {
            let probes = ctx.client.json(&Request::get(probe_path(ctx, "list", None)?)).await?;
            show(ctx, &probes, |p| render_probes(table::items(p)));
        }
        ProbesVerb::Get { uuid } => {
            let probe = ctx
                .client
                .json(&Request::get(probe_path(ctx, "get", Some(uuid))?))
                .await?;
            show(ctx, &probe, render_probe);
        }
        ProbesVerb::Create { fields, disabled } => {
            let body = create_probe_body(&fields, disabled)?;
            let probe = ctx
                .client
                .json(&Request::post(probe_path(ctx, "create", None)?, Some(body)))
                .await?;
            show(ctx, &probe, render_probe);
        }
        ProbesVerb::Update { uuid, fields } => {
            let path = probe_path(ctx, "update", Some(uuid))?;
            let probe = update(ctx, path, probe_fields(&fields)?, probe_update_body).await?;
            show(ctx, &probe, render_probe);
        }
        ProbesVerb::Enable { uuids } => toggle(ctx, "probe", uuids, false).await?,
        ProbesVerb::Disable { uuids } => toggle(ctx, "probe", uuids, true).await?,
        ProbesVerb::Delete { uuids } => {
            for uuid in uuids {
                ctx.client
                    .send(&Request::delete(probe_path(ctx, "delete", Some(uuid))?))
                    .await?;
                if !ctx.json {
                    emit(&format!("probe {uuid} deleted\n"));
                }
            }
        }
    }
    Ok(())
}

/// `enable`/`disable` of probes (`kind` "probe") or probe groups.
async fn toggle(ctx: &Ctx, kind: &str, uuids: Vec<Uuid>, disabled: bool) -> anyhow::Result<()> {
    let (collection, verb) = match (kind, disabled) {
        ("probe", true) => ("probes", "probes disable"),
        ("probe", false) => ("probes", "probes enable"),
        (_, true) => ("probegroups", "probegroups disable"),
        (_, false) => ("probegroups", "probegroups enable"),
    };
    for uuid in uuids {
        let path = ctx.pub_path(verb, &format!("/{collection}/{uuid}"))?;
        let changes = Map::from_iter([("disabled".to_string(), json!(disabled))]);
        let updated = update(ctx, path, changes, update_body).await?;
        if ctx.json {
            emit(&table::pretty(&updated));
        } else {
            emit(&format!(
                "{kind} {uuid} {}\n",
                if disabled { "disabled" } else { "enabled" }
            ));
        }
    }
    Ok(())
}

fn enabled(value: &Value) -> String {
    if value.get("disabled").and_then(Value::as_bool).unwrap_or(false) {
        "disabled".into()
    } else {
        "enabled".into()
    }
}

fn by_name(items: &[Value]) -> Vec<&Value> {
    let mut items: Vec<&Value> = items.iter().collect();
    items.sort_by_key(|v| (table::text(v.get("name")), table::text(v.get("uuid"))));
    items
}

/// `probes list`, by name.
pub fn render_probes(probes: &[Value]) -> String {
    let mut out = Table::new(&["UUID", "NAME", "TYPE", "MACHINE", "CONTACTS", "GROUP", "STATE"]);
    for probe in by_name(probes) {
        out.row(vec![
            table::text(probe.get("uuid")),
            table::text(probe.get("name")),
            table::text(probe.get("type")),
            table::text(probe.get("machine").or_else(|| probe.get("agent"))),
            table::text(probe.get("contacts")),
            table::text(probe.get("group")),
            enabled(probe),
        ]);
    }
    out.render()
}

fn seconds(value: Option<&Value>) -> String {
    match value.and_then(Value::as_u64) {
        Some(secs) => humantime::format_duration(std::time::Duration::from_secs(secs)).to_string(),
        None => table::text(value),
    }
}

/// `probes get`, `create`, `update`.
pub fn render_probe(probe: &Value) -> String {
    let config = match probe.get("config") {
        None | Some(Value::Null) => table::NONE.to_string(),
        Some(Value::Object(map)) if map.is_empty() => table::NONE.to_string(),
        Some(config) => config.to_string(),
    };
    table::fields(&[
        ("probe", table::text(probe.get("uuid"))),
        ("name", table::text(probe.get("name"))),
        ("type", table::text(probe.get("type"))),
        ("state", enabled(probe)),
        ("machine", table::text(probe.get("machine"))),
        ("agent", table::text(probe.get("agent"))),
        ("contacts", table::text(probe.get("contacts"))),
        ("group", table::text(probe.get("group"))),
        ("group events", table::yes_no(probe.get("groupEvents"))),
        ("hold", seconds(probe.get("hold"))),
        ("renotify", seconds(probe.get("renotify"))),
        ("config", config),
        ("account", table::text(probe.get("user"))),
    ])
}

// ---- probe groups ----

#[derive(Debug, Args)]
pub struct ProbeGroupsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub verb: ProbeGroupsVerb,
}

#[derive(Debug, Subcommand)]
pub enum ProbeGroupsVerb {
    /// Lists the account's probe groups.
    #[command(alias = "ls")]
    List,
    /// Shows one probe group.
    #[command(alias = "show")]
    Get { uuid: Uuid },
    /// Creates a probe group.
    Create {
        #[command(flatten)]
        fields: GroupFields,
        /// Created disabled: its probes do not alarm.
        #[arg(long)]
        disabled: bool,
    },
    /// Changes a probe group.
    Update {
        uuid: Uuid,
        #[command(flatten)]
        fields: GroupFields,
    },
    /// Lets the groups' probes alarm again.
    Enable {
        #[arg(required = true)]
        uuids: Vec<Uuid>,
    },
    /// Stops the groups' probes from alarming.
    Disable {
        #[arg(required = true)]
        uuids: Vec<Uuid>,
    },
    /// Deletes probe groups.
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        uuids: Vec<Uuid>,
    },
}

/// A probe group's fields, as options; only those given are sent.
#[derive(Debug, Clone, Default, Args)]
pub struct GroupFields {
    #[arg(long)]
    pub name: Option<String>,
    /// A contact to notify, instead of its probes' (repeat, or
    /// comma-separate, for several).
    #[arg(long = "contact", value_name = "NAME", value_delimiter = ',')]
    pub contacts: Vec<String>,
    /// How long a fault waits before the group's alarm notifies (90s, 5m;
    /// or seconds); overrides its probes'.
    #[arg(long, value_name = "DURATION")]
    pub hold: Option<String>,
    /// Reminders while a fault stays open (1h; or seconds).
    #[arg(long, value_name = "DURATION")]
    pub renotify: Option<String>,
    /// Raw fields as a JSON object; the options above override it.
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
}

pub fn group_fields(fields: &GroupFields) -> anyhow::Result<Map<String, Value>> {
    let mut body = data_object(fields.data.as_deref())?;
    if let Some(name) = &fields.name {
        body.insert("name".into(), json!(name));
    }
    if !fields.contacts.is_empty() {
        body.insert("contacts".into(), json!(fields.contacts));
    }
    if let Some(hold) = &fields.hold {
        body.insert("hold".into(), duration_value(hold));
    }
    if let Some(renotify) = &fields.renotify {
        body.insert("renotify".into(), duration_value(renotify));
    }
    Ok(body)
}

pub fn create_group_body(fields: &GroupFields, disabled: bool) -> anyhow::Result<Value> {
    let mut body = group_fields(fields)?;
    if disabled {
        body.insert("disabled".into(), json!(true));
    }
    Ok(Value::Object(body))
}

fn group_path(ctx: &Ctx, verb: &str, uuid: Option<Uuid>) -> anyhow::Result<String> {
    let rest = uuid
        .map(|u| format!("/probegroups/{u}"))
        .unwrap_or_else(|| "/probegroups".into());
    ctx.pub_path(&format!("probegroups {verb}"), &rest)
}

pub async fn run_groups(ctx: &Ctx, args: ProbeGroupsArgs) -> anyhow::Result<()> {
    match args.verb {
        ProbeGroupsVerb::List => {
            let groups = ctx.client.json(&Request::get(group_path(ctx, "list", None)?)).await?;
            show(ctx, &groups, |g| render_groups(table::items(g)));
        }
        ProbeGroupsVerb::Get { uuid } => {
            let group = ctx
                .client
                .json(&Request::get(group_path(ctx, "get", Some(uuid))?))
                .await?;
            show(ctx, &group, render_group);
        }
        ProbeGroupsVerb::Create { fields, disabled } => {
            let body = create_group_body(&fields, disabled)?;
            let group = ctx
                .client
                .json(&Request::post(group_path(ctx, "create", None)?, Some(body)))
                .await?;
            show(ctx, &group, render_group);
        }
        ProbeGroupsVerb::Update { uuid, fields } => {
            let path = group_path(ctx, "update", Some(uuid))?;
            let group = update(ctx, path, group_fields(&fields)?, update_body).await?;
            show(ctx, &group, render_group);
        }
        ProbeGroupsVerb::Enable { uuids } => toggle(ctx, "probe group", uuids, false).await?,
        ProbeGroupsVerb::Disable { uuids } => toggle(ctx, "probe group", uuids, true).await?,
        ProbeGroupsVerb::Delete { uuids } => {
            for uuid in uuids {
                ctx.client
                    .send(&Request::delete(group_path(ctx, "delete", Some(uuid))?))
                    .await?;
                if !ctx.json {
                    emit(&format!("probe group {uuid} deleted\n"));
                }
            }
        }
    }
    Ok(())
}

/// `probegroups list`, by name.
pub fn render_groups(groups: &[Value]) -> String {
    let mut out = Table::new(&["UUID", "NAME", "CONTACTS", "STATE"]);
    for group in by_name(groups) {
        out.row(vec![
            table::text(group.get("uuid")),
            table::text(group.get("name")),
            table::text(group.get("contacts")),
            enabled(group),
        ]);
    }
    out.render()
}

pub fn render_group(group: &Value) -> String {
    table::fields(&[
        ("probe group", table::text(group.get("uuid"))),
        ("name", table::text(group.get("name"))),
        ("state", enabled(group)),
        ("contacts", table::text(group.get("contacts"))),
        ("hold", seconds(group.get("hold"))),
        ("renotify", seconds(group.get("renotify"))),
        ("account", table::text(group.get("user"))),
    ])
}

/// For tests and callers that build paths without a [`Ctx`].
pub fn probes_path(account: Option<&str>) -> anyhow::Result<String> {
    pub_path(account, "probes", "/probes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::cli::{Cli, Command};

    const M1: &str = "d0d0d0d0-0000-4000-8000-000000000001";
    const G1: &str = "c0c0c0c0-0000-4000-8000-000000000001";
    const P1: &str = "b0b0b0b0-0000-4000-8000-000000000001";
    const U1: &str = "a0a0a0a0-0000-4000-8000-000000000001";

    fn probes_verb(args: &[&str]) -> ProbesVerb {
        let cli = Cli::try_parse_from(["amon", "probes"].iter().chain(args).copied()).unwrap();
        let Command::Probes(args) = cli.command else {
            panic!("not probes")
        };
        args.verb
    }

    #[test]
    fn create_sends_what_was_given() {
        let ProbesVerb::Create { fields, disabled } = probes_verb(&[
            "create",
            "--machine",
            M1,
            "--name",
            "web0 up",
            "--contact",
            "email,pager",
            "--hold",
            "90s",
            "--renotify",
            "3600",
        ]) else {
            panic!("not create")
        };
        assert_eq!(
            create_probe_body(&fields, disabled).unwrap(),
            json!({ "type": "machine-up", "machine": M1, "name": "web0 up", "contacts": ["email", "pager"],
                    "hold": "90s", "renotify": 3600 })
        );
        let ProbesVerb::Create { fields, disabled } = probes_verb(&[
            "create",
            "--data",
            r#"{"type":"log-scan","name":"x","config":{"a":1}}"#,
            "--name",
            "y",
            "--disabled",
            "--group",
            G1,
            "--group-events",
            "false",
        ]) else {
            panic!("not create")
        };
        assert_eq!(
            create_probe_body(&fields, disabled).unwrap(),
            json!({ "type": "log-scan", "name": "y", "config": {"a": 1}, "disabled": true, "group": G1,
                    "groupEvents": false })
        );
    }

    #[test]
    fn bad_json_is_refused() {
        let fields = ProbeFields {
            data: Some("[1]".into()),
            ..ProbeFields::default()
        };
        assert_eq!(
            probe_fields(&fields).unwrap_err().to_string(),
            "--data must be a JSON object"
        );
        let fields = ProbeFields {
            config: Some("{".into()),
            ..ProbeFields::default()
        };
        assert!(probe_fields(&fields)
            .unwrap_err()
            .to_string()
            .starts_with("--config is not JSON"));
    }

    #[test]
    fn update_puts_the_whole_object_back() {
        let current = json!({ "uuid": P1, "user": U1, "name": "web0 up", "type": "machine-up", "agent": M1,
                              "machine": M1, "config": null, "contacts": ["email"], "group": G1,
                              "groupEvents": true, "disabled": false });
        let ProbesVerb::Update { uuid, fields } = probes_verb(&["update", P1, "--no-group", "--name", "web0"]) else {
            panic!("not update")
        };
        assert_eq!(uuid.to_string(), P1);
        assert_eq!(
            update_body(&current, probe_fields(&fields).unwrap()).unwrap(),
            json!({ "name": "web0", "type": "machine-up", "agent": M1, "machine": M1, "contacts": ["email"],
                    "group": null, "groupEvents": true, "disabled": false })
        );
        assert!(update_body(&json!([]), Map::new()).is_err());

        // A new machine: the API derives the agent again.
        let ProbesVerb::Update { fields, .. } = probes_verb(&["update", P1, "--machine", G1]) else {
            panic!("not update")
        };
        let body = probe_update_body(&current, probe_fields(&fields).unwrap()).unwrap();
        assert_eq!(body["machine"], json!(G1));
        assert!(body.get("agent").is_none(), "{body}");
    }

    #[test]
    fn group_bodies() {
        let fields = GroupFields {
            name: Some("web tier".into()),
            contacts: vec!["ops".into()],
            hold: Some("5m".into()),
            ..GroupFields::default()
        };
        assert_eq!(
            create_group_body(&fields, true).unwrap(),
            json!({ "name": "web tier", "contacts": ["ops"], "hold": "5m", "disabled": true })
        );
    }

    #[test]
    fn probe_tables() {
        let probes = vec![
            json!({ "uuid": P1, "user": U1, "name": "web0 up", "type": "machine-up", "agent": M1, "machine": M1,
                    "config": null, "contacts": ["email"], "group": null, "groupEvents": true, "disabled": false }),
            json!({ "uuid": M1, "user": U1, "name": "db0 up", "type": "machine-up", "agent": P1, "machine": P1,
                    "config": {}, "contacts": ["email", "ops"], "group": G1, "groupEvents": true,
                    "disabled": true, "hold": 90, "renotify": 3600 }),
        ];
        insta::assert_snapshot!("probe_list", render_probes(&probes));
        insta::assert_snapshot!("probe", render_probe(&probes[1]));
        let groups =
            vec![json!({ "uuid": G1, "user": U1, "name": "web tier", "contacts": ["ops"], "disabled": false })];
        insta::assert_snapshot!("group_list", render_groups(&groups));
        insta::assert_snapshot!("group", render_group(&groups[0]));
    }

    #[test]
    fn paths_need_an_account() {
        assert_eq!(probes_path(Some("alice")).unwrap(), "/pub/alice/probes");
        assert!(probes_path(None).is_err());
    }
}
