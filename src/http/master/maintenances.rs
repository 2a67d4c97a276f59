//! Maintenance windows: `/pub/:account/maintenances[/:id]` for an account,
//! `/maintenances[/:id]` for operators (windows across accounts, e.g. a
//! whole server). Created and deleted through the `MaintenanceKeeper`, which
//! owns the run-time set and the end timer.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::MasterApi;
use crate::actors::maintenance::{CreateWindow, DeleteWindow, MaintenanceKeeper};
use crate::http::{decode_json, drain, read_body, ApiError, FieldError, MAX_BODY};
use crate::model::{EpochMs, MaintenanceScope, MaintenanceWindow};
use crate::store::Lookup;

/// Amon's limit on `notes`.
const MAX_NOTES: usize = 255;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct WindowBody {
    pub start: Option<serde_json::Value>,
    pub end: Option<serde_json::Value>,
    pub notes: Option<String>,
    pub all: Option<bool>,
    pub probes: Option<Vec<String>>,
    pub probe_groups: Option<Vec<String>>,
    pub machines: Option<Vec<String>>,
    pub servers: Option<Vec<String>>,
}

/// `now`, an ISO 8601 time, or epoch milliseconds (number or digits).
fn parse_time(value: &serde_json::Value, now: EpochMs) -> Option<EpochMs> {
    match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(text) => {
            let text = text.trim();
            if text == "now" {
                return Some(now);
            }
            if let Ok(ms) = text.parse::<i64>() {
                return Some(ms);
            }
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_millis())
        }
        _ => None,
    }
}

/// `30m`, `2h`, `1d` (Amon's `^[1-9]\d*[mhd]$`), from now.
fn parse_relative(value: &serde_json::Value) -> Option<Duration> {
    let text = value.as_str()?.trim();
    // By the last character, not byte: the text may end in any character.
    let unit = text.chars().last()?;
    let number = &text[..text.len() - unit.len_utf8()];
    let n: u64 = number.parse().ok().filter(|n| *n > 0)?;
    let seconds = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(seconds)?))
}

fn uuids(field: &str, values: Option<Vec<String>>, errors: &mut Vec<FieldError>) -> Vec<Uuid> {
    let Some(values) = values else { return Vec::new() };
    if values.is_empty() {
        errors.push(FieldError::invalid(field, format!("{field} must not be empty")));
    }
    values
        .iter()
        .filter_map(|v| match Uuid::parse_str(v) {
            Ok(uuid) => Some(uuid),
            Err(_) => {
                errors.push(FieldError::invalid(field, format!("{v:?} in {field} is not a uuid")));
                None
            }
        })
        .collect()
}

/// Turns a body into a window (id 0 until stored) or says what is wrong.
pub(crate) fn validate(user: Option<Uuid>, body: WindowBody, now: EpochMs) -> Result<MaintenanceWindow, ApiError> {
    let mut errors = Vec::new();
    let start = match &body.start {
        None => now,
        Some(value) => parse_time(value, now).unwrap_or_else(|| {
            errors.push(FieldError::invalid(
                "start",
                format!("start {value} is not \"now\", an ISO 8601 time or epoch milliseconds"),
            ));
            now
        }),
    };
    let end = match &body.end {
        None | Some(serde_json::Value::Null) => None,
        // A duration too long to add to `now` is no end we can keep.
        Some(value) => match parse_relative(value)
            .and_then(|d| EpochMs::try_from(d.as_millis()).ok())
            .and_then(|ms| now.checked_add(ms))
        {
            Some(end) => Some(end),
            None => match parse_time(value, now) {
                Some(end) => Some(end),
                None => {
                    errors.push(FieldError::invalid(
                        "end",
                        format!("end {value} is not an ISO 8601 time, epoch milliseconds or a duration like \"2h\""),
                    ));
                    None
                }
            },
        },
    };
    if let Some(end) = end {
        if end <= start {
            errors.push(FieldError::invalid("end", "end must be after start"));
        } else if end <= now {
            errors.push(FieldError::invalid("end", "end must be in the future"));
        }
    }
    let notes = body.notes.filter(|n| !n.trim().is_empty());
    if notes.as_ref().is_some_and(|n| n.chars().count() > MAX_NOTES) {
        errors.push(FieldError::invalid(
            "notes",
            format!("notes are longer than {MAX_NOTES} characters"),
        ));
    }
    let scope = MaintenanceScope {
        all: body.all.unwrap_or(false),
        probes: uuids("probes", body.probes, &mut errors),
        probe_groups: uuids("probeGroups", body.probe_groups, &mut errors),
        machines: uuids("machines", body.machines, &mut errors),
        servers: uuids("servers", body.servers, &mut errors),
    };
    let monitor = !scope.probes.is_empty() || !scope.probe_groups.is_empty();
    let machine = !scope.machines.is_empty() || !scope.servers.is_empty();
    if scope.all && (monitor || machine) {
        errors.push(FieldError::invalid(
            "all",
            "all covers everything: give no other scope with it",
        ));
    }
    // A scope that is empty only because its uuids were refused is said
    // once, by those refusals.
    if !scope.all && !monitor && !machine && errors.is_empty() {
        errors.push(FieldError::missing("all"));
    }
    if !scope.probes.is_empty() && !scope.probe_groups.is_empty() {
        errors.push(FieldError::invalid(
            "probeGroups",
            "give probes or probeGroups, not both",
        ));
    }
    if !scope.machines.is_empty() && !scope.servers.is_empty() {
        errors.push(FieldError::invalid("servers", "give machines or servers, not both"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(MaintenanceWindow {
        id: 0,
        user,
        start,
        end,
        notes,
        scope,
    })
}

impl MasterApi {
    fn keeper(&self) -> Result<actix::Addr<MaintenanceKeeper>, ApiError> {
        self.keeper
            .get()
            .ok_or_else(|| ApiError::ServiceUnavailable("the maintenance keeper is restarting".into()))
    }

    async fn create_window(&self, user: Option<Uuid>, body: &[u8]) -> Result<HttpResponse, ApiError> {
        let body: WindowBody = decode_json(body, "window")?;
        let window = validate(user, body, self.clock.now_ms())?;
        Ok(HttpResponse::Ok().json(self.open_window(window).await?))
    }

    /// Puts a validated window in force through the keeper (the API's and
    /// the web page's way in).
    pub(crate) async fn open_window(&self, window: MaintenanceWindow) -> Result<MaintenanceWindow, ApiError> {
        Ok(self
            .keeper()?
            .send(CreateWindow(window))
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("maintenance keeper: {e}")))??)
    }

    pub(crate) async fn window(&self, user: Option<Uuid>, id: &str) -> Result<MaintenanceWindow, ApiError> {
        let id: u64 = id
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::InvalidArgument(format!("window id {id:?} is not a positive integer")))?;
        match self.store.get_window(user, id).await? {
            Lookup::Found(window) => Ok(window),
            Lookup::Gone => Err(ApiError::Gone(format!(
                "maintenance window {id} has ended or was deleted"
            ))),
            Lookup::NotFound => Err(ApiError::ResourceNotFound(format!("no such maintenance window: {id}"))),
        }
    }

    async fn delete_window(&self, user: Option<Uuid>, id: &str) -> Result<HttpResponse, ApiError> {
        self.end_window(user, id).await?;
        Ok(HttpResponse::NoContent().finish())
    }

    /// Ends (deletes) a window: `user` is the account it must belong to,
    /// `None` for an operator (any window).
    pub(crate) async fn end_window(&self, user: Option<Uuid>, id: &str) -> Result<(), ApiError> {
        let window = self.window(user, id).await?;
        self.keeper()?
            .send(DeleteWindow { user, id: window.id })
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("maintenance keeper: {e}")))??;
        Ok(())
    }
}

pub(super) async fn list(api: web::Data<MasterApi>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let account = api.account(&path).await?;
    let windows: Vec<MaintenanceWindow> = api
        .store
        .all_windows()
        .await?
        .into_iter()
        .filter(|w| w.user == Some(account.uuid))
        .collect();
    Ok(HttpResponse::Ok().json(windows))
}

pub(super) async fn create(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let account = api.account(&path).await?;
    api.create_window(Some(account.uuid), &body).await
}

pub(super) async fn get(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (account, id) = path.into_inner();
    let account = api.account(&account).await?;
    Ok(HttpResponse::Ok().json(api.window(Some(account.uuid), &id).await?))
}

pub(super) async fn delete(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    drain(payload).await?;
    let (account, id) = path.into_inner();
    let account = api.account(&account).await?;
    api.delete_window(Some(account.uuid), &id).await
}

/// `GET /maintenances`: every window, across accounts (operators).
pub(super) async fn list_all(api: web::Data<MasterApi>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api.store.all_windows().await?))
}

/// `POST /maintenances`: an operator's window across accounts.
pub(super) async fn create_operator(
    api: web::Data<MasterApi>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    api.create_window(None, &body).await
}

pub(super) async fn get_operator(api: web::Data<MasterApi>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api.window(None, &path).await?))
}

pub(super) async fn delete_operator(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    drain(payload).await?;
    api.delete_window(None, &path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> WindowBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn relative_ends_count_from_now_and_open_ends_are_allowed() {
        let w = validate(
            None,
            body(serde_json::json!({"end": "2h", "servers": [Uuid::nil()]})),
            1000,
        )
        .unwrap();
        assert_eq!(w.start, 1000);
        assert_eq!(w.end, Some(1000 + 2 * 3600 * 1000));
        let w = validate(None, body(serde_json::json!({"all": true})), 1000).unwrap();
        assert_eq!(w.end, None);
        let w = validate(
            None,
            body(serde_json::json!({"start": "2030-01-01T00:00:00Z", "all": true})),
            0,
        )
        .unwrap();
        assert_eq!(w.start, 1_893_456_000_000);
    }

    /// Found reading the window parser for the `api_body` fuzz target, and
    /// confirmed through it: a relative end whose milliseconds overflowed
    /// when added to now panicked the handler (and wrapped in a release
    /// build).
    #[test]
    fn a_relative_end_beyond_what_a_time_can_hold_is_invalid() {
        let now = 1_700_000_000_000;
        for end in ["153722838947580m", "2562047788015h", "18446744073709551615d"] {
            let err = validate(None, body(serde_json::json!({"end": end, "all": true})), now).unwrap_err();
            match err {
                ApiError::ValidationFailed { errors, .. } => assert_eq!(errors[0].field, "end", "{end}"),
                other => panic!("{end}: {other:?}"),
            }
        }
    }

    /// Found by the `api_body` fuzz target in its first 20 s in CI's
    /// script: an end whose last character took more than one byte
    /// (`"2030-01-01T:0020:00+01:Ɲ"`) panicked the handler, in any build.
    #[test]
    fn an_end_ending_in_a_multibyte_character_is_invalid() {
        for end in ["2030-01-01T:0020:00+01:Ɲ", "2é", "Ɲ", "30Ɲ"] {
            match validate(None, body(serde_json::json!({"end": end, "all": true})), 0) {
                Err(ApiError::ValidationFailed { errors, .. }) => assert_eq!(errors[0].field, "end", "{end}"),
                other => panic!("{end}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_scope_empty_only_because_its_uuids_were_refused_is_said_once() {
        match validate(None, body(serde_json::json!({"machines": ["nope"]})), 0) {
            Err(ApiError::ValidationFailed { errors, .. }) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["machines"], "{errors:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scopes_are_all_or_one_monitor_and_one_machine_scope() {
        let p = Uuid::new_v4().to_string();
        assert!(validate(None, body(serde_json::json!({"probes": [p], "machines": [p]})), 0).is_ok());
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"all": true, "probes": [p]}),
            serde_json::json!({"probes": [p], "probeGroups": [p]}),
            serde_json::json!({"machines": [p], "servers": [p]}),
            serde_json::json!({"machines": []}),
            serde_json::json!({"machines": ["nope"]}),
            serde_json::json!({"all": true, "end": "0m"}),
            serde_json::json!({"all": true, "start": 5000, "end": 4000}),
        ] {
            assert!(
                matches!(
                    validate(None, body(bad.clone()), 1000),
                    Err(ApiError::ValidationFailed { .. })
                ),
                "{bad}"
            );
        }
    }
}
