//! Probes, probe groups and contacts: `/pub/:account/{probes,probegroups,contacts}`.
//!
//! Validation is by type and names every field that is wrong (`422
//! ValidationFailed` with `errors`); a contact named on a probe or group must
//! exist (the implicit `email` always does), and so must a probe's group.
//! Deleting a probe or group closes its open alarms (silently) rather than
//! orphaning them; a deleted group's probes become ungrouped.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::MasterApi;
use crate::actors::router::{ContactsChanged, GroupChanged, GroupDeleted, ProbeChanged, ProbeDeleted};
use crate::http::{decode_json, drain, read_body, ApiError, FieldError, MAX_BODY};
use crate::model::{Account, AccountBook, Contact, Medium, NoContact, Probe, ProbeGroup, ProbeType};

impl MasterApi {
    /// What a probe or group of `user` may name as contacts: the account's
    /// book (stored contacts, `email`, contact attributes).
    async fn contact_book(&self, user: Uuid) -> Result<AccountBook, ApiError> {
        let account = self
            .store
            .get_account(user.to_string())
            .await?
            .ok_or_else(|| ApiError::ResourceNotFound(format!("no such account: {user}")))?;
        let contacts = self.store.list_contacts(user).await?;
        Ok(AccountBook {
            account,
            contacts: contacts.into_iter().map(|c| (c.name.clone(), c)).collect(),
        })
    }

    /// The contacts the account's probes and groups name that `book` would
    /// not have, each with who names it (`("ops", "probe <uuid>")`): a
    /// change to contacts or attributes must leave this empty.
    pub(super) async fn contacts_lost(&self, book: &AccountBook) -> Result<Vec<(String, String)>, ApiError> {
        let user = book.account.uuid;
        let named = self
            .store
            .list_probes(user)
            .await?
            .into_iter()
            .map(|p| (format!("probe {}", p.uuid), p.contacts))
            .chain(
                self.store
                    .list_groups(user)
                    .await?
                    .into_iter()
                    .map(|g| (format!("probe group {}", g.uuid), g.contacts)),
            );
        let mut lost = Vec::new();
        for (who, contacts) in named {
            for name in contacts.iter().filter(|name| book.contact(name).is_err()) {
                lost.push((name.clone(), who.clone()));
            }
        }
        Ok(lost)
    }

    async fn tell_router<M>(&self, msg: M) -> Result<(), ApiError>
    where
        M: actix::Message<Result = ()> + Send + 'static,
        crate::actors::router::EventRouter: actix::Handler<M>,
    {
        self.router()?
            .send(msg)
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("event router: {e}")))
    }
}

fn path_uuid(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::InvalidArgument(format!("{text:?} is not a {what} uuid")))
}

/// A duration field: whole seconds, or a string like `"90s"`, `"5m"`.
fn seconds_field(field: &str, value: Option<&serde_json::Value>, errors: &mut Vec<FieldError>) -> Option<u64> {
    let value = value?;
    let parsed = match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(text) => humantime::parse_duration(text.trim()).ok().map(|d| d.as_secs()),
        _ => None,
    };
    if parsed.is_none() {
        errors.push(FieldError::invalid(
            field,
            format!("{field} must be whole seconds or a duration like \"90s\", not {value}"),
        ));
    }
    parsed
}

fn renotify_field(value: Option<&serde_json::Value>, errors: &mut Vec<FieldError>) -> Option<u64> {
    let renotify = seconds_field("renotify", value, errors);
    if renotify == Some(0) {
        errors.push(FieldError::invalid(
            "renotify",
            "renotify must be more than zero (omit it for no reminders)",
        ));
    }
    renotify
}

fn uuid_field(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    let value = value?;
    match Uuid::parse_str(value) {
        Ok(uuid) => Some(uuid),
        Err(_) => {
            errors.push(FieldError::invalid(field, format!("{field} {value:?} is not a uuid")));
            None
        }
    }
}

fn name_field(name: &Option<String>, errors: &mut Vec<FieldError>) {
    if name.as_ref().is_some_and(|n| n.len() > 512) {
        errors.push(FieldError::invalid("name", "name is longer than 512 characters"));
    }
}

fn contacts_field(contacts: &[String], book: &AccountBook, errors: &mut Vec<FieldError>) {
    let login = &book.account.login;
    for contact in contacts {
        match book.contact(contact) {
            Ok(_) => {}
            Err(NoContact::Unknown { .. }) => errors.push(FieldError::invalid(
                "contacts",
                format!(
                    "unknown contact {contact:?}: create it with PUT /pub/{login}/contacts/{contact}, \
                     or name an account attribute ending in \"email\" or \"webhook\" (PUT /accounts/{login})"
                ),
            )),
            Err(why) => errors.push(FieldError::invalid(
                "contacts",
                format!("{why}: create a contact {contact:?} with PUT /pub/{login}/contacts/{contact}"),
            )),
        }
    }
}

/// What a body is for: a new resource (whose uuid the server chose) or
/// the existing one named in the URL.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    New(Uuid),
    Existing(Uuid),
}

impl Target {
    fn uuid(self) -> Uuid {
        match self {
            Target::New(uuid) | Target::Existing(uuid) => uuid,
        }
    }
}

/// The server-owned fields `GET` returns (`uuid`, `user`). Triton's clients
/// (`putProbe`, `putProbeGroup`, `amon update`) read, modify and write back
/// the whole object, so a body may repeat them: when they say what the URL
/// says they are ignored, otherwise refused naming the field. A new
/// resource has no uuid yet for the body to repeat.
fn owned_fields(
    what: &str,
    target: Target,
    (owner, login): (Uuid, &str),
    uuid: Option<&str>,
    user: Option<&str>,
    errors: &mut Vec<FieldError>,
) {
    match (target, uuid) {
        (_, None) => {}
        (Target::New(_), Some(_)) => errors.push(FieldError::invalid(
            "uuid",
            format!("uuid is chosen by the server for a new {what}: leave it out"),
        )),
        (Target::Existing(existing), Some(given)) => {
            if Uuid::parse_str(given).ok() != Some(existing) {
                errors.push(FieldError::invalid(
                    "uuid",
                    format!("uuid {given:?} does not match the {what} in the URL ({existing})"),
                ));
            }
        }
    }
    if let Some(given) = user {
        if Uuid::parse_str(given).ok() != Some(owner) && given != login {
            errors.push(FieldError::invalid(
                "user",
                format!("user {given:?} does not match the account in the URL ({owner})"),
            ));
        }
    }
}

// ---- probes ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ProbeBody {
    /// Server-owned (see [`owned_fields`]).
    uuid: Option<String>,
    /// Server-owned (see [`owned_fields`]).
    user: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    probe_type: Option<String>,
    agent: Option<String>,
    machine: Option<String>,
    config: Option<serde_json::Value>,
    contacts: Option<Vec<String>>,
    group: Option<String>,
    group_events: Option<bool>,
    disabled: Option<bool>,
    hold: Option<serde_json::Value>,
    renotify: Option<serde_json::Value>,
}

/// Turns a body into a probe of `account` or says every field that is wrong.
async fn validate_probe(
    api: &MasterApi,
    account: &Account,
    target: Target,
    body: ProbeBody,
) -> Result<Probe, ApiError> {
    let mut errors = Vec::new();
    let probe = check_probe(
        account,
        target,
        body,
        &api.contact_book(account.uuid).await?,
        api.probe_limits,
        &mut errors,
    );
    if let Some(group) = probe.group {
        if api.store.get_group(account.uuid, group).await?.is_none() {
            errors.push(FieldError::invalid(
                "group",
                format!("probe group {group} does not exist"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(probe)
}

/// What [`validate_probe`] checks without the store (`book`: the contacts
/// the account may name): the probe, good only if `errors` stays empty.
pub(super) fn check_probe(
    account: &Account,
    target: Target,
    body: ProbeBody,
    book: &AccountBook,
    limits: crate::probes::Limits,
    errors: &mut Vec<FieldError>,
) -> Probe {
    let user = account.uuid;
    owned_fields(
        "probe",
        target,
        (account.uuid, &account.login),
        body.uuid.as_deref(),
        body.user.as_deref(),
        errors,
    );
    let probe_type = match body.probe_type.as_deref() {
        None => {
            errors.push(FieldError::missing("type"));
            None
        }
        Some(name) => match ProbeType::parse(name) {
            Some(probe_type) => Some(probe_type),
            None => {
                let valid: Vec<_> = ProbeType::ALL.iter().map(|t| format!("{:?}", t.as_str())).collect();
                errors.push(FieldError::invalid(
                    "type",
                    format!(
                        "probe type {name:?} is not supported: valid types are {}",
                        valid.join(", ")
                    ),
                ));
                None
            }
        },
    };
    name_field(&body.name, errors);
    let agent = uuid_field("agent", body.agent.as_deref(), errors);
    let machine = uuid_field("machine", body.machine.as_deref(), errors);
    let group = uuid_field("group", body.group.as_deref(), errors);
    let local = probe_type.is_none_or(ProbeType::runs_locally);
    let (agent, machine) = match (agent, machine) {
        // A local probe runs where its machine is: one of agent/machine
        // names it, and both are then that uuid.
        (Some(a), Some(m)) if local && a != m => {
            let what = probe_type.map_or("this probe type", ProbeType::as_str);
            errors.push(FieldError::invalid(
                "machine",
                format!("agent and machine must be the same for {what}"),
            ));
            (Some(a), Some(m))
        }
        (None, None) if body.agent.is_none() && body.machine.is_none() => {
            errors.push(FieldError::missing(if local { "machine" } else { "agent" }));
            (None, None)
        }
        // An http or icmp probe is run by `agent`; `machine`, when given,
        // is only what it is about.
        (None, Some(_)) if !local && body.agent.is_none() => {
            errors.push(FieldError::missing("agent"));
            (None, machine)
        }
        (a, m) if local => (a.or(m), m.or(a)),
        (a, m) => (a, m),
    };
    let config = body.config.unwrap_or(serde_json::Value::Null);
    if let Some(probe_type) = probe_type {
        if let Err(wrong) = crate::probes::parse(probe_type, &config, limits) {
            errors.extend(wrong);
        }
    }
    let hold = seconds_field("hold", body.hold.as_ref(), errors);
    let renotify = renotify_field(body.renotify.as_ref(), errors);
    let contacts = body.contacts.unwrap_or_else(|| vec!["email".to_string()]);
    contacts_field(&contacts, book, errors);
    Probe {
        uuid: target.uuid(),
        name: body.name,
        user,
        probe_type: probe_type.unwrap_or(ProbeType::MachineUp),
        agent,
        machine,
        config,
        contacts,
        group,
        group_events: body.group_events.unwrap_or(true),
        disabled: body.disabled.unwrap_or(false),
        hold,
        renotify,
    }
}

/// Tenancy (SPEC §5): a probe on a machine belongs to that machine's owner,
/// and only an operator account's probe may watch a compute node or another
/// account's machine (or one no relay has reported yet). The same answer
/// for "no such machine" and "someone else's", as Amon gave, so an account
/// learns nothing of machines it does not own.
async fn authorize_target(api: &MasterApi, account: &Account, probe: &Probe) -> Result<(), ApiError> {
    let Some(machine) = probe.machine.or(probe.agent) else {
        return Ok(());
    };
    if account.operator {
        return Ok(());
    }
    let field = if probe.machine.is_some() { "machine" } else { "agent" };
    if api.store.is_compute_node(machine).await? {
        return Err(ApiError::validation(vec![FieldError::invalid(
            field,
            format!(
                "only an operator account may put a probe on a compute node ({machine}); account {:?} is not an operator",
                account.login
            ),
        )]));
    }
    let owner = api.store.inventory_machine(machine).await?.and_then(|m| m.owner);
    if owner != Some(account.uuid) {
        return Err(ApiError::validation(vec![FieldError::invalid(
            field,
            format!(
                "machine {machine} does not exist or is not owned by account {:?} (machines are known once their relay reports them: GET /pub/{}/machines lists the account's)",
                account.login, account.login
            ),
        )]));
    }
    Ok(())
}

async fn save_probe(api: &MasterApi, probe: Probe) -> Result<HttpResponse, ApiError> {
    let probe = api.store.put_probe(probe).await?;
    api.tell_router(ProbeChanged(probe.clone())).await?;
    Ok(HttpResponse::Ok().json(probe))
}

pub(super) async fn create_probe(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let account = api.account(&path).await?;
    let body: ProbeBody = decode_json(&body, "probe")?;
    let probe = validate_probe(&api, &account, Target::New(Uuid::new_v4()), body).await?;
    authorize_target(&api, &account, &probe).await?;
    save_probe(&api, probe).await
}

/// `PUT`: the body replaces the probe (all fields, as on create); it may
/// repeat `uuid` and `user` as `GET` gave them.
pub(super) async fn put_probe(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let (account, uuid) = path.into_inner();
    let account = api.account(&account).await?;
    let uuid = path_uuid(&uuid, "probe")?;
    let old = api
        .store
        .get_probe(account.uuid, uuid)
        .await?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("no such probe: {uuid}")))?;
    let body: ProbeBody = decode_json(&body, "probe")?;
    let probe = validate_probe(&api, &account, Target::Existing(uuid), body).await?;
    authorize_target(&api, &account, &probe).await?;
    if MonitorMoved::between(&old, &probe) {
        // Its faults belong to the old monitor's alarm: close them there.
        api.tell_router(ProbeDeleted(uuid)).await?;
    }
    save_probe(&api, probe).await
}

/// A probe moving to or from a group changes the alarm its events join.
struct MonitorMoved;

impl MonitorMoved {
    fn between(old: &Probe, new: &Probe) -> bool {
        old.group != new.group || old.group_events != new.group_events
    }
}

pub(super) async fn list_probes(api: web::Data<MasterApi>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let account = api.account(&path).await?;
    Ok(HttpResponse::Ok().json(api.store.list_probes(account.uuid).await?))
}

pub(super) async fn get_probe(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (account, uuid) = path.into_inner();
    let account = api.account(&account).await?;
    let uuid = path_uuid(&uuid, "probe")?;
    match api.store.get_probe(account.uuid, uuid).await? {
        Some(probe) => Ok(HttpResponse::Ok().json(probe)),
        None => Err(ApiError::ResourceNotFound(format!("no such probe: {uuid}"))),
    }
}

/// `DELETE`: 204; the probe's faults leave its open alarm, which closes
/// silently when nothing is left (no orphaned alarms).
pub(super) async fn delete_probe(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    drain(payload).await?;
    let (account, uuid) = path.into_inner();
    let account = api.account(&account).await?;
    let uuid = path_uuid(&uuid, "probe")?;
    if !api.store.delete_probe(account.uuid, uuid).await? {
        return Err(ApiError::ResourceNotFound(format!("no such probe: {uuid}")));
    }
    api.tell_router(ProbeDeleted(uuid)).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- probe groups ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupBody {
    /// Server-owned (see [`owned_fields`]).
    uuid: Option<String>,
    /// Server-owned (see [`owned_fields`]).
    user: Option<String>,
    name: Option<String>,
    contacts: Option<Vec<String>>,
    disabled: Option<bool>,
    hold: Option<serde_json::Value>,
    renotify: Option<serde_json::Value>,
}

async fn validate_group(
    api: &MasterApi,
    account: &Account,
    target: Target,
    body: GroupBody,
) -> Result<ProbeGroup, ApiError> {
    check_group(account, target, body, &api.contact_book(account.uuid).await?)
}

/// [`validate_group`] without the store (`book`: the contacts the account
/// may name).
pub(super) fn check_group(
    account: &Account,
    target: Target,
    body: GroupBody,
    book: &AccountBook,
) -> Result<ProbeGroup, ApiError> {
    let user = account.uuid;
    let mut errors = Vec::new();
    owned_fields(
        "probe group",
        target,
        (account.uuid, &account.login),
        body.uuid.as_deref(),
        body.user.as_deref(),
        &mut errors,
    );
    name_field(&body.name, &mut errors);
    let contacts = match body.contacts {
        Some(contacts) => contacts,
        None => {
            errors.push(FieldError::missing("contacts"));
            Vec::new()
        }
    };
    contacts_field(&contacts, book, &mut errors);
    let hold = seconds_field("hold", body.hold.as_ref(), &mut errors);
    let renotify = renotify_field(body.renotify.as_ref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(ProbeGroup {
        uuid: target.uuid(),
        name: body.name,
        user,
        contacts,
        disabled: body.disabled.unwrap_or(false),
        hold,
        renotify,
    })
}

async fn save_group(api: &MasterApi, group: ProbeGroup) -> Result<HttpResponse, ApiError> {
    let group = api.store.put_group(group).await?;
    api.tell_router(GroupChanged(group.clone())).await?;
    Ok(HttpResponse::Ok().json(group))
}

pub(super) async fn create_group(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let account = api.account(&path).await?;
    let body: GroupBody = decode_json(&body, "probe group")?;
    let group = validate_group(&api, &account, Target::New(Uuid::new_v4()), body).await?;
    save_group(&api, group).await
}

/// `PUT`: the body replaces the group (the reference's PUT crashed; ours
/// works); it may repeat `uuid` and `user` as `GET` gave them.
pub(super) async fn put_group(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let (account, uuid) = path.into_inner();
    let account = api.account(&account).await?;
    let uuid = path_uuid(&uuid, "probe group")?;
    if api.store.get_group(account.uuid, uuid).await?.is_none() {
        return Err(ApiError::ResourceNotFound(format!("no such probe group: {uuid}")));
    }
    let body: GroupBody = decode_json(&body, "probe group")?;
    let group = validate_group(&api, &account, Target::Existing(uuid), body).await?;
    save_group(&api, group).await
}

pub(super) async fn list_groups(api: web::Data<MasterApi>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let account = api.account(&path).await?;
    Ok(HttpResponse::Ok().json(api.store.list_groups(account.uuid).await?))
}

pub(super) async fn get_group(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (account, uuid) = path.into_inner();
    let account = api.account(&account).await?;
    let uuid = path_uuid(&uuid, "probe group")?;
    match api.store.get_group(account.uuid, uuid).await? {
        Some(group) => Ok(HttpResponse::Ok().json(group)),
        None => Err(ApiError::ResourceNotFound(format!("no such probe group: {uuid}"))),
    }
}

/// `DELETE`: 204; the group's open alarm closes silently and its probes
/// become ungrouped (they alarm on their own from now on).
pub(super) async fn delete_group(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    drain(payload).await?;
    let (account, uuid) = path.into_inner();
    let account = api.account(&account).await?;
    let uuid = path_uuid(&uuid, "probe group")?;
    let Some(ungrouped) = api.store.delete_group(account.uuid, uuid).await? else {
        return Err(ApiError::ResourceNotFound(format!("no such probe group: {uuid}")));
    };
    api.tell_router(GroupDeleted {
        user: account.uuid,
        group: uuid,
        ungrouped,
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- contacts ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ContactBody {
    medium: Option<String>,
    address: Option<String>,
}

pub(super) fn valid_contact_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The contacts an address of `medium` must be: an email address (as the
/// mailer will parse it) or an `http://`/`https://` URL. `None` when it is
/// one; else why not. Shared by contacts and contact attributes.
pub(super) fn address_error(medium: Medium, address: &str) -> Option<String> {
    let address = address.trim();
    match medium {
        _ if address.is_empty() => Some("an address is required".into()),
        Medium::Email if address.parse::<lettre::Address>().is_err() => {
            Some(format!("{address:?} is not an email address"))
        }
        Medium::Webhook => {
            let rest = address
                .strip_prefix("http://")
                .or_else(|| address.strip_prefix("https://"));
            let host = rest.map(|r| &r[..r.find(['/', '?', '#']).unwrap_or(r.len())]);
            match host {
                Some(host) if !host.is_empty() && !address.contains(char::is_whitespace) => None,
                _ => Some(format!("{address:?} is not an http:// or https:// url")),
            }
        }
        Medium::Email => None,
    }
}

/// Every contact of an account: the stored ones, the implicit `email`, and
/// the account's attributes that are contacts, by name.
async fn all_contacts(api: &MasterApi, user: Uuid) -> Result<Vec<Contact>, ApiError> {
    Ok(api.contact_book(user).await?.all_contacts())
}

pub(super) async fn list_contacts(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let account = api.account(&path).await?;
    Ok(HttpResponse::Ok().json(all_contacts(&api, account.uuid).await?))
}

pub(super) async fn get_contact(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (account, name) = path.into_inner();
    let account = api.account(&account).await?;
    all_contacts(&api, account.uuid)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| HttpResponse::Ok().json(c))
        .ok_or_else(|| ApiError::ResourceNotFound(format!("no such contact: {name:?}")))
}

/// `PUT /pub/:account/contacts/:name` `{medium: "email"|"webhook", address}`:
/// creates or replaces the contact (200 with it).
pub(super) async fn put_contact(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let (account, name) = path.into_inner();
    let account = api.account(&account).await?;
    let body: ContactBody = decode_json(&body, "contact")?;
    let contact = validate_contact(name, body)?;
    let contact = api.store.put_contact(account.uuid, contact).await?;
    let contacts = api.store.list_contacts(account.uuid).await?;
    api.tell_router(ContactsChanged {
        user: account.uuid,
        contacts,
    })
    .await?;
    Ok(HttpResponse::Ok().json(contact))
}

/// Turns a contact body into the contact `name`, or says every field that
/// is wrong.
pub(super) fn validate_contact(name: String, body: ContactBody) -> Result<Contact, ApiError> {
    let mut errors = Vec::new();
    if !valid_contact_name(&name) {
        errors.push(FieldError::invalid(
            "name",
            "contact names are 1-64 letters, digits, '_', '.', '-'",
        ));
    }
    let medium = match body.medium.as_deref() {
        None => {
            errors.push(FieldError::missing("medium"));
            None
        }
        Some("email") => Some(Medium::Email),
        Some("webhook") => Some(Medium::Webhook),
        Some(other) => {
            errors.push(FieldError::invalid(
                "medium",
                format!("medium {other:?} is not supported: use \"email\" or \"webhook\""),
            ));
            None
        }
    };
    let address = body.address.unwrap_or_default().trim().to_string();
    match medium {
        _ if address.is_empty() => errors.push(FieldError::missing("address")),
        Some(medium) => {
            if let Some(why) = address_error(medium, &address) {
                errors.push(FieldError::invalid("address", why));
            }
        }
        None => {}
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(Contact {
        name,
        medium: medium.unwrap_or(Medium::Email),
        address,
    })
}

/// `DELETE`: 204. A contact still named by a probe or group cannot go
/// (`422`, naming them), unless the name stays a contact without it (the
/// implicit `email`, or an account attribute of that name); deleting
/// `email` restores the account's address.
pub(super) async fn delete_contact(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    drain(payload).await?;
    let (account, name) = path.into_inner();
    let account = api.account(&account).await?;
    let mut book = api.contact_book(account.uuid).await?;
    if book.contacts.remove(&name).is_none() {
        let why = match book.contact(&name) {
            Ok(_) if name == "email" => None,
            Ok(_) => Some(format!(
                "contact {name:?} is the account's attribute {name:?}: change it with PUT /accounts/{}",
                account.login
            )),
            Err(_) => Some(format!("no such contact: {name:?}")),
        };
        if let Some(why) = why {
            return Err(ApiError::ResourceNotFound(why));
        }
    }
    let lost = api.contacts_lost(&book).await?;
    if !lost.is_empty() {
        return Err(ApiError::validation(vec![FieldError::invalid(
            "name",
            format!(
                "contact {name:?} is used by {}",
                lost.into_iter().map(|(_, who)| who).collect::<Vec<_>>().join(", ")
            ),
        )]));
    }
    api.store.delete_contact(account.uuid, name.clone()).await?;
    let contacts = api.store.list_contacts(account.uuid).await?;
    api.tell_router(ContactsChanged {
        user: account.uuid,
        contacts,
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields `owned_fields` refuses.
    fn refused(target: Target, alice: Uuid, uuid: Option<&str>, user: Option<&str>) -> Vec<String> {
        let mut errors = Vec::new();
        owned_fields("probe", target, (alice, "alice"), uuid, user, &mut errors);
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn server_owned_fields_may_be_repeated_but_not_changed() {
        let alice = Uuid::new_v4();
        let probe = Uuid::new_v4();
        let mine = alice.to_string();
        let existing = Target::Existing(probe);
        let none: Vec<String> = Vec::new();
        assert_eq!(refused(existing, alice, None, None), none);
        assert_eq!(refused(existing, alice, Some(&probe.to_string()), Some(&mine)), none);
        let upper = probe.to_string().to_uppercase();
        assert_eq!(
            refused(existing, alice, Some(&upper), Some("alice")),
            none,
            "any spelling"
        );
        let other = Uuid::new_v4().to_string();
        assert_eq!(refused(existing, alice, Some(&other), None), ["uuid"]);
        assert_eq!(refused(existing, alice, Some("web7"), Some(&other)), ["uuid", "user"]);
        assert_eq!(refused(existing, alice, None, Some("bob")), ["user"]);
        // A create: its own account may be named, a uuid may not.
        let new = Target::New(Uuid::new_v4());
        assert_eq!(refused(new, alice, None, Some(&mine)), none);
        assert_eq!(refused(new, alice, Some(&probe.to_string()), None), ["uuid"]);
    }
}
