//! The frame every page shares — head, skip link, navigation, who is
//! signed in, the notice of the last action, the live region — and the
//! small pieces pages are made of (times, uuids, the error page).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use maud::{html, Markup, DOCTYPE};
use uuid::Uuid;

use super::session::Viewer;
use crate::http::ApiError;
use crate::model::EpochMs;

/// Which page of the navigation is showing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Alarms,
    Maintenance,
    None,
}

/// What a page hands the frame.
pub struct Page<'a> {
    pub title: String,
    pub nav: Nav,
    /// `None` on the sign-in page.
    pub viewer: Option<&'a Viewer>,
    /// What the last action did, shown once at the top of `<main>`.
    pub notice: Option<String>,
    /// The live stamp the page was drawn at (`GET /ui/live`).
    pub stamp: Option<String>,
}

pub fn page(frame: Page<'_>, body: Markup) -> Markup {
    let link = |nav: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(frame.nav == nav).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (frame.title) " · Amon" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/ui.js" defer {}
            }
            body data-stamp=[frame.stamp.as_deref()] {
                a.skip href="#main" { "Skip to content" }
                header {
                    p.brand { "Amon" }
                    @if let Some(viewer) = frame.viewer {
                        nav aria-label="Pages" {
                            ul {
                                (link(Nav::Overview, "/ui/", "Overview"))
                                (link(Nav::Alarms, "/ui/alarms", "Alarms"))
                                (link(Nav::Maintenance, "/ui/maintenance", "Maintenance"))
                            }
                        }
                        div.who {
                            span { "Signed in as " span #role { (viewer.name) } }
                            form method="post" action="/ui/signout" {
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    @if let Some(notice) = &frame.notice {
                        p #notice role="status" { (notice) }
                    }
                    h1 { (frame.title) }
                    (body)
                }
                div #live .visually-hidden role="status" aria-live="polite" {}
            }
        }
    }
}

/// A moment: UTC in the markup (and on hover), turned into the viewer's
/// timezone by the page's script.
pub fn time(ms: EpochMs) -> Markup {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => {
            let utc = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
            html! { time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) title=(utc) { (utc) } }
        }
        None => html! { "—" },
    }
}

/// A uuid shortened to its first block, whole on hover and for screen
/// readers' "more info".
pub fn short(uuid: Uuid) -> Markup {
    let text = uuid.to_string();
    html! { span.uuid title=(text) { (text[..8]) "…" } }
}

/// "1 relay", "3 relays".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How long ago, for "last heard": seconds, minutes or hours.
pub fn ago(now: EpochMs, then: EpochMs) -> String {
    let seconds = (now - then).max(0) / 1000;
    match seconds {
        0..=119 => format!("{seconds} s ago"),
        120..=7199 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3600),
    }
}

/// What a page answers when something is wrong: the API's error, shown as a
/// page; or a request for a page that needs a sign-in.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("sign in first")]
    SignIn,
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> UiError {
        UiError::Api(e.into())
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::SignIn => StatusCode::SEE_OTHER,
            UiError::Api(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let api = match self {
            UiError::SignIn => return see_other("/ui/signin"),
            UiError::Api(e) => e,
        };
        if let ApiError::Internal(message) = api {
            tracing::error!(error = %message, "internal error");
        }
        let status = self.status_code();
        let title = status.canonical_reason().unwrap_or("Error").to_string();
        let details: Vec<String> = match api {
            ApiError::ValidationFailed { errors, .. } => {
                errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect()
            }
            _ => Vec::new(),
        };
        // The details are inside the alert, so a screen reader says them.
        let body = html! {
            div.error role="alert" {
                p { (api.to_string()) }
                @if !details.is_empty() {
                    ul { @for d in &details { li { (d) } } }
                }
            }
            p { a href="/ui/" { "Back to the overview" } }
        };
        let markup = page(
            Page {
                title,
                nav: Nav::None,
                viewer: None,
                notice: None,
                stamp: None,
            },
            body,
        );
        html_response(status, markup)
    }
}

pub fn html_response(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        // Pages show one viewer's data: never kept by a cache on the way.
        .insert_header(("Cache-Control", "no-store"))
        .body(markup.into_string())
}

/// After a form: back to a page with a plain GET (no resubmission on reload).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", location)).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_in_the_markup_and_on_hover() {
        let markup = time(1_764_644_645_000).into_string();
        assert!(markup.contains(r#"datetime="2025-12-02T03:04:05.000Z""#), "{markup}");
        assert!(markup.contains(r#"title="2025-12-02 03:04:05 UTC""#), "{markup}");
    }

    #[test]
    fn counts_say_one_or_many() {
        assert_eq!(count(1, "relay"), "1 relay");
        assert_eq!(count(0, "open alarm"), "0 open alarms");
    }

    #[test]
    fn ago_is_in_the_unit_people_read() {
        assert_eq!(ago(61_000, 1_000), "60 s ago");
        assert_eq!(ago(600_000, 0), "10 min ago");
        assert_eq!(ago(3 * 3_600_000, 0), "3 h ago");
        assert_eq!(ago(0, 5_000), "0 s ago", "a clock stepped back is no negative age");
    }

    #[test]
    fn page_text_is_escaped() {
        let viewer = Viewer::open();
        let markup = page(
            Page {
                title: "<script>".into(),
                nav: Nav::Overview,
                viewer: Some(&viewer),
                notice: Some("a & b".into()),
                stamp: None,
            },
            html! {},
        )
        .into_string();
        assert!(markup.contains("&lt;script&gt; · Amon"));
        assert!(markup.contains("a &amp; b"));
        assert!(markup.contains(r#"aria-current="page""#));
    }
}
