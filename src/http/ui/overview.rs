//! The overview: open alarms (by account, by server, and each one), open
//! server incidents, every relay with its health and last heartbeat, the
//! outbox, and events and notifications per minute over the last hour.
//! Incidents, relays and the outbox are the data center's: operators only.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup, PreEscaped};

use super::alarms::{table, visible_alarms};
use super::directory::Directory;
use super::layout::{ago, count, html_response, page, short, time, Nav, UiError};
use super::{chart, Ui};
use crate::actors::server_guard::GetServers;
use crate::http::shapes::ServerView;
use crate::model::Alarm;

/// `GET /ui/`.
pub(super) async fn show(ui: web::Data<Ui>, req: HttpRequest) -> Result<HttpResponse, UiError> {
    let viewer = ui.viewer(&req)?;
    let now = ui.api.clock.now_ms();
    let dir = Directory::load(&ui.api.store).await?;
    let open = visible_alarms(&ui, &viewer, true).await?;
    let open: Vec<&Alarm> = open.iter().collect();
    let mut by_account: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_server: BTreeMap<String, usize> = BTreeMap::new();
    for a in &open {
        *by_account.entry(dir.login(a.user)).or_default() += 1;
        let servers = dir.servers_of(a);
        if servers.is_empty() {
            *by_server.entry("(no machine)".into()).or_default() += 1;
        }
        for s in servers {
            *by_server.entry(dir.server_name(s)).or_default() += 1;
        }
    }
    let operator = viewer.account().is_none();
    let data_center = if operator {
        Some(data_center(&ui, &dir, now).await?)
    } else {
        None
    };
    let minutes = ui.api.store.activity().last_hour(now);
    let body = html! {
        section #open-alarms aria-labelledby="open-alarms-h" {
            h2 #open-alarms-h { "Open alarms" }
            div.counts {
                (counts("By account", "Account", &by_account))
                (counts("By server", "Server", &by_server))
            }
            (table(&open, &dir, &count(open.len(), "open alarm")))
        }
        @if let Some(data_center) = data_center { (data_center) }
        section #activity aria-labelledby="activity-h" {
            h2 #activity-h { "Last hour" }
            (PreEscaped(chart::activity_svg(&minutes)))
        }
    };
    let stamp = ui.stamp().await;
    Ok(html_response(
        StatusCode::OK,
        page(ui.frame("Overview", Nav::Overview, &viewer, None, stamp), body),
    ))
}

fn counts(caption: &str, what: &str, counts: &BTreeMap<String, usize>) -> Markup {
    html! {
        @if !counts.is_empty() {
            table.count {
                caption { (caption) }
                thead { tr { th scope="col" { (what) } th scope="col" { "Open" } } }
                tbody {
                    @for (name, n) in counts {
                        tr { th scope="row" { (name) } td { (n) } }
                    }
                }
            }
        }
    }
}

/// Incidents, relays and the outbox.
async fn data_center(ui: &Ui, dir: &Directory, now: crate::model::EpochMs) -> Result<Markup, UiError> {
    let views: Vec<ServerView> = match ui.api.guard.get() {
        Some(guard) => guard.send(GetServers).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let relays = ui.api.store.servers().await?;
    let outbox = ui.api.store.outbox_summary().await?;
    let dead = ui.api.store.dead_letters(20).await?;
    let silent_after = i64::try_from(ui.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX);
    let incidents: Vec<_> = views.iter().filter_map(|v| v.incident.as_ref()).collect();
    Ok(html! {
        section #incidents aria-labelledby="incidents-h" {
            h2 #incidents-h { "Server incidents" }
            @if incidents.is_empty() {
                p.empty { "No open incidents." }
            } @else {
                table {
                    caption { (count(incidents.len(), "open incident")) }
                    thead { tr {
                        th scope="col" { "Server" } th scope="col" { "Why" } th scope="col" { "Since" }
                        th scope="col" { "Machines down" } th scope="col" { "Announced" } th scope="col" { "Hold off" }
                    } }
                    tbody {
                        @for i in &incidents {
                            tr data-incident=(i.id) {
                                td { (i.hostname.clone().unwrap_or_else(|| dir.server_name(i.server))) }
                                td { (format!("{:?}", i.reason).to_lowercase().replace('_', " ")) }
                                td { (time(i.opened)) }
                                td { (i.machines_down) }
                                td { @if i.announced { "yes" } @else { "not yet (hold)" } }
                                td {
                                    form.suppress method="post" action="/ui/suppress" data-scope="server"
                                        aria-label=(format!("Hold off server {}", dir.server_name(i.server))) {
                                        input type="hidden" name="scope" value="server";
                                        input type="hidden" name="target" value=(i.server);
                                        input type="hidden" name="back" value="/ui/";
                                        @for (value, label) in super::suppress::CHOICES {
                                            button type="submit" name="for" value=(value) { (label) } " "
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #relays aria-labelledby="relays-h" {
            h2 #relays-h { "Relays" }
            @if relays.is_empty() {
                p.empty { "No relay has reported yet." }
            } @else {
                table {
                    caption { (count(relays.len(), "relay")) }
                    thead { tr {
                        th scope="col" { "Server" } th scope="col" { "Health" } th scope="col" { "Last heard" }
                        th scope="col" { "Last event" } th scope="col" { "Machines" } th scope="col" { "Down" }
                    } }
                    tbody {
                        @for (uuid, hostname, last_event, last_seen) in &relays {
                            @let view = views.iter().find(|v| v.uuid == *uuid);
                            @let health = if view.is_some_and(|v| v.incident.is_some()) {
                                "incident"
                            } else if now - last_seen > silent_after {
                                "silent"
                            } else {
                                "ok"
                            };
                            tr data-relay=(uuid) data-health=(health) {
                                td { (hostname.clone().unwrap_or_default()) " " (short(*uuid)) }
                                td { (health) }
                                td { (time(*last_seen)) " (" (ago(now, *last_seen)) ")" }
                                td { (last_event) }
                                td { (view.map(|v| v.machines).unwrap_or(0)) }
                                td { (view.map(|v| v.machines_down).unwrap_or(0)) }
                            }
                        }
                    }
                }
            }
        }
        section #outbox aria-labelledby="outbox-h" {
            h2 #outbox-h { "Outbox" }
            dl.facts {
                dt { "Pending" } dd #outbox-pending { (outbox.pending) }
                @if let Some(oldest) = outbox.oldest_pending { dt { "Oldest pending" } dd { (time(oldest)) } }
                dt { "Sent" } dd { (outbox.sent) }
                dt { "In digests" } dd { (outbox.digested) }
                dt { "Dead letters" } dd #outbox-dead { (outbox.dead) }
            }
            @if !dead.is_empty() {
                table {
                    caption { "Latest dead letters" }
                    thead { tr {
                        th scope="col" { "Event time" } th scope="col" { "Account" } th scope="col" { "Contact" }
                        th scope="col" { "Alarm" } th scope="col" { "Why" }
                    } }
                    tbody {
                        @for (n, why) in &dead {
                            tr {
                                td { (time(n.event_time)) }
                                td { (n.account_login) }
                                td { (n.contact_name) }
                                td {
                                    @if n.alarm_id > 0 {
                                        a href=(format!("/ui/alarms/{}/{}", n.account_uuid, n.alarm_id)) { "Alarm " (n.alarm_id) }
                                    } @else { "server incident" }
                                }
                                td { (why) }
                            }
                        }
                    }
                }
            }
        }
    })
}
