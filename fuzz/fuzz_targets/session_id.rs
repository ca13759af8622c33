//! Any text as a session id: parsing never panics and accepts only the canonical form.
#![no_main]

use keepalive::session::SessionId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(id) = SessionId::parse(text) {
            assert_eq!(id.to_string(), text);
        }
    }
});
