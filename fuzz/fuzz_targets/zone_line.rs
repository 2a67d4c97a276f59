//! A line of a relay's zone source (SPEC §3), as `ExecSource` hands it over:
//! UTF-8, any content. It goes through `parse_line` in every format a source
//! can be configured with, and through `split_server_tag` (a source speaking
//! for several compute nodes) and then the parser again.
//!
//! Invariants: no panic; `auto` answers as the format it detects does (an
//! error of its own only when no format's keys are there); an event about a
//! zone names it.
#![no_main]

use amon::zones::{parse_line, split_server_tag, LineFormat, ParseError, ZoneEvent};
use libfuzzer_sys::fuzz_target;

const FORMATS: [LineFormat; 3] = [LineFormat::Zoneevent, LineFormat::Vmadm, LineFormat::Sysevent];

fuzz_target!(|data: &[u8]| {
    // The source's line codec turns anything but UTF-8 into a read error:
    // such bytes never reach the parsers.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    check(line);
    if let Ok(Some((_server, rest))) = split_server_tag(line) {
        check(rest);
    }
});

fn check(line: &str) {
    let auto = parse_line(line, LineFormat::Auto);
    let explicit = FORMATS.map(|format| parse_line(line, format));
    if auto != Err(ParseError::UnknownFormat) {
        assert!(
            explicit.contains(&auto),
            "auto gave {auto:?}, no format agrees: {explicit:?}"
        );
    }
    for event in explicit.iter().flatten().flatten() {
        assert!(event.zonename().is_none_or(|z| !z.is_empty()), "{event:?}");
        if let ZoneEvent::Snapshot(zones) = event {
            assert!(zones.iter().all(|z| !z.zonename.is_empty()), "{event:?}");
        }
    }
}
