//! A real browser for the UI tests (issue #14): Debian's headless Chromium
//! driven through its chromedriver (WebDriver, over loopback HTTP) with
//! `fantoccini`, and axe-core (pinned in `tests/ui/package-lock.json`,
//! installed by `npm ci --prefix tests/ui`) to check what a page says to a
//! screen reader.
//!
//! [`Browser`] is a blocking façade, like the rest of the harness: each call
//! runs the WebDriver exchange to its end on the browser's own
//! current-thread runtime, so tests stay plain `#[test]` functions that
//! poll with [`wait_until`] and never sleep. Each browser has a chromedriver
//! of its own (its own process group, killed whole on drop) and a fresh
//! profile in a temporary directory: no cookie or cache outlives a test.
//!
//! Outside CI a machine without `chromium`, `chromium-driver` or the
//! installed axe-core skips the browser tests, saying why; under CI
//! (`CI` set), which installs them, that is a failure.

use std::cell::RefCell;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::harness::{free_port, tail_of, wait_until, ChildGuard, DEADLINE};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The axe-core build `npm ci --prefix tests/ui` installs.
fn axe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/node_modules/axe-core/axe.min.js")
}

/// What axe checks: WCAG 2 A and AA, and axe's best practices (landmarks,
/// one `h1`, headings in order…), which a small server-rendered page meets
/// without effort.
const AXE_RULES: [&str; 3] = ["wcag2a", "wcag2aa", "best-practice"];

/// Why the browser tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let absent = |path: &Path, package: &str| {
        (!path.exists()).then(|| format!("no {} (Debian: apt-get install {package})", path.display()))
    };
    absent(Path::new(CHROMIUM), "chromium")
        .or_else(|| absent(Path::new(CHROMEDRIVER), "chromium-driver"))
        .or_else(|| absent(&axe_path(), "nodejs npm, then npm ci --prefix tests/ui"))
}

/// Whether scripts run in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scripts {
    On,
    /// Chromium's content setting blocks every page script. WebDriver's own
    /// synchronous scripts still run, so the test can look at the page, but
    /// not axe, whose promise never settles there.
    Off,
}

/// One headless Chromium with its chromedriver; see the module doc.
pub struct Browser {
    /// `None` once closed (in `drop`).
    client: Option<Client>,
    /// Drives every WebDriver exchange; one thread, as the tests are.
    runtime: tokio::runtime::Runtime,
    driver: ChildGuard,
    driver_log: PathBuf,
    /// Every URL the browser was seen at, in order: after each `goto`, each
    /// click and each `current_url`, so a test can say what never showed
    /// in the address bar.
    visited: RefCell<Vec<String>>,
    /// The profile, the driver's log and screenshots; last, so it outlives
    /// the processes using it.
    dir: tempfile::TempDir,
}

impl Browser {
    /// True when a browser can start here; says why not (or panics under
    /// CI), as [`crate::harness::SmtpServer::available`] does.
    pub fn available() -> bool {
        match missing() {
            None => true,
            Some(why) if std::env::var_os("CI").is_some() => panic!("{why}; CI must provide it"),
            Some(why) => {
                eprintln!("skipping: {why}");
                false
            }
        }
    }

    /// A fresh browser, or `None` (after saying why) when none can run here.
    pub fn start(scripts: Scripts) -> Option<Browser> {
        if !Browser::available() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("amon-it-browser-")
            .tempdir()
            .expect("tempdir");
        let driver_log = dir.path().join("chromedriver.log");
        // The port was free when chosen; if another process took it first
        // chromedriver exits, and we try another.
        let (driver, port) = (0..5)
            .find_map(|_| {
                let port = free_port();
                Browser::spawn_driver(port, &driver_log).map(|driver| (driver, port))
            })
            .unwrap_or_else(|| panic!("chromedriver would not start; log:\n{}", tail_of(&driver_log, 40)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the browser");
        let capabilities = capabilities(scripts, &dir.path().join("profile"));
        let client = runtime
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver would not open a Chromium session: {e}\nchromedriver log:\n{}",
                    tail_of(&driver_log, 40)
                )
            });
        Some(Browser {
            client: Some(client),
            runtime,
            driver,
            driver_log,
            visited: RefCell::default(),
            dir,
        })
    }

    /// chromedriver on `port`, once it says it is ready; `None` if it exited
    /// first (the port was taken).
    fn spawn_driver(port: u16, log: &Path) -> Option<ChildGuard> {
        let mut driver = ChildGuard::spawn(
            "chromedriver",
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                // Its own process group, so that `drop` can end Chromium's
                // processes with it.
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let ready = wait_until(
            "chromedriver to answer GET /status",
            || format!("chromedriver log:\n{}", tail_of(log, 40)),
            || {
                if driver.exited().is_some() {
                    return Some(false);
                }
                driver_status(port)
                    .is_some_and(|s| s["value"]["ready"] == true)
                    .then_some(true)
            },
        );
        ready.then_some(driver)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser is closed")
    }

    /// Runs one WebDriver exchange to its end.
    fn run<T>(&self, what: &str, exchange: impl std::future::Future<Output = Result<T, CmdError>>) -> T {
        self.runtime
            .block_on(exchange)
            .unwrap_or_else(|e| panic!("browser: {what}: {e}\n{}", self.context()))
    }

    /// What the driver said last, for failure messages.
    pub fn context(&self) -> String {
        format!(
            "--- chromedriver log {} (last lines):\n{}\n--- urls visited: {:?}",
            self.driver_log.display(),
            tail_of(&self.driver_log, 15),
            self.visited.borrow()
        )
    }

    /// Opens `url` and waits for its load event.
    pub fn goto(&self, url: &str) {
        self.run(&format!("goto {url}"), self.client().goto(url));
        self.current_url();
    }

    /// Where the browser is now (also recorded in [`Browser::visited`]).
    pub fn current_url(&self) -> String {
        let url = self.run("current_url", self.client().current_url()).to_string();
        let mut visited = self.visited.borrow_mut();
        if visited.last() != Some(&url) {
            visited.push(url.clone());
        }
        url
    }

    /// Every URL the browser was seen at so far.
    pub fn visited(&self) -> Vec<String> {
        self.visited.borrow().clone()
    }

    /// Reloads the page.
    pub fn refresh(&self) {
        self.run("refresh", self.client().refresh());
        self.current_url();
    }

    /// The page's HTML as it is now (after scripts changed it).
    pub fn source(&self) -> String {
        self.run("source", self.client().source())
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.run(&format!("find_all {css}"), self.client().find_all(Locator::Css(css)))
            .len()
    }

    /// The rendered text of each element matching `css`. An element a
    /// live update replaced while it was read makes the whole read start
    /// again.
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.read_each(css, "text", |e| async move { e.text().await })
    }

    /// The text of the first element matching `css`, if any.
    pub fn text(&self, css: &str) -> Option<String> {
        self.texts(css).into_iter().next()
    }

    fn read_each<T, F, Fut>(&self, css: &str, what: &str, read: F) -> Vec<T>
    where
        F: Fn(fantoccini::elements::Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, CmdError>>,
    {
        for _ in 0..5 {
            let attempt = self.runtime.block_on(async {
                let mut out = Vec::new();
                for element in self.client().find_all(Locator::Css(css)).await? {
                    out.push(read(element).await?);
                }
                Ok::<_, CmdError>(out)
            });
            match attempt {
                Ok(out) => return out,
                Err(e) if e.is_stale_element_reference() => continue,
                Err(e) => panic!("browser: {what} of {css}: {e}\n{}", self.context()),
            }
        }
        panic!(
            "browser: {what} of {css}: the elements kept being replaced\n{}",
            self.context()
        )
    }

    /// Clicks the first element matching `css` (which must exist), and
    /// records where the browser went.
    ///
    /// A live page may redraw its `<main>` between finding the element and
    /// clicking it (its script swaps in the new content when anything
    /// changed): the click then finds it again, as a person would.
    pub fn click(&self, css: &str) {
        for _ in 0..5 {
            let attempt = self
                .runtime
                .block_on(async { self.client().find(Locator::Css(css)).await?.click().await });
            match attempt {
                Ok(()) => {
                    self.current_url();
                    return;
                }
                Err(e) if e.is_stale_element_reference() => continue,
                Err(e) => panic!("browser: click {css}: {e}\n{}", self.context()),
            }
        }
        panic!(
            "browser: click {css}: the element kept being replaced\n{}",
            self.context()
        )
    }

    /// Types `text` into the (emptied) field matching `css`.
    pub fn fill(&self, css: &str, text: &str) {
        self.run(&format!("fill {css}"), async {
            let field = self.client().find(Locator::Css(css)).await?;
            field.clear().await?;
            field.send_keys(text).await
        });
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page
    /// and returns what it returned.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.run("execute", self.client().execute(script, args))
    }

    /// The cookies the page's origin has: (name, value, HttpOnly).
    pub fn cookies(&self) -> Vec<(String, String, bool)> {
        self.run("get_all_cookies", self.client().get_all_cookies())
            .into_iter()
            .map(|c| {
                (
                    c.name().to_string(),
                    c.value().to_string(),
                    c.http_only().unwrap_or(false),
                )
            })
            .collect()
    }

    /// A PNG of the viewport: into `docs/ui/<name>.png` when
    /// `AMON_UI_SCREENSHOTS=1` (to refresh the documentation's pictures),
    /// else into the browser's temporary directory, so a plain run leaves
    /// the tree clean. Returns where it went.
    pub fn save_screenshot(&self, name: &str) -> PathBuf {
        let png = self.run("screenshot", self.client().screenshot());
        let dir = if std::env::var("AMON_UI_SCREENSHOTS").as_deref() == Ok("1") {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ui")
        } else {
            self.dir.path().to_path_buf()
        };
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Runs axe-core on the page as it is, and returns its violations.
    pub fn axe_violations(&self) -> Vec<Value> {
        let axe =
            fs::read_to_string(axe_path()).unwrap_or_else(|e| panic!("cannot read {}: {e}", axe_path().display()));
        // Injected by WebDriver, not by the page: a Content-Security-Policy
        // that forbids inline scripts does not stop it.
        self.execute(&axe, vec![]);
        let result = self.run(
            &format!("axe.run on {}", self.current_url()),
            self.client().execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})
                    .then(r => done({violations: r.violations}))
                    .catch(e => done({error: String(e)}));",
                vec![json!(AXE_RULES)],
            ),
        );
        if let Some(error) = result.get("error") {
            panic!("axe.run failed: {error}\n{}", self.context());
        }
        result["violations"].as_array().cloned().unwrap_or_default()
    }

    /// Fails, naming each violation (its id, impact, help and the CSS
    /// targets of the offending nodes), unless axe finds none on `page`.
    pub fn assert_accessible(&self, page: &str) {
        let violations = self.axe_violations();
        if violations.is_empty() {
            return;
        }
        let mut report = format!(
            "{page} ({}) has {} accessibility violation(s):\n",
            self.current_url(),
            violations.len()
        );
        for v in &violations {
            report.push_str(&format!(
                "- {} [{}]: {} ({})\n",
                v["id"], v["impact"], v["help"], v["helpUrl"]
            ));
            for node in v["nodes"].as_array().into_iter().flatten() {
                report.push_str(&format!("    at {} — {}\n", node["target"], node["failureSummary"]));
            }
        }
        panic!("{report}");
    }
}

/// chromedriver's `GET /status` body, once it answers. Not through the
/// harness's `Api`: chromedriver keeps the connection open whatever the
/// request says, so the body ends where its `Content-Length` says.
fn driver_status(port: u16) -> Option<Value> {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    write!(
        &stream,
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(&stream);
    let (mut line, mut length) = (String::new(), 0);
    reader.read_line(&mut line).ok()?;
    if line.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The session's capabilities: Debian's Chromium, headless and quiet (no
/// network of its own: no updates, sync or QUIC probes), in a fresh
/// profile; with [`Scripts::Off`], page scripts blocked.
fn capabilities(scripts: Scripts, profile: &Path) -> serde_json::Map<String, Value> {
    let mut options = json!({
        "binary": CHROMIUM,
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1280,900",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if scripts == Scripts::Off {
        options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
    }
    let deadline = DEADLINE.as_millis() as u64;
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": options,
        // A page or an async script that hangs fails within the suite's
        // deadline, not chromedriver's five minutes.
        "timeouts": { "pageLoad": deadline, "script": deadline },
    });
    match capabilities {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

impl Drop for Browser {
    /// Ends the session (Chromium quits), then kills chromedriver's process
    /// group, in case a Chromium process outlived it; the guard reaps
    /// chromedriver.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), client.close()).await });
        }
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
    }
}

// ---- a static page, for the harness's own test ----

/// Serves `html` for every `GET` on a loopback port until the test process
/// ends; returns the page's URL.
fn serve_page(html: &'static str) -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let url = format!("http://{}/", listener.local_addr().expect("local_addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            // A thread per connection: Chromium opens spare connections
            // that it may never send a request on.
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                // The request head; the page is the same whatever it asks.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    &stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{html}",
                    html.len()
                );
            });
        }
    });
    url
}

const SMOKE_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Harness check</title></head>
<body>
<header><p>Amon</p></header>
<main>
<h1>Harness check</h1>
<p id="scripts">scripts off</p>
<form method="get" action="/"><label for="token">Token</label>
<input type="password" name="token" id="token"><button type="submit">Sign in</button></form>
</main>
<script>document.getElementById("scripts").textContent = "scripts on";</script>
</body>
</html>
"#;

#[test]
fn the_harness_opens_a_page_with_and_without_scripts_runs_axe_and_takes_a_screenshot() {
    let Some(browser) = Browser::start(Scripts::On) else {
        return;
    };
    let url = serve_page(SMOKE_PAGE);
    browser.goto(&url);
    assert_eq!(
        browser.text("h1").as_deref(),
        Some("Harness check"),
        "{}",
        browser.context()
    );
    assert_eq!(
        browser.text("#scripts").as_deref(),
        Some("scripts on"),
        "{}",
        browser.context()
    );
    assert_eq!(browser.count("input#token[type=password]"), 1);
    browser.assert_accessible("the harness check page");
    let png = browser.save_screenshot("harness-check");
    let bytes = fs::read(&png).expect("the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is a PNG", png.display());
    if png.starts_with(env!("CARGO_MANIFEST_DIR")) {
        // AMON_UI_SCREENSHOTS=1: this page is no part of the documentation.
        fs::remove_file(&png).expect("remove the harness's screenshot from docs/ui");
    }

    // A page that breaks a rule is reported, by rule and element.
    browser.execute("document.querySelector('label').remove();", vec![]);
    let ids: Vec<Value> = browser.axe_violations().iter().map(|v| v["id"].clone()).collect();
    assert!(
        ids.contains(&json!("label")),
        "an unlabelled field is a violation: {ids:?}"
    );

    let quiet = Browser::start(Scripts::Off).expect("a second browser, as the first started");
    quiet.goto(&url);
    assert_eq!(quiet.text("h1").as_deref(), Some("Harness check"));
    assert_eq!(
        quiet.text("#scripts").as_deref(),
        Some("scripts off"),
        "{}",
        quiet.context()
    );
    // WebDriver's own scripts run where the page's do not.
    assert_eq!(quiet.execute("return document.title;", vec![]), json!("Harness check"));
    quiet.fill("#token", "abc");
    quiet.click("button[type=submit]");
    // The click starts the navigation; it ends when it ends (found under
    // load: the URL read at once was still the form's page).
    wait_until(
        "a form to submit without scripts",
        || quiet.context(),
        || quiet.current_url().ends_with("/?token=abc").then_some(()),
    );
}
