//! Triton's own clients, unchanged (issue 11), against a real standalone
//! process with a real SMTP server and zone source: a webhook receiver gets
//! the whole alarm, as `GET …/alarms/:id` shows it, when a zone goes down;
//! an account's attribute ending in `email` is a contact a probe group may
//! name, and the email goes to its address; `GET /pub/:account` shows the
//! attributes; a contact that exists nowhere is refused with how to make it.

use serde_json::json;
use uuid::Uuid;

use crate::harness::{current_zoneevent, webhook_receiver, Layout, Site, SiteOptions};

#[test]
fn a_webhook_gets_the_whole_alarm_when_a_zone_goes_down() {
    let Some(site) = Site::start(SiteOptions::new(Layout::Standalone)) else {
        return;
    };
    let (url, heard) = webhook_receiver(Vec::new());
    site.api.create(
        "/accounts",
        // An operator account (the zone feed says no owner; `tenancy.rs` is
        // about who may watch what).
        &json!({ "login": "alice", "email": "alice@example.com", "operator": true, "attributes": { "opswebhook": url } }),
    );
    let zone = Uuid::new_v4();
    let probe = site.api.create(
        "/pub/alice/probes",
        &json!({ "type": "machine-up", "machine": zone, "name": "web0 up", "contacts": ["opswebhook"] }),
    );
    // The zone has no alias: the fault names it by its compute node.
    let (server, hostname) = site.wait_for_relay();
    site.zones.append(&current_zoneevent(zone, "ready", "running"));
    site.zones.append(&current_zoneevent(zone, "running", "shutting_down"));

    let body = site.wait_until("the webhook about the zone", || {
        heard.lock().unwrap().first().map(|(body, _)| body.clone())
    });
    let alarm = &body["alarm"];
    assert_eq!(body["kind"], "fault", "{body:#}");
    assert_eq!(alarm["id"], 1, "{body:#}");
    assert_eq!(alarm["probe"], probe["uuid"], "{body:#}");
    assert_eq!(alarm["numEvents"], 1, "{body:#}");
    assert_eq!(alarm["closed"], false, "{body:#}");
    let faults = alarm["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), 1, "{body:#}");
    assert_eq!(faults[0]["event"]["machine"], zone.to_string(), "{body:#}");
    assert_eq!(faults[0]["event"]["agentAlias"], hostname, "{body:#}");
    assert_eq!(faults[0]["event"]["agent"], server.to_string(), "{body:#}");
    assert_eq!(alarm["maintFaults"], json!([]), "{body:#}");
    // The alarm exactly as the API shows it (nothing has changed it since).
    let (status, shown) = site.api.get("/pub/alice/alarms/1");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(alarm, &shown, "the webhook's alarm is the API's");
    // And the reference's top-level fields.
    assert_eq!(body["event"], faults[0]["event"], "{body:#}");
    assert_eq!(body["message"], format!("Machine \"{zone}\" has gone down."));
    assert_eq!(body["datacenter"], "coal");
    assert!(body["time"].as_i64().is_some_and(|t| t > 0), "{body:#}");
}

#[test]
fn an_attribute_ending_in_email_is_a_contact_a_probe_group_may_name() {
    let Some(site) = Site::start(SiteOptions::new(Layout::Standalone)) else {
        return;
    };
    let account = site.api.create(
        "/accounts",
        &json!({
            // An operator account, as sdc-amonadm's admin whose probe groups
            // name `pagerdutyemail`.
            "login": "alice", "email": "alice@example.com", "operator": true,
            "attributes": { "pagerdutyemail": "pd@example.com", "workPhone": "+1 555 0100", "cn": "Alice" },
        }),
    );
    let attributes = json!({ "pagerdutyemail": "pd@example.com", "workPhone": "+1 555 0100", "cn": "Alice" });
    assert_eq!(account["attributes"], attributes, "{account}");
    let (status, shown) = site.api.get("/pub/alice");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        shown,
        json!({
            "uuid": account["uuid"], "login": "alice", "email": "alice@example.com", "attributes": attributes,
            "operator": true,
        })
    );

    // A contact that exists nowhere: refused, saying how to make it.
    let (status, refused) = site.api.post(
        "/pub/alice/probegroups",
        &json!({ "name": "web tier", "contacts": ["pagerdutyemail", "oncallemail"] }),
    );
    assert_eq!(status, 422, "{refused}");
    let errors = refused["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{refused}");
    assert_eq!(errors[0]["field"], "contacts", "{refused}");
    let message = errors[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"oncallemail\"") && message.contains("PUT /pub/alice/contacts/oncallemail"),
        "{message}"
    );
    assert!(message.contains("attribute"), "{message}");
    // A phone attribute is no contact, and the refusal says so.
    let (status, refused) = site.api.post(
        "/pub/alice/probes",
        &json!({ "type": "machine-up", "machine": Uuid::new_v4(), "contacts": ["workPhone"] }),
    );
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "contacts", "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("phone")),
        "{refused}"
    );

    let group = site.api.create(
        "/pub/alice/probegroups",
        &json!({ "name": "web tier", "contacts": ["pagerdutyemail"] }),
    );
    let zone = Uuid::new_v4();
    site.api.create(
        "/pub/alice/probes",
        &json!({ "type": "machine-up", "machine": zone, "name": "web0 up", "group": group["uuid"] }),
    );
    // An attribute a group names cannot go while it does.
    let (status, refused) = site
        .api
        .exchange(
            "PUT",
            "/accounts/alice",
            Some(&json!({ "login": "alice", "email": "alice@example.com" })),
        )
        .status_and_json();
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "attributes", "{refused}");

    site.zones.append(&current_zoneevent(zone, "ready", "running"));
    site.zones.append(&current_zoneevent(zone, "running", "shutting_down"));
    let emails = site.wait_for_emails_about(zone, 1);
    assert_eq!(emails.len(), 1, "{}", site.context());
    assert_eq!(emails[0].rcpt_to, "pd@example.com", "{}", site.context());

    // A contact stored under the attribute's name takes precedence, also
    // for the alarm already open: its clear goes to the stored address.
    let (status, stored) = site
        .api
        .exchange(
            "PUT",
            "/pub/alice/contacts/pagerdutyemail",
            Some(&json!({ "medium": "email", "address": "oncall@example.com" })),
        )
        .status_and_json();
    assert_eq!(status, 200, "{stored}");
    let (_, contacts) = site.api.get("/pub/alice/contacts");
    let shown: Vec<(&str, &str)> = contacts
        .as_array()
        .expect("contacts")
        .iter()
        .filter_map(|c| Some((c["name"].as_str()?, c["address"].as_str()?)))
        .collect();
    assert_eq!(
        shown,
        [("email", "alice@example.com"), ("pagerdutyemail", "oncall@example.com")],
        "{contacts}"
    );
    site.zones.append(&current_zoneevent(zone, "ready", "running"));
    let emails = site.wait_for_emails_about(zone, 2);
    // The clear continues the fault's thread (the mailbox's order is not
    // the order of sending).
    let clear = emails.iter().find(|e| e.in_reply_to.is_some()).expect("the clear");
    assert_eq!(clear.rcpt_to, "oncall@example.com", "{}", site.context());
    // Deleting the stored one leaves the attribute: the group keeps a contact.
    let response = site.api.exchange("DELETE", "/pub/alice/contacts/pagerdutyemail", None);
    assert_eq!(response.status, 204, "{:?}", String::from_utf8_lossy(&response.body));
    let (status, contact) = site.api.get("/pub/alice/contacts/pagerdutyemail");
    assert_eq!(
        (status, &contact["address"]),
        (200, &json!("pd@example.com")),
        "{contact}"
    );
}
