//! The simulated fleet and the zone lines that describe it: S compute nodes ×
//! Z zones owned by A accounts, spread over R relays, and each transition
//! rendered as one line of a real SmartOS format (`zoneevent`, `vmadm events
//! -j`, `sysevent -j`; each server prints one of them, in turn), prefixed with
//! its server's uuid (the relay's `relay.zones.server_tag`). Pure: no I/O,
//! no clock; the scenarios decide when a line is written.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Names every uuid the harness makes, so a seed gives the same fleet.
const NAMESPACE: Uuid = Uuid::from_u128(0x616d6f6e_6c6f_6164_8000_000000000001);

/// The zone-event format a simulated server prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// vminfod-based `zoneevent` (epoch nanoseconds as a string).
    Zoneevent,
    /// `vmadm events -j` modify events with a `zone_state` change.
    Vmadm,
    /// `sysevent -j` zone status envelopes.
    Sysevent,
}

const FORMATS: [Format; 3] = [Format::Zoneevent, Format::Vmadm, Format::Sysevent];

#[derive(Debug, Clone)]
pub struct Server {
    pub uuid: Uuid,
    /// Index of the relay process that carries this server.
    pub relay: usize,
    pub format: Format,
}

#[derive(Debug, Clone)]
pub struct Zone {
    pub uuid: Uuid,
    pub alias: String,
    /// Index into `Fleet::servers`.
    pub server: usize,
    /// Index into `Fleet::accounts`.
    pub owner: usize,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub uuid: Uuid,
    pub login: String,
    pub email: String,
}

/// Every simulated server, zone and account.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub servers: Vec<Server>,
    pub zones: Vec<Zone>,
    pub accounts: Vec<Account>,
    pub relays: usize,
}

impl Fleet {
    /// `servers × zones_per_server` zones; zone `z` of every server belongs to
    /// account `z % accounts`, so every account has machines on every server
    /// (each server-down email then has a list per account); servers go to
    /// relays round-robin.
    pub fn new(seed: u64, servers: usize, zones_per_server: usize, accounts: usize, relays: usize) -> Fleet {
        let id = |what: String| Uuid::new_v5(&NAMESPACE, format!("{seed}/{what}").as_bytes());
        let relays = relays.clamp(1, servers.max(1));
        let accounts: Vec<Account> = (0..accounts.max(1))
            .map(|a| Account {
                uuid: id(format!("account/{a}")),
                login: format!("load{a}"),
                email: format!("load{a}@load.invalid"),
            })
            .collect();
        let servers: Vec<Server> = (0..servers)
            .map(|s| Server {
                uuid: id(format!("server/{s}")),
                relay: s % relays,
                format: FORMATS[s % FORMATS.len()],
            })
            .collect();
        let mut zones = Vec::with_capacity(servers.len() * zones_per_server);
        for s in 0..servers.len() {
            for z in 0..zones_per_server {
                zones.push(Zone {
                    uuid: id(format!("zone/{s}/{z}")),
                    alias: format!("cn{s}-z{z}"),
                    server: s,
                    owner: z % accounts.len(),
                });
            }
        }
        Fleet {
            servers,
            zones,
            accounts,
            relays,
        }
    }

    /// Zones of server `s`, as indexes into `zones`.
    pub fn zones_of(&self, server: usize) -> std::ops::Range<usize> {
        let per = self.zones.len() / self.servers.len().max(1);
        server * per..(server + 1) * per
    }

    /// Servers carried by relay `r`.
    pub fn servers_of_relay(&self, relay: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.servers.len()).filter(move |&s| self.servers[s].relay == relay)
    }

    /// A `vmadm events -j` `ready` line listing every zone of server `s` as
    /// running, with alias and owner: the relay's baseline (no events).
    pub fn snapshot_line(&self, server: usize, at: DateTime<Utc>) -> String {
        let mut vms = Map::new();
        for z in self.zones_of(server) {
            let zone = &self.zones[z];
            vms.insert(
                zone.uuid.to_string(),
                json!({
                    "uuid": zone.uuid,
                    "alias": zone.alias,
                    "owner_uuid": self.accounts[zone.owner].uuid,
                    "zone_state": "running",
                    "state": "running",
                }),
            );
        }
        let line = json!({
            "type": "ready",
            "date": rfc3339(at),
            "uuid": NAMESPACE,
            "vms": Value::Object(vms),
        });
        format!("{} {line}\n", self.servers[server].uuid)
    }

    /// One zone going down (`up == false`: running → shutting_down) or up
    /// (ready → running), in its server's format, tagged with the server.
    pub fn transition_line(&self, zone: usize, up: bool, at: DateTime<Utc>) -> String {
        let z = &self.zones[zone];
        let server = &self.servers[z.server];
        let (old, new) = if up {
            ("ready", "running")
        } else {
            ("running", "shutting_down")
        };
        let line = match server.format {
            Format::Zoneevent => json!({
                "zonename": z.uuid, "oldstate": old, "newstate": new, "zoneid": (zone % 9000 + 2).to_string(),
                "when": at.timestamp_nanos_opt().unwrap_or_default().to_string(),
            }),
            Format::Vmadm => json!({
                "type": "modify", "date": rfc3339(at), "zonename": z.uuid, "uuid": z.uuid,
                "vm": {"uuid": z.uuid, "alias": z.alias, "owner_uuid": self.accounts[z.owner].uuid,
                       "zone_state": new, "state": if up { "running" } else { "stopping" }},
                "changes": [{"prettyPath": "zone_state", "path": ["zone_state"], "action": "changed",
                             "oldValue": old, "newValue": new}],
            }),
            Format::Sysevent => json!({
                "date": rfc3339(at), "type": "event", "vendor": "SUNW", "publisher": "zoneadmd",
                "class": "status", "subclass": "change", "pid": 4242, "channel": "com.sun:zones:status",
                "data": {"zonename": z.uuid, "oldstate": old, "newstate": new,
                         "zoneid": zone as u64 % 9000 + 2, "when": 1_000_000_000u64},
            }),
        };
        format!("{} {line}\n", server.uuid)
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
    }

    #[test]
    fn every_account_owns_zones_on_every_server_and_relays_share_servers() {
        let fleet = Fleet::new(1, 5, 10, 3, 2);
        assert_eq!(fleet.zones.len(), 50);
        for s in 0..5 {
            let owners: std::collections::BTreeSet<usize> = fleet.zones_of(s).map(|z| fleet.zones[z].owner).collect();
            assert_eq!(owners.len(), 3, "server {s}");
            assert!(fleet.zones_of(s).all(|z| fleet.zones[z].server == s));
        }
        assert_eq!(fleet.servers_of_relay(0).collect::<Vec<_>>(), vec![0, 2, 4]);
        assert_eq!(fleet.servers_of_relay(1).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn the_same_seed_gives_the_same_fleet() {
        assert_eq!(
            Fleet::new(7, 2, 2, 1, 1).zones[3].uuid,
            Fleet::new(7, 2, 2, 1, 1).zones[3].uuid
        );
        assert_ne!(
            Fleet::new(7, 2, 2, 1, 1).zones[3].uuid,
            Fleet::new(8, 2, 2, 1, 1).zones[3].uuid
        );
    }

    /// The lines are parsed by the relay's own parser: every format the fleet
    /// prints must say the transition it means.
    #[test]
    fn lines_parse_as_the_transitions_they_mean() {
        use amon::zones::{parse_line, LineFormat, ZoneEvent, ZoneState};
        let fleet = Fleet::new(1, 3, 2, 1, 1);
        for server in 0..3 {
            let zone = fleet.zones_of(server).start;
            for up in [false, true] {
                let line = fleet.transition_line(zone, up, at());
                let (tag, rest) = line.trim_end().split_once(' ').unwrap();
                assert_eq!(tag, fleet.servers[server].uuid.to_string());
                match parse_line(rest, LineFormat::Auto).unwrap() {
                    Some(ZoneEvent::State { zonename, new, .. }) => {
                        assert_eq!(zonename, fleet.zones[zone].uuid.to_string());
                        assert_eq!(
                            new,
                            if up {
                                ZoneState::Running
                            } else {
                                ZoneState::ShuttingDown
                            }
                        );
                    }
                    other => panic!("{:?}: {other:?}", fleet.servers[server].format),
                }
            }
        }
        let snapshot = fleet.snapshot_line(1, at());
        let (_, rest) = snapshot.trim_end().split_once(' ').unwrap();
        match parse_line(rest, LineFormat::Auto).unwrap() {
            Some(ZoneEvent::Snapshot(zones)) => {
                assert_eq!(zones.len(), 2);
                assert!(zones.iter().all(|z| z.meta.owner == Some(fleet.accounts[0].uuid)));
            }
            other => panic!("{other:?}"),
        }
    }
}
