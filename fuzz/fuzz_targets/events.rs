//! The body of the Master API's `POST /events` (what relays send, and what
//! anyone with a relay token can send): `parse_events`, one event or an
//! array of them.
//!
//! Invariants: no panic; a refused body is `400 InvalidArgument` or `422
//! ValidationFailed`, never another error; accepted events, serialised as a
//! relay sends them, parse back equal; the master can age every accepted
//! event against its clock (`now - time`, what `POST /events` computes to
//! drop stale events) without overflow.
#![no_main]

use amon::http::master::parse_events;
use amon::http::ApiError;
use libfuzzer_sys::fuzz_target;

/// Clocks the master may read: 1970 and year 3000 in epoch milliseconds.
const CLOCKS: [i64; 2] = [0, 32_503_680_000_000];

fuzz_target!(|data: &[u8]| {
    match parse_events(data) {
        Ok(events) => {
            let wire = serde_json::to_vec(&events).expect("events serialise");
            let again = parse_events(&wire).unwrap_or_else(|e| panic!("re-serialised events refused: {e:?}"));
            assert_eq!(again, events);
            for event in &events {
                for now in CLOCKS {
                    assert!(
                        now.checked_sub(event.time()).is_some(),
                        "event time {} cannot be aged against {now}",
                        event.time()
                    );
                }
            }
        }
        Err(ApiError::InvalidArgument(_) | ApiError::ValidationFailed { .. }) => {}
        Err(other) => panic!("a bad body must be 400 or 422, not {other:?}"),
    }
});
