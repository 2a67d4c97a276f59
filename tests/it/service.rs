//! The service definitions, run as their service managers would (issue 12):
//! the start command of each SMF manifest (`smf/*.xml`) and of each systemd
//! unit (`smf/systemd/*.service`) is read from the file, with the installed
//! binary's and configuration's paths replaced by the test's, and run in the
//! foreground; then the refresh signal the file names (SIGHUP) reloads the
//! configuration and the stop signal (SIGTERM) ends the process with 0.
//! What SMF and systemd do beyond sending those signals is theirs to test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::{tail_of, wait_until, AmonConfig, ChildGuard, ExecZones};

const INSTALLED_BINARY: &str = "/opt/smartdc/amon/bin/amon";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// An attribute of the first `<exec_method … name="NAME" …>` element.
fn smf_method(manifest: &str, name: &str, attribute: &str) -> String {
    let at = manifest
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no exec_method {name}"));
    let element = &manifest[manifest[..at].rfind('<').expect("element start")..];
    let element = &element[..element.find('>').expect("element end")];
    let key = format!("{attribute}=\"");
    let value = &element[element
        .find(&key)
        .unwrap_or_else(|| panic!("no {attribute} in {element}"))
        + key.len()..];
    value[..value.find('"').expect("attribute end")].to_string()
}

/// The value of `Key=` in a systemd unit.
fn unit_key(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_string()
}

/// The start command with this test's binary and configuration.
fn argv(command: &str, config: &Path) -> Vec<String> {
    command
        .split_whitespace()
        .map(|word| {
            if word == INSTALLED_BINARY {
                env!("CARGO_BIN_EXE_amon").to_string()
            } else if word == "%{config/file}"
                || (word.starts_with("/opt/smartdc/amon/etc/") && word.ends_with(".toml"))
            {
                config.display().to_string()
            } else {
                word.to_string()
            }
        })
        .collect()
}

fn messages(log: &Path, msg: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["msg"] == msg)
        .count()
}

/// Runs `command` as the service manager would, then refreshes and stops it.
fn run_as_a_service(what: &str, command: &str, config: &Path, dir: &Path) {
    let argv = argv(command, config);
    assert_eq!(
        argv[0],
        env!("CARGO_BIN_EXE_amon"),
        "{what} starts {INSTALLED_BINARY}: {command}"
    );
    let log = dir.join(format!("{}.log", what.replace(['/', ' '], "-")));
    let stderr = File::create(&log).expect("log file");
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut process = ChildGuard::spawn(what, &mut command);
    let context = || format!("{what}:\n{}", tail_of(&log, 30));
    wait_until(&format!("{what} to start"), context, || {
        assert!(process.exited().is_none(), "{what} exited at start\n{}", context());
        (messages(&log, "amon started") == 1).then_some(())
    });
    // Refresh: the configuration is read again, in the same process.
    process.signal("HUP");
    wait_until(&format!("{what} to reload"), context, || {
        // A refresh must never end it (found under load: a SIGHUP right
        // after "amon started" came before the handler was installed).
        assert!(process.exited().is_none(), "{what} exited on a refresh\n{}", context());
        (messages(&log, "configuration reloaded") == 1).then_some(())
    });
    assert!(process.exited().is_none(), "{what} still runs after a refresh");
    // Stop: SIGTERM, and a clean exit.
    process.signal("TERM");
    let status = wait_until(&format!("{what} to stop"), context, || process.exited());
    assert!(status.success(), "{what} stopped with {status}\n{}", context());
}

/// An agent whose relay is not there: it runs on, polling.
fn agent_config(dir: &Path) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        "[agent]\nuuid = \"44454c4c-4400-1046-8050-b5c04f383432\"\nrelay_url = \"http://127.0.0.1:9\"\n",
    )
    .expect("agent config");
    path
}

fn configs(dir: &Path) -> (PathBuf, PathBuf) {
    let master = AmonConfig::new(&dir.join("master-data")).write(&dir.join("master.toml"));
    let relay = AmonConfig {
        // Nobody listens there: the relay spools and retries, as it would.
        master_url: Some("http://127.0.0.1:9".into()),
        zones: Some(ExecZones::auto(vec!["sleep".into(), "3600".into()])),
        ..AmonConfig::new(&dir.join("relay-data"))
    }
    .write(&dir.join("relay.toml"));
    (master, relay)
}

#[test]
fn the_smf_start_methods_run_refresh_and_stop_as_svc_startd_would() {
    let dir = tempfile::Builder::new()
        .prefix("amon-smf-it-")
        .tempdir()
        .expect("tempdir");
    let (master_config, relay_config) = configs(dir.path());
    let agent_config = agent_config(dir.path());
    for (file, config) in [
        ("smf/amon-master.xml", &master_config),
        ("smf/amon-relay.xml", &relay_config),
        ("smf/amon-agent.xml", &agent_config),
    ] {
        let manifest = std::fs::read_to_string(repo(file)).expect("manifest");
        // The signals this test sends are the ones the manifest names.
        assert_eq!(smf_method(&manifest, "refresh", "exec"), ":kill -HUP", "{file}");
        assert_eq!(smf_method(&manifest, "stop", "exec"), ":kill", "{file} (SIGTERM)");
        run_as_a_service(file, &smf_method(&manifest, "start", "exec"), config, dir.path());
    }
}

#[test]
fn the_systemd_units_run_reload_and_stop_as_systemd_would() {
    let dir = tempfile::Builder::new()
        .prefix("amon-systemd-it-")
        .tempdir()
        .expect("tempdir");
    let (master_config, relay_config) = configs(dir.path());
    let agent_config = agent_config(dir.path());
    for (file, config) in [
        ("smf/systemd/amon-master.service", &master_config),
        ("smf/systemd/amon-relay.service", &relay_config),
        ("smf/systemd/amon-agent.service", &agent_config),
    ] {
        let unit = std::fs::read_to_string(repo(file)).expect("unit");
        assert_eq!(unit_key(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID", "{file}");
        assert_eq!(unit_key(&unit, "KillSignal"), "SIGTERM", "{file}");
        assert_eq!(unit_key(&unit, "Type"), "exec", "{file}: the process is the service");
        run_as_a_service(file, &unit_key(&unit, "ExecStart"), config, dir.path());
    }
}
