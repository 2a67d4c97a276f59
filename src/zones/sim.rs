//! The simulated cloud: S servers × Z zones with reboots, crashes and
//! server shutdowns, for the demo and for load. It owns the zones' states and
//! a schedule of future steps (a min-heap keyed by simulated time), so
//! [`SimCloud::advance`] costs only the steps that fall due, even with
//! 100,000 zones. Everything — uuids, names, the schedule — follows from the
//! seed and the elapsed times passed in, never from the wall clock, so the same
//! seed gives the same cloud and the same story however the caller slices time.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::{ZoneEvent, ZoneMeta, ZoneSnapshot, ZoneState};

/// Sizes and rates of the simulated cloud (`[relay.zones.sim]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub servers: u32,
    pub zones_per_server: u32,
    /// Seeds zone uuids and the random schedule: the same seed gives the same cloud.
    pub seed: u64,
    /// Mean time between reboots across the whole cloud (zero: none).
    pub reboot_every: Duration,
    /// Mean time between crashes across the whole cloud (zero: none).
    pub crash_every: Duration,
    /// How long a crashed zone stays down.
    pub crash_downtime: Duration,
    /// Mean time between whole-server shutdowns (zero: none).
    pub server_shutdown_every: Duration,
}

/// One simulated compute node.
#[derive(Debug, Clone, PartialEq)]
pub struct SimServer {
    pub uuid: Uuid,
    pub hostname: String,
}

/// A zone event on one simulated server.
///
/// `ZoneEvent::State` events carry `time: None`: the simulation has no wall
/// clock, so the caller stamps them with its own clock when it receives them.
/// They do carry the zone's alias and owner, as vmadm would.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub server: Uuid,
    pub event: ZoneEvent,
}

/// The namespace of every simulated uuid, so they cannot collide with v5
/// uuids minted elsewhere from the same strings.
const NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_7a0e_3b4f_4e21_9a6d_8c2f_0b7e_4a13);

/// The one account that owns every simulated zone, so the demo needs a single
/// user and a single set of probes.
pub fn demo_owner(seed: u64) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{seed}/owner").as_bytes())
}

fn server_uuid(seed: u64, server: u32) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{seed}/server/{server}").as_bytes())
}

fn zone_uuid(seed: u64, server: u32, zone: u32) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{seed}/{server}/{zone}").as_bytes())
}

/// The first crash comes no later than this after start (a uniform draw
/// between the two bounds), however rare crashes are; later ones follow the
/// exponential schedule. A demo then shows a fault within seconds, at the cost
/// of one early crash in a long run.
const FIRST_CRASH_WINDOW: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(20));

/// How far apart a server's zones go down when the server shuts down, and
/// how far apart they come back when it boots.
const SERVER_SPREAD: Duration = Duration::from_secs(3);

/// The shortest mean time between arrivals of a cloud-wide process.
const SHORTEST_MEAN: Duration = Duration::from_millis(1);

/// Random picks tried before a reboot or crash gives up on finding a zone that
/// is not already going through something (only likely in tiny clouds).
const PICK_TRIES: u32 = 3;

/// The simulated cloud's state and schedule. Driven by elapsed time, never by
/// the wall clock, so tests can run it at any speed.
pub struct SimCloud {
    seed: u64,
    zones_per_server: u32,
    servers: Vec<SimServer>,
    /// Indexed by `server * zones_per_server + zone`: 18 bytes a zone.
    zones: Vec<SimZone>,
    owner: Uuid,
    reboot_every: Duration,
    crash_every: Duration,
    crash_downtime: Duration,
    server_shutdown_every: Duration,
    rng: StdRng,
    /// Simulated time reached by the last `advance`.
    now: Duration,
    schedule: BinaryHeap<Reverse<Step>>,
    /// Breaks ties between steps due at the same instant in the order they
    /// were scheduled, so the story does not depend on heap internals.
    next_seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct SimZone {
    uuid: Uuid,
    state: ZoneState,
    /// Set while a sequence of steps is scheduled for the zone, so a second
    /// reboot or crash cannot interleave with the first.
    busy: bool,
}

#[derive(Debug)]
struct Step {
    at: Duration,
    seq: u64,
    action: Action,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// The zone reports `new` (its current state is the old one). Entering
    /// `running` ends every sequence and frees the zone.
    Zone {
        zone: u32,
        new: ZoneState,
    },
    /// The next arrival of a cloud-wide process: it picks its victim when it
    /// fires and schedules the arrival after it.
    Reboot,
    Crash,
    ServerShutdown,
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Step {}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Step {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

// Not derived: printing 100,000 zones would swamp any log line.
impl fmt::Debug for SimCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimCloud")
            .field("seed", &self.seed)
            .field("servers", &self.servers.len())
            .field("zones", &self.zones.len())
            .field("now", &self.now)
            .field("scheduled_steps", &self.schedule.len())
            .finish()
    }
}

impl SimCloud {
    /// Builds the cloud with every zone `running`.
    ///
    /// # Panics
    ///
    /// If `servers × zones_per_server` does not fit in a `u32` (the
    /// configuration should bound it far below that).
    pub fn new(config: &SimConfig) -> SimCloud {
        let total = config
            .servers
            .checked_mul(config.zones_per_server)
            .expect("simulated cloud has more than u32::MAX zones");
        let seed = config.seed;
        let servers = (0..config.servers)
            .map(|s| SimServer {
                uuid: server_uuid(seed, s),
                hostname: format!("cn-{}", s + 1),
            })
            .collect();
        let mut zones = Vec::with_capacity(total as usize);
        for s in 0..config.servers {
            zones.extend((0..config.zones_per_server).map(|z| SimZone {
                uuid: zone_uuid(seed, s, z),
                state: ZoneState::Running,
                busy: false,
            }));
        }
        let mut cloud = SimCloud {
            seed,
            zones_per_server: config.zones_per_server,
            servers,
            zones,
            owner: demo_owner(seed),
            reboot_every: config.reboot_every,
            crash_every: config.crash_every,
            crash_downtime: config.crash_downtime,
            server_shutdown_every: config.server_shutdown_every,
            rng: StdRng::seed_from_u64(seed),
            now: Duration::ZERO,
            schedule: BinaryHeap::new(),
            next_seq: 0,
        };
        if total > 0 {
            cloud.schedule_arrival(Action::Reboot, Duration::ZERO);
            if let Some(first) = cloud.exponential(cloud.crash_every) {
                let cap = cloud.between(FIRST_CRASH_WINDOW.0, FIRST_CRASH_WINDOW.1);
                cloud.push(first.min(cap), Action::Crash);
            }
            cloud.schedule_arrival(Action::ServerShutdown, Duration::ZERO);
        }
        cloud
    }

    pub fn servers(&self) -> Vec<SimServer> {
        self.servers.clone()
    }

    /// Every zone with its server, as a startup snapshot.
    pub fn snapshot(&self) -> Vec<(Uuid, ZoneSnapshot)> {
        (0..self.zones.len())
            .map(|index| {
                let index = index as u32;
                let zone = &self.zones[index as usize];
                let snapshot = ZoneSnapshot {
                    zonename: zone.uuid.to_string(),
                    state: zone.state,
                    meta: self.meta(index),
                };
                (self.server_of(index).uuid, snapshot)
            })
            .collect()
    }

    /// Moves the simulation to `elapsed` since start and returns what happened
    /// in between, in order. Time never goes back: an `elapsed` before the
    /// last one returns nothing.
    pub fn advance(&mut self, elapsed: Duration) -> Vec<SimEvent> {
        let mut events = Vec::new();
        // Steps scheduled while handling a step are never earlier than it, so
        // popping in heap order keeps the events in time order.
        while self.schedule.peek().is_some_and(|Reverse(step)| step.at <= elapsed) {
            let Some(Reverse(step)) = self.schedule.pop() else {
                break;
            };
            match step.action {
                Action::Zone { zone, new } => events.push(self.enter(zone, new)),
                Action::Reboot => {
                    if let Some(zone) = self.pick_idle_zone() {
                        let down = self.halt(zone, step.at);
                        let gap = self.between(Duration::from_millis(500), Duration::from_secs(2));
                        self.boot(zone, down.saturating_add(gap));
                    }
                    self.schedule_arrival(Action::Reboot, step.at);
                }
                Action::Crash => {
                    if let Some(zone) = self.pick_idle_zone() {
                        let down = self.halt(zone, step.at);
                        self.boot(zone, down.saturating_add(self.crash_downtime));
                    }
                    self.schedule_arrival(Action::Crash, step.at);
                }
                Action::ServerShutdown => {
                    self.shut_down_server(step.at);
                    self.schedule_arrival(Action::ServerShutdown, step.at);
                }
            }
        }
        self.now = self.now.max(elapsed);
        events
    }

    fn enter(&mut self, index: u32, new: ZoneState) -> SimEvent {
        let zone = &mut self.zones[index as usize];
        let old = std::mem::replace(&mut zone.state, new);
        if new == ZoneState::Running {
            zone.busy = false;
        }
        let zonename = zone.uuid.to_string();
        SimEvent {
            server: self.server_of(index).uuid,
            event: ZoneEvent::State {
                zonename,
                old: Some(old),
                new,
                time: None,
                meta: self.meta(index),
            },
        }
    }

    /// Schedules the kernel's halt sequence from `start`: running →
    /// shutting_down, sometimes repeated (the kernel maps empty/down/dying all
    /// to shutting_down), → uninitialized. Marks the zone busy and returns
    /// when it reaches uninitialized.
    fn halt(&mut self, zone: u32, start: Duration) -> Duration {
        self.zones[zone as usize].busy = true;
        self.push(
            start,
            Action::Zone {
                zone,
                new: ZoneState::ShuttingDown,
            },
        );
        let mut at = start;
        if self.rng.gen_bool(0.5) {
            for _ in 0..self.rng.gen_range(1..=3) {
                at = at.saturating_add(self.between(Duration::from_millis(100), Duration::from_millis(500)));
                self.push(
                    at,
                    Action::Zone {
                        zone,
                        new: ZoneState::ShuttingDown,
                    },
                );
            }
        }
        // With the boot's timings below, a reboot (halt + boot) takes 5–15 s.
        let down = start.saturating_add(self.between(Duration::from_secs(1), Duration::from_secs(4)));
        let down = down.max(at.saturating_add(Duration::from_millis(100)));
        self.push(
            down,
            Action::Zone {
                zone,
                new: ZoneState::Uninitialized,
            },
        );
        down
    }

    /// Schedules the kernel's boot sequence from `start`: uninitialized →
    /// initialized → ready, sometimes ready again (booting shows as ready),
    /// → running, which frees the zone.
    fn boot(&mut self, zone: u32, start: Duration) {
        self.push(
            start,
            Action::Zone {
                zone,
                new: ZoneState::Initialized,
            },
        );
        let mut at = start.saturating_add(self.between(Duration::from_millis(100), Duration::from_millis(500)));
        self.push(
            at,
            Action::Zone {
                zone,
                new: ZoneState::Ready,
            },
        );
        if self.rng.gen_bool(0.5) {
            at = at.saturating_add(self.between(Duration::from_millis(100), Duration::from_secs(1)));
            self.push(
                at,
                Action::Zone {
                    zone,
                    new: ZoneState::Ready,
                },
            );
        }
        at = at.saturating_add(self.between(Duration::from_millis(3500), Duration::from_millis(7500)));
        self.push(
            at,
            Action::Zone {
                zone,
                new: ZoneState::Running,
            },
        );
    }

    /// Every idle zone of one random server goes down within a few seconds
    /// and boots after `crash_downtime`. Zones already rebooting or down are
    /// left to finish what they are doing.
    fn shut_down_server(&mut self, at: Duration) {
        if self.servers.is_empty() || self.zones_per_server == 0 {
            return;
        }
        let server = self.rng.gen_range(0..self.servers.len() as u32);
        let first = server * self.zones_per_server;
        for zone in first..first + self.zones_per_server {
            if self.zones[zone as usize].busy {
                continue;
            }
            let start = at.saturating_add(self.between(Duration::ZERO, SERVER_SPREAD));
            let down = self.halt(zone, start);
            let boot_at = down
                .saturating_add(self.crash_downtime)
                .saturating_add(self.between(Duration::ZERO, SERVER_SPREAD));
            self.boot(zone, boot_at);
        }
    }

    fn pick_idle_zone(&mut self) -> Option<u32> {
        if self.zones.is_empty() {
            return None;
        }
        (0..PICK_TRIES)
            .map(|_| self.rng.gen_range(0..self.zones.len() as u32))
            .find(|&zone| !self.zones[zone as usize].busy)
    }

    /// Schedules the next arrival of a cloud-wide process after `after`;
    /// a process whose mean is zero never arrives.
    fn schedule_arrival(&mut self, action: Action, after: Duration) {
        let mean = match action {
            Action::Reboot => self.reboot_every,
            Action::Crash => self.crash_every,
            Action::ServerShutdown => self.server_shutdown_every,
            Action::Zone { .. } => return,
        };
        // An arrival beyond the end of time never comes; saturating instead
        // would let `advance(Duration::MAX)` reschedule it forever.
        if let Some(at) = self.exponential(mean).and_then(|wait| after.checked_add(wait)) {
            self.push(at, action);
        }
    }

    /// A draw from the exponential distribution with this mean: the waiting
    /// time of a Poisson process. `None` for a zero mean. Means below
    /// [`SHORTEST_MEAN`] count as that, so a mistyped rate cannot turn
    /// `advance` into a loop over billions of arrivals.
    fn exponential(&mut self, mean: Duration) -> Option<Duration> {
        if mean.is_zero() {
            return None;
        }
        let mean = mean.max(SHORTEST_MEAN);
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u: f64 = self.rng.gen();
        let wait = -(1.0 - u).ln() * mean.as_secs_f64();
        Some(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        self.rng.gen_range(low..=high)
    }

    fn push(&mut self, at: Duration, action: Action) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.schedule.push(Reverse(Step { at, seq, action }));
    }

    fn server_of(&self, zone: u32) -> &SimServer {
        &self.servers[(zone / self.zones_per_server) as usize]
    }

    fn meta(&self, zone: u32) -> ZoneMeta {
        let (server, index) = (zone / self.zones_per_server, zone % self.zones_per_server);
        ZoneMeta {
            alias: Some(format!("cn{}-zone{}", server + 1, index + 1)),
            owner: Some(self.owner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use ZoneState::*;

    fn config(servers: u32, zones_per_server: u32) -> SimConfig {
        SimConfig {
            servers,
            zones_per_server,
            seed: 42,
            reboot_every: Duration::ZERO,
            crash_every: Duration::ZERO,
            crash_downtime: Duration::from_secs(60),
            server_shutdown_every: Duration::ZERO,
        }
    }

    /// Runs the cloud in 100 ms ticks up to `until`, stamping each event with
    /// the tick it came out of.
    fn run(cloud: &mut SimCloud, until: Duration) -> Vec<(Duration, SimEvent)> {
        let tick = Duration::from_millis(100);
        let mut out = Vec::new();
        let mut now = cloud.now;
        while now < until {
            now += tick;
            out.extend(cloud.advance(now).into_iter().map(|e| (now, e)));
        }
        out
    }

    fn states(event: &SimEvent) -> (&str, Option<ZoneState>, ZoneState) {
        match &event.event {
            ZoneEvent::State { zonename, old, new, .. } => (zonename, *old, *new),
            other => panic!("the sim only reports states, got {other:?}"),
        }
    }

    /// Per zone: each (left running, came back) pair of tick times.
    fn outages(events: &[(Duration, SimEvent)]) -> HashMap<String, Vec<(Duration, Option<Duration>)>> {
        let mut outages: HashMap<String, Vec<(Duration, Option<Duration>)>> = HashMap::new();
        for (at, event) in events {
            let (zone, old, new) = states(event);
            if old == Some(Running) {
                outages.entry(zone.to_owned()).or_default().push((*at, None));
            } else if new == Running {
                outages.get_mut(zone).unwrap().last_mut().unwrap().1 = Some(*at);
            }
        }
        outages
    }

    #[test]
    fn same_seed_gives_the_same_cloud_and_story() {
        let mut c = config(3, 20);
        c.reboot_every = Duration::from_secs(5);
        c.crash_every = Duration::from_secs(20);
        c.server_shutdown_every = Duration::from_secs(120);
        let mut a = SimCloud::new(&c);
        let mut b = SimCloud::new(&c);
        assert_eq!(a.servers(), b.servers());
        assert_eq!(a.snapshot(), b.snapshot());
        let events_a = run(&mut a, Duration::from_secs(600));
        let events_b = run(&mut b, Duration::from_secs(600));
        assert!(events_a.len() > 100, "only {} events", events_a.len());
        assert_eq!(events_a, events_b);

        // One big step tells the same story as many small ones.
        let mut c2 = SimCloud::new(&c);
        let at_once = c2.advance(Duration::from_secs(600));
        assert_eq!(at_once, events_a.into_iter().map(|(_, e)| e).collect::<Vec<_>>());

        let other = SimCloud::new(&SimConfig { seed: 43, ..c });
        assert_ne!(other.snapshot()[0].1.zonename, a.snapshot()[0].1.zonename);
        assert_ne!(demo_owner(42), demo_owner(43));
    }

    #[test]
    fn servers_and_zones_are_named_for_the_demo() {
        let cloud = SimCloud::new(&config(2, 3));
        let servers = cloud.servers();
        assert_eq!(
            servers.iter().map(|s| s.hostname.as_str()).collect::<Vec<_>>(),
            ["cn-1", "cn-2"]
        );
        let snapshot = cloud.snapshot();
        assert_eq!(snapshot.len(), 6);
        let (server, zone) = &snapshot[5];
        assert_eq!(*server, servers[1].uuid);
        assert_eq!(zone.state, Running);
        assert_eq!(zone.meta.alias.as_deref(), Some("cn2-zone3"));
        assert_eq!(zone.meta.owner, Some(demo_owner(42)));
        assert_eq!(zone.zonename, zone_uuid(42, 1, 2).to_string());
        let mut names: Vec<_> = snapshot.iter().map(|(_, z)| z.zonename.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 6);
    }

    #[test]
    fn a_reboot_goes_through_the_kernel_states_back_to_running_in_5_to_15_s() {
        let mut c = config(2, 50);
        c.reboot_every = Duration::from_secs(3);
        let mut cloud = SimCloud::new(&c);
        let events = run(&mut cloud, Duration::from_secs(900));
        // Let every reboot in flight finish; no new ones start after this.
        cloud.reboot_every = Duration::ZERO;
        cloud.schedule.retain(|Reverse(s)| !matches!(s.action, Action::Reboot));
        let tail = run(&mut cloud, Duration::from_secs(930));
        let events: Vec<_> = events.into_iter().chain(tail).collect();

        let mut last: HashMap<&str, ZoneState> = HashMap::new();
        let mut repeats = 0;
        for (_, event) in &events {
            let (zone, old, new) = states(event);
            let old = old.unwrap();
            // Each event's old state is what the zone last reported.
            assert_eq!(old, *last.get(zone).unwrap_or(&Running), "{zone}");
            let allowed: &[ZoneState] = match old {
                Running => &[ShuttingDown],
                ShuttingDown => &[ShuttingDown, Uninitialized],
                Uninitialized => &[Initialized],
                Initialized => &[Ready],
                Ready => &[Ready, Running],
                other => panic!("unexpected state {other}"),
            };
            assert!(allowed.contains(&new), "{old} -> {new}");
            repeats += usize::from(old == new);
            last.insert(zone, new);
        }
        assert!(repeats > 0, "no same-state repeats");
        assert!(last.values().all(|s| *s == Running));

        let outages = outages(&events);
        let count: usize = outages.values().map(Vec::len).sum();
        assert!(count > 200, "only {count} reboots");
        for (down, up) in outages.values().flatten() {
            let took = up.expect("every reboot finishes") - *down;
            assert!(
                took >= Duration::from_secs(5) && took <= Duration::from_millis(15_100),
                "{took:?}"
            );
        }
    }

    #[test]
    fn a_crashed_zone_stays_down_for_the_crash_downtime() {
        let mut c = config(1, 1);
        c.crash_every = Duration::from_secs(3600);
        let mut cloud = SimCloud::new(&c);
        let events = run(&mut cloud, Duration::from_secs(120));
        let outages = outages(&events);
        let [(down, up)] = outages.values().next().unwrap()[..] else {
            panic!("expected one crash: {outages:?}");
        };
        // The first crash comes early even though crashes are rare.
        assert!(down <= FIRST_CRASH_WINDOW.1 + Duration::from_millis(100), "{down:?}");
        let took = up.unwrap() - down;
        assert!(
            took >= Duration::from_secs(60) && took <= Duration::from_secs(75),
            "{took:?}"
        );
        // It lies uninitialized for exactly the downtime, then boots.
        let (halted, _) = events.iter().find(|(_, e)| states(e).2 == Uninitialized).unwrap();
        let (booting, _) = events.iter().find(|(_, e)| states(e).2 == Initialized).unwrap();
        let lay = *booting - *halted;
        assert!(
            lay >= Duration::from_millis(59_900) && lay <= Duration::from_millis(60_100),
            "{lay:?}"
        );
    }

    #[test]
    fn a_server_shutdown_takes_all_its_zones_down_and_back() {
        let mut c = config(3, 20);
        c.server_shutdown_every = Duration::from_secs(600);
        c.crash_downtime = Duration::from_secs(30);
        let mut cloud = SimCloud::new(&c);
        let events = run(&mut cloud, Duration::from_secs(3600));
        let first = events.first().expect("a server shut down within an hour");
        let victim = first.1.server;
        let window: Vec<_> = events
            .iter()
            .filter(|(at, _)| *at < first.0 + Duration::from_secs(60))
            .collect();
        let downs: Vec<_> = window.iter().filter(|(_, e)| states(e).1 == Some(Running)).collect();
        assert_eq!(downs.len(), 20);
        // Ticks round event times up by at most one 100 ms tick.
        let latest = first.0 + SERVER_SPREAD + Duration::from_millis(100);
        assert!(downs.iter().all(|(at, e)| e.server == victim && *at <= latest));
        let ups = window.iter().filter(|(_, e)| states(e).2 == Running).count();
        assert_eq!(ups, 20);
    }

    #[test]
    fn zero_rates_mean_nothing_ever_happens() {
        let mut cloud = SimCloud::new(&config(4, 25));
        assert!(cloud.schedule.is_empty());
        assert!(cloud.advance(Duration::from_secs(86_400 * 365)).is_empty());
        assert!(cloud.snapshot().iter().all(|(_, z)| z.state == Running));
    }

    #[test]
    fn an_empty_cloud_is_fine() {
        let mut c = config(0, 10);
        c.reboot_every = Duration::from_secs(1);
        c.server_shutdown_every = Duration::from_secs(1);
        let mut cloud = SimCloud::new(&c);
        assert!(cloud.advance(Duration::from_secs(100)).is_empty());
        let mut cloud = SimCloud::new(&SimConfig {
            servers: 2,
            zones_per_server: 0,
            ..c
        });
        assert!(cloud.advance(Duration::from_secs(100)).is_empty());
    }

    #[test]
    fn advancing_to_the_end_of_time_terminates() {
        let mut c = config(2, 2);
        c.reboot_every = Duration::from_secs(u64::MAX / 4);
        c.crash_every = Duration::from_secs(u64::MAX / 4);
        c.crash_downtime = Duration::MAX;
        let mut cloud = SimCloud::new(&c);
        let _ = cloud.advance(Duration::MAX);
        assert!(cloud.advance(Duration::MAX).is_empty());
    }

    #[test]
    fn time_going_back_returns_nothing() {
        let mut c = config(1, 10);
        c.reboot_every = Duration::from_secs(1);
        let mut cloud = SimCloud::new(&c);
        assert!(!cloud.advance(Duration::from_secs(60)).is_empty());
        assert!(cloud.advance(Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn huge_rates_and_downtimes_do_not_overflow() {
        let mut c = config(1, 2);
        c.reboot_every = Duration::MAX;
        c.crash_every = Duration::from_nanos(1);
        c.crash_downtime = Duration::MAX;
        c.server_shutdown_every = Duration::from_secs(u64::MAX / 2);
        let mut cloud = SimCloud::new(&c);
        let events = cloud.advance(Duration::from_secs(60));
        // Both zones crash and never come back.
        assert!(events.iter().all(|e| states(e).2 != Running));
        assert!(cloud.snapshot().iter().all(|(_, z)| z.state == Uninitialized));
    }

    #[test]
    fn a_hundred_thousand_zones_build_and_run() {
        let mut c = config(100, 1000);
        c.reboot_every = Duration::from_millis(100);
        c.crash_every = Duration::from_secs(1);
        c.server_shutdown_every = Duration::from_secs(30);
        let mut cloud = SimCloud::new(&c);
        assert_eq!(cloud.snapshot().len(), 100_000);
        assert_eq!(std::mem::size_of::<SimZone>(), 18);
        let events = run(&mut cloud, Duration::from_secs(60));
        assert!(events.len() > 1000, "only {} events", events.len());
    }
}
