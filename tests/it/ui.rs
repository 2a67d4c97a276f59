//! The web UI (issue #14) in a real browser, against a real standalone
//! `amon` with closed auth, a real zone feed and a real SMTP server: what an
//! operator sees change without a reload, one click to silence a compute
//! node, an account's token showing only its own alarms (and never showing
//! up in a URL, a cookie or the log), and every page passing axe and working
//! with scripts off.
//!
//! The UI's contract these tests hold it to: `/ui/` (sections `#open-alarms`,
//! `#incidents`, `#relays`, `#outbox`, `#activity`), `/ui/alarms`, alarm
//! pages `/ui/alarms/{account}/{id}` (`#faults`, `#notifications` with a
//! `tr.delivery[data-state]` per notification, action and `form.suppress`
//! forms), `/ui/maintenance` (`tr[data-window]` with an "End" form), the
//! sign-in form (`#token`, errors in `[role=alert]`, an HttpOnly
//! `amon_session` cookie), `#role` on every page, and `/ui/live`, which the
//! pages poll to swap `<main>` in place. Absence ("no email") is shown as in
//! `api.rs`: the fault is recorded as under maintenance, which schedules no
//! notification, and ending the window then sends it.
//!
//! `AMON_UI_SCREENSHOTS=1 cargo test --test it ui::` refreshes the pictures
//! in `docs/ui/`.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::browser::{Browser, Scripts};
use crate::harness::{current_zoneevent, now_ms, send_request, Layout, Response, Site, SiteOptions};

const OPERATOR_TOKEN: &str = "ui-operator-token-0123456789";
const ALICE_TOKEN: &str = "ui-alice-token-0123456789abcd";
const BOB_TOKEN: &str = "ui-bob-token-0123456789abcdef";
/// A token no role has.
const WRONG_TOKEN: &str = "ui-wrong-token-0123456789abc";
const ALICE: &str = "a11ce000-0000-4000-8000-00000000000a";
const BOB: &str = "b0b00000-0000-4000-8000-00000000000b";
const TOKENS: &[(&str, &str)] = &[
    (OPERATOR_TOKEN, "operator"),
    (ALICE_TOKEN, "account:a11ce000-0000-4000-8000-00000000000a"),
    (BOB_TOKEN, "account:b0b00000-0000-4000-8000-00000000000b"),
];

const SIGN_IN: &str = r#"form[action$="/ui/signin"] button"#;
const SIGN_OUT: &str = r#"form[action$="/ui/signout"] button"#;
const SENT: &str = r#"#notifications tr.delivery[data-state="sent"]"#;

/// A standalone with closed auth whose accounts alice and bob (operator
/// accounts, so their probes may watch any zone) have the tokens above.
struct Ui {
    site: Site,
    /// Where `/ui/` is: `http://127.0.0.1:<port>`.
    base: String,
    /// The site relay's compute node: every zone here is on it.
    server: Uuid,
}

impl Ui {
    /// `None` (after saying why) when no browser or SMTP server can run here.
    fn start() -> Option<Ui> {
        if !Browser::available() {
            return None;
        }
        let options = SiteOptions {
            // Mail goes out in the order it was decided.
            workers: 1,
            tokens: TOKENS,
            ..SiteOptions::new(Layout::Standalone)
        };
        let site = Site::start(options)?;
        for (login, uuid) in [("alice", ALICE), ("bob", BOB)] {
            assert!(TOKENS.iter().any(|(_, role)| *role == format!("account:{uuid}")));
            site.api.create(
                "/accounts",
                &json!({ "login": login, "email": format!("{login}@example.com"), "uuid": uuid, "operator": true }),
            );
        }
        let (server, _) = site.wait_for_relay();
        Some(Ui {
            base: format!("http://{}", site.api.addr),
            site,
            server,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A machine-up probe of `login` on `zone`; its uuid. Its name does not
    /// name the zone: where a page shows the zone's uuid, the machine is
    /// what it shows.
    fn probe(&self, login: &str, zone: Uuid) -> Uuid {
        let probe = self.site.create_machine_up_probe(login, zone, "web0 up");
        Uuid::parse_str(probe["uuid"].as_str().expect("probe uuid")).expect("a uuid")
    }

    /// The zone goes down.
    fn down(&self, zone: Uuid) {
        self.site
            .zones
            .append(&current_zoneevent(zone, "running", "shutting_down"));
    }

    /// Waits until `login` has an alarm with a fault of `probe` that `ok`
    /// accepts, and returns it (from the API, as the operator).
    fn alarm(&self, login: &str, probe: Uuid, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.site
            .wait_until(&format!("{login}'s alarm on probe {probe} {what}"), || {
                let (status, alarms) = self.site.api.get(&format!("/pub/{login}/alarms?state=all"));
                assert_eq!(status, 200, "{alarms}");
                alarms
                    .as_array()?
                    .iter()
                    .find(|a| {
                        let all = [probes_in(a, "faults"), probes_in(a, "maintFaults")].concat();
                        all.contains(&probe) && ok(a)
                    })
                    .cloned()
            })
    }

    /// A fresh browser, signed in with `token`.
    fn browser_as(&self, scripts: Scripts, token: &str) -> Browser {
        let browser = Browser::start(scripts).expect("a browser, as one was available");
        self.sign_in(&browser, token);
        browser
    }

    /// Signs in through the form, and waits for the overview.
    fn sign_in(&self, browser: &Browser, token: &str) {
        browser.goto(&self.url("/ui/signin"));
        browser.fill("#token", token);
        browser.click(SIGN_IN);
        self.wait(browser, "the overview after signing in", || {
            (browser.current_url().ends_with("/ui/") && browser.count("#role") == 1).then_some(())
        });
    }

    /// [`crate::harness::wait_until`] with the site's and the browser's
    /// state as the context.
    fn wait<T>(&self, browser: &Browser, what: &str, check: impl FnMut() -> Option<T>) -> T {
        crate::harness::wait_until(
            what,
            || format!("{}\n{}", self.site.context(), browser.context()),
            check,
        )
    }

    /// The page at `path` (a browser's `GET`, with `cookie` if any).
    fn get_page(&self, path: &str, cookie: Option<&str>) -> Response {
        let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: text/html\r\n{cookie}\r\n",
            self.site.api.addr
        );
        send_request(self.site.api.addr, &format!("GET {path}"), request.as_bytes())
    }

    /// A form's `POST` of `body` (url-encoded) to `path`, as a browser
    /// sends it from one of the UI's pages (its `Origin` included).
    fn post_form(&self, path: &str, body: &str, cookie: Option<&str>) -> Response {
        let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: text/html\r\nOrigin: {}\r\n\
             {cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.site.api.addr,
            self.base,
            body.len()
        );
        send_request(self.site.api.addr, &format!("POST {path}"), request.as_bytes())
    }

    /// The operator's maintenance windows on this site's compute node that
    /// have not ended (one without an `end` lasts until it is ended).
    fn server_windows(&self) -> Vec<Value> {
        let (status, windows) = self.site.api.get("/maintenances");
        assert_eq!(status, 200, "GET /maintenances: {windows}");
        windows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["servers"] == json!([self.server]) && ends_in(w).is_none_or(|left| !left.is_zero()))
            .cloned()
            .collect()
    }
}

/// The probes of an alarm's `faults` or `maintFaults`.
fn probes_in(alarm: &Value, key: &str) -> Vec<Uuid> {
    alarm[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Uuid::parse_str(f["probe"].as_str()?).ok())
        .collect()
}

/// `tr[data-alarm="…"]` for an alarm from the API.
fn alarm_row(alarm: &Value) -> String {
    format!(
        r#"tr[data-alarm="{}/{}"]"#,
        alarm["user"].as_str().expect("alarm user"),
        alarm["id"]
    )
}

/// `/ui/alarms/{account}/{id}` for an alarm from the API.
fn alarm_page(alarm: &Value) -> String {
    format!(
        "/ui/alarms/{}/{}",
        alarm["user"].as_str().expect("alarm user"),
        alarm["id"]
    )
}

/// Whether the browser shows `path`, whatever the query (an action's
/// redirect back adds one, e.g. `?done=window` for its notice).
fn on_page(browser: &Browser, path: &str) -> bool {
    let url = browser.current_url();
    url.split(['?', '#']).next().is_some_and(|u| u.ends_with(path))
}

/// How long from now until the window's `end` (zero once it has passed);
/// `None` for a window without one.
fn ends_in(window: &Value) -> Option<Duration> {
    if window["end"].is_null() {
        return None;
    }
    let end = window["end"]
        .as_i64()
        .unwrap_or_else(|| panic!("end is not milliseconds since the epoch: {window}"));
    Some(Duration::from_millis(end.saturating_sub(now_ms()).max(0) as u64))
}

// ---- acceptance 1: live, without a reload ----

/// A zone goes down while the overview and the alarms list are open: its
/// row appears on both without a reload, and links to the alarm's page,
/// which shows the fault and, after the hold, the email as sent.
#[test]
fn a_zone_going_down_appears_on_open_pages_without_a_reload_and_its_page_shows_the_sent_email() {
    let Some(ui) = Ui::start() else {
        return;
    };
    let zone = Uuid::new_v4();
    let probe = ui.probe("alice", zone);
    let overview = ui.browser_as(Scripts::On, OPERATOR_TOKEN);
    let list = ui.browser_as(Scripts::On, OPERATOR_TOKEN);
    list.goto(&ui.url("/ui/alarms?state=open"));
    for browser in [&overview, &list] {
        assert_eq!(browser.count("main"), 1, "{}", browser.context());
        browser.execute("window.__amonMarker = 42;", vec![]);
    }

    ui.down(zone);
    let alarm = ui.alarm("alice", probe, "to open", |_| true);
    let row = alarm_row(&alarm);
    for (browser, on) in [(&overview, "#open-alarms "), (&list, "")] {
        let url = browser.current_url();
        ui.wait(browser, &format!("the alarm's row on {url}"), || {
            (browser.count(&format!("{on}{row}")) == 1).then_some(())
        });
        assert_eq!(
            browser.execute("return window.__amonMarker;", vec![]),
            json!(42),
            "{url} was reloaded rather than updated in place"
        );
    }

    let page = alarm_page(&alarm);
    let link = format!(r#"#open-alarms {row} a[href$="{page}"]"#);
    assert_eq!(
        overview.count(&link),
        1,
        "the row links to {page}\n{}",
        overview.source()
    );
    overview.click(&link);
    ui.wait(&overview, "the alarm's page", || {
        on_page(&overview, &page).then_some(())
    });
    let faults = overview.texts("#faults .fault");
    assert!(
        faults.iter().any(|f| f.contains(&zone.to_string())),
        "a fault names machine {zone}: {faults:?}"
    );

    ui.site.wait_for_emails_about(zone, 1);
    // The email is out; the page shows it once it has the delivery's new
    // state (by itself, or on the next load).
    ui.wait(&overview, "a sent delivery on the alarm's page", || {
        if overview.count(SENT) >= 1 {
            return Some(());
        }
        overview.refresh();
        None
    });
}

// ---- acceptance 2: one click silences a compute node ----

/// On an alarm's page one click on the server's "1h" creates an operator
/// window on the compute node; another zone of it then goes down and is
/// held under maintenance, with no email, until the window is ended from
/// the maintenance page, which sends it.
#[test]
fn one_click_on_the_servers_1h_suppression_holds_its_next_fault_until_the_window_is_ended() {
    let Some(ui) = Ui::start() else {
        return;
    };
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let first_probe = ui.probe("alice", first);
    let second_probe = ui.probe("alice", second);
    ui.down(first);
    let alarm = ui.alarm("alice", first_probe, "to open", |_| true);
    ui.site.wait_for_emails_about(first, 1);

    let browser = ui.browser_as(Scripts::On, OPERATOR_TOKEN);
    let page = alarm_page(&alarm);
    browser.goto(&ui.url(&page));
    assert!(ui.server_windows().is_empty(), "no window yet");
    browser.click(r#"form.suppress[data-scope="server"] button[name="for"][value="1h"]"#);
    ui.wait(&browser, "the alarm's page again, with a notice", || {
        (on_page(&browser, &page) && browser.count("#notice") == 1).then_some(())
    });
    let windows = ui.server_windows();
    assert_eq!(windows.len(), 1, "one window on server {}: {windows:?}", ui.server);
    let window = &windows[0];
    let left = ends_in(window).unwrap_or_else(|| panic!("the window has an end: {window}"));
    assert!(
        left > Duration::from_secs(58 * 60) && left <= Duration::from_secs(3600),
        "the window ends in an hour: {window}"
    );

    ui.down(second);
    let held = ui.alarm("alice", second_probe, "held under maintenance", |a| {
        probes_in(a, "maintFaults") == vec![second_probe]
    });
    assert_eq!(probes_in(&held, "faults"), Vec::<Uuid>::new(), "{held}");
    assert_eq!(ui.site.emails_about(second).len(), 0, "{}", ui.site.context());
    assert_eq!(ui.site.emails_about(first).len(), 1, "{}", ui.site.context());

    browser.goto(&ui.url("/ui/maintenance"));
    let row = format!(r#"tr[data-window="{}"]"#, window["id"]);
    assert_eq!(browser.count(&row), 1, "the window's row\n{}", browser.source());
    browser.click(&format!("{row} form button"));
    ui.wait(&browser, "the window to end", || {
        ui.server_windows().is_empty().then_some(())
    });
    // What the window held is told now.
    let emails = ui.site.wait_for_emails_about(second, 1);
    assert_eq!(emails[0].rcpt_to, "alice@example.com");
}

// ---- acceptance 3: an account's token ----

/// Alice's token shows alice's alarms and not bob's; a wrong token is told
/// so on the sign-in page; the session cookie is HttpOnly and is not the
/// token; no token is ever in a URL, a cookie or the log.
#[test]
fn an_account_token_sees_only_its_own_alarms_and_no_token_leaks() {
    let Some(ui) = Ui::start() else {
        return;
    };
    let (alices_zone, bobs_zone) = (Uuid::new_v4(), Uuid::new_v4());
    let alices_probe = ui.probe("alice", alices_zone);
    let bobs_probe = ui.probe("bob", bobs_zone);
    ui.down(alices_zone);
    ui.down(bobs_zone);
    let alices = ui.alarm("alice", alices_probe, "to open", |_| true);
    let bobs = ui.alarm("bob", bobs_probe, "to open", |_| true);
    assert_eq!(alices["user"], ALICE);
    assert_eq!(bobs["user"], BOB);

    // Without a session, the sign-in page.
    let response = ui.get_page("/ui/", None);
    assert_eq!(response.status, 303, "GET /ui/ without a session");
    assert!(
        response.header("location").is_some_and(|l| l.ends_with("/ui/signin")),
        "{:?}",
        response.headers
    );
    let browser = Browser::start(Scripts::On).expect("a browser, as one was available");
    browser.goto(&ui.url("/ui/"));
    assert!(browser.current_url().ends_with("/ui/signin"), "{}", browser.context());
    assert_eq!(browser.text("label[for=token]").as_deref(), Some("Token"));
    assert_eq!(browser.count(r#"input#token[type=password][name=token]"#), 1);

    // A wrong token: 401, the sign-in page again, and why.
    browser.fill("#token", WRONG_TOKEN);
    browser.click(SIGN_IN);
    ui.wait(&browser, "the sign-in error", || {
        browser.text("[role=alert]").filter(|t| !t.trim().is_empty())
    });
    assert_eq!(browser.count(".error[role=alert]"), 1);
    assert_eq!(browser.count("#token"), 1, "the form is shown again");
    assert!(!browser.cookies().iter().any(|(name, ..)| name == "amon_session"));
    let refused = ui.post_form("/ui/signin", &format!("token={WRONG_TOKEN}"), None);
    assert_eq!(refused.status, 401, "a wrong token");
    assert!(String::from_utf8_lossy(&refused.body).contains("role=\"alert\""));

    // Alice's token: a session that is not the token.
    let accepted = ui.post_form("/ui/signin", &format!("token={ALICE_TOKEN}"), None);
    assert_eq!(accepted.status, 303, "a good token");
    assert!(accepted.header("location").is_some_and(|l| l.ends_with("/ui/")));
    let set_cookie = accepted.header("set-cookie").expect("a session cookie").to_string();
    assert!(set_cookie.starts_with("amon_session="), "{set_cookie}");
    assert!(set_cookie.to_ascii_lowercase().contains("httponly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().expect("name=value").to_string();
    ui.sign_in(&browser, ALICE_TOKEN);
    let role = browser.text("#role").unwrap_or_default();
    assert!(role.contains("alice"), "the role shown: {role:?}");
    let sessions: Vec<(String, String, bool)> = browser
        .cookies()
        .into_iter()
        .filter(|(name, ..)| name == "amon_session")
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let (_, session, http_only) = &sessions[0];
    assert!(*http_only, "amon_session is HttpOnly");
    assert!(session.len() >= 16, "a session id, not a counter: {session:?}");

    // Alice's alarms, and none of bob's.
    let bobs_rows = format!(r#"tr[data-alarm^="{BOB}/"]"#);
    assert_eq!(browser.count(&format!("#open-alarms {}", alarm_row(&alices))), 1);
    assert_eq!(browser.count(&bobs_rows), 0, "bob's alarm on alice's overview");
    browser.goto(&ui.url("/ui/alarms?state=all"));
    assert_eq!(browser.count(&alarm_row(&alices)), 1, "{}", browser.source());
    assert_eq!(browser.count(&bobs_rows), 0, "bob's alarm in alice's list");
    browser.goto(&ui.url(&alarm_page(&bobs)));
    assert_eq!(browser.count("#faults"), 0, "bob's alarm page shown to alice");
    assert!(
        !browser.source().contains(&bobs_zone.to_string()),
        "bob's machine shown to alice"
    );
    let refused = ui.get_page(&alarm_page(&bobs), Some(&cookie));
    assert!(
        [403, 404].contains(&refused.status),
        "bob's alarm page for alice's session: {}",
        refused.status
    );
    let own = ui.get_page(&alarm_page(&alices), Some(&cookie));
    assert_eq!(own.status, 200, "alice's own alarm page");

    // Signing out ends the session.
    browser.goto(&ui.url("/ui/"));
    browser.click(SIGN_OUT);
    // The sign-out's answer sends the browser to the sign-in page; going
    // elsewhere before it arrives could cut the request short.
    ui.wait(&browser, "the sign-in page after signing out", || {
        on_page(&browser, "/ui/signin").then_some(())
    });
    browser.goto(&ui.url("/ui/"));
    assert!(browser.current_url().ends_with("/ui/signin"), "{}", browser.context());

    let log = std::fs::read_to_string(&ui.site.zone_process().log).expect("the amon log");
    for token in [OPERATOR_TOKEN, ALICE_TOKEN, BOB_TOKEN, WRONG_TOKEN] {
        for url in browser.visited() {
            assert!(!url.contains(token), "a token in the URL {url}");
        }
        assert!(
            !session.contains(token) && !cookie.contains(token),
            "a token in the cookie"
        );
        assert!(
            !log.contains(token),
            "a token in the log {}",
            ui.site.zone_process().log.display()
        );
    }
}

// ---- acceptance 4: accessible, and usable without scripts ----

/// Every page passes axe (WCAG 2 A and AA, and best practices) with an
/// alarm, a sent email and a window to show; with scripts off the same
/// pages show their content and a suppression form works. The pictures in
/// `docs/ui/` come from here.
#[test]
fn every_page_passes_axe_and_works_without_scripts() {
    let Some(ui) = Ui::start() else {
        return;
    };
    let zone = Uuid::new_v4();
    let probe = ui.probe("alice", zone);
    ui.down(zone);
    let alarm = ui.alarm("alice", probe, "to open", |_| true);
    ui.site.wait_for_emails_about(zone, 1);
    let (page, row) = (alarm_page(&alarm), alarm_row(&alarm));
    ui.site.api.create(
        "/maintenances",
        &json!({ "servers": [ui.server], "end": "2h", "notes": "cn firmware" }),
    );

    let browser = Browser::start(Scripts::On).expect("a browser, as one was available");
    browser.goto(&ui.url("/ui/signin"));
    browser.assert_accessible("the sign-in page");
    browser.save_screenshot("signin");
    browser.fill("#token", WRONG_TOKEN);
    browser.click(SIGN_IN);
    ui.wait(&browser, "the sign-in error", || {
        (browser.count("[role=alert]") == 1).then_some(())
    });
    browser.assert_accessible("the sign-in page with an error");

    ui.sign_in(&browser, OPERATOR_TOKEN);
    ui.wait(&browser, "the sent email on the alarm's page", || {
        browser.goto(&ui.url(&page));
        (browser.count(SENT) >= 1).then_some(())
    });
    for (name, path, picture) in [
        ("the overview", "/ui/", Some("overview")),
        ("the alarms list", "/ui/alarms?state=all", None),
        ("the alarm's page", page.as_str(), Some("alarm")),
        ("the maintenance page", "/ui/maintenance", Some("maintenance")),
    ] {
        browser.goto(&ui.url(path));
        assert_eq!(browser.count("#role"), 1, "{name} shows the role");
        browser.assert_accessible(name);
        if let Some(picture) = picture {
            browser.save_screenshot(picture);
        }
    }
    browser.goto(&ui.url("/ui/"));
    for section in ["open-alarms", "incidents", "relays", "outbox", "activity"] {
        assert_eq!(
            browser.count(&format!("section#{section}")),
            1,
            "the overview's #{section}"
        );
    }
    assert!(browser.count("#activity svg") >= 1, "the activity chart is inline SVG");

    // Scripts off: the same content, and a form that works.
    let quiet = ui.browser_as(Scripts::Off, OPERATOR_TOKEN);
    assert_eq!(quiet.count(&format!("#open-alarms {row}")), 1, "{}", quiet.source());
    quiet.goto(&ui.url("/ui/alarms?state=open"));
    assert_eq!(quiet.count(&row), 1, "{}", quiet.source());
    quiet.goto(&ui.url(&page));
    let faults = quiet.texts("#faults .fault");
    assert!(faults.iter().any(|f| f.contains(&zone.to_string())), "{faults:?}");
    assert!(quiet.count(SENT) >= 1, "{}", quiet.source());
    assert_eq!(ui.server_windows().len(), 1);
    quiet.click(r#"form.suppress[data-scope="server"] button[name="for"][value="open"]"#);
    ui.wait(&quiet, "the alarm's page again, with a notice", || {
        (on_page(&quiet, &page) && quiet.count("#notice") == 1).then_some(())
    });
    assert_eq!(ui.server_windows().len(), 2, "a window until it is ended");
    quiet.goto(&ui.url("/ui/maintenance"));
    assert_eq!(quiet.count("tr[data-window]"), 2, "{}", quiet.source());

    // The maintenance page's form, scripts off: a window on one machine
    // for 30 minutes, validated as the API validates one.
    quiet.click("#scope-machines");
    quiet.fill("#targets", &zone.to_string());
    quiet.fill("#end", "30m");
    quiet.fill("#notes", "from the form");
    quiet.click("form.window button[type=submit]");
    ui.wait(&quiet, "the maintenance page again, with a notice", || {
        (on_page(&quiet, "/ui/maintenance") && quiet.count("#notice") == 1).then_some(())
    });
    assert_eq!(quiet.count("tr[data-window]"), 3, "{}", quiet.source());
    let (_, windows) = ui.site.api.get("/maintenances");
    let made = windows
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["notes"] == "from the form")
        .unwrap_or_else(|| panic!("the form's window: {windows}"));
    assert_eq!(made["machines"], json!([zone]), "{made}");
    let left = ends_in(made).unwrap_or_else(|| panic!("the window has an end: {made}"));
    assert!(
        left > Duration::from_secs(28 * 60) && left <= Duration::from_secs(30 * 60),
        "{made}"
    );
    // A window the API would refuse is refused on the page, saying why.
    quiet.click("#scope-machines");
    quiet.fill("#targets", "not-a-uuid");
    quiet.click("form.window button[type=submit]");
    ui.wait(&quiet, "the refusal", || {
        (quiet.count("[role=alert]") == 1).then_some(())
    });
    let said = quiet.text("[role=alert]").unwrap_or_default();
    assert!(said.contains("not-a-uuid"), "{said}");

    // The alarm's actions, scripts off: close, then reopen.
    quiet.goto(&ui.url(&page));
    quiet.click(r#"button[name="action"][value="close"]"#);
    ui.wait(&quiet, "the alarm closed", || {
        (on_page(&quiet, &page) && quiet.count(r#"button[name="action"][value="reopen"]"#) == 1).then_some(())
    });
    let (_, closed) = ui.site.api.get(&format!("/pub/alice/alarms/{}", alarm["id"]));
    assert_eq!(closed["closed"], json!(true), "{closed}");
    quiet.click(r#"button[name="action"][value="reopen"]"#);
    ui.wait(&quiet, "the alarm open again", || {
        (quiet.count(r#"button[name="action"][value="close"]"#) == 1).then_some(())
    });

    // An error is a page too, and as accessible.
    browser.goto(&ui.url(&format!(
        "/ui/alarms/{}/999999",
        alarm["user"].as_str().unwrap_or_default()
    )));
    assert_eq!(browser.count("[role=alert]"), 1, "{}", browser.source());
    browser.assert_accessible("the error page");
}
