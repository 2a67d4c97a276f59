//! The alarm pages: the filterable list, and one alarm with its faults, its
//! timeline, every notification sent for it with its delivery, its actions
//! (close, reopen, suppress, unsuppress) and one-click hold-offs.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::directory::Directory;
use super::layout::{count, html_response, page, see_other, time, Nav, UiError};
use super::session::Viewer;
use super::suppress::{Target, CHOICES};
use super::{notice, Ui};
use crate::actors::alarm::AlarmCommand;
use crate::http::alarm_filter::{AlarmFilter, AlarmState};
use crate::http::ApiError;
use crate::model::{Alarm, EpochMs};
use crate::rules::AlarmAction;
use crate::store::DeliveryRecord;

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    state: Option<String>,
    account: Option<String>,
    server: Option<String>,
    group: Option<String>,
    q: Option<String>,
}

fn filled(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn uuid_field(name: &str, value: &Option<String>) -> Result<Option<Uuid>, ApiError> {
    filled(value)
        .map(|v| Uuid::parse_str(v).map_err(|_| ApiError::InvalidArgument(format!("{name} {v:?} is not a uuid"))))
        .transpose()
}

impl ListQuery {
    fn filter(&self) -> Result<AlarmFilter, ApiError> {
        let state = match filled(&self.state) {
            None => AlarmState::default(),
            Some(text) => AlarmState::parse(text).ok_or_else(|| {
                ApiError::InvalidArgument(format!("state {text:?} is not recent, open, closed or all"))
            })?,
        };
        Ok(AlarmFilter {
            state,
            account: filled(&self.account).map(str::to_string),
            server: uuid_field("server", &self.server)?,
            group: uuid_field("group", &self.group)?,
            text: filled(&self.q).map(str::to_string),
        })
    }
}

/// The alarms a viewer may see, newest first.
pub(super) async fn visible_alarms(ui: &Ui, viewer: &Viewer, open_only: bool) -> Result<Vec<Alarm>, UiError> {
    let alarms = match viewer.account() {
        Some(account) => ui
            .api
            .store
            .list_alarms(account)
            .await?
            .into_iter()
            .filter(|a| !open_only || !a.closed)
            .collect(),
        None => ui.api.store.all_alarms(open_only).await?,
    };
    let mut alarms: Vec<Alarm> = alarms;
    alarms.sort_by_key(|a| std::cmp::Reverse((a.time_last_event.unwrap_or(a.time_opened), a.time_opened)));
    Ok(alarms)
}

/// A table of alarms, one `tr[data-alarm]` per alarm linking to its page.
pub(super) fn table(alarms: &[&Alarm], dir: &Directory, caption: &str) -> Markup {
    html! {
        @if alarms.is_empty() {
            p.empty { "No alarms." }
        } @else {
            table {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Alarm" } th scope="col" { "Account" } th scope="col" { "Watching" }
                    th scope="col" { "Machines" } th scope="col" { "State" } th scope="col" { "Opened" } th scope="col" { "Last event" }
                } }
                tbody {
                    @for a in alarms {
                        tr data-alarm=(format!("{}/{}", a.user, a.id)) {
                            td { a href=(alarm_href(a)) { "Alarm " (a.id) } }
                            td { (dir.login(a.user)) }
                            td { (dir.monitor_name(a)) }
                            td {
                                @for (i, m) in Directory::machines_of(a).iter().enumerate() {
                                    @if i > 0 { ", " }
                                    span title=(m) { (dir.machine_name(*m)) }
                                }
                            }
                            td { (state_label(a)) }
                            td { (time(a.time_opened)) }
                            td { @if let Some(t) = a.time_last_event { (time(t)) } @else { "—" } }
                        }
                    }
                }
            }
        }
    }
}

fn alarm_href(a: &Alarm) -> String {
    format!("/ui/alarms/{}/{}", a.user, a.id)
}

fn state_label(a: &Alarm) -> String {
    let state = if a.closed { "closed" } else { "open" };
    if a.suppressed {
        format!("{state}, suppressed")
    } else {
        state.to_string()
    }
}

/// `GET /ui/alarms`: the list, filtered by state, account, server, probe
/// group and text.
pub(super) async fn list(ui: web::Data<Ui>, req: HttpRequest) -> Result<HttpResponse, UiError> {
    let viewer = ui.viewer(&req)?;
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::InvalidArgument(format!("invalid query string: {e}")))?
        .into_inner();
    let filter = query.filter()?;
    let now = ui.api.clock.now_ms();
    let dir = Directory::load(&ui.api.store).await?;
    let alarms = visible_alarms(&ui, &viewer, filter.state == AlarmState::Open).await?;
    let shown: Vec<&Alarm> = alarms
        .iter()
        .filter(|a| filter.keeps(a, &dir.context(a), now))
        .collect();
    let selected = |want: Option<&str>, value: &str| want == Some(value);
    let body = html! {
        form.filters method="get" action="/ui/alarms" role="search" aria-label="Filter alarms" {
            p {
                label for="state" { "State" }
                select #state name="state" {
                    @for s in AlarmState::ALL {
                        option value=(s.name()) selected[filter.state == s] { (s.name()) }
                    }
                }
            }
            @if viewer.account().is_none() {
                p {
                    label for="account" { "Account" }
                    input #account type="text" name="account" value=[filled(&query.account)] placeholder="login or uuid";
                }
            }
            p {
                label for="server" { "Server" }
                select #server name="server" {
                    option value="" { "any" }
                    @for (uuid, name) in dir.servers() {
                        option value=(uuid) selected[selected(filled(&query.server), &uuid.to_string())] { (name) }
                    }
                }
            }
            p {
                label for="group" { "Probe group" }
                select #group name="group" {
                    option value="" { "any" }
                    @for g in dir.groups_of(viewer.account()) {
                        option value=(g.uuid) selected[selected(filled(&query.group), &g.uuid.to_string())] {
                            (g.name.clone().unwrap_or_else(|| g.uuid.to_string()))
                        }
                    }
                }
            }
            p {
                label for="q" { "Text" }
                input #q type="search" name="q" value=[filled(&query.q)] placeholder="machine, probe, message…";
            }
            p { button type="submit" { "Filter" } }
        }
        (table(&shown, &dir, &format!("{} ({})", count(shown.len(), "alarm"), filter.state.name())))
    };
    let stamp = ui.stamp().await;
    Ok(html_response(
        StatusCode::OK,
        page(ui.frame("Alarms", Nav::Alarms, &viewer, None, stamp), body),
    ))
}

/// The alarm of the path, if this viewer may see it: another account's
/// alarm is "not found", as one that does not exist (nothing leaks).
async fn visible_alarm(ui: &Ui, viewer: &Viewer, account: &str, id: &str) -> Result<Alarm, UiError> {
    let missing = || UiError::Api(ApiError::ResourceNotFound(format!("no such alarm: {account}/{id}")));
    let account = Uuid::parse_str(account).map_err(|_| missing())?;
    if !viewer.may_see(account) {
        return Err(missing());
    }
    Ok(ui.api.alarm(account, id).await?)
}

/// One line of an alarm's timeline.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Moment {
    pub at: EpochMs,
    pub what: String,
}

/// What happened to an alarm, in order: opened, each fault, each
/// notification and its delivery, the last event, closed.
pub(super) fn timeline(alarm: &Alarm, deliveries: &[DeliveryRecord], machine: impl Fn(Uuid) -> String) -> Vec<Moment> {
    let mut moments = vec![Moment {
        at: alarm.time_opened,
        what: "Alarm opened".into(),
    }];
    for (fault, maintenance) in alarm
        .faults
        .iter()
        .map(|f| (f, false))
        .chain(alarm.maint_faults.iter().map(|f| (f, true)))
    {
        let on = fault
            .event
            .machine
            .map(|m| format!(" on {}", machine(m)))
            .unwrap_or_default();
        let under = if maintenance { " (under maintenance)" } else { "" };
        moments.push(Moment {
            at: fault.time_faulted,
            what: format!("Fault{on}{under}: {}", fault.event.data.message),
        });
    }
    for d in deliveries {
        let attempts = match d.attempts {
            1 => "1 attempt".to_string(),
            n => format!("{n} attempts"),
        };
        moments.push(Moment {
            at: d.created,
            what: format!(
                "{} notification to {}: {} ({attempts})",
                kind_name(&d.notification.kind),
                d.notification.contact_name,
                d.state
            ),
        });
    }
    if let Some(last) = alarm.time_last_event {
        moments.push(Moment {
            at: last,
            what: format!("Last event ({} in all)", alarm.num_events),
        });
    }
    if let Some(closed) = alarm.time_closed.filter(|_| alarm.closed) {
        moments.push(Moment {
            at: closed,
            what: "Alarm closed".into(),
        });
    }
    // Stable: what happened at the same millisecond keeps the order above.
    moments.sort_by_key(|m| m.at);
    moments
}

fn kind_name(kind: &crate::notify::NotificationKind) -> &'static str {
    use crate::notify::NotificationKind::*;
    match kind {
        Fault => "Fault",
        Clear => "Clear",
        Digest => "Digest",
        ServerDown => "Server down",
        ServerBack => "Server back",
    }
}

fn suppress_forms(alarm: &Alarm, dir: &Directory, back: &str) -> Markup {
    let mut targets: Vec<(Target, String)> = Vec::new();
    for m in Directory::machines_of(alarm) {
        targets.push((Target::Machine(m), dir.machine_name(m)));
    }
    for s in dir.servers_of(alarm) {
        targets.push((Target::Server(s), dir.server_name(s)));
    }
    match (alarm.probe_group, alarm.probe) {
        (Some(g), _) => targets.push((Target::ProbeGroup(g), dir.group_name(g))),
        (None, Some(p)) => targets.push((Target::Probe(p), dir.probe_name(p))),
        (None, None) => {}
    }
    html! {
        @for (target, name) in &targets {
            form.suppress method="post" action="/ui/suppress" data-scope=(target.scope_name())
                aria-label=(format!("Hold off {} ({name})", target.noun())) {
                input type="hidden" name="scope" value=(target.scope_name());
                input type="hidden" name="target" value=(target.uuid());
                input type="hidden" name="back" value=(back);
                input type="hidden" name="alarm" value=(alarm.id);
                span.what { "Hold off " (target.noun()) " (" (name) ") for" }
                @for (value, label) in CHOICES {
                    " "
                    button type="submit" name="for" value=(value) { (label) }
                }
            }
        }
    }
}

/// `GET /ui/alarms/:account/:id`.
pub(super) async fn show(
    ui: web::Data<Ui>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, UiError> {
    let viewer = ui.viewer(&req)?;
    let (account, id) = path.into_inner();
    let alarm = visible_alarm(&ui, &viewer, &account, &id).await?;
    let dir = Directory::load(&ui.api.store).await?;
    let deliveries = ui.api.store.alarm_deliveries(alarm.user, alarm.id).await?;
    let moments = timeline(&alarm, &deliveries, |m| dir.machine_name(m));
    let href = alarm_href(&alarm);
    let fault_rows = |faults: &[crate::model::Fault]| {
        html! {
            @for f in faults {
                tr.fault {
                    td {
                        @if let Some(m) = f.event.machine {
                            @let name = dir.machine_name(m);
                            @if name != m.to_string() { (name) br; }
                            span.uuid { (m) }
                        } @else { "—" }
                    }
                    td { @if let Some(s) = f.event.machine.and_then(|m| dir.server_of(m)) { (dir.server_name(s)) } @else { "—" } }
                    td { (dir.probe_name(f.probe)) }
                    td { (f.event.data.message) }
                    td { (time(f.time_faulted)) }
                    td { @if f.notified { "yes" } @else if f.folded { "in a server incident" } @else { "not yet (hold)" } }
                }
            }
        }
    };
    let body = html! {
        dl.facts {
            dt { "Account" } dd { (dir.login(alarm.user)) }
            dt { "Watching" } dd { (dir.monitor_name(&alarm)) }
            dt { "State" } dd #state-of-alarm { (state_label(&alarm)) }
            dt { "Opened" } dd { (time(alarm.time_opened)) }
            @if let Some(t) = alarm.time_closed.filter(|_| alarm.closed) { dt { "Closed" } dd { (time(t)) } }
            dt { "Events" } dd { (alarm.num_events) }
        }
        section #actions aria-labelledby="actions-h" {
            h2 #actions-h { "Actions" }
            form method="post" action=(format!("{href}/action")) {
                @if alarm.closed {
                    button type="submit" name="action" value="reopen" { "Reopen" }
                } @else {
                    button type="submit" name="action" value="close" { "Close" }
                }
                " "
                @if alarm.suppressed {
                    button type="submit" name="action" value="unsuppress" { "Unsuppress" }
                } @else {
                    button type="submit" name="action" value="suppress" { "Suppress" }
                }
            }
            h3 { "Hold off (a maintenance window from now)" }
            (suppress_forms(&alarm, &dir, &href))
        }
        section #faults aria-labelledby="faults-h" {
            h2 #faults-h { "Faults" }
            @if alarm.faults.is_empty() && alarm.maint_faults.is_empty() {
                p.empty { "No open faults." }
            } @else {
                table {
                    caption { (alarm.faults.len()) " open, " (alarm.maint_faults.len()) " under maintenance" }
                    thead { tr {
                        th scope="col" { "Machine" } th scope="col" { "Server" } th scope="col" { "Probe" }
                        th scope="col" { "Message" } th scope="col" { "Since" } th scope="col" { "Notified" }
                    } }
                    tbody { (fault_rows(&alarm.faults)) }
                }
                @if !alarm.maint_faults.is_empty() {
                    table {
                        caption { "Under maintenance" }
                        thead { tr {
                            th scope="col" { "Machine" } th scope="col" { "Server" } th scope="col" { "Probe" }
                            th scope="col" { "Message" } th scope="col" { "Since" } th scope="col" { "Notified" }
                        } }
                        tbody { (fault_rows(&alarm.maint_faults)) }
                    }
                }
            }
        }
        section #notifications aria-labelledby="notifications-h" {
            h2 #notifications-h { "Notifications" }
            @if deliveries.is_empty() {
                p.empty { "None sent for this alarm." }
            } @else {
                table {
                    caption { (count(deliveries.len(), "notification")) }
                    thead { tr {
                        th scope="col" { "Decided" } th scope="col" { "Kind" } th scope="col" { "Contact" }
                        th scope="col" { "Delivery" } th scope="col" { "Attempts" } th scope="col" { "Last error" }
                    } }
                    tbody {
                        @for d in &deliveries {
                            tr.delivery data-state=(d.state) {
                                td { (time(d.created)) }
                                td { (kind_name(&d.notification.kind)) }
                                td { (d.notification.contact_name) }
                                td { (d.state) }
                                td { (d.attempts) }
                                td { (d.last_error.clone().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }
        section #timeline aria-labelledby="timeline-h" {
            h2 #timeline-h { "Timeline" }
            ol.timeline {
                @for m in &moments {
                    li { (time(m.at)) " " (m.what) }
                }
            }
        }
    };
    let stamp = ui.stamp().await;
    let title = format!("Alarm {} of {}", alarm.id, dir.login(alarm.user));
    Ok(html_response(
        StatusCode::OK,
        page(
            ui.frame(title, Nav::Alarms, &viewer, notice(req.query_string()), stamp),
            body,
        ),
    ))
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    action: String,
}

/// `POST /ui/alarms/:account/:id/action`: close, reopen, suppress or
/// unsuppress, through the alarm's actor as the API does; back to the page.
pub(super) async fn act(
    ui: web::Data<Ui>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, UiError> {
    let viewer = ui.actor(&req)?;
    let (account, id) = path.into_inner();
    let action = AlarmAction::parse(&form.action).ok_or_else(|| {
        ApiError::InvalidArgument(format!(
            "action {:?} is not close, reopen, suppress or unsuppress",
            form.action
        ))
    })?;
    let alarm = visible_alarm(&ui, &viewer, &account, &id).await?;
    ui.api
        .command_alarm(&alarm, AlarmCommand::Act { id: alarm.id, action })
        .await?;
    tracing::info!(viewer = %viewer.name, account = %alarm.user, alarm = alarm.id, action = %form.action, "ui alarm action");
    Ok(see_other(&format!("{}?done={}", alarm_href(&alarm), form.action)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{ContactAddress, Notification, NotificationKind};

    fn alarm() -> Alarm {
        serde_json::from_value(serde_json::json!({
            "user": Uuid::from_u128(1), "id": 4, "probe": Uuid::from_u128(2), "closed": true,
            "suppressed": false, "timeOpened": 1000, "timeClosed": 9000, "timeLastEvent": 8000,
            "numEvents": 3, "faults": [], "maintFaults": []
        }))
        .unwrap()
    }

    #[test]
    fn a_timeline_is_in_order_from_opened_to_closed() {
        let mut n: Notification = crate::notify::transport::tests::notification();
        n.kind = NotificationKind::Fault;
        n.contact_name = "email".into();
        n.contact = ContactAddress::Email("ops@example.com".into());
        let deliveries = vec![DeliveryRecord {
            notification: n,
            state: "sent".into(),
            attempts: 2,
            last_error: None,
            created: 5000,
        }];
        let moments = timeline(&alarm(), &deliveries, |m| m.to_string());
        let whats: Vec<(EpochMs, &str)> = moments.iter().map(|m| (m.at, m.what.as_str())).collect();
        assert_eq!(
            whats,
            vec![
                (1000, "Alarm opened"),
                (5000, "Fault notification to email: sent (2 attempts)"),
                (8000, "Last event (3 in all)"),
                (9000, "Alarm closed"),
            ]
        );
    }

    #[test]
    fn the_list_query_is_checked_at_the_edge() {
        let bad = ListQuery {
            state: Some("sideways".into()),
            ..Default::default()
        };
        assert!(bad.filter().is_err());
        let bad = ListQuery {
            server: Some("not-a-uuid".into()),
            ..Default::default()
        };
        assert!(bad.filter().is_err());
        let blank = ListQuery {
            state: Some("".into()),
            q: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(blank.filter().unwrap(), AlarmFilter::default());
    }
}
