//! Tenancy through the real binaries (SPEC §5, issue #11): the master knows
//! who owns each machine because the relay reports it (here from `vmadm
//! events -j` lines, which carry `owner_uuid`); an account may watch only
//! its own machines, only an operator account a compute node; and when a
//! machine moves to another account, the old owner hears nothing more.
//!
//! Absence is proven as in `e2e.rs`: a later event's email is awaited; the
//! one we expect not to see would have been due first.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{Email, Layout, Site, SiteOptions};

fn date() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A VM object as vminfod embeds it.
fn vm(zone: Uuid, alias: &str, owner: Uuid, zone_state: &str) -> Value {
    json!({
        "uuid": zone, "zonename": zone, "alias": alias, "owner_uuid": owner,
        "zone_state": zone_state, "state": if zone_state == "running" { "running" } else { "stopped" },
    })
}

/// `vmadm events -j`'s first line: every VM of the compute node.
fn ready(vms: &[(Uuid, &str, Uuid)]) -> String {
    let vms: serde_json::Map<String, Value> = vms
        .iter()
        .map(|&(zone, alias, owner)| (zone.to_string(), vm(zone, alias, owner, "running")))
        .collect();
    json!({"type": "ready", "date": date(), "uuid": Uuid::new_v4(), "vms": vms}).to_string()
}

/// A zone state change.
fn state(zone: Uuid, alias: &str, owner: Uuid, old: &str, new: &str) -> String {
    json!({
        "type": "modify", "date": date(), "zonename": zone, "uuid": zone,
        "vm": vm(zone, alias, owner, new),
        "changes": [{"prettyPath": "zone_state", "path": ["zone_state"], "action": "changed", "oldValue": old, "newValue": new}],
    })
    .to_string()
}

/// `vmadm update owner_uuid=…`.
fn new_owner(zone: Uuid, alias: &str, old: Uuid, new: Uuid) -> String {
    json!({
        "type": "modify", "date": date(), "zonename": zone, "uuid": zone,
        "vm": vm(zone, alias, new, "running"),
        "changes": [{"prettyPath": "owner_uuid", "path": ["owner_uuid"], "action": "changed", "oldValue": old, "newValue": new}],
    })
    .to_string()
}

fn mail_to(site: &Site, to: &str, zone: Uuid) -> Vec<Email> {
    site.emails_about(zone)
        .into_iter()
        .filter(|e| e.rcpt_to == to)
        .collect()
}

fn owns(site: &Site, login: &str, zone: Uuid) -> bool {
    let (status, machines) = site.api.get(&format!("/pub/{login}/machines"));
    status == 200
        && machines
            .as_array()
            .is_some_and(|list| list.iter().any(|m| m["uuid"] == zone.to_string()))
}

fn probe(site: &Site, login: &str, machine: Uuid) -> (u16, Value) {
    site.api.post(
        &format!("/pub/{login}/probes"),
        &json!({"type": "machine-up", "machine": machine, "name": format!("{machine} up")}),
    )
}

#[test]
fn an_account_watches_only_its_own_machines_and_stops_hearing_when_one_moves_away() {
    let Some(site) = Site::start(SiteOptions::new(Layout::TwoProcess)) else {
        return;
    };
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    site.create_customer("alice", alice);
    site.create_customer("bob", bob);
    site.create_account("root");
    let (web, db) = (Uuid::new_v4(), Uuid::new_v4());
    site.zones.append(&ready(&[(web, "web0", alice), (db, "db0", bob)]));

    // The relay reports its machines and their owners.
    site.wait_until("the master to know alice's web0 and bob's db0", || {
        (owns(&site, "alice", web) && owns(&site, "bob", db)).then_some(())
    });
    assert!(!owns(&site, "bob", web), "bob does not see alice's machine");
    let server = site.wait_until("the relay's compute node to be known", || {
        let (_, servers) = site.api.get("/servers");
        servers.as_array()?.first()?["uuid"].as_str().map(String::from)
    });

    // Bob cannot watch alice's machine, nor one nobody reported, and is told
    // the same for both: nothing about alice's machine leaks.
    let (status, refused) = probe(&site, "bob", web);
    assert_eq!(status, 422, "bob's probe on alice's machine: {refused}");
    let (status, unknown) = probe(&site, "bob", Uuid::new_v4());
    assert_eq!(status, 422, "bob's probe on an unknown machine: {unknown}");
    for body in [&refused, &unknown] {
        let text = body.to_string();
        assert!(text.contains("does not exist or is not owned by account"), "{text}");
        assert!(!text.contains(&alice.to_string()) && !text.contains("alice"), "{text}");
        assert_eq!(body["errors"][0]["field"], "machine", "{body}");
    }
    // A compute node is for operators only.
    let (status, body) = site.api.post(
        "/pub/bob/probes",
        &json!({"type": "machine-up", "machine": server, "name": "cn"}),
    );
    assert_eq!(status, 422, "bob's probe on the compute node: {body}");
    assert!(body.to_string().contains("only an operator account"), "{body}");
    let (status, body) = site.api.post(
        "/pub/root/probes",
        &json!({"type": "machine-up", "machine": server, "name": "cn"}),
    );
    assert_eq!(status, 200, "an operator account may: {body}");

    // Alice's own probe works: down, then back up.
    let (status, body) = probe(&site, "alice", web);
    assert_eq!(status, 200, "alice's probe on her machine: {body}");
    let (status, body) = probe(&site, "bob", db);
    assert_eq!(status, 200, "bob's probe on his machine: {body}");
    site.zones
        .append(&state(web, "web0", alice, "running", "shutting_down"));
    site.wait_until("alice's fault email about web0", || {
        (mail_to(&site, "alice@example.com", web).len() == 1).then_some(())
    });
    site.zones
        .append(&state(web, "web0", alice, "shutting_down", "running"));
    site.wait_until("alice's clear email about web0", || {
        (mail_to(&site, "alice@example.com", web).len() == 2).then_some(())
    });

    // web0 moves to bob: alice can no longer watch it, bob can.
    site.zones.append(&new_owner(web, "web0", alice, bob));
    site.wait_until("the master to know web0 is bob's", || {
        (owns(&site, "bob", web) && !owns(&site, "alice", web)).then_some(())
    });
    let (status, body) = probe(&site, "alice", web);
    assert_eq!(status, 422, "alice may no longer add a probe on web0: {body}");
    let (status, body) = probe(&site, "bob", web);
    assert_eq!(status, 200, "bob's probe on his new machine: {body}");

    // web0 goes down: bob is told, alice (whose probe still exists) is not.
    site.zones.append(&state(web, "web0", bob, "running", "shutting_down"));
    site.wait_until("bob's fault email about web0", || {
        (mail_to(&site, "bob@example.com", web).len() == 1).then_some(())
    });
    // A later fault of bob's: alice's email about web0 would have come first.
    site.zones.append(&state(db, "db0", bob, "running", "shutting_down"));
    site.wait_until("bob's fault email about db0", || {
        (mail_to(&site, "bob@example.com", db).len() == 1).then_some(())
    });
    assert_eq!(
        mail_to(&site, "alice@example.com", web).len(),
        2,
        "alice hears nothing of web0 once it is bob's\n{}",
        site.context()
    );
    let (_, alarms) = site.api.get("/pub/alice/alarms?state=open");
    assert_eq!(alarms, json!([]), "alice has no open alarm on bob's machine");
}
