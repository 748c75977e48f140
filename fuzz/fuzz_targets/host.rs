//! Host parsing: a parsed `host[:port]` prints in canonical form, and that form parses back to
//! the same value (canonicalisation is idempotent); patterns never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permission_broker_policy::{parse_host, parse_host_pattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = parse_host(text) {
        let shown = parsed.to_string();
        let again = parse_host(&shown).expect("the canonical form parses");
        assert_eq!(again, parsed, "{text:?} -> {shown:?}");
        assert_eq!(again.to_string(), shown);
    }
    let _ = parse_host_pattern(text);
});
