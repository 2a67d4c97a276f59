//! The operators' web page, served by the master under `/ui/`: server-
//! rendered HTML (maud) with its stylesheet and a little script built into
//! the binary, so it works offline and without JavaScript (every action is
//! a plain form; the script only makes times local and the page live).
//!
//! Sign-in takes the API's bearer tokens and roles ([`session`]); a
//! standalone with `auth.open` needs none. The pages read through the
//! Master API's own handle ([`MasterApi`]) and act through the same actors
//! the API does: an alarm's actions go to its alarm actor, windows to the
//! maintenance keeper. Live: each page polls `GET /ui/live`, a stamp that
//! changes when an alarm, a notification, a window or an incident does, and
//! redraws its `<main>` when it moved (polling rather than server-sent
//! events: a request every 2 s per open page costs a master nothing, holds
//! no connection or worker, and passes every proxy unchanged).

mod alarms;
pub mod chart;
mod directory;
mod layout;
mod maintenance;
mod overview;
mod session;
mod suppress;

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde::Deserialize;

use self::layout::{html_response, page, see_other, Nav, Page, UiError};
pub use self::session::Sessions;
use self::session::{Viewer, COOKIE};
use super::auth::{Auth, Role};
use super::master::MasterApi;
use super::ApiError;

/// What every page handler may use.
#[derive(Clone)]
pub struct Ui {
    pub api: MasterApi,
    pub auth: Auth,
    pub sessions: Sessions,
    /// A relay silent this long is shown as silent (the flood guard's
    /// `notify.heartbeat_timeout`).
    pub heartbeat_timeout: Duration,
}

/// Forms are small: a maintenance window's notes are the longest field.
const MAX_FORM: usize = 64 * 1024;

/// Mounts the page's routes; the Master API's bearer-token check skips
/// `/ui` (see `auth::authorize`): the page checks its own sessions.
pub fn configure(ui: Ui) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let forms = web::FormConfig::default()
            .limit(MAX_FORM)
            .error_handler(|e, _| UiError::Api(ApiError::InvalidArgument(format!("invalid form: {e}"))).into());
        cfg.service(
            web::scope("/ui")
                .app_data(web::Data::new(ui))
                .app_data(forms)
                .route("", web::get().to(|| async { see_other("/ui/") }))
                .route("/", web::get().to(overview::show))
                .route("/signin", web::get().to(sign_in_page))
                .route("/signin", web::post().to(sign_in))
                .route("/signout", web::post().to(sign_out))
                .route("/live", web::get().to(live))
                .route("/alarms", web::get().to(alarms::list))
                .route("/alarms/{account}/{id}", web::get().to(alarms::show))
                .route("/alarms/{account}/{id}/action", web::post().to(alarms::act))
                .route("/suppress", web::post().to(maintenance::suppress))
                .route("/maintenance", web::get().to(maintenance::list))
                .route("/maintenance", web::post().to(maintenance::create))
                .route("/maintenance/end", web::post().to(maintenance::end))
                .route("/assets/{name}", web::get().to(asset))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(UiError::Api(ApiError::ResourceNotFound("no such page".into())))
                })),
        );
    }
}

impl Ui {
    /// Who is asking: the session's viewer, everything under `auth.open`,
    /// or a trip to the sign-in page.
    fn viewer(&self, req: &HttpRequest) -> Result<Viewer, UiError> {
        if self.auth.open {
            return Ok(Viewer::open());
        }
        req.cookie(COOKIE)
            .and_then(|c| self.sessions.viewer(c.value(), self.api.clock.now_ms()))
            .ok_or(UiError::SignIn)
    }

    /// A form's request, checked for where it came from: a page of another
    /// site cannot make a signed-in browser act (the cookie is
    /// `SameSite=Strict` too; this also covers `auth.open`, which has none).
    fn actor(&self, req: &HttpRequest) -> Result<Viewer, UiError> {
        if !same_origin(req) {
            return Err(ApiError::Forbidden("the form was not sent from this page".into()).into());
        }
        self.viewer(req)
    }

    /// The stamp of what the pages show: changes when an alarm, a
    /// notification, a window or an incident does.
    async fn stamp(&self) -> String {
        let incidents = match self.api.guard.get() {
            Some(guard) => guard
                .send(crate::actors::server_guard::GetServers)
                .await
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s.incident.as_ref())
                .map(|i| format!("{}:{}:{}", i.id, i.announced, i.returned.is_some()))
                .collect::<Vec<_>>()
                .join(","),
            None => String::new(),
        };
        format!(
            "{}-{}",
            self.api.store.generation(),
            super::content_md5(incidents.as_bytes())
        )
    }

    fn frame<'a>(
        &self,
        title: impl Into<String>,
        nav: Nav,
        viewer: &'a Viewer,
        notice: Option<String>,
        stamp: String,
    ) -> Page<'a> {
        Page {
            title: title.into(),
            nav,
            viewer: Some(viewer),
            notice,
            stamp: Some(stamp),
        }
    }
}

/// Whether a form was sent by a page of this master: the browser's
/// `Origin` (or, without one, `Sec-Fetch-Site`) says so.
fn same_origin(req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) {
        let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
        let bare = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        return !host.is_empty() && bare == host;
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        // Neither: not a browser (curl, a test), which carries no one
        // else's cookie.
        None => true,
    }
}

#[derive(Deserialize)]
struct Notice {
    done: Option<String>,
}

/// The notice a redirect after an action asks for (`?done=`), from a fixed
/// list: a URL cannot make the page say anything else.
fn notice(query: &str) -> Option<String> {
    let done = web::Query::<Notice>::from_query(query).ok()?.into_inner().done?;
    Some(
        match done.as_str() {
            "close" => "The alarm is closed.",
            "reopen" => "The alarm is open again.",
            "suppress" => "The alarm is suppressed: it notifies nobody until unsuppressed.",
            "unsuppress" => "The alarm notifies again.",
            "window" => "The maintenance window is in force.",
            "ended" => "The maintenance window has ended.",
            _ => return None,
        }
        .to_string(),
    )
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

fn sign_in_form(error: Option<&str>) -> maud::Markup {
    let body = html! {
        @if let Some(error) = error {
            p.error role="alert" { (error) }
        }
        form.signin method="post" action="/ui/signin" {
            p {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required
                    aria-describedby="token-help";
            }
            p #token-help .help { "The bearer token you use with the API and the CLI (auth.tokens). It is kept by this master for the session, never in the browser." }
            p { button type="submit" { "Sign in" } }
        }
    };
    page(
        Page {
            title: "Sign in".into(),
            nav: Nav::None,
            viewer: None,
            notice: None,
            stamp: None,
        },
        body,
    )
}

async fn sign_in_page(ui: web::Data<Ui>, req: HttpRequest) -> HttpResponse {
    if ui.viewer(&req).is_ok() {
        return see_other("/ui/");
    }
    html_response(StatusCode::OK, sign_in_form(None))
}

async fn sign_in(ui: web::Data<Ui>, req: HttpRequest, form: web::Form<SignInForm>) -> Result<HttpResponse, UiError> {
    if !same_origin(&req) {
        return Err(ApiError::Forbidden("the form was not sent from this page".into()).into());
    }
    let refuse = |why: &str| html_response(StatusCode::UNAUTHORIZED, sign_in_form(Some(why)));
    let Some(role) = ui.auth.role_of(form.token.trim()) else {
        tracing::info!("ui sign-in refused: unknown token");
        return Ok(refuse("That token is not valid. Check it and try again."));
    };
    let name = match role {
        Role::Operator => "operator".to_string(),
        Role::Relay => {
            return Ok(refuse(
                "A relay's token cannot sign in: use an operator's or an account's.",
            ))
        }
        Role::Account(uuid) => match ui.api.store.get_account(uuid.to_string()).await? {
            Some(account) => format!("account {}", account.login),
            None => format!("account {uuid}"),
        },
    };
    tracing::info!(viewer = %name, "ui sign-in");
    let id = ui.sessions.open(Viewer { role, name }, ui.api.clock.now_ms());
    let cookie = actix_web::cookie::Cookie::build(COOKIE, id)
        .path("/ui")
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Strict)
        .secure(req.connection_info().scheme() == "https")
        .finish();
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/ui/"))
        .cookie(cookie)
        .finish())
}

async fn sign_out(ui: web::Data<Ui>, req: HttpRequest) -> HttpResponse {
    if let Some(cookie) = req.cookie(COOKIE) {
        ui.sessions.close(cookie.value());
    }
    let mut gone = actix_web::cookie::Cookie::build(COOKIE, "").path("/ui").finish();
    gone.make_removal();
    let to = if ui.auth.open { "/ui/" } else { "/ui/signin" };
    HttpResponse::SeeOther()
        .insert_header(("Location", to))
        .cookie(gone)
        .finish()
}

/// `GET /ui/live`: `{"stamp": …}` for the page's script to compare.
async fn live(ui: web::Data<Ui>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if ui.viewer(&req).is_err() {
        return Err(ApiError::Unauthorized("sign in again".into()));
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({ "stamp": ui.stamp().await })))
}

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

async fn asset(name: web::Path<String>) -> HttpResponse {
    let (body, kind) = match name.as_str() {
        "ui.css" => (CSS, "text/css; charset=utf-8"),
        "ui.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return HttpResponse::NotFound().finish(),
    };
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header(("Cache-Control", "max-age=300"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_form_from_another_site_is_refused() {
        let ours = TestRequest::default()
            .insert_header(("host", "127.0.0.1:8080"))
            .insert_header(("origin", "http://127.0.0.1:8080"))
            .to_http_request();
        assert!(same_origin(&ours));
        let theirs = TestRequest::default()
            .insert_header(("host", "127.0.0.1:8080"))
            .insert_header(("origin", "https://evil.example"))
            .to_http_request();
        assert!(!same_origin(&theirs));
        let cross = TestRequest::default()
            .insert_header(("sec-fetch-site", "cross-site"))
            .to_http_request();
        assert!(!same_origin(&cross));
        assert!(same_origin(&TestRequest::default().to_http_request()));
    }

    #[test]
    fn a_notice_comes_only_from_the_fixed_list() {
        assert!(notice("done=close").unwrap().contains("closed"));
        assert_eq!(notice("done=%3Cscript%3E"), None);
        assert_eq!(notice(""), None);
    }
}
