//! Maintenance windows on the page: the list, a form to create one (scope,
//! end as a duration or a time, notes), ending one, and the one-click
//! hold-offs of alarm and incident pages. Windows are validated as the API
//! validates them and put in force by the maintenance keeper.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::directory::Directory;
use super::layout::{count, html_response, page, see_other, time, Nav, UiError};
use super::session::Viewer;
use super::suppress::{window, HoldFor, Target};
use super::{notice, Ui};
use crate::http::master::{validate_window, WindowBody};
use crate::http::ApiError;
use crate::model::MaintenanceWindow;

/// The windows a viewer may see: an account its own, an operator all.
fn visible(viewer: &Viewer, windows: Vec<MaintenanceWindow>) -> Vec<MaintenanceWindow> {
    windows
        .into_iter()
        .filter(|w| viewer.account().is_none() || w.user == viewer.account())
        .collect()
}

fn describe(w: &MaintenanceWindow, dir: &Directory) -> String {
    let s = &w.scope;
    let list = |what: &str, names: Vec<String>| format!("{what}: {}", names.join(", "));
    let mut parts = Vec::new();
    if s.all {
        parts.push("everything".to_string());
    }
    if !s.servers.is_empty() {
        parts.push(list("servers", s.servers.iter().map(|u| dir.server_name(*u)).collect()));
    }
    if !s.machines.is_empty() {
        parts.push(list(
            "machines",
            s.machines.iter().map(|u| dir.machine_name(*u)).collect(),
        ));
    }
    if !s.probes.is_empty() {
        parts.push(list("probes", s.probes.iter().map(|u| dir.probe_name(*u)).collect()));
    }
    if !s.probe_groups.is_empty() {
        parts.push(list(
            "probe groups",
            s.probe_groups.iter().map(|u| dir.group_name(*u)).collect(),
        ));
    }
    parts.join("; ")
}

/// `GET /ui/maintenance`.
pub(super) async fn list(ui: web::Data<Ui>, req: HttpRequest) -> Result<HttpResponse, UiError> {
    let viewer = ui.viewer(&req)?;
    let dir = Directory::load(&ui.api.store).await?;
    let mut windows = visible(&viewer, ui.api.store.all_windows().await?);
    windows.sort_by_key(|w| (w.start, w.id));
    let owner = |w: &MaintenanceWindow| match w.user {
        Some(account) => dir.login(account),
        None => "every account".to_string(),
    };
    let scopes = [
        ("all", "Everything"),
        ("servers", "Servers"),
        ("machines", "Machines"),
        ("probes", "Probes"),
        ("probeGroups", "Probe groups"),
    ];
    let body = html! {
        section #windows aria-labelledby="windows-h" {
            h2 #windows-h { "Windows in force or planned" }
            @if windows.is_empty() {
                p.empty { "No maintenance windows." }
            } @else {
                table {
                    caption { (count(windows.len(), "window")) }
                    thead { tr {
                        th scope="col" { "Window" } th scope="col" { "Covers" } th scope="col" { "Whose alarms" }
                        th scope="col" { "Start" } th scope="col" { "End" } th scope="col" { "Notes" } th scope="col" { "End it" }
                    } }
                    tbody {
                        @for w in &windows {
                            tr data-window=(w.id) {
                                td { (w.id) }
                                td { (describe(w, &dir)) }
                                td { (owner(w)) }
                                td { (time(w.start)) }
                                td { @if let Some(end) = w.end { (time(end)) } @else { "until ended" } }
                                td { (w.notes.clone().unwrap_or_default()) }
                                td {
                                    form method="post" action="/ui/maintenance/end" {
                                        input type="hidden" name="id" value=(w.id);
                                        input type="hidden" name="owner" value=(w.user.map(|u| u.to_string()).unwrap_or_default());
                                        button type="submit" aria-label=(format!("End window {}", w.id)) { "End" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #create aria-labelledby="create-h" {
            h2 #create-h { "New window" }
            form.window method="post" action="/ui/maintenance" {
                fieldset {
                    legend { "Covers" }
                    @for (i, (value, label)) in scopes.iter().enumerate() {
                        span.choice {
                            input type="radio" name="scope" id=(format!("scope-{value}")) value=(value) checked[i == 1];
                            label for=(format!("scope-{value}")) { (label) }
                        }
                    }
                }
                p {
                    label for="targets" { "Which (uuids, one per line or separated by commas; not for “Everything”)" }
                    textarea #targets name="targets" rows="3" cols="40" {}
                }
                p {
                    label for="end" { "End" }
                    input #end type="text" name="end" aria-describedby="end-help";
                }
                p #end-help .help { "A duration from now (30m, 2h, 1d), a time (2026-12-02T18:00:00Z), or empty to keep it until ended." }
                p {
                    label for="notes" { "Notes" }
                    input #notes type="text" name="notes" maxlength="255";
                }
                p { button type="submit" { "Create window" } }
            }
        }
    };
    let stamp = ui.stamp().await;
    Ok(html_response(
        StatusCode::OK,
        page(
            ui.frame(
                "Maintenance",
                Nav::Maintenance,
                &viewer,
                notice(req.query_string()),
                stamp,
            ),
            body,
        ),
    ))
}

#[derive(Deserialize)]
pub(super) struct CreateForm {
    scope: String,
    #[serde(default)]
    targets: String,
    #[serde(default)]
    end: String,
    #[serde(default)]
    notes: String,
}

impl CreateForm {
    /// The form as the API's window body, so both are validated alike.
    fn body(self) -> Result<WindowBody, ApiError> {
        let targets: Vec<String> = self
            .targets
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        let mut body = WindowBody {
            end: Some(self.end.trim())
                .filter(|e| !e.is_empty())
                .map(|e| serde_json::Value::String(e.to_string())),
            notes: Some(self.notes),
            ..WindowBody::default()
        };
        match self.scope.as_str() {
            "all" => body.all = Some(true),
            "servers" => body.servers = Some(targets),
            "machines" => body.machines = Some(targets),
            "probes" => body.probes = Some(targets),
            "probeGroups" => body.probe_groups = Some(targets),
            other => {
                return Err(ApiError::InvalidArgument(format!(
                    "scope {other:?} is not all, servers, machines, probes or probeGroups"
                )))
            }
        }
        Ok(body)
    }
}

/// `POST /ui/maintenance`: an account's window covers its own alarms, an
/// operator's every account's.
pub(super) async fn create(
    ui: web::Data<Ui>,
    req: HttpRequest,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, UiError> {
    let viewer = ui.actor(&req)?;
    let body = form.into_inner().body()?;
    let window = validate_window(viewer.account(), body, ui.api.clock.now_ms())?;
    let window = ui.api.open_window(window).await?;
    tracing::info!(viewer = %viewer.name, window = window.id, "ui maintenance window created");
    Ok(see_other("/ui/maintenance?done=window"))
}

#[derive(Deserialize)]
pub(super) struct EndForm {
    id: String,
    #[serde(default)]
    owner: String,
}

/// `POST /ui/maintenance/end`.
pub(super) async fn end(
    ui: web::Data<Ui>,
    req: HttpRequest,
    form: web::Form<EndForm>,
) -> Result<HttpResponse, UiError> {
    let viewer = ui.actor(&req)?;
    let owner = match form.owner.trim() {
        "" => None,
        text => Some(
            Uuid::parse_str(text).map_err(|_| ApiError::InvalidArgument(format!("owner {text:?} is not a uuid")))?,
        ),
    };
    // An account ends only its own windows; an operator any.
    if viewer.account().is_some() && owner != viewer.account() {
        return Err(ApiError::ResourceNotFound(format!("no such maintenance window: {}", form.id)).into());
    }
    ui.api.end_window(owner, &form.id).await?;
    tracing::info!(viewer = %viewer.name, window = %form.id, "ui maintenance window ended");
    Ok(see_other("/ui/maintenance?done=ended"))
}

#[derive(Deserialize)]
pub(super) struct SuppressForm {
    scope: String,
    target: String,
    #[serde(rename = "for")]
    hold: String,
    /// The page to go back to (only a page of this site).
    #[serde(default)]
    back: String,
    #[serde(default)]
    alarm: Option<String>,
}

/// `POST /ui/suppress`: one click from an alarm or an incident.
pub(super) async fn suppress(
    ui: web::Data<Ui>,
    req: HttpRequest,
    form: web::Form<SuppressForm>,
) -> Result<HttpResponse, UiError> {
    let viewer = ui.actor(&req)?;
    let target = Target::parse(&form.scope, &form.target).map_err(ApiError::InvalidArgument)?;
    let hold = HoldFor::parse(&form.hold).map_err(ApiError::InvalidArgument)?;
    let from = match form.alarm.as_deref().filter(|a| !a.is_empty()) {
        Some(alarm) => format!(" for alarm {alarm}"),
        None => String::new(),
    };
    let notes = format!("held off from the web page by {}{from}", viewer.name);
    let window = window(viewer.account(), target, hold, ui.api.clock.now_ms(), notes);
    let window = ui.api.open_window(window).await?;
    tracing::info!(viewer = %viewer.name, window = window.id, scope = target.scope_name(), target = %target.uuid(), "ui hold-off");
    // Back where the click was, if that is one of our pages.
    let back = if form.back.starts_with("/ui/") && !form.back.contains("//") {
        form.back.split('?').next().unwrap_or("/ui/")
    } else {
        "/ui/maintenance"
    };
    Ok(see_other(&format!("{back}?done=window")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(scope: &str, targets: &str, end: &str) -> CreateForm {
        CreateForm {
            scope: scope.into(),
            targets: targets.into(),
            end: end.into(),
            notes: "n".into(),
        }
    }

    #[test]
    fn the_create_form_is_validated_as_the_api_validates_a_window() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let body = form("servers", &format!("{a},\n{b} "), "2h").body().unwrap();
        let w = validate_window(None, body, 1000).unwrap();
        assert_eq!(w.scope.servers, vec![a, b]);
        assert_eq!(w.end, Some(1000 + 7_200_000));
        let w = validate_window(None, form("all", "", "").body().unwrap(), 0).unwrap();
        assert!(w.scope.all && w.end.is_none());
        assert!(form("racks", "", "").body().is_err());
        assert!(
            validate_window(None, form("machines", "", "").body().unwrap(), 0).is_err(),
            "no machines named"
        );
        assert!(validate_window(None, form("machines", "nope", "").body().unwrap(), 0).is_err());
    }
}
