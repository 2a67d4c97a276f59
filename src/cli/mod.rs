//! The `amon` command line: daemons (`standalone`, `master`, `relay`) and
//! client verbs over the Master API, as operators use them day to day:
//! `ping`, `alarms`, `maint`, `suppress`, `probes`, `probegroups`,
//! `contacts`.
//!
//! Client verbs share `--url` (`AMON_URL`), `--token` (`AMON_TOKEN`, sent
//! as a bearer token and never printed), `--account` (`AMON_ACCOUNT`, the
//! `/pub/:account` to work on) and `--json` (the API's JSON instead of a
//! table). Errors print `amon: <message> (<code>)` and exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};

pub mod alarms;
pub mod backup;
pub mod client;
pub mod contacts;
pub mod maint;
pub mod probes;
pub mod table;

use client::{encode, Client, Token};

/// Where a master listens unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:4300";

#[derive(Debug, Parser)]
#[command(
    name = "amon",
    version = crate::VERSION,
    about = "Monitoring and alarming for SmartOS/Triton data centers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Master and relay in one process: demos and small sites.
    Standalone {
        /// TOML configuration file; without one, embedded defaults (a demo).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// The Master API, alarms and notifications.
    Master {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// The per-compute-node relay: zone watchers and the link to the master.
    Relay {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// The probes of one zone or global zone (log-scan, http, cmd, …), sent
    /// to its relay. Needs agent.uuid.
    Agent {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Writes a consistent copy of a data dir's databases (amon.sqlite,
    /// relay.sqlite) while the daemon runs (SQLite's online backup).
    Backup {
        /// The daemon's `data_dir`.
        data_dir: PathBuf,
        /// A directory, created if needed; the copies must not exist there yet.
        dest: PathBuf,
    },
    /// Checks that a master answers.
    Ping {
        /// The master's URL.
        #[arg(long, env = "AMON_URL", default_value = DEFAULT_URL)]
        url: String,
    },
    /// An account's alarms: list, show, close, reopen, suppress, delete.
    Alarms(alarms::AlarmsArgs),
    /// Maintenance windows: list, create, show, delete.
    #[command(alias = "maintenances")]
    Maint(maint::MaintArgs),
    /// Silences machines, servers or monitors for a while (creates a
    /// maintenance window; operator-wide without --account).
    Suppress(maint::SuppressArgs),
    /// An account's probes.
    Probes(probes::ProbesArgs),
    /// An account's probe groups.
    Probegroups(probes::ProbeGroupsArgs),
    /// An account's contacts (where notifications go).
    Contacts(contacts::ContactsArgs),
}

/// What every client verb takes. `global`: it may come before or after the
/// verb (`amon alarms --json list` and `amon alarms list --json`).
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// The master's URL.
    #[arg(long, env = "AMON_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// Bearer token for the Master API (never printed).
    #[arg(long, env = "AMON_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<Token>,
    /// The account (login or uuid) whose /pub/:account resources to use.
    #[arg(long, env = "AMON_ACCOUNT", global = true)]
    pub account: Option<String>,
    /// Prints the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A client verb's connection and output settings, inside the actix system.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    pub account: Option<String>,
    pub json: bool,
}

impl Ctx {
    pub fn new(opts: &ClientOpts) -> Ctx {
        Ctx {
            client: Client::new(&opts.url, opts.token.clone()),
            account: opts.account.clone().filter(|a| !a.trim().is_empty()),
            json: opts.json,
        }
    }

    /// `/pub/<account><rest>`, or an error naming the verb when no account
    /// was given.
    pub fn pub_path(&self, verb: &str, rest: &str) -> anyhow::Result<String> {
        pub_path(self.account.as_deref(), verb, rest)
    }
}

/// `/pub/<account><rest>` (the account percent-encoded).
pub fn pub_path(account: Option<&str>, verb: &str, rest: &str) -> anyhow::Result<String> {
    let account =
        account.ok_or_else(|| anyhow!("`amon {verb}` needs an account: give --account or set AMON_ACCOUNT"))?;
    Ok(format!("/pub/{}{rest}", encode(account)))
}

/// Runs a client verb; `None` for the daemon verbs and `ping`, which
/// `main` runs itself.
pub fn run(command: Command) -> Option<ExitCode> {
    let result = match command {
        Command::Standalone { .. }
        | Command::Master { .. }
        | Command::Relay { .. }
        | Command::Agent { .. }
        | Command::Ping { .. } => return None,
        Command::Backup { data_dir, dest } => backup::run(&data_dir, &dest),
        Command::Alarms(args) => block_on(&args.opts.clone(), |ctx| async move { alarms::run(&ctx, args).await }),
        Command::Maint(args) => block_on(&args.opts.clone(), |ctx| async move { maint::run(&ctx, args).await }),
        Command::Suppress(args) => block_on(
            &args.opts.clone(),
            |ctx| async move { maint::suppress(&ctx, args).await },
        ),
        Command::Probes(args) => block_on(&args.opts.clone(), |ctx| async move { probes::run(&ctx, args).await }),
        Command::Probegroups(args) => {
            block_on(
                &args.opts.clone(),
                |ctx| async move { probes::run_groups(&ctx, args).await },
            )
        }
        Command::Contacts(args) => block_on(&args.opts.clone(), |ctx| async move { contacts::run(&ctx, args).await }),
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amon: {e:#}");
            ExitCode::from(1)
        }
    })
}

fn block_on<F, Fut>(opts: &ClientOpts, verb: F) -> anyhow::Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let opts = opts.clone();
    actix_rt::System::new().block_on(async move { verb(Ctx::new(&opts)).await })
}

/// Prints what a verb produced (it ends in a newline already). A closed
/// pipe (`amon alarms list | head -1`) is not an error.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("amon").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn the_daemon_verbs_are_unchanged() {
        assert!(matches!(
            parse(&["master", "-c", "m.toml"]),
            Command::Master { config: Some(_) }
        ));
        assert!(matches!(parse(&["standalone"]), Command::Standalone { config: None }));
        assert!(matches!(
            parse(&["relay", "--config", "r.toml"]),
            Command::Relay { config: Some(_) }
        ));
        assert!(matches!(
            parse(&["agent", "-c", "a.toml"]),
            Command::Agent { config: Some(_) }
        ));
        match parse(&["ping", "--url", "http://m:4300"]) {
            Command::Ping { url } => assert_eq!(url, "http://m:4300"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_options_go_before_or_after_the_verb() {
        let Command::Alarms(args) = parse(&["alarms", "--account", "alice", "list", "--json", "--url", "http://m"])
        else {
            panic!("not alarms")
        };
        assert_eq!(args.opts.account.as_deref(), Some("alice"));
        assert!(args.opts.json);
        assert_eq!(args.opts.url, "http://m");
        let Command::Suppress(args) = parse(&["suppress", "--all", "--for", "1h", "--token", "t0k"]) else {
            panic!("not suppress")
        };
        assert!(args.opts.token.is_some());
        assert!(!format!("{args:?}").contains("t0k"), "the token shows in {args:?}");
    }

    #[test]
    fn pub_verbs_need_an_account() {
        assert_eq!(
            pub_path(Some("alice"), "alarms", "/alarms").unwrap(),
            "/pub/alice/alarms"
        );
        let e = pub_path(None, "alarms list", "/alarms").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`amon alarms list` needs an account: give --account or set AMON_ACCOUNT"
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
