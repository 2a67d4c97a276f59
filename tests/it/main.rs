//! The end-to-end suite, one binary so it links once (ripgrep's layout):
//! `harness` runs the real `amon` binary, a real SMTP server (aiosmtpd) and a
//! real zone source as child processes on loopback; `e2e` holds the
//! behaviours an operator would check by hand; `relay` the relay's own
//! (every zone format, spool across a master outage and a SIGKILL,
//! reconciliation, a dying zone source); `gc` retention and garbage
//! collection on the master; `upgrade` data dirs of the last release
//! opened by this build, and `amon backup`; `clients` and `compat` what
//! Triton's own clients rely on (response headers, read-modify-write `PUT`,
//! the relay's `syncprobes`, account attributes as contacts, the webhook
//! body); `tenancy` who may watch which machine; `faults` delivery and
//! storage faults; `clock` the wall clock stepped under a running daemon;
//! `browser` headless Chromium (through chromedriver) and axe-core, with
//! which `ui` checks the web UI.

// clippy.toml bans the wall clock so that logic is tested with paused time.
// Here the processes under test are real and run on real time: deadlines,
// "not before the hold" and zoneevent's `when` can only come from the wall
// clock.
#![allow(clippy::disallowed_methods)]

mod agent;
mod agent_daemon;
mod api;
mod browser;
mod cli;
mod clients;
mod clock;
mod cluster;
mod compat;
mod e2e;
mod faults;
mod flood;
mod gc;
mod harness;
mod hostile;
mod ingest;
mod load;
mod loglevel;
mod probes;
mod relay;
mod service;
mod tenancy;
mod ui;
mod upgrade;
