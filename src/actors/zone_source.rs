//! Zone sources as actors: `ExecSource` runs a child process and parses its
//! stdout line by line; `SimSource` drives the simulated cloud. Both hand
//! typed zone events to the `ZoneDispatcher`.
//!
//! A source whose child exits fails (its lifeline says why) and its
//! supervisor restarts it with backoff; a malformed line is logged, counted
//! and skipped, never fatal.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use actix::prelude::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use uuid::Uuid;

use super::supervisor::{Lifeline, Named, Stop};
use super::zone_watcher::{ZoneDispatcher, ZoneEvents};
use crate::clock::Clock;
use crate::zones::sim::{SimCloud, SimConfig};
use crate::zones::{
    parse_line, parse_list_line, parse_meta_line, split_server_tag, LineFormat, ParseError, ZoneEvent, ZoneSnapshot,
};

/// Longest zone line we accept; a vmadm `ready` snapshot of many VMs is big.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// The commands an exec source runs.
#[derive(Debug, Clone)]
pub struct ExecCommands {
    /// The event stream: one zone event per stdout line.
    pub command: Vec<String>,
    pub format: LineFormat,
    /// Prints every zone, for the reconciliation snapshot taken before the
    /// event stream starts; empty: no snapshot.
    pub list_command: Vec<String>,
    /// Prints `uuid alias owner_uuid` per zone, every `meta_refresh`; empty: never.
    pub meta_command: Vec<String>,
    pub meta_refresh: Duration,
    /// Every line of `command` and `list_command` starts with the uuid of
    /// the compute node it is about, so one relay can carry several
    /// (simulators, load tests); otherwise every line is about this relay's.
    pub server_tag: bool,
}

pub struct ExecSource {
    commands: ExecCommands,
    /// This relay's server: where the zones run, unless the lines say
    /// otherwise (`server_tag`).
    server: Uuid,
    dispatcher: Named<ZoneDispatcher>,
    child: Option<Child>,
    lifeline: Lifeline,
}

impl ExecSource {
    pub fn new(
        commands: ExecCommands,
        server: Uuid,
        dispatcher: Named<ZoneDispatcher>,
        lifeline: Lifeline,
    ) -> ExecSource {
        ExecSource {
            commands,
            server,
            dispatcher,
            child: None,
            lifeline,
        }
    }

    fn dispatch(&self, server: Uuid, events: Vec<ZoneEvent>) {
        match self.dispatcher.get() {
            Some(d) => d.do_send(ZoneEvents { server, events }),
            None => tracing::error!("zone dispatcher is not running; zone events lost"),
        }
    }

    fn lines(&self) -> LineServer {
        if self.commands.server_tag {
            LineServer::Tagged
        } else {
            LineServer::Own(self.server)
        }
    }
}

/// Which server a source's lines are about.
#[derive(Debug, Clone, Copy)]
enum LineServer {
    /// This relay's, for every line.
    Own(Uuid),
    /// The one each line's server tag names (`relay.zones.server_tag`).
    Tagged,
}

impl LineServer {
    /// The line's server and the line without its tag; `None` for a blank
    /// tagged line.
    fn split(self, line: &str) -> Result<Option<(Uuid, &str)>, ParseError> {
        match self {
            LineServer::Own(server) => Ok(Some((server, line))),
            LineServer::Tagged => split_server_tag(line),
        }
    }

    /// Parses one line with `parse` after taking its server off.
    fn parse<'a, T>(
        self,
        line: &'a str,
        parse: impl FnOnce(&'a str) -> Result<Option<T>, ParseError>,
    ) -> Result<Option<(Uuid, T)>, ParseError> {
        let Some((server, rest)) = self.split(line)? else {
            return Ok(None);
        };
        Ok(parse(rest)?.map(|parsed| (server, parsed)))
    }
}

/// Each server's items in the order they came, servers in the order they
/// first appear: one batch per server, so a server's snapshot is whole
/// (the dispatcher forgets a server's recorded zones missing from it) and
/// its events keep their order.
fn by_server<T>(items: impl IntoIterator<Item = (Uuid, T)>) -> Vec<(Uuid, Vec<T>)> {
    let mut batches: Vec<(Uuid, Vec<T>)> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for (server, item) in items {
        let i = *index.entry(server).or_insert_with(|| {
            batches.push((server, Vec::new()));
            batches.len() - 1
        });
        batches[i].1.push(item);
    }
    batches
}

/// How long a zone list may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a zone list command and parses its output into one snapshot per
/// server. Without server tags that is always one, for this relay's server,
/// even if empty (every zone recorded for it is gone); with tags, a server
/// with no line in the list gets no snapshot, so its recorded zones are kept.
async fn list_zones(command: Vec<String>, lines: LineServer) -> Result<Vec<(Uuid, Vec<ZoneSnapshot>)>, String> {
    let mut zones = Vec::new();
    for line in run_lines(command).await? {
        match lines.parse(&line, parse_list_line) {
            Ok(Some(zone)) => zones.push(zone),
            Ok(None) => {}
            Err(e) => {
                crate::metrics::zone_lines_skipped(1);
                let shown: String = line.chars().take(200).collect();
                tracing::warn!(error = %e, line = %shown, "malformed zone list line skipped");
            }
        }
    }
    let mut snapshots = by_server(zones);
    if let (LineServer::Own(server), true) = (lines, snapshots.is_empty()) {
        snapshots.push((server, Vec::new()));
    }
    Ok(snapshots)
}

/// Runs a listing command to completion (bounded in time) and returns its
/// stdout lines.
async fn run_lines(command: Vec<String>) -> Result<Vec<String>, String> {
    let (program, args) = command.split_first().ok_or("listing command is empty")?;
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(LIST_TIMEOUT, output)
        .await
        .map_err(|_| format!("{program:?} took longer than {LIST_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run {program:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

impl Actor for ExecSource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if !self.commands.meta_command.is_empty() {
            self.refresh_meta(ctx);
            ctx.run_interval(self.commands.meta_refresh, |act, ctx| act.refresh_meta(ctx));
        }
        if self.commands.list_command.is_empty() {
            self.start_stream(ctx);
            return;
        }
        // Reconcile first: what every zone is now, compared by the watchers
        // with what they (or the last run) knew. Then follow the events.
        ctx.wait(
            list_zones(self.commands.list_command.clone(), self.lines())
                .into_actor(self)
                .map(|result, act, ctx| {
                    match result {
                        Ok(snapshots) => {
                            let zones: usize = snapshots.iter().map(|(_, zones)| zones.len()).sum();
                            tracing::info!(zones, servers = snapshots.len(), "zone list taken for reconciliation");
                            for (server, zones) in snapshots {
                                act.dispatch(server, vec![ZoneEvent::Snapshot(zones)]);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "no reconciliation snapshot this time"),
                    }
                    act.start_stream(ctx);
                }),
        );
    }
}

impl ExecSource {
    /// Runs the metadata listing in the background and hands what it finds
    /// to the watchers; failures are logged (missing metadata is normal).
    fn refresh_meta(&mut self, ctx: &mut Context<Self>) {
        let command = self.commands.meta_command.clone();
        ctx.spawn(
            async move { run_lines(command).await }
                .into_actor(self)
                .map(|result, act, _ctx| match result {
                    Ok(lines) => {
                        let zones: Vec<_> = lines
                            .iter()
                            .filter_map(|line| match parse_meta_line(line) {
                                Ok(zone) => zone,
                                Err(e) => {
                                    tracing::debug!(error = %e, "zone metadata line skipped");
                                    None
                                }
                            })
                            .collect();
                        tracing::debug!(zones = zones.len(), "zone metadata refreshed");
                        // Metadata is keyed by zone, whatever its server.
                        act.dispatch(act.server, vec![ZoneEvent::Meta(zones)]);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot refresh zone metadata"),
                }),
        );
    }

    fn start_stream(&mut self, ctx: &mut Context<Self>) {
        let Some((program, args)) = self.commands.command.split_first() else {
            self.lifeline.fail("zone source command is empty");
            ctx.stop();
            return;
        };
        let spawned = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                self.lifeline.fail(format!("cannot start zone source {program:?}: {e}"));
                ctx.stop();
                return;
            }
        };
        tracing::info!(command = ?self.commands.command, pid = child.id(), "zone source started");
        if let Some(stderr) = child.stderr.take() {
            let program = program.clone();
            ctx.spawn(
                async move {
                    let mut lines = BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::warn!(source = %program, stderr = %line, "zone source says");
                    }
                }
                .into_actor(self),
            );
        }
        if let Some(stdout) = child.stdout.take() {
            ctx.add_stream(FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE)));
        }
        self.child = Some(child);
    }
}

impl StreamHandler<Result<String, LinesCodecError>> for ExecSource {
    fn handle(&mut self, item: Result<String, LinesCodecError>, _ctx: &mut Context<Self>) {
        let line = match item {
            Ok(line) => line,
            Err(e) => {
                crate::metrics::zone_lines_skipped(1);
                tracing::warn!(error = %e, "unreadable zone source line skipped");
                return;
            }
        };
        let format = self.commands.format;
        // One message per line: a batch spanning a delete and a re-create
        // of one zone would record its state in the wrong order.
        match self.lines().parse(&line, |rest| parse_line(rest, format)) {
            Ok(Some((server, event))) => self.dispatch(server, vec![event]),
            Ok(None) => {}
            Err(e) => {
                crate::metrics::zone_lines_skipped(1);
                let shown: String = line.chars().take(200).collect();
                tracing::warn!(error = %e, line = %shown, "malformed zone line skipped");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // stdout closed: the child is gone or going. Report how it ended.
        let child = self.child.take();
        ctx.wait(
            async move {
                match child {
                    Some(mut child) => match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                        Ok(Ok(status)) => format!("zone source exited ({status})"),
                        Ok(Err(e)) => format!("zone source exited: {e}"),
                        Err(_) => "zone source closed its output".to_string(),
                    },
                    None => "zone source closed its output".to_string(),
                }
            }
            .into_actor(self)
            .map(|why, act, ctx| {
                act.lifeline.fail(why);
                ctx.stop();
            }),
        );
    }
}

impl Handler<Stop> for ExecSource {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        // kill_on_drop reaps the child with us.
        ctx.stop();
    }
}

/// How often the simulated cloud is advanced.
const SIM_TICK: Duration = Duration::from_millis(250);

pub struct SimSource {
    config: SimConfig,
    cloud: Option<SimCloud>,
    started: Option<tokio::time::Instant>,
    dispatcher: Named<ZoneDispatcher>,
    clock: Clock,
    lifeline: Lifeline,
}

impl SimSource {
    pub fn new(config: SimConfig, dispatcher: Named<ZoneDispatcher>, clock: Clock, lifeline: Lifeline) -> SimSource {
        SimSource {
            config,
            cloud: None,
            started: None,
            dispatcher,
            clock,
            lifeline,
        }
    }

    fn send(&self, server: Uuid, events: Vec<ZoneEvent>) {
        if events.is_empty() {
            return;
        }
        match self.dispatcher.get() {
            Some(d) => d.do_send(ZoneEvents { server, events }),
            None => tracing::error!("zone dispatcher is not running; simulated events lost"),
        }
    }

    fn tick(&mut self) {
        let (Some(cloud), Some(started)) = (self.cloud.as_mut(), self.started) else {
            return;
        };
        let happened = cloud.advance(started.elapsed());
        let now = chrono::DateTime::from_timestamp_millis(self.clock.now_ms());
        let events = happened.into_iter().map(|sim| {
            let event = match sim.event {
                ZoneEvent::State {
                    zonename,
                    old,
                    new,
                    time,
                    meta,
                } => ZoneEvent::State {
                    zonename,
                    old,
                    new,
                    time: time.or(now),
                    meta,
                },
                other => other,
            };
            (sim.server, event)
        });
        for (server, events) in by_server(events) {
            self.send(server, events);
        }
    }
}

impl Actor for SimSource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Fresh cloud on every (re)start: same seed, same zones.
        let cloud = SimCloud::new(&self.config);
        tracing::info!(
            servers = self.config.servers,
            zones_per_server = self.config.zones_per_server,
            "simulated cloud started"
        );
        for (server, zones) in by_server(cloud.snapshot()) {
            self.send(server, vec![ZoneEvent::Snapshot(zones)]);
        }
        self.cloud = Some(cloud);
        self.started = Some(tokio::time::Instant::now());
        ctx.run_interval(SIM_TICK, |act, _ctx| act.tick());
    }
}

impl Handler<Stop> for SimSource {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_server_keeps_each_servers_order_and_gathers_its_items_in_one_batch() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let batches = by_server([(a, 1), (a, 2), (b, 3), (a, 4), (b, 5)]);
        assert_eq!(batches, vec![(a, vec![1, 2, 4]), (b, vec![3, 5])]);
        assert!(by_server(Vec::<(Uuid, ())>::new()).is_empty());
    }

    #[test]
    fn a_tagged_line_is_about_its_tags_server_and_an_untagged_one_about_ours() {
        let (own, other) = (Uuid::new_v4(), Uuid::new_v4());
        let line = r#"{"zonename":"z1","state":"running"}"#;
        let zone =
            |parsed: Result<Option<(Uuid, ZoneSnapshot)>, ParseError>| parsed.map(|z| z.map(|(s, z)| (s, z.zonename)));

        assert_eq!(
            zone(LineServer::Own(own).parse(line, parse_list_line)),
            Ok(Some((own, "z1".to_owned())))
        );
        let tagged = format!("{other} {line}");
        assert_eq!(
            zone(LineServer::Tagged.parse(&tagged, parse_list_line)),
            Ok(Some((other, "z1".to_owned())))
        );
        assert_eq!(
            zone(LineServer::Tagged.parse(line, parse_list_line)),
            Err(ParseError::BadField { field: "server tag" })
        );
        assert_eq!(zone(LineServer::Tagged.parse("", parse_list_line)), Ok(None));
    }
}
