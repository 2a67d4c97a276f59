//! A line of a relay's zone listing commands: `parse_list_line` (the
//! reconciliation snapshot: JSON objects or `zoneadm list -p`) and
//! `parse_meta_line` (`vmadm list -H -o uuid,alias,owner_uuid`), also behind
//! a server tag.
//!
//! Invariants: no panic; a listed zone has a name and is not the global
//! zone; a metadata line names its zone by uuid.
#![no_main]

use amon::zones::{parse_list_line, parse_meta_line, split_server_tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Listings are read as UTF-8 (lossily): see zone_line for why only
    // UTF-8 reaches the parsers.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    check(line);
    if let Ok(Some((_server, rest))) = split_server_tag(line) {
        check(rest);
    }
});

fn check(line: &str) {
    if let Ok(Some(zone)) = parse_list_line(line) {
        assert!(!zone.zonename.is_empty() && zone.zonename != "global", "{zone:?}");
    }
    if let Ok(Some((zonename, _meta))) = parse_meta_line(line) {
        assert!(uuid::Uuid::parse_str(&zonename).is_ok(), "{zonename:?}");
    }
}
