//! Any `Cookie` header values: reading the session id never panics, and whatever it accepts is
//! a canonical id.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header::COOKIE};
use keepalive::http::cookie::session_id;
use keepalive::session::SessionId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for part in data.split(|b| *b == b'\n').take(8) {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append(COOKIE, value);
        }
    }
    if let Some(id) = session_id(&headers, "keepalive_sid") {
        assert_eq!(SessionId::parse(&id.to_string()), Some(id));
    }
});
