//! The operator CLI against a real `amon master`: every verb of `amon
//! alarms`, `maint`, `suppress`, `probes`, `probegroups` and `contacts`,
//! run as the binary, checked by what it prints and by what the Master API
//! says afterwards. The test plays the relay: it posts machine events to
//! `POST /events` itself, so no relay, zone source or SMTP server runs.

use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{free_port, now_ms, tail_of, wait_until, Amon, AmonConfig, Api, Mode};

/// A master on loopback (mail to files) and the account `alice`.
struct Rig {
    master: Amon,
    api: Api,
    url: String,
    /// Last: the files outlive the process.
    _dir: tempfile::TempDir,
}

/// What one run of `amon` did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Rig {
    fn start() -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("amon-cli-it-")
            .tempdir()
            .expect("tempdir");
        let config = AmonConfig::new(&dir.path().join("master-data")).write(&dir.path().join("master.toml"));
        let master = Amon::start(Mode::Master, &config, &dir.path().join("master.log"));
        let api = master.api();
        let url = format!("http://{}", api.addr);
        api.create(
            "/accounts",
            &json!({ "login": "alice", "email": "alice@example.com", "operator": true }),
        );
        Rig {
            master,
            api,
            url,
            _dir: dir,
        }
    }

    /// Runs `amon <args>` against this master, with none of the caller's
    /// `AMON_*` settings.
    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_amon"));
        command.args(args).stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            if key.starts_with("AMON_") {
                command.env_remove(key);
            }
        }
        command.env("AMON_URL", &self.url).envs(env.iter().copied());
        let Output { status, stdout, stderr } = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run amon {args:?}: {e}"));
        Run {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// `amon <args>` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(
            run.code,
            Some(0),
            "amon {args:?} failed\nstdout:\n{}\nstderr:\n{}\n--- master log:\n{}",
            run.stdout,
            run.stderr,
            self.log()
        );
        run.stdout
    }

    /// `amon <args> --json` that must succeed; its JSON.
    fn json(&self, args: &[&str]) -> Value {
        let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("amon {args:?} printed no JSON ({e}):\n{out}"))
    }

    /// `amon <args>` that must fail with exit 1; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(
            run.code,
            Some(1),
            "amon {args:?} should fail\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        assert!(run.stderr.starts_with("amon: "), "stderr: {}", run.stderr);
        run.stderr
    }

    fn log(&self) -> String {
        tail_of(&self.master.log, 30)
    }

    /// A machine-up probe of alice's on `machine`; its uuid.
    fn probe(&self, machine: Uuid, name: &str) -> String {
        let probe = self.api.create(
            "/pub/alice/probes",
            &json!({ "type": "machine-up", "machine": machine.to_string(), "name": name }),
        );
        probe["uuid"].as_str().expect("probe uuid").to_string()
    }

    /// `machine` (alias `alias`) goes down on `server`, as a relay says it.
    fn machine_down(&self, machine: Uuid, alias: &str, server: Uuid) {
        let event = json!({
            "type": "machine", "uuid": Uuid::new_v4(), "time": now_ms(), "relay": server, "server": server,
            "machine": machine, "alias": alias, "oldState": "running", "newState": "shutting_down", "up": false,
        });
        let (status, body) = self.api.post("/events", &event);
        assert_eq!(status, 202, "POST /events answered {status}: {body}");
    }

    /// alice's alarm `id`, once the API has it and `check` holds.
    fn alarm_when(&self, id: u64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_until(
            &format!("alarm {id}: {what}"),
            || self.log(),
            || {
                let (status, alarm) = self.api.get(&format!("/pub/alice/alarms/{id}"));
                (status == 200 && check(&alarm)).then_some(alarm)
            },
        )
    }
}

fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn alarms_list_get_and_every_action() {
    let rig = Rig::start();
    let machine = Uuid::new_v4();
    let probe = rig.probe(machine, "web0 up");
    rig.machine_down(machine, "web0", Uuid::new_v4());
    rig.alarm_when(1, "open with a fault", |a| {
        a["faults"].as_array().is_some_and(|f| f.len() == 1)
    });

    // The table: header, one row, saying what and where.
    let out = rig.ok(&["alarms", "list", "--account", "alice"]);
    let mut lines = out.lines();
    let header = lines.next().expect("a header");
    for column in ["ID", "STATE", "OPENED (UTC)", "LAST EVENT (UTC)", "FAULTS", "WHAT"] {
        assert!(header.contains(column), "header {header:?}");
    }
    let row = lines.next().expect("a row");
    assert!(row.starts_with("1 "), "{out}");
    assert!(row.contains("open") && row.contains("probe web0 up: web0"), "{out}");
    assert_eq!(lines.next(), None, "{out}");

    // The same with AMON_ACCOUNT, and as JSON.
    let run = rig.run_env(&["alarms", "list"], &[("AMON_ACCOUNT", "alice")]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), out.as_str()),
        "{}",
        run.stderr
    );
    let alarms = rig.json(&["alarms", "list", "--account", "alice"]);
    assert_eq!(alarms[0]["id"], 1, "{alarms}");
    assert_eq!(alarms[0]["probe"], json!(probe));

    let out = rig.ok(&["alarms", "get", "1", "--account", "alice"]);
    assert!(out.starts_with("alarm:"), "{out}");
    assert!(out.contains(&format!("{probe} (web0 up)")), "{out}");
    assert!(out.contains("Faults (1):"), "{out}");
    assert_eq!(lines_with(&out, &machine.to_string()).len(), 1, "{out}");
    assert_eq!(rig.json(&["alarms", "get", "1", "--account", "alice"])["id"], 1);

    // Actions: a line each, and the API agrees.
    let out = rig.ok(&["alarms", "suppress", "1", "--account", "alice"]);
    assert_eq!(out, "alarm 1 suppressed: it will not notify\n");
    rig.alarm_when(1, "suppressed", |a| a["suppressed"] == true);
    let out = rig.ok(&["alarms", "list", "--account", "alice"]);
    assert!(out.lines().nth(1).is_some_and(|l| l.contains("suppressed")), "{out}");

    assert_eq!(
        rig.ok(&["alarms", "unsuppress", "1", "--account", "alice"]),
        "alarm 1 unsuppressed: it notifies again\n"
    );
    rig.alarm_when(1, "unsuppressed", |a| a["suppressed"] == false);

    assert_eq!(
        rig.ok(&["alarms", "close", "1", "--account", "alice"]),
        "alarm 1 closed\n"
    );
    rig.alarm_when(1, "closed", |a| a["closed"] == true);
    let closed = rig.json(&["alarms", "list", "--state", "closed", "--account", "alice"]);
    assert_eq!(closed.as_array().map(Vec::len), Some(1), "{closed}");
    let open = rig.json(&["alarms", "list", "--state", "open", "--account", "alice"]);
    assert_eq!(open, json!([]));

    assert_eq!(
        rig.ok(&["alarms", "reopen", "1", "--account", "alice"]),
        "alarm 1 reopened\n"
    );
    rig.alarm_when(1, "reopened", |a| a["closed"] == false);

    assert_eq!(
        rig.ok(&["alarms", "delete", "1", "--account", "alice"]),
        "alarm 1 deleted\n"
    );
    let error = rig.fails(&["alarms", "get", "1", "--account", "alice"]);
    assert!(error.trim_end().ends_with("(Gone)"), "{error}");

    let error = rig.fails(&["alarms", "get", "99", "--account", "alice"]);
    assert_eq!(error, "amon: no such alarm: 99 (ResourceNotFound)\n");
    let error = rig.fails(&["alarms", "close", "99", "--account", "alice"]);
    assert!(error.trim_end().ends_with("(ResourceNotFound)"), "{error}");
    let error = rig.fails(&["alarms", "list"]);
    assert!(error.contains("needs an account"), "{error}");
}

#[test]
fn suppress_and_maintenance_windows() {
    let rig = Rig::start();
    let (web0, web1) = (Uuid::new_v4(), Uuid::new_v4());
    let server = Uuid::new_v4();
    let p0 = rig.probe(web0, "web0 up");
    rig.probe(web1, "web1 up");

    // An account's window over one machine, for two hours.
    let out = rig.ok(&[
        "suppress",
        "--machine",
        &web0.to_string(),
        "--for",
        "2h",
        "--notes",
        "kernel upgrade",
        "--account",
        "alice",
    ]);
    assert!(out.starts_with("maintenance window 1 ("), "{out}");
    assert!(
        out.contains(&format!("machines {web0}")) && out.contains(" until 20"),
        "{out}"
    );
    assert!(out.contains("amon maint delete 1 --account alice"), "{out}");

    let windows = rig.json(&["maint", "list", "--account", "alice"]);
    let window = &windows[0];
    assert_eq!(window["machines"], json!([web0]), "{windows}");
    assert_eq!(window["notes"], "kernel upgrade");
    let (start, end) = (window["start"].as_i64(), window["end"].as_i64());
    let hours = end.zip(start).map(|(e, s)| (e - s) as f64 / 3_600_000.0);
    assert!(
        hours.is_some_and(|h| (h - 2.0).abs() < 0.01),
        "a two-hour window: {window}"
    );

    let out = rig.ok(&["maint", "list", "--account", "alice"]);
    assert!(out.starts_with("ID  START (UTC)"), "{out}");
    assert_eq!(lines_with(&out, "kernel upgrade").len(), 1, "{out}");
    let out = rig.ok(&["maint", "get", "1", "--account", "alice"]);
    assert!(out.contains("notes:") && out.contains("kernel upgrade"), "{out}");

    // The suppressed machine goes down: a maintenance fault, not a fault.
    rig.machine_down(web0, "web0", server);
    rig.alarm_when(1, "a maintenance fault", |a| {
        a["maintFaults"].as_array().is_some_and(|f| f.len() == 1)
    });
    let out = rig.ok(&["alarms", "list", "--account", "alice"]);
    assert!(lines_with(&out, "(+1 in maint)").len() == 1, "{out}");
    let out = rig.ok(&["alarms", "get", "1", "--account", "alice"]);
    assert!(
        out.contains("Faults: none") && out.contains("Faults under maintenance (1)"),
        "{out}"
    );

    // maint create: the general form; open-ended without an end.
    let created = rig.json(&[
        "maint",
        "create",
        "--probe",
        &p0,
        "--machine",
        &web1.to_string(),
        "--notes",
        "db move",
        "--account",
        "alice",
    ]);
    assert_eq!(created["id"], 2, "{created}");
    assert!(created["end"].is_null(), "open-ended: {created}");
    assert_eq!(created["probes"], json!([p0]));
    let out = rig.ok(&[
        "maint",
        "create",
        "--all",
        "--until",
        "2099-01-01T00:00:00Z",
        "--account",
        "alice",
    ]);
    assert!(
        out.contains("2099-01-01 00:00:00 UTC") && out.contains("covers:") && out.contains("all"),
        "{out}"
    );

    // Delete: the window is gone, 410 from then on.
    assert_eq!(
        rig.ok(&["maint", "delete", "1", "--account", "alice"]),
        "maintenance window 1 deleted\n"
    );
    let error = rig.fails(&["maint", "get", "1", "--account", "alice"]);
    assert!(error.trim_end().ends_with("(Gone)"), "{error}");

    // Operator-wide, without --account: a whole server for 30 minutes.
    let out = rig.ok(&[
        "suppress",
        "--server",
        &server.to_string(),
        "--for",
        "30m",
        "--notes",
        "rack 4",
    ]);
    let id: String = out
        .strip_prefix("maintenance window ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no window id in {out:?}"))
        .to_string();
    assert!(out.contains(&format!("amon maint delete {id}\n")), "{out}");
    let out = rig.ok(&["maint", "list"]);
    assert!(out.starts_with("ID  ACCOUNT"), "{out}");
    assert_eq!(lines_with(&out, "rack 4").len(), 1, "{out}");
    let out = rig.ok(&["maint", "get", &id]);
    assert!(out.contains(&format!("servers {server}")), "{out}");
    assert_eq!(
        rig.ok(&["maint", "delete", &id]),
        format!("maintenance window {id} deleted\n")
    );
    let all = rig.json(&["maint", "list"]);
    assert!(
        !all.as_array().into_iter().flatten().any(|w| w["notes"] == "rack 4"),
        "{all}"
    );

    // What is not a window never reaches the master.
    let error = rig.fails(&["suppress", "--machine", &web0.to_string(), "--for", "30s"]);
    assert!(error.contains("whole minutes"), "{error}");
    let error = rig.fails(&["suppress", "--machine", &web0.to_string()]);
    assert!(error.contains("say for how long"), "{error}");
}

#[test]
fn probes_and_probe_groups() {
    let rig = Rig::start();
    let machine = Uuid::new_v4();

    let probe = rig.json(&[
        "probes",
        "create",
        "--machine",
        &machine.to_string(),
        "--name",
        "web0 up",
        "--hold",
        "90s",
        "--account",
        "alice",
    ]);
    let uuid = probe["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(probe["type"], "machine-up");
    assert_eq!(probe["hold"], 90);

    let out = rig.ok(&["probes", "list", "--account", "alice"]);
    assert!(out.starts_with("UUID "), "{out}");
    assert_eq!(lines_with(&out, &uuid).len(), 1, "{out}");
    assert!(lines_with(&out, &uuid)[0].contains("web0 up"), "{out}");
    let out = rig.ok(&["probes", "get", &uuid, "--account", "alice"]);
    assert!(out.contains("1m 30s"), "hold shown as a duration: {out}");

    let updated = rig.json(&["probes", "update", &uuid, "--name", "web0 alive", "--account", "alice"]);
    assert_eq!(updated["name"], "web0 alive", "{updated}");
    assert_eq!(updated["machine"], json!(machine), "the rest is kept: {updated}");
    assert_eq!(updated["hold"], 90, "the rest is kept: {updated}");

    assert_eq!(
        rig.ok(&["probes", "disable", &uuid, "--account", "alice"]),
        format!("probe {uuid} disabled\n")
    );
    assert_eq!(rig.api.get(&format!("/pub/alice/probes/{uuid}")).1["disabled"], true);
    assert_eq!(
        rig.ok(&["probes", "enable", &uuid, "--account", "alice"]),
        format!("probe {uuid} enabled\n")
    );
    assert_eq!(rig.api.get(&format!("/pub/alice/probes/{uuid}")).1["disabled"], false);

    // Groups.
    let group = rig.json(&[
        "probegroups",
        "create",
        "--name",
        "web tier",
        "--contact",
        "email",
        "--account",
        "alice",
    ]);
    let group_uuid = group["uuid"].as_str().expect("group uuid").to_string();
    assert_eq!(group["contacts"], json!(["email"]), "{group}");
    let out = rig.ok(&["probegroups", "list", "--account", "alice"]);
    assert!(
        lines_with(&out, &group_uuid)
            .first()
            .is_some_and(|l| l.contains("web tier")),
        "{out}"
    );
    let out = rig.ok(&["probegroups", "get", &group_uuid, "--account", "alice"]);
    assert!(out.contains("web tier"), "{out}");
    let renamed = rig.json(&[
        "probegroups",
        "update",
        &group_uuid,
        "--name",
        "web",
        "--account",
        "alice",
    ]);
    assert_eq!(renamed["name"], "web", "{renamed}");
    rig.ok(&["probegroups", "disable", &group_uuid, "--account", "alice"]);
    assert_eq!(
        rig.api.get(&format!("/pub/alice/probegroups/{group_uuid}")).1["disabled"],
        true
    );
    rig.ok(&["probegroups", "enable", &group_uuid, "--account", "alice"]);
    assert_eq!(
        rig.api.get(&format!("/pub/alice/probegroups/{group_uuid}")).1["disabled"],
        false
    );

    // The probe joins the group, and leaves it.
    let joined = rig.json(&["probes", "update", &uuid, "--group", &group_uuid, "--account", "alice"]);
    assert_eq!(joined["group"], json!(group_uuid), "{joined}");
    let left = rig.json(&["probes", "update", &uuid, "--no-group", "--account", "alice"]);
    assert!(left["group"].is_null(), "{left}");

    assert_eq!(
        rig.ok(&["probes", "delete", &uuid, "--account", "alice"]),
        format!("probe {uuid} deleted\n")
    );
    let error = rig.fails(&["probes", "get", &uuid, "--account", "alice"]);
    assert!(error.trim_end().ends_with("(ResourceNotFound)"), "{error}");
    assert_eq!(
        rig.ok(&["probegroups", "delete", &group_uuid, "--account", "alice"]),
        format!("probe group {group_uuid} deleted\n")
    );
    let error = rig.fails(&["probegroups", "get", &group_uuid, "--account", "alice"]);
    assert!(error.trim_end().ends_with("(ResourceNotFound)"), "{error}");

    // The API's validation errors, field by field.
    let error = rig.fails(&["probes", "create", "--account", "alice"]);
    assert!(
        error.contains("(ValidationFailed)") && error.contains("\n  machine: "),
        "{error}"
    );
}

#[test]
fn contacts() {
    let rig = Rig::start();
    let out = rig.ok(&["contacts", "list", "--account", "alice"]);
    assert!(out.starts_with("NAME "), "{out}");
    assert!(lines_with(&out, "alice@example.com")[0].starts_with("email "), "{out}");

    assert_eq!(
        rig.ok(&[
            "contacts",
            "set",
            "ops",
            "--email",
            "ops@example.com",
            "--account",
            "alice"
        ]),
        "contact ops: email ops@example.com\n"
    );
    assert_eq!(
        rig.ok(&[
            "contacts",
            "set",
            "hook",
            "--webhook",
            "http://127.0.0.1:9/amon",
            "--account",
            "alice"
        ]),
        "contact hook: webhook http://127.0.0.1:9/amon\n"
    );
    let out = rig.ok(&["contacts", "list", "--account", "alice"]);
    assert_eq!(out.lines().count(), 4, "header, email, hook, ops:\n{out}");
    let out = rig.ok(&["contacts", "get", "ops", "--account", "alice"]);
    assert!(out.contains("ops@example.com"), "{out}");
    let contact = rig.json(&["contacts", "get", "hook", "--account", "alice"]);
    assert_eq!(contact["medium"], "webhook", "{contact}");

    // A probe may now name it.
    let probe = rig.json(&[
        "probes",
        "create",
        "--machine",
        &Uuid::new_v4().to_string(),
        "--contact",
        "email,hook",
        "--account",
        "alice",
    ]);
    assert_eq!(probe["contacts"], json!(["email", "hook"]), "{probe}");
    // In use: the API says by what, and so does the CLI.
    let error = rig.fails(&["contacts", "delete", "hook", "--account", "alice"]);
    assert!(
        error.contains("(ValidationFailed)\n") && error.contains(probe["uuid"].as_str().expect("uuid")),
        "{error}"
    );

    assert_eq!(
        rig.ok(&["contacts", "delete", "ops", "--account", "alice"]),
        "contact ops deleted\n"
    );
    let error = rig.fails(&["contacts", "get", "ops", "--account", "alice"]);
    assert!(error.trim_end().ends_with("(ResourceNotFound)"), "{error}");
}

#[test]
fn errors_name_the_url_and_never_the_token() {
    let rig = Rig::start();
    let token = format!("tok-{}", Uuid::new_v4());

    // Nothing listens there.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let run = rig.run(&["alarms", "list", "--account", "alice", "--url", &nowhere]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with(&format!("amon: cannot reach the master at {nowhere}: ")),
        "{}",
        run.stderr
    );

    // The token goes out with every request and shows nowhere: not in
    // errors, not in --help (where clap would show an env value).
    for args in [
        vec!["alarms", "list", "--account", "nobody", "--token", token.as_str()],
        vec!["alarms", "list", "--account", "alice", "--token", token.as_str()],
        vec![
            "alarms",
            "list",
            "--account",
            "alice",
            "--url",
            nowhere.as_str(),
            "--token",
            token.as_str(),
        ],
    ] {
        let run = rig.run(&args);
        assert!(
            !run.stdout.contains(&token) && !run.stderr.contains(&token),
            "amon {args:?} showed the token:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    let run = rig.run_env(&["alarms", "list", "--help"], &[("AMON_TOKEN", &token)]);
    assert_eq!(run.code, Some(0));
    assert!(
        run.stdout.contains("--token") && !run.stdout.contains(&token),
        "{}",
        run.stdout
    );
    let run = rig.run_env(&["alarms", "list", "--account", "nobody"], &[("AMON_TOKEN", &token)]);
    assert_eq!(run.stderr, "amon: no such account: \"nobody\" (ResourceNotFound)\n");

    // ping keeps working as it did.
    assert!(rig.ok(&["ping"]).contains("pong"));
}

#[test]
fn version_names_the_release_and_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_amon"))
        .arg("--version")
        .output()
        .expect("run amon --version");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let expected_prefix = format!("amon {} (", env!("CARGO_PKG_VERSION"));
    let commit = text
        .trim_end()
        .strip_prefix(&expected_prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`amon --version` printed {text:?}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "a short commit hash or `unknown`: {text:?}"
    );
}
