//! Databases at every earlier schema version, with data in them: the files
//! in `tests/fixtures/schema/` (`master-v{k}.sqlite`, `relay-v{k}.sqlite`).
//! Each was made by applying exactly the first k migrations to an empty
//! database and writing rows the way the build at version k wrote them
//! (its columns, and JSON bodies in the shapes of its time). A test per
//! file opens a copy with today's build, which migrates it, and reads every
//! row back through the store's API with its values: a migration that loses
//! or garbles data, or a model change that can no longer read an old body,
//! fails here. The files stand for databases in the field, so they are made
//! once and never remade: `write_missing_schema_fixtures` writes only the
//! ones missing (see `tests/fixtures/README.md`).
//!
//! The data set is written down once, below, as today's model values for a
//! given version; the writer turns them into the rows of that version.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde_json::Value;
use uuid::Uuid;

use super::maintenance::window_owner;
use super::tests::{fixture_copy, user_version};
use super::{db, schema, AlarmLookup, InventoryRecord, Lookup, MachineRecord, RelayStore, Store, ZoneRecord};
use crate::model::{
    Account, Alarm, Contact, EpochMs, Event, Fault, MachineEvent, MaintenanceScope, MaintenanceWindow, Medium, Probe,
    ProbeEvent, ProbeEventData, ProbeGroup, ProbeType, ServerEvent, ServerEventKind,
};
use crate::notify::{
    ContactAddress, Incident, IncidentMachine, IncidentReason, MachineRef, Notification, NotificationKind, ProbeRef,
};
use crate::zones::ZoneState;

// ---- the schema versions that brought what the data set holds ----

/// The builds at version 3 (the flood guard, then the rate limit): faults
/// have `folded` and notifications `incident` in their JSON, probes may
/// have a `hold` and `renotify`, and the outbox has digests.
const FLOOD_GUARD: usize = 3;
const AGENT_COLUMN: usize = 3;
const GROUPS_AND_CONTACTS: usize = 4;
const WINDOWS: usize = 5;
const MACHINES: usize = 6;
const EVENT_COUNTS: usize = 7;
const ROUTE_MARK: usize = 8;
const TENANCY: usize = 9;
/// The first build to write `v` on machine and server events (probe events
/// always had it).
const EVENT_VERSION_ON_EVERY_EVENT: usize = 10;

// ---- the data set ----

const fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

const ALICE: Uuid = id(0xa11ce000_0000_4000_8000_000000000001);
const BOB: Uuid = id(0xb0b00000_0000_4000_8000_000000000002);
const CN7: Uuid = id(0xc0000000_0000_4000_8000_000000000007);
const CN9: Uuid = id(0xc0000000_0000_4000_8000_000000000009);
const WEB7: Uuid = id(0xe0000000_0000_4000_8000_000000000007);
const WEB8: Uuid = id(0xe0000000_0000_4000_8000_000000000008);
const WEB9: Uuid = id(0xe0000000_0000_4000_8000_000000000009);
const DB1: Uuid = id(0xd0000000_0000_4000_8000_000000000001);
const PROBE_WEB7: Uuid = id(0xf0000000_0000_4000_8000_000000000007);
const PROBE_WEB8: Uuid = id(0xf0000000_0000_4000_8000_000000000008);
const PROBE_DB1: Uuid = id(0xf0000000_0000_4000_8000_0000000000d1);
const WEB_TIER: Uuid = id(0xa0000000_0000_4000_8000_00000000000a);
const DB_TIER: Uuid = id(0xa0000000_0000_4000_8000_00000000000d);
/// The events, in arrival order (sequence numbers 1 to 5).
const EVENTS: [Uuid; 5] = [
    id(0x70000000_0000_4000_8000_000000000001),
    id(0x70000000_0000_4000_8000_000000000002),
    id(0x70000000_0000_4000_8000_000000000003),
    id(0x70000000_0000_4000_8000_000000000004),
    id(0x70000000_0000_4000_8000_000000000005),
];
/// Events of alice's closed alarm, no longer stored.
const EARLIER_EVENTS: [Uuid; 2] = [
    id(0x70000000_0000_4000_8000_0000000000e1),
    id(0x70000000_0000_4000_8000_0000000000e2),
];
const SENT: Uuid = id(0x50000000_0000_4000_8000_000000000001);
const PENDING: Uuid = id(0x50000000_0000_4000_8000_000000000002);
const DEAD: Uuid = id(0x50000000_0000_4000_8000_000000000003);
const DIGESTED: Uuid = id(0x50000000_0000_4000_8000_000000000004);
const DIGEST: Uuid = id(0x50000000_0000_4000_8000_000000000005);
const SERVER_DOWN: Uuid = id(0x50000000_0000_4000_8000_000000000006);
const INCIDENT: Uuid = id(0x1c000000_0000_4000_8000_000000000001);

/// When it all happened (November 2026).
const T: EpochMs = 1_795_000_000_000;
const YEAR_2099: EpochMs = 4_070_908_800_000;
const MASTER_URL: &str = "http://amon.coal.example.com";
/// Events up to this one were applied when the master stopped; the last
/// two were committed (and acknowledged) but not yet applied.
const APPLIED: i64 = 3;

fn accounts(version: usize) -> Vec<Account> {
    let account = |uuid, login: &str, operator| Account {
        uuid,
        login: login.into(),
        email: format!("{login}@example.com"),
        operator,
        attributes: Default::default(),
    };
    vec![
        account(ALICE, "alice", false),
        // Bob runs the cloud, once there are operators.
        account(BOB, "bob", version >= TENANCY),
    ]
}

fn machine_up(user: Uuid, uuid: Uuid, name: &str, machine: Uuid, group: Option<Uuid>) -> Probe {
    Probe {
        uuid,
        name: Some(name.into()),
        user,
        probe_type: ProbeType::MachineUp,
        agent: Some(machine),
        machine: Some(machine),
        config: Value::Null,
        contacts: vec!["email".into()],
        group,
        group_events: true,
        disabled: false,
        hold: None,
        renotify: None,
    }
}

/// By uuid.
fn probes(version: usize) -> Vec<Probe> {
    let grouped = |group| (version >= GROUPS_AND_CONTACTS).then_some(group);
    let mut web8 = machine_up(ALICE, PROBE_WEB8, "web8 up", WEB8, None);
    if version >= FLOOD_GUARD {
        web8.hold = Some(120);
        web8.renotify = Some(3_600);
    }
    vec![
        machine_up(ALICE, PROBE_WEB7, "web7 up", WEB7, grouped(WEB_TIER)),
        web8,
        machine_up(BOB, PROBE_DB1, "db1 up", DB1, grouped(DB_TIER)),
    ]
}

/// By uuid.
fn groups(version: usize) -> Vec<ProbeGroup> {
    if version < GROUPS_AND_CONTACTS {
        return Vec::new();
    }
    vec![
        ProbeGroup {
            uuid: WEB_TIER,
            name: Some("web tier".into()),
            user: ALICE,
            contacts: vec!["email".into(), "ops".into()],
            disabled: false,
            hold: None,
            renotify: None,
        },
        ProbeGroup {
            uuid: DB_TIER,
            name: Some("db tier".into()),
            user: BOB,
            contacts: vec!["hook".into()],
            disabled: false,
            hold: Some(30),
            renotify: None,
        },
    ]
}

/// By account, then name.
fn contacts(version: usize) -> Vec<(Uuid, Contact)> {
    if version < GROUPS_AND_CONTACTS {
        return Vec::new();
    }
    let contact = |name: &str, medium, address: &str| Contact {
        name: name.into(),
        medium,
        address: address.into(),
    };
    vec![
        (ALICE, contact("ops", Medium::Email, "ops@example.com")),
        (
            ALICE,
            contact("pager", Medium::Webhook, "http://hooks.example.com/amon/alice"),
        ),
        (
            BOB,
            contact("hook", Medium::Webhook, "http://hooks.example.com/amon/bob"),
        ),
    ]
}

/// As `all_windows` lists them (by owner, then id). Alice's window 2 was
/// deleted.
fn windows(version: usize) -> Vec<MaintenanceWindow> {
    if version < WINDOWS {
        return Vec::new();
    }
    vec![
        MaintenanceWindow {
            id: 1,
            user: Some(ALICE),
            start: T,
            end: Some(YEAR_2099),
            notes: Some("web9 rebuild".into()),
            scope: MaintenanceScope {
                machines: vec![WEB9],
                ..Default::default()
            },
        },
        MaintenanceWindow {
            id: 1,
            user: None,
            start: T + 100,
            end: None,
            notes: Some("cn-9 firmware".into()),
            scope: MaintenanceScope {
                servers: vec![CN9],
                ..Default::default()
            },
        },
    ]
}

/// A machine's transition as the relay on `CN7` saw it.
fn machine_event(
    uuid: Uuid,
    time: EpochMs,
    machine: Uuid,
    alias: &str,
    owner: Uuid,
    up: bool,
    version: usize,
) -> Event {
    let (old, new) = if up {
        ("shutting_down", "running")
    } else {
        ("running", "shutting_down")
    };
    Event::Machine(MachineEvent {
        v: 1,
        uuid,
        time,
        relay: CN7,
        machine,
        alias: Some(alias.into()),
        // Relays report owners since tenancy.
        owner: (version >= TENANCY).then_some(owner),
        server: CN7,
        old_state: Some(old.into()),
        new_state: new.into(),
        up,
    })
}

/// Every stored event: (sequence number, when received, event).
fn events(version: usize) -> Vec<(i64, EpochMs, Event)> {
    let events = vec![
        machine_event(EVENTS[0], T + 1_000, WEB7, "web7", ALICE, false, version),
        machine_event(EVENTS[1], T + 2_000, DB1, "db1", BOB, false, version),
        Event::Server(ServerEvent {
            v: 1,
            uuid: EVENTS[2],
            time: T + 3_000,
            relay: CN7,
            server: CN7,
            event: ServerEventKind::Heartbeat,
            hostname: Some("cn7".into()),
            agents: Vec::new(),
        }),
        Event::Probe(ProbeEvent {
            v: 1,
            user: ALICE,
            probe_uuid: PROBE_WEB8,
            clear: false,
            data: ProbeEventData {
                message: "web8 stopped answering its agent".into(),
                value: Some(serde_json::json!(3)),
                details: None,
            },
            machine: Some(WEB8),
            uuid: EVENTS[3],
            time: T + 4_000,
            agent: Some(WEB8),
            agent_alias: Some("web8".into()),
            relay: Some(CN7),
        }),
        machine_event(EVENTS[4], T + 5_000, WEB7, "web7", ALICE, true, version),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| (i as i64 + 1, e.time() + 100, e))
        .collect()
}

/// (machine, probe, server): the counts of `events`.
const EVENT_COUNTS_BY_TYPE: (u64, u64, u64) = (3, 1, 1);

/// The probe event a machine going down made, in a fault.
fn machine_down_fault(user: Uuid, probe: Uuid, machine: Uuid, alias: &str, event: Uuid, time: EpochMs) -> ProbeEvent {
    ProbeEvent {
        v: 1,
        user,
        probe_uuid: probe,
        clear: false,
        data: ProbeEventData {
            message: format!("Machine \"{machine}\" has gone down."),
            value: None,
            details: Some(serde_json::json!({"machine": machine, "newState": "shutting_down", "oldState": "running"})),
        },
        machine: Some(machine),
        uuid: event,
        time,
        agent: Some(CN7),
        agent_alias: Some(alias.into()),
        relay: Some(CN7),
    }
}

fn web7_down() -> ProbeEvent {
    machine_down_fault(ALICE, PROBE_WEB7, WEB7, "web7", EVENTS[0], T + 1_000)
}

fn db1_down() -> ProbeEvent {
    machine_down_fault(BOB, PROBE_DB1, DB1, "db1", EVENTS[1], T + 2_000)
}

/// Alice's open alarm (1) on web7 or its group, her closed one (2) on web8,
/// and Bob's open alarm (1) on db1 or its group. Alice's alarm 3 was
/// deleted. Alice's, then Bob's, newest first.
fn alarms(version: usize) -> Vec<Alarm> {
    let groups = version >= GROUPS_AND_CONTACTS;
    let on = |probe, group| {
        if groups {
            (None, Some(group))
        } else {
            (Some(probe), None)
        }
    };
    let fault = |probe, event: ProbeEvent, time_faulted| Fault {
        fault_type: "probe".into(),
        probe,
        event,
        time_faulted,
        notified: true,
        folded: false,
    };
    let (probe, probe_group) = on(PROBE_WEB7, WEB_TIER);
    let alice_open = Alarm {
        user: ALICE,
        id: 1,
        probe,
        probe_group,
        closed: false,
        suppressed: false,
        time_opened: T + 1_200,
        time_closed: None,
        time_last_event: Some(T + 1_000),
        num_events: 1,
        faults: vec![fault(PROBE_WEB7, web7_down(), T + 1_200)],
        maint_faults: Vec::new(),
        num_notifications: 1,
    };
    let alice_closed = Alarm {
        user: ALICE,
        id: 2,
        probe: Some(PROBE_WEB8),
        probe_group: None,
        closed: true,
        suppressed: false,
        time_opened: T + 500,
        time_closed: Some(T + 900),
        time_last_event: Some(T + 800),
        num_events: 2,
        faults: Vec::new(),
        maint_faults: Vec::new(),
        num_notifications: 2,
    };
    let (probe, probe_group) = on(PROBE_DB1, DB_TIER);
    let bob_open = Alarm {
        user: BOB,
        id: 1,
        probe,
        probe_group,
        closed: false,
        suppressed: true,
        time_opened: T + 2_200,
        time_closed: None,
        time_last_event: Some(T + 2_000),
        num_events: 1,
        faults: vec![fault(PROBE_DB1, db1_down(), T + 2_200)],
        maint_faults: Vec::new(),
        num_notifications: 1,
    };
    vec![alice_closed, alice_open, bob_open]
}

/// The last alarm id issued to each account.
const LAST_ALARM_IDS: [(Uuid, u64); 2] = [(ALICE, 3), (BOB, 1)];

/// A row of the outbox.
struct OutboxRow {
    notification: Notification,
    state: &'static str,
    attempts: u32,
    last_error: Option<String>,
    created: EpochMs,
}

fn probe_ref(probe: &Probe) -> ProbeRef {
    ProbeRef {
        uuid: probe.uuid,
        name: probe.name.clone(),
        probe_type: "machine-up".into(),
        group: probe.group,
    }
}

/// A notification of an alarm's fault or clear.
#[allow(clippy::too_many_arguments)]
fn alarm_notification(
    id: Uuid,
    kind: NotificationKind,
    (contact_name, contact): (&str, ContactAddress),
    account: &Account,
    alarm: u64,
    probe: &Probe,
    alias: &str,
    event: &ProbeEvent,
) -> Notification {
    Notification {
        id,
        kind,
        contact_name: contact_name.into(),
        contact,
        datacenter: "coal".into(),
        account_uuid: account.uuid,
        account_login: account.login.clone(),
        alarm_id: alarm,
        alarm_closed: kind == NotificationKind::Clear,
        alarm_fault_count: usize::from(kind == NotificationKind::Fault),
        probe: probe_ref(probe),
        machine: probe.machine.map(|uuid| MachineRef {
            uuid,
            alias: Some(alias.into()),
            server: Some(CN7),
        }),
        message: event.data.message.clone(),
        event_time: event.time,
        thread_root: None,
        master_url: MASTER_URL.into(),
        event_json: serde_json::to_value(event).expect("a probe event is json"),
        incident: None,
        digest: Vec::new(),
        alarm: None,
    }
}

/// Sent, pending (Bob's, failing), dead, and from the flood guard's build a
/// delivery folded into a digest, the digest, and a pending server
/// incident.
fn outbox(version: usize) -> Vec<OutboxRow> {
    let accounts = accounts(version);
    let (alice, bob) = (&accounts[0], &accounts[1]);
    let probes = probes(version);
    let (web7, web8, db1) = (&probes[0], &probes[1], &probes[2]);
    let alice_email = ("email", ContactAddress::Email(alice.email.clone()));
    // Events collected since.
    let web8_down = machine_down_fault(ALICE, PROBE_WEB8, WEB8, "web8", EARLIER_EVENTS[0], T + 550);
    let web8_up = ProbeEvent {
        clear: true,
        data: ProbeEventData {
            message: format!("Machine \"{WEB8}\" has come up."),
            ..web8_down.data.clone()
        },
        uuid: EARLIER_EVENTS[1],
        time: T + 800,
        ..web8_down.clone()
    };
    let groups = version >= GROUPS_AND_CONTACTS;
    let mut rows = vec![
        OutboxRow {
            notification: alarm_notification(
                SENT,
                NotificationKind::Fault,
                alice_email.clone(),
                alice,
                1,
                web7,
                "web7",
                &web7_down(),
            ),
            state: "sent",
            attempts: 1,
            last_error: None,
            created: T + 1_200,
        },
        OutboxRow {
            notification: alarm_notification(
                PENDING,
                NotificationKind::Fault,
                if groups {
                    (
                        "hook",
                        ContactAddress::Webhook("http://hooks.example.com/amon/bob".into()),
                    )
                } else {
                    ("email", ContactAddress::Email(bob.email.clone()))
                },
                bob,
                1,
                db1,
                "db1",
                &db1_down(),
            ),
            state: "pending",
            attempts: 3,
            last_error: Some(if groups {
                "cannot reach webhook http://hooks.example.com/amon/bob: connection refused".into()
            } else {
                "smtp: connection refused".into()
            }),
            created: T + 2_200,
        },
        OutboxRow {
            notification: alarm_notification(
                DEAD,
                NotificationKind::Clear,
                if groups {
                    (
                        "pager",
                        ContactAddress::Webhook("http://hooks.example.com/amon/alice".into()),
                    )
                } else {
                    alice_email.clone()
                },
                alice,
                2,
                web8,
                "web8",
                &web8_up,
            ),
            state: "dead",
            attempts: 1,
            last_error: Some(if groups {
                "webhook answered 410 Gone".into()
            } else {
                "550 5.1.1 mailbox unavailable".into()
            }),
            created: T + 900,
        },
    ];
    if version < FLOOD_GUARD {
        return rows;
    }
    let digested = alarm_notification(
        DIGESTED,
        NotificationKind::Fault,
        alice_email.clone(),
        alice,
        2,
        web8,
        "web8",
        &web8_down,
    );
    let digest = Notification {
        id: DIGEST,
        kind: NotificationKind::Digest,
        alarm_id: 0,
        alarm_closed: false,
        alarm_fault_count: 0,
        machine: None,
        message: "1 notifications held by the rate limit".into(),
        event_time: T + 700,
        event_json: Value::Null,
        digest: vec![digested.clone()],
        ..digested.clone()
    };
    let server_down = Notification {
        id: SERVER_DOWN,
        kind: NotificationKind::ServerDown,
        contact_name: "email".into(),
        contact: ContactAddress::Email(bob.email.clone()),
        alarm_id: 0,
        alarm_fault_count: 1,
        message: format!("Server {CN7} is down."),
        event_time: T + 2_500,
        event_json: Value::Null,
        incident: Some(Incident {
            id: INCIDENT,
            server: CN7,
            hostname: Some("cn7".into()),
            reason: IncidentReason::HeartbeatLost,
            opened: T + 2_500,
            returned: None,
            machines: vec![IncidentMachine {
                uuid: DB1,
                alias: Some("db1".into()),
                probe: probe_ref(db1),
                down: true,
            }],
        }),
        ..alarm_notification(
            SERVER_DOWN,
            NotificationKind::Fault,
            alice_email,
            bob,
            0,
            db1,
            "db1",
            &db1_down(),
        )
    };
    rows.extend([
        OutboxRow {
            notification: digested,
            state: "digested",
            attempts: 1,
            last_error: Some(format!("sent in digest {DIGEST}")),
            created: T + 600,
        },
        OutboxRow {
            notification: digest,
            state: "sent",
            attempts: 1,
            last_error: None,
            created: T + 700,
        },
        OutboxRow {
            notification: server_down,
            state: "pending",
            attempts: 0,
            last_error: None,
            created: T + 2_600,
        },
    ]);
    rows
}

/// The flood guard's machines, by uuid (web7's return is not applied yet).
fn machines(version: usize) -> Vec<MachineRecord> {
    if version < MACHINES {
        return Vec::new();
    }
    let machine = |uuid, alias: &str, up| MachineRecord {
        uuid,
        server: CN7,
        alias: Some(alias.into()),
        up,
    };
    vec![
        machine(DB1, "db1", false),
        machine(WEB7, "web7", false),
        machine(WEB8, "web8", true),
    ]
}

/// The inventory, by machine uuid.
fn inventory(version: usize) -> Vec<InventoryRecord> {
    if version < TENANCY {
        return Vec::new();
    }
    let record = |uuid, server, alias: &str, owner| InventoryRecord {
        uuid,
        server,
        alias: Some(alias.into()),
        owner,
    };
    vec![
        record(DB1, CN7, "db1", Some(BOB)),
        record(WEB7, CN7, "web7", Some(ALICE)),
        record(WEB8, CN7, "web8", Some(ALICE)),
        record(WEB9, CN9, "web9", None),
    ]
}

fn monitor(alarm: &Alarm) -> String {
    super::monitor_column(&alarm.monitor())
}

// ---- the relay's data set ----

const RELAY_SERVER: Uuid = id(0xc0000000_0000_4000_8000_0000000000aa);
const RELAY_ZONES: [Uuid; 2] = [
    id(0xe0000000_0000_4000_8000_0000000000a1),
    id(0xe0000000_0000_4000_8000_0000000000a2),
];
const RELAY_EVENTS: [Uuid; 5] = [
    id(0x71000000_0000_4000_8000_000000000001),
    id(0x71000000_0000_4000_8000_000000000002),
    id(0x71000000_0000_4000_8000_000000000003),
    id(0x71000000_0000_4000_8000_000000000004),
    id(0x71000000_0000_4000_8000_000000000005),
];

fn relay_machine_event(uuid: Uuid, time: EpochMs, up: bool) -> Event {
    let (old, new) = if up {
        ("ready", "running")
    } else {
        ("running", "shutting_down")
    };
    Event::Machine(MachineEvent {
        v: 1,
        uuid,
        time,
        relay: RELAY_SERVER,
        machine: RELAY_ZONES[0],
        alias: Some("web-aa".into()),
        owner: Some(ALICE),
        server: RELAY_SERVER,
        old_state: Some(old.into()),
        new_state: new.into(),
        up,
    })
}

/// What the relay spooled while its master was away, oldest first.
fn spooled() -> Vec<Event> {
    vec![
        Event::Server(ServerEvent {
            v: 1,
            uuid: RELAY_EVENTS[0],
            time: T + 10_000,
            relay: RELAY_SERVER,
            server: RELAY_SERVER,
            event: ServerEventKind::Started,
            hostname: Some("cn-aa".into()),
            agents: Vec::new(),
        }),
        relay_machine_event(RELAY_EVENTS[1], T + 11_000, false),
        relay_machine_event(RELAY_EVENTS[2], T + 12_000, true),
        Event::Probe(ProbeEvent {
            v: 1,
            user: ALICE,
            probe_uuid: PROBE_WEB8,
            clear: true,
            data: ProbeEventData {
                message: "web-aa answers again".into(),
                value: None,
                details: None,
            },
            machine: Some(RELAY_ZONES[0]),
            uuid: RELAY_EVENTS[3],
            time: T + 13_000,
            agent: Some(RELAY_ZONES[0]),
            agent_alias: Some("web-aa".into()),
            relay: Some(RELAY_SERVER),
        }),
    ]
}

/// The master refused it (400) and the relay kept it.
fn dead_letter() -> Event {
    relay_machine_event(RELAY_EVENTS[4], T + 9_000, false)
}

/// By machine uuid.
fn zones() -> Vec<ZoneRecord> {
    vec![
        ZoneRecord {
            machine: RELAY_ZONES[0],
            server: RELAY_SERVER,
            state: ZoneState::Running,
            alias: Some("web-aa".into()),
            owner: Some(ALICE),
        },
        ZoneRecord {
            machine: RELAY_ZONES[1],
            server: RELAY_SERVER,
            state: ZoneState::Installed,
            alias: None,
            owner: None,
        },
    ]
}

// ---- the writer: rows as the build at each version wrote them ----

/// `value` as the build at schema `version` wrote it: today's JSON, less
/// the keys that build did not have (`git log -p src/model.rs
/// src/notify/mod.rs`; every other key has had its name and meaning since
/// version 1). The keys come out sorted (serde_json's map), not in the
/// order of the struct's fields as the builds wrote them: no reader relies
/// on the order, and the release fixture (`tests/fixtures/040829a/`) has
/// the builds' order.
fn body(value: &impl serde::Serialize, version: usize) -> String {
    let mut json = serde_json::to_value(value).expect("a model value is json");
    as_written(&mut json, version);
    json.to_string()
}

fn as_written(json: &mut Value, version: usize) {
    let Some(object) = json.as_object_mut() else {
        return;
    };
    if version < EVENT_VERSION_ON_EVERY_EVENT
        && matches!(object.get("type"), Some(t) if t == "machine" || t == "server")
    {
        object.remove("v");
    }
    if version < FLOOD_GUARD {
        object.remove("folded");
        object.remove("incident");
    }
    for nested in ["faults", "maintFaults", "digest"] {
        if let Some(Value::Array(items)) = object.get_mut(nested) {
            items.iter_mut().for_each(|item| as_written(item, version));
        }
    }
}

/// Writes the data set at schema `version` into a database that has exactly
/// its first `version` migrations.
fn write_master_rows(conn: &Connection, version: usize) -> rusqlite::Result<()> {
    for account in accounts(version) {
        conn.execute(
            "INSERT INTO accounts (uuid, login, email, created) VALUES (?1, ?2, ?3, ?4)",
            params![account.uuid.to_string(), account.login, account.email, T],
        )?;
        if version >= TENANCY {
            conn.execute(
                "UPDATE accounts SET operator = ?2 WHERE uuid = ?1",
                params![account.uuid.to_string(), account.operator],
            )?;
        }
    }
    for probe in probes(version) {
        conn.execute(
            "INSERT INTO probes (uuid, user, machine, body) VALUES (?1, ?2, ?3, ?4)",
            params![
                probe.uuid.to_string(),
                probe.user.to_string(),
                probe.machine.map(|m| m.to_string()),
                body(&probe, version)
            ],
        )?;
        if version >= AGENT_COLUMN {
            conn.execute(
                "UPDATE probes SET agent = ?2 WHERE uuid = ?1",
                params![probe.uuid.to_string(), probe.agent.map(|a| a.to_string())],
            )?;
        }
    }
    for group in groups(version) {
        conn.execute(
            "INSERT INTO probegroups (uuid, user, body) VALUES (?1, ?2, ?3)",
            params![group.uuid.to_string(), group.user.to_string(), body(&group, version)],
        )?;
    }
    for (user, contact) in contacts(version) {
        conn.execute(
            "INSERT INTO contacts (user, name, body) VALUES (?1, ?2, ?3)",
            params![user.to_string(), contact.name, body(&contact, version)],
        )?;
    }
    if version >= WINDOWS {
        for window in windows(version) {
            conn.execute(
                "INSERT INTO maintenances (owner, id, body) VALUES (?1, ?2, ?3)",
                params![window_owner(window.user), window.id as i64, body(&window, version)],
            )?;
        }
        conn.execute(
            "INSERT INTO maintenance_ids (owner, last_id) VALUES (?1, 2), ('operator', 1)",
            params![ALICE.to_string()],
        )?;
    }
    for (seq, received, event) in events(version) {
        conn.execute(
            "INSERT INTO events (uuid, time, received, body) VALUES (?1, ?2, ?3, ?4)",
            params![event.uuid().as_bytes(), event.time(), received, body(&event, version)],
        )?;
        // From version 2 to 7, an event was written unrouted and marked
        // routed once applied.
        if (2..ROUTE_MARK).contains(&version) {
            conn.execute(
                "UPDATE events SET routed = ?2 WHERE seq = ?1",
                params![seq, seq <= APPLIED],
            )?;
        }
    }
    if version >= EVENT_COUNTS {
        let (machine, probe, server) = EVENT_COUNTS_BY_TYPE;
        for (kind, n) in [("machine", machine), ("probe", probe), ("server", server)] {
            conn.execute(
                "UPDATE event_counts SET stored = ?2 WHERE type = ?1",
                params![kind, n as i64],
            )?;
        }
    }
    let alarms = alarms(version);
    if version >= ROUTE_MARK {
        conn.execute("UPDATE route_mark SET applied = ?1 WHERE id = 0", params![APPLIED])?;
        // Each open alarm's monitor applied its event.
        for (alarm, seq) in [(&alarms[1], 1), (&alarms[2], 2)] {
            conn.execute(
                "INSERT INTO monitor_marks (monitor, seq) VALUES (?1, ?2)",
                params![monitor(alarm), seq],
            )?;
        }
    }
    for (user, last) in LAST_ALARM_IDS {
        conn.execute(
            "INSERT INTO alarm_ids (user, last_id) VALUES (?1, ?2)",
            params![user.to_string(), last as i64],
        )?;
    }
    for alarm in &alarms {
        conn.execute(
            "INSERT INTO alarms (user, id, monitor, closed, time_closed, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                alarm.user.to_string(),
                alarm.id as i64,
                monitor(alarm),
                alarm.closed,
                alarm.time_closed,
                body(alarm, version)
            ],
        )?;
    }
    for row in outbox(version) {
        conn.execute(
            "INSERT INTO outbox (id, created, state, attempts, last_error, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                row.notification.id.to_string(),
                row.created,
                row.state,
                row.attempts,
                row.last_error,
                body(&row.notification, version)
            ],
        )?;
    }
    conn.execute(
        "INSERT INTO servers (uuid, hostname, last_event, last_seen) VALUES (?1, 'cn7', 'heartbeat', ?2)",
        params![CN7.to_string(), T + 3_100],
    )?;
    for machine in machines(version) {
        conn.execute(
            "INSERT INTO machines (uuid, server, alias, up, seen) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                machine.uuid.to_string(),
                machine.server.to_string(),
                machine.alias,
                machine.up,
                T + 3_000
            ],
        )?;
    }
    for record in inventory(version) {
        conn.execute(
            "INSERT INTO inventory (machine, server, owner, alias, updated) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                record.uuid.to_string(),
                record.server.to_string(),
                record.owner.map(|o| o.to_string()),
                record.alias,
                T + 3_000
            ],
        )?;
    }
    Ok(())
}

/// Writes the relay's data set at schema `version` (the relay has had one
/// version so far).
fn write_relay_rows(conn: &Connection, version: usize) -> rusqlite::Result<()> {
    for event in spooled() {
        conn.execute(
            "INSERT INTO spool (uuid, body) VALUES (?1, ?2)",
            params![event.uuid().as_bytes(), body(&event, version)],
        )?;
    }
    for zone in zones() {
        conn.execute(
            "INSERT INTO zones (machine, server, state, alias, owner) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                zone.machine.to_string(),
                zone.server.to_string(),
                zone.state.as_str(),
                zone.alias,
                zone.owner.map(|o| o.to_string())
            ],
        )?;
    }
    let refused = dead_letter();
    conn.execute(
        "INSERT INTO dead_letter (uuid, time, status, reason, body) VALUES (?1, ?2, 400, ?3, ?4)",
        params![
            refused.uuid().as_bytes(),
            T + 9_500,
            "InvalidArgument: [0].server is not a known compute node",
            body(&refused, version)
        ],
    )?;
    Ok(())
}

const FIXTURES: &str = "schema";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(FIXTURES)
}

fn master_fixture(version: usize) -> String {
    format!("master-v{version}.sqlite")
}

fn relay_fixture(version: usize) -> String {
    format!("relay-v{version}.sqlite")
}

/// The relay versions with a fixture: every earlier one, and version 1
/// while it is the only one.
fn relay_fixture_versions() -> std::ops::Range<usize> {
    1..schema::RELAY.len().max(2)
}

/// Makes `path`: an empty database, exactly `migrations`, then `rows`; one
/// self-contained file (rollback journal, no `-wal`), written under a
/// temporary name and renamed once complete.
fn write_fixture(
    path: &Path,
    migrations: &[&str],
    rows: impl FnOnce(&Connection) -> rusqlite::Result<()>,
) -> Result<(), Box<dyn std::error::Error>> {
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut conn = Connection::open(&partial)?;
    db::migrate(&mut conn, migrations)?;
    let tx = conn.transaction()?;
    rows(&tx)?;
    tx.commit()?;
    conn.execute_batch("VACUUM")?;
    drop(conn);
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// Writes the fixtures of every earlier schema version that has none yet,
/// and never touches one that exists: they stand for databases in the
/// field. Run by hand after adding a migration (`tests/fixtures/README.md`).
#[test]
#[ignore = "writes tests/fixtures/schema/; run by hand after adding a migration"]
fn write_missing_schema_fixtures() {
    let dir = fixture_dir();
    std::fs::create_dir_all(&dir).unwrap();
    type Rows = fn(&Connection, usize) -> rusqlite::Result<()>;
    let master =
        (1..schema::MASTER.len()).map(|v| (master_fixture(v), &schema::MASTER[..v], write_master_rows as Rows, v));
    let relay = relay_fixture_versions().map(|v| (relay_fixture(v), &schema::RELAY[..v], write_relay_rows as Rows, v));
    for (name, migrations, rows, version) in master.chain(relay) {
        let path = dir.join(&name);
        if path.exists() {
            println!("kept {name}");
            continue;
        }
        let written = write_fixture(&path, migrations, |conn| rows(conn, version));
        written.unwrap_or_else(|e| panic!("cannot write {name}: {e}"));
        println!("wrote {name}");
    }
}

// ---- the tests ----

/// Every table, index and trigger with its SQL.
fn schema_of(conn: &Connection) -> Vec<(String, String, Option<String>)> {
    let mut stmt = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Checks a fixture is what exactly `migrations` make, before it is opened.
fn assert_made_by(path: &Path, migrations: &[&str]) {
    assert_eq!(user_version(path), migrations.len(), "{}", path.display());
    let mut expected = Connection::open_in_memory().unwrap();
    db::migrate(&mut expected, migrations).unwrap();
    assert_eq!(
        schema_of(&Connection::open(path).unwrap()),
        schema_of(&expected),
        "{} has the schema of its migrations",
        path.display()
    );
}

#[test]
fn every_earlier_schema_version_has_a_fixture() {
    let missing: Vec<String> = (1..schema::MASTER.len())
        .map(master_fixture)
        .chain(relay_fixture_versions().map(relay_fixture))
        .filter(|name| !fixture_dir().join(name).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "no fixture for {missing:?}: write it with `cargo test --lib store::schema_fixtures::write_missing_schema_fixtures -- --ignored` \
         (tests/fixtures/README.md), and add its test"
    );
}

fn sorted<T, K: Ord>(mut items: Vec<T>, key: impl FnMut(&T) -> K) -> Vec<T> {
    items.sort_by_key(key);
    items
}

/// Opens a copy of `master-v{version}.sqlite` with today's store (which
/// migrates it) and finds every row of the data set, with its values.
async fn a_master_database_keeps_its_rows(version: usize) {
    let (_dir, path) = fixture_copy(FIXTURES, &master_fixture(version));
    assert_made_by(&path, &schema::MASTER[..version]);
    let store = Store::open(&path).unwrap();

    let accounts = accounts(version);
    assert_eq!(
        sorted(store.all_accounts().await.unwrap(), |a| a.login.clone()),
        accounts
    );
    for account in &accounts {
        assert_eq!(
            store.get_account(account.login.clone()).await.unwrap().as_ref(),
            Some(account)
        );
        assert_eq!(
            store.get_account(account.uuid.to_string()).await.unwrap().as_ref(),
            Some(account)
        );
    }

    let probes = probes(version);
    assert_eq!(sorted(store.all_probes().await.unwrap(), |p| p.uuid), probes);
    assert_eq!(store.list_probes(ALICE).await.unwrap(), probes[..2].to_vec());
    assert_eq!(
        store.get_probe(BOB, PROBE_DB1).await.unwrap().as_ref(),
        Some(&probes[2])
    );
    assert_eq!(store.get_probe(ALICE, PROBE_DB1).await.unwrap(), None, "bob's");
    // The agent column (version 3) knows the probes written before it.
    assert_eq!(store.probes_for_agent(WEB7).await.unwrap(), vec![probes[0].clone()]);

    let groups = groups(version);
    assert_eq!(sorted(store.all_groups().await.unwrap(), |g| g.uuid), groups);
    assert_eq!(
        store.list_groups(ALICE).await.unwrap(),
        groups.iter().filter(|g| g.user == ALICE).cloned().collect::<Vec<_>>()
    );
    assert_eq!(store.get_group(BOB, DB_TIER).await.unwrap().as_ref(), groups.get(1));

    let contacts = contacts(version);
    assert_eq!(
        sorted(store.all_contacts().await.unwrap(), |(user, c)| (*user, c.name.clone())),
        contacts
    );
    assert_eq!(
        store.list_contacts(ALICE).await.unwrap(),
        contacts
            .iter()
            .filter(|(user, _)| *user == ALICE)
            .map(|(_, c)| c.clone())
            .collect::<Vec<_>>()
    );

    let another_window = MaintenanceWindow {
        id: 0,
        end: None,
        ..windows(WINDOWS).remove(0)
    };
    let windows = windows(version);
    assert_eq!(store.all_windows().await.unwrap(), windows);
    let window = |user, id| {
        let store = store.clone();
        async move { store.get_window(user, id).await.unwrap() }
    };
    if version >= WINDOWS {
        assert_eq!(window(Some(ALICE), 1).await, Lookup::Found(windows[0].clone()));
        assert_eq!(window(None, 1).await, Lookup::Found(windows[1].clone()));
        assert_eq!(window(Some(ALICE), 2).await, Lookup::Gone, "deleted");
        assert_eq!(window(Some(ALICE), 3).await, Lookup::NotFound);
    } else {
        assert_eq!(window(Some(ALICE), 1).await, Lookup::NotFound);
    }

    let alarms = alarms(version);
    let (alice_closed, alice_open, bob_open) = (&alarms[0], &alarms[1], &alarms[2]);
    assert_eq!(store.list_alarms(ALICE).await.unwrap(), alarms[..2].to_vec());
    assert_eq!(store.list_alarms(BOB).await.unwrap(), vec![bob_open.clone()]);
    assert_eq!(
        store.get_alarm(ALICE, 2).await.unwrap(),
        AlarmLookup::Found(alice_closed.clone())
    );
    assert_eq!(store.get_alarm(ALICE, 3).await.unwrap(), AlarmLookup::Gone, "deleted");
    assert_eq!(store.get_alarm(ALICE, 4).await.unwrap(), AlarmLookup::NotFound);
    for open in [alice_open, bob_open] {
        assert_eq!(store.open_alarm(open.monitor()).await.unwrap().as_ref(), Some(open));
    }
    assert_eq!(
        sorted(store.monitors_with_open_alarms().await.unwrap(), |m| m.user()),
        vec![alice_open.monitor(), bob_open.monitor()]
    );
    assert_eq!(store.open_alarm_count().await.unwrap(), 2);
    assert_eq!(
        store.all_alarms(true).await.unwrap().len(),
        2,
        "the open ones, across accounts"
    );

    let outbox = outbox(version);
    let pending: Vec<_> = store
        .pending_deliveries()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.notification, p.attempts, p.created))
        .collect();
    let expected: Vec<_> = outbox
        .iter()
        .filter(|row| row.state == "pending")
        .map(|row| (row.notification.clone(), row.attempts, row.created))
        .collect();
    assert_eq!(pending, expected, "pending deliveries, oldest first");
    let dead = &outbox[2];
    assert_eq!(
        store.dead_letters(10).await.unwrap(),
        vec![(dead.notification.clone(), dead.last_error.clone().unwrap())]
    );

    // Events: the watermark says which were applied (before version 8,
    // the `routed` flags did); those after it are replayed.
    let events = events(version);
    let stored: Vec<(i64, Event)> = events.iter().map(|(seq, _, e)| (*seq, e.clone())).collect();
    assert_eq!(store.events_between(1, 5).await.unwrap(), stored, "in arrival order");
    // Version 1 had no routing: its events were all applied.
    let applied = if version == 1 { 5 } else { APPLIED };
    assert_eq!(store.route_mark().await.unwrap(), applied);
    assert_eq!(
        store.events_after(applied).await.unwrap(),
        stored[applied as usize..].to_vec()
    );
    let (machine, probe, server) = EVENT_COUNTS_BY_TYPE;
    let counts = |m, p, s| {
        vec![
            ("machine".to_owned(), m),
            ("probe".to_owned(), p),
            ("server".to_owned(), s),
        ]
    };
    assert_eq!(
        store.events_stored_by_type().await.unwrap(),
        counts(machine, probe, server)
    );
    for (alarm, seq) in [(alice_open, 1), (bob_open, 2)] {
        assert_eq!(
            store.monitor_mark(alarm.monitor()).await.unwrap(),
            (version >= ROUTE_MARK).then_some(seq)
        );
    }

    assert_eq!(
        store.servers().await.unwrap(),
        vec![(CN7, Some("cn7".into()), "heartbeat".into(), T + 3_100)]
    );
    assert_eq!(
        sorted(store.all_machines().await.unwrap(), |m| m.uuid),
        machines(version)
    );
    let inventory = inventory(version);
    assert_eq!(
        sorted(store.machine_owners().await.unwrap(), |(m, _)| *m),
        inventory
            .iter()
            .filter_map(|r| Some((r.uuid, r.owner?)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        store.machines_of(ALICE).await.unwrap(),
        inventory
            .iter()
            .filter(|r| r.owner == Some(ALICE))
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(store.inventory_machine(WEB9).await.unwrap().as_ref(), inventory.get(3));
    assert_eq!(store.is_compute_node(CN9).await.unwrap(), version >= TENANCY);

    // Writing goes on where the old build stopped: ids are not reused,
    // sequence numbers and counts go on.
    assert_eq!(store.next_alarm_id(ALICE).await.unwrap(), 4);
    assert_eq!(store.next_alarm_id(BOB).await.unwrap(), 2);
    let new_window = store.create_window(another_window).await.unwrap();
    assert_eq!(new_window.id, if version >= WINDOWS { 3 } else { 1 });
    let next = Event::Server(ServerEvent {
        uuid: Uuid::from_u128(6),
        ..match &events[2].2 {
            Event::Server(beat) => beat.clone(),
            _ => unreachable!("the third event is a heartbeat"),
        }
    });
    let committed = store.commit_events(vec![next], T + 6_000, |c| c).await.unwrap();
    assert_eq!(committed.fresh[0].0, 6);
    assert_eq!(
        store.events_stored_by_type().await.unwrap(),
        counts(machine, probe, server + 1)
    );

    drop(store);
    assert_eq!(user_version(&path), super::MASTER_SCHEMA_VERSION);
}

/// A test per earlier schema version. After adding migration N+1, write
/// `master-vN.sqlite` and add its line here.
macro_rules! master_fixture_tests {
    ($($name:ident: $version:expr,)*) => {$(
        #[actix_rt::test]
        async fn $name() {
            a_master_database_keeps_its_rows($version).await;
        }
    )*};
}

master_fixture_tests! {
    a_master_database_at_version_1_keeps_its_rows: 1,
    a_master_database_at_version_2_keeps_its_rows: 2,
    a_master_database_at_version_3_keeps_its_rows: 3,
    a_master_database_at_version_4_keeps_its_rows: 4,
    a_master_database_at_version_5_keeps_its_rows: 5,
    a_master_database_at_version_6_keeps_its_rows: 6,
    a_master_database_at_version_7_keeps_its_rows: 7,
    a_master_database_at_version_8_keeps_its_rows: 8,
    a_master_database_at_version_9_keeps_its_rows: 9,
    a_master_database_at_version_10_keeps_its_rows: 10,
}

/// The relay has one schema version so far: its fixture is a version 1
/// database with data, opened by today's relay store. When the relay gets
/// a second migration, this covers the upgrade from version 1.
#[actix_rt::test]
async fn a_relay_database_at_version_1_keeps_its_spool_and_zones() {
    let (_dir, path) = fixture_copy(FIXTURES, &relay_fixture(1));
    assert_made_by(&path, &schema::RELAY[..1]);
    let store = RelayStore::open(&path).unwrap();
    // What is sent to the master first, in order.
    assert_eq!(store.spooled().await.unwrap(), spooled());
    assert_eq!(sorted(store.zones().await.unwrap(), |z| z.machine), zones());
    assert_eq!(store.zone(RELAY_ZONES[1]).await.unwrap().as_ref(), zones().get(1));
    // The spool goes on after the old rows, and the master's answer
    // empties it.
    let next = relay_machine_event(Uuid::from_u128(6), T + 14_000, false);
    assert_eq!(store.spool(vec![next.clone()], Vec::new()).await.unwrap(), 5);
    assert_eq!(store.spooled().await.unwrap().last(), Some(&next));
    let all: Vec<Uuid> = store.spooled().await.unwrap().iter().map(Event::uuid).collect();
    store.acknowledge(all).await.unwrap();
    assert!(store.spooled().await.unwrap().is_empty());
    // The dead letter is there, and collected at its time.
    assert_eq!(store.gc_dead_letters(T + 9_500, 10).await.unwrap(), 0);
    assert_eq!(store.gc_dead_letters(T + 9_501, 10).await.unwrap(), 1);
    drop(store);
    assert_eq!(user_version(&path), schema::RELAY.len());
}

#[test]
fn old_bodies_lack_the_keys_their_build_did_not_have() {
    let alarm = body(&alarms(1)[1], 1);
    assert!(!alarm.contains("folded"), "{alarm}");
    assert!(body(&alarms(FLOOD_GUARD)[1], FLOOD_GUARD).contains("\"folded\":false"));
    let note = body(&outbox(1)[0].notification, 1);
    assert!(!note.contains("incident"), "{note}");
    let event = body(&events(9)[0].2, 9);
    assert!(!event.contains("\"v\""), "{event}");
    assert!(
        body(&events(9)[3].2, 9).contains("\"v\":1"),
        "probe events always had it"
    );
}
