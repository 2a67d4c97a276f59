//! Master API request bodies, decoded and validated as their handlers do
//! (`http::master::fuzz_body`): the first byte picks the body, the rest is
//! the body (`A` account, `P` probe, `G` probe group, `C` contact, `M`
//! maintenance window, `Q` alarm action query string, `S` a server's
//! machines; any other byte picks one by its value).
//!
//! Invariants: no panic; a refused body is a client error (400 or 422),
//! never a 500.
#![no_main]

use amon::http::master::{fuzz_body, BodyKind};
use amon::http::ApiError;
use libfuzzer_sys::fuzz_target;

const KINDS: [(u8, BodyKind); 7] = [
    (b'A', BodyKind::Account),
    (b'P', BodyKind::Probe),
    (b'G', BodyKind::ProbeGroup),
    (b'C', BodyKind::Contact),
    (b'M', BodyKind::MaintenanceWindow),
    (b'Q', BodyKind::AlarmAction),
    (b'S', BodyKind::ServerMachines),
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let kind = match KINDS.iter().find(|(b, _)| *b == first) {
        Some((_, kind)) => *kind,
        None => KINDS[usize::from(first) % KINDS.len()].1,
    };
    match fuzz_body(kind, body) {
        Ok(()) => {}
        Err(ApiError::InvalidArgument(_) | ApiError::MissingParameter(_) | ApiError::ValidationFailed { .. }) => {}
        Err(other) => panic!("{kind:?}: a bad body must be 400 or 422, not {other:?}"),
    }
});
