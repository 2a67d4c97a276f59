//! The configuration file (`-c FILE`, TOML) through the loader every mode
//! uses: `config::load_str`, with no environment, for each mode.
//!
//! Invariants: no panic; a bad file is a `ConfigError` naming a key.
#![no_main]

use amon::config::{load_str, Mode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Settings that name a file to read (`password_file`, `master_token_file`,
    // `token_file`) would have the fuzzer read /dev/zero or a fifo: leave
    // them out, and TOML escapes in keys with them (`"password\u005ffile"`).
    let lower = text.to_ascii_lowercase();
    if lower.contains("file") || lower.contains("\\u") {
        return;
    }
    for mode in [Mode::Master, Mode::Relay, Mode::Standalone, Mode::Agent] {
        if let Err(e) = load_str(mode, text, Vec::new()) {
            assert!(!e.key.is_empty(), "{e:?}");
        }
    }
});
