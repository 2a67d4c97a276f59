//! The `amon` command line: daemons (`standalone`, `master`, `relay`) and
//! client verbs over the Master API (`ping` for now).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "amon",
    version,
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
    /// Checks that a master answers.
    Ping {
        /// The master's URL.
        #[arg(long, env = "AMON_URL", default_value = "http://127.0.0.1:4300")]
        url: String,
    },
}
